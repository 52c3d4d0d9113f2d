//! Layer 4: the node's machines and the executors of their effects,
//! shared by the actors of a real node and by the simulator.
//!
//! What a role needs done on storage is plain data handed to an executor
//! (a blocking thread in a node, inline in the simulator), and its result
//! comes back to the role's machine as an input: so both carry out the
//! same work the same way.

pub mod anti_entropy;
pub mod coordinator;
pub mod stored_buckets;
