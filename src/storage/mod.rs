//! Storage engines: where a node keeps its replicas.
//!
//! One [`Engine`] trait, three implementations:
//!
//! - `lsm` (the default): a log-structured merge tree. Writes go to a
//!   write-ahead log and a sorted memtable; full memtables are flushed to
//!   immutable SSTables (lz4-compressed 4 KiB blocks, an index block, a bloom
//!   filter, a checksum on every block); leveled compaction merges tables in
//!   the background and drops tombstones where nothing older can remain
//!   below. A manifest records the live table set atomically.
//! - `btree`: the same trait over `redb`, a copy-on-write B-tree, for
//!   read-heavy buckets.
//! - `memory`: a `BTreeMap` behind a lock, for experiments with many nodes.
//!
//! # The contract every engine keeps
//!
//! - Keys and values are byte strings; keys are ordered bytewise (shorter
//!   prefix first). A key is at most [`MAX_KEY_BYTES`], a value at most
//!   [`MAX_VALUE_BYTES`]; larger ones are refused with
//!   [`Error::InvalidInput`] and nothing of the batch is applied.
//! - [`Engine::write`] applies a [`WriteBatch`] atomically: after a crash,
//!   either every operation of the batch is visible or none is. Within a
//!   batch, a later operation on the same key wins.
//! - When `write` returns `Ok`, the batch is visible to every later `get` and
//!   `scan`, and it is as durable as the engine's sync policy promises (see
//!   `docs/storage.md`): for the LSM with [`SyncPolicy::Always`], fsync'd
//!   before the call returns.
//! - [`Engine::scan`] sees one consistent snapshot, taken when it is called:
//!   writes, flushes and compactions that happen while the iterator is alive
//!   do not change what it yields.
//! - Bad bytes on disk give [`Error::Corruption`] naming the file and
//!   offset, never a wrong value and never a panic.
//!
//! # What this module does not do
//!
//! It knows nothing of buckets, tokens, versions or siblings: the replica
//! layer encodes `(token, bucket, key)` into the key so that a token range is
//! one contiguous scan, and stores an encoded `Object` as the value.

use std::fmt;
use std::ops::Bound;

use crate::error::{Error, Result};

/// How long [`lock_patiently`] keeps trying a held lock before it gives up.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes an exclusive lock on `file` (a data directory's `LOCK` or `NODE`
/// file). `Ok(false)` when another holder kept it for [`LOCK_PATIENCE`].
///
/// Why not one `try_lock`: a lock released a moment ago may still be held
/// for a few milliseconds, because a child this process is forking at that
/// moment holds a copy of every descriptor until its exec closes them (a
/// test run saw an engine's reopen refused so). A directory truly in use
/// is held far longer than the patience, so it is still refused.
pub fn lock_patiently(file: &std::fs::File) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

pub mod btree;
pub mod config;
pub mod lsm;
pub mod memory;

pub use btree::BTreeEngine;
pub use config::{BTreeConfig, LsmConfig, StorageConfig, SyncPolicy};
pub use lsm::engine::LsmEngine;
pub use memory::MemoryEngine;

/// The largest key an engine accepts: 64 KiB.
///
/// Replica keys are a token, a bucket and a user key, tens of bytes; a bound
/// keeps index blocks and memtable nodes small.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// The largest value an engine accepts: 16 MiB, the wire's frame limit, so
/// that anything stored can also be sent.
pub const MAX_VALUE_BYTES: usize = crate::codec::DEFAULT_MAX_FRAME_BYTES;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key` (writes a tombstone in the LSM).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// The key this operation is about.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }

    /// The value written, or `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            BatchOp::Put { value, .. } => Some(value),
            BatchOp::Delete { .. } => None,
        }
    }
}

/// Puts and deletes applied together, atomically.
///
/// ```
/// use ringkv::storage::{Engine, MemoryEngine, WriteBatch};
/// let engine = MemoryEngine::new();
/// let mut batch = WriteBatch::new();
/// batch.put(b"a", b"1");
/// batch.put(b"b", b"2");
/// batch.delete(b"a");
/// engine.write(batch).unwrap();
/// assert_eq!(engine.get(b"a").unwrap(), None);
/// assert_eq!(engine.get(b"b").unwrap(), Some(b"2".to_vec()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    /// Sum of key and value lengths, the "logical bytes" of write amplification.
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put { key, value });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(BatchOp::Delete { key });
        self
    }

    /// The operations, in the order they were added.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Takes the operations out.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sum of the key and value lengths of every operation.
    pub fn logical_bytes(&self) -> usize {
        self.bytes
    }

    /// Checks every key and value against [`MAX_KEY_BYTES`] and
    /// [`MAX_VALUE_BYTES`]. Engines call this before applying anything, so
    /// an oversized operation leaves the whole batch unapplied.
    pub fn validate(&self) -> Result<()> {
        for op in &self.ops {
            if op.key().len() > MAX_KEY_BYTES {
                return Err(Error::InvalidInput(format!(
                    "key of {} bytes exceeds the maximum of {MAX_KEY_BYTES}",
                    op.key().len()
                )));
            }
            if let Some(v) = op.value() {
                if v.len() > MAX_VALUE_BYTES {
                    return Err(Error::InvalidInput(format!(
                        "value of {} bytes exceeds the maximum of {MAX_VALUE_BYTES}",
                        v.len()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A range of keys for [`Engine::scan`], bytewise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// Lower bound.
    pub start: Bound<Vec<u8>>,
    /// Upper bound.
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys `>= start`.
    pub fn from(start: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Unbounded,
        }
    }

    /// Keys in `[start, end)`.
    pub fn between(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    /// Keys that start with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        let end = prefix_successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
        KeyRange {
            start: Bound::Included(prefix),
            end,
        }
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Whether no key at all can be inside the range: the start is above
    /// the end, or they are equal and either is excluded. (`BTreeMap::range`
    /// panics on such bounds; engines answer an empty scan instead.)
    pub fn is_empty(&self) -> bool {
        let (start, start_inclusive) = match &self.start {
            Bound::Included(s) => (s, true),
            Bound::Excluded(s) => (s, false),
            Bound::Unbounded => return false,
        };
        match &self.end {
            Bound::Included(e) => start > e || (start == e && !start_inclusive),
            Bound::Excluded(e) => start >= e,
            Bound::Unbounded => {
                // Nothing is above an excluded all-0xff key only if keys
                // were bounded in length; they are not, so never empty.
                false
            }
        }
    }

    /// Whether `key` is past the end of the range (scans stop there).
    pub fn is_past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
            Bound::Unbounded => false,
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when there is none (the prefix is empty or all `0xff`).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key and its value, as a scan yields them.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Copies every entry of `from` as of one moment (its scan's snapshot)
/// into `to`, in batches of about `batch_bytes`, then flushes `to`, so
/// that the copy is in `to`'s files. Returns the entries copied and their
/// key and value bytes. A snapshot of a live engine: writes made to `from`
/// meanwhile are not in it.
pub fn copy_all(from: &dyn Engine, to: &dyn Engine, batch_bytes: usize) -> Result<(u64, u64)> {
    let (mut entries, mut bytes) = (0u64, 0u64);
    let mut batch = WriteBatch::new();
    for item in from.scan(KeyRange::all())? {
        let (key, value) = item?;
        entries += 1;
        bytes += (key.len() + value.len()) as u64;
        batch.put(key, value);
        if batch.logical_bytes() >= batch_bytes {
            to.write(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        to.write(batch)?;
    }
    to.flush()?;
    Ok((entries, bytes))
}

/// The iterator [`Engine::scan`] returns: ascending keys, tombstones hidden,
/// one consistent snapshot. An `Err` item (a corrupt block, say) ends it.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + Send + 'a>;

/// Counters an engine exposes. Fields an engine has no notion of stay zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Which engine: `"lsm"`, `"btree"`, `"memory"`, or `"sim"` (the
    /// simulator's).
    pub engine: &'static str,
    /// Sum of key and value bytes of every accepted batch (the denominator of
    /// write amplification).
    pub logical_bytes_written: u64,
    /// Bytes this engine wrote to files: WAL, tables, manifest (the numerator
    /// of write amplification).
    pub disk_bytes_written: u64,
    /// Bytes the engine's files take now (space amplification's numerator).
    pub disk_bytes: u64,
    /// Bytes held in memtables (active and sealed).
    pub memtable_bytes: u64,
    /// Bytes held in the block cache.
    pub cache_bytes: u64,
    /// Block cache hits and misses.
    pub cache_hits: u64,
    /// Block cache misses.
    pub cache_misses: u64,
    /// Point reads answered "absent" by a bloom filter without reading a block.
    pub bloom_skips: u64,
    /// Memtables flushed to tables.
    pub flushes: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Times a writer was slowed or made to wait because flushing or
    /// compaction fell behind.
    pub write_stalls: u64,
    /// Damaged places (file and offset) found in the engine's files since
    /// it opened, by reads, scans or compaction: each is logged once at
    /// ERROR. Nonzero means the node needs repair (read repair rewrites
    /// keys as they are read; `ringkv-node --salvage` moves damaged files
    /// aside).
    pub corruptions: u64,
    /// Tables per level (LSM only), level 0 first.
    pub tables_per_level: Vec<usize>,
    /// Bytes per level (LSM only), level 0 first.
    pub bytes_per_level: Vec<u64>,
}

impl fmt::Display for EngineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: disk {} B, written {} B for {} B logical, memtable {} B, cache {} B ({} hits, {} misses), {} flushes, {} compactions, {} stalls, {} corruptions, tables per level {:?}",
            self.engine,
            self.disk_bytes,
            self.disk_bytes_written,
            self.logical_bytes_written,
            self.memtable_bytes,
            self.cache_bytes,
            self.cache_hits,
            self.cache_misses,
            self.flushes,
            self.compactions,
            self.write_stalls,
            self.corruptions,
            self.tables_per_level,
        )
    }
}

/// A sorted key-value store on one node.
///
/// All methods take `&self` and may be called from many threads at once.
/// They may block on disk I/O: a caller on an event loop runs them there
/// only when [`Engine::writes_at_once`] or [`Engine::get_in_memory`] say
/// so, and otherwise on a blocking thread.
pub trait Engine: Send + Sync {
    /// The value of `key`, or `None` when it is absent or deleted.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies `batch` atomically (see the module docs for what `Ok` means).
    fn write(&self, batch: WriteBatch) -> Result<()>;

    /// Ascending keys and values in `range`, from one consistent snapshot.
    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>>;

    /// Makes everything written so far durable in the engine's files, not
    /// only in its log: the LSM flushes its memtables to tables (and waits),
    /// the B-tree commits with fsync.
    fn flush(&self) -> Result<()>;

    /// The engine's counters now.
    fn stats(&self) -> EngineStats;

    /// Runs one step of the background maintenance the engine leaves to
    /// its owner (an LSM configured with `external_compaction`: one
    /// compaction, if its policy asks for one). Returns whether there was
    /// work; the owner calls again until there is none. Engines that
    /// maintain themselves return `Ok(false)`.
    fn compact(&self) -> Result<bool> {
        Ok(false)
    }

    /// Whether a small write batch made now would be applied at once,
    /// without waiting on an fsync or on the engine's own backpressure, so
    /// that an event loop may apply it in place instead of handing it to a
    /// blocking thread (two thread switches, which cost more than the work
    /// itself on a small request). A hint: it may be wrong in a race (a
    /// flush falling behind a moment later), never by much. Engines that
    /// cannot tell say `false`.
    fn writes_at_once(&self) -> bool {
        false
    }

    /// The value of `key`, as [`Engine::get`] gives it, when memory holds
    /// everything the read needs; `None` when it would wait on the disk
    /// (the caller then reads on a thread that may wait). The LSM answers
    /// from its memtables, its block cache, and blocks the OS's page cache
    /// holds (read without waiting, then cached). Engines that cannot tell
    /// return `None`.
    fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>>> {
        let _ = key;
        None
    }

    /// Sets `key` to `value`: a batch of one.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Removes `key`: a batch of one.
    fn delete(&self, key: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock held a moment longer than its release (as by a child being
    /// forked) is taken once let go; one held throughout the patience is
    /// refused, and the refusal took the patience, not less.
    #[test]
    fn a_lock_is_taken_patiently_and_refused_when_held_throughout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let (holder, waiter) = (open(), open());
        assert!(lock_patiently(&holder).unwrap());
        let started = std::time::Instant::now();
        assert!(!lock_patiently(&waiter).unwrap(), "held throughout");
        assert!(started.elapsed() >= LOCK_PATIENCE);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let letting_go = std::thread::spawn(move || {
            released.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(holder);
        });
        release.send(()).unwrap();
        assert!(lock_patiently(&waiter).unwrap(), "taken once let go");
        letting_go.join().unwrap();
        // And held now: a third open is refused.
        assert!(!lock_patiently(&open()).unwrap());
    }

    #[test]
    fn engines_read_from_memory_and_say_when_they_cannot() {
        let memory = MemoryEngine::new();
        memory.put(b"k", b"v").unwrap();
        assert!(memory.writes_at_once());
        assert_eq!(
            memory.get_in_memory(b"k").unwrap().unwrap(),
            Some(b"v".to_vec())
        );

        // An LSM that does not fsync per write, with many small tables.
        // (Its block cache holds every block, so that a block the read from
        // memory brings in is still there for the check after it.)
        let dir = tempfile::tempdir().unwrap();
        let config = LsmConfig {
            sync: SyncPolicy::None,
            memtable_bytes: 4 * 1024,
            block_cache_bytes: 4 * 1024 * 1024,
            ..LsmConfig::default()
        };
        let lsm = LsmEngine::open(dir.path(), config.clone()).unwrap();
        assert!(lsm.writes_at_once());
        assert_eq!(lsm.get_in_memory(b"k").unwrap().unwrap(), None);
        // Values that do not compress; keys 0, 2, 4, ... so that odd keys
        // fall inside the tables' ranges without being in them; one key
        // deleted, its tombstone in a table.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut model = std::collections::BTreeMap::new();
        let keys: Vec<[u8; 4]> = (0..200u32).map(|i| (2 * i).to_be_bytes()).collect();
        for k in &keys {
            let value: Vec<u8> = (0..1000).map(|_| next() as u8).collect();
            lsm.put(k, &value).unwrap();
            model.insert(*k, value);
        }
        lsm.delete(&keys[3]).unwrap();
        model.remove(&keys[3]);
        lsm.flush().unwrap();
        assert!(lsm.stats().tables_per_level.iter().sum::<usize>() > 3);
        // The tables' files were just written, so the OS's page cache holds
        // them: every read is served from memory, with what the store
        // holds, and leaves the block it read cached for the next read.
        for _ in 0..400 {
            let k = ((next() % 400) as u32).to_be_bytes();
            let got = lsm.get_in_memory(&k).expect("in memory").unwrap();
            assert_eq!(got.as_ref(), model.get(&k), "key {k:?}");
            let misses = lsm.stats().cache_misses;
            assert_eq!(lsm.get(&k).unwrap(), got);
            assert_eq!(
                lsm.stats().cache_misses,
                misses,
                "key {k:?} read again from a file"
            );
        }
        assert_eq!(lsm.get_in_memory(&keys[3]).unwrap().unwrap(), None);
        // A key in the memtable is read from it whatever the tables hold.
        lsm.put(&keys[7], b"new").unwrap();
        assert_eq!(
            lsm.get_in_memory(&keys[7]).unwrap().unwrap(),
            Some(b"new".to_vec())
        );
        drop(lsm);

        // With the tables' pages dropped from the OS's page cache, a read
        // needs the disk: `tests/it`'s `storage_lsm` checks it (one helper
        // drops pages for it and for the node's tests).

        // An fsync per write: writes never at once, reads still from memory.
        let dir = tempfile::tempdir().unwrap();
        let always = LsmEngine::open(
            dir.path(),
            LsmConfig {
                sync: SyncPolicy::Always,
                ..config
            },
        )
        .unwrap();
        always.put(b"k", b"v").unwrap();
        assert!(!always.writes_at_once());
        assert_eq!(
            always.get_in_memory(b"k").unwrap().unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        let r = KeyRange::prefix(vec![1, 0xff]);
        assert!(r.contains(&[1, 0xff]));
        assert!(r.contains(&[1, 0xff, 0xff, 3]));
        assert!(!r.contains(&[2]));
        assert!(!r.contains(&[1, 0xfe, 0xff]));
        assert_eq!(r.end, Bound::Excluded(vec![2]));
        assert_eq!(KeyRange::prefix(vec![0xff, 0xff]).end, Bound::Unbounded);
        let everything = KeyRange::prefix(Vec::new());
        assert!(everything.contains(b"") && everything.contains(&[0xff; 9]));
        assert_eq!(everything.end, Bound::Unbounded);
    }

    #[test]
    fn empty_ranges_are_recognised() {
        assert!(KeyRange::between(b"b".to_vec(), b"a".to_vec()).is_empty());
        assert!(KeyRange::between(b"a".to_vec(), b"a".to_vec()).is_empty());
        assert!(!KeyRange::between(b"a".to_vec(), b"a\0".to_vec()).is_empty());
        let point = KeyRange {
            start: Bound::Included(b"a".to_vec()),
            end: Bound::Included(b"a".to_vec()),
        };
        assert!(!point.is_empty());
        let open = KeyRange {
            start: Bound::Excluded(b"a".to_vec()),
            end: Bound::Included(b"a".to_vec()),
        };
        assert!(open.is_empty());
        assert!(!KeyRange::all().is_empty());
        assert!(!KeyRange::from(vec![0xff; 4]).is_empty());
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let mut b = WriteBatch::new();
        b.put(vec![0; MAX_KEY_BYTES + 1], b"v".to_vec());
        assert!(matches!(b.validate(), Err(Error::InvalidInput(_))));
        let mut b = WriteBatch::new();
        b.put(b"k".to_vec(), vec![0; MAX_VALUE_BYTES + 1]);
        assert!(matches!(b.validate(), Err(Error::InvalidInput(_))));
        let mut b = WriteBatch::new();
        b.put(b"k".to_vec(), b"v".to_vec()).delete(b"k".to_vec());
        assert!(b.validate().is_ok());
        assert_eq!(b.logical_bytes(), 3);
    }
}
