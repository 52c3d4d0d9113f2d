//! Reading a table: open (verify footer, index, bloom filter), point
//! lookups and iteration, every data block read through the block cache.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bloomfilter::Bloom;

use super::block::{self, Block, EntryRef};
use super::{corruption, decode_index, Footer, Index, TableInfo, FOOTER_BYTES, MAX_BLOOM_HASHES};
use crate::error::{Error, Result};
use crate::storage::lsm::block_cache::BlockCache;
use crate::storage::lsm::iterators::StorageIterator;

/// An open, immutable table. `Send + Sync`, shared as `Arc<Table>`; reads
/// use positioned I/O, so any number of threads read it at once.
pub struct Table {
    path: PathBuf,
    file: File,
    info: TableInfo,
    index: Index,
    bloom: Bloom<[u8]>,
    cache: Arc<BlockCache>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("info", &self.info)
            .field("blocks", &self.index.len())
            .finish()
    }
}

/// Reads exactly `len` bytes at `offset`.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, offset)?;
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < len {
            let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
    }
    Ok(buf)
}

/// `len` bytes at `offset` if the OS's page cache holds all of them, read
/// without waiting on the disk (`preadv2` with `RWF_NOWAIT`, Linux 4.14 and
/// later); `None` when any would have to come from the disk, or when the
/// system or file system cannot tell (then the caller reads as usual, on a
/// thread that may wait).
fn read_at_if_cached(file: &File, offset: u64, len: usize) -> Option<Vec<u8>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let offset = libc::off_t::try_from(offset).ok()?;
        let mut buf = vec![0u8; len];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        // SAFETY: `iov` describes `buf`, which is alive and writable for
        // `len` bytes throughout the call; the descriptor is `file`'s, open
        // while `file` is borrowed.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        // A short read: part of the range is not cached (the index keeps
        // every block inside the file).
        (usize::try_from(n).ok()? == len).then_some(buf)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        None
    }
}

/// A key's entry in a table: its sequence number and value (`None` for a
/// tombstone).
pub type Entry = (u64, Option<Vec<u8>>);

impl Table {
    /// Opens the table at `path` under the engine's id `id`. Verifies the
    /// footer (magic, checksum, version), the layout it describes, and the
    /// checksums and structure of the index and the bloom filter; anything
    /// wrong is [`Error::Corruption`] naming the file and the offset of the
    /// bad piece.
    pub fn open(path: &Path, id: u64, cache: Arc<BlockCache>) -> Result<Arc<Table>> {
        let io = |e| Error::io(format!("opening table {}", path.display()), e);
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let Some(footer_offset) = file_len.checked_sub(FOOTER_BYTES as u64) else {
            return Err(corruption(
                path,
                0,
                format!("file of {file_len} bytes is shorter than the {FOOTER_BYTES}-byte footer"),
            ));
        };
        let raw = read_at(&file, footer_offset, FOOTER_BYTES).map_err(io)?;
        let mut footer_bytes = [0u8; FOOTER_BYTES];
        footer_bytes.copy_from_slice(&raw);
        let footer =
            Footer::decode(&footer_bytes).map_err(|r| corruption(path, footer_offset, r))?;
        let index_end = footer.index_offset.checked_add(footer.index_len);
        let bloom_end = footer.bloom_offset.checked_add(footer.bloom_len);
        if index_end != Some(footer.bloom_offset) || bloom_end != Some(footer_offset) {
            return Err(corruption(
                path,
                footer_offset,
                format!(
                    "footer places index at {}+{} and bloom at {}+{}, which do not tile the {file_len}-byte file",
                    footer.index_offset, footer.index_len, footer.bloom_offset, footer.bloom_len
                ),
            ));
        }
        if footer.tombstones > footer.entries {
            return Err(corruption(
                path,
                footer_offset,
                "more tombstones than entries",
            ));
        }

        // Both lengths are now within the file, so the reads are bounded by
        // the bytes that exist.
        let index_bytes =
            read_at(&file, footer.index_offset, footer.index_len as usize).map_err(io)?;
        let index = block::verify_checksum(&index_bytes)
            .and_then(|body| decode_index(body, footer.index_offset))
            .map_err(|r| corruption(path, footer.index_offset, format!("index: {r}")))?;
        if (index.len() as u64) > footer.entries {
            return Err(corruption(
                path,
                footer.index_offset,
                "more blocks than entries",
            ));
        }

        let bloom_bytes =
            read_at(&file, footer.bloom_offset, footer.bloom_len as usize).map_err(io)?;
        let bloom = block::verify_checksum(&bloom_bytes)
            .and_then(|body| Bloom::from_slice(body).map_err(|e| e.to_string()))
            .and_then(|bloom: Bloom<[u8]>| {
                // A zero-bit filter would divide by zero on lookup (the
                // crate's `is_empty` means "no bit set", not "no bits");
                // the crate always makes at least one byte.
                if bloom.len() < 8 || bloom.number_of_hash_functions() > MAX_BLOOM_HASHES {
                    Err(format!(
                        "{} bits and {} hash functions is not a filter this code writes",
                        bloom.len(),
                        bloom.number_of_hash_functions()
                    ))
                } else {
                    Ok(bloom)
                }
            })
            .map_err(|r| corruption(path, footer.bloom_offset, format!("bloom filter: {r}")))?;

        let largest = index.last_key(index.len() - 1).to_vec();
        let info = TableInfo {
            id,
            file_bytes: file_len,
            entries: footer.entries,
            tombstones: footer.tombstones,
            smallest: index.smallest.clone(),
            largest,
            max_seq: footer.max_seq,
        };
        Ok(Arc::new(Table {
            path: path.to_path_buf(),
            file,
            info,
            index,
            bloom,
            cache,
        }))
    }

    /// What the table holds.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// The table's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of data blocks.
    pub fn blocks(&self) -> usize {
        self.index.len()
    }

    /// Whether the bloom filter admits `key` (false means certainly absent).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.bloom.check(key)
    }

    /// The entry for `key`: `Some((seq, Some(value)))`, `Some((seq, None))`
    /// for a tombstone, `None` when the table has no entry for the key.
    /// Checks the key range, then the bloom filter, then reads one block.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let Some(i) = self.block_that_may_hold(key) else {
            return Ok(None);
        };
        let block = self.read_block(i, true)?;
        self.find_in(i, &block, key)
    }

    /// As [`Self::get`], when memory holds the block the read needs (the
    /// block cache, or the OS's page cache: the block is then decoded and
    /// cached); `None` when it would have to come from the disk, or does
    /// not decode (a [`Self::get`] then reads it again and reports that).
    pub fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Entry>>> {
        let Some(i) = self.block_that_may_hold(key) else {
            return Some(Ok(None));
        };
        let block = self.block_in_memory(i)?;
        Some(self.find_in(i, &block, key))
    }

    /// Block `i` if memory holds it: the block cache, or the OS's page
    /// cache (read without waiting, then cached).
    fn block_in_memory(&self, i: usize) -> Option<Arc<Block>> {
        let entry = self.index.handles.get(i)?;
        if let Some(block) = self.cache.get_cached(self.info.id, entry.offset) {
            return Some(block);
        }
        let stored = read_at_if_cached(&self.file, entry.offset, entry.len as usize)?;
        self.cache
            .get_or_load(self.info.id, entry.offset, || self.decode_block(i, stored))
            .ok()
    }

    /// The index of the one block that may hold `key`, or `None` when the
    /// key range, the bloom filter (its negative answer counted in
    /// [`BlockCache::bloom_skips`]) or the index rule it out.
    fn block_that_may_hold(&self, key: &[u8]) -> Option<usize> {
        if key < self.info.smallest.as_slice() || key > self.info.largest.as_slice() {
            return None;
        }
        if !self.bloom.check(key) {
            self.cache.record_bloom_skip();
            return None;
        }
        let i = self.block_for(key);
        (i < self.index.len()).then_some(i)
    }

    /// The entry of exactly `key` in block `i`, as [`Self::get`] gives it.
    fn find_in(&self, i: usize, block: &Block, key: &[u8]) -> Result<Option<Entry>> {
        // The key found is rebuilt in a per-thread buffer: a point lookup
        // then allocates only the value it returns.
        thread_local! {
            static FOUND: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        FOUND.with(|buf| {
            let mut buf = buf.borrow_mut();
            let entry = block
                .seek(key, &mut buf)
                .map_err(|r| self.block_corruption(i, r))?;
            Ok(match entry {
                Some(e) if buf.as_slice() == key => {
                    Some((e.seq, e.value.map(|r| block.slice(r).to_vec())))
                }
                _ => None,
            })
        })
    }

    /// An iterator positioned at the table's first entry.
    pub fn iter(self: &Arc<Self>) -> Result<TableIter> {
        let mut it = TableIter::new(self.clone(), true);
        it.load_block(0)?;
        it.step()?;
        Ok(it)
    }

    /// An iterator over every entry, as [`iter`](Self::iter), that uses
    /// blocks already cached but does not cache the blocks it reads: for
    /// compaction, whose one pass over its inputs would otherwise evict the
    /// blocks point reads use.
    pub fn iter_uncached(self: &Arc<Self>) -> Result<TableIter> {
        let mut it = TableIter::new(self.clone(), false);
        it.load_block(0)?;
        it.step()?;
        Ok(it)
    }

    /// An iterator positioned at the first entry whose key is `>= key`
    /// (invalid when there is none).
    pub fn iter_from(self: &Arc<Self>, key: &[u8]) -> Result<TableIter> {
        let mut it = TableIter::new(self.clone(), true);
        let i = self.block_for(key);
        if i == self.index.len() {
            return Ok(it);
        }
        it.load_block(i)?;
        let Some(block) = it.block.clone() else {
            return Ok(it);
        };
        match block.seek(key, &mut it.key) {
            Ok(Some(e)) => it.set(e),
            Ok(None) => {
                // The block's last key is >= key, so this cannot happen in a
                // well-formed table; moving on is still correct.
                it.next_pos = block.entries_end();
                it.step()?;
            }
            Err(r) => return Err(self.block_corruption(i, r)),
        }
        Ok(it)
    }

    /// Index of the first block whose last key is `>= key` (`blocks()` if none).
    fn block_for(&self, key: &[u8]) -> usize {
        self.index.block_for(key)
    }

    fn block_corruption(&self, i: usize, reason: String) -> Error {
        let offset = self.index.handles.get(i).map_or(0, |b| b.offset);
        corruption(&self.path, offset, format!("data block {i}: {reason}"))
    }

    /// Block `i` from its stored bytes: verified, decompressed.
    fn decode_block(&self, i: usize, stored: Vec<u8>) -> Result<Arc<Block>> {
        block::decode_stored_owned(stored)
            .map(Arc::new)
            .map_err(|r| self.block_corruption(i, r))
    }

    /// Block `i`, from the cache or from the file (verified, decompressed);
    /// a block read from the file is cached when `fill_cache` is set.
    fn read_block(&self, i: usize, fill_cache: bool) -> Result<Arc<Block>> {
        let Some(entry) = self.index.handles.get(i) else {
            return Err(Error::InvalidInput(format!("no block {i} in table")));
        };
        let load = || {
            // The index checked that every block lies inside the data region.
            let stored = read_at(&self.file, entry.offset, entry.len as usize)
                .map_err(|e| Error::io(format!("reading table {}", self.path.display()), e))?;
            self.decode_block(i, stored)
        };
        if fill_cache {
            self.cache.get_or_load(self.info.id, entry.offset, load)
        } else {
            self.cache
                .get_or_load_uncached(self.info.id, entry.offset, load)
        }
    }
}

/// A cursor over one table's entries in key order. Owns an `Arc<Table>`
/// and the current block, so it outlives the table's removal from the
/// engine's table set and the block's eviction from the cache.
pub struct TableIter {
    table: Arc<Table>,
    /// Index of the block held in `block`.
    block_idx: usize,
    block: Option<Arc<Block>>,
    /// Offset in the block of the entry after the current one.
    next_pos: usize,
    key: Vec<u8>,
    seq: u64,
    value: Option<(usize, usize)>,
    valid: bool,
    /// Whether blocks read from the file go into the cache.
    fill_cache: bool,
}

impl std::fmt::Debug for TableIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableIter")
            .field("table", &self.table.path)
            .field("block", &self.block_idx)
            .field("valid", &self.valid)
            .finish()
    }
}

impl TableIter {
    fn new(table: Arc<Table>, fill_cache: bool) -> Self {
        TableIter {
            table,
            block_idx: 0,
            block: None,
            next_pos: 0,
            key: Vec::new(),
            seq: 0,
            value: None,
            valid: false,
            fill_cache,
        }
    }

    fn load_block(&mut self, i: usize) -> Result<()> {
        match self.table.read_block(i, self.fill_cache) {
            Ok(b) => {
                self.block = Some(b);
                self.block_idx = i;
                self.next_pos = 0;
                self.key.clear();
                Ok(())
            }
            Err(e) => {
                self.invalidate();
                Err(e)
            }
        }
    }

    fn set(&mut self, e: EntryRef) {
        self.seq = e.seq;
        self.value = e.value;
        self.next_pos = e.next;
        self.valid = true;
    }

    fn invalidate(&mut self) {
        self.valid = false;
        self.block = None;
    }

    /// Moves to the entry at `next_pos`, crossing into later blocks as needed.
    fn step(&mut self) -> Result<()> {
        loop {
            let Some(block) = &self.block else {
                self.valid = false;
                return Ok(());
            };
            if self.next_pos < block.entries_end() {
                match block.read_entry(self.next_pos, &mut self.key) {
                    Ok(e) => {
                        self.set(e);
                        return Ok(());
                    }
                    Err(r) => {
                        let err = self.table.block_corruption(self.block_idx, r);
                        self.invalidate();
                        return Err(err);
                    }
                }
            }
            let next = self.block_idx + 1;
            if next >= self.table.index.len() {
                self.invalidate();
                return Ok(());
            }
            self.load_block(next)?;
        }
    }
}

impl StorageIterator for TableIter {
    fn is_valid(&self) -> bool {
        self.valid
    }

    fn key(&self) -> &[u8] {
        &self.key
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn value(&self) -> Option<&[u8]> {
        let block = self.block.as_ref()?;
        self.value.map(|r| block.slice(r))
    }

    fn next(&mut self) -> Result<()> {
        if !self.valid {
            return Ok(());
        }
        self.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::sstable::{TableBuilder, TableOptions};

    type Entry = crate::storage::lsm::sstable::OwnedEntry;

    fn key(i: usize) -> Vec<u8> {
        format!("key-{:08}", i * 2).into_bytes()
    }

    fn entries(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| {
                let v =
                    (i % 7 != 3).then(|| format!("value of {i} ").repeat(1 + i % 4).into_bytes());
                (key(i), 1000 + i as u64, v)
            })
            .collect()
    }

    fn build(dir: &Path, id: u64, entries: &[Entry], opts: &TableOptions) -> TableInfo {
        let path = dir.join(format!("{id}.sst"));
        let mut b = TableBuilder::create(&path, id, opts, entries.len()).unwrap();
        for (k, s, v) in entries {
            b.add(k, *s, v.as_deref()).unwrap();
        }
        assert_eq!(b.entries(), entries.len() as u64);
        b.finish().unwrap()
    }

    fn collect(mut it: TableIter) -> Vec<Entry> {
        crate::storage::lsm::iterators::drain(&mut it).unwrap()
    }

    #[test]
    fn a_table_round_trips_through_get_and_iter() {
        let dir = tempfile::tempdir().unwrap();
        let data = entries(2000);
        let info = build(dir.path(), 7, &data, &TableOptions::default());
        assert_eq!(info.entries, 2000);
        assert_eq!(
            info.tombstones,
            data.iter().filter(|e| e.2.is_none()).count() as u64
        );
        assert_eq!(info.smallest, key(0));
        assert_eq!(info.largest, key(1999));
        assert_eq!(info.max_seq, 2999);
        let path = dir.path().join("7.sst");
        assert_eq!(info.file_bytes, std::fs::metadata(&path).unwrap().len());

        let table = Table::open(&path, 7, BlockCache::new(1 << 20)).unwrap();
        assert_eq!(table.info(), &info);
        assert!(table.blocks() > 10, "{} blocks", table.blocks());
        for (k, s, v) in &data {
            assert_eq!(table.get(k).unwrap(), Some((*s, v.clone())));
        }
        assert_eq!(collect(table.iter().unwrap()), data);
    }

    #[test]
    fn iter_from_positions_at_the_first_key_not_below() {
        let dir = tempfile::tempdir().unwrap();
        let data = entries(500);
        build(dir.path(), 1, &data, &TableOptions::default());
        let table = Table::open(&dir.path().join("1.sst"), 1, BlockCache::new(1 << 20)).unwrap();
        for i in [0, 1, 15, 16, 17, 100, 250, 499] {
            assert_eq!(collect(table.iter_from(&key(i)).unwrap()), data[i..]);
            // A key between i-1 and i (keys are even numbers).
            let between = format!("key-{:08}", i * 2 - usize::from(i > 0)).into_bytes();
            assert_eq!(collect(table.iter_from(&between).unwrap())[0], data[i]);
        }
        assert_eq!(collect(table.iter_from(b"").unwrap()), data);
        assert!(!table.iter_from(b"zzz").unwrap().is_valid());
        assert!(!table.iter_from(&key(500)).unwrap().is_valid());
    }

    #[test]
    fn absent_keys_are_none_and_mostly_skipped_by_the_bloom_filter() {
        let dir = tempfile::tempdir().unwrap();
        let n = 10_000;
        let data = entries(n);
        build(dir.path(), 1, &data, &TableOptions::default());
        let cache = BlockCache::new(1 << 20);
        let table = Table::open(&dir.path().join("1.sst"), 1, cache.clone()).unwrap();
        // No false negatives.
        assert!(data.iter().all(|(k, _, _)| table.may_contain(k)));
        // Odd numbers are absent and inside the key range.
        let probes = 20_000;
        let mut false_positives = 0;
        for i in 0..probes {
            // (n - 1) keeps every probe below the largest key.
            let k = format!("key-{:08}", (i % (n - 1)) * 2 + 1).into_bytes();
            false_positives += usize::from(table.may_contain(&k));
            assert_eq!(table.get(&k).unwrap(), None);
        }
        let rate = false_positives as f64 / probes as f64;
        assert!(rate < 0.03, "false positive rate {rate}");
        assert_eq!(cache.bloom_skips(), (probes - false_positives) as u64);
        // Out of range: answered without the filter.
        assert_eq!(table.get(b"a").unwrap(), None);
        assert_eq!(table.get(b"z").unwrap(), None);
    }

    #[test]
    fn blocks_are_cached_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let data = entries(100);
        build(dir.path(), 3, &data, &TableOptions::default());
        let cache = BlockCache::new(1 << 20);
        let table = Table::open(&dir.path().join("3.sst"), 3, cache.clone()).unwrap();
        table.get(&key(0)).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        table.get(&key(1)).unwrap();
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert!(cache.bytes() > 0);
        cache.forget_table(3);
        assert_eq!(cache.bytes(), 0);
        // A compaction scan reads every block without caching them.
        let misses = cache.misses();
        assert_eq!(collect(table.iter_uncached().unwrap()), data);
        assert_eq!(cache.misses() - misses, table.blocks() as u64);
        assert_eq!(cache.bytes(), 0);
        // A zero-byte cache reads the file every time and still answers.
        let uncached = BlockCache::new(0);
        let table = Table::open(&dir.path().join("3.sst"), 3, uncached.clone()).unwrap();
        assert_eq!(
            table.get(&key(5)).unwrap(),
            Some((data[5].1, data[5].2.clone()))
        );
        assert_eq!(collect(table.iter().unwrap()), data);
        assert_eq!(uncached.hits(), 0);
        assert_eq!(uncached.bytes(), 0);
    }

    #[test]
    fn a_value_larger_than_a_block_makes_a_larger_block() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0xabu8; 100_000];
        let data = vec![
            (b"a".to_vec(), 1, Some(b"small".to_vec())),
            (b"b".to_vec(), 2, Some(big)),
            (b"c".to_vec(), 3, None),
        ];
        build(dir.path(), 1, &data, &TableOptions::default());
        let table = Table::open(&dir.path().join("1.sst"), 1, BlockCache::new(1 << 20)).unwrap();
        assert_eq!(collect(table.iter().unwrap()), data);
        assert_eq!(table.get(b"b").unwrap(), Some((2, data[1].2.clone())));
        assert_eq!(table.get(b"c").unwrap(), Some((3, None)));
    }

    #[test]
    fn the_builder_refuses_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let opts = TableOptions::default();
        let path = dir.path().join("1.sst");
        let mut b = TableBuilder::create(&path, 1, &opts, 10).unwrap();
        b.add(b"b", 1, Some(b"x")).unwrap();
        assert!(matches!(b.add(b"b", 2, None), Err(Error::InvalidInput(_))));
        assert!(matches!(b.add(b"a", 2, None), Err(Error::InvalidInput(_))));
        let huge_key = vec![b'z'; crate::storage::MAX_KEY_BYTES + 1];
        assert!(matches!(
            b.add(&huge_key, 2, None),
            Err(Error::InvalidInput(_))
        ));
        b.abandon().unwrap();
        assert!(!path.exists());
        // An empty table is refused; a table is never overwritten.
        let b = TableBuilder::create(&path, 1, &opts, 0).unwrap();
        assert!(matches!(b.finish(), Err(Error::InvalidInput(_))));
        assert!(TableBuilder::create(&path, 1, &opts, 0).is_err());
        let bad = TableOptions {
            block_bytes: 4096,
            bloom_false_positive_rate: 1.5,
        };
        assert!(TableBuilder::create(&dir.path().join("2.sst"), 2, &bad, 1).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        /// Any sorted entries, any block size: get finds each entry, iter
        /// yields them all, iter_from starts at the first key not below.
        #[test]
        fn random_tables_round_trip(
            map in proptest::collection::btree_map(
                proptest::collection::vec(0u8..4, 0..6),
                (proptest::prelude::any::<u64>(), proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300))),
                1..200,
            ),
            block_bytes in 64usize..2048,
            probe in proptest::collection::vec(0u8..4, 0..6),
        ) {
            let data: Vec<Entry> = map.into_iter().map(|(k, (s, v))| (k, s, v)).collect();
            let dir = tempfile::tempdir().unwrap();
            let opts = TableOptions { block_bytes, bloom_false_positive_rate: 0.01 };
            build(dir.path(), 1, &data, &opts);
            let table = Table::open(&dir.path().join("1.sst"), 1, BlockCache::new(1 << 20)).unwrap();
            for (k, s, v) in &data {
                proptest::prop_assert_eq!(table.get(k).unwrap(), Some((*s, v.clone())));
            }
            proptest::prop_assert_eq!(collect(table.iter().unwrap()), data.clone());
            let from: Vec<Entry> = data.iter().filter(|e| e.0 >= probe).cloned().collect();
            proptest::prop_assert_eq!(collect(table.iter_from(&probe).unwrap()), from);
            let expected = data.iter().find(|e| e.0 == probe).map(|e| (e.1, e.2.clone()));
            proptest::prop_assert_eq!(table.get(&probe).unwrap(), expected);
        }
    }

    #[test]
    fn many_threads_read_one_table() {
        let dir = tempfile::tempdir().unwrap();
        let data = Arc::new(entries(3000));
        build(dir.path(), 1, &data, &TableOptions::default());
        // A small cache so that blocks are evicted and re-read concurrently.
        let table = Table::open(&dir.path().join("1.sst"), 1, BlockCache::new(16 * 1024)).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (table, data) = (table.clone(), data.clone());
                std::thread::spawn(move || {
                    for (k, s, v) in data.iter().skip(t).step_by(3) {
                        assert_eq!(table.get(k).unwrap(), Some((*s, v.clone())));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
