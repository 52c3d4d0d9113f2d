//! The bootstrap benchmark: how long a fresh cluster of `ringkv-node`
//! processes, started as the README starts them (default gossip interval
//! and virtual nodes, TLS between the nodes, nothing stored), takes after
//! the last node prints `ready` until every node has the whole ring in
//! force: all members, one epoch, no change in progress (issue [14]: the
//! target is 3 s idle and 5 s at load average 8).
//!
//! Run with `cargo build --release --bin ringkv-node && cargo run --release
//! -p ringkv-bench --bin bootstrap -- [--nodes 3] [--runs 5] [--busy 0]`.
//! `--busy N` spins N threads in this process for the whole run, to load
//! the machine as a busy host would; the load average seen at the end of
//! each run is printed beside its time. `--node-bin` names another
//! `ringkv-node` (an older build, to compare: the peer of this benchmark is
//! the same command on the build before the change).
//!
//! With `--crash`, each run then also SIGKILLs the last node at a random
//! moment once the ring is in force, and reports the time from the kill
//! until every other node shows it DOWN in its status (issue [14]'s
//! detection target with real processes: 5 s at the 99th percentile,
//! with the default 1 s gossip interval).
//!
//! Each run: a temporary directory, a secret and certificates
//! (`ringkv-node certs`), node 1 founding and the others joining through
//! it one after the other, each started once the previous one is ready;
//! then every node's `Ring` is polled every 10 ms.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ringkv::client::{Client, ClientConfig};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
#[command(about = "Time from the last ready to the whole ring in force")]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Runs (each a fresh cluster).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Threads that spin for the whole benchmark, loading the machine.
    #[arg(long, default_value_t = 0)]
    busy: usize,
    /// How long a run may take before it counts as not settled, in seconds.
    #[arg(long, default_value_t = 120)]
    limit_secs: u64,
    /// The `ringkv-node` binary (default: beside this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Once settled, kill the last node and time its detection.
    #[arg(long)]
    crash: bool,
}

/// A run's figures, in seconds.
struct Outcome {
    settled: f64,
    /// From the kill of the last node to DOWN on every other node.
    down: Option<f64>,
}

/// Kills the process when dropped, so that no node outlives a run.
struct Node {
    child: Child,
    client: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_bin(args: &Args) -> Result<PathBuf> {
    let path = match &args.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("this binary has no directory")?
            .join("ringkv-node"),
    };
    if !path.is_file() {
        return Err(format!("no ringkv-node at {}: pass --node-bin", path.display()).into());
    }
    Ok(path)
}

/// Starts node `id` and waits for its ready line; returns it and its peer
/// address.
fn start(bin: &Path, root: &Path, id: u64, seed: Option<&str>) -> Result<(Node, String)> {
    let certs = root.join("certs");
    let mut cmd = Command::new(bin);
    cmd.env("NO_COLOR", "1")
        .arg("--id")
        .arg(id.to_string())
        .args(["--listen", "127.0.0.1:0", "--client-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(root.join(format!("node{id}")))
        .args(["--cluster", "ringkv-bootstrap"])
        .arg("--secret-file")
        .arg(root.join("secret"))
        .arg("--peer-ca")
        .arg(certs.join("ca.pem"))
        .arg("--peer-cert")
        .arg(certs.join(format!("node-{id}.pem")))
        .arg("--peer-key")
        .arg(certs.join(format!("node-{id}.key")))
        .arg("--no-client-auth");
    if let Some(seed) = seed {
        cmd.arg("--seed").arg(format!("1@{seed}"));
    }
    let log = std::fs::File::create(root.join(format!("node{id}.log")))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    let (Some(peer), Some(client)) = (field("peer="), field("client=")) else {
        let _ = child.kill();
        return Err(format!("node {id}: no ready line, got {line:?}").into());
    };
    Ok((Node { child, client }, peer))
}

/// Whether every node has `members` nodes in force, one epoch, nothing
/// pending.
async fn settled(clients: &[Client], members: usize) -> bool {
    let mut epoch = None;
    for c in clients {
        match c.ring().await {
            Ok(r) if r.change.is_none() && r.nodes.len() == members => {
                if epoch.is_some_and(|e| e != r.epoch) {
                    return false;
                }
                epoch = Some(r.epoch);
            }
            _ => return false,
        }
    }
    true
}

/// Whether every client's node shows `victim` DOWN.
async fn all_down(clients: &[Client], victim: u64) -> bool {
    for c in clients {
        match c.status().await {
            Ok(s)
                if s.members
                    .iter()
                    .any(|m| m.node.0 == victim && m.state == "Down") => {}
            _ => return false,
        }
    }
    true
}

/// One fresh cluster: seconds from the last ready to the ring in force
/// (and to a crash seen, with `--crash`), or `None` past the limit.
async fn run(args: &Args, bin: &Path) -> Result<Option<Outcome>> {
    let root = tempfile::Builder::new().prefix("ringkv-boot-").tempdir()?;
    let root = root.path();
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(root.join("secret"), secret)?;
    std::fs::set_permissions(
        root.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let made = Command::new(bin)
        .arg("certs")
        .arg("--dir")
        .arg(root.join("certs"))
        .args(["--cluster", "ringkv-bootstrap"])
        .args((1..=args.nodes).map(|id| id.to_string()))
        .output()?;
    if !made.status.success() {
        return Err(format!(
            "ringkv-node certs failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        )
        .into());
    }
    let (first, seed) = start(bin, root, 1, None)?;
    let mut nodes = vec![first];
    for id in 2..=args.nodes {
        nodes.push(start(bin, root, id, Some(&seed))?.0);
    }
    let last_ready = Instant::now();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(Client::connect(&[n.client.as_str()], ClientConfig::default()).await?);
    }
    let limit = Duration::from_secs(args.limit_secs);
    let mut took = None;
    while last_ready.elapsed() < limit {
        if settled(&clients, args.nodes as usize).await {
            took = Some(last_ready.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(settled) = took else {
        return Ok(None);
    };
    if !args.crash || nodes.len() < 2 {
        return Ok(Some(Outcome {
            settled,
            down: None,
        }));
    }
    // Let the detectors fill their windows, then kill at a random moment
    // within a gossip interval.
    let wait = 3000 + rand::Rng::random_range(&mut rand::rng(), 0..1000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let victim = args.nodes;
    let mut dead = nodes.pop().ok_or("no node")?;
    clients.pop();
    dead.child.kill()?;
    let killed = Instant::now();
    let _ = dead.child.wait();
    let mut down = None;
    while killed.elapsed() < limit {
        if all_down(&clients, victim).await {
            down = Some(killed.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Some(Outcome { settled, down }))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = node_bin(&args)?;
    let stop = Arc::new(AtomicBool::new(false));
    let spinners: Vec<_> = (0..args.busy)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    println!(
        "bootstrap: {} nodes, {} runs, {} busy threads, {}",
        args.nodes,
        args.runs,
        args.busy,
        bin.display()
    );
    let mut times = Vec::new();
    let mut downs = Vec::new();
    for i in 1..=args.runs {
        let took = run(&args, &bin).await?;
        let load = load_average();
        match took {
            Some(Outcome { settled: s, down }) => {
                let crash = match down {
                    Some(d) => {
                        downs.push(d);
                        format!("; the last node, killed, DOWN everywhere {d:.3} s later")
                    }
                    None if args.crash => "; the killed node never DOWN everywhere".into(),
                    None => String::new(),
                };
                println!(
                    "run {i}: ring in force {s:.3} s after the last ready{crash} (load {load})"
                );
                times.push(s);
            }
            None => println!(
                "run {i}: not in force within {} s (load {load})",
                args.limit_secs
            ),
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    times.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        println!(
            "settled {} of {}: min {min:.3} s, median {:.3} s, max {max:.3} s",
            times.len(),
            args.runs,
            times[times.len() / 2]
        );
    }
    downs.sort_by(f64::total_cmp);
    if let (Some(min), Some(max)) = (downs.first(), downs.last()) {
        println!(
            "crash to DOWN everywhere, {} runs: min {min:.3} s, median {:.3} s, max {max:.3} s",
            downs.len(),
            downs[downs.len() / 2]
        );
    }
    Ok(())
}
