//! Anti-entropy after a heal, with real `ringkv-node` processes on
//! loopback (issue [14], item 5): a partition during which thousands of
//! keys diverge, healed with no reads, and the time until every replica
//! holds the same objects.
//!
//! Three nodes, `n = 3` (every node replicates every key, no fallback can
//! hold a hint), a bucket at `W = ONE` without sloppy quorum: `{1, 2}` is
//! cut from `{3}` both ways (`BlockOutbound`) until each side sees the
//! other DOWN; half the keys are written on side `{1, 2}`, half on `{3}`,
//! and a tenth on both (two siblings to make); then the partition heals
//! and nobody reads. Only anti-entropy can carry the writes across. The
//! replicas are compared with `LocalGet` (one node's own copy, no quorum,
//! no read repair).
//!
//! The one timed bound is wide (many periods, and a minute more for a busy
//! machine); the strict figure ("equal within 3 periods") is asserted in
//! the simulator (`sim::cluster::tests`), where time is virtual, and
//! measured here by hand: `RINGKV_HEAL_KEYS=10000
//! RINGKV_HEAL_PERIOD_MS=60000 RINGKV_HEAL_VNODES=160` (the defaults'
//! period and vnodes) prints the times seen.

use crate::support::cluster;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use cluster::{wait_until, Cluster};
use futures_util::stream::{self, StreamExt};
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{BucketInfo, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, NodeId};

const BUCKET: &[u8] = b"heal";
const SETTLE: Duration = Duration::from_secs(60);
/// Requests in flight at once per client while writing and comparing.
const IN_FLIGHT: usize = 32;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client_of(cluster: &Cluster, id: u64) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(10),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let addr = cluster.node(id).client.to_string();
    match Client::connect(&[addr.as_str()], config).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to node {id}: {e}"),
    }
}

/// Whether node `at` sees every other node of `ids` in `state`.
async fn sees(client: &Client, at: u64, ids: &[u64], state: &str) -> bool {
    let Ok(s) = client.status().await else {
        return false;
    };
    ids.iter()
        .all(|&id| id == at || s.members.iter().any(|m| m.node.0 == id && m.state == state))
}

/// One replica's copy in a form that compares across nodes: its value
/// (when it holds one), the siblings' values with their timestamps and
/// writers, sorted, and the context.
type Copy = (Option<Vec<u8>>, Vec<(Option<Vec<u8>>, u64, u64)>, Vec<u8>);

/// How many values a copy holds: its one value, or its siblings.
fn values(c: &Copy) -> usize {
    if c.0.is_some() {
        1
    } else {
        c.1.len()
    }
}

/// Node `c`'s copy of every key (`None`: a request failed).
async fn copies(c: &Client, keys: &[Vec<u8>]) -> Option<Vec<Copy>> {
    let got: Vec<Option<Copy>> = stream::iter(keys.iter())
        .map(|k| async move {
            let g = c.local_get(BUCKET, k).await.ok()?;
            let mut siblings: Vec<_> = g
                .siblings
                .into_iter()
                .map(|s| (s.value.map(|v| v.into_vec()), s.timestamp_ms, s.node.0))
                .collect();
            siblings.sort();
            Some((g.value, siblings, g.context))
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    got.into_iter().collect()
}

/// Whether key `i` is written on side `{1, 2}` and on side `{3}`.
fn sides(i: usize) -> (bool, bool) {
    match i % 10 {
        0 => (true, true),
        x => (x % 2 == 1, x % 2 == 0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_keys_diverged_in_a_partition_are_equal_soon_after_the_heal() {
    let _one = cluster::cluster_slot().await;
    let keys_n = env_or("RINGKV_HEAL_KEYS", 2000) as usize;
    let period_ms = env_or("RINGKV_HEAL_PERIOD_MS", 1000);
    let vnodes = env_or("RINGKV_HEAL_VNODES", 16);
    // Generous: fifteen periods, and a minute more for a loaded machine.
    let limit = Duration::from_millis(period_ms * 15) + Duration::from_secs(60);
    cluster::bounded(limit + Duration::from_secs(300), async {
        let (period, vnodes_arg) = (period_ms.to_string(), vnodes.to_string());
        let cluster = Cluster::start_with(
            3,
            &[
                "--allow-fault-injection",
                "--anti-entropy-period-ms",
                &period,
                "--vnodes",
                &vnodes_arg,
            ],
        )
        .await;
        let clients = vec![
            client_of(&cluster, 1).await,
            client_of(&cluster, 2).await,
            client_of(&cluster, 3).await,
        ];
        let formed = wait_until(SETTLE, || async {
            for (i, c) in clients.iter().enumerate() {
                match c.ring().await {
                    Ok(r) if r.change.is_none() && r.nodes.len() == 3 => {}
                    _ => return false,
                }
                if !sees(c, i as u64 + 1, &[1, 2, 3], "Alive").await {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(formed, "the cluster did not form\n{}", cluster.logs());
        let props = BucketInfo {
            n: 3,
            r: Consistency::One,
            w: Consistency::One,
            policy: ConflictPolicy::Siblings,
            sloppy_quorum: false,
            timeout_ms: 5000,
        };
        clients[0].set_bucket(BUCKET, props.clone()).await.unwrap();
        let spread = wait_until(SETTLE, || async {
            for c in &clients {
                if c.bucket(BUCKET).await.ok().as_ref() != Some(&props) {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(spread, "the bucket's properties did not spread");

        // The partition: {1, 2} | {3}, both ways, until each side sees
        // the other DOWN.
        clients[0].block_outbound(&[NodeId(3)]).await.unwrap();
        clients[1].block_outbound(&[NodeId(3)]).await.unwrap();
        clients[2]
            .block_outbound(&[NodeId(1), NodeId(2)])
            .await
            .unwrap();
        let split = wait_until(SETTLE, || async {
            sees(&clients[0], 1, &[3], "Down").await
                && sees(&clients[1], 2, &[3], "Down").await
                && sees(&clients[2], 3, &[1, 2], "Down").await
        })
        .await;
        assert!(
            split,
            "the sides did not see each other down\n{}",
            cluster.logs()
        );

        let keys: Vec<Vec<u8>> = (0..keys_n).map(|i| format!("d{i}").into_bytes()).collect();
        let one = WriteOptions {
            w: Some(Consistency::One),
            ..WriteOptions::default()
        };
        let started = Instant::now();
        for (at, value, side_of) in [
            (0usize, b"A", (|i| sides(i).0) as fn(usize) -> bool),
            (2, b"B", |i| sides(i).1),
        ] {
            let c = &clients[at];
            let results: Vec<Result<_, _>> = stream::iter(keys.iter().enumerate())
                .filter(|(i, _)| std::future::ready(side_of(*i)))
                .map(|(_, k)| {
                    let one = one.clone();
                    async move { c.put_with(BUCKET, k, value, None, one).await }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            for r in results {
                r.unwrap_or_else(|e| panic!("a write on node {} failed: {e}", at + 1));
            }
        }
        let wrote = started.elapsed();
        // The partition held: nodes 1 and 3 differ.
        let before = [
            copies(&clients[0], &keys).await.expect("local reads"),
            copies(&clients[2], &keys).await.expect("local reads"),
        ];
        let differ = before[0]
            .iter()
            .zip(&before[1])
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, keys_n, "every key differs before the heal");
        let mut repaired_before = Vec::new();
        for c in &clients {
            let s = c.status().await.unwrap();
            assert_eq!(s.hints, 0, "node {} holds hints", s.node);
            repaired_before.push(s.anti_entropy.objects_repaired);
        }

        // Heal, and read nothing.
        for c in &clients {
            assert_eq!(c.block_outbound(&[]).await.unwrap(), vec![]);
        }
        let healed = Instant::now();
        let met = wait_until(SETTLE, || async {
            for (i, c) in clients.iter().enumerate() {
                if !sees(c, i as u64 + 1, &[1, 2, 3], "Alive").await {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(
            met,
            "the healed nodes did not see each other\n{}",
            cluster.logs()
        );
        let seen = healed.elapsed();
        let rounds = RefCell::new(vec![0u64; 3]);
        let round_log = RefCell::new(Vec::new());
        let converged = wait_until(limit, || async {
            // Round durations as the nodes report them (last_round_ms).
            for (i, c) in clients.iter().enumerate() {
                if let Ok(s) = c.status().await {
                    let ae = &s.anti_entropy;
                    if ae.rounds != rounds.borrow()[i] {
                        rounds.borrow_mut()[i] = ae.rounds;
                        round_log.borrow_mut().push(format!(
                            "{:.1}s n{}: round {} took {} ms",
                            healed.elapsed().as_secs_f64(),
                            i + 1,
                            ae.rounds,
                            ae.last_round_ms
                        ));
                    }
                }
            }
            let Some(first) = copies(&clients[0], &keys).await else {
                return false;
            };
            for c in &clients[1..] {
                if copies(c, &keys).await.as_ref() != Some(&first) {
                    return false;
                }
            }
            // Both sides' writes, the common keys as two siblings.
            first.iter().enumerate().all(|(i, c)| {
                let (a, b) = sides(i);
                values(c) == usize::from(a) + usize::from(b)
            })
        })
        .await;
        let took = healed.elapsed();
        assert!(
            converged,
            "{keys_n} divergent keys were not equal on every replica {limit:?} after the heal\n{}",
            cluster.logs()
        );
        let mut gained = Vec::new();
        let mut last_round_ms = Vec::new();
        for (c, before) in clients.iter().zip(&repaired_before) {
            let s = c.status().await.unwrap();
            assert_eq!(s.hints, 0, "node {} holds hints", s.node);
            gained.push(s.anti_entropy.objects_repaired - before);
            last_round_ms.push(s.anti_entropy.last_round_ms);
        }
        assert!(
            gained.iter().all(|&g| g > 0),
            "anti-entropy repaired {gained:?} objects on nodes 1 to 3"
        );
        println!(
            "heal convergence (3 processes, {vnodes} vnodes each, period {period_ms} ms): \
             {keys_n} divergent keys written in {wrote:?}; nodes saw each other {seen:?} \
             after the heal; every replica equal {took:?} after the heal ({:.2} periods); \
             objects repaired per node {gained:?}; rounds seen:\n  {}",
            took.as_secs_f64() * 1000.0 / period_ms as f64,
            round_log.borrow().join("\n  ")
        );
    })
    .await;
}
