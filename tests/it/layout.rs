//! The layout of the root crate's tests: with `autotests = false`, a file
//! under `tests/` is compiled only if a test binary's `main.rs` names it,
//! so a file added without a `mod` line would never run. This module fails
//! when one is left out.

use std::collections::BTreeSet;
use std::path::Path;

/// The `.rs` files directly in `dir`, by stem.
fn rust_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The modules a `main.rs` declares with `mod name;` (file modules only).
fn declared(main: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(main)
        .unwrap_or_else(|e| panic!("reading {}: {e}", main.display()))
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_file_under_tests_is_in_a_binary() {
    // This package is tests/ itself.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    for binary in ["it", "processes"] {
        let dir = tests.join(binary);
        let mut files = rust_files(&dir);
        files.remove("main");
        let mods = declared(&dir.join("main.rs"));
        let missing: Vec<_> = files.difference(&mods).collect();
        assert!(
            missing.is_empty(),
            "tests/{binary}/ has files its main.rs does not name: {missing:?}"
        );
    }
    // Only the golden vectors stay in tests/ itself (src/message.rs and
    // src/protocol.rs read them there), as modules of `it`.
    let top = rust_files(tests);
    let expected: BTreeSet<String> = ["codec_golden", "protocol_golden"].map(String::from).into();
    assert_eq!(
        top, expected,
        "a test file directly in tests/ is in no binary (autotests = false): \
         move it into tests/it/ (in-process) or tests/processes/ (ringkv-node \
         processes) and add a `mod` line to that binary's main.rs"
    );
    let it = declared(&tests.join("it").join("main.rs"));
    assert!(it.is_superset(&expected), "tests/it/main.rs names {it:?}");
}
