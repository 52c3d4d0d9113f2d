//! Iterators over sorted entries: the one [`StorageIterator`] trait that
//! memtables, tables and their merges all implement.
//!
//! An entry is a user key, the sequence number of the write that produced it
//! and a value, or `None` for a tombstone. Iterators yield keys in ascending
//! bytewise order. A source iterator (one memtable, one table) may hold
//! several entries for one key only in descending sequence order; merges
//! decide which one is visible.

use crate::error::Result;

/// One entry copied out of a source: user key, sequence number, value
/// (`None` is a tombstone).
pub type OwnedEntry = (Vec<u8>, u64, Option<Vec<u8>>);

/// Copies every entry a cursor has left into owned entries (for tests).
#[cfg(test)]
pub(crate) fn drain(it: &mut dyn StorageIterator) -> Result<Vec<OwnedEntry>> {
    let mut out = Vec::new();
    while it.is_valid() {
        out.push((it.key().to_vec(), it.seq(), it.value().map(<[u8]>::to_vec)));
        it.next()?;
    }
    Ok(out)
}

/// A cursor over sorted entries.
///
/// Cursor style rather than `std::iter::Iterator` so that a merge can look at
/// the current key of each input without copying it, and so that reading
/// the next block can fail with an error the caller sees.
pub trait StorageIterator: Send {
    /// Whether the cursor is on an entry. `key`, `seq` and `value` may only
    /// be called while it is.
    fn is_valid(&self) -> bool;
    /// The current entry's user key.
    fn key(&self) -> &[u8];
    /// The current entry's sequence number (higher is newer).
    fn seq(&self) -> u64;
    /// The current entry's value; `None` is a tombstone.
    fn value(&self) -> Option<&[u8]>;
    /// Moves to the next entry. After an `Err` the cursor is invalid.
    fn next(&mut self) -> Result<()>;
}

/// Merges several sorted sources into one stream ordered by key ascending
/// and, within a key, by sequence number descending.
///
/// Every version of every source comes out (nothing is hidden here: see
/// [`VisibleIter`] for what a reader sees, and the compaction executor for
/// what survives a merge). When two sources hold the same key and sequence
/// number (a WAL record replayed into a memtable that was also flushed),
/// the source listed first comes out first, so callers list newer sources
/// first.
///
/// The choice of the next entry is a linear pass over the sources: a read
/// merges a few memtables, at most `l0_stop_tables` level-0 tables and one
/// cursor per deeper level, and for twenty-odd sources a pass over an array
/// beats a heap that would have to copy keys.
pub struct MergeIterator {
    sources: Vec<Box<dyn StorageIterator>>,
    current: Option<usize>,
}

impl MergeIterator {
    /// A merge of `sources`, newest first.
    pub fn new(sources: Vec<Box<dyn StorageIterator>>) -> Self {
        let mut merge = MergeIterator {
            sources,
            current: None,
        };
        merge.choose();
        merge
    }

    fn choose(&mut self) {
        let mut best: Option<usize> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if !s.is_valid() {
                continue;
            }
            best = match best {
                None => Some(i),
                Some(b) => {
                    let cur = &self.sources[b];
                    let order = s.key().cmp(cur.key()).then(cur.seq().cmp(&s.seq()));
                    if order == std::cmp::Ordering::Less {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        self.current = best;
    }

    fn cur(&self) -> &dyn StorageIterator {
        match self.current {
            Some(i) => self.sources[i].as_ref(),
            None => panic!("MergeIterator used while not valid"),
        }
    }
}

impl StorageIterator for MergeIterator {
    fn is_valid(&self) -> bool {
        self.current.is_some()
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
        let Some(i) = self.current else {
            return Ok(());
        };
        if let Err(e) = self.sources[i].next() {
            self.current = None;
            return Err(e);
        }
        self.choose();
        Ok(())
    }
}

/// What a reader sees through a merge: for each key the newest version at
/// or below the snapshot sequence number, tombstones hidden, keys inside a
/// range. This is the engine's scan, as a plain `Iterator`.
pub struct VisibleIter<I: StorageIterator> {
    inner: I,
    snapshot: u64,
    range: crate::storage::KeyRange,
    done: bool,
}

impl<I: StorageIterator> VisibleIter<I> {
    /// Wraps `inner`, which must already be positioned at or before the
    /// range's start.
    pub fn new(inner: I, snapshot: u64, range: crate::storage::KeyRange) -> Self {
        VisibleIter {
            inner,
            snapshot,
            range,
            done: false,
        }
    }

    /// Advances `inner` past every remaining version of the current key.
    fn skip_key(&mut self, key: &[u8]) -> Result<()> {
        while self.inner.is_valid() && self.inner.key() == key {
            self.inner.next()?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<Option<crate::storage::KeyValue>> {
        while self.inner.is_valid() {
            if self.range.is_past_end(self.inner.key()) {
                return Ok(None);
            }
            if self.inner.seq() > self.snapshot {
                self.inner.next()?;
                continue;
            }
            let key = self.inner.key().to_vec();
            let value = self.inner.value().map(<[u8]>::to_vec);
            let inside = self.range.contains(&key);
            self.skip_key(&key)?;
            if let (true, Some(value)) = (inside, value) {
                return Ok(Some((key, value)));
            }
        }
        Ok(None)
    }
}

impl<I: StorageIterator> Iterator for VisibleIter<I> {
    type Item = Result<crate::storage::KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A [`StorageIterator`] over entries held in a vector, already sorted.
/// The building block of tests, and of anything small enough to sort in
/// memory.
pub struct VecIter {
    entries: Vec<OwnedEntry>,
    pos: usize,
}

impl VecIter {
    /// Iterates `entries`, which must be ordered by key ascending and, within
    /// a key, by sequence number descending.
    pub fn new(entries: Vec<OwnedEntry>) -> Self {
        debug_assert!(entries
            .windows(2)
            .all(|w| (w[0].0.as_slice(), std::cmp::Reverse(w[0].1))
                < (w[1].0.as_slice(), std::cmp::Reverse(w[1].1))));
        VecIter { entries, pos: 0 }
    }
}

impl StorageIterator for VecIter {
    fn is_valid(&self) -> bool {
        self.pos < self.entries.len()
    }

    fn key(&self) -> &[u8] {
        &self.entries[self.pos].0
    }

    fn seq(&self) -> u64 {
        self.entries[self.pos].1
    }

    fn value(&self) -> Option<&[u8]> {
        self.entries[self.pos].2.as_deref()
    }

    fn next(&mut self) -> Result<()> {
        self.pos += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::KeyRange;

    fn e(k: &str, seq: u64, v: Option<&str>) -> (Vec<u8>, u64, Option<Vec<u8>>) {
        (k.as_bytes().to_vec(), seq, v.map(|v| v.as_bytes().to_vec()))
    }

    fn src(entries: Vec<OwnedEntry>) -> Box<dyn StorageIterator> {
        Box::new(VecIter::new(entries))
    }

    fn visible(
        sources: Vec<Box<dyn StorageIterator>>,
        snap: u64,
        r: KeyRange,
    ) -> Vec<(String, String)> {
        VisibleIter::new(MergeIterator::new(sources), snap, r)
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect()
    }

    fn sample() -> Vec<Box<dyn StorageIterator>> {
        vec![
            // newest source: a memtable
            src(vec![e("b", 9, None), e("d", 8, Some("d8"))]),
            // an L0 table
            src(vec![
                e("a", 5, Some("a5")),
                e("b", 6, Some("b6")),
                e("c", 7, None),
            ]),
            // a deeper level
            src(vec![
                e("a", 1, Some("a1")),
                e("c", 2, Some("c2")),
                e("e", 3, Some("e3")),
            ]),
        ]
    }

    #[test]
    fn merge_yields_every_version_in_order() {
        let mut m = MergeIterator::new(sample());
        let mut got = Vec::new();
        while m.is_valid() {
            got.push((String::from_utf8(m.key().to_vec()).unwrap(), m.seq()));
            m.next().unwrap();
        }
        let want: Vec<(String, u64)> = [
            ("a", 5),
            ("a", 1),
            ("b", 9),
            ("b", 6),
            ("c", 7),
            ("c", 2),
            ("d", 8),
            ("e", 3),
        ]
        .iter()
        .map(|(k, s)| (k.to_string(), *s))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn newest_wins_and_tombstones_hide_older_values() {
        let got = visible(sample(), u64::MAX, KeyRange::all());
        let want = vec![
            ("a".into(), "a5".into()),
            ("d".into(), "d8".into()),
            ("e".into(), "e3".into()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn snapshot_hides_newer_versions() {
        // At snapshot 6: b's tombstone (9) and c's (7) are not yet written.
        let got = visible(sample(), 6, KeyRange::all());
        let want: Vec<(String, String)> = vec![
            ("a".into(), "a5".into()),
            ("b".into(), "b6".into()),
            ("c".into(), "c2".into()),
            ("e".into(), "e3".into()),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn ranges_bound_the_scan() {
        let got = visible(sample(), u64::MAX, KeyRange::between("b", "e"));
        assert_eq!(got, vec![("d".to_string(), "d8".to_string())]);
        let got = visible(sample(), 6, KeyRange::from("c"));
        assert_eq!(
            got,
            vec![("c".into(), "c2".into()), ("e".into(), "e3".into())]
        );
        let got = visible(sample(), u64::MAX, KeyRange::prefix("a"));
        assert_eq!(got, vec![("a".to_string(), "a5".to_string())]);
        let got = visible(sample(), u64::MAX, KeyRange::between("x", "z"));
        assert!(got.is_empty());
    }

    #[test]
    fn equal_versions_come_out_once_from_the_first_source() {
        let sources = vec![
            src(vec![e("k", 4, Some("mem"))]),
            src(vec![e("k", 4, Some("table"))]),
        ];
        assert_eq!(
            visible(sources, u64::MAX, KeyRange::all()),
            vec![("k".to_string(), "mem".to_string())]
        );
        let empty: Vec<Box<dyn StorageIterator>> = vec![src(vec![]), src(vec![])];
        assert!(!MergeIterator::new(empty).is_valid());
    }

    struct Failing;
    impl StorageIterator for Failing {
        fn is_valid(&self) -> bool {
            true
        }
        fn key(&self) -> &[u8] {
            b"a"
        }
        fn seq(&self) -> u64 {
            1
        }
        fn value(&self) -> Option<&[u8]> {
            Some(b"x")
        }
        fn next(&mut self) -> Result<()> {
            Err(crate::error::Error::Corruption {
                file: "t".into(),
                offset: 0,
                reason: "test".into(),
            })
        }
    }

    #[test]
    fn an_error_ends_the_scan_once() {
        let mut it = VisibleIter::new(
            MergeIterator::new(vec![Box::new(Failing)]),
            u64::MAX,
            KeyRange::all(),
        );
        assert!(matches!(
            it.next(),
            Some(Err(crate::error::Error::Corruption { .. }))
        ));
        assert!(it.next().is_none());
    }
}
