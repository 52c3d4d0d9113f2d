//! The client protocol: what clients send to a node's client port, and what
//! they get back.
//!
//! A client connection carries length-delimited CBOR frames (the same
//! framing as node-to-node traffic: a 4-byte big-endian length, then that
//! many bytes; see `docs/wire.md`). The client sends [`Request`]s; the node
//! answers each with one [`Response`] carrying the same `id`. Requests may
//! be pipelined: responses can come back in any order, matched by `id`.
//!
//! The first request on a connection should be [`Op::Hello`], which checks
//! that both ends speak [`CLIENT_PROTOCOL_VERSION`]; a node answers every
//! other op on a connection that skipped it too, so a minimal client can
//! skip it.
//!
//! Encoding: serde's default representation, like the node-to-node
//! messages: structs are CBOR maps keyed by field name, enums are
//! externally tagged (`{"Get": {...}}`, a unit variant is a bare text
//! string such as `"Ring"`), byte fields are CBOR byte strings, optional
//! fields may be absent or null. `docs/protocol.md` describes every frame
//! for writers of clients in other languages.
//!
//! A frame that cannot be decoded as a request gets an error response with
//! code [`ErrorCode::BadRequest`] and the `id` when the `id` at least could
//! be read (0 otherwise); the connection stays open. A frame longer than the
//! node's limit closes the connection after an error response with id 0,
//! since the stream cannot be resynchronised without reading it.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::Error;
use crate::id::NodeId;
use crate::replication::get::Repair;
use crate::replication::BucketProps;
use crate::replication::{Consistency, Receipt};
use crate::version::ConflictPolicy;

/// Re-exported: the error codes and the error reply are defined in
/// [`crate::error`], which owns them, so that [`Error::Remote`] can carry a
/// node's answer without the error module depending on the protocol.
pub use crate::error::{ErrorCode, ErrorReply};

/// The version of the client protocol this build speaks.
pub const CLIENT_PROTOCOL_VERSION: u32 = 1;

/// What serves client requests: a node ([`crate::node::Node`] implements
/// it). The client port and embedded users (the shell, the FFI) call it.
pub trait Handler: Send + Sync + 'static {
    /// Executes one client operation.
    fn execute(
        &self,
        op: Op,
    ) -> futures_util::future::BoxFuture<'static, crate::error::Result<Reply>>;

    /// Executes one client operation, and returns with its reply what the
    /// reply keeps counted against the node's memory budgets (see
    /// [`ReplyHold`]): a port keeps it until it has encoded the reply for
    /// its connection. By default nothing is held.
    fn execute_held(
        &self,
        op: Op,
    ) -> futures_util::future::BoxFuture<'static, crate::error::Result<(Reply, ReplyHold)>> {
        let reply = self.execute(op);
        Box::pin(async move { reply.await.map(|r| (r, ReplyHold::default())) })
    }
}

/// What a reply keeps counted against its node's memory budgets while it
/// exists: a large value read from the node's store counts against the
/// replica's read budget until whoever holds this drops it. A client port
/// drops it once it has encoded the reply (from then on its own reply
/// budget counts the bytes), so answers made faster than connections take
/// them wait in the replica's queue, not in memory.
#[derive(Default)]
pub struct ReplyHold(Vec<Box<dyn std::any::Any + Send>>);

impl ReplyHold {
    /// Adds `hold`: it is dropped with this.
    pub fn add(&mut self, hold: impl std::any::Any + Send) {
        self.0.push(Box::new(hold));
    }

    /// Takes everything `other` holds.
    pub fn append(&mut self, mut other: ReplyHold) {
        self.0.append(&mut other.0);
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ReplyHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplyHold({} held)", self.0.len())
    }
}

/// One request from a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in the response. Clients should not use
    /// 0, which error responses to unreadable frames carry.
    pub id: u64,
    /// What to do.
    pub op: Op,
}

/// Read options; every field is optional and defaults to the bucket's
/// setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// How many replicas must answer.
    pub r: Option<Consistency>,
    /// When read repair runs: `"Async"` (the default: after answering),
    /// `"BeforeAnswer"`, or `"Off"`.
    pub repair: Option<Repair>,
    /// Whether fallbacks may answer for down primaries.
    pub sloppy_quorum: Option<bool>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Write options; every field is optional and defaults to the bucket's
/// setting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteOptions {
    /// How many replicas must store the write before it is acknowledged.
    pub w: Option<Consistency>,
    /// Whether fallbacks may store it (as hints) for down primaries.
    pub sloppy_quorum: Option<bool>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Reads an optional field that may be absent (with `#[serde(default)]`)
/// or null as its default, as section 2 of `docs/protocol.md` promises.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Checks the protocol version and, with `user` and `password`,
    /// authenticates the connection; answered with [`Reply::Hello`]. A node
    /// that requires authentication answers only `Hello` until a `Hello`
    /// with valid credentials; a later `Hello` with credentials switches
    /// the connection to that user.
    Hello {
        /// The client's [`CLIENT_PROTOCOL_VERSION`].
        version: u32,
        /// Free text naming the client, for the node's logs.
        client: String,
        /// The user to authenticate as (absent or null: none).
        #[serde(
            default,
            deserialize_with = "null_as_default",
            skip_serializing_if = "Option::is_none"
        )]
        user: Option<String>,
        /// The user's password (absent or null: none). Sent as is: use TLS
        /// on the client port when the network is not trusted.
        #[serde(
            default,
            deserialize_with = "null_as_default",
            skip_serializing_if = "Option::is_none"
        )]
        password: Option<String>,
    },
    /// Reads a key; answered with [`Reply::Object`].
    Get {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: ReadOptions,
    },
    /// Writes a value; answered with [`Reply::Written`].
    Put {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// The value.
        value: ByteBuf,
        /// The context from an earlier read of this key: the write replaces
        /// the siblings that read returned. Absent: a blind write, kept
        /// beside whatever is stored (under the `Siblings` policy).
        #[serde(default)]
        context: Option<ByteBuf>,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
    },
    /// Deletes a key (writes a tombstone); answered with
    /// [`Reply::Written`].
    Delete {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// As for `Put`.
        #[serde(default)]
        context: Option<ByteBuf>,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
    },
    /// Adds `by` (negative to subtract, for a `PnCounter` bucket) to a
    /// counter; answered with [`Reply::Counter`] holding the new value.
    CounterAdd {
        /// The bucket (policy `Crdt(GCounter)` or `Crdt(PnCounter)`).
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// The amount.
        by: i64,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
    },
    /// Reads a counter; answered with [`Reply::Counter`].
    CounterGet {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: ReadOptions,
    },
    /// Adds members to a set; answered with [`Reply::Set`].
    SetAdd {
        /// The bucket (policy `Crdt(GSet)`, `Crdt(TwoPSet)` or `Crdt(OrSet)`).
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// The members to add.
        members: Vec<ByteBuf>,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
        /// Answer with the count of members changed only ([`Reply::Set`]
        /// with no `members`): the set is neither decoded nor sent back,
        /// which for a large set is most of an answer's cost. Absent:
        /// false, every member is sent back.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        count_only: bool,
    },
    /// Removes members from a set; answered with [`Reply::Set`].
    SetRemove {
        /// The bucket (`Crdt(TwoPSet)` or `Crdt(OrSet)`).
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// The members to remove.
        members: Vec<ByteBuf>,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
        /// Answer with the count of members changed only ([`Reply::Set`]
        /// with no `members`): the set is neither decoded nor sent back,
        /// which for a large set is most of an answer's cost. Absent:
        /// false, every member is sent back.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        count_only: bool,
    },
    /// Reads a set; answered with [`Reply::Set`].
    SetMembers {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
        /// Options (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: ReadOptions,
    },
    /// Reads a bucket's properties; answered with [`Reply::Bucket`].
    GetBucket {
        /// The bucket.
        bucket: ByteBuf,
    },
    /// Sets a bucket's properties cluster-wide; answered with
    /// [`Reply::Bucket`]. The change reaches every node by gossip within a
    /// few gossip rounds.
    SetBucket {
        /// The bucket.
        bucket: ByteBuf,
        /// The new properties.
        props: BucketInfo,
    },
    /// The ring as the node sees it; answered with [`Reply::Ring`].
    Ring,
    /// The node's view of the cluster; answered with [`Reply::Status`].
    Status,
    /// Lists a page of `bucket`'s keys in token order (the keys' positions
    /// on the ring), from `cursor` on; answered with [`Reply::Keys`]. Keys
    /// only, no values; deleted keys are left out. Not a snapshot: see
    /// `docs/protocol.md` ("Scan") for what a scan promises. `limit` is 1
    /// to [`MAX_SCAN_LIMIT`] (else `InvalidArgument`); a page may hold
    /// fewer keys, even none, before the end: only an absent `cursor` in
    /// the reply ends the scan.
    Scan {
        /// The bucket.
        bucket: ByteBuf,
        /// Where to go on from: a reply's `cursor`, unchanged; absent, null
        /// or empty to start.
        #[serde(default, deserialize_with = "null_as_default")]
        cursor: Option<ByteBuf>,
        /// The most keys the page may hold.
        limit: u32,
        /// Options (absent or null: the bucket's); `repair` is ignored.
        #[serde(default, deserialize_with = "null_as_default")]
        options: ReadOptions,
    },
    /// Reads several keys of one bucket; answered with
    /// [`Reply::Objects`]: one item per key, in the order of `keys`, each
    /// what a `Get` of that key would answer (its [`ObjectItem`] or its
    /// error), so one failing key does not fail the others. Each key is
    /// read as an independent `Get`, concurrently on the receiving node:
    /// the batch is not a snapshot and not atomic. The batch takes about
    /// its timeout, as one `Get` would: a key whose turn comes after it
    /// ran out is not read and answers a retryable `Timeout`. 1 to
    /// [`MAX_BATCH_KEYS`] keys (a key may appear more than once: each is
    /// read and answered); past a limit of [`Op::check_limits`] the whole
    /// batch is refused (`InvalidArgument`) before any key is read.
    MultiGet {
        /// The bucket.
        bucket: ByteBuf,
        /// The keys.
        keys: Vec<ByteBuf>,
        /// Options for every key (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: ReadOptions,
    },
    /// Writes several keys of one bucket; answered with
    /// [`Reply::WrittenMany`]: one item per [`PutItem`], in request order,
    /// each what a `Put` of that item would answer (its [`WrittenItem`]
    /// or its error). Each item is written as an independent `Put`,
    /// concurrently on the receiving node: no atomicity across keys (some
    /// may be stored and others not). The batch takes about its timeout:
    /// an item whose turn comes after it ran out is not sent and answers
    /// a retryable `Timeout` with `indefinite: false`. 1 to [`MAX_BATCH_KEYS`] items, each
    /// key at most once, the items' keys, values and contexts together at
    /// most [`MAX_BATCH_BYTES`]; past a limit of [`Op::check_limits`] the
    /// whole batch is refused (`InvalidArgument`, nothing written).
    MultiPut {
        /// The bucket.
        bucket: ByteBuf,
        /// The writes.
        items: Vec<PutItem>,
        /// Options for every item (absent or null: the bucket's).
        #[serde(default, deserialize_with = "null_as_default")]
        options: WriteOptions,
    },
    /// Reads this node's own stored copy of `bucket`/`key`, with no
    /// quorum and no repair; answered with [`Reply::Object`] (an empty
    /// receipt). A diagnostic: it shows what one replica holds, which is
    /// how tests and operators check replication, hinted handoff and
    /// repair. Not a consistent read.
    LocalGet {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
    },
    /// The nodes that hold `bucket`/`key` now, in preference order;
    /// answered with [`Reply::Preference`].
    PreferenceList {
        /// The bucket.
        bucket: ByteBuf,
        /// The key.
        key: ByteBuf,
    },
    /// Decommissions the receiving node: it gives its tokens away, and the
    /// nodes taking its ranges pull them; once they have, the ring no
    /// longer holds it (its process keeps running until stopped). Answered
    /// at once with [`Reply::Ring`], whose `change` shows the leave once it
    /// has begun (it waits while another change is in progress); `Ring`
    /// shows its progress.
    Leave,
    /// Removes `node`, a member that is gone for good, from the ring: its
    /// ranges are copied again from the surviving replicas. Refused
    /// (`InvalidArgument`) for a node this node can reach (a live node
    /// leaves with `Leave`), for a node not in the ring, and while another
    /// change is in progress. Answered with [`Reply::Ring`].
    RemoveNode {
        /// The node to remove.
        node: NodeId,
    },
    /// Forgets `node` for good: an operator's word that it is gone and
    /// will not come back (a machine lost with its disk). The receiving
    /// node marks it LEFT in membership, which spreads by gossip like a
    /// graceful leave; every node drops it from its table after the
    /// membership's `left_grace`, and the lowest live node removes it from
    /// the ring (its ranges are copied again from the surviving replicas),
    /// as for a node that left. A node that is in fact running hears of it
    /// and refutes it. Refused (`InvalidArgument`) for the receiving node
    /// itself (it leaves with `Leave`) and for a node its membership does
    /// not know. Forgetting a node already LEFT changes nothing. Answered
    /// with [`Reply::Ring`] at once: the removal shows in `Ring` once it
    /// has begun.
    Forget {
        /// The node to forget.
        node: NodeId,
    },
    /// Fault injection, for tests and experiments: from now on the
    /// receiving node drops every node-to-node frame it would send to
    /// `peers` (frames from them still arrive: a one-way partition; each
    /// side blocking the other makes a two-way one). Replaces the earlier
    /// list; an empty list heals. Client traffic is not affected. Refused
    /// (`InvalidArgument`) unless the node was started with
    /// `--allow-fault-injection`, for a list naming the node itself, and
    /// for more than [`MAX_BLOCKED_PEERS`] peers. Answered with
    /// [`Reply::Blocked`].
    BlockOutbound {
        /// The peers to cut off (duplicates count once).
        peers: Vec<NodeId>,
    },
    /// Writes the receiving node's memtables to its files now (the LSM's
    /// active and sealed memtables become tables; the B-tree commits
    /// durably), instead of when they fill; answered with
    /// [`Reply::Storage`] once done. Data acknowledged before is then in
    /// tables as well as in the WAL.
    Flush,
    /// Runs every compaction the receiving node's engine calls for now,
    /// until none is due (the compactor would run them on its own later),
    /// and answers with [`Reply::Storage`] once done. The B-tree and the
    /// memory engine have nothing to compact.
    Compact,
    /// Starts an anti-entropy round on the receiving node now, as soon as
    /// the one running (if any) ends, instead of a period later. Answered
    /// at once with [`Reply::Repair`]; the round is over once the node's
    /// `Status` shows `anti_entropy.rounds` at least `until_rounds`. The
    /// round exchanges the ranges this node starts exchanges for (those
    /// where it is the first live replica), narrowed by `range` and
    /// `peer`; repairing a whole node or range means asking every node
    /// (`OnNodes`).
    Repair {
        /// Only ranges that overlap these tokens (absent or null: all).
        #[serde(default, deserialize_with = "null_as_default")]
        range: Option<TokenSpan>,
        /// Only exchanges with this node, or, when it is the receiving
        /// node itself, every exchange of the ranges it replicates (absent
        /// or null: every exchange).
        #[serde(default, deserialize_with = "null_as_default")]
        peer: Option<NodeId>,
    },
    /// Writes a consistent copy of the receiving node's store (every
    /// object, hint, bucket property and its ring state, as of one
    /// moment) into `dir` on the node's machine, with a `SNAPSHOT.json`
    /// that describes it; answered with [`Reply::Snapshot`] once written.
    /// `dir` must be an absolute path that does not exist yet (or is an
    /// empty directory). `ringkv-node restore` makes a data directory of
    /// it. Refused (`InvalidArgument`) by a node whose engine keeps
    /// nothing on disk.
    Snapshot {
        /// Where to write it, on the node's machine.
        dir: String,
    },
    /// Drains the receiving node: from now on it refuses every data op
    /// (`ShuttingDown`, retryable: a client goes to another node) and its
    /// `/ready` says no, and it leaves the ring as `Leave` does. Answered
    /// with [`Reply::Ring`] at once.
    Drain,
    /// Runs `op` on each of `nodes` (absent or null: every member that has
    /// not left, the receiving node included), asking the others over the
    /// node-to-node links, and answers with [`Reply::Nodes`]: one answer
    /// per node, in node order, each the node's reply or its error (a
    /// member DOWN, or silent for `timeout_ms`, gets `Unavailable` or
    /// `Timeout`). `op` is one of `Status`, `Ring`, `Flush`, `Compact`,
    /// `Repair` and `Snapshot` (else `InvalidArgument`); a `Snapshot`'s
    /// `dir` gets a subdirectory per node, `node-<id>`. Needs the role
    /// `op` needs.
    OnNodes {
        /// The nodes (at most [`MAX_BLOCKED_PEERS`]); absent: every member.
        #[serde(default, deserialize_with = "null_as_default")]
        nodes: Option<Vec<NodeId>>,
        /// What each runs.
        op: Box<Op>,
        /// How long to wait for each node, in milliseconds, 1 to
        /// [`MAX_ADMIN_TIMEOUT_MS`] (absent or null: 30,000).
        #[serde(default, deserialize_with = "null_as_default")]
        timeout_ms: Option<u64>,
    },
}

/// One write of an [`Op::MultiPut`]: the fields of a `Put` that differ
/// per key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PutItem {
    /// The key.
    pub key: ByteBuf,
    /// The value.
    pub value: ByteBuf,
    /// As for `Put`: the context of an earlier read of this key, or absent
    /// (null) for a blind write.
    #[serde(default)]
    pub context: Option<ByteBuf>,
}

/// The most keys one [`Op::MultiGet`] or [`Op::MultiPut`] may hold: 1,000,
/// as many as a scan page lists.
pub const MAX_BATCH_KEYS: usize = 1000;

/// The most bytes of keys, values and contexts one [`Op::MultiPut`] may
/// carry together, and of values one [`Reply::Objects`] carries before
/// its further items are refused: [`crate::config::MAX_VALUE_BYTES`]
/// (15 MiB), the most one `Put` may carry, so that a batch, its request
/// frame and its reply fit the node's 16 MiB frames.
pub const MAX_BATCH_BYTES: usize = crate::replication::limits::MAX_VALUE_BYTES;

/// Admin requests between nodes: how [`Op::OnNodes`] reaches the other
/// nodes. The op and the answer travel as the client protocol encodes
/// them (CBOR), nested as bytes. A node runs only the ops
/// [`Op::runs_on_nodes`] allows, for a peer that authenticated as a
/// member of its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminMsg {
    /// Runs an op on the receiving node.
    Ask {
        /// Chosen by the asking node, echoed in the answer.
        id: u64,
        /// The [`Op`], CBOR-encoded.
        op: ByteBuf,
    },
    /// The answer to an `Ask`.
    Answer {
        /// The ask's `id`.
        id: u64,
        /// The `Result<Reply, ErrorReply>`, CBOR-encoded.
        result: ByteBuf,
    },
}

impl AdminMsg {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AdminMsg::Ask { .. } => "admin_ask",
            AdminMsg::Answer { .. } => "admin_answer",
        }
    }
}

/// A span of ring tokens: those after `after` through `through`, wrapping
/// past `u64::MAX` (`after == through` is the whole ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpan {
    /// The span starts after this token.
    pub after: u64,
    /// The span ends with this token.
    pub through: u64,
}

/// The longest an [`Op::OnNodes`] waits for one node: an hour (a
/// compaction or a snapshot of a large store takes a while).
pub const MAX_ADMIN_TIMEOUT_MS: u64 = 3_600_000;

/// How long an [`Op::OnNodes`] waits for each node by default.
pub const DEFAULT_ADMIN_TIMEOUT_MS: u64 = 30_000;

/// The longest snapshot directory an [`Op::Snapshot`] may name, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// What a client connection may do. Each role may do what the roles
/// before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: `Get`, `MultiGet`, `CounterGet`, `SetMembers`, `Scan`,
    /// `GetBucket`, `LocalGet`, `PreferenceList`, `Ring`, `Status`.
    Read,
    /// Reads and data writes: `Put`, `MultiPut`, `Delete`, `CounterAdd`,
    /// `SetAdd`, `SetRemove`.
    ReadWrite,
    /// Everything: also `SetBucket`, `Leave`, `RemoveNode`, `Forget`,
    /// `BlockOutbound`, `Flush`, `Compact`, `Repair`, `Snapshot` and
    /// `Drain`. `OnNodes` needs what its op needs.
    Admin,
}

impl Role {
    /// The role's name as the protocol and the users file spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::ReadWrite => "readwrite",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "readwrite" => Ok(Role::ReadWrite),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected read, readwrite or admin"
            )),
        }
    }
}

pub use crate::replication::scan::{ScanCursor, MAX_SCAN_LIMIT};

/// The most peers one [`Op::BlockOutbound`] may name: far more than any
/// cluster a test builds, small enough that a hostile list costs nothing.
pub const MAX_BLOCKED_PEERS: usize = 1024;

/// Checks an [`Op::Snapshot`]'s directory: absolute, at most
/// [`MAX_PATH_BYTES`], no NUL.
fn check_snapshot_dir(dir: &str) -> crate::error::Result<()> {
    if dir.len() > MAX_PATH_BYTES || dir.contains('\0') {
        return Err(Error::InvalidInput(format!(
            "a snapshot directory is at most {MAX_PATH_BYTES} bytes, without NUL"
        )));
    }
    if !std::path::Path::new(dir).is_absolute() {
        return Err(Error::InvalidInput(format!(
            "a snapshot directory must be an absolute path (it is on the node's machine), not {dir:?}"
        )));
    }
    Ok(())
}

/// Checks a batch's number of keys: 1 to [`MAX_BATCH_KEYS`].
fn check_batch_len(op: &str, len: usize) -> crate::error::Result<()> {
    if len == 0 || len > MAX_BATCH_KEYS {
        return Err(Error::InvalidInput(format!(
            "a {op} holds 1 to {MAX_BATCH_KEYS} keys, not {len}"
        )));
    }
    Ok(())
}

impl Op {
    /// The op's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::Get { .. } => "get",
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::CounterAdd { .. } => "counter_add",
            Op::CounterGet { .. } => "counter_get",
            Op::SetAdd { .. } => "set_add",
            Op::SetRemove { .. } => "set_remove",
            Op::SetMembers { .. } => "set_members",
            Op::GetBucket { .. } => "get_bucket",
            Op::SetBucket { .. } => "set_bucket",
            Op::Ring => "ring",
            Op::Status => "status",
            Op::LocalGet { .. } => "local_get",
            Op::PreferenceList { .. } => "preference_list",
            Op::Leave => "leave",
            Op::RemoveNode { .. } => "remove_node",
            Op::Forget { .. } => "forget",
            Op::BlockOutbound { .. } => "block_outbound",
            Op::Scan { .. } => "scan",
            Op::MultiGet { .. } => "multi_get",
            Op::MultiPut { .. } => "multi_put",
            Op::Flush => "flush",
            Op::Compact => "compact",
            Op::Repair { .. } => "repair",
            Op::Snapshot { .. } => "snapshot",
            Op::Drain => "drain",
            Op::OnNodes { .. } => "on_nodes",
        }
    }

    /// The bucket and key the op is about, for ops about one key; the
    /// bucket alone (key empty) for `GetBucket` and `SetBucket`.
    pub fn bucket_key(&self) -> Option<(&[u8], &[u8])> {
        match self {
            Op::Get { bucket, key, .. }
            | Op::Put { bucket, key, .. }
            | Op::Delete { bucket, key, .. }
            | Op::CounterAdd { bucket, key, .. }
            | Op::CounterGet { bucket, key, .. }
            | Op::SetAdd { bucket, key, .. }
            | Op::SetRemove { bucket, key, .. }
            | Op::SetMembers { bucket, key, .. }
            | Op::LocalGet { bucket, key }
            | Op::PreferenceList { bucket, key } => Some((bucket, key)),
            Op::GetBucket { bucket }
            | Op::SetBucket { bucket, .. }
            | Op::Scan { bucket, .. }
            | Op::MultiGet { bucket, .. }
            | Op::MultiPut { bucket, .. } => Some((bucket, &[])),
            Op::Hello { .. }
            | Op::Ring
            | Op::Status
            | Op::Leave
            | Op::RemoveNode { .. }
            | Op::Forget { .. }
            | Op::BlockOutbound { .. }
            | Op::Flush
            | Op::Compact
            | Op::Repair { .. }
            | Op::Snapshot { .. }
            | Op::Drain
            | Op::OnNodes { .. } => None,
        }
    }

    /// Checks the op's sizes against the limits of `crate::replication::limits`
    /// (bucket, key, value, set members): what a node checks first for
    /// every op it is given, whatever the way in (client port, shell, C
    /// ABI). A refusal is [`Error::InvalidInput`], not retryable.
    ///
    /// ```
    /// use ringkv::protocol::{Op, WriteOptions};
    /// use serde_bytes::ByteBuf;
    /// let put = |key: usize, value: usize| Op::Put {
    ///     bucket: ByteBuf::from(b"b".to_vec()),
    ///     key: ByteBuf::from(vec![7; key]),
    ///     value: ByteBuf::from(vec![0; value]),
    ///     context: None,
    ///     options: WriteOptions::default(),
    /// };
    /// assert!(put(1, 1).check_limits().is_ok());
    /// assert!(put(ringkv::config::MAX_KEY_BYTES + 1, 1).check_limits().is_err());
    /// assert!(put(1, ringkv::config::MAX_VALUE_BYTES + 1).check_limits().is_err());
    /// ```
    pub fn check_limits(&self) -> crate::error::Result<()> {
        if let Some((bucket, key)) = self.bucket_key() {
            crate::replication::limits::check_bucket_key(bucket, key)?;
        }
        match self {
            Op::Put { value, .. } => crate::replication::limits::check_value(value.len()),
            Op::SetAdd { members, .. } | Op::SetRemove { members, .. } => {
                crate::replication::limits::check_members(members.iter().map(|m| m.as_slice()))
            }
            Op::Scan { cursor, limit, .. } => {
                if *limit == 0 || *limit > MAX_SCAN_LIMIT {
                    return Err(Error::InvalidInput(format!(
                        "a scan's limit must be 1 to {MAX_SCAN_LIMIT}, not {limit}"
                    )));
                }
                ScanCursor::from_bytes(cursor.as_ref().map_or(&[][..], |c| c.as_slice()))
                    .map(|_| ())
            }
            Op::MultiGet { bucket, keys, .. } => {
                check_batch_len("multi_get", keys.len())?;
                for key in keys {
                    crate::replication::limits::check_bucket_key(bucket, key)?;
                }
                Ok(())
            }
            Op::MultiPut { bucket, items, .. } => {
                check_batch_len("multi_put", items.len())?;
                let mut total = 0usize;
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                for item in items {
                    crate::replication::limits::check_bucket_key(bucket, &item.key)?;
                    crate::replication::limits::check_value(item.value.len())?;
                    if !seen.insert(item.key.as_slice()) {
                        return Err(Error::InvalidInput(format!(
                            "multi_put names the key {:?} twice: each key at most once \
                             (two writes of one key in a batch would race)",
                            String::from_utf8_lossy(&item.key)
                        )));
                    }
                    total += item.key.len()
                        + item.value.len()
                        + item.context.as_ref().map_or(0, |c| c.len());
                }
                if total > MAX_BATCH_BYTES {
                    return Err(Error::InvalidInput(format!(
                        "multi_put carries {total} bytes of keys, values and contexts; \
                         a batch carries at most {MAX_BATCH_BYTES}: split it"
                    )));
                }
                Ok(())
            }
            Op::Snapshot { dir } => check_snapshot_dir(dir),
            Op::OnNodes {
                nodes,
                op,
                timeout_ms,
            } => {
                if !op.runs_on_nodes() {
                    return Err(Error::InvalidInput(format!(
                        "on_nodes runs status, ring, flush, compact, repair or snapshot, not {}",
                        op.name()
                    )));
                }
                if nodes.as_ref().is_some_and(|n| n.len() > MAX_BLOCKED_PEERS) {
                    return Err(Error::InvalidInput(format!(
                        "on_nodes names at most {MAX_BLOCKED_PEERS} nodes"
                    )));
                }
                if let Some(t) = timeout_ms {
                    if *t == 0 || *t > MAX_ADMIN_TIMEOUT_MS {
                        return Err(Error::InvalidInput(format!(
                            "on_nodes' timeout_ms must be 1 to {MAX_ADMIN_TIMEOUT_MS}, not {t}"
                        )));
                    }
                }
                op.check_limits()
            }
            _ => Ok(()),
        }
    }

    /// The least role that may run the op; `None` for `Hello`, which any
    /// connection may send.
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Op::Hello { .. } => None,
            Op::Get { .. }
            | Op::CounterGet { .. }
            | Op::SetMembers { .. }
            | Op::GetBucket { .. }
            | Op::Ring
            | Op::Status
            | Op::LocalGet { .. }
            | Op::PreferenceList { .. }
            | Op::Scan { .. }
            | Op::MultiGet { .. } => Some(Role::Read),
            Op::Put { .. }
            | Op::MultiPut { .. }
            | Op::Delete { .. }
            | Op::CounterAdd { .. }
            | Op::SetAdd { .. }
            | Op::SetRemove { .. } => Some(Role::ReadWrite),
            Op::SetBucket { .. }
            | Op::Leave
            | Op::RemoveNode { .. }
            | Op::Forget { .. }
            | Op::BlockOutbound { .. }
            | Op::Flush
            | Op::Compact
            | Op::Repair { .. }
            | Op::Snapshot { .. }
            | Op::Drain => Some(Role::Admin),
            Op::OnNodes { op, .. } => op.required_role(),
        }
    }

    /// Whether [`Op::OnNodes`] may run the op on other nodes: the
    /// node-local admin ops and views, never a data op, a membership
    /// change or another `OnNodes`.
    pub fn runs_on_nodes(&self) -> bool {
        matches!(
            self,
            Op::Status
                | Op::Ring
                | Op::Flush
                | Op::Compact
                | Op::Repair { .. }
                | Op::Snapshot { .. }
        )
    }

    /// Whether the op changes stored state (data, bucket properties or the
    /// ring). A failed write's [`ErrorReply::indefinite`] says whether it
    /// may still have been applied; a client retries it only when that is
    /// `Some(false)`.
    pub fn is_write(&self) -> bool {
        match self {
            Op::Put { .. }
            // A write if any of its items is.
            | Op::MultiPut { .. }
            | Op::Delete { .. }
            | Op::CounterAdd { .. }
            | Op::SetAdd { .. }
            | Op::SetRemove { .. }
            | Op::SetBucket { .. }
            | Op::Leave
            | Op::RemoveNode { .. }
            // Changes membership and then the ring. Forgetting twice is
            // harmless, but like `RemoveNode` it is not retried blindly.
            | Op::Forget { .. }
            // Leaves the ring.
            | Op::Drain => true,
            Op::OnNodes { op, .. } => op.is_write(),
            Op::Hello { .. }
            | Op::Get { .. }
            | Op::CounterGet { .. }
            | Op::SetMembers { .. }
            | Op::GetBucket { .. }
            | Op::Ring
            | Op::Status
            | Op::LocalGet { .. }
            | Op::PreferenceList { .. }
            | Op::Scan { .. }
            | Op::MultiGet { .. }
            // Sets a fault, not stored state; sending it again is harmless.
            | Op::BlockOutbound { .. }
            // Change where data lives or when it is compared, not what
            // it is; sending them again is harmless (a second snapshot
            // into the same directory is refused).
            | Op::Flush
            | Op::Compact
            | Op::Repair { .. }
            | Op::Snapshot { .. } => false,
        }
    }
}

/// A bucket's properties as the protocol carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// Replicas per key, 1 to 16.
    pub n: u32,
    /// Default read quorum.
    pub r: Consistency,
    /// Default write quorum.
    pub w: Consistency,
    /// Conflict policy.
    pub policy: ConflictPolicy,
    /// Whether fallbacks may stand in for down primaries.
    pub sloppy_quorum: bool,
    /// Request timeout in milliseconds.
    pub timeout_ms: u64,
}

impl From<&BucketProps> for BucketInfo {
    fn from(p: &BucketProps) -> Self {
        BucketInfo {
            n: p.n as u32,
            r: p.r,
            w: p.w,
            policy: p.policy.clone(),
            sloppy_quorum: p.sloppy_quorum,
            timeout_ms: p.timeout.as_millis().min(u64::MAX as u128) as u64,
        }
    }
}

impl TryFrom<&BucketInfo> for BucketProps {
    type Error = Error;

    fn try_from(b: &BucketInfo) -> Result<Self, Error> {
        let props = BucketProps {
            n: b.n as usize,
            r: b.r,
            w: b.w,
            policy: b.policy.clone(),
            sloppy_quorum: b.sloppy_quorum,
            timeout: std::time::Duration::from_millis(b.timeout_ms),
        };
        props.validate()?;
        Ok(props)
    }
}

/// One node's answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The request's `id` (0 when the request could not be read at all).
    pub id: u64,
    /// The answer: `{"Ok": reply}` or `{"Err": error}`.
    pub result: Result<Reply, ErrorReply>,
}

/// One sibling of an object, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingView {
    /// The value; absent (null) for a delete that is concurrent with other
    /// writes.
    pub value: Option<ByteBuf>,
    /// When it was written, in milliseconds since the Unix epoch, by the
    /// coordinating node's hybrid logical clock.
    pub timestamp_ms: u64,
    /// The node that coordinated the write.
    pub node: NodeId,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The answer to `Hello`.
    Hello {
        /// The node's [`CLIENT_PROTOCOL_VERSION`].
        version: u32,
        /// The node's id.
        node: NodeId,
        /// The cluster's name.
        cluster: String,
        /// The connection's role now: the authenticated user's, or `admin`
        /// on a node that does not require authentication. Absent when the
        /// node requires authentication and this `Hello` carried none.
        #[serde(
            default,
            deserialize_with = "null_as_default",
            skip_serializing_if = "Option::is_none"
        )]
        role: Option<Role>,
    },
    /// The answer to `Get`. Exactly one of three shapes: `value` set and
    /// `siblings` empty (one value); both empty (not found or deleted); or
    /// `value` absent and two or more `siblings` (concurrent writes, under
    /// the `Siblings` policy: resolve them and write back with `context`).
    Object {
        /// The value, when there is exactly one.
        value: Option<ByteBuf>,
        /// Concurrent values, when there are several.
        siblings: Vec<SiblingView>,
        /// The causal context to send back with the next write of this key.
        context: ByteBuf,
        /// What the request did.
        receipt: Receipt,
    },
    /// The answer to `Put` and `Delete`: the write is acknowledged.
    Written {
        /// The context of the object as stored by the coordinating replica:
        /// a later write with it replaces this one.
        context: ByteBuf,
        /// What the request did.
        receipt: Receipt,
    },
    /// The answer to `CounterAdd` and `CounterGet`.
    Counter {
        /// The counter's value.
        value: i64,
        /// What the request did.
        receipt: Receipt,
    },
    /// The answer to `SetAdd`, `SetRemove` and `SetMembers`.
    Set {
        /// The members, in byte order.
        members: Vec<ByteBuf>,
        /// What the request did.
        receipt: Receipt,
        /// For `SetAdd` and `SetRemove`: how many distinct members the op
        /// changed the membership of (what Redis's `SADD` and `SREM`
        /// answer), counted by the coordinating replica, under the key's
        /// lock, against the set it applied the op to (its own siblings
        /// joined with a read at the write's level). Absent for
        /// `SetMembers`, and when the coordinating replica did not count
        /// (a node of a version before this field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        changed: Option<u64>,
    },
    /// The answer to `GetBucket` and `SetBucket`.
    Bucket {
        /// The bucket's properties (the node's defaults if never set).
        props: BucketInfo,
    },
    /// The answer to `Ring`.
    Ring(RingView),
    /// The answer to `Status`.
    Status(StatusView),
    /// The answer to `PreferenceList`.
    Preference {
        /// Each target in order, with the primary it stands in for when it
        /// is a fallback.
        targets: Vec<PreferenceEntry>,
    },
    /// The answer to `BlockOutbound`.
    Blocked {
        /// The peers this node now drops frames to, by id (empty: none).
        peers: Vec<NodeId>,
    },
    /// The answer to `Scan`: a page of keys.
    Keys {
        /// The keys, in token order; never one deleted, never one listed
        /// by an earlier page of the same scan.
        keys: Vec<ByteBuf>,
        /// Where the next page starts (send it back unchanged); absent
        /// (null) when the scan is done.
        #[serde(default, deserialize_with = "null_as_default")]
        cursor: Option<ByteBuf>,
        /// What the request did (for the page's one token segment).
        receipt: Receipt,
    },
    /// The answer to `MultiGet`: one item per key, in the order of the
    /// request's `keys`.
    Objects {
        /// Each key's answer: what `Get` would answer (`Ok`), or its error
        /// (`Err`).
        items: Vec<Result<ObjectItem, ErrorReply>>,
    },
    /// The answer to `MultiPut`: one item per write, in the order of the
    /// request's `items`.
    WrittenMany {
        /// Each write's answer: what `Put` would answer (`Ok`), or its
        /// error (`Err`).
        items: Vec<Result<WrittenItem, ErrorReply>>,
    },
    /// The answer to `Flush` and `Compact`: the engine's figures after it.
    Storage(StorageView),
    /// The answer to `Repair`.
    Repair {
        /// The round asked for is over once the node's finished-round
        /// count (`Status`'s `anti_entropy.rounds`) reaches this.
        until_rounds: u64,
    },
    /// The answer to `Snapshot`.
    Snapshot(SnapshotView),
    /// The answer to `OnNodes`: one answer per node, in node order.
    Nodes {
        /// Each node's answer.
        answers: Vec<NodeAnswer>,
    },
}

/// One key's answer within [`Reply::Objects`]: the fields of
/// [`Reply::Object`], in its three shapes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectItem {
    /// The value, when there is exactly one.
    pub value: Option<ByteBuf>,
    /// Concurrent values, when there are several.
    pub siblings: Vec<SiblingView>,
    /// The causal context to send back with the next write of this key.
    pub context: ByteBuf,
    /// What the key's read did.
    pub receipt: Receipt,
}

/// One write's answer within [`Reply::WrittenMany`]: the fields of
/// [`Reply::Written`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenItem {
    /// The context of the object as stored by the coordinating replica.
    pub context: ByteBuf,
    /// What the write did.
    pub receipt: Receipt,
}

/// One node's answer within [`Reply::Nodes`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeAnswer {
    /// The node.
    pub node: NodeId,
    /// Its reply, or why there is none.
    pub result: Result<Reply, ErrorReply>,
}

/// A node's storage engine, as [`Reply::Storage`] shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageView {
    /// The engine: `"lsm"`, `"btree"` or `"memory"`.
    pub engine: String,
    /// Bytes in memtables now.
    pub memtable_bytes: u64,
    /// Bytes its files take now.
    pub disk_bytes: u64,
    /// Memtables flushed since it opened.
    pub flushes: u64,
    /// Compactions since it opened.
    pub compactions: u64,
}

/// A snapshot written by [`Op::Snapshot`]: also what its `SNAPSHOT.json`
/// holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotView {
    /// The directory it was written to, on the node's machine.
    pub dir: String,
    /// The node whose store it copies.
    pub node: NodeId,
    /// The node's cluster.
    pub cluster: String,
    /// The engine that wrote it (a node restored from it must use the
    /// same): `"lsm"` or `"btree"`.
    pub engine: String,
    /// Entries copied (objects, hints and the node's own records).
    pub entries: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
}

/// One entry of a preference list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceEntry {
    /// The node.
    pub node: NodeId,
    /// `Some(owner)`: a fallback standing in for the down primary `owner`.
    pub fallback_for: Option<NodeId>,
}

/// The ring as a node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingView {
    /// The ring's epoch (raised by every change).
    pub epoch: u64,
    /// One entry per node that owns tokens, by node id.
    pub nodes: Vec<RingNode>,
    /// The change in progress (a join, leave or removal whose ranges are
    /// moving), if any. Absent from the encoding when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<RingChangeView>,
}

/// A ring change in progress, as a node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingChangeView {
    /// `"join"`, `"leave"` or `"remove"`.
    pub kind: String,
    /// The node joining, leaving or removed.
    pub node: NodeId,
    /// The epoch the ring will have when the change is in force.
    pub target_epoch: u64,
    /// Range moves the change needs.
    pub moves: u32,
    /// Range moves done.
    pub done: u32,
}

/// One node's part of the ring.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingNode {
    /// The node.
    pub node: NodeId,
    /// Its virtual nodes.
    pub vnodes: u32,
    /// The fraction of the token space it owns as first replica, 0 to 1.
    pub share: f64,
}

/// A node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The answering node.
    pub node: NodeId,
    /// The cluster's name.
    pub cluster: String,
    /// Every member it knows of.
    pub members: Vec<MemberView>,
    /// Objects in its store (an estimate for the LSM: keys written minus
    /// deletes seen, counted since start).
    pub keys: u64,
    /// Hints it holds for other nodes.
    pub hints: u64,
    /// Client requests in flight on it.
    pub in_flight: u64,
    /// Its storage engine's name.
    pub engine: String,
    /// Range transfers into it (see `docs/rebalancing.md`), by id. Absent
    /// from nodes older than transfers: empty.
    #[serde(default)]
    pub transfers: Vec<TransferView>,
    /// Its anti-entropy counters (zero from a node that predates them).
    #[serde(default)]
    pub anti_entropy: crate::replication::anti_entropy::AntiEntropyStats,
    /// What it served as a transfer source since it started, per receiver
    /// and transfer. Absent from the encoding when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<ServedView>,
    /// Damaged places (file and offset) its storage engine found in its
    /// files since it started, each logged once at ERROR; nonzero means the
    /// node needs repair (see `docs/storage.md`). Absent from the encoding
    /// when zero, and from nodes older than the count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub corruptions: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a node served, as a source, for one receiver's transfer, as a
/// status view shows it (counted since the source started).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedView {
    /// The receiving node.
    pub receiver: NodeId,
    /// The receiver's transfer id.
    pub transfer: u64,
    /// Pulls answered with a batch.
    pub pulls: u64,
    /// Of those, pulls from the start of the range (no cursor): 1 for a
    /// transfer that was never restarted, however often it was broken.
    pub from_start: u64,
    /// Objects sent.
    pub keys: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pulls refused (busy, or a failed scan).
    pub refused: u64,
}

impl From<&crate::replication::transfer::ServedStats> for ServedView {
    fn from(s: &crate::replication::transfer::ServedStats) -> Self {
        ServedView {
            receiver: s.receiver,
            transfer: s.transfer,
            pulls: s.pulls,
            from_start: s.from_start,
            keys: s.keys,
            bytes: s.bytes,
            refused: s.refused,
        }
    }
}

/// One range transfer into a node, as a status view shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// The transfer's id (chosen by whoever started it).
    pub id: u64,
    /// The range: tokens after this one ...
    pub after: u64,
    /// ... through this one, wrapping past `u64::MAX`.
    pub through: u64,
    /// The nodes it pulls from.
    pub sources: Vec<NodeId>,
    /// `"queued"`, `"running"`, `"waiting_for_source"`, `"done"` or
    /// `"failed"`.
    pub state: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Objects stored so far.
    pub keys: u64,
    /// Bytes stored so far.
    pub bytes: u64,
    /// Batches stored so far.
    pub batches: u64,
    /// Milliseconds it has run in this process (until it finished).
    pub elapsed_ms: u64,
}

impl From<&crate::replication::transfer::TransferProgress> for TransferView {
    fn from(p: &crate::replication::transfer::TransferProgress) -> Self {
        use crate::replication::transfer::TransferState as S;
        let (state, error) = match &p.state {
            S::Queued => ("queued", None),
            S::Running => ("running", None),
            S::WaitingForSource => ("waiting_for_source", None),
            S::Done => ("done", None),
            S::Failed(why) => ("failed", Some(why.clone())),
        };
        let elapsed = match (p.started, p.finished) {
            (Some(s), Some(f)) => f.saturating_duration_since(s),
            (Some(s), None) => s.elapsed(),
            _ => std::time::Duration::ZERO,
        };
        TransferView {
            id: p.id,
            after: p.range.after.0,
            through: p.range.through.0,
            sources: p.sources.clone(),
            state: state.into(),
            error,
            keys: p.keys,
            bytes: p.bytes,
            batches: p.batches,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }
}

/// One member as a node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// The member.
    pub node: NodeId,
    /// Its peer address.
    pub addr: String,
    /// `"Alive"`, `"Suspect"`, `"Down"` or `"Left"`.
    pub state: String,
    /// Phi of its acks now, if the answering node monitors it (0 for the
    /// members it does not monitor, and for itself).
    pub phi: f64,
    /// Its incarnation.
    pub incarnation: u64,
}

impl From<&Error> for ErrorReply {
    fn from(e: &Error) -> Self {
        let message = e.to_string();
        let retryable = e.is_retryable();
        let mut reply = ErrorReply::new(ErrorCode::Internal, message, retryable);
        match e {
            Error::InvalidInput(_) | Error::FrameTooLarge { .. } => {
                reply.code = ErrorCode::InvalidArgument
            }
            Error::Decode { .. } => reply.code = ErrorCode::BadRequest,
            Error::Unavailable {
                needed,
                got,
                indefinite,
            } => {
                reply.code = ErrorCode::Unavailable;
                reply.needed = Some(*needed as u32);
                reply.got = Some(*got as u32);
                reply.indefinite = Some(*indefinite);
            }
            Error::QuorumTimeout {
                needed,
                got,
                indefinite,
                ..
            } => {
                reply.code = ErrorCode::Timeout;
                reply.needed = Some(*needed as u32);
                reply.got = Some(*got as u32);
                reply.indefinite = Some(*indefinite);
            }
            Error::Timeout { .. } => reply.code = ErrorCode::Timeout,
            Error::TooManySiblings { .. } => reply.code = ErrorCode::TooManySiblings,
            Error::Replica(_) | Error::Corruption { .. } | Error::StorageFailed { .. } => {
                reply.code = ErrorCode::ReplicaFailed
            }
            Error::QueueFull { .. } => reply.code = ErrorCode::Overloaded,
            Error::RingUnconfirmed => {
                // Nothing was sent to any replica.
                reply.code = ErrorCode::Unavailable;
                reply.indefinite = Some(false);
            }
            Error::Draining(_) => {
                // Refused before anything was sent to a replica.
                reply.code = ErrorCode::ShuttingDown;
                reply.indefinite = Some(false);
            }
            Error::Shutdown => {
                // Final for this node, but another node can serve it.
                reply.code = ErrorCode::ShuttingDown;
                reply.retryable = true;
            }
            // A node passing on another node's answer passes it unchanged.
            Error::Remote(remote) => reply = remote.clone(),
            Error::OutcomeUnknown { .. } => reply.indefinite = Some(true),
            _ => {}
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::limits as config;

    /// The matches are exhaustive on purpose: a new variant stops this
    /// from compiling. Add it here and to [`VARIANTS`]; the test below then
    /// fails until `tests/protocol_golden.rs` has a vector for it.
    fn golden_names(op: Option<&Op>, reply: Option<&Reply>, code: Option<&ErrorCode>) {
        let _ = op.map(|o| match o {
            Op::Hello { .. }
            | Op::Get { .. }
            | Op::Put { .. }
            | Op::Delete { .. }
            | Op::CounterAdd { .. }
            | Op::CounterGet { .. }
            | Op::SetAdd { .. }
            | Op::SetRemove { .. }
            | Op::SetMembers { .. }
            | Op::GetBucket { .. }
            | Op::SetBucket { .. }
            | Op::Ring
            | Op::Status
            | Op::LocalGet { .. }
            | Op::PreferenceList { .. }
            | Op::Leave
            | Op::RemoveNode { .. }
            | Op::Forget { .. }
            | Op::BlockOutbound { .. }
            | Op::Scan { .. }
            | Op::MultiGet { .. }
            | Op::MultiPut { .. }
            | Op::Flush
            | Op::Compact
            | Op::Repair { .. }
            | Op::Snapshot { .. }
            | Op::Drain
            | Op::OnNodes { .. } => (),
        });
        let _ = reply.map(|r| match r {
            Reply::Hello { .. }
            | Reply::Object { .. }
            | Reply::Written { .. }
            | Reply::Counter { .. }
            | Reply::Set { .. }
            | Reply::Bucket { .. }
            | Reply::Ring(_)
            | Reply::Status(_)
            | Reply::Preference { .. }
            | Reply::Blocked { .. }
            | Reply::Keys { .. }
            | Reply::Objects { .. }
            | Reply::WrittenMany { .. }
            | Reply::Storage(_)
            | Reply::Repair { .. }
            | Reply::Snapshot(_)
            | Reply::Nodes { .. } => (),
        });
        let _ = code.map(|c| match c {
            ErrorCode::BadRequest
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidArgument
            | ErrorCode::Unavailable
            | ErrorCode::Timeout
            | ErrorCode::TooManySiblings
            | ErrorCode::ReplicaFailed
            | ErrorCode::Overloaded
            | ErrorCode::ShuttingDown
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::Internal => (),
        });
    }

    const VARIANTS: &[&str] = &[
        "Op::Hello",
        "Op::Get",
        "Op::Put",
        "Op::Delete",
        "Op::CounterAdd",
        "Op::CounterGet",
        "Op::SetAdd",
        "Op::SetRemove",
        "Op::SetMembers",
        "Op::GetBucket",
        "Op::SetBucket",
        "Op::Ring",
        "Op::Status",
        "Op::LocalGet",
        "Op::PreferenceList",
        "Op::Leave",
        "Op::RemoveNode",
        "Op::Forget",
        "Op::BlockOutbound",
        "Op::Scan",
        "Op::MultiGet",
        "Op::MultiPut",
        "Op::Flush",
        "Op::Compact",
        "Op::Repair",
        "Op::Snapshot",
        "Op::Drain",
        "Op::OnNodes",
        "Reply::Hello",
        "Reply::Object",
        "Reply::Written",
        "Reply::Counter",
        "Reply::Set",
        "Reply::Bucket",
        "Reply::Ring",
        "Reply::Status",
        "Reply::Preference",
        "Reply::Blocked",
        "Reply::Keys",
        "Reply::Objects",
        "Reply::WrittenMany",
        "Reply::Storage",
        "Reply::Repair",
        "Reply::Snapshot",
        "Reply::Nodes",
        "ErrorCode::BadRequest",
        "ErrorCode::UnsupportedVersion",
        "ErrorCode::InvalidArgument",
        "ErrorCode::Unavailable",
        "ErrorCode::Timeout",
        "ErrorCode::TooManySiblings",
        "ErrorCode::ReplicaFailed",
        "ErrorCode::Overloaded",
        "ErrorCode::ShuttingDown",
        "ErrorCode::Unauthenticated",
        "ErrorCode::PermissionDenied",
        "ErrorCode::Internal",
    ];

    #[test]
    fn every_variant_has_a_golden_vector() {
        golden_names(None, None, None);
        let golden = include_str!("../tests/protocol_golden.rs");
        for name in VARIANTS {
            assert!(
                golden.contains(name),
                "{name} has no golden vector in tests/protocol_golden.rs"
            );
        }
    }

    #[test]
    fn writes_are_the_ops_that_change_state() {
        let b = || ByteBuf::from(b"b".to_vec());
        assert!(Op::CounterAdd {
            bucket: b(),
            key: b(),
            by: 1,
            options: WriteOptions::default(),
        }
        .is_write());
        assert!(!Op::Get {
            bucket: b(),
            key: b(),
            options: ReadOptions::default(),
        }
        .is_write());
        assert!(!Op::Ring.is_write());
    }

    /// Issue [9] C12: `"options": null` was a bad request for `Get`,
    /// `Put` and `SetMembers` (and every op with options), though section
    /// 2 of docs/protocol.md says an optional field may be null. Each
    /// optional field of each op is sent as null here, as a client written
    /// from the document would.
    #[test]
    fn every_optional_field_may_be_null() {
        use ciborium::Value as V;
        let t = |s: &str| V::Text(s.into());
        let bytes = |s: &str| V::Bytes(s.as_bytes().to_vec());
        let members = V::Array(vec![bytes("x")]);
        let read_nulls = V::Map(
            ["r", "repair", "sloppy_quorum", "timeout_ms"]
                .iter()
                .map(|f| (t(f), V::Null))
                .collect(),
        );
        let write_nulls = V::Map(
            ["w", "sloppy_quorum", "timeout_ms"]
                .iter()
                .map(|f| (t(f), V::Null))
                .collect(),
        );
        // (op, its required fields, its optional fields)
        type Shape<'a> = (&'a str, Vec<(&'a str, V)>, Vec<&'a str>);
        let ops: Vec<Shape> = vec![
            ("Get", vec![], vec!["options"]),
            (
                "Put",
                vec![("value", bytes("v"))],
                vec!["context", "options"],
            ),
            ("Delete", vec![], vec!["context", "options"]),
            (
                "CounterAdd",
                vec![("by", V::Integer(1.into()))],
                vec!["options"],
            ),
            ("CounterGet", vec![], vec!["options"]),
            (
                "SetAdd",
                vec![("members", members.clone())],
                vec!["options"],
            ),
            ("SetRemove", vec![("members", members)], vec!["options"]),
            ("SetMembers", vec![], vec!["options"]),
        ];
        for (name, required, optional) in ops {
            let is_read = matches!(name, "Get" | "CounterGet" | "SetMembers");
            // Each optional field null, then absent, then options with
            // every field null.
            let shapes: Vec<Vec<(&str, V)>> = vec![
                optional.iter().map(|f| (*f, V::Null)).collect(),
                vec![],
                vec![(
                    "options",
                    if is_read {
                        read_nulls.clone()
                    } else {
                        write_nulls.clone()
                    },
                )],
            ];
            for extra in shapes {
                let mut fields = vec![(t("bucket"), bytes("b")), (t("key"), bytes("k"))];
                for (f, v) in required.iter().cloned().chain(extra) {
                    fields.push((t(f), v));
                }
                let request = V::Map(vec![
                    (t("id"), V::Integer(9.into())),
                    (t("op"), V::Map(vec![(t(name), V::Map(fields))])),
                ]);
                let mut frame = Vec::new();
                ciborium::into_writer(&request, &mut frame).unwrap();
                let decoded: Request =
                    crate::codec::decode(&frame, 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(decoded.id, 9);
                assert_eq!(decoded.op.name().replace('_', ""), name.to_lowercase());
                match decoded.op {
                    Op::Get { options, .. }
                    | Op::CounterGet { options, .. }
                    | Op::SetMembers { options, .. } => assert_eq!(options, ReadOptions::default()),
                    Op::Put {
                        options, context, ..
                    }
                    | Op::Delete {
                        options, context, ..
                    } => {
                        assert_eq!(options, WriteOptions::default());
                        assert_eq!(context, None);
                    }
                    Op::CounterAdd { options, .. }
                    | Op::SetAdd { options, .. }
                    | Op::SetRemove { options, .. } => {
                        assert_eq!(options, WriteOptions::default())
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn batches_are_checked_whole() {
        let b = |s: &[u8]| ByteBuf::from(s.to_vec());
        let get = |keys: Vec<ByteBuf>| Op::MultiGet {
            bucket: b(b"b"),
            keys,
            options: ReadOptions::default(),
        };
        let item = |k: &[u8], v: usize| PutItem {
            key: b(k),
            value: ByteBuf::from(vec![0; v]),
            context: None,
        };
        let put = |items: Vec<PutItem>| Op::MultiPut {
            bucket: b(b"b"),
            items,
            options: WriteOptions::default(),
        };
        let refused = |op: Op, says: &str| match op.check_limits() {
            Err(Error::InvalidInput(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        };
        assert!(get(vec![b(b"k")]).check_limits().is_ok());
        // Duplicate keys may be read; the empty key is a key.
        assert!(get(vec![b(b"k"), b(b"k"), b(b"")]).check_limits().is_ok());
        refused(get(vec![]), "1 to 1000 keys, not 0");
        refused(get(vec![b(b"k"); MAX_BATCH_KEYS + 1]), "not 1001");
        assert!(get(vec![b(b"k"); MAX_BATCH_KEYS]).check_limits().is_ok());
        refused(
            get(vec![
                b(b"k"),
                ByteBuf::from(vec![1; config::MAX_KEY_BYTES + 1]),
            ]),
            "key of",
        );
        assert!(put(vec![item(b"a", 1), item(b"", 1)])
            .check_limits()
            .is_ok());
        refused(put(vec![]), "not 0");
        refused(put(vec![item(b"a", 1), item(b"a", 2)]), "twice");
        refused(
            put(vec![item(b"a", 1), item(b"b", config::MAX_VALUE_BYTES + 1)]),
            "value of",
        );
        // Each value within its limit, the batch past its own.
        refused(
            put(vec![item(b"a", config::MAX_VALUE_BYTES), item(b"b", 1)]),
            "split it",
        );
        assert!(put(vec![item(b"a", 1)]).is_write());
        assert!(!get(vec![b(b"k")]).is_write());
        assert_eq!(get(vec![b(b"k")]).required_role(), Some(Role::Read));
        assert_eq!(
            put(vec![item(b"a", 1)]).required_role(),
            Some(Role::ReadWrite)
        );
    }

    #[test]
    fn a_shutting_down_node_is_worth_retrying_elsewhere() {
        let reply = ErrorReply::from(&Error::Shutdown);
        assert_eq!(reply.code, ErrorCode::ShuttingDown);
        assert!(reply.retryable);
        let remote = Error::Remote(ErrorReply::new(ErrorCode::Overloaded, "busy", true));
        assert_eq!(ErrorReply::from(&remote).code, ErrorCode::Overloaded);
        assert!(remote.is_retryable());
    }
}
