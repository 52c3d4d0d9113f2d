//! Proves that `docs/protocol.md` is enough to write a client: a client
//! written from it in Python (standard library only, its own CBOR encoder
//! and decoder), `tests/python/protocol_client.py`, runs against a real
//! client port on 127.0.0.1 and checks every answer: hello, put, get,
//! pipelining, bad requests, garbage, an oversized frame.
//!
//! Skipped, with the reason printed, only when `python3` is not installed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ringkv::node::client_port::{ClientPort, ClientPortConfig};
use ringkv::protocol::{Handler, Op, Reply, CLIENT_PROTOCOL_VERSION};
use ringkv::replication::Receipt;
use ringkv::{Error, NodeId};
use serde_bytes::ByteBuf;

/// An in-memory node: puts and gets, nothing else.
#[derive(Clone, Default)]
struct MapNode(Arc<Mutex<HashMap<BucketKey, Vec<u8>>>>);

/// `(bucket, key)`.
type BucketKey = (Vec<u8>, Vec<u8>);

impl Handler for MapNode {
    fn execute(&self, op: Op) -> BoxFuture<'static, ringkv::Result<Reply>> {
        let map = self.0.clone();
        async move {
            let receipt = Receipt {
                asked: vec![NodeId(4)],
                answered: vec![NodeId(4)],
                ..Receipt::default()
            };
            match op {
                Op::Hello { .. } => Ok(Reply::Hello {
                    version: CLIENT_PROTOCOL_VERSION,
                    node: NodeId(4),
                    cluster: "pytest".into(),
                    role: None,
                }),
                Op::Get { bucket, key, .. } => {
                    let value = map
                        .lock()
                        .unwrap()
                        .get(&(bucket.into_vec(), key.into_vec()))
                        .cloned();
                    Ok(Reply::Object {
                        context: ByteBuf::from(if value.is_some() {
                            vec![0xa1, 0x04, 0x01]
                        } else {
                            vec![]
                        }),
                        value: value.map(ByteBuf::from),
                        siblings: vec![],
                        receipt,
                    })
                }
                Op::Put {
                    bucket, key, value, ..
                } => {
                    map.lock()
                        .unwrap()
                        .insert((bucket.into_vec(), key.into_vec()), value.into_vec());
                    Ok(Reply::Written {
                        context: ByteBuf::from(vec![0xa1, 0x04, 0x02]),
                        receipt,
                    })
                }
                other => Err(Error::InvalidInput(format!(
                    "this node does not do {}",
                    other.name()
                ))),
            }
        }
        .boxed()
    }
}

/// Runs the script, killing it if it takes more than a minute (it takes
/// well under a second when it works).
fn run_bounded(script: &str, addr: &str) -> std::process::Output {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new("python3")
        .arg(script)
        .arg(addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the python client hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The script prints a few lines, far less than a pipe holds, so it
    // never blocks on a full pipe before exiting.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut stderr);
    }
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_written_from_the_doc_works() {
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

    let node = MapNode::default();
    let port = ClientPort::start(
        "127.0.0.1:0",
        Arc::new(node.clone()),
        ClientPortConfig::default(),
    )
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/protocol_client.py");
    let addr = port.local_addr().to_string();
    let out = tokio::task::spawn_blocking(move || run_bounded(script, &addr))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in [
        "hello: node 4 cluster pytest",
        "put: ok",
        "get: from python",
        "pipelined: 3 answers",
        "bad requests: answered BadRequest",
        "oversized: closed",
        "all checks passed",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    // What the python client wrote is what the node stored.
    let stored = node
        .0
        .lock()
        .unwrap()
        .get(&(b"py".to_vec(), b"k".to_vec()))
        .cloned();
    assert_eq!(stored, Some(b"second".to_vec()));
    port.shutdown().await;
}
