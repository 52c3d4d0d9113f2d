//! The messages replication's machines and actors exchange between nodes.
//!
//! Replication owns these types (layer 2); the wire (`message.rs`, layer 3)
//! nests them in its `Message` as `Message::Replication`,
//! `Message::Transfer` and `Message::AntiEntropy`, and the node's actors
//! wrap and unwrap them. So replication never imports the wire.

use serde::{Deserialize, Serialize};

use super::anti_entropy::RepairObject;
use super::buckets::BucketEntry;
use super::merkle::KeyDigest;
use super::transfer::{TransferItem, TransferRefusal};
use super::{ReplicaReply, ReplicaRequest};
use crate::id::NodeId;
use crate::ring::{RingFence, TokenRange};

/// Requests to replicas and their answers, and bucket-property gossip.
/// Nested in the wire message as `Message::Replication`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicationMsg {
    /// A request to a replica, from a coordinator or from hinted handoff
    /// (see [`crate::replication`]). Answered with
    /// [`ReplicationMsg::Replicated`].
    Replicate {
        /// The request; its `req` id is echoed in the reply.
        request: ReplicaRequest,
        /// The fence of the ring state a coordinator routed a client
        /// request by: a replica that knows a newer state refuses it (see
        /// [`RingFence`]). `None` for hinted handoff, which is not routed
        /// by the ring.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<RingFence>,
    },
    /// A replica's answer to a [`ReplicationMsg::Replicate`].
    Replicated {
        /// The reply.
        reply: ReplicaReply,
    },
    /// Bucket-property gossip: the sender's whole bucket table (see
    /// [`super::buckets`]). The receiver merges it; no answer.
    Buckets {
        /// Every bucket the sender has set properties for.
        buckets: Vec<BucketEntry>,
    },
}

impl ReplicationMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplicationMsg::Replicate { .. } => "replicate",
            ReplicationMsg::Replicated { .. } => "replicated",
            ReplicationMsg::Buckets { .. } => "buckets",
        }
    }
}

/// Range transfers ([`super::transfer`]): a receiver pulls the objects of
/// a token range from a source, one batch at a time. Nested in the wire
/// message as `Message::Transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransferMsg {
    /// Receiver to source: send the next batch of `range` after the cursor
    /// `after`. Answered with [`TransferMsg::Batch`] or
    /// [`TransferMsg::Refused`].
    Pull {
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
        /// The fence of the change the range moves for: a source serves
        /// the pull only when its own ring state has the same fence, so
        /// that it refuses stale client requests from then on (see
        /// [`RingFence`]). `None`: served whatever the source's state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<RingFence>,
    },
    /// Source to receiver: the objects of the range after `after`, in key
    /// order.
    Batch {
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
    Refused {
        /// The transfer id of the pull.
        transfer: u64,
        /// The pull's cursor, echoed.
        #[serde(with = "serde_bytes")]
        after: Option<Vec<u8>>,
        /// Why.
        reason: TransferRefusal,
    },
}

impl TransferMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TransferMsg::Pull { .. } => "transfer_pull",
            TransferMsg::Batch { .. } => "transfer_batch",
            TransferMsg::Refused { .. } => "transfer_refused",
        }
    }
}

/// Anti-entropy ([`super::anti_entropy`]): one exchange is Tree -> Diff ->
/// Repair -> Repaired, opened by the range's first replica; Purge and
/// Hints serve tombstone garbage collection. Nested in the wire message as
/// `Message::AntiEntropy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AntiEntropyMsg {
    /// Opening an exchange: the sender's Merkle tree of `range`, every
    /// leaf hash at once, over the keys of buckets whose `n` is at least
    /// `min_n` (those both ends replicate). Answered with
    /// [`AntiEntropyMsg::Diff`].
    Tree {
        /// Chosen by the sender, echoed in every answer.
        session: u64,
        /// The token range.
        range: TokenRange,
        /// Only buckets with at least this many replicas are in the tree.
        min_n: u32,
        /// The leaf hashes, a power of two of them, in token order.
        leaves: Vec<u64>,
    },
    /// The leaves where the receiver's tree differs, and the receiver's
    /// (key, version digest) entries of the leaves in `listed` (all
    /// differing leaves, unless that would pass the batch limit).
    Diff {
        /// The exchange.
        session: u64,
        /// Every differing leaf.
        differing: Vec<u32>,
        /// The leaves whose entries follow.
        listed: Vec<u32>,
        /// The entries of the listed leaves.
        entries: Vec<KeyDigest>,
    },
    /// Objects for the receiver to merge under their buckets' policies,
    /// and the keys whose objects it should send back.
    Repair {
        /// The exchange.
        session: u64,
        /// Objects to merge.
        objects: Vec<RepairObject>,
        /// Keys wanted back (their digests as the sender last saw them).
        want: Vec<KeyDigest>,
    },
    /// Closing an exchange: the objects asked for.
    Repaired {
        /// The exchange.
        session: u64,
        /// Objects to merge.
        objects: Vec<RepairObject>,
    },
    /// Purge these tombstones, each only if the stored object still has
    /// this digest (compare-and-delete). Sent by a range's first replica
    /// once every replica showed it equal.
    Purge {
        /// The tombstones.
        entries: Vec<KeyDigest>,
    },
    /// The owners the sender holds hints for, now. A tombstone is purged
    /// only when no node holds a hint for a replica of its range.
    Hints {
        /// The owners, in id order.
        owners: Vec<NodeId>,
    },
}

impl AntiEntropyMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AntiEntropyMsg::Tree { .. } => "anti_entropy_tree",
            AntiEntropyMsg::Diff { .. } => "anti_entropy_diff",
            AntiEntropyMsg::Repair { .. } => "anti_entropy_repair",
            AntiEntropyMsg::Repaired { .. } => "anti_entropy_repaired",
            AntiEntropyMsg::Purge { .. } => "anti_entropy_purge",
            AntiEntropyMsg::Hints { .. } => "anti_entropy_hints",
        }
    }
}
