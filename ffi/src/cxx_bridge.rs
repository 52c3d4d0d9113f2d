//! The C++ API, through `cxx`: classes `ringkv::Cluster` and
//! `ringkv::Client` in the header `ringkv-ffi/src/cxx_bridge.rs.h` that the
//! build generates (docs/ffi.md says where).
//!
//! Bytes go in as `rust::Slice<const uint8_t>` and come back as
//! `rust::Vec<uint8_t>`; a failure is thrown as `rust::Error`, whose
//! `what()` starts with the name of the C ABI's result code
//! (`"RINGKV_NOT_FOUND: get: ..."`) so that `ringkv::result_code(e.what())`
//! gives the same number a C caller sees. cxx catches Rust panics at the
//! boundary (it aborts rather than unwinding into C++); nothing here panics
//! on input.
//!
//! Not here: the operations themselves (`store.rs`, shared with the C ABI).

use crate::result::ringkv_result;
use crate::store::{self, EmbeddedCluster, Failure, Outcome, RemoteClient};

#[cxx::bridge(namespace = "ringkv")]
mod bridge {
    /// A consistency level; the numbers are the C ABI's
    /// `RINGKV_CONSISTENCY_*`. Any other value is rejected with
    /// `RINGKV_INVALID_ARGUMENT`.
    #[derive(Debug)]
    enum Consistency {
        /// The bucket's default.
        Default = 0,
        /// One replica.
        One = 1,
        /// Two replicas.
        Two = 2,
        /// A majority.
        Quorum = 3,
        /// Every replica.
        All = 4,
    }

    /// A bucket policy; the numbers are the C ABI's `RINGKV_POLICY_*`.
    #[derive(Debug)]
    enum Policy {
        /// Last writer wins.
        Lww = 1,
        /// Concurrent writes kept as siblings.
        Siblings = 2,
        /// Positive-negative counters.
        PnCounter = 3,
        /// Grow-only counters.
        GCounter = 4,
        /// Observed-remove sets.
        OrSet = 5,
        /// Grow-only sets.
        GSet = 6,
        /// Two-phase sets.
        TwoPSet = 7,
    }

    /// An embedded cluster's network; the numbers are the C ABI's
    /// `RINGKV_TRANSPORT_*`.
    #[derive(Debug)]
    enum Transport {
        /// In-process.
        Memory = 0,
        /// TCP on 127.0.0.1, with client ports.
        Tcp = 1,
    }

    /// One byte string (a set member).
    struct Bytes {
        /// The bytes.
        data: Vec<u8>,
    }

    /// How `connect_with` connects; an empty string leaves a setting
    /// unset. Start from `ringkv::ClientOptions options{};` and set what is
    /// needed. Later settings join as new fields whose empty or zero value
    /// keeps today's behaviour.
    #[derive(Clone, Debug, Default)]
    struct ClientOptions {
        /// The user to authenticate as (see `connect_auth`); empty:
        /// anonymous, and then `password` must be empty too.
        user: String,
        /// The user's password.
        password: String,
        /// The CA certificates to trust, PEM text: set, the client port is
        /// spoken over TLS and the node's certificate must chain to one of
        /// them (`ringkv_client_options_set_tls_ca_pem`). Empty: plain TCP.
        tls_ca_pem: String,
        /// The name the node's certificate must carry instead of the host
        /// dialed (`ringkv_client_options_set_server_name`); needs
        /// `tls_ca_pem`.
        server_name: String,
    }

    extern "Rust" {
        /// An embedded cluster.
        type Cluster;
        /// A connection to a running cluster.
        type Client;

        /// Starts `nodes` (1 to 16) nodes; see `ringkv_cluster_new`.
        fn start_cluster(nodes: u32, transport: Transport) -> Result<Box<Cluster>>;
        /// See `ringkv_cluster_put`.
        fn put(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            value: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// The value; throws `RINGKV_NOT_FOUND` when there is none.
        fn get(self: &Cluster, bucket: &[u8], key: &[u8], r: Consistency) -> Result<Vec<u8>>;
        /// Writes the value to `value` and returns true, or returns false
        /// (leaving `value` alone) when there is none.
        fn try_get(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            r: Consistency,
            value: &mut Vec<u8>,
        ) -> Result<bool>;
        /// See `ringkv_cluster_delete`.
        fn remove(self: &Cluster, bucket: &[u8], key: &[u8], w: Consistency) -> Result<()>;
        /// See `ringkv_cluster_counter_add`; returns the new value.
        fn counter_add(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            by: i64,
            w: Consistency,
        ) -> Result<i64>;
        /// See `ringkv_cluster_counter_get`.
        fn counter_get(self: &Cluster, bucket: &[u8], key: &[u8], r: Consistency) -> Result<i64>;
        /// See `ringkv_cluster_set_add`.
        fn set_add(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            member: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// See `ringkv_cluster_set_remove`.
        fn set_remove(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            member: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// See `ringkv_cluster_set_members`.
        fn set_members(
            self: &Cluster,
            bucket: &[u8],
            key: &[u8],
            r: Consistency,
        ) -> Result<Vec<Bytes>>;
        /// See `ringkv_cluster_set_bucket_policy`.
        fn set_bucket_policy(self: &Cluster, bucket: &[u8], policy: Policy) -> Result<()>;
        /// See `ringkv_cluster_client_addrs`.
        fn client_addrs(self: &Cluster) -> String;

        /// Connects to one of the comma-separated addresses; see
        /// `ringkv_client_new`.
        fn connect(addrs: &str) -> Result<Box<Client>>;
        /// Connects as `user` with `password`; see
        /// `ringkv_client_new_auth`.
        fn connect_auth(addrs: &str, user: &str, password: &str) -> Result<Box<Client>>;
        /// Connects as `options` say; see `ringkv_client_connect`. A
        /// certificate the CA or the name does not vouch for throws
        /// `RINGKV_TLS`.
        fn connect_with(addrs: &str, options: &ClientOptions) -> Result<Box<Client>>;
        /// See `ringkv_client_put`.
        fn put(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            value: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// The value; throws `RINGKV_NOT_FOUND` when there is none.
        fn get(self: &Client, bucket: &[u8], key: &[u8], r: Consistency) -> Result<Vec<u8>>;
        /// As `Cluster::try_get`.
        fn try_get(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            r: Consistency,
            value: &mut Vec<u8>,
        ) -> Result<bool>;
        /// See `ringkv_client_delete`.
        fn remove(self: &Client, bucket: &[u8], key: &[u8], w: Consistency) -> Result<()>;
        /// See `ringkv_client_counter_add`.
        fn counter_add(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            by: i64,
            w: Consistency,
        ) -> Result<i64>;
        /// See `ringkv_client_counter_get`.
        fn counter_get(self: &Client, bucket: &[u8], key: &[u8], r: Consistency) -> Result<i64>;
        /// See `ringkv_client_set_add`.
        fn set_add(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            member: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// See `ringkv_client_set_remove`.
        fn set_remove(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            member: &[u8],
            w: Consistency,
        ) -> Result<()>;
        /// See `ringkv_client_set_members`.
        fn set_members(
            self: &Client,
            bucket: &[u8],
            key: &[u8],
            r: Consistency,
        ) -> Result<Vec<Bytes>>;
        /// See `ringkv_client_set_bucket_policy`.
        fn set_bucket_policy(self: &Client, bucket: &[u8], policy: Policy) -> Result<()>;
        /// See `ringkv_client_close`; later calls throw `RINGKV_CLOSED`.
        fn close(self: &Client);

        /// The C ABI result number named at the start of an exception's
        /// `what()`, or `RINGKV_INTERNAL` (12) when it names none.
        fn result_code(what: &str) -> u32;
    }
}

pub use bridge::{Bytes, ClientOptions, Consistency, Policy, Transport};

/// An embedded cluster, for C++.
pub struct Cluster(EmbeddedCluster);

/// A client connection, for C++.
pub struct Client(RemoteClient);

fn start_cluster(nodes: u32, transport: Transport) -> Outcome<Box<Cluster>> {
    let kind = store::transport("start_cluster", u32::from(transport.repr))?;
    Ok(Box::new(Cluster(EmbeddedCluster::start(
        "start_cluster",
        nodes,
        kind,
    )?)))
}

fn connect(addrs: &str) -> Outcome<Box<Client>> {
    Ok(Box::new(Client(RemoteClient::connect(
        "connect", addrs, None,
    )?)))
}

fn connect_auth(addrs: &str, user: &str, password: &str) -> Outcome<Box<Client>> {
    let credentials = ringkv::client::Credentials::new(user, password);
    Ok(Box::new(Client(RemoteClient::connect(
        "connect_auth",
        addrs,
        Some(credentials),
    )?)))
}

fn connect_with(addrs: &str, options: &ClientOptions) -> Outcome<Box<Client>> {
    const OP: &str = "connect_with";
    let mut settings = store::ConnectOptions::new();
    if !options.user.is_empty() {
        settings.set_credentials(&options.user, &options.password);
    } else if !options.password.is_empty() {
        return Err(Failure::invalid(format!(
            "{OP}: a password is set but no user"
        )));
    }
    if !options.tls_ca_pem.is_empty() {
        settings.set_tls_ca_pem(OP, options.tls_ca_pem.as_bytes())?;
    }
    if !options.server_name.is_empty() {
        settings.set_server_name(OP, &options.server_name)?;
    }
    Ok(Box::new(Client(RemoteClient::connect_with(
        OP, addrs, &settings,
    )?)))
}

fn result_code(what: &str) -> u32 {
    let name = what.split(':').next().unwrap_or_default();
    ringkv_result::ALL
        .iter()
        .find(|r| r.name() == name)
        .copied()
        .unwrap_or(ringkv_result::RINGKV_INTERNAL) as u32
}

fn level(c: Consistency) -> u32 {
    u32::from(c.repr)
}

fn members(list: Vec<Vec<u8>>) -> Vec<Bytes> {
    list.into_iter().map(|data| Bytes { data }).collect()
}

fn try_get(
    s: &dyn store::Store,
    b: &[u8],
    k: &[u8],
    r: Consistency,
    out: &mut Vec<u8>,
) -> Outcome<bool> {
    match store::get(s, b, k, level(r)) {
        Ok(v) => {
            *out = v;
            Ok(true)
        }
        Err(Failure {
            code: ringkv_result::RINGKV_NOT_FOUND,
            ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The methods both classes share, written once over their [`store::Store`].
macro_rules! store_methods {
    ($t:ty) => {
        impl $t {
            fn put(&self, bucket: &[u8], key: &[u8], value: &[u8], w: Consistency) -> Outcome<()> {
                store::put(&self.0, bucket, key, value, level(w))
            }
            fn get(&self, bucket: &[u8], key: &[u8], r: Consistency) -> Outcome<Vec<u8>> {
                store::get(&self.0, bucket, key, level(r))
            }
            fn try_get(
                &self,
                bucket: &[u8],
                key: &[u8],
                r: Consistency,
                value: &mut Vec<u8>,
            ) -> Outcome<bool> {
                try_get(&self.0, bucket, key, r, value)
            }
            fn remove(&self, bucket: &[u8], key: &[u8], w: Consistency) -> Outcome<()> {
                store::delete(&self.0, bucket, key, level(w))
            }
            fn counter_add(
                &self,
                bucket: &[u8],
                key: &[u8],
                by: i64,
                w: Consistency,
            ) -> Outcome<i64> {
                store::counter_add(&self.0, bucket, key, by, level(w))
            }
            fn counter_get(&self, bucket: &[u8], key: &[u8], r: Consistency) -> Outcome<i64> {
                store::counter_get(&self.0, bucket, key, level(r))
            }
            fn set_add(
                &self,
                bucket: &[u8],
                key: &[u8],
                member: &[u8],
                w: Consistency,
            ) -> Outcome<()> {
                store::set_add(&self.0, bucket, key, member, level(w))
            }
            fn set_remove(
                &self,
                bucket: &[u8],
                key: &[u8],
                member: &[u8],
                w: Consistency,
            ) -> Outcome<()> {
                store::set_remove(&self.0, bucket, key, member, level(w))
            }
            fn set_members(
                &self,
                bucket: &[u8],
                key: &[u8],
                r: Consistency,
            ) -> Outcome<Vec<Bytes>> {
                store::set_members(&self.0, bucket, key, level(r)).map(members)
            }
            fn set_bucket_policy(&self, bucket: &[u8], policy: Policy) -> Outcome<()> {
                store::set_bucket_policy(&self.0, bucket, u32::from(policy.repr))
            }
        }
    };
}

store_methods!(Cluster);
store_methods!(Client);

impl Cluster {
    fn client_addrs(&self) -> String {
        self.0.client_addrs()
    }
}

impl Client {
    fn close(&self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_code_reads_the_name_at_the_start() {
        assert_eq!(result_code("RINGKV_NOT_FOUND: get: no value"), 3);
        assert_eq!(result_code("RINGKV_CLOSED: put: the client is closed"), 6);
        assert_eq!(result_code("RINGKV_TLS: connect_with: TLS handshake"), 15);
        assert_eq!(result_code("something else"), 12);
        assert_eq!(result_code(""), 12);
    }

    #[test]
    fn connect_with_refuses_bad_options_before_dialing() {
        let code = |options: ClientOptions| match connect_with("127.0.0.1:1", &options) {
            Ok(_) => panic!("connected to port 1"),
            Err(f) => (f.code, f.message),
        };
        let (c, m) = code(ClientOptions {
            password: "pw".into(),
            ..ClientOptions::default()
        });
        assert_eq!(c, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert_eq!(m, "connect_with: a password is set but no user");
        let (c, m) = code(ClientOptions {
            tls_ca_pem: "not PEM".into(),
            ..ClientOptions::default()
        });
        assert_eq!(c, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert!(m.starts_with("connect_with: client TLS: "), "{m}");
        let (c, m) = code(ClientOptions {
            server_name: "db.example.test".into(),
            ..ClientOptions::default()
        });
        assert_eq!(c, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert!(m.contains("no CA"), "{m}");
        // Nothing wrong with the options: port 1 just does not answer.
        let (c, _) = code(ClientOptions {
            user: "u".into(),
            ..ClientOptions::default()
        });
        assert_eq!(c, ringkv_result::RINGKV_CONNECTION);
    }

    #[test]
    fn shared_enums_keep_the_c_numbers() {
        assert_eq!(
            level(Consistency::Quorum),
            crate::capi::RINGKV_CONSISTENCY_QUORUM
        );
        assert_eq!(level(Consistency::All), crate::capi::RINGKV_CONSISTENCY_ALL);
        assert_eq!(
            u32::from(Policy::OrSet.repr),
            crate::capi::RINGKV_POLICY_ORSET
        );
        assert_eq!(
            u32::from(Transport::Tcp.repr),
            crate::capi::RINGKV_TRANSPORT_TCP
        );
    }
}
