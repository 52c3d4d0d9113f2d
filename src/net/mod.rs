//! Networks that carry [`Envelope`]s between nodes.
//!
//! A node talks to its peers only through the [`Transport`] trait, so the
//! same node runs over real TCP ([`tcp`]) or over an in-process network with
//! injected faults ([`memory`]) without knowing which. Both carry the same
//! bytes: an envelope is encoded by [`crate::codec`] into one frame at
//! `send`, and decoded from that frame on arrival, so the codec and its
//! limits are always in the path.
//!
//! # What a transport promises
//!
//! - `send` never blocks. It queues the envelope in a bounded per-peer queue
//!   and returns; success means *queued*, not delivered. When the queue is
//!   full it refuses with [`Error::QueueFull`](crate::Error::QueueFull) and
//!   the envelope is not sent: the newest frame is the one refused, so what
//!   was queued keeps its order. Protocols above treat that like a lost
//!   message (they time out and retry), which they must handle anyway.
//! - Envelopes from one node to another arrive in the order they were sent,
//!   or not at all. Nothing is delivered twice, and nothing is delivered to
//!   a node other than `to`. (The in-process network can be told to break
//!   these rules on purpose, to test that protocols survive it.)
//! - Incoming envelopes go to one bounded [`Inbox`]. When the local consumer
//!   falls behind, the transport stops reading, and senders feel it as
//!   back-pressure (TCP flow control, then their own full queues).
//! - A frame of more than `max_frame_bytes` is never sent and never
//!   buffered on receipt.
//!
//! # What it does not do
//!
//! No retransmission across connections: a frame that was written to a
//! connection that then broke may be lost. Delivery is at most once; the
//! replication and membership protocols provide retries and idempotence.

use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::future::BoxFuture;
use tokio_util::codec::LengthDelimitedCodec;

use crate::error::Result;
use crate::id::NodeId;
use crate::message::Envelope;

pub mod client_tls;
pub mod config;
pub mod handshake;
pub mod memory;
pub mod tcp;
pub mod tls;

pub use config::{ClusterSecret, MemoryNetConfig, NetConfig, TcpConfig};
pub use tls::{ClusterCa, NodeCredentials, PeerSecurity};

/// The receiving side of a transport: every envelope addressed to the local
/// node, in per-sender order.
pub type Inbox = tokio::sync::mpsc::Receiver<Envelope>;

/// A network endpoint for one node: what the node's actors use to reach
/// their peers.
pub trait Transport: Send + Sync + 'static {
    /// The node this endpoint belongs to.
    fn local_id(&self) -> NodeId;

    /// Queues `envelope` for `envelope.to`. Never blocks; see the module
    /// documentation for what success promises.
    ///
    /// Fails with `QueueFull` when the peer's queue is full, `UnknownPeer`
    /// when there is no way to reach `to`, `FrameTooLarge` when the encoded
    /// envelope exceeds the frame limit, and `Shutdown` after shutdown.
    fn send(&self, envelope: Envelope) -> Result<()>;

    /// Tells the transport where `node` can be reached. Membership calls
    /// this as it learns of peers. The in-process network needs no
    /// addresses and accepts any.
    fn learn_peer(&self, node: NodeId, addr: &str) -> Result<()>;

    /// Counters since the endpoint started.
    fn stats(&self) -> NetStats;

    /// Why the last attempt to connect to `node` failed, if it did and
    /// none has succeeded since: for a node that cannot join to say why.
    /// Transports without connections have nothing to say (the default).
    fn dial_failure(&self, node: NodeId) -> Option<String> {
        let _ = node;
        None
    }

    /// Whether a connection to `node` is open now (for a node that cannot
    /// join to say which seeds it reached). Transports without connections
    /// say no (the default).
    fn connected_to(&self, node: NodeId) -> bool {
        let _ = node;
        false
    }

    /// Fault injection: from now on, silently drops every frame to
    /// `peers` (a one-way partition; frames from them still arrive),
    /// replacing the earlier set; an empty set heals. For tests and
    /// experiments on real processes (`Op::BlockOutbound`); a node never
    /// calls it on its own. Transports that cannot inject faults refuse
    /// with `InvalidInput` (the default).
    fn block_outbound(&self, peers: &[NodeId]) -> Result<()> {
        let _ = peers;
        Err(crate::error::Error::InvalidInput(
            "this node's transport cannot block peers".into(),
        ))
    }

    /// Stops the endpoint: stops accepting, writes what is queued within a
    /// grace period, closes connections, and resolves once every task of
    /// the endpoint has ended. Later `send`s fail with `Shutdown`.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
}

/// Counters of one transport endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the network (written to a socket, or accepted by the
    /// in-process network).
    pub frames_sent: u64,
    /// Bytes of those frames, without length prefixes.
    pub bytes_sent: u64,
    /// Frames received and decoded into envelopes for this node.
    pub frames_received: u64,
    /// Bytes of those frames, without length prefixes.
    pub bytes_received: u64,
    /// Envelopes refused by `send` because the peer's queue was full.
    pub refused_queue_full: u64,
    /// Frames received that did not decode, or that claimed a sender or
    /// recipient other than the connection's; each was dropped.
    pub bad_frames: u64,
    /// Connections closed because the peer sent a frame over the limit.
    pub oversized_frames: u64,
    /// Frames lost because their connection broke while they were queued
    /// or being written.
    pub frames_lost: u64,
    /// Connections that completed the handshake (either direction).
    pub connections: u64,
    /// Handshakes that failed or were refused (either direction), not
    /// counting simultaneous-connect tie-breaks.
    pub handshake_failures: u64,
    /// Frames dropped, in either direction, because the peer is cut off by
    /// an injected partition (`TcpTransport::set_blocked`).
    pub frames_blocked: u64,
}

/// Lock-free counters behind [`NetStats`].
#[derive(Debug, Default)]
pub(crate) struct StatCounters {
    pub frames_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub refused_queue_full: AtomicU64,
    pub bad_frames: AtomicU64,
    pub oversized_frames: AtomicU64,
    pub frames_lost: AtomicU64,
    pub connections: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub frames_blocked: AtomicU64,
}

impl StatCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            frames_sent: get(&self.frames_sent),
            bytes_sent: get(&self.bytes_sent),
            frames_received: get(&self.frames_received),
            bytes_received: get(&self.bytes_received),
            refused_queue_full: get(&self.refused_queue_full),
            bad_frames: get(&self.bad_frames),
            oversized_frames: get(&self.oversized_frames),
            frames_lost: get(&self.frames_lost),
            connections: get(&self.connections),
            handshake_failures: get(&self.handshake_failures),
            frames_blocked: get(&self.frames_blocked),
        }
    }
}

/// The framing used on every TCP connection: a 4-byte big-endian length,
/// then that many bytes of CBOR. A length over `max` is an error before any
/// of the frame is buffered.
pub fn frame_codec(max_frame_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max_frame_bytes)
        .new_codec()
}
