//! The put coordinator: one machine per client write.
//!
//! Phases: the first live target *coordinates* (applies the write and
//! returns the resulting object); then that object is sent to every other
//! target to merge; the put succeeds after `w` stores. See the
//! [module docs](super) for the protocol.
//!
//! Failover: when the coordinating replica refuses with its own trouble
//! (a disk error), it stored nothing, so the next target is asked to
//! coordinate instead. When it does not answer before the deadline, the
//! machine does not fail over: the write may have been applied there, and a
//! second coordinator would give the same client write a second dot.
//!
//! Rounds (last-writer-wins only): a target that answers
//! [`ReplicaError::Superseded`] holds a version newer than the write, so
//! the write would not be what a read there returns. The machine starts a
//! new round: the same coordinating replica is asked again with the
//! write's timestamp raised above the newer version's (it stamps above
//! what it stores too), and the new object is sent to every target again.
//! Every request of a round carries the round in the top bits of its id
//! ([`ROUND_SHIFT`]), so a reply of an earlier round is never counted for
//! a later one. The deadline bounds the rounds.

use std::time::{Duration, Instant};

use super::{Outbox, Receipt, ReplicaError, ReplicaReply, ReplicaRequest, Target, Write};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::version::{ConflictPolicy, Object};

/// Request ids of a round carry the round number from this bit up; the
/// coordinator's own ids stay below it.
pub const ROUND_SHIFT: u32 = 56;
/// The most rounds a put makes before it gives up.
const MAX_ROUNDS: u64 = 32;

/// Per-request settings of a put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOptions {
    /// Stores needed before success (from [`super::Consistency::required`]).
    pub w: usize,
    /// How long the whole request may take.
    pub timeout: Duration,
    /// Groups of target nodes that must each store `w` copies (while the
    /// key's range moves between rings: the old ring's targets and the
    /// new ring's). Empty: `w` stores among all targets.
    pub quorums: Vec<Vec<NodeId>>,
}

/// A successful put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutReply {
    /// The object as the coordinating replica stored it (its context is the
    /// one a client uses to overwrite this write).
    pub object: Object,
    /// Who was asked and who stored it.
    pub receipt: Receipt,
    /// [`ReplicaReply::Coordinated::changed`]: for a set op, the members
    /// whose membership it changed.
    pub changed: Option<u64>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum TargetState {
    /// Not sent anything yet (waiting for the coordinated object).
    Idle,
    /// A request is outstanding.
    Asked,
    /// Stored the write.
    Stored,
    /// Refused; stored nothing.
    Failed,
}

/// One client write in flight. See the module docs.
#[derive(Debug)]
pub struct PutRequest {
    id: u64,
    bucket: Vec<u8>,
    key: Vec<u8>,
    write: Write,
    policy: ConflictPolicy,
    targets: Vec<Target>,
    states: Vec<TargetState>,
    /// Index of the target currently asked to coordinate.
    coordinator: usize,
    /// The coordinated object, once known.
    object: Option<Object>,
    /// What the coordinating replica counted ([`PutReply::changed`]).
    changed: Option<u64>,
    w: usize,
    /// Indices into `targets` of each group that needs `w` stores; one
    /// group of every target when no quorums were given.
    groups: Vec<Vec<usize>>,
    timeout: Duration,
    deadline: Instant,
    receipt: Receipt,
    reply: Option<Result<PutReply>>,
    /// The reply has been taken.
    answered: bool,
    /// The round (see the module docs); 0 at first.
    round: u64,
}

impl PutRequest {
    /// Starts a put of `write` to `bucket`/`key` on `targets` (the
    /// preference list with fallbacks, in order). Sends the coordinate
    /// request, or fails at once with [`Error::Unavailable`] when fewer than
    /// `w` targets exist; check [`PutRequest::take_reply`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        id: u64,
        bucket: Vec<u8>,
        key: Vec<u8>,
        write: Write,
        policy: ConflictPolicy,
        targets: Vec<Target>,
        options: PutOptions,
        out: &mut Outbox,
    ) -> Self {
        let groups = if options.quorums.is_empty() {
            vec![(0..targets.len()).collect()]
        } else {
            options
                .quorums
                .iter()
                .map(|group| {
                    group
                        .iter()
                        .filter_map(|n| targets.iter().position(|t| t.node == *n))
                        .collect()
                })
                .collect()
        };
        let smallest = groups.iter().map(Vec::len).min().unwrap_or(0);
        let mut put = PutRequest {
            id,
            groups,
            bucket,
            key,
            write,
            policy,
            states: vec![TargetState::Idle; targets.len()],
            targets,
            coordinator: 0,
            object: None,
            changed: None,
            w: options.w,
            timeout: options.timeout,
            deadline: now + options.timeout,
            receipt: Receipt::default(),
            reply: None,
            answered: false,
            round: 0,
        };
        if put.w == 0 || smallest < put.w {
            put.fail(Error::Unavailable {
                needed: put.w.max(1),
                got: smallest,
                indefinite: false,
            });
        } else {
            put.ask_to_coordinate(0, out);
        }
        put
    }

    /// The request id replies must carry.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When [`PutRequest::tick`] must next be called.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the machine has answered; it can then be dropped (later
    /// replies change nothing the client sees).
    pub fn is_finished(&self) -> bool {
        self.reply.is_none() && self.answered
    }

    /// The answer for the client, once: `Some` the first time it is called
    /// after the request succeeded or failed.
    pub fn take_reply(&mut self) -> Option<Result<PutReply>> {
        let reply = self.reply.take();
        if reply.is_some() {
            self.answered = true;
        }
        reply
    }

    /// The id this round's requests carry.
    fn wire_id(&self) -> u64 {
        self.id | (self.round << ROUND_SHIFT)
    }

    /// Feeds a replica's reply.
    pub fn step(&mut self, _now: Instant, from: NodeId, reply: ReplicaReply, out: &mut Outbox) {
        if reply.req() != self.wire_id() || self.done() {
            return;
        }
        let Some(i) = self.targets.iter().position(|t| t.node == from) else {
            return;
        };
        if self.states[i] != TargetState::Asked {
            return;
        }
        match reply {
            ReplicaReply::Coordinated {
                result, changed, ..
            } if i == self.coordinator => match result {
                Ok(object) => {
                    self.changed = changed;
                    self.states[i] = TargetState::Stored;
                    self.receipt.answer(self.targets[i]);
                    self.replicate(&object, out);
                    self.object = Some(object);
                    self.check();
                }
                Err(ReplicaError::TooManySiblings { siblings, max }) => {
                    // The client's business, not the replica's: another
                    // replica would refuse the same write.
                    self.fail(Error::TooManySiblings { siblings, max });
                }
                Err(ReplicaError::Refused(reason)) => {
                    // The request itself is wrong: any replica would
                    // refuse it the same way.
                    self.fail(Error::InvalidInput(reason));
                }
                Err(ReplicaError::Superseded { .. } | ReplicaError::Indefinite(_)) => {
                    // A coordinating replica stamps above what it stores;
                    // a peer that says otherwise is confused. And one that
                    // applied the write before but cannot read it back
                    // may hold it: asking another replica to coordinate
                    // would apply it twice. Either way the outcome is
                    // unknown.
                    self.states[i] = TargetState::Failed;
                    self.fail(Error::Unavailable {
                        needed: self.w,
                        got: 0,
                        indefinite: true,
                    });
                }
                Err(ReplicaError::Failed(reason)) => {
                    tracing::debug!(req = self.id, node = %from, %reason, "coordinating replica failed; failing over");
                    self.states[i] = TargetState::Failed;
                    match (0..self.targets.len()).find(|&j| self.states[j] == TargetState::Idle) {
                        Some(next) if self.possible() => self.ask_to_coordinate(next, out),
                        _ => self.fail(Error::Unavailable {
                            needed: self.w,
                            got: 0,
                            indefinite: false,
                        }),
                    }
                }
            },
            ReplicaReply::Merged { result, .. } if self.object.is_some() => {
                match result {
                    Ok(()) => {
                        self.states[i] = TargetState::Stored;
                        self.receipt.answer(self.targets[i]);
                    }
                    Err(ReplicaError::Superseded { timestamp }) => {
                        self.next_round(timestamp, out);
                        return;
                    }
                    Err(_) => self.states[i] = TargetState::Failed,
                }
                self.check();
            }
            // A reply of the wrong kind for this target: ignore it, as a
            // confused or malicious peer must not decide the outcome.
            _ => {}
        }
    }

    /// Checks the deadline.
    pub fn tick(&mut self, now: Instant, _out: &mut Outbox) {
        if self.done() || now < self.deadline {
            return;
        }
        let got = self.stored();
        // Whether or not the coordinator answered, a write is outstanding
        // somewhere and may yet be applied.
        self.fail(Error::QuorumTimeout {
            needed: self.w,
            got,
            after: self.timeout,
            indefinite: true,
        });
    }

    /// Starts the next round: the write, stamped above `newer`, is
    /// coordinated and replicated again. Every target is asked afresh.
    fn next_round(&mut self, newer: crate::version::Timestamp, out: &mut Outbox) {
        if self.round + 1 >= MAX_ROUNDS {
            // Newer versions keep arriving: writers race on this key. The
            // write is stored somewhere and may yet win.
            self.fail(Error::Unavailable {
                needed: self.w,
                got: 0,
                indefinite: true,
            });
            return;
        }
        self.round += 1;
        self.write.timestamp = self.write.timestamp.max(newer).next();
        self.object = None;
        self.receipt.answered.clear();
        self.receipt.fallbacks.clear();
        for s in &mut self.states {
            *s = TargetState::Idle;
        }
        if self.possible() {
            self.ask_to_coordinate(self.coordinator, out);
        } else {
            self.check();
        }
    }

    fn ask_to_coordinate(&mut self, i: usize, out: &mut Outbox) {
        self.coordinator = i;
        self.states[i] = TargetState::Asked;
        let node = self.targets[i].node;
        self.receipt.ask(node);
        out.push((
            node,
            ReplicaRequest::Coordinate {
                req: self.wire_id(),
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                write: self.write.clone(),
                policy: self.policy.clone(),
                hint_for: self.targets[i].hint_for,
            },
        ));
    }

    fn replicate(&mut self, object: &Object, out: &mut Outbox) {
        for (i, target) in self.targets.iter().enumerate() {
            if self.states[i] != TargetState::Idle {
                continue;
            }
            self.states[i] = TargetState::Asked;
            self.receipt.ask(target.node);
            out.push((
                target.node,
                ReplicaRequest::Merge {
                    req: self.wire_id(),
                    bucket: self.bucket.clone(),
                    key: self.key.clone(),
                    object: object.clone(),
                    policy: self.policy.clone(),
                    hint_for: target.hint_for,
                },
            ));
        }
    }

    /// Stores counted towards success: the fewest of any group.
    fn stored(&self) -> usize {
        self.count_min(|s| s == TargetState::Stored)
    }

    /// Whether `w` stores are still reachable in every group.
    fn possible(&self) -> bool {
        self.count_min(|s| s != TargetState::Failed) >= self.w
    }

    fn count_min(&self, pick: impl Fn(TargetState) -> bool) -> usize {
        self.groups
            .iter()
            .map(|g| g.iter().filter(|&&i| pick(self.states[i])).count())
            .min()
            .unwrap_or(0)
    }

    fn check(&mut self) {
        if self.done() {
            return;
        }
        if self.stored() >= self.w {
            if let Some(object) = &self.object {
                self.reply = Some(Ok(PutReply {
                    object: object.clone(),
                    receipt: self.receipt.clone(),
                    changed: self.changed,
                }));
            }
        } else if !self.possible() {
            // The coordinator stored it, so the write exists somewhere.
            self.fail(Error::Unavailable {
                needed: self.w,
                got: self.stored(),
                indefinite: true,
            });
        }
    }

    fn done(&self) -> bool {
        self.reply.is_some() || self.answered
    }

    fn fail(&mut self, error: Error) {
        if !self.done() {
            self.reply = Some(Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{CausalContext, Payload, Timestamp};

    fn write(v: &str) -> Write {
        Write {
            context: CausalContext::empty(),
            payload: Payload::Value(v.as_bytes().to_vec()),
            timestamp: Timestamp::from_ms(1),
            op: None,
            base: None,
        }
    }

    fn targets(ids: &[u64]) -> Vec<Target> {
        ids.iter()
            .map(|&n| Target {
                node: NodeId(n),
                hint_for: None,
            })
            .collect()
    }

    fn start(ids: &[u64], w: usize, out: &mut Outbox) -> (PutRequest, Instant) {
        let now = Instant::now();
        let put = PutRequest::new(
            now,
            7,
            b"b".to_vec(),
            b"k".to_vec(),
            write("v"),
            ConflictPolicy::Siblings,
            targets(ids),
            PutOptions {
                w,
                timeout: Duration::from_secs(1),
                quorums: Vec::new(),
            },
            out,
        );
        (put, now)
    }

    /// What a replica with an empty store answers to a coordinate request.
    fn coordinated(node: u64) -> ReplicaReply {
        let mut object = Object::new();
        let w = write("v");
        ConflictPolicy::Siblings
            .put(
                &mut object,
                NodeId(node),
                &w.context,
                w.payload,
                w.timestamp,
                10,
            )
            .unwrap();
        ReplicaReply::Coordinated {
            req: 7,
            result: Ok(object),
            changed: None,
        }
    }

    fn merged_ok() -> ReplicaReply {
        ReplicaReply::Merged {
            req: 7,
            result: Ok(()),
        }
    }

    #[test]
    fn a_superseded_lww_write_is_stamped_again_and_stale_rounds_do_not_count() {
        let mut out = Outbox::new();
        let now = Instant::now();
        let mut put = PutRequest::new(
            now,
            7,
            b"b".to_vec(),
            b"k".to_vec(),
            write("v2"),
            ConflictPolicy::Lww,
            targets(&[1, 2, 3]),
            PutOptions {
                w: 2,
                timeout: Duration::from_secs(1),
                quorums: Vec::new(),
            },
            &mut out,
        );
        out.clear();
        let lww_object = |ms: u64, node: u64| {
            let mut o = Object::new();
            o.put_lww(
                NodeId(node),
                &CausalContext::empty(),
                Payload::Value(b"v2".to_vec()),
                Timestamp::from_ms(ms),
            );
            o
        };
        put.step(
            now,
            NodeId(1),
            ReplicaReply::Coordinated {
                req: 7,
                result: Ok(lww_object(1, 1)),
                changed: None,
            },
            &mut out,
        );
        out.clear();
        // Node 2 holds an earlier-acknowledged write stamped later (clock
        // skew): the put must not count it, and goes round again.
        put.step(
            now,
            NodeId(2),
            ReplicaReply::Merged {
                req: 7,
                result: Err(ReplicaError::Superseded {
                    timestamp: Timestamp::from_ms(40),
                }),
            },
            &mut out,
        );
        assert!(put.take_reply().is_none());
        assert_eq!(out.len(), 1);
        let round1 = 7 | (1 << ROUND_SHIFT);
        match &out[0] {
            (NodeId(1), ReplicaRequest::Coordinate { req, write, .. }) => {
                assert_eq!(*req, round1);
                assert!(write.timestamp > Timestamp::from_ms(40));
            }
            other => panic!("{other:?}"),
        }
        out.clear();
        // Round 0's success from node 3 arrives late: not counted.
        put.step(now, NodeId(3), merged_ok(), &mut out);
        assert!(put.take_reply().is_none());
        put.step(
            now,
            NodeId(1),
            ReplicaReply::Coordinated {
                req: round1,
                result: Ok(lww_object(41, 1)),
                changed: None,
            },
            &mut out,
        );
        assert_eq!(out.len(), 2, "sent again to both others");
        assert!(put.take_reply().is_none());
        put.step(
            now,
            NodeId(3),
            ReplicaReply::Merged {
                req: round1,
                result: Ok(()),
            },
            &mut out,
        );
        let reply = put.take_reply().unwrap().unwrap();
        assert_eq!(reply.receipt.answered, vec![NodeId(1), NodeId(3)]);
        assert_eq!(reply.object.timestamp(), Some(Timestamp::from_ms(41)));
    }

    #[test]
    fn succeeds_after_w_stores_and_not_before() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(1));
        assert!(matches!(out[0].1, ReplicaRequest::Coordinate { .. }));
        out.clear();
        put.step(now, NodeId(1), coordinated(1), &mut out);
        assert_eq!(out.len(), 2, "the object goes to the other two targets");
        assert!(put.take_reply().is_none());
        put.step(now, NodeId(3), merged_ok(), &mut out);
        let reply = put.take_reply().unwrap().unwrap();
        assert_eq!(reply.receipt.answered, vec![NodeId(1), NodeId(3)]);
        assert_eq!(reply.receipt.asked, vec![NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(reply.object.siblings().len(), 1);
        assert!(put.is_finished());
        assert!(put.take_reply().is_none(), "answered once");
    }

    #[test]
    fn too_few_targets_is_definitely_unavailable_at_once() {
        let mut out = Outbox::new();
        let (mut put, _) = start(&[1], 2, &mut out);
        assert!(out.is_empty());
        match put.take_reply() {
            Some(Err(Error::Unavailable {
                needed: 2,
                got: 1,
                indefinite: false,
            })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_coordinator_is_replaced_by_the_next_target() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 2, &mut out);
        out.clear();
        put.step(
            now,
            NodeId(1),
            ReplicaReply::Coordinated {
                req: 7,
                result: Err(ReplicaError::Failed("disk full".into())),
                changed: None,
            },
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(2));
        out.clear();
        put.step(now, NodeId(2), coordinated(2), &mut out);
        assert_eq!(out.len(), 1, "only node 3 is left to replicate to");
        assert_eq!(out[0].0, NodeId(3));
        put.step(now, NodeId(3), merged_ok(), &mut out);
        assert!(put.take_reply().unwrap().is_ok());
    }

    #[test]
    fn a_timeout_after_the_coordinator_stored_is_indefinite() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 3, &mut out);
        put.step(now, NodeId(1), coordinated(1), &mut out);
        put.tick(now + Duration::from_millis(999), &mut out);
        assert!(put.take_reply().is_none());
        put.tick(now + Duration::from_secs(1), &mut out);
        match put.take_reply() {
            Some(Err(Error::QuorumTimeout {
                needed: 3,
                got: 1,
                indefinite: true,
                ..
            })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_siblings_is_returned_as_is() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 2, &mut out);
        put.step(
            now,
            NodeId(1),
            ReplicaReply::Coordinated {
                req: 7,
                result: Err(ReplicaError::TooManySiblings {
                    siblings: 11,
                    max: 10,
                }),
                changed: None,
            },
            &mut out,
        );
        assert!(matches!(
            put.take_reply(),
            Some(Err(Error::TooManySiblings { .. }))
        ));
    }

    #[test]
    fn replies_from_strangers_and_of_the_wrong_kind_are_ignored() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 1, &mut out);
        put.step(now, NodeId(9), coordinated(9), &mut out);
        put.step(now, NodeId(2), coordinated(2), &mut out);
        put.step(now, NodeId(1), merged_ok(), &mut out);
        let mut wrong_req = coordinated(1);
        if let ReplicaReply::Coordinated { req, .. } = &mut wrong_req {
            *req = 8;
        }
        put.step(now, NodeId(1), wrong_req, &mut out);
        assert!(put.take_reply().is_none());
        put.step(now, NodeId(1), coordinated(1), &mut out);
        assert!(
            put.take_reply().unwrap().is_ok(),
            "w=1: the coordinator is enough"
        );
    }

    #[test]
    fn failures_that_make_w_unreachable_fail_indefinitely() {
        let mut out = Outbox::new();
        let (mut put, now) = start(&[1, 2, 3], 3, &mut out);
        put.step(now, NodeId(1), coordinated(1), &mut out);
        put.step(
            now,
            NodeId(2),
            ReplicaReply::Merged {
                req: 7,
                result: Err(ReplicaError::Failed("io".into())),
            },
            &mut out,
        );
        match put.take_reply() {
            Some(Err(Error::Unavailable {
                needed: 3,
                got: 1,
                indefinite: true,
            })) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fallbacks_are_sent_hints_and_reported() {
        let mut out = Outbox::new();
        let now = Instant::now();
        let mut t = targets(&[1, 2]);
        t.push(Target {
            node: NodeId(4),
            hint_for: Some(NodeId(3)),
        });
        let mut put = PutRequest::new(
            now,
            7,
            b"b".to_vec(),
            b"k".to_vec(),
            write("v"),
            ConflictPolicy::Siblings,
            t,
            PutOptions {
                w: 2,
                timeout: Duration::from_secs(1),
                quorums: Vec::new(),
            },
            &mut out,
        );
        out.clear();
        put.step(now, NodeId(1), coordinated(1), &mut out);
        let hint = out.iter().find(|(n, _)| *n == NodeId(4)).unwrap();
        assert!(matches!(
            hint.1,
            ReplicaRequest::Merge {
                hint_for: Some(NodeId(3)),
                ..
            }
        ));
        put.step(now, NodeId(4), merged_ok(), &mut out);
        let reply = put.take_reply().unwrap().unwrap();
        assert_eq!(reply.receipt.fallbacks, vec![(NodeId(4), NodeId(3))]);
    }

    #[test]
    fn while_a_range_moves_each_ring_needs_its_own_quorum() {
        // Old ring {1,2,3}, new ring {1,2,4}: node 3 loses, node 4 gains.
        let now = Instant::now();
        let mut out = Vec::new();
        let mut put = PutRequest::new(
            now,
            7,
            b"b".to_vec(),
            b"k".to_vec(),
            write("v"),
            ConflictPolicy::Siblings,
            targets(&[1, 2, 3, 4]),
            PutOptions {
                w: 2,
                timeout: Duration::from_secs(1),
                quorums: vec![
                    vec![NodeId(1), NodeId(2), NodeId(3)],
                    vec![NodeId(1), NodeId(2), NodeId(4)],
                ],
            },
            &mut out,
        );
        put.step(now, NodeId(1), coordinated(1), &mut out);
        // Stored on 1 and 3: a quorum of the old ring, not of the new.
        put.step(now, NodeId(3), merged_ok(), &mut out);
        assert!(put.take_reply().is_none());
        put.step(now, NodeId(4), merged_ok(), &mut out);
        let reply = put.take_reply().expect("answered").expect("succeeded");
        assert_eq!(reply.receipt.answered.len(), 3);

        // A group that cannot reach w fails the put, however many stores
        // the other has.
        let mut out = Vec::new();
        let mut put = PutRequest::new(
            now,
            7,
            b"b".to_vec(),
            b"k".to_vec(),
            write("v"),
            ConflictPolicy::Siblings,
            targets(&[1, 2, 3]),
            PutOptions {
                w: 2,
                timeout: Duration::from_secs(1),
                quorums: vec![
                    vec![NodeId(1), NodeId(2), NodeId(3)],
                    vec![NodeId(1), NodeId(4)],
                ],
            },
            &mut out,
        );
        match put.take_reply() {
            Some(Err(Error::Unavailable {
                needed: 2, got: 1, ..
            })) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
