//! The Rust client of the client protocol ([`crate::protocol`],
//! `docs/protocol.md`).
//!
//! A [`Client`] holds one connection at a time to one of the nodes it was
//! given, opened with a `Hello`. Requests from any number of tasks are
//! pipelined over it: each gets a fresh id, a reader task hands every
//! response to the request waiting for that id, and each request has its
//! own timeout. When the connection breaks, or the node says it is shutting
//! down, the next request opens a connection to the next address in the
//! list (wrapping around).
//!
//! # Retries
//!
//! A failed request is retried, with capped exponential backoff, up to
//! [`ClientConfig::max_attempts`] times in all, only when retrying is both
//! useful and safe:
//! - useful: the error is retryable (a connection that could not be opened
//!   or broke, a timeout, a node answer with `retryable: true`);
//! - safe: the op is a read, or a write that surely was not applied: it
//!   was never completely sent, or the node answered with
//!   `indefinite: false`. A write sent without an answer (the connection
//!   broke, the timeout passed) or answered with `indefinite: true` is
//!   never retried: a counter add would count twice. It fails with
//!   [`Error::OutcomeUnknown`] or [`Error::Remote`]; read the key to learn
//!   what happened.
//!
//! # What it does not do
//!
//! No connection pool (one connection per client; clone the [`Client`] to
//! share it, or make several), no choice of node by key (any node
//! coordinates any key), no resolution of siblings (the caller resolves and
//! writes back with the context).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::codec;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::net::client_tls::ClientTls;
use crate::protocol::{
    BucketInfo, ErrorCode, ErrorReply, NodeAnswer, Op, PreferenceEntry, PutItem, ReadOptions,
    Reply, Request, Response, RingView, SiblingView, SnapshotView, StatusView, StorageView,
    TokenSpan, WriteOptions, CLIENT_PROTOCOL_VERSION,
};
use crate::replication::Receipt;

/// How a [`Client`] connects, waits and retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Sent in `Hello`, for the node's logs. Default `"ringkv-rust"`.
    pub client_name: String,
    /// How long opening a connection (TCP connect and `Hello`) to one
    /// address may take. Default 2 s: a loopback or LAN connect takes
    /// well under a millisecond, so this only waits out a node that is
    /// overloaded, not one that is gone.
    pub connect_timeout: Duration,
    /// How long one attempt of a request may wait for its response.
    /// Default 10 s: above the default bucket timeout (5 s), so that a node
    /// normally answers `Timeout` itself, with `needed` and `got`, before
    /// the client gives up without knowing anything.
    pub request_timeout: Duration,
    /// Attempts per request, the first included. Default 4: rides out a
    /// node restart or a failover to the next address without turning a
    /// real outage into a long hang.
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles on each retry. Default
    /// 20 ms.
    pub backoff_initial: Duration,
    /// The cap on the backoff. Default 1 s.
    pub backoff_max: Duration,
    /// Largest frame sent or accepted. Default 16 MiB, the node's default
    /// limit: a larger request would be refused anyway.
    pub max_frame_bytes: usize,
    /// The user and password sent in every connection's `Hello`. Default
    /// none: enough for a node started with `--no-client-auth`; a node that
    /// requires authentication answers every other op `Unauthenticated`.
    pub credentials: Option<Credentials>,
    /// TLS to the client port: which certificates to trust and, if not the
    /// host dialed, the name to expect. Default none: plain TCP, for a
    /// node whose port has no certificate. A node with one refuses plain
    /// connections, and this client refuses a node whose certificate does
    /// not check out.
    pub tls: Option<ClientTls>,
}

/// A user name and password for the client port. `Debug` hides the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// Credentials for `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_name: "ringkv-rust".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_attempts: 4,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_frame_bytes: crate::config::DEFAULT_MAX_FRAME_BYTES,
            credentials: None,
            tls: None,
        }
    }
}

/// The answer to a get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// The value, when there is exactly one.
    pub value: Option<Vec<u8>>,
    /// Concurrent values, when there are several (then `value` is `None`).
    pub siblings: Vec<SiblingView>,
    /// The causal context to send with the next write of the key.
    pub context: Vec<u8>,
    /// What the request did.
    pub receipt: Receipt,
}

/// A page of a scan ([`Client::scan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanResult {
    /// The keys, in token order.
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts; `None` when the scan is done.
    pub cursor: Option<Vec<u8>>,
    /// What the request did.
    pub receipt: Receipt,
}

/// The answer to a put or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// The context of the object as stored.
    pub context: Vec<u8>,
    /// What the request did.
    pub receipt: Receipt,
}

/// One write of a [`Client::multi_put`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPut<'a> {
    /// The key (at most once per batch).
    pub key: &'a [u8],
    /// The value.
    pub value: &'a [u8],
    /// The context of an earlier read of the key, or `None` for a blind
    /// write.
    pub context: Option<&'a [u8]>,
}

impl<'a> BatchPut<'a> {
    /// A blind write of `value` to `key`.
    pub fn new(key: &'a [u8], value: &'a [u8]) -> BatchPut<'a> {
        BatchPut {
            key,
            value,
            context: None,
        }
    }

    /// The write with the context of an earlier read.
    pub fn with_context(self, context: &'a [u8]) -> BatchPut<'a> {
        BatchPut {
            context: Some(context),
            ..self
        }
    }
}

/// The answer to a counter op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterResult {
    /// The counter's value.
    pub value: i64,
    /// What the request did.
    pub receipt: Receipt,
}

/// The answer to a set op.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetResult {
    /// The members, in byte order.
    pub members: Vec<Vec<u8>>,
    /// What the request did.
    pub receipt: Receipt,
    /// After an add or a remove: how many of the given members it changed
    /// the membership of ([`Reply::Set`]'s `changed`). `None` after a
    /// read, or from a node that does not count.
    pub changed: Option<u64>,
}

/// A client of a ringkv cluster. Cheap to clone: clones share the
/// connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<String>,
    config: ClientConfig,
    next_id: AtomicU64,
    slot: Mutex<Slot>,
}

/// The current connection, and where to connect next.
struct Slot {
    conn: Option<Arc<Conn>>,
    /// Index into `addrs` of the next address to try.
    next_addr: usize,
}

/// A connection's halves, over plain TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// One open connection.
struct Conn {
    addr: String,
    node: NodeId,
    writer: Mutex<FramedWrite<WriteHalf, LengthDelimitedCodec>>,
    state: Arc<ConnState>,
    reader: tokio::task::AbortHandle,
}

/// What the reader task shares with senders.
struct ConnState {
    /// Requests sent and not yet answered, by id. `None` once the
    /// connection is dead: nothing may be registered then.
    pending: StdMutex<Option<HashMap<u64, oneshot::Sender<Response>>>>,
    /// An error the node sent with id 0 (the connection limit, an oversized
    /// frame), kept as the reason the connection ended.
    closed_with: StdMutex<Option<ErrorReply>>,
    dead: AtomicBool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// How one attempt failed.
enum Failure {
    /// The request did not reach the node whole: safe to retry, even a
    /// write.
    NotSent(Error),
    /// The request was sent and no answer came.
    Lost { reason: String, timed_out: bool },
    /// The node answered with an error.
    Answered(ErrorReply),
}

impl Client {
    /// Connects to the first of `addrs` that answers a `Hello`, trying them
    /// in order.
    ///
    /// ```no_run
    /// # async fn run() -> ringkv::Result<()> {
    /// use ringkv::client::{Client, ClientConfig};
    /// let client = Client::connect(&["127.0.0.1:7101", "127.0.0.1:7102"], ClientConfig::default()).await?;
    /// client.put(b"users", b"ada", b"{\"born\": 1815}", None).await?;
    /// let read = client.get(b"users", b"ada").await?;
    /// assert_eq!(read.value.as_deref(), Some(&b"{\"born\": 1815}"[..]));
    /// // Resolve siblings, if any, by writing back with the context read.
    /// client.put(b"users", b"ada", b"{\"born\": 1815}", Some(&read.context)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect<S: AsRef<str>>(addrs: &[S], config: ClientConfig) -> Result<Client> {
        if addrs.is_empty() {
            return Err(Error::InvalidInput("no node addresses given".into()));
        }
        if config.max_attempts == 0 {
            return Err(Error::InvalidInput(
                "client: max_attempts must be at least 1".into(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                addrs: addrs.iter().map(|a| a.as_ref().to_string()).collect(),
                config,
                next_id: AtomicU64::new(1),
                slot: Mutex::new(Slot {
                    conn: None,
                    next_addr: 0,
                }),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The address and node id of the open connection, if any.
    pub async fn connected_to(&self) -> Option<(String, NodeId)> {
        let slot = self.inner.slot.lock().await;
        slot.conn
            .as_ref()
            .filter(|c| !c.state.dead.load(Ordering::Acquire))
            .map(|c| (c.addr.clone(), c.node))
    }

    /// Sends `op` and returns the node's reply, retrying as the module
    /// docs describe.
    pub async fn execute(&self, op: Op) -> Result<Reply> {
        let cfg = &self.inner.config;
        let is_write = op.is_write();
        let mut backoff = cfg.backoff_initial;
        let mut attempt = 1;
        loop {
            let (error, retry) = match self.attempt(&op).await {
                Ok(reply) => return Ok(reply),
                Err(Failure::NotSent(e)) => {
                    let retry = e.is_retryable();
                    (e, retry)
                }
                Err(Failure::Lost { reason, timed_out }) => {
                    if is_write {
                        // Sent and unanswered: it may have been applied.
                        let e = Error::OutcomeUnknown {
                            op: op.name(),
                            reason,
                        };
                        (e, false)
                    } else if timed_out {
                        let e = Error::Timeout {
                            operation: op.name(),
                            after: cfg.request_timeout,
                        };
                        (e, true)
                    } else {
                        let e = Error::io(
                            format!("{} on a connection that broke", op.name()),
                            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, reason),
                        );
                        (e, true)
                    }
                }
                Err(Failure::Answered(reply)) => {
                    let retry = reply.safe_to_retry(is_write);
                    (Error::Remote(reply), retry)
                }
            };
            if !retry || attempt >= cfg.max_attempts {
                return Err(error);
            }
            tracing::debug!(op = op.name(), attempt, %error, "client: retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(cfg.backoff_max);
            attempt += 1;
        }
    }

    /// One attempt: a fresh id, the current connection, one response.
    async fn attempt(&self, op: &Op) -> std::result::Result<Reply, Failure> {
        let conn = self.connection().await.map_err(Failure::NotSent)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request { id, op: op.clone() };
        let frame = codec::encode_frame(&request, self.inner.config.max_frame_bytes)
            .map_err(Failure::NotSent)?;
        let (tx, rx) = oneshot::channel();
        let registered = register(&conn.state, id, tx);
        if !registered {
            self.forget_conn(&conn).await;
            return Err(Failure::NotSent(connection_gone(&conn)));
        }
        let sent = conn.writer.lock().await.send(frame).await;
        if let Err(e) = sent {
            // `send` flushes the whole frame or fails before its last byte
            // is written, so a failed send left at most a partial frame,
            // which the node never executes.
            unregister(&conn.state, id);
            self.forget_conn(&conn).await;
            return Err(Failure::NotSent(Error::io(
                format!("sending to {}", conn.addr),
                e,
            )));
        }
        let response = match tokio::time::timeout(self.inner.config.request_timeout, rx).await {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => {
                self.forget_conn(&conn).await;
                let reason = match lock(&conn.state.closed_with).as_ref() {
                    Some(e) => format!("{} closed the connection: {}", conn.addr, e.message),
                    None => format!("connection to {} lost", conn.addr),
                };
                return Err(Failure::Lost {
                    reason,
                    timed_out: false,
                });
            }
            Err(_) => {
                unregister(&conn.state, id);
                return Err(Failure::Lost {
                    reason: format!(
                        "no answer from {} within {:?}",
                        conn.addr, self.inner.config.request_timeout
                    ),
                    timed_out: true,
                });
            }
        };
        match response.result {
            Ok(reply) => Ok(reply),
            Err(e) => {
                if e.code == ErrorCode::ShuttingDown {
                    self.forget_conn(&conn).await;
                }
                Err(Failure::Answered(e))
            }
        }
    }

    /// The open connection, or a new one to the next address that answers.
    async fn connection(&self) -> Result<Arc<Conn>> {
        let mut slot = self.inner.slot.lock().await;
        if let Some(conn) = &slot.conn {
            if !conn.state.dead.load(Ordering::Acquire) {
                return Ok(conn.clone());
            }
        }
        slot.conn = None;
        let addrs = &self.inner.addrs;
        let mut last = None;
        for i in 0..addrs.len() {
            let index = (slot.next_addr + i) % addrs.len();
            match self.open(&addrs[index]).await {
                Ok(conn) => {
                    // Next time this one fails, start with the one after.
                    slot.next_addr = (index + 1) % addrs.len();
                    let conn = Arc::new(conn);
                    slot.conn = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(addr = %addrs[index], error = %e, "client: cannot connect");
                    // A node that speaks another version will not change
                    // its mind; the next one likely speaks the same.
                    if let Error::Remote(r) = &e {
                        if r.code == ErrorCode::UnsupportedVersion {
                            return Err(e);
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidInput("no node addresses given".into())))
    }

    /// Drops `conn` if it is still the current connection, so that the
    /// next request fails over.
    async fn forget_conn(&self, conn: &Arc<Conn>) {
        conn.state.dead.store(true, Ordering::Release);
        let mut slot = self.inner.slot.lock().await;
        if slot.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            slot.conn = None;
        }
    }

    /// Opens a connection to `addr` and says hello.
    async fn open(&self, addr: &str) -> Result<Conn> {
        let cfg = &self.inner.config;
        let timeout = cfg.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                operation: "connect",
                after: timeout,
            })?
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half): (ReadHalf, WriteHalf) = match &cfg.tls {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(tls) => {
                let stream = tokio::time::timeout(timeout, tls.connect(addr, stream))
                    .await
                    .map_err(|_| Error::Timeout {
                        operation: "TLS handshake",
                        after: timeout,
                    })??;
                let (r, w) = tokio::io::split(stream);
                (Box::new(r), Box::new(w))
            }
        };
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(cfg.max_frame_bytes)
            .new_codec();
        let reader = FramedRead::new(read_half, codec.clone());
        let mut writer = FramedWrite::new(write_half, codec);
        let state = Arc::new(ConnState {
            pending: StdMutex::new(Some(HashMap::new())),
            closed_with: StdMutex::new(None),
            dead: AtomicBool::new(false),
        });

        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let hello = Request {
            id,
            op: Op::Hello {
                version: CLIENT_PROTOCOL_VERSION,
                client: cfg.client_name.clone(),
                user: cfg.credentials.as_ref().map(|c| c.user.clone()),
                password: cfg.credentials.as_ref().map(|c| c.password.clone()),
            },
        };
        let (tx, rx) = oneshot::channel();
        register(&state, id, tx);
        let reader =
            tokio::spawn(read_responses(reader, state.clone(), cfg.max_frame_bytes)).abort_handle();
        let frame = codec::encode_frame(&hello, cfg.max_frame_bytes)?;
        let greeted = tokio::time::timeout(timeout, async {
            writer
                .send(frame)
                .await
                .map_err(|e| Error::io(format!("sending hello to {addr}"), e))?;
            rx.await.map_err(|_| {
                let why = lock(&state.closed_with)
                    .as_ref()
                    .map_or_else(|| "closed".to_string(), |e| e.message.clone());
                match lock(&state.closed_with).clone() {
                    Some(reply) => Error::Remote(reply),
                    None => Error::io(
                        format!("hello to {addr}"),
                        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why),
                    ),
                }
            })
        })
        .await;
        let response = match greeted {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                reader.abort();
                return Err(e);
            }
            Err(_) => {
                reader.abort();
                return Err(Error::Timeout {
                    operation: "hello",
                    after: timeout,
                });
            }
        };
        let node = match response.result {
            Ok(Reply::Hello { node, .. }) => node,
            Ok(other) => {
                reader.abort();
                return Err(unexpected("hello", &other));
            }
            Err(e) => {
                reader.abort();
                return Err(Error::Remote(e));
            }
        };
        Ok(Conn {
            addr: addr.to_string(),
            node,
            writer: Mutex::new(writer),
            state,
            reader,
        })
    }

    // ---- typed operations ----

    /// Reads a key with the bucket's default options.
    pub async fn get(&self, bucket: &[u8], key: &[u8]) -> Result<GetResult> {
        self.get_with(bucket, key, ReadOptions::default()).await
    }

    /// Reads a key.
    pub async fn get_with(
        &self,
        bucket: &[u8],
        key: &[u8],
        options: ReadOptions,
    ) -> Result<GetResult> {
        let op = Op::Get {
            bucket: buf(bucket),
            key: buf(key),
            options,
        };
        match self.execute(op).await? {
            Reply::Object {
                value,
                siblings,
                context,
                receipt,
            } => Ok(GetResult {
                value: value.map(ByteBuf::into_vec),
                siblings,
                context: context.into_vec(),
                receipt,
            }),
            other => Err(unexpected("get", &other)),
        }
    }

    /// Reads several keys of `bucket` in one request (see
    /// [`Op::MultiGet`]): one result per key, in the order of `keys`, each
    /// what [`Client::get_with`] would return for it (a node's error for
    /// one key is [`Error::Remote`] in its place). The outer error is the
    /// whole batch's: refused (a limit, the role) or lost. Each key is an
    /// independent read: not a snapshot.
    pub async fn multi_get<K: AsRef<[u8]>>(
        &self,
        bucket: &[u8],
        keys: &[K],
        options: ReadOptions,
    ) -> Result<Vec<Result<GetResult>>> {
        let op = Op::MultiGet {
            bucket: buf(bucket),
            keys: keys.iter().map(|k| buf(k.as_ref())).collect(),
            options,
        };
        match self.execute(op).await? {
            Reply::Objects { items } if items.len() == keys.len() => Ok(items
                .into_iter()
                .map(|item| {
                    item.map(|o| GetResult {
                        value: o.value.map(ByteBuf::into_vec),
                        siblings: o.siblings,
                        context: o.context.into_vec(),
                        receipt: o.receipt,
                    })
                    .map_err(Error::Remote)
                })
                .collect()),
            other => Err(unexpected("multi_get", &other)),
        }
    }

    /// Writes several keys of `bucket` in one request (see
    /// [`Op::MultiPut`]): one result per item, in order, each what
    /// [`Client::put_with`] would return for it. No atomicity: some items
    /// may be stored and others not. The whole batch is retried only as a
    /// write is (refused before anything was written); a failed item is
    /// not retried: resend it if its error allows.
    pub async fn multi_put(
        &self,
        bucket: &[u8],
        items: &[BatchPut<'_>],
        options: WriteOptions,
    ) -> Result<Vec<Result<WriteResult>>> {
        let op = Op::MultiPut {
            bucket: buf(bucket),
            items: items
                .iter()
                .map(|i| PutItem {
                    key: buf(i.key),
                    value: buf(i.value),
                    context: i.context.map(buf),
                })
                .collect(),
            options,
        };
        match self.execute(op).await? {
            Reply::WrittenMany { items: got } if got.len() == items.len() => Ok(got
                .into_iter()
                .map(|item| {
                    item.map(|w| WriteResult {
                        context: w.context.into_vec(),
                        receipt: w.receipt,
                    })
                    .map_err(Error::Remote)
                })
                .collect()),
            other => Err(unexpected("multi_put", &other)),
        }
    }

    /// Writes a value. `context` is the one an earlier get returned (the
    /// write then replaces what that get saw), or `None` for a blind write.
    pub async fn put(
        &self,
        bucket: &[u8],
        key: &[u8],
        value: &[u8],
        context: Option<&[u8]>,
    ) -> Result<WriteResult> {
        self.put_with(bucket, key, value, context, WriteOptions::default())
            .await
    }

    /// Writes a value with explicit options.
    pub async fn put_with(
        &self,
        bucket: &[u8],
        key: &[u8],
        value: &[u8],
        context: Option<&[u8]>,
        options: WriteOptions,
    ) -> Result<WriteResult> {
        let op = Op::Put {
            bucket: buf(bucket),
            key: buf(key),
            value: buf(value),
            context: context.map(buf),
            options,
        };
        self.written("put", op).await
    }

    /// Deletes a key (writes a tombstone).
    pub async fn delete(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: Option<&[u8]>,
    ) -> Result<WriteResult> {
        let op = Op::Delete {
            bucket: buf(bucket),
            key: buf(key),
            context: context.map(buf),
            options: WriteOptions::default(),
        };
        self.written("delete", op).await
    }

    async fn written(&self, what: &str, op: Op) -> Result<WriteResult> {
        match self.execute(op).await? {
            Reply::Written { context, receipt } => Ok(WriteResult {
                context: context.into_vec(),
                receipt,
            }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// Adds `by` to a counter and returns its new value. Never retried
    /// once sent unless the node says it was not applied.
    pub async fn counter_add(&self, bucket: &[u8], key: &[u8], by: i64) -> Result<CounterResult> {
        let op = Op::CounterAdd {
            bucket: buf(bucket),
            key: buf(key),
            by,
            options: WriteOptions::default(),
        };
        self.counter("counter_add", op).await
    }

    /// Reads a counter.
    pub async fn counter_get(&self, bucket: &[u8], key: &[u8]) -> Result<CounterResult> {
        let op = Op::CounterGet {
            bucket: buf(bucket),
            key: buf(key),
            options: ReadOptions::default(),
        };
        self.counter("counter_get", op).await
    }

    async fn counter(&self, what: &str, op: Op) -> Result<CounterResult> {
        match self.execute(op).await? {
            Reply::Counter { value, receipt } => Ok(CounterResult { value, receipt }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// Adds members to a set.
    pub async fn set_add<M: AsRef<[u8]>>(
        &self,
        bucket: &[u8],
        key: &[u8],
        members: &[M],
    ) -> Result<SetResult> {
        let op = Op::SetAdd {
            bucket: buf(bucket),
            key: buf(key),
            members: members.iter().map(|m| buf(m.as_ref())).collect(),
            options: WriteOptions::default(),
            count_only: false,
        };
        self.set("set_add", op).await
    }

    /// Removes members from a set.
    pub async fn set_remove<M: AsRef<[u8]>>(
        &self,
        bucket: &[u8],
        key: &[u8],
        members: &[M],
    ) -> Result<SetResult> {
        let op = Op::SetRemove {
            bucket: buf(bucket),
            key: buf(key),
            members: members.iter().map(|m| buf(m.as_ref())).collect(),
            options: WriteOptions::default(),
            count_only: false,
        };
        self.set("set_remove", op).await
    }

    /// Reads a set.
    pub async fn set_members(&self, bucket: &[u8], key: &[u8]) -> Result<SetResult> {
        let op = Op::SetMembers {
            bucket: buf(bucket),
            key: buf(key),
            options: ReadOptions::default(),
        };
        self.set("set_members", op).await
    }

    async fn set(&self, what: &str, op: Op) -> Result<SetResult> {
        match self.execute(op).await? {
            Reply::Set {
                members,
                receipt,
                changed,
            } => Ok(SetResult {
                members: members.into_iter().map(ByteBuf::into_vec).collect(),
                receipt,
                changed,
            }),
            other => Err(unexpected(what, &other)),
        }
    }

    /// A bucket's properties.
    pub async fn bucket(&self, bucket: &[u8]) -> Result<BucketInfo> {
        let op = Op::GetBucket {
            bucket: buf(bucket),
        };
        match self.execute(op).await? {
            Reply::Bucket { props } => Ok(props),
            other => Err(unexpected("get_bucket", &other)),
        }
    }

    /// Sets a bucket's properties cluster-wide; returns them as stored.
    pub async fn set_bucket(&self, bucket: &[u8], props: BucketInfo) -> Result<BucketInfo> {
        let op = Op::SetBucket {
            bucket: buf(bucket),
            props,
        };
        match self.execute(op).await? {
            Reply::Bucket { props } => Ok(props),
            other => Err(unexpected("set_bucket", &other)),
        }
    }

    /// The ring as the connected node sees it.
    pub async fn ring(&self) -> Result<RingView> {
        match self.execute(Op::Ring).await? {
            Reply::Ring(view) => Ok(view),
            other => Err(unexpected("ring", &other)),
        }
    }

    /// The connected node's view of the cluster.
    pub async fn status(&self) -> Result<StatusView> {
        match self.execute(Op::Status).await? {
            Reply::Status(view) => Ok(view),
            other => Err(unexpected("status", &other)),
        }
    }

    /// The connected node's own stored copy of a key: no quorum, no
    /// repair, an empty receipt. A diagnostic (what one replica holds),
    /// not a consistent read.
    pub async fn local_get(&self, bucket: &[u8], key: &[u8]) -> Result<GetResult> {
        let op = Op::LocalGet {
            bucket: buf(bucket),
            key: buf(key),
        };
        match self.execute(op).await? {
            Reply::Object {
                value,
                siblings,
                context,
                receipt,
            } => Ok(GetResult {
                value: value.map(ByteBuf::into_vec),
                siblings,
                context: context.into_vec(),
                receipt,
            }),
            other => Err(unexpected("local_get", &other)),
        }
    }

    /// One page of `bucket`'s keys in token order (see [`Op::Scan`]):
    /// from the start with `cursor` `None`, else from the `cursor` of
    /// the previous page; at most `limit` keys (1 to
    /// [`crate::protocol::MAX_SCAN_LIMIT`]). The scan is done when the
    /// page's cursor is `None`; a page may be empty before that.
    pub async fn scan(
        &self,
        bucket: &[u8],
        cursor: Option<&[u8]>,
        limit: u32,
    ) -> Result<ScanResult> {
        self.scan_with(bucket, cursor, limit, ReadOptions::default())
            .await
    }

    /// [`Client::scan`] with explicit read options (`r`, `sloppy_quorum`,
    /// `timeout_ms`).
    pub async fn scan_with(
        &self,
        bucket: &[u8],
        cursor: Option<&[u8]>,
        limit: u32,
        options: ReadOptions,
    ) -> Result<ScanResult> {
        let op = Op::Scan {
            bucket: buf(bucket),
            cursor: cursor.map(buf),
            limit,
            options,
        };
        match self.execute(op).await? {
            Reply::Keys {
                keys,
                cursor,
                receipt,
            } => Ok(ScanResult {
                keys: keys.into_iter().map(ByteBuf::into_vec).collect(),
                cursor: cursor.map(ByteBuf::into_vec),
                receipt,
            }),
            other => Err(unexpected("scan", &other)),
        }
    }

    /// Every key of `bucket`, page by page of `page` keys, in token
    /// order. Not a snapshot: see [`Op::Scan`].
    pub async fn scan_all(&self, bucket: &[u8], page: u32) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let got = self.scan(bucket, cursor.as_deref(), page).await?;
            keys.extend(got.keys);
            match got.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// The nodes that hold `bucket`/`key` now, in preference order.
    pub async fn preference_list(&self, bucket: &[u8], key: &[u8]) -> Result<Vec<PreferenceEntry>> {
        let op = Op::PreferenceList {
            bucket: buf(bucket),
            key: buf(key),
        };
        match self.execute(op).await? {
            Reply::Preference { targets } => Ok(targets),
            other => Err(unexpected("preference_list", &other)),
        }
    }
}

impl Client {
    /// Decommissions the node this client is connected to (see
    /// [`Op::Leave`]); the ring view shows the leave once it has begun.
    pub async fn decommission(&self) -> Result<RingView> {
        match self.execute(Op::Leave).await? {
            Reply::Ring(view) => Ok(view),
            other => Err(unexpected("leave", &other)),
        }
    }

    /// Removes `node`, a member gone for good, from the ring (see
    /// [`Op::RemoveNode`]).
    pub async fn remove_node(&self, node: NodeId) -> Result<RingView> {
        match self.execute(Op::RemoveNode { node }).await? {
            Reply::Ring(view) => Ok(view),
            other => Err(unexpected("remove_node", &other)),
        }
    }

    /// Forgets `node`, a member gone for good (see [`Op::Forget`]): the
    /// node connected to marks it LEFT, which spreads to every member, and
    /// the ring then drops it. Returns that node's ring, which shows the
    /// removal once it has begun. Refused (`InvalidArgument`) for the node
    /// connected to itself and for a node it does not know.
    pub async fn forget(&self, node: NodeId) -> Result<RingView> {
        match self.execute(Op::Forget { node }).await? {
            Reply::Ring(view) => Ok(view),
            other => Err(unexpected("forget", &other)),
        }
    }

    /// Fault injection (see [`Op::BlockOutbound`]): the connected node
    /// drops every node-to-node frame it sends to `peers` until the next
    /// call; an empty slice heals. Returns the peers blocked now. Refused
    /// with `InvalidArgument` by a node not started with
    /// `--allow-fault-injection`. A client given several addresses may
    /// send it to any of them: connect to the one node it is meant for.
    pub async fn block_outbound(&self, peers: &[NodeId]) -> Result<Vec<NodeId>> {
        let op = Op::BlockOutbound {
            peers: peers.to_vec(),
        };
        match self.execute(op).await? {
            Reply::Blocked { peers } => Ok(peers),
            other => Err(unexpected("block_outbound", &other)),
        }
    }

    /// Writes the connected node's memtables to its files now (see
    /// [`Op::Flush`]); returns its engine's figures after.
    pub async fn flush(&self) -> Result<StorageView> {
        match self.execute(Op::Flush).await? {
            Reply::Storage(view) => Ok(view),
            other => Err(unexpected("flush", &other)),
        }
    }

    /// Runs the compactions the connected node's engine calls for now
    /// (see [`Op::Compact`]); returns its engine's figures after.
    pub async fn compact(&self) -> Result<StorageView> {
        match self.execute(Op::Compact).await? {
            Reply::Storage(view) => Ok(view),
            other => Err(unexpected("compact", &other)),
        }
    }

    /// Starts an anti-entropy round on the connected node now (see
    /// [`Op::Repair`]); returns the finished-round count its status shows
    /// once that round is over.
    pub async fn repair(&self, range: Option<TokenSpan>, peer: Option<NodeId>) -> Result<u64> {
        match self.execute(Op::Repair { range, peer }).await? {
            Reply::Repair { until_rounds } => Ok(until_rounds),
            other => Err(unexpected("repair", &other)),
        }
    }

    /// Writes a consistent copy of the connected node's store into `dir`
    /// on its machine (see [`Op::Snapshot`]).
    pub async fn snapshot(&self, dir: &str) -> Result<SnapshotView> {
        let op = Op::Snapshot { dir: dir.into() };
        match self.execute(op).await? {
            Reply::Snapshot(view) => Ok(view),
            other => Err(unexpected("snapshot", &other)),
        }
    }

    /// Drains the connected node: it refuses data ops from now on and
    /// leaves the ring (see [`Op::Drain`]).
    pub async fn drain(&self) -> Result<RingView> {
        match self.execute(Op::Drain).await? {
            Reply::Ring(view) => Ok(view),
            other => Err(unexpected("drain", &other)),
        }
    }

    /// Runs `op` on each of `nodes` (`None`: every member) through the
    /// connected node, waiting `timeout` for each (`None`: 30 s); see
    /// [`Op::OnNodes`]. One answer per node, in node order.
    pub async fn on_nodes(
        &self,
        nodes: Option<Vec<NodeId>>,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<Vec<NodeAnswer>> {
        let op = Op::OnNodes {
            nodes,
            op: Box::new(op),
            timeout_ms: timeout.map(|t| t.as_millis().clamp(1, u64::MAX as u128) as u64),
        };
        match self.execute(op).await? {
            Reply::Nodes { answers } => Ok(answers),
            other => Err(unexpected("on_nodes", &other)),
        }
    }
}

/// Reads responses until the connection ends, handing each to its waiter;
/// then fails every request still waiting (by dropping its sender).
async fn read_responses(
    mut reader: FramedRead<ReadHalf, LengthDelimitedCodec>,
    state: Arc<ConnState>,
    max: usize,
) {
    while let Some(Ok(frame)) = reader.next().await {
        let response: Response = match codec::decode(&frame, max) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "client: undecodable response; closing the connection");
                break;
            }
        };
        if response.id == 0 {
            // Not an answer to any request of ours (we never use id 0):
            // the node is telling why it closes the connection.
            if let Err(e) = response.result {
                *lock(&state.closed_with) = Some(e);
            }
            continue;
        }
        let waiter = lock(&state.pending)
            .as_mut()
            .and_then(|map| map.remove(&response.id));
        if let Some(waiter) = waiter {
            // The waiter may have timed out and left; nothing to do then.
            let _ = waiter.send(response);
        }
    }
    state.dead.store(true, Ordering::Release);
    lock(&state.pending).take();
}

/// Registers a waiter for `id`; false if the connection is already dead.
fn register(state: &ConnState, id: u64, tx: oneshot::Sender<Response>) -> bool {
    match lock(&state.pending).as_mut() {
        Some(map) => {
            map.insert(id, tx);
            true
        }
        None => false,
    }
}

fn unregister(state: &ConnState, id: u64) {
    if let Some(map) = lock(&state.pending).as_mut() {
        map.remove(&id);
    }
}

fn connection_gone(conn: &Conn) -> Error {
    Error::io(
        format!("connection to {}", conn.addr),
        std::io::Error::new(std::io::ErrorKind::NotConnected, "connection closed"),
    )
}

/// Locks a std mutex; a poisoned one (a panic while holding it, which
/// these short critical sections cannot cause) is still usable.
fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn buf(bytes: &[u8]) -> ByteBuf {
    ByteBuf::from(bytes.to_vec())
}

fn unexpected(what: &str, reply: &Reply) -> Error {
    let kind = match reply {
        Reply::Hello { .. } => "Hello",
        Reply::Object { .. } => "Object",
        Reply::Written { .. } => "Written",
        Reply::Counter { .. } => "Counter",
        Reply::Set { .. } => "Set",
        Reply::Bucket { .. } => "Bucket",
        Reply::Ring(_) => "Ring",
        Reply::Status(_) => "Status",
        Reply::Preference { .. } => "Preference",
        Reply::Blocked { .. } => "Blocked",
        Reply::Keys { .. } => "Keys",
        Reply::Objects { .. } => "Objects",
        Reply::WrittenMany { .. } => "WrittenMany",
        Reply::Storage(_) => "Storage",
        Reply::Repair { .. } => "Repair",
        Reply::Snapshot(_) => "Snapshot",
        Reply::Nodes { .. } => "Nodes",
    };
    Error::Decode {
        what: "Reply",
        reason: format!("{what} was answered with {kind}"),
    }
}
