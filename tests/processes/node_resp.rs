//! The RESP port of real `ringkv-node` processes (`--redis-listen`),
//! spoken to over TCP with RESP frames written and read here, and with
//! `redis-cli` when it is installed: pipelining, RESP3, strings, counters
//! and sets, WRONGTYPE, unsupported commands, AUTH and NOPERM, malformed
//! input, and a write through one node read through another.

use crate::support::cluster;

#[path = "node_resp/clients.rs"]
mod clients;
#[path = "node_resp/ringkv.rs"]
mod ringkv_commands;
#[path = "node_resp/scan.rs"]
mod scan;
#[path = "node_resp/tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{users_add, wait_until, Cluster};
use ringkv::client::{Client, ClientConfig};
use ringkv::crdt::CrdtKind;
use ringkv::protocol::BucketInfo;
use ringkv::replication::Consistency;
use ringkv::ConflictPolicy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const TEST_LIMIT: Duration = Duration::from_secs(150);
const SETTLE: Duration = Duration::from_secs(40);

/// A RESP reply as read off the wire.
#[derive(Clone, Debug, PartialEq)]
enum R {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1` (RESP2).
    NilBulk,
    /// `_` (RESP3).
    Null,
    Arr(Vec<R>),
    Set(Vec<R>),
    Map(Vec<(R, R)>),
}

impl R {
    fn bulk(s: &str) -> R {
        R::Bulk(s.as_bytes().to_vec())
    }

    fn ok() -> R {
        R::Simple("OK".into())
    }

    fn err_text(&self) -> &str {
        match self {
            R::Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }
}

struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let (r, w) = stream.into_split();
        Conn {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, args: &[&str]) -> R {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode(&args)).await;
        self.read().await
    }

    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(20), self.r.read_until(b'\n', &mut line))
            .await
            .expect("a reply within 20 s")
            .unwrap();
        assert!(n > 0, "the connection closed instead of replying");
        assert!(line.ends_with(b"\r\n"), "{line:?}");
        line.truncate(line.len() - 2);
        String::from_utf8(line).unwrap()
    }

    fn read(&mut self) -> futures_util::future::BoxFuture<'_, R> {
        Box::pin(async move {
            let line = self.line().await;
            let (kind, rest) = line.split_at(1);
            let n = || rest.parse::<i64>().unwrap();
            match kind {
                "+" => R::Simple(rest.into()),
                "-" => R::Err(rest.into()),
                ":" => R::Int(n()),
                "_" => R::Null,
                "$" if n() < 0 => R::NilBulk,
                "$" => {
                    let mut body = vec![0u8; n() as usize + 2];
                    self.r.read_exact(&mut body).await.unwrap();
                    body.truncate(body.len() - 2);
                    R::Bulk(body)
                }
                "*" | "~" => {
                    let mut items = Vec::new();
                    for _ in 0..n() {
                        items.push(self.read().await);
                    }
                    if kind == "*" {
                        R::Arr(items)
                    } else {
                        R::Set(items)
                    }
                }
                "%" => {
                    let mut pairs = Vec::new();
                    for _ in 0..n() {
                        let k = self.read().await;
                        let v = self.read().await;
                        pairs.push((k, v));
                    }
                    R::Map(pairs)
                }
                other => panic!("unexpected reply type {other:?} in {line:?}"),
            }
        })
    }

    /// Whether the node closed the connection (within 10 s).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.r.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(8),
        ..ClientConfig::default()
    }
}

fn props(n: u32, policy: ConflictPolicy) -> BucketInfo {
    let c = if n == 1 {
        Consistency::One
    } else {
        Consistency::Quorum
    };
    BucketInfo {
        n,
        r: c,
        w: c,
        policy,
        sloppy_quorum: false,
        timeout_ms: 5000,
    }
}

/// Sets `buckets` through node 1 (open port) and waits until every node
/// reports them.
async fn set_buckets(cluster: &Cluster, n: u32, buckets: &[(&str, ConflictPolicy)]) {
    let mut all = Vec::new();
    for node in &cluster.nodes {
        all.push(
            Client::connect(&[node.client.to_string()], client_config())
                .await
                .unwrap(),
        );
    }
    for (b, p) in buckets {
        all[0]
            .set_bucket(b.as_bytes(), props(n, p.clone()))
            .await
            .unwrap_or_else(|e| panic!("set_bucket {b}: {e}\n{}", cluster.logs()));
    }
    let spread = wait_until(SETTLE, || async {
        for c in &all {
            for (b, p) in buckets {
                match c.bucket(b.as_bytes()).await {
                    Ok(got) if got.policy == *p && got.n == n => {}
                    _ => return false,
                }
            }
        }
        true
    })
    .await;
    assert!(
        spread,
        "bucket properties did not spread\n{}",
        cluster.logs()
    );
}

/// One node serving RESP, with `db0` (Siblings), `lww`, `counters`
/// (PnCounter) and `sets` (OrSet) buckets of one copy.
async fn one_node(extra: &[&str]) -> Cluster {
    let mut args = vec!["--redis-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let cluster = Cluster::start_with(1, &args).await;
    assert!(
        cluster.node(1).redis.is_some(),
        "no redis= in the ready line"
    );
    cluster
}

async fn default_buckets(cluster: &Cluster) {
    set_buckets(
        cluster,
        1,
        &[
            ("db0", ConflictPolicy::Siblings),
            ("lww", ConflictPolicy::Lww),
            ("counters", ConflictPolicy::Crdt(CrdtKind::PnCounter)),
            ("sets", ConflictPolicy::Crdt(CrdtKind::OrSet)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_counters_and_sets_with_pipelining_and_resp3() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        default_buckets(&cluster).await;
        let addr = cluster.node(1).redis.unwrap();
        let mut c = Conn::open(addr).await;
        assert_eq!(c.cmd(&["PING"]).await, R::Simple("PONG".into()));
        assert_eq!(c.cmd(&["ECHO", "hi"]).await, R::bulk("hi"));

        // Strings in db0 (Siblings policy): SET replaces, never adds a
        // sibling, because it writes with the context of a read.
        assert_eq!(c.cmd(&["GET", "k"]).await, R::NilBulk);
        assert_eq!(c.cmd(&["SET", "k", "v1"]).await, R::ok());
        assert_eq!(c.cmd(&["SET", "k", "v2"]).await, R::ok());
        assert_eq!(c.cmd(&["GET", "k"]).await, R::bulk("v2"));
        assert_eq!(c.cmd(&["SET", "k", "v3", "GET"]).await, R::bulk("v2"));
        assert_eq!(c.cmd(&["STRLEN", "k"]).await, R::Int(2));
        assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]).await, R::ok());
        assert_eq!(
            c.cmd(&["MGET", "a", "nope", "b"]).await,
            R::Arr(vec![R::bulk("1"), R::NilBulk, R::bulk("2")])
        );
        assert_eq!(c.cmd(&["EXISTS", "a", "b", "nope", "a"]).await, R::Int(3));
        assert_eq!(c.cmd(&["DEL", "a", "nope"]).await, R::Int(1));
        assert_eq!(c.cmd(&["GET", "a"]).await, R::NilBulk);
        assert_eq!(c.cmd(&["EXISTS", "a"]).await, R::Int(0));
        // Binary-safe values.
        let value: Vec<u8> = (0..=255u8).collect();
        c.send(&encode(&[b"SET", b"bin", &value])).await;
        assert_eq!(c.read().await, R::ok());
        assert_eq!(c.cmd(&["GET", "bin"]).await, R::Bulk(value));

        // Pipelining: 300 commands in one write, replies in their order;
        // each GET sees the SET before it on the connection.
        let mut batch = Vec::new();
        for i in 0..100 {
            let (k, v) = (format!("p{i}"), format!("value-{i}"));
            batch.extend(encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
            batch.extend(encode(&[b"GET", k.as_bytes()]));
            batch.extend(encode(&[b"ECHO", format!("e{i}").as_bytes()]));
        }
        c.send(&batch).await;
        for i in 0..100 {
            assert_eq!(c.read().await, R::ok(), "reply {i}");
            assert_eq!(c.read().await, R::bulk(&format!("value-{i}")));
            assert_eq!(c.read().await, R::bulk(&format!("e{i}")));
        }

        // Counters.
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "counters"]).await, R::ok());
        assert_eq!(c.cmd(&["INCR", "n"]).await, R::Int(1));
        assert_eq!(c.cmd(&["INCRBY", "n", "41"]).await, R::Int(42));
        assert_eq!(c.cmd(&["DECR", "n"]).await, R::Int(41));
        assert_eq!(c.cmd(&["DECRBY", "n", "50"]).await, R::Int(-9));
        assert_eq!(c.cmd(&["GET", "n"]).await, R::bulk("-9"));
        assert_eq!(c.cmd(&["GET", "never"]).await, R::NilBulk);
        assert!(c
            .cmd(&["INCRBY", "n", "x"])
            .await
            .err_text()
            .contains("not an integer"));
        // WRONGTYPE: SET or SADD on a counter bucket.
        assert!(c
            .cmd(&["SET", "n", "1"])
            .await
            .err_text()
            .starts_with("WRONGTYPE"));
        assert!(c
            .cmd(&["SADD", "n", "1"])
            .await
            .err_text()
            .starts_with("WRONGTYPE"));
        // INCR in a string bucket counts in its companion, db0.counters,
        // and leaves the string alone.
        assert_eq!(c.cmd(&["SELECT", "0"]).await, R::ok());
        let k = c.cmd(&["GET", "k"]).await;
        assert_eq!(c.cmd(&["INCR", "k"]).await, R::Int(1));
        assert_eq!(c.cmd(&["GET", "k"]).await, k);

        // Sets, and RESP3 through HELLO 3.
        assert_eq!(c.cmd(&["RINGKV.BUCKET", "sets"]).await, R::ok());
        assert_eq!(c.cmd(&["SADD", "s", "a", "b", "a"]).await, R::Int(2));
        assert_eq!(c.cmd(&["SADD", "s", "b", "c"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SREM", "s", "a", "zz"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SCARD", "s"]).await, R::Int(2));
        assert_eq!(c.cmd(&["SISMEMBER", "s", "b"]).await, R::Int(1));
        assert_eq!(c.cmd(&["SISMEMBER", "s", "a"]).await, R::Int(0));
        assert_eq!(
            c.cmd(&["SMEMBERS", "s"]).await,
            R::Arr(vec![R::bulk("b"), R::bulk("c")])
        );
        assert!(c
            .cmd(&["GET", "s"])
            .await
            .err_text()
            .starts_with("WRONGTYPE"));
        let R::Map(hello) = c.cmd(&["HELLO", "3"]).await else {
            panic!("HELLO 3 answers a map");
        };
        assert!(hello.contains(&(R::bulk("proto"), R::Int(3))), "{hello:?}");
        assert_eq!(
            c.cmd(&["SMEMBERS", "s"]).await,
            R::Set(vec![R::bulk("b"), R::bulk("c")])
        );
        assert_eq!(c.cmd(&["SELECT", "0"]).await, R::ok());
        assert_eq!(c.cmd(&["GET", "missing"]).await, R::Null);
        let R::Map(_) = c.cmd(&["CONFIG", "GET", "databases"]).await else {
            panic!("CONFIG GET answers a map in RESP3");
        };
        assert_eq!(
            c.cmd(&["HELLO", "2"]).await,
            c.cmd(&["HELLO", "2"]).await,
            "HELLO 2 goes back"
        );
        assert_eq!(c.cmd(&["GET", "missing"]).await, R::NilBulk);
        assert_eq!(
            c.cmd(&["CONFIG", "GET", "databases"]).await,
            R::Arr(vec![R::bulk("databases"), R::bulk("16")])
        );

        // Connection commands.
        assert_eq!(c.cmd(&["CLIENT", "SETNAME", "me"]).await, R::ok());
        assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, R::bulk("me"));
        assert!(matches!(c.cmd(&["CLIENT", "ID"]).await, R::Int(_)));
        let R::Bulk(info) = c.cmd(&["INFO"]).await else {
            panic!("INFO answers text")
        };
        let info = String::from_utf8(info).unwrap();
        assert!(info.starts_with("# Server\r\nredis_version:"), "{info}");
        assert!(info.contains("ringkv_node:1"), "{info}");
        assert!(matches!(c.cmd(&["COMMAND", "COUNT"]).await, R::Int(n) if n > 20));
        assert!(matches!(c.cmd(&["COMMAND"]).await, R::Arr(v) if v.len() > 20));
        assert!(c
            .cmd(&["SELECT", "16"])
            .await
            .err_text()
            .contains("out of range"));
        assert_eq!(c.cmd(&["RINGKV.CONSISTENCY", "one", "all"]).await, R::ok());
        assert_eq!(
            c.cmd(&["RINGKV.CONSISTENCY"]).await,
            R::Arr(vec![
                R::bulk("r"),
                R::bulk("one"),
                R::bulk("w"),
                R::bulk("all")
            ])
        );
        assert!(c
            .cmd(&["RINGKV.CONSISTENCY", "most", "one"])
            .await
            .err_text()
            .contains("consistency level"));

        // Unsupported commands and options answer errors naming why.
        for (args, why) in [
            (&["EXPIRE", "k", "10"][..], "no TTLs"),
            (&["EVAL", "return 1", "0"][..], "no Lua"),
            (&["SUBSCRIBE", "ch"][..], "no pub/sub"),
            (&["SET", "k", "v", "NX"][..], "unsupported option 'NX'"),
            (&["SET", "k", "v", "EX", "10"][..], "no TTLs"),
            (&["FROBNICATE", "x"][..], "unknown command 'FROBNICATE'"),
            (&["GET"][..], "wrong number of arguments for 'get'"),
            (&["MSET", "a"][..], "wrong number of arguments"),
        ] {
            let reply = c.cmd(args).await;
            assert!(reply.err_text().contains(why), "{args:?}: {reply:?}");
        }
        // The NX refusal wrote nothing.
        assert_eq!(c.cmd(&["GET", "k"]).await, R::bulk("v3"));
        // A refused MULTI: what follows it up to EXEC does not run.
        let e = c.cmd(&["MULTI"]).await;
        assert!(e.err_text().contains("no transactions"), "{e:?}");
        let e = c.cmd(&["SET", "k", "inside"]).await;
        assert!(e.err_text().contains("not run"), "{e:?}");
        let e = c.cmd(&["EXEC"]).await;
        assert!(e.err_text().starts_with("EXECABORT"), "{e:?}");
        assert_eq!(c.cmd(&["GET", "k"]).await, R::bulk("v3"));
        assert_eq!(c.cmd(&["QUIT"]).await, R::ok());
        assert!(c.closed().await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_siblings_names_them_and_set_replaces_them() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        default_buckets(&cluster).await;
        // Two blind writes through the CBOR client make two siblings.
        let client = Client::connect(&[cluster.node(1).client.to_string()], client_config())
            .await
            .unwrap();
        client.put(b"db0", b"twin", b"one", None).await.unwrap();
        client.put(b"db0", b"twin", b"two", None).await.unwrap();
        let mut c = Conn::open(cluster.node(1).redis.unwrap()).await;
        let e = c.cmd(&["GET", "twin"]).await;
        assert!(e.err_text().contains("has 2 siblings"), "{e:?}");
        assert!(c
            .cmd(&["MGET", "twin"])
            .await
            .err_text()
            .contains("siblings"));
        assert_eq!(c.cmd(&["SET", "twin", "one value"]).await, R::ok());
        assert_eq!(c.cmd(&["GET", "twin"]).await, R::bulk("one value"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_that_connection_only() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        default_buckets(&cluster).await;
        let addr = cluster.node(1).redis.unwrap();
        let mut bystander = Conn::open(addr).await;
        assert_eq!(bystander.cmd(&["SET", "keep", "me"]).await, R::ok());
        for (garbage, why) in [
            (&b"*2\r\n$3\r\nGET\r\n:1\r\n"[..], "expected '$'"),
            (&b"*1\r\n$99999999999\r\n"[..], "invalid bulk length"),
            (&b"*99999999999\r\n"[..], "invalid multibulk length"),
            (&b"*1\r\n$3\r\nGETxx\r\n"[..], "CRLF"),
            (&b"*1x\r\n"[..], "invalid mbulk count"),
        ] {
            let mut c = Conn::open(addr).await;
            c.send(garbage).await;
            let reply = c.read().await;
            assert!(
                reply.err_text().starts_with("ERR Protocol error:")
                    && reply.err_text().contains(why),
                "{garbage:?}: {reply:?}"
            );
            assert!(c.closed().await, "{garbage:?}: the connection stays open");
        }
        // A bulk string over the 16 MiB limit, announced and never sent:
        // refused on its header alone.
        let mut c = Conn::open(addr).await;
        c.send(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", 17 << 20).as_bytes())
            .await;
        assert!(c.read().await.err_text().contains("invalid bulk length"));
        assert!(c.closed().await);
        // A value over the node's value limit (15 MiB) but within the
        // request limit: refused by the node, and the connection goes on.
        let big = vec![b'x'; ringkv::config::MAX_VALUE_BYTES + 1];
        let mut c = Conn::open(addr).await;
        c.send(&encode(&[b"SET", b"big", &big])).await;
        let reply = c.read().await;
        assert!(reply.err_text().contains("InvalidArgument"), "{reply:?}");
        assert_eq!(c.cmd(&["PING"]).await, R::Simple("PONG".into()));
        // The other connection never noticed.
        assert_eq!(bystander.cmd(&["GET", "keep"]).await, R::bulk("me"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_users_auth_is_required_and_roles_hold() {
    use ringkv::client::Credentials;
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        users_add(&users, "admin", "admin", "admin pw").await;
        users_add(&users, "app", "readwrite", "app pw").await;
        users_add(&users, "viewer", "read", "viewer pw").await;
        let users_flag = users.display().to_string();
        let cluster = one_node(&["--users-file", &users_flag]).await;
        let admin = Client::connect(
            &[cluster.node(1).client.to_string()],
            ClientConfig {
                credentials: Some(Credentials::new("admin", "admin pw")),
                ..client_config()
            },
        )
        .await
        .unwrap();
        admin
            .set_bucket(b"db0", props(1, ConflictPolicy::Siblings))
            .await
            .unwrap();
        let addr = cluster.node(1).redis.unwrap();

        let mut anon = Conn::open(addr).await;
        assert!(anon
            .cmd(&["GET", "k"])
            .await
            .err_text()
            .starts_with("NOAUTH"));
        assert!(anon.cmd(&["PING"]).await.err_text().starts_with("NOAUTH"));
        assert!(anon
            .cmd(&["HELLO", "3"])
            .await
            .err_text()
            .starts_with("NOAUTH"));
        assert!(anon
            .cmd(&["AUTH", "app", "wrong"])
            .await
            .err_text()
            .starts_with("WRONGPASS"));
        assert_eq!(anon.cmd(&["AUTH", "app", "app pw"]).await, R::ok());
        assert_eq!(anon.cmd(&["SET", "k", "v"]).await, R::ok());

        let mut viewer = Conn::open(addr).await;
        let R::Map(hello) = viewer
            .cmd(&["HELLO", "3", "AUTH", "viewer", "viewer pw", "SETNAME", "v"])
            .await
        else {
            panic!("HELLO 3 AUTH answers a map");
        };
        assert!(hello.contains(&(R::bulk("proto"), R::Int(3))));
        assert_eq!(viewer.cmd(&["GET", "k"]).await, R::bulk("v"));
        let refused = viewer.cmd(&["SET", "k", "other"]).await;
        assert!(refused.err_text().starts_with("NOPERM"), "{refused:?}");
        assert!(viewer
            .cmd(&["DEL", "k"])
            .await
            .err_text()
            .starts_with("NOPERM"));
        assert_eq!(viewer.cmd(&["GET", "k"]).await, R::bulk("v"));

        // Three wrong passwords close the connection.
        let mut guesser = Conn::open(addr).await;
        for _ in 0..3 {
            assert!(guesser
                .cmd(&["AUTH", "admin", "guess"])
                .await
                .err_text()
                .starts_with("WRONGPASS"));
        }
        assert!(guesser.closed().await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_port_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, cluster::SECRET).unwrap();
    let secret = secret.display().to_string();
    let (status, stderr) = cluster::run_to_exit(&[
        "--id",
        "1",
        "--engine",
        "memory",
        "--secret-file",
        &secret,
        "--insecure-plaintext-peers",
        "--no-client-auth",
        "--redis-listen",
        "0.0.0.0:0",
    ])
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_through_one_node_is_read_through_another() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = Cluster::start_with(3, &["--redis-listen", "127.0.0.1:0"]).await;
        set_buckets(&cluster, 3, &[("db0", ConflictPolicy::Siblings)]).await;
        let mut one = Conn::open(cluster.node(1).redis.unwrap()).await;
        let mut two = Conn::open(cluster.node(2).redis.unwrap()).await;
        // Until the ring has formed a quorum write may be refused.
        let mut written = false;
        for _ in 0..100 {
            if one.cmd(&["SET", "shared", "from node 1"]).await == R::ok() {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(written, "no SET succeeded\n{}", cluster.logs());
        assert_eq!(two.cmd(&["GET", "shared"]).await, R::bulk("from node 1"));
        assert_eq!(two.cmd(&["SET", "shared", "from node 2"]).await, R::ok());
        assert_eq!(one.cmd(&["GET", "shared"]).await, R::bulk("from node 2"));
    })
    .await;
}

/// The `redis-cli` of Debian's redis-tools against a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_sets_and_gets() {
    let found = std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let cluster = one_node(&[]).await;
        default_buckets(&cluster).await;
        let port = cluster.node(1).redis.unwrap().port().to_string();
        let cli = |args: &[&str]| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &port])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "redis-cli {args:?}");
            String::from_utf8(out.stdout)
                .unwrap()
                .trim_end()
                .to_string()
        };
        assert_eq!(cli(&["set", "k", "v"]), "OK");
        assert_eq!(cli(&["get", "k"]), "v");
        assert_eq!(cli(&["-3", "get", "k"]), "v");
        assert_eq!(cli(&["ping"]), "PONG");
        assert!(cli(&["expire", "k", "5"]).contains("unsupported command"));
    })
    .await;
}
