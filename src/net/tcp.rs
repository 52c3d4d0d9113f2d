//! The TCP transport: authenticated, length-delimited CBOR frames between
//! nodes, one connection per pair of nodes.
//!
//! # Shape
//!
//! A [`TcpTransport`] owns a listener and, for every peer it knows, a *link*:
//! a task that owns the peer's bounded send queue and at most one
//! connection. Each connection has a reader task that decodes frames and
//! hands envelopes to the node's [`Inbox`]. Frames are a 4-byte big-endian
//! length and a CBOR body ([`super::frame_codec`]), from `tokio-util`'s
//! length-delimited codec.
//!
//! Links connect lazily: the first envelope queued for a peer makes its link
//! dial, and a failed dial is retried with exponential backoff and full
//! jitter (`TcpConfig::backoff_min` to `backoff_max`) for as long as
//! something waits to be sent. A connection accepted from a peer becomes
//! that peer's link connection, and carries traffic both ways.
//!
//! # One connection per pair
//!
//! Two nodes can dial each other at the same moment. The acceptor settles it
//! during the handshake, before any envelope is sent on either connection,
//! under the peer's link lock:
//! - if its own link to that peer is idle, it accepts;
//! - if its link is dialing, the connection dialed by the lower node id
//!   wins: the higher node accepts and abandons its own dial, the lower one
//!   refuses with `SimultaneousConnect` (and its own dial is accepted by the
//!   other side);
//! - if its link is up, it accepts only from a new incarnation of the peer
//!   (the peer restarted, so the old connection is dead) and otherwise
//!   refuses with `AlreadyConnected`: the dialer retries after a backoff, by
//!   when the old connection's close has been seen.
//!
//! # Limits and policies
//!
//! - Send queues hold `send_queue_frames` frames per peer; when full, `send`
//!   refuses the newest envelope with `QueueFull`. Frames wait in the queue
//!   while the peer is unreachable.
//! - A received frame longer than `max_frame_bytes` closes that connection
//!   (the length prefix is checked before anything is buffered), and is
//!   counted in `oversized_frames`; other connections are unaffected. A
//!   frame that does not decode, or whose `from` or `to` is not this
//!   connection's pair of nodes, is dropped and counted in `bad_frames`.
//! - At most `max_pending_handshakes` handshakes run at once; each must
//!   finish within `handshake_timeout` and uses frames of at most
//!   [`HANDSHAKE_MAX_FRAME_BYTES`].
//! - Shutdown stops the listener, writes what is queued for `shutdown_grace`,
//!   closes every connection and waits for every task. Dropping the last
//!   handle does the same without the wait.
//!
//! # What it does not do
//!
//! It does not encrypt traffic or authenticate frames after the handshake
//! (see [`super::handshake`]), and it does not retransmit: a frame written to
//! a connection that then breaks may be lost (counted in `frames_lost`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::{Framed, FramedParts, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::handshake::{self, Identity, PeerInfo};
use super::{frame_codec, Inbox, NetStats, StatCounters, Transport};
use crate::codec;
use crate::config::{TcpConfig, HANDSHAKE_MAX_FRAME_BYTES};
use crate::error::{Error, Result};
use crate::message::{Envelope, NodeId, Refusal};

/// Frames written to a socket before one flush.
const WRITE_BATCH: usize = 256;

/// A TCP transport endpoint for one node. Cheap to clone; every clone is a
/// handle to the same endpoint.
#[derive(Clone)]
pub struct TcpTransport {
    shared: Arc<Shared>,
    /// Cancels every task when the last handle goes away.
    _stop_on_drop: Arc<DropGuard>,
}

struct Shared {
    config: TcpConfig,
    identity: Identity,
    local_addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    inbox: mpsc::Sender<Envelope>,
    stats: StatCounters,
    stop: CancellationToken,
    tasks: TaskTracker,
    next_gen: AtomicU64,
    /// Peers cut off by an injected partition: frames to and from them are
    /// dropped.
    blocked: Mutex<HashSet<NodeId>>,
}

/// What the endpoint knows about one peer; its link task owns the rest.
struct Peer {
    id: NodeId,
    addr: Mutex<String>,
    queue: mpsc::Sender<Bytes>,
    events: mpsc::UnboundedSender<LinkEvent>,
    state: Mutex<LinkState>,
}

/// The link's connection state, shared with the acceptor so that it can
/// settle simultaneous connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Idle,
    Dialing,
    Up { gen: u64, incarnation: u64 },
}

enum LinkEvent {
    /// The acceptor admitted a connection from this peer.
    Inbound { conn: Box<Connection>, gen: u64 },
    /// Connection `gen` is gone (or never got going).
    Closed { gen: u64 },
}

/// An authenticated connection, split so that reading and writing proceed
/// independently. Dropping the writer sends FIN.
struct Connection {
    reader: Framed<OwnedReadHalf, LengthDelimitedCodec>,
    writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

/// The connection a link is writing to.
struct Active {
    gen: u64,
    writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    reader: AbortHandle,
}

impl TcpTransport {
    /// Binds the listener and starts the endpoint. Must be called inside a
    /// tokio runtime; the endpoint's tasks run on that runtime.
    ///
    /// Returns the endpoint and the inbox of envelopes addressed to it.
    pub async fn bind(config: TcpConfig) -> Result<(TcpTransport, Inbox)> {
        config.validate()?;
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::io(format!("binding {}", config.listen), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))?;
        let advertise = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let identity = Identity::new(
            config.node,
            config.cluster.clone(),
            config.secret.clone(),
            advertise,
        );
        let (inbox_tx, inbox_rx) = mpsc::channel(config.net.inbox_frames);
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            identity,
            local_addr,
            runtime: tokio::runtime::Handle::current(),
            peers: Mutex::new(HashMap::new()),
            inbox: inbox_tx,
            stats: StatCounters::default(),
            stop: stop.clone(),
            tasks: TaskTracker::new(),
            next_gen: AtomicU64::new(1),
            blocked: Mutex::new(HashSet::new()),
        });
        info!(
            node = %shared.config.node,
            addr = %local_addr,
            cluster = %shared.config.cluster,
            "listening for peers"
        );
        shared.spawn(run_listener(shared.clone(), listener));
        let transport = TcpTransport {
            shared,
            _stop_on_drop: Arc::new(stop.drop_guard()),
        };
        Ok((transport, inbox_rx))
    }

    /// Injects a partition: from now on, frames to and from `peers` are
    /// dropped silently in both directions (counted in
    /// [`NetStats::frames_blocked`]), replacing any earlier set; an empty
    /// set heals. Connections stay up, as they do through a real partition
    /// until TCP gives up, so healing is immediate. For tests and for the
    /// shell's fault injection on TCP clusters; a node in production never
    /// calls it.
    pub fn set_blocked(&self, peers: impl IntoIterator<Item = NodeId>) {
        *lock(&self.shared.blocked) = peers.into_iter().collect();
    }

    /// The peers currently cut off by [`TcpTransport::set_blocked`].
    pub fn blocked(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = lock(&self.shared.blocked).iter().copied().collect();
        v.sort();
        v
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The address this node tells peers to dial.
    pub fn advertised_addr(&self) -> &str {
        &self.shared.identity.listen
    }

    /// The peers this endpoint knows, with the address it would dial.
    pub fn peers(&self) -> Vec<(NodeId, String)> {
        let peers = lock(&self.shared.peers);
        let mut out: Vec<_> = peers.values().map(|p| (p.id, p.addr())).collect();
        out.sort();
        out
    }

    /// Whether the link to `node` currently has an open connection.
    pub fn is_connected(&self, node: NodeId) -> bool {
        lock(&self.shared.peers)
            .get(&node)
            .is_some_and(|p| matches!(*lock(&p.state), LinkState::Up { .. }))
    }
}

impl Transport for TcpTransport {
    fn local_id(&self) -> NodeId {
        self.shared.config.node
    }

    fn send(&self, envelope: Envelope) -> Result<()> {
        let s = &self.shared;
        if s.stop.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let me = s.config.node;
        if envelope.from != me {
            return Err(Error::InvalidInput(format!(
                "envelope from {} cannot be sent by node {me}",
                envelope.from
            )));
        }
        let max = s.config.net.max_frame_bytes;
        if envelope.to == me {
            return s.deliver_to_self(&codec::encode_frame(&envelope, max)?);
        }
        if s.is_blocked(envelope.to) {
            // A partitioned network loses the frame without telling the
            // sender: so does the injected one.
            StatCounters::add(&s.stats.frames_blocked, 1);
            return Ok(());
        }
        let peer = lock(&s.peers)
            .get(&envelope.to)
            .cloned()
            .ok_or(Error::UnknownPeer(envelope.to))?;
        // Reserve the queue slot first, so that a full queue costs no
        // encoding: a sender retrying on `QueueFull` only pays for the
        // envelopes that go out.
        let slot = match peer.queue.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Full(())) => {
                StatCounters::add(&s.stats.refused_queue_full, 1);
                return Err(Error::QueueFull {
                    peer: envelope.to,
                    capacity: s.config.net.send_queue_frames,
                });
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Error::Shutdown),
        };
        // On an encoding error the slot is released when it is dropped.
        slot.send(codec::encode_frame(&envelope, max)?);
        Ok(())
    }

    fn learn_peer(&self, node: NodeId, addr: &str) -> Result<()> {
        if addr.trim().is_empty() {
            return Err(Error::InvalidInput(format!("empty address for {node}")));
        }
        if self.shared.stop.is_cancelled() {
            return Err(Error::Shutdown);
        }
        if node != self.shared.config.node {
            self.shared.ensure_peer(node, addr);
        }
        Ok(())
    }

    fn stats(&self) -> NetStats {
        self.shared.stats.snapshot()
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.stop.cancel();
            shared.tasks.close();
            shared.tasks.wait().await;
            debug!(node = %shared.config.node, "transport shut down");
        })
    }
}

impl Peer {
    fn addr(&self) -> String {
        lock(&self.addr).clone()
    }
}

impl Shared {
    fn is_blocked(&self, peer: NodeId) -> bool {
        let blocked = lock(&self.blocked);
        !blocked.is_empty() && blocked.contains(&peer)
    }

    fn spawn<F>(&self, task: F) -> AbortHandle
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, &self.runtime).abort_handle()
    }

    fn next_gen(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::Relaxed)
    }

    /// Envelopes to self go through the codec like any other, then straight
    /// to the inbox.
    fn deliver_to_self(&self, frame: &[u8]) -> Result<()> {
        let envelope = codec::decode::<Envelope>(frame, self.config.net.max_frame_bytes)?;
        match self.inbox.try_send(envelope) {
            Ok(()) => {
                StatCounters::add(&self.stats.frames_received, 1);
                StatCounters::add(&self.stats.bytes_received, frame.len() as u64);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                StatCounters::add(&self.stats.refused_queue_full, 1);
                Err(Error::QueueFull {
                    peer: self.config.node,
                    capacity: self.config.net.inbox_frames,
                })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Shutdown),
        }
    }

    /// The peer's entry, created (with its link task) if new; the address
    /// is updated to `addr` either way.
    fn ensure_peer(self: &Arc<Self>, node: NodeId, addr: &str) -> Arc<Peer> {
        let mut peers = lock(&self.peers);
        if let Some(peer) = peers.get(&node) {
            let mut known = lock(&peer.addr);
            if *known != addr {
                debug!(peer = %node, old = %known, new = %addr, "peer address changed");
                *known = addr.to_string();
            }
            return peer.clone();
        }
        let (queue_tx, queue_rx) = mpsc::channel(self.config.net.send_queue_frames);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let peer = Arc::new(Peer {
            id: node,
            addr: Mutex::new(addr.to_string()),
            queue: queue_tx,
            events: events_tx,
            state: Mutex::new(LinkState::Idle),
        });
        peers.insert(node, peer.clone());
        drop(peers);
        self.spawn(run_link(self.clone(), peer.clone(), queue_rx, events_rx));
        peer
    }

    /// The acceptor's decision about an authenticated dialer; see the module
    /// documentation. On success the link state is `Up { gen }` already, so
    /// the link will not dial while the connection is being handed over.
    fn admit(
        self: &Arc<Self>,
        info: &PeerInfo,
        gen: u64,
    ) -> std::result::Result<Arc<Peer>, Refusal> {
        if self.stop.is_cancelled() {
            return Err(Refusal::ShuttingDown);
        }
        let peer = self.ensure_peer(info.node, &info.listen);
        let mut state = lock(&peer.state);
        match *state {
            LinkState::Dialing if self.config.node < info.node => {
                return Err(Refusal::SimultaneousConnect)
            }
            LinkState::Up { incarnation, .. } if incarnation == info.incarnation => {
                return Err(Refusal::AlreadyConnected)
            }
            LinkState::Idle | LinkState::Dialing | LinkState::Up { .. } => {}
        }
        *state = LinkState::Up {
            gen,
            incarnation: info.incarnation,
        };
        drop(state);
        Ok(peer)
    }

    /// Link: about to dial. False if an accepted connection is on its way.
    fn begin_dial(&self, peer: &Peer) -> bool {
        let mut state = lock(&peer.state);
        match *state {
            LinkState::Idle => {
                *state = LinkState::Dialing;
                true
            }
            LinkState::Dialing => true,
            LinkState::Up { .. } => false,
        }
    }

    /// Link: the dial failed or was abandoned.
    fn end_dial(&self, peer: &Peer) {
        let mut state = lock(&peer.state);
        if *state == LinkState::Dialing {
            *state = LinkState::Idle;
        }
    }

    /// Link: the dial succeeded. False if the acceptor admitted a
    /// connection from the peer meanwhile, which then wins.
    fn finish_dial(&self, peer: &Peer, gen: u64, incarnation: u64) -> bool {
        let mut state = lock(&peer.state);
        if *state == LinkState::Dialing {
            *state = LinkState::Up { gen, incarnation };
            true
        } else {
            false
        }
    }

    /// Connection `gen` is gone.
    fn connection_closed(&self, peer: &Peer, gen: u64) {
        let mut state = lock(&peer.state);
        if matches!(*state, LinkState::Up { gen: g, .. } if g == gen) {
            *state = LinkState::Idle;
        }
    }

    fn log_handshake_failure(&self, err: &Error, direction: &str, remote: &str) {
        match err {
            Error::Handshake {
                refusal: Refusal::SimultaneousConnect | Refusal::AlreadyConnected,
                ..
            } => {
                debug!(node = %self.config.node, %remote, "{direction} connection not used: {err}")
            }
            Error::Handshake { .. } => {
                StatCounters::add(&self.stats.handshake_failures, 1);
                warn!(node = %self.config.node, %remote, "refused {direction} connection: {err}");
            }
            _ => {
                StatCounters::add(&self.stats.handshake_failures, 1);
                debug!(node = %self.config.node, %remote, "{direction} handshake failed: {err}");
            }
        }
    }
}

async fn run_listener(shared: Arc<Shared>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(shared.config.max_pending_handshakes));
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let shared2 = shared.clone();
                    shared.spawn(async move {
                        accept_connection(shared2, stream, remote).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    warn!(%remote, "too many handshakes in progress; closing the new connection");
                }
            },
            Err(e) => {
                // Usually out of file descriptors; back off instead of
                // spinning.
                warn!("accepting a connection failed: {e}");
                tokio::select! {
                    _ = shared.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
}

async fn accept_connection(shared: Arc<Shared>, stream: TcpStream, remote: SocketAddr) {
    configure_socket(&stream);
    let remote = remote.to_string();
    let mut framed = Framed::new(stream, frame_codec(HANDSHAKE_MAX_FRAME_BYTES));
    let timeout = shared.config.handshake_timeout;
    let info = match tokio::time::timeout(
        timeout,
        handshake::accept(&mut framed, &shared.identity, &remote),
    )
    .await
    {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return shared.log_handshake_failure(&e, "inbound", &remote),
        Err(_) => {
            let e = Error::Timeout {
                operation: "inbound handshake",
                after: timeout,
            };
            return shared.log_handshake_failure(&e, "inbound", &remote);
        }
    };
    let gen = shared.next_gen();
    let peer = match shared.admit(&info, gen) {
        Ok(peer) => peer,
        Err(refusal) => {
            let e = handshake::refuse(&mut framed, &remote, refusal).await;
            return shared.log_handshake_failure(&e, "inbound", &remote);
        }
    };
    let welcomed = tokio::time::timeout(timeout, handshake::welcome(&mut framed, &remote)).await;
    if !matches!(welcomed, Ok(Ok(()))) {
        shared.connection_closed(&peer, gen);
        let _ = peer.events.send(LinkEvent::Closed { gen });
        StatCounters::add(&shared.stats.handshake_failures, 1);
        debug!(peer = %info.node, %remote, "inbound connection lost before Welcome was sent");
        return;
    }
    StatCounters::add(&shared.stats.connections, 1);
    info!(node = %shared.config.node, peer = %info.node, %remote, "accepted connection");
    let conn = into_connection(framed, shared.config.net.max_frame_bytes);
    if peer
        .events
        .send(LinkEvent::Inbound {
            conn: Box::new(conn),
            gen,
        })
        .is_err()
    {
        // The link has ended: the endpoint is shutting down.
        shared.connection_closed(&peer, gen);
    }
}

/// Dials `peer` at `addr` and runs the handshake.
async fn dial(shared: &Shared, peer: &Peer, addr: &str) -> Result<(Connection, PeerInfo)> {
    let connect_timeout = shared.config.connect_timeout;
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout {
            operation: "connect",
            after: connect_timeout,
        })?
        .map_err(|e| Error::io(format!("connecting to {} at {addr}", peer.id), e))?;
    configure_socket(&stream);
    let mut framed = Framed::new(stream, frame_codec(HANDSHAKE_MAX_FRAME_BYTES));
    let handshake_timeout = shared.config.handshake_timeout;
    let info = tokio::time::timeout(
        handshake_timeout,
        handshake::dial(&mut framed, &shared.identity, addr, Some(peer.id)),
    )
    .await
    .map_err(|_| Error::Timeout {
        operation: "outbound handshake",
        after: handshake_timeout,
    })??;
    Ok((
        into_connection(framed, shared.config.net.max_frame_bytes),
        info,
    ))
}

/// Turns a handshaken stream into independent reader and writer halves,
/// keeping any bytes that arrived right behind the handshake.
fn into_connection(framed: Framed<TcpStream, LengthDelimitedCodec>, max: usize) -> Connection {
    let parts = framed.into_parts();
    let (read_half, write_half) = parts.io.into_split();
    // `Framed::from_parts` marks a non-empty buffer as readable, so frames
    // that arrived in the same read as the handshake's last frame are
    // decoded at once. (A `FramedRead` given the same bytes would wait for
    // the socket first, and hang if the peer sent nothing more.)
    let mut read_parts = FramedParts::new::<Bytes>(read_half, frame_codec(max));
    read_parts.read_buf = parts.read_buf;
    let reader = Framed::from_parts(read_parts);
    let writer = FramedWrite::new(write_half, frame_codec(max));
    Connection { reader, writer }
}

fn configure_socket(stream: &TcpStream) {
    // Small frames (acks, gossip) must not wait for Nagle's algorithm.
    if let Err(e) = stream.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    // Keepalive finds connections whose peer vanished without a FIN
    // (power loss, a cut path) when nothing is being written.
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        debug!("cannot set TCP keepalive: {e}");
    }
}

/// Exponential backoff with full jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    ceiling: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            ceiling: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let lo = self.min.as_micros() as u64;
        let hi = (self.ceiling.as_micros() as u64).max(lo);
        let delay = Duration::from_micros(rand::rng().random_range(lo..=hi));
        self.ceiling = (self.ceiling * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.ceiling = self.min;
    }
}

/// The link task of one peer: owns its send queue and its connection.
async fn run_link(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut queue: mpsc::Receiver<Bytes>,
    mut events: mpsc::UnboundedReceiver<LinkEvent>,
) {
    let mut active: Option<Active> = None;
    // A frame taken from the queue and not yet written.
    let mut pending: Option<Bytes> = None;
    let mut backoff = Backoff::new(shared.config.backoff_min, shared.config.backoff_max);
    let mut failed_dials: u32 = 0;

    loop {
        if let Some(conn) = active.as_mut() {
            let first = match pending.take() {
                Some(frame) => frame,
                None => tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => break,
                    event = events.recv() => {
                        match event {
                            Some(event) => handle_event(&shared, &peer, event, &mut active),
                            None => break,
                        }
                        continue;
                    }
                    frame = queue.recv() => match frame {
                        Some(frame) => frame,
                        None => break,
                    },
                },
            };
            // Cancelling a write is safe at frame granularity: a frame is
            // either wholly in the writer's buffer (flushed by the shutdown
            // drain below) or not encoded at all.
            let written = tokio::select! {
                _ = shared.stop.cancelled() => break,
                written = write_batch(&shared, &mut conn.writer, first, &mut queue) => written,
            };
            if let Err(lost) = written {
                StatCounters::add(&shared.stats.frames_lost, lost as u64);
                debug!(peer = %peer.id, lost, "connection broke while writing");
                close_active(&shared, &peer, &mut active);
            }
            continue;
        }

        // No connection. Wait for something to send, or for the peer to
        // connect to us.
        if pending.is_none() {
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => handle_event(&shared, &peer, event, &mut active),
                    None => break,
                },
                frame = queue.recv() => match frame {
                    Some(frame) => pending = Some(frame),
                    None => break,
                },
            }
            continue;
        }

        if !shared.begin_dial(&peer) {
            // The acceptor admitted a connection from this peer; it arrives
            // as an event (or a Closed event if it failed).
            tokio::select! {
                _ = shared.stop.cancelled() => break,
                event = events.recv() => match event {
                    Some(event) => handle_event(&shared, &peer, event, &mut active),
                    None => break,
                },
            }
            continue;
        }
        let addr = peer.addr();
        let outcome = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => {
                shared.end_dial(&peer);
                break;
            }
            event = events.recv() => {
                // Abandon the dial: an accepted connection (which wins) or a
                // stale close.
                shared.end_dial(&peer);
                match event {
                    Some(event) => handle_event(&shared, &peer, event, &mut active),
                    None => break,
                }
                continue;
            }
            outcome = dial(&shared, &peer, &addr) => outcome,
        };
        match outcome {
            Ok((conn, info)) => {
                let gen = shared.next_gen();
                if shared.finish_dial(&peer, gen, info.incarnation) {
                    StatCounters::add(&shared.stats.connections, 1);
                    if failed_dials > 0 {
                        info!(node = %shared.config.node, peer = %peer.id, %addr, failed_dials, "reconnected");
                    } else {
                        info!(node = %shared.config.node, peer = %peer.id, %addr, "connected");
                    }
                    install(&shared, &peer, conn, gen, &mut active);
                    backoff.reset();
                    failed_dials = 0;
                }
                // Otherwise an accepted connection won; its event is queued.
            }
            Err(e) => {
                shared.end_dial(&peer);
                failed_dials += 1;
                match &e {
                    Error::Handshake { .. } => shared.log_handshake_failure(&e, "outbound", &addr),
                    _ if failed_dials == 1 => {
                        warn!(node = %shared.config.node, peer = %peer.id, %addr, "cannot reach peer, retrying with backoff: {e}")
                    }
                    _ => {
                        debug!(node = %shared.config.node, peer = %peer.id, %addr, failed_dials, "dial failed: {e}")
                    }
                }
                let delay = backoff.next_delay();
                tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => break,
                    event = events.recv() => match event {
                        Some(event) => handle_event(&shared, &peer, event, &mut active),
                        None => break,
                    },
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    // Shutting down: give what is queued a bounded chance to go out.
    let mut lost = 0usize;
    if let Some(mut conn) = active.take() {
        let grace = shared.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            if let Some(first) = pending.take() {
                write_batch(&shared, &mut conn.writer, first, &mut queue).await?;
            }
            while let Ok(frame) = queue.try_recv() {
                write_batch(&shared, &mut conn.writer, frame, &mut queue).await?;
            }
            SinkExt::<Bytes>::close(&mut conn.writer)
                .await
                .map_err(|_| 0usize)
        })
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(n)) => lost += n,
            Err(_) => debug!(peer = %peer.id, "shutdown grace expired with frames unwritten"),
        }
        conn.reader.abort();
    }
    lost += usize::from(pending.is_some());
    queue.close();
    while queue.try_recv().is_ok() {
        lost += 1;
    }
    if lost > 0 {
        StatCounters::add(&shared.stats.frames_lost, lost as u64);
    }
    let mut state = lock(&peer.state);
    *state = LinkState::Idle;
}

fn handle_event(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    event: LinkEvent,
    active: &mut Option<Active>,
) {
    match event {
        LinkEvent::Inbound { conn, gen } => {
            if let Some(old) = active.take() {
                debug!(peer = %peer.id, old = old.gen, new = gen, "replacing connection");
                old.reader.abort();
            }
            install(shared, peer, *conn, gen, active);
        }
        LinkEvent::Closed { gen } => {
            debug!(node = %shared.config.node, peer = %peer.id, gen, "connection closed");
            if active.as_ref().is_some_and(|a| a.gen == gen) {
                *active = None;
            }
        }
    }
}

fn install(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    conn: Connection,
    gen: u64,
    active: &mut Option<Active>,
) {
    debug!(node = %shared.config.node, peer = %peer.id, gen, "link uses a new connection");
    let reader = shared.spawn(run_reader(shared.clone(), peer.clone(), gen, conn.reader));
    *active = Some(Active {
        gen,
        writer: conn.writer,
        reader,
    });
}

fn close_active(shared: &Shared, peer: &Peer, active: &mut Option<Active>) {
    if let Some(old) = active.take() {
        old.reader.abort();
        shared.connection_closed(peer, old.gen);
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes.
/// On failure returns how many frames of the batch may be lost.
async fn write_batch(
    shared: &Shared,
    writer: &mut FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
) -> std::result::Result<(), usize> {
    let mut frames = 1usize;
    let mut bytes = first.len();
    writer.feed(first).await.map_err(|_| frames)?;
    while frames < WRITE_BATCH {
        match queue.try_recv() {
            Ok(frame) => {
                frames += 1;
                bytes += frame.len();
                writer.feed(frame).await.map_err(|_| frames)?;
            }
            Err(_) => break,
        }
    }
    SinkExt::<Bytes>::flush(writer).await.map_err(|_| frames)?;
    StatCounters::add(&shared.stats.frames_sent, frames as u64);
    StatCounters::add(&shared.stats.bytes_sent, bytes as u64);
    Ok(())
}

/// Reads frames from one connection into the inbox until it closes.
async fn run_reader(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    gen: u64,
    mut reader: Framed<OwnedReadHalf, LengthDelimitedCodec>,
) {
    let me = shared.config.node;
    let max = shared.config.net.max_frame_bytes;
    loop {
        let item = tokio::select! {
            _ = shared.stop.cancelled() => break,
            item = reader.next() => item,
        };
        let frame = match item {
            Some(Ok(frame)) => frame,
            Some(Err(e)) if is_oversized(&e) => {
                StatCounters::add(&shared.stats.oversized_frames, 1);
                warn!(node = %me, peer = %peer.id, max, "peer sent a frame over the limit; closing the connection: {e}");
                break;
            }
            Some(Err(e)) => {
                debug!(peer = %peer.id, "connection read failed: {e}");
                break;
            }
            None => {
                debug!(peer = %peer.id, "connection closed by the peer");
                break;
            }
        };
        StatCounters::add(&shared.stats.bytes_received, frame.len() as u64);
        let envelope = match codec::decode::<Envelope>(&frame, max) {
            Ok(envelope) => envelope,
            Err(e) => {
                StatCounters::add(&shared.stats.bad_frames, 1);
                warn!(node = %me, peer = %peer.id, "dropping a frame that does not decode: {e}");
                continue;
            }
        };
        if envelope.from != peer.id || envelope.to != me {
            StatCounters::add(&shared.stats.bad_frames, 1);
            warn!(
                node = %me,
                peer = %peer.id,
                from = %envelope.from,
                to = %envelope.to,
                "dropping an envelope whose sender or recipient is not this connection's"
            );
            continue;
        }
        if shared.is_blocked(peer.id) {
            StatCounters::add(&shared.stats.frames_blocked, 1);
            continue;
        }
        StatCounters::add(&shared.stats.frames_received, 1);
        let delivered = tokio::select! {
            _ = shared.stop.cancelled() => break,
            delivered = shared.inbox.send(envelope) => delivered,
        };
        if delivered.is_err() {
            // Nobody reads the inbox any more.
            break;
        }
    }
    shared.connection_closed(&peer, gen);
    let _ = peer.events.send(LinkEvent::Closed { gen });
}

fn is_oversized(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>())
}

/// Locks a mutex, recovering from poisoning: every critical section here
/// leaves the data consistent, so a panic elsewhere does not invalidate it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_ceiling_and_resets() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(80);
        let mut b = Backoff::new(min, max);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert_eq!(b.ceiling, max);
        b.reset();
        assert_eq!(b.next_delay(), min);
    }
}
