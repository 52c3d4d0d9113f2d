//! The one interface the shell's API is written against, and its two
//! backends: an embedded [`Cluster`] and a [`Remote`] connection through
//! `ringkv::client::Client`.
//!
//! Both answer the client protocol's [`Op`]s with [`Reply`]s, so data ops,
//! buckets and views work the same on either. Faults and per-node views
//! need the nodes themselves, so only the embedded backend offers them
//! ([`Backend::cluster`]); on a remote connection they fail with a message
//! saying so.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{Op, Reply};

use crate::cluster::Cluster;
use crate::runtime::Runtime;

/// What the shell's API talks to.
pub trait Backend: Send + Sync {
    /// A one-line description, for printing.
    fn describe(&self) -> String;

    /// Starts `op` through node `via` (or any node); the future must be
    /// polled on [`Backend::runtime`].
    fn start(
        &self,
        via: Option<u64>,
        op: Op,
    ) -> Result<BoxFuture<'static, ringkv::Result<Reply>>, String>;

    /// The runtime its futures run on.
    fn runtime(&self) -> &Arc<Runtime>;

    /// The embedded cluster, when this is one.
    fn cluster(&self) -> Option<&Cluster>;

    /// Executes `op` and waits for the reply.
    fn execute(&self, via: Option<u64>, op: Op) -> Result<ringkv::Result<Reply>, String> {
        let fut = self.start(via, op)?;
        self.runtime().run(move || fut)
    }
}

impl Backend for Cluster {
    fn describe(&self) -> String {
        let o = self.options();
        format!(
            "embedded cluster: {} nodes ({} running), n={} r={:?} w={:?}, {:?} engine, {:?} transport",
            self.ids().len(),
            self.live().len(),
            o.n,
            o.r,
            o.w,
            o.engine,
            o.transport
        )
    }

    fn start(
        &self,
        via: Option<u64>,
        op: Op,
    ) -> Result<BoxFuture<'static, ringkv::Result<Reply>>, String> {
        let node = self.pick(via)?;
        Ok(Box::pin(async move { node.execute(op).await }))
    }

    fn runtime(&self) -> &Arc<Runtime> {
        Cluster::runtime(self)
    }

    fn cluster(&self) -> Option<&Cluster> {
        Some(self)
    }
}

/// A connection to a running cluster's client port.
pub struct Remote {
    rt: Arc<Runtime>,
    addr: String,
    client: Client,
}

impl Remote {
    /// Connects to `addr` (`HOST:PORT` of a node's client port).
    pub fn connect(rt: Arc<Runtime>, addr: &str) -> Result<Remote, String> {
        let target = addr.to_string();
        let client = rt
            .run(move || async move { Client::connect(&[target], ClientConfig::default()).await })?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        Ok(Remote {
            rt,
            addr: addr.to_string(),
            client,
        })
    }
}

impl Backend for Remote {
    fn describe(&self) -> String {
        format!("connection to {}", self.addr)
    }

    fn start(
        &self,
        via: Option<u64>,
        op: Op,
    ) -> Result<BoxFuture<'static, ringkv::Result<Reply>>, String> {
        if let Some(v) = via {
            return Err(format!(
                "option via: {v} needs an embedded cluster; a connection goes through {}",
                self.addr
            ));
        }
        let client = self.client.clone();
        Ok(Box::pin(async move { client.execute(op).await }))
    }

    fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn cluster(&self) -> Option<&Cluster> {
        None
    }
}
