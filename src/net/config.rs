//! Configuration of the transports: frame and queue limits, the cluster
//! secret, TCP endpoints and the in-process network. Re-exported by
//! `config.rs` and the crate root.

use std::fmt;
use std::time::Duration;

use crate::codec::{DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::net::tls::PeerSecurity;

/// Settings shared by every transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Largest frame sent or accepted, in bytes. Default
    /// [`DEFAULT_MAX_FRAME_BYTES`]. A received frame whose length prefix
    /// exceeds it closes that connection (the stream cannot be resynchronised
    /// without reading the frame); a frame to send that exceeds it is refused
    /// to the caller.
    pub max_frame_bytes: usize,
    /// Frames queued per peer before `send` refuses with
    /// [`Error::QueueFull`]. Default 4096: at 100-byte values that is well
    /// under a megabyte per peer, and several round trips of traffic at full
    /// speed, so a healthy link never fills it; a dead or slow one does, and
    /// the caller hears about it at once instead of queueing without bound.
    pub send_queue_frames: usize,
    /// Envelopes buffered between the network and the local consumer.
    /// Default 8192. When it is full, connections stop being read, which
    /// pushes back on the senders through TCP flow control.
    pub inbox_frames: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            send_queue_frames: 4096,
            inbox_frames: 8192,
        }
    }
}

impl NetConfig {
    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        if self.max_frame_bytes < HANDSHAKE_MAX_FRAME_BYTES {
            return Err(Error::InvalidInput(format!(
                "max_frame_bytes must be at least {HANDSHAKE_MAX_FRAME_BYTES}, got {}",
                self.max_frame_bytes
            )));
        }
        // The length prefix is 4 bytes.
        if self.max_frame_bytes > u32::MAX as usize {
            return Err(Error::InvalidInput(format!(
                "max_frame_bytes must fit in 32 bits, got {}",
                self.max_frame_bytes
            )));
        }
        if self.send_queue_frames == 0 || self.inbox_frames == 0 {
            return Err(Error::InvalidInput(
                "send_queue_frames and inbox_frames must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The shared secret that every node of a cluster holds.
///
/// It keys the HMAC proofs of the connection handshake and is never sent.
/// Its `Debug` output is redacted so that it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl ClusterSecret {
    /// Shortest secret accepted, in bytes. 16 random bytes (128 bits) is the
    /// usual floor for an HMAC key; a shorter secret is likely a typo or a
    /// placeholder.
    pub const MIN_LEN: usize = 16;

    /// Wraps secret bytes, refusing secrets shorter than [`Self::MIN_LEN`].
    ///
    /// ```
    /// use ringkv::ClusterSecret;
    /// assert!(ClusterSecret::new(b"short".to_vec()).is_err());
    /// assert!(ClusterSecret::new(b"a much longer shared secret".to_vec()).is_ok());
    /// ```
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::InvalidInput(format!(
                "cluster secret must be at least {} bytes, got {}",
                Self::MIN_LEN,
                bytes.len()
            )));
        }
        Ok(ClusterSecret(bytes))
    }

    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(<{} bytes redacted>)", self.0.len())
    }
}

/// Configuration of a TCP transport endpoint.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node's id.
    pub node: NodeId,
    /// The cluster's name. Nodes refuse connections from other clusters, so
    /// two clusters on one network cannot merge by accident.
    pub cluster: String,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// How links are protected: TLS with this node's certificate, or
    /// plaintext for tests ([`PeerSecurity`]). There is no default: every
    /// caller says which.
    pub security: PeerSecurity,
    /// Address to listen on, such as `127.0.0.1:7400`; port 0 picks a free
    /// port (see `TcpTransport::local_addr`).
    pub listen: String,
    /// The address peers should dial to reach this node, when it differs
    /// from the listening address (NAT, `0.0.0.0`). Default: none, meaning
    /// the actual listening address.
    pub advertise: Option<String>,
    /// Frame and queue limits.
    pub net: NetConfig,
    /// Time allowed for a TCP connect. Default 2 s: loopback and LAN connects
    /// take well under a millisecond, and a peer that is down should be
    /// noticed quickly so the next backoff round starts.
    pub connect_timeout: Duration,
    /// Time allowed for the whole handshake. Default 5 s: it is four small
    /// frames, so this only triggers on a stuck or hostile peer, whose
    /// half-open connection must not be held forever.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once on the listener. Default 64: enough
    /// for a whole cluster restarting together, and a bound on what a flood
    /// of unauthenticated connections can hold.
    pub max_pending_handshakes: usize,
    /// Handshakes in progress at once from one IP address. Default 8: a
    /// peer dials each node once, so even a host running several nodes
    /// needs a few; one source flooding the port takes 8 of the
    /// `max_pending_handshakes` slots, and the cluster's nodes, on other
    /// addresses, still get in.
    pub max_pending_handshakes_per_ip: usize,
    /// An established link, dialed or accepted, on which nothing has been
    /// received for this long is closed; a link that still has something to
    /// send then dials again through the usual backoff. Default 30 s.
    ///
    /// Gossip alone does not keep every link busy: each gossip interval (1 s
    /// by default) a node gossips to one random peer, so in a cluster of N
    /// nodes a given link carries gossip about every N/2 intervals on
    /// average, and can go far longer without (in a 100-node cluster, more
    /// than 30 s about half the time), and one direction of a link may carry
    /// nothing else. So links are kept alive rather than exempted: each end
    /// writes a keepalive frame on a link it has written nothing to for a
    /// third of this (an unsolicited `Pong` that every node ignores, which
    /// this transport consumes without delivering or counting it). A link is
    /// then silent this long only when the peer's process or the path is
    /// stuck: three keepalives in a row missing, which a scheduling stall on
    /// a busy node does not cause, while a stuck peer's connection is given
    /// back within half a minute. The nodes of a cluster should use the same
    /// value: a peer whose keepalives are further apart than this would have
    /// its quiet links closed and dialed again.
    pub idle_timeout: Duration,
    /// A frame whose first bytes arrived must be complete within this, or
    /// the connection is closed. Default 30 s, as on the client port: a 16
    /// MiB frame takes well under a second on any network a node serves,
    /// so only a stuck or hostile peer dribbling a frame (holding its
    /// buffer) is cut off. Checked at least every half of this, so a frame
    /// is cut off after 1.5 times it at most. Time the node spends not
    /// reading because its inbox is full does not count against the peer.
    pub frame_timeout: Duration,
    /// First reconnect delay after a failed dial. Default 50 ms: a restarted
    /// peer is usually back within a few hundred ms.
    pub backoff_min: Duration,
    /// Largest reconnect delay. Default 5 s: keeps a node that is down for a
    /// long time from being hammered, while reconnecting within seconds when
    /// it returns. Each delay is drawn uniformly from `[min, current]`
    /// ("full jitter") so that a cluster does not reconnect in lockstep.
    pub backoff_max: Duration,
    /// On shutdown, how long to keep writing queued frames before closing.
    /// Default 1 s.
    pub shutdown_grace: Duration,
}

impl TcpConfig {
    /// A configuration with every tunable at its default.
    pub fn new(
        node: NodeId,
        cluster: impl Into<String>,
        secret: ClusterSecret,
        security: PeerSecurity,
        listen: impl Into<String>,
    ) -> Self {
        TcpConfig {
            node,
            cluster: cluster.into(),
            secret,
            security,
            listen: listen.into(),
            advertise: None,
            net: NetConfig::default(),
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_pending_handshakes: 64,
            max_pending_handshakes_per_ip: 8,
            idle_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// Checks that the values can work.
    pub fn validate(&self) -> Result<()> {
        self.net.validate()?;
        if self.cluster.is_empty() {
            return Err(Error::InvalidInput("cluster name must not be empty".into()));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return Err(Error::InvalidInput(format!(
                "backoff_min must be positive and at most backoff_max ({:?} > {:?})",
                self.backoff_min, self.backoff_max
            )));
        }
        if let PeerSecurity::Tls(tls) = &self.security {
            if tls.node() != self.node {
                return Err(Error::InvalidInput(format!(
                    "the TLS credentials are for {}, not {}",
                    tls.node(),
                    self.node
                )));
            }
        }
        if self.max_pending_handshakes_per_ip == 0 {
            return Err(Error::InvalidInput(
                "max_pending_handshakes_per_ip must be at least 1".into(),
            ));
        }
        if self.connect_timeout.is_zero() || self.handshake_timeout.is_zero() {
            return Err(Error::InvalidInput(format!(
                "connect_timeout and handshake_timeout must be positive, got {:?} and {:?}",
                self.connect_timeout, self.handshake_timeout
            )));
        }
        if self.idle_timeout.is_zero() || self.frame_timeout.is_zero() {
            return Err(Error::InvalidInput(format!(
                "idle_timeout and frame_timeout must be positive, got {:?} and {:?}",
                self.idle_timeout, self.frame_timeout
            )));
        }
        if self.max_pending_handshakes == 0 {
            return Err(Error::InvalidInput(
                "max_pending_handshakes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Configuration of an in-process network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryNetConfig {
    /// Seed of every random choice the network makes (drops, delays,
    /// duplicates, reordering). Default 0. The same seed and the same sends
    /// give the same deliveries.
    pub seed: u64,
    /// Frame and queue limits: the same meaning as on TCP, so a node behaves
    /// the same on either network.
    pub net: NetConfig,
}
