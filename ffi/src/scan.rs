//! Scans from C: a cursor object (`ringkv_scan`) that lists a bucket's
//! keys one at a time, fetching pages from the store as it goes, so that
//! a C program loops over keys without seeing pages or the protocol's
//! cursor:
//!
//! ```c
//! int done = 0;
//! while ((r = ringkv_scan_next(scan, &key, &len, &done)) == RINGKV_OK && !done) { ... }
//! ```
//!
//! Guarantee: as for every function of the C ABI (`capi.rs`); and a
//! failed `ringkv_scan_next` loses nothing: the next call asks for the
//! same page again.
//!
//! Not here: values (a scan lists keys; read each with a get), snapshots
//! (docs/protocol.md, "Scan", says what a scan promises).

#![allow(non_camel_case_types, clippy::too_many_arguments)]

use std::ffi::c_int;
use std::time::Duration;

use crate::capi::{
    boundary, bytes, client_store, cluster_store, out, out_ptr, quiet, ringkv_client,
    ringkv_cluster,
};
use crate::result::ringkv_result;
use crate::store::{self, Failure, Outcome, Store};

/// The most keys one scan page may hold: a `page_limit` of
/// `ringkv_*_scan_new` is 1 to this, or 0 for the default page
/// (`RINGKV_DEFAULT_SCAN_PAGE`).
pub const RINGKV_MAX_SCAN_PAGE: u32 = 1000;
/// The page a `page_limit` of 0 asks for.
pub const RINGKV_DEFAULT_SCAN_PAGE: u32 = 100;

const _: () = assert!(RINGKV_MAX_SCAN_PAGE == store::MAX_SCAN_PAGE);

/// Where a scan's pages come from: the handle it was made on.
#[derive(Clone, Copy)]
enum Source {
    Cluster(*const ringkv_cluster),
    Client(*const ringkv_client),
}

/// A scan of one bucket's keys, in token order (the order of the keys'
/// places on the ring, not byte order), made by `ringkv_cluster_scan_new`
/// or `ringkv_client_scan_new`, advanced by `ringkv_scan_next`, freed by
/// `ringkv_scan_free`. It must be freed before the cluster or client it
/// was made on. Not a snapshot: a key that exists for the whole scan is
/// listed exactly once; one written or deleted meanwhile may or may not
/// be.
pub struct ringkv_scan {
    source: Source,
    bucket: Vec<u8>,
    page_limit: u32,
    r: u32,
    timeout: Option<Duration>,
    /// The keys of the page being read, and the next to give.
    page: Vec<Vec<u8>>,
    next: usize,
    /// Where the next page starts; `None` with `started` when done.
    cursor: Option<Vec<u8>>,
    started: bool,
    /// Keys given so far.
    listed: u64,
}

impl ringkv_scan {
    /// Whether the last page was read and every key of it given.
    fn done(&self) -> bool {
        self.started && self.cursor.is_none() && self.next >= self.page.len()
    }

    /// The store the scan reads through.
    ///
    /// # Safety
    /// The handle the scan was made on is live (the scan's contract).
    unsafe fn store(&self, op: &str) -> Outcome<&dyn Store> {
        // SAFETY: forwarded contract.
        unsafe {
            match self.source {
                Source::Cluster(c) => cluster_store(op, c),
                Source::Client(c) => client_store(op, c),
            }
        }
    }

    /// Reads pages until one holds a key or the scan is done. On an error
    /// nothing changes: the next call asks for the same page.
    ///
    /// # Safety
    /// As [`ringkv_scan::store`].
    unsafe fn fill(&mut self, op: &str) -> Outcome<()> {
        while self.next >= self.page.len() && !(self.started && self.cursor.is_none()) {
            // SAFETY: forwarded contract.
            let s = unsafe { self.store(op) }?;
            let (keys, cursor) = store::scan_page(
                s,
                &self.bucket,
                self.cursor.as_deref(),
                self.page_limit,
                self.r,
                self.timeout,
            )
            .map_err(|f| renamed(op, f))?;
            self.page = keys;
            self.next = 0;
            self.cursor = cursor;
            self.started = true;
        }
        Ok(())
    }
}

/// A failure of the shared layer's `scan`, named as the C function `op`.
fn renamed(op: &str, f: Failure) -> Failure {
    let rest = f.message.strip_prefix("scan: ").unwrap_or(&f.message);
    Failure::new(f.code, format!("{op}: {rest}"))
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn scan_new_on(
    op: &'static str,
    s: Outcome<&dyn Store>,
    source: Source,
    bucket: (*const u8, usize),
    page_limit: u32,
    r: u32,
    timeout_ms: u32,
    out_scan: *mut *mut ringkv_scan,
) -> ringkv_result {
    boundary(op, || {
        let _ = s?;
        // SAFETY: forwarded contract.
        let (b, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                out_ptr(op, "out_scan", out_scan)?,
            )
        };
        if b.is_empty() {
            return Err(Failure::invalid(format!("{op}: the bucket is empty")));
        }
        let page_limit = match page_limit {
            0 => RINGKV_DEFAULT_SCAN_PAGE,
            n if n <= RINGKV_MAX_SCAN_PAGE => n,
            n => {
                return Err(Failure::invalid(format!(
                    "{op}: page_limit {n} is not 0 (the default) or 1 to {RINGKV_MAX_SCAN_PAGE}"
                )))
            }
        };
        store::consistency(op, r)?;
        let timeout = store::timeout_arg(op, "timeout_ms", timeout_ms)?;
        *out = Box::into_raw(Box::new(ringkv_scan {
            source,
            bucket: b.to_vec(),
            page_limit,
            r,
            timeout,
            page: Vec::new(),
            next: 0,
            cursor: None,
            started: false,
            listed: 0,
        }));
        Ok(())
    })
}

/// Starts a scan of `bucket`'s keys through an embedded cluster and
/// writes it to `*out_scan`; nothing is read until the first
/// `ringkv_scan_next`. Pages of up to `page_limit` keys (0: 100; at most
/// `RINGKV_MAX_SCAN_PAGE`) are read at level `r` (`RINGKV_CONSISTENCY_*`),
/// each within `timeout_ms` (0: the bucket's timeout). Deleted keys are
/// not listed.
///
/// The scan must be freed (`ringkv_scan_free`) before `cluster` is.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (cluster, out_scan; bucket with a
/// non-zero length), `RINGKV_INVALID_ARGUMENT` (empty bucket, page_limit
/// above `RINGKV_MAX_SCAN_PAGE`, unknown `r`, timeout_ms above
/// `RINGKV_MAX_TIMEOUT_MS`), `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same cluster except `ringkv_cluster_free`.
///
/// # Safety
/// `cluster` NULL or live; `bucket` NULL or valid for `bucket_len`
/// bytes; `out_scan` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_scan_new(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    page_limit: u32,
    r: u32,
    timeout_ms: u32,
    out_scan: *mut *mut ringkv_scan,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_scan_new";
    // SAFETY: forwarded contract.
    unsafe {
        scan_new_on(
            OP,
            cluster_store(OP, cluster),
            Source::Cluster(cluster),
            (bucket, bucket_len),
            page_limit,
            r,
            timeout_ms,
            out_scan,
        )
    }
}

/// As `ringkv_cluster_scan_new`, through a client connection; a
/// `timeout_ms` of 0 is the client's request timeout. The scan must be
/// freed before `client` is; closing the client makes the next
/// `ringkv_scan_next` fail with `RINGKV_CLOSED`.
///
/// Errors: those of `ringkv_cluster_scan_new`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same client except `ringkv_client_free`.
///
/// # Safety
/// `client` NULL or live; `bucket` NULL or valid for `bucket_len` bytes;
/// `out_scan` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_scan_new(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    page_limit: u32,
    r: u32,
    timeout_ms: u32,
    out_scan: *mut *mut ringkv_scan,
) -> ringkv_result {
    const OP: &str = "ringkv_client_scan_new";
    // SAFETY: forwarded contract.
    unsafe {
        scan_new_on(
            OP,
            client_store(OP, client),
            Source::Client(client),
            (bucket, bucket_len),
            page_limit,
            r,
            timeout_ms,
            out_scan,
        )
    }
}

/// Gives the scan's next key: on `RINGKV_OK` with `*out_done` 0,
/// `*out_key` and `*out_key_len` are the key (valid until the next
/// `ringkv_scan_next` or `ringkv_scan_free` on this scan); on `RINGKV_OK`
/// with `*out_done` 1, the scan is over (the key outputs are left alone,
/// and every later call says done again). Reads the next page from the
/// store when the current one is used up (so this call may block, as a
/// get does).
///
/// On an error nothing is lost: the scan stays where it was, and calling
/// again asks for the same page (after a `RINGKV_TIMEOUT` or
/// `RINGKV_UNAVAILABLE`, retrying may succeed).
///
/// Errors: `RINGKV_NULL_ARGUMENT` (scan, out_key, out_key_len, out_done),
/// `RINGKV_INVALID_ARGUMENT` (a level the bucket cannot meet; a bucket
/// whose policy lists no keys), `RINGKV_UNAVAILABLE`, `RINGKV_TIMEOUT`,
/// `RINGKV_INTERNAL`, `RINGKV_PANIC`; through a client also
/// `RINGKV_CLOSED`, `RINGKV_CONNECTION`, `RINGKV_DENIED`, `RINGKV_TLS`,
/// `RINGKV_REMOTE`.
///
/// Thread safety: one call at a time on a scan (it changes); different
/// scans of one handle may run on different threads.
///
/// # Safety
/// `scan` NULL or live, and the handle it was made on live; the outputs
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_scan_next(
    scan: *mut ringkv_scan,
    out_key: *mut *const u8,
    out_key_len: *mut usize,
    out_done: *mut c_int,
) -> ringkv_result {
    const OP: &str = "ringkv_scan_next";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (sc, key, len, done) = unsafe {
            (
                scan.as_mut().ok_or_else(|| crate::capi::null(OP, "scan"))?,
                out(OP, "out_key", out_key)?,
                out(OP, "out_key_len", out_key_len)?,
                out(OP, "out_done", out_done)?,
            )
        };
        // SAFETY: forwarded contract.
        unsafe { sc.fill(OP) }?;
        if sc.done() {
            *done = 1;
            return Ok(());
        }
        let k = &sc.page[sc.next];
        sc.next += 1;
        sc.listed += 1;
        *key = k.as_ptr();
        *len = k.len();
        *done = 0;
        Ok(())
    })
}

/// The number of keys `scan` has given so far; 0 when `scan` is NULL.
///
/// Thread safety: as `ringkv_scan_next`.
///
/// # Safety
/// `scan` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_scan_count(scan: *const ringkv_scan) -> u64 {
    // SAFETY: by the contract, scan is NULL or live.
    quiet(0, || unsafe { scan.as_ref() }.map_or(0, |s| s.listed))
}

/// Frees a scan, done or not. NULL does nothing. Free every scan before
/// the cluster or client it was made on.
///
/// Thread safety: no other call may use `scan` during or after this one.
///
/// # Safety
/// `scan` NULL or a scan from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_scan_free(scan: *mut ringkv_scan) {
    if scan.is_null() {
        return;
    }
    // SAFETY: by the contract, scan came from Box::into_raw and is freed
    // once.
    quiet((), || drop(unsafe { Box::from_raw(scan) }));
}
