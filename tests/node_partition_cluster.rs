//! A true partition of real `ringkv-node` processes on loopback, made with
//! the opt-in fault injection of the client protocol (`BlockOutbound`),
//! and healed with no reads at all.
//!
//! Three nodes, `n = 3`, so every node replicates every key and there is
//! no fallback to hold a hint: `{1, 2}` is cut from `{3}` both ways; each
//! side takes writes at `W = ONE` (keys of its own, and the same keys as
//! the other side); the partition heals; nobody reads. Only anti-entropy
//! can carry the writes across (hinted handoff has no fallback to use,
//! sloppy quorums are off for the bucket, read repair needs reads, and no
//! ring change moves data). The test shows every replica converging to
//! the same objects (both sides' values, the common keys as two
//! siblings), compared with `LocalGet` (one replica's own copy; no quorum,
//! no repair), and anti-entropy's own counters saying it repaired them.
//!
//! Also: the fault op is refused by a node that did not opt in, and bad
//! lists are refused by one that did.
//!
//! Every wait is bounded; the one bound on convergence is many
//! anti-entropy periods wide, and the time seen is printed.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::{wait_until, Cluster};
use ringkv::client::{Client, ClientConfig, GetResult};
use ringkv::protocol::{BucketInfo, ErrorCode, WriteOptions, MAX_BLOCKED_PEERS};
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, Error, NodeId};

const TEST_LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(40);
/// The anti-entropy period the nodes run with.
const PERIOD_MS: u64 = 1000;
/// How long after the healed nodes see each other all replicas must agree:
/// docs/rebalancing.md says about three periods; fifteen leave room for a
/// busy machine.
const CONVERGE_PERIODS: u64 = 15;
const BUCKET: &[u8] = b"p";

/// A client of node `id` alone (fault injection is per node).
async fn client_of(cluster: &Cluster, id: u64) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let addr = cluster.node(id).client.to_string();
    match Client::connect(&[addr.as_str()], config).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to node {id}: {e}"),
    }
}

/// The code and message of a refused request.
fn refusal<T: std::fmt::Debug>(result: Result<T, Error>) -> (ErrorCode, String) {
    match result {
        Err(Error::Remote(reply)) => (reply.code, reply.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_refused_unless_enabled_and_checks_its_peers() {
    cluster::bounded(TEST_LIMIT, async {
        // Off by default: refused, healing included, and nothing changes.
        let plain = Cluster::start(1).await;
        let c = client_of(&plain, 1).await;
        for peers in [vec![NodeId(2)], vec![]] {
            let (code, message) = refusal(c.block_outbound(&peers).await);
            assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
            assert!(message.contains("--allow-fault-injection"), "{message}");
        }
        drop(plain);

        let enabled = Cluster::start_with(1, &["--allow-fault-injection"]).await;
        let c = client_of(&enabled, 1).await;
        let (code, message) = refusal(c.block_outbound(&[NodeId(2), NodeId(1)]).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(message.contains("itself"), "{message}");
        let many: Vec<NodeId> = (2..=MAX_BLOCKED_PEERS as u64 + 2).map(NodeId).collect();
        let (code, message) = refusal(c.block_outbound(&many).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
        assert!(message.contains("at most"), "{message}");
        // A refused list leaves the earlier one: none here.
        assert_eq!(c.block_outbound(&[]).await.unwrap(), vec![]);
        // Accepted: duplicates count once, the answer is in id order.
        let set = c
            .block_outbound(&[NodeId(7), NodeId(3), NodeId(7)])
            .await
            .unwrap();
        assert_eq!(set, vec![NodeId(3), NodeId(7)]);
        // A blocked peer that does not exist changes nothing for clients.
        let one = WriteOptions {
            w: Some(Consistency::One),
            ..WriteOptions::default()
        };
        c.put_with(BUCKET, b"k", b"v", None, one).await.unwrap();
        assert_eq!(c.block_outbound(&[]).await.unwrap(), vec![]);
    })
    .await;
}

/// Whether node `at` sees every other node of `ids` in `state`.
async fn sees(cluster: &Cluster, at: u64, ids: &[u64], state: &str) -> bool {
    let c = client_of(cluster, at).await;
    let Ok(s) = c.status().await else {
        return false;
    };
    ids.iter()
        .all(|&id| id == at || s.members.iter().any(|m| m.node.0 == id && m.state == state))
}

/// One replica's copy, in a form that compares across nodes: the value,
/// the siblings sorted, and the causal context.
type Copy = (Option<Vec<u8>>, Vec<(Option<Vec<u8>>, u64, u64)>, Vec<u8>);

fn copy_of(g: GetResult) -> Copy {
    let mut siblings: Vec<_> = g
        .siblings
        .into_iter()
        .map(|s| (s.value.map(|v| v.into_vec()), s.timestamp_ms, s.node.0))
        .collect();
    siblings.sort();
    (g.value, siblings, g.context)
}

/// Every node's copy of every key, or `None` if a node did not answer.
async fn copies(clients: &[Client], keys: &[Vec<u8>]) -> Option<Vec<Vec<Copy>>> {
    let mut all = Vec::new();
    for c in clients {
        let mut mine = Vec::new();
        for k in keys {
            mine.push(copy_of(c.local_get(BUCKET, k).await.ok()?));
        }
        all.push(mine);
    }
    Some(all)
}

/// The values a copy holds (one value, or its siblings' values), sorted.
fn values(copy: &Copy) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = match &copy.0 {
        Some(one) => vec![one.clone()],
        None => copy.1.iter().filter_map(|s| s.0.clone()).collect(),
    };
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_of_a_partition_write_and_converge_with_no_reads() {
    cluster::bounded(TEST_LIMIT, async {
        let period = PERIOD_MS.to_string();
        let cluster = Cluster::start_with(
            3,
            &[
                "--allow-fault-injection",
                "--anti-entropy-period-ms",
                &period,
            ],
        )
        .await;
        let clients = vec![
            client_of(&cluster, 1).await,
            client_of(&cluster, 2).await,
            client_of(&cluster, 3).await,
        ];
        let formed = wait_until(SETTLE, || async {
            for c in &clients {
                match c.ring().await {
                    Ok(r) if r.change.is_none() && r.nodes.len() == 3 => {}
                    _ => return false,
                }
            }
            for at in 1..=3 {
                if !sees(&cluster, at, &[1, 2, 3], "Alive").await {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(formed, "the cluster did not form\n{}", cluster.logs());
        // No fallbacks: a write reaches the primaries it can, or no one.
        let props = BucketInfo {
            n: 3,
            r: Consistency::One,
            w: Consistency::One,
            policy: ConflictPolicy::Siblings,
            sloppy_quorum: false,
            timeout_ms: 3000,
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

        // The partition: {1, 2} | {3}, both ways.
        assert_eq!(
            clients[0].block_outbound(&[NodeId(3)]).await.unwrap(),
            vec![NodeId(3)]
        );
        clients[1].block_outbound(&[NodeId(3)]).await.unwrap();
        clients[2]
            .block_outbound(&[NodeId(1), NodeId(2)])
            .await
            .unwrap();
        let split = wait_until(SETTLE, || async {
            sees(&cluster, 1, &[3], "Down").await
                && sees(&cluster, 2, &[3], "Down").await
                && sees(&cluster, 3, &[1, 2], "Down").await
        })
        .await;
        assert!(
            split,
            "the sides did not see each other down\n{}",
            cluster.logs()
        );

        // Each side writes keys of its own and the same common keys.
        let one = WriteOptions {
            w: Some(Consistency::One),
            ..WriteOptions::default()
        };
        let mut expected: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
        for (side, at, name) in [(b"A", 0usize, "a"), (b"B", 2, "b")] {
            for i in 0..20 {
                let key = format!("{name}{i}").into_bytes();
                clients[at]
                    .put_with(BUCKET, &key, side, None, one.clone())
                    .await
                    .unwrap_or_else(|e| panic!("put {key:?} on side {name}: {e}"));
                expected.insert(key, vec![side.to_vec()]);
            }
            for i in 0..10 {
                let key = format!("both{i}").into_bytes();
                clients[at]
                    .put_with(BUCKET, &key, side, None, one.clone())
                    .await
                    .unwrap_or_else(|e| panic!("put {key:?} on side {name}: {e}"));
                expected.entry(key).or_default().push(side.to_vec());
            }
        }
        let keys: Vec<Vec<u8>> = expected.keys().cloned().collect();
        // The partition held: each side has only its own writes (node 2
        // got side A's by replication), and nobody holds a hint.
        let before = copies(&clients, &keys).await.expect("local reads");
        for (k, key) in keys.iter().enumerate() {
            let side = |v: &[u8]| -> Vec<Vec<u8>> {
                expected[key]
                    .iter()
                    .filter(|w| w.as_slice() == v)
                    .cloned()
                    .collect()
            };
            let (want_a, want_b) = (side(b"A"), side(b"B"));
            assert_eq!(values(&before[0][k]), want_a, "node 1, {key:?}");
            assert_eq!(values(&before[2][k]), want_b, "node 3, {key:?}");
        }
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
            for at in 1..=3 {
                if !sees(&cluster, at, &[1, 2, 3], "Alive").await {
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
        let seen = Instant::now();
        let limit = Duration::from_millis(PERIOD_MS * CONVERGE_PERIODS);
        let last = std::sync::Mutex::new(None);
        let converged = wait_until(limit, || async {
            let Some(now) = copies(&clients, &keys).await else {
                return false;
            };
            let same = now[1..].iter().all(|node| node == &now[0]);
            *last.lock().unwrap() = Some(now);
            same
        })
        .await;
        let took = seen.elapsed();
        let last = last.into_inner().unwrap();
        assert!(
            converged,
            "the replicas did not converge within {limit:?} of meeting again: {last:?}\n{}",
            cluster.logs()
        );
        let now = last.expect("a comparison ran");
        for (k, key) in keys.iter().enumerate() {
            let mut want = expected[key].clone();
            want.sort();
            assert_eq!(values(&now[0][k]), want, "{key:?}");
        }
        // Common keys hold both sides' writes as siblings.
        assert!(now[0]
            .iter()
            .zip(&keys)
            .filter(|(_, k)| k.starts_with(b"both"))
            .all(|(c, _)| c.0.is_none() && c.1.len() == 2));

        // Anti-entropy did it, and nothing else could have.
        let mut repaired = Vec::new();
        for c in &clients {
            let s = c.status().await.unwrap();
            assert_eq!(s.hints, 0, "node {} holds hints", s.node);
            repaired.push(s.anti_entropy.objects_repaired);
        }
        let gained: Vec<u64> = repaired
            .iter()
            .zip(&repaired_before)
            .map(|(after, before)| after - before)
            .collect();
        assert!(
            gained[2] > 0 && gained[0] + gained[1] > 0,
            "anti-entropy repaired {gained:?} objects on nodes 1 to 3"
        );
        println!(
            "partition heal (3 processes, anti-entropy period {PERIOD_MS} ms): {} keys \
             converged {took:?} after the nodes met again ({:?} after the heal); \
             objects repaired by anti-entropy per node: {gained:?}",
            keys.len(),
            healed.elapsed()
        );
    })
    .await;
}
