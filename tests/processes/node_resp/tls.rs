//! Part of `tests/processes/node_resp.rs`: the RESP port under the client port's
//! TLS and per-user connection caps, on real `ringkv-node` processes.
//!
//! TLS connections go through [`tls_relay`]: a plain TCP address on
//! loopback whose every connection the test carries over a fresh TLS
//! connection to the node (rustls, trusting only the test's CA), so the
//! RESP helpers of `node_resp.rs` ([`Conn`]) speak through it unchanged.

use super::*;

use ringkv::client::Credentials;
use ringkv::net::client_tls::ClientTls;
use tokio::net::TcpListener;

/// A node's certificate material, made by `ringkv-node certs`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    async fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let (status, out) = cluster::run_to_exit(&[
            "certs",
            "--dir",
            &dir.path().display().to_string(),
            "--client-port",
            "127.0.0.1",
        ])
        .await;
        assert!(status.success(), "{out}");
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).unwrap()
    }

    fn trusted(&self) -> ClientTls {
        ClientTls::new(&self.ca_pem()).unwrap()
    }
}

/// A plain TCP address on loopback in front of the TLS port at `node`:
/// each connection accepted is carried over a new TLS connection to it.
/// When the node closes the TLS connection, the plain one closes too.
async fn tls_relay(node: SocketAddr, tls: ClientTls) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut plain, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(tcp) = TcpStream::connect(node).await else {
                    return;
                };
                match tls.connect(&node.to_string(), tcp).await {
                    Ok(mut secure) => {
                        let _ = tokio::io::copy_bidirectional(&mut plain, &mut secure).await;
                    }
                    Err(e) => eprintln!("relay: TLS to {node} failed: {e}"),
                }
            });
        }
    });
    addr
}

/// Writes a users file with `users` (name, role, password) and a config
/// file holding `limits` under `[client_port]`; the flags that give them.
async fn users_and_limits(
    dir: &std::path::Path,
    users: &[(&str, &str, &str)],
    limits: &str,
) -> Vec<String> {
    let file = dir.join("users.toml");
    for (name, role, password) in users {
        users_add(&file, name, role, password).await;
    }
    let config = dir.join("node.toml");
    std::fs::write(&config, format!("[client_port]\n{limits}")).unwrap();
    vec![
        "--users-file".into(),
        file.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ]
}

/// A client of the client port as `user`, over TLS when `tls` is given,
/// with one attempt (a refusal is an error at once).
async fn client_as(
    cluster: &Cluster,
    tls: Option<ClientTls>,
    user: &str,
    password: &str,
) -> ringkv::Result<Client> {
    Client::connect(
        &[cluster.node(1).client.to_string()],
        ClientConfig {
            credentials: Some(Credentials::new(user, password)),
            tls,
            max_attempts: 1,
            ..client_config()
        },
    )
    .await
}

/// Runs `redis-cli` with `args`; its status and stdout and stderr.
async fn redis_cli(args: &[&str]) -> (std::process::ExitStatus, String) {
    let run = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("redis-cli ends within 20 s")
        .expect("redis-cli runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text.trim_end().to_string())
}

fn redis_cli_found() -> bool {
    std::process::Command::new("redis-cli")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// With a client port certificate, the RESP port speaks TLS with it: a
/// trusting client authenticates and reads and writes, `redis-cli --tls`
/// too; a plain TCP client gets no RESP reply and is closed, without
/// touching the TLS connections; a connection that never finishes its
/// handshake is closed after `auth_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_resp_port_speaks_only_tls() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let certs = Certs::make().await;
        let mut args = users_and_limits(
            certs.dir.path(),
            &[("app", "admin", "app pw")],
            "auth_timeout_ms = 2000\n",
        )
        .await;
        let (cert, key) = (certs.path("client-port.pem"), certs.path("client-port.key"));
        args.extend([
            "--client-tls-cert".into(),
            cert,
            "--client-tls-key".into(),
            key,
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cluster = one_node(&args).await;
        let admin = client_as(&cluster, Some(certs.trusted()), "app", "app pw")
            .await
            .unwrap_or_else(|e| panic!("the client port over TLS: {e}\n{}", cluster.logs()));
        admin
            .set_bucket(b"db0", props(1, ConflictPolicy::Siblings))
            .await
            .unwrap();
        let node = cluster.node(1).redis.unwrap();
        let relay = tls_relay(node, certs.trusted()).await;

        // Over TLS: the usual RESP session.
        let mut secure = Conn::open(relay).await;
        assert_eq!(secure.cmd(&["AUTH", "app", "app pw"]).await, R::ok());
        assert_eq!(secure.cmd(&["SET", "k", "over tls"]).await, R::ok());
        assert_eq!(secure.cmd(&["GET", "k"]).await, R::bulk("over tls"));

        // Plain TCP to the TLS port: no RESP reply, and closed in time.
        let mut plain = TcpStream::connect(node).await.unwrap();
        plain
            .write_all(&encode(&[b"AUTH", b"app", b"app pw"]))
            .await
            .unwrap();
        plain.write_all(&encode(&[b"PING"])).await.unwrap();
        let mut got = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
        assert!(ended.is_ok(), "a plain client was left open");
        let text = String::from_utf8_lossy(&got);
        assert!(
            !text.contains("+OK") && !text.contains("PONG") && !got.starts_with(b"-"),
            "a plain client got a RESP reply: {text:?}"
        );
        // ... and the TLS connection goes on, as do new ones.
        assert_eq!(secure.cmd(&["GET", "k"]).await, R::bulk("over tls"));
        let mut again = Conn::open(relay).await;
        assert_eq!(again.cmd(&["AUTH", "app", "app pw"]).await, R::ok());
        assert_eq!(again.cmd(&["GET", "k"]).await, R::bulk("over tls"));

        // A TLS client that trusts another CA is refused at the handshake.
        let other = ringkv::ClusterCa::generate("other").unwrap();
        let stranger = ClientTls::new(other.cert_pem()).unwrap();
        let tcp = TcpStream::connect(node).await.unwrap();
        let refused = stranger.connect(&node.to_string(), tcp).await;
        assert!(refused.is_err(), "a client trusting another CA connected");

        // A connection that never sends its ClientHello holds its slot for
        // auth_timeout (2 s) at most.
        let mut stalled = TcpStream::connect(node).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a stalled handshake was left open");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "closed after {:?}, before auth_timeout",
            started.elapsed()
        );
        assert!(rest.is_empty(), "{rest:?}");

        // redis-cli, built with TLS, trusting the CA.
        if !redis_cli_found() {
            println!("SKIPPED (redis-cli part): redis-cli is not installed");
            return;
        }
        let port = node.port().to_string();
        let ca = certs.path("ca.pem");
        let tls_cli = |cmd: &'static [&'static str]| {
            let mut args = vec![
                "--tls",
                "--cacert",
                &ca,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "--user",
                "app",
                "--pass",
                "app pw",
                "--no-auth-warning",
            ];
            args.extend_from_slice(cmd);
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                redis_cli(&args).await
            }
        };
        let (status, out) = tls_cli(&["set", "cli", "through tls"]).await;
        assert!(status.success() && out == "OK", "{status}: {out}");
        let (status, out) = tls_cli(&["get", "cli"]).await;
        assert!(status.success() && out == "through tls", "{status}: {out}");
        assert_eq!(secure.cmd(&["GET", "cli"]).await, R::bulk("through tls"));
        // Without --tls, redis-cli gets no answer to its command.
        let (_, out) = redis_cli(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--user",
            "app",
            "--pass",
            "app pw",
            "--no-auth-warning",
            "get",
            "cli",
        ])
        .await;
        assert!(!out.contains("through tls"), "{out}");
    })
    .await;
}

/// A plaintext RESP port may only listen on loopback, with or without
/// users: beyond it the node refuses to start and says what to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_port_refuses_to_listen_beyond_loopback_even_with_users() {
    cluster::bounded(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        users_add(&users, "app", "admin", "app pw").await;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, cluster::SECRET).unwrap();
        let (status, stderr) = cluster::run_to_exit(&[
            "--id",
            "1",
            "--engine",
            "memory",
            "--secret-file",
            &secret.display().to_string(),
            "--insecure-plaintext-peers",
            "--users-file",
            &users.display().to_string(),
            "--redis-listen",
            "0.0.0.0:0",
        ])
        .await;
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("loopback") && stderr.contains("--client-tls-cert"),
            "{stderr}"
        );
    })
    .await;
}

/// `max_connections_per_user` on the RESP port: a user at its cap is
/// refused at AUTH (and HELLO AUTH) with an error naming the cap, and
/// closed; another user gets in; a closed connection gives its place
/// back. The count is one over the RESP and client ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_connections_are_capped_over_both_ports() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let args = users_and_limits(
            dir.path(),
            &[("a", "readwrite", "a pw"), ("b", "admin", "b pw")],
            "max_connections_per_user = 3\n",
        )
        .await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cluster = one_node(&args).await;
        let addr = cluster.node(1).redis.unwrap();
        let is_cap_refusal = |reply: &R| match reply {
            R::Err(e) => {
                e.starts_with("ERR max number of clients reached for user 'a'")
                    && e.contains("max_connections_per_user")
            }
            _ => false,
        };

        // Three connections of a are let in.
        let mut held = Vec::new();
        for i in 0..3 {
            let mut c = Conn::open(addr).await;
            assert_eq!(c.cmd(&["AUTH", "a", "a pw"]).await, R::ok(), "conn {i}");
            held.push(c);
        }
        // The fourth is refused at AUTH, with the cap named, and closed.
        let mut fourth = Conn::open(addr).await;
        let reply = fourth.cmd(&["AUTH", "a", "a pw"]).await;
        assert!(is_cap_refusal(&reply), "{reply:?}");
        assert!(fourth.closed().await, "a refused connection was left open");
        // So is HELLO 3 AUTH; a wrong password is told nothing of the cap.
        let mut hello = Conn::open(addr).await;
        let reply = hello.cmd(&["HELLO", "3", "AUTH", "a", "a pw"]).await;
        assert!(is_cap_refusal(&reply), "{reply:?}");
        assert!(hello.closed().await);
        let mut wrong = Conn::open(addr).await;
        let reply = wrong.cmd(&["AUTH", "a", "guess"]).await;
        assert!(reply.err_text().starts_with("WRONGPASS"), "{reply:?}");
        // Another user gets in, and one of a's connections that
        // authenticates again keeps its place.
        let mut b = Conn::open(addr).await;
        assert_eq!(b.cmd(&["AUTH", "b", "b pw"]).await, R::ok());
        assert_eq!(held[0].cmd(&["AUTH", "a", "a pw"]).await, R::ok());
        // The client port counts against the same cap: refused now.
        match client_as(&cluster, None, "a", "a pw").await {
            Err(e) => assert!(e.to_string().contains("connections open already"), "{e}"),
            Ok(_) => panic!("the client port let a fourth connection of a in"),
        }
        assert!(client_as(&cluster, None, "b", "b pw").await.is_ok());

        // Closing one gives its place back: a gets in again ...
        drop(held.pop());
        let mut back = None;
        for _ in 0..100 {
            let mut c = Conn::open(addr).await;
            if c.cmd(&["AUTH", "a", "a pw"]).await == R::ok() {
                back = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut back = back.expect("a place given back was not taken again");
        assert_eq!(back.cmd(&["PING"]).await, R::Simple("PONG".into()));
        // ... and once a RESP place is free, the client port takes it, and
        // the RESP port then refuses a again.
        drop(back);
        let mut through_client_port = None;
        for _ in 0..100 {
            if let Ok(c) = client_as(&cluster, None, "a", "a pw").await {
                through_client_port = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            through_client_port.is_some(),
            "the client port did not get the place the RESP port gave back"
        );
        let mut over = Conn::open(addr).await;
        let reply = over.cmd(&["AUTH", "a", "a pw"]).await;
        assert!(is_cap_refusal(&reply), "{reply:?}");
        // The connections let in still work.
        assert_eq!(held[0].cmd(&["PING"]).await, R::Simple("PONG".into()));
        assert_eq!(b.cmd(&["PING"]).await, R::Simple("PONG".into()));
    })
    .await;
}

/// `reply_budget_total` on the RESP port: a large reply that a client
/// does not read holds its share of the budget until it is written, and
/// a second large reply that would pass the budget answers an error
/// instead; small replies go on, and once the first client reads, large
/// replies are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_replies_unread_are_held_to_the_ports_reply_budget() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        // The least the configuration allows: max_frame_bytes, 16 MiB, for
        // one connection and for the port.
        let (_dir, cluster, big, mut reader) = big_and_small(
            "[client_port]\nreply_budget_per_connection = 16777216\n\
             reply_budget_total = 16777216\n",
        )
        .await;
        let addr = cluster.node(1).redis.unwrap();

        // The reader asks for the large value and reads nothing. Once the
        // node holds that reply, another large one is refused (until then,
        // on a busy machine, it may still be served).
        reader.send(&encode(&[b"GET", b"big"])).await;
        let mut other = Conn::open(addr).await;
        let mut refused = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match other.cmd(&["GET", "big"]).await {
                R::Err(text) => {
                    refused = Some(text);
                    break;
                }
                R::Bulk(v) if v.len() == big.len() => {}
                reply => panic!("{}", short(&reply)),
            }
        }
        let text = refused.expect("a second large reply went past the budget");
        assert!(
            text.contains("Overloaded") && text.contains("reply_budget_total"),
            "{text}"
        );
        assert_eq!(other.cmd(&["GET", "small"]).await, R::bulk("s"));

        // Once the reader has its reply, the budget is free again.
        let first = reader.read().await;
        assert!(first == R::Bulk(big.clone()), "{}", short(&first));
        let mut served = false;
        for _ in 0..50 {
            match other.cmd(&["GET", "big"]).await {
                R::Bulk(v) => {
                    assert!(v == big, "a large reply of {} bytes differs", v.len());
                    served = true;
                    break;
                }
                R::Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                r => panic!("{}", short(&r)),
            }
        }
        assert!(served, "the budget was not given back");
    })
    .await;
}

/// A large answer keeps its bytes of the replica's read budget counted
/// until the RESP port has encoded it, but never while the port waits to
/// write to a client that reads nothing: with a read budget of one byte,
/// one held answer would hold back every read of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_large_reply_does_not_hold_back_the_nodes_reads() {
    let _one = cluster::cluster_slot().await;
    cluster::bounded(TEST_LIMIT, async {
        let (_dir, cluster, big, mut reader) = big_and_small("read_budget_bytes = 1\n").await;
        let addr = cluster.node(1).redis.unwrap();

        reader.send(&encode(&[b"GET", b"big"])).await;
        // Give the node time to read the value and start writing it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut other = Conn::open(addr).await;
        for _ in 0..5 {
            let got = tokio::time::timeout(Duration::from_secs(10), other.cmd(&["GET", "small"]))
                .await
                .expect("a small read waited behind a large reply no one reads");
            assert_eq!(got, R::bulk("s"));
        }
        let first = reader.read().await;
        assert!(first == R::Bulk(big.clone()), "{}", short(&first));
    })
    .await;
}

/// One node started with `config` as its configuration file, holding
/// `big`, a 12 MiB value (far more than loopback's socket buffers take from
/// a client that does not read: 4 MiB to send, 128 KiB to receive), and
/// `small` = `s`, and a connection to its RESP port; the configuration's
/// directory lives as long as the first of the four.
async fn big_and_small(config: &str) -> (tempfile::TempDir, Cluster, Vec<u8>, Conn) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let cluster = one_node(&["--config", &path.display().to_string()]).await;
    default_buckets(&cluster).await;
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut conn = Conn::open(cluster.node(1).redis.unwrap()).await;
    conn.send(&encode(&[b"SET", b"big", &big])).await;
    assert_eq!(conn.read().await, R::ok());
    assert_eq!(conn.cmd(&["SET", "small", "s"]).await, R::ok());
    (dir, cluster, big, conn)
}

/// A reply for a failure message: a bulk string by its length alone.
fn short(reply: &R) -> String {
    match reply {
        R::Bulk(v) => format!("a bulk string of {} bytes", v.len()),
        other => format!("{other:?}"),
    }
}
