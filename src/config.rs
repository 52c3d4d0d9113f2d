//! Configuration, with every default in one place and the reason for it.
//!
//! Each `Default` value here is the one a node uses unless told otherwise;
//! the doc comment on each field says why that value was chosen. Other
//! modules never hard-code a tunable: they read it from these structs.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::id::NodeId;

/// The largest frame a node accepts or sends by default: 16 MiB.
///
/// Large enough for a handoff batch or an object with many siblings, small
/// enough that a hostile or broken peer cannot make a node buffer much
/// memory for one frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The largest frame accepted during a connection handshake: 4 KiB.
///
/// Handshake frames are a few hundred bytes; an unauthenticated peer gets no
/// more buffer than that.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 4 * 1024;

// Client input limits: the one place for the numbers. `docs/protocol.md`
// (section 7) and `ffi/include/ringkv.h` (`RINGKV_MAX_*`, checked against
// these at compile time) state them to clients; the coordinator checks
// every request against them before anything is sent to a replica, and
// refuses with `Error::InvalidInput` (`InvalidArgument`, not retryable).

/// The longest key a client may use: 8 KiB.
///
/// A key is an identifier, and it is copied into every engine key, hint
/// key, replica message, transfer item and anti-entropy digest. At 8 KiB
/// a full anti-entropy batch of 1,024 digests (keys with their buckets)
/// is 9 MiB, still inside one 16 MiB frame, and an engine key (token,
/// bucket, key) stays far below the storage engine's 64 KiB key limit.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The longest bucket name: 1 KiB. A bucket name is a short identifier
/// (the engine key stores its length in two bytes).
pub const MAX_BUCKET_BYTES: usize = 1024;

/// Bytes of a peer frame kept for everything in a replica message but the
/// stored object: 512 KiB. The envelope, the request's fields, a key of up
/// to [`MAX_KEY_BYTES`] and a bucket of up to [`MAX_BUCKET_BYTES`] (9 KiB
/// together) and the policy name take far less; the rest is margin.
pub const MESSAGE_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest encoded object (every sibling, their dots and timestamps,
/// the causal context) a coordinating replica stores for a write:
/// [`DEFAULT_MAX_FRAME_BYTES`] less [`MESSAGE_OVERHEAD_BYTES`], 15.5 MiB.
/// Derived so that the object a write makes always fits in the replica
/// message that copies it to the other replicas (and in the storage
/// engine's 16 MiB value limit). A write that would make a larger object
/// (a blind write beside large siblings) is refused.
pub const MAX_OBJECT_BYTES: usize = DEFAULT_MAX_FRAME_BYTES - MESSAGE_OVERHEAD_BYTES;

/// The largest value a client may write (a `Put` value, or the members of
/// one set update together): [`MAX_OBJECT_BYTES`] less 512 KiB, 15 MiB.
/// The 512 KiB are for the object around one value: its dot, timestamp
/// and causal context (a version vector of a few hundred nodes is a few
/// KiB). So a maximal value, alone in its object, fits in a peer frame
/// with 1 MiB to spare, and in a client frame (16 MiB) with its request.
pub const MAX_VALUE_BYTES: usize = MAX_OBJECT_BYTES - 512 * 1024;

/// The longest name of a `Script` conflict policy: 256 bytes. It travels
/// in every replica request of the bucket.
pub const MAX_POLICY_NAME_BYTES: usize = 256;

/// Checks a bucket name and key against [`MAX_BUCKET_BYTES`] and
/// [`MAX_KEY_BYTES`].
///
/// ```
/// use ringkv::config::{check_bucket_key, MAX_KEY_BYTES};
/// assert!(check_bucket_key(b"b", &[0; MAX_KEY_BYTES]).is_ok());
/// assert!(check_bucket_key(b"b", &[0; MAX_KEY_BYTES + 1]).is_err());
/// ```
pub fn check_bucket_key(bucket: &[u8], key: &[u8]) -> Result<()> {
    check_bucket(bucket)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidInput(format!(
            "key of {} bytes exceeds the maximum of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a bucket name against [`MAX_BUCKET_BYTES`].
pub fn check_bucket(bucket: &[u8]) -> Result<()> {
    if bucket.len() > MAX_BUCKET_BYTES {
        return Err(Error::InvalidInput(format!(
            "bucket name of {} bytes exceeds the maximum of {MAX_BUCKET_BYTES}",
            bucket.len()
        )));
    }
    Ok(())
}

/// Checks the size of a value (or of a set update's members, `bytes`
/// being their total) against [`MAX_VALUE_BYTES`].
pub fn check_value(bytes: usize) -> Result<()> {
    if bytes > MAX_VALUE_BYTES {
        return Err(Error::InvalidInput(format!(
            "value of {bytes} bytes exceeds the maximum of {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// Checks the members of one set update against [`MAX_VALUE_BYTES`]:
/// their bytes, and a few for each one's CBOR header, together.
pub fn check_members<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
    check_value(members.into_iter().map(|m| m.len() + 9).sum())
}

/// Settings shared by every transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Largest frame sent or accepted, in bytes. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`]. A received frame whose length prefix
    /// exceeds it closes that connection (the stream cannot be resynchronised
    /// without reading the frame); a frame to send that exceeds it is refused
    /// to the caller.
    pub max_frame_bytes: usize,
    /// Frames queued per peer before `send` refuses with
    /// [`Error::QueueFull`]. Default 4096: at 100-byte values that is well
    /// under a megabyte per peer, and several round trips of traffic at full
    /// speed, so a healthy link never fills it; a dead or slow one does, and
    /// the caller hears about it at once instead of queueing without bound.
    pub send_queue_frames: usize,
    /// Envelopes buffered between the network and the local consumer.
    /// Default 8192. When it is full, connections stop being read, which
    /// pushes back on the senders through TCP flow control.
    pub inbox_frames: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            send_queue_frames: 4096,
            inbox_frames: 8192,
        }
    }
}

impl NetConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_frame_bytes < HANDSHAKE_MAX_FRAME_BYTES {
            return Err(Error::InvalidInput(format!(
                "max_frame_bytes must be at least {HANDSHAKE_MAX_FRAME_BYTES}, got {}",
                self.max_frame_bytes
            )));
        }
        // The length prefix is 4 bytes.
        if self.max_frame_bytes > u32::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "max_frame_bytes must fit in 32 bits, got {}",
                self.max_frame_bytes
            )));
        }
        if self.send_queue_frames == 0 || self.inbox_frames == 0 {
            return Err(Error::InvalidInput(
                "send_queue_frames and inbox_frames must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The shared secret that every node of a cluster holds.
///
/// It keys the HMAC proofs of the connection handshake and is never sent.
/// Its `Debug` output is redacted so that it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Shortest secret accepted, in bytes. 16 random bytes (128 bits) is the
    /// usual floor for an HMAC key; a shorter secret is likely a typo or a
    /// placeholder.
    pub const MIN_LEN: usize = 16;

    /// Wraps secret bytes, refusing secrets shorter than [`Self::MIN_LEN`].
    ///
    /// ```
    /// use ringkv::ClusterSecret;
    /// assert!(ClusterSecret::new(b"short".to_vec()).is_err());
    /// assert!(ClusterSecret::new(b"a much longer shared secret".to_vec()).is_ok());
    /// ```
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::InvalidInput(format!(
                "cluster secret must be at least {} bytes, got {}",
                Self::MIN_LEN,
                bytes.len()
            )));
        }
        Ok(ClusterSecret(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// Configuration of a TCP transport endpoint.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id.
    pub node: NodeId,
    /// The cluster's name. Nodes refuse connections from other clusters, so
    /// two clusters on one network cannot merge by accident.
    pub cluster: String,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// Address to listen on, such as `127.0.0.1:7400`; port 0 picks a free
    /// port (see `TcpTransport::local_addr`).
    pub listen: String,
    /// The address peers should dial to reach this node, when it differs
    /// from the listening address (NAT, `0.0.0.0`). Default: none, meaning
    /// the actual listening address.
    pub advertise: Option<String>,
    /// Frame and queue limits.
    pub net: NetConfig,
    /// Time allowed for a TCP connect. Default 2 s: loopback and LAN connects
    /// take well under a millisecond, and a peer that is down should be
    /// noticed quickly so the next backoff round starts.
    pub connect_timeout: Duration,
    /// Time allowed for the whole handshake. Default 5 s: it is four small
    /// frames, so this only triggers on a stuck or hostile peer, whose
    /// half-open connection must not be held forever.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once on the listener. Default 64: enough
    /// for a whole cluster restarting together, and a bound on what a flood
    /// of unauthenticated connections can hold.
    pub max_pending_handshakes: usize,
    /// First reconnect delay after a failed dial. Default 50 ms: a restarted
    /// peer is usually back within a few hundred ms.
    pub backoff_min: Duration,
    /// Largest reconnect delay. Default 5 s: keeps a node that is down for a
    /// long time from being hammered, while reconnecting within seconds when
    /// it returns. Each delay is drawn uniformly from `[min, current]`
    /// ("full jitter") so that a cluster does not reconnect in lockstep.
    pub backoff_max: Duration,
    /// On shutdown, how long to keep writing queued frames before closing.
    /// Default 1 s.
    pub shutdown_grace: Duration,
}

impl TcpConfig {
    /// A configuration with every tunable at its default.
    pub fn new(
        node: NodeId,
        cluster: impl Into<String>,
        secret: ClusterSecret,
        listen: impl Into<String>,
    ) -> Self {
        TcpConfig {
            node,
            cluster: cluster.into(),
            secret,
            listen: listen.into(),
            advertise: None,
            net: NetConfig::default(),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        self.net.validate()?;
        if self.cluster.is_empty() {
            return Err(Error::InvalidInput("cluster name must not be empty".into()));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(Error::InvalidInput(format!(
                "backoff_min must be positive and at most backoff_max ({:?} > {:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        if self.max_pending_handshakes == 0 {
            return Err(Error::InvalidInput(
                "max_pending_handshakes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Configuration of an in-process network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryNetConfig {
    /// Seed of every random choice the network makes (drops, delays,
    /// duplicates, reordering). Default 0. The same seed and the same sends
    /// give the same deliveries.
    pub seed: u64,
    /// Frame and queue limits: the same meaning as on TCP, so a node behaves
    /// the same on either network.
    pub net: NetConfig,
}

/// Configuration of the hash ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Virtual nodes (tokens) a physical node claims when it joins. Default
    /// [`DEFAULT_VNODES_PER_NODE`].
    pub vnodes_per_node: usize,
}

/// Virtual nodes per physical node by default: 160.
///
/// The literature's range is 150 to 200. With random tokens the spread of a
/// node's share shrinks as one over the square root of this number (about 8%
/// at 160); with the balancing claim in `ring::claim` the residual imbalance
/// is about one token's worth of range, 1/160 of a node's share. A ring of
/// 100 nodes then has 16,000 tokens: 256 KiB in memory, a binary search of
/// 14 steps, and a gossip frame far below the frame limit. More tokens buy
/// little balance and cost gossip size and handoff bookkeeping.
pub const DEFAULT_VNODES_PER_NODE: usize = 160;

/// Replicas per key that token claim balances for: 3.
///
/// Claim balances not only which node is first for each key but how much
/// each node stores as one of `n` replicas, which depends on `n`. Three is
/// the usual bucket `n` (Dynamo's and Riak's default); a bucket with another
/// `n` is still placed correctly, only its replica shares are balanced less
/// tightly.
pub const DEFAULT_CLAIM_REPLICAS: usize = 3;

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            vnodes_per_node: DEFAULT_VNODES_PER_NODE,
        }
    }
}

impl RingConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.vnodes_per_node == 0 || self.vnodes_per_node > 4096 {
            return Err(Error::InvalidInput(format!(
                "vnodes_per_node must be in 1..=4096, got {}",
                self.vnodes_per_node
            )));
        }
        Ok(())
    }
}

/// Configuration of object versioning: clocks and siblings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionConfig {
    /// How far ahead of the local wall clock a remote hybrid-logical-clock
    /// timestamp may be before it is refused with
    /// [`Error::ClockSkew`]. Default 500 ms: NTP keeps servers on one network
    /// within a few ms, so a larger offset means a broken clock, and letting
    /// it in would push every node's clock (and every LWW decision) forward.
    pub max_clock_skew: Duration,
    /// The most siblings an object keeps. Default 100 (Riak's
    /// `max_siblings`): far more than honest concurrency produces, and a
    /// bound on the object's size when clients write blindly. A blind
    /// write that would pass the cap is refused with `TooManySiblings`; a
    /// write that carries a context never is (see `version::Object`).
    pub max_siblings: usize,
    /// Largest causal-context token accepted from a client, in bytes.
    /// Default 64 KiB: a version vector of a few hundred entries is a few KiB.
    pub max_context_bytes: usize,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            max_clock_skew: Duration::from_millis(500),
            max_siblings: 100,
            max_context_bytes: 64 * 1024,
        }
    }
}

impl VersionConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_siblings == 0 || self.max_context_bytes == 0 {
            return Err(Error::InvalidInput(
                "max_siblings and max_context_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A bucket's properties: how many copies, the default quorums, how
/// conflicts are resolved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BucketProps {
    /// Replicas per key. Default 3, Dynamo's and Riak's: survives one node
    /// down with quorum reads and writes still succeeding, two with ONE.
    pub n: usize,
    /// Default read quorum. Default `Quorum` (2 of 3): with `w` also a
    /// quorum, every read overlaps every acknowledged write on one replica.
    pub r: crate::replication::Consistency,
    /// Default write quorum. Default `Quorum`.
    pub w: crate::replication::Consistency,
    /// How concurrent writes are resolved. Default `Siblings`: loses no write
    /// and assumes nothing about values.
    pub policy: crate::version::ConflictPolicy,
    /// Whether fallbacks count towards a write's quorum when primaries are
    /// down (a *sloppy* quorum, as in Dynamo). Default false: a quorum is
    /// a quorum of primaries, so `r + w > n` makes every read see every
    /// acknowledged write (reads ask primaries only). Fallbacks still get
    /// the write as a hint either way, and hand it to the primary when it
    /// is back. With `true`, writes stay available while fewer than `w`
    /// primaries are up, at a price the client must accept: a write
    /// acknowledged by fallbacks is not seen by reads until its hints are
    /// delivered (`docs/protocol.md`).
    pub sloppy_quorum: bool,
    /// Request timeout. Default 5 s: far above a healthy round trip
    /// (sub-millisecond on a LAN, an fsync of a few ms), short enough that a
    /// client learns of trouble while it can still act.
    pub timeout: Duration,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            n: 3,
            r: crate::replication::Consistency::Quorum,
            w: crate::replication::Consistency::Quorum,
            policy: crate::version::ConflictPolicy::Siblings,
            sloppy_quorum: false,
            timeout: Duration::from_secs(5),
        }
    }
}

impl BucketProps {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<()> {
        if !(1..=16).contains(&self.n) {
            return Err(Error::InvalidInput(format!(
                "bucket n must be in 1..=16, got {}",
                self.n
            )));
        }
        self.r.required(self.n)?;
        self.w.required(self.n)?;
        if self.timeout.is_zero() {
            return Err(Error::InvalidInput(
                "bucket timeout must be positive".into(),
            ));
        }
        if let crate::version::ConflictPolicy::Script(name) = &self.policy {
            if name.len() > MAX_POLICY_NAME_BYTES {
                return Err(Error::InvalidInput(format!(
                    "policy name of {} bytes exceeds the maximum of {MAX_POLICY_NAME_BYTES}",
                    name.len()
                )));
            }
        }
        Ok(())
    }
}

/// When the LSM's write-ahead log reaches the disk, and so what an
/// acknowledged write survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// The log is written to the OS before `write` returns but never
    /// fsync'd by the engine: an acknowledged write survives a crash of the
    /// process, not a crash of the machine (the OS flushes in its own time).
    None,
    /// A background thread fsyncs the log at this interval: a machine crash
    /// loses at most the writes of the last interval (plus one fsync's time).
    Interval(Duration),
    /// `write` returns only after the log holding the batch is fsync'd.
    /// Concurrent writers share one write and one fsync (group commit).
    Always,
}

/// Configuration of the LSM storage engine.
#[derive(Clone, Debug, PartialEq)]
pub struct LsmConfig {
    /// Default [`SyncPolicy::Interval`] of 100 ms. A replicated write is
    /// acknowledged by W nodes, so one machine losing its last 100 ms loses
    /// nothing the cluster promised; only W machines failing together in
    /// that window do. `Always` costs an fsync per group of writes.
    pub sync: SyncPolicy,
    /// A memtable is sealed (and queued for flush) when it holds this many
    /// bytes of keys and values. Default 64 MiB, RocksDB's
    /// `write_buffer_size`: large enough that L0 tables are big, small enough
    /// that WAL replay after a crash takes about a second.
    pub memtable_bytes: usize,
    /// Sealed memtables allowed to wait for flush. Writers are slowed (a 1 ms
    /// pause per batch) once half are waiting and wait outright when all are,
    /// until a flush finishes. Default 4: a burst of 4 x 64 MiB is absorbed
    /// while the flusher catches up.
    pub max_sealed_memtables: usize,
    /// Uncompressed size at which an SSTable data block is cut. Default
    /// 4 KiB, the page size: a point read decompresses one small block.
    pub block_bytes: usize,
    /// Bloom filter false-positive rate per table. Default 0.01 (about 10
    /// bits per key, RocksDB's `bloom_bits=10`): a read of an absent key
    /// touches a data block in 1% of the tables it consults.
    pub bloom_false_positive_rate: f64,
    /// Bytes of decompressed blocks the block cache keeps. Default 64 MiB.
    pub block_cache_bytes: usize,
    /// Level-0 tables that trigger a compaction into level 1. Default 4, as
    /// in LevelDB and RocksDB: L0 tables overlap, so every point read
    /// consults all of them.
    pub l0_compaction_trigger: usize,
    /// Level-0 tables at which writers are slowed. Default 8.
    pub l0_slowdown_tables: usize,
    /// Level-0 tables at which writers wait for compaction. Default 12.
    pub l0_stop_tables: usize,
    /// Each level holds this many times the bytes of the one above. Default
    /// 10, the classic leveled ratio: about 1.1x space amplification.
    pub level_size_ratio: u64,
    /// Target size of level 1 in bytes. Default 256 MiB, RocksDB's
    /// `max_bytes_for_level_base`.
    pub l1_target_bytes: u64,
    /// Compaction output is cut into tables of about this size. Default
    /// 32 MiB: few enough files for a large store, small enough that one
    /// compaction step moves a bounded amount.
    pub target_table_bytes: u64,
    /// Number of levels, L0 included. Default 7 (L6 at 10^5 x L1 is far
    /// beyond one node's disk).
    pub max_levels: usize,
    /// Whether the engine leaves compaction to its owner, who calls
    /// [`crate::Engine::compact`] (a node's Compactor actor does). Default
    /// false: a standalone engine compacts on its own background thread.
    pub external_compaction: bool,
    /// Whether `open` first salvages the directory: verifies every table
    /// and WAL segment, moves damaged ones (and ones the manifest cannot
    /// account for) into `quarantine/` under the engine's directory, never
    /// deleting them, and records a manifest without them. What they held
    /// is then missing from this engine (a node refills it from its
    /// replicas). Default false: open refuses such a directory instead.
    /// See `docs/storage.md`, "Salvage".
    pub salvage: bool,
}

impl Default for LsmConfig {
    fn default() -> Self {
        LsmConfig {
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            memtable_bytes: 64 * 1024 * 1024,
            max_sealed_memtables: 4,
            block_bytes: 4 * 1024,
            bloom_false_positive_rate: 0.01,
            block_cache_bytes: 64 * 1024 * 1024,
            l0_compaction_trigger: 4,
            l0_slowdown_tables: 8,
            l0_stop_tables: 12,
            level_size_ratio: 10,
            l1_target_bytes: 256 * 1024 * 1024,
            target_table_bytes: 32 * 1024 * 1024,
            max_levels: 7,
            external_compaction: false,
            salvage: false,
        }
    }
}

impl LsmConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidInput(format!("lsm config: {why}")));
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return bad("sync interval must be positive (use Always)");
            }
        }
        if self.memtable_bytes < 4 * 1024 {
            return bad("memtable_bytes must be at least 4 KiB");
        }
        if self.max_sealed_memtables == 0 {
            return bad("max_sealed_memtables must be at least 1");
        }
        if !(256..=1024 * 1024).contains(&self.block_bytes) {
            return bad("block_bytes must be in 256..=1048576");
        }
        if !(self.bloom_false_positive_rate > 0.0 && self.bloom_false_positive_rate < 1.0) {
            return bad("bloom_false_positive_rate must be in (0, 1)");
        }
        if self.l0_compaction_trigger == 0
            || self.l0_slowdown_tables < self.l0_compaction_trigger
            || self.l0_stop_tables < self.l0_slowdown_tables
        {
            return bad("need 1 <= l0_compaction_trigger <= l0_slowdown_tables <= l0_stop_tables");
        }
        if self.level_size_ratio < 2 {
            return bad("level_size_ratio must be at least 2");
        }
        if self.target_table_bytes < 4 * 1024 || self.l1_target_bytes < self.target_table_bytes {
            return bad("need 4 KiB <= target_table_bytes <= l1_target_bytes");
        }
        if !(2..=16).contains(&self.max_levels) {
            return bad("max_levels must be in 2..=16");
        }
        Ok(())
    }
}

/// Configuration of the B-tree storage engine (`storage::btree`, over redb).
///
/// redb commits whole transactions copy-on-write: a commit with its
/// `Durability::Immediate` writes the new pages and the commit slot and
/// fsyncs before it returns, and is then durable; a commit with
/// `Durability::None` is visible to later reads at once but is not
/// recoverable after a crash (its pages sit in redb's write buffer, or in
/// the file without a durable commit slot pointing at them) until a later
/// `Immediate` commit, or a clean close, persists it together with every
/// non-durable commit before it. There is no write-ahead log. So the [`SyncPolicy`]
/// maps as follows:
///
/// - [`SyncPolicy::Always`]: every batch commits `Immediate`: fsync'd
///   before `write` returns (an fsync per batch: redb has no group commit).
/// - [`SyncPolicy::Interval`]`(d)`: batches commit `None`; a background
///   thread makes an empty `Immediate` commit every `d` when anything was
///   written. A crash of the process or of the machine loses at most the
///   batches of the last `d` (unlike the LSM, where a process crash loses
///   nothing, since its log is already in the OS).
/// - [`SyncPolicy::None`]: batches commit `None`; the same background
///   checkpoint runs every [`BTreeConfig::checkpoint_interval`]. redb cannot
///   reuse pages freed by a non-durable commit until a durable one, so some
///   periodic durable commit is needed to bound the file's growth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BTreeConfig {
    /// Default [`SyncPolicy::Interval`] of 100 ms, the same as the LSM's and
    /// for the same reason: W replicas acknowledge a write, so one machine
    /// losing its last 100 ms loses nothing the cluster promised.
    pub sync: SyncPolicy,
    /// How often a durable (fsync'd) commit persists the non-durable ones
    /// under [`SyncPolicy::None`]. Default 1 s: one fsync a second is noise
    /// next to the writes themselves, and it bounds both what a crash loses
    /// and how many freed pages wait to be reused.
    pub checkpoint_interval: Duration,
    /// Bytes of pages redb caches in memory (reads and not yet written
    /// pages). Default 64 MiB, the same budget as the LSM's block cache, so
    /// the two engines compare at equal memory. redb's own default is 1 GiB.
    pub cache_bytes: usize,
    /// Whether every open verifies the checksum of every page (redb's
    /// `set_check_integrity_on_open`). Default true: redb documents that a
    /// plain open of a file altered outside redb "may panic", and the
    /// engine contract is an `Error::Corruption`, never a panic. The price
    /// is one full read of the file at each open (about a second per GB).
    /// Pages are not verified again on later reads.
    pub verify_on_open: bool,
}

impl Default for BTreeConfig {
    fn default() -> Self {
        BTreeConfig {
            sync: SyncPolicy::Interval(Duration::from_millis(100)),
            checkpoint_interval: Duration::from_secs(1),
            cache_bytes: 64 * 1024 * 1024,
            verify_on_open: true,
        }
    }
}

impl BTreeConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(Error::InvalidInput(
                    "btree config: sync interval must be positive (use Always)".into(),
                ));
            }
        }
        if self.checkpoint_interval.is_zero() {
            return Err(Error::InvalidInput(
                "btree config: checkpoint_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Configuration of membership: gossip, the phi-accrual failure detector,
/// suspicion and leaving.
///
/// The detector defaults are Akka's and Cassandra's, which have run for
/// years on real networks: they tolerate a GC pause or a slow link of a few
/// seconds without a false conviction, and still find a crashed node in
/// well under ten seconds. `docs/membership.md` measures them.
#[derive(Clone, Debug, PartialEq)]
pub struct MembershipConfig {
    /// How often a node raises its heartbeat and gossips. Default 1 s: a
    /// full table for 100 nodes is about 6 KB, so a gossip per second costs
    /// nothing, and detection in seconds needs heartbeats in seconds.
    pub gossip_interval: Duration,
    /// Peers gossiped to per interval. Default 1: with push-pull, one
    /// exchange per round already spreads a change to every node in about
    /// log3 N rounds; more peers multiply traffic for a small gain.
    pub fanout: usize,
    /// Whether the receiver of a gossip answers with its own table
    /// (push-pull). Default true: pulling makes the last few uninformed
    /// nodes learn a change quickly, where push alone needs ln N extra
    /// rounds to reach them.
    pub push_pull: bool,
    /// Phi above which a peer becomes SUSPECT. Default 8: phi 8 means the
    /// detector would be wrong about once in 10^8 heartbeats if inter-arrival
    /// times were normal; Akka and Cassandra both use 8.
    pub phi_threshold: f64,
    /// Inter-arrival times kept per peer. Default 1000 (Akka's): about 17
    /// minutes of history at 1 s, enough for a stable mean and deviation,
    /// small enough (8 KB per peer) to follow a network that changes.
    pub max_sample_size: usize,
    /// Floor of the standard deviation used by phi. Default 100 ms: on a
    /// quiet LAN the measured deviation is close to zero, and without a
    /// floor the smallest jitter would send phi through the roof.
    pub min_std_deviation: Duration,
    /// Silence beyond the mean interval that is still normal: added to the
    /// mean before phi is computed. Default 3 s: covers a stop-the-world GC
    /// pause or a burst of packet loss of a few seconds, the causes of false
    /// suspicion in practice (Akka's cluster default).
    pub acceptable_heartbeat_pause: Duration,
    /// How long a suspicion may go unrefuted before the suspect is DOWN, in
    /// gossip intervals per doubling of the cluster: the timeout is
    /// `suspicion_multiplier x log2(N) x gossip_interval` (at least one
    /// interval's worth of log2 N = 1). Default 2: a refutation needs the
    /// suspicion to reach the suspect and the refutation to come back, two
    /// spreads of about 0.6 log2 N rounds each with push-pull, so 2 log2 N
    /// leaves a margin of more than one and a half.
    pub suspicion_multiplier: f64,
    /// A gap this long between two consecutive runs of this node's own
    /// machine means that the node itself was paused (GC, SIGSTOP, an
    /// overloaded host); it then restarts every peer's silence clock instead
    /// of convicting peers it could not hear. Default 2 s: twice the gossip
    /// interval, which a healthy node never goes without a tick.
    pub local_pause_guard: Duration,
    /// After a graceful leave, how long the node keeps gossiping its LEFT
    /// status before it stops. Default 3 s: three rounds of push-pull reach
    /// most of a small cluster directly, and gossip carries it the rest of
    /// the way.
    pub leave_linger: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            gossip_interval: Duration::from_secs(1),
            fanout: 1,
            push_pull: true,
            phi_threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(3),
            suspicion_multiplier: 2.0,
            local_pause_guard: Duration::from_secs(2),
            leave_linger: Duration::from_secs(3),
        }
    }
}

impl MembershipConfig {
    /// The defaults with every duration multiplied by `interval / 1 s`, so
    /// that the protocol behaves the same, in rounds, at a faster pace. For
    /// tests and experiments.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ringkv::config::MembershipConfig;
    /// let fast = MembershipConfig::scaled(Duration::from_millis(50));
    /// assert_eq!(fast.acceptable_heartbeat_pause, Duration::from_millis(150));
    /// ```
    pub fn scaled(interval: Duration) -> Self {
        let d = MembershipConfig::default();
        let k = interval.as_secs_f64() / d.gossip_interval.as_secs_f64();
        MembershipConfig {
            gossip_interval: interval,
            min_std_deviation: d.min_std_deviation.mul_f64(k),
            acceptable_heartbeat_pause: d.acceptable_heartbeat_pause.mul_f64(k),
            local_pause_guard: d.local_pause_guard.mul_f64(k),
            leave_linger: d.leave_linger.mul_f64(k),
            ..d
        }
    }

    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidInput(format!("membership config: {why}")));
        if self.gossip_interval.is_zero() {
            return bad("gossip_interval must be positive");
        }
        if self.fanout == 0 {
            return bad("fanout must be at least 1");
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return bad("phi_threshold must be a positive number");
        }
        if self.max_sample_size < 2 {
            return bad("max_sample_size must be at least 2");
        }
        if self.min_std_deviation.is_zero() {
            return bad("min_std_deviation must be positive");
        }
        if !(self.suspicion_multiplier.is_finite() && self.suspicion_multiplier > 0.0) {
            return bad("suspicion_multiplier must be a positive number");
        }
        if self.local_pause_guard <= self.gossip_interval {
            return bad("local_pause_guard must be longer than gossip_interval");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted() {
        let s = ClusterSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret\""), "{shown}");
        assert!(!shown.contains("0123"), "{shown}");
    }

    #[test]
    fn defaults_validate() {
        NetConfig::default().validate().unwrap();
        let secret = ClusterSecret::new(vec![7; 32]).unwrap();
        TcpConfig::new(NodeId(1), "c", secret, "127.0.0.1:0")
            .validate()
            .unwrap();
        LsmConfig::default().validate().unwrap();
        MembershipConfig::default().validate().unwrap();
        MembershipConfig::scaled(Duration::from_millis(50))
            .validate()
            .unwrap();
        BucketProps::default().validate().unwrap();
        let one_copy_all_quorum = BucketProps {
            n: 1,
            w: crate::replication::Consistency::Two,
            ..BucketProps::default()
        };
        assert!(one_copy_all_quorum.validate().is_err());
        BTreeConfig::default().validate().unwrap();
        let btree = BTreeConfig {
            checkpoint_interval: Duration::ZERO,
            ..BTreeConfig::default()
        };
        assert!(btree.validate().is_err());
        let lsm = LsmConfig {
            l0_stop_tables: 2,
            ..LsmConfig::default()
        };
        assert!(lsm.validate().is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let net = NetConfig {
            max_frame_bytes: 10,
            ..NetConfig::default()
        };
        assert!(net.validate().is_err());
        let net = NetConfig {
            send_queue_frames: 0,
            ..NetConfig::default()
        };
        assert!(net.validate().is_err());
        let secret = ClusterSecret::new(vec![7; 32]).unwrap();
        let mut tcp = TcpConfig::new(NodeId(1), "", secret, "127.0.0.1:0");
        assert!(tcp.validate().is_err());
        tcp.cluster = "c".into();
        tcp.backoff_min = Duration::from_secs(10);
        assert!(tcp.validate().is_err());
    }
}

/// Where a node keeps its data.
#[derive(Clone, Debug, PartialEq)]
pub enum StorageConfig {
    /// In memory only: lost when the process ends. For experiments with
    /// many nodes in one process.
    Memory,
    /// The LSM engine in `dir`.
    Lsm {
        /// The engine's directory (created if missing).
        dir: std::path::PathBuf,
        /// The engine's settings.
        config: LsmConfig,
    },
    /// The B-tree engine (redb) in `dir`.
    BTree {
        /// The engine's directory (created if missing).
        dir: std::path::PathBuf,
        /// The engine's settings.
        config: BTreeConfig,
    },
}

impl StorageConfig {
    /// The engine's name: `"memory"`, `"lsm"` or `"btree"`.
    pub fn engine_name(&self) -> &'static str {
        match self {
            StorageConfig::Memory => "memory",
            StorageConfig::Lsm { .. } => "lsm",
            StorageConfig::BTree { .. } => "btree",
        }
    }
}

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
    /// Client requests a node accepts in flight before refusing new ones
    /// with `QueueFull` (retryable). Default 10,000.
    pub max_in_flight: usize,
    /// How often the compactor looks at the engine's level shape. Default
    /// 100 ms: a flush adds one L0 table per memtable (64 MiB), far less
    /// often than that under any load.
    pub compaction_poll: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            max_hints: 1_000_000,
            handoff_interval: Duration::from_secs(1),
            handoff_batch: 256,
            handoff_in_flight: 64,
            handoff_retry: Duration::from_secs(5),
            max_concurrent_io: 64,
            max_in_flight: 10_000,
            compaction_poll: Duration::from_millis(100),
        }
    }
}

impl ReplicaConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_hints == 0
            || self.handoff_batch == 0
            || self.handoff_in_flight == 0
            || self.max_concurrent_io == 0
            || self.max_in_flight == 0
        {
            return Err(Error::InvalidInput(
                "replica config: counts must be at least 1".into(),
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
    /// would only queue rounds; keys nobody reads converge about three
    /// periods after the healed nodes see each other (docs/rebalancing.md).
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
    /// instead of competing with it.
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
