//! TLS on the client port from C and C++, against a real `ringkv-node`
//! whose client port has a certificate (`ringkv-node certs --client-port
//! 127.0.0.1 --client-port db.example.test`, from the cluster CA).
//!
//! `tests/c/tls_client.c` (built with the system `cc`, `-Wall -Wextra
//! -Werror`, the sanitizers where they work) and `tests/c/tls_client.cpp`
//! (the system `c++`) connect through the options with the CA, put and
//! get, and check the refusals with their codes: no CA (plain TCP) is
//! `RINGKV_CONNECTION`, another CA and a name the certificate lacks are
//! `RINGKV_TLS`. Each exits 0 only when every check holds; this test also
//! looks for the line of each step and for the message of each refusal,
//! and then reads both programs' values back with the options from Rust.

use std::path::Path;
use std::process::Command;

use crate::support::{self, *};
use ringkv_ffi::store::{ConnectOptions, RemoteClient};

/// The user and password of the node's admin.
const USER: &str = support::ADMIN.0;
const PASSWORD: &str = support::ADMIN.1;

/// A second CA, unrelated to the node's, from the binary's own `certs`:
/// its `ca.pem`.
fn other_ca(dir: &Path) -> std::path::PathBuf {
    let out = Command::new(node_bin())
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(["--cluster", "somebody-else", "--client-port", "127.0.0.1"])
        .output()
        .expect("running ringkv-node certs");
    assert!(
        out.status.success(),
        "ringkv-node certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = dir.join("ca.pem");
    assert!(ca.exists(), "{} was not written", ca.display());
    ca
}

/// The line of `out` starting with `prefix`, or a failure showing `out`.
fn line_starting<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"))
}

#[test]
fn c_and_cpp_clients_speak_tls_to_a_node_and_refuse_what_they_should() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let c_exe = dir.path().join("tls_client");
    let cpp_exe = dir.path().join("tls_client_cpp");
    build_c(&crate_dir().join("tests/c/tls_client.c"), &c_exe);
    build_cpp(&crate_dir().join("tests/c/tls_client.cpp"), &cpp_exe);
    let stranger = other_ca(&dir.path().join("other-ca"));

    let cluster = NodeCluster::start_with(1, &["127.0.0.1", "db.example.test"]);
    let addr = cluster.client_addrs[0].clone();
    let ca = cluster.ca_pem();
    let args = [
        addr.as_str(),
        ca.to_str().expect("a UTF-8 temporary path"),
        stranger.to_str().expect("a UTF-8 temporary path"),
        USER,
        PASSWORD,
    ];

    // C.
    let out = run_ok(&c_exe, &args);
    println!("C:\n{out}");
    assert_lines(
        &out,
        &[
            "tls: connected",
            "tls: get tls/k = a value only TLS may carry",
            "tls, named: connected",
            "tls: all checks passed",
        ],
    );
    let plain = line_starting(&out, "no CA: ");
    assert!(
        plain.starts_with("no CA: RINGKV_CONNECTION: ringkv_client_connect: ")
            && plain.ends_with("if its client port speaks TLS, set the CA to trust)"),
        "{plain}"
    );
    for refused in ["other CA: ", "wrong name: "] {
        let line = line_starting(&out, refused);
        assert!(
            line.starts_with(&format!(
                "{refused}RINGKV_TLS: ringkv_client_connect: TLS handshake with {addr} failed: "
            )) && line.contains("certificate"),
            "{line}"
        );
    }
    let line = line_starting(&out, "name without CA: ");
    assert!(
        line.starts_with("name without CA: RINGKV_INVALID_ARGUMENT: ringkv_client_connect: ")
            && line.contains("no CA"),
        "{line}"
    );
    assert!(
        line_starting(&out, "wrong password: ").starts_with("wrong password: RINGKV_DENIED: "),
        "{out}"
    );

    // C++.
    let out = run_ok(&cpp_exe, &args);
    println!("C++:\n{out}");
    assert_lines(
        &out,
        &[
            "tls: connected",
            "tls: get tls/cpp = a C++ value only TLS may carry",
            "tls, named: connected",
            "tls: all checks passed",
        ],
    );
    for refused in ["other CA: ", "wrong name: "] {
        let line = line_starting(&out, refused);
        assert!(
            line.starts_with(&format!(
                "{refused}RINGKV_TLS: connect_with: TLS handshake with {addr} failed: "
            )),
            "{line}"
        );
    }
    assert!(
        line_starting(&out, "no CA: ").starts_with("no CA: RINGKV_CONNECTION: connect_with: "),
        "{out}"
    );
    assert!(
        line_starting(&out, "bad PEM: ")
            .starts_with("bad PEM: RINGKV_INVALID_ARGUMENT: connect_with: client TLS: "),
        "{out}"
    );

    // Both values are there for a Rust client with the CA, read through
    // the same options the C ABI fills.
    let mut options = ConnectOptions::new();
    options.set_credentials(USER, PASSWORD);
    options
        .set_tls_ca_file("test", ca.to_str().expect("UTF-8"))
        .expect("the cluster CA is good PEM");
    let client = RemoteClient::connect_with("test", &addr, &options)
        .unwrap_or_else(|e| panic!("a Rust TLS client: {e}\n{}", cluster.logs()));
    for (key, value) in [
        (&b"k"[..], &b"a value only TLS may carry"[..]),
        (b"cpp", b"a C++ value only TLS may carry"),
    ] {
        let got = ringkv_ffi::store::get(&client, b"tls", key, 1)
            .unwrap_or_else(|e| panic!("get {key:?}: {e}"));
        assert_eq!(got, value);
    }
}
