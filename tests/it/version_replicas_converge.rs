//! Property tests of versioned objects: replicas that receive the same
//! writes in any order converge, and the policies keep what they promise.
//!
//! Three replicas take writes (each coordinated by the replica it lands on,
//! carrying the context a client read from some replica, or none) and
//! gossip their objects in a random schedule. Then every replica merges
//! every other's object, each in a different order.

use proptest::prelude::*;
use ringkv::crdt::{Crdt, CrdtKind, PnCounter};
use ringkv::version::{
    CausalContext, ConflictPolicy, Dot, Object, Payload, Resolved, Resolvers, Timestamp,
};
use ringkv::{codec, Error, NodeId};

#[derive(Clone, Debug)]
enum Step {
    /// A write landing on replica `at`, whose client read from `read_from`
    /// (or wrote blind).
    Write {
        at: usize,
        read_from: Option<usize>,
        value: u8,
        ms: u64,
    },
    Gossip {
        from: usize,
        to: usize,
    },
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            (
                0usize..3,
                proptest::option::of(0usize..3),
                any::<u8>(),
                0u64..20
            )
                .prop_map(|(at, read_from, value, ms)| Step::Write {
                    at,
                    read_from,
                    value,
                    ms
                }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Gossip { from, to }),
        ],
        0..40,
    )
}

struct Accepted {
    dot: Dot,
    context: CausalContext,
    timestamp: Timestamp,
}

/// Runs the steps; returns the replicas' objects and the accepted writes.
fn run(
    policy: &ConflictPolicy,
    steps: &[Step],
    max_siblings: usize,
    mut payload: impl FnMut(&[Object], usize, Option<usize>, u8) -> Payload,
) -> (Vec<Object>, Vec<Accepted>) {
    let mut replicas = vec![Object::new(); 3];
    let mut accepted = Vec::new();
    for step in steps {
        match *step {
            Step::Write {
                at,
                read_from,
                value,
                ms,
            } => {
                let context =
                    read_from.map_or_else(CausalContext::empty, |r| replicas[r].context());
                let timestamp = Timestamp::from_ms(ms);
                let payload = payload(&replicas, at, read_from, value);
                match policy.put(
                    &mut replicas[at],
                    NodeId(at as u64),
                    &context,
                    payload,
                    timestamp,
                    max_siblings,
                ) {
                    Ok(dot) => accepted.push(Accepted {
                        dot,
                        context,
                        timestamp,
                    }),
                    Err(Error::TooManySiblings { .. }) => {}
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            Step::Gossip { from, to } => {
                let other = replicas[from].clone();
                policy.merge(&mut replicas[to], &other);
            }
        }
    }
    (replicas, accepted)
}

/// Every replica merges every replica's object, starting at a different
/// one and merging some twice; all must end equal. Returns the result.
fn exchange(policy: &ConflictPolicy, replicas: &[Object]) -> Result<Object, TestCaseError> {
    let n = replicas.len();
    let mut views = replicas.to_vec();
    for (i, view) in views.iter_mut().enumerate() {
        for k in 0..2 * n {
            let src = (i + k * (i + 1)) % n;
            policy.merge(view, &replicas[src]);
        }
        for other in replicas {
            policy.merge(view, other);
        }
    }
    for v in &views[1..] {
        prop_assert_eq!(v, &views[0]);
    }
    Ok(views.swap_remove(0))
}

fn raw(_: &[Object], _: usize, _: Option<usize>, v: u8) -> Payload {
    Payload::Value(vec![v])
}

/// The PN-counter state an object resolves to (zero when absent).
fn counter_of(policy: &ConflictPolicy, obj: &Object) -> PnCounter {
    match policy.resolve(obj, &Resolvers::new(), 1 << 20) {
        Ok(Resolved::Value(bytes)) => codec::decode(&bytes, 1 << 20).unwrap_or_default(),
        _ => PnCounter::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Siblings: replicas converge, and what survives is exactly the
    /// accepted writes that no later write's context covered: nothing is
    /// lost that a client did not knowingly overwrite.
    #[test]
    fn siblings_converge_and_lose_nothing(steps in arb_steps(), cap in 1usize..6) {
        let policy = ConflictPolicy::Siblings;
        let (replicas, accepted) = run(&policy, &steps, cap, raw);
        let merged = exchange(&policy, &replicas)?;
        let mut expected: Vec<Dot> = accepted
            .iter()
            .filter(|w| !accepted.iter().any(|o| o.context.0.contains(w.dot)))
            .map(|w| w.dot)
            .collect();
        expected.sort();
        let got: Vec<Dot> = merged.siblings().iter().map(|s| s.dot).collect();
        prop_assert_eq!(got, expected);
        // The merged context covers every accepted write.
        for w in &accepted {
            prop_assert!(merged.context().0.contains(w.dot));
        }
    }

    /// LWW: replicas converge on the single write with the highest
    /// (timestamp, dot), whatever the contexts said.
    #[test]
    fn lww_converges_on_the_highest_timestamp(steps in arb_steps()) {
        let policy = ConflictPolicy::Lww;
        let (replicas, accepted) = run(&policy, &steps, 1, raw);
        let merged = exchange(&policy, &replicas)?;
        let winner = accepted.iter().max_by_key(|w| (w.timestamp, w.dot)).map(|w| w.dot);
        prop_assert_eq!(merged.siblings().first().map(|s| s.dot), winner);
        prop_assert!(merged.siblings().len() <= 1);
    }

    /// CRDT bucket: a coordinator resolves what its client read and its
    /// own copy, applies the increment, and writes the state back with the
    /// client's context. However writes and gossip interleave, the
    /// converged value counts every increment exactly once.
    #[test]
    fn crdt_bucket_counts_every_update(steps in arb_steps()) {
        let policy = ConflictPolicy::Crdt(CrdtKind::PnCounter);
        let mut expected = 0i128;
        let (replicas, _) = run(&policy, &steps, 100, |replicas, at, read_from, value| {
            let mut state = counter_of(&policy, &replicas[at]);
            if let Some(r) = read_from {
                state.merge(&counter_of(&policy, &replicas[r]));
            }
            let by = value as i64 - 128;
            state.add(NodeId(at as u64), by);
            expected += by as i128;
            Payload::Value(codec::encode(&state).unwrap())
        });
        let merged = exchange(&policy, &replicas)?;
        prop_assert_eq!(counter_of(&policy, &merged).value(), expected);
    }
}
