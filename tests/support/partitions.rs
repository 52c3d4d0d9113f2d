//! Partitions of a cluster of `ringkv-node` processes ([`super::cluster`]),
//! made and healed through the client protocol's `BlockOutbound`, and the
//! bounded waits around them: until the sides see each other DOWN, until
//! the cluster is whole again, until no node holds a hint.
//!
//! The nodes must have been started with `--allow-fault-injection`. Every
//! wait polls through the client protocol and gives up after its limit,
//! returning false, so the test can fail with the nodes' logs.
//!
//! Not here: anything about data; each test owns its checks.

#![allow(dead_code)]

use std::time::Duration;

use ringkv::client::{Client, ClientConfig};
use ringkv::NodeId;

use super::cluster::{wait_until, Cluster};

/// How long a settling step may take: generous, for a loaded machine.
pub const SETTLE: Duration = Duration::from_secs(60);

/// A client of node `id` alone, one attempt per request (a checker must
/// see every failure: a retried write would be a second write).
pub async fn client_of(cluster: &Cluster, id: u64) -> Client {
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

/// Clients of nodes 1 to `n`, by id - 1.
pub async fn clients(cluster: &Cluster, n: u64) -> Vec<Client> {
    let mut all = Vec::new();
    for id in 1..=n {
        all.push(client_of(cluster, id).await);
    }
    all
}

/// Whether node `at` (through `client`) sees every node of `of` other
/// than itself in `state` ("Alive", "Down", ...).
pub async fn sees(client: &Client, at: u64, of: &[u64], state: &str) -> bool {
    let Ok(s) = client.status().await else {
        return false;
    };
    of.iter()
        .all(|&id| id == at || s.members.iter().any(|m| m.node.0 == id && m.state == state))
}

/// Waits until every node sees every other ALIVE and all have a ring of
/// `clients.len()` nodes with no change in progress.
pub async fn wait_whole(clients: &[Client]) -> bool {
    let ids: Vec<u64> = (1..=clients.len() as u64).collect();
    wait_until(SETTLE, || async {
        for (i, c) in clients.iter().enumerate() {
            match c.ring().await {
                Ok(r) if r.change.is_none() && r.nodes.len() == clients.len() => {}
                _ => return false,
            }
            if !sees(c, i as u64 + 1, &ids, "Alive").await {
                return false;
            }
        }
        true
    })
    .await
}

/// Cuts `a` from `b`, both ways (each node of `a` blocks `b`, and each of
/// `b` blocks `a`); the other links are left open.
pub async fn split(clients: &[Client], a: &[u64], b: &[u64]) {
    let ids = |v: &[u64]| -> Vec<NodeId> { v.iter().copied().map(NodeId).collect() };
    for (side, other) in [(a, b), (b, a)] {
        for &id in side {
            let c = &clients[(id - 1) as usize];
            if let Err(e) = c.block_outbound(&ids(other)).await {
                panic!("node {id} refused BlockOutbound: {e}");
            }
        }
    }
}

/// Heals every link.
pub async fn heal(clients: &[Client]) {
    for (i, c) in clients.iter().enumerate() {
        if let Err(e) = c.block_outbound(&[]).await {
            panic!("node {} refused to heal: {e}", i + 1);
        }
    }
}

/// Waits until each side sees every node of the other DOWN.
pub async fn wait_split(clients: &[Client], a: &[u64], b: &[u64]) -> bool {
    wait_until(SETTLE, || async {
        for (side, other) in [(a, b), (b, a)] {
            for &id in side {
                if !sees(&clients[(id - 1) as usize], id, other, "Down").await {
                    return false;
                }
            }
        }
        true
    })
    .await
}

/// Hints held by each node, by id - 1 (`None` for a node that did not
/// answer).
pub async fn hints(clients: &[Client]) -> Vec<Option<u64>> {
    let mut all = Vec::new();
    for c in clients {
        all.push(c.status().await.ok().map(|s| s.hints));
    }
    all
}

/// Waits until no node holds a hint.
pub async fn wait_no_hints(clients: &[Client]) -> bool {
    wait_until(SETTLE, || async {
        hints(clients).await.iter().all(|h| *h == Some(0))
    })
    .await
}
