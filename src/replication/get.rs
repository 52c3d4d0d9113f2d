//! The get coordinator: one machine per client read, with read repair.
//!
//! Every target is asked at once. After `r` successful replies the objects
//! are merged under the bucket's policy: that merge is the answer. With
//! [`Repair::BeforeAnswer`] the stale replicas among those that replied are
//! sent the merge first and the answer waits for their acks (or the
//! deadline). With [`Repair::Async`] (the default) the machine answers at
//! once and keeps collecting replies until every target has answered or the
//! deadline passes; then every stale replica is sent the final merge. A
//! replica is stale when its copy differs from the merge, which, the merge
//! being a join, means it lacks something.
//!
//! A replica whose stored copy is damaged answers
//! [`ReplicaReply::ReadCorrupt`]: it does not count towards `r` (like a
//! failed one), but it is repaired like a stale one, with the merge of the
//! others, which replaces the damaged copy. When the damaged replicas make
//! `r` unreachable, the client gets [`Error::Unavailable`] and the machine
//! still collects the other replies and repairs them (unless repair is
//! off), so that a retry finds the key whole.

use std::time::{Duration, Instant};

use super::{Outbox, Receipt, ReplicaReply, ReplicaRequest, Target};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::version::{ConflictPolicy, Object};

/// When read repair runs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Repair {
    /// After answering, once every replica replied or the deadline passed.
    #[default]
    Async,
    /// Before answering: the stale replicas among the first `r` are
    /// repaired and their acks awaited.
    BeforeAnswer,
    /// Never (a read that must not write, e.g. a diagnostic).
    Off,
}

/// Per-request settings of a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOptions {
    /// Replies needed before answering.
    pub r: usize,
    /// How long the whole request, read repair included, may take.
    pub timeout: Duration,
    /// When read repair runs.
    pub repair: Repair,
}

/// A successful get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetReply {
    /// The merge of the replies; `None` when no replica holds the key.
    pub object: Option<Object>,
    /// Who was asked, who answered, and (for `BeforeAnswer`) who was
    /// repaired.
    pub receipt: Receipt,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Asked,
    Replied(Option<Object>),
    Failed,
    /// Its copy is damaged: no answer, but repaired with the merge.
    Damaged,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for `r` replies.
    Reading,
    /// `BeforeAnswer`: repairs sent, waiting for their acks.
    Repairing,
    /// Answered; collecting the remaining replies for async repair.
    Answered,
    /// Nothing more to do.
    Finished,
}

/// One client read in flight. See the module docs.
#[derive(Debug)]
pub struct GetRequest {
    id: u64,
    bucket: Vec<u8>,
    key: Vec<u8>,
    policy: ConflictPolicy,
    targets: Vec<Target>,
    slots: Vec<Slot>,
    /// Repairs awaiting an ack (`BeforeAnswer`).
    pending_repairs: Vec<NodeId>,
    r: usize,
    timeout: Duration,
    deadline: Instant,
    repair: Repair,
    phase: Phase,
    merged: Option<Object>,
    receipt: Receipt,
    reply: Option<Result<GetReply>>,
}

impl GetRequest {
    /// Starts a get of `bucket`/`key` from `targets`, asking every one.
    /// Fails at once with [`Error::Unavailable`] when fewer than `r` exist.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        id: u64,
        bucket: Vec<u8>,
        key: Vec<u8>,
        policy: ConflictPolicy,
        targets: Vec<Target>,
        options: GetOptions,
        out: &mut Outbox,
    ) -> Self {
        let mut get = GetRequest {
            id,
            bucket,
            key,
            policy,
            slots: vec![Slot::Asked; targets.len()],
            targets,
            pending_repairs: Vec::new(),
            r: options.r,
            timeout: options.timeout,
            deadline: now + options.timeout,
            repair: options.repair,
            phase: Phase::Reading,
            merged: None,
            receipt: Receipt::default(),
            reply: None,
        };
        if get.r == 0 || get.targets.len() < get.r {
            get.reply = Some(Err(Error::Unavailable {
                needed: get.r.max(1),
                got: get.targets.len(),
                indefinite: false,
            }));
            get.phase = Phase::Finished;
            return get;
        }
        for target in &get.targets {
            get.receipt.ask(target.node);
            out.push((
                target.node,
                ReplicaRequest::Read {
                    req: get.id,
                    bucket: get.bucket.clone(),
                    key: get.key.clone(),
                },
            ));
        }
        get
    }

    /// The request id replies must carry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When [`GetRequest::tick`] must next be called.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the machine has nothing left to do (answered, and any async
    /// repair sent). It can then be dropped.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished && self.reply.is_none()
    }

    /// The answer for the client, once.
    pub fn take_reply(&mut self) -> Option<Result<GetReply>> {
        self.reply.take()
    }

    /// The receipt so far, including async repairs sent after answering.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// Feeds a replica's reply.
    pub fn step(&mut self, _now: Instant, from: NodeId, reply: ReplicaReply, out: &mut Outbox) {
        if reply.req() != self.id || self.phase == Phase::Finished {
            return;
        }
        let Some(i) = self.targets.iter().position(|t| t.node == from) else {
            return;
        };
        match reply {
            ReplicaReply::Read { result, .. } if self.slots[i] == Slot::Asked => {
                match result {
                    Ok(object) => {
                        self.receipt.answer(self.targets[i]);
                        self.slots[i] = Slot::Replied(object);
                    }
                    Err(_) => self.slots[i] = Slot::Failed,
                }
                self.advance(out);
            }
            ReplicaReply::ReadCorrupt { reason, .. } if self.slots[i] == Slot::Asked => {
                tracing::warn!(req = self.id, node = %from, %reason, "a replica's copy is damaged; reading from the others and repairing it");
                self.slots[i] = Slot::Damaged;
                self.advance(out);
            }
            ReplicaReply::Merged { .. } if self.phase == Phase::Repairing => {
                // A failed repair is not the reader's problem: the answer
                // is the merge either way. Stop waiting for it.
                self.pending_repairs.retain(|n| *n != from);
                if self.pending_repairs.is_empty() {
                    self.answer();
                }
            }
            _ => {}
        }
    }

    /// Checks the deadline.
    pub fn tick(&mut self, now: Instant, out: &mut Outbox) {
        if now < self.deadline {
            return;
        }
        match self.phase {
            Phase::Reading => {
                self.reply = Some(Err(Error::QuorumTimeout {
                    needed: self.r,
                    got: self.replied(),
                    after: self.timeout,
                    indefinite: false,
                }));
                self.phase = Phase::Finished;
            }
            Phase::Repairing => self.answer(),
            Phase::Answered => {
                self.repair_stale(out);
                self.phase = Phase::Finished;
            }
            Phase::Finished => {}
        }
    }

    fn replied(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Replied(_)))
            .count()
    }

    fn outstanding(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Asked).count()
    }

    fn advance(&mut self, out: &mut Outbox) {
        match self.phase {
            Phase::Reading => {
                let replied = self.replied();
                if replied >= self.r {
                    self.merged = self.merge_replies();
                    match self.repair {
                        Repair::BeforeAnswer => {
                            self.repair_stale(out);
                            if self.pending_repairs.is_empty() {
                                self.answer();
                            } else {
                                self.phase = Phase::Repairing;
                            }
                        }
                        Repair::Async | Repair::Off => {
                            self.answer();
                            self.maybe_finish(out);
                        }
                    }
                } else if replied + self.outstanding() < self.r {
                    self.reply = Some(Err(Error::Unavailable {
                        needed: self.r,
                        got: replied,
                        indefinite: false,
                    }));
                    self.phase = Phase::Finished;
                    // Damaged copies are still repaired from what the
                    // others answer, so that a retry can succeed.
                    if self.repair != Repair::Off && self.slots.contains(&Slot::Damaged) {
                        self.phase = Phase::Answered;
                        self.maybe_finish(out);
                    }
                }
            }
            Phase::Answered => self.maybe_finish(out),
            Phase::Repairing | Phase::Finished => {}
        }
    }

    /// After answering: once no reply is outstanding, repair and finish.
    fn maybe_finish(&mut self, out: &mut Outbox) {
        if self.phase == Phase::Answered && self.outstanding() == 0 {
            self.repair_stale(out);
            self.phase = Phase::Finished;
        }
    }

    fn merge_replies(&self) -> Option<Object> {
        let mut merged: Option<Object> = None;
        for slot in &self.slots {
            if let Slot::Replied(Some(object)) = slot {
                match &mut merged {
                    None => merged = Some(object.clone()),
                    Some(m) => {
                        self.policy.merge(m, object);
                    }
                }
            }
        }
        merged
    }

    /// Sends the merge of every reply so far to each replica whose copy
    /// differs from it.
    fn repair_stale(&mut self, out: &mut Outbox) {
        if self.repair == Repair::Off {
            return;
        }
        let Some(merged) = self.merge_replies() else {
            return;
        };
        for (i, slot) in self.slots.iter().enumerate() {
            match slot {
                Slot::Replied(copy) if copy.as_ref() != Some(&merged) => {}
                Slot::Damaged => {}
                _ => continue,
            }
            let target = self.targets[i];
            if self.receipt.repaired.contains(&target.node) {
                continue;
            }
            self.receipt.repaired.push(target.node);
            if self.phase == Phase::Reading {
                self.pending_repairs.push(target.node);
            }
            out.push((
                target.node,
                ReplicaRequest::Merge {
                    req: self.id,
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    object: merged.clone(),
                    policy: self.policy.clone(),
                    hint_for: target.hint_for,
                },
            ));
        }
    }

    fn answer(&mut self) {
        self.reply = Some(Ok(GetReply {
            object: self.merged.clone(),
            receipt: self.receipt.clone(),
        }));
        // Async repair runs once every reply is in (maybe already now: the
        // caller of `answer` then calls `maybe_finish`).
        self.phase = if self.repair == Repair::Async {
            Phase::Answered
        } else {
            Phase::Finished
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::ReplicaError;
    use crate::version::{CausalContext, Payload, Timestamp};

    fn targets(ids: &[u64]) -> Vec<Target> {
        ids.iter()
            .map(|&n| Target {
                node: NodeId(n),
                hint_for: None,
            })
            .collect()
    }

    fn object_written_by(node: u64, value: &str) -> Object {
        let mut o = Object::new();
        o.put(
            NodeId(node),
            &CausalContext::empty(),
            Payload::Value(value.as_bytes().to_vec()),
            Timestamp::from_ms(node),
            10,
        )
        .unwrap();
        o
    }

    fn read(object: Option<Object>) -> ReplicaReply {
        ReplicaReply::Read {
            req: 3,
            result: Ok(object),
        }
    }

    fn start(ids: &[u64], r: usize, repair: Repair, out: &mut Outbox) -> (GetRequest, Instant) {
        let now = Instant::now();
        let get = GetRequest::new(
            now,
            3,
            b"b".to_vec(),
            b"k".to_vec(),
            ConflictPolicy::Siblings,
            targets(ids),
            GetOptions {
                r,
                timeout: Duration::from_secs(1),
                repair,
            },
            out,
        );
        (get, now)
    }

    #[test]
    fn answers_after_r_replies_with_their_merge() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 2, Repair::Async, &mut out);
        assert_eq!(out.len(), 3);
        get.step(
            now,
            NodeId(1),
            read(Some(object_written_by(1, "a"))),
            &mut out,
        );
        assert!(get.take_reply().is_none());
        get.step(
            now,
            NodeId(2),
            read(Some(object_written_by(2, "b"))),
            &mut out,
        );
        let reply = get.take_reply().unwrap().unwrap();
        assert_eq!(
            reply.object.unwrap().siblings().len(),
            2,
            "concurrent writes are siblings"
        );
        assert!(!get.is_finished(), "still waiting for node 3 to repair it");
    }

    #[test]
    fn async_repair_sends_the_merge_to_every_stale_replica() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 2, Repair::Async, &mut out);
        out.clear();
        let a = object_written_by(1, "a");
        get.step(now, NodeId(1), read(Some(a.clone())), &mut out);
        get.step(now, NodeId(2), read(Some(a.clone())), &mut out);
        assert!(get.take_reply().unwrap().is_ok());
        assert!(out.is_empty(), "no repair before every reply is in");
        get.step(now, NodeId(3), read(None), &mut out);
        assert!(get.is_finished());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(3));
        match &out[0].1 {
            ReplicaRequest::Merge { object, .. } => assert_eq!(object, &a),
            other => panic!("{other:?}"),
        }
        assert_eq!(get.receipt().repaired, vec![NodeId(3)]);
    }

    #[test]
    fn async_repair_runs_even_when_r_is_every_target() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2], 2, Repair::Async, &mut out);
        out.clear();
        get.step(
            now,
            NodeId(1),
            read(Some(object_written_by(1, "a"))),
            &mut out,
        );
        get.step(now, NodeId(2), read(None), &mut out);
        assert!(get.take_reply().unwrap().is_ok());
        assert!(get.is_finished());
        assert_eq!(get.receipt().repaired, vec![NodeId(2)]);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn repair_before_answer_waits_for_the_repair_acks() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 2, Repair::BeforeAnswer, &mut out);
        out.clear();
        get.step(
            now,
            NodeId(1),
            read(Some(object_written_by(1, "a"))),
            &mut out,
        );
        get.step(now, NodeId(2), read(None), &mut out);
        assert!(get.take_reply().is_none(), "node 2 is stale: repair first");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(2));
        get.step(
            now,
            NodeId(2),
            ReplicaReply::Merged {
                req: 3,
                result: Ok(()),
            },
            &mut out,
        );
        let reply = get.take_reply().unwrap().unwrap();
        assert_eq!(reply.receipt.repaired, vec![NodeId(2)]);
        assert!(get.is_finished());
    }

    #[test]
    fn not_found_everywhere_is_none_and_repairs_nothing() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 3, Repair::Async, &mut out);
        out.clear();
        for n in 1..=3 {
            get.step(now, NodeId(n), read(None), &mut out);
        }
        assert_eq!(get.take_reply().unwrap().unwrap().object, None);
        assert!(out.is_empty());
        assert!(get.is_finished());
    }

    #[test]
    fn failures_that_make_r_unreachable_are_unavailable() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 3, Repair::Async, &mut out);
        get.step(
            now,
            NodeId(2),
            ReplicaReply::Read {
                req: 3,
                result: Err(ReplicaError::Failed("corrupt".into())),
            },
            &mut out,
        );
        match get.take_reply() {
            Some(Err(Error::Unavailable {
                needed: 3,
                got: 0,
                indefinite: false,
            })) => {}
            other => panic!("{other:?}"),
        }
    }

    fn damaged() -> ReplicaReply {
        ReplicaReply::ReadCorrupt {
            req: 3,
            reason: "checksum mismatch".into(),
        }
    }

    #[test]
    fn a_damaged_copy_does_not_count_and_is_repaired_with_the_others_merge() {
        for repair in [Repair::Async, Repair::BeforeAnswer] {
            let mut out = Outbox::new();
            let (mut get, now) = start(&[1, 2, 3], 2, repair, &mut out);
            out.clear();
            let a = object_written_by(1, "a");
            get.step(now, NodeId(1), damaged(), &mut out);
            get.step(now, NodeId(2), read(Some(a.clone())), &mut out);
            assert!(get.take_reply().is_none(), "one answer of the two needed");
            get.step(now, NodeId(3), read(Some(a.clone())), &mut out);
            if repair == Repair::BeforeAnswer {
                assert!(get.take_reply().is_none(), "repair first");
                get.step(
                    now,
                    NodeId(1),
                    ReplicaReply::Merged {
                        req: 3,
                        result: Ok(()),
                    },
                    &mut out,
                );
            }
            let reply = get.take_reply().unwrap().unwrap();
            assert_eq!(reply.object.as_ref(), Some(&a));
            assert!(get.is_finished());
            assert_eq!(out.len(), 1, "{repair:?}");
            assert_eq!(out[0].0, NodeId(1));
            match &out[0].1 {
                ReplicaRequest::Merge { object, .. } => assert_eq!(object, &a),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn damaged_copies_that_make_r_unreachable_are_still_repaired() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 3, Repair::Async, &mut out);
        out.clear();
        let a = object_written_by(2, "a");
        get.step(now, NodeId(1), damaged(), &mut out);
        assert!(matches!(
            get.take_reply(),
            Some(Err(Error::Unavailable {
                needed: 3,
                got: 0,
                ..
            }))
        ));
        get.step(now, NodeId(2), read(Some(a.clone())), &mut out);
        assert!(out.is_empty());
        get.step(now, NodeId(3), read(Some(a.clone())), &mut out);
        assert!(get.is_finished());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(1));
    }

    #[test]
    fn the_deadline_gives_a_timeout_with_the_count() {
        let mut out = Outbox::new();
        let (mut get, now) = start(&[1, 2, 3], 2, Repair::Async, &mut out);
        get.step(now, NodeId(1), read(None), &mut out);
        get.tick(now + Duration::from_secs(2), &mut out);
        match get.take_reply() {
            Some(Err(Error::QuorumTimeout {
                needed: 2, got: 1, ..
            })) => {}
            other => panic!("{other:?}"),
        }
        assert!(get.is_finished());
    }

    #[test]
    fn all_fails_clearly_when_a_node_is_missing() {
        let mut out = Outbox::new();
        let (mut get, _) = start(&[1, 2], 3, Repair::Async, &mut out);
        assert!(out.is_empty());
        assert!(matches!(
            get.take_reply(),
            Some(Err(Error::Unavailable {
                needed: 3,
                got: 2,
                ..
            }))
        ));
    }
}
