//! Embedded clusters: real ringkv nodes started inside the caller's process.
//!
//! The shell (`ringkv-shell`) and the C ABI (`ringkv-ffi`) both start whole
//! clusters in-process for experiments, tests and embedding. This module is
//! the one place that knows how: [`runtime::Runtime`] hosts an actix
//! `System` on a thread of its own so that synchronous callers (rhai, C) can
//! run the nodes' async API, and [`cluster::Cluster`] starts, crashes,
//! restarts and partitions the nodes, drops and delays their frames, over
//! the in-process network or TCP on 127.0.0.1 (every fault on both).
//!
//! Not here: what the ops mean (the nodes decide), rhai, or C types.

pub mod cluster;
pub mod runtime;

pub use cluster::{Cluster, ClusterOptions, EngineKind, FaultCounts, TransportKind};
pub use runtime::Runtime;
