//! Engine-level tests of the LSM tree: recovery, compaction correctness,
//! tombstones, scans during compaction, many writers, backpressure.
//!
//! The configurations are tiny (64 KiB memtables and tables, a 256 KiB
//! first level) so that flushes and multi-level compactions really happen
//! within a test's few megabytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv::storage::LsmEngine;
use ringkv::storage::{Engine, KeyRange, WriteBatch};
use ringkv::{LsmConfig, SyncPolicy};

fn small_config() -> LsmConfig {
    LsmConfig {
        sync: SyncPolicy::None,
        memtable_bytes: 64 * 1024,
        target_table_bytes: 64 * 1024,
        l1_target_bytes: 256 * 1024,
        block_cache_bytes: 1024 * 1024,
        ..LsmConfig::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

/// 100 bytes that do not compress (so that levels fill up as sized).
fn value(i: u32, generation: u32) -> Vec<u8> {
    let mut v = format!("value-{i}-{generation}-").into_bytes();
    let mut x = u64::from(i) << 32 | u64::from(generation) | 1;
    while v.len() < 100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn scan_all(e: &LsmEngine, range: KeyRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    e.scan(range).unwrap().map(|r| r.unwrap()).collect()
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_model(e: &LsmEngine, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in model {
        assert_eq!(
            e.get(k).unwrap().as_ref(),
            Some(v),
            "key {:?}",
            String::from_utf8_lossy(k)
        );
    }
    let scanned = scan_all(e, KeyRange::all());
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scanned.len(), expected.len());
    assert!(scanned == expected, "full scan differs from the model");
}

#[test]
fn lsm_basic_put_get_delete_scan_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), LsmConfig::default()).unwrap();
        e.put(b"b", b"2").unwrap();
        e.put(b"a", b"1").unwrap();
        e.put(b"c", b"3").unwrap();
        e.delete(b"b").unwrap();
        let mut batch = WriteBatch::new();
        batch
            .put(b"d".to_vec(), b"4".to_vec())
            .put(b"d".to_vec(), b"5".to_vec());
        e.write(batch).unwrap();
        assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"b").unwrap(), None);
        assert_eq!(
            e.get(b"d").unwrap(),
            Some(b"5".to_vec()),
            "later op in a batch wins"
        );
        assert_eq!(e.get(b"zz").unwrap(), None);
        let keys: Vec<_> = scan_all(&e, KeyRange::all())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
        e.close().unwrap();
    }
    // Reopen from the WAL alone (nothing was flushed).
    {
        let e = LsmEngine::open(dir.path(), LsmConfig::default()).unwrap();
        assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e.get(b"b").unwrap(), None);
        assert_eq!(e.get(b"d").unwrap(), Some(b"5".to_vec()));
        assert_eq!(
            e.stats().tables_per_level[0],
            1,
            "recovery flushed the WAL to a table"
        );
        e.put(b"b", b"again").unwrap();
        e.flush().unwrap();
        // Dropped, not closed: drop must also leave a recoverable store.
    }
    let e = LsmEngine::open(dir.path(), LsmConfig::default()).unwrap();
    let all = scan_all(&e, KeyRange::all());
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"again".to_vec()),
            (b"c".to_vec(), b"3".to_vec()),
            (b"d".to_vec(), b"5".to_vec()),
        ]
    );
    let stats = e.stats();
    assert_eq!(stats.engine, "lsm");
    assert!(stats.disk_bytes > 0);
}

#[test]
fn lsm_oversized_input_is_refused_without_effect() {
    let dir = tempfile::tempdir().unwrap();
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    let mut batch = WriteBatch::new();
    batch
        .put(b"ok".to_vec(), b"v".to_vec())
        .put(vec![1; ringkv::storage::MAX_KEY_BYTES + 1], b"v".to_vec());
    assert!(matches!(
        e.write(batch),
        Err(ringkv::Error::InvalidInput(_))
    ));
    assert_eq!(e.get(b"ok").unwrap(), None);
    assert!(e.write(WriteBatch::new()).is_ok());
    let bad = LsmConfig {
        memtable_bytes: 10,
        ..small_config()
    };
    assert!(matches!(
        LsmEngine::open(&dir.path().join("other"), bad),
        Err(ringkv::Error::InvalidInput(_))
    ));
}

#[test]
fn lsm_flushes_and_compaction_keep_every_value_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let n = 12_000u32;
    {
        let e = LsmEngine::open(dir.path(), small_config()).unwrap();
        // Random-ish order, with overwrites of earlier keys.
        for round in 0..2u32 {
            for j in 0..n {
                let i = (j.wrapping_mul(7919)) % n;
                if round == 1 && i % 3 != 0 {
                    continue;
                }
                e.put(&key(i), &value(i, round)).unwrap();
                model.insert(key(i), value(i, round));
            }
        }
        e.flush().unwrap();
        let stats = e.stats();
        assert!(stats.flushes >= 10, "{stats}");
        eventually("L0 to drop below the compaction trigger", || {
            e.stats().tables_per_level[0] < 4
        });
        e.compact_until_settled().unwrap();
        let stats = e.stats();
        assert!(stats.compactions >= 1, "{stats}");
        assert!(
            stats.tables_per_level[2..].iter().sum::<usize>() > 0,
            "data reached level 2 or deeper: {stats}"
        );
        check_model(&e, &model);
        e.close().unwrap();
    }
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    check_model(&e, &model);
    // Ranges over the compacted levels.
    let got = scan_all(&e, KeyRange::between(key(100), key(200)));
    assert_eq!(got.len(), 100);
    assert_eq!(got[0].0, key(100));
    assert_eq!(got[99].0, key(199));
    // Point reads of absent keys consult bloom filters.
    for i in n..n + 500 {
        assert_eq!(e.get(&key(i)).unwrap(), None);
    }
    assert!(e.stats().bloom_skips > 0);
}

#[test]
fn lsm_deleted_keys_stay_deleted_through_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6000u32;
    {
        let e = LsmEngine::open(dir.path(), small_config()).unwrap();
        for i in 0..n {
            e.put(&key(i), &value(i, 0)).unwrap();
        }
        e.flush().unwrap();
        e.compact_until_settled().unwrap();
        for i in (0..n).filter(|i| i % 2 == 0) {
            e.delete(&key(i)).unwrap();
        }
        e.flush().unwrap();
        e.compact_until_settled().unwrap();
        for i in 0..n {
            let want = (i % 2 == 1).then(|| value(i, 0));
            assert_eq!(e.get(&key(i)).unwrap(), want, "key {i}");
        }
        e.close().unwrap();
    }
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    let all = scan_all(&e, KeyRange::all());
    assert_eq!(all.len(), (n / 2) as usize);
    assert!(all.iter().all(|(k, _)| {
        let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        i % 2 == 1
    }));
    for i in (0..n).step_by(97) {
        assert_eq!(e.get(&key(i)).unwrap(), (i % 2 == 1).then(|| value(i, 0)));
    }
    // Write everything again, deleting all: nothing is left, and the tree
    // holds (almost) no bytes once compaction drops the tombstones at the
    // bottom.
    for i in 0..n {
        e.delete(&key(i)).unwrap();
    }
    e.flush().unwrap();
    e.compact_until_settled().unwrap();
    assert!(scan_all(&e, KeyRange::all()).is_empty());
}

#[test]
fn lsm_scans_see_one_snapshot_during_writes_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(LsmEngine::open(dir.path(), small_config()).unwrap());
    let keys = 400u32;
    let write_generation = move |e: &LsmEngine, g: u32| {
        // Every key of a generation in one atomic batch.
        let mut batch = WriteBatch::new();
        for i in 0..keys {
            batch.put(key(i), value(i, g));
        }
        e.write(batch).unwrap();
    };
    write_generation(&e, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut g = 1;
            while !stop.load(Ordering::Relaxed) && g < 400 {
                write_generation(&e, g);
                g += 1;
            }
            g
        })
    };
    let mut scans = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && scans < 200 {
        let mut it = e.scan(KeyRange::all()).unwrap();
        let mut generation = None;
        let mut count = 0;
        for kv in &mut it {
            let (k, v) = kv.unwrap();
            let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
            let text = String::from_utf8_lossy(&v).to_string();
            let g: u32 = text.split('-').nth(2).unwrap().parse().unwrap();
            assert_eq!(k, key(i));
            match generation {
                None => generation = Some(g),
                Some(first) => assert_eq!(g, first, "a scan mixed generations {first} and {g}"),
            }
            count += 1;
            if count == keys / 2 {
                // Let the writer, flusher and compactor move on mid-scan.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(count, keys);
        scans += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let generations = writer.join().unwrap();
    assert!(scans > 0 && generations > 1);
    // Each generation (400 entries) overflows a 64 KiB memtable, so every
    // write after the first sealed one: flushes ran under the scans.
    e.flush().unwrap();
    let stats = e.stats();
    assert!(stats.flushes as u32 >= generations - 1, "{stats}");
}

#[test]
fn lsm_a_scan_keeps_replaced_table_files_alive() {
    let dir = tempfile::tempdir().unwrap();
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    let n = 3000u32;
    for i in 0..n {
        e.put(&key(i), &value(i, 0)).unwrap();
    }
    e.flush().unwrap();
    let mut it = e.scan(KeyRange::all()).unwrap();
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.0, key(0));
    // Replace every table underneath the scan.
    for i in 0..n {
        e.put(&key(i), &value(i, 1)).unwrap();
    }
    e.flush().unwrap();
    e.compact_until_settled().unwrap();
    let rest: Vec<_> = it.map(|r| r.unwrap()).collect();
    assert_eq!(rest.len(), (n - 1) as usize);
    assert!(rest.iter().all(|(k, v)| {
        let i: u32 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
        *v == value(i, 0)
    }));
    // And once the scan is gone, the replaced files are deleted.
    let sst_count = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|f| {
                f.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".sst")
            })
            .count()
    };
    let live: usize = e.stats().tables_per_level.iter().sum();
    assert_eq!(sst_count(dir.path()), live);
}

#[test]
fn lsm_many_threads_with_sync_always_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let config = LsmConfig {
        sync: SyncPolicy::Always,
        ..small_config()
    };
    let threads = 8u32;
    let per_thread = 150u32;
    {
        let e = Arc::new(LsmEngine::open(dir.path(), config.clone()).unwrap());
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let e = Arc::clone(&e);
                std::thread::spawn(move || {
                    for j in 0..per_thread {
                        let i = t * 10_000 + j;
                        e.put(&key(i), &value(i, t)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for t in 0..threads {
            for j in 0..per_thread {
                let i = t * 10_000 + j;
                assert_eq!(e.get(&key(i)).unwrap(), Some(value(i, t)));
            }
        }
        let stats = e.stats();
        assert_eq!(
            stats.logical_bytes_written,
            u64::from(threads * per_thread) * (11 + 100)
        );
        assert!(stats.disk_bytes_written >= stats.logical_bytes_written);
    }
    let e = LsmEngine::open(dir.path(), config).unwrap();
    assert_eq!(
        scan_all(&e, KeyRange::all()).len(),
        (threads * per_thread) as usize
    );
}

#[test]
fn lsm_writers_are_slowed_when_flushing_falls_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = LsmConfig {
        memtable_bytes: 4 * 1024,
        max_sealed_memtables: 2,
        l0_compaction_trigger: 2,
        l0_slowdown_tables: 3,
        l0_stop_tables: 4,
        ..small_config()
    };
    let e = LsmEngine::open(dir.path(), config).unwrap();
    let big = vec![7u8; 1024];
    let mut written = 0u32;
    while e.stats().write_stalls == 0 && written < 50_000 {
        e.put(&key(written), &big).unwrap();
        written += 1;
    }
    let stats = e.stats();
    assert!(
        stats.write_stalls > 0,
        "no stall after {written} writes: {stats}"
    );
    e.flush().unwrap();
    for i in (0..written).step_by(13) {
        assert_eq!(e.get(&key(i)).unwrap().as_deref(), Some(&big[..]));
    }
}

#[test]
fn lsm_a_background_failure_makes_the_engine_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let e = LsmEngine::open(&path, small_config()).unwrap();
    e.put(b"k", b"v").unwrap();
    // The directory vanishes: the next flush cannot create its files. The
    // engine's background thread may create a file (its next WAL, made
    // ahead of need) while the directory is being emptied, so removal is
    // retried until the directory is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while path.exists() {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if Instant::now() < deadline => {
                eprintln!("removing the directory again after: {e}");
            }
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        }
    }
    assert!(e.flush().is_err());
    let err = e.put(b"k2", b"v2").unwrap_err();
    assert!(
        matches!(err, ringkv::Error::StorageFailed { .. }),
        "later writes fail with the recorded error, got {err}"
    );
    assert!(!err.is_retryable());
    assert!(e.flush().is_err());
    // Reads still work from memory.
    assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert!(e.close().is_err(), "close reports the failure");
}

#[test]
fn lsm_a_damaged_table_is_corruption_not_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), small_config()).unwrap();
        for i in 0..200 {
            e.put(&key(i), &value(i, 0)).unwrap();
        }
        e.flush().unwrap();
        e.close().unwrap();
    }
    let sst = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sst"))
        .expect("flush wrote a table");
    let bytes = std::fs::read(&sst).unwrap();
    std::fs::write(&sst, &bytes[..bytes.len() - 5]).unwrap();
    let err = LsmEngine::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(err, ringkv::Error::Corruption { .. }), "got {err}");
    // A table the manifest names but that is gone is also refused.
    std::fs::remove_file(&sst).unwrap();
    let err = LsmEngine::open(dir.path(), small_config()).unwrap_err();
    assert!(matches!(err, ringkv::Error::Corruption { .. }), "got {err}");
}

#[test]
fn lsm_a_batch_over_the_log_record_limit_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    let big = vec![3u8; ringkv::storage::MAX_VALUE_BYTES];
    let mut batch = WriteBatch::new();
    for i in 0..5 {
        batch.put(key(i), big.clone());
    }
    assert!(matches!(
        e.write(batch),
        Err(ringkv::Error::InvalidInput(_))
    ));
    assert_eq!(e.get(&key(0)).unwrap(), None);
    e.put(b"after", b"ok").unwrap();
    assert_eq!(e.get(b"after").unwrap(), Some(b"ok".to_vec()));
}

#[test]
fn lsm_an_old_wal_record_replayed_again_cannot_resurrect_a_delete() {
    use ringkv::storage::lsm::wal::{Wal, WalRecord};
    use ringkv::storage::BatchOp;
    let dir = tempfile::tempdir().unwrap();
    // Every flush compacts at once, so the delete's tombstone reaches the
    // bottom and is dropped: nothing on disk remembers the key.
    let config = LsmConfig {
        l0_compaction_trigger: 1,
        ..small_config()
    };
    {
        let e = LsmEngine::open(dir.path(), config.clone()).unwrap();
        e.put(b"k", b"old").unwrap(); // sequence number 1
        e.flush().unwrap();
        e.delete(b"k").unwrap();
        e.flush().unwrap();
        e.compact_until_settled().unwrap();
        assert_eq!(e.get(b"k").unwrap(), None);
        let stats = e.stats();
        assert_eq!(stats.tables_per_level.iter().sum::<usize>(), 0, "{stats}");
        e.close().unwrap();
    }
    // A WAL that still holds the first put (as if its deletion had been
    // lost), numbered so that recovery reads it.
    {
        let wal = Wal::create(&dir.path().join("000900.wal"), SyncPolicy::Always).unwrap();
        wal.append(&WalRecord {
            first_seq: 1,
            ops: vec![BatchOp::Put {
                key: b"k".to_vec(),
                value: b"old".to_vec(),
            }],
        })
        .unwrap();
    }
    let e = LsmEngine::open(dir.path(), config).unwrap();
    assert_eq!(
        e.get(b"k").unwrap(),
        None,
        "the stale record must not come back"
    );
    assert!(
        !dir.path().join("000900.wal").exists(),
        "the replayed WAL is retired"
    );
    e.put(b"k", b"new").unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b"new".to_vec()));
}

#[test]
fn lsm_open_deletes_orphan_tables_and_stale_manifests_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), small_config()).unwrap();
        e.put(b"k", b"v").unwrap();
        e.flush().unwrap();
        e.close().unwrap();
    }
    // What a crash mid-flush or mid-switch leaves, and a file of the user's.
    std::fs::write(dir.path().join("000777.sst"), b"half a table").unwrap();
    std::fs::write(dir.path().join("MANIFEST-000999"), b"half a manifest").unwrap();
    std::fs::write(dir.path().join("CURRENT.tmp"), b"MANIFEST-000999\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"keep me").unwrap();
    let e = LsmEngine::open(dir.path(), small_config()).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
    assert!(!dir.path().join("000777.sst").exists());
    assert!(!dir.path().join("MANIFEST-000999").exists());
    assert!(!dir.path().join("CURRENT.tmp").exists());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn a_directory_is_owned_by_one_engine_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = LsmEngine::open(dir.path(), LsmConfig::default()).unwrap();
    first.put(b"k", b"v").unwrap();
    match LsmEngine::open(dir.path(), LsmConfig::default()) {
        Err(ringkv::Error::InvalidInput(why)) => assert!(why.contains("in use"), "{why}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a second engine opened a directory in use"),
    }
    drop(first);
    let again = LsmEngine::open(dir.path(), LsmConfig::default()).unwrap();
    assert_eq!(again.get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// With `external_compaction` the engine never compacts by itself: level 0
/// grows until the owner calls `compact`, which then settles the tree, and
/// the data reads back the same.
#[test]
fn external_compaction_waits_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let config = LsmConfig {
        external_compaction: true,
        l0_slowdown_tables: 64,
        l0_stop_tables: 128,
        ..small_config()
    };
    let e = LsmEngine::open(dir.path(), config).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..6u32 {
        for i in 0..800u32 {
            let k = key(i);
            let v = value(i, round);
            e.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        e.flush().unwrap();
    }
    let stats = e.stats();
    assert_eq!(stats.compactions, 0, "no compaction without the owner");
    assert!(
        stats.tables_per_level[0] >= 6,
        "every flush left an L0 table: {:?}",
        stats.tables_per_level
    );
    let mut steps = 0;
    while e.compact().unwrap() {
        steps += 1;
        assert!(steps < 1000, "compaction does not settle");
    }
    let stats = e.stats();
    assert!(steps >= 1 && stats.compactions >= 1);
    assert!(
        stats.tables_per_level[0] < 4,
        "L0 below the trigger after settling: {:?}",
        stats.tables_per_level
    );
    check_model(&e, &model);
}

/// A read from memory alone (`Engine::get_in_memory`, which a replica uses
/// to serve on its own thread) says when it would need the disk: with the
/// tables' pages dropped from the OS's page cache and an empty block cache
/// (reopened), a stored key's read is refused, until a read that may wait
/// has brought its block in; a key no table can hold is answered at once.
#[test]
fn a_read_from_memory_needs_the_disk_once_the_tables_pages_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = LsmConfig {
        sync: SyncPolicy::None,
        memtable_bytes: 4 * 1024,
        block_cache_bytes: 4 * 1024 * 1024,
        ..LsmConfig::default()
    };
    let mut model = BTreeMap::new();
    {
        let lsm = LsmEngine::open(dir.path(), config.clone()).unwrap();
        for i in 0..200u32 {
            // Values that do not compress, a kilobyte each.
            let v: Vec<u8> = (0..1000u32)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503)) as u8)
                .collect();
            lsm.put(&key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        lsm.flush().unwrap();
        assert!(lsm.stats().tables_per_level.iter().sum::<usize>() > 3);
    }
    let lsm = LsmEngine::open(dir.path(), config).unwrap();
    if !crate::support::drop_cached_table_pages(dir.path()) {
        eprintln!(
            "this file system keeps its pages: reads that need the disk are not checked here"
        );
        return;
    }
    let k = key(11);
    assert!(lsm.get_in_memory(&k).is_none());
    assert_eq!(lsm.get_in_memory(&[0xff; 8]).unwrap().unwrap(), None);
    let got = lsm.get(&k).unwrap();
    assert_eq!(got.as_ref(), model.get(&k));
    assert_eq!(lsm.get_in_memory(&k).unwrap().unwrap(), got);
}
