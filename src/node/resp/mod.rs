//! The RESP port: a Redis-protocol front end (RESP2, and RESP3 after
//! `HELLO 3`) in front of the same [`Handler`] as the client port, so every
//! command runs through the ops and code paths of `docs/protocol.md`.
//! `docs/resp.md` says what each command means in ringkv.
//!
//! # Guarantees
//!
//! - Replies come in the order of the commands (pipelining). A
//!   connection's commands run one after another, as in redis, so a
//!   pipelined `SET k v` then `GET k` reads what the SET wrote.
//! - A malformed request (bad header, a bulk or array length past the
//!   limits, a command larger than the limit) gets `-ERR Protocol error:
//!   ...` and the connection is closed, as redis does; no length header
//!   makes the port buffer more than the limits allow, and nothing any
//!   client sends touches another connection.
//! - With users ([`crate::node::client_port::ClientAuth::Users`]), nothing but `AUTH`, `HELLO ...
//!   AUTH` and `QUIT` runs before authentication (`-NOAUTH`), and every op
//!   is held to the user's role before it reaches the handler (`-NOPERM`).
//!
//! # Limits
//!
//! Those of [`ClientPortConfig`] that fit: connections (per port and per
//! address), idle, partial-request and authentication timeouts, the
//! largest request (`max_frame_bytes`; an argument at most
//! [`crate::config::MAX_VALUE_BYTES`] plus a margin), the request budget for
//! large arguments, the password checks at once and the failures allowed.
//! A reply carries at most `reply_budget_per_connection` bytes of values,
//! and since a connection runs one command at a time and waits for its
//! replies to be written before it reads on, a client that never reads
//! holds one reply, not more. Arrays are at most [`MAX_ARGS`] long.

pub mod commands;
pub mod frame;
mod scan;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::log::RateLimited;
use crate::node::client_port::{discard_until_closed, ClientPortConfig};
use crate::node::shares::Slots;
use crate::protocol::Handler;

use commands::{After, Ctx, Session};
use frame::{Budget, Decoder, Limits, Value};

/// Arguments of one command at most: 1 Mi, far above any MSET or SADD a
/// client needs, while the vector of one command's arguments stays small.
pub const MAX_ARGS: usize = 1 << 20;

/// Replies are written once this many bytes wait, or when no further
/// command is already buffered.
const FLUSH_BYTES: usize = 64 * 1024;

/// A running RESP port. Dropping it does not stop it; call
/// [`RespPort::shutdown`].
pub struct RespPort {
    local_addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

struct Shared {
    ctx: Ctx,
    config: ClientPortConfig,
    stop: CancellationToken,
    per_ip: Arc<Slots<IpAddr>>,
    budget: Arc<Budget>,
}

impl RespPort {
    /// Binds `listen` (`HOST:PORT`; port 0 picks a free one) and serves
    /// RESP with `handler`, under `config`'s limits and authentication.
    /// Must be called inside a tokio runtime.
    pub async fn start(
        listen: &str,
        handler: Arc<dyn Handler>,
        config: ClientPortConfig,
    ) -> Result<RespPort> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding the RESP port {listen}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the RESP port's address", e))?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let grace = config.shutdown_grace;
        let shared = Arc::new(Shared {
            ctx: Ctx {
                handler,
                auth: config.auth.clone(),
                auth_slots: Arc::new(Semaphore::new(config.max_concurrent_auth)),
                max_auth_failures: config.max_auth_failures,
                max_reply_bytes: config.reply_budget_per_connection,
                next_id: AtomicU64::new(1),
            },
            budget: Budget::new(config.request_budget_total),
            per_ip: Slots::new(config.max_connections_per_ip),
            config,
            stop: stop.clone(),
        });
        tracker.spawn(accept_loop(listener, shared, tracker.clone()));
        Ok(RespPort {
            local_addr,
            stop,
            tracker,
            grace,
        })
    }

    /// The address the port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and reading; a command running finishes (for up to
    /// the shutdown grace) and its reply is written; then every connection
    /// closes.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(self.grace * 2, self.tracker.wait()).await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let refusals = RateLimited::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "RESP port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ip_slot = shared.per_ip.take(&peer.ip());
        let permit = slots.clone().try_acquire_owned().ok();
        match (permit, ip_slot) {
            (Some(permit), Some(ip_slot)) => {
                let shared = shared.clone();
                tracker.spawn(async move {
                    serve(stream, peer, &shared).await;
                    drop(ip_slot);
                    drop(permit);
                });
            }
            _ => {
                refusals.warn(|n| {
                    tracing::warn!(%peer, refused = n, "RESP port: refusing a connection over the limits")
                });
                let timeout = shared.config.refusal_timeout;
                tracker.spawn(async move {
                    let _ = tokio::time::timeout(
                        timeout,
                        stream.write_all(b"-ERR max number of clients reached\r\n"),
                    )
                    .await;
                    let _ = stream.shutdown().await;
                    discard_until_closed(stream, timeout).await;
                });
            }
        }
    }
}

/// The limits of a request: before authentication, a command may be no
/// larger than `max_frame_bytes_before_auth`.
fn limits(config: &ClientPortConfig, authenticated: bool) -> Limits {
    let max = if authenticated {
        config.max_frame_bytes
    } else {
        config
            .max_frame_bytes_before_auth
            .min(config.max_frame_bytes)
    };
    Limits {
        max_args: MAX_ARGS,
        max_arg_bytes: max,
        max_command_bytes: max,
    }
}

/// Writes `out` within `limit` (a client that reads nothing for that long
/// is cut off); whether it was written.
async fn flush(stream: &mut TcpStream, out: &mut Vec<u8>, limit: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let written = tokio::time::timeout(limit, stream.write_all(out)).await;
    out.clear();
    matches!(written, Ok(Ok(())))
}

async fn serve(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let config = &shared.config;
    let mut session = Session::new(&shared.ctx, peer.to_string());
    let mut decoder = Decoder::new(
        limits(config, session.role.is_some()),
        shared.budget.clone(),
    );
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::new();
    let opened = tokio::time::Instant::now();
    let mut last_command = opened;
    let mut partial_since: Option<tokio::time::Instant> = None;
    let write_limit = config.idle_timeout;
    loop {
        // Every complete command buffered, in order.
        loop {
            let command = match decoder.decode(&mut buf) {
                Ok(Some(command)) => command,
                Ok(None) => break,
                Err(e) => {
                    Value::err(format!("Protocol error: {}", e.0)).encode(session.resp3, &mut out);
                    if flush(&mut stream, &mut out, config.refusal_timeout).await {
                        let _ = stream.shutdown().await;
                        discard_until_closed(stream, config.refusal_timeout).await;
                    }
                    return;
                }
            };
            last_command = tokio::time::Instant::now();
            partial_since = None;
            if command.args.is_empty() {
                continue;
            }
            let was_authenticated = session.role.is_some();
            let (reply, after) = commands::run(&shared.ctx, &mut session, &command.args).await;
            drop(command);
            reply.encode(session.resp3, &mut out);
            if session.role.is_some() != was_authenticated {
                decoder.set_limits(limits(config, session.role.is_some()));
            }
            let too_many_failures = session.auth_failures >= shared.ctx.max_auth_failures;
            if after == After::Close || too_many_failures {
                if flush(&mut stream, &mut out, config.refusal_timeout).await {
                    let _ = stream.shutdown().await;
                    if too_many_failures {
                        discard_until_closed(stream, config.refusal_timeout).await;
                    }
                }
                return;
            }
            if out.len() >= FLUSH_BYTES && !flush(&mut stream, &mut out, write_limit).await {
                return;
            }
        }
        if !flush(&mut stream, &mut out, write_limit).await {
            return;
        }
        let now = tokio::time::Instant::now();
        if buf.is_empty() && !decoder.in_command() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(now);
        }
        let (mut deadline, mut why) = match partial_since {
            Some(since) => (since + config.frame_timeout, "partial"),
            None => (last_command + config.idle_timeout, "idle"),
        };
        if session.role.is_none() && opened + config.auth_timeout < deadline {
            (deadline, why) = (opened + config.auth_timeout, "auth");
        }
        buf.reserve(16 * 1024);
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                let text = match why {
                    "auth" => "ERR no authentication in time; closing the connection",
                    "partial" => "ERR Protocol error: a command was not completed in time",
                    _ => "",
                };
                if !text.is_empty() {
                    Value::Error(text.into()).encode(session.resp3, &mut out);
                    let _ = flush(&mut stream, &mut out, config.refusal_timeout).await;
                }
                tracing::debug!(%peer, why, "RESP port: closing a connection");
                return;
            }
        }
    }
}

/// Whether `addr` (`HOST:PORT`) names a loopback host: an open RESP port
/// (no users) may only listen there.
pub fn is_loopback(addr: &str) -> bool {
    let Some((host, _)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:6379"));
        assert!(is_loopback("127.1.2.3:0"));
        assert!(is_loopback("[::1]:6379"));
        assert!(is_loopback("localhost:6379"));
        assert!(!is_loopback("0.0.0.0:6379"));
        assert!(!is_loopback("10.0.0.1:6379"));
        assert!(!is_loopback("[::]:6379"));
        assert!(!is_loopback("db.example.com:6379"));
    }
}
