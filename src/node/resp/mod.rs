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
//!   A connection that authenticates as a user who has
//!   `max_connections_per_user` connections open already (on this port and
//!   on every port sharing the config's
//!   [`crate::node::shares::UserConnections`], the client port of
//!   `ringkv-node` among them) gets an error naming the cap instead of the
//!   reply, and is closed.
//! - With a certificate in the config ([`ClientPortConfig::tls`]), the port
//!   speaks only TLS 1.3, with the client port's certificate: a plain TCP
//!   client fails its handshake and is closed, alone. Without one, the port
//!   refuses to listen beyond loopback ([`check_listen`]), so passwords and
//!   data never cross a network in the clear.
//!
//! # Limits
//!
//! Those of [`ClientPortConfig`] that fit: connections (per port, per
//! address and per user), idle, partial-request and authentication
//! timeouts, the TLS handshake (within `auth_timeout`), the
//! largest request (`max_frame_bytes`; an argument at most
//! [`crate::config::MAX_VALUE_BYTES`] plus a margin), the request budget for
//! large arguments, the password checks at once and the failures allowed.
//! A reply carries at most `reply_budget_per_connection` bytes of values,
//! and since a connection runs one command at a time and waits for its
//! replies to be written before it reads on, a client that never reads
//! holds one reply, not more. Replies over 64 KiB waiting to be written
//! are held to `reply_budget_total` over the port's connections; one that
//! would go past it is replaced by an error. Arrays are at most
//! [`MAX_ARGS`] long.

pub mod commands;
pub mod frame;
mod scan;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::log::RateLimited;
use crate::node::client_port::{discard_until_closed, ClientAuth, ClientPortConfig};
use crate::node::shares::{ByteBudget, Held, Slot, Slots};
use crate::protocol::Handler;

use commands::{After, Ctx, Session};
use frame::{Budget, Decoder, Limits, Value};

/// Arguments of one command at most: 1 Mi, far above any MSET or SADD a
/// client needs, while the vector of one command's arguments stays small.
pub const MAX_ARGS: usize = 1 << 20;

/// Replies are written once this many bytes wait, or when no further
/// command is already buffered.
const FLUSH_BYTES: usize = 64 * 1024;

/// Replies larger than this are charged to `reply_budget_total` until
/// they are written; smaller ones are bounded by the connections.
const LARGE_REPLY_BYTES: usize = 64 * 1024;

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
    /// Bytes of large replies waiting to be written, over all connections.
    replies: Arc<ByteBudget>,
    /// Refusals over a user's share, logged at most every 10 s.
    user_refusals: RateLimited,
}

impl RespPort {
    /// Binds `listen` (`HOST:PORT`; port 0 picks a free one) and serves
    /// RESP with `handler`, under `config`'s limits, authentication and
    /// TLS. Refuses an address [`check_listen`] refuses. Must be called
    /// inside a tokio runtime.
    pub async fn start(
        listen: &str,
        handler: Arc<dyn Handler>,
        config: ClientPortConfig,
    ) -> Result<RespPort> {
        config.validate()?;
        check_listen(listen, &config)?;
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
            replies: ByteBudget::new(config.reply_budget_total),
            user_refusals: RateLimited::new(Duration::from_secs(10)),
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
    let handshakes = Arc::new(RateLimited::new(Duration::from_secs(10)));
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
                let handshakes = handshakes.clone();
                tracker.spawn(async move {
                    match shared.config.tls.clone() {
                        None => serve(stream, peer, &shared).await,
                        Some(tls) => {
                            // The handshake holds the connection's slots, so
                            // stalled handshakes are bounded as idle
                            // connections are, and end in time.
                            let limit = shared.config.auth_timeout;
                            let handshake = tokio::select! {
                                _ = shared.stop.cancelled() => None,
                                done = tokio::time::timeout(limit, tls.accept(stream)) => Some(done),
                            };
                            match handshake {
                                None => {}
                                Some(Ok(Ok(stream))) => serve(stream, peer, &shared).await,
                                Some(Ok(Err(e))) => handshakes.warn(|n| {
                                    tracing::warn!(%peer, failed = n, error = %e, "RESP port: TLS handshake failed")
                                }),
                                Some(Err(_)) => handshakes.warn(|n| {
                                    tracing::warn!(%peer, failed = n, "RESP port: TLS handshake not finished within {limit:?}")
                                }),
                            }
                        }
                    }
                    drop(ip_slot);
                    drop(permit);
                });
            }
            _ => {
                refusals.warn(|n| {
                    tracing::warn!(%peer, refused = n, "RESP port: refusing a connection over the limits")
                });
                let timeout = shared.config.refusal_timeout;
                // On a TLS port the refusal is the closed connection: a
                // plain error would not reach a TLS client, and a handshake
                // for each connection over the limits is what the limits
                // are there to spare.
                let plain = shared.config.tls.is_none();
                tracker.spawn(async move {
                    if plain {
                        let _ = tokio::time::timeout(
                            timeout,
                            stream.write_all(b"-ERR max number of clients reached\r\n"),
                        )
                        .await;
                    }
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
async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>, limit: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let written = tokio::time::timeout(limit, async {
        stream.write_all(out).await?;
        // TLS holds what it encrypts until flushed.
        stream.flush().await
    })
    .await;
    out.clear();
    matches!(written, Ok(Ok(())))
}

/// Charges a reply just encoded (`out[from..]`) to the port's reply budget
/// when it is large; one that does not fit is replaced by an error.
fn charge_reply(
    shared: &Shared,
    resp3: bool,
    out: &mut Vec<u8>,
    from: usize,
    held: &mut Vec<Held>,
) {
    let len = out.len() - from;
    if len <= LARGE_REPLY_BYTES {
        return;
    }
    match shared.replies.take(len) {
        Some(share) => held.push(share),
        None => {
            out.truncate(from);
            Value::err(format!(
                "Overloaded: a reply of {len} bytes was dropped: the node holds {} MiB of \
                 replies waiting for clients to read them (reply_budget_total); retry later",
                shared.replies.limit() >> 20
            ))
            .encode(resp3, out);
        }
    }
}

/// The place of a user's connection in its share, when the session has
/// just authenticated as a user it holds no place for; an error naming the
/// cap when the user has no place left.
fn user_place(
    shared: &Shared,
    session: &Session,
    place: &mut Option<Slot<String>>,
) -> std::result::Result<(), Value> {
    let Some(user) = &session.user else {
        return Ok(());
    };
    if place.as_ref().is_some_and(|p| p.key() == user) {
        return Ok(());
    }
    let config = &shared.config;
    let limit = config.max_connections_per_user;
    match config.user_connections.take(user, limit) {
        Some(taken) => {
            // Authenticated as another user: the old place is given back.
            *place = Some(taken);
            Ok(())
        }
        None => {
            shared.user_refusals.warn(|n| {
                tracing::warn!(%user, refused = n, "RESP port: refusing a connection over the user's share")
            });
            Err(Value::err(format!(
                "max number of clients reached for user '{user}': it has {limit} connections \
                 open (max_connections_per_user, counted over the Redis and client ports); \
                 closing the connection"
            )))
        }
    }
}

/// Replies up to this size let a connection's window grow.
const SMALL_REPLY_BYTES: usize = 64 * 1024;

/// How many commands of one connection's pipeline may run at once, as the
/// client port bounds a connection's requests in flight: four at first,
/// one more per small reply up to `max_in_flight_per_connection`, and
/// once a reply has passed 1 MiB, no more than
/// `reply_budget_per_connection` divided by the largest reply: a pipeline
/// of large GETs holds about that budget, not a value per command.
struct Window {
    size: usize,
    max: usize,
    largest: usize,
    budget: usize,
}

impl Window {
    fn new(config: &ClientPortConfig) -> Window {
        Window {
            size: 4,
            max: config.max_in_flight_per_connection.max(1),
            largest: 0,
            budget: config.reply_budget_per_connection,
        }
    }

    fn limit(&self) -> usize {
        let limit = self.size.min(self.max);
        if self.largest > 1 << 20 {
            limit.min((self.budget / self.largest).max(1))
        } else {
            limit
        }
    }

    fn replied(&mut self, bytes: usize) {
        self.largest = self.largest.max(bytes);
        if bytes <= SMALL_REPLY_BYTES {
            self.size = self.size.saturating_add(1).min(self.max);
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    shared: &Shared,
) {
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
    let mut place: Option<Slot<String>> = None;
    let mut held: Vec<Held> = Vec::new();
    let mut window = Window::new(config);
    loop {
        // Every complete command buffered, in order, in pipelines of at
        // most `max_in_flight_per_connection` (`commands::run_pipeline`
        // runs those on different keys at once). A pipeline ends after a
        // command that may authenticate, as the limits of the commands
        // after it depend on the answer.
        loop {
            let mut pipeline: Vec<frame::Command> = Vec::new();
            let mut malformed = None;
            while pipeline.len() < config.max_in_flight_per_connection.max(1) {
                match decoder.decode(&mut buf) {
                    Ok(Some(command)) => {
                        last_command = tokio::time::Instant::now();
                        partial_since = None;
                        let Some(name) = command.args.first() else {
                            continue;
                        };
                        let authenticates = name.eq_ignore_ascii_case(b"auth")
                            || name.eq_ignore_ascii_case(b"hello");
                        pipeline.push(command);
                        if authenticates {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        malformed = Some(e);
                        break;
                    }
                }
            }
            if pipeline.is_empty() && malformed.is_none() {
                break;
            }
            let args: Vec<&[Bytes]> = pipeline.iter().map(|c| &c.args[..]).collect();
            let was_authenticated = session.role.is_some();
            let replies =
                commands::run_pipeline(&shared.ctx, &mut session, &args, window.limit()).await;
            drop(args);
            drop(pipeline);
            for (mut reply, mut after) in replies {
                let mut over_share = false;
                if let Err(refusal) = user_place(shared, &session, &mut place) {
                    (reply, after, over_share) = (refusal, After::Close, true);
                    session.role = None;
                    session.user = None;
                }
                let from = out.len();
                reply.encode(session.resp3, &mut out);
                drop(reply);
                window.replied(out.len() - from);
                charge_reply(shared, session.resp3, &mut out, from, &mut held);
                let too_many_failures = session.auth_failures >= shared.ctx.max_auth_failures;
                if after == After::Close || too_many_failures {
                    session.release_holds();
                    if flush(&mut stream, &mut out, config.refusal_timeout).await {
                        let _ = stream.shutdown().await;
                        if too_many_failures || over_share {
                            discard_until_closed(stream, config.refusal_timeout).await;
                        }
                    }
                    return;
                }
                if out.len() >= FLUSH_BYTES {
                    // Never across a write to the socket, which a client
                    // that reads nothing stalls: a held answer holds back
                    // every read of the node.
                    session.release_holds();
                    let written = flush(&mut stream, &mut out, write_limit).await;
                    held.clear();
                    if !written {
                        return;
                    }
                }
            }
            // Every reply of the pipeline is encoded (and a large one
            // charged to the reply budget): the read budget its answers
            // held is given back.
            session.release_holds();
            if session.role.is_some() != was_authenticated {
                decoder.set_limits(limits(config, session.role.is_some()));
            }
            if let Some(e) = malformed {
                Value::err(format!("Protocol error: {}", e.0)).encode(session.resp3, &mut out);
                if flush(&mut stream, &mut out, config.refusal_timeout).await {
                    let _ = stream.shutdown().await;
                    discard_until_closed(stream, config.refusal_timeout).await;
                }
                return;
            }
        }
        let written = flush(&mut stream, &mut out, write_limit).await;
        held.clear();
        if !written {
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

/// Whether `addr` may serve RESP under `config`: beyond loopback
/// ([`is_loopback`]), only with users (an open port would let anyone
/// write) and with TLS (passwords and data must not cross a network in
/// the clear). The node checks it before it starts, [`RespPort::start`]
/// again.
pub fn check_listen(addr: &str, config: &ClientPortConfig) -> Result<()> {
    if is_loopback(addr) {
        return Ok(());
    }
    if config.auth == ClientAuth::Open {
        return Err(Error::InvalidInput(format!(
            "redis_listen {addr:?} is not a loopback address, and the node has no users \
             (--no-client-auth): an open Redis port may only listen on loopback; give \
             --users-file to serve it on the network"
        )));
    }
    if config.tls.is_none() {
        return Err(Error::InvalidInput(format!(
            "redis_listen {addr:?} is not a loopback address, and the client port has no \
             certificate: a plaintext Redis port may only listen on loopback, or passwords \
             and data would cross the network in the clear; give --client-tls-cert and \
             --client-tls-key (the Redis port then speaks TLS with the same certificate)"
        )));
    }
    Ok(())
}

/// Whether `addr` (`HOST:PORT`) names a loopback host: an open or
/// plaintext RESP port may only listen there.
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
    fn a_pipelines_window_grows_with_small_replies_and_shrinks_for_large_ones() {
        let config = ClientPortConfig::default();
        let mut w = Window::new(&config);
        assert_eq!(w.limit(), 4, "a new connection");
        for _ in 0..10 {
            w.replied(100);
        }
        assert_eq!(w.limit(), 14);
        for _ in 0..1000 {
            w.replied(100);
        }
        assert_eq!(w.limit(), config.max_in_flight_per_connection);
        // 15 MiB replies: at most the per-connection budget of them.
        w.replied(15 << 20);
        assert_eq!(w.limit(), config.reply_budget_per_connection / (15 << 20));
        assert!(w.limit() >= 1);
        w.replied(100);
        assert_eq!(w.limit(), config.reply_budget_per_connection / (15 << 20));
        let tiny = ClientPortConfig {
            reply_budget_per_connection: 1 << 20,
            ..ClientPortConfig::default()
        };
        let mut w = Window::new(&tiny);
        w.replied(8 << 20);
        assert_eq!(w.limit(), 1, "never below one");
    }

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

    #[test]
    fn beyond_loopback_only_with_users_and_tls() {
        let ca = crate::net::ClusterCa::generate("c").unwrap();
        let port = ca.issue_client_port(&["localhost".into()]).unwrap();
        let tls =
            crate::net::client_tls::ClientPortTls::new(&port.cert_pem, &port.key_pem).unwrap();
        let users = ClientAuth::Users(Arc::new(crate::node::auth::Users::parse("").unwrap()));
        let config = |auth: &ClientAuth, tls: Option<_>| ClientPortConfig {
            auth: auth.clone(),
            tls,
            ..ClientPortConfig::default()
        };
        let open = ClientAuth::Open;
        for (addr, auth, tls, ok) in [
            ("127.0.0.1:0", &open, None, true),
            ("0.0.0.0:0", &open, None, false),
            ("0.0.0.0:0", &open, Some(tls.clone()), false),
            ("0.0.0.0:0", &users, None, false),
            ("[::1]:0", &users, None, true),
            ("0.0.0.0:0", &users, Some(tls.clone()), true),
        ] {
            let got = check_listen(addr, &config(auth, tls.clone()));
            assert_eq!(
                got.is_ok(),
                ok,
                "{addr} {auth:?} tls={}: {got:?}",
                tls.is_some()
            );
        }
        let plain = check_listen("10.0.0.1:6379", &config(&users, None)).unwrap_err();
        assert!(plain.to_string().contains("--client-tls-cert"), "{plain}");
        let open = check_listen("10.0.0.1:6379", &config(&open, None)).unwrap_err();
        assert!(open.to_string().contains("--users-file"), "{open}");
    }
}
