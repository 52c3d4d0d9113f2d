//! Range transfers between in-process nodes on the memory network: a
//! token range moves whole, tombstones included, and only it; a transfer
//! broken midway (a partition, a crash and restart of the receiver)
//! resumes from the last stored batch rather than restarting; and the old
//! owner can drop exactly the range afterwards.
//!
//! Setup: node 1 starts alone with one copy per key, so every key written
//! lives on it; node 2 joins afterwards and holds nothing until a transfer
//! moves a range to it.

use std::time::Duration;

use crate::support::*;
use ringkv::config::TransferConfig;
use ringkv::node::handoff::TransferDone;
use ringkv::node::{Node, NodeConfig};
use ringkv::protocol::{Op, Reply, WriteOptions};
use ringkv::replication::transfer::{TransferItem, TransferSpec, TransferState};
use ringkv::replication::Consistency;
use ringkv::ring::TokenRange;
use ringkv::version::Payload;
use ringkv::{BucketProps, MemberStatus, MemoryNetConfig, MemoryNetwork, NodeId, Token};
use serde_bytes::ByteBuf;

const KEYS: usize = 3000;

/// Half the ring, wrapping past `u64::MAX`.
fn half() -> TokenRange {
    TokenRange {
        after: Token(u64::MAX / 4 * 3),
        through: Token(u64::MAX / 4),
    }
}

/// The rest of the ring.
fn other_half() -> TokenRange {
    TokenRange {
        after: half().through,
        through: half().after,
    }
}

fn whole() -> TokenRange {
    TokenRange {
        after: Token(0),
        through: Token(0),
    }
}

fn config(id: u64, transfer: TransferConfig) -> NodeConfig {
    let mut c = memory_config(id);
    c.bucket_defaults = BucketProps {
        n: 1,
        r: Consistency::One,
        w: Consistency::One,
        ..BucketProps::default()
    };
    c.transfer = transfer;
    c
}

/// Small batches, paced slowly enough (64 KiB/s) that a test can break the
/// transfer midway, and quick retries.
fn slow() -> TransferConfig {
    TransferConfig {
        max_batch_bytes: 4096,
        bytes_per_sec: 64 * 1024,
        pull_timeout: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        ..TransferConfig::default()
    }
}

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// Node 1 alone with `KEYS` keys, every tenth deleted; then node 2 joins.
/// Nodes 1 and 2, formed into one ring, then loaded through node 1 with
/// `KEYS` keys (every tenth deleted) of a bucket with n = 1, so each key
/// lives on its one owner. The keys are written once the ring is in force,
/// so no ring change moves them: what a test moves, it moves by hand.
async fn loaded_pair(network: &MemoryNetwork, receiver: NodeConfig) -> (Node, Node) {
    let n1 = spawn_memory(network, config(1, TransferConfig::default()))
        .await
        .unwrap();
    let n2 = spawn_memory(network, receiver).await.unwrap();
    let nodes = [n1.clone(), n2.clone()];
    let ids = [NodeId(1), NodeId(2)];
    let formed = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
            && same_ring(&nodes, &ids).await
            && n2.ring_state().await.is_ok_and(|s| s.pending.is_none())
            // The first write follows at once: every coordinator must
            // route by the ring (seen under load: `Unavailable`, got 0).
            && routed(&nodes).await
    })
    .await;
    assert!(formed.is_some(), "node 2 did not join");
    load(&n1, "key", KEYS).await;
    (n1, n2)
}

/// Writes `count` keys named `prefix` and a number through `node`,
/// deleting every tenth with the put's context.
async fn load(node: &Node, prefix: &str, count: usize) {
    for i in 0..count {
        let key = format!("{prefix}{i:05}");
        let written = node
            .execute(Op::Put {
                bucket: b("data"),
                key: b(&key),
                value: b(&format!("value of {key}")),
                context: None,
                options: WriteOptions::default(),
            })
            .await
            .unwrap();
        let Reply::Written { context, .. } = written else {
            panic!("{written:?}")
        };
        if i % 10 == 0 {
            // With the put's context: the tombstone replaces the value.
            node.execute(Op::Delete {
                bucket: b("data"),
                key: b(&key),
                context: Some(context),
                options: WriteOptions::default(),
            })
            .await
            .unwrap();
        }
    }
}

/// The union of two object lists, in engine-key order (as a scan returns).
fn union(a: &[TransferItem], b: &[TransferItem]) -> Vec<TransferItem> {
    let mut all: Vec<TransferItem> = a.iter().chain(b).cloned().collect();
    all.sort_by(|x, y| {
        let kx = ringkv::replication::replica::object_key(&x.bucket, &x.key).unwrap();
        let ky = ringkv::replication::replica::object_key(&y.bucket, &y.key).unwrap();
        kx.cmp(&ky)
    });
    all
}

/// Fails with the first difference (not two whole lists) when `got` and
/// `want` do not hold the same objects (compared in key order: a scan of a
/// wrapping range starts past the top of the ring).
fn assert_same(got: &[TransferItem], want: &[TransferItem]) {
    let (got, want) = (union(got, &[]), union(want, &[]));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "object {i} of {} differs", want.len());
    }
    assert_eq!(got.len(), want.len(), "object counts differ");
}

/// The progress of transfer `id` on `node`.
async fn progress(node: &Node, id: u64) -> ringkv::replication::transfer::TransferProgress {
    node.transfers()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.id == id)
        .expect("the transfer is known")
}

async fn objects(node: &Node, range: TokenRange) -> Vec<TransferItem> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let batch = node.read_range(range, after, 64 * 1024).await.unwrap();
        all.extend(batch.items);
        if batch.done {
            return all;
        }
        after = batch.next;
    }
}

async fn state_of(node: &Node, id: u64) -> Option<TransferState> {
    node.transfers()
        .await
        .ok()?
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.state)
}

async fn wait_done(node: &Node, id: u64) {
    let done = wait_until(Duration::from_secs(60), || async {
        state_of(node, id).await == Some(TransferState::Done)
    })
    .await;
    assert!(
        done.is_some(),
        "transfer {id} did not finish: {:?}",
        node.transfers().await
    );
}

fn spec(id: u64) -> TransferSpec {
    TransferSpec {
        id,
        range: half(),
        sources: vec![NodeId(1)],
        fence: None,
    }
}

#[actix_rt::test]
async fn a_range_moves_whole_with_its_tombstones_and_only_it() {
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let (n1, n2) = loaded_pair(&network, config(2, TransferConfig::default())).await;
    let expected = objects(&n1, half()).await;
    // Node 1 owns about half the ring, and half of that lies in the range.
    assert!(
        expected.len() > KEYS / 10 && expected.len() < KEYS * 3 / 4,
        "node 1's part of the range holds a fair share of the keys: {}",
        expected.len()
    );
    let tombstones = expected
        .iter()
        .filter(|i| {
            i.object
                .siblings()
                .iter()
                .all(|s| s.payload == Payload::Tombstone)
        })
        .count();
    assert!(tombstones > 0, "some deleted keys lie in the range");
    let own_in_range = objects(&n2, half()).await;
    let own = objects(&n2, whole()).await.len();
    assert!(
        expected.iter().all(|i| !own_in_range.contains(i)),
        "n = 1: no key on both nodes"
    );

    n2.start_transfer(spec(1)).await.unwrap();
    wait_done(&n2, 1).await;

    // Identical objects (tombstones included), and nothing else.
    assert_same(
        &objects(&n2, half()).await,
        &union(&own_in_range, &expected),
    );
    assert_eq!(objects(&n2, whole()).await.len(), own + expected.len());
    let p = progress(&n2, 1).await;
    assert_eq!(p.keys, expected.len() as u64);
    let status = n2.status().await.unwrap();
    let t = status
        .transfers
        .iter()
        .find(|t| t.id == 1)
        .expect("in the status view");
    assert_eq!(t.state, "done");
    eprintln!(
        "moved {} keys, {} bytes in {} batches, {} ms",
        t.keys, t.bytes, t.batches, t.elapsed_ms
    );
    assert_eq!(status.keys, (own + expected.len()) as u64);

    // A deleted key stays deleted on the receiver.
    let deleted = expected
        .iter()
        .find(|i| {
            i.object
                .siblings()
                .iter()
                .all(|s| s.payload == Payload::Tombstone)
        })
        .unwrap();
    let got = n2
        .execute(Op::LocalGet {
            bucket: ByteBuf::from(deleted.bucket.clone()),
            key: ByteBuf::from(deleted.key.clone()),
        })
        .await
        .unwrap();
    assert!(matches!(got, Reply::Object { value: None, .. }), "{got:?}");

    // Starting it again changes nothing.
    let again = n2.start_transfer(spec(1)).await.unwrap();
    assert_eq!((again.state, again.keys), (TransferState::Done, p.keys));

    // The old owner drops exactly the range.
    let rest = objects(&n1, other_half()).await.len();
    assert_eq!(n1.drop_range(half()).await.unwrap(), expected.len() as u64);
    assert!(objects(&n1, half()).await.is_empty());
    assert_eq!(objects(&n1, other_half()).await.len(), rest);
    assert_eq!(rest + expected.len() + own, KEYS);

    n2.shutdown().await;
    n1.shutdown().await;
}

#[actix_rt::test]
async fn a_partition_midway_resumes_from_the_last_stored_batch() {
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let (n1, n2) = loaded_pair(&network, config(2, slow())).await;
    let own = objects(&n2, half()).await;
    let expected = objects(&n1, half()).await;

    n2.start_transfer(spec(5)).await.unwrap();
    let midway = wait_until(Duration::from_secs(30), || async {
        progress(&n2, 5).await.batches >= 3
    })
    .await;
    assert!(midway.is_some(), "no progress: {:?}", n2.transfers().await);
    network.partition(&[NodeId(1)], &[NodeId(2)]);
    let stalled = wait_until(Duration::from_secs(10), || async {
        state_of(&n2, 5).await == Some(TransferState::WaitingForSource)
    })
    .await;
    assert!(stalled.is_some(), "the lost pull was not noticed");
    let before_heal = progress(&n2, 5).await.keys;
    assert!(
        before_heal < expected.len() as u64,
        "cut before the end of the range"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    network.heal();
    wait_done(&n2, 5).await;

    assert_same(&objects(&n2, half()).await, &union(&own, &expected));
    let served = n1.served_transfers().await.unwrap();
    let s = served
        .iter()
        .find(|s| s.receiver == NodeId(2) && s.transfer == 5)
        .unwrap();
    assert_eq!(s.from_start, 1, "the start of the range was served once");
    eprintln!("partition: range of {} keys, served {s:?}", expected.len());
    // Each lost reply costs one batch again (a 4 KiB batch holds well
    // under 100 of these objects); a restart would have cost the range.
    let n = expected.len() as u64;
    assert!(
        s.keys >= n && s.keys < n + 300,
        "served {} keys for a range of {n}",
        s.keys
    );
    n2.shutdown().await;
    n1.shutdown().await;
}

#[actix_rt::test]
async fn a_restarted_receiver_resumes_from_its_persisted_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    let lsm = |c: &mut NodeConfig| {
        c.storage = ringkv::config::StorageConfig::Lsm {
            dir: dir.path().to_path_buf(),
            config: ringkv::LsmConfig::default(),
        };
    };
    let mut receiver = config(2, slow());
    lsm(&mut receiver);
    let (n1, n2) = loaded_pair(&network, receiver).await;
    let own = objects(&n2, half()).await;
    let expected = objects(&n1, half()).await;

    n2.start_transfer(spec(9)).await.unwrap();
    let midway = wait_until(Duration::from_secs(30), || async {
        progress(&n2, 9).await.batches >= 3
    })
    .await;
    assert!(midway.is_some(), "no progress: {:?}", n2.transfers().await);
    n2.crash().await;

    // The same node, on the same directory, once the old engine is closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let n2 = loop {
        let mut c = config(2, slow());
        lsm(&mut c);
        match spawn_memory(&network, c).await {
            Ok(n) => break n,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "cannot restart: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let resumed = n2.start_transfer(spec(9)).await.unwrap();
    assert!(
        resumed.batches >= 1 && resumed.keys > 0,
        "the cursor was not picked up: {resumed:?}"
    );
    wait_done(&n2, 9).await;
    assert_same(&objects(&n2, half()).await, &union(&own, &expected));
    let served = n1.served_transfers().await.unwrap();
    let s = served
        .iter()
        .find(|s| s.receiver == NodeId(2) && s.transfer == 9)
        .unwrap();
    assert_eq!(s.from_start, 1, "the start of the range was served once");
    let n = expected.len() as u64;
    assert!(
        s.keys >= n && s.keys < n + 300,
        "served {} keys for a range of {n}",
        s.keys
    );
    n2.shutdown().await;
    n1.shutdown().await;
}

/// Collects [`TransferDone`] reports into a channel.
struct Listener(tokio::sync::mpsc::UnboundedSender<TransferDone>);

impl actix::Actor for Listener {
    type Context = actix::Context<Self>;
}

impl actix::Handler<TransferDone> for Listener {
    type Result = ();

    fn handle(&mut self, msg: TransferDone, _: &mut actix::Context<Self>) {
        let _ = self.0.send(msg);
    }
}

#[actix_rt::test]
async fn several_sources_are_each_pulled_to_the_end_and_the_listener_hears_it() {
    use actix::Actor;
    let network = MemoryNetwork::new(MemoryNetConfig::default()).unwrap();
    // Three nodes in force, then keys (n = 1) on whichever node owns them.
    let (n1, n2) = loaded_pair(&network, config(2, slow())).await;
    let n3 = spawn_memory(&network, config(3, TransferConfig::default()))
        .await
        .unwrap();
    let nodes = [n1.clone(), n2.clone(), n3.clone()];
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let formed = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
            && same_ring(&nodes, &ids).await
            && n3.ring_state().await.is_ok_and(|s| s.pending.is_none())
            && routed(&nodes).await
    })
    .await;
    assert!(formed.is_some(), "node 3 did not join");
    // Node 3's join moved some of the first keys to it and, after a grace,
    // nodes 1 and 2 drop them: wait for that, then write more.
    tokio::time::sleep(ringkv::membership::rebalance::DROP_GRACE + Duration::from_millis(300))
        .await;
    load(&n1, "late", 1000).await;
    let on1 = objects(&n1, whole()).await;
    let on2 = objects(&n2, whole()).await;
    let before3 = objects(&n3, whole()).await;
    assert!(
        !on2.is_empty() && !before3.is_empty(),
        "every node owns some keys"
    );
    assert_eq!(on1.len() + on2.len() + before3.len(), KEYS + 1000);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    n3.set_transfer_listener(Listener(tx).start().recipient());
    let spec = TransferSpec {
        id: 11,
        range: whole(),
        sources: vec![NodeId(1), NodeId(2)],
        fence: None,
    };
    n3.start_transfer(spec).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("no TransferDone within 60 s")
        .unwrap();
    assert_eq!(done.id, 11);
    assert_eq!(done.keys, (on1.len() + on2.len()) as u64);

    // Node 3 holds the union, object for object.
    let all = union(&union(&on1, &on2), &before3);
    assert_same(&objects(&n3, whole()).await, &all);
    for n in [n3, n2, n1] {
        n.shutdown().await;
    }
}
