//! The root crate's in-process integration tests, one module per former
//! test file (`<area>_<behaviour>`), in one test binary: every file under
//! `tests/` used to be a binary of its own, each linking the whole crate,
//! and building and linking them dominated `cargo test`. They are the
//! package `ringkv-tests` (`tests/Cargo.toml`), whose own code builds
//! unoptimised while the crate under test is optimised. Run one area with
//! `cargo test -p ringkv-tests --test it storage_` or one module with
//! `cargo test -p ringkv-tests --test it storage_lsm::`.
//!
//! Tests that start `ringkv-node` processes are in the `processes` binary
//! (`tests/processes/`), so that their clusters never share the two cores
//! with this binary's timing-sensitive in-process clusters.
//!
//! `codec_golden.rs` and `protocol_golden.rs` stay in `tests/` itself:
//! unit tests in `src/message.rs` and `src/protocol.rs` read them there
//! (`include_str!`). The package sets `autotests = false`, so they are
//! modules of this binary, not binaries of their own; the test
//! `every_file_under_tests_is_in_a_binary` (`layout`) keeps a new file
//! from being left out.
//!
//! Shared by the tests of one process: the global allocator of
//! `codec_random_input` (it tracks the test thread that asks, nothing
//! else), and the statics the modules declare.

#[path = "../support/mod.rs"]
mod support;

mod layout;

mod client_batch;
mod client_cluster;
mod client_protocol;
mod client_python_package;
#[path = "../codec_golden.rs"]
mod codec_golden;
mod codec_random_input;
mod membership_actors;
mod membership_spread;
mod membership_tcp;
mod net_memory_faults;
mod net_tcp_faults;
mod net_tcp_loopback;
mod net_tcp_timeouts;
mod net_tcp_tls;
mod net_transport_conformance;
mod node_anti_entropy;
mod node_rebalance;
mod node_rebalance_restart;
mod node_replication;
mod node_storage;
mod node_transfer;
#[path = "../protocol_golden.rs"]
mod protocol_golden;
mod protocol_python;
mod replication_damaged_replica;
mod replication_fallback_dots_random;
mod replication_lww_order;
mod replication_machines;
mod replication_read_your_writes_random;
mod ring_movement_minimal;
mod storage_conformance;
mod storage_corruption;
mod storage_crash;
mod storage_damage;
mod storage_decoders_random;
mod storage_disk_full;
mod storage_lsm;
mod storage_missing_files;
mod version_context_decode;
mod version_replicas_converge;
