//! Range transfers: moving every object of a token range from source nodes
//! to this node, resumably, throttled and with bounded concurrency.
//!
//! # The protocol
//!
//! A transfer is *pulled* by the node that receives the range. For each
//! source it keeps a cursor: the engine key of the last object it has
//! durably stored from that source (none at first). It sends the source a
//! [`TransferMsg::Pull`] for the next batch after that cursor; the
//! source scans its store from just after the cursor to the end of the
//! range (one consistent engine scan per pull) and answers with a
//! [`TransferMsg::Batch`]: objects up to a byte limit, the new cursor
//! (the last key in the batch) and whether the range is exhausted. A
//! source that cannot serve answers [`TransferMsg::Refused`] with a
//! [`TransferRefusal`]. Replies echo the cursor they answer, so a late or
//! duplicated reply is recognised and dropped.
//!
//! The receiver merges each batch into its store under each bucket's
//! conflict policy (a transfer never overwrites newer data: it joins with
//! it), and only then persists the advanced cursor, in the metadata record
//! [`record_name`]`(id)`, and pulls again. So after a lost reply, a broken
//! connection or a restart, the transfer goes on from the last batch it
//! stored, never from the start; at most the batch that was in flight is
//! sent twice, and merging it twice changes nothing.
//!
//! A spec may name several sources (a dead node's ranges re-replicated from
//! every surviving replica): each is pulled to the end with its own cursor,
//! in parallel, and the transfer is done when all are.
//!
//! # Limits
//!
//! At most `max_concurrent` transfers run; the rest are queued in start
//! order. Pulls are paced by a [`TokenBucket`] of `bytes_per_sec` shared by
//! every transfer of the node. A pull unanswered after `pull_timeout`, or
//! refused as busy, is retried after an exponential backoff with jitter;
//! such waits are not failures (the source may come back). Hard failures (a
//! refusal with an error, a batch that does not fit the range, a local
//! store error) are retried too, and after `max_failures` in a row the
//! transfer is marked failed; starting it again resumes from its cursor.
//!
//! # What it does not do
//!
//! This module is the pure machine ([`Transfers`]) and the scan plan
//! ([`scan_ranges`]): no I/O, time passed in, [`TransferEffect`]s pushed
//! to an outbox. The handoff role (`roles::handoff`) runs it inside its
//! own machine, and the `node::handoff` actor carries out that role's
//! effects. It does not decide which
//! ranges move or when ownership switches (the ring transition driver does),
//! and it does not delete anything: the old owner drops a range only when
//! told, after the new owners confirmed it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::replica::{object_range, parse_object_key};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::replication::TransferConfig;
use crate::replication::TransferMsg;
use crate::ring::{key_token, RingFence, Token, TokenRange};
use crate::storage::KeyRange;
use crate::version::Object;

/// The metadata record that holds transfer `id`'s cursors and counters.
pub fn record_name(id: u64) -> String {
    format!("transfer/{id}")
}

/// What to move: a token range, from which nodes. The `id` is chosen by
/// the caller and must stay the same for the same move across restarts:
/// it names the persisted cursors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// The transfer's id.
    pub id: u64,
    /// The tokens to move.
    pub range: TokenRange,
    /// The nodes to pull from; each is pulled to the end of the range.
    pub sources: Vec<NodeId>,
    /// The fence of the ring change the range moves for, sent with every
    /// pull: a source serves only under the same one (see
    /// [`RingFence`]). `None`: served whatever the source's ring state.
    #[serde(default)]
    pub fence: Option<RingFence>,
}

/// One object of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferItem {
    /// Its bucket.
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    /// Its key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The stored object, tombstones included.
    pub object: Object,
}

/// Why a source did not serve a pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TransferRefusal {
    /// The source serves as many pulls as it allows; retry later.
    Busy,
    /// The source is shutting down; retry later (or elsewhere).
    ShuttingDown,
    /// The pull was malformed: its cursor is not an object key inside the
    /// range.
    BadRequest(String),
    /// The source's store failed to scan (a disk error, a corrupt object).
    Failed(String),
    /// The source's ring state is not the one the range moves under: it
    /// has not yet learned the change, or has learned a newer state. Retry
    /// once gossip has brought the two together.
    StaleRing(String),
}

impl TransferRefusal {
    /// Whether the receiver should wait and retry without counting a
    /// failure.
    pub fn is_wait(&self) -> bool {
        matches!(
            self,
            TransferRefusal::Busy | TransferRefusal::ShuttingDown | TransferRefusal::StaleRing(_)
        )
    }
}

impl fmt::Display for TransferRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferRefusal::Busy => f.write_str("source busy"),
            TransferRefusal::ShuttingDown => f.write_str("source shutting down"),
            TransferRefusal::BadRequest(why) => write!(f, "bad pull: {why}"),
            TransferRefusal::Failed(why) => write!(f, "source failed: {why}"),
            TransferRefusal::StaleRing(why) => write!(f, "source not on the change's ring: {why}"),
        }
    }
}

/// One source's persisted position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCursor {
    /// The source.
    pub node: NodeId,
    /// The engine key of the last object stored from it.
    #[serde(with = "serde_bytes")]
    pub after: Option<Vec<u8>>,
    /// Whether it has been pulled to the end of the range.
    pub done: bool,
}

/// What is persisted for a transfer, after each stored batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The transfer.
    pub spec: TransferSpec,
    /// Each source's cursor.
    pub sources: Vec<SourceCursor>,
    /// Objects stored so far.
    pub keys: u64,
    /// Bytes stored so far (keys and encoded objects as the source stores
    /// them).
    pub bytes: u64,
    /// Batches stored so far.
    pub batches: u64,
}

/// Where a transfer is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferState {
    /// Waiting for a free slot (`max_concurrent`).
    Queued,
    /// Pulling and storing batches.
    Running,
    /// Running, but a source did not answer its last pull or was busy: the
    /// pull is retried after a backoff.
    WaitingForSource,
    /// Every source was pulled to the end; everything is stored.
    Done,
    /// Stopped after too many failures in a row; starting it again resumes.
    Failed(String),
}

/// What a node served, as a source, for one receiver's transfer: the
/// source side's counts, kept by the handoff role (`roles::handoff`,
/// which serves pulls) and shown in status views (`protocol::ServedView`). Plain data,
/// here beside the receiving side's [`TransferProgress`] so that the wire
/// layer can convert it without importing the actors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedStats {
    /// The receiver.
    pub receiver: NodeId,
    /// Its transfer id.
    pub transfer: u64,
    /// Pulls answered with a batch.
    pub pulls: u64,
    /// Of those, pulls from the start of the range (no cursor).
    pub from_start: u64,
    /// Objects sent.
    pub keys: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pulls refused.
    pub refused: u64,
}

/// A transfer's progress, for status views and the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferProgress {
    /// The transfer's id.
    pub id: u64,
    /// Its range.
    pub range: TokenRange,
    /// Its sources.
    pub sources: Vec<NodeId>,
    /// Where it is.
    pub state: TransferState,
    /// Objects stored (including those stored before a restart).
    pub keys: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Batches stored.
    pub batches: u64,
    /// When it began running in this process, if it has.
    pub started: Option<Instant>,
    /// When it finished (done or failed), if it has.
    pub finished: Option<Instant>,
}

/// What the machine asks its driver to do: the crate's one
/// [`crate::effect::Effect`] shape, with pulls to send
/// ([`TransferMsg::Pull`]), [`TransferWork`] for the store, and
/// [`TransferEvent`]s for the listener.
pub type TransferEffect = crate::effect::Effect<TransferMsg, TransferWork, TransferEvent>;

/// What the machine tells its listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferEvent {
    /// A transfer is done.
    Done(TransferDoneEvent),
    /// A transfer failed `max_failures` times in a row and stopped; it
    /// runs again only when started again (the ring role does, for a
    /// move of the change in progress).
    Failed {
        /// The transfer.
        id: u64,
        /// The last failure.
        why: String,
    },
}

/// Storage work the machine asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferWork {
    /// Merge `items` into the store under their buckets' policies, then
    /// persist `record` (under [`record_name`]), then report with
    /// [`Transfers::stored`].
    Merge {
        /// The transfer.
        id: u64,
        /// The source the batch came from.
        source: NodeId,
        /// The objects.
        items: Vec<TransferItem>,
        /// The record as it is once the batch is stored.
        record: TransferRecord,
    },
    /// Delete the record of a cancelled transfer.
    Forget {
        /// The transfer.
        id: u64,
    },
}

/// A transfer is done: every object of its range from every source is
/// stored. For the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferDoneEvent {
    /// The transfer.
    pub id: u64,
    /// Objects stored.
    pub keys: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// A token bucket: at most `rate` bytes per second on average, with a
/// credit of at most `capacity` bytes. A charge may overdraw it (a batch's
/// size is only known once it arrives); the next pull then waits until the
/// debt is repaid. Rate 0 never waits.
///
/// ```
/// use std::time::{Duration, Instant};
/// use ringkv::replication::transfer::TokenBucket;
/// let t0 = Instant::now();
/// let mut bucket = TokenBucket::new(1000, 1000);
/// assert!(bucket.ready(t0));
/// bucket.charge(t0, 3000); // 2000 bytes of debt: two seconds
/// assert!(!bucket.ready(t0 + Duration::from_millis(1900)));
/// assert!(bucket.ready(t0 + Duration::from_millis(2000)));
/// ```
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, capacity: u64) -> Self {
        TokenBucket {
            rate,
            capacity: capacity as f64,
            tokens: capacity as f64,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate as f64).min(self.capacity);
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// Whether a pull may be sent now (no debt).
    pub fn ready(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        self.tokens >= 0.0
    }

    /// Takes `bytes` out, perhaps into debt.
    pub fn charge(&mut self, now: Instant, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// How long until [`ready`](Self::ready) is true.
    pub fn wait(&mut self, now: Instant) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate as f64)
        }
    }
}

/// The engine key ranges holding the objects of `range` that come after
/// the cursor `after`, in the order a transfer reads them. A range that
/// wraps past `u64::MAX` is two scans; the cursor's token says which of
/// them it is in. Fails when the cursor is not an object key inside the
/// range.
///
/// ```
/// use ringkv::ring::{Token, TokenRange};
/// use ringkv::replication::transfer::scan_ranges;
/// let wrapping = TokenRange { after: Token(u64::MAX - 10), through: Token(10) };
/// assert_eq!(scan_ranges(wrapping, None).unwrap().len(), 2);
/// let plain = TokenRange { after: Token(10), through: Token(20) };
/// assert_eq!(scan_ranges(plain, None).unwrap().len(), 1);
/// ```
pub fn scan_ranges(range: TokenRange, after: Option<&[u8]>) -> Result<Vec<KeyRange>> {
    // Token segments, inclusive, in transfer order.
    let mut segments: Vec<(Token, Token)> = Vec::with_capacity(2);
    let (a, t) = (range.after.0, range.through.0);
    if a < t {
        segments.push((Token(a + 1), Token(t)));
    } else {
        // Wraps (or is the whole ring, when a == t).
        if let Some(first) = a.checked_add(1) {
            segments.push((Token(first), Token(u64::MAX)));
        }
        segments.push((Token(0), Token(t)));
    }
    let Some(cursor) = after else {
        return Ok(segments
            .into_iter()
            .map(|(s, e)| object_range(s, e))
            .collect());
    };
    let (token, _, _) = parse_object_key(cursor)?;
    let Some(at) = segments.iter().position(|&(s, e)| s <= token && token <= e) else {
        return Err(Error::InvalidInput(format!(
            "cursor token {token} is outside the range ({}, {}]",
            range.after, range.through
        )));
    };
    let mut out = Vec::with_capacity(2);
    for (i, &(s, e)) in segments.iter().enumerate().skip(at) {
        let mut r = object_range(s, e);
        if i == at {
            r.start = Bound::Excluded(cursor.to_vec());
        }
        out.push(r);
    }
    Ok(out)
}

/// A batch's size as the machine counts it (and as the throttle charges
/// it): the stored bytes of its objects, measured by the source.
fn batch_token_check(range: TokenRange, items: &[TransferItem]) -> bool {
    items
        .iter()
        .all(|i| range.contains(key_token(&i.bucket, &i.key)))
}

#[derive(Clone, Debug)]
enum Step {
    /// May pull once the throttle allows.
    Ready,
    /// A pull for the current cursor is out.
    Pulling { since: Instant },
    /// A batch is being stored; the cursor advances when it is.
    Storing {
        next: Option<Vec<u8>>,
        done: bool,
        keys: u64,
        bytes: u64,
    },
    /// Waiting before pulling again.
    Backoff { until: Instant },
}

#[derive(Clone, Debug)]
struct Source {
    node: NodeId,
    after: Option<Vec<u8>>,
    done: bool,
    step: Step,
    /// Consecutive attempts without a stored batch (for the backoff).
    attempts: u32,
    /// The last pull went unanswered or was refused as busy.
    waiting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    Done,
    Failed(String),
}

#[derive(Clone, Debug)]
struct Transfer {
    spec: TransferSpec,
    sources: Vec<Source>,
    keys: u64,
    bytes: u64,
    batches: u64,
    phase: Phase,
    failures: u32,
    started: Option<Instant>,
    finished: Option<Instant>,
}

impl Transfer {
    fn record(&self) -> TransferRecord {
        TransferRecord {
            spec: self.spec.clone(),
            sources: self
                .sources
                .iter()
                .map(|s| SourceCursor {
                    node: s.node,
                    after: s.after.clone(),
                    done: s.done,
                })
                .collect(),
            keys: self.keys,
            bytes: self.bytes,
            batches: self.batches,
        }
    }

    fn progress(&self) -> TransferProgress {
        let state = match &self.phase {
            Phase::Queued => TransferState::Queued,
            Phase::Running if self.sources.iter().any(|s| !s.done && s.waiting) => {
                TransferState::WaitingForSource
            }
            Phase::Running => TransferState::Running,
            Phase::Done => TransferState::Done,
            Phase::Failed(why) => TransferState::Failed(why.clone()),
        };
        TransferProgress {
            id: self.spec.id,
            range: self.spec.range,
            sources: self.spec.sources.clone(),
            state,
            keys: self.keys,
            bytes: self.bytes,
            batches: self.batches,
            started: self.started,
            finished: self.finished,
        }
    }
}

fn new_source(node: NodeId, cursor: Option<&SourceCursor>) -> Source {
    Source {
        node,
        after: cursor.and_then(|c| c.after.clone()),
        done: cursor.is_some_and(|c| c.done),
        step: Step::Ready,
        attempts: 0,
        waiting: false,
    }
}

/// Every incoming transfer of a node. See the module docs.
#[derive(Debug)]
pub struct Transfers {
    node: NodeId,
    config: TransferConfig,
    transfers: BTreeMap<u64, Transfer>,
    /// How many of `transfers` are queued or running, counted again at
    /// the end of every public call that may change a phase
    /// ([`Self::recount`]): the node and the simulator ask
    /// [`Self::is_active`] far more often than transfers change, and a
    /// node keeps its done transfers.
    live: usize,
    queue: VecDeque<u64>,
    throttle: TokenBucket,
    rng: StdRng,
}

impl Transfers {
    /// The machine of node `node`; `seed` seeds the backoff jitter.
    pub fn new(node: NodeId, config: TransferConfig, seed: u64) -> Self {
        let throttle = TokenBucket::new(config.bytes_per_sec, config.max_batch_bytes);
        Transfers {
            node,
            config,
            transfers: BTreeMap::new(),
            live: 0,
            queue: VecDeque::new(),
            throttle,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Whether transfer `id` is known in this process.
    pub fn knows(&self, id: u64) -> bool {
        self.transfers.contains_key(&id)
    }

    /// Every known transfer's progress, by id.
    pub fn progress(&self) -> Vec<TransferProgress> {
        self.transfers.values().map(Transfer::progress).collect()
    }

    /// Whether a transfer is queued or running: only then does
    /// [`Transfers::tick`] have anything to do (timeouts, backoffs, the
    /// throttle).
    pub fn is_active(&self) -> bool {
        self.live > 0
    }

    /// Counts the queued and running transfers again (see `live`).
    fn recount(&mut self) {
        self.live = self
            .transfers
            .values()
            .filter(|t| matches!(t.phase, Phase::Queued | Phase::Running))
            .count();
    }

    /// One transfer's progress.
    pub fn progress_of(&self, id: u64) -> Option<TransferProgress> {
        self.transfers.get(&id).map(Transfer::progress)
    }

    /// Starts transfer `spec`, resuming from `record` (its persisted
    /// record, if any; the caller loads it for an id it does not know).
    ///
    /// Idempotent: starting a queued, running or done transfer again
    /// changes nothing (a done one reports its [`TransferDoneEvent`] again,
    /// so a caller that lost the first report learns it). A failed one is
    /// queued again with its cursors. A persisted record with another range
    /// is refused; with other sources, the cursors of the sources in both
    /// are kept and new sources start from the beginning.
    pub fn start(
        &mut self,
        now: Instant,
        spec: TransferSpec,
        record: Option<TransferRecord>,
        out: &mut Vec<TransferEffect>,
    ) -> Result<TransferProgress> {
        let result = self.start_inner(now, spec, record, out);
        self.recount();
        result
    }

    /// [`Self::start`] but for the count of live transfers.
    fn start_inner(
        &mut self,
        now: Instant,
        spec: TransferSpec,
        record: Option<TransferRecord>,
        out: &mut Vec<TransferEffect>,
    ) -> Result<TransferProgress> {
        let distinct: BTreeSet<NodeId> = spec.sources.iter().copied().collect();
        if spec.sources.is_empty()
            || distinct.len() != spec.sources.len()
            || distinct.contains(&self.node)
        {
            return Err(Error::InvalidInput(format!(
                "transfer {}: sources must be distinct, at least one, and not this node ({})",
                spec.id, self.node
            )));
        }
        let id = spec.id;
        if let Some(t) = self.transfers.get_mut(&id) {
            if t.spec.range != spec.range {
                return Err(Error::InvalidInput(format!(
                    "transfer {id} is known with another range"
                )));
            }
            match &t.phase {
                Phase::Failed(_) => {
                    let record = t.record();
                    t.sources = spec
                        .sources
                        .iter()
                        .map(|&n| new_source(n, record.sources.iter().find(|c| c.node == n)))
                        .collect();
                    t.spec = spec;
                    t.phase = Phase::Queued;
                    t.failures = 0;
                    t.finished = None;
                    self.queue.push_back(id);
                }
                Phase::Done => out.push(TransferEffect::Emit(TransferEvent::Done(
                    TransferDoneEvent {
                        id,
                        keys: t.keys,
                        bytes: t.bytes,
                    },
                ))),
                Phase::Queued | Phase::Running => {
                    if t.spec.sources != spec.sources {
                        return Err(Error::InvalidInput(format!(
                            "transfer {id} is running with other sources; cancel it first"
                        )));
                    }
                }
            }
        } else {
            let (keys, bytes, batches, cursors) = match record {
                Some(r) if r.spec.range != spec.range => {
                    return Err(Error::InvalidInput(format!(
                        "transfer {id} was recorded with another range"
                    )))
                }
                Some(r) => (r.keys, r.bytes, r.batches, r.sources),
                None => (0, 0, 0, Vec::new()),
            };
            let sources: Vec<Source> = spec
                .sources
                .iter()
                .map(|&n| new_source(n, cursors.iter().find(|c| c.node == n)))
                .collect();
            let done = sources.iter().all(|s| s.done);
            let t = Transfer {
                spec,
                sources,
                keys,
                bytes,
                batches,
                phase: if done { Phase::Done } else { Phase::Queued },
                failures: 0,
                started: None,
                finished: done.then_some(now),
            };
            if done {
                out.push(TransferEffect::Emit(TransferEvent::Done(
                    TransferDoneEvent { id, keys, bytes },
                )));
            } else {
                self.queue.push_back(id);
            }
            self.transfers.insert(id, t);
        }
        self.promote(now);
        self.pump(now, out);
        self.transfers
            .get(&id)
            .map(Transfer::progress)
            .ok_or_else(|| Error::InvalidInput(format!("transfer {id} vanished")))
    }

    /// Stops transfer `id` and forgets it (its record is deleted). What
    /// was stored stays. Returns whether it was known.
    pub fn cancel(&mut self, now: Instant, id: u64, out: &mut Vec<TransferEffect>) -> bool {
        let result = self.cancel_inner(now, id, out);
        self.recount();
        result
    }

    /// [`Self::cancel`] but for the count of live transfers.
    fn cancel_inner(&mut self, now: Instant, id: u64, out: &mut Vec<TransferEffect>) -> bool {
        let known = self.transfers.remove(&id).is_some();
        self.queue.retain(|&q| q != id);
        out.push(TransferEffect::Store(TransferWork::Forget { id }));
        self.promote(now);
        self.pump(now, out);
        known
    }

    /// Feeds a message from node `from`: a batch or a refusal. Anything
    /// that does not answer a pull now out (late, duplicated, for an
    /// unknown transfer) is ignored.
    pub fn step(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: TransferMsg,
        out: &mut Vec<TransferEffect>,
    ) {
        self.step_inner(now, from, msg, out);
        self.recount();
    }

    /// [`Self::step`] but for the count of live transfers.
    fn step_inner(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: TransferMsg,
        out: &mut Vec<TransferEffect>,
    ) {
        match msg {
            TransferMsg::Batch {
                transfer,
                after,
                items,
                next,
                done,
                bytes,
            } => self.on_batch(now, from, transfer, after, items, next, done, bytes, out),
            TransferMsg::Refused {
                transfer,
                after,
                reason,
            } => self.on_refused(now, from, transfer, after, reason, out),
            _ => {}
        }
        self.pump(now, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_batch(
        &mut self,
        now: Instant,
        from: NodeId,
        id: u64,
        after: Option<Vec<u8>>,
        items: Vec<TransferItem>,
        next: Option<Vec<u8>>,
        done: bool,
        bytes: u64,
        out: &mut Vec<TransferEffect>,
    ) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        if t.phase != Phase::Running {
            return;
        }
        let range = t.spec.range;
        let Some(i) = t.sources.iter().position(|s| s.node == from) else {
            return;
        };
        let s = &t.sources[i];
        if !matches!(s.step, Step::Pulling { .. }) || s.after != after {
            return;
        }
        // A batch must stay in the range and move the cursor forward (or
        // end the range); anything else would loop or store foreign keys.
        let next_ok = match &next {
            Some(k) => scan_ranges(range, Some(k)).is_ok(),
            None => items.is_empty(),
        };
        let progresses = done || (!items.is_empty() && next != after);
        if !next_ok || !progresses || !batch_token_check(range, &items) {
            self.fail(
                now,
                id,
                i,
                "a batch outside the range or not advancing".into(),
                out,
            );
            return;
        }
        self.throttle.charge(now, bytes);
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let keys = items.len() as u64;
        let s = &mut t.sources[i];
        s.waiting = false;
        s.step = Step::Storing {
            next: next.clone(),
            done,
            keys,
            bytes,
        };
        // The record as it will be once this batch is stored.
        let mut record = t.record();
        record.sources[i].after = next;
        record.sources[i].done = done;
        record.keys += keys;
        record.bytes += bytes;
        record.batches += 1;
        out.push(TransferEffect::Store(TransferWork::Merge {
            id,
            source: from,
            items,
            record,
        }));
    }

    fn on_refused(
        &mut self,
        now: Instant,
        from: NodeId,
        id: u64,
        after: Option<Vec<u8>>,
        reason: TransferRefusal,
        out: &mut Vec<TransferEffect>,
    ) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let Some(i) = t.sources.iter().position(|s| s.node == from) else {
            return;
        };
        let s = &mut t.sources[i];
        if t.phase != Phase::Running || !matches!(s.step, Step::Pulling { .. }) || s.after != after
        {
            return;
        }
        if reason.is_wait() {
            s.waiting = true;
            self.back_off(now, id, i);
        } else {
            self.fail(now, id, i, reason.to_string(), out);
        }
    }

    /// Reports that a [`TransferWork::Merge`] finished: `Ok` once the
    /// batch and the record are stored, `Err` with the reason otherwise.
    pub fn stored(
        &mut self,
        now: Instant,
        id: u64,
        source: NodeId,
        result: std::result::Result<(), String>,
        out: &mut Vec<TransferEffect>,
    ) {
        self.stored_inner(now, id, source, result, out);
        self.recount();
    }

    /// [`Self::stored`] but for the count of live transfers.
    fn stored_inner(
        &mut self,
        now: Instant,
        id: u64,
        source: NodeId,
        result: std::result::Result<(), String>,
        out: &mut Vec<TransferEffect>,
    ) {
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        let Some(i) = t.sources.iter().position(|s| s.node == source) else {
            return;
        };
        let Step::Storing {
            next,
            done,
            keys,
            bytes,
        } = t.sources[i].step.clone()
        else {
            return;
        };
        match result {
            Ok(()) => {
                let s = &mut t.sources[i];
                s.after = next;
                s.done = done;
                s.attempts = 0;
                s.step = Step::Ready;
                t.keys += keys;
                t.bytes += bytes;
                t.batches += 1;
                t.failures = 0;
                if t.sources.iter().all(|s| s.done) && t.phase == Phase::Running {
                    t.phase = Phase::Done;
                    t.finished = Some(now);
                    out.push(TransferEffect::Emit(TransferEvent::Done(
                        TransferDoneEvent {
                            id,
                            keys: t.keys,
                            bytes: t.bytes,
                        },
                    )));
                    self.promote(now);
                }
            }
            Err(why) => self.fail(now, id, i, format!("storing a batch: {why}"), out),
        }
        self.pump(now, out);
    }

    /// Retries timed-out pulls and ended backoffs, and sends pulls the
    /// throttle now allows. Call it every few milliseconds.
    /// It changes no transfer's phase, so the count of live transfers
    /// stands (the randomized test of the count ticks too).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<TransferEffect>) {
        let timeout = self.config.pull_timeout;
        let mut timed_out = Vec::new();
        for (&id, t) in &mut self.transfers {
            for (i, s) in t.sources.iter_mut().enumerate() {
                match s.step {
                    Step::Pulling { since } if now.saturating_duration_since(since) >= timeout => {
                        s.waiting = true;
                        timed_out.push((id, i));
                    }
                    Step::Backoff { until } if now >= until => s.step = Step::Ready,
                    _ => {}
                }
            }
        }
        for (id, i) in timed_out {
            self.back_off(now, id, i);
        }
        self.pump(now, out);
    }

    /// How long until the throttle lets the next pull go (for status).
    pub fn throttle_wait(&mut self, now: Instant) -> Duration {
        self.throttle.wait(now)
    }

    fn back_off(&mut self, now: Instant, id: u64, i: usize) {
        let (min, max) = (self.config.backoff_min, self.config.backoff_max);
        let Some(s) = self
            .transfers
            .get_mut(&id)
            .and_then(|t| t.sources.get_mut(i))
        else {
            return;
        };
        s.attempts = s.attempts.saturating_add(1);
        let exp = s.attempts.saturating_sub(1).min(20);
        let base = min.saturating_mul(1 << exp).min(max);
        // Jitter from the upper half, so receivers that lost the same
        // source do not all come back at once, and none waits less than
        // half its step.
        let half = base / 2;
        let jitter = self.rng.random_range(0..=half.as_millis() as u64);
        s.step = Step::Backoff {
            until: now + half + Duration::from_millis(jitter),
        };
    }

    fn fail(
        &mut self,
        now: Instant,
        id: u64,
        i: usize,
        why: String,
        out: &mut Vec<TransferEffect>,
    ) {
        let max = self.config.max_failures;
        let Some(t) = self.transfers.get_mut(&id) else {
            return;
        };
        t.failures += 1;
        if t.failures >= max {
            out.push(TransferEffect::Emit(TransferEvent::Failed {
                id,
                why: why.clone(),
            }));
            t.phase = Phase::Failed(why);
            t.finished = Some(now);
            for s in &mut t.sources {
                s.step = Step::Ready;
                s.waiting = false;
            }
            self.promote(now);
        } else {
            self.back_off(now, id, i);
        }
    }

    /// Moves queued transfers to running while there is room.
    fn promote(&mut self, now: Instant) {
        let running = self
            .transfers
            .values()
            .filter(|t| t.phase == Phase::Running)
            .count();
        let mut room = self.config.max_concurrent.saturating_sub(running);
        while room > 0 {
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            if let Some(t) = self.transfers.get_mut(&id) {
                if t.phase == Phase::Queued {
                    t.phase = Phase::Running;
                    t.started.get_or_insert(now);
                    room -= 1;
                }
            }
        }
    }

    /// Sends a pull for every ready source of every running transfer, as
    /// far as the throttle allows.
    fn pump(&mut self, now: Instant, out: &mut Vec<TransferEffect>) {
        let max_bytes = self.config.max_batch_bytes;
        for (&id, t) in &mut self.transfers {
            if t.phase != Phase::Running {
                continue;
            }
            for s in &mut t.sources {
                if s.done || !matches!(s.step, Step::Ready) {
                    continue;
                }
                if !self.throttle.ready(now) {
                    return;
                }
                s.step = Step::Pulling { since: now };
                out.push(TransferEffect::Send {
                    to: s.node,
                    msg: TransferMsg::Pull {
                        transfer: id,
                        range: t.spec.range,
                        after: s.after.clone(),
                        max_bytes,
                        fence: t.spec.fence,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::replica::object_key;
    use crate::version::{CausalContext, Payload, Timestamp};

    const ME: NodeId = NodeId(9);
    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn config() -> TransferConfig {
        TransferConfig {
            max_concurrent: 1,
            max_batch_bytes: 100,
            bytes_per_sec: 0,
            pull_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_failures: 3,
            max_serving: 4,
        }
    }

    fn whole() -> TokenRange {
        TokenRange {
            after: Token(0),
            through: Token(0),
        }
    }

    fn spec(id: u64, sources: &[NodeId]) -> TransferSpec {
        TransferSpec {
            id,
            range: whole(),
            sources: sources.to_vec(),
            fence: None,
        }
    }

    fn item(key: &str) -> TransferItem {
        let mut object = Object::new();
        object
            .put(
                A,
                &CausalContext::empty(),
                Payload::Value(key.as_bytes().to_vec()),
                Timestamp::from_ms(1),
                4,
            )
            .unwrap();
        TransferItem {
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
            object,
        }
    }

    fn cursor_of(i: &TransferItem) -> Option<Vec<u8>> {
        Some(object_key(&i.bucket, &i.key).unwrap())
    }

    /// The pulls in `out`, as (to, transfer, after).
    fn pulls(out: &[TransferEffect]) -> Vec<(NodeId, u64, Option<Vec<u8>>)> {
        out.iter()
            .filter_map(|e| match e {
                TransferEffect::Send {
                    to,
                    msg:
                        TransferMsg::Pull {
                            transfer, after, ..
                        },
                } => Some((*to, *transfer, after.clone())),
                _ => None,
            })
            .collect()
    }

    fn batch(id: u64, after: Option<Vec<u8>>, items: Vec<TransferItem>, done: bool) -> TransferMsg {
        let next = items.last().map(cursor_of).unwrap_or(after.clone());
        TransferMsg::Batch {
            transfer: id,
            after,
            bytes: 10 * items.len() as u64,
            items,
            next,
            done,
        }
    }

    fn stores(out: &[TransferEffect]) -> Vec<(u64, NodeId, usize, TransferRecord)> {
        out.iter()
            .filter_map(|e| match e {
                TransferEffect::Store(TransferWork::Merge {
                    id,
                    source,
                    items,
                    record,
                }) => Some((*id, *source, items.len(), record.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_lost_reply_is_pulled_again_from_the_stored_cursor() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        assert!(!m.is_active(), "no transfer yet");
        m.start(t0, spec(7, &[A]), None, &mut out).unwrap();
        assert!(m.is_active());
        assert_eq!(pulls(&out), vec![(A, 7, None)]);

        // First batch arrives and is stored: the cursor advances.
        let first = vec![item("k1"), item("k2")];
        let c1 = cursor_of(&first[1]);
        out.clear();
        m.step(t0, A, batch(7, None, first, false), &mut out);
        let s = stores(&out);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].3.sources[0].after, c1,
            "the record holds the new cursor"
        );
        assert!(pulls(&out).is_empty(), "no pull before the batch is stored");
        out.clear();
        m.stored(t0, 7, A, Ok(()), &mut out);
        assert_eq!(pulls(&out), vec![(A, 7, c1.clone())]);

        // That pull's reply is lost: after the timeout and a backoff, the
        // same cursor is pulled again, never the start.
        out.clear();
        let t1 = t0 + Duration::from_secs(1);
        m.tick(t1, &mut out);
        assert!(pulls(&out).is_empty(), "backing off");
        assert_eq!(
            m.progress_of(7).unwrap().state,
            TransferState::WaitingForSource
        );
        m.tick(t1 + Duration::from_millis(100), &mut out);
        assert_eq!(pulls(&out), vec![(A, 7, c1.clone())]);

        // A late duplicate of the first batch is ignored.
        out.clear();
        m.step(t1, A, batch(7, None, vec![item("k1")], false), &mut out);
        assert!(stores(&out).is_empty());

        // The answer to the retried pull ends the range.
        m.step(
            t1,
            A,
            batch(7, c1.clone(), vec![item("k3")], true),
            &mut out,
        );
        assert_eq!(stores(&out).len(), 1);
        out.clear();
        m.stored(t1, 7, A, Ok(()), &mut out);
        assert!(out.contains(&TransferEffect::Emit(TransferEvent::Done(
            TransferDoneEvent {
                id: 7,
                keys: 3,
                bytes: 30
            }
        ))));
        let p = m.progress_of(7).unwrap();
        assert_eq!((p.state, p.keys, p.batches), (TransferState::Done, 3, 2));
        assert!(!m.is_active(), "a done transfer needs no tick");
    }

    /// Whether any transfer is queued or running, by looking at each.
    fn scanned_active(m: &Transfers) -> bool {
        m.transfers
            .values()
            .any(|t| matches!(t.phase, Phase::Queued | Phase::Running))
    }

    /// `is_active` answers from a count kept by the public calls: random
    /// starts, batches, stores that succeed or fail, refusals, ticks and
    /// cancels over a few transfers, checked against a scan after each.
    #[test]
    fn the_count_of_live_transfers_follows_every_call() {
        let mut rng = StdRng::seed_from_u64(0x7a5f);
        let t0 = Instant::now();
        let mut seen_both = (false, false);
        for round in 0..20 {
            let mut m = Transfers::new(ME, config(), round);
            let mut now = t0;
            let mut out = Vec::new();
            for step in 0..300 {
                // One, two or three transfers: with one, all of them
                // end often.
                let id = rng.random_range(1..=1 + round % 3);
                let from = if rng.random_bool(0.5) { A } else { B };
                match rng.random_range(0..7) {
                    0 => {
                        let sources: &[NodeId] = match rng.random_range(0..3) {
                            0 => &[A],
                            1 => &[B],
                            _ => &[A, B],
                        };
                        let _ = m.start(now, spec(id, sources), None, &mut out);
                    }
                    1 | 2 => {
                        let key = format!("k{step}");
                        let done = rng.random_bool(0.3);
                        m.step(now, from, batch(id, None, vec![item(&key)], done), &mut out);
                    }
                    3 => {
                        let result = if rng.random_bool(0.7) {
                            Ok(())
                        } else {
                            Err("disk full".to_string())
                        };
                        m.stored(now, id, from, result, &mut out);
                    }
                    4 => {
                        m.step(
                            now,
                            from,
                            TransferMsg::Refused {
                                transfer: id,
                                after: None,
                                reason: if rng.random_bool(0.5) {
                                    TransferRefusal::Busy
                                } else {
                                    TransferRefusal::BadRequest("no".to_string())
                                },
                            },
                            &mut out,
                        );
                    }
                    5 => {
                        now += Duration::from_millis(rng.random_range(0..1500));
                        m.tick(now, &mut out);
                    }
                    _ => {
                        if rng.random_bool(0.2) {
                            m.cancel(now, id, &mut out);
                        }
                    }
                }
                out.clear();
                let scanned = scanned_active(&m);
                assert_eq!(m.is_active(), scanned, "round {round}, step {step}");
                if scanned {
                    seen_both.0 = true;
                } else if !m.transfers.is_empty() {
                    seen_both.1 = true;
                }
            }
        }
        assert!(
            seen_both.0 && seen_both.1,
            "the walk saw live transfers and only ended ones: {seen_both:?}"
        );
    }

    #[test]
    fn a_restart_resumes_from_the_persisted_record() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        m.start(t0, spec(7, &[A]), None, &mut out).unwrap();
        let first = vec![item("k1")];
        out.clear();
        m.step(t0, A, batch(7, None, first, false), &mut out);
        let record = stores(&out)[0].3.clone();
        // The process dies here, after the batch and record were stored.
        let mut again = Transfers::new(ME, config(), 2);
        out.clear();
        let p = again
            .start(t0, spec(7, &[A]), Some(record.clone()), &mut out)
            .unwrap();
        assert_eq!((p.keys, p.batches), (1, 1));
        assert_eq!(pulls(&out), vec![(A, 7, record.sources[0].after.clone())]);
        // Starting it again is a no-op.
        out.clear();
        again.start(t0, spec(7, &[A]), None, &mut out).unwrap();
        assert!(out.is_empty());
        // A record with another range is refused.
        let mut other = spec(8, &[A]);
        other.range.through = Token(5);
        let mut rec = record;
        rec.spec.id = 8;
        assert!(again.start(t0, other, Some(rec), &mut out).is_err());
    }

    #[test]
    fn every_source_is_pulled_to_its_end() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        m.start(t0, spec(3, &[A, B]), None, &mut out).unwrap();
        assert_eq!(pulls(&out), vec![(A, 3, None), (B, 3, None)]);
        out.clear();
        m.step(t0, A, batch(3, None, vec![item("a")], true), &mut out);
        m.stored(t0, 3, A, Ok(()), &mut out);
        assert!(!out.iter().any(|e| matches!(e, TransferEffect::Emit(_))));
        assert!(pulls(&out).is_empty(), "A is done; B's pull is still out");
        // B's batch, with B's own cursor.
        m.step(t0, B, batch(3, None, vec![item("b")], false), &mut out);
        m.stored(t0, 3, B, Ok(()), &mut out);
        let c = cursor_of(&item("b"));
        assert_eq!(pulls(&out), vec![(B, 3, c.clone())]);
        out.clear();
        m.step(t0, B, batch(3, c, vec![], true), &mut out);
        m.stored(t0, 3, B, Ok(()), &mut out);
        assert!(out.contains(&TransferEffect::Emit(TransferEvent::Done(
            TransferDoneEvent {
                id: 3,
                keys: 2,
                bytes: 20
            }
        ))));
    }

    #[test]
    fn refusals_wait_or_count_as_failures() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        m.start(t0, spec(1, &[A]), None, &mut out).unwrap();
        let busy = TransferMsg::Refused {
            transfer: 1,
            after: None,
            reason: TransferRefusal::Busy,
        };
        let mut now = t0;
        // Busy any number of times: waiting, never failed.
        for _ in 0..10 {
            out.clear();
            m.step(now, A, busy.clone(), &mut out);
            assert_eq!(
                m.progress_of(1).unwrap().state,
                TransferState::WaitingForSource
            );
            now += Duration::from_secs(2);
            m.tick(now, &mut out);
            assert_eq!(pulls(&out), vec![(A, 1, None)]);
        }
        // A failing source: after max_failures in a row the transfer fails.
        let failed = TransferMsg::Refused {
            transfer: 1,
            after: None,
            reason: TransferRefusal::Failed("disk".into()),
        };
        for round in 0..3 {
            out.clear();
            m.step(now, A, failed.clone(), &mut out);
            let failures: Vec<_> = out
                .iter()
                .filter(|e| matches!(e, TransferEffect::Emit(TransferEvent::Failed { .. })))
                .collect();
            // The listener hears of the failure once, when it stops.
            assert_eq!(failures.len(), usize::from(round == 2), "{out:?}");
            now += Duration::from_secs(2);
            m.tick(now, &mut out);
            assert_eq!(pulls(&out).len(), usize::from(round < 2));
        }
        assert!(out.contains(&TransferEffect::Emit(TransferEvent::Failed {
            id: 1,
            why: "source failed: disk".into()
        })));
        let p = m.progress_of(1).unwrap();
        assert!(matches!(p.state, TransferState::Failed(ref why) if why.contains("disk")));
        // Starting it again resumes it.
        out.clear();
        m.start(now, spec(1, &[A]), None, &mut out).unwrap();
        assert_eq!(pulls(&out), vec![(A, 1, None)]);
    }

    #[test]
    fn a_batch_outside_the_range_is_not_stored() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        let k = item("k");
        let token = key_token(&k.bucket, &k.key);
        let narrow = TokenRange {
            after: Token(token.0.wrapping_add(10)),
            through: Token(token.0.wrapping_add(20)),
        };
        let s = TransferSpec {
            id: 1,
            range: narrow,
            sources: vec![A],
            fence: None,
        };
        m.start(t0, s, None, &mut out).unwrap();
        out.clear();
        m.step(t0, A, batch(1, None, vec![k], true), &mut out);
        assert!(stores(&out).is_empty());
    }

    #[test]
    fn concurrency_is_bounded_and_the_queue_moves_on() {
        let t0 = Instant::now();
        let mut m = Transfers::new(ME, config(), 1);
        let mut out = Vec::new();
        m.start(t0, spec(1, &[A]), None, &mut out).unwrap();
        m.start(t0, spec(2, &[B]), None, &mut out).unwrap();
        assert_eq!(pulls(&out), vec![(A, 1, None)]);
        assert_eq!(m.progress_of(2).unwrap().state, TransferState::Queued);
        out.clear();
        assert!(m.cancel(t0, 1, &mut out));
        assert!(out.contains(&TransferEffect::Store(TransferWork::Forget { id: 1 })));
        assert_eq!(pulls(&out), vec![(B, 2, None)]);
        // Bad specs are refused.
        assert!(m.start(t0, spec(3, &[]), None, &mut out).is_err());
        assert!(m.start(t0, spec(3, &[ME]), None, &mut out).is_err());
        assert!(m.start(t0, spec(3, &[A, A]), None, &mut out).is_err());
    }

    #[test]
    fn the_throttle_paces_pulls() {
        let t0 = Instant::now();
        let cfg = TransferConfig {
            bytes_per_sec: 100,
            ..config()
        };
        let mut m = Transfers::new(ME, cfg, 1);
        let mut out = Vec::new();
        m.start(t0, spec(1, &[A]), None, &mut out).unwrap();
        out.clear();
        // 30 items of 10 bytes: 300 bytes against a 100-byte credit.
        let items: Vec<TransferItem> = (0..30).map(|i| item(&format!("k{i:02}"))).collect();
        let c = cursor_of(items.last().unwrap());
        m.step(t0, A, batch(1, None, items, false), &mut out);
        m.stored(t0, 1, A, Ok(()), &mut out);
        assert!(pulls(&out).is_empty(), "200 bytes of debt");
        assert_eq!(m.throttle_wait(t0), Duration::from_secs(2));
        m.tick(t0 + Duration::from_millis(1990), &mut out);
        assert!(pulls(&out).is_empty());
        m.tick(t0 + Duration::from_secs(2), &mut out);
        assert_eq!(pulls(&out), vec![(A, 1, c)]);
    }

    #[test]
    fn scan_ranges_cover_the_range_after_the_cursor() {
        let plain = TokenRange {
            after: Token(10),
            through: Token(20),
        };
        let r = scan_ranges(plain, None).unwrap();
        assert_eq!(r, vec![object_range(Token(11), Token(20))]);
        let whole = scan_ranges(
            TokenRange {
                after: Token(u64::MAX),
                through: Token(u64::MAX),
            },
            None,
        )
        .unwrap();
        assert_eq!(whole, vec![object_range(Token(0), Token(u64::MAX))]);
        // A cursor in the second segment of a wrapping range skips the first.
        let wrapping = TokenRange {
            after: Token(u64::MAX - 5),
            through: Token(u64::MAX / 2),
        };
        let mut key = None;
        for i in 0..1000u32 {
            let k = i.to_be_bytes();
            let t = key_token(b"b", &k);
            if t.0 < 1000 || (t.0 > 10 && t.0 < u64::MAX / 4) {
                key = Some(object_key(b"b", &k).unwrap());
                break;
            }
        }
        let key = key.unwrap();
        let r = scan_ranges(wrapping, Some(&key)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].start, Bound::Excluded(key.clone()));
        // A cursor outside the range, or not an object key, is refused.
        assert!(scan_ranges(plain, Some(&key)).is_err());
        assert!(scan_ranges(plain, Some(b"\x02meta")).is_err());
    }

    #[test]
    fn a_store_serves_a_range_in_pages_and_drops_exactly_it() {
        use crate::replication::replica::ReplicaStore;
        use crate::storage::MemoryEngine;
        use std::sync::Arc;
        let store = ReplicaStore::open(A, Arc::new(MemoryEngine::new()), 4, 10).unwrap();
        let mut all = Vec::new();
        for i in 0..500u32 {
            let it = item(&format!("key{i}"));
            store
                .merge_transferred(std::slice::from_ref(&it), |_| {
                    crate::version::ConflictPolicy::Siblings
                })
                .unwrap();
            all.push(it);
        }
        let wrapping = TokenRange {
            after: Token(u64::MAX / 4 * 3),
            through: Token(u64::MAX / 4),
        };
        let want: Vec<&TransferItem> = all
            .iter()
            .filter(|i| wrapping.contains(key_token(&i.bucket, &i.key)))
            .collect();
        // Pages of about 1 KiB, in token order, cover the range exactly.
        let (mut got, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let b = store.range_batch(wrapping, after.as_deref(), 1024).unwrap();
            assert!(!b.items.is_empty() || b.done);
            pages += 1;
            got.extend(b.items);
            if b.done {
                break;
            }
            after = b.next;
        }
        assert!(pages > 5, "{pages} pages");
        assert_eq!(got.len(), want.len());
        for i in &want {
            assert!(got.contains(i));
        }
        let tokens: Vec<u64> = got
            .iter()
            .map(|i| {
                key_token(&i.bucket, &i.key)
                    .0
                    .wrapping_sub(wrapping.after.0)
            })
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "in range order");
        // Merging a batch again changes nothing.
        store
            .merge_transferred(&got, |_| crate::version::ConflictPolicy::Siblings)
            .unwrap();
        assert_eq!(store.count_objects(10_000).unwrap(), 500);
        // Drop in small chunks: exactly the range goes.
        assert_eq!(store.drop_range(wrapping, 7).unwrap(), want.len() as u64);
        assert_eq!(
            store.count_objects(10_000).unwrap(),
            500 - want.len() as u64
        );
        let rest = store.range_batch(wrapping, None, u64::MAX).unwrap();
        assert!(rest.items.is_empty() && rest.done);
    }
}
