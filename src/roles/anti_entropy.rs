//! The storage side of the anti-entropy machine, for every executor. The
//! machine's effects are the crate's one shape; its runner sends the
//! [`Effect::Send`]s itself and hands each [`Effect::Store`]'s
//! [`AntiEntropyWork`] to [`run`] (the AntiEntropy actor on a blocking
//! thread, the simulator inline), then the result to [`finish`], which
//! feeds the machine and turns answers into messages.
//!
//! Between the two halves nothing but data passes ([`Done`]), so the
//! actor and the simulator carry out the same work the same way.

use std::time::Instant;

use tracing::debug;

use super::stored_buckets::BucketView;
use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::effect::Effect;
use crate::error::Result;
use crate::id::NodeId;
use crate::replication::anti_entropy::{
    answer_tree, AntiEntropy, AntiEntropyEffect, AntiEntropyWork, RepairObject,
};
use crate::replication::replica::ReplicaStore;
use crate::replication::AntiEntropyMsg;
use crate::replication::{AntiEntropyConfig, BucketProps};

/// The most bytes of objects one repair message carries.
pub const REPAIR_BYTES: usize = DEFAULT_MAX_FRAME_BYTES / 2;

/// What a piece of storage work came to.
#[derive(Debug)]
pub enum Done {
    /// This node's tree of a range, for an exchange it initiates.
    Scanned {
        /// The exchange.
        session: u64,
        /// The scan.
        scan: Result<crate::replication::anti_entropy::LocalScan>,
    },
    /// The answer to a peer's tree, and the keys scanned for it.
    Answered {
        /// The peer.
        to: NodeId,
        /// The diff message and the keys scanned.
        answer: Result<(AntiEntropyMsg, u64)>,
    },
    /// Objects read to push to a peer.
    Pushed {
        /// The peer.
        to: NodeId,
        /// The exchange.
        session: u64,
        /// The objects, and the keys wanted from the peer.
        objects: Result<(
            Vec<RepairObject>,
            Vec<crate::replication::merkle::KeyDigest>,
        )>,
    },
    /// Objects merged in, and those read back for the peer.
    Repaired {
        /// Whom to answer, and the exchange.
        reply: Option<(NodeId, u64)>,
        /// This node's exchange the merge ends.
        ends: Option<u64>,
        /// How many merged, and the objects wanted back.
        done: Result<(u64, Vec<RepairObject>)>,
    },
    /// Tombstones purged.
    Purged(Result<u64>),
    /// The owners this node holds hints for, and the largest `n`.
    Hints {
        /// Whom to tell.
        to: Vec<NodeId>,
        /// The owners and `n_max`.
        found: Result<(Vec<NodeId>, usize)>,
    },
}

/// Carries out `work` on `store` (blocking); bucket properties are read
/// from the table stored in it, over `defaults`.
pub fn run(
    store: &ReplicaStore,
    defaults: &BucketProps,
    config: &AntiEntropyConfig,
    work: AntiEntropyWork,
) -> Done {
    match work {
        AntiEntropyWork::Scan {
            session,
            range,
            min_n,
            tombstones_before_ms,
        } => Done::Scanned {
            session,
            scan: BucketView::load(store, defaults).and_then(|view| {
                store.anti_entropy_scan(
                    range,
                    config.leaves,
                    min_n as usize,
                    &|b| view.props(b).n,
                    Some(tombstones_before_ms),
                )
            }),
        },
        AntiEntropyWork::Answer {
            to,
            session,
            range,
            min_n,
            leaves,
        } => Done::Answered {
            to,
            answer: BucketView::load(store, defaults).and_then(|view| {
                let scan = store.anti_entropy_scan(
                    range,
                    leaves.len().max(1),
                    min_n as usize,
                    &|b| view.props(b).n,
                    None,
                )?;
                let keys = scan.tree.keys;
                Ok((
                    answer_tree(session, &scan.tree, leaves, config.max_batch),
                    keys,
                ))
            }),
        },
        AntiEntropyWork::Push {
            to,
            session,
            push,
            want,
        } => Done::Pushed {
            to,
            session,
            objects: store
                .read_for_repair(&push, REPAIR_BYTES)
                .map(|objects| (objects, want)),
        },
        AntiEntropyWork::Repair {
            reply,
            ends,
            objects,
            want,
        } => Done::Repaired {
            reply,
            ends,
            done: BucketView::load(store, defaults).and_then(|view| {
                let mut merged = 0u64;
                for o in &objects {
                    let policy = &view.props(&o.bucket).policy;
                    if store.merge_for_repair(&o.bucket, &o.key, &o.object, policy)? {
                        merged += 1;
                    }
                }
                let back = match reply {
                    Some(_) => store.read_for_repair(&want, REPAIR_BYTES)?,
                    None => Vec::new(),
                };
                Ok((merged, back))
            }),
        },
        AntiEntropyWork::Purge { entries } => Done::Purged((|| {
            let mut purged = 0u64;
            for e in &entries {
                if store.purge_tombstone(&e.bucket, &e.key, e.digest)? {
                    purged += 1;
                }
            }
            Ok(purged)
        })()),
        AntiEntropyWork::ReportHints { to } => Done::Hints {
            to,
            found: BucketView::load(store, defaults)
                .and_then(|view| Ok((store.hint_owners()?, view.n_max()))),
        },
    }
}

/// Feeds `done` to the machine of node `me`; what to do next (messages to
/// send included, as [`Effect::Send`]) goes to `out`.
pub fn finish(
    machine: &mut AntiEntropy,
    me: NodeId,
    now: Instant,
    done: Done,
    out: &mut Vec<AntiEntropyEffect>,
) {
    match done {
        Done::Scanned { session, scan } => match scan {
            Ok(scan) => machine.scanned(now, session, scan, out),
            Err(e) => {
                crate::log::warn_every!(error = %e, "anti-entropy scan failed");
                machine.failed(session);
            }
        },
        Done::Answered { to, answer } => match answer {
            Ok((msg, keys)) => {
                machine.charge_keys(now, keys);
                out.push(Effect::Send { to, msg });
            }
            Err(e) => debug!(error = %e, %to, "answering a tree failed"),
        },
        Done::Pushed {
            to,
            session,
            objects,
        } => match objects {
            Ok((objects, want)) => {
                machine.charge_objects(now, objects.len() as u64);
                out.push(Effect::Send {
                    to,
                    msg: AntiEntropyMsg::Repair {
                        session,
                        objects,
                        want,
                    },
                });
            }
            Err(e) => {
                crate::log::warn_every!(error = %e, "reading objects for repair failed");
                machine.failed(session);
            }
        },
        Done::Repaired { reply, ends, done } => match done {
            Ok((merged, back)) => {
                machine.charge_objects(now, merged + back.len() as u64);
                if let Some((to, session)) = reply {
                    out.push(Effect::Send {
                        to,
                        msg: AntiEntropyMsg::Repaired {
                            session,
                            objects: back,
                        },
                    });
                }
                if let Some(session) = ends {
                    machine.merged(now, session, out);
                }
            }
            Err(e) => {
                crate::log::warn_every!(error = %e, "merging repaired objects failed");
                if let Some(session) = ends {
                    machine.failed(session);
                }
            }
        },
        Done::Purged(purged) => match purged {
            Ok(n) => machine.purged(n),
            Err(e) => crate::log::warn_every!(error = %e, "purging tombstones failed"),
        },
        Done::Hints { to, found } => match found {
            Ok((owners, n_max)) => {
                machine.set_n_max(n_max);
                machine.hint_report(now, me, owners.clone());
                for peer in to {
                    out.push(Effect::Send {
                        to: peer,
                        msg: AntiEntropyMsg::Hints {
                            owners: owners.clone(),
                        },
                    });
                }
            }
            Err(e) => crate::log::warn_every!(error = %e, "reading hint owners failed"),
        },
    }
}
