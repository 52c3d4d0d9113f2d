//! Merkle-tree anti-entropy and tombstone garbage collection, with real
//! nodes (actors, stores, the AntiEntropy actor) on the in-process network.
//!
//! What it shows:
//! - writes on both sides of a partition (different keys, and conflicting
//!   blind writes to the same keys), then a heal and *no reads at all*:
//!   every replica's own copy (`LocalGet`, no quorum, no repair) of every
//!   key converges, siblings kept, within a bounded wait; the time taken
//!   is printed beside the period;
//! - a key deleted while one replica is down (its LSM directory kept),
//!   then that replica restarted with the old value: the key stays deleted
//!   on every replica, and once all hold the tombstone and the grace period
//!   has passed, the tombstone is purged everywhere;
//! - a tombstone is not purged while one of its replicas is down, however
//!   many rounds pass.
//!
//! Every wait is bounded; nothing asserts a speed.

use std::time::{Duration, Instant};

use crate::support::*;
use ringkv::config::{AntiEntropyConfig, StorageConfig};
use ringkv::node::{Node, NodeConfig};
use ringkv::protocol::{Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::{BucketProps, LsmConfig, MemberStatus, MemoryNetwork, NodeId};
use serde_bytes::ByteBuf;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// The anti-entropy period of these tests.
const PERIOD: Duration = Duration::from_millis(400);
/// The tombstone grace period of these tests.
const GRACE: Duration = Duration::from_millis(1500);

/// Three copies of every key on three nodes; no sloppy quorum, so a write
/// stays on its side's replicas; W = R = 1; short anti-entropy rounds.
fn tune(config: &mut NodeConfig) {
    config.bucket_defaults = BucketProps {
        n: 3,
        r: Consistency::One,
        w: Consistency::One,
        sloppy_quorum: false,
        ..BucketProps::default()
    };
    config.replica.handoff_interval = Duration::from_millis(100);
    config.anti_entropy = AntiEntropyConfig {
        period: PERIOD,
        leaves: 16,
        keys_per_second: 1_000_000,
        objects_per_second: 1_000_000,
        exchange_timeout: Duration::from_secs(2),
        tombstone_grace: GRACE,
        ..AntiEntropyConfig::default()
    };
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        bucket: b("b"),
        key: b(key),
        value: b(value),
        context: None,
        options: WriteOptions::default(),
    }
}

/// This node's own copy of a key: `(value, number of siblings, context)`.
async fn local(node: &Node, key: &str) -> (Option<Vec<u8>>, usize, Vec<u8>) {
    match node
        .execute(Op::LocalGet {
            bucket: b("b"),
            key: b(key),
        })
        .await
    {
        Ok(Reply::Object {
            value,
            siblings,
            context,
            ..
        }) => (
            value.map(|v| v.into_vec()),
            siblings.len(),
            context.into_vec(),
        ),
        other => panic!("local get: {other:?}"),
    }
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

async fn all_alive(nodes: &[Node], n: u64) -> bool {
    let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
    all_see(nodes, &ids, MemberStatus::Alive).await
}

#[actix_rt::test]
async fn a_partition_heals_with_no_reads() {
    let (network, nodes) = memory_cluster(3, tune).await;
    network.partition(&[NodeId(3)], &[NodeId(1), NodeId(2)]);
    // Long enough for each side to see the other gone.
    let apart = wait_until(Duration::from_secs(30), || async {
        status(&nodes[0], NodeId(3)).await != Some(MemberStatus::Alive)
            && status(&nodes[2], NodeId(1)).await != Some(MemberStatus::Alive)
    })
    .await;
    assert!(apart.is_some(), "the partition was not detected");
    // Each side writes its own keys, and both write the shared ones.
    for i in 0..20 {
        let a = nodes[0].execute(put(&format!("a{i}"), "left")).await;
        assert!(matches!(a, Ok(Reply::Written { .. })), "{a:?}");
        let c = nodes[2].execute(put(&format!("c{i}"), "right")).await;
        assert!(matches!(c, Ok(Reply::Written { .. })), "{c:?}");
        for (node, side) in [(&nodes[1], "left"), (&nodes[2], "right")] {
            let s = node.execute(put(&format!("s{i}"), side)).await;
            assert!(matches!(s, Ok(Reply::Written { .. })), "{s:?}");
        }
    }
    // The sides really differ before the heal.
    assert_eq!(local(&nodes[2], "a0").await.0, None);
    assert_eq!(local(&nodes[0], "c0").await.0, None);
    network.heal();
    let healed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || all_alive(&nodes, 3))
            .await
            .is_some(),
        "the partition did not heal"
    );
    let alive_after = healed.elapsed();
    let converged = wait_until(Duration::from_secs(60), || async {
        for i in 0..20 {
            for n in &nodes {
                if local(n, &format!("a{i}")).await.0.as_deref() != Some(&b"left"[..])
                    || local(n, &format!("c{i}")).await.0.as_deref() != Some(&b"right"[..])
                {
                    return false;
                }
            }
            // The conflicting writes are both kept, identically everywhere.
            let first = local(&nodes[0], &format!("s{i}")).await;
            if first.1 != 2 {
                return false;
            }
            for n in &nodes[1..] {
                if local(n, &format!("s{i}")).await != first {
                    return false;
                }
            }
        }
        true
    })
    .await;
    let Some(took) = converged else {
        panic!("the replicas did not converge");
    };
    let mut repaired = 0;
    for n in &nodes {
        let stats = n.anti_entropy_stats().await.unwrap();
        assert!(stats.rounds > 0 && stats.ranges_compared > 0, "{stats:?}");
        repaired += stats.objects_repaired;
    }
    assert!(repaired >= 60, "objects repaired: {repaired}");
    println!(
        "anti-entropy: every replica converged {:?} after the heal \
         ({:?} until all nodes saw each other ALIVE; period {:?})",
        took + alive_after,
        alive_after,
        PERIOD
    );
    stop(nodes).await;
}

fn lsm_config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig::Lsm {
        dir: dir.to_path_buf(),
        config: LsmConfig {
            memtable_bytes: 64 * 1024,
            ..LsmConfig::default()
        },
    }
}

async fn spawn_with(network: &MemoryNetwork, id: u64, storage: Option<StorageConfig>) -> Node {
    let mut config = memory_config(id);
    tune(&mut config);
    if let Some(storage) = storage {
        config.storage = storage;
    }
    spawn_memory_retrying(network, config).await
}

/// Reads the key at ALL and deletes it with the context read, at `w`.
async fn delete(node: &Node, key: &str, w: Consistency) {
    let read = node
        .execute(Op::Get {
            bucket: b("b"),
            key: b(key),
            options: ReadOptions {
                r: Some(Consistency::One),
                ..ReadOptions::default()
            },
        })
        .await;
    let Ok(Reply::Object { context, .. }) = read else {
        panic!("read before delete: {read:?}");
    };
    let deleted = node
        .execute(Op::Delete {
            bucket: b("b"),
            key: b(key),
            context: Some(context),
            options: WriteOptions {
                w: Some(w),
                ..WriteOptions::default()
            },
        })
        .await;
    assert!(matches!(deleted, Ok(Reply::Written { .. })), "{deleted:?}");
}

/// Objects (tombstones included) in a node's store.
async fn stored(node: &Node) -> u64 {
    node.store_stats().await.unwrap().objects
}

#[actix_rt::test]
async fn a_key_deleted_while_a_replica_is_down_stays_deleted_and_its_tombstone_goes() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).unwrap();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        let storage = (id == 3).then(|| lsm_config(dir.path()));
        nodes.push(spawn_with(&network, id, storage).await);
    }
    assert!(
        wait_until(Duration::from_secs(30), || all_alive(&nodes, 3))
            .await
            .is_some(),
        "the cluster did not form"
    );
    // At ALL: retried while a coordinator still routes around a node it
    // has not yet seen come up.
    let written = wait_until(Duration::from_secs(30), || async {
        let w = nodes[0]
            .execute(Op::Put {
                bucket: b("b"),
                key: b("doomed"),
                value: b("old"),
                context: None,
                options: WriteOptions {
                    w: Some(Consistency::All),
                    ..WriteOptions::default()
                },
            })
            .await;
        matches!(w, Ok(Reply::Written { .. }))
    })
    .await;
    assert!(written.is_some(), "the write at ALL never succeeded");
    // Node 3 goes down holding the value (its store is flushed to disk).
    let third = nodes.pop().unwrap();
    assert_eq!(local(&third, "doomed").await.0, Some(b"old".to_vec()));
    third.shutdown().await;
    delete(&nodes[0], "doomed", Consistency::Two).await;
    for n in &nodes {
        assert_eq!(local(n, "doomed").await.0, None);
    }
    // Back, with the old value on disk. Anti-entropy exchanges with a node
    // as soon as it is up again, and a hint may be delivered at once, so
    // the tombstone may already have reached it at this first look.
    let back = spawn_with(&network, 3, Some(lsm_config(dir.path()))).await;
    let first_look = local(&back, "doomed").await.0;
    assert!(
        first_look.is_none() || first_look == Some(b"old".to_vec()),
        "node 3 came back with {first_look:?}"
    );
    nodes.push(back);
    assert!(
        wait_until(Duration::from_secs(30), || all_alive(&nodes, 3))
            .await
            .is_some(),
        "node 3 is not ALIVE everywhere"
    );
    // No read: anti-entropy alone brings the delete to node 3, and the old
    // value never comes back anywhere, while the tombstone is purged once
    // everyone holds it and the grace period has passed.
    let repaired = wait_until(Duration::from_secs(30), || async {
        for n in &nodes[..2] {
            assert_eq!(local(n, "doomed").await.0, None, "the value came back");
        }
        local(&nodes[2], "doomed").await.0.is_none()
    })
    .await;
    assert!(repaired.is_some(), "node 3 never learned of the delete");
    let purged = wait_until(Duration::from_secs(60), || async {
        for n in &nodes {
            assert_eq!(local(n, "doomed").await.0, None, "the value came back");
        }
        let mut all = true;
        for n in &nodes {
            all &= stored(n).await == 0;
        }
        all
    })
    .await;
    assert!(purged.is_some(), "the tombstone was not purged everywhere");
    for n in &nodes {
        assert!(n.anti_entropy_stats().await.unwrap().tombstones_purged >= 1);
    }
    // A few more rounds: nothing comes back, at ALL either.
    let rounds = nodes[0].anti_entropy_stats().await.unwrap().rounds;
    let more = wait_until(Duration::from_secs(30), || async {
        nodes[0].anti_entropy_stats().await.unwrap().rounds >= rounds + 3
    })
    .await;
    assert!(more.is_some(), "rounds stopped");
    for n in &nodes {
        assert_eq!(local(n, "doomed").await.0, None);
        assert_eq!(stored(n).await, 0);
    }
    let read = nodes[1]
        .execute(Op::Get {
            bucket: b("b"),
            key: b("doomed"),
            options: ReadOptions {
                r: Some(Consistency::All),
                ..ReadOptions::default()
            },
        })
        .await;
    match read {
        Ok(Reply::Object {
            value, siblings, ..
        }) => assert!(value.is_none() && siblings.is_empty()),
        other => panic!("{other:?}"),
    }
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_tombstone_stays_while_a_replica_is_down() {
    let (_network, mut nodes) = memory_cluster(3, tune).await;
    let written = nodes[0].execute(put("k", "v")).await;
    assert!(matches!(written, Ok(Reply::Written { .. })), "{written:?}");
    delete(&nodes[0], "k", Consistency::All).await;
    let third = nodes.pop().unwrap();
    third.crash().await;
    let down = wait_until(Duration::from_secs(30), || async {
        for n in &nodes {
            if status(n, NodeId(3)).await != Some(MemberStatus::Down) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(down.is_some(), "node 3 is not DOWN");
    // Past the grace period and several rounds on both survivors.
    tokio::time::sleep(GRACE).await;
    let mut start = Vec::new();
    for n in &nodes {
        start.push(n.anti_entropy_stats().await.unwrap().rounds);
    }
    let rounds = wait_until(Duration::from_secs(30), || async {
        for (n, &s) in nodes.iter().zip(&start) {
            if n.anti_entropy_stats().await.unwrap().rounds < s + 4 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(rounds.is_some(), "rounds stopped");
    for n in &nodes {
        assert_eq!(stored(n).await, 1, "the tombstone must stay");
        assert_eq!(n.anti_entropy_stats().await.unwrap().tombstones_purged, 0);
        let (value, siblings, context) = local(n, "k").await;
        assert!(value.is_none() && siblings == 0 && !context.is_empty());
    }
    stop(nodes).await;
}
