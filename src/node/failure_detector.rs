//! The FailureDetector actor: runs this node's [`Membership`] machine.
//!
//! It ticks the machine every quarter of the gossip interval (so that phi
//! is checked well within an interval of crossing the threshold), feeds it
//! every gossip envelope the transport routes here, and carries out its
//! outbox: envelopes to the transport, events to the subscribers and to the
//! ring manager. Before sending, it tells the transport the address of
//! every peer whose address it has not told yet, so that a TCP transport
//! can dial nodes learned by gossip.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use super::transport::{Incoming, LearnPeer, Outgoing, TransportActor};
use super::{publish, NodeEvent, Subscriber};
use crate::id::NodeId;
use crate::membership::{Addressed, MemberEntry, MemberEvent, Membership, MembershipMsg, Outbox};
use crate::message::Message as WireMessage;

/// A membership event, for the ring manager.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct MemberNotice(pub MemberEvent);

/// Adds a subscriber.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Subscriber);

/// Asks for phi of every peer, now.
#[derive(Message)]
#[rtype(result = "BTreeMap<NodeId, f64>")]
pub struct GetPhi;

/// Asks for the membership table.
#[derive(Message)]
#[rtype(result = "Vec<MemberEntry>")]
pub struct GetMembers;

/// Leaves the cluster gracefully.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave;

/// Forgets a node for good (see [`Membership::forget`]).
#[derive(Message)]
#[rtype(result = "crate::error::Result<()>")]
pub struct Forget(pub NodeId);

/// The actor. See the module documentation.
pub struct FailureDetector {
    machine: Membership,
    transport: Addr<TransportActor>,
    ring: Recipient<MemberNotice>,
    subscribers: Vec<Subscriber>,
    /// Addresses already given to the transport.
    told: BTreeMap<NodeId, String>,
}

impl FailureDetector {
    /// Wraps a machine; it sends through `transport` and tells `ring` of
    /// every membership event.
    pub fn new(
        machine: Membership,
        transport: Addr<TransportActor>,
        ring: Recipient<MemberNotice>,
    ) -> Self {
        FailureDetector {
            machine,
            transport,
            ring,
            subscribers: Vec::new(),
            told: BTreeMap::new(),
        }
    }

    fn carry_out(&mut self, out: Outbox<MembershipMsg, MemberEvent>) {
        for entry in self.machine.table().entries() {
            if entry.node != self.machine.me() && self.told.get(&entry.node) != Some(&entry.addr) {
                self.told.insert(entry.node, entry.addr.clone());
                self.transport.do_send(LearnPeer {
                    node: entry.node,
                    addr: entry.addr.clone(),
                });
            }
        }
        for addressed in out.messages {
            self.transport.do_send(Outgoing(addressed.into()));
        }
        for event in out.events {
            log_event(self.machine.me(), &event);
            self.ring.do_send(MemberNotice(event.clone()));
            publish(&mut self.subscribers, NodeEvent::Member(event));
        }
    }
}

/// Logs a membership event at INFO (a node paused, at WARN), with the
/// node and the peer as fields: every change of what this node believes
/// about a peer leaves one line, which operators and the process tests
/// read (`membership: <peer> is up|suspect|down|left`).
fn log_event(me: NodeId, event: &MemberEvent) {
    match event {
        MemberEvent::Up {
            node,
            addr,
            incarnation,
        } => info!(node = %me, peer = %node, %addr, incarnation, "membership: {node} is up"),
        MemberEvent::Suspect { node, incarnation } => {
            info!(node = %me, peer = %node, incarnation, "membership: {node} is suspect")
        }
        MemberEvent::Down { node, incarnation } => {
            info!(node = %me, peer = %node, incarnation, "membership: {node} is down")
        }
        MemberEvent::Left { node } => info!(node = %me, peer = %node, "membership: {node} left"),
        MemberEvent::Refuted { incarnation } => info!(
            node = %me,
            incarnation,
            "membership: this node refuted a verdict about itself"
        ),
        MemberEvent::LocalPause { gap } => warn!(
            node = %me,
            gap_ms = gap.as_millis() as u64,
            "membership: this node did not run for {gap:?}; its detectors restarted rather than convict peers"
        ),
    }
}

impl Actor for FailureDetector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = (self.machine.config().gossip_interval / 4).max(Duration::from_millis(1));
        ctx.run_interval(every, |act, _| {
            let mut out = Outbox::new();
            act.machine.tick(Instant::now(), &mut out);
            act.carry_out(out);
        });
    }
}

impl Handler<Incoming> for FailureDetector {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, _: &mut Context<Self>) {
        // The transport routes only membership gossip here.
        let WireMessage::Membership(msg) = envelope.msg else {
            return;
        };
        let mut out = Outbox::new();
        let addressed = Addressed::new(envelope.from, envelope.to, msg);
        self.machine.step(Instant::now(), addressed, &mut out);
        self.carry_out(out);
    }
}

impl Handler<Subscribe> for FailureDetector {
    type Result = ();

    fn handle(&mut self, Subscribe(subscriber): Subscribe, _: &mut Context<Self>) {
        self.subscribers.push(subscriber);
    }
}

impl Handler<GetPhi> for FailureDetector {
    type Result = MessageResult<GetPhi>;

    fn handle(&mut self, _: GetPhi, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.phis(Instant::now()))
    }
}

impl Handler<GetMembers> for FailureDetector {
    type Result = MessageResult<GetMembers>;

    fn handle(&mut self, _: GetMembers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.table().entries().cloned().collect())
    }
}

impl Handler<Forget> for FailureDetector {
    type Result = crate::error::Result<()>;

    fn handle(&mut self, Forget(node): Forget, _: &mut Context<Self>) -> Self::Result {
        let mut out = Outbox::new();
        let result = self.machine.forget(Instant::now(), node, &mut out);
        self.carry_out(out);
        result
    }
}

impl Handler<Leave> for FailureDetector {
    type Result = ();

    fn handle(&mut self, _: Leave, _: &mut Context<Self>) {
        let mut out = Outbox::new();
        self.machine.leave(Instant::now(), &mut out);
        self.carry_out(out);
    }
}
