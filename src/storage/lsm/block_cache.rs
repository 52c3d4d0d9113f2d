//! The block cache: decompressed, validated SSTable data blocks shared by
//! every table of an engine, bounded by bytes.
//!
//! Keyed by `(table id, block offset)`, holding `Arc<Block>` so that an
//! iterator keeps its block alive after eviction. Eviction and sharding are
//! `quick_cache`'s (CLOCK-Pro-like, weighted by each block's bytes); two
//! threads missing the same block at once read it once, the second waits for
//! the first. The cache also counts hits, misses and bloom-filter skips,
//! which the engine reports in its stats.
//!
//! It does not read files: a table passes the loader that reads and decodes
//! a block on a miss. A block that fails to decode is never cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::storage::lsm::sstable::Block;

/// `(table id, block offset)`.
type BlockKey = (u64, u64);

/// Charges each block what it holds in memory.
#[derive(Clone, Copy, Debug)]
struct BlockWeighter;

impl quick_cache::Weighter<BlockKey, Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &BlockKey, block: &Arc<Block>) -> u64 {
        block.charge() as u64
    }
}

/// A byte-bounded cache of decompressed data blocks, shared as `Arc<BlockCache>`.
pub struct BlockCache {
    /// `None` when the capacity is zero: every read goes to the file.
    cache: Option<quick_cache::sync::Cache<BlockKey, Arc<Block>, BlockWeighter>>,
    hits: AtomicU64,
    misses: AtomicU64,
    bloom_skips: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("bytes", &self.bytes())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .field("bloom_skips", &self.bloom_skips())
            .finish()
    }
}

impl BlockCache {
    /// A cache holding at most about `capacity_bytes` of decompressed
    /// blocks (`LsmConfig::block_cache_bytes`). Zero disables caching.
    pub fn new(capacity_bytes: usize) -> Arc<Self> {
        let cache = (capacity_bytes > 0).then(|| {
            // quick_cache sizes its tables from an item estimate: blocks are
            // about 4 KiB.
            let estimated_items = (capacity_bytes / 4096).max(16);
            quick_cache::sync::Cache::with_weighter(
                estimated_items,
                capacity_bytes as u64,
                BlockWeighter,
            )
        });
        Arc::new(BlockCache {
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bloom_skips: AtomicU64::new(0),
        })
    }

    /// Bytes of blocks held now.
    pub fn bytes(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }

    /// Block reads answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Block reads that went to the file.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Point reads ([`Table::get`](crate::storage::lsm::sstable::Table::get))
    /// answered "absent" by a table's bloom filter without reading a block,
    /// summed over every table using this cache.
    pub fn bloom_skips(&self) -> u64 {
        self.bloom_skips.load(Ordering::Relaxed)
    }

    /// The block at `offset` of table `table_id` if the cache holds it
    /// (counted as a hit); `None`, counted as nothing, when it does not:
    /// the caller then either loads it ([`Self::get_or_load`], a miss) or
    /// leaves the read to a thread that may wait on the disk.
    pub(crate) fn get_cached(&self, table_id: u64, offset: u64) -> Option<Arc<Block>> {
        let block = self.cache.as_ref()?.get(&(table_id, offset))?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(block)
    }

    /// Counts one bloom-filter skip.
    pub(crate) fn record_bloom_skip(&self) {
        self.bloom_skips.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops every cached block of table `table_id`, for when the table's
    /// file is deleted after a compaction. Optional: unused blocks age out.
    pub fn forget_table(&self, table_id: u64) {
        if let Some(c) = &self.cache {
            c.retain(|(id, _), _| *id != table_id);
        }
    }

    /// The block at `offset` of table `table_id`, from the cache or from
    /// `load` (whose result is then cached). An error from `load` is
    /// returned and nothing is cached.
    pub(crate) fn get_or_load(
        &self,
        table_id: u64,
        offset: u64,
        load: impl FnOnce() -> Result<Arc<Block>>,
    ) -> Result<Arc<Block>> {
        let Some(cache) = &self.cache else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return load();
        };
        let mut missed = false;
        let block = cache.get_or_insert_with(&(table_id, offset), || {
            missed = true;
            load()
        });
        let counter = if missed { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        block
    }

    /// Like [`get_or_load`](Self::get_or_load) but a loaded block is not
    /// inserted: a compaction reads every block of its inputs once, and
    /// caching them would evict the blocks point reads need.
    pub(crate) fn get_or_load_uncached(
        &self,
        table_id: u64,
        offset: u64,
        load: impl FnOnce() -> Result<Arc<Block>>,
    ) -> Result<Arc<Block>> {
        if let Some(block) = self.cache.as_ref().and_then(|c| c.get(&(table_id, offset))) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(block);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        load()
    }
}
