//! The coordinator role: every client request a node coordinates, the
//! hints it hands off, and the bucket table with its gossip, as one
//! machine with no I/O.
//!
//! It owns the request [`Coordinator`] (one put or get machine per
//! request) and the [`HintedHandoff`] machine, and decides what the
//! Coordinator actor used to decide in its handlers and timers:
//!
//! - **Requests.** A client operation is refused with `Shutdown` after
//!   [`CoordinatorRole::stop_accepting`], and with `QueueFull`
//!   (retryable) when `max_in_flight` requests are in flight; otherwise it
//!   starts a machine. Replica replies with request ids below
//!   [`COORDINATOR_REQ_LIMIT`] go to the request machines, the others to
//!   hinted handoff.
//! - **The hint round.** Every `handoff_interval` it expires deliveries
//!   unanswered for too long and asks the executor for the hints it holds
//!   for every owner not believed down ([`StoreWork::ReadHints`]); when
//!   they come back ([`Stored::Hints`]) it offers each owner still up a
//!   batch. Each hint an owner acknowledged is removed from the store
//!   ([`StoreWork::RemoveHint`]), only if it did not change meanwhile.
//!   One round at a time.
//! - **Bucket gossip.** Every gossip interval the whole table goes to one
//!   random peer believed up. A table received that changes anything is
//!   saved ([`StoreWork::SaveBuckets`]). A bucket set through this node is
//!   saved by the caller before it is acknowledged, then pushed to every
//!   peer up ([`CoordinatorRole::push_buckets`]).
//!
//! Effects come out as [`Effect`]s: messages (to other nodes, or to this
//! node's replica when addressed to itself), storage work for an executor
//! ([`execute`]: a blocking thread in a node, inline in the simulator),
//! and client answers. Time and randomness come in: `now`, and a seeded
//! generator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::IteratorRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::stored_buckets::BUCKETS_META;
use crate::codec;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::membership::MemberEvent;
use crate::replication::buckets::BucketEntry;
use crate::replication::coordinator::{Answer, ClientOp, Coordinator, COORDINATOR_REQ_LIMIT};
use crate::replication::handoff::HintedHandoff;
use crate::replication::replica::{Hint, ReplicaStore};
use crate::replication::scan::{ScanCursor, ScanPart, ScanRequest};
use crate::replication::{BucketProps, ReplicaConfig};
use crate::replication::{Outbox, ReplicaReply, ReplicationMsg};
use crate::ring::{RingFence, RingState, Token};
use crate::version::Object;

/// Something the role wants done: the crate's one [`crate::effect::Effect`]
/// shape, with replication messages (to other nodes, or to this node's
/// own replica when `to` is this node), [`StoreWork`] for the executor
/// (what it finds comes back through [`CoordinatorRole::on_stored`]), and
/// client answers ([`Answered`]).
pub type Effect<C> = crate::effect::Effect<ReplicationMsg, StoreWork, Answered<C>>;

/// A client's answer: the caller's token and what the request came to.
#[derive(Debug)]
pub struct Answered<C>(pub C, pub Result<Answer>);

/// Storage work the role asks of an executor ([`execute`]).
#[derive(Clone, Debug, PartialEq)]
pub enum StoreWork {
    /// Read up to `batch` hints for every owner this node holds hints for,
    /// except this node and the owners in `skip`.
    ReadHints {
        /// Owners believed down now.
        skip: BTreeSet<NodeId>,
        /// Hints per owner.
        batch: usize,
    },
    /// Remove a hint its owner stored, if it is still `delivered`.
    RemoveHint {
        /// The owner.
        owner: NodeId,
        /// The bucket.
        bucket: Vec<u8>,
        /// The key.
        key: Vec<u8>,
        /// What was delivered.
        delivered: Object,
    },
    /// Save the bucket table.
    SaveBuckets(Vec<BucketEntry>),
}

/// What storage work found, for the role.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// Hints per owner (owners with none left out).
    Hints(Vec<(NodeId, Vec<Hint>)>),
}

/// Carries out `work` on `store` (blocking) for node `me`. Failures are
/// logged: a hint not read is read at the next round, a hint not removed
/// is delivered again (merging is idempotent), a table not saved is saved
/// with the next change.
pub fn execute(store: &ReplicaStore, me: NodeId, work: StoreWork) -> Option<Stored> {
    match work {
        StoreWork::ReadHints { skip, batch } => {
            let owners = match store.hint_owners() {
                Ok(owners) => owners,
                Err(e) => {
                    crate::log::warn_every!(error = %e, "reading hint owners failed");
                    return Some(Stored::Hints(Vec::new()));
                }
            };
            let mut found = Vec::new();
            for owner in owners {
                if owner == me || skip.contains(&owner) {
                    continue;
                }
                match store.hints_for(owner, batch) {
                    Ok(hints) if !hints.is_empty() => found.push((owner, hints)),
                    Ok(_) => {}
                    Err(e) => crate::log::warn_every!(error = %e, %owner, "reading hints failed"),
                }
            }
            Some(Stored::Hints(found))
        }
        StoreWork::RemoveHint {
            owner,
            bucket,
            key,
            delivered,
        } => {
            if let Err(e) = store.remove_hint(owner, &bucket, &key, &delivered) {
                crate::log::warn_every!(error = %e, "removing a delivered hint failed");
            }
            None
        }
        StoreWork::SaveBuckets(entries) => {
            if let Err(e) = save_buckets(store, &entries) {
                crate::log::warn_every!(error = %e, "saving the bucket table failed");
            }
            None
        }
    }
}

/// Saves the bucket table in `store`'s metadata.
pub fn save_buckets(store: &ReplicaStore, entries: &[BucketEntry]) -> Result<()> {
    store.store_meta(BUCKETS_META, &codec::encode(&entries)?)
}

/// Request ids of scan pages start here, above hinted handoff's (which
/// start at [`COORDINATOR_REQ_LIMIT`] and count up by one), so that
/// replies are routed by id alone.
pub const SCAN_REQ_BASE: u64 = 3 << 62;

/// A client's scan page (see [`crate::replication::scan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanOp {
    /// The bucket.
    pub bucket: Vec<u8>,
    /// Where the page starts.
    pub cursor: ScanCursor,
    /// The most keys it holds, 1 to
    /// [`crate::replication::scan::MAX_SCAN_LIMIT`].
    pub limit: u32,
    /// Overrides of the bucket's `r`, `sloppy_quorum` and timeout.
    pub options: crate::replication::coordinator::RequestOptions,
}

/// What a [`CoordinatorRole`] starts from.
#[derive(Clone, Debug)]
pub struct RoleParts {
    /// This node.
    pub node: NodeId,
    /// Properties of buckets never set.
    pub bucket_defaults: BucketProps,
    /// The bucket table as stored.
    pub buckets: Vec<BucketEntry>,
    /// Handoff and limits.
    pub config: ReplicaConfig,
    /// How often the bucket table is gossiped.
    pub gossip_interval: Duration,
    /// Seeds the choice of gossip peers.
    pub rng_seed: u64,
    /// The hybrid logical clock's bound on peers' skew.
    pub max_clock_skew: Duration,
    /// The wall clock at the start, in ms since the Unix epoch: request
    /// ids start from it ([`Coordinator::start_requests_at`]).
    pub wall_ms: u64,
}

/// The role. See the module documentation.
pub struct CoordinatorRole<C> {
    node: NodeId,
    machine: Coordinator<C>,
    handoff: HintedHandoff,
    config: ReplicaConfig,
    gossip_interval: Duration,
    rng: ChaCha8Rng,
    next_handoff: Instant,
    next_gossip: Instant,
    hint_round: bool,
    accepting: bool,
    /// Whether this is the node's lead coordinator (shard 0, or the only
    /// one): only the lead runs hinted handoff, gossips and saves the
    /// bucket table ([`CoordinatorRole::set_shard`]).
    lead: bool,
    /// Scan pages in flight: caller, machine, and the fence they were
    /// routed by.
    scans: BTreeMap<u64, (C, ScanRequest, RingFence)>,
    next_scan: u64,
}

impl<C> std::fmt::Debug for CoordinatorRole<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorRole")
            .field("node", &self.node)
            .field("in_flight", &self.machine.in_flight())
            .finish_non_exhaustive()
    }
}

impl<C> CoordinatorRole<C> {
    /// The role of `parts.node`, its first hint round and gossip one
    /// interval after `now`.
    pub fn new(parts: RoleParts, now: Instant) -> Self {
        let mut machine = Coordinator::new(
            parts.node,
            parts.bucket_defaults,
            crate::version::Hlc::new(parts.max_clock_skew),
        );
        machine.merge_buckets(parts.buckets);
        machine.start_requests_at(parts.wall_ms);
        CoordinatorRole {
            node: parts.node,
            machine,
            handoff: HintedHandoff::new(
                COORDINATOR_REQ_LIMIT,
                parts.config.handoff_in_flight,
                parts.config.handoff_retry,
            ),
            next_handoff: now + parts.config.handoff_interval,
            next_gossip: now + parts.gossip_interval,
            config: parts.config,
            gossip_interval: parts.gossip_interval,
            rng: ChaCha8Rng::seed_from_u64(parts.rng_seed),
            hint_round: false,
            accepting: true,
            lead: true,
            scans: BTreeMap::new(),
            next_scan: SCAN_REQ_BASE,
        }
    }

    /// The request coordinator, for queries (bucket properties, targets,
    /// the ring, requests in flight).
    pub fn machine(&self) -> &Coordinator<C> {
        &self.machine
    }

    /// The request coordinator, to configure it (its witness, bugs put
    /// back on purpose).
    pub fn machine_mut(&mut self) -> &mut Coordinator<C> {
        &mut self.machine
    }

    /// Makes this role the coordinator of data shard `shard` of `shards`
    /// on its node (see `docs/architecture.md`, "Data shards"): its
    /// request ids are its own ([`Coordinator::share_request_ids`]), and
    /// unless it is shard 0 (the lead) it neither runs hinted handoff nor
    /// gossips or saves the bucket table, which the lead does for the
    /// node. Call before any request starts.
    pub fn set_shard(&mut self, shard: usize, shards: usize) {
        self.machine.share_request_ids(shard, shards);
        self.lead = shard == 0;
    }

    /// Whether this is the node's lead coordinator (see
    /// [`CoordinatorRole::set_shard`]).
    pub fn is_lead(&self) -> bool {
        self.lead
    }

    /// Refuses every new client request from now on (shutdown).
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Starts a client operation.
    pub fn start(
        &mut self,
        now: Instant,
        wall_ms: u64,
        client: C,
        op: ClientOp,
        out: &mut Vec<Effect<C>>,
    ) {
        if let Some(refusal) = self.refusal() {
            out.push(Effect::Emit(Answered(client, Err(refusal))));
            return;
        }
        let mut sends = Outbox::new();
        let done = self.machine.start(now, wall_ms, client, op, &mut sends);
        self.requests(sends, out);
        if let Some((client, answer)) = done {
            out.push(Effect::Emit(Answered(client, answer)));
        }
    }

    /// Why a new client request is refused now, if it is: the node is
    /// shutting down, or has `max_in_flight` requests already.
    fn refusal(&self) -> Option<Error> {
        if !self.accepting {
            return Some(Error::Shutdown);
        }
        if self.in_flight() >= self.config.max_in_flight {
            return Some(Error::QueueFull {
                peer: self.node,
                capacity: self.config.max_in_flight,
            });
        }
        None
    }

    /// Client requests in flight: puts, gets and scan pages.
    pub fn in_flight(&self) -> usize {
        self.machine.in_flight() + self.scans.len()
    }

    /// Starts a scan page: refused as [`CoordinatorRole::start`] refuses,
    /// and with `InvalidInput` for a limit outside 1 to
    /// [`crate::replication::scan::MAX_SCAN_LIMIT`] or a consistency above
    /// the bucket's `n`.
    pub fn start_scan(&mut self, now: Instant, client: C, op: ScanOp, out: &mut Vec<Effect<C>>) {
        use crate::replication::scan::MAX_SCAN_LIMIT;
        if let Some(refusal) = self.refusal() {
            out.push(Effect::Emit(Answered(client, Err(refusal))));
            return;
        }
        if op.limit == 0 || op.limit > MAX_SCAN_LIMIT {
            let e = Error::InvalidInput(format!(
                "a scan's limit must be 1 to {MAX_SCAN_LIMIT}, not {}",
                op.limit
            ));
            out.push(Effect::Emit(Answered(client, Err(e))));
            return;
        }
        if let Err(e) = crate::replication::limits::check_bucket_key(&op.bucket, &[]) {
            out.push(Effect::Emit(Answered(client, Err(e))));
            return;
        }
        let props = self.machine.bucket(&op.bucket).clone();
        let r = match self
            .machine
            .required(op.options.r.unwrap_or(props.r), props.n)
        {
            Ok(r) => r,
            Err(e) => {
                out.push(Effect::Emit(Answered(client, Err(e))));
                return;
            }
        };
        let sloppy = op.options.sloppy_quorum.unwrap_or(props.sloppy_quorum);
        let (targets, end, fence) =
            self.machine
                .scan_route(&op.bucket, Token(op.cursor.token), sloppy);
        let id = self.next_scan;
        self.next_scan = self.next_scan.checked_add(1).unwrap_or(SCAN_REQ_BASE);
        let part = ScanPart {
            bucket: op.bucket,
            from: op.cursor,
            end: end.0,
            limit: op.limit,
        };
        let mut sends = Outbox::new();
        let scan = ScanRequest::new(
            now,
            id,
            part,
            props.policy.clone(),
            targets,
            r,
            op.options.timeout.unwrap_or(props.timeout),
            &mut sends,
        );
        for (to, request) in sends {
            out.push(Effect::Send {
                to,
                msg: ReplicationMsg::Replicate {
                    request,
                    fence: Some(fence),
                },
            });
        }
        self.scans.insert(id, (client, scan, fence));
        self.collect_scan(id, out);
    }

    /// Hands on scan `id`'s answer if it has one, and forgets it.
    fn collect_scan(&mut self, id: u64, out: &mut Vec<Effect<C>>) {
        let finished = match self.scans.get_mut(&id) {
            Some((_, scan, _)) => scan.is_finished(),
            None => return,
        };
        if finished {
            if let Some((client, mut scan, _)) = self.scans.remove(&id) {
                if let Some(answer) = scan.take_reply() {
                    out.push(Effect::Emit(Answered(client, answer.map(Answer::Scanned))));
                }
            }
        }
    }

    /// A message for this role from `from`: a replica's reply, or a
    /// bucket table. Returns `false` (and does nothing) for any other.
    pub fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: ReplicationMsg,
        out: &mut Vec<Effect<C>>,
    ) -> bool {
        match msg {
            ReplicationMsg::Replicated { reply } => self.on_reply(now, from, reply, out),
            ReplicationMsg::Buckets { buckets } => {
                if !self.machine.merge_buckets(buckets).is_empty() && self.lead {
                    out.push(Effect::Store(StoreWork::SaveBuckets(
                        self.machine.buckets().entries(),
                    )));
                }
            }
            _ => return false,
        }
        true
    }

    /// A replica's reply (this node's own, or a peer's).
    pub fn on_reply(
        &mut self,
        now: Instant,
        from: NodeId,
        reply: ReplicaReply,
        out: &mut Vec<Effect<C>>,
    ) {
        if reply.req() >= SCAN_REQ_BASE {
            let id = reply.req();
            if let Some((_, scan, _)) = self.scans.get_mut(&id) {
                scan.step(from, reply);
                self.collect_scan(id, out);
            }
            return;
        }
        if reply.req() >= COORDINATOR_REQ_LIMIT {
            if let Some(d) = self.handoff.step(from, reply) {
                out.push(Effect::Store(StoreWork::RemoveHint {
                    owner: d.owner,
                    bucket: d.hint.bucket,
                    key: d.hint.key,
                    delivered: d.hint.object,
                }));
            }
            return;
        }
        let mut sends = Outbox::new();
        let done = self.machine.step(now, from, reply, &mut sends);
        self.requests(sends, out);
        out.extend(done.into_iter().map(|(c, a)| Effect::Emit(Answered(c, a))));
    }

    /// A membership event: SUSPECT, DOWN and LEFT nodes are routed around;
    /// an UP node gets its hints at the next round.
    pub fn on_member_event(&mut self, event: &MemberEvent) {
        self.machine.on_member_event(event);
    }

    /// A new ring state to route by.
    pub fn set_ring_state(&mut self, state: Arc<RingState>) {
        self.machine.set_ring_state(state);
    }

    /// Runs what is due at `now`: request deadlines, the hint round, the
    /// bucket gossip.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Effect<C>>) {
        if self.machine.in_flight() > 0 {
            let mut sends = Outbox::new();
            let done = self.machine.tick(now, &mut sends);
            self.requests(sends, out);
            out.extend(done.into_iter().map(|(c, a)| Effect::Emit(Answered(c, a))));
        }
        let due: Vec<u64> = self
            .scans
            .iter()
            .filter(|(_, (_, scan, _))| scan.deadline() <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some((_, scan, _)) = self.scans.get_mut(&id) {
                scan.tick(now);
            }
            self.collect_scan(id, out);
        }
        let handoff_due = now >= self.next_handoff;
        if handoff_due {
            self.next_handoff = now + self.config.handoff_interval;
        }
        if handoff_due && self.lead {
            let machine = &self.machine;
            self.handoff.tick(now, |n| machine.is_up_peer(n));
            if !self.hint_round {
                self.hint_round = true;
                // Hints for a down owner wait for it while it is a member;
                // those for a node no longer in the ring are read, and go
                // to the keys' current replicas.
                let members = self.machine.members();
                out.push(Effect::Store(StoreWork::ReadHints {
                    skip: self
                        .machine
                        .down()
                        .iter()
                        .copied()
                        .filter(|n| members.contains(n))
                        .collect(),
                    batch: self.config.handoff_batch,
                }));
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.gossip_interval;
            if self.lead && !self.machine.buckets().is_empty() {
                let peers = self.peers();
                if let Some(&peer) = peers.iter().choose(&mut self.rng) {
                    out.push(Effect::Send {
                        to: peer,
                        msg: ReplicationMsg::Buckets {
                            buckets: self.machine.buckets().entries(),
                        },
                    });
                }
            }
        }
    }

    /// When [`CoordinatorRole::tick`] next has something to do.
    pub fn next_wakeup(&self) -> Instant {
        let mut t = self.next_handoff.min(self.next_gossip);
        if let Some(d) = self.machine.next_deadline() {
            t = t.min(d);
        }
        if let Some(d) = self.scans.values().map(|(_, s, _)| s.deadline()).min() {
            t = t.min(d);
        }
        t
    }

    /// What storage work found.
    pub fn on_stored(&mut self, now: Instant, stored: Stored, out: &mut Vec<Effect<C>>) {
        match stored {
            Stored::Hints(found) => {
                self.hint_round = false;
                let mut sends = Outbox::new();
                for (owner, hints) in found {
                    let machine = &self.machine;
                    self.handoff.offer(
                        now,
                        owner,
                        hints,
                        (
                            |b: &[u8]| machine.bucket(b).policy.clone(),
                            |h: &Hint| machine.hint_destination(owner, &h.bucket, &h.key),
                        ),
                        &mut sends,
                    );
                }
                self.requests(sends, out);
            }
        }
    }

    /// Sends the bucket table to every peer believed up.
    pub fn push_buckets(&mut self, out: &mut Vec<Effect<C>>) {
        let entries = self.machine.buckets().entries();
        for peer in self.peers() {
            out.push(Effect::Send {
                to: peer,
                msg: ReplicationMsg::Buckets {
                    buckets: entries.clone(),
                },
            });
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        self.machine
            .members()
            .into_iter()
            .filter(|&n| self.machine.is_up_peer(n))
            .collect()
    }

    /// Sends replica requests: a client request's stamped with the fence
    /// of the ring state it was routed by, a hint's without one.
    fn requests(&self, sends: Outbox, out: &mut Vec<Effect<C>>) {
        for (to, request) in sends {
            let fence =
                (request.req() < COORDINATOR_REQ_LIMIT).then(|| self.machine.fence_of(&request));
            out.push(Effect::Send {
                to,
                msg: ReplicationMsg::Replicate { request, fence },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::replication::coordinator::RequestOptions;
    use crate::replication::ReplicaRequest;
    use crate::ring::{claim_join, key_token, Ring};
    use crate::storage::MemoryEngine;
    use crate::version::{CausalContext, ConflictPolicy, Payload, Timestamp};

    fn role() -> CoordinatorRole<u32> {
        CoordinatorRole::new(
            RoleParts {
                node: NodeId(1),
                bucket_defaults: BucketProps::default(),
                buckets: Vec::new(),
                config: ReplicaConfig::default(),
                gossip_interval: Duration::from_secs(1),
                rng_seed: 1,
                max_clock_skew: Duration::from_secs(1),
                wall_ms: 0,
            },
            Instant::now(),
        )
    }

    /// Runs `effects` against `stores` until no message is left; the
    /// answers.
    fn deliver(
        role: &mut CoordinatorRole<u32>,
        stores: &BTreeMap<NodeId, ReplicaStore>,
        mut effects: Vec<Effect<u32>>,
    ) -> Vec<(u32, Result<Answer>)> {
        let mut answers = Vec::new();
        while !effects.is_empty() {
            let mut next = Vec::new();
            for e in effects {
                match e {
                    Effect::Send {
                        to,
                        msg: ReplicationMsg::Replicate { request, fence },
                    } => {
                        let reply = stores[&to].handle_fenced(Some(NodeId(1)), request, fence);
                        role.on_reply(Instant::now(), to, reply, &mut next);
                    }
                    Effect::Emit(Answered(c, a)) => answers.push((c, a)),
                    _ => {}
                }
            }
            effects = next;
        }
        answers
    }

    fn scan(cursor: ScanCursor, limit: u32) -> ScanOp {
        ScanOp {
            bucket: b"b".to_vec(),
            cursor,
            limit,
            options: RequestOptions::default(),
        }
    }

    /// Five nodes of 16 virtual nodes, n = 3: each key on two of its
    /// three replicas, a fifth of them deleted on two (the third keeps it
    /// live). Page by page through the role, at several limits, every
    /// live key comes once and no deleted one.
    #[test]
    fn a_scan_walks_every_segment_of_the_ring_through_the_role() {
        let mut ring = Ring::empty();
        for id in 1..=5 {
            ring = claim_join(&ring, NodeId(id), 16).unwrap();
        }
        let stores: BTreeMap<NodeId, ReplicaStore> = (1..=5)
            .map(|n| {
                let s =
                    ReplicaStore::open(NodeId(n), Arc::new(MemoryEngine::new()), 10, 10).unwrap();
                (NodeId(n), s)
            })
            .collect();
        let merge = |node: NodeId, key: &[u8], object: &Object| {
            let reply = stores[&node].handle(ReplicaRequest::Merge {
                req: 1,
                bucket: b"b".to_vec(),
                key: key.to_vec(),
                object: object.clone(),
                policy: ConflictPolicy::Siblings,
                hint_for: None,
            });
            assert!(matches!(
                reply,
                crate::replication::ReplicaReply::Merged { result: Ok(()), .. }
            ));
        };
        let mut live = Vec::new();
        for i in 0..300u32 {
            let key = format!("k{i}").into_bytes();
            let token = key_token(b"b", &key);
            let replicas = ring.preference_list(token, 3);
            let mut o = Object::new();
            let ts = Timestamp::from_ms(1);
            o.put(
                NodeId(9),
                &CausalContext::empty(),
                Payload::Value(b"v".to_vec()),
                ts,
                10,
            )
            .unwrap();
            let skip = i as usize % 3;
            for (j, &node) in replicas.iter().enumerate() {
                if j != skip {
                    merge(node, &key, &o);
                }
            }
            if i % 5 == 0 {
                let mut d = o.clone();
                d.put(NodeId(9), &o.context(), Payload::Tombstone, ts, 10)
                    .unwrap();
                // On the replica that missed the write and one other.
                merge(replicas[skip], &key, &d);
                merge(replicas[(skip + 1) % 3], &key, &d);
            } else {
                live.push((token, key));
            }
        }
        live.sort();
        let live: Vec<Vec<u8>> = live.into_iter().map(|(_, k)| k).collect();
        let mut role = role();
        role.machine_mut().set_ring(Arc::new(ring));
        for limit in [1, 4, 25, 1000] {
            let mut cursor = Some(ScanCursor::start());
            let (mut keys, mut pages) = (Vec::new(), 0);
            while let Some(from) = cursor {
                pages += 1;
                let mut out = Vec::new();
                role.start_scan(Instant::now(), pages, scan(from, limit), &mut out);
                let answers = deliver(&mut role, &stores, out);
                assert_eq!(answers.len(), 1);
                let (c, answer) = answers.into_iter().next().unwrap();
                assert_eq!(c, pages);
                let Ok(Answer::Scanned(page)) = answer else {
                    panic!("{answer:?}")
                };
                assert!(page.keys.len() <= limit as usize);
                assert!(page.receipt.answered.len() >= 2, "{:?}", page.receipt);
                keys.extend(page.keys);
                cursor = page.next;
            }
            assert_eq!(keys, live, "limit {limit}");
            // At least one page per segment: 80 virtual nodes.
            assert!(pages >= 80, "limit {limit}: {pages} pages");
            assert_eq!(role.in_flight(), 0);
        }
        // Limits outside 1..=MAX_SCAN_LIMIT are refused at once.
        for limit in [0, crate::replication::scan::MAX_SCAN_LIMIT + 1] {
            let mut out = Vec::new();
            role.start_scan(
                Instant::now(),
                7,
                scan(ScanCursor::start(), limit),
                &mut out,
            );
            assert!(matches!(
                out.as_slice(),
                [Effect::Emit(Answered(7, Err(Error::InvalidInput(_))))]
            ));
        }
        // A node that does not answer: the page times out on tick.
        let mut out = Vec::new();
        let now = Instant::now();
        role.start_scan(now, 8, scan(ScanCursor::start(), 10), &mut out);
        assert_eq!(role.in_flight(), 1);
        let mut out = Vec::new();
        role.tick(now + Duration::from_secs(60), &mut out);
        assert!(out.iter().any(|e| matches!(
            e,
            Effect::Emit(Answered(8, Err(Error::QuorumTimeout { .. })))
        )));
        assert_eq!(role.in_flight(), 0);
    }
}
