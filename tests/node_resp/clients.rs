//! Part of `tests/node_resp.rs`: real Redis clients against real nodes.
//!
//! - A node SIGKILLed while a client pipelines SETs and GETs through
//!   another: every reply is an error or right, and every acknowledged SET
//!   is read back afterwards. `RINGKV_RESP_KILL_SEED` replays a seed.

use std::collections::HashMap;

use super::*;

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

/// Keys of the killed-node run.
const KILL_KEYS: u64 = 300;
/// Commands per pipelined write.
const KILL_BATCH: usize = 40;
/// Batches before the kill, and at least this many after it.
const KILL_AFTER: usize = 15;

/// How long the run goes on after the kill, at least.
const KILL_RUN_ON: Duration = Duration::from_secs(5);

/// What one key's SETs have left: the last acknowledged value, and the
/// values of the SETs after it that answered an error (each may have been
/// applied).
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

/// The pipelined client of the killed-node run: batches of SETs and GETs
/// through `addr`, each batch written at once and its replies read in
/// order, until `stop` says so. Reports each finished batch on `done`.
async fn pipelined_run(
    addr: SocketAddr,
    seed: u64,
    done: tokio::sync::watch::Sender<usize>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<(Cmd, R)> {
    let mut rng = Rng(seed);
    let mut c = Conn::open(addr).await;
    let mut log = Vec::new();
    let mut seq = 0u64;
    let mut batches = 0;
    while !*stop.borrow() {
        let mut cmds = Vec::with_capacity(KILL_BATCH);
        let mut bytes = Vec::new();
        for _ in 0..KILL_BATCH {
            let key = format!("kill:{}", rng.below(KILL_KEYS));
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
        c.send(&bytes).await;
        for cmd in cmds {
            let reply = c.read().await;
            log.push((cmd, reply));
        }
        batches += 1;
        done.send_replace(batches);
    }
    log
}

/// A node SIGKILLed while a client pipelines SETs and GETs through node 1
/// of three (n = 3, r = w = 2): every reply is an error or right, and
/// every acknowledged SET is read back through a surviving node after the
/// run.
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
    let _one = CLUSTER_LOCK.lock().await;
    cluster::bounded(TEST_LIMIT, async {
        let mut cluster = Cluster::start_with(3, &["--redis-listen", "127.0.0.1:0"]).await;
        wait_for_every_replica(&cluster).await;
        let victim = 2 + seed % 2;
        let survivor = 5 - victim;
        let (done_tx, mut done) = tokio::sync::watch::channel(0);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let run = tokio::spawn(pipelined_run(
            cluster.node(1).redis.unwrap(),
            seed,
            done_tx,
            stop_rx,
        ));
        // Kill mid-run, while a batch is in flight.
        let before = done.wait_for(|&n| n >= KILL_AFTER).await.is_ok();
        let mut killed_at = 0;
        if before {
            cluster.kill(victim).await;
            killed_at = *done.borrow();
            // The run goes on, failing nothing: the batch in flight at the
            // kill and those after it are the ones this test is about.
            // At least KILL_AFTER batches and KILL_RUN_ON, which covers
            // the survivors' failure detection.
            let on = tokio::time::Instant::now() + KILL_RUN_ON;
            let _ = done.wait_for(|&n| n >= killed_at + KILL_AFTER).await;
            tokio::time::sleep_until(on).await;
        }
        stop.send_replace(true);
        // A client that failed (a reply that never came, a closed
        // connection) ended the run early: its panic is the failure.
        let log = match run.await {
            Ok(log) => log,
            Err(e) => panic!("the pipelined client failed: {e}\n{}", cluster.logs()),
        };

        let mut keys: HashMap<String, KeyState> = HashMap::new();
        let (mut set_ok, mut set_err, mut get_ok, mut get_nil, mut get_err) = (0, 0, 0, 0, 0);
        for (i, (cmd, reply)) in log.iter().enumerate() {
            match cmd {
                Cmd::Set { key, value } => {
                    let state = keys.entry(key.clone()).or_default();
                    match reply {
                        r if *r == R::ok() => {
                            set_ok += 1;
                            state.acked = Some(value.clone());
                            state.maybe.clear();
                        }
                        R::Err(_) => {
                            set_err += 1;
                            state.maybe.push(value.clone());
                        }
                        other => panic!("reply {i}, SET {key} {value}: {other:?}"),
                    }
                }
                Cmd::Get { key } => {
                    let state = keys.entry(key.clone()).or_default();
                    let got = match reply {
                        R::Err(_) => {
                            get_err += 1;
                            continue;
                        }
                        R::NilBulk => {
                            get_nil += 1;
                            None
                        }
                        R::Bulk(v) => {
                            get_ok += 1;
                            Some(String::from_utf8(v.clone()).unwrap())
                        }
                        other => panic!("reply {i}, GET {key}: {other:?}"),
                    };
                    assert!(
                        state.allows(got.as_deref()),
                        "reply {i}, GET {key}: {got:?}; the last acknowledged SET wrote {:?}, \
                         and SETs after it that failed {:?} (seed {seed}, node {victim} killed \
                         after batch {killed_at})",
                        state.acked,
                        state.maybe
                    );
                }
            }
        }
        let errors: Vec<&R> = log
            .iter()
            .map(|(_, r)| r)
            .filter(|r| matches!(r, R::Err(_)))
            .take(5)
            .collect();
        println!(
            "{} commands in {} batches, node {victim} killed after batch {killed_at}: SET {set_ok} \
             OK, {set_err} errors; GET {get_ok} values, {get_nil} nil, {get_err} errors; first \
             errors {errors:?}",
            log.len(),
            log.len() / KILL_BATCH,
        );
        assert!(set_ok > 0 && get_ok > 0, "nothing succeeded");

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
                        "GET {key} after the run: {other:?} (seed {seed})\n{}",
                        cluster.logs()
                    ),
                }
            };
            assert!(
                state.allows(got.as_deref()),
                "GET {key} through node {survivor} after the run: {got:?}; the last \
                 acknowledged SET wrote {:?}, and SETs after it that failed {:?} (seed {seed}, \
                 node {victim} killed)",
                state.acked,
                state.maybe
            );
        }
    })
    .await;
}
