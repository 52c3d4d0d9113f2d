//! A node over the LSM engine, in process: its Compactor actor runs the
//! engine's compactions (the engine never compacts by itself inside a
//! node), a clean shutdown flushes, and a node restarted on the same
//! directory has every acknowledged write and its bucket table back. A
//! second node on a directory in use is refused with a clear error.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use ringkv::config::StorageConfig;
use ringkv::node::{Node, NodeConfig, TransportParts};
use ringkv::protocol::{BucketInfo, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::{BucketProps, ConflictPolicy, LsmConfig, MemoryNetConfig, MemoryNetwork, NodeId};
use serde_bytes::ByteBuf;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

fn config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::new(NodeId(1), "n1", vec![]);
    config.membership = fast();
    config.ring = small_ring();
    // One node: one copy.
    config.bucket_defaults = BucketProps {
        n: 1,
        r: Consistency::One,
        w: Consistency::One,
        ..BucketProps::default()
    };
    config.replica.compaction_poll = Duration::from_millis(20);
    config.storage = StorageConfig::Lsm {
        dir: dir.to_path_buf(),
        config: LsmConfig {
            memtable_bytes: 32 * 1024,
            target_table_bytes: 32 * 1024,
            l1_target_bytes: 128 * 1024,
            ..LsmConfig::default()
        },
    };
    config
}

async fn spawn(network: &MemoryNetwork, dir: &std::path::Path) -> ringkv::Result<Node> {
    spawn_with(network, config(dir)).await
}

async fn spawn_with(network: &MemoryNetwork, config: NodeConfig) -> ringkv::Result<Node> {
    let net = network.clone();
    Node::spawn(config, move || async move {
        let (endpoint, inbox) = net.endpoint(NodeId(1))?;
        Ok(TransportParts::new(Arc::new(endpoint), inbox))
    })
    .await
}

async fn ready(node: &Node) {
    let formed = wait_until(Duration::from_secs(10), || async {
        node.ring().await.map(|r| !r.is_empty()).unwrap_or(false)
    })
    .await;
    assert!(formed.is_some(), "the founder did not claim its tokens");
}

#[actix_rt::test]
async fn compaction_runs_in_the_node_and_a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let node = spawn(&network, dir.path()).await.unwrap();
    ready(&node).await;

    // A bucket set before the restart must survive it.
    let lww = BucketInfo {
        n: 1,
        r: Consistency::One,
        w: Consistency::One,
        policy: ConflictPolicy::Lww,
        sloppy_quorum: false,
        timeout_ms: 3000,
    };
    node.execute(Op::SetBucket {
        bucket: b("lww"),
        props: lww.clone(),
    })
    .await
    .unwrap();

    // Enough data for many flushes and some compactions.
    let value = "x".repeat(200);
    for i in 0..3000 {
        let op = Op::Put {
            bucket: b("lww"),
            key: b(&format!("key{i:05}")),
            value: b(&format!("{i}-{value}")),
            context: None,
            options: WriteOptions::default(),
        };
        node.execute(op).await.unwrap();
    }
    let compacted = wait_until(Duration::from_secs(30), || async {
        node.compactor_stats().await.unwrap().compactions > 0
    })
    .await;
    assert!(compacted.is_some(), "the Compactor actor never compacted");
    let stats = node.store_stats().await.unwrap();
    assert!(
        stats.engine.flushes > 0 && stats.engine.compactions > 0,
        "{:?}",
        stats.engine
    );
    assert_eq!(stats.objects, 3000);
    // Small tables, no fsync per write: the store served most writes on
    // the replica actor's own thread, and those it made under
    // backpressure (slowed while flushes catch up) on the blocking pool.
    assert!(stats.served_in_place > 1000, "{stats:?}");
    assert!(
        stats.served_in_place + stats.served_on_pool >= 3000,
        "{stats:?}"
    );

    // While it runs, a second node on the same directory is refused.
    let second = spawn(&network, dir.path()).await;
    assert!(second.is_err(), "a second node opened a directory in use");
    let why = second.unwrap_err().to_string();
    assert!(why.contains("LOCK") || why.contains("lock"), "{why}");

    node.shutdown().await;
    // The engine is released once the node's arbiter has stopped.
    let mut reopened = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reopened.is_none() {
        match spawn(&network, dir.path()).await {
            Ok(n) => reopened = Some(n),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "cannot reopen: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let node = reopened.unwrap();
    ready(&node).await;
    let Reply::Bucket { props } = node
        .execute(Op::GetBucket { bucket: b("lww") })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(props, lww, "the bucket table survived the restart");
    for i in (0..3000).step_by(7) {
        let got = node
            .execute(Op::Get {
                bucket: b("lww"),
                key: b(&format!("key{i:05}")),
                options: ReadOptions::default(),
            })
            .await
            .unwrap();
        let Reply::Object { value: Some(v), .. } = got else {
            panic!("key{i:05}: {got:?}")
        };
        assert_eq!(v.into_vec(), format!("{i}-{value}").into_bytes());
    }
    node.shutdown().await;
}

/// Issue [9], item 9: a table damaged while the node was down fails the
/// reads of the keys in the damaged block (there is no other replica
/// here), but the node starts, serves the rest, and its Status works and
/// reports the damage.
#[actix_rt::test]
async fn a_damaged_table_fails_its_reads_only_and_status_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let node = spawn(&network, dir.path()).await.unwrap();
    ready(&node).await;
    let key = |i: u32| b(&format!("key{i:05}"));
    for i in 0..300 {
        let op = Op::Put {
            bucket: b("b"),
            key: key(i),
            value: b(&format!("value {i}")),
            context: None,
            options: WriteOptions::default(),
        };
        node.execute(op).await.unwrap();
    }
    node.shutdown().await;

    // Damage the first data block of the table holding the objects (the
    // smallest keys: objects sort before the node's metadata).
    let mut tables: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    tables.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let table = tables.pop().expect("the shutdown flushed a table");
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&table, bytes).unwrap();

    let mut reopened = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reopened.is_none() {
        match spawn(&network, dir.path()).await {
            Ok(n) => reopened = Some(n),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "cannot reopen: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let node = reopened.unwrap();
    ready(&node).await;
    let (mut ok, mut failed) = (0, 0);
    for i in 0..300 {
        let got = node
            .execute(Op::Get {
                bucket: b("b"),
                key: key(i),
                options: ReadOptions::default(),
            })
            .await;
        match got {
            Ok(Reply::Object { value: Some(v), .. }) => {
                assert_eq!(v.into_vec(), format!("value {i}").into_bytes());
                ok += 1;
            }
            Ok(other) => panic!("key {i}: {other:?}"),
            Err(_) => failed += 1,
        }
    }
    assert!(failed > 0 && ok > 0, "{ok} read, {failed} failed");
    let status = node
        .status()
        .await
        .expect("Status works on a damaged store");
    assert_eq!(status.corruptions, 1, "{status:?}");
    node.shutdown().await;
}

/// A replica request runs on the actor's thread only when it would not
/// wait: writes under an fsync per write go to the blocking pool; reads of
/// tables larger than the block cache run in place while the OS's page
/// cache holds the tables, and go to the pool once their pages are
/// dropped. Every request is served all the same.
#[actix_rt::test]
async fn requests_that_would_wait_go_to_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut config = config(dir.path());
    config.storage = StorageConfig::Lsm {
        dir: dir.path().to_path_buf(),
        config: LsmConfig {
            sync: ringkv::SyncPolicy::Always,
            memtable_bytes: 8 * 1024,
            block_cache_bytes: 8 * 1024,
            ..LsmConfig::default()
        },
    };
    let node = spawn_with(&network, config).await.unwrap();
    ready(&node).await;
    let key = |i: u32| b(&format!("key{i:05}"));
    for i in 0..200 {
        let op = Op::Put {
            bucket: b("b"),
            key: key(i),
            value: b(&format!("value {i} {}", "y".repeat(100))),
            context: None,
            options: WriteOptions::default(),
        };
        node.execute(op).await.unwrap();
    }
    let read_all = || async {
        for i in 0..200 {
            let got = node
                .execute(Op::Get {
                    bucket: b("b"),
                    key: key(i),
                    options: ReadOptions::default(),
                })
                .await
                .unwrap();
            let Reply::Object { value: Some(v), .. } = got else {
                panic!("key{i:05}: {got:?}")
            };
            assert!(v.starts_with(format!("value {i} ").as_bytes()));
        }
    };
    read_all().await;
    let stats = node.store_stats().await.unwrap();
    assert!(
        stats.engine.bytes_per_level.iter().sum::<u64>() > 8 * 1024,
        "{stats:?}"
    );
    assert_eq!(stats.served_on_pool, 200, "the writes: {stats:?}");
    assert_eq!(stats.served_in_place, 200, "the reads: {stats:?}");
    // The tables' pages dropped from the OS's page cache: the reads of
    // keys whose blocks are neither in the block cache nor in a memtable
    // need the disk.
    if drop_cached_table_pages(dir.path()) {
        read_all().await;
        let after = node.store_stats().await.unwrap();
        // The first read that needs a table block must wait for the disk;
        // its attempt starts the kernel's readahead, which may bring the
        // rest of these small files back before the next read.
        let pooled = after.served_on_pool - stats.served_on_pool;
        assert!(pooled >= 1, "{pooled} reads on the pool: {after:?}");
        assert_eq!(
            after.served_in_place + after.served_on_pool,
            600,
            "{after:?}"
        );
    } else {
        eprintln!(
            "this file system keeps its pages: reads that need the disk are not checked here"
        );
    }
    node.shutdown().await;
}

/// A large value read keeps its bytes of the replica's read budget counted
/// until the hold that comes with its reply is dropped (a client port drops
/// it once it has encoded the reply), so reads made faster than clients
/// take their answers wait in the replica's queue rather than in memory.
/// With a budget of one byte, a held answer stops every other read.
#[actix_rt::test]
async fn a_large_answer_holds_the_read_budget_until_its_hold_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let mut config = config(dir.path());
    config.replica.read_budget_bytes = 1;
    let node = spawn_with(&network, config).await.unwrap();
    ready(&node).await;
    let big = vec![7u8; 100 * 1024];
    for (key, value) in [("big", big.clone()), ("small", b"s".to_vec())] {
        let op = Op::Put {
            bucket: b("b"),
            key: b(key),
            value: ByteBuf::from(value),
            context: None,
            options: WriteOptions::default(),
        };
        node.execute(op).await.unwrap();
    }
    let get = |key: &str| Op::Get {
        bucket: b("b"),
        key: b(key),
        options: ReadOptions::default(),
    };
    // Without a hold kept, one read after another goes through.
    for _ in 0..3 {
        node.execute(get("big")).await.unwrap();
    }
    let (reply, hold) = node.execute_held(get("big")).await.unwrap();
    let Reply::Object { value: Some(v), .. } = reply else {
        panic!("big: {reply:?}")
    };
    assert_eq!(v.as_slice(), &big[..]);
    assert!(!hold.is_empty(), "a 100 KiB answer holds nothing");

    let pending = actix_rt::spawn({
        let node = node.clone();
        async move { node.execute(get("small")).await }
    });
    let queued = wait_until(Duration::from_secs(10), || async {
        pending.is_finished() || node.store_stats().await.is_ok_and(|s| s.busy >= 1)
    })
    .await;
    assert!(queued.is_some(), "the second read never reached the queue");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !pending.is_finished(),
        "a read ran while a held answer filled the budget"
    );
    drop(hold);
    let small = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the waiting read did not run once the hold was dropped")
        .unwrap()
        .unwrap();
    let Reply::Object { value: Some(v), .. } = small else {
        panic!("small: {small:?}")
    };
    assert_eq!(v.as_slice(), b"s");
    node.shutdown().await;
}
