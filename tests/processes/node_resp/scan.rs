//! Range scans on a cluster of three real `ringkv-node` processes: the
//! client protocol's `Scan` through the Rust client, and RESP `SCAN`.
//!
//! 500 keys are written at QUORUM (n = 3), every fifth is deleted with the
//! context of a read, and then the bucket is scanned through different
//! nodes with several page sizes: every live key must come exactly once,
//! no deleted one ever.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use ringkv::error::Error;
use ringkv::protocol::ErrorCode;

/// The keys a scan returned, each with how many times: a key listed
/// twice fails the check, as does a missing or a deleted one.
fn check_once(what: &str, got: &[Vec<u8>], live: &BTreeSet<Vec<u8>>) {
    let mut seen: BTreeMap<&[u8], usize> = BTreeMap::new();
    for k in got {
        *seen.entry(k).or_default() += 1;
    }
    let twice: Vec<String> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(k, n)| format!("{} x{n}", String::from_utf8_lossy(k)))
        .collect();
    assert!(twice.is_empty(), "{what}: listed more than once: {twice:?}");
    let extra: Vec<String> = seen
        .keys()
        .filter(|k| !live.contains(**k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        extra.is_empty(),
        "{what}: deleted or unknown keys: {extra:?}"
    );
    let missing: Vec<String> = live
        .iter()
        .filter(|k| !seen.contains_key(k.as_slice()))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: missing {} keys: {missing:?}",
        missing.len()
    );
}

/// Every page of a RESP `SCAN` with `options`, until the cursor is 0.
async fn resp_scan(conn: &mut Conn, options: &[&str]) -> (Vec<Vec<u8>>, usize) {
    let mut cursor = "0".to_string();
    let (mut keys, mut pages) = (Vec::new(), 0);
    loop {
        let mut args = vec!["SCAN", cursor.as_str()];
        args.extend_from_slice(options);
        let reply = conn.cmd(&args).await;
        pages += 1;
        assert!(pages < 5000, "SCAN does not end");
        let R::Arr(parts) = reply else {
            panic!("SCAN {options:?} answered {reply:?}");
        };
        let [R::Bulk(next), R::Arr(page)] = parts.as_slice() else {
            panic!("SCAN {options:?} answered {parts:?}");
        };
        for k in page {
            let R::Bulk(k) = k else {
                panic!("a key that is not a bulk string: {k:?}")
            };
            keys.push(k.clone());
        }
        let next = String::from_utf8(next.clone()).unwrap();
        next.parse::<u64>()
            .unwrap_or_else(|_| panic!("cursor {next:?} is not a u64"));
        if next == "0" {
            return (keys, pages);
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_list_every_live_key_once_through_the_client_and_resp() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = Cluster::start_with(3, &["--redis-listen", "127.0.0.1:0"]).await;
        set_buckets(
            &cluster,
            3,
            &[
                ("db0", ConflictPolicy::Siblings),
                ("sets", ConflictPolicy::Crdt(CrdtKind::OrSet)),
            ],
        )
        .await;
        let mut clients = Vec::new();
        for node in &cluster.nodes {
            clients.push(
                Client::connect(&[node.client.to_string()], client_config())
                    .await
                    .unwrap(),
            );
        }
        let c = &clients[0];
        // Until the ring has formed a quorum write may be refused.
        let formed = wait_until(SETTLE, || async {
            c.put(b"db0", b"key:0", b"v0", None).await.is_ok()
        })
        .await;
        assert!(formed, "no write succeeded\n{}", cluster.logs());
        let mut live = BTreeSet::new();
        for i in 0..500 {
            let key = format!("key:{i}");
            clients[i % 3]
                .put(b"db0", key.as_bytes(), format!("v{i}").as_bytes(), None)
                .await
                .unwrap_or_else(|e| panic!("put {key}: {e}"));
            live.insert(key.into_bytes());
        }
        for i in (0..500).step_by(5) {
            let key = format!("key:{i}");
            let read = c.get(b"db0", key.as_bytes()).await.unwrap();
            clients[(i / 5) % 3]
                .delete(b"db0", key.as_bytes(), Some(&read.context))
                .await
                .unwrap_or_else(|e| panic!("delete {key}: {e}"));
            live.remove(key.as_bytes());
        }
        assert_eq!(live.len(), 400);

        // The Rust client, through each node, with several page sizes.
        for (limit, via) in [(1u32, 0usize), (7, 1), (100, 2), (1000, 0)] {
            let client = &clients[via];
            let mut keys = Vec::new();
            let mut cursor: Option<Vec<u8>> = None;
            let mut pages = 0;
            loop {
                let page = client
                    .scan(b"db0", cursor.as_deref(), limit)
                    .await
                    .unwrap_or_else(|e| panic!("scan (limit {limit}): {e}"));
                assert!(page.keys.len() <= limit as usize);
                assert!(!page.receipt.answered.is_empty());
                keys.extend(page.keys);
                pages += 1;
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            check_once(
                &format!("client scan, limit {limit}, node {}", via + 1),
                &keys,
                &live,
            );
            if limit == 1 {
                assert!(pages >= 400, "{pages} pages of one key");
            }
        }
        let all = clients[1].scan_all(b"db0", 50).await.unwrap();
        check_once("scan_all", &all, &live);
        // At consistency ALL too.
        let opts = ringkv::protocol::ReadOptions {
            r: Some(Consistency::All),
            ..Default::default()
        };
        let page = clients[2]
            .scan_with(b"db0", None, 1000, opts)
            .await
            .unwrap();
        assert_eq!(page.receipt.answered.len(), 3, "{:?}", page.receipt);
        // Limits outside 1..=1000 and a forged cursor are refused.
        for (limit, cursor) in [(0u32, None), (1001, None), (10, Some(&b"\x07garbage"[..]))] {
            match clients[0].scan(b"db0", cursor, limit).await {
                Err(Error::Remote(reply)) => {
                    assert_eq!(reply.code, ErrorCode::InvalidArgument, "{reply:?}")
                }
                other => panic!("limit {limit}, cursor {cursor:?}: {other:?}"),
            }
        }
        // An empty bucket is one empty, final page.
        let empty = c.scan(b"never-written", None, 10).await.unwrap();
        assert!(empty.keys.is_empty());

        // RESP SCAN, through node 3.
        let mut resp = Conn::open(cluster.node(3).redis.unwrap()).await;
        let (keys, pages) = resp_scan(&mut resp, &[]).await;
        check_once("SCAN", &keys, &live);
        assert!(pages >= 400 / 10, "{pages} pages of COUNT 10");
        for count in ["1", "33", "1000", "100000"] {
            let (keys, _) = resp_scan(&mut resp, &["COUNT", count]).await;
            check_once(&format!("SCAN COUNT {count}"), &keys, &live);
        }
        let ones: BTreeSet<Vec<u8>> = live
            .iter()
            .filter(|k| k.starts_with(b"key:1"))
            .cloned()
            .collect();
        assert!(ones.len() > 50);
        let (keys, _) = resp_scan(&mut resp, &["MATCH", "key:1*", "COUNT", "50"]).await;
        check_once("SCAN MATCH key:1*", &keys, &ones);
        let (keys, _) = resp_scan(&mut resp, &["TYPE", "string", "COUNT", "200"]).await;
        check_once("SCAN TYPE string", &keys, &live);
        // The sets of db0 are in db0.sets, where SADD put them.
        let (keys, _) = resp_scan(&mut resp, &["TYPE", "set"]).await;
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(resp.cmd(&["SADD", "tags", "x"]).await, R::Int(1));
        let (keys, _) = resp_scan(&mut resp, &["TYPE", "set"]).await;
        check_once("SCAN TYPE set in db0", &keys, &[b"tags".to_vec()].into());
        // Errors as redis gives them.
        assert_eq!(
            resp.cmd(&["SCAN", "nope"]).await.err_text(),
            "ERR invalid cursor"
        );
        assert_eq!(
            resp.cmd(&["SCAN", "0", "COUNT", "0"]).await.err_text(),
            "ERR syntax error"
        );
        // A set bucket's members are not keys: its keys are.
        assert_eq!(resp.cmd(&["SELECT", "0"]).await, R::ok());
        assert_eq!(resp.cmd(&["RINGKV.BUCKET", "sets"]).await, R::ok());
        assert_eq!(resp.cmd(&["SADD", "s1", "a", "b"]).await, R::Int(2));
        assert_eq!(resp.cmd(&["SADD", "s2", "c"]).await, R::Int(1));
        let (keys, _) = resp_scan(&mut resp, &["TYPE", "set"]).await;
        let sets: BTreeSet<Vec<u8>> = [b"s1".to_vec(), b"s2".to_vec()].into();
        check_once("SCAN TYPE set", &keys, &sets);
    })
    .await;
}
