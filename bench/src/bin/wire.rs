//! Frames per second and round-trip time over loopback TCP: ringkv's
//! `TcpTransport` against raw framed TCP, on the same frames, in one run.
//!
//! Run with `cargo run --release -p ringkv-bench --bin wire -- --quick`
//! (a few seconds) or without `--quick` for the full run; `--help` lists
//! the options.
//!
//! The peer is the ceiling: a plain tokio `TcpStream` pair with the same
//! 4-byte length-delimited framing (`ringkv::net::frame_codec`), sending
//! the envelope's CBOR bytes encoded once up front. It has no handshake, no
//! per-frame encode or decode, no queues and no checks, so the ratio
//! ringkv/raw is what the transport's own work costs: an encode per send,
//! the per-peer queue and link task, a decode and sender/recipient check per
//! frame, and the inbox channel.
//!
//! - Throughput: node 1 sends N pings to node 2 as fast as it can (a send
//!   refused with `QueueFull` is retried after `yield_now`, and counted);
//!   node 2's consumer counts them and checks that the sequence numbers
//!   arrive in order with nothing missing. The clock runs from the first
//!   send to the last receive. Raw: one task feeds the frames into a
//!   `FramedWrite`, another reads them from a `FramedRead`.
//! - Round trip: one ping at a time, node 2 answering each with a pong of
//!   the same size; p50 and p99 over the round trips. Raw: the echo side
//!   answers each frame with the pre-encoded pong.
//!
//! Connections are established (for ringkv: dialled and handshaken by one
//! warm-up frame) before any clock starts. Every figure is the median of
//! `--runs` runs, and every ratio the median of the per-run ratios; ringkv
//! and raw run back to back, alternating which goes first.
//!
//! The benchmark doubles as a correctness check: a lost, reordered or
//! malformed envelope, or transport counters that disagree with what was
//! sent, ends the run with a message and a non-zero exit status.

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use ringkv::config::DEFAULT_MAX_FRAME_BYTES;
use ringkv::net::frame_codec;
use ringkv::{
    codec, ClusterCa, ClusterSecret, Envelope, Inbox, Message, NetStats, NodeId, PeerSecurity,
    TcpConfig, TcpTransport, Transport,
};
use ringkv_bench::summary::{median, percentile};
use ringkv_bench::workload::{pattern, ping_envelope, pong_envelope, PING_PAYLOAD_SIZES, PING_SEQ};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, FramedRead, FramedWrite};

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

const SENDER: NodeId = NodeId(1);
const RECEIVER: NodeId = NodeId(2);
const CLUSTER: &str = "wire-bench";
/// Only the two endpoints of this process share it.
const SECRET: &[u8] = b"ringkv wire benchmark, loopback only";
/// A measurement that makes no progress for this long has lost frames (or
/// the transport is stuck); either way the run fails instead of hanging.
const STALL: Duration = Duration::from_secs(10);

/// Frames per throughput measurement, and round trips per latency
/// measurement, without `--quick`.
const FULL_FRAMES_SMALL: u64 = 200_000;
const FULL_FRAMES_4K: u64 = 50_000;
const FULL_ROUND_TRIPS: u64 = 10_000;
/// `--quick` divides the counts by this.
const QUICK_DIVISOR: u64 = 10;

/// Frames per second and round-trip time over loopback TCP: ringkv's TCP
/// transport against raw length-delimited TCP carrying the same frames.
#[derive(Parser, Debug)]
#[command(name = "wire")]
struct Args {
    /// A tenth of the frames and round trips: a few seconds in all.
    #[arg(long)]
    quick: bool,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    runs: u64,
    /// Frames per throughput measurement, for every payload size [default:
    /// 200,000 for 16 B and 100 B payloads, 50,000 for 4096 B; a tenth of
    /// that with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    frames: Option<u64>,
    /// Round trips per latency measurement [default: 10,000; 1,000 with
    /// --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    round_trips: Option<u64>,
    /// ringkv's links without TLS (as `ringkv-node --insecure-plaintext-peers`).
    /// By default they are TLS 1.3 with mutual certificates, as a node runs
    /// them; run both ways to get what TLS costs.
    #[arg(long)]
    plaintext: bool,
}

/// One payload size and what is sent for it.
struct Workload {
    name: String,
    payload_len: usize,
    frames: u64,
    round_trips: u64,
    /// The encoded ping (and pong) envelope: what raw TCP sends, and the
    /// size of every frame ringkv sends.
    ping_frame: Bytes,
    pong_frame: Bytes,
    /// ringkv's links without TLS (`--plaintext`).
    plaintext: bool,
}

/// One throughput measurement.
struct Throughput {
    frames: u64,
    elapsed: Duration,
}

impl Throughput {
    fn frames_per_sec(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }
}

/// Round-trip times of one latency measurement, in ns, ascending.
struct RoundTrips(Vec<u64>);

impl RoundTrips {
    fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.0, p).unwrap_or(0) as f64 / 1_000.0
    }
}

/// Medians over the runs of one workload. The ratios are medians of the
/// per-run ratios: ringkv and raw of one run are measured back to back, so
/// their ratio drifts less with the machine's load than either figure.
struct Summary {
    ringkv_fps: f64,
    raw_fps: f64,
    fps_ratio: f64,
    ringkv_rtt: (f64, f64),
    raw_rtt: (f64, f64),
    rtt_p50_ratio: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wire: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nwire: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let workloads = workloads(&args)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "wire: loopback TCP, both ends in this process; ringkv links {}; {cores} CPUs, tokio \
         multi-thread runtime; median of {} run(s){}",
        if args.plaintext {
            "plaintext"
        } else {
            "TLS 1.3"
        },
        args.runs,
        if args.quick { "; --quick" } else { "" }
    );
    let mut summaries = Vec::new();
    for w in &workloads {
        println!(
            "\n{}: frame {} B, {} frames, {} round trips",
            w.name,
            w.ping_frame.len(),
            thousands(w.frames),
            thousands(w.round_trips)
        );
        let (mut ringkv_fps, mut raw_fps) = (Vec::new(), Vec::new());
        let (mut ringkv_rtt, mut raw_rtt) = (Vec::new(), Vec::new());
        for run in 0..args.runs {
            // Alternate which goes first, so that neither always runs on a
            // machine warmed (or disturbed) by the other.
            let ringkv_first = run % 2 == 0;
            let (ringkv, stats, raw) = if ringkv_first {
                let (t, s) = ringkv_throughput(w).await?;
                (t, s, raw_throughput(w).await?)
            } else {
                let raw = raw_throughput(w).await?;
                let (t, s) = ringkv_throughput(w).await?;
                (t, s, raw)
            };
            let (ringkv_rt, raw_rt) = if ringkv_first {
                (ringkv_round_trips(w).await?, raw_round_trips(w).await?)
            } else {
                let raw = raw_round_trips(w).await?;
                (ringkv_round_trips(w).await?, raw)
            };
            println!(
                "  run {}/{}: throughput ringkv {} frames/s, raw {} frames/s; \
                 RTT p50/p99 ringkv {:.1}/{:.1} us, raw {:.1}/{:.1} us",
                run + 1,
                args.runs,
                thousands(ringkv.frames_per_sec() as u64),
                thousands(raw.frames_per_sec() as u64),
                ringkv_rt.percentile_us(50.0),
                ringkv_rt.percentile_us(99.0),
                raw_rt.percentile_us(50.0),
                raw_rt.percentile_us(99.0),
            );
            println!(
                "    ringkv NetStats: sender frames_sent {} refused_queue_full {} frames_lost {}; \
                 receiver frames_received {} bad_frames {} (includes 1 warm-up frame)",
                stats.0.frames_sent,
                stats.0.refused_queue_full,
                stats.0.frames_lost,
                stats.1.frames_received,
                stats.1.bad_frames,
            );
            ringkv_fps.push(ringkv.frames_per_sec());
            raw_fps.push(raw.frames_per_sec());
            ringkv_rtt.push((ringkv_rt.percentile_us(50.0), ringkv_rt.percentile_us(99.0)));
            raw_rtt.push((raw_rt.percentile_us(50.0), raw_rt.percentile_us(99.0)));
        }
        let fps_ratios: Vec<f64> = ringkv_fps
            .iter()
            .zip(&raw_fps)
            .map(|(r, w)| r / w)
            .collect();
        let rtt_ratios: Vec<f64> = ringkv_rtt
            .iter()
            .zip(&raw_rtt)
            .map(|(r, w)| r.0 / w.0)
            .collect();
        summaries.push(Summary {
            ringkv_fps: median_of(&ringkv_fps),
            raw_fps: median_of(&raw_fps),
            fps_ratio: median_of(&fps_ratios),
            ringkv_rtt: median_pair(&ringkv_rtt),
            raw_rtt: median_pair(&raw_rtt),
            rtt_p50_ratio: median_of(&rtt_ratios),
        });
    }
    print!("\n{}", table(&workloads, &summaries, args.runs));
    println!("All frames arrived, in order, in every ringkv and raw run.");
    Ok(())
}

fn workloads(args: &Args) -> Result<Vec<Workload>> {
    let divisor = if args.quick { QUICK_DIVISOR } else { 1 };
    let mut out = Vec::new();
    for payload_len in PING_PAYLOAD_SIZES {
        let default_frames = if payload_len > 1024 {
            FULL_FRAMES_4K
        } else {
            FULL_FRAMES_SMALL
        };
        let frames = args.frames.unwrap_or(default_frames / divisor);
        // Every sequence number must need the same 4-byte CBOR integer as
        // PING_SEQ, so that every ringkv frame is as long as the raw one.
        if PING_SEQ + frames.max(args.round_trips.unwrap_or(0) + 1) > u64::from(u32::MAX) {
            return Err("too many frames for 4-byte sequence numbers".into());
        }
        out.push(Workload {
            name: format!("ping_{payload_len}B"),
            payload_len,
            frames,
            round_trips: args.round_trips.unwrap_or(FULL_ROUND_TRIPS / divisor),
            ping_frame: Bytes::from(codec::encode(&ping_envelope(payload_len))?),
            pong_frame: Bytes::from(codec::encode(&pong_envelope(payload_len))?),
            plaintext: args.plaintext,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- ringkv

/// Two endpoints on 127.0.0.1 that know each other's address.
async fn ringkv_pair(plaintext: bool) -> Result<(TcpTransport, Inbox, TcpTransport, Inbox)> {
    let secret = ClusterSecret::new(SECRET)?;
    let ca = ClusterCa::generate(CLUSTER)?;
    let config = |node| -> Result<TcpConfig> {
        let security = if plaintext {
            PeerSecurity::InsecurePlaintext
        } else {
            ca.security_for(node)?
        };
        Ok(TcpConfig::new(
            node,
            CLUSTER,
            secret.clone(),
            security,
            "127.0.0.1:0",
        ))
    };
    let (a, a_inbox) = TcpTransport::bind(config(SENDER)?).await?;
    let (b, b_inbox) = TcpTransport::bind(config(RECEIVER)?).await?;
    a.learn_peer(RECEIVER, &b.local_addr().to_string())?;
    b.learn_peer(SENDER, &a.local_addr().to_string())?;
    Ok((a, a_inbox, b, b_inbox))
}

fn ping(seq: u64, payload: &[u8]) -> Envelope {
    Envelope::new(
        SENDER,
        RECEIVER,
        Message::Ping {
            seq,
            payload: payload.to_vec(),
        },
    )
}

/// Sends the envelope `make` builds, retrying after a yield while the
/// peer's queue is full; returns the number of retries. `send` consumes the
/// envelope even when it refuses it, so each attempt builds it anew.
async fn send_retrying(transport: &TcpTransport, make: impl Fn() -> Envelope) -> Result<u64> {
    let mut retries = 0;
    loop {
        match transport.send(make()) {
            Ok(()) => return Ok(retries),
            Err(ringkv::Error::QueueFull { .. }) => {
                retries += 1;
                tokio::task::yield_now().await;
            }
            Err(e) => return Err(format!("send failed after {retries} retries: {e}").into()),
        }
    }
}

/// Receives one envelope, or fails after [`STALL`].
async fn recv_within(inbox: &mut Inbox, what: &str) -> Result<Envelope> {
    match tokio::time::timeout(STALL, inbox.recv()).await {
        Ok(Some(envelope)) => Ok(envelope),
        Ok(None) => Err(format!("{what}: the inbox closed").into()),
        Err(_) => Err(format!("{what}: nothing arrived within {STALL:?}").into()),
    }
}

/// Checks that `msg` is the ping numbered `seq` with the workload's
/// payload length.
fn check_ping(msg: &Message, seq: u64, payload_len: usize, index: u64) -> Result<()> {
    match msg {
        Message::Ping { seq: got, payload } if *got == seq && payload.len() == payload_len => {
            Ok(())
        }
        Message::Ping { seq: got, .. } if *got != seq => Err(format!(
            "lost or reordered: frame {index} carries seq {got}, expected {seq}"
        )
        .into()),
        Message::Ping { payload, .. } => Err(format!(
            "frame {index}: payload of {} bytes, expected {payload_len}",
            payload.len()
        )
        .into()),
        other => Err(format!("frame {index}: expected a ping, got a {}", other.kind()).into()),
    }
}

/// Shuts both endpoints down and returns their counters, which are final
/// only once every task of the endpoint has ended.
async fn shutdown_both(a: &TcpTransport, b: &TcpTransport) -> (NetStats, NetStats) {
    tokio::join!(a.shutdown(), b.shutdown());
    (a.stats(), b.stats())
}

async fn ringkv_throughput(w: &Workload) -> Result<(Throughput, (NetStats, NetStats))> {
    let (a, _a_inbox, b, mut b_inbox) = ringkv_pair(w.plaintext).await?;
    // Warm-up: the first frame makes node 1 dial and handshake.
    let payload = pattern(w.payload_len);
    send_retrying(&a, || ping(0, &payload)).await?;
    recv_within(&mut b_inbox, "ringkv warm-up").await?;

    let n = w.frames;
    let payload_len = w.payload_len;
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let receiver: JoinHandle<Result<Instant>> = tokio::spawn({
        let received = received.clone();
        async move {
            for i in 0..n {
                let Some(envelope) = b_inbox.recv().await else {
                    return Err(format!("inbox closed after {i} of {n} frames").into());
                };
                check_ping(&envelope.msg, PING_SEQ + i, payload_len, i)?;
                received.store(i + 1, Ordering::Relaxed);
            }
            Ok(Instant::now())
        }
    });
    let sender: JoinHandle<Result<(Instant, u64)>> = tokio::spawn({
        let (a, sent) = (a.clone(), sent.clone());
        async move {
            let start = Instant::now();
            let mut retries = 0;
            for i in 0..n {
                retries += send_retrying(&a, || ping(PING_SEQ + i, &payload)).await?;
                sent.store(i + 1, Ordering::Relaxed);
            }
            Ok((start, retries))
        }
    });
    let sent_result = watch("ringkv sender", &sent, n, sender).await;
    let received_result = match &sent_result {
        Ok(_) => watch("ringkv receiver", &received, n, receiver).await,
        Err(_) => {
            receiver.abort();
            Err("not received".into())
        }
    };
    let stats = shutdown_both(&a, &b).await;
    let (start, retries) = sent_result?;
    let end = received_result?;

    let (tx, rx) = stats;
    let expect = n + 1; // and the warm-up frame
    let mut problems = String::new();
    if tx.frames_sent != expect {
        let _ = write!(
            problems,
            " sender frames_sent {} != {expect};",
            tx.frames_sent
        );
    }
    if rx.frames_received != expect {
        let _ = write!(
            problems,
            " receiver frames_received {} != {expect};",
            rx.frames_received
        );
    }
    if tx.refused_queue_full != retries {
        let _ = write!(
            problems,
            " sender refused_queue_full {} != {retries} retries;",
            tx.refused_queue_full
        );
    }
    if tx.frames_lost + rx.frames_lost + tx.bad_frames + rx.bad_frames > 0 {
        let _ = write!(
            problems,
            " frames lost or bad: sender {tx:?}, receiver {rx:?};"
        );
    }
    if !problems.is_empty() {
        return Err(format!("{}: ringkv counters disagree:{problems}", w.name).into());
    }
    Ok((
        Throughput {
            frames: n,
            elapsed: end.saturating_duration_since(start),
        },
        stats,
    ))
}

async fn ringkv_round_trips(w: &Workload) -> Result<RoundTrips> {
    let (a, mut a_inbox, b, mut b_inbox) = ringkv_pair(w.plaintext).await?;
    let echo: JoinHandle<Result<()>> = tokio::spawn({
        let b = b.clone();
        async move {
            while let Some(envelope) = b_inbox.recv().await {
                if let Message::Ping { seq, payload } = envelope.msg {
                    let pong = || {
                        Envelope::new(
                            RECEIVER,
                            SENDER,
                            Message::Pong {
                                seq,
                                payload: payload.clone(),
                            },
                        )
                    };
                    send_retrying(&b, pong).await?;
                }
            }
            Ok(())
        }
    });
    let rounds = w.round_trips;
    let payload_len = w.payload_len;
    let done = Arc::new(AtomicU64::new(0));
    let client: JoinHandle<Result<Vec<u64>>> = tokio::spawn({
        let (a, done) = (a.clone(), done.clone());
        async move {
            let payload = pattern(payload_len);
            let mut samples = Vec::with_capacity(rounds as usize);
            // Round 0 is the warm-up: it dials and handshakes.
            for i in 0..=rounds {
                let seq = PING_SEQ + i;
                let t0 = Instant::now();
                send_retrying(&a, || ping(seq, &payload)).await?;
                let envelope = recv_within(&mut a_inbox, "ringkv round trip").await?;
                let rtt = t0.elapsed();
                match envelope.msg {
                    Message::Pong { seq: got, payload }
                        if got == seq && payload.len() == payload_len => {}
                    other => {
                        return Err(
                            format!("round trip {i}: expected pong {seq}, got {other:?}").into(),
                        )
                    }
                }
                if i > 0 {
                    samples.push(rtt.as_nanos() as u64);
                }
                done.store(i, Ordering::Relaxed);
            }
            Ok(samples)
        }
    });
    let result = watch("ringkv round trips", &done, rounds, client).await;
    echo.abort();
    let echo_result = echo.await;
    shutdown_both(&a, &b).await;
    let mut samples = match (result, echo_result) {
        (Ok(samples), _) => samples,
        // The echo side failed first: its error is the cause.
        (Err(e), Ok(Err(echo_err))) => return Err(format!("{e} (echo: {echo_err})").into()),
        (Err(e), _) => return Err(e),
    };
    samples.sort_unstable();
    Ok(RoundTrips(samples))
}

// ---------------------------------------------------------------- raw TCP

/// A connected pair of sockets on 127.0.0.1, with `TCP_NODELAY` as the
/// transport sets it.
async fn raw_pair() -> Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.map_err(|e| format!("raw connect to {addr}: {e}"))?;
    let (server, _) = accepted.map_err(|e| format!("raw accept on {addr}: {e}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

async fn raw_throughput(w: &Workload) -> Result<Throughput> {
    let (client, server) = raw_pair().await?;
    let n = w.frames;
    let frame_len = w.ping_frame.len();
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let receiver: JoinHandle<Result<Instant>> = tokio::spawn({
        let received = received.clone();
        async move {
            let mut reader = FramedRead::new(server, frame_codec(DEFAULT_MAX_FRAME_BYTES));
            for i in 0..n {
                match reader.next().await {
                    Some(Ok(frame)) if frame.len() == frame_len => {}
                    Some(Ok(frame)) => {
                        return Err(format!(
                            "raw frame {i}: {} bytes, expected {frame_len}",
                            frame.len()
                        )
                        .into())
                    }
                    Some(Err(e)) => return Err(format!("raw read of frame {i}: {e}").into()),
                    None => return Err(format!("raw: closed after {i} of {n} frames").into()),
                }
                received.store(i + 1, Ordering::Relaxed);
            }
            Ok(Instant::now())
        }
    });
    let sender: JoinHandle<Result<Instant>> = tokio::spawn({
        let (frame, sent) = (w.ping_frame.clone(), sent.clone());
        async move {
            let mut writer = FramedWrite::new(client, frame_codec(DEFAULT_MAX_FRAME_BYTES));
            let start = Instant::now();
            for i in 0..n {
                // `feed` writes to the socket whenever the buffer passes
                // its high-water mark; one flush at the end.
                writer.feed(frame.clone()).await?;
                sent.store(i + 1, Ordering::Relaxed);
            }
            SinkExt::<Bytes>::flush(&mut writer).await?;
            Ok(start)
        }
    });
    let start = watch("raw sender", &sent, n, sender).await?;
    let end = watch("raw receiver", &received, n, receiver).await?;
    Ok(Throughput {
        frames: n,
        elapsed: end.saturating_duration_since(start),
    })
}

async fn raw_round_trips(w: &Workload) -> Result<RoundTrips> {
    let (client, server) = raw_pair().await?;
    let echo: JoinHandle<Result<()>> = tokio::spawn({
        let pong = w.pong_frame.clone();
        async move {
            let mut framed = Framed::new(server, frame_codec(DEFAULT_MAX_FRAME_BYTES));
            while let Some(frame) = framed.next().await {
                frame?;
                framed.send(pong.clone()).await?;
            }
            Ok(())
        }
    });
    let rounds = w.round_trips;
    let done = Arc::new(AtomicU64::new(0));
    let client: JoinHandle<Result<Vec<u64>>> = tokio::spawn({
        let (ping, pong_len, done) = (w.ping_frame.clone(), w.pong_frame.len(), done.clone());
        async move {
            let mut framed = Framed::new(client, frame_codec(DEFAULT_MAX_FRAME_BYTES));
            let mut samples = Vec::with_capacity(rounds as usize);
            // Round 0 is the warm-up, as for ringkv.
            for i in 0..=rounds {
                let t0 = Instant::now();
                framed.send(ping.clone()).await?;
                match framed.next().await {
                    Some(Ok(frame)) if frame.len() == pong_len => {}
                    Some(Ok(frame)) => {
                        return Err(format!(
                            "raw round trip {i}: {} bytes, expected {pong_len}",
                            frame.len()
                        )
                        .into())
                    }
                    Some(Err(e)) => return Err(format!("raw round trip {i}: {e}").into()),
                    None => return Err(format!("raw round trip {i}: connection closed").into()),
                }
                if i > 0 {
                    samples.push(t0.elapsed().as_nanos() as u64);
                }
                done.store(i, Ordering::Relaxed);
            }
            Ok(samples)
        }
    });
    // Dropping the client's socket (when its task ends) ends the echo.
    let result = watch("raw round trips", &done, rounds, client).await;
    echo.abort();
    let _ = echo.await;
    let mut samples = result?;
    samples.sort_unstable();
    Ok(RoundTrips(samples))
}

// ---------------------------------------------------------------- running

/// Awaits `task`, failing if `progress` stands still for [`STALL`]: a
/// lost frame shows up as a receiver that never finishes, and must end the
/// run with a message, not hang it. One timer a second, nothing per frame.
async fn watch<T>(
    what: &str,
    progress: &AtomicU64,
    total: u64,
    task: JoinHandle<Result<T>>,
) -> Result<T> {
    let mut task = std::pin::pin!(task);
    let mut last = progress.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    loop {
        tokio::select! {
            joined = &mut task => {
                return match joined {
                    Ok(result) => result.map_err(|e| format!("{what}: {e}").into()),
                    Err(e) => Err(format!("{what}: the task failed: {e}").into()),
                };
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    still_since = Instant::now();
                } else if still_since.elapsed() >= STALL {
                    task.abort();
                    return Err(format!(
                        "{what}: stuck at {now} of {total} for {STALL:?}: frames were lost \
                         or the connection stalled"
                    )
                    .into());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- report

fn median_of(values: &[f64]) -> f64 {
    median(values).unwrap_or(f64::NAN)
}

fn median_pair(values: &[(f64, f64)]) -> (f64, f64) {
    let firsts: Vec<f64> = values.iter().map(|v| v.0).collect();
    let seconds: Vec<f64> = values.iter().map(|v| v.1).collect();
    (median_of(&firsts), median_of(&seconds))
}

/// The summary as a Markdown table, readable on a terminal as it is.
fn table(workloads: &[Workload], summaries: &[Summary], runs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {runs} run(s); each ratio is the median of the per-run ratios.\n\
         Throughput: frames/s and MB/s (10^6 bytes of frame, without the 4-byte length \
         prefix). RTT: p50/p99 in microseconds."
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| workload | frame | ringkv frames/s | raw frames/s | ratio ringkv/raw | ringkv MB/s | raw MB/s | ringkv RTT p50/p99 us | raw RTT p50/p99 us | RTT p50 ratio |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, s) in workloads.iter().zip(summaries) {
        let mb = |fps: f64| fps * w.ping_frame.len() as f64 / 1e6;
        let _ = writeln!(
            out,
            "| {} | {} B | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} |",
            w.name,
            w.ping_frame.len(),
            thousands(s.ringkv_fps as u64),
            thousands(s.raw_fps as u64),
            s.fps_ratio,
            mb(s.ringkv_fps),
            mb(s.raw_fps),
            s.ringkv_rtt.0,
            s.ringkv_rtt.1,
            s.raw_rtt.0,
            s.raw_rtt.1,
            s.rtt_p50_ratio,
        );
    }
    out
}

/// `1234567` as `1,234,567`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn options_parse() {
        let args = Args::try_parse_from(["wire", "--quick", "--runs", "5"]).unwrap();
        assert!(args.quick);
        assert_eq!(args.runs, 5);
        assert!(Args::try_parse_from(["wire", "--runs", "0"]).is_err());
        let w = workloads(&args).unwrap();
        let frames: Vec<u64> = w.iter().map(|w| w.frames).collect();
        assert_eq!(frames, [20_000, 20_000, 5_000]);
    }
}
