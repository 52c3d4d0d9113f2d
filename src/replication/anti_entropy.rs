//! Anti-entropy: the machine that keeps replicas of keys nobody reads
//! converging, and decides when a tombstone may be purged.
//!
//! # A round
//!
//! Every `period` the machine plans a round from the ring in force and its
//! view of who is down. For each vnode range, `L` is the range's
//! preference list under the largest `n` of any bucket; the range's
//! *initiator* is the first node of `L` believed up. A node initiates for
//! the ranges where it is that node, with every other up node of `L`: one
//! *exchange* per (range, peer). One tree per vnode range and peer, not one
//! per node pair over many ranges, because the preference list is constant
//! over a vnode range (so a tree covers exactly the keys both ends hold)
//! and a range is one contiguous scan.
//!
//! An exchange (`min_n` = 1 + the larger of the two ends' positions in `L`:
//! only buckets with `n >= min_n` are replicated on both ends):
//!
//! 1. the initiator scans the range ([`AntiEntropyWork::Scan`]) and sends
//!    its leaves ([`AntiEntropyMsg::Tree`], `8 * leaves` bytes);
//! 2. the peer scans its own ([`AntiEntropyWork::Answer`]) and answers
//!    with the differing leaves and its (key, digest) entries in them
//!    ([`AntiEntropyMsg::Diff`], [`answer_tree`]);
//! 3. the initiator compares entries ([`merkle::repair_lists`]), sends the
//!    objects the peer lacks or holds a different version of and names those
//!    it wants ([`AntiEntropyMsg::Repair`]);
//! 4. the peer merges them and sends back the wanted ones
//!    ([`AntiEntropyMsg::Repaired`]), which the initiator merges.
//!
//! Both sides merge under the bucket's conflict policy, never overwrite,
//! so a repair cannot lose a sibling or a newer write. The exchange ends
//! when the initiator's merge of what came back is stored, and the
//! exchanges of one range run one at a time, so each scans what the one
//! before it merged.
//!
//! A round leaves each of its ranges equal on every replica it could
//! reach: an exchange that left differences (leaves whose entries did not
//! fit in one message, or more keys than `max_batch`) is queued again at
//! once with the same peer, for the next batch; one in which the initiator
//! merged objects from its peer queues the range's other replicas again
//! (once each per round), so that what it learned from a later peer
//! reaches an earlier one in this round, not the next. Batches are
//! bounded to 64 passes per pair and round. A failed exchange with a peer
//! still up is tried once more at the end of the round.
//!
//! # After a partition or an outage
//!
//! A node seen UP again ([`AntiEntropy::on_member_event`]) is not left
//! for the next round: the ranges this node initiates with it are
//! exchanged with it at the front of the running round, or in a round
//! that starts at the next tick (the actor ticks at once). Pairs (range,
//! peer) whose trees differed last time, whose exchange failed, or whose
//! peer came back are exchanged first in the next round, before the
//! ranges that were equal. So after a heal the replicas are equal about
//! one round after the nodes see each other, and a round that repairs
//! takes as long as its rate limits make it.
//!
//! # Rate limits
//!
//! Two token buckets in virtual time ([`TokenBucket`]): keys scanned per
//! second and objects repaired per second. Work is charged after it is
//! done (a scan's size is known only then) and may overdraw a bucket; no
//! new exchange starts while either is overdrawn. Up to `max_exchanges`
//! run at once, and an exchange that ends starts the next at once, so a
//! round takes as long as its exchanges and the rate limits make it, not a
//! tick per exchange: a round that repairs `m` objects on a node takes at
//! least `m / objects_per_second`. A new ring asks for the next round as
//! soon as the running one ends. Trees are rebuilt for every exchange (no
//! cache): one range scan per exchange on each end, a follow-up pass
//! included.
//!
//! # Tombstones
//!
//! A tombstone (an object whose siblings are all tombstones) whose newest
//! timestamp is older than `tombstone_grace` is purged when, in one round:
//! the initiator is `L[0]` and every node of `L` is up; every exchange of
//! the range completed and showed the tombstone's leaf equal on both ends
//! (each replica of its bucket holds the same object); and every member of
//! the ring reported, since the previous round began, that it holds no
//! hint for any node of `L` ([`AntiEntropyMsg::Hints`]). The initiator
//! then purges it and tells the other replicas to
//! ([`AntiEntropyMsg::Purge`]); each deletes it only if its stored
//! object still has the same digest. `docs/rebalancing.md` argues what this
//! guarantees.
//!
//! # What it does not do
//!
//! No I/O: the machine answers with [`AntiEntropyEffect`]s, the crate's
//! one effect shape: messages to send ([`Effect::Send`]) and scans, reads,
//! merges and purges ([`Effect::Store`] of [`AntiEntropyWork`]) that its
//! runner (the actor, the simulator) carries out and reports back. It
//! emits no events ([`AntiEntropyEvent`] has no value). It keeps no trees
//! between rounds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::merkle::{self, BuiltTree, KeyDigest, MerkleTree};
use crate::effect::Effect;
use crate::id::NodeId;
use crate::replication::AntiEntropyConfig;
use crate::replication::AntiEntropyMsg;
use crate::ring::{Ring, TokenRange};
use crate::version::Object;

/// An object sent for repair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairObject {
    /// The bucket.
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The sender's stored object.
    pub object: Object,
}

/// A tombstone a scan found old enough to purge, if every replica agrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Its bucket, key and digest.
    pub entry: KeyDigest,
    /// Its leaf in the scanned tree.
    pub leaf: usize,
    /// Its bucket's `n`: the replicas that must hold it.
    pub n: usize,
}

/// What an initiator's scan of a range found.
#[derive(Clone, Debug)]
pub struct LocalScan {
    /// The tree, with each leaf's entries.
    pub tree: BuiltTree,
    /// Tombstones older than the grace cut-off.
    pub tombstones: Vec<Tombstone>,
}

/// Counters of a node's anti-entropy, for status views.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyStats {
    /// Rounds finished.
    pub rounds: u64,
    /// Exchanges (one range with one peer) completed.
    pub ranges_compared: u64,
    /// Exchanges abandoned (timeout, peer down).
    pub exchanges_failed: u64,
    /// Leaves found differing.
    pub leaves_differing: u64,
    /// Objects sent to peers or merged from them.
    pub objects_repaired: u64,
    /// Tombstones purged from this node's store.
    pub tombstones_purged: u64,
    /// Keys scanned to build trees.
    pub keys_scanned: u64,
    /// How long the last round took, in milliseconds.
    pub last_round_ms: u64,
    /// Wall-clock time the last round finished, in ms since the epoch
    /// (0: none yet).
    pub last_round_at_ms: u64,
}

/// What the machine asks its driver to do: the crate's one [`Effect`]
/// shape, with [`AntiEntropyMsg`]s to send, [`AntiEntropyWork`] for the
/// store (its results come back through [`AntiEntropy::scanned`],
/// [`AntiEntropy::charge_keys`] and the other report methods), and no
/// events ([`AntiEntropyEvent`] has no value).
pub type AntiEntropyEffect = Effect<AntiEntropyMsg, AntiEntropyWork, AntiEntropyEvent>;

/// The machine's events: it has none (its results are its counters,
/// [`AntiEntropy::stats`]), so [`Effect::Emit`] never comes out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AntiEntropyEvent {}

/// Storage work the machine asks of its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum AntiEntropyWork {
    /// Scan `range` (buckets with `n >= min_n`), find tombstones whose
    /// newest timestamp is at most `tombstones_before_ms`, and report with
    /// [`AntiEntropy::scanned`] (or [`AntiEntropy::failed`]).
    Scan {
        /// The exchange.
        session: u64,
        /// The range.
        range: TokenRange,
        /// The bucket filter.
        min_n: u32,
        /// Wall-clock cut-off for purgeable tombstones.
        tombstones_before_ms: u64,
    },
    /// A peer's tree: scan `range` the same way, send [`answer_tree`]'s
    /// message to `to`, and charge the keys with [`AntiEntropy::charge_keys`].
    Answer {
        /// The peer.
        to: NodeId,
        /// Its session.
        session: u64,
        /// The range.
        range: TokenRange,
        /// The bucket filter.
        min_n: u32,
        /// Its leaves.
        leaves: Vec<u64>,
    },
    /// Read the objects of `push` and send them to `to` with `want` in a
    /// [`AntiEntropyMsg::Repair`].
    Push {
        /// The peer.
        to: NodeId,
        /// The exchange.
        session: u64,
        /// Keys to send.
        push: Vec<KeyDigest>,
        /// Keys to ask for.
        want: Vec<KeyDigest>,
    },
    /// Merge `objects`; then, when `reply` is set, read `want` and send
    /// them back in a [`AntiEntropyMsg::Repaired`]. Charge the objects
    /// with [`AntiEntropy::charge_objects`]. When `ends` is set, the merge
    /// is the last step of this node's own exchange: report it with
    /// [`AntiEntropy::merged`] (or [`AntiEntropy::failed`]).
    Repair {
        /// `(peer, session)` to answer.
        reply: Option<(NodeId, u64)>,
        /// This node's exchange that the merge ends.
        ends: Option<u64>,
        /// Objects to merge.
        objects: Vec<RepairObject>,
        /// Keys to send back.
        want: Vec<KeyDigest>,
    },
    /// Delete each tombstone whose stored object still has its digest.
    Purge {
        /// The tombstones.
        entries: Vec<KeyDigest>,
    },
    /// Read the owners this node holds hints for, report them with
    /// [`AntiEntropy::hint_report`] (from this node) and send them in a
    /// [`AntiEntropyMsg::Hints`] to every node in `to`.
    ReportHints {
        /// The ring's other members.
        to: Vec<NodeId>,
    },
}

/// A token bucket in virtual time: `rate` tokens a second, at most `burst`
/// saved up. Charges may overdraw it; it is ready again once refilled to
/// zero.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    level: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` a second.
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst),
            level: f64::from(burst),
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.level = (self.level + dt * self.rate).min(self.burst);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// Takes `n` tokens at `now`, overdrawing if need be.
    pub fn charge(&mut self, now: Instant, n: u64) {
        self.refill(now);
        self.level -= n as f64;
    }

    /// Whether the bucket is not overdrawn at `now`.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= 0.0
    }

    /// When it will next be ready (`now` if it is).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.level >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.level / self.rate)
        }
    }
}

/// The responder's answer to a peer's tree: the differing leaves and the
/// entries of as many of them as fit in `max_batch` entries (at least one
/// leaf's, so an exchange always makes progress).
pub fn answer_tree(
    session: u64,
    local: &BuiltTree,
    their_leaves: Vec<u64>,
    max_batch: usize,
) -> AntiEntropyMsg {
    let theirs = MerkleTree::from_leaves(local.tree.range(), their_leaves);
    let differing: Vec<usize> = match &theirs {
        Some(t) => local.tree.diff(t),
        None => (0..local.tree.leaves().len()).collect(),
    };
    let mut listed = Vec::new();
    let mut entries = Vec::new();
    for &leaf in &differing {
        let leaf_entries = local.entries.get(leaf).map_or(&[][..], |e| &e[..]);
        if !listed.is_empty() && entries.len() + leaf_entries.len() > max_batch {
            break;
        }
        listed.push(leaf as u32);
        entries.extend_from_slice(leaf_entries);
    }
    AntiEntropyMsg::Diff {
        session,
        differing: differing.into_iter().map(|l| l as u32).collect(),
        listed,
        entries,
    }
}

enum ExchangeState {
    Scanning,
    AwaitDiff(LocalScan),
    AwaitRepaired,
    /// Merging what the peer sent back: the exchange ends when that is
    /// stored, so that an exchange of the same range with another peer
    /// that starts after it scans what it brought.
    Merging,
}

struct Exchange {
    range: usize,
    peer: NodeId,
    min_n: u32,
    deadline: Instant,
    state: ExchangeState,
    /// It repaired one batch and left differences (leaves not listed, or
    /// more keys than a batch): the range is exchanged again with the
    /// same peer at once.
    more: bool,
    /// This node merged objects from the peer: the range's other replicas
    /// not still waiting for their exchange are met again, so that they
    /// get them in this round rather than the next.
    learned: bool,
}

/// Follow-up exchanges of one range with one peer in one round (more
/// batches, or carrying what was learned from another replica): with
/// `max_batch` keys a pass, 64 passes repair 65,536 keys of one range in
/// one round; the rest waits for the next round.
const MAX_PASSES: u32 = 64;

struct Candidate {
    digest: u64,
    n: usize,
    confirmed: BTreeSet<NodeId>,
    poisoned: bool,
}

struct RangeRound {
    range: TokenRange,
    /// The preference list under the largest `n`.
    replicas: Vec<NodeId>,
    /// This node's position in `replicas`.
    me_at: usize,
    /// Peers with an exchange of this range waiting in the queue.
    queued: BTreeSet<NodeId>,
    /// Exchanges queued again for each peer this round ([`MAX_PASSES`]).
    passes: BTreeMap<NodeId, u32>,
    /// Peers whose failed exchange was queued again this round (once).
    retried: BTreeSet<NodeId>,
    /// Peers met again this round to carry what this node learned from
    /// another replica (once: under steady writes an exchange often finds
    /// a write still on its way, and that must not chain more passes).
    carried: BTreeSet<NodeId>,
    /// Whether tombstones of this range may be purged this round, so far.
    gc_ok: bool,
    pending: usize,
    candidates: BTreeMap<(Vec<u8>, Vec<u8>), Candidate>,
}

struct Round {
    started: Instant,
    queue: VecDeque<(usize, NodeId, u32)>,
    ranges: Vec<RangeRound>,
    tombstones_before_ms: u64,
}

/// The anti-entropy machine of one node. See the module documentation.
pub struct AntiEntropy {
    node: NodeId,
    config: AntiEntropyConfig,
    ring: Arc<Ring>,
    /// A ring change is in progress (its ranges are moving): no tombstone
    /// is purged, since a node handing a range over, or receiving it, may
    /// hold an older version that this ring's replicas do not see.
    changing: bool,
    down: BTreeSet<NodeId>,
    n_max: usize,
    keys: TokenBucket,
    objects: TokenBucket,
    next_round: Option<Instant>,
    round: Option<Round>,
    /// When the last finished round started.
    last_started: Option<Instant>,
    next_session: u64,
    exchanges: BTreeMap<u64, Exchange>,
    hint_reports: BTreeMap<NodeId, (Instant, Vec<NodeId>)>,
    /// `(range end, peer)` pairs whose last exchange found their trees
    /// differing, failed, or whose peer came back up: the next round
    /// exchanges them first.
    dirty: BTreeSet<(u64, NodeId)>,
    /// Operators' repairs not started yet, in order: each is one round
    /// ([`AntiEntropy::repair`]).
    repairs: VecDeque<RepairScope>,
    stats: AntiEntropyStats,
}

/// What an operator's repair round covers ([`AntiEntropy::repair`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairScope {
    /// Only ranges that overlap this one (`None`: every range).
    pub range: Option<TokenRange>,
    /// Only exchanges with this peer; when it is the node itself, every
    /// exchange of every range it replicates, also those another replica
    /// would start (`None`: the exchanges a periodic round makes).
    pub peer: Option<NodeId>,
}

impl std::fmt::Debug for AntiEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntiEntropy")
            .field("node", &self.node)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl AntiEntropy {
    /// A machine for `node`; `n_max` is the largest `n` of any bucket (the
    /// defaults' at first, see [`AntiEntropy::set_n_max`]). The first round
    /// starts one period after `now`.
    pub fn new(node: NodeId, config: AntiEntropyConfig, n_max: usize, now: Instant) -> Self {
        // One second of burst: a small range is scanned at once.
        let keys = TokenBucket::new(config.keys_per_second, config.keys_per_second);
        let objects = TokenBucket::new(config.objects_per_second, config.objects_per_second);
        AntiEntropy {
            node,
            next_round: Some(now + config.period),
            config,
            ring: Arc::new(Ring::empty()),
            changing: false,
            down: BTreeSet::new(),
            n_max: n_max.max(1),
            keys,
            objects,
            round: None,
            last_started: None,
            next_session: 1,
            exchanges: BTreeMap::new(),
            hint_reports: BTreeMap::new(),
            dirty: BTreeSet::new(),
            repairs: VecDeque::new(),
            stats: AntiEntropyStats::default(),
        }
    }

    /// Installs the ring in force. A round planned under an older ring runs
    /// on, and the next one, planned under this ring, starts as soon as it
    /// ends rather than a period later: after a ring change the new
    /// replicas of a range are met at once.
    pub fn set_ring(&mut self, ring: Arc<Ring>) {
        let changed = self.ring.digest() != ring.digest();
        self.ring = ring;
        if changed && !self.ring.members().is_empty() {
            self.round_now();
        }
    }

    /// Says whether a ring change is in progress: while one is, exchanges
    /// go on (merging is always safe) but no tombstone is purged.
    pub fn set_changing(&mut self, changing: bool) {
        self.changing = changing;
        if changing {
            if let Some(round) = &mut self.round {
                for r in &mut round.ranges {
                    r.gc_ok = false;
                }
            }
        }
    }

    /// Sets the largest `n` of any bucket.
    pub fn set_n_max(&mut self, n_max: usize) {
        self.n_max = n_max.max(1);
    }

    /// Takes in a membership event: SUSPECT, DOWN and LEFT nodes are not
    /// exchanged with (their exchanges in flight fail at once, so no
    /// tombstone of their ranges is purged this round); UP ones are again,
    /// at once: a node back up is met for every range this node initiates
    /// with it, ahead of the rest of the running round (or in a round that
    /// starts at the next tick), since after a partition or an outage its
    /// ranges are the ones likely to differ.
    pub fn on_member_event(&mut self, event: &crate::membership::MemberEvent) {
        use crate::membership::MemberEvent;
        match *event {
            MemberEvent::Up { node, .. } => {
                if self.down.remove(&node) && node != self.node {
                    self.back_up(node);
                }
            }
            MemberEvent::Suspect { node, .. }
            | MemberEvent::Down { node, .. }
            | MemberEvent::Left { node } => {
                if node != self.node {
                    self.down.insert(node);
                    let gone: Vec<u64> = self
                        .exchanges
                        .iter()
                        .filter(|(_, e)| e.peer == node)
                        .map(|(&s, _)| s)
                        .collect();
                    for session in gone {
                        self.fail(session);
                    }
                }
            }
            MemberEvent::Refuted { .. } | MemberEvent::LocalPause { .. } => {}
        }
    }

    /// `node` was down and is up again: every range it shares with this
    /// node is marked to be exchanged first, and the ranges this node now
    /// initiates with it are exchanged with it at once.
    fn back_up(&mut self, node: NodeId) {
        let mut mine = Vec::new();
        for (range, _) in self.ring.ranges() {
            let replicas = self.ring.preference_list(range.through, self.n_max);
            if !replicas.contains(&node) {
                continue;
            }
            self.dirty.insert((range.through.0, node));
            if replicas.iter().find(|&&n| self.is_up(n)) == Some(&self.node) {
                mine.push((range, replicas));
            }
        }
        let Some(round) = self.round.as_mut() else {
            // No round running: one starts at the next tick, these first.
            self.round_now();
            return;
        };
        let index: BTreeMap<u64, usize> = round
            .ranges
            .iter()
            .enumerate()
            .map(|(i, r)| (r.range.through.0, i))
            .collect();
        for (range, replicas) in mine {
            let i = match index.get(&range.through.0) {
                Some(&i) => i,
                None => {
                    // Planned when another node initiated it.
                    let me_at = replicas.iter().position(|&n| n == self.node).unwrap_or(0);
                    round.ranges.push(RangeRound {
                        range,
                        replicas,
                        me_at,
                        queued: BTreeSet::new(),
                        passes: BTreeMap::new(),
                        retried: BTreeSet::new(),
                        carried: BTreeSet::new(),
                        gc_ok: false,
                        pending: 0,
                        candidates: BTreeMap::new(),
                    });
                    round.ranges.len() - 1
                }
            };
            Self::requeue(round, i, node, true, false);
        }
    }

    /// Queues an exchange of range `i` with `peer` in `round` (at the
    /// front, or at the back), unless one is already waiting; counts it
    /// against [`MAX_PASSES`] when `pass`. Returns whether it queued one.
    fn requeue(round: &mut Round, i: usize, peer: NodeId, front: bool, pass: bool) -> bool {
        let Some(r) = round.ranges.get_mut(i) else {
            return false;
        };
        let Some(j) = r.replicas.iter().position(|&n| n == peer) else {
            return false;
        };
        if r.queued.contains(&peer) {
            return false;
        }
        if pass {
            let passes = r.passes.entry(peer).or_insert(0);
            if *passes >= MAX_PASSES {
                return false;
            }
            *passes += 1;
        }
        r.queued.insert(peer);
        r.pending += 1;
        let min_n = (r.me_at.max(j) + 1) as u32;
        if front {
            round.queue.push_front((i, peer, min_n));
        } else {
            round.queue.push_back((i, peer, min_n));
        }
        true
    }

    /// The counters.
    pub fn stats(&self) -> &AntiEntropyStats {
        &self.stats
    }

    /// Whether a round is running.
    pub fn in_round(&self) -> bool {
        self.round.is_some()
    }

    /// Asks for a round as soon as the one running (if any) ends.
    pub fn round_now(&mut self) {
        self.next_round = None;
    }

    /// An operator's repair: a round narrowed to `scope`, once the round
    /// running (if any) and the repairs asked before have run; the rounds
    /// run back to back. Returns the finished-round count
    /// ([`AntiEntropyStats::rounds`]) at which that round is over.
    /// `None` when anti-entropy is off (`enabled = false`): no round
    /// would ever run.
    pub fn repair(&mut self, scope: RepairScope) -> Option<u64> {
        if !self.config.enabled {
            return None;
        }
        self.repairs.push_back(scope);
        self.next_round = None;
        Some(self.stats.rounds + u64::from(self.round.is_some()) + self.repairs.len() as u64)
    }

    fn is_up(&self, node: NodeId) -> bool {
        node == self.node || !self.down.contains(&node)
    }

    /// Advances time: starts a round when one is due, abandons exchanges
    /// past their deadline, and starts exchanges the rate limits allow.
    /// `wall_ms` is the wall clock, for the tombstone grace period.
    pub fn tick(&mut self, now: Instant, wall_ms: u64, out: &mut Vec<AntiEntropyEffect>) {
        if !self.config.enabled {
            return;
        }
        if self.round.is_none() && self.next_round.is_none_or(|t| now >= t) {
            self.plan_round(now, wall_ms, out);
        }
        let late: Vec<u64> = self
            .exchanges
            .iter()
            .filter(|(_, e)| now >= e.deadline)
            .map(|(&s, _)| s)
            .collect();
        for session in late {
            self.fail(session);
        }
        self.start_exchanges(now, out);
        self.finish_round_if_done(now, wall_ms, out);
    }

    fn plan_round(&mut self, now: Instant, wall_ms: u64, out: &mut Vec<AntiEntropyEffect>) {
        let grace_ms = self.config.tombstone_grace.as_millis() as u64;
        let mut round = Round {
            started: now,
            queue: VecDeque::new(),
            ranges: Vec::new(),
            tombstones_before_ms: wall_ms.saturating_sub(grace_ms),
        };
        // Pairs whose trees differed (or that were not compared) go first,
        // so that after a heal the repairs are not queued behind the
        // scans of ranges that are equal.
        let mut later = VecDeque::new();
        let mut ends = BTreeSet::new();
        let scope = self.repairs.pop_front();
        let every = scope.is_some_and(|s| s.peer == Some(self.node));
        let only_peer = scope.and_then(|s| s.peer).filter(|&p| p != self.node);
        for (range, _) in self.ring.ranges() {
            ends.insert(range.through.0);
            if scope
                .and_then(|s| s.range)
                .is_some_and(|wanted| !wanted.overlaps(&range))
            {
                continue;
            }
            let replicas = self.ring.preference_list(range.through, self.n_max);
            if replicas.is_empty() {
                continue;
            }
            let Some(&initiator) = replicas.iter().find(|&&n| self.is_up(n)) else {
                continue;
            };
            if initiator != self.node && !(every && replicas.contains(&self.node)) {
                continue;
            }
            if only_peer.is_some_and(|p| !replicas.contains(&p)) {
                continue;
            }
            let me_at = replicas.iter().position(|&n| n == self.node).unwrap_or(0);
            let index = round.ranges.len();
            let mut pending = 0;
            let mut queued = BTreeSet::new();
            for (j, &peer) in replicas.iter().enumerate() {
                if peer == self.node || !self.is_up(peer) || only_peer.is_some_and(|p| p != peer) {
                    continue;
                }
                let min_n = (me_at.max(j) + 1) as u32;
                if self.dirty.contains(&(range.through.0, peer)) {
                    round.queue.push_back((index, peer, min_n));
                } else {
                    later.push_back((index, peer, min_n));
                }
                queued.insert(peer);
                pending += 1;
            }
            let all_up = replicas.iter().all(|&n| self.is_up(n));
            round.ranges.push(RangeRound {
                range,
                gc_ok: me_at == 0 && all_up && !self.changing,
                replicas,
                me_at,
                queued,
                passes: BTreeMap::new(),
                retried: BTreeSet::new(),
                carried: BTreeSet::new(),
                pending,
                candidates: BTreeMap::new(),
            });
        }
        round.queue.extend(later);
        self.dirty.retain(|(end, _)| ends.contains(end));
        self.round = Some(round);
        self.next_round = match self.repairs.is_empty() {
            true => Some(now + self.config.period),
            // The next repair starts as soon as this round ends.
            false => None,
        };
        let to: Vec<NodeId> = self
            .ring
            .members()
            .into_iter()
            .filter(|&n| n != self.node)
            .collect();
        out.push(Effect::Store(AntiEntropyWork::ReportHints { to }));
    }

    fn start_exchanges(&mut self, now: Instant, out: &mut Vec<AntiEntropyEffect>) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        while self.exchanges.len() < self.config.max_exchanges
            && !round.queue.is_empty()
            && self.keys.ready(now)
            && self.objects.ready(now)
        {
            // One exchange of a range at a time, so that each one scans
            // what the one before it merged (and what it learned is
            // carried on by the next, not raced by it).
            let busy: BTreeSet<usize> = self.exchanges.values().map(|e| e.range).collect();
            let Some(at) = round
                .queue
                .iter()
                .position(|(r, p, _)| !busy.contains(r) || self.down.contains(p))
            else {
                break;
            };
            let Some((range, peer, min_n)) = round.queue.remove(at) else {
                break;
            };
            round.ranges[range].queued.remove(&peer);
            if self.down.contains(&peer) {
                let r = &mut round.ranges[range];
                r.pending -= 1;
                r.gc_ok = false;
                continue;
            }
            let session = self.next_session;
            self.next_session += 1;
            self.exchanges.insert(
                session,
                Exchange {
                    range,
                    peer,
                    min_n,
                    deadline: now + self.config.exchange_timeout,
                    state: ExchangeState::Scanning,
                    more: false,
                    learned: false,
                },
            );
            out.push(Effect::Store(AntiEntropyWork::Scan {
                session,
                range: round.ranges[range].range,
                min_n,
                tombstones_before_ms: round.tombstones_before_ms,
            }));
        }
    }

    /// When the next tick has something to do (a round due, a deadline, a
    /// rate limit refilled); the actor may tick more often.
    pub fn next_wakeup(&mut self, now: Instant) -> Instant {
        let mut t = self.next_round.unwrap_or(now);
        if self.round.is_some() {
            t = t.min(self.keys.ready_at(now).max(self.objects.ready_at(now)));
        }
        for e in self.exchanges.values() {
            t = t.min(e.deadline);
        }
        t
    }

    /// The initiator's scan for `session` is done.
    pub fn scanned(
        &mut self,
        now: Instant,
        session: u64,
        scan: LocalScan,
        out: &mut Vec<AntiEntropyEffect>,
    ) {
        self.charge_keys(now, scan.tree.keys);
        let Some(e) = self.exchanges.get_mut(&session) else {
            return;
        };
        if !matches!(e.state, ExchangeState::Scanning) {
            return;
        }
        let Some(range) = self.round.as_ref().map(|r| r.ranges[e.range].range) else {
            return;
        };
        out.push(Effect::Send {
            to: e.peer,
            msg: AntiEntropyMsg::Tree {
                session,
                range,
                min_n: e.min_n,
                leaves: scan.tree.tree.leaves().to_vec(),
            },
        });
        e.state = ExchangeState::AwaitDiff(scan);
    }

    /// Charges keys scanned (by any scan, an answer's too).
    pub fn charge_keys(&mut self, now: Instant, keys: u64) {
        self.keys.charge(now, keys);
        self.stats.keys_scanned += keys;
    }

    /// Charges objects sent or merged for repair.
    pub fn charge_objects(&mut self, now: Instant, objects: u64) {
        self.objects.charge(now, objects);
        self.stats.objects_repaired += objects;
    }

    /// Counts tombstones this node purged.
    pub fn purged(&mut self, count: u64) {
        self.stats.tombstones_purged += count;
    }

    /// Records the hint owners `from` reported (this node's own too).
    pub fn hint_report(&mut self, now: Instant, from: NodeId, owners: Vec<NodeId>) {
        self.hint_reports.insert(from, (now, owners));
    }

    /// Abandons exchange `session` (its scan or a send failed, it timed
    /// out, or its peer went down): its range is not purged this round.
    pub fn failed(&mut self, session: u64) {
        self.fail(session);
    }

    fn fail(&mut self, session: u64) {
        if let Some(e) = self.exchanges.remove(&session) {
            self.stats.exchanges_failed += 1;
            let up = self.is_up(e.peer);
            let Some(round) = self.round.as_mut() else {
                return;
            };
            let Some(r) = round.ranges.get_mut(e.range) else {
                return;
            };
            r.pending = r.pending.saturating_sub(1);
            r.gc_ok = false;
            self.dirty.insert((r.range.through.0, e.peer));
            // A peer still up is tried once more at the end of the round
            // (a lost message, a failed scan); a peer that went down is
            // met again when it is back up.
            if up && r.retried.insert(e.peer) {
                Self::requeue(round, e.range, e.peer, false, false);
            }
        }
    }

    /// A message from a peer.
    pub fn step(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: AntiEntropyMsg,
        out: &mut Vec<AntiEntropyEffect>,
    ) {
        match msg {
            AntiEntropyMsg::Tree {
                session,
                range,
                min_n,
                leaves,
            } => out.push(Effect::Store(AntiEntropyWork::Answer {
                to: from,
                session,
                range,
                min_n,
                leaves,
            })),
            AntiEntropyMsg::Diff {
                session,
                differing,
                listed,
                entries,
            } => self.on_diff(now, from, session, differing, listed, entries, out),
            AntiEntropyMsg::Repair {
                session,
                objects,
                want,
            } => out.push(Effect::Store(AntiEntropyWork::Repair {
                reply: Some((from, session)),
                ends: None,
                objects,
                want,
            })),
            AntiEntropyMsg::Repaired { session, objects } => {
                let ours = self.exchanges.get(&session).is_some_and(|e| {
                    e.peer == from && matches!(e.state, ExchangeState::AwaitRepaired)
                });
                if ours {
                    if objects.is_empty() {
                        self.complete(session);
                        self.start_exchanges(now, out);
                    } else if let Some(e) = self.exchanges.get_mut(&session) {
                        e.state = ExchangeState::Merging;
                        e.learned = true;
                        out.push(Effect::Store(AntiEntropyWork::Repair {
                            reply: None,
                            ends: Some(session),
                            objects,
                            want: Vec::new(),
                        }));
                    }
                }
            }
            // Only from a node that could be a range's first replica: a
            // ring member. Each entry is compare-and-delete anyway.
            AntiEntropyMsg::Purge { entries }
                if self.ring.is_member(from) && !entries.is_empty() =>
            {
                out.push(Effect::Store(AntiEntropyWork::Purge { entries }));
            }
            AntiEntropyMsg::Hints { owners } => self.hint_report(now, from, owners),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_diff(
        &mut self,
        now: Instant,
        from: NodeId,
        session: u64,
        differing: Vec<u32>,
        listed: Vec<u32>,
        theirs: Vec<KeyDigest>,
        out: &mut Vec<AntiEntropyEffect>,
    ) {
        let Some(e) = self.exchanges.get_mut(&session) else {
            return;
        };
        if e.peer != from {
            return;
        }
        let ExchangeState::AwaitDiff(scan) =
            std::mem::replace(&mut e.state, ExchangeState::AwaitRepaired)
        else {
            return;
        };
        let (peer, range_index) = (e.peer, e.range);
        self.stats.leaves_differing += differing.len() as u64;
        if let Some(r) = self.round.as_ref().and_then(|r| r.ranges.get(range_index)) {
            let pair = (r.range.through.0, peer);
            if differing.is_empty() {
                self.dirty.remove(&pair);
            } else {
                self.dirty.insert(pair);
            }
        }
        // Tombstones in equal leaves are confirmed held by this peer.
        let differing_set: BTreeSet<usize> = differing.iter().map(|&l| l as usize).collect();
        if let Some(r) = self
            .round
            .as_mut()
            .and_then(|r| r.ranges.get_mut(range_index))
        {
            for t in &scan.tombstones {
                let c = r
                    .candidates
                    .entry((t.entry.bucket.clone(), t.entry.key.clone()))
                    .or_insert_with(|| Candidate {
                        digest: t.entry.digest,
                        n: t.n,
                        confirmed: BTreeSet::new(),
                        poisoned: false,
                    });
                if c.digest != t.entry.digest {
                    c.poisoned = true;
                } else if !differing_set.contains(&t.leaf) {
                    c.confirmed.insert(peer);
                } else {
                    c.poisoned = true;
                }
            }
            if listed.len() < differing.len() {
                // Not all differences repaired this round.
                r.gc_ok = false;
            }
        }
        let mut ours = Vec::new();
        for &leaf in &listed {
            if let Some(entries) = scan.tree.entries.get(leaf as usize) {
                ours.extend_from_slice(entries);
            }
        }
        let (mut push, mut want) = merkle::repair_lists(&ours, &theirs);
        let cut = push.len() > self.config.max_batch
            || want.len() > self.config.max_batch
            || listed.len() < differing.len();
        push.truncate(self.config.max_batch);
        want.truncate(self.config.max_batch);
        if let Some(e) = self.exchanges.get_mut(&session) {
            // Another pass only when this one repairs something, so that a
            // difference it cannot repair does not loop.
            e.more = cut && !(push.is_empty() && want.is_empty());
        }
        if push.is_empty() && want.is_empty() {
            self.complete(session);
            self.start_exchanges(now, out);
            return;
        }
        out.push(Effect::Store(AntiEntropyWork::Push {
            to: peer,
            session,
            push,
            want,
        }));
    }

    /// This node's merge that ends exchange `session` is stored.
    pub fn merged(&mut self, now: Instant, session: u64, out: &mut Vec<AntiEntropyEffect>) {
        let merging = self
            .exchanges
            .get(&session)
            .is_some_and(|e| matches!(e.state, ExchangeState::Merging));
        if merging {
            self.complete(session);
            self.start_exchanges(now, out);
        }
    }

    /// Ends exchange `session`. If it left differences, the range is
    /// exchanged with the same peer again at once (the next batch); if
    /// this node learned objects from the peer, with every other replica
    /// of the range not still waiting for its exchange, once per round
    /// (so that the range is equal on all its replicas at the end of this
    /// round, not of the next one).
    fn complete(&mut self, session: u64) {
        let Some(e) = self.exchanges.remove(&session) else {
            return;
        };
        self.stats.ranges_compared += 1;
        let Some(round) = self.round.as_mut() else {
            return;
        };
        let Some(r) = round.ranges.get_mut(e.range) else {
            return;
        };
        r.pending = r.pending.saturating_sub(1);
        if e.learned {
            let others: Vec<NodeId> = r
                .replicas
                .iter()
                .copied()
                .filter(|&n| n != self.node && n != e.peer && !self.down.contains(&n))
                .collect();
            for other in others {
                let first = round
                    .ranges
                    .get_mut(e.range)
                    .is_some_and(|r| !r.carried.contains(&other));
                if first && Self::requeue(round, e.range, other, true, false) {
                    if let Some(r) = round.ranges.get_mut(e.range) {
                        r.carried.insert(other);
                    }
                }
            }
        }
        if e.more {
            Self::requeue(round, e.range, e.peer, true, true);
        }
    }

    /// Whether every ring member's latest hint report is recent (since the
    /// previous round began) and names no node of `replicas`.
    fn hints_clear(&self, replicas: &[NodeId], since: Option<Instant>) -> bool {
        let Some(since) = since else {
            return false;
        };
        self.ring
            .members()
            .iter()
            .all(|m| match self.hint_reports.get(m) {
                Some((at, owners)) => *at >= since && !owners.iter().any(|o| replicas.contains(o)),
                None => false,
            })
    }

    fn finish_round_if_done(
        &mut self,
        now: Instant,
        wall_ms: u64,
        out: &mut Vec<AntiEntropyEffect>,
    ) {
        let done = self
            .round
            .as_ref()
            .is_some_and(|r| r.queue.is_empty() && self.exchanges.is_empty());
        if !done {
            return;
        }
        let Some(round) = self.round.take() else {
            return;
        };
        // Reports older than the previous round's start are stale.
        let since = self.last_started.or(Some(round.started));
        for r in &round.ranges {
            if !r.gc_ok || r.pending != 0 || !self.hints_clear(&r.replicas, since) {
                continue;
            }
            let mut local = Vec::new();
            let mut per_peer: BTreeMap<NodeId, Vec<KeyDigest>> = BTreeMap::new();
            for ((bucket, key), c) in &r.candidates {
                let holders = &r.replicas[..c.n.min(r.replicas.len())];
                let confirmed = holders
                    .iter()
                    .all(|h| *h == self.node || c.confirmed.contains(h));
                if c.poisoned || !confirmed {
                    continue;
                }
                let entry = KeyDigest {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    digest: c.digest,
                };
                for &h in holders.iter().filter(|&&h| h != self.node) {
                    per_peer.entry(h).or_default().push(entry.clone());
                }
                local.push(entry);
            }
            if local.is_empty() {
                continue;
            }
            for (to, entries) in per_peer {
                for chunk in entries.chunks(self.config.max_batch) {
                    out.push(Effect::Send {
                        to,
                        msg: AntiEntropyMsg::Purge {
                            entries: chunk.to_vec(),
                        },
                    });
                }
            }
            out.push(Effect::Store(AntiEntropyWork::Purge { entries: local }));
        }
        self.last_started = Some(round.started);
        self.stats.rounds += 1;
        self.stats.last_round_ms = now.saturating_duration_since(round.started).as_millis() as u64;
        self.stats.last_round_at_ms = wall_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::replica::ReplicaStore;
    use crate::ring::claim_join;
    use crate::storage::MemoryEngine;
    use crate::version::{CausalContext, ConflictPolicy, Payload, Timestamp};

    /// Hand-routed machines over real stores (memory engines), in virtual
    /// time: every action is carried out at once, messages are delivered
    /// in order, and `cut` nodes neither send nor receive.
    struct Sim {
        now: Instant,
        wall_ms: u64,
        nodes: BTreeMap<NodeId, (AntiEntropy, ReplicaStore)>,
        queue: VecDeque<(NodeId, NodeId, AntiEntropyMsg)>,
        cut: BTreeSet<NodeId>,
    }

    fn config() -> AntiEntropyConfig {
        AntiEntropyConfig {
            period: Duration::from_secs(1),
            leaves: 8,
            tombstone_grace: Duration::from_secs(10),
            ..AntiEntropyConfig::default()
        }
    }

    impl Sim {
        fn new(n: u64, config: AntiEntropyConfig) -> Sim {
            let mut ring = Ring::empty();
            for id in 1..=n {
                ring = claim_join(&ring, NodeId(id), 8).unwrap();
            }
            let ring = Arc::new(ring);
            let now = Instant::now();
            let mut nodes = BTreeMap::new();
            for id in 1..=n {
                let mut m = AntiEntropy::new(NodeId(id), config.clone(), 3, now);
                m.set_ring(Arc::clone(&ring));
                let store =
                    ReplicaStore::open(NodeId(id), Arc::new(MemoryEngine::new()), 10, 100).unwrap();
                nodes.insert(NodeId(id), (m, store));
            }
            Sim {
                now,
                wall_ms: 1_000_000,
                nodes,
                queue: VecDeque::new(),
                cut: BTreeSet::new(),
            }
        }

        fn carry(&mut self, at: NodeId, effects: Vec<AntiEntropyEffect>) {
            for effect in effects {
                let mut out = Vec::new();
                let (m, store) = self.nodes.get_mut(&at).unwrap();
                let n3 = |_: &[u8]| 3usize;
                let work = match effect {
                    Effect::Send { to, msg } => {
                        self.queue.push_back((at, to, msg));
                        continue;
                    }
                    Effect::Store(work) => work,
                    Effect::Emit(event) => match event {},
                };
                match work {
                    AntiEntropyWork::Scan {
                        session,
                        range,
                        min_n,
                        tombstones_before_ms,
                    } => {
                        let scan = store
                            .anti_entropy_scan(
                                range,
                                8,
                                min_n as usize,
                                &n3,
                                Some(tombstones_before_ms),
                            )
                            .unwrap();
                        m.scanned(self.now, session, scan, &mut out);
                    }
                    AntiEntropyWork::Answer {
                        to,
                        session,
                        range,
                        min_n,
                        leaves,
                    } => {
                        let scan = store
                            .anti_entropy_scan(range, leaves.len(), min_n as usize, &n3, None)
                            .unwrap();
                        m.charge_keys(self.now, scan.tree.keys);
                        let msg = answer_tree(session, &scan.tree, leaves, 1024);
                        out.push(Effect::Send { to, msg });
                    }
                    AntiEntropyWork::Push {
                        to,
                        session,
                        push,
                        want,
                    } => {
                        let objects = store.read_for_repair(&push, 1 << 20).unwrap();
                        m.charge_objects(self.now, objects.len() as u64);
                        let msg = AntiEntropyMsg::Repair {
                            session,
                            objects,
                            want,
                        };
                        out.push(Effect::Send { to, msg });
                    }
                    AntiEntropyWork::Repair {
                        reply,
                        ends,
                        objects,
                        want,
                    } => {
                        let mut merged = 0;
                        for o in &objects {
                            if store
                                .merge_for_repair(
                                    &o.bucket,
                                    &o.key,
                                    &o.object,
                                    &ConflictPolicy::Siblings,
                                )
                                .unwrap()
                            {
                                merged += 1;
                            }
                        }
                        m.charge_objects(self.now, merged);
                        if let Some((to, session)) = reply {
                            let objects = store.read_for_repair(&want, 1 << 20).unwrap();
                            m.charge_objects(self.now, objects.len() as u64);
                            let msg = AntiEntropyMsg::Repaired { session, objects };
                            out.push(Effect::Send { to, msg });
                        }
                        if let Some(session) = ends {
                            m.merged(self.now, session, &mut out);
                        }
                    }
                    AntiEntropyWork::Purge { entries } => {
                        let mut purged = 0;
                        for e in &entries {
                            if store.purge_tombstone(&e.bucket, &e.key, e.digest).unwrap() {
                                purged += 1;
                            }
                        }
                        m.purged(purged);
                    }
                    AntiEntropyWork::ReportHints { to } => {
                        let owners = store.hint_owners().unwrap();
                        m.hint_report(self.now, at, owners.clone());
                        for peer in to {
                            let msg = AntiEntropyMsg::Hints {
                                owners: owners.clone(),
                            };
                            out.push(Effect::Send { to: peer, msg });
                        }
                    }
                }
                self.carry(at, out);
            }
        }

        fn deliver(&mut self) {
            while let Some((from, to, msg)) = self.queue.pop_front() {
                if self.cut.contains(&from) || self.cut.contains(&to) {
                    continue;
                }
                let mut out = Vec::new();
                self.nodes
                    .get_mut(&to)
                    .unwrap()
                    .0
                    .step(self.now, from, msg, &mut out);
                self.carry(to, out);
            }
        }

        /// Advances virtual time by `dt` and ticks every node not cut.
        fn advance(&mut self, dt: Duration) {
            self.now += dt;
            self.wall_ms += dt.as_millis() as u64;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if self.cut.contains(&id) {
                    continue;
                }
                let mut out = Vec::new();
                let wall = self.wall_ms;
                self.nodes
                    .get_mut(&id)
                    .unwrap()
                    .0
                    .tick(self.now, wall, &mut out);
                self.carry(id, out);
                self.deliver();
            }
        }

        fn write(
            &mut self,
            at: u64,
            key: &str,
            payload: Payload,
            context: &CausalContext,
        ) -> Object {
            let store = &self.nodes[&NodeId(at)].1;
            let mut o = store
                .read(b"b", key.as_bytes())
                .unwrap()
                .unwrap_or_default();
            let ts = Timestamp::from_ms(self.wall_ms);
            o.put(NodeId(at), context, payload, ts, 10).unwrap();
            store
                .merge_for_repair(b"b", key.as_bytes(), &o, &ConflictPolicy::Siblings)
                .unwrap();
            o
        }

        fn read(&self, at: u64, key: &str) -> Option<Object> {
            self.nodes[&NodeId(at)]
                .1
                .read(b"b", key.as_bytes())
                .unwrap()
        }

        fn stats(&self, at: u64) -> AntiEntropyStats {
            self.nodes[&NodeId(at)].0.stats().clone()
        }
    }

    fn value(v: &str) -> Payload {
        Payload::Value(v.as_bytes().to_vec())
    }

    /// The replicas (n = 3) of `key` in bucket `b` on the sim's ring.
    fn replicas_of(sim: &Sim, key: &str) -> Vec<NodeId> {
        let ring = &sim.nodes[&NodeId(1)].0.ring;
        ring.preference_list(crate::ring::key_token(b"b", key.as_bytes()), 3)
    }

    #[test]
    fn an_operators_repair_runs_only_the_exchanges_it_names() {
        let mut sim = Sim::new(4, config());
        let ms = Duration::from_millis(1);
        // The first ring's round runs on every node, with nothing to do.
        sim.advance(ms);
        sim.advance(ms);
        let before: Vec<u64> = (1..=4).map(|n| sim.stats(n).rounds).collect();
        assert_eq!(before, vec![1; 4]);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();

        // Node 1 alone holds the keys it replicates; a repair on node 1
        // with peer 3 reaches node 3 alone, for the ranges node 1 starts.
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| replicas_of(&sim, k).contains(&NodeId(1)))
            .collect();
        for k in &mine {
            sim.write(1, k, value("v"), &CausalContext::empty());
        }
        let scope = RepairScope {
            range: None,
            peer: Some(NodeId(3)),
        };
        let until = sim.nodes.get_mut(&NodeId(1)).unwrap().0.repair(scope);
        assert_eq!(until, Some(2));
        sim.advance(ms);
        sim.advance(ms);
        assert_eq!(sim.stats(1).rounds, 2);
        for n in 2..=4 {
            assert_eq!(sim.stats(n).rounds, 1, "node {n} ran a round of its own");
        }
        let mut reached = 0;
        for k in &mine {
            let replicas = replicas_of(&sim, k);
            // Node 1 starts the ranges where it comes first.
            let expected = replicas[0] == NodeId(1) && replicas.contains(&NodeId(3));
            assert_eq!(sim.read(3, k).is_some(), expected, "{k} on node 3");
            reached += usize::from(expected);
            for n in [2, 4] {
                assert!(sim.read(n, k).is_none(), "{k} reached node {n}");
            }
        }
        assert!(reached > 0, "no key to repair: the test proves nothing");

        // A repair of node 1 by itself (peer = itself) exchanges every
        // range it replicates, also where another replica comes first, with
        // every other replica; two repairs asked at once run back to back.
        let m = &mut sim.nodes.get_mut(&NodeId(1)).unwrap().0;
        let all = RepairScope {
            range: None,
            peer: Some(NodeId(1)),
        };
        assert_eq!(m.repair(all), Some(3));
        assert_eq!(m.repair(all), Some(4));
        for _ in 0..6 {
            sim.advance(ms);
        }
        // Each round takes two ticks; then the period (1 s) holds the next.
        assert_eq!(sim.stats(1).rounds, 4);
        for k in &mine {
            for n in replicas_of(&sim, k) {
                assert!(sim.read(n.0, k).is_some(), "{k} missing on {n}");
            }
        }

        // A range narrows it: keys written on node 2 alone, a repair of
        // node 2 over one span reaches the others for keys in ranges that
        // overlap the span, and no other.
        let others: Vec<String> = (0..200).map(|i| format!("j{i}")).collect();
        let twos: Vec<&String> = others
            .iter()
            .filter(|k| replicas_of(&sim, k).contains(&NodeId(2)))
            .collect();
        for k in &twos {
            sim.write(2, k, value("w"), &CausalContext::empty());
        }
        let span = TokenRange {
            after: crate::ring::Token(0),
            through: crate::ring::Token(u64::MAX / 3),
        };
        let scope = RepairScope {
            range: Some(span),
            peer: Some(NodeId(2)),
        };
        assert!(sim
            .nodes
            .get_mut(&NodeId(2))
            .unwrap()
            .0
            .repair(scope)
            .is_some());
        sim.advance(ms);
        sim.advance(ms);
        let ring = Arc::clone(&sim.nodes[&NodeId(1)].0.ring);
        let (mut inside, mut outside) = (0, 0);
        for k in &twos {
            let token = crate::ring::key_token(b"b", k.as_bytes());
            let (range, _) = ring
                .ranges()
                .into_iter()
                .find(|(r, _)| r.contains(token))
                .unwrap();
            let repaired = replicas_of(&sim, k)
                .iter()
                .all(|n| sim.read(n.0, k).is_some());
            if span.overlaps(&range) {
                assert!(repaired, "{k} in the span was not repaired");
                inside += 1;
            } else {
                let elsewhere = replicas_of(&sim, k)
                    .iter()
                    .filter(|&&n| n != NodeId(2))
                    .any(|n| sim.read(n.0, k).is_some());
                assert!(!elsewhere, "{k} outside the span was repaired");
                outside += 1;
            }
        }
        assert!(
            inside > 0 && outside > 0,
            "{inside} inside, {outside} outside"
        );

        // Anti-entropy off: no round would run, so no repair is promised.
        let mut off = config();
        off.enabled = false;
        let mut m = AntiEntropy::new(NodeId(9), off, 3, Instant::now());
        assert_eq!(m.repair(RepairScope::default()), None);
    }

    #[test]
    fn token_buckets_refill_in_virtual_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10);
        assert!(b.ready(t0));
        b.charge(t0, 30);
        assert!(!b.ready(t0));
        assert_eq!(b.ready_at(t0), t0 + Duration::from_secs(2));
        assert!(!b.ready(t0 + Duration::from_millis(1900)));
        assert!(b.ready(t0 + Duration::from_secs(2)));
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(100);
        b.charge(later, 10);
        assert!(b.ready(later));
        b.charge(later, 1);
        assert!(!b.ready(later));
    }

    #[test]
    fn a_round_repairs_both_ways_and_keeps_concurrent_siblings() {
        let mut sim = Sim::new(3, config());
        let empty = CausalContext::empty();
        for i in 0..30 {
            sim.write(1 + i % 3, &format!("only{i}"), value("x"), &empty);
        }
        sim.write(1, "both", value("one"), &empty);
        sim.write(3, "both", value("three"), &empty);
        // Two rounds (the second carries back what the initiator learned
        // from a later peer), then nothing differs.
        for _ in 0..30 {
            sim.advance(Duration::from_millis(100));
        }
        for i in 0..30 {
            let key = format!("only{i}");
            let want = sim.read(1 + i % 3, &key);
            assert!(want.is_some());
            for n in 1..=3 {
                assert_eq!(sim.read(n, &key), want, "{key} on n{n}");
            }
        }
        let both = sim.read(2, "both").unwrap();
        assert_eq!(both.siblings().len(), 2, "no sibling lost");
        assert_eq!(sim.read(1, "both").unwrap(), both);
        assert_eq!(sim.read(3, "both").unwrap(), both);
        let repaired: u64 = (1..=3).map(|n| sim.stats(n).objects_repaired).sum();
        assert!(repaired >= 60, "{repaired}");
        // Converged: a further round finds no leaf differing.
        let before: u64 = (1..=3).map(|n| sim.stats(n).leaves_differing).sum();
        for _ in 0..12 {
            sim.advance(Duration::from_millis(100));
        }
        let after: u64 = (1..=3).map(|n| sim.stats(n).leaves_differing).sum();
        assert_eq!(before, after);
        assert!(sim.stats(1).rounds >= 3);
    }

    #[test]
    fn exchanges_run_back_to_back_and_a_new_ring_brings_the_next_round_forward() {
        let mut c = config();
        c.max_exchanges = 1;
        let mut sim = Sim::new(3, c);
        for i in 0..30 {
            sim.write(
                1 + i % 3,
                &format!("k{i}"),
                value("v"),
                &CausalContext::empty(),
            );
        }
        let ms = Duration::from_millis(1);
        // The first ring asked for a round at once; with one exchange at a
        // time, each one's end starts the next, so the whole round is done
        // by the next tick, not one exchange per tick.
        sim.advance(ms);
        sim.advance(ms);
        let first = sim.stats(1);
        assert_eq!(first.rounds, 1);
        assert!(first.ranges_compared > 2, "{first:?}");
        assert_eq!(first.exchanges_failed, 0);
        // A round ended and the next is a period (1 s) away; a new ring
        // (the same nodes, other tokens) starts one at the next tick.
        sim.advance(ms);
        assert_eq!(sim.stats(1).rounds, 1);
        let mut ring = Ring::empty();
        for id in 1..=3 {
            ring = claim_join(&ring, NodeId(id), 4).unwrap();
        }
        let ring = Arc::new(ring);
        for (m, _) in sim.nodes.values_mut() {
            m.set_ring(Arc::clone(&ring));
        }
        sim.advance(ms);
        sim.advance(ms);
        let second = sim.stats(1);
        assert_eq!(second.rounds, 2, "{second:?}");
        // The same ring again is no change: no early round.
        for (m, _) in sim.nodes.values_mut() {
            m.set_ring(Arc::clone(&ring));
        }
        sim.advance(ms);
        sim.advance(ms);
        assert_eq!(sim.stats(1).rounds, 2);
    }

    #[test]
    fn the_key_rate_limit_spaces_exchanges_out() {
        let mut c = config();
        c.keys_per_second = 10;
        c.max_exchanges = 1;
        let mut sim = Sim::new(3, c);
        for i in 0..200 {
            sim.write(1, &format!("k{i}"), value("v"), &CausalContext::empty());
        }
        // Over 5 s at 10 keys a second, node 1 may scan about 50 keys plus
        // its one-second burst and the one scan that overdraws it.
        for _ in 0..50 {
            sim.advance(Duration::from_millis(100));
        }
        let scanned = sim.stats(1).keys_scanned;
        assert!(scanned > 0);
        assert!(scanned <= 10 + 50 + 200, "{scanned}");
        let unlimited = {
            let mut sim = Sim::new(3, config());
            for i in 0..200 {
                sim.write(1, &format!("k{i}"), value("v"), &CausalContext::empty());
            }
            for _ in 0..50 {
                sim.advance(Duration::from_millis(100));
            }
            sim.stats(1).keys_scanned
        };
        assert!(unlimited > 2 * scanned, "{unlimited} vs {scanned}");
    }

    /// Keys of `keys` not yet held, the same, by all three nodes.
    fn unequal(sim: &Sim, keys: &[String]) -> usize {
        keys.iter()
            .filter(|k| {
                let one = sim.read(1, k);
                one.is_none() || sim.read(2, k) != one || sim.read(3, k) != one
            })
            .count()
    }

    /// Runs the first round (the ring asked for it at once) to its end,
    /// in 1 ms ticks, well within the 1 s period.
    fn first_round(sim: &mut Sim) {
        for _ in 0..50 {
            sim.advance(Duration::from_millis(1));
            if (1..=3).all(|n| sim.stats(n).rounds >= 1) {
                break;
            }
        }
        for n in 1..=3 {
            assert_eq!(sim.stats(n).rounds, 1, "n{n}: one round, no more");
        }
    }

    #[test]
    fn one_round_repairs_more_than_a_batch_of_a_range() {
        // Batches of 4 keys, 300 keys on node 1 alone (about 12 per
        // range): the other replicas have them all after one round, not
        // one batch per range and round.
        let mut c = config();
        c.max_batch = 4;
        let mut sim = Sim::new(3, c);
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        for k in &keys {
            sim.write(1, k, value("v"), &CausalContext::empty());
        }
        first_round(&mut sim);
        assert_eq!(unequal(&sim, &keys), 0);
    }

    #[test]
    fn what_the_initiator_learns_reaches_its_other_replicas_in_the_same_round() {
        // Keys on node 3 alone: in a range whose initiator meets node 3
        // after the other replica, what it learns from node 3 goes on to
        // the other replica in the same round.
        let mut sim = Sim::new(3, config());
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        for k in &keys {
            sim.write(3, k, value("v"), &CausalContext::empty());
        }
        first_round(&mut sim);
        assert_eq!(unequal(&sim, &keys), 0);
    }

    #[test]
    fn a_node_back_up_is_exchanged_with_at_once_not_a_period_later() {
        let mut sim = Sim::new(3, config());
        // Node 3 is cut off and DOWN everywhere; writes on each side.
        sim.cut.insert(NodeId(3));
        for n in 1..=2 {
            let m = &mut sim.nodes.get_mut(&NodeId(n)).unwrap().0;
            m.on_member_event(&crate::membership::MemberEvent::Down {
                node: NodeId(3),
                incarnation: 0,
            });
        }
        let m3 = &mut sim.nodes.get_mut(&NodeId(3)).unwrap().0;
        for n in 1..=2 {
            m3.on_member_event(&crate::membership::MemberEvent::Down {
                node: NodeId(n),
                incarnation: 0,
            });
        }
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                sim.write(1, k, value("a"), &CausalContext::empty());
                sim.write(2, k, value("a"), &CausalContext::empty());
            } else {
                sim.write(3, k, value("b"), &CausalContext::empty());
            }
        }
        // Let rounds run until one has just ended: the next is a period
        // (1 s) away.
        for _ in 0..3000 {
            sim.advance(Duration::from_millis(1));
            if sim.stats(1).rounds >= 2 && !sim.nodes[&NodeId(1)].0.in_round() {
                break;
            }
        }
        let rounds = sim.stats(1).rounds;
        assert!(unequal(&sim, &keys) > 0);
        // The heal: every node hears the others are up.
        sim.cut.clear();
        for n in 1..=3u64 {
            let m = &mut sim.nodes.get_mut(&NodeId(n)).unwrap().0;
            for other in (1..=3u64).filter(|&o| o != n) {
                m.on_member_event(&crate::membership::MemberEvent::Up {
                    node: NodeId(other),
                    addr: String::new(),
                    incarnation: 1,
                });
            }
        }
        // A tenth of a period later every replica holds every key.
        for _ in 0..100 {
            sim.advance(Duration::from_millis(1));
        }
        assert_eq!(unequal(&sim, &keys), 0, "{:?}", sim.stats(1));
        assert!(sim.stats(1).rounds <= rounds + 2);
    }

    #[test]
    fn tombstones_are_purged_only_when_every_replica_holds_them_past_the_grace() {
        let mut sim = Sim::new(3, config());
        let written = sim.write(1, "k", value("v"), &CausalContext::empty());
        for _ in 0..25 {
            sim.advance(Duration::from_millis(100));
        }
        assert!(sim.read(3, "k").is_some());
        // Delete on node 1 while node 3 is cut off.
        sim.cut.insert(NodeId(3));
        for n in 1..=3 {
            let m = &mut sim.nodes.get_mut(&NodeId(n)).unwrap().0;
            m.on_member_event(&crate::membership::MemberEvent::Down {
                node: NodeId(3),
                incarnation: 0,
            });
        }
        sim.write(1, "k", Payload::Tombstone, &written.context());
        // Long past the grace: the tombstone reaches node 2 but is kept.
        for _ in 0..200 {
            sim.advance(Duration::from_millis(100));
        }
        assert!(sim.read(1, "k").unwrap().is_deleted());
        assert!(sim.read(2, "k").unwrap().is_deleted());
        assert_eq!(
            sim.stats(1).tombstones_purged + sim.stats(2).tombstones_purged,
            0
        );
        // Node 3 is back with the old value: it gets the tombstone, the old
        // value never wins, and then all three purge.
        assert_eq!(sim.read(3, "k"), Some(written));
        sim.cut.clear();
        for n in 1..=3 {
            let m = &mut sim.nodes.get_mut(&NodeId(n)).unwrap().0;
            m.on_member_event(&crate::membership::MemberEvent::Up {
                node: NodeId(3),
                addr: String::new(),
                incarnation: 1,
            });
        }
        let mut purged_everywhere = false;
        let mut third_repaired = false;
        for _ in 0..100 {
            sim.advance(Duration::from_millis(100));
            // Node 3 holds the old value until anti-entropy reaches it;
            // from then on, no node ever holds it again.
            third_repaired |= sim.read(3, "k").is_none_or(|o| o.is_deleted());
            for n in 1..=3 {
                if let Some(o) = sim.read(n, "k") {
                    if n != 3 || third_repaired {
                        assert!(o.is_deleted(), "the value came back on n{n}");
                    }
                }
            }
            if (1..=3).all(|n| sim.read(n, "k").is_none()) {
                purged_everywhere = true;
                break;
            }
        }
        assert!(purged_everywhere);
        let purged: u64 = (1..=3).map(|n| sim.stats(n).tombstones_purged).sum();
        assert_eq!(purged, 3);
    }

    #[test]
    fn a_hint_anywhere_for_a_replica_blocks_the_purge() {
        let mut sim = Sim::new(4, config());
        let written = sim.write(1, "k", value("v"), &CausalContext::empty());
        let deleted = {
            let mut o = written.clone();
            o.put(
                NodeId(1),
                &written.context(),
                Payload::Tombstone,
                Timestamp::from_ms(sim.wall_ms),
                10,
            )
            .unwrap();
            o
        };
        for n in 1..=4 {
            sim.nodes[&NodeId(n)]
                .1
                .merge_for_repair(b"b", b"k", &deleted, &ConflictPolicy::Siblings)
                .unwrap();
        }
        // Every node holds a hint for every other: no range is clear.
        for n in 1..=4u64 {
            let holder = &sim.nodes[&NodeId(n)].1;
            for owner in (1..=4u64).filter(|&o| o != n) {
                let reply = holder.handle(crate::replication::ReplicaRequest::Merge {
                    req: 1,
                    bucket: b"b".to_vec(),
                    key: b"other".to_vec(),
                    object: written.clone(),
                    policy: ConflictPolicy::Siblings,
                    hint_for: Some(NodeId(owner)),
                });
                assert!(matches!(
                    reply,
                    crate::replication::ReplicaReply::Merged { result: Ok(()), .. }
                ));
            }
        }
        for _ in 0..200 {
            sim.advance(Duration::from_millis(100));
        }
        for n in 1..=4 {
            if let Some(o) = sim.read(n, "k") {
                assert!(o.is_deleted());
            }
            assert_eq!(sim.stats(n).tombstones_purged, 0, "n{n}");
        }
        assert!((1..=4).filter(|&n| sim.read(n, "k").is_some()).count() >= 3);
    }
}
