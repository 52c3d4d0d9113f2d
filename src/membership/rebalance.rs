//! The rebalancer: which range transfers this node runs for the ring change
//! in progress, and which ranges it drops once a change is in force.
//!
//! # What it owns
//!
//! The link between the ring keeper (which knows the change, its moves and
//! when transfers may start) and the transfer executor (which moves data).
//! The moves this node receives are joined into runs: moves whose ranges
//! follow each other on the ring and have the same old replicas, hence the
//! same sources. Each run is one transfer of the union of its ranges (a
//! join into a ring of two or three is one transfer, not hundreds), with
//! an id derived from the change and the run's first move so that a
//! restarted node, which forms the same runs, resumes the same transfer
//! from its stored cursors. When a transfer reports done, the rebalancer
//! names its moves for [`RingKeeper::mark_all_done`]. When a
//! source of a running transfer is no longer reachable, the transfer is
//! started again from the sources the keeper names now. When another change
//! replaces the one in progress, its transfers are cancelled.
//!
//! Once a change is in force, this node drops the ranges it gave away, but
//! only after [`DROP_GRACE`]: a coordinator that has not yet heard of the
//! new ring may still read the old replicas for a moment. When a change
//! ends without coming into force (replaced by another, or abandoned), a
//! sweep of the whole ring is scheduled the same way, for what this node
//! took in for it. A drop hands each object to its
//! owners as hints before deleting it (`roles::handoff`), so dropping is
//! safe even when the owners pulled the range from another replica.
//!
//! # What it does not do
//!
//! No I/O and no clock of its own: the ring role (`roles::ring`) turns its
//! actions into handoff commands and passes time in. It keeps nothing across restarts; instead,
//! once after a restart (a start from a stored ring state, when no change
//! is pending, this node is in the ring, and a peer has reported the same
//! ring state), it schedules a sweep: after [`DROP_GRACE`], everything
//! this node does not replicate under the ring then in force is dropped.
//! So ranges given away just before a restart, whose drops were still
//! waiting, are dropped too. A node's first start has nothing to sweep.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::ring_sync::RingKeeper;
use crate::id::NodeId;
use crate::replication::transfer::TransferSpec;
use crate::ring::{RangeMove, TokenRange};

/// How long after a change is in force this node keeps the ranges it gave
/// away: 5 seconds, many gossip rounds at the defaults, so that requests
/// routed by the old ring have finished and every node has the new one.
pub const DROP_GRACE: Duration = Duration::from_secs(5);

/// Every token: a sweep's range (the due check keeps what is this node's).
const WHOLE_RING: TokenRange = TokenRange {
    after: crate::ring::Token(0),
    through: crate::ring::Token(0),
};

/// What the ring role must have done (it tells the handoff role).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceAction {
    /// Start (or resume) a transfer into this node.
    Start(TransferSpec),
    /// Stop a transfer and forget its cursors.
    Cancel(u64),
    /// Delete this node's objects in a range it no longer replicates.
    Drop(TokenRange),
}

/// The moves one transfer carries: a run of this node's moves whose
/// ranges follow each other on the ring and have the same old replicas,
/// so the same sources. Pulling their union from those sources is pulling
/// each of them from its own: a move's sources are the old replicas of
/// its range (all of its keys have the same ones, see
/// `MovePlan::replicas_between`), and the run's are one set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MoveRun {
    /// The moves' indices, in token order (the first names the transfer).
    indices: Vec<u32>,
    /// The union of their ranges.
    range: TokenRange,
    /// The first move: its sources (with its losing node first) are the
    /// run's.
    first: RangeMove,
}

/// This node's moves of a change as [`MoveRun`]s: the fewest transfers
/// that pull every range from every old replica of it. A function of the
/// two rings and `n`, so the same after a restart, and the transfer ids
/// derived from it too.
fn move_runs(keeper: &RingKeeper, me: NodeId) -> Vec<MoveRun> {
    let Some(pending) = &keeper.state().pending else {
        return Vec::new();
    };
    let ring = &keeper.state().ring;
    let moves = pending.shared_moves(ring);
    let mut runs: Vec<(MoveRun, Vec<NodeId>)> = Vec::new();
    for (index, mv) in moves.iter().enumerate() {
        if mv.to != me {
            continue;
        }
        let mut old = ring.preference_list(mv.range.through, pending.n);
        old.sort_unstable();
        match runs.last_mut() {
            Some((run, run_old)) if run.range.through == mv.range.after && *run_old == old => {
                run.range.through = mv.range.through;
                run.indices.push(index as u32);
            }
            _ => runs.push((
                MoveRun {
                    indices: vec![index as u32],
                    range: mv.range,
                    first: *mv,
                },
                old,
            )),
        }
    }
    // The plan is in token order from the smallest cut: the last run may
    // go on into the first across the top of the ring.
    if runs.len() > 1 {
        let joins = {
            let (first, first_old) = &runs[0];
            let (last, last_old) = &runs[runs.len() - 1];
            last.range.through == first.range.after && last_old == first_old
        };
        if joins {
            if let Some((last, _)) = runs.pop() {
                let first = &mut runs[0].0;
                first.range.after = last.range.after;
                let mut indices = last.indices;
                indices.append(&mut first.indices);
                first.indices = indices;
                first.first = last.first;
            }
        }
    }
    runs.into_iter().map(|(run, _)| run).collect()
}

/// The rebalancer of one node. See the module documentation.
#[derive(Debug)]
pub struct Rebalancer {
    me: NodeId,
    /// Replicas per key that changes move (and drops keep).
    n: usize,
    /// The pending change the running transfers belong to (its target's
    /// digest), 0 when none.
    change: u64,
    /// This node's moves of `change` as transfers, computed once per
    /// change (with the digest of the ring in force they start from).
    runs: Option<(u64, Vec<MoveRun>)>,
    /// Running transfers: id to (move indices, sources).
    running: BTreeMap<u64, (Vec<u32>, Vec<NodeId>)>,
    /// Ranges to drop, and from when.
    drops: Vec<(Instant, TokenRange)>,
    /// Whether the sweep after a start is scheduled.
    swept: bool,
    /// The digest of the ring in force when `change` was first seen.
    ring_at_change: u64,
    /// A change ended without coming into force: sweep once none is
    /// pending.
    sweep_when_settled: bool,
}

/// The id of the transfer of move `index` of the change whose target has
/// digest `change`, into node `me`: the same on every restart.
pub fn transfer_id(change: u64, index: u32, me: NodeId) -> u64 {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&change.to_be_bytes());
    bytes[8..12].copy_from_slice(&index.to_be_bytes());
    bytes[12..].copy_from_slice(&me.0.to_be_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl Rebalancer {
    /// A rebalancer for node `me`, whose ring changes move data for `n`
    /// replicas per key.
    pub fn new(me: NodeId, n: usize) -> Self {
        Rebalancer {
            me,
            n: n.max(1),
            change: 0,
            runs: None,
            running: BTreeMap::new(),
            drops: Vec::new(),
            swept: false,
            ring_at_change: 0,
            sweep_when_settled: false,
        }
    }

    /// Transfers running now, by id.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// What to do now, given the keeper's state: start the transfers of
    /// moves this node receives once the keeper allows it, restart those
    /// whose sources changed, cancel those of a replaced change, and drop
    /// ranges whose grace has passed.
    pub fn plan(&mut self, keeper: &RingKeeper, now: Instant) -> Vec<RebalanceAction> {
        let mut actions = Vec::new();
        let change = keeper.state().pending_digest();
        if change != self.change {
            self.runs = None;
            for id in std::mem::take(&mut self.running).into_keys() {
                actions.push(RebalanceAction::Cancel(id));
            }
            let ring = keeper.ring().digest();
            if self.change != 0 && (change != 0 || ring == self.ring_at_change) {
                // A change ended without coming into force (replaced by
                // another, or abandoned): what this node took in for it
                // (transfers, and writes sent to its replicas while it was
                // pending) is swept once no change is pending, and handed
                // to the owners of the ring then in force where this node
                // is not one of them. A change that came into force drops
                // what it moved away instead ([`Rebalancer::on_completed`]).
                self.sweep_when_settled = true;
            }
            self.change = change;
            self.ring_at_change = ring;
        }
        if change != 0 && keeper.transfers_may_start() {
            // Asked after every input while a change is pending: the runs
            // are computed once per change, and each input costs one
            // preference list per run, not one per move (a join into a
            // 160-vnode ring has hundreds of moves; per-move work on every
            // message made an empty join take seconds of CPU).
            let ring = keeper.ring().digest();
            if self.runs.as_ref().is_none_or(|(at, _)| *at != ring) {
                self.runs = Some((ring, move_runs(keeper, self.me)));
            }
            let state = keeper.state();
            let done = state.pending.as_ref().map(|p| &p.done);
            // Computed once, and only when a transfer starts: it encodes
            // both rings.
            let mut fence = None;
            for run in self.runs.iter().flat_map(|(_, runs)| runs) {
                if done.is_some_and(|d| run.indices.iter().all(|i| d.contains(i))) {
                    continue;
                }
                let sources = keeper.sources_of(&run.first);
                if sources.is_empty() {
                    // No live replica holds the range: wait for one.
                    continue;
                }
                let id = transfer_id(change, run.indices[0], self.me);
                match self.running.get(&id) {
                    Some((_, running)) if *running == sources => continue,
                    Some(_) => actions.push(RebalanceAction::Cancel(id)),
                    None => {}
                }
                self.running
                    .insert(id, (run.indices.clone(), sources.clone()));
                let fence = *fence.get_or_insert_with(|| keeper.state().fence());
                actions.push(RebalanceAction::Start(TransferSpec {
                    id,
                    range: run.range,
                    sources,
                    fence: Some(fence),
                }));
            }
        }
        if !self.swept
            && keeper.restored()
            && change == 0
            && keeper.agreed_with_peer()
            && keeper.ring().is_member(self.me)
        {
            // The whole ring: the due check below keeps what is ours.
            self.swept = true;
            self.drops.push((now + DROP_GRACE, WHOLE_RING));
        }
        if self.sweep_when_settled && keeper.state().pending.is_none() {
            // The grace counts from the ring that is now in force.
            self.sweep_when_settled = false;
            self.drops.push((now + DROP_GRACE, WHOLE_RING));
        }
        // A due drop waits while a change is pending (the range may be
        // coming back), and then drops only what the ring in force does not
        // give this node: a later change may have given some of it back.
        if keeper.state().pending.is_none() {
            let (due, later): (Vec<_>, Vec<_>) =
                self.drops.drain(..).partition(|(at, _)| *at <= now);
            self.drops = later;
            let ring = keeper.ring();
            for (_, range) in due {
                for piece in ring.unreplicated(range, self.n, self.me) {
                    actions.push(RebalanceAction::Drop(piece));
                }
            }
        }
        actions
    }

    /// A transfer reported done: the moves to mark done (every move its
    /// range covers), if it belongs to the change in progress.
    pub fn on_done(&mut self, id: u64) -> Option<Vec<u32>> {
        self.running.remove(&id).map(|(indices, _)| indices)
    }

    /// Transfer `id` could not start: forgets it, so that the next plan
    /// starts it again.
    pub fn on_failed(&mut self, id: u64) {
        self.running.remove(&id);
    }

    /// A change is in force: schedules dropping `lost`, the ranges this
    /// node replicated before the change and no longer does,
    /// [`DROP_GRACE`] from `now`.
    pub fn on_completed(&mut self, lost: &[TokenRange], now: Instant) {
        for &range in lost {
            self.drops.push((now + DROP_GRACE, range));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Addressed, MemberEvent, Outbox, RingMsg};
    use crate::ring::RingConfig;
    use crate::ring::{claim_join, Ring};

    fn up(node: u64) -> MemberEvent {
        MemberEvent::Up {
            node: NodeId(node),
            addr: String::new(),
            incarnation: 0,
        }
    }

    /// Node 3 joining a two-node ring, with both others reachable.
    fn joiner() -> (RingKeeper, Ring) {
        joining(2)
    }

    /// Node `nodes + 1` joining a ring of nodes 1 to `nodes`, every one
    /// of them reachable.
    fn joining(nodes: u64) -> (RingKeeper, Ring) {
        let cfg = RingConfig {
            vnodes_per_node: 8,
            ..RingConfig::default()
        };
        let mut ring = Ring::empty();
        for id in 1..=nodes {
            ring = claim_join(&ring, NodeId(id), 8).unwrap();
        }
        let me = NodeId(nodes + 1);
        let mut k = RingKeeper::new(me, &cfg, Duration::from_secs(1), &[NodeId(1)], 3).unwrap();
        for id in 1..=nodes {
            k.on_member_event(&up(id));
        }
        let mut out = Outbox::new();
        let state = RingMsg::State {
            ring: ring.clone(),
            pending: None,
        };
        k.step(
            Instant::now(),
            Addressed::new(NodeId(1), me, state),
            &mut out,
        );
        assert!(
            k.state().pending.is_some(),
            "the claim begins as the ring is learned"
        );
        (k, ring)
    }

    fn confirm_all(k: &mut RingKeeper) {
        let pending = k.state().pending_digest();
        let me = k.me();
        for from in k.state().ring.members() {
            let digest = RingMsg::Digest {
                epoch: 0,
                digest: 0,
                pending,
                progress: None,
            };
            let mut out = Outbox::new();
            k.step(Instant::now(), Addressed::new(from, me, digest), &mut out);
        }
    }

    fn starts(actions: &[RebalanceAction]) -> Vec<TransferSpec> {
        actions
            .iter()
            .filter_map(|a| match a {
                RebalanceAction::Start(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    /// Starts the transfers after the barrier, checks that they carry
    /// every move of the node exactly once from that move's own sources,
    /// finishes them, and returns how many there were.
    fn transfers_cover_every_move_once(nodes: u64) -> (usize, usize) {
        let (mut k, _) = joining(nodes);
        let me = k.me();
        let mut r = Rebalancer::new(me, 3);
        let now = Instant::now();
        assert!(r.plan(&k, now).is_empty(), "nothing before the barrier");
        confirm_all(&mut k);
        let specs = starts(&r.plan(&k, now));
        assert!(r.plan(&k, now).is_empty(), "started once");
        let moves = k.incoming_moves();
        assert!(!moves.is_empty());
        let change = k.state().pending_digest();
        let mut carried: Vec<u32> = Vec::new();
        let mut tokens: u128 = 0;
        for spec in &specs {
            tokens += spec.range.len();
            let covered: Vec<&(u32, RangeMove, Vec<NodeId>)> = moves
                .iter()
                .filter(|(_, m, _)| spec.range.contains(m.range.through))
                .collect();
            assert!(!covered.is_empty(), "{spec:?} carries no move");
            assert_eq!(
                spec.id,
                transfer_id(change, covered_first(&covered, spec), me)
            );
            for (index, mv, sources) in covered {
                // Every token of the move is in the transfer's range...
                assert!(
                    spec.range
                        .contains(crate::ring::Token(mv.range.after.0.wrapping_add(1)))
                        && spec.range.contains(mv.range.through)
                );
                // ...which pulls it from exactly the move's own sources.
                let mut want = sources.clone();
                let mut got = spec.sources.clone();
                want.sort();
                got.sort();
                assert_eq!(got, want, "{mv:?} in {spec:?}");
                carried.push(*index);
            }
        }
        carried.sort_unstable();
        let mut want: Vec<u32> = moves.iter().map(|(i, _, _)| *i).collect();
        want.sort_unstable();
        assert_eq!(carried, want, "each move carried once");
        let moved: u128 = moves.iter().map(|(_, m, _)| m.range.len()).sum();
        assert_eq!(tokens, moved, "the transfers carry nothing else");
        let mut out = Outbox::new();
        for spec in &specs {
            let indices = r.on_done(spec.id).unwrap();
            assert!(!k.ring().is_member(me), "not in force before the last");
            k.mark_all_done(&indices, &mut out);
        }
        assert!(r.on_done(12345).is_none());
        assert!(k.state().pending.is_none());
        assert!(k.ring().is_member(me));
        assert!(r.plan(&k, now).is_empty());
        (specs.len(), moves.len())
    }

    /// The index a run's transfer is named after: its first move in
    /// token order from the run's start.
    fn covered_first(covered: &[&(u32, RangeMove, Vec<NodeId>)], spec: &TransferSpec) -> u32 {
        covered
            .iter()
            .find(|(_, m, _)| m.range.after == spec.range.after)
            .map(|(i, _, _)| *i)
            .unwrap()
    }

    #[test]
    fn transfers_start_after_the_barrier_once_each_and_complete_the_change() {
        // Into a ring of two, with n = 3, the joiner gains every range,
        // all from the same two old replicas: one transfer of the whole
        // ring, however many moves (issue [14]: one per move made an empty
        // three-node cluster take seconds to settle).
        let (transfers, moves) = transfers_cover_every_move_once(2);
        assert!(moves > 2, "{moves}");
        assert_eq!(transfers, 1, "{moves} moves");
        // Into a ring of four, runs of moves with the same old replicas.
        let (transfers, moves) = transfers_cover_every_move_once(4);
        assert!(transfers < moves, "{transfers} transfers for {moves} moves");
    }

    #[test]
    fn a_transfer_that_failed_to_start_is_started_again_by_the_next_plan() {
        let (mut k, _) = joiner();
        confirm_all(&mut k);
        let mut r = Rebalancer::new(NodeId(3), 3);
        let now = Instant::now();
        let first: Vec<u64> = r
            .plan(&k, now)
            .iter()
            .filter_map(|a| match a {
                RebalanceAction::Start(s) => Some(s.id),
                _ => None,
            })
            .collect();
        assert!(!first.is_empty());
        assert!(
            r.plan(&k, now).is_empty(),
            "running transfers are not restarted"
        );
        r.on_failed(first[0]);
        let again = r.plan(&k, now);
        assert_eq!(
            again.len(),
            1,
            "only the failed one starts again: {again:?}"
        );
        assert!(matches!(&again[0], RebalanceAction::Start(s) if s.id == first[0]));
    }

    #[test]
    fn a_source_going_down_restarts_the_transfer_from_the_others() {
        let (mut k, _) = joining(4);
        confirm_all(&mut k);
        let mut r = Rebalancer::new(k.me(), 3);
        let now = Instant::now();
        let first = starts(&r.plan(&k, now));
        let from_1: Vec<&TransferSpec> = first
            .iter()
            .filter(|s| s.sources.contains(&NodeId(1)))
            .collect();
        assert!(!from_1.is_empty());
        k.on_member_event(&MemberEvent::Down {
            node: NodeId(1),
            incarnation: 0,
        });
        let again = r.plan(&k, now);
        for spec in from_1 {
            let rest: Vec<NodeId> = spec
                .sources
                .iter()
                .copied()
                .filter(|&n| n != NodeId(1))
                .collect();
            assert!(again.contains(&RebalanceAction::Cancel(spec.id)));
            assert!(again.iter().any(|a| matches!(a,
                RebalanceAction::Start(s) if s.id == spec.id && s.range == spec.range && s.sources == rest)));
        }
    }

    #[test]
    fn given_away_ranges_drop_after_the_grace_only() {
        let mut r = Rebalancer::new(NodeId(1), 3);
        let mut ring = Ring::empty();
        for id in 1..=4 {
            ring = claim_join(&ring, NodeId(id), 8).unwrap();
        }
        let target = claim_join(&ring, NodeId(5), 8).unwrap();
        let lost = crate::ring::MovePlan::lost_ranges(&ring, &target, 3, NodeId(1));
        let now = Instant::now();
        r.on_completed(&lost, now);
        let mine = lost.len();
        assert!(mine > 0);
        let idle = RingKeeper::new(
            NodeId(1),
            &RingConfig::default(),
            Duration::from_secs(1),
            &[],
            1,
        )
        .unwrap();
        assert!(r.plan(&idle, now + DROP_GRACE / 2).is_empty());
        let drops = r.plan(&idle, now + DROP_GRACE);
        assert_eq!(drops.len(), mine);
        assert!(drops.iter().all(|a| matches!(a, RebalanceAction::Drop(_))));
        assert!(r.plan(&idle, now + DROP_GRACE * 2).is_empty());
    }

    #[test]
    fn a_restarted_member_sweeps_what_it_does_not_replicate_once_a_peer_agrees() {
        let mut ring = Ring::empty();
        for id in 1..=4 {
            ring = claim_join(&ring, NodeId(id), 8).unwrap();
        }
        let cfg = RingConfig {
            vnodes_per_node: 8,
            ..RingConfig::default()
        };
        let mut k =
            RingKeeper::new(NodeId(1), &cfg, Duration::from_secs(1), &[NodeId(2)], 1).unwrap();
        k.restore(crate::ring::RingState::settled(ring.clone()))
            .unwrap();
        k.on_member_event(&up(2));
        let mut r = Rebalancer::new(NodeId(1), 3);
        let now = Instant::now();
        assert!(
            r.plan(&k, now + DROP_GRACE * 3).is_empty(),
            "no sweep on a stored ring no peer has confirmed"
        );
        let digest = RingMsg::Digest {
            epoch: ring.epoch(),
            digest: k.state().digest(),
            pending: 0,
            progress: None,
        };
        let mut out = Outbox::new();
        k.step(now, Addressed::new(NodeId(2), NodeId(1), digest), &mut out);
        assert!(k.agreed_with_peer());
        assert!(r.plan(&k, now).is_empty(), "the sweep waits a grace");
        let whole = TokenRange {
            after: crate::ring::Token(0),
            through: crate::ring::Token(0),
        };
        let want: Vec<RebalanceAction> = ring
            .unreplicated(whole, 3, NodeId(1))
            .into_iter()
            .map(RebalanceAction::Drop)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(r.plan(&k, now + DROP_GRACE), want);
        assert!(r.plan(&k, now + DROP_GRACE * 2).is_empty(), "once");

        // A first start (the ring learned from a peer) sweeps nothing.
        let mut fresh =
            RingKeeper::new(NodeId(1), &cfg, Duration::from_secs(1), &[NodeId(2)], 1).unwrap();
        fresh.on_member_event(&up(2));
        let state = RingMsg::State {
            ring: ring.clone(),
            pending: None,
        };
        fresh.step(now, Addressed::new(NodeId(2), NodeId(1), state), &mut out);
        assert!(fresh.agreed_with_peer() && fresh.ring().is_member(NodeId(1)));
        let mut r = Rebalancer::new(NodeId(1), 3);
        assert!(r.plan(&fresh, now).is_empty());
        assert!(r.plan(&fresh, now + DROP_GRACE * 2).is_empty());
    }

    #[test]
    fn a_stored_state_with_an_out_of_range_n_is_refused() {
        let mut ring = Ring::empty();
        ring = claim_join(&ring, NodeId(1), 8).unwrap();
        let target = claim_join(&ring, NodeId(2), 8).unwrap();
        let state = crate::ring::RingState::settled(ring.clone());
        let mut bad = state
            .begin(crate::ring::Change::Join(NodeId(2)), target, 3)
            .unwrap();
        bad.pending.as_mut().unwrap().n = 0;
        let mut k = RingKeeper::new(
            NodeId(1),
            &RingConfig::default(),
            Duration::from_secs(1),
            &[],
            1,
        )
        .unwrap();
        assert!(k.restore(bad).is_err());
        assert!(k.ring().is_empty(), "the empty ring is kept");
        k.restore(state).unwrap();
        assert_eq!(**k.ring(), ring);
    }
}
