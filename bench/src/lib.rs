//! Benchmarks of ringkv against named peers; see `benches/`, `src/bin/`
//! and `README.md` beside this crate.
//!
//! This library holds the workloads, so that every benchmark measures the
//! same values and states them in one place, and the summary statistics
//! (median of runs, latency percentiles) that the binaries report, and
//! the command line and output parsing of `redis-benchmark`, the cluster
//! benchmark's second driver; and the cluster benchmark's open-loop
//! timetable and CPU lists, the parts of it that need no processes.

pub mod cpu_list;
pub mod open_loop;
pub mod redis_benchmark;
pub mod summary;
pub mod workload;
