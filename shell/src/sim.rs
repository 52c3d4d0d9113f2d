//! `sim(n, seed)`: a [`Backend`] on the deterministic cluster simulator
//! ([`ringkv::sim::cluster::ClusterSim`]), with the same API as an embedded
//! cluster, so that an experiment script replays exactly.
//!
//! The simulator runs every node's protocol machines (membership and
//! failure detection, coordinator, replicas, hinted handoff, bucket gossip,
//! anti-entropy) on one virtual clock over a seeded in-process network.
//! Nothing runs between the script's calls: a request runs the simulation
//! until it is answered, and `sleep` and the waits advance virtual time
//! ([`Nodes::sleep`], [`Nodes::wait`]), never the wall clock. Everything
//! happens on the script's thread, in an order fixed by the calls and the
//! seed, so the same script on the same seed prints the same bytes.
//!
//! Faults map onto the simulator's: `kill` is a crash (the store is kept,
//! as under `sync = always`; an embedded memory-engine node comes back
//! empty), `pause(n, ms)` pauses the node and resumes it `ms` of virtual
//! time later, even in the middle of a request, `heal` restores the links
//! and the healthy network. A request through a paused node waits (in
//! virtual time) until it resumes, as a frozen embedded node answers once
//! its stall ends. What the simulator cannot do fails with a message
//! naming the function: ring changes (its ring is fixed for a run), client
//! ports, and a workload in the background.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ringkv::embedded::cluster::FaultCounts;
use ringkv::protocol::{Op, Reply, RingView, StatusView, TransferView};
use ringkv::replication::Consistency;
use ringkv::sim::cluster::{ClusterOptions, ClusterSim};
use ringkv::{BucketProps, Faults, MemberStatus, NodeId};

use crate::backend::{Backend, Nodes};
use crate::runtime::Runtime;

/// What `sim(...)` was asked for.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Nodes, numbered 1 to `nodes`.
    pub nodes: u64,
    /// Seeds every random choice of the simulation.
    pub seed: u64,
    /// Replicas per key (the properties of a bucket no one set).
    pub n: usize,
    /// Default read quorum.
    pub r: Consistency,
    /// Default write quorum.
    pub w: Consistency,
    /// Virtual nodes per node.
    pub vnodes: usize,
}

impl SimOptions {
    /// `nodes` nodes on `seed`, with an embedded cluster's defaults: `n`
    /// of min(nodes, 3), quorum reads and writes; 16 virtual nodes per
    /// node (the simulator's default).
    pub fn new(nodes: u64, seed: u64) -> SimOptions {
        SimOptions {
            nodes,
            seed,
            n: (nodes as usize).clamp(1, 3),
            r: Consistency::Quorum,
            w: Consistency::Quorum,
            vnodes: 16,
        }
    }
}

/// How long a restarted node may take to see a running peer ALIVE, in
/// virtual time (as an embedded restart waits for a peer to confirm its
/// ring).
const RESTART_WAIT: Duration = Duration::from_secs(30);

/// How often a wait checks its condition, in virtual time.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// The slice of a `sleep` between two looks at the interrupt flag.
const SLEEP_STEP: Duration = Duration::from_secs(1);

/// A simulated cluster, as the shell's backend.
pub struct Sim {
    rt: Arc<Runtime>,
    options: SimOptions,
    state: Mutex<State>,
}

struct State {
    sim: ClusterSim,
    /// When each paused node resumes, in virtual time since the start.
    paused_until: BTreeMap<u64, Duration>,
    /// Round-robin position for requests without `via`.
    next: usize,
}

impl State {
    fn exists(&self, id: u64) -> Result<(), String> {
        let ids = self.sim.node_ids();
        if ids.contains(&NodeId(id)) {
            Ok(())
        } else {
            Err(format!(
                "there is no node {id} (nodes are {:?})",
                ids.iter().map(|n| n.0).collect::<Vec<_>>()
            ))
        }
    }

    fn running(&self, id: u64) -> Result<(), String> {
        self.exists(id)?;
        if self.sim.is_crashed(NodeId(id)) {
            return Err(format!("node {id} is killed"));
        }
        Ok(())
    }

    fn live(&self) -> Vec<u64> {
        self.sim
            .node_ids()
            .into_iter()
            .filter(|n| !self.sim.is_crashed(*n))
            .map(|n| n.0)
            .collect()
    }

    fn paused(&self, id: u64) -> bool {
        let n = NodeId(id);
        !self.sim.is_running(n) && !self.sim.is_crashed(n)
    }

    /// Runs the simulation until node `id`, if paused, resumes.
    fn until_resumed(&mut self, id: u64) {
        if !self.paused(id) {
            return;
        }
        if let Some(until) = self.paused_until.get(&id) {
            let now = self.sim.elapsed();
            if *until > now {
                self.sim.run_for(*until - now);
            }
        }
    }

    /// The node a request goes through: `via`, or the running nodes in
    /// turn (paused ones only when no other runs).
    fn pick(&mut self, via: Option<u64>) -> Result<u64, String> {
        if let Some(id) = via {
            self.running(id)?;
            return Ok(id);
        }
        let live = self.live();
        let running: Vec<u64> = live
            .iter()
            .copied()
            .filter(|&id| self.sim.is_running(NodeId(id)))
            .collect();
        let from = if running.is_empty() { live } else { running };
        if from.is_empty() {
            return Err("every node is killed".into());
        }
        let id = from[self.next % from.len()];
        self.next = self.next.wrapping_add(1);
        Ok(id)
    }

    fn set_network(&mut self, change: impl FnOnce(&mut Faults)) -> Result<(), String> {
        let mut faults = self.sim.network();
        change(&mut faults);
        self.sim
            .set_network(Some(faults))
            .map_err(|e| e.to_string())
    }
}

fn ids(list: &[u64]) -> Vec<NodeId> {
    list.iter().map(|&i| NodeId(i)).collect()
}

/// The message of a ring change asked of a simulation.
fn no_ring_changes(what: &str) -> String {
    format!(
        "{what} is not available on a simulation: the simulator does not drive ring changes yet (its ring is fixed for the run); use cluster(...) for joins, leaves and removals"
    )
}

impl Sim {
    /// A quiet simulation of `options` (no workload, no scheduled fault):
    /// every node a member of the ring and ALIVE to every other from the
    /// start. `rt` is only for the API's futures, which are ready when
    /// made.
    pub fn new(rt: Arc<Runtime>, options: SimOptions) -> Result<Sim, String> {
        if options.nodes == 0 || options.nodes > 64 {
            return Err(format!("nodes must be 1 to 64, got {}", options.nodes));
        }
        let defaults = BucketProps {
            n: options.n,
            r: options.r,
            w: options.w,
            ..BucketProps::default()
        };
        defaults.validate().map_err(|e| e.to_string())?;
        let mut o = ClusterOptions::new(options.nodes as usize, options.seed);
        o.vnodes = options.vnodes;
        o.bucket_defaults = defaults;
        let sim = ClusterSim::quiet_with(o).map_err(|e| e.to_string())?;
        Ok(Sim {
            rt,
            options,
            state: Mutex::new(State {
                sim,
                paused_until: BTreeMap::new(),
                next: 0,
            }),
        })
    }

    /// What `sim(...)` was asked for.
    pub fn options(&self) -> &SimOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The simulation is consistent between calls: a panic inside one
        // leaves it as the last step left it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for Sim {
    fn describe(&self) -> String {
        let st = self.lock();
        let o = &self.options;
        format!(
            "simulation: {} nodes ({} running), seed {}, n={} r={:?} w={:?}, virtual time {} ms",
            o.nodes,
            st.live().len(),
            o.seed,
            o.n,
            o.r,
            o.w,
            st.sim.elapsed().as_millis()
        )
    }

    /// Runs `op` at once, on virtual time, and returns its reply as a
    /// ready future.
    fn start(
        &self,
        via: Option<u64>,
        op: Op,
    ) -> Result<BoxFuture<'static, ringkv::Result<Reply>>, String> {
        let reply = self.execute(via, op)?;
        Ok(Box::pin(futures_util::future::ready(reply)))
    }

    fn execute(&self, via: Option<u64>, op: Op) -> Result<ringkv::Result<Reply>, String> {
        let mut st = self.lock();
        let node = st.pick(via)?;
        st.until_resumed(node);
        Ok(st.sim.execute(Some(NodeId(node)), op))
    }

    fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn nodes(&self) -> Option<&dyn Nodes> {
        Some(self)
    }

    fn simulated(&self) -> bool {
        true
    }
}

impl Nodes for Sim {
    fn kind(&self) -> &'static str {
        "a simulation"
    }

    fn ids(&self) -> Vec<u64> {
        self.lock()
            .sim
            .node_ids()
            .into_iter()
            .map(|n| n.0)
            .collect()
    }

    fn live(&self) -> Vec<u64> {
        self.lock().live()
    }

    fn client_addrs(&self) -> Result<BTreeMap<u64, String>, String> {
        Err("client_addrs() is not available on a simulation: its nodes have no client ports (they run on virtual time inside this shell, reached only through it), so connect() cannot reach them either".into())
    }

    fn kill(&self, id: u64) -> Result<(), String> {
        let mut st = self.lock();
        st.exists(id)?;
        if st.sim.is_crashed(NodeId(id)) {
            return Err(format!("node {id} is already killed"));
        }
        st.sim.crash(NodeId(id));
        st.paused_until.remove(&id);
        Ok(())
    }

    fn restart(&self, id: u64) -> Result<(), String> {
        let mut st = self.lock();
        st.exists(id)?;
        if !st.sim.is_crashed(NodeId(id)) {
            return Err(format!("node {id} is running"));
        }
        st.sim.restart(NodeId(id));
        let me = NodeId(id);
        let peers: Vec<NodeId> = st
            .sim
            .node_ids()
            .into_iter()
            .filter(|&p| p != me && st.sim.is_running(p))
            .collect();
        if peers.is_empty() {
            return Ok(());
        }
        let start = st.sim.elapsed();
        loop {
            let sees = peers
                .iter()
                .any(|&p| st.sim.status(me, p) == Some(MemberStatus::Alive));
            if sees {
                return Ok(());
            }
            if st.sim.elapsed() - start >= RESTART_WAIT {
                return Err(format!(
                    "node {id} restarted, but it saw no running peer ALIVE within {} s of virtual time",
                    RESTART_WAIT.as_secs()
                ));
            }
            st.sim.run_for(WAIT_STEP);
        }
    }

    fn pause(&self, id: u64, ms: u64) -> Result<(), String> {
        let mut st = self.lock();
        st.running(id)?;
        let d = Duration::from_millis(ms);
        st.sim.pause_for(NodeId(id), d);
        let until = st.sim.elapsed() + d;
        st.paused_until.insert(id, until);
        Ok(())
    }

    fn partition(&self, a: &[u64], b: &[u64]) -> Result<(), String> {
        let mut st = self.lock();
        for &id in a.iter().chain(b) {
            st.exists(id)?;
        }
        st.sim.partition(&ids(a), &ids(b));
        Ok(())
    }

    fn partition_one_way(&self, from: &[u64], to: &[u64]) -> Result<(), String> {
        let mut st = self.lock();
        for &id in from.iter().chain(to) {
            st.exists(id)?;
        }
        st.sim.partition_one_way(&ids(from), &ids(to));
        Ok(())
    }

    fn heal(&self) {
        let mut st = self.lock();
        st.sim.heal();
        // The healthy network is always valid.
        let _ = st.sim.set_network(None);
    }

    fn set_drop_rate(&self, rate: f64) -> Result<(), String> {
        self.lock().set_network(|f| f.drop_rate = rate)
    }

    fn set_delay(&self, min_ms: u64, max_ms: u64) -> Result<(), String> {
        self.lock().set_network(|f| {
            f.delay = (Duration::from_millis(min_ms), Duration::from_millis(max_ms))
        })
    }

    fn skew(&self, id: u64, ms: i64) -> Result<(), String> {
        let mut st = self.lock();
        st.exists(id)?;
        st.sim.skew(NodeId(id), ms);
        Ok(())
    }

    fn fault_counters(&self) -> FaultCounts {
        let c = self.lock().sim.fault_counters();
        FaultCounts {
            blocked: c.dropped_by_partition,
            dropped: c.dropped_by_drop_rate,
            delayed: c.delayed,
        }
    }

    fn status_of(&self, at: u64) -> Result<StatusView, String> {
        let st = self.lock();
        st.running(at)?;
        st.sim.status_view(NodeId(at)).map_err(|e| e.to_string())
    }

    fn views_of(&self, of: u64) -> Result<Vec<(u64, Option<MemberStatus>)>, String> {
        let st = self.lock();
        Ok(st
            .live()
            .into_iter()
            .filter(|&id| id != of)
            .map(|id| (id, st.sim.status(NodeId(id), NodeId(of))))
            .collect())
    }

    fn total_hints(&self) -> Result<u64, String> {
        let st = self.lock();
        Ok(st
            .sim
            .node_ids()
            .into_iter()
            .map(|n| st.sim.hints(n) as u64)
            .sum())
    }

    fn now(&self) -> Duration {
        self.lock().sim.elapsed()
    }

    fn wait(
        &self,
        limit: Duration,
        check: &mut dyn FnMut() -> Result<bool, String>,
    ) -> Result<bool, String> {
        let start = self.now();
        loop {
            // Not locked here: the check asks the simulation itself.
            if check()? {
                return Ok(true);
            }
            let mut st = self.lock();
            let waited = st.sim.elapsed() - start;
            if waited >= limit {
                return Ok(false);
            }
            st.sim.run_for(WAIT_STEP.min(limit - waited));
        }
    }

    fn sleep(
        &self,
        d: Duration,
        interrupted: &dyn Fn() -> Result<(), String>,
    ) -> Result<(), String> {
        let mut left = d;
        while !left.is_zero() {
            interrupted()?;
            let step = left.min(SLEEP_STEP);
            self.lock().sim.run_for(step);
            left -= step;
        }
        Ok(())
    }

    fn add_node(&self, _id: Option<u64>) -> Result<u64, String> {
        Err(no_ring_changes("join()"))
    }

    fn decommission(&self, id: u64) -> Result<(), String> {
        Err(no_ring_changes(&format!("decommission({id})")))
    }

    fn leave(&self, id: u64, _limit: Duration) -> Result<(), String> {
        Err(no_ring_changes(&format!("leave({id})")))
    }

    fn remove(&self, id: u64) -> Result<(), String> {
        Err(no_ring_changes(&format!("remove({id})")))
    }

    fn forget(&self, id: u64) -> Result<(), String> {
        Err(no_ring_changes(&format!("forget({id})")))
    }

    fn ring_views(&self) -> Result<Vec<(u64, RingView)>, String> {
        let st = self.lock();
        let ring = st.sim.ring_view();
        Ok(st.live().into_iter().map(|id| (id, ring.clone())).collect())
    }

    fn transfers(&self) -> Result<Vec<(u64, TransferView)>, String> {
        // The ring never changes, so no range ever moves.
        Ok(Vec::new())
    }

    fn rebalanced(&self) -> Result<bool, String> {
        Ok(true)
    }
}
