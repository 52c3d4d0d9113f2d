//! The membership actors of in-process nodes on real TCP over 127.0.0.1:
//! the cluster forms through a seed address, a crashed node is DOWN on
//! every peer within a generous bound, a short stall is never convicted,
//! and a graceful leave reaches everyone.
//!
//! Each node binds its `TcpTransport` inside its own actix arbiter, so the
//! transport's listener, link and reader tasks run on the runtime that the
//! arbiter drives; the cluster forming at all is the proof that they do.
//! (Separate processes wait for the `ringkv-node` binary, issue [5].)
//! A partition is injected with `TcpTransport::set_blocked`, which drops
//! frames to and from the other side on each node, as a cut network would.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::{
    ClusterSecret, MemberEvent, MemberStatus, NodeId, TcpConfig, TcpTransport, Transport,
};

const SECRET: &[u8] = b"membership over tcp test secret";

/// Every node of these tests gets its certificate from this CA.
static CA: std::sync::LazyLock<ringkv::ClusterCa> =
    std::sync::LazyLock::new(|| ringkv::ClusterCa::generate("membership-test").unwrap());

async fn spawn(id: u64, seeds: Vec<(NodeId, String)>) -> Node {
    spawn_with_handle(id, seeds).await.0
}

/// Spawns a node and also returns its TCP transport, for fault injection.
async fn spawn_with_handle(id: u64, seeds: Vec<(NodeId, String)>) -> (Node, Arc<TcpTransport>) {
    let mut config = NodeConfig::new(NodeId(id), String::new(), seeds);
    config.membership = fast();
    config.ring = small_ring();
    // The crashed node stays crashed: the leave after it need not wait
    // the default minute before the crashed node's moves are waived.
    config.ring.waive_down_after = Duration::from_secs(2);
    let slot: Arc<std::sync::Mutex<Option<Arc<TcpTransport>>>> = Arc::default();
    let keep = slot.clone();
    let node = Node::spawn(config, move || async move {
        let mut tcp = TcpConfig::new(
            NodeId(id),
            "membership-test",
            ClusterSecret::new(SECRET.to_vec())?,
            CA.security_for(NodeId(id))?,
            "127.0.0.1:0",
        );
        tcp.backoff_min = Duration::from_millis(10);
        tcp.backoff_max = Duration::from_millis(200);
        tcp.shutdown_grace = Duration::from_millis(100);
        let (transport, inbox) = TcpTransport::bind(tcp).await?;
        let addr = transport.local_addr().to_string();
        let transport = Arc::new(transport);
        *keep.lock().unwrap() = Some(transport.clone());
        Ok(TransportParts {
            transport,
            inbox,
            advertised: Some(addr),
        })
    })
    .await
    .unwrap();
    let transport = slot
        .lock()
        .unwrap()
        .take()
        .expect("the transport was built");
    (node, transport)
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

#[actix_rt::test]
async fn tcp_partition_makes_each_side_see_the_other_down_and_healing_brings_them_back() {
    let first = spawn_with_handle(1, vec![]).await;
    let seed = vec![(NodeId(1), first.0.addr().to_string())];
    let mut nodes = vec![first];
    for id in 2..=4 {
        nodes.push(spawn_with_handle(id, seed.clone()).await);
    }
    let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
    let (handles, transports): (Vec<Node>, Vec<Arc<TcpTransport>>) = nodes.into_iter().unzip();
    let formed = wait_until(Duration::from_secs(30), || async {
        all_see(&handles, &ids, MemberStatus::Alive).await && same_ring(&handles, &ids).await
    })
    .await;
    assert!(formed.is_some(), "the TCP cluster did not form");

    // {1, 2} | {3, 4}
    let (left, right) = ([NodeId(1), NodeId(2)], [NodeId(3), NodeId(4)]);
    for (i, t) in transports.iter().enumerate() {
        t.set_blocked(if i < 2 { right } else { left });
    }
    let bound = expected_detection(4) * 10;
    let split = wait_until(bound, || async {
        all_see(&handles[..2], &right, MemberStatus::Down).await
            && all_see(&handles[2..], &left, MemberStatus::Down).await
    })
    .await;
    let split =
        split.unwrap_or_else(|| panic!("the sides did not see each other DOWN within {bound:?}"));
    assert!(all_see(&handles[..2], &left, MemberStatus::Alive).await);
    assert!(all_see(&handles[2..], &right, MemberStatus::Alive).await);
    assert!(transports[0].stats().frames_blocked > 0);
    eprintln!("tcp: partition to DOWN on both sides: {split:?}");

    for t in &transports {
        t.set_blocked([]);
    }
    let healed = wait_until(Duration::from_secs(30), || async {
        all_see(&handles, &ids, MemberStatus::Alive).await
    })
    .await;
    let healed = healed.expect("healing did not bring everyone back ALIVE");
    eprintln!("tcp: heal to ALIVE everywhere: {healed:?}");
    for n in handles {
        n.shutdown().await;
    }
}
