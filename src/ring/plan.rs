//! Move plans: exactly which token ranges change hands between two rings.
//!
//! # What it owns
//!
//! [`MovePlan::between`] compares two ring snapshots and lists every token
//! range whose owner (first replica) differs, with the old and the new
//! owner. [`MovePlan::replicas_between`] does the same for whole
//! preference lists of `n` replicas: for each range, which nodes gain a
//! replica and which lose one. The handoff executor carries these out; this
//! module only decides.
//!
//! # How
//!
//! The union of both rings' tokens cuts the token space into elementary
//! ranges, inside which neither ring has a boundary, so each has one owner
//! (and one preference list) in each ring. Elementary ranges whose owners
//! differ become moves; neighbouring moves with the same pair of nodes are
//! joined. The cost is O((V1 + V2) log(V1 + V2)).
//!
//! # What it does not do
//!
//! It does not look at data: a plan names ranges, and a range with no keys
//! moves nothing. It does not order or throttle transfers.

use serde::{Deserialize, Serialize};

use super::{Ring, Token, TOKEN_SPACE};
use crate::id::NodeId;

/// A contiguous range of tokens: from `after` (exclusive) to `through`
/// (inclusive), wrapping past `u64::MAX`. When `after == through` the range
/// is the whole ring.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenRange {
    /// The token just before the range.
    pub after: Token,
    /// The last token in the range.
    pub through: Token,
}

impl TokenRange {
    /// Whether `token` lies in the range.
    ///
    /// ```
    /// use ringkv::ring::{Token, TokenRange};
    /// let wrapping = TokenRange { after: Token(u64::MAX - 1), through: Token(5) };
    /// assert!(wrapping.contains(Token(u64::MAX)));
    /// assert!(wrapping.contains(Token(0)));
    /// assert!(!wrapping.contains(Token(6)));
    /// ```
    pub fn contains(&self, token: Token) -> bool {
        let (a, t, x) = (self.after.0, self.through.0, token.0);
        if a < t {
            a < x && x <= t
        } else if a > t {
            x > a || x <= t
        } else {
            true
        }
    }

    /// Whether the two ranges share a token. Two arcs of the ring share
    /// one exactly when one holds the other's last token.
    ///
    /// ```
    /// use ringkv::ring::{Token, TokenRange};
    /// let r = |a, t| TokenRange { after: Token(a), through: Token(t) };
    /// assert!(r(10, 20).overlaps(&r(19, 30)));
    /// assert!(!r(10, 20).overlaps(&r(20, 30)));
    /// assert!(r(u64::MAX - 1, 5).overlaps(&r(3, 4)));
    /// assert!(r(7, 7).overlaps(&r(100, 101)));
    /// ```
    pub fn overlaps(&self, other: &TokenRange) -> bool {
        self.contains(other.through) || other.contains(self.through)
    }

    /// The number of tokens in the range (2^64 for the whole ring).
    pub fn len(&self) -> u128 {
        match self.through.0.wrapping_sub(self.after.0) {
            0 => TOKEN_SPACE,
            n => n as u128,
        }
    }

    /// Always false: a range holds at least one token.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// One range moving from one node to another.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeMove {
    /// The tokens that move.
    pub range: TokenRange,
    /// The node that holds them in the old ring.
    pub from: NodeId,
    /// The node that holds them in the new ring.
    pub to: NodeId,
}

/// The moves that take one ring to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovePlan {
    /// Epoch of the ring moved from.
    pub from_epoch: u64,
    /// Epoch of the ring moved to.
    pub to_epoch: u64,
    /// The ranges that change hands, in token order. Ranges do not overlap.
    pub moves: Vec<RangeMove>,
}

impl MovePlan {
    /// The ownership moves (first replica) from `old` to `new`. Empty when
    /// either ring is empty: there is no data to move, or no one to move it
    /// to.
    ///
    /// ```
    /// use ringkv::ring::{claim_join, MovePlan, Ring};
    /// use ringkv::NodeId;
    /// let mut old = Ring::empty();
    /// for id in 1..=3 {
    ///     old = claim_join(&old, NodeId(id), 32).unwrap();
    /// }
    /// let new = claim_join(&old, NodeId(4), 32).unwrap();
    /// let plan = MovePlan::between(&old, &new);
    /// assert!(plan.moves.iter().all(|m| m.to == NodeId(4)));
    /// ```
    pub fn between(old: &Ring, new: &Ring) -> MovePlan {
        let mut moves: Vec<RangeMove> = Vec::new();
        for (range, from, to) in elementary(old, new, |ring, t| ring.owner(t)) {
            if from == to {
                continue;
            }
            match moves.last_mut() {
                Some(last)
                    if last.range.through == range.after && last.from == from && last.to == to =>
                {
                    last.range.through = range.through;
                }
                _ => moves.push(RangeMove { range, from, to }),
            }
        }
        MovePlan {
            from_epoch: old.epoch(),
            to_epoch: new.epoch(),
            moves,
        }
    }

    /// The replica transfers from `old` to `new` with `n` replicas per key:
    /// for each range, every node that gains a replica receives it from one
    /// node that loses one (paired in preference-list order), or, when no
    /// node loses one, from the range's old first replica.
    pub fn replicas_between(old: &Ring, new: &Ring, n: usize) -> MovePlan {
        let mut moves: Vec<RangeMove> = Vec::new();
        // Each move's old replicas: neighbouring ranges join into one move
        // only when they have the same, so that every key of a move has
        // the old replicas its sources are chosen from
        // (`RingState::sources` reads them at the range's end). Joined
        // across a change of old replicas, a move pulled part of its
        // range from nodes that never held it, and a quorum's write was
        // missed (the simulator found it, `docs/simulation.md`).
        let mut olds: Vec<Vec<NodeId>> = Vec::new();
        let lists = elementary(old, new, |ring, t| Some(ring.preference_list(t, n)));
        for (range, before, after) in lists {
            let gained = after.iter().filter(|x| !before.contains(x));
            let mut lost = before.iter().filter(|x| !after.contains(x));
            for &to in gained {
                let Some(&from) = lost.next().or(before.first()) else {
                    continue;
                };
                let k = moves.len();
                match (0..k).rev().take(n).find(|&i| {
                    let m = &moves[i];
                    m.range.through == range.after
                        && m.from == from
                        && m.to == to
                        && olds[i] == before
                }) {
                    Some(i) => moves[i].range.through = range.through,
                    None => {
                        moves.push(RangeMove { range, from, to });
                        olds.push(before.clone());
                    }
                }
            }
        }
        MovePlan {
            from_epoch: old.epoch(),
            to_epoch: new.epoch(),
            moves,
        }
    }

    /// The ranges `node` replicates (among the first `n`) in `old` and not
    /// in `new`: what it may drop once `new` is in force. Neighbouring
    /// ranges are joined.
    ///
    /// ```
    /// use ringkv::ring::{claim_join, MovePlan, Ring};
    /// use ringkv::NodeId;
    /// let mut old = Ring::empty();
    /// for id in 1..=4 {
    ///     old = claim_join(&old, NodeId(id), 16).unwrap();
    /// }
    /// let new = claim_join(&old, NodeId(5), 16).unwrap();
    /// let lost = MovePlan::lost_ranges(&old, &new, 3, NodeId(1));
    /// assert!(!lost.is_empty());
    /// for r in &lost {
    ///     assert!(old.preference_list(r.through, 3).contains(&NodeId(1)));
    ///     assert!(!new.preference_list(r.through, 3).contains(&NodeId(1)));
    /// }
    /// assert!(MovePlan::lost_ranges(&old, &new, 3, NodeId(5)).is_empty());
    /// ```
    pub fn lost_ranges(old: &Ring, new: &Ring, n: usize, node: NodeId) -> Vec<TokenRange> {
        let mut out: Vec<TokenRange> = Vec::new();
        let lists = elementary(old, new, |ring, t| Some(ring.preference_list(t, n)));
        for (range, before, after) in lists {
            if !before.contains(&node) || after.contains(&node) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.through == range.after => last.through = range.through,
                _ => out.push(range),
            }
        }
        out
    }

    /// The move covering `token`, if it moves.
    pub fn move_of(&self, token: Token) -> Option<&RangeMove> {
        self.moves.iter().find(|m| m.range.contains(token))
    }

    /// Total number of tokens that change hands.
    pub fn tokens_moved(&self) -> u128 {
        self.moves.iter().map(|m| m.range.len()).sum()
    }
}

/// The elementary ranges of the union of both rings' tokens, in token order
/// starting after the smallest token, with what `look` says of each ring.
/// Empty when either ring is empty.
fn elementary<T: Clone>(
    old: &Ring,
    new: &Ring,
    look: impl Fn(&Ring, Token) -> Option<T>,
) -> Vec<(TokenRange, T, T)> {
    if old.is_empty() || new.is_empty() {
        return Vec::new();
    }
    let mut cuts: Vec<Token> = old.tokens.iter().chain(&new.tokens).copied().collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len());
    for (i, &through) in cuts.iter().enumerate() {
        let after = if i == 0 {
            cuts[cuts.len() - 1]
        } else {
            cuts[i - 1]
        };
        // No token of either ring lies inside (after, through), so the
        // range's last token speaks for all of it.
        if let (Some(a), Some(b)) = (look(old, through), look(new, through)) {
            out.push((TokenRange { after, through }, a, b));
        }
    }
    // Start after the smallest cut so that coalescing never has to wrap
    // except across the range ending at the smallest token.
    out.rotate_left(1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{claim_join, claim_leave, VNode};

    fn ring(vnodes: &[(u64, u64)]) -> Ring {
        Ring::from_vnodes(
            1,
            vnodes
                .iter()
                .map(|&(t, n)| VNode {
                    token: Token(t),
                    node: NodeId(n),
                })
                .collect(),
        )
        .unwrap()
    }

    /// Every key of a move has the same old replicas: the sources of a
    /// move are chosen from those at its range's end, so a move joined
    /// across a change of old replicas pulled part of its range from
    /// nodes that never held it.
    #[test]
    fn every_key_of_a_move_has_the_old_replicas_of_its_end() {
        let mut old = Ring::empty();
        for id in 1..=5 {
            old = claim_join(&old, NodeId(id), 16).unwrap();
        }
        let joined = claim_join(&old, NodeId(6), 16).unwrap();
        let left = claim_leave(&old, NodeId(3)).unwrap();
        let mut checked = 0;
        for new in [&joined, &left] {
            let plan = MovePlan::replicas_between(&old, new, 3);
            assert!(!plan.moves.is_empty());
            for m in &plan.moves {
                let at_end = old.preference_list(m.range.through, 3);
                // The first token of the range and every token boundary
                // of either ring inside it.
                let inside = old
                    .vnodes()
                    .chain(new.vnodes())
                    .map(|v| v.token)
                    .chain([Token(m.range.after.0.wrapping_add(1))])
                    .filter(|&t| m.range.contains(t));
                for t in inside {
                    assert_eq!(old.preference_list(t, 3), at_end, "{m:?} at {t:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn a_split_moves_exactly_the_split_off_piece() {
        let old = ring(&[(100, 1), (200, 2)]);
        let new = ring(&[(100, 1), (150, 3), (200, 2)]);
        let plan = MovePlan::between(&old, &new);
        assert_eq!(
            plan.moves,
            vec![RangeMove {
                range: TokenRange {
                    after: Token(100),
                    through: Token(150)
                },
                from: NodeId(2),
                to: NodeId(3),
            }]
        );
        assert_eq!(plan.tokens_moved(), 50);
        assert!(plan.move_of(Token(120)).is_some());
        assert!(plan.move_of(Token(170)).is_none());
    }

    #[test]
    fn a_wrapping_range_moves_whole() {
        let old = ring(&[(100, 1), (200, 2)]);
        let new = ring(&[(100, 3), (200, 2)]);
        let plan = MovePlan::between(&old, &new);
        assert_eq!(plan.moves.len(), 1);
        let m = plan.moves[0];
        assert_eq!((m.from, m.to), (NodeId(1), NodeId(3)));
        assert!(m.range.contains(Token(u64::MAX)) && m.range.contains(Token(0)));
        assert_eq!(plan.tokens_moved(), TOKEN_SPACE - 100);
    }

    #[test]
    fn join_and_leave_move_the_expected_share() {
        let mut old = Ring::empty();
        for id in 1..=4 {
            old = claim_join(&old, NodeId(id), 64).unwrap();
        }
        let joined = claim_join(&old, NodeId(5), 64).unwrap();
        let plan = MovePlan::between(&old, &joined);
        assert!(plan.moves.iter().all(|m| m.to == NodeId(5)));
        assert_eq!(plan.tokens_moved(), joined.ownership()[&NodeId(5)]);

        let left = claim_leave(&joined, NodeId(2)).unwrap();
        let plan = MovePlan::between(&joined, &left);
        assert!(plan.moves.iter().all(|m| m.from == NodeId(2)));
        assert_eq!(plan.tokens_moved(), joined.ownership()[&NodeId(2)]);
        assert_eq!((plan.from_epoch, plan.to_epoch), (5, 6));
    }

    #[test]
    fn replica_plan_on_join_only_feeds_the_new_node() {
        let mut old = Ring::empty();
        for id in 1..=5 {
            old = claim_join(&old, NodeId(id), 32).unwrap();
        }
        let new = claim_join(&old, NodeId(6), 32).unwrap();
        let plan = MovePlan::replicas_between(&old, &new, 3);
        assert!(!plan.moves.is_empty());
        assert!(plan
            .moves
            .iter()
            .all(|m| m.to == NodeId(6) && m.from != NodeId(6)));
        // Everything the new node holds a replica of is sent to it, once.
        assert_eq!(plan.tokens_moved(), new.replica_ownership(3)[&NodeId(6)]);
    }
}
