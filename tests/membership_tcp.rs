//! The membership actors of in-process nodes on real TCP over 127.0.0.1:
//! the cluster forms through a seed address, a crashed node is DOWN on
//! every peer within a generous bound, a short stall is never convicted,
//! and a graceful leave reaches everyone.
//!
//! Each node binds its `TcpTransport` inside its own actix arbiter, so the
//! transport's listener, link and reader tasks run on the runtime that the
//! arbiter drives; the cluster forming at all is the proof that they do.
//! (Separate processes wait for the `ringkv-node` binary, issue [5].)
//! Partitions are tested on the in-process network only: loopback TCP has
//! no way to cut a link.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::{ClusterSecret, MemberEvent, MemberStatus, NodeId, TcpConfig, TcpTransport};
use support::*;

const SECRET: &[u8] = b"membership over tcp test secret";

async fn spawn(id: u64, seeds: Vec<(NodeId, String)>) -> Node {
    let mut config = NodeConfig::new(NodeId(id), String::new(), seeds);
    config.membership = fast();
    config.ring = small_ring();
    Node::spawn(config, move || async move {
        let mut tcp = TcpConfig::new(
            NodeId(id),
            "membership-test",
            ClusterSecret::new(SECRET.to_vec())?,
            "127.0.0.1:0",
        );
        tcp.backoff_min = Duration::from_millis(10);
        tcp.backoff_max = Duration::from_millis(200);
        tcp.shutdown_grace = Duration::from_millis(100);
        let (transport, inbox) = TcpTransport::bind(tcp).await?;
        let addr = transport.local_addr().to_string();
        Ok(TransportParts {
            transport: Arc::new(transport),
            inbox,
            advertised: Some(addr),
        })
    })
    .await
    .unwrap()
}

async fn cluster(n: u64) -> Vec<Node> {
    let first = spawn(1, vec![]).await;
    assert!(first.addr().starts_with("127.0.0.1:"), "{}", first.addr());
    let seed = vec![(NodeId(1), first.addr().to_string())];
    let mut nodes = vec![first];
    for id in 2..=n {
        nodes.push(spawn(id, seed.clone()).await);
    }
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let formed = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await && same_ring(&nodes, &ids).await
    })
    .await;
    assert!(formed.is_some(), "the TCP cluster did not form");
    nodes
}

#[actix_rt::test]
async fn tcp_cluster_detects_a_crash_tolerates_a_stall_and_sees_a_leave() {
    let mut nodes = cluster(4).await;
    let mut subs: Vec<_> = nodes.iter().map(Node::subscribe).collect();

    // A 150 ms stall (half the acceptable pause) of node 2: no conviction.
    assert!(nodes[1].stall(Duration::from_millis(150)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for rx in &mut subs {
        let down: Vec<MemberEvent> = drain(rx)
            .into_iter()
            .filter(|e| matches!(e, MemberEvent::Down { .. }))
            .collect();
        assert!(down.is_empty(), "{down:?}");
    }

    // Crash node 4: DOWN on the three others within ten times the
    // expected time.
    let victim = nodes.pop().unwrap();
    let victim_id = victim.id();
    victim.crash().await;
    let bound = expected_detection(4) * 10;
    let took = wait_until(bound, || async {
        all_see(&nodes, &[victim_id], MemberStatus::Down).await
    })
    .await;
    let took = took.unwrap_or_else(|| panic!("not DOWN everywhere within {bound:?}"));
    eprintln!(
        "tcp: crash to DOWN on all peers: {took:?} (expected about {:?})",
        expected_detection(4)
    );
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    assert!(all_see(&nodes, &ids, MemberStatus::Alive).await);

    // Node 3 leaves gracefully.
    let leaver = nodes.pop().unwrap();
    let left = leaver.id();
    leaver.leave().await.unwrap();
    let done = wait_until(Duration::from_secs(20), || async {
        all_see(&nodes, &[left], MemberStatus::Left).await
    })
    .await;
    assert!(done.is_some(), "the leave did not reach everyone");
    // The crashed node is still in the ring (a failure is not a leave);
    // the leaver is not.
    let ring = nodes[0].ring().await.unwrap();
    assert!(ring.is_member(victim_id) && !ring.is_member(left));
    for n in nodes {
        n.shutdown().await;
    }
}
