//! The root crate's integration tests that run clusters of `ringkv-node`
//! processes, one module per former test file (`<area>_<behaviour>`), in
//! one test binary. Run one module with
//! `cargo test -p ringkv-tests --test processes node_cluster::`.
//!
//! The tests of one module used to be alone in their process, so their
//! clusters never ran beside another file's. Here they share the test
//! threads: every test that starts `ringkv-node` processes holds
//! [`support::cluster::cluster_slot`] while its cluster runs, so that at
//! most [`support::cluster::CLUSTER_SLOTS`] tests' clusters share the
//! machine; a test that judges failure detectors' verdicts holds
//! [`support::cluster::the_machine_alone`] instead.

#[path = "../support/mod.rs"]
mod support;

mod admin_cli;
mod node_anti_entropy_cluster;
mod node_bootstrap;
mod node_cluster;
mod node_context_writes_cluster;
mod node_fallback_dots_cluster;
mod node_forget;
mod node_heal_convergence;
mod node_lww_order_cluster;
mod node_partition_cluster;
mod node_read_your_writes_cluster;
mod node_rebalance_cluster;
mod node_resp;
mod node_transfer_resume_cluster;
