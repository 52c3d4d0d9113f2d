//! Configuration of a node's replication machines: the replica,
//! coordinator and hinted handoff, range transfers, and anti-entropy, with
//! the reasons for every default. Bucket properties are in
//! [`crate::replication::buckets`]. Re-exported by `config.rs`.

use std::time::Duration;

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::error::{Error, Result};

/// Configuration of a node's replica, coordinator and hinted handoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Most hints a node holds for other nodes. Default 1,000,000: at the
    /// default 1 KiB objects about 1 GiB of disk, hours of writes for a
    /// node that is down. When full, a fallback refuses further hinted
    /// writes, so the put counts one fewer ack (the client sees fewer
    /// copies, never a silent drop).
    pub max_hints: usize,
    /// How often hinted handoff looks for owners that are back. Default
    /// 1 s, the gossip interval: an owner cannot be seen back sooner.
    pub handoff_interval: Duration,
    /// Hints read from the store per owner per round. Default 256.
    pub handoff_batch: usize,
    /// Hint deliveries awaiting an answer, per owner. Default 64: keeps a
    /// recovering node busy without flooding it.
    pub handoff_in_flight: usize,
    /// A delivery unanswered this long is offered again. Default 5 s.
    pub handoff_retry: Duration,
    /// Replica requests being served at once (each on a blocking thread).
    /// Default 64; more wait in the replica actor's queue.
    pub max_concurrent_io: usize,
    /// Bytes of values that reads may hold at once, node-wide: from the
    /// start of a read until its answer has been handed on (to this node's
    /// coordinator, or to the transport for another node). A read whose
    /// size is not yet known is counted as the largest object,
    /// [`crate::replication::limits::MAX_OBJECT_BYTES`] (just under 16 MiB),
    /// and as its values' real size once it has run. Default 128 MiB: eight reads of unknown size at once, which
    /// keeps two cores busy, while many clients asking for 15 MiB values
    /// at once cannot make the node hold more than this in reads (64 such
    /// reads once held about 3 GB). At least one read always runs.
    pub read_budget_bytes: usize,
    /// Client requests a node accepts in flight before refusing new ones
    /// with `QueueFull` (retryable). Default 10,000.
    pub max_in_flight: usize,
    /// How often the compactor looks at the engine's level shape. Default
    /// 100 ms: a flush adds one L0 table per memtable (64 MiB), far less
    /// often than that under any load.
    pub compaction_poll: Duration,
    /// Data shards of the node: pairs of a coordinator and a replica
    /// actor, each on a thread of its own, each serving the keys of one
    /// equal slice of the token ring (`docs/architecture.md`, "Data
    /// shards"). The node's request budgets (`max_in_flight`,
    /// `max_concurrent_io`, `read_budget_bytes`) are shared out among
    /// them. 0, the default, is one per two CPUs the process may run on
    /// (at least 1, at most [`MAX_DATA_SHARDS`]): the other half is left
    /// to what every request also needs, the kernel's network work, the
    /// client ports and the transport's tasks on the node's thread, and
    /// the blocking pool. On the 2-CPU machine of `docs/benchmarks.md` a
    /// second shard cost more in thread crossings than it gave ("Data
    /// shards" there).
    pub data_shards: usize,
}

/// The most data shards a node runs ([`ReplicaConfig::data_shards`]).
pub const MAX_DATA_SHARDS: usize = 64;

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_hints: 1_000_000,
            handoff_interval: Duration::from_secs(1),
            handoff_batch: 256,
            handoff_in_flight: 64,
            handoff_retry: Duration::from_secs(5),
            max_concurrent_io: 64,
            read_budget_bytes: 128 << 20,
            max_in_flight: 10_000,
            compaction_poll: Duration::from_millis(100),
            data_shards: 0,
        }
    }
}

impl ReplicaConfig {
    /// The data shards the node runs: `data_shards`, or for 0 one per two
    /// CPUs the process may run on (at least 1, at most
    /// [`MAX_DATA_SHARDS`]).
    pub fn shards(&self) -> usize {
        match self.data_shards {
            0 => (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2)
                .clamp(1, MAX_DATA_SHARDS),
            n => n,
        }
    }

    /// This configuration as one of `shards` data shards sees it: the
    /// node's budgets shared out (each rounded up, at least 1).
    pub fn per_shard(&self, shards: usize) -> ReplicaConfig {
        let share = |n: usize| n.div_ceil(shards.max(1)).max(1);
        ReplicaConfig {
            max_concurrent_io: share(self.max_concurrent_io),
            read_budget_bytes: share(self.read_budget_bytes),
            max_in_flight: share(self.max_in_flight),
            ..self.clone()
        }
    }

    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.data_shards > MAX_DATA_SHARDS {
            return Err(Error::InvalidInput(format!(
                "replica config: data_shards must be 0 (one per CPU) to {MAX_DATA_SHARDS}, not {}",
                self.data_shards
            )));
        }
        if self.max_hints == 0
            || self.handoff_batch == 0
            || self.handoff_in_flight == 0
            || self.max_concurrent_io == 0
            || self.max_in_flight == 0
            || self.read_budget_bytes == 0
        {
            return Err(Error::InvalidInput(
                "replica config: max_hints, handoff_batch, handoff_in_flight, \
                 max_concurrent_io, max_in_flight and read_budget_bytes must be at least 1"
                    .into(),
            ));
        }
        if self.handoff_interval.is_zero()
            || self.handoff_retry.is_zero()
            || self.compaction_poll.is_zero()
        {
            return Err(Error::InvalidInput(
                "replica config: intervals must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Configuration of range transfers (`replication::transfer`): how this
/// node pulls token ranges from other nodes, and how it serves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferConfig {
    /// Incoming transfers running at once; more wait in a queue, in the
    /// order they were started. Default 2, Riak's handoff concurrency: a
    /// moving range keeps one disk busy without starving client requests,
    /// and a second hides the round trips of the first.
    pub max_concurrent: usize,
    /// Bytes asked for per pull (keys and stored values; a batch holds at
    /// least one object, so one larger object makes a larger batch).
    /// Default 1 MiB: long enough to amortise a round trip and a scan
    /// seek, far below the 16 MiB frame limit.
    pub max_batch_bytes: u64,
    /// Bytes per second this node pulls, over all its incoming transfers
    /// (a token bucket holding one batch). 0: unthrottled. Default 32 MiB/s:
    /// about a quarter of a SATA SSD's or a 1 Gbit/s link's bandwidth, so
    /// rebalancing leaves most of both to clients.
    pub bytes_per_sec: u64,
    /// A pull unanswered this long is retried. Default 10 s: a pull is a
    /// scan of one batch (milliseconds), so this only fires when the source
    /// or the link is gone or stalled.
    pub pull_timeout: Duration,
    /// First wait before retrying a lost, refused or failed pull; it
    /// doubles per consecutive attempt up to `backoff_max`, with jitter
    /// (a wait is drawn from its upper half). Default 200 ms.
    pub backoff_min: Duration,
    /// Longest wait between retries. Default 10 s: a source back from a
    /// partition is found within that.
    pub backoff_max: Duration,
    /// Consecutive hard failures (a source refusing with an error, a batch
    /// that does not fit the range, a local store error) after which a
    /// transfer is marked failed. Lost pulls and busy sources are not
    /// failures: they are waited for. Default 5.
    pub max_failures: u32,
    /// Pulls this node serves at once, as a source (each a scan on a
    /// blocking thread); more are refused as busy and retried by their
    /// receiver. Default 4: twice `max_concurrent`, for a node serving two
    /// receivers.
    pub max_serving: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_concurrent: 2,
            max_batch_bytes: 1 << 20,
            bytes_per_sec: 32 << 20,
            pull_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_failures: 5,
            max_serving: 4,
        }
    }
}

/// Merkle-tree anti-entropy and tombstone garbage collection (see
/// `replication::anti_entropy` and `docs/rebalancing.md`).
#[derive(Clone, Debug, PartialEq)]
pub struct AntiEntropyConfig {
    /// Whether the node runs rounds at all. Default true: without it,
    /// replicas of keys nobody reads never converge after a partition.
    pub enabled: bool,
    /// A round starts this long after the previous one started (or at once
    /// when it overran). Default 60 s: a round on a node holding a few
    /// million keys scans them at `keys_per_second`, so a shorter period
    /// would only queue rounds. It does not set the pace of a heal: a node
    /// seen up again is exchanged with at once, and keys nobody reads are
    /// equal on every replica about one round after the healed nodes see
    /// each other, well within three periods (docs/rebalancing.md).
    pub period: Duration,
    /// Leaves per tree (one tree per vnode range and peer), a power of two.
    /// Default 64: the leaf message is 512 bytes, and at 160 vnodes, 5
    /// nodes and a million keys a leaf covers about 100 keys per replica,
    /// so one changed key costs a key list of ~100 entries.
    pub leaves: usize,
    /// Keys a node scans per second for trees, its own and those it builds
    /// to answer peers (a token bucket; a scan that overdraws it delays the
    /// next one). Default 20,000: a few percent of one core and of a disk's
    /// sequential read at 1 KiB objects.
    pub keys_per_second: u32,
    /// Objects a node sends or merges per second for repair. Default 1,000:
    /// repair after a long partition trickles in behind client traffic
    /// instead of competing with it. A round that repairs takes about the
    /// objects it charges over this rate (reading an object to send it and
    /// merging one each count): 10,000 keys diverged between two sides of
    /// a three-node cluster cost the busiest node about 13,000, 13 s.
    pub objects_per_second: u32,
    /// Exchanges (one range with one peer) in flight at once. Default 2:
    /// overlaps one scan with one network round trip.
    pub max_exchanges: usize,
    /// An exchange unanswered this long is abandoned (the range is tried
    /// again next round). Default 30 s.
    pub exchange_timeout: Duration,
    /// Most keys (with digests) or objects in one repair message. Default
    /// 1,024: at the 1 MiB value limit a message can still reach the frame
    /// limit, so the sender also stops at half of it in bytes.
    pub max_batch: usize,
    /// A tombstone younger than this (by its HLC timestamp) is never
    /// purged. Default 1 hour: far longer than any request's timeout (5 s)
    /// or hint delivery retry, so no write older than the delete can still
    /// be in flight; and long enough for an operator to see and restore a
    /// node that is down. See docs/rebalancing.md for what it guarantees.
    pub tombstone_grace: Duration,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        AntiEntropyConfig {
            enabled: true,
            period: Duration::from_secs(60),
            leaves: 64,
            keys_per_second: 20_000,
            objects_per_second: 1_000,
            max_exchanges: 2,
            exchange_timeout: Duration::from_secs(30),
            max_batch: 1024,
            tombstone_grace: Duration::from_secs(3600),
        }
    }
}

impl TransferConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent == 0
            || self.max_batch_bytes == 0
            || self.max_failures == 0
            || self.max_serving == 0
        {
            return Err(Error::InvalidInput(
                "transfer config: counts and the batch size must be at least 1".into(),
            ));
        }
        if self.max_batch_bytes > (DEFAULT_MAX_FRAME_BYTES / 2) as u64 {
            return Err(Error::InvalidInput(format!(
                "transfer config: max_batch_bytes must be at most half the frame limit ({})",
                DEFAULT_MAX_FRAME_BYTES / 2
            )));
        }
        if self.pull_timeout.is_zero()
            || self.backoff_min.is_zero()
            || self.backoff_max < self.backoff_min
        {
            return Err(Error::InvalidInput(
                "transfer config: timeouts must be positive and backoff_min <= backoff_max".into(),
            ));
        }
        Ok(())
    }
}

impl AntiEntropyConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if !crate::replication::merkle::valid_leaves(self.leaves) {
            return Err(Error::InvalidInput(format!(
                "anti-entropy: leaves must be a power of two up to {}, got {}",
                crate::replication::merkle::MAX_LEAVES,
                self.leaves
            )));
        }
        if self.keys_per_second == 0
            || self.objects_per_second == 0
            || self.max_exchanges == 0
            || self.max_batch == 0
        {
            return Err(Error::InvalidInput(
                "anti-entropy: rates and counts must be at least 1".into(),
            ));
        }
        if self.period.is_zero() || self.exchange_timeout.is_zero() {
            return Err(Error::InvalidInput(
                "anti-entropy: period and timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_shards_share_out_the_nodes_budgets_and_are_bounded() {
        let c = ReplicaConfig {
            max_concurrent_io: 64,
            read_budget_bytes: 100,
            max_in_flight: 10_001,
            data_shards: 3,
            ..ReplicaConfig::default()
        };
        assert_eq!(c.shards(), 3);
        let s = c.per_shard(3);
        assert_eq!(
            (s.max_concurrent_io, s.read_budget_bytes, s.max_in_flight),
            (22, 34, 3334)
        );
        // Never below one each, however many shards.
        let s = c.per_shard(64);
        assert_eq!((s.max_concurrent_io, s.read_budget_bytes), (1, 2));
        assert_eq!(c.per_shard(1), c);
        // 0 is one per two CPUs, at least one.
        let auto = ReplicaConfig::default().shards();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto, (cpus / 2).clamp(1, MAX_DATA_SHARDS));
        assert!(ReplicaConfig {
            data_shards: MAX_DATA_SHARDS,
            ..ReplicaConfig::default()
        }
        .validate()
        .is_ok());
        let e = ReplicaConfig {
            data_shards: MAX_DATA_SHARDS + 1,
            ..ReplicaConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("data_shards"), "{e}");
    }
}
