//! The client protocol end to end on a real cluster: three in-process
//! nodes (actors, coordinator, replicas, over the in-process network), each
//! behind its own [`ClientPort`] on 127.0.0.1, all in one actix `System`
//! (a current-thread runtime), and the Rust [`Client`] over TCP.
//!
//! What it shows: a write through one node's port is read through
//! another's; a counter bucket set up through the protocol counts; the
//! receipt names the replicas; when a node and its port go away, a client
//! holding all three addresses fails over and still reads the quorum.
//! Every wait is bounded; nothing depends on speed.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::client::{Client, ClientConfig};
use ringkv::crdt::CrdtKind;
use ringkv::node::client_port::{ClientPort, ClientPortConfig};
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::protocol::{BucketInfo, ErrorCode, ErrorReply, Reply, Response};
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, MemoryNetConfig, MemoryNetwork, NodeId};

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

async fn spawn(network: &MemoryNetwork, id: u64) -> (Node, ClientPort) {
    let net = network.clone();
    let node = Node::spawn(config(id), move || async move {
        let (endpoint, inbox) = net.endpoint(NodeId(id))?;
        Ok(TransportParts::new(Arc::new(endpoint), inbox))
    })
    .await
    .unwrap();
    let port = ClientPort::start(
        "127.0.0.1:0",
        Arc::new(node.clone()),
        ClientPortConfig::default(),
    )
    .await
    .unwrap();
    (node, port)
}

fn client_config() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        max_attempts: 8,
        ..ClientConfig::default()
    }
}

#[actix_rt::test]
async fn three_nodes_behind_client_ports() {
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for id in 1..=3 {
        let (node, port) = spawn(&network, id).await;
        nodes.push(node);
        ports.push(port);
    }
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let formed = wait_until(Duration::from_secs(30), || formed(&nodes, &ids)).await;
    assert!(formed.is_some(), "the cluster did not form");
    let addrs: Vec<String> = ports.iter().map(|p| p.local_addr().to_string()).collect();

    // Write through node 1, read through node 3.
    let one = Client::connect(&addrs[..1], client_config()).await.unwrap();
    let three = Client::connect(&addrs[2..], client_config()).await.unwrap();
    assert_eq!(one.connected_to().await.unwrap().1, NodeId(1));
    assert_eq!(three.connected_to().await.unwrap().1, NodeId(3));
    let written = one.put(b"b", b"k", b"v1", None).await.unwrap();
    assert!(
        written.receipt.answered.len() >= 2,
        "a quorum write: {:?}",
        written.receipt
    );
    let read = three.get(b"b", b"k").await.unwrap();
    assert_eq!(read.value, Some(b"v1".to_vec()));
    assert!(read.siblings.is_empty());
    // A write with the context read replaces the value.
    three
        .put(b"b", b"k", b"v2", Some(&read.context))
        .await
        .unwrap();
    let read = one.get(b"b", b"k").await.unwrap();
    assert_eq!(read.value, Some(b"v2".to_vec()));

    // A counter bucket, set up through the protocol.
    let props = BucketInfo {
        n: 3,
        r: Consistency::Quorum,
        w: Consistency::Quorum,
        policy: ConflictPolicy::Crdt(CrdtKind::PnCounter),
        sloppy_quorum: true,
        timeout_ms: 5000,
    };
    let stored = one.set_bucket(b"counts", props.clone()).await.unwrap();
    assert_eq!(stored, props);
    // The bucket reaches node 3 by gossip.
    let seen = wait_until(Duration::from_secs(20), || async {
        three.bucket(b"counts").await.ok().as_ref() == Some(&props)
    })
    .await;
    assert!(seen.is_some(), "bucket properties did not reach node 3");
    one.counter_add(b"counts", b"c", 5).await.unwrap();
    three.counter_add(b"counts", b"c", -2).await.unwrap();
    assert_eq!(one.counter_get(b"counts", b"c").await.unwrap().value, 3);

    // Views: the preference list has the three nodes; status names node 3.
    let targets = three.preference_list(b"b", b"k").await.unwrap();
    let mut holders: Vec<NodeId> = targets.iter().map(|t| t.node).collect();
    holders.sort();
    assert_eq!(holders, ids);
    assert_eq!(three.status().await.unwrap().node, NodeId(3));
    assert_eq!(three.ring().await.unwrap().nodes.len(), 3);

    // A client with every address, connected to node 1; node 1 goes away.
    let any = Client::connect(&addrs, client_config()).await.unwrap();
    assert_eq!(any.connected_to().await.unwrap().1, NodeId(1));
    let first_port = ports.remove(0);
    first_port.shutdown().await;
    let first_node = nodes.remove(0);
    first_node.shutdown().await;
    let read = any.get(b"b", b"k").await.unwrap();
    assert_eq!(read.value, Some(b"v2".to_vec()));
    let (_, now) = any.connected_to().await.unwrap();
    assert_ne!(now, NodeId(1), "the client failed over");

    for port in &ports {
        port.shutdown().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// One raw request on a framed connection: `op` (a CBOR value, as a
/// client written from docs/protocol.md builds it) with id `id`; the
/// response.
async fn ask(
    conn: &mut tokio_util::codec::Framed<
        tokio::net::TcpStream,
        tokio_util::codec::LengthDelimitedCodec,
    >,
    id: u64,
    op: ciborium::Value,
) -> std::result::Result<Reply, ErrorReply> {
    use futures_util::{SinkExt, StreamExt};
    let request = ciborium::Value::Map(vec![
        (text("id"), ciborium::Value::Integer(id.into())),
        (text("op"), op),
    ]);
    let mut frame = Vec::new();
    ciborium::into_writer(&request, &mut frame).unwrap();
    conn.send(bytes::Bytes::from(frame)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), conn.next())
        .await
        .expect("an answer within 30 s")
        .expect("the connection stays open")
        .unwrap();
    let response: Response = ringkv::codec::decode(&answer, 64 << 20).unwrap();
    assert_eq!(response.id, id);
    response.result
}

fn text(s: &str) -> ciborium::Value {
    ciborium::Value::Text(s.into())
}

/// `{name: {fields...}}` with byte-string bucket and key.
fn op(
    name: &str,
    bucket: &[u8],
    key: &[u8],
    fields: Vec<(&str, ciborium::Value)>,
) -> ciborium::Value {
    let mut all = vec![
        (text("bucket"), ciborium::Value::Bytes(bucket.to_vec())),
        (text("key"), ciborium::Value::Bytes(key.to_vec())),
    ];
    all.extend(fields.into_iter().map(|(k, v)| (text(k), v)));
    ciborium::Value::Map(vec![(text(name), ciborium::Value::Map(all))])
}

fn refused(result: std::result::Result<Reply, ErrorReply>, write: bool) -> ErrorReply {
    let err = result.expect_err("refused");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    assert!(!err.retryable, "{err:?}");
    assert_eq!(err.indefinite, write.then_some(false), "{err:?}");
    err
}

/// Issue [9], as a client written from docs/protocol.md met it, through a
/// real node's client port: `"options": null` was a bad request (C12); a
/// plain put into a counter bucket was stored and ruined the key (A4); an
/// add past 64 bits was refused yet stored (A5); a 65,535-byte key was
/// `Unavailable` and retryable, and a value of 16 MiB - 150 bytes was
/// stored on one node and never replicated (C11). Each is now
/// `InvalidArgument`, not retryable, definitely not applied, and the key
/// keeps working.
#[actix_rt::test]
async fn bad_input_is_refused_before_anything_is_stored() {
    use ciborium::Value as V;
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for id in 1..=3 {
        let (node, port) = spawn(&network, id).await;
        nodes.push(node);
        ports.push(port);
    }
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let formed = wait_until(Duration::from_secs(30), || formed(&nodes, &ids)).await;
    assert!(formed.is_some(), "the cluster did not form");
    let addr = ports[0].local_addr();
    let client = Client::connect(&[addr.to_string()], client_config())
        .await
        .unwrap();
    let counts = BucketInfo {
        n: 3,
        r: Consistency::All,
        w: Consistency::All,
        policy: ConflictPolicy::Crdt(CrdtKind::PnCounter),
        sloppy_quorum: true,
        timeout_ms: 5000,
    };
    client.set_bucket(b"counts", counts.clone()).await.unwrap();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let codec = tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(64 << 20)
        .new_codec();
    let mut conn = tokio_util::codec::Framed::new(stream, codec);
    let null_options = || ("options", V::Null);

    // A4 + C12: a plain put into the counter bucket, options null.
    let put = op(
        "Put",
        b"counts",
        b"c",
        vec![
            ("value", V::Bytes(b"7".to_vec())),
            ("context", V::Null),
            null_options(),
        ],
    );
    let err = refused(ask(&mut conn, 1, put).await, true);
    assert!(err.message.contains("PnCounter"), "{err:?}");
    let add = |by: i64| {
        op(
            "CounterAdd",
            b"counts",
            b"c",
            vec![("by", V::Integer(by.into())), null_options()],
        )
    };
    let get = op("CounterGet", b"counts", b"c", vec![null_options()]);
    match ask(&mut conn, 2, add(5)).await {
        Ok(Reply::Counter { value: 5, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A5: past 64 bits, refused and stored nowhere (reads are at ALL).
    refused(ask(&mut conn, 3, add(i64::MAX)).await, true);
    match ask(&mut conn, 4, get.clone()).await {
        Ok(Reply::Counter { value: 5, .. }) => {}
        other => panic!("{other:?}"),
    }
    // C12: null options on the set and object reads too.
    refused(
        ask(
            &mut conn,
            5,
            op("SetMembers", b"counts", b"c", vec![null_options()]),
        )
        .await,
        false,
    );
    match ask(&mut conn, 6, op("Get", b"b", b"k", vec![null_options()])).await {
        Ok(Reply::Object { value: None, .. }) => {}
        other => panic!("{other:?}"),
    }
    // A4: the counter bucket's policy cannot change to another type.
    let props = |policy: &str| {
        V::Map(vec![
            (text("n"), V::Integer(3.into())),
            (text("r"), text("Quorum")),
            (text("w"), text("Quorum")),
            (text("policy"), text(policy)),
            (text("sloppy_quorum"), V::Bool(true)),
            (text("timeout_ms"), V::Integer(5000.into())),
        ])
    };
    let set_bucket = V::Map(vec![(
        text("SetBucket"),
        V::Map(vec![
            (text("bucket"), V::Bytes(b"counts".to_vec())),
            (text("props"), props("Siblings")),
        ]),
    )]);
    refused(ask(&mut conn, 7, set_bucket).await, true);
    assert_eq!(client.bucket(b"counts").await.unwrap(), counts);

    // C11: a key of 65,535 bytes, a value of 16 MiB - 150 bytes.
    let long_key = vec![b'k'; 65_535];
    refused(
        ask(
            &mut conn,
            8,
            op("Get", b"b", &long_key, vec![null_options()]),
        )
        .await,
        false,
    );
    let put = op(
        "Put",
        b"b",
        &long_key,
        vec![("value", V::Bytes(b"v".to_vec()))],
    );
    refused(ask(&mut conn, 9, put).await, true);
    let big = op(
        "Put",
        b"b",
        b"big",
        vec![("value", V::Bytes(vec![0; 16 * 1024 * 1024 - 150]))],
    );
    let started = std::time::Instant::now();
    refused(ask(&mut conn, 10, big).await, true);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered, not timed out"
    );
    // At the limits, a write is stored on every replica.
    let key = vec![b'k'; ringkv::config::MAX_KEY_BYTES];
    let value = vec![1; ringkv::config::MAX_VALUE_BYTES];
    let put = op(
        "Put",
        b"b",
        &key,
        vec![
            ("value", V::Bytes(value.clone())),
            ("options", V::Map(vec![(text("w"), text("All"))])),
        ],
    );
    assert!(matches!(
        ask(&mut conn, 11, put).await,
        Ok(Reply::Written { .. })
    ));
    for (i, node) in nodes.iter().enumerate() {
        let local = node
            .execute(ringkv::protocol::Op::LocalGet {
                bucket: serde_bytes::ByteBuf::from(b"b".to_vec()),
                key: serde_bytes::ByteBuf::from(key.clone()),
            })
            .await
            .unwrap();
        match local {
            Reply::Object { value: Some(v), .. } => assert_eq!(v.len(), value.len()),
            other => panic!("node {}: {other:?}", i + 1),
        }
    }

    for port in &ports {
        port.shutdown().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
}
