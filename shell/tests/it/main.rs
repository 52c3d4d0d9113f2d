//! ringkv-shell's integration tests, one module per former test file, in
//! one test binary (each binary links the whole shell and ringkv). Run one
//! module with `cargo test -p ringkv-shell --test it shell_scripts::`.

mod support;

mod shell_api;
mod shell_plots;
mod shell_pty;
mod shell_scripts;
