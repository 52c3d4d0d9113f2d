//! Missing and unaccounted-for files in an LSM directory (issue [9], items
//! 7 and 8): open never turns one into silent loss.
//!
//! - A directory that holds tables or WAL records but no `CURRENT` is
//!   refused, naming what it holds, and nothing in it is deleted; with
//!   `CURRENT` put back, every key is there.
//! - A WAL segment the manifest lists that is missing is refused, naming
//!   the file; put back, every acknowledged key is there.
//! - A table file the manifest does not name is deleted at open only when
//!   the store can prove it unneeded (it does not open as a table, or it
//!   holds nothing newer than the manifest and WALs); one with newer writes
//!   is refused and kept.
//!
//! Real files in temporary directories; no timing.

use std::fs;
use std::path::{Path, PathBuf};

use ringkv::storage::{Engine, LsmEngine};
use ringkv::{Error, LsmConfig, SyncPolicy};

fn config() -> LsmConfig {
    LsmConfig {
        sync: SyncPolicy::Always,
        memtable_bytes: 64 * 1024,
        target_table_bytes: 64 * 1024,
        l1_target_bytes: 256 * 1024,
        block_cache_bytes: 1024 * 1024,
        ..LsmConfig::default()
    }
}

/// A memtable no test here fills: every write stays in the WAL.
fn wal_only_config() -> LsmConfig {
    LsmConfig {
        memtable_bytes: 64 << 20,
        ..config()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(40)).into_bytes()
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn check_all(e: &LsmEngine, n: u32) {
    for i in 0..n {
        assert_eq!(e.get(&key(i)).unwrap(), Some(value(i)), "key {i}");
    }
}

fn corruption_reason(err: Error) -> (PathBuf, String) {
    match err {
        Error::Corruption { file, reason, .. } => (file, reason),
        other => panic!("expected Corruption, got {other:?}"),
    }
}

#[test]
fn a_store_whose_current_is_gone_refuses_to_open_and_keeps_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), config()).unwrap();
        for i in 0..800 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.flush().unwrap();
        e.close().unwrap();
    }
    let tables = files_with(dir.path(), "sst");
    assert!(!tables.is_empty());
    let current = fs::read(dir.path().join("CURRENT")).unwrap();
    fs::remove_file(dir.path().join("CURRENT")).unwrap();

    for _ in 0..2 {
        let err = LsmEngine::open(dir.path(), config()).unwrap_err();
        assert!(!err.is_retryable());
        let (file, reason) = corruption_reason(err);
        assert_eq!(file, dir.path().join("CURRENT"));
        assert!(reason.contains("CURRENT is missing"), "{reason}");
        assert!(reason.contains(".sst"), "names the tables: {reason}");
        assert_eq!(files_with(dir.path(), "sst"), tables, "nothing deleted");
    }

    fs::write(dir.path().join("CURRENT"), current).unwrap();
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    check_all(&e, 800);
}

#[test]
fn a_store_of_wal_records_only_without_current_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), wal_only_config()).unwrap();
        for i in 0..50 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.close().unwrap();
    }
    assert!(files_with(dir.path(), "sst").is_empty());
    fs::remove_file(dir.path().join("CURRENT")).unwrap();
    let (_, reason) = corruption_reason(LsmEngine::open(dir.path(), config()).unwrap_err());
    assert!(reason.contains("write-ahead log"), "{reason}");
}

#[test]
fn what_a_crash_during_the_first_open_leaves_opens_as_a_new_store() {
    // An empty WAL segment (header only) and no CURRENT: nothing was ever
    // written, so this is a new store.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("000001.wal"), b"RKVW\x01\x00\x00\x00").unwrap();
    fs::write(dir.path().join("000002.wal"), b"RK").unwrap();
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    e.put(b"k", b"v").unwrap();
    e.close().unwrap();
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn a_missing_wal_segment_refuses_to_open_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), wal_only_config()).unwrap();
        for i in 0..1000 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.close().unwrap();
    }
    assert!(files_with(dir.path(), "sst").is_empty(), "all in the WAL");
    // The segment holding the writes is the largest one.
    let wal = files_with(dir.path(), "wal")
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let saved = fs::read(&wal).unwrap();
    fs::remove_file(&wal).unwrap();

    let err = LsmEngine::open(dir.path(), wal_only_config()).unwrap_err();
    assert!(!err.is_retryable());
    let (file, reason) = corruption_reason(err);
    assert_eq!(file, wal);
    assert!(reason.contains("missing"), "{reason}");

    fs::write(&wal, saved).unwrap();
    let e = LsmEngine::open(dir.path(), wal_only_config()).unwrap();
    check_all(&e, 1000);
}

#[test]
fn the_wal_of_an_engine_that_flushed_and_sealed_is_listed_too() {
    // Writes spread over sealed memtables and the one active at close:
    // whichever segment holds unflushed writes, losing it is refused.
    let dir = tempfile::tempdir().unwrap();
    let before: Vec<PathBuf>;
    {
        let e = LsmEngine::open(dir.path(), config()).unwrap();
        for i in 0..3000 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.flush().unwrap();
        before = files_with(dir.path(), "wal");
        for i in 3000..3100 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.close().unwrap();
    }
    let wals = files_with(dir.path(), "wal");
    let holding: Vec<&PathBuf> = wals
        .iter()
        .filter(|p| fs::metadata(p).unwrap().len() > 8)
        .collect();
    assert!(!holding.is_empty());
    let victim = holding[holding.len() - 1].clone();
    assert!(before.contains(&victim) || !before.is_empty());
    let saved = fs::read(&victim).unwrap();
    fs::remove_file(&victim).unwrap();
    let (file, _) = corruption_reason(LsmEngine::open(dir.path(), config()).unwrap_err());
    assert_eq!(file, victim);
    fs::write(&victim, saved).unwrap();
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    check_all(&e, 3100);
}

/// A finished table holding `n` keys written after `skip` other writes
/// (so its sequence numbers are above `skip`), built by a throwaway store.
fn foreign_table(skip: u32, n: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let e = LsmEngine::open(dir.path(), wal_only_config()).unwrap();
    for i in 0..skip {
        e.put(b"filler", &value(i)).unwrap();
    }
    e.flush().unwrap();
    for i in 0..n {
        e.put(&key(100_000 + i), &value(i)).unwrap();
    }
    e.flush().unwrap();
    e.close().unwrap();
    let newest = files_with(dir.path(), "sst").into_iter().last().unwrap();
    fs::read(newest).unwrap()
}

#[test]
fn unnamed_tables_are_deleted_only_when_provably_unneeded() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), config()).unwrap();
        for i in 0..500 {
            e.put(&key(i), &value(i)).unwrap();
        }
        e.flush().unwrap();
        e.close().unwrap();
    }
    let live = files_with(dir.path(), "sst");
    // A copy of a live table under a new number: nothing in it is newer
    // than what the manifest holds (a replaced compaction input looks like
    // this). A partial file (an output whose build never finished).
    let copy = dir.path().join("000900.sst");
    fs::copy(&live[0], &copy).unwrap();
    let partial = dir.path().join("000901.sst");
    fs::write(&partial, b"half a table").unwrap();
    // A finished table with writes far beyond this store's: nothing else
    // holds them, so it must not be deleted.
    let newer = dir.path().join("000902.sst");
    fs::write(&newer, foreign_table(5000, 10)).unwrap();

    let (file, reason) = corruption_reason(LsmEngine::open(dir.path(), config()).unwrap_err());
    assert_eq!(file, newer);
    assert!(reason.contains("does not name this table"), "{reason}");
    assert!(newer.exists() && copy.exists() && partial.exists());

    fs::rename(&newer, dir.path().join("elsewhere")).unwrap();
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    check_all(&e, 500);
    assert!(!copy.exists(), "provably unneeded: deleted");
    assert!(!partial.exists(), "never finished: deleted");
    for t in &live {
        assert!(t.exists());
    }
}
