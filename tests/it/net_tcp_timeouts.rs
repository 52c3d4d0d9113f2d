//! Idle and partial-frame timeouts on established peer links
//! (`TcpConfig::idle_timeout`, `TcpConfig::frame_timeout`), on real TCP
//! connections on 127.0.0.1.
//!
//! A rogue peer completes the handshake by hand (in plaintext, or over TLS
//! with a certificate of the cluster's CA) and then goes silent or leaves a
//! frame unfinished: the endpoint must close the connection. Two real
//! endpoints with the same short timeouts, busy or quiet, must keep their
//! one connection.
//!
//! No test asserts how soon something happens: a closing is awaited for
//! [`GENEROUS`] times the configured timeout (far less than the other
//! timeout in force, so that only the one under test can close it), and a
//! link that must stay up is watched for ten times its timeouts.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use ringkv::net::frame_codec;
use ringkv::net::handshake::{self, Identity};
use ringkv::net::tcp::TcpTransport;
use ringkv::net::tls::{PeerStream, PeerTls};
use ringkv::{
    ClusterCa, ClusterSecret, Envelope, Inbox, Message, NodeId, PeerSecurity, TcpConfig, Transport,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const CLUSTER: &str = "timeouts-test";
const SECRET: &[u8] = b"timeouts test cluster secret";
/// How many times the configured timeout a closing is awaited.
const GENEROUS: u32 = 20;
/// The short timeout under test.
const SHORT: Duration = Duration::from_millis(400);
/// A timeout that must not be the one that closes anything in a test.
const LONG: Duration = Duration::from_secs(120);
/// The rogue peer's node id.
const ROGUE: u64 = 66;

fn secret() -> ClusterSecret {
    ClusterSecret::new(SECRET.to_vec()).unwrap()
}

fn config(node: u64, security: PeerSecurity, idle: Duration, frame: Duration) -> TcpConfig {
    let mut cfg = TcpConfig::new(NodeId(node), CLUSTER, secret(), security, "127.0.0.1:0");
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(100);
    cfg.idle_timeout = idle;
    cfg.frame_timeout = frame;
    cfg
}

async fn endpoint(
    node: u64,
    security: PeerSecurity,
    idle: Duration,
    frame: Duration,
) -> (TcpTransport, Inbox) {
    TcpTransport::bind(config(node, security, idle, frame))
        .await
        .unwrap()
}

fn ping(from: u64, to: u64, seq: u64, len: usize) -> Envelope {
    let mut payload = seq.to_be_bytes().to_vec();
    payload.resize(len.max(8), (seq % 251) as u8);
    Envelope::new(NodeId(from), NodeId(to), Message::Ping { seq, payload })
}

fn rogue_identity() -> Identity {
    Identity::new(NodeId(ROGUE), CLUSTER, secret(), "127.0.0.1:1")
}

/// How the rogue peer protects its link: plaintext, or TLS with its own
/// certificate from `ca`.
enum RogueSecurity<'a> {
    Plain,
    Tls(&'a ClusterCa),
}

impl RogueSecurity<'_> {
    /// The endpoint's side of the same choice.
    fn for_endpoint(&self, node: u64) -> PeerSecurity {
        match self {
            RogueSecurity::Plain => PeerSecurity::InsecurePlaintext,
            RogueSecurity::Tls(ca) => ca.security_for(NodeId(node)).unwrap(),
        }
    }
}

/// Dials `target` as the rogue node and completes the
/// handshake by hand; the connection is then ready for envelopes.
async fn dial_as_rogue(
    target: &TcpTransport,
    security: &RogueSecurity<'_>,
) -> Framed<PeerStream, LengthDelimitedCodec> {
    let stream = TcpStream::connect(target.local_addr()).await.unwrap();
    let stream = match security {
        RogueSecurity::Plain => PeerStream::Plain(stream),
        RogueSecurity::Tls(ca) => {
            let creds = ca.issue(NodeId(ROGUE)).unwrap();
            let tls = PeerTls::new(NodeId(ROGUE), &creds).unwrap();
            tls.connect(target.local_id(), stream).await.unwrap()
        }
    };
    let mut framed = Framed::new(stream, frame_codec(1 << 16));
    let info = handshake::dial(
        &mut framed,
        &rogue_identity(),
        "endpoint",
        Some(target.local_id()),
    )
    .await
    .unwrap();
    assert_eq!(info.node, target.local_id());
    framed.codec_mut().set_max_frame_length(1 << 24);
    framed
}

/// Sends one envelope from the rogue and waits until the endpoint delivers
/// it: the link works, so whatever closes it later is what comes after.
async fn rogue_link_works<T: AsyncRead + AsyncWrite + Unpin>(
    rogue: &mut Framed<T, LengthDelimitedCodec>,
    endpoint_in: &mut Inbox,
    to: u64,
) {
    let env = ping(ROGUE, to, 1, 16);
    let frame = ringkv::codec::encode(&env).unwrap();
    rogue.send(Bytes::from(frame)).await.unwrap();
    let got = timeout(Duration::from_secs(30), endpoint_in.recv())
        .await
        .expect("the endpoint delivers the rogue's envelope")
        .unwrap();
    assert_eq!(got, env);
}

/// Checks that a frame the endpoint wrote to the rogue is one of its
/// keepalives (the only thing it has to say on these links): an envelope
/// from the endpoint to the rogue carrying a `Pong`.
fn assert_keepalive(frame: &[u8], from: u64) {
    let env: Envelope = ringkv::codec::decode(frame, 1 << 24).unwrap();
    assert_eq!((env.from, env.to), (NodeId(from), NodeId(ROGUE)));
    assert!(
        matches!(env.msg, Message::Pong { .. }),
        "expected a keepalive, got {:?}",
        env.msg
    );
}

/// Reads frames (keepalives) from `rogue` until the endpoint closes the
/// connection; panics if it is still open after `wait`. Every `dribble`,
/// writes one more byte of whatever the rogue has begun.
async fn await_close<T: AsyncRead + AsyncWrite + Unpin>(
    rogue: &mut Framed<T, LengthDelimitedCodec>,
    endpoint_node: u64,
    wait: Duration,
    dribble: Option<Duration>,
) {
    let deadline = Instant::now() + wait;
    let tick = dribble.unwrap_or(wait);
    loop {
        tokio::select! {
            item = rogue.next() => match item {
                Some(Ok(frame)) => assert_keepalive(&frame, endpoint_node),
                // EOF, or a reset: closed.
                Some(Err(_)) | None => return,
            },
            _ = tokio::time::sleep_until(deadline) => {
                panic!("the endpoint did not close the connection within {wait:?}")
            }
            _ = tokio::time::sleep(tick), if dribble.is_some() => {
                // The endpoint may have closed already; the read says so.
                let stream = rogue.get_mut();
                let _ = stream.write_all(&[0x55]).await;
                let _ = stream.flush().await;
            }
        }
    }
}

/// Waits until `t` no longer counts the rogue's link as up.
async fn await_link_down(t: &TcpTransport) {
    let deadline = Instant::now() + SHORT * GENEROUS;
    while t.is_connected(NodeId(ROGUE)) {
        assert!(
            Instant::now() < deadline,
            "the endpoint still counts the closed link as up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_silent_peer_is_disconnected(security: RogueSecurity<'_>) {
    let (a, mut a_in) = endpoint(1, security.for_endpoint(1), SHORT, LONG).await;
    let mut rogue = dial_as_rogue(&a, &security).await;
    rogue_link_works(&mut rogue, &mut a_in, 1).await;
    assert!(a.is_connected(NodeId(ROGUE)));
    // From here on the rogue says nothing, but reads what it is sent.
    await_close(&mut rogue, 1, SHORT * GENEROUS, None).await;
    await_link_down(&a).await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_silent_after_the_handshake_is_disconnected() {
    a_silent_peer_is_disconnected(RogueSecurity::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_silent_on_a_tls_link_is_disconnected() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    a_silent_peer_is_disconnected(RogueSecurity::Tls(&ca)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_link_to_a_silent_peer_is_closed_and_dialed_again() {
    let (a, _a_in) = endpoint(1, PeerSecurity::InsecurePlaintext, SHORT, LONG).await;
    // The rogue listens, accepts the endpoint's dials by hand, reads the
    // first envelope and then says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    a.learn_peer(NodeId(ROGUE), &listener.local_addr().unwrap().to_string())
        .unwrap();
    let listener = &listener;
    let accept = move || async move {
        let (stream, remote) = timeout(Duration::from_secs(30), listener.accept())
            .await
            .expect("the endpoint dials")
            .unwrap();
        let mut framed = Framed::new(stream, frame_codec(1 << 16));
        let info = handshake::accept(&mut framed, &rogue_identity(), &remote.to_string())
            .await
            .unwrap();
        assert_eq!(info.node, NodeId(1));
        handshake::welcome(&mut framed, "endpoint").await.unwrap();
        framed.codec_mut().set_max_frame_length(1 << 24);
        framed
    };
    for seq in 0..2 {
        a.send(ping(1, ROGUE, seq, 16)).unwrap();
        let mut rogue = accept().await;
        let frame = timeout(Duration::from_secs(30), rogue.next())
            .await
            .expect("the endpoint sends the envelope")
            .unwrap()
            .unwrap();
        let env: Envelope = ringkv::codec::decode(&frame, 1 << 24).unwrap();
        assert_eq!(env, ping(1, ROGUE, seq, 16));
        await_close(&mut rogue, 1, SHORT * GENEROUS, None).await;
        await_link_down(&a).await;
        // The next envelope makes the link dial again (the loop's second
        // round), through the usual path.
    }
    assert_eq!(a.stats().connections, 2);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off_even_while_a_write_to_it_waits() {
    let (a, mut a_in) = endpoint(1, PeerSecurity::InsecurePlaintext, SHORT, LONG).await;
    let mut rogue = dial_as_rogue(&a, &RogueSecurity::Plain).await;
    rogue_link_works(&mut rogue, &mut a_in, 1).await;
    // 64 MiB for a rogue that reads nothing: the socket buffers take a few
    // MiB, and the endpoint's write waits for room that never comes.
    const FRAMES: u64 = 64;
    for seq in 0..FRAMES {
        a.send(ping(1, ROGUE, seq, 1 << 20)).unwrap();
    }
    // The rogue sends nothing either: the idle timeout closes the
    // connection, and must end the waiting write with it.
    await_link_down(&a).await;
    let deadline = Instant::now() + SHORT * GENEROUS;
    while a.stats().frames_lost == 0 {
        assert!(
            Instant::now() < deadline,
            "the write to the closed connection still waits"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now the rogue reads: what was in the buffers, then the end.
    let mut pings = 0;
    loop {
        match timeout(SHORT * GENEROUS, rogue.next()).await {
            Err(_) => panic!("the connection is still open"),
            Ok(Some(Ok(frame))) => {
                let env: Envelope = ringkv::codec::decode(&frame, 1 << 24).unwrap();
                if matches!(env.msg, Message::Ping { .. }) {
                    pings += 1;
                }
            }
            Ok(Some(Err(_)) | None) => break,
        }
    }
    // The batch being written when the connection closed was lost; the
    // frames behind it wait in the queue for the next connection.
    assert!(pings < FRAMES, "every frame was written after the close");
    a.shutdown().await;
}

async fn a_half_sent_frame_is_cut_off(security: RogueSecurity<'_>, dribble: Option<Duration>) {
    let (a, mut a_in) = endpoint(1, security.for_endpoint(1), LONG, SHORT).await;
    let mut rogue = dial_as_rogue(&a, &security).await;
    rogue_link_works(&mut rogue, &mut a_in, 1).await;
    // Let the endpoint's reader settle into waiting, so that the frame's
    // first bytes arrive unseen, as they would from a real peer.
    tokio::time::sleep(SHORT / 4).await;
    // A length prefix promising 1,000 bytes, and ten of them.
    let stream = rogue.get_mut();
    stream.write_all(&1000u32.to_be_bytes()).await.unwrap();
    stream.write_all(&[0x55; 10]).await.unwrap();
    stream.flush().await.unwrap();
    await_close(&mut rogue, 1, SHORT * GENEROUS, dribble).await;
    await_link_down(&a).await;
    // Nothing of the unfinished frame was delivered.
    assert!(a_in.try_recv().is_err());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_a_frame_half_sent_is_disconnected() {
    a_half_sent_frame_is_cut_off(RogueSecurity::Plain, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dribbles_a_frame_over_tls_is_disconnected() {
    // A byte every 50 ms: the 1,000-byte frame would take 50 s.
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    a_half_sent_frame_is_cut_off(RogueSecurity::Tls(&ca), Some(Duration::from_millis(50))).await;
}

/// Two endpoints with short idle and frame timeouts on both sides.
async fn short_timeout_pair(
    ca: Option<&ClusterCa>,
) -> ((TcpTransport, Inbox), (TcpTransport, Inbox)) {
    let security = |node| match ca {
        Some(ca) => ca.security_for(NodeId(node)).unwrap(),
        None => PeerSecurity::InsecurePlaintext,
    };
    let a = endpoint(1, security(1), SHORT, SHORT).await;
    let b = endpoint(2, security(2), SHORT, SHORT).await;
    a.0.learn_peer(NodeId(2), &b.0.local_addr().to_string())
        .unwrap();
    b.0.learn_peer(NodeId(1), &a.0.local_addr().to_string())
        .unwrap();
    (a, b)
}

async fn recv_expecting(inbox: &mut Inbox, expected: &Envelope) {
    let got = timeout(Duration::from_secs(30), inbox.recv())
        .await
        .expect("an envelope within the wait")
        .unwrap();
    assert_eq!(&got, expected);
}

/// Both endpoints count one connection, up, and nothing else delivered.
fn assert_one_connection(a: &TcpTransport, b: &TcpTransport) {
    assert!(a.is_connected(NodeId(2)) && b.is_connected(NodeId(1)));
    assert_eq!(
        (a.stats().connections, b.stats().connections),
        (1, 1),
        "the link was closed and dialed again"
    );
    assert_eq!(a.stats().bad_frames + b.stats().bad_frames, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_link_with_short_timeouts_stays_up_and_delivers() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let ((a, mut a_in), (b, mut b_in)) = short_timeout_pair(Some(&ca)).await;
    // Ten times the timeouts of traffic both ways, some of it frames of
    // a quarter of a megabyte.
    let until = Instant::now() + SHORT * 10;
    let mut seq = 0;
    while Instant::now() < until {
        let len = if seq % 10 == 9 { 256 * 1024 } else { 64 };
        let (to_b, to_a) = (ping(1, 2, seq, len), ping(2, 1, seq, len));
        a.send(to_b.clone()).unwrap();
        b.send(to_a.clone()).unwrap();
        recv_expecting(&mut b_in, &to_b).await;
        recv_expecting(&mut a_in, &to_a).await;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seq > 10, "only {seq} rounds");
    assert_one_connection(&a, &b);
    assert_eq!(a.stats().frames_received, seq);
    assert_eq!(b.stats().frames_received, seq);
    a.shutdown().await;
    b.shutdown().await;
}

async fn a_quiet_link_is_kept_alive(ca: Option<&ClusterCa>) {
    let ((a, mut a_in), (b, mut b_in)) = short_timeout_pair(ca).await;
    // One envelope one way: after it, neither side has anything to say.
    let hello = ping(1, 2, 0, 16);
    a.send(hello.clone()).unwrap();
    recv_expecting(&mut b_in, &hello).await;
    // Ten times the idle timeout without a word from either node.
    tokio::time::sleep(SHORT * 10).await;
    assert_one_connection(&a, &b);
    // The keepalives that kept it up were neither delivered nor counted.
    assert!(a_in.try_recv().is_err() && b_in.try_recv().is_err());
    assert_eq!(
        (a.stats().frames_received, b.stats().frames_received),
        (0, 1)
    );
    assert_eq!((a.stats().frames_sent, b.stats().frames_sent), (1, 0));
    // And it still carries envelopes both ways.
    let (to_a, to_b) = (ping(2, 1, 1, 16), ping(1, 2, 2, 16));
    b.send(to_a.clone()).unwrap();
    a.send(to_b.clone()).unwrap();
    recv_expecting(&mut a_in, &to_a).await;
    recv_expecting(&mut b_in, &to_b).await;
    assert_one_connection(&a, &b);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_link_with_short_timeouts_is_kept_alive() {
    a_quiet_link_is_kept_alive(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_tls_link_with_short_timeouts_is_kept_alive() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    a_quiet_link_is_kept_alive(Some(&ca)).await;
}

#[test]
fn zero_timeouts_are_refused() {
    let base = config(1, PeerSecurity::InsecurePlaintext, SHORT, SHORT);
    assert!(base.validate().is_ok());
    let mut idle = base.clone();
    idle.idle_timeout = Duration::ZERO;
    assert!(idle.validate().is_err());
    let mut frame = base;
    frame.frame_timeout = Duration::ZERO;
    assert!(frame.validate().is_err());
    let defaults = TcpConfig::new(
        NodeId(1),
        CLUSTER,
        secret(),
        PeerSecurity::InsecurePlaintext,
        "127.0.0.1:0",
    );
    assert_eq!(defaults.idle_timeout, Duration::from_secs(30));
    assert_eq!(defaults.frame_timeout, Duration::from_secs(30));
}
