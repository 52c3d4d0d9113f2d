//! Forgetting a node and leaving on SIGTERM, with real `ringkv-node`
//! processes on loopback (issue [14], item 3).
//!
//! What it shows:
//! - `Forget` through the client protocol: a node killed with SIGKILL and
//!   seen DOWN is forgotten through one survivor, and every survivor then
//!   reports it LEFT (or no longer lists it) and holds a ring without it,
//!   with every key still readable at QUORUM. Only an admin may forget; a
//!   node refuses to forget itself and a node it does not know, with
//!   `InvalidArgument` and a message that says why.
//! - `--leave-on-sigterm`: a node started with it, sent SIGTERM, gives its
//!   ranges away, exits 0, and the others report it LEFT with a ring
//!   without it, every key readable at QUORUM. A node started without it
//!   only stops: the ring keeps it (a restart moves no data), and the
//!   others do not see it LEFT.
//!
//! Bounds are generous (a busy CI machine); the cluster gossips every
//! 100 ms ([`cluster::GOSSIP_MS`]).

use crate::support::cluster;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{users_add, wait_until, Cluster};
use ringkv::client::{Client, ClientConfig, Credentials};
use ringkv::protocol::{ErrorCode, ReadOptions, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::{Error, NodeId};

const TEST_LIMIT: Duration = Duration::from_secs(300);

/// How long a cluster may take to form, a kill to be seen, a change to
/// finish.
const SETTLE: Duration = Duration::from_secs(60);

/// How long a node leaving on SIGTERM may take to exit.
const LEAVE_EXIT: Duration = Duration::from_secs(120);

const BUCKET: &[u8] = b"forget";
const KEYS: usize = 60;

fn config(user: Option<(&str, &str)>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(8),
        credentials: user.map(|(u, p)| Credentials::new(u, p)),
        ..ClientConfig::default()
    }
}

/// A client of node `addr` only.
async fn client_of(addr: SocketAddr, user: Option<(&str, &str)>) -> Client {
    match Client::connect(&[addr.to_string()], config(user)).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to {addr}: {e}"),
    }
}

/// The ids in `client`'s ring in force, when no change is in progress.
async fn settled_ring(client: &Client) -> Option<Vec<u64>> {
    match client.ring().await {
        Ok(r) if r.change.is_none() => Some(r.nodes.iter().map(|n| n.node.0).collect()),
        _ => None,
    }
}

/// Whether every client's node has exactly `members` in its ring, with no
/// change in progress.
async fn rings_are(clients: &[&Client], members: &[u64]) -> bool {
    for c in clients {
        if settled_ring(c).await.as_deref() != Some(members) {
            return false;
        }
    }
    true
}

/// How `client`'s node sees `node`: its state ("Alive", "Suspect",
/// "Down", "Left"), or `None` when its table no longer holds it.
async fn state_of(client: &Client, node: u64) -> Option<String> {
    let status = client.status().await.ok()?;
    status
        .members
        .iter()
        .find(|m| m.node == NodeId(node))
        .map(|m| m.state.clone())
}

/// Whether `client`'s node sees `node` LEFT, or has dropped it.
async fn left_or_gone(client: &Client, node: u64) -> bool {
    match client.status().await {
        Ok(s) => s
            .members
            .iter()
            .find(|m| m.node == NodeId(node))
            .is_none_or(|m| m.state == "Left"),
        Err(_) => false,
    }
}

fn quorum_write() -> WriteOptions {
    WriteOptions {
        w: Some(Consistency::Quorum),
        ..WriteOptions::default()
    }
}

fn quorum_read() -> ReadOptions {
    ReadOptions {
        r: Some(Consistency::Quorum),
        ..ReadOptions::default()
    }
}

async fn write_keys(client: &Client) {
    for i in 0..KEYS {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        if let Err(e) = client
            .put_with(BUCKET, k.as_bytes(), v.as_bytes(), None, quorum_write())
            .await
        {
            panic!("writing {k} at QUORUM: {e}");
        }
    }
}

/// Reads every key at QUORUM through `client`, failing on the first that
/// is missing or wrong.
async fn check_keys(client: &Client, through: &str) {
    for i in 0..KEYS {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        match client.get_with(BUCKET, k.as_bytes(), quorum_read()).await {
            Ok(r) => assert_eq!(
                r.value.as_deref(),
                Some(v.as_bytes()),
                "{k} through {through}: {r:?}"
            ),
            Err(e) => panic!("reading {k} at QUORUM through {through}: {e}"),
        }
    }
}

/// The error code of a node's refusal, and its message.
fn refusal<T: std::fmt::Debug>(r: Result<T, Error>) -> (ErrorCode, String) {
    match r {
        Err(Error::Remote(reply)) => (reply.code, reply.message),
        other => panic!("expected a node's refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_forgotten_through_one_survivor_is_left_everywhere_and_leaves_the_ring() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let users_dir = tempfile::tempdir().unwrap();
        let users = users_dir.path().join("users.toml");
        users_add(&users, "admin", "admin", "admin password").await;
        users_add(&users, "app", "readwrite", "app password").await;
        let users_flag = users.display().to_string();
        let mut cluster = Cluster::start_with(3, &["--users-file", &users_flag]).await;
        let admin = ("admin", "admin password");
        let a1 = client_of(cluster.node(1).client, Some(admin)).await;
        let a2 = client_of(cluster.node(2).client, Some(admin)).await;
        let both = [&a1, &a2];
        assert!(
            wait_until(SETTLE, || rings_are(&both, &[1, 2, 3])).await,
            "the cluster did not form\n{}",
            cluster.logs()
        );
        write_keys(&a1).await;

        cluster.kill(3).await;
        assert!(
            wait_until(SETTLE, || async {
                state_of(&a1, 3).await.as_deref() == Some("Down")
                    && state_of(&a2, 3).await.as_deref() == Some("Down")
            })
            .await,
            "the survivors did not see node 3 DOWN: {:?} {:?}\n{}",
            state_of(&a1, 3).await,
            state_of(&a2, 3).await,
            cluster.logs()
        );
        // A DOWN node stays in the ring: a failure is not a leave.
        assert_eq!(settled_ring(&a1).await, Some(vec![1, 2, 3]));

        // Only an admin may forget.
        let app = client_of(cluster.node(2).client, Some(("app", "app password"))).await;
        let (code, message) = refusal(app.forget(NodeId(3)).await);
        assert_eq!(code, ErrorCode::PermissionDenied, "{message}");
        assert_eq!(state_of(&a2, 3).await.as_deref(), Some("Down"));
        // Not itself, not a node it does not know.
        let (code, message) = refusal(a2.forget(NodeId(2)).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
        assert!(message.contains("itself"), "{message}");
        let (code, message) = refusal(a2.forget(NodeId(77)).await);
        assert_eq!(code, ErrorCode::InvalidArgument, "{message}");
        assert!(message.contains("does not know n77"), "{message}");

        // Through node 2: node 1, the lowest live node, hears it by gossip
        // and removes node 3 from the ring.
        let ring = a2.forget(NodeId(3)).await.unwrap();
        eprintln!("forget answered with {ring:?}");
        assert_eq!(state_of(&a2, 3).await.as_deref(), Some("Left"));
        assert!(
            wait_until(SETTLE, || async {
                left_or_gone(&a1, 3).await
                    && left_or_gone(&a2, 3).await
                    && rings_are(&both, &[1, 2]).await
            })
            .await,
            "node 3 is not LEFT and out of the ring everywhere: {:?} {:?}, rings {:?} {:?}\n{}",
            state_of(&a1, 3).await,
            state_of(&a2, 3).await,
            a1.ring().await,
            a2.ring().await,
            cluster.logs()
        );
        // Forgetting it again changes nothing.
        a1.forget(NodeId(3)).await.unwrap();
        assert!(left_or_gone(&a1, 3).await);
        check_keys(&a1, "node 1").await;
        check_keys(&a2, "node 2").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_leave_on_sigterm_decommissions_and_without_it_only_stops() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        // Nodes 1 to 3 plain; node 4 leaves on SIGTERM.
        let mut cluster = Cluster::start(3).await;
        cluster.set_extra_args(&["--leave-on-sigterm"]);
        cluster.add().await;
        let clients = [
            client_of(cluster.node(1).client, None).await,
            client_of(cluster.node(2).client, None).await,
            client_of(cluster.node(3).client, None).await,
        ];
        let all: Vec<&Client> = clients.iter().collect();
        let c4 = client_of(cluster.node(4).client, None).await;
        assert!(
            wait_until(SETTLE, || async {
                rings_are(&all, &[1, 2, 3, 4]).await && rings_are(&[&c4], &[1, 2, 3, 4]).await
            })
            .await,
            "the cluster did not form\n{}",
            cluster.logs()
        );
        write_keys(&clients[0]).await;

        // Node 4 leaves: its ranges move, then it exits 0.
        let status = cluster.terminate_within(4, LEAVE_EXIT).await;
        assert!(
            status.success(),
            "node 4 exited with {status}\n{}",
            cluster.stderr_tail(4, 30)
        );
        let log4 = cluster.stderr_tail(4, 200);
        assert!(log4.contains("leave started"), "{log4}");
        assert!(
            log4.contains("leave finished: the ring no longer holds"),
            "{log4}"
        );
        for (i, c) in clients.iter().enumerate() {
            assert!(
                wait_until(SETTLE, || async {
                    left_or_gone(c, 4).await && rings_are(&[c], &[1, 2, 3]).await
                })
                .await,
                "node {} does not see node 4 LEFT and out of the ring: {:?}, {:?}\n{}",
                i + 1,
                state_of(c, 4).await,
                c.ring().await,
                cluster.logs()
            );
        }
        for (i, c) in clients.iter().enumerate() {
            check_keys(c, &format!("node {}", i + 1)).await;
        }

        // Node 3 has no flag: SIGTERM only stops it, and it keeps its
        // tokens.
        let status = cluster.terminate(3).await;
        assert!(status.success(), "node 3 exited with {status}");
        let log3 = cluster.stderr_tail(3, 200);
        assert!(!log3.contains("leave started"), "{log3}");
        let survivors = [&clients[0], &clients[1]];
        assert!(
            wait_until(SETTLE, || async {
                for c in survivors {
                    if !matches!(state_of(c, 3).await.as_deref(), Some("Suspect" | "Down")) {
                        return false;
                    }
                }
                true
            })
            .await,
            "the survivors do not see node 3 stopped: {:?} {:?}",
            state_of(&clients[0], 3).await,
            state_of(&clients[1], 3).await,
        );
        // Long enough for a leave announced at the stop to have spread and
        // begun its removal (a leave with nothing to wait for is LEFT well
        // within a second at this gossip interval).
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (i, c) in survivors.iter().enumerate() {
            assert_eq!(
                settled_ring(c).await,
                Some(vec![1, 2, 3]),
                "node {} dropped node 3 from the ring after a plain stop",
                i + 1
            );
            assert_ne!(state_of(c, 3).await.as_deref(), Some("Left"));
        }
        for (i, c) in survivors.iter().enumerate() {
            check_keys(c, &format!("node {}", i + 1)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_with_leave_on_sigterm_only_stops() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        // No one could take its ranges: a leave would give the ring away
        // to no one (an empty ring, and a restart that comes back leaving,
        // its data served by no ring). It keeps its tokens and stops.
        let mut cluster = Cluster::start_with(1, &["--leave-on-sigterm"]).await;
        let c = client_of(cluster.node(1).client, None).await;
        assert!(
            wait_until(SETTLE, || async { settled_ring(&c).await == Some(vec![1]) }).await,
            "the node did not found its ring\n{}",
            cluster.logs()
        );
        let status = cluster.terminate(1).await;
        assert!(status.success(), "exited with {status}");
        let log = cluster.stderr_tail(1, 200);
        assert!(log.contains("not leaving, only stopping"), "{log}");
        assert!(!log.contains("leave started"), "{log}");
    })
    .await
}
