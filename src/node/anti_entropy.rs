//! The AntiEntropy actor: runs the node's
//! [`AntiEntropy`](crate::replication::anti_entropy::AntiEntropy) machine.
//!
//! It feeds the machine ticks (every [`tick_interval`] of the period, and
//! at once when a node comes back up, so that it is exchanged with now),
//! anti-entropy messages from the transport, ring snapshots and membership
//! events (so DOWN, SUSPECT and LEFT nodes are not exchanged with), and
//! carries out its effects: it sends the messages, and every scan, read,
//! merge and purge (the machine's storage work) runs on tokio's blocking
//! pool, at most `max_exchanges + 1` at once (the rest wait their turn),
//! never on the node's event loop. Bucket properties (each bucket's `n`
//! and conflict policy) are read from the bucket table the Coordinator
//! persists in the store, over the node's defaults.
//!
//! What it does not do: decide anything (the machine does), or rate-limit
//! by itself (the machine's token buckets gate new exchanges).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::{mpsc, Semaphore};
use tracing::info;

use super::transport::{Incoming, Outgoing, TransportActor};
use super::NodeEvent;
use crate::config::{AntiEntropyConfig, BucketProps};
use crate::effect::Effect;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Envelope, Message as WireMessage};
use crate::replication::anti_entropy::{AntiEntropy, AntiEntropyEffect, AntiEntropyStats};
use crate::replication::replica::ReplicaStore;
use crate::replication::AntiEntropyMsg;
use crate::roles::anti_entropy::{finish, run};

/// The counters, now.
#[derive(Message)]
#[rtype(result = "AntiEntropyStats")]
pub struct GetAntiEntropyStats;

/// Starts a round as soon as the one running (if any) ends.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoundNow;

/// An operator's repair round (see
/// [`AntiEntropy::repair`]): the finished-round count at which it is over,
/// `None` when anti-entropy is off.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct RepairNow(pub crate::replication::anti_entropy::RepairScope);

/// How often the actor ticks the machine: a tenth of the period, between
/// 10 ms and 1 s (a tick that finds nothing due costs a few comparisons).
pub fn tick_interval(period: Duration) -> Duration {
    (period / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The actor. See the module documentation.
pub struct AntiEntropyActor {
    node: NodeId,
    machine: AntiEntropy,
    config: AntiEntropyConfig,
    store: Arc<ReplicaStore>,
    defaults: BucketProps,
    transport: Addr<TransportActor>,
    events: Option<mpsc::UnboundedReceiver<NodeEvent>>,
    io: Arc<Semaphore>,
    /// The counters when the last finished round was looked at, for the
    /// log line of a round that repaired something.
    logged: AntiEntropyStats,
}

impl AntiEntropyActor {
    /// Builds the actor for `node` over its store.
    pub fn new(
        node: NodeId,
        config: AntiEntropyConfig,
        store: Arc<ReplicaStore>,
        defaults: BucketProps,
        transport: Addr<TransportActor>,
        events: mpsc::UnboundedReceiver<NodeEvent>,
    ) -> Self {
        AntiEntropyActor {
            node,
            machine: AntiEntropy::new(node, config.clone(), defaults.n, Instant::now()),
            io: Arc::new(Semaphore::new(config.max_exchanges + 1)),
            config,
            store,
            defaults,
            transport,
            events: Some(events),
            logged: AntiEntropyStats::default(),
        }
    }

    /// Logs, at INFO, each round that repaired anything (or lost
    /// exchanges), with what it did since the round before.
    fn log_rounds(&mut self) {
        let now = self.machine.stats();
        if now.rounds == self.logged.rounds {
            return;
        }
        let repaired = now
            .objects_repaired
            .saturating_sub(self.logged.objects_repaired);
        let failed = now
            .exchanges_failed
            .saturating_sub(self.logged.exchanges_failed);
        if repaired > 0 || failed > 0 {
            info!(
                node = %self.node,
                rounds = now.rounds.saturating_sub(self.logged.rounds),
                repaired,
                leaves_differing = now.leaves_differing.saturating_sub(self.logged.leaves_differing),
                exchanges = now.ranges_compared.saturating_sub(self.logged.ranges_compared),
                exchanges_failed = failed,
                round_ms = now.last_round_ms,
                "anti-entropy: a round repaired {repaired} objects ({failed} exchanges failed)"
            );
        }
        self.logged = now.clone();
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let mut out = Vec::new();
        self.machine.tick(Instant::now(), wall_ms(), &mut out);
        self.carry(out, ctx);
        self.log_rounds();
    }

    fn send(&self, to: NodeId, msg: AntiEntropyMsg) {
        let msg = WireMessage::AntiEntropy(msg);
        self.transport
            .do_send(Outgoing(Envelope::new(self.node, to, msg)));
    }

    /// Runs `work` on the blocking pool within the I/O bound, then `then`
    /// on the actor with its result.
    fn blocking<T, W, F>(&self, ctx: &mut Context<Self>, work: W, then: F)
    where
        T: Send + 'static,
        W: FnOnce(&ReplicaStore, &BucketProps) -> Result<T> + Send + 'static,
        F: FnOnce(&mut Self, Result<T>, &mut Context<Self>) + 'static,
    {
        let (store, defaults, io) = (
            Arc::clone(&self.store),
            self.defaults.clone(),
            Arc::clone(&self.io),
        );
        let fut = async move {
            let _permit = io.acquire_owned().await.map_err(|_| Error::Shutdown)?;
            tokio::task::spawn_blocking(move || work(&store, &defaults))
                .await
                .map_err(|e| Error::StorageFailed {
                    reason: format!("anti-entropy work panicked: {e}"),
                })?
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |r, act, ctx| then(act, r, ctx)),
        );
    }

    fn carry(&mut self, out: Vec<AntiEntropyEffect>, ctx: &mut Context<Self>) {
        for effect in out {
            let work = match effect {
                Effect::Send { to, msg } => {
                    self.send(to, msg);
                    continue;
                }
                Effect::Store(work) => work,
                Effect::Emit(event) => match event {},
            };
            let config = self.config.clone();
            self.blocking(
                ctx,
                move |store, defaults| Ok(run(store, defaults, &config, work)),
                |act, done, ctx| match done {
                    Ok(done) => {
                        let mut out = Vec::new();
                        finish(&mut act.machine, act.node, Instant::now(), done, &mut out);
                        act.carry(out, ctx);
                    }
                    Err(e) => crate::log::warn_every!(error = %e, "anti-entropy work failed"),
                },
            );
        }
    }
}

impl Actor for AntiEntropyActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(super::replica::MAILBOX);
        if let Some(events) = self.events.take() {
            let stream = futures_util::stream::unfold(events, |mut rx| async move {
                rx.recv().await.map(|e| (e, rx))
            });
            ctx.add_stream(stream);
        }
        ctx.run_interval(tick_interval(self.config.period), |act, ctx| act.tick(ctx));
    }
}

impl StreamHandler<NodeEvent> for AntiEntropyActor {
    fn handle(&mut self, event: NodeEvent, ctx: &mut Context<Self>) {
        match event {
            NodeEvent::Ring(ring) => self.machine.set_ring(ring),
            NodeEvent::RingState(state) => self.machine.set_changing(state.pending.is_some()),
            NodeEvent::Member(event) => {
                let up = matches!(event, crate::membership::MemberEvent::Up { .. });
                self.machine.on_member_event(&event);
                // A node back up is exchanged with now, not at the next
                // tick (up to a second away).
                if up {
                    self.tick(ctx);
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The node is stopping; nothing more to follow.
    }
}

impl Handler<Incoming> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, Incoming(envelope): Incoming, ctx: &mut Context<Self>) {
        // The transport routes only anti-entropy messages here.
        let WireMessage::AntiEntropy(msg) = envelope.msg else {
            return;
        };
        let mut out = Vec::new();
        self.machine
            .step(Instant::now(), envelope.from, msg, &mut out);
        self.carry(out, ctx);
    }
}

impl Handler<GetAntiEntropyStats> for AntiEntropyActor {
    type Result = MessageResult<GetAntiEntropyStats>;

    fn handle(&mut self, _: GetAntiEntropyStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.machine.stats().clone())
    }
}

impl Handler<RepairNow> for AntiEntropyActor {
    type Result = Option<u64>;

    fn handle(&mut self, RepairNow(scope): RepairNow, ctx: &mut Context<Self>) -> Option<u64> {
        let until = self.machine.repair(scope);
        tracing::info!(
            node = %self.node,
            range = ?scope.range,
            peer = ?scope.peer,
            until_rounds = ?until,
            "repair: round asked for by an operator"
        );
        self.tick(ctx);
        until
    }
}

impl Handler<RoundNow> for AntiEntropyActor {
    type Result = ();

    fn handle(&mut self, _: RoundNow, ctx: &mut Context<Self>) {
        self.machine.round_now();
        self.tick(ctx);
    }
}
