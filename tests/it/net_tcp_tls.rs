//! TLS on the links between nodes, tried as an attacker on the path or
//! inside the cluster would: a relay that reads, flips a byte or replays a
//! recorded stream; a node that claims another's id; a certificate from
//! another CA; a dialer without TLS.
//!
//! Each attack that TLS stops is also run against the same endpoints in
//! plaintext where that shows something, as a control: the control must
//! succeed, so the check is known to be able to fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv::net::handshake::{self, Identity};
use ringkv::net::tls::PeerTls;
use ringkv::net::{frame_codec, tcp::TcpTransport};
use ringkv::{
    ClusterCa, ClusterSecret, Envelope, Error, Inbox, Message, NodeId, PeerSecurity, Refusal,
    TcpConfig, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;

const SECRET: &[u8] = b"tls loopback test cluster secret";
const WAIT: Duration = Duration::from_secs(30);

fn config(node: u64, security: PeerSecurity) -> TcpConfig {
    let mut cfg = TcpConfig::new(
        NodeId(node),
        "tls-test",
        ClusterSecret::new(SECRET.to_vec()).unwrap(),
        security,
        "127.0.0.1:0",
    );
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(100);
    cfg
}

async fn endpoint(node: u64, security: PeerSecurity) -> (TcpTransport, Inbox) {
    TcpTransport::bind(config(node, security)).await.unwrap()
}

/// A payload that is easy to find in a byte stream.
fn payload(seq: u64) -> Vec<u8> {
    format!("VALUE-{seq:08}-MARKER-VALUE").into_bytes()
}

fn ping(from: u64, to: u64, seq: u64) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Ping {
            seq,
            payload: payload(seq),
        },
    )
}

/// What the relay does to the dialer's bytes on their way to the acceptor.
#[derive(Default)]
struct Tamper {
    /// Flip the last byte of the next chunk forwarded, once.
    flip_next: bool,
    /// Chunks flipped so far.
    flipped: usize,
    /// Every byte forwarded from dialer to acceptor, in order.
    recorded: Vec<u8>,
}

/// A TCP relay on 127.0.0.1 to `target`: what a machine on the path sees
/// and can change. Returns its address and the tamper state.
async fn relay(target: std::net::SocketAddr) -> (String, Arc<Mutex<Tamper>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tamper = Arc::new(Mutex::new(Tamper::default()));
    let state = tamper.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = outbound.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match in_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    {
                        let mut t = state.lock().unwrap();
                        if t.flip_next {
                            t.flip_next = false;
                            t.flipped += 1;
                            buf[n - 1] ^= 0x01;
                        }
                        t.recorded.extend_from_slice(&buf[..n]);
                    }
                    if out_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    (addr, tamper)
}

/// Node 1 sends to node 2 through a relay. Returns both endpoints, node
/// 2's inbox and the relay's state, once one ping has gone through (so the
/// handshake is done and later bytes are frames).
async fn through_relay(
    a_security: PeerSecurity,
    b_security: PeerSecurity,
) -> (TcpTransport, TcpTransport, Inbox, Arc<Mutex<Tamper>>) {
    let (a, _a_in) = endpoint(1, a_security).await;
    let (b, mut b_in) = endpoint(2, b_security).await;
    let (addr, tamper) = relay(b.local_addr()).await;
    a.learn_peer(NodeId(2), &addr).unwrap();
    a.send(ping(1, 2, 0)).unwrap();
    let env = timeout(WAIT, b_in.recv()).await.unwrap().unwrap();
    assert_eq!(env.msg, ping(1, 2, 0).msg);
    (a, b, b_in, tamper)
}

/// [`through_relay`] with both nodes on TLS from `ca`.
async fn tls_through_relay(
    ca: &ClusterCa,
) -> (TcpTransport, TcpTransport, Inbox, Arc<Mutex<Tamper>>) {
    through_relay(
        ca.security_for(NodeId(1)).unwrap(),
        ca.security_for(NodeId(2)).unwrap(),
    )
    .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends pings 1..=n one at a time; returns the pings node 2 delivered,
/// each checked to carry exactly the payload that was sent for its
/// sequence number or counted as forged.
async fn send_and_collect(a: &TcpTransport, b_in: &mut Inbox, n: u64) -> (Vec<u64>, usize) {
    let mut delivered = Vec::new();
    let mut forged = 0;
    for seq in 1..=n {
        a.send(ping(1, 2, seq)).unwrap();
        // Give each ping its own TCP segment and the relay its own read.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(Some(env)) = tokio::time::timeout_at(deadline, b_in.recv()).await {
        if let Message::Ping { seq, payload: p } = env.msg {
            if p == payload(seq) {
                delivered.push(seq);
            } else {
                forged += 1;
            }
        }
        if delivered.len() as u64 == n {
            break;
        }
    }
    (delivered, forged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_sees_no_value_on_a_tls_link_and_every_value_on_a_plaintext_one() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let (a, b, mut b_in, tamper) = tls_through_relay(&ca).await;
    let (delivered, forged) = send_and_collect(&a, &mut b_in, 5).await;
    assert_eq!((delivered.len(), forged), (5, 0));
    let recorded = std::mem::take(&mut tamper.lock().unwrap().recorded);
    assert!(
        recorded.len() > 5 * payload(0).len(),
        "the relay saw the traffic"
    );
    assert!(
        !contains(&recorded, b"MARKER-VALUE"),
        "a value crossed the TLS link in the clear"
    );
    a.shutdown().await;
    b.shutdown().await;

    // Control: the same relay reads every value of a plaintext link.
    let (a, b, mut b_in, tamper) = through_relay(
        PeerSecurity::InsecurePlaintext,
        PeerSecurity::InsecurePlaintext,
    )
    .await;
    let (delivered, _) = send_and_collect(&a, &mut b_in, 5).await;
    assert_eq!(delivered.len(), 5);
    let recorded = std::mem::take(&mut tamper.lock().unwrap().recorded);
    assert!(contains(&recorded, &payload(3)), "the control saw nothing");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_a_tls_link_closes_it_and_nothing_forged_is_delivered() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let (a, b, mut b_in, tamper) = tls_through_relay(&ca).await;
    let before = a.stats().connections + b.stats().connections;
    tamper.lock().unwrap().flip_next = true;
    let (delivered, forged) = send_and_collect(&a, &mut b_in, 10).await;
    assert_eq!(
        tamper.lock().unwrap().flipped,
        1,
        "the relay flipped a byte"
    );
    assert_eq!(forged, 0, "a forged value was delivered over TLS");
    // The damaged record was refused: its ping is missing, the connection
    // was dropped and made again, and the pings after it arrive.
    assert!(delivered.len() < 10, "the damaged frame was delivered");
    assert!(
        delivered.contains(&10),
        "the link did not recover: {delivered:?}"
    );
    assert!(
        a.stats().connections + b.stats().connections > before,
        "no new connection after the damaged record"
    );
    a.shutdown().await;
    b.shutdown().await;

    // Control: on a plaintext link the same flip changes the value that
    // node 2 delivers.
    let (a, b, mut b_in, tamper) = through_relay(
        PeerSecurity::InsecurePlaintext,
        PeerSecurity::InsecurePlaintext,
    )
    .await;
    tamper.lock().unwrap().flip_next = true;
    let (_, forged) = send_and_collect(&a, &mut b_in, 10).await;
    assert_eq!(forged, 1, "the control delivered no forged value");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_tls_stream_replayed_delivers_nothing() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let (a, b, mut b_in, tamper) = tls_through_relay(&ca).await;
    let (delivered, _) = send_and_collect(&a, &mut b_in, 5).await;
    assert_eq!(delivered.len(), 5);
    // Everything node 1 sent, from the first byte of the connection.
    let recorded = tamper.lock().unwrap().recorded.clone();
    a.shutdown().await;
    let received = b.stats().frames_received;

    let mut replay = TcpStream::connect(b.local_addr()).await.unwrap();
    let _ = replay.write_all(&recorded).await;
    // Node 2 answers the replayed ClientHello with a fresh key share, so
    // the recorded Finished and records fail; it closes the connection.
    let mut sink = Vec::new();
    let closed = timeout(WAIT, replay.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "node 2 kept the replayed connection open");
    assert!(
        timeout(Duration::from_millis(500), b_in.recv())
            .await
            .is_err(),
        "a replayed frame was delivered"
    );
    assert_eq!(b.stats().frames_received, received);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_pose_as_another_with_its_own_certificate() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let (b, _b_in) = endpoint(2, ca.security_for(NodeId(2)).unwrap()).await;

    // Node 3's genuine credentials, claiming to be node 1 in the handshake.
    let creds3 = ca.issue(NodeId(3)).unwrap();
    let tls3 = PeerTls::new(NodeId(3), &creds3).unwrap();
    // Dials node 2 over node 3's TLS credentials, claiming `claimed`.
    let dial_as = |claimed: u64| {
        let (tls3, target) = (&tls3, b.local_addr());
        async move {
            let stream = TcpStream::connect(target).await.unwrap();
            let stream = tls3.connect(NodeId(2), stream).await.unwrap();
            let mut framed = Framed::new(stream, frame_codec(1 << 16));
            let me = Identity::new(
                NodeId(claimed),
                "tls-test",
                ClusterSecret::new(SECRET.to_vec()).unwrap(),
                "127.0.0.1:1",
            );
            handshake::dial(&mut framed, &me, "node 2", Some(NodeId(2))).await
        }
    };
    match dial_as(1).await.unwrap_err() {
        Error::Handshake {
            refusal: Refusal::NotCertified { node },
            ..
        } => assert_eq!(node, NodeId(1)),
        other => panic!("expected NotCertified, got {other}"),
    }
    // Claiming its own id works over the same credentials: the refusal
    // was about the id, not the certificate.
    let info = dial_as(3).await.unwrap();
    assert_eq!(info.node, NodeId(2));

    // The other way: node 3 answering at the address node 1 believes is
    // node 2's. The TLS handshake fails on the name, and nothing is sent.
    let (c, mut c_in) = endpoint(3, ca.security_for(NodeId(3)).unwrap()).await;
    let (a, _a_in) = endpoint(1, ca.security_for(NodeId(1)).unwrap()).await;
    a.learn_peer(NodeId(2), &c.local_addr().to_string())
        .unwrap();
    a.send(ping(1, 2, 0)).unwrap();
    let deadline = Instant::now() + WAIT;
    while a.stats().handshake_failures == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.stats().handshake_failures > 0);
    assert_eq!(a.stats().connections, 0);
    assert!(timeout(Duration::from_millis(300), c_in.recv())
        .await
        .is_err());
    for t in [a, b, c] {
        t.shutdown().await;
    }
}

/// Node 1 keeps sending to node 2; returns whether any frame got through
/// within a second and a half.
async fn connects(a: &TcpTransport, b: &TcpTransport, b_in: &mut Inbox) -> bool {
    a.learn_peer(NodeId(2), &b.local_addr().to_string())
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut seq = 0;
    while Instant::now() < deadline {
        let _ = a.send(ping(1, 2, seq));
        seq += 1;
        if timeout(Duration::from_millis(100), b_in.recv())
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_certificate_and_a_plaintext_dialer_are_refused() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let rogue_ca = ClusterCa::generate("tls-test").unwrap();
    let (b, mut b_in) = endpoint(2, ca.security_for(NodeId(2)).unwrap()).await;

    let (rogue, _r_in) = endpoint(1, rogue_ca.security_for(NodeId(1)).unwrap()).await;
    assert!(!connects(&rogue, &b, &mut b_in).await);
    assert!(rogue.stats().handshake_failures > 0);
    rogue.shutdown().await;

    let (plain, _p_in) = endpoint(1, PeerSecurity::InsecurePlaintext).await;
    assert!(!connects(&plain, &b, &mut b_in).await);
    plain.shutdown().await;
    assert_eq!(b.stats().connections, 0);
    assert!(b.stats().handshake_failures >= 2);

    // Control: a node with a certificate from the cluster's CA gets in.
    let (good, _g_in) = endpoint(1, ca.security_for(NodeId(1)).unwrap()).await;
    assert!(connects(&good, &b, &mut b_in).await);
    good.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_that_stalls_in_the_tls_handshake_is_cut_off_at_the_handshake_timeout() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let mut cfg = config(2, ca.security_for(NodeId(2)).unwrap());
    cfg.handshake_timeout = Duration::from_millis(300);
    let (b, _b_in) = TcpTransport::bind(cfg).await.unwrap();
    let mut idle = TcpStream::connect(b.local_addr()).await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    timeout(WAIT, idle.read_to_end(&mut sink))
        .await
        .expect("the node closes a silent dialer")
        .ok();
    // Closed by the timeout, not at once and not never.
    assert!(started.elapsed() >= Duration::from_millis(250));
    b.shutdown().await;
}

#[test]
fn transports_refuse_credentials_of_another_node() {
    let ca = ClusterCa::generate("tls-test").unwrap();
    let mut cfg = config(1, ca.security_for(NodeId(2)).unwrap());
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("n2") && err.contains("n1"), "{err}");
    cfg.security = ca.security_for(NodeId(1)).unwrap();
    cfg.validate().unwrap();
}
