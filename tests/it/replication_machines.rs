//! The replication machines driven end to end over real replica stores,
//! with messages routed by hand: puts and gets at every consistency level,
//! a down primary replaced by a fallback whose hint is handed off, read
//! repair of a stale replica, and concurrent writes that become siblings.
//!
//! No network and no actors: this checks the protocol logic alone. The
//! messages are delivered in a seeded random order, and dropped for nodes
//! marked down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ringkv::replication::get::Repair;
use ringkv::replication::handoff::HintedHandoff;
use ringkv::replication::replica::ReplicaStore;
use ringkv::replication::{
    Consistency, GetOptions, GetRequest, Outbox, PutOptions, PutRequest, ReplicaReply, Target,
    Write,
};
use ringkv::ring::claim_join;
use ringkv::storage::MemoryEngine;
use ringkv::version::{CausalContext, ConflictPolicy, Object, Payload, Timestamp};
use ringkv::{key_token, Error, NodeId, Ring};

struct Cluster {
    ring: Ring,
    stores: Vec<ReplicaStore>,
    down: BTreeSet<NodeId>,
    rng: ChaCha8Rng,
    next_req: u64,
    now: Instant,
}

impl Cluster {
    fn new(nodes: u64, seed: u64) -> Self {
        let mut ring = Ring::empty();
        for id in 1..=nodes {
            ring = claim_join(&ring, NodeId(id), 32).unwrap();
        }
        let stores = (1..=nodes)
            .map(|id| {
                ReplicaStore::open(NodeId(id), Arc::new(MemoryEngine::new()), 10, 1000).unwrap()
            })
            .collect();
        Cluster {
            ring,
            stores,
            down: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_req: 1,
            now: Instant::now(),
        }
    }

    fn store(&self, node: NodeId) -> &ReplicaStore {
        &self.stores[(node.0 - 1) as usize]
    }

    fn targets(&self, key: &[u8], sloppy: bool) -> Vec<Target> {
        let token = key_token(b"b", key);
        if sloppy {
            self.ring
                .preference_list_with(token, 3, |n| !self.down.contains(&n))
                .into_iter()
                .map(Target::from)
                .collect()
        } else {
            self.ring
                .preference_list(token, 3)
                .into_iter()
                .filter(|n| !self.down.contains(n))
                .map(|node| Target {
                    node,
                    hint_for: None,
                })
                .collect()
        }
    }

    /// Delivers every outbox message (in random order) to live replicas and
    /// returns their replies, shuffled.
    fn deliver(&mut self, out: &mut Outbox) -> Vec<(NodeId, ReplicaReply)> {
        let mut msgs: Vec<_> = std::mem::take(out);
        msgs.shuffle(&mut self.rng);
        let mut replies: Vec<_> = msgs
            .into_iter()
            .filter(|(to, _)| !self.down.contains(to))
            .map(|(to, req)| (to, self.store(to).handle(req)))
            .collect();
        replies.shuffle(&mut self.rng);
        replies
    }

    fn put(
        &mut self,
        key: &[u8],
        value: &str,
        context: CausalContext,
        w: Consistency,
    ) -> Result<Object, Error> {
        let req = self.next_req;
        self.next_req += 1;
        let mut out = Outbox::new();
        let mut put = PutRequest::new(
            self.now,
            req,
            b"b".to_vec(),
            key.to_vec(),
            Write {
                context,
                payload: Payload::Value(value.as_bytes().to_vec()),
                timestamp: Timestamp::from_ms(req),
                op: None,
                base: None,
            },
            ConflictPolicy::Siblings,
            self.targets(key, true),
            PutOptions {
                w: w.required(3).unwrap(),
                timeout: Duration::from_secs(1),
                quorums: Vec::new(),
            },
            &mut out,
        );
        loop {
            if let Some(reply) = put.take_reply() {
                // Let the remaining replicas store it too, as they would.
                let _ = self.deliver(&mut out);
                return reply.map(|r| r.object);
            }
            if out.is_empty() {
                put.tick(self.now + Duration::from_secs(2), &mut out);
                continue;
            }
            for (from, reply) in self.deliver(&mut out) {
                put.step(self.now, from, reply, &mut out);
            }
        }
    }

    fn get(
        &mut self,
        key: &[u8],
        r: Consistency,
        repair: Repair,
    ) -> Result<(Option<Object>, Vec<NodeId>), Error> {
        let req = self.next_req;
        self.next_req += 1;
        let mut out = Outbox::new();
        let mut get = GetRequest::new(
            self.now,
            req,
            b"b".to_vec(),
            key.to_vec(),
            ConflictPolicy::Siblings,
            self.targets(key, false),
            GetOptions {
                r: r.required(3).unwrap(),
                timeout: Duration::from_secs(1),
                repair,
            },
            &mut out,
        );
        let mut answer = None;
        while !get.is_finished() {
            if let Some(reply) = get.take_reply() {
                answer = Some(reply);
                continue;
            }
            if out.is_empty() {
                get.tick(self.now + Duration::from_secs(2), &mut out);
                // Async repairs sent at the deadline still get delivered.
                let _ = self.deliver(&mut out);
                continue;
            }
            for (from, reply) in self.deliver(&mut out) {
                get.step(self.now, from, reply, &mut out);
            }
        }
        if answer.is_none() {
            answer = get.take_reply();
        }
        let _ = self.deliver(&mut out);
        answer
            .expect("a finished get has answered")
            .map(|r| (r.object, get.receipt().repaired.clone()))
    }
}

fn values(object: &Option<Object>) -> Vec<String> {
    let mut v: Vec<String> = object
        .iter()
        .flat_map(|o| o.siblings())
        .filter_map(|s| s.payload.value())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn quorum_put_then_get_at_every_level() {
    for seed in 0..20 {
        let mut c = Cluster::new(5, seed);
        c.put(b"k", "v1", CausalContext::empty(), Consistency::Quorum)
            .unwrap();
        for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
            let (obj, _) = c.get(b"k", level, Repair::Async).unwrap();
            assert_eq!(values(&obj), vec!["v1"], "seed {seed} {level:?}");
        }
    }
}

#[test]
fn all_fails_clearly_while_a_primary_is_down_and_quorum_still_works() {
    let mut c = Cluster::new(5, 1);
    c.put(b"k", "v1", CausalContext::empty(), Consistency::All)
        .unwrap();
    let primary = c.ring.preference_list(key_token(b"b", b"k"), 3)[1];
    c.down.insert(primary);
    match c.get(b"k", Consistency::All, Repair::Async) {
        Err(Error::Unavailable {
            needed: 3, got: 2, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let (obj, _) = c.get(b"k", Consistency::Quorum, Repair::Async).unwrap();
    assert_eq!(values(&obj), vec!["v1"]);
}

#[test]
fn a_fallback_holds_the_hint_and_hands_it_off_when_the_owner_returns() {
    let mut c = Cluster::new(5, 7);
    let primaries = c.ring.preference_list(key_token(b"b", b"k"), 3);
    let owner = primaries[2];
    c.down.insert(owner);
    let written = c
        .put(b"k", "hinted", CausalContext::empty(), Consistency::All)
        .expect("sloppy quorum: a fallback counts toward W");
    assert_eq!(c.store(owner).read(b"b", b"k").unwrap(), None);
    let fallback = c
        .targets(b"k", true)
        .into_iter()
        .find(|t| t.hint_for == Some(owner))
        .unwrap()
        .node;
    assert_eq!(c.store(fallback).hint_count(), 1);

    // The owner comes back; the fallback hands the hint off.
    c.down.remove(&owner);
    let mut handoff = HintedHandoff::new(1 << 62, 8, Duration::from_secs(1));
    let hints = c.store(fallback).hints_for(owner, 100).unwrap();
    let mut out = Outbox::new();
    handoff.offer(
        c.now,
        owner,
        hints,
        (|_: &[u8]| ConflictPolicy::Siblings, |_: &_| Some(owner)),
        &mut out,
    );
    for (from, reply) in c.deliver(&mut out) {
        let delivered = handoff.step(from, reply).expect("owner acked");
        assert!(c
            .store(fallback)
            .remove_hint(
                delivered.owner,
                &delivered.hint.bucket,
                &delivered.hint.key,
                &delivered.hint.object
            )
            .unwrap());
    }
    assert_eq!(c.store(fallback).hint_count(), 0);
    assert_eq!(c.store(owner).read(b"b", b"k").unwrap(), Some(written));
}

#[test]
fn read_repair_brings_a_stale_replica_up_to_date() {
    for repair in [Repair::Async, Repair::BeforeAnswer] {
        let mut c = Cluster::new(5, 3);
        let primaries = c.ring.preference_list(key_token(b"b", b"k"), 3);
        let stale = primaries[0];
        // Written while `stale` was down, without sloppy quorum's help.
        c.down.insert(stale);
        let mut out = Outbox::new();
        let mut put = PutRequest::new(
            c.now,
            99,
            b"b".to_vec(),
            b"k".to_vec(),
            Write {
                context: CausalContext::empty(),
                payload: Payload::Value(b"fresh".to_vec()),
                timestamp: Timestamp::from_ms(1),
                op: None,
                base: None,
            },
            ConflictPolicy::Siblings,
            c.targets(b"k", false),
            PutOptions {
                w: 2,
                timeout: Duration::from_secs(1),
                quorums: Vec::new(),
            },
            &mut out,
        );
        while put.take_reply().is_none() {
            for (from, reply) in c.deliver(&mut out) {
                put.step(c.now, from, reply, &mut out);
            }
        }
        c.down.remove(&stale);
        assert_eq!(c.store(stale).read(b"b", b"k").unwrap(), None);
        let (obj, repaired) = c.get(b"k", Consistency::All, repair).unwrap();
        assert_eq!(values(&obj), vec!["fresh"]);
        assert_eq!(repaired, vec![stale], "{repair:?}");
        assert_eq!(c.store(stale).read(b"b", b"k").unwrap(), obj);
    }
}

#[test]
fn concurrent_blind_writes_are_siblings_and_a_context_resolves_them() {
    let mut c = Cluster::new(5, 11);
    c.put(b"k", "a", CausalContext::empty(), Consistency::Quorum)
        .unwrap();
    c.put(b"k", "b", CausalContext::empty(), Consistency::Quorum)
        .unwrap();
    let (obj, _) = c.get(b"k", Consistency::All, Repair::Async).unwrap();
    assert_eq!(values(&obj), vec!["a", "b"]);
    let context = obj.unwrap().context();
    c.put(b"k", "merged", context, Consistency::Quorum).unwrap();
    let (obj, _) = c.get(b"k", Consistency::All, Repair::Async).unwrap();
    assert_eq!(values(&obj), vec!["merged"]);
}
