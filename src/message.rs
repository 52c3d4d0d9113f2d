//! Every message that crosses between nodes, and the connection handshake.
//!
//! Node-to-node traffic is a stream of [`Envelope`]s, each carrying one
//! [`Message`] from one node to another. On a TCP connection the envelopes
//! are preceded by a [`Handshake`] exchange that agrees on the protocol
//! version and the cluster and proves that both ends hold the cluster secret.
//!
//! All of these types are encoded by [`crate::codec`] as CBOR with serde's
//! default (externally tagged, named-field) representation: self-describing,
//! readable by any CBOR library, and tolerant of fields added later (unknown
//! map keys are skipped). Golden byte vectors for every type live in
//! `tests/codec_golden.rs`; changing how any of these types encodes is a
//! protocol change and needs [`PROTOCOL_VERSION`] raised.
//!
//! Later subsystems (membership, replication, handoff) add their messages to
//! [`Message`]; it is `#[non_exhaustive]` so that matching code outside the
//! crate keeps compiling.

use serde::{Deserialize, Serialize};

use crate::membership::MemberEntry;
use crate::replication::buckets::BucketEntry;
use crate::replication::transfer::{TransferItem, TransferRefusal};
use crate::replication::{ReplicaReply, ReplicaRequest};
use crate::ring::{Ring, TokenRange};

/// Re-exported for users of the wire types; it is defined in [`crate::id`].
pub use crate::id::NodeId;

/// Re-exported for users of the wire types; it is defined in [`crate::error`],
/// below the wire, because [`crate::Error::Handshake`] carries it.
pub use crate::error::Refusal;

/// The version of the node-to-node protocol spoken by this build. Both ends
/// of a connection must speak the same version; a mismatch is refused
/// during the handshake with [`Refusal::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Length in bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;

/// Length in bytes of a handshake proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;

/// One message from one node to another: the unit that transports carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node. A TCP transport checks it against the node id that
    /// the connection authenticated, so a peer cannot speak for another.
    pub from: NodeId,
    /// The node the message is for.
    pub to: NodeId,
    /// The message itself.
    pub msg: Message,
}

impl Envelope {
    /// Builds an envelope.
    pub fn new(from: NodeId, to: NodeId, msg: Message) -> Self {
        Envelope { from, to, msg }
    }
}

/// The messages nodes exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A liveness and round-trip probe. The receiver answers with a
    /// [`Message::Pong`] carrying the same `seq` and `payload`, so a sender
    /// can measure round-trip time and, with a large payload, throughput.
    Ping {
        /// Chosen by the sender, echoed in the reply.
        seq: u64,
        /// Opaque bytes, echoed in the reply.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The answer to a [`Message::Ping`].
    Pong {
        /// The `seq` of the ping being answered.
        seq: u64,
        /// The ping's payload, unchanged.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Membership gossip: the sender's whole membership table (see
    /// `membership::gossip`). The receiver merges every entry; if `reply`
    /// is set (push-pull), it answers with its own table, `reply` unset.
    Gossip {
        /// One entry per node the sender knows, itself included.
        members: Vec<MemberEntry>,
        /// Whether the receiver should answer with its own table.
        reply: bool,
    },
    /// Ring anti-entropy: the epoch and digest of the sender's ring (see
    /// `membership::ring_sync`). A receiver with a greater ring answers
    /// with [`Message::RingState`]; one with a smaller ring answers with its
    /// own digest, asking for the sender's ring.
    RingDigest {
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
    RingState {
        /// The ring in force.
        ring: Ring,
        /// The change in progress, if any. Left out of the encoding when
        /// none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending: Option<crate::ring::Pending>,
    },
    /// A request to a replica, from a coordinator or from hinted handoff
    /// (see `replication`). Answered with [`Message::Replicated`].
    Replicate {
        /// The request; its `req` id is echoed in the reply.
        request: ReplicaRequest,
    },
    /// A replica's answer to a [`Message::Replicate`].
    Replicated {
        /// The reply.
        reply: ReplicaReply,
    },
    /// Bucket-property gossip: the sender's whole bucket table (see
    /// `replication::buckets`). The receiver merges it; no answer.
    Buckets {
        /// Every bucket the sender has set properties for.
        buckets: Vec<BucketEntry>,
    },
    // Range transfers (`replication::transfer`): a receiver pulls the
    // objects of a token range from a source, one batch at a time.
    /// Receiver to source: send the next batch of `range` after the cursor
    /// `after`. Answered with [`Message::TransferBatch`] or
    /// [`Message::TransferRefused`].
    TransferPull {
        /// The receiver's transfer id, echoed in the answer.
        transfer: u64,
        /// The tokens being moved.
        range: TokenRange,
        /// The engine key of the last object the receiver stored; `None`
        /// to start at the beginning of the range.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Stop adding objects once the batch holds this many bytes (a
        /// batch holds at least one object).
        max_bytes: u64,
    },
    /// Source to receiver: the objects of the range after `after`, in key
    /// order.
    TransferBatch {
        /// The transfer id of the pull.
        transfer: u64,
        /// The pull's cursor, echoed: the receiver drops answers to pulls
        /// it no longer waits for.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// The objects, tombstones included.
        items: Vec<TransferItem>,
        /// The cursor to pull from next: the last item's engine key (the
        /// pull's own cursor when there are no items).
        #[serde(with = "serde_bytes")]
        next: Option<Vec<u8>>,
        /// Whether the range holds nothing after `next`.
        done: bool,
        /// The items' size as stored at the source (keys and values).
        bytes: u64,
    },
    /// Source to receiver: the pull was not served.
    TransferRefused {
        /// The transfer id of the pull.
        transfer: u64,
        /// The pull's cursor, echoed.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Why.
        reason: TransferRefusal,
    },
    // Anti-entropy (see `replication::anti_entropy`): one exchange is
    // Tree -> Diff -> Repair -> Repaired, opened by the range's first
    // replica; Purge and Hints serve tombstone garbage collection.
    /// Anti-entropy, opening an exchange: the sender's Merkle tree of
    /// `range`, every leaf hash at once, over the keys of buckets whose
    /// `n` is at least `min_n` (those both ends replicate). Answered with
    /// [`Message::AntiEntropyDiff`].
    AntiEntropyTree {
        /// Chosen by the sender, echoed in every answer.
        session: u64,
        /// The token range.
        range: crate::ring::TokenRange,
        /// Only buckets with at least this many replicas are in the tree.
        min_n: u32,
        /// The leaf hashes, a power of two of them, in token order.
        leaves: Vec<u64>,
    },
    /// Anti-entropy: the leaves where the receiver's tree differs, and the
    /// receiver's (key, version digest) entries of the leaves in `listed`
    /// (all differing leaves, unless that would pass the batch limit).
    AntiEntropyDiff {
        /// The exchange.
        session: u64,
        /// Every differing leaf.
        differing: Vec<u32>,
        /// The leaves whose entries follow.
        listed: Vec<u32>,
        /// The entries of the listed leaves.
        entries: Vec<crate::replication::merkle::KeyDigest>,
    },
    /// Anti-entropy: objects for the receiver to merge under their
    /// buckets' policies, and the keys whose objects it should send back.
    AntiEntropyRepair {
        /// The exchange.
        session: u64,
        /// Objects to merge.
        objects: Vec<crate::replication::anti_entropy::RepairObject>,
        /// Keys wanted back (their digests as the sender last saw them).
        want: Vec<crate::replication::merkle::KeyDigest>,
    },
    /// Anti-entropy, closing an exchange: the objects asked for.
    AntiEntropyRepaired {
        /// The exchange.
        session: u64,
        /// Objects to merge.
        objects: Vec<crate::replication::anti_entropy::RepairObject>,
    },
    /// Anti-entropy: purge these tombstones, each only if the stored
    /// object still has this digest (compare-and-delete). Sent by a
    /// range's first replica once every replica showed it equal.
    AntiEntropyPurge {
        /// The tombstones.
        entries: Vec<crate::replication::merkle::KeyDigest>,
    },
    /// Anti-entropy: the owners the sender holds hints for, now. A
    /// tombstone is purged only when no node holds a hint for a replica of
    /// its range.
    AntiEntropyHints {
        /// The owners, in id order.
        owners: Vec<NodeId>,
    },
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

impl Message {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Gossip { .. } => "gossip",
            Message::RingDigest { .. } => "ring_digest",
            Message::RingState { .. } => "ring_state",
            Message::Replicate { .. } => "replicate",
            Message::Replicated { .. } => "replicated",
            Message::Buckets { .. } => "buckets",
            Message::TransferPull { .. } => "transfer_pull",
            Message::TransferBatch { .. } => "transfer_batch",
            Message::TransferRefused { .. } => "transfer_refused",
            Message::AntiEntropyTree { .. } => "anti_entropy_tree",
            Message::AntiEntropyDiff { .. } => "anti_entropy_diff",
            Message::AntiEntropyRepair { .. } => "anti_entropy_repair",
            Message::AntiEntropyRepaired { .. } => "anti_entropy_repaired",
            Message::AntiEntropyPurge { .. } => "anti_entropy_purge",
            Message::AntiEntropyHints { .. } => "anti_entropy_hints",
        }
    }
}

/// The frames exchanged when a TCP connection opens, before any
/// [`Envelope`].
///
/// The dialer sends `Hello`; the acceptor answers `Challenge` (or `Refuse`);
/// the dialer checks the acceptor's proof and sends `Proof` (or `Refuse`);
/// the acceptor checks the dialer's proof and answers `Welcome` (or
/// `Refuse`). Each proof is an HMAC-SHA256, keyed by the cluster secret, over
/// the role and every field both sides sent (both nonces, node ids,
/// incarnations, the cluster name, the version, the dialer's address), so the
/// secret never crosses the wire, a proof cannot be replayed on another
/// connection, and a proof made for one role cannot be reflected back as the
/// other. See `net::handshake` for the exact transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handshake {
    /// Dialer to acceptor: who I am and a fresh nonce.
    Hello {
        /// The dialer's [`PROTOCOL_VERSION`].
        version: u32,
        /// The cluster the dialer belongs to.
        cluster: String,
        /// The dialer's node id.
        node: NodeId,
        /// The address the dialer accepts connections on, so that the
        /// acceptor can dial back after this connection breaks.
        listen: String,
        /// A random number the dialer's transport drew when it started. A
        /// new incarnation tells the acceptor that the peer restarted, so
        /// any connection it still holds from the old process is dead.
        incarnation: u64,
        /// [`NONCE_LEN`] fresh random bytes.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
    },
    /// Acceptor to dialer: who I am, my nonce, and my proof.
    Challenge {
        /// The acceptor's [`PROTOCOL_VERSION`].
        version: u32,
        /// The cluster the acceptor belongs to.
        cluster: String,
        /// The acceptor's node id.
        node: NodeId,
        /// The acceptor transport's incarnation (see `Hello`).
        incarnation: u64,
        /// [`NONCE_LEN`] fresh random bytes.
        #[serde(with = "serde_bytes")]
        nonce: Vec<u8>,
        /// The acceptor's [`PROOF_LEN`]-byte proof of the secret.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Dialer to acceptor: the dialer's proof of the secret.
    Proof {
        /// The dialer's [`PROOF_LEN`]-byte proof.
        #[serde(with = "serde_bytes")]
        proof: Vec<u8>,
    },
    /// Acceptor to dialer: the connection is open for envelopes.
    Welcome,
    /// Either side: the connection is refused, and why. The sender closes
    /// the connection after it.
    Refuse {
        /// Why the connection is refused.
        reason: Refusal,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matches are exhaustive on purpose: a new variant stops this
    /// from compiling. Add it here and to [`VARIANTS`]; the test below then
    /// fails until `tests/codec_golden.rs` has a vector for it.
    fn golden_names(msg: Option<&Message>, hs: Option<&Handshake>, r: Option<&Refusal>) {
        let _ = msg.map(|m| match m {
            Message::Ping { .. }
            | Message::Pong { .. }
            | Message::Gossip { .. }
            | Message::RingDigest { .. }
            | Message::RingState { .. }
            | Message::Replicate { .. }
            | Message::Replicated { .. }
            | Message::Buckets { .. }
            | Message::TransferPull { .. }
            | Message::TransferBatch { .. }
            | Message::TransferRefused { .. } => (),
            Message::AntiEntropyTree { .. }
            | Message::AntiEntropyDiff { .. }
            | Message::AntiEntropyRepair { .. }
            | Message::AntiEntropyRepaired { .. }
            | Message::AntiEntropyPurge { .. }
            | Message::AntiEntropyHints { .. } => (),
        });
        let _ = hs.map(|h| match h {
            Handshake::Hello { .. }
            | Handshake::Challenge { .. }
            | Handshake::Proof { .. }
            | Handshake::Welcome
            | Handshake::Refuse { .. } => (),
        });
        let _ = r.map(|r| match r {
            Refusal::VersionMismatch { .. }
            | Refusal::ClusterMismatch { .. }
            | Refusal::BadSecret
            | Refusal::UnexpectedNode { .. }
            | Refusal::SelfConnect
            | Refusal::AlreadyConnected
            | Refusal::SimultaneousConnect
            | Refusal::Malformed(_)
            | Refusal::ShuttingDown => (),
        });
    }

    const VARIANTS: &[&str] = &[
        "Message::Ping",
        "Message::Pong",
        "Message::Gossip",
        "Message::RingDigest",
        "Message::RingState",
        "Message::Replicate",
        "Message::Replicated",
        "Message::Buckets",
        "Message::TransferPull",
        "Message::TransferBatch",
        "Message::TransferRefused",
        "Message::AntiEntropyTree",
        "Message::AntiEntropyDiff",
        "Message::AntiEntropyRepair",
        "Message::AntiEntropyRepaired",
        "Message::AntiEntropyPurge",
        "Message::AntiEntropyHints",
        "Handshake::Hello",
        "Handshake::Challenge",
        "Handshake::Proof",
        "Handshake::Welcome",
        "Handshake::Refuse",
        "Refusal::VersionMismatch",
        "Refusal::ClusterMismatch",
        "Refusal::BadSecret",
        "Refusal::UnexpectedNode",
        "Refusal::SelfConnect",
        "Refusal::AlreadyConnected",
        "Refusal::SimultaneousConnect",
        "Refusal::Malformed",
        "Refusal::ShuttingDown",
    ];

    #[test]
    fn every_variant_has_a_golden_vector() {
        golden_names(None, None, None);
        let golden = include_str!("../tests/codec_golden.rs");
        for name in VARIANTS {
            assert!(
                golden.contains(name),
                "{name} has no golden vector in tests/codec_golden.rs"
            );
        }
    }
}
