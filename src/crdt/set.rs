//! Sets: grow-only, two-phase, and observed-remove (add wins).

use std::collections::{BTreeMap, BTreeSet};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::Crdt;
use crate::id::NodeId;
use crate::version::{Dot, VersionVector};

/// A grow-only set: elements can be added, never removed; merge is union.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GSet<T: Ord>(BTreeSet<T>);

impl<T: Ord> Default for GSet<T> {
    fn default() -> Self {
        GSet(BTreeSet::new())
    }
}

impl<T: Ord> GSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        GSet::default()
    }

    /// Adds `elem`.
    pub fn add(&mut self, elem: T) {
        self.0.insert(elem);
    }

    /// Whether `elem` is in the set.
    pub fn contains(&self, elem: &T) -> bool {
        self.0.contains(elem)
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord + Clone + Serialize + DeserializeOwned> Crdt for GSet<T> {
    fn merge(&mut self, other: &Self) {
        self.0.extend(other.0.iter().cloned());
    }
}

/// A two-phase set: an element can be added and then removed, and once
/// removed it can never come back (the removal is a permanent tombstone).
/// Removing an element that was never added is allowed and blocks it from
/// ever being added: with state-based replication the add may simply not
/// have arrived yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwoPSet<T: Ord> {
    /// Every element ever added.
    pub added: BTreeSet<T>,
    /// Every element ever removed.
    pub removed: BTreeSet<T>,
}

impl<T: Ord> Default for TwoPSet<T> {
    fn default() -> Self {
        TwoPSet {
            added: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Clone> TwoPSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        TwoPSet::default()
    }

    /// Adds `elem`. Returns false if it was removed before, in which case it
    /// stays out.
    pub fn add(&mut self, elem: T) -> bool {
        let live = !self.removed.contains(&elem);
        self.added.insert(elem);
        live
    }

    /// Removes `elem`, for good.
    pub fn remove(&mut self, elem: T) {
        self.removed.insert(elem);
    }

    /// Whether `elem` was added and never removed.
    pub fn contains(&self, elem: &T) -> bool {
        self.added.contains(elem) && !self.removed.contains(elem)
    }

    /// The live elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.added.difference(&self.removed)
    }
}

impl<T: Ord + Clone + Serialize + DeserializeOwned> Crdt for TwoPSet<T> {
    fn merge(&mut self, other: &Self) {
        self.added.extend(other.added.iter().cloned());
        self.removed.extend(other.removed.iter().cloned());
    }
}

/// An observed-remove set where a concurrent add wins over a remove.
///
/// Each add is tagged with a fresh [`Dot`] of the adding node; a remove
/// deletes the tags it has observed. The set's context records every tag it
/// has seen, so on merge a tag missing from one side is told apart: if that
/// side has seen it, it was removed there and goes; if not, it was added
/// concurrently and stays. So an element removed on one replica while
/// another replica concurrently adds it is present after the merge, and an
/// element can be removed and re-added any number of times. Removed
/// elements leave no tombstone: only the context (one counter per node)
/// grows.
///
/// ```
/// use ringkv::crdt::{Crdt, OrSet};
/// use ringkv::NodeId;
/// let mut a = OrSet::new();
/// a.add(NodeId(1), "x".to_string());
/// let mut b = a.clone();
/// b.remove(&"x".to_string());        // b removes the x it saw...
/// a.add(NodeId(1), "x".to_string()); // ...while a adds x again
/// a.merge(&b);
/// assert!(a.contains(&"x".to_string())); // the add wins
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet<T: Ord> {
    entries: BTreeMap<T, Dots>,
    context: VersionVector,
}

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        OrSet {
            entries: BTreeMap::new(),
            context: VersionVector::new(),
        }
    }
}

impl<T: Ord + Clone> OrSet<T> {
    /// The empty set.
    pub fn new() -> Self {
        OrSet::default()
    }

    /// Adds `elem` on behalf of `node`, replacing the tags this replica has
    /// observed for it with one fresh tag.
    pub fn add(&mut self, node: NodeId, elem: T) {
        let dot = self.context.next_dot(node);
        self.entries.insert(elem, Dots(vec![dot]));
    }

    /// Removes `elem` as observed here. Returns whether it was present.
    pub fn remove(&mut self, elem: &T) -> bool {
        self.entries.remove(elem).is_some()
    }

    /// Whether `elem` is in the set.
    pub fn contains(&self, elem: &T) -> bool {
        self.entries.contains_key(elem)
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.keys()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T: Ord + Clone + Serialize + DeserializeOwned> Crdt for OrSet<T> {
    fn merge(&mut self, other: &Self) {
        // A tag survives when both sides hold it, or when the side that
        // lacks it has never seen it (it was added there concurrently).
        let kept = |mine: Option<&Dots>, theirs: Option<&Dots>| -> Dots {
            let none = Dots(Vec::new());
            let (mine, theirs) = (mine.unwrap_or(&none), theirs.unwrap_or(&none));
            let mut dots: Vec<Dot> = mine
                .iter()
                .filter(|d| theirs.contains(d) || !other.context.contains(**d))
                .chain(
                    theirs
                        .iter()
                        .filter(|d| !mine.contains(d) && !self.context.contains(**d)),
                )
                .copied()
                .collect();
            dots.sort_unstable();
            dots.dedup();
            Dots(dots)
        };
        // Both maps are sorted: one pass over the two, cloning only the
        // elements this side lacks.
        let mine = std::mem::take(&mut self.entries);
        let mut merged: Vec<(T, Dots)> = Vec::with_capacity(mine.len().max(other.entries.len()));
        let mut a = mine.into_iter().peekable();
        let mut b = other.entries.iter().peekable();
        loop {
            let order = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((x, _)), Some((y, _))) => x.cmp(y),
            };
            let (elem, dots) = match order {
                std::cmp::Ordering::Less => {
                    let (elem, dots) = a.next().expect("peeked");
                    let dots = kept(Some(&dots), None);
                    (elem, dots)
                }
                std::cmp::Ordering::Greater => {
                    let (elem, dots) = b.next().expect("peeked");
                    (elem.clone(), kept(None, Some(dots)))
                }
                std::cmp::Ordering::Equal => {
                    let (elem, dots) = a.next().expect("peeked");
                    let (_, theirs) = b.next().expect("peeked");
                    let dots = kept(Some(&dots), Some(theirs));
                    (elem, dots)
                }
            };
            if !dots.0.is_empty() {
                merged.push((elem, dots));
            }
        }
        // Already in order: the map is built without a search per element.
        self.entries = merged.into_iter().collect();
        self.context.merge(&other.context);
    }
}

/// The tags of one element of an [`OrSet`], sorted and without repeats.
///
/// Nearly always one tag (an add replaces the tags it observed), so a
/// sorted vector rather than a tree: a set of n elements decodes into n
/// one-tag vectors instead of n tree nodes. It encodes as the same CBOR
/// array a `BTreeSet<Dot>` did, and decoding sorts and drops repeats, so
/// sets stored before read back alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
struct Dots(Vec<Dot>);

impl<'de> Deserialize<'de> for Dots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut dots = Vec::<Dot>::deserialize(d)?;
        dots.sort_unstable();
        dots.dedup();
        Ok(Dots(dots))
    }
}

impl Dots {
    fn contains(&self, dot: &Dot) -> bool {
        self.0.binary_search(dot).is_ok()
    }

    fn iter(&self) -> std::slice::Iter<'_, Dot> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::laws;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Add(usize, u8),
        Remove(usize, u8),
        Gossip { from: usize, to: usize },
    }

    fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                (0usize..3, 0u8..5).prop_map(|(r, e)| Step::Add(r, e)),
                (0usize..3, 0u8..5).prop_map(|(r, e)| Step::Remove(r, e)),
                (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Gossip { from, to }),
            ],
            0..40,
        )
    }

    /// Three replicas run the steps; returns their states.
    fn run_or(steps: &[Step]) -> Vec<OrSet<u8>> {
        let mut rs = vec![OrSet::new(); 3];
        for step in steps {
            match *step {
                Step::Add(r, e) => rs[r].add(NodeId(r as u64), e),
                Step::Remove(r, e) => {
                    rs[r].remove(&e);
                }
                Step::Gossip { from, to } => {
                    let s = rs[from].clone();
                    rs[to].merge(&s);
                }
            }
        }
        rs
    }

    fn run_2p(steps: &[Step]) -> Vec<TwoPSet<u8>> {
        let mut rs = vec![TwoPSet::new(); 3];
        for step in steps {
            match *step {
                Step::Add(r, e) => {
                    rs[r].add(e);
                }
                Step::Remove(r, e) => rs[r].remove(e),
                Step::Gossip { from, to } => {
                    let s = rs[from].clone();
                    rs[to].merge(&s);
                }
            }
        }
        rs
    }

    #[test]
    fn two_phase_removal_is_final() {
        let mut s = TwoPSet::new();
        assert!(s.add(1));
        s.remove(1);
        assert!(!s.add(1));
        assert!(!s.contains(&1));
        assert_eq!(s.iter().count(), 0);
    }

    #[test]
    fn or_set_readds_after_remove() {
        let mut s = OrSet::new();
        s.add(NodeId(1), 7);
        assert!(s.remove(&7));
        assert!(!s.contains(&7));
        s.add(NodeId(1), 7);
        assert!(s.contains(&7));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn or_set_observed_remove_propagates() {
        let mut a = OrSet::new();
        a.add(NodeId(1), 7);
        let mut b = a.clone();
        b.remove(&7);
        a.merge(&b);
        assert!(
            !a.contains(&7),
            "a remove of an observed add wins over the stale copy"
        );
    }

    /// An OR-Set encodes as it did when an element's tags were a
    /// `BTreeSet<Dot>`, and tags out of order or repeated decode sorted
    /// and once, so sets stored before the change read back alike.
    #[test]
    fn or_set_tags_keep_their_encoding_and_decode_normalised() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Before {
            entries: BTreeMap<u8, BTreeSet<Dot>>,
            context: VersionVector,
        }
        #[derive(Serialize)]
        struct Raw {
            entries: BTreeMap<u8, Vec<Dot>>,
            context: VersionVector,
        }
        let mut a = OrSet::new();
        a.add(NodeId(1), 7u8);
        a.add(NodeId(2), 9u8);
        let mut b = OrSet::new();
        b.add(NodeId(3), 7u8);
        a.merge(&b); // 7 holds two tags now
        let bytes = crate::codec::encode(&a).unwrap();
        let before: Before = crate::codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(before.entries[&7].len(), 2);
        assert_eq!(crate::codec::encode(&before).unwrap(), bytes);
        let dot = |node, counter| Dot {
            node: NodeId(node),
            counter,
        };
        let raw = Raw {
            entries: BTreeMap::from([(7u8, vec![dot(3, 1), dot(1, 1), dot(3, 1)])]),
            context: a.context.clone(),
        };
        let decoded: OrSet<u8> =
            crate::codec::decode(&crate::codec::encode(&raw).unwrap(), 1 << 20).unwrap();
        assert_eq!(decoded.entries[&7].0, vec![dot(1, 1), dot(3, 1)]);
    }

    proptest! {
        #[test]
        fn g_set_merge_is_a_join(
            a in proptest::collection::btree_set(0u8..10, 0..6),
            b in proptest::collection::btree_set(0u8..10, 0..6),
            c in proptest::collection::btree_set(0u8..10, 0..6),
        ) {
            laws::check_join(&GSet(a), &GSet(b), &GSet(c))?;
        }

        #[test]
        fn two_p_set_merge_is_a_join_and_converges(steps in arb_steps(), order in proptest::collection::vec(0usize..3, 0..6)) {
            let rs = run_2p(&steps);
            laws::check_join(&rs[0], &rs[1], &rs[2])?;
            laws::check_convergence(rs, &order)?;
        }

        #[test]
        fn or_set_merge_is_a_join_and_converges(steps in arb_steps(), order in proptest::collection::vec(0usize..3, 0..6)) {
            let rs = run_or(&steps);
            laws::check_join(&rs[0], &rs[1], &rs[2])?;
            laws::check_convergence(rs, &order)?;
        }

        /// Add wins: an element is in the merged set iff some replica holds
        /// an add of it that no replica's remove observed.
        #[test]
        fn or_set_add_wins(steps in arb_steps()) {
            let rs = run_or(&steps);
            let mut all = rs[0].clone();
            for r in &rs[1..] { all.merge(r); }
            for e in 0u8..5 {
                let surviving_add = rs.iter().any(|r| {
                    r.entries.get(&e).is_some_and(|dots| dots.iter().any(|&d| {
                        rs.iter().all(|o| o.entries.get(&e).is_some_and(|x| x.contains(&d)) || !o.context.contains(d))
                    }))
                });
                prop_assert_eq!(all.contains(&e), surviving_add);
            }
        }
    }
}
