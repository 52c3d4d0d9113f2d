//! The node's replication actors, in process: five real nodes (actors,
//! coordinator, replicas, handoff) over the in-process network, driven
//! through `Node::execute` with client-protocol operations.
//!
//! What it shows: quorum writes and reads through any node; siblings from
//! concurrent blind writes and their resolution with the returned context;
//! a counter bucket converging under increments through every node; bucket
//! properties set on one node reaching all; ALL reads failing with a clear
//! `Unavailable` once a node is down, while QUORUM keeps working with
//! fallbacks; the fallbacks' hints delivered to the node when it is back;
//! read repair of a stale replica; bad arguments refused with
//! `InvalidInput`, and so is fault injection (`BlockOutbound`) on a node
//! that did not opt in or whose transport cannot do it.
//!
//! Every wait is bounded; nothing depends on speed. The multi-process
//! versions over TCP are in `node_cluster.rs`.

use std::time::Duration;

use crate::support::*;
use ringkv::crdt::CrdtKind;
use ringkv::node::{Node, NodeConfig};
use ringkv::protocol::{BucketInfo, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::get::Repair;
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, Error, MemberStatus, MemoryNetwork, NodeId};
use serde_bytes::ByteBuf;

fn b(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// Hinted handoff rounds and retries scaled down with the membership.
fn tune(config: &mut NodeConfig) {
    config.replica.handoff_interval = Duration::from_millis(100);
    config.replica.handoff_retry = Duration::from_millis(500);
}

async fn spawn(network: &MemoryNetwork, id: u64) -> Node {
    let mut config = memory_config(id);
    tune(&mut config);
    spawn_memory(network, config).await.unwrap()
}

async fn cluster(n: u64) -> (MemoryNetwork, Vec<Node>) {
    memory_cluster(n, tune).await
}

fn put(bucket: &str, key: &str, value: &str, w: Option<Consistency>) -> Op {
    Op::Put {
        bucket: b(bucket),
        key: b(key),
        value: b(value),
        context: None,
        options: WriteOptions {
            w,
            ..WriteOptions::default()
        },
    }
}

fn get(bucket: &str, key: &str, r: Option<Consistency>) -> Op {
    Op::Get {
        bucket: b(bucket),
        key: b(key),
        options: ReadOptions {
            r,
            ..ReadOptions::default()
        },
    }
}

/// The single value a read returns, or `None` when absent; panics on
/// siblings or errors.
async fn value_of(node: &Node, bucket: &str, key: &str, r: Option<Consistency>) -> Option<Vec<u8>> {
    match node.execute(get(bucket, key, r)).await {
        Ok(Reply::Object {
            value, siblings, ..
        }) => {
            assert!(siblings.is_empty(), "unexpected siblings: {siblings:?}");
            value.map(|v| v.into_vec())
        }
        other => panic!("get {bucket}/{key}: {other:?}"),
    }
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[actix_rt::test]
async fn quorum_writes_and_reads_through_every_node() {
    let (_net, nodes) = cluster(5).await;
    for i in 0..50 {
        let via = &nodes[i % 5];
        let reply = via
            .execute(put("b", &format!("k{i}"), &format!("v{i}"), None))
            .await
            .unwrap();
        let Reply::Written { receipt, .. } = reply else {
            panic!("{reply:?}")
        };
        assert!(receipt.answered.len() >= 2, "W=2 of N=3: {receipt:?}");
        assert_eq!(receipt.asked.len(), 3);
    }
    for i in 0..50 {
        let via = &nodes[(i + 2) % 5];
        let got = value_at_all(via, "b", &format!("k{i}")).await;
        assert_eq!(got, Some(format!("v{i}").into_bytes()));
    }
    assert_eq!(value_of(&nodes[0], "b", "absent", None).await, None);
    // Every key is on exactly three replicas, once every hint is home: on a
    // busy machine a replica may be suspected for a moment during the
    // writes (the detector is scaled down to 50 ms heartbeats), and a
    // fallback then holds its copy as a hint until it is delivered.
    let counts = std::cell::Cell::new((0, 0));
    let settled = wait_until(Duration::from_secs(30), || async {
        let (mut objects, mut hints) = (0, 0);
        for n in &nodes {
            let stats = n.store_stats().await.unwrap();
            objects += stats.objects;
            hints += stats.hints;
        }
        counts.set((objects, hints));
        hints == 0 && objects >= 150
    })
    .await;
    let counts = counts.get();
    assert!(settled.is_some(), "(objects, hints) after 30 s: {counts:?}");
    assert_eq!(counts, (150, 0), "(objects, hints)");
    stop(nodes).await;
}

/// A read at ALL through `node`, as [`value_of`] reads, retried while it is
/// `Unavailable` (for up to 30 s): ALL is not sloppy, so a replica that a
/// busy machine's scheduling makes SUSPECT for a moment fails the read
/// until it refutes. Any other error, siblings or a wrong value fail at
/// once, as in [`value_of`].
async fn value_at_all(node: &Node, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match node.execute(get(bucket, key, Some(Consistency::All))).await {
            Err(Error::Unavailable { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Reply::Object {
                value, siblings, ..
            }) => {
                assert!(siblings.is_empty(), "unexpected siblings: {siblings:?}");
                return value.map(|v| v.into_vec());
            }
            other => panic!("get {bucket}/{key} at ALL: {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn siblings_counters_and_bucket_properties() {
    let (_net, nodes) = cluster(5).await;
    // Two blind writes: concurrent, so both are kept.
    nodes[0].execute(put("s", "k", "one", None)).await.unwrap();
    nodes[3].execute(put("s", "k", "two", None)).await.unwrap();
    let Reply::Object {
        value: None,
        siblings,
        context,
        ..
    } = nodes[1].execute(get("s", "k", None)).await.unwrap()
    else {
        panic!("expected siblings")
    };
    let mut values: Vec<Vec<u8>> = siblings
        .iter()
        .map(|s| s.value.clone().unwrap().into_vec())
        .collect();
    values.sort();
    assert_eq!(values, vec![b"one".to_vec(), b"two".to_vec()]);
    // A write with the context replaces both.
    nodes[2]
        .execute(Op::Put {
            bucket: b("s"),
            key: b("k"),
            value: b("merged"),
            context: Some(context),
            options: WriteOptions::default(),
        })
        .await
        .unwrap();
    assert_eq!(
        value_of(&nodes[4], "s", "k", Some(Consistency::All)).await,
        Some(b"merged".to_vec())
    );

    // A counter bucket, set through one node, known to all.
    let props = BucketInfo {
        n: 3,
        r: Consistency::Quorum,
        w: Consistency::Quorum,
        policy: ConflictPolicy::Crdt(CrdtKind::PnCounter),
        sloppy_quorum: true,
        timeout_ms: 5000,
    };
    nodes[0]
        .execute(Op::SetBucket {
            bucket: b("c"),
            props: props.clone(),
        })
        .await
        .unwrap();
    let spread = wait_until(Duration::from_secs(10), || async {
        for n in &nodes {
            match n.execute(Op::GetBucket { bucket: b("c") }).await {
                Ok(Reply::Bucket { props: p }) if p == props => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert!(
        spread.is_some(),
        "bucket properties did not reach every node"
    );
    // Concurrent increments through every node.
    let mut adds = Vec::new();
    for round in 0..4 {
        for n in &nodes {
            let n = n.clone();
            let by = if round == 3 { -1 } else { 2 };
            adds.push(actix_rt::spawn(async move {
                n.execute(Op::CounterAdd {
                    bucket: b("c"),
                    key: b("hits"),
                    by,
                    options: WriteOptions::default(),
                })
                .await
            }));
        }
    }
    for a in adds {
        assert!(matches!(a.await.unwrap(), Ok(Reply::Counter { .. })));
    }
    // 5 nodes x (3 rounds x 2 - 1) = 25, read at ALL from every node.
    for n in &nodes {
        let r = n
            .execute(Op::CounterGet {
                bucket: b("c"),
                key: b("hits"),
                options: ReadOptions {
                    r: Some(Consistency::All),
                    ..ReadOptions::default()
                },
            })
            .await
            .unwrap();
        assert!(matches!(r, Reply::Counter { value: 25, .. }), "{r:?}");
    }
    // A counter op on a plain bucket, and an impossible quorum, are refused.
    let wrong = nodes[0]
        .execute(Op::CounterAdd {
            bucket: b("s"),
            key: b("k"),
            by: 1,
            options: WriteOptions::default(),
        })
        .await;
    assert!(matches!(wrong, Err(Error::InvalidInput(_))), "{wrong:?}");
    let too_many = nodes[0]
        .execute(get("s", "k", Some(Consistency::Count(4))))
        .await;
    assert!(
        matches!(too_many, Err(Error::InvalidInput(_))),
        "{too_many:?}"
    );
    stop(nodes).await;
}

#[actix_rt::test]
async fn a_down_node_fails_all_reads_gets_hints_back_and_is_repaired() {
    let (network, mut nodes) = cluster(5).await;
    let victim = nodes.pop().unwrap();
    let victim_id = victim.id();
    victim.crash().await;
    let down = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &[victim_id], MemberStatus::Down).await
    })
    .await;
    assert!(down.is_some(), "the crash was not detected");

    // Keys whose preference list includes the victim.
    let mut theirs = Vec::new();
    for i in 0.. {
        let key = format!("h{i}");
        let Reply::Preference { targets } = nodes[0]
            .execute(Op::PreferenceList {
                bucket: b("b"),
                key: b(&key),
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        if targets.iter().any(|t| t.fallback_for == Some(victim_id)) {
            theirs.push(key);
        }
        if theirs.len() == 10 {
            break;
        }
    }
    for (i, key) in theirs.iter().enumerate() {
        let reply = nodes[i % 4]
            .execute(put("b", key, "while-down", Some(Consistency::Two)))
            .await
            .unwrap();
        let Reply::Written { receipt, .. } = reply else {
            panic!("{reply:?}")
        };
        assert!(!receipt.asked.contains(&victim_id), "{receipt:?}");
    }
    // ALL without fallbacks is impossible while the victim is down.
    let all = nodes[0]
        .execute(Op::Get {
            bucket: b("b"),
            key: b(&theirs[0]),
            options: ReadOptions {
                r: Some(Consistency::All),
                sloppy_quorum: Some(false),
                ..ReadOptions::default()
            },
        })
        .await;
    assert!(
        matches!(
            all,
            Err(Error::Unavailable {
                needed: 3,
                got: 2,
                ..
            })
        ),
        "{all:?}"
    );
    // W=2 may answer before the fallback's copy is stored; it follows.
    let held = wait_until(Duration::from_secs(10), || async {
        let mut h = 0;
        for n in &nodes {
            h += n.store_stats().await.unwrap().hints;
        }
        h == theirs.len() as u64
    })
    .await;
    assert!(held.is_some(), "fallbacks hold one hint per key");

    // The victim comes back empty (its memory engine died with it); the
    // hints bring it every key written while it was down.
    let back = spawn(&network, victim_id.0).await;
    let delivered = wait_until(Duration::from_secs(30), || async {
        let mut h = 0;
        for n in &nodes {
            h += n.store_stats().await.unwrap().hints;
        }
        h == 0
    })
    .await;
    assert!(delivered.is_some(), "hints were not all delivered");
    let stats = back.store_stats().await.unwrap();
    assert_eq!(
        stats.objects,
        theirs.len() as u64,
        "the victim got every hinted key"
    );

    for key in &theirs {
        assert_eq!(local(&back, "b", key).await, Some(b"while-down".to_vec()));
    }
    let ids: Vec<NodeId> = (1..=5).map(NodeId).collect();
    nodes.push(back);
    let alive = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
    })
    .await;
    assert!(alive.is_some(), "the victim is not ALIVE everywhere");
    stop(nodes).await;
}

/// This node's own copy of a key (no quorum).
async fn local(node: &Node, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match node
        .execute(Op::LocalGet {
            bucket: b(bucket),
            key: b(key),
        })
        .await
    {
        Ok(Reply::Object { value, .. }) => value.map(|v| v.into_vec()),
        other => panic!("local get: {other:?}"),
    }
}

#[actix_rt::test]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    let (network, nodes) = cluster(3).await;
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    // With n = 3 on 3 nodes every node holds every key.
    nodes[0]
        .execute(put("b", "k", "v1", Some(Consistency::All)))
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(local(n, "b", "k").await, Some(b"v1".to_vec()));
    }
    // Node 3 misses the next write: cut off, then written around at W=2
    // (no fallback exists in a 3-node ring, so no hint either).
    network.partition(&[NodeId(3)], &[NodeId(1), NodeId(2)]);
    let v1 = local(&nodes[0], "b", "k").await;
    assert_eq!(v1, Some(b"v1".to_vec()));
    let Reply::Object { context, .. } = nodes[0].execute(get("b", "k", None)).await.unwrap() else {
        panic!()
    };
    let written = nodes[0]
        .execute(Op::Put {
            bucket: b("b"),
            key: b("k"),
            value: b("v2"),
            context: Some(context),
            options: WriteOptions {
                w: Some(Consistency::Two),
                timeout_ms: Some(20_000),
                ..WriteOptions::default()
            },
        })
        .await;
    assert!(matches!(written, Ok(Reply::Written { .. })), "{written:?}");
    network.heal();
    let healed = wait_until(Duration::from_secs(30), || async {
        all_see(&nodes, &ids, MemberStatus::Alive).await
    })
    .await;
    assert!(healed.is_some(), "the partition did not heal");
    assert_eq!(
        local(&nodes[2], "b", "k").await,
        Some(b"v1".to_vec()),
        "stale"
    );
    // A read at ALL, repairing before it answers, fixes node 3.
    let read = nodes[1]
        .execute(Op::Get {
            bucket: b("b"),
            key: b("k"),
            options: ReadOptions {
                r: Some(Consistency::All),
                repair: Some(Repair::BeforeAnswer),
                ..ReadOptions::default()
            },
        })
        .await
        .unwrap();
    let Reply::Object { value, receipt, .. } = read else {
        panic!("{read:?}")
    };
    assert_eq!(value.unwrap().into_vec(), b"v2".to_vec());
    assert_eq!(receipt.repaired, vec![NodeId(3)], "{receipt:?}");
    assert_eq!(
        local(&nodes[2], "b", "k").await,
        Some(b"v2".to_vec()),
        "repaired"
    );
    stop(nodes).await;
}

/// A `SetBucket` past the bucket limit or with a name too long is refused
/// where it is set and reaches no node's table.
#[actix_rt::test]
async fn a_refused_set_bucket_changes_no_node_s_table() {
    use ringkv::config::{MAX_BUCKETS, MAX_BUCKET_BYTES};
    let (_network, nodes) = cluster(3).await;
    let props = |n: u32| BucketInfo {
        n,
        r: Consistency::Quorum,
        w: Consistency::Quorum,
        policy: ConflictPolicy::Lww,
        sloppy_quorum: false,
        timeout_ms: 5000,
    };
    let set = |node: &Node, bucket: Vec<u8>, p: BucketInfo| {
        let node = node.clone();
        async move {
            node.execute(Op::SetBucket {
                bucket: ByteBuf::from(bucket),
                props: p,
            })
            .await
        }
    };
    for i in 0..MAX_BUCKETS {
        set(&nodes[0], format!("b{i}").into_bytes(), props(2))
            .await
            .unwrap();
    }
    // Every accepted setting reaches every node.
    let last = format!("b{}", MAX_BUCKETS - 1).into_bytes();
    let spread = wait_until(Duration::from_secs(20), || async {
        for n in &nodes {
            match n
                .execute(Op::GetBucket {
                    bucket: ByteBuf::from(last.clone()),
                })
                .await
            {
                Ok(Reply::Bucket { props: p }) if p == props(2) => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert!(spread.is_some(), "the accepted settings did not spread");
    // One bucket too many, through another node, and a name too long:
    // refused where they are set, and in no table anywhere.
    let e = set(&nodes[1], b"one-too-many".to_vec(), props(2))
        .await
        .unwrap_err();
    assert!(matches!(e, ringkv::Error::InvalidInput(_)), "{e}");
    let long = vec![b'x'; MAX_BUCKET_BYTES + 1];
    let e = set(&nodes[1], long.clone(), props(2)).await.unwrap_err();
    assert!(matches!(e, ringkv::Error::InvalidInput(_)), "{e}");
    // Every accepted setting reaches every node; the refused ones never do.
    let defaults = BucketInfo::from(&ringkv::BucketProps::default());
    let agreed = wait_until(Duration::from_secs(20), || async {
        for n in &nodes {
            for (bucket, want) in [
                (b"b0".to_vec(), props(2)),
                (format!("b{}", MAX_BUCKETS - 1).into_bytes(), props(2)),
            ] {
                match n
                    .execute(Op::GetBucket {
                        bucket: ByteBuf::from(bucket),
                    })
                    .await
                {
                    Ok(Reply::Bucket { props: p }) if p == want => {}
                    _ => return false,
                }
            }
        }
        true
    })
    .await;
    assert!(agreed.is_some(), "the accepted settings did not spread");
    for n in &nodes {
        match n
            .execute(Op::GetBucket {
                bucket: b("one-too-many"),
            })
            .await
        {
            Ok(Reply::Bucket { props: p }) => assert_eq!(p, defaults),
            other => panic!("{other:?}"),
        }
    }
    // A bucket already set can still be changed at the limit.
    set(&nodes[2], b"b5".to_vec(), props(3)).await.unwrap();
    stop(nodes).await;
}

/// Fault injection through the client protocol is opt-in per node, and a
/// node on a transport that cannot inject faults (the in-process network,
/// whose faults are set on the network itself) says so rather than
/// pretending to have blocked anything.
#[actix_rt::test]
async fn block_outbound_is_refused_when_off_or_unsupported() {
    let network = MemoryNetwork::new(ringkv::MemoryNetConfig::default()).expect("network config");
    let off = spawn_memory(&network, memory_config(1)).await.unwrap();
    let block = || Op::BlockOutbound {
        peers: vec![NodeId(3)],
    };
    match off.execute(block()).await {
        Err(Error::InvalidInput(m)) => assert!(m.contains("--allow-fault-injection"), "{m}"),
        other => panic!("{other:?}"),
    }
    let mut config = memory_config(2);
    config.allow_fault_injection = true;
    let on = spawn_memory(&network, config).await.unwrap();
    match on.execute(block()).await {
        Err(Error::InvalidInput(m)) => assert!(m.contains("cannot block peers"), "{m}"),
        other => panic!("{other:?}"),
    }
    on.shutdown().await;
    off.shutdown().await;
}

/// Nodes of four data shards each (more than this machine's cores, so
/// shards share threads and cross them): every key is served whichever
/// shard owns it, and a bucket's policy set through a node holds on every
/// shard of that node as soon as the `SetBucket` is answered (the lead
/// shard shares it before answering). Under the default policy the two
/// blind writes of each key below would leave two siblings.
#[actix_rt::test]
async fn a_node_of_four_data_shards_serves_every_key_under_the_bucket_set_through_it() {
    let (_network, nodes) = memory_cluster(3, |c| {
        tune(c);
        c.replica.data_shards = 4;
    })
    .await;
    let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let shards: std::collections::BTreeSet<usize> = keys
        .iter()
        .map(|k| ringkv::replication::shard_of_key(b"lww", k.as_bytes(), 4))
        .collect();
    assert_eq!(shards.len(), 4, "the keys span every shard");
    let props = BucketInfo {
        n: 3,
        r: Consistency::Quorum,
        w: Consistency::Quorum,
        policy: ConflictPolicy::Lww,
        sloppy_quorum: false,
        timeout_ms: 5000,
    };
    nodes[0]
        .execute(Op::SetBucket {
            bucket: b("lww"),
            props,
        })
        .await
        .unwrap();
    for k in &keys {
        for v in ["first", "second"] {
            nodes[0]
                .execute(put("lww", k, v, Some(Consistency::All)))
                .await
                .unwrap();
        }
        assert_eq!(
            value_of(&nodes[0], "lww", k, Some(Consistency::All)).await,
            Some(b"second".to_vec()),
            "{k}"
        );
    }
    // The default bucket, through every node: each key written through one
    // node is read through the next.
    for (i, k) in keys.iter().enumerate() {
        let (via, from) = (&nodes[i % 3], &nodes[(i + 1) % 3]);
        via.execute(put("d", k, k, Some(Consistency::Quorum)))
            .await
            .unwrap();
        assert_eq!(
            value_of(from, "d", k, Some(Consistency::Quorum)).await,
            Some(k.as_bytes().to_vec()),
            "{k}"
        );
    }
    // Concurrent blind writes through two nodes of a key of each shard
    // still leave both values as siblings.
    for k in ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"] {
        let (a, c) = tokio::join!(
            nodes[1].execute(put("d", k, "a", Some(Consistency::All))),
            nodes[2].execute(put("d", k, "c", Some(Consistency::All))),
        );
        a.unwrap();
        c.unwrap();
        let Reply::Object {
            value, siblings, ..
        } = nodes[0]
            .execute(get("d", k, Some(Consistency::All)))
            .await
            .unwrap()
        else {
            panic!("not an object");
        };
        let mut all: Vec<Vec<u8>> = siblings
            .into_iter()
            .filter_map(|s| s.value.map(|v| v.into_vec()))
            .collect();
        all.extend(value.map(|v| v.into_vec()));
        all.sort();
        assert_eq!(all, vec![b"a".to_vec(), b"c".to_vec()], "{k}");
    }
    let status = nodes[0].status().await.unwrap();
    assert_eq!(status.in_flight, 0);
}
