//! Jepsen-style checkers: what a [`History`] must satisfy for the store to
//! have kept its promises.
//!
//! Each checker is a pure function over a history that returns the
//! [`Violation`]s it found; [`check_all`] runs them all and [`report`]
//! prints the violations with the operations and final states they name,
//! for a failing seed's output.
//!
//! The checkers flag only what the store promises never to do. They lean
//! on three facts of the history's contract ([`super::history`]): a
//! value (or set member) is unique to the write that made it, so a value
//! read names its write; the run writes blindly and never deletes, so no
//! write replaces another under the causal policies; and a write that
//! `Failed { definite: true }` was stored nowhere. Real-time order is
//! [`OpRecord::precedes`]: an operation that completed strictly before
//! another was invoked. Everything else is concurrent, and a concurrent or
//! indefinite write may be seen or not, by any read and in any final
//! state.
//!
//! What a read must see depends on the bucket's quorums: strict quorums
//! with `r + w > n` ([`SimBucket::quorums_intersect`]) are what make a
//! read see every write acknowledged before it was invoked. Under
//! last-writer-wins, the order of sequential writes additionally needs two
//! write quorums to meet (`2w > n`, strict), as `docs/data-model.md` ("What
//! LWW loses") states; without it, a later write coordinated by a node
//! whose clock is behind may legally lose to an earlier one.
//!
//! The final state is checked for completeness and agreement only when the
//! history says the cluster healed ([`History::healed`]); phantoms are
//! looked for in it always.
//!
//! [`SimBucket::quorums_intersect`]: super::history::SimBucket::quorums_intersect

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};

use super::history::{BucketKind, History, Observed, OpRecord, Outcome, SimOp};
use crate::id::NodeId;

/// Something a history shows the store did that it promises never to do
/// (or, from [`well_formed`], something wrong with the history itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker that found it (its function's name).
    pub checker: &'static str,
    /// The bucket of the key concerned.
    pub bucket: String,
    /// The key concerned.
    pub key: String,
    /// The ids of the operations involved: the read or the write at fault
    /// first, then the writes that show it wrong.
    pub ops: Vec<usize>,
    /// What is wrong and why it breaks a promise, in one paragraph.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.checker, self.bucket, self.key)?;
        if !self.ops.is_empty() {
            write!(f, " (ops {})", join(&self.ops))?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Runs every checker, [`well_formed`] first, and returns all their
/// violations in that order.
pub fn check_all(h: &History) -> Vec<Violation> {
    let checkers: [fn(&History) -> Vec<Violation>; 9] = [
        well_formed,
        no_phantoms,
        convergence,
        ring_settles,
        set_full,
        read_your_writes,
        or_set,
        counters,
        lww_order,
    ];
    checkers.iter().flat_map(|check| check(h)).collect()
}

/// A readable account of `violations` for a failing run: the seed, the
/// fault and lifecycle events, then each violation with the lines (as in
/// [`History::to_text`]) of the operations it names and of its key's final
/// state.
pub fn report(h: &History, violations: &[Violation]) -> String {
    let mut out = String::new();
    let healed = if h.healed { "" } else { " (not healed)" };
    let _ = writeln!(
        out,
        "seed {}: {} violation(s){healed}",
        h.seed,
        violations.len()
    );
    if violations.is_empty() {
        return out;
    }
    if !h.events.is_empty() {
        let _ = writeln!(out, "events:");
        for (at, event) in &h.events {
            let _ = writeln!(out, "  {}", History::event_line(*at, event));
        }
    }
    for (i, v) in violations.iter().enumerate() {
        let _ = writeln!(out, "\nviolation {}: {v}", i + 1);
        for id in &v.ops {
            let line = h
                .op(*id)
                .map_or_else(|| format!("(no op {id} in the history)"), History::op_line);
            let _ = writeln!(out, "  {line}");
        }
        let target = (v.bucket.clone(), v.key.clone());
        for (node, seen) in h.final_state.get(&target).into_iter().flatten() {
            let line = History::final_line(&v.bucket, &v.key, *node, seen);
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// Checks that the history is one the other checkers can judge, as
/// `super::history` describes it; a violation here is a fault of the
/// simulator, not of the store, and may make the other checkers' verdicts
/// meaningless.
///
/// - each operation's id is its index, and invocations are in order;
/// - an operation has a completion time exactly when its outcome is not
///   `Unknown`, and completes no earlier than it was invoked;
/// - its bucket is declared, the operation suits the bucket's kind (`Put`
///   and `Get` for `Siblings` and `Lww`, counter ops for `Counter`, set
///   ops for `Set`), and a success observes what the operation returns
///   (`Written` for writes, `Values`, `Counter`, `Members` for the reads);
/// - no two writes of one key write the same value or member (a value
///   must name its write);
/// - every final state belongs to a declared bucket, holds observations of
///   the bucket's kind, from distinct nodes; when the cluster healed,
///   every key an operation touched has one, from exactly `n` replicas.
pub fn well_formed(h: &History) -> Vec<Violation> {
    let mut found = Found::new("well_formed");
    let mut written: HashMap<(&str, &str, bool, &str), usize> = HashMap::new();
    for (i, op) in h.ops.iter().enumerate() {
        let (bucket, key) = op.op.target();
        let mut flag = |ops: Vec<usize>, detail: String| found.flag(bucket, key, ops, detail);
        if op.id != i {
            flag(
                vec![op.id],
                format!("op {} is at index {i}; ids must be indices.", op.id),
            );
        }
        if i > 0 && op.invoked < h.ops[i - 1].invoked {
            let detail = "operations are not in invocation order.".to_string();
            flag(vec![h.ops[i - 1].id, op.id], detail);
        }
        let timing = match (op.completed, &op.outcome) {
            (Some(_), Outcome::Unknown) => Some("an unanswered operation has a completion time."),
            (None, Outcome::Ok(_) | Outcome::Failed { .. }) => {
                Some("an answered operation has no completion time.")
            }
            (Some(done), _) if done < op.invoked => {
                Some("the operation completed before it was invoked.")
            }
            _ => None,
        };
        if let Some(detail) = timing {
            flag(vec![op.id], detail.to_string());
        }
        match h.buckets.get(bucket) {
            None => flag(vec![op.id], format!("bucket {bucket:?} is not declared.")),
            Some(b) if !op_suits(&op.op, b.kind) => {
                let detail = format!("a {} on a {:?} bucket.", op_name(&op.op), b.kind);
                flag(vec![op.id], detail);
            }
            Some(_) => {}
        }
        if let Outcome::Ok(seen) = &op.outcome {
            if !observation_suits(&op.op, seen) {
                flag(
                    vec![op.id],
                    format!("a {} answered {seen:?}.", op_name(&op.op)),
                );
            }
        }
        if let Some((value, member)) = written_value(op) {
            if let Some(first) = written.insert((bucket, key, member, value), op.id) {
                let detail = format!(
                    "two writes of {value:?}: values must be unique to their write, or a \
                     value read cannot name its write."
                );
                flag(vec![first, op.id], detail);
            }
        }
    }
    for ((bucket, key), replicas) in &h.final_state {
        let mut flag = |detail: String| found.flag(bucket, key, vec![], detail);
        let Some(b) = h.buckets.get(bucket) else {
            flag(format!(
                "a final state for bucket {bucket:?}, which is not declared."
            ));
            continue;
        };
        let nodes: BTreeSet<_> = replicas.iter().map(|(node, _)| *node).collect();
        if nodes.len() != replicas.len() {
            flag("the final state lists a node twice.".to_string());
        }
        if h.healed && replicas.len() != b.n {
            flag(format!(
                "the final state of a healed cluster lists {} replicas; the bucket has n = {}.",
                replicas.len(),
                b.n
            ));
        }
        for (node, seen) in replicas {
            if !final_suits(b.kind, seen) {
                flag(format!(
                    "replica {node} of a {:?} bucket holds {seen:?}.",
                    b.kind
                ));
            }
        }
    }
    if h.healed {
        for ((bucket, key), ops) in ops_by_key(h) {
            if !h
                .final_state
                .contains_key(&(bucket.to_string(), key.to_string()))
            {
                let detail = "the cluster healed but the key, which operations touched, has \
                              no final state.";
                found.flag(bucket, key, vec![ops[0].id], detail.to_string());
            }
        }
    }
    found.list
}

/// Checks that nothing ever shows a value that nobody wrote.
///
/// Every value a `Get` returned and every member a `SetMembers` returned
/// must have been written to that bucket and key, by a `Put` (values) or
/// a `SetAdd` (members) that was invoked no later than the read completed
/// (a read cannot see the future) and did not fail definitely (a definite
/// failure promises that no replica stored it). Every value and member in
/// the final state must likewise come from a write of that key that did
/// not fail definitely, healed or not. A store that invents, resurrects
/// from another key, or leaks a refused write breaks this, whatever its
/// quorums. Counter reads have no values to trace; [`counters`] bounds
/// them instead.
pub fn no_phantoms(h: &History) -> Vec<Violation> {
    const REFUSED: &str = "which failed definitely: a definite failure promises that no \
                           replica stored it.";
    let mut found = Found::new("no_phantoms");
    let by_key = ops_by_key(h);
    for (&(bucket, key), ops) in &by_key {
        let writers = Writers::of(ops);
        for read in ops {
            let Outcome::Ok(seen) = &read.outcome else {
                continue;
            };
            let Some((values, member)) = listed(seen) else {
                continue;
            };
            for value in values {
                let returned = format!("read op {} returned {value:?}", read.id);
                match writers.get(member, value) {
                    None => {
                        let detail = format!("{returned}, which no operation wrote to this key.");
                        found.flag(bucket, key, vec![read.id], detail);
                    }
                    Some(w) if !w.maybe_applied() => {
                        let detail = format!("{returned}, written by op {}, {REFUSED}", w.id);
                        found.flag(bucket, key, vec![read.id, w.id], detail);
                    }
                    Some(w) if read.precedes(w) => {
                        let detail = format!(
                            "{returned}, written by op {}, which was invoked only after the \
                             read had completed.",
                            w.id
                        );
                        found.flag(bucket, key, vec![read.id, w.id], detail);
                    }
                    Some(_) => {}
                }
            }
        }
    }
    for ((bucket, key), replicas) in &h.final_state {
        let ops = by_key.get(&(bucket.as_str(), key.as_str()));
        let writers = Writers::of(ops.map_or(&[][..], Vec::as_slice));
        for (node, seen) in replicas {
            let Some((values, member)) = listed(seen) else {
                continue;
            };
            for value in values {
                let holds = format!("replica {node} finally holds {value:?}");
                match writers.get(member, value) {
                    None => {
                        let detail = format!("{holds}, which no operation wrote to this key.");
                        found.flag(bucket, key, vec![], detail);
                    }
                    Some(w) if !w.maybe_applied() => {
                        let detail = format!("{holds}, written by op {}, {REFUSED}", w.id);
                        found.flag(bucket, key, vec![w.id], detail);
                    }
                    Some(_) => {}
                }
            }
        }
    }
    found.list
}

/// Checks, for `Siblings` buckets of a healed cluster, that no
/// acknowledged put was lost: its value is among the final values of
/// every replica of its key.
///
/// The run's puts are blind (no context), so under the causal policy each
/// one becomes a sibling of everything stored and none ever replaces
/// another; there are no deletes. An acknowledged put is stored on `w`
/// replicas, and once the cluster has healed and converged every replica
/// must hold it. (That no final value comes from a definitely failed put
/// is [`no_phantoms`]'s; what reads must see during the run is
/// [`read_your_writes`]'s.)
pub fn set_full(h: &History) -> Vec<Violation> {
    let mut found = Found::new("set_full");
    if !h.healed {
        return found.list;
    }
    let by_key = ops_by_key(h);
    for ((bucket, key), replicas) in &h.final_state {
        if h.buckets.get(bucket).map(|b| b.kind) != Some(BucketKind::Siblings) {
            continue;
        }
        let Some(ops) = by_key.get(&(bucket.as_str(), key.as_str())) else {
            continue;
        };
        let acked = acked_writes(ops);
        for (node, seen) in replicas {
            let Observed::Values(values) = seen else {
                continue;
            };
            let missing = missing_from(&acked, values, false);
            if !missing.is_empty() {
                let detail = format!(
                    "after the cluster healed, replica {node} lacks the values of {} \
                     acknowledged put(s) ({}): blind puts never replace one another, so every \
                     acknowledged put must survive on every replica.",
                    missing.len(),
                    quoted_values(&missing)
                );
                found.flag(bucket, key, ids(&missing), detail);
            }
        }
    }
    found.list
}

/// Checks, for `Siblings` buckets whose quorums intersect, that every
/// `Get` returns the value of every put of its key acknowledged before
/// the `Get` was invoked.
///
/// With strict quorums and `r + w > n`, the `r` replicas a read hears from
/// include one of the `w` that stored an acknowledged put, and since blind
/// puts never replace one another that replica still holds its value. A
/// read concurrent with a put, or after an indefinite one, may or may not
/// see it. Buckets without intersecting quorums promise nothing here.
pub fn read_your_writes(h: &History) -> Vec<Violation> {
    let mut found = Found::new("read_your_writes");
    for ((bucket, key), ops) in ops_by_key(h) {
        let Some(b) = h.buckets.get(bucket) else {
            continue;
        };
        if b.kind != BucketKind::Siblings || !b.quorums_intersect() {
            continue;
        }
        let acked = acked_writes(&ops);
        for read in &ops {
            let Outcome::Ok(Observed::Values(values)) = &read.outcome else {
                continue;
            };
            let missing = missing_from(&preceding(h, &acked, read), values, false);
            if !missing.is_empty() {
                let detail = format!(
                    "read op {} misses the values of {} put(s) acknowledged before it was \
                     invoked ({}): with strict quorums and r + w > n ({} + {} > {}) a read \
                     meets every acknowledged write, and blind puts never replace one another.",
                    read.id,
                    missing.len(),
                    quoted_values(&missing),
                    b.r,
                    b.w,
                    b.n
                );
                found.flag(bucket, key, prepend(read.id, &missing), detail);
            }
        }
    }
    found.list
}

/// Checks `Set` (OR-Set, adds only) buckets: no acknowledged add is lost.
///
/// When the cluster healed, every replica's final members include the
/// member of every acknowledged `SetAdd` of its key: with adds only,
/// nothing removes a member, and an OR-Set's merge keeps every add. For a
/// bucket whose quorums intersect, every `SetMembers` read also includes
/// the member of every add acknowledged before the read was invoked (the
/// read's `r` replicas meet the add's `w`). Concurrent and indefinite adds
/// may be seen or not.
pub fn or_set(h: &History) -> Vec<Violation> {
    let mut found = Found::new("or_set");
    for ((bucket, key), ops) in ops_by_key(h) {
        let Some(b) = h.buckets.get(bucket) else {
            continue;
        };
        if b.kind != BucketKind::Set {
            continue;
        }
        let acked = acked_writes(&ops);
        for read in ops.iter().filter(|_| b.quorums_intersect()) {
            let Outcome::Ok(Observed::Members(members)) = &read.outcome else {
                continue;
            };
            let missing = missing_from(&preceding(h, &acked, read), members, true);
            if !missing.is_empty() {
                let detail = format!(
                    "read op {} misses {} member(s) whose add was acknowledged before it was \
                     invoked ({}): with strict quorums and r + w > n ({} + {} > {}) a read \
                     meets every acknowledged add, and nothing removes a member.",
                    read.id,
                    missing.len(),
                    quoted_values(&missing),
                    b.r,
                    b.w,
                    b.n
                );
                found.flag(bucket, key, prepend(read.id, &missing), detail);
            }
        }
        for (node, seen) in final_replicas(h, bucket, key) {
            let Observed::Members(members) = seen else {
                continue;
            };
            let missing = missing_from(&acked, members, true);
            if !missing.is_empty() {
                let detail = format!(
                    "after the cluster healed, replica {node} lacks {} member(s) whose add was \
                     acknowledged ({}): an OR-Set with adds only loses no acknowledged add.",
                    missing.len(),
                    quoted_values(&missing)
                );
                found.flag(bucket, key, ids(&missing), detail);
            }
        }
    }
    found.list
}

/// Checks `Counter` buckets: every value is a sum of adds that may have
/// been applied, including those that must have been, and an acknowledged
/// reset removed every add it was ordered after.
///
/// Each add either is surely included in a value, may be included, or
/// surely is not. A definitely failed add, or one invoked after a read
/// completed, is never included in it. For a value read, an add
/// acknowledged before the read was invoked is surely included when the
/// bucket's quorums intersect (the read meets one of the replicas that
/// stored it), and may be included otherwise; every other add invoked no
/// later than the read completed may be. For a healed replica's final
/// value, every acknowledged add is surely included and every indefinite
/// one (failed indefinitely or unanswered) may be. So the value must lie
/// between the sure sum plus every possible negative add and the sure sum
/// plus every possible positive add; these are the tightest bounds that
/// hold for any subset of the possible adds.
///
/// Resets (`CounterReset`, a delete with a read's context) that may have
/// been applied before a value was read change what counts. When the
/// value's last such reset D is *clean*, only the adds invoked after D
/// completed count, as above: D was acknowledged before the read was
/// invoked, the bucket's quorums intersect (D's read saw every add
/// acknowledged before it, and an add after D reads D at its own level,
/// `docs/replication.md`), no power loss struck from D's invocation on,
/// every other reset that may have been applied was acknowledged before D
/// was invoked, and every add invoked before D completed was acknowledged
/// before D was invoked (an indefinite or concurrent add may carry the
/// state D removed back: `docs/data-model.md`). Otherwise every add
/// invoked before the value was read may be included and none surely is.
pub fn counters(h: &History) -> Vec<Violation> {
    let mut found = Found::new("counters");
    for ((bucket, key), ops) in ops_by_key(h) {
        let Some(b) = h.buckets.get(bucket) else {
            continue;
        };
        if b.kind != BucketKind::Counter {
            continue;
        }
        let adds: Vec<(&OpRecord, i64)> = ops
            .iter()
            .filter_map(|op| match op.op {
                SimOp::CounterAdd { by, .. } if op.maybe_applied() => Some((*op, by)),
                _ => None,
            })
            .collect();
        let resets: Vec<&OpRecord> = ops
            .iter()
            .copied()
            .filter(|op| matches!(op.op, SimOp::CounterReset { .. }) && op.maybe_applied())
            .collect();
        let sure_when = if b.quorums_intersect() {
            "sure: adds acknowledged before the read was invoked; possible: other adds invoked \
             before it completed that did not fail definitely"
        } else {
            "the bucket's quorums do not intersect, so every add invoked before the read \
             completed that did not fail definitely is possible, none sure"
        };
        // The clean last reset among `before` (see the doc), for a value
        // read by `read` (None: a healed replica's final value).
        let clean = |before: &[&'_ OpRecord], read: Option<&OpRecord>| -> Option<Option<usize>> {
            let Some(last) = before.iter().max_by_key(|r| r.completed) else {
                return Some(None);
            };
            let ordered = last.acked_write() && read.is_none_or(|read| last.precedes(read));
            let others = before
                .iter()
                .all(|r| r.id == last.id || (r.acked_write() && r.precedes(last)));
            let adds_before = adds
                .iter()
                .filter(|(add, _)| !last.precedes(add))
                .all(|(add, _)| add.acked_write() && add.precedes(last));
            let power = h
                .power_losses
                .iter()
                .any(|(at, _)| *at >= last.invoked && read.is_none_or(|r| *at < r.invoked));
            (b.quorums_intersect() && ordered && others && adds_before && !power)
                .then_some(Some(last.id))
        };
        for read in &ops {
            let Outcome::Ok(Observed::Counter(value)) = read.outcome else {
                continue;
            };
            let before: Vec<&OpRecord> = resets
                .iter()
                .copied()
                .filter(|r| !read.precedes(r))
                .collect();
            let possible = adds.iter().filter(|(add, _)| !read.precedes(add));
            let (bounds, since) = match clean(&before, Some(read)) {
                Some(since) => {
                    let after = since.and_then(|id| h.op(id));
                    let counted = possible.filter(|(add, _)| after.is_none_or(|d| d.precedes(add)));
                    let bounds = Bounds::of(counted.map(|&(add, by)| {
                        let sure = b.quorums_intersect() && add.acked_write() && add.precedes(read);
                        (add, by, sure)
                    }));
                    (bounds, after)
                }
                None => (
                    Bounds::of(possible.map(|&(add, by)| (add, by, false))),
                    None,
                ),
            };
            if let Some((ids, why)) = bounds.judge(value) {
                let after = since.map_or_else(String::new, |d| {
                    format!(
                        " counting only adds invoked after reset op {} completed;",
                        d.id
                    )
                });
                let detail = format!(
                    "read op {} returned {value},{after} {why} ({sure_when}).",
                    read.id
                );
                found.flag(
                    bucket,
                    key,
                    std::iter::once(read.id)
                        .chain(since.map(|d| d.id))
                        .chain(ids)
                        .collect(),
                    detail,
                );
            }
        }
        let (bounds, since) = match clean(&resets, None) {
            Some(since) => {
                let after = since.and_then(|id| h.op(id));
                let counted = adds
                    .iter()
                    .filter(|(add, _)| after.is_none_or(|d| d.precedes(add)));
                (
                    Bounds::of(counted.map(|&(add, by)| (add, by, add.acked_write()))),
                    after,
                )
            }
            None => (
                Bounds::of(adds.iter().map(|&(add, by)| (add, by, false))),
                None,
            ),
        };
        for (node, seen) in final_replicas(h, bucket, key) {
            let Observed::Counter(value) = *seen else {
                continue;
            };
            if let Some((ids, why)) = bounds.judge(value) {
                let after = since.map_or_else(String::new, |d| {
                    format!(
                        " counting only adds invoked after reset op {} completed;",
                        d.id
                    )
                });
                let detail = format!(
                    "after the cluster healed, replica {node} holds {value},{after} {why} (sure: \
                     every acknowledged add; possible: adds that failed indefinitely or were \
                     unanswered)."
                );
                found.flag(
                    bucket,
                    key,
                    since.map(|d| d.id).into_iter().chain(ids).collect(),
                    detail,
                );
            }
        }
    }
    found.list
}

/// Checks `Lww` buckets: a write invoked after another was acknowledged
/// wins over it, and nothing acknowledged is lost to an empty key.
///
/// The store promises (`docs/data-model.md`, "What LWW loses") that of
/// two writes, the second invoked after the first was acknowledged, the
/// second wins whatever the node clocks, when their write quorums meet:
/// strict quorums and `2w > n` for the bucket's writes. Under LWW every
/// replica and every read resolves to one value.
///
/// - Every final value (per replica, when healed) and every value read
///   is a single value (or none).
/// - Final state (healed): a replica must not be empty when some write
///   was acknowledged (the run never deletes). When the write quorums
///   meet and its value's write W was acknowledged, no acknowledged write
///   may have been invoked after W completed: that write was stamped
///   above W. (An indefinite W that completed before an acknowledged
///   write was invoked may still win: it may sit only on replicas the
///   later write did not reach, stamped by a clock that runs ahead.)
/// - Reads, when the write quorums meet and `r + w > n` (strict): a `Get`
///   invoked after a write W was acknowledged must return a value, and
///   not that of an acknowledged write that completed before W was
///   invoked; it reads at least one replica holding W or something newer.
///
/// Values whose write cannot be found are [`no_phantoms`]'s; replicas that
/// disagree are [`convergence`]'s, and each is judged here on its own.
pub fn lww_order(h: &History) -> Vec<Violation> {
    let mut found = Found::new("lww_order");
    for ((bucket, key), ops) in ops_by_key(h) {
        let Some(b) = h.buckets.get(bucket) else {
            continue;
        };
        if b.kind != BucketKind::Lww {
            continue;
        }
        let ordered = !b.sloppy && 2 * b.w > b.n;
        let writers = Writers::of(&ops);
        let acked = acked_writes(&ops);
        // The acknowledged write of `value`, and those acknowledged
        // writes of `after` that it completed before.
        let overtaken = |value: &str, after: &[&'_ OpRecord]| {
            let w = writers.get(false, value).filter(|w| w.acked_write())?;
            let later: Vec<usize> = after
                .iter()
                .filter(|l| w.precedes(l))
                .map(|l| l.id)
                .collect();
            (!later.is_empty()).then_some((w.id, later))
        };
        for read in &ops {
            let Outcome::Ok(Observed::Values(values)) = &read.outcome else {
                continue;
            };
            if values.len() > 1 {
                let detail = format!(
                    "read op {} returned {} values ({values:?}): last-writer-wins resolves \
                     every read to one value.",
                    read.id,
                    values.len()
                );
                found.flag(bucket, key, vec![read.id], detail);
                continue;
            }
            if !(ordered && b.quorums_intersect()) {
                continue;
            }
            let before = preceding(h, &acked, read);
            match values.first() {
                None if !before.is_empty() => {
                    let detail = format!(
                        "read op {} found no value although {} write(s) were acknowledged \
                         before it was invoked: with strict quorums and r + w > n \
                         ({} + {} > {}) it meets a replica holding one of them, and nothing \
                         deletes.",
                        read.id,
                        before.len(),
                        b.r,
                        b.w,
                        b.n
                    );
                    found.flag(bucket, key, prepend(read.id, &before), detail);
                }
                None => {}
                Some(value) => {
                    let Some((x, newer)) = overtaken(value, &before) else {
                        continue;
                    };
                    let detail = format!(
                        "read op {} returned {value:?} of op {x}, although op(s) {} were \
                         invoked after op {x} was acknowledged and were acknowledged before the \
                         read was invoked: the later write wins (strict quorums, 2w > n), and a \
                         read with r + w > n meets a replica holding it or something newer.",
                        read.id,
                        join(&newer)
                    );
                    found.flag(
                        bucket,
                        key,
                        [read.id, x].into_iter().chain(newer).collect(),
                        detail,
                    );
                }
            }
        }
        for (node, seen) in final_replicas(h, bucket, key) {
            let Observed::Values(values) = seen else {
                continue;
            };
            let holds = format!("after the cluster healed, replica {node} holds");
            match values.as_slice() {
                [] if !acked.is_empty() => {
                    let detail = format!(
                        "{holds} no value although {} write(s) were acknowledged and nothing \
                         deletes: an acknowledged write was lost.",
                        acked.len()
                    );
                    found.flag(bucket, key, ids(&acked), detail);
                }
                [] => {}
                [value] => {
                    let Some((w, later)) = overtaken(value, &acked).filter(|_| ordered) else {
                        continue;
                    };
                    let detail = format!(
                        "{holds} {value:?} of op {w}, but op(s) {} were invoked after op {w} \
                         was acknowledged and were acknowledged too: with strict write quorums \
                         that meet (2 * {} > {}) the later write is stamped above it and wins.",
                        join(&later),
                        b.w,
                        b.n
                    );
                    found.flag(
                        bucket,
                        key,
                        std::iter::once(w).chain(later).collect(),
                        detail,
                    );
                }
                _ => {
                    let detail = format!(
                        "{holds} {} values ({values:?}): last-writer-wins keeps one.",
                        values.len()
                    );
                    found.flag(bucket, key, vec![], detail);
                }
            }
        }
    }
    found.list
}

/// Checks, when the cluster healed, that all the replicas of each key
/// hold the same state (values and members compared as sets).
///
/// Once faults end and the cluster has been given time to converge (the
/// history's `healed`), hinted handoff, read repair and anti-entropy have
/// brought every replica every version, and every policy's merge is a
/// join, so the replicas must agree. The violation names the writes whose
/// values some replicas hold and others lack.
pub fn convergence(h: &History) -> Vec<Violation> {
    let mut found = Found::new("convergence");
    if !h.healed {
        return found.list;
    }
    let by_key = ops_by_key(h);
    for ((bucket, key), replicas) in &h.final_state {
        let states: Vec<Observed> = replicas.iter().map(|(_, seen)| normalized(seen)).collect();
        if states.windows(2).all(|pair| pair[0] == pair[1]) {
            continue;
        }
        let ops = by_key.get(&(bucket.as_str(), key.as_str()));
        let writers = Writers::of(ops.map_or(&[][..], Vec::as_slice));
        let held_by_all = |value: &String| {
            states
                .iter()
                .all(|s| listed(s).is_some_and(|(values, _)| values.contains(value)))
        };
        let partial: BTreeSet<usize> = states
            .iter()
            .filter_map(listed)
            .flat_map(|(values, member)| values.iter().map(move |v| (v, member)))
            .filter(|(value, _)| !held_by_all(value))
            .filter_map(|(value, member)| writers.get(member, value).map(|w| w.id))
            .collect();
        let held: Vec<String> = replicas
            .iter()
            .map(|(node, seen)| format!("{node} {seen:?}"))
            .collect();
        let detail = format!(
            "after the cluster healed, its replicas disagree: {}. Once faults end, handoff, \
             repair and anti-entropy bring every replica every version and merges are joins, \
             so they must hold the same state.",
            held.join("; ")
        );
        found.flag(bucket, key, partial.into_iter().collect(), detail);
    }
    found.list
}

/// The violations one checker found.
/// After healing, every running node holds the same ring state, with no
/// change in progress: joins and leaves finish once faults end, and ring
/// gossip makes every node agree (`docs/rebalancing.md`). A join whose
/// transfers never end, or nodes that keep different rings, fail here.
pub fn ring_settles(h: &History) -> Vec<Violation> {
    let mut found = Found::new("ring_settles");
    if !h.healed || h.rings.is_empty() {
        return found.list;
    }
    let digests: BTreeSet<u64> = h.rings.values().map(|(d, _)| *d).collect();
    let pending: Vec<NodeId> = h
        .rings
        .iter()
        .filter(|(_, (_, p))| *p)
        .map(|(n, _)| *n)
        .collect();
    if digests.len() > 1 || !pending.is_empty() {
        let held: Vec<String> = h
            .rings
            .iter()
            .map(|(n, (d, p))| format!("{n} {d:016x}{}", if *p { " pending" } else { "" }))
            .collect();
        found.flag(
            "",
            "",
            Vec::new(),
            format!(
                "after the cluster healed, the running nodes hold {} ring state(s) and {} \
                 still have a change in progress: {}. Ring gossip must make them agree and \
                 every change must finish once faults end.",
                digests.len(),
                pending.len(),
                held.join(", ")
            ),
        );
    }
    found.list
}

struct Found {
    checker: &'static str,
    list: Vec<Violation>,
}

impl Found {
    fn new(checker: &'static str) -> Self {
        Found {
            checker,
            list: Vec::new(),
        }
    }

    fn flag(&mut self, bucket: &str, key: &str, ops: Vec<usize>, detail: String) {
        self.list.push(Violation {
            checker: self.checker,
            bucket: bucket.to_string(),
            key: key.to_string(),
            ops,
            detail,
        });
    }
}

/// The operations of each (bucket, key), in history order.
fn ops_by_key(h: &History) -> BTreeMap<(&str, &str), Vec<&OpRecord>> {
    let mut by_key: BTreeMap<(&str, &str), Vec<&OpRecord>> = BTreeMap::new();
    for op in &h.ops {
        by_key.entry(op.op.target()).or_default().push(op);
    }
    by_key
}

/// The replicas' final states of a key, if the cluster healed (none
/// otherwise: an unhealed final state need not be complete).
fn final_replicas<'h>(h: &'h History, bucket: &str, key: &str) -> &'h [(NodeId, Observed)] {
    let target = (bucket.to_string(), key.to_string());
    match h.final_state.get(&target) {
        Some(replicas) if h.healed => replicas,
        _ => &[],
    }
}

/// The acknowledged writes of `ops`.
fn acked_writes<'h>(ops: &[&'h OpRecord]) -> Vec<&'h OpRecord> {
    ops.iter().copied().filter(|op| op.acked_write()).collect()
}

/// The operations of `ops` that completed before `read` was invoked.
/// The writes of `ops` acknowledged before `read` was invoked, leaving
/// out those a power loss may have taken off a replica meanwhile
/// ([`History::exposed_to_power_loss`]): the store does not promise that
/// a quorum read sees those until they are repaired.
fn preceding<'h>(h: &History, ops: &[&'h OpRecord], read: &OpRecord) -> Vec<&'h OpRecord> {
    ops.iter()
        .copied()
        .filter(|op| op.precedes(read) && !h.exposed_to_power_loss(op, read))
        .collect()
}

/// The writes of one key, by the value (`Put`) or member (`SetAdd`) each
/// wrote; the first, if a value was written twice.
struct Writers<'h> {
    values: HashMap<&'h str, &'h OpRecord>,
    members: HashMap<&'h str, &'h OpRecord>,
}

impl<'h> Writers<'h> {
    fn of(ops: &[&'h OpRecord]) -> Self {
        let mut writers = Writers {
            values: HashMap::new(),
            members: HashMap::new(),
        };
        for op in ops {
            if let Some((value, member)) = written_value(op) {
                let map = if member {
                    &mut writers.members
                } else {
                    &mut writers.values
                };
                map.entry(value).or_insert(op);
            }
        }
        writers
    }

    /// The write of `value`, a member if `member`.
    fn get(&self, member: bool, value: &str) -> Option<&'h OpRecord> {
        let map = if member { &self.members } else { &self.values };
        map.get(value).copied()
    }
}

/// The value a write wrote, and whether it is a set member.
fn written_value(op: &OpRecord) -> Option<(&str, bool)> {
    match &op.op {
        SimOp::Put { value, .. } => Some((value, false)),
        SimOp::SetAdd { member, .. } => Some((member, true)),
        _ => None,
    }
}

/// The values or members an observation lists, and whether members.
fn listed(seen: &Observed) -> Option<(&[String], bool)> {
    match seen {
        Observed::Values(values) => Some((values, false)),
        Observed::Members(members) => Some((members, true)),
        Observed::Written | Observed::Counter(_) => None,
    }
}

/// The observation with its values or members sorted, for comparison.
fn normalized(seen: &Observed) -> Observed {
    let sorted = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort();
        list
    };
    match seen {
        Observed::Values(values) => Observed::Values(sorted(values)),
        Observed::Members(members) => Observed::Members(sorted(members)),
        other => other.clone(),
    }
}

/// The writes of `writes` whose value (member, if `member`) is not in
/// `held`.
fn missing_from<'h>(writes: &[&'h OpRecord], held: &[String], member: bool) -> Vec<&'h OpRecord> {
    let is_missing = |w: &&OpRecord| {
        written_value(w).is_some_and(|(v, m)| m == member && !held.iter().any(|h| h == v))
    };
    writes.iter().copied().filter(is_missing).collect()
}

fn op_suits(op: &SimOp, kind: BucketKind) -> bool {
    match op {
        SimOp::Put { .. } | SimOp::Get { .. } => {
            matches!(kind, BucketKind::Siblings | BucketKind::Lww)
        }
        SimOp::CounterAdd { .. } | SimOp::CounterReset { .. } | SimOp::CounterGet { .. } => {
            kind == BucketKind::Counter
        }
        SimOp::SetAdd { .. } | SimOp::SetMembers { .. } => kind == BucketKind::Set,
    }
}

fn observation_suits(op: &SimOp, seen: &Observed) -> bool {
    match op {
        SimOp::Put { .. }
        | SimOp::CounterAdd { .. }
        | SimOp::CounterReset { .. }
        | SimOp::SetAdd { .. } => *seen == Observed::Written,
        SimOp::Get { .. } => matches!(seen, Observed::Values(_)),
        SimOp::CounterGet { .. } => matches!(seen, Observed::Counter(_)),
        SimOp::SetMembers { .. } => matches!(seen, Observed::Members(_)),
    }
}

fn final_suits(kind: BucketKind, seen: &Observed) -> bool {
    match kind {
        BucketKind::Siblings | BucketKind::Lww => matches!(seen, Observed::Values(_)),
        BucketKind::Counter => matches!(seen, Observed::Counter(_)),
        BucketKind::Set => matches!(seen, Observed::Members(_)),
    }
}

fn op_name(op: &SimOp) -> &'static str {
    match op {
        SimOp::Put { .. } => "Put",
        SimOp::Get { .. } => "Get",
        SimOp::CounterAdd { .. } => "CounterAdd",
        SimOp::CounterReset { .. } => "CounterReset",
        SimOp::CounterGet { .. } => "CounterGet",
        SimOp::SetAdd { .. } => "SetAdd",
        SimOp::SetMembers { .. } => "SetMembers",
    }
}

/// The bounds of a counter's value, from the adds that surely are and
/// those that may be included in it.
struct Bounds<'h> {
    /// The sum of the adds surely included.
    sure: i128,
    /// The sum of the negative adds that may be included.
    minus: i128,
    /// The sum of the positive adds that may be included.
    plus: i128,
    sure_ops: Vec<&'h OpRecord>,
    minus_ops: Vec<&'h OpRecord>,
    plus_ops: Vec<&'h OpRecord>,
}

impl<'h> Bounds<'h> {
    /// From each add that may be included: its amount, and whether it
    /// surely is.
    fn of(adds: impl Iterator<Item = (&'h OpRecord, i64, bool)>) -> Self {
        let mut b = Bounds {
            sure: 0,
            minus: 0,
            plus: 0,
            sure_ops: Vec::new(),
            minus_ops: Vec::new(),
            plus_ops: Vec::new(),
        };
        for (add, by, sure) in adds {
            let (sum, ops) = if sure {
                (&mut b.sure, &mut b.sure_ops)
            } else if by < 0 {
                (&mut b.minus, &mut b.minus_ops)
            } else {
                (&mut b.plus, &mut b.plus_ops)
            };
            *sum += i128::from(by);
            ops.push(add);
        }
        b
    }

    /// If `value` is out of bounds: the adds that make the bound it
    /// breaks, and why it is out.
    fn judge(&self, value: i64) -> Option<(Vec<usize>, String)> {
        let (low, high) = (self.sure + self.minus, self.sure + self.plus);
        let value = i128::from(value);
        let (ops, side) = if value < low {
            (self.sure_ops.iter().chain(&self.minus_ops), "below")
        } else if value > high {
            (self.sure_ops.iter().chain(&self.plus_ops), "above")
        } else {
            return None;
        };
        let why = format!(
            "{side} the bounds [{low}, {high}]: the adds surely included sum to {}, those \
             possibly included add between {} and {}",
            self.sure, self.minus, self.plus
        );
        Some((ops.map(|op| op.id).collect(), why))
    }
}

fn ids(ops: &[&OpRecord]) -> Vec<usize> {
    ops.iter().map(|op| op.id).collect()
}

fn prepend(first: usize, ops: &[&OpRecord]) -> Vec<usize> {
    std::iter::once(first)
        .chain(ops.iter().map(|op| op.id))
        .collect()
}

fn join(ids: &[usize]) -> String {
    let ids: Vec<String> = ids.iter().map(usize::to_string).collect();
    ids.join(", ")
}

/// The values of `ops`, each with its op: `"c1-3" of op 7, ...`.
fn quoted_values(ops: &[&OpRecord]) -> String {
    let values: Vec<String> = ops
        .iter()
        .filter_map(|op| written_value(op).map(|(v, _)| format!("{v:?} of op {}", op.id)))
        .collect();
    values.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sim::history::SimBucket;

    /// Siblings, n 3, r 2, w 2: quorums intersect.
    const SIB: &str = "sib";
    /// Siblings, n 3, r 1, w 1: they do not.
    const SIB1: &str = "sib1";
    /// Siblings, n 3, r 2, w 2, sloppy: they do not.
    const SLOPPY: &str = "sloppy";
    const LWW: &str = "lww";
    const LWW1: &str = "lww1";
    const CTR: &str = "ctr";
    const CTR1: &str = "ctr1";
    const SET: &str = "set";
    const SET1: &str = "set1";

    /// Builds histories by hand: operations must be added in invocation
    /// order; times are milliseconds.
    struct Hb {
        h: History,
    }

    impl Hb {
        fn new() -> Self {
            let mut h = History {
                healed: true,
                ..History::default()
            };
            let buckets = [
                (SIB, BucketKind::Siblings, 2, 2, false),
                (SIB1, BucketKind::Siblings, 1, 1, false),
                (SLOPPY, BucketKind::Siblings, 2, 2, true),
                (LWW, BucketKind::Lww, 2, 2, false),
                (LWW1, BucketKind::Lww, 1, 1, false),
                (CTR, BucketKind::Counter, 2, 2, false),
                (CTR1, BucketKind::Counter, 1, 1, false),
                (SET, BucketKind::Set, 2, 2, false),
                (SET1, BucketKind::Set, 1, 1, false),
            ];
            for (name, kind, r, w, sloppy) in buckets {
                h.buckets.insert(
                    name.to_string(),
                    SimBucket {
                        name: name.to_string(),
                        kind,
                        n: 3,
                        r,
                        w,
                        sloppy,
                    },
                );
            }
            Hb { h }
        }

        fn unhealed(mut self) -> Self {
            self.h.healed = false;
            self
        }

        /// Adds an operation; an `Unknown` one gets no completion time.
        fn op(&mut self, op: SimOp, invoked: u64, done: u64, outcome: Outcome) -> usize {
            let id = self.h.ops.len();
            let completed = (outcome != Outcome::Unknown).then(|| Duration::from_millis(done));
            self.h.ops.push(OpRecord {
                id,
                client: id as u32,
                node: NodeId(1 + id as u64 % 3),
                op,
                invoked: Duration::from_millis(invoked),
                completed,
                outcome,
            });
            id
        }

        fn put(&mut self, b: &str, k: &str, v: &str, inv: u64, done: u64, out: Outcome) -> usize {
            let op = SimOp::Put {
                bucket: b.into(),
                key: k.into(),
                value: v.into(),
            };
            self.op(op, inv, done, out)
        }

        fn get(&mut self, b: &str, k: &str, inv: u64, done: u64, seen: &[&str]) -> usize {
            let op = SimOp::Get {
                bucket: b.into(),
                key: k.into(),
            };
            self.op(op, inv, done, Outcome::Ok(vals(seen)))
        }

        fn add(&mut self, b: &str, k: &str, by: i64, inv: u64, done: u64, out: Outcome) -> usize {
            let op = SimOp::CounterAdd {
                bucket: b.into(),
                key: k.into(),
                by,
            };
            self.op(op, inv, done, out)
        }

        fn reset(&mut self, b: &str, k: &str, inv: u64, done: u64, out: Outcome) -> usize {
            let op = SimOp::CounterReset {
                bucket: b.into(),
                key: k.into(),
            };
            self.op(op, inv, done, out)
        }

        fn cget(&mut self, b: &str, k: &str, inv: u64, done: u64, value: i64) -> usize {
            let op = SimOp::CounterGet {
                bucket: b.into(),
                key: k.into(),
            };
            self.op(op, inv, done, Outcome::Ok(Observed::Counter(value)))
        }

        fn sadd(&mut self, b: &str, k: &str, m: &str, inv: u64, done: u64, out: Outcome) -> usize {
            let op = SimOp::SetAdd {
                bucket: b.into(),
                key: k.into(),
                member: m.into(),
            };
            self.op(op, inv, done, out)
        }

        fn members(&mut self, b: &str, k: &str, inv: u64, done: u64, seen: &[&str]) -> usize {
            let op = SimOp::SetMembers {
                bucket: b.into(),
                key: k.into(),
            };
            self.op(op, inv, done, Outcome::Ok(mems(seen)))
        }

        /// The final state of a key: replica i is node i + 1.
        fn fin(&mut self, b: &str, k: &str, states: Vec<Observed>) {
            let replicas = states
                .into_iter()
                .enumerate()
                .map(|(i, seen)| (NodeId(i as u64 + 1), seen))
                .collect();
            self.h.final_state.insert((b.into(), k.into()), replicas);
        }

        /// The same final state on all three replicas.
        fn fin3(&mut self, b: &str, k: &str, seen: Observed) {
            self.fin(b, k, vec![seen.clone(), seen.clone(), seen]);
        }
    }

    fn ok() -> Outcome {
        Outcome::Ok(Observed::Written)
    }

    fn definite() -> Outcome {
        Outcome::Failed {
            definite: true,
            error: "refused".into(),
        }
    }

    fn indefinite() -> Outcome {
        Outcome::Failed {
            definite: false,
            error: "timeout".into(),
        }
    }

    fn vals(values: &[&str]) -> Observed {
        let mut values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        values.sort();
        Observed::Values(values)
    }

    fn mems(members: &[&str]) -> Observed {
        let mut members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        members.sort();
        Observed::Members(members)
    }

    fn ctr(value: i64) -> Observed {
        Observed::Counter(value)
    }

    #[track_caller]
    fn assert_clean(h: &History, found: &[Violation]) {
        assert!(found.is_empty(), "{}", report(h, found));
    }

    /// The sets of op ids of the violations, in order.
    fn op_sets(found: &[Violation]) -> Vec<Vec<usize>> {
        found.iter().map(|v| v.ops.clone()).collect()
    }

    #[test]
    fn phantoms_legal_reads_see_concurrent_indefinite_and_unanswered_writes() {
        let mut b = Hb::new();
        b.put(SIB, "k", "a", 0, 10, ok());
        b.put(SIB, "k", "b", 20, 30, indefinite());
        b.get(SIB, "k", 25, 30, &["a", "b"]);
        // Invoked at the very instant the read completes: it may be seen.
        b.get(SIB, "k", 35, 40, &["a", "c"]);
        b.put(SIB, "k", "c", 40, 0, Outcome::Unknown);
        b.get(SIB, "k", 45, 50, &["a"]);
        b.fin3(SIB, "k", vals(&["a", "b", "c"]));
        b.sadd(SET, "s", "x", 60, 70, indefinite());
        b.members(SET, "s", 65, 75, &["x"]);
        b.fin3(SET, "s", mems(&["x"]));
        assert_clean(&b.h, &no_phantoms(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn phantoms_flagged() {
        let mut b = Hb::new().unhealed();
        let refused = b.put(SIB, "k", "a", 0, 10, definite());
        b.put(SIB, "other", "o", 10, 20, ok());
        let invented = b.get(SIB, "k", 30, 40, &["zz"]);
        let leaked = b.get(SIB, "k", 40, 50, &["a"]);
        let crossed = b.get(SIB, "k", 50, 60, &["o"]);
        let early = b.get(SIB, "k", 60, 70, &["later"]);
        let later = b.put(SIB, "k", "later", 71, 80, ok());
        b.fin(
            SIB,
            "k",
            vec![vals(&["later"]), vals(&["a", "later"]), vals(&["later"])],
        );
        b.fin(SET, "s", vec![mems(&["m"]), mems(&[]), mems(&[])]);
        let found = no_phantoms(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![
                vec![invented],
                vec![leaked, refused],
                vec![crossed],
                vec![early, later],
                vec![],
                vec![refused],
            ],
            "{}",
            report(&b.h, &found)
        );
        assert!(found.iter().all(|v| v.checker == "no_phantoms"));
        assert_eq!(
            (found[4].bucket.as_str(), found[4].key.as_str()),
            (SET, "s")
        );
    }

    #[test]
    fn set_full_legal_concurrent_and_indefinite_puts() {
        let mut b = Hb::new();
        b.put(SIB, "k", "a", 0, 20, ok());
        b.put(SIB, "k", "b", 5, 15, ok());
        b.put(SIB, "k", "c", 30, 40, indefinite());
        b.put(SIB, "k", "d", 50, 0, Outcome::Unknown);
        b.fin3(SIB, "k", vals(&["a", "b"]));
        b.put(SIB, "j", "e", 60, 70, indefinite());
        b.fin3(SIB, "j", vals(&["e"]));
        assert_clean(&b.h, &set_full(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn set_full_ignores_the_final_state_of_an_unhealed_cluster() {
        let mut b = Hb::new().unhealed();
        b.put(SIB, "k", "a", 0, 10, ok());
        b.fin(SIB, "k", vec![vals(&["a"]), vals(&[])]);
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn set_full_flags_a_lost_acknowledged_put() {
        let mut b = Hb::new();
        let a = b.put(SIB, "k", "a", 0, 10, ok());
        let c = b.put(SIB, "k", "c", 5, 15, ok());
        b.fin(SIB, "k", vec![vals(&["a", "c"]), vals(&["c"]), vals(&[])]);
        let found = set_full(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![a], vec![a, c]],
            "{}",
            report(&b.h, &found)
        );
        assert!(found[0].detail.contains("replica n2"));
        assert!(found[1].detail.contains("replica n3"));
        // The replicas disagree, too.
        assert_eq!(convergence(&b.h).len(), 1);
    }

    #[test]
    fn read_your_writes_legal_concurrent_reads_and_weak_quorums() {
        let mut b = Hb::new();
        b.put(SIB, "k", "a", 0, 10, ok());
        b.get(SIB, "k", 5, 15, &[]);
        // Invoked at the instant the put completed: not after it.
        b.get(SIB, "k", 10, 20, &[]);
        b.get(SIB, "k", 11, 20, &["a"]);
        b.put(SIB, "k", "b", 30, 40, indefinite());
        b.get(SIB, "k", 50, 60, &["a"]);
        b.get(SIB, "k", 61, 70, &["a", "b"]);
        b.fin3(SIB, "k", vals(&["a", "b"]));
        for (weak, t) in [(SIB1, 100), (SLOPPY, 200)] {
            b.put(weak, "k", &format!("{weak}-a"), t, t + 10, ok());
            b.get(weak, "k", t + 20, t + 30, &[]);
            b.fin3(weak, "k", vals(&[&format!("{weak}-a")]));
        }
        assert_clean(&b.h, &read_your_writes(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn a_write_a_power_loss_may_have_unsynced_is_not_promised_to_reads() {
        // Times are milliseconds; storage syncs every 100 ms.
        let stale_read = |power_loss_at: Option<u64>| {
            let mut b = Hb::new();
            b.h.sync_interval = Some(Duration::from_millis(100));
            if let Some(at) = power_loss_at {
                b.h.power_losses
                    .push((Duration::from_millis(at), NodeId(1)));
            }
            let a = b.put(SIB, "k", "a", 0, 10, ok());
            let c = b.put(SIB, "k", "c", 200, 210, ok());
            let read = b.get(SIB, "k", 400, 410, &["a"]);
            b.fin3(SIB, "k", vals(&["a", "c"]));
            let _ = a;
            (read_your_writes(&b.h), read, c)
        };
        // No power loss: the read must see "c".
        let (found, read, c) = stale_read(None);
        assert_eq!(op_sets(&found), vec![vec![read, c]]);
        // A power loss 50 ms after "c" was acknowledged, before the read:
        // "c" may be on one replica only until repaired.
        let (found, _, _) = stale_read(Some(260));
        assert!(found.is_empty(), "{found:?}");
        // One more than a sync interval after: "c" was synced everywhere.
        let (found, read, c) = stale_read(Some(311));
        assert_eq!(op_sets(&found), vec![vec![read, c]]);
        // One after the read was invoked: the read is still held to it.
        let (found, read, c) = stale_read(Some(405));
        assert_eq!(op_sets(&found), vec![vec![read, c]]);
    }

    #[test]
    fn read_your_writes_flags_a_stale_read() {
        let mut b = Hb::new();
        let a = b.put(SIB, "k", "a", 0, 10, ok());
        let c = b.put(SIB, "k", "c", 12, 20, ok());
        b.get(SIB, "k", 15, 25, &["a"]);
        let stale = b.get(SIB, "k", 30, 40, &["a"]);
        let empty = b.get(SIB, "k", 50, 60, &[]);
        b.fin3(SIB, "k", vals(&["a", "c"]));
        let found = read_your_writes(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![stale, c], vec![empty, a, c]],
            "{}",
            report(&b.h, &found)
        );
        assert_eq!(check_all(&b.h), found);
    }

    #[test]
    fn counters_legal_reads_and_final_values() {
        let mut b = Hb::new();
        b.add(CTR, "c", 5, 0, 10, ok());
        b.add(CTR, "c", -2, 20, 30, indefinite());
        b.cget(CTR, "c", 25, 35, 3); // saw the indefinite -2
        b.cget(CTR, "c", 40, 45, 5); // did not
        b.add(CTR, "c", 4, 50, 70, ok());
        b.cget(CTR, "c", 55, 60, 9); // saw the concurrent +4, not the -2
        b.cget(CTR, "c", 56, 61, 3); // saw the -2, not the +4
        b.add(CTR, "c", 100, 80, 90, definite());
        b.cget(CTR, "c", 100, 110, 7);
        b.fin3(CTR, "c", ctr(7));
        // Without intersecting quorums a read may miss acknowledged adds.
        b.add(CTR1, "c", 5, 200, 210, ok());
        b.add(CTR1, "c", -1, 220, 230, ok());
        b.cget(CTR1, "c", 240, 250, -1);
        b.cget(CTR1, "c", 251, 260, 0);
        b.fin3(CTR1, "c", ctr(4));
        // An unanswered add may be in the final value, or not.
        b.add(CTR, "u", 3, 300, 0, Outcome::Unknown);
        b.fin3(CTR, "u", ctr(3));
        b.cget(CTR, "z", 400, 410, 0);
        b.fin3(CTR, "z", ctr(0));
        assert_clean(&b.h, &counters(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    /// After a clean reset only later adds count; a reset with an add
    /// around it (concurrent, or indefinite before it), or with quorums
    /// that do not meet, leaves every add possible and none sure.
    #[test]
    fn counters_after_resets() {
        let mut b = Hb::new();
        b.add(CTR, "c", 5, 0, 10, ok());
        let reset = b.reset(CTR, "c", 20, 30, ok());
        b.cget(CTR, "c", 40, 50, 0);
        let two = b.add(CTR, "c", 2, 60, 70, ok());
        b.cget(CTR, "c", 80, 90, 2);
        // The deleted count back: the bug before the update's read.
        let back = b.cget(CTR, "c", 95, 99, 7);
        b.fin(CTR, "c", vec![ctr(2), ctr(7), ctr(2)]);
        // Concurrent with its reset, an add may bring the old count back.
        b.add(CTR, "d", 5, 0, 10, ok());
        b.add(CTR, "d", 1, 15, 35, ok());
        b.reset(CTR, "d", 20, 30, ok());
        b.cget(CTR, "d", 40, 50, 6);
        b.fin3(CTR, "d", ctr(6));
        // So may an indefinite add before it.
        b.add(CTR, "e", 5, 0, 10, indefinite());
        b.reset(CTR, "e", 20, 30, ok());
        b.cget(CTR, "e", 40, 50, 5);
        b.fin3(CTR, "e", ctr(5));
        // An indefinite reset may not have been applied...
        b.add(CTR, "f", 5, 0, 10, ok());
        b.reset(CTR, "f", 20, 30, indefinite());
        b.cget(CTR, "f", 40, 50, 5);
        // ...and a definitely failed one was not.
        b.add(CTR, "g", 5, 0, 10, ok());
        b.reset(CTR, "g", 20, 30, definite());
        let kept = b.cget(CTR, "g", 40, 50, 0);
        // Quorums that do not meet promise nothing either.
        b.add(CTR1, "h", 5, 0, 10, ok());
        b.reset(CTR1, "h", 20, 30, ok());
        b.cget(CTR1, "h", 40, 50, 5);
        let found = counters(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![
                vec![back, reset, two],
                vec![reset, two],
                vec![kept, kept - 2]
            ],
            "{}",
            report(&b.h, &found)
        );
        assert!(found[0]
            .detail
            .contains("counting only adds invoked after reset op"));
        assert!(
            found[1].detail.contains("replica n2 holds 7"),
            "{}",
            found[1].detail
        );
    }

    #[test]
    fn counters_flag_values_out_of_bounds() {
        let mut b = Hb::new();
        let five = b.add(CTR, "c", 5, 0, 10, ok());
        let missed = b.cget(CTR, "c", 20, 30, 0);
        b.add(CTR, "c", 3, 40, 50, definite());
        let leaked = b.cget(CTR, "c", 60, 70, 8);
        let future = b.cget(CTR, "c", 80, 90, 15);
        let ten = b.add(CTR, "c", 10, 100, 110, ok());
        let maybe = b.add(CTR, "c", -4, 120, 130, indefinite());
        b.fin(CTR, "c", vec![ctr(15), ctr(11), ctr(10)]);
        b.add(CTR1, "c", 2, 200, 210, ok());
        let loose = b.cget(CTR1, "c", 205, 215, 3);
        b.fin3(CTR1, "c", ctr(2));
        let found = counters(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![
                vec![missed, five],
                vec![leaked, five],
                vec![future, five],
                vec![five, ten, maybe],
                vec![loose, loose - 1],
            ],
            "{}",
            report(&b.h, &found)
        );
        assert!(
            found[0].detail.contains("below the bounds [5, 5]"),
            "{}",
            found[0]
        );
        assert!(
            found[3]
                .detail
                .contains("replica n3 holds 10, below the bounds [11, 15]"),
            "{}",
            found[3]
        );
        assert!(
            found[4].detail.contains("above the bounds [0, 2]"),
            "{}",
            found[4]
        );
    }

    #[test]
    fn or_set_legal_concurrent_and_indefinite_adds() {
        let mut b = Hb::new();
        b.sadd(SET, "s", "x", 0, 10, ok());
        b.members(SET, "s", 5, 15, &[]);
        b.sadd(SET, "s", "y", 20, 30, indefinite());
        b.members(SET, "s", 25, 35, &["x", "y"]);
        b.members(SET, "s", 40, 50, &["x"]);
        b.fin3(SET, "s", mems(&["x"]));
        b.sadd(SET1, "s", "z", 60, 70, ok());
        b.members(SET1, "s", 80, 90, &[]);
        b.fin3(SET1, "s", mems(&["z"]));
        assert_clean(&b.h, &or_set(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn or_set_flags_lost_adds() {
        let mut b = Hb::new();
        let x = b.sadd(SET, "s", "x", 0, 10, ok());
        let y = b.sadd(SET, "s", "y", 5, 15, ok());
        let stale = b.members(SET, "s", 20, 30, &["y"]);
        b.fin(
            SET,
            "s",
            vec![mems(&["x", "y"]), mems(&["x"]), mems(&["x", "y"])],
        );
        let found = or_set(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![stale, x], vec![y]],
            "{}",
            report(&b.h, &found)
        );
    }

    #[test]
    fn lww_legal_histories() {
        let mut b = Hb::new();
        // Concurrent writes: either may win.
        b.put(LWW, "k1", "a1", 0, 20, ok());
        b.put(LWW, "k1", "b1", 5, 15, ok());
        b.get(LWW, "k1", 30, 40, &["a1"]);
        b.fin3(LWW, "k1", vals(&["a1"]));
        b.put(LWW, "k2", "a2", 40, 60, ok());
        b.put(LWW, "k2", "b2", 45, 55, ok());
        b.fin3(LWW, "k2", vals(&["b2"]));
        // An indefinite write may win over a later acknowledged one: it
        // may sit only on a replica the later write did not reach.
        b.put(LWW, "k3", "x3", 50, 60, indefinite());
        b.put(LWW, "k3", "y3", 70, 80, ok());
        b.get(LWW, "k3", 90, 100, &["x3"]);
        b.fin3(LWW, "k3", vals(&["x3"]));
        // A read concurrent with a write returns the old value or the new.
        b.put(LWW, "k4", "a4", 100, 110, ok());
        b.put(LWW, "k4", "b4", 120, 140, ok());
        b.get(LWW, "k4", 125, 135, &["a4"]);
        b.get(LWW, "k4", 126, 136, &["b4"]);
        b.get(LWW, "k4", 150, 160, &["b4"]);
        b.fin3(LWW, "k4", vals(&["b4"]));
        // Write quorums that need not meet promise no order: w = 1.
        b.put(LWW1, "k", "a", 200, 210, ok());
        b.put(LWW1, "k", "b", 220, 230, ok());
        b.get(LWW1, "k", 240, 250, &[]);
        b.get(LWW1, "k", 251, 260, &["a"]);
        b.fin3(LWW1, "k", vals(&["a"]));
        // Only failed or unanswered writes: the key may stay empty.
        b.put(LWW, "k5", "a5", 300, 310, indefinite());
        b.put(LWW, "k5", "b5", 320, 0, Outcome::Unknown);
        b.get(LWW, "k5", 330, 340, &[]);
        b.fin3(LWW, "k5", vals(&[]));
        assert_clean(&b.h, &lww_order(&b.h));
        assert_clean(&b.h, &check_all(&b.h));
    }

    #[test]
    fn lww_flags_an_older_write_winning() {
        let mut b = Hb::new();
        let a = b.put(LWW, "k", "a", 0, 10, ok());
        let c = b.put(LWW, "k", "c", 20, 30, ok());
        b.fin(LWW, "k", vec![vals(&["c"]), vals(&["a"]), vals(&["c"])]);
        let found = lww_order(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![a, c]],
            "{}",
            report(&b.h, &found)
        );
        assert!(found[0].detail.contains("replica n2"));
    }

    #[test]
    fn lww_flags_lost_writes_and_many_values() {
        let mut b = Hb::new();
        let a = b.put(LWW, "k", "a", 0, 10, ok());
        let both = b.put(LWW, "k", "b", 5, 15, ok());
        let two = b.get(LWW1, "j", 20, 30, &["a", "b"]);
        b.fin(LWW, "k", vec![vals(&[]), vals(&["a", "b"]), vals(&["b"])]);
        b.fin3(LWW1, "j", vals(&[]));
        let found = lww_order(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![a, both], vec![], vec![two]],
            "{}",
            report(&b.h, &found)
        );
        assert!(
            found[0].detail.contains("replica n1 holds no value"),
            "{}",
            found[0]
        );
        assert!(
            found[1].detail.contains("replica n2 holds 2 values"),
            "{}",
            found[1]
        );
    }

    #[test]
    fn lww_flags_stale_reads() {
        let mut b = Hb::new();
        let a = b.put(LWW, "k", "a", 0, 10, ok());
        let c = b.put(LWW, "k", "c", 20, 30, ok());
        let stale = b.get(LWW, "k", 40, 50, &["a"]);
        b.get(LWW, "k", 41, 51, &["c"]);
        let d = b.put(LWW, "j", "d", 52, 55, ok());
        let empty = b.get(LWW, "j", 60, 70, &[]);
        b.fin3(LWW, "k", vals(&["c"]));
        b.fin3(LWW, "j", vals(&["d"]));
        let found = lww_order(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![empty, d], vec![stale, a, c]],
            "{}",
            report(&b.h, &found)
        );
        assert_eq!(check_all(&b.h), found);
    }

    #[test]
    fn convergence_compares_states_as_sets_and_only_when_healed() {
        let mut b = Hb::new();
        b.put(SIB, "k", "a", 0, 10, ok());
        b.put(SIB, "k", "b", 0, 10, ok());
        b.fin(
            SIB,
            "k",
            vec![
                Observed::Values(vec!["b".into(), "a".into()]),
                vals(&["a", "b"]),
                vals(&["a", "b"]),
            ],
        );
        assert_clean(&b.h, &convergence(&b.h));
        let mut b = Hb::new().unhealed();
        b.put(SIB, "k", "a", 0, 10, indefinite());
        b.fin(SIB, "k", vec![vals(&["a"]), vals(&[]), vals(&[])]);
        assert_clean(&b.h, &convergence(&b.h));
    }

    #[test]
    fn convergence_flags_diverging_replicas() {
        let mut b = Hb::new();
        b.put(SIB, "k", "a", 0, 10, indefinite());
        let c = b.put(SIB, "k", "c", 20, 30, indefinite());
        b.fin(
            SIB,
            "k",
            vec![vals(&["a"]), vals(&["a", "c"]), vals(&["a"])],
        );
        b.add(CTR, "n", 1, 40, 50, indefinite());
        b.fin(CTR, "n", vec![ctr(1), ctr(0), ctr(1)]);
        let found = convergence(&b.h);
        assert_eq!(
            op_sets(&found),
            vec![vec![], vec![c]],
            "{}",
            report(&b.h, &found)
        );
        assert_eq!(
            (found[0].bucket.as_str(), found[1].bucket.as_str()),
            (CTR, SIB)
        );
        // Nothing else is wrong: the writes were indefinite.
        assert_eq!(check_all(&b.h), found);
    }

    #[test]
    fn well_formed_flags_malformed_histories() {
        let mut b = Hb::new();
        let a = b.put(SIB, "k", "a", 10, 20, ok());
        let early = b.put(SIB, "k", "a", 5, 8, ok());
        let on_counter = b.put(CTR, "k", "x", 30, 40, ok());
        let unknown = b.add(CTR, "c", 1, 50, 60, Outcome::Unknown);
        b.h.ops[unknown].completed = Some(Duration::from_millis(60));
        let wrong = b.cget(CTR, "c", 70, 80, 0);
        b.h.ops[wrong].outcome = Outcome::Ok(mems(&[]));
        b.fin(SIB, "k", vec![vals(&["a"]), vals(&["a"])]);
        b.fin3(CTR, "c", vals(&[]));
        b.fin3("nobucket", "k", vals(&[]));
        let found = well_formed(&b.h);
        let expected = vec![
            vec![a, early],
            vec![a, early],
            vec![on_counter],
            vec![unknown],
            vec![wrong],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![on_counter],
        ];
        assert_eq!(op_sets(&found), expected, "{}", report(&b.h, &found));
        assert!(found[0].detail.contains("invocation order"), "{}", found[0]);
        assert!(found[1].detail.contains("two writes"), "{}", found[1]);
        assert!(found[10].detail.contains("no final state"), "{}", found[10]);
    }

    #[test]
    fn report_quotes_the_history_lines() {
        let mut b = Hb::new();
        b.h.seed = 42;
        b.h.events
            .push((Duration::from_millis(5), "partition {1} | {2, 3}".into()));
        let a = b.put(SIB, "k", "a", 0, 10, ok());
        let stale = b.get(SIB, "k", 20, 30, &[]);
        b.fin3(SIB, "k", vals(&["a"]));
        let found = check_all(&b.h);
        assert_eq!(found.len(), 1);
        let text = report(&b.h, &found);
        let full = b.h.to_text();
        assert!(text.starts_with("seed 42: 1 violation(s)\n"), "{text}");
        assert!(text.contains(&found[0].to_string()), "{text}");
        for line in full.lines().filter(|l| !l.starts_with("seed")) {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert!(text.contains(&History::op_line(&b.h.ops[a])));
        assert!(text.contains(&History::op_line(&b.h.ops[stale])));
        assert_eq!(report(&b.h, &[]), "seed 42: 0 violation(s)\n");
    }

    /// The state a sequential model of one key holds.
    #[derive(Clone, Debug)]
    enum Model {
        Values(BTreeSet<String>),
        Lww(Option<String>),
        Counter(i64),
        Members(BTreeSet<String>),
    }

    impl Model {
        fn new(kind: BucketKind) -> Self {
            match kind {
                BucketKind::Siblings => Model::Values(BTreeSet::new()),
                BucketKind::Lww => Model::Lww(None),
                BucketKind::Counter => Model::Counter(0),
                BucketKind::Set => Model::Members(BTreeSet::new()),
            }
        }

        fn observed(&self) -> Observed {
            match self {
                Model::Values(values) => Observed::Values(values.iter().cloned().collect()),
                Model::Lww(value) => Observed::Values(value.iter().cloned().collect()),
                Model::Counter(sum) => Observed::Counter(*sum),
                Model::Members(members) => Observed::Members(members.iter().cloned().collect()),
            }
        }
    }

    /// A legal history: operations one after another (each invoked no
    /// earlier than the previous completed) against a model of each key,
    /// each write applied at its invocation if it succeeded, never if it
    /// failed definitely, and at random if it failed indefinitely or was
    /// unanswered; each read returns the model's state. A healed final
    /// state is the model's on every replica; an unhealed one may miss
    /// values.
    fn legal_history(seed: u64) -> History {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut b = Hb::new();
        b.h.seed = seed;
        b.h.healed = rng.random_bool(0.8);
        let buckets: Vec<(String, BucketKind)> =
            b.h.buckets
                .values()
                .map(|b| (b.name.clone(), b.kind))
                .collect();
        let mut models: BTreeMap<(String, String), Model> = BTreeMap::new();
        let mut t = 0;
        for i in 0..rng.random_range(10..120) {
            let (bucket, kind) = buckets[rng.random_range(0..buckets.len())].clone();
            let key = format!("k{}", rng.random_range(0..3));
            let model = models
                .entry((bucket.clone(), key.clone()))
                .or_insert_with(|| Model::new(kind));
            let invoked = t + rng.random_range(0..4);
            let done = invoked + rng.random_range(0..10);
            t = done;
            if rng.random_bool(0.5) {
                let outcome = match rng.random_range(0..10) {
                    0 => definite(),
                    1 => indefinite(),
                    2 => Outcome::Unknown,
                    _ => ok(),
                };
                let applied = match outcome {
                    Outcome::Ok(_) => true,
                    Outcome::Failed { definite, .. } => !definite && rng.random_bool(0.5),
                    Outcome::Unknown => rng.random_bool(0.5),
                };
                let value = format!("c{i}-{seed}");
                let op = match model {
                    Model::Values(values) => {
                        if applied {
                            values.insert(value.clone());
                        }
                        SimOp::Put { bucket, key, value }
                    }
                    Model::Lww(current) => {
                        if applied {
                            *current = Some(value.clone());
                        }
                        SimOp::Put { bucket, key, value }
                    }
                    Model::Counter(sum) => {
                        let by = rng.random_range(-5..=5);
                        if applied {
                            *sum += by;
                        }
                        SimOp::CounterAdd { bucket, key, by }
                    }
                    Model::Members(members) => {
                        if applied {
                            members.insert(value.clone());
                        }
                        SimOp::SetAdd {
                            bucket,
                            key,
                            member: value,
                        }
                    }
                };
                b.op(op, invoked, done, outcome);
            } else {
                let op = match kind {
                    BucketKind::Siblings | BucketKind::Lww => SimOp::Get { bucket, key },
                    BucketKind::Counter => SimOp::CounterGet { bucket, key },
                    BucketKind::Set => SimOp::SetMembers { bucket, key },
                };
                b.op(op, invoked, done, Outcome::Ok(model.observed()));
            }
        }
        let healed = b.h.healed;
        for ((bucket, key), model) in &models {
            let states = (0..3)
                .map(|_| {
                    let mut seen = model.observed();
                    if !healed {
                        if let Observed::Values(values) | Observed::Members(values) = &mut seen {
                            values.retain(|_| rng.random_bool(0.7));
                        }
                    }
                    seen
                })
                .collect();
            b.fin(bucket, key, states);
        }
        b.h
    }

    #[test]
    fn random_legal_histories_pass_and_mutations_are_caught() {
        let (mut dropped, mut shifted, mut invented) = (0, 0, 0);
        for seed in 0..300 {
            let h = legal_history(seed);
            assert_clean(&h, &check_all(&h));
            if !h.healed {
                continue;
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            let flags = |h: &History, bucket: &str, key: &str| {
                check_all(h)
                    .iter()
                    .any(|v| v.bucket == bucket && v.key == key)
            };

            // Drop an acknowledged write's value from one final replica.
            let acked: Vec<(String, String, String)> = h
                .ops
                .iter()
                .filter(|op| op.acked_write())
                .filter_map(|op| {
                    let (bucket, key) = op.op.target();
                    written_value(op)
                        .map(|(v, _)| (bucket.to_string(), key.to_string(), v.to_string()))
                })
                .collect();
            if !acked.is_empty() {
                let (bucket, key, value) = &acked[rng.random_range(0..acked.len())];
                let mut m = h.clone();
                let replicas = m
                    .final_state
                    .get_mut(&(bucket.clone(), key.clone()))
                    .unwrap();
                let (_, seen) = &mut replicas[rng.random_range(0..3)];
                if let Observed::Values(values) | Observed::Members(values) = seen {
                    // Under LWW a later write may have replaced the value.
                    if values.contains(value) {
                        values.retain(|v| v != value);
                        assert!(
                            flags(&m, bucket, key),
                            "dropping {value:?} went unnoticed:\n{}",
                            m.to_text()
                        );
                        dropped += 1;
                    }
                }
            }

            // Move a final counter past what any subset of adds can make.
            if let Some(((bucket, key), _)) = h
                .final_state
                .iter()
                .find(|(_, r)| matches!(r[0].1, Observed::Counter(_)))
            {
                let mut m = h.clone();
                let replicas = m
                    .final_state
                    .get_mut(&(bucket.clone(), key.clone()))
                    .unwrap();
                let ends = replicas.len() - 1;
                if let Observed::Counter(value) = &mut replicas[rng.random_range(0..=ends)].1 {
                    *value += 10_000;
                }
                assert!(
                    flags(&m, bucket, key),
                    "a counter off by 10000 went unnoticed:\n{}",
                    m.to_text()
                );
                shifted += 1;
            }

            // Make a read return a value nobody wrote.
            let reads: Vec<usize> = h
                .ops
                .iter()
                .filter(|op| {
                    matches!(
                        op.outcome,
                        Outcome::Ok(Observed::Values(_) | Observed::Members(_))
                    )
                })
                .map(|op| op.id)
                .collect();
            if !reads.is_empty() {
                let mut m = h.clone();
                let read = &mut m.ops[reads[rng.random_range(0..reads.len())]];
                if let Outcome::Ok(Observed::Values(values) | Observed::Members(values)) =
                    &mut read.outcome
                {
                    values.push("nobody".into());
                }
                let (bucket, key) = read.op.target();
                let (bucket, key) = (bucket.to_string(), key.to_string());
                assert!(no_phantoms(&m)
                    .iter()
                    .any(|v| v.bucket == bucket && v.key == key));
                invented += 1;
            }
        }
        // The mutations were made often enough to mean something.
        assert!(
            dropped > 100 && shifted > 100 && invented > 100,
            "{dropped} {shifted} {invented}"
        );
    }

    #[test]
    fn ring_settles_flags_disagreeing_or_unfinished_rings_after_healing() {
        let mut h = History {
            healed: true,
            ..History::default()
        };
        assert!(
            ring_settles(&h).is_empty(),
            "no ring recorded: nothing to judge"
        );
        h.rings.insert(NodeId(1), (7, false));
        h.rings.insert(NodeId(2), (7, false));
        assert!(ring_settles(&h).is_empty());
        h.rings.insert(NodeId(3), (9, false));
        let found = ring_settles(&h);
        assert_eq!(found.len(), 1);
        assert!(found[0].detail.contains("2 ring state(s)"), "{}", found[0]);
        h.rings.insert(NodeId(3), (7, true));
        let found = ring_settles(&h);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].detail.contains("n3 0000000000000007 pending"),
            "{}",
            found[0]
        );
        // Not healed: a change may legally be in progress.
        h.healed = false;
        assert!(ring_settles(&h).is_empty());
    }
}
