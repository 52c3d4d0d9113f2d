//! Quorum reads see every write acknowledged before they began, with
//! every option left to the defaults, on five real `ringkv-node`
//! processes while partitions (the opt-in `BlockOutbound` fault) come and
//! go.
//!
//! The claim (docs/replication.md): with the default `r = w = QUORUM` of
//! `n = 3`, every read overlaps every acknowledged write on a replica, so
//! a read that began after a write was acknowledged sees it. That holds
//! for strict quorums (only a key's primaries count); a sloppy quorum may
//! count fallbacks, and a read through the other side of a partition then
//! misses the write. Every request here is sent with default options (the
//! Rust client's plain `counter_add`, `counter_get`, `put`, `get`, with one
//! attempt per request so that every failure is seen), so the test checks
//! that the default is a strict quorum. (With `sloppy_quorum: false` set
//! on both buckets, the same test passes on the code that still defaults
//! to sloppy quorums.) The counter bucket is
//! set up from the nodes' default properties with only its policy
//! changed; the register bucket is never set up.
//!
//! Workload: four client tasks, each owning one PN-Counter key and one
//! register key (a `Siblings` bucket whose every write carries the
//! context of the client's last successful operation on the key, so each
//! write replaces the ones before), each issuing a random sequence of
//! adds, counter reads, register writes and register reads, each through
//! a random node. Meanwhile the seed's schedule cuts a minority of one or
//! two nodes from the rest, both ways, holds it, moves it, and heals.
//!
//! The check, on every successful read: a counter read is at least the sum
//! of the adds its client had acknowledged before the read began; a
//! register read holds the last value its client had acknowledged or a
//! later one. A write that failed has an unknown outcome and may or may
//! not show up. After the schedule, the cluster is healed and every key
//! is read through every node, under the same check.
//!
//! The bug this guards against: with sloppy quorum the default, a client
//! writing through the minority is acknowledged by fallbacks there, and
//! its next read through the majority misses the write.
//!
//! Seeds: CI runs seed 1 (`RINGKV_SEEDS`, `RINGKV_SEED` as in
//! `tests/support/seeds.rs`; each seed's keys are its own, on one
//! cluster). A failure names the seed, the client, the key, the
//! operation's index, what was expected and what was read, with the
//! client's recent history and the partitions so far.

use crate::support::cluster;
use crate::support::partitions;
use crate::support::seeds;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::Cluster;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use ringkv::client::Client;
use ringkv::crdt::CrdtKind;
use ringkv::protocol::BucketInfo;
use ringkv::ConflictPolicy;
use seeds::History;

const TEST_LIMIT: Duration = Duration::from_secs(600);
const CI_SEEDS: &[u64] = &[1];
const NODES: u64 = 5;
const CLIENTS: usize = 4;
const COUNTERS: &[u8] = b"ryw-counter";
const REGISTERS: &[u8] = b"ryw-register";
const SAMPLES: usize = 5;

/// One client's keys and what it knows of them.
struct Checker {
    id: usize,
    seed: u64,
    counter_key: Vec<u8>,
    register_key: Vec<u8>,
    acked_sum: i64,
    unknown_sum: i64,
    acked_index: Option<u64>,
    context: Option<Vec<u8>>,
    ops: u64,
    history: History,
}

#[derive(Default)]
struct Outcome {
    counter_reads: u64,
    register_reads: u64,
    counter_misses: u64,
    register_misses: u64,
    writes_acked: u64,
    writes_failed: u64,
    reads_failed: u64,
    misses: Vec<String>,
}

impl Outcome {
    fn summary(&self) -> String {
        format!(
            "{} counter reads ({} missed an acknowledged add), {} register reads ({} missed an \
             acknowledged write); {} writes acknowledged, {} failed (outcome unknown); {} reads failed",
            self.counter_reads,
            self.counter_misses,
            self.register_reads,
            self.register_misses,
            self.writes_acked,
            self.writes_failed,
            self.reads_failed
        )
    }

    fn absorb(&mut self, other: Outcome) {
        self.counter_reads += other.counter_reads;
        self.register_reads += other.register_reads;
        self.counter_misses += other.counter_misses;
        self.register_misses += other.register_misses;
        self.writes_acked += other.writes_acked;
        self.writes_failed += other.writes_failed;
        self.reads_failed += other.reads_failed;
        for m in other.misses {
            if self.misses.len() < SAMPLES {
                self.misses.push(m);
            }
        }
    }
}

type Schedule = Arc<Mutex<Vec<String>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_reads_see_acknowledged_writes_with_default_options() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = Cluster::start_with(NODES as usize, &["--allow-fault-injection"]).await;
        let clients = partitions::clients(&cluster, NODES).await;
        assert!(
            partitions::wait_whole(&clients).await,
            "the cluster did not form\n{}",
            cluster.logs()
        );
        let defaults = clients[0].bucket(COUNTERS).await.expect("bucket props");
        let props = BucketInfo {
            policy: ConflictPolicy::Crdt(CrdtKind::PnCounter),
            ..defaults
        };
        clients[0].set_bucket(COUNTERS, props.clone()).await.unwrap();
        let spread = cluster::wait_until(partitions::SETTLE, || async {
            for c in &clients {
                if c.bucket(COUNTERS).await.ok().as_ref() != Some(&props) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(spread, "the counter bucket's properties did not spread");

        let mut failed = Vec::new();
        for seed in seeds::seeds(CI_SEEDS) {
            let started = Instant::now();
            let (outcome, schedule) = run(&cluster, &clients, seed).await;
            println!(
                "seed {seed}: {} ({:?})",
                outcome.summary(),
                started.elapsed()
            );
            if outcome.counter_misses + outcome.register_misses > 0 {
                failed.push(format!(
                    "seed {seed} (replay with RINGKV_SEED={seed}): {}\npartitions:\n  {}\nfirst misses:\n{}",
                    outcome.summary(),
                    schedule.join("\n  "),
                    outcome.misses.join("\n")
                ));
            }
        }
        assert!(
            failed.is_empty(),
            "with default options, quorum reads missed acknowledged writes:\n{}",
            failed.join("\n")
        );
    })
    .await;
}

async fn run(cluster: &Cluster, clients: &[Client], seed: u64) -> (Outcome, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let schedule: Schedule = Arc::default();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let checker = Checker {
            id,
            seed,
            counter_key: format!("s{seed}counter{id}").into_bytes(),
            register_key: format!("s{seed}register{id}").into_bytes(),
            acked_sum: 0,
            unknown_sum: 0,
            acked_index: None,
            context: None,
            ops: 0,
            history: History::new(40),
        };
        tasks.push(tokio::spawn(client_loop(
            checker,
            clients.to_vec(),
            Arc::clone(&stop),
            Arc::clone(&schedule),
        )));
    }
    partition_schedule(cluster, clients, seed, &schedule).await;
    stop.store(true, Ordering::Release);
    let mut outcome = Outcome::default();
    let mut checkers = Vec::new();
    for t in tasks {
        let (checker, seen) = t.await.expect("a client task panicked");
        outcome.absorb(seen);
        checkers.push(checker);
    }
    partitions::heal(clients).await;
    assert!(
        partitions::wait_whole(clients).await,
        "seed {seed}: the cluster did not become whole after the heal\n{}",
        cluster.logs()
    );
    schedule
        .lock()
        .unwrap()
        .push("end: healed, every node sees every other alive".into());
    for checker in &mut checkers {
        for via in 1..=NODES {
            let mut seen = Outcome::default();
            let c = &clients[(via - 1) as usize];
            read_counter(checker, c, via, &schedule, &mut seen).await;
            read_register(checker, c, via, &schedule, &mut seen).await;
            outcome.absorb(seen);
        }
    }
    let schedule = schedule.lock().unwrap().clone();
    (outcome, schedule)
}

/// The seed's partitions: a few phases, each a minority cut off both ways
/// (or a heal), held for a random while after the sides see each other
/// down.
async fn partition_schedule(cluster: &Cluster, clients: &[Client], seed: u64, schedule: &Schedule) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let start = Instant::now();
    let phases = rng.random_range(4..=6);
    for phase in 1..=phases {
        let at = start.elapsed().as_millis();
        // A heal now and then, never twice in a row at the start.
        let line = if phase > 1 && rng.random_bool(0.25) {
            partitions::heal(clients).await;
            let whole = partitions::wait_whole(clients).await;
            format!("phase {phase} at {at} ms: healed (whole: {whole})")
        } else {
            let all: Vec<u64> = (1..=NODES).collect();
            let size = if rng.random_bool(0.3) { 1 } else { 2 };
            let mut small: Vec<u64> = all.choose_multiple(&mut rng, size).copied().collect();
            small.sort_unstable();
            let large: Vec<u64> = all.iter().copied().filter(|n| !small.contains(n)).collect();
            partitions::heal(clients).await;
            partitions::split(clients, &small, &large).await;
            let split = partitions::wait_split(clients, &small, &large).await;
            assert!(
                split,
                "seed {seed}: the sides {small:?} and {large:?} did not see each other down\n{}",
                cluster.logs()
            );
            format!("phase {phase} at {at} ms: partition {small:?} | {large:?}")
        };
        schedule.lock().unwrap().push(line);
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..=3000))).await;
    }
}

async fn client_loop(
    mut checker: Checker,
    clients: Vec<Client>,
    stop: Arc<AtomicBool>,
    schedule: Schedule,
) -> (Checker, Outcome) {
    let mut rng = StdRng::seed_from_u64(
        checker
            .seed
            .wrapping_mul(7919)
            .wrapping_add(checker.id as u64),
    );
    let mut seen = Outcome::default();
    while !stop.load(Ordering::Acquire) {
        let via = rng.random_range(1..=NODES);
        let c = &clients[(via - 1) as usize];
        match rng.random_range(0..4) {
            0 => add(&mut checker, c, via, rng.random_range(1..=5), &mut seen).await,
            1 => read_counter(&mut checker, c, via, &schedule, &mut seen).await,
            2 => write_register(&mut checker, c, via, &mut seen).await,
            _ => read_register(&mut checker, c, via, &schedule, &mut seen).await,
        }
    }
    (checker, seen)
}

async fn add(checker: &mut Checker, c: &Client, via: u64, by: i64, seen: &mut Outcome) {
    checker.ops += 1;
    let line = match c.counter_add(COUNTERS, &checker.counter_key, by).await {
        Ok(r) => {
            checker.acked_sum += by;
            seen.writes_acked += 1;
            format!(
                "add {by} via {via}: acked by {:?}, fallbacks {:?}; acknowledged sum now {}",
                r.receipt.answered, r.receipt.fallbacks, checker.acked_sum
            )
        }
        Err(e) => {
            checker.unknown_sum += by;
            seen.writes_failed += 1;
            format!("add {by} via {via}: failed, outcome unknown: {e}")
        }
    };
    checker
        .history
        .record(format!("op {}: {line}", checker.ops));
}

async fn read_counter(
    checker: &mut Checker,
    c: &Client,
    via: u64,
    schedule: &Schedule,
    seen: &mut Outcome,
) {
    checker.ops += 1;
    let must = checker.acked_sum;
    match c.counter_get(COUNTERS, &checker.counter_key).await {
        Ok(r) => {
            seen.counter_reads += 1;
            checker.history.record(format!(
                "op {}: read counter via {via}: {} from {:?} (fallbacks {:?}); acknowledged before: {must}",
                checker.ops, r.value, r.receipt.answered, r.receipt.fallbacks
            ));
            if r.value < must {
                seen.counter_misses += 1;
                if seen.misses.len() < SAMPLES {
                    let what = format!(
                        "counter {:?}: read {}, expected at least {must} (the sum of the adds \
                         acknowledged before the read began; {} more of unknown outcome)",
                        String::from_utf8_lossy(&checker.counter_key),
                        r.value,
                        checker.unknown_sum
                    );
                    seen.misses.push(miss(checker, schedule, &what));
                }
            }
        }
        Err(e) => {
            seen.reads_failed += 1;
            checker.history.record(format!(
                "op {}: read counter via {via}: failed: {e}",
                checker.ops
            ));
        }
    }
}

async fn write_register(checker: &mut Checker, c: &Client, via: u64, seen: &mut Outcome) {
    checker.ops += 1;
    let index = checker.ops;
    let value = format!("c{}-{index}", checker.id).into_bytes();
    let context = checker.context.clone();
    let line = match c
        .put(REGISTERS, &checker.register_key, &value, context.as_deref())
        .await
    {
        Ok(w) => {
            checker.acked_index = Some(index);
            checker.context = Some(w.context);
            seen.writes_acked += 1;
            format!(
                "write register #{index} via {via}: acked by {:?}, fallbacks {:?}",
                w.receipt.answered, w.receipt.fallbacks
            )
        }
        Err(e) => {
            seen.writes_failed += 1;
            format!("write register #{index} via {via}: failed, outcome unknown: {e}")
        }
    };
    checker
        .history
        .record(format!("op {}: {line}", checker.ops));
}

fn index_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .split('-')
        .nth(1)?
        .parse()
        .ok()
}

async fn read_register(
    checker: &mut Checker,
    c: &Client,
    via: u64,
    schedule: &Schedule,
    seen: &mut Outcome,
) {
    checker.ops += 1;
    let must = checker.acked_index;
    match c.get(REGISTERS, &checker.register_key).await {
        Ok(r) => {
            seen.register_reads += 1;
            let mut values: Vec<Vec<u8>> = r
                .siblings
                .iter()
                .filter_map(|s| s.value.as_ref().map(|v| v.to_vec()))
                .collect();
            values.extend(r.value.clone());
            let indexes: Vec<u64> = values.iter().filter_map(|v| index_of(v)).collect();
            let newest = indexes.iter().copied().max();
            checker.history.record(format!(
                "op {}: read register via {via}: #{indexes:?} from {:?} (fallbacks {:?}); acknowledged before: #{must:?}",
                checker.ops, r.receipt.answered, r.receipt.fallbacks
            ));
            // The next write replaces everything this read saw.
            checker.context = Some(r.context);
            if let Some(must) = must {
                if newest.is_none_or(|n| n < must) {
                    seen.register_misses += 1;
                    if seen.misses.len() < SAMPLES {
                        let what = format!(
                            "register {:?}: read #{indexes:?}, expected #{must} (acknowledged \
                             before the read began) or a later write",
                            String::from_utf8_lossy(&checker.register_key)
                        );
                        seen.misses.push(miss(checker, schedule, &what));
                    }
                }
            }
        }
        Err(e) => {
            seen.reads_failed += 1;
            checker.history.record(format!(
                "op {}: read register via {via}: failed: {e}",
                checker.ops
            ));
        }
    }
}

fn miss(checker: &Checker, schedule: &Schedule, what: &str) -> String {
    let faults = schedule.lock().unwrap().join("; ");
    format!(
        "seed {}, client {}, op {}: {what}\n  partitions so far: {faults}\n  client {} history:\n{}",
        checker.seed,
        checker.id,
        checker.ops,
        checker.id,
        checker.history.dump()
    )
}
