//! Measures the membership protocol on the deterministic driver
//! (`ringkv::sim::MembershipSim`): virtual time, seeded randomness, the
//! in-process network's faults, every frame through the CBOR codec.
//!
//! 1. **Spread.** Rounds until a change (a graceful leave) reaches every
//!    node, for 10, 100 and 1000 nodes, p50 and p99 over many seeds: with
//!    relays (the default), and by rounds alone (`relay_fanout = 0`) with
//!    push-pull and with push only, against the theory for push to one
//!    random peer per round, log2 N + ln N (Pittel 1987). Synchronous
//!    rounds on a perfect network: the model the theory assumes.
//! 2. **Message sizes.** The largest frame of each kind and the bytes per
//!    node per second, in a steady cluster of 10, 100 and 1000 nodes and
//!    while a node joins the 1000.
//! 3. **Detection.** Time from a crash to the first SUSPECT anywhere and to
//!    DOWN on every live node, for phi thresholds 4, 8 and 12 at 20 nodes
//!    and 8 at 100, 1 s heartbeats, delays of 1 to 50 ms and 1% loss,
//!    nodes ticking at random phases.
//! 4. **False suspicions.** SUSPECT and DOWN events about live nodes in an
//!    hour of virtual time per seed, for the same thresholds, on a rough
//!    network (5% loss, 1 to 200 ms delay), on the same network with a
//!    2.5 s pause of a random node every minute, and on a harsh network
//!    (20% loss, 1 to 1000 ms delay).
//!
//! Run with `cargo run --release -p ringkv-bench --bin gossip`, or with
//! `--quick` for fewer seeds (`--spread-only` and `--detect-only` run one
//! half). Everything is seeded: the figures are the same on every run.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv::config::MembershipConfig;
use ringkv::net::memory::Faults;
use ringkv::sim::{MembershipSim, SimOptions};
use ringkv::{MemberEvent, MemberStatus, NodeId};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds until every node but the leaver holds it LEFT; round 1 is the
/// leaver's own push.
fn spread_rounds(n: usize, push_pull: bool, relay: usize, seed: u64) -> Option<u32> {
    let mut options = SimOptions::new(n, seed);
    options.membership.push_pull = push_pull;
    options.membership.relay_fanout = relay;
    let mut sim = MembershipSim::new(options).ok()?;
    let interval = sim.interval();
    sim.run_for(interval * 3);
    let leaver = NodeId(1 + seed % n as u64);
    sim.leave(leaver);
    for k in 1..=200u32 {
        sim.run_for(interval);
        let informed = sim
            .live_nodes()
            .into_iter()
            .filter(|&m| m != leaver)
            .all(|m| sim.status(m, leaver) == Some(MemberStatus::Left));
        if informed {
            return Some(k + 1);
        }
    }
    None
}

fn spread(seeds_for: impl Fn(usize) -> u64) {
    println!("## Spread: rounds until a leave reaches every node (synchronous rounds, fan-out 1)");
    println!();
    println!("| N | seeds | theory log2 N + ln N | relayed p50 | relayed p99 | rounds only, push p50 | push p99 | rounds only, push-pull p50 | push-pull p99 |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [10usize, 100, 1000] {
        let seeds = seeds_for(n);
        let theory = (n as f64).log2() + (n as f64).ln();
        let mut cells = Vec::new();
        for (push_pull, relay) in [(true, 3), (false, 0), (true, 0)] {
            let mut rounds: Vec<f64> = (0..seeds)
                .filter_map(|s| spread_rounds(n, push_pull, relay, s))
                .map(f64::from)
                .collect();
            assert_eq!(rounds.len() as u64, seeds, "a run did not converge");
            rounds.sort_by(f64::total_cmp);
            cells.push(format!("{} | {}", pct(&rounds, 50.0), pct(&rounds, 99.0)));
        }
        println!(
            "| {n} | {seeds} | {theory:.1} | {} | {} | {} |",
            cells[0], cells[1], cells[2]
        );
    }
    println!();
}

fn sizes() {
    println!("## Message sizes: largest frame by kind (bytes), and bytes sent per node per second");
    println!();
    println!("Defaults, perfect network, synchronous rounds; 30 s of steady state after 10 s of warm-up, then (1000 nodes) a node joining through one seed.");
    println!();
    println!("| N | gossip | gossip_reply | ping | ack | relay | sync | entries | bytes/node/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let kinds = [
        "gossip",
        "gossip_reply",
        "ping",
        "ack",
        "relay",
        "sync",
        "entries",
    ];
    let row = |label: String, sim: &MembershipSim, nodes: usize, seconds: f64| {
        let t = sim.traffic();
        let cells: Vec<String> = kinds
            .iter()
            .map(|k| {
                t.get(k)
                    .map_or("-".to_string(), |t| t.max_bytes.to_string())
            })
            .collect();
        let bytes: u64 = t.values().map(|t| t.bytes).sum();
        println!(
            "| {label} | {} | {:.0} |",
            cells.join(" | "),
            bytes as f64 / nodes as f64 / seconds
        );
    };
    for n in [10usize, 100, 1000] {
        let mut sim = MembershipSim::new(SimOptions::new(n, 1)).expect("sim");
        sim.run_for(Duration::from_secs(10));
        sim.reset_traffic();
        sim.run_for(Duration::from_secs(30));
        row(n.to_string(), &sim, n, 30.0);
        if n == 1000 {
            sim.reset_traffic();
            sim.add_joiner(NodeId(n as u64 + 1), NodeId(1))
                .expect("joiner");
            sim.run_for(Duration::from_secs(10));
            row(format!("{n}, a node joining (10 s)"), &sim, n + 1, 10.0);
            let joined = sim
                .live_nodes()
                .iter()
                .all(|&m| sim.status(m, NodeId(n as u64 + 1)) == Some(MemberStatus::Alive));
            assert!(joined, "the joiner is not known everywhere");
            let knows = sim
                .machine(NodeId(n as u64 + 1))
                .map_or(0, |m| m.table().len());
            assert_eq!(knows, n + 1, "the joiner's table");
        }
    }
    println!();
}

struct Detection {
    first_suspect: f64,
    first_down: f64,
    all_down: f64,
}

fn detect_once(n: usize, threshold: f64, seed: u64) -> Option<Detection> {
    let mut options = SimOptions::new(n, seed);
    options.phases = true;
    options.membership.phi_threshold = threshold;
    options.faults = Faults {
        drop_rate: 0.01,
        delay: (Duration::from_millis(1), Duration::from_millis(50)),
        ..Faults::default()
    };
    let mut sim = MembershipSim::new(options).ok()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    sim.run_for(Duration::from_millis(60_000 + rng.random_range(0..1000)));
    let victim = NodeId(rng.random_range(1..=n as u64));
    let crash_at = sim.elapsed();
    let before = sim.log().len();
    sim.crash(victim);
    let step = Duration::from_millis(50);
    for _ in 0..(120_000 / 50) {
        sim.run_for(step);
        let live = sim.live_nodes();
        if live
            .iter()
            .all(|&m| sim.status(m, victim) == Some(MemberStatus::Down))
        {
            let first = sim.log()[before..]
                .iter()
                .find(|e| matches!(e.event, MemberEvent::Suspect { node, .. } if node == victim))?;
            let downs = sim.log()[before..]
                .iter()
                .filter(|e| matches!(e.event, MemberEvent::Down { node, .. } if node == victim))
                .map(|e| e.at);
            let first_down = downs.clone().min()?;
            let last_down = downs.max()?;
            return Some(Detection {
                first_suspect: (first.at - crash_at).as_secs_f64(),
                first_down: (first_down - crash_at).as_secs_f64(),
                all_down: (last_down - crash_at).as_secs_f64(),
            });
        }
    }
    None
}

fn detection(seeds: u64) {
    println!("## Detection: crash to first SUSPECT and to DOWN on every live node (seconds)");
    println!();
    println!("1 s heartbeats, 1.25 s acceptable pause, 100 ms minimum deviation, 5 monitors, delay 1-50 ms, 1% loss; {seeds} seeds.");
    println!();
    println!("| nodes | threshold | suspect p50 | suspect p99 | first DOWN p50 | first DOWN p99 | all DOWN p50 | all DOWN p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for (n, threshold) in [(20, 4.0), (20, 8.0), (20, 12.0), (100, 8.0)] {
        let runs: Vec<Detection> = (0..seeds)
            .filter_map(|s| detect_once(n, threshold, s))
            .collect();
        assert_eq!(runs.len() as u64, seeds, "a crash was not detected");
        let mut s: Vec<f64> = runs.iter().map(|d| d.first_suspect).collect();
        let mut f: Vec<f64> = runs.iter().map(|d| d.first_down).collect();
        let mut d: Vec<f64> = runs.iter().map(|d| d.all_down).collect();
        s.sort_by(f64::total_cmp);
        f.sort_by(f64::total_cmp);
        d.sort_by(f64::total_cmp);
        println!(
            "| {n} | {threshold} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pct(&s, 50.0),
            pct(&s, 99.0),
            pct(&f, 50.0),
            pct(&f, 99.0),
            pct(&d, 50.0),
            pct(&d, 99.0)
        );
    }
    println!();
}

/// (suspicion episodes, conviction episodes) about live nodes in an hour.
fn false_suspicions(threshold: f64, faults: Faults, pauses: bool, seed: u64) -> (usize, usize) {
    let n = 20;
    let mut options = SimOptions::new(n, seed);
    options.phases = true;
    options.membership = MembershipConfig {
        phi_threshold: threshold,
        ..MembershipConfig::default()
    };
    options.faults = faults;
    let Ok(mut sim) = MembershipSim::new(options) else {
        return (usize::MAX, usize::MAX);
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfa15e);
    for _ in 0..60 {
        if pauses {
            let node = NodeId(rng.random_range(1..=n as u64));
            sim.pause(node, Duration::from_millis(2500));
        }
        sim.run_for(Duration::from_secs(60));
    }
    // Distinct (node, incarnation) pairs: one suspicion gossiped to every
    // node is one episode, and each refutation starts a new incarnation.
    let episodes = |down: bool| {
        sim.log()
            .iter()
            .filter_map(|e| match e.event {
                MemberEvent::Suspect { node, incarnation } if !down => Some((node, incarnation)),
                MemberEvent::Down { node, incarnation } if down => Some((node, incarnation)),
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let suspicions = episodes(false);
    let convictions = episodes(true);
    (suspicions, convictions)
}

fn false_positives(seeds: u64) {
    let lossy = Faults {
        drop_rate: 0.05,
        delay: (Duration::from_millis(1), Duration::from_millis(200)),
        ..Faults::default()
    };
    let harsh = Faults {
        drop_rate: 0.2,
        delay: (Duration::from_millis(1), Duration::from_millis(1000)),
        ..Faults::default()
    };
    println!("## False suspicions: one hour per seed, 20 live nodes, no crash");
    println!();
    println!("\"Lossy\": 5% loss, delay 1-200 ms. \"Pauses\": the same, and a random node paused 2.5 s every minute. \"Harsh\": 20% loss, delay 1-1000 ms. Counts are episodes (distinct suspected node and incarnation, however many nodes heard of it), summed over {seeds} seeds: {seeds} hours of a 20-node cluster.");
    println!();
    println!("| threshold | lossy: SUSPECT | lossy: DOWN | pauses: SUSPECT | pauses: DOWN | harsh: SUSPECT | harsh: DOWN |");
    println!("|---|---|---|---|---|---|---|");
    for threshold in [4.0, 8.0, 12.0] {
        let mut cells = Vec::new();
        for (faults, pauses) in [(lossy, false), (lossy, true), (harsh, false)] {
            let (mut s, mut d) = (0, 0);
            for seed in 0..seeds {
                let (a, b) = false_suspicions(threshold, faults, pauses, seed);
                s += a;
                d += b;
            }
            cells.push(format!("{s} | {d}"));
        }
        println!(
            "| {threshold} | {} | {} | {} |",
            cells[0], cells[1], cells[2]
        );
    }
    println!();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let started = std::time::Instant::now();
    if std::env::args().any(|a| a == "--spread-only") {
        spread(|n| match n {
            10 => 1000,
            100 => 200,
            _ => 10,
        });
        return;
    }
    if std::env::args().any(|a| a == "--detect-only") {
        detection(50);
        false_positives(5);
        return;
    }
    if std::env::args().any(|a| a == "--detection-only") {
        detection(50);
        return;
    }
    if std::env::args().any(|a| a == "--sizes-only") {
        sizes();
        return;
    }
    if std::env::args().any(|a| a == "--false-only") {
        false_positives(5);
        return;
    }
    if quick {
        spread(|n| if n >= 1000 { 3 } else { 20 });
        sizes();
        detection(10);
        false_positives(2);
    } else {
        spread(|n| match n {
            10 => 1000,
            100 => 200,
            _ => 10,
        });
        sizes();
        detection(50);
        false_positives(5);
    }
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
