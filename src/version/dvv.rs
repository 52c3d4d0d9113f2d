//! Version vectors, dots and dotted version vectors.
//!
//! A [`Dot`] names one write: the node that coordinated it and that node's
//! counter for it. A [`VersionVector`] is a causal history that is
//! contiguous per node: `{a: 3}` means writes `a1`, `a2` and `a3`. A
//! [`Dvv`] (dotted version vector, as in Riak) names one *version*: its own
//! dot, and the version vector of what its writer had seen. The dot need not
//! be contiguous with the vector: `(a5, {a: 3})` is a write coordinated by
//! `a` whose client had seen only up to `a3`, and it is concurrent with
//! `(a4, {a: 3})`. Plain version vectors cannot say that without either
//! losing one of the two writes or growing a new entry per client; that
//! precision is why DVVs are used.
//!
//! Laws, checked by property tests: `descends` is a partial order;
//! `concurrent` is symmetric and irreflexive; `merge` is the least upper
//! bound (commutative, associative, idempotent); [`sync`] of two sets of
//! versions keeps exactly the versions that no version in either set
//! descends from, and is itself commutative, associative and idempotent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// One event: the `counter`-th write coordinated by `node`.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
pub struct Dot {
    /// The node that coordinated the write (the actor).
    pub node: NodeId,
    /// That node's counter for it, starting at 1.
    pub counter: u64,
}

/// A causal history, contiguous per node: for each node, the highest
/// counter seen; every lower counter is seen too. Absent nodes are at 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    /// The empty history.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// The counter for `node` (0 when absent).
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Whether `dot` is in this history.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// Adds `dot` and everything before it on its node. Returns whether
    /// this history grew.
    pub fn add(&mut self, dot: Dot) -> bool {
        if dot.counter <= self.get(dot.node) {
            return false;
        }
        self.0.insert(dot.node, dot.counter);
        true
    }

    /// The next dot for `node` after this history, recorded in it.
    pub fn next_dot(&mut self, node: NodeId) -> Dot {
        let dot = Dot {
            node,
            counter: self.get(node).saturating_add(1),
        };
        self.add(dot);
        dot
    }

    /// Whether this history includes all of `other`'s (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&n, &c)| self.get(n) >= c)
    }

    /// Whether neither history includes the other.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// Joins `other` into this history: the pointwise maximum. Returns
    /// whether this history grew.
    pub fn merge(&mut self, other: &VersionVector) -> bool {
        let mut grew = false;
        for (&node, &counter) in &other.0 {
            grew |= self.add(Dot { node, counter });
        }
        grew
    }

    /// The `(node, counter)` entries, by node.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.0.iter().map(|(&n, &c)| (n, c))
    }

    /// Whether the history is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (node, counter) in iter {
            vv.add(Dot { node, counter });
        }
        vv
    }
}

/// A dotted version vector: one version, named by its `dot`, written by a
/// client that had seen `past`.
///
/// ```
/// use ringkv::version::{Dot, Dvv, VersionVector};
/// use ringkv::NodeId;
/// let a = NodeId(1);
/// let seen: VersionVector = [(a, 3)].into_iter().collect();
/// let v4 = Dvv { dot: Dot { node: a, counter: 4 }, past: seen.clone() };
/// let v5 = Dvv { dot: Dot { node: a, counter: 5 }, past: seen };
/// assert!(v4.concurrent(&v5)); // two clients wrote over a3 at once
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dvv {
    /// The write that made this version.
    pub dot: Dot,
    /// What the writer had seen.
    pub past: VersionVector,
}

impl Dvv {
    /// Whether `event` is in this version's history (its past or its dot).
    pub fn has_seen(&self, event: Dot) -> bool {
        self.dot == event || self.past.contains(event)
    }

    /// Whether this version's history includes all of `other`'s: `other`
    /// is this version or one it overwrote.
    pub fn descends(&self, other: &Dvv) -> bool {
        if !self.has_seen(other.dot) {
            return false;
        }
        // `other.past` is contiguous per node; our history is our past plus
        // possibly one more dot, which extends a node's run only when it is
        // the very next counter.
        other.past.iter().all(|(n, c)| {
            let mut have = self.past.get(n);
            if self.dot.node == n && self.dot.counter == have + 1 {
                have = self.dot.counter;
            }
            have >= c
        })
    }

    /// Whether neither version descends from the other.
    pub fn concurrent(&self, other: &Dvv) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// The whole history of this version as a version vector: its past
    /// joined with its dot. Exact whenever the dot is the next counter of
    /// its node; otherwise it over-approximates by the gap, which is why
    /// objects keep the dots of their siblings next to one joined context.
    pub fn history(&self) -> VersionVector {
        let mut vv = self.past.clone();
        vv.add(self.dot);
        vv
    }
}

/// Reconciles two sets of versions: the versions of both that no version
/// of either set descends from (other than itself). Each input is expected
/// to hold no version descending from another in the same set; the result
/// keeps that property, in a canonical order.
pub fn sync(a: &[Dvv], b: &[Dvv]) -> Vec<Dvv> {
    let all: Vec<&Dvv> = a.iter().chain(b).collect();
    let mut kept: Vec<Dvv> = Vec::new();
    for v in &all {
        let dominated = all.iter().any(|w| w.dot != v.dot && w.descends(v));
        if !dominated && !kept.iter().any(|k| k.dot == v.dot) {
            kept.push((*v).clone());
        }
    }
    kept.sort_by_key(|v| v.dot);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        entries.iter().map(|&(n, c)| (NodeId(n), c)).collect()
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..4, 0u64..5), 0..5).prop_map(|e| vv(&e))
    }

    /// Versions from a causally consistent run: each write is coordinated
    /// by one of three nodes, which numbers it after its previous writes,
    /// over a client context that is the join of some earlier versions.
    fn arb_run() -> impl Strategy<Value = Vec<Dvv>> {
        proptest::collection::vec((0u64..3, any::<u16>()), 1..12).prop_map(|writes| {
            let mut counters = VersionVector::new();
            let mut run: Vec<Dvv> = Vec::new();
            for (node, seen) in writes {
                let mut past = VersionVector::new();
                for (i, v) in run.iter().enumerate() {
                    if seen & (1 << (i % 16)) != 0 {
                        past.merge(&v.history());
                    }
                }
                let dot = counters.next_dot(NodeId(node));
                run.push(Dvv { dot, past });
            }
            run
        })
    }

    fn pick(run: &[Dvv], mask: u16) -> Vec<Dvv> {
        let chosen: Vec<Dvv> = run
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << (i % 16)) != 0)
            .map(|(_, v)| v.clone())
            .collect();
        sync(&chosen, &[])
    }

    #[test]
    fn next_dot_counts_per_node() {
        let mut h = VersionVector::new();
        assert_eq!(
            h.next_dot(NodeId(1)),
            Dot {
                node: NodeId(1),
                counter: 1
            }
        );
        assert_eq!(
            h.next_dot(NodeId(1)),
            Dot {
                node: NodeId(1),
                counter: 2
            }
        );
        assert_eq!(h, vv(&[(1, 2)]));
        assert!(h.contains(Dot {
            node: NodeId(1),
            counter: 1
        }));
        assert!(!h.contains(Dot {
            node: NodeId(2),
            counter: 1
        }));
    }

    #[test]
    fn a_gap_dot_is_not_contiguous() {
        let a = NodeId(1);
        let v5 = Dvv {
            dot: Dot {
                node: a,
                counter: 5,
            },
            past: vv(&[(1, 3)]),
        };
        let v4 = Dvv {
            dot: Dot {
                node: a,
                counter: 4,
            },
            past: vv(&[(1, 3)]),
        };
        let over4 = Dvv {
            dot: Dot {
                node: a,
                counter: 6,
            },
            past: vv(&[(1, 4)]),
        };
        assert!(!v5.descends(&v4));
        assert!(over4.descends(&v4));
        assert!(over4.concurrent(&v5));
        assert_eq!(
            sync(&[v4.clone(), v5.clone()], std::slice::from_ref(&over4)),
            vec![v5, over4]
        );
    }

    proptest! {
        #[test]
        fn vv_descends_is_a_partial_order(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            prop_assert!(a.descends(&a));
            if a.descends(&b) && b.descends(&a) { prop_assert_eq!(&a, &b); }
            if a.descends(&b) && b.descends(&c) { prop_assert!(a.descends(&c)); }
            prop_assert_eq!(a.concurrent(&b), b.concurrent(&a));
            prop_assert!(!a.concurrent(&a));
        }

        #[test]
        fn vv_merge_is_the_least_upper_bound(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
            // Least: anything above both is above the merge.
            if c.descends(&a) && c.descends(&b) { prop_assert!(c.descends(&ab)); }
        }

        #[test]
        fn dvv_descends_is_a_partial_order_matching_histories(run in arb_run()) {
            for a in &run {
                prop_assert!(a.descends(a));
                for b in &run {
                    if a.descends(b) && b.descends(a) { prop_assert_eq!(a, b); }
                    prop_assert_eq!(a.concurrent(b), b.concurrent(a));
                    if a.descends(b) { prop_assert!(a.history().descends(&b.history())); }
                    for c in &run {
                        if a.descends(b) && b.descends(c) { prop_assert!(a.descends(c)); }
                    }
                }
            }
        }

        #[test]
        fn sync_is_commutative_associative_idempotent(
            run in arb_run(), ma in any::<u16>(), mb in any::<u16>(), mc in any::<u16>(),
        ) {
            let (a, b, c) = (pick(&run, ma), pick(&run, mb), pick(&run, mc));
            prop_assert_eq!(sync(&a, &b), sync(&b, &a));
            prop_assert_eq!(sync(&a, &a), a.clone());
            prop_assert_eq!(sync(&sync(&a, &b), &c), sync(&a, &sync(&b, &c)));
            // Nothing kept descends from another kept version, and
            // everything dropped is descended from by something kept.
            let s = sync(&a, &b);
            for x in &s {
                for y in &s {
                    prop_assert!(x.dot == y.dot || !x.descends(y));
                }
            }
            for x in a.iter().chain(&b) {
                prop_assert!(s.iter().any(|k| k.descends(x)));
            }
        }
    }
}
