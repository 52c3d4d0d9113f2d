//! The Python package `clients/python/` (`import ringkv`) against a real
//! node: `clients/python/tests/test_client.py` (unittest, standard library
//! only) runs with `PYTHONPATH=clients/python` against the client port of
//! an in-process node (the in-process network, no client authentication)
//! and checks real behaviour: hello and status, put/get, siblings from two
//! blind writes resolved with the context, delete, a scan listing every
//! key once, the batch ops, error codes. The test passes when the script
//! exits 0.
//!
//! Skipped, with the reason printed, only when `python3` is not installed.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::node::client_port::{ClientPort, ClientPortConfig};
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::{MemoryNetConfig, MemoryNetwork, NodeId};

/// Runs the script, killing it if it takes more than two minutes (it
/// takes a few seconds when it works).
fn run_bounded(script: &str, addr: &str, pythonpath: &str) -> std::process::Output {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .arg(script)
        .arg(addr)
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    // unittest writes to stderr; read both pipes on threads so that a
    // full pipe never blocks the script.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the python tests hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

#[actix_rt::test]
async fn the_python_package_works_against_a_node() {
    let python = match std::process::Command::new("python3")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => out,
        _ => {
            println!("skipped: python3 is not installed");
            return;
        }
    };
    println!("using {}", String::from_utf8_lossy(&python.stdout).trim());

    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut config = NodeConfig::new(NodeId(1), "n1".to_string(), vec![]);
    config.membership = fast();
    config.ring = small_ring();
    let net = network.clone();
    let node = Node::spawn(config, move || async move {
        let (endpoint, inbox) = net.endpoint(NodeId(1))?;
        Ok(TransportParts::new(Arc::new(endpoint), inbox))
    })
    .await
    .unwrap();
    let ready = wait_until(Duration::from_secs(30), || async { node.is_ready().await }).await;
    assert!(ready.is_some(), "the node did not become ready");
    let port = ClientPort::start(
        "127.0.0.1:0",
        Arc::new(node.clone()),
        ClientPortConfig::default(),
    )
    .await
    .unwrap();

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = format!("{root}/clients/python/tests/test_client.py");
    let pythonpath = format!("{root}/clients/python");
    let addr = port.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || run_bounded(&script, &addr, &pythonpath))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "the python tests failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // unittest's summary: every test ran, none skipped.
    assert!(stderr.contains("\nOK"), "no OK from unittest:\n{stderr}");
    assert!(!stderr.contains("skipped"), "{stderr}");

    port.shutdown().await;
    node.shutdown().await;
}
