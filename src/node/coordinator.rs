//! The Coordinator actor: every client request this node coordinates, the
//! hints it hands off, and the bucket table.
//!
//! It owns two machines and only carries their messages:
//!
//! - the [`Coordinator`] (one put or get machine per client request, the
//!   routing view and the [`BucketTable`]): fed client operations, replica
//!   replies and a tick every [`TICK`]; its outbox goes to the local Replica
//!   actor (requests to this node) or to the transport (requests to other
//!   nodes);
//! - [`HintedHandoff`]: every `handoff_interval` it asks the Replica actor
//!   which owners it holds hints for, reads a batch for each owner that is
//!   up, and offers it to the machine; replies with request ids at or above
//!   [`COORDINATOR_REQ_LIMIT`] are the handoff's, and each delivered hint is
//!   removed from the store;
//!
//! The bucket table is set by clients through any node, persisted in the
//! store before the setting is acknowledged, pushed to every node at once
//! and gossiped to a random node every gossip interval.
//!
//! It routes by the ring manager's newest ring state, read from its watch
//! before each request ([`CoordinatorParts::ring`]), and follows the
//! failure detector's events: SUSPECT, DOWN and LEFT nodes are routed around (with hints,
//! under sloppy quorum), an UP node gets its hints at the next round.
//!
//! A client request that finds `max_in_flight` requests already in flight
//! is refused with `QueueFull` (retryable), and after [`StopAccepting`]
//! every new one is refused with `Shutdown`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::replica::{LocalRequest, ReplicaActor, ReplicaAnswer};
use super::transport::{Incoming, PeerSender};
use super::NodeEvent;
use crate::config::{BucketProps, ReplicaConfig};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::protocol::ReplyHold;
use crate::replication::buckets::{BucketEntry, BucketTable};
use crate::replication::coordinator::{Answer, ClientOp};
use crate::replication::replica::ReplicaStore;
use crate::replication::ReplicationMsg;
use crate::replication::Target;
use crate::ring::RingState;
use crate::roles::coordinator::{
    execute, save_buckets, Answered, CoordinatorRole, Effect, RoleParts, ScanOp,
};

/// How often request deadlines are checked: a request times out at most
/// this late.
pub const TICK: Duration = Duration::from_millis(10);

pub use crate::roles::stored_buckets::BUCKETS_META;

/// The Coordinator actor's mailbox capacity. Client requests are put in
/// it without waiting (`Node::execute`); one that finds it full is refused
/// with `QueueFull` (retryable, not applied).
pub const MAILBOX: usize = 4096;

/// What a client's operation comes to: its answer, the bucket's
/// properties to read it under, and the read budget the answer holds
/// until the caller drops it (see [`ReplyHold`]).
pub type Outcome = Result<(Answer, BucketProps, ReplyHold)>;

/// A client's data operation. Answered through `reply`, with the bucket's
/// properties to read the answer under: the caller turns it into a reply
/// (resolving siblings, perhaps by a script) on its own task, off the
/// node's event loop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    /// The operation.
    pub op: ClientOp,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// A client's scan page; answered like [`Execute`], with
/// [`Answer::Scanned`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExecuteScan {
    /// The page.
    pub op: ScanOp,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Outcome>,
}

/// Sets a bucket's properties cluster-wide.
#[derive(Message)]
#[rtype(result = "Result<BucketProps>")]
pub struct SetBucket {
    /// The bucket.
    pub bucket: Vec<u8>,
    /// Its properties.
    pub props: BucketProps,
}

/// A bucket's properties (the defaults if never set).
#[derive(Message)]
#[rtype(result = "BucketProps")]
pub struct GetBucket(pub Vec<u8>);

/// The nodes a write of `bucket`/`key` goes to now: the primaries that
/// are up, and a fallback for each one that is down.
#[derive(Message)]
#[rtype(result = "Vec<Target>")]
pub struct GetTargets {
    /// The bucket.
    pub bucket: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
}

/// The epoch of the ring the coordinator routes by.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct RingEpoch;

/// Client requests in flight.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct InFlight;

/// Refuse new client requests from now on (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAccepting;

/// Merges bucket entries into a non-lead shard's table: the lead
/// coordinator sends its table to the node's other shards whenever it may
/// have changed (a client set a bucket through this node, or a peer's
/// table arrived), so every shard routes under the same properties.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptBuckets(pub Vec<BucketEntry>);

/// The node's other shards' coordinators, for the lead to keep their
/// bucket tables (see [`AdoptBuckets`]) and to pass [`StopAccepting`] on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetSiblings(pub Vec<Addr<CoordinatorActor>>);

struct Waiter {
    reply: oneshot::Sender<Outcome>,
    bucket: Vec<u8>,
    /// The read budget held by the answers of this node's replica.
    hold: ReplyHold,
}

/// The actor. See the module documentation.
pub struct CoordinatorActor {
    node: NodeId,
    role: CoordinatorRole<Waiter>,
    store: Arc<ReplicaStore>,
    transport: PeerSender,
    replica: Addr<ReplicaActor>,
    events: Option<tokio::sync::mpsc::UnboundedReceiver<NodeEvent>>,
    /// The ring manager's newest ring state.
    ring: tokio::sync::watch::Receiver<Arc<RingState>>,
    /// Hints delivered (acknowledged by their owner) since the last log
    /// line, per owner: logged at INFO at most every [`HINT_LOG_EVERY`].
    delivered: BTreeMap<NodeId, u64>,
    /// The lead's: the other shards' coordinators ([`SetSiblings`]).
    siblings: Vec<Addr<CoordinatorActor>>,
}

/// How often the hints delivered are summed up in the log.
const HINT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the Coordinator actor starts from.
pub struct CoordinatorParts {
    /// This node.
    pub node: NodeId,
    /// Properties of buckets never set.
    pub bucket_defaults: BucketProps,
    /// The bucket table restored from the store.
    pub buckets: BucketTable,
    /// Handoff and limits.
    pub config: ReplicaConfig,
    /// The membership gossip interval (bucket gossip uses it too).
    pub gossip_interval: Duration,
    /// Node events: rings and membership.
    pub events: tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
    /// The ring manager's newest ring state ([`super::RingManager::ring_watch`]),
    /// read before routing: the ring states of `events` only say when to
    /// look.
    pub ring: tokio::sync::watch::Receiver<Arc<RingState>>,
    /// Seeds the choice of gossip peers.
    pub rng_seed: u64,
    /// Clock skew bound for bucket stamps.
    pub max_clock_skew: Duration,
    /// The node's store: hints are read from it and removed, and the
    /// bucket table saved in it, on the blocking pool; the timestamps its
    /// replica is sent are observed by the clock.
    pub store: Arc<ReplicaStore>,
    /// Which data shard of the node this coordinator is (0, the lead, for
    /// a node of one shard), and of how many.
    pub shard: (usize, usize),
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl CoordinatorActor {
    /// Builds the actor.
    pub fn new(
        parts: CoordinatorParts,
        transport: PeerSender,
        replica: Addr<ReplicaActor>,
    ) -> Self {
        let mut role = CoordinatorRole::new(
            RoleParts {
                node: parts.node,
                bucket_defaults: parts.bucket_defaults,
                buckets: parts.buckets.entries(),
                config: parts.config,
                gossip_interval: parts.gossip_interval,
                rng_seed: parts.rng_seed,
                max_clock_skew: parts.max_clock_skew,
                wall_ms: wall_ms(),
            },
            Instant::now(),
        );
        role.machine_mut().set_witness(parts.store.witness());
        role.set_shard(parts.shard.0, parts.shard.1);
        let mut ring = parts.ring;
        role.set_ring_state(Arc::clone(&ring.borrow_and_update()));
        CoordinatorActor {
            node: parts.node,
            role,
            store: parts.store,
            transport,
            replica,
            events: Some(parts.events),
            ring,
            delivered: BTreeMap::new(),
            siblings: Vec::new(),
        }
    }

    /// The bucket table, for the node's other shards (none unless this is
    /// the lead of several).
    fn share_buckets(&self) -> Vec<Request<CoordinatorActor, AdoptBuckets>> {
        if self.siblings.is_empty() {
            return Vec::new();
        }
        let entries = self.role.machine().buckets().entries();
        self.siblings
            .iter()
            .map(|s| s.send(AdoptBuckets(entries.clone())))
            .collect()
    }

    /// Carries out the role's effects.
    fn carry(&mut self, out: Vec<Effect<Waiter>>, ctx: &mut Context<Self>) {
        for effect in out {
            match effect {
                Effect::Send { to, msg } => self.send(to, msg),
                Effect::Emit(Answered(waiter, answer)) => {
                    let props = || self.role.machine().bucket(&waiter.bucket).clone();
                    let answered = answer.map(|a| (a, props(), waiter.hold));
                    // The client may have given up; nothing to do then.
                    let _ = waiter.reply.send(answered);
                }
                Effect::Store(work) => {
                    if let crate::roles::coordinator::StoreWork::RemoveHint { owner, .. } = &work {
                        *self.delivered.entry(*owner).or_default() += 1;
                    }
                    let (store, node) = (Arc::clone(&self.store), self.node);
                    let run = tokio::task::spawn_blocking(move || execute(&store, node, work));
                    ctx.spawn(run.into_actor(self).map(|done, act, ctx| match done {
                        Ok(Some(stored)) => {
                            let mut out = Vec::new();
                            act.role.on_stored(Instant::now(), stored, &mut out);
                            act.carry(out, ctx);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            crate::log::warn_every!(error = %e, "coordinator storage work failed to run")
                        }
                    }));
                }
            }
        }
    }

    /// A message to `to`: this node's replica by message, others through
    /// the transport.
    fn send(&self, to: NodeId, msg: ReplicationMsg) {
        if to == self.node {
            if let ReplicationMsg::Replicate { request, fence } = msg {
                if let Err(e) = self.replica.try_send(LocalRequest(request, fence)) {
                    debug!(error = %e, "local replica busy; request dropped as lost");
                }
            }
            return;
        }
        self.transport
            .send(Envelope::new(self.node, to, WireMessage::Replication(msg)));
    }

    fn on_event(&mut self, event: NodeEvent) {
        match event {
            // Every new ring comes with its state, just after.
            NodeEvent::Ring(_) => {}
            // The newest, which may be newer than the event's: states only
            // move forward here, whichever way they arrive.
            NodeEvent::RingState(_) => self.catch_up_ring(),
            NodeEvent::Member(event) => self.role.on_member_event(&event),
        }
    }

    /// Routes by the ring manager's newest ring state from now on, if it
    /// has a newer one than this coordinator (see [`CoordinatorParts::ring`]).
    /// A read of an atomic counter when it has not.
    fn catch_up_ring(&mut self) {
        if self.ring.has_changed().unwrap_or(false) {
            let state = Arc::clone(&self.ring.borrow_and_update());
            self.role.set_ring_state(state);
        }
    }
}

impl Actor for CoordinatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        if let Some(events) = self.events.take() {
            let stream = futures_util::stream::unfold(events, |mut rx| async move {
                rx.recv().await.map(|e| (e, rx))
            });
            ctx.add_stream(stream);
        }
        ctx.run_interval(HINT_LOG_EVERY, |act, _| {
            if act.delivered.is_empty() {
                return;
            }
            let delivered = std::mem::take(&mut act.delivered);
            let total: u64 = delivered.values().sum();
            let owners: Vec<String> = delivered.iter().map(|(n, k)| format!("{n}:{k}")).collect();
            info!(
                node = %act.node,
                delivered = total,
                owners = %owners.join(","),
                "hinted handoff: {total} hints delivered to their owners"
            );
        });
        ctx.run_interval(TICK, |act, ctx| {
            let now = Instant::now();
            if now < act.role.next_wakeup() {
                return;
            }
            let mut out = Vec::new();
            act.role.tick(now, &mut out);
            act.carry(out, ctx);
        });
    }
}

impl StreamHandler<NodeEvent> for CoordinatorActor {
    fn handle(&mut self, event: NodeEvent, _: &mut Context<Self>) {
        self.on_event(event);
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The ring manager and failure detector are gone: the node is
        // stopping. Keep serving what is in flight until the arbiter stops.
    }
}

impl Handler<Execute> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        self.catch_up_ring();
        let bucket = match &msg.op {
            ClientOp::Get { bucket, .. }
            | ClientOp::Put { bucket, .. }
            | ClientOp::Update { bucket, .. } => bucket.clone(),
        };
        let waiter = Waiter {
            reply: msg.reply,
            bucket,
            hold: ReplyHold::default(),
        };
        let mut out = Vec::new();
        self.role
            .start(Instant::now(), wall_ms(), waiter, msg.op, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<ExecuteScan> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: ExecuteScan, ctx: &mut Context<Self>) {
        self.catch_up_ring();
        let waiter = Waiter {
            reply: msg.reply,
            bucket: msg.op.bucket.clone(),
            hold: ReplyHold::default(),
        };
        let mut out = Vec::new();
        self.role
            .start_scan(Instant::now(), waiter, msg.op, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<Incoming> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        let kind = envelope.msg.kind();
        let buckets = matches!(
            envelope.msg,
            WireMessage::Replication(ReplicationMsg::Buckets { .. })
        );
        let mut out = Vec::new();
        let handled = match envelope.msg {
            WireMessage::Replication(msg) => {
                self.role
                    .on_message(Instant::now(), envelope.from, msg, &mut out)
            }
            _ => false,
        };
        if !handled {
            debug!(kind, "coordinator: unexpected message");
        }
        if buckets {
            // Merges are idempotent: the whole table, changed or not.
            if !self.siblings.is_empty() {
                let entries = self.role.machine().buckets().entries();
                for sibling in &self.siblings {
                    sibling.do_send(AdoptBuckets(entries.clone()));
                }
            }
        }
        self.carry(out, ctx);
    }
}

impl Handler<ReplicaAnswer> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaAnswer, ctx: &mut Context<Self>) {
        // A large read's hold goes with its request's answer to the client
        // (dropped here, giving the bytes back, if that was answered).
        if let Some(hold) = msg.hold {
            if let Some(waiter) = self.role.machine_mut().caller_mut(msg.reply.req()) {
                waiter.hold.add(hold);
            }
        }
        let mut out = Vec::new();
        self.role
            .on_reply(Instant::now(), msg.from, msg.reply, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<SetBucket> for CoordinatorActor {
    type Result = ResponseActFuture<Self, Result<BucketProps>>;

    fn handle(&mut self, msg: SetBucket, _: &mut Context<Self>) -> Self::Result {
        // Checked and saved before anything changes: a refused or unsaved
        // change is in no table, here or (since nothing is pushed) anywhere.
        let prepared = self
            .role
            .machine_mut()
            .prepare_bucket(msg.bucket, msg.props, wall_ms());
        let (entry, entries) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let store = Arc::clone(&self.store);
        let saved_table = entries.clone();
        let save = async move {
            tokio::task::spawn_blocking(move || save_buckets(&store, &entries))
                .await
                .map_err(|_| Error::Shutdown)?
        };
        Box::pin(
            save.into_actor(self)
                .map(move |saved, act, ctx| {
                    saved?;
                    act.role.machine_mut().commit_bucket(entry.clone());
                    // Another change committed while this one was saving is not in
                    // what was saved: then save the whole table again, in the
                    // background (a crash before that ends loses nothing gossip
                    // does not bring back: every change is pushed to the peers).
                    let now = act.role.machine().buckets().entries();
                    if now != saved_table {
                        let store = Arc::clone(&act.store);
                        actix::spawn(async move {
                            let _ = tokio::task::spawn_blocking(move || save_buckets(&store, &now))
                                .await;
                        });
                    }
                    let mut out = Vec::new();
                    act.role.push_buckets(&mut out);
                    act.carry(out, ctx);
                    Ok((entry.props, act.share_buckets()))
                })
                .then(|done, act, _| {
                    // Answered once every shard of this node has the change, so
                    // that the caller's next request here, whichever shard its key
                    // is on, runs under it.
                    async move {
                        let (props, shares) = done?;
                        for share in shares {
                            share.await.map_err(|_| Error::Shutdown)?;
                        }
                        Ok(props)
                    }
                    .into_actor(act)
                }),
        )
    }
}

impl Handler<GetBucket> for CoordinatorActor {
    type Result = MessageResult<GetBucket>;

    fn handle(&mut self, GetBucket(bucket): GetBucket, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.role.machine().bucket(&bucket).clone())
    }
}

impl Handler<GetTargets> for CoordinatorActor {
    type Result = MessageResult<GetTargets>;

    fn handle(&mut self, m: GetTargets, _: &mut Context<Self>) -> Self::Result {
        self.catch_up_ring();
        // Where a write goes now: the primaries that are up and, for each
        // down one, the fallback that gets its hint (whether or not the
        // bucket lets fallbacks count towards w).
        MessageResult(self.role.machine().targets(&m.bucket, &m.key, true))
    }
}

impl Handler<RingEpoch> for CoordinatorActor {
    type Result = u64;

    fn handle(&mut self, _: RingEpoch, _: &mut Context<Self>) -> u64 {
        self.catch_up_ring();
        self.role.machine().ring().epoch()
    }
}

impl Handler<InFlight> for CoordinatorActor {
    type Result = usize;

    fn handle(&mut self, _: InFlight, _: &mut Context<Self>) -> usize {
        self.role.in_flight()
    }
}

impl Handler<AdoptBuckets> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, AdoptBuckets(entries): AdoptBuckets, _: &mut Context<Self>) {
        self.role.machine_mut().merge_buckets(entries);
    }
}

impl Handler<SetSiblings> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, SetSiblings(siblings): SetSiblings, _: &mut Context<Self>) {
        self.siblings = siblings;
    }
}

impl Handler<StopAccepting> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, _: &mut Context<Self>) {
        self.role.stop_accepting();
        for sibling in &self.siblings {
            sibling.do_send(StopAccepting);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::memory::MemoryNetwork;
    use crate::net::MemoryNetConfig;
    use crate::ring::claim::claim_join;
    use crate::ring::Ring;
    use crate::storage::MemoryEngine;

    /// A coordinator routes by the ring manager's newest ring state as
    /// soon as the manager has it, before the state's event reaches it
    /// (none is sent here): the race that made a put right after a cluster
    /// formed meet only replicas fenced by a newer ring.
    #[test]
    fn a_coordinator_routes_by_the_newest_ring_before_its_event_arrives() {
        actix::System::new().block_on(async {
            let me = NodeId(1);
            let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
            let (endpoint, _inbox) = network.endpoint(me).unwrap();
            let transport: Arc<dyn crate::net::Transport> = Arc::new(endpoint);
            let store =
                Arc::new(ReplicaStore::open(me, Arc::new(MemoryEngine::new()), 10, 100).unwrap());
            let replica = ReplicaActor::new(
                me,
                Arc::clone(&store),
                PeerSender::new(transport.clone()),
                4,
                1 << 20,
            )
            .start();
            let alone = claim_join(&Ring::empty(), me, 16).unwrap();
            let mut three = alone.clone();
            for n in [2, 3] {
                three = claim_join(&three, NodeId(n), 16).unwrap();
            }
            assert!(three.epoch() > alone.epoch());
            let (latest, ring) =
                tokio::sync::watch::channel(Arc::new(RingState::settled(alone.clone())));
            // The event stream stays open and silent throughout.
            let (_events_tx, events) = tokio::sync::mpsc::unbounded_channel();
            let parts = CoordinatorParts {
                node: me,
                bucket_defaults: BucketProps::default(),
                buckets: BucketTable::new(),
                config: ReplicaConfig::default(),
                gossip_interval: Duration::from_secs(1),
                events,
                ring,
                rng_seed: 7,
                max_clock_skew: Duration::from_secs(1),
                store,
                shard: (0, 1),
            };
            let coordinator =
                CoordinatorActor::new(parts, PeerSender::new(transport), replica).start();
            let targets = |c: &Addr<CoordinatorActor>| {
                c.send(GetTargets {
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                })
            };
            assert_eq!(coordinator.send(RingEpoch).await.unwrap(), alone.epoch());
            let nodes: Vec<NodeId> = targets(&coordinator)
                .await
                .unwrap()
                .iter()
                .map(|t| t.node)
                .collect();
            assert_eq!(nodes, vec![me]);

            latest.send_replace(Arc::new(RingState::settled(three.clone())));
            assert_eq!(coordinator.send(RingEpoch).await.unwrap(), three.epoch());
            let mut nodes: Vec<NodeId> = targets(&coordinator)
                .await
                .unwrap()
                .iter()
                .map(|t| t.node)
                .collect();
            nodes.sort();
            assert_eq!(nodes, vec![NodeId(1), NodeId(2), NodeId(3)]);
        });
    }
}
