//! SSTables: immutable sorted files of entries, written once by a
//! [`TableBuilder`] and read by a [`Table`].
//!
//! A table holds at most one entry per user key: the key, the sequence
//! number of the write and the value, or a tombstone. Its layout, front to
//! back (all integers little-endian, every piece checksummed with crc32
//! IEEE from `crc32fast`; `docs/storage.md` has the exact bytes):
//!
//! ```text
//! [data block 0] ... [data block n-1] [index block] [bloom block] [footer, 72 bytes]
//! ```
//!
//! - Data blocks: entries with prefix-compressed keys and restart points,
//!   cut once their uncompressed size reaches `block_bytes`, lz4-compressed
//!   when that saves at least 1/8 (see [`block`]).
//! - Index block: the smallest key of the table, then for each data block
//!   its last key, offset and stored length; a lookup binary-searches it.
//! - Bloom block: the `bloomfilter` crate's serialized filter over every key,
//!   built with a fixed seed so the stored filter is reproducible.
//! - Footer: offsets and lengths of index and bloom, entry counts, the
//!   largest sequence number, the format version, its own checksum and the
//!   magic number.
//!
//! Opening a table verifies the footer, the index and the bloom filter and
//! keeps them in memory; data blocks are verified each time they are read
//! from the file and then cached decompressed in the shared [`BlockCache`].
//! Any mismatch is [`Error::Corruption`] with the file and the offset of the
//! bad piece: never a wrong value, never a panic.
//!
//! ```
//! use ringkv::storage::lsm::block_cache::BlockCache;
//! use ringkv::storage::lsm::iterators::StorageIterator;
//! use ringkv::storage::lsm::sstable::{Table, TableBuilder, TableOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("1.sst");
//! let mut builder = TableBuilder::create(&path, 1, &TableOptions::default(), 2)?;
//! builder.add(b"apple", 7, Some(b"red"))?;
//! builder.add(b"pear", 9, None)?; // a tombstone
//! let info = builder.finish()?;
//! assert_eq!((info.entries, info.tombstones, info.max_seq), (2, 1, 9));
//!
//! let table = Table::open(&path, 1, BlockCache::new(1 << 20))?;
//! assert_eq!(table.get(b"apple")?, Some((7, Some(b"red".to_vec()))));
//! assert_eq!(table.get(b"pear")?, Some((9, None)));
//! assert_eq!(table.get(b"plum")?, None);
//! let it = table.iter_from(b"b")?;
//! assert_eq!((it.key(), it.value()), (&b"pear"[..], None));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not here: merging tables, choosing what to compact, deleting files (the
//! engine's), and the on-disk bloom hash is the `bloomfilter` crate's
//! SipHash of the key as `[u8]` (which includes the length as a `usize`), so
//! tables are read back only on platforms with the same pointer width.

mod block;
mod builder;
mod table;

pub use block::{Block, MAX_BLOCK_BYTES, RESTART_INTERVAL};
pub use builder::TableBuilder;
pub use table::{Table, TableIter};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[cfg(doc)]
use crate::storage::lsm::block_cache::BlockCache;

/// "RKVSST01" read as a little-endian u64: the last 8 bytes of every table.
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"RKVSST01");

/// The table format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Size of the fixed footer at the end of every table.
pub const FOOTER_BYTES: usize = 72;

/// The seed of every table's bloom filter. Fixed so that the filter written
/// is a function of the keys alone and reads hash the same way.
const BLOOM_SEED: [u8; 32] = *b"ringkv sstable bloom filter seed";

/// A bloom filter with more hash functions than this is corrupt: the crate
/// picks about `-log2(fp rate)`, under 30 even for a rate of 1e-9.
const MAX_BLOOM_HASHES: u32 = 64;

/// How tables are written, from `LsmConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    /// Uncompressed size at which a data block is cut (`LsmConfig::block_bytes`).
    pub block_bytes: usize,
    /// Target false-positive rate of the bloom filter
    /// (`LsmConfig::bloom_false_positive_rate`).
    pub bloom_false_positive_rate: f64,
}

impl TableOptions {
    /// The options `config` asks for.
    pub fn from_config(config: &crate::storage::LsmConfig) -> Self {
        TableOptions {
            block_bytes: config.block_bytes,
            bloom_false_positive_rate: config.bloom_false_positive_rate,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(64..=1024 * 1024).contains(&self.block_bytes) {
            return Err(Error::InvalidInput(format!(
                "table block_bytes {} not in 64..=1048576",
                self.block_bytes
            )));
        }
        let p = self.bloom_false_positive_rate;
        if !(p > 0.0 && p < 1.0) {
            return Err(Error::InvalidInput(format!(
                "bloom false positive rate {p} not in (0, 1)"
            )));
        }
        Ok(())
    }
}

impl Default for TableOptions {
    fn default() -> Self {
        Self::from_config(&crate::storage::LsmConfig::default())
    }
}

/// What a table holds, known without reading its data blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's id (the engine's name for it; blocks are cached under it).
    pub id: u64,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// Entries, tombstones included.
    pub entries: u64,
    /// Entries that are tombstones.
    pub tombstones: u64,
    /// The smallest key.
    pub smallest: Vec<u8>,
    /// The largest key.
    pub largest: Vec<u8>,
    /// The largest sequence number of any entry.
    pub max_seq: u64,
}

/// An entry copied out of a table: key, sequence number, value (`None` is
/// a tombstone). The one type every source of the LSM uses.
pub use super::iterators::OwnedEntry;

/// An entry borrowed for writing: key, sequence number, value.
pub type BorrowedEntry<'a> = (&'a [u8], u64, Option<&'a [u8]>);

/// Decodes one stored data block (kind, length, payload, crc32) as a
/// table reads it: checksum, bounded length, decompression, validation.
/// For fuzzing and property tests; the error names no file (offset 0).
#[doc(hidden)]
pub fn decode_block(stored: &[u8]) -> Result<Block> {
    block::decode_stored(stored).map_err(|reason| corruption(Path::new("<block>"), 0, reason))
}

/// Validates an uncompressed block body (entries, restart array) as
/// [`decode_block`] does after the checksum and decompression: lets a
/// fuzzer reach the entry parser without forging checksums.
#[doc(hidden)]
pub fn decode_block_body(body: &[u8]) -> Result<Block> {
    block::validate(body.to_vec()).map_err(|reason| corruption(Path::new("<block>"), 0, reason))
}

/// The first entry of `block` with a key `>= target`, copied out, as a
/// point lookup finds it. For fuzzing and property tests.
#[doc(hidden)]
pub fn block_seek(block: &Block, target: &[u8]) -> Result<Option<OwnedEntry>> {
    let mut key = Vec::new();
    let found = block
        .seek(target, &mut key)
        .map_err(|r| corruption(Path::new("<block>"), 0, r))?;
    Ok(found.map(|e| (key, e.seq, e.value.map(|r| block.slice(r).to_vec()))))
}

/// Encodes entries (ascending keys) into one stored data block, the inverse
/// of [`decode_block`]. For fuzzing and property tests.
#[doc(hidden)]
pub fn encode_block(entries: &[BorrowedEntry<'_>]) -> Vec<u8> {
    let mut b = block::BlockBuilder::default();
    for (k, s, v) in entries {
        b.add(k, *s, *v);
    }
    let mut out = Vec::new();
    b.finish_into(&mut out, &mut Vec::new());
    out
}

/// The entries of a decoded block, in order, copied out. For tests.
#[doc(hidden)]
pub fn block_entries(block: &Block) -> Result<Vec<OwnedEntry>> {
    let mut key = Vec::new();
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < block.entries_end() {
        let e = block
            .read_entry(pos, &mut key)
            .map_err(|r| corruption(Path::new("<block>"), 0, r))?;
        out.push((key.clone(), e.seq, e.value.map(|r| block.slice(r).to_vec())));
        pos = e.next;
    }
    Ok(out)
}

pub(crate) fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        file: PathBuf::from(file),
        offset,
        reason: reason.into(),
    }
}

/// The footer's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Footer {
    index_offset: u64,
    index_len: u64,
    bloom_offset: u64,
    bloom_len: u64,
    entries: u64,
    tombstones: u64,
    max_seq: u64,
}

impl Footer {
    fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = [0u8; FOOTER_BYTES];
        let fields = [
            self.index_offset,
            self.index_len,
            self.bloom_offset,
            self.bloom_len,
            self.entries,
            self.tombstones,
            self.max_seq,
        ];
        for (i, f) in fields.iter().enumerate() {
            out[8 * i..8 * i + 8].copy_from_slice(&f.to_le_bytes());
        }
        out[56..60].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = block::checksum(&out[..60]);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out[64..72].copy_from_slice(&TABLE_MAGIC.to_le_bytes());
        out
    }

    /// Magic first (is this a table at all?), then the checksum, then the
    /// version: a damaged version field is reported as damage.
    fn decode(bytes: &[u8; FOOTER_BYTES]) -> std::result::Result<Footer, String> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        if u64_at(64) != TABLE_MAGIC {
            return Err("bad magic number: not a ringkv table, or its end is lost".into());
        }
        let crc = block::checksum(&bytes[..60]);
        if crc != u32_at(60) {
            return Err(format!(
                "footer checksum mismatch: stored {:#010x}, computed {crc:#010x}",
                u32_at(60)
            ));
        }
        let version = u32_at(56);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported table format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        Ok(Footer {
            index_offset: u64_at(0),
            index_len: u64_at(8),
            bloom_offset: u64_at(16),
            bloom_len: u64_at(24),
            entries: u64_at(32),
            tombstones: u64_at(40),
            max_seq: u64_at(48),
        })
    }
}

/// Where a data block lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockHandle {
    /// Offset of the stored block in the file.
    offset: u64,
    /// Stored length, checksum included.
    len: u64,
}

/// The decoded index block. The blocks' last keys are kept in one buffer
/// with an array of end offsets, so that the binary search of a point
/// lookup reads two dense arrays instead of chasing one allocation per key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Index {
    smallest: Vec<u8>,
    /// Every block's last key, concatenated in block order.
    keys: Vec<u8>,
    /// `key_ends[i]` is where block `i`'s last key ends in `keys`.
    key_ends: Vec<usize>,
    handles: Vec<BlockHandle>,
}

impl Index {
    /// Number of data blocks.
    fn len(&self) -> usize {
        self.handles.len()
    }

    /// The last key of block `i` (empty past the end).
    fn last_key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] };
        match self.key_ends.get(i) {
            Some(&end) => &self.keys[start..end],
            None => &[],
        }
    }

    /// Index of the first block whose last key is `>= key` (`len()` if none).
    fn block_for(&self, key: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.last_key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Encodes the index body (without its checksum):
/// `u32 count | varint len, smallest | count x (varint len, last key, varint offset, varint stored len)`.
fn encode_index(smallest: &[u8], count: u32, entries: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&count.to_le_bytes());
    block::put_varint(out, smallest.len() as u64);
    out.extend_from_slice(smallest);
    out.extend_from_slice(entries);
}

/// Appends one index entry in the form [`encode_index`] expects.
fn put_index_entry(out: &mut Vec<u8>, last_key: &[u8], offset: u64, len: u64) {
    block::put_varint(out, last_key.len() as u64);
    out.extend_from_slice(last_key);
    block::put_varint(out, offset);
    block::put_varint(out, len);
}

/// Decodes and checks an index body: the blocks must tile `0..data_end`
/// exactly, in order, with strictly ascending last keys, and the smallest
/// key must not exceed the first block's last key.
fn decode_index(body: &[u8], data_end: u64) -> std::result::Result<Index, String> {
    let count = body
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("index shorter than its block count")?;
    if count == 0 {
        return Err("index lists no data block".into());
    }
    let mut pos = 4;
    let take = |pos: &mut usize| -> std::result::Result<&[u8], String> {
        let len = block::get_varint(body, pos).ok_or("index key length does not parse")?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= crate::storage::MAX_KEY_BYTES)
            .ok_or("index key longer than the key limit")?;
        let key = body
            .get(*pos..*pos + len)
            .ok_or("index key runs past the index")?;
        *pos += len;
        Ok(key)
    };
    let smallest = take(&mut pos)?.to_vec();
    // Every entry takes at least 3 bytes: bound the count before allocating.
    if count > body.len() / 3 {
        return Err(format!(
            "index claims {count} blocks in {} bytes",
            body.len()
        ));
    }
    let mut index = Index {
        smallest,
        keys: Vec::new(),
        key_ends: Vec::with_capacity(count),
        handles: Vec::with_capacity(count),
    };
    let mut expected_offset = 0u64;
    for i in 0..count {
        let last_key = take(&mut pos)?;
        let offset = block::get_varint(body, &mut pos).ok_or("index offset does not parse")?;
        let len = block::get_varint(body, &mut pos).ok_or("index length does not parse")?;
        if offset != expected_offset {
            return Err(format!(
                "index entry {i} places a block at {offset}, expected {expected_offset}"
            ));
        }
        if len == 0 || len > (MAX_BLOCK_BYTES as u64) * 2 {
            return Err(format!(
                "index entry {i} has an impossible block length {len}"
            ));
        }
        expected_offset = offset
            .checked_add(len)
            .ok_or("index block range overflows")?;
        if i > 0 {
            if last_key <= index.last_key(i - 1) {
                return Err(format!("index last keys do not ascend at entry {i}"));
            }
        } else if last_key < index.smallest.as_slice() {
            return Err("index smallest key is after the first block's last key".into());
        }
        index.keys.extend_from_slice(last_key);
        index.key_ends.push(index.keys.len());
        index.handles.push(BlockHandle { offset, len });
    }
    if pos != body.len() {
        return Err(format!("{} stray bytes after the index", body.len() - pos));
    }
    if expected_offset != data_end {
        return Err(format!(
            "data blocks end at {expected_offset} but the index starts at {data_end}"
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_rejects_damage() {
        let f = Footer {
            index_offset: 1,
            index_len: 2,
            bloom_offset: 3,
            bloom_len: 4,
            entries: 5,
            tombstones: 6,
            max_seq: u64::MAX,
        };
        let bytes = f.encode();
        assert_eq!(Footer::decode(&bytes), Ok(f));
        for i in 0..FOOTER_BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(Footer::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn index_round_trips_and_checks_tiling() {
        let mut entries = Vec::new();
        put_index_entry(&mut entries, b"b", 0, 10);
        put_index_entry(&mut entries, b"d", 10, 20);
        let mut body = Vec::new();
        encode_index(b"a", 2, &entries, &mut body);
        let index = decode_index(&body, 30).unwrap();
        assert_eq!(index.smallest, b"a");
        assert_eq!(index.len(), 2);
        assert_eq!(index.handles[1].offset, 10);
        assert_eq!(index.last_key(0), b"b");
        assert_eq!(index.last_key(1), b"d");
        assert_eq!(index.last_key(2), b"");
        assert_eq!(index.block_for(b""), 0);
        assert_eq!(index.block_for(b"b"), 0);
        assert_eq!(index.block_for(b"bb"), 1);
        assert_eq!(index.block_for(b"d"), 1);
        assert_eq!(index.block_for(b"e"), 2);
        assert!(decode_index(&body, 31).is_err());
        let mut body = Vec::new();
        encode_index(b"c", 2, &entries, &mut body);
        assert!(decode_index(&body, 30).is_err());
        let mut body = Vec::new();
        encode_index(b"a", 3, &entries, &mut body);
        assert!(decode_index(&body, 30).is_err());
    }
}
