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
//! lists are refused by one that did; and a handshake flood on node 1's
//! peer port, from another address, while node 3 restarts: node 3 gets
//! back in, node 1's log does not flood, and node 1 stays small and
//! serving. And four nodes cut into two sides in four shapes and healed:
//! no node ever logs a verdict of SUSPECT or DOWN about a peer on its own
//! side (issue [14], item 0).
//!
//! Every wait is bounded; the one bound on convergence is many
//! anti-entropy periods wide, and the time seen is printed.

use crate::support::cluster;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{wait_until, write_file, Cluster};
use ringkv::client::{Client, ClientConfig, GetResult};
use ringkv::protocol::{BucketInfo, ErrorCode, ReadOptions, WriteOptions, MAX_BLOCKED_PEERS};
use ringkv::replication::Consistency;
use ringkv::{ConflictPolicy, Error, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
    // One slot, not the machine: one-node clusters and refusals, nothing
    // that timing could change (the machine alone cost the binary a drain
    // of every other test's cluster for a 2 s test).
    let _slot = cluster::cluster_slot().await;
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
    let _one = cluster::the_machine_alone().await;
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

// ---------------------------------------------------------------------
// A handshake flood on the peer port while a node restarts.
// ---------------------------------------------------------------------

/// Handshakes in progress on the peer port (`TcpConfig::new`:
/// `max_pending_handshakes`), all addresses together.
const HANDSHAKE_SLOTS: usize = 64;
/// Of which one address may hold (`max_pending_handshakes_per_ip`).
const HANDSHAKE_SLOTS_PER_IP: usize = 8;
/// Time a handshake may take, TLS included (`handshake_timeout`): the
/// test's nodes are given 2 s (`[peer_port] handshake_timeout_ms`, the
/// default is 5 s), so that every bound below that follows from it, and
/// the test, is shorter. The flood's strength does not depend on it: 300
/// strangers redialing 250 ms after each close keep every slot they may
/// take filled whatever the timeout.
const HANDSHAKE_TIMEOUT_MS: u64 = 2_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
/// The peer listener logs a refusal at most once per this
/// (`Shared::refusal_log` in `src/net/tcp.rs`, shared by connections
/// refused for want of a slot and handshakes that failed).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Connections the attacker keeps open or reopening: far more than every
/// slot of the port.
const STRANGERS: usize = 300;
/// How long a stranger waits after the node closed it before it dials
/// again. With 300 strangers that is over a thousand connections a
/// second, enough to keep every slot the node grants it taken, and slow
/// enough that what node 1 spends on them measures the node, not the
/// attacker's speed.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// A stranger's connection the node has not closed after this (three
/// handshake timeouts) is probed, and counts as kept if the probe does
/// not end it.
const STRANGER_PATIENCE: Duration = Duration::from_millis(3 * HANDSHAKE_TIMEOUT_MS);
/// After [`STRANGER_PATIENCE`], a stranger sends one byte and waits this
/// long for the connection to end: a connection node 1 never saw is reset
/// at once, or (its handshake completed by the byte) is new to node 1 and
/// closed within a handshake timeout (twice over, for a busy machine), or,
/// while node 1's accept queue stays full, its byte is never acknowledged
/// (`TCP_INFO`'s `tcpi_unacked`). One node 1 holds past its timeout stays
/// open with its byte acknowledged: one byte completes no TLS record.
const PROBE_PATIENCE: Duration = Duration::from_millis(2 * HANDSHAKE_TIMEOUT_MS);
/// The attack lasts at least this long: longer than a refusal-log
/// interval, so that the limit on its lines is checked over more than
/// its first line, and long enough that a connection of its first
/// seconds held by node 1 is counted as kept (after [`STRANGER_PATIENCE`]
/// and [`PROBE_PATIENCE`]) before the strangers are stopped.
const MIN_ATTACK: Duration = Duration::from_secs(13);
/// From node 3's ready line to node 1 seeing it alive and node 3 serving
/// quorum writes and reads. The original finding: 35 s. Without the
/// flood this takes well under a second (gossip every 100 ms, a
/// handshake, one refutation of the DOWN status), so the bound holds on a
/// busy machine too. It does not depend on node 1's port alone: node 1
/// also redials node 3 itself (at most `backoff_max`, 5 s, apart), and
/// node 2 gossips node 3's return. So the test also checks node 3's own
/// dials into the flooded port.
const BACK_WITHIN: Duration = Duration::from_secs(30);
/// The whole flood test, whatever hangs.
const FLOOD_TEST_LIMIT: Duration = Duration::from_secs(300);
const FLOOD_BUCKET: &[u8] = b"hs";

/// What an attacking connection does once connected.
#[derive(Clone, Copy, Debug)]
enum Stranger {
    /// Sends nothing.
    Silent,
    /// Sends bytes that are not TLS.
    Garbage,
    /// Sends the first 43 bytes of a TLS record announcing a 512-byte
    /// ClientHello, and never the rest.
    HalfHello,
}

/// What the attacking connections saw.
#[derive(Default)]
struct AttackCounts {
    /// Connections made.
    opened: AtomicU64,
    /// Connects (or sockets) that failed.
    connect_failed: AtomicU64,
    /// Silent and half-hello connections the node closed within a second:
    /// refused for want of a slot (with a slot they would be held until
    /// the handshake timeout).
    refused_at_once: AtomicU64,
    /// Silent and half-hello connections the node held a second or more
    /// (they had a slot) before closing them.
    held: AtomicU64,
    /// The longest any connection was held open by the node, in ms.
    longest_hold_ms: AtomicU64,
    /// Connections the node had not closed after [`STRANGER_PATIENCE`],
    /// nor within [`PROBE_PATIENCE`] of a probe byte.
    kept: AtomicU64,
    /// Connections open after [`STRANGER_PATIENCE`] that a probe byte
    /// then closed (reset or ended) within [`PROBE_PATIENCE`]: the node
    /// had never accepted them (a connection the attacker's kernel
    /// counted as made while node 1's kernel had dropped its last ACK),
    /// so they were not node 1's to close.
    unknown: AtomicU64,
}

impl AttackCounts {
    fn get(n: &AtomicU64) -> u64 {
        n.load(Ordering::Relaxed)
    }
}

const GARBAGE: &[u8] = b"\xff\xff\xff\xff this is not a TLS record, and it never will be\r\n";

fn half_hello() -> Vec<u8> {
    // Record: handshake (22), TLS 1.0 on the record layer, 512 bytes.
    let mut bytes = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    // ClientHello (1) of 508 bytes, version TLS 1.2, then 32 of "random".
    bytes.extend_from_slice(&[0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
    bytes.extend(std::iter::repeat_n(0x42u8, 32));
    bytes
}

/// Segments `stream` has sent that its peer's kernel has not acknowledged
/// (`tcpi_unacked` of `TCP_INFO`); 0 when that cannot be read, so that a
/// failed read counts a connection against the node, never for it.
fn unacknowledged(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data, zeroes are a valid value, and the
    // kernel writes at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket, and `info`/`len` as getsockopt expects.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        info.tcpi_unacked
    } else {
        0
    }
}

/// Reads until the peer closes the connection (or it fails).
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// One attacking connection, from 127.0.0.2, reopened each time the node
/// closes it, until the task is aborted.
async fn stranger(target: SocketAddr, kind: Stranger, counts: Arc<AttackCounts>) {
    let half = half_hello();
    loop {
        let connected = async {
            let socket = TcpSocket::new_v4().ok()?;
            socket.bind("127.0.0.2:0".parse().ok()?).ok()?;
            tokio::time::timeout(Duration::from_secs(2), socket.connect(target))
                .await
                .ok()?
                .ok()
        }
        .await;
        let Some(mut stream) = connected else {
            counts.connect_failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(REDIAL_PAUSE).await;
            continue;
        };
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let bytes: &[u8] = match kind {
            Stranger::Silent => &[],
            Stranger::Garbage => GARBAGE,
            Stranger::HalfHello => &half,
        };
        // The node may have closed it already; that is its right.
        let _ = stream.write_all(bytes).await;
        let closed = tokio::time::timeout(STRANGER_PATIENCE, until_closed(&mut stream)).await;
        let held = opened.elapsed();
        counts
            .longest_hold_ms
            .fetch_max(held.as_millis() as u64, Ordering::Relaxed);
        if closed.is_err() {
            let probed = tokio::time::timeout(PROBE_PATIENCE, async {
                if stream.write_all(&[0x16]).await.is_ok() {
                    until_closed(&mut stream).await;
                }
            })
            .await;
            // Still open: node 1's kernel acknowledged the byte only if it
            // holds the connection established (on loopback, at once);
            // one stuck behind a full accept queue is retransmitting it.
            let which = if probed.is_ok() || unacknowledged(&stream) > 0 {
                &counts.unknown
            } else {
                &counts.kept
            };
            which.fetch_add(1, Ordering::Relaxed);
        } else if !matches!(kind, Stranger::Garbage) {
            let which = if held < Duration::from_secs(1) {
                &counts.refused_at_once
            } else {
                &counts.held
            };
            which.fetch_add(1, Ordering::Relaxed);
        }
        drop(stream);
        tokio::time::sleep(REDIAL_PAUSE).await;
    }
}

/// Whether every node sees every node alive and all three in its ring,
/// with no ring change under way.
async fn formed(cluster: &Cluster) -> bool {
    for at in 1..=3 {
        let Some(c) = try_client(cluster, at).await else {
            return false;
        };
        match c.ring().await {
            Ok(r) if r.change.is_none() && r.nodes.len() == 3 => {}
            _ => return false,
        }
        if !sees(cluster, at, &[1, 2, 3], "Alive").await {
            return false;
        }
    }
    true
}

/// A client of node `id` alone, or `None` if it cannot connect.
async fn try_client(cluster: &Cluster, id: u64) -> Option<Client> {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(3),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let addr = cluster.node(id).client.to_string();
    Client::connect(&[addr.as_str()], config).await.ok()
}

/// A quorum write of a fresh key through node `id`, then a quorum read of
/// it through the same node: whether both succeeded.
async fn serves_quorum(cluster: &Cluster, id: u64, probe: u64) -> bool {
    let Some(c) = try_client(cluster, id).await else {
        return false;
    };
    let key = format!("probe-{probe}").into_bytes();
    let value = format!("written through node {id}").into_bytes();
    let w = WriteOptions {
        w: Some(Consistency::Quorum),
        ..WriteOptions::default()
    };
    if c.put_with(FLOOD_BUCKET, &key, &value, None, w)
        .await
        .is_err()
    {
        return false;
    }
    let r = ReadOptions {
        r: Some(Consistency::Quorum),
        ..ReadOptions::default()
    };
    matches!(c.get_with(FLOOD_BUCKET, &key, r).await, Ok(g) if g.value.as_deref() == Some(&value[..]))
}

/// The well-behaved client's read: node 1 coordinates, one replica
/// suffices (node 1's own), so it measures node 1 serving.
fn read_one() -> ReadOptions {
    ReadOptions {
        r: Some(Consistency::One),
        ..ReadOptions::default()
    }
}

/// The median of some latencies.
fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Times a get of `key` through `client` every 50 ms, each of which must
/// return `want`, `n` times (or until `stop`, if given); returns the
/// latencies and the failures.
async fn timed_gets(
    client: &Client,
    key: &[u8],
    want: &[u8],
    n: Option<usize>,
    stop: Option<&AtomicBool>,
) -> (Vec<Duration>, Vec<String>) {
    let mut times = Vec::new();
    let mut failures = Vec::new();
    while n.is_none_or(|n| times.len() + failures.len() < n)
        && !stop.is_some_and(|s| s.load(Ordering::Relaxed))
    {
        let start = Instant::now();
        match client.get_with(FLOOD_BUCKET, key, read_one()).await {
            Ok(g) if g.value.as_deref() == Some(want) => times.push(start.elapsed()),
            Ok(g) => failures.push(format!("wrong answer: {g:?}")),
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (times, failures)
}

/// The length of a file (0 if it cannot be read).
fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What was appended to a file after its first `from` bytes.
fn appended(path: &std::path::Path, from: u64) -> String {
    let all = std::fs::read(path).unwrap_or_default();
    let from = (from as usize).min(all.len());
    String::from_utf8_lossy(&all[from..]).into_owned()
}

/// Whether a log line is a warning about a refused or failed inbound
/// handshake on the peer port.
fn is_refusal_warning(line: &str) -> bool {
    line.contains("WARN")
        && (line.contains("too many handshakes in progress")
            || line.contains("refused inbound connection"))
}

/// The finding this answers: "Filling the 64 pre-auth handshake slots (of
/// the peer port) kept a restarted node out of the cluster for 35 s,
/// while a neighbour logged 67,077 warnings in 40 s."
///
/// 300 connections from 127.0.0.2 to node 1's peer port, silent, sending
/// garbage, or half a TLS ClientHello, each reopened 250 ms after node 1
/// closes it, for the whole test. Meanwhile node 3 is killed, seen down by
/// node 1, and restarted. Node 3 must be seen alive by node 1 and serve
/// quorum writes and reads within [`BACK_WITHIN`] of its ready line, and
/// none of its dials into node 1's flooded port may fail (node 3 comes
/// from 127.0.0.1, so the flood's per-address share leaves it slots);
/// node 1's log must hold no more refusal warnings than its rate limit
/// lets through; node 1 must stay small, not spin, and keep serving a
/// well-behaved client.
///
/// Checked to fail: with `max_pending_handshakes_per_ip = 64` (the flood
/// may take every slot) node 3's dial into node 1 is refused, and with the
/// refusal log not rate-limited node 1 logs thousands of lines; with the
/// default handshake timeout at 60 s, connections are counted as kept.
/// Checked again with the nodes' 2 s handshake timeout (2026-12-07): the
/// per-address limit at 64 fails it (one of node 3's dials refused), and
/// the nodes' timeout at 60 s with the test's waits for 2 s fails it (8
/// connections kept beyond 6 s and a probe).
///
/// A fresh CI machine once showed 11 of 27,662 connections open after
/// 20 s. Here that happens with `net.core.somaxconn` at 4 (163 of 18,040
/// open after 15 s): connections the attacker's kernel counts as made
/// that node 1's kernel never queued for it (their last ACK dropped at a
/// full accept queue; SYN cookies keep no state for them). The probe byte
/// sent after [`STRANGER_PATIENCE`] tells such connections from ones node
/// 1 holds (ended, or the byte never acknowledged), and the test prints
/// how many there were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_on_the_peer_port_neither_keeps_a_restarted_node_out_nor_floods_the_log()
{
    let _one = cluster::the_machine_alone().await;
    cluster::bounded(FLOOD_TEST_LIMIT, async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("node.toml");
        write_file(
            &config,
            &format!("[peer_port]\nhandshake_timeout_ms = {HANDSHAKE_TIMEOUT_MS}\n"),
        );
        let config = config.display().to_string();
        let mut cluster = Cluster::start_with(3, &["--config", &config]).await;
        let ok = wait_until(SETTLE, || formed(&cluster)).await;
        assert!(ok, "the cluster did not form\n{}", cluster.logs());
        let app = client_of(&cluster, 1).await;
        let all = WriteOptions {
            w: Some(Consistency::All),
            ..WriteOptions::default()
        };
        let (key, value): (&[u8], &[u8]) = (b"k", b"well-behaved");
        app.put_with(FLOOD_BUCKET, key, value, None, all)
            .await
            .unwrap_or_else(|e| panic!("put: {e}\n{}", cluster.logs()));
        let (before, failed) = timed_gets(&app, key, value, Some(20), None).await;
        assert!(failed.is_empty(), "before the attack: {failed:?}");
        let rss_before = cluster.node(1).rss_bytes().expect("node 1's RSS");
        let rss_peak = Cell::new(rss_before);
        let sample = |cluster: &Cluster| {
            let now = cluster.node(1).rss_bytes().unwrap_or(0);
            rss_peak.set(rss_peak.get().max(now));
        };

        // The attack, and the well-behaved client reading throughout.
        let log = cluster.node(1).stderr_path.clone();
        let log_from = file_len(&log);
        let cpu_before = cluster.node(1).cpu_time().expect("node 1's CPU time");
        let attack_started = Instant::now();
        let counts = Arc::new(AttackCounts::default());
        let mut attack = tokio::task::JoinSet::new();
        let target = cluster.node(1).peer;
        for i in 0..STRANGERS {
            let kind = match i % 3 {
                0 => Stranger::Silent,
                1 => Stranger::Garbage,
                _ => Stranger::HalfHello,
            };
            attack.spawn(stranger(target, kind, counts.clone()));
        }
        let stop_reading = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn({
            let (app, stop) = (app.clone(), stop_reading.clone());
            async move { timed_gets(&app, key, value, None, Some(&stop)).await }
        });
        // Let the flood take every slot it can before node 3 goes.
        while attack_started.elapsed() < 2 * HANDSHAKE_TIMEOUT {
            sample(&cluster);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        cluster.kill(3).await;
        let down = wait_until(SETTLE, || async {
            sample(&cluster);
            sees(&cluster, 1, &[3], "Down").await
        })
        .await;
        assert!(down, "node 1 did not see node 3 down\n{}", cluster.logs());
        let node3_log = cluster.node(3).stderr_path.clone();
        let node3_log_from = file_len(&node3_log);
        let restarting = Instant::now();
        cluster.restart(3).await;
        let ready_after = restarting.elapsed();
        let ready = Instant::now();
        let probes = Cell::new(0);
        let back = wait_until(2 * BACK_WITHIN, || async {
            sample(&cluster);
            probes.set(probes.get() + 1);
            sees(&cluster, 1, &[3], "Alive").await && serves_quorum(&cluster, 3, probes.get()).await
        })
        .await;
        let back_after = ready.elapsed();
        // Keep the flood on for two refusal-log intervals at least.
        while attack_started.elapsed() < MIN_ATTACK {
            sample(&cluster);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Stop everything, then measure.
        let attack_lasted = attack_started.elapsed();
        let cpu_after = cluster.node(1).cpu_time().expect("node 1's CPU time");
        attack.abort_all();
        while attack.join_next().await.is_some() {}
        stop_reading.store(true, Ordering::Relaxed);
        let (during, failed) = reader.await.expect("the well-behaved reader panicked");
        sample(&cluster);
        let log_window = attack_started.elapsed();
        let written = appended(&log, log_from);
        let refusal_lines = written.lines().filter(|l| is_refusal_warning(l)).count();
        let warn_lines = written.lines().filter(|l| l.contains("WARN")).count();
        // Node 3 dials node 1 as it starts (node 1 redials a down peer
        // only after a backoff of up to 5 s), through the flooded port.
        let node1_accepted = written
            .lines()
            .any(|l| l.contains("accepted connection") && l.contains("peer=n3"));
        let node1_addr = cluster.node(1).peer.to_string();
        let node3_written = appended(&node3_log, node3_log_from);
        let node3_dial_failures: Vec<&str> = node3_written
            .lines()
            .filter(|l| l.contains("WARN") && (l.contains("peer=n1") || l.contains(&node1_addr)))
            .collect();
        let cpu_share =
            (cpu_after.saturating_sub(cpu_before)).as_secs_f64() / attack_lasted.as_secs_f64();
        let c = &counts;
        println!(
            "handshake flood on node 1's peer port ({STRANGERS} connections from 127.0.0.2, \
             {HANDSHAKE_SLOTS} slots, {HANDSHAKE_SLOTS_PER_IP} per address), {attack_lasted:.1?}: \
             {} connections opened ({} failed to connect), {} refused at once, {} held until \
             the node closed them, longest held {} ms, {} kept beyond {STRANGER_PATIENCE:?} \
             and a probe, {} open after {STRANGER_PATIENCE:?} but unknown to the node",
            AttackCounts::get(&c.opened),
            AttackCounts::get(&c.connect_failed),
            AttackCounts::get(&c.refused_at_once),
            AttackCounts::get(&c.held),
            AttackCounts::get(&c.longest_hold_ms),
            AttackCounts::get(&c.kept),
            AttackCounts::get(&c.unknown),
        );
        println!(
            "node 3 restarted: ready line after {ready_after:.2?}, then seen alive by node 1 \
             and serving quorum writes and reads after {back_after:.2?} ({} probes); \
             node 1 accepted node 3's connection: {node1_accepted}; node 3's dials to node 1 \
             that failed: {}",
            probes.get(),
            node3_dial_failures.len()
        );
        println!(
            "node 1's log in {log_window:.1?}: {refusal_lines} refusal warnings \
             ({warn_lines} warnings in all); RSS {} MB before, {} MB peak; CPU {:.3} of a \
             core during the attack; well-behaved get p50 {:?} before, {:?} during \
             ({} gets, {} failed)",
            rss_before >> 20,
            rss_peak.get() >> 20,
            cpu_share,
            p50(before),
            if during.is_empty() {
                Duration::ZERO
            } else {
                p50(during.clone())
            },
            during.len() + failed.len(),
            failed.len(),
        );

        // Node 1 cut every connection off, at its handshake timeout at
        // the latest. (A connection its kernel never handed it is not
        // node 1's to cut; the probe tells those apart, and they are
        // printed above.)
        assert_eq!(
            AttackCounts::get(&c.kept),
            0,
            "node 1 kept strangers' connections beyond {STRANGER_PATIENCE:?}"
        );
        // The attack was real: it outnumbered the slots it could take,
        // and took some.
        assert!(
            AttackCounts::get(&c.refused_at_once) > 0 && AttackCounts::get(&c.held) > 0,
            "the flood neither filled the address's slots nor was refused"
        );
        assert!(
            back && back_after < BACK_WITHIN,
            "node 3 was not back (seen alive by node 1, serving quorum) within {BACK_WITHIN:?} \
             of its ready line under the flood (took {back_after:?}, back: {back})\n{}",
            cluster.logs()
        );
        // Node 3 got through the flooded port (or was dialed by node 1
        // first, which the log also shows): none of its dials to node 1
        // failed. With every slot held by the flood they are refused.
        assert!(
            node3_dial_failures.is_empty(),
            "node 3's dials to node 1 failed under the flood: {node3_dial_failures:#?}"
        );
        // One line per interval through the limiter, the first at once;
        // one more for a window that ends just past an interval.
        let allowed = (log_window.as_secs_f64() / REFUSAL_LOG_INTERVAL.as_secs_f64()) as usize + 2;
        assert!(
            refusal_lines <= allowed,
            "node 1 logged {refusal_lines} refusal warnings in {log_window:?} (at most \
             {allowed} expected)\n{}",
            cluster.stderr_tail(1, 20)
        );
        assert!(
            rss_peak.get() < rss_before + (200 << 20),
            "node 1's RSS grew from {} MB to {} MB",
            rss_before >> 20,
            rss_peak.get() >> 20
        );
        // The node has two cores to itself at most; averaged over the
        // attack, one and a half of them means it spins, not that it
        // answers a thousand connections a second.
        assert!(
            cpu_share < 1.5,
            "node 1 used {cpu_share:.2} cores during the attack"
        );
        assert!(
            failed.is_empty() && !during.is_empty(),
            "the well-behaved client was not served during the attack: {failed:?}"
        );
    })
    .await;
}

/// The shapes the verdict test cuts four nodes into, one after another.
const SHAPES: [(&[u64], &[u64]); 4] = [
    (&[1, 2], &[3, 4]),
    (&[1], &[2, 3, 4]),
    (&[1, 3], &[2, 4]),
    (&[1, 2, 3], &[4]),
];

/// The verdicts node `at` logged (`membership: nP is suspect|down`) about
/// a peer in `own` (its own side), in `log`.
fn verdicts_against(at: u64, own: &[u64], log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| {
            own.iter().any(|&p| {
                p != at
                    && (line.contains(&format!("membership: n{p} is suspect"))
                        || line.contains(&format!("membership: n{p} is down")))
            })
        })
        .map(|line| format!("node {at}: {line}"))
        .collect()
}

/// Issue [14], item 0, on processes: four `ringkv-node`s are cut into two
/// sides, four times in different shapes, and healed each time. Each side
/// convicts the other, and after the heal the other side's gossip carries
/// its verdicts across: that this side's nodes are DOWN. A node must
/// never take a verdict of SUSPECT or DOWN about a peer it hears from
/// directly, so no node may log one about a peer of its own side, from
/// the cut until several rounds after the heal. Every membership change
/// is logged at INFO, so a verdict that lasted a moment is still seen.
///
/// With the hold-back of relayed verdicts switched off
/// (`Membership::hold_back` answering no), this test failed: relayed
/// verdicts about same-side peers were taken after the heals. Seen again
/// after its wait after each heal went from 4 s to twenty gossip rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healed_partitions_leave_no_verdict_against_a_peer_of_ones_own_side() {
    let _one = cluster::the_machine_alone().await;
    cluster::bounded(Duration::from_secs(300), async {
        let cluster = Cluster::start_with(4, &["--allow-fault-injection"]).await;
        let mut clients = Vec::new();
        for id in 1..=4 {
            clients.push(client_of(&cluster, id).await);
        }
        let all = [1, 2, 3, 4];
        let everyone_alive = || async {
            for at in 1..=4 {
                if !sees(&cluster, at, &all, "Alive").await {
                    return false;
                }
            }
            true
        };
        assert!(
            wait_until(SETTLE, everyone_alive).await,
            "the cluster did not form\n{}",
            cluster.logs()
        );
        let mut false_verdicts = Vec::new();
        for (a, b) in SHAPES {
            let marks: Vec<u64> = (1..=4)
                .map(|id| file_len(&cluster.node(id).stderr_path))
                .collect();
            for (side, other) in [(a, b), (b, a)] {
                let other: Vec<NodeId> = other.iter().map(|&id| NodeId(id)).collect();
                for &id in side {
                    clients[(id - 1) as usize]
                        .block_outbound(&other)
                        .await
                        .unwrap();
                }
            }
            let split = wait_until(SETTLE, || async {
                for (side, other) in [(a, b), (b, a)] {
                    for &at in side {
                        let mut want = other.to_vec();
                        want.push(at);
                        if !sees(&cluster, at, &want, "Down").await {
                            return false;
                        }
                    }
                }
                true
            })
            .await;
            assert!(
                split,
                "{a:?} | {b:?}: the sides did not convict each other\n{}",
                cluster.logs()
            );
            for c in &clients {
                assert_eq!(c.block_outbound(&[]).await.unwrap(), vec![]);
            }
            let healed = Instant::now();
            assert!(
                wait_until(SETTLE, everyone_alive).await,
                "{a:?} | {b:?}: the healed nodes did not see each other\n{}",
                cluster.logs()
            );
            println!(
                "{a:?} | {b:?}: every node saw every other alive {:?} after the heal",
                healed.elapsed()
            );
            // Twenty gossip rounds, in which the other side's verdicts
            // reach every node (in two or three: four nodes).
            tokio::time::sleep(Duration::from_millis(20 * cluster::GOSSIP_MS)).await;
            for (side, _) in [(a, b), (b, a)] {
                for &at in side {
                    let log = appended(&cluster.node(at).stderr_path, marks[(at - 1) as usize]);
                    false_verdicts.extend(verdicts_against(at, side, &log));
                }
            }
        }
        assert!(
            false_verdicts.is_empty(),
            "verdicts against peers heard directly:\n{}",
            false_verdicts.join("\n")
        );
    })
    .await;
}
