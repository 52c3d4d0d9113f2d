//! `ringkv-sim`: the deterministic cluster simulator from the command line.
//!
//! ```text
//! ringkv-sim --seeds 100000 --jobs 2        # search: run and check many seeds
//! ringkv-sim --seed 4242 --history          # replay one seed, print its history
//! ringkv-sim --seeds 500 --regression bare-node-actor   # show a checker finds a known bug
//! ```
//!
//! It prints each failing seed's violations and the command that replays
//! it as soon as the seed fails (and a progress line on stderr every 1%),
//! then one summary line with the seeds run, the failures, and the
//! speed in simulated node-seconds per wall second. Exit status 0 when
//! every seed passed, 1 when one failed, 2 on a bad flag.
//! `docs/simulation.md` says what is simulated.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Parser, ValueEnum};
use ringkv::replication::Regressions;
use ringkv::sim::check;
use ringkv::sim::cluster::ClusterSim;
use ringkv::sim::search::{search, SearchOptions};

/// A bug of an earlier version, put back on purpose.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Regression {
    /// Dots minted under the bare node id (issue [9], item A1).
    BareNodeActor,
    /// Last-writer-wins without ordering: a clock that never observes
    /// (issue [9], item A2).
    UnorderedLww,
    /// Replicas serve requests routed by a stale ring state (no ring
    /// fence).
    UnfencedRing,
    /// CRDT updates without their read at their own level (an
    /// acknowledged delete undone by the next add).
    BlindUpdate,
}

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-sim",
    about = "Run ringkv's deterministic cluster simulator"
)]
struct Args {
    /// Run this one seed (and print its history with --history).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of a search.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Worker threads for a search.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Stop after this many failing seeds (0: never).
    #[arg(long, default_value_t = 0)]
    stop_after: usize,
    /// Put back a known bug (may be given more than once).
    #[arg(long, value_enum)]
    regression: Vec<Regression>,
    /// Print the whole history of a single seed.
    #[arg(long)]
    history: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut regressions = Regressions::default();
    for r in &args.regression {
        match r {
            Regression::BareNodeActor => regressions.bare_node_actor = true,
            Regression::UnorderedLww => regressions.unordered_lww = true,
            Regression::UnfencedRing => regressions.unfenced_ring = true,
            Regression::BlindUpdate => regressions.blind_update = true,
        }
    }
    let (first, seeds) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.first, args.seeds),
    };
    let options = SearchOptions {
        first,
        seeds,
        nodes: args.nodes,
        regressions,
        jobs: args.jobs,
        stop_after: args.stop_after,
    };
    if let (Some(seed), true) = (args.seed, args.history) {
        match ClusterSim::new(options.cluster(seed)).and_then(ClusterSim::run) {
            Ok(h) => {
                print!("{}", h.to_text());
                let violations = check::check_all(&h);
                if !violations.is_empty() {
                    println!("{}", check::report(&h, &violations));
                    return ExitCode::from(1);
                }
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("ringkv-sim: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let every = (seeds / 100).max(1);
    let result = search(&options, &|_, failure| {
        if let Some(f) = failure {
            failed.fetch_add(1, Ordering::Relaxed);
            // At once, so a long search stopped early keeps what it found.
            println!("{}", f.report);
            let _ = std::io::stdout().flush();
        }
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if n % every == 0 {
            eprintln!(
                "{n}/{seeds} seeds, {} failed",
                failed.load(Ordering::Relaxed)
            );
        }
    });
    println!(
        "{} seeds, {} failed, {} operations, {:.1} s wall, {:.0} simulated node-seconds per second",
        result.runs,
        result.failures.len(),
        result.ops,
        result.wall.as_secs_f64(),
        result.speed()
    );
    if result.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
