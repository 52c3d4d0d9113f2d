//! Layer 0: the identifiers every other layer names.
//!
//! [`NodeId`] lives here, below everything, so that the ring, versions,
//! CRDTs and the protocol machines can name a node without depending on
//! the wire module (`message.rs`, which re-exports it for outside users).
//! See "Layers" in `docs/architecture.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a physical node in a cluster.
///
/// Small and `Copy`, because the ring and every protocol machine pass node
/// ids around constantly. It encodes as a plain CBOR unsigned integer.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}
