//! Faults injected into the TCP transport, over real loopback sockets:
//! an outbound block is one-way, a drop rate of 1 loses every frame and 0
//! none, a seeded partial rate loses some and keeps the rest in order, and
//! a delay holds frames back (never less than its minimum) without
//! reordering them, also while it is being removed.
//!
//! "Nothing arrived" is never judged by waiting: after the faulty stretch a
//! marker frame is sent with the fault removed, and since a link is FIFO,
//! the marker arriving first proves nothing before it got through. Every
//! wait is bounded; the one timing check is a lower bound (a delay can only
//! be lengthened by a busy machine).

use std::time::Duration;

use ringkv::net::tcp::{TcpFaultStats, TcpFaults, TcpTransport};
use ringkv::{
    ClusterCa, ClusterSecret, Envelope, Error, Inbox, Message, NodeId, TcpConfig, Transport,
};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(30);
const MARKER: u64 = 1_000_000;

async fn pair() -> ((TcpTransport, Inbox), (TcpTransport, Inbox)) {
    let mut out = Vec::new();
    let ca = ClusterCa::generate("faults").unwrap();
    for node in [1, 2] {
        let mut cfg = TcpConfig::new(
            NodeId(node),
            "faults",
            ClusterSecret::new(b"tcp fault injection test secret".to_vec()).unwrap(),
            ca.security_for(NodeId(node)).unwrap(),
            "127.0.0.1:0",
        );
        cfg.backoff_min = Duration::from_millis(10);
        cfg.backoff_max = Duration::from_millis(200);
        out.push(TcpTransport::bind(cfg).await.unwrap());
    }
    let b = out.pop().unwrap();
    let a = out.pop().unwrap();
    a.0.learn_peer(NodeId(2), &b.0.local_addr().to_string())
        .unwrap();
    b.0.learn_peer(NodeId(1), &a.0.local_addr().to_string())
        .unwrap();
    (a, b)
}

fn ping(from: u64, to: u64, seq: u64) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Ping {
            seq,
            payload: Vec::new(),
        },
    )
}

async fn send(t: &TcpTransport, env: Envelope) {
    loop {
        match t.send(env.clone()) {
            Ok(()) => return,
            Err(Error::QueueFull { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

async fn recv_seq(inbox: &mut Inbox) -> u64 {
    let env = timeout(WAIT, inbox.recv())
        .await
        .expect("an envelope within the wait")
        .expect("the inbox is open");
    match env.msg {
        Message::Ping { seq, .. } => seq,
        other => panic!("expected a ping, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_block_is_one_way() {
    let ((a, mut a_in), (b, mut b_in)) = pair().await;
    a.set_blocked_outbound([NodeId(2)]);
    assert_eq!(a.blocked_outbound(), vec![NodeId(2)]);
    for seq in 0..50 {
        send(&a, ping(1, 2, seq)).await;
        send(&b, ping(2, 1, seq)).await;
    }
    // B to A is delivered, complete and in order.
    for seq in 0..50 {
        assert_eq!(recv_seq(&mut a_in).await, seq);
    }
    // A to B was dropped: once healed, the marker is the first frame B
    // gets on the link.
    a.set_blocked_outbound([]);
    send(&a, ping(1, 2, MARKER)).await;
    assert_eq!(recv_seq(&mut b_in).await, MARKER);
    assert_eq!(a.fault_stats().blocked_outbound, 50);
    assert_eq!(b.fault_stats(), TcpFaultStats::default());
    assert_eq!(a.stats().frames_blocked, 0, "two-way blocks are not used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_rate_of_one_drops_all_and_of_zero_none() {
    let ((a, _a_in), (_b, mut b_in)) = pair().await;
    a.set_faults(TcpFaults {
        drop_rate: 1.0,
        ..TcpFaults::default()
    })
    .unwrap();
    for seq in 0..100 {
        send(&a, ping(1, 2, seq)).await;
    }
    a.set_faults(TcpFaults {
        drop_rate: 0.0,
        seed: 5,
        ..TcpFaults::default()
    })
    .unwrap();
    send(&a, ping(1, 2, MARKER)).await;
    assert_eq!(recv_seq(&mut b_in).await, MARKER, "rate 1 dropped all");
    assert_eq!(a.fault_stats().dropped, 100);
    for seq in 0..200 {
        send(&a, ping(1, 2, seq)).await;
    }
    for seq in 0..200 {
        assert_eq!(recv_seq(&mut b_in).await, seq, "rate 0 drops none");
    }
    assert_eq!(a.fault_stats().dropped, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_partial_drop_rate_loses_some_and_keeps_order() {
    let ((a, _a_in), (_b, mut b_in)) = pair().await;
    a.set_faults(TcpFaults {
        drop_rate: 0.5,
        seed: 11,
        ..TcpFaults::default()
    })
    .unwrap();
    for seq in 0..400 {
        send(&a, ping(1, 2, seq)).await;
    }
    a.set_faults(TcpFaults::default()).unwrap();
    send(&a, ping(1, 2, MARKER)).await;
    let mut got = Vec::new();
    loop {
        let seq = recv_seq(&mut b_in).await;
        if seq == MARKER {
            break;
        }
        got.push(seq);
    }
    let dropped = a.fault_stats().dropped;
    assert_eq!(got.len() as u64 + dropped, 400);
    assert!(dropped > 100 && dropped < 300, "{dropped} of 400 at 0.5");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    assert!(
        TcpFaults {
            drop_rate: f64::NAN,
            ..TcpFaults::default()
        }
        .validate()
        .is_err()
            && a.set_faults(TcpFaults {
                delay: (Duration::from_millis(5), Duration::from_millis(1)),
                ..TcpFaults::default()
            })
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_frames_back_in_order() {
    let ((a, _a_in), (b, mut b_in)) = pair().await;
    // Connect first, so the delay measured is the injected one.
    send(&a, ping(1, 2, MARKER)).await;
    assert_eq!(recv_seq(&mut b_in).await, MARKER);
    let min = Duration::from_millis(40);
    a.set_faults(TcpFaults {
        delay: (min, Duration::from_millis(80)),
        seed: 3,
        ..TcpFaults::default()
    })
    .unwrap();
    let sent = Instant::now();
    for seq in 0..100 {
        send(&a, ping(1, 2, seq)).await;
    }
    // Removing the delay while frames wait in the line: later frames queue
    // behind them, not before.
    a.set_faults(TcpFaults::default()).unwrap();
    for seq in 100..150 {
        send(&a, ping(1, 2, seq)).await;
    }
    assert_eq!(recv_seq(&mut b_in).await, 0);
    assert!(
        sent.elapsed() >= min,
        "the first frame came before its delay"
    );
    for seq in 1..150 {
        assert_eq!(recv_seq(&mut b_in).await, seq);
    }
    assert_eq!(a.fault_stats().delayed, 100);
    // Once the line is empty, frames go straight to the queue again.
    send(&a, ping(1, 2, MARKER)).await;
    assert_eq!(recv_seq(&mut b_in).await, MARKER);
    assert_eq!(a.fault_stats().delayed, 100);
    assert_eq!(b.fault_stats(), TcpFaultStats::default());
}
