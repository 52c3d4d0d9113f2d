//! The node supervisor: starts a node's actors in order on one arbiter and
//! is the handle callers hold.
//!
//! Order: the transport endpoint is created *inside* the node's arbiter
//! (an actix arbiter is a thread running a tokio current-thread runtime),
//! so that every task the endpoint spawns (TCP listener, links, readers; or
//! the in-process network's delivery task) runs on a runtime that the
//! arbiter drives, for as long as the node lives. Then the Transport actor,
//! the FailureDetector, the RingManager, and last the routes that make the
//! transport start reading its inbox.
//!
//! A whole node on one thread also gives tests a faithful pause:
//! [`Node::stall`] blocks that thread, freezing actors, timers and network
//! tasks together, as SIGSTOP or a long GC pause would.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::failure_detector::{FailureDetector, GetMembers, GetPhi, Leave, Subscribe};
use super::ring_manager::{GetRing, RingManager};
use super::transport::{LearnPeer, Routes, TransportActor};
use super::NodeEvent;
use crate::config::{
    BucketProps, MembershipConfig, ReplicaConfig, RingConfig, StorageConfig, VersionConfig,
};
use crate::error::{Error, Result};
use crate::membership::{MemberEntry, Membership, RingKeeper};
use crate::message::NodeId;
use crate::net::{Inbox, Transport};
use crate::ring::Ring;

/// What a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// The address peers reach it at (gossiped to them).
    pub addr: String,
    /// Nodes to join through, with their addresses. Empty: this node
    /// founds a new cluster and claims the first tokens.
    pub seeds: Vec<(NodeId, String)>,
    /// Gossip and failure detection.
    pub membership: MembershipConfig,
    /// Token claim.
    pub ring: RingConfig,
    /// Seeds the node's random choices (gossip targets). Any value works;
    /// distinct nodes should use distinct seeds.
    pub rng_seed: u64,
    /// The cluster's name, reported to clients.
    pub cluster: String,
    /// Where the node keeps its data.
    pub storage: StorageConfig,
    /// Properties of buckets never set explicitly.
    pub bucket_defaults: BucketProps,
    /// Clocks and siblings.
    pub version: VersionConfig,
    /// Replica, coordinator and hinted handoff.
    pub replica: ReplicaConfig,
}

impl NodeConfig {
    /// A node with default membership and ring settings.
    pub fn new(id: NodeId, addr: impl Into<String>, seeds: Vec<(NodeId, String)>) -> Self {
        NodeConfig {
            id,
            addr: addr.into(),
            seeds,
            membership: MembershipConfig::default(),
            ring: RingConfig::default(),
            rng_seed: id.0,
            cluster: "ringkv".into(),
            storage: StorageConfig::Memory,
            bucket_defaults: BucketProps::default(),
            version: VersionConfig::default(),
            replica: ReplicaConfig::default(),
        }
    }
}

/// A running node: its actors on their own arbiter, and its transport.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    addr: String,
    leave_linger: Duration,
    arbiter: ArbiterHandle,
    transport: Arc<dyn Transport>,
    failure_detector: Addr<FailureDetector>,
    ring_manager: Addr<RingManager>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a transport factory returns.
pub struct TransportParts {
    /// The endpoint.
    pub transport: Arc<dyn Transport>,
    /// Its inbox.
    pub inbox: Inbox,
    /// The address to gossip for this node, when it is only known once
    /// the endpoint is bound (a TCP listener on port 0); it replaces
    /// `NodeConfig::addr`.
    pub advertised: Option<String>,
}

impl TransportParts {
    /// An endpoint reachable at `NodeConfig::addr`.
    pub fn new(transport: Arc<dyn Transport>, inbox: Inbox) -> Self {
        TransportParts {
            transport,
            inbox,
            advertised: None,
        }
    }
}

impl Node {
    /// Starts a node on a new arbiter. `make_transport` runs on that
    /// arbiter, so the endpoint's tasks live on the node's runtime. Must be
    /// called inside a running actix `System` (`InvalidInput` otherwise).
    /// Fails if the configuration does not validate or the transport
    /// cannot be made.
    pub async fn spawn<F, Fut>(config: NodeConfig, make_transport: F) -> Result<Node>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<TransportParts>> + 'static,
    {
        config.membership.validate()?;
        config.ring.validate()?;
        if System::try_current().is_none() {
            return Err(Error::InvalidInput(
                "Node::spawn must be called inside a running actix System".into(),
            ));
        }
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let (done_tx, done_rx) = oneshot::channel();
        let for_node = handle.clone();
        // The closure crosses to the arbiter's thread; the future it starts
        // there need not be `Send` (a transport may hold thread-local state).
        let spawned = handle.spawn_fn(move || {
            actix::spawn(async move {
                let started = match make_transport().await {
                    Ok(parts) => Node::start_here(config, parts, for_node),
                    Err(e) => Err(e),
                };
                let _ = done_tx.send(started);
            });
        });
        if !spawned {
            return Err(Error::Shutdown);
        }
        let started = done_rx.await.map_err(|_| Error::Shutdown);
        let node = started.and_then(|r| r);
        if node.is_err() {
            handle.stop();
        }
        node
    }

    /// Starts the actors on the current arbiter, in order. `arbiter` must be
    /// the current arbiter's handle.
    fn start_here(
        mut config: NodeConfig,
        parts: TransportParts,
        arbiter: ArbiterHandle,
    ) -> Result<Node> {
        let TransportParts {
            transport,
            inbox,
            advertised,
        } = parts;
        if let Some(addr) = advertised {
            config.addr = addr;
        }
        let seed_ids: Vec<NodeId> = config.seeds.iter().map(|(id, _)| *id).collect();
        let membership = Membership::new(
            config.membership.clone(),
            config.id,
            config.addr.clone(),
            &seed_ids,
            config.rng_seed,
        )?;
        let keeper = RingKeeper::new(
            config.id,
            &config.ring,
            config.membership.gossip_interval,
            &seed_ids,
            config.rng_seed ^ 0x5249_4e47,
        )?;
        let transport_actor = TransportActor::new(Arc::clone(&transport), inbox).start();
        for (node, addr) in &config.seeds {
            if *node != config.id {
                transport_actor.do_send(LearnPeer {
                    node: *node,
                    addr: addr.clone(),
                });
            }
        }
        let ring_manager = RingManager::new(
            keeper,
            config.membership.gossip_interval,
            transport_actor.clone(),
        )
        .start();
        let failure_detector = FailureDetector::new(
            membership,
            transport_actor.clone(),
            ring_manager.clone().recipient(),
        )
        .start();
        transport_actor.do_send(Routes {
            membership: failure_detector.clone().recipient(),
            ring: ring_manager.clone().recipient(),
        });
        Ok(Node {
            id: config.id,
            addr: config.addr,
            leave_linger: config.membership.leave_linger,
            arbiter,
            transport,
            failure_detector,
            ring_manager,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address this node gossips for itself.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A stream of this node's events: membership events as they happen,
    /// and the current ring followed by every new one.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<NodeEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.ring_manager.do_send(Subscribe(tx.clone()));
        self.failure_detector.do_send(Subscribe(tx));
        rx
    }

    /// The membership table as this node sees it.
    pub async fn members(&self) -> Result<Vec<MemberEntry>> {
        self.failure_detector
            .send(GetMembers)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Phi of every peer, now.
    pub async fn phi(&self) -> Result<BTreeMap<NodeId, f64>> {
        self.failure_detector
            .send(GetPhi)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// The current ring snapshot.
    pub async fn ring(&self) -> Result<Arc<Ring>> {
        self.ring_manager
            .send(GetRing)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Leaves gracefully: gives the node's tokens away, gossips LEFT for
    /// `leave_linger`, then shuts down.
    pub async fn leave(self) -> Result<()> {
        self.ring_manager
            .send(Leave)
            .await
            .map_err(|_| Error::Shutdown)?;
        self.failure_detector
            .send(Leave)
            .await
            .map_err(|_| Error::Shutdown)?;
        tokio::time::sleep(self.leave_linger).await;
        self.shutdown().await;
        Ok(())
    }

    /// Stops the node: shuts the transport down (waiting for its tasks),
    /// then stops the arbiter and every actor on it.
    pub async fn shutdown(self) {
        self.transport.shutdown().await;
        self.arbiter.stop();
    }

    /// Crashes the node: its transport stops at once (peers see refused or
    /// lost frames) and its actors stop, without any goodbye.
    pub fn crash(self) -> BoxFuture<'static, ()> {
        let stopped = self.transport.shutdown();
        self.arbiter.stop();
        stopped
    }

    /// Blocks the node's thread for `duration`: actors, timers and network
    /// tasks all freeze, as under SIGSTOP or a stop-the-world pause. Returns
    /// at once; the stall starts when the thread next picks up work.
    pub fn stall(&self, duration: Duration) -> bool {
        self.arbiter.spawn_fn(move || std::thread::sleep(duration))
    }
}
