//! The one error type of the `ringkv` library.
//!
//! Every fallible function in the crate returns [`Result`]. Variants are
//! shaped so that a caller can act on them: a full send queue names the peer
//! and the capacity, a refused handshake says exactly why, an oversized frame
//! carries both sizes. [`Error::is_retryable`] classifies each variant: a
//! retryable error may succeed if the same call is made again later (after a
//! backoff); a non-retryable one will fail the same way until the input or the
//! configuration changes.
//!
//! Wrapped I/O errors keep their source, reachable through
//! [`std::error::Error::source`].
//!
//! This module is in layer 0 (see "Layers" in `docs/architecture.md`): it
//! imports nothing but [`crate::id`]. So it also owns the plain data its
//! variants carry: the handshake [`Refusal`] (re-exported by
//! `message.rs`), and the client protocol's stable [`ErrorCode`]s with the
//! [`ErrorReply`] a node answers a failed request with (re-exported by
//! `protocol.rs`, which converts an [`Error`] into an [`ErrorReply`]).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// A `Result` whose error is the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something the library cannot accept (an empty
    /// cluster secret, a zero-sized queue, a malformed address).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A frame, or a value about to become one, is larger than the limit.
    /// Checked before any decoding or allocation.
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Size of the offending frame in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// Bytes that are not a valid CBOR encoding of the expected type:
    /// truncated, trailing garbage, wrong shape, nesting too deep.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (a type name).
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },

    /// A value could not be encoded (for example a map with non-string keys
    /// in a format that requires them). Indicates a bug in the caller.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded (a type name).
        what: &'static str,
        /// The encoder's explanation.
        reason: String,
    },

    /// An operating-system I/O error, with what the library was doing.
    #[error("{context}: {source}")]
    Io {
        /// What the library was doing when the error happened.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A connection handshake failed: the peer (or this node) refused it.
    #[error("handshake with {peer} failed: {refusal}")]
    Handshake {
        /// The remote address, and node id when known.
        peer: String,
        /// Why the handshake failed.
        refusal: Refusal,
    },

    /// A TLS handshake failed on a certificate or protocol error: the
    /// peer's certificate is not from the cluster CA or does not name the
    /// node dialed, the peer refused this node's certificate, or it does
    /// not speak TLS. (A connection that merely broke during the handshake
    /// is [`Error::Io`].)
    #[error("TLS handshake with {peer} failed: {why}")]
    Tls {
        /// The remote address, and node id when known.
        peer: String,
        /// What TLS reported.
        why: String,
    },

    /// The bounded send queue towards `peer` is full; the envelope was not
    /// queued. The caller decides whether to retry, drop or slow down.
    #[error("send queue to {peer} is full ({capacity} frames)")]
    QueueFull {
        /// The destination node.
        peer: NodeId,
        /// The queue's capacity in frames.
        capacity: usize,
    },

    /// The destination is not known to this transport (no address for it,
    /// or no such endpoint on the in-process network).
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),

    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// How long the library waited.
        after: Duration,
    },

    /// The component is shutting down or has shut down.
    #[error("shut down")]
    Shutdown,

    /// The node was drained by an operator (`Op::Drain`): it refuses data
    /// ops for good, and another node serves them.
    #[error("{0} is draining (an operator is taking it out of the cluster): send data ops to another node")]
    Draining(NodeId),

    /// A remote hybrid-logical-clock timestamp is further ahead of the local
    /// wall clock than the configured maximum skew, so it was refused rather
    /// than allowed to drag this node's clock into the future.
    #[error(
        "remote clock at {remote_ms} ms is more than {max_skew_ms} ms ahead of local {local_ms} ms"
    )]
    ClockSkew {
        /// The physical part of the refused remote timestamp, in ms since the epoch.
        remote_ms: u64,
        /// The local wall clock when it was refused, in ms since the epoch.
        local_ms: u64,
        /// The configured maximum skew, in ms.
        max_skew_ms: u64,
    },

    /// A ring change named a node that is already a member (join) or is not
    /// one (leave).
    #[error("ring change refused for {node}: {reason}")]
    RingChange {
        /// The node the change was about.
        node: NodeId,
        /// Why the change was refused.
        reason: &'static str,
    },

    /// A write without a context covering enough of the object's siblings
    /// would leave more than the configured maximum. The client must read,
    /// resolve, and write back with the context it read.
    #[error("write would leave {siblings} siblings, more than the maximum of {max}; read, resolve and write with the context")]
    TooManySiblings {
        /// Siblings the write would have left.
        siblings: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A bucket's conflict policy names a resolver script that is not
    /// registered.
    #[error("no conflict resolver named {0:?}")]
    UnknownResolver(String),

    /// Fewer replicas could answer than the request's consistency needs.
    #[error("{got} of the {needed} replicas needed answered{}", if *indefinite { " (the write may still have been applied)" } else { "" })]
    Unavailable {
        /// Replicas the request needed.
        needed: usize,
        /// Replicas that answered successfully.
        got: usize,
        /// For a write: `true` when it may have been stored on some replica
        /// (so a read may later see it), `false` when surely nothing was
        /// stored.
        indefinite: bool,
    },

    /// A replicated request's deadline passed before enough replicas
    /// answered.
    #[error("{got} of the {needed} replicas needed answered within {after:?}{}", if *indefinite { " (the write may still have been applied)" } else { "" })]
    QuorumTimeout {
        /// Replicas the request needed.
        needed: usize,
        /// Replicas that answered successfully in time.
        got: usize,
        /// The request's timeout.
        after: Duration,
        /// As for [`Error::Unavailable`].
        indefinite: bool,
    },

    /// A replica failed to serve a request through its own trouble (its
    /// disk, a full hint store); the text is the replica's. Retryable:
    /// another replica, or the same one later, may serve it. A request
    /// that any replica would refuse (a key or value past the limits, an op
    /// that does not fit the bucket's policy, a counter add past 64 bits)
    /// is never this: the coordinator checks what it can before sending,
    /// and a replica's refusal of the request itself
    /// (`replication::ReplicaError::refused`) becomes [`Error::InvalidInput`].
    #[error("replica failed: {0}")]
    Replica(String),

    /// Bytes on disk are not what was written: a checksum mismatch, a bad
    /// magic number, a length past the end of the file, a record that does
    /// not decode. Never skipped silently: the engine refuses to open, or
    /// the read fails, rather than return a wrong value.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The file holding the bad bytes.
        file: std::path::PathBuf,
        /// Byte offset in the file where the bad record or block starts.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// The storage engine met an error it cannot recover from by itself
    /// (an I/O error or a failed fsync in its log, flush or compaction; not
    /// a full disk, which fails writes with a retryable [`Error::Io`] until
    /// space is freed) and refuses writes from then on, so that nothing is
    /// acknowledged that it cannot keep. Reads still work. Reopening the
    /// engine recovers from its files.
    #[error("storage engine failed and is read-only: {reason}")]
    StorageFailed {
        /// The first error the engine met.
        reason: String,
    },

    /// This node restarted on the ring state it had stored, and no peer has
    /// yet confirmed that state: it does not coordinate requests, since a
    /// ring changed while it was down would send them to nodes that no
    /// longer own the key. Clears within a gossip round of a peer being
    /// reachable.
    #[error("this node restarted on its stored ring and no peer has confirmed it yet; retry shortly or on another node")]
    RingUnconfirmed,

    /// A node answered a client request with an error (see
    /// [`ErrorReply`]): its code, text, whether it is retryable and, for a
    /// write, whether it may still have been applied.
    #[error("node answered {:?}: {}", .0.code, .0.message)]
    Remote(ErrorReply),

    /// A write was sent but its answer never came (the connection broke or
    /// the request timed out): it may or may not have been applied. Never
    /// retried blindly, because a retried counter add or a blind write
    /// could then be applied twice; read the key to find out.
    #[error("outcome of {op} unknown: {reason}")]
    OutcomeUnknown {
        /// The op's name.
        op: &'static str,
        /// Why no answer came.
        reason: String,
    },
}

impl Error {
    /// Whether the same operation may succeed if retried later.
    ///
    /// ```
    /// use ringkv::{Error, NodeId};
    /// assert!(Error::QueueFull { peer: NodeId(2), capacity: 8 }.is_retryable());
    /// assert!(!Error::FrameTooLarge { size: 10, max: 5 }.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::QueueFull { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::Unavailable { .. }
            | Error::QuorumTimeout { .. }
            | Error::RingUnconfirmed
            // Final for this node; another node serves it.
            | Error::Draining(_)
            | Error::Replica(_) => true,
            Error::Handshake { refusal, .. } => refusal.is_retryable(),
            Error::Remote(reply) => reply.retryable,
            Error::InvalidInput(_)
            | Error::FrameTooLarge { .. }
            | Error::Decode { .. }
            | Error::Encode { .. }
            | Error::UnknownPeer(_)
            | Error::Shutdown
            // Certificates do not fix themselves.
            | Error::Tls { .. }
            // A skewed clock is an operator's problem: retrying only hides
            // it until the clocks drift further.
            | Error::ClockSkew { .. }
            | Error::RingChange { .. }
            | Error::TooManySiblings { .. }
            | Error::UnknownResolver(_)
            // The bytes stay corrupt until repaired from another replica.
            | Error::Corruption { .. }
            // Only reopening the engine clears it.
            | Error::StorageFailed { .. }
            | Error::OutcomeUnknown { .. } => false,
        }
    }

    /// Wraps an I/O error with what the library was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a handshake was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The two ends speak different protocol versions.
    VersionMismatch {
        /// The refusing side's version.
        expected: u32,
        /// The version it was offered.
        got: u32,
    },
    /// The two ends belong to different clusters.
    ClusterMismatch {
        /// The refusing side's cluster name.
        expected: String,
        /// The cluster name it was offered.
        got: String,
    },
    /// The peer's proof did not verify: it does not hold the same cluster
    /// secret.
    BadSecret,
    /// The dialer expected one node at that address and found another.
    UnexpectedNode {
        /// The node the dialer meant to reach.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// A node tried to connect to itself.
    SelfConnect,
    /// The dialer claimed to be `node`, but its TLS certificate does not
    /// name that node: one node's credentials cannot pose as another's.
    NotCertified {
        /// The node the dialer claimed to be.
        node: NodeId,
    },
    /// The acceptor already has a working connection from this same process
    /// of the dialer (same incarnation). The dialer retries after a backoff;
    /// by then the acceptor has seen the old connection close, if it did.
    AlreadyConnected,
    /// Both nodes dialed each other at once; the connection dialed by the
    /// lower node id is kept and this one is dropped. Not an error: the
    /// other connection carries the traffic.
    SimultaneousConnect,
    /// The peer broke the handshake protocol (wrong frame, wrong nonce or
    /// proof length, undecodable bytes).
    Malformed(String),
    /// The refusing node is shutting down.
    ShuttingDown,
}

impl Refusal {
    /// Whether dialing again later may succeed without a configuration
    /// change.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Refusal::SimultaneousConnect | Refusal::AlreadyConnected | Refusal::ShuttingDown
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VersionMismatch { expected, got } => write!(
                f,
                "protocol version mismatch: expected {expected}, got {got}"
            ),
            Refusal::ClusterMismatch { expected, got } => {
                write!(f, "cluster mismatch: expected {expected:?}, got {got:?}")
            }
            Refusal::BadSecret => f.write_str("proof did not verify: the cluster secrets differ"),
            Refusal::UnexpectedNode { expected, got } => {
                write!(f, "expected node {expected} at that address, found {got}")
            }
            Refusal::SelfConnect => f.write_str("a node cannot connect to itself"),
            Refusal::NotCertified { node } => write!(
                f,
                "the peer claimed to be node {node}, but its certificate does not name it"
            ),
            Refusal::AlreadyConnected => {
                f.write_str("already connected to this incarnation of the node")
            }
            Refusal::SimultaneousConnect => {
                f.write_str("simultaneous connect; the lower node id's connection is kept")
            }
            Refusal::Malformed(why) => write!(f, "handshake protocol violation: {why}"),
            Refusal::ShuttingDown => f.write_str("the node is shutting down"),
        }
    }
}

/// A stable error code: what a client program branches on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame was not a valid request, or too large.
    BadRequest,
    /// The client's protocol version is not this node's.
    UnsupportedVersion,
    /// An argument is invalid (consistency above `n`, a value too large, a
    /// counter op on a non-counter bucket, ...). Not retryable.
    InvalidArgument,
    /// Too few replicas are reachable to even try (`needed`, `got` set).
    Unavailable,
    /// Too few replicas answered in time (`needed`, `got` set).
    Timeout,
    /// The write would leave more siblings than the limit; nothing stored.
    TooManySiblings,
    /// A replica failed (disk error, corruption).
    ReplicaFailed,
    /// The node is overloaded; retry later.
    Overloaded,
    /// The node is shutting down; retry on another node.
    ShuttingDown,
    /// The node requires authentication and the connection has none, or
    /// the credentials sent were wrong. Not retryable.
    Unauthenticated,
    /// The connection's role may not run this op (`SetBucket`, `Leave`,
    /// `RemoveNode` and `BlockOutbound` need `admin`; writes need
    /// `readwrite`). Not retryable.
    PermissionDenied,
    /// Anything else.
    Internal,
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// Whether the same request may succeed if sent again unchanged.
    pub retryable: bool,
    /// For a failed write: `true` if it may still have been stored
    /// somewhere (the client cannot know; a read will tell), `false` if it
    /// surely was not. Absent for reads.
    pub indefinite: Option<bool>,
    /// Replicas needed (`Unavailable`, `Timeout`).
    pub needed: Option<u32>,
    /// Replicas that answered or were reachable (`Unavailable`, `Timeout`).
    pub got: Option<u32>,
}

impl ErrorReply {
    /// A reply with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            retryable,
            indefinite: None,
            needed: None,
            got: None,
        }
    }

    /// Whether a client may send the same request again, to any node: the
    /// error is retryable and, for a write, the write surely was not
    /// applied (`indefinite: Some(false)`). A write that may have been
    /// applied is never resent blindly.
    pub fn safe_to_retry(&self, is_write: bool) -> bool {
        self.retryable && (!is_write || self.indefinite == Some(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn only_reads_and_writes_surely_not_applied_are_retried() {
        let mut r = ErrorReply::new(ErrorCode::Timeout, "t", true);
        assert!(r.safe_to_retry(false));
        for (indefinite, write_retried) in [(None, false), (Some(true), false), (Some(false), true)]
        {
            r.indefinite = indefinite;
            assert_eq!(r.safe_to_retry(true), write_retried, "{indefinite:?}");
        }
        r.retryable = false;
        assert!(!r.safe_to_retry(false) && !r.safe_to_retry(true));
    }

    #[test]
    fn io_errors_keep_their_source() {
        let err = Error::io(
            "reading frame",
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof"),
        );
        assert!(err.source().is_some());
        assert!(err.to_string().starts_with("reading frame: "));
        assert!(err.is_retryable());
    }

    #[test]
    fn handshake_classification_follows_the_refusal() {
        let retry = Error::Handshake {
            peer: "127.0.0.1:1".into(),
            refusal: Refusal::SimultaneousConnect,
        };
        let fatal = Error::Handshake {
            peer: "127.0.0.1:1".into(),
            refusal: Refusal::BadSecret,
        };
        assert!(retry.is_retryable());
        assert!(!fatal.is_retryable());
    }
}
