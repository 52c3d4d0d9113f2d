//! The RingManager actor: runs this node's [`RingKeeper`] and
//! [`Rebalancer`] machines.
//!
//! It ticks the keeper every gossip interval, feeds it ring envelopes from
//! the transport and membership events from the failure detector, carries
//! out its outbox, and publishes every new ring and ring state to
//! subscribers as immutable `Arc` snapshots. After each of these it asks
//! the rebalancer what to do and sends it to the handoff actor (start or
//! cancel a transfer into this node, drop a range given away); a transfer's
//! completion comes back as [`TransferDone`] and marks its move done.
//!
//! Every new ring state is stored in the node's engine (metadata record
//! [`RING_META`], through the engine's write-ahead log under its sync
//! policy), one write at a time and always the newest: a node that
//! restarts routes by the ring it had, even when no peer is up yet to tell
//! it, and resumes the transfers of a change in progress from their stored
//! cursors.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use tracing::{debug, warn};

use super::failure_detector::{Leave, MemberNotice, Subscribe};
use super::handoff::{
    CancelTransfer, DropRange, HandoffActor, SetTransferListener, StartTransfer, TransferDone,
};
use super::transport::{Incoming, Outgoing, TransportActor};
use super::{publish, NodeEvent, Subscriber};
use crate::membership::rebalance::{RebalanceAction, Rebalancer};
use crate::membership::{Addressed, Outbox, RingEvent, RingKeeper, RingMsg};
use crate::message::Message as WireMessage;
use crate::replication::replica::ReplicaStore;
use crate::ring::{Ring, RingState};

/// The metadata record the ring state is stored under.
pub const RING_META: &str = "ring";

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
pub struct RemoveNode(pub crate::id::NodeId);

/// Gives the ring manager the handoff actor that carries out transfers
/// (started after it); until then no transfer starts.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetHandoff(pub Addr<HandoffActor>);

/// The actor. See the module documentation.
pub struct RingManager {
    keeper: RingKeeper,
    rebalancer: Rebalancer,
    interval: Duration,
    transport: Addr<TransportActor>,
    handoff: Option<Addr<HandoffActor>>,
    subscribers: Vec<Subscriber>,
    /// Where ring states are stored; none: not stored.
    store: Option<Arc<ReplicaStore>>,
    /// The newest state not yet stored.
    unsaved: Option<Arc<RingState>>,
    /// Whether a store of a state is under way.
    saving: bool,
    me: Option<Addr<RingManager>>,
    /// Whether the ring may route requests (see
    /// [`RingKeeper::ring_confirmed`]), for the node's entry point.
    confirmed: Arc<AtomicBool>,
}

/// A store of the ring state ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Saved(crate::error::Result<()>);

impl RingManager {
    /// Wraps a keeper that gossips every `interval` through `transport`.
    pub fn new(keeper: RingKeeper, interval: Duration, transport: Addr<TransportActor>) -> Self {
        let confirmed = Arc::new(AtomicBool::new(keeper.ring_confirmed()));
        RingManager {
            rebalancer: Rebalancer::new(keeper.me(), keeper.transfer_replicas()),
            keeper,
            interval,
            transport,
            handoff: None,
            subscribers: Vec::new(),
            store: None,
            unsaved: None,
            saving: false,
            me: None,
            confirmed,
        }
    }

    /// The flag that tells whether this node's ring may route requests,
    /// kept up to date by the actor.
    pub fn confirmed_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.confirmed)
    }

    /// Stores every new ring state in `store` (see the module
    /// documentation).
    pub fn with_store(mut self, store: Arc<ReplicaStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Stores the newest unsaved state, unless a store is under way (its
    /// end stores what is newest then).
    fn save(&mut self) {
        let (Some(store), Some(me)) = (&self.store, &self.me) else {
            return;
        };
        if self.saving {
            return;
        }
        let Some(state) = self.unsaved.take() else {
            return;
        };
        let encoded = match crate::codec::encode(&*state) {
            Ok(bytes) => bytes,
            Err(e) => {
                warn!(error = %e, "encoding the ring state failed; not stored");
                return;
            }
        };
        self.saving = true;
        let (store, me) = (Arc::clone(store), me.clone());
        actix::spawn(async move {
            let result = tokio::task::spawn_blocking(move || store.store_meta(RING_META, &encoded))
                .await
                .unwrap_or_else(|e| {
                    Err(crate::error::Error::Replica(format!(
                        "store task failed: {e}"
                    )))
                });
            me.do_send(Saved(result));
        });
    }

    fn carry_out(&mut self, out: Outbox<RingMsg, RingEvent>) {
        for addressed in out.messages {
            self.transport.do_send(Outgoing(addressed.into()));
        }
        for event in out.events {
            let event = match event {
                RingEvent::Changed(ring) => NodeEvent::Ring(ring),
                RingEvent::State(state) => {
                    self.unsaved = Some(Arc::clone(&state));
                    NodeEvent::RingState(state)
                }
                RingEvent::Completed(lost) => {
                    self.rebalancer.on_completed(&lost, Instant::now());
                    continue;
                }
            };
            publish(&mut self.subscribers, event);
        }
        self.confirmed
            .store(self.keeper.ring_confirmed(), Ordering::Release);
        self.save();
        self.rebalance();
    }

    /// Carries out what the rebalancer says now.
    fn rebalance(&mut self) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        for action in self.rebalancer.plan(&self.keeper, Instant::now()) {
            match action {
                RebalanceAction::Start(spec) => {
                    debug!(id = spec.id, range = ?spec.range, sources = ?spec.sources, "starting a transfer");
                    handoff.do_send(StartTransfer { spec });
                }
                RebalanceAction::Cancel(id) => handoff.do_send(CancelTransfer { id }),
                RebalanceAction::Drop(range) => {
                    let handoff = handoff.clone();
                    let keep_wide = Some((
                        Arc::clone(self.keeper.ring()),
                        self.keeper.transfer_replicas(),
                    ));
                    actix::spawn(async move {
                        match handoff.send(DropRange { range, keep_wide }).await {
                            Ok(Ok(n)) => debug!(?range, dropped = n, "dropped a range given away"),
                            Ok(Err(e)) => {
                                warn!(?range, error = %e, "dropping a range given away failed")
                            }
                            Err(_) => {}
                        }
                    });
                }
            }
        }
    }
}

impl Handler<SetHandoff> for RingManager {
    type Result = ();

    fn handle(&mut self, SetHandoff(handoff): SetHandoff, ctx: &mut Context<Self>) {
        handoff.do_send(SetTransferListener(ctx.address().recipient()));
        self.handoff = Some(handoff);
        self.rebalance();
    }
}

impl Handler<TransferDone> for RingManager {
    type Result = ();

    fn handle(&mut self, done: TransferDone, _: &mut Context<Self>) {
        if let Some(index) = self.rebalancer.on_done(done.id) {
            debug!(
                id = done.id,
                keys = done.keys,
                bytes = done.bytes,
                "transfer done"
            );
            let mut out = Outbox::new();
            self.keeper.mark_done(index, &mut out);
            self.carry_out(out);
        }
    }
}

impl Actor for RingManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(ctx.address());
        // The first tick at once: a founder claims its tokens immediately.
        let mut out = Outbox::new();
        self.keeper.tick(Instant::now(), &mut out);
        self.carry_out(out);
        ctx.run_interval(self.interval, |act, _| {
            let mut out = Outbox::new();
            act.keeper.tick(Instant::now(), &mut out);
            act.carry_out(out);
        });
    }
}

impl Handler<Incoming> for RingManager {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, _: &mut Context<Self>) {
        // The transport routes only ring gossip here.
        let WireMessage::Ring(msg) = envelope.msg else {
            return;
        };
        let mut out = Outbox::new();
        let addressed = Addressed::new(envelope.from, envelope.to, msg);
        self.keeper.step(Instant::now(), addressed, &mut out);
        self.carry_out(out);
    }
}

impl Handler<MemberNotice> for RingManager {
    type Result = ();

    fn handle(&mut self, MemberNotice(event): MemberNotice, _: &mut Context<Self>) {
        self.keeper.on_member_event(&event);
        // A member going down may lift the barrier or change a source.
        self.rebalance();
    }
}

impl Handler<Subscribe> for RingManager {
    type Result = ();

    fn handle(&mut self, Subscribe(subscriber): Subscribe, _: &mut Context<Self>) {
        let ring = NodeEvent::Ring(Arc::clone(self.keeper.ring()));
        let state = NodeEvent::RingState(Arc::clone(self.keeper.state()));
        if subscriber.send(ring).is_ok() && subscriber.send(state).is_ok() {
            self.subscribers.push(subscriber);
        }
    }
}

impl Handler<GetRing> for RingManager {
    type Result = MessageResult<GetRing>;

    fn handle(&mut self, _: GetRing, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Arc::clone(self.keeper.ring()))
    }
}

impl Handler<GetRingState> for RingManager {
    type Result = MessageResult<GetRingState>;

    fn handle(&mut self, _: GetRingState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Arc::clone(self.keeper.state()))
    }
}

impl Handler<RemoveNode> for RingManager {
    type Result = crate::error::Result<()>;

    fn handle(&mut self, RemoveNode(node): RemoveNode, _: &mut Context<Self>) -> Self::Result {
        let mut out = Outbox::new();
        let result = self.keeper.remove(node, &mut out);
        self.carry_out(out);
        result
    }
}

impl Handler<Leave> for RingManager {
    type Result = ();

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) {
        let mut out = Outbox::new();
        self.keeper.leave(&mut out);
        self.carry_out(out);
    }
}

impl Handler<Saved> for RingManager {
    type Result = ();

    fn handle(&mut self, Saved(result): Saved, _: &mut Context<Self>) {
        self.saving = false;
        if let Err(e) = result {
            warn!(error = %e, "storing the ring state failed");
        }
        self.save();
    }
}
