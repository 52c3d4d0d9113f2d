//! `workload(#{...})`: concurrent clients reading and writing, the
//! throughput and latency they saw, and a check of the recorded history
//! for lost acknowledged writes.
//!
//! Each client owns the keys `k` with `k % clients == c`, so the writes to
//! one key come from one client, one after another, each carrying the
//! context its previous write returned (it replaces that write). Every
//! write's value is unique. After the run, every written key is read back:
//! if its last acknowledged write is `v`, the value read (or one of its
//! siblings) must be `v` or a write issued after `v` (one that failed may
//! still have landed). Anything else is a lost acknowledged write. The
//! read-back is at ALL (every replica's copy, or its fallback's, merged),
//! and a key read back without a candidate is read again for up to
//! [`RECHECK_FOR`] before it counts as lost: under a sloppy quorum a write
//! may sit on fallbacks until hinted handoff brings it home, which is late,
//! not lost. Run it after `heal()` for a verdict that does not depend on
//! faults still in force.
//!
//! `workload_start` runs the same clients in the background (while a
//! script kills, partitions or grows the cluster) and `workload_stop`
//! stops them and checks the history the same way.
//!
//! Besides the percentiles of the whole run, the result holds the
//! latencies in bins (`histogram`, about 30 of equal width on a log scale)
//! and the percentiles per interval of the run by when each request
//! ended (`timeline`), which `plot_latency` and `plot_percentiles` draw.
//!
//! Latencies are measured per request on the shell's runtime thread,
//! which also runs the clients; they include that thread's scheduling, so
//! they compare runs on one machine, not machines.
//!
//! On a simulation (`sim(...)`) `workload` runs on virtual time, on the
//! script's thread: the clients take turns, one request at a time in a
//! fixed order (client 0, 1, ..., then 0 again), each request running the
//! simulation until it is answered, so that a run replays exactly.
//! Latencies, `seconds` and throughput are in virtual time, and the
//! read-back's retries wait in virtual time too. Requests never overlap,
//! so a simulated workload measures the protocol's latencies, not
//! contention. `workload_start` is refused on a simulation: clients in
//! the background would race the script on the wall clock, and the run
//! would no longer replay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use rhai::{Dynamic, Map, INT};
use ringkv::protocol::{Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use serde_bytes::ByteBuf;

use crate::api::{fail, ApiResult};
use crate::backend::{Backend, Nodes};

/// How long a key's final read may keep retrying before a write counts
/// as lost.
pub const RECHECK_FOR: Duration = Duration::from_secs(10);

/// The timeout of each read-back. Short beside [`RECHECK_FOR`]: a read
/// that lost a frame to an injected drop is retried sooner, and a slow
/// machine gets several tries.
pub const READ_BACK_TIMEOUT_MS: u64 = 1000;

struct Params {
    ops: u64,
    keys: u64,
    read_ratio: f64,
    clients: u64,
    value_size: usize,
    bucket: String,
    seed: u64,
    /// The width of the timeline's intervals; `None`: about a twentieth of
    /// the run, rounded to 1, 2 or 5 times a power of ten ms.
    interval_ms: Option<u64>,
}

fn params(m: &Map) -> ApiResult<Params> {
    let mut p = Params {
        ops: 1000,
        keys: 100,
        read_ratio: 0.5,
        clients: 4,
        value_size: 32,
        bucket: "workload".into(),
        seed: 1,
        interval_ms: None,
    };
    let int = |v: &Dynamic, what: &str, min: i64, max: i64| -> ApiResult<u64> {
        match v.as_int() {
            Ok(n) if (min..=max).contains(&n) => Ok(n as u64),
            _ => Err(fail(format!(
                "workload: {what} must be a number from {min} to {max}"
            ))),
        }
    };
    for (k, v) in m {
        match k.as_str() {
            "ops" => p.ops = int(v, "ops", 1, 10_000_000)?,
            "keys" => p.keys = int(v, "keys", 1, 10_000_000)?,
            "clients" => p.clients = int(v, "clients", 1, 256)?,
            "value_size" => p.value_size = int(v, "value_size", 1, 1 << 20)? as usize,
            "seed" => p.seed = int(v, "seed", 0, i64::MAX)?,
            "interval_ms" => p.interval_ms = Some(int(v, "interval_ms", 1, 86_400_000)?),
            "bucket" => p.bucket = v.to_string(),
            "read_ratio" => {
                let r = v
                    .as_float()
                    .or_else(|_| v.as_int().map(|i| i as f64))
                    .map_err(|_| fail("workload: read_ratio must be a number from 0 to 1"))?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(fail("workload: read_ratio must be from 0 to 1"));
                }
                p.read_ratio = r;
            }
            other => {
                return Err(fail(format!(
                    "workload: unknown option {other:?}: ops, keys, read_ratio, clients, value_size, bucket, seed, interval_ms"
                )))
            }
        }
    }
    p.clients = p.clients.min(p.keys);
    Ok(p)
}

/// One write in the history.
struct Write {
    value: Vec<u8>,
    acked: bool,
}

/// What one client did.
#[derive(Default)]
struct ClientRun {
    /// Each request's (end, latency) in µs, the end since the run began.
    samples: Vec<(u64, u64)>,
    errors: u64,
    reads: u64,
    writes: BTreeMap<u64, Vec<Write>>,
    first_error: Option<String>,
}

fn key_name(k: u64) -> ByteBuf {
    ByteBuf::from(format!("w{k}").into_bytes())
}

/// One client: the keys it owns, the contexts of its last writes, and
/// what it did. The same requests in the same order whether it runs on
/// the shell's runtime or takes turns on a simulation.
struct Client {
    c: u64,
    ops: u64,
    seq: u64,
    rng: rand::rngs::StdRng,
    own: Vec<u64>,
    contexts: BTreeMap<u64, ByteBuf>,
    bucket: ByteBuf,
    read_ratio: f64,
    value_size: usize,
    run: ClientRun,
}

impl Client {
    /// Client `c` of `p`, making `ops` requests.
    fn new(c: u64, ops: u64, p: &Params) -> Client {
        Client {
            c,
            ops,
            seq: 0,
            rng: rand::rngs::StdRng::seed_from_u64(p.seed.wrapping_mul(7919).wrapping_add(c)),
            own: (0..p.keys).filter(|k| k % p.clients == c).collect(),
            contexts: BTreeMap::new(),
            bucket: ByteBuf::from(p.bucket.as_bytes().to_vec()),
            read_ratio: p.read_ratio,
            value_size: p.value_size,
            run: ClientRun::default(),
        }
    }

    /// Its next request and the key it is about; `None` once it made all
    /// its requests.
    fn next(&mut self) -> Option<(u64, Op)> {
        if self.seq >= self.ops {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        let k = self.own[self.rng.random_range(0..self.own.len())];
        let read = self.rng.random::<f64>() < self.read_ratio;
        let op = if read {
            Op::Get {
                bucket: self.bucket.clone(),
                key: key_name(k),
                options: ReadOptions::default(),
            }
        } else {
            let mut value = format!("c{}-s{seq}-", self.c).into_bytes();
            value.resize(self.value_size.max(value.len()), b'x');
            self.run.writes.entry(k).or_default().push(Write {
                value: value.clone(),
                acked: false,
            });
            Op::Put {
                bucket: self.bucket.clone(),
                key: key_name(k),
                value: ByteBuf::from(value),
                context: self.contexts.get(&k).cloned(),
                options: WriteOptions::default(),
            }
        };
        Some((k, op))
    }

    /// Records what its request about key `k` gave, after `latency`,
    /// answered `at` (since the run began).
    fn record(&mut self, k: u64, result: Result<Reply, String>, at: Duration, latency: Duration) {
        self.run
            .samples
            .push((at.as_micros() as u64, latency.as_micros() as u64));
        match result {
            Ok(Reply::Written { context, .. }) => {
                self.contexts.insert(k, context);
                if let Some(w) = self.run.writes.get_mut(&k).and_then(|w| w.last_mut()) {
                    w.acked = true;
                }
            }
            Ok(_) => self.run.reads += 1,
            Err(e) => {
                self.run.errors += 1;
                self.run.first_error.get_or_insert(e);
            }
        }
    }
}

/// The requests client `c` of `p` makes.
fn ops_of(p: &Params, c: u64) -> u64 {
    p.ops / p.clients + u64::from(c < p.ops % p.clients)
}

/// Executes `op` on `backend`; an op that could not even start is an
/// error like any other.
fn outcome(result: Result<ringkv::Result<Reply>, String>) -> Result<Reply, String> {
    match result {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e),
    }
}

async fn client(
    backend: Arc<dyn Backend>,
    mut cl: Client,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    run_started: Instant,
) -> ClientRun {
    while !stop.load(Ordering::Relaxed) {
        let Some((k, op)) = cl.next() else { break };
        let started = Instant::now();
        let result = match backend.start(None, op) {
            Ok(fut) => fut.await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        cl.record(k, result, run_started.elapsed(), started.elapsed());
        done.fetch_add(1, Ordering::Relaxed);
    }
    cl.run
}

/// What a workload's times are measured on: the wall clock, or a
/// simulation's virtual time.
enum Clock<'a> {
    /// The wall clock, from this instant.
    Wall(Instant),
    /// A simulation's clock.
    Virtual(&'a dyn Nodes),
}

impl Clock<'_> {
    fn now(&self) -> Duration {
        match self {
            Clock::Wall(start) => start.elapsed(),
            Clock::Virtual(nodes) => nodes.now(),
        }
    }

    fn sleep(&self, d: Duration) -> ApiResult<()> {
        match self {
            Clock::Wall(_) => {
                std::thread::sleep(d);
                Ok(())
            }
            Clock::Virtual(nodes) => nodes.sleep(d, &|| Ok(())).map_err(fail),
        }
    }
}

fn progress_bar(interactive: bool, ops: u64) -> Option<indicatif::ProgressBar> {
    interactive.then(|| {
        let bar = indicatif::ProgressBar::new(ops);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} ops {per_sec} {elapsed}")
        {
            bar.set_style(style);
        }
        bar
    })
}

/// Runs the workload on a simulation: the clients take turns, one
/// request at a time, on virtual time (see the module documentation).
fn run_simulated(
    backend: &Arc<dyn Backend>,
    nodes: &dyn Nodes,
    p: Params,
    interactive: bool,
    interrupt: &AtomicBool,
) -> ApiResult<Map> {
    let clock = Clock::Virtual(nodes);
    let started = clock.now();
    let mut clients: Vec<Client> = (0..p.clients)
        .map(|c| Client::new(c, ops_of(&p, c), &p))
        .collect();
    let bar = progress_bar(interactive, p.ops);
    let mut done = 0u64;
    loop {
        let mut any = false;
        for cl in &mut clients {
            if interrupt.load(Ordering::Relaxed) {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return Err(fail(crate::api::INTERRUPTED));
            }
            let Some((k, op)) = cl.next() else { continue };
            any = true;
            let at = clock.now();
            let result = outcome(backend.execute(None, op));
            let end = clock.now();
            cl.record(
                k,
                result,
                end.saturating_sub(started),
                end.saturating_sub(at),
            );
            done += 1;
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
        if !any {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let seconds = clock.now().saturating_sub(started).as_secs_f64();
    let runs = clients.into_iter().map(|c| c.run).collect();
    summarize(backend, &p, runs, done, seconds, &clock, interrupt)
}

/// A workload whose clients are running (`workload_start`), or have
/// run; [`Running::finish`] collects them and checks the history. Dropping
/// it stops the clients after their current request.
pub struct Running {
    backend: Arc<dyn Backend>,
    p: Arc<Params>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    rx: std::sync::mpsc::Receiver<ClientRun>,
    started: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts the workload's clients against `backend` and returns at once.
/// Refused on a simulation (see the module documentation).
pub fn start(backend: &Arc<dyn Backend>, m: &Map) -> ApiResult<Running> {
    if backend.simulated() {
        return Err(fail(
            "workload_start() is not available on a simulation: clients in the background would race the script on the wall clock and the run would no longer replay; run workload(...) between faults instead (on a simulation its clients take turns on virtual time)",
        ));
    }
    let p = Arc::new(params(m)?);
    let done = Arc::new(AtomicU64::new(0));
    // Tells the clients to stop: set by `Running::stop`, an interrupt, or
    // when the `Running` is dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let run_started = Instant::now();
    let running = Running {
        backend: Arc::clone(backend),
        p: Arc::clone(&p),
        done: Arc::clone(&done),
        stop: Arc::clone(&stop),
        rx,
        started: run_started,
    };
    for c in 0..p.clients {
        let cl = Client::new(c, ops_of(&p, c), &p);
        let (backend, done, stop, tx) = (
            Arc::clone(backend),
            Arc::clone(&done),
            Arc::clone(&stop),
            tx.clone(),
        );
        backend
            .runtime()
            .clone()
            .spawn(move || async move {
                let _ = tx.send(client(backend, cl, done, stop, run_started).await);
            })
            .map_err(fail)?;
    }
    Ok(running)
}

/// Runs the workload against `backend` and checks its history. Setting
/// `interrupt` stops the clients after their current request and throws.
/// On a simulation the clients take turns on virtual time.
pub fn run(
    backend: &Arc<dyn Backend>,
    m: &Map,
    interactive: bool,
    interrupt: &AtomicBool,
) -> ApiResult<Map> {
    if backend.simulated() {
        if let Some(nodes) = backend.nodes() {
            return run_simulated(backend, nodes, params(m)?, interactive, interrupt);
        }
    }
    start(backend, m)?.finish(interactive, interrupt)
}

impl Running {
    /// Requests done so far, reads and writes, failed or not.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Tells the clients to stop after their current request.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for every client to end (all its requests done, or stopped),
    /// then reads back every key written and returns the run's figures
    /// and verdict. `interactive` draws a progress bar.
    pub fn finish(self, interactive: bool, interrupt: &AtomicBool) -> ApiResult<Map> {
        let p = Arc::clone(&self.p);
        let bar = progress_bar(interactive, p.ops);
        let mut runs = Vec::new();
        while runs.len() < p.clients as usize {
            if interrupt.load(Ordering::Relaxed) {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                return Err(fail(crate::api::INTERRUPTED));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => runs.push(r),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(fail("workload: a client stopped without a result"))
                }
            }
            if let Some(b) = &bar {
                b.set_position(self.done());
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let ops = self.done();
        let clock = Clock::Wall(Instant::now());
        summarize(&self.backend, &p, runs, ops, seconds, &clock, interrupt)
    }
}

/// The figures of a run whose clients are done, and the check of its
/// history (the read-back runs on `clock`).
fn summarize(
    backend: &Arc<dyn Backend>,
    p: &Params,
    runs: Vec<ClientRun>,
    ops: u64,
    seconds: f64,
    clock: &Clock<'_>,
    interrupt: &AtomicBool,
) -> ApiResult<Map> {
    let mut hist = Histogram::<u64>::new(3).map_err(|e| fail(e.to_string()))?;
    let (mut errors, mut reads, mut first_error) = (0, 0, None);
    let mut writes: BTreeMap<u64, Vec<Write>> = BTreeMap::new();
    let mut samples = Vec::new();
    for r in runs {
        for (_, l) in &r.samples {
            hist.record((*l).max(1)).map_err(|e| fail(e.to_string()))?;
        }
        samples.extend(r.samples);
        errors += r.errors;
        reads += r.reads;
        if first_error.is_none() {
            first_error = r.first_error;
        }
        writes.extend(r.writes);
    }
    let acked: u64 = writes.values().flatten().filter(|w| w.acked).count() as u64;
    let (checked, unverified, lost) = check(backend, p, &writes, clock, interrupt)?;

    let ms = |q: f64| Dynamic::from_float(hist.value_at_quantile(q) as f64 / 1000.0);
    let mut out = Map::new();
    out.insert("ops".into(), Dynamic::from_int(ops as INT));
    out.insert(
        "ok".into(),
        Dynamic::from_int(ops.saturating_sub(errors) as INT),
    );
    out.insert("errors".into(), Dynamic::from_int(errors as INT));
    out.insert("reads".into(), Dynamic::from_int(reads as INT));
    out.insert("writes_acked".into(), Dynamic::from_int(acked as INT));
    out.insert("seconds".into(), Dynamic::from_float(seconds));
    out.insert(
        "throughput".into(),
        Dynamic::from_float(ops as f64 / seconds.max(1e-9)),
    );
    out.insert("p50_ms".into(), ms(0.5));
    out.insert("p90_ms".into(), ms(0.9));
    out.insert("p99_ms".into(), ms(0.99));
    out.insert(
        "max_ms".into(),
        Dynamic::from_float(hist.max() as f64 / 1000.0),
    );
    out.insert("keys_checked".into(), Dynamic::from_int(checked as INT));
    out.insert("unverified".into(), Dynamic::from_int(unverified as INT));
    out.insert("lost".into(), Dynamic::from_int(lost.len() as INT));
    out.insert(
        "lost_keys".into(),
        lost.into_iter()
            .map(|k| Dynamic::from(format!("w{k}")))
            .collect::<rhai::Array>()
            .into(),
    );
    out.insert(
        "first_error".into(),
        first_error.map_or(Dynamic::UNIT, Dynamic::from),
    );
    out.insert("histogram".into(), histogram(&hist)?.into());
    let interval = p.interval_ms.unwrap_or_else(|| auto_interval_ms(seconds));
    out.insert("timeline".into(), timeline(&samples, interval)?.into());
    Ok(out)
}

/// How many bins [`histogram`] aims at.
pub const HISTOGRAM_BINS: f64 = 30.0;

/// The latencies of `hist` (µs) in bins of equal width on a logarithmic
/// scale from its smallest to its largest value, about
/// [`HISTOGRAM_BINS`] of them (fewer when the values are close), each
/// `#{ from_ms, to_ms, count }`: `count` latencies above `from_ms` and at
/// most `to_ms` (to the histogram's precision, 3 significant digits);
/// the first bin holds the smallest. Empty for an empty histogram.
pub fn histogram(hist: &Histogram<u64>) -> ApiResult<rhai::Array> {
    if hist.is_empty() {
        return Ok(rhai::Array::new());
    }
    let (lo, hi) = (hist.min().max(1), hist.max().max(1));
    let factor = (hi as f64 / lo as f64).powf(1.0 / HISTOGRAM_BINS).max(1.1);
    let mut out = rhai::Array::new();
    let mut from = lo as f64 / factor;
    for step in hist.iter_log(lo, factor) {
        let to = step.value_iterated_to() as f64;
        // The iteration's first step ends just below the smallest value.
        if out.is_empty() && step.count_since_last_iteration() == 0 {
            from = to;
            continue;
        }
        let mut bin = Map::new();
        bin.insert("from_ms".into(), Dynamic::from_float(from / 1000.0));
        bin.insert("to_ms".into(), Dynamic::from_float(to / 1000.0));
        bin.insert(
            "count".into(),
            Dynamic::from_int(step.count_since_last_iteration() as INT),
        );
        out.push(bin.into());
        from = to;
    }
    Ok(out)
}

/// The timeline's interval for a run of `seconds`: about a twentieth of
/// it, rounded up to 1, 2 or 5 times a power of ten ms, at least 1 ms.
pub fn auto_interval_ms(seconds: f64) -> u64 {
    let want = (seconds * 1000.0 / 20.0).max(1.0);
    let mut unit = 1u64;
    loop {
        for m in [1, 2, 5] {
            if (unit * m) as f64 >= want {
                return unit * m;
            }
        }
        unit = unit.saturating_mul(10);
    }
}

/// The latencies of `samples` ((end, latency) in µs) per interval of
/// `interval_ms` by when the request ended: for every interval in which
/// some request ended, `#{ t_s, ops, p50_ms, p90_ms, p99_ms, max_ms }`,
/// `t_s` the end of the interval in seconds since the run began.
pub fn timeline(samples: &[(u64, u64)], interval_ms: u64) -> ApiResult<rhai::Array> {
    let width = interval_ms.max(1) * 1000;
    let mut by_interval: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for &(at, latency) in samples {
        let h = match by_interval.entry(at / width) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Histogram::<u64>::new(3).map_err(|e| fail(e.to_string()))?)
            }
        };
        h.record(latency.max(1)).map_err(|e| fail(e.to_string()))?;
    }
    let ms = |v: u64| Dynamic::from_float(v as f64 / 1000.0);
    Ok(by_interval
        .into_iter()
        .map(|(i, h)| {
            let mut row = Map::new();
            row.insert(
                "t_s".into(),
                Dynamic::from_float(((i + 1) * width) as f64 / 1e6),
            );
            row.insert("ops".into(), Dynamic::from_int(h.len() as INT));
            row.insert("p50_ms".into(), ms(h.value_at_quantile(0.5)));
            row.insert("p90_ms".into(), ms(h.value_at_quantile(0.9)));
            row.insert("p99_ms".into(), ms(h.value_at_quantile(0.99)));
            row.insert("max_ms".into(), ms(h.max()));
            Dynamic::from(row)
        })
        .collect())
}

/// Reads back every key with an acknowledged write; returns how many were
/// checked, how many could not be read at all before [`RECHECK_FOR`]
/// passed (unverified, not lost), and the keys whose acknowledged write a
/// successful read did not find.
fn check(
    backend: &Arc<dyn Backend>,
    p: &Params,
    writes: &BTreeMap<u64, Vec<Write>>,
    clock: &Clock<'_>,
    interrupt: &AtomicBool,
) -> ApiResult<(u64, u64, Vec<u64>)> {
    let mut checked = 0;
    let mut unverified = 0;
    let mut lost = Vec::new();
    for (k, ws) in writes {
        let Some(last) = ws.iter().rposition(|w| w.acked) else {
            continue;
        };
        checked += 1;
        let candidates: Vec<&[u8]> = ws[last..].iter().map(|w| w.value.as_slice()).collect();
        let deadline = clock.now() + RECHECK_FOR;
        let mut answered = false;
        for attempt in 0.. {
            if interrupt.load(Ordering::Relaxed) {
                return Err(fail(crate::api::INTERRUPTED));
            }
            // ALL first (every copy merged); QUORUM every other try, so that
            // one replica whose frames are being dropped cannot keep every
            // read from answering.
            let r = if attempt % 2 == 0 {
                Consistency::All
            } else {
                Consistency::Quorum
            };
            let op = Op::Get {
                bucket: ByteBuf::from(p.bucket.as_bytes().to_vec()),
                key: key_name(*k),
                options: ReadOptions {
                    r: Some(r),
                    timeout_ms: Some(READ_BACK_TIMEOUT_MS),
                    ..ReadOptions::default()
                },
            };
            let seen: Option<Vec<Vec<u8>>> = match backend.execute(None, op).map_err(fail)? {
                Ok(Reply::Object {
                    value, siblings, ..
                }) => Some(
                    value
                        .into_iter()
                        .map(|v| v.into_vec())
                        .chain(
                            siblings
                                .into_iter()
                                .filter_map(|s| s.value.map(|v| v.into_vec())),
                        )
                        .collect(),
                ),
                _ => None,
            };
            if let Some(seen) = &seen {
                answered = true;
                if seen.iter().any(|v| candidates.contains(&v.as_slice())) {
                    break;
                }
            }
            if clock.now() >= deadline {
                if answered {
                    let show =
                        |v: &[u8]| String::from_utf8_lossy(v).trim_end_matches('x').to_string();
                    tracing::warn!(
                        key = k,
                        history = ?ws.iter().map(|w| (show(&w.value), w.acked)).collect::<Vec<_>>(),
                        read = ?seen.unwrap_or_default().iter().map(|v| show(v)).collect::<Vec<_>>(),
                        "an acknowledged write was not read back"
                    );
                    lost.push(*k);
                } else {
                    unverified += 1;
                }
                break;
            }
            clock.sleep(Duration::from_millis(100))?;
        }
    }
    Ok((checked - unverified, unverified, lost))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(m: &Dynamic, k: &str) -> f64 {
        let m = m.read_lock::<Map>().expect("a map");
        let v = m.get(k).unwrap_or_else(|| panic!("no {k}"));
        v.as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .expect("a number")
    }

    #[test]
    fn the_histogram_bins_every_latency_once_in_increasing_bins() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        // 1000 latencies from 100 µs to 100 ms.
        for i in 0..1000u64 {
            h.record(100 + i * i / 10).unwrap();
        }
        let bins = histogram(&h).unwrap();
        assert!(bins.len() >= 20 && bins.len() <= 35, "{}", bins.len());
        let total: f64 = bins.iter().map(|b| f(b, "count")).sum();
        assert_eq!(total, 1000.0);
        for pair in bins.windows(2) {
            assert_eq!(f(&pair[0], "to_ms"), f(&pair[1], "from_ms"));
        }
        for b in &bins {
            assert!(f(b, "to_ms") > f(b, "from_ms"));
        }
        // The first bin holds the fastest request.
        assert!(f(&bins[0], "from_ms") < 0.1 && f(&bins[0], "to_ms") >= 0.1);
        assert!(f(&bins[0], "count") > 0.0);
        assert!(f(&bins[bins.len() - 1], "to_ms") >= 99.9);
        // Equal latencies: one bin.
        let mut same = Histogram::<u64>::new(3).unwrap();
        for _ in 0..10 {
            same.record(500).unwrap();
        }
        let bins = histogram(&same).unwrap();
        assert_eq!(bins.iter().map(|b| f(b, "count")).sum::<f64>(), 10.0);
        assert!(histogram(&Histogram::<u64>::new(3).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn the_timeline_has_each_intervals_percentiles() {
        // 100 ms intervals: 0..100 ms fast requests, none in the second,
        // slow ones in the third.
        let mut samples = Vec::new();
        for i in 0..100u64 {
            samples.push((i * 1000, 1000 + i)); // ~1 ms
            samples.push((200_000 + i * 1000, 50_000)); // 50 ms
        }
        samples.push((250_000, 400_000));
        let t = timeline(&samples, 100).unwrap();
        assert_eq!(t.len(), 2, "an interval without a request has no row");
        assert_eq!(f(&t[0], "t_s"), 0.1);
        assert_eq!(f(&t[0], "ops"), 100.0);
        assert!(
            (f(&t[0], "p50_ms") - 1.05).abs() < 0.01,
            "{}",
            f(&t[0], "p50_ms")
        );
        assert!(f(&t[0], "max_ms") < 1.2);
        assert_eq!(f(&t[1], "t_s"), 0.3);
        assert_eq!(f(&t[1], "ops"), 101.0);
        assert!((f(&t[1], "p50_ms") - 50.0).abs() < 0.1);
        assert!((f(&t[1], "max_ms") - 400.0).abs() < 0.5);
        assert!(f(&t[1], "p90_ms") <= f(&t[1], "p99_ms"));
    }

    #[test]
    fn the_default_interval_is_a_round_twentieth_of_the_run() {
        assert_eq!(auto_interval_ms(0.0), 1);
        assert_eq!(auto_interval_ms(0.5), 50);
        assert_eq!(auto_interval_ms(2.4), 200);
        assert_eq!(auto_interval_ms(3.0), 200);
        assert_eq!(auto_interval_ms(60.0), 5000);
    }
}
