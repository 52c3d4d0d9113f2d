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

use super::anti_entropy::{AntiEntropyActor, GetAntiEntropyStats, RepairNow, RoundNow};
use super::compactor::{Compactor, CompactorStats, GetCompactorStats};
use super::coordinator::{
    CoordinatorActor, CoordinatorParts, Execute, ExecuteScan, GetBucket, GetTargets, InFlight,
    RingEpoch, SetBucket, SetSiblings, StopAccepting, BUCKETS_META,
};
use super::failure_detector::{FailureDetector, GetMembers, GetPhi, Subscribe};
use super::fan_out::{AskPeer, FanOut, NodeResult, SetNode};
use super::handoff::{
    CancelTransfer, DropRange, GetServed, GetTransfers, HandoffActor, ReadRange, ServedStats,
    SetTransferListener, StartTransfer, TransferDone,
};
use super::replica::{
    FlushStore, GetStoreStats, LocalRead, ReplicaActor, SetCoordinator, StoreStats,
};
use super::ring_manager::{
    Decommission, GetRing, GetRingState, LeaveRing, RemoveNode, RingManager, SetCoordinatorStop,
    SetFailureDetector, SetHandoff, RING_META,
};
use super::transport::{LearnPeer, PeerSender, Routes, TransportActor};
use super::NodeEvent;
use crate::config::{StorageConfig, VersionConfig};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::membership::{MemberEntry, Membership, RingKeeper};
use crate::net::{Inbox, Transport};
use crate::protocol::{
    BucketInfo, ErrorReply, MemberView, Op, PreferenceEntry, Reply, ReplyHold, StatusView,
    StorageView, CLIENT_PROTOCOL_VERSION, MAX_BLOCKED_PEERS,
};
use crate::replication::anti_entropy::AntiEntropyStats;
use crate::replication::buckets::{BucketEntry, BucketTable};
use crate::replication::coordinator::{Answer, RequestOptions};
use crate::replication::get::GetReply;
use crate::replication::replica::{RangeBatch, ReplicaStore};
use crate::replication::transfer::{TransferProgress, TransferSpec};
use crate::ring::{Ring, RingState, TokenRange};
use crate::roles::client_ops::{to_client_op, to_reply_for, ReplyKind};
use crate::roles::coordinator::ScanOp;
use crate::roles::ring::{RingRole, RingRoleConfig};
use crate::storage::{BTreeEngine, Engine, LsmEngine, MemoryEngine};
use crate::version::{ConflictPolicy, Resolvers};

pub use crate::config::NodeConfig;

/// A running node: its actors on their own arbiter, and its transport.
///
/// A handle: cloning it is one reference count (a client port's request
/// holds one, so a clone per request must cost nothing worth measuring).
#[derive(Clone)]
pub struct Node(Arc<NodeState>);

impl std::ops::Deref for Node {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        &self.0
    }
}

/// What a [`Node`] handle shares: the addresses of its actors and its
/// settings.
pub struct NodeState {
    id: NodeId,
    addr: String,
    arbiter: ArbiterHandle,
    transport: Arc<dyn Transport>,
    failure_detector: Addr<FailureDetector>,
    ring_manager: Addr<RingManager>,
    coordinator: Addr<CoordinatorActor>,
    replica: Addr<ReplicaActor>,
    compactor: Addr<Compactor>,
    handoff: Addr<HandoffActor>,
    anti_entropy: Addr<AntiEntropyActor>,
    /// Whether the ring may route requests (see [`Node::ring_confirmed`]).
    ring_confirmed: Arc<std::sync::atomic::AtomicBool>,
    engine_name: &'static str,
    /// The store's engine and its settings, for the admin ops (flush,
    /// compact, snapshot).
    engine: Arc<dyn Engine>,
    storage: StorageConfig,
    /// Set by `Drain`: data ops are refused from then on.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Carries `OnNodes` to the other nodes.
    fan_out: Addr<FanOut>,
    cluster: String,
    version: VersionConfig,
    resolvers: Resolvers,
    allow_fault_injection: bool,
    /// The seeds it was configured with (for [`Node::wait_until_joined`]).
    seeds: Vec<(NodeId, String)>,
    /// Client requests served, for `/metrics`.
    metrics: super::metrics::RequestMetrics,
    /// The data shards; the first is `coordinator` and `replica`.
    shards: Arc<[DataShard]>,
}

/// One data shard of a node: a coordinator and a replica actor on one
/// thread, serving the keys of one slice of the token ring (see
/// [`crate::replication::shard_of_key`]).
#[derive(Clone)]
struct DataShard {
    coordinator: Addr<CoordinatorActor>,
    replica: Addr<ReplicaActor>,
    /// Its own arbiter; `None` for shard 0, which runs on the node's.
    arbiter: Option<ArbiterHandle>,
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
        config.version.validate()?;
        config.replica.validate()?;
        config.bucket_defaults.validate()?;
        config.transfer.validate()?;
        config.anti_entropy.validate()?;
        if System::try_current().is_none() {
            return Err(Error::InvalidInput(
                "Node::spawn must be called inside a running actix System".into(),
            ));
        }
        let storage = {
            let (id, storage) = (config.id, config.storage.clone());
            let (max_siblings, max_hints) = (config.version.max_siblings, config.replica.max_hints);
            tokio::task::spawn_blocking(move || open_store(id, &storage, max_siblings, max_hints))
                .await
                .map_err(|e| Error::StorageFailed {
                    reason: format!("opening the store panicked: {e}"),
                })??
        };
        let arbiter = Arbiter::new();
        let handle = arbiter.handle();
        let (done_tx, done_rx) = oneshot::channel();
        let for_node = handle.clone();
        // The closure crosses to the arbiter's thread; the future it starts
        // there need not be `Send` (a transport may hold thread-local state).
        let spawned = handle.spawn_fn(move || {
            actix::spawn(async move {
                let started = match make_transport().await {
                    Ok(parts) => Node::start_here(config, parts, storage, for_node),
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
        match node {
            Ok(node) => {
                node.await_coordinator_ring().await;
                Ok(node)
            }
            Err(e) => {
                handle.stop();
                Err(e)
            }
        }
    }

    /// Waits (at most [`RING_SYNC_WAIT`]) until the coordinator routes by
    /// the ring manager's current ring, so that a request sent as soon as
    /// `spawn` returns does not find an empty ring: the coordinator hears
    /// of rings through an event stream, which actix polls after the
    /// mailbox.
    async fn await_coordinator_ring(&self) {
        let deadline = tokio::time::Instant::now() + RING_SYNC_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.routes_by_current_ring().await != Some(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether every coordinator of this node routes by the ring its ring
    /// manager holds now (`None` once the node is shutting down). Right
    /// after a ring change the coordinators may still route by the ring
    /// before it for a moment, and a replica fenced by the newer ring
    /// refuses what they send it: a write can then fail `Unavailable`.
    /// A caller that starts requests as soon as a cluster has formed (a
    /// test, an embedding program) waits for this on every node.
    pub async fn routes_by_current_ring(&self) -> Option<bool> {
        let ring = self.ring_manager.send(GetRing).await.ok()?;
        for shard in self.shards.iter() {
            if shard.coordinator.send(RingEpoch).await.ok()? < ring.epoch() {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Starts the actors on the current arbiter, in order. `arbiter` must be
    /// the current arbiter's handle.
    fn start_here(
        mut config: NodeConfig,
        parts: TransportParts,
        mut storage: OpenedStore,
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
        let mut keeper = RingKeeper::new(
            config.id,
            &config.ring,
            config.membership.gossip_interval,
            &seed_ids,
            config.rng_seed ^ 0x5249_4e47,
        )?;
        // Ring changes move data for the default bucket's replicas.
        keeper.set_transfer_replicas(config.bucket_defaults.n);
        if config.bootstrap {
            keeper.found();
        }
        if let Some(state) = storage.ring.take() {
            keeper.restore(state)?;
        }
        if storage.leaving {
            // It was leaving when it stopped: it goes on leaving.
            keeper.resume_leave();
        }
        let transport_actor = TransportActor::new(Arc::clone(&transport), inbox).start();
        for (node, addr) in &config.seeds {
            if *node != config.id {
                transport_actor.do_send(LearnPeer {
                    node: *node,
                    addr: addr.clone(),
                });
            }
        }
        let role = RingRole::new(
            keeper,
            RingRoleConfig {
                leave_timeout: LEAVE_TRANSFER_TIMEOUT,
                leave_linger: config.membership.leave_linger,
            },
        );
        let ring_manager = RingManager::new(
            role,
            config.membership.gossip_interval,
            transport_actor.clone(),
            Arc::clone(&storage.store),
        );
        let ring_confirmed = ring_manager.confirmed_flag();
        let ring_watch = ring_manager.ring_watch();
        let ring_manager = ring_manager.start();
        let failure_detector = FailureDetector::new(
            membership,
            transport_actor.clone(),
            ring_manager.clone().recipient(),
        )
        .start();
        ring_manager.do_send(SetFailureDetector(failure_detector.clone().recipient()));
        let OpenedStore {
            engine,
            store,
            buckets,
            ring: _,
            leaving: _,
        } = storage;
        // The data shards: shard 0 on this arbiter, each other one on an
        // arbiter of its own (see `docs/architecture.md`, "Data shards").
        let count = config.replica.shards();
        let shard_config = config.replica.per_shard(count);
        tracing::info!(node = %config.id, shards = count, "the data path runs as {count} data shard(s)");
        let mut shards: Vec<DataShard> = Vec::with_capacity(count);
        for shard in 0..count {
            let (events_tx, events_rx) = mpsc::unbounded_channel();
            ring_manager.do_send(Subscribe(events_tx.clone()));
            failure_detector.do_send(Subscribe(events_tx));
            let own = (shard > 0).then(|| Arbiter::new().handle());
            let on = own.clone().unwrap_or_else(|| arbiter.clone());
            let replica = {
                let (id, store, transport) = (
                    config.id,
                    Arc::clone(&store),
                    PeerSender::new(Arc::clone(&transport)),
                );
                let (io, budget) = (
                    shard_config.max_concurrent_io,
                    shard_config.read_budget_bytes,
                );
                ReplicaActor::start_in_arbiter(&on, move |_| {
                    ReplicaActor::new(id, store, transport, io, budget)
                })
            };
            let parts = CoordinatorParts {
                node: config.id,
                bucket_defaults: config.bucket_defaults.clone(),
                buckets: buckets.clone(),
                config: shard_config.clone(),
                gossip_interval: config.membership.gossip_interval,
                events: events_rx,
                ring: ring_watch.clone(),
                rng_seed: config.rng_seed ^ 0x4255_434b ^ shard as u64,
                max_clock_skew: config.version.max_clock_skew,
                store: Arc::clone(&store),
                shard: (shard, count),
            };
            let coordinator = {
                let (transport, replica) =
                    (PeerSender::new(Arc::clone(&transport)), replica.clone());
                CoordinatorActor::start_in_arbiter(&on, move |_| {
                    CoordinatorActor::new(parts, transport, replica)
                })
            };
            replica.do_send(SetCoordinator(coordinator.clone().recipient()));
            shards.push(DataShard {
                coordinator,
                replica,
                arbiter: own,
            });
        }
        let (coordinator, replica) = (shards[0].coordinator.clone(), shards[0].replica.clone());
        if count > 1 {
            coordinator.do_send(SetSiblings(
                shards[1..].iter().map(|s| s.coordinator.clone()).collect(),
            ));
        }
        ring_manager.do_send(SetCoordinatorStop(coordinator.clone().recipient()));
        let (ae_tx, ae_rx) = mpsc::unbounded_channel();
        ring_manager.do_send(Subscribe(ae_tx.clone()));
        failure_detector.do_send(Subscribe(ae_tx));
        let anti_entropy = AntiEntropyActor::new(
            config.id,
            config.anti_entropy.clone(),
            Arc::clone(&store),
            config.bucket_defaults.clone(),
            transport_actor.clone(),
            ae_rx,
        )
        .start();
        let compactor = Compactor::new(Arc::clone(&engine), config.replica.compaction_poll).start();
        let handoff = HandoffActor::new(
            config.id,
            Arc::clone(&store),
            transport_actor.clone(),
            coordinator.clone().recipient(),
            config.transfer.clone(),
            config.rng_seed ^ 0x4841_4e44,
        )
        .start();
        ring_manager.do_send(SetHandoff(handoff.clone()));
        let fan_out = FanOut::new(config.id, transport_actor.clone()).start();
        let node = Node(Arc::new(NodeState {
            id: config.id,
            addr: config.addr,
            arbiter,
            transport,
            failure_detector,
            ring_manager,
            coordinator,
            replica,
            compactor,
            handoff,
            anti_entropy,
            ring_confirmed,
            engine_name: config.storage.engine_name(),
            engine: Arc::clone(&engine),
            storage: config.storage.clone(),
            draining: Arc::default(),
            fan_out: fan_out.clone(),
            cluster: config.cluster,
            version: config.version,
            resolvers: config.resolvers,
            allow_fault_injection: config.allow_fault_injection,
            seeds: config.seeds,
            metrics: super::metrics::RequestMetrics::default(),
            shards: shards.into(),
        }));
        fan_out.do_send(SetNode(node.clone()));
        transport_actor.do_send(Routes {
            membership: node.failure_detector.clone().recipient(),
            ring: node.ring_manager.clone().recipient(),
            replicas: node
                .shards
                .iter()
                .map(|s| s.replica.clone().recipient())
                .collect(),
            coordinators: node
                .shards
                .iter()
                .map(|s| s.coordinator.clone().recipient())
                .collect(),
            handoff: node.handoff.clone().recipient(),
            anti_entropy: node.anti_entropy.clone().recipient(),
            admin: fan_out.recipient(),
        });
        Ok(node)
    }

    /// Waits until this node has joined its cluster (the ring in force or
    /// the change in progress holds it: see [`super::readiness`]), at most
    /// `limit`. If it has not by then, the error says why, in one line
    /// ([`super::readiness::why_not_joined`]): no seed reachable (and why
    /// for each: refused, secret or cluster mismatch, another node at the
    /// address), seeds reached but no cluster founded, or a ring that has
    /// not taken it in.
    pub async fn wait_until_joined(&self, limit: Duration) -> std::result::Result<(), String> {
        let started = std::time::Instant::now();
        loop {
            let state = self
                .ring_state()
                .await
                .map_err(|e| format!("the node stopped while joining: {e}"))?;
            if super::readiness::has_joined(self.id, &state) {
                return Ok(());
            }
            if started.elapsed() >= limit {
                // A seed counts as reached once membership has it alive
                // (heard from it, or of it) or a connection to it is open:
                // a connection the seed dialed in is not this node's link.
                let members = self.members().await.unwrap_or_default();
                let alive = |id: NodeId| {
                    members
                        .iter()
                        .any(|m| m.node == id && m.status == crate::membership::MemberStatus::Alive)
                };
                let seeds: Vec<super::readiness::SeedReport> = self
                    .seeds
                    .iter()
                    .filter(|(id, _)| *id != self.id)
                    .map(|(id, addr)| super::readiness::SeedReport {
                        id: *id,
                        addr: addr.clone(),
                        connected: alive(*id) || self.transport.connected_to(*id),
                        dial_failure: self.transport.dial_failure(*id),
                    })
                    .collect();
                return Err(super::readiness::why_not_joined(
                    self.id,
                    &seeds,
                    &state,
                    started.elapsed(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this node coordinates data requests: false from a restart
    /// on its stored ring until a peer has reported the same ring state
    /// (requests meanwhile fail with the retryable
    /// [`Error::RingUnconfirmed`]).
    pub fn ring_confirmed(&self) -> bool {
        self.ring_confirmed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Puts a client request in the Coordinator actor's mailbox without
    /// waiting for the actor to take it (its answer comes through the
    /// request's own channel): waiting would wake the caller once more per
    /// request, a thread switch when the caller runs on another thread. A
    /// full mailbox refuses the request as a full queue would
    /// (`QueueFull`, retryable, certainly not applied).
    fn hand_over<M>(&self, shard: usize, msg: M) -> Result<()>
    where
        M: Message<Result = ()> + Send + 'static,
        CoordinatorActor: Handler<M>,
    {
        self.shards[shard]
            .coordinator
            .try_send(msg)
            .map_err(|e| match e {
                SendError::Full(_) => Error::QueueFull {
                    peer: self.id,
                    capacity: super::coordinator::MAILBOX,
                },
                SendError::Closed(_) => Error::Shutdown,
            })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Runs the future `make` returns on the node's own thread (its
    /// arbiter, where its actors run) and returns its output. A client
    /// port started this way serves its connections on that thread, so a
    /// request reaches the coordinator and its answer comes back without
    /// a thread switch (two wake-ups per request fewer than from another
    /// thread). `Shutdown` if the node has stopped.
    pub async fn on_node_thread<F, Fut, T>(&self, make: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let spawned = self.arbiter.spawn_fn(move || {
            actix::spawn(async move {
                let _ = tx.send(make().await);
            });
        });
        if !spawned {
            return Err(Error::Shutdown);
        }
        rx.await.map_err(|_| Error::Shutdown)
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

    /// Forgets `node` for good: an operator's word that it is gone and will
    /// not come back. It becomes LEFT in membership (which spreads like a
    /// graceful leave, and is dropped from every table after
    /// `left_grace`), and the ring role then removes it from the ring, its
    /// ranges moving to the remaining nodes. A node that is in fact running
    /// refutes it. Fails with `InvalidInput` for this node itself (leave
    /// instead) and `UnknownPeer` for a node not in the table.
    pub async fn forget(&self, node: NodeId) -> Result<()> {
        self.failure_detector
            .send(super::failure_detector::Forget(node))
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// Phi of every node this node monitors, now.
    pub async fn phi(&self) -> Result<BTreeMap<NodeId, f64>> {
        self.failure_detector
            .send(GetPhi)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// The ring state: the ring in force and the change in progress.
    pub async fn ring_state(&self) -> Result<Arc<RingState>> {
        self.ring_manager
            .send(GetRingState)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Begins giving this node's tokens away (at once, or once the change
    /// in progress is in force): the nodes taking its ranges pull them,
    /// and then the ring no longer holds it. Returns when the leave has
    /// been asked for and its intent stored (through the engine's log,
    /// under its sync policy): a node that crashes after this returns comes
    /// back leaving, not joining again. [`Node::ring_state`] shows its
    /// progress. The node keeps running (see [`Node::leave`] to also stop
    /// it).
    pub async fn decommission(&self) -> Result<()> {
        self.ring_manager
            .send(Decommission)
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// Begins removing `node`, a member gone for good: its ranges are
    /// copied again from the surviving replicas. Fails with `InvalidInput`
    /// when this node can reach `node`, when it is not in the ring, or
    /// while another change is in progress.
    pub async fn remove_node(&self, node: NodeId) -> Result<()> {
        self.ring_manager
            .send(RemoveNode(node))
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// The ring in force.
    pub async fn ring(&self) -> Result<Arc<Ring>> {
        self.ring_manager
            .send(GetRing)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Leaves gracefully: gives the node's tokens away and waits until the
    /// nodes taking its ranges have pulled them (the leave is then in
    /// force), gossips LEFT for `leave_linger`, then shuts down. The ring
    /// manager's role follows the leave and says when it is finished; this
    /// only waits for that.
    ///
    /// If the ranges have not moved within [`LEAVE_TRANSFER_TIMEOUT`] (a
    /// taker is down, or another change holds the ring), the node leaves
    /// anyway: the lowest live node then removes it from the ring, and its
    /// ranges are copied again from the other replicas.
    pub async fn leave(self) -> Result<()> {
        self.leave_ring().await?;
        self.shutdown().await;
        Ok(())
    }

    /// [`Node::leave`] without the shutdown: waits until the leave is
    /// finished (the ranges moved or [`LEAVE_TRANSFER_TIMEOUT`] passed,
    /// then LEFT gossiped for `leave_linger`), and returns whether the
    /// ranges moved. The node keeps running; the caller stops it
    /// ([`Node::shutdown_checked`], as `ringkv-node --leave-on-sigterm`
    /// does, to report a failed final flush).
    pub async fn leave_ring(&self) -> Result<bool> {
        self.ring_manager
            .send(LeaveRing)
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// Stops the node cleanly: refuses new client requests, lets those in
    /// flight finish (up to [`SHUTDOWN_GRACE`]), flushes the engine (its
    /// memtables become tables; the WAL is synced), shuts the transport
    /// down (waiting for its tasks), then stops the arbiter and every actor
    /// on it.
    pub async fn shutdown(self) {
        if let Err(e) = self.shutdown_checked().await {
            tracing::error!(error = %e, "the node stopped, but its final flush failed");
        }
    }

    /// [`Node::shutdown`], returning the final flush's error, if any: the
    /// node stops either way (its WAL still holds what the flush did not
    /// write). `ringkv-node` exits non-zero on it.
    pub async fn shutdown_checked(self) -> Result<()> {
        // The lead passes it on to the other shards.
        if self.coordinator.send(StopAccepting).await.is_ok() {
            let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
            while let Ok(n) = self.in_flight().await {
                if n == 0 || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let flushed = match self.replica.send(FlushStore).await {
            Ok(result) => result,
            Err(_) => Err(Error::Shutdown),
        };
        self.transport.shutdown().await;
        self.stop_arbiters();
        flushed
    }

    /// Client requests in flight on every shard.
    async fn in_flight(&self) -> Result<usize> {
        let mut total = 0;
        for shard in self.shards.iter() {
            total += shard
                .coordinator
                .send(InFlight)
                .await
                .map_err(|_| Error::Shutdown)?;
        }
        Ok(total)
    }

    /// Stops the node's arbiter and its shards' own.
    fn stop_arbiters(&self) {
        for shard in self.shards.iter() {
            if let Some(arbiter) = &shard.arbiter {
                arbiter.stop();
            }
        }
        self.arbiter.stop();
    }

    /// Crashes the node: its transport stops at once (peers see refused or
    /// lost frames) and its actors stop, without any goodbye.
    pub fn crash(self) -> BoxFuture<'static, ()> {
        let stopped = self.transport.shutdown();
        self.stop_arbiters();
        stopped
    }

    /// Blocks the node's thread for `duration`: actors, timers and network
    /// tasks all freeze, as under SIGSTOP or a stop-the-world pause. Returns
    /// at once; the stall starts when the thread next picks up work.
    pub fn stall(&self, duration: Duration) -> bool {
        self.stall_now(duration, Duration::ZERO)
    }

    /// As [`Node::stall`], but returns only once every thread of the node
    /// is asleep (or after `wait`), so that a request sent after it returns
    /// finds the node frozen. Without the wait, a thread busy at the call
    /// (a loaded machine makes that likely) could serve a request sent
    /// just after before its stall began: an actor handles every message
    /// already in its mailbox in one turn. Not from a thread of the node
    /// itself, which would wait for its own stall to start for `wait`.
    pub fn stall_now(&self, duration: Duration, wait: Duration) -> bool {
        let (started, asleep) = std::sync::mpsc::channel::<()>();
        let stall = |started: std::sync::mpsc::Sender<()>| {
            move || {
                let _ = started.send(());
                std::thread::sleep(duration)
            }
        };
        let mut spawned = 0;
        for shard in self.shards.iter() {
            if let Some(arbiter) = &shard.arbiter {
                spawned += usize::from(arbiter.spawn_fn(stall(started.clone())));
            }
        }
        let ok = self.arbiter.spawn_fn(stall(started));
        spawned += usize::from(ok);
        let until = std::time::Instant::now() + wait;
        for _ in 0..spawned {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if asleep.recv_timeout(left).is_err() {
                break;
            }
        }
        ok
    }
}

/// How long [`Node::leave`] waits for its ranges to move: 10 minutes, long
/// enough to stream tens of GiB at the default throttle, bounded so that a
/// stuck change cannot keep a leaving node up for ever.
pub use crate::roles::ring::LEAVE_TRANSFER_TIMEOUT;

/// How long [`Node::spawn`] waits for the coordinator to have the ring.
pub const RING_SYNC_WAIT: Duration = Duration::from_secs(2);

/// How long [`Node::shutdown`] waits for client requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The most compactions one `Compact` runs.
pub const MAX_ADMIN_COMPACTIONS: u64 = 100_000;

/// How many keys of one batch (`MultiGet`, `MultiPut`) a node runs at
/// once: enough to overlap their replica round trips, few enough that a
/// connection's 128 batches in flight stay within the coordinator's
/// mailbox (a batch is not refused whole for filling it).
pub const BATCH_CONCURRENCY: usize = 32;

/// A batch item answered with a reply of the wrong kind: a bug, reported
/// for that item.
fn unexpected_item(op: &str, is_write: bool, reply: &Reply) -> ErrorReply {
    super::client_port::error_reply_for(
        is_write,
        &Error::Replica(format!("{op}: an item was answered with {reply:?}")),
    )
}

/// Runs storage work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::StorageFailed {
            reason: format!("storage work panicked: {e}"),
        })?
}

/// Objects counted at most for a status view (a scan stops there).
pub const STATUS_COUNT_CAP: u64 = 10_000_000;

/// A node's storage, opened before its actors start.
struct OpenedStore {
    engine: Arc<dyn Engine>,
    store: Arc<ReplicaStore>,
    buckets: BucketTable,
    /// The ring state stored before the node last stopped.
    ring: Option<RingState>,
    /// Whether it was leaving then ([`crate::roles::ring::LEAVING_META`]).
    leaving: bool,
}

/// Opens the engine, the replica store over it, and the stored bucket
/// table. Blocking: runs on a blocking thread.
fn open_store(
    node: NodeId,
    storage: &StorageConfig,
    max_siblings: usize,
    max_hints: usize,
) -> Result<OpenedStore> {
    let create = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating data directory {}", dir.display()), e))
    };
    let engine: Arc<dyn Engine> = match storage {
        StorageConfig::Memory => Arc::new(MemoryEngine::new()),
        StorageConfig::Lsm { dir, config } => {
            create(dir)?;
            // The node's Compactor actor runs the compactions.
            let config = crate::config::LsmConfig {
                external_compaction: true,
                ..config.clone()
            };
            Arc::new(LsmEngine::open(dir, config)?)
        }
        StorageConfig::BTree { dir, config } => {
            create(dir)?;
            Arc::new(BTreeEngine::open(dir, config.clone())?)
        }
    };
    let store = Arc::new(ReplicaStore::open(
        node,
        Arc::clone(&engine),
        max_siblings,
        max_hints,
    )?);
    let mut buckets = BucketTable::new();
    if let Some(bytes) = store.load_meta(BUCKETS_META)? {
        let entries: Vec<BucketEntry> =
            crate::codec::decode(&bytes, crate::config::DEFAULT_MAX_FRAME_BYTES)?;
        buckets.merge(entries);
    }
    let ring = match store.load_meta(RING_META)? {
        None => None,
        Some(bytes) => Some(
            crate::codec::decode::<RingState>(&bytes, crate::config::DEFAULT_MAX_FRAME_BYTES)
                .map_err(|e| Error::StorageFailed {
                    reason: format!("the stored ring state does not decode: {e}"),
                })?,
        ),
    };
    let leaving = crate::roles::ring::was_leaving(&store)?;
    Ok(OpenedStore {
        engine,
        store,
        buckets,
        ring,
        leaving,
    })
}

impl Node {
    /// Executes one client operation on this node, as its coordinator: the
    /// entry point of the client port, the shell and the FFI.
    ///
    /// Data operations go through the Coordinator actor (quorums, read
    /// repair, hints) and are answered under the bucket's policy; bucket,
    /// ring, status and preference-list views are answered from this node's
    /// view of the cluster; `BlockOutbound` sets its transport's injected
    /// faults, if the node allows it.
    pub async fn execute(&self, op: Op) -> Result<Reply> {
        self.run_counted(op, &mut ReplyHold::default()).await
    }

    /// [`Node::run`], counted in the request metrics (op, level, time,
    /// error code).
    async fn run_counted(&self, op: Op, hold: &mut ReplyHold) -> Result<Reply> {
        let name = op.name();
        let level = super::metrics::consistency_label(&op);
        let started = std::time::Instant::now();
        let result = self.run(op, hold).await;
        self.metrics
            .record(name, level, started.elapsed(), result.as_ref().err());
        result
    }

    /// This node's metrics in the Prometheus text format (see
    /// [`super::metrics`]): its request counters, and its state as its
    /// actors report it now.
    pub async fn metrics_text(&self) -> Result<String> {
        let status = self.status().await?;
        let store = self.store_stats().await?;
        let compactor = self.compactor_stats().await?;
        let ring = self.ring_state().await?;
        let snapshot = super::metrics::Snapshot {
            status,
            engine: store.engine,
            compactions: compactor.compactions,
            ring_epoch: ring.ring.epoch(),
            ring_members: ring.ring.members().len(),
            ring_changing: ring.pending.is_some(),
        };
        Ok(super::metrics::render(&self.metrics, &snapshot))
    }

    /// Whether this node serves: the ring holds it, its ring is confirmed
    /// and it is not draining (`/ready` on the admin port).
    pub async fn is_ready(&self) -> bool {
        match self.ring_state().await {
            Ok(state) => {
                super::readiness::has_joined(self.id, &state)
                    && self.ring_confirmed()
                    && !self.is_draining()
            }
            Err(_) => false,
        }
    }

    /// [`Node::execute`], also returning the read budget its reply holds
    /// (see [`ReplyHold`]): a client port keeps it until it has encoded the
    /// reply.
    pub async fn execute_held(&self, op: Op) -> Result<(Reply, ReplyHold)> {
        let mut hold = ReplyHold::default();
        let reply = self.run_counted(op, &mut hold).await?;
        Ok((reply, hold))
    }

    /// Runs `op`; a data op's answer leaves what it holds in `hold`.
    ///
    /// A single data op (the bulk of a node's requests) runs in
    /// [`Node::run_data`], whose future is small; every other op in
    /// [`Node::run_control`], boxed: that future holds whatever its
    /// longest branch holds across an await, and unboxed it would make
    /// every request's future that size.
    async fn run(&self, op: Op, hold: &mut ReplyHold) -> Result<Reply> {
        // Sizes first, whatever the way in: a key, bucket or value past the
        // limits is the caller's error, never a replica's.
        op.check_limits()?;
        match op {
            data @ (Op::Get { .. }
            | Op::CounterGet { .. }
            | Op::SetMembers { .. }
            | Op::Put { .. }
            | Op::Delete { .. }
            | Op::CounterAdd { .. }
            | Op::SetAdd { .. }
            | Op::SetRemove { .. }) => self.run_data(data, hold).await,
            other => Box::pin(self.run_control(other, hold)).await,
        }
    }

    /// [`Node::run`] for every op but the single data ops (which it hands
    /// to [`Node::run_data`] too, should one come this way).
    async fn run_control(&self, op: Op, hold: &mut ReplyHold) -> Result<Reply> {
        let gone = |_| Error::Shutdown;
        match op {
            Op::Hello { version, .. } => {
                if version != CLIENT_PROTOCOL_VERSION {
                    return Err(Error::InvalidInput(format!(
                        "client protocol version {version} is not supported; \
                         this node speaks {CLIENT_PROTOCOL_VERSION}"
                    )));
                }
                // The client port, which owns the connection, fills in
                // the role.
                Ok(Reply::Hello {
                    version: CLIENT_PROTOCOL_VERSION,
                    node: self.id,
                    cluster: self.cluster.clone(),
                    role: None,
                })
            }
            Op::GetBucket { bucket } => {
                let props = self
                    .coordinator
                    .send(GetBucket(bucket.into_vec()))
                    .await
                    .map_err(gone)?;
                Ok(Reply::Bucket {
                    props: BucketInfo::from(&props),
                })
            }
            Op::SetBucket { bucket, props } => {
                let props = crate::config::BucketProps::try_from(&props)?;
                let set = SetBucket {
                    bucket: bucket.into_vec(),
                    props,
                };
                let props = self.coordinator.send(set).await.map_err(gone)??;
                Ok(Reply::Bucket {
                    props: BucketInfo::from(&props),
                })
            }
            Op::Leave => {
                self.decommission().await?;
                Ok(Reply::Ring(ring_view(&*self.ring_state().await?)))
            }
            Op::RemoveNode { node } => {
                self.remove_node(node).await?;
                Ok(Reply::Ring(ring_view(&*self.ring_state().await?)))
            }
            Op::Forget { node } => {
                self.forget(node).await.map_err(|e| match e {
                    // The transport's "unknown peer" would reach a client
                    // as an internal error: this one is the caller's.
                    Error::UnknownPeer(n) => Error::InvalidInput(format!(
                        "{} does not know {n}: nothing to forget (never a \
                         member, or forgotten long enough ago to be dropped \
                         from its table)",
                        self.id
                    )),
                    other => other,
                })?;
                tracing::info!(node = %self.id, forgotten = %node, "forget: marked LEFT");
                Ok(Reply::Ring(ring_view(&*self.ring_state().await?)))
            }
            Op::BlockOutbound { peers } => self.block_outbound(peers),
            op @ (Op::Ring
            | Op::Status
            | Op::Flush
            | Op::Compact
            | Op::Repair { .. }
            | Op::Snapshot { .. }) => self.run_node_op(op).await,
            Op::Drain => {
                use std::sync::atomic::Ordering;
                let was = self.draining.swap(true, Ordering::SeqCst);
                if let Err(e) = self.decommission().await {
                    // Nothing changed: it serves again, and may be asked
                    // again.
                    self.draining.store(was, Ordering::SeqCst);
                    return Err(e);
                }
                tracing::info!(node = %self.id, "drain: refusing data ops, leaving the ring");
                Ok(Reply::Ring(ring_view(&*self.ring_state().await?)))
            }
            Op::OnNodes {
                nodes,
                op,
                timeout_ms,
            } => self.on_nodes(nodes, *op, timeout_ms).await,
            Op::LocalGet { bucket, key } => {
                let (bucket, key) = (bucket.into_vec(), key.into_vec());
                let props = self
                    .coordinator
                    .send(GetBucket(bucket.clone()))
                    .await
                    .map_err(gone)?;
                let object = self
                    .replica
                    .send(LocalRead {
                        bucket: bucket.clone(),
                        key: key.clone(),
                    })
                    .await
                    .map_err(gone)??;
                let answer = Answer::Got(GetReply {
                    object,
                    receipt: Default::default(),
                });
                to_reply_for(
                    &bucket,
                    &key,
                    ReplyKind::Object,
                    answer,
                    &props,
                    &self.resolvers,
                )
            }
            Op::PreferenceList { bucket, key } => {
                let targets = self
                    .coordinator
                    .send(GetTargets {
                        bucket: bucket.into_vec(),
                        key: key.into_vec(),
                    })
                    .await
                    .map_err(gone)?;
                Ok(Reply::Preference {
                    targets: targets
                        .into_iter()
                        .map(|t| PreferenceEntry {
                            node: t.node,
                            fallback_for: t.hint_for,
                        })
                        .collect(),
                })
            }
            Op::Scan {
                bucket,
                cursor,
                limit,
                options,
            } => {
                self.check_not_draining()?;
                if !self.ring_confirmed() {
                    return Err(Error::RingUnconfirmed);
                }
                let cursor = crate::protocol::ScanCursor::from_bytes(
                    cursor.as_ref().map_or(&[][..], |c| c.as_slice()),
                )?;
                let timeout = match options.timeout_ms {
                    Some(0) => {
                        return Err(Error::InvalidInput("timeout_ms must be positive".into()))
                    }
                    other => other.map(std::time::Duration::from_millis),
                };
                let op = ScanOp {
                    bucket: bucket.into_vec(),
                    cursor,
                    limit,
                    options: RequestOptions {
                        r: options.r,
                        sloppy_quorum: options.sloppy_quorum,
                        timeout,
                        ..RequestOptions::default()
                    },
                };
                let (tx, rx) = oneshot::channel();
                // A scan spans keys: the lead shard coordinates it.
                self.hand_over(0, ExecuteScan { op, reply: tx })?;
                match rx.await.map_err(|_| Error::Shutdown)?? {
                    (Answer::Scanned(page), _, _) => Ok(Reply::Keys {
                        keys: page
                            .keys
                            .into_iter()
                            .map(serde_bytes::ByteBuf::from)
                            .collect(),
                        cursor: page.next.map(|c| serde_bytes::ByteBuf::from(c.to_bytes())),
                        receipt: page.receipt,
                    }),
                    _ => Err(Error::InvalidInput(
                        "the coordinator answered a scan with something else".into(),
                    )),
                }
            }
            Op::MultiGet {
                bucket,
                keys,
                options,
            } => {
                // Refused whole, as a single op would be, before any key.
                self.check_not_draining()?;
                if !self.ring_confirmed() {
                    return Err(Error::RingUnconfirmed);
                }
                let timeout = self.batch_timeout(&bucket, options.timeout_ms).await?;
                let ops = keys
                    .into_iter()
                    .map(|key| Op::Get {
                        bucket: bucket.clone(),
                        key,
                        options: options.clone(),
                    })
                    .collect();
                let mut carried = 0usize;
                let mut items = Vec::new();
                for (result, held) in self.run_batch(ops, timeout).await {
                    items.push(match result {
                        Ok(Reply::Object {
                            value,
                            siblings,
                            context,
                            receipt,
                        }) => {
                            carried += value.as_ref().map_or(0, |v| v.len())
                                + siblings
                                    .iter()
                                    .map(|s| s.value.as_ref().map_or(0, |v| v.len()))
                                    .sum::<usize>();
                            if carried > crate::protocol::MAX_BATCH_BYTES {
                                // The reply would not fit a frame: the
                                // rest of the batch is read again alone.
                                Err(ErrorReply::from(&Error::InvalidInput(format!(
                                    "this multi_get's values pass {} bytes by this key: \
                                     read it alone or in a later batch",
                                    crate::protocol::MAX_BATCH_BYTES
                                ))))
                            } else {
                                hold.append(held);
                                Ok(crate::protocol::ObjectItem {
                                    value,
                                    siblings,
                                    context,
                                    receipt,
                                })
                            }
                        }
                        Ok(other) => Err(unexpected_item("multi_get", false, &other)),
                        // As the client port answers a single `Get`.
                        Err(e) => Err(super::client_port::error_reply_for(false, &e)),
                    });
                }
                Ok(Reply::Objects { items })
            }
            Op::MultiPut {
                bucket,
                items,
                options,
            } => {
                self.check_not_draining()?;
                if !self.ring_confirmed() {
                    return Err(Error::RingUnconfirmed);
                }
                let timeout = self.batch_timeout(&bucket, options.timeout_ms).await?;
                let ops = items
                    .into_iter()
                    .map(|item| Op::Put {
                        bucket: bucket.clone(),
                        key: item.key,
                        value: item.value,
                        context: item.context,
                        options: options.clone(),
                    })
                    .collect();
                let items = self
                    .run_batch(ops, timeout)
                    .await
                    .into_iter()
                    .map(|(result, _)| match result {
                        Ok(Reply::Written { context, receipt }) => {
                            Ok(crate::protocol::WrittenItem { context, receipt })
                        }
                        Ok(other) => Err(unexpected_item("multi_put", true, &other)),
                        // As the client port answers a single `Put`:
                        // `indefinite` set.
                        Err(e) => Err(super::client_port::error_reply_for(true, &e)),
                    })
                    .collect();
                Ok(Reply::WrittenMany { items })
            }
            data => self.run_data(data, hold).await,
        }
    }

    /// A single data op: through the coordinator of its key's shard, and
    /// its answer made a reply (by the bucket's resolver, off this thread,
    /// for a script policy).
    async fn run_data(&self, data: Op, hold: &mut ReplyHold) -> Result<Reply> {
        self.check_not_draining()?;
        if !self.ring_confirmed() {
            return Err(Error::RingUnconfirmed);
        }
        let (bucket, key) = match data.bucket_key() {
            Some((b, k)) => (b.to_vec(), k.to_vec()),
            None => Default::default(),
        };
        let Some((op, kind)) = to_client_op(data, &self.version)? else {
            return Err(Error::InvalidInput("unsupported operation".into()));
        };
        let (tx, rx) = oneshot::channel();
        let shard = crate::replication::shard_of_key(&bucket, &key, self.shards.len());
        self.hand_over(shard, Execute { op, reply: tx })?;
        let (answer, props, held) = rx.await.map_err(|_| Error::Shutdown)??;
        hold.append(held);
        if !matches!(props.policy, ConflictPolicy::Script(_)) {
            return to_reply_for(&bucket, &key, kind, answer, &props, &self.resolvers);
        }
        // A user's resolver may take its time: not on the node's
        // thread, where the client ports may run.
        let resolvers = self.resolvers.clone();
        tokio::task::spawn_blocking(move || {
            to_reply_for(&bucket, &key, kind, answer, &props, &resolvers)
        })
        .await
        .map_err(|e| Error::Replica(format!("a conflict resolver failed: {e}")))?
    }

    /// A batch's time: its `timeout_ms`, else its bucket's timeout, as
    /// one of its ops would have. Zero is refused, as for every op.
    async fn batch_timeout(
        &self,
        bucket: &serde_bytes::ByteBuf,
        timeout_ms: Option<u64>,
    ) -> Result<Duration> {
        match timeout_ms {
            Some(0) => Err(Error::InvalidInput("timeout_ms must be positive".into())),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(self
                .coordinator
                .send(GetBucket(bucket.to_vec()))
                .await
                .map_err(|_| Error::Shutdown)?
                .timeout),
        }
    }

    /// Runs the single ops of a batch (`MultiGet`, `MultiPut`) as
    /// independent requests, up to [`BATCH_CONCURRENCY`] at a time; the
    /// results (each with what its reply holds) in the order of `ops`.
    ///
    /// The batch takes about `timeout` at most, as one op would: each op
    /// gets the time left of it as its `timeout_ms`, and an op not
    /// started when it has run out is not sent and fails with a
    /// retryable `Timeout` (for a write: certainly not applied).
    ///
    /// Boxed, with its type spelled out: `run` runs the batch that runs
    /// `run`, and the compiler needs the cycle cut at a named `Send` type.
    fn run_batch(
        &self,
        ops: Vec<Op>,
        timeout: Duration,
    ) -> BoxFuture<'_, Vec<(Result<Reply>, ReplyHold)>> {
        use futures_util::stream::{self, StreamExt};
        let deadline = std::time::Instant::now() + timeout;
        Box::pin(async move {
            stream::iter(ops.into_iter().map(|mut op| async move {
                let mut held = ReplyHold::default();
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let left_ms = left.as_millis().min(u64::MAX as u128) as u64;
                if left_ms == 0 {
                    let mut reply = ErrorReply::new(
                        crate::protocol::ErrorCode::Timeout,
                        format!(
                            "{}: not sent, the batch's {} ms ran out before its turn",
                            op.name(),
                            timeout.as_millis()
                        ),
                        true,
                    );
                    reply.indefinite = Some(false);
                    return (Err(Error::Remote(reply)), held);
                }
                match &mut op {
                    Op::Get { options, .. } => options.timeout_ms = Some(left_ms),
                    Op::Put { options, .. } => options.timeout_ms = Some(left_ms),
                    _ => {}
                }
                let result = self.run(op, &mut held).await;
                (result, held)
            }))
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await
        })
    }

    /// Runs one of the ops [`Op::runs_on_nodes`] allows (views and storage
    /// upkeep) on this node: for its clients, and for `OnNodes`.
    async fn run_node_op(&self, op: Op) -> Result<Reply> {
        let gone = |_| Error::Shutdown;
        match op {
            Op::Ring => Ok(Reply::Ring(ring_view(&*self.ring_state().await?))),
            Op::Status => Ok(Reply::Status(self.status().await?)),
            Op::Flush => {
                let engine = Arc::clone(&self.engine);
                blocking(move || engine.flush()).await?;
                Ok(Reply::Storage(self.storage_view()))
            }
            Op::Compact => {
                let engine = Arc::clone(&self.engine);
                let ran = blocking(move || {
                    let mut ran = 0u64;
                    // Bounded, in case a policy kept finding work.
                    while ran < MAX_ADMIN_COMPACTIONS && engine.compact()? {
                        ran += 1;
                    }
                    Ok(ran)
                })
                .await?;
                tracing::info!(node = %self.id, compactions = ran, "compact: done");
                Ok(Reply::Storage(self.storage_view()))
            }
            Op::Repair { range, peer } => {
                let scope = crate::replication::anti_entropy::RepairScope {
                    range: range.map(|r| TokenRange {
                        after: crate::ring::Token(r.after),
                        through: crate::ring::Token(r.through),
                    }),
                    peer,
                };
                match self
                    .anti_entropy
                    .send(RepairNow(scope))
                    .await
                    .map_err(gone)?
                {
                    Some(until_rounds) => Ok(Reply::Repair { until_rounds }),
                    None => Err(Error::InvalidInput(format!(
                        "anti-entropy is off on {} (anti_entropy.enabled = false): no round \
                         would run",
                        self.id
                    ))),
                }
            }
            Op::Snapshot { dir } => {
                let (engine, storage) = (Arc::clone(&self.engine), self.storage.clone());
                let (id, cluster) = (self.id, self.cluster.clone());
                let view = blocking(move || {
                    super::snapshot::write(
                        std::path::Path::new(&dir),
                        &storage,
                        &*engine,
                        id,
                        &cluster,
                    )
                })
                .await?;
                Ok(Reply::Snapshot(view))
            }
            other => Err(Error::InvalidInput(format!(
                "{} is not an op run on nodes",
                other.name()
            ))),
        }
    }

    /// Whether an operator drained this node ([`Op::Drain`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn check_not_draining(&self) -> Result<()> {
        if !self.is_draining() {
            return Ok(());
        }
        Err(Error::Draining(self.id))
    }

    /// The engine's figures now, as `Flush` and `Compact` answer them.
    fn storage_view(&self) -> StorageView {
        let stats = self.engine.stats();
        StorageView {
            engine: self.engine_name.to_string(),
            memtable_bytes: stats.memtable_bytes,
            disk_bytes: stats.disk_bytes,
            flushes: stats.flushes,
            compactions: stats.compactions,
        }
    }

    /// [`Op::OnNodes`]: runs `op` here and on the other nodes named (every
    /// member that has not left when none are), at once, each within
    /// `timeout_ms`.
    async fn on_nodes(
        &self,
        nodes: Option<Vec<NodeId>>,
        op: Op,
        timeout_ms: Option<u64>,
    ) -> Result<Reply> {
        use crate::membership::MemberStatus;
        use crate::protocol::{ErrorCode, ErrorReply, NodeAnswer};
        let timeout =
            Duration::from_millis(timeout_ms.unwrap_or(crate::protocol::DEFAULT_ADMIN_TIMEOUT_MS));
        let members: BTreeMap<NodeId, MemberStatus> = self
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node, m.status))
            .collect();
        let targets: Vec<NodeId> = match nodes {
            Some(list) => {
                let mut list = list;
                list.sort();
                list.dedup();
                list
            }
            None => members
                .iter()
                .filter(|(_, s)| **s != MemberStatus::Left)
                .map(|(n, _)| *n)
                .chain(std::iter::once(self.id))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        let for_node = |node: NodeId| match &op {
            Op::Snapshot { dir } => Op::Snapshot {
                dir: std::path::Path::new(dir)
                    .join(format!("node-{}", node.0))
                    .display()
                    .to_string(),
            },
            other => other.clone(),
        };
        let asks = targets.into_iter().map(|node| {
            let op = for_node(node);
            let status = members.get(&node).copied();
            async move {
                let result: NodeResult = if node == self.id {
                    self.run_node_op(op).await.map_err(|e| ErrorReply::from(&e))
                } else {
                    match status {
                        None => Err(ErrorReply::new(
                            ErrorCode::InvalidArgument,
                            format!("{} does not know {node}", self.id),
                            false,
                        )),
                        Some(gone @ (MemberStatus::Down | MemberStatus::Left)) => {
                            let word = if gone == MemberStatus::Down {
                                "DOWN"
                            } else {
                                "LEFT"
                            };
                            Err(ErrorReply::new(
                                ErrorCode::Unavailable,
                                format!("{node} is {word} to {}: not asked", self.id),
                                true,
                            ))
                        }
                        Some(_) => self.ask_peer(node, op, timeout).await,
                    }
                };
                NodeAnswer { node, result }
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        Ok(Reply::Nodes { answers })
    }

    /// Asks `node` to run `op` and waits for its answer, at most `timeout`.
    async fn ask_peer(&self, node: NodeId, op: Op, timeout: Duration) -> NodeResult {
        use crate::protocol::{ErrorCode, ErrorReply};
        let (tx, rx) = oneshot::channel();
        let ask = AskPeer {
            to: node,
            op,
            timeout,
            reply: tx,
        };
        if self.fan_out.send(ask).await.is_err() {
            return Err(ErrorReply::from(&Error::Shutdown));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            _ => Err(ErrorReply::new(
                ErrorCode::Timeout,
                format!("{node} did not answer {} within {timeout:?}", self.id),
                true,
            )),
        }
    }

    /// This node's view of the cluster.
    pub async fn status(&self) -> Result<StatusView> {
        let members = self.members().await?;
        let phi = self.phi().await?;
        let stats = self.store_stats().await?;
        let in_flight = self.in_flight().await?;
        Ok(StatusView {
            node: self.id,
            cluster: self.cluster.clone(),
            members: members
                .into_iter()
                .map(|m| MemberView {
                    node: m.node,
                    addr: m.addr,
                    state: format!("{:?}", m.status),
                    phi: phi.get(&m.node).copied().unwrap_or(0.0),
                    incarnation: m.incarnation,
                })
                .collect(),
            keys: stats.objects,
            corruptions: stats.engine.corruptions,
            hints: stats.hints,
            in_flight: in_flight as u64,
            engine: self.engine_name.to_string(),
            transfers: self
                .transfers()
                .await?
                .iter()
                .map(crate::protocol::TransferView::from)
                .collect(),
            anti_entropy: self.anti_entropy_stats().await?,
            served: self
                .served_transfers()
                .await?
                .iter()
                .map(crate::protocol::ServedView::from)
                .collect(),
        })
    }

    /// [`Op::BlockOutbound`]: checks the permission and the list, then sets
    /// the transport's outbound blocks.
    fn block_outbound(&self, peers: Vec<NodeId>) -> Result<Reply> {
        if !self.allow_fault_injection {
            return Err(Error::InvalidInput(
                "fault injection is disabled on this node \
                 (start it with --allow-fault-injection)"
                    .into(),
            ));
        }
        if peers.len() > MAX_BLOCKED_PEERS {
            return Err(Error::InvalidInput(format!(
                "BlockOutbound names {} peers; at most {MAX_BLOCKED_PEERS}",
                peers.len()
            )));
        }
        if peers.contains(&self.id) {
            return Err(Error::InvalidInput(format!(
                "node {} cannot block itself",
                self.id
            )));
        }
        let peers: Vec<NodeId> = peers
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        self.transport.block_outbound(&peers)?;
        if peers.is_empty() {
            tracing::info!(node = %self.id, "fault injection: no peer blocked");
        } else {
            tracing::warn!(node = %self.id, ?peers, "fault injection: frames to these peers are dropped");
        }
        Ok(Reply::Blocked { peers })
    }

    /// Counts from this node's store (objects are counted by a scan that
    /// stops at [`STATUS_COUNT_CAP`]).
    pub async fn store_stats(&self) -> Result<StoreStats> {
        let mut stats = self
            .replica
            .send(GetStoreStats {
                count_cap: STATUS_COUNT_CAP,
            })
            .await
            .map_err(|_| Error::Shutdown)??;
        // The store is one: the other shards add only their service
        // counters.
        for shard in &self.shards[1..] {
            let other = shard
                .replica
                .send(GetStoreStats { count_cap: 0 })
                .await
                .map_err(|_| Error::Shutdown)??;
            stats.busy += other.busy;
            stats.served_in_place += other.served_in_place;
            stats.served_on_pool += other.served_on_pool;
        }
        Ok(stats)
    }

    /// This node's anti-entropy counters: rounds, ranges compared, leaves
    /// differing, objects repaired, tombstones purged, the last round.
    pub async fn anti_entropy_stats(&self) -> Result<AntiEntropyStats> {
        self.anti_entropy
            .send(GetAntiEntropyStats)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Starts an anti-entropy round now (or as soon as the running one
    /// ends), whatever the period; for tests and the shell. Returns once
    /// the request is queued, not when the round is done: watch
    /// [`Node::anti_entropy_stats`]'s `rounds`.
    pub async fn anti_entropy_now(&self) -> Result<()> {
        self.anti_entropy
            .send(RoundNow)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Compactions run by this node's Compactor.
    pub async fn compactor_stats(&self) -> Result<CompactorStats> {
        self.compactor
            .send(GetCompactorStats)
            .await
            .map_err(|_| Error::Shutdown)
    }
}

// Range transfers (`node::handoff`): passthroughs for the ring transition
// driver, the shell and tests.
impl Node {
    /// Starts (or resumes) pulling `spec.range` from `spec.sources` into
    /// this node. Idempotent for a known id; an id this process does not
    /// know resumes from its persisted cursors.
    pub async fn start_transfer(&self, spec: TransferSpec) -> Result<TransferProgress> {
        self.handoff
            .send(StartTransfer { spec })
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// Stops transfer `id` and forgets its cursors; whether it was known.
    pub async fn cancel_transfer(&self, id: u64) -> Result<bool> {
        self.handoff
            .send(CancelTransfer { id })
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Every incoming transfer this process knows, by id.
    pub async fn transfers(&self) -> Result<Vec<TransferProgress>> {
        self.handoff
            .send(GetTransfers)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// What this node served as a source, per receiver and transfer.
    pub async fn served_transfers(&self) -> Result<Vec<ServedStats>> {
        self.handoff
            .send(GetServed)
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Sends [`TransferDone`] to `listener` whenever a transfer finishes.
    pub fn set_transfer_listener(&self, listener: Recipient<TransferDone>) {
        self.handoff.do_send(SetTransferListener(listener));
    }

    /// Deletes this node's objects in `range`; how many. Only for a range
    /// whose new owners have confirmed they hold it.
    pub async fn drop_range(&self, range: TokenRange) -> Result<u64> {
        self.handoff
            .send(DropRange {
                range,
                keep_wide: None,
            })
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// This node's objects of `range` after the engine key `after`, up to
    /// about `max_bytes`: what it would send as a source.
    pub async fn read_range(
        &self,
        range: TokenRange,
        after: Option<Vec<u8>>,
        max_bytes: u64,
    ) -> Result<RangeBatch> {
        self.handoff
            .send(ReadRange {
                range,
                after,
                max_bytes,
            })
            .await
            .map_err(|_| Error::Shutdown)?
    }

    /// The handoff actor, for the ring transition driver.
    pub fn handoff(&self) -> &Addr<HandoffActor> {
        &self.handoff
    }
}

pub use crate::roles::client_ops::ring_view;

impl crate::protocol::Handler for Node {
    fn execute(&self, op: Op) -> BoxFuture<'static, Result<Reply>> {
        let node = self.clone();
        Box::pin(async move { Node::execute(&node, op).await })
    }

    fn execute_held(&self, op: Op) -> BoxFuture<'static, Result<(Reply, ReplyHold)>> {
        let node = self.clone();
        Box::pin(async move { Node::execute_held(&node, op).await })
    }
}
