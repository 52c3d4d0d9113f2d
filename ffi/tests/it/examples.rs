//! The C and C++ examples (`ffi/examples/`), built with the system
//! compilers (`-Wall -Wextra -Werror`, ASan and UBSan where they work) and
//! linked against the static library this build produced, run against an
//! embedded cluster and against a cluster of real `ringkv-node` processes.
//! Each example exits 0 only when every result it checks is right; these
//! tests also look for the lines that show each step happened.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::{self, *};
use ringkv::protocol::{Op, Reply};
use ringkv_ffi::store::{RemoteClient, Store};

/// The built examples, compiled once per test binary.
struct Built {
    c: PathBuf,
    cpp: PathBuf,
    _dir: tempfile::TempDir,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let examples = crate_dir().join("examples");
        let c = dir.path().join("ringkv_example_c");
        let cpp = dir.path().join("ringkv_example_cpp");
        build_c_linked(&examples.join("ringkv_example.c"), &c, Link::Static);
        build_cpp(&examples.join("ringkv_example.cpp"), &cpp);
        Built { c, cpp, _dir: dir }
    })
}

/// The lines an embedded round trip prints in C.
const EMBEDDED_LINES_C: &[&str] = &[
    "embedded: 3 nodes started",
    "embedded: get users/ada = born 10 Dec 1815",
    "embedded: counter hits/home = 3",
    "embedded: set tags/post-1 has 2 members",
    "all checks passed",
];

/// The lines an embedded round trip prints in C++ (its keys differ, so
/// that both can run against one node cluster).
const EMBEDDED_LINES_CPP: &[&str] = &[
    "embedded: 3 nodes started",
    "embedded: get users/ada = born 10 Dec 1815",
    "embedded: counter hits/away = 3",
    "embedded: set tags/post-2 has 2 members",
    "all checks passed",
];

#[test]
fn c_example_runs_on_an_embedded_cluster() {
    let out = run_ok(&built().c, &[]);
    assert_lines(&out, EMBEDDED_LINES_C);
    assert_lines(
        &out,
        &[
            "embedded: get after delete = RINGKV_NOT_FOUND",
            "embedded: bad consistency: RINGKV_INVALID_ARGUMENT: ringkv_cluster_put: consistency 9 is not one of DEFAULT (0), ONE (1), TWO (2), QUORUM (3), ALL (4)",
        ],
    );
}

#[test]
fn cpp_example_runs_on_an_embedded_cluster() {
    let out = run_ok(&built().cpp, &[]);
    assert_lines(&out, EMBEDDED_LINES_CPP);
    assert_lines(
        &out,
        &[
            "embedded: get after delete: RINGKV_NOT_FOUND: get: no value for this key",
            "embedded: bad consistency: RINGKV_INVALID_ARGUMENT: put: consistency 9 is not one of DEFAULT (0), ONE (1), TWO (2), QUORUM (3), ALL (4)",
        ],
    );
}

/// Waits until every node, asked through `addrs`, sees `n` members alive.
fn wait_formed(cluster: &NodeCluster, n: usize) {
    let limit = Duration::from_secs(30);
    let start = Instant::now();
    for addr in &cluster.client_addrs {
        let admin = ringkv::client::Credentials::new(support::ADMIN.0, support::ADMIN.1);
        let client = RemoteClient::connect("wait_formed", addr, Some(admin))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}\n{}", cluster.logs()));
        loop {
            let alive = match client.execute("status", Op::Status) {
                Ok(Reply::Status(view)) => {
                    view.members.iter().filter(|m| m.state == "Alive").count()
                }
                _ => 0,
            };
            if alive == n {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "the node cluster did not form within {limit:?}\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn c_and_cpp_examples_round_trip_through_a_ringkv_node_cluster() {
    let built = built();
    let cluster = NodeCluster::start(3);
    wait_formed(&cluster, 3);
    let addrs = cluster.client_addrs.join(",");
    let (user, password) = support::ADMIN;
    let out = run_ok(&built.c, &[&addrs, user, password]);
    assert_lines(&out, EMBEDDED_LINES_C);
    assert_lines(
        &out,
        &[
            "client: anonymous get: RINGKV_DENIED",
            "client: wrong password: RINGKV_DENIED",
            "client: connected",
            "client: get users/ada = born 10 Dec 1815",
            "client: get after delete = RINGKV_NOT_FOUND",
            "client: counter hits/home = 3",
            "client: set tags/post-1 has 2 members",
            "client: closed: RINGKV_CLOSED",
        ],
    );
    let out = run_ok(&built.cpp, &[&addrs, user, password]);
    assert_lines(&out, EMBEDDED_LINES_CPP);
    assert_lines(
        &out,
        &[
            "client: connected",
            "client: get users/ada = born 10 Dec 1815",
            "client: get after delete: RINGKV_NOT_FOUND: get: no value for this key",
            "client: counter hits/away = 3",
            "client: set tags/post-2 has 2 members",
            "client: closed: RINGKV_CLOSED: put: the client is closed",
        ],
    );
    for prefix in [
        "client: anonymous get: RINGKV_DENIED: ",
        "client: wrong password: RINGKV_DENIED: ",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(prefix)),
            "no line starting {prefix:?} in:\n{out}"
        );
    }
}

/// Builds the C example `examples/<name>.c` and runs it with `args`.
fn run_c_example(name: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join(name);
    build_c(
        &crate_dir().join("examples").join(format!("{name}.c")),
        &exe,
    );
    run_ok(&exe, args)
}

#[test]
fn siblings_example_resolves_and_deletes() {
    let out = run_c_example("siblings", &[]);
    assert_lines(
        &out,
        &[
            "siblings: carts/ada has 2 values",
            "siblings: resolved to 1 value of 9 bytes",
            "siblings: get after delete = RINGKV_NOT_FOUND",
            "all checks passed",
        ],
    );
}

#[test]
fn scan_example_lists_every_key() {
    let out = run_c_example("scan", &[]);
    let mut want: Vec<String> = (0..10).map(|i| format!("scan: user-{i}")).collect();
    want.push("scan: 10 keys listed".into());
    want.push("all checks passed".into());
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_lines(&out, &want);
}

#[test]
fn batch_example_writes_and_reads_several_keys() {
    let out = run_c_example("batch", &[]);
    assert_lines(
        &out,
        &[
            "batch: ada = apple",
            "batch: bob = pear",
            "batch: cy = plum",
            "batch: nobody has no value",
            "all checks passed",
        ],
    );
}

#[test]
fn raii_example_merges_siblings_and_reopens_its_data() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("raii");
    build_cpp(&crate_dir().join("examples/raii.cpp"), &exe);
    let data = dir.path().join("data");
    let out = run_ok(&exe, &[data.to_str().expect("a UTF-8 path")]);
    assert_lines(
        &out,
        &[
            "raii: carts/ada has 2 values",
            "raii: merged to apple,pear",
            "raii: scan listed 4 carts",
            "raii: after reopening, carts/ada = apple,pear",
            "raii: an empty bucket is RINGKV_INVALID_ARGUMENT",
            "all checks passed",
        ],
    );
}

#[test]
fn timeouts_example_bounds_each_call() {
    let out = run_c_example("timeouts", &[]);
    let version = format!(
        "timeouts: ringkv {}, ABI {}",
        env!("CARGO_PKG_VERSION"),
        ringkv_ffi::RINGKV_ABI_VERSION
    );
    assert_lines(
        &out,
        &[
            &version,
            "timeouts: cfg/mode = fast within 300 ms",
            "timeouts: a bound of RINGKV_MAX_TIMEOUT_MS + 1 is RINGKV_INVALID_ARGUMENT",
            "all checks passed",
        ],
    );
}

#[test]
fn logging_example_gets_the_nodes_lines_until_the_cluster_is_freed() {
    let out = run_c_example("logging", &[]);
    assert_lines(
        &out,
        &[
            "logging: max_level 6 is RINGKV_INVALID_ARGUMENT",
            "logging: the nodes said a node is up",
            "logging: no line above INFO",
            "logging: no line after ringkv_cluster_free",
            "all checks passed",
        ],
    );
    // The count is a number above 0, and the line kept names its module.
    let lines = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("logging: ")?
                .strip_suffix(" lines at INFO or below while the cluster lived")
        })
        .unwrap_or_else(|| panic!("no line count in:\n{out}"));
    assert!(lines.parse::<u64>().is_ok_and(|n| n > 0), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("logging: e.g. ringkv::") && l.contains("is up")),
        "{out}"
    );
}

#[test]
fn cpp_logging_example_sets_the_default_policy_and_a_log_callback() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("logging_cpp");
    build_cpp(&crate_dir().join("examples/logging.cpp"), &exe);
    let out = run_ok(&exe, &[]);
    assert_lines(
        &out,
        &[
            "logging: two blind writes under Policy::Lww = 1 value(s)",
            "logging: two blind writes under Policy::Siblings = 2 value(s)",
            "logging: the callback saw a node come up, nothing above INFO",
            "all checks passed",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("logging: e.g. ringkv::") && l.contains("is up")),
        "{out}"
    );
}
