//! Part of `tests/processes/node_resp.rs`: real Redis clients against real nodes.
//!
//! - The Python `redis` package (redis-py >= 5), running
//!   `tests/python/resp_client.py` against one node: strings, counters,
//!   sets, a pipeline of a few hundred commands, RESP3, WRONGTYPE and an
//!   unsupported command. CI installs the package (`.ci/run`); without it
//!   the test fails, unless `RINGKV_SKIP_PYTHON=1` lets it skip with a
//!   notice.
//! - `redis-benchmark -t set,get,incr,sadd` (Debian's redis-tools) against
//!   one node and three, plain and with `-P 16`: no error reply, and what
//!   it wrote is read back. Without `redis-benchmark` the test fails,
//!   unless `RINGKV_SKIP_REDIS_TOOLS=1` lets it skip with a notice.
//! - A node SIGKILLed while a client pipelines SETs and GETs through
//!   node 1, and another through the killed node: every reply is an error
//!   or right, and every acknowledged SET is read back afterwards.
//!   `RINGKV_RESP_KILL_SEED` replays a seed.

use std::collections::HashMap;
use std::process::Stdio;

use super::*;

/// How long one run of an outside client (a Python script, one
/// redis-benchmark) may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(90);

/// The buckets a fresh cluster gives database 0, by their names: `db0`
/// last-writer-wins (redis's SET), `db0.counters` a PN-counter (INCR and
/// friends in db0), `db0.sets` an OR-set (SADD and friends in db0). A
/// fresh bucket has `n = 3`; a one-node cluster needs them with one copy.
async fn db0_buckets_of_one_copy(cluster: &Cluster) {
    set_buckets(
        cluster,
        1,
        &[
            ("db0", ConflictPolicy::Lww),
            ("db0.counters", ConflictPolicy::Crdt(CrdtKind::PnCounter)),
            ("db0.sets", ConflictPolicy::Crdt(CrdtKind::OrSet)),
        ],
    )
    .await;
}

/// Waits until a write with `w = all` succeeds through every node's RESP
/// port: each node's ring then has all of them, and the run that follows
/// starts on a formed cluster.
async fn wait_for_every_replica(cluster: &Cluster) {
    for node in &cluster.nodes {
        let mut c = Conn::open(node.redis.expect("a redis= address")).await;
        assert_eq!(c.cmd(&["RINGKV.CONSISTENCY", "all", "all"]).await, R::ok());
        let deadline = std::time::Instant::now() + SETTLE;
        let key = format!("ready:{}", node.id);
        let mut last = c.cmd(&["SET", &key, "x"]).await;
        while last != R::ok() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            last = c.cmd(&["SET", &key, "x"]).await;
        }
        let written = last == R::ok();
        assert!(
            written,
            "no SET with w=all through node {} ({last:?})\n{}",
            node.id,
            cluster.logs()
        );
    }
}

/// Runs a program to its end within [`CLIENT_LIMIT`]; its status and its
/// stdout and stderr together.
async fn run_program(program: &str, args: &[String]) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CLIENT_LIMIT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {program}: {e}"),
        Err(_) => panic!("{program} {args:?} did not finish within {CLIENT_LIMIT:?}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Whether a missing tool may skip its test: only when `var` is `1`.
/// Otherwise the test fails with `how` (CI installs the tools).
fn missing(what: &str, var: &str, how: &str) {
    if std::env::var(var).as_deref() == Ok("1") {
        println!("SKIPPED ({var}=1): {what} is missing; {how}");
        return;
    }
    panic!("{what} is missing: {how} (or set {var}=1 to skip this test)");
}

/// The Python `redis` package, redis-py >= 5, against one node: the
/// script checks every reply and exits non-zero on the first wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_redis_package_against_a_node() {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import redis, sys; print(redis.__version__); \
             sys.exit(int(redis.__version__.split('.')[0]) < 5)",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            println!("redis-py {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        Ok(out) => {
            return missing(
                &format!(
                    "the Python redis package >= 5 ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "RINGKV_SKIP_PYTHON",
                "python3 -m pip install 'redis>=5,<7'",
            )
        }
        Err(e) => {
            return missing(
                &format!("python3 ({e})"),
                "RINGKV_SKIP_PYTHON",
                "install Python 3 and then python3 -m pip install 'redis>=5,<7'",
            )
        }
    }
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        db0_buckets_of_one_copy(&cluster).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/resp_client.py");
        let port = cluster.node(1).redis.unwrap().port().to_string();
        let (status, out) = run_program("python3", &[script.into(), port]).await;
        println!("{out}");
        assert!(
            status.success(),
            "the Python client failed ({status}):\n{out}\n{}",
            cluster.logs()
        );
        assert!(
            out.lines().any(|l| l == "all checks passed"),
            "the script ended without its last line:\n{out}"
        );
    })
    .await;
}

/// The `redis` crate (redis-rs), RESP2 and RESP3, against one node (a
/// lone node serves quorum ops; no SetBucket): strings, a pipeline whose
/// every result is checked, counters and sets in db0's companions, SCAN,
/// errors as `RedisError`, and a refused MULTI that applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_crate_against_a_node() {
    use redis::AsyncCommands;
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        let port = cluster.node(1).redis.unwrap().port();
        for protocol in ["resp2", "resp3"] {
            let url = format!("redis://127.0.0.1:{port}/?protocol={protocol}");
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .unwrap_or_else(|e| panic!("{protocol}: connect: {e}\n{}", cluster.logs()));
            let p = |k: &str| format!("{protocol}:{k}");

            let () = con.set(p("k"), "v1").await.unwrap();
            let got: Option<String> = con.get(p("k")).await.unwrap();
            assert_eq!(got.as_deref(), Some("v1"), "{protocol}");
            let none: Option<String> = con.get(p("missing")).await.unwrap();
            assert_eq!(none, None);
            let old: Option<String> = redis::cmd("SET")
                .arg(p("k"))
                .arg("v2")
                .arg("GET")
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(old.as_deref(), Some("v1"));
            let binary: Vec<u8> = (0..=255).collect();
            let () = con.set(p("bin"), &binary).await.unwrap();
            let back: Vec<u8> = con.get(p("bin")).await.unwrap();
            assert_eq!(back, binary);

            // A pipeline of 200 commands: every SET, then every GET, in order.
            let mut pipe = redis::pipe();
            for i in 0..100 {
                pipe.set(p(&format!("pk{i}")), format!("value-{i}"))
                    .ignore();
            }
            for i in 0..100 {
                pipe.get(p(&format!("pk{i}")));
            }
            let values: Vec<String> = pipe.query_async(&mut con).await.unwrap();
            let expected: Vec<String> = (0..100).map(|i| format!("value-{i}")).collect();
            assert_eq!(values, expected, "{protocol}");
            let n: usize = con
                .exists((0..100).map(|i| p(&format!("pk{i}"))).collect::<Vec<_>>())
                .await
                .unwrap();
            assert_eq!(n, 100);

            // Counters in db0.counters, sets in db0.sets.
            let total: i64 = con.incr(p("n"), 5).await.unwrap();
            assert_eq!(total, 5);
            let total: i64 = con.decr(p("n"), 2).await.unwrap();
            assert_eq!(total, 3);
            let added: usize = con.sadd(p("s"), &["a", "b", "c"]).await.unwrap();
            assert_eq!(added, 3);
            let removed: usize = con.srem(p("s"), "b").await.unwrap();
            assert_eq!(removed, 1);
            let members: std::collections::HashSet<String> = con.smembers(p("s")).await.unwrap();
            assert_eq!(
                members,
                ["a", "c"].iter().map(|m| m.to_string()).collect(),
                "{protocol}"
            );

            // SCAN through the crate's iterator: every pk key, once.
            let mut seen = std::collections::BTreeSet::new();
            {
                let mut iter = con
                    .scan_match::<_, String>(format!("{protocol}:pk*"))
                    .await
                    .unwrap();
                while let Some(key) = iter.next_item().await {
                    let key = key.unwrap();
                    assert!(seen.insert(key.clone()), "{key} twice");
                }
            }
            assert_eq!(seen.len(), 100, "{protocol}: {seen:?}");

            // Errors: WRONGTYPE-free names, reasons for the unsupported.
            let e = con
                .expire::<_, ()>(p("k"), 10)
                .await
                .expect_err("EXPIRE is unsupported");
            assert!(e.to_string().contains("no TTLs"), "{e}");
            // A refused MULTI: nothing up to EXEC is applied. (Sent one by
            // one: redis-rs's atomic pipeline panics, in debug builds, on
            // an error reply to MULTI itself.)
            let multi: redis::RedisResult<()> = redis::cmd("MULTI").query_async(&mut con).await;
            assert!(multi.is_err(), "{multi:?}");
            let inside: redis::RedisResult<()> = con.set(p("tx"), "inside").await;
            assert!(
                inside
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("not run")),
                "{inside:?}"
            );
            let exec: redis::RedisResult<()> = redis::cmd("EXEC").query_async(&mut con).await;
            assert!(
                exec.as_ref()
                    .is_err_and(|e| e.to_string().contains("none of its commands ran")),
                "{exec:?}"
            );
            let tx: Option<String> = con.get(p("tx")).await.unwrap();
            assert_eq!(
                tx, None,
                "{protocol}: a write after a refused MULTI was applied"
            );
            let after: Option<String> = con.get(p("k")).await.unwrap();
            assert_eq!(after.as_deref(), Some("v2"), "the connection goes on");
        }
    })
    .await;
}

/// The keys `redis-benchmark -r 1000` writes: `prefix` and a 12-digit
/// number below 1000.
fn bench_keys(prefix: &str) -> Vec<String> {
    (0..1000).map(|i| format!("{prefix}{i:012}")).collect()
}

/// Runs `redis-benchmark -t set,get,incr,sadd` against `port`, with
/// `-P pipeline` when given; asserts it succeeded without an error reply
/// (`-e` prints them) and returns its CSV.
async fn benchmark(port: u16, pipeline: Option<u32>, requests: u32) -> String {
    let mut args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        "set,get,incr,sadd",
        "-n",
        &requests.to_string(),
        "-c",
        "10",
        "-r",
        "1000",
        "-d",
        "3",
        "-e",
        "--csv",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = pipeline {
        args.extend(["-P".to_string(), p.to_string()]);
    }
    let (status, out) = run_program("redis-benchmark", &args).await;
    println!("redis-benchmark {}:\n{out}", args.join(" "));
    assert!(
        status.success(),
        "redis-benchmark failed ({status}):\n{out}"
    );
    for bad in ["Error", "ERR", "WRONGTYPE", "NOAUTH", "NOPERM"] {
        assert!(
            !out.contains(bad),
            "redis-benchmark saw an error reply ({bad}):\n{out}"
        );
    }
    // One CSV row per test, each with a positive rate.
    for test in ["SET", "GET", "INCR", "SADD"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("\"{test}\",")))
            .unwrap_or_else(|| panic!("no row for {test}:\n{out}"));
        let rps: f64 = row
            .split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{row}");
    }
    out
}

/// Reads back what two runs of `requests` requests wrote in db0: every
/// `key:` holds a 3-byte value (`-d 3`), the `counter:` totals add up to
/// the INCRs made, and `myset` holds only `element:` members.
async fn check_benchmark_data(c: &mut Conn, requests: i64, runs: i64) {
    let keys = bench_keys("key:");
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let R::Arr(values) = c.cmd(&args).await else {
        panic!("MGET answers an array")
    };
    // redis-benchmark 7 fills the `-d 3` value of a run with random
    // letters, one value for all its SETs.
    let mut written = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for (k, v) in keys.iter().zip(&values) {
        match v {
            R::NilBulk => {}
            R::Bulk(b) if b.len() == 3 => {
                written += 1;
                distinct.insert(b.clone());
            }
            other => panic!("{k}: {other:?}, not redis-benchmark's 3-byte value"),
        }
    }
    println!("{written} keys hold {distinct:?}");
    assert!(
        distinct.len() as i64 <= runs,
        "more values than runs of redis-benchmark: {distinct:?}"
    );
    // 2 runs of SET, each of `requests` SETs over 1000 keys.
    assert!(
        written > 500,
        "only {written} of the 1000 keys were written"
    );
    // INCR in db0 went to db0.counters, a separate keyspace.
    assert_eq!(c.cmd(&["GET", "counter:000000000001"]).await, R::NilBulk);
    assert_eq!(c.cmd(&["RINGKV.BUCKET", "db0.counters"]).await, R::ok());
    let counters = bench_keys("counter:");
    let mut args = vec!["MGET"];
    args.extend(counters.iter().map(String::as_str));
    let R::Arr(totals) = c.cmd(&args).await else {
        panic!("MGET answers an array")
    };
    let mut sum = 0;
    for (k, v) in counters.iter().zip(&totals) {
        match v {
            R::NilBulk => {}
            R::Bulk(b) => {
                let n: i64 = std::str::from_utf8(b).unwrap().parse().unwrap();
                assert!(n > 0, "{k}: {n}");
                sum += n;
            }
            other => panic!("{k}: {other:?}"),
        }
    }
    assert_eq!(
        sum,
        requests * runs,
        "the counters' totals are not the INCRs redis-benchmark made"
    );
    assert_eq!(c.cmd(&["RINGKV.BUCKET", "db0.sets"]).await, R::ok());
    let R::Arr(members) = c.cmd(&["SMEMBERS", "myset"]).await else {
        panic!("SMEMBERS answers an array")
    };
    for m in &members {
        let R::Bulk(m) = m else { panic!("{m:?}") };
        let m = String::from_utf8_lossy(m);
        let n = m.strip_prefix("element:").unwrap_or_else(|| panic!("{m}"));
        assert!(n.len() == 12 && n.parse::<u32>().unwrap() < 1000, "{m}");
    }
    // Each element is one of 1000, drawn 2 × `requests` times.
    assert!(members.len() > 500, "only {} members", members.len());
    assert_eq!(
        c.cmd(&["SCARD", "myset"]).await,
        R::Int(members.len() as i64)
    );
    assert_eq!(c.cmd(&["SELECT", "0"]).await, R::ok());
}

/// Whether `redis-benchmark` runs; a failure or a notice if not.
fn have_redis_benchmark() -> bool {
    let ok = std::process::Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing(
            "redis-benchmark",
            "RINGKV_SKIP_REDIS_TOOLS",
            "apt-get install redis-tools",
        );
    }
    ok
}

const BENCH_REQUESTS: u32 = 2000;

/// `redis-benchmark -t set,get,incr,sadd` against one node, in db0 with
/// its buckets by name, plain and pipelined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_against_one_node() {
    if !have_redis_benchmark() {
        return;
    }
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        db0_buckets_of_one_copy(&cluster).await;
        let addr = cluster.node(1).redis.unwrap();
        benchmark(addr.port(), None, BENCH_REQUESTS).await;
        benchmark(addr.port(), Some(16), BENCH_REQUESTS).await;
        let mut c = Conn::open(addr).await;
        check_benchmark_data(&mut c, i64::from(BENCH_REQUESTS), 2).await;
    })
    .await;
}

/// The same against three nodes with a fresh cluster's buckets (`n = 3`,
/// quorums of 2), through node 1, read back through node 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_against_three_nodes() {
    if !have_redis_benchmark() {
        return;
    }
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = Cluster::start_with(3, &["--redis-listen", "127.0.0.1:0"]).await;
        wait_for_every_replica(&cluster).await;
        let one = cluster.node(1).redis.unwrap();
        benchmark(one.port(), None, BENCH_REQUESTS).await;
        benchmark(one.port(), Some(16), BENCH_REQUESTS).await;
        let mut c = Conn::open(cluster.node(3).redis.unwrap()).await;
        check_benchmark_data(&mut c, i64::from(BENCH_REQUESTS), 2).await;
    })
    .await;
}

/// splitmix64: the test's only randomness, from its printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One command of the killed-node run.
#[derive(Clone, Debug)]
enum Cmd {
    Set { key: String, value: String },
    Get { key: String },
}

/// Keys of each client of the killed-node run.
const KILL_KEYS: u64 = 300;
/// Commands per pipelined write.
const KILL_BATCH: usize = 40;
/// Batches before the kill, and at least this many after it.
const KILL_AFTER: usize = 15;
/// How long the run goes on after the kill, at least.
const KILL_RUN_ON: Duration = Duration::from_secs(5);

/// What one key's SETs have left: the last acknowledged value, and the
/// values of the SETs after it that answered an error or nothing (each
/// may have been applied).
#[derive(Default)]
struct KeyState {
    acked: Option<String>,
    maybe: Vec<String>,
}

impl KeyState {
    /// Whether a read may return `value` (`None`: nil): the last
    /// acknowledged value or one that may have been applied after it; nil
    /// only if no SET of the key was acknowledged.
    fn allows(&self, value: Option<&str>) -> bool {
        match value {
            None => self.acked.is_none(),
            Some(v) => self.acked.as_deref() == Some(v) || self.maybe.iter().any(|m| m == v),
        }
    }
}

/// One reply to a SET or a GET (`+`, `-`, `$`), or `None` if the
/// connection ended (or said nothing for 20 s) before it.
async fn reply_or_end(c: &mut Conn) -> Option<R> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), c.r.read_until(b'\n', &mut line));
    match read.await {
        Ok(Ok(n)) if n > 0 && line.ends_with(b"\r\n") => {}
        _ => return None,
    }
    line.truncate(line.len() - 2);
    let text = String::from_utf8(line).expect("a UTF-8 reply line");
    let (kind, rest) = text.split_at(1);
    Some(match kind {
        "+" => R::Simple(rest.into()),
        "-" => R::Err(rest.into()),
        "$" if rest == "-1" => R::NilBulk,
        "$" => {
            let mut body = vec![0u8; rest.parse::<usize>().expect("a bulk length") + 2];
            let read = tokio::time::timeout(Duration::from_secs(20), c.r.read_exact(&mut body));
            match read.await {
                Ok(Ok(_)) => {}
                _ => return None,
            }
            body.truncate(body.len() - 2);
            R::Bulk(body)
        }
        other => panic!("unexpected reply type {other:?} in {text:?}"),
    })
}

/// A pipelined client of the killed-node run: batches of SETs and GETs of
/// `prefix` keys through `addr`, each batch written at once and its
/// replies read in order, until `stop` says so or the connection ends.
/// Counts finished batches on `done`. Each command with its reply, `None`
/// for those the connection ended before.
async fn pipelined_run(
    addr: SocketAddr,
    seed: u64,
    prefix: &'static str,
    done: tokio::sync::watch::Sender<usize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Cmd, Option<R>)> {
    let mut rng = Rng(seed);
    let mut c = Conn::open(addr).await;
    let mut log = Vec::new();
    let mut seq = 0u64;
    let mut batches = 0;
    let mut open = true;
    while open && !*stop.borrow() {
        let mut cmds = Vec::with_capacity(KILL_BATCH);
        let mut bytes = Vec::new();
        for _ in 0..KILL_BATCH {
            let key = format!("{prefix}{}", rng.below(KILL_KEYS));
            seq += 1;
            // Two SETs for each GET; a value names its key and its SET.
            let cmd = if rng.below(3) < 2 {
                let value = format!("{key}={seq}/{seed}");
                bytes.extend(encode(&[b"SET", key.as_bytes(), value.as_bytes()]));
                Cmd::Set { key, value }
            } else {
                bytes.extend(encode(&[b"GET", key.as_bytes()]));
                Cmd::Get { key }
            };
            cmds.push(cmd);
        }
        open = c.w.write_all(&bytes).await.is_ok();
        for cmd in cmds {
            let reply = if open {
                reply_or_end(&mut c).await
            } else {
                None
            };
            open = reply.is_some();
            log.push((cmd, reply));
        }
        batches += 1;
        done.send_replace(batches);
    }
    log
}

/// Counts of one client's replies.
#[derive(Debug, Default)]
struct Tally {
    set_ok: usize,
    set_err: usize,
    get_value: usize,
    get_nil: usize,
    get_err: usize,
    no_reply: usize,
}

/// Checks one client's log in order, each GET against what the SETs
/// before it on the connection left (`what` names the run in a failure);
/// returns each key's state after the last command, and the tally.
fn replay(log: &[(Cmd, Option<R>)], what: &str) -> (HashMap<String, KeyState>, Tally) {
    let mut keys: HashMap<String, KeyState> = HashMap::new();
    let mut t = Tally::default();
    for (i, (cmd, reply)) in log.iter().enumerate() {
        match cmd {
            Cmd::Set { key, value } => {
                let state = keys.entry(key.clone()).or_default();
                match reply {
                    Some(r) if *r == R::ok() => {
                        t.set_ok += 1;
                        state.acked = Some(value.clone());
                        state.maybe.clear();
                    }
                    Some(R::Err(_)) | None => {
                        if reply.is_some() {
                            t.set_err += 1;
                        } else {
                            t.no_reply += 1;
                        }
                        state.maybe.push(value.clone());
                    }
                    Some(other) => panic!("{what}: reply {i}, SET {key} {value}: {other:?}"),
                }
            }
            Cmd::Get { key } => {
                let state = keys.entry(key.clone()).or_default();
                let got = match reply {
                    None => {
                        t.no_reply += 1;
                        continue;
                    }
                    Some(R::Err(_)) => {
                        t.get_err += 1;
                        continue;
                    }
                    Some(R::NilBulk) => {
                        t.get_nil += 1;
                        None
                    }
                    Some(R::Bulk(v)) => {
                        t.get_value += 1;
                        Some(String::from_utf8(v.clone()).unwrap())
                    }
                    Some(other) => panic!("{what}: reply {i}, GET {key}: {other:?}"),
                };
                assert!(
                    state.allows(got.as_deref()),
                    "{what}: reply {i}, GET {key}: {got:?}; the last acknowledged SET wrote \
                     {:?}, and SETs after it that failed or got no reply {:?}",
                    state.acked,
                    state.maybe
                );
            }
        }
    }
    (keys, t)
}

/// A node SIGKILLed while a client pipelines SETs and GETs through node 1
/// of three (n = 3, r = w = 2), and another client through the killed
/// node itself: every reply is an error or right, and every acknowledged
/// SET is read back through a surviving node after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_pipelined_run() {
    let seed = std::env::var("RINGKV_RESP_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    println!("seed {seed} (RINGKV_RESP_KILL_SEED={seed} replays it)");
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start_with(3, &["--redis-listen", "127.0.0.1:0"]).await;
        wait_for_every_replica(&cluster).await;
        let victim = 2 + Rng(seed ^ 0x6b69_6c6c).below(2);
        let survivor = 5 - victim;
        let what = format!("seed {seed}, node {victim} killed");
        let (done_tx, mut done) = tokio::sync::watch::channel(0);
        let (victim_done, _) = tokio::sync::watch::channel(0);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(pipelined_run(
            cluster.node(1).redis.unwrap(),
            seed,
            "kill:",
            done_tx,
            stop_rx.clone(),
        ));
        // The killed node's own client: its connection ends at the kill,
        // with SETs whose replies never came (each may have been applied).
        let victim_run = tokio::spawn(pipelined_run(
            cluster.node(victim).redis.unwrap(),
            seed.wrapping_add(1),
            "killed:",
            victim_done,
            stop_rx,
        ));
        // Kill mid-run, while batches are in flight.
        let before = done.wait_for(|&n| n >= KILL_AFTER).await.is_ok();
        let mut killed_at = 0;
        if before {
            // The kill lands during batch killed_at + 1 or a later one.
            killed_at = *done.borrow();
            cluster.kill(victim).await;
            // At least KILL_AFTER batches and KILL_RUN_ON, which covers
            // the survivors' failure detection.
            let on = tokio::time::Instant::now() + KILL_RUN_ON;
            let after = *done.borrow();
            let _ = done.wait_for(|&n| n >= after + KILL_AFTER).await;
            tokio::time::sleep_until(on).await;
        }
        stop.send_replace(true);
        // A client that failed ended the run early: its panic is the
        // failure.
        let log = match run.await {
            Ok(log) => log,
            Err(e) => panic!("the client of node 1 failed: {e}\n{}", cluster.logs()),
        };
        let victim_log = match victim_run.await {
            Ok(log) => log,
            Err(e) => panic!(
                "the client of node {victim} failed: {e}\n{}",
                cluster.logs()
            ),
        };
        let ended = log.iter().filter(|(_, r)| r.is_none()).count();
        assert_eq!(ended, 0, "node 1's connection ended ({what})");

        let (mut keys, tally) = replay(&log, &format!("node 1's client ({what})"));
        let (victim_keys, victim_tally) =
            replay(&victim_log, &format!("node {victim}'s client ({what})"));
        let errors: Vec<&R> = log
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .filter(|r| matches!(r, R::Err(_)))
            .take(5)
            .collect();
        println!(
            "{what} after batch {killed_at} of node 1's client; node 1's client: {} commands, \
             {tally:?}, first errors {errors:?}; node {victim}'s client: {} commands, \
             {victim_tally:?}",
            log.len(),
            victim_log.len(),
        );
        assert!(before, "node 1's client ended before the kill");
        assert!(tally.set_ok > 0 && tally.get_value > 0, "nothing succeeded");
        assert!(
            victim_tally.no_reply > 0,
            "the killed node's client got every reply: the kill was not mid-run"
        );
        keys.extend(victim_keys);

        // Every key read back through the survivor that is not node 1.
        let mut c = Conn::open(cluster.node(survivor).redis.unwrap()).await;
        let mut sorted: Vec<_> = keys.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (key, state) in sorted {
            let mut tries = 0;
            let got = loop {
                match c.cmd(&["GET", key]).await {
                    R::NilBulk => break None,
                    R::Bulk(v) => break Some(String::from_utf8(v).unwrap()),
                    R::Err(e) if tries < 20 => {
                        tries += 1;
                        println!("GET {key} after the run: {e}; again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => panic!(
                        "GET {key} after the run: {other:?} ({what})\n{}",
                        cluster.logs()
                    ),
                }
            };
            assert!(
                state.allows(got.as_deref()),
                "GET {key} through node {survivor} after the run: {got:?}; the last \
                 acknowledged SET wrote {:?}, and SETs after it that failed or got no reply \
                 {:?} ({what})",
                state.acked,
                state.maybe
            );
        }
    })
    .await;
}
