//! Security of the links between nodes: TLS 1.3 with mutual certificates
//! from the cluster's own certificate authority.
//!
//! # What it promises
//!
//! On a link made with [`PeerSecurity::Tls`]:
//! - every frame is encrypted and authenticated (TLS 1.3 records, AEAD);
//!   a byte changed on the path makes the receiver close the connection,
//!   and nothing of the damaged record is delivered;
//! - each side proves it holds a certificate signed by the cluster's CA,
//!   and the certificate names the node: a node's certificate carries the
//!   DNS name [`node_name`] of its id (`n7.node.ringkv` for node 7). The
//!   dialer asks for the name of the node it means to reach, and the
//!   acceptor checks that the id claimed in the handshake's `Hello` is the
//!   one its certificate names. So holding one node's key does not let a
//!   process pose as another node;
//! - a recorded stream cannot be replayed: every connection runs a fresh
//!   (EC)DHE key exchange, early data (0-RTT) is off and session
//!   resumption is off, so recorded records decrypt under no later key.
//!
//! The cluster secret's HMAC handshake ([`super::handshake`]) still runs,
//! inside TLS. It checks the cluster name and protocol version and carries
//! the incarnation; the secret is a second factor, not the only one.
//!
//! # What it does not do
//!
//! It does not revoke certificates: a node's key that leaks stays valid
//! until the cluster moves to a new CA (make one, issue every node a new
//! certificate, restart them). The CA's key should live off the nodes.
//! Certificates made by [`ClusterCa`] do not expire (see its docs), so
//! rotation is a deliberate operator act, not a timer that breaks links.
//!
//! [`PeerSecurity::InsecurePlaintext`] turns all of this off. It exists for
//! tests and benchmarks, and a node started with it says so in its log.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::error::{Error, Result};
use crate::id::NodeId;

/// The DNS name a node's certificate must carry: `n<id>.node.ringkv`.
///
/// ```
/// use ringkv::id::NodeId;
/// assert_eq!(ringkv::net::tls::node_name(NodeId(7)), "n7.node.ringkv");
/// ```
pub fn node_name(node: NodeId) -> String {
    format!("n{}.node.ringkv", node.0)
}

/// How a TCP transport protects its links.
#[derive(Clone)]
pub enum PeerSecurity {
    /// TLS 1.3 with mutual certificates (the default of `ringkv-node`).
    Tls(Arc<PeerTls>),
    /// No encryption and no per-frame authentication: only the cluster
    /// secret's handshake. For tests and benchmarks only; anyone on the path
    /// can read, rewrite or inject frames.
    InsecurePlaintext,
}

impl PeerSecurity {
    /// TLS with `credentials`, which must name `node`.
    pub fn tls(node: NodeId, credentials: &NodeCredentials) -> Result<PeerSecurity> {
        Ok(PeerSecurity::Tls(Arc::new(PeerTls::new(
            node,
            credentials,
        )?)))
    }

    /// Whether links are encrypted.
    pub fn is_encrypted(&self) -> bool {
        matches!(self, PeerSecurity::Tls(_))
    }
}

impl fmt::Debug for PeerSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSecurity::Tls(tls) => write!(f, "Tls({})", node_name(tls.node)),
            PeerSecurity::InsecurePlaintext => write!(f, "InsecurePlaintext"),
        }
    }
}

/// A node's TLS material, as PEM text: the cluster CA's certificate, the
/// node's certificate (chain) and its private key. `Debug` hides the key.
#[derive(Clone)]
pub struct NodeCredentials {
    /// The cluster CA's certificate: the only root a peer is checked
    /// against.
    pub ca_pem: String,
    /// This node's certificate, then any intermediates.
    pub cert_pem: String,
    /// This node's private key (PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

/// The TLS side of one node's transport: its client and server
/// configurations, built once.
pub struct PeerTls {
    node: NodeId,
    roots: Vec<CertificateDer<'static>>,
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

/// The one crypto provider of peer links: rustls on *ring*, named here
/// rather than taken from the process default, so that an application that
/// embeds ringkv and installs another provider changes nothing here.
///
/// rustls 0.23.48 deprecated this provider because it offers no
/// post-quantum key exchange; its key exchange is X25519 or ECDHE on P-256
/// and P-384. The provider with X25519MLKEM768 (aws-lc-rs) needs a much
/// larger C build; `docs/security.md` says what that leaves open.
#[allow(deprecated)]
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn bad(what: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("peer TLS: {what}"))
}

fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    pem_certs(pem, what).map_err(bad)
}

/// The certificates in `pem`, or why there are none (`what` names them).
pub(super) fn pem_certs(
    pem: &str,
    what: &str,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(certs)
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerTls({})", node_name(self.node))
    }
}

impl PeerTls {
    /// Builds the configurations from `credentials`, and checks them: the
    /// CA must parse, the key must parse, and the certificate must chain to
    /// the CA and name `node`. A node with credentials for another id, or
    /// from another CA, fails here with a message that says so, before it
    /// binds a port.
    pub fn new(node: NodeId, credentials: &NodeCredentials) -> Result<PeerTls> {
        let roots = parse_certs(&credentials.ca_pem, "the CA certificate")?;
        let chain = parse_certs(&credentials.cert_pem, "the node certificate")?;
        let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())
            .map_err(|e| bad(format!("the node key is not a PEM private key: {e}")))?;
        let mut store = RootCertStore::empty();
        for root in &roots {
            store
                .add(root.clone())
                .map_err(|e| bad(format!("the CA certificate is unusable: {e}")))?;
        }
        let store = Arc::new(store);
        let tls = PeerTls {
            node,
            roots: roots.clone(),
            connector: TlsConnector::from(Arc::new(client_config(&store, &chain, &key)?)),
            acceptor: TlsAcceptor::from(Arc::new(server_config(&store, &chain, &key)?)),
        };
        tls.check_certificate(node, &chain).map_err(|why| {
            bad(format!(
                "this node's certificate does not work for {node}: {why}"
            ))
        })?;
        Ok(tls)
    }

    /// Checks that `chain` (a peer's, as presented) was issued by the
    /// cluster CA for client and server use, and names `node`.
    pub fn check_certificate(
        &self,
        node: NodeId,
        chain: &[CertificateDer<'_>],
    ) -> std::result::Result<(), String> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no certificate".to_string())?;
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
        let anchors = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map_err(|e| e.to_string()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let algs = provider().signature_verification_algorithms.all;
        let now = rustls_pki_types::UnixTime::now();
        for usage in [
            webpki::KeyUsage::server_auth(),
            webpki::KeyUsage::client_auth(),
        ] {
            cert.verify_for_usage(algs, &anchors, intermediates, now, usage, None, None)
                .map_err(|e| format!("not issued by the cluster CA for peer links: {e}"))?;
        }
        let name = ServerName::try_from(node_name(node)).map_err(|e| e.to_string())?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|_| format!("it does not name {}", node_name(node)))
    }

    /// The node these credentials belong to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Runs the TLS client handshake to `peer` over `stream`. The peer
    /// must present a certificate from the cluster CA naming `peer`.
    pub async fn connect(&self, peer: NodeId, stream: TcpStream) -> Result<PeerStream> {
        let name = ServerName::try_from(node_name(peer))
            .map_err(|e| bad(format!("no server name for {peer}: {e}")))?;
        let tls = self
            .connector
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(peer.to_string(), e))?;
        Ok(PeerStream::Tls(Box::new(TlsStream::Client(tls))))
    }

    /// Runs the TLS server handshake over `stream`. The dialer must present
    /// a certificate from the cluster CA; which node it names is checked
    /// against the handshake's `Hello` ([`PeerStream::certifies`]).
    pub async fn accept(&self, stream: TcpStream) -> Result<PeerStream> {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "a dialer".to_string(), |a| a.to_string());
        let tls = self
            .acceptor
            .accept(stream)
            .await
            .map_err(|e| handshake_error(remote, e))?;
        Ok(PeerStream::Tls(Box::new(TlsStream::Server(tls))))
    }
}

/// [`Error::Tls`] when TLS itself refused (a certificate, an alert, bytes
/// that are not TLS), [`Error::Io`] when the connection broke.
pub(super) fn handshake_error(peer: String, e: io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => Error::Tls {
            peer,
            why: tls.to_string(),
        },
        None => Error::io(format!("TLS handshake with {peer}"), e),
    }
}

fn client_config(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| bad(format!("the node key does not fit its certificate: {e}")))?;
    // Links last for hours and reconnect rarely: a full handshake each time
    // costs little, and without resumption every connection proves both
    // certificates afresh.
    config.resumption = rustls::client::Resumption::disabled();
    config.enable_early_data = false;
    Ok(config)
}

fn server_config(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| bad(format!("cannot check client certificates: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(bad)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| bad(format!("the node key does not fit its certificate: {e}")))?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(config)
}

/// A connection between nodes, encrypted or not.
pub enum PeerStream {
    /// Plain TCP ([`PeerSecurity::InsecurePlaintext`]).
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl PeerStream {
    /// The certificates the other side presented (none on plaintext).
    pub fn peer_chain(&self) -> Vec<CertificateDer<'static>> {
        match self {
            PeerStream::Plain(_) => Vec::new(),
            PeerStream::Tls(stream) => stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Plain(s) => s.is_write_vectored(),
            PeerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A cluster's certificate authority: makes the certificate of every node.
///
/// The CA's subject names the cluster (`ringkv cluster <name> CA`), so
/// [`ClusterCa::load`] rebuilds the issuer from the cluster name and the
/// key, and checks the result against the stored certificate.
///
/// Certificates are ECDSA P-256 and carry rcgen's default validity (1975 to
/// 4096): nothing expires by itself; see the module docs on rotation.
pub struct ClusterCa {
    cluster: String,
    key: KeyPair,
    cert_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("ringkv cluster {cluster} CA"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| bad(format!("{what}: {e}"))
}

impl ClusterCa {
    /// A new CA with a fresh key.
    pub fn generate(cluster: &str) -> Result<ClusterCa> {
        let key = KeyPair::generate().map_err(rcgen_error("generating the CA key"))?;
        let cert = ca_params(cluster)
            .self_signed(&key)
            .map_err(rcgen_error("signing the CA certificate"))?;
        Ok(ClusterCa {
            cluster: cluster.to_string(),
            key,
            cert_pem: cert.pem(),
        })
    }

    /// A CA made earlier by [`ClusterCa::generate`] for `cluster`, from its
    /// certificate and key. Fails if they do not belong together or were
    /// made for another cluster name.
    pub fn load(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<ClusterCa> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_error("reading the CA key"))?;
        parse_certs(cert_pem, "the CA certificate")?;
        let ca = ClusterCa {
            cluster: cluster.to_string(),
            key,
            cert_pem: cert_pem.to_string(),
        };
        // Issue a throwaway certificate and check it against the stored CA
        // certificate: this fails if the key or the cluster name is not the
        // one the certificate was made with.
        let probe = ca.issue(NodeId(0))?;
        PeerTls::new(NodeId(0), &probe).map_err(|_| {
            bad(format!(
                "the CA certificate and key do not belong together, or were made for a \
                 cluster other than {cluster:?}"
            ))
        })?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM. Keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// TLS for `node`'s transport with a certificate fresh from this CA:
    /// what an embedded cluster or a test gives each node.
    pub fn security_for(&self, node: NodeId) -> Result<PeerSecurity> {
        PeerSecurity::tls(node, &self.issue(node)?)
    }

    /// A certificate and fresh key for a node's client port, naming each
    /// of `names` (DNS names, or IP addresses as text) as clients will
    /// dial it. Clients trust it through this CA's certificate
    /// ([`crate::net::client_tls::ClientTls`]); it is not valid for peer
    /// links (it names no node).
    pub fn issue_client_port(&self, names: &[String]) -> Result<NodeCredentials> {
        if names.is_empty() {
            return Err(bad("a client port certificate needs at least one name"));
        }
        let key = KeyPair::generate().map_err(rcgen_error("generating a client port key"))?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(rcgen_error("making the client port certificate"))?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("ringkv client port {}", names[0]),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(ca_params(&self.cluster), &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rcgen_error("signing the client port certificate"))?;
        Ok(NodeCredentials {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate and fresh key for `node`, usable for both ends of a
    /// link.
    pub fn issue(&self, node: NodeId) -> Result<NodeCredentials> {
        let key = KeyPair::generate().map_err(rcgen_error("generating a node key"))?;
        let mut params = CertificateParams::new(vec![node_name(node)])
            .map_err(rcgen_error("making the node certificate"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name(node));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::new(ca_params(&self.cluster), &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rcgen_error("signing the node certificate"))?;
        Ok(NodeCredentials {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_credentials_work_for_their_node_only() {
        let ca = ClusterCa::generate("c").unwrap();
        let creds = ca.issue(NodeId(3)).unwrap();
        let tls = PeerTls::new(NodeId(3), &creds).unwrap();
        let chain = parse_certs(&creds.cert_pem, "cert").unwrap();
        assert!(tls.check_certificate(NodeId(3), &chain).is_ok());
        let why = tls.check_certificate(NodeId(4), &chain).unwrap_err();
        assert!(why.contains("n4.node.ringkv"), "{why}");
        let err = PeerTls::new(NodeId(4), &creds).unwrap_err().to_string();
        assert!(err.contains("does not work for n4"), "{err}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ours = ClusterCa::generate("c").unwrap();
        let theirs = ClusterCa::generate("c").unwrap();
        let tls = PeerTls::new(NodeId(1), &ours.issue(NodeId(1)).unwrap()).unwrap();
        let foreign = theirs.issue(NodeId(2)).unwrap();
        let chain = parse_certs(&foreign.cert_pem, "cert").unwrap();
        let why = tls.check_certificate(NodeId(2), &chain).unwrap_err();
        assert!(why.contains("not issued by the cluster CA"), "{why}");
        // Credentials whose certificate is not from their own CA file.
        let mixed = NodeCredentials {
            ca_pem: ours.cert_pem().to_string(),
            ..foreign
        };
        assert!(PeerTls::new(NodeId(2), &mixed).is_err());
    }

    #[test]
    fn a_ca_reloads_from_its_files_and_checks_the_cluster_name() {
        let ca = ClusterCa::generate("prod").unwrap();
        let again = ClusterCa::load("prod", ca.cert_pem(), &ca.key_pem()).unwrap();
        let creds = again.issue(NodeId(9)).unwrap();
        // A certificate issued after reloading chains to the original CA.
        let tls = PeerTls::new(NodeId(1), &ca.issue(NodeId(1)).unwrap()).unwrap();
        let chain = parse_certs(&creds.cert_pem, "cert").unwrap();
        tls.check_certificate(NodeId(9), &chain).unwrap();
        let err = ClusterCa::load("test", ca.cert_pem(), &ca.key_pem())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"test\""), "{err}");
        let other = ClusterCa::generate("prod").unwrap();
        assert!(ClusterCa::load("prod", ca.cert_pem(), &other.key_pem()).is_err());
    }

    #[test]
    fn garbage_credentials_are_refused_with_what_is_wrong() {
        let ca = ClusterCa::generate("c").unwrap();
        let good = ca.issue(NodeId(1)).unwrap();
        let cases = [
            (
                NodeCredentials {
                    ca_pem: "nonsense".into(),
                    ..good.clone()
                },
                "CA certificate holds no certificate",
            ),
            (
                NodeCredentials {
                    cert_pem: String::new(),
                    ..good.clone()
                },
                "node certificate holds no certificate",
            ),
            (
                NodeCredentials {
                    key_pem: good.cert_pem.clone(),
                    ..good.clone()
                },
                "node key is not a PEM private key",
            ),
            (
                NodeCredentials {
                    key_pem: ca.issue(NodeId(1)).unwrap().key_pem,
                    ..good.clone()
                },
                "does not fit its certificate",
            ),
        ];
        for (creds, want) in cases {
            let err = PeerTls::new(NodeId(1), &creds).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want:?})");
        }
        assert!(!format!("{good:?}").contains("PRIVATE"));
    }
}
