//! Puts and deletes through the FFI replace what they read (issue [13]).
//!
//! `tests/c/overwrite.c`, built with the system compiler like the other C
//! tests, puts one key of a default (SIBLINGS) bucket 150 times, past the
//! sibling cap, then deletes it, through a cluster handle and a client
//! connection: before, each put was blind, so a get answered
//! `RINGKV_SIBLINGS` from the second put on, the 101st put was refused, and
//! a delete deleted nothing. The Rust tests below check that reading the
//! context first loses no write it did not read: a value written between
//! the read and the write stays, as a sibling.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::*;
use ringkv::embedded::TransportKind;
use ringkv::protocol::{Op, Reply, WriteOptions};
use ringkv_ffi::result::ringkv_result;
use ringkv_ffi::store::{self, EmbeddedCluster, Outcome, Store};
use serde_bytes::ByteBuf;

#[test]
fn c_puts_of_one_key_overwrite_and_a_delete_deletes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let exe = dir.path().join("overwrite");
    build_c(&crate_dir().join("tests/c/overwrite.c"), &exe);
    let out = run_ok(&exe, &[]);
    assert_lines(
        &out,
        &[
            "cluster: 150 puts of one key, get = value 149",
            "cluster: get after delete = RINGKV_NOT_FOUND",
            "client: 150 puts of one key, get = value 149",
            "client: get after delete = RINGKV_NOT_FOUND",
            "client lww: 150 puts of one key, get = value 149",
            "client lww: get after delete = RINGKV_NOT_FOUND",
            "overwrite: all checks passed",
        ],
    );
}

/// A store that, right after the first read it forwards (the context read
/// of a put or delete), lets another client write `bucket`/`key` blind:
/// a write the read did not see, acknowledged before the caller's own.
struct Interleaved<'a> {
    inner: &'a EmbeddedCluster,
    value: &'static [u8],
    done: AtomicBool,
}

impl Store for Interleaved<'_> {
    fn execute(&self, name: &str, op: Op) -> Outcome<Reply> {
        let target = match &op {
            Op::Get { bucket, key, .. } => Some((bucket.clone(), key.clone())),
            _ => None,
        };
        let reply = self.inner.execute(name, op)?;
        if let Some((bucket, key)) = target {
            if !self.done.swap(true, Ordering::SeqCst) {
                let other = Op::Put {
                    bucket,
                    key,
                    value: ByteBuf::from(self.value.to_vec()),
                    context: None,
                    options: WriteOptions::default(),
                };
                match self.inner.execute("concurrent put", other)? {
                    Reply::Written { .. } => {}
                    r => panic!("the concurrent put got {r:?}"),
                }
            }
        }
        Ok(reply)
    }
}

/// The values `bucket`/`key` holds, siblings included, in byte order.
fn values(s: &dyn Store, bucket: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
    let op = Op::Get {
        bucket: ByteBuf::from(bucket.to_vec()),
        key: ByteBuf::from(key.to_vec()),
        options: Default::default(),
    };
    let mut values = match s.execute("get", op).expect("a get") {
        Reply::Object { value: Some(v), .. } => vec![v.into_vec()],
        Reply::Object { siblings, .. } => siblings
            .into_iter()
            .filter_map(|s| s.value.map(ByteBuf::into_vec))
            .collect(),
        r => panic!("a get got {r:?}"),
    };
    values.sort();
    values
}

#[test]
fn a_write_the_context_read_did_not_see_is_kept_as_a_sibling() {
    let cluster = EmbeddedCluster::start("test", 3, TransportKind::Memory).expect("a cluster");
    let (b, k) = (&b"plain"[..], &b"k"[..]);
    store::put(&cluster, b, k, b"first", 3).expect("the first put");

    // The put reads "first", then "concurrent" is written, then the put
    // writes with the context of its read: it replaces "first" only.
    let s = Interleaved {
        inner: &cluster,
        value: b"concurrent",
        done: AtomicBool::new(false),
    };
    store::put(&s, b, k, b"second", 3).expect("the second put");
    assert_eq!(
        values(&cluster, b, k),
        vec![b"concurrent".to_vec(), b"second".to_vec()]
    );
    let got = store::get(&cluster, b, k, 3).expect_err("siblings");
    assert_eq!(got.code, ringkv_result::RINGKV_SIBLINGS, "{got}");

    // The next put reads both and replaces both.
    store::put(&cluster, b, k, b"third", 3).expect("the third put");
    assert_eq!(store::get(&cluster, b, k, 3).expect("a get"), b"third");

    // A delete likewise keeps a value it did not read.
    let s = Interleaved {
        inner: &cluster,
        value: b"late",
        done: AtomicBool::new(false),
    };
    store::delete(&s, b, k, 3).expect("the delete");
    assert_eq!(values(&cluster, b, k), vec![b"late".to_vec()]);
}

#[test]
fn a_put_whose_context_read_fails_writes_nothing() {
    let cluster = EmbeddedCluster::start("test", 1, TransportKind::Memory).expect("a cluster");
    // TWO is more than the one replica: the read is refused, and so is the
    // put, with nothing written.
    let got = store::put(&cluster, b"plain", b"k", b"v", 2).expect_err("refused");
    assert_eq!(got.code, ringkv_result::RINGKV_INVALID_ARGUMENT, "{got}");
    let got = store::get(&cluster, b"plain", b"k", 1).expect_err("nothing");
    assert_eq!(got.code, ringkv_result::RINGKV_NOT_FOUND, "{got}");
}

#[test]
fn a_delete_in_a_counter_bucket_removes_the_counter() {
    let cluster = EmbeddedCluster::start("test", 3, TransportKind::Memory).expect("a cluster");
    let (b, k) = (&b"hits"[..], &b"home"[..]);
    store::set_bucket_policy(&cluster, b, 3).expect("PNCOUNTER");
    assert_eq!(store::counter_add(&cluster, b, k, 5, 3).expect("an add"), 5);
    // A blind delete was refused here: it would remove nothing.
    store::delete(&cluster, b, k, 3).expect("the delete");
    assert_eq!(store::counter_get(&cluster, b, k, 3).expect("a get"), 0);
    assert_eq!(store::counter_add(&cluster, b, k, 2, 3).expect("an add"), 2);
}
