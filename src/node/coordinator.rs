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
//! It follows the ring manager's ring snapshots and the failure detector's
//! events: SUSPECT, DOWN and LEFT nodes are routed around (with hints,
//! under sloppy quorum), an UP node gets its hints at the next round.
//!
//! A client request that finds `max_in_flight` requests already in flight
//! is refused with `QueueFull` (retryable), and after [`StopAccepting`]
//! every new one is refused with `Shutdown`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::SeedableRng;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::replica::{
    HintOwners, LocalRequest, ReadHints, RemoveHint, ReplicaActor, ReplicaAnswer, StoreMeta,
};
use super::transport::{Incoming, Outgoing, TransportActor};
use super::NodeEvent;
use crate::codec;
use crate::config::{BucketProps, ReplicaConfig};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::buckets::BucketTable;

use crate::replication::coordinator::{Answer, ClientOp, Coordinator, COORDINATOR_REQ_LIMIT};
use crate::replication::handoff::HintedHandoff;
use crate::replication::{Outbox, ReplicationMsg, Target};
use crate::version::Hlc;

/// How often request deadlines are checked: a request times out at most
/// this late.
pub const TICK: Duration = Duration::from_millis(10);

/// The metadata record holding the bucket table.
pub const BUCKETS_META: &str = "buckets";

/// The Coordinator actor's mailbox capacity. Client requests are sent with
/// `send`, which waits for room: a full mailbox slows clients down.
pub const MAILBOX: usize = 4096;

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
    pub reply: oneshot::Sender<Result<(Answer, BucketProps)>>,
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

struct Waiter {
    reply: oneshot::Sender<Result<(Answer, BucketProps)>>,
    bucket: Vec<u8>,
}

/// The actor. See the module documentation.
pub struct CoordinatorActor {
    node: NodeId,
    machine: Coordinator<Waiter>,
    handoff: HintedHandoff,
    transport: Addr<TransportActor>,
    replica: Addr<ReplicaActor>,
    events: Option<tokio::sync::mpsc::UnboundedReceiver<NodeEvent>>,
    config: ReplicaConfig,
    gossip_interval: Duration,
    rng: StdRng,
    accepting: bool,
    handoff_running: bool,
}

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
    /// Seeds the choice of gossip peers.
    pub rng_seed: u64,
    /// Clock skew bound for bucket stamps.
    pub max_clock_skew: Duration,
    /// The timestamps the node's replica is sent, for the clock to observe.
    pub witness: Arc<crate::version::Witness>,
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
        transport: Addr<TransportActor>,
        replica: Addr<ReplicaActor>,
    ) -> Self {
        let mut machine = Coordinator::new(
            parts.node,
            parts.bucket_defaults.clone(),
            Hlc::new(parts.max_clock_skew),
        );
        machine.merge_buckets(parts.buckets.entries());
        machine.set_witness(Arc::clone(&parts.witness));
        CoordinatorActor {
            node: parts.node,
            machine,
            handoff: HintedHandoff::new(
                COORDINATOR_REQ_LIMIT,
                parts.config.handoff_in_flight,
                parts.config.handoff_retry,
            ),
            transport,
            replica,
            events: Some(parts.events),
            config: parts.config,
            gossip_interval: parts.gossip_interval,
            rng: StdRng::seed_from_u64(parts.rng_seed),
            accepting: true,
            handoff_running: false,
        }
    }

    fn dispatch(&mut self, out: Outbox) {
        for (to, request) in out {
            if to == self.node {
                if let Err(e) = self.replica.try_send(LocalRequest(request)) {
                    debug!(error = %e, "local replica busy; request dropped as lost");
                }
            } else {
                let msg = WireMessage::Replication(ReplicationMsg::Replicate { request });
                self.transport
                    .do_send(Outgoing(Envelope::new(self.node, to, msg)));
            }
        }
    }

    fn finish(&mut self, done: Vec<(Waiter, Result<Answer>)>) {
        for (waiter, answer) in done {
            let answered = answer.map(|a| (a, self.machine.bucket(&waiter.bucket).clone()));
            // The client may have given up; nothing to do then.
            let _ = waiter.reply.send(answered);
        }
    }

    fn on_answer(
        &mut self,
        from: NodeId,
        reply: crate::replication::ReplicaReply,
        ctx: &mut Context<Self>,
    ) {
        if reply.req() >= COORDINATOR_REQ_LIMIT {
            if let Some(delivered) = self.handoff.step(from, reply) {
                let remove = RemoveHint {
                    owner: delivered.owner,
                    bucket: delivered.hint.bucket,
                    key: delivered.hint.key,
                    delivered: delivered.hint.object,
                };
                let replica = self.replica.clone();
                ctx.spawn(
                    async move {
                        match replica.send(remove).await {
                            Ok(Err(e)) => warn!(error = %e, "removing a delivered hint failed"),
                            Err(e) => debug!(error = %e, "replica gone"),
                            Ok(Ok(_)) => {}
                        }
                    }
                    .into_actor(self),
                );
            }
            return;
        }
        let mut out = Outbox::new();
        let done = self.machine.step(Instant::now(), from, reply, &mut out);
        self.dispatch(out);
        self.finish(done);
    }

    fn on_event(&mut self, event: NodeEvent) {
        match event {
            // Every new ring comes with its state, just after.
            NodeEvent::Ring(_) => {}
            NodeEvent::RingState(state) => self.machine.set_ring_state(state),
            NodeEvent::Member(event) => {
                self.machine.on_member_event(&event);
            }
        }
    }

    /// One round of hinted handoff: find owners, read their hints, offer.
    fn handoff_round(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let machine = &self.machine;
        self.handoff.tick(now, |n| machine.is_up_peer(n));
        if self.handoff_running {
            return;
        }
        self.handoff_running = true;
        let replica = self.replica.clone();
        let batch = self.config.handoff_batch;
        // Owners believed down now are not read for.
        let (me, down) = (self.node, self.machine.down().clone());
        let ready = async move {
            let owners = match replica.send(HintOwners).await {
                Ok(Ok(owners)) => owners,
                Ok(Err(e)) => {
                    warn!(error = %e, "reading hint owners failed");
                    return Vec::new();
                }
                Err(_) => return Vec::new(),
            };
            let mut found = Vec::new();
            for owner in owners {
                if owner == me || down.contains(&owner) {
                    continue;
                }
                match replica
                    .send(ReadHints {
                        owner,
                        limit: batch,
                    })
                    .await
                {
                    Ok(Ok(hints)) if !hints.is_empty() => found.push((owner, hints)),
                    Ok(Err(e)) => warn!(error = %e, %owner, "reading hints failed"),
                    _ => {}
                }
            }
            found
        };
        ctx.spawn(ready.into_actor(self).map(|found, act, _| {
            act.handoff_running = false;
            let mut out = Outbox::new();
            for (owner, hints) in found {
                if !act.machine.is_up_peer(owner) {
                    continue;
                }
                let machine = &act.machine;
                act.handoff.offer(
                    Instant::now(),
                    owner,
                    hints,
                    |b| machine.bucket(b).policy.clone(),
                    &mut out,
                );
            }
            act.dispatch(out);
        }));
    }

    fn peers(&self) -> Vec<NodeId> {
        self.machine
            .members()
            .into_iter()
            .filter(|&n| self.machine.is_up_peer(n))
            .collect()
    }

    fn send_buckets(&self, to: NodeId) {
        let msg = WireMessage::Replication(ReplicationMsg::Buckets {
            buckets: self.machine.buckets().entries(),
        });
        self.transport
            .do_send(Outgoing(Envelope::new(self.node, to, msg)));
    }

    fn persist_buckets(&self) -> ResponseFuture<Result<()>> {
        let encoded = codec::encode(&self.machine.buckets().entries());
        let replica = self.replica.clone();
        Box::pin(async move {
            let value = encoded?;
            replica
                .send(StoreMeta {
                    name: BUCKETS_META.into(),
                    value,
                })
                .await
                .map_err(|_| Error::Shutdown)?
        })
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
        ctx.run_interval(TICK, |act, _| {
            if act.machine.in_flight() == 0 {
                return;
            }
            let mut out = Outbox::new();
            let done = act.machine.tick(Instant::now(), &mut out);
            act.dispatch(out);
            act.finish(done);
        });
        ctx.run_interval(self.config.handoff_interval, |act, ctx| {
            act.handoff_round(ctx)
        });
        ctx.run_interval(self.gossip_interval, |act, _| {
            if act.machine.buckets().is_empty() {
                return;
            }
            let peers = act.peers();
            if let Some(&peer) = peers.iter().choose(&mut act.rng) {
                act.send_buckets(peer);
            }
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

    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) {
        if !self.accepting {
            let _ = msg.reply.send(Err(Error::Shutdown));
            return;
        }
        if self.machine.in_flight() >= self.config.max_in_flight {
            let _ = msg.reply.send(Err(Error::QueueFull {
                peer: self.node,
                capacity: self.config.max_in_flight,
            }));
            return;
        }
        let bucket = match &msg.op {
            ClientOp::Get { bucket, .. }
            | ClientOp::Put { bucket, .. }
            | ClientOp::Update { bucket, .. } => bucket.clone(),
        };
        let waiter = Waiter {
            reply: msg.reply,
            bucket,
        };
        let mut out = Outbox::new();
        let done = self
            .machine
            .start(Instant::now(), wall_ms(), waiter, msg.op, &mut out);
        self.dispatch(out);
        if let Some(done) = done {
            self.finish(vec![done]);
        }
    }
}

impl Handler<Incoming> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        match envelope.msg {
            WireMessage::Replication(ReplicationMsg::Replicated { reply }) => {
                self.on_answer(envelope.from, reply, ctx)
            }
            WireMessage::Replication(ReplicationMsg::Buckets { buckets }) => {
                if !self.machine.merge_buckets(buckets).is_empty() {
                    let save = self.persist_buckets();
                    ctx.spawn(
                        async move {
                            if let Err(e) = save.await {
                                warn!(error = %e, "persisting the bucket table failed");
                            }
                        }
                        .into_actor(self),
                    );
                }
            }
            other => debug!(kind = other.kind(), "coordinator: unexpected message"),
        }
    }
}

impl Handler<ReplicaAnswer> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, msg: ReplicaAnswer, ctx: &mut Context<Self>) {
        self.on_answer(msg.from, msg.reply, ctx);
    }
}

impl Handler<SetBucket> for CoordinatorActor {
    type Result = ResponseActFuture<Self, Result<BucketProps>>;

    fn handle(&mut self, msg: SetBucket, _: &mut Context<Self>) -> Self::Result {
        let entry = match self.machine.set_bucket(msg.bucket, msg.props, wall_ms()) {
            Ok(entry) => entry,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let save = self.persist_buckets();
        Box::pin(save.into_actor(self).map(move |saved, act, _| {
            saved?;
            for peer in act.peers() {
                act.send_buckets(peer);
            }
            Ok(entry.props)
        }))
    }
}

impl Handler<GetBucket> for CoordinatorActor {
    type Result = MessageResult<GetBucket>;

    fn handle(&mut self, GetBucket(bucket): GetBucket, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.bucket(&bucket).clone())
    }
}

impl Handler<GetTargets> for CoordinatorActor {
    type Result = MessageResult<GetTargets>;

    fn handle(&mut self, m: GetTargets, _: &mut Context<Self>) -> Self::Result {
        // Where a write goes now: the primaries that are up and, for each
        // down one, the fallback that gets its hint (whether or not the
        // bucket lets fallbacks count towards w).
        MessageResult(self.machine.targets(&m.bucket, &m.key, true))
    }
}

impl Handler<RingEpoch> for CoordinatorActor {
    type Result = u64;

    fn handle(&mut self, _: RingEpoch, _: &mut Context<Self>) -> u64 {
        self.machine.ring().epoch()
    }
}

impl Handler<InFlight> for CoordinatorActor {
    type Result = usize;

    fn handle(&mut self, _: InFlight, _: &mut Context<Self>) -> usize {
        self.machine.in_flight()
    }
}

impl Handler<StopAccepting> for CoordinatorActor {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, _: &mut Context<Self>) {
        self.accepting = false;
    }
}
