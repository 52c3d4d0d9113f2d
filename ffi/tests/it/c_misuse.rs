//! Misuse of the C ABI from C (tests/c/misuse.c), built with the system
//! compiler (`-Wall -Wextra -Werror`, sanitizers where they work) and run
//! with a timeout; it exits 0 only when every documented result holds.
//! The same file is also compiled as C++, which proves the header serves
//! C++ callers of the C ABI.

use crate::support::*;

#[test]
fn c_misuse_program_gets_every_documented_result() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("misuse");
    build_c(&crate_dir().join("tests/c/misuse.c"), &exe);
    let out = run_ok(&exe, &[]);
    assert_lines(&out, &["misuse: all checks passed"]);
}

#[test]
fn c_misuse_program_compiled_as_cpp_gets_the_same_results() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("misuse_cpp");
    build_c_as_cpp(&crate_dir().join("tests/c/misuse.c"), &exe);
    let out = run_ok(&exe, &[]);
    assert_lines(&out, &["misuse: all checks passed"]);
}

#[test]
fn leak_checking_is_live_a_leaked_buffer_is_reported() {
    if sanitizer_flags().is_empty() {
        eprintln!("note: no sanitizers here; nothing to show");
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("leak");
    build_c(&crate_dir().join("tests/c/leak.c"), &exe);
    let mut cmd = std::process::Command::new(&exe);
    cmd.env("ASAN_OPTIONS", "detect_leaks=1");
    let out = run_with_timeout(cmd, RUN_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the leak went unnoticed:\n{stderr}");
    assert!(
        stderr.contains("LeakSanitizer") && stderr.contains("leaked in"),
        "no leak report:\n{stderr}"
    );
}
