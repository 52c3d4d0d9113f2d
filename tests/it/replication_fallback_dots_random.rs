//! Writes coordinated by fallbacks, in partitions that come and go, are
//! never lost: a randomized checker on an embedded 5-node cluster (the
//! in-process network), replayed by seed.
//!
//! The claim (docs/replication.md, docs/data-model.md): an acknowledged
//! blind put in a `Siblings` bucket, an acknowledged OR-Set add and an
//! acknowledged PN-Counter add are kept; no write is dropped unless a
//! client that saw it replaced it. Sloppy quorum is asked for in every
//! write's options, so a side of a partition that holds none of a key's
//! primaries still takes writes: its first fallback coordinates them and
//! stores them as hints, and hinted handoff carries them to the primaries
//! after the heal.
//!
//! The bug this guards against: a fallback that coordinates a key in one
//! partition, hands its hint off, and coordinates the same key again in a
//! later partition mints the same dots again (its hint object starts
//! empty), so the primaries, having seen those dots, drop the new writes
//! as already replaced.
//!
//! Each seed chooses: the storage engine (the LSM when the seed restarts
//! nodes, as a restarted node keeps its data and hints only on disk), how
//! many rounds (2 to 4), and per round the partition (mostly the same
//! "favoured" minority of one or two nodes, so that a fallback meets the
//! same key again), which side takes the writes, which keys (mostly keys
//! whose primaries are all on the other side), through which node, at
//! which `w`, and whether a node is killed before the heal and restarted
//! after it. Keys: for each bucket, one key per set of three primaries (ten
//! sets of five nodes), so every minority has keys it can only reach
//! through fallbacks.
//!
//! The check, after each round: heal, wait until every node sees every
//! other ALIVE and no node holds a hint, then read every key written so
//! far at `ALL` (strict, so only primaries answer): every acknowledged
//! sibling value and set member is there, and each counter is at least the
//! sum of its acknowledged adds and at most that plus the adds whose
//! outcome is unknown (a failed write may or may not have been applied).
//!
//! `RINGKV_SEEDS=100` runs seeds 1 to 100 too; `RINGKV_SEED=n` replays
//! seed n. A failure names the seed, the round, what is missing and what
//! the read returned, with the history of the seed's operations.

use crate::support::embedded;
use crate::support::seeds;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

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

/// The seeds CI runs.
const CI_SEEDS: &[u64] = &[1, 2, 3, 4, 5];

const NODES: u64 = 5;
const N: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Siblings,
    OrSet,
    Counter,
}

const BUCKETS: [(&[u8], Kind); 3] = [
    (b"fdr-siblings", Kind::Siblings),
    (b"fdr-orset", Kind::OrSet),
    (b"fdr-counter", Kind::Counter),
];

/// What the writes to one key promise.
#[derive(Default, Debug)]
struct Expected {
    /// Acknowledged sibling values or set members.
    acked: BTreeSet<Vec<u8>>,
    /// Failed writes' values or members: may or may not be there.
    unknown: BTreeSet<Vec<u8>>,
    /// Acknowledged counter adds, summed.
    acked_sum: i64,
    /// Counter adds whose outcome is unknown, summed.
    unknown_sum: i64,
    acked_writes: usize,
}

/// Every 3-subset of the nodes.
fn primary_sets() -> Vec<Vec<u64>> {
    let mut sets = Vec::new();
    for a in 1..=NODES {
        for b in a + 1..=NODES {
            for c in b + 1..=NODES {
                sets.push(vec![a, b, c]);
            }
        }
    }
    sets
}

/// A random minority: one or two nodes.
fn minority(rng: &mut StdRng) -> Vec<u64> {
    let all: Vec<u64> = (1..=NODES).collect();
    let size = if rng.random_bool(0.25) { 1 } else { 2 };
    let mut m: Vec<u64> = all.choose_multiple(rng, size).copied().collect();
    m.sort_unstable();
    m
}

fn rest(of: &[u64]) -> Vec<u64> {
    (1..=NODES).filter(|n| !of.contains(n)).collect()
}

#[test]
fn fallback_coordinated_writes_survive_partitions_heals_and_handoff() {
    let started = Instant::now();
    let mut failed = Vec::new();
    let seeds = seeds::seeds(CI_SEEDS);
    for &seed in &seeds {
        match run(seed) {
            Ok(summary) => println!("seed {seed}: ok: {summary}"),
            Err(report) => {
                eprintln!("{report}");
                failed.push((seed, report));
            }
        }
    }
    println!(
        "{} seeds in {:?}, {} failed",
        seeds.len(),
        started.elapsed(),
        failed.len()
    );
    if let Some((_, first)) = failed.first() {
        let which: Vec<u64> = failed.iter().map(|(s, _)| *s).collect();
        panic!(
            "{} of {} seeds failed (acknowledged writes lost, or the cluster did not settle): \
             {which:?} (replay one with RINGKV_SEED=<seed>)\n\nfirst failure:\n{first}",
            failed.len(),
            seeds.len()
        );
    }
}

/// One seed's scenario: `Ok` with a summary, or `Err` with the report.
fn run(seed: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let restarts = rng.random_bool(0.5);
    let engine = if restarts {
        EngineKind::Lsm
    } else {
        EngineKind::Memory
    };
    let rounds = rng.random_range(2..=4u32);
    let favoured = minority(&mut rng);
    let mut history = History::new(400);
    history.record(format!(
        "seed {seed}: engine {engine:?}, restarts {restarts}, rounds {rounds}, favoured minority {favoured:?}"
    ));

    let c = embedded::start(NODES, engine, seed);
    for (bucket, kind) in BUCKETS {
        let policy = match kind {
            Kind::Siblings => ConflictPolicy::Siblings,
            Kind::OrSet => ConflictPolicy::Crdt(CrdtKind::OrSet),
            Kind::Counter => ConflictPolicy::Crdt(CrdtKind::PnCounter),
        };
        embedded::set_policy(&c, bucket, policy);
    }
    // keys[bucket index]: (primaries, key), one per primary set.
    let keys: Vec<Vec<(Vec<u64>, Vec<u8>)>> = BUCKETS
        .iter()
        .map(|(bucket, _)| {
            primary_sets()
                .into_iter()
                .map(|p| {
                    let key = embedded::key_with_primaries(&c, 1, bucket, "k", N, &p);
                    (p, key)
                })
                .collect()
        })
        .collect();

    let mut expected: BTreeMap<(usize, Vec<u8>), Expected> = BTreeMap::new();
    let mut write_no = 0u64;
    for round in 1..=rounds {
        let small = if rng.random_bool(0.75) {
            favoured.clone()
        } else {
            minority(&mut rng)
        };
        let large = rest(&small);
        c.partition(&small, &large)
            .unwrap_or_else(|e| panic!("seed {seed}: partition: {e}"));
        history.record(format!("round {round}: partition {small:?} | {large:?}"));
        if !embedded::wait_split(&c, &small, &large) {
            return Err(format!(
                "seed {seed} round {round}: the sides {small:?} and {large:?} did not see each other DOWN\n{}",
                history.dump()
            ));
        }
        let side = if rng.random_bool(0.75) {
            small.clone()
        } else {
            large.clone()
        };
        let writes = rng.random_range(4..=8);
        for _ in 0..writes {
            let b = rng.random_range(0..BUCKETS.len());
            let (bucket, kind) = BUCKETS[b];
            // Keys this side reaches only through fallbacks.
            let far: Vec<&(Vec<u64>, Vec<u8>)> = keys[b]
                .iter()
                .filter(|(p, _)| p.iter().all(|n| !side.contains(n)))
                .collect();
            let (primaries, key) = if !far.is_empty() && rng.random_bool(0.8) {
                // Mostly the first such key, so that it meets the same
                // fallback again in a later round.
                if rng.random_bool(0.6) {
                    far[0].clone()
                } else {
                    (*far.choose(&mut rng).expect("not empty")).clone()
                }
            } else {
                keys[b].choose(&mut rng).expect("ten keys").clone()
            };
            let via = *side.choose(&mut rng).expect("a side has nodes");
            let w = if side.len() == 1 || rng.random_bool(0.4) {
                Consistency::One
            } else {
                Consistency::Quorum
            };
            let options = WriteOptions {
                w: Some(w),
                sloppy_quorum: Some(true),
                timeout_ms: Some(2000),
            };
            write_no += 1;
            let item = format!("s{seed}r{round}w{write_no}").into_bytes();
            let by = rng.random_range(1..=9i64);
            let op = match kind {
                Kind::Siblings => Op::Put {
                    bucket: buf(bucket),
                    key: buf(&key),
                    value: buf(&item),
                    context: None,
                    options,
                },
                Kind::OrSet => Op::SetAdd {
                    bucket: buf(bucket),
                    key: buf(&key),
                    members: vec![buf(&item)],
                    options,
                    count_only: false,
                },
                Kind::Counter => Op::CounterAdd {
                    bucket: buf(bucket),
                    key: buf(&key),
                    by,
                    options,
                },
            };
            let what = match kind {
                Kind::Counter => format!("add {by}"),
                _ => format!("{:?}", String::from_utf8_lossy(&item)),
            };
            let result = exec(&c, via, op);
            let e = expected.entry((b, key.clone())).or_default();
            let line = match &result {
                Ok(reply) => {
                    e.acked_writes += 1;
                    match kind {
                        Kind::Counter => e.acked_sum += by,
                        _ => {
                            e.acked.insert(item.clone());
                        }
                    }
                    format!("acked, receipt {:?}", receipt(reply))
                }
                Err(why) => {
                    match kind {
                        Kind::Counter => e.unknown_sum += by,
                        _ => {
                            e.unknown.insert(item.clone());
                        }
                    }
                    format!("FAILED (outcome unknown): {why}")
                }
            };
            history.record(format!(
                "  write {write_no}: {} {:?} (primaries {primaries:?}) {what} via {via} w={w:?}: {line}",
                String::from_utf8_lossy(bucket),
                String::from_utf8_lossy(&key),
            ));
        }
        let killed = if restarts && rng.random_bool(0.4) {
            let k = rng.random_range(1..=NODES);
            c.kill(k)
                .unwrap_or_else(|e| panic!("seed {seed}: kill {k}: {e}"));
            history.record(format!("round {round}: killed node {k}"));
            Some(k)
        } else {
            None
        };
        c.heal();
        if let Some(k) = killed {
            c.restart(k)
                .unwrap_or_else(|e| panic!("seed {seed}: restart {k}: {e}\n{}", history.dump()));
            history.record(format!("round {round}: healed, restarted node {k}"));
        } else {
            history.record(format!("round {round}: healed"));
        }
        if !embedded::wait_whole(&c) {
            return Err(format!(
                "seed {seed} round {round}: the cluster did not become whole after the heal\n{}",
                history.dump()
            ));
        }
        if !embedded::wait_no_hints(&c) {
            return Err(format!(
                "seed {seed} round {round}: hints were not handed off within {:?} ({:?} left)\n{}",
                embedded::SETTLE,
                c.total_hints(),
                history.dump()
            ));
        }
        check(&c, seed, round, &expected, &mut history)?;
    }
    let acked: usize = expected.values().map(|e| e.acked_writes).sum();
    Ok(format!(
        "{rounds} rounds, {write_no} writes, {acked} acknowledged, all kept"
    ))
}

/// Reads every key written so far at ALL and checks it against `expected`.
fn check(
    c: &Cluster,
    seed: u64,
    round: u32,
    expected: &BTreeMap<(usize, Vec<u8>), Expected>,
    history: &mut History,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for ((b, key), e) in expected {
        let (bucket, kind) = BUCKETS[*b];
        let read = read_all(c, bucket, key, kind)?;
        let name = format!(
            "{} {:?}",
            String::from_utf8_lossy(bucket),
            String::from_utf8_lossy(key)
        );
        match (kind, &read) {
            (Kind::Counter, Got::Counter(v)) => {
                let (lo, hi) = (e.acked_sum, e.acked_sum + e.unknown_sum);
                history.record(format!(
                    "round {round} check {name}: counter {v}, acknowledged adds sum to {lo} (+{} unknown)",
                    e.unknown_sum
                ));
                if *v < lo || *v > hi {
                    problems.push(format!(
                        "{name}: counter read {v}, expected {lo} (the sum of {} acknowledged adds){}",
                        e.acked_writes,
                        if e.unknown_sum > 0 {
                            format!(" to {hi} (with adds of unknown outcome)")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
            (_, Got::Items(items)) => {
                let missing: Vec<String> = e
                    .acked
                    .iter()
                    .filter(|v| !items.contains(*v))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                let strange: Vec<String> = items
                    .iter()
                    .filter(|v| !e.acked.contains(*v) && !e.unknown.contains(*v))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                history.record(format!(
                    "round {round} check {name}: {} of {} acknowledged present",
                    e.acked.len() - missing.len(),
                    e.acked.len()
                ));
                if !missing.is_empty() || !strange.is_empty() {
                    let got: Vec<String> = items
                        .iter()
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    problems.push(format!(
                        "{name}: kept {} of {} acknowledged; missing {missing:?}; never written {strange:?}; read {got:?}",
                        e.acked.len() - missing.len(),
                        e.acked.len()
                    ));
                }
            }
            (kind, got) => problems.push(format!("{name}: a {kind:?} key read as {got:?}")),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "seed {seed}, after round {round} (heal, no hints left, read at ALL): {} keys lost acknowledged writes:\n  {}\nhistory:\n{}",
        problems.len(),
        problems.join("\n  "),
        history.dump()
    ))
}

#[derive(Debug)]
enum Got {
    Items(BTreeSet<Vec<u8>>),
    Counter(i64),
}

/// A strict read at ALL, retried (bounded) until it succeeds.
fn read_all(c: &Cluster, bucket: &[u8], key: &[u8], kind: Kind) -> Result<Got, String> {
    let options = ReadOptions {
        r: Some(Consistency::All),
        repair: None,
        sloppy_quorum: Some(false),
        timeout_ms: Some(2000),
    };
    let deadline = Instant::now() + embedded::SETTLE;
    let mut turn = 0u64;
    loop {
        let via = 1 + turn % NODES;
        turn += 1;
        let op = match kind {
            Kind::Siblings => Op::Get {
                bucket: buf(bucket),
                key: buf(key),
                options: options.clone(),
            },
            Kind::OrSet => Op::SetMembers {
                bucket: buf(bucket),
                key: buf(key),
                options: options.clone(),
            },
            Kind::Counter => Op::CounterGet {
                bucket: buf(bucket),
                key: buf(key),
                options: options.clone(),
            },
        };
        let last = match exec(c, via, op) {
            Ok(Reply::Object {
                value, siblings, ..
            }) => {
                let mut items: BTreeSet<Vec<u8>> = siblings
                    .into_iter()
                    .filter_map(|s| s.value.map(|v| v.into_vec()))
                    .collect();
                items.extend(value.map(|v| v.into_vec()));
                return Ok(Got::Items(items));
            }
            Ok(Reply::Set { members, .. }) => {
                return Ok(Got::Items(
                    members.into_iter().map(|m| m.into_vec()).collect(),
                ))
            }
            Ok(Reply::Counter { value, .. }) => return Ok(Got::Counter(value)),
            Ok(other) => return Err(format!("a read answered {other:?}")),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("a read at ALL kept failing: {last}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A data reply's receipt, for the history.
fn receipt(reply: &Reply) -> Option<&ringkv::replication::Receipt> {
    match reply {
        Reply::Object { receipt, .. }
        | Reply::Written { receipt, .. }
        | Reply::Counter { receipt, .. }
        | Reply::Set { receipt, .. } => Some(receipt),
        _ => None,
    }
}
