//! `ringkv-node`: one ringkv node as a process.
//!
//! It reads its configuration (flags over an optional TOML file, see
//! `ringkv::node::cli` and `docs/ringkv-node.example.toml`), claims its
//! data directory, starts the node (gossip and replication on the peer
//! address) and then the client port, and prints one line to stdout:
//!
//! ```text
//! ready node=<id> peer=<HOST:PORT> client=<HOST:PORT>
//! ```
//!
//! with the addresses actually bound, and ` redis=<HOST:PORT>` at the end
//! when the RESP port is on (`--redis-listen`). Logs go to stderr (`RUST_LOG`
//! honoured, `info` by default). SIGTERM or SIGINT stops it gracefully:
//! the client port stops accepting and lets requests in flight finish,
//! then the node shuts down (flushing its engine), and the process exits
//! 0, or 1 if the final flush failed (the WAL still holds what it did not
//! write). The node keeps its tokens: a restart moves no data. With
//! `--leave-on-sigterm`, SIGTERM (not SIGINT) first decommissions the node:
//! after the client port closes, it gives its tokens away, waits until
//! their ranges have moved (`Node::leave_ring`, at most
//! `LEAVE_TRANSFER_TIMEOUT`) and gossips LEFT, then shuts down as above. A
//! second signal during any of that ends the process at once (status 1).
//!
//! The ready line comes only once the node is in the ring: at once for a
//! founder (no seeds, or `--bootstrap`) or a node restarted with a ring
//! that holds it; for a new node joining through seeds, once the cluster
//! has begun its join (its ranges may still be moving). A node that has
//! not joined within `--join-timeout-ms` (60 s) exits with status 3 and
//! one line on stderr saying why (`ringkv::node::readiness`).
//!
//! Exit status 2: the node refused to start (a bad flag or file, a data
//! directory that belongs to another node or that another process holds,
//! an address that cannot be bound), with one line on stderr saying why.
//! Status 3: it could not join (above). Status 1: it failed after it had
//! started.
//!
//! Everything that can be decided without starting anything lives in the
//! library (`ringkv::node::cli`), where it is unit-tested; this file only
//! puts the parts together.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ringkv::node::admin::AdminPort;
use ringkv::node::cli::{self, Args, DirOwner, NodeSetup};
use ringkv::node::client_port::{ClientAuth, ClientPort};
use ringkv::node::resp::RespPort;
use ringkv::node::{Node, TransportParts};
use ringkv::protocol::Handler;
use ringkv::TcpTransport;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Status for a node that refused to start.
const EXIT_REFUSED: u8 = 2;
/// Status for a node that failed after starting.
const EXIT_FAILED: u8 = 1;
/// Status for a node that could not join its cluster within
/// `join_timeout_ms`.
const EXIT_NOT_JOINED: u8 = 3;

/// Why `run` ended badly.
enum Failure {
    /// Before the ready line: the node refused to start.
    Start(String),
    /// After it: the node failed while running.
    Run(String),
    /// The node could not join its cluster in time (why).
    Join(String),
}

/// The node's allocator. Against glibc's malloc it cut the server CPU per
/// operation of the cluster benchmark by about a sixth (mostly
/// `_int_malloc`, `malloc_consolidate` and `_int_free`, a tenth of a
/// node's thread); see `docs/memory.md` for what it costs in memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc that libmimalloc-sys 0.1.49
/// builds (v3, `mimalloc.h`'s `mi_option_e`); the crate does not export
/// it, hence the exact version in Cargo.toml, and the unit test below.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc give freed memory back to the OS at once rather than
/// up to a second later: a node that served a burst of 15 MiB reads
/// otherwise kept hundreds of MB it no longer used (`docs/memory.md`).
fn freed_memory_goes_back_to_the_os() {
    // SAFETY: sets one of mimalloc's options, a plain integer.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

fn main() -> ExitCode {
    freed_memory_goes_back_to_the_os();
    // clap prints its own one-line error and exits 2 on a bad flag.
    let args = Args::parse();
    init_logs(args.log_format);
    if let Some(cli::Command::Certs(certs)) = &args.command {
        return match cli::make_certs(certs) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv-node certs: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        };
    }
    if let Some(cli::Command::Restore(restore)) = &args.command {
        return match cli::restore(restore) {
            Ok(done) => {
                println!(
                    "restored node {} of cluster {:?} into {}: {} entries, {} files",
                    done.snapshot.node.0,
                    done.snapshot.cluster,
                    done.data_dir.display(),
                    done.snapshot.entries,
                    done.files
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv-node restore: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        };
    }
    if let Some(cli::Command::Users(cli::UsersCommand::Add(add))) = &args.command {
        let mut password = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut password) {
            eprintln!("ringkv-node users add: reading the password from stdin: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
        let password = password.trim_end_matches(['\n', '\r']);
        return match cli::add_user(add, password) {
            Ok(()) => {
                println!("{} is now {} in {}", add.name, add.role, add.file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringkv-node users add: {e}");
                ExitCode::from(EXIT_REFUSED)
            }
        };
    }
    let setup = match cli::load(args) {
        Ok(setup) => setup,
        Err(e) => return refuse(&e.to_string()),
    };
    // Held until the process ends: the lock on <dir>/NODE.
    let _claim = match &setup.data_dir {
        Some(dir) => {
            let owner = DirOwner {
                cluster: setup.node.cluster.clone(),
                node: setup.node.id,
            };
            match cli::claim_data_dir(dir, &owner) {
                Ok(claim) => Some(claim),
                Err(e) => return refuse(&e.to_string()),
            }
        }
        None => None,
    };
    let system = actix::System::new();
    match system.block_on(run(setup)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Start(why)) => refuse(&why),
        Err(Failure::Run(why)) => {
            eprintln!("ringkv-node: {why}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Join(why)) => {
            eprintln!("ringkv-node: cannot join the cluster: {why}");
            ExitCode::from(EXIT_NOT_JOINED)
        }
    }
}

fn refuse(why: &str) -> ExitCode {
    eprintln!("ringkv-node: cannot start: {why}");
    ExitCode::from(EXIT_REFUSED)
}

fn init_logs(format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already set, which nothing here does.
    // Colours only for a person watching; a file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        cli::LogFormat::Text => logs.with_ansi(ansi).try_init(),
        cli::LogFormat::Json => logs.json().try_init(),
    };
}

/// SIGTERM and SIGINT, registered before the ready line so that a signal
/// sent right after it is never missed.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next one; returns its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn run(setup: NodeSetup) -> Result<(), Failure> {
    let NodeSetup {
        node: node_config,
        tcp,
        client_listen,
        client_port: port_config,
        redis_listen,
        data_dir: _,
        leave_on_sigterm,
        join_timeout,
        admin_listen,
    } = setup;
    let id = node_config.id;
    let mut signals = Signals::register()
        .map_err(|e| Failure::Start(format!("cannot listen for signals: {e}")))?;

    let node = Node::spawn(node_config, move || async move {
        let (transport, inbox) = TcpTransport::bind(tcp).await?;
        let addr = transport.advertised_addr().to_string();
        Ok(TransportParts {
            transport: Arc::new(transport),
            inbox,
            advertised: Some(addr),
        })
    })
    .await
    .map_err(|e| Failure::Start(e.to_string()))?;

    // Ready only once the ring holds this node: a node that cannot join
    // says why and exits, rather than serve `Unavailable` on an empty ring.
    // A signal meanwhile stops it as before a ready line: at once.
    let joined = tokio::select! {
        joined = node.wait_until_joined(join_timeout) => joined,
        which = signals.next() => {
            tracing::info!(signal = which, "stopping before the node joined");
            node.shutdown().await;
            return Ok(());
        }
    };
    if let Err(why) = joined {
        node.shutdown().await;
        return Err(Failure::Join(why));
    }
    let joined = node
        .ring_state()
        .await
        .map_err(|e| Failure::Start(e.to_string()))?;
    tracing::info!(
        node = id.0,
        epoch = joined.ring.epoch(),
        members = joined.ring.members().len(),
        joining = joined.pending.is_some(),
        "in the ring"
    );

    let handler: Arc<dyn Handler> = Arc::new(node.clone());
    if port_config.auth == ClientAuth::Open {
        tracing::warn!(
            "the client port does not authenticate (--no-client-auth): anyone who reaches it \
             may run every op, admin ops included"
        );
    }
    if port_config.tls.is_none() {
        tracing::info!("the client port speaks plain TCP (no --client-tls-cert)");
    }
    let resp_config = port_config.clone();
    // Both ports serve their connections on the node's own thread: a
    // request then reaches the coordinator, and its answer the
    // connection, without a thread switch.
    let started = {
        let handler = handler.clone();
        node.on_node_thread(move || async move {
            ClientPort::start(&client_listen, handler, port_config).await
        })
        .await
    };
    let port = match started.and_then(|p| p) {
        Ok(port) => port,
        Err(e) => {
            node.shutdown().await;
            return Err(Failure::Start(e.to_string()));
        }
    };
    let resp = match &redis_listen {
        None => None,
        Some(addr) => match node
            .on_node_thread({
                let addr = addr.clone();
                move || async move { RespPort::start(&addr, handler, resp_config).await }
            })
            .await
            .and_then(|r| r)
        {
            Ok(resp) => Some(resp),
            Err(e) => {
                port.shutdown().await;
                node.shutdown().await;
                return Err(Failure::Start(e.to_string()));
            }
        },
    };

    let admin = match &admin_listen {
        None => None,
        Some(addr) => match AdminPort::start(addr, node.clone()).await {
            Ok(admin) => Some(admin),
            Err(e) => {
                if let Some(resp) = resp {
                    resp.shutdown().await;
                }
                port.shutdown().await;
                node.shutdown().await;
                return Err(Failure::Start(e.to_string()));
            }
        },
    };

    let mut ready = format!(
        "ready node={} peer={} client={}",
        id.0,
        node.addr(),
        port.local_addr()
    );
    if let Some(resp) = &resp {
        ready.push_str(&format!(" redis={}", resp.local_addr()));
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{ready}").and_then(|_| stdout.flush()) {
        // Whoever started us cannot learn the addresses: they will not use
        // the node, so do not keep it running.
        port.shutdown().await;
        node.shutdown().await;
        return Err(Failure::Run(format!("cannot write the ready line: {e}")));
    }
    drop(stdout);
    tracing::info!(node = id.0, peer = %node.addr(), client = %port.local_addr(), "ready");

    let which = signals.next().await;
    let leave = leave_on_sigterm && which == "SIGTERM";
    if leave {
        tracing::info!(
            signal = which,
            "leaving the cluster (--leave-on-sigterm): client port first, then the node \
             gives its ranges away and stops"
        );
    } else {
        tracing::info!(
            signal = which,
            "shutting down: client port first, then the node"
        );
    }
    // A second signal means "now": do not wait for the flush.
    actix::spawn(async move {
        let again = signals.next().await;
        eprintln!("ringkv-node: {again} during shutdown: exiting at once");
        std::process::exit(i32::from(EXIT_FAILED));
    });
    if let Some(resp) = &resp {
        resp.shutdown().await;
    }
    port.shutdown().await;
    if leave {
        tracing::info!(node = id.0, "client port closed; leaving the cluster");
        leave_cluster(&node).await;
        tracing::info!(node = id.0, "stopping the node");
    } else {
        tracing::info!(node = id.0, "client port closed; stopping the node");
    }
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    if let Err(e) = node.shutdown_checked().await {
        return Err(Failure::Run(format!(
            "node {} stopped, but its final flush failed: {e}",
            id.0
        )));
    }
    tracing::info!(node = id.0, "stopped");
    Ok(())
}

/// Decommissions `node` and waits until its leave is finished (its ranges
/// moved, or the leave timed out; then LEFT gossiped), logging the start
/// and the end. The node keeps running: the caller stops it. A node alone
/// in its ring has no one to give its ranges to: it keeps its tokens and
/// only stops (a leave would leave an empty ring, and the node would come
/// back leaving after a restart, its data in no ring).
async fn leave_cluster(node: &Node) {
    let id = node.id();
    match node.ring().await {
        Ok(ring) if ring.members().iter().all(|&n| n == id) => {
            tracing::warn!(
                node = id.0,
                "no other node in the ring to take this node's ranges: not leaving, only stopping"
            );
            return;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(node = id.0, error = %e, "cannot read the ring: not leaving");
            return;
        }
    }
    let started = std::time::Instant::now();
    tracing::info!(
        node = id.0,
        "leave started: giving this node's tokens away; waiting for its ranges to move"
    );
    match node.leave_ring().await {
        Ok(true) => tracing::info!(
            node = id.0,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "leave finished: the ring no longer holds this node and LEFT was gossiped"
        ),
        Ok(false) => tracing::warn!(
            node = id.0,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "leave finished without its ranges moving (timed out): LEFT was gossiped, and the \
             lowest live node removes this node from the ring"
        ),
        Err(e) => tracing::error!(
            node = id.0,
            error = %e,
            "leave failed; stopping without it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number set at start is mimalloc's purge delay: it has
    /// the purge delay's default in that mimalloc (1,000 ms, `options.c`),
    /// and `max_errors`, four further on, has its own (32); a renumbered
    /// enum in another mimalloc would show here.
    #[test]
    fn the_option_set_at_start_is_mimallocs_purge_delay() {
        // SAFETY: reads options, plain integers.
        let (delay, max_errors) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 4),
            )
        };
        assert_eq!(delay, 1000, "not the purge delay's default");
        assert_eq!(max_errors, 32, "not max_errors' default");
    }
}
