//! The in-process network through the `Transport` trait, with real tokio
//! endpoints: ordering, every fault, healing, pausing, bounds and shutdown.
//!
//! Every test is bounded by a timeout, and none asserts that anything
//! happens quickly: "nothing arrives" is shown either by a marker sent
//! after the frames in question on the same FIFO link (the marker arriving
//! first proves the frames were lost), or by a quiet period, which a slow
//! machine cannot make fail.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv::net::memory::FaultCounters;
use ringkv::{
    Envelope, Error, Faults, Inbox, MemoryNetConfig, MemoryNetwork, Message, NetConfig, NodeId,
    Transport,
};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

/// The bound on every test, far above what any of them needs.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// How long a test watches an inbox to show that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

/// A marker's sequence number, above any data frame's.
const MARKER: u64 = u64::MAX;

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test did not finish in time");
}

fn network(config: MemoryNetConfig) -> MemoryNetwork {
    MemoryNetwork::new(config).expect("valid config")
}

fn ping(from: NodeId, to: NodeId, seq: u64) -> Envelope {
    Envelope::new(
        from,
        to,
        Message::Ping {
            seq,
            payload: vec![],
        },
    )
}

fn seq_of(envelope: &Envelope) -> u64 {
    match &envelope.msg {
        Message::Ping { seq, .. } => *seq,
        other => panic!("unexpected message {other:?}"),
    }
}

async fn recv(inbox: &mut Inbox) -> Envelope {
    inbox.recv().await.expect("inbox closed")
}

/// Receives until the marker, returning the sequence numbers before it.
async fn until_marker(inbox: &mut Inbox) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let seq = seq_of(&recv(inbox).await);
        if seq == MARKER {
            return seen;
        }
        seen.push(seq);
    }
}

/// Asserts that nothing arrives for [`QUIET`].
async fn assert_quiet(inbox: &mut Inbox) {
    if let Ok(got) = tokio::time::timeout(QUIET, inbox.recv()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn inversions(order: &[u64]) -> usize {
    order.windows(2).filter(|w| w[0] > w[1]).count()
}

fn faults(drop: f64, duplicate: f64, reorder: f64, delay_ms: (u64, u64)) -> Faults {
    Faults {
        drop_rate: drop,
        duplicate_rate: duplicate,
        reorder_rate: reorder,
        delay: (
            Duration::from_millis(delay_ms.0),
            Duration::from_millis(delay_ms.1),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_keep_per_link_order_under_delay() {
    bounded(async {
        const PER_LINK: u64 = 1500;
        let net = network(MemoryNetConfig::default());
        net.set_faults(faults(0.0, 0.0, 0.0, (0, 2))).unwrap();
        let ids = [A, B, C];
        let mut endpoints: Vec<Arc<dyn Transport>> = Vec::new();
        let mut receivers = Vec::new();
        for id in ids {
            let (endpoint, mut inbox) = net.endpoint(id).unwrap();
            endpoints.push(Arc::new(endpoint));
            receivers.push(tokio::spawn(async move {
                let mut by_sender: Vec<(NodeId, u64)> = Vec::new();
                for _ in 0..2 * PER_LINK {
                    let env = recv(&mut inbox).await;
                    assert_eq!(env.to, id);
                    by_sender.push((env.from, seq_of(&env)));
                }
                by_sender
            }));
        }
        let senders: Vec<_> = endpoints
            .iter()
            .map(|endpoint| {
                let endpoint = Arc::clone(endpoint);
                tokio::spawn(async move {
                    let me = endpoint.local_id();
                    for seq in 0..PER_LINK {
                        for to in ids.into_iter().filter(|&to| to != me) {
                            endpoint.send(ping(me, to, seq)).unwrap();
                        }
                        if seq % 100 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.unwrap();
        }
        for (receiver, me) in receivers.into_iter().zip(ids) {
            let got = receiver.await.unwrap();
            for from in ids.into_iter().filter(|&from| from != me) {
                let order: Vec<u64> = got
                    .iter()
                    .filter(|(sender, _)| *sender == from)
                    .map(|(_, seq)| *seq)
                    .collect();
                assert_eq!(order, (0..PER_LINK).collect::<Vec<_>>(), "{from} -> {me}");
            }
        }
        for endpoint in &endpoints {
            let stats = endpoint.stats();
            assert_eq!(stats.frames_sent, 2 * PER_LINK);
            assert_eq!(stats.frames_received, 2 * PER_LINK);
            assert_eq!(stats.bad_frames, 0);
        }
        let counters = net.fault_counters();
        assert_eq!(counters.delivered, 6 * PER_LINK);
        assert!(counters.delayed > 0);
    })
    .await;
}

#[tokio::test]
async fn drop_rate_one_loses_everything_until_cleared() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        net.set_faults(faults(1.0, 0.0, 0.0, (0, 0))).unwrap();
        for seq in 0..100 {
            // A lost frame is still a successful send, as on a real wire.
            a.send(ping(A, B, seq)).unwrap();
        }
        assert_eq!(net.fault_counters().dropped_by_drop_rate, 100);
        net.clear_faults();
        a.send(ping(A, B, MARKER)).unwrap();
        assert_eq!(until_marker(&mut b_inbox).await, Vec::<u64>::new());
        assert_eq!(a.stats().frames_sent, 101);
    })
    .await;
}

#[tokio::test]
async fn partial_drop_rate_loses_some_and_keeps_the_order_of_the_rest() {
    bounded(async {
        let net = network(MemoryNetConfig {
            seed: 3,
            ..MemoryNetConfig::default()
        });
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        net.set_faults(faults(0.3, 0.0, 0.0, (0, 0))).unwrap();
        let reader = tokio::spawn(async move { until_marker(&mut b_inbox).await });
        for seq in 0..2000 {
            a.send(ping(A, B, seq)).unwrap();
        }
        net.clear_faults();
        a.send(ping(A, B, MARKER)).unwrap();
        let got = reader.await.unwrap();
        assert!(
            (1200..=1600).contains(&got.len()),
            "{} of 2000 delivered at drop rate 0.3",
            got.len()
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "order broken");
        assert_eq!(
            net.fault_counters().dropped_by_drop_rate,
            2000 - got.len() as u64
        );
    })
    .await;
}

#[tokio::test]
async fn duplicate_rate_one_delivers_each_envelope_twice() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (b, mut b_inbox) = net.endpoint(B).unwrap();
        net.set_faults(faults(0.0, 1.0, 0.0, (0, 1))).unwrap();
        for seq in 0..200 {
            a.send(ping(A, B, seq)).unwrap();
        }
        net.clear_faults();
        a.send(ping(A, B, MARKER)).unwrap();
        let got = until_marker(&mut b_inbox).await;
        let expected: Vec<u64> = (0..200).flat_map(|seq| [seq, seq]).collect();
        assert_eq!(got, expected);
        assert_eq!(net.fault_counters().duplicated, 200);
        assert_eq!(b.stats().frames_received, 401);
        // The sender handed over each envelope once.
        assert_eq!(a.stats().frames_sent, 201);
    })
    .await;
}

#[tokio::test]
async fn reorder_rate_one_reorders_and_loses_nothing() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        net.set_faults(faults(0.0, 0.0, 1.0, (0, 20))).unwrap();
        for seq in 0..500 {
            a.send(ping(A, B, seq)).unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..500 {
            got.push(seq_of(&recv(&mut b_inbox).await));
        }
        assert!(inversions(&got) > 0, "reorder rate 1.0 kept order");
        got.sort_unstable();
        assert_eq!(got, (0..500).collect::<Vec<_>>());
        assert_eq!(net.fault_counters().reordered, 500);
    })
    .await;
}

#[tokio::test]
async fn two_way_partition_blocks_both_directions_and_heal_restores() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, mut a_inbox) = net.endpoint(A).unwrap();
        let (b, mut b_inbox) = net.endpoint(B).unwrap();
        let (_c, mut c_inbox) = net.endpoint(C).unwrap();
        net.partition(&[A], &[B]);
        for seq in 0..50 {
            a.send(ping(A, B, seq)).unwrap();
            b.send(ping(B, A, seq)).unwrap();
        }
        // A link outside the partition works meanwhile.
        a.send(ping(A, C, 7)).unwrap();
        assert_eq!(seq_of(&recv(&mut c_inbox).await), 7);
        assert_eq!(net.fault_counters().dropped_by_partition, 100);

        net.heal();
        a.send(ping(A, B, MARKER)).unwrap();
        b.send(ping(B, A, MARKER)).unwrap();
        assert_eq!(until_marker(&mut b_inbox).await, Vec::<u64>::new());
        assert_eq!(until_marker(&mut a_inbox).await, Vec::<u64>::new());
        a.send(ping(A, B, 1)).unwrap();
        assert_eq!(seq_of(&recv(&mut b_inbox).await), 1);
    })
    .await;
}

#[tokio::test]
async fn one_way_partition_blocks_one_direction_only() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, mut a_inbox) = net.endpoint(A).unwrap();
        let (b, mut b_inbox) = net.endpoint(B).unwrap();
        net.partition_one_way(&[A], &[B]);
        for seq in 0..20 {
            a.send(ping(A, B, seq)).unwrap();
            b.send(ping(B, A, seq)).unwrap();
        }
        b.send(ping(B, A, MARKER)).unwrap();
        assert_eq!(
            until_marker(&mut a_inbox).await,
            (0..20).collect::<Vec<_>>()
        );
        net.heal();
        a.send(ping(A, B, MARKER)).unwrap();
        assert_eq!(until_marker(&mut b_inbox).await, Vec::<u64>::new());
    })
    .await;
}

#[tokio::test]
async fn frames_in_flight_are_lost_when_a_partition_starts() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        // Pausing B keeps the frames in flight for as long as the test
        // needs, whatever the machine's speed.
        net.pause(B);
        for seq in 0..10 {
            a.send(ping(A, B, seq)).unwrap();
        }
        assert_eq!(net.in_flight(A, B), 10);
        net.partition(&[A], &[B]);
        assert_eq!(net.in_flight(A, B), 0);
        net.heal();
        net.resume(B);
        a.send(ping(A, B, MARKER)).unwrap();
        assert_eq!(until_marker(&mut b_inbox).await, Vec::<u64>::new());
        assert_eq!(net.fault_counters().dropped_by_partition, 10);
    })
    .await;
}

#[tokio::test]
async fn delay_holds_each_frame_at_least_the_minimum() {
    bounded(async {
        let min = Duration::from_millis(50);
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        net.set_faults(Faults {
            delay: (min, Duration::from_millis(80)),
            ..Faults::default()
        })
        .unwrap();
        let mut sent_at = Vec::new();
        for seq in 0..20 {
            sent_at.push(Instant::now());
            a.send(ping(A, B, seq)).unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for (seq, sent) in sent_at.into_iter().enumerate() {
            let env = recv(&mut b_inbox).await;
            assert_eq!(seq_of(&env), seq as u64);
            let held = sent.elapsed();
            assert!(held >= min, "frame {seq} arrived after {held:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn paused_node_receives_nothing_until_resumed_then_everything_in_order() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, mut a_inbox) = net.endpoint(A).unwrap();
        let (b, mut b_inbox) = net.endpoint(B).unwrap();
        let (c, mut c_inbox) = net.endpoint(C).unwrap();
        net.pause(B);
        for seq in 0..100 {
            a.send(ping(A, B, seq)).unwrap();
        }
        // A paused node's own sends are held too.
        for seq in 0..50 {
            b.send(ping(B, A, seq)).unwrap();
        }
        // Others carry on.
        c.send(ping(C, A, 9)).unwrap();
        assert_eq!(seq_of(&recv(&mut a_inbox).await), 9);
        assert_quiet(&mut b_inbox).await;
        assert_quiet(&mut a_inbox).await;
        assert_eq!(net.in_flight(A, B), 100);
        assert_eq!(net.in_flight(B, A), 50);

        net.resume(B);
        for seq in 0..100 {
            assert_eq!(seq_of(&recv(&mut b_inbox).await), seq);
        }
        for seq in 0..50 {
            assert_eq!(seq_of(&recv(&mut a_inbox).await), seq);
        }
        assert!(c_inbox.try_recv().is_err());
    })
    .await;
}

#[tokio::test]
async fn full_link_refuses_the_newest_envelope_with_queue_full() {
    bounded(async {
        let net = network(MemoryNetConfig {
            net: NetConfig {
                send_queue_frames: 8,
                ..NetConfig::default()
            },
            ..MemoryNetConfig::default()
        });
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        net.pause(B);
        for seq in 0..8 {
            a.send(ping(A, B, seq)).unwrap();
        }
        match a.send(ping(A, B, 8)) {
            Err(err @ Error::QueueFull { peer, capacity }) => {
                assert_eq!((peer, capacity), (B, 8));
                assert!(err.is_retryable());
            }
            other => panic!("expected QueueFull, got {other:?}"),
        }
        assert_eq!(a.stats().refused_queue_full, 1);
        assert_eq!(a.stats().frames_sent, 8);
        net.resume(B);
        for seq in 0..8 {
            assert_eq!(seq_of(&recv(&mut b_inbox).await), seq);
        }
        // Delivery made room again.
        a.send(ping(A, B, 8)).unwrap();
        assert_eq!(seq_of(&recv(&mut b_inbox).await), 8);
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_keeps_its_backlog_in_the_network_bounded_per_link() {
    bounded(async {
        let net = network(MemoryNetConfig {
            net: NetConfig {
                send_queue_frames: 16,
                inbox_frames: 4,
                ..NetConfig::default()
            },
            ..MemoryNetConfig::default()
        });
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (c, _c_inbox) = net.endpoint(C).unwrap();
        let (_b, mut b_inbox) = net.endpoint(B).unwrap();
        let mut next = 0;
        // Fill the link, let the delivery task fill the inbox, refill the
        // link: then B's consumer has fallen behind by inbox plus link.
        while a.send(ping(A, B, next)).is_ok() {
            next += 1;
        }
        assert_eq!(next, 16);
        while net.in_flight(A, B) > 12 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while a.send(ping(A, B, next)).is_ok() {
            next += 1;
        }
        assert_eq!(next, 20);
        assert!(matches!(
            a.send(ping(A, B, next)),
            Err(Error::QueueFull { .. })
        ));
        // Another sender's link to B is not affected by A's backlog.
        c.send(ping(C, B, 1000)).unwrap();

        let mut from_a = Vec::new();
        let mut from_c = Vec::new();
        while from_a.len() < 20 || from_c.is_empty() {
            let env = recv(&mut b_inbox).await;
            if env.from == A {
                from_a.push(seq_of(&env));
            } else {
                from_c.push(seq_of(&env));
            }
        }
        assert_eq!(from_a, (0..20).collect::<Vec<_>>());
        assert_eq!(from_c, vec![1000]);
    })
    .await;
}

#[tokio::test]
async fn shutdown_refuses_sends_and_removes_the_node() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, mut a_inbox) = net.endpoint(A).unwrap();
        let (b, _b_inbox) = net.endpoint(B).unwrap();
        assert!(matches!(net.endpoint(A), Err(Error::InvalidInput(_))));
        let a: Arc<dyn Transport> = Arc::new(a);
        a.learn_peer(B, "anything").unwrap();
        a.shutdown().await;
        // Twice is harmless.
        a.shutdown().await;
        assert!(matches!(a.send(ping(A, B, 1)), Err(Error::Shutdown)));
        assert!(matches!(b.send(ping(B, A, 1)), Err(Error::UnknownPeer(A))));
        assert!(matches!(b.send(ping(B, C, 1)), Err(Error::UnknownPeer(C))));
        // The delivery task has ended, so the inbox reports the end.
        assert!(a_inbox.recv().await.is_none());
        // The id can come back as a new endpoint.
        let (_a2, mut a2_inbox) = net.endpoint(A).unwrap();
        b.send(ping(B, A, 2)).unwrap();
        assert_eq!(seq_of(&recv(&mut a2_inbox).await), 2);
    })
    .await;
}

#[tokio::test]
async fn envelope_naming_another_sender_is_dropped_as_a_bad_frame() {
    bounded(async {
        let net = network(MemoryNetConfig::default());
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (b, mut b_inbox) = net.endpoint(B).unwrap();
        let (_c, _c_inbox) = net.endpoint(C).unwrap();
        a.send(ping(C, B, 1)).unwrap();
        a.send(ping(A, B, MARKER)).unwrap();
        assert_eq!(until_marker(&mut b_inbox).await, Vec::<u64>::new());
        assert_eq!(b.stats().bad_frames, 1);
        assert_eq!(b.stats().frames_received, 1);
    })
    .await;
}

#[tokio::test]
async fn oversized_envelope_is_refused_at_send() {
    bounded(async {
        let max = 4096;
        let net = network(MemoryNetConfig {
            net: NetConfig {
                max_frame_bytes: max,
                ..NetConfig::default()
            },
            ..MemoryNetConfig::default()
        });
        let (a, _a_inbox) = net.endpoint(A).unwrap();
        let (_b, _b_inbox) = net.endpoint(B).unwrap();
        let big = Envelope::new(
            A,
            B,
            Message::Ping {
                seq: 0,
                payload: vec![0; 2 * max],
            },
        );
        match a.send(big) {
            Err(Error::FrameTooLarge { size, max: limit }) => {
                assert!(size > max);
                assert_eq!(limit, max);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(net.fault_counters(), FaultCounters::default());
    })
    .await;
}

#[test]
fn endpoint_outside_a_runtime_is_an_error_not_a_panic() {
    let net = network(MemoryNetConfig::default());
    assert!(matches!(net.endpoint(A), Err(Error::InvalidInput(_))));
    // The failed attempt did not leave the id registered.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert!(net.endpoint(A).is_ok());
    });
}

#[test]
fn invalid_configuration_and_faults_are_refused() {
    let zero_queue = MemoryNetConfig {
        net: NetConfig {
            send_queue_frames: 0,
            ..NetConfig::default()
        },
        ..MemoryNetConfig::default()
    };
    assert!(matches!(
        MemoryNetwork::new(zero_queue),
        Err(Error::InvalidInput(_))
    ));
    let net = network(MemoryNetConfig::default());
    assert!(net.set_faults(faults(2.0, 0.0, 0.0, (0, 0))).is_err());
    assert_eq!(net.faults(), Faults::default());
}
