//! Helpers shared by the membership integration tests: a scaled-down
//! configuration, bounded waits, and event collection.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use ringkv::config::MembershipConfig;
use ringkv::node::{Node, NodeEvent};
use ringkv::{MemberEvent, MemberStatus, NodeId, RingConfig};
use tokio::sync::mpsc::UnboundedReceiver;

/// 50 ms heartbeats. The pause and deviation are scaled less than 20x so
/// that a test machine busy with other builds (tens of ms of scheduling
/// jitter) does not make the detector fire: 300 ms acceptable pause, 20 ms
/// minimum deviation, three log2 N intervals of suspicion.
pub fn fast() -> MembershipConfig {
    MembershipConfig {
        gossip_interval: Duration::from_millis(50),
        acceptable_heartbeat_pause: Duration::from_millis(300),
        min_std_deviation: Duration::from_millis(20),
        suspicion_multiplier: 3.0,
        local_pause_guard: Duration::from_millis(200),
        leave_linger: Duration::from_millis(300),
        ..MembershipConfig::default()
    }
}

/// Few tokens: the ring is not what these tests measure.
pub fn small_ring() -> RingConfig {
    RingConfig {
        vnodes_per_node: 16,
    }
}

/// How long a crash should take to be DOWN everywhere under [`fast`], for
/// `n` nodes: a heartbeat interval plus the acceptable pause plus six
/// deviations of silence, a few rounds of relay, and the suspicion timeout.
pub fn expected_detection(n: usize) -> Duration {
    let cfg = fast();
    let rounds = cfg.suspicion_multiplier * (n as f64).log2().max(1.0) + 4.0;
    cfg.gossip_interval.mul_f64(rounds + 1.0)
        + cfg.acceptable_heartbeat_pause
        + cfg.min_std_deviation * 6
}

/// Polls `check` every 20 ms until it returns true or `limit` passes;
/// returns the time it took, or `None`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What `at` believes about `of`.
pub async fn status(at: &Node, of: NodeId) -> Option<MemberStatus> {
    at.members()
        .await
        .ok()?
        .into_iter()
        .find(|e| e.node == of)
        .map(|e| e.status)
}

/// Whether every node in `at` holds every node in `of` in `want`.
pub async fn all_see(at: &[Node], of: &[NodeId], want: MemberStatus) -> bool {
    for a in at {
        for &o in of {
            if a.id() != o && status(a, o).await != Some(want) {
                return false;
            }
        }
    }
    true
}

/// Whether every node holds the same ring, with exactly `members`.
pub async fn same_ring(nodes: &[Node], members: &[NodeId]) -> bool {
    let mut first = None;
    for n in nodes {
        let Ok(ring) = n.ring().await else {
            return false;
        };
        let got: Vec<NodeId> = ring.members().into_iter().collect();
        if got != members {
            return false;
        }
        match &first {
            None => first = Some(ring),
            Some(r) if **r != *ring => return false,
            Some(_) => {}
        }
    }
    true
}

/// Drains the membership events received so far.
pub fn drain(rx: &mut UnboundedReceiver<NodeEvent>) -> Vec<MemberEvent> {
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        if let NodeEvent::Member(e) = event {
            events.push(e);
        }
    }
    events
}
