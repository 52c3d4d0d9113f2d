//! The handoff role: this node's range transfers, both ways (riak_core's
//! handoff sender and receiver in one role), as one machine with no I/O.
//!
//! It decides what the Handoff actor used to decide in its handlers:
//!
//! - **Receiving.** It owns the [`Transfers`] machine. A transfer started
//!   with an id this machine does not know first has its persisted record
//!   read ([`HandoffWork::Load`]), so that it resumes from its cursors; a
//!   known one is started at once. Either way the caller hears how it
//!   started ([`HandoffEvent::Started`]). Each batch a source sends is
//!   merged into the store under its buckets' policies and the transfer's
//!   record persisted ([`TransferWork::Merge`]); then the machine hears it
//!   is stored. A batch stored after its transfer was cancelled wrote the
//!   record the cancel deleted, so the record is deleted again
//!   ([`TransferWork::Forget`]). A finished transfer is reported as
//!   [`HandoffEvent::Done`].
//! - **Serving.** A [`TransferMsg::Pull`] is one range scan
//!   ([`HandoffWork::Scan`]) of at most [`SERVE_MAX_BYTES`], with at most
//!   `max_serving` scans at once; a pull beyond that is refused as busy
//!   and the receiver retries. What it served is counted per (receiver,
//!   transfer), the most recent [`SERVED_KEPT`] transfers kept.
//! - **Dropping.** A range given away is deleted when the caller (the ring
//!   transition driver) says so ([`HandoffCommand::Drop`]), keeping the
//!   objects of wider buckets this node still replicates.
//!
//! It does not decide which ranges move, or when: the ring manager does,
//! through [`HandoffCommand`]s.
//!
//! Effects come out as [`HandoffEffect`]s: pulls and their answers to send,
//! storage work for an executor ([`execute`]: a blocking thread in a node,
//! inline in the simulator), whose result comes back through
//! [`HandoffRole::finished`], and events. Time comes in as `now`; the
//! backoff jitter is seeded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use super::stored_buckets::BucketView;
use crate::codec::{self, DEFAULT_MAX_FRAME_BYTES};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::replication::replica::{RangeBatch, ReplicaStore};
use crate::replication::transfer::{
    record_name, ServedStats, TransferDoneEvent, TransferEffect, TransferEvent, TransferProgress,
    TransferRecord, TransferRefusal, TransferSpec, TransferWork, Transfers,
};
use crate::replication::{BucketProps, TransferConfig, TransferMsg};
use crate::ring::{Ring, RingFence, TokenRange};
use crate::version::ConflictPolicy;

/// Keys deleted per engine batch by [`HandoffWork::Drop`]: large enough to
/// amortise a WAL write, small enough to keep one batch well under a
/// memtable.
pub const DROP_CHUNK: usize = 1024;

/// The most bytes a served batch holds, whatever the pull asks: half the
/// frame limit, leaving room for the envelope around the objects.
pub const SERVE_MAX_BYTES: u64 = (DEFAULT_MAX_FRAME_BYTES / 2) as u64;

/// The transfers a source keeps serving statistics for: the most recent
/// ones (a long-lived node serves a transfer per range per change).
pub const SERVED_KEPT: usize = 256;

/// What the ring manager asks of handoff.
#[derive(Clone, Debug, PartialEq)]
pub enum HandoffCommand {
    /// Start or resume a transfer into this node. Idempotent for a known
    /// id; an id the machine does not know resumes from its persisted
    /// record, if any. Answered with [`HandoffEvent::Started`].
    Start(TransferSpec),
    /// Stop a transfer and forget its record. What was stored stays.
    Cancel(u64),
    /// Delete this node's objects in a token range. Answered with
    /// [`HandoffEvent::Dropped`].
    Drop {
        /// The tokens.
        range: TokenRange,
        /// When set, the ring in force and the replicas per key the range
        /// was found unreplicated for: objects of a bucket whose `n` is
        /// larger are kept when this node is among their first `n`
        /// replicas on that ring. When absent, every object of the range
        /// is deleted.
        keep_wide: Option<(Arc<Ring>, usize)>,
    },
}

/// Storage work the role asks of an executor ([`execute`]); what it finds
/// comes back as a [`HandoffDone`].
#[derive(Clone, Debug, PartialEq)]
pub enum HandoffWork {
    /// Read the persisted record of a transfer the machine does not know.
    Load {
        /// The transfer to start once it is read.
        spec: TransferSpec,
    },
    /// The receiving machine's work: merge a batch then persist its
    /// record, or delete a record ([`TransferWork`]).
    Transfer(TransferWork),
    /// Serve a pull: read the objects of `range` after `after`.
    Scan {
        /// The receiver.
        from: NodeId,
        /// Its transfer id.
        transfer: u64,
        /// The tokens.
        range: TokenRange,
        /// The engine key to read after (`None`: from the start).
        after: Option<Vec<u8>>,
        /// Stop once the batch holds this many bytes (at least one object
        /// is read).
        max_bytes: u64,
        /// The pull's fence: the scan runs only while this node's ring
        /// state has the same one (see [`crate::ring::RingFence`]).
        fence: Option<RingFence>,
    },
    /// Delete this node's objects in a range (see [`HandoffCommand::Drop`]).
    Drop {
        /// The tokens.
        range: TokenRange,
        /// The wider buckets' rule, as in [`HandoffCommand::Drop`].
        keep_wide: Option<(Arc<Ring>, usize)>,
    },
}

impl HandoffWork {
    /// What to report for this work when it could not run at all (the
    /// executor's thread died): each kind fails with `why`, a forget is
    /// just reported.
    pub fn not_run(&self, why: &str) -> HandoffDone {
        match self {
            HandoffWork::Load { spec } => HandoffDone::Loaded {
                spec: spec.clone(),
                record: Err(Error::Replica(why.to_string())),
            },
            HandoffWork::Transfer(TransferWork::Merge { id, source, .. }) => HandoffDone::Merged {
                id: *id,
                source: *source,
                result: Err(why.to_string()),
            },
            HandoffWork::Transfer(TransferWork::Forget { id }) => {
                HandoffDone::Forgotten { id: *id }
            }
            HandoffWork::Scan {
                from,
                transfer,
                after,
                ..
            } => HandoffDone::Scanned {
                from: *from,
                transfer: *transfer,
                after: after.clone(),
                result: Err(TransferRefusal::Failed(why.to_string())),
            },
            HandoffWork::Drop { range, .. } => HandoffDone::Dropped {
                range: *range,
                result: Err(Error::Replica(why.to_string())),
            },
        }
    }
}

/// What storage work found, fed back with [`HandoffRole::finished`].
#[derive(Debug)]
pub enum HandoffDone {
    /// A transfer's record was read ([`HandoffWork::Load`]).
    Loaded {
        /// The transfer to start.
        spec: TransferSpec,
        /// Its record, if one was stored.
        record: Result<Option<TransferRecord>>,
    },
    /// A batch was merged and its record persisted, or not
    /// ([`TransferWork::Merge`]).
    Merged {
        /// The transfer.
        id: u64,
        /// The source the batch came from.
        source: NodeId,
        /// `Err` with the reason when the batch or the record was not
        /// stored.
        result: std::result::Result<(), String>,
    },
    /// A pull was read ([`HandoffWork::Scan`]).
    Scanned {
        /// The receiver.
        from: NodeId,
        /// Its transfer id.
        transfer: u64,
        /// The pull's cursor, echoed in the answer.
        after: Option<Vec<u8>>,
        /// The batch read, or why the pull is refused.
        result: std::result::Result<RangeBatch, TransferRefusal>,
    },
    /// A range was dropped ([`HandoffWork::Drop`]).
    Dropped {
        /// The tokens.
        range: TokenRange,
        /// How many objects were deleted.
        result: Result<u64>,
    },
    /// A record was deleted, or its deletion logged as failed
    /// ([`TransferWork::Forget`]).
    Forgotten {
        /// The transfer.
        id: u64,
    },
}

/// Events for whoever waits on the role. Not `Clone`, and compared by
/// hand: the crate's [`Error`] is neither cloneable nor comparable, so two
/// errors are equal here when their texts are.
#[derive(Debug)]
pub enum HandoffEvent {
    /// A transfer is done: every object of its range from every source is
    /// stored here.
    Done {
        /// The transfer.
        id: u64,
        /// Objects stored (over its whole life, restarts included).
        keys: u64,
        /// Bytes stored.
        bytes: u64,
    },
    /// The answer to one [`HandoffCommand::Start`]: exactly one per
    /// command, in the order their records were read.
    Started {
        /// The transfer.
        id: u64,
        /// Its progress once started, or why it was not.
        result: Result<TransferProgress>,
    },
    /// A transfer failed too many times in a row and stopped (see
    /// [`TransferEvent::Failed`]); starting it again resumes it.
    Failed {
        /// The transfer.
        id: u64,
        /// The last failure.
        why: String,
    },
    /// The answer to one [`HandoffCommand::Drop`].
    Dropped {
        /// The tokens.
        range: TokenRange,
        /// How many objects were deleted.
        result: Result<u64>,
    },
}

impl PartialEq for HandoffEvent {
    fn eq(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(a: &Result<T>, b: &Result<T>) -> bool {
            match (a, b) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a.to_string() == b.to_string(),
                _ => false,
            }
        }
        match (self, other) {
            (
                HandoffEvent::Done { id, keys, bytes },
                HandoffEvent::Done {
                    id: i,
                    keys: k,
                    bytes: b,
                },
            ) => (id, keys, bytes) == (i, k, b),
            (HandoffEvent::Started { id, result }, HandoffEvent::Started { id: i, result: r }) => {
                id == i && same(result, r)
            }
            (
                HandoffEvent::Dropped { range, result },
                HandoffEvent::Dropped {
                    range: g,
                    result: r,
                },
            ) => range == g && same(result, r),
            (HandoffEvent::Failed { id, why }, HandoffEvent::Failed { id: i, why: w }) => {
                id == i && why == w
            }
            _ => false,
        }
    }
}

/// Something the role wants done: the crate's one
/// [`crate::effect::Effect`] shape, with transfer messages (pulls, and
/// batches or refusals answering them), [`HandoffWork`] for the executor,
/// and [`HandoffEvent`]s.
pub type HandoffEffect = crate::effect::Effect<TransferMsg, HandoffWork, HandoffEvent>;

/// Serving statistics per (receiver, transfer), the oldest forgotten past
/// [`SERVED_KEPT`].
#[derive(Debug, Default)]
struct ServedTable {
    stats: BTreeMap<(NodeId, u64), ServedStats>,
    /// The keys of `stats`, oldest first.
    order: VecDeque<(NodeId, u64)>,
}

impl ServedTable {
    /// The statistics of `receiver`'s transfer `transfer`, made when new.
    fn entry(&mut self, receiver: NodeId, transfer: u64) -> &mut ServedStats {
        let key = (receiver, transfer);
        if !self.stats.contains_key(&key) {
            while self.stats.len() >= SERVED_KEPT {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.stats.remove(&old);
            }
            self.order.push_back(key);
        }
        self.stats.entry(key).or_insert_with(|| ServedStats {
            receiver,
            transfer,
            ..ServedStats::default()
        })
    }

    fn all(&self) -> Vec<ServedStats> {
        self.stats.values().cloned().collect()
    }
}

/// The role. See the module documentation.
#[derive(Debug)]
pub struct HandoffRole {
    machine: Transfers,
    max_serving: usize,
    serving: usize,
    served: ServedTable,
    /// Per transfer id, the starts whose record is being read, and how
    /// many of those were cancelled meanwhile (the oldest first): a start
    /// cancelled before its record is read must not start once it is, or
    /// it runs untracked by the ring manager, holding a slot for ever.
    loading: BTreeMap<u64, (usize, usize)>,
}

impl HandoffRole {
    /// The role of node `node`; `seed` seeds the backoff jitter.
    pub fn new(node: NodeId, config: TransferConfig, seed: u64) -> Self {
        HandoffRole {
            max_serving: config.max_serving.max(1),
            machine: Transfers::new(node, config, seed),
            serving: 0,
            served: ServedTable::default(),
            loading: BTreeMap::new(),
        }
    }

    /// Carries out a command of the ring manager.
    pub fn command(&mut self, now: Instant, cmd: HandoffCommand, out: &mut Vec<HandoffEffect>) {
        match cmd {
            HandoffCommand::Start(spec) => {
                if self.machine.knows(spec.id) {
                    self.start(now, spec, None, out);
                } else {
                    // An id this machine does not know: its record first.
                    self.loading.entry(spec.id).or_default().0 += 1;
                    out.push(HandoffEffect::Store(HandoffWork::Load { spec }));
                }
            }
            HandoffCommand::Cancel(id) => {
                if let Some((reading, cancelled)) = self.loading.get_mut(&id) {
                    *cancelled = *reading;
                }
                let mut effects = Vec::new();
                self.machine.cancel(now, id, &mut effects);
                self.carry(effects, out);
            }
            HandoffCommand::Drop { range, keep_wide } => {
                out.push(HandoffEffect::Store(HandoffWork::Drop { range, keep_wide }));
            }
        }
    }

    /// A transfer message from `from`: a pull is served (a scan, or a busy
    /// refusal beyond `max_serving`); batches and refusals go to the
    /// [`Transfers`] machine.
    pub fn step(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: TransferMsg,
        out: &mut Vec<HandoffEffect>,
    ) {
        match msg {
            TransferMsg::Pull {
                transfer,
                range,
                after,
                max_bytes,
                fence,
            } => self.serve(
                HandoffWork::Scan {
                    from,
                    transfer,
                    range,
                    after,
                    max_bytes: max_bytes.clamp(1, SERVE_MAX_BYTES),
                    fence,
                },
                out,
            ),
            msg @ (TransferMsg::Batch { .. } | TransferMsg::Refused { .. }) => {
                let mut effects = Vec::new();
                self.machine.step(now, from, msg, &mut effects);
                self.carry(effects, out);
            }
        }
    }

    /// Runs what is due at `now`: pull timeouts, backoffs, the throttle.
    /// Call it every few milliseconds.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<HandoffEffect>) {
        let mut effects = Vec::new();
        self.machine.tick(now, &mut effects);
        self.carry(effects, out);
    }

    /// What storage work found.
    pub fn finished(&mut self, now: Instant, done: HandoffDone, out: &mut Vec<HandoffEffect>) {
        match done {
            HandoffDone::Loaded { spec, record } if self.take_load(spec.id) => {
                out.push(HandoffEffect::Emit(HandoffEvent::Started {
                    id: spec.id,
                    result: Err(Error::InvalidInput(format!(
                        "transfer {} was cancelled before it started",
                        spec.id
                    ))),
                }));
                let _ = record;
            }
            HandoffDone::Loaded { spec, record } => match record {
                Ok(record) => self.start(now, spec, record, out),
                Err(e) => out.push(HandoffEffect::Emit(HandoffEvent::Started {
                    id: spec.id,
                    result: Err(e),
                })),
            },
            HandoffDone::Merged { id, source, result } => {
                if let Err(why) = &result {
                    crate::log::warn_every!(id, %source, error = %why, "a transferred batch was not stored");
                }
                if !self.machine.knows(id) {
                    // Cancelled while the batch was stored: its record was
                    // written after the cancel deleted it; delete it again.
                    out.push(HandoffEffect::Store(HandoffWork::Transfer(
                        TransferWork::Forget { id },
                    )));
                    return;
                }
                let mut effects = Vec::new();
                self.machine.stored(now, id, source, result, &mut effects);
                self.carry(effects, out);
            }
            HandoffDone::Scanned {
                from,
                transfer,
                after,
                result,
            } => {
                self.serving = self.serving.saturating_sub(1);
                let stats = self.served.entry(from, transfer);
                let msg = match result {
                    Ok(batch) => {
                        stats.pulls += 1;
                        stats.from_start += u64::from(after.is_none());
                        stats.keys += batch.items.len() as u64;
                        stats.bytes += batch.bytes;
                        TransferMsg::Batch {
                            transfer,
                            after,
                            items: batch.items,
                            next: batch.next,
                            done: batch.done,
                            bytes: batch.bytes,
                        }
                    }
                    Err(reason) => {
                        stats.refused += 1;
                        TransferMsg::Refused {
                            transfer,
                            after,
                            reason,
                        }
                    }
                };
                out.push(HandoffEffect::Send { to: from, msg });
            }
            HandoffDone::Dropped { range, result } => {
                out.push(HandoffEffect::Emit(HandoffEvent::Dropped { range, result }));
            }
            HandoffDone::Forgotten { .. } => {}
        }
    }

    /// Every incoming transfer known to the machine, by id.
    pub fn progress(&self) -> Vec<TransferProgress> {
        self.machine.progress()
    }

    /// Whether a transfer into this node is queued or running, so that
    /// [`HandoffRole::tick`] has work (see `Transfers::is_active`).
    pub fn is_active(&self) -> bool {
        self.machine.is_active()
    }

    /// Everything this node served as a source, by (receiver, transfer).
    pub fn served(&self) -> Vec<ServedStats> {
        self.served.all()
    }

    /// Whether transfer `id` is known to the machine.
    pub fn knows(&self, id: u64) -> bool {
        self.machine.knows(id)
    }

    /// Pulls being served now (scans out).
    pub fn serving(&self) -> usize {
        self.serving
    }

    /// Notes that a start's record was read; whether that start was
    /// cancelled meanwhile.
    fn take_load(&mut self, id: u64) -> bool {
        let Some((reading, cancelled)) = self.loading.get_mut(&id) else {
            return false;
        };
        *reading = reading.saturating_sub(1);
        let was_cancelled = *cancelled > 0;
        *cancelled = cancelled.saturating_sub(1);
        if *reading == 0 {
            self.loading.remove(&id);
        }
        was_cancelled
    }

    /// Starts `spec` in the machine, resuming from `record`, and answers.
    fn start(
        &mut self,
        now: Instant,
        spec: TransferSpec,
        record: Option<TransferRecord>,
        out: &mut Vec<HandoffEffect>,
    ) {
        let id = spec.id;
        let mut effects = Vec::new();
        let result = self.machine.start(now, spec, record, &mut effects);
        self.carry(effects, out);
        out.push(HandoffEffect::Emit(HandoffEvent::Started { id, result }));
    }

    /// Starts a pull's scan, or refuses it as busy beyond `max_serving`.
    fn serve(&mut self, scan: HandoffWork, out: &mut Vec<HandoffEffect>) {
        let HandoffWork::Scan {
            from,
            transfer,
            after,
            ..
        } = &scan
        else {
            return;
        };
        let stats = self.served.entry(*from, *transfer);
        if self.serving >= self.max_serving {
            stats.refused += 1;
            out.push(HandoffEffect::Send {
                to: *from,
                msg: TransferMsg::Refused {
                    transfer: *transfer,
                    after: after.clone(),
                    reason: TransferRefusal::Busy,
                },
            });
            return;
        }
        self.serving += 1;
        out.push(HandoffEffect::Store(scan));
    }

    /// Turns the machine's effects into the role's.
    fn carry(&self, effects: Vec<TransferEffect>, out: &mut Vec<HandoffEffect>) {
        for effect in effects {
            out.push(match effect {
                TransferEffect::Send { to, msg } => HandoffEffect::Send { to, msg },
                TransferEffect::Store(work) => HandoffEffect::Store(HandoffWork::Transfer(work)),
                TransferEffect::Emit(TransferEvent::Done(TransferDoneEvent {
                    id,
                    keys,
                    bytes,
                })) => {
                    debug!(id, keys, bytes, "transfer done");
                    HandoffEffect::Emit(HandoffEvent::Done { id, keys, bytes })
                }
                TransferEffect::Emit(TransferEvent::Failed { id, why }) => {
                    crate::log::warn_every!(id, %why, "transfer failed");
                    HandoffEffect::Emit(HandoffEvent::Failed { id, why })
                }
            });
        }
    }
}

/// Carries out `work` on `store` (blocking) for node `me`. `policy` gives
/// a bucket's conflict policy (the node's bucket table); only a merge
/// asks it. A failed forget is logged (the record is deleted again if the
/// transfer is cancelled again); every other failure is reported.
pub fn execute(
    store: &ReplicaStore,
    me: NodeId,
    work: HandoffWork,
    policy: &dyn Fn(&[u8]) -> ConflictPolicy,
) -> HandoffDone {
    match work {
        HandoffWork::Load { spec } => {
            let record = load_record(store, spec.id);
            HandoffDone::Loaded { spec, record }
        }
        HandoffWork::Transfer(TransferWork::Merge {
            id,
            source,
            items,
            record,
        }) => {
            let result = codec::encode(&record)
                .and_then(|bytes| {
                    store.merge_transferred(&items, policy)?;
                    store.store_meta(&record_name(id), &bytes)
                })
                .map_err(|e| e.to_string());
            HandoffDone::Merged { id, source, result }
        }
        HandoffWork::Transfer(TransferWork::Forget { id }) => {
            if let Err(e) = store.delete_meta(&record_name(id)) {
                crate::log::warn_every!(id, error = %e, "transfer record not deleted");
            }
            HandoffDone::Forgotten { id }
        }
        HandoffWork::Scan {
            from,
            transfer,
            range,
            after,
            max_bytes,
            fence,
        } => {
            let result = match (fence, store.fence()) {
                // The source must know the change the range moves for
                // before it serves it, and refuse stale requests from then
                // on; a source that knows a newer state serves a change
                // no longer in force.
                (Some(theirs), mine) if mine != Some(theirs) => {
                    Err(TransferRefusal::StaleRing(format!(
                        "the source's ring state ({}) is not the change's ({theirs})",
                        mine.map_or("none".to_string(), |f| f.to_string())
                    )))
                }
                _ => store
                    .range_batch(range, after.as_deref(), max_bytes)
                    .map_err(|e| match e {
                        Error::InvalidInput(why) => TransferRefusal::BadRequest(why),
                        other => TransferRefusal::Failed(other.to_string()),
                    }),
            };
            HandoffDone::Scanned {
                from,
                transfer,
                after,
                result,
            }
        }
        HandoffWork::Drop { range, keep_wide } => HandoffDone::Dropped {
            range,
            result: drop_range(store, me, range, keep_wide),
        },
    }
}

/// Reads transfer `id`'s persisted record, if any.
fn load_record(store: &ReplicaStore, id: u64) -> Result<Option<TransferRecord>> {
    match store.load_meta(&record_name(id))? {
        Some(b) => codec::decode::<TransferRecord>(&b, DEFAULT_MAX_FRAME_BYTES).map(Some),
        None => Ok(None),
    }
}

/// Deletes `me`'s objects of `range`. With `keep_wide` (the ring in force
/// and the replicas per key the range was found unreplicated for), objects
/// of wider buckets `me` still replicates stay, and every other object is
/// first handed off as hints to its replicas on that ring
/// ([`ReplicaStore::hand_off_range`]): a range is given away only once its
/// new owners pulled it, but they may have pulled it from another replica
/// while this one held writes the others missed. Without `keep_wide`
/// (a caller who knows the owners hold the range), the objects are deleted.
fn drop_range(
    store: &ReplicaStore,
    me: NodeId,
    range: TokenRange,
    keep_wide: Option<(Arc<Ring>, usize)>,
) -> Result<u64> {
    let Some((ring, n)) = keep_wide else {
        return store.drop_range(range, DROP_CHUNK);
    };
    let defaults = BucketProps {
        n,
        ..BucketProps::default()
    };
    let buckets = BucketView::load(store, &defaults)?;
    store.hand_off_range(
        range,
        DROP_CHUNK,
        |bucket, token| {
            let replicas = ring.preference_list(token, buckets.props(bucket).n);
            (!replicas.contains(&me)).then_some(replicas)
        },
        |bucket| buckets.props(bucket).policy.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::buckets::BucketEntry;
    use crate::replication::transfer::TransferItem;
    use crate::ring::claim::claim_join;
    use crate::ring::{key_token, Token};
    use crate::roles::coordinator::save_buckets;
    use crate::storage::memory::MemoryEngine;
    use crate::version::{CausalContext, Object, Payload, Timestamp};
    use std::collections::VecDeque;
    use std::time::Duration;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn config() -> TransferConfig {
        TransferConfig {
            max_concurrent: 2,
            max_batch_bytes: 300,
            bytes_per_sec: 0,
            pull_timeout: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            max_failures: 3,
            max_serving: 2,
        }
    }

    fn whole() -> TokenRange {
        TokenRange {
            after: Token(0),
            through: Token(0),
        }
    }

    fn spec(id: u64) -> TransferSpec {
        TransferSpec {
            id,
            range: whole(),
            sources: vec![A],
            fence: None,
        }
    }

    fn open(node: NodeId) -> ReplicaStore {
        ReplicaStore::open(node, Arc::new(MemoryEngine::new()), 4, 10).unwrap()
    }

    fn item(bucket: &str, key: &str) -> TransferItem {
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
            bucket: bucket.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
            object,
        }
    }

    /// `count` objects of bucket `b` in `store`.
    fn fill(store: &ReplicaStore, count: usize) -> Vec<TransferItem> {
        let items: Vec<TransferItem> = (0..count).map(|i| item("b", &format!("k{i:03}"))).collect();
        store
            .merge_transferred(&items, |_| ConflictPolicy::Siblings)
            .unwrap();
        items
    }

    fn siblings(_: &[u8]) -> ConflictPolicy {
        ConflictPolicy::Siblings
    }

    struct Node {
        id: NodeId,
        role: HandoffRole,
        store: ReplicaStore,
    }

    fn node(id: NodeId) -> Node {
        Node {
            id,
            role: HandoffRole::new(id, config(), id.0),
            store: open(id),
        }
    }

    /// What a run did: the events per node, and the work each node ran.
    #[derive(Default)]
    struct Trace {
        events: Vec<(NodeId, HandoffEvent)>,
        scans: usize,
        merges: usize,
        loads: usize,
    }

    /// Carries `effects` (of node `at`) and everything they lead to, by
    /// passing messages between the roles and running their work inline,
    /// until nothing is left.
    fn run(nodes: &mut [Node], now: Instant, at: NodeId, effects: Vec<HandoffEffect>) -> Trace {
        let mut trace = Trace::default();
        let mut queue: VecDeque<(NodeId, HandoffEffect)> =
            effects.into_iter().map(|e| (at, e)).collect();
        while let Some((at, effect)) = queue.pop_front() {
            let mut out = Vec::new();
            let next = match effect {
                HandoffEffect::Send { to, msg } => {
                    let n = nodes.iter_mut().find(|n| n.id == to).unwrap();
                    n.role.step(now, at, msg, &mut out);
                    to
                }
                HandoffEffect::Store(work) => {
                    match &work {
                        HandoffWork::Scan { .. } => trace.scans += 1,
                        HandoffWork::Transfer(TransferWork::Merge { .. }) => trace.merges += 1,
                        HandoffWork::Load { .. } => trace.loads += 1,
                        _ => {}
                    }
                    let n = nodes.iter_mut().find(|n| n.id == at).unwrap();
                    let done = execute(&n.store, n.id, work, &siblings);
                    n.role.finished(now, done, &mut out);
                    at
                }
                HandoffEffect::Emit(event) => {
                    trace.events.push((at, event));
                    continue;
                }
            };
            queue.extend(out.into_iter().map(|e| (next, e)));
        }
        trace
    }

    fn stored_record(store: &ReplicaStore, id: u64) -> Option<TransferRecord> {
        load_record(store, id).unwrap()
    }

    #[test]
    fn a_transfer_between_two_roles_moves_every_object() {
        let now = Instant::now();
        let mut nodes = [node(A), node(B)];
        let items = fill(&nodes[0].store, 40);
        let mut out = Vec::new();
        nodes[1]
            .role
            .command(now, HandoffCommand::Start(spec(7)), &mut out);
        assert_eq!(
            out,
            vec![HandoffEffect::Store(HandoffWork::Load { spec: spec(7) })]
        );
        let trace = run(&mut nodes, now, B, out);

        // B started the transfer, then finished it; A emitted nothing.
        assert_eq!(trace.events.len(), 2, "{:?}", trace.events);
        assert!(trace.events.iter().all(|(n, _)| *n == B));
        assert!(matches!(
            &trace.events[0].1,
            HandoffEvent::Started { id: 7, result: Ok(p) } if p.keys == 0
        ));
        let HandoffEvent::Done { id, keys, bytes } = trace.events[1].1 else {
            panic!("not done: {:?}", trace.events[1]);
        };
        assert_eq!((id, keys), (7, 40));
        assert!(bytes > 0);

        // Every object is at B, as it was at A.
        assert_eq!(nodes[1].store.count_objects(1000).unwrap(), 40);
        for i in &items {
            assert_eq!(
                nodes[1].store.read(&i.bucket, &i.key).unwrap().as_ref(),
                Some(&i.object)
            );
        }
        // In several batches, each scanned at A and merged at B.
        assert!(trace.scans > 2, "{} scans", trace.scans);
        assert_eq!(trace.merges, trace.scans);
        assert_eq!(trace.loads, 1);
        let served = nodes[0].role.served();
        assert_eq!(
            served,
            vec![ServedStats {
                receiver: B,
                transfer: 7,
                pulls: trace.scans as u64,
                from_start: 1,
                keys: 40,
                bytes,
                refused: 0,
            }]
        );
        assert_eq!(nodes[0].role.serving(), 0);
        // B's record says it is done, and so does its progress.
        let record = stored_record(&nodes[1].store, 7).unwrap();
        assert!(record.sources[0].done);
        assert_eq!(record.keys, 40);
        let progress = nodes[1].role.progress();
        assert_eq!(progress.len(), 1);
        assert_eq!(
            progress[0].state,
            crate::replication::transfer::TransferState::Done
        );
    }

    fn pull(transfer: u64) -> TransferMsg {
        TransferMsg::Pull {
            transfer,
            range: whole(),
            after: None,
            max_bytes: u64::MAX,
            fence: None,
        }
    }

    #[test]
    fn pulls_beyond_max_serving_are_refused_as_busy() {
        let now = Instant::now();
        let a = node(A);
        fill(&a.store, 5);
        let mut role = a.role;
        let mut out = Vec::new();
        for t in 1..=3 {
            role.step(now, B, pull(t), &mut out);
        }
        // Two scans (max_serving 2), the clamped size asked; the third
        // pull is refused as busy.
        let scans: Vec<&HandoffWork> = out.iter().filter_map(HandoffEffect::as_store).collect();
        assert_eq!(scans.len(), 2);
        assert!(scans.iter().all(
            |w| matches!(w, HandoffWork::Scan { max_bytes, .. } if *max_bytes == SERVE_MAX_BYTES)
        ));
        let sends: Vec<_> = out.iter().filter_map(HandoffEffect::as_send).collect();
        assert_eq!(
            sends,
            vec![(
                B,
                &TransferMsg::Refused {
                    transfer: 3,
                    after: None,
                    reason: TransferRefusal::Busy,
                }
            )]
        );
        assert_eq!(role.serving(), 2);
        let refused: Vec<(u64, u64)> = role
            .served()
            .iter()
            .map(|s| (s.transfer, s.refused))
            .collect();
        assert_eq!(refused, vec![(1, 0), (2, 0), (3, 1)]);

        // One scan finishes: its batch goes out, and a pull is served again.
        let first = scans[0].clone();
        out.clear();
        let done = execute(&a.store, A, first, &siblings);
        role.finished(now, done, &mut out);
        assert!(matches!(
            out.as_slice(),
            [HandoffEffect::Send { to: B, msg: TransferMsg::Batch { transfer: 1, items, done: true, .. } }]
                if items.len() == 5
        ));
        assert_eq!(role.serving(), 1);
        out.clear();
        role.step(now, B, pull(3), &mut out);
        assert!(matches!(
            out.as_slice(),
            [HandoffEffect::Store(HandoffWork::Scan { transfer: 3, .. })]
        ));
    }

    #[test]
    fn a_pull_is_served_only_under_the_source_s_own_ring_fence() {
        use crate::ring::RingFence;
        let now = Instant::now();
        let a = node(A);
        fill(&a.store, 3);
        let fence = |epoch| RingFence {
            epoch,
            ..RingFence::default()
        };
        a.store.set_fence(fence(2));
        let mut role = a.role;
        // Older (the source has moved on), newer (the source has not yet
        // heard of the change), and equal.
        for (theirs, served) in [(fence(1), false), (fence(3), false), (fence(2), true)] {
            let mut out = Vec::new();
            let msg = match pull(1) {
                TransferMsg::Pull {
                    transfer,
                    range,
                    after,
                    max_bytes,
                    ..
                } => TransferMsg::Pull {
                    transfer,
                    range,
                    after,
                    max_bytes,
                    fence: Some(theirs),
                },
                other => other,
            };
            role.step(now, B, msg, &mut out);
            let work = out
                .iter()
                .find_map(HandoffEffect::as_store)
                .unwrap()
                .clone();
            out.clear();
            role.finished(now, execute(&a.store, A, work, &siblings), &mut out);
            match out.as_slice() {
                [HandoffEffect::Send {
                    msg: TransferMsg::Batch { items, .. },
                    ..
                }] => assert!(served && items.len() == 3, "served under {theirs}"),
                [HandoffEffect::Send {
                    msg:
                        TransferMsg::Refused {
                            reason: reason @ TransferRefusal::StaleRing(_),
                            ..
                        },
                    ..
                }] => {
                    assert!(!served, "refused under the source's own fence");
                    assert!(reason.is_wait(), "a stale ring is waited out");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_start_cancelled_while_its_record_is_read_does_not_start() {
        let now = Instant::now();
        let b = node(B);
        let mut role = b.role;
        let mut loads = Vec::new();
        // Started, cancelled, started again (new sources), before either
        // record is read: only the second runs.
        for cmd in [
            HandoffCommand::Start(spec(5)),
            HandoffCommand::Cancel(5),
            HandoffCommand::Start(spec(5)),
        ] {
            let mut out = Vec::new();
            role.command(now, cmd, &mut out);
            loads.extend(
                out.iter()
                    .filter_map(HandoffEffect::as_store)
                    .filter(|w| matches!(w, HandoffWork::Load { .. }))
                    .cloned(),
            );
        }
        assert_eq!(loads.len(), 2);
        let mut events = Vec::new();
        for load in loads {
            let mut out = Vec::new();
            role.finished(now, execute(&b.store, B, load, &siblings), &mut out);
            events.extend(out.into_iter().filter_map(|e| match e {
                HandoffEffect::Emit(e) => Some(e),
                _ => None,
            }));
        }
        assert!(
            matches!(
                events.as_slice(),
                [
                    HandoffEvent::Started {
                        id: 5,
                        result: Err(_)
                    },
                    HandoffEvent::Started {
                        id: 5,
                        result: Ok(_)
                    }
                ]
            ),
            "{events:?}"
        );
        assert_eq!(role.progress().len(), 1, "one transfer runs");
        // Cancelled with nothing being read: nothing is held back.
        let mut out = Vec::new();
        role.command(now, HandoffCommand::Cancel(5), &mut out);
        role.command(now, HandoffCommand::Start(spec(6)), &mut out);
        let load = out
            .iter()
            .filter_map(HandoffEffect::as_store)
            .find(|w| matches!(w, HandoffWork::Load { .. }))
            .unwrap()
            .clone();
        out.clear();
        role.finished(now, execute(&b.store, B, load, &siblings), &mut out);
        assert!(out
            .iter()
            .filter_map(HandoffEffect::as_emit)
            .any(|e| matches!(
                e,
                HandoffEvent::Started {
                    id: 6,
                    result: Ok(_)
                }
            )));
    }

    #[test]
    fn a_drop_hands_off_what_this_node_does_not_replicate_and_keeps_the_rest() {
        let now = Instant::now();
        let mut role = HandoffRole::new(A, config(), 1);
        let store = ReplicaStore::open(A, Arc::new(MemoryEngine::new()), 4, 10_000).unwrap();
        let wide = BucketEntry {
            bucket: b"wide".to_vec(),
            props: BucketProps {
                n: 3,
                ..BucketProps::default()
            },
            stamp: Timestamp::from_ms(1),
            node: B,
        };
        save_buckets(&store, &[wide]).unwrap();
        let mut items = Vec::new();
        for i in 0..60 {
            items.push(item("wide", &format!("w{i}")));
            items.push(item("narrow", &format!("n{i}")));
        }
        store
            .merge_transferred(&items, |_| ConflictPolicy::Siblings)
            .unwrap();
        let mut ring = Ring::empty();
        for id in 1..=5 {
            ring = claim_join(&ring, NodeId(id), 8).unwrap();
        }
        let ring = Arc::new(ring);
        // With the drop's n of 1, "narrow" (no properties set) has 1
        // replica and "wide" 3: A keeps the objects it is a replica of.
        let owners = |i: &TransferItem| {
            let n = if i.bucket == b"wide" { 3 } else { 1 };
            ring.preference_list(key_token(&i.bucket, &i.key), n)
        };
        let (kept, given): (Vec<&TransferItem>, Vec<&TransferItem>) =
            items.iter().partition(|i| owners(i).contains(&A));
        assert!(kept.iter().any(|i| i.bucket == b"wide"));
        assert!(given.iter().any(|i| i.bucket == b"wide"));
        assert!(given.iter().any(|i| i.bucket == b"narrow"));

        let mut out = Vec::new();
        role.command(
            now,
            HandoffCommand::Drop {
                range: whole(),
                keep_wide: Some((Arc::clone(&ring), 1)),
            },
            &mut out,
        );
        let [HandoffEffect::Store(work)] = out.as_slice() else {
            panic!("{out:?}");
        };
        let done = execute(&store, A, work.clone(), &siblings);
        out.clear();
        role.finished(now, done, &mut out);
        let [HandoffEffect::Emit(HandoffEvent::Dropped { range, result })] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(*range, whole());
        assert_eq!(*result.as_ref().unwrap(), given.len() as u64);
        assert_eq!(store.count_objects(1000).unwrap(), kept.len() as u64);
        for i in &kept {
            assert!(store.read(&i.bucket, &i.key).unwrap().is_some());
        }
        // Each object given away is a hint for each of its owners, holding
        // what the node stored.
        let hints: usize = given.iter().map(|i| owners(i).len()).sum();
        assert_eq!(store.hint_count(), hints);
        for i in &given {
            assert!(store.read(&i.bucket, &i.key).unwrap().is_none());
            for owner in owners(i) {
                let held = store.hints_for(owner, 1000).unwrap();
                let hint = held
                    .iter()
                    .find(|h| h.bucket == i.bucket && h.key == i.key)
                    .unwrap_or_else(|| panic!("no hint for {owner} of {:?}", i.key));
                assert_eq!(hint.object, i.object);
            }
        }

        // Without the ring, everything goes, with no hint.
        let done = execute(
            &store,
            A,
            HandoffWork::Drop {
                range: whole(),
                keep_wide: None,
            },
            &siblings,
        );
        assert!(
            matches!(done, HandoffDone::Dropped { result: Ok(n), .. } if n == kept.len() as u64)
        );
        assert_eq!(store.count_objects(1000).unwrap(), 0);
        assert_eq!(store.hint_count(), hints);
    }

    #[test]
    fn a_drop_keeps_what_it_cannot_hand_off_when_the_hint_store_is_full() {
        let store = open(A); // room for 10 hints
        let items: Vec<TransferItem> = (0..40).map(|i| item("narrow", &format!("k{i}"))).collect();
        store
            .merge_transferred(&items, |_| ConflictPolicy::Siblings)
            .unwrap();
        let mut ring = Ring::empty();
        for id in 2..=4 {
            ring = claim_join(&ring, NodeId(id), 8).unwrap();
        }
        let work = HandoffWork::Drop {
            range: whole(),
            keep_wide: Some((Arc::new(ring), 1)),
        };
        let HandoffDone::Dropped { result, .. } = execute(&store, A, work, &siblings) else {
            panic!("not a drop");
        };
        // A replicates nothing; 10 objects fit as hints, 30 stay.
        assert_eq!(result.unwrap(), 10);
        assert_eq!(store.hint_count(), 10);
        assert_eq!(store.count_objects(1000).unwrap(), 30);
    }

    #[test]
    fn a_cancel_during_a_merge_forgets_the_record_it_wrote() {
        let now = Instant::now();
        let a = node(A);
        let mut b = node(B);
        fill(&a.store, 10);
        let mut out = Vec::new();
        b.role
            .command(now, HandoffCommand::Start(spec(9)), &mut out);
        let Some(HandoffEffect::Store(load)) = out.pop() else {
            panic!("no load");
        };
        let done = execute(&b.store, B, load, &siblings);
        b.role.finished(now, done, &mut out);
        assert!(b.role.knows(9));

        // A's whole range in one batch, answering B's first pull.
        let batch = a.store.range_batch(whole(), None, u64::MAX).unwrap();
        out.clear();
        b.role.step(
            now,
            A,
            TransferMsg::Batch {
                transfer: 9,
                after: None,
                items: batch.items,
                next: batch.next,
                done: batch.done,
                bytes: batch.bytes,
            },
            &mut out,
        );
        let [HandoffEffect::Store(merge @ HandoffWork::Transfer(TransferWork::Merge { .. }))] =
            out.as_slice()
        else {
            panic!("{out:?}");
        };
        let merge = merge.clone();

        // Cancelled while the batch is being stored.
        out.clear();
        b.role.command(now, HandoffCommand::Cancel(9), &mut out);
        assert_eq!(
            out,
            vec![HandoffEffect::Store(HandoffWork::Transfer(
                TransferWork::Forget { id: 9 }
            ))]
        );
        assert!(!b.role.knows(9));
        execute(
            &b.store,
            B,
            HandoffWork::Transfer(TransferWork::Forget { id: 9 }),
            &siblings,
        );

        // The merge lands after the cancel: it writes the record again.
        let done = execute(&b.store, B, merge, &siblings);
        assert!(stored_record(&b.store, 9).is_some());
        out.clear();
        b.role.finished(now, done, &mut out);
        assert_eq!(
            out,
            vec![HandoffEffect::Store(HandoffWork::Transfer(
                TransferWork::Forget { id: 9 }
            ))]
        );
        execute(
            &b.store,
            B,
            out.remove(0).as_store().unwrap().clone(),
            &siblings,
        );
        assert_eq!(stored_record(&b.store, 9), None);
        // What was stored stays; the transfer is not reported done.
        assert_eq!(b.store.count_objects(1000).unwrap(), 10);
        assert!(b.role.progress().is_empty());
    }

    #[test]
    fn a_loaded_record_resumes_the_transfer_from_its_cursor() {
        let now = Instant::now();
        let mut nodes = [node(A), node(B)];
        fill(&nodes[0].store, 30);
        // B stored the first batch in an earlier life.
        let first = nodes[0].store.range_batch(whole(), None, 200).unwrap();
        let stored = first.items.len() as u64;
        assert!(stored > 0 && !first.done);
        nodes[1]
            .store
            .merge_transferred(&first.items, |_| ConflictPolicy::Siblings)
            .unwrap();
        let record = TransferRecord {
            spec: spec(5),
            sources: vec![crate::replication::transfer::SourceCursor {
                node: A,
                after: first.next.clone(),
                done: false,
            }],
            keys: stored,
            bytes: first.bytes,
            batches: 1,
        };
        nodes[1]
            .store
            .store_meta(&record_name(5), &codec::encode(&record).unwrap())
            .unwrap();

        let mut out = Vec::new();
        nodes[1]
            .role
            .command(now, HandoffCommand::Start(spec(5)), &mut out);
        let [HandoffEffect::Store(load @ HandoffWork::Load { .. })] = out.as_slice() else {
            panic!("{out:?}");
        };
        let done = execute(&nodes[1].store, B, load.clone(), &siblings);
        out.clear();
        nodes[1].role.finished(now, done, &mut out);
        // The first pull asks from the record's cursor, and the answer
        // counts what the record holds.
        let sends: Vec<_> = out.iter().filter_map(HandoffEffect::as_send).collect();
        assert!(matches!(
            sends.as_slice(),
            [(to, TransferMsg::Pull { transfer: 5, after, .. })] if *to == A && *after == first.next
        ));
        let started: Vec<_> = out.iter().filter_map(HandoffEffect::as_emit).collect();
        assert!(matches!(
            started.as_slice(),
            [HandoffEvent::Started { id: 5, result: Ok(p) }] if p.keys == stored && p.batches == 1
        ));

        // Run to the end: A never serves the range from its start.
        let trace = run(&mut nodes, now, B, std::mem::take(&mut out));
        assert_eq!(trace.loads, 0);
        assert!(matches!(
            trace.events.last(),
            Some((
                _,
                HandoffEvent::Done {
                    id: 5,
                    keys: 30,
                    ..
                }
            ))
        ));
        let served = nodes[0].role.served();
        assert_eq!(served.len(), 1);
        assert_eq!((served[0].from_start, served[0].keys), (0, 30 - stored));
        assert_eq!(nodes[1].store.count_objects(1000).unwrap(), 30);

        // Starting a known id again answers at once, without a load.
        out.clear();
        nodes[1]
            .role
            .command(now, HandoffCommand::Start(spec(5)), &mut out);
        assert!(!out.iter().any(|e| e.as_store().is_some()));
        assert!(out.iter().any(|e| matches!(
            e,
            HandoffEffect::Emit(HandoffEvent::Started {
                id: 5,
                result: Ok(_)
            })
        )));
    }

    #[test]
    fn a_failed_load_answers_the_start_and_starts_nothing() {
        let now = Instant::now();
        let b = node(B);
        b.store
            .store_meta(&record_name(4), b"not a record")
            .unwrap();
        let mut role = b.role;
        let done = execute(&b.store, B, HandoffWork::Load { spec: spec(4) }, &siblings);
        let mut out = Vec::new();
        role.finished(now, done, &mut out);
        assert!(matches!(
            out.as_slice(),
            [HandoffEffect::Emit(HandoffEvent::Started {
                id: 4,
                result: Err(_)
            })]
        ));
        assert!(!role.knows(4));
    }

    #[test]
    fn served_statistics_keep_the_most_recent_transfers_only() {
        let mut table = ServedTable::default();
        for t in 0..(SERVED_KEPT as u64 + 10) {
            table.entry(NodeId(2), t).pulls += 1;
            // Touching an old entry does not make a second one.
            table.entry(NodeId(2), t).keys += 5;
        }
        let all = table.all();
        assert_eq!(all.len(), SERVED_KEPT);
        assert_eq!(all.iter().map(|s| s.transfer).min(), Some(10));
        assert!(all
            .iter()
            .all(|s| s.receiver == NodeId(2) && s.pulls == 1 && s.keys == 5));
    }
}
