//! The RingManager actor: carries this node's [`RingRole`] (the ring
//! keeper, the rebalancer, the saving of ring states, the ring-confirmed
//! gate and the graceful leave; see `roles::ring`).
//!
//! It ticks the role every gossip interval, and earlier when the role asks
//! ([`RingRole::next_wakeup`]: a leave's timeout or linger); feeds it ring
//! messages from the transport, membership events from the failure
//! detector, finished transfers ([`TransferDone`]) from the handoff actor,
//! and the admin's decommission, leave and removal. It carries out the
//! role's effects and decides nothing itself:
//!
//! - messages go to the transport;
//! - [`RingWork`] (saving the newest ring state under [`RING_META`]) runs
//!   on the blocking pool, and its result goes back to the role;
//! - every new ring and ring state is published to subscribers as an
//!   immutable `Arc` snapshot;
//! - handoff commands go to the handoff actor, in order, as [`Planned`];
//! - the ring-confirmed gate is kept in an [`AtomicBool`] for the node's
//!   entry point;
//! - a leave's announcement tells the failure detector to gossip LEFT
//!   ([`Leave`]), and its end answers every [`LeaveRing`] waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::coordinator::StopAccepting;
use super::failure_detector::{Leave, MemberNotice, Subscribe};
use super::handoff::{
    HandoffActor, Planned, SetFailureListener, SetTransferListener, TransferDone, TransferFailed,
};
use super::transport::{Incoming, Outgoing, TransportActor};
use super::{publish, NodeEvent, Subscriber};
use crate::effect::Effect;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::replica::ReplicaStore;
use crate::ring::{Change, Ring, RingState};
use crate::roles::ring::{execute, HandoffCommand, RingEffect, RingOutput, RingRole, RingWork};

pub use crate::roles::ring::RING_META;

/// Asks for the current ring.
#[derive(Message)]
#[rtype(result = "Arc<Ring>")]
pub struct GetRing;

/// Asks for the whole ring state (the ring in force and the change in
/// progress).
#[derive(Message)]
#[rtype(result = "Arc<RingState>")]
pub struct GetRingState;

/// Begins removing a member gone for good (see `RingKeeper::remove`).
#[derive(Message)]
#[rtype(result = "crate::error::Result<()>")]
pub struct RemoveNode(pub NodeId);

/// Begins giving this node's tokens away; the node keeps running (see
/// [`RingRole::decommission`]). Answers once the leave's intent is stored,
/// so a node that crashes after the answer comes back leaving.
#[derive(Message)]
#[rtype(result = "crate::error::Result<()>")]
pub struct Decommission;

/// Leaves gracefully (see [`RingRole::leave`]): answers once the leave is
/// finished and the node may stop, with whether its ranges moved (false
/// when the leave timed out). Fails with `Shutdown` if the actor stops
/// first.
#[derive(Message)]
#[rtype(result = "crate::error::Result<bool>")]
pub struct LeaveRing;

/// Gives the ring manager the handoff actor that carries out transfers
/// (started after it); until then no transfer starts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetHandoff(pub Addr<HandoffActor>);

/// Gives the ring manager the failure detector (started after it), which
/// gossips LEFT when a leave is announced.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFailureDetector(pub Recipient<Leave>);

/// Gives the ring manager the coordinator, which stops taking client
/// requests once this node announces LEFT: its ring no longer gets gossip
/// from then on, so it must not route requests by it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCoordinatorStop(pub Recipient<StopAccepting>);

/// The actor. See the module documentation.
pub struct RingManager {
    role: RingRole,
    interval: Duration,
    transport: Addr<TransportActor>,
    handoff: Option<Addr<HandoffActor>>,
    failure_detector: Option<Recipient<Leave>>,
    coordinator: Option<Recipient<StopAccepting>>,
    subscribers: Vec<Subscriber>,
    /// The newest ring state, for the coordinators to route by at once
    /// (see [`RingManager::ring_watch`]).
    latest: tokio::sync::watch::Sender<Arc<crate::ring::RingState>>,
    /// Where ring states are stored.
    store: Arc<ReplicaStore>,
    /// Whether the ring may route requests, for the node's entry point.
    confirmed: Arc<AtomicBool>,
    /// Callers of [`LeaveRing`] waiting for the leave to finish.
    leave_waiters: Vec<oneshot::Sender<bool>>,
    /// Callers of [`Decommission`] waiting for the intent to be stored.
    intent_waiters: Vec<oneshot::Sender<Result<()>>>,
    /// Whether the leave's intent is being stored.
    storing_intent: bool,
    /// The early tick asked for by the role, if one is scheduled: when,
    /// and its timer.
    wakeup: Option<(Instant, SpawnHandle)>,
    /// What the ring log has said last (see [`RingLog`]).
    log: RingLog,
}

/// The ring's story in the log, at INFO with structured fields: a change
/// that begins (what, the epochs, how many range moves), its progress at
/// each quarter of its moves, a ring coming into force, and a change that
/// ended without coming into force (replaced, or abandoned).
#[derive(Default)]
struct RingLog {
    /// The change last seen pending: what, its target epoch, its moves,
    /// and the last quarter of them logged as done.
    pending: Option<(Change, u64, usize, usize)>,
    /// The epoch of the ring last logged in force.
    epoch: Option<u64>,
}

impl RingLog {
    fn state(&mut self, me: NodeId, state: &RingState) {
        let now = state.pending.as_ref().map(|p| (p.change, p.target.epoch()));
        if let Some((change, target, moves, _)) = self.pending {
            let same = now == Some((change, target));
            let in_force = state.ring.epoch() >= target;
            if !same && !in_force {
                info!(
                    node = %me,
                    change = %change_text(change),
                    target_epoch = target,
                    moves,
                    "ring: the {} ended without coming into force (replaced or abandoned)",
                    change_text(change)
                );
            }
            if !same {
                self.pending = None;
            }
        }
        if let Some(p) = &state.pending {
            let total = p.moves(&state.ring).len();
            let done = p.done.len();
            match &mut self.pending {
                None => {
                    info!(
                        node = %me,
                        change = %change_text(p.change),
                        from_epoch = state.ring.epoch(),
                        target_epoch = p.target.epoch(),
                        moves = total,
                        "ring: the {} began ({total} range moves)",
                        change_text(p.change)
                    );
                    self.pending = Some((p.change, p.target.epoch(), total, 0));
                }
                Some((change, _, total, logged)) => {
                    let quarter = (done * 4).checked_div(*total).unwrap_or(0);
                    if quarter > *logged && quarter < 4 {
                        *logged = quarter;
                        info!(
                            node = %me,
                            change = %change_text(*change),
                            done,
                            moves = *total,
                            "ring: the {}: {done} of {total} range moves done",
                            change_text(*change)
                        );
                    }
                }
            }
        }
        let epoch = state.ring.epoch();
        if self.epoch.is_some_and(|e| e < epoch) || (self.epoch.is_none() && epoch > 0) {
            let nodes: Vec<String> = state.ring.members().iter().map(|n| n.to_string()).collect();
            info!(
                node = %me,
                epoch,
                nodes = %nodes.join(","),
                "ring: epoch {epoch} in force, {} nodes",
                nodes.len()
            );
        }
        self.epoch = Some(epoch);
    }
}

/// A change as the log says it: "join of n4".
fn change_text(change: Change) -> String {
    match change {
        Change::Join(n) => format!("join of {n}"),
        Change::Leave(n) => format!("leave of {n}"),
        Change::Remove(n) => format!("removal of {n}"),
    }
}

impl RingManager {
    /// Carries `role`, ticking it every `interval`, sending through
    /// `transport` and storing ring states in `store`.
    pub fn new(
        role: RingRole,
        interval: Duration,
        transport: Addr<TransportActor>,
        store: Arc<ReplicaStore>,
    ) -> Self {
        let confirmed = Arc::new(AtomicBool::new(role.ring_confirmed()));
        // The state the node starts on (as stored, or formed) fences the
        // replica before the node serves anything.
        store.set_fence(role.state().fence());
        let (latest, _) = tokio::sync::watch::channel(Arc::clone(role.state()));
        RingManager {
            role,
            interval,
            transport,
            handoff: None,
            failure_detector: None,
            coordinator: None,
            subscribers: Vec::new(),
            latest,
            store,
            confirmed,
            leave_waiters: Vec::new(),
            intent_waiters: Vec::new(),
            storing_intent: false,
            log: RingLog::default(),
            wakeup: None,
        }
    }

    /// The flag that tells whether this node's ring may route requests,
    /// kept up to date by the actor.
    pub fn confirmed_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.confirmed)
    }

    /// The newest ring state, updated as soon as this manager has it,
    /// before its event reaches any subscriber. A coordinator reads it
    /// before routing a request: an actor hears its event stream only
    /// after the messages already in its mailbox, so by events alone a
    /// request could be routed by the ring before, and a replica fenced by
    /// the new one would refuse it (a put answered `Unavailable` right
    /// after a cluster formed, under load).
    pub fn ring_watch(&self) -> tokio::sync::watch::Receiver<Arc<crate::ring::RingState>> {
        self.latest.subscribe()
    }

    /// Carries out the role's effects, then schedules the early tick it
    /// asks for, if any.
    fn carry(&mut self, out: Vec<RingEffect>, ctx: &mut Context<Self>) {
        let me = self.role.me();
        for effect in out {
            match effect {
                Effect::Send { to, msg } => {
                    let envelope = Envelope::new(me, to, WireMessage::Ring(msg));
                    self.transport.do_send(Outgoing(envelope));
                }
                Effect::Store(work) => self.store(work, ctx),
                Effect::Emit(output) => self.emit(output),
            }
        }
        self.schedule_wakeup(ctx);
    }

    /// Runs storage work on the blocking pool; its result goes back to the
    /// role.
    fn store(&mut self, work: RingWork, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        if matches!(work, RingWork::Leaving) {
            self.storing_intent = true;
        }
        let what = work.clone();
        let run = tokio::task::spawn_blocking(move || execute(&store, work));
        ctx.spawn(run.into_actor(self).map(move |done, act, ctx| {
            let result =
                done.unwrap_or_else(|e| Err(Error::Replica(format!("store task failed: {e}"))));
            if matches!(what, RingWork::Leaving) {
                act.storing_intent = false;
                for waiter in act.intent_waiters.drain(..) {
                    let answer = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(Error::StorageFailed {
                            reason: format!("storing the leave's intent: {e}"),
                        }),
                    };
                    // A caller that gave up needs no answer.
                    let _ = waiter.send(answer);
                }
            }
            let mut out = Vec::new();
            act.role.finished(Instant::now(), &what, result, &mut out);
            act.carry(out, ctx);
        }));
    }

    fn emit(&mut self, output: RingOutput) {
        match output {
            RingOutput::Ring(ring) => publish(&mut self.subscribers, NodeEvent::Ring(ring)),
            RingOutput::State(state) => {
                self.log.state(self.role.me(), &state);
                // Before any role acts on the state: from here on the
                // replica refuses requests routed by an older one, and a
                // move this node serves is scanned after every request it
                // admitted under the old fence is stored.
                self.store.set_fence(state.fence());
                self.latest.send_replace(Arc::clone(&state));
                publish(&mut self.subscribers, NodeEvent::RingState(state))
            }
            RingOutput::Handoff(command) => self.handoff(command),
            RingOutput::Confirmed(confirmed) => self.confirmed.store(confirmed, Ordering::Release),
            RingOutput::AnnounceLeft => {
                // Peers stop gossiping rings to a LEFT node: it must not
                // coordinate by a ring that no longer changes with theirs.
                if let Some(coordinator) = &self.coordinator {
                    coordinator.do_send(StopAccepting);
                }
                match &self.failure_detector {
                    Some(fd) => fd.do_send(Leave),
                    None => warn!("no failure detector to announce this node LEFT"),
                }
            }
            RingOutput::Left { moved } => {
                for waiter in self.leave_waiters.drain(..) {
                    // A caller that gave up needs no answer.
                    let _ = waiter.send(moved);
                }
            }
        }
    }

    /// Hands a command to the handoff actor.
    fn handoff(&mut self, command: HandoffCommand) {
        let Some(handoff) = &self.handoff else {
            warn!(?command, "no handoff actor for a handoff command");
            return;
        };
        // Through the mailbox at once, so the handoff actor sees the
        // commands in the order the role gave them. A start that fails
        // (its record could not be read) comes back as [`TransferFailed`]:
        // the role forgets it and starts it again at the next plan.
        handoff.do_send(Planned(command));
    }

    /// Ticks the role now.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.role.tick(Instant::now(), &mut out);
        self.carry(out, ctx);
    }

    /// Schedules a tick at the role's next wakeup, unless one is scheduled
    /// already no later.
    fn schedule_wakeup(&mut self, ctx: &mut Context<Self>) {
        let Some(at) = self.role.next_wakeup() else {
            return;
        };
        if let Some((scheduled, handle)) = self.wakeup {
            if scheduled <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wakeup = None;
            act.tick(ctx);
        });
        self.wakeup = Some((at, handle));
    }
}

impl Actor for RingManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.role.start(Instant::now(), &mut out);
        self.carry(out, ctx);
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<SetHandoff> for RingManager {
    type Result = ();

    fn handle(&mut self, SetHandoff(handoff): SetHandoff, ctx: &mut Context<Self>) {
        handoff.do_send(SetTransferListener(ctx.address().recipient()));
        handoff.do_send(SetFailureListener(ctx.address().recipient()));
        self.handoff = Some(handoff);
        let mut out = Vec::new();
        self.role.handoff_ready(Instant::now(), &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<SetFailureDetector> for RingManager {
    type Result = ();

    fn handle(&mut self, SetFailureDetector(fd): SetFailureDetector, _: &mut Context<Self>) {
        self.failure_detector = Some(fd);
    }
}

impl Handler<TransferFailed> for RingManager {
    type Result = ();

    fn handle(&mut self, failed: TransferFailed, _: &mut Context<Self>) {
        if failed.started {
            crate::log::warn_every!(id = failed.id, why = %failed.why, "transfer failed; it starts again");
        } else {
            debug!(id = failed.id, why = %failed.why, "a transfer did not start; it starts again");
        }
        self.role.on_transfer_failed(failed.id);
    }
}

impl Handler<SetCoordinatorStop> for RingManager {
    type Result = ();

    fn handle(&mut self, SetCoordinatorStop(c): SetCoordinatorStop, _: &mut Context<Self>) {
        self.coordinator = Some(c);
    }
}

impl Handler<TransferDone> for RingManager {
    type Result = ();

    fn handle(&mut self, done: TransferDone, ctx: &mut Context<Self>) {
        debug!(
            id = done.id,
            keys = done.keys,
            bytes = done.bytes,
            "transfer done"
        );
        let mut out = Vec::new();
        self.role
            .on_transfer_done(Instant::now(), done.id, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<Incoming> for RingManager {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        // The transport routes only ring gossip here.
        let WireMessage::Ring(msg) = envelope.msg else {
            return;
        };
        let mut out = Vec::new();
        self.role.step(Instant::now(), envelope.from, msg, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<MemberNotice> for RingManager {
    type Result = ();

    fn handle(&mut self, MemberNotice(event): MemberNotice, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.role.on_member_event(Instant::now(), &event, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<Subscribe> for RingManager {
    type Result = ();

    fn handle(&mut self, Subscribe(subscriber): Subscribe, _: &mut Context<Self>) {
        let ring = NodeEvent::Ring(Arc::clone(self.role.ring()));
        let state = NodeEvent::RingState(Arc::clone(self.role.state()));
        if subscriber.send(ring).is_ok() && subscriber.send(state).is_ok() {
            self.subscribers.push(subscriber);
        }
    }
}

impl Handler<GetRing> for RingManager {
    type Result = MessageResult<GetRing>;

    fn handle(&mut self, _: GetRing, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Arc::clone(self.role.ring()))
    }
}

impl Handler<GetRingState> for RingManager {
    type Result = MessageResult<GetRingState>;

    fn handle(&mut self, _: GetRingState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Arc::clone(self.role.state()))
    }
}

impl Handler<RemoveNode> for RingManager {
    type Result = Result<()>;

    fn handle(&mut self, RemoveNode(node): RemoveNode, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        let result = self.role.remove(Instant::now(), node, &mut out);
        self.carry(out, ctx);
        result
    }
}

impl Handler<Decommission> for RingManager {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, _: Decommission, ctx: &mut Context<Self>) -> Self::Result {
        let mut out = Vec::new();
        self.role.decommission(Instant::now(), &mut out);
        self.carry(out, ctx);
        let (tx, rx) = oneshot::channel();
        if self.storing_intent {
            // Answered when the store (this one, or one already running
            // for a leave) ends.
            self.intent_waiters.push(tx);
        } else {
            // Already leaving, its intent stored.
            let _ = tx.send(Ok(()));
        }
        Box::pin(async move { rx.await.map_err(|_| Error::Shutdown)? })
    }
}

impl Handler<LeaveRing> for RingManager {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, _: LeaveRing, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.leave_waiters.push(tx);
        let mut out = Vec::new();
        self.role.leave(Instant::now(), &mut out);
        self.carry(out, ctx);
        Box::pin(async move { rx.await.map_err(|_| Error::Shutdown) })
    }
}
