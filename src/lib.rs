//! ringkv: a Dynamo-style distributed key-value store.
//!
//! This crate is the library behind the `ringkv-node` binary, the
//! `ringkv-shell` REPL and the C ABI. This file is only a facade: it declares
//! the modules and re-exports the types most callers need. See
//! `docs/architecture.md` for the architecture and `docs/` for each subsystem.
//!
//! What exists today: the wire format ([`codec`], [`message`]), and the
//! networks that carry it ([`net`]): framed, authenticated TCP and an
//! in-process network with fault injection, behind one [`Transport`] trait;
//! the hash ring with token claim and move plans ([`ring`]); versioned
//! objects with siblings, clocks and conflict policies ([`version`]); and
//! CRDTs ([`crdt`]); storage engines behind one [`Engine`] trait
//! ([`storage`]).
//! Membership ([`membership`]): gossip, a phi-accrual failure detector,
//! suspicion and refutation, joins and leaves, and the ring kept in step by
//! gossip, as protocol machines; the actix actors that run them on a node
//! ([`node`]); and a deterministic driver for them ([`sim`]).
//! Replication ([`replication`]): quorum put and get machines with read
//! repair, hinted handoff and the replica store, run by the node's
//! Coordinator and Replica actors; the client protocol ([`protocol`]),
//! served by a node's client port and spoken by the Rust [`client`].
//!
//! The modules are layered, and no module imports from a layer above its
//! own (a unit test checks it; see "Layers" in `docs/architecture.md`):
//! [`id`], [`error`] and [`codec`] at the bottom; the pure core; the
//! protocol machines; the wire; [`roles`] (the client-op service) and
//! [`sim`]; then the actors, front doors and [`config`], which composes a
//! node's configuration from the parts each subsystem owns.

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod config;
pub mod crdt;
pub mod effect;
pub mod embedded;
pub mod error;
pub mod id;
#[cfg(test)]
mod layers;
pub mod log;
pub mod membership;
pub mod message;
pub mod net;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod ring;
pub mod roles;
pub mod sim;
pub mod storage;
pub mod version;

pub use config::MembershipConfig;
pub use config::{BTreeConfig, BucketProps};
pub use config::{ClusterSecret, MemoryNetConfig, NetConfig, TcpConfig};
pub use config::{LsmConfig, RingConfig, SyncPolicy, VersionConfig};
pub use error::{Error, Result};
pub use id::NodeId;
pub use membership::{MemberEntry, MemberEvent, MemberStatus, Membership, RingKeeper};
pub use message::{Envelope, Message, Refusal, PROTOCOL_VERSION};
pub use net::memory::{Faults, MemoryEndpoint, MemoryNetwork};
pub use net::tcp::TcpTransport;
pub use net::tls::{ClusterCa, NodeCredentials, PeerSecurity};
pub use net::{Inbox, NetStats, Transport};
pub use ring::{key_token, MovePlan, Ring, Token};
pub use storage::{Engine, EngineStats, KeyRange, WriteBatch};
pub use version::{CausalContext, ConflictPolicy, Object, Timestamp};
