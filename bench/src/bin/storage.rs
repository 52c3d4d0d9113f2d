//! The storage benchmark: ringkv's engines against fjall and redb, on the
//! `db_bench` workload of `docs/benchmarks.md` ("Workloads and peers"),
//! in one run.
//!
//! Run with `cargo run --release -p ringkv-bench --bin storage -- --num 100000`
//! (the default is 1,000,000 keys); `--help` lists the options.
//!
//! Workload: 16-byte keys (`%016d` of an even number, so that the odd
//! numbers between them are keys that are absent but inside the key range,
//! which is what `readmissing` reads), 100-byte values of 50 random bytes
//! and 50 equal bytes (they compress to about half), one thread, one key per
//! write. Phases, in the order given:
//!
//! - `fillseq`: a fresh store, `num` keys in ascending order;
//! - `fillrandom`: a fresh store, the same `num` keys in a random order
//!   (a permutation: every key once, so that the reads below find them);
//! - `overwrite`: `num` puts of keys drawn at random from the filled ones;
//! - `readrandom`, `readmissing`: `reads` point reads of present keys, and
//!   of absent keys between them;
//! - `seekrandom`: `reads / 10` scans from a random present key, reading 10
//!   entries each (`db_bench --seek_nexts=10`);
//! - `readseq`: one full scan (ops/s counts entries);
//! - `fillsync`: a separate fresh store, 10,000 puts each fsync'd before
//!   the put returns.
//!
//! Before the first read phase after writes, the store settles: everything
//! is flushed and the benchmark waits until background compaction has been
//! idle for a second. Space amplification (bytes allocated on disk by the
//! store's files over raw key and value bytes) is measured then; write
//! amplification is the process's `write_bytes` (from `/proc/self/io`: bytes
//! the process caused to be written to the block device, counted when page
//! cache pages are dirtied, so a page rewritten before writeback counts each
//! time) from the start of the first fill to the end of the settle, over
//! the key and value bytes put in that span. Each engine runs in its own
//! child process of this binary, one after another, so that `write_bytes`
//! and the peak RSS (`VmHWM`) are that engine's alone.
//!
//! Durability outside `fillsync` is "WAL on, no fsync per write":
//! - ringkv-lsm: `SyncPolicy::None` (each batch's log record is written to
//!   the OS, never fsync'd by the engine);
//! - fjall: its default (`manual_journal_persist(false)`: each write is
//!   flushed from the journal's buffer to the OS; no fsync);
//! - ringkv-btree: `SyncPolicy::None`, which commits with redb's
//!   `Durability::None` and makes a durable commit once a second;
//! - redb: each put its own write transaction with `Durability::None`, and
//!   one `Durability::Immediate` commit at the end of each write phase.
//!   redb has no log: a non-durable commit is not recoverable after a crash
//!   (even of the process alone) until the next durable one, so this is
//!   weaker than a WAL; it is the closest redb offers without an fsync per
//!   write.
//!
//! In `fillsync`: ringkv engines `SyncPolicy::Always`, fjall
//! `persist(PersistMode::SyncData)` after each put, redb
//! `Durability::Immediate`.
//!
//! Memory budgets are equal where the engines allow: 64 MiB memtable (the
//! LSMs) and 64 MiB of cache (block cache for the LSMs, page cache for
//! redb; redb's own default is 1 GiB).

use std::error::Error;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv::storage::{BTreeEngine, Engine, KeyRange, LsmEngine};
use ringkv::{BTreeConfig, LsmConfig, SyncPolicy};
use ringkv_bench::summary::median;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// The memtable and cache budget each engine is given, where it has one.
const MEMTABLE_BYTES: usize = 64 << 20;
const CACHE_BYTES: usize = 64 << 20;
/// Entries read per `seekrandom` operation.
const SEEK_NEXTS: usize = 10;
/// Settling ends when compaction has been idle this long...
const SETTLE_IDLE: Duration = Duration::from_secs(1);
/// ...or, at the latest, after this long (reported if it happens).
const SETTLE_MAX: Duration = Duration::from_secs(300);

const ALL_ENGINES: [&str; 4] = ["ringkv-lsm", "ringkv-btree", "fjall", "redb"];
const ALL_PHASES: [&str; 8] = [
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "readmissing",
    "seekrandom",
    "readseq",
    "fillsync",
];

/// Storage engines on the db_bench workload: ringkv against fjall and redb.
#[derive(Parser, Debug)]
#[command(name = "storage")]
struct Args {
    /// Keys to fill (and puts in `overwrite`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    num: u64,
    /// Point reads in `readrandom` and `readmissing` (default: `num`);
    /// `seekrandom` makes a tenth as many scans.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    reads: Option<u64>,
    /// Puts in `fillsync`.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    sync_num: u64,
    /// Engines, comma-separated; the first is the one the ratios are of.
    #[arg(long, value_delimiter = ',', default_values_t = ALL_ENGINES.map(String::from))]
    engines: Vec<String>,
    /// Phases, comma-separated, run in this order.
    #[arg(long, value_delimiter = ',', default_values_t = ALL_PHASES.map(String::from))]
    phases: Vec<String>,
    /// Runs per engine; every figure is the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    runs: u64,
    /// Directory for the stores (default: the system's temp dir). Each run
    /// uses a fresh subdirectory, removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Internal: run one engine in this process and print raw results.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.child {
        Some(engine) => run_child(&args, engine),
        None => run_parent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage bench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The workload.

/// Key number `i` of the filled keys (even numbers), as 16 ASCII digits.
fn present_key(i: u64) -> [u8; KEY_BYTES] {
    key_bytes(2 * i)
}

/// A key between two filled ones (odd numbers): absent, but in range.
fn missing_key(i: u64) -> [u8; KEY_BYTES] {
    key_bytes(2 * i + 1)
}

fn key_bytes(n: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    let digits = format!("{n:016}");
    key.copy_from_slice(&digits.as_bytes()[..KEY_BYTES]);
    key
}

/// A value: 50 random bytes, then 50 copies of one byte.
fn fill_value(rng: &mut ChaCha8Rng, value: &mut [u8; VALUE_BYTES]) {
    rng.fill_bytes(&mut value[..VALUE_BYTES / 2]);
    value[VALUE_BYTES / 2..].fill(b'v');
}

// ---------------------------------------------------------------------------
// The engines, behind one small interface.

trait Store {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// The value's length, or `None` when the key is absent.
    fn get(&mut self, key: &[u8]) -> Result<Option<usize>>;
    /// Reads up to `n` entries from `key` on; returns how many there were.
    fn seek(&mut self, key: &[u8], n: usize) -> Result<usize>;
    /// Reads every entry; returns how many there were.
    fn scan_all(&mut self) -> Result<usize>;
    /// Called after each write phase (redb makes its durable commit).
    fn end_of_writes(&mut self) -> Result<()> {
        Ok(())
    }
    /// Flushes, then returns once background work has been idle for
    /// [`SETTLE_IDLE`]; `Ok(false)` if it was still busy at [`SETTLE_MAX`].
    fn settle(&mut self) -> Result<bool>;
    /// The engine's own count of (logical bytes, bytes written to disk),
    /// where it keeps one.
    fn own_write_counts(&self) -> Option<(u64, u64)> {
        None
    }
}

/// Polls `busy_token` until it stays the same, with `idle()` true, for
/// [`SETTLE_IDLE`].
fn wait_until_idle(mut busy_token: impl FnMut() -> (bool, u64)) -> bool {
    let start = Instant::now();
    let mut last = busy_token();
    let mut stable_since = Instant::now();
    while start.elapsed() < SETTLE_MAX {
        std::thread::sleep(Duration::from_millis(100));
        let now = busy_token();
        if now != last || !now.0 {
            stable_since = Instant::now();
            last = now;
        } else if stable_since.elapsed() >= SETTLE_IDLE {
            return true;
        }
    }
    false
}

/// One of ringkv's engines, through the `Engine` trait.
struct RingkvStore {
    engine: Box<dyn Engine>,
}

impl Store for RingkvStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.engine.put(key, value)?)
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.engine.get(key)?.map(|v| v.len()))
    }

    fn seek(&mut self, key: &[u8], n: usize) -> Result<usize> {
        let mut count = 0;
        for item in self.engine.scan(KeyRange::from(key.to_vec()))?.take(n) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn scan_all(&mut self) -> Result<usize> {
        let mut count = 0;
        for item in self.engine.scan(KeyRange::all())? {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn settle(&mut self) -> Result<bool> {
        self.engine.flush()?;
        let engine = &self.engine;
        Ok(wait_until_idle(|| {
            let s = engine.stats();
            // Idle: nothing in memtables and the counters stand still.
            (s.memtable_bytes == 0, s.flushes + s.compactions)
        }))
    }

    fn own_write_counts(&self) -> Option<(u64, u64)> {
        let s = self.engine.stats();
        Some((s.logical_bytes_written, s.disk_bytes_written))
    }
}

struct FjallStore {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
    sync: bool,
}

impl FjallStore {
    fn open(dir: &Path, sync: bool) -> Result<FjallStore> {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE_BYTES as u64)
            .open()?;
        let keyspace = db.keyspace("bench", || {
            fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES as u64)
        })?;
        Ok(FjallStore { db, keyspace, sync })
    }
}

impl Store for FjallStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.keyspace.insert(key, value)?;
        if self.sync {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        Ok(self.keyspace.get(key)?.map(|v| v.len()))
    }

    fn seek(&mut self, key: &[u8], n: usize) -> Result<usize> {
        let mut count = 0;
        for guard in self.keyspace.range(key..).take(n) {
            guard.into_inner()?;
            count += 1;
        }
        Ok(count)
    }

    fn scan_all(&mut self) -> Result<usize> {
        let mut count = 0;
        for guard in self.keyspace.iter() {
            guard.into_inner()?;
            count += 1;
        }
        Ok(count)
    }

    fn settle(&mut self) -> Result<bool> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        self.keyspace.rotate_memtable_and_wait()?;
        let db = &self.db;
        Ok(wait_until_idle(|| {
            let idle = db.outstanding_flushes() == 0 && db.active_compactions() == 0;
            (idle, db.compactions_completed() as u64)
        }))
    }
}

const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("bench");

struct RedbStore {
    db: redb::Database,
    sync: bool,
}

impl RedbStore {
    fn open(dir: &Path, sync: bool) -> Result<RedbStore> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("bench.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(RedbStore { db, sync })
    }

    fn durable_commit(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if self.sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        txn.open_table(REDB_TABLE)?.insert(key, value)?;
        txn.commit()?;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<usize>> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        Ok(table.get(key)?.map(|v| v.value().len()))
    }

    fn seek(&mut self, key: &[u8], n: usize) -> Result<usize> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let mut count = 0;
        for item in table.range::<&[u8]>(key..)?.take(n) {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn scan_all(&mut self) -> Result<usize> {
        use redb::{ReadableDatabase, ReadableTable};
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        let mut count = 0;
        for item in table.iter()? {
            item?;
            count += 1;
        }
        Ok(count)
    }

    fn end_of_writes(&mut self) -> Result<()> {
        self.durable_commit()
    }

    fn settle(&mut self) -> Result<bool> {
        // No background work: the durable commit is all there is.
        self.durable_commit()?;
        Ok(true)
    }
}

fn open_store(engine: &str, dir: &Path, sync: bool) -> Result<Box<dyn Store>> {
    let policy = if sync {
        SyncPolicy::Always
    } else {
        SyncPolicy::None
    };
    Ok(match engine {
        "ringkv-btree" => {
            let config = BTreeConfig {
                sync: policy,
                cache_bytes: CACHE_BYTES,
                ..BTreeConfig::default()
            };
            Box::new(RingkvStore {
                engine: Box::new(BTreeEngine::open(dir, config)?),
            })
        }
        "ringkv-lsm" => {
            let config = LsmConfig {
                sync: policy,
                memtable_bytes: MEMTABLE_BYTES,
                block_cache_bytes: CACHE_BYTES,
                ..LsmConfig::default()
            };
            Box::new(RingkvStore {
                engine: Box::new(LsmEngine::open(dir, config)?),
            })
        }
        "fjall" => Box::new(FjallStore::open(dir, sync)?),
        "redb" => Box::new(RedbStore::open(dir, sync)?),
        other => return Err(format!("unknown engine {other:?}").into()),
    })
}

/// What each engine is configured to hold in memory: (memtable, cache).
fn memory_budget(engine: &str) -> (usize, usize) {
    match engine {
        "ringkv-lsm" | "fjall" => (MEMTABLE_BYTES, CACHE_BYTES),
        _ => (0, CACHE_BYTES),
    }
}

// ---------------------------------------------------------------------------
// The child: one engine, every phase, raw results on stdout.

/// `write_bytes` of `/proc/self/io`.
fn process_write_bytes() -> Result<u64> {
    proc_field("/proc/self/io", "write_bytes:")
}

/// `VmHWM` of `/proc/self/status`, in bytes.
fn peak_rss_bytes() -> Result<u64> {
    Ok(proc_field("/proc/self/status", "VmHWM:")? * 1024)
}

fn proc_field(file: &str, name: &str) -> Result<u64> {
    let text = std::fs::read_to_string(file)?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .ok_or_else(|| format!("no {name} in {file}"))?;
    let number = line[name.len()..]
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("empty {name} in {file}"))?;
    Ok(number.parse()?)
}

/// Bytes allocated on disk by the files under `dir`.
fn allocated_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += allocated_bytes(&entry.path())?;
        } else {
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

/// Reports a phase: its ops and wall time, and the CPU time the whole
/// process (every thread: background flushes and compactions included)
/// spent during it, per operation. CPU time is what a loaded, shared
/// machine distorts least: wall time there includes waiting for a core.
fn emit_phase(phase: &str, ops: u64, elapsed: Duration, cpu_start: f64) {
    println!("PHASE\t{phase}\t{ops}\t{}", elapsed.as_secs_f64());
    if let Ok(cpu) = process_cpu_secs() {
        emit_metric(
            &format!("cpu_us_{phase}"),
            (cpu - cpu_start) * 1e6 / ops.max(1) as f64,
        );
    }
}

/// User and system CPU time of this process so far, every thread, seconds.
fn process_cpu_secs() -> Result<f64> {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is
    // a valid value of it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn emit_metric(name: &str, value: f64) {
    println!("METRIC\t{name}\t{value}");
}

fn run_child(args: &Args, engine: &str) -> Result<()> {
    let root = args.dir.clone().ok_or("the child needs --dir")?;
    let main_dir = root.join("main");
    let reads = args.reads.unwrap_or(args.num);
    let num = args.num;
    let mut store: Option<Box<dyn Store>> = None;
    let mut filled = false;
    // Writes since the last settle, and the write_bytes when they began.
    let mut unsettled: Option<(u64, u64)> = None; // (io at start, logical bytes)
    let mut value = [0u8; VALUE_BYTES];
    let logical_per_put = (KEY_BYTES + VALUE_BYTES) as u64;

    let settle = |store: &mut Box<dyn Store>, unsettled: &mut Option<(u64, u64)>| -> Result<()> {
        let Some((io_start, logical)) = unsettled.take() else {
            return Ok(());
        };
        let own_before = store.own_write_counts();
        let started = Instant::now();
        let idle = store.settle()?;
        emit_metric("settle_secs", started.elapsed().as_secs_f64());
        if !idle {
            eprintln!("{engine}: background work still running after {SETTLE_MAX:?}");
        }
        let written = process_write_bytes()? - io_start;
        emit_metric("write_amp_io", written as f64 / logical as f64);
        let disk = allocated_bytes(&main_dir)?;
        emit_metric("space_amp", disk as f64 / (num * logical_per_put) as f64);
        emit_metric("disk_mib", disk as f64 / (1 << 20) as f64);
        if let (Some(_), Some((own_logical, own_written))) = (own_before, store.own_write_counts())
        {
            if own_logical > 0 {
                emit_metric("write_amp_own", own_written as f64 / own_logical as f64);
            }
        }
        Ok(())
    };

    for phase in &args.phases {
        let phase = phase.as_str();
        let seed = phase
            .bytes()
            .fold(0x5eed_u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match phase {
            "fillseq" | "fillrandom" => {
                drop(store.take());
                if main_dir.exists() {
                    std::fs::remove_dir_all(&main_dir)?;
                }
                let io_start = process_write_bytes()?;
                let mut s = open_store(engine, &main_dir, false)?;
                let order: Vec<u64> = if phase == "fillseq" {
                    (0..num).collect()
                } else {
                    let mut v: Vec<u64> = (0..num).collect();
                    v.shuffle(&mut rng);
                    v
                };
                let started = Instant::now();
                let cpu_start = process_cpu_secs()?;
                for &i in &order {
                    fill_value(&mut rng, &mut value);
                    s.put(&present_key(i), &value)?;
                }
                s.end_of_writes()?;
                emit_phase(phase, num, started.elapsed(), cpu_start);
                // A fresh store: write amplification starts over.
                unsettled = Some((io_start, num * logical_per_put));
                filled = true;
                store = Some(s);
            }
            "overwrite" => {
                let s = store
                    .as_mut()
                    .ok_or("overwrite needs a fill phase before it")?;
                let io_start = process_write_bytes()?;
                let started = Instant::now();
                let cpu_start = process_cpu_secs()?;
                for _ in 0..num {
                    fill_value(&mut rng, &mut value);
                    s.put(&present_key(rng.random_range(0..num)), &value)?;
                }
                s.end_of_writes()?;
                emit_phase(phase, num, started.elapsed(), cpu_start);
                let (io, logical) = unsettled.unwrap_or((io_start, 0));
                unsettled = Some((io, logical + num * logical_per_put));
            }
            "readrandom" | "readmissing" | "seekrandom" | "readseq" => {
                let s = store
                    .as_mut()
                    .filter(|_| filled)
                    .ok_or_else(|| format!("{phase} needs a fill phase before it"))?;
                settle(s, &mut unsettled)?;
                let started = Instant::now();
                let cpu_start = process_cpu_secs()?;
                let ops = match phase {
                    "readrandom" => {
                        for _ in 0..reads {
                            let key = present_key(rng.random_range(0..num));
                            if s.get(&key)? != Some(VALUE_BYTES) {
                                return Err(format!("{engine}: key {key:?} missing").into());
                            }
                        }
                        reads
                    }
                    "readmissing" => {
                        for _ in 0..reads {
                            let key = missing_key(rng.random_range(0..num));
                            if s.get(&key)?.is_some() {
                                return Err(format!("{engine}: absent key {key:?} found").into());
                            }
                        }
                        reads
                    }
                    "seekrandom" => {
                        let seeks = (reads / 10).max(1);
                        for _ in 0..seeks {
                            let i = rng.random_range(0..num);
                            let want = SEEK_NEXTS.min((num - i) as usize);
                            let got = s.seek(&present_key(i), SEEK_NEXTS)?;
                            if got != want {
                                return Err(format!(
                                    "{engine}: seek read {got} entries, not {want}"
                                )
                                .into());
                            }
                        }
                        seeks
                    }
                    _ => {
                        let n = s.scan_all()? as u64;
                        if n != num {
                            return Err(
                                format!("{engine}: full scan saw {n} keys, not {num}").into()
                            );
                        }
                        n
                    }
                };
                emit_phase(phase, ops, started.elapsed(), cpu_start);
            }
            "fillsync" => {
                let dir = root.join("sync");
                let mut s = open_store(engine, &dir, true)?;
                let started = Instant::now();
                let cpu_start = process_cpu_secs()?;
                for i in 0..args.sync_num {
                    fill_value(&mut rng, &mut value);
                    s.put(&present_key(i), &value)?;
                }
                emit_phase(phase, args.sync_num, started.elapsed(), cpu_start);
                drop(s);
                std::fs::remove_dir_all(&dir)?;
            }
            other => return Err(format!("unknown phase {other:?}").into()),
        }
    }
    if let Some(s) = store.as_mut() {
        settle(s, &mut unsettled)?;
    }
    drop(store);
    emit_metric("peak_rss_mib", peak_rss_bytes()? as f64 / (1 << 20) as f64);
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent: a child per engine and run, then the tables.

#[derive(Default)]
struct EngineRuns {
    /// ops/s per phase, one entry per run.
    phases: Vec<(String, Vec<f64>)>,
    metrics: Vec<(String, Vec<f64>)>,
}

fn push(list: &mut Vec<(String, Vec<f64>)>, name: &str, value: f64) {
    match list.iter_mut().find(|(n, _)| n == name) {
        Some((_, values)) => values.push(value),
        None => list.push((name.to_string(), vec![value])),
    }
}

fn lookup(list: &[(String, Vec<f64>)], name: &str) -> Option<f64> {
    list.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| median(v))
}

fn run_parent(args: &Args) -> Result<()> {
    for phase in &args.phases {
        if !ALL_PHASES.contains(&phase.as_str()) {
            return Err(format!("unknown phase {phase:?}; known: {ALL_PHASES:?}").into());
        }
    }
    for engine in &args.engines {
        if !ALL_ENGINES.contains(&engine.as_str()) {
            return Err(format!("unknown engine {engine:?}; known: {ALL_ENGINES:?}").into());
        }
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let exe = std::env::current_exe()?;
    let reads = args.reads.unwrap_or(args.num);
    eprintln!(
        "storage bench: {} keys, {} reads, {} fsync'd puts; engines {:?}; phases {:?}; {} run(s)",
        args.num, reads, args.sync_num, args.engines, args.phases, args.runs
    );
    let mut results: Vec<(String, EngineRuns)> = Vec::new();
    for run in 0..args.runs {
        for engine in &args.engines {
            let dir = tempfile::Builder::new()
                .prefix(&format!("ringkv-storage-bench-{engine}-"))
                .tempdir_in(&base)?;
            let mut child = Command::new(&exe)
                .arg("--child")
                .arg(engine)
                .arg("--num")
                .arg(args.num.to_string())
                .arg("--reads")
                .arg(reads.to_string())
                .arg("--sync-num")
                .arg(args.sync_num.to_string())
                .arg("--phases")
                .arg(args.phases.join(","))
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().ok_or("no child stdout")?;
            let idx = match results.iter().position(|(e, _)| e == engine) {
                Some(i) => i,
                None => {
                    results.push((engine.clone(), EngineRuns::default()));
                    results.len() - 1
                }
            };
            let runs = &mut results[idx].1;
            for line in BufReader::new(stdout).lines() {
                let line = line?;
                let fields: Vec<&str> = line.split('\t').collect();
                match fields.as_slice() {
                    ["PHASE", phase, ops, secs] => {
                        let ops: f64 = ops.parse()?;
                        let secs: f64 = secs.parse()?;
                        let rate = ops / secs.max(1e-9);
                        eprintln!(
                            "  run {} {engine:>12} {phase:>11}: {rate:>12.0} ops/s",
                            run + 1
                        );
                        push(&mut runs.phases, phase, rate);
                    }
                    ["METRIC", name, value] => push(&mut runs.metrics, name, value.parse()?),
                    _ => return Err(format!("unexpected child output {line:?}").into()),
                }
            }
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("{engine} run {} failed: {status}", run + 1).into());
            }
        }
    }
    print!("{}", report(args, &results));
    Ok(())
}

fn report(args: &Args, results: &[(String, EngineRuns)]) -> String {
    let mut out = String::new();
    let reference = results.first().map(|(e, _)| e.as_str()).unwrap_or("");
    let peers: Vec<&str> = results.iter().skip(1).map(|(e, _)| e.as_str()).collect();
    let _ = writeln!(
        out,
        "\nops/s, median of {} run(s); {} keys of 16 B, values of 100 B; ratio = {reference} / peer\n",
        args.runs, args.num
    );
    let _ = write!(out, "| phase |");
    for (engine, _) in results {
        let _ = write!(out, " {engine} |");
    }
    for peer in &peers {
        let _ = write!(out, " {reference} / {peer} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..results.len() + peers.len() {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
    for phase in &args.phases {
        let _ = write!(out, "| {phase} |");
        let rates: Vec<Option<f64>> = results
            .iter()
            .map(|(_, r)| lookup(&r.phases, phase))
            .collect();
        for rate in &rates {
            let _ = match rate {
                Some(r) => write!(out, " {r:.0} |"),
                None => write!(out, " - |"),
            };
        }
        for rate in rates.iter().skip(1) {
            let _ = match (rates[0], rate) {
                (Some(a), Some(b)) if *b > 0.0 => write!(out, " {:.2} |", a / b),
                _ => write!(out, " - |"),
            };
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\nCPU µs per op (user + system, every thread of the engine's process, during the phase), median; ratio = peer / {reference} (above 1: {reference} spends less)\n"
    );
    let _ = write!(out, "| phase |");
    for (engine, _) in results {
        let _ = write!(out, " {engine} |");
    }
    for peer in &peers {
        let _ = write!(out, " {peer} / {reference} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in 0..results.len() + peers.len() {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out);
    for phase in &args.phases {
        let name = format!("cpu_us_{phase}");
        let _ = write!(out, "| {phase} |");
        let cpus: Vec<Option<f64>> = results
            .iter()
            .map(|(_, r)| lookup(&r.metrics, &name))
            .collect();
        for cpu in &cpus {
            let _ = match cpu {
                Some(c) => write!(out, " {c:.2} |"),
                None => write!(out, " - |"),
            };
        }
        for cpu in cpus.iter().skip(1) {
            let _ = match (cpus[0], cpu) {
                (Some(a), Some(b)) if a > 0.0 => write!(out, " {:.2} |", b / a),
                _ => write!(out, " - |"),
            };
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\n| engine | space amp | write amp (process write_bytes) | write amp (engine's count) | disk MiB | settle s | peak RSS MiB | memtable + cache budget MiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (engine, r) in results {
        let show = |name: &str, digits: usize| match lookup(&r.metrics, name) {
            Some(v) => format!("{v:.digits$}"),
            None => "-".to_string(),
        };
        let (memtable, cache) = memory_budget(engine);
        let _ = writeln!(
            out,
            "| {engine} | {} | {} | {} | {} | {} | {} | {} + {} |",
            show("space_amp", 2),
            show("write_amp_io", 2),
            show("write_amp_own", 2),
            show("disk_mib", 1),
            show("settle_secs", 1),
            show("peak_rss_mib", 0),
            memtable >> 20,
            cache >> 20,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_bytes_and_missing_ones_sit_between_present_ones() {
        assert_eq!(&present_key(0), b"0000000000000000");
        assert_eq!(&present_key(3), b"0000000000000006");
        assert_eq!(&missing_key(3), b"0000000000000007");
        assert!(present_key(3) < missing_key(3) && missing_key(3) < present_key(4));
    }

    #[test]
    fn values_are_half_random() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v = [0u8; VALUE_BYTES];
        fill_value(&mut rng, &mut v);
        assert!(v[VALUE_BYTES / 2..].iter().all(|&b| b == b'v'));
        let distinct: std::collections::BTreeSet<u8> =
            v[..VALUE_BYTES / 2].iter().copied().collect();
        assert!(distinct.len() > 20, "{distinct:?}");
    }

    #[test]
    fn proc_fields_parse() {
        assert!(peak_rss_bytes().unwrap() > 0);
        process_write_bytes().unwrap();
    }
}
