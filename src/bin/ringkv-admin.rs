//! `ringkv-admin`: the operator's command line for a running ringkv
//! cluster, over the client protocol (`ringkv::client`).
//!
//! ```text
//! ringkv-admin [--connect HOST:PORT]... [--user U [--password-file F]]
//!              [--tls-ca PEM [--tls-server-name NAME]] [--json]
//!              [--timeout-ms N] <command>
//! ```
//!
//! It connects to the first `--connect` address that answers (default
//! `127.0.0.1:7401`, `ringkv-node`'s default client port) and fails over to
//! the next ones. With `--user`, the password is the first line of
//! `--password-file`, or else the `RINGKV_PASSWORD` environment variable
//! (never a flag: it would show in `ps`); the ops below other than
//! `status`, `ring` and `transfers` need the `admin` role. `--tls-ca`
//! trusts that CA for a client port that has a certificate.
//!
//! # Commands
//!
//! - `status`: every member's status, asked through the connected node
//!   (`OnNodes` of `Status`): the member's state as the connected node's
//!   membership sees it (followed by `unreachable: <error>` when it did
//!   not answer), its address, keys, hints, requests in flight, engine,
//!   transfers running (queued, running or waiting for a source),
//!   anti-entropy rounds finished and corruptions found.
//! - `ring`: the connected node's ring: its epoch, the change in progress
//!   and each node's virtual nodes and share of the token space.
//! - `flush [--node ID]...`: each node (default: every member) writes its
//!   memtables to its files and then answers; data acknowledged before is
//!   then in tables as well as in the write-ahead log. Prints each node's
//!   storage figures after.
//! - `compact [--node ID]...`: each node runs every compaction its engine
//!   calls for now, until none is due (the B-tree and memory engines have
//!   nothing to compact). Prints each node's storage figures after.
//! - `repair [--node ID] [--range AFTER:THROUGH] [--wait]`: starts an
//!   anti-entropy round now on every node (each exchanges the ranges it
//!   starts exchanges for), or, with `--node`, on that node only, which
//!   then exchanges every range it replicates with every other replica.
//!   `--range` narrows it to the ranges overlapping the tokens after
//!   `AFTER` through `THROUGH` (decimal or `0x` hex; equal ends: the whole
//!   ring). The round is over once the node's finished-round count reaches
//!   the `until_rounds` printed; `--wait` polls until every node's has
//!   (at most `--timeout-ms`, default 60 s) and prints the objects each
//!   node repaired meanwhile (by any round, periodic ones included).
//! - `snapshot DIR [--node ID]...`: each node writes a consistent copy of
//!   its store (objects, hints, bucket properties, ring state, as of one
//!   moment) into `DIR/node-<id>` on its own machine, with a
//!   `SNAPSHOT.json` describing it. `DIR` must be absolute and each
//!   `node-<id>` absent or empty. `ringkv-node restore` makes a data
//!   directory of one. A node keeping its data in memory refuses.
//! - `drain --node ID`: drains node `ID`, which must be one of the
//!   `--connect` addresses: each is asked which node it is, and the one
//!   that is `ID` is drained (none: refused, status 2). From then on it
//!   refuses every data op (`ShuttingDown`, so clients go to another
//!   node), its `/ready` says no, and it leaves the ring as a decommission
//!   does. Prints the ring change it started.
//! - `forget ID`: the connected node marks `ID`, a member gone for good
//!   (a machine lost with its disk), LEFT; that spreads by gossip and the
//!   ring then drops it, its ranges copied again from the surviving
//!   replicas. A node that is in fact running refutes it. Refused for the
//!   connected node itself (a live node leaves with `drain`).
//! - `transfers [--node ID] [--state STATE]`: every range transfer into
//!   each node (or into `ID`), filtered by state (`queued`, `running`,
//!   `waiting_for_source`, `done`, `failed`).
//!
//! `--timeout-ms` bounds how long each node may take to answer (default
//! 30 s, the node's own default for `OnNodes`) and how long `repair
//! --wait` waits.
//!
//! # Output
//!
//! Aligned plain-text tables on stdout; with `--json`, one JSON document
//! on stdout instead, built from the protocol's views (`docs/protocol.md`).
//! Per-node commands (`status`, `flush`, `compact`, `repair`, `snapshot`)
//! give `{"nodes": [{"node": 1, "ok": {...}}, {"node": 2, "error":
//! {"code": ..., "message": ...}}]}`, in node order; `status` adds each
//! node's `state` and `addr` as the connected node sees them, and
//! `connected`. `ring` gives the ring view itself, `drain` `{"node",
//! "ring"}`, `forget` `{"forgotten", "ring"}`, and `transfers`
//! `{"transfers": [...], "errors": [...]}`, each transfer with its `node`.
//! Errors go to stderr, one line each, `ringkv-admin: <message>` (bad
//! flags are reported by the argument parser, with the usage).
//!
//! # Exit status
//!
//! - 0: done, and every node asked answered.
//! - 1: the op failed on the node, or some node's answer was an error (the
//!   others' answers are still printed), or `repair --wait` ran out of time.
//! - 2: bad usage (a bad flag or value, a password that cannot be read, a
//!   `drain` of a node no `--connect` address is) or no node could be
//!   reached.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ringkv::client::{Client, ClientConfig, Credentials};
use ringkv::net::client_tls::ClientTls;
use ringkv::protocol::{
    ErrorReply, MemberView, NodeAnswer, Op, Reply, RingView, StatusView, TokenSpan, TransferView,
    MAX_ADMIN_TIMEOUT_MS,
};
use ringkv::NodeId;
use serde_json::{json, Value};

/// Exit status: an op failed, or some node's answer was an error.
const EXIT_FAILED: u8 = 1;
/// Exit status: bad usage, or no node could be reached.
const EXIT_USAGE: u8 = 2;

/// The environment variable a password may come from.
const PASSWORD_ENV: &str = "RINGKV_PASSWORD";

/// How long `repair --wait` waits when `--timeout-ms` is not given.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// How often `repair --wait` asks for the nodes' status.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// The transfer states a status view shows.
const TRANSFER_STATES: [&str; 5] = ["queued", "running", "waiting_for_source", "done", "failed"];

/// The transfer states that count as running in `status`.
const ACTIVE_TRANSFER_STATES: [&str; 3] = ["queued", "running", "waiting_for_source"];

/// The largest file `--password-file` or `--tls-ca` may be.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-admin",
    version,
    about = "Administers a ringkv cluster: status, ring, flush, compact, repair, snapshot, drain, forget, transfers",
    long_about = None
)]
struct Cli {
    /// A node's client address; repeat to give several (the client fails
    /// over between them).
    #[arg(
        long = "connect",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7401",
        global = true
    )]
    connect: Vec<String>,

    /// The user to authenticate as; the password comes from
    /// --password-file or the RINGKV_PASSWORD environment variable.
    #[arg(long, value_name = "USER", global = true)]
    user: Option<String>,

    /// A file whose first line is the password of --user.
    #[arg(long, value_name = "FILE", global = true)]
    password_file: Option<PathBuf>,

    /// Connect over TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, value_name = "PEM", global = true)]
    tls_ca: Option<PathBuf>,

    /// The name the node's certificate must carry (default: the host
    /// dialed); needs --tls-ca.
    #[arg(long, value_name = "NAME", global = true)]
    tls_server_name: Option<String>,

    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// How long each node may take to answer, in milliseconds (default
    /// 30000); for `repair --wait`, how long to wait (default 60000).
    #[arg(
        long,
        value_name = "MS",
        global = true,
        value_parser = clap::value_parser!(u64).range(1..=MAX_ADMIN_TIMEOUT_MS)
    )]
    timeout_ms: Option<u64>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every member's status, asked through the connected node.
    Status,
    /// The connected node's ring.
    Ring,
    /// Flush memtables to files on each node (default: every member).
    Flush {
        /// A node to flush (repeat for several; default: every member).
        #[arg(long = "node", value_name = "ID", value_parser = parse_node)]
        nodes: Vec<NodeId>,
    },
    /// Run due compactions on each node (default: every member).
    Compact {
        /// A node to compact (repeat for several; default: every member).
        #[arg(long = "node", value_name = "ID", value_parser = parse_node)]
        nodes: Vec<NodeId>,
    },
    /// Start an anti-entropy round now.
    Repair {
        /// Repair every range this node replicates, with every other
        /// replica (default: a round on every node).
        #[arg(long, value_name = "ID", value_parser = parse_node)]
        node: Option<NodeId>,
        /// Only the ranges overlapping the tokens after AFTER through
        /// THROUGH (decimal or 0x hex).
        #[arg(long, value_name = "AFTER:THROUGH", value_parser = parse_span)]
        range: Option<TokenSpan>,
        /// Wait until the round is over on every node asked.
        #[arg(long)]
        wait: bool,
    },
    /// Write a consistent copy of each node's store into DIR/node-<id> on
    /// its machine.
    Snapshot {
        /// An absolute directory, on the nodes' machines.
        #[arg(value_name = "DIR")]
        dir: String,
        /// A node to snapshot (repeat for several; default: every member).
        #[arg(long = "node", value_name = "ID", value_parser = parse_node)]
        nodes: Vec<NodeId>,
    },
    /// Drain a node: it refuses data ops, then leaves the ring.
    Drain {
        /// The node to drain: one of the --connect addresses must be its.
        #[arg(long, value_name = "ID", value_parser = parse_node)]
        node: NodeId,
    },
    /// Forget a member gone for good: it is dropped from the ring.
    Forget {
        /// The node to forget.
        #[arg(value_name = "ID", value_parser = parse_node)]
        node: NodeId,
    },
    /// Range transfers into the nodes.
    Transfers {
        /// Only transfers into this node.
        #[arg(long, value_name = "ID", value_parser = parse_node)]
        node: Option<NodeId>,
        /// Only transfers in this state.
        #[arg(long, value_name = "STATE", value_parser = TRANSFER_STATES)]
        state: Option<String>,
    },
}

/// Why a command failed, and so the exit status.
#[derive(Debug)]
enum Failure {
    /// Bad usage, or no node reachable: status 2.
    Usage(String),
    /// An op failed: status 1.
    Failed(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(EXIT_USAGE),
            Failure::Failed(_) => ExitCode::from(EXIT_FAILED),
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m,
        }
    }
}

/// What a command produced: the text or JSON to print, and whether every
/// node asked answered.
struct Outcome {
    output: Output,
    /// Lines for stderr (each gets the `ringkv-admin: ` prefix).
    errors: Vec<String>,
}

enum Output {
    Text(String),
    Json(Value),
}

impl Outcome {
    fn new(output: Output) -> Outcome {
        Outcome {
            output,
            errors: Vec::new(),
        }
    }
}

fn main() -> ExitCode {
    // clap prints its own error (with the usage) and exits 2 on bad usage,
    // 0 for --help and --version.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(outcome) => {
            let text = match outcome.output {
                Output::Text(text) => text,
                Output::Json(value) => {
                    // Serialising a `Value` cannot fail.
                    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
                    text.push('\n');
                    text
                }
            };
            // A closed stdout (`| head`) is not worth a panic or an error.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            for error in &outcome.errors {
                report(error);
            }
            if outcome.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(failure) => {
            report(failure.message());
            failure.exit_code()
        }
    }
}

/// Writes one error line to stderr.
fn report(message: &str) {
    // One line: a multi-line message (a node's, say) is folded.
    let line = message.replace('\n', " ");
    let _ = writeln!(std::io::stderr().lock(), "ringkv-admin: {line}");
}

async fn run(cli: Cli) -> Result<Outcome, Failure> {
    // Checks that need no node come first.
    if let Command::Snapshot { dir, .. } = &cli.command {
        if !std::path::Path::new(dir).is_absolute() {
            return Err(Failure::Usage(format!(
                "the snapshot directory must be an absolute path (it is on each node's \
                 machine), not {dir:?}"
            )));
        }
    }
    let per_node = cli.timeout_ms.map(Duration::from_millis);
    let config = client_config(&cli, per_node)?;
    let client = Client::connect(&cli.connect, config.clone())
        .await
        .map_err(|e| {
            Failure::Usage(format!("cannot connect to {}: {e}", cli.connect.join(", ")))
        })?;
    let admin = Admin {
        client,
        addrs: cli.connect.clone(),
        config,
        per_node,
        json: cli.json,
    };
    match cli.command {
        Command::Status => admin.status().await,
        Command::Ring => admin.ring().await,
        Command::Flush { nodes } => admin.storage(nodes, Op::Flush).await,
        Command::Compact { nodes } => admin.storage(nodes, Op::Compact).await,
        Command::Repair { node, range, wait } => {
            let wait_for = wait.then(|| cli.timeout_ms.map_or(DEFAULT_WAIT, Duration::from_millis));
            admin.repair(node, range, wait_for).await
        }
        Command::Snapshot { dir, nodes } => admin.snapshot(dir, nodes).await,
        Command::Drain { node } => admin.drain(node).await,
        Command::Forget { node } => admin.forget(node).await,
        Command::Transfers { node, state } => admin.transfers(node, state).await,
    }
}

/// The client's configuration from the flags: credentials, TLS, and a
/// request timeout above the per-node one (an `OnNodes` answers only once
/// every node has, or has timed out).
fn client_config(cli: &Cli, per_node: Option<Duration>) -> Result<ClientConfig, Failure> {
    let credentials = match (&cli.user, &cli.password_file) {
        (None, None) => None,
        (None, Some(_)) => return Err(Failure::Usage("--password-file needs --user".to_string())),
        (Some(user), Some(file)) => {
            let text = read_small_file(file, "--password-file")?;
            let password = text.lines().next().unwrap_or("").to_string();
            if password.is_empty() {
                return Err(Failure::Usage(format!(
                    "--password-file {}: the first line is empty",
                    file.display()
                )));
            }
            Some(Credentials::new(user.clone(), password))
        }
        (Some(user), None) => match std::env::var(PASSWORD_ENV) {
            Ok(password) if !password.is_empty() => Some(Credentials::new(user.clone(), password)),
            _ => {
                return Err(Failure::Usage(format!(
                    "--user {user} needs a password: --password-file FILE or the \
                     {PASSWORD_ENV} environment variable"
                )))
            }
        },
    };
    let tls = match (&cli.tls_ca, &cli.tls_server_name) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Failure::Usage(
                "--tls-server-name needs --tls-ca".to_string(),
            ))
        }
        (Some(path), name) => {
            let pem = read_small_file(path, "--tls-ca")?;
            let tls = ClientTls::new(&pem)
                .map_err(|e| Failure::Usage(format!("--tls-ca {}: {e}", path.display())))?;
            Some(match name {
                Some(name) => tls
                    .with_server_name(name.clone())
                    .map_err(|e| Failure::Usage(format!("--tls-server-name: {e}")))?,
                None => tls,
            })
        }
    };
    let per_node = per_node.unwrap_or(Duration::from_millis(
        ringkv::protocol::DEFAULT_ADMIN_TIMEOUT_MS,
    ));
    Ok(ClientConfig {
        client_name: "ringkv-admin".to_string(),
        credentials,
        tls,
        request_timeout: per_node + Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

/// Reads a small text file (a password, a PEM certificate).
fn read_small_file(path: &std::path::Path, flag: &str) -> Result<String, Failure> {
    use std::io::Read;
    let bad = |why: String| Failure::Usage(format!("{flag} {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("cannot read as text: {e}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(bad("larger than 1 MiB".to_string()));
    }
    Ok(text)
}

/// Parses a node id: `3` or `n3`.
fn parse_node(text: &str) -> Result<NodeId, String> {
    let digits = text.strip_prefix('n').unwrap_or(text);
    digits
        .parse::<u64>()
        .map(NodeId)
        .map_err(|_| format!("{text:?} is not a node id (a number, such as 3 or n3)"))
}

/// Parses a token: decimal, or hex with `0x`.
fn parse_token(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse::<u64>(),
    };
    parsed.map_err(|_| format!("{text:?} is not a token (0 to 2^64-1, decimal or 0x hex)"))
}

/// Parses `AFTER:THROUGH`.
fn parse_span(text: &str) -> Result<TokenSpan, String> {
    let Some((after, through)) = text.split_once(':') else {
        return Err(format!(
            "{text:?} is not a range: expected AFTER:THROUGH, two tokens (decimal or 0x hex)"
        ));
    };
    Ok(TokenSpan {
        after: parse_token(after.trim())?,
        through: parse_token(through.trim())?,
    })
}

/// A token as the tables print it.
fn hex(token: u64) -> String {
    format!("{token:#018x}")
}

/// An error a node answered, in one line.
fn describe(error: &ErrorReply) -> String {
    format!("{:?}: {}", error.code, error.message)
}

/// An error answer as JSON.
fn error_json(error: &ErrorReply) -> Value {
    serde_json::to_value(error).unwrap_or_else(|_| json!({ "message": error.message }))
}

/// A value as JSON (the protocol's views all serialise).
fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// One node's answer, reduced to the view expected or an error.
fn expect_view<T>(
    answer: &NodeAnswer,
    what: &str,
    pick: impl Fn(&Reply) -> Option<T>,
) -> Result<T, ErrorReply> {
    match &answer.result {
        Ok(reply) => pick(reply).ok_or_else(|| {
            ErrorReply::new(
                ringkv::protocol::ErrorCode::Internal,
                format!("{} answered {what} with another kind of reply", answer.node),
                false,
            )
        }),
        Err(e) => Err(e.clone()),
    }
}

fn status_of(reply: &Reply) -> Option<StatusView> {
    match reply {
        Reply::Status(view) => Some(view.clone()),
        _ => None,
    }
}

/// A connected client and the flags every command shares.
struct Admin {
    client: Client,
    /// The --connect addresses.
    addrs: Vec<String>,
    config: ClientConfig,
    /// The per-node timeout of `OnNodes` (`None`: the node's default).
    per_node: Option<Duration>,
    json: bool,
}

impl Admin {
    /// Runs `op` on `nodes` (`None`: every member) through the connected
    /// node.
    async fn on_nodes(
        &self,
        nodes: Option<Vec<NodeId>>,
        op: Op,
    ) -> Result<Vec<NodeAnswer>, Failure> {
        let name = op.name();
        self.client
            .on_nodes(nodes, op, self.per_node)
            .await
            .map_err(|e| Failure::Failed(format!("{name}: {e}")))
    }

    /// The node connected to, once a request has gone through.
    async fn connected(&self) -> Option<(String, NodeId)> {
        self.client.connected_to().await
    }

    async fn status(&self) -> Result<Outcome, Failure> {
        let answers = self.on_nodes(None, Op::Status).await?;
        let connected = self.connected().await;
        // The connected node's membership: how it sees each member.
        let members: BTreeMap<NodeId, MemberView> = connected
            .as_ref()
            .and_then(|(_, me)| answers.iter().find(|a| a.node == *me))
            .and_then(|a| a.result.as_ref().ok())
            .and_then(status_of)
            .map(|view| view.members.into_iter().map(|m| (m.node, m)).collect())
            .unwrap_or_default();
        let mut errors = Vec::new();
        let mut table = Table::new(&[
            ("node", Align::Left),
            ("state", Align::Left),
            ("address", Align::Left),
            ("keys", Align::Right),
            ("hints", Align::Right),
            ("in_flight", Align::Right),
            ("engine", Align::Left),
            ("transfers", Align::Right),
            ("ae_rounds", Align::Right),
            ("corruptions", Align::Right),
        ]);
        let mut nodes_json = Vec::new();
        for answer in &answers {
            let member = members.get(&answer.node);
            let state = member.map_or("?".to_string(), |m| m.state.clone());
            let addr = member.map_or("?".to_string(), |m| m.addr.clone());
            match expect_view(answer, "status", status_of) {
                Ok(view) => {
                    let running = view
                        .transfers
                        .iter()
                        .filter(|t| ACTIVE_TRANSFER_STATES.contains(&t.state.as_str()))
                        .count();
                    table.row(vec![
                        answer.node.to_string(),
                        state.clone(),
                        addr.clone(),
                        view.keys.to_string(),
                        view.hints.to_string(),
                        view.in_flight.to_string(),
                        view.engine.clone(),
                        running.to_string(),
                        view.anti_entropy.rounds.to_string(),
                        view.corruptions.to_string(),
                    ]);
                    nodes_json.push(json!({
                        "node": answer.node.0,
                        "state": state,
                        "addr": addr,
                        "ok": to_json(&view),
                    }));
                }
                Err(e) => {
                    errors.push(format!("{}: {}", answer.node, describe(&e)));
                    // The membership's state first: it says DOWN in
                    // the same words for every node.
                    let unreachable = match member {
                        Some(m) => format!("{}, unreachable: {}", m.state, describe(&e)),
                        None => format!("unreachable: {}", describe(&e)),
                    };
                    let mut row = vec![answer.node.to_string(), unreachable, addr.clone()];
                    row.resize(table.width(), "-".to_string());
                    table.row(row);
                    nodes_json.push(json!({
                        "node": answer.node.0,
                        "state": state,
                        "addr": addr,
                        "error": error_json(&e),
                    }));
                }
            }
        }
        let output = if self.json {
            Output::Json(json!({
                "connected": connected.map(|(addr, node)| json!({"node": node.0, "addr": addr})),
                "nodes": nodes_json,
            }))
        } else {
            let mut text = String::new();
            if let Some((addr, node)) = &connected {
                text.push_str(&format!("connected to {node} at {addr}\n"));
            }
            text.push_str(&table.render());
            Output::Text(text)
        };
        Ok(Outcome { output, errors })
    }

    async fn ring(&self) -> Result<Outcome, Failure> {
        let ring = self
            .client
            .ring()
            .await
            .map_err(|e| Failure::Failed(format!("ring: {e}")))?;
        Ok(Outcome::new(self.ring_output(&ring)))
    }

    /// A ring view as a command prints it.
    fn ring_output(&self, ring: &RingView) -> Output {
        if self.json {
            return Output::Json(to_json(ring));
        }
        let mut text = format!("epoch: {}\n", ring.epoch);
        match &ring.change {
            Some(c) => text.push_str(&format!(
                "change: {} of {}, {}/{} range moves done, to epoch {}\n",
                c.kind, c.node, c.done, c.moves, c.target_epoch
            )),
            None => text.push_str("change: none\n"),
        }
        let mut table = Table::new(&[
            ("node", Align::Left),
            ("vnodes", Align::Right),
            ("share", Align::Right),
        ]);
        for node in &ring.nodes {
            table.row(vec![
                node.node.to_string(),
                node.vnodes.to_string(),
                format!("{:.2}%", node.share * 100.0),
            ]);
        }
        text.push_str(&table.render());
        Output::Text(text)
    }

    /// `flush` and `compact`.
    async fn storage(&self, nodes: Vec<NodeId>, op: Op) -> Result<Outcome, Failure> {
        let what = op.name();
        let answers = self.on_nodes(some_nodes(nodes), op).await?;
        let table = Table::new(&[
            ("node", Align::Left),
            ("engine", Align::Left),
            ("memtable_bytes", Align::Right),
            ("disk_bytes", Align::Right),
            ("flushes", Align::Right),
            ("compactions", Align::Right),
            ("error", Align::Left),
        ]);
        let pick = |r: &Reply| match r {
            Reply::Storage(v) => Some(v.clone()),
            _ => None,
        };
        Ok(self.views_per_node(&answers, what, table, pick, |node, v| {
            vec![
                node.to_string(),
                v.engine.clone(),
                v.memtable_bytes.to_string(),
                v.disk_bytes.to_string(),
                v.flushes.to_string(),
                v.compactions.to_string(),
                String::new(),
            ]
        }))
    }

    async fn repair(
        &self,
        node: Option<NodeId>,
        range: Option<TokenSpan>,
        wait_for: Option<Duration>,
    ) -> Result<Outcome, Failure> {
        let nodes = node.map(|n| vec![n]);
        // What each node had repaired before, to tell what this round did.
        let before: BTreeMap<NodeId, u64> = if wait_for.is_some() {
            self.on_nodes(nodes.clone(), Op::Status)
                .await?
                .iter()
                .filter_map(|a| {
                    let view = a.result.as_ref().ok().and_then(status_of)?;
                    Some((a.node, view.anti_entropy.objects_repaired))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        let op = Op::Repair { range, peer: node };
        let answers = self.on_nodes(nodes, op).await?;
        let mut errors = Vec::new();
        // Node -> the round count that means its round is over.
        let mut until: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut failed: BTreeMap<NodeId, ErrorReply> = BTreeMap::new();
        for answer in &answers {
            let asked = expect_view(answer, "repair", |r| match r {
                Reply::Repair { until_rounds } => Some(*until_rounds),
                _ => None,
            });
            match asked {
                Ok(until_rounds) => {
                    until.insert(answer.node, until_rounds);
                }
                Err(e) => {
                    errors.push(format!("repair on {}: {}", answer.node, describe(&e)));
                    failed.insert(answer.node, e);
                }
            }
        }
        let reached = match wait_for {
            Some(limit) => Some(self.wait_for_rounds(&until, limit).await),
            None => None,
        };
        let mut table = Table::new(&[
            ("node", Align::Left),
            ("until_rounds", Align::Right),
            ("rounds", Align::Right),
            ("objects_repaired", Align::Right),
            ("error", Align::Left),
        ]);
        let mut nodes_json = Vec::new();
        for (node, until_rounds) in &until {
            let seen = reached.as_ref().and_then(|r| r.get(node));
            let done = seen.is_some_and(|s| s.rounds >= *until_rounds);
            let (rounds, repaired, note) = match (&reached, seen) {
                (None, _) => ("-".to_string(), "-".to_string(), String::new()),
                (Some(_), Some(s)) => {
                    let repaired = s
                        .objects_repaired
                        .saturating_sub(before.get(node).copied().unwrap_or(0));
                    let note = if done {
                        String::new()
                    } else {
                        "round not over in time".to_string()
                    };
                    (s.rounds.to_string(), repaired.to_string(), note)
                }
                (Some(_), None) => (
                    "?".to_string(),
                    "?".to_string(),
                    "no status in time".to_string(),
                ),
            };
            if reached.is_some() && !done {
                errors.push(format!(
                    "repair on {node}: the round was not over within the wait (its \
                     anti-entropy rounds did not reach {until_rounds})"
                ));
            }
            table.row(vec![
                node.to_string(),
                until_rounds.to_string(),
                rounds,
                repaired,
                note,
            ]);
            let mut ok = json!({ "until_rounds": until_rounds });
            if let Some(s) = seen {
                ok["rounds"] = json!(s.rounds);
                ok["objects_repaired_total"] = json!(s.objects_repaired);
                ok["objects_repaired"] = json!(s
                    .objects_repaired
                    .saturating_sub(before.get(node).copied().unwrap_or(0)));
            }
            if reached.is_some() {
                ok["done"] = json!(done);
            }
            nodes_json.push((node.0, json!({"node": node.0, "ok": ok})));
        }
        for (node, e) in &failed {
            table.row(error_row(*node, e, table.width()));
            nodes_json.push((node.0, json!({"node": node.0, "error": error_json(e)})));
        }
        table
            .rows
            .sort_by_key(|row| row.first().cloned().map(node_order));
        nodes_json.sort_by_key(|(node, _)| *node);
        let nodes_json = nodes_json.into_iter().map(|(_, v)| v).collect();
        Ok(self.per_node_outcome(table, nodes_json, errors))
    }

    /// Polls the nodes' status until each node's finished-round count
    /// reaches its target, or `limit` passes; returns the last counters
    /// seen per node.
    async fn wait_for_rounds(
        &self,
        until: &BTreeMap<NodeId, u64>,
        limit: Duration,
    ) -> BTreeMap<NodeId, ringkv::replication::anti_entropy::AntiEntropyStats> {
        let deadline = Instant::now() + limit;
        let mut seen = BTreeMap::new();
        loop {
            let pending: Vec<NodeId> = until
                .iter()
                .filter(|(node, target)| {
                    !seen.get(*node).is_some_and(
                        |s: &ringkv::replication::anti_entropy::AntiEntropyStats| {
                            s.rounds >= **target
                        },
                    )
                })
                .map(|(node, _)| *node)
                .collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                return seen;
            }
            // Each poll is bounded by what is left of the wait.
            let left = deadline - now;
            let per_node = left.max(Duration::from_millis(1));
            let poll = self
                .client
                .on_nodes(Some(pending), Op::Status, Some(per_node));
            if let Ok(Ok(answers)) = tokio::time::timeout(left, poll).await {
                for answer in answers {
                    if let Some(view) = answer.result.as_ref().ok().and_then(status_of) {
                        seen.insert(answer.node, view.anti_entropy);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return seen;
            }
            tokio::time::sleep(WAIT_POLL.min(deadline - now)).await;
        }
    }

    async fn snapshot(&self, dir: String, nodes: Vec<NodeId>) -> Result<Outcome, Failure> {
        let answers = self
            .on_nodes(some_nodes(nodes), Op::Snapshot { dir })
            .await?;
        let table = Table::new(&[
            ("node", Align::Left),
            ("dir", Align::Left),
            ("engine", Align::Left),
            ("entries", Align::Right),
            ("bytes", Align::Right),
            ("error", Align::Left),
        ]);
        let pick = |r: &Reply| match r {
            Reply::Snapshot(v) => Some(v.clone()),
            _ => None,
        };
        Ok(
            self.views_per_node(&answers, "snapshot", table, pick, |node, v| {
                vec![
                    node.to_string(),
                    v.dir.clone(),
                    v.engine.clone(),
                    v.entries.to_string(),
                    v.bytes.to_string(),
                    String::new(),
                ]
            }),
        )
    }

    async fn drain(&self, node: NodeId) -> Result<Outcome, Failure> {
        // Each --connect address on its own, without failover: the drain
        // must go to the node just checked, never fail over to another.
        let config = ClientConfig {
            max_attempts: 1,
            ..self.config.clone()
        };
        let mut others = Vec::new();
        for addr in &self.addrs {
            let one = match Client::connect(&[addr.as_str()], config.clone()).await {
                Ok(client) => client,
                Err(e) => {
                    others.push(format!("{addr} unreachable: {e}"));
                    continue;
                }
            };
            match one.status().await {
                Ok(status) if status.node == node => {
                    let ring = one
                        .drain()
                        .await
                        .map_err(|e| Failure::Failed(format!("drain of {node}: {e}")))?;
                    return Ok(self.drained(node, &ring));
                }
                Ok(status) => others.push(format!("{} at {addr}", status.node)),
                Err(e) => others.push(format!("{addr}: {e}")),
            }
        }
        Err(Failure::Usage(format!(
            "drain --node {}: no --connect address is that node ({}); give its client \
             address",
            node.0,
            others.join("; ")
        )))
    }

    /// What `drain` prints once `node` drains.
    fn drained(&self, node: NodeId, ring: &RingView) -> Outcome {
        let output = if self.json {
            Output::Json(json!({"node": node.0, "ring": to_json(ring)}))
        } else {
            let mut text =
                format!("{node} is draining: it refuses data ops and is leaving the ring\n");
            if let Output::Text(ring_text) = self.ring_output(ring) {
                text.push_str(&ring_text);
            }
            Output::Text(text)
        };
        Outcome::new(output)
    }

    async fn forget(&self, node: NodeId) -> Result<Outcome, Failure> {
        let ring = self
            .client
            .forget(node)
            .await
            .map_err(|e| Failure::Failed(format!("forget {node}: {e}")))?;
        let output = match self.ring_output(&ring) {
            Output::Json(ring) => Output::Json(json!({"forgotten": node.0, "ring": ring})),
            Output::Text(ring) => Output::Text(format!(
                "{node} marked LEFT: it leaves the ring once every member hears of it\n{ring}"
            )),
        };
        Ok(Outcome::new(output))
    }

    async fn transfers(
        &self,
        node: Option<NodeId>,
        state: Option<String>,
    ) -> Result<Outcome, Failure> {
        let answers = self.on_nodes(node.map(|n| vec![n]), Op::Status).await?;
        let mut errors = Vec::new();
        let mut errors_json = Vec::new();
        let mut rows: Vec<(NodeId, TransferView)> = Vec::new();
        for answer in &answers {
            match expect_view(answer, "status", status_of) {
                Ok(view) => rows.extend(
                    view.transfers
                        .into_iter()
                        .filter(|t| state.as_ref().is_none_or(|s| *s == t.state))
                        .map(|t| (answer.node, t)),
                ),
                Err(e) => {
                    errors.push(format!("status of {}: {}", answer.node, describe(&e)));
                    errors_json.push(json!({"node": answer.node.0, "error": error_json(&e)}));
                }
            }
        }
        let output = if self.json {
            let transfers: Vec<Value> = rows
                .iter()
                .map(|(node, t)| {
                    let mut value = to_json(t);
                    if let Value::Object(map) = &mut value {
                        map.insert("node".into(), json!(node.0));
                    }
                    value
                })
                .collect();
            Output::Json(json!({"transfers": transfers, "errors": errors_json}))
        } else {
            let mut table = Table::new(&[
                ("node", Align::Left),
                ("id", Align::Right),
                ("range", Align::Left),
                ("sources", Align::Left),
                ("state", Align::Left),
                ("keys", Align::Right),
                ("bytes", Align::Right),
                ("elapsed_ms", Align::Right),
                ("error", Align::Left),
            ]);
            for (node, t) in &rows {
                let sources: Vec<String> = t.sources.iter().map(|s| s.to_string()).collect();
                table.row(vec![
                    node.to_string(),
                    t.id.to_string(),
                    format!("{}..{}", hex(t.after), hex(t.through)),
                    sources.join(","),
                    t.state.clone(),
                    t.keys.to_string(),
                    t.bytes.to_string(),
                    t.elapsed_ms.to_string(),
                    t.error.clone().unwrap_or_default(),
                ]);
            }
            let mut text = table.render();
            if rows.is_empty() {
                text.push_str("(no transfers)\n");
            }
            Output::Text(text)
        };
        Ok(Outcome { output, errors })
    }

    /// The output of a command whose every node answers with one view: a
    /// row of `table` per node (`row` for a view, the error otherwise),
    /// or `{"nodes": [...]}`.
    fn views_per_node<V: serde::Serialize>(
        &self,
        answers: &[NodeAnswer],
        what: &str,
        mut table: Table,
        pick: impl Fn(&Reply) -> Option<V>,
        row: impl Fn(NodeId, &V) -> Vec<String>,
    ) -> Outcome {
        let mut errors = Vec::new();
        let mut nodes_json = Vec::new();
        for answer in answers {
            match expect_view(answer, what, &pick) {
                Ok(v) => {
                    table.row(row(answer.node, &v));
                    nodes_json.push(json!({"node": answer.node.0, "ok": to_json(&v)}));
                }
                Err(e) => {
                    errors.push(format!("{what} on {}: {}", answer.node, describe(&e)));
                    table.row(error_row(answer.node, &e, table.width()));
                    nodes_json.push(json!({"node": answer.node.0, "error": error_json(&e)}));
                }
            }
        }
        self.per_node_outcome(table, nodes_json, errors)
    }

    /// The output of a per-node command: the table, or `{"nodes": [...]}`.
    fn per_node_outcome(
        &self,
        table: Table,
        nodes_json: Vec<Value>,
        errors: Vec<String>,
    ) -> Outcome {
        let output = if self.json {
            Output::Json(json!({ "nodes": nodes_json }))
        } else {
            Output::Text(table.render())
        };
        Outcome { output, errors }
    }
}

/// `None` (every member) for an empty list.
fn some_nodes(nodes: Vec<NodeId>) -> Option<Vec<NodeId>> {
    (!nodes.is_empty()).then_some(nodes)
}

/// A table row for a node that answered with an error: dashes, and the
/// error in the last column.
fn error_row(node: NodeId, error: &ErrorReply, width: usize) -> Vec<String> {
    let mut row = vec![node.to_string()];
    row.resize(width.saturating_sub(1), "-".to_string());
    row.push(describe(error));
    row
}

/// Sorts `n2` before `n10`.
fn node_order(cell: String) -> (u64, String) {
    let number = cell
        .strip_prefix('n')
        .and_then(|d| d.parse().ok())
        .unwrap_or(u64::MAX);
    (number, cell)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A plain-text table: a header row, then rows, each column as wide as
/// its widest cell, numbers aligned right.
struct Table {
    headers: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(headers: &[(&str, Align)]) -> Table {
        Table {
            headers: headers
                .iter()
                .map(|(name, align)| (name.to_string(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// How many columns it has.
    fn width(&self) -> usize {
        self.headers.len()
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let columns = self.width();
        let cell_width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|(h, _)| cell_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell_width(cell));
            }
        }
        let header: Vec<String> = self.headers.iter().map(|(h, _)| h.clone()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(width.saturating_sub(cell_width(cell)));
                match self.headers[i].1 {
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_in_decimal_and_hex() {
        assert_eq!(
            parse_span("0x10:255"),
            Ok(TokenSpan {
                after: 16,
                through: 255
            })
        );
        assert!(parse_span("garbage").is_err());
        assert!(parse_span("1:").is_err());
        assert!(parse_span("1:0x1ffffffffffffffff").is_err());
    }

    #[test]
    fn node_ids_parse_with_or_without_n() {
        assert_eq!(parse_node("3"), Ok(NodeId(3)));
        assert_eq!(parse_node("n3"), Ok(NodeId(3)));
        assert!(parse_node("-1").is_err());
        assert!(parse_node("").is_err());
    }

    #[test]
    fn tables_align_numbers_right() {
        let mut t = Table::new(&[("node", Align::Left), ("keys", Align::Right)]);
        t.row(vec!["n1".into(), "5".into()]);
        t.row(vec!["n10".into(), "12345".into()]);
        assert_eq!(t.render(), "node   keys\nn1        5\nn10   12345\n");
    }
}
