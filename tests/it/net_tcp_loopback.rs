//! The TCP transport over real loopback sockets.
//!
//! Proves what `ringkv::net::tcp` promises: thousands of envelopes between
//! three endpoints arrive complete and in per-link order over exactly one
//! connection per pair; simultaneous dials settle on one connection; wrong
//! secrets, clusters and versions are refused with a clear log line; an
//! oversized frame closes only the connection that sent it; a peer process
//! that is SIGKILLed and restarted is reconnected; full queues, unknown
//! peers and shutdown give the errors they document.
//!
//! Every wait is bounded by a timeout, and nothing asserts that something
//! was fast: only what arrived, in what order, and what was counted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use ringkv::net::handshake::{self, Identity};
use ringkv::net::{frame_codec, tcp::TcpTransport};
use ringkv::{ClusterSecret, Envelope, Error, Inbox, Message, NodeId, TcpConfig, Transport};
use tokio::time::timeout;
use tokio_util::codec::Framed;

const SECRET: &[u8] = b"loopback test cluster secret";
const WAIT: Duration = Duration::from_secs(30);

/// These tests are about framing, the cluster handshake, refusals and
/// reconnection, and several speak the protocol by hand as a rogue peer or
/// run an endpoint in a child process; so they run without TLS. TLS on
/// these same links is tested in `net_tcp_tls.rs`.
fn config(node: u64, cluster: &str, secret: &[u8], listen: &str) -> TcpConfig {
    let mut cfg = TcpConfig::new(
        NodeId(node),
        cluster,
        ClusterSecret::new(secret.to_vec()).unwrap(),
        ringkv::PeerSecurity::InsecurePlaintext,
        listen,
    );
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(200);
    cfg
}

async fn endpoint(node: u64) -> (TcpTransport, Inbox) {
    TcpTransport::bind(config(node, "test", SECRET, "127.0.0.1:0"))
        .await
        .unwrap()
}

fn ping(from: u64, to: u64, seq: u64) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Ping {
            seq,
            payload: seq.to_be_bytes().to_vec(),
        },
    )
}

/// Sends, retrying while the queue is full (the documented, retryable
/// refusal). Any other error fails the test.
async fn send_retrying(t: &TcpTransport, env: Envelope) {
    loop {
        match t.send(env.clone()) {
            Ok(()) => return,
            Err(e @ Error::QueueFull { .. }) => {
                assert!(e.is_retryable());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

async fn recv(inbox: &mut Inbox) -> Envelope {
    timeout(WAIT, inbox.recv())
        .await
        .expect("an envelope within the wait")
        .expect("the inbox is open")
}

/// Receives `count` pings and checks that each sender's sequence numbers
/// arrive in order without gaps or duplicates.
async fn receive_in_order(inbox: &mut Inbox, count: usize) -> HashMap<NodeId, u64> {
    let mut next: HashMap<NodeId, u64> = HashMap::new();
    for _ in 0..count {
        let env = recv(inbox).await;
        let Message::Ping { seq, payload } = env.msg else {
            panic!("expected a ping, got {:?}", env.msg);
        };
        let expected = next.entry(env.from).or_insert(0);
        assert_eq!(seq, *expected, "out of order from {}", env.from);
        assert_eq!(payload, seq.to_be_bytes());
        *expected += 1;
    }
    next
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_exchange_thousands_of_envelopes_in_order() {
    const PER_LINK: u64 = 3_000;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(endpoint(id).await);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|(t, _)| t.local_addr().to_string())
        .collect();
    for (i, (t, _)) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                t.learn_peer(NodeId(j as u64 + 1), addr).unwrap();
            }
        }
    }
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut keep = Vec::new();
    for (i, (t, mut inbox)) in nodes.into_iter().enumerate() {
        let me = i as u64 + 1;
        receivers.push(tokio::spawn(async move {
            receive_in_order(&mut inbox, (2 * PER_LINK) as usize).await
        }));
        let sender = t.clone();
        senders.push(tokio::spawn(async move {
            // Interleave the two destinations so both links are busy at once.
            for seq in 0..PER_LINK {
                for to in (1..=3).filter(|&to| to != me) {
                    send_retrying(&sender, ping(me, to, seq)).await;
                }
            }
        }));
        keep.push(t);
    }
    for s in senders {
        timeout(WAIT, s).await.expect("senders finish").unwrap();
    }
    for (i, r) in receivers.into_iter().enumerate() {
        let counts = timeout(WAIT, r).await.expect("receivers finish").unwrap();
        assert_eq!(counts.len(), 2, "node {} heard from both peers", i + 1);
        assert!(counts.values().all(|&n| n == PER_LINK), "{counts:?}");
    }
    let connections: u64 = keep.iter().map(|t| t.stats().connections).sum();
    assert_eq!(
        connections, 6,
        "three pairs, one connection each, counted at both ends"
    );
    for t in keep {
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pair_uses_one_connection_even_when_both_dial_at_once() {
    for round in 0..10 {
        let (a, mut a_in) = endpoint(1).await;
        let (b, mut b_in) = endpoint(2).await;
        a.learn_peer(NodeId(2), &b.local_addr().to_string())
            .unwrap();
        b.learn_peer(NodeId(1), &a.local_addr().to_string())
            .unwrap();
        // Both sides queue at once, so both links dial at once.
        for seq in 0..100 {
            a.send(ping(1, 2, seq)).unwrap();
            b.send(ping(2, 1, seq)).unwrap();
        }
        receive_in_order(&mut a_in, 100).await;
        receive_in_order(&mut b_in, 100).await;
        let connections = a.stats().connections + b.stats().connections;
        assert_eq!(
            connections, 2,
            "round {round}: one connection, counted once at each end"
        );
        assert!(a.is_connected(NodeId(2)) && b.is_connected(NodeId(1)));
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// A `tracing` writer that keeps what is logged, to check log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `body` on a single-threaded runtime with logs captured, so that the
/// transport's tasks log into the capture too.
fn with_captured_logs<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) -> String {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body());
    logs.text()
}

/// Sends pings from `bad` to `good` for a while and checks that none
/// arrives and that both sides counted failed handshakes.
async fn refused_pair(good: (TcpTransport, Inbox), bad: (TcpTransport, Inbox), bad_id: u64) {
    let (good, mut good_in) = good;
    let (bad, _bad_in) = bad;
    bad.learn_peer(good.local_id(), &good.local_addr().to_string())
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seq = 0;
    while good.stats().handshake_failures < 2 || bad.stats().handshake_failures < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "handshakes were not refused"
        );
        let _ = bad.send(ping(bad_id, good.local_id().0, seq));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        timeout(Duration::from_millis(300), good_in.recv())
            .await
            .is_err(),
        "nothing gets through"
    );
    assert_eq!(good.stats().connections, 0);
    assert_eq!(bad.stats().connections, 0);
    good.shutdown().await;
    bad.shutdown().await;
}

#[test]
fn wrong_secret_is_refused_with_a_clear_log_line() {
    let logs = with_captured_logs(|| async {
        let good = endpoint(1).await;
        let bad = TcpTransport::bind(config(9, "test", b"not the cluster secret", "127.0.0.1:0"))
            .await
            .unwrap();
        refused_pair(good, bad, 9).await;
    });
    assert!(
        logs.contains("refused inbound connection") && logs.contains("cluster secrets differ"),
        "{logs}"
    );
    assert!(logs.contains("refused outbound connection"), "{logs}");
    assert!(
        !logs.contains("not the cluster secret"),
        "the secret leaked into the logs"
    );
}

#[test]
fn wrong_cluster_is_refused_with_a_clear_log_line() {
    let logs = with_captured_logs(|| async {
        let good = endpoint(1).await;
        let bad = TcpTransport::bind(config(9, "other-cluster", SECRET, "127.0.0.1:0"))
            .await
            .unwrap();
        refused_pair(good, bad, 9).await;
    });
    assert!(
        logs.contains("cluster mismatch: expected \"test\", got \"other-cluster\""),
        "{logs}"
    );
}

#[test]
fn wrong_protocol_version_is_refused_with_a_clear_log_line() {
    let logs = with_captured_logs(|| async {
        let (good, _good_in) = endpoint(1).await;
        // A dialer from a future release, speaking the handshake by hand.
        let stream = tokio::net::TcpStream::connect(good.local_addr())
            .await
            .unwrap();
        let mut framed = Framed::new(stream, frame_codec(1 << 16));
        let mut me = Identity::new(
            NodeId(7),
            "test",
            ClusterSecret::new(SECRET.to_vec()).unwrap(),
            "127.0.0.1:1",
        );
        me.version = ringkv::PROTOCOL_VERSION + 1;
        let err = handshake::dial(&mut framed, &me, "endpoint", None)
            .await
            .unwrap_err();
        match err {
            Error::Handshake {
                refusal: ringkv::Refusal::VersionMismatch { expected, got },
                ..
            } => {
                assert_eq!(expected, ringkv::PROTOCOL_VERSION);
                assert_eq!(got, ringkv::PROTOCOL_VERSION + 1);
            }
            other => panic!("expected a version refusal, got {other}"),
        }
        assert_eq!(good.stats().handshake_failures, 1);
        good.shutdown().await;
    });
    assert!(logs.contains("protocol version mismatch"), "{logs}");
}

/// Opens an authenticated connection to `target` by hand, as node `node`.
async fn raw_peer(
    target: &TcpTransport,
    node: u64,
) -> Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec> {
    let stream = tokio::net::TcpStream::connect(target.local_addr())
        .await
        .unwrap();
    let mut framed = Framed::new(stream, frame_codec(1 << 30));
    let me = Identity::new(
        NodeId(node),
        "test",
        ClusterSecret::new(SECRET.to_vec()).unwrap(),
        "127.0.0.1:1",
    );
    handshake::dial(&mut framed, &me, "endpoint", Some(target.local_id()))
        .await
        .unwrap();
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_that_connection_and_others_keep_working() {
    let mut cfg = config(1, "test", SECRET, "127.0.0.1:0");
    cfg.net.max_frame_bytes = 64 * 1024;
    let (a, mut a_in) = TcpTransport::bind(cfg).await.unwrap();
    let (b, mut b_in) = endpoint(2).await;
    b.learn_peer(NodeId(1), &a.local_addr().to_string())
        .unwrap();
    send_retrying(&b, ping(2, 1, 0)).await;
    receive_in_order(&mut a_in, 1).await;

    let mut rogue = raw_peer(&a, 66).await;
    // A frame that decodes but is not an envelope is dropped; the
    // connection stays open and a valid envelope behind it arrives.
    rogue
        .send(bytes::Bytes::from_static(b"\x82\x01\x02"))
        .await
        .unwrap();
    let valid = ringkv::codec::encode(&ping(66, 1, 0)).unwrap();
    rogue.send(bytes::Bytes::from(valid)).await.unwrap();
    let env = recv(&mut a_in).await;
    assert_eq!(env.from, NodeId(66));
    assert_eq!(a.stats().bad_frames, 1);

    // Now a frame over the limit: only its length prefix is sent, and that
    // is enough for the endpoint to close the connection.
    let stream = rogue.get_mut();
    tokio::io::AsyncWriteExt::write_all(stream, &(1u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(WAIT, tokio::io::AsyncReadExt::read(stream, &mut buf))
        .await
        .expect("the endpoint closes the connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF or reset, got {read:?}"
    );
    assert_eq!(a.stats().oversized_frames, 1);

    // The endpoint keeps serving its other peer, both ways.
    for seq in 1..=100 {
        send_retrying(&b, ping(2, 1, seq)).await;
    }
    for seq in 1..=100 {
        let env = recv(&mut a_in).await;
        assert!(matches!(env.msg, Message::Ping { seq: s, .. } if s == seq));
    }
    a.send(ping(1, 2, 0)).unwrap();
    receive_in_order(&mut b_in, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn envelopes_claiming_another_sender_are_dropped() {
    let (a, mut a_in) = endpoint(1).await;
    let mut rogue = raw_peer(&a, 66).await;
    // Node 66 speaks for node 2, then for itself to another node.
    for env in [ping(2, 1, 0), ping(66, 3, 0), ping(66, 1, 5)] {
        let frame = ringkv::codec::encode(&env).unwrap();
        rogue.send(bytes::Bytes::from(frame)).await.unwrap();
    }
    let env = recv(&mut a_in).await;
    assert_eq!((env.from, env.to), (NodeId(66), NodeId(1)));
    assert_eq!(a.stats().bad_frames, 2);
    a.shutdown().await;
}

#[tokio::test]
async fn send_errors_are_the_documented_ones() {
    let mut cfg = config(1, "test", SECRET, "127.0.0.1:0");
    cfg.net.send_queue_frames = 8;
    cfg.net.max_frame_bytes = 8 * 1024;
    let (a, _a_in) = TcpTransport::bind(cfg).await.unwrap();

    assert!(matches!(
        a.send(ping(1, 5, 0)),
        Err(Error::UnknownPeer(NodeId(5)))
    ));
    assert!(matches!(a.send(ping(4, 5, 0)), Err(Error::InvalidInput(_))));
    assert!(a.learn_peer(NodeId(5), " ").is_err());

    // A peer that never answers: nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    a.learn_peer(NodeId(5), &dead_addr).unwrap();
    let big = Envelope::new(
        NodeId(1),
        NodeId(5),
        Message::Ping {
            seq: 0,
            payload: vec![0; 9 * 1024],
        },
    );
    assert!(matches!(a.send(big), Err(Error::FrameTooLarge { .. })));
    // The queue holds 8 frames (the link may hold one more in hand while it
    // dials); the one after that is refused, not queued without bound.
    let mut accepted = 0;
    let refused = loop {
        match a.send(ping(1, 5, accepted)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 9, "the queue is bounded");
    };
    assert!(
        matches!(
            refused,
            Error::QueueFull {
                peer: NodeId(5),
                capacity: 8
            }
        ),
        "{refused}"
    );
    assert!(accepted >= 8);
    assert_eq!(a.stats().refused_queue_full, 1);

    // Sending to self goes through the codec to the own inbox.
    let (b, mut b_in) = endpoint(2).await;
    b.send(ping(2, 2, 42)).unwrap();
    assert_eq!(recv(&mut b_in).await, ping(2, 2, 42));

    a.shutdown().await;
    assert!(matches!(a.send(ping(1, 5, 0)), Err(Error::Shutdown)));
    assert!(matches!(
        a.learn_peer(NodeId(6), "x:1"),
        Err(Error::Shutdown)
    ));
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_what_is_queued_and_closes_connections() {
    let (a, _a_in) = endpoint(1).await;
    let (b, mut b_in) = endpoint(2).await;
    a.learn_peer(NodeId(2), &b.local_addr().to_string())
        .unwrap();
    send_retrying(&a, ping(1, 2, 0)).await;
    receive_in_order(&mut b_in, 1).await;
    for seq in 1..500 {
        send_retrying(&a, ping(1, 2, seq)).await;
    }
    timeout(WAIT, a.shutdown()).await.expect("shutdown ends");
    // Everything queued before shutdown was written within the grace time.
    let mut next = 1;
    while next < 500 {
        let env = recv(&mut b_in).await;
        assert!(matches!(env.msg, Message::Ping { seq, .. } if seq == next));
        next += 1;
    }
    assert_eq!(a.stats().frames_lost, 0);
    // The peer sees the connection close.
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.is_connected(NodeId(1)) {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.shutdown().await;
}

// --- A peer in another process, killed and restarted ----------------------

const CHILD_LISTEN: &str = "RINGKV_TEST_CHILD_LISTEN";
const CHILD_READY: &str = "RINGKV_TEST_CHILD_READY";

/// Not a test of its own: the body of the child process that
/// `restarted_peer_process_is_reconnected` starts. It answers every ping
/// with a pong and exits after a minute at most. Run directly, it does
/// nothing.
#[test]
#[ignore = "entry point of a child process, started by restarted_peer_process_is_reconnected"]
fn child_echo_endpoint() {
    let Ok(listen) = std::env::var(CHILD_LISTEN) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (t, mut inbox) = TcpTransport::bind(config(2, "test", SECRET, &listen))
            .await
            .unwrap();
        println!("{CHILD_READY}");
        let _ = std::io::stdout().flush();
        let _ = timeout(Duration::from_secs(60), async {
            while let Some(env) = inbox.recv().await {
                if let Message::Ping { seq, payload } = env.msg {
                    let pong =
                        Envelope::new(t.local_id(), env.from, Message::Pong { seq, payload });
                    let _ = t.send(pong);
                }
            }
        })
        .await;
    });
}

/// Starts the child echo endpoint on `listen` and waits until it listens.
fn spawn_child(listen: &str) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "--ignored", "--nocapture"])
        .arg(crate::support::test_name(
            module_path!(),
            "child_echo_endpoint",
        ))
        .env(CHILD_LISTEN, listen)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(CHILD_READY) => break,
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                panic!("child exited before it was ready");
            }
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Pings node 2 until a pong with a seq of at least `from_seq` comes back.
async fn ping_until_pong(a: &TcpTransport, a_in: &mut Inbox, from_seq: &mut u64) {
    let first = *from_seq;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pong from the peer"
        );
        // Queue full while the peer is down is expected; keep trying.
        let _ = a.send(ping(1, 2, *from_seq));
        *from_seq += 1;
        if let Ok(Some(env)) = timeout(Duration::from_millis(50), a_in.recv()).await {
            if let Message::Pong { seq, .. } = env.msg {
                if seq >= first {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_peer_process_is_reconnected() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let (a, mut a_in) = endpoint(1).await;
    a.learn_peer(NodeId(2), &listen).unwrap();

    let mut child = spawn_child(&listen);
    let mut seq = 0;
    ping_until_pong(&a, &mut a_in, &mut seq).await;
    assert_eq!(a.stats().connections, 1);

    // SIGKILL: no goodbye, the old connection just dies.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn_child(&listen);
    ping_until_pong(&a, &mut a_in, &mut seq).await;
    assert!(
        a.stats().connections >= 2,
        "a new connection to the restarted process"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    a.shutdown().await;
}

/// A flood of connections from one address that never handshake: it takes
/// that address's share of the handshake slots and no more, the cluster's
/// nodes (another address) still connect, and the refusals are logged a
/// few times, not once each.
#[test]
fn a_handshake_flood_from_one_address_leaves_the_others_in_and_the_log_quiet() {
    let logs = with_captured_logs(|| async {
        let (a, _a_in) = endpoint(1).await;
        let (b, mut b_in) = endpoint(2).await;
        let target = b.local_addr();
        // 8 silent dialers from 127.0.0.2 hold that address's slots; 200
        // more are refused at once.
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..208 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut stream = socket.connect(target).await.unwrap();
            if i < 8 {
                held.push(stream);
                continue;
            }
            // A refused connection is closed without a byte.
            let mut byte = [0u8; 1];
            use tokio::io::AsyncReadExt;
            match timeout(WAIT, stream.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => refused += 1,
                other => panic!("connection {i} was not refused: {other:?}"),
            }
        }
        assert_eq!(refused, 200);
        // Node 1, from 127.0.0.1, connects and is heard.
        a.learn_peer(NodeId(2), &target.to_string()).unwrap();
        send_retrying(&a, ping(1, 2, 0)).await;
        let env = recv(&mut b_in).await;
        assert_eq!(env.from, NodeId(1));
        assert!(b.stats().handshake_failures >= 200);
        drop(held);
        a.shutdown().await;
        b.shutdown().await;
    });
    let lines = logs
        .lines()
        .filter(|l| l.contains("too many handshakes in progress"))
        .count();
    assert!((1..=3).contains(&lines), "{lines} refusal lines:\n{logs}");
    assert!(
        logs.contains("refused=1"),
        "the first refusal is logged with its count"
    );
}
