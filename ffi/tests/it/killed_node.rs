//! The timeout bound with a real node process killed (issue [16], "Timeout
//! bound"): a C program (`tests/c/killed_node.c`, built as every C test
//! is) loops on calls through two clients of a cluster of three
//! `ringkv-node` processes on 127.0.0.1, one client connected to node 1
//! alone and one to every node, while this test SIGKILLs node 1's process.
//! Every call must return within its documented bound (docs/ffi.md,
//! "Timeouts": the request timeout per request, or the call's own) plus
//! slack, with `RINGKV_OK` or a documented status; never hang.
//!
//! Bounded in time: the program runs for a fixed loop and is killed past
//! [`PROGRAM_LIMIT`]; the nodes and the program are killed on drop, also
//! when an assertion fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{self, *};

/// The clients' request timeout.
const REQUEST_MS: u64 = 1500;
/// How long the program loops on calls.
const LOOP_MS: u64 = 8000;
/// When node 1 dies, after the loop starts.
const KILL_AFTER: Duration = Duration::from_millis(1500);
/// What a busy machine may add to a bound (the C program allows the same).
const SLACK_MS: u64 = 750;
/// How long the program may take in all: the cluster answering (30 s at
/// most), the loop, and the last round of calls.
const PROGRAM_LIMIT: Duration = Duration::from_secs(90);

/// The program, killed and reaped when dropped.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One `call CLIENT OP RESULT MS BOUND_MS` line, with when it was read.
#[derive(Debug)]
struct Call {
    client: String,
    op: String,
    result: String,
    ms: u64,
    bound: u64,
    at: Instant,
}

fn parse_call(line: &str, at: Instant) -> Option<Call> {
    let mut w = line.strip_prefix("call ")?.split(' ');
    let call = Call {
        client: w.next()?.to_string(),
        op: w.next()?.to_string(),
        result: w.next()?.to_string(),
        ms: w.next()?.parse().ok()?,
        bound: w.next()?.parse().ok()?,
        at,
    };
    w.next().is_none().then_some(call)
}

#[test]
fn calls_return_within_their_bound_when_the_connected_node_is_killed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("killed_node");
    build_c(&crate_dir().join("tests/c/killed_node.c"), &exe);

    let mut cluster = NodeCluster::start(3);
    let (user, password) = support::ADMIN;
    let mut cmd = Command::new(&exe);
    cmd.arg(&cluster.client_addrs[0])
        .arg(cluster.client_addrs.join(","))
        .args([
            user,
            password,
            &REQUEST_MS.to_string(),
            &LOOP_MS.to_string(),
        ])
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut program = Program(cmd.spawn().expect("running killed_node"));
    let started = Instant::now();

    // Lines as they come, each with the time it was read.
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let stdout = program.0.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((line, Instant::now())).is_err() {
                break;
            }
        }
    });
    let stderr = program.0.stderr.take().expect("stderr is piped");
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });

    let mut lines: Vec<(String, Instant)> = Vec::new();
    let mut killed_at = None;
    let mut looping_at = None;
    let status = loop {
        if let Some(t) = looping_at {
            if killed_at.is_none() && Instant::now().duration_since(t) >= KILL_AFTER {
                cluster.kill(1);
                killed_at = Some(Instant::now());
            }
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok((line, at)) => {
                if line == "killed_node: looping" {
                    looping_at = Some(at);
                }
                lines.push((line, at));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the program is ending.
                if let Some(status) = program.0.try_wait().expect("waiting for the program") {
                    break status;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            started.elapsed() < PROGRAM_LIMIT,
            "killed_node did not finish within {PROGRAM_LIMIT:?}: a call hung\n{}\n{}",
            lines
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            cluster.logs()
        );
    };
    let stderr = stderr.join().unwrap_or_default();
    let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
    assert!(
        status.success(),
        "killed_node exited with {status}\nstdout:\n{text}\nstderr:\n{stderr}\n{}",
        cluster.logs()
    );
    let killed_at = killed_at.unwrap_or_else(|| panic!("node 1 was never killed:\n{text}"));
    assert_lines(&text, &["killed_node: all checks passed"]);

    let calls: Vec<Call> = lines
        .iter()
        .filter_map(|(l, at)| parse_call(l, *at))
        .collect();
    assert!(calls.len() >= 20, "too few calls:\n{text}");
    // What happened, for `--nocapture`: per client and op, the results
    // after the kill and the slowest call.
    let mut summary = std::collections::BTreeMap::<(&str, &str), (Vec<&str>, u64)>::new();
    for c in calls.iter().filter(|c| c.at > killed_at) {
        let e = summary.entry((&c.client, &c.op)).or_default();
        e.0.push(&c.result);
        e.1 = e.1.max(c.ms);
    }
    for ((client, op), (results, max)) in &summary {
        println!("after the kill: {client} {op}: slowest {max} ms: {results:?}");
    }
    // Every call within its bound, with a documented status (checked by
    // the program too; here with the test's own numbers).
    for c in &calls {
        assert!(
            c.ms <= c.bound + SLACK_MS,
            "{c:?} took longer than its bound\n{text}"
        );
        let documented: &[&str] = if c.op.starts_with("put") {
            &[
                "RINGKV_OK",
                "RINGKV_TIMEOUT",
                "RINGKV_CONNECTION",
                "RINGKV_UNAVAILABLE",
                "RINGKV_OUTCOME_UNKNOWN",
            ]
        } else {
            &[
                "RINGKV_OK",
                "RINGKV_TIMEOUT",
                "RINGKV_CONNECTION",
                "RINGKV_UNAVAILABLE",
            ]
        };
        assert!(documented.contains(&c.result.as_str()), "{c:?}\n{text}");
    }
    let bounds = [
        ("get_object", REQUEST_MS),
        ("get_object_400ms", 400),
        ("put", 3 * REQUEST_MS),
        ("put_ctx", REQUEST_MS),
        ("multi_get", REQUEST_MS),
        ("scan_next", REQUEST_MS),
    ];
    for (op, bound) in bounds {
        assert!(
            calls.iter().any(|c| c.op == op && c.bound == bound),
            "no {op} call with bound {bound}:\n{text}"
        );
    }

    // Through node 1 alone: calls answered before the kill, and every kind
    // of call failed after it (each call started after it).
    let only = |c: &&Call| c.client == "only";
    assert!(
        calls
            .iter()
            .filter(only)
            .any(|c| c.at < killed_at && c.result == "RINGKV_OK"),
        "no call through node 1 answered before the kill:\n{text}"
    );
    // Started after the kill: read after it, less its duration, less a
    // margin for the pipe.
    let started_after_kill = |c: &&Call| {
        c.at.checked_sub(Duration::from_millis(c.ms + 100))
            .is_some_and(|start| start > killed_at)
    };
    let after: Vec<&Call> = calls
        .iter()
        .filter(only)
        .filter(started_after_kill)
        .collect();
    for (op, _) in bounds {
        assert!(
            after.iter().any(|c| c.op == op),
            "no {op} through node 1 well after the kill:\n{text}"
        );
    }
    assert!(
        after.iter().all(|c| c.result != "RINGKV_OK"),
        "a call through a killed node succeeded:\n{text}"
    );
    // Through every node: failed over, and answering after the kill.
    assert!(
        calls
            .iter()
            .filter(|c| c.client == "all" && c.at > killed_at)
            .any(|c| c.result == "RINGKV_OK"),
        "the client with every address never answered after the kill:\n{text}"
    );
}
