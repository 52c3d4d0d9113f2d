//! The actors of a node, one per file, and the supervisor that starts them.
//!
//! Actors own one protocol machine each, feed it messages and timer ticks,
//! and carry out its outbox; protocol logic belongs in the machines (see
//! `docs/architecture.md`, "The principle: state machines inside, actors
//! outside", which lists the logic some actors here still hold).
//!
//! - [`transport::TransportActor`]: wraps a [`crate::Transport`]; sends
//!   envelopes, and routes received ones to the actor whose machine speaks
//!   that message.
//! - [`failure_detector::FailureDetector`]: runs the
//!   [`crate::membership::Membership`] machine.
//! - [`ring_manager::RingManager`]: carries the
//!   [`crate::roles::ring::RingRole`] (the
//!   [`crate::membership::RingKeeper`] and the rebalancer, ring saves, the
//!   ring gate and the graceful leave).
//! - [`replica::ReplicaActor`]: serves replica requests from the node's
//!   [`crate::replication::replica::ReplicaStore`] on blocking threads.
//! - [`coordinator::CoordinatorActor`]: runs the request
//!   [`crate::replication::coordinator::Coordinator`], hinted handoff and the
//!   bucket table.
//! - [`compactor::Compactor`]: runs the storage engine's compactions.
//! - [`handoff::HandoffActor`]: carries the handoff role
//!   ([`crate::roles::handoff::HandoffRole`]), which runs the range
//!   [`crate::replication::transfer::Transfers`] into this node, serves
//!   other nodes' pulls, and drops ranges handed over.
//! - [`anti_entropy::AntiEntropyActor`]: runs Merkle-tree anti-entropy and
//!   tombstone garbage collection.
//! - [`fan_out::FanOut`]: carries an operator's `OnNodes` to the other
//!   nodes and runs theirs here.
//! - [`node::Node`]: opens the store, starts them on one actix
//!   arbiter (one thread with its own tokio runtime, on which the
//!   transport's tasks run too) and is the handle callers hold;
//!   [`node::Node::execute`] serves the client protocol's operations.
//!
//! Beside the actors: [`client_port`], the TCP listener of the client
//! protocol in front of a node, [`resp`], its Redis-protocol twin, and
//! [`cli`], the `ringkv-node` command line
//! and configuration file.
//!
//! Subscribers receive [`NodeEvent`]s: membership events (up, suspect,
//! down, left, refutations, local pauses) and every new ring snapshot.
//!
//! What this does not do: no restart of a crashed actor (a node whose actor
//! dies is a crashed node, which the rest of the cluster detects). Range
//! transfers move data only when told to: deciding which ranges move on a
//! ring change is the ring transition driver's job (issue \[8\]).

pub mod admin;
pub mod anti_entropy;
pub mod auth;
pub mod cli;
pub mod client_port;
pub mod compactor;
pub mod coordinator;
pub mod failure_detector;
pub mod fan_out;
pub mod handoff;
pub mod metrics;
// docs/architecture.md's layout names the supervisor `node/node.rs`; the
// repetition is the layout's.
#[allow(clippy::module_inception)]
pub mod node;
pub mod readiness;
pub mod replica;
pub mod resp;
pub mod ring_manager;
pub mod shares;
pub mod snapshot;
pub mod transport;

use std::sync::Arc;

pub use node::{Node, NodeConfig, TransportParts};

use crate::membership::MemberEvent;
use crate::ring::Ring;

/// What a node's subscribers receive.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeEvent {
    /// A membership event from the failure detector.
    Member(MemberEvent),
    /// A new ring in force, from the ring manager.
    Ring(Arc<Ring>),
    /// A new ring state (a change began, a move was done, or a new ring is
    /// in force), from the ring manager.
    RingState(Arc<crate::ring::RingState>),
}

/// Where subscribers' events go: an unbounded channel, so a slow subscriber
/// never stalls an actor (events are rare: a few per membership change).
pub type Subscriber = tokio::sync::mpsc::UnboundedSender<NodeEvent>;

/// Sends `event` to every subscriber, forgetting those that hung up.
fn publish(subscribers: &mut Vec<Subscriber>, event: NodeEvent) {
    subscribers.retain(|s| s.send(event.clone()).is_ok());
}
