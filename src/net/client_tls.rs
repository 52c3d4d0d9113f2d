//! TLS on the client port: optional, server-authenticated, TLS 1.3.
//!
//! # What it promises
//!
//! A node started with a client port certificate ([`ClientPortTls`])
//! speaks only TLS on that port: a client that dials in plain TCP fails its
//! handshake and is closed. A client that trusts the certificate's issuer
//! ([`ClientTls`]) gets every frame encrypted and authenticated, and knows
//! it reached a holder of the certificate for the name it dialed (the host
//! of the address, or the name it was told to expect). Who the *client* is
//! remains the business of the client protocol's `Hello` (users, roles and
//! passwords, [`crate::node::auth`]): TLS keeps the password and the data
//! off the wire, and passwords are not accepted any more readily with it.
//!
//! As on peer links: no session resumption and no early data, so a
//! recorded connection cannot be replayed, and the provider is rustls on
//! *ring* ([`super::tls`] says why).
//!
//! # What it does not do
//!
//! It does not ask clients for certificates, and it does not reload a
//! certificate while the node runs (restart the node with the new files).
//!
//! The certificate may come from any CA the clients trust;
//! `ringkv-node certs --client-port NAME` issues one from the cluster's own
//! CA ([`super::ClusterCa::issue_client_port`]).

use std::fmt;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::tls::{handshake_error, pem_certs, provider};
use crate::error::{Error, Result};

fn bad(what: impl fmt::Display) -> Error {
    Error::InvalidInput(format!("client TLS: {what}"))
}

/// The server side of the client port's TLS: the node's certificate chain
/// and key, checked when built.
#[derive(Clone)]
pub struct ClientPortTls {
    acceptor: TlsAcceptor,
    /// The leaf certificate, for `Debug` and tests.
    leaf: CertificateDer<'static>,
}

impl fmt::Debug for ClientPortTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientPortTls(<{} byte certificate>)", self.leaf.len())
    }
}

impl PartialEq for ClientPortTls {
    fn eq(&self, other: &Self) -> bool {
        self.leaf == other.leaf
    }
}

impl Eq for ClientPortTls {}

impl ClientPortTls {
    /// From PEM text: the certificate (then any intermediates) and its
    /// private key (PKCS#8, SEC1 or PKCS#1). Fails, saying which, when
    /// either does not parse or the key does not fit the certificate.
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<ClientPortTls> {
        let chain = pem_certs(cert_pem, "the client port certificate").map_err(bad)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| bad(format!("the client port key is not a PEM private key: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key)
            .map_err(|e| {
                bad(format!(
                    "the client port key does not fit its certificate: {e}"
                ))
            })?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.max_early_data_size = 0;
        Ok(ClientPortTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            leaf: chain[0].clone(),
        })
    }

    /// Runs the server handshake over an accepted connection.
    pub async fn accept(&self, stream: TcpStream) -> Result<server::TlsStream<TcpStream>> {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "a client".to_string(), |a| a.to_string());
        self.acceptor
            .accept(stream)
            .await
            .map_err(|e| handshake_error(remote, e))
    }
}

/// The client side: the certificates to trust, and optionally the name the
/// node's certificate must carry (default: the host of the address
/// dialed).
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    ca_pem: String,
    server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_pem == other.ca_pem && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// Trusts the certificates in `ca_pem` (PEM, one or more), and no
    /// others: a node whose certificate does not chain to one of them is
    /// refused.
    pub fn new(ca_pem: &str) -> Result<ClientTls> {
        let roots = pem_certs(ca_pem, "the CA certificate").map_err(bad)?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store
                .add(root)
                .map_err(|e| bad(format!("the CA certificate is unusable: {e}")))?;
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(bad)?
            .with_root_certificates(store)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_early_data = false;
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            ca_pem: ca_pem.to_string(),
            server_name: None,
        })
    }

    /// Expects the node's certificate to name `name` whatever address is
    /// dialed (for example when dialing by IP a node whose certificate
    /// names its DNS name).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<ClientTls> {
        let name = name.into();
        ServerName::try_from(name.clone())
            .map_err(|e| bad(format!("{name:?} is not a server name: {e}")))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The name expected of the node at `addr`.
    pub fn name_for(&self, addr: &str) -> Result<ServerName<'static>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr).to_string(),
        };
        ServerName::try_from(name.clone())
            .map_err(|e| bad(format!("no server name in {addr:?} ({name:?}: {e})")))
    }

    /// Runs the client handshake to the node at `addr` over `stream`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<client::TlsStream<TcpStream>> {
        let name = self.name_for(addr)?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(addr.to_string(), e))
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ClusterCa;

    #[test]
    fn hosts_are_taken_from_every_address_shape() {
        assert_eq!(host_of("db.example.com:7000"), "db.example.com");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn bad_material_is_refused_with_what_is_wrong() {
        let ca = ClusterCa::generate("c").unwrap();
        let port = ca.issue_client_port(&["localhost".into()]).unwrap();
        let other = ca.issue_client_port(&["localhost".into()]).unwrap();
        let cases = [
            ("junk", port.key_pem.as_str(), "holds no certificate"),
            (port.cert_pem.as_str(), "junk", "not a PEM private key"),
            (
                port.cert_pem.as_str(),
                other.key_pem.as_str(),
                "does not fit its certificate",
            ),
        ];
        for (cert, key, want) in cases {
            let err = ClientPortTls::new(cert, key).unwrap_err().to_string();
            assert!(err.contains(want), "{err} (wanted {want:?})");
            assert!(err.contains("client TLS"), "{err}");
        }
        ClientPortTls::new(&port.cert_pem, &port.key_pem).unwrap();
        assert!(ClientTls::new("junk").is_err());
        let tls = ClientTls::new(ca.cert_pem()).unwrap();
        assert!(tls.clone().with_server_name("not a name!").is_err());
        assert!(tls.name_for("").is_err());
        assert!(ca.issue_client_port(&[]).is_err());
        assert!(!format!("{tls:?}").contains("BEGIN"));
    }
}
