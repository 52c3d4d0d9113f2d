//! Compiles the C++ side of the cxx bridge (src/cxx_bridge.rs) into the
//! library, and generates its header under OUT_DIR/cxxbridge/include.

fn main() {
    cxx_build::bridge("src/cxx_bridge.rs")
        .std("c++17")
        .compile("ringkv_ffi_cxx");
    println!("cargo:rerun-if-changed=src/cxx_bridge.rs");
}
