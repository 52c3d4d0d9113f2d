//! Ring transitions: how ownership changes hands without losing a write.
//!
//! # What it owns
//!
//! [`RingState`], the value nodes gossip instead of a bare ring: the ring in
//! force and, while a node joins, leaves or is removed, a [`Pending`]
//! change towards a target ring with the set of range moves already
//! completed. And [`Placement`], the routing view derived from one state:
//! which replicas a read of a token asks, which replicas a write must reach.
//!
//! # How a change proceeds
//!
//! 1. The node that changes the ring (a joiner claiming tokens, a leaver
//!    giving them away, any node removing a dead one) computes the target
//!    ring with the pure claim policy and *begins* a pending change. The
//!    moves are [`MovePlan::replicas_between`] the two rings for
//!    [`Pending::n`] replicas: for each token range, every node that gains
//!    a replica receives the range from the node that loses one, so the set
//!    of copies is carried over whole.
//! 2. Every node learns the state by gossip. Until a range's moves are all
//!    done, reads of it use the old ring, and writes to it must reach a
//!    write quorum in the old preference list *and* one in the new: after
//!    the switch the new replicas then hold every write acknowledged during
//!    the transfer, whether or not the transfer's scan had passed its key.
//! 3. A gaining node pulls each of its moves (the transfer executor) and
//!    marks the move done. The done set only grows, so two states of one
//!    change merge by union, whatever the order gossip delivers them in.
//! 4. When every move is done, each node promotes the target to the ring in
//!    force on its own: promotion is a function of the state, so all nodes
//!    reach the same ring, with the target's epoch.
//!
//! States are ordered: a newer ring in force wins; on one ring, a pending
//! change wins over none, and of two different changes the greater target
//! (epoch, digest) wins, which makes the other's initiator wait and try
//! again on top of the result. [`RingState::merge`] is therefore a join:
//! commutative, associative and idempotent (tested below).
//!
//! # What it does not do
//!
//! No I/O, no liveness: the caller says who is up. It does not carry out
//! transfers or decide when they may start (the ring keeper waits until
//! every live member has the pending state). It allows one change at a
//! time; a change whose gaining node dies stays pending until that node is
//! removed.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{MovePlan, RangeMove, Ring, Token, TokenRange};
use crate::codec;
use crate::id::NodeId;

/// Why the ring is changing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// The node joins: it claims tokens and receives their ranges.
    Join(NodeId),
    /// The node leaves on purpose: it streams its ranges out, then stops.
    Leave(NodeId),
    /// The node is gone (dead, never coming back): its ranges are copied
    /// again from the surviving replicas.
    Remove(NodeId),
}

impl Change {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match *self {
            Change::Join(n) | Change::Leave(n) | Change::Remove(n) => n,
        }
    }
}

/// A change in progress. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// What is changing.
    pub change: Change,
    /// The ring the change leads to.
    pub target: Ring,
    /// Replicas per key the moves are computed for.
    pub n: usize,
    /// Indices into [`Pending::moves`] of the moves completed.
    pub done: BTreeSet<u32>,
}

impl Pending {
    /// The moves of this change, in token order; indices into this list
    /// are what [`Pending::done`] holds. Deterministic in the two rings and
    /// `n`, so every node computes the same list.
    ///
    /// Computing the plan walks both rings; gossip asks for it on every
    /// message and tick while a change is pending, so the last few plans
    /// of each thread are kept, by the rings' epochs and digests.
    pub fn moves(&self, ring: &Ring) -> Vec<RangeMove> {
        self.shared_moves(ring).to_vec()
    }

    /// [`Pending::moves`] without the copy: the kept plan itself.
    pub fn shared_moves(&self, ring: &Ring) -> Arc<Vec<RangeMove>> {
        type Key = (u64, u64, u64, u64, usize);
        const KEPT: usize = 4;
        thread_local! {
            static PLANS: std::cell::RefCell<Vec<(Key, Arc<Vec<RangeMove>>)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = (
            ring.epoch(),
            ring.digest(),
            self.target.epoch(),
            self.target.digest(),
            self.n,
        );
        let known = PLANS.with(|p| {
            p.borrow()
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, m)| Arc::clone(m))
        });
        let moves = known.unwrap_or_else(|| {
            let moves = Arc::new(MovePlan::replicas_between(ring, &self.target, self.n).moves);
            PLANS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() == KEPT {
                    p.remove(0);
                }
                p.push((key, Arc::clone(&moves)));
            });
            moves
        });
        moves
    }
}

/// The ring in force and the change in progress, if any: what nodes
/// gossip. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// The ring requests are routed by (for a range in transition, reads).
    pub ring: Ring,
    /// The change in progress.
    pub pending: Option<Pending>,
}

/// The xxh3 of a value's CBOR encoding; 0 if it cannot be encoded (never
/// for rings, which hold no maps).
fn digest_of<T: Serialize>(value: &T) -> u64 {
    codec::digest(value).unwrap_or(0)
}

/// The digest that orders two rings of one epoch ([`Ring::digest`]).
pub fn ring_digest(ring: &Ring) -> u64 {
    ring.digest()
}

impl RingState {
    /// A state with `ring` in force and nothing pending.
    pub fn settled(ring: Ring) -> Self {
        RingState {
            ring,
            pending: None,
        }
    }

    /// The digest of the whole state: equal digests mean equal states.
    pub fn digest(&self) -> u64 {
        digest_of(self)
    }

    /// The digest of the pending target ring, or 0 when nothing is pending:
    /// what a node reports so others know it has seen a change.
    pub fn pending_digest(&self) -> u64 {
        self.pending.as_ref().map_or(0, |p| ring_digest(&p.target))
    }

    /// Begins `change` towards `target` for `n` replicas. Refused (`None`)
    /// while another change is pending or when `target` is not newer than
    /// the ring in force. A change that moves nothing (an empty ring: the
    /// first node) settles at once.
    pub fn begin(&self, change: Change, target: Ring, n: usize) -> Option<RingState> {
        if self.pending.is_some() || target.epoch() <= self.ring.epoch() {
            return None;
        }
        let mut next = RingState {
            ring: self.ring.clone(),
            pending: Some(Pending {
                change,
                target,
                n: n.max(1),
                done: BTreeSet::new(),
            }),
        };
        next.promote_if_complete();
        Some(next)
    }

    /// Marks move `index` done; promotes when it was the last. Returns
    /// whether the state changed.
    pub fn mark_done(&mut self, index: u32) -> bool {
        self.mark_all_done(&[index])
    }

    /// Marks moves `indices` done, then promotes if none is left. Returns
    /// whether the state changed.
    pub fn mark_all_done(&mut self, indices: &[u32]) -> bool {
        let Some(p) = &mut self.pending else {
            return false;
        };
        let mut changed = false;
        for &index in indices {
            changed |= p.done.insert(index);
        }
        if changed {
            self.promote_if_complete();
        }
        changed
    }

    /// Merges what a peer knows into this state; returns whether this
    /// state changed. A join (see the module documentation).
    pub fn merge(&mut self, other: &RingState) -> bool {
        let before = self.clone();
        match self.order_against(other) {
            Ordering::Less => *self = other.clone(),
            Ordering::Greater => {}
            Ordering::Equal => {
                // Same ring, same change (or none): union the done sets.
                if let (Some(mine), Some(theirs)) = (&mut self.pending, &other.pending) {
                    mine.done.extend(theirs.done.iter().copied());
                }
            }
        }
        self.promote_if_complete();
        *self != before
    }

    /// Compares the ring in force, then the change: `Equal` means the same
    /// ring and the same change, whose done sets may differ.
    fn order_against(&self, other: &RingState) -> Ordering {
        let ring = |s: &RingState| (s.ring.epoch(), ring_digest(&s.ring));
        let change = |s: &RingState| {
            s.pending
                .as_ref()
                .map(|p| (p.target.epoch(), ring_digest(&p.target), p.n, p.change))
        };
        ring(self).cmp(&ring(other)).then_with(|| {
            match (change(self), change(other)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(a), Some(b)) => (a.0, a.1, a.2)
                    .cmp(&(b.0, b.1, b.2))
                    // Equal targets from different changes cannot happen
                    // (a target names its members); order them anyway.
                    .then_with(|| format!("{:?}", a.3).cmp(&format!("{:?}", b.3))),
            }
        })
    }

    /// The fence of this state: what a coordinator stamps its requests
    /// with, and what a replica compares them against. Two states have
    /// equal fences when they route writes and reads the same way (the
    /// same ring in force and the same change, whatever moves are done),
    /// and fences are ordered as [`RingState::merge`] orders states.
    pub fn fence(&self) -> RingFence {
        RingFence {
            epoch: self.ring.epoch(),
            digest: ring_digest(&self.ring),
            change: self.pending.as_ref().map(|p| ChangeFence {
                epoch: p.target.epoch(),
                digest: ring_digest(&p.target),
                n: p.n as u64,
            }),
        }
    }

    fn promote_if_complete(&mut self) {
        let complete = match &self.pending {
            Some(p) => {
                let moves = p.shared_moves(&self.ring).len();
                (0..moves as u32).all(|i| p.done.contains(&i))
            }
            None => false,
        };
        if complete {
            if let Some(p) = self.pending.take() {
                self.ring = p.target;
            }
        }
    }

    /// The nodes a move is pulled from: every old replica of the range that
    /// is up (the node losing the range first), leaving out the gainer and
    /// a removed node; empty while too few of the old replicas are up to
    /// meet every majority write quorum (all of them but `n / 2`; the
    /// gainer itself counts when it is one), so the move waits.
    ///
    /// Why all of them: a write acknowledged by `w` of the `n` old replicas
    /// may be missing on the node losing the range (it was down or cut off
    /// when the write was made, and nothing has repaired it yet). Copying
    /// that node alone would leave the write on fewer than `w` of the new
    /// replicas, and a read with `r + w > n` could miss it. Any majority
    /// of the old replicas holds every write acknowledged by a majority,
    /// and merging copies is idempotent, so pulling from all that are up,
    /// and at least a majority, keeps every strict quorum's writes.
    pub fn sources(&self, mv: &RangeMove, is_up: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        let removed = match &self.pending {
            Some(p) => match p.change {
                Change::Remove(node) => Some(node),
                _ => None,
            },
            None => None,
        };
        let n = self.pending.as_ref().map_or(1, |p| p.n);
        let old = self.ring.preference_list(mv.range.through, n);
        let up: Vec<NodeId> = old
            .iter()
            .copied()
            .filter(|&x| Some(x) != removed && is_up(x))
            .collect();
        // Enough to meet every majority write quorum of the old replicas:
        // all but n/2 of them (all but one of three).
        if up.len() < old.len().saturating_sub(n / 2).max(1) {
            return Vec::new();
        }
        let mut sources: Vec<NodeId> = up.into_iter().filter(|&x| x != mv.to).collect();
        if let Some(i) = sources.iter().position(|&x| x == mv.from) {
            let from = sources.remove(i);
            sources.insert(0, from);
        }
        sources
    }
}

/// A ring state reduced to what orders it: the ring in force and the
/// pending change's target, without the done set (see
/// [`RingState::fence`]).
///
/// # Why requests carry it
///
/// A coordinator that has not yet heard of a change routes by the old ring
/// alone. Once a range's move is done, nodes that know the change read it
/// from the new replicas, which hold what the move's sources held when
/// they were scanned; a write the unaware coordinator gets acknowledged
/// by old replicas after that scan is on none of them, and a read through
/// the new ring can miss it (`docs/simulation.md` says what the
/// simulator has and has not shown of this). So a replica refuses a client request stamped
/// with a fence older than its own: its sources serve a move only with
/// the change's fence ([`crate::replication::transfer`]), they are
/// enough of the old replicas to meet every write quorum, so a stale
/// write after the scan cannot gather a quorum, and a stale read cannot
/// either. The request fails (the client retries) until gossip brings
/// the coordinator the newer state.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RingFence {
    /// The epoch of the ring in force.
    pub epoch: u64,
    /// The digest of the ring in force ([`ring_digest`]).
    pub digest: u64,
    /// The pending change; `None` (ordered first) when nothing is pending.
    pub change: Option<ChangeFence>,
}

/// The part of a [`RingFence`] that names a pending change.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ChangeFence {
    /// The epoch of the change's target ring.
    pub epoch: u64,
    /// The digest of the target ring.
    pub digest: u64,
    /// The replicas per key its moves are computed for.
    pub n: u64,
}

impl std::fmt::Display for RingFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring epoch {}", self.epoch)?;
        match self.change {
            Some(c) => write!(f, " changing to epoch {} ({:016x})", c.epoch, c.digest),
            None => Ok(()),
        }
    }
}

/// Where requests go under one [`RingState`]: derived once per state, then
/// asked per request without allocation beyond the preference lists.
#[derive(Debug)]
pub struct Placement {
    state: Arc<RingState>,
    fence: RingFence,
    moves: Vec<RangeMove>,
    /// Token intervals `[lo, hi]` (inclusive, non-wrapping, sorted and
    /// disjoint) of ranges with a move not yet done.
    undone: Vec<(u64, u64)>,
}

impl Placement {
    /// The placement of `state`.
    pub fn new(state: Arc<RingState>) -> Self {
        let (moves, undone) = match &state.pending {
            None => (Vec::new(), Vec::new()),
            Some(p) => {
                let moves = p.moves(&state.ring);
                let mut undone = Vec::new();
                for (i, m) in moves.iter().enumerate() {
                    if !p.done.contains(&(i as u32)) {
                        push_interval(&mut undone, m.range);
                    }
                }
                (moves, merge_intervals(undone))
            }
        };
        Placement {
            fence: state.fence(),
            state,
            moves,
            undone,
        }
    }

    /// The state this placement routes by.
    pub fn state(&self) -> &Arc<RingState> {
        &self.state
    }

    /// The ring in force.
    pub fn ring(&self) -> &Ring {
        &self.state.ring
    }

    /// The state's fence, computed once ([`RingState::fence`]).
    pub fn fence(&self) -> RingFence {
        self.fence
    }

    /// The moves of the pending change (empty when settled), in the order
    /// [`Pending::done`] indexes.
    pub fn moves(&self) -> &[RangeMove] {
        &self.moves
    }

    /// Whether `token` lies in a range still moving.
    pub fn in_transition(&self, token: Token) -> bool {
        let i = self.undone.partition_point(|&(_, hi)| hi < token.0);
        self.undone.get(i).is_some_and(|&(lo, _)| lo <= token.0)
    }

    /// The ring reads of `token` use: the old ring while its range moves,
    /// otherwise the target once the range is done, or the ring in force.
    pub fn read_ring(&self, token: Token) -> &Ring {
        match &self.state.pending {
            Some(p) if !self.in_transition(token) => &p.target,
            _ => &self.state.ring,
        }
    }

    /// The rings a write of `token` must reach a quorum in: while a change
    /// is pending, the ring in force and the target, whether the token's
    /// range is still moving or has moved; otherwise the ring in force.
    ///
    /// Why the ring in force too once a range has moved: a pending change
    /// can still be replaced by another one begun elsewhere (one side of a
    /// partition), whose moves start again from the ring in force. A write
    /// that reached only the replaced change's new replicas would then be
    /// on no replica the winner reads or pulls from. With a quorum in the
    /// ring in force as well, the winner's transfers find it (they pull
    /// from every old replica up, enough to meet every majority quorum).
    /// The deterministic simulator found this (`docs/simulation.md`).
    pub fn write_rings(&self, token: Token) -> (&Ring, Option<&Ring>) {
        let _ = token;
        match &self.state.pending {
            Some(p) => (&self.state.ring, Some(&p.target)),
            None => (&self.state.ring, None),
        }
    }
}

/// Appends a range as one or two non-wrapping inclusive intervals.
fn push_interval(out: &mut Vec<(u64, u64)>, range: TokenRange) {
    let (a, t) = (range.after.0, range.through.0);
    if a < t {
        out.push((a + 1, t));
    } else {
        // Wrapping (or the whole ring when a == t).
        out.push((0, t));
        if a < u64::MAX {
            out.push((a + 1, u64::MAX));
        }
    }
}

fn merge_intervals(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{claim_join, claim_leave, key_token};

    fn ring_of(nodes: u64) -> Ring {
        let mut ring = Ring::empty();
        for id in 1..=nodes {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        ring
    }

    fn joining(nodes: u64) -> RingState {
        let ring = ring_of(nodes);
        let target = claim_join(&ring, NodeId(nodes + 1), 16).unwrap();
        RingState::settled(ring)
            .begin(Change::Join(NodeId(nodes + 1)), target, 3)
            .unwrap()
    }

    #[test]
    fn a_join_moves_ranges_only_to_the_joiner_and_promotes_when_all_are_done() {
        let mut state = joining(4);
        let moves = state.pending.as_ref().unwrap().moves(&state.ring);
        assert!(!moves.is_empty());
        assert!(moves
            .iter()
            .all(|m| m.to == NodeId(5) && m.from != NodeId(5)));
        let target = state.pending.as_ref().unwrap().target.clone();
        for i in 0..moves.len() as u32 {
            assert!(state.pending.is_some(), "promoted before move {i}");
            assert!(state.mark_done(i));
            assert!(!state.mark_done(i), "marking twice changes nothing");
        }
        assert_eq!(state, RingState::settled(target));
    }

    #[test]
    fn a_second_change_waits_for_the_first() {
        let state = joining(3);
        let other = claim_join(&state.ring, NodeId(9), 16).unwrap();
        assert!(state.begin(Change::Join(NodeId(9)), other, 3).is_none());
        let settled = RingState::settled(ring_of(3));
        let stale = ring_of(2);
        assert!(settled.begin(Change::Join(NodeId(1)), stale, 3).is_none());
    }

    #[test]
    fn the_first_node_settles_at_once() {
        let target = claim_join(&Ring::empty(), NodeId(1), 16).unwrap();
        let state = RingState::settled(Ring::empty())
            .begin(Change::Join(NodeId(1)), target.clone(), 3)
            .unwrap();
        assert_eq!(state, RingState::settled(target));
    }

    #[test]
    fn merge_is_a_join() {
        let base = joining(4);
        let moves = base.pending.as_ref().unwrap().moves(&base.ring).len() as u32;
        assert!(moves >= 3);
        let mut a = base.clone();
        a.mark_done(0);
        let mut b = base.clone();
        b.mark_done(1);
        let mut c = RingState::settled(ring_of(4));
        let mut d = base.clone();
        for i in 0..moves {
            d.mark_done(i);
        }
        let newer_change = {
            let ring = ring_of(4);
            let t = claim_leave(&ring, NodeId(2)).unwrap();
            let t = claim_join(&t, NodeId(7), 16).unwrap();
            RingState::settled(ring)
                .begin(Change::Leave(NodeId(2)), t, 3)
                .unwrap()
        };
        let states = [base, a, b, c.clone(), d, newer_change];
        let merged = |xs: &[&RingState]| {
            let mut s = xs[0].clone();
            for x in &xs[1..] {
                s.merge(x);
            }
            s
        };
        for x in &states {
            for y in &states {
                // Commutative.
                assert_eq!(merged(&[x, y]), merged(&[y, x]));
                // Idempotent.
                assert_eq!(merged(&[x, y, y]), merged(&[x, y]));
                for z in &states {
                    // Associative: (x ∨ y) ∨ z == x ∨ (y ∨ z).
                    let left = merged(&[&merged(&[x, y]), z]);
                    let right = merged(&[x, &merged(&[y, z])]);
                    assert_eq!(left, right);
                }
            }
        }
        // Fences order states as merging does: the merge of two states
        // has the greater fence, and states that differ only in their
        // done sets have one fence.
        for x in &states {
            for y in &states {
                let m = merged(&[x, y]);
                assert_eq!(m.fence(), x.fence().max(y.fence()), "{x:?} {y:?}");
                let routes_alike = x.ring == y.ring
                    && x.pending.as_ref().map(|p| &p.target)
                        == y.pending.as_ref().map(|p| &p.target);
                assert_eq!(x.fence() == y.fence(), routes_alike);
            }
        }
        // A settled state learns of a change; a union of done sets.
        assert!(c.merge(&states[1]));
        assert!(c.merge(&states[2]));
        assert_eq!(
            c.pending.as_ref().unwrap().done,
            BTreeSet::from([0, 1]),
            "done sets merge by union"
        );
        // The completed state promoted and is newer than every other of
        // its ring.
        assert!(c.merge(&states[4]));
        assert!(c.pending.is_none());
        assert!(!c.merge(&states[0]));
    }

    #[test]
    fn placement_routes_reads_by_the_old_ring_until_done_and_writes_by_both() {
        let mut state = joining(4);
        let p = state.pending.clone().unwrap();
        let moves = p.moves(&state.ring);
        // A key in the first move's range, and one outside every move.
        let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let token = |k: &Vec<u8>| key_token(b"b", k);
        let inside = keys
            .iter()
            .find(|k| moves[0].range.contains(token(k)))
            .unwrap();
        let outside = keys
            .iter()
            .find(|k| !moves.iter().any(|m| m.range.contains(token(k))))
            .unwrap();
        let placement = Placement::new(Arc::new(state.clone()));
        assert!(placement.in_transition(token(inside)));
        assert!(!placement.in_transition(token(outside)));
        assert_eq!(placement.read_ring(token(inside)), &state.ring);
        let (old, new) = placement.write_rings(token(inside));
        assert_eq!(old, &state.ring);
        assert_eq!(new, Some(&p.target));
        // Outside every move both rings agree on the replicas.
        assert_eq!(
            placement
                .read_ring(token(outside))
                .preference_list(token(outside), 3),
            state.ring.preference_list(token(outside), 3)
        );
        // Once every move covering the key is done, it routes by the target.
        for (i, m) in moves.iter().enumerate() {
            if m.range.contains(token(inside)) {
                state.mark_done(i as u32);
            }
        }
        let placement = Placement::new(Arc::new(state.clone()));
        if state.pending.is_some() {
            assert!(!placement.in_transition(token(inside)));
            assert_eq!(placement.read_ring(token(inside)), &p.target);
            // Writes still reach a quorum of the ring in force too, until
            // the change is in force: it may yet be replaced by another.
            let (old, new) = placement.write_rings(token(inside));
            assert_eq!(old, &state.ring);
            assert_eq!(new, Some(&p.target));
        }
    }

    #[test]
    fn transitions_are_exact_for_every_token_of_every_move() {
        let state = joining(3);
        let placement = Placement::new(Arc::new(state.clone()));
        for m in placement.moves() {
            assert!(placement.in_transition(m.range.through));
            let after_next = Token(m.range.after.0.wrapping_add(1));
            assert!(placement.in_transition(after_next));
        }
        // The old ring's and the target's lists differ only inside moves.
        let target = &state.pending.as_ref().unwrap().target;
        for i in 0..2000u64 {
            let t = Token(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            if !placement.in_transition(t) {
                assert_eq!(
                    state.ring.preference_list(t, 3),
                    target.preference_list(t, 3)
                );
            }
        }
    }

    #[test]
    fn a_removed_or_down_source_is_replaced_by_the_surviving_replicas() {
        let ring = ring_of(5);
        let target = claim_leave(&ring, NodeId(3)).unwrap();
        let state = RingState::settled(ring.clone())
            .begin(Change::Remove(NodeId(3)), target, 3)
            .unwrap();
        let moves = state.pending.as_ref().unwrap().moves(&state.ring);
        let from_dead = moves.iter().find(|m| m.from == NodeId(3)).unwrap();
        let sources = state.sources(from_dead, |_| true);
        assert!(!sources.is_empty());
        assert!(!sources.contains(&NodeId(3)) && !sources.contains(&from_dead.to));
        for s in &sources {
            assert!(ring.preference_list(from_dead.range.through, 3).contains(s));
        }
        // A leave pulls from the leaver while it is up, from the others
        // when it is not.
        let target = claim_leave(&ring, NodeId(3)).unwrap();
        let leave = RingState::settled(ring)
            .begin(Change::Leave(NodeId(3)), target, 3)
            .unwrap();
        let mv = leave.pending.as_ref().unwrap().moves(&leave.ring)[0];
        let old = leave.ring.preference_list(mv.range.through, 3);
        let all = leave.sources(&mv, |_| true);
        assert_eq!(all[0], mv.from, "the node losing the range comes first");
        let mut want: Vec<NodeId> = old.iter().copied().filter(|&x| x != mv.to).collect();
        want.sort();
        let mut got = all.clone();
        got.sort();
        assert_eq!(got, want, "every old replica up is pulled from");
        assert!(!leave.sources(&mv, |n| n != mv.from).contains(&mv.from));
        // With only one old replica of three up, the move waits (two are
        // needed to meet every write quorum of two).
        let lone = old[0];
        assert!(leave.sources(&mv, |n| n == lone).is_empty());
    }
}
