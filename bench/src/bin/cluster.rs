//! The cluster benchmark: ringkv clusters of 1, 3 and 5 `ringkv-node`
//! processes on loopback against one `redis-server`, driven by the same
//! load generator in the same run (`docs/benchmarks.md`, "Workloads and
//! peers", "Cluster").
//!
//! Run with `cargo build --release --bin ringkv-node && cargo run --release
//! -p ringkv-bench --bin cluster -- --quick` (a few thousand operations per
//! mix, under a minute) or without `--quick` for the full run; `--help`
//! lists the options. `redis-server` must be on the `PATH` (Debian's
//! `redis-server` package); the benchmark starts and stops its own.
//!
//! Workload: 16-byte keys (`%016d` of the key number) and 100-byte values
//! (50 random bytes, then 50 equal ones); 50 concurrent clients, each a
//! tokio task with its own TCP connection, issuing one operation at a time
//! (a closed loop: latency is the time from sending a request to reading
//! its reply, under 50 requests in flight). A system is measured in phases
//! on the same connections:
//!
//! - `load`: every key of the key space written once (`--keys`, 100,000 by
//!   default), the keys split between the clients;
//! - one phase per mix (`--mixes`, 50/50 and 95/5 reads/writes by
//!   default): each operation picks a key uniformly at random and is a read
//!   with the mix's probability, else a write of a fresh value. A read must
//!   find a 100-byte value (every key was loaded); one that does not is
//!   counted as a miss. The phase runs for `--warmup` seconds unrecorded,
//!   then `--seconds` recorded (an operation counts when it starts and ends
//!   inside the recorded span), or, with `--ops`, for that many operations
//!   in all, every one recorded.
//!
//! Every operation's latency goes into an HDR histogram (microseconds, 3
//! significant digits); each phase reports throughput (recorded operations
//! over the recorded span), p50/p99/p99.9, errors and misses. The ratio
//! ringkv/redis is taken per mix against the redis figure of the same run.
//! Peak RSS is `VmHWM` of `/proc/PID/status` of every node and of
//! `redis-server`, read after the last phase. Server CPU per operation is
//! the user and system time (`/proc/PID/stat`) of all the system's server
//! processes over the recorded span, over the operations recorded: on a
//! shared machine it moves less with other load than throughput does (it
//! still grows with cache and scheduler contention); its resolution is one
//! clock tick (10 ms) per process and span, coarse in `--quick` runs.
//!
//! The open loop (`--rate`, `--half-max`): a closed loop measures latency
//! at saturation only, so a mix can instead offer a fixed rate. Operation
//! `n` of the mix is due `n / rate` seconds after it starts
//! (`ringkv_bench::open_loop::Schedule`); a pacer thread releases one
//! permit per operation as it falls due, the first free client takes it
//! (so at most `--clients` are in flight, and a due operation with no free
//! client waits), and the latency recorded runs from the due time to the
//! reply: waiting counts, so a stall is not hidden by the generator
//! slowing down with it (coordinated omission). An operation sent 1 ms or
//! more after its due time is counted late; the time from sending to the
//! reply (service time) and from due time to sending (send lag) are kept
//! beside it. Timed mixes record the operations due in the recorded span,
//! however late they finish, and give up on any not yet sent 1 s after the
//! span ends (counted as unsent: the offered rate was not sustained, and
//! p99 is then a lower bound). `--rate` runs every mix that way;
//! `--half-max` runs each ringkv system's mixes closed first, then each
//! mix open at half the ops/s the closed loop reached, on that system and
//! then on redis (kept running from its own turn) at the same rate, so the
//! two p99s are of the same offered load.
//!
//! Pinning (`--server-cpus`, `--loadgen-cpus`): every server process
//! (redis-server, each ringkv-node) is restricted to a CPU list by
//! `sched_setaffinity` in the child before exec (what `taskset -c` does;
//! `ringkv_bench::cpu_list`), and the tables give the list the kernel
//! reports for them (`Cpus_allowed_list`), so one run per list shows what
//! another core gives.
//!
//! The systems:
//!
//! - redis: one `redis-server --appendonly yes --appendfsync everysec
//!   --save ""` on a free port with its directory under the temp dir, spoken
//!   to in RESP2 with GET and SET by a small client in this file (why not
//!   the `redis` crate: see [`RespConn`]).
//! - ringkv-N: N `ringkv-node` processes (the binary beside this one, or
//!   `--node-bin`), each with its own data directory, `--sync interval
//!   --sync-interval-ms 1000` (the WAL is written to the OS on every write
//!   and fsync'd once a second, as redis's everysec does), founded by node
//!   1 and joined through it.
//!   The benchmark bucket has N=3, R=2, W=2 and last-writer-wins (redis's
//!   semantics for SET; the default `Siblings` policy would keep every
//!   blind write of a key as a sibling); with one node it has N=1, R=1, W=1,
//!   the only quorum one node can give. Client `i` talks to node
//!   `i mod N`, through `ringkv::client::Client` with that one address.
//! - ringkv-N+tls: the same cluster with TLS on every node's client port
//!   (`--client-tls-cert`, `--client-tls-key`; a certificate naming
//!   127.0.0.1 made once per run by `ringkv-node certs --client-port`, with
//!   its own CA), and clients with `ClientConfig::tls` trusting that CA.
//!   Connections, handshakes included, are opened before any clock
//!   starts. When `ringkv-N` is in the same run, a second table gives the
//!   ratios TLS/plain per phase, with the load generator's CPU per
//!   operation beside the servers' (it does the client side of TLS). redis
//!   is always plain TCP.
//!
//! Every process the benchmark starts is stopped when it ends, however it
//! ends: SIGTERM (then SIGKILL after a grace period) from a drop guard,
//! which runs on success, on error, on a panic and on Ctrl-C or SIGTERM
//! (both end the run), and `PR_SET_PDEATHSIG` makes the kernel kill them
//! should the benchmark itself be killed.
//!
//! On the machine's two cores the load generator, the nodes and redis
//! share the CPUs; `--threads` sets the load generator's worker threads.
//!
//! A second driver, `--driver redis-benchmark` (or `both`, which runs the
//! load generator first): redis-tools' `redis-benchmark` against
//! redis-server and against node 1's RESP port (`--redis-listen`,
//! `docs/resp.md`), each system started afresh for it. The RESP port's
//! buckets of database 0 are set as the benchmark bucket is (n, r, w):
//! `db0` last-writer-wins (redis's SET), `db0.counters` a PN-counter
//! (INCR), `db0.sets` an OR-set (SADD). Each test (`--rb-tests`, of set,
//! get, incr, sadd) with each pipeline depth (`--rb-pipelines`, 1 and 16)
//! is one `redis-benchmark -c <clients> -n <rb-requests> -d 100 -r
//! <rb-keyspace> -P <p> -t <test> --csv` process (SADD: `-n
//! <rb-sadd-requests>`, 2,000 by default: it grows one set); its CSV gives req/s and
//! (redis-benchmark 7) p50/p99, and the servers' CPU time is sampled
//! around the process, as is the process's own (this process's `cutime`
//! and `cstime` once it is waited for). Anything it prints besides its CSV
//! (`Error from server: ...`), or a non-zero exit, fails the test. After
//! the tests, the first 1,000 keys of the key space are read back with
//! GET, to check that the SETs were stored (about the share uniform keys
//! predict). The parsing is `ringkv_bench::redis_benchmark`.

use std::error::Error;
use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv::client::{Client, ClientConfig};
use ringkv::crdt::CrdtKind;
use ringkv::net::client_tls::ClientTls;
use ringkv::protocol::BucketInfo;
use ringkv::replication::Consistency;
use ringkv::version::ConflictPolicy;
use ringkv_bench::cpu_list::{self, CpuList};
use ringkv_bench::open_loop::{self, Schedule, Timing};
use ringkv_bench::redis_benchmark;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader,
};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// The bucket the benchmark writes to.
const BUCKET: &[u8] = b"bench";
/// Defaults of the full run.
const FULL_KEYS: u64 = 100_000;
const FULL_SECONDS: f64 = 20.0;
const FULL_WARMUP: f64 = 3.0;
/// `--quick`: a small key space and a few thousand operations per mix.
const QUICK_KEYS: u64 = 2_000;
const QUICK_OPS: u64 = 5_000;
/// redis-benchmark's defaults: requests per test (`-n`), with `--quick`,
/// and the key space of its random keys (`-r`).
const RB_REQUESTS: u64 = 100_000;
const RB_QUICK_REQUESTS: u64 = 5_000;
/// `-n` of the SADD test (see `--rb-sadd-requests`), and with `--quick`.
const RB_SADD_REQUESTS: u64 = 2_000;
const RB_QUICK_SADD_REQUESTS: u64 = 500;
const RB_KEYSPACE: u64 = 50_000;
/// Keys read back after redis-benchmark's SETs, to check they are stored.
const RB_PROBE_KEYS: u64 = 1_000;
/// One operation that takes longer than this is an error, and ends its
/// client's phase (the connection's state is unknown after it).
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// A client stops its phase after this many errors, so that a system that
/// refuses everything fails fast instead of spinning.
const MAX_ERRORS_PER_CLIENT: u64 = 100;
/// How long a process may take to print its ready line or answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cluster may take to agree on its members and ring.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The latency histogram's range, in microseconds.
const HIST_MAX_US: u64 = 60_000_000;
/// How long after a timed open-loop mix's recorded span the generator
/// still sends operations that fell due in it; later ones are given up
/// (unsent), so that a rate far above what the system serves ends the mix.
const OPEN_DRAIN: Duration = Duration::from_secs(1);
/// The pacer's longest sleep, so that it notices a phase that ended early.
const PACER_MAX_SLEEP: Duration = Duration::from_millis(10);

/// ringkv clusters of 1, 3 and 5 nodes against one redis-server
/// (appendonly, everysec), under the same load generator.
#[derive(Parser, Debug)]
#[command(name = "cluster")]
struct Args {
    /// Systems to measure, comma-separated, in this order: `redis`,
    /// `ringkv-N` for a cluster of N nodes (1 to 9), and `ringkv-N+tls`
    /// for the same with TLS on the nodes' client ports (redis is always
    /// plain TCP). The ratios are against `redis`, which must be among
    /// them for ratios to be shown; `ringkv-N+tls` is also compared with
    /// `ringkv-N` when both are measured.
    #[arg(long, value_delimiter = ',', default_values_t = ["redis", "ringkv-1", "ringkv-3", "ringkv-5"].map(String::from))]
    systems: Vec<String>,
    /// Read percentages of the mixes, comma-separated: 50 is 50/50
    /// reads/writes, 95 is 95/5.
    #[arg(long, value_delimiter = ',', default_values_t = [50u8, 95], value_parser = clap::value_parser!(u8).range(0..=100))]
    mixes: Vec<u8>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    clients: u64,
    /// Keys in the key space, all loaded before the mixes (default 100,000;
    /// 2,000 with `--quick`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keys: Option<u64>,
    /// Recorded seconds per mix (default 20).
    #[arg(long)]
    seconds: Option<f64>,
    /// Unrecorded seconds before each mix's recorded span (default 3).
    #[arg(long)]
    warmup: Option<f64>,
    /// Operations per mix instead of a timed run, every one recorded
    /// (5,000 with `--quick`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    ops: Option<u64>,
    /// A check that everything works: 2,000 keys and 5,000 operations per
    /// mix (explicit options still override).
    #[arg(long)]
    quick: bool,
    /// The `ringkv-node` binary (default: beside this binary).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// The `redis-server` binary.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Where data directories and logs go (default: the system's temp
    /// dir); a fresh subdirectory, removed at the end unless `--keep`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data directories and logs.
    #[arg(long)]
    keep: bool,
    /// The nodes' storage engine.
    #[arg(long, default_value = "lsm")]
    engine: String,
    /// The nodes' WAL fsync interval (`--sync interval
    /// --sync-interval-ms`): 1000 matches redis's `appendfsync everysec`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sync_interval_ms: u64,
    /// The nodes' gossip interval (default: the node's own).
    #[arg(long)]
    gossip_interval_ms: Option<u64>,
    /// The nodes' data shards (`ringkv-node --data-shards`; default: the
    /// node's own, one per two CPUs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    data_shards: Option<u64>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// Seed of the key and value choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What drives the systems: `loadgen` (this benchmark's load
    /// generator), `redis-benchmark` (redis-tools' program, against redis
    /// and node 1's RESP port), or `both` (each on a fresh start of every
    /// system). `ringkv-N+tls` systems are measured by the load generator
    /// only (the RESP port is plain TCP).
    #[arg(long, value_enum, default_value_t = Driver::Loadgen)]
    driver: Driver,
    /// The `redis-benchmark` binary.
    #[arg(long, default_value = "redis-benchmark")]
    rb_bin: PathBuf,
    /// redis-benchmark tests (`-t`), comma-separated, run in this order,
    /// each by its own redis-benchmark process: some of set, get, incr,
    /// sadd.
    #[arg(long, value_delimiter = ',', default_values_t = ["set", "get", "incr", "sadd"].map(String::from))]
    rb_tests: Vec<String>,
    /// Requests per redis-benchmark test (`-n`; default 100,000, 5,000
    /// with `--quick`), except SADD.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rb_requests: Option<u64>,
    /// Requests of the SADD test (default 2,000, 500 with `--quick`).
    /// redis-benchmark's SADD adds random members to one key, `myset`, so
    /// the set grows through the test, and on ringkv every SADD reads and
    /// writes the whole set (a CRDT value): its cost grows with the set.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    rb_sadd_requests: Option<u64>,
    /// Pipeline depths (`-P`), comma-separated: every test runs once with
    /// each.
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 16], value_parser = clap::value_parser!(u64).range(1..=1000))]
    rb_pipelines: Vec<u64>,
    /// The key space of redis-benchmark's random keys (`-r`).
    #[arg(long, default_value_t = RB_KEYSPACE, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rb_keyspace: u64,
    /// Seconds one redis-benchmark test may take before it is stopped and
    /// the run fails.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    rb_timeout: u64,
    /// Run every mix as an open loop offering this many operations per
    /// second (over all clients) instead of a closed loop: operation n is
    /// due n/RATE s after the mix starts, the first free client sends it
    /// (at most --clients in flight), and its latency runs from its due
    /// time, so waiting for a client counts. Late (sent 1 ms or more after
    /// due) and unsent operations are counted. The load phase stays
    /// closed. Load generator only.
    #[arg(long, value_name = "OPS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..=open_loop::MAX_RATE))]
    rate: Option<u64>,
    /// Latency at half load: after each ringkv system's closed-loop mixes
    /// (its maximum throughput at --clients), run each mix again as an
    /// open loop offering half the ops/s that mix reached, first on that
    /// system, then on redis at the same rate; a table gives p50, p99,
    /// p99.9 and p99 / redis's p99. redis must be the first of --systems
    /// (it stays up, idle, through the ringkv systems). Load generator
    /// only.
    #[arg(long, conflicts_with = "rate")]
    half_max: bool,
    /// Pin every server process (redis-server and each ringkv-node) to
    /// these CPUs, in taskset -c syntax (0, 0-1, 0,2-3), by
    /// sched_setaffinity in the child before exec; the tables give the
    /// CPUs the kernel then allows them. Default: the CPUs the benchmark
    /// started on.
    #[arg(long, value_name = "CPU_LIST")]
    server_cpus: Option<String>,
    /// Pin the load generator (this process, hence its clients, the open
    /// loop's pacer and redis-benchmark) to these CPUs, same syntax; the
    /// servers keep the CPUs the benchmark started on unless
    /// --server-cpus says otherwise.
    #[arg(long, value_name = "CPU_LIST")]
    loadgen_cpus: Option<String>,
}

/// What drives the systems.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    /// The load generator of this file.
    Loadgen,
    /// `redis-benchmark`.
    RedisBenchmark,
    /// Both, one after the other on each system.
    Both,
}

impl Driver {
    fn loadgen(self) -> bool {
        matches!(self, Driver::Loadgen | Driver::Both)
    }

    fn redis_benchmark(self) -> bool {
        matches!(self, Driver::RedisBenchmark | Driver::Both)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("cluster bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the runtime starts, so that its threads (and redis-benchmark)
    // inherit the CPUs; the servers are given theirs as they start.
    if let Some(cpus) = &plan.loadgen_cpus {
        if let Err(e) = cpus.pin_this_thread() {
            eprintln!("cluster bench: cannot pin the load generator to CPUs {cpus}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `block_on` runs `run` on this (the main) thread, so the children are
    // spawned from a thread that lives until the process exits, which is
    // what `PR_SET_PDEATHSIG` watches.
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&args, &plan) => r,
            r = interrupted() => r,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("cluster bench: some operations failed or missed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cluster bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, as an error: the run's future is dropped,
/// and with it the guards that stop the processes.
async fn interrupted() -> Result<bool> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Err("interrupted; stopping every process started".into())
}

// ---------------------------------------------------------------------------
// The plan.

/// How long a mix runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Length {
    /// Unrecorded warm-up, then a recorded span.
    Timed { warmup: Duration, measure: Duration },
    /// This many operations in all, every one recorded.
    Ops(u64),
}

/// How the load generator's mixes offer load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Offered {
    /// Each client sends its next operation when the last is answered.
    Closed,
    /// An open loop at this many operations per second (`--rate`).
    Rate(u64),
    /// Closed, then open at half of what each ringkv system's closed loop
    /// reached, on it and on redis (`--half-max`).
    HalfMax,
}

/// What the arguments ask for, with defaults filled in.
#[derive(Clone, Debug)]
struct Plan {
    systems: Vec<SystemSpec>,
    mixes: Vec<u8>,
    clients: u64,
    keys: u64,
    length: Length,
    seed: u64,
    /// Whether the load generator runs.
    loadgen: bool,
    /// What redis-benchmark runs, when it does.
    rb: Option<RbPlan>,
    offered: Offered,
    /// `--server-cpus`.
    server_cpus: Option<CpuList>,
    /// `--loadgen-cpus`.
    loadgen_cpus: Option<CpuList>,
    /// The CPUs the benchmark could run on when it started.
    started_on: CpuList,
}

impl Plan {
    /// The CPUs to give each server process as it starts: `--server-cpus`,
    /// or, when the load generator is pinned (and the servers would
    /// inherit its CPUs), the ones the benchmark started on; `None`: the
    /// benchmark's own, inherited.
    fn server_mask(&self) -> Option<&CpuList> {
        self.server_cpus
            .as_ref()
            .or(self.loadgen_cpus.as_ref().map(|_| &self.started_on))
    }
}

/// The redis-benchmark runs of every system: each test with each pipeline
/// depth, `--clients` connections, values of [`VALUE_BYTES`].
#[derive(Clone, Debug, PartialEq)]
struct RbPlan {
    tests: Vec<String>,
    pipelines: Vec<u64>,
    /// `-n` of every test but SADD.
    requests: u64,
    /// `-n` of SADD.
    sadd_requests: u64,
    keyspace: u64,
    timeout: Duration,
}

impl RbPlan {
    /// `-n` of `test`.
    fn requests_of(&self, test: &str) -> u64 {
        if test == "sadd" {
            self.sadd_requests
        } else {
            self.requests
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SystemSpec {
    Redis,
    /// A cluster of `nodes`; with `tls`, every node's client port speaks
    /// TLS and the load generator's clients connect with it.
    Ringkv {
        nodes: usize,
        tls: bool,
    },
}

/// The suffix of a system name whose client ports speak TLS.
const TLS_SUFFIX: &str = "+tls";

impl SystemSpec {
    fn parse(s: &str) -> Result<SystemSpec> {
        if s == "redis" {
            return Ok(SystemSpec::Redis);
        }
        if s == format!("redis{TLS_SUFFIX}") {
            return Err("redis is measured over plain TCP only: no redis+tls".into());
        }
        let (base, tls) = match s.strip_suffix(TLS_SUFFIX) {
            Some(base) => (base, true),
            None => (s, false),
        };
        let nodes: usize = base
            .strip_prefix("ringkv-")
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=9).contains(n))
            .ok_or_else(|| {
                format!(
                    "unknown system {s:?}: expected redis, ringkv-N or ringkv-N{TLS_SUFFIX}, \
                     N in 1..=9"
                )
            })?;
        Ok(SystemSpec::Ringkv { nodes, tls })
    }

    fn name(&self) -> String {
        match self {
            SystemSpec::Redis => "redis".into(),
            SystemSpec::Ringkv { nodes, tls: false } => format!("ringkv-{nodes}"),
            SystemSpec::Ringkv { nodes, tls: true } => format!("ringkv-{nodes}{TLS_SUFFIX}"),
        }
    }

    fn tls(&self) -> bool {
        matches!(self, SystemSpec::Ringkv { tls: true, .. })
    }

    /// For a TLS system, the same system over plain TCP.
    fn plain(&self) -> Option<SystemSpec> {
        match *self {
            SystemSpec::Ringkv { nodes, tls: true } => {
                Some(SystemSpec::Ringkv { nodes, tls: false })
            }
            _ => None,
        }
    }
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("--{what} must be 0 to 86400 seconds, got {s}").into());
    }
    Ok(Duration::from_secs_f64(s))
}

fn plan(args: &Args) -> Result<Plan> {
    let systems = args
        .systems
        .iter()
        .map(|s| SystemSpec::parse(s))
        .collect::<Result<Vec<_>>>()?;
    if systems.is_empty() || args.mixes.is_empty() {
        return Err("nothing to measure: --systems and --mixes must not be empty".into());
    }
    for (i, system) in systems.iter().enumerate() {
        if systems[..i].contains(system) {
            return Err(format!("--systems names {} twice", system.name()).into());
        }
    }
    if args.driver == Driver::RedisBenchmark {
        if let Some(tls) = systems.iter().find(|s| s.tls()) {
            return Err(format!(
                "{}: the RESP port is plain TCP, so redis-benchmark cannot measure TLS; \
                 use --driver loadgen or both",
                tls.name()
            )
            .into());
        }
    }
    let rb = if args.driver.redis_benchmark() {
        redis_benchmark::check_tests(&args.rb_tests)?;
        if args.rb_pipelines.is_empty() {
            return Err("--rb-pipelines must not be empty".into());
        }
        Some(RbPlan {
            tests: args.rb_tests.clone(),
            pipelines: args.rb_pipelines.clone(),
            requests: args.rb_requests.unwrap_or(if args.quick {
                RB_QUICK_REQUESTS
            } else {
                RB_REQUESTS
            }),
            sadd_requests: args.rb_sadd_requests.unwrap_or(if args.quick {
                RB_QUICK_SADD_REQUESTS
            } else {
                RB_SADD_REQUESTS
            }),
            keyspace: args.rb_keyspace,
            timeout: Duration::from_secs(args.rb_timeout),
        })
    } else {
        None
    };
    let ops = args.ops.or(args.quick.then_some(QUICK_OPS));
    let length = match ops {
        Some(n) if args.seconds.is_none() => Length::Ops(n),
        Some(_) => return Err("--ops and --seconds exclude each other".into()),
        None => {
            let measure = seconds("seconds", args.seconds.unwrap_or(FULL_SECONDS))?;
            if measure.is_zero() {
                return Err("--seconds must be above 0".into());
            }
            Length::Timed {
                warmup: seconds("warmup", args.warmup.unwrap_or(FULL_WARMUP))?,
                measure,
            }
        }
    };
    let offered = match (args.rate, args.half_max) {
        (Some(_), true) => return Err("--rate and --half-max exclude each other".into()),
        (Some(rate), false) => Offered::Rate(rate),
        (None, true) => Offered::HalfMax,
        (None, false) => Offered::Closed,
    };
    if offered != Offered::Closed && !args.driver.loadgen() {
        return Err(
            "--rate and --half-max are modes of the load generator; use --driver loadgen or both"
                .into(),
        );
    }
    if offered == Offered::HalfMax {
        if systems.first() != Some(&SystemSpec::Redis) {
            return Err(
                "--half-max runs redis at each ringkv system's half rate, so redis \
                        must be the first of --systems"
                    .into(),
            );
        }
        if systems.len() < 2 {
            return Err("--half-max needs a ringkv system after redis in --systems".into());
        }
    }
    let started_on = CpuList::of_this_thread()
        .map_err(|e| format!("cannot read this process's CPUs (sched_getaffinity): {e}"))?;
    let cpus = |flag: &str, list: &Option<String>| -> Result<Option<CpuList>> {
        let Some(list) = list else {
            return Ok(None);
        };
        let cpus = CpuList::parse(list).map_err(|e| format!("--{flag}: {e}"))?;
        cpus.check_within(&started_on)
            .map_err(|e| format!("--{flag}: {e}"))?;
        Ok(Some(cpus))
    };
    let server_cpus = cpus("server-cpus", &args.server_cpus)?;
    let loadgen_cpus = cpus("loadgen-cpus", &args.loadgen_cpus)?;
    Ok(Plan {
        offered,
        server_cpus,
        loadgen_cpus,
        started_on,
        systems,
        mixes: args.mixes.clone(),
        clients: args.clients,
        keys: args
            .keys
            .unwrap_or(if args.quick { QUICK_KEYS } else { FULL_KEYS }),
        length,
        seed: args.seed,
        loadgen: args.driver.loadgen(),
        rb,
    })
}

// ---------------------------------------------------------------------------
// The workload.

/// Key number `i`, as 16 ASCII digits.
fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    let digits = format!("{i:016}");
    let digits = digits.as_bytes();
    // Numbers beyond 16 digits keep their last 16 (never reached: --keys is
    // at most 10^8).
    key.copy_from_slice(&digits[digits.len() - KEY_BYTES..]);
    key
}

/// A fresh value: 50 random bytes, then 50 copies of one byte.
fn fill_value(rng: &mut ChaCha8Rng, value: &mut [u8; VALUE_BYTES]) {
    rng.fill_bytes(&mut value[..VALUE_BYTES / 2]);
    value[VALUE_BYTES / 2..].fill(b'v');
}

// ---------------------------------------------------------------------------
// The load generator, generic over a connection to the system measured.

/// Why an operation failed.
#[derive(Debug)]
enum OpError {
    /// The system answered with an error; the connection is still usable.
    Refused(String),
    /// The connection failed (I/O, protocol, timeout): the client stops.
    Broken(String),
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Refused(m) => write!(f, "refused: {m}"),
            OpError::Broken(m) => write!(f, "connection failed: {m}"),
        }
    }
}

/// One client's connection to the system measured: GET and SET of the
/// benchmark's keys, one request at a time.
trait KvConn: Send + 'static {
    /// Reads `key`: the value's length, or `None` when it is absent.
    fn get(
        &mut self,
        key: &[u8],
    ) -> impl Future<Output = std::result::Result<Option<usize>, OpError>> + Send;
    /// Writes `value` under `key`; returns once the system acknowledged it.
    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> impl Future<Output = std::result::Result<(), OpError>> + Send;
}

/// What a phase does.
#[derive(Clone, Copy, Debug)]
enum PhaseKind {
    /// Writes every key once.
    Load,
    /// Random keys, reads with probability `read_pct`%.
    Mix { read_pct: u8 },
}

impl PhaseKind {
    fn name(&self) -> String {
        match self {
            PhaseKind::Load => "load".into(),
            PhaseKind::Mix { read_pct } => format!("{read_pct}/{}", 100 - read_pct),
        }
    }
}

/// What one phase measured.
#[derive(Debug)]
struct PhaseResult {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    errors: u64,
    misses: u64,
    broken: bool,
    first_error: Option<String>,
    /// CPU time (user + system) of the system's server processes over the
    /// recorded span; `None` when there are none to watch.
    cpu_secs: Option<f64>,
    /// CPU time (user + system) of the load generator (this process, every
    /// thread) over the same span.
    client_cpu_secs: f64,
    /// For an open-loop mix, what only it measures; `hist` then holds the
    /// latencies from each operation's due time.
    open: Option<OpenStats>,
}

/// What an open-loop mix measures besides latency from the due time.
#[derive(Debug)]
struct OpenStats {
    /// The offered rate, operations per second.
    rate: u64,
    /// Operations due in the recorded span (every one of an op-counted
    /// mix): recorded, failed or unsent.
    due: u64,
    /// From sending to the reply, of the operations in `hist`.
    service: Histogram<u64>,
    /// From the due time to sending.
    lag: Histogram<u64>,
    /// Operations sent [`open_loop::LATE`] or more after their due time.
    late: u64,
    /// Operations due in the recorded span and never sent (given up
    /// [`OPEN_DRAIN`] after it).
    unsent: u64,
}

impl OpenStats {
    fn new(rate: u64, due: u64) -> Result<OpenStats> {
        Ok(OpenStats {
            rate,
            due,
            service: new_histogram()?,
            lag: new_histogram()?,
            late: 0,
            unsent: 0,
        })
    }

    /// Adds one client's figures (`due` is the phase's, not summed).
    fn add(&mut self, other: &OpenStats) -> Result<()> {
        self.service.add(&other.service)?;
        self.lag.add(&other.lag)?;
        self.late += other.late;
        self.unsent += other.unsent;
        Ok(())
    }
}

impl PhaseResult {
    /// Server CPU microseconds per recorded operation.
    fn cpu_us_per_op(&self) -> Option<f64> {
        match self.cpu_secs {
            Some(cpu) if self.ops > 0 => Some(cpu * 1e6 / self.ops as f64),
            _ => None,
        }
    }

    /// Load generator CPU microseconds per recorded operation.
    fn client_cpu_us_per_op(&self) -> Option<f64> {
        (self.ops > 0).then(|| self.client_cpu_secs * 1e6 / self.ops as f64)
    }

    fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The `q`-quantile latency in microseconds (0 with no samples).
    fn latency_us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }
}

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HIST_MAX_US, 3)?)
}

/// One client's share of a phase.
struct ClientRun {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    misses: u64,
    broken: bool,
    first_error: Option<String>,
    open: Option<OpenStats>,
}

/// Microseconds for a histogram: at least 1, at most [`HIST_MAX_US`].
fn hist_us(d: Duration) -> u64 {
    (d.as_micros().min(u128::from(HIST_MAX_US)) as u64).max(1)
}

/// Runs one operation under [`OP_TIMEOUT`]; `Ok(false)` is a read that
/// found no 100-byte value.
async fn one_op<C: KvConn>(
    conn: &mut C,
    read: bool,
    key: &[u8],
    value: &[u8],
) -> std::result::Result<bool, OpError> {
    let op = async {
        if read {
            Ok(conn.get(key).await? == Some(VALUE_BYTES))
        } else {
            conn.set(key, value).await.map(|()| true)
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(r) => r,
        Err(_) => Err(OpError::Broken(format!("no answer within {OP_TIMEOUT:?}"))),
    }
}

/// Shared by the clients of one phase.
struct PhaseShared {
    kind: PhaseKind,
    clients: u64,
    keys: u64,
    length: Length,
    seed: u64,
    /// Operations handed out so far (`Length::Ops`).
    issued: AtomicU64,
    /// When recording starts and the phase ends (`Length::Timed`).
    record_from: Instant,
    end: Instant,
    /// The timetable of an open-loop mix.
    open: Option<OpenShared>,
}

/// The timetable of an open-loop mix, as its clients share it.
struct OpenShared {
    schedule: Schedule,
    /// When operation 0 is due.
    start: Instant,
    /// Operations `0..first_recorded` are the warm-up's.
    first_recorded: u64,
    /// Operations `0..total` are due in the mix.
    total: u64,
    /// The next operation to send.
    next: AtomicU64,
    /// One permit per operation as it falls due, then one per client to
    /// stop them; released by [`pace`].
    permits: Arc<Semaphore>,
    /// An operation taken after this is given up (unsent); `None` in an
    /// op-counted mix, which sends every one.
    give_up: Option<Instant>,
}

/// Releases one permit per operation of `schedule` as it falls due, up to
/// `total`, then `stop` more (one per client, each of which then takes an
/// operation number past the end and stops); returns early when `permits`
/// is closed (the phase ended). Runs on a thread of its own, which sleeps
/// until the next due time: tokio's timers tick in milliseconds, coarser
/// than the gaps between operations at the rates measured.
fn pace(start: Instant, schedule: Schedule, total: u64, permits: Arc<Semaphore>, stop: usize) {
    // A sleeping thread wakes up as late as its timer slack (50 us by
    // default) after its deadline; ask for the deadline itself.
    // SAFETY: prctl with PR_SET_TIMERSLACK only sets this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut released = 0u64;
    while released < total {
        if permits.is_closed() {
            return;
        }
        let now = Instant::now();
        let due = schedule
            .due_by(now.saturating_duration_since(start))
            .min(total);
        if due > released {
            permits.add_permits((due - released) as usize);
            released = due;
        } else {
            let next = start + schedule.offset(released);
            std::thread::sleep(next.saturating_duration_since(now).min(PACER_MAX_SLEEP));
        }
    }
    permits.add_permits(stop);
}

/// Closes the permits when dropped, so that the pacer stops however the
/// phase ends.
struct ClosePermits(Arc<Semaphore>);

impl Drop for ClosePermits {
    fn drop(&mut self) {
        self.0.close();
    }
}

async fn client_phase<C: KvConn>(
    mut conn: C,
    index: u64,
    shared: Arc<PhaseShared>,
) -> Result<(C, ClientRun)> {
    let mut run = ClientRun {
        hist: new_histogram()?,
        ops: 0,
        errors: 0,
        misses: 0,
        broken: false,
        first_error: None,
        open: match &shared.open {
            Some(open) => Some(OpenStats::new(open.schedule.rate(), 0)?),
            None => None,
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(shared.seed ^ (index << 32) ^ 0x5eed);
    let mut value = [0u8; VALUE_BYTES];
    let mut next_load_key = index;
    loop {
        // An open-loop operation's due time, and whether it is recorded.
        let mut due = None;
        let (read, k) = match shared.kind {
            PhaseKind::Load => {
                if next_load_key >= shared.keys {
                    break;
                }
                let k = next_load_key;
                next_load_key += shared.clients;
                (false, k)
            }
            PhaseKind::Mix { read_pct } => {
                match (&shared.open, shared.length) {
                    (Some(open), _) => {
                        match open.permits.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => break,
                        }
                        let n = open.next.fetch_add(1, Ordering::Relaxed);
                        if n >= open.total {
                            break;
                        }
                        let recorded = n >= open.first_recorded;
                        if open.give_up.is_some_and(|t| Instant::now() >= t) {
                            if let (true, Some(stats)) = (recorded, run.open.as_mut()) {
                                stats.unsent += 1;
                            }
                            continue;
                        }
                        due = Some((open.start + open.schedule.offset(n), recorded));
                    }
                    (None, Length::Ops(n)) => {
                        if shared.issued.fetch_add(1, Ordering::Relaxed) >= n {
                            break;
                        }
                    }
                    (None, Length::Timed { .. }) => {
                        if Instant::now() >= shared.end {
                            break;
                        }
                    }
                }
                (
                    rng.random_range(0..100u8) < read_pct,
                    rng.random_range(0..shared.keys),
                )
            }
        };
        if !read {
            fill_value(&mut rng, &mut value);
        }
        let started = Instant::now();
        let outcome = one_op(&mut conn, read, &key(k), &value).await;
        let finished = Instant::now();
        let recorded = match (due, shared.kind, shared.length) {
            // Every operation due in the recorded span, however late it
            // ends.
            (Some((_, recorded)), _, _) => recorded,
            (None, PhaseKind::Mix { .. }, Length::Timed { .. }) => {
                started >= shared.record_from && finished <= shared.end
            }
            _ => true,
        };
        match outcome {
            Ok(found) => {
                if recorded {
                    match (due, run.open.as_mut()) {
                        (Some((at, _)), Some(stats)) => {
                            let t = Timing::of(at, started, finished);
                            run.hist.saturating_record(hist_us(t.latency));
                            stats.service.saturating_record(hist_us(t.service));
                            stats.lag.saturating_record(hist_us(t.lag));
                            stats.late += u64::from(t.late);
                        }
                        _ => run
                            .hist
                            .saturating_record(hist_us(finished.duration_since(started))),
                    }
                    run.ops += 1;
                    if !found {
                        run.misses += 1;
                    }
                }
            }
            Err(e) => {
                run.errors += 1;
                let broken = matches!(e, OpError::Broken(_));
                if run.first_error.is_none() {
                    run.first_error = Some(e.to_string());
                }
                if broken || run.errors >= MAX_ERRORS_PER_CLIENT {
                    run.broken = broken;
                    break;
                }
            }
        }
    }
    Ok((conn, run))
}

/// Runs one phase on every connection at once, a mix as an open loop at
/// `rate` operations per second when given; returns the connections for
/// the next phase.
async fn run_phase<C: KvConn>(
    conns: Vec<C>,
    kind: PhaseKind,
    plan: &Plan,
    phase_no: u64,
    servers: &[u32],
    rate: Option<u64>,
) -> Result<(Vec<C>, PhaseResult)> {
    let start = Instant::now();
    let (timed, record_from, end) = match (kind, plan.length) {
        (PhaseKind::Mix { .. }, Length::Timed { warmup, measure }) => {
            (true, start + warmup, start + warmup + measure)
        }
        // Unused: the load and op-counted phases record every operation.
        _ => (false, start, start),
    };
    let open = match (kind, rate) {
        (PhaseKind::Mix { .. }, Some(rate)) => {
            let schedule = Schedule::new(rate)
                .ok_or_else(|| format!("no open loop at {rate} operations per second"))?;
            let (first_recorded, total, give_up) = match plan.length {
                Length::Timed { warmup, measure } => (
                    schedule.due_before(warmup),
                    schedule.due_before(warmup + measure),
                    Some(end + OPEN_DRAIN),
                ),
                Length::Ops(n) => (0, n, None),
            };
            Some(OpenShared {
                schedule,
                start,
                first_recorded,
                total,
                next: AtomicU64::new(0),
                permits: Arc::new(Semaphore::new(0)),
                give_up,
            })
        }
        _ => None,
    };
    let _close = open.as_ref().map(|open| ClosePermits(open.permits.clone()));
    if let Some(open) = &open {
        let (schedule, total, permits) = (open.schedule, open.total, open.permits.clone());
        let stop = conns.len();
        std::thread::Builder::new()
            .name("open-loop-pacer".into())
            .spawn(move || pace(start, schedule, total, permits, stop))?;
    }
    let open_stats = match &open {
        Some(open) => Some(OpenStats::new(
            open.schedule.rate(),
            open.total - open.first_recorded,
        )?),
        None => None,
    };
    // The servers' CPU time over the recorded span, and the load
    // generator's (this process's): sampled at its start and end by a task
    // of its own when the phase is timed, else around the whole phase.
    let servers = servers.to_vec();
    let cpu_start = if timed {
        None
    } else {
        Some(cpu_sample(&servers)?)
    };
    let sampler = timed.then(|| {
        let servers = servers.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(record_from.into()).await;
            let before = cpu_sample(&servers)?;
            tokio::time::sleep_until(end.into()).await;
            cpu_since(&servers, before)
        })
    });
    let shared = Arc::new(PhaseShared {
        kind,
        clients: conns.len() as u64,
        keys: plan.keys,
        length: plan.length,
        seed: plan
            .seed
            .wrapping_add(phase_no.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        issued: AtomicU64::new(0),
        record_from,
        end,
        open,
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(client_phase(conn, i as u64, shared.clone())))
        .collect();
    let mut conns = Vec::with_capacity(tasks.len());
    let mut result = PhaseResult {
        ops: 0,
        secs: 0.0,
        hist: new_histogram()?,
        errors: 0,
        misses: 0,
        broken: false,
        first_error: None,
        cpu_secs: None,
        client_cpu_secs: 0.0,
        open: open_stats,
    };
    for task in tasks {
        let (conn, run) = task.await??;
        conns.push(conn);
        result.hist.add(&run.hist)?;
        if let (Some(total), Some(one)) = (result.open.as_mut(), run.open.as_ref()) {
            total.add(one)?;
        }
        result.ops += run.ops;
        result.errors += run.errors;
        result.misses += run.misses;
        result.broken |= run.broken;
        if result.first_error.is_none() {
            result.first_error = run.first_error;
        }
    }
    let (ticks, own_ticks) = match (sampler, cpu_start) {
        (Some(sampler), _) => sampler.await??,
        (None, Some(before)) => cpu_since(&servers, before)?,
        (None, None) => (0, 0),
    };
    if !servers.is_empty() {
        result.cpu_secs = Some(ticks as f64 / clock_ticks_per_sec());
    }
    result.client_cpu_secs = own_ticks as f64 / clock_ticks_per_sec();
    result.secs = match (kind, plan.length) {
        (PhaseKind::Mix { .. }, Length::Timed { measure, .. }) => measure.as_secs_f64(),
        _ => start.elapsed().as_secs_f64(),
    };
    Ok((conns, result))
}

/// The progress line of one phase.
fn phase_line(system: &str, phase: &str, result: &PhaseResult) -> String {
    let mut line = format!(
        "  {system} {phase}: {} ops in {:.1} s, {} ops/s; p50 {} p99 {} p99.9 {} us; \
         server CPU {} us/op; errors {} misses {}",
        result.ops,
        result.secs,
        thousands(result.ops_per_sec() as u64),
        result.latency_us(0.5),
        result.latency_us(0.99),
        result.latency_us(0.999),
        result
            .cpu_us_per_op()
            .map_or("-".into(), |c| format!("{c:.0}")),
        result.errors,
        result.misses,
    );
    if let Some(open) = &result.open {
        let _ = write!(
            line,
            "\n    open loop at {} ops/s: latency from the due time; service p99 {} us, \
             send lag p99 {} us; {} late, {} unsent of {} due",
            thousands(open.rate),
            open.service.value_at_quantile(0.99),
            open.lag.value_at_quantile(0.99),
            open.late,
            open.unsent,
            open.due,
        );
    }
    if let Some(e) = &result.first_error {
        let _ = write!(line, "\n    first error: {e}");
    }
    line
}

/// Loads the key space, then runs every mix (as an open loop under
/// `--rate`); prints a line per phase and returns the connections.
async fn measure<C: KvConn>(
    system: &str,
    conns: Vec<C>,
    plan: &Plan,
    servers: &[u32],
) -> Result<(Vec<C>, Vec<(String, PhaseResult)>)> {
    let mut phases = vec![PhaseKind::Load];
    phases.extend(
        plan.mixes
            .iter()
            .map(|&read_pct| PhaseKind::Mix { read_pct }),
    );
    let rate = match plan.offered {
        Offered::Rate(rate) => Some(rate),
        Offered::Closed | Offered::HalfMax => None,
    };
    let mut conns = conns;
    let mut out = Vec::new();
    for (no, kind) in phases.into_iter().enumerate() {
        let (back, result) = run_phase(conns, kind, plan, no as u64, servers, rate).await?;
        conns = back;
        println!("{}", phase_line(system, &kind.name(), &result));
        let broken = result.broken;
        out.push((kind.name(), result));
        stop_if_broken(system, &kind.name(), broken)?;
    }
    Ok((conns, out))
}

/// One open-loop mix run beside the closed loop (`--half-max`).
#[derive(Debug)]
struct OpenRun {
    /// Whose maximum the rate is half of, e.g. `ringkv-1 max/2`.
    basis: String,
    read_pct: u8,
    phase: String,
    result: PhaseResult,
}

/// The offered rate of each mix's open loop under `--half-max`: half the
/// ops/s its closed loop reached (`phases`, as [`measure`] returns them).
fn half_max_rates(
    system: &str,
    mixes: &[u8],
    phases: &[(String, PhaseResult)],
) -> Result<Vec<(u8, u64)>> {
    mixes
        .iter()
        .map(|&read_pct| {
            let name = PhaseKind::Mix { read_pct }.name();
            let (_, closed) = phases
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| format!("{system}: no closed-loop {name} to take half of"))?;
            let rate = open_loop::half_rate(closed.ops_per_sec()).ok_or_else(|| {
                format!(
                    "{system} {name}: the closed loop reached {:.1} ops/s, \
                     no rate to offer at half of it",
                    closed.ops_per_sec()
                )
            })?;
            Ok((read_pct, rate))
        })
        .collect()
}

/// An error that stops measuring `system` when a connection failed during
/// `phase` (its results so far are kept).
fn stop_if_broken(system: &str, phase: &str, broken: bool) -> Result<()> {
    if broken {
        return Err(
            format!("{system}: a connection failed during {phase}; stopping this system").into(),
        );
    }
    Ok(())
}

/// The label of the open-loop runs at half of `system`'s maximum.
fn half_max_basis(system: &str) -> String {
    format!("{system} max/2")
}

/// Runs each mix of `rates` as an open loop at its rate, in order, on
/// `conns` (their key space already loaded); returns the connections.
async fn measure_open<C: KvConn>(
    system: &str,
    conns: Vec<C>,
    plan: &Plan,
    servers: &[u32],
    basis: &str,
    rates: &[(u8, u64)],
) -> Result<(Vec<C>, Vec<OpenRun>)> {
    let mut conns = conns;
    let mut out = Vec::new();
    for (no, &(read_pct, rate)) in rates.iter().enumerate() {
        let kind = PhaseKind::Mix { read_pct };
        // Seeds of their own, apart from the closed loop's phases.
        let phase_no = 1_000 + no as u64;
        let (back, result) = run_phase(conns, kind, plan, phase_no, servers, Some(rate)).await?;
        conns = back;
        println!(
            "{}",
            phase_line(system, &format!("{} at {basis}", kind.name()), &result)
        );
        let broken = result.broken;
        out.push(OpenRun {
            basis: basis.into(),
            read_pct,
            phase: kind.name(),
            result,
        });
        stop_if_broken(system, &format!("{} at {basis}", kind.name()), broken)?;
    }
    Ok((conns, out))
}

// ---------------------------------------------------------------------------
// Child processes.

/// A process the benchmark started; stopped when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stderr into `log`; stdout is
    /// piped when `pipe_stdout`, else into `log` too; on `cpus` when given.
    fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        pipe_stdout: bool,
        cpus: Option<&CpuList>,
    ) -> Result<Proc> {
        let log_file = File::create(log)?;
        cmd.stdin(Stdio::null()).stderr(log_file.try_clone()?);
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(log_file);
        }
        Proc::start(name, cmd, log, cpus)
    }

    /// Spawns `cmd` with stdin closed, stdout into `out` and stderr into
    /// `log`.
    fn spawn_split(name: &str, cmd: &mut Command, out: &Path, log: &Path) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(File::create(out)?)
            .stderr(File::create(log)?);
        Proc::start(name, cmd, log, None)
    }

    /// Spawns `cmd`, its standard streams already set, tied to this
    /// process's lifetime, and pinned to `cpus` when given (else on this
    /// thread's CPUs).
    fn start(name: &str, cmd: &mut Command, log: &Path, cpus: Option<&CpuList>) -> Result<Proc> {
        if let Some(cpus) = cpus {
            let set = cpus.to_cpu_set();
            // SAFETY: sched_setaffinity is one system call on a set
            // copied into the closure; no allocation or lock between fork
            // and exec. Its failure fails the spawn.
            unsafe {
                cmd.pre_exec(move || cpu_list::pin_to(&set));
            }
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; this closure runs in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // The child gets SIGKILL when the thread that spawned it
                // (the benchmark's main thread) exits, even by SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc {
            name: name.into(),
            child,
            log: log.into(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CPUs the kernel allows the process (`Cpus_allowed_list`).
    fn cpus_allowed(&self) -> Result<String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        Ok(cpu_list::status_cpus_allowed(&status)
            .ok_or_else(|| format!("{}: no Cpus_allowed_list in /proc status", self.name))?
            .to_string())
    }

    /// `VmHWM` of the process, in bytes.
    fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        Ok(status_field_kib(&status, "VmHWM:")
            .ok_or_else(|| format!("{}: no VmHWM in /proc status", self.name))?
            * 1024)
    }

    /// An error with the end of the log if the process has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(format!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                log_tail(&self.log)
            )
            .into()),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; returns
    /// whether it exited by itself with status 0.
    fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        if let Ok(pid) = i32::try_from(self.pid()) {
            // SAFETY: kill has no memory effects; the pid is our own child,
            // not yet reaped, so it cannot name another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        eprintln!(
            "{} did not stop within {grace:?} of SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// The number of a `/proc/PID/status` line such as `VmHWM:  1234 kB`.
fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU clock ticks of the processes `servers` and of this process, now.
fn cpu_sample(servers: &[u32]) -> Result<(u64, u64)> {
    Ok((cpu_ticks(servers)?, cpu_ticks(&[std::process::id()])?))
}

/// CPU clock ticks of the processes `servers` and of this process since
/// `before` (a [`cpu_sample`]).
fn cpu_since(servers: &[u32], before: (u64, u64)) -> Result<(u64, u64)> {
    let (servers_now, own_now) = cpu_sample(servers)?;
    Ok((
        servers_now.saturating_sub(before.0),
        own_now.saturating_sub(before.1),
    ))
}

/// User plus system CPU time of the processes `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        total += stat_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    }
    Ok(total)
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces, so the
/// fields are counted from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `fields[0]` is field 3 (the state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1 (for redis, which
/// cannot be told to pick one and report it).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// redis: the server and a minimal RESP2 client.

/// One connection to redis speaking RESP2, GET and SET only.
///
/// Hand-written rather than the `redis` crate: the benchmark needs two
/// commands on one connection per client, one request at a time, exactly
/// like the ringkv side. The crate's `ConnectionManager` multiplexes one
/// connection and reconnects behind the caller's back, which would change
/// what is measured, and its generic value conversions add work the ringkv
/// client does not do; this client does one `write` per request and parses
/// only the reply types GET and SET return, with no copy of a GET's value
/// beyond the read buffer. It is a fair peer: no cheaper client for redis
/// is possible short of pipelining, which the ringkv side does not do
/// either.
struct RespConn {
    stream: TokioBufReader<TcpStream>,
    request: Vec<u8>,
    scratch: Vec<u8>,
}

/// A RESP2 reply, as far as GET, SET and PING need.
#[derive(Debug, PartialEq, Eq)]
enum RespReply {
    /// `+OK`, `+PONG`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` and n bytes (their length only is kept), or `$-1`: absent.
    Bulk(Option<usize>),
}

/// Appends a RESP2 command (an array of bulk strings) to `out`.
fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The longest reply line accepted (redis's error messages are short).
const RESP_MAX_LINE: usize = 64 * 1024;
/// The largest bulk string accepted (the benchmark's values are 100 bytes).
const RESP_MAX_BULK: usize = 1 << 20;

/// Reads one reply; `scratch` is reused for the line and a bulk's bytes.
async fn read_reply<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<RespReply> {
    scratch.clear();
    let n = (&mut *reader)
        .take(RESP_MAX_LINE as u64)
        .read_until(b'\n', scratch)
        .await?;
    if n == 0 {
        return Err("redis closed the connection".into());
    }
    let line = scratch
        .strip_suffix(b"\r\n")
        .ok_or("a RESP line without CRLF (or too long)")?;
    let (&kind, rest) = line.split_first().ok_or("an empty RESP line")?;
    let text = std::str::from_utf8(rest).map_err(|_| "a RESP line that is not UTF-8")?;
    match kind {
        b'+' => Ok(RespReply::Simple(text.into())),
        b'-' => Ok(RespReply::Error(text.into())),
        b':' => Ok(RespReply::Integer(
            text.parse()
                .map_err(|_| format!("a bad RESP integer {text:?}"))?,
        )),
        b'$' => {
            let len: i64 = text
                .parse()
                .map_err(|_| format!("a bad RESP bulk length {text:?}"))?;
            if len < 0 {
                return Ok(RespReply::Bulk(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= RESP_MAX_BULK)
                .ok_or("a RESP bulk string too long")?;
            scratch.resize(len + 2, 0);
            reader.read_exact(scratch).await?;
            if !scratch.ends_with(b"\r\n") {
                return Err("a RESP bulk string without CRLF".into());
            }
            Ok(RespReply::Bulk(Some(len)))
        }
        other => Err(format!("an unexpected RESP reply type {:?}", other as char).into()),
    }
}

impl RespConn {
    async fn connect(addr: &str) -> Result<RespConn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespConn {
            stream: TokioBufReader::new(stream),
            request: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
        })
    }

    async fn command(&mut self, args: &[&[u8]]) -> std::result::Result<RespReply, OpError> {
        self.request.clear();
        encode_command(&mut self.request, args);
        self.stream
            .get_mut()
            .write_all(&self.request)
            .await
            .map_err(|e| OpError::Broken(e.to_string()))?;
        match read_reply(&mut self.stream, &mut self.scratch).await {
            Ok(RespReply::Error(e)) => Err(OpError::Refused(e)),
            Ok(reply) => Ok(reply),
            Err(e) => Err(OpError::Broken(e.to_string())),
        }
    }
}

impl KvConn for RespConn {
    async fn get(&mut self, key: &[u8]) -> std::result::Result<Option<usize>, OpError> {
        match self.command(&[b"GET", key]).await? {
            RespReply::Bulk(len) => Ok(len),
            other => Err(OpError::Broken(format!("GET answered {other:?}"))),
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), OpError> {
        match self.command(&[b"SET", key, value]).await? {
            RespReply::Simple(s) if s == "OK" => Ok(()),
            other => Err(OpError::Broken(format!("SET answered {other:?}"))),
        }
    }
}

/// A running `redis-server`.
struct Redis {
    proc: Proc,
    addr: String,
}

impl Redis {
    /// Starts redis-server, on `cpus` when given, and waits until it
    /// answers PING.
    async fn start(bin: &Path, dir: &Path, cpus: Option<&CpuList>) -> Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?.to_string();
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ])
        .arg("--dir")
        .arg(dir);
        let mut proc = Proc::spawn(
            "redis-server",
            &mut cmd,
            &dir.join("redis.log"),
            false,
            cpus,
        )?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            proc.check_running()?;
            if let Ok(mut conn) = RespConn::connect(&addr).await {
                if let Ok(RespReply::Simple(s)) = conn.command(&[b"PING"]).await {
                    if s == "PONG" {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING on {addr} within {START_TIMEOUT:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Redis { proc, addr })
    }
}

// ---------------------------------------------------------------------------
// Reporting.

/// What one system measured.
struct SystemReport {
    spec: SystemSpec,
    name: String,
    /// The CPUs its server processes were allowed, as the kernel says.
    server_cpus: String,
    phases: Vec<(String, PhaseResult)>,
    /// Open-loop runs at half a maximum (`--half-max`).
    open: Vec<OpenRun>,
    /// (process name, peak RSS in bytes).
    rss: Vec<(String, u64)>,
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The machine-readable lines and the Markdown tables.
fn report(plan: &Plan, reports: &[SystemReport]) -> String {
    let mut out = String::new();
    for r in reports {
        for (phase, p) in &r.phases {
            let _ = writeln!(
                out,
                "RESULT\t{}\t{phase}\t{}\t{:.3}\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.3}\t{}",
                r.name,
                p.ops,
                p.secs,
                p.ops_per_sec(),
                p.latency_us(0.5),
                p.latency_us(0.99),
                p.latency_us(0.999),
                p.errors,
                p.misses,
                p.cpu_secs.unwrap_or(f64::NAN),
                p.client_cpu_secs,
                r.server_cpus,
            );
        }
        for (basis, phase, p) in open_rows(r) {
            let Some(o) = &p.open else { continue };
            let _ = writeln!(
                out,
                "OPEN\t{}\t{basis}\t{phase}\t{}\t{}\t{:.3}\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{}",
                r.name,
                o.rate,
                p.ops,
                p.secs,
                p.ops_per_sec(),
                p.latency_us(0.5),
                p.latency_us(0.99),
                p.latency_us(0.999),
                o.service.value_at_quantile(0.99),
                o.lag.value_at_quantile(0.99),
                o.late,
                o.unsent,
                p.errors,
                p.misses,
                p.cpu_secs.unwrap_or(f64::NAN),
                r.server_cpus,
            );
        }
        for (process, bytes) in &r.rss {
            let _ = writeln!(out, "RSS\t{}\t{process}\t{bytes}", r.name);
        }
    }
    let redis = reports.iter().find(|r| r.name == "redis");
    let length = match plan.length {
        Length::Timed { warmup, measure } => format!(
            "{:.0} s per mix after {:.0} s of warm-up",
            measure.as_secs_f64(),
            warmup.as_secs_f64()
        ),
        Length::Ops(n) => format!("{n} operations per mix"),
    };
    let _ = writeln!(
        out,
        "\n{} clients, {} keys of {KEY_BYTES} B, values of {VALUE_BYTES} B, {length}; latency in ms",
        plan.clients, plan.keys
    );
    let _ = writeln!(
        out,
        "server CPUs: {}; load generator CPUs: {} (the benchmark started on {})",
        plan.server_cpus
            .as_ref()
            .map_or("not pinned".into(), |c| format!("--server-cpus {c}")),
        plan.loadgen_cpus
            .as_ref()
            .map_or("not pinned".into(), |c| format!("--loadgen-cpus {c}")),
        plan.started_on,
    );
    if let Offered::Rate(rate) = plan.offered {
        let _ = writeln!(
            out,
            "mixes: open loop offering {} ops/s (--rate); latency from each operation's due time",
            thousands(rate)
        );
    }
    if reports.iter().any(|r| r.spec.tls()) {
        let _ = writeln!(
            out,
            "ringkv-N{TLS_SUFFIX}: TLS 1.3 on the nodes' client ports (certificate for 127.0.0.1, \
             no resumption); ringkv-N and redis: plain TCP (redis is never TLS here)"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| system | server CPUs | phase | ops/s | p50 | p99 | p99.9 | ops/s / redis | p99 / redis | server CPU us/op | CPU/op / redis | errors | misses |");
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in reports {
        for (phase, p) in &r.phases {
            let peer = redis
                .filter(|x| x.name != r.name)
                .and_then(|x| x.phases.iter().find(|(n, _)| n == phase))
                .map(|(_, q)| q);
            let (tput_ratio, p99_ratio, cpu_ratio) = match peer {
                Some(q) => (
                    ratio(p.ops_per_sec(), q.ops_per_sec()),
                    ratio(p.latency_us(0.99) as f64, q.latency_us(0.99) as f64),
                    match (p.cpu_us_per_op(), q.cpu_us_per_op()) {
                        (Some(a), Some(b)) => ratio(a, b),
                        _ => "-".into(),
                    },
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let cpu = p.cpu_us_per_op().map_or("-".into(), |c| format!("{c:.0}"));
            let _ = writeln!(
                out,
                "| {} | {} | {phase} | {} | {} | {} | {} | {tput_ratio} | {p99_ratio} | {cpu} | {cpu_ratio} | {} | {} |",
                r.name,
                r.server_cpus,
                thousands(p.ops_per_sec() as u64),
                ms(p.latency_us(0.5)),
                ms(p.latency_us(0.99)),
                ms(p.latency_us(0.999)),
                p.errors,
                p.misses,
            );
        }
    }
    tls_table(&mut out, reports);
    open_table(&mut out, reports);
    let _ = writeln!(out, "\n| system | process | peak RSS (MiB) |");
    let _ = writeln!(out, "|---|---|---:|");
    for r in reports {
        for (process, bytes) in &r.rss {
            let _ = writeln!(
                out,
                "| {} | {process} | {:.1} |",
                r.name,
                *bytes as f64 / (1 << 20) as f64
            );
        }
    }
    out
}

/// A system's open-loop mixes as (offered load, phase, result): its mixes
/// under `--rate`, and its runs at half a maximum.
fn open_rows(r: &SystemReport) -> Vec<(String, &str, &PhaseResult)> {
    let mut rows: Vec<(String, &str, &PhaseResult)> = r
        .phases
        .iter()
        .filter(|(_, p)| p.open.is_some())
        .map(|(phase, p)| ("--rate".to_string(), phase.as_str(), p))
        .collect();
    rows.extend(
        r.open
            .iter()
            .map(|run| (run.basis.clone(), run.phase.as_str(), &run.result)),
    );
    rows
}

/// The open-loop mixes, grouped by offered load, each with its p99 over
/// redis's at the same offered load and mix (nothing when none ran).
fn open_table(out: &mut String, reports: &[SystemReport]) {
    let mut bases: Vec<String> = Vec::new();
    for r in reports {
        for (basis, _, _) in open_rows(r) {
            if !bases.contains(&basis) {
                bases.push(basis);
            }
        }
    }
    if bases.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nOpen loop: operations offered on a fixed schedule; latency (ms) from each operation's \
         due time, so waiting for a free connection counts; service = from sending; send lag = \
         from due time to sending; late = sent {} ms or more after due; unsent = due in the \
         recorded span but not sent within {} s of its end (then p99 is a lower bound, >=)\n",
        open_loop::LATE.as_millis(),
        OPEN_DRAIN.as_secs(),
    );
    let _ = writeln!(
        out,
        "| offered load | system | server CPUs | phase | offered ops/s | achieved ops/s | p50 | p99 | p99.9 | p99 / redis | service p99 | send lag p99 | late | unsent | errors | misses | server CPU us/op |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let redis = reports.iter().find(|r| r.spec == SystemSpec::Redis);
    for basis in &bases {
        for r in reports {
            for (b, phase, p) in open_rows(r) {
                let Some(o) = &p.open else { continue };
                if b != *basis {
                    continue;
                }
                let peer = redis
                    .filter(|x| x.name != r.name)
                    .and_then(|x| {
                        open_rows(x)
                            .into_iter()
                            .find(|(xb, xp, _)| xb == basis && *xp == phase)
                    })
                    .map(|(_, _, q)| q);
                let lower_bound = |p: &PhaseResult| {
                    if p.open.as_ref().is_some_and(|o| o.unsent > 0) {
                        ">="
                    } else {
                        ""
                    }
                };
                let p99_ratio = match peer {
                    Some(q) => format!(
                        "{}{}",
                        if q.open.as_ref().is_some_and(|o| o.unsent > 0) {
                            "?"
                        } else {
                            lower_bound(p)
                        },
                        ratio(p.latency_us(0.99) as f64, q.latency_us(0.99) as f64)
                    ),
                    None => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "| {basis} | {} | {} | {phase} | {} | {} | {} | {}{} | {}{} | {p99_ratio} | {} | {} | {} | {} | {} | {} | {} |",
                    r.name,
                    r.server_cpus,
                    thousands(o.rate),
                    thousands(p.ops_per_sec() as u64),
                    ms(p.latency_us(0.5)),
                    lower_bound(p),
                    ms(p.latency_us(0.99)),
                    lower_bound(p),
                    ms(p.latency_us(0.999)),
                    ms(o.service.value_at_quantile(0.99)),
                    ms(o.lag.value_at_quantile(0.99)),
                    o.late,
                    o.unsent,
                    p.errors,
                    p.misses,
                    p.cpu_us_per_op().map_or("-".into(), |c| format!("{c:.0}")),
                );
            }
        }
    }
}

/// `a / b` with two decimals, or `-` when it has no meaning.
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The cost of TLS on the client port: every `ringkv-N+tls` against the
/// `ringkv-N` of the same run, phase by phase (nothing when no pair was
/// measured). Client CPU is the load generator's, which does the client
/// side of every handshake and record.
fn tls_table(out: &mut String, reports: &[SystemReport]) {
    let pairs: Vec<(&SystemReport, &SystemReport)> = reports
        .iter()
        .filter_map(|tls| {
            let plain = tls.spec.plain()?;
            reports
                .iter()
                .find(|r| r.spec == plain)
                .map(|plain| (plain, tls))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nClient-port TLS against plain TCP, same run (latency in ms, CPU in us per operation)\n"
    );
    let _ = writeln!(
        out,
        "| system | phase | plain ops/s | TLS ops/s | ops/s TLS/plain | plain p50 | TLS p50 | plain p99 | TLS p99 | p99 TLS/plain | server CPU plain | server CPU TLS | server CPU TLS/plain | client CPU plain | client CPU TLS | client CPU TLS/plain |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let us = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}"));
    let us_ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".into(),
    };
    for (plain, tls) in pairs {
        for (phase, t) in &tls.phases {
            let Some((_, p)) = plain.phases.iter().find(|(n, _)| n == phase) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {phase} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                tls.name,
                thousands(p.ops_per_sec() as u64),
                thousands(t.ops_per_sec() as u64),
                ratio(t.ops_per_sec(), p.ops_per_sec()),
                ms(p.latency_us(0.5)),
                ms(t.latency_us(0.5)),
                ms(p.latency_us(0.99)),
                ms(t.latency_us(0.99)),
                ratio(t.latency_us(0.99) as f64, p.latency_us(0.99) as f64),
                us(p.cpu_us_per_op()),
                us(t.cpu_us_per_op()),
                us_ratio(t.cpu_us_per_op(), p.cpu_us_per_op()),
                us(p.client_cpu_us_per_op()),
                us(t.client_cpu_us_per_op()),
                us_ratio(t.client_cpu_us_per_op(), p.client_cpu_us_per_op()),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The run.

async fn run(args: &Args, plan: &Plan) -> Result<bool> {
    let root = match &args.dir {
        Some(d) => tempfile::Builder::new()
            .prefix("ringkv-cluster-bench-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("ringkv-cluster-bench-")
            .tempdir()?,
    };
    let root_path = root.path().to_path_buf();
    if args.keep {
        // Leaked on purpose: the directory outlives the run.
        let _ = root.keep();
    }
    eprintln!("cluster bench: data and logs under {}", root_path.display());
    // One client port certificate for every TLS cluster of the run.
    let client_port = if plan.systems.iter().any(SystemSpec::tls) {
        Some(ClientPortCerts::make(
            &node_bin(args)?,
            &root_path.join("client-tls"),
        )?)
    } else {
        None
    };
    let rb_version = match plan.rb {
        Some(_) => Some(rb_version(&args.rb_bin)?),
        None => None,
    };
    let mut reports: Vec<SystemReport> = Vec::new();
    let mut rb_reports = Vec::new();
    // Under --half-max, redis (the first system) stays up, with the index
    // of its report, to run at each ringkv system's half rates.
    let mut live_redis: Option<(LiveRedis, usize)> = None;
    for system in &plan.systems {
        let name = system.name();
        if plan.loadgen {
            println!("{name}:");
            match *system {
                SystemSpec::Redis => {
                    let (mut report, live) =
                        bench_redis(args, plan, &root_path.join("redis")).await?;
                    if plan.offered == Offered::HalfMax {
                        live_redis = Some((live, reports.len()));
                    } else {
                        finish_redis(&mut report, live)?;
                    }
                    reports.push(report);
                }
                SystemSpec::Ringkv { nodes, tls } => {
                    let tls = if tls { client_port.as_ref() } else { None };
                    let report =
                        bench_ringkv(args, plan, *system, nodes, tls, &root_path.join(&name))
                            .await?;
                    if let Some((live, at)) = live_redis.as_mut() {
                        // The ringkv system is stopped: redis runs alone
                        // at the rates it was offered.
                        let rates: Vec<(u8, u64)> = report
                            .open
                            .iter()
                            .filter_map(|run| Some((run.read_pct, run.result.open.as_ref()?.rate)))
                            .collect();
                        println!("redis at {}:", half_max_basis(&name));
                        let conns = std::mem::take(&mut live.conns);
                        let (conns, runs) = measure_open(
                            "redis",
                            conns,
                            plan,
                            &[live.redis.proc.pid()],
                            &half_max_basis(&name),
                            &rates,
                        )
                        .await?;
                        live.conns = conns;
                        reports[*at].open.extend(runs);
                    }
                    reports.push(report);
                }
            }
        }
        if let Some(rb) = &plan.rb {
            let dir = root_path.join(format!("{name}-redis-benchmark"));
            match *system {
                SystemSpec::Ringkv { tls: true, .. } => {
                    println!("{name}: not driven by redis-benchmark (the RESP port is plain TCP)");
                }
                SystemSpec::Redis => {
                    println!("{name} (redis-benchmark):");
                    rb_reports.push(bench_rb_redis(args, plan, rb, &dir).await?);
                }
                SystemSpec::Ringkv { nodes, tls: false } => {
                    println!("{name} (redis-benchmark):");
                    rb_reports.push(bench_rb_ringkv(args, plan, rb, *system, nodes, &dir).await?);
                }
            }
        }
    }
    if let Some((live, at)) = live_redis.take() {
        finish_redis(&mut reports[at], live)?;
    }
    if !reports.is_empty() {
        print!("\n{}", report(plan, &reports));
    }
    if let (Some(rb), Some(version)) = (&plan.rb, &rb_version) {
        print!("\n{}", rb_report(plan, rb, version, &rb_reports));
    }
    Ok(reports.iter().all(|r| {
        r.phases
            .iter()
            .map(|(_, p)| p)
            .chain(r.open.iter().map(|run| &run.result))
            .all(|p| p.errors == 0 && p.misses == 0)
    }) && rb_reports.iter().all(RbSystemReport::ok))
}

/// redis-server with its clients' connections, kept up after its own
/// phases under `--half-max` to run at each ringkv system's half rate.
struct LiveRedis {
    redis: Redis,
    conns: Vec<RespConn>,
}

/// Starts redis-server and runs the load phase and the mixes; returns the
/// report (without peak RSS, which [`finish_redis`] adds) and the server,
/// still up.
async fn bench_redis(args: &Args, plan: &Plan, dir: &Path) -> Result<(SystemReport, LiveRedis)> {
    let redis = Redis::start(&args.redis_bin, dir, plan.server_mask()).await?;
    let server_cpus = cpus_allowed([&redis.proc].into_iter())?;
    let mut conns = Vec::new();
    for _ in 0..plan.clients {
        conns.push(RespConn::connect(&redis.addr).await?);
    }
    let (conns, phases) = measure("redis", conns, plan, &[redis.proc.pid()]).await?;
    let report = SystemReport {
        spec: SystemSpec::Redis,
        name: "redis".into(),
        server_cpus,
        phases,
        open: Vec::new(),
        rss: Vec::new(),
    };
    Ok((report, LiveRedis { redis, conns }))
}

/// Records redis-server's peak RSS in `report` and stops it.
fn finish_redis(report: &mut SystemReport, live: LiveRedis) -> Result<()> {
    let LiveRedis { mut redis, conns } = live;
    drop(conns);
    redis.proc.check_running()?;
    report
        .rss
        .push(("redis-server".to_string(), redis.proc.peak_rss()?));
    if !redis.proc.stop(STOP_GRACE) {
        eprintln!(
            "redis-server did not exit cleanly; its log ends:\n{}",
            log_tail(&redis.proc.log)
        );
    }
    Ok(())
}

/// The CPU lists the kernel allows `procs`: one when they agree, else
/// each distinct one, separated by ` / `.
fn cpus_allowed<'a>(procs: impl Iterator<Item = &'a Proc>) -> Result<String> {
    let mut lists: Vec<String> = Vec::new();
    for proc in procs {
        let list = proc.cpus_allowed()?;
        if !lists.contains(&list) {
            lists.push(list);
        }
    }
    Ok(lists.join(" / "))
}

// ---------------------------------------------------------------------------
// redis-benchmark as the driver.

/// The RESP port's buckets of redis database 0 as the benchmark sets
/// them, with the benchmark bucket's n, r and w: `db0` for the string
/// commands, last-writer-wins (redis's SET); `db0.counters` (INCR) and
/// `db0.sets` (SADD) with the CRDTs their names give them.
fn resp_buckets() -> [(&'static [u8], ConflictPolicy); 3] {
    [
        (b"db0", ConflictPolicy::Lww),
        (b"db0.counters", ConflictPolicy::Crdt(CrdtKind::PnCounter)),
        (b"db0.sets", ConflictPolicy::Crdt(CrdtKind::OrSet)),
    ]
}

/// What one redis-benchmark process (one test, one pipeline depth)
/// measured.
#[derive(Debug)]
struct RbResult {
    test: String,
    pipeline: u64,
    requests: u64,
    /// Its CSV row for the test, if it printed one.
    row: Option<redis_benchmark::Row>,
    /// How it exited.
    status: std::process::ExitStatus,
    /// What it printed besides its CSV (stdout and stderr): errors such as
    /// `Error from server: ...`.
    messages: Vec<String>,
    /// CPU time (user + system) of the system's server processes from the
    /// start of the process to its exit.
    server_cpu_secs: f64,
    /// CPU time of the redis-benchmark process.
    client_cpu_secs: f64,
}

impl RbResult {
    fn ok(&self) -> bool {
        self.status.success() && self.row.is_some() && self.messages.is_empty()
    }

    fn per_request_us(&self, secs: f64) -> f64 {
        secs * 1e6 / self.requests.max(1) as f64
    }
}

/// Keys read back after the SETs: how many of the first ones of the key
/// space hold a value of [`VALUE_BYTES`].
#[derive(Debug)]
struct RbProbe {
    probed: u64,
    found: u64,
    /// Reads answered with an error, or with a value of another length.
    bad: u64,
    first_bad: Option<String>,
    /// SETs sent before the probe.
    sets: u64,
}

/// What redis-benchmark measured on one system.
struct RbSystemReport {
    name: String,
    /// The CPUs its server processes were allowed, as the kernel says.
    server_cpus: String,
    runs: Vec<RbResult>,
    probe: Option<RbProbe>,
    /// (process name, peak RSS in bytes).
    rss: Vec<(String, u64)>,
}

impl RbSystemReport {
    fn ok(&self) -> bool {
        self.runs.iter().all(RbResult::ok) && self.probe.as_ref().is_none_or(|p| p.bad == 0)
    }
}

/// `redis-benchmark --version`, checked to be one whose CSV output this
/// file reads.
fn rb_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("--version").output().map_err(|e| {
        format!(
            "cannot run {} ({e}); it comes with Debian's redis-tools",
            bin.display()
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = redis_benchmark::parse_version(&text)
        .ok_or_else(|| format!("{} --version printed {text:?}", bin.display()))?;
    if version.0 < 7 {
        eprintln!(
            "cluster bench: {text}: before 7, --csv has no latency columns; only req/s is reported"
        );
    }
    Ok(text)
}

/// `utime + stime` of this process's waited-for children (`cutime` and
/// `cstime`, fields 16 and 17 of `/proc/PID/stat`).
fn stat_children_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let cutime: u64 = fields.get(16 - 3)?.parse().ok()?;
    let cstime: u64 = fields.get(17 - 3)?.parse().ok()?;
    Some(cutime + cstime)
}

fn children_cpu_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    Ok(stat_children_cpu_ticks(&stat).ok_or("cannot parse /proc/self/stat")?)
}

/// Runs one redis-benchmark process against `addr` and waits for it.
async fn rb_run(
    args: &Args,
    rb: &RbPlan,
    run: &redis_benchmark::Run,
    servers: &[u32],
    dir: &Path,
) -> Result<RbResult> {
    let base = format!("redis-benchmark-{}-P{}", run.test, run.pipeline);
    let (out_path, err_path) = (
        dir.join(format!("{base}.csv")),
        dir.join(format!("{base}.log")),
    );
    let mut cmd = Command::new(&args.rb_bin);
    cmd.args(run.args());
    let server_before = cpu_ticks(servers)?;
    let client_before = children_cpu_ticks()?;
    let mut proc = Proc::spawn_split(&base, &mut cmd, &out_path, &err_path)?;
    let deadline = Instant::now() + rb.timeout;
    let status = loop {
        if let Some(status) = proc.child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            proc.stop(STOP_GRACE);
            return Err(format!(
                "{base} did not finish within {:?}; raise --rb-timeout or lower --rb-requests",
                rb.timeout
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The process has been waited for, so its CPU time is in this
    // process's cutime and cstime.
    let server_ticks = cpu_ticks(servers)?.saturating_sub(server_before);
    let client_ticks = children_cpu_ticks()?.saturating_sub(client_before);
    let output = redis_benchmark::parse_csv(&std::fs::read_to_string(&out_path)?)
        .map_err(|e| format!("{base}: {e}"))?;
    let mut messages = output.other;
    messages.extend(
        std::fs::read_to_string(&err_path)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from),
    );
    let row = output
        .rows
        .into_iter()
        .find(|r| r.test.eq_ignore_ascii_case(&run.test));
    Ok(RbResult {
        test: run.test.clone(),
        pipeline: run.pipeline,
        requests: run.requests,
        row,
        status,
        messages,
        server_cpu_secs: server_ticks as f64 / clock_ticks_per_sec(),
        client_cpu_secs: client_ticks as f64 / clock_ticks_per_sec(),
    })
}

/// Every test of `rb` with every pipeline depth against `addr`, then, if
/// SET was among them, a read of the first keys of the key space.
async fn rb_measure(
    args: &Args,
    plan: &Plan,
    rb: &RbPlan,
    system: &str,
    addr: &str,
    servers: &[u32],
    dir: &Path,
) -> Result<(Vec<RbResult>, Option<RbProbe>)> {
    std::fs::create_dir_all(dir)?;
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("not HOST:PORT: {addr}"))?;
    let mut runs = Vec::new();
    for &pipeline in &rb.pipelines {
        for test in &rb.tests {
            let run = redis_benchmark::Run {
                host: host.clone(),
                port,
                clients: plan.clients,
                requests: rb.requests_of(test),
                data_size: VALUE_BYTES,
                keyspace: rb.keyspace,
                pipeline,
                test: test.clone(),
            };
            let result = rb_run(args, rb, &run, servers, dir).await?;
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
            println!(
                "  {system} -t {test} -P {pipeline}: {} req/s; p50 {} p99 {} ms; \
                 server CPU {:.1} us/req; redis-benchmark CPU {:.1} us/req; {}",
                result
                    .row
                    .as_ref()
                    .map_or("-".into(), |r| thousands(r.rps as u64)),
                ms(result.row.as_ref().and_then(|r| r.p50_ms)),
                ms(result.row.as_ref().and_then(|r| r.p99_ms)),
                result.per_request_us(result.server_cpu_secs),
                result.per_request_us(result.client_cpu_secs),
                result.status,
            );
            for m in result.messages.iter().take(5) {
                println!("    redis-benchmark said: {m}");
            }
            if result.row.is_none() {
                println!("    no CSV row for {test}");
            }
            runs.push(result);
        }
    }
    let probe = if rb.tests.iter().any(|t| t == "set") {
        let sets = rb.requests * rb.pipelines.len() as u64;
        let mut conn = RespConn::connect(addr).await?;
        let mut probe = RbProbe {
            probed: RB_PROBE_KEYS.min(rb.keyspace),
            found: 0,
            bad: 0,
            first_bad: None,
            sets,
        };
        for i in 0..probe.probed {
            let key = redis_benchmark::key_name(i);
            let bad = match conn.get(key.as_bytes()).await {
                Ok(Some(VALUE_BYTES)) => {
                    probe.found += 1;
                    None
                }
                Ok(None) => None,
                Ok(Some(len)) => Some(format!("{key} holds {len} bytes")),
                Err(e) => Some(format!("{key}: {e}")),
            };
            if let Some(bad) = bad {
                probe.bad += 1;
                probe.first_bad.get_or_insert(bad);
            }
        }
        println!(
            "  {system}: {} of the first {} keys hold a {VALUE_BYTES}-byte value after {} SETs \
             ({:.1}% expected of uniform keys); {} bad reads{}",
            probe.found,
            probe.probed,
            thousands(sets),
            100.0 * redis_benchmark::expected_coverage(rb.keyspace, sets),
            probe.bad,
            probe
                .first_bad
                .as_ref()
                .map_or(String::new(), |b| format!(", first: {b}")),
        );
        Some(probe)
    } else {
        None
    };
    Ok((runs, probe))
}

async fn bench_rb_redis(
    args: &Args,
    plan: &Plan,
    rb: &RbPlan,
    dir: &Path,
) -> Result<RbSystemReport> {
    let mut redis = Redis::start(&args.redis_bin, dir, plan.server_mask()).await?;
    let server_cpus = cpus_allowed([&redis.proc].into_iter())?;
    let (runs, probe) = rb_measure(
        args,
        plan,
        rb,
        "redis",
        &redis.addr,
        &[redis.proc.pid()],
        dir,
    )
    .await?;
    redis.proc.check_running()?;
    let rss = vec![("redis-server".to_string(), redis.proc.peak_rss()?)];
    if !redis.proc.stop(STOP_GRACE) {
        eprintln!(
            "redis-server did not exit cleanly; its log ends:\n{}",
            log_tail(&redis.proc.log)
        );
    }
    Ok(RbSystemReport {
        name: "redis".into(),
        server_cpus,
        runs,
        probe,
        rss,
    })
}

/// A cluster of `count` nodes with RESP ports, driven by redis-benchmark
/// through node 1's (redis-benchmark speaks to one address).
async fn bench_rb_ringkv(
    args: &Args,
    plan: &Plan,
    rb: &RbPlan,
    spec: SystemSpec,
    count: usize,
    dir: &Path,
) -> Result<RbSystemReport> {
    let name = spec.name();
    let buckets = resp_buckets();
    let mut nodes =
        start_cluster(args, count, None, Some(&buckets), dir, plan.server_mask()).await?;
    let addr = nodes[0].redis.clone().ok_or("node 1 has no RESP port")?;
    let server_cpus = cpus_allowed(nodes.iter().map(|n| &n.proc))?;
    let pids: Vec<u32> = nodes.iter().map(|n| n.proc.pid()).collect();
    let (runs, probe) = rb_measure(args, plan, rb, &name, &addr, &pids, dir).await?;
    let mut rss = Vec::new();
    for node in &mut nodes {
        node.proc.check_running()?;
        rss.push((format!("node {}", node.id), node.proc.peak_rss()?));
    }
    for node in &mut nodes {
        if !node.proc.stop(STOP_GRACE) {
            eprintln!(
                "{} did not exit cleanly; its log ends:\n{}",
                node.proc.name,
                log_tail(&node.proc.log)
            );
        }
    }
    Ok(RbSystemReport {
        name,
        server_cpus,
        runs,
        probe,
        rss,
    })
}

/// The machine-readable `RB` lines and the Markdown table of the
/// redis-benchmark runs, with ratios to redis's run of the same test and
/// pipeline depth.
fn rb_report(plan: &Plan, rb: &RbPlan, version: &str, reports: &[RbSystemReport]) -> String {
    let mut out = String::new();
    for r in reports {
        for run in &r.runs {
            let row = run.row.as_ref();
            let _ = writeln!(
                out,
                "RB\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{}\t{:.3}\t{:.3}\t{}",
                r.name,
                run.test,
                run.pipeline,
                run.requests,
                row.map_or(f64::NAN, |r| r.rps),
                row.and_then(|r| r.p50_ms).unwrap_or(f64::NAN),
                row.and_then(|r| r.p99_ms).unwrap_or(f64::NAN),
                run.server_cpu_secs,
                run.client_cpu_secs,
                if run.ok() { "ok" } else { "FAILED" },
            );
        }
        for (process, bytes) in &r.rss {
            let _ = writeln!(out, "RB-RSS\t{}\t{process}\t{bytes}", r.name);
        }
    }
    let sadd = if rb.tests.iter().any(|t| t == "sadd") && rb.sadd_requests != rb.requests {
        format!(" (SADD: -n {})", thousands(rb.sadd_requests))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "\n{version}: -c {} -n {}{sadd} -d {VALUE_BYTES} -r {}, one process per test and -P; \
         ringkv through node 1's RESP port; latency in ms, CPU in us per request",
        plan.clients,
        thousands(rb.requests),
        rb.keyspace,
    );
    let cpus: Vec<String> = reports
        .iter()
        .map(|r| format!("{} {}", r.name, r.server_cpus))
        .collect();
    let _ = writeln!(
        out,
        "server CPUs (as the kernel allowed them): {}; {}\n",
        cpus.join(", "),
        plan.server_cpus
            .as_ref()
            .map_or("not pinned".into(), |c| format!("--server-cpus {c}")),
    );
    let _ = writeln!(
        out,
        "| system | test | -P | req/s | req/s / redis | p50 | p99 | p99 / redis | server CPU us/req | CPU/req / redis | redis-benchmark CPU us/req |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let redis = reports.iter().find(|r| r.name == "redis");
    // redis-benchmark's latency histogram ends at 3 s: a latency past it
    // is recorded as the last bucket (3000.319 ms), so such a figure, and
    // a ratio of it, is a lower bound.
    let capped = |v: f64| v >= redis_benchmark::LATENCY_CAP_MS;
    let ms = |v: Option<f64>| match v {
        None => "-".into(),
        Some(v) if capped(v) => format!(">={v:.0}"),
        Some(v) => format!("{v:.2}"),
    };
    for r in reports {
        for run in &r.runs {
            let peer = redis
                .filter(|x| x.name != r.name)
                .and_then(|x| {
                    x.runs
                        .iter()
                        .find(|q| q.test == run.test && q.pipeline == run.pipeline)
                })
                .filter(|q| q.ok());
            let row = run.row.as_ref().filter(|_| run.ok());
            let peer_row = peer.and_then(|q| q.row.as_ref());
            let both = |f: fn(&redis_benchmark::Row) -> Option<f64>| match (row, peer_row) {
                (Some(a), Some(b)) => match (f(a), f(b)) {
                    (Some(a), Some(b)) => ratio(a, b),
                    _ => "-".into(),
                },
                _ => "-".into(),
            };
            let server = run.per_request_us(run.server_cpu_secs);
            let cpu_ratio = match (row, peer) {
                (Some(_), Some(q)) => ratio(server, q.per_request_us(q.server_cpu_secs)),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {cpu_ratio} | {:.1} |",
                r.name,
                run.test.to_uppercase(),
                run.pipeline,
                row.map_or("FAILED".into(), |r| thousands(r.rps as u64)),
                both(|r| Some(r.rps)),
                ms(row.and_then(|r| r.p50_ms)),
                ms(row.and_then(|r| r.p99_ms)),
                match row.and_then(|r| r.p99_ms) {
                    Some(v) if capped(v) => format!(">={}", both(|r| r.p99_ms)),
                    _ => both(|r| r.p99_ms),
                },
                server,
                run.per_request_us(run.client_cpu_secs),
            );
        }
    }
    let probes: Vec<_> = reports
        .iter()
        .filter_map(|r| r.probe.as_ref().map(|p| (r, p)))
        .collect();
    if !probes.is_empty() {
        let _ = writeln!(out);
        for (r, p) in probes {
            let _ = writeln!(
                out,
                "{}: {} of the first {} keys hold a {VALUE_BYTES}-byte value after {} SETs \
                 ({:.1}% expected); {} bad reads",
                r.name,
                p.found,
                p.probed,
                thousands(p.sets),
                100.0 * redis_benchmark::expected_coverage(rb.keyspace, p.sets),
                p.bad,
            );
        }
    }
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.runs.iter().filter(|run| !run.ok()).map(move |run| {
                format!(
                    "{} -t {} -P {}: {}{}",
                    r.name,
                    run.test,
                    run.pipeline,
                    run.status,
                    run.messages
                        .first()
                        .map_or(String::new(), |m| format!("; {m}"))
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nFailed runs (no ratios taken):");
        for f in failed {
            let _ = writeln!(out, "- {f}");
        }
    }
    let _ = writeln!(out, "\n| system | process | peak RSS (MiB) |");
    let _ = writeln!(out, "|---|---|---:|");
    for r in reports {
        for (process, bytes) in &r.rss {
            let _ = writeln!(
                out,
                "| {} | {process} | {:.1} |",
                r.name,
                *bytes as f64 / (1 << 20) as f64
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// ringkv: the nodes and the client.

impl KvConn for Client {
    async fn get(&mut self, key: &[u8]) -> std::result::Result<Option<usize>, OpError> {
        match Client::get(self, BUCKET, key).await {
            // Siblings cannot occur in a last-writer-wins bucket; should
            // they, the read counts as a miss.
            Ok(found) => Ok(found.value.map(|v| v.len())),
            // The client opens a new connection on its next request, so no
            // failure leaves it unusable.
            Err(e) => Err(OpError::Refused(e.to_string())),
        }
    }

    async fn set(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), OpError> {
        match self.put(BUCKET, key, value, None).await {
            Ok(_) => Ok(()),
            Err(e) => Err(OpError::Refused(e.to_string())),
        }
    }
}

/// The client configuration of the benchmark: one attempt per request, so
/// that every failure is counted rather than hidden by a retry (the redis
/// client does not retry either), and the benchmark's own timeout; TLS to
/// the client port when the nodes serve it.
fn client_config(tls: Option<&ClientPortCerts>) -> ClientConfig {
    ClientConfig {
        client_name: "ringkv-cluster-bench".into(),
        request_timeout: OP_TIMEOUT,
        max_attempts: 1,
        tls: tls.map(|t| t.client.clone()),
        ..ClientConfig::default()
    }
}

/// The client port certificate of a run's TLS clusters, made once per run
/// by `ringkv-node certs --client-port 127.0.0.1` (its own CA, in the
/// run's temp dir), and the client side that trusts that CA.
struct ClientPortCerts {
    cert: PathBuf,
    key: PathBuf,
    client: ClientTls,
}

impl ClientPortCerts {
    fn make(bin: &Path, dir: &Path) -> Result<ClientPortCerts> {
        let made = Command::new(bin)
            .arg("certs")
            .arg("--dir")
            .arg(dir)
            .args(["--cluster", "ringkv-bench", "--client-port", "127.0.0.1"])
            .output()?;
        if !made.status.success() {
            return Err(format!(
                "ringkv-node certs --client-port failed: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )
            .into());
        }
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))?;
        Ok(ClientPortCerts {
            cert: dir.join("client-port.pem"),
            key: dir.join("client-port.key"),
            client: ClientTls::new(&ca_pem)?,
        })
    }
}

/// The `ready` line a node prints once its listeners are bound:
/// `ready node=<id> peer=<HOST:PORT> client=<HOST:PORT>`, and
/// ` redis=<HOST:PORT>` at the end when the RESP port is on.
#[derive(Debug, PartialEq, Eq)]
struct Ready {
    node: u64,
    peer: String,
    client: String,
    redis: Option<String>,
}

fn parse_ready(line: &str) -> Option<Ready> {
    let mut words = line.split_whitespace();
    if words.next() != Some("ready") {
        return None;
    }
    let (mut node, mut peer, mut client, mut redis) = (None, None, None, None);
    for word in words {
        let (name, value) = word.split_once('=')?;
        match name {
            "node" => node = value.parse().ok(),
            "peer" => peer = Some(value.to_string()),
            "client" => client = Some(value.to_string()),
            "redis" => redis = Some(value.to_string()),
            _ => {}
        }
    }
    Some(Ready {
        node: node?,
        peer: peer?,
        client: client?,
        redis,
    })
}

/// A running `ringkv-node`.
struct Node {
    id: u64,
    proc: Proc,
    peer: String,
    client: String,
    /// The RESP port, when started with one.
    redis: Option<String>,
}

/// The node binary: `--node-bin`, or `ringkv-node` beside this binary
/// (both are built into the same target directory).
fn node_bin(args: &Args) -> Result<PathBuf> {
    let path = match &args.node_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("this binary has no directory")?
            .join("ringkv-node"),
    };
    if !path.is_file() {
        return Err(format!(
            "no ringkv-node at {}: build it with `cargo build --release --bin ringkv-node` \
             (into the same target directory), or pass --node-bin",
            path.display()
        )
        .into());
    }
    if path.components().any(|c| c.as_os_str() == "debug") {
        eprintln!(
            "cluster bench: warning: {} looks like a debug build",
            path.display()
        );
    }
    Ok(path)
}

/// Starts node `id`, joining through `seed` when given, on `cpus` when
/// given, and waits for its ready line.
#[allow(clippy::too_many_arguments)]
fn start_node(
    args: &Args,
    bin: &Path,
    root: &Path,
    id: u64,
    tls: Option<&ClientPortCerts>,
    resp: bool,
    seed: Option<&Node>,
    cpus: Option<&CpuList>,
) -> Result<Node> {
    let dir = root.join(format!("node{id}"));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(bin);
    // The log is a file: no terminal colours in it.
    cmd.env("NO_COLOR", "1");
    cmd.arg("--id")
        .arg(id.to_string())
        .args(["--listen", "127.0.0.1:0", "--client-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--engine",
            &args.engine,
            "--cluster",
            "ringkv-bench",
            "--sync",
            "interval",
        ])
        .arg("--sync-interval-ms")
        .arg(args.sync_interval_ms.to_string())
        .arg("--secret-file")
        .arg(root.join("secret"))
        // Links between nodes are TLS, as a node runs them by default.
        .arg("--peer-ca")
        .arg(root.join("certs").join("ca.pem"))
        .arg("--peer-cert")
        .arg(root.join("certs").join(format!("node-{id}.pem")))
        .arg("--peer-key")
        .arg(root.join("certs").join(format!("node-{id}.key")))
        // Authentication costs one password check per connection, and the
        // benchmark's connections are opened before any clock starts.
        .arg("--no-client-auth");
    if let Some(tls) = tls {
        cmd.arg("--client-tls-cert")
            .arg(&tls.cert)
            .arg("--client-tls-key")
            .arg(&tls.key);
    }
    if let Some(ms) = args.gossip_interval_ms {
        cmd.arg("--gossip-interval-ms").arg(ms.to_string());
    }
    if let Some(n) = args.data_shards {
        cmd.arg("--data-shards").arg(n.to_string());
    }
    if resp {
        // On loopback, so the node allows it without users.
        cmd.args(["--redis-listen", "127.0.0.1:0"]);
    }
    if let Some(seed) = seed {
        cmd.arg("--seed").arg(format!("{}@{}", seed.id, seed.peer));
    }
    let name = format!("ringkv-node {id}");
    let mut proc = Proc::spawn(&name, &mut cmd, &dir.join("node.log"), true, cpus)?;
    let stdout = proc
        .child
        .stdout
        .take()
        .ok_or("the node's stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads the ready line, then drains stdout for the node's lifetime so
    // that it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    let _ = tx.send(line);
                }
                Err(_) => break,
            }
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(ready) = parse_ready(&line) {
                    if ready.node != id {
                        return Err(format!("{name} says it is node {}", ready.node).into());
                    }
                    if resp && ready.redis.is_none() {
                        return Err(format!("{name}'s ready line names no RESP port").into());
                    }
                    return Ok(Node {
                        id,
                        proc,
                        peer: ready.peer,
                        client: ready.client,
                        redis: ready.redis,
                    });
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it is exiting; give it a moment to, so
                // that the error says how it exited.
                for _ in 0..50 {
                    proc.check_running()?;
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Err(format!(
                    "{name} closed its stdout without a ready line; log:\n{}",
                    log_tail(&proc.log)
                )
                .into());
            }
        }
        proc.check_running()?;
        if Instant::now() > deadline {
            return Err(format!(
                "{name} printed no ready line within {START_TIMEOUT:?}; log:\n{}",
                log_tail(&proc.log)
            )
            .into());
        }
    }
}

/// Polls `check` every 100 ms until it returns `Ok(true)`, failing with
/// `what` and the last answer after `timeout`.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<(), String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_yet)) => not_yet,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!("{what} within {timeout:?}; last: {last}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bucket the benchmark uses on a cluster of `nodes`.
fn bench_bucket(nodes: usize) -> BucketInfo {
    let (n, quorum) = if nodes >= 3 {
        (3, Consistency::Count(2))
    } else {
        (1, Consistency::Count(1))
    };
    BucketInfo {
        n,
        r: quorum,
        w: quorum,
        policy: ConflictPolicy::Lww,
        sloppy_quorum: true,
        timeout_ms: 5_000,
    }
}

/// Starts `count` nodes, waits until every one sees all of them alive and
/// on the ring, and sets the benchmark bucket everywhere. With `resp`,
/// every node also serves the Redis protocol on a port of its own, and the
/// buckets named there are set with the benchmark bucket's n, r and w and
/// the policy given. Every node runs on `cpus` when given.
async fn start_cluster(
    args: &Args,
    count: usize,
    tls: Option<&ClientPortCerts>,
    resp: Option<&[(&[u8], ConflictPolicy)]>,
    root: &Path,
    cpus: Option<&CpuList>,
) -> Result<Vec<Node>> {
    let bin = node_bin(args)?;
    std::fs::create_dir_all(root)?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(root.join("secret"), secret)?;
    let made = Command::new(&bin)
        .arg("certs")
        .arg("--dir")
        .arg(root.join("certs"))
        .args(["--cluster", "ringkv-bench"])
        .args((1..=count as u64).map(|id| id.to_string()))
        .output()?;
    if !made.status.success() {
        return Err(format!(
            "ringkv-node certs failed: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        )
        .into());
    }
    let mut nodes: Vec<Node> = Vec::new();
    for id in 1..=count as u64 {
        let node = start_node(
            args,
            &bin,
            root,
            id,
            tls,
            resp.is_some(),
            nodes.first(),
            cpus,
        )?;
        nodes.push(node);
    }
    let mut admins = Vec::new();
    for node in &nodes {
        let config = ClientConfig {
            tls: tls.map(|t| t.client.clone()),
            ..ClientConfig::default()
        };
        admins.push(Client::connect(&[node.client.as_str()], config).await?);
    }
    let started = Instant::now();
    for (node, admin) in nodes.iter().zip(&admins) {
        wait_for(
            &format!("node {} to see {count} alive members on its ring", node.id),
            CONVERGE_TIMEOUT,
            || async {
                let status = admin.status().await?;
                let alive = status.members.iter().filter(|m| m.state == "Alive").count();
                let ring = admin.ring().await?;
                Ok(if alive == count && ring.nodes.len() == count {
                    Ok(())
                } else {
                    Err(format!("{alive} alive, {} on the ring", ring.nodes.len()))
                })
            },
        )
        .await?;
    }
    let bucket = bench_bucket(count);
    // The benchmark bucket, and the RESP port's buckets when it is on:
    // the same n, r and w, each with its policy.
    let mut buckets = vec![(BUCKET, bucket.clone())];
    for &(name, ref policy) in resp.unwrap_or_default() {
        buckets.push((
            name,
            BucketInfo {
                policy: policy.clone(),
                ..bucket.clone()
            },
        ));
    }
    for (name, props) in &buckets {
        admins[0].set_bucket(name, props.clone()).await?;
    }
    for (node, admin) in nodes.iter().zip(&admins) {
        for (name, props) in &buckets {
            wait_for(
                &format!(
                    "node {} to have bucket {}",
                    node.id,
                    String::from_utf8_lossy(name)
                ),
                CONVERGE_TIMEOUT,
                || async {
                    let got = admin.bucket(name).await?;
                    Ok(if got == *props {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    })
                },
            )
            .await?;
        }
    }
    // One write and one read through every node, checked against the
    // bucket: the replicas asked are N distinct nodes and at least W (R)
    // answered, with no fallback; so the figures below are of the stated
    // replication, not of a cluster that has not settled.
    let n = bucket.n as usize;
    let (r, w) = (bucket.r.required(n)?, bucket.w.required(n)?);
    for (node, admin) in nodes.iter().zip(&admins) {
        let probe = format!("~probe-{}", node.id);
        let written = admin.put(BUCKET, probe.as_bytes(), b"probe", None).await?;
        let read = admin.get(BUCKET, probe.as_bytes()).await?;
        let (asked, answered) = (written.receipt.asked.len(), written.receipt.answered.len());
        let distinct =
            |ids: &[ringkv::NodeId]| ids.iter().collect::<std::collections::HashSet<_>>().len();
        if asked != n
            || distinct(&written.receipt.asked) != asked
            || answered < w
            || !written.receipt.fallbacks.is_empty()
            || read.receipt.answered.len() < r
            || read.value.as_deref() != Some(&b"probe"[..])
        {
            return Err(format!(
                "node {}: the probe did not replicate as the bucket says: put {:?}, get {:?} -> {:?}",
                node.id, written.receipt, read.receipt, read.value
            )
            .into());
        }
    }
    eprintln!(
        "cluster bench: {count} node(s) up and agreed in {:.1} s (bucket n={} r={:?} w={:?}; \
         client ports {})",
        started.elapsed().as_secs_f64(),
        bucket.n,
        bucket.r,
        bucket.w,
        if tls.is_some() { "TLS" } else { "plain TCP" }
    );
    Ok(nodes)
}

async fn bench_ringkv(
    args: &Args,
    plan: &Plan,
    spec: SystemSpec,
    count: usize,
    tls: Option<&ClientPortCerts>,
    root: &Path,
) -> Result<SystemReport> {
    let name = spec.name();
    let mut nodes = start_cluster(args, count, tls, None, root, plan.server_mask()).await?;
    let server_cpus = cpus_allowed(nodes.iter().map(|n| &n.proc))?;
    let mut conns = Vec::new();
    for i in 0..plan.clients as usize {
        let node = &nodes[i % nodes.len()];
        // `connect` opens the connection (and runs the TLS handshake)
        // before any clock starts.
        conns.push(Client::connect(&[node.client.as_str()], client_config(tls)).await?);
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.proc.pid()).collect();
    let (conns, phases) = measure(&name, conns, plan, &pids).await?;
    let open = if plan.offered == Offered::HalfMax {
        let rates = half_max_rates(&name, &plan.mixes, &phases)?;
        let basis = half_max_basis(&name);
        measure_open(&name, conns, plan, &pids, &basis, &rates)
            .await?
            .1
    } else {
        Vec::new()
    };
    let mut rss = Vec::new();
    for node in &mut nodes {
        node.proc.check_running()?;
        rss.push((format!("node {}", node.id), node.proc.peak_rss()?));
    }
    for node in &mut nodes {
        if !node.proc.stop(STOP_GRACE) {
            eprintln!(
                "{} did not exit cleanly; its log ends:\n{}",
                node.proc.name,
                log_tail(&node.proc.log)
            );
        }
    }
    Ok(SystemReport {
        spec,
        name,
        server_cpus,
        phases,
        open,
        rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_16_digits_and_values_half_random() {
        assert_eq!(&key(42), b"0000000000000042");
        assert_eq!(&key(99_999_999), b"0000000099999999");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut a = [0u8; VALUE_BYTES];
        let mut b = [0u8; VALUE_BYTES];
        fill_value(&mut rng, &mut a);
        fill_value(&mut rng, &mut b);
        assert_ne!(a[..50], b[..50]);
        assert!(a[50..].iter().all(|&c| c == b'v'));
    }

    #[test]
    fn ready_line_parses_and_rejects_others() {
        assert_eq!(
            parse_ready("ready node=3 peer=127.0.0.1:4100 client=127.0.0.1:4101"),
            Some(Ready {
                node: 3,
                peer: "127.0.0.1:4100".into(),
                client: "127.0.0.1:4101".into(),
                redis: None,
            })
        );
        assert_eq!(
            parse_ready("ready node=1 peer=a:1 client=b:2 redis=127.0.0.1:6400")
                .and_then(|r| r.redis),
            Some("127.0.0.1:6400".into())
        );
        assert_eq!(parse_ready("ready node=3 peer=127.0.0.1:4100"), None);
        assert_eq!(parse_ready("starting node=3 peer=a client=b"), None);
        assert_eq!(parse_ready("ready node=x peer=a client=b"), None);
    }

    #[test]
    fn systems_and_plans_parse() {
        assert_eq!(SystemSpec::parse("redis").unwrap(), SystemSpec::Redis);
        assert_eq!(
            SystemSpec::parse("ringkv-5").unwrap(),
            SystemSpec::Ringkv {
                nodes: 5,
                tls: false
            }
        );
        assert!(SystemSpec::parse("ringkv-0").is_err());
        assert!(SystemSpec::parse("etcd").is_err());
        let quick = plan(&Args::parse_from(["cluster", "--quick"])).unwrap();
        assert_eq!(
            (quick.keys, quick.length),
            (QUICK_KEYS, Length::Ops(QUICK_OPS))
        );
        let full = plan(&Args::parse_from(["cluster"])).unwrap();
        assert_eq!(full.keys, FULL_KEYS);
        assert!(matches!(full.length, Length::Timed { .. }));
        assert_eq!(full.systems.len(), 4);
        assert!(plan(&Args::parse_from([
            "cluster",
            "--ops",
            "5",
            "--seconds",
            "2"
        ]))
        .is_err());
    }

    #[test]
    fn tls_systems_parse_and_pair_with_their_plain_twin() {
        let tls = SystemSpec::parse("ringkv-3+tls").unwrap();
        assert_eq!(
            tls,
            SystemSpec::Ringkv {
                nodes: 3,
                tls: true
            }
        );
        assert_eq!((tls.name(), tls.tls()), ("ringkv-3+tls".to_string(), true));
        assert_eq!(tls.plain(), Some(SystemSpec::parse("ringkv-3").unwrap()));
        assert_eq!(SystemSpec::parse("ringkv-3").unwrap().plain(), None);
        assert_eq!(SystemSpec::Redis.plain(), None);
        for bad in [
            "redis+tls",
            "ringkv-0+tls",
            "ringkv-3+TLS",
            "ringkv+tls",
            "ringkv-3+tls+tls",
        ] {
            assert!(SystemSpec::parse(bad).is_err(), "{bad}");
        }
        let both = plan(&Args::parse_from([
            "cluster",
            "--systems",
            "ringkv-1,ringkv-1+tls,ringkv-3,ringkv-3+tls",
        ]))
        .unwrap();
        let names: Vec<String> = both.systems.iter().map(SystemSpec::name).collect();
        assert_eq!(
            names,
            ["ringkv-1", "ringkv-1+tls", "ringkv-3", "ringkv-3+tls"]
        );
        assert!(plan(&Args::parse_from([
            "cluster",
            "--systems",
            "ringkv-1+tls,ringkv-1+tls"
        ]))
        .is_err());
        // The default run has no TLS system.
        let full = plan(&Args::parse_from(["cluster"])).unwrap();
        assert!(!full.systems.iter().any(SystemSpec::tls));
    }

    fn phase(ops: u64, lat_us: u64, cpu: f64, client_cpu: f64) -> PhaseResult {
        let mut hist = new_histogram().unwrap();
        for _ in 0..ops {
            hist.record(lat_us).unwrap();
        }
        PhaseResult {
            ops,
            secs: 1.0,
            hist,
            errors: 0,
            misses: 0,
            broken: false,
            first_error: None,
            cpu_secs: Some(cpu),
            client_cpu_secs: client_cpu,
            open: None,
        }
    }

    #[test]
    fn the_tls_table_compares_each_tls_system_with_its_plain_twin() {
        let system = |s: &str, ops: u64, lat: u64, cpu: f64| SystemReport {
            spec: SystemSpec::parse(s).unwrap(),
            name: s.into(),
            server_cpus: "0-1".into(),
            phases: vec![("50/50".into(), phase(ops, lat, cpu, cpu / 2.0))],
            open: vec![],
            rss: vec![],
        };
        let plan = small_plan(Length::Ops(10), vec![50]);
        let reports = [
            system("ringkv-1", 1_000, 2_000, 0.04),
            system("ringkv-1+tls", 800, 2_400, 0.048),
            // No plain twin in the run: not in the TLS table.
            system("ringkv-5+tls", 500, 4_000, 0.05),
        ];
        let out = report(&plan, &reports);
        assert!(out.contains("redis is never TLS"), "{out}");
        assert!(
            out.contains("| ringkv-1+tls | 50/50 | 1,000 | 800 | 0.80 | 2.00 | 2.40 | 2.00 | 2.40 | 1.20 | 40 | 60 | 1.50 | 20 | 30 | 1.50 |"),
            "{out}"
        );
        // Each TLS system is in the main table (with its servers' CPUs);
        // only the paired one is in the TLS table too.
        assert_eq!(
            out.matches("| ringkv-1+tls | 0-1 | 50/50 |").count(),
            1,
            "{out}"
        );
        assert_eq!(
            out.matches("| ringkv-5+tls | 0-1 | 50/50 |").count(),
            1,
            "{out}"
        );
        assert_eq!(out.matches("| ringkv-1+tls | 50/50 |").count(), 1, "{out}");
        assert_eq!(out.matches("| ringkv-5+tls | 50/50 |").count(), 0, "{out}");
        // Without a TLS system, neither the note nor the table.
        let out = report(&plan, &reports[..1]);
        assert!(!out.contains("TLS"), "{out}");
    }

    #[test]
    fn resp_commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k1", b"hello"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$5\r\nhello\r\n");
    }

    async fn replies(bytes: &[u8]) -> Vec<String> {
        let mut reader = bytes;
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_reply(&mut reader, &mut scratch).await {
                Ok(r) => out.push(format!("{r:?}")),
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn resp_replies_parse_and_bad_ones_are_errors() {
        let got = replies(b"+OK\r\n$5\r\nhello\r\n$-1\r\n:12\r\n-ERR wrong\r\n").await;
        assert_eq!(
            got,
            [
                "Simple(\"OK\")",
                "Bulk(Some(5))",
                "Bulk(None)",
                "Integer(12)",
                "Error(\"ERR wrong\")",
                "error: redis closed the connection"
            ]
        );
        let bad = |b: &'static [u8]| async move { replies(b).await.pop().unwrap_or_default() };
        assert!(bad(b"*1\r\n").await.contains("unexpected RESP reply type"));
        assert!(bad(b"$5\r\nhello!!").await.contains("without CRLF"));
        assert!(bad(b"$x\r\n").await.contains("bad RESP bulk length"));
        assert!(bad(b"$99999999\r\n").await.contains("too long"));
        assert!(bad(b"+OK\n").await.contains("without CRLF"));
        // A truncated bulk string is an I/O error (unexpected end of file).
        assert!(bad(b"$5\r\nhe").await.starts_with("error:"));
    }

    /// An in-memory system: a shared map, with counts of what was asked.
    #[derive(Clone, Default)]
    struct MapConn {
        map: Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, usize>>>,
        gets: Arc<AtomicU64>,
        sets: Arc<AtomicU64>,
        /// Keys for which `get` answers with an error.
        refuse: Option<Vec<u8>>,
        /// How long every operation takes.
        delay: Option<Duration>,
    }

    impl KvConn for MapConn {
        async fn get(&mut self, key: &[u8]) -> std::result::Result<Option<usize>, OpError> {
            self.gets.fetch_add(1, Ordering::Relaxed);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            if self.refuse.as_deref() == Some(key) {
                return Err(OpError::Refused("no".into()));
            }
            let map = self
                .map
                .lock()
                .map_err(|_| OpError::Broken("poisoned".into()))?;
            Ok(map.get(key).copied())
        }

        async fn set(&mut self, key: &[u8], value: &[u8]) -> std::result::Result<(), OpError> {
            self.sets.fetch_add(1, Ordering::Relaxed);
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
            let mut map = self
                .map
                .lock()
                .map_err(|_| OpError::Broken("poisoned".into()))?;
            map.insert(key.to_vec(), value.len());
            Ok(())
        }
    }

    fn small_plan(length: Length, mixes: Vec<u8>) -> Plan {
        Plan {
            systems: vec![SystemSpec::Redis],
            mixes,
            clients: 7,
            keys: 100,
            length,
            seed: 3,
            loadgen: true,
            rb: None,
            offered: Offered::Closed,
            server_cpus: None,
            loadgen_cpus: None,
            started_on: CpuList::parse("0-1").unwrap(),
        }
    }

    #[tokio::test]
    async fn load_writes_every_key_once_and_mixes_follow_their_ratio() {
        let conn = MapConn::default();
        let conns = vec![conn.clone(); 7];
        let plan = small_plan(Length::Ops(4_000), vec![95, 0]);
        let (_, phases) = measure("map", conns, &plan, &[std::process::id()])
            .await
            .unwrap();
        assert_eq!(phases.len(), 3);
        // This process is the "server": its CPU time is measured.
        assert!(phases.iter().all(|(_, p)| p.cpu_secs.is_some()));
        let (name, load) = &phases[0];
        assert_eq!(
            (name.as_str(), load.ops, load.hist.len()),
            ("load", 100, 100)
        );
        {
            let map = conn.map.lock().unwrap();
            assert_eq!(map.len(), 100);
            assert!((0..100).all(|i| map.get(&key(i)[..]) == Some(&VALUE_BYTES)));
        }
        // 95/5: 4,000 operations, every read finds its key, about 95% reads.
        let (name, mix) = &phases[1];
        assert_eq!(
            (name.as_str(), mix.ops, mix.errors, mix.misses),
            ("95/5", 4_000, 0, 0)
        );
        let gets = conn.gets.load(Ordering::Relaxed);
        assert!((3_600..4_000).contains(&gets), "{gets} reads of 4,000");
        // 0/100: writes only.
        assert_eq!(phases[2].0, "0/100");
        assert_eq!(conn.gets.load(Ordering::Relaxed), gets);
        assert_eq!(
            conn.sets.load(Ordering::Relaxed),
            100 + (4_000 - gets) + 4_000
        );
    }

    #[tokio::test]
    async fn timed_mixes_record_only_the_measured_span() {
        let conns = vec![MapConn::default(); 3];
        let plan = small_plan(
            Length::Timed {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(200),
            },
            vec![50],
        );
        let (_, phases) = measure("map", conns, &plan, &[]).await.unwrap();
        let (_, mix) = &phases[1];
        assert_eq!(mix.cpu_secs, None);
        assert_eq!(mix.secs, 0.2);
        assert!(mix.ops > 0 && mix.ops == mix.hist.len());
        assert_eq!(mix.errors, 0);
    }

    #[tokio::test]
    async fn misses_and_errors_are_counted_not_fatal() {
        let conn = MapConn {
            refuse: Some(key(5).to_vec()),
            ..MapConn::default()
        };
        // No load phase: the map is empty, so every read misses, and the
        // reads of key 5 are refused.
        let plan = small_plan(Length::Ops(2_000), vec![100]);
        let (conns, result) = run_phase(
            vec![conn; 2],
            PhaseKind::Mix { read_pct: 100 },
            &plan,
            0,
            &[],
            None,
        )
        .await
        .unwrap();
        assert_eq!(conns.len(), 2);
        assert!(result.errors > 0 && !result.broken);
        assert_eq!(result.ops + result.errors, 2_000);
        assert_eq!(result.misses, result.ops);
        assert_eq!(result.first_error.as_deref(), Some("refused: no"));
    }

    #[test]
    fn stat_cpu_fields_parse_past_a_name_with_spaces() {
        let stat = "4242 (ringkv node) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    37 12 0 0 20 0 4 0 100 1000 200";
        assert_eq!(stat_cpu_ticks(stat), Some(49));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert!(cpu_ticks(&[std::process::id()]).is_ok());
    }

    #[test]
    fn the_redis_benchmark_driver_plans() {
        let plan_of = |a: &[&str]| plan(&Args::parse_from([&["cluster"], a].concat()));
        let p = plan_of(&[]).unwrap();
        assert!(p.loadgen && p.rb.is_none());
        let p = plan_of(&["--driver", "redis-benchmark", "--quick"]).unwrap();
        let rb = p.rb.unwrap();
        assert!(!p.loadgen);
        assert_eq!(rb.tests, ["set", "get", "incr", "sadd"]);
        assert_eq!(rb.pipelines, [1, 16]);
        assert_eq!((rb.requests, rb.keyspace), (RB_QUICK_REQUESTS, RB_KEYSPACE));
        assert_eq!(
            (rb.requests_of("get"), rb.requests_of("sadd")),
            (RB_QUICK_REQUESTS, RB_QUICK_SADD_REQUESTS)
        );
        let p = plan_of(&[
            "--driver",
            "both",
            "--rb-tests",
            "set,incr",
            "--rb-requests",
            "7",
        ])
        .unwrap();
        assert!(p.loadgen);
        assert_eq!(
            p.rb.map(|r| (r.tests, r.requests)),
            Some((vec!["set".into(), "incr".into()], 7))
        );
        assert!(plan_of(&["--driver", "redis-benchmark", "--rb-tests", "lpush"]).is_err());
        // The RESP port is plain TCP: no TLS system for redis-benchmark
        // alone; with both drivers it is measured by the load generator.
        assert!(plan_of(&["--driver", "redis-benchmark", "--systems", "ringkv-1+tls"]).is_err());
        assert!(plan_of(&["--driver", "both", "--systems", "ringkv-1+tls"]).is_ok());
    }

    #[test]
    fn children_cpu_fields_parse() {
        // Fields 16 and 17 (cutime, cstime) after 14 and 15.
        let stat = "4242 (cluster x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    37 12 5 6 20 0 4 0 100 1000 200";
        assert_eq!(stat_children_cpu_ticks(stat), Some(11));
        assert!(children_cpu_ticks().is_ok());
    }

    #[test]
    fn the_redis_benchmark_table_takes_ratios_to_redis() {
        use std::os::unix::process::ExitStatusExt;
        let run = |test: &str, pipeline: u64, rps: f64, p99: f64, cpu: f64, code: i32| RbResult {
            test: test.into(),
            pipeline,
            requests: 1_000,
            row: (code == 0).then(|| redis_benchmark::Row {
                test: test.to_uppercase(),
                rps,
                avg_ms: None,
                p50_ms: Some(0.5),
                p95_ms: None,
                p99_ms: Some(p99),
                max_ms: None,
            }),
            status: std::process::ExitStatus::from_raw(code << 8),
            messages: if code == 0 {
                vec![]
            } else {
                vec!["Error from server: WRONGTYPE".into()]
            },
            server_cpu_secs: cpu,
            client_cpu_secs: 0.01,
        };
        let system = |name: &str, runs| RbSystemReport {
            name: name.into(),
            server_cpus: "0".into(),
            runs,
            probe: None,
            rss: vec![],
        };
        let reports = [
            system(
                "redis",
                vec![
                    run("set", 1, 60_000.0, 1.0, 0.01, 0),
                    run("sadd", 1, 50_000.0, 2.0, 0.01, 0),
                    run("incr", 16, 500_000.0, 2.0, 0.01, 0),
                ],
            ),
            system(
                "ringkv-1",
                vec![
                    run("set", 1, 30_000.0, 4.0, 0.04, 0),
                    run("sadd", 1, 100.0, 3000.319, 2.0, 0),
                    run("incr", 16, 0.0, 0.0, 0.0, 1),
                ],
            ),
        ];
        let plan = small_plan(Length::Ops(10), vec![50]);
        let rb = RbPlan {
            tests: vec!["set".into(), "incr".into()],
            pipelines: vec![1, 16],
            requests: 1_000,
            sadd_requests: 1_000,
            keyspace: 50_000,
            timeout: Duration::from_secs(1),
        };
        let out = rb_report(&plan, &rb, "redis-benchmark 7.0.15", &reports);
        assert!(
            out.contains(
                "server CPUs (as the kernel allowed them): redis 0, ringkv-1 0; not pinned"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "| ringkv-1 | SET | 1 | 30,000 | 0.50 | 0.50 | 4.00 | 4.00 | 40.0 | 4.00 | 10.0 |"
            ),
            "{out}"
        );
        assert!(
            out.contains("| ringkv-1 | INCR | 16 | FAILED | - |"),
            "{out}"
        );
        // Past redis-benchmark's 3 s histogram: lower bounds.
        assert!(
            out.contains("| ringkv-1 | SADD | 1 | 100 | 0.00 | 0.50 | >=3000 | >=1500.16 |"),
            "{out}"
        );
        assert!(
            out.contains("- ringkv-1 -t incr -P 16: exit status: 1; Error from server: WRONGTYPE"),
            "{out}"
        );
        assert!(!reports[1].ok() && reports[0].ok());
    }

    #[test]
    fn status_fields_parse() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t  1234 kB\n";
        assert_eq!(status_field_kib(status, "VmHWM:"), Some(1234));
        assert_eq!(status_field_kib(status, "VmRSS:"), None);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    /// The schedule of a phase, as `run_phase` sets it up.
    fn open_plan(length: Length, clients: u64) -> Plan {
        Plan {
            clients,
            ..small_plan(length, vec![50])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_sends_every_due_operation_at_a_rate_it_can_serve() {
        // Timed: 2,000/s over 50 ms of warm-up and 200 ms recorded is 500
        // operations due, the last 400 recorded.
        let conn = MapConn::default();
        let plan = open_plan(
            Length::Timed {
                warmup: Duration::from_millis(50),
                measure: Duration::from_millis(200),
            },
            3,
        );
        let kind = PhaseKind::Mix { read_pct: 50 };
        let (_, result) = run_phase(vec![conn.clone(); 3], kind, &plan, 0, &[], Some(2_000))
            .await
            .unwrap();
        let open = result.open.as_ref().unwrap();
        assert_eq!((open.rate, open.due, open.unsent), (2_000, 400, 0));
        assert_eq!(
            (result.ops, result.errors, result.hist.len()),
            (400, 0, 400)
        );
        assert_eq!((open.service.len(), open.lag.len()), (400, 400));
        assert_eq!(result.secs, 0.2);
        let sent = conn.gets.load(Ordering::Relaxed) + conn.sets.load(Ordering::Relaxed);
        assert_eq!(sent, 500, "warm-up and recorded, nothing more");
        // Op-counted: all 300 recorded, and paced: the last is due at
        // 299/5,000 s, so the mix cannot end sooner (a closed loop on this
        // map would take well under a millisecond).
        let conn = MapConn::default();
        let plan = open_plan(Length::Ops(300), 4);
        let (_, result) = run_phase(vec![conn.clone(); 4], kind, &plan, 0, &[], Some(5_000))
            .await
            .unwrap();
        assert_eq!(result.ops, 300);
        assert_eq!(
            result.open.as_ref().map(|o| (o.due, o.unsent)),
            Some((300, 0))
        );
        assert!(result.secs >= 0.0598, "{} s", result.secs);
        let sent = conn.gets.load(Ordering::Relaxed) + conn.sets.load(Ordering::Relaxed);
        assert_eq!(sent, 300);
        // A closed loop has no open-loop figures.
        let (_, closed) = run_phase(vec![conn; 2], kind, &plan, 0, &[], None)
            .await
            .unwrap();
        assert!(closed.open.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_counts_the_wait_for_a_free_client_and_gives_up_late() {
        // One client, 20 ms per operation (at most 50/s), offered 1,000/s
        // for 100 ms: 100 operations due; it sends what it can until
        // OPEN_DRAIN after the span, each later than the last.
        let conn = MapConn {
            delay: Some(Duration::from_millis(20)),
            ..MapConn::default()
        };
        let plan = open_plan(
            Length::Timed {
                warmup: Duration::ZERO,
                measure: Duration::from_millis(100),
            },
            1,
        );
        let started = Instant::now();
        let (_, result) = run_phase(
            vec![conn.clone()],
            PhaseKind::Mix { read_pct: 50 },
            &plan,
            0,
            &[],
            Some(1_000),
        )
        .await
        .unwrap();
        let elapsed = started.elapsed();
        let open = result.open.as_ref().unwrap();
        // Every due operation was either sent and recorded or given up.
        assert_eq!(open.due, 100);
        assert_eq!(result.errors, 0);
        assert_eq!(result.ops + open.unsent, 100);
        assert!(open.unsent > 0 && result.ops > 0, "{result:?}");
        let sent = conn.gets.load(Ordering::Relaxed) + conn.sets.load(Ordering::Relaxed);
        assert_eq!(sent, result.ops);
        // All but the first were sent late.
        assert!(
            open.late + 1 >= result.ops,
            "{} late of {}",
            open.late,
            result.ops
        );
        // The system took 20 ms or a little more each time; the latency
        // from the due time grew to most of a second.
        assert!(open.service.value_at_quantile(0.5) >= 20_000);
        assert!(open.service.value_at_quantile(0.99) < 500_000);
        assert!(result.latency_us(0.99) >= 500_000, "{result:?}");
        assert!(open.lag.value_at_quantile(0.99) >= 400_000);
        // Bounded: the span, the drain and one last operation.
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }

    #[test]
    fn half_max_rates_take_half_of_each_mix_closed_loop() {
        let phases = vec![
            ("load".to_string(), phase(90_000, 500, 0.1, 0.1)),
            ("50/50".to_string(), phase(25_001, 500, 0.1, 0.1)),
            ("95/5".to_string(), phase(30_000, 500, 0.1, 0.1)),
        ];
        assert_eq!(
            half_max_rates("ringkv-1", &[50, 95], &phases).unwrap(),
            [(50, 12_500), (95, 15_000)]
        );
        let err = half_max_rates("ringkv-1", &[0], &phases).unwrap_err();
        assert!(err.to_string().contains("no closed-loop 0/100"), "{err}");
        let stalled = vec![("50/50".to_string(), phase(1, 500, 0.1, 0.1))];
        let err = half_max_rates("ringkv-3", &[50], &stalled).unwrap_err();
        assert!(err.to_string().contains("ringkv-3 50/50"), "{err}");
        assert_eq!(half_max_basis("ringkv-3"), "ringkv-3 max/2");
    }

    #[test]
    fn open_loop_and_cpu_options_plan() {
        let plan_of = |a: &[&str]| plan(&Args::parse_from([&["cluster"], a].concat()));
        assert_eq!(plan_of(&[]).unwrap().offered, Offered::Closed);
        assert_eq!(
            plan_of(&["--rate", "12000"]).unwrap().offered,
            Offered::Rate(12_000)
        );
        assert!(Args::try_parse_from(["cluster", "--rate", "0"]).is_err());
        assert!(Args::try_parse_from(["cluster", "--rate", "1000", "--half-max"]).is_err());
        let half = plan_of(&["--half-max", "--systems", "redis,ringkv-1,ringkv-3"]).unwrap();
        assert_eq!(half.offered, Offered::HalfMax);
        // redis must come first, and a ringkv system after it.
        assert!(plan_of(&["--half-max", "--systems", "ringkv-1,redis"]).is_err());
        assert!(plan_of(&["--half-max", "--systems", "redis"]).is_err());
        assert!(plan_of(&["--half-max", "--systems", "ringkv-1"]).is_err());
        assert!(plan_of(&["--rate", "100", "--driver", "redis-benchmark"]).is_err());
        assert!(plan_of(&["--half-max", "--driver", "both"]).is_ok());

        let here = CpuList::of_this_thread().unwrap();
        let first = here.cpus()[0].to_string();
        let pinned = plan_of(&["--server-cpus", &first]).unwrap();
        assert_eq!(
            pinned.server_mask().map(|c| c.to_string()),
            Some(first.clone())
        );
        assert_eq!(pinned.started_on, here);
        // Unpinned: the servers inherit; a pinned load generator leaves
        // them the CPUs the benchmark started on.
        assert_eq!(plan_of(&[]).unwrap().server_mask(), None);
        let loadgen = plan_of(&["--loadgen-cpus", &first]).unwrap();
        assert_eq!(loadgen.server_mask(), Some(&here));
        for bad in ["", "1-0", "0,,1", "x", "1024"] {
            let err = plan_of(&["--server-cpus", bad]).unwrap_err().to_string();
            assert!(
                err.starts_with("--server-cpus: bad CPU list"),
                "{bad:?}: {err}"
            );
        }
        let beyond = (here.cpus()[here.cpus().len() - 1] + 1).to_string();
        let err = plan_of(&["--loadgen-cpus", &beyond])
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not one this process may run on"), "{err}");
    }

    #[test]
    fn a_pinned_child_runs_on_its_cpus_only() {
        let dir = tempfile::tempdir().unwrap();
        let here = CpuList::of_this_thread().unwrap();
        let first = CpuList::parse(&here.cpus()[0].to_string()).unwrap();
        let allowed = |cpus: Option<&CpuList>| {
            let log = dir.path().join("status.log");
            let mut cmd = Command::new("cat");
            cmd.arg("/proc/self/status");
            let mut proc = Proc::spawn("cat", &mut cmd, &log, false, cpus).unwrap();
            assert!(proc.child.wait().unwrap().success());
            let status = std::fs::read_to_string(&log).unwrap();
            cpu_list::status_cpus_allowed(&status).unwrap().to_string()
        };
        assert_eq!(allowed(Some(&first)), first.to_string());
        assert_eq!(allowed(None), here.to_string());
    }

    #[test]
    fn the_open_loop_table_compares_p99s_at_the_same_offered_load() {
        let open_phase = |rate: u64, ops: u64, lat_us: u64, unsent: u64| {
            let mut p = phase(ops, lat_us, 0.05, 0.01);
            let mut open = OpenStats::new(rate, ops + unsent).unwrap();
            for _ in 0..ops {
                open.service.record(lat_us / 2).unwrap();
                open.lag.record(20).unwrap();
            }
            open.late = 3;
            open.unsent = unsent;
            p.open = Some(open);
            p
        };
        let run = |basis: &str, rate, ops, lat, unsent| OpenRun {
            basis: basis.into(),
            read_pct: 50,
            phase: "50/50".into(),
            result: open_phase(rate, ops, lat, unsent),
        };
        let system = |name: &str, open: Vec<OpenRun>| SystemReport {
            spec: SystemSpec::parse(name).unwrap(),
            name: name.into(),
            server_cpus: "0".into(),
            phases: vec![("50/50".into(), phase(20_000, 2_000, 0.4, 0.1))],
            open,
            rss: vec![],
        };
        let reports = [
            system(
                "redis",
                vec![
                    run("ringkv-1 max/2", 10_000, 10_000, 400, 0),
                    run("ringkv-3 max/2", 5_000, 5_000, 300, 0),
                ],
            ),
            system(
                "ringkv-1",
                vec![run("ringkv-1 max/2", 10_000, 10_000, 1_000, 0)],
            ),
            system(
                "ringkv-3",
                vec![run("ringkv-3 max/2", 5_000, 4_990, 1_200, 10)],
            ),
        ];
        let plan = small_plan(Length::Ops(10), vec![50]);
        let out = report(&plan, &reports);
        // The main table names the servers' CPUs.
        assert!(out.contains("| ringkv-1 | 0 | 50/50 | 20,000 |"), "{out}");
        assert!(
            out.contains("| ringkv-1 max/2 | ringkv-1 | 0 | 50/50 | 10,000 | 10,000 | 1.00 | 1.00 | 1.00 | 2.50 | 0.50 | 0.02 | 3 | 0 | 0 | 0 | 5 |"),
            "{out}"
        );
        assert!(
            out.contains(
                "| ringkv-1 max/2 | redis | 0 | 50/50 | 10,000 | 10,000 | 0.40 | 0.40 | 0.40 | - |"
            ),
            "{out}"
        );
        // Some operations never sent: the p99 is a lower bound.
        assert!(
            out.contains("| ringkv-3 max/2 | ringkv-3 | 0 | 50/50 | 5,000 | 4,990 | 1.20 | >=1.20 | >=1.20 | >=4.00 |"),
            "{out}"
        );
        assert!(
            out.contains("OPEN\tringkv-3\tringkv-3 max/2\t50/50\t5000\t4990\t"),
            "{out}"
        );
        // Without open-loop runs, no such table.
        let closed = [system("ringkv-1", vec![])];
        assert!(!report(&plan, &closed).contains("Open loop"));
    }
}
