//! The coordinator: every client request in flight on one node.
//!
//! It turns a client operation into a [`PutRequest`] or [`GetRequest`]:
//! looks up the bucket's properties, resolves the request's consistency
//! against them, stamps writes with the node's hybrid logical clock, and
//! computes the targets from the current ring snapshot and the failure
//! detector's view (primaries, with fallbacks under sloppy quorum). Then it
//! routes replica replies and timer ticks to the right machine by request
//! id, and hands finished answers back with the caller's token.
//!
//! Before any of that it checks the request: bucket, key and value sizes
//! against the limits of [`crate::replication::limits`], and the op against the
//! bucket's policy (no plain value into a CRDT bucket, CRDT updates of the
//! bucket's kind only); a bucket's policy changes only to a compatible one
//! ([`crate::version::ConflictPolicy::check_change`]). What it cannot check
//! without the stored object (an update of a key that holds no state of
//! the bucket's kind, a counter add past 64 bits, an object grown past
//! [`crate::replication::limits::MAX_OBJECT_BYTES`]) the coordinating replica refuses
//! ([`super::ReplicaError::refused`]), and the put machine answers that
//! refusal at once. All are `Error::InvalidInput`, with nothing stored anywhere.
//!
//! A CRDT update at a level above one reads first: a [`GetRequest`] at
//! the update's own level, whose merge goes with the update
//! ([`Write::base`]), so the coordinating replica applies the update to
//! every write that level acknowledged. Without it an acknowledged delete
//! that had not yet reached the coordinating replica was undone by the
//! next add (its result carried the deleted count and superseded the
//! tombstone). A read that fails fails the update, with nothing written.
//!
//! The Coordinator actor owns one of these and only carries messages; the
//! simulator drives the same struct.

use std::collections::{BTreeMap, BTreeSet};

use super::buckets::{BucketEntry, BucketTable};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::get::{GetOptions, GetReply, GetRequest, Repair};
use super::put::{PutOptions, PutReply, PutRequest};
use super::{Consistency, Outbox, ReplicaReply, ReplicaRequest, Target, Write};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::replication::BucketProps;
use crate::ring::{key_token, Placement, Ring, RingFence, RingState, Token};
use crate::version::{CausalContext, Hlc, Payload, Timestamp};

/// Request ids at or above this belong to other machines of the node
/// (hinted handoff, repair), so replies can be routed by id alone.
pub const COORDINATOR_REQ_LIMIT: u64 = 1 << 62;

/// Which of a node's `shards` coordinators a reply with request id `req`
/// goes to (see [`Coordinator::share_request_ids`]): the shard its id
/// names, whatever the round bits above [`super::put::ROUND_SHIFT`] say;
/// ids at or above [`COORDINATOR_REQ_LIMIT`] (hinted handoff, scans) are
/// shard 0's, the node's lead coordinator.
pub fn shard_of_request_id(req: u64, shards: usize) -> usize {
    if req >= COORDINATOR_REQ_LIMIT || shards <= 1 {
        return 0;
    }
    ((req & ((1u64 << super::put::ROUND_SHIFT) - 1)) % shards as u64) as usize
}

/// Per-request overrides of the bucket's properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Read quorum; the bucket's `r` when `None`.
    pub r: Option<Consistency>,
    /// Write quorum; the bucket's `w` when `None`.
    pub w: Option<Consistency>,
    /// Whether fallbacks may stand in for down primaries; the bucket's
    /// setting when `None`.
    pub sloppy_quorum: Option<bool>,
    /// When read repair runs.
    pub repair: Repair,
    /// Request timeout; the bucket's when `None`.
    pub timeout: Option<Duration>,
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// Read a key.
    Get {
        /// The bucket.
        bucket: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// Overrides.
        options: RequestOptions,
    },
    /// Write a value, or delete (a tombstone payload).
    Put {
        /// The bucket.
        bucket: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// The value, or [`Payload::Tombstone`] for a delete.
        payload: Payload,
        /// The context the client read (empty for a blind write).
        context: CausalContext,
        /// Overrides.
        options: RequestOptions,
    },
    /// Apply a CRDT update to a `Crdt` bucket's value (see
    /// [`Write::op`]); answered like a put.
    Update {
        /// The bucket.
        bucket: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// The update.
        op: crate::crdt::CrdtOp,
        /// Overrides.
        options: RequestOptions,
    },
}

/// A finished request's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A get's merged object and receipt.
    Got(GetReply),
    /// A put's stored object and receipt.
    Put(PutReply),
    /// A scan's page of keys ([`super::scan`]).
    Scanned(super::scan::ScanPage),
}

/// The parts of a write, before its machine is built.
struct WriteChange {
    bucket: Vec<u8>,
    key: Vec<u8>,
    payload: Payload,
    context: CausalContext,
    op: Option<crate::crdt::CrdtOp>,
    /// [`Write::base`].
    base: Option<Box<crate::version::Object>>,
    options: RequestOptions,
}

enum Machine {
    Put(PutRequest),
    Get(GetRequest),
    /// A CRDT update's read (see the module docs); the update is sent
    /// when it answers.
    Read {
        read: GetRequest,
        update: Box<WriteChange>,
        wall_ms: u64,
    },
}

impl Machine {
    fn deadline(&self) -> Instant {
        match self {
            Machine::Put(p) => p.deadline(),
            Machine::Get(g) | Machine::Read { read: g, .. } => g.deadline(),
        }
    }
}

/// All client requests in flight on one node; `C` is the caller's token
/// for whoever waits for the answer.
pub struct Coordinator<C> {
    node: NodeId,
    placement: Arc<Placement>,
    down: BTreeSet<NodeId>,
    buckets: BucketTable,
    defaults: super::buckets::BucketDefaults,
    /// Nodes of the ring in force, or of the ring a pending change leads
    /// to if that has more ([`Coordinator::required`]).
    ring_nodes: usize,
    hlc: Hlc,
    /// The newest timestamp learned from peers (replies, bucket entries)
    /// since the clock last observed: folded in before the next stamp.
    learned: Option<Timestamp>,
    /// Timestamps this node's replica was sent, observed likewise.
    witness: Option<Arc<crate::version::Witness>>,
    /// Bugs put back on purpose (tests and the simulator).
    regressions: super::Regressions,
    next_req: u64,
    /// This coordinator's ids are `req_shard` modulo `req_shards` (one
    /// coordinator of several on a node: [`Coordinator::share_request_ids`]).
    req_shard: u64,
    req_shards: u64,
    /// Each request's caller, machine, and the fence of the ring state it
    /// was routed by (stamped on everything it sends, see [`RingFence`]).
    requests: BTreeMap<u64, (Option<C>, Machine, RingFence)>,
    /// The fences of requests that finished during the current call
    /// (`start`, `step`, `tick`): what they sent on their way out (a read
    /// repair after the answer) is stamped after they are gone.
    retired: Vec<(u64, RingFence)>,
}

impl<C> std::fmt::Debug for Coordinator<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("node", &self.node)
            .field("in_flight", &self.requests.len())
            .finish()
    }
}

impl<C> Coordinator<C> {
    /// A coordinator for `node`, with `default_props` for buckets not set
    /// explicitly and `hlc` to stamp writes.
    pub fn new(node: NodeId, default_props: BucketProps, hlc: Hlc) -> Self {
        Coordinator {
            node,
            placement: Arc::new(Placement::new(Arc::new(RingState::settled(Ring::empty())))),
            down: BTreeSet::new(),
            buckets: BucketTable::new(),
            defaults: super::buckets::BucketDefaults::new(default_props),
            ring_nodes: 0,
            hlc,
            learned: None,
            witness: None,
            regressions: super::Regressions::default(),
            next_req: 1,
            req_shard: 0,
            req_shards: 1,
            requests: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    /// Installs a settled ring (no change in progress); requests in flight
    /// keep their targets.
    pub fn set_ring(&mut self, ring: Arc<Ring>) {
        let state = RingState::settled((*ring).clone());
        self.set_ring_state(Arc::new(state));
    }

    /// Installs a ring state: while a change is pending, reads of a moving
    /// range go by the old ring and writes must reach a quorum in both (see
    /// `ring::transition`). Requests in flight keep their targets.
    pub fn set_ring_state(&mut self, state: Arc<RingState>) {
        let target = state.pending.as_ref().map(|p| p.target.members().len());
        self.ring_nodes = state.ring.members().len().max(target.unwrap_or(0));
        self.placement = Arc::new(Placement::new(state));
    }

    /// The answers `level` needs for a bucket of `n` replicas. `Quorum`
    /// counts the replicas a key can have: `n`, or fewer while the cluster
    /// has fewer nodes (in the ring in force and in the one a pending
    /// change leads to, whichever has more). Every node then holds every
    /// key, so a quorum of those nodes meets every other quorum of them,
    /// and a lone node serves quorum reads and writes alone. `All` and the
    /// counts (`One`, `Two`, `Count(k)`) are never lowered: `All` still
    /// means all `n` copies, and each fails as `Unavailable` while fewer
    /// nodes can answer.
    pub fn required(&self, level: Consistency, n: usize) -> Result<usize> {
        let needed = level.required(n)?;
        let nodes = self.ring_nodes;
        match level {
            Consistency::Quorum if (1..n).contains(&nodes) => level.required(nodes),
            _ => Ok(needed),
        }
    }

    /// Installs the failure detector's view: nodes not to send to.
    pub fn set_down(&mut self, down: BTreeSet<NodeId>) {
        self.down = down;
    }

    /// Takes in a membership event: SUSPECT, DOWN and LEFT nodes are routed
    /// around (this node never is), an UP node is sent to again. Returns
    /// whether the view changed.
    pub fn on_member_event(&mut self, event: &crate::membership::MemberEvent) -> bool {
        use crate::membership::MemberEvent;
        match *event {
            MemberEvent::Up { node, .. } => self.down.remove(&node),
            MemberEvent::Suspect { node, .. }
            | MemberEvent::Down { node, .. }
            | MemberEvent::Left { node } => node != self.node && self.down.insert(node),
            MemberEvent::Refuted { .. } | MemberEvent::LocalPause { .. } => false,
        }
    }

    /// The ring in force.
    pub fn ring(&self) -> &Ring {
        self.placement.ring()
    }

    /// Every node of the ring in force and of a pending change's target.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let state = self.placement.state();
        let mut members = state.ring.members();
        if let Some(p) = &state.pending {
            members.extend(p.target.members());
        }
        members
    }

    /// Where a hint held for `owner` goes now: the owner, while it is a
    /// replica of the key (the target ring's, while a change is pending)
    /// and up; the key's first replica that is up (this node included),
    /// when the owner no longer replicates it (it left, or its range
    /// moved); `None` while the owner is a replica but down.
    pub fn hint_destination(&self, owner: NodeId, bucket: &[u8], key: &[u8]) -> Option<NodeId> {
        let token = key_token(bucket, key);
        let n = self.bucket(bucket).n;
        let state = self.placement.state();
        let ring = state.pending.as_ref().map_or(&state.ring, |p| &p.target);
        let replicas = ring.preference_list(token, n);
        if replicas.contains(&owner) {
            return self.is_up_peer(owner).then_some(owner);
        }
        replicas
            .into_iter()
            .find(|&r| r == self.node || self.is_up_peer(r))
    }

    /// The nodes routed around now.
    pub fn down(&self) -> &BTreeSet<NodeId> {
        &self.down
    }

    /// Whether `node` is another node believed up: one that requests and
    /// hints may be sent to.
    pub fn is_up_peer(&self, node: NodeId) -> bool {
        node != self.node && !self.down.contains(&node)
    }

    /// Sets a bucket's properties (validated), stamped with this node's
    /// clock at wall time `wall_ms`; the entry to spread to other nodes.
    pub fn set_bucket(
        &mut self,
        bucket: Vec<u8>,
        props: BucketProps,
        wall_ms: u64,
    ) -> Result<BucketEntry> {
        crate::replication::limits::check_bucket(&bucket)?;
        self.check_policy_change(&bucket, &props)?;
        let stamp = self.stamp(wall_ms);
        self.buckets.set(bucket, props, stamp, self.node)
    }

    /// Once set, a bucket keeps a policy its stored values can be read
    /// under (see `ConflictPolicy::check_change`), and so does a bucket
    /// whose name gives it a policy (`buckets::named_policy`). Any other
    /// bucket never set takes any policy: nothing can be stored under the
    /// default yet that the caller did not write there.
    fn check_policy_change(&self, bucket: &[u8], props: &BucketProps) -> Result<()> {
        let current = match self.buckets.get(bucket) {
            Some(current) => current.policy.clone(),
            None => match super::buckets::named_policy(bucket) {
                Some(named) => named,
                None => return Ok(()),
            },
        };
        current.check_change(&props.policy)
    }

    /// What [`Coordinator::set_bucket`] would do, without doing it: the
    /// entry (stamped now) and the whole table with it, for the caller to
    /// save first and then [`Coordinator::commit_bucket`]. Every check is
    /// made here, so a refusal changes nothing.
    pub fn prepare_bucket(
        &mut self,
        bucket: Vec<u8>,
        props: BucketProps,
        wall_ms: u64,
    ) -> Result<(BucketEntry, Vec<BucketEntry>)> {
        crate::replication::limits::check_bucket(&bucket)?;
        self.check_policy_change(&bucket, &props)?;
        let mut table = self.buckets.clone();
        let stamp = self.stamp(wall_ms);
        let entry = table.set(bucket, props, stamp, self.node)?;
        Ok((entry, table.entries()))
    }

    /// Applies an entry made by [`Coordinator::prepare_bucket`] once it
    /// has been saved.
    pub fn commit_bucket(&mut self, entry: BucketEntry) {
        self.buckets.merge(vec![entry]);
    }

    /// Merges bucket entries from a peer or from the store; returns those
    /// that changed the table.
    pub fn merge_buckets(&mut self, entries: Vec<BucketEntry>) -> Vec<BucketEntry> {
        for e in &entries {
            self.learn(Some(e.stamp));
        }
        self.buckets.merge(entries)
    }

    /// Observes, before each stamp, the timestamps the node's replica is
    /// sent (writes it coordinates, objects it merges).
    pub fn set_witness(&mut self, witness: Arc<crate::version::Witness>) {
        self.witness = Some(witness);
    }

    /// Starts this coordinator's request ids at a point derived from the
    /// wall clock at its start, `wall_ms`: 4,096 ids per millisecond since
    /// 2020, so a restarted node never reuses an id its previous process
    /// used (unless that one made more than 4,096 requests a millisecond
    /// over its whole life), and replicas can recognise a duplicated
    /// coordination by (node, request id).
    pub fn start_requests_at(&mut self, wall_ms: u64) {
        const EPOCH_2020_MS: u64 = 1_577_836_800_000;
        let start = (wall_ms.saturating_sub(EPOCH_2020_MS) << 12) % (1 << super::put::ROUND_SHIFT);
        self.next_req = self.own_id_from(start);
    }

    /// Makes this coordinator one of `shards` on its node, the one
    /// numbered `shard`: its request ids are then those equal to `shard`
    /// modulo `shards`, so the node's coordinators never use the same id
    /// (replicas recognise a duplicated coordination by node and id) and
    /// a reply goes back to the coordinator that asked by its id alone
    /// ([`shard_of_request_id`]). Call before any request starts.
    ///
    /// # Panics
    ///
    /// If `shard >= shards` (a caller's bug, never input).
    pub fn share_request_ids(&mut self, shard: usize, shards: usize) {
        assert!(shard < shards, "shard {shard} of {shards}");
        self.req_shard = shard as u64;
        self.req_shards = shards as u64;
        self.next_req = self.own_id_from(self.next_req);
    }

    /// The first id at or after `from` (wrapping below
    /// [`super::put::ROUND_SHIFT`]'s bound) that is this coordinator's:
    /// never 0, and `req_shard` modulo `req_shards`.
    fn own_id_from(&self, from: u64) -> u64 {
        let limit = 1u64 << super::put::ROUND_SHIFT;
        let (k, s) = (self.req_shards, self.req_shard);
        let mut id = from - from % k + s;
        if id < from {
            id += k;
        }
        if id == 0 {
            id = k;
        }
        if id >= limit {
            id = if s == 0 { k } else { s };
        }
        id
    }

    /// Puts back bugs of earlier versions (see [`super::Regressions`]).
    pub fn set_regressions(&mut self, regressions: super::Regressions) {
        self.regressions = regressions;
    }

    /// Notes a timestamp learned from a peer.
    fn learn(&mut self, ts: Option<Timestamp>) {
        self.learned = self.learned.max(ts);
    }

    /// A timestamp for a local event at wall time `wall_ms`, after the
    /// clock has observed every timestamp learned since the last one. A
    /// learned timestamp too far ahead is refused by the clock (and
    /// counted): a node with a bad clock does not drag this one along.
    fn stamp(&mut self, wall_ms: u64) -> Timestamp {
        let seen = self.witness.as_ref().and_then(|w| w.take());
        self.learn(seen);
        if self.regressions.unordered_lww {
            // The clock as before issue [9]: it never observes.
            self.learned = None;
        }
        if let Some(learned) = self.learned.take() {
            if let Err(e) = self.hlc.observe(learned, wall_ms) {
                tracing::debug!(error = %e, "a peer's timestamp was not observed");
            }
        }
        self.hlc.now(wall_ms)
    }

    /// How many learned timestamps the clock refused for skew.
    pub fn clock_refusals(&self) -> u64 {
        self.hlc.refused()
    }

    /// Every bucket set explicitly.
    pub fn buckets(&self) -> &BucketTable {
        &self.buckets
    }

    /// A bucket's properties.
    pub fn bucket(&self, bucket: &[u8]) -> &BucketProps {
        self.buckets
            .get(bucket)
            .unwrap_or_else(|| self.defaults.get(bucket))
    }

    /// The fence a request to a replica is stamped with: that of the ring
    /// state its client request was routed by. Ask it for what the last
    /// call (`start`, `step`, `tick`) sent: a request that finished in
    /// that call is still known. Any other whose machine is gone gets the
    /// lowest fence, which every replica that knows a ring refuses:
    /// nothing is sent under a newer fence than it was routed by.
    pub fn fence_of(&self, request: &ReplicaRequest) -> RingFence {
        let req = request.req() & ((1 << super::put::ROUND_SHIFT) - 1);
        match self.requests.get(&req) {
            Some((_, _, fence)) => *fence,
            None => self
                .retired
                .iter()
                .find(|(r, _)| *r == req)
                .map_or(RingFence::default(), |(_, fence)| *fence),
        }
    }

    /// The caller of request `req`, while it still waits for its answer
    /// (`None` once answered, or for a request not in flight).
    pub fn caller_mut(&mut self, req: u64) -> Option<&mut C> {
        self.requests.get_mut(&req).and_then(|(c, _, _)| c.as_mut())
    }

    /// Requests in flight (including gets finishing their read repair).
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The earliest deadline of a request in flight: when to tick next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.requests.values().map(|(_, m, _)| m.deadline()).min()
    }

    /// The targets a read of `bucket`/`key` asks now.
    pub fn targets(&self, bucket: &[u8], key: &[u8], sloppy: bool) -> Vec<Target> {
        let token = key_token(bucket, key);
        let n = self.bucket(bucket).n;
        self.targets_in(self.placement.read_ring(token), token, n, sloppy, &[])
    }

    /// The targets a write of `bucket`/`key` goes to now, and, while its
    /// range moves, the two groups that must each store `w` copies: the
    /// old ring's targets and the new ring's. A node in both takes its new
    /// role when that is a primary's, so that after the switch its copy is
    /// where a read looks.
    pub fn write_targets(
        &self,
        bucket: &[u8],
        key: &[u8],
        sloppy: bool,
    ) -> (Vec<Target>, Vec<Vec<NodeId>>) {
        let token = key_token(bucket, key);
        let n = self.bucket(bucket).n;
        let (ring, next) = self.placement.write_rings(token);
        let Some(next) = next else {
            return (self.targets_in(ring, token, n, sloppy, &[]), Vec::new());
        };
        // A fallback must hold a hint for the primary it stands in for,
        // and a primary of the other ring stores the object as its own:
        // one request cannot do both, so a node that is a primary of one
        // ring only is never a fallback of the other. Otherwise it would
        // count towards the other ring's quorum with no hint behind it,
        // and a write acknowledged that way would be on too few of that
        // ring's replicas (the simulator found it: seed 3018187).
        let old_primaries = ring.preference_list(token, n);
        let new_primaries = next.preference_list(token, n);
        let only_new: Vec<NodeId> = new_primaries
            .iter()
            .copied()
            .filter(|x| !old_primaries.contains(x))
            .collect();
        let only_old: Vec<NodeId> = old_primaries
            .iter()
            .copied()
            .filter(|x| !new_primaries.contains(x))
            .collect();
        let mut targets = self.targets_in(ring, token, n, sloppy, &only_new);
        let old: Vec<NodeId> = targets.iter().map(|t| t.node).collect();
        let new = self.targets_in(next, token, n, sloppy, &only_old);
        let groups = vec![old, new.iter().map(|t| t.node).collect()];
        for t in new {
            match targets.iter_mut().find(|x| x.node == t.node) {
                Some(x) if t.hint_for.is_none() => x.hint_for = None,
                Some(_) => {}
                None => targets.push(t),
            }
        }
        (targets, groups)
    }

    /// The write targets of `token` in `ring`; with `sloppy`, fallbacks
    /// for primaries that are down, never one of `not_fallback`.
    fn targets_in(
        &self,
        ring: &Ring,
        token: Token,
        n: usize,
        sloppy: bool,
        not_fallback: &[NodeId],
    ) -> Vec<Target> {
        let is_up = |n: NodeId| !self.down.contains(&n);
        if sloppy {
            ring.preference_list_with(token, n, |x| is_up(x) && !not_fallback.contains(&x))
                .into_iter()
                .map(Target::from)
                .collect()
        } else {
            ring.preference_list(token, n)
                .into_iter()
                .filter(|&n| is_up(n))
                .map(|node| Target {
                    node,
                    hint_for: None,
                })
                .collect()
        }
    }

    /// Where a scan page starting at `token` goes: the targets a read of
    /// any key of the segment asks, the segment's last token, and the
    /// fence of the ring state it was routed by. The segment ends where
    /// the virtual node range holding `token` ends, in the ring read now
    /// and in the ring a pending change moves to, and at the edges of the
    /// change's moves, so every key of it has the same targets (or at
    /// `u64::MAX`, the end of the token space).
    pub fn scan_route(
        &self,
        bucket: &[u8],
        token: Token,
        sloppy: bool,
    ) -> (Vec<Target>, Token, RingFence) {
        let n = self.bucket(bucket).n;
        let mut end = u64::MAX;
        let mut cut = |t: u64| {
            if t >= token.0 && t < end {
                end = t;
            }
        };
        let (ring, next) = self.placement.write_rings(token);
        for r in std::iter::once(ring).chain(next) {
            for v in r.vnodes() {
                cut(v.token.0);
            }
        }
        for m in self.placement.moves() {
            cut(m.range.after.0);
            cut(m.range.through.0);
        }
        let targets = self.targets_in(self.placement.read_ring(token), token, n, sloppy, &[]);
        (targets, Token(end), self.placement.fence())
    }

    /// Starts a client operation at monotonic time `now` and wall time
    /// `wall_ms`. Returns the answer at once when the request cannot even
    /// start (bad options, too few targets).
    pub fn start(
        &mut self,
        now: Instant,
        wall_ms: u64,
        client: C,
        op: ClientOp,
        out: &mut Outbox,
    ) -> Option<(C, Result<Answer>)> {
        self.retired.clear();
        let req = self.next_req;
        // Wrapping within the coordinator's id range: a request lives for
        // seconds, 2^62 ids last for ever.
        self.next_req = self.own_id_from(req + self.req_shards);
        if let Err(e) = self.check(&op) {
            return Some((client, Err(e)));
        }
        let machine = match op {
            ClientOp::Get {
                bucket,
                key,
                options,
            } => {
                let props = self.bucket(&bucket).clone();
                let r = match self.required(options.r.unwrap_or(props.r), props.n) {
                    Ok(r) => r,
                    Err(e) => return Some((client, Err(e))),
                };
                let sloppy = options.sloppy_quorum.unwrap_or(props.sloppy_quorum);
                let targets = self.targets(&bucket, &key, sloppy);
                Machine::Get(GetRequest::new(
                    now,
                    req,
                    bucket,
                    key,
                    props.policy.clone(),
                    targets,
                    GetOptions {
                        r,
                        timeout: options.timeout.unwrap_or(props.timeout),
                        repair: options.repair,
                    },
                    out,
                ))
            }
            ClientOp::Put {
                bucket,
                key,
                payload,
                context,
                options,
            } => {
                let change = WriteChange {
                    bucket,
                    key,
                    payload,
                    context,
                    op: None,
                    base: None,
                    options,
                };
                match self.write_machine(now, wall_ms, req, change, out) {
                    Ok(m) => m,
                    Err(e) => return Some((client, Err(e))),
                }
            }
            ClientOp::Update {
                bucket,
                key,
                op,
                options,
            } => {
                let change = WriteChange {
                    bucket,
                    key,
                    // Ignored when `op` is set.
                    payload: Payload::Value(Vec::new()),
                    context: CausalContext::empty(),
                    op: Some(op),
                    base: None,
                    options,
                };
                match self.update_machine(now, wall_ms, req, change, out) {
                    Ok(m) => m,
                    Err(e) => return Some((client, Err(e))),
                }
            }
        };
        let fence = self.placement.fence();
        self.requests.insert(req, (Some(client), machine, fence));
        self.finish(now, req, out).pop()
    }

    /// Checks a client operation before anything is sent: the limits of
    /// `config` (bucket, key and value sizes) and the bucket's policy (a
    /// plain value is never written into a CRDT bucket, where it would
    /// replace the state with bytes no read or update can decode; a CRDT
    /// update fits the bucket's kind). A refusal is `InvalidInput`.
    fn check(&self, op: &ClientOp) -> Result<()> {
        use crate::crdt::CrdtOp;
        use crate::version::ConflictPolicy;
        let (bucket, key) = match op {
            ClientOp::Get { bucket, key, .. }
            | ClientOp::Put { bucket, key, .. }
            | ClientOp::Update { bucket, key, .. } => (bucket, key),
        };
        crate::replication::limits::check_bucket_key(bucket, key)?;
        let policy = &self.bucket(bucket).policy;
        match op {
            ClientOp::Get { .. } => Ok(()),
            ClientOp::Put {
                payload, context, ..
            } => match (policy, payload) {
                (ConflictPolicy::Crdt(kind), Payload::Value(_)) => {
                    Err(Error::InvalidInput(format!(
                        "a put into a {kind:?} bucket would replace the {kind:?} state of \
                         {} with bytes that are not one; use the bucket's CRDT operations",
                        super::key_name(bucket, key)
                    )))
                }
                (ConflictPolicy::Crdt(kind), Payload::Tombstone)
                    if *context == CausalContext::empty() =>
                {
                    Err(Error::InvalidInput(format!(
                        "a delete in a {kind:?} bucket needs the context of a read (Get) of \
                         {}: without one it would remove nothing",
                        super::key_name(bucket, key)
                    )))
                }
                (_, Payload::Value(v)) => crate::replication::limits::check_value(v.len()),
                (_, Payload::Tombstone) => Ok(()),
            },
            ClientOp::Update { op, .. } => {
                match policy {
                    ConflictPolicy::Crdt(kind) => op.check(*kind)?,
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "{} needs a CRDT bucket; this bucket's policy is {other:?}",
                            op.name()
                        )))
                    }
                }
                match op {
                    CrdtOp::Add(_) => Ok(()),
                    CrdtOp::SetAdd(members) | CrdtOp::SetRemove(members) => {
                        crate::replication::limits::check_members(
                            members.iter().map(|m| m.as_slice()),
                        )
                    }
                    CrdtOp::Assign(v) => crate::replication::limits::check_value(v.len()),
                }
            }
        }
    }

    /// Builds the machine of a CRDT update: its read first when the
    /// update's level needs more than one replica (see the module docs),
    /// else the write itself (the coordinating replica's own object is
    /// the one copy that level reads).
    fn update_machine(
        &mut self,
        now: Instant,
        wall_ms: u64,
        req: u64,
        change: WriteChange,
        out: &mut Outbox,
    ) -> Result<Machine> {
        let props = self.bucket(&change.bucket).clone();
        let r = self.required(change.options.w.unwrap_or(props.w), props.n)?;
        if r <= 1 || self.regressions.blind_update {
            return self.write_machine(now, wall_ms, req, change, out);
        }
        let sloppy = change.options.sloppy_quorum.unwrap_or(props.sloppy_quorum);
        let targets = self.targets(&change.bucket, &change.key, sloppy);
        let timeout = change.options.timeout.unwrap_or(props.timeout);
        let mut change = change;
        change.options.timeout = Some(timeout);
        let read = GetRequest::new(
            now,
            req,
            change.bucket.clone(),
            change.key.clone(),
            props.policy.clone(),
            targets,
            GetOptions {
                r,
                timeout,
                // The update's result, sent to every target, repairs.
                repair: Repair::Off,
            },
            out,
        );
        Ok(Machine::Read {
            read,
            update: Box::new(change),
            wall_ms,
        })
    }

    /// Builds the machine of a write (a put, a delete or a CRDT update).
    fn write_machine(
        &mut self,
        now: Instant,
        wall_ms: u64,
        req: u64,
        change: WriteChange,
        out: &mut Outbox,
    ) -> Result<Machine> {
        let WriteChange {
            bucket,
            key,
            payload,
            context,
            op,
            base,
            options,
        } = change;
        let props = self.bucket(&bucket).clone();
        let w = self.required(options.w.unwrap_or(props.w), props.n)?;
        let sloppy = options.sloppy_quorum.unwrap_or(props.sloppy_quorum);
        let (mut targets, mut quorums) = self.write_targets(&bucket, &key, sloppy);
        if !sloppy {
            // A strict quorum counts primaries only; fallbacks for the
            // down primaries still get the write, as hints that count for
            // nothing, so hinted handoff brings a primary back up to date
            // sooner than anti-entropy would.
            if quorums.is_empty() {
                quorums = vec![targets.iter().map(|t| t.node).collect()];
            }
            let (with_fallbacks, _) = self.write_targets(&bucket, &key, true);
            for t in with_fallbacks {
                if t.hint_for.is_some() && !targets.iter().any(|x| x.node == t.node) {
                    targets.push(t);
                }
            }
        }
        // This node coordinates the write itself when it is a primary target, as in
        // Riak: one hop fewer, and a write through a live node never waits
        // on a dead first replica that the failure detector has not yet
        // convicted.
        // Only a primary coordinates while one is up: a fallback that
        // coordinates stores the write as a hint (see `Coordinate`).
        if let Some(local) = targets
            .iter()
            .position(|t| t.node == self.node && t.hint_for.is_none())
        {
            targets[..=local].rotate_right(1);
        }
        let write = Write {
            context,
            payload,
            timestamp: self.stamp(wall_ms),
            op,
            base,
        };
        Ok(Machine::Put(PutRequest::new(
            now,
            req,
            bucket,
            key,
            write,
            props.policy.clone(),
            targets,
            PutOptions {
                w,
                timeout: options.timeout.unwrap_or(props.timeout),
                quorums,
            },
            out,
        )))
    }

    /// Routes a replica's reply. Returns the answers it completed.
    pub fn step(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: ReplicaReply,
        out: &mut Outbox,
    ) -> Vec<(C, Result<Answer>)> {
        self.retired.clear();
        self.learn(reply_timestamp(&reply));
        // A put's later rounds carry the round above the id.
        let req = reply.req() & ((1 << super::put::ROUND_SHIFT) - 1);
        match self.requests.get_mut(&req) {
            Some((_, Machine::Put(p), _)) => p.step(now, from, reply, out),
            Some((_, Machine::Get(g) | Machine::Read { read: g, .. }, _)) => {
                g.step(now, from, reply, out)
            }
            None => return Vec::new(),
        }
        self.finish(now, req, out)
    }

    /// Checks every request's deadline. Returns the answers it completed.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox) -> Vec<(C, Result<Answer>)> {
        self.retired.clear();
        let due: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, (_, m, _))| m.deadline() <= now)
            .map(|(req, _)| *req)
            .collect();
        let mut done = Vec::new();
        for req in due {
            match self.requests.get_mut(&req) {
                Some((_, Machine::Put(p), _)) => p.tick(now, out),
                Some((_, Machine::Get(g) | Machine::Read { read: g, .. }, _)) => g.tick(now, out),
                None => continue,
            }
            done.extend(self.finish(now, req, out));
        }
        done
    }

    /// The answers request `req` has after its machine moved: a CRDT
    /// update's read is followed by its write ([`Self::advance`]), then
    /// any answer is taken ([`Self::collect`]).
    fn finish(&mut self, now: Instant, req: u64, out: &mut Outbox) -> Vec<(C, Result<Answer>)> {
        let mut done = self.advance(now, req, out);
        done.extend(self.collect(req));
        done
    }

    /// Sends a CRDT update whose read has answered, with the read's merge
    /// as its base and what is left of its timeout. A failed read is the
    /// update's answer, returned here: nothing was written.
    fn advance(&mut self, now: Instant, req: u64, out: &mut Outbox) -> Vec<(C, Result<Answer>)> {
        let Some((_, Machine::Read { read, .. }, _)) = self.requests.get_mut(&req) else {
            return Vec::new();
        };
        let Some(got) = read.take_reply() else {
            return Vec::new();
        };
        let deadline = read.deadline();
        let Some((
            client,
            Machine::Read {
                mut update,
                wall_ms,
                ..
            },
            fence,
        )) = self.requests.remove(&req)
        else {
            return Vec::new();
        };
        let machine = got.and_then(|GetReply { object, .. }| {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Err(Error::QuorumTimeout {
                    needed: 1,
                    got: 0,
                    after: update.options.timeout.unwrap_or_default(),
                    indefinite: false,
                });
            }
            update.base = object.map(Box::new);
            update.options.timeout = Some(left);
            self.write_machine(now, wall_ms, req, *update, out)
        });
        match machine {
            Ok(machine) => {
                self.requests.insert(req, (client, machine, fence));
                Vec::new()
            }
            Err(e) => {
                self.retired.push((req, fence));
                client.map(|c| (c, Err(e))).into_iter().collect()
            }
        }
    }

    /// Takes request `req`'s answer if it has one, and drops the machine if
    /// it has nothing left to do.
    fn collect(&mut self, req: u64) -> Vec<(C, Result<Answer>)> {
        let Some((client, machine, _)) = self.requests.get_mut(&req) else {
            return Vec::new();
        };
        let (answer, finished) = match machine {
            Machine::Put(p) => {
                let a = p.take_reply().map(|r| r.map(Answer::Put));
                (a, p.is_finished())
            }
            Machine::Get(g) => {
                let a = g.take_reply().map(|r| r.map(Answer::Got));
                (a, g.is_finished())
            }
            // Its reply, once there, is taken by `advance`.
            Machine::Read { .. } => (None, false),
        };
        let mut done = Vec::new();
        if let Some(answer) = answer {
            if let Some(client) = client.take() {
                done.push((client, answer));
            }
        }
        if finished {
            if let Some((_, _, fence)) = self.requests.remove(&req) {
                self.retired.push((req, fence));
            }
        }
        done
    }
}

/// The newest timestamp a replica's reply carries.
fn reply_timestamp(reply: &ReplicaReply) -> Option<Timestamp> {
    match reply {
        ReplicaReply::Coordinated { result: Ok(o), .. }
        | ReplicaReply::Read {
            result: Ok(Some(o)),
            ..
        } => o.timestamp(),
        ReplicaReply::Merged {
            result: Err(super::ReplicaError::Superseded { timestamp }),
            ..
        } => Some(*timestamp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::limits::MAX_BUCKET_BYTES;
    use crate::replication::replica::ReplicaStore;
    use crate::replication::ReplicaRequest;
    use crate::ring::claim_join;
    use crate::storage::MemoryEngine;

    /// Node 1's coordinator with the default bucket properties.
    fn coordinator<C>() -> Coordinator<C> {
        Coordinator::new(
            NodeId(1),
            BucketProps::default(),
            Hlc::new(Duration::from_secs(1)),
        )
    }

    fn ring(nodes: u64) -> Arc<Ring> {
        let mut ring = Ring::empty();
        for id in 1..=nodes {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        Arc::new(ring)
    }

    #[test]
    fn quorum_and_all_count_the_nodes_a_cluster_smaller_than_n_has() {
        use crate::ring::transition::{Change, RingState};
        let mut c: Coordinator<()> = coordinator();
        let (q, all) = (Consistency::Quorum, Consistency::All);
        // No ring yet: nothing is lowered (requests fail Unavailable).
        assert_eq!(c.required(q, 3).unwrap(), 2);
        for (nodes, quorum, every) in [(1, 1, 3), (2, 2, 3), (3, 2, 3), (5, 2, 3)] {
            c.set_ring(ring(nodes));
            assert_eq!(c.required(q, 3).unwrap(), quorum, "{nodes} nodes");
            assert_eq!(c.required(all, 3).unwrap(), every, "{nodes} nodes");
            // Counts are never lowered; n bounds them as before.
            assert_eq!(c.required(Consistency::Two, 3).unwrap(), 2);
            assert_eq!(c.required(Consistency::Count(3), 3).unwrap(), 3);
            assert!(c.required(Consistency::Count(4), 3).is_err());
            assert_eq!(c.required(q, 5).unwrap(), (nodes as usize).min(5) / 2 + 1);
        }
        // While one node is joined by a second, the larger ring counts.
        let one = RingState::settled((*ring(1)).clone());
        let joining = one
            .begin(Change::Join(NodeId(2)), (*ring(2)).clone(), 3)
            .expect("a join begins");
        assert!(joining.pending.is_some(), "the join has ranges to move");
        c.set_ring_state(Arc::new(joining));
        assert_eq!(c.required(q, 3).unwrap(), 2);
        assert_eq!(c.required(all, 3).unwrap(), 3);
    }

    #[test]
    fn a_nodes_coordinators_use_ids_of_their_own_and_replies_find_them_by_id() {
        let stores: Vec<ReplicaStore> = (1..=3)
            .map(|n| ReplicaStore::open(NodeId(n), Arc::new(MemoryEngine::new()), 10, 10).unwrap())
            .collect();
        let shards = 3;
        let mut coordinators: Vec<Coordinator<u32>> = (0..shards)
            .map(|shard| {
                let mut c = coordinator();
                c.set_ring(ring(3));
                // All from the same wall clock, as the shards of one node
                // start: without the stride their ids would collide.
                c.start_requests_at(1_700_000_000_000);
                c.share_request_ids(shard, shards);
                c
            })
            .collect();
        let now = Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        let mut answered = 0;
        for round in 0..20u32 {
            for (shard, c) in coordinators.iter_mut().enumerate() {
                let mut out = Outbox::new();
                let key = format!("k{round}-{shard}").into_bytes();
                let op = put(
                    b"b",
                    &key,
                    Payload::Value(b"v".to_vec()),
                    CausalContext::empty(),
                );
                assert!(c.start(now, 1_000, round, op, &mut out).is_none());
                while let Some((to, req)) = out.pop() {
                    assert_eq!(
                        shard_of_request_id(req.req(), shards),
                        shard,
                        "request id {} of shard {shard}",
                        req.req()
                    );
                    seen.insert((
                        req.req() & ((1 << super::super::put::ROUND_SHIFT) - 1),
                        shard,
                    ));
                    let reply = stores[(to.0 - 1) as usize].handle(req);
                    for (_, a) in c.step(now, to, reply, &mut out) {
                        assert!(matches!(a, Ok(Answer::Put(_))), "{a:?}");
                        answered += 1;
                    }
                }
            }
        }
        assert_eq!(answered, 60);
        // No id was used by two shards.
        let ids: std::collections::BTreeSet<u64> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), seen.len());
        assert_eq!(ids.len(), 60);
        // Hinted handoff's and scans' ids are the lead's.
        assert_eq!(shard_of_request_id(COORDINATOR_REQ_LIMIT + 5, shards), 0);
        assert_eq!(shard_of_request_id(7, 1), 0);
    }

    #[test]
    fn a_shards_request_ids_wrap_within_its_own_ids() {
        let limit = 1u64 << super::super::put::ROUND_SHIFT;
        for (shard, shards) in [(0, 1), (0, 4), (3, 4), (1, 7)] {
            let mut c: Coordinator<()> = coordinator();
            c.share_request_ids(shard, shards);
            let first = c.next_req;
            assert_eq!(first % shards as u64, shard as u64);
            assert_ne!(first, 0);
            for from in [0, 1, limit - 3, limit - 1, limit, limit + 2] {
                let id = c.own_id_from(from);
                assert!(id > 0 && id < limit, "{id} from {from}");
                assert_eq!(id % shards as u64, shard as u64, "{id} from {from}");
                assert!(
                    id >= from || from + shards as u64 > limit - 1,
                    "{id} from {from}"
                );
            }
        }
    }

    #[test]
    fn a_put_and_a_get_through_the_coordinator() {
        let stores: Vec<ReplicaStore> = (1..=3)
            .map(|n| ReplicaStore::open(NodeId(n), Arc::new(MemoryEngine::new()), 10, 10).unwrap())
            .collect();
        let mut c: Coordinator<&'static str> = coordinator();
        c.set_ring(ring(3));
        let now = Instant::now();
        let mut out = Outbox::new();
        let put = ClientOp::Put {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            payload: Payload::Value(b"v".to_vec()),
            context: CausalContext::empty(),
            options: RequestOptions::default(),
        };
        assert!(c.start(now, 1_000, "put", put, &mut out).is_none());
        let mut answers = Vec::new();
        while let Some((to, req)) = out.pop() {
            let reply = stores[(to.0 - 1) as usize].handle(req);
            answers.extend(c.step(now, to, reply, &mut out));
        }
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].0, "put");
        let Ok(Answer::Put(p)) = &answers[0].1 else {
            panic!("{answers:?}")
        };
        assert_eq!(p.receipt.answered.len(), 2, "answered at w = 2");
        assert_eq!(p.receipt.asked.len(), 3);
        assert_eq!(p.object.timestamp().unwrap().physical_ms, 1_000);
        assert_eq!(c.in_flight(), 0);

        let get = ClientOp::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                r: Some(Consistency::All),
                ..RequestOptions::default()
            },
        };
        assert!(c.start(now, 1_001, "get", get, &mut out).is_none());
        let mut answers = Vec::new();
        while let Some((to, req)) = out.pop() {
            let reply = stores[(to.0 - 1) as usize].handle(req);
            answers.extend(c.step(now, to, reply, &mut out));
        }
        let Ok(Answer::Got(g)) = &answers[0].1 else {
            panic!("{answers:?}")
        };
        assert_eq!(g.object.as_ref().unwrap().siblings().len(), 1);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn a_local_target_coordinates_the_write() {
        let ring = ring(5);
        for key in 0..40 {
            let key = format!("k{key}").into_bytes();
            let list = ring.preference_list(key_token(b"b", &key), 3);
            // Ask through each replica: it must coordinate itself.
            for &me in &list {
                let mut c: Coordinator<()> =
                    Coordinator::new(me, BucketProps::default(), Hlc::new(Duration::from_secs(1)));
                c.set_ring(Arc::clone(&ring));
                let mut out = Outbox::new();
                let put = ClientOp::Put {
                    bucket: b"b".to_vec(),
                    key: key.clone(),
                    payload: Payload::Value(b"v".to_vec()),
                    context: CausalContext::empty(),
                    options: RequestOptions::default(),
                };
                assert!(c.start(Instant::now(), 1, (), put, &mut out).is_none());
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].0, me);
                assert!(matches!(out[0].1, ReplicaRequest::Coordinate { .. }));
            }
            // Through a node that holds no replica: the first primary.
            let outsider = (1..=5).map(NodeId).find(|n| !list.contains(n)).unwrap();
            let mut c: Coordinator<()> = Coordinator::new(
                outsider,
                BucketProps::default(),
                Hlc::new(Duration::from_secs(1)),
            );
            c.set_ring(Arc::clone(&ring));
            let mut out = Outbox::new();
            let put = ClientOp::Put {
                bucket: b"b".to_vec(),
                key: key.clone(),
                payload: Payload::Value(b"v".to_vec()),
                context: CausalContext::empty(),
                options: RequestOptions::default(),
            };
            assert!(c.start(Instant::now(), 1, (), put, &mut out).is_none());
            assert_eq!(out[0].0, list[0]);
        }
    }

    #[test]
    fn member_events_decide_who_is_routed_around() {
        use crate::membership::MemberEvent;
        let mut c: Coordinator<()> = coordinator();
        let suspect = |n| MemberEvent::Suspect {
            node: NodeId(n),
            incarnation: 0,
        };
        assert!(c.on_member_event(&suspect(2)));
        assert!(!c.on_member_event(&MemberEvent::Down {
            node: NodeId(2),
            incarnation: 0
        }));
        assert!(
            !c.on_member_event(&suspect(1)),
            "never routes around itself"
        );
        assert!(!c.is_up_peer(NodeId(2)) && !c.is_up_peer(NodeId(1)));
        assert!(c.is_up_peer(NodeId(3)));
        assert!(c.on_member_event(&MemberEvent::Up {
            node: NodeId(2),
            addr: "n2".into(),
            incarnation: 1
        }));
        assert!(c.is_up_peer(NodeId(2)) && c.down().is_empty());
    }

    #[test]
    fn requests_carry_the_fence_of_the_ring_state_they_were_routed_by() {
        let mut c: Coordinator<u32> = coordinator();
        let old = RingState::settled((*ring(3)).clone());
        c.set_ring_state(Arc::new(old.clone()));
        let now = Instant::now();
        let mut out = Outbox::new();
        let op = put(
            b"b",
            b"k",
            Payload::Value(b"v".to_vec()),
            CausalContext::empty(),
        );
        assert!(c.start(now, 1, 7, op, &mut out).is_none());
        assert!(!out.is_empty());
        // A newer state arrives while the put is in flight: what it sends
        // still says the old state, never the new one.
        let newer = RingState::settled((*ring(4)).clone());
        assert!(newer.fence() > old.fence());
        c.set_ring_state(Arc::new(newer.clone()));
        for (_, request) in &out {
            assert_eq!(c.fence_of(request), old.fence());
        }
        // A request whose machine is gone gets the lowest fence, which
        // any replica that knows a ring refuses.
        let gone = ReplicaRequest::Read {
            req: 999,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        };
        assert_eq!(c.fence_of(&gone), RingFence::default());
        assert!(RingFence::default() < old.fence());
        // A request started now goes by the new state.
        let mut out = Outbox::new();
        let op = put(
            b"b",
            b"j",
            Payload::Value(b"v".to_vec()),
            CausalContext::empty(),
        );
        assert!(c.start(now, 2, 8, op, &mut out).is_none());
        assert!(out.iter().all(|(_, r)| c.fence_of(r) == newer.fence()));
    }

    #[test]
    fn a_read_repair_sent_as_the_get_finishes_carries_its_fence() {
        let stores: Vec<ReplicaStore> = (1..=3)
            .map(|n| ReplicaStore::open(NodeId(n), Arc::new(MemoryEngine::new()), 10, 10).unwrap())
            .collect();
        let mut c: Coordinator<u32> = coordinator();
        c.set_ring(ring(3));
        let fence = RingState::settled((*ring(3)).clone()).fence();
        // Stored on replicas 1 and 2 only: the get repairs replica 3 once
        // every replica has answered, after its own answer.
        let stored = stores[0].handle(ReplicaRequest::Coordinate {
            req: 1,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Value(b"v".to_vec()),
                timestamp: Timestamp::from_ms(5),
                op: None,
                base: None,
            },
            policy: crate::version::ConflictPolicy::Siblings,
            hint_for: None,
        });
        let ReplicaReply::Coordinated {
            result: Ok(object), ..
        } = stored
        else {
            panic!("{stored:?}")
        };
        stores[1].handle(ReplicaRequest::Merge {
            req: 2,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            object,
            policy: crate::version::ConflictPolicy::Siblings,
            hint_for: None,
        });
        let now = Instant::now();
        let mut out = Outbox::new();
        let get = ClientOp::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions::default(),
        };
        assert!(c.start(now, 10, 1, get, &mut out).is_none());
        // Each send stamped right after the call that made it, as the
        // coordinator role does.
        let stamp = |c: &Coordinator<u32>, out: &mut Outbox| -> Vec<_> {
            out.drain(..)
                .map(|(to, r)| {
                    let f = c.fence_of(&r);
                    (to, r, f)
                })
                .collect()
        };
        let mut queue: std::collections::VecDeque<_> = stamp(&c, &mut out).into();
        let mut repairs = 0;
        while let Some((to, request, stamped)) = queue.pop_front() {
            assert_eq!(stamped, fence, "{request:?}");
            repairs += usize::from(matches!(request, ReplicaRequest::Merge { .. }));
            let reply = stores[(to.0 - 1) as usize].handle(request);
            c.step(now, to, reply, &mut out);
            queue.extend(stamp(&c, &mut out));
        }
        assert_eq!(repairs, 1, "replica 3 repaired");
        assert_eq!(c.in_flight(), 0, "the get finished");
    }

    #[test]
    fn a_hint_goes_to_its_owner_while_it_replicates_the_key_else_to_a_replica() {
        let mut c: Coordinator<u32> = coordinator();
        let four = ring(4);
        c.set_ring(Arc::clone(&four));
        // A key that node 4 replicates (3 of 4 nodes do).
        let key = (0..100u32)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| {
                four.preference_list(key_token(b"b", k), 3)
                    .contains(&NodeId(4))
            })
            .unwrap();
        assert_eq!(c.hint_destination(NodeId(4), b"b", &key), Some(NodeId(4)));
        // Down: the hint waits for it.
        c.set_down([NodeId(4)].into_iter().collect());
        assert_eq!(c.hint_destination(NodeId(4), b"b", &key), None);
        // Node 4 leaves: the target ring no longer has it, so its hints
        // go to the key's first replica that is up, whether or not the
        // leaver is.
        let target = crate::ring::claim_leave(&four, NodeId(4)).unwrap();
        let state = RingState::settled((*four).clone())
            .begin(crate::ring::Change::Leave(NodeId(4)), target.clone(), 3)
            .unwrap();
        c.set_ring_state(Arc::new(state));
        let first = target.preference_list(key_token(b"b", &key), 3)[0];
        for down in [vec![NodeId(4)], vec![]] {
            c.set_down(down.into_iter().collect());
            assert_eq!(c.hint_destination(NodeId(4), b"b", &key), Some(first));
        }
        // A node that was never a member: the same.
        assert_eq!(c.hint_destination(NodeId(9), b"b", &key), Some(first));
    }

    #[test]
    fn impossible_requests_answer_at_once() {
        let mut c: Coordinator<u32> = coordinator();
        c.set_ring(ring(3));
        let mut out = Outbox::new();
        let now = Instant::now();
        let get = |r| ClientOp::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                r: Some(r),
                ..RequestOptions::default()
            },
        };
        let (tok, res) = c
            .start(now, 0, 7, get(Consistency::Count(4)), &mut out)
            .unwrap();
        assert_eq!(tok, 7);
        assert!(matches!(res, Err(Error::InvalidInput(_))));
        c.set_down([NodeId(2)].into_iter().collect());
        let all = ClientOp::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                r: Some(Consistency::All),
                sloppy_quorum: Some(false),
                ..RequestOptions::default()
            },
        };
        let (_, res) = c.start(now, 0, 8, all, &mut out).unwrap();
        assert!(matches!(
            res,
            Err(Error::Unavailable {
                needed: 3,
                got: 2,
                ..
            })
        ));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn silence_times_out_on_tick() {
        let mut c: Coordinator<u32> = coordinator();
        c.set_ring(ring(3));
        let mut out = Outbox::new();
        let now = Instant::now();
        let get = ClientOp::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                timeout: Some(Duration::from_millis(100)),
                ..RequestOptions::default()
            },
        };
        assert!(c.start(now, 0, 1, get, &mut out).is_none());
        assert_eq!(c.next_deadline(), Some(now + Duration::from_millis(100)));
        assert!(c.tick(now, &mut out).is_empty());
        let done = c.tick(now + Duration::from_millis(100), &mut out);
        assert!(matches!(done[0].1, Err(Error::QuorumTimeout { .. })));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn while_a_range_moves_writes_reach_both_rings_and_reads_the_old() {
        use crate::ring::{Change, RingState};
        let old = ring(4);
        let target = claim_join(&old, NodeId(5), 16).unwrap();
        let state = RingState::settled((*old).clone())
            .begin(Change::Join(NodeId(5)), target.clone(), 3)
            .unwrap();
        let mut c: Coordinator<&'static str> = coordinator();
        c.set_ring_state(Arc::new(state.clone()));
        assert_eq!(c.members().len(), 5, "the joiner is a member to gossip to");
        // A key whose replicas change, and one whose do not.
        let (mut moving, mut still) = (None, None);
        for i in 0..10_000u32 {
            let key = i.to_be_bytes().to_vec();
            let t = key_token(b"b", &key);
            let changes = old.preference_list(t, 3) != target.preference_list(t, 3);
            match changes {
                true if moving.is_none() => moving = Some(key),
                false if still.is_none() => still = Some(key),
                _ => {}
            }
        }
        let (moving, still) = (moving.unwrap(), still.unwrap());
        let t = key_token(b"b", &moving);
        let nodes = |ts: &[Target]| ts.iter().map(|t| t.node).collect::<Vec<_>>();
        assert_eq!(
            nodes(&c.targets(b"b", &moving, false)),
            old.preference_list(t, 3),
            "reads use the old ring"
        );
        let (targets, quorums) = c.write_targets(b"b", &moving, false);
        assert_eq!(
            quorums,
            vec![old.preference_list(t, 3), target.preference_list(t, 3)]
        );
        assert_eq!(targets.len(), 4, "the old three and the joiner");
        assert!(nodes(&targets).contains(&NodeId(5)));
        // A key whose range does not move: both rings name the same three,
        // so the two quorums are one (writes reach both rings while any
        // change is pending: it may still be replaced by another).
        let (targets, quorums) = c.write_targets(b"b", &still, false);
        assert_eq!(quorums.len(), 2);
        let mut a = quorums[0].clone();
        let mut b = quorums[1].clone();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(targets.len(), 3);

        // Every move done: the change is in force and routing follows it.
        let mut done = state;
        for i in 0..done.pending.as_ref().unwrap().moves(&done.ring).len() {
            done.mark_done(i as u32);
        }
        c.set_ring_state(Arc::new(done));
        assert_eq!(c.ring(), &target);
        assert_eq!(
            nodes(&c.targets(b"b", &moving, false)),
            target.preference_list(t, 3)
        );
        assert!(c.write_targets(b"b", &moving, false).1.is_empty());
    }

    #[test]
    fn during_a_change_a_sloppy_write_counts_only_primaries_and_hinted_fallbacks() {
        // Every node counted towards a ring's quorum is a primary of that
        // ring, or a fallback holding a hint for one of its primaries.
        // Before, a primary of the target standing in for a down primary of
        // the ring in force was sent no hint (it stored the object as its
        // own) yet counted for the ring in force (seed 3018187).
        use crate::ring::{Change, RingState};
        let old = ring(4);
        let target = claim_join(&old, NodeId(5), 16).unwrap();
        let state = RingState::settled((*old).clone())
            .begin(Change::Join(NodeId(5)), target.clone(), 3)
            .unwrap();
        let mut checked = 0;
        for down in 2..=5u64 {
            let mut c: Coordinator<&'static str> = coordinator();
            c.set_ring_state(Arc::new(state.clone()));
            c.on_member_event(&crate::membership::MemberEvent::Down {
                node: NodeId(down),
                incarnation: 0,
            });
            for i in 0..300u32 {
                let key = i.to_be_bytes().to_vec();
                let t = key_token(b"b", &key);
                let (targets, quorums) = c.write_targets(b"b", &key, true);
                let rings = [old.preference_list(t, 3), target.preference_list(t, 3)];
                for (group, primaries) in quorums.iter().zip(&rings) {
                    for node in group {
                        let sent = targets.iter().find(|x| x.node == *node).unwrap();
                        let ok = match sent.hint_for {
                            None => primaries.contains(node),
                            Some(owner) => primaries.contains(&owner),
                        };
                        assert!(
                            ok,
                            "key {i}, n{down} down: {node} counted for {primaries:?} as {sent:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 0);
    }

    /// A coordinator for node 1 of a three-node ring, and the three
    /// nodes' replica stores.
    fn three() -> (Coordinator<u32>, Vec<ReplicaStore>) {
        let stores = (1..=3)
            .map(|n| ReplicaStore::open(NodeId(n), Arc::new(MemoryEngine::new()), 10, 10).unwrap())
            .collect();
        let mut c = coordinator();
        c.set_ring(ring(3));
        (c, stores)
    }

    /// Starts `op` and delivers every message until nothing is left;
    /// the answer.
    fn run(c: &mut Coordinator<u32>, stores: &[ReplicaStore], op: ClientOp) -> Result<Answer> {
        let now = Instant::now();
        let mut out = Outbox::new();
        let mut answers: Vec<(u32, Result<Answer>)> =
            c.start(now, 1_000, 0, op, &mut out).into_iter().collect();
        while let Some((to, req)) = out.pop() {
            let reply = stores[(to.0 - 1) as usize].handle(req);
            answers.extend(c.step(now, to, reply, &mut out));
        }
        assert_eq!(answers.len(), 1, "one answer: {answers:?}");
        answers.pop().unwrap().1
    }

    fn counter_bucket(c: &mut Coordinator<u32>, bucket: &[u8], kind: crate::crdt::CrdtKind) {
        let props = BucketProps {
            policy: crate::version::ConflictPolicy::Crdt(kind),
            ..BucketProps::default()
        };
        c.set_bucket(bucket.to_vec(), props, 1).unwrap();
    }

    fn put(bucket: &[u8], key: &[u8], payload: Payload, context: CausalContext) -> ClientOp {
        ClientOp::Put {
            bucket: bucket.to_vec(),
            key: key.to_vec(),
            payload,
            context,
            options: RequestOptions::default(),
        }
    }

    fn add(bucket: &[u8], by: i64) -> ClientOp {
        ClientOp::Update {
            bucket: bucket.to_vec(),
            key: b"k".to_vec(),
            op: crate::crdt::CrdtOp::Add(by),
            options: RequestOptions {
                w: Some(Consistency::All),
                ..RequestOptions::default()
            },
        }
    }

    /// The value of `bucket`/`k` in each store, as a PN-counter.
    fn counters(stores: &[ReplicaStore], bucket: &[u8]) -> Vec<i128> {
        use crate::crdt::{CrdtKind, CrdtValue};
        stores
            .iter()
            .map(|s| {
                let o = s.read(bucket, b"k").unwrap().unwrap();
                let values = o.siblings().iter().filter_map(|s| s.payload.value());
                let state = CrdtKind::PnCounter.join(values, 1 << 20).unwrap();
                match CrdtKind::PnCounter.value(&state, 1 << 20).unwrap() {
                    CrdtValue::Counter(v) => v,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    /// Issue [9] A4: a plain put into a counter bucket was stored, and
    /// every later read and add of the key failed.
    #[test]
    fn a_plain_value_never_goes_into_a_crdt_bucket() {
        use crate::crdt::CrdtKind;
        let (mut c, stores) = three();
        counter_bucket(&mut c, b"c", CrdtKind::PnCounter);
        let mut out = Outbox::new();
        let value = put(
            b"c",
            b"k",
            Payload::Value(b"7".to_vec()),
            CausalContext::empty(),
        );
        let (_, res) = c.start(Instant::now(), 1, 1, value, &mut out).unwrap();
        assert!(
            matches!(&res, Err(Error::InvalidInput(m)) if m.contains("PnCounter")),
            "{res:?}"
        );
        // A blind delete would remove nothing: refused too.
        let blind = put(b"c", b"k", Payload::Tombstone, CausalContext::empty());
        let (_, res) = c.start(Instant::now(), 1, 2, blind, &mut out).unwrap();
        assert!(matches!(res, Err(Error::InvalidInput(_))), "{res:?}");
        assert!(out.is_empty(), "nothing was sent");
        assert_eq!(c.in_flight(), 0);
        // Updates of the right kind work; of the wrong kind are refused.
        assert!(run(&mut c, &stores, add(b"c", 5)).is_ok());
        let set_add = ClientOp::Update {
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            op: crate::crdt::CrdtOp::SetAdd(vec![serde_bytes::ByteBuf::from(b"x".to_vec())]),
            options: RequestOptions::default(),
        };
        assert!(matches!(
            c.start(Instant::now(), 1, 3, set_add, &mut out),
            Some((_, Err(Error::InvalidInput(_))))
        ));
        // A delete with the context of a read removes what that read saw.
        let Ok(Answer::Put(p)) = run(&mut c, &stores, add(b"c", 1)) else {
            panic!()
        };
        let delete = put(b"c", b"k", Payload::Tombstone, p.object.context());
        assert!(run(&mut c, &stores, delete).is_ok());
        assert!(run(&mut c, &stores, add(b"c", 2)).is_ok());
        assert_eq!(counters(&stores, b"c"), vec![2, 2, 2]);
    }

    /// A counter deleted at QUORUM on two of three replicas, then added to
    /// through the third, which the delete had not reached yet: the add
    /// started from the third replica's own state (the deleted 5), its
    /// result superseded the tombstone, and the delete was undone on every
    /// replica (seen once in the FFI suite as 7 where 2 was due). The
    /// update now reads at its own level first.
    #[test]
    fn an_update_starts_from_what_its_level_acknowledged_a_delete_included() {
        use crate::crdt::{CrdtKind, CrdtOp};
        use crate::version::ConflictPolicy;
        let (mut c, stores) = three();
        counter_bucket(&mut c, b"c", CrdtKind::PnCounter);
        let Ok(Answer::Put(p)) = run(&mut c, &stores, add(b"c", 5)) else {
            panic!()
        };
        assert_eq!(counters(&stores, b"c"), vec![5, 5, 5]);
        // The delete, coordinated by node 2 and merged by node 3 only: a
        // QUORUM delete acknowledged while its copy to node 1 is in flight.
        let policy = ConflictPolicy::Crdt(CrdtKind::PnCounter);
        let deleted = match stores[1].handle(ReplicaRequest::Coordinate {
            req: 1 << 40,
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: p.object.context(),
                payload: Payload::Tombstone,
                timestamp: Timestamp::from_ms(2_000),
                op: None,
                base: None,
            },
            policy: policy.clone(),
            hint_for: None,
        }) {
            ReplicaReply::Coordinated { result: Ok(o), .. } => o,
            other => panic!("{other:?}"),
        };
        let merged = stores[2].handle(ReplicaRequest::Merge {
            req: 1 << 40,
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            object: deleted,
            policy,
            hint_for: None,
        });
        assert!(matches!(
            merged,
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
        // Node 1 (this coordinator's own replica, so the add's coordinating
        // one) still holds 5.
        let quorum = |by: i64| ClientOp::Update {
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            op: CrdtOp::Add(by),
            options: RequestOptions {
                w: Some(Consistency::Quorum),
                ..RequestOptions::default()
            },
        };
        let Ok(Answer::Put(p)) = run(&mut c, &stores, quorum(2)) else {
            panic!()
        };
        assert_eq!(
            CrdtKind::PnCounter
                .value(p.object.siblings()[0].payload.value().unwrap(), 1 << 20)
                .unwrap(),
            crate::crdt::CrdtValue::Counter(2)
        );
        assert_eq!(counters(&stores, b"c"), vec![2, 2, 2]);

        // A read that cannot reach its level fails the update, and
        // nothing is sent, so nothing is written.
        c.set_down([NodeId(2), NodeId(3)].into_iter().collect());
        let strict = ClientOp::Update {
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            op: CrdtOp::Add(1),
            options: RequestOptions {
                w: Some(Consistency::Quorum),
                sloppy_quorum: Some(false),
                ..RequestOptions::default()
            },
        };
        let mut out = Outbox::new();
        let res = c.start(Instant::now(), 3_000, 7, strict, &mut out);
        assert!(
            matches!(
                res,
                Some((
                    7,
                    Err(Error::Unavailable {
                        indefinite: false,
                        ..
                    })
                ))
            ),
            "{res:?}"
        );
        assert!(out.is_empty(), "nothing sent: {out:?}");
        assert_eq!(c.in_flight(), 0);
        assert_eq!(counters(&stores, b"c"), vec![2, 2, 2]);
    }

    /// Issue [9] A4: once set, a bucket's policy changes only to one its
    /// stored values can be read under.
    #[test]
    fn a_bucket_keeps_a_policy_its_values_can_be_read_under() {
        use crate::crdt::CrdtKind;
        use crate::version::ConflictPolicy as P;
        let (mut c, _) = three();
        let set = |c: &mut Coordinator<u32>, bucket: &[u8], policy: P| {
            let props = BucketProps {
                policy,
                ..BucketProps::default()
            };
            c.set_bucket(bucket.to_vec(), props, 1)
        };
        // A bucket never set takes any policy.
        assert!(set(&mut c, b"c", P::Crdt(CrdtKind::PnCounter)).is_ok());
        for refused in [
            P::Siblings,
            P::Lww,
            P::Script("s".into()),
            P::Crdt(CrdtKind::GCounter),
            P::Crdt(CrdtKind::OrSet),
        ] {
            let res = set(&mut c, b"c", refused.clone());
            assert!(matches!(res, Err(Error::InvalidInput(_))), "{refused:?}");
        }
        assert!(set(&mut c, b"c", P::Crdt(CrdtKind::PnCounter)).is_ok());
        assert_eq!(c.bucket(b"c").policy, P::Crdt(CrdtKind::PnCounter));
        assert!(set(&mut c, b"p", P::Siblings).is_ok());
        assert!(set(&mut c, b"p", P::Lww).is_ok());
        assert!(set(&mut c, b"p", P::Script("s".into())).is_ok());
        assert!(set(&mut c, b"p", P::Crdt(CrdtKind::OrSet)).is_err());
        assert!(set(&mut c, &[b'b'; MAX_BUCKET_BYTES + 1], P::Lww).is_err());
    }

    /// Issue [9] A5: an add that overflowed was answered InvalidArgument
    /// and stored anyway.
    #[test]
    fn a_counter_add_past_64_bits_is_refused_and_stored_nowhere() {
        use crate::crdt::CrdtKind;
        let (mut c, stores) = three();
        counter_bucket(&mut c, b"c", CrdtKind::PnCounter);
        assert!(run(&mut c, &stores, add(b"c", i64::MAX)).is_ok());
        let res = run(&mut c, &stores, add(b"c", 1));
        match &res {
            Err(e @ Error::InvalidInput(m)) => {
                assert!(!e.is_retryable());
                assert!(m.contains("64-bit") && m.contains("\"k\""), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(counters(&stores, b"c"), vec![i64::MAX as i128; 3]);
        // The other way, and a G-counter.
        assert!(run(&mut c, &stores, add(b"c", i64::MIN)).is_ok());
        assert!(run(&mut c, &stores, add(b"c", i64::MIN)).is_err());
        assert_eq!(counters(&stores, b"c"), vec![-1; 3]);
        counter_bucket(&mut c, b"g", CrdtKind::GCounter);
        assert!(run(&mut c, &stores, add(b"g", i64::MAX)).is_ok());
        assert!(run(&mut c, &stores, add(b"g", 1)).is_err());
    }

    /// Issue [9] A4: an add to a key whose stored value is not a state of
    /// the bucket's kind was answered Unavailable (retryable), after every
    /// replica had been asked.
    #[test]
    fn an_update_of_a_key_that_holds_no_state_is_refused_naming_it() {
        use crate::crdt::CrdtKind;
        let (mut c, stores) = three();
        // Written while the bucket had the default policy.
        let plain = put(
            b"c",
            b"k",
            Payload::Value(b"7".to_vec()),
            CausalContext::empty(),
        );
        assert!(run(&mut c, &stores, plain).is_ok());
        counter_bucket(&mut c, b"c", CrdtKind::PnCounter);
        let res = run(&mut c, &stores, add(b"c", 1));
        match &res {
            Err(e @ Error::InvalidInput(m)) => {
                assert!(!e.is_retryable());
                assert!(m.contains("\"k\"") && m.contains("PnCounter"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue [9] C11: a key of 65,535 bytes was answered Unavailable
    /// (retryable), and a value of 16 MiB - 150 bytes was stored on one
    /// replica and never copied (the replica message exceeded the frame).
    #[test]
    fn oversized_keys_buckets_and_values_are_refused_before_anything_is_sent() {
        let (mut c, stores) = three();
        let mut out = Outbox::new();
        let long_key = vec![b'k'; 65_535];
        let ops = [
            put(
                b"b",
                &long_key,
                Payload::Value(b"v".to_vec()),
                CausalContext::empty(),
            ),
            ClientOp::Get {
                bucket: b"b".to_vec(),
                key: long_key.clone(),
                options: RequestOptions::default(),
            },
            put(
                &[b'b'; MAX_BUCKET_BYTES + 1],
                b"k",
                Payload::Value(b"v".to_vec()),
                CausalContext::empty(),
            ),
            put(
                b"b",
                b"k",
                Payload::Value(vec![0; 16 * 1024 * 1024 - 150]),
                CausalContext::empty(),
            ),
        ];
        for op in ops {
            let (_, res) = c.start(Instant::now(), 1, 1, op, &mut out).unwrap();
            match res {
                Err(e @ Error::InvalidInput(_)) => assert!(!e.is_retryable()),
                other => panic!("{other:?}"),
            }
        }
        assert!(out.is_empty());
        // At the limits, it works.
        let big = put(
            &[b'b'; MAX_BUCKET_BYTES],
            &vec![b'k'; crate::replication::limits::MAX_KEY_BYTES],
            Payload::Value(vec![0; crate::replication::limits::MAX_VALUE_BYTES]),
            CausalContext::empty(),
        );
        assert!(run(&mut c, &stores, big).is_ok());
    }

    /// Issue [9] C11: a blind write beside a large sibling would make an
    /// object too large to copy to the other replicas: refused, not failed
    /// over to every replica and answered Unavailable.
    #[test]
    fn a_write_that_would_make_an_object_too_large_is_refused() {
        let (mut c, stores) = three();
        let half = crate::replication::limits::MAX_OBJECT_BYTES / 2 + 1;
        let blind = || {
            put(
                b"b",
                b"k",
                Payload::Value(vec![1; half]),
                CausalContext::empty(),
            )
        };
        let Ok(Answer::Put(first)) = run(&mut c, &stores, blind()) else {
            panic!()
        };
        let res = run(&mut c, &stores, blind());
        assert!(
            matches!(&res, Err(Error::InvalidInput(m)) if m.contains("context")),
            "{res:?}"
        );
        // With the context, the write replaces the sibling and fits.
        let replace = put(
            b"b",
            b"k",
            Payload::Value(vec![2; half]),
            first.object.context(),
        );
        assert!(run(&mut c, &stores, replace).is_ok());
        for s in &stores {
            assert_eq!(s.read(b"b", b"k").unwrap().unwrap().siblings().len(), 1);
        }
    }
}
