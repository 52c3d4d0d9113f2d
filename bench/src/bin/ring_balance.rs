//! Measures the hash ring: ownership balance of claimed against random
//! tokens, keys moved on join and leave against the ideal K/(nodes+1), and
//! nanoseconds per lookup against a `BTreeMap` ring as the named peer.
//!
//! Run with `cargo run --release -p ringkv-bench --bin ring_balance`.
//! Everything is seeded, so the balance and movement figures are the same
//! on every run; the timings are not.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv::config::DEFAULT_VNODES_PER_NODE;
use ringkv::ring::{claim_join, claim_leave, key_token, random_join, random_leave, Ring, Token};
use ringkv::NodeId;

const V: usize = DEFAULT_VNODES_PER_NODE;
const SEEDS: u64 = 10;
const KEYS: usize = 100_000;

fn claimed(nodes: u64) -> Ring {
    let mut ring = Ring::empty();
    for id in 1..=nodes {
        ring = claim_join(&ring, NodeId(id), V).expect("claim");
    }
    ring
}

fn random(nodes: u64, seed: u64) -> Ring {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ring = Ring::empty();
    for id in 1..=nodes {
        ring = random_join(&ring, NodeId(id), V, &mut rng).expect("random join");
    }
    ring
}

/// Keys that change owner from `old` to `new`, and how many of them moved
/// between two nodes that are in both rings.
fn moved(old: &Ring, new: &Ring, keys: &[Token]) -> (usize, usize) {
    let (old_m, new_m) = (old.members(), new.members());
    let mut moved = 0;
    let mut between_stayers = 0;
    for &k in keys {
        let (a, b) = (old.owner(k), new.owner(k));
        if a != b {
            moved += 1;
            if let (Some(a), Some(b)) = (a, b) {
                if new_m.contains(&a) && old_m.contains(&b) {
                    between_stayers += 1;
                }
            }
        }
    }
    (moved, between_stayers)
}

fn ns_per(iterations: usize, mut f: impl FnMut(usize) -> u64) -> f64 {
    // Warm up, then time the best of five runs.
    let mut sink = 0u64;
    for i in 0..iterations / 10 {
        sink = sink.wrapping_add(f(i));
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for i in 0..iterations {
            sink = sink.wrapping_add(f(i));
        }
        best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
    }
    black_box(sink);
    best
}

fn main() {
    println!("## Ownership balance (largest share / mean), {V} tokens per node");
    println!();
    println!("| nodes | random: mean over {SEEDS} seeds | random: worst | claimed | random, n=3 replicas | claimed, n=3 replicas |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for nodes in [3u64, 10, 50] {
        let rings: Vec<Ring> = (0..SEEDS).map(|s| random(nodes, s)).collect();
        let balances: Vec<f64> = rings.iter().map(|r| r.balance()).collect();
        let mean = balances.iter().sum::<f64>() / SEEDS as f64;
        let worst = balances.iter().cloned().fold(0.0, f64::max);
        let rep = rings.iter().map(|r| r.replica_balance(3)).sum::<f64>() / SEEDS as f64;
        let c = claimed(nodes);
        println!(
            "| {nodes} | {mean:.3} | {worst:.3} | {:.3} | {rep:.3} | {:.3} |",
            c.balance(),
            c.replica_balance(3)
        );
    }

    println!();
    println!("## Keys moved, K = {KEYS} keys");
    println!();
    println!("Join: `nodes` -> `nodes+1`. Leave: `nodes+1` -> `nodes` (node 1 leaves). Ideal: K/(nodes+1).");
    println!();
    println!("| nodes | ideal | claimed join | claimed leave | random join | random leave | moved between two staying nodes |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let keys: Vec<Token> = (0..KEYS)
        .map(|i| key_token(b"bench", format!("key-{i}").as_bytes()))
        .collect();
    for nodes in [3u64, 10, 50] {
        let ideal = KEYS as f64 / (nodes + 1) as f64;
        let old = claimed(nodes);
        let joined = claim_join(&old, NodeId(1000), V).expect("join");
        let (cj, cj_bad) = moved(&old, &joined, &keys);
        let left = claim_leave(&joined, NodeId(1)).expect("leave");
        let (cl, cl_bad) = moved(&joined, &left, &keys);
        let mut rng = ChaCha8Rng::seed_from_u64(nodes);
        let rold = random(nodes, nodes);
        let rjoined = random_join(&rold, NodeId(1000), V, &mut rng).expect("join");
        let (rj, rj_bad) = moved(&rold, &rjoined, &keys);
        let rleft = random_leave(&rjoined, NodeId(1)).expect("leave");
        let (rl, rl_bad) = moved(&rjoined, &rleft, &keys);
        println!(
            "| {nodes} | {ideal:.0} | {cj} ({:.2}x) | {cl} ({:.2}x) | {rj} ({:.2}x) | {rl} ({:.2}x) | {} |",
            cj as f64 / ideal,
            cl as f64 / ideal,
            rj as f64 / ideal,
            rl as f64 / ideal,
            cj_bad + cl_bad + rj_bad + rl_bad
        );
    }

    println!();
    println!("## Lookup cost (ns per operation, best of 5 runs of 1M lookups at random tokens)");
    println!();
    println!("| nodes | vnodes | `owner` (sorted vec, binary search) | peer: `BTreeMap::range` | `preference_list(n=3)` | `key_token` (16-byte key) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let tokens: Vec<Token> = (0..1 << 20).map(|_| Token(rng.random())).collect();
    let mask = tokens.len() - 1;
    for nodes in [10u64, 50] {
        let ring = claimed(nodes);
        let tree: BTreeMap<Token, NodeId> = ring.vnodes().map(|v| (v.token, v.node)).collect();
        let first = tree.values().next().copied().unwrap_or_default();
        let owner = ns_per(1 << 20, |i| {
            ring.owner(black_box(tokens[i & mask])).map_or(0, |n| n.0)
        });
        let peer = ns_per(1 << 20, |i| {
            let t = black_box(tokens[i & mask]);
            tree.range(t..).next().map_or(first, |(_, &n)| n).0
        });
        let pref = ns_per(1 << 18, |i| {
            ring.preference_list(black_box(tokens[i & mask]), 3).len() as u64
        });
        let hash = ns_per(1 << 20, |i| {
            let key = (i as u128).to_le_bytes();
            key_token(b"users", black_box(&key)).0
        });
        println!(
            "| {nodes} | {} | {owner:.1} | {peer:.1} | {pref:.1} | {hash:.1} |",
            ring.len()
        );
    }
}
