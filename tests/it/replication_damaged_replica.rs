//! A replica whose LSM table is damaged (issue [9], item 9, the
//! replication part): reads of the damaged keys are answered from the other
//! replicas, and read repair rewrites them on the damaged one, so that it
//! serves them again; its object count (for the Status op) still works and
//! its engine counts the damage.
//!
//! Three replica stores (node 1 on a real LSM directory, nodes 2 and 3 in
//! memory) and the get machine, with messages routed by hand; the damage is
//! a flipped byte in node 1's table file.

use std::collections::VecDeque;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv::replication::get::Repair;
use ringkv::replication::replica::ReplicaStore;
use ringkv::replication::{
    GetOptions, GetRequest, Outbox, ReplicaReply, ReplicaRequest, Target, Write,
};
use ringkv::storage::{Engine, LsmEngine, MemoryEngine};
use ringkv::version::{CausalContext, ConflictPolicy, Object, Payload, Timestamp};
use ringkv::{LsmConfig, NodeId, SyncPolicy};

const KEYS: u32 = 400;

fn lsm_config() -> LsmConfig {
    LsmConfig {
        sync: SyncPolicy::None,
        memtable_bytes: 64 << 20,
        block_cache_bytes: 1 << 20,
        ..LsmConfig::default()
    }
}

fn open_lsm(dir: &Path) -> (Arc<LsmEngine>, ReplicaStore) {
    let engine = Arc::new(LsmEngine::open(dir, lsm_config()).unwrap());
    let store = ReplicaStore::open(NodeId(1), engine.clone(), 10, 100).unwrap();
    (engine, store)
}

fn key(i: u32) -> Vec<u8> {
    format!("user-{i:05}").into_bytes()
}

fn read(store: &ReplicaStore, k: &[u8]) -> ReplicaReply {
    store.handle(ReplicaRequest::Read {
        req: 1,
        bucket: b"b".to_vec(),
        key: k.to_vec(),
    })
}

/// One get of `k` over nodes 1..=3 with `r` = 2, every message delivered.
fn get(stores: [&ReplicaStore; 3], k: &[u8], req: u64) -> Option<Object> {
    let targets: Vec<Target> = (1..=3)
        .map(|n| Target {
            node: NodeId(n),
            hint_for: None,
        })
        .collect();
    let now = Instant::now();
    let mut out = Outbox::new();
    let mut get = GetRequest::new(
        now,
        req,
        b"b".to_vec(),
        k.to_vec(),
        ConflictPolicy::Siblings,
        targets,
        GetOptions {
            r: 2,
            timeout: Duration::from_secs(10),
            repair: Repair::Async,
        },
        &mut out,
    );
    let mut queue: VecDeque<_> = out.drain(..).collect();
    let mut answer = None;
    while let Some((node, request)) = queue.pop_front() {
        let reply = stores[(node.0 - 1) as usize].handle(request);
        get.step(now, node, reply, &mut out);
        queue.extend(out.drain(..));
        if let Some(a) = get.take_reply() {
            answer = Some(a);
        }
    }
    assert!(get.is_finished());
    answer.expect("answered").expect("read succeeded").object
}

#[test]
fn damaged_keys_are_read_from_the_others_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let two = ReplicaStore::open(NodeId(2), Arc::new(MemoryEngine::new()), 10, 100).unwrap();
    let three = ReplicaStore::open(NodeId(3), Arc::new(MemoryEngine::new()), 10, 100).unwrap();
    let mut objects = Vec::new();
    {
        let (engine, one) = open_lsm(dir.path());
        for i in 0..KEYS {
            let reply = two.handle(ReplicaRequest::Coordinate {
                req: 1,
                bucket: b"b".to_vec(),
                key: key(i),
                write: Write {
                    context: CausalContext::empty(),
                    payload: Payload::Value(format!("value {i}").into_bytes()),
                    timestamp: Timestamp::from_ms(u64::from(i) + 1),
                    op: None,
                    base: None,
                },
                policy: ConflictPolicy::Siblings,
                hint_for: None,
            });
            let ReplicaReply::Coordinated { result: Ok(o), .. } = reply else {
                panic!("{reply:?}")
            };
            for store in [&one, &three] {
                let merged = store.handle(ReplicaRequest::Merge {
                    req: 2,
                    bucket: b"b".to_vec(),
                    key: key(i),
                    object: o.clone(),
                    policy: ConflictPolicy::Siblings,
                    hint_for: None,
                });
                assert!(matches!(
                    merged,
                    ReplicaReply::Merged { result: Ok(()), .. }
                ));
            }
            objects.push(o);
        }
        engine.flush().unwrap();
    }
    // Damage the first data block of node 1's table.
    let table = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .unwrap();
    let mut bytes = fs::read(&table).unwrap();
    bytes[20] ^= 0x40;
    fs::write(&table, bytes).unwrap();

    let (engine, one) = open_lsm(dir.path());
    let damaged: Vec<u32> = (0..KEYS)
        .filter(|&i| match read(&one, &key(i)) {
            ReplicaReply::ReadCorrupt { .. } => true,
            ReplicaReply::Read {
                result: Ok(Some(o)),
                ..
            } => {
                assert_eq!(o, objects[i as usize]);
                false
            }
            other => panic!("key {i}: {other:?}"),
        })
        .collect();
    assert!(!damaged.is_empty() && damaged.len() < KEYS as usize);
    assert_eq!(engine.stats().corruptions, 1);
    // What the Status op counts still works on the damaged store.
    assert!(one.count_objects(10 * u64::from(KEYS)).is_ok());

    for (n, &i) in damaged.iter().enumerate() {
        let got = get([&one, &two, &three], &key(i), 100 + n as u64);
        assert_eq!(got.as_ref(), Some(&objects[i as usize]), "key {i}");
    }
    // Read repair rewrote every damaged key on node 1.
    for i in 0..KEYS {
        match read(&one, &key(i)) {
            ReplicaReply::Read {
                result: Ok(Some(o)),
                ..
            } => assert_eq!(o, objects[i as usize]),
            other => panic!("key {i} after repair: {other:?}"),
        }
    }
    drop(one);
    drop(engine);
    // And the repairs are stored: they survive a reopen.
    let (_engine, one) = open_lsm(dir.path());
    for &i in &damaged {
        assert!(matches!(
            read(&one, &key(i)),
            ReplicaReply::Read {
                result: Ok(Some(_)),
                ..
            }
        ));
    }
}
