//! Benchmarks of ringkv against named peers; see `benches/` and
//! `README.md` beside this crate.
//!
//! This library holds the workloads, so that every benchmark (and any
//! later one, such as frames per second over loopback) measures the same
//! values and states them in one place.

pub mod workload;
