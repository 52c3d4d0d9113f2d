//! Rebalancing with real `ringkv-node` processes on loopback: a sixth node
//! joins a five-node cluster while two clients write.
//!
//! What it shows (issue [8]'s first "must show"): every acknowledged write
//! is readable at QUORUM afterwards; every key ends on exactly `n` nodes
//! (the old owners dropped what they gave away); and the copies the new
//! node received are within 10% of its share, `n · K / 6` for the `K` keys
//! stored before it joined (keys written during the join reach it by the
//! write path, so the bound above is the share of all keys).
//!
//! Bounded in time; nothing depends on speed.

use crate::support::cluster;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster::{wait_until, Cluster};
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{BucketInfo, ReadOptions, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::ConflictPolicy;

const TEST_LIMIT: Duration = Duration::from_secs(240);
const SETTLE: Duration = Duration::from_secs(90);
const N: usize = 3;
const K: usize = 2000;
const BUCKET: &[u8] = b"b";

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

/// Whether every node's ring holds exactly `members` nodes and no change
/// is in progress.
async fn settled(clients: &[Client], members: usize) -> bool {
    let mut epochs = Vec::new();
    for c in clients {
        match c.ring().await {
            Ok(r) if r.change.is_none() && r.nodes.len() == members => epochs.push(r.epoch),
            _ => return false,
        }
    }
    epochs.windows(2).all(|w| w[0] == w[1])
}

async fn put(c: &Client, key: &str, value: &str) -> bool {
    let options = WriteOptions {
        w: Some(Consistency::Quorum),
        ..WriteOptions::default()
    };
    c.put_with(BUCKET, key.as_bytes(), value.as_bytes(), None, options)
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixth_node_joins_under_writes_moves_its_share_and_loses_nothing() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start(5).await;
        let mut clients = Vec::new();
        for a in cluster.client_addrs() {
            clients.push(client_of(&a).await);
        }
        let formed = wait_until(SETTLE, || settled(&clients, 5)).await;
        assert!(formed, "the cluster did not form\n{}", cluster.logs());
        // Last writer wins: a blind overwrite replaces the value.
        let props = BucketInfo {
            n: N as u32,
            r: Consistency::Quorum,
            w: Consistency::Quorum,
            policy: ConflictPolicy::Lww,
            sloppy_quorum: true,
            timeout_ms: 5000,
        };
        clients[0].set_bucket(BUCKET, props).await.unwrap();
        let spread = wait_until(SETTLE, || async {
            for c in &clients {
                match c.bucket(BUCKET).await {
                    Ok(p) if p.policy == ConflictPolicy::Lww => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
        assert!(spread, "the bucket's policy did not spread");

        let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        // Per key, the values of puts that failed after its last
        // acknowledged one: a failed put may still have been applied (a
        // replica stored it, too few answered), so a read may return one.
        let maybe: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
        for i in 0..K {
            let key = format!("k{i}");
            assert!(
                put(&clients[i % 5], &key, "v0").await,
                "initial write {key}"
            );
            acked.lock().unwrap().insert(key, "v0".into());
        }

        // Two writers overwrite their own keys (so the last acknowledged
        // value is the newest) and add new ones while node 6 joins.
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2usize {
            let client = client_of(&cluster.client_addrs()[w]).await;
            let (acked, maybe, stop) = (Arc::clone(&acked), Arc::clone(&maybe), Arc::clone(&stop));
            writers.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = if i % 2 == 0 {
                        format!("k{}", (i * 7 * 2 + w) % K)
                    } else {
                        format!("w{w}-{i}")
                    };
                    let value = format!("v{w}-{i}");
                    if put(&client, &key, &value).await {
                        maybe.lock().unwrap().remove(&key);
                        acked.lock().unwrap().insert(key, value);
                    } else {
                        maybe.lock().unwrap().entry(key).or_default().push(value);
                    }
                    i += 1;
                }
                i
            }));
        }
        let six = cluster.add().await;
        clients.push(client_of(&cluster.node(six).client.to_string()).await);
        let joined = wait_until(SETTLE, || settled(&clients, 6)).await;
        stop.store(true, Ordering::Relaxed);
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        assert!(joined, "the join did not complete\n{}", cluster.logs());
        assert!(written > 0, "the writers ran during the join");

        // Every acknowledged write reads back at QUORUM through any node.
        let acked = acked.lock().unwrap().clone();
        let maybe = maybe.lock().unwrap().clone();
        for (i, (key, value)) in acked.iter().enumerate() {
            let options = ReadOptions {
                r: Some(Consistency::Quorum),
                ..ReadOptions::default()
            };
            let got = clients[i % 6]
                .get_with(BUCKET, key.as_bytes(), options)
                .await
                .unwrap_or_else(|e| panic!("get {key}: {e}"));
            let possible: Vec<&String> = std::iter::once(value)
                .chain(maybe.get(key).into_iter().flatten())
                .collect();
            assert!(
                possible
                    .iter()
                    .any(|v| got.value.as_deref() == Some(v.as_bytes())),
                "{key}: read {:?}, acknowledged {value:?}, failed since {:?}",
                got.value.as_deref().map(String::from_utf8_lossy),
                maybe.get(key)
            );
        }

        // The copies node 6 pulled: its share of the keys.
        let status = clients[5].status().await.unwrap();
        assert!(!status.transfers.is_empty());
        assert!(
            status.transfers.iter().all(|t| t.state == "done"),
            "{:?}",
            status.transfers
        );
        // A move pulls from every old replica up: each key of a moved
        // range arrives once per source. Count distinct copies.
        let moved: u64 = status
            .transfers
            .iter()
            .map(|t| t.keys / t.sources.len().max(1) as u64)
            .sum();
        let low = (N * K) as f64 / 6.0;
        let high = (N * acked.len()) as f64 / 6.0;
        eprintln!(
            "node 6 pulled {moved} copies in {} transfers; share {low:.0} to {high:.0} \
             ({} keys before, {} after, {written} writes during the join)",
            status.transfers.len(),
            K,
            acked.len()
        );
        assert!(
            moved as f64 >= low * 0.9 && moved as f64 <= high * 1.1,
            "moved {moved}, share {low:.0} to {high:.0}"
        );

        // After the drop grace, every key is on exactly N nodes.
        tokio::time::sleep(ringkv::membership::rebalance::DROP_GRACE).await;
        let keys: Vec<String> = acked.keys().cloned().collect();
        let exact = wait_until(SETTLE, || async {
            for key in &keys {
                let mut copies = 0;
                for c in &clients {
                    match c.local_get(BUCKET, key.as_bytes()).await {
                        Ok(g) if g.value.is_some() => copies += 1,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
                if copies != N {
                    return false;
                }
            }
            true
        })
        .await;
        assert!(exact, "some key is not on exactly {N} nodes");
        for id in 1..=6 {
            cluster.terminate(id).await;
        }
    })
    .await;
}
