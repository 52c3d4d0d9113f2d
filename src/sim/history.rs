//! What a simulated run did, as the clients saw it: the history the
//! checkers read.
//!
//! Every client operation is recorded when it is invoked and again when it
//! completes (or never, if the run ended or its node crashed first), with
//! the virtual time of both. Values are unique per write (`c<client>-<n>`),
//! so a value read names the write that made it. After the faults end and
//! the cluster has healed, the simulator reads every key the run touched
//! straight from each of its replicas' stores: the final state.
//!
//! A history is plain data, printable as text (one line per operation), so
//! two runs of one seed can be compared byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::id::NodeId;

/// How a bucket of the run resolves its values, as the checkers need to
/// know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BucketKind {
    /// Concurrent writes are kept as siblings; the run writes blindly (no
    /// context), so no acknowledged write may ever disappear.
    Siblings,
    /// Last writer wins.
    Lww,
    /// A PN-Counter.
    Counter,
    /// An OR-Set; the run only adds.
    Set,
}

/// One simulated bucket: its name, kind and quorums.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimBucket {
    /// The bucket's name.
    pub name: String,
    /// Its policy.
    pub kind: BucketKind,
    /// Replicas per key.
    pub n: usize,
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// Whether fallbacks count towards quorums (sloppy quorum).
    pub sloppy: bool,
}

impl SimBucket {
    /// Whether a read quorum always meets a write quorum, with strict
    /// quorums (fallbacks do not count): then a read invoked after a write
    /// was acknowledged sees it.
    pub fn quorums_intersect(&self) -> bool {
        !self.sloppy && self.r + self.w > self.n
    }
}

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimOp {
    /// A blind write (no context) of a value unique to this operation.
    Put {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// A read.
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A counter increment (or decrement, when `by` is negative).
    CounterAdd {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The amount.
        by: i64,
    },
    /// A counter's delete, as a client resets one: a read (a `Get` at the
    /// bucket's `r`) for the context, then a delete with that context. One
    /// operation from the read's invocation to the delete's answer; a
    /// failed read fails it definitely (nothing was sent), and a key the
    /// read finds absent is acknowledged with nothing deleted.
    CounterReset {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A counter read.
    CounterGet {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// An add of one member, unique to this operation.
    SetAdd {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The member.
        member: String,
    },
    /// A read of a set's members.
    SetMembers {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
}

impl SimOp {
    /// The bucket and key the operation is on.
    pub fn target(&self) -> (&str, &str) {
        match self {
            SimOp::Put { bucket, key, .. }
            | SimOp::Get { bucket, key }
            | SimOp::CounterAdd { bucket, key, .. }
            | SimOp::CounterReset { bucket, key }
            | SimOp::CounterGet { bucket, key }
            | SimOp::SetAdd { bucket, key, .. }
            | SimOp::SetMembers { bucket, key } => (bucket, key),
        }
    }

    /// Whether it writes.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            SimOp::Put { .. }
                | SimOp::CounterAdd { .. }
                | SimOp::CounterReset { .. }
                | SimOp::SetAdd { .. }
        )
    }
}

/// What a successful operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// A write was acknowledged.
    Written,
    /// The values a read returned: none (not found), one, or the siblings
    /// (sorted).
    Values(Vec<String>),
    /// A counter's value.
    Counter(i64),
    /// A set's members (sorted).
    Members(Vec<String>),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok(Observed),
    /// It failed. `definite`: a failed write that no replica can have
    /// stored (reads are always definite: they change nothing).
    Failed {
        /// Whether nothing was stored anywhere.
        definite: bool,
        /// The error, as text.
        error: String,
    },
    /// No answer: the run ended, or the coordinating node crashed, first.
    /// A write may or may not have been applied.
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// Its index in the history (invocation order).
    pub id: usize,
    /// The client that made it; a client makes one operation at a time.
    pub client: u32,
    /// The node it was sent to (its coordinator).
    pub node: NodeId,
    /// The operation.
    pub op: SimOp,
    /// Virtual time of the invocation.
    pub invoked: Duration,
    /// Virtual time of the answer, if there was one.
    pub completed: Option<Duration>,
    /// How it ended.
    pub outcome: Outcome,
}

impl OpRecord {
    /// Whether it is a write that was acknowledged.
    pub fn acked_write(&self) -> bool {
        self.op.is_write() && matches!(self.outcome, Outcome::Ok(_))
    }

    /// Whether it is a write that may have been applied: acknowledged,
    /// failed indefinitely, or unanswered.
    pub fn maybe_applied(&self) -> bool {
        self.op.is_write() && !matches!(self.outcome, Outcome::Failed { definite: true, .. })
    }

    /// Whether this operation completed before `other` was invoked (real
    /// time order).
    pub fn precedes(&self, other: &OpRecord) -> bool {
        self.completed.is_some_and(|c| c < other.invoked)
    }
}

/// A whole run: the buckets, every operation, and each key's state on each
/// of its replicas after the cluster healed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The seed that made it.
    pub seed: u64,
    /// The buckets, by name.
    pub buckets: BTreeMap<String, SimBucket>,
    /// Every operation, in invocation order.
    pub ops: Vec<OpRecord>,
    /// After healing: for each (bucket, key) the run touched, what each of
    /// its `n` primary replicas holds, read from its store (`Values` for
    /// siblings and LWW buckets, as a read would resolve them, `Counter`,
    /// `Members`).
    pub final_state: BTreeMap<(String, String), Vec<(NodeId, Observed)>>,
    /// Whether the cluster was healed and given time to converge before
    /// the final state was read (convergence is only checked then).
    pub healed: bool,
    /// Fault and lifecycle events, with their virtual time, for the
    /// report of a failing seed.
    pub events: Vec<(Duration, String)>,
    /// At the end, the ring state each running node holds: its digest,
    /// and whether a change is still in progress.
    pub rings: BTreeMap<NodeId, (u64, bool)>,
    /// Power losses, with their virtual time: each lost the node's writes
    /// not yet synced.
    pub power_losses: Vec<(Duration, NodeId)>,
    /// How often storage was synced (`None`: every write at once).
    pub sync_interval: Option<Duration>,
}

impl History {
    /// Whether a power loss may have taken `write` off a replica before
    /// `read` was invoked: one struck after the write was invoked and no
    /// later than a sync interval after it was acknowledged (a replica
    /// syncs what it stored within an interval), and before the read. The
    /// store promises such a write on fewer replicas until repair puts it
    /// back (`sync = interval` loses the last interval's writes in a
    /// machine crash), so a read meeting the quorum may miss it then.
    pub fn exposed_to_power_loss(&self, write: &OpRecord, read: &OpRecord) -> bool {
        let Some(interval) = self.sync_interval else {
            return false;
        };
        let until = write.completed.unwrap_or(write.invoked) + interval;
        self.power_losses
            .iter()
            .any(|(at, _)| *at >= write.invoked && *at <= until && *at < read.invoked)
    }

    /// The history as text: one line per event and per operation, then
    /// the final state. Equal texts mean equal runs.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "seed {}", self.seed);
        for (at, e) in &self.events {
            let _ = writeln!(text, "{}", Self::event_line(*at, e));
        }
        for op in &self.ops {
            let _ = writeln!(text, "{}", Self::op_line(op));
        }
        for ((bucket, key), replicas) in &self.final_state {
            for (node, seen) in replicas {
                let _ = writeln!(text, "{}", Self::final_line(bucket, key, *node, seen));
            }
        }
        for (node, (digest, pending)) in &self.rings {
            let pending = if *pending {
                " (change in progress)"
            } else {
                ""
            };
            let _ = writeln!(text, "ring {node} {digest:016x}{pending}");
        }
        text
    }

    /// One event's line of [`History::to_text`] (without the newline).
    pub fn event_line(at: Duration, event: &str) -> String {
        format!("{:>9} event {event}", at.as_micros())
    }

    /// One operation's line of [`History::to_text`] (without the newline).
    pub fn op_line(op: &OpRecord) -> String {
        let done = op
            .completed
            .map_or_else(|| "-".to_string(), |c| c.as_micros().to_string());
        format!(
            "{:>9} op {} c{} n{} {:?} -> {} {:?}",
            op.invoked.as_micros(),
            op.id,
            op.client,
            op.node.0,
            op.op,
            done,
            op.outcome
        )
    }

    /// One replica's final-state line of [`History::to_text`] (without
    /// the newline).
    pub fn final_line(bucket: &str, key: &str, node: NodeId, seen: &Observed) -> String {
        format!("final {bucket}/{key} n{} {seen:?}", node.0)
    }

    /// The operation with id `id`: the one at index `id` when ids are
    /// indices, as recorded; otherwise found by a scan.
    pub fn op(&self, id: usize) -> Option<&OpRecord> {
        match self.ops.get(id) {
            Some(op) if op.id == id => Some(op),
            _ => self.ops.iter().find(|op| op.id == id),
        }
    }
}
