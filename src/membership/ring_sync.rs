//! The ring keeper: this node's copy of the hash ring, kept in step with
//! every other node's by gossip, and the token claim of this node's own
//! join and leave.
//!
//! # How ring states converge
//!
//! Nodes gossip a [`RingState`]: the ring in force and the change in
//! progress (see [`crate::ring::transition`]). Each gossip interval the
//! keeper sends the digest of its state ([`RingMsg::Digest`], with the
//! epoch of its ring in force and the digest of its pending target) to one
//! random reachable peer. A receiver with a different state answers with
//! its whole state ([`RingMsg::State`]) unless the sender's ring is
//! newer, in which case it answers with its digest so the sender sends its
//! state. A receiver of a state merges it into its own (a join: the newer
//! ring, the greater change, the union of moves done) and answers with its
//! state if that still differs, else with its digest. So all nodes end on
//! the same state, whatever the order of exchanges.
//!
//! While a change is pending, a digest also carries the sender's progress
//! ([`Progress`]: the fence of its ring and change, the change, and the
//! moves done). Two nodes on the same ring and change differ only in moves
//! done, so a receiver in that case takes the moves from the digest and
//! answers with its own digest if it has moves the sender lacks; done sets
//! only grow, so the exchange ends. A move done here goes the same way to
//! the peers that have reported the change, and the whole state (two
//! rings) only to those that have not. Before, every finished transfer
//! sent both rings to every peer: in 40 of the simulator's seeds, ring
//! states were 184 of the 297 MB its nodes sent; now 24 of 140.
//!
//! # Who changes the ring
//!
//! Only a node itself claims tokens for itself, with the deterministic
//! claim of [`crate::ring::claim`]: the first node of a cluster (one started
//! without seeds) claims on the empty ring, which settles at once; a
//! joining node waits until it has a ring from a peer and no change is
//! pending, then begins a join towards the claimed ring. A leaving node
//! begins a leave towards `claim_leave`. Should a node be LEFT without
//! having finished its leave, the lowest-id ALIVE node begins its removal.
//! DOWN nodes stay in the ring: a failure is not a leave.
//!
//! One change is pending at a time. Two nodes that begin one at once each
//! make a state of the same ring; the greater target wins and the other
//! node begins again once the winner is in force. A node that begins or
//! learns a change sends its state to every reachable peer at once, and a
//! receiver answers with its digest, so within a round trip the keeper
//! knows who has seen the change: [`RingKeeper::transfers_may_start`] holds
//! once every reachable member has, so that no coordinator still routes
//! writes of a moving range to the old ring only. The executor of this
//! node's moves ([`RingKeeper::incoming_moves`]) reports each one with
//! [`RingKeeper::mark_done`], which is sent to every reachable peer; the
//! last one puts the change in force everywhere.
//!
//! # What it does not do
//!
//! It moves no data (the transfer executor does), keeps no history of
//! rings, and does no I/O: the ring role (`roles::ring`) has each new
//! state stored, the node hands the stored one to [`RingKeeper::restore`]
//! at start, and peers' newer states win by merge.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tracing::warn;

use super::table::MemberStatus;
use super::{Addressed, MemberEvent, Outbox, Progress, RingEvent, RingMsg};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::ring::{
    claim_join, claim_leave, Change, MovePlan, RangeMove, Ring, RingFence, RingState,
};
use crate::ring::{RingConfig, DEFAULT_CLAIM_REPLICAS};

/// The ring protocol of one node. See the module documentation.
#[derive(Debug)]
pub struct RingKeeper {
    me: NodeId,
    vnodes: usize,
    /// Replicas per key that changes move data for.
    transfer_replicas: usize,
    interval: Duration,
    /// [`RingConfig::waive_down_after`].
    waive_down_after: Duration,
    state: Arc<RingState>,
    digest: u64,
    /// The ring in force, shared with subscribers.
    ring: Arc<Ring>,
    /// The membership's view of every other node, from its events.
    statuses: BTreeMap<NodeId, MemberStatus>,
    /// The pending-target digest each peer last reported (0: none).
    confirmed: BTreeMap<NodeId, u64>,
    seeds: Vec<NodeId>,
    /// Started without seeds: the node that creates the ring.
    founder: bool,
    /// Wants to hold tokens (false once leaving).
    member: bool,
    rng: ChaCha8Rng,
    next_round: Option<Instant>,
    /// Whether a peer has reported the same state as this node's since it
    /// started: until then a restored state may be stale.
    agreed: bool,
    /// Started from a stored state ([`RingKeeper::restore`]).
    restored: bool,
    /// Since when each peer DOWN now has been seen DOWN (at a tick).
    down_since: BTreeMap<NodeId, Instant>,
    /// The first tick, and the latest: how long this node has run.
    first_tick: Option<Instant>,
    last_tick: Option<Instant>,
}

/// How long a node restarted on its stored ring waits for a peer to
/// confirm it while no peer is reachable at all, before it trusts the ring
/// (see [`RingKeeper::ring_confirmed`]): 30 gossip intervals, and at least
/// 10 s.
pub fn ring_confirm_wait(gossip_interval: Duration) -> Duration {
    (gossip_interval * 30).max(Duration::from_secs(10))
}

/// Whether every index of moves done names one of a change's `moves`
/// moves; else the first that does not. A peer's state or digest naming
/// another is ignored: merged, it would never be matched, and the two
/// nodes' digests would differ until the change ended.
fn moves_in_range<'a>(done: impl IntoIterator<Item = &'a u32>, moves: usize) -> Result<(), u32> {
    match done.into_iter().find(|&&i| i as usize >= moves) {
        Some(&bad) => Err(bad),
        None => Ok(()),
    }
}

/// The digest that breaks ties between rings of one epoch.
pub fn ring_digest(ring: &Ring) -> u64 {
    crate::ring::transition::ring_digest(ring)
}

/// The largest `n` a received pending change may name (the bucket maximum).
const MAX_TRANSFER_REPLICAS: usize = 16;

impl RingKeeper {
    /// Makes this node found the cluster even though it has seeds (see
    /// [`crate::config::NodeConfig::bootstrap`]): with no ring of its own,
    /// it claims on the empty ring rather than wait for a peer's.
    pub fn found(&mut self) {
        self.founder = true;
    }

    /// A keeper for node `me` that joins through `seeds`, or founds the
    /// cluster if `seeds` names no other node. Fails with `InvalidInput` if
    /// `ring` does not validate.
    pub fn new(
        me: NodeId,
        ring: &RingConfig,
        gossip_interval: Duration,
        seeds: &[NodeId],
        rng_seed: u64,
    ) -> Result<Self> {
        ring.validate()?;
        let seeds: Vec<NodeId> = seeds.iter().copied().filter(|&s| s != me).collect();
        let state = RingState::settled(Ring::empty());
        Ok(RingKeeper {
            me,
            vnodes: ring.vnodes_per_node,
            transfer_replicas: DEFAULT_CLAIM_REPLICAS,
            interval: gossip_interval,
            waive_down_after: ring.waive_down_after,
            digest: state.digest(),
            ring: Arc::new(state.ring.clone()),
            state: Arc::new(state),
            statuses: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            founder: seeds.is_empty(),
            seeds,
            member: true,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            next_round: None,
            agreed: false,
            restored: false,
            down_since: BTreeMap::new(),
            first_tick: None,
            last_tick: None,
        })
    }

    /// Starts from `state`, the state this node stored before it stopped,
    /// instead of the empty ring: a node that restarts alone (a founder, or
    /// every node after a cluster-wide stop) keeps its tokens and the ring
    /// instead of claiming a new one. Peers' newer states still win by
    /// merge. Fails with `InvalidInput`, keeping the empty ring, for a
    /// pending change with an `n` out of range; call it before the first
    /// tick.
    pub fn restore(&mut self, state: RingState) -> Result<()> {
        if state
            .pending
            .as_ref()
            .is_some_and(|p| p.n == 0 || p.n > MAX_TRANSFER_REPLICAS)
        {
            return Err(Error::InvalidInput(
                "the stored ring state names a change with an out-of-range n".into(),
            ));
        }
        self.digest = state.digest();
        self.ring = Arc::new(state.ring.clone());
        self.state = Arc::new(state);
        self.restored = true;
        Ok(())
    }

    /// Starts as a member of a cluster already formed on `state` (every
    /// node given the same state at once, as a simulator or a test sets a
    /// cluster up): like [`RingKeeper::restore`], but the state counts as
    /// agreed, so the ring routes requests at once. Same failures.
    pub fn form(&mut self, state: RingState) -> Result<()> {
        self.restore(state)?;
        self.restored = false;
        self.agreed = true;
        Ok(())
    }

    /// Makes a node that was leaving when it stopped go on leaving: it gives
    /// its tokens away (or keeps out of the ring, if they are gone) instead
    /// of claiming tokens again. Call it before the first tick.
    pub fn resume_leave(&mut self) {
        self.member = false;
    }

    /// Whether this node is giving its tokens away on purpose
    /// ([`RingKeeper::leave`], [`RingKeeper::resume_leave`]).
    pub fn is_leaving(&self) -> bool {
        !self.member
    }

    /// Whether this node started from a stored state (a restart).
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// Whether this node's ring may route requests: it did not start from
    /// a stored state (its ring came from its peers, or it founded the
    /// cluster), or a peer has since reported the same state, or no other
    /// node is in the ring or the change in progress, or no peer is
    /// reachable and the node has run for [`ring_confirm_wait`] (a lone
    /// survivor: with no peer to reach, its requests cannot go to a node
    /// that no longer owns a key; once a peer is reachable, it waits for
    /// that peer's answer again).
    pub fn ring_confirmed(&self) -> bool {
        let alone = || {
            let others = |r: &Ring| r.members().into_iter().any(|n| n != self.me);
            !others(&self.state.ring)
                && !self
                    .state
                    .pending
                    .as_ref()
                    .is_some_and(|p| others(&p.target))
        };
        let waited = || match (self.first_tick, self.last_tick) {
            (Some(first), Some(last)) => {
                last.duration_since(first) >= ring_confirm_wait(self.interval)
                    && self.reachable().is_empty()
            }
            _ => false,
        };
        !self.restored || self.agreed || alone() || waited()
    }

    /// Whether some peer has reported holding the same state as this node
    /// since it started, so that this node's ring is not just what it
    /// stored before a restart.
    pub fn agreed_with_peer(&self) -> bool {
        self.agreed
    }

    /// Sets the replicas per key that this node's changes move data for
    /// (default 3; clamped to 1..=16). Buckets with a larger `n` get their
    /// extra replicas from read repair and anti-entropy.
    pub fn set_transfer_replicas(&mut self, n: usize) {
        self.transfer_replicas = n.clamp(1, MAX_TRANSFER_REPLICAS);
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Replicas per key that this node's changes move data for.
    pub fn transfer_replicas(&self) -> usize {
        self.transfer_replicas
    }

    /// The ring in force.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The whole state: the ring in force and the change in progress.
    pub fn state(&self) -> &Arc<RingState> {
        &self.state
    }

    /// Takes in a membership event.
    pub fn on_member_event(&mut self, event: &MemberEvent) {
        let (node, status) = match *event {
            MemberEvent::Up { node, .. } => (node, MemberStatus::Alive),
            MemberEvent::Suspect { node, .. } => (node, MemberStatus::Suspect),
            MemberEvent::Down { node, .. } => (node, MemberStatus::Down),
            MemberEvent::Left { node } => (node, MemberStatus::Left),
            MemberEvent::Refuted { .. } | MemberEvent::LocalPause { .. } => return,
        };
        if node != self.me {
            self.statuses.insert(node, status);
        }
    }

    /// Advances time: begins this node's join or leave if it should and
    /// can, removes LEFT nodes if this node is the one to, and gossips the
    /// digest when due.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox<RingMsg, RingEvent>) {
        self.first_tick.get_or_insert(now);
        self.last_tick = Some(now);
        for (&node, &status) in &self.statuses {
            if status == MemberStatus::Down {
                self.down_since.entry(node).or_insert(now);
            } else {
                self.down_since.remove(&node);
            }
        }
        if self.state.pending.is_none() {
            self.begin_due(out);
        } else {
            self.waive_dead_gainers(now, out);
        }
        if self.next_round.is_none_or(|due| now >= due) {
            self.next_round = Some(now + self.interval);
            let unconfirmed = self.unconfirmed();
            if let Some(&to) = unconfirmed.choose(&mut self.rng) {
                // Transfers wait until every reachable node of the change
                // has confirmed it. A peer is heard from only when it
                // gossips here, which may take many rounds of its random
                // choices (or not happen before a leave times out), so ask
                // one that has not: a state is always answered, with the
                // peer's own state or digest, which carries its change.
                out.send(self.me, to, self.state_message());
            } else {
                let targets = self.reachable();
                let pool = if targets.is_empty() {
                    &self.seeds
                } else {
                    &targets
                };
                if let Some(&to) = pool.choose(&mut self.rng) {
                    out.send(self.me, to, self.digest_message());
                }
            }
        }
    }

    /// Begins what this node should begin when no change is pending: its
    /// own join (claiming tokens on the ring it has, once that ring is a
    /// peer's or it founds the cluster), its own leave, or the removal of
    /// a member reported LEFT. Called at every tick, and as soon as a
    /// state from a peer leaves nothing pending: a joiner claims the
    /// moment it learns the ring, or the moment the change before its own
    /// is in force, instead of at its next gossip round (issue [14]: three
    /// nodes started together each waited up to an interval here).
    fn begin_due(&mut self, out: &mut Outbox<RingMsg, RingEvent>) {
        if self.state.pending.is_some() {
            return;
        }
        let ring = &self.state.ring;
        if self.member && !ring.is_member(self.me) && (self.founder || !ring.is_empty()) {
            match claim_join(ring, self.me, self.vnodes) {
                Ok(target) => self.begin(Change::Join(self.me), target, out),
                Err(e) => warn!(node = %self.me, error = %e, "token claim failed"),
            }
        } else if !self.member && ring.is_member(self.me) {
            match claim_leave(ring, self.me) {
                Ok(target) => self.begin(Change::Leave(self.me), target, out),
                Err(e) => warn!(node = %self.me, error = %e, "leave claim failed"),
            }
        } else {
            self.remove_departed(out);
        }
    }

    /// Handles one message of ring gossip.
    pub fn step(
        &mut self,
        _now: Instant,
        envelope: Addressed<RingMsg>,
        out: &mut Outbox<RingMsg, RingEvent>,
    ) {
        let from = envelope.from;
        match envelope.msg {
            RingMsg::Digest {
                epoch,
                digest,
                pending,
                progress,
            } => {
                self.confirmed.insert(from, pending);
                if digest == self.digest {
                    self.agreed = true;
                    return;
                }
                if let Some(progress) = progress.filter(|p| self.same_change(&p.fence, p.change)) {
                    self.take_progress(from, digest, progress, out);
                    return;
                }
                if epoch > self.state.ring.epoch() {
                    out.send(self.me, from, self.digest_message());
                } else {
                    // Older, or the same ring with another change or other
                    // moves done: the peer merges ours and answers.
                    out.send(self.me, from, self.state_message());
                }
            }
            RingMsg::State { ring, pending } => {
                if pending
                    .as_ref()
                    .is_some_and(|p| p.n == 0 || p.n > MAX_TRANSFER_REPLICAS)
                {
                    warn!(%from, "ring state with an out-of-range n ignored");
                    return;
                }
                let theirs = RingState { ring, pending };
                if let Some(p) = &theirs.pending {
                    if let Err(bad) = moves_in_range(&p.done, p.shared_moves(&theirs.ring).len()) {
                        warn!(%from, index = bad, "ring state with a move index out of range ignored");
                        return;
                    }
                }
                self.confirmed.insert(from, theirs.pending_digest());
                let mut merged = (*self.state).clone();
                if merged.merge(&theirs) {
                    self.install(merged, out);
                    // A ring learned, or the change before this node's
                    // own in force: begin at once. The answer below then
                    // carries the new change to the sender.
                    self.begin_due(out);
                }
                if *self.state != theirs {
                    // On the same change, only the done moves differ: the
                    // digest carries those.
                    let same = theirs
                        .pending
                        .as_ref()
                        .is_some_and(|p| self.same_change(&theirs.fence(), p.change));
                    let answer = if same {
                        self.digest_message()
                    } else {
                        self.state_message()
                    };
                    out.send(self.me, from, answer);
                } else {
                    self.agreed = true;
                    out.send(self.me, from, self.digest_message());
                }
            }
        }
    }

    /// Leaves: this node begins giving its tokens away, with a tick at
    /// `now` (or at the first tick once no other change is pending); it is
    /// out of the ring when that change completes, after its ranges have
    /// been pulled by their new owners.
    pub fn leave(&mut self, now: Instant, out: &mut Outbox<RingMsg, RingEvent>) {
        self.member = false;
        self.tick(now, out);
    }

    /// Whether every reachable member has reported the pending change, so
    /// that every coordinator routes writes of moving ranges to both rings:
    /// only then may transfers start.
    pub fn transfers_may_start(&self) -> bool {
        self.state.pending.is_some() && self.unconfirmed().is_empty()
    }

    /// The reachable nodes of the pending change (members of the ring in
    /// force or of its target) that have not confirmed it; empty when no
    /// change is pending.
    fn unconfirmed(&self) -> Vec<NodeId> {
        let Some(pending) = &self.state.pending else {
            return Vec::new();
        };
        let want = pending.target.digest();
        // Asked every tick: the rings' members only for the few reachable
        // nodes that have not confirmed.
        let behind: Vec<NodeId> = self
            .reachable()
            .into_iter()
            .filter(|n| self.confirmed.get(n) != Some(&want))
            .collect();
        if behind.is_empty() {
            return behind;
        }
        let involved: BTreeSet<NodeId> = self
            .state
            .ring
            .members()
            .into_iter()
            .chain(pending.target.members())
            .collect();
        behind
            .into_iter()
            .filter(|n| *n != self.me && involved.contains(n))
            .collect()
    }

    /// The moves this node receives that are not done yet: index, move, and
    /// the nodes to pull it from (see [`RingState::sources`]).
    pub fn incoming_moves(&self) -> Vec<(u32, RangeMove, Vec<NodeId>)> {
        let Some(pending) = &self.state.pending else {
            return Vec::new();
        };
        pending
            .moves(&self.state.ring)
            .into_iter()
            .enumerate()
            .filter(|(i, m)| m.to == self.me && !pending.done.contains(&(*i as u32)))
            .map(|(i, m)| {
                let sources = self
                    .state
                    .sources(&m, |n| n == self.me || self.is_reachable(n));
                (i as u32, m, sources)
            })
            .collect()
    }

    /// The nodes to pull move `mv` of the pending change from: every old
    /// replica of its range that this node reaches (see
    /// [`RingState::sources`]); empty while too few are up.
    pub fn sources_of(&self, mv: &RangeMove) -> Vec<NodeId> {
        self.state
            .sources(mv, |n| n == self.me || self.is_reachable(n))
    }

    /// Marks move `index` of the pending change done (its data is here) and
    /// tells every reachable peer.
    pub fn mark_done(&mut self, index: u32, out: &mut Outbox<RingMsg, RingEvent>) {
        self.mark_all_done(&[index], out);
    }

    /// Marks moves `indices` of the pending change done at once (one
    /// transfer carried all their ranges), with one new state and one
    /// message to every reachable peer, not one per move.
    pub fn mark_all_done(&mut self, indices: &[u32], out: &mut Outbox<RingMsg, RingEvent>) {
        let mut next = (*self.state).clone();
        if next.mark_all_done(indices) {
            self.install(next, out);
            self.broadcast_progress(out);
        }
    }

    /// Whether `fence` and `change` name this node's ring in force and its
    /// pending change: then two states differ only in the moves done,
    /// which [`RingMsg::Digest`]'s progress carries, and merging those
    /// makes them equal.
    fn same_change(&self, fence: &RingFence, change: Change) -> bool {
        self.state
            .pending
            .as_ref()
            .is_some_and(|p| p.change == change)
            && *fence == self.state.fence()
    }

    /// Merges the moves a peer on the same change has done (its digest's
    /// progress), and answers with this node's digest if the peer lacks
    /// some of this node's, or with the whole state if the merge completed
    /// the change here (the peer then takes the new ring from it).
    fn take_progress(
        &mut self,
        from: NodeId,
        their_digest: u64,
        progress: Progress,
        out: &mut Outbox<RingMsg, RingEvent>,
    ) {
        let moves = self
            .state
            .pending
            .as_ref()
            .map_or(0, |p| p.shared_moves(&self.state.ring).len());
        if let Err(bad) = moves_in_range(&progress.done, moves) {
            warn!(%from, index = bad, moves, "ring digest with a move index out of range ignored");
            return;
        }
        let mut merged = (*self.state).clone();
        if merged.mark_all_done(&progress.done) {
            self.install(merged, out);
            // The change in force: begin what waited for it.
            self.begin_due(out);
        }
        if self.digest == their_digest {
            self.agreed = true;
        } else if self.same_change(&progress.fence, progress.change) {
            out.send(self.me, from, self.digest_message());
        } else {
            out.send(self.me, from, self.state_message());
        }
    }

    /// After moves done here: the whole state to every reachable peer that
    /// has not reported this change, the digest with its progress to those
    /// that have; the whole state to all once the change is complete.
    fn broadcast_progress(&mut self, out: &mut Outbox<RingMsg, RingEvent>) {
        let Some(target) = self.state.pending.as_ref().map(|p| p.target.digest()) else {
            self.broadcast(out);
            return;
        };
        for to in self.reachable() {
            let msg = if self.confirmed.get(&to) == Some(&target) {
                self.digest_message()
            } else {
                self.state_message()
            };
            out.send(self.me, to, msg);
        }
    }

    /// Sends this node's state to `node`, which has just become reachable,
    /// when a change is pending that it has not confirmed: the barrier
    /// then waits one round trip for it, not for the next gossip round.
    pub fn greet(&mut self, node: NodeId, out: &mut Outbox<RingMsg, RingEvent>) {
        if self.unconfirmed().contains(&node) {
            out.send(self.me, node, self.state_message());
        }
    }

    fn begin(&mut self, change: Change, target: Ring, out: &mut Outbox<RingMsg, RingEvent>) {
        if let Some(next) = self.state.begin(change, target, self.transfer_replicas) {
            // Installing a new change broadcasts it.
            self.install(next, out);
        }
    }

    fn digest_message(&self) -> RingMsg {
        RingMsg::Digest {
            epoch: self.state.ring.epoch(),
            digest: self.digest,
            pending: self.state.pending_digest(),
            progress: self.state.pending.as_ref().map(|p| Progress {
                fence: self.state.fence(),
                change: p.change,
                done: p.done.iter().copied().collect(),
            }),
        }
    }

    fn state_message(&self) -> RingMsg {
        RingMsg::State {
            ring: self.state.ring.clone(),
            pending: self.state.pending.clone(),
        }
    }

    /// Sends the whole state to every reachable peer: a change, or a move
    /// done, reaches everyone in one round trip instead of by gossip.
    fn broadcast(&mut self, out: &mut Outbox<RingMsg, RingEvent>) {
        for to in self.reachable() {
            out.send(self.me, to, self.state_message());
        }
    }

    fn is_reachable(&self, node: NodeId) -> bool {
        self.statuses.get(&node).is_some_and(|s| s.is_reachable())
    }

    fn reachable(&self) -> Vec<NodeId> {
        self.statuses
            .iter()
            .filter(|(_, s)| s.is_reachable())
            .map(|(&n, _)| n)
            .collect()
    }

    fn install(&mut self, state: RingState, out: &mut Outbox<RingMsg, RingEvent>) {
        let new_change = state.pending_digest() != self.state.pending_digest();
        let new_ring = state.ring != *self.ring;
        if let Some(p) = &self.state.pending {
            if p.target == state.ring {
                let lost = MovePlan::lost_ranges(&self.state.ring, &p.target, p.n, self.me);
                out.event(RingEvent::Completed(lost));
            }
        }
        self.digest = state.digest();
        self.state = Arc::new(state);
        if new_ring {
            self.ring = Arc::new(self.state.ring.clone());
            out.event(RingEvent::Changed(Arc::clone(&self.ring)));
        }
        out.event(RingEvent::State(Arc::clone(&self.state)));
        if new_change && self.state.pending.is_some() {
            self.broadcast(out);
        }
    }

    /// Whether this node is the lowest-id ALIVE node it knows of: the one
    /// that acts for a node that cannot act for itself.
    /// Whether this node reaches (itself included) more than half of the
    /// nodes in the ring in force and the change in progress. A node cut
    /// off from the rest sees every other node DOWN: it must not take
    /// them for dead and finish a change alone (an isolated leaver would
    /// otherwise "complete" its own leave with no data moved).
    fn reaches_majority(&self) -> bool {
        let mut involved: BTreeSet<NodeId> = self.state.ring.members();
        if let Some(p) = &self.state.pending {
            involved.extend(p.target.members());
        }
        let reached = involved
            .iter()
            .filter(|&&n| n == self.me || self.is_reachable(n))
            .count();
        reached * 2 > involved.len()
    }

    fn is_lowest_alive(&self) -> bool {
        let lowest = self
            .statuses
            .iter()
            .filter(|(_, s)| **s == MemberStatus::Alive)
            .map(|(&n, _)| n)
            .chain(std::iter::once(self.me))
            .min();
        lowest == Some(self.me)
    }

    /// Marks done, if this node is the lowest ALIVE one, the moves of the
    /// pending change into nodes that are DOWN or LEFT: they cannot pull,
    /// and must not hold the change (and every change after it) back. Such
    /// a node, if it comes back, gets the data of those ranges from read
    /// repair and anti-entropy instead.
    fn waive_dead_gainers(&mut self, now: Instant, out: &mut Outbox<RingMsg, RingEvent>) {
        let Some(pending) = &self.state.pending else {
            return;
        };
        if !self.is_lowest_alive() || !self.reaches_majority() {
            return;
        }
        // LEFT is gone for good; DOWN only once it has lasted
        // `waive_down_after`. A gainer that is merely cut off comes back,
        // and a move waived for it would leave it a replica without the
        // range's data: a quorum read could then miss acknowledged writes.
        let dead = |n: NodeId| match self.statuses.get(&n) {
            Some(MemberStatus::Left) => true,
            Some(MemberStatus::Down) => self.down_since.get(&n).is_some_and(|&since| {
                now.saturating_duration_since(since) >= self.waive_down_after
            }),
            _ => false,
        };
        let waived: Vec<u32> = pending
            .moves(&self.state.ring)
            .iter()
            .enumerate()
            .filter(|(i, m)| !pending.done.contains(&(*i as u32)) && dead(m.to))
            .map(|(i, _)| i as u32)
            .collect();
        if waived.is_empty() {
            return;
        }
        warn!(node = %self.me, moves = waived.len(), "waiving the moves of a change into down nodes");
        let mut next = (*self.state).clone();
        for i in waived {
            next.mark_done(i);
        }
        self.install(next, out);
        self.broadcast(out);
    }

    /// Removes ring members the membership reports LEFT, if this node is
    /// the lowest-id ALIVE node (so that one node, not all, does it): a
    /// node that left without finishing its own leave. Its ranges are
    /// copied again from the surviving replicas.
    fn remove_departed(&mut self, out: &mut Outbox<RingMsg, RingEvent>) {
        if !self.member || !self.is_lowest_alive() {
            return;
        }
        let departed = self
            .state
            .ring
            .members()
            .into_iter()
            .find(|n| self.statuses.get(n) == Some(&MemberStatus::Left));
        if let Some(node) = departed {
            match claim_leave(&self.state.ring, node) {
                Ok(target) => self.begin(Change::Remove(node), target, out),
                Err(e) => warn!(node = %node, error = %e, "removing a departed node failed"),
            }
        }
    }

    /// Begins removing `node`, a member that is gone for good. Refused with
    /// `InvalidInput` for this node, a node it can reach (a live node
    /// leaves by itself), a node not in the ring, or while another change
    /// is in progress.
    pub fn remove(&mut self, node: NodeId, out: &mut Outbox<RingMsg, RingEvent>) -> Result<()> {
        let refuse = |why: String| Err(Error::InvalidInput(why));
        if node == self.me {
            return refuse(format!("{node} cannot remove itself: it leaves instead"));
        }
        if self.is_reachable(node) {
            return refuse(format!("{node} is reachable: a live node leaves by itself"));
        }
        if !self.state.ring.is_member(node) {
            return refuse(format!("{node} is not in the ring"));
        }
        if let Some(p) = &self.state.pending {
            return refuse(format!("a change is in progress ({:?})", p.change));
        }
        let target = claim_leave(&self.state.ring, node)?;
        self.begin(Change::Remove(node), target, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeper(id: u64, seeds: &[u64]) -> RingKeeper {
        let seeds: Vec<NodeId> = seeds.iter().map(|&s| NodeId(s)).collect();
        let cfg = RingConfig {
            vnodes_per_node: 16,
            ..RingConfig::default()
        };
        RingKeeper::new(NodeId(id), &cfg, Duration::from_secs(1), &seeds, id).unwrap()
    }

    fn up(node: u64) -> MemberEvent {
        MemberEvent::Up {
            node: NodeId(node),
            addr: String::new(),
            incarnation: 0,
        }
    }

    /// Keepers 1 to 4, node 1 founding and the others joining through it,
    /// each seeing the others ALIVE.
    fn four_keepers() -> BTreeMap<NodeId, RingKeeper> {
        let mut keepers = BTreeMap::new();
        keepers.insert(NodeId(1), keeper(1, &[]));
        for id in 2..=4 {
            keepers.insert(NodeId(id), keeper(id, &[1]));
        }
        for (&id, k) in keepers.iter_mut() {
            for other in 1..=4 {
                if NodeId(other) != id {
                    k.on_member_event(&up(other));
                }
            }
        }
        keepers
    }

    /// Ticks every keeper `rounds` times, delivering all messages at once.
    /// Each round, a keeper whose transfers may start completes one of its
    /// incoming moves, as the transfer executor would.
    fn run(keepers: &mut BTreeMap<NodeId, RingKeeper>, rounds: usize) {
        // One clock for the whole test, so that a later run is later.
        thread_local!(static NOW: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
        let mut now = NOW.with(|c| c.get()).unwrap_or_else(Instant::now);
        for _ in 0..rounds {
            now += Duration::from_secs(1);
            let mut queue = Vec::new();
            for k in keepers.values_mut() {
                let mut out = Outbox::new();
                k.tick(now, &mut out);
                if k.transfers_may_start() {
                    if let Some((index, _, _)) = k.incoming_moves().first() {
                        k.mark_done(*index, &mut out);
                    }
                }
                queue.extend(out.messages);
            }
            while let Some(env) = queue.pop() {
                if let Some(k) = keepers.get_mut(&env.to) {
                    let mut out = Outbox::new();
                    k.step(now, env, &mut out);
                    queue.extend(out.messages);
                }
            }
        }
        NOW.with(|c| c.set(Some(now)));
    }

    #[test]
    fn concurrent_joins_converge_on_one_ring_holding_everyone() {
        let mut keepers = four_keepers();
        run(&mut keepers, 200);
        let rings: Vec<Arc<Ring>> = keepers.values().map(|k| Arc::clone(k.ring())).collect();
        for ring in &rings {
            assert_eq!(**ring, *rings[0]);
        }
        let members: Vec<NodeId> = rings[0].members().into_iter().collect();
        assert_eq!(members, (1..=4).map(NodeId).collect::<Vec<_>>());
        // One change at a time: each joiner claimed on top of the last.
        assert!(rings[0].epoch() >= 4);
        for k in keepers.values() {
            assert!(k.state().pending.is_none());
        }
    }

    /// Keepers 1 and 2 settled on one ring, each seeing the other ALIVE.
    fn two_keepers() -> BTreeMap<NodeId, RingKeeper> {
        let mut keepers = BTreeMap::new();
        keepers.insert(NodeId(1), keeper(1, &[]));
        keepers.insert(NodeId(2), keeper(2, &[1]));
        for (a, b) in [(1, 2), (2, 1)] {
            keepers.get_mut(&NodeId(a)).unwrap().on_member_event(&up(b));
        }
        run(&mut keepers, 40);
        keepers
    }

    #[test]
    fn transfers_wait_until_every_reachable_member_has_the_change() {
        let keepers = two_keepers();
        assert_eq!(keepers[&NodeId(1)].ring().members().len(), 2);
        // Node 3 joins: its claim begins a change, but it may not pull
        // before both others have reported seeing the change.
        let mut three = keeper(3, &[1]);
        three.on_member_event(&up(1));
        three.on_member_event(&up(2));
        let mut out = Outbox::new();
        three.step(
            Instant::now(),
            Addressed::new(
                NodeId(1),
                NodeId(3),
                RingMsg::State {
                    ring: (**keepers[&NodeId(1)].ring()).clone(),
                    pending: None,
                },
            ),
            &mut out,
        );
        three.tick(Instant::now(), &mut out);
        assert!(three.state().pending.is_some(), "the join began a change");
        assert!(!three.ring().is_member(NodeId(3)), "not in force yet");
        assert!(!three.transfers_may_start());
        let moves = three.incoming_moves();
        assert!(!moves.is_empty());
        // Pulled from every old replica up, the node losing the range
        // first (the old ring has two nodes: both).
        assert!(moves.iter().all(|(_, m, sources)| m.to == NodeId(3)
            && sources.first() == Some(&m.from)
            && sources.len() == 2));
        let want = three.state().pending_digest();
        let confirm = |three: &mut RingKeeper, from: u64| {
            let mut out = Outbox::new();
            three.step(
                Instant::now(),
                Addressed::new(
                    NodeId(from),
                    NodeId(3),
                    RingMsg::Digest {
                        epoch: 0,
                        digest: 0,
                        pending: want,
                        progress: None,
                    },
                ),
                &mut out,
            );
        };
        confirm(&mut three, 1);
        assert!(!three.transfers_may_start(), "node 2 has not confirmed");
        confirm(&mut three, 2);
        assert!(three.transfers_may_start());
        // A down member is not waited for.
        let mut out = Outbox::new();
        three.on_member_event(&MemberEvent::Down {
            node: NodeId(2),
            incarnation: 0,
        });
        confirm(&mut three, 1);
        three.tick(Instant::now(), &mut out);
        assert!(three.transfers_may_start());
        // Every move done: the join is in force.
        for (i, _, _) in three.incoming_moves() {
            three.mark_done(i, &mut out);
        }
        assert!(three.ring().is_member(NodeId(3)));
        assert!(three.state().pending.is_none());
    }

    #[test]
    fn a_change_asks_the_peers_that_have_not_confirmed_it() {
        // Nodes 1 and 2 hold a ring; node 3's join begins a change. Node 3
        // does not wait for 1 and 2 to happen to gossip to it: each round
        // it sends its state to one that has not confirmed, and a state is
        // always answered.
        let mut keepers = two_keepers();
        let mut three = keeper(3, &[1]);
        three.on_member_event(&up(1));
        three.on_member_event(&up(2));
        let start = Instant::now();
        let mut out = Outbox::new();
        let ring = (**keepers[&NodeId(1)].ring()).clone();
        let state = RingMsg::State {
            ring,
            pending: None,
        };
        three.step(start, Addressed::new(NodeId(1), NodeId(3), state), &mut out);
        three.tick(start, &mut out);
        assert!(three.state().pending.is_some());
        let mut asked = BTreeSet::new();
        for round in 1..=4u32 {
            let now = start + Duration::from_secs(round.into());
            let mut out = Outbox::new();
            three.tick(now, &mut out);
            let sent: Vec<_> = out.messages.iter().map(|e| (e.to, e.msg.kind())).collect();
            assert_eq!(sent.len(), 1, "one message a round: {sent:?}");
            let (to, kind) = sent[0];
            if three.transfers_may_start() {
                assert_eq!(kind, "ring_digest", "all confirmed: plain gossip");
                continue;
            }
            assert_eq!(kind, "ring_state", "round {round}: asks");
            assert!(asked.insert(to), "asks {to} once it has answered");
            // The peer answers (only through `step`: it never gossips).
            let mut queue = out.messages;
            while let Some(env) = queue.pop() {
                let mut replies = Outbox::new();
                if env.to == NodeId(3) {
                    three.step(now, env, &mut replies);
                } else if let Some(k) = keepers.get_mut(&env.to) {
                    k.step(now, env, &mut replies);
                }
                queue.extend(replies.messages);
            }
        }
        assert_eq!(asked, [NodeId(1), NodeId(2)].into_iter().collect());
        assert!(three.transfers_may_start());
    }

    /// Delivers `queue` and every answer until no message is left; fails
    /// if that takes more than 200 messages (an exchange that never ends).
    fn pump(
        keepers: &mut BTreeMap<NodeId, RingKeeper>,
        now: Instant,
        mut queue: Vec<Addressed<RingMsg>>,
    ) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        while let Some(env) = queue.pop() {
            kinds.push(env.msg.kind());
            assert!(kinds.len() <= 200, "the exchange does not end: {kinds:?}");
            let mut out = Outbox::new();
            if let Some(k) = keepers.get_mut(&env.to) {
                k.step(now, env, &mut out);
            }
            queue.extend(out.messages);
        }
        kinds
    }

    #[test]
    fn moves_done_travel_in_digests_between_nodes_on_one_change() {
        // Nodes 1 and 2 hold a ring; node 3's join is pending on all three.
        let mut keepers = two_keepers();
        let mut three = keeper(3, &[1]);
        three.on_member_event(&up(1));
        three.on_member_event(&up(2));
        for k in keepers.values_mut() {
            k.on_member_event(&up(3));
        }
        let now = Instant::now();
        let mut out = Outbox::new();
        let state = RingMsg::State {
            ring: (**keepers[&NodeId(1)].ring()).clone(),
            pending: None,
        };
        three.step(now, Addressed::new(NodeId(1), NodeId(3), state), &mut out);
        three.tick(now, &mut out);
        keepers.insert(NodeId(3), three);
        pump(&mut keepers, now, out.messages);
        let target = keepers[&NodeId(3)].state().pending_digest();
        assert_ne!(target, 0, "the join is pending");
        for k in keepers.values() {
            assert_eq!(k.state().pending_digest(), target);
            assert!(k.transfers_may_start(), "every node has confirmed");
        }
        let (i, j) = {
            let moves = keepers[&NodeId(3)].incoming_moves();
            assert!(moves.len() >= 3);
            (moves[0].0, moves[1].0)
        };
        let done = |k: &RingKeeper| k.state().pending.as_ref().unwrap().done.clone();

        // Node 1 does move i, node 2 move j, neither hearing of the other's.
        let mut from_one = Outbox::new();
        keepers
            .get_mut(&NodeId(1))
            .unwrap()
            .mark_done(i, &mut from_one);
        let mut from_two = Outbox::new();
        keepers
            .get_mut(&NodeId(2))
            .unwrap()
            .mark_done(j, &mut from_two);
        // Both peers have confirmed the change: each is told by digest.
        let sent: Vec<_> = from_one.messages.iter().map(|e| e.msg.kind()).collect();
        assert_eq!(sent, ["ring_digest", "ring_digest"]);
        // Node 2 takes move i from node 1's digest and answers with its
        // own, which carries move j; node 1 takes it and is then equal.
        let to_two: Vec<_> = from_one
            .messages
            .into_iter()
            .filter(|e| e.to == NodeId(2))
            .collect();
        let kinds = pump(&mut keepers, now, to_two);
        assert_eq!(kinds, ["ring_digest", "ring_digest"], "no whole state");
        let both: BTreeSet<u32> = [i, j].into_iter().collect();
        assert_eq!(done(&keepers[&NodeId(1)]), both);
        assert_eq!(done(&keepers[&NodeId(2)]), both);
        assert_eq!(keepers[&NodeId(1)].state(), keepers[&NodeId(2)].state());

        // A digest naming a move the change does not have changes nothing.
        let one = &keepers[&NodeId(1)];
        let moves = one
            .state()
            .pending
            .as_ref()
            .unwrap()
            .moves(&one.state().ring)
            .len();
        let before = one.state().clone();
        let fence = one.state().fence();
        let bad = RingMsg::Digest {
            epoch: fence.epoch,
            digest: 1,
            pending: target,
            progress: Some(Progress {
                fence,
                change: Change::Join(NodeId(3)),
                done: vec![i, moves as u32],
            }),
        };
        let mut out = Outbox::new();
        let one = keepers.get_mut(&NodeId(1)).unwrap();
        one.step(now, Addressed::new(NodeId(3), NodeId(1), bad), &mut out);
        assert_eq!(**one.state(), *before);
        assert!(out.messages.is_empty());

        // So does a whole state naming one.
        let mut wrong = before.as_ref().clone();
        wrong.pending.as_mut().unwrap().done.insert(moves as u32);
        let bad = RingMsg::State {
            ring: wrong.ring.clone(),
            pending: wrong.pending.clone(),
        };
        one.step(now, Addressed::new(NodeId(3), NodeId(1), bad), &mut out);
        assert_eq!(**one.state(), *before);
        assert!(out.messages.is_empty());

        // A digest without progress (a node that predates it) that
        // differs is answered with the whole state, as before.
        let old = RingMsg::Digest {
            epoch: fence.epoch,
            digest: 1,
            pending: target,
            progress: None,
        };
        one.step(now, Addressed::new(NodeId(3), NodeId(1), old), &mut out);
        let sent: Vec<_> = out.messages.iter().map(|e| e.msg.kind()).collect();
        assert_eq!(sent, ["ring_state"]);

        // The last moves done: the change completes everywhere.
        let rest: Vec<u32> = (0..moves as u32).filter(|m| !both.contains(m)).collect();
        let mut out = Outbox::new();
        keepers
            .get_mut(&NodeId(3))
            .unwrap()
            .mark_all_done(&rest, &mut out);
        pump(&mut keepers, now, out.messages);
        for k in keepers.values() {
            assert!(k.state().pending.is_none());
            assert!(k.ring().is_member(NodeId(3)));
        }
    }

    #[test]
    fn states_of_one_fence_and_different_changes_settle_by_merge() {
        // A leave and a removal of node 4 towards one target ring share a
        // fence; a digest's progress must not be taken as moves of the
        // same change, or the two nodes trade digests without end.
        let mut ring = Ring::empty();
        for id in 1..=4 {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        let target = claim_leave(&ring, NodeId(4)).unwrap();
        let settled = RingState::settled(ring);
        let mut leave = settled
            .begin(Change::Leave(NodeId(4)), target.clone(), 3)
            .unwrap();
        let mut remove = settled.begin(Change::Remove(NodeId(4)), target, 3).unwrap();
        assert_eq!(leave.fence(), remove.fence());
        assert!(leave.pending.is_some() && remove.pending.is_some());
        leave.mark_done(0);
        remove.mark_done(1);
        let mut keepers = BTreeMap::new();
        for (id, state) in [(1, leave), (2, remove)] {
            let mut k = keeper(id, &[1]);
            k.form(state).unwrap();
            k.on_member_event(&up(3 - id));
            keepers.insert(NodeId(id), k);
        }
        let first = keepers[&NodeId(1)].digest_message();
        pump(
            &mut keepers,
            Instant::now(),
            vec![Addressed::new(NodeId(1), NodeId(2), first)],
        );
        assert_eq!(keepers[&NodeId(1)].state(), keepers[&NodeId(2)].state());
    }

    #[test]
    fn a_leave_removes_the_node_everywhere() {
        let mut keepers = four_keepers();
        run(&mut keepers, 100);
        let mut out = Outbox::new();
        keepers
            .get_mut(&NodeId(2))
            .unwrap()
            .leave(Instant::now(), &mut out);
        assert!(keepers[&NodeId(2)].state().pending.is_some());
        // The others pull node 2's ranges, then the leave is in force.
        run(&mut keepers, 100);
        assert!(!keepers[&NodeId(2)].ring().is_member(NodeId(2)));
        keepers.remove(&NodeId(2));
        for k in keepers.values_mut() {
            k.on_member_event(&MemberEvent::Left { node: NodeId(2) });
        }
        run(&mut keepers, 10);
        for k in keepers.values() {
            let members: Vec<NodeId> = k.ring().members().into_iter().collect();
            assert_eq!(members, vec![NodeId(1), NodeId(3), NodeId(4)]);
        }
    }

    #[test]
    fn moves_into_a_down_node_do_not_hold_a_leave_back() {
        let mut keepers = four_keepers();
        run(&mut keepers, 150);
        assert_eq!(keepers[&NodeId(1)].ring().members().len(), 4);
        // Node 4 crashes; the others see it DOWN. Node 3 leaves: some of
        // its ranges go to node 4, which cannot pull them.
        keepers.remove(&NodeId(4));
        for k in keepers.values_mut() {
            k.on_member_event(&MemberEvent::Down {
                node: NodeId(4),
                incarnation: 0,
            });
        }
        let mut out = Outbox::new();
        keepers
            .get_mut(&NodeId(3))
            .unwrap()
            .leave(Instant::now(), &mut out);
        let pending = keepers[&NodeId(3)].state().pending.clone().unwrap();
        let ring = keepers[&NodeId(3)].state().ring.clone();
        assert!(
            pending.moves(&ring).iter().any(|m| m.to == NodeId(4)),
            "the leave gives node 4 some ranges"
        );
        // Within `waive_down_after`, node 4 may only be cut off and come
        // back: its moves wait rather than leave it without the data.
        run(&mut keepers, 40);
        for k in keepers.values() {
            let p = k.state().pending.as_ref().expect("still changing");
            let into_4: Vec<u32> = p
                .moves(&k.state().ring)
                .iter()
                .enumerate()
                .filter(|(_, m)| m.to == NodeId(4))
                .map(|(i, _)| i as u32)
                .collect();
            assert!(
                into_4.iter().all(|i| !p.done.contains(i)),
                "{:?} waived a move into a node down for less than a minute",
                k.me
            );
        }
        run(&mut keepers, 110);
        for k in keepers.values() {
            assert!(k.state().pending.is_none(), "{:?} still changing", k.me);
            let members: Vec<NodeId> = k.ring().members().into_iter().collect();
            assert_eq!(members, vec![NodeId(1), NodeId(2), NodeId(4)]);
        }
    }

    #[test]
    fn a_restored_ring_is_trusted_once_a_peer_agrees_or_after_a_wait_with_no_peer() {
        let mut ring = Ring::empty();
        for id in 1..=3 {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        let start = Instant::now();
        let wait = ring_confirm_wait(Duration::from_secs(1));
        let restored = || {
            let mut k = keeper(1, &[2]);
            k.restore(RingState::settled(ring.clone())).unwrap();
            k
        };
        // No peer reachable: trusted only after the wait.
        let mut k = restored();
        let mut out = Outbox::new();
        k.tick(start, &mut out);
        assert!(!k.ring_confirmed());
        k.tick(start + wait / 2, &mut out);
        assert!(!k.ring_confirmed());
        k.tick(start + wait, &mut out);
        assert!(k.ring_confirmed());
        // A peer reachable: waits for its answer, however long it takes.
        k.on_member_event(&up(2));
        assert!(!k.ring_confirmed());
        let digest = RingMsg::Digest {
            epoch: ring.epoch(),
            digest: k.state().digest(),
            pending: 0,
            progress: None,
        };
        k.step(
            start + wait,
            Addressed::new(NodeId(2), NodeId(1), digest),
            &mut out,
        );
        assert!(k.ring_confirmed());
        // A first start is trusted at once.
        assert!(keeper(1, &[2]).ring_confirmed());
    }
}
