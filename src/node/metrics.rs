//! A node's metrics in the Prometheus text format (`/metrics` on the admin
//! port, [`super::admin`]), through the `prometheus-client` crate.
//!
//! Two kinds:
//! - **Requests**, counted as they are served ([`RequestMetrics`], held by
//!   the [`super::Node`]): requests per op and consistency level, their
//!   latency per op as a histogram, and failures per op and error code
//!   (`Unavailable` and `Timeout` are the quorum failures).
//! - **State**, read from the node's actors at each scrape ([`Snapshot`]):
//!   members by state and phi per peer, keys and hints, ring epoch and
//!   members, transfers, anti-entropy, the engine's memtable and cache
//!   bytes, flushes, compactions, corruptions. Counters that the actors
//!   keep since start are exposed as counters; sizes as gauges.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::Error;
use crate::protocol::{ErrorReply, Op, StatusView};
use crate::replication::Consistency;
use crate::storage::EngineStats;

/// An op and the consistency level it asked for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLevel {
    /// The op's name (`get`, `put`, ...).
    pub op: &'static str,
    /// `r` or `w` asked for: `one`, `two`, `quorum`, `all`, a count, or
    /// `default` (the bucket's); `none` for ops without one.
    pub consistency: &'static str,
}

/// An op.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpName {
    /// The op's name.
    pub op: &'static str,
}

/// An op and the error code it failed with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpError {
    /// The op's name.
    pub op: &'static str,
    /// The error code (`Unavailable`, `Timeout`, ...).
    pub code: String,
}

/// A peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Peer {
    /// Its id.
    pub peer: String,
}

/// A membership state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
}

type Latency = Family<OpName, Histogram, fn() -> Histogram>;

/// Client requests served by a node, counted as they finish.
#[derive(Clone)]
pub struct RequestMetrics {
    requests: Family<OpLevel, Counter>,
    failures: Family<OpError, Counter>,
    latency: Latency,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            failures: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// Buckets from 50 µs to about 1.6 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The consistency level `op` asked for, as a label (no allocation: this
/// runs for every request).
pub fn consistency_label(op: &Op) -> &'static str {
    const COUNTS: [&str; 16] = [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    let level = match op {
        Op::Get { options, .. }
        | Op::CounterGet { options, .. }
        | Op::SetMembers { options, .. }
        | Op::Scan { options, .. }
        | Op::MultiGet { options, .. } => options.r,
        Op::Put { options, .. }
        | Op::MultiPut { options, .. }
        | Op::Delete { options, .. }
        | Op::CounterAdd { options, .. }
        | Op::SetAdd { options, .. }
        | Op::SetRemove { options, .. } => options.w,
        _ => return "none",
    };
    match level {
        None => "default",
        Some(Consistency::One) => "one",
        Some(Consistency::Two) => "two",
        Some(Consistency::Quorum) => "quorum",
        Some(Consistency::All) => "all",
        Some(Consistency::Count(n)) => COUNTS
            .get((n as usize).wrapping_sub(1))
            .copied()
            .unwrap_or("more"),
    }
}

impl RequestMetrics {
    /// Counts one request: `op` (its name and level, taken before it
    /// ran), how long it took, and its error if it failed.
    pub fn record(
        &self,
        op: &'static str,
        level: &'static str,
        took: Duration,
        error: Option<&Error>,
    ) {
        self.requests
            .get_or_create(&OpLevel {
                op,
                consistency: level,
            })
            .inc();
        self.latency
            .get_or_create(&OpName { op })
            .observe(took.as_secs_f64());
        if let Some(e) = error {
            let code = format!("{:?}", ErrorReply::from(e).code);
            self.failures.get_or_create(&OpError { op, code }).inc();
        }
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "ringkv_requests",
            "Client requests served, by op and consistency level asked for",
            self.requests.clone(),
        );
        registry.register(
            "ringkv_request_failures",
            "Client requests that failed, by op and error code (Unavailable and Timeout are quorum failures)",
            self.failures.clone(),
        );
        registry.register(
            "ringkv_request_duration_seconds",
            "Time to serve a client request, by op",
            self.latency.clone(),
        );
    }
}

/// What the node's actors report at a scrape.
pub struct Snapshot {
    /// The status view (members, keys, hints, transfers, anti-entropy).
    pub status: StatusView,
    /// The engine's counters.
    pub engine: EngineStats,
    /// Compaction steps the compactor ran.
    pub compactions: u64,
    /// The ring in force: its epoch and members, and whether a change is
    /// in progress.
    pub ring_epoch: u64,
    /// Members of the ring in force.
    pub ring_members: usize,
    /// Whether a ring change is in progress.
    pub ring_changing: bool,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The Prometheus text of `requests` and `snapshot`.
pub fn render(requests: &RequestMetrics, snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    requests.register(&mut registry);
    let s = &snapshot.status;
    let members: Family<State, Gauge> = Family::default();
    for state in ["alive", "suspect", "down", "left"] {
        let n = s
            .members
            .iter()
            .filter(|m| m.state.eq_ignore_ascii_case(state))
            .count();
        members
            .get_or_create(&State {
                state: state.into(),
            })
            .set(n as i64);
    }
    registry.register(
        "ringkv_members",
        "Members this node knows, by state",
        members,
    );
    let phi: Family<Peer, Gauge<f64, AtomicU64>> = Family::default();
    for m in s.members.iter().filter(|m| m.node != s.node) {
        phi.get_or_create(&Peer {
            peer: m.node.to_string(),
        })
        .set(m.phi);
    }
    registry.register(
        "ringkv_peer_phi",
        "Phi of each peer's acks (0 for peers this node does not monitor)",
        phi,
    );
    gauge(
        &mut registry,
        "ringkv_keys",
        "Objects in this node's store (an estimate for the LSM)",
        s.keys,
    );
    gauge(
        &mut registry,
        "ringkv_hints",
        "Hints this node holds for other nodes",
        s.hints,
    );
    gauge(
        &mut registry,
        "ringkv_requests_in_flight",
        "Client requests in flight",
        s.in_flight,
    );
    gauge(
        &mut registry,
        "ringkv_ring_epoch",
        "Epoch of the ring in force",
        snapshot.ring_epoch,
    );
    gauge(
        &mut registry,
        "ringkv_ring_members",
        "Nodes of the ring in force",
        snapshot.ring_members as u64,
    );
    gauge(
        &mut registry,
        "ringkv_ring_change_in_progress",
        "1 while a ring change is in progress",
        u64::from(snapshot.ring_changing),
    );
    let running = s.transfers.iter().filter(|t| t.state != "done").count() as u64;
    gauge(
        &mut registry,
        "ringkv_transfers_running",
        "Range transfers into this node not done",
        running,
    );
    counter(
        &mut registry,
        "ringkv_transfer_keys",
        "Keys stored by range transfers into this node since start",
        s.transfers.iter().map(|t| t.keys).sum(),
    );
    let ae = &s.anti_entropy;
    counter(
        &mut registry,
        "ringkv_anti_entropy_rounds",
        "Anti-entropy rounds finished",
        ae.rounds,
    );
    counter(
        &mut registry,
        "ringkv_anti_entropy_exchanges",
        "Anti-entropy exchanges completed",
        ae.ranges_compared,
    );
    counter(
        &mut registry,
        "ringkv_anti_entropy_exchanges_failed",
        "Anti-entropy exchanges abandoned",
        ae.exchanges_failed,
    );
    counter(
        &mut registry,
        "ringkv_anti_entropy_objects_repaired",
        "Objects anti-entropy sent or merged",
        ae.objects_repaired,
    );
    counter(
        &mut registry,
        "ringkv_tombstones_purged",
        "Tombstones purged",
        ae.tombstones_purged,
    );
    gauge(
        &mut registry,
        "ringkv_anti_entropy_last_round_milliseconds",
        "How long the last anti-entropy round took",
        ae.last_round_ms,
    );
    let e = &snapshot.engine;
    gauge(
        &mut registry,
        "ringkv_memtable_bytes",
        "Bytes in memtables",
        e.memtable_bytes,
    );
    gauge(
        &mut registry,
        "ringkv_cache_bytes",
        "Bytes in the block cache",
        e.cache_bytes,
    );
    gauge(
        &mut registry,
        "ringkv_disk_bytes",
        "Bytes of the engine's files",
        e.disk_bytes,
    );
    counter(
        &mut registry,
        "ringkv_cache_hits",
        "Block cache hits",
        e.cache_hits,
    );
    counter(
        &mut registry,
        "ringkv_cache_misses",
        "Block cache misses",
        e.cache_misses,
    );
    counter(
        &mut registry,
        "ringkv_bloom_skips",
        "Point reads a bloom filter answered",
        e.bloom_skips,
    );
    counter(
        &mut registry,
        "ringkv_flushes",
        "Memtables flushed to tables",
        e.flushes,
    );
    counter(
        &mut registry,
        "ringkv_compactions",
        "Compaction steps run",
        snapshot.compactions,
    );
    counter(
        &mut registry,
        "ringkv_disk_bytes_written",
        "Bytes the engine wrote to its files",
        e.disk_bytes_written,
    );
    counter(
        &mut registry,
        "ringkv_storage_corruptions",
        "Damaged places the engine found in its files",
        s.corruptions,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::protocol::ReadOptions;

    fn get(r: Option<Consistency>) -> Op {
        Op::Get {
            bucket: ByteBuf::from(b"b".to_vec()),
            key: ByteBuf::from(b"k".to_vec()),
            options: ReadOptions {
                r,
                ..ReadOptions::default()
            },
        }
    }

    #[test]
    fn levels_are_named_without_allocating_and_counts_are_bounded() {
        assert_eq!(consistency_label(&get(None)), "default");
        assert_eq!(consistency_label(&get(Some(Consistency::Quorum))), "quorum");
        assert_eq!(consistency_label(&get(Some(Consistency::Count(3)))), "3");
        assert_eq!(consistency_label(&get(Some(Consistency::Count(16)))), "16");
        assert_eq!(
            consistency_label(&get(Some(Consistency::Count(17)))),
            "more"
        );
        assert_eq!(consistency_label(&get(Some(Consistency::Count(0)))), "more");
        assert_eq!(consistency_label(&Op::Ring), "none");
        // Batches and scans are labelled by the level they ask for.
        let multi_put = Op::MultiPut {
            bucket: ByteBuf::from(b"b".to_vec()),
            items: vec![],
            options: crate::protocol::WriteOptions {
                w: Some(Consistency::All),
                ..Default::default()
            },
        };
        assert_eq!(consistency_label(&multi_put), "all");
        let multi_get = Op::MultiGet {
            bucket: ByteBuf::from(b"b".to_vec()),
            keys: vec![],
            options: ReadOptions {
                r: Some(Consistency::One),
                ..ReadOptions::default()
            },
        };
        assert_eq!(consistency_label(&multi_get), "one");
    }

    #[test]
    fn recorded_requests_show_in_the_text_with_their_labels() {
        let m = RequestMetrics::default();
        for _ in 0..3 {
            m.record("get", "quorum", Duration::from_millis(2), None);
        }
        let failed = Error::Unavailable {
            needed: 2,
            got: 1,
            indefinite: false,
        };
        m.record("put", "all", Duration::from_micros(10), Some(&failed));
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("ringkv_requests_total{op=\"get\",consistency=\"quorum\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_request_failures_total{op=\"put\",code=\"Unavailable\"} 1"),
            "{text}"
        );
        // 2 ms falls in the bucket ending at 0.0032 s (50 µs doubled 6
        // times), not in the one ending at 0.0016 s.
        assert!(
            text.contains("ringkv_request_duration_seconds_bucket{le=\"0.0016\",op=\"get\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("ringkv_request_duration_seconds_bucket{le=\"0.0032\",op=\"get\"} 3"),
            "{text}"
        );
    }
}
