//! A full disk (issue [9], item 10): writes fail while it lasts and resume
//! by themselves once space is freed; reads work throughout; nothing
//! acknowledged is lost and nothing refused appears.
//!
//! The full disk is injected (`ringkv::storage::lsm::fault`): every file
//! the engine creates in its directory fails with `ENOSPC`, and every WAL
//! append writes half of its bytes and then fails, the worst a real full
//! disk does. Real files otherwise; the only waiting is a bounded poll for
//! the background flush to retry, whose outcome does not depend on timing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringkv::storage::lsm::fault;
use ringkv::storage::{Engine, LsmEngine};
use ringkv::{Error, LsmConfig, SyncPolicy};

fn config() -> LsmConfig {
    LsmConfig {
        sync: SyncPolicy::Always,
        memtable_bytes: 32 * 1024,
        target_table_bytes: 32 * 1024,
        l1_target_bytes: 128 * 1024,
        block_cache_bytes: 1024 * 1024,
        ..LsmConfig::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "y".repeat(200)).into_bytes()
}

fn is_out_of_space(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

#[test]
fn writes_resume_by_themselves_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = BTreeMap::new();
    let mut refused = Vec::new();
    {
        let e = LsmEngine::open(dir.path(), config()).unwrap();
        let mut i = 0u32;
        for _ in 0..400 {
            e.put(&key(i), &value(i)).unwrap();
            acked.insert(key(i), value(i));
            i += 1;
        }

        // The disk fills: writes are refused, retryably; reads go on.
        fault::set_disk_full(dir.path(), true);
        for _ in 0..300 {
            match e.put(&key(i), &value(i)) {
                Ok(()) => panic!("write {i} acknowledged on a full disk"),
                Err(err) => {
                    assert!(is_out_of_space(&err), "{err:?}");
                    assert!(err.is_retryable(), "{err:?}");
                    refused.push(key(i));
                }
            }
            i += 1;
        }
        let flushed = e.flush();
        assert!(
            flushed.as_ref().is_err_and(|err| err.is_retryable()),
            "{flushed:?}"
        );
        for (k, v) in acked.iter().step_by(7) {
            assert_eq!(e.get(k).unwrap().as_ref(), Some(v));
        }

        // Space is freed: writes resume without a restart (once the
        // flusher, which retries on its own, has caught up).
        fault::set_disk_full(dir.path(), false);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match e.put(&key(i), &value(i)) {
                Ok(()) => {
                    acked.insert(key(i), value(i));
                    i += 1;
                    break;
                }
                Err(err) => {
                    assert!(is_out_of_space(&err), "only the old trouble: {err:?}");
                    refused.push(key(i));
                    i += 1;
                    assert!(Instant::now() < deadline, "writes never resumed");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // A flush that succeeds means the flusher is past its trouble.
        loop {
            match e.flush() {
                Ok(()) => break,
                Err(err) => {
                    assert!(is_out_of_space(&err), "{err:?}");
                    assert!(Instant::now() < deadline, "flushes never resumed");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        for _ in 0..600 {
            e.put(&key(i), &value(i)).unwrap();
            acked.insert(key(i), value(i));
            i += 1;
        }
        e.flush().unwrap();
        assert!(e.stats().flushes > 0);
        e.close().unwrap();
    }

    // Everything acknowledged is there, nothing refused is, and the WALs
    // that had records cut back read cleanly.
    let e = LsmEngine::open(dir.path(), config()).unwrap();
    for (k, v) in &acked {
        assert_eq!(e.get(k).unwrap().as_ref(), Some(v));
    }
    for k in &refused {
        assert_eq!(e.get(k).unwrap(), None, "a refused write appeared");
    }
}

#[test]
fn a_refused_append_leaves_the_log_readable_for_later_records() {
    // Nothing but the WAL: a memtable no write here fills.
    let config = LsmConfig {
        memtable_bytes: 64 << 20,
        ..config()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LsmEngine::open(dir.path(), config.clone()).unwrap();
        e.put(b"before", b"1").unwrap();
        fault::set_disk_full(dir.path(), true);
        assert!(e.put(b"refused", b"2").unwrap_err().is_retryable());
        fault::set_disk_full(dir.path(), false);
        e.put(b"after", b"3").unwrap();
        e.close().unwrap();
    }
    let e = LsmEngine::open(dir.path(), config).unwrap();
    assert_eq!(e.get(b"before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(e.get(b"refused").unwrap(), None);
    assert_eq!(e.get(b"after").unwrap(), Some(b"3".to_vec()));
}
