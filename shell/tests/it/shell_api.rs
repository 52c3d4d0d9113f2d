//! The API against real clusters: sandboxed policies that fail fall back
//! to siblings and are reported while the node keeps serving; a workload's
//! history has no lost acknowledged writes, with frames dropped; a TCP
//! cluster is reached through `connect` and partitioned; every fault
//! (one-way partitions, drop rate, delay) works on a TCP cluster; script
//! policies work through `connect` to another process's TCP cluster,
//! resolved in the shell; an LSM node restarts on its directory. On a
//! simulation (`sim`): a script replays byte for byte on one seed and
//! differs on another, in virtual time; a partition refuses strict-quorum
//! writes exactly where too few primaries are reachable; functions a
//! simulation cannot have fail naming themselves.

use std::time::Duration;

use crate::support::shell;

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
        check(fault_counters().blocked > 0, "the partition dropped frames");
    "#);
}

#[test]
fn every_fault_works_on_a_tcp_cluster() {
    let out = ok(r#"
        cluster(#{ nodes: 3, transport: "tcp", seed: 4 });
        print("one-way: node 1's frames to 2 and 3 are cut, theirs to 1 are not");
        partition_one_way([1], [2, 3]);
        wait_seen(2, 1, "Down", 20000);
        wait_seen(3, 1, "Down", 20000);
        // Node 1 hears 2 and 3, but its pings never reach them: no ack
        // comes back, so it cannot count on them either.
        wait_seen(1, 2, "Down", 20000);
        wait_seen(1, 3, "Down", 20000);
        check(true, "2 and 3 convict 1, and 1, whose pings are cut, convicts both");
        heal();
        wait_settled(20000);
        let blocked = fault_counters().blocked;
        check(blocked > 0, "the one-way cut dropped " + blocked + " frames");

        // A request that lost frames fails after 500 ms, not 5 s.
        set_bucket("workload", #{ timeout_ms: 500 });
        drop_rate(0.03);
        let w = workload(#{ ops: 200, keys: 20, clients: 2, seed: 5 });
        let dropped = fault_counters().dropped;
        heal();
        print(w);
        check(dropped > 0, "3% drop rate: " + dropped + " frames lost");
        check(w.lost == 0, "no acknowledged write lost with frames dropped on TCP");

        delay(2, 10);
        put("late", "but there", #{ w: "all" });
        check(get("late", #{ r: "all" }).value == "but there", "writes and reads go through a delay");
        let delayed = fault_counters().delayed;
        check(delayed > 0, delayed + " frames delayed");
        heal();

        let refused = false;
        try { drop_rate(1.5); } catch (e) { refused = true; print(e); }
        check(refused, "a drop rate above 1 is refused");
    "#);
    assert!(out.contains("drop_rate must be within [0, 1]"), "{out}");
}

/// A cluster in another shell process, reached through its client port:
/// its nodes know none of this shell's policies.
struct HostShell(std::process::Child);

impl Drop for HostShell {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_tcp_cluster() -> (HostShell, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringkv-shell"))
        .args([
            "-e",
            r#"cluster(#{ nodes: 3, transport: "tcp" }); print("addr=" + client_addrs()["1"]); sleep(170000);"#,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the host shell starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let host = HostShell(child);
    // Bounded: the host's own sleep ends it, and EOF ends the loop.
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("the host's output is text");
        if let Some(addr) = line.strip_prefix("addr=") {
            return (host, addr.to_string());
        }
    }
    panic!("the host shell ended without printing its address");
}

#[test]
fn script_policies_through_connect_are_resolved_in_the_shell() {
    let (_host, addr) = host_tcp_cluster();
    let script = format!(
        r#"
        connect("{addr}");
        policy("max", |s| {{ let m = 0; for x in s {{ let v = parse_int(x.value); if v > m {{ m = v; }} }} m }});
        policy("throws", |s| {{ throw "cannot merge " + s.len() + " values"; }});
        policy("spin", |s| {{ loop {{ }} }});
        let undefined = false;
        try {{ set_bucket("x", #{{ policy: "script:nope" }}); }} catch (e) {{ undefined = true; }}
        check(undefined, "a policy must be defined in this shell before a bucket uses it");

        set_bucket("scores", #{{ policy: "script:max" }});
        put("k", "7", #{{ bucket: "scores" }});
        put("k", "12", #{{ bucket: "scores" }});
        let r = get("k", #{{ bucket: "scores", r: "all" }});
        print(r);
        check(r.value == "12" && r.siblings.len() == 0 && r.resolved_by == "shell",
            "the node returned siblings; the shell resolved them with max");
        put("k", r.value, #{{ bucket: "scores", context: r.context }});
        set_bucket("scores", #{{ policy: "siblings" }});
        let stored = get("k", #{{ bucket: "scores", r: "all" }});
        check(stored.value == "12" && stored.siblings.len() == 0,
            "a put of the resolved value with the read's context replaced both siblings");

        for name in ["throws", "spin"] {{
            set_bucket(name, #{{ policy: "script:" + name }});
            put("k", "a", #{{ bucket: name }});
            put("k", "b", #{{ bucket: name }});
            let r = get("k", #{{ bucket: name, r: "all" }});
            print(name + ": " + r.policy_error);
            check(r.value == () && r.siblings.len() == 2 && type_of(r.policy_error) == "string"
                && !("resolved_by" in r), name + ": the siblings are kept and the failure reported");
        }}
        let f = policy_failures().map(|f| f.policy);
        check(f == ["throws", "spin"], "each failure is listed once: " + f);
        check(bucket("throws").policy == "script:throws", "the node keeps the policy's name");
    "#
    );
    let out = ok(&script);
    assert!(out.contains("cannot merge 2 values"), "{out}");
    assert!(out.contains("operations"), "{out}");
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

/// A rhai function for the tests below: calls `f`, which must throw, and
/// returns (and prints) the message.
const THROWN: &str = r#"
fn thrown(f) {
    let e = ();
    try { f.call(); } catch (x) { e = x; }
    if type_of(e) != "string" { throw "expected an error, got " + e; }
    print("thrown: " + e);
    e
}
"#;

#[test]
fn join_decommission_leave_and_remove_on_an_embedded_cluster() {
    let script = THROWN.to_string()
        + r#"
        cluster(#{ nodes: 3, vnodes: 16, seed: 5 });
        for i in 0..200 { put("k" + i, "v" + i); }
        check(thrown(|| join(2)).contains("already exists"), "join() refuses an id in use");
        check(thrown(|| join(0)).contains("start at 1"), "join() refuses id 0");
        check(thrown(|| join(5000)).contains("at most 1000"), "join() refuses a huge id");
        check(thrown(|| decommission(9)).contains("no node 9"), "decommission() refuses an unknown node");
        let e = thrown(|| remove(2));
        check(e.contains("is running") && e.contains("leave(2)"), "remove() refuses a running node");
        check(thrown(|| remove(-1)).contains("start at 1"), "remove() refuses a negative id");
        check(thrown(|| leave(7)).contains("no node 7"), "leave() refuses an unknown node");

        let id = join();
        check(id == 4, "the new node takes the next id");
        let ms = wait_rebalanced(60000);
        print("joined in " + ms + " ms");
        check(ring().column("node") == [1, 2, 3, 4], "the ring holds node 4");
        let t = transfers();
        print(t);
        // Forming the cluster made transfers too (into nodes 2 and 3, of
        // empty ranges); the join's all run on node 4.
        let keys = 0;
        let into4 = 0;
        for r in t.rows {
            check(r.state == "done", "transfer " + r.id + " into node " + r.node + " is done");
            if r.node == 4 { keys += r.keys; into4 += 1; }
        }
        check(into4 > 0 && keys > 0, "node 4 pulled " + keys + " copies in " + into4 + " transfers");
        let s = rebalance_status();
        print(s);
        check(s.len() == 4, "one row per running node");
        for r in s.rows {
            check(r.change == () && r.members == [1, 2, 3, 4] && r.transfers_active == 0, "node " + r.node + " is at rest");
        }

        // Decommission: the node keeps running, out of the ring.
        decommission(4);
        wait_rebalanced(60000);
        check(ring().column("node") == [1, 2, 3] && live_nodes().contains(4), "node 4 is out of the ring and still running");
        leave(4);
        check(nodes() == [1, 2, 3] && live_nodes() == [1, 2, 3], "node 4 left");
        check(thrown(|| restart(4)).contains("left the cluster"), "a node that left cannot be restarted");
        check(thrown(|| join(4)).contains("left the cluster"), "its id is not reused");
        check(thrown(|| kill(4)).contains("left the cluster"), "it cannot be killed");

        // A dead node is removed; its ranges come back from the others.
        let id = join();
        check(id == 5, "ids are never reused: " + id);
        wait_rebalanced(60000);
        kill(5);
        remove(5);
        wait_rebalanced(60000);
        check(nodes() == [1, 2, 3] && ring().column("node") == [1, 2, 3], "node 5 is removed");
        check(thrown(|| remove(5)).contains("was removed"), "a removed node cannot be removed again");
        for i in 0..200 {
            check(get("k" + i, #{ r: "quorum" }).value == "v" + i, "k" + i + " survived every change");
        }

        // The last running member cannot leave.
        kill(2);
        kill(3);
        check(thrown(|| decommission(1)).contains("last running member"), "the last running node cannot leave");
        "#;
    let out = ok(&script);
    assert!(out.contains("ok: node 5 is removed"), "{out}");
}

#[test]
fn a_background_workload_runs_while_the_script_goes_on() {
    let script = THROWN.to_string()
        + r#"
        cluster(#{ nodes: 3, seed: 8 });
        let w = workload_start(#{ ops: 1000000, keys: 20, clients: 2, read_ratio: 0.5 });
        print(w);
        let tries = 0;
        while workload_progress(w) < 100 && tries < 500 { sleep(20); tries += 1; }
        let seen = workload_progress(w);
        check(seen >= 100, "the clients run in the background: " + seen + " requests");
        put("x", "y");
        let r = workload_stop(w);
        print(r);
        check(r.ops >= seen && r.ops < 1000000 && r.lost == 0 && r.keys_checked > 0, "stopping checks the history");
        check(thrown(|| workload_stop(w)).contains("already stopped"), "a workload stops once");
        check(thrown(|| workload_progress(w)).contains("already stopped"), "a stopped workload has no progress");
        let small = workload_start(#{ ops: 40, keys: 4, clients: 2 });
        let tries = 0;
        while workload_progress(small) < 40 && tries < 500 { sleep(20); tries += 1; }
        let r = workload_stop(small);
        check(r.ops == 40 && r.lost == 0, "a background workload ends after its ops");
        check(thrown(|| workload_start(#{ nope: 1 })).contains("unknown option"), "its options are checked");
        "#;
    let out = ok(&script);
    assert!(out.contains("workload running"), "{out}");
}

#[test]
fn decommission_and_remove_through_connect() {
    let script = THROWN.to_string()
        + r#"
        let local = cluster(#{ nodes: 4, transport: "tcp", vnodes: 16, seed: 6 });
        for i in 0..100 { put("k" + i, "v" + i); }
        let addrs = client_addrs();
        let to4 = connect(addrs["4"]);
        check(thrown(|| join()).contains("needs an embedded cluster"), "join() needs an embedded cluster");
        check(thrown(|| leave(4)).contains("needs an embedded cluster"), "leave() needs an embedded cluster");
        check(thrown(|| decommission(3)).contains("connected to (node 4)"), "a connection decommissions only its own node");
        check(thrown(|| remove(2)).contains("reachable"), "the node refuses to remove a live node");
        // Node 4 joined last while the cluster formed: it pulled its ranges.
        let t = transfers();
        print(t);
        check(t.len() > 0 && t.rows.all(|r| r.node == 4 && r.state == "done"), "the transfers into the node connected to");
        let s = rebalance_status();
        check(s.len() == 1 && s[0].node == 4 && s[0].change == (), "the status of the node connected to");
        decommission(4);
        wait_rebalanced(60000);
        // This shell's cluster did not ask node 4 to leave, so its own
        // wait_rebalanced() would wait for node 4 in the ring: watch every
        // node's ring instead.
        select(local);
        let tries = 0;
        while !rebalance_status().rows.all(|r| r.members == [1, 2, 3]) && tries < 500 { sleep(20); tries += 1; }
        print(rebalance_status());
        check(rebalance_status().rows.all(|r| r.members == [1, 2, 3] && r.change == ()), "node 4 left the ring through its client port");
        check(live_nodes().contains(4), "and keeps running");
        kill(3);
        wait_seen(1, 3, "Down", 30000);
        let to1 = connect(addrs["1"]);
        remove(3);
        wait_rebalanced(60000);
        select(local);
        let tries = 0;
        while !rebalance_status().rows.all(|r| r.members == [1, 2]) && tries < 500 { sleep(20); tries += 1; }
        print(rebalance_status());
        check(rebalance_status().rows.all(|r| r.members == [1, 2] && r.change == ()), "node 3 was removed through the connection");
        for i in 0..100 {
            check(get("k" + i, #{ r: "quorum" }).value == "v" + i, "k" + i + " survived");
        }
        "#;
    ok(&script);
}

#[test]
fn forget_on_an_embedded_cluster_and_through_connect() {
    let script = THROWN.to_string()
        + r#"
        let local = cluster(#{ nodes: 4, transport: "tcp", vnodes: 16, seed: 9 });
        for i in 0..100 { put("k" + i, "v" + i); }
        let e = thrown(|| forget(2));
        check(e.contains("is running") && e.contains("kill(2)"), "forget() refuses a running node");
        check(thrown(|| forget(9)).contains("no node 9"), "forget() refuses an unknown node");
        check(thrown(|| forget(-1)).contains("start at 1"), "forget() refuses a negative id");

        // A killed node, forgotten: LEFT everywhere, then out of the ring.
        kill(4);
        forget(4);
        wait_rebalanced(60000);
        check(nodes() == [1, 2, 3] && ring().column("node") == [1, 2, 3], "node 4 is forgotten");
        check(status().rows.all(|r| r.node != 4 || r.state == "Left"), "node 4 is LEFT");
        check(thrown(|| forget(4)).contains("was forgotten"), "a forgotten node cannot be forgotten again");
        check(thrown(|| restart(4)).contains("was forgotten"), "nor restarted");

        // Through a connection, the node connected to is asked.
        let to1 = connect(client_addrs()["1"]);
        check(thrown(|| forget(1)).contains("itself"), "a node does not forget itself");
        check(thrown(|| forget(77)).contains("does not know n77"), "nor a node it does not know");
        select(local);
        kill(3);
        select(to1);
        forget(3);
        // This shell's cluster did not forget node 3, so its own
        // wait_rebalanced() would wait for node 3 in the ring: watch every
        // node's ring instead.
        select(local);
        let tries = 0;
        while !rebalance_status().rows.all(|r| r.members == [1, 2] && r.change == ()) && tries < 3000 { sleep(20); tries += 1; }
        print(rebalance_status());
        check(rebalance_status().rows.all(|r| r.members == [1, 2] && r.change == ()), "node 3 was forgotten through the connection");
        for i in 0..100 {
            check(get("k" + i, #{ r: "quorum" }).value == "v" + i, "k" + i + " survived");
        }
        "#;
    let out = ok(&script);
    assert!(out.contains("ok: node 4 is forgotten"), "{out}");
}

/// An experiment on `sim(5, SEED)` that prints what depends on timing:
/// detection waits, receipts, fallbacks, frame counts, a workload's
/// virtual latencies. More than two minutes of virtual time.
const SIM_EXPERIMENT: &str = r#"
    let s = sim(5, SEED);
    set_bucket("sloppy", #{ sloppy_quorum: true });
    for i in 0..20 { put("k" + i, "v" + i); }
    print(status());
    partition([1, 2], [3, 4, 5]);
    print("1 sees 3 down after " + wait_seen(1, 3, "Down", 60000) + " ms");
    for i in 0..10 {
        try {
            print(put("k" + i, "p" + i, #{ via: 1 + i % 5, bucket: "sloppy" }).receipt);
        } catch (e) {
            print("k" + i + ": " + e);
        }
    }
    sleep(60000);
    heal();
    print("settled after " + wait_settled(60000) + " ms, hints after " + wait_hints(60000) + " ms");
    print(get("k3", #{ r: "all", bucket: "sloppy" }));
    print(holders("k3", #{ bucket: "sloppy" }));
    kill(4);
    sleep(15000);
    print(views(4));
    restart(4);
    pause(2, 3000);
    print(get("k1", #{ via: 2 }).receipt);
    print(workload(#{ ops: 100, keys: 10, seed: 3 }));
    print(fault_counters());
    print(s);
"#;

fn sim_experiment(seed: u64) -> String {
    let started = std::time::Instant::now();
    let out = ok(&SIM_EXPERIMENT.replace("SEED", &seed.to_string()));
    // Over two minutes of virtual time; on the wall clock, sleeps and
    // waits that really waited would take that long.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a simulated experiment took {:?} of wall time",
        started.elapsed()
    );
    out
}

#[test]
fn a_sim_replays_a_script_byte_for_byte_and_another_seed_differs() {
    let first = sim_experiment(7);
    let again = sim_experiment(7);
    assert!(first.contains("virtual time"), "{first}");
    assert!(first.contains("settled after"), "{first}");
    // More than 60 + 15 s of sleeps alone.
    let virtual_ms: u64 = first
        .rsplit("virtual time ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the handle prints its virtual time");
    assert!(virtual_ms > 75_000, "{virtual_ms} ms of virtual time");
    assert_eq!(
        first, again,
        "the same script on the same seed printed different bytes"
    );
    let other = sim_experiment(8);
    assert_ne!(first, other, "seeds 7 and 8 gave the same history");
}

#[test]
fn a_partition_on_a_sim_refuses_strict_writes_where_too_few_primaries_are_reachable() {
    let out = ok(r#"
        sim(5, 7);
        set_bucket("strict", #{ policy: "siblings" });
        set_bucket("sloppy", #{ policy: "siblings", sloppy_quorum: true });
        check(bucket("strict").w == "quorum" && !bucket("strict").sloppy_quorum, "w = 2 of 3 primaries");
        let minority = [1, 2];
        let majority = [3, 4, 5];
        // Primaries while every node is up.
        let primaries = [];
        for i in 0..30 { primaries.push(preference_list("k" + i, #{ bucket: "strict" }).column("node")); }
        partition(minority, majority);
        for a in minority { for b in majority {
            wait_seen(a, b, "Down", 60000);
            wait_seen(b, a, "Down", 60000);
        } }
        let minority_refused = 0;
        let majority_refused = 0;
        for i in 0..30 {
            let k = "k" + i;
            let on_minority = primaries[i].filter(|n| minority.contains(n)).len();
            let via_1 = true;
            try { put(k, "left", #{ bucket: "strict", via: 1 }); } catch (e) { via_1 = false; }
            let via_3 = true;
            try { put(k, "right", #{ bucket: "strict", via: 3 }); } catch (e) { via_3 = false; }
            if via_1 != (on_minority >= 2) || via_3 != (on_minority <= 1) {
                throw k + " (primaries " + primaries[i] + "): via 1 " + via_1 + ", via 3 " + via_3;
            }
            if !via_1 { minority_refused += 1; }
            if !via_3 { majority_refused += 1; }
            put(k, "left", #{ bucket: "sloppy", via: 1 });
            put(k, "right", #{ bucket: "sloppy", via: 4 });
        }
        print("refused: " + minority_refused + " on the minority side, " + majority_refused + " on the majority side");
        check(minority_refused > 0 && majority_refused < minority_refused,
            "a strict write succeeds exactly on the side with two of the key's primaries");
        heal();
        wait_settled(60000);
        wait_hints(60000);
        for i in 0..30 {
            let r = get("k" + i, #{ bucket: "sloppy", r: "all" });
            let v = r.siblings.map(|s| s.value);
            v.sort();
            if v != ["left", "right"] { throw "k" + i + ": " + v; }
        }
        check(true, "sloppy writes on both sides are both kept as siblings after the heal");
    "#);
    assert!(out.contains("refused: "), "{out}");
}

#[test]
fn functions_a_sim_cannot_have_fail_naming_themselves_and_the_rest_work() {
    let script = THROWN.to_string()
        + r#"
        let s = sim(3, 1);
        check(thrown(|| join()).contains("join() is not available on a simulation"), "join");
        check(thrown(|| decommission(2)).contains("decommission(2) is not available on a simulation"), "decommission");
        check(thrown(|| leave(2)).contains("leave(2) is not available on a simulation"), "leave");
        kill(3);
        check(thrown(|| remove(3)).contains("remove(3) is not available on a simulation"), "remove");
        check(thrown(|| forget(3)).contains("forget(3) is not available on a simulation"), "forget");
        check(thrown(|| client_addrs()).contains("client_addrs() is not available on a simulation"), "client_addrs");
        check(thrown(|| workload_start(#{ ops: 10 })).contains("workload_start() is not available on a simulation"), "workload_start");
        check(thrown(|| sim(#{ nodes: 3, engine: "lsm" })).contains("option engine is not available"), "sim's engine option");
        check(thrown(|| kill(3)).contains("node 3 is already killed"), "kill twice");
        check(thrown(|| put("k", "v", #{ via: 3 })).contains("node 3 is killed"), "via a killed node");
        // What does make sense works.
        check(transfers().len() == 0 && wait_rebalanced() == 0, "a fixed ring is at rest");
        check(ring().len() == 3 && nodes() == [1, 2, 3] && live_nodes() == [1, 2], "ring and nodes");
        skew(1, -300);
        restart(3);
        check(live_nodes() == [1, 2, 3], "restart");
        check(local_get(3, "nothing").found == false, "local_get");
        // On an embedded cluster, skew is the one that cannot work.
        cluster(2);
        check(thrown(|| skew(1, 300)).contains("skew(1, ..) needs a simulation"), "skew on a cluster");
        select(s);
        check(put("k", "v").receipt.answered.len() >= 2, "select goes back to the simulation");
        // A second pause moves the resume: frozen for 20 s, node 2 is
        // convicted (resumed after 1 s, it never would be).
        pause(2, 1000);
        pause(2, 20000);
        print("node 2 DOWN after " + wait_state(2, "Down", 30000) + " ms");
        check(put("k", "w", #{ via: 2 }).receipt.answered.len() >= 2, "a request through a paused node is answered once it resumes");
        check(wait_state(2, "Alive", 30000) >= 0, "and it is ALIVE again");
    "#;
    ok(&script);
}

/// A client port that requires authentication, in this test's process, in
/// front of a node that stores nothing: `viewer` (read) may get, nobody
/// else may do anything. Returns the runtime that serves it and its
/// address.
fn authenticating_port(
    tls: Option<ringkv::net::client_tls::ClientPortTls>,
) -> (tokio::runtime::Runtime, String) {
    use ringkv::node::auth::{hash_password_with_cost, Users};
    use ringkv::node::client_port::{ClientAuth, ClientPort, ClientPortConfig};
    use ringkv::protocol::{Handler, Op, Reply};
    use std::sync::Arc;

    struct Empty;
    impl Handler for Empty {
        fn execute(
            &self,
            op: Op,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ringkv::Result<Reply>> + Send>>
        {
            Box::pin(async move {
                match op {
                    Op::Hello { .. } => Ok(Reply::Hello {
                        version: ringkv::protocol::CLIENT_PROTOCOL_VERSION,
                        node: ringkv::NodeId(1),
                        cluster: "auth-test".into(),
                        role: None,
                    }),
                    Op::Get { .. } => Ok(Reply::Object {
                        value: None,
                        siblings: vec![],
                        context: serde_bytes::ByteBuf::from(vec![0xa0]),
                        receipt: Default::default(),
                    }),
                    other => Err(ringkv::Error::InvalidInput(format!("not {}", other.name()))),
                }
            })
        }
    }
    let hash = hash_password_with_cost("viewer-pw", 64, 1).unwrap();
    let users = Users::parse(&format!(
        "[[user]]\nname = \"viewer\"\nrole = \"read\"\npassword_hash = \"{hash}\"\n"
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let config = ClientPortConfig {
        auth: ClientAuth::Users(Arc::new(users)),
        tls,
        ..ClientPortConfig::default()
    };
    let port = rt
        .block_on(ClientPort::start("127.0.0.1:0", Arc::new(Empty), config))
        .unwrap();
    let addr = port.local_addr().to_string();
    // The port runs on `rt` until the runtime is dropped.
    std::mem::forget(port);
    (rt, addr)
}

#[test]
fn connect_authenticates_with_user_and_password() {
    let (_rt, addr) = authenticating_port(None);
    let out = ok(&format!(
        r#"
        connect("{addr}");
        try {{ get("k"); print("anonymous got through"); }} catch (e) {{ print("anonymous: " + e); }}
        try {{ connect("{addr}", #{{ user: "viewer", password: "guess" }}); print("guess got through"); }}
        catch (e) {{ print("guess: " + e); }}
        try {{ connect("{addr}", #{{ user: "viewer" }}); }} catch (e) {{ print("half: " + e); }}
        try {{ connect("{addr}", #{{ user: "viewer", pass: "x" }}); }} catch (e) {{ print("typo: " + e); }}
        connect("{addr}", #{{ user: "viewer", password: "viewer-pw" }});
        print("viewer found: " + get("k").found);
        try {{ put("k", "v"); print("put got through"); }} catch (e) {{ print("put: " + e); }}
        "#
    ));
    assert!(!out.contains("got through"), "{out}");
    let line = |prefix: &str| line_of(&out, prefix);
    assert!(line("anonymous:").contains("Unauthenticated"), "{out}");
    assert!(line("guess:").contains("Unauthenticated"), "{out}");
    assert!(line("half:").contains("go together"), "{out}");
    assert!(line("typo:").contains("unknown option pass"), "{out}");
    assert_eq!(line("viewer found:"), "viewer found: false");
    assert!(line("put:").contains("PermissionDenied"), "{out}");
}

#[test]
fn connect_speaks_tls_to_a_port_with_a_certificate() {
    use ringkv::net::client_tls::ClientPortTls;
    let ca = ringkv::ClusterCa::generate("shell-tls").unwrap();
    let port = ca.issue_client_port(&["127.0.0.1".into()]).unwrap();
    let tls = ClientPortTls::new(&port.cert_pem, &port.key_pem).unwrap();
    let (_rt, addr) = authenticating_port(Some(tls));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, ringkv::ClusterCa::generate("x").unwrap().cert_pem()).unwrap();
    let (ca_file, other) = (ca_file.display(), other.display());
    let out = ok(&format!(
        r#"
        try {{ connect("{addr}", #{{ user: "viewer", password: "viewer-pw" }}); print("plain got through"); }}
        catch (e) {{ print("plain: " + e); }}
        try {{ connect("{addr}", #{{ user: "viewer", password: "viewer-pw", tls_ca: "{other}" }}); print("stranger got through"); }}
        catch (e) {{ print("stranger: " + e); }}
        try {{ connect("{addr}", #{{ user: "viewer", password: "viewer-pw", tls_ca: "{ca_file}", server_name: "elsewhere.test" }}); print("wrong name got through"); }}
        catch (e) {{ print("wrong name: " + e); }}
        try {{ connect("{addr}", #{{ server_name: "x" }}); }} catch (e) {{ print("name alone: " + e); }}
        try {{ connect("{addr}", #{{ tls_ca: "/no/such/file.pem" }}); }} catch (e) {{ print("missing: " + e); }}
        connect("{addr}", #{{ user: "viewer", password: "viewer-pw", tls_ca: "{ca_file}" }});
        print("viewer found: " + get("k").found);
        "#
    ));
    assert!(!out.contains("got through"), "{out}");
    let line = |prefix: &str| line_of(&out, prefix);
    assert!(line("plain:").contains("connecting to"), "{out}");
    assert!(line("stranger:").contains("certificate"), "{out}");
    assert!(line("wrong name:").contains("certificate"), "{out}");
    assert!(line("name alone:").contains("needs tls_ca"), "{out}");
    assert!(line("missing:").contains("cannot open"), "{out}");
    assert_eq!(line("viewer found:"), "viewer found: false");
}

/// The first line of `out` that starts with `prefix`.
fn line_of(out: &str, prefix: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in {out}"))
        .to_string()
}
