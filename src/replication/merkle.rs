//! Merkle trees over one token range, for anti-entropy.
//!
//! A [`MerkleTree`] summarises what a replica holds in one [`TokenRange`]:
//! the range is cut into `2^k` equal token slices, the *leaves*; each
//! leaf's hash combines, for every object whose token falls in the slice,
//! a hash of (bucket, key, version digest). Internal nodes hash their two
//! children, so two trees with equal roots hold (but for a 64-bit hash
//! collision) equal contents, and [`MerkleTree::diff`] finds the differing
//! leaves by descending only into unequal subtrees.
//!
//! The *version digest* of an object ([`version_digest`]) is the xxh3 of
//! its stored CBOR bytes. The encoding is canonical (siblings sorted by dot,
//! the context a sorted map, serde's fixed field order), so equal objects
//! have equal digests on every replica and in every process.
//!
//! A leaf combines its entries by wrapping addition of their hashes, so the
//! hash does not depend on the order of the scan (a wrapping range is two
//! scans, and a leaf may straddle the wrap) and a tree can be built from
//! any enumeration of the range. Keys are unique within a range, so
//! addition cannot cancel two equal entries the way XOR would.
//!
//! # What it does not do
//!
//! It does not read storage (the caller feeds entries from a scan), keep
//! trees across rounds, or decide what to repair.

use serde::{Deserialize, Serialize};

use crate::ring::{Token, TokenRange};

/// The most leaves a tree may have: 2^16 (a 512 KiB leaf message).
pub const MAX_LEAVES: usize = 1 << 16;

/// The version digest of a stored object: the xxh3 of its CBOR bytes.
pub fn version_digest(stored: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(stored)
}

/// The hash of one entry of a leaf.
fn entry_hash(bucket: &[u8], key: &[u8], digest: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(&(bucket.len() as u64).to_be_bytes());
    h.update(bucket);
    h.update(&(key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(&digest.to_be_bytes());
    h.digest()
}

fn node_hash(left: u64, right: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&left.to_be_bytes());
    buf[8..].copy_from_slice(&right.to_be_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// Whether `leaves` is a valid leaf count: a power of two from 1 to
/// [`MAX_LEAVES`].
pub fn valid_leaves(leaves: usize) -> bool {
    leaves.is_power_of_two() && leaves <= MAX_LEAVES
}

/// The leaf of a `leaves`-leaf tree over `range` that holds `token`, or
/// `None` when the token is outside the range (or `leaves` is invalid).
///
/// ```
/// use ringkv::replication::merkle::leaf_of;
/// use ringkv::ring::{Token, TokenRange};
/// let range = TokenRange { after: Token(0), through: Token(400) };
/// assert_eq!(leaf_of(range, 4, Token(1)), Some(0));
/// assert_eq!(leaf_of(range, 4, Token(400)), Some(3));
/// assert_eq!(leaf_of(range, 4, Token(401)), None);
/// ```
pub fn leaf_of(range: TokenRange, leaves: usize, token: Token) -> Option<usize> {
    if !valid_leaves(leaves) || !range.contains(token) {
        return None;
    }
    // Offset from the first token of the range, in [0, len).
    let offset = token.0.wrapping_sub(range.after.0).wrapping_sub(1) as u128;
    Some((offset * leaves as u128 / range.len()) as usize)
}

/// One object as a tree sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyDigest {
    /// The bucket.
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The version digest of the stored object.
    pub digest: u64,
}

/// A Merkle tree over one token range. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleTree {
    range: TokenRange,
    /// `levels[0]` are the leaves; each next level halves; the last holds
    /// the root alone.
    levels: Vec<Vec<u64>>,
}

impl MerkleTree {
    /// A tree from leaf hashes (a peer's, received whole). `None` when the
    /// count is not a valid leaf count.
    pub fn from_leaves(range: TokenRange, leaves: Vec<u64>) -> Option<Self> {
        if !valid_leaves(leaves.len()) {
            return None;
        }
        let mut levels = vec![leaves];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            let up = last.chunks(2).map(|c| node_hash(c[0], c[1])).collect();
            levels.push(up);
        }
        Some(MerkleTree { range, levels })
    }

    /// The range it covers.
    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// The root hash.
    pub fn root(&self) -> u64 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(0)
    }

    /// The leaf hashes, in token order.
    pub fn leaves(&self) -> &[u64] {
        &self.levels[0]
    }

    /// The leaves where `self` and `other` differ, in order. Trees of
    /// different shapes or ranges differ everywhere.
    pub fn diff(&self, other: &MerkleTree) -> Vec<usize> {
        if self.range != other.range || self.levels.len() != other.levels.len() {
            return (0..self.leaves().len().max(other.leaves().len())).collect();
        }
        let mut out = Vec::new();
        // Walk down from the root, keeping the unequal nodes of each level.
        let top = self.levels.len() - 1;
        let mut frontier = vec![0usize];
        for level in (0..=top).rev() {
            let (a, b) = (&self.levels[level], &other.levels[level]);
            let unequal: Vec<usize> = frontier.into_iter().filter(|&i| a[i] != b[i]).collect();
            if level == 0 {
                out = unequal;
                break;
            }
            frontier = unequal.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
        }
        out
    }
}

/// Builds a tree from entries in any order (see the module docs), keeping
/// the entries of each leaf for the repair that may follow.
#[derive(Clone, Debug)]
pub struct TreeBuilder {
    range: TokenRange,
    sums: Vec<u64>,
    counts: Vec<u64>,
    entries: Vec<Vec<KeyDigest>>,
    keep_entries: bool,
}

impl TreeBuilder {
    /// A builder for `leaves` leaves over `range`; `keep_entries` keeps each
    /// leaf's entries (see [`BuiltTree::entries`]). `None` for an invalid
    /// leaf count.
    pub fn new(range: TokenRange, leaves: usize, keep_entries: bool) -> Option<Self> {
        if !valid_leaves(leaves) {
            return None;
        }
        Some(TreeBuilder {
            range,
            sums: vec![0; leaves],
            counts: vec![0; leaves],
            entries: if keep_entries {
                vec![Vec::new(); leaves]
            } else {
                Vec::new()
            },
            keep_entries,
        })
    }

    /// Adds one object; returns its leaf, or `None` (and ignores it) when
    /// `token` is outside the range.
    pub fn push(&mut self, token: Token, entry: KeyDigest) -> Option<usize> {
        let leaf = leaf_of(self.range, self.sums.len(), token)?;
        self.sums[leaf] =
            self.sums[leaf].wrapping_add(entry_hash(&entry.bucket, &entry.key, entry.digest));
        self.counts[leaf] += 1;
        if self.keep_entries {
            self.entries[leaf].push(entry);
        }
        Some(leaf)
    }

    /// The tree, and the entries kept.
    pub fn finish(self) -> BuiltTree {
        // An empty leaf hashes to 0; a non-empty one mixes its count in, so
        // that no set of entries can sum to the empty leaf's hash by chance
        // more often than any other collision.
        let leaves = self
            .sums
            .iter()
            .zip(&self.counts)
            .map(|(&s, &c)| if c == 0 { 0 } else { node_hash(s, c) })
            .collect();
        let tree = match MerkleTree::from_leaves(self.range, leaves) {
            Some(tree) => tree,
            // `new` checked the count.
            None => unreachable!("leaf count checked in TreeBuilder::new"),
        };
        BuiltTree {
            tree,
            entries: self.entries,
            keys: self.counts.iter().sum(),
        }
    }
}

/// A tree built from a scan, with what the scan saw.
#[derive(Clone, Debug)]
pub struct BuiltTree {
    /// The tree.
    pub tree: MerkleTree,
    /// Per leaf, its entries in the order pushed (empty when not kept).
    pub entries: Vec<Vec<KeyDigest>>,
    /// Entries pushed.
    pub keys: u64,
}

/// What two replicas must do about one differing leaf, from both sides'
/// entries: the keys where `ours` has a version `theirs` lacks or differs
/// from (to push), and the keys `theirs` has that `ours` lacks or differs
/// from (to pull). A differing key is in both lists: each side merges the
/// other's version, so neither loses a sibling.
pub fn repair_lists(ours: &[KeyDigest], theirs: &[KeyDigest]) -> (Vec<KeyDigest>, Vec<KeyDigest>) {
    use std::collections::HashMap;
    let index = |list: &[KeyDigest]| -> HashMap<(Vec<u8>, Vec<u8>), u64> {
        list.iter()
            .map(|e| ((e.bucket.clone(), e.key.clone()), e.digest))
            .collect()
    };
    let (mine, other) = (index(ours), index(theirs));
    let push = ours
        .iter()
        .filter(|e| other.get(&(e.bucket.clone(), e.key.clone())) != Some(&e.digest))
        .cloned()
        .collect();
    let pull = theirs
        .iter()
        .filter(|e| mine.get(&(e.bucket.clone(), e.key.clone())) != Some(&e.digest))
        .cloned()
        .collect();
    (push, pull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn build(range: TokenRange, leaves: usize, set: &BTreeMap<u64, u64>) -> BuiltTree {
        let mut b = TreeBuilder::new(range, leaves, true).unwrap();
        for (&t, &d) in set {
            b.push(
                Token(t),
                KeyDigest {
                    bucket: b"b".to_vec(),
                    key: t.to_be_bytes().to_vec(),
                    digest: d,
                },
            );
        }
        b.finish()
    }

    const WHOLE: TokenRange = TokenRange {
        after: Token(7),
        through: Token(7),
    };

    #[test]
    fn leaves_cut_the_range_evenly_even_when_it_wraps() {
        let r = TokenRange {
            after: Token(u64::MAX - 99),
            through: Token(100),
        };
        assert_eq!(r.len(), 200);
        assert_eq!(leaf_of(r, 2, Token(u64::MAX - 98)), Some(0));
        assert_eq!(leaf_of(r, 2, Token(u64::MAX)), Some(0));
        // 99 tokens before the wrap and 101 after: token 0 is the 100th.
        assert_eq!(leaf_of(r, 2, Token(0)), Some(0));
        assert_eq!(leaf_of(r, 2, Token(1)), Some(1));
        assert_eq!(leaf_of(r, 2, Token(100)), Some(1));
        assert_eq!(leaf_of(r, 2, Token(101)), None);
        assert_eq!(leaf_of(r, 3, Token(5)), None, "not a power of two");
        // The whole ring: every token has a leaf; the last is the last.
        assert_eq!(leaf_of(WHOLE, 64, Token(7)), Some(63));
        assert_eq!(leaf_of(WHOLE, 64, Token(8)), Some(0));
    }

    #[test]
    fn an_empty_range_has_a_zero_root_shape_and_order_do_not_matter() {
        let empty = build(WHOLE, 8, &BTreeMap::new());
        assert!(empty.tree.leaves().iter().all(|&h| h == 0));
        let entries: Vec<(u64, u64)> = (0..100u64).map(|i| (i * 0x0123_4567_89ab, i)).collect();
        let mut fwd = TreeBuilder::new(WHOLE, 8, false).unwrap();
        let mut back = TreeBuilder::new(WHOLE, 8, false).unwrap();
        let kd = |t: u64, d| KeyDigest {
            bucket: b"b".to_vec(),
            key: t.to_be_bytes().to_vec(),
            digest: d,
        };
        for &(t, d) in &entries {
            fwd.push(Token(t), kd(t, d));
        }
        for &(t, d) in entries.iter().rev() {
            back.push(Token(t), kd(t, d));
        }
        assert_eq!(fwd.finish().tree.root(), back.finish().tree.root());
        assert!(MerkleTree::from_leaves(WHOLE, vec![0; 3]).is_none());
    }

    #[test]
    fn repair_lists_push_and_pull_each_side_s_differences() {
        let e = |k: &str, d| KeyDigest {
            bucket: b"b".to_vec(),
            key: k.as_bytes().to_vec(),
            digest: d,
        };
        let ours = vec![e("same", 1), e("changed", 2), e("mine", 3)];
        let theirs = vec![e("same", 1), e("changed", 9), e("yours", 4)];
        let (push, pull) = repair_lists(&ours, &theirs);
        assert_eq!(push, vec![e("changed", 2), e("mine", 3)]);
        assert_eq!(pull, vec![e("changed", 9), e("yours", 4)]);
    }

    fn range_strategy() -> impl Strategy<Value = TokenRange> {
        (any::<u64>(), any::<u64>()).prop_map(|(a, t)| TokenRange {
            after: Token(a),
            through: Token(t),
        })
    }

    proptest! {
        #[test]
        fn equal_contents_iff_equal_roots(
            range in range_strategy(),
            a in proptest::collection::btree_map(any::<u64>(), 0u64..4, 0..40),
            b in proptest::collection::btree_map(any::<u64>(), 0u64..4, 0..40),
            k in 0u32..7,
        ) {
            let inside = |m: &BTreeMap<u64, u64>| -> BTreeMap<u64, u64> {
                m.iter().filter(|(&t, _)| range.contains(Token(t))).map(|(&t, &d)| (t, d)).collect()
            };
            let (a, b) = (inside(&a), inside(&b));
            let leaves = 1usize << k;
            let (ta, tb) = (build(range, leaves, &a), build(range, leaves, &b));
            prop_assert_eq!(a == b, ta.tree.root() == tb.tree.root());
            prop_assert_eq!(a == b, ta.tree.diff(&tb.tree).is_empty());
            // A tree always equals itself, and its copy from its leaves.
            let copy = MerkleTree::from_leaves(range, ta.tree.leaves().to_vec()).unwrap();
            prop_assert_eq!(copy.root(), ta.tree.root());
        }

        #[test]
        fn one_changed_object_changes_exactly_its_leaf(
            range in range_strategy(),
            set in proptest::collection::btree_map(any::<u64>(), 0u64..4, 1..40),
            pick in any::<prop::sample::Index>(),
            k in 0u32..7,
            new_digest in 4u64..100,
        ) {
            let mut a: BTreeMap<u64, u64> =
                set.iter().filter(|(&t, _)| range.contains(Token(t))).map(|(&t, &d)| (t, d)).collect();
            if a.is_empty() {
                a.insert(range.through.0, 1);
            }
            let leaves = 1usize << k;
            let victim = *pick.get(&a.keys().copied().collect::<Vec<_>>());
            let mut b = a.clone();
            b.insert(victim, new_digest);
            let (ta, tb) = (build(range, leaves, &a), build(range, leaves, &b));
            let expected = leaf_of(range, leaves, Token(victim)).unwrap();
            prop_assert_eq!(ta.tree.diff(&tb.tree), vec![expected]);
            // Removing it instead also changes exactly that leaf.
            let mut c = a.clone();
            c.remove(&victim);
            let tc = build(range, leaves, &c);
            prop_assert_eq!(ta.tree.diff(&tc.tree), vec![expected]);
        }
    }
}
