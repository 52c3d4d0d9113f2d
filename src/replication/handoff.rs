//! Hinted handoff: delivering the hints a fallback holds to their owner
//! once it is back.
//!
//! Where a hint goes is the caller's choice, per hint (`route`): its owner
//! while the owner still replicates the key, otherwise (the ring changed
//! since the write: the owner left, or its range moved) a current replica
//! of the key. A hint delivered to an owner that no longer holds the range
//! would be dropped with it, and one held for a node that left would never
//! be delivered at all.
//!
//! The machine is told which owners are up and is fed batches of hints read
//! from the [`ReplicaStore`](super::replica::ReplicaStore); it sends each
//! hint to its owner as a plain merge (no `hint_for`: the owner stores it as
//! its own copy), and reports each one the owner acknowledged, so the caller
//! can remove it from the hint store. A hint is removed only after its owner
//! stored it, and only if it did not change meanwhile, so a crash anywhere
//! in between delivers a hint twice (merges are idempotent) but never loses
//! one.
//!
//! Deliveries are bounded: at most `max_in_flight` per owner, each retried
//! after `retry_after` without an answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::replica::Hint;
use super::{Outbox, ReplicaReply, ReplicaRequest};
use crate::id::NodeId;
use crate::version::ConflictPolicy;

/// A hint the owner acknowledged: remove it from the hint store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The owner that stored it.
    pub owner: NodeId,
    /// The hint as it was sent.
    pub hint: Hint,
}

#[derive(Debug)]
struct InFlight {
    /// The owner the hint is held for (its slot in the hint store).
    owner: NodeId,
    /// Where it was sent.
    to: NodeId,
    hint: Hint,
    sent: Instant,
}

/// Hand-off of hints to their owners. See the module docs.
#[derive(Debug)]
pub struct HintedHandoff {
    /// Request ids are taken from this range so they cannot collide with a
    /// coordinator's: the caller gives each machine its own base.
    next_req: u64,
    in_flight: BTreeMap<u64, InFlight>,
    max_in_flight: usize,
    retry_after: Duration,
}

impl HintedHandoff {
    /// A machine whose request ids start at `first_req`.
    pub fn new(first_req: u64, max_in_flight: usize, retry_after: Duration) -> Self {
        HintedHandoff {
            next_req: first_req,
            in_flight: BTreeMap::new(),
            max_in_flight: max_in_flight.max(1),
            retry_after,
        }
    }

    /// Deliveries waiting for `owner`'s answer.
    pub fn in_flight_to(&self, owner: NodeId) -> usize {
        self.in_flight.values().filter(|f| f.owner == owner).count()
    }

    /// How many more hints `owner` may be sent now.
    pub fn room_for(&self, owner: NodeId) -> usize {
        self.max_in_flight.saturating_sub(self.in_flight_to(owner))
    }

    /// Sends `hints` (read from the hint store for `owner`) where `route`
    /// says (`None`: not now, the owner is down), skipping those already in
    /// flight and those past the owner's room. `policy_of` gives each
    /// hint's bucket policy.
    pub fn offer(
        &mut self,
        now: Instant,
        owner: NodeId,
        hints: Vec<Hint>,
        (policy_of, route): (
            impl Fn(&[u8]) -> ConflictPolicy,
            impl Fn(&Hint) -> Option<NodeId>,
        ),
        out: &mut Outbox,
    ) {
        for hint in hints {
            if self.room_for(owner) == 0 {
                break;
            }
            let Some(to) = route(&hint) else {
                continue;
            };
            let busy = self.in_flight.values().any(|f| {
                f.owner == owner && f.hint.bucket == hint.bucket && f.hint.key == hint.key
            });
            if busy {
                continue;
            }
            let req = self.next_req;
            self.next_req += 1;
            out.push((
                to,
                ReplicaRequest::Merge {
                    req,
                    bucket: hint.bucket.clone(),
                    key: hint.key.clone(),
                    object: hint.object.clone(),
                    policy: policy_of(&hint.bucket),
                    hint_for: None,
                },
            ));
            self.in_flight.insert(
                req,
                InFlight {
                    owner,
                    to,
                    hint,
                    sent: now,
                },
            );
        }
    }

    /// Feeds an owner's answer. Returns the delivered hint on success.
    pub fn step(&mut self, from: NodeId, reply: ReplicaReply) -> Option<Delivered> {
        let ReplicaReply::Merged { req, result } = reply else {
            return None;
        };
        match self.in_flight.get(&req) {
            Some(f) if f.to == from => {}
            _ => return None,
        }
        let f = self.in_flight.remove(&req)?;
        match result {
            // Superseded: the owner already holds something newer; the
            // hint has nothing left to give.
            Ok(()) | Err(super::ReplicaError::Superseded { .. }) => Some(Delivered {
                owner: f.owner,
                hint: f.hint,
            }),
            // Kept in the store; offered again on a later round.
            Err(_) => None,
        }
    }

    /// Forgets deliveries unanswered for `retry_after`, so the hints are
    /// offered again; and every delivery to a node no longer up.
    pub fn tick(&mut self, now: Instant, is_up: impl Fn(NodeId) -> bool) {
        let retry_after = self.retry_after;
        self.in_flight
            .retain(|_, f| is_up(f.to) && now.duration_since(f.sent) < retry_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::ReplicaError;
    use crate::version::Object;

    fn hint(key: &str) -> Hint {
        Hint {
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
            object: Object::new(),
        }
    }

    #[test]
    fn a_routed_hint_is_acknowledged_by_where_it_went_and_removed_for_its_owner() {
        let now = Instant::now();
        let mut h = HintedHandoff::new(1 << 63, 2, Duration::from_secs(1));
        let mut out = Outbox::new();
        let policy = |_: &[u8]| ConflictPolicy::Siblings;
        // Held for node 3, which left: sent to node 5; "b" has nowhere to
        // go yet and is kept.
        let route = |h: &Hint| (h.key == b"a").then_some(NodeId(5));
        h.offer(
            now,
            NodeId(3),
            vec![hint("a"), hint("b")],
            (policy, route),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, NodeId(5));
        let req = match &out[0].1 {
            ReplicaRequest::Merge { req, .. } => *req,
            other => panic!("{other:?}"),
        };
        let ok = || ReplicaReply::Merged {
            req,
            result: Ok(()),
        };
        // The owner's name on a reply counts for nothing: node 5 was asked.
        assert_eq!(h.step(NodeId(3), ok()), None);
        let delivered = h.step(NodeId(5), ok()).unwrap();
        assert_eq!(delivered.owner, NodeId(3), "removed from node 3's hints");
        assert_eq!(delivered.hint.key, b"a");
    }

    #[test]
    fn delivers_within_the_window_and_reports_acks() {
        let now = Instant::now();
        let mut h = HintedHandoff::new(1 << 63, 2, Duration::from_secs(1));
        let mut out = Outbox::new();
        let policy = |_: &[u8]| ConflictPolicy::Siblings;
        h.offer(
            now,
            NodeId(3),
            vec![hint("a"), hint("b"), hint("c")],
            (policy, |_: &Hint| Some(NodeId(3))),
            &mut out,
        );
        assert_eq!(out.len(), 2, "window of two");
        let (_, ReplicaRequest::Merge { req, hint_for, .. }) = &out[0] else {
            panic!()
        };
        assert_eq!(*hint_for, None, "the owner stores it as its own");
        let req = *req;
        // Offering again sends nothing new while both are in flight.
        h.offer(
            now,
            NodeId(3),
            vec![hint("a"), hint("c")],
            (policy, |_: &Hint| Some(NodeId(3))),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        // A reply from someone else is ignored.
        let ok = ReplicaReply::Merged {
            req,
            result: Ok(()),
        };
        assert_eq!(h.step(NodeId(4), ok.clone()), None);
        let d = h.step(NodeId(3), ok).unwrap();
        assert_eq!(d.hint.key, b"a");
        assert_eq!(h.room_for(NodeId(3)), 1);
    }

    #[test]
    fn failures_and_silence_lead_to_a_retry_not_a_loss() {
        let now = Instant::now();
        let mut h = HintedHandoff::new(10, 4, Duration::from_secs(1));
        let mut out = Outbox::new();
        let policy = |_: &[u8]| ConflictPolicy::Siblings;
        h.offer(
            now,
            NodeId(3),
            vec![hint("a"), hint("b")],
            (policy, |_: &Hint| Some(NodeId(3))),
            &mut out,
        );
        let failed = ReplicaReply::Merged {
            req: 10,
            result: Err(ReplicaError::Failed("disk".into())),
        };
        assert_eq!(h.step(NodeId(3), failed), None);
        assert_eq!(h.in_flight_to(NodeId(3)), 1);
        h.tick(now + Duration::from_secs(2), |_| true);
        assert_eq!(h.in_flight_to(NodeId(3)), 0, "silence expires");
        out.clear();
        h.offer(
            now,
            NodeId(3),
            vec![hint("a"), hint("b")],
            (policy, |_: &Hint| Some(NodeId(3))),
            &mut out,
        );
        assert_eq!(out.len(), 2, "both offered again");
        h.tick(now, |n| n != NodeId(3));
        assert_eq!(h.in_flight_to(NodeId(3)), 0, "owner down again: forget");
    }
}
