//! The Handoff actor: this node's range transfers, both ways (riak_core's
//! handoff sender and receiver in one role).
//!
//! As a receiver it owns the [`Transfers`] machine and only carries out its
//! effects: pulls go to the transport; each batch is merged into the
//! [`ReplicaStore`] on the blocking pool under its buckets' policies (asked
//! of the Coordinator actor, which holds the bucket table), then the
//! transfer's record is persisted, then the machine hears it is stored; a
//! finished transfer is reported to the listener as [`TransferDone`]. A
//! tick every [`TICK`] drives timeouts, backoffs and the throttle.
//!
//! As a source it serves [`TransferMsg::Pull`]s: each is one range scan
//! on the blocking pool, at most `max_serving` at once; a pull beyond that
//! is refused as busy and the receiver retries. What it served is counted
//! per (receiver, transfer), for tests and status.
//!
//! It also drops ranges ([`DropRange`]) when the caller (the ring
//! transition driver) has confirmed the new owners hold them.
//!
//! It does not decide which ranges move, or when: [`StartTransfer`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{debug, warn};

use super::coordinator::GetBucket;
use super::transport::{Incoming, Outgoing, TransportActor};
use crate::codec;
use crate::config::{BucketProps, TransferConfig, DEFAULT_MAX_FRAME_BYTES};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::replica::{RangeBatch, ReplicaStore};
use crate::replication::transfer::{
    record_name, TransferEffect, TransferItem, TransferProgress, TransferRecord, TransferRefusal,
    TransferSpec, Transfers,
};
use crate::replication::TransferMsg;
use crate::ring::{Ring, TokenRange};
use crate::roles::stored_buckets::BucketView;
use crate::version::ConflictPolicy;

/// How often timeouts, backoffs and the throttle are looked at.
pub const TICK: Duration = Duration::from_millis(20);

/// The mailbox capacity: the transport hands messages over with
/// `try_send`, and one beyond it is dropped as lost (its pull is retried).
/// 1024: far more than the pulls and batches of a few transfers in flight.
pub const MAILBOX: usize = 1024;

/// Keys deleted per engine batch by [`DropRange`]: large enough to
/// amortise a WAL write, small enough to keep one batch well under a
/// memtable.
pub const DROP_CHUNK: usize = 1024;

/// The most bytes a served batch holds, whatever the pull asks: half the
/// frame limit, leaving room for the envelope around the objects.
pub const SERVE_MAX_BYTES: u64 = (DEFAULT_MAX_FRAME_BYTES / 2) as u64;

/// Starts (or resumes) a transfer into this node. Idempotent for a known
/// id; picks up the persisted cursors of an id this process does not know.
#[derive(Message)]
#[rtype(result = "Result<TransferProgress>")]
pub struct StartTransfer {
    /// What to move.
    pub spec: TransferSpec,
}

/// Stops a transfer and forgets its record. Answers whether it was known.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct CancelTransfer {
    /// The transfer.
    pub id: u64,
}

/// Every incoming transfer known in this process, by id.
#[derive(Message)]
#[rtype(result = "Vec<TransferProgress>")]
pub struct GetTransfers;

/// Sent to the listener when a transfer is done: every object of its range
/// from every source is stored here.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct TransferDone {
    /// The transfer.
    pub id: u64,
    /// Objects stored (over its whole life, restarts included).
    pub keys: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// Sets where [`TransferDone`] goes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetTransferListener(pub Recipient<TransferDone>);

/// Deletes this node's objects in a token range; answers how many.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct DropRange {
    /// The tokens.
    pub range: TokenRange,
    /// When set, the ring in force and the replicas per key the range was
    /// found unreplicated for: objects of a bucket whose `n` is larger are
    /// kept when this node is among their first `n` replicas on that ring.
    /// When absent, every object of the range is deleted.
    pub keep_wide: Option<(Arc<Ring>, usize)>,
}

/// Reads this node's objects of a range after a cursor, up to a size: what
/// a source would send (for inspection and tests).
#[derive(Message)]
#[rtype(result = "Result<RangeBatch>")]
pub struct ReadRange {
    /// The tokens.
    pub range: TokenRange,
    /// The engine key to read after (`None`: from the start).
    pub after: Option<Vec<u8>>,
    /// Stop once the batch holds this many bytes.
    pub max_bytes: u64,
}

pub use crate::replication::transfer::ServedStats;

/// Everything this node served as a source.
#[derive(Message)]
#[rtype(result = "Vec<ServedStats>")]
pub struct GetServed;

/// The actor. See the module documentation.
pub struct HandoffActor {
    node: NodeId,
    store: Arc<ReplicaStore>,
    transport: Addr<TransportActor>,
    buckets: Recipient<GetBucket>,
    machine: Transfers,
    listener: Option<Recipient<TransferDone>>,
    max_serving: usize,
    serving: usize,
    served: ServedTable,
}

/// The transfers a source keeps serving statistics for: the most recent
/// ones (a long-lived node serves a transfer per range per change).
pub const SERVED_KEPT: usize = 256;

/// Serving statistics per (receiver, transfer), the oldest forgotten past
/// [`SERVED_KEPT`].
#[derive(Default)]
struct ServedTable {
    stats: BTreeMap<(NodeId, u64), ServedStats>,
    /// The keys of `stats`, oldest first.
    order: std::collections::VecDeque<(NodeId, u64)>,
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

impl HandoffActor {
    /// The actor of node `node` over `store`; bucket policies are asked of
    /// `buckets` (the Coordinator actor).
    pub fn new(
        node: NodeId,
        store: Arc<ReplicaStore>,
        transport: Addr<TransportActor>,
        buckets: Recipient<GetBucket>,
        config: TransferConfig,
        seed: u64,
    ) -> Self {
        HandoffActor {
            node,
            store,
            transport,
            buckets,
            max_serving: config.max_serving.max(1),
            machine: Transfers::new(node, config, seed),
            listener: None,
            serving: 0,
            served: ServedTable::default(),
        }
    }

    fn run(&mut self, effects: Vec<TransferEffect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                TransferEffect::Send { to, msg } => self.send(to, msg),
                TransferEffect::Store {
                    id,
                    source,
                    items,
                    record,
                } => self.store_batch(id, source, items, record, ctx),
                TransferEffect::Forget { id } => {
                    let store = Arc::clone(&self.store);
                    let work =
                        tokio::task::spawn_blocking(move || store.delete_meta(&record_name(id)));
                    ctx.spawn(
                        async move {
                            match work.await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => warn!(id, error = %e, "transfer record not deleted"),
                                Err(e) => warn!(id, error = %e, "transfer record deletion failed"),
                            }
                        }
                        .into_actor(self),
                    );
                }
                TransferEffect::Done { id, keys, bytes } => {
                    debug!(id, keys, bytes, "transfer done");
                    if let Some(l) = &self.listener {
                        l.do_send(TransferDone { id, keys, bytes });
                    }
                }
            }
        }
    }

    fn send(&self, to: NodeId, msg: TransferMsg) {
        let msg = WireMessage::Transfer(msg);
        self.transport
            .do_send(Outgoing(Envelope::new(self.node, to, msg)));
    }

    /// Looks up the policies of the batch's buckets, merges it on the
    /// blocking pool, persists the record, then tells the machine.
    fn store_batch(
        &mut self,
        id: u64,
        source: NodeId,
        items: Vec<TransferItem>,
        record: TransferRecord,
        ctx: &mut Context<Self>,
    ) {
        let store = Arc::clone(&self.store);
        let buckets = self.buckets.clone();
        let work = async move {
            let names: BTreeSet<Vec<u8>> = items.iter().map(|i| i.bucket.clone()).collect();
            let mut policies: BTreeMap<Vec<u8>, ConflictPolicy> = BTreeMap::new();
            for name in names {
                let props = buckets
                    .send(GetBucket(name.clone()))
                    .await
                    .map_err(|_| "the coordinator is gone".to_string())?;
                policies.insert(name, props.policy);
            }
            let bytes = codec::encode(&record).map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                store.merge_transferred(&items, |b| {
                    policies.get(b).cloned().unwrap_or(ConflictPolicy::Siblings)
                })?;
                store.store_meta(&record_name(id), &bytes)
            })
            .await
            .map_err(|e| format!("store task failed: {e}"))?
            .map_err(|e| e.to_string())
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            if let Err(why) = &result {
                warn!(id, %source, error = %why, "a transferred batch was not stored");
            }
            if !act.machine.knows(id) {
                // Cancelled while the batch was stored: its record was
                // written after the cancel deleted it; delete it again.
                act.run(vec![TransferEffect::Forget { id }], ctx);
                return;
            }
            let mut out = Vec::new();
            act.machine
                .stored(Instant::now(), id, source, result, &mut out);
            act.run(out, ctx);
        }));
    }

    fn serve(
        &mut self,
        from: NodeId,
        transfer: u64,
        range: TokenRange,
        after: Option<Vec<u8>>,
        max_bytes: u64,
        ctx: &mut Context<Self>,
    ) {
        let busy = self.serving >= self.max_serving;
        let stats = self.served.entry(from, transfer);
        if busy {
            stats.refused += 1;
            self.send(
                from,
                TransferMsg::Refused {
                    transfer,
                    after,
                    reason: TransferRefusal::Busy,
                },
            );
            return;
        }
        self.serving += 1;
        let store = Arc::clone(&self.store);
        let cursor = after.clone();
        let max = max_bytes.clamp(1, SERVE_MAX_BYTES);
        let work =
            tokio::task::spawn_blocking(move || store.range_batch(range, cursor.as_deref(), max));
        ctx.spawn(work.into_actor(self).map(move |done, act, _| {
            act.serving -= 1;
            let stats = act.served.entry(from, transfer);
            let msg = match done {
                Ok(Ok(batch)) => {
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
                Ok(Err(e)) => {
                    stats.refused += 1;
                    let reason = match e {
                        Error::InvalidInput(why) => TransferRefusal::BadRequest(why),
                        other => TransferRefusal::Failed(other.to_string()),
                    };
                    TransferMsg::Refused {
                        transfer,
                        after,
                        reason,
                    }
                }
                Err(e) => {
                    stats.refused += 1;
                    TransferMsg::Refused {
                        transfer,
                        after,
                        reason: TransferRefusal::Failed(format!("scan task failed: {e}")),
                    }
                }
            };
            act.send(from, msg);
        }));
    }
}

impl Actor for HandoffActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(TICK, |act, ctx| {
            let mut out = Vec::new();
            act.machine.tick(Instant::now(), &mut out);
            act.run(out, ctx);
        });
    }
}

impl Handler<Incoming> for HandoffActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        let from = envelope.from;
        match envelope.msg {
            WireMessage::Transfer(TransferMsg::Pull {
                transfer,
                range,
                after,
                max_bytes,
            }) => self.serve(from, transfer, range, after, max_bytes, ctx),
            WireMessage::Transfer(
                msg @ (TransferMsg::Batch { .. } | TransferMsg::Refused { .. }),
            ) => {
                let mut out = Vec::new();
                self.machine.step(Instant::now(), from, msg, &mut out);
                self.run(out, ctx);
            }
            other => debug!(kind = other.kind(), "handoff: not a transfer message"),
        }
    }
}

impl Handler<StartTransfer> for HandoffActor {
    type Result = ResponseActFuture<Self, Result<TransferProgress>>;

    fn handle(&mut self, msg: StartTransfer, ctx: &mut Context<Self>) -> Self::Result {
        let spec = msg.spec;
        if self.machine.knows(spec.id) {
            let mut out = Vec::new();
            let started = self.machine.start(Instant::now(), spec, None, &mut out);
            self.run(out, ctx);
            return Box::pin(fut::ready(started));
        }
        // An id this process does not know: its record, if any, first.
        let store = Arc::clone(&self.store);
        let id = spec.id;
        let load = async move {
            let bytes = tokio::task::spawn_blocking(move || store.load_meta(&record_name(id)))
                .await
                .map_err(|e| Error::Replica(format!("store task failed: {e}")))??;
            match bytes {
                Some(b) => codec::decode::<TransferRecord>(&b, DEFAULT_MAX_FRAME_BYTES).map(Some),
                None => Ok(None),
            }
        };
        Box::pin(load.into_actor(self).map(move |record, act, ctx| {
            let record = record?;
            let mut out = Vec::new();
            let started = act.machine.start(Instant::now(), spec, record, &mut out);
            act.run(out, ctx);
            started
        }))
    }
}

impl Handler<CancelTransfer> for HandoffActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelTransfer, ctx: &mut Context<Self>) -> bool {
        let mut out = Vec::new();
        let known = self.machine.cancel(Instant::now(), msg.id, &mut out);
        self.run(out, ctx);
        known
    }
}

impl Handler<GetTransfers> for HandoffActor {
    type Result = MessageResult<GetTransfers>;

    fn handle(&mut self, _: GetTransfers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.progress())
    }
}

impl Handler<SetTransferListener> for HandoffActor {
    type Result = ();

    fn handle(&mut self, msg: SetTransferListener, _: &mut Context<Self>) {
        self.listener = Some(msg.0);
    }
}

impl Handler<GetServed> for HandoffActor {
    type Result = MessageResult<GetServed>;

    fn handle(&mut self, _: GetServed, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.served.all())
    }
}

impl Handler<DropRange> for HandoffActor {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, msg: DropRange, _: &mut Context<Self>) -> Self::Result {
        let store = Arc::clone(&self.store);
        let me = self.node;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let Some((ring, n)) = msg.keep_wide else {
                    return store.drop_range(msg.range, DROP_CHUNK);
                };
                let defaults = BucketProps {
                    n,
                    ..BucketProps::default()
                };
                let buckets = BucketView::load(&store, &defaults)?;
                if buckets.n_max() <= n {
                    return store.drop_range(msg.range, DROP_CHUNK);
                }
                store.drop_range_except(msg.range, DROP_CHUNK, |bucket, token| {
                    let wide = buckets.props(bucket).n;
                    wide > n && ring.preference_list(token, wide).contains(&me)
                })
            })
            .await
            .map_err(|e| Error::Replica(format!("store task failed: {e}")))?
        })
    }
}

impl Handler<ReadRange> for HandoffActor {
    type Result = ResponseFuture<Result<RangeBatch>>;

    fn handle(&mut self, msg: ReadRange, _: &mut Context<Self>) -> Self::Result {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                store.range_batch(msg.range, msg.after.as_deref(), msg.max_bytes)
            })
            .await
            .map_err(|e| Error::Replica(format!("store task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
