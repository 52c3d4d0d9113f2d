//! The batch ops (`MultiGet`, `MultiPut`) end to end: three in-process
//! nodes (the in-process network), each behind its own [`ClientPort`] on
//! 127.0.0.1, and the Rust [`Client`] over TCP, as in
//! `tests/client_cluster.rs`.
//!
//! What it shows: a hundred keys written in one batch through one node
//! are read back in one batch through another, in request order, with
//! missing keys answered as not found; siblings show per item and a batch
//! with the contexts resolves them; one failing item (a context no node
//! made) fails as it would alone and does not fail the others; what the
//! batch limits refuse is refused whole, before anything is written; a
//! read batch whose values would pass the batch budget answers the keys
//! past it with an error; a key named twice is read twice but written at most once;
//! a reader may batch reads but not writes. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::client::{BatchPut, Client, ClientConfig, Credentials, GetResult};
use ringkv::node::client_port::{ClientAuth, ClientPort, ClientPortConfig};
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::protocol::{ErrorCode, ReadOptions, WriteOptions, MAX_BATCH_KEYS};
use ringkv::replication::Consistency;
use ringkv::{Error, MemoryNetConfig, MemoryNetwork, NodeId};

fn config(id: u64) -> NodeConfig {
    let seeds = if id == 1 {
        vec![]
    } else {
        vec![(NodeId(1), "n1".to_string())]
    };
    let mut config = NodeConfig::new(NodeId(id), format!("n{id}"), seeds);
    config.membership = fast();
    config.ring = small_ring();
    config
}

async fn spawn(network: &MemoryNetwork, id: u64) -> Node {
    let net = network.clone();
    Node::spawn(config(id), move || async move {
        let (endpoint, inbox) = net.endpoint(NodeId(id))?;
        Ok(TransportParts::new(Arc::new(endpoint), inbox))
    })
    .await
    .unwrap()
}

async fn port(node: &Node, config: ClientPortConfig) -> ClientPort {
    ClientPort::start("127.0.0.1:0", Arc::new(node.clone()), config)
        .await
        .unwrap()
}

fn client_config() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        max_attempts: 8,
        ..ClientConfig::default()
    }
}

/// Three nodes that formed a cluster, each behind an open port.
async fn cluster() -> (Vec<Node>, Vec<ClientPort>, Vec<String>) {
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for id in 1..=3 {
        let node = spawn(&network, id).await;
        ports.push(port(&node, ClientPortConfig::default()).await);
        nodes.push(node);
    }
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let formed = wait_until(Duration::from_secs(30), || formed(&nodes, &ids)).await;
    assert!(formed.is_some(), "the cluster did not form");
    let addrs = ports.iter().map(|p| p.local_addr().to_string()).collect();
    (nodes, ports, addrs)
}

async fn stop(nodes: Vec<Node>, ports: Vec<ClientPort>) {
    for port in ports {
        port.shutdown().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// The code of a node's refusal.
fn code<T: std::fmt::Debug>(result: &Result<T, Error>) -> ErrorCode {
    match result {
        Err(Error::Remote(reply)) => reply.code,
        other => panic!("expected a node's error, got {other:?}"),
    }
}

fn value(item: &Result<GetResult, Error>) -> Option<Vec<u8>> {
    let got = item.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(got.siblings.is_empty(), "{got:?}");
    got.value.clone()
}

fn quorum_reads() -> ReadOptions {
    ReadOptions {
        r: Some(Consistency::Quorum),
        ..ReadOptions::default()
    }
}

#[actix_rt::test]
async fn batches_on_three_nodes() {
    let (nodes, ports, addrs) = cluster().await;
    let one = Client::connect(&addrs[..1], client_config()).await.unwrap();
    let three = Client::connect(&addrs[2..], client_config()).await.unwrap();

    // 100 keys in one batch through node 1 ...
    let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("key-{i}").into_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("value-{i}").into_bytes())
        .collect();
    let items: Vec<BatchPut> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| BatchPut::new(k, v))
        .collect();
    let written = one
        .multi_put(b"b", &items, WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(written.len(), 100);
    for (i, w) in written.iter().enumerate() {
        let w = w.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert!(w.receipt.answered.len() >= 2, "a quorum write: {w:?}");
        assert!(!w.context.is_empty());
    }
    // ... read back in one batch through node 3, in request order, with
    // three missing keys among them.
    let mut asked: Vec<Vec<u8>> = keys.iter().rev().cloned().collect();
    asked.insert(0, b"missing-0".to_vec());
    asked.insert(50, b"missing-1".to_vec());
    asked.push(b"missing-2".to_vec());
    let read = three.multi_get(b"b", &asked, quorum_reads()).await.unwrap();
    assert_eq!(read.len(), 103);
    for (key, item) in asked.iter().zip(&read) {
        let want = keys
            .iter()
            .position(|k| k == key)
            .map(|i| values[i].clone());
        assert_eq!(value(item), want, "key {:?}", String::from_utf8_lossy(key));
        let got = item.as_ref().unwrap();
        assert!(got.receipt.answered.len() >= 2, "{got:?}");
        if want.is_none() {
            assert!(got.context.is_empty(), "{got:?}");
        }
    }
    // Each item matches a single get of its key.
    let single = three.get(b"b", b"key-7").await.unwrap();
    assert_eq!(
        single.value,
        value(&read[asked.iter().position(|k| k == b"key-7").unwrap()])
    );

    // Siblings per item: two blind writes of `s` (default policy:
    // Siblings), one write of `t`.
    one.put(b"b", b"s", b"s1", None).await.unwrap();
    three.put(b"b", b"s", b"s2", None).await.unwrap();
    one.put(b"b", b"t", b"t1", None).await.unwrap();
    let read = one
        .multi_get(b"b", &[b"s".as_slice(), b"t"], quorum_reads())
        .await
        .unwrap();
    let s = read[0].as_ref().unwrap();
    assert_eq!(s.value, None);
    let mut seen: Vec<Vec<u8>> = s
        .siblings
        .iter()
        .map(|x| x.value.clone().unwrap().into_vec())
        .collect();
    seen.sort();
    assert_eq!(seen, vec![b"s1".to_vec(), b"s2".to_vec()]);
    assert_eq!(value(&read[1]), Some(b"t1".to_vec()));
    // A batch with each read's context replaces what it saw.
    let (s_ctx, t_ctx) = (s.context.clone(), read[1].as_ref().unwrap().context.clone());
    let written = three
        .multi_put(
            b"b",
            &[
                BatchPut::new(b"s", b"s3").with_context(&s_ctx),
                BatchPut::new(b"t", b"t2").with_context(&t_ctx),
            ],
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(written.iter().all(|w| w.is_ok()), "{written:?}");
    let read = one
        .multi_get(b"b", &[b"s".as_slice(), b"t"], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"s3".to_vec()));
    assert_eq!(value(&read[1]), Some(b"t2".to_vec()));

    // One item failing (a context no node made) does not fail the others.
    let written = one
        .multi_put(
            b"b",
            &[
                BatchPut::new(b"ok-1", b"v"),
                BatchPut::new(b"bad", b"v").with_context(&[0xff, 0x00, 0x13]),
                BatchPut::new(b"ok-2", b"v"),
            ],
            WriteOptions::default(),
        )
        .await
        .unwrap();
    assert!(written[0].is_ok() && written[2].is_ok(), "{written:?}");
    // Refused as a single put with that context is.
    let alone = one.put(b"b", b"bad", b"v", Some(&[0xff, 0x00, 0x13])).await;
    assert_eq!(code(&written[1]), code(&alone));
    assert_eq!(code(&alone), ErrorCode::BadRequest);
    match &written[1] {
        // A write item's error says whether it may have been applied.
        Err(Error::Remote(e)) => assert_eq!(e.indefinite, Some(false), "{e:?}"),
        other => panic!("{other:?}"),
    }
    let read = one
        .multi_get(b"b", &[b"ok-1".as_slice(), b"bad", b"ok-2"], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"v".to_vec()));
    assert_eq!(value(&read[1]), None, "the refused item was stored");
    assert_eq!(value(&read[2]), Some(b"v".to_vec()));

    // The empty key is a key, in a batch as alone.
    one.multi_put(
        b"b",
        &[BatchPut::new(b"", b"empty")],
        WriteOptions::default(),
    )
    .await
    .unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        one.get(b"b", b"").await.unwrap().value,
        Some(b"empty".to_vec())
    );
    let read = three
        .multi_get(b"b", &[b"".as_slice()], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"empty".to_vec()));

    stop(nodes, ports).await;
}

#[actix_rt::test]
async fn what_the_limits_refuse_is_refused_whole() {
    let (nodes, ports, addrs) = cluster().await;
    let client = Client::connect(&addrs[..1], client_config()).await.unwrap();
    let nothing: &[&[u8]] = &[];
    let w = WriteOptions::default;

    // Empty batches.
    let got = client.multi_get(b"b", nothing, quorum_reads()).await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    let got = client.multi_put(b"b", &[], w()).await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);

    // Past MAX_BATCH_KEYS; at it, read.
    let many: Vec<Vec<u8>> = (0..=MAX_BATCH_KEYS)
        .map(|i| format!("n{i}").into_bytes())
        .collect();
    let got = client.multi_get(b"b", &many, quorum_reads()).await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    let items: Vec<BatchPut> = many.iter().map(|k| BatchPut::new(k, b"v")).collect();
    let got = client.multi_put(b"b", &items, w()).await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    let got = client
        .multi_get(b"b", &many[..MAX_BATCH_KEYS], quorum_reads())
        .await
        .unwrap();
    assert_eq!(got.len(), MAX_BATCH_KEYS);
    assert!(got.iter().all(|g| value(g).is_none()));
    // Nothing of the refused 1,001-item batch was written.
    assert_eq!(client.get(b"b", b"n0").await.unwrap().value, None);

    // One oversized value or key refuses the batch before any item is
    // written; a refused batch is certainly not applied.
    let big = vec![0u8; ringkv::config::MAX_VALUE_BYTES + 1];
    let got = client
        .multi_put(
            b"b",
            &[BatchPut::new(b"small", b"v"), BatchPut::new(b"big", &big)],
            w(),
        )
        .await;
    match &got {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert_eq!(e.indefinite, Some(false), "{e:?}");
            assert!(e.message.contains("value of"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.get(b"b", b"small").await.unwrap().value, None);
    let long_key = vec![b'k'; ringkv::config::MAX_KEY_BYTES + 1];
    let got = client
        .multi_get(b"b", &[b"k".to_vec(), long_key.clone()], quorum_reads())
        .await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    // Every value within its own limit, the batch past its budget.
    let half = vec![1u8; ringkv::config::MAX_VALUE_BYTES / 2 + 1];
    let got = client
        .multi_put(
            b"b",
            &[BatchPut::new(b"h1", &half), BatchPut::new(b"h2", &half)],
            w(),
        )
        .await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    assert_eq!(client.get(b"b", b"h1").await.unwrap().value, None);

    // A read batch whose values pass MAX_BATCH_BYTES: the items past the
    // budget fail alone, the reply still fits a frame.
    let large = vec![2u8; 8 << 20];
    client.put(b"b", b"large-1", &large, None).await.unwrap();
    client.put(b"b", b"large-2", &large, None).await.unwrap();
    let read = client
        .multi_get(
            b"b",
            &[b"large-1".as_slice(), b"h1", b"large-2"],
            quorum_reads(),
        )
        .await
        .unwrap();
    assert_eq!(value(&read[0]).map(|v| v.len()), Some(large.len()));
    assert_eq!(value(&read[1]), None);
    assert_eq!(code(&read[2]), ErrorCode::InvalidArgument);
    match &read[2] {
        Err(Error::Remote(e)) => assert!(e.message.contains("alone"), "{e:?}"),
        other => panic!("{other:?}"),
    }

    // Adversarial: one key twice. Read twice, each answered; written
    // twice, refused whole (the two writes would race).
    client.put(b"b", b"dup", b"d0", None).await.unwrap();
    let read = client
        .multi_get(b"b", &[b"dup".as_slice(), b"dup", b"other"], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"d0".to_vec()));
    assert_eq!(value(&read[1]), Some(b"d0".to_vec()));
    assert_eq!(value(&read[2]), None);
    let got = client
        .multi_put(
            b"b",
            &[
                BatchPut::new(b"dup", b"d1"),
                BatchPut::new(b"fresh", b"f"),
                BatchPut::new(b"dup", b"d2"),
            ],
            w(),
        )
        .await;
    match &got {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(e.message.contains("twice"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    let read = client.get(b"b", b"dup").await.unwrap();
    assert_eq!(read.value, Some(b"d0".to_vec()));
    assert!(read.siblings.is_empty());
    assert_eq!(client.get(b"b", b"fresh").await.unwrap().value, None);

    stop(nodes, ports).await;
}

/// A batch takes about its timeout, as one op would: keys whose turn
/// comes after it ran out are not sent, and fail with a retryable
/// `Timeout` (a write item: certainly not applied). 1,000 quorum writes
/// and reads on three nodes take far more than the 1 ms given here.
#[actix_rt::test]
async fn a_batch_does_not_outlive_its_timeout() {
    let (nodes, ports, addrs) = cluster().await;
    let client = Client::connect(&addrs[..1], client_config()).await.unwrap();
    let keys: Vec<Vec<u8>> = (0..MAX_BATCH_KEYS)
        .map(|i| format!("t{i}").into_bytes())
        .collect();
    let items: Vec<BatchPut> = keys.iter().map(|k| BatchPut::new(k, b"v")).collect();
    let written = client
        .multi_put(
            b"b",
            &items,
            WriteOptions {
                timeout_ms: Some(1),
                ..WriteOptions::default()
            },
        )
        .await
        .unwrap();
    let mut not_sent = Vec::new();
    for (i, w) in written.iter().enumerate() {
        match w {
            Ok(_) => {}
            Err(Error::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::Timeout, "{e:?}");
                assert!(e.retryable, "{e:?}");
                if e.message.contains("not sent") {
                    assert_eq!(e.indefinite, Some(false), "{e:?}");
                    not_sent.push(i);
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(!not_sent.is_empty(), "every item was sent within 1 ms");
    // Not sent means not written.
    let read = client
        .multi_get(
            b"b",
            &not_sent.iter().map(|&i| &keys[i]).collect::<Vec<_>>(),
            quorum_reads(),
        )
        .await
        .unwrap();
    assert!(read.iter().all(|r| value(r).is_none()));
    // Reads likewise; a zero timeout is refused whole.
    let read = client
        .multi_get(
            b"b",
            &keys,
            ReadOptions {
                timeout_ms: Some(1),
                ..ReadOptions::default()
            },
        )
        .await
        .unwrap();
    assert!(read.iter().any(|r| matches!(r, Err(Error::Remote(e))
        if e.code == ErrorCode::Timeout && e.indefinite.is_none())));
    let got = client
        .multi_get(
            b"b",
            &keys[..1],
            ReadOptions {
                timeout_ms: Some(0),
                ..ReadOptions::default()
            },
        )
        .await;
    assert_eq!(code(&got), ErrorCode::InvalidArgument);
    stop(nodes, ports).await;
}

#[actix_rt::test]
async fn a_reader_may_batch_reads_but_not_writes() {
    use ringkv::node::auth::{hash_password_with_cost, Users};
    let (nodes, mut ports, addrs) = cluster().await;
    let mut text = String::new();
    for (name, role) in [("reader", "read"), ("writer", "readwrite")] {
        let hash = hash_password_with_cost(&format!("{name}-pw"), 64, 1).unwrap();
        text.push_str(&format!(
            "[[user]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    let guarded = port(
        &nodes[0],
        ClientPortConfig {
            auth: ClientAuth::Users(Arc::new(Users::parse(&text).unwrap())),
            ..ClientPortConfig::default()
        },
    )
    .await;
    let guarded_addr = [guarded.local_addr().to_string()];
    let as_user = |user: &str| ClientConfig {
        credentials: Some(Credentials::new(user, format!("{user}-pw"))),
        ..client_config()
    };
    let reader = Client::connect(&guarded_addr, as_user("reader"))
        .await
        .unwrap();
    let writer = Client::connect(&guarded_addr, as_user("writer"))
        .await
        .unwrap();

    let got = reader
        .multi_put(b"b", &[BatchPut::new(b"r", b"v")], WriteOptions::default())
        .await;
    match &got {
        Err(Error::Remote(e)) => {
            assert_eq!(e.code, ErrorCode::PermissionDenied);
            assert_eq!(e.indefinite, Some(false), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    let written = writer
        .multi_put(b"b", &[BatchPut::new(b"r", b"v")], WriteOptions::default())
        .await
        .unwrap();
    assert!(written[0].is_ok(), "{written:?}");
    let read = reader
        .multi_get(b"b", &[b"r".as_slice()], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"v".to_vec()));
    // The open ports are unaffected.
    let open = Client::connect(&addrs[1..2], client_config())
        .await
        .unwrap();
    let read = open
        .multi_get(b"b", &[b"r".as_slice()], quorum_reads())
        .await
        .unwrap();
    assert_eq!(value(&read[0]), Some(b"v".to_vec()));

    ports.push(guarded);
    stop(nodes, ports).await;
}
