//! The memory engine: a `BTreeMap` behind a read-write lock.
//!
//! For experiments with many nodes in one process, where disk would only get
//! in the way. Nothing survives the process; clones of one `MemoryEngine`
//! share the same map, so "closing" and "reopening" it within a process (as
//! a restarted in-process node does) keeps the data.
//!
//! A scan copies the keys and values in its range when it starts: that is
//! what makes it a consistent snapshot without holding the lock while the
//! caller iterates. Scans of huge ranges therefore cost memory; the replica
//! layer scans token ranges in bounded chunks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{BatchOp, Engine, EngineStats, KeyRange, ScanIter, WriteBatch};
use crate::error::Result;

/// An in-memory [`Engine`]. Cloning gives another handle on the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryEngine {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Sum of the lengths of the keys and values held now.
    bytes: AtomicU64,
    logical_bytes_written: AtomicU64,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock leaves the map as it was before or
    // after one whole batch (batches are applied to a clone-free map only
    // after validation, and BTreeMap operations do not panic), so a poisoned
    // lock still guards a consistent map: recover it rather than propagate.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.inner.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.inner.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read().get(key).cloned())
    }

    fn writes_at_once(&self) -> bool {
        true
    }

    fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>>> {
        Some(self.get(key))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        let logical = batch.logical_bytes() as u64;
        let mut map = self.write_lock();
        let mut bytes = self.inner.bytes.load(Ordering::Relaxed) as i64;
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { key, value } => {
                    bytes += (key.len() + value.len()) as i64;
                    if let Some(old) = map.insert(key.clone(), value) {
                        bytes -= (key.len() + old.len()) as i64;
                    }
                }
                BatchOp::Delete { key } => {
                    if let Some(old) = map.remove(&key) {
                        bytes -= (key.len() + old.len()) as i64;
                    }
                }
            }
        }
        self.inner
            .bytes
            .store(bytes.max(0) as u64, Ordering::Relaxed);
        drop(map);
        self.inner
            .logical_bytes_written
            .fetch_add(logical, Ordering::Relaxed);
        Ok(())
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>> {
        // `BTreeMap::range` panics on a start above the end.
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let snapshot: Vec<(Vec<u8>, Vec<u8>)> = self
            .read()
            .range::<Vec<u8>, _>((range.start, range.end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Box::new(snapshot.into_iter().map(Ok)))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            engine: "memory",
            logical_bytes_written: self.inner.logical_bytes_written.load(Ordering::Relaxed),
            memtable_bytes: self.inner.bytes.load(Ordering::Relaxed),
            ..EngineStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_data_and_bytes_are_counted() {
        let a = MemoryEngine::new();
        let b = a.clone();
        a.put(b"k", b"value").unwrap();
        assert_eq!(b.get(b"k").unwrap(), Some(b"value".to_vec()));
        assert_eq!(b.stats().memtable_bytes, 6);
        a.put(b"k", b"v").unwrap();
        assert_eq!(b.stats().memtable_bytes, 2);
        b.delete(b"k").unwrap();
        assert_eq!(a.stats().memtable_bytes, 0);
        assert_eq!(a.stats().logical_bytes_written, 6 + 2 + 1);
    }

    #[test]
    fn scan_is_a_snapshot() {
        let e = MemoryEngine::new();
        e.put(b"a", b"1").unwrap();
        e.put(b"c", b"3").unwrap();
        let it = e.scan(KeyRange::all()).unwrap();
        e.put(b"b", b"2").unwrap();
        let keys: Vec<_> = it.map(|r| r.unwrap().0).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
    }
}
