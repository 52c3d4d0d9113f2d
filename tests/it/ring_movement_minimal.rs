//! Property tests of the ring: movement on join and leave is minimal, the
//! move plan says exactly what moves, and preference lists hold N distinct
//! nodes.

use proptest::prelude::*;
use ringkv::ring::{claim_join, claim_leave, key_token, MovePlan, ReplicaRole, Ring, Token};
use ringkv::NodeId;

const VNODES: usize = 64;

fn ring_of(nodes: u64) -> Ring {
    let mut ring = Ring::empty();
    for id in 1..=nodes {
        ring = claim_join(&ring, NodeId(id), VNODES).unwrap();
    }
    ring
}

fn keys(seed: u64, count: usize) -> Vec<Token> {
    (0..count)
        .map(|i| key_token(b"bucket", format!("key-{seed}-{i}").as_bytes()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Adding one node to a ring of `nodes` holding K keys moves about
    /// K/(nodes+1) keys, all to the new node, and the plan names exactly
    /// those keys.
    #[test]
    fn join_moves_about_k_over_n_plus_one(nodes in 1u64..16, seed in any::<u64>()) {
        let k = 4000;
        let old = ring_of(nodes);
        let new = claim_join(&old, NodeId(100), VNODES).unwrap();
        let plan = MovePlan::between(&old, &new);
        let mut moved = 0usize;
        for token in keys(seed, k) {
            let (a, b) = (old.owner(token).unwrap(), new.owner(token).unwrap());
            if a != b {
                moved += 1;
                prop_assert_eq!(b, NodeId(100), "a key moved between two old nodes");
                let m = plan.move_of(token).expect("a moved key is in the plan");
                prop_assert_eq!((m.from, m.to), (a, b));
            } else {
                prop_assert!(plan.move_of(token).is_none());
            }
        }
        let expected = k as f64 / (nodes + 1) as f64;
        // Binomial noise at K=4000 is a few per cent; the claim itself is
        // within one per cent of 1/(n+1).
        prop_assert!((moved as f64 - expected).abs() < 0.15 * expected + 30.0,
            "moved {} expected {}", moved, expected);
    }

    /// A leave moves only the leaving node's keys, about K/nodes of them.
    #[test]
    fn leave_moves_only_the_leavers_keys(nodes in 2u64..16, leaver in 1u64..16, seed in any::<u64>()) {
        let leaver = NodeId(1 + (leaver - 1) % nodes);
        let k = 4000;
        let old = ring_of(nodes);
        let new = claim_leave(&old, leaver).unwrap();
        let plan = MovePlan::between(&old, &new);
        let mut moved = 0usize;
        for token in keys(seed, k) {
            let (a, b) = (old.owner(token).unwrap(), new.owner(token).unwrap());
            if a != b {
                moved += 1;
                prop_assert_eq!(a, leaver);
                prop_assert_eq!(plan.move_of(token).map(|m| (m.from, m.to)), Some((a, b)));
            } else {
                prop_assert_ne!(a, leaver);
            }
        }
        let expected = k as f64 / nodes as f64;
        prop_assert!((moved as f64 - expected).abs() < 0.15 * expected + 30.0,
            "moved {} expected {}", moved, expected);
        prop_assert!(new.balance() <= 1.05 || nodes < 3, "balance {}", new.balance());
    }

    /// Preference lists hold min(N, members) distinct nodes, the owner
    /// first; under a liveness view they hold only healthy nodes, every
    /// fallback stands for a down primary, and every down primary that can
    /// be replaced is.
    #[test]
    fn preference_lists_hold_n_distinct_nodes(
        nodes in 1u64..12,
        n in 1usize..6,
        token in any::<u64>(),
        down_mask in any::<u16>(),
    ) {
        let ring = ring_of(nodes);
        let token = Token(token);
        let list = ring.preference_list(token, n);
        prop_assert_eq!(list.len(), n.min(nodes as usize));
        let mut distinct = list.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(distinct.len(), list.len());
        prop_assert_eq!(list[0], ring.owner(token).unwrap());

        let is_up = |node: NodeId| down_mask & (1 << (node.0 % 16)) == 0;
        let with = ring.preference_list_with(token, n, is_up);
        let healthy = (1..=nodes).filter(|&i| is_up(NodeId(i))).count();
        prop_assert_eq!(with.len(), n.min(healthy));
        let mut seen: Vec<NodeId> = with.iter().map(|r| r.node).collect();
        seen.sort();
        seen.dedup();
        prop_assert_eq!(seen.len(), with.len());
        for r in &with {
            prop_assert!(is_up(r.node));
            match r.role {
                ReplicaRole::Primary => prop_assert!(list.contains(&r.node)),
                ReplicaRole::Fallback { owner } => {
                    prop_assert!(list.contains(&owner) && !is_up(owner));
                    prop_assert!(!list.contains(&r.node));
                }
            }
        }
    }
}

#[test]
fn balance_stays_within_five_percent_through_churn() {
    let mut ring = ring_of(10);
    for round in 0..20u64 {
        let members: Vec<NodeId> = ring.members().into_iter().collect();
        let leaver = members[(round as usize * 7) % members.len()];
        ring = claim_leave(&ring, leaver).unwrap();
        assert!(
            ring.balance() <= 1.05,
            "round {round} leave: {}",
            ring.balance()
        );
        ring = claim_join(&ring, NodeId(100 + round), VNODES).unwrap();
        assert!(
            ring.balance() <= 1.05,
            "round {round} join: {}",
            ring.balance()
        );
    }
}
