//! Gossip spread on the deterministic driver, checked against theory: at
//! 100 nodes, a change (a graceful leave) reaches every node in about
//! log2 N + ln N = 11.2 rounds with push to one random peer (Pittel), and
//! in fewer with push-pull. The bounds are generous (the bench binary
//! `gossip` measures the distribution over many seeds; see
//! docs/membership.md), so this only fails if spreading is broken, not if
//! it is a round slower.

use ringkv::sim::{MembershipSim, SimOptions};
use ringkv::{MemberStatus, NodeId};

fn rounds(n: usize, push_pull: bool, seed: u64) -> u32 {
    let mut options = SimOptions::new(n, seed);
    options.membership.push_pull = push_pull;
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
    let mut push: Vec<u32> = (0..8).map(|s| rounds(n, false, s)).collect();
    let mut push_pull: Vec<u32> = (0..8).map(|s| rounds(n, true, s)).collect();
    push.sort_unstable();
    push_pull.sort_unstable();
    let median = |v: &[u32]| f64::from(v[v.len() / 2]);
    eprintln!("theory {theory:.1}; push {push:?}; push-pull {push_pull:?}");
    assert!(
        (0.6 * theory..=1.5 * theory).contains(&median(&push)),
        "push median {} against theory {theory:.1}",
        median(&push)
    );
    assert!(
        median(&push_pull) <= theory,
        "push-pull median {} should beat push's theory {theory:.1}",
        median(&push_pull)
    );
    assert!(f64::from(push[push.len() - 1]) <= 2.0 * theory);
}
