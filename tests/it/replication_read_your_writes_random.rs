//! Quorum reads see every write acknowledged before they began, with the
//! bucket defaults, while partitions and crashes come and go: a
//! randomized checker on an embedded 5-node cluster (in-process network,
//! LSM engines so that a crashed node restarts with its data), replayed by
//! seed.
//!
//! The claim (docs/replication.md): with `r + w > n` (here `QUORUM` and
//! `QUORUM` of `n = 3`, asked for explicitly) every read overlaps every
//! acknowledged write on a replica, so a read that began after a write was
//! acknowledged sees it. That holds for strict quorums, which count only a
//! key's primaries; a sloppy quorum may count fallbacks, and a read through
//! the other side of a partition then misses the write. So this checker
//! leaves `sloppy_quorum` out of every request's options: it checks that
//! the default is a strict quorum. The counter bucket is set up from the
//! nodes' default properties with only its policy changed; the register
//! bucket is never set up at all. A second test, the control, runs the
//! same workload asking for `sloppy_quorum: false` in every request: it
//! passes on the code that still defaults to sloppy quorums, which shows
//! the checker itself can pass.
//!
//! Workload: four client threads, each owning one PN-Counter key and one
//! register key (a `Siblings` bucket whose every write carries the
//! context of the client's last successful operation on it, so each write
//! replaces the ones before), each issuing a random sequence of adds,
//! counter reads, register writes and register reads, each through a
//! random running node. Meanwhile the seed's fault schedule partitions the
//! cluster (a minority of one or two nodes cut off, both ways), kills a
//! node and restarts it on its data directory, and heals.
//!
//! The check, on every successful read: a counter read is at least the sum
//! of the adds its client had acknowledged before the read began; a
//! register read holds the last value its client had acknowledged or a
//! later one (values are numbered per key). A write that failed
//! (`Unavailable`, `Timeout`, a killed node) has an unknown outcome: it may
//! or may not show up, and both are allowed. Reads that fail are not
//! checked. After the schedule, the cluster is healed and every key is
//! read through every node, under the same check.
//!
//! The bug this guards against: with sloppy quorum the default, a client
//! writing through one side of a partition is acknowledged by fallbacks,
//! and its next read through the other side reads a quorum of primaries
//! that never got the write. (A review saw 2,146 counter and 2,596 register
//! reads miss a write that way, and none with sloppy quorum off.)
//!
//! `RINGKV_SEEDS=100` runs seeds 1 to 100 too; `RINGKV_SEED=n` replays
//! seed n (the fault schedule and each client's choices; thread timing
//! still varies). A failure names the seed, the client, the key, the
//! operation's index, what was expected and what was read, with the
//! client's recent history and the fault schedule so far.

use crate::support::embedded;
use crate::support::seeds;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use ringkv::crdt::CrdtKind;
use ringkv::embedded::{Cluster, EngineKind};
use ringkv::protocol::{Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::ConflictPolicy;

use embedded::{buf, exec};
use seeds::History;

const CI_SEEDS: &[u64] = &[1, 2, 3];
const NODES: u64 = 5;
const CLIENTS: usize = 4;
const COUNTERS: &[u8] = b"ryw-counter";
const REGISTERS: &[u8] = b"ryw-register";
/// Per-request timeout: short, so that a request stuck on a partitioned
/// replica the failure detector has not yet convicted does not stall its
/// client for the bucket's 5 s.
const REQUEST_TIMEOUT_MS: u64 = 1500;
/// Misses reported in full per seed.
const SAMPLES: usize = 5;

#[test]
fn quorum_reads_see_acknowledged_writes_with_default_options() {
    check(CI_SEEDS, None);
}

/// The control: the same workload with `sloppy_quorum: false` in every
/// request's options, which passes today (and shows that the checker can
/// pass). One seed in CI.
#[test]
fn quorum_reads_see_acknowledged_writes_with_strict_quorums_asked_for() {
    check(&CI_SEEDS[..1], Some(false));
}

/// Runs the seeds with `sloppy` in every request's options (`None`: left
/// out, the bucket default) and fails with the first failing seed's report.
fn check(ci: &[u64], sloppy: Option<bool>) {
    let started = Instant::now();
    let seeds = seeds::seeds(ci);
    let mut failed = Vec::new();
    for &seed in &seeds {
        let outcome = run(seed, sloppy);
        println!(
            "sloppy_quorum {sloppy:?}, seed {seed}: {}",
            outcome.summary()
        );
        if !outcome.misses.is_empty() {
            eprintln!("{}", outcome.report(seed));
            failed.push((seed, outcome));
        }
    }
    println!(
        "{} seeds in {:?}, {} failed",
        seeds.len(),
        started.elapsed(),
        failed.len()
    );
    if let Some((seed, first)) = failed.first() {
        let which: Vec<u64> = failed.iter().map(|(s, _)| *s).collect();
        panic!(
            "with sloppy_quorum {sloppy:?} in the options, reads missed acknowledged writes on {} \
             of {} seeds: {which:?} (replay one with RINGKV_SEED=<seed>)\n\nfirst failure:\n{}",
            failed.len(),
            seeds.len(),
            first.report(*seed)
        );
    }
}

/// One client's keys and what it knows of them.
struct Client {
    id: usize,
    counter_key: Vec<u8>,
    register_key: Vec<u8>,
    /// Sum of acknowledged adds.
    acked_sum: i64,
    /// Sum of adds whose outcome is unknown.
    unknown_sum: i64,
    /// Index of the last acknowledged register write.
    acked_index: Option<u64>,
    /// The context to write the register with next.
    context: Option<Vec<u8>>,
    /// Operations issued.
    ops: u64,
    /// `sloppy_quorum` in every request's options.
    sloppy: Option<bool>,
    history: History,
}

/// What a seed's run saw.
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
    schedule: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    fn summary(&self) -> String {
        format!(
            "{} counter reads ({} missed an acknowledged add), {} register reads ({} missed an \
             acknowledged write); {} writes acknowledged, {} failed (outcome unknown); {} reads \
             failed; {:?}",
            self.counter_reads,
            self.counter_misses,
            self.register_reads,
            self.register_misses,
            self.writes_acked,
            self.writes_failed,
            self.reads_failed,
            self.elapsed
        )
    }

    fn report(&self, seed: u64) -> String {
        format!(
            "seed {seed} (replay with RINGKV_SEED={seed}): {}\nfault schedule:\n  {}\nfirst misses:\n{}",
            self.summary(),
            self.schedule.join("\n  "),
            self.misses.join("\n")
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

fn write_options(sloppy: Option<bool>) -> WriteOptions {
    WriteOptions {
        w: Some(Consistency::Quorum),
        sloppy_quorum: sloppy,
        timeout_ms: Some(REQUEST_TIMEOUT_MS),
    }
}

fn read_options(sloppy: Option<bool>) -> ReadOptions {
    ReadOptions {
        r: Some(Consistency::Quorum),
        repair: None,
        sloppy_quorum: sloppy,
        timeout_ms: Some(REQUEST_TIMEOUT_MS),
    }
}

/// The register value written by `client` as its `index`-th write.
fn register_value(client: usize, index: u64) -> Vec<u8> {
    format!("c{client}-{index}").into_bytes()
}

/// The index a register value carries.
fn index_of(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .split('-')
        .nth(1)?
        .parse()
        .ok()
}

fn run(seed: u64, sloppy: Option<bool>) -> Outcome {
    let started = Instant::now();
    // Odd seeds run three data shards per node, so that the faults also
    // meet keys coordinated and stored on several threads of a node.
    let shards = if seed % 2 == 1 { 3 } else { 0 };
    let c = embedded::start_sharded(NODES, EngineKind::Lsm, seed, shards);
    embedded::set_policy(&c, COUNTERS, ConflictPolicy::Crdt(CrdtKind::PnCounter));
    let stop = AtomicBool::new(false);
    let schedule = Mutex::new(Vec::new());
    let mut outcome = Outcome::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let (c, stop, schedule) = (&c, &stop, &schedule);
                s.spawn(move || client_loop(c, seed, sloppy, id, stop, schedule))
            })
            .collect();
        faults(&c, seed, &schedule);
        stop.store(true, Ordering::Release);
        let mut clients = Vec::new();
        for w in workers {
            let (client, seen) = w.join().expect("a client thread panicked");
            outcome.absorb(seen);
            clients.push(client);
        }
        // Whole again: every key, read through every node.
        c.heal();
        for id in c.ids() {
            if c.node(id).is_err() {
                let _ = c.restart(id);
            }
        }
        assert!(
            embedded::wait_whole(&c),
            "seed {seed}: the cluster did not become whole after the schedule"
        );
        schedule
            .lock()
            .unwrap()
            .push("end: healed, every node running".into());
        for client in &mut clients {
            for via in c.live() {
                let mut seen = Outcome::default();
                read_counter(&c, seed, client, via, &schedule, &mut seen);
                read_register(&c, seed, client, via, &schedule, &mut seen);
                outcome.absorb(seen);
            }
        }
    });
    outcome.schedule = schedule.into_inner().unwrap();
    outcome.elapsed = started.elapsed();
    outcome
}

/// The seed's fault schedule: a few phases of partitions, crashes and
/// heals, each held for a random while.
fn faults(c: &Cluster, seed: u64, schedule: &Mutex<Vec<String>>) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let log = |line: String| schedule.lock().unwrap().push(line);
    let phases = rng.random_range(5..=8);
    let mut killed: Option<u64> = None;
    let start = Instant::now();
    for phase in 1..=phases {
        let at = start.elapsed().as_millis();
        let pick: f64 = rng.random();
        if pick < 0.5 {
            let all: Vec<u64> = (1..=NODES).collect();
            let size = if rng.random_bool(0.3) { 1 } else { 2 };
            let mut small: Vec<u64> = all.choose_multiple(&mut rng, size).copied().collect();
            small.sort_unstable();
            let large: Vec<u64> = all.iter().copied().filter(|n| !small.contains(n)).collect();
            c.heal();
            c.partition(&small, &large)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let split = embedded::wait_split(c, &small, &large);
            log(format!(
                "phase {phase} at {at} ms: partition {small:?} | {large:?} (sides see each other down: {split})"
            ));
        } else if pick < 0.75 && killed.is_none() {
            let k = rng.random_range(1..=NODES);
            c.kill(k).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            killed = Some(k);
            log(format!("phase {phase} at {at} ms: killed node {k}"));
        } else {
            c.heal();
            if let Some(k) = killed.take() {
                c.restart(k)
                    .unwrap_or_else(|e| panic!("seed {seed}: restart {k}: {e}"));
            }
            let whole = embedded::wait_whole(c);
            log(format!(
                "phase {phase} at {at} ms: healed, every node running (whole: {whole})"
            ));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(800..=2000)));
    }
}

/// One client: random operations on its two keys until told to stop.
fn client_loop(
    c: &Cluster,
    seed: u64,
    sloppy: Option<bool>,
    id: usize,
    stop: &AtomicBool,
    schedule: &Mutex<Vec<String>>,
) -> (Client, Outcome) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(id as u64));
    let mut client = Client {
        id,
        counter_key: format!("counter{id}").into_bytes(),
        register_key: format!("register{id}").into_bytes(),
        acked_sum: 0,
        unknown_sum: 0,
        acked_index: None,
        context: None,
        ops: 0,
        sloppy,
        history: History::new(40),
    };
    let mut seen = Outcome::default();
    while !stop.load(Ordering::Acquire) {
        let live = c.live();
        let Some(&via) = live.choose(&mut rng) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        match rng.random_range(0..4) {
            0 => add(c, &mut client, via, rng.random_range(1..=5), &mut seen),
            1 => read_counter(c, seed, &mut client, via, schedule, &mut seen),
            2 => write_register(c, &mut client, via, &mut seen),
            _ => read_register(c, seed, &mut client, via, schedule, &mut seen),
        }
    }
    (client, seen)
}

fn add(c: &Cluster, client: &mut Client, via: u64, by: i64, seen: &mut Outcome) {
    client.ops += 1;
    let op = Op::CounterAdd {
        bucket: buf(COUNTERS),
        key: buf(&client.counter_key),
        by,
        options: write_options(client.sloppy),
    };
    let line = match exec(c, via, op) {
        Ok(Reply::Counter { receipt, .. }) => {
            client.acked_sum += by;
            seen.writes_acked += 1;
            format!(
                "add {by} via {via}: acked by {:?}, fallbacks {:?}; acknowledged sum now {}",
                receipt.answered, receipt.fallbacks, client.acked_sum
            )
        }
        Ok(other) => panic!("an add answered {other:?}"),
        Err(e) => {
            client.unknown_sum += by;
            seen.writes_failed += 1;
            format!("add {by} via {via}: failed, outcome unknown: {e}")
        }
    };
    client.history.record(format!("op {}: {line}", client.ops));
}

fn read_counter(
    c: &Cluster,
    seed: u64,
    client: &mut Client,
    via: u64,
    schedule: &Mutex<Vec<String>>,
    seen: &mut Outcome,
) {
    client.ops += 1;
    let must = client.acked_sum;
    let op = Op::CounterGet {
        bucket: buf(COUNTERS),
        key: buf(&client.counter_key),
        options: read_options(client.sloppy),
    };
    match exec(c, via, op) {
        Ok(Reply::Counter { value, receipt }) => {
            seen.counter_reads += 1;
            let line = format!(
                "read counter via {via}: {value} from {:?} (fallbacks {:?}); acknowledged before: {must}",
                receipt.answered, receipt.fallbacks
            );
            client.history.record(format!("op {}: {line}", client.ops));
            if value < must {
                seen.counter_misses += 1;
                if seen.misses.len() < SAMPLES {
                    seen.misses.push(miss(seed, client, schedule, &format!(
                        "counter {:?}: read {value}, expected at least {must} (the sum of the adds acknowledged before the read began; {} more of unknown outcome)",
                        String::from_utf8_lossy(&client.counter_key),
                        client.unknown_sum
                    )));
                }
            }
        }
        Ok(other) => panic!("a counter read answered {other:?}"),
        Err(e) => {
            seen.reads_failed += 1;
            client.history.record(format!(
                "op {}: read counter via {via}: failed: {e}",
                client.ops
            ));
        }
    }
}

fn write_register(c: &Cluster, client: &mut Client, via: u64, seen: &mut Outcome) {
    client.ops += 1;
    let index = client.ops;
    let op = Op::Put {
        bucket: buf(REGISTERS),
        key: buf(&client.register_key),
        value: buf(&register_value(client.id, index)),
        context: client.context.as_deref().map(buf),
        options: write_options(client.sloppy),
    };
    let line = match exec(c, via, op) {
        Ok(Reply::Written { context, receipt }) => {
            client.acked_index = Some(index);
            client.context = Some(context.into_vec());
            seen.writes_acked += 1;
            format!(
                "write register #{index} via {via}: acked by {:?}, fallbacks {:?}",
                receipt.answered, receipt.fallbacks
            )
        }
        Ok(other) => panic!("a put answered {other:?}"),
        Err(e) => {
            seen.writes_failed += 1;
            format!("write register #{index} via {via}: failed, outcome unknown: {e}")
        }
    };
    client.history.record(format!("op {}: {line}", client.ops));
}

fn read_register(
    c: &Cluster,
    seed: u64,
    client: &mut Client,
    via: u64,
    schedule: &Mutex<Vec<String>>,
    seen: &mut Outcome,
) {
    client.ops += 1;
    let must = client.acked_index;
    let op = Op::Get {
        bucket: buf(REGISTERS),
        key: buf(&client.register_key),
        options: read_options(client.sloppy),
    };
    match exec(c, via, op) {
        Ok(Reply::Object {
            value,
            siblings,
            context,
            receipt,
        }) => {
            seen.register_reads += 1;
            let mut values: Vec<Vec<u8>> = siblings
                .into_iter()
                .filter_map(|s| s.value.map(|v| v.into_vec()))
                .collect();
            values.extend(value.map(|v| v.into_vec()));
            let indexes: Vec<u64> = values.iter().filter_map(|v| index_of(v)).collect();
            let newest = indexes.iter().copied().max();
            client.history.record(format!(
                "op {}: read register via {via}: #{indexes:?} from {:?} (fallbacks {:?}); acknowledged before: #{must:?}",
                client.ops, receipt.answered, receipt.fallbacks
            ));
            // The next write replaces everything this read saw.
            client.context = Some(context.into_vec());
            if let Some(must) = must {
                if newest.is_none_or(|n| n < must) {
                    seen.register_misses += 1;
                    if seen.misses.len() < SAMPLES {
                        seen.misses.push(miss(seed, client, schedule, &format!(
                            "register {:?}: read #{indexes:?}, expected #{must} (acknowledged before the read began) or a later write",
                            String::from_utf8_lossy(&client.register_key)
                        )));
                    }
                }
            }
        }
        Ok(other) => panic!("a register read answered {other:?}"),
        Err(e) => {
            seen.reads_failed += 1;
            client.history.record(format!(
                "op {}: read register via {via}: failed: {e}",
                client.ops
            ));
        }
    }
}

/// A miss, in full: where, what, the client's recent operations and the
/// faults so far.
fn miss(seed: u64, client: &Client, schedule: &Mutex<Vec<String>>, what: &str) -> String {
    let faults = schedule.lock().unwrap().join("; ");
    format!(
        "seed {seed}, client {}, op {}: {what}\n  faults so far: {faults}\n  client {} history:\n{}",
        client.id,
        client.ops,
        client.id,
        client.history.dump()
    )
}
