//! Layer 4: the node's machines and the client-op service.
//!
//! What composes the protocol machines of layer 2 with the wire of layer 3
//! into the roles a node plays. Today that is [`client_ops`]: the pure
//! conversions between the client protocol's data operations
//! ([`crate::protocol::Op`], [`crate::protocol::Reply`]) and the
//! coordinator's operations and answers, which `Node::execute` (layer 5)
//! runs. Modules here may use every layer below; nothing below imports
//! them (see "Layers" in `docs/architecture.md`).

pub mod client_ops;
