//! Objects with siblings and a causal context, from C: a get that returns
//! the whole object (`ringkv_object`: every value, siblings included, and
//! the opaque context), and puts and deletes that take a context back.
//! With them a C program reads siblings, merges them as it chooses, and
//! writes the merge (or a delete) with the context, which replaces the
//! values it read: what the Rust client does (issue [16]).
//!
//! Guarantee: as for every function of the C ABI (`capi.rs`): NULL checks
//! before any work, outputs written only on `RINGKV_OK` (the optional
//! `out_context` of a write may be NULL), a panic boundary, and a message
//! naming the function for `ringkv_last_error`.
//!
//! Multi-get and multi-put, which return these objects per key, are in
//! `batch.rs`.

#![allow(non_camel_case_types, clippy::too_many_arguments)]

use std::ffi::c_int;

use crate::capi::{
    boundary, bytes, client_store, cluster_store, handle, out, out_ptr, prefixed, quiet,
    ringkv_buf, ringkv_client, ringkv_cluster,
};
use crate::result::ringkv_result;
use crate::store::{self, Failure, Object, Outcome, Store};

/// A key's object as a read saw it: zero values (never written, or
/// deleted), one, or two and more siblings (concurrent writes, under the
/// SIBLINGS policy), and the opaque causal context to write back with.
/// Returned by `ringkv_cluster_get_object` and `ringkv_client_get_object`;
/// read with `ringkv_object_count`, `ringkv_object_value` and
/// `ringkv_object_context`; freed with `ringkv_object_free`.
pub struct ringkv_object {
    inner: Object,
}

impl ringkv_object {
    /// The object, for Rust code holding a handle (tests).
    pub fn object(&self) -> &Object {
        &self.inner
    }

    pub(crate) fn new(inner: Object) -> ringkv_object {
        ringkv_object { inner }
    }
}

// ---- reading an object ----

/// The number of values in `object`: 0 when the key has none (never
/// written, or deleted), 1 normally, 2 or more when concurrent writes
/// left siblings (a sibling may be a delete: see `ringkv_object_value`).
/// 0 when `object` is NULL.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same object except `ringkv_object_free`.
///
/// # Safety
/// `object` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_object_count(object: *const ringkv_object) -> usize {
    // SAFETY: by the contract, object is NULL or live.
    quiet(0, || {
        unsafe { object.as_ref() }.map_or(0, |o| o.inner.values.len())
    })
}

/// 1 when `object` holds a value (`ringkv_object_count` is not 0), 0 when
/// the key was never written or is deleted, or `object` is NULL.
///
/// Thread safety: as `ringkv_object_count`.
///
/// # Safety
/// `object` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_object_found(object: *const ringkv_object) -> c_int {
    // SAFETY: forwarded contract.
    c_int::from(unsafe { ringkv_object_count(object) } > 0)
}

/// Writes value `index` (0-based, below `ringkv_object_count(object)`) of
/// `object` to `*out_data` and `*out_len`; the bytes stay valid until
/// `ringkv_object_free(object)`. An empty value has length 0 and a
/// non-NULL pointer that must not be read.
///
/// A sibling that is a delete (a delete concurrent with another write:
/// the key is both deleted and written) has no value: the result is
/// `RINGKV_NOT_FOUND` and the outputs are left alone. Siblings come in
/// the order the node gives them (by the time and node of each write),
/// the same for the same object.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (object, out_data, out_len),
/// `RINGKV_INVALID_ARGUMENT` (index not below the count),
/// `RINGKV_NOT_FOUND` (that sibling is a delete).
///
/// Thread safety: as `ringkv_object_count`.
///
/// # Safety
/// `object` NULL or live; `out_data` and `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_object_value(
    object: *const ringkv_object,
    index: usize,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> ringkv_result {
    const OP: &str = "ringkv_object_value";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, data, len) = unsafe {
            (
                handle(OP, "object", object)?,
                out(OP, "out_data", out_data)?,
                out(OP, "out_len", out_len)?,
            )
        };
        let values = &o.inner.values;
        let value = values.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "{OP}: index {index} is not below the object's {} values",
                values.len()
            ))
        })?;
        let value = value.as_ref().ok_or_else(|| {
            Failure::new(
                ringkv_result::RINGKV_NOT_FOUND,
                format!("{OP}: value {index} is a delete, concurrent with the other values"),
            )
        })?;
        *data = value.as_ptr();
        *len = value.len();
        Ok(())
    })
}

/// Writes the object's causal context, opaque bytes to pass unchanged to
/// `ringkv_*_put_ctx` or `ringkv_*_delete_ctx`, to `*out_data` and
/// `*out_len`; valid until `ringkv_object_free(object)`. Empty (length 0,
/// a non-NULL pointer not to be read) when the key was never written; a
/// deleted key has a context, which a later put should carry.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (object, out_data, out_len).
///
/// Thread safety: as `ringkv_object_count`.
///
/// # Safety
/// `object` NULL or live; `out_data` and `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_object_context(
    object: *const ringkv_object,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> ringkv_result {
    const OP: &str = "ringkv_object_context";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, data, len) = unsafe {
            (
                handle(OP, "object", object)?,
                out(OP, "out_data", out_data)?,
                out(OP, "out_len", out_len)?,
            )
        };
        *data = o.inner.context.as_ptr();
        *len = o.inner.context.len();
        Ok(())
    })
}

/// Frees an object the library returned. NULL does nothing.
///
/// Thread safety: no other call may use `object` during or after this
/// one.
///
/// # Safety
/// `object` NULL or an object from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_object_free(object: *mut ringkv_object) {
    if object.is_null() {
        return;
    }
    // SAFETY: by the contract, object came from Box::into_raw and is
    // freed once.
    quiet((), || drop(unsafe { Box::from_raw(object) }));
}

// ---- shared bodies ----

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn get_object_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    r: u32,
    timeout_ms: u32,
    out_object: *mut *mut ringkv_object,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                out_ptr(op, "out_object", out_object)?,
            )
        };
        let timeout = store::timeout_arg(op, "timeout_ms", timeout_ms)?;
        let inner = store::get_object(s, b, k, r, timeout).map_err(|f| prefixed(op, f))?;
        *out = Box::into_raw(Box::new(ringkv_object { inner }));
        Ok(())
    })
}

/// What a write with a context writes: a value, or a delete.
enum Write {
    Put(*const u8, usize),
    Delete,
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn write_ctx_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    write: Write,
    context: (*const u8, usize),
    w: u32,
    timeout_ms: u32,
    out_context: *mut *mut ringkv_buf,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, c) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                bytes(op, "context", context.0, context.1)?,
            )
        };
        let timeout = store::timeout_arg(op, "timeout_ms", timeout_ms)?;
        let stored = match write {
            Write::Put(value, value_len) => {
                // SAFETY: forwarded contract.
                let v = unsafe { bytes(op, "value", value, value_len)? };
                store::put_ctx(s, b, k, v, c, w, timeout)
            }
            Write::Delete => store::delete_ctx(s, b, k, c, w, timeout),
        }
        .map_err(|f| prefixed(op, f))?;
        // SAFETY: by the contract, a non-NULL out_context is writable; it
        // is optional, so NULL is no error.
        if let Some(out) = unsafe { out_context.as_mut() } {
            *out = Box::into_raw(Box::new(ringkv_buf::new(stored)));
        }
        Ok(())
    })
}

// ---- embedded clusters ----

/// Reads `bucket`/`key` from `r` replicas (`RINGKV_CONSISTENCY_*`) and
/// writes the whole object to `*out_object` (free it with
/// `ringkv_object_free`): every value, siblings included, and the causal
/// context. A key never written, or deleted, is `RINGKV_OK` with no
/// values (`ringkv_object_count` 0), not `RINGKV_NOT_FOUND`; siblings are
/// `RINGKV_OK` too, not `RINGKV_SIBLINGS`.
///
/// `timeout_ms`: 0 for the bucket's own timeout (5 s unless set: how long
/// the coordinating node waits for replicas; a coordinating node that is
/// itself stuck is not bounded by it), else the most milliseconds the
/// call waits, whatever the nodes do (at most `RINGKV_MAX_TIMEOUT_MS`),
/// past which it returns `RINGKV_TIMEOUT`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (cluster, out_object; bucket or key with
/// a non-zero length), `RINGKV_INVALID_ARGUMENT` (empty bucket or key,
/// unknown `r`, an `r` above the bucket's replicas, `timeout_ms` too
/// large, a bucket whose policy is a counter or a set),
/// `RINGKV_UNAVAILABLE` (too few replicas), `RINGKV_TIMEOUT`,
/// `RINGKV_INTERNAL`, `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same cluster except `ringkv_cluster_free`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_object` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_get_object(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    timeout_ms: u32,
    out_object: *mut *mut ringkv_object,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_get_object";
    // SAFETY: forwarded contract.
    unsafe {
        get_object_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            r,
            timeout_ms,
            out_object,
        )
    }
}

/// Writes `value` (may be empty) under `bucket`/`key` with `context`
/// (`context_len` bytes from `ringkv_object_context`; NULL and 0 for a
/// blind write), acknowledged by `w` replicas. It does not read first:
/// it replaces exactly the values the context saw, so writing the merge
/// of an object's siblings with its context resolves them, and a value
/// the context did not see (written concurrently) stays beside the new
/// one as a sibling. A blind write of a key that holds a value, under
/// SIBLINGS, adds a sibling; under LWW the context changes nothing.
///
/// When `out_context` is not NULL, the context of the object as stored
/// (a later write with it replaces this one) is written to it as a
/// buffer (free it with `ringkv_buf_free`).
///
/// `timeout_ms`: as `ringkv_cluster_get_object`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (cluster; bucket, key, value or context
/// with a non-zero length), `RINGKV_INVALID_ARGUMENT` (empty bucket or
/// key, unknown `w`, a `w` above the bucket's replicas, `timeout_ms` too
/// large, a context that is not one this store made, a value too large, a
/// counter or set bucket), `RINGKV_SIBLINGS` (the key already holds the
/// most siblings a node keeps, 100 by default, and this write would add
/// one: read the object and write with its context), `RINGKV_UNAVAILABLE`,
/// `RINGKV_TIMEOUT`, `RINGKV_OUTCOME_UNKNOWN` (no answer within
/// `timeout_ms`: the write may have been applied), `RINGKV_INTERNAL`,
/// `RINGKV_PANIC`.
///
/// Thread safety: as `ringkv_cluster_get_object`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_context` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_put_ctx(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context: *const u8,
    context_len: usize,
    w: u32,
    timeout_ms: u32,
    out_context: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_put_ctx";
    // SAFETY: forwarded contract.
    unsafe {
        write_ctx_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            Write::Put(value, value_len),
            (context, context_len),
            w,
            timeout_ms,
            out_context,
        )
    }
}

/// Deletes `bucket`/`key` (writes a tombstone) with `context` (NULL and 0
/// for a blind delete), acknowledged by `w` replicas, as
/// `ringkv_cluster_put_ctx` writes a value: with the context of an object
/// read first, it deletes the values that read saw, and a get then finds
/// no value unless one was written concurrently. A blind delete of a key
/// that holds a value, under SIBLINGS, deletes nothing: it is kept
/// beside the value as a sibling that is a delete.
///
/// Errors, `timeout_ms`, `out_context` and thread safety: as
/// `ringkv_cluster_put_ctx`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_context` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_delete_ctx(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    context: *const u8,
    context_len: usize,
    w: u32,
    timeout_ms: u32,
    out_context: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_delete_ctx";
    // SAFETY: forwarded contract.
    unsafe {
        write_ctx_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            Write::Delete,
            (context, context_len),
            w,
            timeout_ms,
            out_context,
        )
    }
}

// ---- client connections ----

/// As `ringkv_cluster_get_object`, through a client connection.
/// `timeout_ms` 0 is the client's request timeout
/// (`ringkv_client_options_set_timeout_ms`; 6 s by default).
///
/// Errors: those of `ringkv_cluster_get_object`, and `RINGKV_CLOSED`
/// (after `ringkv_client_close`), `RINGKV_CONNECTION` (no node could be
/// reached), `RINGKV_DENIED` (the user's role may not read),
/// `RINGKV_TLS` (a reconnection's handshake failed), `RINGKV_REMOTE`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same client except `ringkv_client_free`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_object` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_get_object(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    timeout_ms: u32,
    out_object: *mut *mut ringkv_object,
) -> ringkv_result {
    const OP: &str = "ringkv_client_get_object";
    // SAFETY: forwarded contract.
    unsafe {
        get_object_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            r,
            timeout_ms,
            out_object,
        )
    }
}

/// As `ringkv_cluster_put_ctx`, through a client connection; `timeout_ms`
/// as `ringkv_client_get_object`. A write with a context is retried by
/// the client only when it surely was not applied; sent and unanswered,
/// it is `RINGKV_OUTCOME_UNKNOWN`.
///
/// Errors: those of `ringkv_cluster_put_ctx`, and `RINGKV_CLOSED`,
/// `RINGKV_CONNECTION`, `RINGKV_DENIED` (the user's role may not write),
/// `RINGKV_TLS`, `RINGKV_REMOTE`.
///
/// Thread safety: as `ringkv_client_get_object`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_context` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_put_ctx(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    context: *const u8,
    context_len: usize,
    w: u32,
    timeout_ms: u32,
    out_context: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_client_put_ctx";
    // SAFETY: forwarded contract.
    unsafe {
        write_ctx_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            Write::Put(value, value_len),
            (context, context_len),
            w,
            timeout_ms,
            out_context,
        )
    }
}

/// As `ringkv_cluster_delete_ctx`, through a client connection.
///
/// Errors: those of `ringkv_client_put_ctx`.
///
/// Thread safety: as `ringkv_client_get_object`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_context` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_delete_ctx(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    context: *const u8,
    context_len: usize,
    w: u32,
    timeout_ms: u32,
    out_context: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_client_delete_ctx";
    // SAFETY: forwarded contract.
    unsafe {
        write_ctx_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            Write::Delete,
            (context, context_len),
            w,
            timeout_ms,
            out_context,
        )
    }
}
