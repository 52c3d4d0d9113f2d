//! Layer 4: the node's machines, the executors of their effects, and the
//! client-op service, shared by the actors of a real node and by the
//! simulator.
//!
//! What a role needs done on storage is plain data handed to an executor
//! (a blocking thread in a node, inline in the simulator), and its result
//! comes back to the role's machine as an input: so both carry out the
//! same work the same way. [`client_ops`] holds the pure conversions
//! between the client protocol's data operations and the coordinator's
//! operations and answers. Modules here may use every layer below; nothing
//! below imports them (see "Layers" in `docs/architecture.md`).

pub mod anti_entropy;
pub mod client_ops;
pub mod coordinator;
pub mod handoff;
pub mod ring;
pub mod stored_buckets;
