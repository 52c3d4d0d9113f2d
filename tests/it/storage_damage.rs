//! Damage found while serving, and salvage (issue [9], item 9, the engine's
//! part): a damaged block fails only the reads that need it, is counted
//! once in `EngineStats::corruptions` (and logged once), and salvage moves
//! damaged or unaccounted-for files to `quarantine/` (never deleting them)
//! so that the store opens again without them.
//!
//! Real files; the damage is a flipped byte or a removed file.

use std::fs;
use std::path::{Path, PathBuf};

use ringkv::storage::{Engine, KeyRange, LsmEngine};
use ringkv::{Error, LsmConfig, SyncPolicy};

fn config() -> LsmConfig {
    LsmConfig {
        sync: SyncPolicy::None,
        memtable_bytes: 64 << 20,
        block_cache_bytes: 1024 * 1024,
        ..LsmConfig::default()
    }
}

fn salvaging() -> LsmConfig {
    LsmConfig {
        salvage: true,
        ..config()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "z".repeat(80)).into_bytes()
}

fn tables(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    out.sort();
    out
}

/// Two tables: keys 0..1000 in the first, 1000..2000 in the second.
fn two_tables(dir: &Path) -> (PathBuf, PathBuf) {
    let e = LsmEngine::open(dir, config()).unwrap();
    for i in 0..1000 {
        e.put(&key(i), &value(i)).unwrap();
    }
    e.flush().unwrap();
    for i in 1000..2000 {
        e.put(&key(i), &value(i)).unwrap();
    }
    e.flush().unwrap();
    e.close().unwrap();
    let t = tables(dir);
    assert_eq!(t.len(), 2);
    (t[0].clone(), t[1].clone())
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_block_fails_its_reads_only_and_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = two_tables(dir.path());
    flip(&first, 20); // inside the first data block
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    assert_eq!(e.stats().corruptions, 0);
    let mut bad = 0;
    for round in 0..2 {
        for i in 0..2000 {
            match e.get(&key(i)) {
                Ok(v) => assert_eq!(v, Some(value(i)), "key {i}"),
                Err(Error::Corruption { file, .. }) => {
                    assert_eq!(file, first);
                    assert!(i < 1000);
                    if round == 0 {
                        bad += 1;
                    }
                }
                Err(other) => panic!("{other:?}"),
            }
        }
    }
    assert!(bad > 0 && bad < 1000, "{bad} keys in the damaged block");
    // A scan from the start meets the damage at once (or at its first
    // item): an error, never a wrong or silently skipped key.
    match e.scan(KeyRange::all()) {
        Err(Error::Corruption { file, .. }) => assert_eq!(file, first),
        Err(other) => panic!("{other:?}"),
        Ok(items) => {
            let errors = items.filter(|item| item.is_err()).count();
            assert_eq!(errors, 1, "a scan ends at the damage");
        }
    }
    assert_eq!(e.stats().corruptions, 1, "one damaged place, counted once");
    // Writes still work: a rewritten key hides the damaged copy.
    e.put(&key(0), b"rewritten").unwrap();
    assert_eq!(e.get(&key(0)).unwrap(), Some(b"rewritten".to_vec()));
}

#[test]
fn salvage_moves_a_damaged_table_to_quarantine_and_opens_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_tables(dir.path());
    flip(&first, 20);
    {
        let e = LsmEngine::open(dir.path(), salvaging()).unwrap();
        for i in 0..2000 {
            let got = e.get(&key(i)).unwrap();
            if i < 1000 {
                assert_eq!(got, None, "key {i} was in the quarantined table");
            } else {
                assert_eq!(got, Some(value(i)), "key {i}");
            }
        }
        assert_eq!(e.scan(KeyRange::all()).unwrap().count(), 1000);
        assert_eq!(e.stats().corruptions, 0);
        e.close().unwrap();
    }
    let moved = dir
        .path()
        .join("quarantine")
        .join(first.file_name().unwrap());
    assert!(moved.exists() && !first.exists() && second.exists());
    // The manifest no longer names it: a plain open works.
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    assert_eq!(e.get(&key(1500)).unwrap(), Some(value(1500)));
}

#[test]
fn salvage_accepts_a_missing_wal_segment_and_quarantines_a_store_without_current() {
    // A listed WAL segment is missing: refused, then salvaged.
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), config()).unwrap();
        for i in 0..100 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.close().unwrap();
    }
    let wals: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    for w in &wals {
        fs::remove_file(w).unwrap();
    }
    assert!(LsmEngine::open(dir.path(), config()).is_err());
    {
        let e = LsmEngine::open(dir.path(), salvaging()).unwrap();
        assert_eq!(e.get(&key(1)).unwrap(), None);
        e.put(b"new", b"1").unwrap();
        e.close().unwrap();
    }
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    assert_eq!(e.get(b"new").unwrap(), Some(b"1".to_vec()));
    drop(e);

    // No CURRENT: everything moves to quarantine, the store starts empty.
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = two_tables(dir.path());
    fs::remove_file(dir.path().join("CURRENT")).unwrap();
    assert!(LsmEngine::open(dir.path(), config()).is_err());
    let e = LsmEngine::open(dir.path(), salvaging()).unwrap();
    assert_eq!(e.get(&key(1500)).unwrap(), None);
    let q = dir.path().join("quarantine");
    for t in [&first, &second] {
        assert!(q.join(t.file_name().unwrap()).exists(), "{t:?} kept");
    }
}
