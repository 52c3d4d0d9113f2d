//! An embedded cluster: real ringkv nodes started in this process, over
//! the in-process network or TCP on 127.0.0.1, and the faults the caller
//! (the shell's scripts, a C program) injects into them.
//!
//! Each node is a [`Node`] on its own actix arbiter, spawned on
//! the caller's [`Runtime`]. Every fault works on both transports, with the
//! same meaning: two-way and one-way partitions, a drop rate and a delay
//! range per frame (frames on one link stay in order). On the memory
//! transport one `MemoryNetwork` applies them; on TCP each node's
//! `TcpTransport` applies them to the frames it sends (a two-way partition
//! is a one-way block on each side), with its drop and delay draws seeded
//! from the cluster's seed and the node's id. The cluster keeps the fault
//! plan, so a restarted TCP node gets it again. [`Cluster::fault_counters`]
//! tells what the faults did. TCP nodes also get a client port, so that
//! `connect` can reach them.
//!
//! A killed node is crashed (no goodbye, no flush); a restart spawns it
//! again with the same id and data directory, joining through a live node.
//! An LSM or B-tree directory is locked by its engine; the crashed engine
//! releases it when its last handle drops, which may be just after the
//! crash returns, so a restart retries the open for a bounded time.
//!
//! The ring changes through the nodes' own protocol (`docs/rebalancing.md`):
//! [`Cluster::add_node`] spawns a node with a new id that joins through a
//! running one, [`Cluster::decommission`] and [`Cluster::leave`] ask a node
//! to give its ranges away (the second also waits until they moved and the
//! node stopped), and [`Cluster::remove`] takes a killed node out of the
//! ring. A node that left or was removed keeps its id reserved: it is no
//! longer one of [`Cluster::ids`], cannot be restarted, and a new node
//! never reuses its id (its peers remember it). [`Cluster::rebalanced`]
//! tells whether every running node agrees on a ring with the members the
//! cluster expects and no change in progress. Transfers run eight at a time
//! per node (the library's default is two), so that forming a cluster,
//! whose every join moves its ranges (empty or not), takes seconds.
//!
//! Not here: what the ops mean (the nodes decide), rhai or C types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{MembershipConfig, StorageConfig};
use crate::net::tcp::TcpFaults;
use crate::net::tls::ClusterCa;
use crate::node::client_port::{ClientPort, ClientPortConfig};
use crate::node::node::ring_view;
use crate::node::{Node, NodeConfig, TransportParts};
use crate::protocol::{Op, Reply, RingView, StatusView, TransferView};
use crate::replication::Consistency;
use crate::version::Resolvers;
use crate::{
    BTreeConfig, ClusterSecret, Faults, LsmConfig, MemberStatus, MemoryNetConfig, MemoryNetwork,
    NodeId, RingConfig, TcpConfig, TcpTransport, Transport,
};

use super::runtime::Runtime;

/// How long a cluster may take to form, or a restarted node to open its
/// data directory.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest node id [`Cluster::add_node`] accepts: ids are small
/// numbers people type.
pub const MAX_NODE_ID: u64 = 1000;

/// The most nodes a cluster runs at once.
pub const MAX_NODES: usize = 64;

/// Why a node is no longer part of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// It left gracefully ([`Cluster::leave`]): its ranges moved first.
    Left,
    /// It was killed and then removed from the ring ([`Cluster::remove`]):
    /// its ranges were copied again from the surviving replicas.
    Removed,
    /// It was killed and then forgotten ([`Cluster::forget`]): LEFT in
    /// every membership table, and then out of the ring.
    Forgotten,
}

/// Which network the nodes talk over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    /// The in-process `MemoryNetwork`.
    Memory,
    /// `TcpTransport` on 127.0.0.1.
    Tcp,
}

/// Which storage engine each node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// In memory: a killed node comes back empty.
    Memory,
    /// The LSM engine, in `dir/node-<id>`.
    Lsm,
    /// The B-tree engine (redb), in `dir/node-<id>`.
    BTree,
}

/// What `cluster(...)` was asked for.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes, numbered 1 to `nodes`.
    pub nodes: u64,
    /// Replicas per key (the default bucket properties).
    pub n: usize,
    /// Default read quorum.
    pub r: Consistency,
    /// Default write quorum.
    pub w: Consistency,
    /// Default conflict policy of every bucket not given one.
    pub policy: crate::version::ConflictPolicy,
    /// Storage engine.
    pub engine: EngineKind,
    /// Virtual nodes per node.
    pub vnodes: usize,
    /// Network.
    pub transport: TransportKind,
    /// Where the engines keep their files (a temporary directory, removed
    /// at exit, when absent).
    pub dir: Option<PathBuf>,
    /// Seeds the network's and the nodes' random choices.
    pub seed: u64,
    /// The gossip interval in milliseconds.
    pub gossip_ms: u64,
    /// Each node's data shards (`ReplicaConfig::data_shards`; 0, the
    /// default, as a node chooses).
    pub data_shards: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            n: 3,
            r: Consistency::Quorum,
            w: Consistency::Quorum,
            policy: crate::version::ConflictPolicy::Siblings,
            engine: EngineKind::Memory,
            vnodes: 32,
            transport: TransportKind::Memory,
            dir: None,
            seed: 1,
            gossip_ms: 50,
            data_shards: 0,
        }
    }
}

/// Membership scaled down for experiments: 50 ms heartbeats (by default),
/// with a pause and deviation scaled less than that, so that a machine
/// busy with other work (tens of ms of scheduling jitter) does not make the
/// detector convict a live node. Detection of a crash takes about a second.
pub fn fast_membership(gossip_ms: u64) -> MembershipConfig {
    let g = gossip_ms.max(10);
    MembershipConfig {
        gossip_interval: Duration::from_millis(g),
        acceptable_heartbeat_pause: Duration::from_millis(g * 6),
        min_std_deviation: Duration::from_millis((g * 2 / 5).max(5)),
        suspicion_multiplier: 3.0,
        local_pause_guard: Duration::from_millis(g * 4),
        leave_linger: Duration::from_millis(g * 6),
        ..MembershipConfig::default()
    }
}

/// What the injected faults have done, on either transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Frames lost to partitions (two-way or one-way).
    pub blocked: u64,
    /// Frames lost to the drop rate.
    pub dropped: u64,
    /// Frames delayed.
    pub delayed: u64,
}

impl std::ops::AddAssign for FaultCounts {
    fn add_assign(&mut self, other: FaultCounts) {
        self.blocked += other.blocked;
        self.dropped += other.dropped;
        self.delayed += other.delayed;
    }
}

/// The faults of a TCP cluster, applied to every node's transport.
#[derive(Clone, Debug, Default)]
struct TcpPlan {
    /// For each node, the peers whose frames from it are dropped.
    blocked_to: BTreeMap<u64, BTreeSet<u64>>,
    drop_rate: f64,
    delay: (Duration, Duration),
}

/// One node's place in the cluster, running or not.
struct Slot {
    node: Option<Node>,
    tcp: Option<Arc<TcpTransport>>,
    port: Option<Arc<ClientPort>>,
    /// The peer address it gossips.
    addr: String,
    /// Its client port, on TCP.
    client_addr: Option<String>,
    /// Asked to leave the ring ([`Cluster::decommission`]).
    leaving: bool,
    /// Gone for good: no longer one of the cluster's nodes.
    departed: Option<Departure>,
}

/// A running embedded cluster.
pub struct Cluster {
    rt: Arc<Runtime>,
    options: ClusterOptions,
    net: Option<MemoryNetwork>,
    secret: ClusterSecret,
    /// On TCP: the cluster's own CA, made at start and kept in memory only;
    /// each node gets a certificate from it, so the links are TLS like a
    /// real cluster's, with nothing for the user to make.
    ca: Option<Arc<ClusterCa>>,
    resolvers: Resolvers,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    slots: Mutex<BTreeMap<u64, Slot>>,
    /// On TCP: the faults every node's transport is given.
    tcp_faults: Mutex<TcpPlan>,
    /// On TCP: what the faults did on transports since dropped (killed
    /// nodes).
    retired: Mutex<FaultCounts>,
    /// Round-robin position for requests without `via`.
    next: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is plain bookkeeping, consistent between statements.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const SECRET: &[u8] = b"ringkv-shell embedded cluster secret";

impl Cluster {
    /// Starts `options.nodes` nodes and waits until every node sees every
    /// other ALIVE, they share one ring, and every node's coordinators
    /// route by it.
    pub fn start(
        rt: Arc<Runtime>,
        options: ClusterOptions,
        resolvers: Resolvers,
    ) -> Result<Cluster, String> {
        if options.nodes == 0 || options.nodes > 64 {
            return Err(format!("nodes must be 1 to 64, got {}", options.nodes));
        }
        let (dir, temp) = match &options.dir {
            Some(d) => (d.clone(), None),
            None if options.engine == EngineKind::Memory => (PathBuf::new(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("ringkv-shell-")
                    .tempdir()
                    .map_err(|e| format!("creating a temporary directory: {e}"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let net = match options.transport {
            TransportKind::Memory => Some(
                MemoryNetwork::new(MemoryNetConfig {
                    seed: options.seed,
                    ..MemoryNetConfig::default()
                })
                .map_err(|e| e.to_string())?,
            ),
            TransportKind::Tcp => None,
        };
        let ca = match options.transport {
            TransportKind::Memory => None,
            TransportKind::Tcp => Some(Arc::new(
                ClusterCa::generate("shell").map_err(|e| e.to_string())?,
            )),
        };
        let cluster = Cluster {
            rt,
            net,
            secret: ClusterSecret::new(SECRET.to_vec()).map_err(|e| e.to_string())?,
            ca,
            resolvers,
            dir,
            _temp: temp,
            slots: Mutex::new(BTreeMap::new()),
            tcp_faults: Mutex::new(TcpPlan::default()),
            retired: Mutex::new(FaultCounts::default()),
            next: Default::default(),
            options,
        };
        for id in 1..=cluster.options.nodes {
            cluster.spawn_node(id)?;
        }
        let ids: Vec<u64> = (1..=cluster.options.nodes).collect();
        if !cluster.wait(FORM_TIMEOUT, || cluster.formed(&ids))? {
            return Err(format!(
                "the cluster did not form within {}s",
                FORM_TIMEOUT.as_secs()
            ));
        }
        Ok(cluster)
    }

    /// What the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The runtime the nodes run on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn config(&self, id: u64, seeds: Vec<(NodeId, String)>, addr: String) -> NodeConfig {
        let o = &self.options;
        let mut config = NodeConfig::new(NodeId(id), addr, seeds);
        config.membership = fast_membership(o.gossip_ms);
        config.ring = RingConfig {
            vnodes_per_node: o.vnodes,
            ..RingConfig::default()
        };
        config.rng_seed = o.seed.wrapping_mul(1_000_003).wrapping_add(id);
        config.cluster = "shell".into();
        config.bucket_defaults.n = o.n;
        config.bucket_defaults.r = o.r;
        config.bucket_defaults.w = o.w;
        config.bucket_defaults.policy = o.policy.clone();
        config.replica.handoff_interval = Duration::from_millis(100);
        config.replica.handoff_retry = Duration::from_millis(500);
        config.replica.data_shards = o.data_shards;
        // Ring changes move many small ranges (a token range per move,
        // empty ones included while the cluster forms): more of them at
        // once, and sources that serve every puller, so that forming and
        // rebalancing take seconds, not tens of seconds, on a busy machine.
        config.transfer.max_concurrent = 8;
        config.transfer.max_serving = 64;
        config.transfer.backoff_min = Duration::from_millis(50);
        config.transfer.backoff_max = Duration::from_secs(1);
        config.resolvers = self.resolvers.clone();
        let dir = self.dir.join(format!("node-{id}"));
        config.storage = match o.engine {
            EngineKind::Memory => StorageConfig::Memory,
            EngineKind::Lsm => StorageConfig::Lsm {
                dir,
                config: LsmConfig::default(),
            },
            EngineKind::BTree => StorageConfig::BTree {
                dir,
                config: BTreeConfig::default(),
            },
        };
        config
    }

    /// Seeds for a node joining: the first running node other than `id`,
    /// or none for the very first node.
    fn seeds_for(&self, id: u64) -> Vec<(NodeId, String)> {
        let slots = lock(&self.slots);
        slots
            .iter()
            .find(|(other, s)| **other != id && s.node.is_some() && !s.leaving)
            .map(|(other, s)| vec![(NodeId(*other), s.addr.clone())])
            .unwrap_or_default()
    }

    /// Spawns node `id` (first start or restart), retrying the open of a
    /// data directory that a crashed engine still holds.
    fn spawn_node(&self, id: u64) -> Result<(), String> {
        let seeds = self.seeds_for(id);
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let config = self.config(id, seeds.clone(), format!("n{id}"));
            let attempt = match self.options.transport {
                TransportKind::Memory => self.spawn_memory(id, config),
                TransportKind::Tcp => self.spawn_tcp(id, config),
            };
            match attempt {
                Ok(slot) => {
                    lock(&self.slots).insert(id, slot);
                    return Ok(());
                }
                Err(e)
                    if self.options.engine != EngineKind::Memory && Instant::now() < deadline =>
                {
                    tracing::debug!(node = id, error = %e, "open failed; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(format!("starting node {id}: {e}")),
            }
        }
    }

    fn spawn_memory(&self, id: u64, config: NodeConfig) -> Result<Slot, String> {
        let Some(net) = self.net.clone() else {
            return Err("no memory network".into());
        };
        let addr = config.addr.clone();
        let node = self
            .rt
            .run(move || async move {
                Node::spawn(config, move || async move {
                    let (endpoint, inbox) = net.endpoint(NodeId(id))?;
                    Ok(TransportParts::new(Arc::new(endpoint), inbox))
                })
                .await
            })?
            .map_err(|e| e.to_string())?;
        Ok(Slot {
            node: Some(node),
            tcp: None,
            port: None,
            addr,
            client_addr: None,
            leaving: false,
            departed: None,
        })
    }

    fn spawn_tcp(&self, id: u64, config: NodeConfig) -> Result<Slot, String> {
        let secret = self.secret.clone();
        let ca = self
            .ca
            .as_ref()
            .ok_or("a TCP node needs the cluster's CA")?;
        let security = ca.security_for(NodeId(id)).map_err(|e| e.to_string())?;
        let started = self.rt.run(move || async move {
            let slot: Arc<Mutex<Option<Arc<TcpTransport>>>> = Arc::default();
            let keep = Arc::clone(&slot);
            let node = Node::spawn(config, move || async move {
                let mut tcp = TcpConfig::new(NodeId(id), "shell", secret, security, "127.0.0.1:0");
                tcp.backoff_min = Duration::from_millis(10);
                tcp.backoff_max = Duration::from_millis(200);
                tcp.shutdown_grace = Duration::from_millis(100);
                let (transport, inbox) = TcpTransport::bind(tcp).await?;
                let addr = transport.local_addr().to_string();
                let transport = Arc::new(transport);
                *lock(&keep) = Some(Arc::clone(&transport));
                Ok(TransportParts {
                    transport,
                    inbox,
                    advertised: Some(addr),
                })
            })
            .await?;
            let port = ClientPort::start(
                "127.0.0.1:0",
                Arc::new(node.clone()),
                ClientPortConfig::default(),
            )
            .await;
            let port = match port {
                Ok(p) => p,
                Err(e) => {
                    node.crash().await;
                    return Err(e);
                }
            };
            let tcp = lock(&slot).take();
            Ok((node, tcp, port))
        })?;
        let (node, tcp, port) = started.map_err(|e| e.to_string())?;
        if let Some(t) = &tcp {
            let plan = lock(&self.tcp_faults).clone();
            self.apply_plan(id, t, &plan)?;
        }
        Ok(Slot {
            addr: node.addr().to_string(),
            client_addr: Some(port.local_addr().to_string()),
            node: Some(node),
            tcp,
            port: Some(Arc::new(port)),
            leaving: false,
            departed: None,
        })
    }

    /// Every node id, running or killed (not those that left or were
    /// removed).
    pub fn ids(&self) -> Vec<u64> {
        lock(&self.slots)
            .iter()
            .filter(|(_, s)| s.departed.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The ids of the running nodes.
    pub fn live(&self) -> Vec<u64> {
        lock(&self.slots)
            .iter()
            .filter(|(_, s)| s.node.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The client port of each node (TCP clusters only).
    pub fn client_addrs(&self) -> BTreeMap<u64, String> {
        lock(&self.slots)
            .iter()
            .filter_map(|(id, s)| s.client_addr.clone().map(|a| (*id, a)))
            .collect()
    }

    /// Node `id`, if it is running.
    pub fn node(&self, id: u64) -> Result<Node, String> {
        let slots = lock(&self.slots);
        match slots.get(&id) {
            None => Err(format!("there is no node {id} (nodes are {:?})", {
                slots
                    .iter()
                    .filter(|(_, s)| s.departed.is_none())
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>()
            })),
            Some(Slot {
                departed: Some(d), ..
            }) => Err(departed_message(id, *d)),
            Some(Slot { node: None, .. }) => Err(format!("node {id} is killed")),
            Some(Slot { node: Some(n), .. }) => Ok(n.clone()),
        }
    }

    /// The running nodes not asked to leave, or, when every running node
    /// was, all of them.
    fn staying(&self) -> Vec<u64> {
        let slots = lock(&self.slots);
        let running = || slots.iter().filter(|(_, s)| s.node.is_some());
        let staying: Vec<u64> = running()
            .filter(|(_, s)| !s.leaving)
            .map(|(id, _)| *id)
            .collect();
        if staying.is_empty() {
            running().map(|(id, _)| *id).collect()
        } else {
            staying
        }
    }

    /// The nodes a request tries in turn ([`execute_retrying`]): `via`
    /// alone, or every staying node, starting from the next in turn.
    pub fn attempt_order(&self, via: Option<u64>) -> Result<Vec<Node>, String> {
        if via.is_some() {
            return Ok(vec![self.pick(via)?]);
        }
        let live = self.staying();
        if live.is_empty() {
            return Err("every node is killed".into());
        }
        let first = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..live.len())
            .map(|i| self.node(live[(first + i) % live.len()]))
            .collect()
    }

    /// The node a request goes through: `via`, or the running nodes in
    /// turn (those asked to leave only when no other runs: a node leaving
    /// with [`Cluster::leave`] stops soon).
    pub fn pick(&self, via: Option<u64>) -> Result<Node, String> {
        if let Some(id) = via {
            return self.node(id);
        }
        let live = self.staying();
        if live.is_empty() {
            return Err("every node is killed".into());
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % live.len();
        self.node(live[i])
    }

    /// Crashes node `id`: no flush, no goodbye; peers see it go silent.
    pub fn kill(&self, id: u64) -> Result<(), String> {
        let (node, port) = {
            let mut slots = lock(&self.slots);
            let slot = slots
                .get_mut(&id)
                .ok_or_else(|| format!("there is no node {id}"))?;
            if let Some(d) = slot.departed {
                return Err(departed_message(id, d));
            }
            let node = slot
                .node
                .take()
                .ok_or_else(|| format!("node {id} is already killed"))?;
            if let Some(t) = slot.tcp.take() {
                *lock(&self.retired) += tcp_counts(&t);
            }
            slot.client_addr = None;
            (node, slot.port.take())
        };
        self.rt.run(move || async move {
            if let Some(p) = port {
                p.shutdown().await;
            }
            node.crash().await;
        })
    }

    /// Starts a killed node again, with its data directory (an empty store
    /// for the memory engine). When another node is running, returns once
    /// the restarted node has confirmed its stored ring with a peer, so
    /// that it serves requests at once.
    pub fn restart(&self, id: u64) -> Result<(), String> {
        {
            let slots = lock(&self.slots);
            match slots.get(&id) {
                None => return Err(format!("there is no node {id}")),
                Some(Slot {
                    departed: Some(d), ..
                }) => {
                    return Err(format!(
                        "{}; a new node needs an id never used",
                        departed_message(id, *d)
                    ))
                }
                Some(s) if s.node.is_some() => return Err(format!("node {id} is running")),
                Some(_) => {}
            }
        }
        self.spawn_node(id)?;
        if self.live().len() > 1 {
            let node = self.node(id)?;
            if !self.wait(FORM_TIMEOUT, || Ok(node.ring_confirmed()))? {
                return Err(format!(
                    "node {id} restarted, but no peer confirmed its ring within {}s",
                    FORM_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Starts a new node, `id` or else the next id never used, joining
    /// through a running node; returns its id once it and every running
    /// node see each other ALIVE and it has the cluster's ring. Its ranges then move to it
    /// ([`Cluster::rebalanced`] tells when they have).
    pub fn add_node(&self, id: Option<u64>) -> Result<u64, String> {
        let id = {
            let slots = lock(&self.slots);
            let running = slots.values().filter(|s| s.node.is_some()).count();
            if running == 0 {
                return Err("every node is killed: a new node joins through a running one".into());
            }
            if running >= MAX_NODES {
                return Err(format!("a cluster runs at most {MAX_NODES} nodes"));
            }
            match id {
                Some(0) => return Err("node ids start at 1".into()),
                Some(id) if id > MAX_NODE_ID => {
                    return Err(format!("node ids are at most {MAX_NODE_ID}, got {id}"))
                }
                Some(id) => match slots.get(&id) {
                    Some(Slot {
                        departed: Some(d), ..
                    }) => {
                        return Err(format!(
                            "{}; a new node needs an id never used",
                            departed_message(id, *d)
                        ))
                    }
                    Some(_) => return Err(format!("node {id} already exists")),
                    None => id,
                },
                None => {
                    let next = slots.keys().next_back().map_or(1, |last| last + 1);
                    if next > MAX_NODE_ID {
                        return Err(format!("node ids are at most {MAX_NODE_ID}"));
                    }
                    next
                }
            }
        };
        self.spawn_node(id)?;
        let joined = self.wait(FORM_TIMEOUT, || {
            let Ok(node) = self.node(id) else {
                return Ok(false);
            };
            for (_, status) in self.views_of(id)? {
                if status != Some(MemberStatus::Alive) {
                    return Ok(false);
                }
            }
            // And it sees them: a node that coordinates before it knows
            // its peers finds too few replicas up.
            let others: Vec<u64> = self.live().into_iter().filter(|&o| o != id).collect();
            let (members, state) = self
                .rt
                .run(move || async move { (node.members().await, node.ring_state().await) })?;
            let Ok(members) = members else {
                return Ok(false);
            };
            let sees_all = others.iter().all(|&o| {
                members
                    .iter()
                    .any(|m| m.node == NodeId(o) && m.status == MemberStatus::Alive)
            });
            if !sees_all {
                return Ok(false);
            }
            // Its ring is empty until it has heard from a member; and its
            // coordinators must route by the ring it has (see `formed`).
            let has_ring = state.is_ok_and(|s| !s.ring.is_empty() || s.pending.is_some());
            Ok(has_ring && self.routed(id)?)
        })?;
        if !joined {
            return Err(format!(
                "node {id} started but it and the others did not all see each other ALIVE, with the ring, within {}s",
                FORM_TIMEOUT.as_secs()
            ));
        }
        Ok(id)
    }

    /// Asks node `id` to leave the ring: the nodes taking its ranges pull
    /// them, then the ring no longer holds it. Returns at once; the node
    /// keeps running (see [`Cluster::leave`]).
    pub fn decommission(&self, id: u64) -> Result<(), String> {
        let node = self.node(id)?;
        {
            let slots = lock(&self.slots);
            let staying = slots
                .iter()
                .filter(|(other, s)| **other != id && s.node.is_some() && !s.leaving)
                .count();
            if staying == 0 {
                return Err(format!(
                    "node {id} is the last running member: no node would take its ranges"
                ));
            }
        }
        self.rt
            .run(move || async move { node.decommission().await })?
            .map_err(|e| format!("decommissioning node {id}: {e}"))?;
        if let Some(slot) = lock(&self.slots).get_mut(&id) {
            slot.leaving = true;
        }
        Ok(())
    }

    /// Node `id` leaves gracefully: it gives its ranges away, waits until
    /// the nodes taking them have pulled them (the ring no longer holds
    /// it), announces LEFT and stops. Waits up to `limit`; after that the
    /// node goes on leaving, and this returns an error.
    pub fn leave(&self, id: u64, limit: Duration) -> Result<(), String> {
        self.decommission(id)?;
        let node = self.node(id)?;
        let left = self.rt.run(move || async move {
            tokio::time::timeout(limit, async move {
                let me = node.id();
                // `Node::leave` waits as long as the transfers take (up to
                // ten minutes); wait here for the ranges within `limit`,
                // so that a timeout leaves the node running, and let
                // `Node::leave` finish.
                loop {
                    let ring = node.ring().await?;
                    if !ring.is_member(me) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                node.leave().await
            })
            .await
        })?;
        match left {
            Err(_) => {
                return Err(format!(
                    "node {id} did not finish leaving within {} ms; it goes on leaving (ring() shows the change)",
                    limit.as_millis()
                ))
            }
            Ok(Err(e)) => return Err(format!("node {id} leaving: {e}")),
            Ok(Ok(())) => {}
        }
        let (node, port) = {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(&id) else {
                return Ok(());
            };
            if let Some(t) = slot.tcp.take() {
                *lock(&self.retired) += tcp_counts(&t);
            }
            slot.client_addr = None;
            slot.departed = Some(Departure::Left);
            (slot.node.take(), slot.port.take())
        };
        self.rt.run(move || async move {
            if let Some(p) = port {
                p.shutdown().await;
            }
            // Already stopped by its leave; this only drops the handle.
            drop(node);
        })
    }

    /// For `op` (remove or forget), which is for `what`: checks that node
    /// `id` exists, has not departed and is killed, and returns the lowest
    /// running node not leaving, which carries the op out.
    fn killed_and_actor(&self, id: u64, op: &str, what: &str) -> Result<u64, String> {
        {
            let slots = lock(&self.slots);
            match slots.get(&id) {
                None => return Err(format!("there is no node {id}")),
                Some(Slot {
                    departed: Some(d), ..
                }) => return Err(departed_message(id, *d)),
                Some(s) if s.node.is_some() => {
                    return Err(format!(
                        "node {id} is running: {op}() is for {what} (kill({id}) first); a running node leaves with leave({id}) or decommission({id})"
                    ))
                }
                Some(_) => {}
            }
        }
        self.staying()
            .first()
            .copied()
            .ok_or_else(|| format!("every node is killed: no node can {op} another"))
    }

    /// Removes node `id`, which must be killed, from the ring: its ranges
    /// are copied again from the surviving replicas. Waits (up to
    /// [`FORM_TIMEOUT`]) until the lowest running node not leaving has no
    /// change in progress and sees it DOWN, then asks that node to remove
    /// it. Returns once the removal has begun. A killed node the ring no
    /// longer holds (it was decommissioned first) is only forgotten.
    pub fn remove(&self, id: u64) -> Result<(), String> {
        let by = self.killed_and_actor(id, "remove", "a dead node")?;
        let node = self.node(by)?;
        let mut last = String::new();
        // Whether the ring in force holds it, once ready.
        let mut in_ring = true;
        let ready = self.wait(FORM_TIMEOUT, || {
            let n = node.clone();
            let (members, state) = self
                .rt
                .run(move || async move { (n.members().await, n.ring_state().await) })?;
            let (Ok(members), Ok(state)) = (members, state) else {
                return Ok(false);
            };
            if let Some(p) = &state.pending {
                last = format!("node {by} has a change in progress ({:?})", p.change);
                return Ok(false);
            }
            in_ring = state.ring.is_member(NodeId(id));
            let status = members
                .iter()
                .find(|m| m.node == NodeId(id))
                .map(|m| m.status);
            if in_ring && !matches!(status, Some(MemberStatus::Down | MemberStatus::Left)) {
                last = format!("node {by} sees node {id} as {status:?}, not Down");
                return Ok(false);
            }
            Ok(true)
        })?;
        if !ready {
            return Err(format!(
                "removing node {id}: after {}s {last}",
                FORM_TIMEOUT.as_secs()
            ));
        }
        // A node the ring no longer holds (it left before it was killed)
        // has no ranges to copy: the cluster only forgets it.
        if in_ring {
            self.rt
                .run(move || async move { node.remove_node(NodeId(id)).await })?
                .map_err(|e| format!("removing node {id}: {e}"))?;
        }
        if let Some(slot) = lock(&self.slots).get_mut(&id) {
            slot.departed = Some(Departure::Removed);
        }
        Ok(())
    }

    /// Forgets node `id`, which must be killed, for good
    /// ([`Node::forget`] through the lowest running node not leaving): it
    /// becomes LEFT in every membership table, and the lowest live node
    /// then removes it from the ring (its ranges are copied again from the
    /// surviving replicas). Returns once the running node has marked it
    /// LEFT; `wait_rebalanced` waits for the ring. Unlike
    /// [`Cluster::remove`] it need not wait for the node to be seen DOWN,
    /// nor for another change to end.
    pub fn forget(&self, id: u64) -> Result<(), String> {
        let by = self.killed_and_actor(id, "forget", "a node gone for good")?;
        let node = self.node(by)?;
        self.rt
            .run(move || async move { node.forget(NodeId(id)).await })?
            .map_err(|e| format!("forgetting node {id} through node {by}: {e}"))?;
        if let Some(slot) = lock(&self.slots).get_mut(&id) {
            slot.departed = Some(Departure::Forgotten);
        }
        Ok(())
    }

    /// Each running node's view of the ring: the ring in force and the
    /// change in progress with its moves done.
    pub fn ring_views(&self) -> Result<Vec<(u64, RingView)>, String> {
        let mut out = Vec::new();
        for id in self.live() {
            let node = self.node(id)?;
            let state = self
                .rt
                .run(move || async move { node.ring_state().await })?
                .map_err(|e| format!("node {id}: {e}"))?;
            out.push((id, ring_view(&state)));
        }
        Ok(out)
    }

    /// Every running node's incoming range transfers, by receiver.
    pub fn transfers(&self) -> Result<Vec<(u64, TransferView)>, String> {
        let mut out = Vec::new();
        for id in self.live() {
            let node = self.node(id)?;
            let transfers = self
                .rt
                .run(move || async move { node.transfers().await })?
                .map_err(|e| format!("node {id}: {e}"))?;
            out.extend(transfers.iter().map(|t| (id, TransferView::from(t))));
        }
        Ok(out)
    }

    /// Whether the ring is at rest: every running node has no change in
    /// progress and the same ring, which holds every running node not asked
    /// to leave and no node that left, was removed or was asked to leave (so
    /// a join or leave asked for but not yet begun is not mistaken for one
    /// done). A killed node may be in it or not (removed through another
    /// client). Old owners drop the ranges they gave away a few seconds
    /// later (`DROP_GRACE`).
    pub fn rebalanced(&self) -> Result<bool, String> {
        let (must, may): (BTreeSet<NodeId>, BTreeSet<NodeId>) = {
            let slots = lock(&self.slots);
            let must = slots
                .iter()
                .filter(|(_, s)| s.departed.is_none() && !s.leaving && s.node.is_some())
                .map(|(id, _)| NodeId(*id))
                .collect();
            let may = slots
                .iter()
                .filter(|(_, s)| s.departed.is_none() && !s.leaving)
                .map(|(id, _)| NodeId(*id))
                .collect();
            (must, may)
        };
        let mut first: Option<Arc<crate::ring::RingState>> = None;
        for id in self.live() {
            let Ok(node) = self.node(id) else {
                return Ok(false);
            };
            let Ok(state) = self
                .rt
                .run(move || async move { node.ring_state().await })?
            else {
                return Ok(false);
            };
            let members = state.ring.members();
            if state.pending.is_some() || !members.is_superset(&must) || !members.is_subset(&may) {
                return Ok(false);
            }
            match &first {
                Some(f) if **f != *state => return Ok(false),
                Some(_) => {}
                None => first = Some(state),
            }
        }
        Ok(true)
    }

    /// Freezes node `id`'s threads for `ms` (as SIGSTOP or a long GC pause
    /// would); returns once they are frozen (or after at most a second),
    /// so a request sent next finds the node paused.
    pub fn pause(&self, id: u64, ms: u64) -> Result<(), String> {
        let node = self.node(id)?;
        if node.stall_now(Duration::from_millis(ms), Duration::from_secs(1)) {
            Ok(())
        } else {
            Err(format!("node {id} is stopping"))
        }
    }

    /// Cuts every link between `a` and `b`, both ways. Adds to earlier
    /// partitions.
    pub fn partition(&self, a: &[u64], b: &[u64]) -> Result<(), String> {
        self.check_ids(a.iter().chain(b))?;
        match &self.net {
            Some(net) => net.partition(&ids(a), &ids(b)),
            None => self.change_plan(|plan| {
                block(plan, a, b);
                block(plan, b, a);
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Cuts the links from `from` to `to` only: frames from `to` to `from`
    /// still arrive. Adds to earlier partitions.
    pub fn partition_one_way(&self, from: &[u64], to: &[u64]) -> Result<(), String> {
        self.check_ids(from.iter().chain(to))?;
        match &self.net {
            Some(net) => net.partition_one_way(&ids(from), &ids(to)),
            None => self.change_plan(|plan| {
                block(plan, from, to);
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Removes every partition, drop rate and delay.
    pub fn heal(&self) {
        match &self.net {
            Some(net) => {
                net.heal();
                net.clear_faults();
            }
            None => {
                // An empty plan is always valid.
                let _ = self.change_plan(|plan| {
                    *plan = TcpPlan::default();
                    Ok(())
                });
            }
        }
    }

    /// Sets the probability, in `[0, 1]`, that a frame is lost.
    pub fn set_drop_rate(&self, rate: f64) -> Result<(), String> {
        match &self.net {
            Some(net) => {
                let faults = Faults {
                    drop_rate: rate,
                    ..net.faults()
                };
                net.set_faults(faults).map_err(|e| e.to_string())
            }
            None => self.change_plan(|plan| {
                plan.drop_rate = rate;
                Ok(())
            }),
        }
    }

    /// Sets each frame's delay, drawn from `min_ms..=max_ms`; frames on one
    /// link keep their order.
    pub fn set_delay(&self, min_ms: u64, max_ms: u64) -> Result<(), String> {
        let delay = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
        match &self.net {
            Some(net) => {
                let faults = Faults {
                    delay,
                    ..net.faults()
                };
                net.set_faults(faults).map_err(|e| e.to_string())
            }
            None => self.change_plan(|plan| {
                plan.delay = delay;
                Ok(())
            }),
        }
    }

    /// What the faults have done since the cluster started (on TCP,
    /// counted by each node's transport, killed nodes included).
    pub fn fault_counters(&self) -> FaultCounts {
        match &self.net {
            Some(net) => {
                let c = net.fault_counters();
                FaultCounts {
                    blocked: c.dropped_by_partition,
                    dropped: c.dropped_by_drop_rate,
                    delayed: c.delayed,
                }
            }
            None => {
                let mut total = *lock(&self.retired);
                for slot in lock(&self.slots).values() {
                    if let Some(t) = &slot.tcp {
                        total += tcp_counts(t);
                    }
                }
                total
            }
        }
    }

    /// Changes the TCP fault plan and gives it to every running node; on an
    /// error (a bad rate or delay) nothing changes.
    fn change_plan(
        &self,
        change: impl FnOnce(&mut TcpPlan) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut plan = lock(&self.tcp_faults);
        let mut next = plan.clone();
        change(&mut next)?;
        TcpFaults {
            drop_rate: next.drop_rate,
            delay: next.delay,
            seed: 0,
        }
        .validate()
        .map_err(|e| e.to_string())?;
        for (id, slot) in lock(&self.slots).iter() {
            if let Some(t) = &slot.tcp {
                self.apply_plan(*id, t, &next)?;
            }
        }
        *plan = next;
        Ok(())
    }

    /// Gives node `id`'s transport its part of `plan`.
    fn apply_plan(&self, id: u64, t: &TcpTransport, plan: &TcpPlan) -> Result<(), String> {
        let to = plan.blocked_to.get(&id).cloned().unwrap_or_default();
        t.set_blocked_outbound(to.into_iter().map(NodeId));
        t.set_faults(TcpFaults {
            drop_rate: plan.drop_rate,
            delay: plan.delay,
            seed: self
                .options
                .seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(id),
        })
        .map_err(|e| e.to_string())
    }

    fn check_ids<'a>(&self, ids: impl Iterator<Item = &'a u64>) -> Result<(), String> {
        let slots = lock(&self.slots);
        for id in ids {
            if !slots.contains_key(id) {
                return Err(format!("there is no node {id}"));
            }
        }
        Ok(())
    }

    /// Node `at`'s status view.
    pub fn status_of(&self, at: u64) -> Result<StatusView, String> {
        let node = self.node(at)?;
        self.rt
            .run(move || async move { node.status().await })?
            .map_err(|e| e.to_string())
    }

    /// What each running node believes about node `of`.
    pub fn views_of(&self, of: u64) -> Result<Vec<(u64, Option<MemberStatus>)>, String> {
        let mut out = Vec::new();
        for id in self.live() {
            if id == of {
                continue;
            }
            let node = self.node(id)?;
            let members = self.rt.run(move || async move { node.members().await })?;
            let status = members
                .ok()
                .and_then(|m| m.into_iter().find(|e| e.node == NodeId(of)))
                .map(|e| e.status);
            out.push((id, status));
        }
        Ok(out)
    }

    /// Whether every running node in `ids` sees every other ALIVE and all
    /// share a ring with exactly the members `ids`.
    pub fn formed(&self, ids: &[u64]) -> Result<bool, String> {
        let mut rings = Vec::new();
        for id in ids {
            let Ok(node) = self.node(*id) else {
                return Ok(false);
            };
            let (members, ring) = self.rt.run(move || async move {
                let members = node.members().await;
                let ring = node.ring().await;
                (members, ring)
            })?;
            let (Ok(members), Ok(ring)) = (members, ring) else {
                return Ok(false);
            };
            // And its coordinators route by that ring: one still a ring
            // behind sends writes that a replica fenced by the newer ring
            // refuses (a first batch of puts on a fresh cluster was once
            // answered `Unavailable`, 0 of 2 replicas, under load).
            if !self.routed(*id)? {
                return Ok(false);
            }
            for other in ids {
                if other == id {
                    continue;
                }
                let alive = members
                    .iter()
                    .any(|m| m.node == NodeId(*other) && m.status == MemberStatus::Alive);
                if !alive {
                    return Ok(false);
                }
            }
            let members: Vec<u64> = ring.members().into_iter().map(|n| n.0).collect();
            if members != ids {
                return Ok(false);
            }
            rings.push(ring);
        }
        Ok(rings.windows(2).all(|w| *w[0] == *w[1]))
    }

    /// Whether node `id`'s coordinators route by its ring manager's ring
    /// ([`crate::node::Node::routes_by_current_ring`]).
    fn routed(&self, id: u64) -> Result<bool, String> {
        let node = self.node(id)?;
        let routed = self
            .rt
            .run(move || async move { node.routes_by_current_ring().await })?;
        Ok(routed == Some(true))
    }

    /// Hints held by all running nodes together.
    pub fn total_hints(&self) -> Result<u64, String> {
        let mut total = 0;
        for id in self.live() {
            total += self.status_of(id)?.hints;
        }
        Ok(total)
    }

    /// Polls `check` every 20 ms until it is true (returns true) or
    /// `limit` passes (returns false).
    pub fn wait(
        &self,
        limit: Duration,
        mut check: impl FnMut() -> Result<bool, String>,
    ) -> Result<bool, String> {
        let start = Instant::now();
        loop {
            if check()? {
                return Ok(true);
            }
            if start.elapsed() >= limit {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Executes `op` through `node` and waits for the reply.
    pub fn execute_on(&self, node: Node, op: Op) -> Result<crate::Result<Reply>, String> {
        self.rt.run(move || async move { node.execute(op).await })
    }

    /// Stops every running node cleanly (flushing their engines).
    pub fn shutdown(&self) {
        let running: Vec<(Node, Option<Arc<ClientPort>>)> = lock(&self.slots)
            .values_mut()
            .filter_map(|s| s.node.take().map(|n| (n, s.port.take())))
            .collect();
        let _ = self.rt.run(move || async move {
            for (node, port) in running {
                if let Some(p) = port {
                    p.shutdown().await;
                }
                node.shutdown().await;
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Adds `from -> to` blocks to `plan`.
fn block(plan: &mut TcpPlan, from: &[u64], to: &[u64]) {
    for x in from {
        plan.blocked_to
            .entry(*x)
            .or_default()
            .extend(to.iter().filter(|y| *y != x));
    }
}

fn tcp_counts(t: &TcpTransport) -> FaultCounts {
    let f = t.fault_stats();
    FaultCounts {
        blocked: t.stats().frames_blocked + f.blocked_outbound,
        dropped: f.dropped,
        delayed: f.delayed,
    }
}

fn departed_message(id: u64, d: Departure) -> String {
    match d {
        Departure::Left => format!("node {id} left the cluster"),
        Departure::Removed => format!("node {id} was removed from the cluster"),
        Departure::Forgotten => format!("node {id} was forgotten by the cluster"),
    }
}

fn ids(v: &[u64]) -> Vec<NodeId> {
    v.iter().copied().map(NodeId).collect()
}

/// Attempts per request of [`execute_retrying`], the first included: six,
/// so the backoffs (20 ms doubling) add up to 620 ms, longer than a false
/// suspicion of a busy embedded node usually lasts before it refutes it
/// (a few gossip rounds of 50 to 100 ms). A remote client makes four
/// ([`crate::client::ClientConfig::max_attempts`]).
pub const ATTEMPTS: u32 = 6;

/// Backoff before [`execute_retrying`]'s first retry; it doubles.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// Executes `op` on `nodes` in turn, retrying as [`crate::client::Client`]
/// does: a retryable error of a read, or of a write that surely was not
/// applied (`indefinite: false`), is tried again on the next node after a
/// doubling backoff, up to [`ATTEMPTS`] attempts in all; a write that may
/// have been applied never is. Why: an embedded cluster shares its process
/// with the application or the shell, and on a loaded machine a node's
/// peers may briefly suspect it; a request refused for that ("0 of the 2
/// replicas needed answered", nothing written) succeeds a moment later.
/// Bound it with a timeout from outside if it needs one.
pub async fn execute_retrying(nodes: Vec<Node>, op: Op) -> crate::Result<Reply> {
    if nodes.is_empty() {
        return Err(crate::error::Error::Unavailable {
            needed: 1,
            got: 0,
            indefinite: false,
        });
    }
    let is_write = op.is_write();
    let mut backoff = RETRY_BACKOFF;
    let mut attempt = 0;
    loop {
        let node = &nodes[attempt as usize % nodes.len()];
        let error = match node.execute(op.clone()).await {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        attempt += 1;
        let reply = crate::protocol::ErrorReply::from(&error);
        if !reply.safe_to_retry(is_write) || attempt >= ATTEMPTS {
            return Err(error);
        }
        tracing::debug!(op = op.name(), attempt, %error, "embedded: retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    const LIMIT: Duration = Duration::from_secs(60);

    fn put(c: &Cluster, key: &str) -> bool {
        let op = Op::Put {
            bucket: ByteBuf::from(b"b".to_vec()),
            key: ByteBuf::from(key.as_bytes().to_vec()),
            value: ByteBuf::from(b"v".to_vec()),
            context: None,
            options: Default::default(),
        };
        matches!(
            c.pick(None).and_then(|n| c.execute_on(n, op)),
            Ok(Ok(Reply::Written { .. }))
        )
    }

    fn members(c: &Cluster) -> Vec<Vec<u64>> {
        c.ring_views()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v.nodes.iter().map(|n| n.node.0).collect())
            .collect()
    }

    /// A join, a graceful leave and the removal of a killed node, through
    /// the cluster's own calls, with the refusals on the way.
    #[test]
    fn nodes_join_leave_and_are_removed() {
        let rt = Arc::new(Runtime::new().unwrap());
        let options = ClusterOptions {
            vnodes: 8,
            ..ClusterOptions::default()
        };
        let c = Cluster::start(rt, options, Resolvers::new()).unwrap();
        assert!(c.rebalanced().unwrap());
        for i in 0..100 {
            assert!(put(&c, &format!("k{i}")));
        }
        assert!(c.add_node(Some(2)).unwrap_err().contains("already exists"));
        assert!(c.add_node(Some(0)).is_err());
        assert!(c.add_node(Some(MAX_NODE_ID + 1)).is_err());
        assert!(c.remove(2).unwrap_err().contains("is running"));
        assert!(c.remove(9).unwrap_err().contains("no node 9"));

        assert_eq!(c.add_node(None).unwrap(), 4);
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        assert_eq!(members(&c), vec![vec![1, 2, 3, 4]; 4]);
        let into4: Vec<TransferView> = c
            .transfers()
            .unwrap()
            .into_iter()
            .filter(|(n, _)| *n == 4)
            .map(|(_, t)| t)
            .collect();
        assert!(!into4.is_empty() && into4.iter().all(|t| t.state == "done"));
        assert!(into4.iter().map(|t| t.keys).sum::<u64>() > 0);

        c.leave(4, LIMIT).unwrap();
        assert_eq!(c.ids(), vec![1, 2, 3]);
        assert_eq!(c.live(), vec![1, 2, 3]);
        assert!(c.restart(4).unwrap_err().contains("left"));
        assert!(c.add_node(Some(4)).unwrap_err().contains("left"));
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        assert_eq!(members(&c), vec![vec![1, 2, 3]; 3]);

        assert_eq!(c.add_node(None).unwrap(), 5);
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        c.kill(5).unwrap();
        c.remove(5).unwrap();
        assert!(c.remove(5).unwrap_err().contains("removed"));
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        assert_eq!(members(&c), vec![vec![1, 2, 3]; 3]);
        assert_eq!(c.ids(), vec![1, 2, 3]);

        // Decommissioned, then killed: out of the ring already, so removing
        // it only forgets it.
        assert_eq!(c.add_node(None).unwrap(), 6);
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        c.decommission(6).unwrap();
        assert!(c.wait(LIMIT, || c.rebalanced()).unwrap());
        assert_eq!(members(&c), vec![vec![1, 2, 3]; 4]);
        c.kill(6).unwrap();
        c.remove(6).unwrap();
        assert_eq!(c.ids(), vec![1, 2, 3]);
        assert!(c.rebalanced().unwrap());

        c.kill(2).unwrap();
        c.kill(3).unwrap();
        assert!(c
            .decommission(1)
            .unwrap_err()
            .contains("last running member"));
    }
}
