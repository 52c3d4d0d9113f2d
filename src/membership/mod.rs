//! Membership: who is in the cluster and who is up, learned by gossip.
//!
//! # What it owns
//!
//! Two protocol machines, both plain structs with no I/O, no clock and no
//! randomness of their own (time is passed in, randomness comes from a
//! seeded generator, messages go to an [`Outbox`]):
//!
//! - [`Membership`] ([`gossip`]): the membership table ([`table`]), a
//!   phi-accrual failure detector per peer ([`phi`]), gossip, suspicion,
//!   refutation, the local-pause guard, joining through seeds and leaving.
//!   The FailureDetector actor runs it.
//! - [`RingKeeper`] ([`ring_sync`]): the node's copy of the hash ring, its
//!   anti-entropy by digest, and token claim when this node joins or leaves.
//!   The ring role (`roles::ring`) runs it, carried by the RingManager
//!   actor.
//!
//! # The guarantee
//!
//! Every change of status or ring reaches every connected node, whatever
//! the order of deliveries, because both merges are joins (table: higher
//! incarnation, then stronger status; ring: higher epoch, then higher
//! digest): news is relayed at once, and rounds of gossip with digest syncs
//! repair whatever a relay missed, in O(log N) rounds. A node is DOWN only
//! after two of its monitors suspected it on their own evidence (their
//! pings went unanswered) and `suspicion_multiplier` intervals passed
//! unrefuted; a live node that hears of its own suspicion refutes it by
//! raising its incarnation; a node that heard a peer directly does not
//! take a relayed verdict about it; a node that was itself paused restarts
//! its detectors instead of convicting. `docs/membership.md` has the
//! protocol and the measurements.
//!
//! # What it does not do
//!
//! No indirect probes (SWIM's ping-req): a monitor pings again at every
//! tick once phi is past half the threshold, instead of asking others to.
//! No transport and no timers: the actors in
//! `crate::node` and the driver in `crate::sim` supply both. DOWN nodes stay
//! in the ring (a failure is not a leave); only a graceful leave changes
//! ownership.

pub mod config;
pub mod gossip;
pub mod messages;
pub mod phi;
pub mod rebalance;
pub mod ring_sync;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

pub use config::MembershipConfig;
pub use gossip::Membership;
pub use messages::{Addressed, MembershipMsg, Progress, RingMsg};
pub use phi::PhiDetector;
pub use ring_sync::RingKeeper;
pub use table::{MemberEntry, MemberStatus, MembershipTable};

use crate::id::NodeId;
use crate::ring::Ring;

/// What a protocol machine asks its runner to do: messages `M` to send and
/// events `E` to publish, in the order they were produced. The runner nests
/// each message in the wire's message type and hands it to the transport.
#[derive(Debug)]
pub struct Outbox<M, E> {
    /// Messages to hand to the transport.
    pub messages: Vec<Addressed<M>>,
    /// Events for subscribers.
    pub events: Vec<E>,
}

impl<M, E> Default for Outbox<M, E> {
    fn default() -> Self {
        Outbox {
            messages: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl<M, E> Outbox<M, E> {
    /// An empty outbox.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Queues a message.
    pub fn send(&mut self, from: NodeId, to: NodeId, msg: M) {
        self.messages.push(Addressed::new(from, to, msg));
    }

    /// Queues an event.
    pub fn event(&mut self, event: E) {
        self.events.push(event);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.events.is_empty()
    }

    /// The same, as the crate's one effect shape: the messages first (in
    /// order, each with its destination), then the events. A machine
    /// that also asks for storage work chooses its `W`.
    pub fn into_effects<W>(self) -> Vec<crate::effect::Effect<M, W, E>> {
        let mut effects = Vec::with_capacity(self.messages.len() + self.events.len());
        for m in self.messages {
            effects.push(crate::effect::Effect::Send {
                to: m.to,
                msg: m.msg,
            });
        }
        effects.extend(self.events.into_iter().map(crate::effect::Effect::Emit));
        effects
    }
}

/// A change in what this node believes about the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberEvent {
    /// A node became ALIVE: first heard of, or back after a refutation.
    Up {
        /// The node.
        node: NodeId,
        /// Its address.
        addr: String,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A node became SUSPECT (here or by gossip).
    Suspect {
        /// The node.
        node: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
    },
    /// A node was convicted: DOWN.
    Down {
        /// The node.
        node: NodeId,
        /// The incarnation convicted.
        incarnation: u64,
    },
    /// A node left gracefully.
    Left {
        /// The node.
        node: NodeId,
    },
    /// This node heard that it was suspected or convicted and refuted it by
    /// raising its incarnation.
    Refuted {
        /// The new incarnation.
        incarnation: u64,
    },
    /// This node itself was paused for `gap` and restarted its detectors
    /// rather than convict peers it could not hear.
    LocalPause {
        /// How long it did not run.
        gap: Duration,
    },
}

/// A change of this node's ring.
#[derive(Clone, Debug, PartialEq)]
pub enum RingEvent {
    /// A new ring is in force (a change completed, or learned by gossip).
    Changed(Arc<Ring>),
    /// The ring state changed: a change began, a move was done, or a new
    /// ring is in force (then after [`RingEvent::Changed`]).
    State(Arc<crate::ring::RingState>),
    /// The change in progress is in force: the ranges this node
    /// replicated before and no longer does (what it gave away).
    Completed(Vec<crate::ring::TokenRange>),
}
