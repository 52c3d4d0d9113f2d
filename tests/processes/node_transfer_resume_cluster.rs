//! A range transfer between real `ringkv-node` processes, broken midway
//! and healed: it resumes from its last stored batch, it does not restart.
//!
//! Three nodes hold a few hundred keys (`n = 3`); a fourth joins. Its
//! transfers are throttled (`--transfer-bytes-per-sec`, small
//! `--transfer-batch-bytes`) so that one is caught midway: once it has
//! stored a few batches, the link between the new node and that
//! transfer's source is cut both ways with the opt-in fault op
//! (`BlockOutbound`), for several pull timeouts, while both stay members
//! (their heartbeats go round through the other nodes). The transfer
//! stalls; the link heals; the join completes.
//!
//! What shows it resumed: the source served the start of the range no
//! more often after the break than before it (`served.from_start` in its
//! `Status`: 1, or more when a first pull timed out on a busy machine and
//! was asked again before any batch was stored), and the keys it served after
//! the break are fewer than the range holds (a restart would send the
//! whole range again). And nothing is lost: every key is afterwards on
//! exactly `n` nodes with its value, and reads back at QUORUM.
//!
//! Checked to fail (2026-12-07) with a receiver that forgets a source's
//! cursor when a pull times out: the source then served the range from
//! its start twice, all 470 keys after the break.
//!
//! Bounded in time; nothing asserts a speed.

use crate::support::cluster;

use std::time::{Duration, Instant};

use cluster::{wait_until, Cluster};
use ringkv::client::{Client, ClientConfig};
use ringkv::protocol::{ReadOptions, ServedView, TransferView, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::ring::{Token, TokenRange};
use ringkv::{key_token, NodeId};

const TEST_LIMIT: Duration = Duration::from_secs(150);
const SETTLE: Duration = Duration::from_secs(60);
const N: usize = 3;
const K: usize = 600;
/// A bucket with the default properties (`n = 3`, the replicas ring
/// changes move).
const BUCKET: &[u8] = b"b";
/// How long the link stays cut: several pull timeouts.
const BREAK: Duration = Duration::from_secs(3);
/// A transfer is broken once it has stored at least a fifth of what it
/// pulls (one copy of its range from each source), and less than two
/// thirds: some source has then sent part of the range, and what it
/// still sends after the heal is clearly less than the range (a restart
/// would send it all), even if the batch in flight at the break is sent
/// twice. (Three batches, one per source, were asked for before: those
/// came in the transfer's first milliseconds, and a source then sent 468
/// of 470 keys after the heal. Up to a half only, the window was about
/// 3 s of a 9 s transfer, and a run under load missed it.)
const BREAK_AFTER: (u64, u64) = (1, 5);
const BREAK_BEFORE: (u64, u64) = (2, 3);

/// A client of node `id` alone.
async fn client_of(cluster: &Cluster, id: u64) -> Client {
    let config = ClientConfig {
        request_timeout: Duration::from_secs(8),
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let addr = cluster.node(id).client.to_string();
    match Client::connect(&[addr.as_str()], config).await {
        Ok(c) => c,
        Err(e) => panic!("cannot connect to node {id}: {e}"),
    }
}

/// Whether every node's ring holds exactly `members` nodes, the same
/// epoch, and no change in progress.
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

fn key(i: usize) -> String {
    format!("key-{i:04}")
}

fn value(i: usize) -> Vec<u8> {
    // About 200 bytes, distinct per key.
    format!("{i:04}-{}", "v".repeat(195)).into_bytes()
}

fn range_of(t: &TransferView) -> TokenRange {
    TokenRange {
        after: Token(t.after),
        through: Token(t.through),
    }
}

/// How many of the test's keys fall in `range`.
fn keys_in(range: TokenRange) -> u64 {
    (0..K)
        .filter(|&i| range.contains(key_token(BUCKET, key(i).as_bytes())))
        .count() as u64
}

/// What `source` served for transfer `id` into node 4.
async fn served(clients: &[Client], source: NodeId, id: u64) -> Option<ServedView> {
    let status = clients[source.0 as usize - 1].status().await.ok()?;
    status
        .served
        .into_iter()
        .find(|s| s.receiver == NodeId(4) && s.transfer == id)
}

async fn transfer(c: &Client, id: u64) -> Option<TransferView> {
    let status = c.status().await.ok()?;
    status.transfers.into_iter().find(|t| t.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_broken_midway_resumes_rather_than_restarts() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start_with(
            3,
            &[
                "--allow-fault-injection",
                // Few vnodes: few, larger ranges, so one is caught midway.
                "--vnodes",
                "4",
                // Slow enough that polls of a busy node see a transfer
                // midway (the join takes about 12 s here; at 16 KiB/s
                // it took 29, at 64 KiB/s 9 to 10).
                "--transfer-bytes-per-sec",
                "49152",
                "--transfer-batch-bytes",
                "512",
                "--transfer-pull-timeout-ms",
                "1000",
            ],
        )
        .await;
        let mut clients = Vec::new();
        for id in 1..=3 {
            clients.push(client_of(&cluster, id).await);
        }
        let formed = wait_until(SETTLE, || settled(&clients, 3)).await;
        assert!(formed, "the cluster did not form\n{}", cluster.logs());
        let all = WriteOptions {
            w: Some(Consistency::All),
            ..WriteOptions::default()
        };
        for i in 0..K {
            let c = &clients[i % 3];
            if let Err(e) = c
                .put_with(BUCKET, key(i).as_bytes(), &value(i), None, all.clone())
                .await
            {
                panic!("put {}: {e}\n{}", key(i), cluster.logs());
            }
        }

        let four = cluster.add().await;
        assert_eq!(four, 4);
        clients.push(client_of(&cluster, 4).await);
        let joining = Instant::now();

        // Catch a transfer midway: a few batches stored, most of its range
        // still to come.
        let caught: std::sync::Mutex<Option<(TransferView, u64)>> = Default::default();
        // What the polls saw, for a miss: how many, the slowest, and the
        // transfers of the last one.
        let polls: std::sync::Mutex<(u32, Duration, Vec<TransferView>)> = Default::default();
        let found = wait_until(SETTLE, || async {
            let asked = Instant::now();
            let Ok(status) = clients[3].status().await else {
                return false;
            };
            {
                let mut p = polls.lock().unwrap();
                p.0 += 1;
                p.1 = p.1.max(asked.elapsed());
                p.2 = status.transfers.clone();
            }
            let pick = status
                .transfers
                .into_iter()
                .filter(|t| t.state == "running" && !t.sources.is_empty())
                .map(|t| {
                    let r = keys_in(range_of(&t));
                    (t, r)
                })
                // A move pulls from every old replica up: the keys stored
                // count each source's copies.
                .find(|(t, r)| {
                    let pulled = *r * t.sources.len() as u64;
                    t.keys * BREAK_AFTER.1 >= pulled * BREAK_AFTER.0
                        && t.keys * BREAK_BEFORE.1 < pulled * BREAK_BEFORE.0
                });
            let hit = pick.is_some();
            *caught.lock().unwrap() = pick;
            hit
        })
        .await;
        let (count, slowest, last) = polls.into_inner().unwrap();
        assert!(
            found,
            "no transfer into node 4 was seen midway in {count} polls (the slowest \
             {slowest:?}); the last saw {last:?}\n{}",
            cluster.logs()
        );
        let (seen, range_keys) = caught.into_inner().unwrap().expect("found");
        // Cut the source that has served the most of the range, short of
        // half of it: what it must still send after the heal is then
        // clearly less than the range, where a restart would send it all.
        // Sources go at their own speeds (one may be past half while
        // another has sent nothing yet); failing one short of half, the
        // one that has sent least, but something, and not all.
        let mut sent = Vec::new();
        for &s in &seen.sources {
            if let Some(v) = served(&clients, s, seen.id).await {
                if v.keys > 0 && v.keys < range_keys {
                    sent.push((s, v.keys));
                }
            }
        }
        let short_of_half = sent
            .iter()
            .filter(|(_, k)| k * 2 < range_keys)
            .max_by_key(|(_, k)| *k);
        let least = sent.iter().min_by_key(|(_, k)| *k);
        let Some(&(source, _)) = short_of_half.or(least) else {
            panic!(
                "no source of the transfer caught midway is midway: {seen:?}\n{}",
                cluster.logs()
            );
        };
        let id = seen.id;

        // Break the link, both ways.
        clients[3].block_outbound(&[source]).await.unwrap();
        clients[source.0 as usize - 1]
            .block_outbound(&[NodeId(4)])
            .await
            .unwrap();
        let at_break = transfer(&clients[3], id).await.expect("the transfer");
        let served_at_break = served(&clients, source, id).await.expect("served");
        assert_ne!(at_break.state, "done", "{at_break:?}");
        // Once, or again for a first pull that timed out before any of
        // its batches was stored (seen once under load).
        assert!(served_at_break.from_start >= 1, "{served_at_break:?}");
        tokio::time::sleep(BREAK).await;
        let stalled = transfer(&clients[3], id).await.expect("the transfer");
        let served_stalled = served(&clients, source, id).await.expect("served");
        // From the cut source, at most the batch in flight at the break got
        // through (the other sources go on), and the transfer cannot end
        // without it.
        assert!(
            served_stalled.pulls <= served_at_break.pulls + 1 && stalled.state != "done",
            "the transfer went on through a cut link: {served_at_break:?} then \
             {served_stalled:?} ({stalled:?})"
        );
        // Both ends stayed members (heartbeats go round the cut link), so
        // the transfer kept its source rather than being started afresh
        // from another.
        for c in [&clients[3], &clients[source.0 as usize - 1]] {
            let members = c.status().await.unwrap().members;
            assert!(
                members
                    .iter()
                    .all(|m| m.state != "Down" && m.state != "Left"),
                "a member was lost during the break: {members:?}"
            );
        }

        // Heal; the join completes.
        clients[3].block_outbound(&[]).await.unwrap();
        clients[source.0 as usize - 1]
            .block_outbound(&[])
            .await
            .unwrap();
        let joined = wait_until(SETTLE, || settled(&clients, 4)).await;
        assert!(joined, "the join did not complete\n{}", cluster.logs());
        let done = transfer(&clients[3], id).await.expect("the transfer");
        assert_eq!(done.state, "done", "{done:?}");
        assert_eq!(done.sources, seen.sources, "the transfer changed sources");
        assert!(done.keys >= range_keys, "{done:?} for {range_keys} keys");
        let served_end = served(&clients, source, id).await.expect("served");
        let after_break = served_end.keys - served_at_break.keys;
        eprintln!(
            "transfer {id} from node {source} ({range_keys} keys): {} keys stored before \
             the break, {} keys served after it ({} pulls), starts of the range served {}; \
             the join took {:?} with a {BREAK:?} break",
            stalled.keys,
            after_break,
            served_end.pulls - served_at_break.pulls,
            served_end.from_start,
            joining.elapsed()
        );
        assert_eq!(
            served_end.from_start, served_at_break.from_start,
            "the range was served from its start again after the break: {served_end:?}"
        );
        assert!(
            after_break > 0 && after_break < range_keys,
            "after the break {after_break} keys were served for a range of {range_keys}"
        );
        assert!(served_end.keys >= range_keys, "{served_end:?}");

        // Nothing lost: after the old owners' drop grace, every key is on
        // exactly N nodes with its value, and reads back at QUORUM.
        tokio::time::sleep(ringkv::membership::rebalance::DROP_GRACE).await;
        let exact = wait_until(SETTLE, || async {
            for i in 0..K {
                let mut copies = 0;
                for c in &clients {
                    match c.local_get(BUCKET, key(i).as_bytes()).await {
                        Ok(g) if g.value.as_deref() == Some(value(i).as_slice()) => copies += 1,
                        Ok(g) if g.value.is_none() && g.siblings.is_empty() => {}
                        Ok(g) => panic!("{}: unexpected copy {g:?}", key(i)),
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
        assert!(
            exact,
            "some key is not on exactly {N} nodes\n{}",
            cluster.logs()
        );
        let quorum = ReadOptions {
            r: Some(Consistency::Quorum),
            ..ReadOptions::default()
        };
        for i in 0..K {
            let got = clients[i % 4]
                .get_with(BUCKET, key(i).as_bytes(), quorum.clone())
                .await
                .unwrap_or_else(|e| panic!("get {}: {e}", key(i)));
            assert_eq!(got.value, Some(value(i)), "{}", key(i));
        }
        for id in 1..=4 {
            cluster.terminate(id).await;
        }
    })
    .await;
}
