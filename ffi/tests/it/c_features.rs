//! The C ABI's later features, from C (`tests/c/*.c`), built with the
//! system compiler (`-Wall -Wextra -Werror`, sanitizers where they work)
//! and run with a timeout: each program exits 0 only when every check it
//! makes holds, and prints the lines these tests look for.

use crate::support::*;

/// Builds `tests/c/<name>.c` and runs it with `args`; returns its output.
fn run_c(name: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join(name);
    build_c(&crate_dir().join(format!("tests/c/{name}.c")), &exe);
    run_ok(&exe, args)
}

#[test]
fn version_and_macros_agree() {
    let out = run_c("version", &[]);
    let want = format!(
        "version: {} (ABI {})",
        env!("CARGO_PKG_VERSION"),
        ringkv_ffi::RINGKV_ABI_VERSION
    );
    assert_lines(&out, &[&want, "version: all checks passed"]);
}

#[test]
fn unparseable_addresses_are_invalid_and_messages_name_their_function() {
    let out = run_c("errors", &[]);
    assert_lines(
        &out,
        &[
            "errors: 12 unparseable addresses are RINGKV_INVALID_ARGUMENT",
            "errors: every message names its function",
            "errors: all checks passed",
        ],
    );
}

#[test]
fn objects_show_siblings_and_writes_with_their_context_resolve_and_delete() {
    let out = run_c("objects", &[]);
    for who in ["cluster", "client"] {
        assert_lines(
            &out,
            &[
                &format!("{who}: two blind puts = 2 siblings"),
                &format!("{who}: resolved = 1 value"),
                &format!("{who}: after delete with context = 0 values"),
                &format!("{who}: blind delete beside a value = 1 value, 1 delete"),
                &format!("{who}: blind puts refused past sibling 100, resolved with the context"),
            ],
        );
    }
    assert_lines(&out, &["objects: all checks passed"]);
}

#[test]
fn batches_read_and_write_many_keys_with_a_status_each() {
    let out = run_c("batch", &[]);
    for who in ["cluster", "client"] {
        assert_lines(
            &out,
            &[
                &format!("{who}: multi_put of 200 keys: 200 OK"),
                &format!("{who}: multi_get: 200 found in order, 20 missing with 0 values"),
                &format!("{who}: two blind batches = 10 keys with 2 siblings"),
                &format!("{who}: written with the contexts = 10 keys with 1 value"),
                &format!("{who}: per item: RINGKV_SIBLINGS beside RINGKV_OK"),
                &format!("{who}: refused whole: a key twice, no keys, NULL arrays, over 15 MiB"),
            ],
        );
    }
    assert_lines(&out, &["batch: all checks passed"]);
}

#[test]
fn scans_list_500_keys_exactly_once_each() {
    let out = run_c("scan", &[]);
    assert_lines(
        &out,
        &[
            "scan: cluster, page 7: 500 keys, each once",
            "scan: cluster, page 0: 500 keys, each once",
            "scan: cluster, page 1000: 500 keys, each once",
            "scan: client, page 13: 500 keys, each once",
            "scan: after 20 deletes: 480 keys",
            "scan: an empty bucket: done at once",
            "scan: all checks passed",
        ],
    );
}

#[test]
fn a_cluster_reopened_on_its_data_directory_holds_its_data() {
    let data = tempfile::tempdir().expect("a temporary directory");
    let dir = data.path().to_str().expect("a UTF-8 path");
    let out = run_c("persist", &[dir]);
    assert_lines(
        &out,
        &[
            "persist: lsm: 50 of 50 keys after reopening",
            "persist: btree: 50 of 50 keys after reopening",
            "persist: one replica per key: TWO refused",
            "persist: siblings: two blind writes = 2 value(s)",
            "persist: lww: two blind writes = 1 value(s)",
            "persist: all checks passed",
        ],
    );
    assert!(data.path().join("lsm/node-1").is_dir());
    assert!(data.path().join("btree/node-3").is_dir());
}

#[test]
fn the_cpp17_raii_header_wraps_objects_scans_batches_and_errors() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("raii");
    build_cpp(&crate_dir().join("tests/cpp/raii.cpp"), &exe);
    let out = run_ok(&exe, &[]);
    for who in ["cluster", "client"] {
        assert_lines(
            &out,
            &[
                &format!("{who}: round trip, missing = nullopt"),
                &format!("{who}: 2 siblings, resolved = 1 value, deleted = nullopt"),
                &format!("{who}: blind delete beside a value = 1 value, 1 nullopt"),
                &format!("{who}: binary key and value, timeouts"),
                &format!("{who}: scan page 7: 300 keys, each once"),
                &format!("{who}: multi_put 100 OK, multi_get 100 found, 10 missing"),
                &format!("{who}: per item: RINGKV_SIBLINGS beside RINGKV_OK"),
                &format!("{who}: an empty bucket throws RINGKV_INVALID_ARGUMENT"),
            ],
        );
    }
    assert_lines(
        &out,
        &[
            "raii: moved-from handles are empty, and a call on one throws RINGKV_NULL_ARGUMENT",
            "raii: all checks passed",
        ],
    );
}

#[test]
fn each_thread_reads_its_own_writes_at_quorum() {
    let out = run_c("ryw_threads", &[]);
    assert_lines(
        &out,
        &[
            "ryw_threads: 3200 reads, 0 stale",
            "ryw_threads: all checks passed",
        ],
    );
}

#[test]
fn the_log_callback_gets_the_nodes_lines_and_nothing_after_free() {
    let out = run_c("log", &[]);
    assert_lines(
        &out,
        &[
            "log: 0 lines after ringkv_cluster_free",
            "log: all checks passed",
        ],
    );
}

#[test]
fn the_cpp17_raii_header_wraps_counters_sets_plain_calls_the_policy_and_the_log_callback() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("hpp_extras");
    build_cpp(&crate_dir().join("tests/cpp/hpp_extras.cpp"), &exe);
    let out = run_ok(&exe, &[]);
    for who in ["cluster", "client"] {
        assert_lines(
            &out,
            &[
                &format!(
                    "{who}: replace x150 = 1 value, erase = nullopt, siblings throw RINGKV_SIBLINGS"
                ),
                &format!("{who}: counter 5 - 2 = 3"),
                &format!("{who}: set members = 3, in byte order"),
                &format!("{who}: bad arguments throw RINGKV_INVALID_ARGUMENT"),
            ],
        );
    }
    assert_lines(
        &out,
        &[
            "policy: Lww default = 1 value, bucket Siblings = 2, library default = 2",
            "log: a throwing callback is contained; the callbacks were freed with their clusters",
            "client: closed = RINGKV_CLOSED, an unreadable tls_ca_file = RINGKV_INVALID_ARGUMENT",
            "hpp_extras: all checks passed",
        ],
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("log: ") && l.ends_with(", 0 after the Cluster")),
        "{out}"
    );
}
