//! The deterministic cluster simulator: every node's machines on one
//! virtual clock, a seeded faulty network, storage on memory engines,
//! clients making operations, and a fault schedule drawn from the seed.
//!
//! Each node runs the machines a real node runs, fed the same messages:
//! the membership gossip and phi-accrual detector ([`Membership`]), the
//! coordinator role ([`CoordinatorRole`]: requests, hinted handoff with
//! its hint round, bucket-table gossip), the replica ([`ReplicaStore`]
//! serving [`crate::replication::ReplicaRequest`]s), anti-entropy
//! ([`AntiEntropy`], its storage work carried out by
//! [`crate::roles::anti_entropy`]), the ring role ([`RingRole`]: ring
//! gossip, joins and leaves, the ring-confirmed gate, the ring state
//! stored in the node's engine) and the handoff role ([`HandoffRole`]:
//! range transfers both ways and dropping ranges given away). The roles
//! are the code the actors of a real node carry; their storage work is
//! done inline, or queued on a slow disk when the schedule makes one
//! slow. Every frame between nodes is encoded, goes through the
//! [`Fabric`] (loss, duplication, reordering, delay, partitions, pauses)
//! and is decoded again.
//!
//! Storage is a [`SimEngine`] per node: writes reach the disk only at
//! the next sync (every [`ClusterOptions::sync_interval`], as the
//! engines' default `sync = interval(100 ms)`), so a power loss loses
//! what was not synced; a process crash loses only the machines' memory.
//! The schedule can also make a disk slow or failing.
//!
//! The driver jumps from one due instant to the next (a frame's delivery,
//! a node's timer, a client's next operation, a scheduled fault) and at
//! each instant works in a fixed order: faults, then each node by id (its
//! frames, then its timers), then clients. Every random choice comes from
//! generators seeded by [`ClusterOptions::seed`], and no map with random
//! iteration order is walked, so one seed gives one history, byte for
//! byte.
//!
//! A run has two phases. During the first, clients make operations and
//! the schedule's faults strike: partitions of every shape, one-way cuts,
//! lossy and slow links, paused nodes, crashes and restarts, clock skew.
//! At its end everything is healed (links restored, nodes resumed and
//! restarted, faults cleared), clients stop, and the cluster is given
//! time to converge (hinted handoff, anti-entropy). Then every key the
//! run touched is read from each of its replicas' stores: the history's
//! final state, which [`super::check`] judges with the operations.
//!
//! Nodes join and leave under load ([`ClusterOptions::joins`],
//! [`ClusterOptions::leaves`]): the ring changes, ranges move by transfer,
//! and the final state is read from the primaries of the ring in force at
//! the end, which every running node must hold with no change pending
//! ([`super::check::ring_settles`]).
//!
//! Once faults end, an operator removes (`RemoveNode`) any node that
//! stopped for good while the ring still holds it (a leave that timed out,
//! or one no other node heard of).
//!
//! What is not simulated: the Compactor and the LSM engine's files (the
//! storage engines have their own crash and damage tests), the client
//! port and the TCP transport.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_bytes::ByteBuf;

use super::engine::{Durability, SimEngine, StorageFaults};
use super::history::{BucketKind, History, Observed, OpRecord, Outcome, SimBucket, SimOp};
use crate::codec;
use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::crdt::CrdtKind;
use crate::effect::Effect as RoleEffect;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::membership::MembershipConfig;
use crate::membership::RingKeeper;
use crate::membership::{MemberEvent, Membership, MembershipMsg, Outbox as MemberOutbox};
use crate::message::{Envelope, Message};
use crate::net::memory::{Fabric, FaultCounters, Faults};
use crate::protocol::{MemberView, Op, ReadOptions, Reply, RingView, StatusView, WriteOptions};
use crate::replication::anti_entropy::{AntiEntropy, AntiEntropyEffect, AntiEntropyWork};
use crate::replication::buckets::BucketEntry;
use crate::replication::coordinator::{Answer, Coordinator};
use crate::replication::get::GetReply;
use crate::replication::replica::ReplicaStore;
use crate::replication::{AntiEntropyConfig, BucketProps, ReplicaConfig, TransferConfig};
use crate::replication::{Consistency, Receipt, Regressions, ReplicaRequest, ReplicationMsg};
use crate::ring::{claim, key_token, Ring, RingConfig, RingFence, RingState};
use crate::roles::anti_entropy as ae_exec;
use crate::roles::client_ops::{to_client_op, to_reply_for, ReplyKind};
use crate::roles::coordinator::{self as coord_exec, Answered, CoordinatorRole, Effect, RoleParts};
use crate::roles::handoff::{
    self as handoff_exec, HandoffEffect, HandoffEvent, HandoffRole, HandoffWork,
};
use crate::roles::ring::{
    self as ring_exec, RingEffect, RingOutput, RingRole, RingRoleConfig, RING_META,
};
use crate::roles::stored_buckets::BUCKETS_META;
use crate::version::config::VersionConfig;
use crate::version::{ConflictPolicy, Hlc, Resolvers, WallClock};

/// The wall clock's reading at the start of every run, in milliseconds
/// since the Unix epoch (2027-01-15): a fixed start keeps runs
/// reproducible.
pub const START_WALL_MS: u64 = 1_800_000_000_000;

/// How often a node's handoff role is ticked while it has transfers
/// (timeouts, backoffs, the throttle).
const HANDOFF_TICK: Duration = Duration::from_millis(100);

/// A healthy network: every frame takes 0.1 to 1 ms.
const CALM: Faults = Faults {
    drop_rate: 0.0,
    duplicate_rate: 0.0,
    reorder_rate: 0.0,
    delay: (Duration::from_micros(100), Duration::from_millis(1)),
};

/// How a simulation is set up. Every field has a default
/// ([`ClusterOptions::new`]); the schedule of faults is drawn from the
/// seed.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Nodes, ids 1 to `nodes`, all members of the ring from the start.
    pub nodes: usize,
    /// Nodes that join during the run (ids after `nodes`), each at a time
    /// drawn from the seed in the first half of the active phase.
    pub joins: usize,
    /// Members that leave during the run, each at a time drawn from the
    /// seed in the first two thirds of the active phase.
    pub leaves: usize,
    /// Seeds every random choice.
    pub seed: u64,
    /// Clients, each making one operation at a time.
    pub clients: usize,
    /// Keys per bucket: few, so that writes meet.
    pub keys: usize,
    /// The buckets (each with a kind and quorums).
    pub buckets: Vec<SimBucket>,
    /// How long clients work and faults strike.
    pub active: Duration,
    /// How long the healed cluster is given to converge before the final
    /// state is read.
    pub settle: Duration,
    /// Whether the schedule has faults at all.
    pub faults: bool,
    /// The largest clock skew of a node, either way.
    pub max_skew: Duration,
    /// Virtual nodes per node.
    pub vnodes: usize,
    /// Bugs put back on purpose (to show the checkers find them).
    pub regressions: Regressions,
    /// The properties of a bucket no one set (those of `buckets` are
    /// set before the run): the library's defaults unless told otherwise.
    pub bucket_defaults: BucketProps,
    /// How often every node's storage is synced (as the engines' default
    /// `sync = interval(100 ms)` does); `None`: every write is synced
    /// before it returns (`sync = always`). A power loss
    /// ([`Fault::PowerLoss`]) loses what was not synced.
    pub sync_interval: Option<Duration>,
    /// Anti-entropy's configuration; `None`: the simulator's (a 5 s period
    /// and exchange timeout, the rest the defaults).
    pub anti_entropy: Option<AntiEntropyConfig>,
}

impl ClusterOptions {
    /// Five nodes (one more joins and one leaves during the run), four
    /// clients, three keys in each of the default buckets
    /// ([`default_buckets`]), 30 s of faults and 40 s to settle.
    pub fn new(nodes: usize, seed: u64) -> Self {
        ClusterOptions {
            nodes,
            joins: 1,
            leaves: usize::from(nodes > 1),
            seed,
            clients: 4,
            keys: 3,
            buckets: default_buckets(),
            active: Duration::from_secs(30),
            settle: Duration::from_secs(40),
            faults: true,
            max_skew: Duration::from_millis(400),
            vnodes: 16,
            regressions: Regressions::default(),
            bucket_defaults: BucketProps::default(),
            sync_interval: Some(Duration::from_millis(100)),
            anti_entropy: None,
        }
    }
}

/// The buckets of a run unless told otherwise: blind writes kept as
/// siblings under strict quorums, and under sloppy ones; last-writer-wins;
/// a PN-Counter; an OR-Set. All with `n = 3`, `r = w = 2`.
pub fn default_buckets() -> Vec<SimBucket> {
    let bucket = |name: &str, kind, sloppy| SimBucket {
        name: name.into(),
        kind,
        n: 3,
        r: 2,
        w: 2,
        sloppy,
    };
    vec![
        bucket("siblings", BucketKind::Siblings, false),
        bucket("sloppy", BucketKind::Siblings, true),
        bucket("lww", BucketKind::Lww, false),
        bucket("counter", BucketKind::Counter, true),
        // Strict: its resets are checked against the adds around them
        // (`check::counters`).
        bucket("strict-counter", BucketKind::Counter, false),
        bucket("set", BucketKind::Set, true),
    ]
}

/// A scheduled fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cuts every link between the two sides, both ways.
    Partition(Vec<NodeId>, Vec<NodeId>),
    /// Cuts the links from the first side to the second only.
    OneWay(Vec<NodeId>, Vec<NodeId>),
    /// Restores every link.
    Heal,
    /// The node's process dies: its machines' memory is lost, its store
    /// kept.
    Crash(NodeId),
    /// A crashed node starts again from its store.
    Restart(NodeId),
    /// The node stops (as under SIGSTOP): it neither runs nor receives.
    Pause(NodeId),
    /// A paused node runs again.
    Resume(NodeId),
    /// Every link loses, duplicates, reorders and delays frames so.
    Network(Faults),
    /// The node's wall clock is off by this many milliseconds.
    Skew(NodeId, i64),
    /// The node's machine loses power: as a crash, and its storage also
    /// loses every write not yet synced.
    PowerLoss(NodeId),
    /// The node's disk becomes slow or failing (all zero: healthy again).
    Disk(NodeId, DiskFaults),
    /// A new node starts and joins the ring through the running nodes.
    Join(NodeId),
    /// The node leaves: its ranges move to the nodes taking them, it
    /// gossips LEFT, then it stops for good.
    Leave(NodeId),
}

/// How a node's disk misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiskFaults {
    /// Each replica request and range-transfer batch waits for the disk
    /// for up to this long (drawn per job; a node's jobs finish in the
    /// order they were queued, as on one disk).
    pub latency: Duration,
    /// The chance that a write fails (nothing of it applied).
    pub write_fail_rate: f64,
    /// The chance that a read or scan fails.
    pub read_fail_rate: f64,
}

/// Storage work waiting for a slow disk.
enum DiskJob {
    /// A replica request from `from`, answered once it is done.
    Replicate {
        /// The coordinator.
        from: NodeId,
        /// The request.
        request: ReplicaRequest,
        /// The fence it was routed under.
        fence: Option<RingFence>,
    },
    /// A range transfer's storage work.
    Handoff(HandoffWork),
    /// The coordinator role's storage work (hints, the bucket table).
    Coordinator(coord_exec::StoreWork),
    /// Anti-entropy's storage work (scans, answers).
    AntiEntropy(AntiEntropyWork),
    /// The ring role's storage work (the ring, a leave's intent).
    Ring(crate::roles::ring::RingWork),
}

enum Life {
    Running,
    Paused,
    Crashed,
    /// Left the cluster and stopped for good.
    Gone,
}

struct Machines {
    store: Arc<ReplicaStore>,
    /// Jobs queued on a slow disk, by the time they finish (any order
    /// relative to when they were queued, as on a node's blocking pool).
    disk: VecDeque<(Instant, DiskJob)>,
    membership: Membership,
    coordinator: CoordinatorRole<usize>,
    anti_entropy: AntiEntropy,
    ring: RingRole,
    handoff: HandoffRole,
    /// Whether the ring may route requests (the ring-confirmed gate).
    confirmed: bool,
    /// The ring change this node last knew in progress (for the events).
    last_change: Option<crate::ring::Change>,
    next_membership: Instant,
    next_anti_entropy: Instant,
    next_ring: Instant,
    next_handoff: Instant,
}

struct SimNode {
    id: NodeId,
    engine: SimEngine,
    /// The most a storage job waits for the disk (zero: done at once).
    disk_latency: Duration,
    life: Life,
    skew_ms: i64,
    machines: Option<Machines>,
    starts: u64,
    /// A member of the ring the cluster was formed on (not a joiner).
    founding: bool,
}

struct Client {
    id: u32,
    next_at: Option<Instant>,
    /// The operation in flight, with the node it went to.
    waiting: Option<(usize, NodeId)>,
    written: u64,
    /// Driven by [`ClusterSim::request`], not by the workload.
    scripted: bool,
}

/// A wall clock at a fixed reading.
struct FixedClock(u64);

impl WallClock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// A whole cluster on one virtual clock. See the module documentation.
pub struct ClusterSim {
    options: ClusterOptions,
    start: Instant,
    now: Instant,
    fabric: Fabric,
    nodes: BTreeMap<NodeId, SimNode>,
    /// The ring the cluster was formed on (each node then keeps its own).
    ring: Arc<RingState>,
    bucket_entries: Vec<BucketEntry>,
    clients: Vec<Client>,
    schedule: VecDeque<(Instant, Fault)>,
    rng: ChaCha8Rng,
    history: History,
    /// Messages between a node's own roles, delivered at the instant they
    /// are sent.
    local: VecDeque<(NodeId, NodeId, Message)>,
    membership: MembershipConfig,
    replica: ReplicaConfig,
    anti_entropy: AntiEntropyConfig,
    transfer: TransferConfig,
    version: VersionConfig,
    /// Frames that did not decode (a bug if ever non-zero).
    undecodable: u64,
    accepting: bool,
    /// Answers of requests made with [`ClusterSim::execute`], by token.
    raw: BTreeMap<usize, Option<(NodeId, Result<Answer>)>>,
    next_raw: usize,
    /// The run's hot key (bucket index, key): a third of the operations
    /// go to it, and half the partitions cut its primaries off from the
    /// rest, so that histories of one key under many faults are long.
    hot: (usize, String),
    /// The whole replies of scripted clients' operations, by operation id,
    /// until [`ClusterSim::request_reply`] takes them.
    replies: BTreeMap<usize, Reply>,
    /// `CounterReset` operations whose read has answered and whose delete
    /// is in flight.
    deleting: BTreeSet<usize>,
    /// When every engine is synced next (none: writes are synced at once).
    next_sync: Option<Instant>,
    /// Draws disk latencies (apart from the run's generator, so that a
    /// healthy disk draws nothing).
    disk_rng: ChaCha8Rng,
    /// After the heal, when the operator next looks for nodes that left
    /// the cluster while the ring still holds them (see
    /// [`ClusterSim::operator_removes`]).
    operator_at: Option<Instant>,
}

/// Tokens of [`ClusterSim::execute`]'s requests start here, far past any
/// history index.
const RAW_TOKENS: usize = 1 << 40;

impl ClusterSim {
    /// Builds the cluster of `options` and draws its fault schedule.
    /// Fails with `InvalidInput` on a configuration that cannot run (no
    /// node, a bucket whose quorums do not fit its `n`, `n` above the
    /// node count).
    pub fn new(options: ClusterOptions) -> Result<Self> {
        if options.nodes == 0 || options.nodes + options.joins > 64 {
            return Err(Error::InvalidInput(
                "a simulation needs 1 to 64 nodes, joiners included".into(),
            ));
        }
        if options.leaves >= options.nodes {
            return Err(Error::InvalidInput(
                "a simulation keeps at least one of its first nodes".into(),
            ));
        }
        if options.clients == 0 || options.keys == 0 || options.buckets.is_empty() {
            return Err(Error::InvalidInput(
                "a simulation needs a client, a key and a bucket".into(),
            ));
        }
        for b in &options.buckets {
            if b.n == 0 || b.n > options.nodes || b.r == 0 || b.r > b.n || b.w == 0 || b.w > b.n {
                return Err(Error::InvalidInput(format!(
                    "bucket {} has n = {}, r = {}, w = {} on {} nodes",
                    b.name, b.n, b.r, b.w, options.nodes
                )));
            }
        }
        let start = Instant::now();
        let mut fabric = Fabric::new(options.seed ^ 0x4e45_5457, 4096);
        fabric.set_faults(CALM)?;
        let ids: Vec<NodeId> = (1..=options.nodes as u64).map(NodeId).collect();
        // The ring every node starts with: each node's claim in turn, as
        // the nodes of a cluster formed one after the other would have.
        let mut ring = Ring::empty();
        for &id in &ids {
            ring = claim::claim_join(&ring, id, options.vnodes)?;
        }
        let ring = Arc::new(RingState::settled(ring));
        // Faster than the defaults (1 s gossip, 3 s acceptable pause), so
        // that a run sees many outages begin and end: the same machines,
        // tuned as a deployment may tune them.
        let membership = MembershipConfig {
            gossip_interval: Duration::from_millis(500),
            acceptable_heartbeat_pause: Duration::from_millis(1500),
            local_pause_guard: Duration::from_secs(1),
            ..MembershipConfig::default()
        };
        let replica = ReplicaConfig {
            handoff_retry: Duration::from_secs(2),
            ..ReplicaConfig::default()
        };
        let anti_entropy = options.anti_entropy.clone().unwrap_or(AntiEntropyConfig {
            period: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(5),
            ..AntiEntropyConfig::default()
        });
        let version = VersionConfig::default();
        // The bucket table, as set through node 1 before the run.
        let mut setter = Coordinator::<()>::new(
            NodeId(1),
            BucketProps::default(),
            Hlc::new(version.max_clock_skew),
        );
        for b in &options.buckets {
            setter.set_bucket(b.name.clone().into_bytes(), props_of(b), START_WALL_MS)?;
        }
        let bucket_entries = setter.buckets().entries();
        let mut sim = ClusterSim {
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            start,
            now: start,
            nodes: BTreeMap::new(),
            ring,
            bucket_entries,
            clients: Vec::new(),
            schedule: VecDeque::new(),
            history: History {
                seed: options.seed,
                buckets: options
                    .buckets
                    .iter()
                    .map(|b| (b.name.clone(), b.clone()))
                    .collect(),
                sync_interval: options.sync_interval,
                ..History::default()
            },
            local: VecDeque::new(),
            membership,
            replica,
            anti_entropy,
            transfer: TransferConfig {
                pull_timeout: Duration::from_secs(3),
                ..TransferConfig::default()
            },
            version,
            undecodable: 0,
            accepting: true,
            raw: BTreeMap::new(),
            next_raw: RAW_TOKENS,
            hot: (0, "k0".into()),
            replies: BTreeMap::new(),
            deleting: BTreeSet::new(),
            next_sync: options.sync_interval.map(|d| start + d),
            disk_rng: ChaCha8Rng::seed_from_u64(options.seed ^ 0x4449_534b),
            operator_at: None,
            fabric: {
                for &id in &ids {
                    fabric.add_node(id)?;
                }
                fabric
            },
            options,
        };
        for &id in &ids {
            let mut node = sim.new_node(id, true);
            let out = sim.boot(&mut node)?;
            sim.nodes.insert(id, node);
            sim.carry_ring(id, out);
        }
        for c in 0..sim.options.clients {
            let first = start + Duration::from_millis(sim.rng.random_range(0..200));
            sim.clients.push(Client {
                id: c as u32 + 1,
                next_at: Some(first),
                waiting: None,
                written: 0,
                scripted: false,
            });
        }
        sim.hot = (
            sim.rng.random_range(0..sim.options.buckets.len()),
            format!("k{}", sim.rng.random_range(0..sim.options.keys)),
        );
        if sim.options.faults {
            sim.draw_schedule();
        }
        Ok(sim)
    }

    /// A node not started yet, with its empty storage: a founding member
    /// of the formed ring, or a joiner.
    fn new_node(&self, id: NodeId, founding: bool) -> SimNode {
        let durability = match self.options.sync_interval {
            Some(_) => Durability::Unsynced,
            None => Durability::Synced,
        };
        SimNode {
            id,
            engine: SimEngine::new(self.options.seed ^ id.0 ^ 0x454e_4749, durability),
            disk_latency: Duration::ZERO,
            life: Life::Running,
            skew_ms: 0,
            machines: None,
            starts: 0,
            founding,
        }
    }

    /// Starts `node`'s machines from its store (first start, join or
    /// restart). Returns the ring role's first effects, for the caller to
    /// carry out once the node is in the cluster's map.
    fn boot(&self, node: &mut SimNode) -> Result<Vec<RingEffect>> {
        let id = node.id;
        let wall = self.wall_ms(node.skew_ms);
        let mut store = ReplicaStore::open_with_clock(
            id,
            Arc::new(node.engine.clone()),
            self.version.max_siblings,
            self.replica.max_hints,
            &FixedClock(wall),
        )?;
        store.set_regressions(self.options.regressions);
        let store = Arc::new(store);
        // The bucket table: as stored, or as set before the run.
        let stored: Vec<BucketEntry> = match store.load_meta(BUCKETS_META)? {
            Some(bytes) => codec::decode(&bytes, DEFAULT_MAX_FRAME_BYTES)?,
            None => self.bucket_entries.clone(),
        };
        let mut coordinator = CoordinatorRole::new(
            RoleParts {
                node: id,
                bucket_defaults: self.options.bucket_defaults.clone(),
                buckets: stored,
                config: self.replica.clone(),
                gossip_interval: self.membership.gossip_interval,
                rng_seed: self.options.seed ^ id.0 ^ node.starts.wrapping_mul(0x4255_434b),
                max_clock_skew: self.version.max_clock_skew,
                wall_ms: wall,
            },
            self.now,
        );
        coordinator
            .machine_mut()
            .set_regressions(self.options.regressions);
        coordinator.machine_mut().set_witness(store.witness());
        let seed = self.options.seed ^ id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.starts;
        // Every founding node, and every node started since that has not
        // left.
        let mut peers: BTreeSet<NodeId> = (1..=self.options.nodes as u64).map(NodeId).collect();
        for (&p, n) in &self.nodes {
            if matches!(n.life, Life::Gone) {
                peers.remove(&p);
            } else {
                peers.insert(p);
            }
        }
        peers.remove(&id);
        let peers: Vec<NodeId> = peers.into_iter().collect();
        // The ring keeper: a founding member starts on the formed ring (and
        // stores it, as a node stores every ring state); a restarted node
        // on the state it stored; a joiner on nothing, through its seeds.
        let ring_config = RingConfig {
            vnodes_per_node: self.options.vnodes,
            ..RingConfig::default()
        };
        let mut keeper = RingKeeper::new(
            id,
            &ring_config,
            self.membership.gossip_interval,
            &peers,
            seed ^ 0x5249_4e47,
        )?;
        if node.starts == 0 && node.founding {
            keeper.form((*self.ring).clone())?;
            ring_exec::execute(
                &store,
                crate::roles::ring::RingWork::Save(Arc::clone(&self.ring)),
            )?;
        } else if let Some(bytes) = store.load_meta(RING_META)? {
            keeper.restore(codec::decode::<RingState>(&bytes, DEFAULT_MAX_FRAME_BYTES)?)?;
        }
        if ring_exec::was_leaving(&store)? {
            keeper.resume_leave();
        }
        let mut ring = RingRole::new(
            keeper,
            RingRoleConfig {
                leave_timeout: Duration::from_secs(30),
                leave_linger: self.membership.leave_linger,
            },
        );
        coordinator.set_ring_state(Arc::clone(ring.state()));
        store.set_fence(ring.state().fence());
        let handoff = HandoffRole::new(id, self.transfer.clone(), seed ^ 0x4841_4e44);
        let mut ring_out = Vec::new();
        ring.start(self.now, &mut ring_out);
        ring.handoff_ready(self.now, &mut ring_out);
        // What membership says at start (a formed cluster's peers, all up)
        // goes to every role, as the failure detector tells the others.
        let mut sink = MemberOutbox::new();
        let mut membership = if node.starts == 0 && node.founding {
            // A formed cluster: every node knows every other from the start.
            let mut m = Membership::new(self.membership.clone(), id, id.to_string(), &[], seed)?;
            for &p in &peers {
                m.add_peer(self.now, p, p.to_string(), &mut sink);
            }
            m
        } else {
            // A restarted or joining node joins through every other as a
            // seed.
            Membership::new(self.membership.clone(), id, id.to_string(), &peers, seed)?
        };
        membership.tick(self.now, &mut sink);
        let n_max = self.options.buckets.iter().map(|b| b.n).max().unwrap_or(3);
        let mut anti_entropy = AntiEntropy::new(id, self.anti_entropy.clone(), n_max, self.now);
        anti_entropy.set_ring(Arc::clone(ring.ring()));
        for event in &sink.events {
            coordinator.on_member_event(event);
            anti_entropy.on_member_event(event);
            ring.on_member_event(self.now, event, &mut ring_out);
        }
        let confirmed = ring.ring_confirmed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0053_494d);
        let phase = |rng: &mut ChaCha8Rng, every: Duration| {
            let nanos = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX).max(1);
            Duration::from_nanos(rng.random_range(0..nanos))
        };
        let now = self.now;
        node.machines = Some(Machines {
            next_membership: now + phase(&mut rng, self.membership.gossip_interval / 4),
            next_anti_entropy: now + phase(&mut rng, tick_of(self.anti_entropy.period)),
            next_ring: now + phase(&mut rng, self.membership.gossip_interval),
            next_handoff: now + HANDOFF_TICK,
            store,
            disk: VecDeque::new(),
            membership,
            coordinator,
            anti_entropy,
            ring,
            handoff,
            confirmed,
            last_change: None,
        });
        node.starts += 1;
        Ok(ring_out)
    }

    /// The wall clock of a node skewed by `skew_ms`, now.
    fn wall_ms(&self, skew_ms: i64) -> u64 {
        let elapsed = (self.now - self.start).as_millis() as u64;
        (START_WALL_MS + elapsed).saturating_add_signed(skew_ms)
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The fault schedule drawn for this run.
    pub fn schedule(&self) -> Vec<(Duration, Fault)> {
        self.schedule
            .iter()
            .map(|(at, f)| (*at - self.start, f.clone()))
            .collect()
    }

    /// Frames that did not decode: never expected.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    fn draw_schedule(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let end = self.options.active;
        let mut at = Duration::from_millis(self.rng.random_range(500..3000));
        let mut list: Vec<(Duration, Fault)> = Vec::new();
        // Nodes crashed or paused until then, so that at most a minority
        // of nodes is down at once and a node is not crashed twice.
        let mut busy: BTreeMap<NodeId, Duration> = BTreeMap::new();
        while at < end {
            let roll = self.rng.random_range(0..100);
            match roll {
                0..=9 => {
                    let (a, b) = self.draw_sides(&ids);
                    list.push((at, Fault::Partition(a, b)));
                }
                10..=29 => {
                    // A key's primaries cut off from every other node:
                    // the shape that makes the other side's nodes stand
                    // in for all of them (Jepsen's "primaries" nemesis).
                    let (b, key) = if self.rng.random_bool(0.7) {
                        (&self.options.buckets[self.hot.0], self.hot.1.clone())
                    } else {
                        let b = self.rng.random_range(0..self.options.buckets.len());
                        let key = format!("k{}", self.rng.random_range(0..self.options.keys));
                        (&self.options.buckets[b], key)
                    };
                    let token = key_token(b.name.as_bytes(), key.as_bytes());
                    let mut primaries = self.ring.ring.preference_list(token, b.n);
                    primaries.sort();
                    let rest: Vec<NodeId> = ids
                        .iter()
                        .copied()
                        .filter(|n| !primaries.contains(n))
                        .collect();
                    if !rest.is_empty() {
                        list.push((at, Fault::Partition(primaries, rest)));
                    }
                }
                30..=39 => {
                    let (a, b) = self.draw_sides(&ids);
                    list.push((at, Fault::OneWay(a, b)));
                }
                40..=54 => list.push((at, Fault::Heal)),
                55..=79 => {
                    busy.retain(|_, until| *until > at);
                    let free: Vec<NodeId> = ids
                        .iter()
                        .copied()
                        .filter(|n| !busy.contains_key(n))
                        .collect();
                    if busy.len() < (ids.len() - 1) / 2 + usize::from(ids.len() <= 2) {
                        if let Some(&node) = free.choose(&mut self.rng) {
                            let back =
                                at + Duration::from_millis(self.rng.random_range(1000..12000));
                            busy.insert(node, back);
                            if roll < 63 {
                                list.push((at, Fault::Crash(node)));
                                list.push((back, Fault::Restart(node)));
                            } else if roll < 70 {
                                list.push((at, Fault::PowerLoss(node)));
                                list.push((back, Fault::Restart(node)));
                            } else {
                                list.push((at, Fault::Pause(node)));
                                list.push((back, Fault::Resume(node)));
                            }
                        }
                    }
                }
                80..=89 => {
                    let calm = self.rng.random_bool(0.4);
                    let faults = if calm {
                        CALM
                    } else {
                        let max_delay = self.rng.random_range(1..60);
                        Faults {
                            drop_rate: self.rng.random_range(0.0..0.2),
                            duplicate_rate: self.rng.random_range(0.0..0.1),
                            reorder_rate: self.rng.random_range(0.0..0.3),
                            delay: (CALM.delay.0, Duration::from_millis(max_delay)),
                        }
                    };
                    list.push((at, Fault::Network(faults)));
                }
                90..=94 => {
                    let node = *ids.choose(&mut self.rng).unwrap_or(&NodeId(1));
                    let disk = if self.rng.random_bool(0.3) {
                        DiskFaults::default()
                    } else {
                        DiskFaults {
                            latency: Duration::from_millis(self.rng.random_range(1..200)),
                            write_fail_rate: if self.rng.random_bool(0.5) {
                                self.rng.random_range(0.0..0.2)
                            } else {
                                0.0
                            },
                            read_fail_rate: if self.rng.random_bool(0.5) {
                                self.rng.random_range(0.0..0.2)
                            } else {
                                0.0
                            },
                        }
                    };
                    list.push((at, Fault::Disk(node, disk)));
                }
                _ => {
                    let node = *ids.choose(&mut self.rng).unwrap_or(&NodeId(1));
                    let max = self.options.max_skew.as_millis() as i64;
                    let skew = if max == 0 {
                        0
                    } else {
                        self.rng.random_range(-max..=max)
                    };
                    list.push((at, Fault::Skew(node, skew)));
                }
            }
            at += Duration::from_millis(self.rng.random_range(1000..8000));
        }
        // Joins in the first half, leaves in the first two thirds.
        let end_ms = end.as_millis().max(4000) as u64;
        for j in 0..self.options.joins {
            let node = NodeId((self.options.nodes + j + 1) as u64);
            let at = Duration::from_millis(self.rng.random_range(1000..end_ms / 2));
            list.push((at, Fault::Join(node)));
        }
        let mut leaving = ids.clone();
        for _ in 0..self.options.leaves {
            if leaving.is_empty() {
                break;
            }
            let node = leaving.remove(self.rng.random_range(0..leaving.len()));
            let at = Duration::from_millis(self.rng.random_range(2000..end_ms * 2 / 3));
            list.push((at, Fault::Leave(node)));
        }
        // Restarts and resumes drawn past the end happen at the heal.
        list.sort_by_key(|(at, _)| *at);
        self.schedule = list
            .into_iter()
            .filter(|(at, _)| *at < end)
            .map(|(at, f)| (self.start + at, f))
            .collect();
    }

    /// Two sides of a partition: one node alone, a minority against a
    /// majority, or a random split; every node on one side or the other.
    fn draw_sides(&mut self, ids: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut shuffled = ids.to_vec();
        // Fisher-Yates with the run's generator.
        for i in (1..shuffled.len()).rev() {
            let j = self.rng.random_range(0..=i);
            shuffled.swap(i, j);
        }
        let cut = match self.rng.random_range(0..3) {
            0 => 1,
            1 => (ids.len() - 1) / 2,
            _ => self.rng.random_range(1..ids.len().max(2)),
        }
        .clamp(1, ids.len().saturating_sub(1).max(1));
        let b = shuffled.split_off(cut);
        shuffled.sort();
        let mut b = b;
        b.sort();
        (shuffled, b)
    }

    /// Runs the whole simulation: the active phase with its faults, the
    /// heal, the settling, and the final read. Returns the history.
    pub fn run(mut self) -> Result<History> {
        let heal_at = self.start + self.options.active;
        self.run_until(heal_at);
        self.heal_all();
        let end = heal_at + self.options.settle;
        self.run_until(end);
        self.finish()
    }

    /// Heals everything and stops the clients.
    fn heal_all(&mut self) {
        self.accepting = false;
        self.fabric.heal();
        let _ = self.fabric.set_faults(CALM);
        self.schedule.clear();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.set_disk(id, DiskFaults::default());
            self.apply(Fault::Resume(id));
            self.apply(Fault::Restart(id));
        }
        self.operator_at = Some(self.now + Duration::from_secs(1));
        self.event("heal: every link restored, every node running, clients stopped".into());
        // Clock skew stays: a healed cluster still has skewed clocks.
    }

    fn event(&mut self, text: String) {
        let at = self.elapsed();
        self.history.events.push((at, text));
    }

    /// Runs until `end` (virtual).
    fn run_until(&mut self, end: Instant) {
        while let Some(next) = self.next_due().filter(|&next| next <= end) {
            self.now = self.now.max(next);
            self.step_instant();
        }
        self.now = self.now.max(end);
    }

    fn next_due(&mut self) -> Option<Instant> {
        let mut next = self.fabric.next_due_any();
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n: Instant| n.min(t)));
        };
        if let Some((at, _)) = self.schedule.front() {
            consider(*at);
        }
        if let Some(at) = self.next_sync {
            consider(at);
        }
        if let Some(at) = self.operator_at {
            consider(at);
        }
        for c in &self.clients {
            if let (Some(at), true) = (c.next_at, self.accepting) {
                consider(at);
            }
        }
        for node in self.nodes.values_mut() {
            if !matches!(node.life, Life::Running) {
                continue;
            }
            if let Some(m) = node.machines.as_mut() {
                consider(m.next_membership);
                consider(m.coordinator.next_wakeup());
                if let Some((at, _)) = m.disk.front() {
                    consider(*at);
                }
                consider(m.next_ring);
                if let Some(at) = m.ring.next_wakeup() {
                    consider(at);
                }
                if m.handoff.is_active() {
                    consider(m.next_handoff);
                }
            }
        }
        next
    }

    fn step_instant(&mut self) {
        let now = self.now;
        while self.schedule.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, fault)) = self.schedule.pop_front() {
                self.apply(fault);
            }
        }
        if let (Some(at), Some(every)) = (self.next_sync, self.options.sync_interval) {
            if at <= now {
                for node in self.nodes.values() {
                    node.engine.sync();
                }
                self.next_sync = Some(now + every);
            }
        }
        if self.operator_at.is_some_and(|at| at <= now) {
            self.operator_at = Some(now + Duration::from_secs(2));
            self.operator_removes();
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            self.disk_due(id);
            while let Some((from, frame)) = self.fabric.pop_due(id, now) {
                match codec::decode::<Envelope>(&frame, DEFAULT_MAX_FRAME_BYTES) {
                    Ok(env) if env.to == id => self.deliver(id, env.from, env.msg),
                    _ => {
                        let _ = from;
                        self.undecodable += 1;
                    }
                }
                self.drain_local();
            }
        }
        for &id in &ids {
            self.timers(id);
            self.drain_local();
        }
        if self.accepting {
            for c in 0..self.clients.len() {
                if self.clients[c].next_at.is_some_and(|at| at <= now) {
                    self.invoke(c);
                    self.drain_local();
                }
            }
        }
    }

    fn drain_local(&mut self) {
        while let Some((to, from, msg)) = self.local.pop_front() {
            self.deliver(to, from, msg);
        }
    }

    fn apply(&mut self, fault: Fault) {
        match &fault {
            Fault::Partition(a, b) => self.fabric.partition(a, b),
            Fault::OneWay(a, b) => self.fabric.partition_one_way(a, b),
            Fault::Heal => self.fabric.heal(),
            Fault::Network(f) => {
                let _ = self.fabric.set_faults(*f);
            }
            Fault::Skew(node, skew) => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.skew_ms = *skew;
                }
            }
            Fault::Disk(node, disk) => self.set_disk(*node, *disk),
            Fault::PowerLoss(node) => {
                let at = self.elapsed();
                self.history.power_losses.push((at, *node));
                self.apply(Fault::Crash(*node));
                if let Some(n) = self.nodes.get(node) {
                    let lost = n.engine.crash();
                    self.event(format!(
                        "power loss at {node}: {lost} unsynced write batches lost"
                    ));
                }
                return;
            }
            Fault::Pause(node) => {
                let Some(n) = self.nodes.get_mut(node) else {
                    return;
                };
                if !matches!(n.life, Life::Running) {
                    return;
                }
                n.life = Life::Paused;
                self.fabric.pause(*node);
            }
            Fault::Resume(node) => {
                let Some(n) = self.nodes.get_mut(node) else {
                    return;
                };
                if !matches!(n.life, Life::Paused) {
                    return;
                }
                n.life = Life::Running;
                self.fabric.resume(*node);
            }
            Fault::Crash(node) => {
                let Some(n) = self.nodes.get_mut(node) else {
                    return;
                };
                if matches!(n.life, Life::Crashed | Life::Gone) {
                    return;
                }
                if matches!(n.life, Life::Paused) {
                    self.fabric.resume(*node);
                }
                n.life = Life::Crashed;
                n.machines = None;
                self.fabric.remove_node(*node);
                self.abandon_requests_at(*node);
            }
            Fault::Restart(node) => {
                let Some(mut n) = self.nodes.remove(node) else {
                    return;
                };
                let mut out = Vec::new();
                if matches!(n.life, Life::Crashed) {
                    let _ = self.fabric.add_node(*node);
                    match self.boot(&mut n) {
                        Err(e) => self.event(format!("restart of {node} failed: {e}")),
                        Ok(first) => {
                            n.life = Life::Running;
                            out = first;
                        }
                    }
                }
                self.nodes.insert(*node, n);
                self.carry_ring(*node, out);
            }
            Fault::Join(node) => {
                if self.nodes.contains_key(node) {
                    return;
                }
                let mut n = self.new_node(*node, false);
                if let Err(e) = self.fabric.add_node(*node) {
                    self.event(format!("join of {node} failed: {e}"));
                    return;
                }
                match self.boot(&mut n) {
                    Err(e) => {
                        self.fabric.remove_node(*node);
                        self.event(format!("join of {node} failed: {e}"));
                        return;
                    }
                    Ok(out) => {
                        self.nodes.insert(*node, n);
                        self.event(format!("{fault:?}"));
                        self.carry_ring(*node, out);
                        return;
                    }
                }
            }
            Fault::Leave(node) => {
                let now = self.now;
                let running = self.is_running(*node);
                let Some(m) = self.machines_mut(*node).ok().filter(|_| running) else {
                    self.event(format!("{node} cannot leave: it is not running"));
                    return;
                };
                let mut out = Vec::new();
                m.ring.leave(now, &mut out);
                self.event(format!("{fault:?}"));
                self.carry_ring(*node, out);
                return;
            }
        }
        if !matches!(
            (&fault, self.accepting),
            (Fault::Resume(_) | Fault::Restart(_), false)
        ) {
            self.event(format!("{fault:?}"));
        }
    }

    /// Sends `msg` from node `from` to node `to`: through the fabric, or
    /// straight to the node's own roles.
    fn send(&mut self, from: NodeId, to: NodeId, msg: Message) {
        if from == to {
            self.local.push_back((to, from, msg));
            return;
        }
        let env = Envelope::new(from, to, msg);
        match codec::encode(&env) {
            Ok(bytes) => {
                let _ = self.fabric.send(self.now, from, to, bytes.into());
            }
            Err(_) => self.undecodable += 1,
        }
    }

    /// Node `id` receives `msg` from `from`.
    fn deliver(&mut self, id: NodeId, from: NodeId, msg: Message) {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !matches!(node.life, Life::Running) {
            // A crashed node receives nothing; a paused one gets its
            // frames held by the fabric, and its own roles' messages wait
            // with it, which the simulator does not model: dropped.
            return;
        }
        let Some(m) = node.machines.as_mut() else {
            return;
        };
        match msg {
            Message::Membership(msg) => {
                let mut out = MemberOutbox::new();
                m.membership.step(
                    now,
                    crate::membership::Addressed::new(from, id, msg),
                    &mut out,
                );
                self.member_out(id, out);
            }
            Message::Replication(ReplicationMsg::Replicate { request, fence }) => {
                let job = DiskJob::Replicate {
                    from,
                    request,
                    fence,
                };
                let latency = node.disk_latency;
                if let Some(DiskJob::Replicate {
                    from,
                    request,
                    fence,
                }) = queue_on_disk(&mut self.disk_rng, latency, now, &mut m.disk, job)
                {
                    let reply = m.store.handle_fenced(Some(from), request, fence);
                    self.send(
                        id,
                        from,
                        Message::Replication(ReplicationMsg::Replicated { reply }),
                    );
                }
            }
            Message::Replication(msg) => {
                let mut out = Vec::new();
                m.coordinator.on_message(now, from, msg, &mut out);
                self.carry_coordinator(id, out);
            }
            Message::AntiEntropy(msg) => {
                let mut out = Vec::new();
                m.anti_entropy.step(now, from, msg, &mut out);
                self.carry_anti_entropy(id, out);
            }
            Message::Ring(msg) => {
                let mut out = Vec::new();
                m.ring.step(now, from, msg, &mut out);
                self.carry_ring(id, out);
            }
            Message::Transfer(msg) => {
                let mut out = Vec::new();
                m.handoff.step(now, from, msg, &mut out);
                self.carry_handoff(id, out);
            }
            // Pings are the transport's.
            _ => {}
        }
    }

    /// Carries out node `id`'s ring role effects: gossip, saving the ring
    /// state (inline), and its outputs.
    fn carry_ring(&mut self, id: NodeId, mut out: Vec<RingEffect>) {
        let now = self.now;
        while !out.is_empty() {
            let mut next = Vec::new();
            for effect in out {
                match effect {
                    RoleEffect::Send { to, msg } => self.send(id, to, Message::Ring(msg)),
                    RoleEffect::Store(work) => {
                        let Some(node) = self.nodes.get_mut(&id) else {
                            return;
                        };
                        let latency = node.disk_latency;
                        let Some(m) = node.machines.as_mut() else {
                            return;
                        };
                        let job = DiskJob::Ring(work);
                        if let Some(DiskJob::Ring(work)) =
                            queue_on_disk(&mut self.disk_rng, latency, now, &mut m.disk, job)
                        {
                            let result = ring_exec::execute(&m.store, work.clone());
                            m.ring.finished(now, &work, result, &mut next);
                        }
                    }
                    RoleEffect::Emit(output) => self.ring_output(id, output, &mut next),
                }
            }
            out = next;
        }
    }

    /// What node `id`'s ring role tells its runner.
    fn ring_output(&mut self, id: NodeId, output: RingOutput, next: &mut Vec<RingEffect>) {
        let now = self.now;
        let Ok(m) = self.machines_mut(id) else {
            return;
        };
        match output {
            RingOutput::Ring(ring) => {
                let epoch = ring.epoch();
                m.anti_entropy.set_ring(ring);
                self.event(format!("{id}: ring epoch {epoch} in force"));
            }
            RingOutput::State(state) => {
                // As a node does: the replica's fence first.
                m.store.set_fence(state.fence());
                let change = state.pending.as_ref().map(|p| p.change);
                m.coordinator.set_ring_state(state);
                if change != m.last_change {
                    m.last_change = change;
                    if let Some(change) = change {
                        self.event(format!("{id}: change {change:?} begins"));
                    }
                }
            }
            RingOutput::Confirmed(confirmed) => m.confirmed = confirmed,
            RingOutput::Handoff(command) => {
                let mut out = Vec::new();
                m.handoff.command(now, command, &mut out);
                self.carry_handoff(id, out);
            }
            RingOutput::AnnounceLeft => {
                // As the node's ring manager does: peers stop gossiping
                // rings to a LEFT node, so it stops coordinating.
                m.coordinator.stop_accepting();
                let mut out = MemberOutbox::new();
                m.membership.leave(now, &mut out);
                self.member_out(id, out);
                self.event(format!("{id} announces LEFT"));
            }
            RingOutput::Left { moved } => {
                let _ = next;
                self.event(format!(
                    "{id} left the cluster and stopped ({})",
                    if moved {
                        "its ranges moved"
                    } else {
                        "its leave timed out"
                    }
                ));
                self.retire(id);
            }
        }
    }

    /// What an operator does after the faults end: a node that stopped for
    /// good (its leave timed out, or it finished a leave no other node
    /// heard of) while the ring in force still holds it is removed with
    /// `RemoveNode` through the lowest running node, once no other change
    /// is in progress; its ranges are copied again from the other
    /// replicas.
    fn operator_removes(&mut self) {
        let now = self.now;
        let Some(at) = self
            .nodes
            .values()
            .find(|n| matches!(n.life, Life::Running) && n.machines.is_some())
            .map(|n| n.id)
        else {
            return;
        };
        let state = self.ring_state();
        if state.pending.is_some() {
            return;
        }
        let gone = state.ring.members().into_iter().find(|n| self.is_gone(*n));
        let Some(gone) = gone else {
            return;
        };
        let Ok(m) = self.machines_mut(at) else {
            return;
        };
        let mut out = Vec::new();
        // Refused for now (it still looks reachable, or a change began):
        // the operator tries again later.
        if m.ring.remove(now, gone, &mut out).is_ok() {
            self.event(format!("operator removes {gone} through {at}"));
        }
        self.carry_ring(at, out);
    }

    /// Node `id` has left: it stops for good; its store is no longer read.
    fn retire(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.life = Life::Gone;
        n.machines = None;
        self.fabric.remove_node(id);
        self.abandon_requests_at(id);
    }

    /// Client requests waiting on `node`, which stopped, die with it:
    /// their outcome is unknown, and each client goes on.
    fn abandon_requests_at(&mut self, node: NodeId) {
        let now = self.now;
        for c in 0..self.clients.len() {
            let Some((op, at)) = self.clients[c].waiting else {
                continue;
            };
            if at != node {
                continue;
            }
            self.clients[c].waiting = None;
            if !self.clients[c].scripted {
                self.clients[c].next_at = Some(now + Duration::from_millis(50));
            }
            self.history.ops[op].outcome = Outcome::Unknown;
        }
    }

    /// Carries out node `id`'s handoff effects: transfer messages, storage
    /// work (inline, or queued on a slow disk), and finished transfers,
    /// which go to the ring role.
    fn carry_handoff(&mut self, id: NodeId, mut out: Vec<HandoffEffect>) {
        let now = self.now;
        while !out.is_empty() {
            let mut next = Vec::new();
            let mut ring_out = Vec::new();
            for effect in out {
                match effect {
                    RoleEffect::Send { to, msg } => self.send(id, to, Message::Transfer(msg)),
                    RoleEffect::Store(work) => {
                        let Some(node) = self.nodes.get_mut(&id) else {
                            return;
                        };
                        let latency = node.disk_latency;
                        let Some(m) = node.machines.as_mut() else {
                            return;
                        };
                        let job = DiskJob::Handoff(work);
                        if let Some(DiskJob::Handoff(work)) =
                            queue_on_disk(&mut self.disk_rng, latency, now, &mut m.disk, job)
                        {
                            let done = run_handoff(m, id, work);
                            m.handoff.finished(now, done, &mut next);
                        }
                    }
                    RoleEffect::Emit(HandoffEvent::Done { id: transfer, .. }) => {
                        let Ok(m) = self.machines_mut(id) else {
                            return;
                        };
                        m.ring.on_transfer_done(now, transfer, &mut ring_out);
                    }
                    RoleEffect::Emit(HandoffEvent::Started {
                        id: transfer,
                        result: Err(e),
                    }) => {
                        self.event(format!("{id}: transfer {transfer} did not start: {e}"));
                        if let Ok(m) = self.machines_mut(id) {
                            m.ring.on_transfer_failed(transfer);
                        }
                    }
                    RoleEffect::Emit(HandoffEvent::Failed { id: transfer, why }) => {
                        self.event(format!("{id}: transfer {transfer} failed: {why}"));
                        if let Ok(m) = self.machines_mut(id) {
                            m.ring.on_transfer_failed(transfer);
                        }
                    }
                    RoleEffect::Emit(HandoffEvent::Dropped { result: Err(e), .. }) => {
                        self.event(format!("{id}: dropping a range failed: {e}"))
                    }
                    RoleEffect::Emit(_) => {}
                }
            }
            self.carry_ring(id, ring_out);
            out = next;
        }
    }

    /// Sets how `node`'s disk misbehaves.
    fn set_disk(&mut self, node: NodeId, disk: DiskFaults) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        n.disk_latency = disk.latency;
        let faults = StorageFaults {
            write_fail_rate: disk.write_fail_rate,
            read_fail_rate: disk.read_fail_rate,
        };
        if let Err(e) = n.engine.set_faults(faults) {
            self.event(format!("disk faults of {node} refused: {e}"));
        }
    }

    /// Carries out node `id`'s storage jobs whose time has come (none
    /// while it is paused).
    fn disk_due(&mut self, id: NodeId) {
        let now = self.now;
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            if !matches!(node.life, Life::Running) {
                return;
            }
            let Some(m) = node.machines.as_mut() else {
                return;
            };
            if m.disk.front().is_none_or(|(at, _)| *at > now) {
                return;
            }
            let Some((_, job)) = m.disk.pop_front() else {
                return;
            };
            match job {
                DiskJob::Replicate {
                    from,
                    request,
                    fence,
                } => {
                    let reply = m.store.handle_fenced(Some(from), request, fence);
                    self.send(
                        id,
                        from,
                        Message::Replication(ReplicationMsg::Replicated { reply }),
                    );
                }
                DiskJob::Handoff(work) => {
                    let done = run_handoff(m, id, work);
                    let mut out = Vec::new();
                    m.handoff.finished(now, done, &mut out);
                    self.carry_handoff(id, out);
                }
                DiskJob::Coordinator(work) => {
                    let mut out = Vec::new();
                    if let Some(stored) = coord_exec::execute(&m.store, id, work) {
                        m.coordinator.on_stored(now, stored, &mut out);
                    }
                    self.carry_coordinator(id, out);
                }
                DiskJob::AntiEntropy(work) => {
                    let done =
                        ae_exec::run(&m.store, &BucketProps::default(), &self.anti_entropy, work);
                    let mut out = Vec::new();
                    ae_exec::finish(&mut m.anti_entropy, id, now, done, &mut out);
                    self.carry_anti_entropy(id, out);
                }
                DiskJob::Ring(work) => {
                    let result = ring_exec::execute(&m.store, work.clone());
                    let mut out = Vec::new();
                    m.ring.finished(now, &work, result, &mut out);
                    self.carry_ring(id, out);
                }
            }
            self.drain_local();
        }
    }

    fn member_out(&mut self, id: NodeId, out: MemberOutbox<MembershipMsg, MemberEvent>) {
        for env in out.messages {
            self.send(id, env.to, Message::Membership(env.msg));
        }
        if out.events.is_empty() {
            return;
        }
        let Some(m) = self.nodes.get_mut(&id).and_then(|n| n.machines.as_mut()) else {
            return;
        };
        let now = self.now;
        let mut ring_out = Vec::new();
        for event in &out.events {
            m.coordinator.on_member_event(event);
            m.anti_entropy.on_member_event(event);
            if matches!(event, MemberEvent::Up { .. }) {
                // As the actor does: a node back up is exchanged with at
                // once, not at the next anti-entropy tick.
                m.next_anti_entropy = m.next_anti_entropy.min(now);
            }
            m.ring.on_member_event(now, event, &mut ring_out);
        }
        self.carry_ring(id, ring_out);
    }

    /// Carries out node `id`'s coordinator effects, storage work inline.
    fn carry_coordinator(&mut self, id: NodeId, mut out: Vec<Effect<usize>>) {
        let now = self.now;
        while !out.is_empty() {
            let mut next = Vec::new();
            let mut answers = Vec::new();
            for effect in out {
                match effect {
                    Effect::Send { to, msg } => self.send(id, to, Message::Replication(msg)),
                    Effect::Emit(Answered(token, answer)) => answers.push((token, answer)),
                    Effect::Store(work) => {
                        let Some(node) = self.nodes.get_mut(&id) else {
                            return;
                        };
                        let latency = node.disk_latency;
                        let Some(m) = node.machines.as_mut() else {
                            return;
                        };
                        let job = DiskJob::Coordinator(work);
                        if let Some(DiskJob::Coordinator(work)) =
                            queue_on_disk(&mut self.disk_rng, latency, now, &mut m.disk, job)
                        {
                            if let Some(stored) = coord_exec::execute(&m.store, id, work) {
                                m.coordinator.on_stored(now, stored, &mut next);
                            }
                        }
                    }
                }
            }
            self.complete(id, answers);
            out = next;
        }
    }

    fn carry_anti_entropy(&mut self, id: NodeId, mut out: Vec<AntiEntropyEffect>) {
        let now = self.now;
        while !out.is_empty() {
            let mut next = Vec::new();
            for effect in out {
                let work = match effect {
                    RoleEffect::Send { to, msg } => {
                        self.send(id, to, Message::AntiEntropy(msg));
                        continue;
                    }
                    RoleEffect::Store(work) => work,
                    RoleEffect::Emit(event) => match event {},
                };
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                let latency = node.disk_latency;
                let Some(m) = node.machines.as_mut() else {
                    return;
                };
                let job = DiskJob::AntiEntropy(work);
                if let Some(DiskJob::AntiEntropy(work)) =
                    queue_on_disk(&mut self.disk_rng, latency, now, &mut m.disk, job)
                {
                    let done =
                        ae_exec::run(&m.store, &BucketProps::default(), &self.anti_entropy, work);
                    ae_exec::finish(&mut m.anti_entropy, id, now, done, &mut next);
                }
            }
            out = next;
        }
    }

    /// Runs node `id`'s due timers.
    fn timers(&mut self, id: NodeId) {
        let now = self.now;
        let (gossip_every, ae_every) = (
            self.membership.gossip_interval,
            tick_of(self.anti_entropy.period),
        );
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !matches!(node.life, Life::Running) {
            return;
        }
        let wall = {
            let elapsed = (now - self.start).as_millis() as u64;
            (START_WALL_MS + elapsed).saturating_add_signed(node.skew_ms)
        };
        let Some(m) = node.machines.as_mut() else {
            return;
        };
        if m.next_membership <= now {
            m.next_membership = now + gossip_every / 4;
            let mut out = MemberOutbox::new();
            m.membership.tick(now, &mut out);
            self.member_out(id, out);
        }
        let Some(m) = self.nodes.get_mut(&id).and_then(|n| n.machines.as_mut()) else {
            return;
        };
        if m.coordinator.next_wakeup() <= now {
            let mut out = Vec::new();
            m.coordinator.tick(now, &mut out);
            self.carry_coordinator(id, out);
        }
        let Some(m) = self.nodes.get_mut(&id).and_then(|n| n.machines.as_mut()) else {
            return;
        };
        if m.next_anti_entropy <= now {
            m.next_anti_entropy = now + ae_every;
            let mut out = Vec::new();
            m.anti_entropy.tick(now, wall, &mut out);
            self.carry_anti_entropy(id, out);
        }
        let Some(m) = self.nodes.get_mut(&id).and_then(|n| n.machines.as_mut()) else {
            return;
        };
        if m.next_ring <= now || m.ring.next_wakeup().is_some_and(|at| at <= now) {
            if m.next_ring <= now {
                m.next_ring = now + gossip_every;
            }
            let mut out = Vec::new();
            m.ring.tick(now, &mut out);
            self.carry_ring(id, out);
        }
        let Some(m) = self.nodes.get_mut(&id).and_then(|n| n.machines.as_mut()) else {
            return;
        };
        if m.next_handoff <= now {
            m.next_handoff = now + HANDOFF_TICK;
            let mut out = Vec::new();
            m.handoff.tick(now, &mut out);
            self.carry_handoff(id, out);
        }
    }

    /// Client `c` makes its next operation.
    fn invoke(&mut self, c: usize) {
        let now = self.now;
        self.clients[c].next_at = None;
        let running: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| matches!(n.life, Life::Running))
            .map(|n| n.id)
            .collect();
        let Some(&node) = running.choose(&mut self.rng) else {
            self.clients[c].next_at = Some(now + Duration::from_millis(100));
            return;
        };
        let (bucket, key) = if self.rng.random_bool(0.3) {
            (self.options.buckets[self.hot.0].clone(), self.hot.1.clone())
        } else {
            let bucket = self
                .options
                .buckets
                .choose(&mut self.rng)
                .cloned()
                .unwrap_or_else(|| default_buckets().remove(0));
            (
                bucket,
                format!("k{}", self.rng.random_range(0..self.options.keys)),
            )
        };
        let write = self.rng.random_bool(0.6);
        let client = &mut self.clients[c];
        let unique = format!("c{}-{}", client.id, client.written);
        let name = bucket.name.clone();
        let op = match (bucket.kind, write) {
            (BucketKind::Siblings | BucketKind::Lww, true) => SimOp::Put {
                bucket: name,
                key,
                value: unique,
            },
            (BucketKind::Siblings | BucketKind::Lww, false) => SimOp::Get { bucket: name, key },
            (BucketKind::Counter, true) => {
                // One write in eight resets the counter.
                match [-2, -1, 1, 2, 3, 5, 1, 0][self.rng.random_range(0..8)] {
                    0 => SimOp::CounterReset { bucket: name, key },
                    by => SimOp::CounterAdd {
                        bucket: name,
                        key,
                        by,
                    },
                }
            }
            (BucketKind::Counter, false) => SimOp::CounterGet { bucket: name, key },
            (BucketKind::Set, true) => SimOp::SetAdd {
                bucket: name,
                key,
                member: unique,
            },
            (BucketKind::Set, false) => SimOp::SetMembers { bucket: name, key },
        };
        let client = &mut self.clients[c];
        if op.is_write() {
            client.written += 1;
        }
        self.start_op(c, node, op);
    }

    /// Client `c` sends `op` to `node`; returns the operation's id.
    fn start_op(&mut self, c: usize, node: NodeId, op: SimOp) -> usize {
        let now = self.now;
        let client = &mut self.clients[c];
        let id = self.history.ops.len();
        client.waiting = Some((id, node));
        let client_id = client.id;
        self.history.ops.push(OpRecord {
            id,
            client: client_id,
            node,
            op: op.clone(),
            invoked: now - self.start,
            completed: None,
            outcome: Outcome::Unknown,
        });
        self.send_op(id, node, to_wire(&op));
        id
    }

    /// Sends operation `id`'s request `wire` to `node`'s coordinator (the
    /// answer completes the operation, or, for a reset's read, sends its
    /// delete).
    fn send_op(&mut self, id: usize, node: NodeId, wire: Op) {
        let now = self.now;
        let wall = self.wall_ms(self.nodes.get(&node).map_or(0, |n| n.skew_ms));
        let started = to_client_op(wire, &self.version)
            .and_then(|o| o.ok_or_else(|| Error::InvalidInput("not a data operation".into())));
        let (client_op, _kind) = match started {
            Ok(pair) => pair,
            Err(e) => {
                self.complete_op(id, Err(e));
                return;
            }
        };
        let running = self
            .nodes
            .get(&node)
            .is_some_and(|n| matches!(n.life, Life::Running));
        let Some(m) = self
            .nodes
            .get_mut(&node)
            .and_then(|n| n.machines.as_mut())
            .filter(|_| running)
        else {
            // Its port does not answer: the client learns at once, and
            // nothing was sent anywhere.
            self.complete_op(
                id,
                Err(Error::Unavailable {
                    needed: 1,
                    got: 0,
                    indefinite: false,
                }),
            );
            return;
        };
        if !m.confirmed {
            // Restarted on a stored ring no peer has confirmed yet.
            self.complete_op(id, Err(Error::RingUnconfirmed));
            return;
        }
        let mut out = Vec::new();
        m.coordinator.start(now, wall, id, client_op, &mut out);
        self.carry_coordinator(node, out);
        self.drain_local();
    }

    /// Coordinator answers of node `id` reach their clients.
    fn complete(&mut self, id: NodeId, done: Vec<(usize, Result<Answer>)>) {
        for (op, answer) in done {
            if op >= RAW_TOKENS {
                if let Some(slot) = self.raw.get_mut(&op) {
                    *slot = Some((id, answer));
                }
                continue;
            }
            let record = &self.history.ops[op];
            // A reset's first answer is its read's.
            let reset_read =
                matches!(record.op, SimOp::CounterReset { .. }) && !self.deleting.contains(&op);
            let kind = if reset_read {
                ReplyKind::Object
            } else {
                kind_of(&record.op)
            };
            let reply = answer.and_then(|answer| {
                let record = &self.history.ops[op];
                let (bucket, key) = record.op.target();
                let props = self
                    .nodes
                    .get(&id)
                    .and_then(|n| n.machines.as_ref())
                    .map(|m| m.coordinator.machine().bucket(bucket.as_bytes()).clone())
                    .unwrap_or_default();
                to_reply_for(
                    bucket.as_bytes(),
                    key.as_bytes(),
                    kind,
                    answer,
                    &props,
                    &Resolvers::default(),
                )
            });
            if reset_read {
                self.reset_read(op, id, reply);
                continue;
            }
            self.complete_op(op, reply);
        }
    }

    /// A reset's read answered through `node`: its delete is sent with the
    /// read's context, to the same node. A key the read found absent is
    /// acknowledged with nothing sent; a failed read fails the reset.
    fn reset_read(&mut self, op: usize, node: NodeId, reply: Result<Reply>) {
        let context = match reply {
            Ok(Reply::Object { context, .. }) => context,
            Ok(other) => {
                let e = Error::InvalidInput(format!("a reset's read answered {other:?}"));
                self.complete_op(op, Err(e));
                return;
            }
            Err(e) => {
                self.complete_op(op, Err(e));
                return;
            }
        };
        if context.is_empty() {
            let written = Reply::Written {
                context,
                receipt: Default::default(),
            };
            self.complete_op(op, Ok(written));
            return;
        }
        let waiting = self.clients.iter().any(|c| c.waiting == Some((op, node)));
        if !waiting {
            // The client gave up on it (its node crashed).
            return;
        }
        let (bucket, key) = self.history.ops[op].op.target();
        let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
        let delete = Op::Delete {
            bucket: b(bucket),
            key: b(key),
            context: Some(context),
            options: WriteOptions::default(),
        };
        self.deleting.insert(op);
        self.send_op(op, node, delete);
    }

    fn complete_op(&mut self, op: usize, reply: Result<Reply>) {
        self.deleting.remove(&op);
        let now = self.now;
        let record = &mut self.history.ops[op];
        if record.completed.is_some() || !matches!(record.outcome, Outcome::Unknown) {
            return;
        }
        let Some(client) = self.clients.iter().position(|c| c.id == record.client) else {
            return;
        };
        if self.clients[client].waiting.map(|(o, _)| o) != Some(op) {
            // The client gave up on it (its node crashed).
            return;
        }
        record.completed = Some(now - self.start);
        if let (true, Ok(reply)) = (self.clients[client].scripted, &reply) {
            self.replies.insert(op, reply.clone());
        }
        record.outcome = match reply {
            Ok(reply) => Outcome::Ok(observe(reply)),
            Err(e) => Outcome::Failed {
                definite: !record.op.is_write() || definite(&e),
                error: e.to_string(),
            },
        };
        let think = Duration::from_millis(self.rng.random_range(20..400));
        self.clients[client].waiting = None;
        if !self.clients[client].scripted {
            self.clients[client].next_at = Some(now + think);
        }
    }

    /// A quiet cluster for scripts and experiments: `nodes` nodes, no
    /// workload and no scheduled fault; the caller drives it with
    /// [`ClusterSim::request`], [`ClusterSim::run_for`] and the fault
    /// methods.
    pub fn quiet(nodes: usize, seed: u64) -> Result<Self> {
        Self::quiet_with(ClusterOptions::new(nodes, seed))
    }

    /// [`ClusterSim::quiet`] with the rest of `options` (virtual nodes,
    /// bucket defaults, ...): its schedule, clients and buckets are
    /// replaced as `quiet` has them.
    pub fn quiet_with(mut options: ClusterOptions) -> Result<Self> {
        let nodes = options.nodes;
        options.faults = false;
        options.joins = 0;
        options.leaves = 0;
        options.clients = 1;
        options.buckets = default_buckets()
            .into_iter()
            .map(|mut b| {
                b.n = b.n.min(nodes);
                b.r = b.r.min(b.n);
                b.w = b.w.min(b.n);
                b
            })
            .collect();
        let mut sim = ClusterSim::new(options)?;
        for c in &mut sim.clients {
            c.next_at = None;
            c.scripted = true;
        }
        Ok(sim)
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    /// Sends `op` to `node` as a scripted client and runs until it is
    /// answered, or for at most 10 s of virtual time; returns its outcome.
    /// An unknown bucket, or a node that is crashed or paused (its port
    /// does not answer), is a definite failure at once.
    pub fn request(&mut self, node: NodeId, op: SimOp) -> Outcome {
        self.request_reply(node, op).0
    }

    /// As [`ClusterSim::request`] (the operation is recorded in the
    /// history), and also returns the whole reply of a successful one:
    /// its context, receipt and siblings, which [`Outcome`] leaves out.
    pub fn request_reply(&mut self, node: NodeId, op: SimOp) -> (Outcome, Option<Reply>) {
        let c = match self
            .clients
            .iter()
            .position(|c| c.scripted && c.waiting.is_none())
        {
            Some(c) => c,
            None => {
                let id = self.clients.iter().map(|c| c.id).max().unwrap_or(0) + 1;
                self.clients.push(Client {
                    id,
                    next_at: None,
                    waiting: None,
                    written: 0,
                    scripted: true,
                });
                self.clients.len() - 1
            }
        };
        let (bucket, _) = op.target();
        if !self.history.buckets.contains_key(bucket) {
            let id = self.start_op_unknown(c, node, op);
            return (self.history.ops[id].outcome.clone(), None);
        }
        let id = self.start_op(c, node, op);
        let deadline = self.now + Duration::from_secs(10);
        while self.history.ops[id].completed.is_none()
            && matches!(self.history.ops[id].outcome, Outcome::Unknown)
            && self.clients[c].waiting.is_some()
            && self.now < deadline
        {
            let Some(next) = self.next_due() else { break };
            if next > deadline {
                self.now = deadline;
                break;
            }
            self.now = self.now.max(next);
            self.step_instant();
        }
        if self.clients[c].waiting.map(|(o, _)| o) == Some(id) {
            // Never answered: the client gives up.
            self.clients[c].waiting = None;
        }
        (
            self.history.ops[id].outcome.clone(),
            self.replies.remove(&id),
        )
    }

    /// Executes a client-protocol `op` through node `via` (the lowest
    /// running node when `None`) and runs until it is answered, or for at
    /// most 10 s of virtual time. Data ops go through the coordinator as
    /// [`ClusterSim::request`]'s do, but are not recorded in the history
    /// (they need not fit a checker's model: contexts, deletes, buckets of
    /// any policy); `GetBucket`, `SetBucket` (pushed to every other node at
    /// once, then gossiped), `LocalGet` and `PreferenceList` are answered
    /// as a node answers them, and so are `Status` and `Ring`
    /// ([`ClusterSim::status_view`], [`ClusterSim::ring_view`]). Other ops
    /// fail with `InvalidInput`.
    pub fn execute(&mut self, via: Option<NodeId>, op: Op) -> Result<Reply> {
        let node = match via {
            Some(n) => n,
            None => *self
                .nodes
                .values()
                .find(|n| matches!(n.life, Life::Running))
                .map(|n| &n.id)
                .ok_or(Error::Unavailable {
                    needed: 1,
                    got: 0,
                    indefinite: false,
                })?,
        };
        if !self.is_running(node) {
            return Err(Error::Unavailable {
                needed: 1,
                got: 0,
                indefinite: false,
            });
        }
        let wall = self.wall_ms(self.nodes.get(&node).map_or(0, |n| n.skew_ms));
        let now = self.now;
        match op {
            Op::Status => self.status_view(node).map(Reply::Status),
            Op::Ring => Ok(Reply::Ring(crate::roles::client_ops::ring_view(
                self.machines(node)?.ring.state(),
            ))),
            Op::GetBucket { bucket } => {
                let m = self.machines(node)?;
                Ok(Reply::Bucket {
                    props: crate::protocol::BucketInfo::from(
                        m.coordinator.machine().bucket(&bucket),
                    ),
                })
            }
            Op::SetBucket { bucket, props } => {
                let props = BucketProps::try_from(&props)?;
                let m = self.machines_mut(node)?;
                // As the actor does: checked and saved before anything
                // changes, so a refused or unsaved change is in no table.
                let (entry, entries) =
                    m.coordinator
                        .machine_mut()
                        .prepare_bucket(bucket.into_vec(), props, wall)?;
                coord_exec::save_buckets(&m.store, &entries)?;
                m.coordinator.machine_mut().commit_bucket(entry.clone());
                let mut out = Vec::new();
                m.coordinator.push_buckets(&mut out);
                self.carry_coordinator(node, out);
                Ok(Reply::Bucket {
                    props: crate::protocol::BucketInfo::from(&entry.props),
                })
            }
            Op::LocalGet { bucket, key } => {
                let m = self.machines(node)?;
                let object = m.store.read(&bucket, &key)?;
                let props = m.coordinator.machine().bucket(&bucket).clone();
                to_reply_for(
                    &bucket,
                    &key,
                    ReplyKind::Object,
                    Answer::Got(GetReply {
                        object,
                        receipt: Receipt::default(),
                    }),
                    &props,
                    &Resolvers::default(),
                )
            }
            Op::PreferenceList { bucket, key } => {
                let m = self.machines(node)?;
                Ok(Reply::Preference {
                    targets: m
                        .coordinator
                        .machine()
                        .targets(&bucket, &key, true)
                        .into_iter()
                        .map(|t| crate::protocol::PreferenceEntry {
                            node: t.node,
                            fallback_for: t.hint_for,
                        })
                        .collect(),
                })
            }
            data => {
                let kind_name = data.name();
                let Some((client_op, kind)) = to_client_op(data, &self.version)? else {
                    return Err(Error::InvalidInput(format!(
                        "{kind_name} is not available in a simulation"
                    )));
                };
                let (bucket, key) = match &client_op {
                    crate::replication::coordinator::ClientOp::Get { bucket, key, .. }
                    | crate::replication::coordinator::ClientOp::Put { bucket, key, .. }
                    | crate::replication::coordinator::ClientOp::Update { bucket, key, .. } => {
                        (bucket.clone(), key.clone())
                    }
                };
                if !self.machines(node)?.confirmed {
                    return Err(Error::RingUnconfirmed);
                }
                let token = self.next_raw;
                self.next_raw += 1;
                self.raw.insert(token, None);
                let m = self.machines_mut(node)?;
                let mut out = Vec::new();
                m.coordinator.start(now, wall, token, client_op, &mut out);
                self.carry_coordinator(node, out);
                self.drain_local();
                let deadline = self.now + Duration::from_secs(10);
                while self.raw.get(&token).is_some_and(Option::is_none) && self.now < deadline {
                    let Some(next) = self.next_due() else { break };
                    if next > deadline {
                        self.now = deadline;
                        break;
                    }
                    self.now = self.now.max(next);
                    self.step_instant();
                }
                match self.raw.remove(&token).flatten() {
                    Some((at, answer)) => {
                        let props = self
                            .machines(at)
                            .map(|m| m.coordinator.machine().bucket(&bucket).clone())
                            .unwrap_or_default();
                        to_reply_for(&bucket, &key, kind, answer?, &props, &Resolvers::default())
                    }
                    // The coordinating node crashed, or was paused, first.
                    None => Err(Error::Unavailable {
                        needed: 1,
                        got: 0,
                        indefinite: true,
                    }),
                }
            }
        }
    }

    fn machines(&self, node: NodeId) -> Result<&Machines> {
        self.nodes
            .get(&node)
            .and_then(|n| n.machines.as_ref())
            .ok_or_else(|| Error::InvalidInput(format!("node {node} is not running")))
    }

    fn machines_mut(&mut self, node: NodeId) -> Result<&mut Machines> {
        self.nodes
            .get_mut(&node)
            .and_then(|n| n.machines.as_mut())
            .ok_or_else(|| Error::InvalidInput(format!("node {node} is not running")))
    }

    /// Records `op` on an unknown bucket as failed at once.
    fn start_op_unknown(&mut self, c: usize, node: NodeId, op: SimOp) -> usize {
        let id = self.history.ops.len();
        let (bucket, _) = op.target();
        let error = format!("no bucket {bucket:?} in this simulation");
        self.history.ops.push(OpRecord {
            id,
            client: self.clients[c].id,
            node,
            op,
            invoked: self.elapsed(),
            completed: Some(self.elapsed()),
            outcome: Outcome::Failed {
                definite: true,
                error,
            },
        });
        id
    }

    /// Cuts every link between the two sides.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        self.apply(Fault::Partition(a.to_vec(), b.to_vec()));
    }

    /// Cuts the links from `from` to `to` only.
    pub fn partition_one_way(&mut self, from: &[NodeId], to: &[NodeId]) {
        self.apply(Fault::OneWay(from.to_vec(), to.to_vec()));
    }

    /// Restores every link (faults on frames stay; see
    /// [`ClusterSim::set_network`]).
    pub fn heal(&mut self) {
        self.apply(Fault::Heal);
    }

    /// Crashes `node`: its machines' memory is lost, its store kept.
    pub fn crash(&mut self, node: NodeId) {
        self.apply(Fault::Crash(node));
    }

    /// Cuts `node`'s power: it crashes, and its store loses every write
    /// not yet synced (see [`ClusterOptions::sync_interval`]).
    pub fn power_loss(&mut self, node: NodeId) {
        self.apply(Fault::PowerLoss(node));
    }

    /// Makes `node`'s disk slow or failing (the default: healthy).
    pub fn disk(&mut self, node: NodeId, faults: DiskFaults) {
        self.apply(Fault::Disk(node, faults));
    }

    /// Syncs every node's storage now, as the periodic sync does.
    pub fn sync_storage(&mut self) {
        for node in self.nodes.values() {
            node.engine.sync();
        }
    }

    /// Restarts a crashed `node` from its store.
    pub fn restart(&mut self, node: NodeId) {
        self.apply(Fault::Restart(node));
    }

    /// Pauses `node` (SIGSTOP).
    pub fn pause(&mut self, node: NodeId) {
        self.apply(Fault::Pause(node));
    }

    /// Resumes a paused `node`.
    pub fn resume(&mut self, node: NodeId) {
        self.apply(Fault::Resume(node));
    }

    /// Sets the faults every frame meets; `None` for a healthy network.
    pub fn set_network(&mut self, faults: Option<Faults>) -> Result<()> {
        let faults = faults.unwrap_or(CALM);
        faults.validate()?;
        self.apply(Fault::Network(faults));
        Ok(())
    }

    /// Sets `node`'s clock skew in milliseconds.
    pub fn skew(&mut self, node: NodeId, ms: i64) {
        self.apply(Fault::Skew(node, ms));
    }

    /// The node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Whether `node` is running (not crashed, not paused).
    pub fn is_running(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| matches!(n.life, Life::Running))
    }

    /// Whether `node` is crashed (not merely paused): its machines are
    /// gone and its store cannot be read until it restarts.
    pub fn is_crashed(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| matches!(n.life, Life::Crashed))
    }

    /// The `n` primaries of `bucket`/`key` on the ring in force (as the
    /// lowest running node holds it), in preference order.
    pub fn primaries(&self, bucket: &str, key: &str) -> Vec<NodeId> {
        let n = self.history.buckets.get(bucket).map_or(3, |b| b.n);
        self.ring_state()
            .ring
            .preference_list(key_token(bucket.as_bytes(), key.as_bytes()), n)
    }

    /// What `node`'s store holds for `bucket`/`key`, as a read would
    /// resolve it (`None`: nothing stored, or the node is crashed).
    pub fn local(&self, node: NodeId, bucket: &str, key: &str) -> Result<Option<Observed>> {
        let Some(m) = self.nodes.get(&node).and_then(|n| n.machines.as_ref()) else {
            return Ok(None);
        };
        let Some(b) = self.history.buckets.get(bucket) else {
            return Err(Error::InvalidInput(format!(
                "no bucket {bucket:?} in this simulation"
            )));
        };
        let Some(object) = m.store.read(bucket.as_bytes(), key.as_bytes())? else {
            return Ok(None);
        };
        observe_object(b.kind, object, m.coordinator.machine(), bucket, key).map(Some)
    }

    /// The object `node`'s store holds for `bucket`/`key`, unresolved:
    /// every sibling, tombstones included (`None`: nothing stored, or the
    /// node is crashed). [`ClusterSim::local`] resolves it as a read would,
    /// which hides a tombstone sibling beside values.
    pub fn local_object(
        &self,
        node: NodeId,
        bucket: &str,
        key: &str,
    ) -> Result<Option<crate::version::Object>> {
        match self.nodes.get(&node).and_then(|n| n.machines.as_ref()) {
            Some(m) => m.store.read(bucket.as_bytes(), key.as_bytes()),
            None => Ok(None),
        }
    }

    /// Hints `node` holds now (0 when it is crashed).
    pub fn hints(&self, node: NodeId) -> usize {
        self.nodes
            .get(&node)
            .and_then(|n| n.machines.as_ref())
            .map_or(0, |m| m.store.hint_count())
    }

    /// Writes `value` to `bucket`/`key` in `node`'s store alone, as a
    /// write coordinated there at `W = ONE` with every other replica cut
    /// off would leave it (a new sibling under `node`'s dot, beside what
    /// the store holds), with no request, replication or hint: a way to
    /// make replicas differ in bulk (anti-entropy scenarios). Fails when
    /// `node` is not running.
    pub fn write_local(
        &mut self,
        node: NodeId,
        bucket: &str,
        key: &str,
        value: &[u8],
    ) -> Result<()> {
        let wall = self.wall_ms(self.nodes.get(&node).map_or(0, |n| n.skew_ms));
        let m = self.machines(node)?;
        let (b, k) = (bucket.as_bytes(), key.as_bytes());
        let mut object = m.store.read(b, k)?.unwrap_or_default();
        object.put(
            node,
            &crate::version::CausalContext::empty(),
            crate::version::Payload::Value(value.to_vec()),
            crate::version::Timestamp::from_ms(wall),
            usize::MAX,
        )?;
        m.store
            .merge_for_repair(b, k, &object, &ConflictPolicy::Siblings)?;
        Ok(())
    }

    /// Copies `node`'s stored object of `bucket`/`key` into `to`'s store
    /// (merged), as replication on one side of a partition would.
    pub fn copy_local(&mut self, node: NodeId, to: NodeId, bucket: &str, key: &str) -> Result<()> {
        let (b, k) = (bucket.as_bytes(), key.as_bytes());
        let Some(object) = self.machines(node)?.store.read(b, k)? else {
            return Ok(());
        };
        self.machines(to)?
            .store
            .merge_for_repair(b, k, &object, &ConflictPolicy::Siblings)?;
        Ok(())
    }

    /// What `at` believes about `of` (`None` when `at` is crashed).
    pub fn status(&self, at: NodeId, of: NodeId) -> Option<crate::membership::MemberStatus> {
        self.nodes
            .get(&at)
            .and_then(|n| n.machines.as_ref())
            .and_then(|m| m.membership.status(of))
    }

    /// Pauses `node` now and resumes it after `d` of virtual time, even
    /// in the middle of a request. A resume scheduled earlier for the node
    /// is replaced, so pausing a paused node again moves its resume.
    pub fn pause_for(&mut self, node: NodeId, d: Duration) {
        self.schedule
            .retain(|(_, f)| !matches!(f, Fault::Resume(n) if *n == node));
        self.apply(Fault::Pause(node));
        let at = self.now + d;
        let i = self.schedule.partition_point(|(t, _)| *t <= at);
        self.schedule.insert(i, (at, Fault::Resume(node)));
    }

    /// The faults every frame meets now (see [`ClusterSim::set_network`]).
    pub fn network(&self) -> Faults {
        self.fabric.faults()
    }

    /// What the network's faults have done since the start. Every frame
    /// takes some time on a healthy network too, so `delayed` counts
    /// nearly every frame.
    pub fn fault_counters(&self) -> FaultCounters {
        self.fabric.counters()
    }

    /// Node `at`'s answer to the client protocol's `Status`: the members
    /// it knows with their states and phi now, the objects in its store,
    /// its hints and requests in flight. The simulator moves no ranges,
    /// so it lists no transfers. Fails when `at` is crashed.
    pub fn status_view(&self, at: NodeId) -> Result<StatusView> {
        let m = self.machines(at)?;
        let phi = m.membership.phis(self.now);
        Ok(StatusView {
            node: at,
            cluster: "sim".into(),
            members: m
                .membership
                .table()
                .entries()
                .map(|e| MemberView {
                    node: e.node,
                    addr: e.addr.clone(),
                    state: format!("{:?}", e.status),
                    phi: phi.get(&e.node).copied().unwrap_or(0.0),
                    incarnation: e.incarnation,
                })
                .collect(),
            keys: m.store.count_objects(u64::MAX)?,
            hints: m.store.hint_count() as u64,
            in_flight: m.coordinator.machine().in_flight() as u64,
            engine: "memory".into(),
            transfers: m
                .handoff
                .progress()
                .iter()
                .map(crate::protocol::TransferView::from)
                .collect(),
            anti_entropy: m.anti_entropy.stats().clone(),
            served: m
                .handoff
                .served()
                .iter()
                .map(crate::protocol::ServedView::from)
                .collect(),
            corruptions: 0,
        })
    }

    /// The ring as the lowest running node holds it, as the client
    /// protocol's `Ring` shows it.
    pub fn ring_view(&self) -> RingView {
        crate::roles::client_ops::ring_view(&self.ring_state())
    }

    /// The ring state (the ring in force and the change in progress) of
    /// the lowest running node: the formed ring when none runs.
    pub fn ring_state(&self) -> Arc<RingState> {
        self.nodes
            .values()
            .filter(|n| matches!(n.life, Life::Running))
            .find_map(|n| n.machines.as_ref())
            .map_or_else(|| Arc::clone(&self.ring), |m| Arc::clone(m.ring.state()))
    }

    /// The ring state `node` holds (`None` when it is not running).
    pub fn ring_state_at(&self, node: NodeId) -> Option<Arc<RingState>> {
        self.nodes
            .get(&node)
            .and_then(|n| n.machines.as_ref())
            .map(|m| Arc::clone(m.ring.state()))
    }

    /// Starts a new node (the next id) that joins the ring through the
    /// running nodes; returns its id. Its ranges move to it by transfer
    /// while the cluster serves.
    pub fn join(&mut self) -> NodeId {
        let id = NodeId(
            self.nodes
                .keys()
                .map(|n| n.0)
                .max()
                .unwrap_or(0)
                .max((self.options.nodes + self.options.joins) as u64)
                + 1,
        );
        self.apply(Fault::Join(id));
        id
    }

    /// Makes `node` leave: its ranges move to the nodes taking them, it
    /// gossips LEFT, then it stops for good.
    pub fn leave(&mut self, node: NodeId) {
        self.apply(Fault::Leave(node));
    }

    /// Whether `node` has left the cluster and stopped.
    pub fn is_gone(&self, node: NodeId) -> bool {
        self.nodes
            .get(&node)
            .is_some_and(|n| matches!(n.life, Life::Gone))
    }

    /// The history so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Heals everything, lets the cluster settle for `settle`, reads the
    /// final state and returns the whole history, for the checkers.
    pub fn finish_run(mut self, settle: Duration) -> Result<History> {
        self.heal_all();
        self.run_for(settle);
        self.finish()
    }

    /// Reads every touched key from each of its primaries and returns the
    /// history.
    fn finish(mut self) -> Result<History> {
        self.history.healed = true;
        let final_ring = self.ring_state();
        let running: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| matches!(n.life, Life::Running))
            .map(|n| n.id)
            .collect();
        for node in running {
            if let Some(state) = self.ring_state_at(node) {
                self.history
                    .rings
                    .insert(node, (state.digest(), state.pending.is_some()));
                if let Some(p) = &state.pending {
                    let moves = p.moves(&state.ring).len();
                    self.event(format!(
                        "{node} at the end: epoch {}, change {:?} in progress, {} of {moves} \
                         moves done",
                        state.ring.epoch(),
                        p.change,
                        p.done.len()
                    ));
                    let transfers = self
                        .machines(node)
                        .map(|m| m.handoff.progress())
                        .unwrap_or_default();
                    for t in transfers {
                        self.event(format!("{node} at the end: transfer {t:?}"));
                    }
                }
            }
        }
        let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
        for op in &self.history.ops {
            let (b, k) = op.op.target();
            touched.insert((b.to_string(), k.to_string()));
        }
        for (bucket, key) in touched {
            let Some(b) = self.history.buckets.get(&bucket).cloned() else {
                continue;
            };
            let token = key_token(bucket.as_bytes(), key.as_bytes());
            let owners = final_ring.ring.preference_list(token, b.n);
            let mut seen = Vec::new();
            for owner in owners {
                let Some(m) = self.nodes.get(&owner).and_then(|n| n.machines.as_ref()) else {
                    continue;
                };
                let object = m.store.read(bucket.as_bytes(), key.as_bytes())?;
                let seen_there = match object {
                    Some(object) => {
                        observe_object(b.kind, object, m.coordinator.machine(), &bucket, &key)?
                    }
                    None => observe_object(
                        b.kind,
                        Default::default(),
                        m.coordinator.machine(),
                        &bucket,
                        &key,
                    )?,
                };
                seen.push((owner, seen_there));
            }
            self.history.final_state.insert((bucket, key), seen);
        }
        if self.undecodable > 0 {
            self.event(format!("{} frames did not decode", self.undecodable));
        }
        Ok(self.history)
    }
}

/// `object` as a read of `bucket`/`key` under the bucket's policy returns
/// it.
fn observe_object(
    kind: BucketKind,
    object: crate::version::Object,
    coordinator: &Coordinator<usize>,
    bucket: &str,
    key: &str,
) -> Result<Observed> {
    let reply_kind = match kind {
        BucketKind::Siblings | BucketKind::Lww => ReplyKind::Object,
        BucketKind::Counter => ReplyKind::Counter,
        BucketKind::Set => ReplyKind::Set,
    };
    let object = if object.is_empty() {
        None
    } else {
        Some(object)
    };
    let answer = Answer::Got(GetReply {
        object,
        receipt: Receipt::default(),
    });
    let props = coordinator.bucket(bucket.as_bytes()).clone();
    let reply = to_reply_for(
        bucket.as_bytes(),
        key.as_bytes(),
        reply_kind,
        answer,
        &props,
        &Resolvers::default(),
    )?;
    Ok(observe(reply))
}

/// Queues `job` on a node's slow disk, due after a wait drawn up to
/// `latency`. Jobs finish in the order of their due times, not of their
/// queueing: a node runs its storage work on a pool of blocking threads,
/// so two jobs of one role may finish in either order, and the
/// simulator tries both. Gives the job back, to be done at once, when the
/// disk is healthy and idle.
fn queue_on_disk(
    rng: &mut ChaCha8Rng,
    latency: Duration,
    now: Instant,
    disk: &mut VecDeque<(Instant, DiskJob)>,
    job: DiskJob,
) -> Option<DiskJob> {
    if latency.is_zero() && disk.is_empty() {
        return Some(job);
    }
    let wait = Duration::from_micros(rng.random_range(0..=latency.as_micros() as u64));
    let due = now + wait;
    // After every job due at the same time or earlier, so that jobs due
    // together keep their order.
    let at = disk.partition_point(|(at, _)| *at <= due);
    disk.insert(at, (due, job));
    None
}

/// Carries out a handoff role's storage work on a node's store, under
/// the bucket policies of its coordinator's table.
fn run_handoff(m: &Machines, id: NodeId, work: HandoffWork) -> handoff_exec::HandoffDone {
    let buckets = m.coordinator.machine();
    handoff_exec::execute(&m.store, id, work, &|bucket: &[u8]| {
        buckets.bucket(bucket).policy.clone()
    })
}

/// The anti-entropy actor's tick interval for `period`.
fn tick_of(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn props_of(b: &SimBucket) -> BucketProps {
    BucketProps {
        n: b.n,
        r: Consistency::Count(b.r as u32),
        w: Consistency::Count(b.w as u32),
        policy: match b.kind {
            BucketKind::Siblings => ConflictPolicy::Siblings,
            BucketKind::Lww => ConflictPolicy::Lww,
            BucketKind::Counter => ConflictPolicy::Crdt(CrdtKind::PnCounter),
            BucketKind::Set => ConflictPolicy::Crdt(CrdtKind::OrSet),
        },
        sloppy_quorum: b.sloppy,
        timeout: Duration::from_secs(1),
    }
}

fn kind_of(op: &SimOp) -> ReplyKind {
    match op {
        SimOp::Put { .. }
        | SimOp::CounterAdd { .. }
        | SimOp::CounterReset { .. }
        | SimOp::SetAdd { .. } => ReplyKind::Written,
        SimOp::Get { .. } => ReplyKind::Object,
        SimOp::CounterGet { .. } => ReplyKind::Counter,
        SimOp::SetMembers { .. } => ReplyKind::Set,
    }
}

/// The client protocol's operation for `op`.
fn to_wire(op: &SimOp) -> Op {
    let b = |s: &str| ByteBuf::from(s.as_bytes().to_vec());
    match op {
        SimOp::Put { bucket, key, value } => Op::Put {
            bucket: b(bucket),
            key: b(key),
            value: b(value),
            context: None,
            options: WriteOptions::default(),
        },
        SimOp::Get { bucket, key } => Op::Get {
            bucket: b(bucket),
            key: b(key),
            options: ReadOptions::default(),
        },
        SimOp::CounterAdd { bucket, key, by } => Op::CounterAdd {
            bucket: b(bucket),
            key: b(key),
            by: *by,
            options: WriteOptions::default(),
        },
        SimOp::CounterGet { bucket, key } => Op::CounterGet {
            bucket: b(bucket),
            key: b(key),
            options: ReadOptions::default(),
        },
        // Its read; the delete follows with the read's context
        // (`ClusterSim::reset_read`).
        SimOp::CounterReset { bucket, key } => Op::Get {
            bucket: b(bucket),
            key: b(key),
            options: ReadOptions::default(),
        },
        SimOp::SetAdd {
            bucket,
            key,
            member,
        } => Op::SetAdd {
            bucket: b(bucket),
            key: b(key),
            members: vec![b(member)],
            options: WriteOptions::default(),
            count_only: false,
        },
        SimOp::SetMembers { bucket, key } => Op::SetMembers {
            bucket: b(bucket),
            key: b(key),
            options: ReadOptions::default(),
        },
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a client sees in `reply`.
fn observe(reply: Reply) -> Observed {
    match reply {
        Reply::Written { .. } => Observed::Written,
        Reply::Object {
            value, siblings, ..
        } => {
            let mut values: Vec<String> = match value {
                Some(v) => vec![text(&v)],
                None => siblings
                    .iter()
                    .filter_map(|s| s.value.as_ref().map(|v| text(v)))
                    .collect(),
            };
            values.sort();
            Observed::Values(values)
        }
        Reply::Counter { value, .. } => Observed::Counter(value),
        Reply::Set { members, .. } => {
            let mut members: Vec<String> = members.iter().map(|m| text(m)).collect();
            members.sort();
            Observed::Members(members)
        }
        other => Observed::Values(vec![format!("unexpected reply {other:?}")]),
    }
}

/// Whether a failed write can have been stored nowhere.
fn definite(e: &Error) -> bool {
    match e {
        Error::QuorumTimeout { indefinite, .. } | Error::Unavailable { indefinite, .. } => {
            !indefinite
        }
        Error::InvalidInput(_) | Error::TooManySiblings { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow disk finishes jobs by their due times, which need not be
    /// the order they were queued in (as on a node's blocking pool); a
    /// healthy idle disk hands the job back to be done at once.
    #[test]
    fn a_slow_disk_finishes_jobs_in_an_order_of_its_own() {
        let job = |i: usize| {
            DiskJob::Coordinator(coord_exec::StoreWork::ReadHints {
                skip: BTreeSet::new(),
                batch: i,
            })
        };
        let index = |job: &DiskJob| match job {
            DiskJob::Coordinator(coord_exec::StoreWork::ReadHints { batch, .. }) => *batch,
            _ => usize::MAX,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut disk = VecDeque::new();
        let now = Instant::now();
        assert!(queue_on_disk(&mut rng, Duration::ZERO, now, &mut disk, job(0)).is_some());
        for i in 0..20 {
            let later = now + Duration::from_millis(i as u64);
            assert!(queue_on_disk(
                &mut rng,
                Duration::from_millis(100),
                later,
                &mut disk,
                job(i)
            )
            .is_none());
        }
        // A healthy disk with jobs queued queues the next one too.
        assert!(queue_on_disk(&mut rng, Duration::ZERO, now, &mut disk, job(20)).is_none());
        let dues: Vec<Instant> = disk.iter().map(|(at, _)| *at).collect();
        assert!(
            dues.windows(2).all(|w| w[0] <= w[1]),
            "the queue is kept by due time"
        );
        let order: Vec<usize> = disk.iter().map(|(_, j)| index(j)).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..=20).collect::<Vec<_>>(),
            "every job is kept once"
        );
        assert_ne!(order, sorted, "some job overtakes one queued before it");
        assert_eq!(
            order[0], 20,
            "a job due now runs before those still waiting"
        );
    }

    fn summary(h: &History) -> String {
        let ok = h
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .count();
        let failed = h
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
            .count();
        format!("{} ops, {ok} ok, {failed} failed", h.ops.len())
    }

    #[test]
    fn a_hint_reaches_its_primary_after_it_restarts() {
        let mut sim = ClusterSim::quiet(5, 3).unwrap();
        sim.run_for(Duration::from_secs(5));
        let primaries = sim.primaries("sloppy", "k");
        let down = primaries[2];
        sim.crash(down);
        sim.run_for(Duration::from_secs(20));
        assert_eq!(
            sim.status(primaries[0], down),
            Some(crate::membership::MemberStatus::Down)
        );
        let put = SimOp::Put {
            bucket: "sloppy".into(),
            key: "k".into(),
            value: "v1".into(),
        };
        assert_eq!(
            sim.request(primaries[0], put),
            Outcome::Ok(Observed::Written)
        );
        // The reply came with two acknowledgements; the fallback's may
        // come a frame's delay later.
        sim.run_for(Duration::from_millis(100));
        let held: usize = sim.node_ids().iter().map(|&n| sim.hints(n)).sum();
        assert_eq!(held, 1, "one fallback holds the write for {down}");
        sim.restart(down);
        sim.run_for(Duration::from_secs(20));
        assert_eq!(
            sim.local(down, "sloppy", "k").unwrap(),
            Some(Observed::Values(vec!["v1".into()]))
        );
        let held: usize = sim.node_ids().iter().map(|&n| sim.hints(n)).sum();
        assert_eq!(held, 0, "the hint was delivered and removed");
        let h = sim.finish_run(Duration::from_secs(10)).unwrap();
        assert!(super::super::check::check_all(&h).is_empty());
    }

    /// The mechanism of issue [9]'s item A1, by hand: the two nodes that
    /// are not primaries of a key are cut off from its three primaries
    /// twice; each time one of them coordinates a write of the key as a
    /// fallback, and its hint is handed off after the heal. Minting under
    /// the bare node id, the second write reuses the first's dot and every
    /// primary drops it; minting under a fresh actor epoch, both stay.
    #[test]
    fn a_fallback_coordinating_in_two_partitions_keeps_both_writes() {
        for broken in [false, true] {
            let mut options = ClusterOptions::new(5, 9);
            options.regressions.bare_node_actor = broken;
            let mut sim = ClusterSim::quiet_with(options).unwrap();
            sim.run_for(Duration::from_secs(5));
            let primaries = sim.primaries("sloppy", "k");
            let others: Vec<NodeId> = sim
                .node_ids()
                .into_iter()
                .filter(|n| !primaries.contains(n))
                .collect();
            for value in ["first", "second"] {
                sim.partition(&others, &primaries);
                sim.run_for(Duration::from_secs(20));
                let put = SimOp::Put {
                    bucket: "sloppy".into(),
                    key: "k".into(),
                    value: value.into(),
                };
                assert_eq!(sim.request(others[0], put), Outcome::Ok(Observed::Written));
                assert!(
                    sim.hints(others[0]) > 0,
                    "{value}: the fallback holds hints"
                );
                sim.heal();
                sim.run_for(Duration::from_secs(20));
                assert_eq!(
                    sim.hints(others[0]) + sim.hints(others[1]),
                    0,
                    "{value}: handed off"
                );
            }
            let h = sim.finish_run(Duration::from_secs(20)).unwrap();
            let violations = super::super::check::check_all(&h);
            assert_eq!(
                violations.is_empty(),
                !broken,
                "broken: {broken}: {violations:?}"
            );
            if broken {
                assert!(violations.iter().any(|v| v.checker == "set_full"));
            }
        }
    }

    /// What a heal-convergence run saw: virtual times from the heal.
    #[derive(Debug)]
    struct Healed {
        /// Until every node saw every other ALIVE again.
        seen: Duration,
        /// Until every replica of every key held the same object (`None`:
        /// not within the bound).
        equal: Option<Duration>,
        /// The anti-entropy counters of nodes 1 to 3 at the end.
        stats: Vec<crate::replication::anti_entropy::AntiEntropyStats>,
    }

    /// Three nodes (`vnodes` each), `n = 3`: `{1, 2}` cut from `{3}` until
    /// each side sees the other DOWN; then `keys` keys differ: half written
    /// on side `{1, 2}` (on both of its nodes, as replication there would),
    /// half on `{3}`, and a tenth of them on both sides (two siblings to
    /// make). Healed, with no read; the replicas are compared every 250 ms
    /// of virtual time for at most `bound`.
    fn heal_convergence(
        ae: AntiEntropyConfig,
        vnodes: usize,
        keys: usize,
        bound: Duration,
    ) -> Healed {
        use crate::membership::MemberStatus;
        let mut options = ClusterOptions::new(3, 5);
        options.vnodes = vnodes;
        options.anti_entropy = Some(ae);
        let mut sim = ClusterSim::quiet_with(options).unwrap();
        sim.run_for(Duration::from_secs(3));
        let (a, b) = ([NodeId(1), NodeId(2)], [NodeId(3)]);
        sim.partition(&a, &b);
        let sees = |sim: &ClusterSim, status: MemberStatus| {
            (1..=3u64).all(|at| {
                (1..=3u64).all(|of| {
                    let same_side = (at == 3) == (of == 3);
                    let want = if same_side {
                        MemberStatus::Alive
                    } else {
                        status
                    };
                    at == of || sim.status(NodeId(at), NodeId(of)) == Some(want)
                })
            })
        };
        let mut waited = Duration::ZERO;
        while !sees(&sim, MemberStatus::Down) {
            assert!(
                waited < Duration::from_secs(60),
                "the sides did not see each other down"
            );
            sim.run_for(Duration::from_millis(100));
            waited += Duration::from_millis(100);
        }
        let bucket = "siblings";
        let names: Vec<String> = (0..keys).map(|i| format!("d{i}")).collect();
        for (i, key) in names.iter().enumerate() {
            let (side_a, side_b) = match i % 10 {
                0 => (true, true),
                x => (x % 2 == 1, x % 2 == 0),
            };
            if side_a {
                sim.write_local(NodeId(1), bucket, key, b"A").unwrap();
                sim.copy_local(NodeId(1), NodeId(2), bucket, key).unwrap();
            }
            if side_b {
                sim.write_local(NodeId(3), bucket, key, b"B").unwrap();
            }
        }
        let objects = |sim: &ClusterSim, node: u64| -> Vec<Option<crate::version::Object>> {
            names
                .iter()
                .map(|k| sim.local_object(NodeId(node), bucket, k).unwrap())
                .collect()
        };
        assert_ne!(objects(&sim, 1), objects(&sim, 3));
        sim.heal();
        let healed = sim.elapsed();
        let step = Duration::from_millis(250);
        let mut seen = None;
        let mut equal = None;
        let mut rounds = [0u64; 3];
        while sim.elapsed() - healed < bound {
            sim.run_for(step);
            for n in 1..=3u64 {
                let st = sim
                    .machines(NodeId(n))
                    .unwrap()
                    .anti_entropy
                    .stats()
                    .clone();
                if st.rounds != rounds[n as usize - 1] {
                    rounds[n as usize - 1] = st.rounds;
                    eprintln!(
                        "  t={:?} n{n} round {} took {} ms, repaired {}",
                        sim.elapsed() - healed,
                        st.rounds,
                        st.last_round_ms,
                        st.objects_repaired
                    );
                }
            }
            if seen.is_none() && sees(&sim, MemberStatus::Alive) {
                seen = Some(sim.elapsed() - healed);
            }
            let first = objects(&sim, 1);
            if objects(&sim, 2) == first && objects(&sim, 3) == first {
                equal = Some(sim.elapsed() - healed);
                // Both sides' writes, the common keys as two siblings.
                for (i, o) in first.iter().enumerate() {
                    let want = if i % 10 == 0 { 2 } else { 1 };
                    assert_eq!(
                        o.as_ref().map(|o| o.siblings().len()),
                        Some(want),
                        "{}",
                        names[i]
                    );
                }
                break;
            }
        }
        let stats = (1..=3)
            .map(|n| {
                sim.machines(NodeId(n))
                    .unwrap()
                    .anti_entropy
                    .stats()
                    .clone()
            })
            .collect();
        Healed {
            seen: seen.unwrap_or(bound),
            equal,
            stats,
        }
    }

    /// Issue [14], item 5: replicas equal within 3 anti-entropy periods
    /// of the heal, for 10,000 divergent keys, with the default
    /// configuration (a 60 s period) and the real default of 160 vnodes.
    /// Virtual time, so the strict figure is asserted here (and printed).
    #[test]
    fn ten_thousand_divergent_keys_are_equal_within_three_periods_of_a_heal() {
        let ae = AntiEntropyConfig::default();
        let period = ae.period;
        let h = heal_convergence(ae, 160, 10_000, period * 10);
        eprintln!(
            "heal convergence, defaults (period {period:?}), 10,000 keys: seen {:?}, equal {:?} ({:.2} periods); {:?}",
            h.seen,
            h.equal,
            h.equal.map_or(f64::NAN, |e| e.as_secs_f64() / period.as_secs_f64()),
            h.stats
        );
        let equal = h.equal.expect("the replicas became equal");
        assert!(equal <= period * 3, "{equal:?}");
        // Better than the target: the healed nodes are exchanged with as
        // soon as they are seen up, and a round leaves its ranges equal on
        // every replica, so it takes one round, not the wait for the next
        // one and then two more (1.93 periods before, 0.22 now).
        assert!(equal <= period, "{equal:?}");
    }

    /// The same with the simulator's short period (5 s): the rounds are
    /// paced by the rate limits, not by the period or a tick.
    #[test]
    fn divergent_keys_heal_at_the_rate_limits_with_a_short_period() {
        let ae = AntiEntropyConfig {
            period: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(5),
            ..AntiEntropyConfig::default()
        };
        let period = ae.period;
        let h = heal_convergence(ae, 16, 10_000, period * 40);
        eprintln!(
            "heal convergence, period {period:?}, 16 vnodes, 10,000 keys: seen {:?}, equal {:?} ({:.2} periods); {:?}",
            h.seen,
            h.equal,
            h.equal.map_or(f64::NAN, |e| e.as_secs_f64() / period.as_secs_f64()),
            h.stats
        );
        let equal = h.equal.expect("the replicas became equal");
        assert!(equal <= period * 3, "{equal:?}");
        // What the objects rate limit needs on the busiest node, plus the
        // time to see the nodes up again and at most one period.
        let most = h
            .stats
            .iter()
            .map(|s| s.objects_repaired)
            .max()
            .unwrap_or(0);
        let rate = AntiEntropyConfig::default().objects_per_second;
        let paced = Duration::from_secs_f64(most as f64 / f64::from(rate));
        assert!(
            equal <= h.seen + paced + period,
            "{equal:?} for {most} objects"
        );
    }

    #[test]
    fn one_seed_gives_one_history() {
        let run = |seed| {
            ClusterSim::new(ClusterOptions::new(5, seed))
                .unwrap()
                .run()
                .unwrap()
                .to_text()
        };
        let a = run(11);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
        assert!(a.contains(" event "), "the schedule has faults");
    }

    #[test]
    fn a_fault_free_run_answers_and_converges() {
        let mut options = ClusterOptions::new(5, 7);
        options.faults = false;
        let h = ClusterSim::new(options).unwrap().run().unwrap();
        eprintln!("{}", summary(&h));
        let text = h.to_text();
        for line in text.lines().filter(|l| l.contains("Failed")).take(10) {
            eprintln!("{line}");
        }
        assert!(h.ops.len() > 100, "{}", summary(&h));
        // Without faults every operation succeeds, but for blind writes
        // past the sibling cap on the hot key, which are refused.
        for o in &h.ops {
            match &o.outcome {
                Outcome::Ok(_) => {}
                Outcome::Failed {
                    definite: true,
                    error,
                } if error.contains("siblings") => {}
                other => panic!("op {} failed without a fault: {other:?}", o.id),
            }
        }
        assert!(super::super::check::check_all(&h).is_empty());
    }
}
