//! The one interface the shell's API is written against, and its
//! backends: an embedded [`Cluster`], a simulation ([`crate::sim::Sim`])
//! and a [`Remote`] connection through `ringkv::client::Client`.
//!
//! All answer the client protocol's [`Op`]s with [`Reply`]s, so data ops,
//! buckets and views work the same on each. Faults and per-node views
//! need the nodes themselves: a backend that has them offers them as
//! [`Nodes`] ([`Backend::nodes`]), the embedded cluster on the wall clock
//! and the simulation on its virtual clock; on a remote connection they
//! fail with a message saying so.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use ringkv::client::{Client, ClientConfig, Credentials};
use ringkv::embedded::cluster::FaultCounts;
use ringkv::net::client_tls::ClientTls;
use ringkv::protocol::{Op, Reply, RingView, StatusView, TransferView};
use ringkv::MemberStatus;

use crate::cluster::Cluster;
use crate::runtime::Runtime;

/// The nodes of a target that the shell can see one by one and break:
/// what faults, per-node views, waits and ring changes go through. Node
/// ids are the shell's numbers (1, 2, ...). Every error is a message for
/// the person at the prompt.
///
/// Time: [`Nodes::now`], [`Nodes::wait`] and [`Nodes::sleep`] are on the
/// target's own clock: the wall clock for an embedded cluster, virtual
/// time (which only they and requests advance) for a simulation.
pub trait Nodes: Send + Sync {
    /// What the target is, for messages: "an embedded cluster", "a
    /// simulation".
    fn kind(&self) -> &'static str;

    /// Every node id, running or killed (not those that left or were
    /// removed).
    fn ids(&self) -> Vec<u64>;

    /// The ids of the nodes not killed (a paused node is one of them).
    fn live(&self) -> Vec<u64>;

    /// The client port of each node that has one.
    fn client_addrs(&self) -> Result<BTreeMap<u64, String>, String>;

    /// Crashes node `id`: no flush, no goodbye.
    fn kill(&self, id: u64) -> Result<(), String>;

    /// Starts killed node `id` again.
    fn restart(&self, id: u64) -> Result<(), String>;

    /// Freezes node `id` for `ms`; returns at once.
    fn pause(&self, id: u64, ms: u64) -> Result<(), String>;

    /// Cuts every link between `a` and `b`, both ways.
    fn partition(&self, a: &[u64], b: &[u64]) -> Result<(), String>;

    /// Cuts the links from `from` to `to` only.
    fn partition_one_way(&self, from: &[u64], to: &[u64]) -> Result<(), String>;

    /// Removes every partition, drop rate and delay.
    fn heal(&self);

    /// Sets the probability, in `[0, 1]`, that a frame is lost.
    fn set_drop_rate(&self, rate: f64) -> Result<(), String>;

    /// Sets each frame's delay range.
    fn set_delay(&self, min_ms: u64, max_ms: u64) -> Result<(), String>;

    /// Sets node `id`'s clock off by `ms` (either way).
    fn skew(&self, id: u64, ms: i64) -> Result<(), String>;

    /// What the faults did so far.
    fn fault_counters(&self) -> FaultCounts;

    /// Node `at`'s status view.
    fn status_of(&self, at: u64) -> Result<StatusView, String>;

    /// What each other node not killed believes about node `of`.
    fn views_of(&self, of: u64) -> Result<Vec<(u64, Option<MemberStatus>)>, String>;

    /// Hints held by all nodes together.
    fn total_hints(&self) -> Result<u64, String>;

    /// The target's clock: the time since some fixed start.
    fn now(&self) -> Duration;

    /// Checks `check` now and then until it holds (true) or `limit`
    /// passes on the target's clock (false).
    fn wait(
        &self,
        limit: Duration,
        check: &mut dyn FnMut() -> Result<bool, String>,
    ) -> Result<bool, String>;

    /// Lets `d` pass on the target's clock; gives up with the error of
    /// `interrupted` when it returns one.
    fn sleep(
        &self,
        d: Duration,
        interrupted: &dyn Fn() -> Result<(), String>,
    ) -> Result<(), String>;

    /// Adds node `id` (or the next id never used); returns its id.
    fn add_node(&self, id: Option<u64>) -> Result<u64, String>;

    /// Asks node `id` to give its ranges away.
    fn decommission(&self, id: u64) -> Result<(), String>;

    /// Node `id` leaves gracefully, waiting up to `limit`.
    fn leave(&self, id: u64, limit: Duration) -> Result<(), String>;

    /// Takes killed node `id` out of the ring.
    fn remove(&self, id: u64) -> Result<(), String>;

    /// Forgets killed node `id` for good: LEFT everywhere, then out of
    /// the ring.
    fn forget(&self, id: u64) -> Result<(), String>;

    /// Each running node's ring.
    fn ring_views(&self) -> Result<Vec<(u64, RingView)>, String>;

    /// Each running node's incoming range transfers.
    fn transfers(&self) -> Result<Vec<(u64, TransferView)>, String>;

    /// Whether the ring is at rest with the members expected.
    fn rebalanced(&self) -> Result<bool, String>;
}

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

    /// The nodes one by one, when this backend has them (not a
    /// connection).
    fn nodes(&self) -> Option<&dyn Nodes>;

    /// Whether its nodes run this shell's script policies themselves; if
    /// not, `get` resolves the siblings of a `script:` bucket in the shell.
    fn runs_script_policies(&self) -> bool {
        false
    }

    /// Whether time on it is virtual (a simulation): a request runs to
    /// its answer when started, sleeps and waits advance its clock, and a
    /// workload's clients take turns on that clock.
    fn simulated(&self) -> bool {
        false
    }

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
        // Retried as the client retries: see `execute_retrying`.
        let nodes = self.attempt_order(via)?;
        Ok(Box::pin(ringkv::embedded::cluster::execute_retrying(
            nodes, op,
        )))
    }

    fn runtime(&self) -> &Arc<Runtime> {
        Cluster::runtime(self)
    }

    fn nodes(&self) -> Option<&dyn Nodes> {
        Some(self)
    }

    fn runs_script_policies(&self) -> bool {
        true
    }
}

/// When the shell first read the wall clock for [`Nodes::now`].
pub fn wall_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Nodes for Cluster {
    fn kind(&self) -> &'static str {
        "an embedded cluster"
    }

    fn ids(&self) -> Vec<u64> {
        Cluster::ids(self)
    }

    fn live(&self) -> Vec<u64> {
        Cluster::live(self)
    }

    fn client_addrs(&self) -> Result<BTreeMap<u64, String>, String> {
        Ok(Cluster::client_addrs(self))
    }

    fn kill(&self, id: u64) -> Result<(), String> {
        Cluster::kill(self, id)
    }

    fn restart(&self, id: u64) -> Result<(), String> {
        Cluster::restart(self, id)
    }

    fn pause(&self, id: u64, ms: u64) -> Result<(), String> {
        Cluster::pause(self, id, ms)
    }

    fn partition(&self, a: &[u64], b: &[u64]) -> Result<(), String> {
        Cluster::partition(self, a, b)
    }

    fn partition_one_way(&self, from: &[u64], to: &[u64]) -> Result<(), String> {
        Cluster::partition_one_way(self, from, to)
    }

    fn heal(&self) {
        Cluster::heal(self)
    }

    fn set_drop_rate(&self, rate: f64) -> Result<(), String> {
        Cluster::set_drop_rate(self, rate)
    }

    fn set_delay(&self, min_ms: u64, max_ms: u64) -> Result<(), String> {
        Cluster::set_delay(self, min_ms, max_ms)
    }

    fn skew(&self, id: u64, _ms: i64) -> Result<(), String> {
        Err(format!(
            "skew({id}, ..) needs a simulation (sim(...)): the nodes of an embedded cluster all read this machine's clock"
        ))
    }

    fn fault_counters(&self) -> FaultCounts {
        Cluster::fault_counters(self)
    }

    fn status_of(&self, at: u64) -> Result<StatusView, String> {
        Cluster::status_of(self, at)
    }

    fn views_of(&self, of: u64) -> Result<Vec<(u64, Option<MemberStatus>)>, String> {
        Cluster::views_of(self, of)
    }

    fn total_hints(&self) -> Result<u64, String> {
        Cluster::total_hints(self)
    }

    fn now(&self) -> Duration {
        wall_epoch().elapsed()
    }

    fn wait(
        &self,
        limit: Duration,
        check: &mut dyn FnMut() -> Result<bool, String>,
    ) -> Result<bool, String> {
        Cluster::wait(self, limit, check)
    }

    fn sleep(
        &self,
        d: Duration,
        interrupted: &dyn Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        wall_sleep(d, interrupted)
    }

    fn add_node(&self, id: Option<u64>) -> Result<u64, String> {
        Cluster::add_node(self, id)
    }

    fn decommission(&self, id: u64) -> Result<(), String> {
        Cluster::decommission(self, id)
    }

    fn leave(&self, id: u64, limit: Duration) -> Result<(), String> {
        Cluster::leave(self, id, limit)
    }

    fn remove(&self, id: u64) -> Result<(), String> {
        Cluster::remove(self, id)
    }

    fn forget(&self, id: u64) -> Result<(), String> {
        Cluster::forget(self, id)
    }

    fn ring_views(&self) -> Result<Vec<(u64, RingView)>, String> {
        Cluster::ring_views(self)
    }

    fn transfers(&self) -> Result<Vec<(u64, TransferView)>, String> {
        Cluster::transfers(self)
    }

    fn rebalanced(&self) -> Result<bool, String> {
        Cluster::rebalanced(self)
    }
}

/// Sleeps `d` on the wall clock in slices of 20 ms, so that an interrupt
/// (`interrupted` returning an error) ends a long sleep soon.
pub fn wall_sleep(d: Duration, interrupted: &dyn Fn() -> Result<(), String>) -> Result<(), String> {
    let until = Instant::now() + d;
    loop {
        interrupted()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// A connection to a running cluster's client port.
pub struct Remote {
    rt: Arc<Runtime>,
    addr: String,
    client: Client,
}

impl Remote {
    /// Connects to `addr` (`HOST:PORT` of a node's client port), as the
    /// user of `credentials` when given, over TLS when `tls` is given.
    pub fn connect(
        rt: Arc<Runtime>,
        addr: &str,
        credentials: Option<Credentials>,
        tls: Option<ClientTls>,
    ) -> Result<Remote, String> {
        let target = addr.to_string();
        let config = ClientConfig {
            credentials,
            tls,
            ..ClientConfig::default()
        };
        let client = rt
            .run(move || async move { Client::connect(&[target], config).await })?
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

    fn nodes(&self) -> Option<&dyn Nodes> {
        None
    }
}
