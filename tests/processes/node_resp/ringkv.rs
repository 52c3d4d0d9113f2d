//! Part of `tests/processes/node_resp.rs`: the buckets a fresh cluster gives each
//! database (strings last-writer-wins, counters and sets beside them), and
//! ringkv's own `RINGKV.` commands (siblings with their context, writes
//! with a context, receipts, bucket properties, ring and status views).

use super::*;

/// The value of `name` in a RESP3 map reply.
fn field<'a>(map: &'a R, name: &str) -> &'a R {
    let R::Map(entries) = map else {
        panic!("expected a map, got {map:?}");
    };
    entries
        .iter()
        .find(|(k, _)| *k == R::bulk(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {map:?}"))
}

fn text(r: &R) -> String {
    match r {
        R::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn sorted_bulks(r: &R) -> Vec<String> {
    let (R::Set(items) | R::Arr(items)) = r else {
        panic!("expected a set or array, got {r:?}");
    };
    let mut v: Vec<String> = items.iter().map(text).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_database_takes_strings_counters_and_sets_with_no_setbucket() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        let addr = cluster.node(1).redis.unwrap();
        // The buckets keep the node's default n = 3; one node holds one
        // copy, so every connection reads and writes at ONE.
        let mut c = Conn::open(addr).await;
        assert_eq!(c.cmd(&["RINGKV.CONSISTENCY", "one", "one"]).await, R::ok());
        assert!(matches!(c.cmd(&["HELLO", "3"]).await, R::Map(_)));
        let props = c.cmd(&["RINGKV.PROPS"]).await;
        assert_eq!(field(&props, "policy"), &R::bulk("Lww"), "{props:?}");
        assert_eq!(field(&props, "bucket"), &R::bulk("db0"));

        // Strings are last-writer-wins: concurrent SETs of one key from
        // many connections leave one of their values, never siblings.
        let writers = (0..16).map(|i| async move {
            let mut w = Conn::open(addr).await;
            assert_eq!(w.cmd(&["RINGKV.CONSISTENCY", "one", "one"]).await, R::ok());
            for round in 0..5 {
                let v = format!("w{i}-{round}");
                assert_eq!(w.cmd(&["SET", "hot", &v]).await, R::ok());
            }
        });
        futures_util::future::join_all(writers).await;
        let hot = text(&c.cmd(&["GET", "hot"]).await);
        assert!(hot.starts_with('w') && hot.ends_with("-4"), "{hot}");

        // Counters and sets work in the same database, each kind in a
        // keyspace of its own.
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(1));
        assert_eq!(c.cmd(&["INCRBY", "n", "5"]).await, R::Int(6));
        assert_eq!(c.cmd(&["DECR", "n"]).await, R::Int(5));
        assert_eq!(c.cmd(&["DECRBY", "n", "-2"]).await, R::Int(7));
        assert_eq!(c.cmd(&["GET", "n"]).await, R::Null, "strings are apart");
        assert_eq!(c.cmd(&["SADD", "s", "a", "b"]).await, R::Int(2));
        assert_eq!(c.cmd(&["SADD", "s", "a", "c"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SREM", "s", "b", "zz"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SCARD", "s"]).await, R::Int(2));
        assert_eq!(sorted_bulks(&c.cmd(&["SMEMBERS", "s"]).await), ["a", "c"]);
        assert_eq!(c.cmd(&["SET", "n", "text"]).await, R::ok());
        assert_eq!(c.cmd(&["GET", "n"]).await, R::bulk("text"));
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(8), "the counter n");

        // The companions are buckets of their own, readable by name.
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "db0.counters"]).await, R::ok());
        assert_eq!(c.cmd(&["GET", "n"]).await, R::bulk("8"));
        let e = c.cmd(&["SET", "n", "1"]).await;
        assert!(e.err_text().starts_with("WRONGTYPE"), "{e:?}");
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(9));
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "db0.sets"]).await, R::ok());
        assert_eq!(sorted_bulks(&c.cmd(&["SMEMBERS", "s"]).await), ["a", "c"]);
        let e = c.cmd(&["INCR", "s"]).await;
        assert!(e.err_text().starts_with("WRONGTYPE"), "{e:?}");

        // Each database has its own.
        assert_eq!(c.cmd(&["SELECT", "3"]).await, R::ok());
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(1));
        assert_eq!(c.cmd(&["GET", "hot"]).await, R::Null);

        // A bucket of any other name is Siblings, and its companions
        // still hold counters and sets.
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "plain"]).await, R::ok());
        let props = c.cmd(&["RINGKV.PROPS"]).await;
        assert_eq!(field(&props, "policy"), &R::bulk("Siblings"));
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SADD", "s", "x"]).await, R::Int(1));

        // A named bucket keeps its kind: its policy cannot change to one
        // its values would not be readable under.
        let admin = Client::connect(&[cluster.node(1).client.to_string()], client_config())
            .await
            .unwrap();
        let refused = admin
            .set_bucket(b"db0.counters", props_n1(ConflictPolicy::Siblings))
            .await;
        assert!(refused.is_err(), "{refused:?}");
        admin
            .set_bucket(b"db0", props_n1(ConflictPolicy::Siblings))
            .await
            .expect("Lww may become Siblings");
    })
    .await;
}

fn props_n1(policy: ConflictPolicy) -> BucketInfo {
    props(1, policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siblings_are_read_with_their_context_and_resolved_with_it() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        set_buckets(&cluster, 1, &[("sib", ConflictPolicy::Siblings)]).await;
        let client = Client::connect(&[cluster.node(1).client.to_string()], client_config())
            .await
            .unwrap();
        client.put(b"sib", b"twin", b"one", None).await.unwrap();
        client.put(b"sib", b"twin", b"two", None).await.unwrap();
        let mut c = Conn::open(cluster.node(1).redis.unwrap()).await;
        assert!(matches!(c.cmd(&["HELLO", "3"]).await, R::Map(_)));
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "sib"]).await, R::ok());

        let got = c.cmd(&["RINGKV.GET", "twin"]).await;
        let R::Arr(siblings) = field(&got, "siblings") else {
            panic!("{got:?}");
        };
        let mut values: Vec<String> = siblings.iter().map(|s| text(field(s, "value"))).collect();
        values.sort();
        assert_eq!(values, ["one", "two"]);
        for s in siblings {
            assert_eq!(field(s, "node"), &R::Int(1));
            assert!(
                matches!(field(s, "timestamp_ms"), R::Int(t) if *t > 0),
                "{s:?}"
            );
        }
        let context = text(field(&got, "context"));
        assert!(!context.is_empty() && context.len() % 2 == 0, "{context}");

        // A write with that context replaces both.
        let after = c.cmd(&["RINGKV.PUT", "twin", "merged", &context]).await;
        assert!(matches!(&after, R::Bulk(b) if !b.is_empty()), "{after:?}");
        assert_eq!(c.cmd(&["GET", "twin"]).await, R::bulk("merged"));
        // The receipt of the write: node 1 was asked and answered.
        let receipts = c.cmd(&["RINGKV.RECEIPT"]).await;
        let R::Arr(list) = &receipts else {
            panic!("{receipts:?}")
        };
        assert_eq!(list.len(), 1, "GET's receipt: {receipts:?}");
        assert_eq!(field(&list[0], "answered"), &R::Arr(vec![R::Int(1)]));
        // Asking again shows the same: RINGKV.RECEIPT keeps them.
        assert_eq!(c.cmd(&["RINGKV.RECEIPT"]).await, receipts);
        assert_eq!(c.cmd(&["PING"]).await, R::Simple("PONG".into()));
        assert_eq!(c.cmd(&["RINGKV.RECEIPT"]).await, R::Arr(vec![]));
        // SET in a Siblings bucket reads, then writes: two receipts.
        assert_eq!(c.cmd(&["SET", "twin", "again"]).await, R::ok());
        let R::Arr(list) = c.cmd(&["RINGKV.RECEIPT"]).await else {
            panic!()
        };
        assert_eq!(list.len(), 2);

        // An old context makes a sibling beside the newer value; an empty
        // one is a blind write, which does too.
        assert!(matches!(
            c.cmd(&["RINGKV.PUT", "twin", "stale", &context]).await,
            R::Bulk(_)
        ));
        let got = c.cmd(&["RINGKV.GET", "twin"]).await;
        let R::Arr(siblings) = field(&got, "siblings") else {
            panic!("{got:?}");
        };
        let mut values: Vec<String> = siblings.iter().map(|s| text(field(s, "value"))).collect();
        values.sort();
        assert_eq!(values, ["again", "stale"]);
        let e = c.cmd(&["GET", "twin"]).await;
        assert!(e.err_text().contains("2 siblings"), "{e:?}");

        // A delete with the latest context removes them all.
        let context = text(field(&got, "context"));
        assert!(matches!(
            c.cmd(&["RINGKV.DEL", "twin", &context]).await,
            R::Bulk(_)
        ));
        assert_eq!(c.cmd(&["GET", "twin"]).await, R::Null);
        let got = c.cmd(&["RINGKV.GET", "twin"]).await;
        assert_eq!(field(&got, "siblings"), &R::Arr(vec![]));

        // Bad contexts are refused, nothing written.
        for bad in ["zz", "abc", "0x12"] {
            let e = c.cmd(&["RINGKV.PUT", "twin", "never", bad]).await;
            assert!(e.err_text().contains("context"), "{e:?}");
        }
        assert_eq!(c.cmd(&["GET", "twin"]).await, R::Null);
        let e = c.cmd(&["RINGKV.PUT", "twin", "v"]).await;
        assert!(e.err_text().contains("wrong number"), "{e:?}");

        // Ring and status views.
        let ring = c.cmd(&["RINGKV.RING"]).await;
        assert!(
            matches!(field(&ring, "epoch"), R::Int(e) if *e > 0),
            "{ring:?}"
        );
        let R::Arr(nodes) = field(&ring, "nodes") else {
            panic!("{ring:?}")
        };
        assert_eq!(nodes.len(), 1);
        assert_eq!(field(&nodes[0], "node"), &R::Int(1));
        assert_eq!(text(field(&nodes[0], "share")), "1.0000");
        let status = c.cmd(&["RINGKV.STATUS"]).await;
        assert_eq!(field(&status, "node"), &R::Int(1));
        let R::Arr(members) = field(&status, "members") else {
            panic!("{status:?}")
        };
        assert_eq!(field(&members[0], "state"), &R::bulk("Alive"));
        // RESP2 shows the same maps as flat arrays.
        assert!(matches!(c.cmd(&["HELLO", "2"]).await, R::Arr(_)));
        let R::Arr(flat) = c.cmd(&["RINGKV.STATUS"]).await else {
            panic!()
        };
        assert_eq!(flat[0], R::bulk("node"));
        assert_eq!(flat[1], R::Int(1));
    })
    .await;
}
