//! What a replica does with a [`ReplicaRequest`]: versioned reads and
//! writes over a storage [`Engine`], and the hint store.
//!
//! # Key layout
//!
//! A replica keeps two key spaces in one engine, told apart by the first
//! byte:
//!
//! - `0x00 | token (8 bytes, big-endian) | bucket length (2, BE) | bucket | key`:
//!   objects. Ordered by token first, so every token range is one
//!   contiguous scan (handoff and anti-entropy read ranges, never the whole
//!   store).
//! - `0x01 | owner node id (8, BE) | the same token, bucket and key`: hints,
//!   objects held for a down primary. Grouped by owner, so handing off to
//!   one owner is one prefix scan.
//! - `0x02 | name`: the node's own metadata (the bucket table, the ring
//!   state, the actor lease), written and read whole by name.
//!
//! Values are CBOR-encoded [`Object`]s.
//!
//! # Actors: who mints a dot
//!
//! A coordinated write gets a dot `(actor, counter)`, and a CRDT update an
//! entry keyed by the same actor. A version vector says `{a: 5}` to mean
//! "a1 to a5, all of them", so an actor must only ever mint the next
//! counter *of the copy that holds all its earlier dots for that key*:
//! minting `a1` again for a key, after the copy that held `a1` was handed
//! off and deleted, makes every replica that has the first `a1` treat the
//! second as already seen and drop it (the lost writes of a fallback that
//! coordinated in two partitions, issue [9]).
//!
//! So an actor is not the node id. It is `node << 40 | epoch`
//! ([`actor_id`]), where the epoch is drawn from a node-wide counter that
//! never repeats: its high-water mark is leased in blocks and stored
//! durably ([`Engine::flush`]) before any epoch of the block is used, so a
//! restart, even one that lost the tail of the WAL, skips to a fresh
//! block; and it never starts below the wall clock's milliseconds since
//! 2020, so a store that lost the mark too (a memory engine, a wiped
//! directory) still starts past what it used. Each *slot* (the node's own copies, or the hints held for one
//! owner) uses one epoch until a copy that may hold that epoch's dots is
//! deleted (a hint handed off, a range dropped, a tombstone purged); the
//! deletion retires the slot's epoch under the same lock, so the next
//! write to the slot mints under a new actor whose history is empty. The
//! cost is one version-vector entry per (node, epoch) that wrote a key.
//!
//! # The guarantee
//!
//! A reply of success means the merged object is in the engine, as durable
//! as the engine's sync policy makes it. Every failure (a disk error, a full
//! hint store, too many siblings, a refusal of the request itself such as
//! a counter add past 64 bits) is a [`ReplicaError`] reply and stores
//! nothing.
//!
//! A damaged stored copy (its bytes fail the engine's checksum, or do not
//! decode as an object) is not this replica's answer to a read: the read
//! replies [`ReplicaReply::ReadCorrupt`], so that the get coordinator reads
//! from the other replicas and sends this one their merge; and a merge onto
//! a damaged copy (read repair, replication, handoff, anti-entropy) stores
//! the incoming object in its place instead of failing. The damaged bytes
//! held nothing readable, so nothing readable is lost.
//!
//! # Concurrency
//!
//! Read-modify-write of one key must not interleave with another on the
//! same key, or a merge could be lost. `ReplicaStore` serialises them with a
//! small table of striped locks keyed by the key's hash; different keys
//! proceed in parallel.
//!
//! # What it does not do
//!
//! It does not decide when to hand hints off (the handoff machine asks for
//! them with [`ReplicaStore::hints_for`]) or garbage-collect tombstones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::{ReplicaError, ReplicaReply, ReplicaRequest, Write};
use crate::codec;
use crate::crdt::UpdateError;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::ring::{key_token, RingFence, Token};
use crate::storage::{Engine, KeyRange, WriteBatch, MAX_VALUE_BYTES};
use crate::version::{ConflictPolicy, Dot, Object, Payload, Timestamp};

const OBJECT_SPACE: u8 = 0x00;
/// The first byte of every object's engine key (for range scans).
pub(super) const OBJECT_SPACE_TAG: u8 = OBJECT_SPACE;
const HINT_SPACE: u8 = 0x01;
const META_SPACE: u8 = 0x02;
const LOCK_STRIPES: usize = 256;

/// Bits of an actor id that hold the epoch; the node id sits above them.
const ACTOR_EPOCH_BITS: u32 = 40;
/// The largest node id that can mint dots: 2^24 - 1 (an actor id is the
/// node id above a 40-bit epoch).
pub const MAX_NODE_ID: u64 = (1 << (64 - ACTOR_EPOCH_BITS)) - 1;
/// Epochs leased per durable write of the high-water mark.
const ACTOR_LEASE: u64 = 1024;
/// The metadata record holding the actor high-water mark.
const ACTOR_LEASE_META: &str = "actor_lease";

/// The actor id of `node` in `epoch`: see the module docs. Epoch 0 is never
/// minted, so ids written before actors had epochs (plain node ids) never
/// collide with a new one.
pub fn actor_id(node: NodeId, epoch: u64) -> NodeId {
    NodeId((node.0 << ACTOR_EPOCH_BITS) | (epoch & ((1 << ACTOR_EPOCH_BITS) - 1)))
}

/// The node that minted under `actor` (for display): the inverse of
/// [`actor_id`]; a plain node id (epoch-less, older data) is its own node.
pub fn actor_node(actor: NodeId) -> NodeId {
    match actor.0 >> ACTOR_EPOCH_BITS {
        0 => actor,
        node => NodeId(node),
    }
}

/// The lowest epoch a store may start at now: milliseconds since
/// 2020-01-01 (2^40 of them last until 2054).
fn epoch_floor(clock: &impl crate::version::WallClock) -> u64 {
    const EPOCH_2020_MS: u64 = 1_577_836_800_000;
    clock.now_ms().saturating_sub(EPOCH_2020_MS) % (1 << ACTOR_EPOCH_BITS)
}

/// Which copies an actor mints for: the node's own (`None`), or the hints
/// held for one owner.
type Slot = Option<NodeId>;

/// The epochs in use, and the leased high-water mark.
#[derive(Debug, Default)]
struct Actors {
    /// The next epoch to hand out.
    next: u64,
    /// Epochs below this are covered by the stored lease.
    leased: u64,
    /// The actor each slot mints with now.
    slots: std::collections::HashMap<Slot, NodeId>,
}

/// The largest bucket name: [`crate::replication::limits::MAX_BUCKET_BYTES`] (its
/// length is stored in two bytes).
pub const MAX_BUCKET_BYTES: usize = crate::replication::limits::MAX_BUCKET_BYTES;

/// The engine key of an object: see the module docs.
///
/// ```
/// use ringkv::replication::replica::{object_key, parse_object_key};
/// let k = object_key(b"users", b"alice").unwrap();
/// let (token, bucket, key) = parse_object_key(&k).unwrap();
/// assert_eq!((bucket, key), (&b"users"[..], &b"alice"[..]));
/// assert_eq!(token, ringkv::key_token(b"users", b"alice"));
/// ```
pub fn object_key(bucket: &[u8], key: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(11 + bucket.len() + key.len());
    out.push(OBJECT_SPACE);
    push_body(&mut out, bucket, key)?;
    Ok(out)
}

/// The engine key range holding every object whose token is in
/// `[start, end]` (inclusive: a ring range ends at its vnode's token).
pub fn object_range(start: Token, end: Token) -> KeyRange {
    let mut lo = vec![OBJECT_SPACE];
    lo.extend_from_slice(&start.0.to_be_bytes());
    let hi = match end.0.checked_add(1) {
        Some(next) => {
            let mut hi = vec![OBJECT_SPACE];
            hi.extend_from_slice(&next.to_be_bytes());
            hi
        }
        None => vec![HINT_SPACE],
    };
    KeyRange::between(lo, hi)
}

/// Splits an object key into token, bucket and key.
pub fn parse_object_key(k: &[u8]) -> Result<(Token, &[u8], &[u8])> {
    match k.split_first() {
        Some((&OBJECT_SPACE, body)) => parse_body(body),
        _ => Err(Error::InvalidInput("not an object key".into())),
    }
}

fn hint_key(owner: NodeId, bucket: &[u8], key: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(19 + bucket.len() + key.len());
    out.push(HINT_SPACE);
    out.extend_from_slice(&owner.0.to_be_bytes());
    push_body(&mut out, bucket, key)?;
    Ok(out)
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META_SPACE];
    k.extend_from_slice(name.as_bytes());
    k
}

fn push_body(out: &mut Vec<u8>, bucket: &[u8], key: &[u8]) -> Result<()> {
    if bucket.len() > MAX_BUCKET_BYTES {
        return Err(Error::InvalidInput(format!(
            "bucket name of {} bytes exceeds the maximum of {MAX_BUCKET_BYTES}",
            bucket.len()
        )));
    }
    out.extend_from_slice(&key_token(bucket, key).0.to_be_bytes());
    out.extend_from_slice(&(bucket.len() as u16).to_be_bytes());
    out.extend_from_slice(bucket);
    out.extend_from_slice(key);
    Ok(())
}

fn parse_body(body: &[u8]) -> Result<(Token, &[u8], &[u8])> {
    let bad = || Error::InvalidInput("malformed stored key".into());
    let (token, rest) = body.split_first_chunk::<8>().ok_or_else(bad)?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(bad)?;
    let len = u16::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(bad());
    }
    let (bucket, key) = rest.split_at(len);
    Ok((Token(u64::from_be_bytes(*token)), bucket, key))
}

/// A hint held for a down primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The bucket.
    pub bucket: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
    /// The object to hand to the owner.
    pub object: Object,
}

/// How many coordinations a replica remembers to recognise duplicates.
pub const RECENT_COORDINATIONS: usize = 65_536;

/// A coordination's outcome at its replica.
struct Coordinated {
    /// The object as stored.
    object: Object,
    /// [`ReplicaReply::Coordinated::changed`].
    changed: Option<u64>,
}

/// The last [`RECENT_COORDINATIONS`] coordinations applied, by (coordinator,
/// request id): a duplicate delivery of one (a resent or duplicated frame)
/// is answered with the stored object instead of being applied again,
/// which for a CRDT update (a counter add) would count it twice.
/// Coordinators never reuse a request id, even across restarts
/// ([`super::coordinator::Coordinator::start_requests_at`]).
#[derive(Debug, Default)]
struct RecentCoordinations {
    order: std::collections::VecDeque<(NodeId, u64)>,
    /// Each one's outcome: applied (with the members a set op changed),
    /// or refused with this error.
    seen: std::collections::HashMap<(NodeId, u64), std::result::Result<Option<u64>, ReplicaError>>,
}

impl RecentCoordinations {
    fn get(&self, id: (NodeId, u64)) -> Option<&std::result::Result<Option<u64>, ReplicaError>> {
        self.seen.get(&id)
    }

    fn insert(
        &mut self,
        id: (NodeId, u64),
        outcome: std::result::Result<Option<u64>, ReplicaError>,
    ) {
        if self.seen.insert(id, outcome).is_none() {
            self.order.push_back(id);
            if self.order.len() > RECENT_COORDINATIONS {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

/// A node's replica: the engine, the node's identity for minting dots, and
/// the limits.
pub struct ReplicaStore {
    node: NodeId,
    engine: Arc<dyn Engine>,
    actors: Mutex<Actors>,
    witness: Arc<crate::version::Witness>,
    regressions: super::Regressions,
    /// Coordinations applied lately, to answer a duplicate without
    /// applying it twice.
    recent: Mutex<RecentCoordinations>,
    max_siblings: usize,
    max_hints: usize,
    hints: AtomicUsize,
    stripes: Vec<Mutex<()>>,
    /// The fence of the node's ring state ([`RingFence`]): client requests
    /// stamped with an older one are refused. Every fenced request holds
    /// the read side from its check until it is stored, so
    /// [`ReplicaStore::set_fence`], which takes the write side, returns
    /// only once every request admitted under the old fence is stored.
    fence: RwLock<Option<RingFence>>,
}

impl std::fmt::Debug for ReplicaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaStore")
            .field("node", &self.node)
            .field("hints", &self.hints.load(Ordering::Relaxed))
            .finish()
    }
}

impl ReplicaStore {
    /// A replica over `engine` for node `node`. Counts the hints already
    /// stored (a scan of the hint space) so the bound holds across restarts,
    /// and resumes the actor epochs past the stored lease. Refuses a node
    /// id above [`MAX_NODE_ID`].
    pub fn open(
        node: NodeId,
        engine: Arc<dyn Engine>,
        max_siblings: usize,
        max_hints: usize,
    ) -> Result<Self> {
        Self::open_with_clock(
            node,
            engine,
            max_siblings,
            max_hints,
            &crate::version::SystemClock,
        )
    }

    /// [`ReplicaStore::open`] with the wall clock that floors the actor
    /// epochs given (the simulator's virtual one).
    pub fn open_with_clock(
        node: NodeId,
        engine: Arc<dyn Engine>,
        max_siblings: usize,
        max_hints: usize,
        clock: &impl crate::version::WallClock,
    ) -> Result<Self> {
        if node.0 == 0 || node.0 > MAX_NODE_ID {
            return Err(Error::InvalidInput(format!(
                "node id {} is outside 1..={MAX_NODE_ID}",
                node.0
            )));
        }
        let leased = match engine.get(&meta_key(ACTOR_LEASE_META))? {
            Some(bytes) => codec::decode::<u64>(&bytes, 64)?,
            None => 0,
        };
        // Every epoch below the stored mark may have been used before a
        // crash: start past it. The mark can be missing although the node
        // minted before (a memory engine, a wiped or salvaged directory),
        // so never start below the wall clock's milliseconds since 2020
        // either: epochs are drawn far slower than one a millisecond, so
        // that floor is past every epoch a node of this id used, unless
        // the clock went back. Epoch 0 is never used.
        let start = leased.max(epoch_floor(clock)).max(1);
        let actors = Actors {
            next: start,
            leased: start,
            slots: Default::default(),
        };
        let mut count = 0;
        for item in engine.scan(KeyRange::prefix(vec![HINT_SPACE]))? {
            item?;
            count += 1;
        }
        Ok(ReplicaStore {
            node,
            engine,
            actors: Mutex::new(actors),
            witness: Arc::default(),
            regressions: super::Regressions::default(),
            recent: Mutex::default(),
            max_siblings,
            max_hints,
            hints: AtomicUsize::new(count),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            fence: RwLock::new(None),
        })
    }

    /// Raises the fence client requests are checked against to that of
    /// the node's ring state. Returns once every request admitted under
    /// the old fence is stored: a range scan that starts after this call
    /// sees all of them (what serving a move relies on, see
    /// [`RingFence`]). A fence lower than the one set is ignored.
    pub fn set_fence(&self, fence: RingFence) {
        let current = *self.fence.read().unwrap_or_else(|e| e.into_inner());
        if current >= Some(fence) {
            return;
        }
        let mut guard = self.fence.write().unwrap_or_else(|e| e.into_inner());
        *guard = (*guard).max(Some(fence));
    }

    /// The fence set last ([`ReplicaStore::set_fence`]); `None` before any.
    pub fn fence(&self) -> Option<RingFence> {
        *self.fence.read().unwrap_or_else(|e| e.into_inner())
    }

    /// [`ReplicaStore::handle_from`] for a client request routed by a ring
    /// state with `fence`: refused, with nothing stored or read, when this
    /// replica's ring state is newer (see [`RingFence`]). A request
    /// without a fence (hinted handoff) is served as it is.
    pub fn handle_fenced(
        &self,
        from: Option<NodeId>,
        request: ReplicaRequest,
        fence: Option<RingFence>,
    ) -> ReplicaReply {
        self.fenced(fence, |stale| self.serve(from, request, stale, None))
    }

    /// [`ReplicaStore::handle_fenced`] on the caller's thread, if memory
    /// holds the stored copy the request reads ([`Engine::get_in_memory`])
    /// and the engine takes a write at once ([`Engine::writes_at_once`]);
    /// otherwise the request is handed back untouched, nothing read or
    /// stored, for a thread that may wait on the disk. The copy is read
    /// under the key's lock and the serve goes on from it, so the read is
    /// not made twice. Point reads, coordinations and merges; a scan is
    /// always handed back.
    pub fn serve_in_place(
        &self,
        from: Option<NodeId>,
        request: ReplicaRequest,
        fence: Option<RingFence>,
    ) -> std::result::Result<ReplicaReply, Box<ReplicaRequest>> {
        let key = match &request {
            ReplicaRequest::Read { bucket, key, .. } => object_key(bucket, key),
            ReplicaRequest::Coordinate {
                bucket,
                key,
                hint_for,
                ..
            }
            | ReplicaRequest::Merge {
                bucket,
                key,
                hint_for,
                ..
            } => {
                if !self.engine.writes_at_once() {
                    return Err(Box::new(request));
                }
                self.stored_key(*hint_for, bucket, key)
            }
            ReplicaRequest::Scan { .. } => return Err(Box::new(request)),
        };
        // A key that cannot be formed: `serve` refuses it without a read.
        let Ok(key) = key else {
            return Ok(self.handle_fenced(from, request, fence));
        };
        self.fenced(fence, |stale| {
            let guard = self.lock(&key);
            match self.engine.get_in_memory(&key) {
                Some(raw) => {
                    let read = Preread { key, guard, raw };
                    Ok(self.serve(from, request, stale, Some(read)))
                }
                None => Err(Box::new(request)),
            }
        })
    }

    /// Runs `serve` with the refusal a request routed by `fence` gets
    /// (none when the fence is not older than this replica's), holding the
    /// fence's read lock throughout so that the fence cannot move under
    /// it. Taken before any key's lock: one order for every caller.
    fn fenced<T>(
        &self,
        fence: Option<RingFence>,
        serve: impl FnOnce(Option<ReplicaError>) -> T,
    ) -> T {
        let Some(theirs) = fence else {
            return serve(None);
        };
        let guard = self.fence.read().unwrap_or_else(|e| e.into_inner());
        let stale = match *guard {
            Some(mine) if mine > theirs && !self.regressions.unfenced_ring => {
                Some(ReplicaError::Failed(format!(
                    "this replica's ring state ({mine}) is newer than the coordinator's \
                     ({theirs}); the request counts once the coordinator has learned it"
                )))
            }
            _ => None,
        };
        let out = serve(stale);
        drop(guard);
        out
    }

    /// The key a coordination or merge for `bucket`/`key` reads and
    /// writes: its object's, or the hint's when it stands in for another
    /// node.
    fn stored_key(&self, hint_for: Option<NodeId>, bucket: &[u8], key: &[u8]) -> Result<Vec<u8>> {
        match hint_for.filter(|&owner| owner != self.node) {
            Some(owner) => hint_key(owner, bucket, key),
            None => object_key(bucket, key),
        }
    }

    /// Puts back bugs of earlier versions (see [`super::Regressions`]).
    pub fn set_regressions(&mut self, regressions: super::Regressions) {
        self.regressions = regressions;
    }

    /// Hints stored now.
    pub fn hint_count(&self) -> usize {
        self.hints.load(Ordering::Relaxed)
    }

    /// The actor `slot` mints with now, drawing a fresh epoch when it has
    /// none (first use since start, or its last epoch was retired). A new
    /// lease block is stored durably before any of its epochs is used.
    fn actor(&self, slot: Slot) -> Result<NodeId> {
        if self.regressions.bare_node_actor {
            return Ok(self.node);
        }
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&actor) = actors.slots.get(&slot) {
            return Ok(actor);
        }
        if actors.next >= 1 << ACTOR_EPOCH_BITS {
            return Err(Error::InvalidInput(format!(
                "node {} has used every actor epoch",
                self.node
            )));
        }
        if actors.next >= actors.leased {
            let leased = actors.next + ACTOR_LEASE;
            self.engine
                .put(&meta_key(ACTOR_LEASE_META), &codec::encode(&leased)?)?;
            self.engine.flush()?;
            actors.leased = leased;
        }
        let actor = actor_id(self.node, actors.next);
        actors.next += 1;
        actors.slots.insert(slot, actor);
        Ok(actor)
    }

    /// Retires `slot`'s epoch when `object`, about to be deleted, holds a
    /// dot of it. Call with the key's stripe lock held.
    fn retire_if_minted(&self, slot: Slot, object: &Object) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&actor) = actors.slots.get(&slot) {
            if object.context().0.get(actor) > 0 {
                actors.slots.remove(&slot);
            }
        }
    }

    /// Retires `slot`'s epoch unconditionally (a deletion that does not
    /// decode what it deletes).
    fn retire(&self, slot: Slot) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors.slots.remove(&slot);
    }

    /// The actor `slot` mints with now, if it has one (tests).
    #[cfg(test)]
    fn current_actor(&self, slot: Slot) -> Option<NodeId> {
        let actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors.slots.get(&slot).copied()
    }

    /// Every stripe lock, in order: holds off every read-modify-write
    /// while a batch of deletions runs.
    fn lock_all(&self) -> Vec<std::sync::MutexGuard<'_, ()>> {
        self.stripes
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// The newest timestamp this replica has been sent, for the node's
    /// clock to observe (`docs/data-model.md`).
    pub fn witness(&self) -> Arc<crate::version::Witness> {
        Arc::clone(&self.witness)
    }

    /// Serves one request. Never panics on what is stored: a corrupt object
    /// is an error reply.
    pub fn handle(&self, request: ReplicaRequest) -> ReplicaReply {
        self.handle_from(None, request)
    }

    /// [`ReplicaStore::handle`] for a request from coordinator `from`:
    /// a coordination it already applied (the same request id from the
    /// same coordinator) is answered with the object stored now and not
    /// applied again.
    pub fn handle_from(&self, from: Option<NodeId>, request: ReplicaRequest) -> ReplicaReply {
        self.serve(from, request, None, None)
    }

    /// Serves a request, or refuses it with `stale` (a ring fence's
    /// refusal) storing nothing. A coordination already applied is
    /// answered as applied even then: refusing it would tell the
    /// coordinator that nothing was stored, and it would ask another
    /// replica to apply the same write again. `read`: the stored copy of
    /// the request's key, read under its lock (see
    /// [`Self::serve_in_place`]); without it the serve reads it itself.
    fn serve<'a>(
        &'a self,
        from: Option<NodeId>,
        request: ReplicaRequest,
        stale: Option<ReplicaError>,
        read: Option<Preread<'a>>,
    ) -> ReplicaReply {
        if let Some(error) = stale.clone() {
            match request {
                ReplicaRequest::Coordinate { .. } => {}
                ReplicaRequest::Merge { req, .. } => {
                    return ReplicaReply::Merged {
                        req,
                        result: Err(error),
                    }
                }
                ReplicaRequest::Read { req, .. } => {
                    return ReplicaReply::Read {
                        req,
                        result: Err(error),
                    }
                }
                ReplicaRequest::Scan { req, .. } => {
                    return ReplicaReply::Scanned {
                        req,
                        result: Err(error),
                    }
                }
            }
        }
        match &request {
            ReplicaRequest::Coordinate { write, .. } => self.witness.note(write.timestamp),
            ReplicaRequest::Merge { object, .. } => {
                if let Some(ts) = object.timestamp() {
                    self.witness.note(ts);
                }
            }
            ReplicaRequest::Read { .. } | ReplicaRequest::Scan { .. } => {}
        }
        match request {
            ReplicaRequest::Coordinate {
                req,
                bucket,
                key,
                write,
                policy,
                hint_for,
            } => {
                let coordinated = self.coordinate(
                    from.map(|f| (f, req)),
                    (&bucket, &key),
                    (write, &policy),
                    hint_for,
                    stale,
                    read,
                );
                let changed = coordinated.as_ref().ok().and_then(|c| c.changed);
                ReplicaReply::Coordinated {
                    req,
                    result: coordinated.map(|c| c.object),
                    changed,
                }
            }
            ReplicaRequest::Merge {
                req,
                bucket,
                key,
                object,
                policy,
                hint_for,
            } => {
                let stored = match hint_for {
                    Some(owner) if owner != self.node => {
                        self.store_hint(owner, (&bucket, &key), &object, &policy, read)
                    }
                    _ => self.merge(&bucket, &key, &object, &policy, read),
                };
                ReplicaReply::Merged {
                    req,
                    result: stored.and_then(|winner| {
                        if self.regressions.unordered_lww {
                            return Ok(());
                        }
                        superseded(&object, winner, &policy)
                    }),
                }
            }
            ReplicaRequest::Read { req, bucket, key } => {
                match self.read_with(&bucket, &key, read) {
                    Err(e) if is_damage(&e) => ReplicaReply::ReadCorrupt {
                        req,
                        reason: e.to_string(),
                    },
                    result => ReplicaReply::Read {
                        req,
                        result: result.map_err(failed),
                    },
                }
            }
            ReplicaRequest::Scan { req, part } => ReplicaReply::Scanned {
                req,
                result: self
                    .scan_keys(&part, super::scan::MAX_SCAN_VISITED)
                    .map_err(failed),
            },
        }
    }

    /// The stored object of `bucket`/`key`.
    pub fn read(&self, bucket: &[u8], key: &[u8]) -> Result<Option<Object>> {
        self.load(&object_key(bucket, key)?)
    }

    /// [`Self::read`], from `read` when it holds this key's copy.
    fn read_with(
        &self,
        bucket: &[u8],
        key: &[u8],
        read: Option<Preread<'_>>,
    ) -> Result<Option<Object>> {
        let k = object_key(bucket, key)?;
        match read.and_then(|r| r.of(&k)) {
            Some((_guard, raw)) => decode_read(raw),
            None => self.load(&k),
        }
    }

    /// Applies a coordination, or refuses it with `stale` (see
    /// [`ReplicaStore::serve`]).
    fn coordinate<'a>(
        &'a self,
        id: Option<(NodeId, u64)>,
        (bucket, key): (&[u8], &[u8]),
        (write, policy): (Write, &ConflictPolicy),
        hint_for: Option<NodeId>,
        stale: Option<ReplicaError>,
        read: Option<Preread<'a>>,
    ) -> std::result::Result<Coordinated, ReplicaError> {
        let owner = hint_for.filter(|&o| o != self.node);
        let k = self.stored_key(hint_for, bucket, key).map_err(failed)?;
        let (_guard, stored) = self.locked_read(&k, read);
        // Checked under the key's lock, which the first delivery held
        // until it had answered: a duplicate gets the first delivery's
        // answer. Applying a duplicate of a refused coordination would be
        // wrong too: the coordinator took the refusal as "stored nothing"
        // and asked another replica, so the write would be applied twice
        // (a counter add counted twice; the simulator found it).
        let seen = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            id.and_then(|id| recent.get(id).cloned())
        };
        match seen {
            Some(Ok(changed)) => {
                return match decode_read(stored) {
                    Ok(Some(object)) => Ok(Coordinated { object, changed }),
                    _ => Err(ReplicaError::Indefinite(
                        "this coordination was applied here before, and its result can no \
                         longer be read"
                            .into(),
                    )),
                }
            }
            Some(Err(refused)) => return Err(refused),
            None => {}
        }
        let stored = decode_read(stored).map_err(failed);
        let result =
            self.apply_coordination(&k, owner, (bucket, key), (write, policy), (stored, stale));
        if let Some(id) = id {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.insert(id, result.as_ref().map(|c| c.changed).map_err(Clone::clone));
        }
        result
    }

    /// Applies a coordination not seen before to `stored`, the copy read
    /// under its key's lock (held).
    fn apply_coordination(
        &self,
        k: &[u8],
        owner: Option<NodeId>,
        (bucket, key): (&[u8], &[u8]),
        (write, policy): (Write, &ConflictPolicy),
        (stored, stale): (
            std::result::Result<Option<Object>, ReplicaError>,
            Option<ReplicaError>,
        ),
    ) -> std::result::Result<Coordinated, ReplicaError> {
        let stored = stored?;
        if let Some(error) = stale {
            return Err(error);
        }
        let new_hint = owner.is_some() && stored.is_none();
        let mut object = stored.unwrap_or_default();
        // What the coordinator's read returned for a CRDT update (see
        // `Write::base`): the update applies to it joined with what is
        // stored here, and the result replaces both.
        if let Some(base) = &write.base {
            policy.merge(&mut object, base);
        }
        // Read under the key's lock: a deletion that retires this slot's
        // epoch holds the same lock (see the module docs).
        let actor = self.actor(owner).map_err(failed)?;
        // Above every version stored here, so a write that replaces a
        // version is ordered after it whatever the clocks say.
        let timestamp = match object.timestamp() {
            Some(stored) if stored >= write.timestamp && !self.regressions.unordered_lww => {
                stored.next()
            }
            _ => write.timestamp,
        };
        let mut changed = None;
        let (context, payload) = match &write.op {
            None => (write.context, write.payload),
            Some(op) => {
                let ConflictPolicy::Crdt(kind) = policy else {
                    return Err(ReplicaError::refused(format!(
                        "a CRDT operation on a bucket with policy {policy:?}"
                    )));
                };
                let max = MAX_VALUE_BYTES;
                let values = object.siblings().iter().filter_map(|s| s.payload.value());
                // Permanent refusals, the same on every replica holding
                // what this one holds: the client is told, and nothing is
                // stored (an add that would overflow included).
                let name = super::key_name(bucket, key);
                let updated = kind
                    .update(values, op, actor, timestamp, max)
                    .map_err(|e| match e {
                        UpdateError::State(e) => ReplicaError::refused(format!(
                            "{name} does not hold a {kind:?} state (was it written under another policy?): {e}"
                        )),
                        UpdateError::Op(e) => {
                            ReplicaError::refused(format!("{} on {name}: {e}", op.name()))
                        }
                    })?;
                changed = updated.changed;
                // The whole stored context: the update replaces every
                // sibling it was applied to.
                (object.context(), Payload::Value(updated.state))
            }
        };
        policy
            .put(
                &mut object,
                actor,
                &context,
                payload,
                timestamp,
                self.max_siblings,
            )
            .map_err(|e| match e {
                Error::TooManySiblings { siblings, max } => {
                    ReplicaError::TooManySiblings { siblings, max }
                }
                other => failed(other),
            })?;
        let encoded = codec::encode(&object).map_err(failed)?;
        let size = encoded.len();
        if size > crate::replication::limits::MAX_OBJECT_BYTES {
            return Err(ReplicaError::refused(format!(
                "the write would make {} an object of {size} bytes, more than the maximum of {}; \
                 read it and write with the context to replace its siblings",
                super::key_name(bucket, key),
                crate::replication::limits::MAX_OBJECT_BYTES
            )));
        }
        self.store_counting(k, encoded, new_hint)?;
        Ok(Coordinated { object, changed })
    }

    /// Stores `object` under `k`; when it is a new hint, within the hint
    /// store's bound (a slot is taken first, and given back if the write
    /// fails).
    fn store_counting(
        &self,
        k: &[u8],
        encoded: Vec<u8>,
        new_hint: bool,
    ) -> std::result::Result<(), ReplicaError> {
        if new_hint {
            self.reserve_hint()?;
        }
        let stored = self.store_encoded(k, encoded).map_err(failed);
        if new_hint && stored.is_err() {
            self.hints.fetch_sub(1, Ordering::AcqRel);
        }
        stored
    }

    /// Takes a slot in the hint store for a new hint, or refuses when it
    /// is full. Taken before storing, so concurrent new hints on other
    /// stripes cannot together pass the bound.
    fn reserve_hint(&self) -> std::result::Result<(), ReplicaError> {
        let reserved = self
            .hints
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_hints).then_some(n + 1)
            });
        // Refusing makes the put count this fallback as failed, so the
        // client learns the write has fewer copies than it asked for,
        // instead of the hint being dropped later without a word.
        reserved.map(|_| ()).map_err(|_| {
            ReplicaError::Failed(format!("hint store full ({} hints)", self.max_hints))
        })
    }

    /// Merges `incoming` into the stored object; returns the stored
    /// object's newest (timestamp, dot) after the merge.
    fn merge<'a>(
        &'a self,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
        policy: &ConflictPolicy,
        read: Option<Preread<'a>>,
    ) -> std::result::Result<Option<(Timestamp, Dot)>, ReplicaError> {
        let k = object_key(bucket, key).map_err(failed)?;
        let (_guard, stored) = self.locked_read(&k, read);
        let stored = self
            .replace_if_damaged(decode_read(stored))
            .map_err(failed)?;
        let merged = match stored {
            Some(mut object) => {
                if !policy.merge(&mut object, incoming) {
                    return Ok(newest(&object)); // nothing new: skip the write
                }
                object
            }
            None => incoming.clone(),
        };
        self.store(&k, &merged).map_err(failed)?;
        Ok(newest(&merged))
    }

    fn store_hint<'a>(
        &'a self,
        owner: NodeId,
        (bucket, key): (&[u8], &[u8]),
        incoming: &Object,
        policy: &ConflictPolicy,
        read: Option<Preread<'a>>,
    ) -> std::result::Result<Option<(Timestamp, Dot)>, ReplicaError> {
        let k = hint_key(owner, bucket, key).map_err(failed)?;
        let (_guard, stored) = self.locked_read(&k, read);
        let stored = decode_read(stored).map_err(failed)?;
        let is_new = stored.is_none();
        let merged = match stored {
            Some(mut object) => {
                policy.merge(&mut object, incoming);
                object
            }
            None => incoming.clone(),
        };
        self.store_counting(&k, codec::encode(&merged).map_err(failed)?, is_new)?;
        Ok(newest(&merged))
    }

    /// The owners this replica holds hints for, in id order. One short
    /// scan per owner (each seeks past the previous owner's hints).
    pub fn hint_owners(&self) -> Result<Vec<NodeId>> {
        let mut owners = Vec::new();
        let mut from = vec![HINT_SPACE];
        loop {
            let range = KeyRange::between(from, vec![META_SPACE]);
            let Some(item) = self.engine.scan(range)?.next() else {
                return Ok(owners);
            };
            let (k, _) = item?;
            let id = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::InvalidInput("malformed stored hint key".into()))?;
            owners.push(NodeId(id));
            match id.checked_add(1) {
                Some(next) => {
                    from = vec![HINT_SPACE];
                    from.extend_from_slice(&next.to_be_bytes());
                }
                None => return Ok(owners),
            }
        }
    }

    /// Objects stored (deleted ones included, until their tombstones are
    /// purged), counted by a scan that stops at `cap`, or at a damaged
    /// block (the count is then those before it: a status view must work
    /// on a damaged store, whose engine logs and counts the damage).
    pub fn count_objects(&self, cap: u64) -> Result<u64> {
        if cap == 0 {
            return Ok(0);
        }
        let mut n = 0;
        let scan = match self
            .engine
            .scan(KeyRange::between(vec![OBJECT_SPACE], vec![HINT_SPACE]))
        {
            Err(Error::Corruption { .. }) => return Ok(0),
            other => other?,
        };
        for item in scan {
            match item {
                Err(Error::Corruption { .. }) => break,
                other => other?,
            };
            n += 1;
            if n >= cap {
                break;
            }
        }
        Ok(n)
    }

    /// The metadata record `name`, if stored.
    pub fn load_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.engine.get(&meta_key(name))
    }

    /// Stores the metadata record `name`.
    pub fn store_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.engine.put(&meta_key(name), value)
    }

    /// The engine underneath.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Up to `limit` hints held for `owner`, in key order.
    pub fn hints_for(&self, owner: NodeId, limit: usize) -> Result<Vec<Hint>> {
        let mut prefix = vec![HINT_SPACE];
        prefix.extend_from_slice(&owner.0.to_be_bytes());
        let mut hints = Vec::new();
        for item in self.engine.scan(KeyRange::prefix(prefix))?.take(limit) {
            let (k, v) = item?;
            let (_, bucket, key) = parse_body(&k[9..])?;
            hints.push(Hint {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                object: decode_object(&v)?,
            });
        }
        Ok(hints)
    }

    /// Removes a hint once its owner has stored `delivered`. A hint that
    /// changed since (a newer write for the same key arrived) is kept, so
    /// nothing that was not delivered is dropped.
    pub fn remove_hint(
        &self,
        owner: NodeId,
        bucket: &[u8],
        key: &[u8],
        delivered: &Object,
    ) -> Result<bool> {
        let k = hint_key(owner, bucket, key)?;
        let _guard = self.lock(&k);
        match self.load(&k)? {
            Some(current) if &current == delivered => {
                self.retire_if_minted(Some(owner), &current);
                let mut batch = WriteBatch::new();
                batch.delete(k);
                self.engine.write(batch)?;
                self.hints.fetch_sub(1, Ordering::Relaxed);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn lock(&self, k: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = xxhash_rust::xxh3::xxh3_64(k) as usize % LOCK_STRIPES;
        // The guarded data is `()`: a poisoned stripe protects nothing.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, k: &[u8]) -> Result<Option<Object>> {
        decode_read(self.engine.get(k))
    }

    /// Takes `k`'s lock and reads its stored bytes, or takes both from
    /// `read` when that was read for `k`.
    fn locked_read<'a>(&'a self, k: &[u8], read: Option<Preread<'a>>) -> LockedRead<'a> {
        if let Some(taken) = read.and_then(|r| r.of(k)) {
            return taken;
        }
        let guard = self.lock(k);
        let raw = self.engine.get(k);
        (guard, raw)
    }

    /// As `load`, for a merge: a damaged stored copy counts as absent, so
    /// that the merge's object replaces it (see the module docs).
    fn load_or_replace_damaged(&self, k: &[u8]) -> Result<Option<Object>> {
        self.replace_if_damaged(self.load(k))
    }

    /// A loaded copy, or none in place of a damaged one (see
    /// [`Self::load_or_replace_damaged`]).
    fn replace_if_damaged(&self, loaded: Result<Option<Object>>) -> Result<Option<Object>> {
        match loaded {
            Err(e) if is_damage(&e) => {
                tracing::warn!(error = %e, "replacing a damaged stored object with the one merged onto it");
                // The damaged copy may have held dots of this node's
                // current epoch that no other replica has yet: mint under
                // a fresh one from now on (the module docs, "Actors").
                self.retire(None);
                Ok(None)
            }
            other => other,
        }
    }

    fn store(&self, k: &[u8], object: &Object) -> Result<()> {
        self.store_encoded(k, codec::encode(object)?)
    }

    /// Stores an object [`codec::encode`] made.
    fn store_encoded(&self, k: &[u8], bytes: Vec<u8>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(k, bytes);
        self.engine.write(batch)
    }
}

/// The newest (timestamp, dot) of `object`'s siblings.
fn newest(object: &Object) -> Option<(Timestamp, Dot)> {
    object.siblings().iter().map(|s| (s.timestamp, s.dot)).max()
}

/// Under last-writer-wins, [`ReplicaError::Superseded`] when the stored
/// winner after a merge is newer than what `merged` brought; otherwise
/// success. Other policies keep every write they merge.
fn superseded(
    merged: &Object,
    winner: Option<(Timestamp, Dot)>,
    policy: &ConflictPolicy,
) -> std::result::Result<(), ReplicaError> {
    if !matches!(policy, ConflictPolicy::Lww) {
        return Ok(());
    }
    match (newest(merged), winner) {
        (Some(brought), Some(stored)) if stored > brought => Err(ReplicaError::Superseded {
            timestamp: stored.0,
        }),
        _ => Ok(()),
    }
}

/// A key's lock, held, and its stored bytes read under it.
type LockedRead<'a> = (std::sync::MutexGuard<'a, ()>, Result<Option<Vec<u8>>>);

/// The stored bytes of one key, read under the key's lock, which it
/// holds: a serve that runs in place goes on from them (see
/// [`ReplicaStore::serve_in_place`]).
struct Preread<'a> {
    key: Vec<u8>,
    guard: std::sync::MutexGuard<'a, ()>,
    raw: Result<Option<Vec<u8>>>,
}

impl<'a> Preread<'a> {
    /// The lock and the bytes, if read for `k`. For another key (which a
    /// serve never asks) they are let go, and the caller reads `k` itself.
    fn of(self, k: &[u8]) -> Option<LockedRead<'a>> {
        debug_assert_eq!(self.key, k, "a copy read for another key");
        (self.key == k).then_some((self.guard, self.raw))
    }
}

/// The object in a key's stored bytes, if any.
fn decode_read(raw: Result<Option<Vec<u8>>>) -> Result<Option<Object>> {
    match raw? {
        Some(bytes) => decode_object(&bytes).map(Some),
        None => Ok(None),
    }
}

fn decode_object(bytes: &[u8]) -> Result<Object> {
    codec::decode(bytes, MAX_VALUE_BYTES)
}

/// A stored object's bytes decoded (for range scans).
pub(super) fn decode_stored(bytes: &[u8]) -> Result<Object> {
    decode_object(bytes)
}

fn failed(e: Error) -> ReplicaError {
    ReplicaError::Failed(e.to_string())
}

/// Whether `e` says the stored bytes of a key are damaged: the engine's
/// checksum failed, or they do not decode as an object.
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. } | Error::Decode { .. })
}

// Range transfers (`replication::transfer`, served and stored by the
// `node::handoff` actor): a batch of a token range for a receiver, a batch
// merged in from a source, a range dropped once handed over.

/// A batch of a token range read for a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeBatch {
    /// The objects, in engine key order.
    pub items: Vec<super::transfer::TransferItem>,
    /// The engine key of the last item (the cursor given when there are
    /// none).
    pub next: Option<Vec<u8>>,
    /// Whether nothing of the range follows `next`.
    pub done: bool,
    /// The items' stored size: keys and encoded objects.
    pub bytes: u64,
}

impl ReplicaStore {
    /// The objects of `range` after the engine key `after`, in key order,
    /// until they hold `max_bytes` (at least one object is taken). One
    /// consistent scan per range segment. Fails with `InvalidInput` when
    /// the cursor is not an object key inside the range, and on a corrupt
    /// stored object.
    pub fn range_batch(
        &self,
        range: crate::ring::TokenRange,
        after: Option<&[u8]>,
        max_bytes: u64,
    ) -> Result<RangeBatch> {
        let mut batch = RangeBatch {
            items: Vec::new(),
            next: after.map(<[u8]>::to_vec),
            done: true,
            bytes: 0,
        };
        for r in super::transfer::scan_ranges(range, after)? {
            for item in self.engine.scan(r)? {
                let (k, v) = item?;
                if batch.bytes >= max_bytes && !batch.items.is_empty() {
                    batch.done = false;
                    return Ok(batch);
                }
                let (_, bucket, key) = parse_object_key(&k)?;
                batch.items.push(super::transfer::TransferItem {
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    object: decode_object(&v)?,
                });
                batch.bytes += (k.len() + v.len()) as u64;
                batch.next = Some(k);
            }
        }
        Ok(batch)
    }

    /// Merges transferred objects, each under its bucket's policy
    /// (`policy_of`), as a replica merges a write it is sent: nothing newer
    /// is overwritten, and merging the same batch twice changes nothing.
    pub fn merge_transferred(
        &self,
        items: &[super::transfer::TransferItem],
        policy_of: impl Fn(&[u8]) -> ConflictPolicy,
    ) -> Result<()> {
        for item in items {
            let policy = policy_of(&item.bucket);
            self.merge(&item.bucket, &item.key, &item.object, &policy, None)
                .map_err(ReplicaError::into_error)?;
        }
        Ok(())
    }

    /// Deletes every object of `range`, `chunk` keys per engine batch.
    /// Returns how many were deleted. Objects written into the range while
    /// it runs may survive (the caller drops only ranges this node no
    /// longer receives writes for).
    pub fn drop_range(&self, range: crate::ring::TokenRange, chunk: usize) -> Result<u64> {
        self.drop_range_except(range, chunk, |_, _| false)
    }

    /// Deletes the objects of `range` except those for which
    /// `keep(bucket, token)` holds, `chunk` keys scanned per engine batch.
    /// Returns how many were deleted. A stored key that does not parse is
    /// deleted with the rest (it belongs to the range's key space and to no
    /// bucket).
    pub fn drop_range_except(
        &self,
        range: crate::ring::TokenRange,
        chunk: usize,
        keep: impl Fn(&[u8], Token) -> bool,
    ) -> Result<u64> {
        self.delete_range_where(range, chunk, |k, _| {
            Ok(!parse_object_key(k).is_ok_and(|(token, bucket, _)| keep(bucket, token)))
        })
    }

    /// Hands off the objects of `range` that this node no longer
    /// replicates, then deletes them: `owners(bucket, token)` names an
    /// object's replicas under the ring in force (`None`: this node is one
    /// of them, and the object stays). Each object is first stored as a
    /// hint for every owner but this node (merged into a hint already held
    /// for it, under `policy(bucket)`), so the hint round delivers it and
    /// nothing is lost when the owners did not get it by a transfer (a
    /// transfer pulled from another replica while this one was down, or a
    /// write reached this node for a change that was then replaced). An
    /// object whose hints cannot all be stored (the hint store is full)
    /// stays, for a later drop. `chunk` keys are scanned per engine batch.
    /// Returns how many objects were handed off and deleted.
    pub fn hand_off_range(
        &self,
        range: crate::ring::TokenRange,
        chunk: usize,
        owners: impl Fn(&[u8], Token) -> Option<Vec<NodeId>>,
        policy: impl Fn(&[u8]) -> ConflictPolicy,
    ) -> Result<u64> {
        let mut kept_full = 0u64;
        let deleted = self.delete_range_where(range, chunk, |k, v| {
            // Not an object of any bucket: nothing to hand off.
            let Ok((token, bucket, key)) = parse_object_key(k) else {
                return Ok(true);
            };
            let Some(owners) = owners(bucket, token) else {
                return Ok(false);
            };
            let object = decode_object(v)?;
            let policy = policy(bucket);
            let all = owners.iter().filter(|&&o| o != self.node).all(|&owner| {
                self.store_hint(owner, (bucket, key), &object, &policy, None)
                    .is_ok()
            });
            kept_full += u64::from(!all);
            Ok(all)
        })?;
        if kept_full > 0 {
            tracing::warn!(
                kept = kept_full,
                "the hint store is full: objects of a range given away stay on this node \
                 until a later sweep (the next ring change, or a restart) hands them off"
            );
        }
        Ok(deleted)
    }

    /// Deletes the objects of `range` for which `delete(engine key, value)`
    /// says so, `chunk` keys scanned per engine batch; how many.
    fn delete_range_where(
        &self,
        range: crate::ring::TokenRange,
        chunk: usize,
        mut delete: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<u64> {
        let chunk = chunk.max(1);
        let mut deleted = 0u64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let mut items = Vec::with_capacity(chunk);
            'scan: for r in super::transfer::scan_ranges(range, after.as_deref())? {
                for item in self.engine.scan(r)? {
                    items.push(item?);
                    if items.len() >= chunk {
                        break 'scan;
                    }
                }
            }
            let Some(last) = items.last().map(|(k, _)| k.clone()) else {
                return Ok(deleted);
            };
            let full = items.len() >= chunk;
            let mut batch = WriteBatch::new();
            let mut any = false;
            for (k, v) in items {
                if delete(&k, &v)? {
                    batch.delete(k);
                    deleted += 1;
                    any = true;
                }
            }
            if any {
                // Objects of the range may hold dots of this node's
                // current epoch: retire it with every key locked, so no
                // write mints under it between the retirement and the
                // deletion.
                let _all = self.lock_all();
                self.retire(None);
                self.engine.write(batch)?;
            }
            if !full {
                return Ok(deleted);
            }
            after = Some(last);
        }
    }

    /// Deletes the metadata record `name` (absent is fine).
    pub fn delete_meta(&self, name: &str) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(meta_key(name));
        self.engine.write(batch)
    }
}

// Anti-entropy (src/replication/anti_entropy.rs): range scans into Merkle
// trees, merges of repaired objects, and tombstone compare-and-delete.
impl ReplicaStore {
    /// Scans the objects of `range` whose bucket `bucket_n` gives at least
    /// `min_n` replicas into a tree of `leaves` leaves, keeping each leaf's
    /// entries. With `tombstones_before_ms`, also lists the tombstones
    /// whose newest timestamp is at or before it (the objects are then
    /// decoded; otherwise only their bytes are hashed).
    pub fn anti_entropy_scan(
        &self,
        range: crate::ring::TokenRange,
        leaves: usize,
        min_n: usize,
        bucket_n: &dyn Fn(&[u8]) -> usize,
        tombstones_before_ms: Option<u64>,
    ) -> Result<super::anti_entropy::LocalScan> {
        use super::merkle::{version_digest, KeyDigest, TreeBuilder};
        let mut builder = TreeBuilder::new(range, leaves, true)
            .ok_or_else(|| Error::InvalidInput(format!("{leaves} is not a valid leaf count")))?;
        let mut tombstones = Vec::new();
        let (after, through) = (range.after.0, range.through.0);
        // A range is (after, through]; one that wraps (or is the whole
        // ring) is two scans: the high end, then the low end.
        let mut parts = Vec::with_capacity(2);
        if after < through {
            parts.push(object_range(Token(after + 1), Token(through)));
        } else {
            if after != u64::MAX {
                parts.push(object_range(Token(after + 1), Token(u64::MAX)));
            }
            parts.push(object_range(Token(0), Token(through)));
        }
        for part in parts {
            for item in self.engine.scan(part)? {
                let (k, v) = item?;
                let (token, bucket, key) = parse_object_key(&k)?;
                let n = bucket_n(bucket);
                if n < min_n {
                    continue;
                }
                let entry = KeyDigest {
                    bucket: bucket.to_vec(),
                    key: key.to_vec(),
                    digest: version_digest(&v),
                };
                let Some(cutoff) = tombstones_before_ms else {
                    builder.push(token, entry);
                    continue;
                };
                let object = decode_object(&v)?;
                let old_tombstone = object.is_deleted()
                    && object.timestamp().is_some_and(|t| t.physical_ms <= cutoff);
                let copy = old_tombstone.then(|| entry.clone());
                if let (Some(leaf), Some(entry)) = (builder.push(token, entry), copy) {
                    tombstones.push(super::anti_entropy::Tombstone { entry, leaf, n });
                }
            }
        }
        Ok(super::anti_entropy::LocalScan {
            tree: builder.finish(),
            tombstones,
        })
    }

    /// The stored objects of `keys` (absent ones skipped), stopping before
    /// `max_bytes` of encoded objects so that they fit in one frame.
    pub fn read_for_repair(
        &self,
        keys: &[super::merkle::KeyDigest],
        max_bytes: usize,
    ) -> Result<Vec<super::anti_entropy::RepairObject>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for k in keys {
            let Some(raw) = self.engine.get(&object_key(&k.bucket, &k.key)?)? else {
                continue;
            };
            bytes += raw.len() + k.bucket.len() + k.key.len() + 16;
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(super::anti_entropy::RepairObject {
                bucket: k.bucket.clone(),
                key: k.key.clone(),
                object: decode_object(&raw)?,
            });
        }
        Ok(out)
    }

    /// Merges a repaired object into the stored one under `policy`;
    /// returns whether the stored object changed.
    pub fn merge_for_repair(
        &self,
        bucket: &[u8],
        key: &[u8],
        incoming: &Object,
        policy: &ConflictPolicy,
    ) -> Result<bool> {
        let k = object_key(bucket, key)?;
        let _guard = self.lock(&k);
        let merged = match self.load_or_replace_damaged(&k)? {
            Some(mut object) => {
                if !policy.merge(&mut object, incoming) {
                    return Ok(false);
                }
                object
            }
            None => incoming.clone(),
        };
        self.store(&k, &merged)?;
        Ok(true)
    }

    /// Deletes the object of `bucket`/`key` if it is still a tombstone
    /// whose stored bytes have version digest `digest` (compare-and-delete
    /// under the key's stripe lock, so a write that arrived since keeps it).
    /// Returns whether it was deleted.
    pub fn purge_tombstone(&self, bucket: &[u8], key: &[u8], digest: u64) -> Result<bool> {
        let k = object_key(bucket, key)?;
        let _guard = self.lock(&k);
        let Some(raw) = self.engine.get(&k)? else {
            return Ok(false);
        };
        if super::merkle::version_digest(&raw) != digest {
            return Ok(false);
        }
        let object = decode_object(&raw)?;
        if !object.is_deleted() {
            return Ok(false);
        }
        self.retire_if_minted(None, &object);
        let mut batch = WriteBatch::new();
        batch.delete(k);
        self.engine.write(batch)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryEngine;
    use crate::version::{CausalContext, Payload, Timestamp};

    fn store(node: u64, max_hints: usize) -> ReplicaStore {
        ReplicaStore::open(NodeId(node), Arc::new(MemoryEngine::new()), 10, max_hints).unwrap()
    }

    fn coordinate(req: u64, value: &str, context: CausalContext) -> ReplicaRequest {
        ReplicaRequest::Coordinate {
            req,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context,
                payload: Payload::Value(value.as_bytes().to_vec()),
                timestamp: Timestamp::from_ms(req),
                op: None,
                base: None,
            },
            policy: ConflictPolicy::Siblings,
            hint_for: None,
        }
    }

    fn coordinated(reply: ReplicaReply) -> Object {
        match reply {
            ReplicaReply::Coordinated { result: Ok(o), .. } => o,
            other => panic!("{other:?}"),
        }
    }

    fn with_hint_for(mut req: ReplicaRequest, owner: u64) -> ReplicaRequest {
        if let ReplicaRequest::Coordinate { hint_for, .. } = &mut req {
            *hint_for = Some(NodeId(owner));
        }
        req
    }

    fn merge_into(r: &ReplicaStore, object: &Object, policy: ConflictPolicy) -> ReplicaReply {
        r.handle(ReplicaRequest::Merge {
            req: 1,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            object: object.clone(),
            policy,
            hint_for: None,
        })
    }

    fn fence(epoch: u64, change: Option<u64>) -> RingFence {
        RingFence {
            epoch,
            digest: 7,
            change: change.map(|epoch| crate::ring::transition::ChangeFence {
                epoch,
                digest: 9,
                n: 3,
            }),
        }
    }

    #[test]
    fn requests_routed_by_an_older_ring_state_are_refused_and_store_nothing() {
        let r = store(1, 10);
        // No fence set yet: everything is served.
        assert!(matches!(
            r.handle_fenced(
                None,
                coordinate(1, "a", CausalContext::empty()),
                Some(fence(1, None))
            ),
            ReplicaReply::Coordinated { result: Ok(_), .. }
        ));
        r.set_fence(fence(2, Some(3)));
        // A lower fence later is ignored: the fence never goes back.
        r.set_fence(fence(2, None));
        assert_eq!(r.fence(), Some(fence(2, Some(3))));
        let before = r.read(b"b", b"k").unwrap();
        for stale in [fence(1, None), fence(2, None), fence(1, Some(9))] {
            for request in [
                coordinate(2, "stale", CausalContext::empty()),
                ReplicaRequest::Merge {
                    req: 3,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                    object: Object::default(),
                    policy: ConflictPolicy::Siblings,
                    hint_for: None,
                },
                ReplicaRequest::Read {
                    req: 4,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
            ] {
                let req = request.req();
                let reply = r.handle_fenced(Some(NodeId(2)), request, Some(stale));
                assert_eq!(reply.req(), req);
                let error = match reply {
                    ReplicaReply::Coordinated { result: Err(e), .. }
                    | ReplicaReply::Merged { result: Err(e), .. }
                    | ReplicaReply::Read { result: Err(e), .. } => e,
                    other => panic!("served under {stale}: {other:?}"),
                };
                assert!(
                    matches!(&error, ReplicaError::Failed(why) if why.contains("newer")),
                    "{error:?}"
                );
            }
        }
        assert_eq!(
            r.read(b"b", b"k").unwrap(),
            before,
            "a refusal stores nothing"
        );
        // The same state, a newer one, or none (hinted handoff): served.
        for ok in [Some(fence(2, Some(3))), Some(fence(3, None)), None] {
            assert!(matches!(
                r.handle_fenced(None, coordinate(5, "b", CausalContext::empty()), ok),
                ReplicaReply::Coordinated { result: Ok(_), .. }
            ));
        }
        // The regression switch serves stale requests again.
        let mut r = store(1, 10);
        r.set_regressions(super::super::Regressions {
            unfenced_ring: true,
            ..Default::default()
        });
        r.set_fence(fence(5, None));
        assert!(matches!(
            r.handle_fenced(
                None,
                coordinate(6, "c", CausalContext::empty()),
                Some(fence(1, None))
            ),
            ReplicaReply::Coordinated { result: Ok(_), .. }
        ));
    }

    #[test]
    fn a_duplicate_coordination_gets_the_first_delivery_s_answer() {
        let r = store(1, 10);
        let from = Some(NodeId(2));
        r.set_fence(fence(2, None));
        // Refused (a stale ring): the coordinator fails over to another
        // replica. A duplicate of the same request arriving once the fence
        // would let it through must be refused again, not applied (the
        // write would be applied on two replicas: a counter add counted
        // twice).
        let first = r.handle_fenced(
            from,
            coordinate(1, "a", CausalContext::empty()),
            Some(fence(1, None)),
        );
        assert!(matches!(
            first,
            ReplicaReply::Coordinated {
                result: Err(ReplicaError::Failed(_)),
                ..
            }
        ));
        let again = r.handle_fenced(
            from,
            coordinate(1, "a", CausalContext::empty()),
            Some(fence(2, None)),
        );
        assert_eq!(again, first);
        assert_eq!(
            r.read(b"b", b"k").unwrap(),
            None,
            "the duplicate stored nothing"
        );
        // Applied: a duplicate is answered with the stored object, not
        // applied again...
        let applied = coordinated(r.handle_from(from, coordinate(2, "b", CausalContext::empty())));
        let again = coordinated(r.handle_from(from, coordinate(2, "b", CausalContext::empty())));
        assert_eq!(again, applied);
        // ... even under a fence that would refuse a new request, which
        // the coordinator would take as "stored nothing".
        let again = r.handle_fenced(
            from,
            coordinate(2, "b", CausalContext::empty()),
            Some(fence(1, None)),
        );
        assert_eq!(coordinated(again), applied);
        // Applied, then the copy deleted: the outcome is unknown, never
        // "stored nothing".
        let range = crate::ring::TokenRange {
            after: Token(0),
            through: Token(0),
        };
        assert_eq!(r.drop_range(range, 100).unwrap(), 1);
        let gone = r.handle_from(from, coordinate(2, "b", CausalContext::empty()));
        assert!(
            matches!(
                gone,
                ReplicaReply::Coordinated {
                    result: Err(ReplicaError::Indefinite(_)),
                    ..
                }
            ),
            "{gone:?}"
        );
    }

    /// A set op's reply counts the members it changed, against what the
    /// replica stores joined with the base; a duplicate delivery gets the
    /// first one's count, not a recount (which would say 0).
    #[test]
    fn a_set_op_reports_the_members_it_changed_and_a_duplicate_the_same() {
        let r = store(1, 10);
        let from = Some(NodeId(2));
        use crate::crdt::{CrdtKind, CrdtOp};
        use serde_bytes::ByteBuf;
        let policy = ConflictPolicy::Crdt(CrdtKind::OrSet);
        let add = |req: u64, members: &[&str], base: Option<Object>| ReplicaRequest::Coordinate {
            req,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Tombstone,
                timestamp: Timestamp::from_ms(req),
                op: Some(CrdtOp::SetAdd(
                    members
                        .iter()
                        .map(|m| ByteBuf::from(m.as_bytes()))
                        .collect(),
                )),
                base: base.map(Box::new),
            },
            policy: policy.clone(),
            hint_for: None,
        };
        let changed = |reply: &ReplicaReply| match reply {
            ReplicaReply::Coordinated {
                result: Ok(_),
                changed,
                ..
            } => *changed,
            other => panic!("{other:?}"),
        };
        let first = r.handle_from(from, add(1, &["a", "b"], None));
        assert_eq!(changed(&first), Some(2));
        let again = r.handle_from(from, add(1, &["a", "b"], None));
        assert_eq!(changed(&again), Some(2), "a duplicate is not recounted");
        // "c" is in the base (another replica's write the read saw), so
        // only "d" is new.
        let other = ReplicaStore::open(NodeId(3), Arc::new(MemoryEngine::new()), 3, 10).unwrap();
        let base = coordinated(other.handle(add(1, &["c"], None)));
        let next = r.handle_from(from, add(2, &["b", "c", "d"], Some(base)));
        assert_eq!(changed(&next), Some(1));
        // A plain write counts nothing.
        let plain = r.handle_from(from, coordinate(3, "v", CausalContext::empty()));
        assert_eq!(changed(&plain), None);
    }

    #[test]
    fn raising_the_fence_waits_for_requests_admitted_under_the_old_one() {
        let r = Arc::new(store(1, 10));
        r.set_fence(fence(1, None));
        // Hold the read side as an admitted request does while it stores.
        let admitted = r.fence.read().unwrap();
        let raiser = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || r.set_fence(fence(2, None)))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !raiser.is_finished(),
            "raised while a request was in flight"
        );
        drop(admitted);
        raiser.join().unwrap();
        assert_eq!(r.fence(), Some(fence(2, None)));
    }

    #[test]
    fn a_write_with_a_fresh_context_is_not_refused_for_siblings_the_read_missed() {
        // Issue [9] A3: during a partition this replica got blind writes
        // that the client's quorum read did not see; the client's
        // read-modify-write carries the context of what it read.
        let r = ReplicaStore::open(NodeId(1), Arc::new(MemoryEngine::new()), 3, 10).unwrap();
        let read = coordinated(r.handle(coordinate(1, "read", CausalContext::empty())));
        for node in 2..=4 {
            let other =
                ReplicaStore::open(NodeId(node), Arc::new(MemoryEngine::new()), 10, 10).unwrap();
            let o = coordinated(other.handle(coordinate(node, "unseen", CausalContext::empty())));
            assert!(matches!(
                merge_into(&r, &o, ConflictPolicy::Siblings),
                ReplicaReply::Merged { result: Ok(()), .. }
            ));
        }
        // A blind write is refused: four siblings already, the cap is 3.
        assert!(matches!(
            r.handle(coordinate(5, "blind", CausalContext::empty())),
            ReplicaReply::Coordinated {
                result: Err(ReplicaError::TooManySiblings { .. }),
                ..
            }
        ));
        // The read-modify-write is stored: it replaces what it read and
        // keeps the three it did not see.
        let o = coordinated(r.handle(coordinate(6, "rmw", read.context())));
        assert_eq!(o.siblings().len(), 4);
        assert!(o
            .siblings()
            .iter()
            .all(|s| s.payload != Payload::Value(b"read".to_vec())));
    }

    #[test]
    fn a_fallback_never_mints_a_dot_twice_across_handoffs() {
        // Node 4 stands in for primary 1 in two partitions; between them its
        // hint is delivered and deleted. The primary must keep both writes.
        let fallback = store(4, 10);
        let primary = store(1, 10);
        let mut dots = Vec::new();
        for round in 0..3u64 {
            let req = with_hint_for(coordinate(round + 1, "v", CausalContext::empty()), 1);
            let o = coordinated(fallback.handle(req));
            dots.extend(o.siblings().iter().map(|s| s.dot));
            let hint = fallback.hints_for(NodeId(1), 10).unwrap().remove(0);
            assert!(matches!(
                merge_into(&primary, &hint.object, ConflictPolicy::Siblings),
                ReplicaReply::Merged { result: Ok(()), .. }
            ));
            assert!(fallback
                .remove_hint(NodeId(1), b"b", b"k", &hint.object)
                .unwrap());
            let kept = primary.read(b"b", b"k").unwrap().unwrap();
            assert_eq!(
                kept.siblings().len(),
                round as usize + 1,
                "round {round}: the primary lost a write"
            );
        }
        dots.sort();
        dots.dedup();
        assert_eq!(dots.len(), 3, "every write got its own dot");
        assert!(dots.iter().all(|d| actor_node(d.node) == NodeId(4)));
    }

    #[test]
    fn counter_adds_through_a_fallback_are_never_merged_away() {
        use crate::crdt::{CrdtKind, CrdtOp};
        let policy = ConflictPolicy::Crdt(CrdtKind::PnCounter);
        let fallback = store(4, 10);
        let primary = store(1, 10);
        for _ in 0..3 {
            let req = ReplicaRequest::Coordinate {
                req: 1,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                write: Write {
                    context: CausalContext::empty(),
                    payload: Payload::Value(Vec::new()),
                    timestamp: Timestamp::from_ms(1),
                    op: Some(CrdtOp::Add(1)),
                    base: None,
                },
                policy: policy.clone(),
                hint_for: Some(NodeId(1)),
            };
            coordinated(fallback.handle(req));
            let hint = fallback.hints_for(NodeId(1), 10).unwrap().remove(0);
            merge_into(&primary, &hint.object, policy.clone());
            fallback
                .remove_hint(NodeId(1), b"b", b"k", &hint.object)
                .unwrap();
        }
        let o = primary.read(b"b", b"k").unwrap().unwrap();
        let values = o.siblings().iter().filter_map(|s| s.payload.value());
        let state = CrdtKind::PnCounter.join(values, MAX_VALUE_BYTES).unwrap();
        let counter: crate::crdt::PnCounter = codec::decode(&state, MAX_VALUE_BYTES).unwrap();
        assert_eq!(counter.value(), 3);
    }

    #[test]
    fn a_restart_mints_under_a_new_actor() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let open = || ReplicaStore::open(NodeId(2), engine.clone(), 10, 10).unwrap();
        let first = open();
        coordinated(first.handle(coordinate(1, "a", CausalContext::empty())));
        let before = first.current_actor(None).unwrap();
        drop(first);
        let again = open();
        let o = coordinated(again.handle(coordinate(2, "b", CausalContext::empty())));
        let after = again.current_actor(None).unwrap();
        assert_ne!(before, after);
        assert!(after > before, "epochs only grow");
        assert_eq!(actor_node(after), NodeId(2));
        assert_eq!(o.siblings().len(), 2);
        // Many slots and restarts: never the same actor twice.
        let mut seen = std::collections::BTreeSet::from([before, after]);
        for restart in 0..5u64 {
            let r = open();
            for owner in 5..8 {
                let req = with_hint_for(coordinate(restart, "h", CausalContext::empty()), owner);
                coordinated(r.handle(req));
                assert!(seen.insert(r.current_actor(Some(NodeId(owner))).unwrap()));
            }
        }
    }

    #[test]
    fn node_ids_that_cannot_mint_are_refused() {
        for id in [0, MAX_NODE_ID + 1, u64::MAX] {
            let opened = ReplicaStore::open(NodeId(id), Arc::new(MemoryEngine::new()), 10, 10);
            assert!(opened.is_err(), "{id}");
        }
        assert!(
            ReplicaStore::open(NodeId(MAX_NODE_ID), Arc::new(MemoryEngine::new()), 10, 10).is_ok()
        );
    }

    #[test]
    fn lww_stamps_above_the_stored_version_and_reports_newer_ones() {
        let lww = |req: u64, value: &str, ms: u64| ReplicaRequest::Coordinate {
            req,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Value(value.as_bytes().to_vec()),
                timestamp: Timestamp::from_ms(ms),
                op: None,
                base: None,
            },
            policy: ConflictPolicy::Lww,
            hint_for: None,
        };
        let a = store(1, 10);
        let first = coordinated(a.handle(lww(1, "first", 100)));
        // A later write whose coordinator's clock is behind still wins.
        let second = coordinated(a.handle(lww(2, "second", 50)));
        assert_eq!(second.siblings().len(), 1);
        assert_eq!(
            second.siblings()[0].payload,
            Payload::Value(b"second".to_vec())
        );
        assert!(second.timestamp() > first.timestamp());
        // Merging the older write into a replica holding the newer one is
        // stored, but reported superseded.
        let b = store(2, 10);
        assert!(matches!(
            merge_into(&b, &second, ConflictPolicy::Lww),
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
        match merge_into(&b, &first, ConflictPolicy::Lww) {
            ReplicaReply::Merged {
                result: Err(ReplicaError::Superseded { timestamp }),
                ..
            } => assert_eq!(Some(timestamp), second.timestamp()),
            other => panic!("{other:?}"),
        }
        // Other policies keep every write: never superseded.
        assert!(matches!(
            merge_into(&b, &first, ConflictPolicy::Siblings),
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
    }

    #[test]
    fn blind_writes_become_siblings_and_a_context_resolves_them() {
        let r = store(1, 10);
        coordinated(r.handle(coordinate(1, "a", CausalContext::empty())));
        let o = coordinated(r.handle(coordinate(2, "b", CausalContext::empty())));
        assert_eq!(o.siblings().len(), 2);
        let o = coordinated(r.handle(coordinate(3, "c", o.context())));
        assert_eq!(o.siblings().len(), 1);
        assert_eq!(r.read(b"b", b"k").unwrap(), Some(o));
    }

    #[test]
    fn merges_are_idempotent_and_hints_are_kept_apart() {
        let a = store(1, 10);
        let b = store(2, 1);
        let o = coordinated(a.handle(coordinate(1, "a", CausalContext::empty())));
        let merge = |hint_for| ReplicaRequest::Merge {
            req: 9,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            object: o.clone(),
            policy: ConflictPolicy::Siblings,
            hint_for,
        };
        for _ in 0..2 {
            assert!(matches!(
                b.handle(merge(None)),
                ReplicaReply::Merged { result: Ok(()), .. }
            ));
        }
        assert_eq!(b.read(b"b", b"k").unwrap().as_ref(), Some(&o));
        assert!(matches!(
            b.handle(merge(Some(NodeId(3)))),
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
        assert_eq!(b.hint_count(), 1);
        let hints = b.hints_for(NodeId(3), 10).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].object, o);
        assert!(b.hints_for(NodeId(4), 10).unwrap().is_empty());
        // Full: a hint for another key is refused, and says why.
        let mut other = merge(Some(NodeId(3)));
        if let ReplicaRequest::Merge { key, .. } = &mut other {
            *key = b"k2".to_vec();
        }
        match b.handle(other) {
            ReplicaReply::Merged {
                result: Err(ReplicaError::Failed(why)),
                ..
            } => assert!(why.contains("hint store full"), "{why}"),
            r => panic!("{r:?}"),
        }
        assert!(b.remove_hint(NodeId(3), b"b", b"k", &o).unwrap());
        assert_eq!(b.hint_count(), 0);
    }

    #[test]
    fn a_fallback_that_coordinates_stores_a_hint() {
        let r = store(4, 1);
        let mut req = coordinate(1, "a", CausalContext::empty());
        if let ReplicaRequest::Coordinate { hint_for, .. } = &mut req {
            *hint_for = Some(NodeId(2));
        }
        let o = coordinated(r.handle(req.clone()));
        assert_eq!(
            r.read(b"b", b"k").unwrap(),
            None,
            "not the fallback's own copy"
        );
        assert_eq!(r.hint_count(), 1);
        let hints = r.hints_for(NodeId(2), 10).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].object, o);
        // The same key again updates the hint, within the bound of one.
        assert!(matches!(
            r.handle(req.clone()),
            ReplicaReply::Coordinated { result: Ok(_), .. }
        ));
        assert_eq!(r.hint_count(), 1);
        // Another key would need a second hint: refused, nothing stored.
        if let ReplicaRequest::Coordinate { key, .. } = &mut req {
            *key = b"other".to_vec();
        }
        assert!(matches!(
            r.handle(req),
            ReplicaReply::Coordinated {
                result: Err(ReplicaError::Failed(_)),
                ..
            }
        ));
        assert_eq!(r.hint_count(), 1);
    }

    #[test]
    fn hint_owners_metadata_and_counts() {
        let r = store(1, 100);
        let o = coordinated(r.handle(coordinate(1, "a", CausalContext::empty())));
        for owner in [7u64, 3, 7, u64::MAX] {
            for key in [&b"x"[..], b"y"] {
                let reply = r.handle(ReplicaRequest::Merge {
                    req: 1,
                    bucket: b"b".to_vec(),
                    key: key.to_vec(),
                    object: o.clone(),
                    policy: ConflictPolicy::Siblings,
                    hint_for: Some(NodeId(owner)),
                });
                assert!(matches!(reply, ReplicaReply::Merged { result: Ok(()), .. }));
            }
        }
        assert_eq!(
            r.hint_owners().unwrap(),
            vec![NodeId(3), NodeId(7), NodeId(u64::MAX)]
        );
        assert_eq!(r.count_objects(100).unwrap(), 1, "hints are not objects");
        assert_eq!(r.load_meta("buckets").unwrap(), None);
        r.store_meta("buckets", b"table").unwrap();
        assert_eq!(
            r.load_meta("buckets").unwrap().as_deref(),
            Some(&b"table"[..])
        );
        assert_eq!(r.hint_owners().unwrap().len(), 3, "metadata is not a hint");
        assert_eq!(r.count_objects(100).unwrap(), 1);
    }

    #[test]
    fn crdt_updates_apply_to_the_join_of_the_siblings() {
        use crate::crdt::{CrdtKind, CrdtOp, CrdtValue};
        let policy = ConflictPolicy::Crdt(CrdtKind::PnCounter);
        let add = |req: u64, by: i64| ReplicaRequest::Coordinate {
            req,
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Value(Vec::new()),
                timestamp: Timestamp::from_ms(req),
                op: Some(CrdtOp::Add(by)),
                base: None,
            },
            policy: policy.clone(),
            hint_for: None,
        };
        let a = store(1, 10);
        let b = store(2, 10);
        let from_a = coordinated(a.handle(add(1, 5)));
        let from_b = coordinated(b.handle(add(2, -2)));
        // b learns a's update; the two are concurrent siblings on b.
        let merged = b.handle(ReplicaRequest::Merge {
            req: 3,
            bucket: b"c".to_vec(),
            key: b"k".to_vec(),
            object: from_a,
            policy: policy.clone(),
            hint_for: None,
        });
        assert!(matches!(
            merged,
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
        assert_eq!(b.read(b"c", b"k").unwrap().unwrap().siblings().len(), 2);
        drop(from_b);
        // The next update on b joins both and replaces them.
        let o = coordinated(b.handle(add(4, 10)));
        assert_eq!(o.siblings().len(), 1);
        let state = o.siblings()[0].payload.value().unwrap();
        assert_eq!(
            CrdtKind::PnCounter.value(state, 1 << 20).unwrap(),
            CrdtValue::Counter(13)
        );
        // An op that does not fit the policy is refused, nothing stored.
        let mut wrong = add(5, 1);
        if let ReplicaRequest::Coordinate { policy, .. } = &mut wrong {
            *policy = ConflictPolicy::Siblings;
        }
        assert!(matches!(
            b.handle(wrong),
            ReplicaReply::Coordinated { result: Err(_), .. }
        ));
    }

    #[test]
    fn a_corrupt_stored_object_reads_as_damaged_and_a_merge_replaces_it() {
        let engine = Arc::new(MemoryEngine::new());
        engine
            .put(&object_key(b"b", b"k").unwrap(), b"\xff\x00garbage")
            .unwrap();
        let r = ReplicaStore::open(NodeId(1), engine, 10, 10).unwrap();
        let read = ReplicaRequest::Read {
            req: 1,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        };
        assert!(matches!(
            r.handle(read.clone()),
            ReplicaReply::ReadCorrupt { req: 1, .. }
        ));
        let o = coordinated(store(2, 10).handle(coordinate(1, "a", CausalContext::empty())));
        let merged = r.handle(ReplicaRequest::Merge {
            req: 2,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            object: o.clone(),
            policy: ConflictPolicy::Siblings,
            hint_for: None,
        });
        assert!(matches!(
            merged,
            ReplicaReply::Merged { result: Ok(()), .. }
        ));
        match r.handle(read) {
            ReplicaReply::Read {
                result: Ok(Some(stored)),
                ..
            } => assert_eq!(stored, o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_ranges_are_contiguous_scans() {
        let r = store(1, 10);
        for i in 0..200u32 {
            let req = coordinate(1, "v", CausalContext::empty());
            let ReplicaRequest::Coordinate { write, policy, .. } = req else {
                unreachable!()
            };
            r.handle(ReplicaRequest::Coordinate {
                req: 1,
                bucket: b"b".to_vec(),
                key: i.to_be_bytes().to_vec(),
                write,
                policy,
                hint_for: None,
            });
        }
        let (lo, hi) = (Token(u64::MAX / 4), Token(u64::MAX / 2));
        let mut n = 0;
        for item in r.engine.scan(object_range(lo, hi)).unwrap() {
            let (k, _) = item.unwrap();
            let (t, bucket, _) = parse_object_key(&k).unwrap();
            assert!(lo <= t && t <= hi);
            assert_eq!(bucket, b"b");
            n += 1;
        }
        let expected = (0..200u32)
            .filter(|i| {
                let t = key_token(b"b", &i.to_be_bytes());
                lo <= t && t <= hi
            })
            .count();
        assert_eq!(n, expected);
        assert!(n > 20, "a quarter of the ring holds about 50 of 200 keys");
    }

    /// A memory engine that says, as told, which keys' reads need the
    /// disk and whether writes wait, and counts the writes it takes.
    #[derive(Default)]
    struct Tiered {
        inner: MemoryEngine,
        cold: Mutex<std::collections::HashSet<Vec<u8>>>,
        writes_wait: std::sync::atomic::AtomicBool,
        writes: AtomicUsize,
    }

    impl Engine for Tiered {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn write(&self, batch: WriteBatch) -> Result<()> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            self.inner.write(batch)
        }
        fn scan(&self, range: KeyRange) -> Result<crate::storage::ScanIter<'_>> {
            self.inner.scan(range)
        }
        fn flush(&self) -> Result<()> {
            self.inner.flush()
        }
        fn stats(&self) -> crate::storage::EngineStats {
            self.inner.stats()
        }
        fn writes_at_once(&self) -> bool {
            !self.writes_wait.load(Ordering::Relaxed)
        }
        fn get_in_memory(&self, key: &[u8]) -> Option<Result<Option<Vec<u8>>>> {
            let cold = self.cold.lock().unwrap().contains(key);
            (!cold).then(|| self.inner.get(key))
        }
    }

    /// A request served in place gets the reply the same request gets on a
    /// blocking thread, from a store with the same history; one whose read
    /// needs the disk (or whose write would wait) is handed back as it
    /// came, with nothing stored or remembered, and is then served as
    /// usual. Random requests (coordinations with and without context,
    /// hints, merges, reads, repeated deliveries) over a few keys, some
    /// cold.
    #[test]
    fn serving_in_place_is_serving_on_a_thread_or_nothing() {
        use rand::{Rng, SeedableRng};
        let seed = 0x5eed_u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let tiered = Arc::new(Tiered::default());
        let in_place = ReplicaStore::open(NodeId(1), tiered.clone(), 10, 100).unwrap();
        let on_thread = store(1, 100);
        let keys = [
            b"k0".to_vec(),
            b"k1".to_vec(),
            b"k2".to_vec(),
            b"k3".to_vec(),
        ];
        let (mut served, mut handed_back) = (0, 0);
        let mut sent: Vec<(NodeId, ReplicaRequest)> = Vec::new();
        for step in 0..400u64 {
            let key = keys[rng.random_range(0..keys.len())].clone();
            let from = NodeId(rng.random_range(2..4));
            let context = match on_thread.read(b"b", &key).unwrap() {
                Some(o) if rng.random_bool(0.5) => o.context(),
                _ => CausalContext::empty(),
            };
            let request = match rng.random_range(0..6) {
                // The same delivery again: answered as the first was.
                0 if !sent.is_empty() => sent[rng.random_range(0..sent.len())].clone().1,
                0..=2 => {
                    let mut r = coordinate(1000 + step, &format!("v{step}"), context);
                    if let ReplicaRequest::Coordinate { key: k, .. } = &mut r {
                        *k = key.clone();
                    }
                    if rng.random_bool(0.2) {
                        r = with_hint_for(r, 9);
                    }
                    r
                }
                3 => {
                    let mut object = Object::default();
                    let policy = ConflictPolicy::Siblings;
                    policy
                        .put(
                            &mut object,
                            NodeId(7 + step % 3),
                            &context,
                            Payload::Value(format!("m{step}").into_bytes()),
                            Timestamp::from_ms(step),
                            10,
                        )
                        .unwrap();
                    ReplicaRequest::Merge {
                        req: 5000 + step,
                        bucket: b"b".to_vec(),
                        key: key.clone(),
                        object,
                        policy,
                        hint_for: rng.random_bool(0.2).then_some(NodeId(9)),
                    }
                }
                _ => ReplicaRequest::Read {
                    req: 9000 + step,
                    bucket: b"b".to_vec(),
                    key: key.clone(),
                },
            };
            sent.push((from, request.clone()));
            // Some keys' copies (object and hint) need the disk this step;
            // now and then writes wait.
            {
                let mut cold = tiered.cold.lock().unwrap();
                cold.clear();
                for k in &keys {
                    if rng.random_bool(0.3) {
                        cold.insert(object_key(b"b", k).unwrap());
                        cold.insert(hint_key(NodeId(9), b"b", k).unwrap());
                    }
                }
            }
            tiered
                .writes_wait
                .store(rng.random_bool(0.1), Ordering::Relaxed);
            let writes = tiered.writes.load(Ordering::Relaxed);
            let expected = on_thread.handle_fenced(Some(from), request.clone(), None);
            let reply = match in_place.serve_in_place(Some(from), request.clone(), None) {
                Ok(reply) => {
                    served += 1;
                    reply
                }
                Err(back) => {
                    handed_back += 1;
                    assert_eq!(
                        *back, request,
                        "seed {seed}, step {step}: handed back changed"
                    );
                    assert_eq!(
                        tiered.writes.load(Ordering::Relaxed),
                        writes,
                        "seed {seed}, step {step}: stored before handing back"
                    );
                    in_place.handle_fenced(Some(from), *back, None)
                }
            };
            assert_eq!(reply, expected, "seed {seed}, step {step}: {request:?}");
        }
        assert!(
            served > 100 && handed_back > 50,
            "{served} served, {handed_back} handed back"
        );
    }
}
