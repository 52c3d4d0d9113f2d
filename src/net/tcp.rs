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
//! - At most `max_pending_handshakes` handshakes run at once, at most
//!   `max_pending_handshakes_per_ip` of them from one address; each must
//!   finish within `handshake_timeout` and uses frames of at most
//!   [`HANDSHAKE_MAX_FRAME_BYTES`]. Refused and failed inbound connections
//!   are logged at most once per 10 s, with a count.
//! - After the handshake, a connection on which nothing has arrived for
//!   `idle_timeout` is closed, and so is one on which a frame was begun and
//!   not finished within `frame_timeout` (time the reader spends waiting for
//!   room in the inbox counts against neither). So that a healthy but quiet
//!   link is never closed, each end writes a keepalive frame (an
//!   unsolicited `Pong` that every node ignores; see `fn keepalive`) on a
//!   connection it has written nothing to for a third of `idle_timeout`;
//!   the receiving end consumes it without delivering or counting it. Closing a connection for either reason ends its writes
//!   too, and is logged at most once per 10 s, with a count; the link dials
//!   again when it next has something to send.
//! - Shutdown stops the listener, writes what is queued for `shutdown_grace`,
//!   closes every connection and waits for every task. Dropping the last
//!   handle does the same without the wait.
//!
//! # Injected faults
//!
//! For tests and for the shell's experiments on TCP clusters, an endpoint
//! can be told to misbehave on its *send* path ([`TcpTransport::set_faults`],
//! [`TcpTransport::set_blocked_outbound`]), and to cut peers off both ways
//! ([`TcpTransport::set_blocked`]):
//! - an outbound block drops every frame to the listed peers while frames
//!   from them are still delivered: a one-way partition;
//! - a drop rate loses each frame to a peer with that probability, drawn
//!   from a generator seeded by [`TcpFaults::seed`];
//! - a delay holds each frame for a time drawn uniformly from the delay
//!   range before it joins the peer's send queue. Frames to one peer stay
//!   in order, as on a TCP stream: a frame leaves at its own due time or
//!   right after the frame before it, whichever is later (the rule the
//!   in-process network follows too). Frames wait in a per-peer delay line
//!   of `send_queue_frames` frames; when it is full, `send` refuses with
//!   `QueueFull`.
//!
//! Connections stay up throughout, so healing is immediate. What the faults
//! did is counted in [`TcpFaultStats`]. With no fault set, the send path
//! and the reader pay one relaxed atomic load per frame.
//!
//! # What it does not do
//!
//! It does not encrypt traffic or authenticate frames after the handshake
//! (see [`super::handshake`]), and it does not retransmit: a frame written to
//! a connection that then breaks may be lost (counted in `frames_lost`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::codec::{Framed, FramedParts, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::handshake::{self, Identity, PeerInfo};
use super::memory::MAX_DELAY;
use super::tls::{PeerSecurity, PeerStream};
use super::{frame_codec, Inbox, NetStats, StatCounters, Transport};
use crate::codec;
use crate::codec::HANDSHAKE_MAX_FRAME_BYTES;
use crate::error::Refusal;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::log::RateLimited;
use crate::message::{Envelope, Message};
use crate::net::TcpConfig;

/// Frames written to a socket before one flush.
const WRITE_BATCH: usize = 256;

/// The `seq` of a keepalive frame ([`keepalive`]).
const KEEPALIVE_SEQ: u64 = 0;
/// The payload of a keepalive frame ([`keepalive`]).
const KEEPALIVE_PAYLOAD: &[u8] = b"ringkv/keepalive";
/// The shortest keepalive interval and idle or frame check interval, so
/// that a tiny configured timeout cannot make a link spin.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(1);

/// The keepalive frame a link writes when it has written nothing for a
/// third of `idle_timeout`: an envelope from `from` to `to` carrying a
/// `Pong` with seq 0 and the payload `ringkv/keepalive`. Every node,
/// including one from before keepalives existed, ignores a `Pong` it did
/// not ask for; this transport consumes this one before delivery, so it
/// never reaches the node and is not counted in the frame statistics. (A
/// `Pong` answering a `Ping` with exactly that seq and payload would be
/// consumed the same way.)
fn keepalive(from: NodeId, to: NodeId) -> Envelope {
    Envelope::new(
        from,
        to,
        Message::Pong {
            seq: KEEPALIVE_SEQ,
            payload: KEEPALIVE_PAYLOAD.to_vec(),
        },
    )
}

fn is_keepalive(envelope: &Envelope) -> bool {
    matches!(
        &envelope.msg,
        Message::Pong { seq, payload }
            if *seq == KEEPALIVE_SEQ && payload.as_slice() == KEEPALIVE_PAYLOAD
    )
}

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
    /// Injected faults; read only when `faults_on` is set.
    faults: Mutex<FaultState>,
    /// Whether any fault is set: the one check the fault-free path pays.
    faults_on: AtomicBool,
    fault_stats: FaultCounters,
    /// Handshakes in progress per source address.
    pending_per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Refused and failed inbound connections: logged at most once per 10
    /// s, with a count, since anyone who reaches the port can cause them.
    refusal_log: RateLimited,
    /// Connections closed for an idle or partial-frame timeout: logged at
    /// most once per 10 s, with a count, since a misbehaving peer can cause
    /// them again and again.
    timeout_log: RateLimited,
}

/// Faults injected into an endpoint's send path: see the module
/// documentation. The default injects nothing.
///
/// ```
/// use std::time::Duration;
/// use ringkv::net::tcp::TcpFaults;
///
/// let lossy = TcpFaults {
///     drop_rate: 0.1,
///     delay: (Duration::from_millis(1), Duration::from_millis(20)),
///     seed: 7,
/// };
/// assert!(lossy.validate().is_ok());
/// assert!(TcpFaults { drop_rate: 2.0, ..TcpFaults::default() }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TcpFaults {
    /// Probability, in `[0, 1]`, that a frame to a peer is lost.
    pub drop_rate: f64,
    /// Each frame to a peer waits a time drawn uniformly from `min..=max`
    /// (both at most [`MAX_DELAY`]) before it is queued; frames to one peer
    /// keep their order.
    pub delay: (Duration, Duration),
    /// Seeds the generator of the drop and delay draws.
    pub seed: u64,
}

impl TcpFaults {
    /// Checks that the drop rate is a probability and the delay range is
    /// ordered and at most [`MAX_DELAY`].
    pub fn validate(&self) -> Result<()> {
        // `contains` is false for NaN, so NaN is refused too.
        if !(0.0..=1.0).contains(&self.drop_rate) {
            return Err(Error::InvalidInput(format!(
                "drop_rate must be within [0, 1], got {}",
                self.drop_rate
            )));
        }
        let (min, max) = self.delay;
        if min > max {
            return Err(Error::InvalidInput(format!(
                "delay range is reversed: {min:?} > {max:?}"
            )));
        }
        if max > MAX_DELAY {
            return Err(Error::InvalidInput(format!(
                "delay of {max:?} exceeds the maximum of {MAX_DELAY:?}"
            )));
        }
        Ok(())
    }

    fn is_none(&self) -> bool {
        self.drop_rate == 0.0 && self.delay.1.is_zero()
    }
}

/// What the injected faults of one endpoint have done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFaultStats {
    /// Frames to a peer dropped by an outbound block (a one-way
    /// partition). Two-way blocks count in [`NetStats::frames_blocked`].
    pub blocked_outbound: u64,
    /// Frames lost to the drop rate.
    pub dropped: u64,
    /// Frames that went through the delay line.
    pub delayed: u64,
}

#[derive(Debug, Default)]
struct FaultCounters {
    blocked_outbound: AtomicU64,
    dropped: AtomicU64,
    delayed: AtomicU64,
}

struct FaultState {
    /// Cut off both ways: frames to and from them are dropped.
    blocked: HashSet<NodeId>,
    /// Frames to them are dropped; frames from them are delivered.
    blocked_outbound: HashSet<NodeId>,
    faults: TcpFaults,
    rng: ChaCha8Rng,
}

impl FaultState {
    fn any(&self) -> bool {
        !self.blocked.is_empty() || !self.blocked_outbound.is_empty() || !self.faults.is_none()
    }
}

/// What the faults decided for one outbound frame.
enum FaultFate {
    Pass,
    Blocked,
    BlockedOutbound,
    Dropped,
    Delay(Duration),
}

/// What the endpoint knows about one peer; its link task owns the rest.
/// A failed dial as an operator reads it: what kind of problem it is
/// (the peer cannot be reached, the secrets or cluster names differ, the
/// node at the address is another one, TLS refused), then the error.
pub fn dial_failure_text(e: &Error) -> String {
    let kind = match e {
        Error::Handshake { refusal, .. } => match refusal {
            Refusal::BadSecret => "cluster secret mismatch",
            Refusal::ClusterMismatch { .. } => "wrong cluster",
            Refusal::UnexpectedNode { .. } => "wrong node id",
            Refusal::NotCertified { .. } => "wrong node id",
            Refusal::VersionMismatch { .. } => "protocol version mismatch",
            _ => "handshake refused",
        },
        Error::Tls { why, .. }
            if why.contains("NotValidForName") || why.contains("not valid for name") =>
        {
            "wrong node id (the certificate at that address names another node)"
        }
        Error::Tls { .. } => {
            "TLS refused (a certificate from another cluster's CA, or a peer without TLS)"
        }
        _ => "unreachable",
    };
    format!("{kind}: {e}")
}

struct Peer {
    id: NodeId,
    addr: Mutex<String>,
    queue: mpsc::Sender<Bytes>,
    events: mpsc::UnboundedSender<LinkEvent>,
    state: Mutex<LinkState>,
    /// The delay line into `queue`, made when a frame to this peer is first
    /// delayed.
    delay_line: Mutex<Option<mpsc::Sender<(Instant, Bytes)>>>,
    /// Frames in the delay line: while there are any, every frame to this
    /// peer goes through it, so that frames stay in order after the delay
    /// is removed.
    delayed: AtomicUsize,
    /// Why the last dial to this peer failed (cleared when one succeeds),
    /// said as an operator would want it ([`dial_failure_text`]).
    dial_failure: Mutex<Option<String>>,
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
    reader: Framed<ReadHalf<PeerStream>, LengthDelimitedCodec>,
    writer: FramedWrite<WriteHalf<PeerStream>, LengthDelimitedCodec>,
}

/// The connection a link is writing to.
struct Active {
    gen: u64,
    writer: FramedWrite<WriteHalf<PeerStream>, LengthDelimitedCodec>,
    reader: AbortHandle,
    /// Cancelled by the reader when it ends (the peer closed, a read
    /// failed, or a timeout closed the connection), so that a write stuck
    /// on a peer that no longer reads ends too.
    dead: CancellationToken,
    /// When a frame was last written to this connection, or it was set up:
    /// a keepalive is due a third of `idle_timeout` after.
    last_write: Instant,
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
            faults: Mutex::new(FaultState {
                blocked: HashSet::new(),
                blocked_outbound: HashSet::new(),
                faults: TcpFaults::default(),
                rng: ChaCha8Rng::seed_from_u64(0),
            }),
            faults_on: AtomicBool::new(false),
            fault_stats: FaultCounters::default(),
            pending_per_ip: Mutex::new(HashMap::new()),
            refusal_log: RateLimited::new(Duration::from_secs(10)),
            timeout_log: RateLimited::new(Duration::from_secs(10)),
        });
        info!(
            node = %shared.config.node,
            addr = %local_addr,
            cluster = %shared.config.cluster,
            tls = shared.config.security.is_encrypted(),
            "listening for peers"
        );
        if !shared.config.security.is_encrypted() {
            warn!(
                node = %shared.config.node,
                "peer links are NOT encrypted or authenticated frame by frame \
                 (insecure plaintext, for tests only)"
            );
        }
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
        self.shared
            .change_faults(|f| f.blocked = peers.into_iter().collect());
    }

    /// The peers currently cut off by [`TcpTransport::set_blocked`].
    pub fn blocked(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = lock(&self.shared.faults).blocked.iter().copied().collect();
        v.sort();
        v
    }

    /// Injects a one-way partition: from now on, frames from this node to
    /// `peers` are dropped silently (counted in
    /// [`TcpFaultStats::blocked_outbound`]), while frames from them are
    /// still delivered. Replaces any earlier set; an empty set heals. For
    /// tests and the shell, like [`TcpTransport::set_blocked`].
    pub fn set_blocked_outbound(&self, peers: impl IntoIterator<Item = NodeId>) {
        self.shared
            .change_faults(|f| f.blocked_outbound = peers.into_iter().collect());
    }

    /// The peers set by [`TcpTransport::set_blocked_outbound`].
    pub fn blocked_outbound(&self) -> Vec<NodeId> {
        let faults = lock(&self.shared.faults);
        let mut v: Vec<NodeId> = faults.blocked_outbound.iter().copied().collect();
        v.sort();
        v
    }

    /// Sets the drop rate and delay of every later frame to a peer (see the
    /// module documentation), reseeding their generator; the default
    /// [`TcpFaults`] removes both. Frames already in the delay line keep
    /// their due times. Refuses a rate outside `[0, 1]` or a bad delay
    /// range. For tests and the shell.
    pub fn set_faults(&self, faults: TcpFaults) -> Result<()> {
        faults.validate()?;
        self.shared.change_faults(|f| {
            f.faults = faults;
            f.rng = ChaCha8Rng::seed_from_u64(faults.seed);
        });
        Ok(())
    }

    /// The drop rate and delay in force.
    pub fn faults(&self) -> TcpFaults {
        lock(&self.shared.faults).faults
    }

    /// What the injected faults have done so far.
    pub fn fault_stats(&self) -> TcpFaultStats {
        let c = &self.shared.fault_stats;
        TcpFaultStats {
            blocked_outbound: c.blocked_outbound.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
        }
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

    fn dial_failure(&self, node: NodeId) -> Option<String> {
        let peer = lock(&self.shared.peers).get(&node).cloned()?;
        let failure = lock(&peer.dial_failure).clone();
        failure
    }

    fn connected_to(&self, node: NodeId) -> bool {
        self.is_connected(node)
    }

    fn block_outbound(&self, peers: &[NodeId]) -> Result<()> {
        self.set_blocked_outbound(peers.iter().copied());
        Ok(())
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
        let mut delay = None;
        if s.faults_on.load(Ordering::Relaxed) {
            // A partitioned or lossy network loses the frame without
            // telling the sender: so do the injected faults.
            match s.fault_fate(envelope.to) {
                FaultFate::Pass => {}
                FaultFate::Blocked => {
                    StatCounters::add(&s.stats.frames_blocked, 1);
                    return Ok(());
                }
                FaultFate::BlockedOutbound => {
                    StatCounters::add(&s.fault_stats.blocked_outbound, 1);
                    return Ok(());
                }
                FaultFate::Dropped => {
                    StatCounters::add(&s.fault_stats.dropped, 1);
                    return Ok(());
                }
                FaultFate::Delay(d) => delay = Some(d),
            }
        }
        let peer = lock(&s.peers)
            .get(&envelope.to)
            .cloned()
            .ok_or(Error::UnknownPeer(envelope.to))?;
        if delay.is_some() || peer.delayed.load(Ordering::Acquire) > 0 {
            let frame = codec::encode_frame(&envelope, max)?;
            return s.send_delayed(&peer, frame, delay.unwrap_or(Duration::ZERO));
        }
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
    /// Whether frames from `peer` are dropped by a two-way block.
    fn is_blocked(&self, peer: NodeId) -> bool {
        self.faults_on.load(Ordering::Relaxed) && lock(&self.faults).blocked.contains(&peer)
    }

    fn change_faults(&self, change: impl FnOnce(&mut FaultState)) {
        let mut faults = lock(&self.faults);
        change(&mut faults);
        self.faults_on.store(faults.any(), Ordering::Relaxed);
    }

    /// The faults' decision about one frame to `to`.
    fn fault_fate(&self, to: NodeId) -> FaultFate {
        let mut f = lock(&self.faults);
        if f.blocked.contains(&to) {
            return FaultFate::Blocked;
        }
        if f.blocked_outbound.contains(&to) {
            return FaultFate::BlockedOutbound;
        }
        let TcpFaults {
            drop_rate, delay, ..
        } = f.faults;
        let dropped = if drop_rate <= 0.0 {
            false
        } else if drop_rate >= 1.0 {
            true
        } else {
            f.rng.random_bool(drop_rate)
        };
        if dropped {
            return FaultFate::Dropped;
        }
        let (min, max) = delay;
        if max.is_zero() {
            return FaultFate::Pass;
        }
        let d = if max <= min {
            min
        } else {
            let span = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
            min + Duration::from_nanos(f.rng.random_range(0..=span))
        };
        FaultFate::Delay(d)
    }

    /// Puts `frame` in `peer`'s delay line, due `delay` from now; starts
    /// the line's task on the first use.
    fn send_delayed(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        frame: Bytes,
        delay: Duration,
    ) -> Result<()> {
        let line = {
            let mut line = lock(&peer.delay_line);
            match line.as_ref() {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(self.config.net.send_queue_frames);
                    self.spawn(run_delay_line(self.clone(), peer.clone(), rx));
                    *line = Some(tx.clone());
                    tx
                }
            }
        };
        // Counted before the frame is visible to the line's task, which
        // counts it down once the frame is in the send queue.
        peer.delayed.fetch_add(1, Ordering::AcqRel);
        // `Instant::now() + delay` cannot overflow: delays are at most
        // `MAX_DELAY`.
        match line.try_send((Instant::now() + delay, frame)) {
            Ok(()) => {
                if !delay.is_zero() {
                    StatCounters::add(&self.fault_stats.delayed, 1);
                }
                Ok(())
            }
            Err(e) => {
                peer.delayed.fetch_sub(1, Ordering::AcqRel);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        StatCounters::add(&self.stats.refused_queue_full, 1);
                        Err(Error::QueueFull {
                            peer: peer.id,
                            capacity: self.config.net.send_queue_frames,
                        })
                    }
                    mpsc::error::TrySendError::Closed(_) => Err(Error::Shutdown),
                }
            }
        }
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
            delay_line: Mutex::new(None),
            delayed: AtomicUsize::new(0),
            dial_failure: Mutex::new(None),
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

    /// Logs, at most once per 10 s with a count, that a connection to
    /// `peer` is being closed on a timer.
    fn log_expiry(&self, peer: &Peer, why: Expiry) {
        let node = self.config.node;
        self.timeout_log.warn(|n| match why {
            Expiry::PartialFrame => warn!(
                %node,
                peer = %peer.id,
                closed = n,
                timeout = ?self.config.frame_timeout,
                "closing the connection to a peer that left a frame unfinished"
            ),
            Expiry::Idle | Expiry::Check => warn!(
                %node,
                peer = %peer.id,
                closed = n,
                timeout = ?self.config.idle_timeout,
                "closing the connection to a peer that sent nothing, not even a keepalive"
            ),
        });
    }

    fn log_handshake_failure(&self, err: &Error, direction: &str, remote: &str) {
        match err {
            Error::Handshake {
                refusal: Refusal::SimultaneousConnect | Refusal::AlreadyConnected,
                ..
            } => {
                debug!(node = %self.config.node, %remote, "{direction} connection not used: {err}")
            }
            Error::Handshake { .. } | Error::Tls { .. } if direction == "inbound" => {
                StatCounters::add(&self.stats.handshake_failures, 1);
                self.refusal_log.warn(|n| {
                    warn!(node = %self.config.node, %remote, refused = n, "refused {direction} connection: {err}")
                });
            }
            Error::Handshake { .. } | Error::Tls { .. } => {
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

/// One handshake's place in [`Shared::pending_per_ip`], given back on drop.
struct PendingSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl PendingSlot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<PendingSlot> {
        let mut pending = lock(&shared.pending_per_ip);
        let n = pending.entry(ip).or_insert(0);
        if *n >= shared.config.max_pending_handshakes_per_ip {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut pending = lock(&self.shared.pending_per_ip);
        if let Some(n) = pending.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.ip);
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
            Ok((stream, remote)) => {
                let slot = match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        PendingSlot::take(&shared, remote.ip()).map(|slot| (permit, slot))
                    }
                    Err(_) => None,
                };
                match slot {
                    Some((permit, slot)) => {
                        let shared2 = shared.clone();
                        shared.spawn(async move {
                            accept_connection(shared2, stream, remote).await;
                            drop(slot);
                            drop(permit);
                        });
                    }
                    None => {
                        StatCounters::add(&shared.stats.handshake_failures, 1);
                        shared.refusal_log.warn(|n| {
                            warn!(%remote, refused = n, "too many handshakes in progress (in all, or from this address); closing new connections")
                        });
                    }
                }
            }
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
    let timeout = shared.config.handshake_timeout;
    // TLS and the cluster handshake share one deadline, so a dialer that
    // stalls in either holds a handshake slot for `timeout` at most.
    let handshaken = tokio::time::timeout(timeout, async {
        let stream = match &shared.config.security {
            PeerSecurity::Tls(tls) => tls.accept(stream).await?,
            PeerSecurity::InsecurePlaintext => PeerStream::Plain(stream),
        };
        let chain = stream.peer_chain();
        let mut framed = Framed::new(stream, frame_codec(HANDSHAKE_MAX_FRAME_BYTES));
        let certifies = |node| match &shared.config.security {
            PeerSecurity::Tls(tls) => tls.check_certificate(node, &chain),
            PeerSecurity::InsecurePlaintext => Ok(()),
        };
        let info =
            handshake::accept_certified(&mut framed, &shared.identity, &remote, certifies).await?;
        Ok::<_, Error>((framed, info))
    })
    .await;
    let (mut framed, info) = match handshaken {
        Ok(Ok(done)) => done,
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
    let handshake_timeout = shared.config.handshake_timeout;
    let (framed, info) = tokio::time::timeout(handshake_timeout, async {
        let stream = match &shared.config.security {
            PeerSecurity::Tls(tls) => tls.connect(peer.id, stream).await?,
            PeerSecurity::InsecurePlaintext => PeerStream::Plain(stream),
        };
        let mut framed = Framed::new(stream, frame_codec(HANDSHAKE_MAX_FRAME_BYTES));
        let info = handshake::dial(&mut framed, &shared.identity, addr, Some(peer.id)).await?;
        Ok::<_, Error>((framed, info))
    })
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
fn into_connection(framed: Framed<PeerStream, LengthDelimitedCodec>, max: usize) -> Connection {
    let parts = framed.into_parts();
    let (read_half, write_half) = tokio::io::split(parts.io);
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
    let keepalive_every = (shared.config.idle_timeout / 3).max(MIN_CHECK_INTERVAL);
    let keepalive_frame = match codec::encode_frame(
        &keepalive(shared.config.node, peer.id),
        shared.config.net.max_frame_bytes,
    ) {
        Ok(frame) => Some(frame),
        Err(e) => {
            // Cannot happen (a few dozen bytes, under any allowed frame
            // limit); without keepalives a quiet link is closed and dialed
            // again, which costs a handshake and loses nothing.
            warn!(node = %shared.config.node, peer = %peer.id, "cannot encode the keepalive frame: {e}");
            None
        }
    };

    loop {
        if let Some(conn) = active.as_mut() {
            let keepalive_due = conn.last_write + keepalive_every;
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
                    _ = tokio::time::sleep_until(keepalive_due), if keepalive_frame.is_some() => {
                        // Nothing written for a third of the idle timeout:
                        // tell the peer this end is alive.
                        let Some(frame) = keepalive_frame.clone() else { continue };
                        let sent = tokio::select! {
                            _ = shared.stop.cancelled() => break,
                            _ = conn.dead.cancelled() => false,
                            sent = conn.writer.send(frame) => sent.is_ok(),
                        };
                        if sent {
                            conn.last_write = Instant::now();
                        } else {
                            debug!(peer = %peer.id, "connection broke while writing a keepalive");
                            close_active(&shared, &peer, &mut active);
                        }
                        continue;
                    }
                },
            };
            // Cancelling a write is safe at frame granularity: a frame is
            // either wholly in the writer's buffer (flushed by the shutdown
            // drain below) or not encoded at all.
            let mut fed = 0usize;
            let written = tokio::select! {
                _ = shared.stop.cancelled() => break,
                // The reader ended: the connection is closed (or going), and
                // a write to a peer that no longer reads could wait forever.
                _ = conn.dead.cancelled() => None,
                written = write_batch(&shared, &mut conn.writer, first, &mut queue, &mut fed) => Some(written),
            };
            match written {
                Some(Ok(())) => conn.last_write = Instant::now(),
                Some(Err(lost)) => {
                    StatCounters::add(&shared.stats.frames_lost, lost as u64);
                    debug!(peer = %peer.id, lost, "connection broke while writing");
                    close_active(&shared, &peer, &mut active);
                }
                None => {
                    // The frames of the batch, `first` included, are lost.
                    let lost = fed.max(1);
                    StatCounters::add(&shared.stats.frames_lost, lost as u64);
                    debug!(peer = %peer.id, lost, "connection closed while writing");
                    close_active(&shared, &peer, &mut active);
                }
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
                *lock(&peer.dial_failure) = None;
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
                *lock(&peer.dial_failure) = Some(dial_failure_text(&e));
                failed_dials += 1;
                match &e {
                    Error::Handshake { .. } | Error::Tls { .. } => {
                        shared.log_handshake_failure(&e, "outbound", &addr)
                    }
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
            let mut fed = 0;
            if let Some(first) = pending.take() {
                write_batch(&shared, &mut conn.writer, first, &mut queue, &mut fed).await?;
            }
            while let Ok(frame) = queue.try_recv() {
                write_batch(&shared, &mut conn.writer, frame, &mut queue, &mut fed).await?;
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
    let dead = CancellationToken::new();
    let reader = shared.spawn(run_reader(
        shared.clone(),
        peer.clone(),
        gen,
        conn.reader,
        dead.clone(),
    ));
    *active = Some(Active {
        gen,
        writer: conn.writer,
        reader,
        dead,
        last_write: Instant::now(),
    });
}

fn close_active(shared: &Shared, peer: &Peer, active: &mut Option<Active>) {
    if let Some(old) = active.take() {
        old.reader.abort();
        shared.connection_closed(peer, old.gen);
    }
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes.
/// On failure returns how many frames of the batch may be lost. `frames`
/// counts the frames of the batch taken from the queue so far, for a caller
/// that cancels the write.
async fn write_batch(
    shared: &Shared,
    writer: &mut FramedWrite<WriteHalf<PeerStream>, LengthDelimitedCodec>,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
    frames: &mut usize,
) -> std::result::Result<(), usize> {
    *frames = 1;
    let mut bytes = first.len();
    writer.feed(first).await.map_err(|_| *frames)?;
    while *frames < WRITE_BATCH {
        match queue.try_recv() {
            Ok(frame) => {
                *frames += 1;
                bytes += frame.len();
                writer.feed(frame).await.map_err(|_| *frames)?;
            }
            Err(_) => break,
        }
    }
    SinkExt::<Bytes>::flush(writer).await.map_err(|_| *frames)?;
    StatCounters::add(&shared.stats.frames_sent, *frames as u64);
    StatCounters::add(&shared.stats.bytes_sent, bytes as u64);
    Ok(())
}

/// A peer's delay line: hands each frame to the peer's send queue at its
/// due time, or right after the frame before it, so that order is kept.
/// Waits for room in the queue rather than dropping a frame that has
/// served its delay.
async fn run_delay_line(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut line: mpsc::Receiver<(Instant, Bytes)>,
) {
    loop {
        let (due, frame) = tokio::select! {
            _ = shared.stop.cancelled() => break,
            item = line.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let queued = tokio::select! {
            _ = shared.stop.cancelled() => false,
            queued = async {
                tokio::time::sleep_until(due).await;
                peer.queue.send(frame).await.is_ok()
            } => queued,
        };
        peer.delayed.fetch_sub(1, Ordering::AcqRel);
        if !queued {
            StatCounters::add(&shared.stats.frames_lost, 1);
            break;
        }
    }
    line.close();
    let mut lost = 0;
    while line.try_recv().is_ok() {
        lost += 1;
    }
    if lost > 0 {
        StatCounters::add(&shared.stats.frames_lost, lost);
    }
}

/// Why a reader closed its connection on a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    /// Nothing arrived for `idle_timeout`.
    Idle,
    /// A frame was begun and not finished within `frame_timeout`.
    PartialFrame,
    /// Not a deadline: a wake-up to look for the first bytes of a frame,
    /// which arrive unseen while the reader waits.
    Check,
}

/// Reads frames from one connection into the inbox until it closes, the
/// peer sends nothing for `idle_timeout`, or leaves a frame unfinished for
/// `frame_timeout`. Cancels `dead` when it ends.
async fn run_reader(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    gen: u64,
    mut reader: Framed<ReadHalf<PeerStream>, LengthDelimitedCodec>,
    dead: CancellationToken,
) {
    let me = shared.config.node;
    let max = shared.config.net.max_frame_bytes;
    let idle_timeout = shared.config.idle_timeout;
    let frame_timeout = shared.config.frame_timeout;
    let check_every = (frame_timeout / 2).max(MIN_CHECK_INTERVAL);
    // When a frame last arrived (or the connection was set up, or the
    // inbox last took a frame: waiting for room is not the peer's doing).
    let mut last_frame = Instant::now();
    // When the first bytes of an unfinished frame were first seen.
    let mut partial_since: Option<Instant> = None;
    loop {
        // Frames already buffered are taken without a timer.
        let item = match reader.next().now_or_never() {
            Some(item) => item,
            None => {
                let now = Instant::now();
                if reader.read_buffer().is_empty() {
                    partial_since = None;
                } else if partial_since.is_none() {
                    partial_since = Some(now);
                }
                let (deadline, why) = match partial_since {
                    Some(since) => (since + frame_timeout, Expiry::PartialFrame),
                    None => (last_frame + idle_timeout, Expiry::Idle),
                };
                // Bytes of a new frame arrive unseen while this task waits:
                // waking every half frame timeout bounds how long a frame
                // may dribble to 1.5 times the timeout.
                let (wake, why) = if now + check_every < deadline {
                    (now + check_every, Expiry::Check)
                } else {
                    (deadline, why)
                };
                tokio::select! {
                    // In this order: a frame completed by the time the
                    // deadline passes is read, not cut off.
                    biased;
                    _ = shared.stop.cancelled() => break,
                    item = reader.next() => item,
                    _ = tokio::time::sleep_until(wake) => {
                        // The deadline passed with its condition still
                        // true? (Bytes that arrived unseen make a silent
                        // connection one with a frame begun.)
                        let expired = match why {
                            Expiry::Check => false,
                            Expiry::Idle => reader.read_buffer().is_empty(),
                            Expiry::PartialFrame => true,
                        };
                        if expired {
                            shared.log_expiry(&peer, why);
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        last_frame = Instant::now();
        partial_since = None;
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
        let envelope = match codec::decode::<Envelope>(&frame, max) {
            Ok(envelope) => envelope,
            Err(e) => {
                StatCounters::add(&shared.stats.bytes_received, frame.len() as u64);
                StatCounters::add(&shared.stats.bad_frames, 1);
                warn!(node = %me, peer = %peer.id, "dropping a frame that does not decode: {e}");
                continue;
            }
        };
        let ours = envelope.from == peer.id && envelope.to == me;
        if ours && is_keepalive(&envelope) {
            // Its arrival is all it says: not delivered, not counted.
            continue;
        }
        StatCounters::add(&shared.stats.bytes_received, frame.len() as u64);
        if !ours {
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
        last_frame = Instant::now();
    }
    dead.cancel();
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
