//! A cluster of real `ringkv-node` processes on 127.0.0.1, for integration
//! tests.
//!
//! [`Cluster::start`] starts N processes, node ids 1 to N, each with its own
//! data directory under one temporary directory, peer and client ports
//! picked by the OS (port 0), and fast gossip. Node 1 founds the cluster;
//! the others join through it. Each start waits for the process's ready
//! line (with a timeout) and remembers the ports it reports, so that
//! [`Cluster::restart`] brings a node back on the same addresses and its
//! peers' view of it stays valid. Each node's stderr (its logs) is
//! appended to a file kept for the life of the cluster, and the tail of it
//! goes into every failure message.
//!
//! Faults: [`Cluster::kill`] (SIGKILL), [`Cluster::terminate`] (SIGTERM,
//! then wait for the exit), [`Cluster::pause`] and [`Cluster::resume`]
//! (SIGSTOP and SIGCONT).
//!
//! Guarantee: no process outlives the harness. Every child is spawned with
//! `kill_on_drop`, so dropping the [`Cluster`], including while a failing
//! test unwinds, SIGKILLs whatever is still running (a paused node too:
//! SIGKILL needs no SIGCONT).
//!
//! It knows nothing of the client protocol: tests talk to the nodes with
//! `ringkv::client::Client` at [`NodeProcess::client`].

#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary under test: `ringkv-node`, built by this package from the
/// root crate's `src/bin/ringkv-node.rs` (see `tests/Cargo.toml`).
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_ringkv-node-under-test");

/// How many tests' clusters may run at once (see [`cluster_slot`]). Five,
/// with six test threads (`.cargo/config.toml`): the binary took 136 s
/// against 178 s with three slots and four threads, the same hour; what
/// is left is mostly the tests that take [`the_machine_alone`], run one
/// after another.
pub const CLUSTER_SLOTS: u32 = 5;

static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CLUSTER_SLOTS as usize);

/// Held by every test of the `processes` binary that starts `ringkv-node`
/// processes, for as long as they run: one of [`CLUSTER_SLOTS`] slots, so
/// that at most that many tests' clusters share the machine. The tests
/// spend most of their time waiting (for gossip, timeouts and restarts):
/// with three slots, two cores were still three quarters idle. Take it
/// before the test's time limit starts, so that waiting for it does not
/// count against the limit. A permit is released when a test fails too.
pub async fn cluster_slot() -> tokio::sync::SemaphorePermit<'static> {
    SLOTS.acquire().await.expect("the slots are never closed")
}

/// Every slot: for a test whose cluster must have the machine to itself,
/// because it judges failure detectors' verdicts on fast gossip, which
/// another test's cluster stalling the same cores would skew.
pub async fn the_machine_alone() -> tokio::sync::SemaphorePermit<'static> {
    SLOTS
        .acquire_many(CLUSTER_SLOTS)
        .await
        .expect("the slots are never closed")
}

/// The cluster name every test node uses.
pub const CLUSTER_NAME: &str = "node-cluster-test";

/// The cluster secret every test node uses.
pub const SECRET: &str = "ringkv node cluster test secret";

/// How long a node may take to print its ready line. Generous: the test
/// machine may be busy compiling.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERMed node may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Membership gossip interval of test nodes, in milliseconds: ten times
/// faster than the default, so that joins and failure detection take a
/// second or two, not tens of seconds.
pub const GOSSIP_MS: u64 = 100;

/// Virtual nodes per test node: few, so rings are small and gossip cheap;
/// the ring's balance is not what these tests measure.
pub const VNODES: usize = 16;

/// What a ready line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The node id.
    pub node: u64,
    /// The peer address.
    pub peer: SocketAddr,
    /// The client address.
    pub client: SocketAddr,
    /// The RESP address, when the node serves one (`--redis-listen`).
    pub redis: Option<SocketAddr>,
}

/// Parses `ready node=<id> peer=<HOST:PORT> client=<HOST:PORT>`, with
/// ` redis=<HOST:PORT>` after it when the node serves RESP.
pub fn parse_ready(line: &str) -> Option<Ready> {
    let mut words = line.trim_end().split(' ');
    if words.next()? != "ready" {
        return None;
    }
    let node = words.next()?.strip_prefix("node=")?.parse().ok()?;
    let peer = words.next()?.strip_prefix("peer=")?.parse().ok()?;
    let client = words.next()?.strip_prefix("client=")?.parse().ok()?;
    let redis = match words.next() {
        None => None,
        Some(word) => Some(word.strip_prefix("redis=")?.parse().ok()?),
    };
    if words.next().is_some() {
        return None;
    }
    Some(Ready {
        node,
        peer,
        client,
        redis,
    })
}

/// One node of a [`Cluster`].
pub struct NodeProcess {
    /// Its id.
    pub id: u64,
    /// Its data directory.
    pub dir: PathBuf,
    /// Its peer address (the same across restarts).
    pub peer: SocketAddr,
    /// Its client address (the same across restarts).
    pub client: SocketAddr,
    /// Its RESP address, when it serves one (may change on a restart).
    pub redis: Option<SocketAddr>,
    /// Where its stderr goes (appended across restarts).
    pub stderr_path: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Whether the process is running (not killed or terminated by the
    /// harness, and not exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Its resident memory in bytes (`VmRSS` of `/proc/<pid>/status`),
    /// while it runs.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The CPU time it has used so far, user and system (fields 14 and 15
    /// of `/proc/<pid>/stat`), while it runs.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // The command name (field 2) is in parentheses and may hold
        // spaces; the fields after its closing one are plain.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no memory-safety preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
        Some(Duration::from_millis(ticks * 1000 / per_second))
    }

    fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // our own child's, not yet reaped (we hold its `Child`).
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// A cluster of `ringkv-node` processes. Node `i` (1-based) is
/// `nodes[i - 1]`.
pub struct Cluster {
    /// The nodes, by id - 1.
    pub nodes: Vec<NodeProcess>,
    root: tempfile::TempDir,
    secret_file: PathBuf,
    /// The cluster's CA: every node gets a certificate from it, so the
    /// links between the processes are TLS, as in production.
    ca: ringkv::ClusterCa,
    extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n): node 1 founds the cluster, the others
    /// join through it. Returns once every node printed its ready line;
    /// the cluster may still be forming (tests wait for that through the
    /// client protocol).
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// As [`Cluster::start`], with extra flags for every node (a
    /// `--vnodes` among them replaces the default [`VNODES`]).
    pub async fn start_with(n: usize, extra_args: &[&str]) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix("ringkv-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temporary directory: {e}"));
        let secret_file = root.path().join("secret");
        fs::write(&secret_file, format!("{SECRET}\n"))
            .unwrap_or_else(|e| panic!("cannot write the secret: {e}"));
        let ca = ringkv::ClusterCa::generate(CLUSTER_NAME)
            .unwrap_or_else(|e| panic!("cannot make the cluster CA: {e}"));
        fs::write(root.path().join("ca.pem"), ca.cert_pem())
            .unwrap_or_else(|e| panic!("cannot write the CA certificate: {e}"));
        let mut cluster = Cluster {
            nodes: Vec::with_capacity(n),
            root,
            secret_file,
            ca,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for id in 1..=n as u64 {
            let seeds = match cluster.nodes.first() {
                Some(first) => vec![format!("1@{}", first.peer)],
                None => vec![],
            };
            let dir = cluster.root.path().join(format!("node-{id}"));
            let stderr_path = cluster.root.path().join(format!("node-{id}.stderr"));
            let (child, ready) = cluster
                .spawn(id, &dir, &stderr_path, "127.0.0.1:0", "127.0.0.1:0", &seeds)
                .await;
            cluster.nodes.push(NodeProcess {
                id,
                dir,
                peer: ready.peer,
                client: ready.client,
                redis: ready.redis,
                stderr_path,
                child: Some(child),
            });
        }
        cluster
    }

    /// Starts one more node (the next id), joining through node 1; returns
    /// its id once it printed its ready line (it may still be joining).
    pub async fn add(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let seeds = vec![format!("1@{}", self.nodes[0].peer)];
        let dir = self.root.path().join(format!("node-{id}"));
        let stderr_path = self.root.path().join(format!("node-{id}.stderr"));
        let (child, ready) = self
            .spawn(id, &dir, &stderr_path, "127.0.0.1:0", "127.0.0.1:0", &seeds)
            .await;
        self.nodes.push(NodeProcess {
            id,
            dir,
            peer: ready.peer,
            client: ready.client,
            redis: ready.redis,
            stderr_path,
            child: Some(child),
        });
        id
    }

    /// The temporary directory holding every node's files.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The secret file the nodes use.
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &NodeProcess {
        &self.nodes[index(id)]
    }

    /// Every node's client address, node 1 first.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.to_string()).collect()
    }

    /// The last `lines` lines of node `id`'s stderr.
    pub fn stderr_tail(&self, id: u64, lines: usize) -> String {
        tail(&self.node(id).stderr_path, lines)
    }

    /// The last lines of every node's stderr, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- node {} stderr ---\n{}", n.id, tail(&n.stderr_path, 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs node `id` and reaps it.
    pub async fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[index(id)];
        node.signal(libc::SIGCONT);
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
        }
    }

    /// Replaces the extra flags given to the nodes started from now on
    /// ([`Cluster::add`], [`Cluster::restart`]), for a cluster whose nodes
    /// differ.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
    }

    /// SIGTERMs node `id` and waits for it to exit; returns its status.
    /// Panics (with its logs) if it does not exit within [`EXIT_TIMEOUT`].
    pub async fn terminate(&mut self, id: u64) -> ExitStatus {
        self.terminate_within(id, EXIT_TIMEOUT).await
    }

    /// [`Cluster::terminate`], waiting up to `limit` (a node that leaves
    /// the cluster on SIGTERM moves its ranges first).
    pub async fn terminate_within(&mut self, id: u64, limit: Duration) -> ExitStatus {
        let node = &mut self.nodes[index(id)];
        node.signal(libc::SIGCONT);
        node.signal(libc::SIGTERM);
        let Some(mut child) = node.child.take() else {
            panic!("node {id} is not running");
        };
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for node {id}: {e}"),
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "node {id} did not exit within {limit:?} of SIGTERM\n{}",
                    self.stderr_tail(id, 30)
                )
            }
        }
    }

    /// SIGSTOPs node `id`: it holds its sockets but does nothing, as a
    /// frozen or partitioned machine would.
    pub fn pause(&self, id: u64) {
        self.node(id).signal(libc::SIGSTOP);
    }

    /// SIGCONTs node `id`.
    pub fn resume(&self, id: u64) {
        self.node(id).signal(libc::SIGCONT);
    }

    /// Starts node `id` again after a kill or terminate: same id, same data
    /// directory, same peer and client ports; it joins through every other
    /// node. Retries for a few seconds if a port is still held (the OS may
    /// briefly give a just-freed port to someone else).
    pub async fn restart(&mut self, id: u64) {
        let i = index(id);
        if self.nodes[i].is_running() {
            panic!("node {id} is still running");
        }
        self.nodes[i].child = None;
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| format!("{}@{}", n.id, n.peer))
            .collect();
        let (dir, stderr_path, peer, client) = {
            let n = &self.nodes[i];
            (n.dir.clone(), n.stderr_path.clone(), n.peer, n.client)
        };
        let (child, ready) = self
            .spawn(
                id,
                &dir,
                &stderr_path,
                &peer.to_string(),
                &client.to_string(),
                &seeds,
            )
            .await;
        assert_eq!(
            (ready.peer, ready.client),
            (peer, client),
            "node {id} moved"
        );
        self.nodes[i].child = Some(child);
        self.nodes[i].redis = ready.redis;
    }

    /// `--peer-ca`, `--peer-cert` and `--peer-key` for node `id`, writing
    /// its certificate and key the first time.
    pub fn peer_tls_args(&self, id: u64) -> Vec<String> {
        let cert = self.root.path().join(format!("node-{id}.pem"));
        let key = self.root.path().join(format!("node-{id}.key"));
        if !cert.exists() {
            let creds = self
                .ca
                .issue(ringkv::NodeId(id))
                .unwrap_or_else(|e| panic!("cannot issue node {id}'s certificate: {e}"));
            fs::write(&key, creds.key_pem).unwrap_or_else(|e| panic!("writing a key: {e}"));
            fs::write(&cert, creds.cert_pem).unwrap_or_else(|e| panic!("writing a cert: {e}"));
        }
        vec![
            "--peer-ca".into(),
            self.root.path().join("ca.pem").display().to_string(),
            "--peer-cert".into(),
            cert.display().to_string(),
            "--peer-key".into(),
            key.display().to_string(),
        ]
    }

    /// Starts one process and waits for its ready line, retrying a start
    /// that failed on an address in use.
    async fn spawn(
        &self,
        id: u64,
        dir: &Path,
        stderr_path: &Path,
        listen: &str,
        client_listen: &str,
        seeds: &[String],
    ) -> (Child, Ready) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut args = vec![
                "--id".to_string(),
                id.to_string(),
                "--listen".into(),
                listen.into(),
                "--client-listen".into(),
                client_listen.into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--secret-file".into(),
                self.secret_file.display().to_string(),
                "--cluster".into(),
                CLUSTER_NAME.into(),
                "--gossip-interval-ms".into(),
                GOSSIP_MS.to_string(),
            ];
            if !self
                .extra_args
                .iter()
                .any(|a| a == "--insecure-plaintext-peers")
            {
                args.extend(self.peer_tls_args(id));
            }
            // Tests of client authentication give their own users file;
            // the others talk to an open client port.
            if !self.extra_args.iter().any(|a| a == "--users-file") {
                args.push("--no-client-auth".into());
            }
            // A test may give its own `--vnodes` (a flag may appear once).
            if !self.extra_args.iter().any(|a| a == "--vnodes") {
                args.push("--vnodes".into());
                args.push(VNODES.to_string());
            }
            for s in seeds {
                args.push("--seed".into());
                args.push(s.clone());
            }
            args.extend(self.extra_args.iter().cloned());
            match start_process(&args, stderr_path).await {
                Ok(started) => {
                    assert_eq!(started.1.node, id, "ready line of the wrong node");
                    return started;
                }
                Err(why) => {
                    let in_use = why.contains("in use") && why.contains("bind");
                    if !in_use || Instant::now() > deadline {
                        panic!("node {id} did not start: {why}\n{}", tail(stderr_path, 30));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

fn index(id: u64) -> usize {
    assert!(id >= 1, "node ids start at 1");
    (id - 1) as usize
}

/// Starts `ringkv-node` with `args`, stderr appended to `stderr_path`, and
/// waits up to [`READY_TIMEOUT`] for its ready line. On failure the child
/// is killed and the reason (with its exit status, if it exited) returned.
pub async fn start_process(args: &[String], stderr_path: &Path) -> Result<(Child, Ready), String> {
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)
        .map_err(|e| format!("cannot open {}: {e}", stderr_path.display()))?;
    let mut child = Command::new(NODE_BIN)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("RING_TEST_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {NODE_BIN}: {e}"))?;
    let Some(stdout) = child.stdout.take() else {
        return Err("no stdout pipe".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
    match first {
        Ok(Ok(Some(line))) => match parse_ready(&line) {
            Some(ready) => Ok((child, ready)),
            None => Err(format!("not a ready line: {line:?}")),
        },
        Ok(Ok(None)) | Ok(Err(_)) => {
            // stdout closed: the process ended (or is ending) without
            // becoming ready.
            let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await;
            let last = tail(stderr_path, 1);
            Err(format!("exited ({status:?}) before ready: {last}"))
        }
        Err(_) => Err(format!("no ready line within {READY_TIMEOUT:?}")),
    }
}

/// Runs `ringkv-node` with `args` to completion (for refusals), with a
/// timeout; returns its status and stderr.
pub async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(NODE_BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(READY_TIMEOUT, out).await {
        Ok(Ok(out)) => (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("cannot run {NODE_BIN}: {e}"),
        Err(_) => panic!("ringkv-node {args:?} did not exit within {READY_TIMEOUT:?}"),
    }
}

/// The last `lines` lines of a file ("" if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a test's body, failing it if it has not finished within `limit`.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("test did not finish within {limit:?}");
    }
}

/// Polls `check` every 50 ms until it returns true or `limit` passes;
/// returns whether it did.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a file (for tests that write configurations).
pub fn write_file(path: &Path, text: &str) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::Write::write_all(&mut f, text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Runs `ringkv-node users add` at a test's argon2 cost, the password on
/// stdin.
pub async fn users_add(file: &std::path::Path, name: &str, role: &str, password: &str) {
    let mut child = tokio::process::Command::new(NODE_BIN)
        .args(["users", "add", "--file"])
        .arg(file)
        .args([
            "--name",
            name,
            "--role",
            role,
            "--memory-kib",
            "64",
            "--passes",
            "1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("users add ends")
        .unwrap();
    assert!(
        out.status.success(),
        "users add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
