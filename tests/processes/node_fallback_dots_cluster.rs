//! A fallback that coordinates a key in two separate partitions must not
//! lose the writes of either: five real `ringkv-node` processes on
//! loopback, partitioned with the opt-in `BlockOutbound` fault.
//!
//! Scenario: for three buckets, a `Siblings` bucket taking blind puts, an
//! OR-Set taking adds and a PN-Counter taking adds, one key each whose
//! three primaries (`n = 3`) are nodes 1, 2 and 3. Each of three rounds:
//! cut `{4, 5}` from `{1, 2, 3}` both ways; wait until each side sees the
//! other DOWN; make five writes to each key through node 4 or 5, with
//! sloppy quorum asked for in the request's options (so the test does not
//! depend on the bucket default) and `w = QUORUM`, each acknowledged with
//! a receipt showing that only nodes 4 and 5 stored it, as fallbacks;
//! heal; wait until every node sees every other ALIVE and no node holds a
//! hint (hinted handoff delivered them to the primaries); read each key
//! at `ALL`, strictly (only the primaries answer).
//!
//! The claim (docs/replication.md, docs/data-model.md): after round k all
//! 5k acknowledged writes are there: 5k sibling values, 5k set members,
//! and the counter equal to the sum of the 5k adds. A write that failed
//! (its outcome unknown) is replaced by another, and may or may not be
//! there; the counter must then lie between the acknowledged sum and that
//! plus the unknown adds.
//!
//! The bug this guards against: the fallback that coordinates the key
//! holds the writes as a hint, whose object starts empty each time, so in
//! the second partition it mints the same dots as in the first; the
//! primaries have seen those dots and drop the new writes. On that code
//! round 2 keeps 5 of 10.
//!
//! Every wait is bounded and generous; all rounds run before the test
//! fails, so the failure shows what each round kept.

use crate::support::cluster;
use crate::support::partitions;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster::Cluster;
use partitions::{client_of, clients, SETTLE};
use ringkv::client::Client;
use ringkv::crdt::CrdtKind;
use ringkv::protocol::{BucketInfo, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::{Consistency, Receipt};
use ringkv::ConflictPolicy;
use serde_bytes::ByteBuf;

const TEST_LIMIT: Duration = Duration::from_secs(300);
const ROUNDS: usize = 3;
const WRITES_PER_ROUND: usize = 5;
const PRIMARIES: [u64; 3] = [1, 2, 3];
const FALLBACKS: [u64; 2] = [4, 5];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Siblings,
    OrSet,
    Counter,
}

const BUCKETS: [(&[u8], Kind); 3] = [
    (b"fd-siblings", Kind::Siblings),
    (b"fd-orset", Kind::OrSet),
    (b"fd-counter", Kind::Counter),
];

/// What one bucket's key was promised so far.
#[derive(Default)]
struct Expected {
    acked: Vec<Vec<u8>>,
    unknown: Vec<Vec<u8>>,
    acked_sum: i64,
    unknown_sum: i64,
    acked_writes: usize,
}

fn buf(b: &[u8]) -> ByteBuf {
    ByteBuf::from(b.to_vec())
}

/// A key of `bucket` whose preference list, with every node up, is nodes
/// 1, 2 and 3 in some order.
async fn key_on_primaries(client: &Client, bucket: &[u8]) -> Vec<u8> {
    for i in 0..10_000 {
        let key = format!("key{i}").into_bytes();
        let targets = client
            .preference_list(bucket, &key)
            .await
            .unwrap_or_else(|e| panic!("preference list: {e}"));
        let mut nodes: Vec<u64> = targets.iter().map(|t| t.node.0).collect();
        nodes.sort_unstable();
        if nodes == PRIMARIES && targets.iter().all(|t| t.fallback_for.is_none()) {
            return key;
        }
    }
    panic!("no key of {bucket:?} has the primaries {PRIMARIES:?}")
}

/// One write, as the client protocol carries it.
fn write_op(kind: Kind, bucket: &[u8], key: &[u8], item: &[u8], by: i64) -> Op {
    let options = WriteOptions {
        w: Some(Consistency::Quorum),
        sloppy_quorum: Some(true),
        timeout_ms: Some(3000),
    };
    match kind {
        Kind::Siblings => Op::Put {
            bucket: buf(bucket),
            key: buf(key),
            value: buf(item),
            context: None,
            options,
        },
        Kind::OrSet => Op::SetAdd {
            bucket: buf(bucket),
            key: buf(key),
            members: vec![buf(item)],
            options,
            count_only: false,
        },
        Kind::Counter => Op::CounterAdd {
            bucket: buf(bucket),
            key: buf(key),
            by,
            options,
        },
    }
}

fn receipt_of(reply: &Reply) -> Option<&Receipt> {
    match reply {
        Reply::Written { receipt, .. }
        | Reply::Counter { receipt, .. }
        | Reply::Set { receipt, .. }
        | Reply::Object { receipt, .. } => Some(receipt),
        _ => None,
    }
}

#[derive(Debug)]
enum Got {
    Items(BTreeSet<Vec<u8>>),
    Counter(i64),
}

/// Reads `key` at ALL, strictly, through any node; retried (bounded)
/// until it succeeds.
async fn read_all(clients: &[Client], kind: Kind, bucket: &[u8], key: &[u8]) -> Got {
    let options = ReadOptions {
        r: Some(Consistency::All),
        repair: None,
        sloppy_quorum: Some(false),
        timeout_ms: Some(3000),
    };
    let start = Instant::now();
    let mut turn = 0usize;
    loop {
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
        let c = &clients[turn % clients.len()];
        turn += 1;
        let last = match c.execute(op).await {
            Ok(Reply::Object {
                value, siblings, ..
            }) => {
                let mut items: BTreeSet<Vec<u8>> = siblings
                    .into_iter()
                    .filter_map(|s| s.value.map(|v| v.into_vec()))
                    .collect();
                items.extend(value.map(|v| v.into_vec()));
                return Got::Items(items);
            }
            Ok(Reply::Set { members, .. }) => {
                return Got::Items(members.into_iter().map(|m| m.into_vec()).collect())
            }
            Ok(Reply::Counter { value, .. }) => return Got::Counter(value),
            Ok(other) => panic!("a read answered {other:?}"),
            Err(e) => e,
        };
        assert!(
            start.elapsed() < SETTLE,
            "a read at ALL of {bucket:?} kept failing: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_coordinating_in_two_partitions_keeps_every_write() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let started = Instant::now();
        let cluster = Cluster::start_with(5, &["--allow-fault-injection"]).await;
        let clients = clients(&cluster, 5).await;
        assert!(
            partitions::wait_whole(&clients).await,
            "the cluster did not form\n{}",
            cluster.logs()
        );
        let admin = client_of(&cluster, 1).await;
        let mut keys = Vec::new();
        for (bucket, kind) in BUCKETS {
            let policy = match kind {
                Kind::Siblings => ConflictPolicy::Siblings,
                Kind::OrSet => ConflictPolicy::Crdt(CrdtKind::OrSet),
                Kind::Counter => ConflictPolicy::Crdt(CrdtKind::PnCounter),
            };
            let defaults = admin.bucket(bucket).await.expect("bucket props");
            let props = BucketInfo {
                policy,
                ..defaults
            };
            admin.set_bucket(bucket, props.clone()).await.unwrap();
            let spread = cluster::wait_until(SETTLE, || async {
                for c in &clients {
                    if c.bucket(bucket).await.ok().as_ref() != Some(&props) {
                        return false;
                    }
                }
                true
            })
            .await;
            assert!(spread, "bucket {bucket:?}'s properties did not spread");
            keys.push(key_on_primaries(&admin, bucket).await);
        }

        let mut expected: Vec<Expected> = BUCKETS.iter().map(|_| Expected::default()).collect();
        // rounds[r][b]: (kept, acknowledged, detail) for bucket b after round r.
        let mut rounds: Vec<Vec<(usize, usize, String)>> = Vec::new();
        let mut by = 0i64;
        for round in 1..=ROUNDS {
            partitions::split(&clients, &FALLBACKS, &PRIMARIES).await;
            assert!(
                partitions::wait_split(&clients, &FALLBACKS, &PRIMARIES).await,
                "round {round}: the sides did not see each other DOWN\n{}",
                cluster.logs()
            );
            for (b, (bucket, kind)) in BUCKETS.iter().enumerate() {
                let mut acked = 0;
                let mut attempts = 0;
                while acked < WRITES_PER_ROUND {
                    attempts += 1;
                    assert!(
                        attempts <= 4 * WRITES_PER_ROUND,
                        "round {round}: {attempts} writes to {bucket:?} through the fallbacks failed\n{}",
                        cluster.logs()
                    );
                    let via = FALLBACKS[attempts % 2];
                    by += 1;
                    let item = format!("r{round}w{attempts}").into_bytes();
                    let op = write_op(*kind, bucket, &keys[b], &item, by);
                    let e = &mut expected[b];
                    match clients[(via - 1) as usize].execute(op).await {
                        Ok(reply) => {
                            let receipt = receipt_of(&reply).expect("a data reply");
                            assert!(
                                receipt.answered.iter().all(|n| FALLBACKS.contains(&n.0))
                                    && !receipt.fallbacks.is_empty()
                                    && receipt
                                        .fallbacks
                                        .iter()
                                        .all(|(f, o)| FALLBACKS.contains(&f.0)
                                            && PRIMARIES.contains(&o.0)),
                                "round {round}: a write through node {via} was not stored by \
                                 fallbacks 4 and 5 alone: {receipt:?}"
                            );
                            acked += 1;
                            e.acked_writes += 1;
                            match kind {
                                Kind::Counter => e.acked_sum += by,
                                _ => e.acked.push(item),
                            }
                        }
                        Err(err) => {
                            println!(
                                "round {round}: write {} to {bucket:?} through node {via} failed \
                                 (outcome unknown): {err}",
                                text(&item)
                            );
                            match kind {
                                Kind::Counter => e.unknown_sum += by,
                                _ => e.unknown.push(item),
                            }
                        }
                    }
                }
            }
            partitions::heal(&clients).await;
            assert!(
                partitions::wait_whole(&clients).await,
                "round {round}: the cluster did not become whole after the heal\n{}",
                cluster.logs()
            );
            assert!(
                partitions::wait_no_hints(&clients).await,
                "round {round}: hints were not handed off within {SETTLE:?}: {:?}\n{}",
                partitions::hints(&clients).await,
                cluster.logs()
            );
            let mut this_round = Vec::new();
            for (b, (bucket, kind)) in BUCKETS.iter().enumerate() {
                let e = &expected[b];
                let got = read_all(&clients, *kind, bucket, &keys[b]).await;
                let result = match (kind, got) {
                    (Kind::Counter, Got::Counter(v)) => {
                        let (lo, hi) = (e.acked_sum, e.acked_sum + e.unknown_sum);
                        let ok = (lo..=hi).contains(&v);
                        (
                            if ok { e.acked_writes } else { 0 },
                            e.acked_writes,
                            format!(
                                "counter {v}, expected {lo}{} (the sum of {} acknowledged adds)",
                                if hi > lo {
                                    format!(" to {hi}")
                                } else {
                                    String::new()
                                },
                                e.acked_writes
                            ),
                        )
                    }
                    (_, Got::Items(items)) => {
                        let missing: Vec<String> = e
                            .acked
                            .iter()
                            .filter(|v| !items.contains(*v))
                            .map(|v| text(v))
                            .collect();
                        let strange: Vec<String> = items
                            .iter()
                            .filter(|v| !e.acked.contains(v) && !e.unknown.contains(v))
                            .map(|v| text(v))
                            .collect();
                        let kept = e.acked.len() - missing.len();
                        let kept = if strange.is_empty() { kept } else { 0 };
                        (
                            kept,
                            e.acked.len(),
                            format!(
                                "missing {missing:?}{}",
                                if strange.is_empty() {
                                    String::new()
                                } else {
                                    format!(", never written {strange:?}")
                                }
                            ),
                        )
                    }
                    (kind, got) => panic!("a {kind:?} key read as {got:?}"),
                };
                println!(
                    "round {round}: {}: kept {} of {} acknowledged writes ({})",
                    text(bucket),
                    result.0,
                    result.1,
                    result.2
                );
                this_round.push(result);
            }
            rounds.push(this_round);
        }
        let lost = rounds.iter().flatten().any(|(kept, of, _)| kept != of);
        let table: Vec<String> = rounds
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                row.iter().enumerate().map(move |(b, (kept, of, detail))| {
                    format!(
                        "round {}: {}: kept {kept} of {of}: {detail}",
                        r + 1,
                        text(BUCKETS[b].0)
                    )
                })
            })
            .collect();
        assert!(
            !lost,
            "acknowledged writes through fallbacks were lost (writes through nodes {FALLBACKS:?} \
             cut from the primaries {PRIMARIES:?}, heal, no hints left, read at ALL):\n  {}",
            table.join("\n  ")
        );
        println!(
            "{ROUNDS} rounds of {WRITES_PER_ROUND} fallback writes per bucket kept, in {:?}",
            started.elapsed()
        );
    })
    .await;
}
