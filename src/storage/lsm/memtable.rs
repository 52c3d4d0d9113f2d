//! The memtable: the sorted, in-memory home of recent writes.
//!
//! A lock-free skip list (`crossbeam-skiplist`) keyed by (user key, sequence
//! number), ordered by key ascending and then by sequence number descending,
//! so several versions of one key coexist and the newest comes first.
//! Keeping every version is what makes a read at a snapshot sequence number
//! consistent while writers keep inserting: a reader simply ignores entries
//! newer than its snapshot.
//!
//! Keys and values are copied into the memtable's own arena: chunks of
//! [`ARENA_CHUNK_BYTES`] filled front to back and freed together when the
//! memtable is dropped, so an entry costs one allocation (its skip-list
//! node) rather than three, and dropping a flushed memtable frees a few
//! dozen chunks rather than a million small blocks.
//!
//! Many threads insert and read at once without a lock (the arena takes a
//! short one to hand out room). The memtable counts
//! the bytes of keys and values it holds; the engine seals it when that count
//! reaches `LsmConfig::memtable_bytes`. It does not know about the WAL, about
//! sealing or about flushing: the engine owns those.

use std::alloc::Layout;
use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_skiplist::SkipMap;
use dashmap::DashMap;

use super::iterators::{OwnedEntry, StorageIterator};
use crate::error::Result;

/// The bytes of an arena chunk; a key or value larger than a quarter of
/// it gets a chunk of its own.
pub const ARENA_CHUNK_BYTES: usize = 1 << 20;

/// Bytes copied into an [`Arena`]: valid, and never written again, for as
/// long as the arena lives.
#[derive(Clone, Copy, Debug)]
struct ArenaBytes {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the bytes are immutable once handed out, and the arena they live
// in is `Send + Sync`; every `ArenaBytes` is kept only by the memtable that
// owns the arena (in its skip list) or by something holding an `Arc` of
// that memtable (an iterator's resume key).
unsafe impl Send for ArenaBytes {}
unsafe impl Sync for ArenaBytes {}

impl ArenaBytes {
    /// # Safety
    ///
    /// The arena these bytes were copied into must still be alive.
    unsafe fn as_slice<'a>(self) -> &'a [u8] {
        // SAFETY: `ptr` points to `len` initialised bytes the arena owns
        // and never changes (the caller keeps the arena alive).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

/// Append-only storage for a memtable's keys and values.
#[derive(Debug, Default)]
struct Arena {
    state: Mutex<ArenaState>,
}

#[derive(Debug, Default)]
struct ArenaState {
    /// Every chunk allocated (pointer and size), freed on drop.
    chunks: Vec<(NonNull<u8>, usize)>,
    /// The chunk being filled: its start, size and bytes used.
    current: Option<(NonNull<u8>, usize, usize)>,
}

// SAFETY: the chunks are plain heap memory owned by the arena; the state
// is only reached through its mutex.
unsafe impl Send for ArenaState {}

impl Arena {
    /// Copies `bytes` into the arena.
    fn copy(&self, bytes: &[u8]) -> ArenaBytes {
        let len = bytes.len();
        if len == 0 {
            return ArenaBytes {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        let dst = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if len > ARENA_CHUNK_BYTES / 4 {
                st.new_chunk(len)
            } else {
                match st.current {
                    Some((start, size, used)) if size - used >= len => {
                        st.current = Some((start, size, used + len));
                        // SAFETY: `used + len <= size`: inside the chunk.
                        unsafe { NonNull::new_unchecked(start.as_ptr().add(used)) }
                    }
                    _ => {
                        let start = st.new_chunk(ARENA_CHUNK_BYTES);
                        st.current = Some((start, ARENA_CHUNK_BYTES, len));
                        start
                    }
                }
            }
        };
        // SAFETY: `dst` is `len` bytes of a live chunk that nothing else was
        // or will be handed, so copying without the lock races with nothing.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.as_ptr(), len) };
        ArenaBytes { ptr: dst, len }
    }
}

impl ArenaState {
    /// Allocates a chunk of `size` (> 0) bytes and records it.
    fn new_chunk(&mut self, size: usize) -> NonNull<u8> {
        let layout = Layout::from_size_align(size, 1).expect("a chunk size fits a layout");
        // SAFETY: `size` is not zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        self.chunks.push((ptr, size));
        ptr
    }
}

impl Drop for ArenaState {
    fn drop(&mut self) {
        for &(ptr, size) in &self.chunks {
            // SAFETY: allocated by `new_chunk` with this layout, freed once.
            unsafe {
                std::alloc::dealloc(
                    ptr.as_ptr(),
                    Layout::from_size_align(size, 1).expect("a chunk size fits a layout"),
                )
            };
        }
    }
}

/// A key's bytes: in the memtable's arena (entries of the skip list, and
/// copies of their keys), or owned (search probes).
#[derive(Clone, Debug)]
enum KeyBytes {
    Owned(Vec<u8>),
    InArena(ArenaBytes),
}

/// The skip list's key: a user key and the sequence number of one write.
#[derive(Clone, Debug)]
struct VersionKey {
    /// The key's first 16 bytes as one big-endian number, zero-padded:
    /// comparing them orders two keys exactly as their bytes do whenever
    /// they differ, and spares the skip-list search a pointer chase to the
    /// key's bytes and a `memcmp` call for nearly every comparison.
    /// 16 bytes because 8 are not enough for common keys: replica keys
    /// start with a hashed token, but keys like `db_bench`'s `%016d` share
    /// their first 8 bytes and differ only in the next 8.
    prefix: u128,
    key: KeyBytes,
    seq: u64,
}

impl VersionKey {
    fn owned(key: Vec<u8>, seq: u64) -> Self {
        VersionKey {
            prefix: key_prefix(&key),
            key: KeyBytes::Owned(key),
            seq,
        }
    }

    /// The key's bytes. An `InArena` key exists only inside the skip list
    /// of the memtable owning the arena, or in an iterator holding an `Arc`
    /// of that memtable, so the arena outlives every borrow of it.
    fn key(&self) -> &[u8] {
        match &self.key {
            KeyBytes::Owned(k) => k,
            // SAFETY: see above: the arena is alive while `self` is.
            KeyBytes::InArena(b) => unsafe { b.as_slice() },
        }
    }
}

impl PartialEq for VersionKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for VersionKey {}

fn key_prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

thread_local! {
    static PROBE: std::cell::RefCell<VersionKey> = const {
        std::cell::RefCell::new(VersionKey { prefix: 0, key: KeyBytes::Owned(Vec::new()), seq: 0 })
    };
}

impl Ord for VersionKey {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // Newest version first within a key: a lookup at snapshot `s` seeks to
        // (key, s) and lands on the newest version not newer than `s`.
        // Keys that differ in their first 16 bytes are ordered by the
        // prefix alone; only equal prefixes (the same key, or keys sharing 16
        // bytes or differing only in zero padding) compare the bytes.
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key().cmp(other.key()))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// A key of the memtable's point-read index: bytes in the memtable's
/// arena, hashed and compared as the bytes they are (so the index is
/// searched with a plain `&[u8]`).
#[derive(Clone, Copy, Debug)]
struct IndexKey(ArenaBytes);

impl IndexKey {
    fn bytes(&self) -> &[u8] {
        // SAFETY: an `IndexKey` lives only in the index of the memtable
        // whose arena holds its bytes, and the index is dropped before
        // the arena (see `MemTable`'s fields).
        unsafe { self.0.as_slice() }
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for IndexKey {}

impl std::hash::Hash for IndexKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, which `Borrow<[u8]>` requires.
        self.bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for IndexKey {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

/// Bytes charged per entry on top of its key and value: the skip-list node,
/// the sequence number, the vectors' headers, and (for a key's first
/// version) its slot in the point-read index, charged to every version
/// alike. An estimate, so that a memtable of many tiny entries is still
/// sealed at about the memory it really takes.
const ENTRY_OVERHEAD: usize = 96;

/// A sorted in-memory table of versioned entries.
#[derive(Debug)]
pub struct MemTable {
    /// Also the number of the WAL file that logs this memtable's writes.
    id: u64,
    /// Keys and values point into `arena`; a `None` value is a tombstone.
    /// Declared before the arena so that it is dropped first (dropping an
    /// entry reads none of its bytes, but nothing should point into freed
    /// memory even for a moment).
    map: SkipMap<VersionKey, Option<ArenaBytes>>,
    /// Each key's newest version (its sequence number and value), for
    /// point reads: a hash probe instead of a skip-list search, which
    /// chases a pointer per level (8.6% of a replica's CPU under the
    /// cluster bench). SipHash with a random key, as the keys are the
    /// users'. Also dropped before the arena.
    latest: DashMap<IndexKey, (u64, Option<ArenaBytes>)>,
    arena: Arena,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
}

impl MemTable {
    /// An empty memtable whose writes are logged in WAL number `id`.
    pub fn new(id: u64) -> Self {
        MemTable {
            id,
            map: SkipMap::new(),
            latest: DashMap::new(),
            arena: Arena::default(),
            bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
        }
    }

    /// The memtable's id, which is also its WAL's file number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Inserts one version: `value` `None` is a tombstone. Inserting the
    /// same (key, seq) again replaces the entry with an identical one (a
    /// WAL record replayed twice changes nothing but the byte estimate).
    pub fn insert(&self, key: &[u8], seq: u64, value: Option<&[u8]>) {
        let size = key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD;
        let key_bytes = self.arena.copy(key);
        let version = VersionKey {
            prefix: key_prefix(key),
            key: KeyBytes::InArena(key_bytes),
            seq,
        };
        let value = value.map(|v| self.arena.copy(v));
        self.map.insert(version, value);
        // After the skip list: a reader that finds the index short of a
        // version is reading at a snapshot below it (a batch is published
        // only once every insert of it returned), and concurrent writers
        // of one key leave the index at the higher sequence number.
        self.latest
            .entry(IndexKey(key_bytes))
            .and_modify(|newest| {
                if seq >= newest.0 {
                    *newest = (seq, value);
                }
            })
            .or_insert((seq, value));
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The bytes of a value of this memtable's skip list.
    fn value_bytes(&self, value: Option<ArenaBytes>) -> Option<&[u8]> {
        // SAFETY: the value was copied into `self.arena`, alive with `self`.
        value.map(|v| unsafe { v.as_slice() })
    }

    /// The newest version of `key` with a sequence number at most
    /// `snapshot`: `Some((seq, None))` is a tombstone, `None` means this
    /// memtable holds no such version.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Option<(u64, Option<Vec<u8>>)> {
        // The index first: a key it lacks has no version at any published
        // snapshot here; one whose newest version is visible at `snapshot`
        // is answered from it. Only an older snapshot searches the list.
        let (newest, value) = *self.latest.get(key)?;
        if newest <= snapshot {
            return Some((newest, self.value_bytes(value).map(<[u8]>::to_vec)));
        }
        // The probe is a per-thread buffer: a point read allocates nothing
        // but the value it returns.
        PROBE.with(|probe| {
            let mut probe = probe.borrow_mut();
            if let KeyBytes::Owned(k) = &mut probe.key {
                k.clear();
                k.extend_from_slice(key);
            }
            probe.prefix = key_prefix(key);
            probe.seq = snapshot;
            let entry = self.map.lower_bound(Bound::Included(&*probe))?;
            (entry.key().key() == key).then(|| {
                let value = self.value_bytes(*entry.value()).map(<[u8]>::to_vec);
                (entry.key().seq, value)
            })
        })
    }

    /// Bytes of keys and values held, plus a per-entry overhead estimate.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Number of versions held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the memtable holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The highest sequence number inserted so far (0 when empty).
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(Ordering::Relaxed)
    }

    /// A cursor over the versions with a sequence number at most
    /// `snapshot`, from the first key at or after `start` (every key when
    /// `None`), key ascending and newest version first within a key.
    pub fn iter(self: &Arc<Self>, start: Option<&[u8]>, snapshot: u64) -> MemTableIter {
        let mut it = MemTableIter {
            memtable: Arc::clone(self),
            snapshot,
            buffer: Vec::new(),
            pos: 0,
            resume: start.map(|k| VersionKey::owned(k.to_vec(), u64::MAX)),
            resume_inclusive: true,
            exhausted: false,
        };
        it.refill();
        it
    }
}

/// Entries copied out of the skip list per refill: amortises the seek that
/// resuming after the last copied entry costs, while bounding the memory a
/// slow scan pins.
const ITER_BATCH: usize = 128;

/// A [`StorageIterator`] over one memtable at a snapshot.
///
/// It holds an `Arc` of the memtable, so it stays valid after the memtable
/// is sealed and flushed. It copies entries out in small batches, resuming
/// by seeking past the last one it copied, because a skip-list entry
/// borrows the map and so cannot live inside a struct that owns the map.
pub struct MemTableIter {
    memtable: Arc<MemTable>,
    snapshot: u64,
    buffer: Vec<OwnedEntry>,
    pos: usize,
    /// Where the next refill starts; `None` before the first with no start key.
    resume: Option<VersionKey>,
    resume_inclusive: bool,
    exhausted: bool,
}

impl MemTableIter {
    fn refill(&mut self) {
        self.buffer.clear();
        self.pos = 0;
        // Loops only when a stretch held nothing but versions newer than
        // the snapshot.
        while self.buffer.is_empty() && !self.exhausted {
            self.copy_batch();
        }
    }

    fn copy_batch(&mut self) {
        let memtable = Arc::clone(&self.memtable);
        let lower = match &self.resume {
            None => Bound::Unbounded,
            Some(k) if self.resume_inclusive => Bound::Included(k),
            Some(k) => Bound::Excluded(k),
        };
        let mut last = None;
        let mut entry = memtable.map.lower_bound(lower);
        let mut scanned = 0;
        while let Some(e) = entry {
            scanned += 1;
            if e.key().seq <= self.snapshot {
                let value = memtable.value_bytes(*e.value()).map(<[u8]>::to_vec);
                self.buffer
                    .push((e.key().key().to_vec(), e.key().seq, value));
            }
            if self.buffer.len() >= ITER_BATCH || scanned >= 4 * ITER_BATCH {
                last = Some(e.key().clone());
                break;
            }
            entry = e.next();
        }
        match last {
            Some(k) => {
                self.resume = Some(k);
                self.resume_inclusive = false;
            }
            None => self.exhausted = true,
        }
    }
}

impl StorageIterator for MemTableIter {
    fn is_valid(&self) -> bool {
        self.pos < self.buffer.len()
    }

    fn key(&self) -> &[u8] {
        &self.buffer[self.pos].0
    }

    fn seq(&self) -> u64 {
        self.buffer[self.pos].1
    }

    fn value(&self) -> Option<&[u8]> {
        self.buffer[self.pos].2.as_deref()
    }

    fn next(&mut self) -> Result<()> {
        self.pos += 1;
        if self.pos >= self.buffer.len() {
            self.refill();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(mut it: MemTableIter) -> Vec<OwnedEntry> {
        crate::storage::lsm::iterators::drain(&mut it).unwrap()
    }

    #[test]
    fn get_sees_the_newest_version_at_the_snapshot() {
        let m = MemTable::new(1);
        m.insert(b"k", 1, Some(b"one"));
        m.insert(b"k", 3, Some(b"three"));
        m.insert(b"k", 5, None);
        m.insert(b"j", 4, Some(b"j4"));
        assert_eq!(m.get(b"k", 0), None);
        assert_eq!(m.get(b"k", 1), Some((1, Some(b"one".to_vec()))));
        assert_eq!(m.get(b"k", 2), Some((1, Some(b"one".to_vec()))));
        assert_eq!(m.get(b"k", 4), Some((3, Some(b"three".to_vec()))));
        assert_eq!(m.get(b"k", 9), Some((5, None)));
        assert_eq!(m.get(b"kk", 9), None);
        assert_eq!(m.get(b"", 9), None);
        assert_eq!(m.max_seq(), 5);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn versions_inserted_out_of_order_leave_the_index_at_the_newest() {
        // Two writers of one key: the later sequence number lands first.
        let m = MemTable::new(1);
        m.insert(b"k", 7, Some(b"seven"));
        m.insert(b"k", 6, Some(b"six"));
        m.insert(b"k", 7, Some(b"seven"));
        assert_eq!(m.get(b"k", 9), Some((7, Some(b"seven".to_vec()))));
        assert_eq!(m.get(b"k", 6), Some((6, Some(b"six".to_vec()))));
        assert_eq!(m.get(b"k", 5), None);
        // Keys that are prefixes of one another are different keys.
        m.insert(b"k\0", 8, None);
        assert_eq!(m.get(b"k\0", 9), Some((8, None)));
        assert_eq!(m.get(b"k", 9), Some((7, Some(b"seven".to_vec()))));
        // (k, 7) twice is one entry.
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn concurrent_writers_and_readers_agree_with_the_skip_list() {
        let m = std::sync::Arc::new(MemTable::new(1));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A reader beside the writers: each key's newest version never
        // goes back, and its value is the one written with it.
        let reader = {
            let (m, done) = (m.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = [0u64; 97];
                while !done.load(Ordering::Relaxed) {
                    for (i, last) in seen.iter_mut().enumerate() {
                        let key = format!("key{i}");
                        if let Some((seq, value)) = m.get(key.as_bytes(), u64::MAX) {
                            assert_eq!(value, Some(seq.to_be_bytes().to_vec()), "{key}");
                            assert!(seq >= *last, "{key}: {seq} after {last}");
                            *last = seq;
                        }
                    }
                }
            })
        };
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        let key = format!("key{}", i % 97);
                        let seq = i * 4 + w + 1;
                        m.insert(key.as_bytes(), seq, Some(&seq.to_be_bytes()));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        reader.join().expect("the reader saw a version go back");
        for i in 0..97u64 {
            let key = format!("key{i}");
            let (seq, value) = m.get(key.as_bytes(), u64::MAX).expect("written");
            assert_eq!(value, Some(seq.to_be_bytes().to_vec()));
            // The newest of the versions the four writers wrote.
            let newest = (0..2_000u64)
                .filter(|n| n % 97 == i)
                .map(|n| n * 4 + 4)
                .max()
                .unwrap();
            assert_eq!(seq, newest, "{key}");
            // And below it, the skip list's answer.
            let (older, _) = m.get(key.as_bytes(), newest - 1).expect("older versions");
            assert_eq!(older, newest - 1, "{key}");
        }
    }

    #[test]
    fn prefix_order_is_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0",
            b"a\0\0\0\0\0\0\0\0",
            b"a\x01",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefgi",
            b"0000000000000002",
            b"0000000000000010",
            b"00000000000000100",
            b"abcdefghijklmnop",
            b"abcdefghijklmnop\0",
            b"abcdefghijklmnop\0\0",
            b"abcdefghijklmnoq",
            b"abcdefghijklmno\0",
            b"b",
            b"\xff\xff",
        ];
        for a in &keys {
            for b in &keys {
                let (va, vb) = (
                    VersionKey::owned(a.to_vec(), 1),
                    VersionKey::owned(b.to_vec(), 1),
                );
                assert_eq!(va.cmp(&vb), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn the_arena_keeps_every_size_across_chunks() {
        let m = Arc::new(MemTable::new(1));
        let big = vec![7u8; ARENA_CHUNK_BYTES / 2];
        m.insert(b"", 1, Some(b""));
        m.insert(b"big", 2, Some(&big));
        m.insert(&[9u8; 40], 3, None);
        // Enough small entries to fill several chunks.
        let n = 3 * ARENA_CHUNK_BYTES as u64 / 100;
        for i in 0..n {
            m.insert(format!("k{i:08}").as_bytes(), 10 + i, Some(&[i as u8; 90]));
        }
        assert_eq!(m.get(b"", 9), Some((1, Some(Vec::new()))));
        assert!(
            m.get(b"big", 9) == Some((2, Some(big.clone()))),
            "the big value"
        );
        assert_eq!(m.get(&[9u8; 40], 9), Some((3, None)));
        for i in (0..n).step_by(997) {
            let key = format!("k{i:08}");
            assert_eq!(
                m.get(key.as_bytes(), u64::MAX),
                Some((10 + i, Some(vec![i as u8; 90])))
            );
        }
        let all = collect(m.iter(None, u64::MAX));
        assert_eq!(all.len() as u64, n + 3);
        // Keys sort "" < [9; 40] < "big" < "k...".
        assert!(all[2] == (b"big".to_vec(), 2, Some(big)), "the big value");
    }

    #[test]
    fn duplicate_inserts_keep_one_entry() {
        let m = MemTable::new(1);
        m.insert(b"k", 7, Some(b"v"));
        assert!(m.approximate_bytes() >= 2);
        m.insert(b"k", 7, Some(b"v"));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(b"k", 7), Some((7, Some(b"v".to_vec()))));
    }

    #[test]
    fn iter_orders_keys_ascending_and_versions_newest_first() {
        let m = Arc::new(MemTable::new(1));
        m.insert(b"b", 2, Some(b"b2"));
        m.insert(b"a", 1, Some(b"a1"));
        m.insert(b"b", 4, None);
        m.insert(b"c", 3, Some(b"c3"));
        let all = collect(m.iter(None, u64::MAX));
        let keys: Vec<_> = all.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
        assert_eq!(
            keys,
            vec![
                (b"a".to_vec(), 1),
                (b"b".to_vec(), 4),
                (b"b".to_vec(), 2),
                (b"c".to_vec(), 3)
            ]
        );
        assert_eq!(all[1].2, None);
        // Snapshot 3 hides the tombstone at 4; start "b" skips "a".
        let snap = collect(m.iter(Some(b"b"), 3));
        let keys: Vec<_> = snap.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
        assert_eq!(keys, vec![(b"b".to_vec(), 2), (b"c".to_vec(), 3)]);
    }

    #[test]
    fn iter_is_stable_across_batches_and_concurrent_inserts() {
        let m = Arc::new(MemTable::new(1));
        for i in 0..1000u32 {
            m.insert(&i.to_be_bytes(), u64::from(i) + 1, Some(b"v"));
        }
        let mut it = m.iter(None, 1000);
        let mut seen = 0u32;
        while it.is_valid() {
            assert_eq!(it.key(), seen.to_be_bytes());
            // Writes newer than the snapshot, behind and ahead of the cursor.
            m.insert(&seen.to_be_bytes(), 5000 + u64::from(seen), Some(b"new"));
            m.insert(&(seen + 1).to_be_bytes(), 9000 + u64::from(seen), None);
            seen += 1;
            it.next().unwrap();
        }
        assert_eq!(seen, 1000);
    }

    #[test]
    fn concurrent_inserts_all_land() {
        let m = Arc::new(MemTable::new(1));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        let seq = t * 1000 + i + 1;
                        m.insert(&seq.to_be_bytes(), seq, Some(&seq.to_le_bytes()));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.len(), 2000);
        for t in 0..4u64 {
            let seq = t * 1000 + 77;
            assert_eq!(
                m.get(&seq.to_be_bytes(), u64::MAX),
                Some((seq, Some(seq.to_le_bytes().to_vec())))
            );
        }
    }
}
