//! Data blocks: the unit an SSTable reads, checksums, compresses and caches.
//!
//! A block holds consecutive entries of one table in ascending key order.
//! Keys are prefix-compressed against the previous key, with a restart point
//! (a full key) every [`RESTART_INTERVAL`] entries so that a point lookup
//! binary-searches the restart points and then scans at most that many
//! entries. The stored form adds a compression kind, the uncompressed length
//! and a crc32 (IEEE, `crc32fast`) over everything before it.
//!
//! Decoding checks the checksum, bounds the uncompressed length before
//! allocating, decompresses, and then validates every entry (bounds, key
//! order, restart points), so that a [`Block`] that exists is well formed and
//! reading it later cannot go out of bounds. This module knows nothing of
//! files: callers turn the reason of a failure into `Error::Corruption` with
//! the file and offset.

use crate::storage::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// Entries between two restart points (full keys).
///
/// 16, as in LevelDB: a lookup scans at most 15 prefix-compressed entries
/// after the binary search, and a restart costs 4 bytes per 16 entries.
pub const RESTART_INTERVAL: usize = 16;

/// The largest uncompressed block a reader accepts: a block is cut once it
/// reaches `TableOptions::block_bytes` (at most 1 MiB), so its size is below
/// that plus one largest entry (a 64 KiB key and a 16 MiB value) plus the
/// restart array. Checked before any allocation.
pub const MAX_BLOCK_BYTES: usize = 1024 * 1024 + MAX_KEY_BYTES + MAX_VALUE_BYTES + 1024 * 1024;

/// Stored as is: compression would not have saved enough.
const KIND_RAW: u8 = 0;
/// Stored lz4-compressed (`lz4_flex` block format, no size prefix).
const KIND_LZ4: u8 = 1;
/// Kind byte plus the u32 uncompressed length.
const STORED_HEADER_BYTES: usize = 5;
/// The crc32 trailer of every stored block, index and bloom filter.
pub const CHECKSUM_BYTES: usize = 4;

/// lz4 cannot expand more than 255 to 1; a larger claimed ratio is corruption.
const MAX_LZ4_RATIO: usize = 255;

// ---- varints (LEB128, unsigned) ----

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint at `*pos`, advancing it. `None` when the
/// bytes end first or the value does not fit in 64 bits.
#[inline]
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    // Lengths and shared prefixes are almost always below 128: one byte.
    let first = *bytes.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u64::from(first));
    }
    get_varint_slow(bytes, pos)
}

fn get_varint_slow(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        let low = u64::from(b & 0x7f);
        if shift == 63 && low > 1 {
            return None;
        }
        v |= low << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A varint that must fit in `usize` and be at most `max`.
#[inline]
fn get_len(bytes: &[u8], pos: &mut usize, max: usize) -> Option<usize> {
    let v = get_varint(bytes, pos)?;
    let v = usize::try_from(v).ok()?;
    (v <= max).then_some(v)
}

/// Computes the crc32 that trails every checksummed piece of a table.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Splits `stored` into its body and verifies the crc32 trailer.
pub(crate) fn verify_checksum(stored: &[u8]) -> Result<&[u8], String> {
    let Some(body_len) = stored.len().checked_sub(CHECKSUM_BYTES) else {
        return Err(format!(
            "{} bytes is too short for a checksum",
            stored.len()
        ));
    };
    let (body, trailer) = stored.split_at(body_len);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let got = checksum(body);
    if got != expected {
        return Err(format!(
            "checksum mismatch: stored {expected:#010x}, computed {got:#010x}"
        ));
    }
    Ok(body)
}

// ---- building ----

/// Accumulates entries of one block in their uncompressed form.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// Whether no entry was added since the last `finish`.
    pub(crate) fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }

    /// The last key added (the block's largest).
    pub(crate) fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Uncompressed size of the block if it were finished now.
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Appends an entry. The caller guarantees ascending keys and sizes
    /// within [`MAX_KEY_BYTES`] and [`MAX_VALUE_BYTES`].
    pub(crate) fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) {
        let shared = if self.since_restart % RESTART_INTERVAL == 0 {
            // The block format stores offsets as u32; blocks are far smaller.
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        self.since_restart += 1;
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        match value {
            Some(v) => put_varint(&mut self.buf, v.len() as u64 + 1),
            None => put_varint(&mut self.buf, 0),
        }
        put_varint(&mut self.buf, seq);
        self.buf.extend_from_slice(&key[shared..]);
        if let Some(v) = value {
            self.buf.extend_from_slice(v);
        }
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
    }

    /// Appends the stored form of the block (kind, length, payload, crc32)
    /// to `out` and resets the builder. `scratch` is reused for compression.
    pub(crate) fn finish_into(&mut self, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        encode_stored(&self.buf, out, scratch);
        self.buf.clear();
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
    }
}

/// Appends the stored form of an uncompressed block body to `out`.
///
/// Compressed with lz4 unless that saves less than 1/8: incompressible
/// values (random bytes, already compressed data) are then stored raw and
/// reading them costs no decompression.
pub(crate) fn encode_stored(body: &[u8], out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    let start = out.len();
    scratch.clear();
    scratch.resize(lz4_flex::block::get_maximum_output_size(body.len()), 0);
    let compressed = match lz4_flex::block::compress_into(body, scratch) {
        Ok(n) if n < body.len() - body.len() / 8 => Some(n),
        _ => None,
    };
    match compressed {
        Some(n) => {
            out.push(KIND_LZ4);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&scratch[..n]);
        }
        None => {
            out.push(KIND_RAW);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
        }
    }
    let crc = checksum(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

// ---- reading ----

/// A decoded, validated data block, shared through the block cache.
#[derive(Debug)]
pub struct Block {
    /// Entries, then the restart array, then its length.
    data: Vec<u8>,
    /// Where the entries end and the restart array begins.
    entries_end: usize,
    /// Number of restart points (at least 1).
    restarts: usize,
}

/// The position of one entry inside a [`Block`], as parsed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryRef {
    /// The entry's sequence number.
    pub(crate) seq: u64,
    /// Byte range of the value in the block's data; `None` is a tombstone.
    pub(crate) value: Option<(usize, usize)>,
    /// Offset of the following entry (`entries_end` at the last one).
    pub(crate) next: usize,
}

impl Block {
    /// Bytes this block holds in memory, what the cache charges for it.
    pub fn charge(&self) -> usize {
        self.data.capacity() + std::mem::size_of::<Self>()
    }

    /// Offset where the entries end (one past the last entry).
    pub(crate) fn entries_end(&self) -> usize {
        self.entries_end
    }

    /// The value bytes at `range`, as returned by [`Block::read_entry`].
    pub(crate) fn slice(&self, (start, end): (usize, usize)) -> &[u8] {
        self.data.get(start..end).unwrap_or(&[])
    }

    fn restart_offset(&self, i: usize) -> usize {
        let at = self.entries_end + 4 * i;
        match self.data.get(at..at + 4) {
            Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
            None => self.entries_end,
        }
    }

    /// The full key of the entry at restart point `i` (its shared prefix is 0).
    fn restart_key(&self, i: usize) -> &[u8] {
        let mut pos = self.restart_offset(i);
        match parse_header(&self.data[..self.entries_end], pos) {
            Some(h) => {
                pos = h.key_start;
                self.data.get(pos..pos + h.unshared).unwrap_or(&[])
            }
            None => &[],
        }
    }

    /// Parses the entry at `pos`, rebuilding its key in `key` from the
    /// previous key held there. Validation at decode time makes failure
    /// impossible for a block that exists; it is still reported, not assumed.
    pub(crate) fn read_entry(&self, pos: usize, key: &mut Vec<u8>) -> Result<EntryRef, String> {
        let h = parse_header(&self.data[..self.entries_end], pos)
            .ok_or_else(|| format!("entry at block offset {pos} does not parse"))?;
        if h.shared > key.len() {
            return Err(format!(
                "entry at block offset {pos} shares more than the previous key"
            ));
        }
        key.truncate(h.shared);
        key.extend_from_slice(&self.data[h.key_start..h.key_start + h.unshared]);
        Ok(EntryRef {
            seq: h.seq,
            value: h.value_len.map(|n| (h.value_start, h.value_start + n)),
            next: h.next,
        })
    }

    /// Finds the first entry with a key `>= target`: binary search over the
    /// restart points, then a scan of at most one restart interval. Leaves
    /// the entry's key in `key`; `None` when every key is smaller.
    pub(crate) fn seek(
        &self,
        target: &[u8],
        key: &mut Vec<u8>,
    ) -> Result<Option<EntryRef>, String> {
        // Restarts whose key is <= target: the answer lies at or after the
        // last of them, and before the next restart.
        let mut lo = 0;
        let mut hi = self.restarts;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.restart_key(mid) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let start = lo.saturating_sub(1);
        let mut pos = self.restart_offset(start);
        key.clear();
        while pos < self.entries_end {
            let e = self.read_entry(pos, key)?;
            if key.as_slice() >= target {
                return Ok(Some(e));
            }
            pos = e.next;
        }
        Ok(None)
    }
}

/// The fixed part of an entry, as offsets into the entries.
struct EntryHeader {
    shared: usize,
    unshared: usize,
    value_len: Option<usize>,
    seq: u64,
    key_start: usize,
    value_start: usize,
    next: usize,
}

/// Parses the entry header at `pos` of `entries`, checking that the key
/// suffix and value lie inside `entries`.
#[inline]
fn parse_header(entries: &[u8], pos: usize) -> Option<EntryHeader> {
    let mut p = pos;
    let shared = get_len(entries, &mut p, MAX_KEY_BYTES)?;
    let unshared = get_len(entries, &mut p, MAX_KEY_BYTES)?;
    if shared + unshared > MAX_KEY_BYTES {
        return None;
    }
    let value_tag = get_len(entries, &mut p, MAX_VALUE_BYTES + 1)?;
    let seq = get_varint(entries, &mut p)?;
    let key_start = p;
    let value_start = key_start.checked_add(unshared)?;
    let value_len = value_tag.checked_sub(1);
    let next = value_start.checked_add(value_len.unwrap_or(0))?;
    if next > entries.len() {
        return None;
    }
    Some(EntryHeader {
        shared,
        unshared,
        value_len,
        seq,
        key_start,
        value_start,
        next,
    })
}

/// Decodes a stored block: checksum, kind, bounded length, decompression,
/// then validation of every entry. The error is the reason, without file
/// or offset.
pub(crate) fn decode_stored(stored: &[u8]) -> Result<Block, String> {
    decode_stored_owned(stored.to_vec())
}

/// [`decode_stored`] on a buffer the caller gives away: a raw block's body
/// is then cut out of it in place instead of copied.
pub(crate) fn decode_stored_owned(mut stored: Vec<u8>) -> Result<Block, String> {
    let body = verify_checksum(&stored)?;
    if body.len() < STORED_HEADER_BYTES {
        return Err(format!(
            "block of {} bytes is shorter than its header",
            body.len()
        ));
    }
    let kind = body[0];
    let raw_len = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let payload = &body[STORED_HEADER_BYTES..];
    if raw_len > MAX_BLOCK_BYTES {
        return Err(format!(
            "uncompressed length {raw_len} exceeds the maximum of {MAX_BLOCK_BYTES}"
        ));
    }
    let data = match kind {
        KIND_RAW => {
            if payload.len() != raw_len {
                return Err(format!(
                    "raw block holds {} bytes but claims {raw_len}",
                    payload.len()
                ));
            }
            stored.truncate(STORED_HEADER_BYTES + raw_len);
            stored.drain(..STORED_HEADER_BYTES);
            stored
        }
        KIND_LZ4 => {
            if raw_len
                > payload
                    .len()
                    .saturating_mul(MAX_LZ4_RATIO)
                    .saturating_add(16)
            {
                return Err(format!(
                    "uncompressed length {raw_len} is impossible for {} compressed bytes",
                    payload.len()
                ));
            }
            let mut data = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(payload, &mut data) {
                Ok(n) if n == raw_len => data,
                Ok(n) => {
                    return Err(format!(
                        "decompressed {n} bytes, the header claims {raw_len}"
                    ))
                }
                Err(e) => return Err(format!("lz4: {e}")),
            }
        }
        other => return Err(format!("unknown block compression kind {other}")),
    };
    validate(data)
}

/// Checks the restart array and every entry of an uncompressed block body.
pub(crate) fn validate(data: Vec<u8>) -> Result<Block, String> {
    let n = data.len();
    if n < 4 {
        return Err("block body shorter than its restart count".into());
    }
    let restarts =
        u32::from_le_bytes([data[n - 4], data[n - 3], data[n - 2], data[n - 1]]) as usize;
    if restarts == 0 {
        return Err("block has no restart point (no entry)".into());
    }
    let Some(entries_end) = restarts.checked_mul(4).and_then(|r| (n - 4).checked_sub(r)) else {
        return Err(format!("{restarts} restart points do not fit in {n} bytes"));
    };
    let block = Block {
        data,
        entries_end,
        restarts,
    };
    // Walk every entry: each must parse inside the entries, restart points
    // must fall exactly on entries with no shared prefix, keys must ascend.
    // Ascending is checked without comparing whole keys: a new key is the
    // previous key's first `shared` bytes and a suffix, and the builder
    // shares the longest common prefix, so outside restart points the key
    // ascends exactly when the suffix's first byte is above the previous
    // key's byte at `shared` (or the previous key is a prefix of it). Only
    // restart keys, stored whole, are compared in full.
    let mut key: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut next_restart = 0;
    let mut first = true;
    while pos < entries_end {
        let h = parse_header(&block.data[..entries_end], pos)
            .ok_or_else(|| format!("entry at block offset {pos} is malformed"))?;
        let suffix = &block.data[h.key_start..h.key_start + h.unshared];
        let at_restart = next_restart < restarts && block.restart_offset(next_restart) == pos;
        let ascends = if at_restart {
            if h.shared != 0 {
                return Err(format!(
                    "restart entry at block offset {pos} shares a prefix"
                ));
            }
            next_restart += 1;
            first || suffix > key.as_slice()
        } else if first {
            return Err("the first entry is not a restart point".into());
        } else if h.shared > key.len() {
            return Err(format!(
                "entry at block offset {pos} shares more than the previous key"
            ));
        } else if h.shared == key.len() {
            !suffix.is_empty()
        } else {
            suffix.first().is_some_and(|b| *b > key[h.shared])
        };
        if !ascends {
            return Err(format!("keys do not ascend at block offset {pos}"));
        }
        key.truncate(h.shared);
        key.extend_from_slice(suffix);
        first = false;
        pos = h.next;
    }
    if next_restart != restarts {
        return Err("a restart point does not fall on an entry".into());
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::lsm::sstable::OwnedEntry;

    fn build(entries: &[OwnedEntry]) -> Vec<u8> {
        let mut b = BlockBuilder::default();
        for (k, s, v) in entries {
            b.add(k, *s, v.as_deref());
        }
        let mut out = Vec::new();
        b.finish_into(&mut out, &mut Vec::new());
        out
    }

    fn sample(n: usize) -> Vec<OwnedEntry> {
        (0..n)
            .map(|i| {
                let v = (i % 5 != 0).then(|| format!("value-{i}").repeat(3).into_bytes());
                (format!("key-{i:06}").into_bytes(), i as u64 * 7, v)
            })
            .collect()
    }

    fn all(block: &Block) -> Vec<OwnedEntry> {
        let mut key = Vec::new();
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < block.entries_end() {
            let e = block.read_entry(pos, &mut key).unwrap();
            out.push((key.clone(), e.seq, e.value.map(|r| block.slice(r).to_vec())));
            pos = e.next;
        }
        out
    }

    #[test]
    fn varints_round_trip_and_reject_overflow() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let mut pos = 0;
            assert_eq!(get_varint(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert_eq!(get_varint(&[0xff; 11], &mut pos), None);
        let mut pos = 0;
        assert_eq!(get_varint(&[0x80, 0x80], &mut pos), None);
    }

    #[test]
    fn block_round_trips_with_tombstones_and_prefixes() {
        let entries = sample(100);
        let stored = build(&entries);
        let block = decode_stored(&stored).unwrap();
        assert_eq!(all(&block), entries);
        assert_eq!(block.restarts, 100usize.div_ceil(RESTART_INTERVAL));
    }

    #[test]
    fn repetitive_blocks_are_compressed_and_random_ones_stored_raw() {
        let entries = sample(100);
        let stored = build(&entries);
        assert_eq!(stored[0], KIND_LZ4);
        let raw_len = u32::from_le_bytes(stored[1..5].try_into().unwrap()) as usize;
        assert!(stored.len() < raw_len, "{} >= {raw_len}", stored.len());
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let noisy: Vec<_> = (0..20u32)
            .map(|i| {
                let v: Vec<u8> = (0..200).map(|_| rng.random()).collect();
                (i.to_be_bytes().to_vec(), 1, Some(v))
            })
            .collect();
        let stored = build(&noisy);
        assert_eq!(stored[0], KIND_RAW);
        assert_eq!(all(&decode_stored(&stored).unwrap()), noisy);
    }

    #[test]
    fn seek_finds_the_first_key_at_or_after_the_target() {
        let entries = sample(100);
        let block = decode_stored(&build(&entries)).unwrap();
        let mut key = Vec::new();
        for (i, (k, seq, _)) in entries.iter().enumerate() {
            let e = block.seek(k, &mut key).unwrap().unwrap();
            assert_eq!((&key, e.seq), (k, *seq));
            // Just after key i comes key i + 1.
            let mut after = k.clone();
            after.push(0);
            match block.seek(&after, &mut key).unwrap() {
                Some(_) => assert_eq!(&key, &entries[i + 1].0),
                None => assert_eq!(i, entries.len() - 1),
            }
        }
        let e = block.seek(b"", &mut key).unwrap().unwrap();
        assert_eq!((key.as_slice(), e.seq), (entries[0].0.as_slice(), 0));
        assert!(block.seek(b"zzz", &mut key).unwrap().is_none());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let stored = build(&sample(40));
        for i in 0..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode_stored(&bad).is_err(),
                    "flip at {i} bit {bit} undetected"
                );
            }
        }
        for len in 0..stored.len() {
            assert!(decode_stored(&stored[..len]).is_err());
        }
    }

    #[test]
    fn oversized_claims_are_refused_before_allocating() {
        let mut body = vec![KIND_LZ4];
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        let crc = checksum(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        let err = decode_stored(&body).unwrap_err();
        assert!(err.contains("exceeds the maximum"), "{err}");
    }

    #[test]
    fn unordered_keys_with_a_valid_checksum_are_refused() {
        let mut b = BlockBuilder::default();
        b.add(b"b", 1, Some(b"x"));
        b.add(b"a", 1, Some(b"y"));
        let mut out = Vec::new();
        b.finish_into(&mut out, &mut Vec::new());
        let err = decode_stored(&out).unwrap_err();
        assert!(err.contains("ascend"), "{err}");
    }
}
