//! `gossip_rounds(#{ nodes, seeds, relay, push_pull })`: how many gossip
//! rounds a change takes to reach every node, measured for several
//! cluster sizes on the membership simulator
//! ([`ringkv::sim::MembershipSim`]: the real membership machines on
//! virtual time, synchronous rounds, a perfect network), as the `gossip`
//! benchmark and `tests/it/membership_spread.rs` measure it.
//!
//! A run: N nodes settle for three rounds, one of them leaves gracefully,
//! and the rounds are counted until every other node holds it LEFT (the
//! round of the leave itself counts, as in the benchmark). By default
//! news is not relayed (`relay: 0`), so the count is that of rounds of
//! gossip alone, the quantity the theory (log2 N + ln N for push to one
//! random peer per round, Pittel 1987) predicts; with relays (the nodes'
//! default of 3) a change reaches everyone within two rounds.
//!
//! Everything is seeded, so a table is the same on every run. Cost grows
//! with N times the rounds: 100 nodes take a fraction of a second per
//! seed in a release build, a thousand several seconds.

use std::sync::atomic::{AtomicBool, Ordering};

use rhai::{Dynamic, Map, INT};
use ringkv::sim::{MembershipSim, SimOptions};
use ringkv::{MemberStatus, NodeId};

use crate::api::{fail, ApiResult};
use crate::table::Table;

/// The most nodes a run may have.
pub const MAX_NODES: usize = 1000;

/// A run that has not converged after this many rounds fails.
pub const MAX_ROUNDS: u32 = 200;

/// What `gossip_rounds` measures.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The cluster sizes.
    pub nodes: Vec<usize>,
    /// Seeds 0 to `seeds - 1` for each size.
    pub seeds: u64,
    /// Peers each piece of news is relayed to at once (0: rounds only).
    pub relay: usize,
    /// Push-pull gossip (the default), or push only.
    pub push_pull: bool,
}

/// The options of `gossip_rounds`, with their defaults.
pub fn params(m: &Map) -> ApiResult<Params> {
    let mut p = Params {
        nodes: vec![10, 20, 50, 100],
        seeds: 5,
        relay: 0,
        push_pull: true,
    };
    let int = |v: &Dynamic, what: &str, min: INT, max: INT| -> ApiResult<INT> {
        match v.as_int() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(fail(format!(
                "gossip_rounds: {what} must be a number from {min} to {max}, got {v}"
            ))),
        }
    };
    for (k, v) in m {
        match k.as_str() {
            "nodes" => {
                let a = v.clone().try_cast::<rhai::Array>().ok_or_else(|| {
                    fail("gossip_rounds: nodes must be an array of cluster sizes, e.g. [10, 50, 100]")
                })?;
                if a.is_empty() {
                    return Err(fail(
                        "gossip_rounds: nodes is empty: give at least one size",
                    ));
                }
                p.nodes = a
                    .iter()
                    .map(|n| int(n, "each size in nodes", 2, MAX_NODES as INT).map(|n| n as usize))
                    .collect::<ApiResult<_>>()?;
            }
            "seeds" => p.seeds = int(v, "seeds", 1, 1000)? as u64,
            "relay" => p.relay = int(v, "relay", 0, 16)? as usize,
            "push_pull" => {
                p.push_pull = v
                    .as_bool()
                    .map_err(|_| fail("gossip_rounds: push_pull must be true or false"))?
            }
            other => {
                return Err(fail(format!(
                    "gossip_rounds: unknown option {other:?}: nodes, seeds, relay, push_pull"
                )))
            }
        }
    }
    Ok(p)
}

/// Rounds until every node but the leaver holds it LEFT, in one run of
/// `n` nodes on `seed`.
pub fn rounds(n: usize, seed: u64, relay: usize, push_pull: bool) -> Result<u32, String> {
    let mut options = SimOptions::new(n, seed);
    options.membership.push_pull = push_pull;
    options.membership.relay_fanout = relay;
    let mut sim = MembershipSim::new(options).map_err(|e| e.to_string())?;
    let interval = sim.interval();
    sim.run_for(interval * 3);
    let leaver = NodeId(1 + seed % n as u64);
    sim.leave(leaver);
    for k in 1..=MAX_ROUNDS {
        sim.run_for(interval);
        let informed = sim
            .live_nodes()
            .into_iter()
            .filter(|&m| m != leaver)
            .all(|m| sim.status(m, leaver) == Some(MemberStatus::Left));
        if informed {
            return Ok(k + 1);
        }
    }
    Err(format!(
        "gossip_rounds: a leave among {n} nodes (seed {seed}) did not reach every node in {MAX_ROUNDS} rounds"
    ))
}

/// The table: one row per size, `nodes, seeds, min, p50, max, theory`
/// (p50 the lower median of the runs; theory log2 N + ln N).
pub fn measure(p: &Params, interrupt: &AtomicBool) -> ApiResult<Table> {
    let mut t = Table::new(
        format!(
            "gossip rounds until a leave reaches every node: {}, {}, {} seeds",
            if p.push_pull {
                "push-pull"
            } else {
                "push only"
            },
            match p.relay {
                0 => "no relays".to_string(),
                r => format!("news relayed to {r}"),
            },
            p.seeds
        ),
        &["nodes", "seeds", "min", "p50", "max", "theory"],
    );
    for &n in &p.nodes {
        let mut runs = Vec::new();
        for seed in 0..p.seeds {
            if interrupt.load(Ordering::Relaxed) {
                return Err(fail(crate::api::INTERRUPTED));
            }
            runs.push(rounds(n, seed, p.relay, p.push_pull).map_err(fail)?);
        }
        runs.sort_unstable();
        let theory = (n as f64).log2() + (n as f64).ln();
        t.push(vec![
            Dynamic::from_int(n as INT),
            Dynamic::from_int(p.seeds as INT),
            Dynamic::from_int(runs[0] as INT),
            Dynamic::from_int(runs[(runs.len() - 1) / 2] as INT),
            Dynamic::from_int(runs[runs.len() - 1] as INT),
            Dynamic::from_float(theory),
        ]);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_news_takes_the_round_of_the_change_and_gossip_alone_takes_more() {
        // Relayed at once to 3 peers: every node knows by the end of the
        // leave's own round, which counts (as in tests/it/membership_spread.rs).
        for seed in 0..3 {
            assert_eq!(rounds(30, seed, 3, true).unwrap(), 2, "seed {seed}");
        }
        // Push alone at 100 nodes: more than that, within 1.5 x theory.
        let theory = 100f64.log2() + 100f64.ln();
        let r = rounds(100, 1, 0, false).unwrap();
        assert!(r > 2 && f64::from(r) <= 1.5 * theory, "{r}");
        // Seeded: the same every run.
        assert_eq!(rounds(100, 1, 0, false).unwrap(), r);
    }

    #[test]
    fn the_table_has_a_row_per_size_in_order() {
        let p = Params {
            nodes: vec![10, 40],
            seeds: 3,
            relay: 0,
            push_pull: true,
        };
        let t = measure(&p, &AtomicBool::new(false)).unwrap();
        assert_eq!(t.columns, ["nodes", "seeds", "min", "p50", "max", "theory"]);
        assert_eq!(t.rows.len(), 2);
        for (row, n) in t.rows.iter().zip([10, 40]) {
            let int = |k: &str| row[k].as_int().unwrap();
            assert_eq!(int("nodes"), n);
            assert_eq!(int("seeds"), 3);
            assert!(int("min") >= 2 && int("min") <= int("p50") && int("p50") <= int("max"));
            let theory = row["theory"].as_float().unwrap();
            assert!((theory - ((n as f64).log2() + (n as f64).ln())).abs() < 1e-9);
        }
        // Stopped by Ctrl-C.
        let e = measure(&p, &AtomicBool::new(true)).unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");
    }

    #[test]
    fn options_are_checked() {
        let mut m = Map::new();
        assert_eq!(params(&m).unwrap().nodes, vec![10, 20, 50, 100]);
        m.insert(
            "nodes".into(),
            Dynamic::from_array(vec![Dynamic::from_int(1001)]),
        );
        assert!(params(&m)
            .unwrap_err()
            .to_string()
            .contains("from 2 to 1000"));
        m.insert("nodes".into(), Dynamic::from_array(vec![]));
        assert!(params(&m).unwrap_err().to_string().contains("empty"));
        let mut m = Map::new();
        m.insert("seeds".into(), Dynamic::from_int(0));
        assert!(params(&m).unwrap_err().to_string().contains("seeds"));
        let mut m = Map::new();
        m.insert("push_pull".into(), Dynamic::from("yes"));
        assert!(params(&m)
            .unwrap_err()
            .to_string()
            .contains("true or false"));
    }
}
