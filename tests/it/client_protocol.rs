//! The client port and the Rust client against each other, and the port
//! against raw frames, over real TCP on 127.0.0.1.
//!
//! The node behind the port is a small in-test [`Handler`]: an in-memory
//! map and counters, plus a few buckets whose ops misbehave on purpose
//! (`gate` blocks until opened, `sleep` sleeps, `panic` panics), and a
//! script of errors to return before the next ops, to test the retry rules.
//! Nothing here depends on timing: orderings are forced with the gate, and
//! every wait is bounded by a timeout that only fails a test that hangs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use ringkv::client::{Client, ClientConfig};
use ringkv::codec;
use ringkv::node::client_port::{ClientPort, ClientPortConfig};
use ringkv::protocol::{
    ErrorCode, Handler, Op, ReadOptions, Reply, Request, Response, CLIENT_PROTOCOL_VERSION,
};
use ringkv::replication::Receipt;
use ringkv::{Error, NodeId};
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Bounds every wait in this file: only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(20);

/// `(bucket, key)`.
type BucketKey = (Vec<u8>, Vec<u8>);

struct State {
    node: u64,
    values: Mutex<HashMap<BucketKey, Vec<u8>>>,
    counters: Mutex<HashMap<Vec<u8>, i64>>,
    /// Errors to return, one per op, before ops run normally again.
    script: Mutex<VecDeque<Error>>,
    /// Ops executed (Hello excluded), scripted failures included.
    calls: AtomicU64,
    /// Hellos answered: one per connection a client opened.
    hellos: AtomicU64,
    running: AtomicUsize,
    max_running: AtomicUsize,
    gate: Semaphore,
}

#[derive(Clone)]
struct TestNode(Arc<State>);

impl TestNode {
    fn new(node: u64) -> Self {
        TestNode(Arc::new(State {
            node,
            values: Mutex::default(),
            counters: Mutex::default(),
            script: Mutex::default(),
            calls: AtomicU64::new(0),
            hellos: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            gate: Semaphore::new(0),
        }))
    }

    fn fail_next(&self, e: Error) {
        self.0.script.lock().unwrap().push_back(e);
    }

    fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::SeqCst)
    }
}

fn object(value: Option<Vec<u8>>) -> Reply {
    Reply::Object {
        value: value.map(ByteBuf::from),
        siblings: vec![],
        context: ByteBuf::from(vec![0xa0]),
        receipt: Receipt {
            asked: vec![NodeId(1)],
            answered: vec![NodeId(1)],
            ..Receipt::default()
        },
    }
}

impl Handler for TestNode {
    fn execute(&self, op: Op) -> BoxFuture<'static, ringkv::Result<Reply>> {
        let s = self.0.clone();
        async move {
            if let Op::Hello { .. } = op {
                s.hellos.fetch_add(1, Ordering::SeqCst);
                return Ok(Reply::Hello {
                    version: CLIENT_PROTOCOL_VERSION,
                    node: NodeId(s.node),
                    cluster: "test".into(),
                    role: None,
                });
            }
            s.calls.fetch_add(1, Ordering::SeqCst);
            let now = s.running.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_running.fetch_max(now, Ordering::SeqCst);
            let result = run(&s, op).await;
            s.running.fetch_sub(1, Ordering::SeqCst);
            result
        }
        .boxed()
    }
}

async fn run(s: &State, op: Op) -> ringkv::Result<Reply> {
    let scripted = s.script.lock().unwrap().pop_front();
    if let Some(e) = scripted {
        return Err(e);
    }
    match op {
        Op::Get { bucket, key, .. } => match bucket.as_slice() {
            b"gate" if key.as_slice() == b"wait" => {
                let permit = s.gate.acquire().await.map_err(|_| Error::Shutdown)?;
                permit.forget();
                Ok(object(Some(b"waited".to_vec())))
            }
            b"gate" => {
                s.gate.add_permits(1);
                Ok(object(Some(b"opened".to_vec())))
            }
            b"sleep" => {
                let ms: u64 = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| Error::InvalidInput("sleep key is not a number".into()))?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(object(Some(key.into_vec())))
            }
            b"panic" => panic!("the test handler panics on purpose"),
            // A value of `key` KiB.
            b"big" => {
                let kib: usize = std::str::from_utf8(&key)
                    .ok()
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(|| Error::InvalidInput("big key is not a number".into()))?;
                Ok(object(Some(vec![0x5a; kib * 1024])))
            }
            _ => {
                let values = s.values.lock().unwrap();
                Ok(object(
                    values.get(&(bucket.into_vec(), key.into_vec())).cloned(),
                ))
            }
        },
        Op::Put {
            bucket, key, value, ..
        } => {
            s.values
                .lock()
                .unwrap()
                .insert((bucket.into_vec(), key.into_vec()), value.into_vec());
            Ok(Reply::Written {
                context: ByteBuf::from(vec![0xa1, 0x01, 0x01]),
                receipt: Receipt::default(),
            })
        }
        Op::CounterAdd { key, by, .. } => {
            if key.as_slice() == b"slow" {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut counters = s.counters.lock().unwrap();
            let value = counters.entry(key.into_vec()).or_insert(0);
            *value += by;
            Ok(Reply::Counter {
                value: *value,
                receipt: Receipt::default(),
            })
        }
        other => Err(Error::InvalidInput(format!(
            "the test node does not do {}",
            other.name()
        ))),
    }
}

async fn start(node: &TestNode, config: ClientPortConfig) -> ClientPort {
    ClientPort::start("127.0.0.1:0", Arc::new(node.clone()), config)
        .await
        .unwrap()
}

fn fast_client() -> ClientConfig {
    ClientConfig {
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        ..ClientConfig::default()
    }
}

/// A raw framed connection, for sending what no client would.
struct Raw(Framed<TcpStream, LengthDelimitedCodec>);

impl Raw {
    async fn connect(port: &ClientPort) -> Raw {
        let stream = TcpStream::connect(port.local_addr()).await.unwrap();
        Raw(Framed::new(stream, LengthDelimitedCodec::new()))
    }

    async fn send_bytes(&mut self, frame: Vec<u8>) {
        self.0.send(Bytes::from(frame)).await.unwrap();
    }

    async fn send(&mut self, id: u64, op: Op) {
        self.send_bytes(codec::encode(&Request { id, op }).unwrap())
            .await;
    }

    /// The next response, or `None` when the node closed the connection.
    async fn recv(&mut self) -> Option<Response> {
        let frame = tokio::time::timeout(LIMIT, self.0.next())
            .await
            .expect("no response in time")?
            .ok()?;
        Some(codec::decode(&frame, 1 << 24).unwrap())
    }

    async fn hello(&mut self, id: u64) -> Response {
        self.send(
            id,
            Op::Hello {
                version: CLIENT_PROTOCOL_VERSION,
                client: "raw".into(),
                user: None,
                password: None,
            },
        )
        .await;
        self.recv().await.unwrap()
    }
}

fn get(bucket: &[u8], key: &[u8]) -> Op {
    Op::Get {
        bucket: ByteBuf::from(bucket.to_vec()),
        key: ByteBuf::from(key.to_vec()),
        options: ReadOptions::default(),
    }
}

fn error_code(r: &Response) -> ErrorCode {
    match &r.result {
        Err(e) => e.code,
        Ok(reply) => panic!("expected an error, got {reply:?}"),
    }
}

fn remote(e: &Error) -> &ringkv::protocol::ErrorReply {
    match e {
        Error::Remote(r) => r,
        other => panic!("expected a node's error, got {other:?}"),
    }
}

#[tokio::test]
async fn hello_put_get_through_the_client() {
    let node = TestNode::new(7);
    let port = start(&node, ClientPortConfig::default()).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    let (_, id) = client.connected_to().await.unwrap();
    assert_eq!(id, NodeId(7));
    assert_eq!(client.get(b"b", b"k").await.unwrap().value, None);
    let written = client.put(b"b", b"k", b"v1", None).await.unwrap();
    assert_eq!(written.context, vec![0xa1, 0x01, 0x01]);
    let read = client.get(b"b", b"k").await.unwrap();
    assert_eq!(read.value, Some(b"v1".to_vec()));
    assert_eq!(read.receipt.answered, vec![NodeId(1)]);
    assert_eq!(client.counter_add(b"c", b"n", 5).await.unwrap().value, 5);
    assert_eq!(client.counter_add(b"c", b"n", -2).await.unwrap().value, 3);
    // An op the node refuses: not retryable, the node's code comes back.
    let err = client.ring().await.unwrap_err();
    assert_eq!(remote(&err).code, ErrorCode::InvalidArgument);
    assert!(!err.is_retryable());
    port.shutdown().await;
}

#[tokio::test]
async fn garbage_and_truncated_frames_get_bad_request_and_the_connection_stays() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let mut raw = Raw::connect(&port).await;

    // Not CBOR at all: nothing readable, so id 0.
    raw.send_bytes(vec![0xff, 0xfe, 0x00, 0x13, 0x37]).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::BadRequest));

    // A valid request cut short: the decoder sees truncated CBOR.
    let whole = codec::encode(&Request {
        id: 42,
        op: get(b"b", b"k"),
    })
    .unwrap();
    raw.send_bytes(whole[..whole.len() - 3].to_vec()).await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::BadRequest));

    // An empty frame.
    raw.send_bytes(vec![]).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(error_code(&r), ErrorCode::BadRequest);

    // An op this node does not know, with a readable id: the id comes back.
    // {"id": 9, "op": {"Fly": {}}}
    raw.send_bytes(vec![
        0xa2, 0x62, b'i', b'd', 0x09, 0x62, b'o', b'p', 0xa1, 0x63, b'F', b'l', b'y', 0xa0,
    ])
    .await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.id, error_code(&r)), (9, ErrorCode::BadRequest));
    match &r.result {
        Err(e) => assert!(!e.retryable, "{e:?}"),
        Ok(_) => unreachable!(),
    }

    // The connection still serves real requests.
    let hello = raw.hello(10).await;
    assert_eq!(hello.id, 10);
    assert!(matches!(hello.result, Ok(Reply::Hello { .. })), "{hello:?}");
    raw.send(11, get(b"b", b"k")).await;
    let r = raw.recv().await.unwrap();
    assert_eq!(r.id, 11);
    assert!(r.result.is_ok(), "{r:?}");
    port.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_that_connection_only() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_frame_bytes: 4096,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    client.put(b"b", b"k", b"before", None).await.unwrap();

    let mut raw = Raw::connect(&port).await;
    assert!(raw.hello(1).await.result.is_ok());
    raw.send_bytes(vec![0xa0; 5000]).await;
    let r = raw
        .recv()
        .await
        .expect("an error response before the close");
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::BadRequest));
    assert!(raw.recv().await.is_none(), "the connection must be closed");

    // A length prefix of 2 GiB with no body at all: same answer, and the
    // node does not wait for (or allocate) the body.
    let mut raw = Raw::connect(&port).await;
    use tokio::io::AsyncWriteExt;
    raw.0.get_mut().write_all(&[0x80, 0, 0, 0]).await.unwrap();
    let r = raw
        .recv()
        .await
        .expect("an error response before the close");
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::BadRequest));
    assert!(raw.recv().await.is_none());

    // The other client's connection never noticed.
    client.put(b"b", b"k", b"after", None).await.unwrap();
    assert_eq!(
        client.get(b"b", b"k").await.unwrap().value,
        Some(b"after".to_vec())
    );
    // And the client's own oversized request is refused before sending.
    let big = vec![0u8; 8192];
    let client_small = Client::connect(
        &[port.local_addr().to_string()],
        ClientConfig {
            max_frame_bytes: 4096,
            ..fast_client()
        },
    )
    .await
    .unwrap();
    let err = client_small.put(b"b", b"k", &big, None).await.unwrap_err();
    assert!(matches!(err, Error::FrameTooLarge { .. }), "{err:?}");
    assert!(client_small.get(b"b", b"k").await.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_as_they_finish() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let mut raw = Raw::connect(&port).await;
    // id 1 blocks until id 2 opens the gate: if the port ran requests one
    // at a time, this would hang.
    raw.send(1, get(b"gate", b"wait")).await;
    raw.send(2, get(b"gate", b"open")).await;
    let first = raw.recv().await.unwrap();
    let second = raw.recv().await.unwrap();
    assert_eq!((first.id, second.id), (2, 1));

    // The same through the client, from two tasks on one connection.
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move { client.get(b"gate", b"wait").await })
    };
    // Open until the waiter is through: an open that runs first leaves a
    // permit for the waiter, so either order ends.
    let opened = client.get(b"gate", b"open").await.unwrap();
    assert_eq!(opened.value, Some(b"opened".to_vec()));
    let waited = tokio::time::timeout(LIMIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(waited.value, Some(b"waited".to_vec()));
    port.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_runs_at_most_its_limit_at_once() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_in_flight_per_connection: 2,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let mut raw = Raw::connect(&port).await;
    for id in 1..=6 {
        raw.send(id, get(b"sleep", b"30")).await;
    }
    let mut ids = Vec::new();
    for _ in 1..=6 {
        ids.push(raw.recv().await.unwrap().id);
    }
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 6]);
    let max = node.0.max_running.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} ran at once");
    port.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_one_error_and_are_closed() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_connections: 2,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let mut a = Raw::connect(&port).await;
    let mut b = Raw::connect(&port).await;
    // A hello each proves both were accepted before the third arrives.
    assert!(a.hello(1).await.result.is_ok());
    assert!(b.hello(1).await.result.is_ok());
    let mut c = Raw::connect(&port).await;
    let r = c.recv().await.expect("a refusal");
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::Overloaded));
    assert!(c.recv().await.is_none());
    // The client reports the refusal as the node's error, and retryable.
    let err = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .err()
        .expect("the connection limit refuses the client");
    assert!(err.is_retryable(), "{err:?}");
    // The two accepted connections still work; once one closes, a new one
    // gets in.
    a.send(2, get(b"b", b"k")).await;
    assert!(a.recv().await.unwrap().result.is_ok());
    drop(b);
    let client = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(c) = Client::connect(&[port.local_addr().to_string()], fast_client()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(client.get(b"b", b"k").await.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn hello_with_another_version_is_refused() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let mut raw = Raw::connect(&port).await;
    raw.send(
        5,
        Op::Hello {
            version: CLIENT_PROTOCOL_VERSION + 1,
            client: "future".into(),
            user: None,
            password: None,
        },
    )
    .await;
    let r = raw.recv().await.unwrap();
    assert_eq!((r.id, error_code(&r)), (5, ErrorCode::UnsupportedVersion));
    // The connection stays open for a hello with the right version.
    assert!(raw.hello(6).await.result.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn a_panicking_request_fails_alone() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    let err = client.get(b"panic", b"k").await.unwrap_err();
    assert_eq!(remote(&err).code, ErrorCode::Internal);
    assert_eq!(node.calls(), 1, "an internal error is not retried");
    assert!(client.get(b"b", b"k").await.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn node_errors_map_to_codes_and_back() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    node.fail_next(Error::TooManySiblings {
        siblings: 9,
        max: 8,
    });
    let err = client.put(b"b", b"k", b"v", None).await.unwrap_err();
    let r = remote(&err);
    assert_eq!(r.code, ErrorCode::TooManySiblings);
    assert_eq!(r.indefinite, Some(false));
    assert!(!r.retryable);

    node.fail_next(Error::Unavailable {
        needed: 2,
        got: 1,
        indefinite: false,
    });
    node.fail_next(Error::Unavailable {
        needed: 2,
        got: 0,
        indefinite: false,
    });
    node.fail_next(Error::Unavailable {
        needed: 2,
        got: 1,
        indefinite: false,
    });
    node.fail_next(Error::Unavailable {
        needed: 3,
        got: 1,
        indefinite: false,
    });
    let before = node.calls();
    let err = client.get(b"b", b"k").await.unwrap_err();
    let r = remote(&err);
    // Four attempts (the default), each refused; the last answer comes back.
    assert_eq!(node.calls() - before, 4);
    assert_eq!(
        (r.code, r.needed, r.got, r.indefinite),
        (ErrorCode::Unavailable, Some(3), Some(1), None)
    );
    assert!(err.is_retryable());
    port.shutdown().await;
}

#[tokio::test]
async fn retries_follow_the_rules() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    let quorum_timeout = |indefinite| Error::QuorumTimeout {
        needed: 2,
        got: 1,
        after: Duration::from_secs(1),
        indefinite,
    };

    // A read with a retryable error is retried, and then succeeds.
    node.fail_next(quorum_timeout(false));
    let before = node.calls();
    client.put(b"b", b"r", b"v", None).await.unwrap();
    assert_eq!(
        node.calls() - before,
        2,
        "a definite write failure is retried"
    );

    node.fail_next(Error::Replica("disk hiccup".into()));
    let before = node.calls();
    assert_eq!(
        client.get(b"b", b"r").await.unwrap().value,
        Some(b"v".to_vec())
    );
    assert_eq!(node.calls() - before, 2, "a retryable read is retried");

    // A write that may have been applied is never retried.
    node.fail_next(quorum_timeout(true));
    let before = node.calls();
    let err = client.counter_add(b"c", b"n", 1).await.unwrap_err();
    assert_eq!(node.calls() - before, 1);
    assert_eq!(remote(&err).indefinite, Some(true));
    assert!(remote(&err).retryable, "retryable, but not safely");
    assert_eq!(client.counter_add(b"c", b"n", 0).await.unwrap().value, 0);

    // A non-retryable error is not retried, read or write.
    node.fail_next(Error::InvalidInput("no".into()));
    let before = node.calls();
    assert!(client.get(b"b", b"r").await.is_err());
    assert_eq!(node.calls() - before, 1);

    // The node shutting down a read: retryable.
    node.fail_next(Error::Shutdown);
    let before = node.calls();
    assert!(client.get(b"b", b"r").await.is_ok());
    assert_eq!(node.calls() - before, 2);
    port.shutdown().await;
}

#[tokio::test]
async fn a_write_without_an_answer_is_not_retried_but_a_read_is() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let config = ClientConfig {
        request_timeout: Duration::from_millis(200),
        max_attempts: 3,
        ..fast_client()
    };
    let client = Client::connect(&[port.local_addr().to_string()], config)
        .await
        .unwrap();
    // The add sleeps 2 s; the client gives up after 200 ms, so it cannot
    // know whether the add happened.
    let before = node.calls();
    let err = client.counter_add(b"c", b"slow", 1).await.unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(node.calls() - before, 1);
    // It did happen, once: the node finishes it.
    let counted = tokio::time::timeout(LIMIT, async {
        loop {
            let v = client.counter_add(b"c", b"slow-check", 0).await;
            let slow = node
                .0
                .counters
                .lock()
                .unwrap()
                .get(&b"slow".to_vec())
                .copied();
            if let (Ok(_), Some(v)) = (v, slow) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(counted, 1);

    // A read that times out is retried, up to max_attempts.
    let before = node.calls();
    let err = client.get(b"sleep", b"1000").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(node.calls() - before, 3);
    port.shutdown().await;
}

#[tokio::test]
async fn the_client_fails_over_to_the_next_address() {
    let one = TestNode::new(1);
    let two = TestNode::new(2);
    let port_one = start(&one, ClientPortConfig::default()).await;
    let port_two = start(&two, ClientPortConfig::default()).await;
    // An address where nothing listens comes first.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let addrs = [
        dead,
        port_one.local_addr().to_string(),
        port_two.local_addr().to_string(),
    ];
    let client = Client::connect(&addrs, fast_client()).await.unwrap();
    assert_eq!(client.connected_to().await.unwrap().1, NodeId(1));
    client.put(b"b", b"k", b"on-one", None).await.unwrap();

    port_one.shutdown().await;
    // The next read finds the connection gone and moves on to node 2.
    let read = client.get(b"b", b"k").await.unwrap();
    assert_eq!(read.value, None, "node 2 never saw the put");
    assert_eq!(client.connected_to().await.unwrap().1, NodeId(2));
    assert!(one.calls() >= 1 && two.calls() >= 1);
    port_two.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_requests_finish_within_the_grace_period() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let mut raw = Raw::connect(&port).await;
    // Blocked forever: the grace period ends it.
    raw.send(1, get(b"gate", b"wait")).await;
    // Sleeping briefly: it finishes.
    raw.send(2, get(b"sleep", b"20")).await;
    // Make sure both are running before shutting down.
    tokio::time::timeout(LIMIT, async {
        while node.0.running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::timeout(LIMIT, port.shutdown()).await.unwrap();
    let mut answers = HashMap::new();
    while let Some(r) = raw.recv().await {
        answers.insert(r.id, r.result);
    }
    assert!(
        matches!(answers.get(&2), Some(Ok(Reply::Object { .. }))),
        "{answers:?}"
    );
    match answers.get(&1) {
        Some(Err(e)) => {
            assert_eq!(e.code, ErrorCode::ShuttingDown);
            assert!(e.retryable);
            assert_eq!(e.indefinite, None, "a read");
        }
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
    // And nothing listens any more.
    assert!(TcpStream::connect(port.local_addr()).await.is_err());
}

#[test]
fn the_port_runs_in_an_actix_system() {
    let system = actix_rt::System::new();
    system.block_on(async {
        let node = TestNode::new(3);
        let port = start(&node, ClientPortConfig::default()).await;
        let client = Client::connect(&[port.local_addr().to_string()], fast_client())
            .await
            .unwrap();
        client.put(b"b", b"k", b"v", None).await.unwrap();
        let mut raw = Raw::connect(&port).await;
        raw.send_bytes(vec![0x1f; 10]).await;
        assert_eq!(
            error_code(&raw.recv().await.unwrap()),
            ErrorCode::BadRequest
        );
        assert_eq!(
            client.get(b"b", b"k").await.unwrap().value,
            Some(b"v".to_vec())
        );
        port.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_never_touches_a_good_client() {
    use rand::{Rng, SeedableRng};
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_frame_bytes: 64 * 1024,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let addr = port.local_addr();
    // Sixteen hostile connections: random frames (some valid CBOR shapes
    // with wrong types, most noise), and raw bytes that break the framing.
    let mut hostile = Vec::new();
    for seed in 0..16u64 {
        hostile.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut raw = Raw(Framed::new(stream, LengthDelimitedCodec::new()));
            let mut answered = 0;
            for _ in 0..40 {
                let len = rng.random_range(0..200);
                let mut frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if rng.random_bool(0.3) && !frame.is_empty() {
                    frame[0] = 0xa2; // a map head, to reach deeper decoding
                }
                if raw.0.send(Bytes::from(frame)).await.is_err() {
                    break;
                }
                match raw.recv().await {
                    Some(r) => {
                        assert_eq!(error_code(&r), ErrorCode::BadRequest, "{r:?}");
                        answered += 1;
                    }
                    None => break,
                }
            }
            // Then break the framing: a length far past the limit.
            use tokio::io::AsyncWriteExt;
            let _ = raw
                .0
                .get_mut()
                .write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
                .await;
            answered
        }));
    }
    let client = Client::connect(&[addr.to_string()], fast_client())
        .await
        .unwrap();
    for i in 0..100u32 {
        let key = format!("k{i}");
        client
            .put(b"b", key.as_bytes(), &i.to_be_bytes(), None)
            .await
            .unwrap();
        let read = client.get(b"b", key.as_bytes()).await.unwrap();
        assert_eq!(read.value, Some(i.to_be_bytes().to_vec()));
    }
    let mut total = 0;
    for h in hostile {
        total += tokio::time::timeout(LIMIT, h).await.unwrap().unwrap();
    }
    assert_eq!(total, 16 * 40, "every garbage frame got its BadRequest");
    // The node is still fine for new connections.
    let again = Client::connect(&[addr.to_string()], fast_client())
        .await
        .unwrap();
    assert_eq!(
        again.get(b"b", b"k99").await.unwrap().value,
        Some(99u32.to_be_bytes().to_vec())
    );
    port.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_one_connection_and_each_gets_its_own_answer() {
    let node = TestNode::new(1);
    let port = start(&node, ClientPortConfig::default()).await;
    let client = Client::connect(&[port.local_addr().to_string()], fast_client())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{i}");
            let value = format!("value-{i}");
            client
                .put(b"many", key.as_bytes(), value.as_bytes(), None)
                .await?;
            let read = client.get(b"many", key.as_bytes()).await?;
            Ok::<_, Error>((value.into_bytes(), read.value))
        }));
    }
    for task in tasks {
        let (wrote, read) = tokio::time::timeout(LIMIT, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(read, Some(wrote));
    }
    // One connection carried all of them: the node saw one hello.
    assert_eq!(node.calls(), 400);
    assert_eq!(node.0.hellos.load(Ordering::SeqCst), 1);
    assert_eq!(client.connected_to().await.unwrap().1, NodeId(1));
    port.shutdown().await;
}

// ---------------------------------------------------------------------
// Authentication and roles.
// ---------------------------------------------------------------------

/// A port whose users are `reader`, `writer` and `admin`, each with the
/// password `<name>-pw` (argon2id at a test's cost).
async fn start_with_users(node: &TestNode) -> ClientPort {
    use ringkv::node::auth::{hash_password_with_cost, Users};
    let mut text = String::new();
    for (name, role) in [
        ("reader", "read"),
        ("writer", "readwrite"),
        ("admin", "admin"),
    ] {
        let hash = hash_password_with_cost(&format!("{name}-pw"), 64, 1).unwrap();
        text.push_str(&format!(
            "[[user]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n"
        ));
    }
    let config = ClientPortConfig {
        auth: ringkv::node::client_port::ClientAuth::Users(Arc::new(Users::parse(&text).unwrap())),
        ..ClientPortConfig::default()
    };
    start(node, config).await
}

fn hello_as(user: &str, password: &str) -> Op {
    Op::Hello {
        version: CLIENT_PROTOCOL_VERSION,
        client: "raw".into(),
        user: Some(user.into()),
        password: Some(password.into()),
    }
}

/// One op of every role, the admin ones included.
fn ops_by_role() -> Vec<(Op, ringkv::protocol::Role)> {
    use ringkv::protocol::{BucketInfo, Role, WriteOptions};
    let b = |s: &[u8]| ByteBuf::from(s.to_vec());
    vec![
        (get(b"b", b"k"), Role::Read),
        (Op::Ring, Role::Read),
        (Op::Status, Role::Read),
        (
            Op::Put {
                bucket: b(b"b"),
                key: b(b"k"),
                value: b(b"v"),
                context: None,
                options: WriteOptions::default(),
            },
            Role::ReadWrite,
        ),
        (
            Op::CounterAdd {
                bucket: b(b"c"),
                key: b(b"k"),
                by: 1,
                options: WriteOptions::default(),
            },
            Role::ReadWrite,
        ),
        (
            Op::SetBucket {
                bucket: b(b"b"),
                props: BucketInfo::from(&ringkv::BucketProps::default()),
            },
            Role::Admin,
        ),
        (Op::Leave, Role::Admin),
        (Op::RemoveNode { node: NodeId(2) }, Role::Admin),
        (Op::Forget { node: NodeId(2) }, Role::Admin),
        (
            Op::BlockOutbound {
                peers: vec![NodeId(2)],
            },
            Role::Admin,
        ),
        (Op::Flush, Role::Admin),
        (Op::Compact, Role::Admin),
        (
            Op::Repair {
                range: None,
                peer: None,
            },
            Role::Admin,
        ),
        (
            Op::Snapshot {
                dir: "/nonexistent/snap".into(),
            },
            Role::Admin,
        ),
        (Op::Drain, Role::Admin),
        // OnNodes needs what its op needs: a reader may see every node's
        // status, and only an admin may flush them.
        (
            Op::OnNodes {
                nodes: None,
                op: Box::new(Op::Status),
                timeout_ms: None,
            },
            Role::Read,
        ),
        (
            Op::OnNodes {
                nodes: None,
                op: Box::new(Op::Flush),
                timeout_ms: None,
            },
            Role::Admin,
        ),
    ]
}

#[tokio::test]
async fn without_credentials_nothing_but_hello_reaches_the_node() {
    let node = TestNode::new(1);
    let port = start_with_users(&node).await;
    let mut raw = Raw::connect(&port).await;
    // Hello without credentials: answered, with no role.
    match raw.hello(1).await.result {
        Ok(Reply::Hello { role, .. }) => assert_eq!(role, None),
        other => panic!("{other:?}"),
    }
    for (i, (op, _)) in ops_by_role().into_iter().enumerate() {
        let is_write = op.is_write();
        raw.send(10 + i as u64, op).await;
        let r = raw.recv().await.unwrap();
        assert_eq!(r.id, 10 + i as u64);
        assert_eq!(error_code(&r), ErrorCode::Unauthenticated);
        let e = r.result.unwrap_err();
        assert!(!e.retryable);
        // A refused write was certainly not applied.
        if is_write {
            assert_eq!(e.indefinite, Some(false));
        }
    }
    assert_eq!(node.calls(), 0, "a refused op reached the handler");
    port.shutdown().await;
}

#[tokio::test]
async fn each_role_runs_its_ops_and_is_refused_the_others_before_the_node_sees_them() {
    use ringkv::protocol::Role;
    let node = TestNode::new(1);
    let port = start_with_users(&node).await;
    for (user, role) in [
        ("reader", Role::Read),
        ("writer", Role::ReadWrite),
        ("admin", Role::Admin),
    ] {
        let mut raw = Raw::connect(&port).await;
        raw.send(1, hello_as(user, &format!("{user}-pw"))).await;
        match raw.recv().await.unwrap().result {
            Ok(Reply::Hello { role: got, .. }) => assert_eq!(got, Some(role)),
            other => panic!("{user}: {other:?}"),
        }
        for (i, (op, needed)) in ops_by_role().into_iter().enumerate() {
            let name = op.name();
            let before = node.calls();
            raw.send(100 + i as u64, op).await;
            let r = raw.recv().await.unwrap();
            if role >= needed {
                // Allowed: it reached the handler (which may not do it).
                assert_eq!(node.calls(), before + 1, "{user} {name}");
                if let Err(e) = &r.result {
                    assert_ne!(e.code, ErrorCode::PermissionDenied, "{user} {name}");
                }
            } else {
                assert_eq!(error_code(&r), ErrorCode::PermissionDenied, "{user} {name}");
                let message = r.result.unwrap_err().message;
                assert!(message.contains(needed.name()), "{message}");
                assert_eq!(node.calls(), before, "{user} {name} reached the handler");
            }
        }
    }
    port.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_are_refused_alike_and_three_close_the_connection() {
    let node = TestNode::new(1);
    let port = start_with_users(&node).await;
    let mut raw = Raw::connect(&port).await;
    let attempts = [
        hello_as("admin", "wrong"),
        hello_as("nobody", "admin-pw"),
        Op::Hello {
            version: CLIENT_PROTOCOL_VERSION,
            client: "raw".into(),
            user: Some("admin".into()),
            password: None,
        },
    ];
    let mut messages = Vec::new();
    for (i, op) in attempts.into_iter().enumerate() {
        raw.send(i as u64 + 1, op).await;
        let r = raw.recv().await.expect("an answer before the close");
        assert_eq!(error_code(&r), ErrorCode::Unauthenticated);
        messages.push(r.result.unwrap_err().message);
    }
    // A wrong password and an unknown user read the same.
    assert_eq!(messages[0], messages[1]);
    // The third failure closed the connection.
    raw.send(9, get(b"b", b"k")).await;
    assert!(raw.recv().await.is_none(), "the connection stayed open");

    // The right password on a new connection works, and switching user on
    // the same connection changes the role.
    let mut raw = Raw::connect(&port).await;
    raw.send(1, hello_as("admin", "admin-pw")).await;
    assert!(raw.recv().await.unwrap().result.is_ok());
    raw.send(2, hello_as("reader", "reader-pw")).await;
    assert!(raw.recv().await.unwrap().result.is_ok());
    raw.send(3, Op::Leave).await;
    assert_eq!(
        error_code(&raw.recv().await.unwrap()),
        ErrorCode::PermissionDenied
    );
    port.shutdown().await;
}

#[tokio::test]
async fn the_rust_client_sends_its_credentials_on_every_connection() {
    use ringkv::client::Credentials;
    let node = TestNode::new(1);
    let port = start_with_users(&node).await;
    let addr = port.local_addr().to_string();
    let config = ClientConfig {
        credentials: Some(Credentials::new("writer", "writer-pw")),
        ..fast_client()
    };
    let client = Client::connect(&[&addr], config.clone()).await.unwrap();
    client.put(b"b", b"k", b"v", None).await.unwrap();
    assert_eq!(
        client.get(b"b", b"k").await.unwrap().value,
        Some(b"v".to_vec())
    );
    let e = client.decommission().await.unwrap_err();
    assert_eq!(remote(&e).code, ErrorCode::PermissionDenied);
    assert!(
        !format!("{config:?}").contains("writer-pw"),
        "the password leaked into Debug"
    );

    // No credentials: connected, and refused.
    let anonymous = Client::connect(&[&addr], fast_client()).await.unwrap();
    let e = anonymous.get(b"b", b"k").await.unwrap_err();
    assert_eq!(remote(&e).code, ErrorCode::Unauthenticated);
    // Wrong credentials: the connect itself fails, and says why.
    let wrong = ClientConfig {
        credentials: Some(Credentials::new("writer", "nope")),
        ..fast_client()
    };
    let Err(e) = Client::connect(&[&addr], wrong).await else {
        panic!("connected with a wrong password");
    };
    assert_eq!(remote(&e).code, ErrorCode::Unauthenticated, "{e}");
    port.shutdown().await;
}

// ---------------------------------------------------------------------
// Connections that hold a slot for nothing.
// ---------------------------------------------------------------------

/// Waits for the node to close `raw` (EOF or reset), for at most `limit`.
async fn closed_within(raw: &mut Raw, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, raw.0.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            // An error frame before the close.
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_frames_are_closed_and_busy_connections_are_not() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        idle_timeout: Duration::from_millis(400),
        frame_timeout: Duration::from_millis(400),
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let mut idle = Raw::connect(&port).await;
    let mut dribbler = Raw::connect(&port).await;
    // Four bytes of length (100) and ten of body, then nothing.
    use tokio::io::AsyncWriteExt;
    let mut half = 100u32.to_be_bytes().to_vec();
    half.extend_from_slice(&[0xa2; 10]);
    dribbler.0.get_mut().write_all(&half).await.unwrap();
    let mut busy = Raw::connect(&port).await;
    let started = tokio::time::Instant::now();
    // The busy one sends a request every 100 ms for 1.5 s and is served
    // throughout.
    for i in 0..15 {
        busy.send(i, get(b"b", b"k")).await;
        assert!(
            busy.recv().await.unwrap().result.is_ok(),
            "busy was cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle kept"
    );
    assert!(
        closed_within(&mut dribbler, Duration::from_secs(5)).await,
        "dribbler kept"
    );
    // Not at once: each had its time.
    assert!(started.elapsed() >= Duration::from_millis(400));
    busy.send(99, get(b"b", b"k")).await;
    assert!(busy.recv().await.unwrap().result.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_is_told_and_closed() {
    let node = TestNode::new(1);
    let mut config = ClientPortConfig {
        auth_timeout: Duration::from_millis(300),
        ..ClientPortConfig::default()
    };
    {
        // The same users as start_with_users, at the short timeout.
        use ringkv::node::auth::{hash_password_with_cost, Users};
        let hash = hash_password_with_cost("reader-pw", 64, 1).unwrap();
        let users = Users::parse(&format!(
            "[[user]]\nname = \"reader\"\nrole = \"read\"\npassword_hash = \"{hash}\"\n"
        ))
        .unwrap();
        config.auth = ringkv::node::client_port::ClientAuth::Users(Arc::new(users));
    }
    let port = start(&node, config).await;
    let mut silent = Raw::connect(&port).await;
    let r = silent.recv().await.expect("an error before the close");
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::Unauthenticated));
    assert!(silent.recv().await.is_none(), "still open");
    // One that authenticates is kept past the timeout.
    let mut ok = Raw::connect(&port).await;
    ok.send(1, hello_as("reader", "reader-pw")).await;
    assert!(ok.recv().await.unwrap().result.is_ok());
    tokio::time::sleep(Duration::from_millis(600)).await;
    ok.send(2, get(b"b", b"k")).await;
    assert!(ok.recv().await.unwrap().result.is_ok());
    port.shutdown().await;
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_connections_per_ip: 2,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    let mut held = vec![Raw::connect(&port).await, Raw::connect(&port).await];
    for r in &mut held {
        assert!(r.hello(1).await.result.is_ok());
    }
    let mut third = Raw::connect(&port).await;
    let r = third.recv().await.expect("a refusal");
    assert_eq!(error_code(&r), ErrorCode::Overloaded);
    assert!(r.result.unwrap_err().message.contains("127.0.0.1"));
    // Another address on the loopback network still gets in.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = socket.connect(port.local_addr()).await.unwrap();
    let mut other = Raw(Framed::new(stream, LengthDelimitedCodec::new()));
    assert!(other.hello(1).await.result.is_ok());
    // A slot given back is taken again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let mut again = Raw::connect(&port).await;
        if again.hello(1).await.result.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    port.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_holds_its_budget_and_no_more() {
    const KIB: usize = 256;
    let node = TestNode::new(1);
    let config = ClientPortConfig {
        max_frame_bytes: 1 << 20,
        reply_budget_per_connection: 1 << 20,
        reply_budget_total: 2 << 20,
        ..ClientPortConfig::default()
    };
    let port = start(&node, config).await;
    // Two greedy clients pipeline 200 gets of 256 KiB each and read
    // nothing: 100 MiB of replies if the node kept them all.
    let mut greedy = Vec::new();
    for g in 0..2u64 {
        let mut raw = Raw::connect(&port).await;
        let frames: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                codec::encode(&Request {
                    id: g * 1000 + i,
                    op: get(b"big", KIB.to_string().as_bytes()),
                })
                .unwrap()
            })
            .collect();
        for f in frames {
            // The node stops reading: later sends may block; give up on
            // them rather than wait for a reader that never comes.
            if tokio::time::timeout(Duration::from_millis(200), raw.send_bytes(f))
                .await
                .is_err()
            {
                break;
            }
        }
        greedy.push(raw);
    }
    // While they wait, a well-behaved client is served, and the node
    // holds at most its total budget (plus one frame) of replies.
    let mut peak = 0;
    let mut good = Raw::connect(&port).await;
    for i in 0..20 {
        good.send(i, get(b"b", b"k")).await;
        let r = good.recv().await.unwrap();
        assert!(
            r.result.is_ok(),
            "the well-behaved client was not served: {r:?}"
        );
        peak = peak.max(port.queued_reply_bytes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        peak > 0,
        "the greedy clients queued nothing: the test tested nothing"
    );
    assert!(
        peak <= (2 << 20) + (KIB << 10) + 4096,
        "{peak} bytes of replies held"
    );
    // The greedy clients now read: every request got an answer, the large
    // ones past the budget an Overloaded error, none lost.
    for (g, raw) in greedy.iter_mut().enumerate() {
        let mut ok = 0;
        let mut overloaded = 0;
        while let Ok(Some(Ok(frame))) =
            tokio::time::timeout(Duration::from_secs(2), raw.0.next()).await
        {
            let r: Response = codec::decode(&frame, 1 << 24).unwrap();
            match &r.result {
                Ok(_) => ok += 1,
                Err(e) if e.code == ErrorCode::Overloaded => {
                    assert!(e.retryable);
                    overloaded += 1;
                }
                Err(e) => panic!("client {g}: {e:?}"),
            }
        }
        assert!(ok >= 1, "client {g} got no value at all");
        assert!(overloaded >= 1, "client {g}: nothing was refused (ok {ok})");
    }
    port.shutdown().await;
}

#[tokio::test]
async fn before_authentication_only_small_frames_are_read() {
    use ringkv::protocol::WriteOptions;
    let node = TestNode::new(1);
    let port = start_with_users(&node).await;
    let big_put = |id| Request {
        id,
        op: Op::Put {
            bucket: ByteBuf::from(b"b".to_vec()),
            key: ByteBuf::from(b"k".to_vec()),
            value: ByteBuf::from(vec![7u8; 512 * 1024]),
            context: None,
            options: WriteOptions::default(),
        },
    };
    // A stranger announcing a 512 KiB frame is refused at its length, and
    // the node buffers none of it.
    let mut stranger = Raw::connect(&port).await;
    stranger
        .send_bytes(codec::encode(&big_put(1)).unwrap())
        .await;
    let r = stranger.recv().await.expect("a refusal");
    assert_eq!((r.id, error_code(&r)), (0, ErrorCode::BadRequest));
    assert!(r
        .result
        .unwrap_err()
        .message
        .contains("before authentication"));
    assert!(
        stranger.recv().await.is_none(),
        "the connection stayed open"
    );
    // Once authenticated, the same frame is read.
    let mut writer = Raw::connect(&port).await;
    writer.send(1, hello_as("writer", "writer-pw")).await;
    assert!(writer.recv().await.unwrap().result.is_ok());
    writer.send_bytes(codec::encode(&big_put(2)).unwrap()).await;
    let r = writer.recv().await.unwrap();
    assert_eq!(r.id, 2);
    assert!(r.result.is_ok(), "{r:?}");
    port.shutdown().await;
}
