//! [`LsmEngine`]: the LSM tree put together behind the [`Engine`] trait.
//!
//! # Write path
//!
//! A batch is validated, then under a short lock it gets consecutive
//! sequence numbers and the current memtable with its WAL. Outside the lock
//! it is appended to that WAL (the WAL groups concurrent appends into one
//! write and, under [`SyncPolicy::Always`](crate::storage::SyncPolicy::Always), one fsync), inserted into the
//! memtable, and finally *published*: the visible sequence number moves
//! past the batch only once every earlier batch is published too, so a
//! reader never sees batch n+1 without batch n.
//!
//! # Versions and snapshots
//!
//! The readable state is an immutable `Version`: the active memtable, the
//! sealed memtables waiting for flush (newest first), and the tables of each
//! level. Flush, compaction and sealing build a new version and swap it in;
//! readers clone an `Arc` of the current one together with the visible
//! sequence number, under one read lock. Every table in a version holds only
//! sequence numbers at or below the visible number read with it (a table is
//! installed only after its memtable is fully published), and memtables
//! keep every version of a key, so a read filtered at that number is one
//! consistent snapshot. A scan keeps its version alive, and with it the
//! table files: a table replaced by compaction is deleted when the last
//! version naming it is dropped.
//!
//! # Background work
//!
//! One flusher thread turns the oldest sealed memtable into a level-0 table,
//! records it in the manifest, then deletes the memtable's WAL. One
//! compactor thread asks [`compaction::pick`] for work after every change
//! and runs it.
//!
//! # Failures
//!
//! A write refused for lack of space (`ENOSPC`, `EDQUOT`; see
//! `is_transient`) is not kept: the WAL cuts a partial record back off,
//! the batch fails with a retryable [`Error::Io`], a flush or compaction
//! that met it removes its outputs and is tried again later (every
//! [`RETRY_PAUSE`], or at the next change), and while that lasts a writer
//! that would wait for the flusher fails at once instead. Once space is
//! freed, writes and flushes resume by themselves. Any other error of the
//! background work or the WAL (an I/O error, a failed fsync, corruption met
//! by compaction) is kept: from then on writes and flushes fail with it
//! (the engine is read-only), reads keep working, and it is logged.
//!
//! Corruption met while serving (a get or a scan reading a damaged block)
//! fails that read with [`Error::Corruption`]; each damaged place (file and
//! offset) is logged once at ERROR and counted in
//! [`EngineStats::corruptions`].
//!
//! # Recovery
//!
//! Open reads the manifest, opens its tables, checks that every WAL segment
//! it lists exists, and replays every WAL at or above the manifest's
//! `min_wal` into a fresh memtable, skipping records at or below the
//! manifest's `last_seq` (they are in tables already; replaying one twice
//! is harmless since the sequence number decides). That memtable is flushed
//! to a table before the engine accepts writes, and a new manifest is
//! recorded. Only then are files deleted, and only those the store can
//! prove it does not need (`docs/storage.md`, "What open deletes"):
//!
//! - WAL segments older than the new manifest's `min_wal`: everything in
//!   them is in a table that manifest names;
//! - table files the manifest does not name, that either do not open as a
//!   table (an output whose build never finished: a table is named by a
//!   manifest only after it was completed, fsync'd and opened) or hold no
//!   sequence number above the highest one recovered (the manifest's
//!   `last_seq` and the WALs: the table is a compaction input already
//!   replaced, or an output of a flush or compaction that crashed before its
//!   manifest switch, whose every write is also in the live tables or WALs);
//! - manifest files other than the one in force.
//!
//! Anything else refuses to open, naming what it found: a directory that
//! holds tables, WAL records or a manifest with content but no `CURRENT`
//! (it is not a new store), a listed WAL segment or named table that is
//! missing, an unnamed table with writes nothing else holds. The
//! `salvage` pass (`LsmConfig::salvage`, `super::salvage`) is how an
//! operator moves damaged files aside instead.
//!
//! One engine per directory: `open` takes an exclusive lock on the
//! directory's `LOCK` file (released when the engine and its threads are
//! gone, or by the kernel when the process dies) and refuses a directory
//! another engine holds.
//!
//! What this engine does not do: run more than one compaction at a time.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::block_cache::BlockCache;
use super::compaction::{self, CompactionTask, LevelsSnapshot, OutputTable, TableMeta};
use super::iterators::{MergeIterator, StorageIterator, VisibleIter};
use super::manifest::{Manifest, ManifestState, ManifestTable};
use super::memtable::MemTable;
use super::sstable::{Table, TableBuilder, TableInfo, TableIter, TableOptions};
use super::wal::{Wal, WalRecord};
use crate::error::{Error, Result};
use crate::storage::LsmConfig;
use crate::storage::{Engine, EngineStats, KeyRange, ScanIter, WriteBatch};

/// How long a waiting thread sleeps before looking again even without a
/// signal: a safety net, not the mechanism (every change signals).
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// The pause of a slowed-down writer, per batch (see `LsmConfig`).
const SLOWDOWN_PAUSE: Duration = Duration::from_millis(1);

/// How long the flusher or compactor waits before trying again after a
/// write refused for lack of space (it also tries at every change).
pub const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Whether `e` may go away without a restart: a write refused for lack of
/// space. Everything such a write left behind was removed (a WAL cut back,
/// table outputs deleted, a manifest not switched to), so trying again
/// later is sound. [`Error::StorageFailed`] never is.
pub(crate) fn is_transient(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if super::fault::is_out_of_space(source))
}

/// Damaged places found while serving: each logged once, and counted.
#[derive(Default)]
pub(crate) struct CorruptionLog {
    seen: Mutex<HashSet<(PathBuf, u64)>>,
    count: AtomicU64,
}

impl CorruptionLog {
    /// Logs `e` at ERROR and counts it, the first time its file and offset
    /// are seen; anything but [`Error::Corruption`] is ignored.
    pub(crate) fn note(&self, e: &Error, during: &str) {
        let Error::Corruption {
            file,
            offset,
            reason,
        } = e
        else {
            return;
        };
        if lock(&self.seen).insert((file.clone(), *offset)) {
            self.count.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                file = %file.display(),
                offset,
                reason = %reason,
                during,
                "corrupt data in the store: reads of the keys there fail until the node is repaired \
                 (read repair rewrites them from other replicas; `ringkv-node --salvage` moves damaged files aside)"
            );
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A table file that belongs to one or more versions. When compaction
/// replaces it, it is marked obsolete, and its file is deleted when the last
/// version (and so the last reader) lets go of it.
struct LiveTable {
    table: Arc<Table>,
    obsolete: AtomicBool,
    cache: Arc<BlockCache>,
}

impl LiveTable {
    fn info(&self) -> &TableInfo {
        self.table.info()
    }

    fn meta(&self) -> TableMeta {
        let i = self.info();
        TableMeta {
            id: i.id,
            file_bytes: i.file_bytes,
            smallest: i.smallest.clone(),
            largest: i.largest.clone(),
        }
    }
}

impl Drop for LiveTable {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            self.cache.forget_table(self.info().id);
            if let Err(e) = fs::remove_file(self.table.path()) {
                // A leftover file is deleted as an orphan on the next open.
                tracing::warn!(file = %self.table.path().display(), error = %e, "cannot delete obsolete table");
            }
        }
    }
}

/// A memtable that no longer takes writes, waiting to be flushed.
struct SealedMemTable {
    memtable: Arc<MemTable>,
    wal: Arc<Wal>,
    /// The highest sequence number handed to a writer of this memtable.
    last_seq: u64,
}

/// One immutable state of the tree: what a reader sees.
struct Version {
    active: Arc<MemTable>,
    /// Newest first.
    sealed: Vec<Arc<SealedMemTable>>,
    /// Level 0 newest first; deeper levels sorted by key, disjoint.
    levels: Vec<Vec<Arc<LiveTable>>>,
}

impl Version {
    fn levels_snapshot(&self) -> LevelsSnapshot {
        LevelsSnapshot {
            levels: self
                .levels
                .iter()
                .map(|l| l.iter().map(|t| t.meta()).collect())
                .collect(),
        }
    }
}

/// What the write lock guards: sequence numbers and the active memtable.
struct WriteState {
    next_seq: u64,
    active: Arc<MemTable>,
    wal: Arc<Wal>,
    /// The next memtable's WAL, created (and recorded in the manifest)
    /// ahead by the flusher so that sealing does no file I/O under this
    /// lock; `None` until then, and sealing creates and records one itself
    /// (taking the manifest lock under this one: nothing takes them in the
    /// other order).
    spare_wal: Option<(u64, Wal)>,
}

/// What the manifest lock guards: the manifest file and the parts of its
/// state that are not in the version.
struct ManifestCtl {
    manifest: Manifest,
    last_seq: u64,
}

#[derive(Default)]
struct Counters {
    logical_bytes_written: AtomicU64,
    /// WAL bytes of WALs already retired (live ones are asked directly).
    retired_wal_bytes: AtomicU64,
    table_bytes_written: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    write_stalls: AtomicU64,
}

struct Inner {
    dir: PathBuf,
    config: LsmConfig,
    table_options: TableOptions,
    cache: Arc<BlockCache>,
    write: Mutex<WriteState>,
    version: RwLock<Arc<Version>>,
    /// The highest published sequence number; changed only under `visible`.
    visible_seq: AtomicU64,
    /// Guards `visible_seq` changes; holds the number of threads waiting on
    /// `visible_cv`, so that a publish with nobody waiting (the common
    /// case) makes no wake-up system call.
    visible: Mutex<usize>,
    visible_cv: Condvar,
    manifest: Mutex<ManifestCtl>,
    /// Held for a whole compaction: one runs at a time.
    compaction_gate: Mutex<()>,
    next_file_id: AtomicU64,
    /// Signalled on every version change, failure and shutdown.
    events: Mutex<()>,
    events_cv: Condvar,
    shutdown: AtomicBool,
    /// Set once `failure` holds an error: the write path's cheap check.
    failed: AtomicBool,
    failure: Mutex<Option<Error>>,
    /// The last out-of-space error of the flusher or compactor while it
    /// lasts (cleared by their next success): writers that would wait for
    /// a flush fail with it instead.
    trouble: Mutex<Option<String>>,
    /// WAL segments that exist and may hold writes (or will: the spare),
    /// as the manifest lists them. Added to before a segment takes a write
    /// and recorded, removed once a manifest no longer needs it.
    wal_ids: Mutex<BTreeSet<u64>>,
    corruption: Arc<CorruptionLog>,
    counters: Counters,
    /// The open `LOCK` file, holding an exclusive advisory lock for as long
    /// as anything of the engine lives: a second process (or a second
    /// engine in this one) opening the directory is refused.
    _lock: fs::File,
}

/// Takes the directory's `LOCK` file exclusively, or says who has it.
fn lock_dir(dir: &Path) -> Result<fs::File> {
    let path = dir.join("LOCK");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // Patiently: see `lock_patiently`.
    match crate::storage::lock_patiently(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(Error::InvalidInput(format!(
            "{} is in use by another engine (its LOCK file is held)",
            dir.display()
        ))),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// The LSM-tree storage engine. See the module docs for how it works.
///
/// Dropping it stops its background threads (joining them) and syncs its
/// WALs; [`LsmEngine::close`] does the same and reports errors.
pub struct LsmEngine {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LsmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LsmEngine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything
    // that can panic, so a poisoned lock still guards valid data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn wal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.wal"))
}

pub(crate) fn table_path(dir: &Path, id: u64) -> PathBuf {
    compaction::table_path(dir, id)
}

/// Parses `000012.sst` / `000012.wal` into (12, "sst").
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// A copy of a recorded failure, to hand to each caller.
fn repeat_failure(e: &Error) -> Error {
    match e {
        Error::Corruption {
            file,
            offset,
            reason,
        } => Error::Corruption {
            file: file.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        other => Error::StorageFailed {
            reason: other.to_string(),
        },
    }
}

impl LsmEngine {
    /// Opens the engine in `dir` (created if missing), recovering whatever
    /// a previous run left: the manifest's tables and every live WAL.
    pub fn open(dir: &Path, config: LsmConfig) -> Result<LsmEngine> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let dir_lock = lock_dir(dir)?;
        let cache = BlockCache::new(config.block_cache_bytes);
        let table_options = TableOptions {
            block_bytes: config.block_bytes,
            bloom_false_positive_rate: config.bloom_false_positive_rate,
        };
        if config.salvage {
            super::salvage::run(dir, &cache)?;
        }
        let (manifest, state) = Manifest::open(dir)?;

        // Every file in the directory that follows our naming.
        let mut max_id = 0;
        let mut wals = Vec::new();
        let mut ssts = Vec::new();
        for name in file_names(dir)? {
            match parse_file_name(&name) {
                Some((id, "wal")) => {
                    max_id = max_id.max(id);
                    wals.push(id);
                }
                Some((id, "sst")) => {
                    max_id = max_id.max(id);
                    ssts.push(id);
                }
                _ => {}
            }
        }
        wals.sort_unstable();
        ssts.sort_unstable();
        let state = match state {
            Some(state) => state,
            None => {
                refuse_unless_new(dir, &wals, &ssts)?;
                ManifestState {
                    next_file_id: 1,
                    last_seq: 0,
                    min_wal: 0,
                    tables: Vec::new(),
                    wals: Some(Vec::new()),
                }
            }
        };
        if let Some(listed) = &state.wals {
            for &id in listed.iter().filter(|&&id| id >= state.min_wal) {
                if wals.binary_search(&id).is_err() {
                    return Err(Error::Corruption {
                        file: wal_path(dir, id),
                        offset: 0,
                        reason: "the manifest lists this write-ahead log segment as one that may hold \
                                 writes not yet in a table, but the file is missing: refusing to open \
                                 rather than lose them silently (restore the file, or open with salvage, `ringkv-node --salvage`, \
                                 to accept the loss and refill from the other replicas)"
                            .into(),
                    });
                }
            }
        }
        let next_file_id = AtomicU64::new(state.next_file_id.max(max_id + 1));

        let mut levels: Vec<Vec<Arc<LiveTable>>> = vec![Vec::new(); config.max_levels];
        let mut live_ids = HashSet::new();
        for t in &state.tables {
            live_ids.insert(t.id);
        }
        for t in &state.tables {
            let level = usize::from(t.level);
            if level >= config.max_levels {
                return Err(Error::InvalidInput(format!(
                    "the store has tables in level {level}, beyond this config's max_levels {}",
                    config.max_levels
                )));
            }
            let path = table_path(dir, t.id);
            if !path.exists() {
                return Err(Error::Corruption {
                    file: path,
                    offset: 0,
                    reason: "the manifest names this table but the file is missing".into(),
                });
            }
            let table = Table::open(&path, t.id, Arc::clone(&cache))?;
            levels[level].push(Arc::new(LiveTable {
                table,
                obsolete: AtomicBool::new(false),
                cache: Arc::clone(&cache),
            }));
        }

        for level in &mut levels[1..] {
            level.sort_by(|a, b| a.info().smallest.cmp(&b.info().smallest));
        }

        // Replay: every live WAL, oldest first, into one fresh memtable.
        let recovered = Arc::new(MemTable::new(0));
        let mut last_seq = state.last_seq;
        for &id in wals.iter().filter(|&&id| id >= state.min_wal) {
            let path = wal_path(dir, id);
            let (records, report) = Wal::replay(&path)?;
            if report.torn_tail_bytes > 0 {
                tracing::warn!(wal = %path.display(), torn = report.torn_tail_bytes, "cut a torn tail off a WAL");
            }
            for record in records {
                for (i, op) in record.ops.iter().enumerate() {
                    let seq = record.first_seq.saturating_add(i as u64);
                    if seq > state.last_seq {
                        recovered.insert(op.key(), seq, op.value());
                        last_seq = last_seq.max(seq);
                    }
                }
            }
        }

        // Table files the manifest does not name: deleted below only when
        // provably unneeded (module docs); otherwise nothing is changed.
        let mut unnamed = Vec::new();
        for &id in ssts.iter().filter(|id| !live_ids.contains(id)) {
            let path = table_path(dir, id);
            match Table::open(&path, id, Arc::clone(&cache)) {
                // Never completed, so never named by any manifest.
                Err(Error::Corruption { .. }) => unnamed.push(id),
                Err(e) => return Err(e),
                Ok(t) if t.info().max_seq <= last_seq => unnamed.push(id),
                Ok(t) => {
                    return Err(Error::Corruption {
                        file: path,
                        offset: 0,
                        reason: format!(
                            "the manifest does not name this table, yet it holds writes up to \
                             sequence number {} while the manifest and the WALs reach only {last_seq}: \
                             the manifest in force may be older than the directory; refusing to open \
                             rather than delete it (salvage, `ringkv-node --salvage`, moves it to quarantine/)",
                            t.info().max_seq
                        ),
                    })
                }
            }
            cache.forget_table(id);
        }

        let wal_id = next_file_id.fetch_add(1, Ordering::Relaxed);
        let wal = Arc::new(Wal::create(&wal_path(dir, wal_id), config.sync)?);
        let active = Arc::new(MemTable::new(wal_id));
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            table_options,
            cache: Arc::clone(&cache),
            write: Mutex::new(WriteState {
                next_seq: last_seq + 1,
                active: Arc::clone(&active),
                wal,
                spare_wal: None,
            }),
            version: RwLock::new(Arc::new(Version {
                active,
                sealed: Vec::new(),
                levels,
            })),
            visible_seq: AtomicU64::new(last_seq),
            visible: Mutex::new(0),
            visible_cv: Condvar::new(),
            manifest: Mutex::new(ManifestCtl {
                manifest,
                last_seq: state.last_seq,
            }),
            compaction_gate: Mutex::new(()),
            next_file_id,
            events: Mutex::new(()),
            events_cv: Condvar::new(),
            shutdown: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            trouble: Mutex::new(None),
            wal_ids: Mutex::new(BTreeSet::from([wal_id])),
            corruption: Arc::default(),
            counters: Counters::default(),
            _lock: dir_lock,
            config,
        });

        // Flush what the WALs held, and record a manifest whose min_wal is
        // the new WAL: the old ones are then dead.
        {
            let mut ctl = lock(&inner.manifest);
            let mut new_table = None;
            if !recovered.is_empty() {
                let mut it = recovered.iter(None, u64::MAX);
                let mut built = inner.build_tables(&mut it, false, u64::MAX, recovered.len())?;
                new_table = built.pop();
            }
            ctl.last_seq = last_seq;
            let current = inner.current();
            let mut levels = current.levels.clone();
            if let Some(t) = new_table {
                levels[0].insert(0, t);
            }
            let min_wal = current.active.id();
            inner.record(&mut ctl, &levels, min_wal)?;
            inner.install(|v| Version {
                active: Arc::clone(&v.active),
                sealed: v.sealed.clone(),
                levels: levels.clone(),
            });
            // Old WALs (every one is below the new min_wal: their writes
            // are in the tables just recorded), unneeded unnamed tables
            // (classified above), stale manifests.
            for id in wals {
                remove_quietly(&wal_path(dir, id));
            }
            for id in unnamed {
                tracing::info!(
                    table = id,
                    "deleting a table file the manifest does not need"
                );
                remove_quietly(&table_path(dir, id));
            }
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if let Some(name) = entry.file_name().to_str() {
                        if ctl.manifest.is_stale_file(name) {
                            remove_quietly(&entry.path());
                        }
                    }
                }
            }
        }

        let mut threads = Vec::new();
        let mut loops = vec![("ringkv-lsm-flush", Inner::flush_loop as fn(&Inner))];
        if !inner.config.external_compaction {
            loops.push(("ringkv-lsm-compact", Inner::compaction_loop as fn(&Inner)));
        }
        for (name, body) in loops {
            let inner2 = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&inner2))
                .map_err(|e| Error::io("starting an LSM background thread", e))?;
            threads.push(handle);
        }
        inner.signal();
        Ok(LsmEngine { inner, threads })
    }

    /// Stops the background threads, syncs the WALs and reports the first
    /// error the engine met (a background failure or the final sync).
    pub fn close(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        self.inner.shutdown.store(true, Ordering::Release);
        self.inner.signal();
        {
            let _g = lock(&self.inner.visible);
            self.inner.visible_cv.notify_all();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an LSM background thread panicked");
            }
        }
        let v = self.inner.current();
        let mut result = lock(&self.inner.write).wal.sync();
        for s in &v.sealed {
            if let Err(e) = s.wal.sync() {
                result = result.and(Err(e));
            }
        }
        if let Some(e) = lock(&self.inner.failure).as_ref() {
            return Err(repeat_failure(e));
        }
        result
    }

    /// The engine's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs compactions until the policy finds nothing to do, in the
    /// calling thread (one compaction runs at a time, so the background
    /// compactor waits meanwhile). For tests and benchmarks that want a
    /// settled tree.
    pub fn compact_until_settled(&self) -> Result<()> {
        self.inner.check_failed()?;
        while self.inner.compact_once()? {}
        Ok(())
    }
}

impl Drop for LsmEngine {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(e) = self.stop() {
                tracing::error!(error = %e, "LSM engine closed with an error");
            }
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot delete file");
        }
    }
}

/// The names of the files in `dir` (names that are not UTF-8 are none of
/// the engine's and are left out).
pub(super) fn file_names(dir: &Path) -> Result<Vec<String>> {
    let listing = |e| Error::io(format!("listing {}", dir.display()), e);
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(listing)? {
        if let Some(name) = entry.map_err(listing)?.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// With no `CURRENT`, checks that the directory holds nothing the engine
/// wrote that could hold data: no table, no WAL segment with a record, no
/// manifest that names a table or a sequence number. A store whose
/// `CURRENT` was lost is refused (naming what was found) rather than taken
/// for a new one, which would delete its tables. What may be there after a
/// crash during the very first open (an empty WAL, an empty manifest) is
/// not data.
pub(crate) fn refuse_unless_new(dir: &Path, wals: &[u64], ssts: &[u64]) -> Result<()> {
    let mut found = Vec::new();
    if !ssts.is_empty() {
        found.push(format!(
            "{} table file(s) ({})",
            ssts.len(),
            name_some(ssts.iter().map(|&id| format!("{id:06}.sst")))
        ));
    }
    let mut logs = Vec::new();
    for &id in wals {
        let path = wal_path(dir, id);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match super::wal::decode_records(&bytes) {
            Ok((records, _)) if records.is_empty() => {}
            _ => logs.push(format!("{id:06}.wal")),
        }
    }
    if !logs.is_empty() {
        found.push(format!(
            "{} write-ahead log segment(s) holding records ({})",
            logs.len(),
            name_some(logs.into_iter())
        ));
    }
    let mut manifests = Vec::new();
    for name in file_names(dir)? {
        if !name.starts_with("MANIFEST-") {
            continue;
        }
        let path = dir.join(&name);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if let Ok(state) = ManifestState::decode(&bytes, &path) {
            if !state.tables.is_empty() || state.last_seq > 0 {
                manifests.push(name.to_string());
            }
        }
    }
    if !manifests.is_empty() {
        found.push(format!(
            "manifest file(s) naming tables ({})",
            name_some(manifests.into_iter())
        ));
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::Corruption {
        file: dir.join("CURRENT"),
        offset: 0,
        reason: format!(
            "CURRENT is missing, but the directory is not a new store: it holds {}. \
             Refusing to open (opening would take it for an empty store and delete those files). \
             Restore CURRENT (one line naming the newest MANIFEST-NNNNNN), or open with salvage (`ringkv-node --salvage`) \
             to move these files to quarantine/ and refill the node from its replicas",
            found.join(", ")
        ),
    })
}

/// Up to five names, then how many more.
fn name_some(names: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = names.collect();
    let mut text = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        text.push_str(&format!(" and {} more", names.len() - 5));
    }
    text
}

/// A table builder writing a fresh file, as the merge's output.
struct Output {
    builder: TableBuilder,
}

impl OutputTable for Output {
    fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()> {
        self.builder.add(key, seq, value)
    }
    fn estimated_bytes(&self) -> u64 {
        self.builder.estimated_bytes()
    }
    fn entries(&self) -> u64 {
        self.builder.entries()
    }
}

impl Inner {
    fn current(&self) -> Arc<Version> {
        Arc::clone(&self.version.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current version and the visible sequence number, read together
    /// (see the module docs for why together).
    fn snapshot(&self) -> (Arc<Version>, u64) {
        let v = self.version.read().unwrap_or_else(|p| p.into_inner());
        (Arc::clone(&v), self.visible_seq.load(Ordering::Acquire))
    }

    /// Swaps in the version `edit` makes from the current one.
    fn install(&self, edit: impl FnOnce(&Version) -> Version) {
        {
            let mut v = self.version.write().unwrap_or_else(|p| p.into_inner());
            let next = edit(&v);
            *v = Arc::new(next);
        }
        self.signal();
    }

    /// Wakes every thread waiting for a change.
    fn signal(&self) {
        drop(lock(&self.events));
        self.events_cv.notify_all();
    }

    /// Waits for a signal, at most [`WAIT_SLICE`].
    fn wait_event(&self, guard: MutexGuard<'_, ()>) {
        let _ = self
            .events_cv
            .wait_timeout(guard, WAIT_SLICE)
            .unwrap_or_else(|p| p.into_inner());
    }

    fn check_failed(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) && !self.shutdown.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(e) = lock(&self.failure).as_ref() {
            return Err(repeat_failure(e));
        }
        if self.shutdown.load(Ordering::Acquire) {
            return Err(Error::Shutdown);
        }
        Ok(())
    }

    /// Records the first failure; the engine refuses writes from now on.
    fn fail(&self, e: Error) {
        tracing::error!(dir = %self.dir.display(), error = %e, "LSM engine failed; it is read-only now");
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(e);
        }
        self.failed.store(true, Ordering::Release);
        drop(f);
        self.signal();
    }

    /// Records `e` as the engine's failure unless it is transient (see
    /// [`is_transient`]): a refused write then leaves the engine writable.
    fn fail_unless_transient(&self, e: &Error) {
        if !is_transient(e) {
            self.fail(repeat_failure(e));
        }
    }

    /// Notes an out-of-space error of the background work (logged once
    /// per episode); cleared by its next success.
    fn set_trouble(&self, e: &Error) {
        let mut t = lock(&self.trouble);
        if t.is_none() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "LSM flush or compaction is out of space; retrying until space is freed");
        }
        *t = Some(e.to_string());
        drop(t);
        self.signal();
    }

    fn clear_trouble(&self) {
        let mut t = lock(&self.trouble);
        if t.take().is_some() {
            tracing::info!(dir = %self.dir.display(), "LSM flush or compaction succeeded again");
        }
    }

    /// The background work's out-of-space error, as a retryable error.
    fn check_trouble(&self) -> Result<()> {
        match lock(&self.trouble).as_ref() {
            None => Ok(()),
            Some(why) => Err(Error::io(
                "the LSM cannot flush or compact",
                std::io::Error::new(std::io::ErrorKind::StorageFull, why.clone()),
            )),
        }
    }

    /// Waits [`RETRY_PAUSE`], or less if the engine is shutting down.
    fn pause_for_retry(&self) {
        let guard = lock(&self.events);
        let _ = self
            .events_cv
            .wait_timeout_while(guard, RETRY_PAUSE, |_| {
                !self.shutdown.load(Ordering::Acquire)
            })
            .unwrap_or_else(|p| p.into_inner());
    }

    fn alloc_file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::Relaxed)
    }

    // ----- write path -----

    /// Slows or stops the writer while flushing or compaction is behind.
    fn backpressure(&self) -> Result<()> {
        let max_sealed = self.config.max_sealed_memtables;
        let over = |v: &Version| {
            let (sealed, l0) = (v.sealed.len(), v.levels[0].len());
            let stop = sealed >= max_sealed || l0 >= self.config.l0_stop_tables;
            let slow = sealed * 2 >= max_sealed || l0 >= self.config.l0_slowdown_tables;
            (stop, slow)
        };
        self.check_failed()?;
        let (stop, slow) = over(&self.current());
        if !stop {
            if slow {
                self.counters.write_stalls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(SLOWDOWN_PAUSE);
            }
            return Ok(());
        }
        self.counters.write_stalls.fetch_add(1, Ordering::Relaxed);
        let mut guard = lock(&self.events);
        loop {
            self.check_failed()?;
            if !over(&self.current()).0 {
                return Ok(());
            }
            // The flusher or compactor cannot write for lack of space: do
            // not wait for it, refuse the batch (retryable).
            self.check_trouble()?;
            self.wait_event(guard);
            guard = lock(&self.events);
        }
    }

    /// Seals the active memtable (the write lock is held): a new WAL and
    /// memtable take the writes from now on.
    fn seal(&self, w: &mut WriteState) -> Result<()> {
        let (id, wal) = match w.spare_wal.take() {
            Some(spare) => spare,
            None => {
                let id = self.alloc_file_id();
                (id, self.create_wal(id)?)
            }
        };
        let wal = Arc::new(wal);
        let memtable = Arc::new(MemTable::new(id));
        let old_memtable = std::mem::replace(&mut w.active, Arc::clone(&memtable));
        let old_wal = std::mem::replace(&mut w.wal, wal);
        let sealed = Arc::new(SealedMemTable {
            memtable: old_memtable,
            wal: old_wal,
            last_seq: w.next_seq - 1,
        });
        self.install(|v| {
            let mut list = Vec::with_capacity(v.sealed.len() + 1);
            list.push(sealed);
            list.extend(v.sealed.iter().cloned());
            Version {
                active: memtable,
                sealed: list,
                levels: v.levels.clone(),
            }
        });
        Ok(())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.backpressure()?;
        let logical = batch.logical_bytes() as u64;
        let n = batch.len() as u64;
        let (first_seq, memtable, wal) = {
            let mut w = lock(&self.write);
            self.check_failed()?;
            if w.active.approximate_bytes() >= self.config.memtable_bytes {
                if let Err(e) = self.seal(&mut w) {
                    drop(w);
                    self.fail_unless_transient(&e);
                    return Err(e);
                }
            }
            let first = w.next_seq;
            w.next_seq += n;
            (first, Arc::clone(&w.active), Arc::clone(&w.wal))
        };
        let record = WalRecord {
            first_seq,
            ops: batch.into_ops(),
        };
        let appended = wal.append(&record);
        if appended.is_ok() {
            // Copied into the memtable's arena (one allocation per entry
            // instead of three, see `MemTable`).
            for (i, op) in record.ops.iter().enumerate() {
                memtable.insert(op.key(), first_seq + i as u64, op.value());
            }
        }
        // Published even on failure, so that later batches are not held
        // back forever: a failed batch's numbers simply hold nothing.
        self.publish(first_seq, first_seq + n - 1);
        match appended {
            // Refused before anything reached the log (a batch over the
            // record limit): the log is intact, only this batch fails.
            Err(e @ Error::InvalidInput(_)) => return Err(e),
            // Out of space: the WAL cut the partial record back off, so
            // nothing of this batch is kept and later batches may succeed.
            Err(e) => {
                self.fail_unless_transient(&e);
                return Err(e);
            }
            Ok(()) => {}
        }
        self.counters
            .logical_bytes_written
            .fetch_add(logical, Ordering::Relaxed);
        Ok(())
    }

    /// Moves the visible sequence number to `last` once every number
    /// before `first` is visible.
    fn publish(&self, first: u64, last: u64) {
        let mut g = lock(&self.visible);
        while self.visible_seq.load(Ordering::Acquire) + 1 != first {
            *g += 1;
            g = self.visible_cv.wait(g).unwrap_or_else(|p| p.into_inner());
            *g -= 1;
        }
        self.visible_seq.store(last, Ordering::Release);
        let waiting = *g > 0;
        drop(g);
        if waiting {
            self.visible_cv.notify_all();
        }
    }

    /// Waits until every sequence number up to `seq` is published.
    fn wait_visible(&self, seq: u64) -> Result<()> {
        let mut g = lock(&self.visible);
        while self.visible_seq.load(Ordering::Acquire) < seq {
            if self.shutdown.load(Ordering::Acquire) {
                return Err(Error::Shutdown);
            }
            *g += 1;
            g = self
                .visible_cv
                .wait_timeout(g, WAIT_SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            *g -= 1;
        }
        Ok(())
    }

    // ----- reads -----

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let got = self.get_inner(key);
        if let Err(e) = &got {
            self.corruption.note(e, "get");
        }
        got
    }

    fn get_inner(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.find(key, |t| t.get(key))
    }

    /// [`Engine::get_in_memory`]: the read of [`Self::get_inner`] with each
    /// table's block taken from memory alone.
    fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>>> {
        enum Stop {
            Disk,
            Failed(Error),
        }
        let found = self.find(key, |t| match t.get_in_memory(key) {
            None => Err(Stop::Disk),
            Some(got) => got.map_err(Stop::Failed),
        });
        match found {
            Ok(value) => Some(Ok(value)),
            Err(Stop::Disk) => None,
            Err(Stop::Failed(e)) => {
                self.corruption.note(&e, "get");
                Some(Err(e))
            }
        }
    }

    /// The visible value of `key`: the newest version at the snapshot,
    /// from the memtables, else from the tables, newest first, each read
    /// with `table_get` (whose error stops the read).
    fn find<E>(
        &self,
        key: &[u8],
        table_get: impl Fn(&Table) -> std::result::Result<Option<(u64, Option<Vec<u8>>)>, E>,
    ) -> std::result::Result<Option<Vec<u8>>, E> {
        let (v, snapshot) = self.snapshot();
        if let Some((_, value)) = v.active.get(key, snapshot) {
            return Ok(value);
        }
        for s in &v.sealed {
            if let Some((_, value)) = s.memtable.get(key, snapshot) {
                return Ok(value);
            }
        }
        // Every table entry is at or below the snapshot (module docs), so
        // the first table holding the key has its visible version.
        let deeper = v.levels[1..].iter().filter_map(|level| {
            let i = level.partition_point(|t| t.info().largest.as_slice() < key);
            level.get(i)
        });
        for t in v.levels[0].iter().chain(deeper) {
            if let Some((_, value)) = table_get(&t.table)? {
                return Ok(value);
            }
        }
        Ok(None)
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'static>> {
        let scan = self.scan_inner(range);
        if let Err(e) = &scan {
            self.corruption.note(e, "scan");
        }
        scan
    }

    fn scan_inner(&self, range: KeyRange) -> Result<ScanIter<'static>> {
        let (v, snapshot) = self.snapshot();
        let start: Option<&[u8]> = match &range.start {
            std::ops::Bound::Included(k) | std::ops::Bound::Excluded(k) => Some(k),
            std::ops::Bound::Unbounded => None,
        };
        let mut sources: Vec<Box<dyn StorageIterator>> = Vec::new();
        sources.push(Box::new(v.active.iter(start, snapshot)));
        for s in &v.sealed {
            sources.push(Box::new(s.memtable.iter(start, snapshot)));
        }
        for t in &v.levels[0] {
            if range.is_past_end(&t.info().smallest) {
                continue;
            }
            sources.push(Box::new(open_table_iter(&t.table, start)?));
        }
        for level in &v.levels[1..] {
            if !level.is_empty() {
                sources.push(Box::new(LevelIter::new(level.clone(), start)?));
            }
        }
        let visible = VisibleIter::new(MergeIterator::new(sources), snapshot, range);
        Ok(Box::new(Pinned {
            inner: visible,
            _version: v,
            corruption: Arc::clone(&self.corruption),
        }))
    }

    // ----- flush -----

    /// Builds tables from `input` (tombstones dropped if asked), cut at
    /// `target` bytes; returns them opened, in key order.
    fn build_tables(
        &self,
        input: &mut dyn StorageIterator,
        drop_tombstones: bool,
        target: u64,
        expected_keys: usize,
    ) -> Result<Vec<Arc<LiveTable>>> {
        let mut outputs = Vec::new();
        let mut ids = Vec::new();
        let result = compaction::merge_into_tables(
            input,
            drop_tombstones,
            target,
            || {
                let id = self.alloc_file_id();
                ids.push(id);
                let builder = TableBuilder::create(
                    &table_path(&self.dir, id),
                    id,
                    &self.table_options,
                    expected_keys,
                )?;
                Ok(Output { builder })
            },
            |out| {
                let info = out.builder.finish()?;
                self.counters
                    .table_bytes_written
                    .fetch_add(info.file_bytes, Ordering::Relaxed);
                let table = Table::open(
                    &table_path(&self.dir, info.id),
                    info.id,
                    Arc::clone(&self.cache),
                )?;
                outputs.push(Arc::new(LiveTable {
                    table,
                    obsolete: AtomicBool::new(false),
                    cache: Arc::clone(&self.cache),
                }));
                Ok(())
            },
        );
        if let Err(e) = result {
            // The outputs are in no manifest: remove what exists of them.
            for id in ids {
                remove_quietly(&table_path(&self.dir, id));
            }
            return Err(e);
        }
        // No directory fsync here: the manifest write that makes these
        // tables live fsyncs the directory, which persists their entries too.
        Ok(outputs)
    }

    /// Records the table set `levels` in a new manifest.
    fn record(
        &self,
        ctl: &mut ManifestCtl,
        levels: &[Vec<Arc<LiveTable>>],
        min_wal: u64,
    ) -> Result<()> {
        let tables = levels
            .iter()
            .enumerate()
            .flat_map(|(level, tables)| {
                tables.iter().map(move |t| {
                    let i = t.info();
                    ManifestTable {
                        level: level as u8,
                        id: i.id,
                        file_bytes: i.file_bytes,
                        entries: i.entries,
                        tombstones: i.tombstones,
                        max_seq: i.max_seq,
                        smallest: i.smallest.clone(),
                        largest: i.largest.clone(),
                    }
                })
            })
            .collect();
        let wals = lock(&self.wal_ids)
            .iter()
            .copied()
            .filter(|&id| id >= min_wal)
            .collect();
        let state = ManifestState {
            next_file_id: self.next_file_id.load(Ordering::Relaxed),
            last_seq: ctl.last_seq,
            min_wal,
            tables,
            wals: Some(wals),
        };
        ctl.manifest.write(&state)
    }

    /// Records the current version as it is (after a WAL segment was
    /// added to or taken from `wal_ids`).
    fn record_current(&self) -> Result<()> {
        let mut ctl = lock(&self.manifest);
        let current = self.current();
        let min_wal = current
            .sealed
            .last()
            .map_or(current.active.id(), |s| s.memtable.id());
        self.record(&mut ctl, &current.levels, min_wal)
    }

    /// Creates WAL segment `id` and records it in the manifest before it
    /// can take a write, so that its loss is noticed at the next open. On
    /// failure nothing of it is left.
    fn create_wal(&self, id: u64) -> Result<Wal> {
        let path = wal_path(&self.dir, id);
        let wal = Wal::create(&path, self.config.sync)?;
        lock(&self.wal_ids).insert(id);
        if let Err(e) = self.record_current() {
            lock(&self.wal_ids).remove(&id);
            drop(wal);
            // A manifest that lists it may be in force only if the error
            // is StorageFailed, which the caller makes permanent.
            if !matches!(e, Error::StorageFailed { .. }) {
                remove_quietly(&path);
            }
            return Err(e);
        }
        Ok(wal)
    }

    /// Creates the WAL the next seal will use, unless one is waiting.
    /// WAL numbers still rise in the order memtables are sealed: there is at
    /// most one spare, and it is numbered after every WAL in use.
    fn prepare_spare_wal(&self) -> Result<()> {
        if lock(&self.write).spare_wal.is_some() {
            return Ok(());
        }
        let id = self.alloc_file_id();
        let path = wal_path(&self.dir, id);
        let wal = self.create_wal(id)?;
        let mut w = lock(&self.write);
        if w.spare_wal.is_none() && w.active.id() < id {
            w.spare_wal = Some((id, wal));
        } else {
            // A seal raced ahead and made its own; this one is not needed.
            // It is deleted once a manifest no longer lists it.
            drop(w);
            drop(wal);
            lock(&self.wal_ids).remove(&id);
            self.record_current()?;
            remove_quietly(&path);
        }
        Ok(())
    }

    fn flush_loop(&self) {
        while let Err(e) = self.prepare_spare_wal() {
            if !is_transient(&e) {
                self.fail(e);
                return;
            }
            // Sealing makes its own WAL meanwhile.
            self.set_trouble(&e);
            self.pause_for_retry();
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
        }
        self.clear_trouble();
        loop {
            let oldest = {
                let mut guard = lock(&self.events);
                loop {
                    if self.shutdown.load(Ordering::Acquire) || lock(&self.failure).is_some() {
                        return;
                    }
                    if let Some(s) = self.current().sealed.last() {
                        break Arc::clone(s);
                    }
                    self.wait_event(guard);
                    guard = lock(&self.events);
                }
            };
            match self
                .flush_one(&oldest)
                .and_then(|()| self.prepare_spare_wal())
            {
                Ok(()) => self.clear_trouble(),
                Err(Error::Shutdown) => return,
                // Out of space: whatever the attempt wrote is removed and
                // the memtable is still sealed (its WAL intact); try again.
                Err(e) if is_transient(&e) => {
                    self.set_trouble(&e);
                    self.pause_for_retry();
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// Flushes the oldest sealed memtable into a level-0 table.
    fn flush_one(&self, sealed: &SealedMemTable) -> Result<()> {
        // Writers that got numbers for this memtable may still be inserting.
        self.wait_visible(sealed.last_seq)?;
        let memtable = &sealed.memtable;
        let mut tables = if memtable.is_empty() {
            Vec::new()
        } else {
            let mut it = memtable.iter(None, u64::MAX);
            self.build_tables(&mut it, false, u64::MAX, memtable.len())?
        };
        let table = tables.pop();
        let mut ctl = lock(&self.manifest);
        ctl.last_seq = ctl.last_seq.max(sealed.last_seq);
        let current = self.current();
        let mut levels = current.levels.clone();
        if let Some(t) = &table {
            levels[0].insert(0, Arc::clone(t));
        }
        // The oldest memtable still unflushed after this one.
        let min_wal = current
            .sealed
            .iter()
            .rev()
            .find(|s| s.memtable.id() != memtable.id())
            .map_or(current.active.id(), |s| s.memtable.id());
        if let Err(e) = self.record(&mut ctl, &levels, min_wal) {
            if is_transient(&e) {
                // The previous manifest is in force and does not name the
                // new table: delete it (when dropped) before trying again.
                if let Some(t) = &table {
                    t.obsolete.store(true, Ordering::Release);
                }
            }
            return Err(e);
        }
        // A flush went through: whatever out-of-space trouble there was is
        // over (cleared before the new version is visible, so that a
        // `flush` that sees it done also sees writes allowed).
        self.clear_trouble();
        let id = memtable.id();
        // Counted before the new version is visible, so that a `flush`
        // that sees its memtable gone also sees it counted.
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.install(|v| Version {
            active: Arc::clone(&v.active),
            sealed: v
                .sealed
                .iter()
                .filter(|s| s.memtable.id() != id)
                .cloned()
                .collect(),
            levels,
        });
        drop(ctl);
        self.counters
            .retired_wal_bytes
            .fetch_add(sealed.wal.bytes_written(), Ordering::Relaxed);
        // The manifest just recorded no longer lists it (below min_wal).
        lock(&self.wal_ids).remove(&id);
        remove_quietly(sealed.wal.path());
        Ok(())
    }

    /// Seals the active memtable (unless empty) and waits until every
    /// memtable sealed so far is in a table recorded by the manifest.
    fn flush(&self) -> Result<()> {
        self.check_failed()?;
        let target = {
            let mut w = lock(&self.write);
            if !w.active.is_empty() {
                if let Err(e) = self.seal(&mut w) {
                    drop(w);
                    self.fail_unless_transient(&e);
                    return Err(e);
                }
            }
            self.current().sealed.first().map(|s| s.memtable.id())
        };
        let Some(target) = target else {
            return Ok(());
        };
        let mut guard = lock(&self.events);
        loop {
            self.check_failed()?;
            if self
                .current()
                .sealed
                .iter()
                .all(|s| s.memtable.id() > target)
            {
                return Ok(());
            }
            self.check_trouble()?;
            self.wait_event(guard);
            guard = lock(&self.events);
        }
    }

    // ----- compaction -----

    fn compaction_loop(&self) {
        loop {
            {
                let guard = lock(&self.events);
                if self.shutdown.load(Ordering::Acquire) || lock(&self.failure).is_some() {
                    return;
                }
                self.wait_event(guard);
            }
            loop {
                if self.shutdown.load(Ordering::Acquire) {
                    return;
                }
                match self.compact_once() {
                    Ok(true) => self.clear_trouble(),
                    Ok(false) => break,
                    // Abandoned for shutdown: its outputs are already removed
                    // and its inputs are still the live tables.
                    Err(Error::Shutdown) => return,
                    // Out of space: outputs removed, inputs still live.
                    Err(e) if is_transient(&e) => {
                        self.set_trouble(&e);
                        self.pause_for_retry();
                        break;
                    }
                    Err(e) => {
                        self.corruption.note(&e, "compaction");
                        self.fail(e);
                        return;
                    }
                }
            }
        }
    }

    /// Runs one compaction if the policy asks for one; whether it did.
    fn compact_once(&self) -> Result<bool> {
        // Held for the whole compaction: one at a time, and flushes only
        // wait for it at their manifest write.
        let _running = lock(&self.compaction_gate);
        let v = self.current();
        let Some(task) = compaction::pick(&v.levels_snapshot(), &self.config) else {
            return Ok(false);
        };
        self.run_compaction(&v, &task)?;
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn run_compaction(&self, v: &Version, task: &CompactionTask) -> Result<()> {
        let find = |level: usize, ids: &[u64]| -> Vec<Arc<LiveTable>> {
            ids.iter()
                .filter_map(|id| v.levels[level].iter().find(|t| t.info().id == *id).cloned())
                .collect()
        };
        let inputs = find(task.input_level, &task.inputs);
        let lower = find(task.output_level, &task.overlapping);
        let outputs = if task.trivial_move {
            inputs.clone()
        } else {
            let mut sources: Vec<Box<dyn StorageIterator>> = Vec::new();
            for t in &inputs {
                sources.push(Box::new(t.table.iter()?));
            }
            if !lower.is_empty() {
                sources.push(Box::new(LevelIter::new(lower.clone(), None)?));
            }
            let entries: u64 = inputs.iter().chain(&lower).map(|t| t.info().entries).sum();
            let bytes: u64 = inputs
                .iter()
                .chain(&lower)
                .map(|t| t.info().file_bytes)
                .sum();
            let per_table = if bytes == 0 {
                entries
            } else {
                (entries as f64 * self.config.target_table_bytes as f64 / bytes as f64).ceil()
                    as u64
            };
            let expected = entries.min(per_table.max(16)) as usize;
            let mut merge = StopOnShutdown {
                inner: MergeIterator::new(sources),
                shutdown: &self.shutdown,
            };
            self.build_tables(
                &mut merge,
                task.drop_tombstones,
                self.config.target_table_bytes,
                expected,
            )?
        };
        let removed: HashSet<u64> = task
            .inputs
            .iter()
            .chain(&task.overlapping)
            .copied()
            .collect();
        let mut ctl = lock(&self.manifest);
        let current = self.current();
        let mut levels = current.levels.clone();
        levels[task.input_level].retain(|t| !removed.contains(&t.info().id));
        levels[task.output_level].retain(|t| !removed.contains(&t.info().id));
        levels[task.output_level].extend(outputs.iter().cloned());
        levels[task.output_level].sort_by(|a, b| a.info().smallest.cmp(&b.info().smallest));
        let min_wal = current
            .sealed
            .last()
            .map_or(current.active.id(), |s| s.memtable.id());
        // On failure the outputs are left alone if only the last directory
        // fsync failed (StorageFailed): the new manifest may name them. The
        // next open deletes whichever the manifest in force does not need.
        // Out of space, the previous manifest is in force: they go now.
        if let Err(e) = self.record(&mut ctl, &levels, min_wal) {
            if is_transient(&e) && !task.trivial_move {
                for t in &outputs {
                    t.obsolete.store(true, Ordering::Release);
                }
            }
            return Err(e);
        }
        self.install(|v| Version {
            active: Arc::clone(&v.active),
            sealed: v.sealed.clone(),
            levels,
        });
        drop(ctl);
        if !task.trivial_move {
            for t in inputs.iter().chain(&lower) {
                t.obsolete.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        let v = self.current();
        let (wal_live_bytes, wal_bytes_written) = {
            let w = lock(&self.write);
            let mut live = w.wal.bytes_written();
            for s in &v.sealed {
                live += s.wal.bytes_written();
            }
            (
                live,
                live + self.counters.retired_wal_bytes.load(Ordering::Relaxed),
            )
        };
        let (manifest_bytes, manifest_live) = {
            let ctl = lock(&self.manifest);
            (ctl.manifest.bytes_written(), ctl.manifest.current_bytes())
        };
        let bytes_per_level: Vec<u64> = v
            .levels
            .iter()
            .map(|l| l.iter().map(|t| t.info().file_bytes).sum())
            .collect();
        let table_bytes: u64 = bytes_per_level.iter().sum();
        let c = &self.counters;
        EngineStats {
            engine: "lsm",
            logical_bytes_written: c.logical_bytes_written.load(Ordering::Relaxed),
            disk_bytes_written: wal_bytes_written
                + c.table_bytes_written.load(Ordering::Relaxed)
                + manifest_bytes,
            disk_bytes: table_bytes + wal_live_bytes + manifest_live,
            memtable_bytes: (v.active.approximate_bytes()
                + v.sealed
                    .iter()
                    .map(|s| s.memtable.approximate_bytes())
                    .sum::<usize>()) as u64,
            cache_bytes: self.cache.bytes(),
            cache_hits: self.cache.hits(),
            cache_misses: self.cache.misses(),
            bloom_skips: self.cache.bloom_skips(),
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            write_stalls: c.write_stalls.load(Ordering::Relaxed),
            corruptions: self.corruption.count(),
            tables_per_level: v.levels.iter().map(Vec::len).collect(),
            bytes_per_level,
        }
    }
}

fn open_table_iter(table: &Arc<Table>, start: Option<&[u8]>) -> Result<TableIter> {
    match start {
        Some(k) => table.iter_from(k),
        None => table.iter(),
    }
}

/// A cursor over one level below 0: its tables are disjoint and sorted, so
/// it reads them one after another, opening each only when reached.
struct LevelIter {
    tables: Vec<Arc<LiveTable>>,
    next_table: usize,
    current: Option<TableIter>,
}

impl LevelIter {
    fn new(tables: Vec<Arc<LiveTable>>, start: Option<&[u8]>) -> Result<Self> {
        let first = match start {
            Some(k) => tables.partition_point(|t| t.info().largest.as_slice() < k),
            None => 0,
        };
        let mut it = LevelIter {
            tables,
            next_table: first + 1,
            current: None,
        };
        if let Some(t) = it.tables.get(first) {
            it.current = Some(open_table_iter(&t.table, start)?);
        }
        it.skip_exhausted()?;
        Ok(it)
    }

    fn skip_exhausted(&mut self) -> Result<()> {
        while self.current.as_ref().is_some_and(|c| !c.is_valid()) {
            self.current = match self.tables.get(self.next_table) {
                Some(t) => Some(t.table.iter()?),
                None => None,
            };
            self.next_table += 1;
        }
        Ok(())
    }

    fn cur(&self) -> &TableIter {
        match &self.current {
            Some(c) => c,
            None => panic!("LevelIter used while not valid"),
        }
    }
}

impl StorageIterator for LevelIter {
    fn is_valid(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.is_valid())
    }
    fn key(&self) -> &[u8] {
        self.cur().key()
    }
    fn seq(&self) -> u64 {
        self.cur().seq()
    }
    fn value(&self) -> Option<&[u8]> {
        self.cur().value()
    }
    fn next(&mut self) -> Result<()> {
        if let Some(c) = self.current.as_mut() {
            if let Err(e) = c.next() {
                self.current = None;
                return Err(e);
            }
        }
        self.skip_exhausted()
    }
}

/// A compaction's input that ends the merge with [`Error::Shutdown`] once
/// the engine is closing, so that closing does not wait for a long merge.
struct StopOnShutdown<'a, I> {
    inner: I,
    shutdown: &'a AtomicBool,
}

impl<I: StorageIterator> StorageIterator for StopOnShutdown<'_, I> {
    fn is_valid(&self) -> bool {
        self.inner.is_valid()
    }
    fn key(&self) -> &[u8] {
        self.inner.key()
    }
    fn seq(&self) -> u64 {
        self.inner.seq()
    }
    fn value(&self) -> Option<&[u8]> {
        self.inner.value()
    }
    fn next(&mut self) -> Result<()> {
        if self.shutdown.load(Ordering::Relaxed) {
            return Err(Error::Shutdown);
        }
        self.inner.next()
    }
}

/// A scan together with the version it reads, which keeps that version's
/// memtables and table files alive until the scan is dropped.
/// It also notes the corruption an item reports.
struct Pinned<I> {
    inner: I,
    _version: Arc<Version>,
    corruption: Arc<CorruptionLog>,
}

impl<T, I: Iterator<Item = Result<T>>> Iterator for Pinned<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next();
        if let Some(Err(e)) = &item {
            self.corruption.note(e, "scan");
        }
        item
    }
}

/// Whether the tables of `v` together fit in a block cache of `cache`
/// bytes.
impl Engine for LsmEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.inner.write(batch)
    }

    fn scan(&self, range: KeyRange) -> Result<ScanIter<'_>> {
        self.inner.scan(range)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    /// A write is served at once when it will not fsync (`SyncPolicy`
    /// other than `Always`) and no backpressure is in force (the slowdown
    /// threshold of `backpressure` is not reached), so it is an append to
    /// the WAL through the OS and a memtable insert. A read is served at
    /// once when every table fits in the block cache, so that, once warm,
    /// no read waits on the disk. A failed or closing engine answers at
    /// once with its error.
    fn writes_at_once(&self) -> bool {
        let inner = &self.inner;
        if inner.failed.load(Ordering::Acquire) || inner.shutdown.load(Ordering::Acquire) {
            return true;
        }
        let v = inner.current();
        !matches!(inner.config.sync, crate::storage::SyncPolicy::Always)
            && v.sealed.len() * 2 < inner.config.max_sealed_memtables
            && v.levels[0].len() < inner.config.l0_slowdown_tables
    }

    fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>>> {
        let inner = &self.inner;
        if inner.failed.load(Ordering::Acquire) || inner.shutdown.load(Ordering::Acquire) {
            return Some(self.get(key));
        }
        inner.get_in_memory(key)
    }

    fn compact(&self) -> Result<bool> {
        if !self.inner.config.external_compaction {
            return Ok(false);
        }
        self.inner.check_failed()?;
        match self.inner.compact_once() {
            Err(Error::Shutdown) => Err(Error::Shutdown),
            // As on the background thread: out of space, it is tried again
            // later; any other failure makes the engine read-only, with the
            // error returned to writers.
            Err(e) if is_transient(&e) => {
                self.inner.set_trouble(&e);
                Err(e)
            }
            Err(e) => {
                self.inner.corruption.note(&e, "compaction");
                self.inner.fail(repeat_failure(&e));
                Err(e)
            }
            Ok(worked) => {
                if worked {
                    self.inner.clear_trouble();
                }
                Ok(worked)
            }
        }
    }
}
