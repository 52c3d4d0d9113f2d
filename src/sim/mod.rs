//! Deterministic drivers: protocol machines run on virtual time, with
//! seeded randomness and the in-process network's faults, so that the same
//! seed gives the same history, event for event.
//!
//! A driver owns the clock: it jumps from one due instant (a frame's
//! delivery, a node's tick, a pause's end) to the next, and feeds the
//! machines in a fixed order (by instant, then by node id). Every frame goes
//! through [`crate::codec`] and the [`Fabric`](crate::net::memory::Fabric),
//! so the bytes, the frame limit and the faults are those of the real
//! in-process network.
//!
//! What exists:
//! - [`cluster::ClusterSim`]: whole nodes (membership, the coordinator,
//!   ring and handoff roles, replicas, anti-entropy) on the seeded
//!   network, with clients, a fault schedule, joins and leaves, and
//!   storage on [`engine::SimEngine`]s that lose unsynced writes in a
//!   power loss and can fail or be slow;
//! - [`history`] and [`check`]: what the clients saw, and the checkers
//!   that judge it; [`search`]: many seeds at once; [`script`]: scenario
//!   scripts with expected output;
//! - [`membership::MembershipSim`]: the membership machines alone, for
//!   detection experiments at scale.

pub mod check;
pub mod cluster;
pub mod engine;
pub mod history;
pub mod membership;
pub mod script;
pub mod search;

pub use membership::{LogEntry, MembershipSim, SimOptions, Traffic};
