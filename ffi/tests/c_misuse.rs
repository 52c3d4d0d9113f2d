//! Misuse of the C ABI from C (tests/c/misuse.c), built with the system
//! compiler (`-Wall -Wextra -Werror`, sanitizers where they work) and run
//! with a timeout; it exits 0 only when every documented result holds.

mod support;

use support::*;

#[test]
fn c_misuse_program_gets_every_documented_result() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("misuse");
    build_c(&crate_dir().join("tests/c/misuse.c"), &exe);
    let out = run_ok(&exe, &[]);
    assert_lines(&out, &["misuse: all checks passed"]);
}
