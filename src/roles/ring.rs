//! The ring role: this node's ring keeper and rebalancer, the saving of
//! every new ring state, the ring-confirmed gate and the graceful leave,
//! as one machine with no I/O.
//!
//! It owns the [`RingKeeper`] (ring gossip, this node's token claim) and
//! the [`Rebalancer`] (which transfers to run, which ranges to drop), and
//! decides what the RingManager actor and `Node::leave` used to decide:
//!
//! - **The ring.** Ring gossip goes out as messages; every new ring and
//!   ring state comes out as [`RingOutput::Ring`] and
//!   [`RingOutput::State`], for whoever routes by them.
//! - **Saving.** Every new ring state is stored ([`RingWork::Save`]), one
//!   save at a time and always the newest: while a save is under way, the
//!   states that come meanwhile wait, and when it ends
//!   ([`RingRole::saved`]) only the newest of them is saved. A node that
//!   restarts routes by the ring it had, even when no peer is up yet to
//!   tell it, and resumes the transfers of a change in progress.
//! - **Transfers.** After every input the rebalancer is asked what to do,
//!   and its answer goes to this node's handoff role as
//!   [`RingOutput::Handoff`]: start or cancel a transfer into this node,
//!   drop a range given away. Nothing goes out before
//!   [`RingRole::handoff_ready`] (the handoff role starts after this one).
//!   A finished transfer comes back through [`RingRole::on_transfer_done`]
//!   and marks its moves done.
//! - **The ring-confirmed gate.** Whether this node's ring may route
//!   requests ([`RingKeeper::ring_confirmed`]); each change of it comes out
//!   as [`RingOutput::Confirmed`].
//! - **Leaving.** [`RingRole::decommission`] begins giving this node's
//!   tokens away and nothing more. [`RingRole::leave`] does so and follows
//!   the leave: once the ring in force no longer holds this node (its
//!   ranges moved), or once `leave_timeout` has passed without that (a
//!   taker is unreachable, or another change holds the ring), it asks for
//!   LEFT to be gossiped ([`RingOutput::AnnounceLeft`]); `leave_linger`
//!   later it says the node may stop ([`RingOutput::Left`]).
//!
//! Effects come out as the crate's one [`Effect`] shape:
//! ring messages to other nodes, [`RingWork`] for an executor
//! ([`execute`]: a blocking thread in a node, inline in a simulator), and
//! [`RingOutput`]s. Time comes in as `now`; the runner ticks the role every
//! gossip interval, and earlier when [`RingRole::next_wakeup`] asks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error};

use crate::codec;
use crate::effect::Effect;
use crate::error::Result;
use crate::id::NodeId;
use crate::membership::rebalance::{RebalanceAction, Rebalancer};
use crate::membership::{Addressed, MemberEvent, Outbox, RingEvent, RingKeeper, RingMsg};
use crate::replication::replica::ReplicaStore;
use crate::ring::{Ring, RingState};

/// The metadata record the ring state is stored under.
pub const RING_META: &str = "ring";

/// The metadata record that says this node gave its tokens away on purpose
/// (a decommission or a leave): once stored, a restarted node goes on
/// leaving instead of claiming tokens again ([`RingKeeper::resume_leave`]).
pub const LEAVING_META: &str = "ring.leaving";

/// How long a leave waits for this node's ranges to move before the node
/// leaves anyway (the default of [`RingRoleConfig::leave_timeout`]): 10
/// minutes, long enough to stream tens of GiB at the default throttle,
/// bounded so that a stuck change cannot keep a leaving node up for ever.
pub const LEAVE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// How the role leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingRoleConfig {
    /// How long a leave waits for this node's ranges to move; then the
    /// node leaves anyway, and the lowest live node removes it from the
    /// ring (its ranges are copied again from the other replicas).
    pub leave_timeout: Duration,
    /// How long LEFT is gossiped before the node may stop.
    pub leave_linger: Duration,
}

impl Default for RingRoleConfig {
    /// [`LEAVE_TRANSFER_TIMEOUT`], and the membership's default linger.
    fn default() -> Self {
        RingRoleConfig {
            leave_timeout: LEAVE_TRANSFER_TIMEOUT,
            leave_linger: crate::membership::MembershipConfig::default().leave_linger,
        }
    }
}

pub use super::handoff::HandoffCommand;

/// Storage work the role asks of an executor ([`execute`]); its result
/// comes back through [`RingRole::saved`].
#[derive(Clone, Debug, PartialEq)]
pub enum RingWork {
    /// Store this ring state (the newest) under [`RING_META`].
    Save(Arc<RingState>),
    /// Store [`LEAVING_META`]: this node is leaving, also after a restart.
    Leaving,
}

/// What the role tells its runner.
#[derive(Clone, Debug, PartialEq)]
pub enum RingOutput {
    /// A new ring is in force (to publish).
    Ring(Arc<Ring>),
    /// A new ring state (to publish): a change began, a move was done, or
    /// a new ring is in force (then just after [`RingOutput::Ring`]).
    State(Arc<RingState>),
    /// For this node's handoff role.
    Handoff(HandoffCommand),
    /// The ring-confirmed gate changed to this value.
    Confirmed(bool),
    /// Leaving: the ranges moved, or the leave timed out. Tell the failure
    /// detector to gossip LEFT.
    AnnounceLeft,
    /// The leave is finished, `leave_linger` after
    /// [`RingOutput::AnnounceLeft`]: the node may stop. `moved` is false
    /// when the leave timed out before the ranges moved.
    Left {
        /// Whether the ring no longer held this node when LEFT was
        /// announced.
        moved: bool,
    },
}

/// Something the role wants done: ring messages, [`RingWork`] and
/// [`RingOutput`]s in the crate's one [`Effect`] shape.
pub type RingEffect = Effect<RingMsg, RingWork, RingOutput>;

/// Carries out `work` on `store` (blocking): encodes the ring state and
/// stores it in the metadata record [`RING_META`] (through the engine's
/// write-ahead log, under its sync policy).
pub fn execute(store: &ReplicaStore, work: RingWork) -> Result<()> {
    match work {
        RingWork::Save(state) => store.store_meta(RING_META, &codec::encode(&*state)?),
        RingWork::Leaving => store.store_meta(LEAVING_META, b"leaving"),
    }
}

/// Whether `store` says this node was leaving when it stopped
/// ([`LEAVING_META`]).
pub fn was_leaving(store: &ReplicaStore) -> Result<bool> {
    Ok(store.load_meta(LEAVING_META)?.is_some())
}

/// Where a leave asked with [`RingRole::leave`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaving {
    /// Waiting, since `since`, for the ring in force to drop this node.
    Moving { since: Instant },
    /// LEFT announced at `at`; lingering.
    Announced { at: Instant, moved: bool },
    /// Finished: the node may stop.
    Done { moved: bool },
}

/// The role. See the module documentation.
#[derive(Debug)]
pub struct RingRole {
    keeper: RingKeeper,
    rebalancer: Rebalancer,
    config: RingRoleConfig,
    /// Whether the handoff role takes commands.
    handoff_ready: bool,
    /// The newest state not yet given to a save.
    unsaved: Option<Arc<RingState>>,
    /// Whether a save is under way.
    saving: bool,
    /// The gate as last told.
    confirmed: bool,
    leaving: Option<Leaving>,
}

/// `at + d`, or `None` past the clock's range (never).
fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

impl RingRole {
    /// The role around `keeper` (restored from the stored state, if any,
    /// already); its rebalancer moves data for the keeper's
    /// replicas per key.
    pub fn new(keeper: RingKeeper, config: RingRoleConfig) -> Self {
        RingRole {
            rebalancer: Rebalancer::new(keeper.me(), keeper.transfer_replicas()),
            confirmed: keeper.ring_confirmed(),
            keeper,
            config,
            handoff_ready: false,
            unsaved: None,
            saving: false,
            leaving: None,
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.keeper.me()
    }

    /// The ring in force.
    pub fn ring(&self) -> &Arc<Ring> {
        self.keeper.ring()
    }

    /// The whole ring state: the ring in force and the change in progress.
    pub fn state(&self) -> &Arc<RingState> {
        self.keeper.state()
    }

    /// Whether this node's ring may route requests (see
    /// [`RingKeeper::ring_confirmed`]), as last told by
    /// [`RingOutput::Confirmed`] (or as it was at the start).
    pub fn ring_confirmed(&self) -> bool {
        self.confirmed
    }

    /// The ring keeper, for queries.
    pub fn keeper(&self) -> &RingKeeper {
        &self.keeper
    }

    /// Transfers into this node running now.
    pub fn transfers_running(&self) -> usize {
        self.rebalancer.running()
    }

    /// Whether a leave asked with [`RingRole::leave`] is under way or done.
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    /// The first tick, at once when the runner starts: a founder claims
    /// its tokens immediately.
    pub fn start(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        self.tick(now, out);
    }

    /// Advances time: the keeper's tick (claims, removals, the gossip
    /// round when due), due drops, and the leave's deadlines.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        let mut outbox = Outbox::new();
        self.keeper.tick(now, &mut outbox);
        self.carry(now, outbox, out);
    }

    /// A ring message from `from`.
    pub fn step(&mut self, now: Instant, from: NodeId, msg: RingMsg, out: &mut Vec<RingEffect>) {
        let mut outbox = Outbox::new();
        let me = self.keeper.me();
        self.keeper
            .step(now, Addressed::new(from, me, msg), &mut outbox);
        self.carry(now, outbox, out);
    }

    /// A membership event: a member going down may lift the transfer
    /// barrier, change a transfer's sources, or change the gate.
    pub fn on_member_event(
        &mut self,
        now: Instant,
        event: &MemberEvent,
        out: &mut Vec<RingEffect>,
    ) {
        self.keeper.on_member_event(event);
        let mut outbox = Outbox::new();
        if let MemberEvent::Up { node, .. } = *event {
            // A peer the pending change waits for is reachable: ask it
            // now rather than at the next gossip round.
            self.keeper.greet(node, &mut outbox);
        }
        self.carry(now, outbox, out);
    }

    /// The handoff role takes commands from now on: the transfers due are
    /// started at once.
    pub fn handoff_ready(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        self.handoff_ready = true;
        self.settle(now, out);
    }

    /// Transfer `id` finished: its moves are marked done (and told to
    /// every reachable peer), if it belongs to the change in progress.
    pub fn on_transfer_done(&mut self, now: Instant, id: u64, out: &mut Vec<RingEffect>) {
        let Some(indices) = self.rebalancer.on_done(id) else {
            return;
        };
        let mut outbox = Outbox::new();
        self.keeper.mark_all_done(&indices, &mut outbox);
        self.carry(now, outbox, out);
    }

    /// Transfer `id` could not start (its record could not be read, or
    /// the handoff role is gone): the rebalancer forgets it, so the next
    /// input that plans (a tick, a message) starts it again. Nothing is
    /// planned here, so a storage that keeps failing is retried at the
    /// pace of the role's inputs, not in a loop.
    pub fn on_transfer_failed(&mut self, id: u64) {
        self.rebalancer.on_failed(id);
    }

    /// Begins giving this node's tokens away (at once, or once the change
    /// in progress is in force); the node keeps running, and nothing
    /// follows the leave (see [`RingRole::leave`]).
    pub fn decommission(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        if self.keeper.is_leaving() {
            // Asked again, or resumed after a restart: nothing to store.
        } else {
            // Stored first: a node that crashes before its ranges have
            // moved comes back leaving, not claiming tokens again.
            out.push(Effect::Store(RingWork::Leaving));
        }
        let mut outbox = Outbox::new();
        self.keeper.leave(now, &mut outbox);
        self.carry(now, outbox, out);
    }

    /// Leaves gracefully: [`RingRole::decommission`], then, once the ring
    /// in force no longer holds this node or `leave_timeout` from `now`
    /// has passed, [`RingOutput::AnnounceLeft`], and `leave_linger` after
    /// that [`RingOutput::Left`]. A leave already under way goes on as it
    /// was; one already finished says [`RingOutput::Left`] again at once.
    pub fn leave(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        match self.leaving {
            None => {
                self.leaving = Some(Leaving::Moving { since: now });
                self.decommission(now, out);
            }
            Some(Leaving::Done { moved }) => out.push(Effect::Emit(RingOutput::Left { moved })),
            Some(_) => {}
        }
    }

    /// Begins removing `node`, a member gone for good (see
    /// [`RingKeeper::remove`], whose refusals it returns).
    pub fn remove(&mut self, now: Instant, node: NodeId, out: &mut Vec<RingEffect>) -> Result<()> {
        let mut outbox = Outbox::new();
        let result = self.keeper.remove(node, &mut outbox);
        self.carry(now, outbox, out);
        result
    }

    /// Storage work ended: a save ([`RingRole::saved`]), or storing the
    /// leave's intent (a failure is logged: the leave goes on, but a
    /// restart before it ends would claim tokens again).
    pub fn finished(
        &mut self,
        now: Instant,
        work: &RingWork,
        result: Result<()>,
        out: &mut Vec<RingEffect>,
    ) {
        match work {
            RingWork::Save(_) => self.saved(now, result, out),
            RingWork::Leaving => {
                if let Err(e) = result {
                    crate::log::warn_every!(node = %self.keeper.me(), error = %e, "storing the leave's intent failed");
                }
            }
        }
    }

    /// A save ended: the newest state that came meanwhile, if any, is
    /// saved next. A failed save is logged; the next state saves the ring
    /// again.
    pub fn saved(&mut self, _now: Instant, result: Result<()>, out: &mut Vec<RingEffect>) {
        self.saving = false;
        if let Err(e) = result {
            crate::log::warn_every!(node = %self.keeper.me(), error = %e, "storing the ring state failed");
        }
        self.save(out);
    }

    /// The earliest instant a leave's deadline needs a tick (the timeout,
    /// or the end of the linger); `None` when no leave is waiting on time,
    /// so the regular gossip tick is enough.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.leaving? {
            Leaving::Moving { since } => after(since, self.config.leave_timeout),
            Leaving::Announced { at, .. } => after(at, self.config.leave_linger),
            Leaving::Done { .. } => None,
        }
    }

    /// Turns the keeper's outbox into effects, then settles.
    fn carry(
        &mut self,
        now: Instant,
        outbox: Outbox<RingMsg, RingEvent>,
        out: &mut Vec<RingEffect>,
    ) {
        for m in outbox.messages {
            out.push(Effect::Send {
                to: m.to,
                msg: m.msg,
            });
        }
        for event in outbox.events {
            match event {
                RingEvent::Changed(ring) => out.push(Effect::Emit(RingOutput::Ring(ring))),
                RingEvent::State(state) => {
                    self.unsaved = Some(Arc::clone(&state));
                    out.push(Effect::Emit(RingOutput::State(state)));
                }
                RingEvent::Completed(lost) => self.rebalancer.on_completed(&lost, now),
            }
        }
        self.settle(now, out);
    }

    /// What follows any input: the gate, the save, the rebalancer's
    /// actions and the leave.
    fn settle(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        let confirmed = self.keeper.ring_confirmed();
        if confirmed != self.confirmed {
            self.confirmed = confirmed;
            out.push(Effect::Emit(RingOutput::Confirmed(confirmed)));
        }
        self.save(out);
        self.rebalance(now, out);
        self.follow_leave(now, out);
    }

    /// Saves the newest unsaved state, unless a save is under way (its end
    /// saves what is newest then).
    fn save(&mut self, out: &mut Vec<RingEffect>) {
        if self.saving {
            return;
        }
        if let Some(state) = self.unsaved.take() {
            self.saving = true;
            out.push(Effect::Store(RingWork::Save(state)));
        }
    }

    /// Tells the handoff role what the rebalancer says now.
    fn rebalance(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        if !self.handoff_ready {
            return;
        }
        for action in self.rebalancer.plan(&self.keeper, now) {
            let command = match action {
                RebalanceAction::Start(spec) => {
                    debug!(id = spec.id, range = ?spec.range, sources = ?spec.sources, "starting a transfer");
                    HandoffCommand::Start(spec)
                }
                RebalanceAction::Cancel(id) => HandoffCommand::Cancel(id),
                RebalanceAction::Drop(range) => HandoffCommand::Drop {
                    range,
                    keep_wide: Some((
                        Arc::clone(self.keeper.ring()),
                        self.keeper.transfer_replicas(),
                    )),
                },
            };
            out.push(Effect::Emit(RingOutput::Handoff(command)));
        }
    }

    /// Moves a leave on: announces LEFT once the ranges moved or the
    /// timeout passed, and finishes after the linger.
    fn follow_leave(&mut self, now: Instant, out: &mut Vec<RingEffect>) {
        if let Some(Leaving::Moving { since }) = self.leaving {
            let me = self.keeper.me();
            let moved = !self.keeper.ring().is_member(me);
            let timed_out = after(since, self.config.leave_timeout).is_some_and(|t| now >= t);
            if !moved && !timed_out {
                return;
            }
            if !moved {
                error!(node = %me, "leaving before its ranges moved: they will be copied from other replicas");
            }
            self.leaving = Some(Leaving::Announced { at: now, moved });
            out.push(Effect::Emit(RingOutput::AnnounceLeft));
        }
        if let Some(Leaving::Announced { at, moved }) = self.leaving {
            if after(at, self.config.leave_linger).is_some_and(|t| now >= t) {
                self.leaving = Some(Leaving::Done { moved });
                out.push(Effect::Emit(RingOutput::Left { moved }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use super::*;
    use crate::membership::rebalance::{transfer_id, DROP_GRACE};
    use crate::membership::ring_sync::ring_confirm_wait;
    use crate::replication::transfer::TransferSpec;
    use crate::ring::{claim_join, RingConfig};

    const GOSSIP: Duration = Duration::from_secs(1);

    fn config() -> RingRoleConfig {
        RingRoleConfig {
            leave_timeout: Duration::from_secs(60),
            leave_linger: Duration::from_secs(3),
        }
    }

    /// A keeper as the ring keeper's own tests build one: 16 vnodes, one
    /// second between gossip rounds.
    fn keeper(id: u64, seeds: &[u64]) -> RingKeeper {
        let seeds: Vec<NodeId> = seeds.iter().map(|&s| NodeId(s)).collect();
        let cfg = RingConfig {
            vnodes_per_node: 16,
            ..RingConfig::default()
        };
        RingKeeper::new(NodeId(id), &cfg, GOSSIP, &seeds, id).unwrap()
    }

    fn up(node: u64) -> MemberEvent {
        MemberEvent::Up {
            node: NodeId(node),
            addr: String::new(),
            incarnation: 0,
        }
    }

    /// Ring roles wired together by nothing but their effects: messages
    /// are delivered at once (unless a node is cut off), saves end at once
    /// (unless held), and a started transfer finishes at once (unless
    /// held), as a handoff role that pulls instantly would.
    struct Net {
        roles: BTreeMap<NodeId, RingRole>,
        now: Instant,
        /// Nodes whose messages are lost, both ways.
        cut: BTreeSet<NodeId>,
        /// Nodes whose saves never end by themselves.
        hold_saves: BTreeSet<NodeId>,
        /// Nodes whose transfers never finish by themselves.
        hold_transfers: BTreeSet<NodeId>,
        /// Everything each node emitted, in order.
        outputs: BTreeMap<NodeId, Vec<RingOutput>>,
        /// Every state each node asked to save, in order.
        saves: BTreeMap<NodeId, Vec<Arc<RingState>>>,
        /// How many times each node asked to store its leave's intent.
        intents: BTreeMap<NodeId, usize>,
    }

    impl Net {
        fn new() -> Self {
            Net {
                roles: BTreeMap::new(),
                now: Instant::now(),
                cut: BTreeSet::new(),
                hold_saves: BTreeSet::new(),
                intents: BTreeMap::new(),
                hold_transfers: BTreeSet::new(),
                outputs: BTreeMap::new(),
                saves: BTreeMap::new(),
            }
        }

        fn role(&mut self, id: u64) -> &mut RingRole {
            self.roles.get_mut(&NodeId(id)).unwrap()
        }

        /// Adds node `id` joining through `seeds` (founding when none),
        /// every node seeing every other up; starts it, and makes its
        /// handoff role ready if `ready`.
        fn add(&mut self, id: u64, seeds: &[u64], ready: bool) {
            let me = NodeId(id);
            let mut role = RingRole::new(keeper(id, seeds), config());
            let others: Vec<NodeId> = self.roles.keys().copied().collect();
            let now = self.now;
            let mut out = Vec::new();
            for &other in &others {
                role.on_member_event(now, &up(other.0), &mut out);
            }
            self.roles.insert(me, role);
            self.carry(me, out);
            for other in others {
                let mut out = Vec::new();
                self.roles
                    .get_mut(&other)
                    .unwrap()
                    .on_member_event(now, &up(id), &mut out);
                self.carry(other, out);
            }
            let mut out = Vec::new();
            self.role(id).start(now, &mut out);
            if ready {
                self.role(id).handoff_ready(now, &mut out);
            }
            self.carry(me, out);
        }

        /// Runs `input` on node `id` at the current time and carries out
        /// its effects; returns them as they came out.
        fn input(
            &mut self,
            id: u64,
            input: impl FnOnce(&mut RingRole, Instant, &mut Vec<RingEffect>),
        ) -> Vec<RingEffect> {
            let now = self.now;
            let mut out = Vec::new();
            input(self.role(id), now, &mut out);
            self.carry(NodeId(id), out.clone());
            out
        }

        fn carry(&mut self, node: NodeId, effects: Vec<RingEffect>) {
            let mut queue: VecDeque<(NodeId, RingEffect)> =
                effects.into_iter().map(|e| (node, e)).collect();
            let now = self.now;
            while let Some((at, effect)) = queue.pop_front() {
                let mut out = Vec::new();
                let mut by = at;
                match effect {
                    Effect::Send { to, msg } => {
                        if self.cut.contains(&at) || self.cut.contains(&to) {
                            continue;
                        }
                        if let Some(role) = self.roles.get_mut(&to) {
                            role.step(now, at, msg, &mut out);
                        }
                        by = to;
                    }
                    Effect::Store(RingWork::Save(state)) => {
                        self.saves.entry(at).or_default().push(state);
                        if !self.hold_saves.contains(&at) {
                            self.roles
                                .get_mut(&at)
                                .unwrap()
                                .saved(now, Ok(()), &mut out);
                        }
                    }
                    Effect::Store(RingWork::Leaving) => {
                        *self.intents.entry(at).or_default() += 1;
                    }
                    Effect::Emit(output) => {
                        if let RingOutput::Handoff(HandoffCommand::Start(spec)) = &output {
                            if !self.hold_transfers.contains(&at) {
                                self.roles
                                    .get_mut(&at)
                                    .unwrap()
                                    .on_transfer_done(now, spec.id, &mut out);
                            }
                        }
                        self.outputs.entry(at).or_default().push(output);
                    }
                }
                queue.extend(out.into_iter().map(|e| (by, e)));
            }
        }

        /// `rounds` gossip intervals: every node ticks once per interval.
        fn run(&mut self, rounds: usize) {
            for _ in 0..rounds {
                self.now += GOSSIP;
                let ids: Vec<u64> = self.roles.keys().map(|n| n.0).collect();
                for id in ids {
                    self.input(id, |r, now, out| r.tick(now, out));
                }
            }
        }

        /// Runs until every node has the same settled ring holding them
        /// all (at most `rounds` intervals); fails otherwise.
        fn settle(&mut self, rounds: usize) {
            let all: BTreeSet<NodeId> = self.roles.keys().copied().collect();
            for _ in 0..rounds {
                let settled = self.roles.values().all(|r| {
                    r.state().pending.is_none()
                        && r.ring().members() == all
                        && r.ring() == self.roles.values().next().unwrap().ring()
                });
                if settled {
                    return;
                }
                self.run(1);
            }
            panic!("the ring did not settle in {rounds} rounds");
        }

        /// Node `id` crashes and starts again from the last state it
        /// saved, going on leaving if `leaving` (what it stored says).
        fn restart(&mut self, id: u64, leaving: bool) {
            let me = NodeId(id);
            let mut keeper = keeper(id, &[1]);
            if let Some(state) = self.saves.get(&me).and_then(|s| s.last()) {
                keeper.restore((**state).clone()).unwrap();
            }
            if leaving {
                keeper.resume_leave();
            }
            let mut role = RingRole::new(keeper, config());
            let others: Vec<NodeId> = self.roles.keys().copied().filter(|&n| n != me).collect();
            let mut out = Vec::new();
            for other in others {
                role.on_member_event(self.now, &up(other.0), &mut out);
            }
            role.start(self.now, &mut out);
            role.handoff_ready(self.now, &mut out);
            self.roles.insert(me, role);
            self.carry(me, out);
        }

        fn emitted(&self, id: u64) -> &[RingOutput] {
            self.outputs.get(&NodeId(id)).map_or(&[], Vec::as_slice)
        }

        fn clear_outputs(&mut self) {
            self.outputs.clear();
        }
    }

    /// Nodes 1 to 3 settled on one ring.
    fn three() -> Net {
        let mut net = Net::new();
        net.add(1, &[], true);
        net.add(2, &[1], true);
        net.add(3, &[1], true);
        net.settle(200);
        net.clear_outputs();
        net
    }

    /// Nodes 1 to 4 settled on one ring.
    fn four() -> Net {
        let mut net = three();
        net.add(4, &[1], true);
        net.settle(200);
        net.clear_outputs();
        net
    }

    /// [`three`]; then node 4 joins with its handoff role not ready and
    /// its transfers held (its saves too, if `hold_saves`), up to the point
    /// where its transfers may start.
    fn fourth_joining(hold_saves: bool) -> Net {
        let mut net = three();
        net.hold_transfers.insert(NodeId(4));
        if hold_saves {
            net.hold_saves.insert(NodeId(4));
        }
        net.add(4, &[1], false);
        for _ in 0..20 {
            if net.role(4).keeper().transfers_may_start() {
                break;
            }
            net.run(1);
        }
        net
    }

    fn handoffs(outputs: &[RingOutput]) -> Vec<&HandoffCommand> {
        outputs
            .iter()
            .filter_map(|o| match o {
                RingOutput::Handoff(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// The transfers started in `outputs`.
    fn started(outputs: &[RingOutput]) -> Vec<TransferSpec> {
        handoffs(outputs)
            .into_iter()
            .filter_map(|c| match c {
                HandoffCommand::Start(spec) => Some(spec.clone()),
                _ => None,
            })
            .collect()
    }

    /// The transfers started in `effects`.
    fn starts(effects: &[RingEffect]) -> Vec<TransferSpec> {
        effects
            .iter()
            .filter_map(|e| match e.as_emit() {
                Some(RingOutput::Handoff(HandoffCommand::Start(spec))) => Some(spec.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_joiner_starts_its_transfers_only_once_its_handoff_is_ready() {
        let mut net = fourth_joining(false);
        let four = net.role(4);
        assert!(four.state().pending.is_some(), "the join began");
        assert!(four.keeper().transfers_may_start(), "the barrier is lifted");
        assert!(!four.ring().is_member(NodeId(4)), "not in force yet");
        let moves = four.keeper().incoming_moves();
        assert!(!moves.is_empty());
        assert!(
            handoffs(net.emitted(4)).is_empty(),
            "no handoff command before the handoff role is ready"
        );
        assert_eq!(net.role(4).transfers_running(), 0);

        let out = net.input(4, |r, now, out| r.handoff_ready(now, out));
        let started = starts(&out);
        let change = net.role(4).state().pending_digest();
        let fence = Some(net.role(4).state().fence());
        // Moves that follow each other with the same old replicas go in
        // one transfer, named after its first move; each move is in
        // exactly one, pulled from its own sources.
        assert!(!started.is_empty() && started.len() <= moves.len());
        for (index, mv, sources) in &moves {
            let carriers: Vec<&TransferSpec> = started
                .iter()
                .filter(|s| s.range.contains(mv.range.through))
                .collect();
            assert_eq!(carriers.len(), 1, "{mv:?}");
            let spec = carriers[0];
            assert!(spec
                .range
                .contains(crate::ring::Token(mv.range.after.0.wrapping_add(1))));
            let (mut got, mut want) = (spec.sources.clone(), sources.clone());
            got.sort();
            want.sort();
            assert_eq!(got, want);
            assert_eq!(spec.fence, fence);
            if spec.range.after == mv.range.after {
                assert_eq!(spec.id, transfer_id(change, *index, NodeId(4)));
            }
        }
        assert_eq!(net.role(4).transfers_running(), started.len());
        // Started once: a tick starts nothing again.
        let again = net.input(4, |r, now, out| r.tick(now, out));
        assert!(starts(&again).is_empty());
    }

    #[test]
    fn finished_transfers_complete_the_join_and_the_givers_drop_after_the_grace() {
        let mut net = fourth_joining(false);
        let out = net.input(4, |r, now, out| r.handoff_ready(now, out));
        let specs = starts(&out);
        assert!(specs.len() > 1, "several moves: {}", specs.len());
        // An unknown transfer does nothing.
        assert!(net
            .input(4, |r, now, out| r.on_transfer_done(now, 12345, out))
            .is_empty());
        let (last, first) = specs.split_last().unwrap();
        for spec in first {
            let out = net.input(4, |r, now, out| r.on_transfer_done(now, spec.id, out));
            assert!(
                !out.iter()
                    .any(|e| matches!(e.as_emit(), Some(RingOutput::Ring(_)))),
                "no new ring before the last move"
            );
            assert!(!net.role(4).ring().is_member(NodeId(4)));
        }
        let out = net.input(4, |r, now, out| r.on_transfer_done(now, last.id, out));
        let emits: Vec<&RingOutput> = out.iter().filter_map(Effect::as_emit).collect();
        let ring = emits
            .iter()
            .find_map(|o| match o {
                RingOutput::Ring(r) => Some(Arc::clone(r)),
                _ => None,
            })
            .expect("the new ring is published");
        assert!(ring.is_member(NodeId(4)));
        let state = emits
            .iter()
            .find_map(|o| match o {
                RingOutput::State(s) => Some(Arc::clone(s)),
                _ => None,
            })
            .expect("the new state is published");
        assert!(state.pending.is_none());
        assert_eq!(state.ring, *ring);
        assert!(out.iter().any(|e| e.as_send().is_some()), "peers are told");
        // The others have it at once (the move done was broadcast).
        for id in 1..=3 {
            assert_eq!(net.role(id).ring(), &ring, "node {id}");
        }

        // Nodes 1 to 3 gave ranges to node 4: each drops them, but only
        // after the grace.
        net.clear_outputs();
        let rounds = (DROP_GRACE.as_secs() - 1) as usize;
        net.run(rounds);
        for id in 1..=3 {
            assert!(
                handoffs(net.emitted(id)).is_empty(),
                "node {id} too early: {:?}",
                handoffs(net.emitted(id))
            );
        }
        net.run(2);
        let mut dropped = 0;
        for id in 1..=3 {
            for command in handoffs(net.emitted(id)) {
                let HandoffCommand::Drop { range, keep_wide } = command else {
                    panic!("node {id}: {command:?}");
                };
                assert_eq!(keep_wide, &Some((Arc::clone(&ring), 3)));
                assert!(ring.unreplicated(*range, 3, NodeId(id)) == vec![*range]);
                dropped += 1;
            }
        }
        assert!(dropped > 0, "some node gave ranges away");
        assert!(handoffs(net.emitted(4)).is_empty(), "node 4 gave nothing");
    }

    #[test]
    fn one_save_is_in_flight_at_a_time_and_the_next_is_the_newest() {
        let mut net = fourth_joining(true);
        let saves = |net: &Net| net.saves[&NodeId(4)].clone();
        assert_eq!(saves(&net).len(), 1, "one save in flight");
        // More states come while it is under way: the join, then a move
        // done.
        let out = net.input(4, |r, now, out| r.handoff_ready(now, out));
        let specs = starts(&out);
        assert!(specs.len() > 1, "several moves: {}", specs.len());
        net.input(4, |r, now, out| r.on_transfer_done(now, specs[0].id, out));
        let states: Vec<Arc<RingState>> = net
            .emitted(4)
            .iter()
            .filter_map(|o| match o {
                RingOutput::State(s) => Some(Arc::clone(s)),
                _ => None,
            })
            .collect();
        assert!(
            states.len() >= 3,
            "node 4's state changed {} times",
            states.len()
        );
        // The save in flight holds a state older than the newest (the
        // ring learned and the join begun in one step come out together,
        // and only the newer of the two is saved).
        let in_flight = saves(&net);
        assert_eq!(in_flight.len(), 1, "still the one save in flight");
        assert!(states.contains(&in_flight[0]));
        assert_ne!(&in_flight[0], states.last().unwrap());

        // It ends: the newest state is saved, and only it.
        let out = net.input(4, |r, now, out| r.saved(now, Ok(()), out));
        let work: Vec<&RingWork> = out.iter().filter_map(Effect::as_store).collect();
        let newest = Arc::clone(states.last().unwrap());
        assert_eq!(&newest, net.role(4).state());
        assert_eq!(work, vec![&RingWork::Save(newest)]);
        // A failed save is logged; with nothing newer, nothing is saved.
        let out = net.input(4, |r, now, out| {
            r.saved(now, Err(crate::error::Error::Shutdown), out)
        });
        assert!(out.iter().all(|e| e.as_store().is_none()));
        // With no save under way, a new state is saved at once.
        let out = net.input(4, |r, now, out| r.on_transfer_done(now, specs[1].id, out));
        let work: Vec<&RingWork> = out.iter().filter_map(Effect::as_store).collect();
        assert_eq!(work, vec![&RingWork::Save(Arc::clone(net.role(4).state()))]);
        assert_eq!(saves(&net).len(), 3);
    }

    #[test]
    fn a_leave_announces_left_once_the_ring_drops_the_node_then_lingers() {
        let mut net = four();
        // Node 4's takers pull only when the test says so.
        for taker in 1..=3 {
            net.hold_transfers.insert(NodeId(taker));
        }
        let out = net.input(4, |r, now, out| r.leave(now, out));
        assert!(net.role(4).state().pending.is_some(), "the leave began");
        assert!(!out
            .iter()
            .any(|e| e.as_emit() == Some(&RingOutput::AnnounceLeft)));
        let deadline = net.now + config().leave_timeout;
        assert_eq!(net.role(4).next_wakeup(), Some(deadline));
        net.run(2);
        assert!(!net.emitted(4).contains(&RingOutput::AnnounceLeft));
        // The takers pull everything: the last move done puts the leave in
        // force, and node 4 announces LEFT at that moment.
        let pulls: usize = (1..=3).map(|t| started(net.emitted(t)).len()).sum();
        assert!(pulls > 0, "node 4's ranges go somewhere");
        for taker in 1..=3 {
            for spec in started(net.emitted(taker)) {
                assert!(!net.emitted(4).contains(&RingOutput::AnnounceLeft));
                net.input(taker, |r, now, out| r.on_transfer_done(now, spec.id, out));
            }
        }
        assert!(!net.role(4).ring().is_member(NodeId(4)));
        let announced_at = net.now;
        assert_eq!(
            net.emitted(4)
                .iter()
                .filter(|o| **o == RingOutput::AnnounceLeft)
                .count(),
            1
        );
        assert!(!net.emitted(4).contains(&RingOutput::Left { moved: true }));
        let linger_end = announced_at + config().leave_linger;
        assert_eq!(net.role(4).next_wakeup(), Some(linger_end));
        // Lingering: not finished a moment before the end, finished at it.
        net.now = linger_end - Duration::from_millis(1);
        let out = net.input(4, |r, now, out| r.tick(now, out));
        assert!(!out
            .iter()
            .any(|e| matches!(e.as_emit(), Some(RingOutput::Left { .. }))));
        net.now = linger_end;
        let out = net.input(4, |r, now, out| r.tick(now, out));
        let lefts: Vec<&RingOutput> = out
            .iter()
            .filter_map(Effect::as_emit)
            .filter(|o| matches!(o, RingOutput::Left { .. }))
            .collect();
        assert_eq!(lefts, vec![&RingOutput::Left { moved: true }]);
        assert_eq!(net.role(4).next_wakeup(), None);
        // Once: later ticks say nothing more; asking again answers again.
        net.run(5);
        assert_eq!(
            net.emitted(4)
                .iter()
                .filter(|o| matches!(o, RingOutput::Left { .. } | RingOutput::AnnounceLeft))
                .count(),
            2
        );
        let out = net.input(4, |r, now, out| r.leave(now, out));
        assert_eq!(out, vec![Effect::Emit(RingOutput::Left { moved: true })]);
    }

    #[test]
    fn a_leaver_that_crashes_mid_leave_goes_on_leaving_and_never_rejoins() {
        for stored in [true, false] {
            let mut net = four();
            for taker in 1..=3 {
                net.hold_transfers.insert(NodeId(taker));
            }
            // The intent is stored before anything moves, once.
            net.input(4, |r, now, out| r.decommission(now, out));
            net.input(4, |r, now, out| r.decommission(now, out));
            assert_eq!(net.intents.get(&NodeId(4)), Some(&1));
            assert!(net.role(4).state().pending.is_some(), "the leave began");
            // Node 4 crashes with its ranges not moved, and starts again
            // from what it stored (the intent, or, to show what it
            // prevents, without it).
            net.restart(4, stored);
            net.hold_transfers.clear();
            for taker in 1..=3 {
                for spec in started(net.emitted(taker)) {
                    net.input(taker, |r, now, out| r.on_transfer_done(now, spec.id, out));
                }
            }
            net.run(60);
            let rejoined = net.role(1).ring().is_member(NodeId(4));
            assert_eq!(
                rejoined, !stored,
                "stored intent {stored}: node 4 in the ring {rejoined}"
            );
            if stored {
                assert!(net.role(4).keeper().is_leaving());
                assert!(net.role(4).state().pending.is_none());
            }
        }
    }

    #[test]
    fn a_leave_whose_takers_are_unreachable_times_out_unmoved() {
        let mut net = four();
        net.cut.insert(NodeId(4));
        let start = net.now;
        net.input(4, |r, now, out| r.leave(now, out));
        assert!(net.role(4).state().pending.is_some(), "the leave began");
        let timeout = start + config().leave_timeout;
        assert_eq!(net.role(4).next_wakeup(), Some(timeout));
        net.run(30);
        net.now = timeout - Duration::from_millis(1);
        net.input(4, |r, now, out| r.tick(now, out));
        assert!(!net.emitted(4).contains(&RingOutput::AnnounceLeft));
        net.now = timeout;
        net.input(4, |r, now, out| r.tick(now, out));
        assert!(net.emitted(4).contains(&RingOutput::AnnounceLeft));
        assert!(net.role(4).ring().is_member(NodeId(4)), "nothing moved");
        assert!(!net
            .emitted(3)
            .iter()
            .any(|o| matches!(o, RingOutput::Left { .. })));
        let linger_end = timeout + config().leave_linger;
        assert_eq!(net.role(4).next_wakeup(), Some(linger_end));
        net.now = linger_end;
        net.input(4, |r, now, out| r.tick(now, out));
        assert!(net.emitted(4).contains(&RingOutput::Left { moved: false }));
        assert!(!net.emitted(4).contains(&RingOutput::Left { moved: true }));
        // The others never heard of the leave.
        for id in 1..=3 {
            assert!(net.role(id).state().pending.is_none());
        }
    }

    #[test]
    fn the_gate_opens_when_a_peer_confirms_a_restored_ring() {
        let mut ring = Ring::empty();
        for id in 1..=3 {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        let mut k = keeper(1, &[2]);
        k.restore(RingState::settled(ring.clone())).unwrap();
        let mut role = RingRole::new(k, config());
        assert!(!role.ring_confirmed(), "a restored ring waits");
        let confirmations = |out: &[RingEffect]| -> Vec<bool> {
            out.iter()
                .filter_map(|e| match e.as_emit() {
                    Some(RingOutput::Confirmed(b)) => Some(*b),
                    _ => None,
                })
                .collect()
        };
        let start = Instant::now();
        let mut out = Vec::new();
        role.start(start, &mut out);
        assert_eq!(confirmations(&out), Vec::<bool>::new());
        // No peer reachable: trusted after the wait...
        let wait = ring_confirm_wait(GOSSIP);
        let mut out = Vec::new();
        role.tick(start + wait, &mut out);
        assert_eq!(confirmations(&out), vec![true]);
        assert!(role.ring_confirmed());
        // ...until a peer is reachable again: then its answer is waited for.
        let mut out = Vec::new();
        role.on_member_event(start + wait, &up(2), &mut out);
        assert_eq!(confirmations(&out), vec![false]);
        assert!(!role.ring_confirmed());
        let digest = RingMsg::Digest {
            epoch: ring.epoch(),
            digest: role.state().digest(),
            pending: 0,
            progress: None,
        };
        let mut out = Vec::new();
        role.step(start + wait, NodeId(2), digest.clone(), &mut out);
        assert_eq!(confirmations(&out), vec![true]);
        assert!(role.ring_confirmed());
        // Told once.
        let mut out = Vec::new();
        role.step(start + wait, NodeId(2), digest, &mut out);
        assert_eq!(confirmations(&out), Vec::<bool>::new());
    }

    #[test]
    fn execute_stores_the_state_under_ring_meta() {
        let engine = Arc::new(crate::storage::MemoryEngine::new());
        let store = ReplicaStore::open(NodeId(1), engine, 16, 1000).unwrap();
        let mut ring = Ring::empty();
        for id in 1..=2 {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        let state = Arc::new(RingState::settled(ring));
        execute(&store, RingWork::Save(Arc::clone(&state))).unwrap();
        let bytes = store.load_meta(RING_META).unwrap().expect("stored");
        let back: RingState = codec::decode(&bytes, codec::DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(back, *state);
    }
}
