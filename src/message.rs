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
//! Each subsystem owns the messages it speaks (`membership::MembershipMsg`
//! and `RingMsg`, `replication::ReplicationMsg`, `TransferMsg` and
//! `AntiEntropyMsg`); [`Message`] nests them, one variant per subsystem. A
//! new subsystem adds its own variant; [`Message`] and the nested enums are
//! `#[non_exhaustive]` so that matching code outside the crate keeps
//! compiling.

use serde::{Deserialize, Serialize};

use crate::membership::{Addressed, MembershipMsg, RingMsg};
use crate::replication::{AntiEntropyMsg, ReplicationMsg, TransferMsg};

/// Re-exported for users of the wire types; it is defined in [`crate::id`].
pub use crate::id::NodeId;

/// Re-exported for users of the wire types; it is defined in [`crate::error`],
/// below the wire, because [`crate::Error::Handshake`] carries it.
pub use crate::error::Refusal;

/// The version of the node-to-node protocol spoken by this build. Both ends
/// of a connection must speak the same version; a mismatch is refused
/// during the handshake with [`Refusal::VersionMismatch`].
///
/// Version 2 nests each subsystem's messages in [`Message`] (version 1 had
/// one flat enum of every variant). Version 3 adds ring fences to replica
/// requests and range pulls, and the `StaleRing` transfer refusal (see
/// [`crate::ring::RingFence`]). Version 4 adds range scans
/// (`ReplicaRequest::Scan`, `ReplicaReply::Scanned`): a version-3 node
/// could not read them, so the two are refused at the handshake instead.
/// Version 5 replaces membership's whole-table gossip with news, digests,
/// syncs by bucket, and monitors' pings and acks (`MembershipMsg`).
pub const PROTOCOL_VERSION: u32 = 5;

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
///
/// Only the probe (`Ping`, `Pong`) is the wire's own; every other message
/// belongs to the subsystem that speaks it and is nested here under one
/// variant per subsystem, so the protocol machines of layer 2 never import
/// this module (see "Layers" in `docs/architecture.md`). A nested message
/// encodes as a map within a map: `{"Ring": {"Digest": {...}}}`.
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
    /// Membership gossip (`membership::gossip`).
    Membership(MembershipMsg),
    /// Ring anti-entropy (`membership::ring_sync`).
    Ring(RingMsg),
    /// Requests to replicas, their answers, and bucket-property gossip
    /// (`replication`).
    Replication(ReplicationMsg),
    /// Range transfers (`replication::transfer`).
    Transfer(TransferMsg),
    /// Merkle-tree anti-entropy and tombstone collection
    /// (`replication::anti_entropy`).
    AntiEntropy(AntiEntropyMsg),
    /// An operator's request run on several nodes
    /// (`protocol::Op::OnNodes`), and its answers.
    Admin(crate::protocol::AdminMsg),
}

impl Message {
    /// The variant's name, for logs and metrics: the nested message's for
    /// a subsystem's message.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::Membership(m) => m.kind(),
            Message::Ring(m) => m.kind(),
            Message::Replication(m) => m.kind(),
            Message::Transfer(m) => m.kind(),
            Message::AntiEntropy(m) => m.kind(),
            Message::Admin(m) => m.kind(),
        }
    }
}

impl From<MembershipMsg> for Message {
    fn from(msg: MembershipMsg) -> Self {
        Message::Membership(msg)
    }
}

impl From<RingMsg> for Message {
    fn from(msg: RingMsg) -> Self {
        Message::Ring(msg)
    }
}

impl From<ReplicationMsg> for Message {
    fn from(msg: ReplicationMsg) -> Self {
        Message::Replication(msg)
    }
}

impl From<TransferMsg> for Message {
    fn from(msg: TransferMsg) -> Self {
        Message::Transfer(msg)
    }
}

impl From<AntiEntropyMsg> for Message {
    fn from(msg: AntiEntropyMsg) -> Self {
        Message::AntiEntropy(msg)
    }
}

/// A message a membership machine addressed, nested into an envelope.
impl<M: Into<Message>> From<Addressed<M>> for Envelope {
    fn from(a: Addressed<M>) -> Self {
        Envelope::new(a.from, a.to, a.msg.into())
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
            Message::Ping { .. } | Message::Pong { .. } => (),
            Message::Membership(m) => match m {
                MembershipMsg::Gossip { .. }
                | MembershipMsg::GossipReply { .. }
                | MembershipMsg::Relay { .. }
                | MembershipMsg::Sync { .. }
                | MembershipMsg::Entries { .. }
                | MembershipMsg::Ping { .. }
                | MembershipMsg::Accuse { .. }
                | MembershipMsg::Ack { .. } => (),
            },
            Message::Ring(m) => match m {
                RingMsg::Digest { .. } | RingMsg::State { .. } => (),
            },
            Message::Replication(m) => match m {
                ReplicationMsg::Replicate { .. }
                | ReplicationMsg::Replicated { .. }
                | ReplicationMsg::Buckets { .. } => (),
            },
            Message::Transfer(m) => match m {
                TransferMsg::Pull { .. }
                | TransferMsg::Batch { .. }
                | TransferMsg::Refused { .. } => (),
            },
            Message::AntiEntropy(m) => match m {
                AntiEntropyMsg::Tree { .. }
                | AntiEntropyMsg::Diff { .. }
                | AntiEntropyMsg::Repair { .. }
                | AntiEntropyMsg::Repaired { .. }
                | AntiEntropyMsg::Purge { .. }
                | AntiEntropyMsg::Hints { .. } => (),
            },
            Message::Admin(m) => match m {
                crate::protocol::AdminMsg::Ask { .. }
                | crate::protocol::AdminMsg::Answer { .. } => (),
            },
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
            | Refusal::NotCertified { .. }
            | Refusal::AlreadyConnected
            | Refusal::SimultaneousConnect
            | Refusal::Malformed(_)
            | Refusal::ShuttingDown => (),
        });
    }

    const VARIANTS: &[&str] = &[
        "Message::Ping",
        "Message::Pong",
        "MembershipMsg::Gossip",
        "MembershipMsg::GossipReply",
        "MembershipMsg::Relay",
        "MembershipMsg::Sync",
        "MembershipMsg::Entries",
        "MembershipMsg::Ping",
        "MembershipMsg::Ack",
        "MembershipMsg::Accuse",
        "RingMsg::Digest",
        "RingMsg::State",
        "ReplicationMsg::Replicate",
        "ReplicationMsg::Replicated",
        "ReplicationMsg::Buckets",
        "TransferMsg::Pull",
        "TransferMsg::Batch",
        "TransferMsg::Refused",
        "AntiEntropyMsg::Tree",
        "AntiEntropyMsg::Diff",
        "AntiEntropyMsg::Repair",
        "AntiEntropyMsg::Repaired",
        "AntiEntropyMsg::Purge",
        "AntiEntropyMsg::Hints",
        "AdminMsg::Ask",
        "AdminMsg::Answer",
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
        "Refusal::NotCertified",
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
