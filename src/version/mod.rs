//! Versions of a key's value: clocks, causality, siblings, conflict
//! policies.
//!
//! # What it owns
//!
//! - [`hlc`]: the hybrid logical clock that stamps every write, monotonic
//!   even when the wall clock steps back, refusing remote clocks that run
//!   too far ahead.
//! - [`dvv`]: dots, version vectors and dotted version vectors, the causal
//!   bookkeeping that tells a write that replaces another from one that is
//!   concurrent with it.
//! - [`object`]: the [`Object`] a replica stores under a key: siblings, the
//!   causal context, and the rules for applying a write and merging two
//!   replicas' copies.
//! - [`conflict`]: the per-bucket [`ConflictPolicy`] (last writer wins,
//!   siblings, a CRDT type, or a script) and the [`Resolver`] trait through
//!   which scripts plug in.
//!
//! # The guarantee
//!
//! Under every policy, merging replicas' objects is a join: commutative,
//! associative and idempotent, so replicas that see the same writes in any
//! order hold the same object. Under the siblings, CRDT and script
//! policies no write is lost unless a client overwrote it knowingly (its
//! context covered it). Under last writer wins, concurrent and skewed
//! writes are lost by design; `docs/data-model.md` shows when.
//!
//! # What it does not do
//!
//! No storage, no networking, no reading of the system clock except through
//! [`hlc::SystemClock`], which callers choose to use.

pub mod config;
pub mod conflict;
pub mod dvv;
pub mod hlc;
pub mod object;

pub use config::VersionConfig;
pub use conflict::{ConflictPolicy, Resolved, Resolver, ResolverSource, Resolvers};
pub use dvv::{sync, Dot, Dvv, VersionVector};
pub use hlc::{Hlc, SystemClock, Timestamp, WallClock, Witness};
pub use object::{CausalContext, Object, Payload, Sibling};
