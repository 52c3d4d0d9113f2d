//! The memtable: the sorted, in-memory home of recent writes.
//!
//! A lock-free skip list (`crossbeam-skiplist`) keyed by (user key, sequence
//! number), ordered by key ascending and then by sequence number descending,
//! so several versions of one key coexist and the newest comes first.
//! Keeping every version is what makes a read at a snapshot sequence number
//! consistent while writers keep inserting: a reader simply ignores entries
//! newer than its snapshot.
//!
//! Many threads insert and read at once without a lock. The memtable counts
//! the bytes of keys and values it holds; the engine seals it when that count
//! reaches `LsmConfig::memtable_bytes`. It does not know about the WAL, about
//! sealing or about flushing: the engine owns those.

use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use super::iterators::{OwnedEntry, StorageIterator};
use crate::error::Result;

/// The skip list's key: a user key and the sequence number of one write.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VersionKey {
    /// The key's first 16 bytes as one big-endian number, zero-padded:
    /// comparing them orders two keys exactly as their bytes do whenever
    /// they differ, and spares the skip-list search a pointer chase to the
    /// key's heap bytes and a `memcmp` call for nearly every comparison.
    /// 16 bytes because 8 are not enough for common keys: replica keys
    /// start with a hashed token, but keys like `db_bench`'s `%016d` share
    /// their first 8 bytes and differ only in the next 8.
    prefix: u128,
    key: Vec<u8>,
    seq: u64,
}

impl VersionKey {
    fn new(key: Vec<u8>, seq: u64) -> Self {
        VersionKey {
            prefix: key_prefix(&key),
            key,
            seq,
        }
    }
}

fn key_prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

thread_local! {
    static PROBE: std::cell::RefCell<VersionKey> =
        const { std::cell::RefCell::new(VersionKey { prefix: 0, key: Vec::new(), seq: 0 }) };
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
            .then_with(|| self.key.cmp(&other.key))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for VersionKey {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

/// Bytes charged per entry on top of its key and value: the skip-list node,
/// the sequence number, the vectors' headers. An estimate, so that a
/// memtable of many tiny entries is still sealed at about the memory it
/// really takes.
const ENTRY_OVERHEAD: usize = 64;

/// A sorted in-memory table of versioned entries.
#[derive(Debug)]
pub struct MemTable {
    /// Also the number of the WAL file that logs this memtable's writes.
    id: u64,
    map: SkipMap<VersionKey, Option<Vec<u8>>>,
    bytes: AtomicUsize,
    max_seq: AtomicU64,
}

impl MemTable {
    /// An empty memtable whose writes are logged in WAL number `id`.
    pub fn new(id: u64) -> Self {
        MemTable {
            id,
            map: SkipMap::new(),
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
        self.insert_owned(key.to_vec(), seq, value.map(<[u8]>::to_vec));
    }

    /// [`MemTable::insert`] taking ownership, so the write path moves a
    /// batch's keys and values in without copying them.
    pub fn insert_owned(&self, key: Vec<u8>, seq: u64, value: Option<Vec<u8>>) {
        let size = key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
        self.map.insert(VersionKey::new(key, seq), value);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The newest version of `key` with a sequence number at most
    /// `snapshot`: `Some((seq, None))` is a tombstone, `None` means this
    /// memtable holds no such version.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Option<(u64, Option<Vec<u8>>)> {
        // The probe is a per-thread buffer: a point read allocates nothing
        // but the value it returns.
        PROBE.with(|probe| {
            let mut probe = probe.borrow_mut();
            probe.key.clear();
            probe.key.extend_from_slice(key);
            probe.prefix = key_prefix(key);
            probe.seq = snapshot;
            let entry = self.map.lower_bound(Bound::Included(&*probe))?;
            (entry.key().key == key).then(|| (entry.key().seq, entry.value().clone()))
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
            resume: start.map(|k| VersionKey::new(k.to_vec(), u64::MAX)),
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
                self.buffer
                    .push((e.key().key.clone(), e.key().seq, e.value().clone()));
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
                    VersionKey::new(a.to_vec(), 1),
                    VersionKey::new(b.to_vec(), 1),
                );
                assert_eq!(va.cmp(&vb), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
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
