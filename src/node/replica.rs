//! The Replica actor: this node's storage, served to coordinators.
//!
//! It owns the node's [`ReplicaStore`] (the engine, with its objects, hints
//! and metadata) and serves [`ReplicaRequest`]s from any coordinator: this
//! node's, by message, or another node's, through the transport.
//!
//! A point read or write that is small ([`InPlace`]: at most 64 KiB of
//! values) and that the store serves at once
//! ([`ReplicaStore::serve_in_place`]: the stored copy it reads is in
//! memory, the OS's page cache included, and the write needs no fsync and
//! meets no backpressure) runs on the actor's own thread:
//! handing it to a blocking thread and back costs two thread switches,
//! several times the work itself. Every other request (scans, reads that
//! need the disk, writes under backpressure or `SyncPolicy::Always`) runs
//! on tokio's blocking thread pool, since the
//! engine may block on the disk, at most `max_concurrent_io` at once; the
//! rest wait in a queue in arrival order. Replies go back the way the
//! request came: to the local Coordinator actor, or to the transport
//! addressed to the asking node.
//!
//! Reads are also held to a node-wide byte budget (`read_budget_bytes`),
//! kept by the sans-I/O [`ServiceQueue`]: a read not yet run counts as the
//! largest object, a read that has run as the bytes of its values, until
//! its answer has been handed on; a local answer of more than 4 KiB counts
//! until the client's port has encoded the reply (a [`ReadHold`] travels
//! with it, see [`crate::protocol::ReplyHold`]). So clients asking for many
//! large values at once wait in the queue instead of making the node hold
//! a value per read in service, or answers faster than connections take
//! them.
//!
//! The hot path is bounded: the transport and the coordinator hand
//! requests over with `try_send` into a mailbox of [`MAILBOX`] messages;
//! when it is full the request is dropped and logged, which the asking
//! coordinator sees as a lost message (its deadline answers the client).
//!
//! It also serves the node's own needs of the store: hints for hinted
//! handoff, metadata (the bucket table), counts for status views, and the
//! final flush at shutdown.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tracing::{debug, warn};

use super::transport::{Incoming, PeerSender};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::replica::{Hint, ReplicaStore};
use crate::replication::service::{InPlace, ServiceQueue};
use crate::replication::ReplicationMsg;
use crate::replication::{ReplicaReply, ReplicaRequest};
use crate::ring::RingFence;
use crate::storage::EngineStats;
use crate::version::Object;

/// The mailbox capacity of the Replica actor: requests beyond it are
/// dropped as lost (see the module docs). 4096: at 64 requests in service
/// and a millisecond each, four seconds of backlog, beyond any request's
/// useful life at the default 5 s timeout.
pub const MAILBOX: usize = 4096;

/// A replica's reply, for the local Coordinator.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReplicaAnswer {
    /// The replica that answered.
    pub from: NodeId,
    /// Its reply.
    pub reply: ReplicaReply,
    /// For a large read, its bytes of the read budget: given back when
    /// this is dropped, which the coordinator leaves to whoever takes the
    /// client's answer (see [`crate::protocol::ReplyHold`]).
    pub hold: Option<ReadHold>,
}

/// Bytes of a replica's read budget that an answer keeps counted until it
/// is dropped, on whatever thread: the replica then starts the reads that
/// waited for the room.
#[derive(Debug)]
pub struct ReadHold {
    bytes: usize,
    replica: Recipient<Released>,
}

impl Drop for ReadHold {
    fn drop(&mut self) {
        // `do_send` ignores the mailbox's capacity: a release is never
        // lost while the actor runs (and does not matter once it stopped).
        self.replica.do_send(Released(self.bytes));
    }
}

/// Gives back bytes of the read budget (sent by a dropped [`ReadHold`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Released(usize);

/// A request from this node's own coordinator or handoff, with the fence
/// of the ring state it was routed by (see [`RingFence`]).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct LocalRequest(pub ReplicaRequest, pub Option<RingFence>);

/// Reads up to `limit` hints held for `owner`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Hint>>")]
pub struct ReadHints {
    /// The owner.
    pub owner: NodeId,
    /// At most this many.
    pub limit: usize,
}

/// The owners hints are held for.
#[derive(Message)]
#[rtype(result = "Result<Vec<NodeId>>")]
pub struct HintOwners;

/// Removes a delivered hint (kept if it changed since).
#[derive(Message)]
#[rtype(result = "Result<bool>")]
pub struct RemoveHint {
    /// The owner it was delivered to.
    pub owner: NodeId,
    /// Its bucket.
    pub bucket: Vec<u8>,
    /// Its key.
    pub key: Vec<u8>,
    /// The object as delivered.
    pub delivered: Object,
}

/// Reads this replica's stored object of a key.
#[derive(Message)]
#[rtype(result = "Result<Option<Object>>")]
pub struct LocalRead {
    /// The bucket.
    pub bucket: Vec<u8>,
    /// The key.
    pub key: Vec<u8>,
}

/// Stores a metadata record.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct StoreMeta {
    /// Its name.
    pub name: String,
    /// Its bytes.
    pub value: Vec<u8>,
}

/// Counts for status views.
#[derive(Message)]
#[rtype(result = "Result<StoreStats>")]
pub struct GetStoreStats {
    /// Stop counting objects at this many.
    pub count_cap: u64,
}

/// What [`GetStoreStats`] answers.
#[derive(Clone, Debug)]
pub struct StoreStats {
    /// Objects stored (up to the cap).
    pub objects: u64,
    /// Hints held.
    pub hints: u64,
    /// Requests being served or queued.
    pub busy: usize,
    /// Replica requests served on the actor's thread since start (the
    /// store served them at once).
    pub served_in_place: u64,
    /// Replica requests served on the blocking pool since start.
    pub served_on_pool: u64,
    /// The engine's counters.
    pub engine: EngineStats,
}

/// Flushes the engine (memtables to tables): done at shutdown.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct FlushStore;

/// Where a request came from, so the reply can go back.
#[derive(Clone, Copy)]
enum ReplyTo {
    Local,
    Remote(NodeId),
}

/// The actor. See the module documentation.
pub struct ReplicaActor {
    node: NodeId,
    store: Arc<ReplicaStore>,
    transport: PeerSender,
    coordinator: Option<Recipient<ReplicaAnswer>>,
    /// The requests waiting and in service, and the read budget.
    queue: ServiceQueue<(ReplyTo, ReplicaRequest, Option<RingFence>)>,
    /// Requests served on this thread, and on the blocking pool.
    served: (u64, u64),
    /// Which requests are small enough to run on this thread.
    in_place: InPlace,
}

impl ReplicaActor {
    /// Serves `store` for `node`, replying to remote coordinators through
    /// `transport`. Local replies go to the recipient set with
    /// [`SetCoordinator`].
    pub fn new(
        node: NodeId,
        store: Arc<ReplicaStore>,
        transport: PeerSender,
        max_concurrent: usize,
        read_budget: usize,
    ) -> Self {
        ReplicaActor {
            node,
            store,
            transport,
            coordinator: None,
            queue: ServiceQueue::new(max_concurrent, read_budget),
            served: (0, 0),
            in_place: InPlace::default(),
        }
    }

    fn accept(
        &mut self,
        to: ReplyTo,
        request: ReplicaRequest,
        fence: Option<RingFence>,
        ctx: &mut Context<Self>,
    ) {
        let is_read = matches!(request, ReplicaRequest::Read { .. });
        self.queue.push((to, request, fence), is_read);
        self.pump(ctx);
    }

    /// Starts queued requests while the queue has room for them.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some(started) = self.queue.start() {
            let ((to, request, fence), reserved) = (started.item, started.reserved);
            let store = Arc::clone(&self.store);
            let from = match to {
                ReplyTo::Local => self.node,
                ReplyTo::Remote(peer) => peer,
            };
            let request = if self.in_place.allows(&request, Instant::now()) {
                match self.serve_here(to, from, request, fence, reserved, ctx) {
                    None => continue,
                    Some(request) => request,
                }
            } else {
                request
            };
            self.served.1 += 1;
            let work = tokio::task::spawn_blocking(move || {
                store.handle_fenced(Some(from), request, fence)
            });
            ctx.spawn(work.into_actor(self).map(move |done, act, ctx| {
                act.served(to, reserved, done.map_err(|e| e.to_string()), ctx);
                act.pump(ctx);
            }));
        }
    }

    /// Serves a request on this thread if memory holds what it reads
    /// ([`ReplicaStore::serve_in_place`], see [`Self::pump`]), else hands
    /// it back for the blocking pool. A panic in the store is caught as
    /// the blocking pool catches it: that request is lost (its asker
    /// times out) and the node goes on.
    fn serve_here(
        &mut self,
        to: ReplyTo,
        from: NodeId,
        request: ReplicaRequest,
        fence: Option<RingFence>,
        reserved: usize,
        ctx: &mut Context<Self>,
    ) -> Option<ReplicaRequest> {
        let store = &self.store;
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.serve_in_place(Some(from), request, fence)
        }));
        let done = match done {
            Ok(Err(request)) => return Some(*request),
            Ok(Ok(reply)) => Ok(reply),
            Err(_) => Err("the store panicked".to_string()),
        };
        self.served.0 += 1;
        self.served(to, reserved, done, ctx);
        None
    }

    /// A request has run, here or on the pool: a read now counts for what
    /// its answer holds until that is handed on, and the reply goes back.
    /// A request whose run panicked (a broken invariant in the store) is
    /// lost: its asker times out, and the node goes on.
    fn served(
        &mut self,
        to: ReplyTo,
        reserved: usize,
        done: std::result::Result<ReplicaReply, String>,
        ctx: &mut Context<Self>,
    ) {
        let held = match &done {
            Ok(reply) if reserved > 0 => read_bytes(reply),
            _ => 0,
        };
        self.queue.finished(reserved, held);
        self.in_place.read_answered(held, Instant::now());
        match done {
            Ok(reply) => self.reply(to, reply, held, ctx),
            Err(e) => warn!(error = %e, "replica request failed to run"),
        }
    }

    /// Hands `reply` on. A local answer of more than
    /// [`SMALL_ANSWER_BYTES`] keeps its `held` bytes of the read budget
    /// counted in a [`ReadHold`] that travels with it to the client's port;
    /// the bytes of any other reply are given back once it is handed on (the
    /// coordinator's mailbox and the transport's links bound what they
    /// queue).
    fn reply(&mut self, to: ReplyTo, reply: ReplicaReply, held: usize, ctx: &mut Context<Self>) {
        match to {
            ReplyTo::Local => {
                let Some(c) = &self.coordinator else {
                    self.queue.handed_on(held);
                    return;
                };
                if held <= SMALL_ANSWER_BYTES {
                    let answer = ReplicaAnswer {
                        from: self.node,
                        reply,
                        hold: None,
                    };
                    if let Err(e) = c.try_send(answer) {
                        debug!(error = %e, "local reply dropped");
                    }
                    self.queue.handed_on(held);
                    return;
                }
                // A larger answer is never dropped for a full mailbox
                // (`do_send` ignores its capacity): its bytes stay counted
                // until its hold is dropped, so the budget bounds them.
                let hold = ReadHold {
                    bytes: held,
                    replica: ctx.address().recipient(),
                };
                c.do_send(ReplicaAnswer {
                    from: self.node,
                    reply,
                    hold: Some(hold),
                });
            }
            ReplyTo::Remote(node) => {
                let msg = WireMessage::Replication(ReplicationMsg::Replicated { reply });
                self.transport.send(Envelope::new(self.node, node, msg));
                self.queue.handed_on(held);
            }
        }
    }

    fn blocking<T, F>(&self, f: F) -> ResponseFuture<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce(&ReplicaStore) -> Result<T> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&store))
                .await
                .map_err(|e| Error::Replica(format!("store task failed: {e}")))?
        })
    }
}

impl Actor for ReplicaActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

/// Answers holding at most this many bytes of values give their room in
/// the read budget back as soon as they are handed to the local
/// coordinator, so the common small read costs no more than before: 4 KiB
/// times the coordinator's mailbox of 4,096 messages is 16 MiB at most.
const SMALL_ANSWER_BYTES: usize = 4 * 1024;

/// The bytes of the values a read's answer holds.
fn read_bytes(reply: &ReplicaReply) -> usize {
    match reply {
        ReplicaReply::Read {
            result: Ok(Some(object)),
            ..
        } => object.value_bytes(),
        _ => 0,
    }
}

impl Handler<Released> for ReplicaActor {
    type Result = ();

    fn handle(&mut self, Released(bytes): Released, ctx: &mut Context<Self>) {
        self.queue.handed_on(bytes);
        self.pump(ctx);
    }
}

/// Sets where local replies go.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCoordinator(pub Recipient<ReplicaAnswer>);

impl Handler<SetCoordinator> for ReplicaActor {
    type Result = ();

    fn handle(&mut self, msg: SetCoordinator, _: &mut Context<Self>) {
        self.coordinator = Some(msg.0);
    }
}

impl Handler<Incoming> for ReplicaActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        match envelope.msg {
            WireMessage::Replication(ReplicationMsg::Replicate { request, fence }) => {
                self.accept(ReplyTo::Remote(envelope.from), request, fence, ctx)
            }
            other => debug!(kind = other.kind(), "replica: not a replica request"),
        }
    }
}

impl Handler<LocalRequest> for ReplicaActor {
    type Result = ();

    fn handle(&mut self, LocalRequest(request, fence): LocalRequest, ctx: &mut Context<Self>) {
        self.accept(ReplyTo::Local, request, fence, ctx);
    }
}

impl Handler<ReadHints> for ReplicaActor {
    type Result = ResponseFuture<Result<Vec<Hint>>>;

    fn handle(&mut self, msg: ReadHints, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |s| s.hints_for(msg.owner, msg.limit))
    }
}

impl Handler<HintOwners> for ReplicaActor {
    type Result = ResponseFuture<Result<Vec<NodeId>>>;

    fn handle(&mut self, _: HintOwners, _: &mut Context<Self>) -> Self::Result {
        self.blocking(|s| s.hint_owners())
    }
}

impl Handler<RemoveHint> for ReplicaActor {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, m: RemoveHint, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |s| s.remove_hint(m.owner, &m.bucket, &m.key, &m.delivered))
    }
}

impl Handler<LocalRead> for ReplicaActor {
    type Result = ResponseFuture<Result<Option<Object>>>;

    fn handle(&mut self, m: LocalRead, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |s| s.read(&m.bucket, &m.key))
    }
}

impl Handler<StoreMeta> for ReplicaActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, m: StoreMeta, _: &mut Context<Self>) -> Self::Result {
        self.blocking(move |s| s.store_meta(&m.name, &m.value))
    }
}

impl Handler<GetStoreStats> for ReplicaActor {
    type Result = ResponseFuture<Result<StoreStats>>;

    fn handle(&mut self, m: GetStoreStats, _: &mut Context<Self>) -> Self::Result {
        let busy = self.queue.serving() + self.queue.waiting();
        let (served_in_place, served_on_pool) = self.served;
        self.blocking(move |s| {
            Ok(StoreStats {
                objects: s.count_objects(m.count_cap)?,
                hints: s.hint_count() as u64,
                busy,
                served_in_place,
                served_on_pool,
                engine: s.engine().stats(),
            })
        })
    }
}

impl Handler<FlushStore> for ReplicaActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, _: FlushStore, _: &mut Context<Self>) -> Self::Result {
        self.blocking(|s| s.engine().flush())
    }
}
