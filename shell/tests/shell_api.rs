//! The API against real clusters: sandboxed policies that fail fall back
//! to siblings and are reported while the node keeps serving; a workload's
//! history has no lost acknowledged writes, with frames dropped; a TCP
//! cluster is reached through `connect` and partitioned; an LSM node
//! restarts on its directory.

mod support;

use std::time::Duration;

use support::shell;

const LIMIT: Duration = Duration::from_secs(180);

fn ok(script: &str) -> String {
    let run = shell(&[], Some(script), LIMIT);
    assert_eq!(
        run.code,
        Some(0),
        "--- stdout\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}

#[test]
fn failing_policies_keep_siblings_are_reported_and_never_stop_the_node() {
    let out = ok(r#"
        cluster(3);
        policy("spin", |s| { let i = 0; loop { i += 1; } });
        policy("grow", |s| { let x = "0123456789"; loop { x += x; } });
        policy("throws", |s| { throw "cannot merge " + s.len() + " values"; });
        policy("max", |s| { let m = 0; for x in s { let v = parse_int(x.value); if v > m { m = v; } } m });
        for name in ["spin", "grow", "throws", "max"] {
            set_bucket(name, #{ policy: "script:" + name });
            // Two blind writes through different nodes: concurrent.
            put("k", "7", #{ bucket: name, via: 1 });
            put("k", "12", #{ bucket: name, via: 2 });
            let r = get("k", #{ bucket: name, r: "all" });
            if name == "max" {
                check(r.value == "12" && r.siblings.len() == 0, "a working policy merges");
            } else {
                check(r.value == () && r.siblings.len() == 2, name + ": the siblings are kept");
                check(type_of(r.policy_error) == "string", name + ": the failure is reported: " + r.policy_error);
            }
        }
        let f = policy_failures().map(|f| f.policy);
        print("failures: " + f);
        check(f.contains("spin") && f.contains("grow") && f.contains("throws") && !f.contains("max"), "each failure is listed");
        put("after", "fine");
        check(get("after", #{ r: "all" }).value == "fine", "every node still serves");
    "#);
    assert!(out.contains("operations"), "{out}");
    assert!(out.contains("cannot merge 2 values"), "{out}");
}

#[test]
fn a_workload_loses_no_acknowledged_write_even_with_dropped_frames() {
    let out = ok(r#"
        cluster(#{ nodes: 4, seed: 9 });
        let w = workload(#{ ops: 600, keys: 30, read_ratio: 0.4, clients: 4, value_size: 24 });
        print(w);
        check(w.ops == 600 && w.errors == 0 && w.lost == 0 && w.keys_checked > 0, "a clean run");
        check(w.p50_ms <= w.p99_ms && w.p99_ms <= w.max_ms && w.throughput > 0.0, "percentiles are ordered");
        drop_rate(0.02);
        let w = workload(#{ ops: 300, keys: 30, clients: 3, seed: 2 });
        heal();
        print(w);
        check(w.lost == 0, "no acknowledged write lost with 2% of frames dropped");
    "#);
    assert!(out.contains("lost"), "{out}");
}

#[test]
fn a_tcp_cluster_through_connect_and_an_injected_partition() {
    ok(r#"
        let local = cluster(#{ nodes: 3, transport: "tcp" });
        put("k", "from the embedded API", #{ w: "all" });
        let addrs = client_addrs();
        check(addrs.len() == 3, "each TCP node has a client port");
        let remote = connect(addrs["2"]);
        print(remote);
        check(get("k").value == "from the embedded API", "connect reads what the cluster holds");
        put("r", "through the client port", #{ w: "all" });
        check(bucket("default").n == 3, "buckets through the connection");
        check(status().len() == 3 && ring().len() == 3, "views through the connection");
        let refused = false;
        try { kill(1); } catch (e) { refused = true; }
        check(refused, "faults need the embedded cluster");
        select(local);
        check(local_get(3, "r").value == "through the client port", "the remote write reached every replica");
        partition([1], [2, 3]);
        wait_seen(2, 1, "Down", 20000);
        heal();
        wait_settled(20000);
        let one_way = false;
        try { partition_one_way([1], [2]); } catch (e) { one_way = true; }
        check(one_way, "one-way partitions need the memory transport");
    "#);
}

#[test]
fn an_lsm_node_restarts_on_its_directory() {
    ok(r#"
        cluster(#{ nodes: 3, engine: "lsm" });
        for i in 0..10 { put("k" + i, "v" + i, #{ w: "all" }); }
        kill(2);
        restart(2);
        wait_settled(20000);
        for i in 0..10 {
            check(get("k" + i, #{ r: "all" }).value == "v" + i, "k" + i + " reads back at ALL after the restart");
        }
        check(status(2).len() == 3, "the restarted node serves");
    "#);
}
