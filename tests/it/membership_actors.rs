//! Real actors over the in-process network, with 50 ms heartbeats: a
//! crashed node is DOWN on every peer within a generous bound of the
//! expected time, and a new process under its id comes back ALIVE by
//! refuting; a node stalled for less than the acceptable pause is
//! never convicted; a node stalled for longer convicts no one on its
//! return; a partition makes each side see the other DOWN and healing
//! brings them back; a graceful leave reaches everyone and the ring, and
//! subscribers get the ring snapshots; the transport actor answers pings.
//!
//! Each node runs on its own actix arbiter (thread), and "stall" blocks
//! that thread, freezing the node's actors, timers and network task
//! together. Every wait is bounded; no assertion depends on speed beyond a
//! bound of ten times the expected time.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::node::{Node, NodeConfig, NodeEvent, TransportParts};
use ringkv::{
    Envelope, MemberEvent, MemberStatus, MemoryNetConfig, MemoryNetwork, Message, NodeId, Transport,
};

async fn spawn(network: &MemoryNetwork, id: u64) -> Node {
    spawn_memory(network, memory_config(id)).await.unwrap()
}

async fn cluster(n: u64) -> (MemoryNetwork, Vec<Node>) {
    memory_cluster(n, |_| {}).await
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix_rt::test]
async fn crashed_node_is_down_on_every_peer_and_a_restart_comes_back() {
    let (network, mut nodes) = cluster(5).await;
    let mut events = nodes[0].subscribe();
    let victim = nodes.pop().unwrap();
    let victim_id = victim.id();
    victim.crash().await;
    let bound = expected_detection(5) * 10;
    let took = wait_until(bound, || async {
        all_see(&nodes, &[victim_id], MemberStatus::Down).await
    })
    .await;
    let took = took.unwrap_or_else(|| panic!("not DOWN everywhere within {bound:?}"));
    eprintln!(
        "crash to DOWN on all 4 peers: {took:?} (expected about {:?})",
        expected_detection(5)
    );
    let seen = drain(&mut events);
    assert!(
        seen.contains(&MemberEvent::Down {
            node: victim_id,
            incarnation: 0
        }),
        "{seen:?}"
    );
    // A DOWN node leaves the monitors' ring, so node 1 keeps no detector
    // of it (or one over the threshold, if its view lags); in a cluster this
    // small it monitors every live node, each with a low phi.
    let phi = nodes[0].phi().await.unwrap();
    assert!(
        phi.get(&victim_id)
            .is_none_or(|&p| p > fast().phi_threshold),
        "{phi:?}"
    );
    for live in [NodeId(2), NodeId(3), NodeId(4)] {
        assert!(phi[&live] < fast().phi_threshold, "{phi:?}");
    }
    // Nothing about live nodes was convicted.
    assert!(
        all_see(
            &nodes,
            &[NodeId(1), NodeId(2), NodeId(3), NodeId(4)],
            MemberStatus::Alive
        )
        .await
    );
    // A new process under the same id starts at incarnation 0, hears that
    // it is DOWN and refutes with a higher incarnation: ALIVE everywhere.
    nodes.push(spawn(&network, victim_id.0).await);
    let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
    let back = wait_until(Duration::from_secs(20), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
    })
    .await;
    assert!(back.is_some(), "the restarted node did not come back ALIVE");
    let entry = nodes[0].members().await.unwrap();
    let entry = entry.iter().find(|e| e.node == victim_id).unwrap();
    assert!(entry.incarnation >= 1, "{entry:?}");
    stop(nodes).await;
}

#[actix_rt::test]
async fn stalls_shorter_than_the_acceptable_pause_are_never_convicted_and_long_ones_convict_no_one()
{
    let (_network, nodes) = cluster(4).await;
    let mut subs: Vec<_> = nodes.iter().map(Node::subscribe).collect();
    // 150 ms, half the acceptable pause, three times over.
    for _ in 0..3 {
        assert!(nodes[1].stall(Duration::from_millis(150)));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, rx) in subs.iter_mut().enumerate() {
        let down: Vec<MemberEvent> = drain(rx)
            .into_iter()
            .filter(|e| matches!(e, MemberEvent::Down { .. }))
            .collect();
        assert!(down.is_empty(), "node {} convicted: {down:?}", i + 1);
    }
    // A stall of 1.5 s, five times the acceptable pause: the others may
    // convict node 3, but node 3, on its return, convicts no one, and it
    // comes back ALIVE everywhere by refuting.
    assert!(nodes[2].stall(Duration::from_millis(1500)));
    let ids: Vec<NodeId> = nodes.iter().map(Node::id).collect();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let back = wait_until(Duration::from_secs(15), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
    })
    .await;
    assert!(back.is_some(), "node 3 did not come back ALIVE");
    let own = drain(&mut subs[2]);
    assert!(
        own.iter()
            .any(|e| matches!(e, MemberEvent::LocalPause { .. })),
        "{own:?}"
    );
    assert!(
        !own.iter()
            .any(|e| matches!(e, MemberEvent::Suspect { .. } | MemberEvent::Down { .. })),
        "the stalled node accused peers on its return: {own:?}"
    );
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_partition_is_seen_from_both_sides_and_heals() {
    let (network, nodes) = cluster(4).await;
    let (a, b) = ([NodeId(1), NodeId(2)], [NodeId(3), NodeId(4)]);
    network.partition(&a, &b);
    let bound = expected_detection(4) * 10;
    let split = wait_until(bound, || async {
        all_see(&nodes[..2], &b, MemberStatus::Down).await
            && all_see(&nodes[2..], &a, MemberStatus::Down).await
    })
    .await;
    assert!(
        split.is_some(),
        "the sides did not see each other DOWN within {bound:?}"
    );
    network.heal();
    let ids = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    let healed = wait_until(Duration::from_secs(20), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
    })
    .await;
    assert!(
        healed.is_some(),
        "healing did not bring everyone back ALIVE"
    );
    eprintln!("partition seen DOWN after {split:?}, healed after {healed:?}");
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_graceful_leave_reaches_every_member_and_the_ring() {
    let (_network, mut nodes) = cluster(4).await;
    let leaver = nodes.pop().unwrap();
    let id = leaver.id();
    let before = nodes[0].ring().await.unwrap();
    let mut events = nodes[0].subscribe();
    leaver.leave().await.unwrap();
    let rest = [NodeId(1), NodeId(2), NodeId(3)];
    let done = wait_until(Duration::from_secs(20), || async {
        all_see(&nodes, &[id], MemberStatus::Left).await && same_ring(&nodes, &rest).await
    })
    .await;
    assert!(done.is_some(), "the leave did not reach everyone");
    let after = nodes[0].ring().await.unwrap();
    assert!(after.epoch() > before.epoch());
    // Subscribers got the current ring at once, then the new one.
    let mut rings = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let NodeEvent::Ring(ring) = event {
            rings.push(ring);
        }
    }
    assert_eq!(rings.first().map(|r| r.epoch()), Some(before.epoch()));
    assert!(rings
        .iter()
        .any(|r| !r.is_member(id) && r.epoch() > before.epoch()));
    // No suspicion of the departed node: it left, it did not fail.
    assert_eq!(status(&nodes[0], id).await, Some(MemberStatus::Left));
    stop(nodes).await;
}

#[actix_rt::test]
async fn the_transport_actor_answers_pings() {
    let (network, nodes) = cluster(2).await;
    let (probe, mut inbox) = network.endpoint(NodeId(99)).unwrap();
    let ping = Message::Ping {
        seq: 7,
        payload: b"are you there".to_vec(),
    };
    probe
        .send(Envelope::new(NodeId(99), NodeId(2), ping))
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("no pong within 10 s")
        .expect("inbox closed");
    assert_eq!(reply.from, NodeId(2));
    assert_eq!(
        reply.msg,
        Message::Pong {
            seq: 7,
            payload: b"are you there".to_vec()
        }
    );
    probe.shutdown().await;
    stop(nodes).await;
}

#[test]
fn spawning_outside_an_actix_system_is_an_error_not_a_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let result = runtime.block_on(Node::spawn(
        NodeConfig::new(NodeId(1), "n1", vec![]),
        move || async move {
            let (endpoint, inbox) = network.endpoint(NodeId(1))?;
            Ok(TransportParts::new(Arc::new(endpoint), inbox))
        },
    ));
    assert!(
        matches!(result, Err(ringkv::Error::InvalidInput(_))),
        "{result:?}"
    );
}
