//! The C ABI's later features, from C (`tests/c/*.c`), built with the
//! system compiler (`-Wall -Wextra -Werror`, sanitizers where they work)
//! and run with a timeout: each program exits 0 only when every check it
//! makes holds, and prints the lines these tests look for.

mod support;

use support::*;

/// Builds `tests/c/<name>.c` and runs it with `args`; returns its output.
fn run_c(name: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join(name);
    build_c(&crate_dir().join(format!("tests/c/{name}.c")), &exe);
    run_ok(&exe, args)
}

#[test]
fn version_and_macros_agree() {
    let out = run_c("version", &[]);
    let want = format!(
        "version: {} (ABI {})",
        env!("CARGO_PKG_VERSION"),
        ringkv_ffi::RINGKV_ABI_VERSION
    );
    assert_lines(&out, &[&want, "version: all checks passed"]);
}

#[test]
fn unparseable_addresses_are_invalid_and_messages_name_their_function() {
    let out = run_c("errors", &[]);
    assert_lines(
        &out,
        &[
            "errors: 12 unparseable addresses are RINGKV_INVALID_ARGUMENT",
            "errors: every message names its function",
            "errors: all checks passed",
        ],
    );
}
