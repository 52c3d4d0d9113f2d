//! Configuration of the storage engines: the write-ahead log's sync
//! policy, the LSM and B-tree settings, and which engine a node uses, with
//! the reasons for every default. Re-exported by `config.rs`.

use std::time::Duration;

use crate::error::{Error, Result};

/// When the LSM's write-ahead log reaches the disk, and so what an
/// acknowledged write survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// The log is written to the OS before `write` returns but never
    /// fsync'd by the engine: an acknowledged write survives a crash of the
    /// process, not a crash of the machine (the OS flushes in its own time).
    None,
    /// A background thread fsyncs the log at this interval: a machine crash
    /// loses at most the writes of the last interval (plus one fsync's time).
    Interval(Duration),
    /// `write` returns only after the log holding the batch is fsync'd.
    /// Concurrent writers share one write and one fsync (group commit).
    Always,
}

/// Configuration of the LSM storage engine.
#[derive(Clone, Debug, PartialEq)]
pub struct LsmConfig {
    /// Default [`SyncPolicy::Interval`] of 100 ms. A replicated write is
    /// acknowledged by W nodes, so one machine losing its last 100 ms loses
    /// nothing the cluster promised; only W machines failing together in
    /// that window do. `Always` costs an fsync per group of writes.
    pub sync: SyncPolicy,
    /// A memtable is sealed (and queued for flush) when it holds this many
    /// bytes of keys and values (each entry counted as its key and value
    /// plus 64 bytes). Default 16 MiB, sized for a small node: the heap a
    /// memtable really takes is about 1.4 times its count (skip-list
    /// nodes, allocator rounding and the spare capacity of encoded values;
    /// `docs/memory.md`), and under overwrites it is mostly versions that
    /// the next flush drops, so the 64 MiB of RocksDB's
    /// `write_buffer_size` (the default until issue 13) made a node holding
    /// 100,000 small keys peak at about 145 MiB RSS, 40 MiB of it this
    /// budget's excess. 16 MiB still makes L0 tables of several MiB, and
    /// replays a crashed WAL in a quarter of the time.
    pub memtable_bytes: usize,
    /// Sealed memtables allowed to wait for flush. Writers are slowed (a 1 ms
    /// pause per batch) once half are waiting and wait outright when all are,
    /// until a flush finishes. Default 4: a burst of 4 x 16 MiB is absorbed
    /// while the flusher catches up, and the memtables' worst case stays
    /// (1 + 4) x 16 MiB.
    pub max_sealed_memtables: usize,
    /// Uncompressed size at which an SSTable data block is cut. Default
    /// 4 KiB, the page size: a point read decompresses one small block.
    pub block_bytes: usize,
    /// Bloom filter false-positive rate per table. Default 0.01 (about 10
    /// bits per key, RocksDB's `bloom_bits=10`): a read of an absent key
    /// touches a data block in 1% of the tables it consults.
    pub bloom_false_positive_rate: f64,
    /// Bytes of decompressed blocks the block cache keeps. Default 16 MiB
    /// (64 MiB until issue 13), twice LevelDB's 8 MiB: under uniform
    /// overwrites the cache fills with blocks of every overlapping L0 table,
    /// not only with the live data, so a node holding 100,000 small keys
    /// (about 20 MiB of decompressed blocks) filled 40 to 60 MiB of it
    /// (`docs/memory.md`). Blocks it drops are read again through the OS's
    /// page cache. A replica's read of a key whose blocks are in this cache
    /// or the OS's page cache is served without the blocking pool
    /// (`Engine::get_in_memory`); one that needs the disk is handed to it.
    pub block_cache_bytes: usize,
    /// Level-0 tables that trigger a compaction into level 1. Default 4, as
    /// in LevelDB and RocksDB: L0 tables overlap, so every point read
    /// consults all of them.
    pub l0_compaction_trigger: usize,
    /// Level-0 tables at which writers are slowed. Default 8.
    pub l0_slowdown_tables: usize,
    /// Level-0 tables at which writers wait for compaction. Default 12.
    pub l0_stop_tables: usize,
    /// Each level holds this many times the bytes of the one above. Default
    /// 10, the classic leveled ratio: about 1.1x space amplification.
    pub level_size_ratio: u64,
    /// Target size of level 1 in bytes. Default 256 MiB, RocksDB's
    /// `max_bytes_for_level_base`.
    pub l1_target_bytes: u64,
    /// Compaction output is cut into tables of about this size. Default
    /// 32 MiB: few enough files for a large store, small enough that one
    /// compaction step moves a bounded amount.
    pub target_table_bytes: u64,
    /// Number of levels, L0 included. Default 7 (L6 at 10^5 x L1 is far
    /// beyond one node's disk).
    pub max_levels: usize,
    /// Whether the engine leaves compaction to its owner, who calls
    /// [`crate::Engine::compact`] (a node's Compactor actor does). Default
    /// false: a standalone engine compacts on its own background thread.
    pub external_compaction: bool,
    /// Whether `open` first salvages the directory: verifies every table
    /// and WAL segment, moves damaged ones (and ones the manifest cannot
    /// account for) into `quarantine/` under the engine's directory, never
    /// deleting them, and records a manifest without them. What they held
    /// is then missing from this engine (a node refills it from its
    /// replicas). Default false: open refuses such a directory instead.
    /// See `docs/storage.md`, "Salvage".
    pub salvage: bool,
}

impl Default for LsmConfig {
    fn default() -> Self {
        LsmConfig {
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            memtable_bytes: 16 * 1024 * 1024,
            max_sealed_memtables: 4,
            block_bytes: 4 * 1024,
            bloom_false_positive_rate: 0.01,
            block_cache_bytes: 16 * 1024 * 1024,
            l0_compaction_trigger: 4,
            l0_slowdown_tables: 8,
            l0_stop_tables: 12,
            level_size_ratio: 10,
            l1_target_bytes: 256 * 1024 * 1024,
            target_table_bytes: 32 * 1024 * 1024,
            max_levels: 7,
            external_compaction: false,
            salvage: false,
        }
    }
}

impl LsmConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidInput(format!("lsm config: {why}")));
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return bad("sync interval must be positive (use Always)");
            }
        }
        if self.memtable_bytes < 4 * 1024 {
            return bad("memtable_bytes must be at least 4 KiB");
        }
        if self.max_sealed_memtables == 0 {
            return bad("max_sealed_memtables must be at least 1");
        }
        if !(256..=1024 * 1024).contains(&self.block_bytes) {
            return bad("block_bytes must be in 256..=1048576");
        }
        if !(self.bloom_false_positive_rate > 0.0 && self.bloom_false_positive_rate < 1.0) {
            return bad("bloom_false_positive_rate must be in (0, 1)");
        }
        if self.l0_compaction_trigger == 0
            || self.l0_slowdown_tables < self.l0_compaction_trigger
            || self.l0_stop_tables < self.l0_slowdown_tables
        {
            return bad("need 1 <= l0_compaction_trigger <= l0_slowdown_tables <= l0_stop_tables");
        }
        if self.level_size_ratio < 2 {
            return bad("level_size_ratio must be at least 2");
        }
        if self.target_table_bytes < 4 * 1024 || self.l1_target_bytes < self.target_table_bytes {
            return bad("need 4 KiB <= target_table_bytes <= l1_target_bytes");
        }
        if !(2..=16).contains(&self.max_levels) {
            return bad("max_levels must be in 2..=16");
        }
        Ok(())
    }
}

/// Configuration of the B-tree storage engine (`storage::btree`, over redb).
///
/// redb commits whole transactions copy-on-write: a commit with its
/// `Durability::Immediate` writes the new pages and the commit slot and
/// fsyncs before it returns, and is then durable; a commit with
/// `Durability::None` is visible to later reads at once but is not
/// recoverable after a crash (its pages sit in redb's write buffer, or in
/// the file without a durable commit slot pointing at them) until a later
/// `Immediate` commit, or a clean close, persists it together with every
/// non-durable commit before it. There is no write-ahead log. So the [`SyncPolicy`]
/// maps as follows:
///
/// - [`SyncPolicy::Always`]: every batch commits `Immediate`: fsync'd
///   before `write` returns (an fsync per batch: redb has no group commit).
/// - [`SyncPolicy::Interval`]`(d)`: batches commit `None`; a background
///   thread makes an empty `Immediate` commit every `d` when anything was
///   written. A crash of the process or of the machine loses at most the
///   batches of the last `d` (unlike the LSM, where a process crash loses
///   nothing, since its log is already in the OS).
/// - [`SyncPolicy::None`]: batches commit `None`; the same background
///   checkpoint runs every [`BTreeConfig::checkpoint_interval`]. redb cannot
///   reuse pages freed by a non-durable commit until a durable one, so some
///   periodic durable commit is needed to bound the file's growth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BTreeConfig {
    /// Default [`SyncPolicy::Interval`] of 100 ms, the same as the LSM's and
    /// for the same reason: W replicas acknowledge a write, so one machine
    /// losing its last 100 ms loses nothing the cluster promised.
    pub sync: SyncPolicy,
    /// How often a durable (fsync'd) commit persists the non-durable ones
    /// under [`SyncPolicy::None`]. Default 1 s: one fsync a second is noise
    /// next to the writes themselves, and it bounds both what a crash loses
    /// and how many freed pages wait to be reused.
    pub checkpoint_interval: Duration,
    /// Bytes of pages redb caches in memory (reads and not yet written
    /// pages). Default 16 MiB, the same budget as the LSM's block cache, so
    /// the two engines compare at equal memory (both were 64 MiB until issue
    /// 13, `docs/memory.md`). redb's own default is 1 GiB.
    pub cache_bytes: usize,
    /// Whether every open verifies the checksum of every page (redb's
    /// `set_check_integrity_on_open`). Default true: redb documents that a
    /// plain open of a file altered outside redb "may panic", and the
    /// engine contract is an `Error::Corruption`, never a panic. The price
    /// is one full read of the file at each open (about a second per GB).
    /// Pages are not verified again on later reads.
    pub verify_on_open: bool,
}

impl Default for BTreeConfig {
    fn default() -> Self {
        BTreeConfig {
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            checkpoint_interval: Duration::from_secs(1),
            cache_bytes: 16 * 1024 * 1024,
            verify_on_open: true,
        }
    }
}

impl BTreeConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(Error::InvalidInput(
                    "btree config: sync interval must be positive (use Always)".into(),
                ));
            }
        }
        if self.checkpoint_interval.is_zero() {
            return Err(Error::InvalidInput(
                "btree config: checkpoint_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Where a node keeps its data.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageConfig {
    /// In memory only: lost when the process ends. For experiments with
    /// many nodes in one process.
    Memory,
    /// The LSM engine in `dir`.
    Lsm {
        /// The engine's directory (created if missing).
        dir: std::path::PathBuf,
        /// The engine's settings.
        config: LsmConfig,
    },
    /// The B-tree engine (redb) in `dir`.
    BTree {
        /// The engine's directory (created if missing).
        dir: std::path::PathBuf,
        /// The engine's settings.
        config: BTreeConfig,
    },
}

impl StorageConfig {
    /// The engine's name: `"memory"`, `"lsm"` or `"btree"`.
    pub fn engine_name(&self) -> &'static str {
        match self {
            StorageConfig::Memory => "memory",
            StorageConfig::Lsm { .. } => "lsm",
            StorageConfig::BTree { .. } => "btree",
        }
    }
}
