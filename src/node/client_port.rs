//! The client port: the TCP listener that serves the client protocol of
//! [`crate::protocol`] in front of a [`Handler`].
//!
//! It owns the sockets, the framing and the limits; the handler (a
//! [`crate::node::Node`], or a test double) owns what the ops mean. Frames
//! are length-delimited (a 4-byte big-endian length, then that many bytes of
//! CBOR), as on the node-to-node port.
//!
//! # Guarantees
//!
//! - Every request frame gets exactly one response frame with its `id`,
//!   unless the connection breaks or the port shuts down first.
//! - A frame that does not decode as a [`Request`] gets a
//!   [`ErrorCode::BadRequest`] response carrying the request's `id` when
//!   that much could be read (0 otherwise); the connection stays open,
//!   because the framing itself is intact.
//! - A frame longer than [`ClientPortConfig::max_frame_bytes`] gets one
//!   error response with id 0 and the connection is closed: its body is
//!   never read or buffered, and the stream cannot be resynchronised.
//! - Requests on one connection run concurrently, up to
//!   [`ClientPortConfig::max_in_flight_per_connection`]; responses are
//!   written as they complete, in any order. At the limit the port stops
//!   reading that connection until one finishes (TCP backpressure), so one
//!   client cannot queue unbounded work.
//! - Past [`ClientPortConfig::max_connections`], a new connection gets one
//!   [`ErrorCode::Overloaded`] response (id 0) and is closed.
//! - Nothing one client sends (garbage, oversized frames, a flood of
//!   requests) touches another client's connection: each connection is its
//!   own task, and all its failures end there.
//!
//! The port runs on whatever tokio runtime starts it: a multi-thread one,
//! or a current-thread one such as an actix `System`'s. It spawns with
//! `tokio::spawn`, so it must be started from inside a runtime.
//!
//! # Limits
//!
//! Every limit is a field of [`ClientPortConfig`], with its reason: idle,
//! partial-frame and authentication timeouts; connections per port, per
//! address and per user; budgets of bytes for large requests and for
//! replies waiting to be written. TLS is optional ([`ClientPortTls`]).
//! The port gives no op a meaning beyond `Hello`'s version check and
//! credentials; what ops do is the handler's.
//!
//! # Authentication
//!
//! With [`ClientAuth::Users`], a connection runs nothing but `Hello` until a
//! `Hello` carries a user and password of the table; every other op gets
//! [`ErrorCode::Unauthenticated`]. After that each op is checked against
//! the user's role ([`Op::required_role`]) and refused with
//! [`ErrorCode::PermissionDenied`] when the role is too low. Both refusals
//! happen before the op reaches the handler, so a refused write is
//! certainly not applied. A connection is closed after
//! `max_auth_failures` wrong `Hello`s.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::error::{Error, Result};
use crate::log::RateLimited;
use crate::net::client_tls::ClientPortTls;
use crate::node::auth::Users;
use crate::node::shares::{ByteBudget, Held, Slot, Slots, UserConnections};
use crate::protocol::{
    ErrorCode, ErrorReply, Handler, Op, Reply, ReplyHold, Request, Response, Role,
    CLIENT_PROTOCOL_VERSION,
};

/// The limits of a [`ClientPort`]. Every default is chosen so that one
/// misbehaving client cannot take more than a small, bounded share of the
/// node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPortConfig {
    /// Largest request frame accepted, in bytes. Default 16 MiB (the
    /// node-to-node limit, [`crate::config::DEFAULT_MAX_FRAME_BYTES`]): a
    /// value must fit in a replica message, so a larger client frame could
    /// never be stored anyway, and the limit caps what one read can make
    /// the node buffer. Responses are held to the same limit.
    pub max_frame_bytes: usize,
    /// Open client connections at most. Default 1024: far above what a
    /// pooled application needs, and it bounds the sockets and buffers
    /// that idle or hostile connections can hold, well below a default
    /// file descriptor limit.
    pub max_connections: usize,
    /// Requests of one connection executing at once. Default 128: enough
    /// pipelining to keep a quorum round trip's latency hidden behind
    /// throughput, while one connection can hold at most
    /// 128 × `max_frame_bytes` of request bodies.
    pub max_in_flight_per_connection: usize,
    /// How long [`ClientPort::shutdown`] lets requests in flight finish
    /// before failing them with [`ErrorCode::ShuttingDown`]. Default 5 s,
    /// the default bucket timeout: a request that has not finished by then
    /// would have timed out anyway.
    pub shutdown_grace: Duration,
    /// How long the port spends on a connection it closes for breaking a
    /// rule (over `max_connections`, a frame over `max_frame_bytes`):
    /// writing the one error frame, then reading and discarding what the
    /// client still sends (up to 1 MiB), so that closing with unread data
    /// does not reset the connection and destroy the error frame before
    /// the client reads it. Default 1 s: the frame is tiny, and a client
    /// that has not stopped sending within a second is not listening.
    pub refusal_timeout: Duration,
    /// Who may connect, and with which role. Default [`ClientAuth::Open`]
    /// for the library (an embedded cluster's port is the embedding
    /// program's own); `ringkv-node` requires users unless started with
    /// `--no-client-auth`.
    pub auth: ClientAuth,
    /// Failed `Hello`s one connection may make before it is closed.
    /// Default 3: enough for a typo, too few to guess a password on one
    /// connection.
    pub max_auth_failures: u32,
    /// Password checks running at once, for the whole port. Default 2: a
    /// check costs tens of milliseconds of CPU by design, so a flood of
    /// wrong passwords can take two threads' worth at most, and waits in
    /// line rather than starving requests.
    pub max_concurrent_auth: usize,
    /// Open connections from one IP address at most. Default 256: a
    /// quarter of `max_connections`, so one host (one misbehaving
    /// application, or one attacker) cannot take every slot, while a pooled
    /// application server still gets far more than it needs.
    pub max_connections_per_ip: usize,
    /// Open authenticated connections of one user at most. Default 512:
    /// half of `max_connections`, so that one application's pool (or one
    /// leaked password, used from many hosts) cannot take every slot and
    /// lock the other users, an admin among them, out; a `Hello` past it
    /// is refused `Overloaded` (retryable). Counted in `user_connections`,
    /// with every port that shares it.
    pub max_connections_per_user: usize,
    /// Where the connections of each user are counted
    /// ([`UserConnections`]): ports started from clones of one
    /// configuration (`ringkv-node`'s client and RESP ports) share it.
    pub user_connections: UserConnections,
    /// A connection with no request in flight that sends nothing for this
    /// long is closed. Default 10 minutes: pools keep connections open
    /// between bursts, and reconnect transparently after a close; a slot
    /// held for nothing is given back.
    pub idle_timeout: Duration,
    /// A frame whose first bytes arrived must be complete within this.
    /// Default 30 s: a 16 MiB frame takes under a second on any network a
    /// node serves; a client dribbling a frame to hold its buffer (a
    /// slowloris) is cut off.
    pub frame_timeout: Duration,
    /// On a port that requires users, a connection that has not
    /// authenticated within this is closed. Default 10 s: a client sends
    /// `Hello` first; an unauthenticated connection holds a slot and can
    /// do nothing else.
    pub auth_timeout: Duration,
    /// Bytes of replies one connection may have waiting to be written.
    /// Default 64 MiB: four of the largest values. Once it is reached the
    /// port stops reading that connection's requests; a large reply (over
    /// 64 KiB) that would go past it is replaced by an `Overloaded` error,
    /// so a client that does not read its replies costs the node this
    /// much, not a value per request in flight. After a reply over 1 MiB,
    /// the connection's requests in flight are also held to this budget
    /// divided by the largest reply it has had.
    pub reply_budget_per_connection: usize,
    /// Bytes of replies waiting to be written, over all connections.
    /// Default 512 MiB: a node serving 15 MiB values to many slow clients
    /// stays within a bounded, known amount of memory; large replies past
    /// it are refused `Overloaded` (retryable) as above.
    pub reply_budget_total: usize,
    /// Largest frame accepted from a connection that has not
    /// authenticated, on a port that requires users. Default 64 KiB: a
    /// `Hello` is a few hundred bytes, and a stranger must not make the
    /// node buffer `max_frame_bytes` per connection (100 connections each
    /// holding half of a 16 MiB frame once took 819 MB).
    pub max_frame_bytes_before_auth: usize,
    /// Bytes of large request frames (over 64 KiB) being received or
    /// executed, over all connections. Default 256 MiB: sixteen of the
    /// largest frames at once, far more than a node can store at a time,
    /// while many clients each holding part of a 16 MiB frame cannot take
    /// more than this (before, 100 connections holding half a frame took
    /// 819 MB). A frame is charged when its length arrives, before its
    /// body, and given back when its request ends; a large frame that
    /// would go past the budget is refused `Overloaded` (retryable) and its
    /// connection closed. Small frames are not charged: they are bounded
    /// by the connections and the requests in flight on each.
    pub request_budget_total: usize,
    /// TLS on the port ([`ClientPortTls`]): when set, the port speaks only
    /// TLS 1.3, and a connection must finish its handshake within
    /// `auth_timeout`. Default none (plain TCP): an embedded cluster's
    /// port serves its own process on loopback.
    pub tls: Option<ClientPortTls>,
}

/// Who may use a client port.
#[derive(Clone, Default)]
pub enum ClientAuth {
    /// No authentication: every connection may run every op (`admin`).
    #[default]
    Open,
    /// Only users of this table, each with its role; a connection runs
    /// nothing but `Hello` until it has authenticated.
    Users(Arc<Users>),
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Open => f.write_str("Open"),
            ClientAuth::Users(users) => write!(f, "{users:?}"),
        }
    }
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ClientAuth::Open, ClientAuth::Open) => true,
            (ClientAuth::Users(a), ClientAuth::Users(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ClientAuth {}

impl Default for ClientPortConfig {
    fn default() -> Self {
        ClientPortConfig {
            max_frame_bytes: crate::config::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 1024,
            max_in_flight_per_connection: 128,
            shutdown_grace: Duration::from_secs(5),
            refusal_timeout: Duration::from_secs(1),
            auth: ClientAuth::Open,
            max_auth_failures: 3,
            max_concurrent_auth: 2,
            max_connections_per_ip: 256,
            max_connections_per_user: 512,
            user_connections: UserConnections::default(),
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            reply_budget_per_connection: 64 << 20,
            reply_budget_total: 512 << 20,
            max_frame_bytes_before_auth: 64 * 1024,
            request_budget_total: 256 << 20,
            tls: None,
        }
    }
}

impl ClientPortConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        // An error response must fit, whatever the request was.
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > u32::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "client port: max_frame_bytes must be from 1024 to 2^32-1, got {}",
                self.max_frame_bytes
            )));
        }
        if self.max_connections == 0
            || self.max_in_flight_per_connection == 0
            || self.max_auth_failures == 0
            || self.max_concurrent_auth == 0
            || self.max_connections_per_ip == 0
            || self.max_connections_per_user == 0
        {
            return Err(Error::InvalidInput(
                "client port: max_connections, max_in_flight_per_connection, max_auth_failures, \
                 max_concurrent_auth, max_connections_per_ip and max_connections_per_user must \
                 be at least 1"
                    .into(),
            ));
        }
        if self.max_frame_bytes_before_auth < 1024 {
            return Err(Error::InvalidInput(
                "client port: max_frame_bytes_before_auth must be at least 1024".into(),
            ));
        }
        if self.reply_budget_per_connection < self.max_frame_bytes
            || self.reply_budget_total < self.reply_budget_per_connection
        {
            return Err(Error::InvalidInput(format!(
                "client port: reply_budget_per_connection must be at least max_frame_bytes \
                 ({}), and reply_budget_total at least reply_budget_per_connection",
                self.max_frame_bytes
            )));
        }
        if self.request_budget_total < self.max_frame_bytes {
            return Err(Error::InvalidInput(format!(
                "client port: request_budget_total must be at least max_frame_bytes ({})",
                self.max_frame_bytes
            )));
        }
        if self.idle_timeout.is_zero()
            || self.frame_timeout.is_zero()
            || self.auth_timeout.is_zero()
        {
            return Err(Error::InvalidInput(
                "client port: idle_timeout, frame_timeout and auth_timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// A running client port. Dropping it does not stop it; call
/// [`ClientPort::shutdown`].
pub struct ClientPort {
    local_addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
    queued_total: Arc<AtomicUsize>,
}

/// What every connection task shares.
struct Shared {
    handler: Arc<dyn Handler>,
    config: ClientPortConfig,
    stop: CancellationToken,
    /// Bounds the password checks running at once.
    auth_slots: Arc<Semaphore>,
    /// Open connections per source address.
    per_ip: Arc<Slots<IpAddr>>,
    /// Failed or refused authentications, logged at most every 10 s.
    auth_refusals: RateLimited,
    /// Bytes of replies queued to be written, over all connections.
    queued_total: Arc<AtomicUsize>,
    /// Bytes of large requests received or executing, over all
    /// connections.
    requests: Arc<ByteBudget>,
}

impl ClientPort {
    /// Binds `listen` (`HOST:PORT`; port 0 picks a free one) and starts
    /// accepting clients. Must be called from inside a tokio runtime.
    pub async fn start(
        listen: &str,
        handler: Arc<dyn Handler>,
        config: ClientPortConfig,
    ) -> Result<ClientPort> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::io(format!("binding the client port {listen}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the client port's address", e))?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            handler,
            auth_slots: Arc::new(Semaphore::new(config.max_concurrent_auth)),
            per_ip: Slots::new(config.max_connections_per_ip),
            auth_refusals: RateLimited::new(Duration::from_secs(10)),
            queued_total: Arc::new(AtomicUsize::new(0)),
            requests: ByteBudget::new(config.request_budget_total),
            config,
            stop: stop.clone(),
        });
        let queued_total = shared.queued_total.clone();
        tracker.spawn(accept_loop(listener, shared, tracker.clone()));
        Ok(ClientPort {
            local_addr,
            stop,
            tracker,
            queued_total,
        })
    }

    /// The address the port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bytes of replies waiting to be written, over all connections: at
    /// most `reply_budget_total` plus one small reply per request in
    /// flight.
    pub fn queued_reply_bytes(&self) -> usize {
        self.queued_total.load(Ordering::Acquire)
    }

    /// Stops accepting connections and reading requests, lets requests in
    /// flight finish for up to the grace period (failing the rest with
    /// [`ErrorCode::ShuttingDown`]), writes their responses and closes every
    /// connection. Returns when all of that is done.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
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
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: the listener itself
                // is fine, so pause briefly rather than spin.
                tracing::warn!(error = %e, "client port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = match slots.clone().try_acquire_owned() {
            Ok(permit) => match shared.per_ip.take(&peer.ip()) {
                Some(ip_slot) => Ok((permit, ip_slot)),
                None => Err(format!(
                    "too many client connections from {} (limit {} per address)",
                    peer.ip(),
                    shared.config.max_connections_per_ip
                )),
            },
            Err(_) => Err(format!(
                "too many client connections (limit {})",
                shared.config.max_connections
            )),
        };
        match admitted {
            Ok((permit, ip_slot)) => {
                let shared = shared.clone();
                let handshakes = handshakes.clone();
                tracker.spawn(async move {
                    match shared.config.tls.clone() {
                        None => {
                            let (read_half, write_half) = stream.into_split();
                            serve_connection(read_half, write_half, shared).await;
                        }
                        Some(tls) => {
                            // The handshake holds the connection's slots, so
                            // a flood of stalled handshakes is bounded as
                            // idle connections are, and ends in time.
                            let limit = shared.config.auth_timeout;
                            match tokio::time::timeout(limit, tls.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let (read_half, write_half) = tokio::io::split(stream);
                                    serve_connection(read_half, write_half, shared).await;
                                }
                                Ok(Err(e)) => handshakes.warn(|n| {
                                    tracing::warn!(%peer, failed = n, error = %e, "client port: TLS handshake failed")
                                }),
                                Err(_) => handshakes.warn(|n| {
                                    tracing::warn!(%peer, failed = n, "client port: TLS handshake not finished within {limit:?}")
                                }),
                            }
                        }
                    }
                    tracing::debug!(%peer, "client port: connection closed");
                    drop(ip_slot);
                    drop(permit);
                });
            }
            Err(why) => {
                refusals.warn(|n| tracing::warn!(%peer, refused = n, "client port: refusing a connection: {why}"));
                let refusal = ErrorReply::new(ErrorCode::Overloaded, why, true);
                let timeout = shared.config.refusal_timeout;
                tracker.spawn(async move {
                    let (read_half, write_half) = stream.into_split();
                    let mut writer = FramedWrite::new(write_half, LengthDelimitedCodec::new());
                    if let Ok(frame) = codec::encode(&error_response(0, refusal)) {
                        let _ = tokio::time::timeout(timeout, async {
                            let _ = writer.send(Bytes::from(frame)).await;
                            let _ = SinkExt::<Bytes>::close(&mut writer).await;
                        })
                        .await;
                    }
                    discard_until_closed(read_half, timeout).await;
                });
            }
        }
    }
}

fn error_response(id: u64, error: ErrorReply) -> Response {
    Response {
        id,
        result: Err(error),
    }
}

/// The error a failed op gets: the handler's error mapped, with
/// `indefinite` always set for writes (absent for reads).
pub fn error_reply_for(op_is_write: bool, error: &Error) -> ErrorReply {
    let mut reply = ErrorReply::from(error);
    if op_is_write {
        if reply.indefinite.is_none() {
            reply.indefinite = Some(!surely_not_applied(reply.code));
        }
    } else {
        reply.indefinite = None;
    }
    reply
}

/// Codes whose failure is decided before a write reaches any replica.
fn surely_not_applied(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::UnsupportedVersion
            | ErrorCode::InvalidArgument
            | ErrorCode::TooManySiblings
            | ErrorCode::Overloaded
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
    )
}

/// Reads just `id` from a frame that did not decode as a [`Request`].
fn salvage_id(frame: &[u8], max: usize) -> u64 {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: u64,
    }
    codec::decode::<IdOnly>(frame, max).map_or(0, |r| r.id)
}

/// What a request's task ends with: the response, and the read budget its
/// answer holds until the response is encoded.
type Finished = (Response, ReplyHold);

/// Where a request still running stands: its id, and whether it writes.
type Running = HashMap<tokio::task::Id, (u64, bool)>;

async fn serve_connection<R, W>(read_half: R, write_half: W, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = shared.config.max_frame_bytes;
    let limit = shared.config.max_in_flight_per_connection;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec();
    let mut reader = FramedRead::new(
        read_half,
        BudgetedCodec::new(codec.clone(), shared.requests.clone()),
    );
    let mut writer = Replies::start(FramedWrite::new(write_half, codec), &shared);
    let mut tasks: JoinSet<Finished> = JoinSet::new();
    let mut running: Running = HashMap::new();
    let mut broke_framing = false;
    let mut auth = ConnAuth {
        role: match shared.config.auth {
            ClientAuth::Open => Some(Role::Admin),
            ClientAuth::Users(_) => None,
        },
        failures: 0,
        slot: None,
    };

    // The deadlines that close a connection which holds a slot for
    // nothing: idle, a frame left half-sent, no authentication.
    let opened = tokio::time::Instant::now();
    let mut last_frame = opened;
    let mut partial_since: Option<tokio::time::Instant> = None;
    let must_auth = matches!(shared.config.auth, ClientAuth::Users(_));
    let before_auth = shared.config.max_frame_bytes_before_auth.min(max);
    if must_auth {
        reader.decoder_mut().set_max_frame_length(before_auth);
    }

    // Reading phase: until the client hangs up, breaks the framing, or the
    // port shuts down.
    loop {
        let can_read = tasks.len() < writer.in_flight_limit(limit) && !writer.over_budget();
        let now = tokio::time::Instant::now();
        // A partial frame is one whose first bytes are buffered; its clock
        // starts when they are first seen.
        if reader.read_buffer().is_empty() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(now);
        }
        let mut deadline = None::<(tokio::time::Instant, &str)>;
        let mut consider = |at: tokio::time::Instant, why: &'static str| {
            if deadline.is_none_or(|(d, _)| at < d) {
                deadline = Some((at, why));
            }
        };
        if let Some(since) = partial_since {
            consider(
                since + shared.config.frame_timeout,
                "a frame was not completed in time",
            );
        } else if tasks.is_empty() {
            consider(last_frame + shared.config.idle_timeout, "idle");
        }
        if must_auth && auth.role.is_none() {
            consider(
                opened + shared.config.auth_timeout,
                "no authentication in time",
            );
        }
        // Bytes of a new frame arrive while this task waits below, unseen
        // until it wakes: waking at least every half frame timeout bounds
        // how long a frame may dribble to 1.5 times the timeout.
        consider(now + shared.config.frame_timeout / 2, "check");
        let (deadline, why) = deadline.unwrap_or((now + shared.config.idle_timeout, "idle"));
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            _ = writer.drained(), if writer.over_budget() => {}
            _ = tokio::time::sleep_until(deadline) => {
                // Re-checked at the top of the loop if something changed;
                // here the deadline passed with its condition still true.
                let still = match why {
                    "check" => false,
                    "idle" => tasks.is_empty() && reader.read_buffer().is_empty(),
                    "no authentication in time" => auth.role.is_none(),
                    _ => !reader.read_buffer().is_empty(),
                };
                if still {
                    if why == "no authentication in time" {
                        let reply = ErrorReply::new(
                            ErrorCode::Unauthenticated,
                            format!(
                                "no Hello with credentials within {:?}; closing the connection",
                                shared.config.auth_timeout
                            ),
                            false,
                        );
                        let _ = writer.send(error_response(0, reply), max);
                    }
                    tracing::debug!(why, "client port: closing a connection");
                    broke_framing = why != "idle";
                    break;
                }
            }
            done = tasks.join_next_with_id(), if !tasks.is_empty() => {
                // The answer's read budget is held until its frame is
                // encoded, from where the reply budget counts it.
                let (response, hold) = finished(done, &mut running);
                let sent = writer.send(response, max);
                drop(hold);
                if sent.is_err() {
                    return;
                }
            }
            frame = reader.next(), if can_read => match frame {
                None => break,
                Some(Ok((frame, held))) => {
                    last_frame = tokio::time::Instant::now();
                    partial_since = None;
                    let answer = start_request(&frame, held, &shared, &mut auth, &mut tasks, &mut running).await;
                    if must_auth {
                        let allowed = if auth.role.is_some() { max } else { before_auth };
                        reader.decoder_mut().set_max_frame_length(allowed);
                    }
                    if let Some(response) = answer {
                        if writer.send(response, max).is_err() {
                            return;
                        }
                    }
                    if auth.failures >= shared.config.max_auth_failures {
                        tracing::warn!(failures = auth.failures, "client port: closing a connection after failed authentication");
                        broke_framing = true;
                        break;
                    }
                }
                Some(Err(e)) if e.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) => {
                    let reply = ErrorReply::new(ErrorCode::Overloaded, e.to_string(), true);
                    let _ = writer.send(error_response(0, reply), max);
                    broke_framing = true;
                    break;
                }
                Some(Err(e)) => {
                    let oversized = e
                        .get_ref()
                        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>());
                    if oversized {
                        let limit = reader.decoder().max_frame_length();
                        let reply = ErrorReply::new(
                            ErrorCode::BadRequest,
                            format!(
                                "frame longer than the limit of {limit} bytes{}; closing the connection",
                                if limit < max { " before authentication" } else { "" }
                            ),
                            false,
                        );
                        let _ = writer.send(error_response(0, reply), max);
                        broke_framing = true;
                    }
                    break;
                }
            },
        }
    }

    // Draining phase: no more requests are read; those in flight finish,
    // within the grace period when the port is shutting down.
    let grace = tokio::time::sleep(shared.config.shutdown_grace);
    tokio::pin!(grace);
    let mut grace_armed = shared.stop.is_cancelled();
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next_with_id() => {
                // The answer's read budget is held until its frame is
                // encoded, from where the reply budget counts it.
                let (response, hold) = finished(done, &mut running);
                let sent = writer.send(response, max);
                drop(hold);
                if sent.is_err() {
                    return;
                }
            }
            _ = shared.stop.cancelled(), if !grace_armed => {
                grace.as_mut().reset(tokio::time::Instant::now() + shared.config.shutdown_grace);
                grace_armed = true;
            }
            _ = &mut grace, if grace_armed => {
                tasks.abort_all();
                for (_, (id, is_write)) in running.drain() {
                    let mut reply = ErrorReply::new(
                        ErrorCode::ShuttingDown,
                        "the node shut down before the request finished",
                        true,
                    );
                    if is_write {
                        reply.indefinite = Some(true);
                    }
                    if writer.send(error_response(id, reply), max).is_err() {
                        return;
                    }
                }
                break;
            }
        }
    }
    writer.finish().await;
    if broke_framing {
        discard_until_closed(reader.into_inner(), shared.config.refusal_timeout).await;
    }
}

/// After this side's write half is shut down: reads and drops what the
/// client still sends, until it closes too, 1 MiB has been dropped, or
/// `limit` passes. Closing a socket with unread data makes the kernel
/// reset the connection, which can destroy the error frame just written
/// before the client reads it.
pub(crate) async fn discard_until_closed<R: tokio::io::AsyncRead + Unpin>(
    mut read: R,
    limit: Duration,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut left: usize = 1 << 20;
    let _ = tokio::time::timeout(limit, async {
        while left > 0 {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Where one connection stands with authentication.
struct ConnAuth {
    /// What the connection may do; `None` until it authenticates.
    role: Option<Role>,
    /// `Hello`s with wrong credentials so far.
    failures: u32,
    /// The user's share of the port, once authenticated.
    slot: Option<Slot<String>>,
}

/// Runs the credentials of a `Hello` on a port with users: sets the
/// connection's role, or counts a failure and returns the error to answer.
async fn authenticate(
    users: &Arc<Users>,
    shared: &Arc<Shared>,
    auth: &mut ConnAuth,
    user: Option<String>,
    password: Option<String>,
) -> std::result::Result<(), ErrorReply> {
    let (Some(user), Some(password)) = (user, password) else {
        auth.failures += 1;
        return Err(ErrorReply::new(
            ErrorCode::Unauthenticated,
            "Hello needs both user and password, or neither",
            false,
        ));
    };
    // Bounded: a flood of guesses waits here instead of taking every core.
    let Ok(_slot) = shared.auth_slots.clone().acquire_owned().await else {
        return Err(ErrorReply::new(
            ErrorCode::ShuttingDown,
            "shutting down",
            true,
        ));
    };
    let users = users.clone();
    let name = user.clone();
    let checked = tokio::task::spawn_blocking(move || users.verify(&name, &password)).await;
    match checked {
        Ok(Some(role)) => {
            // A connection that authenticates again as the same user keeps
            // its place; as another, it moves to that user's share.
            if auth.slot.as_ref().is_none_or(|s| s.key() != &user) {
                let config = &shared.config;
                let taken = config
                    .user_connections
                    .take(&user, config.max_connections_per_user);
                let Some(slot) = taken else {
                    shared.auth_refusals.warn(|n| {
                        tracing::warn!(%user, refused = n, "client port: refusing a connection over the user's share")
                    });
                    return Err(ErrorReply::new(
                        ErrorCode::Overloaded,
                        format!(
                            "user {user} has {} connections open already, the most this node \
                             allows one user; close some, or retry later",
                            shared.config.max_connections_per_user
                        ),
                        true,
                    ));
                };
                auth.slot = Some(slot);
            }
            tracing::debug!(%user, %role, "client port: authenticated");
            auth.role = Some(role);
            Ok(())
        }
        Ok(None) => {
            auth.failures += 1;
            shared
                .auth_refusals
                .warn(|n| tracing::warn!(%user, refused = n, "client port: authentication failed"));
            Err(ErrorReply::new(
                ErrorCode::Unauthenticated,
                "unknown user or wrong password",
                false,
            ))
        }
        Err(e) => Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("checking the password failed: {e}"),
            false,
        )),
    }
}

/// Decodes one frame and either spawns its op or answers it at once.
async fn start_request(
    frame: &[u8],
    held: Option<Held>,
    shared: &Arc<Shared>,
    auth: &mut ConnAuth,
    tasks: &mut JoinSet<Finished>,
    running: &mut Running,
) -> Option<Response> {
    let max = shared.config.max_frame_bytes;
    let request: Request = match codec::decode(frame, max) {
        Ok(r) => r,
        Err(e) => {
            let id = salvage_id(frame, max);
            let reply = ErrorReply::new(ErrorCode::BadRequest, e.to_string(), false);
            return Some(error_response(id, reply));
        }
    };
    let id = request.id;
    if let Op::Hello { version, .. } = &request.op {
        if *version != CLIENT_PROTOCOL_VERSION {
            let reply = ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "client protocol version {version} is not supported; this node speaks {CLIENT_PROTOCOL_VERSION}"
                ),
                false,
            );
            return Some(error_response(id, reply));
        }
    }
    let is_write = request.op.is_write();
    let mut op = request.op;
    if let Op::Hello { user, password, .. } = &mut op {
        let (user, password) = (user.take(), password.take());
        if user.is_some() || password.is_some() {
            if let ClientAuth::Users(users) = &shared.config.auth {
                if let Err(reply) = authenticate(users, shared, auth, user, password).await {
                    return Some(error_response(id, reply));
                }
            }
        }
    } else if let Some(needed) = op.required_role() {
        let refusal = match auth.role {
            None => Some(ErrorReply::new(
                ErrorCode::Unauthenticated,
                "this node requires authentication: send Hello with user and password first",
                false,
            )),
            Some(role) if role < needed => Some(ErrorReply::new(
                ErrorCode::PermissionDenied,
                format!("role {role} may not run {}; it needs {needed}", op.name()),
                false,
            )),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            return Some(error_response(
                id,
                error_reply_for(is_write, &Error::Remote(reply)),
            ));
        }
    }
    let role = auth.role;
    let future = shared.handler.execute_held(op);
    let handle = tasks.spawn(async move {
        // The frame's share of the request budget, until the request ends.
        let _held = held;
        let (mut result, hold) = match future.await {
            Ok((reply, hold)) => (Ok(reply), hold),
            Err(e) => (Err(error_reply_for(is_write, &e)), ReplyHold::default()),
        };
        if let Ok(Reply::Hello { role: r, .. }) = &mut result {
            *r = role;
        }
        (Response { id, result }, hold)
    });
    running.insert(handle.id(), (id, is_write));
    None
}

/// The response of a finished task; a panicked handler becomes an
/// `Internal` error for that request alone.
fn finished(
    done: Option<std::result::Result<(tokio::task::Id, Finished), tokio::task::JoinError>>,
    running: &mut Running,
) -> (Response, ReplyHold) {
    let response = match done {
        Some(Ok((task, finished))) => {
            running.remove(&task);
            return finished;
        }
        Some(Err(e)) => {
            let (id, is_write) = running.remove(&e.id()).unwrap_or((0, false));
            let mut reply = ErrorReply::new(
                ErrorCode::Internal,
                "the request failed inside the node",
                false,
            );
            if is_write {
                reply.indefinite = Some(true);
            }
            tracing::error!(id, error = %e, "client port: request task failed");
            error_response(id, reply)
        }
        // Only called when the set is not empty.
        None => error_response(
            0,
            ErrorReply::new(ErrorCode::Internal, "no request finished", false),
        ),
    };
    (response, ReplyHold::default())
}

/// Frames larger than this are charged to `request_budget_total`.
const LARGE_REQUEST_BYTES: usize = 64 * 1024;

/// Why a connection was closed: its next frame would have gone past the
/// port's request budget.
#[derive(Debug)]
struct OverBudget {
    bytes: usize,
    limit: usize,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the node is receiving or running {} MiB of large requests already; a {} byte \
             request would go past that; closing the connection (retry later)",
            self.limit >> 20,
            self.bytes
        )
    }
}

impl std::error::Error for OverBudget {}

/// The port's framing ([`LengthDelimitedCodec`]) with each large frame
/// charged to the request budget as soon as its length is read, before the
/// codec makes room for its body.
struct BudgetedCodec {
    inner: LengthDelimitedCodec,
    budget: Arc<ByteBudget>,
    /// Whether the current frame's length has been read.
    in_frame: bool,
    held: Option<Held>,
}

impl BudgetedCodec {
    fn new(inner: LengthDelimitedCodec, budget: Arc<ByteBudget>) -> BudgetedCodec {
        BudgetedCodec {
            inner,
            budget,
            in_frame: false,
            held: None,
        }
    }

    fn max_frame_length(&self) -> usize {
        self.inner.max_frame_length()
    }

    fn set_max_frame_length(&mut self, max: usize) {
        self.inner.set_max_frame_length(max);
    }
}

impl tokio_util::codec::Decoder for BudgetedCodec {
    type Item = (bytes::BytesMut, Option<Held>);
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> std::io::Result<Option<Self::Item>> {
        if !self.in_frame && src.len() >= 4 {
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            // Frames over the limit are the codec's to refuse.
            if len > LARGE_REQUEST_BYTES && len <= self.inner.max_frame_length() {
                match self.budget.take(len) {
                    Some(held) => self.held = Some(held),
                    None => {
                        return Err(std::io::Error::other(OverBudget {
                            bytes: len,
                            limit: self.budget.limit(),
                        }))
                    }
                }
            }
            self.in_frame = true;
        }
        match self.inner.decode(src)? {
            Some(frame) => {
                self.in_frame = false;
                Ok(Some((frame, self.held.take())))
            }
            None => Ok(None),
        }
    }
}

/// A connection's replies on their way out: a writer task takes encoded
/// frames from a queue, and the queue is bounded in bytes per connection
/// and for the whole port (see `reply_budget_per_connection`).
struct Replies {
    queue: Option<mpsc::UnboundedSender<Bytes>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// Bytes queued on this connection, not yet written.
    queued: Arc<AtomicUsize>,
    /// Woken each time the writer finishes a frame.
    written: Arc<tokio::sync::Notify>,
    total: Arc<AtomicUsize>,
    budget: usize,
    budget_total: usize,
    /// The largest reply this connection has had.
    largest: usize,
    /// Requests this connection may have in flight now: starts at
    /// [`INITIAL_WINDOW`] and grows by one per small reply, as TCP's slow
    /// start does, so a new connection cannot have many large requests
    /// running before the port has seen how large its replies are.
    window: usize,
}

/// The requests a new connection may have in flight before any reply.
const INITIAL_WINDOW: usize = 4;

/// Replies up to this size are always queued: they are bounded by the
/// requests in flight, and an error in their place would be about as
/// large.
const SMALL_REPLY_BYTES: usize = 64 * 1024;

impl Replies {
    fn start<W: AsyncWrite + Unpin + Send + 'static>(
        mut sink: FramedWrite<W, LengthDelimitedCodec>,
        shared: &Shared,
    ) -> Replies {
        let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let queued = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(tokio::sync::Notify::new());
        let total = shared.queued_total.clone();
        let writer = tokio::spawn({
            let (queued, written, total) = (queued.clone(), written.clone(), total.clone());
            async move {
                let mut broken = false;
                while let Some(frame) = rx.recv().await {
                    let len = frame.len();
                    if !broken && sink.send(frame).await.is_err() {
                        // The client is gone: what is queued is dropped,
                        // and still counted out.
                        broken = true;
                    }
                    queued.fetch_sub(len, Ordering::AcqRel);
                    total.fetch_sub(len, Ordering::AcqRel);
                    written.notify_one();
                }
                if !broken {
                    let _ = SinkExt::<Bytes>::close(&mut sink).await;
                }
            }
        });
        Replies {
            queue: Some(tx),
            writer: Some(writer),
            queued,
            written,
            total,
            budget: shared.config.reply_budget_per_connection,
            budget_total: shared.config.reply_budget_total,
            largest: 0,
            window: INITIAL_WINDOW,
        }
    }

    /// Whether this connection's budget is full: read no more of its
    /// requests until the client takes some replies.
    fn over_budget(&self) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        // Once replies are large, stop while another like the largest
        // would not fit: reading on would only run requests whose replies
        // are then dropped.
        queued >= self.budget
            || (self.largest > SMALL_REPLY_BYTES && queued + self.largest > self.budget)
    }

    /// Resolves when the writer has written a frame.
    async fn drained(&self) {
        self.written.notified().await;
    }

    /// The requests this connection may have in flight: its window, at
    /// most `limit`, and fewer once it has had replies so large that more
    /// of them would pass its budget.
    fn in_flight_limit(&self, limit: usize) -> usize {
        let limit = limit.min(self.window);
        if self.largest > 1 << 20 {
            limit.min((self.budget / self.largest).max(1))
        } else {
            limit
        }
    }

    /// Encodes and queues one response. A reply too large for a frame is
    /// replaced by an error for the same id, and a large reply past the
    /// budgets by `Overloaded`, so the client is never left waiting. Fails
    /// only when the connection's writer has ended.
    fn send(&mut self, response: Response, max: usize) -> Result<()> {
        let id = response.id;
        // A reply that cannot fit is refused before it is encoded: encoding
        // 15 MiB only to drop it would spend the CPU the budget saves.
        let values = match &response.result {
            Ok(Reply::Object {
                value, siblings, ..
            }) => {
                value.as_ref().map_or(0, |v| v.len())
                    + siblings
                        .iter()
                        .map(|s| s.value.as_ref().map_or(0, |v| v.len()))
                        .sum::<usize>()
            }
            _ => 0,
        };
        if values > SMALL_REPLY_BYTES && !self.fits(values) {
            self.largest = self.largest.max(values);
            let refusal = self.refusal(id, values);
            return self.queue_frame(codec::encode_frame(&refusal, max)?);
        }
        let mut frame = match codec::encode_frame(&response, max) {
            Ok(frame) => frame,
            Err(e) => {
                let reply = ErrorReply::new(
                    ErrorCode::Internal,
                    format!("the reply could not be sent: {e}"),
                    false,
                );
                codec::encode_frame(&error_response(id, reply), max)?
            }
        };
        drop(response);
        self.largest = self.largest.max(frame.len());
        if frame.len() <= SMALL_REPLY_BYTES {
            self.window = self.window.saturating_add(1);
        }
        if frame.len() > SMALL_REPLY_BYTES && !self.fits(frame.len()) {
            frame = codec::encode_frame(&self.refusal(id, frame.len()), max)?;
        }
        self.queue_frame(frame)
    }

    /// Whether `len` more bytes fit in both budgets.
    fn fits(&self, len: usize) -> bool {
        self.queued.load(Ordering::Acquire) + len <= self.budget
            && self.total.load(Ordering::Acquire) + len <= self.budget_total
    }

    /// The `Overloaded` error that replaces a reply of `len` bytes.
    fn refusal(&self, id: u64, len: usize) -> Response {
        let queued = self.queued.load(Ordering::Acquire);
        let total = self.total.load(Ordering::Acquire);
        let reply = ErrorReply::new(
            ErrorCode::Overloaded,
            format!(
                "a reply of {len} bytes was dropped: {queued} bytes of replies wait for this \
                 connection to read them ({total} for the node); read replies before sending \
                 more requests"
            ),
            true,
        );
        error_response(id, reply)
    }

    /// Queues an encoded frame for the writer.
    fn queue_frame(&mut self, frame: Bytes) -> Result<()> {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.total.fetch_add(len, Ordering::AcqRel);
        let sent = self.queue.as_ref().map(|q| q.send(frame));
        if let Some(Ok(())) = sent {
            return Ok(());
        }
        self.queued.fetch_sub(len, Ordering::AcqRel);
        self.total.fetch_sub(len, Ordering::AcqRel);
        Err(Error::io(
            "writing a client response",
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the connection is closed"),
        ))
    }

    /// Writes what is queued, then closes the write side.
    async fn finish(mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_always_say_whether_they_may_have_happened() {
        let bad = Error::InvalidInput("x".into());
        assert_eq!(error_reply_for(true, &bad).indefinite, Some(false));
        assert_eq!(error_reply_for(false, &bad).indefinite, None);
        let timeout = Error::Timeout {
            operation: "put",
            after: Duration::from_secs(1),
        };
        assert_eq!(error_reply_for(true, &timeout).indefinite, Some(true));
        let definite = Error::Unavailable {
            needed: 2,
            got: 1,
            indefinite: false,
        };
        assert_eq!(error_reply_for(true, &definite).indefinite, Some(false));
    }

    #[test]
    fn the_id_is_salvaged_from_a_request_with_an_unknown_op() {
        #[derive(serde::Serialize)]
        struct Odd {
            id: u64,
            op: &'static str,
        }
        let frame = codec::encode(&Odd { id: 77, op: "Fly" }).unwrap();
        assert!(codec::decode::<Request>(&frame, 1024).is_err());
        assert_eq!(salvage_id(&frame, 1024), 77);
        assert_eq!(salvage_id(&[0xff, 0x00], 1024), 0);
    }

    #[test]
    fn large_frames_are_charged_when_their_length_arrives_and_refused_past_the_budget() {
        use bytes::{BufMut, BytesMut};
        use tokio_util::codec::Decoder;
        let budget = ByteBudget::new(200 << 10);
        let codec = || {
            let inner = LengthDelimitedCodec::builder()
                .max_frame_length(1 << 20)
                .new_codec();
            BudgetedCodec::new(inner, budget.clone())
        };
        let used = || budget.used();
        // A 100 KiB frame: charged on its length alone.
        let (mut a, mut a_buf) = (codec(), BytesMut::new());
        a_buf.put_u32(100 << 10);
        a_buf.put_slice(&[7u8; 10]);
        assert!(a.decode(&mut a_buf).unwrap().is_none());
        assert_eq!(used(), 100 << 10);
        // A 150 KiB frame on another connection would go past 200 KiB.
        let (mut b, mut b_buf) = (codec(), BytesMut::new());
        b_buf.put_u32(150 << 10);
        let err = b.decode(&mut b_buf).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<OverBudget>()), "{err}");
        assert!(err.to_string().contains("retry later"), "{err}");
        // Small frames are not charged, and a small frame's body that
        // looks like a large length is not read as one.
        let (mut c, mut c_buf) = (codec(), BytesMut::new());
        c_buf.put_u32(8);
        assert!(c.decode(&mut c_buf).unwrap().is_none());
        c_buf.put_u32(150 << 10);
        c_buf.put_u32(1);
        let (frame, held) = c.decode(&mut c_buf).unwrap().unwrap();
        assert_eq!(frame.len(), 8);
        assert!(held.is_none());
        assert_eq!(used(), 100 << 10);
        // The large frame completes with its share, given back on drop.
        a_buf.put_slice(&vec![7u8; (100 << 10) - 10]);
        let (frame, held) = a.decode(&mut a_buf).unwrap().unwrap();
        assert_eq!(frame.len(), 100 << 10);
        assert_eq!(used(), 100 << 10);
        drop(held);
        assert_eq!(used(), 0);
        // A connection dropped mid-frame gives its share back too.
        let (mut d, mut d_buf) = (codec(), BytesMut::new());
        d_buf.put_u32(150 << 10);
        assert!(d.decode(&mut d_buf).unwrap().is_none());
        assert_eq!(used(), 150 << 10);
        drop(d);
        assert_eq!(used(), 0);
    }

    #[test]
    fn config_limits_are_checked() {
        assert!(ClientPortConfig::default().validate().is_ok());
        let zero = ClientPortConfig {
            max_connections: 0,
            ..ClientPortConfig::default()
        };
        assert!(zero.validate().is_err());
        let tiny = ClientPortConfig {
            max_frame_bytes: 10,
            ..ClientPortConfig::default()
        };
        assert!(tiny.validate().is_err());
    }
}
