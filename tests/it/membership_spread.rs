//! Gossip spread on the deterministic driver, checked against theory: at
//! 100 nodes, push to one random peer per round reaches every node in
//! about log2 N + ln N = 11.2 rounds (Pittel); the bound is 1.5
//! times that. News is relayed at once to three peers by default, which
//! reaches everyone within the round the news was made; without relays,
//! the news that every round's gossip and every ping carries must still
//! spread within the bound. The bench binary `gossip` measures the
//! distribution over many seeds (docs/membership.md).

use ringkv::sim::{MembershipSim, SimOptions};
use ringkv::{MemberStatus, NodeId};

fn rounds(n: usize, push_pull: bool, relay_fanout: usize, seed: u64) -> u32 {
    let mut options = SimOptions::new(n, seed);
    options.membership.push_pull = push_pull;
    options.membership.relay_fanout = relay_fanout;
    let mut sim = MembershipSim::new(options).unwrap();
    let interval = sim.interval();
    sim.run_for(interval * 3);
    let leaver = NodeId(1 + seed % n as u64);
    sim.leave(leaver);
    for k in 1..=60 {
        sim.run_for(interval);
        if sim
            .live_nodes()
            .into_iter()
            .filter(|&m| m != leaver)
            .all(|m| sim.status(m, leaver) == Some(MemberStatus::Left))
        {
            return k + 1;
        }
    }
    panic!("seed {seed}: the leave did not reach every node in 60 rounds");
}

#[test]
fn spread_at_100_nodes_is_within_bounds_of_theory() {
    let n = 100;
    let theory = (n as f64).log2() + (n as f64).ln();
    let sorted = |push_pull, relay| {
        let mut v: Vec<u32> = (0..8).map(|s| rounds(n, push_pull, relay, s)).collect();
        v.sort_unstable();
        v
    };
    let relayed = sorted(true, 3);
    let push = sorted(false, 0);
    let push_pull = sorted(true, 0);
    eprintln!("theory {theory:.1}; relayed {relayed:?}; rounds only: push {push:?}, push-pull {push_pull:?}");
    // Relayed at once: every node knows by the end of the leave's round
    // (the count includes the round of the leave itself).
    assert!(relayed.iter().all(|&r| r <= 2), "{relayed:?}");
    for (name, v) in [("push", &push), ("push-pull", &push_pull)] {
        let worst = f64::from(v[v.len() - 1]);
        assert!(
            worst <= 1.5 * theory,
            "{name}: {v:?} against theory {theory:.1}"
        );
    }
    // Without relays it does take rounds: the relays are what makes it fast.
    assert!(push[push.len() / 2] > 2, "{push:?}");
}
