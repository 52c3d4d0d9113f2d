//! Quorum replication: the coordinator state machines for puts and gets.
//!
//! A client request reaches any node; that node's Coordinator actor builds
//! one machine per request from the key's preference list and drives it
//! with replica replies and timer ticks. The machines are plain structs with
//! no I/O, no clock and no randomness: [`put::PutRequest`] and
//! [`get::GetRequest`] take the time as an argument and push the messages
//! they want sent into an outbox of `(destination, ReplicaRequest)` pairs.
//! The same code runs under actix and under the deterministic simulator.
//!
//! # A put
//!
//! One target *coordinates* the write (the coordinating node itself when
//! it is a target, otherwise the first of the preference list): it
//! applies the client's value and context to its stored object under the
//! bucket's conflict policy (minting the write's dot with its own node id,
//! so dots stay unique per node) and replies with the resulting object. The
//! machine then sends that object to the other targets, which merge it into
//! theirs. The put succeeds once `w` targets have stored it (the
//! coordinating replica counts as one). Fallback targets (sloppy quorum)
//! store it as a hint for the primary they stand in for.
//!
//! Under last-writer-wins a store counts only when the write is then the
//! newest version on that replica. A replica that holds a newer one
//! answers [`ReplicaError::Superseded`], and the machine starts a new
//! *round*: the write is coordinated again, stamped above that version,
//! and sent again; replies of earlier rounds are ignored. So when two
//! writes are made one after the other, the second acknowledged only
//! after the first, the second wins on every replica that counted for it,
//! whatever the coordinators' clocks say: a quorum that saw the first
//! would have superseded it (`docs/data-model.md`).
//!
//! # A get
//!
//! Every target is asked; once `r` have replied, their objects are merged
//! under the policy and the merge is the answer. Replies that arrive later,
//! up to the deadline, join the merge, and every replica whose copy was
//! stale is sent the merged object (read repair): after answering by
//! default, before answering when the request asks for it.
//!
//! # Failure
//!
//! When fewer healthy targets exist than the quorum needs, the request fails
//! at once with [`Error::Unavailable`]. When the deadline passes first, it
//! fails with [`Error::QuorumTimeout`]. Both say whether a failed write may
//! still have been applied somewhere (`indefinite`): a write fails
//! *definitely* only when no replica can have stored it.
//!
//! # What it does not do
//!
//! It does not choose targets (the caller passes the preference list with
//! fallbacks, from the ring and the failure detector's view), talk to
//! storage, deliver hints, or resolve siblings for the client: the merged
//! [`Object`] is returned, and the caller resolves it under the bucket's
//! policy.

pub mod anti_entropy;
pub mod buckets;
pub mod config;
pub mod coordinator;
pub mod get;
pub mod handoff;
pub mod limits;
pub mod merkle;
pub mod messages;
pub mod put;
pub mod replica;
pub mod scan;
pub mod service;
pub mod transfer;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::version::{CausalContext, ConflictPolicy, Object, Payload, Timestamp};

pub use buckets::BucketProps;
pub use config::{AntiEntropyConfig, ReplicaConfig, TransferConfig};
pub use get::{GetOptions, GetReply, GetRequest};
pub use messages::{AntiEntropyMsg, ReplicationMsg, TransferMsg};
pub use put::{PutOptions, PutReply, PutRequest};

/// Bugs of earlier versions, put back on purpose so that the simulator's
/// checkers can be shown to find them (`docs/simulation.md`). All off by
/// default; nothing but tests and the simulator's `--regression` option
/// turns one on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regressions {
    /// Dots and CRDT entries are minted under the bare node id, as before
    /// issue [9]: a fallback that coordinates in two partitions, its hint
    /// handed off and deleted in between, mints the same dot twice, and
    /// replicas holding the first drop the second write.
    pub bare_node_actor: bool,
    /// Last-writer-wins as before issue [9]: the coordinator's clock never
    /// observes its peers' timestamps, a coordinating replica does not
    /// stamp above what it holds, and a replica holding a newer version
    /// does not say so; so with skewed clocks a later write can lose to an
    /// earlier one.
    pub unordered_lww: bool,
    /// Replicas serve client requests whatever ring state they were routed
    /// by, as before the ring fence ([`crate::ring::RingFence`]): a write
    /// through a node that has not yet heard of a ring change can be
    /// acknowledged by old replicas after a move's scan, and be missed by
    /// reads through the new ring.
    pub unfenced_ring: bool,
    /// CRDT updates apply to what their coordinating replica holds, with
    /// no read at their level first, as before 3e75f93: an add through a
    /// replica an acknowledged delete has not yet reached brings the
    /// deleted count back everywhere.
    pub blind_update: bool,
}

/// How many replicas must answer, per request.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Consistency {
    /// One replica.
    One,
    /// Two replicas.
    Two,
    /// A majority of the bucket's `n`: `n / 2 + 1`.
    Quorum,
    /// Every one of the bucket's `n` replicas.
    All,
    /// An explicit number, from 1 to `n`.
    Count(u32),
}

impl Consistency {
    /// The number of replicas this level needs when the bucket keeps `n`.
    ///
    /// ```
    /// use ringkv::replication::Consistency;
    /// assert_eq!(Consistency::Quorum.required(3).unwrap(), 2);
    /// assert_eq!(Consistency::Quorum.required(4).unwrap(), 3);
    /// assert_eq!(Consistency::All.required(5).unwrap(), 5);
    /// assert!(Consistency::Count(4).required(3).is_err());
    /// assert!(Consistency::Two.required(1).is_err());
    /// ```
    pub fn required(self, n: usize) -> Result<usize> {
        let needed = match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(k) => k as usize,
        };
        if n == 0 || needed == 0 || needed > n {
            return Err(Error::InvalidInput(format!(
                "consistency {self:?} needs {needed} replicas, but the bucket keeps {n}"
            )));
        }
        Ok(needed)
    }
}

/// A target of a request: a node, and the primary it stands in for when it
/// is a fallback.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The node to ask.
    pub node: NodeId,
    /// `Some(owner)` when `node` is a fallback holding hints for `owner`.
    pub hint_for: Option<NodeId>,
}

impl From<crate::ring::Replica> for Target {
    fn from(r: crate::ring::Replica) -> Self {
        let hint_for = match r.role {
            crate::ring::ReplicaRole::Primary => None,
            crate::ring::ReplicaRole::Fallback { owner } => Some(owner),
        };
        Target {
            node: r.node,
            hint_for,
        }
    }
}

/// What a request did, returned with every reply, success or failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Every node a request was sent to, in the order asked.
    pub asked: Vec<NodeId>,
    /// Nodes that answered successfully, in the order they answered.
    pub answered: Vec<NodeId>,
    /// `(fallback, owner)`: fallbacks that answered, each holding a hint
    /// for the down primary `owner`.
    pub fallbacks: Vec<(NodeId, NodeId)>,
    /// Nodes sent a read repair.
    pub repaired: Vec<NodeId>,
}

impl Receipt {
    fn ask(&mut self, node: NodeId) {
        if !self.asked.contains(&node) {
            self.asked.push(node);
        }
    }

    fn answer(&mut self, target: Target) {
        if !self.answered.contains(&target.node) {
            self.answered.push(target.node);
            if let Some(owner) = target.hint_for {
                self.fallbacks.push((target.node, owner));
            }
        }
    }
}

/// A client's write, as the coordinating replica applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The context the client read (empty for a blind write).
    pub context: CausalContext,
    /// The new value, or a tombstone for a delete.
    pub payload: Payload,
    /// The coordinator's hybrid-logical-clock time for the write.
    pub timestamp: Timestamp,
    /// A CRDT update instead of `payload` (which is then ignored): the
    /// coordinating replica applies it to the join of its stored siblings
    /// and writes the result with the stored object's whole context, so it
    /// replaces every sibling it saw. Only for `Crdt` buckets.
    #[serde(default)]
    pub op: Option<crate::crdt::CrdtOp>,
    /// With `op`: the merge of what a read of the key at the update's own
    /// level returned before the update was sent. The coordinating replica
    /// merges it into its stored object before it applies `op`, so an
    /// update starts from every write that level acknowledged, a delete
    /// included, and not only from what this one replica has seen
    /// (without it, an acknowledged delete that had not yet reached the
    /// coordinating replica was undone by the next add: the add's result
    /// carried the deleted count and superseded the tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Box<Object>>,
}

/// A request from a coordinator to a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Apply `write` to the stored object as its coordinator (mint the dot
    /// with this replica's node id), store the result, and reply
    /// [`ReplicaReply::Coordinated`] with it.
    Coordinate {
        /// The coordinator's request id, echoed in the reply.
        req: u64,
        /// The bucket.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The write.
        write: Write,
        /// The bucket's conflict policy.
        policy: ConflictPolicy,
        /// `Some(owner)` when this replica is a fallback for the down
        /// primary `owner` (every primary was down): the result is stored as
        /// a hint for `owner`, not as this replica's own copy.
        #[serde(default)]
        hint_for: Option<NodeId>,
    },
    /// Merge `object` into the stored one and reply
    /// [`ReplicaReply::Merged`]. Used to replicate a coordinated write, for
    /// read repair, and for hinted handoff.
    Merge {
        /// The coordinator's request id, echoed in the reply.
        req: u64,
        /// The bucket.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The object to merge.
        object: Object,
        /// The bucket's conflict policy.
        policy: ConflictPolicy,
        /// `Some(owner)`: store it as a hint to hand to `owner` later.
        hint_for: Option<NodeId>,
    },
    /// Reply [`ReplicaReply::Scanned`] with the keys of a bucket stored
    /// from a cursor on (see [`scan`]).
    Scan {
        /// The coordinator's request id, echoed in the reply.
        req: u64,
        /// What to list.
        part: scan::ScanPart,
    },
    /// Reply [`ReplicaReply::Read`] with the stored object.
    Read {
        /// The coordinator's request id, echoed in the reply.
        req: u64,
        /// The bucket.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// Why a replica could not do what it was asked. Carried on the wire as
/// data, so that a coordinator can tell a refusal that is the client's
/// business (too many siblings) from a replica's own trouble.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaError {
    /// The write would leave more siblings than allowed; nothing was stored.
    TooManySiblings {
        /// Siblings the write would have left.
        siblings: usize,
        /// The maximum.
        max: usize,
    },
    /// The replica's own trouble (disk error, corruption, a full hint
    /// store), which another replica may not have, with its text. Nothing
    /// was stored.
    Failed(String),
    /// A refusal of the request itself, the same on any replica: a CRDT
    /// update that does not apply to the stored state, a counter that would
    /// overflow, an object that would exceed
    /// [`crate::replication::limits::MAX_OBJECT_BYTES`]. Nothing was stored. The
    /// coordinator answers it at once with [`Error::InvalidInput`] instead
    /// of asking another replica.
    Refused(String),
    /// Under last-writer-wins, the merge was stored but the replica holds a
    /// newer version (one with a higher timestamp and dot) than the one
    /// merged: a read here returns that version, not the merged one. The
    /// put machine then re-stamps its write above `timestamp` (see
    /// [`put`]); read repair and hinted handoff take it as done.
    Superseded {
        /// The stored winner's timestamp.
        timestamp: Timestamp,
    },
    /// A coordination this replica applied before (a duplicate of the
    /// request) whose result it can no longer read (a disk error, or the
    /// copy was deleted since). Nothing more was stored. Not "stored
    /// nothing": the coordinator must not ask another replica to apply
    /// the write again, and fails it as indefinite.
    Indefinite(String),
}

impl ReplicaError {
    /// A refusal of the request itself: permanent, the client's business,
    /// and nothing was stored.
    pub fn refused(reason: impl std::fmt::Display) -> Self {
        ReplicaError::Refused(reason.to_string())
    }

    /// Why the request itself was refused, when it was (see
    /// [`ReplicaError::refused`]); `None` for the replica's own trouble.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            ReplicaError::Refused(reason) => Some(reason),
            ReplicaError::Failed(_)
            | ReplicaError::TooManySiblings { .. }
            | ReplicaError::Superseded { .. }
            | ReplicaError::Indefinite(_) => None,
        }
    }

    /// The library error a client sees for this refusal: a refusal of the
    /// request is `InvalidInput` (not retryable), a replica's own trouble
    /// is `Replica` (retryable).
    pub fn into_error(self) -> Error {
        if let Some(reason) = self.refusal() {
            return Error::InvalidInput(reason.to_string());
        }
        match self {
            ReplicaError::TooManySiblings { siblings, max } => {
                Error::TooManySiblings { siblings, max }
            }
            ReplicaError::Failed(reason) | ReplicaError::Indefinite(reason) => {
                Error::Replica(reason)
            }
            ReplicaError::Refused(reason) => Error::InvalidInput(reason),
            ReplicaError::Superseded { timestamp } => Error::Replica(format!(
                "superseded by a newer version stamped {timestamp:?}"
            )),
        }
    }
}

/// A replica's answer to a [`ReplicaRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    /// The object after a coordinated write, as stored.
    Coordinated {
        /// The request id.
        req: u64,
        /// The stored object, or why nothing was stored.
        result: std::result::Result<Object, ReplicaError>,
        /// For a set op ([`Write::op`]), how many distinct members it
        /// changed the membership of, judged against what the op was
        /// applied to (the stored siblings joined with [`Write::base`])
        /// under the key's lock: `SADD`'s and `SREM`'s answer. Absent for
        /// other writes, and from replicas that predate it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed: Option<u64>,
    },
    /// A merge was stored.
    Merged {
        /// The request id.
        req: u64,
        /// Success, or why nothing was stored.
        result: std::result::Result<(), ReplicaError>,
    },
    /// The stored object (`None`: the replica holds nothing for the key).
    Read {
        /// The request id.
        req: u64,
        /// The object, or why it could not be read.
        result: std::result::Result<Option<Object>, ReplicaError>,
    },
    /// The keys a [`ReplicaRequest::Scan`] asked for.
    Scanned {
        /// The request id.
        req: u64,
        /// The listing, or why it could not be made.
        result: std::result::Result<scan::ScanAnswer, ReplicaError>,
    },
    /// The replica's stored copy of the key is damaged (its bytes fail a
    /// checksum or do not decode as an object), so it has no version to
    /// give. The get coordinator counts it as not having answered, and
    /// sends it the merge of the other replicas' answers, which replaces
    /// the damaged copy (a merge onto a damaged copy overwrites it).
    ReadCorrupt {
        /// The request id.
        req: u64,
        /// What is wrong, for logs.
        reason: String,
    },
}

impl ReplicaRequest {
    /// The request id, echoed in the reply.
    pub fn req(&self) -> u64 {
        match self {
            ReplicaRequest::Coordinate { req, .. }
            | ReplicaRequest::Merge { req, .. }
            | ReplicaRequest::Read { req, .. }
            | ReplicaRequest::Scan { req, .. } => *req,
        }
    }

    /// Which of a node's `shards` data shards serves this request: the
    /// key's ([`shard_of_key`]); a scan, which spans keys, shard 0's.
    pub fn shard(&self, shards: usize) -> usize {
        match self {
            ReplicaRequest::Coordinate { bucket, key, .. }
            | ReplicaRequest::Merge { bucket, key, .. }
            | ReplicaRequest::Read { bucket, key, .. } => shard_of_key(bucket, key, shards),
            ReplicaRequest::Scan { .. } => 0,
        }
    }
}

/// Which of a node's `shards` data shards (see `docs/architecture.md`,
/// "Data shards") owns `bucket`/`key`: shard `s` owns the `s`-th of
/// `shards` equal slices of the 64-bit token ring, so a key's requests,
/// from a client or from a peer's coordinator, are all served on one
/// thread of the node. 0 when the node has one shard.
pub fn shard_of_key(bucket: &[u8], key: &[u8], shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    shard_of_token(crate::ring::key_token(bucket, key), shards)
}

/// The data shard of `token` among `shards`: its slice of the ring.
pub fn shard_of_token(token: crate::ring::Token, shards: usize) -> usize {
    ((u128::from(token.0) * shards as u128) >> 64) as usize
}

impl ReplicaReply {
    /// The request id the reply answers.
    pub fn req(&self) -> u64 {
        match self {
            ReplicaReply::Coordinated { req, .. }
            | ReplicaReply::Merged { req, .. }
            | ReplicaReply::Read { req, .. }
            | ReplicaReply::ReadCorrupt { req, .. }
            | ReplicaReply::Scanned { req, .. } => *req,
        }
    }
}

/// How errors name a key: `key "k" in bucket "b"`, each shown as
/// (lossy) UTF-8 and cut to 64 bytes, so that a long key does not make a
/// long message.
///
/// ```
/// use ringkv::replication::key_name;
/// assert_eq!(key_name(b"carts", b"alice"), r#"key "alice" in bucket "carts""#);
/// ```
pub fn key_name(bucket: &[u8], key: &[u8]) -> String {
    fn show(bytes: &[u8]) -> String {
        const SHOWN: usize = 64;
        let cut = &bytes[..bytes.len().min(SHOWN)];
        let more = if bytes.len() > SHOWN { "..." } else { "" };
        format!("{:?}{more}", String::from_utf8_lossy(cut))
    }
    format!("key {} in bucket {}", show(key), show(bucket))
}

/// Messages a machine wants sent: `(destination, request)`.
pub type Outbox = Vec<(NodeId, ReplicaRequest)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels() {
        assert_eq!(Consistency::One.required(1).unwrap(), 1);
        assert_eq!(Consistency::Quorum.required(1).unwrap(), 1);
        assert_eq!(Consistency::Quorum.required(5).unwrap(), 3);
        assert_eq!(Consistency::Count(3).required(3).unwrap(), 3);
        assert!(Consistency::Count(0).required(3).is_err());
        assert!(Consistency::One.required(0).is_err());
    }

    #[test]
    fn receipt_counts_each_node_once() {
        let mut r = Receipt::default();
        let t = Target {
            node: NodeId(4),
            hint_for: Some(NodeId(2)),
        };
        r.ask(t.node);
        r.ask(t.node);
        r.answer(t);
        r.answer(t);
        assert_eq!(r.asked, vec![NodeId(4)]);
        assert_eq!(r.answered, vec![NodeId(4)]);
        assert_eq!(r.fallbacks, vec![(NodeId(4), NodeId(2))]);
    }
}
