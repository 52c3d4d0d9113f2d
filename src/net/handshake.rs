//! The connection handshake: version, cluster and mutual proof of the
//! cluster secret.
//!
//! Four frames open every node-to-node connection (see
//! [`Handshake`](crate::message::Handshake)):
//!
//! ```text
//! dialer                                   acceptor
//!   Hello {version, cluster, node, listen, incarnation, nonce_d}  ->
//!        <-  Challenge {version, cluster, node, incarnation, nonce_a, proof_a}
//!   Proof {proof_d}                                               ->
//!        <-  Welcome            (or Refuse {reason} at any step)
//! ```
//!
//! `proof_a = HMAC-SHA256(secret, "accept" || transcript)` and
//! `proof_d = HMAC-SHA256(secret, "dial" || transcript)`, where the
//! transcript is every field of `Hello` and `Challenge` except the proofs,
//! each length-prefixed. So:
//! - the secret never crosses the wire;
//! - both nonces are fresh per connection, so a recorded proof is useless on
//!   any other connection;
//! - the role label means the acceptor's proof cannot be reflected back as
//!   the dialer's;
//! - each side checks the other's proof with a constant-time comparison.
//!
//! The acceptor proves itself first, but only after it has seen the dialer's
//! fresh nonce, so it gives nothing away to a dialer without the secret.
//!
//! # What it does not do
//!
//! By itself it authenticates the peer at connection time only; it does not
//! encrypt or authenticate the frames that follow, and anyone holding the
//! secret can claim any node id. The TCP transport therefore runs it inside
//! TLS with mutual certificates ([`super::tls`]), which does both, and
//! [`accept_certified`] ties the claimed id to the dialer's certificate.
//!
//! The functions here speak the protocol on any byte stream; they never
//! touch transport state. The caller decides whether to admit an
//! authenticated peer (for example to break a simultaneous connect) between
//! [`accept`] and [`welcome`].

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::codec;
use crate::codec::HANDSHAKE_MAX_FRAME_BYTES;
use crate::error::Refusal;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::message::{Handshake, NONCE_LEN, PROOF_LEN, PROTOCOL_VERSION};
use crate::net::ClusterSecret;

type HmacSha256 = Hmac<Sha256>;

/// Who this side of a connection is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// This node's id.
    pub node: NodeId,
    /// This node's cluster name.
    pub cluster: String,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// The address peers should dial to reach this node.
    pub listen: String,
    /// Random, drawn once per transport start; see `Handshake::Hello`.
    pub incarnation: u64,
    /// The protocol version this side speaks; [`PROTOCOL_VERSION`] except in
    /// tests of version mismatch.
    pub version: u32,
}

impl Identity {
    /// An identity speaking this build's protocol version, with a fresh
    /// random incarnation.
    pub fn new(
        node: NodeId,
        cluster: impl Into<String>,
        secret: ClusterSecret,
        listen: impl Into<String>,
    ) -> Self {
        Identity {
            node,
            cluster: cluster.into(),
            secret,
            listen: listen.into(),
            incarnation: rand::rng().next_u64(),
            version: PROTOCOL_VERSION,
        }
    }
}

/// What a completed handshake established about the other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id, proven by its knowledge of the secret.
    pub node: NodeId,
    /// The address the peer says it can be dialed on.
    pub listen: String,
    /// The peer transport's incarnation.
    pub incarnation: u64,
}

/// Runs the dialer's side on a fresh connection. `expect` is the node the
/// caller meant to reach, if it knows.
///
/// On success the connection is ready for envelopes. On failure the reason
/// has been sent to the peer where that makes sense, and the caller should
/// drop the connection.
pub async fn dial<T>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
    peer_addr: &str,
    expect: Option<NodeId>,
) -> Result<PeerInfo>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    io.codec_mut()
        .set_max_frame_length(HANDSHAKE_MAX_FRAME_BYTES);
    let nonce_d = fresh_nonce();
    send(
        io,
        &Handshake::Hello {
            version: me.version,
            cluster: me.cluster.clone(),
            node: me.node,
            listen: me.listen.clone(),
            incarnation: me.incarnation,
            nonce: nonce_d.to_vec(),
        },
        peer_addr,
    )
    .await?;

    let (version, cluster, node, incarnation, nonce_a, proof_a) = match recv(io, peer_addr).await? {
        Handshake::Challenge {
            version,
            cluster,
            node,
            incarnation,
            nonce,
            proof,
        } => (version, cluster, node, incarnation, nonce, proof),
        Handshake::Refuse { reason } => return Err(refused(peer_addr, reason)),
        other => {
            let why = Refusal::Malformed(format!("expected Challenge, got {}", frame_name(&other)));
            return Err(refuse(io, peer_addr, why).await);
        }
    };
    let nonce_a = match check_offer(me, version, cluster, &nonce_a) {
        Ok(nonce) => nonce,
        Err(why) => return Err(refuse(io, peer_addr, why).await),
    };
    if let Some(expected) = expect {
        if node != expected {
            let why = Refusal::UnexpectedNode {
                expected,
                got: node,
            };
            return Err(refuse(io, peer_addr, why).await);
        }
    }
    if node == me.node {
        return Err(refuse(io, peer_addr, Refusal::SelfConnect).await);
    }
    let transcript = Transcript {
        version,
        cluster: &me.cluster,
        dialer: me.node,
        dialer_listen: &me.listen,
        dialer_incarnation: me.incarnation,
        dialer_nonce: &nonce_d,
        acceptor: node,
        acceptor_incarnation: incarnation,
        acceptor_nonce: &nonce_a,
    };
    if !transcript.verify(&me.secret, Role::Acceptor, &proof_a) {
        return Err(refuse(io, peer_addr, Refusal::BadSecret).await);
    }
    let proof_d = transcript.prove(&me.secret, Role::Dialer);
    send(io, &Handshake::Proof { proof: proof_d }, peer_addr).await?;

    match recv(io, peer_addr).await? {
        Handshake::Welcome => Ok(PeerInfo {
            node,
            listen: peer_addr.to_string(),
            incarnation,
        }),
        Handshake::Refuse { reason } => Err(refused(peer_addr, reason)),
        other => {
            let why = Refusal::Malformed(format!("expected Welcome, got {}", frame_name(&other)));
            Err(refuse(io, peer_addr, why).await)
        }
    }
}

/// Runs the acceptor's side up to and including the check of the dialer's
/// proof. The caller then answers with [`welcome`] or [`refuse`].
pub async fn accept<T>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
    peer_addr: &str,
) -> Result<PeerInfo>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    accept_certified(io, me, peer_addr, |_| Ok(())).await
}

/// [`accept`], refusing with [`Refusal::NotCertified`] a dialer whose claimed
/// node id `certifies` rejects (on TLS links: the id its certificate does
/// not name), before this side proves anything.
pub async fn accept_certified<T>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    me: &Identity,
    peer_addr: &str,
    certifies: impl FnOnce(NodeId) -> std::result::Result<(), String>,
) -> Result<PeerInfo>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    io.codec_mut()
        .set_max_frame_length(HANDSHAKE_MAX_FRAME_BYTES);
    let (version, cluster, node, listen, incarnation, nonce_d) = match recv(io, peer_addr).await? {
        Handshake::Hello {
            version,
            cluster,
            node,
            listen,
            incarnation,
            nonce,
        } => (version, cluster, node, listen, incarnation, nonce),
        other => {
            let why = Refusal::Malformed(format!("expected Hello, got {}", frame_name(&other)));
            return Err(refuse(io, peer_addr, why).await);
        }
    };
    let nonce_d = match check_offer(me, version, cluster, &nonce_d) {
        Ok(nonce) => nonce,
        Err(why) => return Err(refuse(io, peer_addr, why).await),
    };
    if node == me.node {
        return Err(refuse(io, peer_addr, Refusal::SelfConnect).await);
    }
    if let Err(why) = certifies(node) {
        tracing::warn!(claimed = %node, %peer_addr, "refusing a dialer: {why}");
        return Err(refuse(io, peer_addr, Refusal::NotCertified { node }).await);
    }

    let nonce_a = fresh_nonce();
    let transcript = Transcript {
        version,
        cluster: &me.cluster,
        dialer: node,
        dialer_listen: &listen,
        dialer_incarnation: incarnation,
        dialer_nonce: &nonce_d,
        acceptor: me.node,
        acceptor_incarnation: me.incarnation,
        acceptor_nonce: &nonce_a,
    };
    let challenge = Handshake::Challenge {
        version: me.version,
        cluster: me.cluster.clone(),
        node: me.node,
        incarnation: me.incarnation,
        nonce: nonce_a.to_vec(),
        proof: transcript.prove(&me.secret, Role::Acceptor),
    };
    send(io, &challenge, peer_addr).await?;

    match recv(io, peer_addr).await? {
        Handshake::Proof { proof } => {
            if transcript.verify(&me.secret, Role::Dialer, &proof) {
                Ok(PeerInfo {
                    node,
                    listen,
                    incarnation,
                })
            } else {
                Err(refuse(io, peer_addr, Refusal::BadSecret).await)
            }
        }
        Handshake::Refuse { reason } => Err(refused(peer_addr, reason)),
        other => {
            let why = Refusal::Malformed(format!("expected Proof, got {}", frame_name(&other)));
            Err(refuse(io, peer_addr, why).await)
        }
    }
}

/// Acceptor: admits the authenticated dialer. Envelopes may follow.
pub async fn welcome<T>(io: &mut Framed<T, LengthDelimitedCodec>, peer_addr: &str) -> Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    send(io, &Handshake::Welcome, peer_addr).await
}

/// Sends `Refuse { reason }` (best effort: the peer may already be gone) and
/// returns the error that describes the refusal, for the caller to log.
pub async fn refuse<T>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    peer_addr: &str,
    reason: Refusal,
) -> Error
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let _best_effort = send(
        io,
        &Handshake::Refuse {
            reason: reason.clone(),
        },
        peer_addr,
    )
    .await;
    Error::Handshake {
        peer: peer_addr.to_string(),
        refusal: reason,
    }
}

fn refused(peer_addr: &str, reason: Refusal) -> Error {
    Error::Handshake {
        peer: format!("{peer_addr} (refused by the peer)"),
        refusal: reason,
    }
}

async fn send<T>(
    io: &mut Framed<T, LengthDelimitedCodec>,
    msg: &Handshake,
    peer: &str,
) -> Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let frame = codec::encode_frame(msg, HANDSHAKE_MAX_FRAME_BYTES)?;
    io.send(frame)
        .await
        .map_err(|e| Error::io(format!("handshake with {peer}: sending"), e))
}

async fn recv<T>(io: &mut Framed<T, LengthDelimitedCodec>, peer: &str) -> Result<Handshake>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    match io.next().await {
        Some(Ok(frame)) => match codec::decode(&frame, HANDSHAKE_MAX_FRAME_BYTES) {
            Ok(msg) => Ok(msg),
            // The framing is intact, so the peer can still be told why.
            Err(e) => Err(refuse(io, peer, Refusal::Malformed(e.to_string())).await),
        },
        Some(Err(e)) => Err(Error::io(format!("handshake with {peer}: receiving"), e)),
        None => Err(Error::io(
            format!("handshake with {peer}"),
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            ),
        )),
    }
}

/// Checks what the other side offered in its Hello or Challenge: the same
/// protocol version, the same cluster, a nonce of the right length.
fn check_offer(
    me: &Identity,
    version: u32,
    cluster: String,
    nonce: &[u8],
) -> std::result::Result<[u8; NONCE_LEN], Refusal> {
    if version != me.version {
        return Err(Refusal::VersionMismatch {
            expected: me.version,
            got: version,
        });
    }
    if cluster != me.cluster {
        return Err(Refusal::ClusterMismatch {
            expected: me.cluster.clone(),
            got: cluster,
        });
    }
    fixed::<NONCE_LEN>(nonce)
        .ok_or_else(|| Refusal::Malformed(format!("nonce of {} bytes", nonce.len())))
}

fn frame_name(h: &Handshake) -> &'static str {
    match h {
        Handshake::Hello { .. } => "Hello",
        Handshake::Challenge { .. } => "Challenge",
        Handshake::Proof { .. } => "Proof",
        Handshake::Welcome => "Welcome",
        Handshake::Refuse { .. } => "Refuse",
    }
}

fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn fixed<const N: usize>(bytes: &[u8]) -> Option<[u8; N]> {
    bytes.try_into().ok()
}

#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Acceptor,
}

/// Everything both sides said, in a fixed order; what the proofs sign.
struct Transcript<'a> {
    version: u32,
    cluster: &'a str,
    dialer: NodeId,
    dialer_listen: &'a str,
    dialer_incarnation: u64,
    dialer_nonce: &'a [u8; NONCE_LEN],
    acceptor: NodeId,
    acceptor_incarnation: u64,
    acceptor_nonce: &'a [u8; NONCE_LEN],
}

impl Transcript<'_> {
    fn mac(&self, secret: &ClusterSecret, role: Role) -> HmacSha256 {
        // HMAC accepts keys of any length; `ClusterSecret` guarantees a
        // non-trivial one. `new_from_slice` cannot fail for HMAC.
        let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        let label: &[u8] = match role {
            Role::Dialer => b"ringkv-handshake/dial",
            Role::Acceptor => b"ringkv-handshake/accept",
        };
        // Length-prefix variable fields so that no two transcripts share an
        // encoding.
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(label);
        field(&self.version.to_be_bytes());
        field(self.cluster.as_bytes());
        field(&self.dialer.0.to_be_bytes());
        field(self.dialer_listen.as_bytes());
        field(&self.dialer_incarnation.to_be_bytes());
        field(self.dialer_nonce);
        field(&self.acceptor.0.to_be_bytes());
        field(&self.acceptor_incarnation.to_be_bytes());
        field(self.acceptor_nonce);
        mac
    }

    fn prove(&self, secret: &ClusterSecret, role: Role) -> Vec<u8> {
        let tag = self.mac(secret, role).finalize().into_bytes().to_vec();
        debug_assert_eq!(tag.len(), PROOF_LEN);
        tag
    }

    fn verify(&self, secret: &ClusterSecret, role: Role, proof: &[u8]) -> bool {
        // `verify_slice` compares in constant time and refuses wrong lengths.
        self.mac(secret, role).verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::frame_codec;
    use tokio::io::{duplex, DuplexStream};

    fn identity(node: u64, cluster: &str, secret: &[u8]) -> Identity {
        Identity::new(
            NodeId(node),
            cluster,
            ClusterSecret::new(secret.to_vec()).unwrap(),
            format!("127.0.0.1:{}", 7000 + node),
        )
    }

    fn pipe() -> (
        Framed<DuplexStream, LengthDelimitedCodec>,
        Framed<DuplexStream, LengthDelimitedCodec>,
    ) {
        let (a, b) = duplex(1 << 16);
        (
            Framed::new(a, frame_codec(1 << 20)),
            Framed::new(b, frame_codec(1 << 20)),
        )
    }

    const SECRET: &[u8] = b"the shared cluster secret";

    /// Runs both sides; the acceptor welcomes whoever authenticates.
    async fn run(
        d: &Identity,
        a: &Identity,
        expect: Option<NodeId>,
    ) -> (Result<PeerInfo>, Result<PeerInfo>) {
        let (mut dio, mut aio) = pipe();
        let dial_side = dial(&mut dio, d, "acceptor", expect);
        let accept_side = async {
            let r = accept(&mut aio, a, "dialer").await;
            if r.is_ok() {
                welcome(&mut aio, "dialer").await.unwrap();
            }
            r
        };
        tokio::join!(dial_side, accept_side)
    }

    fn refusal_of(r: Result<PeerInfo>) -> Refusal {
        match r {
            Err(Error::Handshake { refusal, .. }) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let d = identity(1, "c", SECRET);
        let a = identity(2, "c", SECRET);
        let (dr, ar) = run(&d, &a, Some(NodeId(2))).await;
        let at_dialer = dr.unwrap();
        let at_acceptor = ar.unwrap();
        assert_eq!(at_dialer.node, NodeId(2));
        assert_eq!(at_dialer.incarnation, a.incarnation);
        assert_eq!(at_acceptor.node, NodeId(1));
        assert_eq!(at_acceptor.listen, d.listen);
        assert_eq!(at_acceptor.incarnation, d.incarnation);
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_by_both_sides() {
        let d = identity(1, "c", b"a different secret!!");
        let a = identity(2, "c", SECRET);
        let (dr, ar) = run(&d, &a, None).await;
        // The dialer finds the acceptor's proof bad and says so.
        assert_eq!(refusal_of(dr), Refusal::BadSecret);
        // The acceptor hears the refusal instead of a proof.
        assert_eq!(refusal_of(ar), Refusal::BadSecret);
    }

    #[tokio::test]
    async fn version_and_cluster_mismatches_are_refused() {
        let d = identity(1, "c", SECRET);
        let mut a = identity(2, "c", SECRET);
        a.version = PROTOCOL_VERSION + 1;
        let (dr, ar) = run(&d, &a, None).await;
        assert_eq!(
            refusal_of(ar),
            Refusal::VersionMismatch {
                expected: PROTOCOL_VERSION + 1,
                got: PROTOCOL_VERSION
            }
        );
        assert!(matches!(refusal_of(dr), Refusal::VersionMismatch { .. }));

        let a = identity(2, "other", SECRET);
        let (dr, ar) = run(&d, &a, None).await;
        assert!(matches!(refusal_of(ar), Refusal::ClusterMismatch { .. }));
        assert!(matches!(refusal_of(dr), Refusal::ClusterMismatch { .. }));
    }

    #[tokio::test]
    async fn unexpected_node_and_self_connect_are_refused() {
        let d = identity(1, "c", SECRET);
        let a = identity(2, "c", SECRET);
        let (dr, _) = run(&d, &a, Some(NodeId(3))).await;
        assert_eq!(
            refusal_of(dr),
            Refusal::UnexpectedNode {
                expected: NodeId(3),
                got: NodeId(2)
            }
        );
        let (dr, ar) = run(&d, &d.clone(), None).await;
        assert_eq!(refusal_of(ar), Refusal::SelfConnect);
        assert_eq!(refusal_of(dr), Refusal::SelfConnect);
    }

    #[tokio::test]
    async fn a_proof_does_not_verify_for_the_other_role_or_connection() {
        let t = Transcript {
            version: 1,
            cluster: "c",
            dialer: NodeId(1),
            dialer_listen: "x",
            dialer_incarnation: 5,
            dialer_nonce: &[1; NONCE_LEN],
            acceptor: NodeId(2),
            acceptor_incarnation: 6,
            acceptor_nonce: &[2; NONCE_LEN],
        };
        let secret = ClusterSecret::new(SECRET.to_vec()).unwrap();
        let proof = t.prove(&secret, Role::Acceptor);
        assert_eq!(proof.len(), PROOF_LEN);
        assert!(t.verify(&secret, Role::Acceptor, &proof));
        assert!(!t.verify(&secret, Role::Dialer, &proof));
        let other = Transcript {
            acceptor_nonce: &[3; NONCE_LEN],
            ..t
        };
        assert!(!other.verify(&secret, Role::Acceptor, &proof));
        assert!(!t.verify(&secret, Role::Acceptor, &proof[..16]));
    }

    #[tokio::test]
    async fn garbage_instead_of_hello_is_malformed() {
        let a = identity(2, "c", SECRET);
        let (mut dio, mut aio) = pipe();
        dio.send(bytes::Bytes::from_static(b"\xff\x00garbage"))
            .await
            .unwrap();
        let r = accept(&mut aio, &a, "dialer").await;
        assert!(matches!(refusal_of(r), Refusal::Malformed(_)));
        // The dialer side is told why.
        let reply = tokio::time::timeout(std::time::Duration::from_secs(10), dio.next())
            .await
            .expect("the acceptor answers a malformed Hello")
            .unwrap()
            .unwrap();
        let reply: Handshake = codec::decode(&reply, 1 << 10).unwrap();
        assert!(matches!(
            reply,
            Handshake::Refuse {
                reason: Refusal::Malformed(_)
            }
        ));
    }

    #[tokio::test]
    async fn oversized_handshake_frame_is_an_error() {
        let a = identity(2, "c", SECRET);
        let (mut dio, mut aio) = pipe();
        dio.send(bytes::Bytes::from(vec![0u8; HANDSHAKE_MAX_FRAME_BYTES + 1]))
            .await
            .unwrap();
        let r = accept(&mut aio, &a, "dialer").await;
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    }
}
