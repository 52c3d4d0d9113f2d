//! Ring changes across restarts, and what old owners drop, in process with
//! the LSM engine on real files:
//!
//! - a cluster stopped whole and started again in another order comes back
//!   on the ring it had (the ring state is stored), a node restarted alone
//!   coordinates nothing until a peer confirms that ring, and every key is
//!   still readable;
//! - a node that crashes after a change is in force but before it dropped
//!   what it gave away drops it after its restart: every key ends on
//!   exactly `n` nodes;
//! - a bucket with a larger `n` than the default keeps its extra replicas
//!   through the drops that follow a join;
//! - a node that crashes in the middle of its decommission comes back
//!   leaving (its intent is stored): it ends out of the ring and does not
//!   join again, and every key is still readable.
//!
//! Every wait is bounded; nothing depends on speed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use ringkv::config::StorageConfig;
use ringkv::membership::rebalance::DROP_GRACE;
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::protocol::{BucketInfo, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::ring::key_token;
use ringkv::{LsmConfig, MemoryNetwork, NodeId};
use serde_bytes::ByteBuf;

/// Replicas per key of the default bucket.
const N: usize = 3;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

fn config(id: u64, seed: Option<u64>, dir: &Path) -> NodeConfig {
    let mut config = memory_config(id);
    config.seeds = match seed {
        Some(s) if s != id => vec![(NodeId(s), format!("n{s}"))],
        _ => vec![],
    };
    config.replica.handoff_interval = Duration::from_millis(100);
    // Anti-entropy must not mend what the drops would break.
    config.anti_entropy.period = Duration::from_secs(3600);
    config.storage = StorageConfig::Lsm {
        dir: dir.join(format!("node-{id}")),
        config: LsmConfig {
            memtable_bytes: 64 * 1024,
            ..LsmConfig::default()
        },
    };
    config
}

/// Starts node `id`, joining through `seed` (none: it founds the cluster,
/// or restarts on its stored ring). A restart on the same directory waits
/// (bounded) until the stopped node's engine is released.
async fn start(network: &MemoryNetwork, id: u64, seed: Option<u64>, dir: &Path) -> Node {
    spawn_memory_retrying(network, config(id, seed, dir)).await
}

async fn set_bucket(node: &Node, bucket: &str, n: usize) {
    let mut props = BucketInfo::from(&ringkv::BucketProps::default());
    props.policy = ringkv::ConflictPolicy::Lww;
    props.n = n as u32;
    let op = Op::SetBucket {
        bucket: b(bucket),
        props,
    };
    let answer = node.execute(op).await;
    assert!(matches!(answer, Ok(Reply::Bucket { .. })), "{answer:?}");
}

async fn put(node: &Node, bucket: &str, key: &str) {
    let op = Op::Put {
        bucket: b(bucket),
        key: b(key),
        value: b("v"),
        context: None,
        options: WriteOptions {
            w: Some(Consistency::All),
            ..WriteOptions::default()
        },
    };
    let answer = node.execute(op).await;
    assert!(
        matches!(answer, Ok(Reply::Written { .. })),
        "put {bucket}/{key}: {answer:?}"
    );
}

async fn readable(node: &Node, bucket: &str, key: &str) -> bool {
    let op = Op::Get {
        bucket: b(bucket),
        key: b(key),
        options: ReadOptions {
            r: Some(Consistency::Quorum),
            ..ReadOptions::default()
        },
    };
    matches!(
        node.execute(op).await,
        Ok(Reply::Object { value: Some(v), .. }) if v.as_slice() == b"v"
    )
}

async fn holds(node: &Node, bucket: &str, key: &str) -> bool {
    let op = Op::LocalGet {
        bucket: b(bucket),
        key: b(key),
    };
    matches!(
        node.execute(op).await,
        Ok(Reply::Object { value: Some(_), .. })
    )
}

/// Waits until every node's ring holds exactly `members`, with no change
/// in progress.
async fn settled(nodes: &[Node], members: &[NodeId]) -> bool {
    wait_until(Duration::from_secs(60), || async {
        for n in nodes {
            match n.ring_state().await {
                Ok(s) if s.pending.is_none() => {}
                _ => return false,
            }
        }
        all_see(nodes, members, ringkv::MemberStatus::Alive).await
            && same_ring(nodes, members).await
            // Writes may follow at once: every coordinator routes by it.
            && routed(nodes).await
    })
    .await
    .is_some()
}

/// How many of `nodes` hold each key of `bucket`.
async fn copies(nodes: &[Node], bucket: &str, keys: &[String]) -> BTreeMap<usize, usize> {
    let mut histogram = BTreeMap::new();
    for k in keys {
        let mut c = 0;
        for n in nodes {
            if holds(n, bucket, k).await {
                c += 1;
            }
        }
        *histogram.entry(c).or_insert(0) += 1;
    }
    histogram
}

/// Nodes 1 to 4 joined through node 1 and settled, with `keys` written
/// to bucket `b` through each in turn.
async fn loaded_four(network: &MemoryNetwork, dir: &Path, keys: &[String]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=4 {
        nodes.push(start(network, id, Some(1), dir).await);
    }
    let four: Vec<NodeId> = (1..=4).map(NodeId).collect();
    assert!(settled(&nodes, &four).await, "the cluster did not form");
    for (i, k) in keys.iter().enumerate() {
        put(&nodes[i % 4], "b", k).await;
    }
    nodes
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_cluster_stopped_whole_comes_back_on_the_ring_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let nodes = loaded_four(&network, dir.path(), &keys).await;
    let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
    let before = nodes[0].ring_state().await.unwrap().ring.clone();
    stop(nodes).await;

    // Back in another order: node 4 first, on its own (it would found a
    // new cluster on an empty ring if it had not stored its ring), then
    // the others through it.
    let mut nodes = vec![start(&network, 4, None, dir.path()).await];
    assert_eq!(
        nodes[0].ring_state().await.unwrap().ring,
        before,
        "node 4 restarted alone on another ring"
    );
    // Until a peer confirms its stored ring, node 4 coordinates nothing: a
    // ring changed while it was down would misroute its requests.
    assert!(!nodes[0].ring_confirmed());
    let refused = nodes[0]
        .execute(Op::Get {
            bucket: b("b"),
            key: b("k0"),
            options: ReadOptions::default(),
        })
        .await;
    match refused {
        Err(e @ ringkv::Error::RingUnconfirmed) => assert!(e.is_retryable()),
        other => panic!("a get on an unconfirmed ring: {other:?}"),
    }
    for id in [3, 2, 1] {
        nodes.push(start(&network, id, Some(4), dir.path()).await);
    }
    assert!(settled(&nodes, &ids).await, "the cluster did not re-form");
    for n in &nodes {
        assert_eq!(n.ring_state().await.unwrap().ring, before);
    }
    let confirmed = wait_until(Duration::from_secs(30), || async {
        nodes.iter().all(Node::ring_confirmed)
    })
    .await;
    assert!(confirmed.is_some(), "the peers never confirmed the ring");
    for (i, k) in keys.iter().enumerate() {
        assert!(readable(&nodes[i % 4], "b", k).await, "{k} lost");
    }
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_node_restarted_before_its_drops_drops_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let keys: Vec<String> = (0..400).map(|i| format!("k{i}")).collect();
    let mut nodes = loaded_four(&network, dir.path(), &keys).await;

    // Node 5 joins; as soon as the join is in force, node 2 (an old owner
    // of some of node 5's ranges) crashes, before its drop grace ends.
    nodes.push(start(&network, 5, Some(1), dir.path()).await);
    let five: Vec<NodeId> = (1..=5).map(NodeId).collect();
    assert!(settled(&nodes, &five).await, "the join did not complete");
    let crashed_at = Instant::now();
    nodes.remove(1).crash().await;
    let early = crashed_at.elapsed() < DROP_GRACE;
    nodes.insert(1, start(&network, 2, Some(1), dir.path()).await);
    assert!(settled(&nodes, &five).await, "node 2 did not come back");

    // The sweep after a restart runs a grace after the node agrees with a
    // peer on the ring.
    let even = wait_until(DROP_GRACE * 6, || async {
        copies(&nodes, "b", &keys).await.keys().eq([&N])
    })
    .await;
    let histogram = copies(&nodes, "b", &keys).await;
    assert!(
        even.is_some(),
        "keys by number of copies: {histogram:?} (node 2 crashed within the grace: {early})"
    );
    for (i, k) in keys.iter().enumerate() {
        assert!(readable(&nodes[i % 5], "b", k).await, "{k} lost");
    }
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_node_that_crashes_mid_decommission_comes_back_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let mut nodes = loaded_four(&network, dir.path(), &keys).await;

    // Node 4 decommissions and crashes at once: its ranges have not all
    // moved (usually none has).
    nodes[3].decommission().await.unwrap();
    nodes.pop().unwrap().crash().await;
    let four_again = start(&network, 4, Some(1), dir.path()).await;
    nodes.push(four_again);
    let three: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let out = wait_until(Duration::from_secs(60), || async {
        for n in &nodes {
            match n.ring_state().await {
                Ok(s)
                    if s.pending.is_none()
                        && s.ring.members() == three.iter().copied().collect() => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert!(
        out.is_some(),
        "node 4 did not end out of the ring: {:?}",
        nodes[3].ring_state().await
    );
    // Still out a while later: no join begun.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes {
        let s = n.ring_state().await.unwrap();
        assert!(!s.ring.is_member(NodeId(4)), "node 4 joined again: {s:?}");
        assert!(s.pending.is_none(), "a change began: {s:?}");
    }
    for (i, k) in keys.iter().enumerate() {
        assert!(readable(&nodes[i % 3], "b", k).await, "{k} lost");
    }
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_wider_bucket_keeps_its_extra_replicas_through_a_join() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(start(&network, id, Some(1), dir.path()).await);
    }
    let five: Vec<NodeId> = (1..=5).map(NodeId).collect();
    assert!(settled(&nodes, &five).await, "the cluster did not form");
    set_bucket(&nodes[0], "wide", 5).await;
    set_bucket(&nodes[0], "b", N).await;
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&nodes[i % 5], "wide", k).await;
        put(&nodes[i % 5], "b", k).await;
    }
    assert!(copies(&nodes, "wide", &keys).await.keys().eq([&5]));

    nodes.push(start(&network, 6, Some(1), dir.path()).await);
    let six: Vec<NodeId> = (1..=6).map(NodeId).collect();
    assert!(settled(&nodes, &six).await, "the join did not complete");
    // The drops of the join are due a grace after it is in force.
    let dropped = wait_until(DROP_GRACE * 6, || async {
        copies(&nodes, "b", &keys).await.keys().eq([&N])
    })
    .await;
    assert!(
        dropped.is_some(),
        "default bucket: {:?}",
        copies(&nodes, "b", &keys).await
    );
    // Every wide key is still on each of its five replicas under the new
    // ring, except the new node, which pulled only what the default n
    // moves (anti-entropy brings it the rest).
    let ring = nodes[0].ring_state().await.unwrap().ring.clone();
    let mut missing = Vec::new();
    for k in &keys {
        let replicas = ring.preference_list(key_token(b"wide", k.as_bytes()), 5);
        assert_eq!(replicas.len(), 5);
        for r in replicas.into_iter().filter(|&r| r != NodeId(6)) {
            if !holds(&nodes[r.0 as usize - 1], "wide", k).await {
                missing.push((k.clone(), r));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} wide copies dropped from their replicas, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (i, k) in keys.iter().enumerate() {
        assert!(readable(&nodes[i % 6], "wide", k).await, "{k} lost");
    }
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_stored_ring_state_that_does_not_decode_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let node = start(&network, 1, None, dir.path()).await;
    node.shutdown().await;
    {
        let path = dir.path().join("node-1");
        let deadline = Instant::now() + Duration::from_secs(20);
        let engine = loop {
            match ringkv::storage::LsmEngine::open(&path, LsmConfig::default()) {
                Ok(e) => break e,
                Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("reopening the engine: {e}"),
            }
        };
        let store =
            ringkv::replication::replica::ReplicaStore::open(NodeId(1), Arc::new(engine), 8, 100)
                .unwrap();
        store
            .store_meta(ringkv::node::ring_manager::RING_META, b"\xff not cbor")
            .unwrap();
        store.engine().flush().unwrap();
    }
    let net = network.clone();
    let started = Node::spawn(config(1, None, dir.path()), move || async move {
        let (endpoint, inbox) = net.endpoint(NodeId(1))?;
        Ok(TransportParts::new(Arc::new(endpoint), inbox))
    })
    .await;
    match started {
        Ok(_) => panic!("a node started on a ring state it cannot read"),
        Err(e) => assert!(
            e.to_string().contains("stored ring state"),
            "unclear error: {e}"
        ),
    }
}

#[actix_rt::test]
async fn a_lone_survivor_serves_after_waiting_for_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&network, id, Some(1), dir.path()).await);
    }
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    assert!(settled(&nodes, &ids).await, "the cluster did not form");
    put(&nodes[0], "b", "kept").await;
    stop(nodes).await;

    // Only node 1 comes back; no peer ever answers. It refuses at first,
    // then, having reached no peer for the whole wait, trusts its ring.
    let node = start(&network, 1, None, dir.path()).await;
    assert!(!node.ring_confirmed());
    let wait = ringkv::membership::ring_sync::ring_confirm_wait(
        config(1, None, dir.path()).membership.gossip_interval,
    );
    let trusted = wait_until(wait * 4, || async { node.ring_confirmed() }).await;
    assert!(trusted.is_some(), "a lone survivor never served");
    let read = node
        .execute(Op::Get {
            bucket: b("b"),
            key: b("kept"),
            options: ReadOptions {
                r: Some(Consistency::One),
                ..ReadOptions::default()
            },
        })
        .await;
    assert!(
        matches!(&read, Ok(Reply::Object { value: Some(v), .. }) if v.as_slice() == b"v"),
        "{read:?}"
    );
    node.shutdown().await;
}
