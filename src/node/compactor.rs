//! The Compactor actor: runs the storage engine's compactions.
//!
//! A node opens its LSM engine with `external_compaction`, so the engine
//! never compacts by itself; this actor looks at it every
//! `compaction_poll` and, when it is not already compacting, runs
//! [`Engine::compact`] on a blocking thread until the engine's policy (the
//! pure `compaction::pick` over the level shape) finds nothing to do. One
//! compaction at a time. The decision stays the engine's policy; the actor
//! owns when the work runs and keeps it off the event loop.
//!
//! A failed compaction leaves the engine read-only (writes return the
//! error, so coordinators see the replica fail); the actor logs it and
//! stops trying. Engines that compact themselves, or need no compaction,
//! answer `Ok(false)` and cost one cheap call per poll.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::error;

use crate::storage::Engine;

/// Compactions run and whether the engine failed, for status views.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactorStats {
    /// Compaction steps run since start.
    pub compactions: u64,
    /// The error that stopped compaction, if any.
    pub failed: Option<String>,
}

/// Asks for [`CompactorStats`].
#[derive(Message)]
#[rtype(result = "CompactorStats")]
pub struct GetCompactorStats;

/// The actor. See the module documentation.
pub struct Compactor {
    engine: Arc<dyn Engine>,
    poll: Duration,
    running: bool,
    stats: CompactorStats,
}

impl Compactor {
    /// Compacts `engine`, looking every `poll`.
    pub fn new(engine: Arc<dyn Engine>, poll: Duration) -> Self {
        Compactor {
            engine,
            poll,
            running: false,
            stats: CompactorStats::default(),
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.stats.failed.is_some() {
            return;
        }
        self.running = true;
        let engine = Arc::clone(&self.engine);
        let work = tokio::task::spawn_blocking(move || {
            let mut steps = 0u64;
            loop {
                match engine.compact() {
                    Ok(true) => steps += 1,
                    Ok(false) => return (steps, Ok(())),
                    Err(e) => return (steps, Err(e)),
                }
            }
        });
        ctx.spawn(work.into_actor(self).map(|done, act, _| {
            act.running = false;
            match done {
                Ok((steps, result)) => {
                    act.stats.compactions += steps;
                    if let Err(e) = result {
                        if !matches!(e, crate::Error::Shutdown) {
                            error!(error = %e, "compaction failed; the engine is read-only");
                            act.stats.failed = Some(e.to_string());
                        }
                    }
                }
                Err(e) => {
                    error!(error = %e, "compaction task failed");
                    act.stats.failed = Some(e.to_string());
                }
            }
        }));
    }
}

impl Actor for Compactor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.poll, |act, ctx| act.poll(ctx));
    }
}

impl Handler<GetCompactorStats> for Compactor {
    type Result = MessageResult<GetCompactorStats>;

    fn handle(&mut self, _: GetCompactorStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats.clone())
    }
}
