//! ringkv-ffi's integration tests, one module per former test file, in one
//! test binary (each binary links the whole library). Run one module with
//! `cargo test -p ringkv-ffi --test it tls::`.
//!
//! `abi_no_panic` stays a binary of its own (`tests/abi_no_panic.rs`): it
//! installs a panic hook, which is process-wide, and counts every panic in
//! its process while it runs, so it must not share the process with other
//! tests.

mod support;

mod abi_misuse;
mod c_features;
mod c_misuse;
mod examples;
mod header;
mod killed_node;
mod overwrite;
mod timeout;
mod tls;
