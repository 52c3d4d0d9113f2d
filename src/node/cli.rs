//! The `ringkv-node` command line and configuration file, turned into what
//! a node needs to start.
//!
//! This module owns the contract of the binary's configuration: the flags
//! ([`Args`]), the TOML file ([`FileConfig`], every key documented in
//! `docs/ringkv-node.example.toml`), how the two combine (a flag overrides
//! the file's key of the same name), and the checks made before anything
//! starts. [`load`] gives a [`NodeSetup`]: a [`NodeConfig`], a
//! [`TcpConfig`] and the client port's address. It also owns the data
//! directory's identity: [`claim_data_dir`] takes an exclusive lock on
//! `<dir>/NODE`, which names the cluster and node the directory belongs to,
//! so a directory is never opened by a second process or by another node.
//!
//! Guarantee: every value that can be wrong is refused here with a message
//! that names it, before a port is bound or a byte of data is read.
//!
//! What this does not do: start anything (the binary does, inside an actix
//! system), watch the file for changes, or read environment variables other
//! than the ones `tracing` reads (`RUST_LOG`).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::NodeConfig;
use crate::config::{
    BTreeConfig, ClusterSecret, LsmConfig, MembershipConfig, StorageConfig, SyncPolicy, TcpConfig,
};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::net::client_tls::ClientPortTls;
use crate::net::tls::{ClusterCa, NodeCredentials, PeerSecurity};
use crate::node::auth::{self, Users};
use crate::node::client_port::{ClientAuth, ClientPortConfig};
use crate::protocol::Role;

/// Node-to-node address when neither the flag nor the file gives one:
/// loopback, so that a node started without thought is not reachable from
/// other machines; port 7400 is ringkv's conventional peer port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";

/// Client address when neither the flag nor the file gives one: loopback
/// for the same reason, port 7401 next to the peer port.
pub const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:7401";

/// Cluster name when none is given (the contract's default).
pub const DEFAULT_CLUSTER: &str = "ringkv";

/// Name of the file in the data directory that says whose it is.
pub const NODE_FILE: &str = "NODE";

/// Name of the engine's subdirectory in the data directory.
pub const ENGINE_DIR: &str = "data";

/// Largest secret file read, in bytes. A secret is tens of bytes; a larger
/// file is the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Largest configuration file read, in bytes.
const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// How long a new node may take to join through its seeds by default, in
/// milliseconds. A cluster with no data admits a node within a second or
/// two (docs/membership.md); a minute leaves room for seeds still
/// starting and for a change already in progress.
pub const DEFAULT_JOIN_TIMEOUT_MS: u64 = 60_000;

/// How `ringkv-node` writes its log lines (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event, fields as key=value.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, and the
    /// event's `fields` (its message among them).
    Json,
}

/// Longest join timeout accepted, in milliseconds: a day.
const MAX_JOIN_TIMEOUT_MS: u64 = 86_400_000;

/// Longest transfer pull timeout accepted, in milliseconds: an hour. A
/// pull is one batch's scan; a longer wait only hides a dead source.
const MAX_PULL_TIMEOUT_MS: u64 = 3_600_000;

/// The storage engine of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The LSM tree (the default).
    Lsm,
    /// The B-tree (redb), for read-heavy nodes.
    Btree,
    /// In memory: lost when the process ends.
    Memory,
}

/// When the write-ahead log is fsync'd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncKind {
    /// Never by the engine (the OS flushes in its own time).
    None,
    /// Every `sync_interval_ms` (the default).
    Interval,
    /// Before every write is acknowledged.
    Always,
}

/// The command line. Every flag but `--config` overrides the file's key of
/// the same name (dashes become underscores).
#[derive(Clone, Debug, Default, clap::Parser)]
#[command(
    name = "ringkv-node",
    version,
    about = "A ringkv node: serves the client protocol and joins a cluster.",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A task other than running a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A TOML configuration file (see docs/ringkv-node.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (required, here or in the file).
    #[arg(long, value_name = "N")]
    pub id: Option<u64>,
    /// Node-to-node address; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Client protocol address; port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_listen: Option<String>,
    /// Also serve the Redis protocol (RESP2/RESP3, docs/resp.md) here;
    /// off unless given. With --client-tls-cert it speaks only TLS, with
    /// that certificate. Without users (--no-client-auth) or without TLS,
    /// only a loopback address is accepted.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis_listen: Option<String>,
    /// The address peers dial to reach this node, when it differs from
    /// --listen (a wildcard listen address, a container's host name, NAT).
    /// Default: the address bound.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Serve the admin port here: HTTP with /metrics (Prometheus text),
    /// /health and /ready. Off unless given; loopback addresses only.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_listen: Option<String>,
    /// How log lines on stderr are written: `text` (one line per event,
    /// fields as key=value) or `json` (one JSON object per line, fields as
    /// members, for log collectors).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A node to join through (repeatable; none: found a new cluster).
    #[arg(long = "seed", value_name = "ID@HOST:PORT")]
    pub seeds: Vec<String>,
    /// Found a new cluster even with seeds: for the first node of a
    /// cluster whose nodes all list each other as seeds. Ignored by a node
    /// that already has a ring in its data directory.
    #[arg(long)]
    pub bootstrap: bool,
    /// How long a new node may take to join through its seeds, in
    /// milliseconds, before it exits with status 3 saying why (no seed
    /// reachable, a secret, cluster or id mismatch, no founder). Default
    /// 60000.
    #[arg(long, value_name = "MS")]
    pub join_timeout_ms: Option<u64>,
    /// Data directory (required unless --engine memory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Storage engine.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Cluster name; nodes of other clusters are refused.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// File holding the cluster secret (its bytes, trimmed; 16 or more).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The cluster CA's certificate (PEM): peers must present a certificate
    /// it signed (make one with `ringkv-node certs`).
    #[arg(long, value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
    /// This node's certificate (PEM), naming `n<id>.node.ringkv`.
    #[arg(long, value_name = "FILE")]
    pub peer_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub peer_key: Option<PathBuf>,
    /// Run links between nodes without TLS: no encryption, no per-frame
    /// authentication, no check that a peer is the node it claims. For
    /// tests and benchmarks on one machine only.
    #[arg(long)]
    pub insecure_plaintext_peers: bool,
    /// Virtual nodes this node claims when it joins.
    #[arg(long, value_name = "N")]
    pub vnodes: Option<usize>,
    /// Data shards: coordinator and replica pairs, each on a thread of
    /// its own serving a slice of the ring; 0 (the default) is one per
    /// two CPUs the process may run on (at least 1).
    #[arg(long, value_name = "N")]
    pub data_shards: Option<usize>,
    /// When the write-ahead log is fsync'd.
    #[arg(long, value_enum)]
    pub sync: Option<SyncKind>,
    /// The fsync interval under `--sync interval`, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub sync_interval_ms: Option<u64>,
    /// Membership gossip interval in milliseconds; every failure-detection
    /// duration scales with it.
    #[arg(long, value_name = "MS")]
    pub gossip_interval_ms: Option<u64>,
    /// How often anti-entropy rounds start, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub anti_entropy_period_ms: Option<u64>,
    /// Runs no anti-entropy at all, not even the exchange with a node seen
    /// up again: replicas of keys nobody reads then stay apart. For
    /// experiments and tests that need a stale replica to stay stale.
    #[arg(long)]
    pub no_anti_entropy: bool,
    /// How old a tombstone must be before it may be purged, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub tombstone_grace_ms: Option<u64>,
    /// Bytes per second this node pulls in range transfers (0: unthrottled).
    #[arg(long, value_name = "BYTES")]
    pub transfer_bytes_per_sec: Option<u64>,
    /// Bytes asked for per transfer pull.
    #[arg(long, value_name = "BYTES")]
    pub transfer_batch_bytes: Option<u64>,
    /// A transfer pull unanswered this long is retried, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub transfer_pull_timeout_ms: Option<u64>,
    /// Lets clients inject faults into this node's network (the
    /// `BlockOutbound` op, for partition tests). Off unless given; never
    /// for production.
    #[arg(long)]
    pub allow_fault_injection: bool,
    /// On SIGTERM, decommission this node before stopping: its ranges move
    /// to the other nodes and it leaves the ring and the membership (LEFT),
    /// then stops. Off unless given: SIGTERM then only stops the node,
    /// which keeps its tokens, so that a restart moves no data.
    #[arg(long)]
    pub leave_on_sigterm: bool,
    /// The users who may use the client port, with their roles and
    /// password hashes (make it with `ringkv-node users add`).
    #[arg(long, value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// Serve the client port without authentication: anyone who can reach
    /// it may run every op, admin ops included. For tests on one machine.
    #[arg(long)]
    pub no_client_auth: bool,
    /// The client port's TLS certificate (PEM; make one with `ringkv-node
    /// certs --client-port NAME`). With it, the port speaks only TLS.
    #[arg(long, value_name = "FILE")]
    pub client_tls_cert: Option<PathBuf>,
    /// The client port's TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_tls_key: Option<PathBuf>,
    /// At start, verify every table and WAL segment of the lsm engine,
    /// move damaged ones (and ones its manifest cannot account for) into
    /// <data-dir>/data/quarantine/ (never deleting them), then start
    /// normally and refill what they held from the replicas
    /// (docs/storage.md, "Salvage").
    #[arg(long)]
    pub salvage: bool,
}

/// Tasks of `ringkv-node` other than running a node.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Make TLS certificates for the links between nodes: the cluster's CA
    /// (`ca.pem`, `ca.key`; made once, reused when present) and, for each
    /// id, `node-<id>.pem` and `node-<id>.key`. Give a node `--peer-ca
    /// ca.pem --peer-cert node-<id>.pem --peer-key node-<id>.key`; keep
    /// `ca.key` off the nodes.
    Certs(CertsArgs),
    /// Manage the users file of the client port.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Make a data directory of a snapshot (`ringkv-admin snapshot`), for
    /// the snapshot's node: copies the engine's files, writes the
    /// directory's NODE file, and opens the copy to check it holds every
    /// entry. The node must be stopped; start it with `--data-dir` on the
    /// restored directory, the same `--id`, `--cluster` and `--engine`.
    Restore(RestoreArgs),
}

/// The flags of `ringkv-node restore`.
#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    /// The snapshot: a directory with SNAPSHOT.json.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The data directory to make (absent or empty).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The engine the node runs (the snapshot's).
    #[arg(long, value_enum, default_value = "lsm")]
    pub engine: EngineKind,
}

/// Runs `ringkv-node restore`.
pub fn restore(args: &RestoreArgs) -> Result<super::snapshot::Restored> {
    let storage = match args.engine {
        EngineKind::Lsm => StorageConfig::Lsm {
            dir: args.data_dir.join(ENGINE_DIR),
            config: LsmConfig::default(),
        },
        EngineKind::Btree => StorageConfig::BTree {
            dir: args.data_dir.join(ENGINE_DIR),
            config: BTreeConfig::default(),
        },
        EngineKind::Memory => {
            return Err(Error::InvalidInput(
                "a memory node keeps nothing on disk: there is nothing to restore into".into(),
            ))
        }
    };
    super::snapshot::restore(&args.from, &args.data_dir, &storage)
}

/// `ringkv-node users ...`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Add a user, or replace one's role and password, reading the
    /// password from the first line of stdin. This is how the first admin
    /// is made, before the node starts.
    Add(UsersAddArgs),
}

/// The flags of `ringkv-node users add`.
#[derive(Clone, Debug, clap::Args)]
pub struct UsersAddArgs {
    /// The users file (made if missing, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub file: PathBuf,
    /// The user's name: 1 to 64 ASCII letters, digits or _.-@.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// read, readwrite or admin.
    #[arg(long, value_name = "ROLE")]
    pub role: String,
    /// argon2id memory cost in KiB. Default 19456 (19 MiB), OWASP's
    /// recommendation; every `Hello` with this user costs that much memory
    /// and tens of milliseconds of CPU.
    #[arg(long, value_name = "KIB", default_value_t = 19_456)]
    pub memory_kib: u32,
    /// argon2id passes. Default 2.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub passes: u32,
}

/// Runs `ringkv-node users add` with `password` (already read).
pub fn add_user(args: &UsersAddArgs, password: &str) -> Result<()> {
    let role: Role = args.role.parse().map_err(Error::InvalidInput)?;
    let hash = auth::hash_password_with_cost(password, args.memory_kib, args.passes)?;
    auth::add_user(&args.file, &args.name, role, hash)
}

/// The flags of `ringkv-node certs`.
#[derive(Clone, Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory for the files (made if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The cluster's name (as the nodes' `--cluster`); it is written into
    /// the CA, and an existing CA must have been made for it.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER)]
    pub cluster: String,
    /// The node ids to make certificates for.
    #[arg(value_name = "ID", required_unless_present = "client_port")]
    pub ids: Vec<u64>,
    /// Also make `client-port.pem` and `client-port.key`, a certificate for
    /// the nodes' client ports naming NAME (a DNS name or an IP address, as
    /// clients dial the nodes; repeatable). Clients trust it through
    /// `ca.pem`.
    #[arg(long = "client-port", value_name = "NAME")]
    pub client_port: Vec<String>,
}

/// Runs `ringkv-node certs`: returns the files written. Private keys are
/// written with mode 0600.
pub fn make_certs(args: &CertsArgs) -> Result<Vec<PathBuf>> {
    check_cluster_name(&args.cluster)?;
    fs::create_dir_all(&args.dir)
        .map_err(|e| Error::io(format!("creating {}", args.dir.display()), e))?;
    let ca_cert = args.dir.join("ca.pem");
    let ca_key = args.dir.join("ca.key");
    let mut written = Vec::new();
    let ca = if ca_cert.exists() || ca_key.exists() {
        let read = |path: &Path| -> Result<String> {
            let bytes = read_limited(path, MAX_PEM_FILE_BYTES, "CA file")?;
            String::from_utf8(bytes)
                .map_err(|_| Error::InvalidInput(format!("{} is not PEM text", path.display())))
        };
        ClusterCa::load(&args.cluster, &read(&ca_cert)?, &read(&ca_key)?)?
    } else {
        let ca = ClusterCa::generate(&args.cluster)?;
        write_file(&ca_key, ca.key_pem().as_bytes(), true)?;
        write_file(&ca_cert, ca.cert_pem().as_bytes(), false)?;
        written.extend([ca_cert, ca_key]);
        ca
    };
    for &id in &args.ids {
        let creds = ca.issue(NodeId(id))?;
        let cert = args.dir.join(format!("node-{id}.pem"));
        let key = args.dir.join(format!("node-{id}.key"));
        write_file(&key, creds.key_pem.as_bytes(), true)?;
        write_file(&cert, creds.cert_pem.as_bytes(), false)?;
        written.extend([cert, key]);
    }
    if !args.client_port.is_empty() {
        let creds = ca.issue_client_port(&args.client_port)?;
        let cert = args.dir.join("client-port.pem");
        let key = args.dir.join("client-port.key");
        write_file(&key, creds.key_pem.as_bytes(), true)?;
        write_file(&cert, creds.cert_pem.as_bytes(), false)?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash leaves the old file or the new one; `secret` files get mode 0600
/// before any byte is written.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut f = options
        .open(&tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

/// The TOML configuration file: the same keys as the flags, all optional.
/// Relative paths in it are relative to the file's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// As `--id`.
    pub id: Option<u64>,
    /// As `--listen`.
    pub listen: Option<String>,
    /// As `--client-listen`.
    pub client_listen: Option<String>,
    /// As `--redis-listen`.
    pub redis_listen: Option<String>,
    /// As `--admin-listen`.
    pub admin_listen: Option<String>,
    /// As `--advertise`.
    pub advertise: Option<String>,
    /// As `--seed`, one string per seed. A `--seed` flag replaces the
    /// whole list.
    pub seeds: Option<Vec<String>>,
    /// As `--bootstrap` (the flag can only turn it on).
    pub bootstrap: Option<bool>,
    /// As `--join-timeout-ms`.
    pub join_timeout_ms: Option<u64>,
    /// As `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// As `--engine`.
    pub engine: Option<EngineKind>,
    /// As `--cluster`.
    pub cluster: Option<String>,
    /// As `--secret-file`.
    pub secret_file: Option<PathBuf>,
    /// As `--peer-ca`.
    pub peer_ca: Option<PathBuf>,
    /// As `--peer-cert`.
    pub peer_cert: Option<PathBuf>,
    /// As `--peer-key`.
    pub peer_key: Option<PathBuf>,
    /// As `--insecure-plaintext-peers` (the flag can only turn it on).
    pub insecure_plaintext_peers: Option<bool>,
    /// As `--vnodes`.
    pub vnodes: Option<usize>,
    /// As `--data-shards`.
    pub data_shards: Option<usize>,
    /// As `--sync`.
    pub sync: Option<SyncKind>,
    /// As `--sync-interval-ms`.
    pub sync_interval_ms: Option<u64>,
    /// As `--gossip-interval-ms`.
    pub gossip_interval_ms: Option<u64>,
    /// As `--anti-entropy-period-ms`.
    pub anti_entropy_period_ms: Option<u64>,
    /// As `--tombstone-grace-ms`.
    pub tombstone_grace_ms: Option<u64>,
    /// As `--transfer-bytes-per-sec`.
    pub transfer_bytes_per_sec: Option<u64>,
    /// As `--transfer-batch-bytes`.
    pub transfer_batch_bytes: Option<u64>,
    /// As `--transfer-pull-timeout-ms`.
    pub transfer_pull_timeout_ms: Option<u64>,
    /// [`crate::config::ReplicaConfig::read_budget_bytes`] (no flag).
    pub read_budget_bytes: Option<usize>,
    /// As `--allow-fault-injection` (the flag can only turn it on).
    pub allow_fault_injection: Option<bool>,
    /// As `--leave-on-sigterm` (the flag can only turn it on).
    pub leave_on_sigterm: Option<bool>,
    /// As `--salvage` (the flag can only turn it on).
    pub salvage: Option<bool>,
    /// As `--users-file`.
    pub users_file: Option<PathBuf>,
    /// As `--no-client-auth` (the flag can only turn it on).
    pub no_client_auth: Option<bool>,
    /// As `--client-tls-cert`.
    pub client_tls_cert: Option<PathBuf>,
    /// As `--client-tls-key`.
    pub client_tls_key: Option<PathBuf>,
    /// The client port's limits (`[client_port]`); each defaults as
    /// [`ClientPortConfig`] says, with its reason.
    pub client_port: Option<ClientPortLimits>,
    /// The peer port's limits (`[peer_port]`); each defaults as
    /// [`TcpConfig`] says, with its reason.
    pub peer_port: Option<PeerPortLimits>,
}

/// `[client_port]` in the configuration file: the limits of
/// [`ClientPortConfig`], each optional (absent: the default). Durations in
/// milliseconds, sizes in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPortLimits {
    /// [`ClientPortConfig::max_connections`].
    pub max_connections: Option<usize>,
    /// [`ClientPortConfig::max_connections_per_ip`].
    pub max_connections_per_ip: Option<usize>,
    /// [`ClientPortConfig::max_connections_per_user`].
    pub max_connections_per_user: Option<usize>,
    /// [`ClientPortConfig::max_in_flight_per_connection`].
    pub max_in_flight_per_connection: Option<usize>,
    /// [`ClientPortConfig::idle_timeout`].
    pub idle_timeout_ms: Option<u64>,
    /// [`ClientPortConfig::frame_timeout`].
    pub frame_timeout_ms: Option<u64>,
    /// [`ClientPortConfig::auth_timeout`].
    pub auth_timeout_ms: Option<u64>,
    /// [`ClientPortConfig::max_frame_bytes_before_auth`].
    pub max_frame_bytes_before_auth: Option<usize>,
    /// [`ClientPortConfig::reply_budget_per_connection`].
    pub reply_budget_per_connection: Option<usize>,
    /// [`ClientPortConfig::reply_budget_total`].
    pub reply_budget_total: Option<usize>,
    /// [`ClientPortConfig::request_budget_total`].
    pub request_budget_total: Option<usize>,
    /// [`ClientPortConfig::max_auth_failures`].
    pub max_auth_failures: Option<u32>,
    /// [`ClientPortConfig::max_concurrent_auth`].
    pub max_concurrent_auth: Option<usize>,
}

impl ClientPortLimits {
    /// `config` with the limits given here.
    pub fn apply(&self, config: &mut ClientPortConfig) {
        let ms = Duration::from_millis;
        set(&mut config.max_connections, self.max_connections);
        set(
            &mut config.max_connections_per_ip,
            self.max_connections_per_ip,
        );
        set(
            &mut config.max_connections_per_user,
            self.max_connections_per_user,
        );
        set(
            &mut config.max_in_flight_per_connection,
            self.max_in_flight_per_connection,
        );
        set(&mut config.idle_timeout, self.idle_timeout_ms.map(ms));
        set(&mut config.frame_timeout, self.frame_timeout_ms.map(ms));
        set(&mut config.auth_timeout, self.auth_timeout_ms.map(ms));
        set(
            &mut config.max_frame_bytes_before_auth,
            self.max_frame_bytes_before_auth,
        );
        set(
            &mut config.reply_budget_per_connection,
            self.reply_budget_per_connection,
        );
        set(&mut config.reply_budget_total, self.reply_budget_total);
        set(&mut config.request_budget_total, self.request_budget_total);
        set(&mut config.max_auth_failures, self.max_auth_failures);
        set(&mut config.max_concurrent_auth, self.max_concurrent_auth);
    }
}

/// `[peer_port]` in the configuration file: the limits of [`TcpConfig`],
/// each optional (absent: the default). Durations in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerPortLimits {
    /// [`TcpConfig::connect_timeout`].
    pub connect_timeout_ms: Option<u64>,
    /// [`TcpConfig::handshake_timeout`].
    pub handshake_timeout_ms: Option<u64>,
    /// [`TcpConfig::max_pending_handshakes`].
    pub max_pending_handshakes: Option<usize>,
    /// [`TcpConfig::max_pending_handshakes_per_ip`].
    pub max_pending_handshakes_per_ip: Option<usize>,
    /// [`TcpConfig::idle_timeout`].
    pub idle_timeout_ms: Option<u64>,
    /// [`TcpConfig::frame_timeout`].
    pub frame_timeout_ms: Option<u64>,
}

impl PeerPortLimits {
    /// `config` with the limits given here.
    pub fn apply(&self, config: &mut TcpConfig) {
        let ms = Duration::from_millis;
        set(&mut config.connect_timeout, self.connect_timeout_ms.map(ms));
        set(
            &mut config.handshake_timeout,
            self.handshake_timeout_ms.map(ms),
        );
        set(
            &mut config.max_pending_handshakes,
            self.max_pending_handshakes,
        );
        set(
            &mut config.max_pending_handshakes_per_ip,
            self.max_pending_handshakes_per_ip,
        );
        set(&mut config.idle_timeout, self.idle_timeout_ms.map(ms));
        set(&mut config.frame_timeout, self.frame_timeout_ms.map(ms));
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

impl FileConfig {
    /// Parses the text of a configuration file.
    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (a caret under the
            // offending text); the binary prints one line.
            let one_line = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            Error::InvalidInput(format!("configuration file: {one_line}"))
        })
    }

    /// Reads and parses a configuration file; relative paths in it become
    /// relative to its directory.
    pub fn read(path: &Path) -> Result<FileConfig> {
        let text = read_limited(path, MAX_CONFIG_FILE_BYTES, "configuration file")?;
        let text = String::from_utf8(text).map_err(|_| {
            Error::InvalidInput(format!(
                "configuration file {} is not UTF-8",
                path.display()
            ))
        })?;
        let mut file = FileConfig::parse(&text).map_err(|e| match e {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut file.data_dir,
            &mut file.secret_file,
            &mut file.peer_ca,
            &mut file.peer_cert,
            &mut file.peer_key,
            &mut file.users_file,
            &mut file.client_tls_cert,
            &mut file.client_tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }
}

/// Everything the binary needs to start a node.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// The node's configuration (its `addr` is the listen address until the
    /// transport is bound and reports the real one).
    pub node: NodeConfig,
    /// The node-to-node transport's configuration.
    pub tcp: TcpConfig,
    /// Where the client port listens.
    pub client_listen: String,
    /// The client port: who may use it (`auth`), and its TLS.
    pub client_port: ClientPortConfig,
    /// Where the RESP port listens (`None`: no RESP port). It shares
    /// `client_port`'s users, limits, per-user counts and TLS.
    pub redis_listen: Option<String>,
    /// The data directory, when there is one (always, except for a memory
    /// engine started without `--data-dir`).
    pub data_dir: Option<PathBuf>,
    /// Whether SIGTERM decommissions the node before it stops
    /// (`--leave-on-sigterm`); otherwise it only stops.
    pub leave_on_sigterm: bool,
    /// How long the node may take to join before it gives up
    /// (`--join-timeout-ms`).
    pub join_timeout: Duration,
    /// Where the admin port listens (`None`: no admin port).
    pub admin_listen: Option<String>,
}

/// Reads the file named by `--config` (if any) and the secret file, and
/// combines them with the flags.
pub fn load(args: Args) -> Result<NodeSetup> {
    let file = match &args.config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let secret_path = args
        .secret_file
        .clone()
        .or(file.secret_file.clone())
        .ok_or_else(|| Error::InvalidInput("--secret-file is required".into()))?;
    let secret = read_secret(&secret_path)?;
    let keys = read_peer_keys(&args, &file)?;
    let client_auth = read_client_auth(&args, &file)?;
    let client_tls = read_client_tls(&args, &file)?;
    let client_port = ClientPortConfig {
        auth: client_auth,
        tls: client_tls,
        ..ClientPortConfig::default()
    };
    resolve(args, file, secret, keys, client_port)
}

/// Reads the client port's certificate and key, when given (both or
/// neither), and checks that they belong together.
pub fn read_client_tls(args: &Args, file: &FileConfig) -> Result<Option<ClientPortTls>> {
    let cert = args
        .client_tls_cert
        .clone()
        .or(file.client_tls_cert.clone());
    let key = args.client_tls_key.clone().or(file.client_tls_key.clone());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let cert = pem_text(&cert, "client TLS certificate file")?;
            let key = pem_text(&key, "client TLS key file")?;
            ClientPortTls::new(&cert, &key).map(Some)
        }
        _ => Err(Error::InvalidInput(
            "give both --client-tls-cert and --client-tls-key, or neither".into(),
        )),
    }
}

/// A PEM file's text (`what` names it in errors).
fn pem_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_limited(path, MAX_PEM_FILE_BYTES, what)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::InvalidInput(format!("{what} {} is not PEM text", path.display())))
}

/// Reads the users file named by the flag or the file, or notes
/// `--no-client-auth`. Giving both, neither, or a file with no user is
/// refused with what to do.
pub fn read_client_auth(args: &Args, file: &FileConfig) -> Result<ClientAuth> {
    let open = args.no_client_auth || file.no_client_auth.unwrap_or(false);
    let path = args.users_file.clone().or(file.users_file.clone());
    match (open, path) {
        (true, Some(_)) => Err(Error::InvalidInput(
            "give either --users-file or --no-client-auth, not both".into(),
        )),
        (true, None) => Ok(ClientAuth::Open),
        (false, None) => Err(Error::InvalidInput(
            "the client port requires authentication: make the first admin with \
             `ringkv-node users add --file users.toml --name admin --role admin` (it reads the \
             password from stdin) and give --users-file users.toml, or --no-client-auth for a \
             test on one machine"
                .into(),
        )),
        (false, Some(path)) => {
            let users = Users::read(&path)?;
            if users.is_empty() {
                return Err(Error::InvalidInput(format!(
                    "users file {} has no user: add one with `ringkv-node users add`",
                    path.display()
                )));
            }
            Ok(ClientAuth::Users(std::sync::Arc::new(users)))
        }
    }
}

/// How a node will protect its links, as read from its files: what
/// [`resolve`] turns into a [`PeerSecurity`] once it knows the node's id.
#[derive(Clone, Debug)]
pub enum PeerKeys {
    /// TLS with these credentials.
    Tls(NodeCredentials),
    /// `--insecure-plaintext-peers`.
    InsecurePlaintext,
}

/// Largest certificate or key file read, in bytes. A PEM chain is a few
/// kilobytes.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Reads the peer CA, certificate and key named by the flags or the file,
/// or notes `--insecure-plaintext-peers`. Giving both, or neither, is
/// refused with what to do.
pub fn read_peer_keys(args: &Args, file: &FileConfig) -> Result<PeerKeys> {
    let plaintext = args.insecure_plaintext_peers || file.insecure_plaintext_peers.unwrap_or(false);
    let ca = args.peer_ca.clone().or(file.peer_ca.clone());
    let cert = args.peer_cert.clone().or(file.peer_cert.clone());
    let key = args.peer_key.clone().or(file.peer_key.clone());
    let given = [&ca, &cert, &key].iter().filter(|p| p.is_some()).count();
    if plaintext {
        if given > 0 {
            return Err(Error::InvalidInput(
                "give either --peer-ca/--peer-cert/--peer-key or --insecure-plaintext-peers, \
                 not both"
                    .into(),
            ));
        }
        return Ok(PeerKeys::InsecurePlaintext);
    }
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        return Err(Error::InvalidInput(
            "links between nodes use TLS: give --peer-ca, --peer-cert and --peer-key (make \
             them with `ringkv-node certs --dir DIR <ids>`), or --insecure-plaintext-peers \
             for a test on one machine"
                .into(),
        ));
    };
    Ok(PeerKeys::Tls(NodeCredentials {
        ca_pem: pem_text(&ca, "peer CA file")?,
        cert_pem: pem_text(&cert, "peer certificate file")?,
        key_pem: pem_text(&key, "peer key file")?,
    }))
}

/// Reads a cluster secret: the file's bytes with surrounding ASCII
/// whitespace removed (so that `echo secret > file` works), at least
/// [`ClusterSecret::MIN_LEN`] of them.
pub fn read_secret(path: &Path) -> Result<ClusterSecret> {
    let bytes = read_limited(path, MAX_SECRET_FILE_BYTES, "secret file")?;
    ClusterSecret::new(bytes.trim_ascii().to_vec()).map_err(|e| match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Combines flags and file (flags win) and checks the result.
pub fn resolve(
    args: Args,
    file: FileConfig,
    secret: ClusterSecret,
    keys: PeerKeys,
    client_port: ClientPortConfig,
) -> Result<NodeSetup> {
    let id = args
        .id
        .or(file.id)
        .ok_or_else(|| Error::InvalidInput("--id is required".into()))?;
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    check_address("listen", &listen)?;
    let client_listen = args
        .client_listen
        .or(file.client_listen)
        .unwrap_or_else(|| DEFAULT_CLIENT_LISTEN.into());
    check_address("client_listen", &client_listen)?;
    let admin_listen = args.admin_listen.or(file.admin_listen);
    if let Some(addr) = &admin_listen {
        check_address("admin_listen", addr)?;
        crate::node::admin::check_listen(addr)?;
    }
    let redis_listen = args.redis_listen.or(file.redis_listen);
    if let Some(addr) = &redis_listen {
        check_address("redis_listen", addr)?;
        crate::node::resp::check_listen(addr, &client_port)?;
    }
    let seed_texts = if args.seeds.is_empty() {
        file.seeds.unwrap_or_default()
    } else {
        args.seeds
    };
    let seeds = seed_texts
        .iter()
        .map(|s| parse_seed(s))
        .collect::<Result<Vec<_>>>()?;
    let cluster = args
        .cluster
        .or(file.cluster)
        .unwrap_or_else(|| DEFAULT_CLUSTER.into());
    check_cluster_name(&cluster)?;
    let engine = args.engine.or(file.engine).unwrap_or(EngineKind::Lsm);
    let data_dir = args.data_dir.or(file.data_dir);
    if engine != EngineKind::Memory && data_dir.is_none() {
        return Err(Error::InvalidInput(
            "--data-dir is required unless --engine memory".into(),
        ));
    }
    let sync = sync_policy(
        args.sync.or(file.sync).unwrap_or(SyncKind::Interval),
        args.sync_interval_ms.or(file.sync_interval_ms),
    )?;
    let salvage = args.salvage || file.salvage.unwrap_or(false);
    if salvage && (engine != EngineKind::Lsm || data_dir.is_none()) {
        return Err(Error::InvalidInput(
            "salvage applies to the lsm engine's data directory only".into(),
        ));
    }
    let storage = match (engine, &data_dir) {
        (EngineKind::Lsm, Some(dir)) => StorageConfig::Lsm {
            dir: dir.join(ENGINE_DIR),
            config: LsmConfig {
                sync,
                salvage,
                ..LsmConfig::default()
            },
        },
        (EngineKind::Btree, Some(dir)) => StorageConfig::BTree {
            dir: dir.join(ENGINE_DIR),
            config: BTreeConfig {
                sync,
                ..BTreeConfig::default()
            },
        },
        _ => StorageConfig::Memory,
    };
    if let StorageConfig::Lsm { config, .. } = &storage {
        config.validate()?;
    }
    if let StorageConfig::BTree { config, .. } = &storage {
        config.validate()?;
    }

    let mut node = NodeConfig::new(NodeId(id), listen.clone(), seeds);
    node.cluster = cluster.clone();
    node.storage = storage;
    if let Some(v) = args.vnodes.or(file.vnodes) {
        node.ring.vnodes_per_node = v;
    }
    node.ring.validate()?;
    if let Some(ms) = args.gossip_interval_ms.or(file.gossip_interval_ms) {
        node.membership = membership_at(ms)?;
    }
    node.membership.validate()?;
    if let Some(ms) = args.anti_entropy_period_ms.or(file.anti_entropy_period_ms) {
        node.anti_entropy.period = std::time::Duration::from_millis(ms);
    }
    if args.no_anti_entropy {
        node.anti_entropy.enabled = false;
    }
    if let Some(ms) = args.tombstone_grace_ms.or(file.tombstone_grace_ms) {
        node.anti_entropy.tombstone_grace = std::time::Duration::from_millis(ms);
    }
    node.anti_entropy.validate()?;
    if let Some(rate) = args.transfer_bytes_per_sec.or(file.transfer_bytes_per_sec) {
        node.transfer.bytes_per_sec = rate;
    }
    if let Some(bytes) = args.transfer_batch_bytes.or(file.transfer_batch_bytes) {
        let max = (crate::config::DEFAULT_MAX_FRAME_BYTES / 2) as u64;
        if !(1..=max).contains(&bytes) {
            return Err(Error::InvalidInput(format!(
                "transfer_batch_bytes must be in 1..={max}, got {bytes}"
            )));
        }
        node.transfer.max_batch_bytes = bytes;
    }
    if let Some(ms) = args
        .transfer_pull_timeout_ms
        .or(file.transfer_pull_timeout_ms)
    {
        if !(1..=MAX_PULL_TIMEOUT_MS).contains(&ms) {
            return Err(Error::InvalidInput(format!(
                "transfer_pull_timeout_ms must be in 1..={MAX_PULL_TIMEOUT_MS}, got {ms}"
            )));
        }
        node.transfer.pull_timeout = Duration::from_millis(ms);
    }
    if let Some(bytes) = file.read_budget_bytes {
        node.replica.read_budget_bytes = bytes;
    }
    if let Some(n) = args.data_shards.or(file.data_shards) {
        node.replica.data_shards = n;
    }
    node.replica.validate()?;
    node.transfer.validate()?;
    node.allow_fault_injection =
        args.allow_fault_injection || file.allow_fault_injection.unwrap_or(false);
    let leave_on_sigterm = args.leave_on_sigterm || file.leave_on_sigterm.unwrap_or(false);
    node.bootstrap = args.bootstrap || file.bootstrap.unwrap_or(false);
    let join_timeout_ms = args
        .join_timeout_ms
        .or(file.join_timeout_ms)
        .unwrap_or(DEFAULT_JOIN_TIMEOUT_MS);
    if !(1..=MAX_JOIN_TIMEOUT_MS).contains(&join_timeout_ms) {
        return Err(Error::InvalidInput(format!(
            "join_timeout_ms must be in 1..={MAX_JOIN_TIMEOUT_MS}, got {join_timeout_ms}"
        )));
    }

    let security = match keys {
        PeerKeys::Tls(credentials) => PeerSecurity::tls(NodeId(id), &credentials)?,
        PeerKeys::InsecurePlaintext => PeerSecurity::InsecurePlaintext,
    };
    let mut tcp = TcpConfig::new(NodeId(id), cluster, secret, security, listen);
    if let Some(addr) = args.advertise.or(file.advertise) {
        check_address("advertise", &addr)?;
        tcp.advertise = Some(addr);
    }
    if let Some(limits) = &file.peer_port {
        limits.apply(&mut tcp);
    }
    tcp.validate()?;
    let mut client_port = client_port;
    if let Some(limits) = &file.client_port {
        limits.apply(&mut client_port);
    }
    client_port.validate()?;
    Ok(NodeSetup {
        node,
        tcp,
        client_listen,
        client_port,
        redis_listen,
        data_dir,
        leave_on_sigterm,
        join_timeout: Duration::from_millis(join_timeout_ms),
        admin_listen,
    })
}

/// Membership settings for a gossip interval of `ms` milliseconds: the
/// defaults scaled to it ([`MembershipConfig::scaled`]), except that the
/// acceptable pause and the deviation floor never go below 900 ms and
/// 40 ms. Nodes of a test cluster share a few cores with everything else;
/// scheduling delays of several hundred ms happen there, and must not
/// convict a live node (with direct pings, a node silent for about
/// 1.1 s at a 100 ms interval is suspected, and DOWN a few intervals
/// later).
fn membership_at(ms: u64) -> Result<MembershipConfig> {
    if !(10..=60_000).contains(&ms) {
        return Err(Error::InvalidInput(format!(
            "gossip_interval_ms must be in 10..=60000, got {ms}"
        )));
    }
    let mut m = MembershipConfig::scaled(Duration::from_millis(ms));
    m.acceptable_heartbeat_pause = m.acceptable_heartbeat_pause.max(Duration::from_millis(900));
    m.min_std_deviation = m.min_std_deviation.max(Duration::from_millis(40));
    Ok(m)
}

fn sync_policy(kind: SyncKind, interval_ms: Option<u64>) -> Result<SyncPolicy> {
    match (kind, interval_ms) {
        (SyncKind::Interval, Some(0)) => Err(Error::InvalidInput(
            "sync_interval_ms must be positive (use --sync always)".into(),
        )),
        (SyncKind::Interval, Some(ms)) => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
        // The engines' own default interval.
        (SyncKind::Interval, None) => Ok(LsmConfig::default().sync),
        (_, Some(_)) => Err(Error::InvalidInput(
            "sync_interval_ms only applies to --sync interval".into(),
        )),
        (SyncKind::None, None) => Ok(SyncPolicy::None),
        (SyncKind::Always, None) => Ok(SyncPolicy::Always),
    }
}

/// Parses `ID@HOST:PORT`.
pub fn parse_seed(text: &str) -> Result<(NodeId, String)> {
    let bad = || Error::InvalidInput(format!("seed {text:?} is not ID@HOST:PORT"));
    let (id, addr) = text.split_once('@').ok_or_else(bad)?;
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    check_address("seed", addr).map_err(|_| bad())?;
    Ok((NodeId(id), addr.to_string()))
}

/// Checks the `HOST:PORT` shape without resolving the host (a name may
/// only resolve once the network is up).
fn check_address(what: &str, addr: &str) -> Result<()> {
    let bad = || Error::InvalidInput(format!("{what} address {addr:?} is not HOST:PORT"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    port.parse::<u16>().map_err(|_| bad())?;
    Ok(())
}

/// Cluster names go into the `NODE` file as one line and into handshakes.
fn check_cluster_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "cluster name {name:?} must be 1 to 128 of A-Z a-z 0-9 - _ ."
        )))
    }
}

fn read_limited(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let file = fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {what} {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading {what} {}", path.display()), e))?;
    if bytes.len() as u64 > max {
        return Err(Error::InvalidInput(format!(
            "{what} {} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The identity a data directory records: which cluster and node it
/// belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirOwner {
    /// The cluster's name.
    pub cluster: String,
    /// The node's id.
    pub node: NodeId,
}

impl DirOwner {
    fn encode(&self) -> String {
        format!("cluster={}\nnode={}\n", self.cluster, self.node.0)
    }

    fn decode(text: &str) -> Option<DirOwner> {
        let mut cluster = None;
        let mut node = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=')? {
                ("cluster", v) => cluster = Some(v.to_string()),
                ("node", v) => node = Some(NodeId(v.parse().ok()?)),
                _ => return None,
            }
        }
        Some(DirOwner {
            cluster: cluster?,
            node: node?,
        })
    }
}

/// A claimed data directory: holds the exclusive lock on its `NODE` file
/// for as long as it lives.
#[derive(Debug)]
pub struct DataDirClaim {
    dir: PathBuf,
    _lock: fs::File,
}

impl DataDirClaim {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Claims `dir` for `owner`: creates it if missing, takes an exclusive lock
/// on `<dir>/NODE` (refused while another process holds it), and writes the
/// owner there on first use, or checks that it names `owner`. The lock is
/// released when the claim is dropped or the process ends, however it ends.
pub fn claim_data_dir(dir: &Path, owner: &DirOwner) -> Result<DataDirClaim> {
    fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating data directory {}", dir.display()), e))?;
    let path = dir.join(NODE_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // Patiently: a child being forked may hold a just-released lock for a
    // moment (see `lock_patiently`), as when an embedded node restarts.
    match crate::storage::lock_patiently(&file) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Error::InvalidInput(format!(
                "data directory {} is in use by another process (its {NODE_FILE} file is locked)",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("locking {}", path.display()), e)),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|_| bad_node_file(&path))?;
    if text.trim().is_empty() {
        // First start: record the owner, durably, before any data exists.
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(owner.encode().as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    } else {
        let found = DirOwner::decode(&text).ok_or_else(|| bad_node_file(&path))?;
        if found != *owner {
            return Err(Error::InvalidInput(format!(
                "data directory {} belongs to node {} of cluster {:?}, not node {} of cluster {:?}",
                dir.display(),
                found.node.0,
                found.cluster,
                owner.node.0,
                owner.cluster
            )));
        }
    }
    Ok(DataDirClaim {
        dir: dir.to_path_buf(),
        _lock: file,
    })
}

fn bad_node_file(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} is not a ringkv {NODE_FILE} file (expected cluster=NAME and node=ID lines)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn secret() -> ClusterSecret {
        ClusterSecret::new(b"0123456789abcdef".to_vec()).unwrap()
    }

    fn args(flags: &[&str]) -> Args {
        let mut all = vec!["ringkv-node"];
        all.extend_from_slice(flags);
        Args::try_parse_from(all).unwrap()
    }

    fn message(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn flags_alone_make_a_node() {
        let a = args(&[
            "--id",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--client-listen",
            "127.0.0.1:0",
            "--seed",
            "1@127.0.0.1:7400",
            "--seed",
            "2@localhost:7402",
            "--data-dir",
            "/tmp/x",
            "--cluster",
            "blue",
            "--vnodes",
            "32",
            "--data-shards",
            "3",
            "--sync",
            "always",
            "--gossip-interval-ms",
            "100",
        ]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert_eq!(s.node.id, NodeId(3));
        assert_eq!(s.node.addr, "127.0.0.1:0");
        assert_eq!(
            s.node.seeds,
            vec![
                (NodeId(1), "127.0.0.1:7400".to_string()),
                (NodeId(2), "localhost:7402".to_string())
            ]
        );
        assert_eq!(s.node.cluster, "blue");
        assert_eq!(s.tcp.cluster, "blue");
        assert_eq!(s.tcp.node, NodeId(3));
        assert_eq!(s.node.ring.vnodes_per_node, 32);
        assert_eq!(s.node.replica.data_shards, 3);
        assert_eq!(s.node.replica.shards(), 3);
        assert_eq!(
            s.node.membership.gossip_interval,
            Duration::from_millis(100)
        );
        assert_eq!(
            s.node.membership.acceptable_heartbeat_pause,
            Duration::from_millis(900)
        );
        assert_eq!(
            s.node.storage,
            StorageConfig::Lsm {
                dir: PathBuf::from("/tmp/x/data"),
                config: LsmConfig {
                    sync: SyncPolicy::Always,
                    ..LsmConfig::default()
                }
            }
        );
        assert_eq!(s.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let a = args(&["--id", "1", "--data-dir", "/d"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert_eq!(s.tcp.listen, DEFAULT_LISTEN);
        assert_eq!(s.client_listen, DEFAULT_CLIENT_LISTEN);
        assert_eq!(s.node.cluster, DEFAULT_CLUSTER);
        assert!(s.node.seeds.is_empty());
        assert_eq!(s.node.membership, MembershipConfig::default());
        assert_eq!(s.node.storage.engine_name(), "lsm");
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig::parse(
            r#"
            id = 7
            listen = "127.0.0.1:9000"
            seeds = ["1@127.0.0.1:9001"]
            engine = "btree"
            data_dir = "/srv/ringkv"
            cluster = "from-file"
            sync = "interval"
            sync_interval_ms = 250
            "#,
        )
        .unwrap();
        let s = resolve(
            args(&["--id", "8", "--seed", "2@127.0.0.1:9002"]),
            file,
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert_eq!(s.node.id, NodeId(8));
        assert_eq!(s.tcp.listen, "127.0.0.1:9000");
        assert_eq!(s.node.cluster, "from-file");
        assert_eq!(s.node.seeds, vec![(NodeId(2), "127.0.0.1:9002".into())]);
        match s.node.storage {
            StorageConfig::BTree { dir, config } => {
                assert_eq!(dir, PathBuf::from("/srv/ringkv/data"));
                assert_eq!(
                    config.sync,
                    SyncPolicy::Interval(Duration::from_millis(250))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let cases: &[(&[&str], &str)] = &[
            (&["--data-dir", "/d"], "--id is required"),
            (&["--id", "1"], "--data-dir is required"),
            (
                &["--id", "1", "--data-dir", "/d", "--listen", "nowhere"],
                "listen address",
            ),
            (
                &[
                    "--id",
                    "1",
                    "--data-dir",
                    "/d",
                    "--client-listen",
                    "h:99999",
                ],
                "client_listen address",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--seed", "x@h:1"],
                "seed \"x@h:1\"",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--seed", "1:h:1"],
                "ID@HOST:PORT",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--vnodes", "0"],
                "vnodes",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--data-shards", "65"],
                "data_shards",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--cluster", "a b"],
                "cluster name",
            ),
            (
                &["--id", "1", "--data-dir", "/d", "--gossip-interval-ms", "0"],
                "gossip_interval_ms",
            ),
            (
                &[
                    "--id",
                    "1",
                    "--data-dir",
                    "/d",
                    "--sync",
                    "always",
                    "--sync-interval-ms",
                    "5",
                ],
                "sync_interval_ms",
            ),
            (
                &[
                    "--id",
                    "1",
                    "--data-dir",
                    "/d",
                    "--transfer-batch-bytes",
                    "0",
                ],
                "transfer_batch_bytes",
            ),
            (
                &[
                    "--id",
                    "1",
                    "--data-dir",
                    "/d",
                    "--transfer-batch-bytes",
                    "999999999",
                ],
                "transfer_batch_bytes",
            ),
            (
                &[
                    "--id",
                    "1",
                    "--data-dir",
                    "/d",
                    "--transfer-pull-timeout-ms",
                    "0",
                ],
                "transfer_pull_timeout_ms",
            ),
        ];
        for (flags, want) in cases {
            let got = resolve(
                args(flags),
                FileConfig::default(),
                secret(),
                PeerKeys::InsecurePlaintext,
                ClientPortConfig::default(),
            )
            .map(|_| ())
            .map_err(message);
            match got {
                Err(m) => assert!(m.contains(want), "{flags:?}: {m}"),
                Ok(()) => panic!("{flags:?} was accepted"),
            }
        }
        // The memory engine needs no directory.
        let a = args(&["--id", "1", "--engine", "memory"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert_eq!(s.node.storage, StorageConfig::Memory);
        assert_eq!(s.data_dir, None);
    }

    #[test]
    fn transfer_throttle_and_fault_injection_come_from_flags_or_the_file() {
        let a = args(&["--id", "1", "--data-dir", "/d"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(!s.node.allow_fault_injection, "fault injection is opt-in");
        assert_eq!(s.node.transfer, crate::config::TransferConfig::default());
        let a = args(&[
            "--id",
            "1",
            "--data-dir",
            "/d",
            "--allow-fault-injection",
            "--transfer-bytes-per-sec",
            "4096",
            "--transfer-batch-bytes",
            "512",
            "--transfer-pull-timeout-ms",
            "750",
        ]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(s.node.allow_fault_injection);
        assert_eq!(s.node.transfer.bytes_per_sec, 4096);
        assert_eq!(s.node.transfer.max_batch_bytes, 512);
        assert_eq!(s.node.transfer.pull_timeout, Duration::from_millis(750));
        let file = FileConfig::parse(
            "allow_fault_injection = true\ntransfer_bytes_per_sec = 0\n\
             transfer_batch_bytes = 2048\ntransfer_pull_timeout_ms = 900\n",
        )
        .unwrap();
        let a = args(&[
            "--id",
            "1",
            "--data-dir",
            "/d",
            "--transfer-batch-bytes",
            "1024",
        ]);
        let s = resolve(
            a,
            file,
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(s.node.allow_fault_injection);
        assert_eq!(s.node.transfer.bytes_per_sec, 0, "0: unthrottled");
        assert_eq!(s.node.transfer.max_batch_bytes, 1024, "the flag wins");
        assert_eq!(s.node.transfer.pull_timeout, Duration::from_millis(900));
    }

    #[test]
    fn leave_on_sigterm_is_opt_in_by_flag_or_file() {
        let resolved = |flags: &[&str], file: FileConfig| {
            let mut all = vec!["--id", "1", "--data-dir", "/d"];
            all.extend_from_slice(flags);
            resolve(
                args(&all),
                file,
                secret(),
                PeerKeys::InsecurePlaintext,
                ClientPortConfig::default(),
            )
            .unwrap()
            .leave_on_sigterm
        };
        assert!(
            !resolved(&[], FileConfig::default()),
            "a plain stop by default"
        );
        assert!(resolved(&["--leave-on-sigterm"], FileConfig::default()));
        let on = FileConfig::parse("leave_on_sigterm = true\n").unwrap();
        assert!(resolved(&[], on));
        let off = FileConfig::parse("leave_on_sigterm = false\n").unwrap();
        assert!(
            resolved(&["--leave-on-sigterm"], off),
            "the flag turns it on"
        );
    }

    #[test]
    fn salvage_comes_from_the_flag_or_the_file_for_the_lsm_engine_only() {
        let salvage_of = |s: &NodeSetup| match &s.node.storage {
            StorageConfig::Lsm { config, .. } => config.salvage,
            other => panic!("{other:?}"),
        };
        let a = args(&["--id", "1", "--data-dir", "/d"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(!salvage_of(&s), "salvage is opt-in");
        let a = args(&["--id", "1", "--data-dir", "/d", "--salvage"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(salvage_of(&s));
        let a = args(&["--id", "1", "--data-dir", "/d"]);
        let file = FileConfig::parse("salvage = true\n").unwrap();
        assert!(salvage_of(
            &resolve(
                a,
                file,
                secret(),
                PeerKeys::InsecurePlaintext,
                ClientPortConfig::default()
            )
            .unwrap()
        ));
        let a = args(&[
            "--id",
            "1",
            "--engine",
            "btree",
            "--data-dir",
            "/d",
            "--salvage",
        ]);
        let m = message(
            resolve(
                a,
                FileConfig::default(),
                secret(),
                PeerKeys::InsecurePlaintext,
                ClientPortConfig::default(),
            )
            .unwrap_err(),
        );
        assert!(m.contains("salvage"), "{m}");
    }

    #[test]
    fn unknown_or_mistyped_file_keys_are_refused() {
        let m = message(FileConfig::parse("idd = 1").unwrap_err());
        assert!(m.contains("idd"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        let m = message(FileConfig::parse("id = \"one\"").unwrap_err());
        assert!(m.contains("configuration file"), "{m}");
        let m = message(FileConfig::parse("engine = \"rocks\"").unwrap_err());
        assert!(m.contains("rocks"), "{m}");
    }

    #[test]
    fn port_limits_come_from_their_tables_and_are_checked() {
        let resolve_text = |text: &str| {
            let file = FileConfig::parse(text)?;
            resolve(
                args(&["--id", "1", "--engine", "memory"]),
                file,
                secret(),
                PeerKeys::InsecurePlaintext,
                ClientPortConfig::default(),
            )
        };
        let s = resolve_text(
            "read_budget_bytes = 1048576\n[client_port]\nmax_connections = 7\n\
             idle_timeout_ms = 1500\nrequest_budget_total = 33554432\n\
             max_connections_per_user = 3\n[peer_port]\nhandshake_timeout_ms = 900\n\
             idle_timeout_ms = 4000\n",
        )
        .unwrap();
        assert_eq!(s.node.replica.read_budget_bytes, 1 << 20);
        assert_eq!(s.client_port.max_connections_per_user, 3);
        assert_eq!(s.client_port.max_connections, 7);
        assert_eq!(s.client_port.idle_timeout, Duration::from_millis(1500));
        assert_eq!(s.client_port.request_budget_total, 32 << 20);
        // Untouched limits keep their defaults.
        let d = ClientPortConfig::default();
        assert_eq!(s.client_port.frame_timeout, d.frame_timeout);
        assert_eq!(s.tcp.handshake_timeout, Duration::from_millis(900));
        assert_eq!(s.tcp.idle_timeout, Duration::from_millis(4000));
        // Checked: a budget below the frame limit, a zero timeout, an
        // unknown key.
        let m = message(resolve_text("[client_port]\nrequest_budget_total = 10\n").unwrap_err());
        assert!(m.contains("request_budget_total"), "{m}");
        let m = message(resolve_text("[client_port]\nframe_timeout_ms = 0\n").unwrap_err());
        assert!(m.contains("frame_timeout"), "{m}");
        let m = message(resolve_text("read_budget_bytes = 0\n").unwrap_err());
        assert!(m.contains("read_budget_bytes"), "{m}");
        let m = message(resolve_text("[client_port]\nmax_connections_per_user = 0\n").unwrap_err());
        assert!(m.contains("max_connections_per_user"), "{m}");
        let m = message(resolve_text("[client_port]\nmax_conns = 3\n").unwrap_err());
        assert!(m.contains("max_conns"), "{m}");
        let m =
            message(resolve_text("[peer_port]\nmax_pending_handshakes_per_ip = 0\n").unwrap_err());
        assert!(m.contains("max_pending_handshakes_per_ip"), "{m}");
        let m = message(resolve_text("[peer_port]\nidle_timeout_ms = 0\n").unwrap_err());
        assert!(m.contains("idle_timeout"), "{m}");
        let m = message(resolve_text("[peer_port]\nhandshake_timeout_ms = 0\n").unwrap_err());
        assert!(m.contains("handshake_timeout"), "{m}");
    }

    #[test]
    fn the_example_file_parses_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ringkv-node.example.toml");
        let text = fs::read_to_string(&path).unwrap();
        let file = FileConfig::parse(&text).unwrap();
        assert_eq!(file.id, Some(1));
        let s = resolve(
            Args::default(),
            file,
            secret(),
            PeerKeys::InsecurePlaintext,
            ClientPortConfig::default(),
        )
        .unwrap();
        assert_eq!(s.node.id, NodeId(1));
        // Every key of FileConfig appears in the example, commented or not.
        for key in [
            "id",
            "listen",
            "client_listen",
            "redis_listen",
            "admin_listen",
            "advertise",
            "seeds",
            "bootstrap",
            "join_timeout_ms",
            "data_dir",
            "engine",
            "cluster",
            "secret_file",
            "peer_ca",
            "peer_cert",
            "peer_key",
            "insecure_plaintext_peers",
            "users_file",
            "no_client_auth",
            "client_tls_cert",
            "client_tls_key",
            "[client_port]",
            "max_connections",
            "max_connections_per_ip",
            "max_connections_per_user",
            "max_in_flight_per_connection",
            "idle_timeout_ms",
            "frame_timeout_ms",
            "auth_timeout_ms",
            "max_frame_bytes_before_auth",
            "reply_budget_per_connection",
            "reply_budget_total",
            "request_budget_total",
            "max_auth_failures",
            "max_concurrent_auth",
            "[peer_port]",
            "connect_timeout_ms",
            "handshake_timeout_ms",
            "max_pending_handshakes",
            "max_pending_handshakes_per_ip",
            "vnodes",
            "sync",
            "sync_interval_ms",
            "gossip_interval_ms",
            "anti_entropy_period_ms",
            "tombstone_grace_ms",
            "transfer_bytes_per_sec",
            "transfer_batch_bytes",
            "transfer_pull_timeout_ms",
            "read_budget_bytes",
            "data_shards",
            "allow_fault_injection",
            "leave_on_sigterm",
            "salvage",
        ] {
            let mentioned = text.lines().any(|l| {
                if key.starts_with('[') {
                    return l == key;
                }
                let l = l.trim_start_matches(|c: char| c == '#' || c.is_whitespace());
                is_key_line(l) && l.starts_with(&format!("{key} ="))
            });
            assert!(mentioned, "the example does not document {key}");
        }
        // And the example has no key FileConfig does not know
        // (deny_unknown_fields): uncommenting every line still parses.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if is_key_line(rest) => format!("{rest}\n"),
                _ if l.starts_with('#') => "\n".to_string(),
                _ => format!("{l}\n"),
            })
            .collect();
        FileConfig::parse(&uncommented).unwrap();
    }

    /// `key = value`, the shape of a commented-out setting.
    fn is_key_line(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    }

    #[test]
    fn peer_tls_needs_all_three_files_or_the_plaintext_flag_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("ringkv").unwrap();
        let creds = ca.issue(NodeId(3)).unwrap();
        let path = |f: &str| dir.path().join(f);
        fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
        fs::write(path("n3.pem"), &creds.cert_pem).unwrap();
        fs::write(path("n3.key"), &creds.key_pem).unwrap();
        let (ca_f, cert_f, key_f) = (
            path("ca.pem").display().to_string(),
            path("n3.pem").display().to_string(),
            path("n3.key").display().to_string(),
        );
        let all = [
            "--peer-ca",
            &ca_f,
            "--peer-cert",
            &cert_f,
            "--peer-key",
            &key_f,
        ];
        let keys = read_peer_keys(&args(&all), &FileConfig::default()).unwrap();
        let a = args(&["--id", "3", "--engine", "memory"]);
        let s = resolve(
            a,
            FileConfig::default(),
            secret(),
            keys.clone(),
            ClientPortConfig::default(),
        )
        .unwrap();
        assert!(s.tcp.security.is_encrypted());
        // The same files for another id: refused, naming both.
        let m = message(
            resolve(
                args(&["--id", "4", "--engine", "memory"]),
                FileConfig::default(),
                secret(),
                keys,
                ClientPortConfig::default(),
            )
            .unwrap_err(),
        );
        assert!(m.contains("n4") && m.contains("n4.node.ringkv"), "{m}");

        let m = message(read_peer_keys(&args(&all[..4]), &FileConfig::default()).unwrap_err());
        assert!(
            m.contains("--peer-key") && m.contains("--insecure-plaintext-peers"),
            "{m}"
        );
        let m = message(read_peer_keys(&args(&[]), &FileConfig::default()).unwrap_err());
        assert!(m.contains("ringkv-node certs"), "{m}");
        let mut both = all.to_vec();
        both.push("--insecure-plaintext-peers");
        let m = message(read_peer_keys(&args(&both), &FileConfig::default()).unwrap_err());
        assert!(m.contains("not both"), "{m}");
        // The file's key turns plaintext on as the flag does, and mixes
        // with nothing either.
        let file = FileConfig {
            insecure_plaintext_peers: Some(true),
            ..FileConfig::default()
        };
        assert!(matches!(
            read_peer_keys(&args(&[]), &file).unwrap(),
            PeerKeys::InsecurePlaintext
        ));
        assert!(read_peer_keys(&args(&all[..2]), &file).is_err());
        // A missing file is named.
        let gone = [
            "--peer-ca",
            "/nonexistent/ca.pem",
            "--peer-cert",
            &cert_f,
            "--peer-key",
            &key_f,
        ];
        let m = message(read_peer_keys(&args(&gone), &FileConfig::default()).unwrap_err());
        assert!(m.contains("/nonexistent/ca.pem"), "{m}");
    }

    #[test]
    fn the_client_port_needs_users_or_the_open_flag_alone() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        let users_flag = users.display().to_string();
        let m = message(read_client_auth(&args(&[]), &FileConfig::default()).unwrap_err());
        assert!(
            m.contains("ringkv-node users add") && m.contains("--no-client-auth"),
            "{m}"
        );
        assert_eq!(
            read_client_auth(&args(&["--no-client-auth"]), &FileConfig::default()).unwrap(),
            ClientAuth::Open
        );
        // A missing file, then an empty one, then one with a user.
        let m = message(
            read_client_auth(
                &args(&["--users-file", &users_flag]),
                &FileConfig::default(),
            )
            .unwrap_err(),
        );
        assert!(m.contains("users.toml"), "{m}");
        fs::write(&users, "").unwrap();
        let m = message(
            read_client_auth(
                &args(&["--users-file", &users_flag]),
                &FileConfig::default(),
            )
            .unwrap_err(),
        );
        assert!(m.contains("has no user"), "{m}");
        let add = UsersAddArgs {
            file: users.clone(),
            name: "admin".into(),
            role: "admin".into(),
            memory_kib: 64,
            passes: 1,
        };
        add_user(&add, "pw").unwrap();
        let bad_role = UsersAddArgs {
            role: "root".into(),
            ..add.clone()
        };
        assert!(message(add_user(&bad_role, "pw").unwrap_err()).contains("unknown role"));
        match read_client_auth(
            &args(&["--users-file", &users_flag]),
            &FileConfig::default(),
        )
        .unwrap()
        {
            ClientAuth::Users(u) => assert_eq!(u.verify("admin", "pw"), Some(Role::Admin)),
            ClientAuth::Open => panic!("users were given"),
        }
        let m = message(
            read_client_auth(
                &args(&["--users-file", &users_flag, "--no-client-auth"]),
                &FileConfig::default(),
            )
            .unwrap_err(),
        );
        assert!(m.contains("not both"), "{m}");
        let file = FileConfig {
            no_client_auth: Some(true),
            ..FileConfig::default()
        };
        assert_eq!(
            read_client_auth(&args(&[]), &file).unwrap(),
            ClientAuth::Open
        );
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        fs::write(
            &path,
            "data_dir = \"d\"\nsecret_file = \"/abs/secret\"\npeer_ca = \"c/ca.pem\"\n\
             peer_cert = \"c/n.pem\"\npeer_key = \"c/n.key\"\n",
        )
        .unwrap();
        let file = FileConfig::read(&path).unwrap();
        assert_eq!(file.data_dir, Some(dir.path().join("d")));
        assert_eq!(file.secret_file, Some(PathBuf::from("/abs/secret")));
        assert_eq!(file.peer_ca, Some(dir.path().join("c/ca.pem")));
        assert_eq!(file.peer_cert, Some(dir.path().join("c/n.pem")));
        assert_eq!(file.peer_key, Some(dir.path().join("c/n.key")));
    }

    #[test]
    fn secrets_are_trimmed_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "  0123456789abcdef\n").unwrap();
        assert_eq!(read_secret(&path).unwrap().as_bytes(), b"0123456789abcdef");
        fs::write(&path, "short\n").unwrap();
        let m = message(read_secret(&path).unwrap_err());
        assert!(
            m.contains("at least 16 bytes") && m.contains("secret"),
            "{m}"
        );
        let m = message(read_secret(&dir.path().join("missing")).unwrap_err());
        assert!(m.contains("missing"), "{m}");
    }

    #[test]
    fn a_data_dir_is_claimed_once_and_keeps_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let me = DirOwner {
            cluster: "c".into(),
            node: NodeId(4),
        };
        let claim = claim_data_dir(dir.path(), &me).unwrap();
        let text = fs::read_to_string(dir.path().join(NODE_FILE)).unwrap();
        assert_eq!(text, "cluster=c\nnode=4\n");
        // A second claim while the first holds the lock is refused (the
        // lock is per open file, so this works within one process too).
        let m = message(claim_data_dir(dir.path(), &me).unwrap_err());
        assert!(m.contains("in use by another process"), "{m}");
        assert!(m.contains(&dir.path().display().to_string()), "{m}");
        drop(claim);
        // The same owner may come back; another node or cluster may not.
        drop(claim_data_dir(dir.path(), &me).unwrap());
        let other = DirOwner {
            cluster: "c".into(),
            node: NodeId(5),
        };
        let m = message(claim_data_dir(dir.path(), &other).unwrap_err());
        assert!(
            m.contains("belongs to node 4") && m.contains("not node 5"),
            "{m}"
        );
        let other = DirOwner {
            cluster: "d".into(),
            node: NodeId(4),
        };
        assert!(claim_data_dir(dir.path(), &other).is_err());
        // A NODE file that is not ours is refused, not overwritten.
        fs::write(dir.path().join(NODE_FILE), "hello\n").unwrap();
        let m = message(claim_data_dir(dir.path(), &me).unwrap_err());
        assert!(m.contains("not a ringkv NODE file"), "{m}");
        assert_eq!(
            fs::read_to_string(dir.path().join(NODE_FILE)).unwrap(),
            "hello\n"
        );
    }
}
