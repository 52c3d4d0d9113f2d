//! Counters: grow-only, and positive-negative.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Crdt;
use crate::id::NodeId;

/// A grow-only counter: one count per node, the value is their sum, merge
/// takes each node's maximum.
///
/// ```
/// use ringkv::crdt::{Crdt, GCounter};
/// use ringkv::NodeId;
/// let mut a = GCounter::new();
/// let mut b = GCounter::new();
/// a.increment(NodeId(1), 2);
/// b.increment(NodeId(2), 3);
/// a.merge(&b);
/// a.merge(&b); // merging twice counts once
/// assert_eq!(a.value(), 5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GCounter(BTreeMap<NodeId, u64>);

impl GCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        GCounter::default()
    }

    /// Adds `by` on behalf of `node`. Saturates at `u64::MAX` per node
    /// rather than wrapping, which would break monotonicity.
    pub fn increment(&mut self, node: NodeId, by: u64) {
        let c = self.0.entry(node).or_insert(0);
        *c = c.saturating_add(by);
    }

    /// The total, as a `u128` so that no sum of node counts overflows.
    pub fn value(&self) -> u128 {
        self.0.values().map(|&c| c as u128).sum()
    }

    /// The count contributed by `node`.
    pub fn count_of(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }
}

impl Crdt for GCounter {
    fn merge(&mut self, other: &Self) {
        for (&node, &c) in &other.0 {
            let mine = self.0.entry(node).or_insert(0);
            *mine = (*mine).max(c);
        }
    }
}

/// A counter that goes up and down: two grow-only counters, one of
/// increments and one of decrements.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PnCounter {
    /// Increments.
    pub p: GCounter,
    /// Decrements.
    pub n: GCounter,
}

impl PnCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        PnCounter::default()
    }

    /// Adds `by` (negative to subtract) on behalf of `node`.
    pub fn add(&mut self, node: NodeId, by: i64) {
        if by >= 0 {
            self.p.increment(node, by.unsigned_abs());
        } else {
            self.n.increment(node, by.unsigned_abs());
        }
    }

    /// Increments minus decrements.
    pub fn value(&self) -> i128 {
        self.p.value() as i128 - self.n.value() as i128
    }
}

impl Crdt for PnCounter {
    fn merge(&mut self, other: &Self) {
        self.p.merge(&other.p);
        self.n.merge(&other.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::laws;
    use proptest::prelude::*;

    fn arb_pn() -> impl Strategy<Value = PnCounter> {
        proptest::collection::vec((0u64..4, -5i64..5), 0..8).prop_map(|ops| {
            let mut c = PnCounter::new();
            for (n, by) in ops {
                c.add(NodeId(n), by);
            }
            c
        })
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut c = GCounter::new();
        c.increment(NodeId(1), u64::MAX);
        c.increment(NodeId(1), 5);
        assert_eq!(c.count_of(NodeId(1)), u64::MAX);
        c.increment(NodeId(2), u64::MAX);
        assert_eq!(c.value(), 2 * u64::MAX as u128);
    }

    proptest! {
        #[test]
        fn pn_counter_merge_is_a_join(a in arb_pn(), b in arb_pn(), c in arb_pn()) {
            laws::check_join(&a, &b, &c)?;
            laws::check_join(&a.p, &b.p, &c.p)?;
        }

        /// Three replicas each apply their own updates, gossiping states in
        /// a random schedule; after a full exchange in any order all hold
        /// the same counter, and its value is the sum of all updates.
        #[test]
        fn replicas_converge_to_the_sum(
            steps in proptest::collection::vec((0usize..3, 0usize..3, -5i64..5, any::<bool>()), 0..40),
            order in proptest::collection::vec(0usize..3, 0..6),
        ) {
            let mut replicas = vec![PnCounter::new(); 3];
            let mut expected = 0i128;
            for (at, from, by, gossip) in steps {
                if gossip {
                    let state = replicas[from].clone();
                    replicas[at].merge(&state);
                } else {
                    replicas[at].add(NodeId(at as u64), by);
                    expected += by as i128;
                }
            }
            laws::check_convergence(replicas.clone(), &order)?;
            let mut all = replicas[0].clone();
            for r in &replicas[1..] { all.merge(r); }
            prop_assert_eq!(all.value(), expected);
        }
    }
}
