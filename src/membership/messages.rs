//! The messages membership's machines exchange, and the addressed form in
//! which they leave a machine.
//!
//! Membership owns these types (layer 2); the wire (`message.rs`, layer 3)
//! nests them in its `Message` as `Message::Membership` and
//! `Message::Ring`, and the runners (the node's actors, `crate::sim`) wrap
//! and unwrap them. So membership never imports the wire.

use serde::{Deserialize, Serialize};

use super::MemberEntry;
use crate::id::NodeId;
use crate::ring::{Pending, Ring};

/// A message from one node to another, as a machine receives it and as it
/// leaves a machine's [`super::Outbox`]: the runner turns it into a wire
/// envelope (and back) by nesting `msg` in the wire's message type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addressed<M> {
    /// The sending node.
    pub from: NodeId,
    /// The node the message is for.
    pub to: NodeId,
    /// The message.
    pub msg: M,
}

impl<M> Addressed<M> {
    /// Addresses a message.
    pub fn new(from: NodeId, to: NodeId, msg: M) -> Self {
        Addressed { from, to, msg }
    }
}

/// Membership gossip (see [`super::gossip`]). Nested in the wire message as
/// `Message::Membership`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MembershipMsg {
    /// The sender's whole membership table. The receiver merges every
    /// entry; if `reply` is set (push-pull), it answers with its own table,
    /// `reply` unset.
    Gossip {
        /// One entry per node the sender knows, itself included.
        members: Vec<MemberEntry>,
        /// Whether the receiver should answer with its own table.
        reply: bool,
    },
}

impl MembershipMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MembershipMsg::Gossip { .. } => "gossip",
        }
    }
}

/// Ring anti-entropy (see [`super::ring_sync`]). Nested in the wire message
/// as `Message::Ring`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RingMsg {
    /// The epoch and digest of the sender's ring. A receiver with a greater
    /// ring answers with [`RingMsg::State`]; one with a smaller ring
    /// answers with its own digest, asking for the sender's ring.
    Digest {
        /// The epoch of the sender's ring in force.
        epoch: u64,
        /// The xxh3 of the CBOR encoding of the sender's whole ring state
        /// (`ring::RingState`: the ring in force and the pending change).
        digest: u64,
        /// The xxh3 of the pending change's target ring, 0 when none: tells
        /// the receiver the sender has seen the change. Left out of the
        /// encoding when 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        pending: u64,
    },
    /// A whole ring state, for a peer whose digest differed. The receiver
    /// merges it into its own (`RingState::merge`) and answers with its
    /// state if that differs from this one, else with its digest.
    State {
        /// The ring in force.
        ring: Ring,
        /// The change in progress, if any. Left out of the encoding when
        /// none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending: Option<Pending>,
    },
}

impl RingMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RingMsg::Digest { .. } => "ring_digest",
            RingMsg::State { .. } => "ring_state",
        }
    }
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}
