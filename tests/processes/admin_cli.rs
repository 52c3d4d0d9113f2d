//! `ringkv-admin` against real `ringkv-node` processes on loopback (issue
//! [15], item 4).
//!
//! What it shows, on one three-node cluster:
//! - `status --json` lists the three nodes, each answering, holding the
//!   200 keys written at `ALL` three times over; plain `status` prints a
//!   row per node.
//! - `compact`, `flush`, `compact` answer for every node; the flush leaves
//!   each memtable empty or smaller and counts a flush.
//! - `snapshot DIR` writes `DIR/node-<id>/SNAPSHOT.json` with entries on
//!   every node; a second snapshot into the same directory fails (status
//!   1, "not empty"), a relative directory is refused.
//! - `repair --wait` ends with status 0 and every node's round over.
//! - `transfers --state done` lists only finished transfers; `ring` shows
//!   three nodes whose shares add up to 1; a closed port first in
//!   `--connect` is passed over.
//! - bad input (an unknown command, `--range garbage`, forgetting the
//!   connected node, draining a node no address given is, a closed port,
//!   `--user` without a password) fails with a message and a non-zero
//!   status, never a panic.
//! - after node 3 is killed, `status` ends with status 1 and node 3's row
//!   says it is unreachable and DOWN.
//!
//! And on a second cluster: `drain --node 3` is refused when no address
//! given is node 3's (status 2, on the first cluster); given node 1's and
//! node 3's addresses it drains node 3: a put sent to node 3 fails with
//! `ShuttingDown`, and node 1's ring soon no longer holds node 3.
//!
//! And on a one-node cluster whose client port wants TLS and a password:
//! the admin connects with `--tls-ca` and a password from a file or from
//! `RINGKV_PASSWORD`; a wrong password or no TLS cannot connect (status
//! 2); a user without the admin role cannot flush (status 1).
//!
//! Every wait is bounded; the clusters gossip every 100 ms.

use crate::support::cluster;

use std::process::Stdio;
use std::time::Duration;

use cluster::{bounded, run_to_exit, users_add, wait_until, Cluster};
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{ErrorCode, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::Error;
use serde_json::Value;

const ADMIN_BIN: &str = env!("CARGO_BIN_EXE_ringkv-admin-under-test");

const TEST_LIMIT: Duration = Duration::from_secs(300);

/// How long a cluster may take to form, a kill to be seen, a change to
/// finish: generous, for a busy CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// How long one run of `ringkv-admin` may take.
const RUN_LIMIT: Duration = Duration::from_secs(90);

const BUCKET: &[u8] = b"admin";
const KEYS: usize = 200;

/// What one run of `ringkv-admin` did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", self.stdout, self.stderr))
    }

    fn assert_code(&self, code: i32, what: &str) {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self.assert_no_panic(what);
    }

    fn assert_no_panic(&self, what: &str) {
        assert!(
            !self.stderr.contains("panicked"),
            "{what} panicked: {}",
            self.stderr
        );
    }
}

/// Runs `ringkv-admin` with `args`, connected to `addr`.
async fn admin(addr: &str, args: &[&str]) -> Run {
    let mut all = vec!["--connect", addr];
    all.extend_from_slice(args);
    admin_raw(&all).await
}

/// Runs `ringkv-admin` with exactly `args`.
async fn admin_raw(args: &[&str]) -> Run {
    admin_with_password(args, None).await
}

/// Runs `ringkv-admin` with exactly `args`, and `RINGKV_PASSWORD` set to
/// `password` (unset for `None`).
async fn admin_with_password(args: &[&str], password: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(ADMIN_BIN);
    match password {
        Some(p) => command.env("RINGKV_PASSWORD", p),
        None => command.env_remove("RINGKV_PASSWORD"),
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(RUN_LIMIT, out).await {
        Ok(Ok(out)) => Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("cannot run {ADMIN_BIN}: {e}"),
        Err(_) => panic!("ringkv-admin {args:?} did not end within {RUN_LIMIT:?}"),
    }
}

/// Runs `check` every 200 ms until it says done or `limit` passes;
/// returns whether it did, and what the last run gave.
async fn poll_until<T, F, Fut>(limit: Duration, mut check: F) -> (bool, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
{
    let start = std::time::Instant::now();
    loop {
        let (done, value) = check().await;
        if done || start.elapsed() > limit {
            return (done, value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client of the one node at `addr`, trying once per request.
async fn client_of(addr: &str) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(8),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    match Client::connect(&[addr], config).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to {addr}: {e}"),
    }
}

/// Waits until node 1's ring holds `members` with no change in progress.
async fn wait_for_ring(cluster: &Cluster, members: &[u64]) {
    let client = client_of(&cluster.client_addrs()[0]).await;
    let formed = wait_until(SETTLE, || async {
        match client.ring().await {
            Ok(r) => {
                r.change.is_none()
                    && r.nodes.iter().map(|n| n.node.0).collect::<Vec<_>>() == members
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(
        formed,
        "the ring did not become {members:?}\n{}",
        cluster.logs()
    );
}

/// The `"nodes"` array of a per-node command's JSON, with each entry's
/// node id.
fn nodes_of(doc: &Value) -> Vec<(u64, &Value)> {
    doc["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes array in {doc}"))
        .iter()
        .map(|n| (n["node"].as_u64().unwrap_or_else(|| panic!("{n}")), n))
        .collect()
}

/// The `ok` object of every node, failing on an error answer.
fn oks(doc: &Value, what: &str) -> Vec<(u64, Value)> {
    nodes_of(doc)
        .into_iter()
        .map(|(id, n)| match n.get("ok") {
            Some(ok) => (id, ok.clone()),
            None => panic!("{what}: node {id} answered with an error: {n}"),
        })
        .collect()
}

fn field(v: &Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_on_a_three_node_cluster() {
    let _one = cluster::cluster_slot().await;
    bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start(3).await;
        wait_for_ring(&cluster, &[1, 2, 3]).await;
        let addrs = cluster.client_addrs();
        let node1 = addrs[0].as_str();

        // 200 keys on all three replicas.
        let client = client_of(node1).await;
        let all = WriteOptions {
            w: Some(Consistency::All),
            ..WriteOptions::default()
        };
        for i in 0..KEYS {
            let (k, v) = (format!("k{i}"), format!("v{i}"));
            if let Err(e) = client
                .put_with(BUCKET, k.as_bytes(), v.as_bytes(), None, all.clone())
                .await
            {
                panic!("writing {k} at ALL: {e}\n{}", cluster.logs());
            }
        }

        // status --json: three nodes, each answering, the keys counted.
        let (counted, doc) = poll_until(Duration::from_secs(20), || async {
            let run = admin(node1, &["status", "--json"]).await;
            run.assert_code(0, "status --json");
            let doc = run.json();
            let nodes = oks(&doc, "status");
            let ids: Vec<u64> = nodes.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, vec![1, 2, 3], "{doc}");
            let keys: u64 = nodes.iter().map(|(_, ok)| field(ok, "keys")).sum();
            (keys >= 3 * KEYS as u64, doc)
        })
        .await;
        assert!(counted, "fewer than 600 keys counted: {doc}");
        assert_eq!(doc["connected"]["node"].as_u64(), Some(1), "{doc}");
        for (id, n) in nodes_of(&doc) {
            assert_eq!(n["state"], "Alive", "node {id}: {doc}");
        }

        // Plain status: a row per node.
        let run = admin(node1, &["status"]).await;
        run.assert_code(0, "status");
        for id in 1..=3 {
            let row = format!("n{id} ");
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l.starts_with(&row) && l.contains("Alive")),
                "no row for node {id}:\n{}",
                run.stdout
            );
        }

        // compact (the figures before), flush, compact again.
        let run = admin(node1, &["compact", "--json"]).await;
        run.assert_code(0, "compact");
        let before: Vec<(u64, Value)> = oks(&run.json(), "compact");
        assert_eq!(before.len(), 3, "{}", run.stdout);
        let run = admin(node1, &["flush", "--json"]).await;
        run.assert_code(0, "flush");
        let after = oks(&run.json(), "flush");
        assert_eq!(after.len(), 3, "{}", run.stdout);
        for ((id, was), (_, now)) in before.iter().zip(&after) {
            let (was_mem, now_mem) = (field(was, "memtable_bytes"), field(now, "memtable_bytes"));
            assert!(
                now_mem == 0 || now_mem < was_mem,
                "node {id}: memtable {was_mem} before the flush, {now_mem} after"
            );
        }
        // The flush is counted: in the flush's answer, or just after (the
        // LSM engine counts a flush after it makes it visible, so the
        // answer may come a moment before the count).
        let run = admin(node1, &["compact", "--json"]).await;
        run.assert_code(0, "compact after flush");
        let later = oks(&run.json(), "compact");
        assert_eq!(later.len(), 3, "{}", run.stdout);
        for ((id, now), (_, then)) in after.iter().zip(&later) {
            assert!(
                field(now, "flushes") >= 1 || field(then, "flushes") >= 1,
                "node {id} counted no flush: {now}, then {then}"
            );
        }
        // One node only.
        let run = admin(node1, &["flush", "--node", "2", "--json"]).await;
        run.assert_code(0, "flush --node 2");
        let ids: Vec<u64> = nodes_of(&run.json()).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![2]);

        // snapshot into a fresh directory: every node writes its part.
        let snap = cluster.root().join("snap");
        let snap_arg = snap.display().to_string();
        let run = admin(node1, &["snapshot", &snap_arg, "--json"]).await;
        run.assert_code(0, "snapshot");
        let written = oks(&run.json(), "snapshot");
        assert_eq!(written.len(), 3, "{}", run.stdout);
        for (id, view) in &written {
            assert!(field(view, "entries") > 0, "node {id}: {view}");
            let file = snap.join(format!("node-{id}")).join("SNAPSHOT.json");
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let described: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(field(&described, "entries") > 0, "{text}");
            assert_eq!(field(&described, "node"), *id, "{text}");
        }
        // Into the same directory again: refused by every node.
        let run = admin(node1, &["snapshot", &snap_arg]).await;
        run.assert_code(1, "a second snapshot");
        assert!(run.stderr.contains("not empty"), "{}", run.stderr);
        // A relative directory: refused before asking anyone.
        let run = admin(node1, &["snapshot", "relative/snap"]).await;
        assert_ne!(run.code, Some(0), "a relative snapshot directory");
        run.assert_no_panic("snapshot relative/snap");
        assert!(run.stderr.contains("absolute"), "{}", run.stderr);
        assert!(
            run.stderr.starts_with("ringkv-admin: ") && run.stderr.lines().count() == 1,
            "{}",
            run.stderr
        );

        // repair --wait: every node's round is over.
        let run = admin(node1, &["repair", "--wait", "--json"]).await;
        run.assert_code(0, "repair --wait");
        let repaired = oks(&run.json(), "repair");
        assert_eq!(repaired.len(), 3, "{}", run.stdout);
        for (id, r) in &repaired {
            assert_eq!(r["done"], true, "node {id}: {r}");
            assert!(
                field(r, "rounds") >= field(r, "until_rounds"),
                "node {id}: {r}"
            );
        }
        // A node's whole share, over one range, in plain text.
        let run = admin(
            node1,
            &[
                "repair",
                "--node",
                "2",
                "--range",
                "0:0x8000000000000000",
                "--wait",
            ],
        )
        .await;
        run.assert_code(0, "repair --node 2 --range --wait");
        assert!(
            run.stdout.lines().any(|l| l.starts_with("n2 ")),
            "{}",
            run.stdout
        );

        // transfers: the filter holds.
        let run = admin(node1, &["transfers", "--state", "done", "--json"]).await;
        run.assert_code(0, "transfers");
        let doc = run.json();
        let transfers = doc["transfers"].as_array().expect("a transfers array");
        for t in transfers {
            assert_eq!(t["state"], "done", "{t}");
            assert!(t["node"].as_u64().is_some(), "{t}");
        }
        let run = admin(node1, &["transfers", "--node", "3"]).await;
        run.assert_code(0, "transfers --node 3");
        assert!(run.stdout.starts_with("node"), "{}", run.stdout);

        // ring: three nodes, shares that add up.
        let run = admin(node1, &["ring", "--json"]).await;
        run.assert_code(0, "ring");
        let ring = run.json();
        let shares: f64 = ring["nodes"]
            .as_array()
            .expect("ring nodes")
            .iter()
            .map(|n| n["share"].as_f64().unwrap_or(0.0))
            .sum();
        assert!((shares - 1.0).abs() < 1e-6, "{ring}");
        let run = admin(node1, &["ring"]).await;
        run.assert_code(0, "ring");
        assert!(run.stdout.contains("epoch: "), "{}", run.stdout);

        // Bad input: a message, a non-zero status, no panic.
        let run = admin(node1, &["frobnicate"]).await;
        run.assert_code(2, "an unknown command");
        assert!(run.stderr.contains("frobnicate"), "{}", run.stderr);
        let run = admin(node1, &["repair", "--range", "garbage"]).await;
        run.assert_code(2, "--range garbage");
        assert!(run.stderr.contains("garbage"), "{}", run.stderr);
        let run = admin(node1, &["transfers", "--state", "sleeping"]).await;
        run.assert_code(2, "--state sleeping");
        let run = admin(node1, &["forget", "1"]).await;
        assert_ne!(run.code, Some(0), "forgetting the connected node");
        run.assert_no_panic("forget 1");
        assert!(
            run.stderr.starts_with("ringkv-admin: ") && run.stderr.contains("InvalidArgument"),
            "{}",
            run.stderr
        );
        let run = admin(node1, &["drain", "--node", "3"]).await;
        run.assert_code(2, "drain --node 3 through node 1");
        assert!(
            run.stderr.contains("no --connect address is that node")
                && run.stderr.contains("n1 at"),
            "{}",
            run.stderr
        );
        let run = admin_raw(&["--connect", "127.0.0.1:1", "status"]).await;
        run.assert_code(2, "a closed port");
        assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
        let run = admin(node1, &["--user", "ops", "status"]).await;
        run.assert_code(2, "--user without a password");
        assert!(run.stderr.contains("RINGKV_PASSWORD"), "{}", run.stderr);
        // Failing over: a closed port first.
        let run = admin_raw(&["--connect", "127.0.0.1:1", "--connect", node1, "ring"]).await;
        run.assert_code(0, "failing over to node 1");

        // Node 3 killed: once node 1 sees it DOWN, status says so and
        // ends with status 1, still printing the others.
        cluster.kill(3).await;
        let (seen_down, run) = poll_until(SETTLE, || async {
            let run = admin(node1, &["--timeout-ms", "2000", "status"]).await;
            run.assert_no_panic("status with node 3 down");
            let down = run.code == Some(1)
                && run.stdout.lines().any(|l| {
                    l.starts_with("n3 ") && l.contains("unreachable") && l.contains("Down")
                });
            (down, run)
        })
        .await;
        assert!(
            seen_down,
            "node 3 never shown DOWN: {:?}\n{}\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr,
            cluster.logs()
        );
        let (stdout, stderr) = (run.stdout, run.stderr);
        for id in [1, 2] {
            let row = format!("n{id} ");
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&row) && l.contains("Alive")),
                "node {id}'s row:\n{stdout}"
            );
        }
        assert!(stderr.contains("n3"), "{stderr}");
        let run = admin(node1, &["--timeout-ms", "2000", "status", "--json"]).await;
        run.assert_code(1, "status --json with node 3 down");
        let doc = run.json();
        let nodes = nodes_of(&doc);
        assert_eq!(nodes.len(), 3, "{doc}");
        assert!(nodes[2].1.get("error").is_some(), "{doc}");
        assert_eq!(nodes[2].1["state"], "Down", "{doc}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_takes_the_named_node_out() {
    let _one = cluster::cluster_slot().await;
    bounded(TEST_LIMIT, async {
        let cluster = Cluster::start(3).await;
        wait_for_ring(&cluster, &[1, 2, 3]).await;
        let addrs = cluster.client_addrs();
        let (node1, node3) = (addrs[0].as_str(), addrs[2].as_str());

        // Node 3 is found among the addresses given, whichever is first.
        let run = admin_raw(&[
            "--connect",
            node1,
            "--connect",
            node3,
            "drain",
            "--node",
            "3",
            "--json",
        ])
        .await;
        run.assert_code(0, "drain --node 3");
        let doc = run.json();
        assert_eq!(doc["node"].as_u64(), Some(3), "{doc}");
        assert!(doc["ring"]["epoch"].as_u64().is_some(), "{doc}");

        // Node 3 refuses data ops at once.
        let client = client_of(node3).await;
        match client.put(BUCKET, b"k", b"v", None).await {
            Err(Error::Remote(reply)) => {
                assert_eq!(reply.code, ErrorCode::ShuttingDown, "{reply:?}")
            }
            other => panic!("a put to a drained node: {other:?}"),
        }

        // And leaves the ring.
        let (left, last) = poll_until(SETTLE, || async {
            let run = admin(node1, &["ring", "--json"]).await;
            run.assert_no_panic("ring");
            if run.code != Some(0) {
                return (false, run.stdout);
            }
            let ring = run.json();
            let ids: Vec<u64> = ring["nodes"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n["node"].as_u64()).collect())
                .unwrap_or_default();
            (ids == [1, 2] && ring.get("change").is_none(), run.stdout)
        })
        .await;
        assert!(
            left,
            "node 3 did not leave node 1's ring: {last}\n{}",
            cluster.logs()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_tls_reach_the_client_port() {
    let _one = cluster::cluster_slot().await;
    bounded(TEST_LIMIT, async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = dir.path().display().to_string();
        let (status, out) =
            run_to_exit(&["certs", "--dir", &certs, "--client-port", "127.0.0.1"]).await;
        assert!(status.success(), "{out}");
        let users = dir.path().join("users.toml");
        users_add(&users, "ops", "admin", "ops password").await;
        users_add(&users, "reader", "read", "reader password").await;
        let password_file = dir.path().join("ops.password");
        std::fs::write(&password_file, "ops password\nnot the password\n")
            .expect("a password file");
        let reader_file = dir.path().join("reader.password");
        std::fs::write(&reader_file, "reader password\n").expect("a password file");
        let (cert, key, ca) = (
            dir.path().join("client-port.pem").display().to_string(),
            dir.path().join("client-port.key").display().to_string(),
            dir.path().join("ca.pem").display().to_string(),
        );
        let users_flag = users.display().to_string();
        let cluster = Cluster::start_with(
            1,
            &[
                "--users-file",
                &users_flag,
                "--client-tls-cert",
                &cert,
                "--client-tls-key",
                &key,
            ],
        )
        .await;
        let addr = cluster.client_addrs()[0].clone();
        let ops_file = password_file.display().to_string();
        let reader_file = reader_file.display().to_string();

        let tls = ["--connect", addr.as_str(), "--tls-ca", ca.as_str()];
        // The TLS flags, --password-file FILE when given, then `rest`.
        let args = |rest: &[&str], password_file: Option<&str>| -> Vec<String> {
            let mut args: Vec<String> = tls.iter().map(|s| s.to_string()).collect();
            if let Some(file) = password_file {
                args.extend(["--password-file".to_string(), file.to_string()]);
            }
            args.extend(rest.iter().map(|s| s.to_string()));
            args
        };
        let run = |args: Vec<String>, password: Option<&'static str>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            admin_with_password(&args, password).await
        };

        // The first line of the file is the password.
        let flush_as_ops = args(&["--user", "ops", "flush", "--json"], Some(&ops_file));
        let out = run(flush_as_ops, None).await;
        out.assert_code(0, "flush as ops, password from a file");
        assert_eq!(oks(&out.json(), "flush").len(), 1, "{}", out.stdout);

        // From the environment.
        let status_as_ops = args(&["--user", "ops", "status"], None);
        let out = run(status_as_ops.clone(), Some("ops password")).await;
        out.assert_code(0, "status as ops, password from RINGKV_PASSWORD");
        assert!(
            out.stdout.lines().any(|l| l.starts_with("n1 ")),
            "{}",
            out.stdout
        );

        // A wrong password: cannot connect, and the password is not shown.
        let out = run(status_as_ops, Some("not-the-secret-42")).await;
        out.assert_code(2, "a wrong password");
        assert!(
            out.stderr.starts_with("ringkv-admin: cannot connect"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("not-the-secret-42"), "{}", out.stderr);

        // Plain TCP to a TLS port: cannot connect.
        let out = admin_with_password(
            &["--connect", addr.as_str(), "--user", "ops", "status"],
            Some("ops password"),
        )
        .await;
        out.assert_code(2, "plain TCP to a TLS port");

        // A reader may look but not flush.
        let out = run(
            args(&["--user", "reader", "ring"], Some(&reader_file)),
            None,
        )
        .await;
        out.assert_code(0, "ring as a reader");
        let out = run(
            args(&["--user", "reader", "flush"], Some(&reader_file)),
            None,
        )
        .await;
        out.assert_code(1, "flush as a reader");
        assert!(out.stderr.contains("PermissionDenied"), "{}", out.stderr);
    })
    .await;
}

/// A snapshot taken with `ringkv-admin`, restored with `ringkv-node
/// restore` into a wiped data directory, brings a node back with what it
/// held when the snapshot was taken, and nothing written after. Anti-entropy
/// is off, so nothing but the snapshot can have put the keys there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_its_snapshot_holds_what_it_held() {
    let _one = cluster::cluster_slot().await;
    bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start_with(3, &["--no-anti-entropy"]).await;
        wait_for_ring(&cluster, &[1, 2, 3]).await;
        let addrs = cluster.client_addrs();
        let client = client_of(&addrs[0]).await;
        let all = WriteOptions {
            w: Some(Consistency::All),
            ..WriteOptions::default()
        };
        let put = |k: String| {
            let (client, all) = (client.clone(), all.clone());
            async move {
                if let Err(e) = client.put_with(BUCKET, k.as_bytes(), b"v", None, all).await {
                    panic!("writing {k} at ALL: {e}");
                }
            }
        };
        for i in 0..50 {
            put(format!("before{i}")).await;
        }
        let snap = cluster.root().join("backup");
        let snap_arg = snap.display().to_string();
        let run = admin(&addrs[0], &["--json", "snapshot", &snap_arg, "--node", "3"]).await;
        assert_eq!(run.code, Some(0), "{run:?}");
        for i in 0..50 {
            put(format!("after{i}")).await;
        }

        // Node 3 loses its disk; the snapshot becomes its data directory.
        cluster.kill(3).await;
        let dir = cluster.node(3).dir.clone();
        std::fs::remove_dir_all(&dir).unwrap();
        let from = snap.join("node-3").display().to_string();
        let target = dir.display().to_string();
        let (status, stderr) =
            run_to_exit(&["restore", "--from", &from, "--data-dir", &target]).await;
        assert!(status.success(), "restore failed: {stderr}");
        // Restoring over it again is refused: the directory is not empty.
        let (again, why) = run_to_exit(&["restore", "--from", &from, "--data-dir", &target]).await;
        assert_eq!(again.code(), Some(2), "{why}");
        assert!(why.contains("not empty"), "{why}");

        cluster.restart(3).await;
        let node3 = client_of(&addrs[2]).await;
        for i in 0..50 {
            let k = format!("before{i}");
            match node3.local_get(BUCKET, k.as_bytes()).await {
                Ok(got) => assert_eq!(got.value.as_deref(), Some(&b"v"[..]), "{k}"),
                Err(e) => panic!("local_get {k} on node 3: {e}"),
            }
            let k = format!("after{i}");
            match node3.local_get(BUCKET, k.as_bytes()).await {
                Ok(got) => assert_eq!(got.value, None, "{k} was written after the snapshot"),
                Err(e) => panic!("local_get {k} on node 3: {e}"),
            }
        }
    })
    .await;
}
