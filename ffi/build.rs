//! Compiles the C++ side of the cxx bridge (src/cxx_bridge.rs) into the
//! library, and generates its header under OUT_DIR/cxxbridge/include.
//!
//! It then copies the C++ headers (`rust/cxx.h` and
//! `ringkv-ffi/src/cxx_bridge.rs.h`) to `include/` beside the library it
//! builds, `target/<profile>/include`, a path that does not change from
//! build to build: a C++ program compiles with `-I ffi/include -I
//! target/release/include` after `cargo build --release -p ringkv-ffi`.

use std::path::{Path, PathBuf};

fn main() {
    cxx_build::bridge("src/cxx_bridge.rs")
        .std("c++17")
        .compile("ringkv_ffi_cxx");
    println!("cargo:rerun-if-changed=src/cxx_bridge.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<package>-<hash>/out.
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        println!("cargo:warning=cannot tell the profile directory from {out_dir:?}");
        return;
    };
    let from = out_dir.join("cxxbridge/include");
    let to = profile_dir.join("include");
    for name in ["rust/cxx.h", "ringkv-ffi/src/cxx_bridge.rs.h"] {
        if let Err(e) = copy(&from.join(name), &to.join(name)) {
            println!("cargo:warning=cannot copy {name} to {}: {e}", to.display());
        }
    }
}

/// Copies `from` to `to`, creating its directory, unless `to` already
/// holds the same bytes (so that a rebuild does not touch it).
fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
    let bytes = std::fs::read(from)?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(to, bytes)
}
