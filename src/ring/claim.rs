//! Token claim: which tokens a joining node takes, and who inherits a
//! leaving node's ranges.
//!
//! # What it owns
//!
//! The placement policy, as pure functions from one ring snapshot to the
//! next ([`claim_join`], [`claim_leave`]). They read nothing but their
//! arguments, so the same ring and the same change give the same new ring on
//! every node, and they are tested and measured without a cluster. The
//! random-token baselines ([`random_join`], [`random_leave`]) are kept beside
//! them so the measurements in `docs/ring.md` compare the two.
//!
//! # The guarantee
//!
//! - **Minimal movement.** A join only inserts the new node's tokens; every
//!   old token keeps its owner. So the only ranges that change owner are
//!   pieces split off old ranges, and each moves from its old owner to the
//!   new node: never between two old nodes. A leave only gives the leaving
//!   node's tokens to other nodes; every other token keeps its owner. So the
//!   only ranges that move are the leaving node's.
//! - **Balance.** After a join, the new node owns `1/(n+1)` of the ring, up
//!   to rounding, taken from the nodes that owned the most. After a leave,
//!   the leaving node's ranges go, largest first, to whoever owns least.
//!   Either way the largest share stays within about one range's worth of
//!   the mean (about `1 + 1/V` for V tokens per node).
//!
//! # How a join claims
//!
//! Let `n` old nodes own shares `own(i)`, and `target = 2^64/(n+1)`. Each old
//! node has `excess(i) = own(i) - target` to give away; the excesses add up
//! to exactly `target`, the new node's share. The new node places its V
//! tokens one at a time. For token `k` it wants `q = remaining / (V - k)`
//! more of the ring; it picks the old node with the largest excess, takes
//! that node's largest range `(a, b]`, and places its token at `a + q`: it
//! now owns `(a, a + q]` and the old node keeps `(a + q, b]`. Then the
//! node's excess and the remaining need drop by `q`. Because every take is
//! about `target/V` and always from the node furthest above target, all old
//! nodes end within about one take of the target.
//!
//! The first node places V evenly spaced tokens.
//!
//! # What it does not do
//!
//! No rack or zone awareness, and no guarantee that N consecutive tokens
//! belong to N distinct nodes: preference lists walk past repeats instead.
//! Weights (nodes of different size) are not supported.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rand::Rng;

use super::{Ring, Token, VNode, TOKEN_SPACE};
use crate::error::{Error, Result};
use crate::message::NodeId;

/// The ring after `node` joins with `vnodes` tokens placed by the balancing
/// claim. The epoch rises by one.
///
/// ```
/// use ringkv::ring::{claim_join, Ring};
/// use ringkv::NodeId;
/// let mut ring = Ring::empty();
/// for id in 1..=10 {
///     ring = claim_join(&ring, NodeId(id), 160).unwrap();
/// }
/// assert!(ring.balance() <= 1.05);
/// ```
pub fn claim_join(ring: &Ring, node: NodeId, vnodes: usize) -> Result<Ring> {
    check_join(ring, node, vnodes)?;
    let mut all: Vec<VNode> = ring.vnodes().collect();
    if ring.is_empty() {
        let step = TOKEN_SPACE / vnodes as u128;
        all.extend((0..vnodes as u128).map(|k| VNode {
            // k < vnodes, so k * step < 2^64.
            token: Token((k * step) as u64),
            node,
        }));
        return Ok(ring.successor(all));
    }

    let owned = ring.ownership();
    let target = TOKEN_SPACE / (owned.len() as u128 + 1);
    let mut excess: BTreeMap<NodeId, i128> = owned
        .iter()
        .map(|(&n, &o)| (n, o as i128 - target as i128))
        .collect();
    // Each donor's ranges, largest first; ties by token so the result is
    // the same on every node.
    let mut ranges: BTreeMap<NodeId, BinaryHeap<(u128, Reverse<u64>)>> = BTreeMap::new();
    for (range, owner) in ring.ranges() {
        ranges
            .entry(owner)
            .or_default()
            .push((range.len(), Reverse(range.after.0)));
    }

    let mut remaining = target;
    for k in 0..vnodes {
        let want = (remaining / (vnodes - k) as u128).max(1);
        // The donor furthest above target that still has a range to split.
        let donor = excess
            .iter()
            .filter(|(n, _)| {
                ranges
                    .get(n)
                    .and_then(|h| h.peek())
                    .is_some_and(|r| r.0 >= 2)
            })
            .max_by_key(|(&n, &e)| (e, Reverse(n)))
            .map(|(&n, _)| n);
        let Some(donor) = donor else {
            return Err(Error::RingChange {
                node,
                reason: "no range left to split: the ring is full",
            });
        };
        let heap = ranges.get_mut(&donor).ok_or(Error::RingChange {
            node,
            reason: "claim lost track of a donor's ranges",
        })?;
        let Some((len, Reverse(after))) = heap.pop() else {
            continue;
        };
        let take = want.clamp(1, len - 1);
        // take < len <= 2^64, so it fits, and the new token lies strictly
        // inside the range: it collides with no other token.
        let token = after.wrapping_add(take as u64);
        all.push(VNode {
            token: Token(token),
            node,
        });
        heap.push((len - take, Reverse(token)));
        if let Some(e) = excess.get_mut(&donor) {
            *e -= take as i128;
        }
        remaining = remaining.saturating_sub(take);
    }
    Ok(ring.successor(all))
}

/// The ring after `node` leaves: each of its ranges, largest first, goes to
/// the remaining node that owns least (ties to the lower id). The tokens
/// stay where they are, so nothing else moves. The epoch rises by one.
pub fn claim_leave(ring: &Ring, node: NodeId) -> Result<Ring> {
    check_leave(ring, node)?;
    let mut owned = ring.ownership();
    owned.remove(&node);
    let mut leaving: Vec<(u128, usize)> = Vec::new();
    let mut all: Vec<VNode> = Vec::with_capacity(ring.len());
    for (i, (range, owner)) in ring.ranges().enumerate() {
        if owner == node {
            leaving.push((range.len(), i));
        }
        all.push(VNode {
            token: range.through,
            node: owner,
        });
    }
    if owned.is_empty() {
        return Ok(ring.successor(Vec::new()));
    }
    leaving.sort_by_key(|&(len, i)| (Reverse(len), i));
    for (len, i) in leaving {
        let heir = owned
            .iter()
            .min_by_key(|(&n, &o)| (o, n))
            .map(|(&n, _)| n)
            .ok_or(Error::RingChange {
                node,
                reason: "no node left to inherit",
            })?;
        all[i].node = heir;
        if let Some(o) = owned.get_mut(&heir) {
            *o += len;
        }
    }
    Ok(ring.successor(all))
}

/// The baseline: the ring after `node` joins with `vnodes` uniformly random
/// tokens (skipping any already taken). For measurement, not production.
pub fn random_join(ring: &Ring, node: NodeId, vnodes: usize, rng: &mut impl Rng) -> Result<Ring> {
    check_join(ring, node, vnodes)?;
    let mut all: Vec<VNode> = ring.vnodes().collect();
    let mut taken: std::collections::HashSet<Token> = ring.tokens.iter().copied().collect();
    while all.len() < ring.len() + vnodes {
        let token = Token(rng.random());
        if taken.insert(token) {
            all.push(VNode { token, node });
        }
    }
    Ok(ring.successor(all))
}

/// The baseline: the ring after `node` leaves by dropping its tokens, so
/// each of its ranges goes to the next token's owner.
pub fn random_leave(ring: &Ring, node: NodeId) -> Result<Ring> {
    check_leave(ring, node)?;
    Ok(ring.successor(ring.vnodes().filter(|v| v.node != node).collect()))
}

fn check_join(ring: &Ring, node: NodeId, vnodes: usize) -> Result<()> {
    if vnodes == 0 {
        return Err(Error::InvalidInput(
            "a node must claim at least one token".into(),
        ));
    }
    if ring.is_member(node) {
        return Err(Error::RingChange {
            node,
            reason: "already a member",
        });
    }
    Ok(())
}

fn check_leave(ring: &Ring, node: NodeId) -> Result<()> {
    if !ring.is_member(node) {
        return Err(Error::RingChange {
            node,
            reason: "not a member",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn claimed(nodes: u64, vnodes: usize) -> Ring {
        let mut ring = Ring::empty();
        for id in 1..=nodes {
            ring = claim_join(&ring, NodeId(id), vnodes).unwrap();
        }
        ring
    }

    #[test]
    fn first_node_spaces_its_tokens_evenly() {
        let ring = claimed(1, 4);
        let tokens: Vec<u64> = ring.vnodes().map(|v| v.token.0).collect();
        assert_eq!(tokens, vec![0, 1 << 62, 1 << 63, 3 << 62]);
        assert_eq!(ring.balance(), 1.0);
    }

    #[test]
    fn ten_claimed_nodes_are_within_five_percent() {
        let ring = claimed(10, 160);
        assert!(ring.balance() <= 1.05, "{}", ring.balance());
        assert_eq!(ring.len(), 1600);
        assert_eq!(ring.epoch(), 10);
    }

    #[test]
    fn random_tokens_are_worse() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ring = Ring::empty();
        for id in 1..=10 {
            ring = random_join(&ring, NodeId(id), 160, &mut rng).unwrap();
        }
        assert!(ring.balance() > claimed(10, 160).balance());
    }

    #[test]
    fn balance_holds_through_joins_and_leaves() {
        let mut ring = claimed(12, 160);
        for (leave, join) in [(3, 20), (7, 21), (20, 22), (1, 23), (12, 24)] {
            ring = claim_leave(&ring, NodeId(leave)).unwrap();
            assert!(ring.balance() <= 1.05, "after leave: {}", ring.balance());
            ring = claim_join(&ring, NodeId(join), 160).unwrap();
            assert!(ring.balance() <= 1.05, "after join: {}", ring.balance());
        }
    }

    #[test]
    fn bad_changes_are_refused() {
        let ring = claimed(2, 8);
        assert!(matches!(
            claim_join(&ring, NodeId(1), 8),
            Err(Error::RingChange { .. })
        ));
        assert!(matches!(
            claim_leave(&ring, NodeId(9)),
            Err(Error::RingChange { .. })
        ));
        assert!(claim_join(&ring, NodeId(3), 0).is_err());
        let last = claim_leave(&claim_leave(&ring, NodeId(1)).unwrap(), NodeId(2)).unwrap();
        assert!(last.is_empty());
        assert_eq!(last.epoch(), 4);
    }

    #[test]
    fn a_tiny_range_is_never_split_into_a_collision() {
        // Two tokens one apart: the range between them cannot be split.
        let ring = Ring::from_vnodes(
            1,
            vec![
                VNode {
                    token: Token(10),
                    node: NodeId(1),
                },
                VNode {
                    token: Token(11),
                    node: NodeId(1),
                },
            ],
        )
        .unwrap();
        let next = claim_join(&ring, NodeId(2), 50).unwrap();
        assert_eq!(next.len(), 52);
        assert!(next.balance() < 1.05);
    }
}
