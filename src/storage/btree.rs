//! The B-tree engine: the [`Engine`] trait over `redb`, a copy-on-write
//! B-tree in one file (`btree.redb` in the engine's directory).
//!
//! For read-heavy buckets: a point read walks one tree, with no levels,
//! memtables or bloom filters to consult. Each [`WriteBatch`] is one redb
//! write transaction, so it is atomic after a crash as redb's commits are;
//! each scan reads from one redb read transaction, a snapshot that later
//! commits do not change. How durable an acknowledged batch is follows
//! [`BTreeConfig::sync`]; the mapping to redb's `Durability` levels, and
//! what each promises, is documented on [`BTreeConfig`].
//!
//! Bytes written to the file are counted exactly, by a storage backend that
//! wraps redb's own file backend and adds up what every write hands to the
//! OS (so they include pages redb writes more than once, and the commit
//! slots, but not what the filesystem adds).
//!
//! What it does not do: it has no write-ahead log, so under a non-`Always`
//! policy a crash of the process (not only of the machine) loses the batches
//! since the last durable commit. redb verifies page checksums when a file
//! is opened ([`BTreeConfig::verify_on_open`]) and when it recovers from a
//! crash, not on every read. redb reports no byte offsets for corruption, so
//! [`Error::Corruption`] from this engine carries offset 0.

use std::fs::OpenOptions;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::backends::FileBackend;
use redb::{Builder, Database, Durability, ReadableDatabase, StorageBackend, TableDefinition};

use super::{BatchOp, Engine, EngineStats, KeyRange, ScanIter, WriteBatch};
use crate::error::{Error, Result};
use crate::storage::{BTreeConfig, SyncPolicy};

/// The name of the database file inside the engine's directory.
pub const BTREE_FILE_NAME: &str = "btree.redb";

/// The one table: raw keys to raw values.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// A B-tree [`Engine`] over a redb database file.
///
/// Dropping it stops the checkpoint thread and closes the database, which
/// persists every batch committed so far (a clean close).
pub struct BTreeEngine {
    shared: Arc<Shared>,
    checkpointer: Option<Checkpointer>,
}

/// What the engine and its checkpoint thread share.
struct Shared {
    db: Database,
    path: PathBuf,
    durability: Durability,
    /// Whether a batch was committed with `Durability::None` since the last
    /// durable commit: the checkpoint thread has work only then.
    dirty: AtomicBool,
    logical_bytes_written: AtomicU64,
    /// Bytes redb handed to the OS, counted by [`CountingBackend`].
    disk_bytes_written: Arc<AtomicU64>,
    /// Durable commits made by `flush` and the checkpoint thread.
    checkpoints: AtomicU64,
}

/// The background thread that makes non-durable commits durable.
struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl BTreeEngine {
    /// Opens the engine in `dir` (created if missing), creating
    /// `dir/btree.redb` if it does not exist.
    ///
    /// Fails with [`Error::Corruption`] when redb finds the file corrupt
    /// (checked page by page when [`BTreeConfig::verify_on_open`] is set,
    /// and always after an unclean shutdown), and with [`Error::Io`] when
    /// the file cannot be opened or is already open (in this process or
    /// another).
    ///
    /// ```
    /// use ringkv::storage::{BTreeEngine, Engine, KeyRange};
    /// use ringkv::BTreeConfig;
    /// let dir = tempfile::tempdir().unwrap();
    /// let engine = BTreeEngine::open(dir.path(), BTreeConfig::default()).unwrap();
    /// engine.put(b"k", b"v").unwrap();
    /// assert_eq!(engine.get(b"k").unwrap(), Some(b"v".to_vec()));
    /// drop(engine); // closes the file; what was written stays
    /// let engine = BTreeEngine::open(dir.path(), BTreeConfig::default()).unwrap();
    /// assert_eq!(engine.scan(KeyRange::all()).unwrap().count(), 1);
    /// ```
    pub fn open(dir: &Path, config: BTreeConfig) -> Result<BTreeEngine> {
        config.validate()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(BTREE_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let disk_bytes_written = Arc::new(AtomicU64::new(0));
        let backend = CountingBackend {
            inner: FileBackend::new(file).map_err(|e| map_err(&path, "opening", e))?,
            written: Arc::clone(&disk_bytes_written),
        };
        let db = Builder::new()
            .set_cache_size(config.cache_bytes)
            .set_check_integrity_on_open(config.verify_on_open)
            .create_with_backend(backend)
            .map_err(|e| map_err(&path, "opening", e))?;

        // Create the table once, durably, so that readers never meet a file
        // without it.
        let txn = db.begin_write().map_err(|e| map_err(&path, "opening", e))?;
        txn.open_table(TABLE)
            .map_err(|e| map_err(&path, "opening", e))?;
        txn.commit().map_err(|e| map_err(&path, "opening", e))?;

        let (durability, checkpoint_every) = match config.sync {
            SyncPolicy::Always => (Durability::Immediate, None),
            SyncPolicy::Interval(d) => (Durability::None, Some(d)),
            SyncPolicy::None => (Durability::None, Some(config.checkpoint_interval)),
        };
        let shared = Arc::new(Shared {
            db,
            path,
            durability,
            dirty: AtomicBool::new(false),
            logical_bytes_written: AtomicU64::new(0),
            disk_bytes_written,
            checkpoints: AtomicU64::new(0),
        });
        let checkpointer = match checkpoint_every {
            Some(every) => Some(Checkpointer::start(Arc::clone(&shared), every)?),
            None => None,
        };
        Ok(BTreeEngine {
            shared,
            checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Shared {
    /// An empty commit with `Durability::Immediate`: redb then persists it
    /// and every non-durable commit before it, and fsyncs.
    fn durable_commit(&self) -> Result<()> {
        // Cleared before the commit: a batch committed after this point sets
        // it again, one committed before is covered by this commit.
        let was_dirty = self.dirty.swap(false, Ordering::AcqRel);
        let result = (|| {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| map_err(&self.path, "checkpoint", e))?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| map_err(&self.path, "checkpoint", e))?;
            txn.commit()
                .map_err(|e| map_err(&self.path, "checkpoint", e))
        })();
        match result {
            Ok(()) => {
                self.checkpoints.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                if was_dirty {
                    self.dirty.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }
}

impl Checkpointer {
    fn start(shared: Arc<Shared>, every: Duration) -> Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("btree-checkpoint".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        if shared.dirty.load(Ordering::Acquire) {
                            if let Err(e) = shared.durable_commit() {
                                // The next tick retries; redb makes later
                                // writes fail too if its file is broken.
                                tracing::warn!(error = %e, "btree checkpoint failed");
                            }
                        }
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })
            .map_err(|e| Error::io("starting the btree checkpoint thread", e))?;
        Ok(Checkpointer { stop, thread })
    }
}

impl Drop for BTreeEngine {
    fn drop(&mut self) {
        if let Some(c) = self.checkpointer.take() {
            // A send error means the thread is already gone; either way join.
            let _ = c.stop.send(());
            if c.thread.join().is_err() {
                tracing::error!("btree checkpoint thread panicked");
            }
        }
        // Dropping the last `Arc<Shared>` closes the database, which makes
        // non-durable commits durable.
    }
}

impl Engine for BTreeEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let path = &self.shared.path;
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(|e| map_err(path, "get", e))?;
        let table = txn.open_table(TABLE).map_err(|e| map_err(path, "get", e))?;
        let value = table.get(key).map_err(|e| map_err(path, "get", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        let logical = batch.logical_bytes() as u64;
        let path = &self.shared.path;
        let mut txn = self
            .shared
            .db
            .begin_write()
            .map_err(|e| map_err(path, "write", e))?;
        txn.set_durability(self.shared.durability)
            .map_err(|e| map_err(path, "write", e))?;
        {
            let mut table = txn
                .open_table(TABLE)
                .map_err(|e| map_err(path, "write", e))?;
            for op in batch.ops() {
                // An error drops `txn` uncommitted, which aborts it: nothing
                // of the batch is applied.
                match op {
                    BatchOp::Put { key, value } => {
                        table
                            .insert(key.as_slice(), value.as_slice())
                            .map_err(|e| map_err(path, "write", e))?;
                    }
                    BatchOp::Delete { key } => {
                        table
                            .remove(key.as_slice())
                            .map_err(|e| map_err(path, "write", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| map_err(path, "write", e))?;
        if !matches!(self.shared.durability, Durability::Immediate) {
            self.shared.dirty.store(true, Ordering::Release);
        }
        self.shared
            .logical_bytes_written
            .fetch_add(logical, Ordering::Relaxed);
        Ok(())
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let path = self.shared.path.clone();
        let txn = self
            .shared
            .db
            .begin_read()
            .map_err(|e| map_err(&path, "scan", e))?;
        let table = txn
            .open_table(TABLE)
            .map_err(|e| map_err(&path, "scan", e))?;
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (as_slice(&range.start), as_slice(&range.end));
        // The range keeps the read transaction alive until it is dropped,
        // so the snapshot lasts as long as the iterator.
        let mut inner = table
            .range::<&[u8]>(bounds)
            .map_err(|e| map_err(&path, "scan", e))?;
        let mut failed = false;
        Ok(Box::new(std::iter::from_fn(move || {
            if failed {
                return None;
            }
            match inner.next()? {
                Ok((k, v)) => Some(Ok((k.value().to_vec(), v.value().to_vec()))),
                Err(e) => {
                    failed = true;
                    Some(Err(map_err(&path, "scan", e)))
                }
            }
        })))
    }

    fn flush(&self) -> Result<()> {
        self.shared.durable_commit()
    }

    fn stats(&self) -> EngineStats {
        let disk_bytes = std::fs::metadata(&self.shared.path).map_or(0, |m| m.len());
        EngineStats {
            engine: "btree",
            logical_bytes_written: self.shared.logical_bytes_written.load(Ordering::Relaxed),
            disk_bytes_written: self.shared.disk_bytes_written.load(Ordering::Relaxed),
            disk_bytes,
            ..EngineStats::default()
        }
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Maps any redb error (every redb error type converts into `redb::Error`)
/// to the library's: redb's "corrupted" to [`Error::Corruption`], I/O to
/// [`Error::Io`], a file in an old format to [`Error::InvalidInput`], and
/// the rest, which mean the database handle cannot go on (a previous I/O
/// failure, a poisoned lock, the file open elsewhere), to [`Error::Io`]
/// wrapping redb's message.
fn map_err(path: &Path, doing: &str, err: impl Into<redb::Error>) -> Error {
    let err: redb::Error = err.into();
    let context = format!("btree {doing} on {}", path.display());
    match err {
        redb::Error::Corrupted(reason) => Error::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            reason,
        },
        redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => Error::Corruption {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!("not a table this engine wrote: {err}"),
        },
        redb::Error::UpgradeRequired(version) => Error::InvalidInput(format!(
            "{} is in redb file format {version}, which must be upgraded first",
            path.display()
        )),
        redb::Error::Io(source) => {
            if source.kind() == std::io::ErrorKind::InvalidData {
                // redb reports "not a redb database" as InvalidData.
                Error::Corruption {
                    file: path.to_path_buf(),
                    offset: 0,
                    reason: source.to_string(),
                }
            } else {
                Error::io(context, source)
            }
        }
        redb::Error::DatabaseAlreadyOpen => Error::io(
            context,
            std::io::Error::new(
                std::io::ErrorKind::ResourceBusy,
                "the database file is already open",
            ),
        ),
        other => Error::io(context, std::io::Error::other(other.to_string())),
    }
}

/// redb's file backend, counting the bytes every write hands to the OS.
#[derive(Debug)]
struct CountingBackend {
    inner: FileBackend,
    written: Arc<AtomicU64>,
}

impl StorageBackend for CountingBackend {
    fn len(&self) -> std::result::Result<u64, std::io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> std::result::Result<(), std::io::Error> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
        self.inner.write(offset, data)?;
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn close(&self) -> std::result::Result<(), std::io::Error> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(dir: &Path, sync: SyncPolicy) -> BTreeEngine {
        BTreeEngine::open(
            dir,
            BTreeConfig {
                sync,
                ..BTreeConfig::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn batches_survive_a_clean_close_under_every_policy() {
        for sync in [
            SyncPolicy::Always,
            SyncPolicy::Interval(Duration::from_millis(50)),
            SyncPolicy::None,
        ] {
            let dir = tempfile::tempdir().unwrap();
            {
                let e = engine(dir.path(), sync);
                let mut b = WriteBatch::new();
                b.put(b"a".to_vec(), b"1".to_vec())
                    .put(b"b".to_vec(), b"2".to_vec());
                e.write(b).unwrap();
                e.delete(b"a").unwrap();
            }
            let e = engine(dir.path(), sync);
            assert_eq!(e.get(b"a").unwrap(), None, "{sync:?}");
            assert_eq!(e.get(b"b").unwrap(), Some(b"2".to_vec()), "{sync:?}");
        }
    }

    #[test]
    fn stats_count_logical_and_disk_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), SyncPolicy::Always);
        let before = e.stats();
        assert_eq!(before.engine, "btree");
        e.put(b"key", &[7; 1000]).unwrap();
        let after = e.stats();
        assert_eq!(after.logical_bytes_written, 1003);
        // A durable commit writes at least the leaf holding the value.
        assert!(after.disk_bytes_written >= before.disk_bytes_written + 1003);
        assert!(after.disk_bytes >= 1003);
    }

    #[test]
    fn flush_makes_non_durable_commits_durable() {
        let dir = tempfile::tempdir().unwrap();
        // A checkpoint interval far beyond the test, so only flush commits.
        let e = BTreeEngine::open(
            dir.path(),
            BTreeConfig {
                sync: SyncPolicy::None,
                checkpoint_interval: Duration::from_secs(3600),
                ..BTreeConfig::default()
            },
        )
        .unwrap();
        e.put(b"k", b"v").unwrap();
        assert!(e.shared.dirty.load(Ordering::Acquire));
        e.flush().unwrap();
        assert!(!e.shared.dirty.load(Ordering::Acquire));
        assert_eq!(e.shared.checkpoints.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn interval_policy_checkpoints_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), SyncPolicy::Interval(Duration::from_millis(10)));
        e.put(b"k", b"v").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while e.shared.checkpoints.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!e.shared.dirty.load(Ordering::Acquire));
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = engine(dir.path(), SyncPolicy::Always);
        match BTreeEngine::open(dir.path(), BTreeConfig::default()) {
            Err(Error::Io { .. }) => {}
            Err(other) => panic!("expected an I/O error, got {other}"),
            Ok(_) => panic!("a second open of the same file succeeded"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BTREE_FILE_NAME), vec![0x5a; 8192]).unwrap();
        match BTreeEngine::open(dir.path(), BTreeConfig::default()) {
            Err(Error::Corruption { file, .. }) => {
                assert!(file.ends_with(BTREE_FILE_NAME));
            }
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("garbage opened as a database"),
        }
    }

    #[test]
    fn damaged_pages_are_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let e = engine(dir.path(), SyncPolicy::Always);
            let mut b = WriteBatch::new();
            for i in 0..2000u32 {
                b.put(i.to_be_bytes().to_vec(), vec![0xab; 200]);
            }
            e.write(b).unwrap();
        }
        // Overwrite every 0xab run of the file: the leaves holding values.
        let path = dir.path().join(BTREE_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut damaged = 0;
        for window in bytes.chunks_mut(64) {
            if window.iter().all(|&b| b == 0xab) {
                window.fill(0x00);
                damaged += 1;
            }
        }
        assert!(damaged > 0, "no value bytes found to damage");
        std::fs::write(&path, bytes).unwrap();
        match BTreeEngine::open(dir.path(), BTreeConfig::default()) {
            Err(Error::Corruption { .. }) => {}
            Err(other) => panic!("expected corruption, got {other}"),
            Ok(_) => panic!("a damaged file opened without complaint"),
        }
    }
}
