//! The Rust side both bindings share: an embedded cluster or a client
//! connection behind one [`Store`] trait, and the typed operations (put,
//! get, delete, counters, sets, bucket policy) written once against it.
//!
//! Guarantee: every failure is a [`Failure`] with a stable
//! [`ringkv_result`] code and a message naming the operation; nothing here
//! panics on input. Arguments are validated here (consistency levels,
//! policies, empty buckets and keys), so the C and C++ layers only convert
//! pointers and types.
//!
//! Not here: pointers, NULL checks, panic boundaries (the C layer in
//! `capi.rs`), exceptions (the cxx layer in `cxx_bridge.rs`). A plain put
//! or delete reads the key's context and writes with it, so it replaces
//! what it read (see docs/ffi.md, "Overwrites and sibling values");
//! [`get_object`], [`put_ctx`] and [`delete_ctx`] hand the context to the
//! caller instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringkv::client::{Client, ClientConfig, Credentials};
use ringkv::crdt::CrdtKind;
use ringkv::embedded::cluster::execute_retrying;
use ringkv::embedded::{Cluster, ClusterOptions, EngineKind, Runtime, TransportKind};
use ringkv::net::client_tls::ClientTls;
use ringkv::protocol::{ErrorCode, Op, ReadOptions, Reply, WriteOptions};
use ringkv::replication::Consistency;
use ringkv::version::{ConflictPolicy, Resolvers};
use serde_bytes::ByteBuf;

use crate::result::ringkv_result;

/// Why an operation failed: the code a C caller branches on and the text
/// a person reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The stable code.
    pub code: ringkv_result,
    /// What went wrong, starting with the operation's name.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: ringkv_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(ringkv_result::RINGKV_INVALID_ARGUMENT, message)
    }

    /// A library error from operation `op`, classified.
    pub fn from_error(op: &str, e: &ringkv::Error) -> Failure {
        use ringkv::Error as E;
        use ringkv_result as R;
        let code = match e {
            E::InvalidInput(_) | E::FrameTooLarge { .. } | E::UnknownResolver(_) => {
                R::RINGKV_INVALID_ARGUMENT
            }
            E::Unavailable { .. }
            | E::Shutdown
            | E::QueueFull { .. }
            | E::RingChange { .. }
            | E::RingUnconfirmed => R::RINGKV_UNAVAILABLE,
            E::Timeout { .. } | E::QuorumTimeout { .. } => R::RINGKV_TIMEOUT,
            E::OutcomeUnknown { .. } => R::RINGKV_OUTCOME_UNKNOWN,
            E::Io { .. } | E::Handshake { .. } => R::RINGKV_CONNECTION,
            E::Tls { .. } => R::RINGKV_TLS,
            E::TooManySiblings { .. } => R::RINGKV_SIBLINGS,
            E::Remote(reply) => match reply.code {
                ErrorCode::BadRequest | ErrorCode::InvalidArgument => R::RINGKV_INVALID_ARGUMENT,
                ErrorCode::Unavailable | ErrorCode::Overloaded | ErrorCode::ShuttingDown => {
                    R::RINGKV_UNAVAILABLE
                }
                ErrorCode::Timeout => R::RINGKV_TIMEOUT,
                ErrorCode::TooManySiblings => R::RINGKV_SIBLINGS,
                ErrorCode::Unauthenticated | ErrorCode::PermissionDenied => R::RINGKV_DENIED,
                _ => R::RINGKV_REMOTE,
            },
            _ => R::RINGKV_INTERNAL,
        };
        Failure::new(code, format!("{op}: {e}"))
    }
}

/// `RINGKV_NOT_FOUND: get: no value for this key`: the code's name, then
/// the message (the text of a C++ `rust::Error`).
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for Failure {}

/// What an operation returns.
pub type Outcome<T> = Result<T, Failure>;

/// `RINGKV_CONSISTENCY_DEFAULT`: the bucket's own `r` or `w`.
const CONSISTENCY_DEFAULT: u32 = 0;

/// A consistency level from its stable number (docs/ffi.md): 0 is the
/// bucket's default, 1 to 4 are ONE, TWO, QUORUM and ALL.
pub fn consistency(op: &str, level: u32) -> Outcome<Option<Consistency>> {
    match level {
        CONSISTENCY_DEFAULT => Ok(None),
        1 => Ok(Some(Consistency::One)),
        2 => Ok(Some(Consistency::Two)),
        3 => Ok(Some(Consistency::Quorum)),
        4 => Ok(Some(Consistency::All)),
        other => Err(Failure::invalid(format!(
            "{op}: consistency {other} is not one of DEFAULT (0), ONE (1), TWO (2), QUORUM (3), ALL (4)"
        ))),
    }
}

/// A conflict policy from its stable number (docs/ffi.md).
pub fn policy(op: &str, number: u32) -> Outcome<ConflictPolicy> {
    Ok(match number {
        1 => ConflictPolicy::Lww,
        2 => ConflictPolicy::Siblings,
        3 => ConflictPolicy::Crdt(CrdtKind::PnCounter),
        4 => ConflictPolicy::Crdt(CrdtKind::GCounter),
        5 => ConflictPolicy::Crdt(CrdtKind::OrSet),
        6 => ConflictPolicy::Crdt(CrdtKind::GSet),
        7 => ConflictPolicy::Crdt(CrdtKind::TwoPSet),
        other => {
            return Err(Failure::invalid(format!(
                "{op}: policy {other} is not one of LWW (1), SIBLINGS (2), PNCOUNTER (3), GCOUNTER (4), ORSET (5), GSET (6), TWOPSET (7)"
            )))
        }
    })
}

/// A transport from its stable number: 0 memory, 1 TCP on 127.0.0.1.
pub fn transport(op: &str, number: u32) -> Outcome<TransportKind> {
    match number {
        0 => Ok(TransportKind::Memory),
        1 => Ok(TransportKind::Tcp),
        other => Err(Failure::invalid(format!(
            "{op}: transport {other} is not one of MEMORY (0), TCP (1)"
        ))),
    }
}

/// Where requests go: an embedded cluster or a client connection.
pub trait Store {
    /// Executes `op` (named `name` in messages) and returns the reply.
    fn execute(&self, name: &str, op: Op) -> Outcome<Reply>;

    /// As [`Store::execute`], giving up after `timeout` when one is
    /// given (`RINGKV_TIMEOUT`, or `RINGKV_OUTCOME_UNKNOWN` for a write
    /// that was sent). Default: no bound of its own.
    fn execute_within(&self, name: &str, op: Op, timeout: Option<Duration>) -> Outcome<Reply> {
        let _ = timeout;
        self.execute(name, op)
    }

    /// Called after a bucket's properties were stored; returns once the
    /// store will apply them to the next request. Default: at once.
    fn settle_bucket(&self, _bucket: &[u8], _props: &ringkv::protocol::BucketInfo) -> Outcome<()> {
        Ok(())
    }

    /// The buckets' policies this store remembers (see [`PolicyCache`]).
    /// Default: none, so every put and delete reads its key's context.
    fn policies(&self) -> Option<&PolicyCache> {
        None
    }
}

/// How long a bucket's policy is remembered ([`PolicyCache`]).
const POLICY_TTL: Duration = Duration::from_secs(1);

/// The most buckets a [`PolicyCache`] remembers; it starts over when full.
const POLICY_CACHE_MAX: usize = 1024;

/// Buckets' policies as a store last read them, each for [`POLICY_TTL`]:
/// a put or delete into a bucket known to be last-writer-wins skips the
/// read of its key's context, which would change nothing there (see
/// [`overwrite_context`]). A policy changed elsewhere is seen within the
/// TTL (and at once when changed through the same store). Either stale
/// answer is safe: a write taken for LWW in a bucket that became SIBLINGS
/// is blind, kept beside the value as before this cache existed, and the
/// next write's context replaces both; the other way round costs a read.
#[derive(Debug, Default)]
pub struct PolicyCache {
    entries: Mutex<HashMap<Vec<u8>, (ConflictPolicy, Instant)>>,
}

impl PolicyCache {
    /// The policy of `bucket` when it was read less than [`POLICY_TTL`] ago.
    fn get(&self, bucket: &[u8]) -> Option<ConflictPolicy> {
        let entries = lock(&self.entries);
        entries
            .get(bucket)
            .filter(|(_, at)| at.elapsed() < POLICY_TTL)
            .map(|(policy, _)| policy.clone())
    }

    /// Remembers that `bucket` has `policy` now.
    fn insert(&self, bucket: &[u8], policy: ConflictPolicy) {
        let mut entries = lock(&self.entries);
        if entries.len() >= POLICY_CACHE_MAX && !entries.contains_key(bucket) {
            entries.clear();
        }
        entries.insert(bucket.to_vec(), (policy, Instant::now()));
    }
}

/// How an embedded cluster is made beyond its node count and transport:
/// each setting unset (None) keeps the default (memory engine, no data
/// directory, 32 virtual nodes per node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Where the nodes keep their data, one subdirectory per node
    /// (`node-<id>`); reopening a cluster of as many nodes on it finds
    /// the data again.
    pub dir: Option<std::path::PathBuf>,
    /// The storage engine (LSM when a directory is set and this is not).
    pub engine: Option<EngineKind>,
    /// Virtual nodes per node.
    pub vnodes: Option<usize>,
    /// The default bucket properties' replicas per key and read and write
    /// levels.
    pub replicas: Option<(u32, Consistency, Consistency)>,
    /// The default bucket properties' conflict policy.
    pub policy: Option<ConflictPolicy>,
}

/// Waits (up to 30 s) until every node of a cluster started on a data
/// directory coordinates requests: a node that finds a ring stored there
/// refuses them (`RingUnconfirmed`) until a peer confirms it, which takes
/// a gossip round or so after the cluster forms.
fn wait_confirmed(op: &str, cluster: &Cluster) -> Outcome<()> {
    let limit = Duration::from_secs(30);
    let ready = cluster
        .wait(limit, || {
            for id in cluster.live() {
                let probe = Op::Get {
                    bucket: ByteBuf::from(b"ringkv-ffi".to_vec()),
                    key: ByteBuf::from(b"ready?".to_vec()),
                    options: ReadOptions {
                        r: Some(Consistency::One),
                        ..ReadOptions::default()
                    },
                };
                if let Ok(Err(ringkv::Error::RingUnconfirmed)) =
                    cluster.execute_on(cluster.node(id)?, probe)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .map_err(|e| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{op}: {e}")))?;
    if ready {
        Ok(())
    } else {
        Err(Failure::new(
            ringkv_result::RINGKV_UNAVAILABLE,
            format!("{op}: the nodes did not confirm their stored ring within {limit:?}"),
        ))
    }
}

/// The gossip interval of an embedded cluster made through the FFI.
const FFI_GOSSIP_MS: u64 = 100;

/// The most virtual nodes per node the FFI takes.
pub const MAX_VNODES: u32 = 1024;

impl EmbeddedOptions {
    /// Sets the engine from its stable number: 0 memory, 1 LSM, 2 B-tree.
    pub fn set_engine(&mut self, op: &str, number: u32) -> Outcome<()> {
        self.engine = Some(match number {
            0 => EngineKind::Memory,
            1 => EngineKind::Lsm,
            2 => EngineKind::BTree,
            other => {
                return Err(Failure::invalid(format!(
                    "{op}: engine {other} is not one of MEMORY (0), LSM (1), BTREE (2)"
                )))
            }
        });
        Ok(())
    }

    /// Sets the virtual nodes per node, 1 to [`MAX_VNODES`].
    pub fn set_vnodes(&mut self, op: &str, vnodes: u32) -> Outcome<()> {
        if vnodes == 0 || vnodes > MAX_VNODES {
            return Err(Failure::invalid(format!(
                "{op}: vnodes must be 1 to {MAX_VNODES}, got {vnodes}"
            )));
        }
        self.vnodes = Some(vnodes as usize);
        Ok(())
    }

    /// Sets the default bucket properties' conflict policy
    /// (`RINGKV_POLICY_*`).
    pub fn set_policy(&mut self, op: &str, number: u32) -> Outcome<()> {
        self.policy = Some(policy(op, number)?);
        Ok(())
    }

    /// Sets the default bucket properties' replicas per key `n` (1 to 5;
    /// at most the nodes, checked at start) and read and write levels
    /// (`RINGKV_CONSISTENCY_*` other than DEFAULT).
    pub fn set_replicas(&mut self, op: &str, n: u32, r: u32, w: u32) -> Outcome<()> {
        if n == 0 || n > 5 {
            return Err(Failure::invalid(format!("{op}: n must be 1 to 5, got {n}")));
        }
        let level = |what: &str, v: u32| -> Outcome<Consistency> {
            consistency(op, v)?.ok_or_else(|| {
                Failure::invalid(format!(
                    "{op}: {what} must be a level (ONE to ALL), not DEFAULT: this sets the default"
                ))
            })
        };
        let (r, w) = (level("r", r)?, level("w", w)?);
        let needed = |c: Consistency| match c {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Quorum => n / 2 + 1,
            Consistency::All => n,
            Consistency::Count(c) => c,
        };
        if needed(r) > n || needed(w) > n {
            return Err(Failure::invalid(format!(
                "{op}: r {r:?} and w {w:?} must each need at most n = {n} replicas"
            )));
        }
        self.replicas = Some((n, r, w));
        Ok(())
    }

    /// Sets the data directory; it must not be empty.
    pub fn set_dir(&mut self, op: &str, dir: &str) -> Outcome<()> {
        if dir.is_empty() {
            return Err(Failure::invalid(format!("{op}: the directory is empty")));
        }
        self.dir = Some(dir.into());
        Ok(())
    }
}

/// The most nodes an embedded cluster may have through the FFI.
const MAX_NODES: u32 = 16;

/// An embedded cluster and the runtime it runs on.
pub struct EmbeddedCluster {
    // Dropped first: its drop shuts the nodes down on the runtime.
    cluster: Cluster,
    policies: PolicyCache,
}

/// Makes a write to a socket whose peer has closed fail with `EPIPE`
/// instead of killing the process, when the program has left SIGPIPE at
/// its default (terminate). Rust programs ignore SIGPIPE from `main`, but
/// a C or C++ program that links this library does not, and the TLS
/// links write with `writev`, which cannot ask for `MSG_NOSIGNAL`: a node
/// of an embedded cluster that closed a link while another wrote to it
/// once killed a C test program. A program that installed its own
/// disposition (a handler, or ignoring it already) keeps it. Done once,
/// before the first cluster or client starts its threads.
pub fn ignore_sigpipe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: reads the current disposition into a zeroed struct, and
        // sets SIG_IGN only if it is SIG_DFL; no handler is installed.
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
            {
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
        }
    });
}

impl EmbeddedCluster {
    /// Starts `nodes` nodes (1 to [`MAX_NODES`]) over `transport` and
    /// waits until they form one ring. Keys get `min(3, nodes)` replicas.
    /// `op` names the caller in messages (`ringkv_cluster_new` from C).
    pub fn start(op: &str, nodes: u32, transport: TransportKind) -> Outcome<EmbeddedCluster> {
        EmbeddedCluster::start_with(op, nodes, transport, &EmbeddedOptions::default())
    }

    /// As [`EmbeddedCluster::start`], with a data directory, an engine and
    /// virtual nodes as `settings` say.
    pub fn start_with(
        op: &str,
        nodes: u32,
        transport: TransportKind,
        settings: &EmbeddedOptions,
    ) -> Outcome<EmbeddedCluster> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(Failure::invalid(format!(
                "{op}: nodes must be 1 to {MAX_NODES}, got {nodes}"
            )));
        }
        ignore_sigpipe();
        let rt = Runtime::new()
            .map_err(|e| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{op}: {e}")))?;
        let engine = match (settings.engine, &settings.dir) {
            (Some(EngineKind::Memory), Some(dir)) => {
                return Err(Failure::invalid(format!(
                    "{op}: a data directory ({}) needs the LSM or B-tree engine, not MEMORY",
                    dir.display()
                )))
            }
            (Some(engine), _) => engine,
            (None, Some(_)) => EngineKind::Lsm,
            (None, None) => EngineKind::Memory,
        };
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::invalid(format!(
                    "{op}: cannot make the data directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let defaults = ClusterOptions::default();
        let (n, r, w) = match settings.replicas {
            Some((n, _, _)) if n > nodes => {
                return Err(Failure::invalid(format!(
                    "{op}: n = {n} replicas per key needs at least {n} nodes, got {nodes}"
                )))
            }
            Some((n, r, w)) => (n as usize, r, w),
            None => (nodes.min(3) as usize, defaults.r, defaults.w),
        };
        let options = ClusterOptions {
            nodes: u64::from(nodes),
            n,
            r,
            w,
            transport,
            engine,
            dir: settings.dir.clone(),
            vnodes: settings.vnodes.unwrap_or(defaults.vnodes),
            policy: settings.policy.clone().unwrap_or(defaults.policy.clone()),
            // Twice the shell's gossip interval, so a node's thread may
            // stall 600 ms (not 300) before its peers suspect it: an
            // application's process is often busy, and a C++ example's
            // first QUORUM put once failed with "0 of the 2 replicas
            // needed answered" on a loaded machine.
            gossip_ms: FFI_GOSSIP_MS,
            ..defaults
        };
        let cluster = Cluster::start(Arc::new(rt), options, Resolvers::default())
            .map_err(|e| Failure::new(ringkv_result::RINGKV_UNAVAILABLE, format!("{op}: {e}")))?;
        if settings.dir.is_some() {
            wait_confirmed(op, &cluster)?;
        }
        Ok(EmbeddedCluster {
            cluster,
            policies: PolicyCache::default(),
        })
    }

    /// The embedded cluster itself, for Rust code holding a handle (tests
    /// that kill or pause a node, which the C ABI does not offer).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The client addresses of the nodes, comma-separated, node 1 first
    /// (empty on the memory transport).
    pub fn client_addrs(&self) -> String {
        self.cluster
            .client_addrs()
            .into_values()
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Store for EmbeddedCluster {
    fn execute(&self, name: &str, op: Op) -> Outcome<Reply> {
        self.execute_within(name, op, None)
    }

    /// Through the nodes in turn, retried as `ringkv::client::Client`
    /// retries (`ringkv::embedded::cluster::execute_retrying`), and within
    /// `timeout` when one is given.
    fn execute_within(&self, name: &str, op: Op, timeout: Option<Duration>) -> Outcome<Reply> {
        let nodes = self
            .cluster
            .attempt_order(None)
            .map_err(|e| Failure::new(ringkv_result::RINGKV_UNAVAILABLE, format!("{name}: {e}")))?;
        let internal =
            |e: String| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{name}: {e}"));
        let Some(limit) = timeout else {
            return self
                .cluster
                .runtime()
                .run(move || execute_retrying(nodes, op))
                .map_err(internal)?
                .map_err(|e| Failure::from_error(name, &e));
        };
        let is_write = op.is_write();
        let answer =
            self.cluster
                .runtime()
                .run(move || async move {
                    tokio::time::timeout(limit, execute_retrying(nodes, op)).await
                })
                .map_err(internal)?;
        match answer {
            Ok(reply) => reply.map_err(|e| Failure::from_error(name, &e)),
            Err(_) => Err(no_answer(name, is_write, limit)),
        }
    }

    /// Waits (up to 10 s) until every running node knows the properties,
    /// so that the next request means the same through any node.
    fn settle_bucket(&self, bucket: &[u8], props: &ringkv::protocol::BucketInfo) -> Outcome<()> {
        let limit = Duration::from_secs(10);
        let spread = self
            .cluster
            .wait(limit, || {
                for id in self.cluster.live() {
                    let node = self.cluster.node(id)?;
                    let op = Op::GetBucket {
                        bucket: ByteBuf::from(bucket.to_vec()),
                    };
                    match self.cluster.execute_on(node, op)? {
                        Ok(Reply::Bucket { props: p }) if p == *props => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            })
            .map_err(|e| {
                Failure::new(
                    ringkv_result::RINGKV_INTERNAL,
                    format!("set_bucket_policy: {e}"),
                )
            })?;
        if spread {
            Ok(())
        } else {
            Err(Failure::new(
                ringkv_result::RINGKV_TIMEOUT,
                format!(
                    "set_bucket_policy: the properties did not reach every node within {limit:?}"
                ),
            ))
        }
    }

    fn policies(&self) -> Option<&PolicyCache> {
        Some(&self.policies)
    }
}

/// A connection to a running cluster, which [`RemoteClient::close`] ends.
pub struct RemoteClient {
    // Dropped before the runtime (field order): the connection's tasks
    // live on it.
    client: Mutex<Option<Client>>,
    rt: Runtime,
    policies: PolicyCache,
    /// The bound on each request ([`ConnectOptions::set_timeouts`]).
    request_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data is an Option swapped in one statement: never half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The largest CA file `ConnectOptions::set_tls_ca_file` reads (1 MiB:
/// a bundle of a few hundred certificates); the C ABI's
/// `RINGKV_MAX_CA_FILE_BYTES`.
pub(crate) const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// How to connect to a running cluster: credentials, and TLS to the client
/// port. Each setting starts unset (no user, plain TCP); each setter
/// replaces what was set before. Validated as it is set (a CA must parse)
/// and again when combined at connect time (a server name needs a CA).
///
/// Extensible: later settings (per-client timeouts) join as new fields
/// with their own setters; unset ones keep the defaults of
/// [`ClientConfig`].
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    credentials: Option<Credentials>,
    /// The CA's PEM text as given (kept for `Debug` and equality of
    /// options), and the trust it makes.
    tls: Option<ClientTls>,
    server_name: Option<String>,
    /// How long opening a connection to one address may take.
    connect_timeout: Duration,
    /// The bound on each request, retries and failovers included.
    request_timeout: Duration,
}

/// How long opening a connection (TCP and `Hello`) to one address may
/// take unless set: 2 s (`RINGKV_DEFAULT_CONNECT_TIMEOUT_MS`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The bound on one request through a client unless set: 6 s
/// (`RINGKV_DEFAULT_TIMEOUT_MS`), above the bucket's default timeout
/// (5 s) so that a node that cannot reach a quorum answers `Timeout`
/// itself, first; and a bound whatever happens to the node.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(6);

/// The longest timeout the FFI takes: one hour, in milliseconds
/// (`RINGKV_MAX_TIMEOUT_MS`).
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// A timeout argument in milliseconds: `None` for 0 (the default), else
/// at most [`MAX_TIMEOUT_MS`].
pub fn timeout_arg(op: &str, what: &str, ms: u32) -> Outcome<Option<Duration>> {
    match ms {
        0 => Ok(None),
        ms if ms > MAX_TIMEOUT_MS => Err(Failure::invalid(format!(
            "{op}: {what} {ms} ms is above the most, {MAX_TIMEOUT_MS} ms (one hour)"
        ))),
        ms => Ok(Some(Duration::from_millis(u64::from(ms)))),
    }
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            credentials: None,
            tls: None,
            server_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl ConnectOptions {
    /// Options with nothing set: anonymous, plain TCP.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Sets how long opening a connection to one address may take
    /// (`connect_ms`) and the bound on each request, retries and
    /// failovers included (`request_ms`); 0 keeps the default of each.
    /// Both at most [`MAX_TIMEOUT_MS`]; else nothing changes.
    pub fn set_timeouts(&mut self, op: &str, connect_ms: u32, request_ms: u32) -> Outcome<()> {
        let connect = timeout_arg(op, "connect_timeout_ms", connect_ms)?;
        let request = timeout_arg(op, "request_timeout_ms", request_ms)?;
        self.connect_timeout = connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        self.request_timeout = request.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        Ok(())
    }

    /// The connect and request timeouts these options give.
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.request_timeout)
    }

    /// Authenticates as `user` with `password` on every connection.
    pub fn set_credentials(&mut self, user: &str, password: &str) {
        self.credentials = Some(Credentials::new(user, password));
    }

    /// Speaks TLS to the client port, trusting the CA certificates in
    /// `pem` (one or more PEM `CERTIFICATE` blocks) and no others. `op`
    /// names the caller in the message when `pem` is not usable
    /// (`RINGKV_INVALID_ARGUMENT`); then nothing changes.
    pub fn set_tls_ca_pem(&mut self, op: &str, pem: &[u8]) -> Outcome<()> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| Failure::invalid(format!("{op}: the CA PEM is not UTF-8 text")))?;
        let tls = ClientTls::new(text)
            .map_err(|e| Failure::invalid(format!("{op}: {}", explanation(&e))))?;
        self.tls = Some(tls);
        Ok(())
    }

    /// As [`ConnectOptions::set_tls_ca_pem`], with the PEM read from the
    /// file at `path` (at most 1 MiB). A file that cannot
    /// be read is `RINGKV_INVALID_ARGUMENT` too, with the system's reason.
    pub fn set_tls_ca_file(&mut self, op: &str, path: &str) -> Outcome<()> {
        use std::io::Read;
        let cannot = |why: String| Failure::invalid(format!("{op}: cannot read {path:?}: {why}"));
        let file = std::fs::File::open(path).map_err(|e| cannot(e.to_string()))?;
        let mut pem = Vec::new();
        file.take(MAX_CA_FILE_BYTES + 1)
            .read_to_end(&mut pem)
            .map_err(|e| cannot(e.to_string()))?;
        if pem.len() as u64 > MAX_CA_FILE_BYTES {
            return Err(cannot(format!(
                "larger than {MAX_CA_FILE_BYTES} bytes, too large for a CA file"
            )));
        }
        self.set_tls_ca_pem(op, &pem)
            .map_err(|f| Failure::new(f.code, format!("{} (in {path:?})", f.message)))
    }

    /// Expects the node's certificate to name `name` (a DNS name or an IP
    /// address) instead of the host of the address dialed. Needs a CA too
    /// (checked at connect time); `name` itself must not be empty.
    pub fn set_server_name(&mut self, op: &str, name: &str) -> Outcome<()> {
        if name.is_empty() {
            return Err(Failure::invalid(format!("{op}: the server name is empty")));
        }
        self.server_name = Some(name.to_string());
        Ok(())
    }

    /// Whether a CA was set (the connection will speak TLS).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The client configuration these options make; `op` names the caller.
    fn config(&self, op: &str) -> Outcome<ClientConfig> {
        let tls = match (&self.tls, &self.server_name) {
            (None, None) => None,
            (Some(tls), None) => Some(tls.clone()),
            (Some(tls), Some(name)) => Some(
                tls.clone()
                    .with_server_name(name.as_str())
                    .map_err(|e| Failure::invalid(format!("{op}: {}", explanation(&e))))?,
            ),
            (None, Some(name)) => {
                return Err(Failure::invalid(format!(
                    "{op}: a server name ({name:?}) is set but no CA: set one to speak TLS, or drop the name"
                )))
            }
        };
        Ok(ClientConfig {
            client_name: "ringkv-ffi".into(),
            credentials: self.credentials.clone(),
            tls,
            connect_timeout: self.connect_timeout,
            // One attempt may use the whole bound; the bound itself is
            // kept by `RemoteClient::execute_within`.
            request_timeout: self.request_timeout,
            ..ClientConfig::default()
        })
    }
}

/// Checks that `addr` reads as `HOST:PORT` (`[V6]:PORT` for an IPv6
/// address): a host that is not empty and a port from 1 to 65535. An
/// address that does not is the caller's mistake
/// (`RINGKV_INVALID_ARGUMENT`), found before any dialing, not a
/// connection failure. Whether the host resolves is learned by dialing.
fn check_addr(op: &str, addr: &str) -> Outcome<()> {
    let bad =
        |why: &str| Failure::invalid(format!("{op}: address {addr:?} is not HOST:PORT ({why})"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6
                .strip_suffix(']')
                .ok_or_else(|| bad("an IPv6 host lacks its closing bracket"))?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address between the brackets"))?;
            return Ok(());
        }
        None => host,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') {
        return Err(bad("an IPv6 host must be in brackets"));
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(bad("the host has a character no host name has"));
    }
    Ok(())
}

/// Whether `e` says a node closed a new connection without answering its
/// `Hello`: what a client port that speaks TLS does to a plain client.
fn closed_before_hello(e: &ringkv::Error) -> bool {
    matches!(e, ringkv::Error::Io { context, source }
        if context.starts_with("hello to")
            && source.kind() == std::io::ErrorKind::ConnectionAborted)
}

/// The text of a [`ringkv::Error`] without the `invalid input: ` its
/// `Display` puts before an invalid argument's own explanation.
fn explanation(e: &ringkv::Error) -> String {
    match e {
        ringkv::Error::InvalidInput(why) => why.clone(),
        other => other.to_string(),
    }
}

impl RemoteClient {
    /// Connects to the first of the comma-separated `addrs` that answers,
    /// as the user of `credentials` when given; `op` names the caller in
    /// error messages.
    pub fn connect(
        op: &'static str,
        addrs: &str,
        credentials: Option<Credentials>,
    ) -> Outcome<RemoteClient> {
        let options = ConnectOptions {
            credentials,
            ..ConnectOptions::default()
        };
        RemoteClient::connect_with(op, addrs, &options)
    }

    /// Connects to the first of the comma-separated `addrs` that answers,
    /// as `options` say; `op` names the caller in error messages.
    pub fn connect_with(
        op: &'static str,
        addrs: &str,
        options: &ConnectOptions,
    ) -> Outcome<RemoteClient> {
        let list: Vec<String> = addrs
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if list.is_empty() {
            return Err(Failure::invalid(format!(
                "{op}: no address given (expected HOST:PORT[,HOST:PORT...])"
            )));
        }
        for addr in &list {
            check_addr(op, addr)?;
        }
        let config = options.config(op)?;
        ignore_sigpipe();
        let rt = Runtime::new()
            .map_err(|e| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{op}: {e}")))?;
        let connected = rt
            .run(move || async move { Client::connect(&list, config).await })
            .map_err(|e| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{op}: {e}")))?;
        let client = connected.map_err(|e| {
            let mut failure = Failure::from_error(op, &e);
            if !options.uses_tls() && closed_before_hello(&e) {
                failure.message.push_str(
                    " (the node closed the connection before answering: if its client port speaks TLS, set the CA to trust)",
                );
            }
            failure
        })?;
        Ok(RemoteClient {
            client: Mutex::new(Some(client)),
            rt,
            policies: PolicyCache::default(),
            request_timeout: options.request_timeout,
        })
    }

    /// Ends the connection; later requests fail with `RINGKV_CLOSED`.
    /// Closing a closed client does nothing.
    pub fn close(&self) {
        let client = lock(&self.client).take();
        if let Some(client) = client {
            // Dropped on the runtime, where its socket was registered.
            let _ = self.rt.run(move || async move { drop(client) });
        }
    }
}

impl Drop for RemoteClient {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for RemoteClient {
    fn execute(&self, name: &str, op: Op) -> Outcome<Reply> {
        self.execute_within(name, op, None)
    }

    /// Bounded by `timeout`, or else by the handle's request timeout
    /// ([`ConnectOptions::set_timeouts`]): retries and failovers included,
    /// the request returns within it.
    fn execute_within(&self, name: &str, op: Op, timeout: Option<Duration>) -> Outcome<Reply> {
        let client = lock(&self.client).clone().ok_or_else(|| {
            Failure::new(
                ringkv_result::RINGKV_CLOSED,
                format!("{name}: the client is closed"),
            )
        })?;
        let limit = timeout.unwrap_or(self.request_timeout);
        let is_write = op.is_write();
        let answer = self
            .rt
            .run(move || async move { tokio::time::timeout(limit, client.execute(op)).await })
            .map_err(|e| Failure::new(ringkv_result::RINGKV_INTERNAL, format!("{name}: {e}")))?;
        match answer {
            Ok(reply) => reply.map_err(|e| Failure::from_error(name, &e)),
            Err(_) => Err(no_answer(name, is_write, limit)),
        }
    }

    fn policies(&self) -> Option<&PolicyCache> {
        Some(&self.policies)
    }
}

/// A request that got no answer within `limit`: a read timed out and
/// did nothing; a write may or may not have been applied.
fn no_answer(name: &str, is_write: bool, limit: Duration) -> Failure {
    if is_write {
        Failure::new(
            ringkv_result::RINGKV_OUTCOME_UNKNOWN,
            format!("{name}: no answer within {limit:?}: the write may or may not have been applied; read the key to learn which"),
        )
    } else {
        Failure::new(
            ringkv_result::RINGKV_TIMEOUT,
            format!("{name}: no answer within {limit:?}"),
        )
    }
}

fn name_arg(op: &str, what: &str, bytes: &[u8]) -> Outcome<ByteBuf> {
    if bytes.is_empty() {
        return Err(Failure::invalid(format!("{op}: the {what} is empty")));
    }
    Ok(ByteBuf::from(bytes.to_vec()))
}

fn unexpected(op: &str, reply: &Reply) -> Failure {
    Failure::new(
        ringkv_result::RINGKV_INTERNAL,
        format!("{op}: unexpected reply {reply:?}"),
    )
}

fn write_options(op: &str, w: u32) -> Outcome<WriteOptions> {
    Ok(WriteOptions {
        w: consistency(op, w)?,
        ..WriteOptions::default()
    })
}

fn read_options(op: &str, r: u32) -> Outcome<ReadOptions> {
    Ok(ReadOptions {
        r: consistency(op, r)?,
        ..ReadOptions::default()
    })
}

/// The causal context of what a read of `bucket`/`key` at the write's own
/// level sees (the bucket's `r` for [`CONSISTENCY_DEFAULT`]): what a put or
/// delete through this crate replaces. `None` when the key was never
/// written. A failed read fails the write, which then sent nothing.
///
/// Why: a write without a context is *blind*. Under the default policy
/// (SIBLINGS) a blind put of a key that holds a value is kept beside it,
/// so a C caller overwriting a key made the stored object grow by one
/// sibling per put (and every put read, merged, sent and stored all of
/// them) until the node refused the next blind put with `TooManySiblings`;
/// a get answered `RINGKV_SIBLINGS` after the second put; and a blind
/// delete only added a tombstone beside the values. With the context read
/// first, the write replaces exactly the values that read returned, as a
/// Rust client that reads, then writes with the context, does. Values the
/// read did not see (written concurrently, or acknowledged by fewer
/// replicas than the read asked) are not in the context, so they are kept
/// as siblings: no acknowledged write is dropped that the caller did not
/// read. Under LWW the context changes nothing, so a store that knows the
/// bucket is LWW ([`PolicyCache`]) skips the read and writes blind.
fn overwrite_context(
    op: &str,
    s: &dyn Store,
    bucket: &ByteBuf,
    key: &ByteBuf,
    w: u32,
) -> Outcome<Option<ByteBuf>> {
    if let Some(cache) = s.policies() {
        let policy = match cache.get(bucket) {
            Some(policy) => Some(policy),
            // Not known: ask. A failed ask is not the write's failure; the
            // read below says what is wrong, if anything is.
            None => match s.execute(
                op,
                Op::GetBucket {
                    bucket: bucket.clone(),
                },
            ) {
                Ok(Reply::Bucket { props }) => {
                    cache.insert(bucket, props.policy.clone());
                    Some(props.policy)
                }
                _ => None,
            },
        };
        if policy == Some(ConflictPolicy::Lww) {
            return Ok(None);
        }
    }
    let read = Op::Get {
        bucket: bucket.clone(),
        key: key.clone(),
        options: read_options(op, w)?,
    };
    match s.execute(op, read)? {
        Reply::Object { context, .. } if context.is_empty() => Ok(None),
        Reply::Object { context, .. } => Ok(Some(context)),
        other => Err(unexpected(op, &other)),
    }
}

/// Writes `value` under `bucket`/`key` with write level `w`, replacing
/// the value (or siblings) a read at the same level sees first (see
/// [`overwrite_context`]).
pub fn put(s: &dyn Store, bucket: &[u8], key: &[u8], value: &[u8], w: u32) -> Outcome<()> {
    const OP: &str = "put";
    let bucket = name_arg(OP, "bucket", bucket)?;
    let key = name_arg(OP, "key", key)?;
    let options = write_options(OP, w)?;
    let context = overwrite_context(OP, s, &bucket, &key, w)?;
    let op = Op::Put {
        bucket,
        key,
        value: ByteBuf::from(value.to_vec()),
        context,
        options,
    };
    match s.execute(OP, op)? {
        Reply::Written { .. } => Ok(()),
        other => Err(unexpected(OP, &other)),
    }
}

/// Reads `bucket`/`key` with read level `r`: the value, `RINGKV_NOT_FOUND`
/// when there is none (never written, or deleted), `RINGKV_SIBLINGS` when
/// concurrent writes left several.
pub fn get(s: &dyn Store, bucket: &[u8], key: &[u8], r: u32) -> Outcome<Vec<u8>> {
    const OP: &str = "get";
    let op = Op::Get {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        options: read_options(OP, r)?,
    };
    match s.execute(OP, op)? {
        Reply::Object {
            value: Some(v),
            ..
        } => Ok(v.into_vec()),
        Reply::Object { siblings, .. } if siblings.is_empty() => Err(Failure::new(
            ringkv_result::RINGKV_NOT_FOUND,
            format!("{OP}: no value for this key"),
        )),
        Reply::Object { siblings, .. } => Err(Failure::new(
            ringkv_result::RINGKV_SIBLINGS,
            format!(
                "{OP}: the key has {} concurrent values (siblings); use a bucket with policy LWW, or resolve them with the Rust client",
                siblings.len()
            ),
        )),
        other => Err(unexpected(OP, &other)),
    }
}

/// Deletes `bucket`/`key` (writes a tombstone) with write level `w`,
/// replacing what a read at the same level sees first (see
/// [`overwrite_context`]).
pub fn delete(s: &dyn Store, bucket: &[u8], key: &[u8], w: u32) -> Outcome<()> {
    const OP: &str = "delete";
    let bucket = name_arg(OP, "bucket", bucket)?;
    let key = name_arg(OP, "key", key)?;
    let options = write_options(OP, w)?;
    let context = overwrite_context(OP, s, &bucket, &key, w)?;
    let op = Op::Delete {
        bucket,
        key,
        context,
        options,
    };
    match s.execute(OP, op)? {
        Reply::Written { .. } => Ok(()),
        other => Err(unexpected(OP, &other)),
    }
}

fn counter_value(op: &str, reply: Reply) -> Outcome<i64> {
    match reply {
        Reply::Counter { value, .. } => Ok(value),
        other => Err(unexpected(op, &other)),
    }
}

/// Adds `by` to a counter (a bucket with policy PNCOUNTER or GCOUNTER) and
/// returns its new value.
pub fn counter_add(s: &dyn Store, bucket: &[u8], key: &[u8], by: i64, w: u32) -> Outcome<i64> {
    const OP: &str = "counter_add";
    let op = Op::CounterAdd {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        by,
        options: write_options(OP, w)?,
    };
    counter_value(OP, s.execute(OP, op)?)
}

/// Reads a counter (0 when never added to).
pub fn counter_get(s: &dyn Store, bucket: &[u8], key: &[u8], r: u32) -> Outcome<i64> {
    const OP: &str = "counter_get";
    let op = Op::CounterGet {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        options: read_options(OP, r)?,
    };
    counter_value(OP, s.execute(OP, op)?)
}

fn set_members_of(op: &str, reply: Reply) -> Outcome<Vec<Vec<u8>>> {
    match reply {
        Reply::Set { members, .. } => Ok(members.into_iter().map(ByteBuf::into_vec).collect()),
        other => Err(unexpected(op, &other)),
    }
}

/// Adds `member` to a set (a bucket with policy ORSET, GSET or TWOPSET).
pub fn set_add(s: &dyn Store, bucket: &[u8], key: &[u8], member: &[u8], w: u32) -> Outcome<()> {
    const OP: &str = "set_add";
    let op = Op::SetAdd {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        members: vec![ByteBuf::from(member.to_vec())],
        options: write_options(OP, w)?,
        count_only: true,
    };
    set_members_of(OP, s.execute(OP, op)?).map(|_| ())
}

/// Removes `member` from a set (policy ORSET or TWOPSET).
pub fn set_remove(s: &dyn Store, bucket: &[u8], key: &[u8], member: &[u8], w: u32) -> Outcome<()> {
    const OP: &str = "set_remove";
    let op = Op::SetRemove {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        members: vec![ByteBuf::from(member.to_vec())],
        options: write_options(OP, w)?,
        count_only: true,
    };
    set_members_of(OP, s.execute(OP, op)?).map(|_| ())
}

/// A set's members, in byte order.
pub fn set_members(s: &dyn Store, bucket: &[u8], key: &[u8], r: u32) -> Outcome<Vec<Vec<u8>>> {
    const OP: &str = "set_members";
    let op = Op::SetMembers {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        options: read_options(OP, r)?,
    };
    set_members_of(OP, s.execute(OP, op)?)
}

/// Sets a bucket's conflict policy (keeping its other properties) and
/// waits until the store applies it.
pub fn set_bucket_policy(s: &dyn Store, bucket: &[u8], policy_number: u32) -> Outcome<()> {
    const OP: &str = "set_bucket_policy";
    let name = name_arg(OP, "bucket", bucket)?;
    let wanted = policy(OP, policy_number)?;
    let mut props = match s.execute(
        OP,
        Op::GetBucket {
            bucket: name.clone(),
        },
    )? {
        Reply::Bucket { props } => props,
        other => return Err(unexpected(OP, &other)),
    };
    props.policy = wanted;
    let stored = match s.execute(
        OP,
        Op::SetBucket {
            bucket: name,
            props,
        },
    )? {
        Reply::Bucket { props } => props,
        other => return Err(unexpected(OP, &other)),
    };
    if let Some(cache) = s.policies() {
        cache.insert(bucket, stored.policy.clone());
    }
    s.settle_bucket(bucket, &stored)
}

/// A key's object as a read saw it: its values (none when the key was
/// never written or is deleted; one; or two and more siblings, written
/// concurrently) and the causal context to write back with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Object {
    /// The values; `None` for a sibling that is a delete (a tombstone
    /// concurrent with other writes).
    pub values: Vec<Option<Vec<u8>>>,
    /// The opaque causal context (empty when the key was never written).
    pub context: Vec<u8>,
}

/// Reads `bucket`/`key` with read level `r` and returns the whole object:
/// its value or values and its context. Not finding the key is not a
/// failure here (no values), nor are siblings.
pub fn get_object(
    s: &dyn Store,
    bucket: &[u8],
    key: &[u8],
    r: u32,
    timeout: Option<Duration>,
) -> Outcome<Object> {
    const OP: &str = "get_object";
    let mut options = read_options(OP, r)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let op = Op::Get {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        options,
    };
    match s.execute_within(OP, op, timeout)? {
        Reply::Object {
            value,
            siblings,
            context,
            ..
        } => {
            let values = match value {
                Some(v) => vec![Some(v.into_vec())],
                None => siblings
                    .into_iter()
                    .map(|s| s.value.map(ByteBuf::into_vec))
                    .collect(),
            };
            Ok(Object {
                values,
                context: context.into_vec(),
            })
        }
        other => Err(unexpected(OP, &other)),
    }
}

/// The context argument of a write: `None` (blind) when empty; checked
/// to decode as a causal context (at most the default
/// `max_context_bytes`) before anything is sent, so that bytes that are
/// not one are the caller's `RINGKV_INVALID_ARGUMENT`.
fn context_arg(op: &str, context: &[u8]) -> Outcome<Option<ByteBuf>> {
    if context.is_empty() {
        return Ok(None);
    }
    let max = ringkv::version::VersionConfig::default().max_context_bytes;
    ringkv::version::CausalContext::from_bytes(context, max).map_err(|e| {
        Failure::invalid(format!(
            "{op}: the context is not one a read returned ({e})"
        ))
    })?;
    Ok(Some(ByteBuf::from(context.to_vec())))
}

/// Writes `value` under `bucket`/`key` with the causal `context` a read
/// returned (empty: a blind write), and no read of its own: it replaces
/// exactly the values that context saw; values it did not see stay as
/// siblings. Returns the context of the object as stored.
pub fn put_ctx(
    s: &dyn Store,
    bucket: &[u8],
    key: &[u8],
    value: &[u8],
    context: &[u8],
    w: u32,
    timeout: Option<Duration>,
) -> Outcome<Vec<u8>> {
    const OP: &str = "put_ctx";
    let mut options = write_options(OP, w)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let op = Op::Put {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        value: ByteBuf::from(value.to_vec()),
        context: context_arg(OP, context)?,
        options,
    };
    match s.execute_within(OP, op, timeout)? {
        Reply::Written { context, .. } => Ok(context.into_vec()),
        other => Err(unexpected(OP, &other)),
    }
}

/// Deletes `bucket`/`key` with the causal `context` a read returned
/// (empty: a blind delete, kept beside the values under SIBLINGS), and no
/// read of its own. Returns the context of the object as stored.
pub fn delete_ctx(
    s: &dyn Store,
    bucket: &[u8],
    key: &[u8],
    context: &[u8],
    w: u32,
    timeout: Option<Duration>,
) -> Outcome<Vec<u8>> {
    const OP: &str = "delete_ctx";
    let mut options = write_options(OP, w)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let op = Op::Delete {
        bucket: name_arg(OP, "bucket", bucket)?,
        key: name_arg(OP, "key", key)?,
        context: context_arg(OP, context)?,
        options,
    };
    match s.execute_within(OP, op, timeout)? {
        Reply::Written { context, .. } => Ok(context.into_vec()),
        other => Err(unexpected(OP, &other)),
    }
}

/// The most keys one scan page may hold (`RINGKV_MAX_SCAN_PAGE`).
pub const MAX_SCAN_PAGE: u32 = ringkv::protocol::MAX_SCAN_LIMIT;

/// A scan page: its keys, and where the next page starts (None: done).
pub type ScanPage = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// One page of a scan of `bucket` from `cursor` (None to start): its keys
/// in token order and where the next page starts (None: the scan is
/// done). A page may be empty before the end.
pub fn scan_page(
    s: &dyn Store,
    bucket: &[u8],
    cursor: Option<&[u8]>,
    limit: u32,
    r: u32,
    timeout: Option<Duration>,
) -> Outcome<ScanPage> {
    const OP: &str = "scan";
    if limit == 0 || limit > MAX_SCAN_PAGE {
        return Err(Failure::invalid(format!(
            "{OP}: page_limit {limit} is not 1 to {MAX_SCAN_PAGE}"
        )));
    }
    let mut options = read_options(OP, r)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let op = Op::Scan {
        bucket: name_arg(OP, "bucket", bucket)?,
        cursor: cursor.map(|c| ByteBuf::from(c.to_vec())),
        limit,
        options,
    };
    match s.execute_within(OP, op, timeout)? {
        Reply::Keys { keys, cursor, .. } => Ok((
            keys.into_iter().map(ByteBuf::into_vec).collect(),
            cursor.map(ByteBuf::into_vec),
        )),
        other => Err(unexpected(OP, &other)),
    }
}

/// Checks a batch op's limits (`Op::check_limits`: 1 to
/// `MAX_BATCH_KEYS` keys, each key at most once in a multi_put, at most
/// `MAX_BATCH_BYTES`) before anything is sent, so that a refused batch is
/// the caller's `RINGKV_INVALID_ARGUMENT` on either handle.
fn check_batch(op: &str, batch: &Op) -> Outcome<()> {
    batch
        .check_limits()
        .map_err(|e| Failure::invalid(format!("{op}: {e}")))
}

/// One item's error in a batch answer, classified as a single op's.
fn item_failure(op: &str, i: usize, e: ringkv::protocol::ErrorReply) -> Failure {
    Failure::from_error(&format!("{op}: item {i}"), &ringkv::Error::Remote(e))
}

/// Reads `keys` of `bucket` in one request, each at read level `r`: one
/// outcome per key, in order (an object with no values for a key never
/// written), or the whole batch's failure (refused or lost).
pub fn multi_get(
    s: &dyn Store,
    bucket: &[u8],
    keys: &[&[u8]],
    r: u32,
    timeout: Option<Duration>,
) -> Outcome<Vec<Outcome<Object>>> {
    const OP: &str = "multi_get";
    let mut options = read_options(OP, r)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let keys = keys
        .iter()
        .enumerate()
        .map(|(i, k)| name_arg(OP, &format!("key {i}"), k))
        .collect::<Outcome<Vec<_>>>()?;
    let n = keys.len();
    let op = Op::MultiGet {
        bucket: name_arg(OP, "bucket", bucket)?,
        keys,
        options,
    };
    check_batch(OP, &op)?;
    match s.execute_within(OP, op, timeout)? {
        Reply::Objects { items } if items.len() == n => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                item.map(|o| {
                    let values = match o.value {
                        Some(v) => vec![Some(v.into_vec())],
                        None => o
                            .siblings
                            .into_iter()
                            .map(|s| s.value.map(ByteBuf::into_vec))
                            .collect(),
                    };
                    Object {
                        values,
                        context: o.context.into_vec(),
                    }
                })
                .map_err(|e| item_failure(OP, i, e))
            })
            .collect()),
        other => Err(unexpected(OP, &other)),
    }
}

/// One write of [`multi_put`]: key, value and context (empty: blind).
pub type BatchWrite<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Writes `items` to `bucket` in one request, each acknowledged by `w`
/// replicas, each with its own context (no read first): one outcome per
/// item, in order (the context of the object as stored), or the whole
/// batch's failure (refused, nothing written; or lost).
pub fn multi_put(
    s: &dyn Store,
    bucket: &[u8],
    items: &[BatchWrite<'_>],
    w: u32,
    timeout: Option<Duration>,
) -> Outcome<Vec<Outcome<Vec<u8>>>> {
    const OP: &str = "multi_put";
    let mut options = write_options(OP, w)?;
    options.timeout_ms = timeout.map(|t| t.as_millis() as u64);
    let items = items
        .iter()
        .enumerate()
        .map(|(i, (k, v, c))| {
            Ok(ringkv::protocol::PutItem {
                key: name_arg(OP, &format!("key {i}"), k)?,
                value: ByteBuf::from(v.to_vec()),
                context: context_arg(&format!("{OP}: item {i}"), c)?,
            })
        })
        .collect::<Outcome<Vec<_>>>()?;
    let n = items.len();
    let op = Op::MultiPut {
        bucket: name_arg(OP, "bucket", bucket)?,
        items,
        options,
    };
    check_batch(OP, &op)?;
    match s.execute_within(OP, op, timeout)? {
        Reply::WrittenMany { items } if items.len() == n => Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                item.map(|w| w.context.into_vec())
                    .map_err(|e| item_failure(OP, i, e))
            })
            .collect()),
        other => Err(unexpected(OP, &other)),
    }
}
