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
use crate::ring::{Change, Pending, Ring, RingFence};

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

/// Membership gossip, pings and syncs (see [`super::gossip`]). Nested in
/// the wire message as `Message::Membership`.
///
/// Every message carries `members`: the sender's news (entries that changed
/// lately, each sent a bounded number of times) and, when the sender sees
/// the receiver as other than ALIVE, the receiver's own entry, so that a
/// live node hears of a suspicion about itself from anyone it talks to.
/// A message never carries the whole table: at most a few dozen entries,
/// about 4 KB at most whatever the cluster's size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MembershipMsg {
    /// A round's gossip to a random peer: news, and the digest of the
    /// sender's table. If `reply` is set (push-pull) the receiver answers
    /// with a [`MembershipMsg::GossipReply`]; if not, and its digest
    /// differs once the news is merged, it starts a [`MembershipMsg::Sync`].
    Gossip {
        /// News, as above.
        members: Vec<MemberEntry>,
        /// [`super::MembershipTable::digest`] of the sender's table.
        digest: u64,
        /// Whether the receiver should answer.
        reply: bool,
    },
    /// The answer to a round's gossip: the receiver's news and digest. The
    /// round's initiator merges the news and, if the digests still differ,
    /// starts a [`MembershipMsg::Sync`].
    GossipReply {
        /// News, as above.
        members: Vec<MemberEntry>,
        /// The answering node's table digest, after it merged the gossip.
        digest: u64,
    },
    /// News relayed at once by a node that just learned it.
    Relay {
        /// The entries that were news to the relaying node.
        members: Vec<MemberEntry>,
    },
    /// The sender's digest of each bucket of its table
    /// ([`super::table::DIGEST_BUCKETS`] of them). The receiver answers
    /// with [`MembershipMsg::Entries`] for the buckets that differ.
    Sync {
        /// One digest per bucket.
        buckets: Vec<u64>,
    },
    /// The sender's entries in some buckets of its table, at most a few
    /// dozen per message (a sync of many buckets takes several).
    Entries {
        /// The entries, all in `buckets`.
        members: Vec<MemberEntry>,
        /// The buckets these entries are all of the sender's entries in.
        buckets: Vec<u32>,
        /// Whether the receiver should answer with its own entries in
        /// `buckets` (the first half of a sync), or not (the second).
        want: bool,
    },
    /// A monitor's probe of a node it monitors; answered by
    /// [`MembershipMsg::Ack`] with the same `seq`.
    Ping {
        /// Echoed by the ack.
        seq: u64,
        /// News, as above.
        members: Vec<MemberEntry>,
    },
    /// A monitor suspects `node` at `incarnation` on its own evidence (its
    /// phi of the node's acks is over the threshold). Sent to the node's
    /// other monitors, which convict only once two monitors agree (see
    /// [`super::gossip::CONFIRMATIONS`]), and to nobody else.
    Accuse {
        /// The suspect.
        node: NodeId,
        /// Its incarnation as the accuser knows it.
        incarnation: u64,
    },
    /// The answer to a ping. Its arrival feeds the monitor's phi detector
    /// of the sender.
    Ack {
        /// The ping's.
        seq: u64,
        /// The sender's own entry first, then news.
        members: Vec<MemberEntry>,
    },
}

impl MembershipMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MembershipMsg::Gossip { .. } => "gossip",
            MembershipMsg::GossipReply { .. } => "gossip_reply",
            MembershipMsg::Relay { .. } => "relay",
            MembershipMsg::Sync { .. } => "sync",
            MembershipMsg::Entries { .. } => "entries",
            MembershipMsg::Ping { .. } => "ping",
            MembershipMsg::Accuse { .. } => "accuse",
            MembershipMsg::Ack { .. } => "ack",
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
        /// While a change is pending: the sender's fence and the moves it
        /// has done. A receiver on the same ring and change takes the moves
        /// from here, with no [`RingMsg::State`] (which carries two whole
        /// rings). Left out of the encoding when nothing is pending, and
        /// ignored by a receiver that predates it, which answers with its
        /// state as before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<Progress>,
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

/// How far the sender of a [`RingMsg::Digest`] is through the pending
/// change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The sender's ring in force and pending change
    /// ([`crate::ring::RingState::fence`]).
    pub fence: RingFence,
    /// What the pending change does. With the fence, it names the whole
    /// state but the moves done.
    pub change: Change,
    /// Indices of the change's moves the sender has done
    /// ([`Pending::done`]), ascending.
    pub done: Vec<u32>,
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
