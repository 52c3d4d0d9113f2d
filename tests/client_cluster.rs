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

mod support;

use std::sync::Arc;
use std::time::Duration;

use ringkv::client::{Client, ClientConfig};
use ringkv::crdt::CrdtKind;
use ringkv::node::client_port::{ClientPort, ClientPortConfig};
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::protocol::BucketInfo;
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, MemberStatus, MemoryNetConfig, MemoryNetwork, NodeId};
use support::*;

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
    let formed = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await && same_ring(&nodes, &ids).await
    })
    .await;
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
