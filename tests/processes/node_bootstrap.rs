//! Bootstrap and join speed with real `ringkv-node` processes on loopback,
//! started as the README starts them: the default gossip interval (1 s)
//! and the default 160 virtual nodes, TLS between the nodes (issue [14],
//! item 4).
//!
//! What it shows:
//! - three nodes started one after the other have their whole ring in
//!   force (three members, no change in progress, one epoch everywhere)
//!   soon after the last one prints `ready`. The bound is generous, for a
//!   busy CI machine ([`SETTLE_BOUND`]); the strict figure (3 s idle, 5 s
//!   at load average 8) is measured by hand and in the `bootstrap` bench,
//!   and this test prints what it saw. Each node pulled its ranges in one
//!   transfer: in a cluster of two or three with `n = 3`, every range a
//!   joiner gains has the same old replicas, so they are one run of the
//!   ring (before issue [14] the third node ran 320 transfers, one per
//!   move, and took 14 s on an idle machine).
//! - a fourth node joining three that hold 2,000 keys gets the data it
//!   replicates, in transfers none of which could have been joined to
//!   another: no two transfers of one node meet end to start with the
//!   same sources.

use crate::support::cluster;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use cluster::{start_process, Cluster, CLUSTER_NAME};
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{ReadOptions, TransferView, WriteOptions};
use ringkv::replication::Consistency;
use tokio::process::Child;

const TEST_LIMIT: Duration = Duration::from_secs(240);

/// How long after the last `ready` the test lets the ring take to settle:
/// far above the target (3 s), for a CI machine running other tests.
const SETTLE_BOUND: Duration = Duration::from_secs(20);

/// How long the fourth node's join may take, its 1,500 copies included.
const JOIN_BOUND: Duration = Duration::from_secs(60);

const KEYS: usize = 2000;
const BUCKET: &[u8] = b"boot";

/// A node started with the README's flags (no gossip or vnode flags: the
/// defaults).
struct Node {
    client: String,
    peer: String,
    _child: Child,
}

/// Starts node `id`, joining through `seed` unless it founds the cluster.
/// `harness` gives the secret, the CA and a directory (it runs no node).
async fn start(harness: &Cluster, id: u64, seed: Option<&str>) -> Node {
    start_with(harness, id, seed, &[]).await
}

/// [`start`] with more flags.
async fn start_with(harness: &Cluster, id: u64, seed: Option<&str>, extra: &[&str]) -> Node {
    let root = harness.root();
    let dir = root.join(format!("node-{id}"));
    let mut args: Vec<String> = vec![
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--client-listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--secret-file".into(),
        harness.secret_file().display().to_string(),
        "--cluster".into(),
        CLUSTER_NAME.into(),
        "--no-client-auth".into(),
    ];
    args.extend(harness.peer_tls_args(id));
    if let Some(seed) = seed {
        args.push("--seed".into());
        args.push(format!("1@{seed}"));
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let log = root.join(format!("node-{id}.stderr"));
    match start_process(&args, &log).await {
        Ok((child, ready)) => Node {
            client: ready.client.to_string(),
            peer: ready.peer.to_string(),
            _child: child,
        },
        Err(why) => panic!("node {id} did not start: {why}\n{}", tail(&log)),
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn logs(harness: &Cluster, nodes: usize) -> String {
    (1..=nodes)
        .map(|id| {
            let log = harness.root().join(format!("node-{id}.stderr"));
            format!("--- node {id} ---\n{}", tail(&log))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn client_of(addr: &str) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(8),
        ..ClientConfig::default()
    };
    match Client::connect(&[addr], config).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to {addr}: {e}"),
    }
}

/// Whether every node has a ring of `members` nodes in force, the same
/// epoch everywhere, and no change in progress.
async fn settled(clients: &[Client], members: usize) -> bool {
    let mut epochs = BTreeSet::new();
    for c in clients {
        match c.ring().await {
            Ok(r) if r.change.is_none() && r.nodes.len() == members => {
                epochs.insert(r.epoch);
            }
            _ => return false,
        }
    }
    epochs.len() == 1
}

/// Polls [`settled`] every 20 ms for up to `limit`; how long it took.
async fn time_to_settle(clients: &[Client], members: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if settled(clients, members).await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn transfers(c: &Client) -> Vec<TransferView> {
    match c.status().await {
        Ok(s) => s.transfers,
        Err(e) => panic!("status: {e}"),
    }
}

/// Pairs of transfers that meet end to start with the same sources: one
/// transfer could have carried both.
fn joinable(views: &[TransferView]) -> Vec<(u64, u64)> {
    let sources = |v: &TransferView| v.sources.iter().copied().collect::<BTreeSet<_>>();
    let mut pairs = Vec::new();
    for a in views {
        for b in views {
            if a.id != b.id && a.through == b.after && sources(a) == sources(b) {
                pairs.push((a.id, b.id));
            }
        }
    }
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_three_node_cluster_has_its_ring_in_force_seconds_after_the_last_ready() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let harness = Cluster::start(0).await;
        let first = start(&harness, 1, None).await;
        let mut nodes = vec![start(&harness, 2, Some(&first.peer)).await];
        nodes.push(start(&harness, 3, Some(&first.peer)).await);
        let last_ready = Instant::now();
        nodes.insert(0, first);
        let mut clients = Vec::new();
        for n in &nodes {
            clients.push(client_of(&n.client).await);
        }
        let took = time_to_settle(&clients, 3, SETTLE_BOUND).await;
        let since_ready = last_ready.elapsed();
        if took.is_none() {
            panic!(
                "the ring was not in force {since_ready:?} after the last ready\n{}",
                logs(&harness, 3)
            );
        }
        eprintln!(
            "bootstrap: 3 nodes, ring in force {:.3} s after the last ready",
            since_ready.as_secs_f64()
        );
        for (i, c) in clients.iter().enumerate() {
            let views = transfers(c).await;
            eprintln!("node {}: {} transfers", i + 1, views.len());
            assert!(
                views.len() <= 1,
                "node {} ran {} transfers for a join with nothing to move: {views:?}",
                i + 1,
                views.len()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_gets_its_data_in_as_few_transfers_as_its_ranges_need() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let harness = Cluster::start(0).await;
        let first = start(&harness, 1, None).await;
        let mut nodes = vec![start(&harness, 2, Some(&first.peer)).await];
        nodes.push(start(&harness, 3, Some(&first.peer)).await);
        nodes.insert(0, first);
        let mut clients = Vec::new();
        for n in &nodes {
            clients.push(client_of(&n.client).await);
        }
        let formed = time_to_settle(&clients, 3, SETTLE_BOUND).await;
        assert!(formed.is_some(), "no ring of 3\n{}", logs(&harness, 3));
        let quorum = WriteOptions {
            w: Some(Consistency::Quorum),
            ..WriteOptions::default()
        };
        for k in 0..KEYS {
            let key = format!("key-{k}");
            let c = &clients[k % clients.len()];
            let mut stored = false;
            for _ in 0..5 {
                let put = c.put_with(BUCKET, key.as_bytes(), b"v", None, quorum.clone());
                if put.await.is_ok() {
                    stored = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(stored, "{key} was not stored\n{}", logs(&harness, 3));
        }

        let fourth = start_with(&harness, 4, Some(&nodes[0].peer), &["--log-format", "json"]).await;
        let ready = Instant::now();
        clients.push(client_of(&fourth.client).await);
        nodes.push(fourth);
        let took = time_to_settle(&clients, 4, JOIN_BOUND).await;
        let Some(took) = took else {
            panic!(
                "node 4's join was not in force {:?} after its ready\n{}",
                ready.elapsed(),
                logs(&harness, 4)
            );
        };
        let views = transfers(&clients[3]).await;
        let copies: u64 = views.iter().map(|v| v.keys).sum();
        eprintln!(
            "join: node 4 with {KEYS} keys in the cluster, in force {:.3} s after its ready \
             ({:.3} s of polling), {} transfers, {copies} copies",
            ready.elapsed().as_secs_f64(),
            took.as_secs_f64(),
            views.len()
        );
        assert!(!views.is_empty());
        assert!(
            views.iter().all(|v| v.state == "done"),
            "every transfer done: {views:?}"
        );
        let pairs = joinable(&views);
        assert!(
            pairs.is_empty(),
            "transfers that one could have carried: {pairs:?} of {views:?}"
        );
        // Every key is readable at QUORUM through the new node.
        let read = ReadOptions {
            r: Some(Consistency::Quorum),
            ..ReadOptions::default()
        };
        for k in 0..KEYS {
            let key = format!("key-{k}");
            let got = clients[3]
                .get_with(BUCKET, key.as_bytes(), read.clone())
                .await;
            match got {
                Ok(g) => assert_eq!(g.value.as_deref(), Some(&b"v"[..]), "{key}"),
                Err(e) => panic!("{key}: {e}\n{}", logs(&harness, 4)),
            }
        }

        // Issue [15]: the join in the logs. Node 1 writes text, node 4
        // (started with --log-format json) one JSON object per line.
        let log_of = |id: u64| {
            std::fs::read_to_string(harness.root().join(format!("node-{id}.stderr")))
                .unwrap_or_default()
        };
        let first_log = log_of(1);
        for line in [
            "ring: the join of n4 began",
            "ring: epoch",
            "in force, 4 nodes",
            "membership: n4 is up",
        ] {
            assert!(
                first_log.contains(line),
                "node 1 did not log {line:?}:\n{first_log}"
            );
        }
        let events: Vec<serde_json::Value> = log_of(4)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect();
        let message = |e: &serde_json::Value| {
            e["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            events
                .iter()
                .any(|e| message(e) == "ready" && e["level"] == "INFO"),
            "node 4 logged no ready event: {events:?}"
        );
        let done: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| message(e).starts_with("transfer ") && message(e).contains(" done: "))
            .collect();
        assert_eq!(
            done.len(),
            views.len(),
            "one line per transfer done: {done:?}"
        );
        let logged: u64 = done
            .iter()
            .map(|e| e["fields"]["keys"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(
            logged, copies,
            "the keys of the transfers, as logged: {done:?}"
        );
        assert!(
            events.iter().any(|e| message(e).starts_with("ring: epoch")
                && message(e).ends_with("in force, 4 nodes")),
            "node 4 did not log the ring in force: {events:?}"
        );

        // A crash in the logs: node 3 is killed; node 1 logs it down.
        let third = nodes.remove(2);
        drop(third);
        let down = cluster::wait_until(Duration::from_secs(60), || async {
            log_of(1).contains("membership: n3 is down")
        })
        .await;
        assert!(down, "node 1 did not log node 3 down:\n{}", log_of(1));
    })
    .await;
}

/// A free loopback port: bound, then let go (nothing listens on it after).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

/// The flags of a node `id` that joins through `seeds` with a short join
/// deadline, its data in `harness`'s directory, certified by `harness`'s
/// CA unless `tls` says otherwise.
fn joiner(
    harness: &Cluster,
    id: u64,
    listen: &str,
    seeds: &[String],
    tls: Vec<String>,
) -> Vec<String> {
    let dir = harness.root().join(format!("joiner-{id}"));
    let mut args: Vec<String> = vec![
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        listen.into(),
        "--client-listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--secret-file".into(),
        harness.secret_file().display().to_string(),
        "--cluster".into(),
        CLUSTER_NAME.into(),
        "--gossip-interval-ms".into(),
        "100".into(),
        "--no-client-auth".into(),
        "--join-timeout-ms".into(),
        "3000".into(),
    ];
    args.extend(tls);
    for s in seeds {
        args.push("--seed".into());
        args.push(s.clone());
    }
    args
}

/// Runs `args` to its exit; its status code and stderr.
async fn exit_of(args: Vec<String>) -> (Option<i32>, String) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, stderr) = cluster::run_to_exit(&refs).await;
    (status.code(), stderr)
}

/// Replaces the value of `flag` in `args`.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == flag)
        .expect("the flag is there");
    args[at + 1] = value.into();
    args
}

/// Issue [15], item 2: `ready` only once the node has joined; a node that
/// cannot join exits with status 3 and says why, for each reason a deploy
/// gets wrong: a seed nobody listens at, another cluster secret, another
/// cluster's certificate, a seed id that names another node, and nodes
/// that all wait for each other with no founder. `--bootstrap` makes a
/// founder of a node with seeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_join_exits_with_status_3_and_says_why() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let harness = Cluster::start(1).await;
        let seed = format!("1@{}", harness.node(1).peer);

        let nobody = format!("1@127.0.0.1:{}", free_port());
        let unreachable = joiner(
            &harness,
            2,
            "127.0.0.1:0",
            std::slice::from_ref(&nobody),
            harness.peer_tls_args(2),
        );

        let other_secret = harness.root().join("other-secret");
        std::fs::write(&other_secret, "another cluster secret, long enough\n").unwrap();
        let secret_mismatch = with(
            joiner(
                &harness,
                3,
                "127.0.0.1:0",
                std::slice::from_ref(&seed),
                harness.peer_tls_args(3),
            ),
            "--secret-file",
            &other_secret.display().to_string(),
        );

        let other = ringkv::ClusterCa::generate("other-cluster").unwrap();
        let creds = other.issue(ringkv::NodeId(4)).unwrap();
        let files = |name: &str, text: &str| {
            let path = harness.root().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let other_tls = vec![
            "--peer-ca".to_string(),
            files("other-ca.pem", other.cert_pem()),
            "--peer-cert".into(),
            files("other-4.pem", &creds.cert_pem),
            "--peer-key".into(),
            files("other-4.key", &creds.key_pem),
        ];
        let other_cluster = with(
            joiner(
                &harness,
                4,
                "127.0.0.1:0",
                std::slice::from_ref(&seed),
                other_tls,
            ),
            "--cluster",
            "other-cluster",
        );

        let wrong_id = joiner(
            &harness,
            5,
            "127.0.0.1:0",
            &[format!("7@{}", harness.node(1).peer)],
            harness.peer_tls_args(5),
        );

        // Nodes 8 and 9 are each other's only seed, and neither founds.
        let (p8, p9) = (free_port(), free_port());
        let lonely_8 = joiner(
            &harness,
            8,
            &format!("127.0.0.1:{p8}"),
            &[format!("9@127.0.0.1:{p9}")],
            harness.peer_tls_args(8),
        );
        let lonely_9 = joiner(
            &harness,
            9,
            &format!("127.0.0.1:{p9}"),
            &[format!("8@127.0.0.1:{p8}")],
            harness.peer_tls_args(9),
        );

        let (a, b, c, d, e, f) = tokio::join!(
            exit_of(unreachable),
            exit_of(secret_mismatch),
            exit_of(other_cluster),
            exit_of(wrong_id),
            exit_of(lonely_8),
            exit_of(lonely_9),
        );
        let cases = [
            (
                "an unreachable seed",
                a,
                vec!["no seed could be reached", &nobody[2..], "unreachable"],
            ),
            (
                "another secret",
                b,
                vec!["no seed could be reached", "cluster secret mismatch"],
            ),
            (
                "another cluster",
                c,
                vec!["no seed could be reached", "TLS refused"],
            ),
            (
                "a wrong seed id",
                d,
                vec!["no seed could be reached", "seed n7", "wrong node id"],
            ),
            (
                "no founder (8)",
                e,
                vec!["reached n9 but learned no ring", "--bootstrap"],
            ),
            (
                "no founder (9)",
                f,
                vec!["reached n8 but learned no ring", "--bootstrap"],
            ),
        ];
        for (what, (code, stderr), needles) in cases {
            eprintln!("{what}: {code:?} {}", stderr.lines().last().unwrap_or(""));
            assert_eq!(code, Some(3), "{what}: exit status; stderr:\n{stderr}");
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            assert!(
                last.starts_with("ringkv-node: cannot join the cluster: "),
                "{what}: the last line says why: {last:?}"
            );
            for needle in needles {
                assert!(last.contains(needle), "{what}: {needle:?} not in {last:?}");
            }
            assert!(!stderr.contains("ready"), "{what}: said ready:\n{stderr}");
        }

        // A node still waiting to join stops on SIGTERM, at once and
        // cleanly (before, it ignored signals until it was ready).
        let waiting = with(
            joiner(
                &harness,
                7,
                "127.0.0.1:0",
                std::slice::from_ref(&nobody),
                harness.peer_tls_args(7),
            ),
            "--join-timeout-ms",
            "600000",
        );
        let mut child = tokio::process::Command::new(cluster::NODE_BIN)
            .args(&waiting)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting a node that waits to join");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pid = child.id().expect("its pid") as i32;
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the waiting node stopped within 10 s of SIGTERM")
            .expect("its status");
        assert!(
            status.success(),
            "a node stopped while joining exits 0: {status:?}"
        );

        // The same node as the unreachable case's, with --bootstrap: it
        // founds a cluster of its own and is ready at once.
        let mut founder = joiner(
            &harness,
            6,
            "127.0.0.1:0",
            &[nobody],
            harness.peer_tls_args(6),
        );
        founder.push("--bootstrap".into());
        let log = harness.root().join("founder.stderr");
        let (_child, ready) = match start_process(&founder, &log).await {
            Ok(started) => started,
            Err(why) => panic!("the --bootstrap node did not start: {why}\n{}", tail(&log)),
        };
        let c = client_of(&ready.client.to_string()).await;
        let ring = c.ring().await.unwrap();
        let members: Vec<u64> = ring.nodes.iter().map(|n| n.node.0).collect();
        assert_eq!(members, vec![6], "a ring of its own: {ring:?}");
        let one = WriteOptions {
            w: Some(Consistency::One),
            ..WriteOptions::default()
        };
        c.put_with(BUCKET, b"k", b"v", None, one).await.unwrap();
        assert!(
            tail(&log).contains("in the ring"),
            "the join is logged:\n{}",
            tail(&log)
        );
    })
    .await;
}

/// A node's `ready` means the ring holds it: at the moment the harness
/// has seen every node's ready line, every node's ring (in force, or the
/// target of the change in progress) has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_means_the_ring_holds_the_node() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let harness = Cluster::start(0).await;
        let first = start(&harness, 1, None).await;
        // Every node stays running until the end of the test, and is
        // killed when these are dropped (never leaked past the test).
        let mut running = Vec::new();
        for id in 2..=3u64 {
            let node = start(&harness, id, Some(&first.peer)).await;
            let ring = client_of(&node.client).await.ring().await.unwrap();
            let in_force = ring.nodes.iter().any(|n| n.node.0 == id);
            let joining = ring
                .change
                .as_ref()
                .is_some_and(|c| c.kind == "join" && c.node.0 == id);
            assert!(
                in_force || joining,
                "node {id} said ready before its ring held it: {ring:?}"
            );
            running.push(node);
        }
        drop(running);
    })
    .await;
}
