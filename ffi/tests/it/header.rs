//! `include/ringkv.h` is what cbindgen makes of the crate today.
//!
//! The header is committed so that C users need no Rust tooling to read
//! it; this test regenerates it in memory and fails, with the first lines
//! that differ and the command that rewrites it, when the two disagree.
//! `RINGKV_BLESS=1` writes the fresh header instead of comparing.

use std::path::Path;

#[test]
fn header_matches_a_fresh_cbindgen_run() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        // cbindgen follows the `mod` items from lib.rs.
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen failed: {e}"));
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("cbindgen writes UTF-8");
    let path = crate_dir.join("include/ringkv.h");
    if std::env::var_os("RINGKV_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {path:?}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let diff: Vec<String> = committed
            .lines()
            .zip(fresh.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(5)
            .map(|(i, (a, b))| format!("line {}:\n  committed: {a}\n  fresh:     {b}", i + 1))
            .collect();
        panic!(
            "ffi/include/ringkv.h is out of date ({} lines committed, {} fresh).\n{}\n\
             Regenerate it with: RINGKV_BLESS=1 cargo test -p ringkv-ffi --test it header::",
            committed.lines().count(),
            fresh.lines().count(),
            diff.join("\n")
        );
    }
}

/// The C++ headers the build script copies to `target/<profile>/include`
/// for C++ users are the ones cxx-build generated for this build.
#[test]
fn cxx_headers_are_installed_beside_the_library() {
    let generated = Path::new(env!("OUT_DIR")).join("cxxbridge/include");
    let installed = crate::support::cxx_include();
    for name in ["rust/cxx.h", "ringkv-ffi/src/cxx_bridge.rs.h"] {
        let fresh = std::fs::read(generated.join(name))
            .unwrap_or_else(|e| panic!("reading the generated {name}: {e}"));
        let copy = std::fs::read(installed.join(name))
            .unwrap_or_else(|e| panic!("{name} is not installed in {}: {e}", installed.display()));
        assert!(
            copy == fresh,
            "{} holds another {name} than this build's",
            installed.display()
        );
    }
}
