//! The Handoff actor: the carrier of this node's handoff role
//! ([`HandoffRole`]), which runs its range transfers both ways (riak_core's
//! handoff sender and receiver in one role).
//!
//! The role decides everything (what to pull, what to store, which pulls
//! to serve and which to refuse as busy, what to report); the actor only
//! routes and does the I/O of its effects:
//!
//! - a message goes to the transport;
//! - storage work runs on the blocking pool through
//!   [`roles::handoff::execute`](execute), and what it finds goes back to
//!   the role. A batch to merge first has its buckets' policies asked of
//!   the Coordinator actor, which holds the bucket table;
//! - a finished transfer goes to the listener as [`TransferDone`]; the
//!   answer to a start or a drop goes to the caller waiting for it.
//!
//! A tick every [`TICK`] drives timeouts, backoffs and the throttle.
//!
//! It does not decide which ranges move, or when: [`StartTransfer`] does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::coordinator::GetBucket;
use super::transport::{Incoming, Outgoing, TransportActor};
use crate::config::TransferConfig;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::replica::{RangeBatch, ReplicaStore};
use crate::replication::transfer::{TransferProgress, TransferSpec, TransferWork};
use crate::replication::TransferMsg;
use crate::ring::{Ring, TokenRange};
use crate::roles::handoff::{
    execute, HandoffCommand, HandoffEffect, HandoffEvent, HandoffRole, HandoffWork,
};
use crate::version::ConflictPolicy;

pub use crate::roles::handoff::{DROP_CHUNK, SERVED_KEPT, SERVE_MAX_BYTES};

/// How often timeouts, backoffs and the throttle are looked at.
pub const TICK: Duration = Duration::from_millis(20);

/// The mailbox capacity: the transport hands messages over with
/// `try_send`, and one beyond it is dropped as lost (its pull is retried).
/// 1024: far more than the pulls and batches of a few transfers in flight.
pub const MAILBOX: usize = 1024;

/// Starts (or resumes) a transfer into this node. Idempotent for a known
/// id; picks up the persisted cursors of an id this process does not know.
#[derive(Message)]
#[rtype(result = "Result<TransferProgress>")]
pub struct StartTransfer {
    /// What to move.
    pub spec: TransferSpec,
}

/// A command of the ring manager (start, cancel, drop), without an answer:
/// a start that fails goes to the failure listener ([`TransferFailed`]
/// with `started: false`), and a drop's outcome to the log. Sent with
/// `do_send`, so the commands reach the actor in the order the ring role
/// gave them: a start sent from a spawned task could arrive after its
/// cancel, and run for ever holding a slot every later transfer waits for.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Planned(pub HandoffCommand);

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

/// Sent to the failure listener when a transfer failed too many times in
/// a row and stopped, or when a [`Planned`] start did not start it;
/// starting it again resumes it.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct TransferFailed {
    /// The transfer.
    pub id: u64,
    /// The last failure.
    pub why: String,
    /// Whether it had started (false: a planned start failed, for example
    /// its record could not be read or it was cancelled first).
    pub started: bool,
}

/// Sets where [`TransferFailed`] goes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetFailureListener(pub Recipient<TransferFailed>);

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
    role: HandoffRole,
    listener: Option<Recipient<TransferDone>>,
    failure_listener: Option<Recipient<TransferFailed>>,
    /// Callers of [`StartTransfer`] waiting for the role's answer, by
    /// transfer id, in the order they asked. The role answers every start
    /// exactly once, and each answer goes to the longest waiting caller of
    /// its id (two starts of one id whose records are read at once may
    /// swap answers: both are that transfer's).
    starting: HashMap<u64, VecDeque<oneshot::Sender<Result<TransferProgress>>>>,
    /// Callers of [`DropRange`] waiting, by range, in the order they asked.
    dropping: HashMap<TokenRange, VecDeque<oneshot::Sender<Result<u64>>>>,
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
            role: HandoffRole::new(node, config, seed),
            listener: None,
            failure_listener: None,
            starting: HashMap::new(),
            dropping: HashMap::new(),
        }
    }

    /// Carries out the role's effects.
    fn carry(&mut self, effects: Vec<HandoffEffect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                HandoffEffect::Send { to, msg } => self.send(to, msg),
                HandoffEffect::Store(work) => self.work(work, ctx),
                HandoffEffect::Emit(event) => self.emit(event),
            }
        }
    }

    fn send(&self, to: NodeId, msg: TransferMsg) {
        let msg = WireMessage::Transfer(msg);
        self.transport
            .do_send(Outgoing(Envelope::new(self.node, to, msg)));
    }

    /// The answer to a start: to whoever asked for it, or, for a planned
    /// start that failed, to the failure listener.
    fn answer_start(&mut self, id: u64, result: crate::error::Result<TransferProgress>) {
        match take_first(&mut self.starting, &id) {
            // The caller may have given up; nothing to do then.
            Some(reply) => drop(reply.send(result)),
            // A planned start: its failure goes to the listener.
            None => {
                if let (Err(e), Some(l)) = (result, &self.failure_listener) {
                    l.do_send(TransferFailed {
                        id,
                        why: e.to_string(),
                        started: false,
                    });
                }
            }
        }
    }

    fn emit(&mut self, event: HandoffEvent) {
        match event {
            HandoffEvent::Done { id, keys, bytes } => {
                info!(node = %self.node, transfer = id, keys, bytes, "transfer {id} done: {keys} keys, {bytes} bytes");
                if let Some(l) = &self.listener {
                    l.do_send(TransferDone { id, keys, bytes });
                }
            }
            HandoffEvent::Failed { id, why } => {
                crate::log::warn_every!(node = %self.node, transfer = id, %why, "transfer {id} stopped after failing again and again; it starts again at the next plan");
                if let Some(l) = &self.failure_listener {
                    l.do_send(TransferFailed {
                        id,
                        why,
                        started: true,
                    });
                }
            }
            HandoffEvent::Started { id, result } => {
                if let Ok(p) = &result {
                    let sources: Vec<String> = p.sources.iter().map(|n| n.to_string()).collect();
                    info!(
                        node = %self.node,
                        transfer = id,
                        range = ?p.range,
                        sources = %sources.join(","),
                        keys_before = p.keys,
                        "transfer {id} started"
                    );
                }
                self.answer_start(id, result)
            }
            HandoffEvent::Dropped { range, result } => {
                match (take_first(&mut self.dropping, &range), result) {
                    (Some(reply), result) => drop(reply.send(result)),
                    // A planned drop: nobody waits for it.
                    (None, Ok(0)) => debug!(?range, "dropped a range given away: nothing held"),
                    (None, Ok(n)) => info!(
                        node = %self.node,
                        ?range,
                        dropped = n,
                        "dropped a range given away: {n} keys (handed to its replicas first)"
                    ),
                    (None, Err(e)) => {
                        crate::log::warn_every!(?range, error = %e, "dropping a range given away failed")
                    }
                }
            }
        }
    }

    /// Runs `work` on the blocking pool, then hands what it found to the
    /// role. A merge first asks the Coordinator actor for the policies of
    /// its batch's buckets.
    fn work(&mut self, work: HandoffWork, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.store);
        let me = self.node;
        let unrun = work.not_run("the store task failed");
        let policies = match &work {
            HandoffWork::Transfer(TransferWork::Merge { items, .. }) => {
                let names: BTreeSet<Vec<u8>> = items.iter().map(|i| i.bucket.clone()).collect();
                Some((names, self.buckets.clone()))
            }
            _ => None,
        };
        let run = async move {
            let mut known: BTreeMap<Vec<u8>, ConflictPolicy> = BTreeMap::new();
            if let Some((names, buckets)) = policies {
                for name in names {
                    match buckets.send(GetBucket(name.clone())).await {
                        Ok(props) => known.insert(name, props.policy),
                        Err(_) => return work.not_run("the coordinator is gone"),
                    };
                }
            }
            let done = tokio::task::spawn_blocking(move || {
                let policy = |b: &[u8]| known.get(b).cloned().unwrap_or(ConflictPolicy::Siblings);
                execute(&store, me, work, &policy)
            })
            .await;
            match done {
                Ok(done) => done,
                Err(e) => {
                    crate::log::warn_every!(error = %e, "handoff storage work failed to run");
                    unrun
                }
            }
        };
        ctx.spawn(run.into_actor(self).map(|done, act, ctx| {
            let mut out = Vec::new();
            act.role.finished(Instant::now(), done, &mut out);
            act.carry(out, ctx);
        }));
    }

    fn command(&mut self, cmd: HandoffCommand, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.role.command(Instant::now(), cmd, &mut out);
        self.carry(out, ctx);
    }
}

/// The first caller waiting under `key`, forgetting the key once none is
/// left.
fn take_first<K: Eq + Hash, V>(waiting: &mut HashMap<K, VecDeque<V>>, key: &K) -> Option<V> {
    let queue = waiting.get_mut(key)?;
    let first = queue.pop_front();
    if queue.is_empty() {
        waiting.remove(key);
    }
    first
}

impl Actor for HandoffActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(TICK, |act, ctx| {
            let mut out = Vec::new();
            act.role.tick(Instant::now(), &mut out);
            act.carry(out, ctx);
        });
    }
}

impl Handler<Incoming> for HandoffActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        match envelope.msg {
            WireMessage::Transfer(msg) => {
                let mut out = Vec::new();
                self.role.step(Instant::now(), envelope.from, msg, &mut out);
                self.carry(out, ctx);
            }
            other => debug!(kind = other.kind(), "handoff: not a transfer message"),
        }
    }
}

impl Handler<StartTransfer> for HandoffActor {
    type Result = ResponseFuture<Result<TransferProgress>>;

    fn handle(&mut self, msg: StartTransfer, ctx: &mut Context<Self>) -> Self::Result {
        // Waiting before the command: a known id is answered at once.
        let (reply, answer) = oneshot::channel();
        self.starting
            .entry(msg.spec.id)
            .or_default()
            .push_back(reply);
        self.command(HandoffCommand::Start(msg.spec), ctx);
        Box::pin(async move { answer.await.map_err(|_| Error::Shutdown)? })
    }
}

impl Handler<Planned> for HandoffActor {
    type Result = ();

    fn handle(&mut self, Planned(command): Planned, ctx: &mut Context<Self>) {
        self.command(command, ctx);
    }
}

impl Handler<CancelTransfer> for HandoffActor {
    type Result = bool;

    fn handle(&mut self, msg: CancelTransfer, ctx: &mut Context<Self>) -> bool {
        let known = self.role.knows(msg.id);
        self.command(HandoffCommand::Cancel(msg.id), ctx);
        known
    }
}

impl Handler<GetTransfers> for HandoffActor {
    type Result = MessageResult<GetTransfers>;

    fn handle(&mut self, _: GetTransfers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.role.progress())
    }
}

impl Handler<SetTransferListener> for HandoffActor {
    type Result = ();

    fn handle(&mut self, msg: SetTransferListener, _: &mut Context<Self>) {
        self.listener = Some(msg.0);
    }
}

impl Handler<SetFailureListener> for HandoffActor {
    type Result = ();

    fn handle(&mut self, msg: SetFailureListener, _: &mut Context<Self>) {
        self.failure_listener = Some(msg.0);
    }
}

impl Handler<GetServed> for HandoffActor {
    type Result = MessageResult<GetServed>;

    fn handle(&mut self, _: GetServed, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.role.served())
    }
}

impl Handler<DropRange> for HandoffActor {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, msg: DropRange, ctx: &mut Context<Self>) -> Self::Result {
        let (reply, answer) = oneshot::channel();
        self.dropping.entry(msg.range).or_default().push_back(reply);
        self.command(
            HandoffCommand::Drop {
                range: msg.range,
                keep_wide: msg.keep_wide,
            },
            ctx,
        );
        Box::pin(async move { answer.await.map_err(|_| Error::Shutdown)? })
    }
}

impl Handler<ReadRange> for HandoffActor {
    type Result = ResponseFuture<Result<RangeBatch>>;

    fn handle(&mut self, msg: ReadRange, _: &mut Context<Self>) -> Self::Result {
        // An inspection: read directly, outside the role.
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
