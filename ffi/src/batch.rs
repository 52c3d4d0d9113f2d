//! Batch calls from C: a multi-get and a multi-put of up to
//! `RINGKV_MAX_BATCH_KEYS` keys of one bucket in one request (issue
//! [16]). The answer is a `ringkv_batch`: one item per key, in request
//! order, each OK (with its object, or the written object's context) or
//! the error that key got; one failing key does not fail the others.
//!
//! A batch the store refuses whole (no keys, too many, a key twice in a
//! multi-put, too many bytes) is the call's own `RINGKV_INVALID_ARGUMENT`,
//! with nothing read or written and the output untouched.
//!
//! Guarantee: as for every function of the C ABI (`capi.rs`): NULL checks
//! before any work, outputs written only on `RINGKV_OK`, a panic
//! boundary, and a message naming the function for `ringkv_last_error`.

#![allow(non_camel_case_types, clippy::too_many_arguments)]

use crate::capi::{
    boundary, bytes, client_store, cluster_store, handle, null, out, out_ptr, prefixed, quiet,
    ringkv_client, ringkv_cluster,
};
use crate::object::ringkv_object;
use crate::result::ringkv_result;
use crate::store::{self, Failure, Outcome, Store};

/// The most keys one batch may hold: 1,000.
pub const RINGKV_MAX_BATCH_KEYS: usize = 1000;

/// The most bytes of keys, values and contexts one multi-put may carry
/// together: 15 MiB.
pub const RINGKV_MAX_BATCH_BYTES: usize = 15728640;

// The C values are literals (cbindgen writes literals only); they are
// the protocol's.
const _: () = assert!(RINGKV_MAX_BATCH_KEYS == ringkv::protocol::MAX_BATCH_KEYS);
const _: () = assert!(RINGKV_MAX_BATCH_BYTES == ringkv::protocol::MAX_BATCH_BYTES);

/// The answer to a multi-get or a multi-put: one item per key, in request
/// order. Read with `ringkv_batch_len`, `ringkv_batch_status`,
/// `ringkv_batch_object` (a multi-get's) and `ringkv_batch_context`; free
/// with `ringkv_batch_free`.
pub struct ringkv_batch {
    /// Each key's outcome: for a multi-put, an object with no values and
    /// the written object's context.
    items: Vec<Outcome<ringkv_object>>,
    /// Whether the items are objects read (a multi-get).
    read: bool,
}

impl ringkv_batch {
    /// Item `index`, or the failure naming the call that asked for it.
    fn item(&self, op: &str, index: usize) -> Outcome<&ringkv_object> {
        let item = self.items.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "{op}: index {index} is not below the batch's {} items",
                self.items.len()
            ))
        })?;
        item.as_ref()
            .map_err(|f| Failure::new(f.code, format!("{op}: {}", f.message)))
    }
}

// ---- reading a batch ----

/// The number of items in `batch` (the number of keys asked for); 0 when
/// `batch` is NULL.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same batch except `ringkv_batch_free`.
///
/// # Safety
/// `batch` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_batch_len(batch: *const ringkv_batch) -> usize {
    // SAFETY: by the contract, batch is NULL or live.
    quiet(0, || unsafe { batch.as_ref() }.map_or(0, |b| b.items.len()))
}

/// The status of item `index` (0-based, below `ringkv_batch_len`):
/// `RINGKV_OK` when that key was read or written, else the error it got,
/// with its message for `ringkv_last_error`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (batch), `RINGKV_INVALID_ARGUMENT`
/// (index not below the length), and an item's own error: any the
/// single-key call (`ringkv_*_get_object`, `ringkv_*_put_ctx`) returns
/// for a node's answer: `RINGKV_INVALID_ARGUMENT`, `RINGKV_SIBLINGS`,
/// `RINGKV_UNAVAILABLE`, `RINGKV_TIMEOUT` (the batch's time ran out
/// before that key's turn: retry it), `RINGKV_DENIED`, `RINGKV_REMOTE`.
///
/// Thread safety: as `ringkv_batch_len`.
///
/// # Safety
/// `batch` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_batch_status(
    batch: *const ringkv_batch,
    index: usize,
) -> ringkv_result {
    const OP: &str = "ringkv_batch_status";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let b = unsafe { handle(OP, "batch", batch)? };
        b.item(OP, index).map(|_| ())
    })
}

/// Writes item `index` of a multi-get's batch, the key's whole object
/// (read it with `ringkv_object_count`, `ringkv_object_value` and
/// `ringkv_object_context`), to `*out_object`. The object is borrowed:
/// valid until `ringkv_batch_free(batch)`; do not free it. A key never
/// written, or deleted, is an object with no values.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (batch, out_object),
/// `RINGKV_INVALID_ARGUMENT` (index not below the length, or a
/// multi-put's batch), and the item's own error (`ringkv_batch_status`).
///
/// Thread safety: as `ringkv_batch_len`.
///
/// # Safety
/// `batch` NULL or live; `out_object` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_batch_object(
    batch: *const ringkv_batch,
    index: usize,
    out_object: *mut *const ringkv_object,
) -> ringkv_result {
    const OP: &str = "ringkv_batch_object";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (b, o) = unsafe {
            (
                handle(OP, "batch", batch)?,
                out(OP, "out_object", out_object)?,
            )
        };
        if !b.read {
            return Err(Failure::invalid(format!(
                "{OP}: a multi-put's batch holds contexts, not objects: use ringkv_batch_context"
            )));
        }
        *o = b.item(OP, index)? as *const ringkv_object;
        Ok(())
    })
}

/// Writes the causal context of item `index` to `*out_data` and
/// `*out_len`: for a multi-get, the object's context (as
/// `ringkv_object_context`); for a multi-put, the context of the object
/// as stored (a later write with it replaces this one). Valid until
/// `ringkv_batch_free(batch)`; empty (length 0, a non-NULL pointer not to
/// be read) for a key never written.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (batch, out_data, out_len),
/// `RINGKV_INVALID_ARGUMENT` (index not below the length), and the
/// item's own error (`ringkv_batch_status`).
///
/// Thread safety: as `ringkv_batch_len`.
///
/// # Safety
/// `batch` NULL or live; `out_data` and `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_batch_context(
    batch: *const ringkv_batch,
    index: usize,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> ringkv_result {
    const OP: &str = "ringkv_batch_context";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (b, data, len) = unsafe {
            (
                handle(OP, "batch", batch)?,
                out(OP, "out_data", out_data)?,
                out(OP, "out_len", out_len)?,
            )
        };
        let context = &b.item(OP, index)?.object().context;
        *data = context.as_ptr();
        *len = context.len();
        Ok(())
    })
}

/// Frees a batch the library returned, and the objects in it. NULL does
/// nothing.
///
/// Thread safety: no other call may use `batch`, or an object borrowed
/// from it, during or after this one.
///
/// # Safety
/// `batch` NULL or a batch from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_batch_free(batch: *mut ringkv_batch) {
    if batch.is_null() {
        return;
    }
    // SAFETY: by the contract, batch came from Box::into_raw and is freed
    // once.
    quiet((), || drop(unsafe { Box::from_raw(batch) }));
}

// ---- shared bodies ----

/// `n` byte strings from parallel arrays of pointers and lengths; NULL
/// arrays are allowed only when `n` is 0.
///
/// # Safety
/// Each array NULL or valid for `n` elements; each element NULL or valid
/// for its length.
unsafe fn byte_array<'a>(
    op: &str,
    what: &str,
    ptrs: *const *const u8,
    lens: *const usize,
    n: usize,
) -> Outcome<Vec<&'a [u8]>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ptrs.is_null() {
        return Err(null(op, &format!("{what}s")));
    }
    if lens.is_null() {
        return Err(null(op, &format!("{what}_lens")));
    }
    if n > RINGKV_MAX_BATCH_KEYS {
        return Err(Failure::invalid(format!(
            "{op}: a batch holds 1 to {RINGKV_MAX_BATCH_KEYS} keys, not {n}"
        )));
    }
    // SAFETY: by the contract, both arrays hold n elements.
    let (ptrs, lens) = unsafe {
        (
            std::slice::from_raw_parts(ptrs, n),
            std::slice::from_raw_parts(lens, n),
        )
    };
    ptrs.iter()
        .zip(lens)
        .enumerate()
        // SAFETY: forwarded contract.
        .map(|(i, (&p, &len))| unsafe { bytes(op, &format!("{what}s[{i}]"), p, len) })
        .collect()
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn multi_get_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    keys: (*const *const u8, *const usize, usize),
    r: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                out_ptr(op, "out_batch", out_batch)?,
            )
        };
        // SAFETY: forwarded contract.
        let keys = unsafe { byte_array(op, "key", keys.0, keys.1, keys.2)? };
        let timeout = store::timeout_arg(op, "timeout_ms", timeout_ms)?;
        let items = store::multi_get(s, b, &keys, r, timeout).map_err(|f| prefixed(op, f))?;
        let items = items
            .into_iter()
            .map(|item| item.map(ringkv_object::new).map_err(|f| prefixed(op, f)))
            .collect();
        *out = Box::into_raw(Box::new(ringkv_batch { items, read: true }));
        Ok(())
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn multi_put_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    keys: (*const *const u8, *const usize),
    values: (*const *const u8, *const usize),
    contexts: (*const *const u8, *const usize),
    n: usize,
    w: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                out_ptr(op, "out_batch", out_batch)?,
            )
        };
        // SAFETY: forwarded contract.
        let (keys, values) = unsafe {
            (
                byte_array(op, "key", keys.0, keys.1, n)?,
                byte_array(op, "value", values.0, values.1, n)?,
            )
        };
        // NULL contexts: every write is blind.
        let contexts = if contexts.0.is_null() && contexts.1.is_null() {
            vec![&[][..]; n]
        } else {
            // SAFETY: forwarded contract.
            unsafe { byte_array(op, "ctx", contexts.0, contexts.1, n)? }
        };
        let writes: Vec<store::BatchWrite<'_>> = keys
            .iter()
            .zip(&values)
            .zip(&contexts)
            .map(|((k, v), c)| (*k, *v, *c))
            .collect();
        let timeout = store::timeout_arg(op, "timeout_ms", timeout_ms)?;
        let items = store::multi_put(s, b, &writes, w, timeout).map_err(|f| prefixed(op, f))?;
        let items = items
            .into_iter()
            .map(|item| {
                item.map(|context| {
                    ringkv_object::new(store::Object {
                        values: Vec::new(),
                        context,
                    })
                })
                .map_err(|f| prefixed(op, f))
            })
            .collect();
        *out = Box::into_raw(Box::new(ringkv_batch { items, read: false }));
        Ok(())
    })
}

// ---- embedded clusters ----

/// Reads `n` keys of `bucket` in one request (`keys[i]`, `key_lens[i]`
/// bytes each), each from `r` replicas (`RINGKV_CONSISTENCY_*`), and
/// writes the answer to `*out_batch` (free it with `ringkv_batch_free`):
/// one item per key, in the order of `keys`, each that key's whole object
/// (`ringkv_batch_object`) or the error it got (`ringkv_batch_status`).
/// A key never written, or deleted, is an object with no values, not an
/// error. A key may appear more than once: each is read. Each key is an
/// independent read, not a snapshot.
///
/// `timeout_ms`: as `ringkv_cluster_get_object`, for the whole batch; a
/// key whose turn comes after it ran out gets `RINGKV_TIMEOUT`.
///
/// Errors (the whole batch; nothing read, `*out_batch` untouched):
/// `RINGKV_NULL_ARGUMENT` (cluster, out_batch; bucket or a key with a
/// non-zero length; keys or key_lens with `n` > 0),
/// `RINGKV_INVALID_ARGUMENT` (`n` 0 or above `RINGKV_MAX_BATCH_KEYS`, an
/// empty bucket or key, a key too long, unknown `r`, an `r` above the
/// bucket's replicas, `timeout_ms` too large, a counter or set bucket),
/// `RINGKV_UNAVAILABLE`, `RINGKV_TIMEOUT`, `RINGKV_INTERNAL`,
/// `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same cluster except `ringkv_cluster_free`.
///
/// # Safety
/// `keys` and `key_lens` NULL or valid for `n` elements; each pointer
/// NULL or valid for its length; `out_batch` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_multi_get(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    n: usize,
    r: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_multi_get";
    // SAFETY: forwarded contract.
    unsafe {
        multi_get_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (keys, key_lens, n),
            r,
            timeout_ms,
            out_batch,
        )
    }
}

/// Writes `n` keys of `bucket` in one request: `values[i]` (may be empty)
/// under `keys[i]`, with `ctxs[i]` (a context from `ringkv_object_context`
/// or `ringkv_batch_context`; length 0 for a blind write), each
/// acknowledged by `w` replicas; `ctxs` and `ctx_lens` both NULL make
/// every write blind. Each item is written as `ringkv_cluster_put_ctx`
/// writes (no read first: a blind write of a key holding a value adds a
/// sibling under SIBLINGS), independently: no atomicity across keys.
/// The answer goes to `*out_batch` (free it with `ringkv_batch_free`):
/// one item per write, in order, its status (`ringkv_batch_status`) and
/// the context of the object as stored (`ringkv_batch_context`).
///
/// `timeout_ms`: as `ringkv_cluster_get_object`, for the whole batch; an
/// item whose turn comes after it ran out is not sent and gets
/// `RINGKV_TIMEOUT`.
///
/// Errors (the whole batch; nothing written, `*out_batch` untouched,
/// except `RINGKV_OUTCOME_UNKNOWN`): `RINGKV_NULL_ARGUMENT` (cluster,
/// out_batch; bucket, a key, value or context with a non-zero length;
/// keys, key_lens, values or value_lens with `n` > 0; one of ctxs and
/// ctx_lens but not the other), `RINGKV_INVALID_ARGUMENT` (`n` 0 or above
/// `RINGKV_MAX_BATCH_KEYS`, a key twice, more than
/// `RINGKV_MAX_BATCH_BYTES` of keys, values and contexts, an empty bucket
/// or key, a key too long, a context that is not one this store made,
/// unknown `w`, a `w` above the bucket's replicas, `timeout_ms` too
/// large, a counter or set bucket), `RINGKV_UNAVAILABLE`,
/// `RINGKV_TIMEOUT`, `RINGKV_OUTCOME_UNKNOWN` (no answer within
/// `timeout_ms`: some writes may have been applied), `RINGKV_INTERNAL`,
/// `RINGKV_PANIC`.
///
/// Thread safety: as `ringkv_cluster_multi_get`.
///
/// # Safety
/// Each array NULL or valid for `n` elements; each pointer NULL or valid
/// for its length; `out_batch` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_multi_put(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    values: *const *const u8,
    value_lens: *const usize,
    ctxs: *const *const u8,
    ctx_lens: *const usize,
    n: usize,
    w: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_multi_put";
    // SAFETY: forwarded contract.
    unsafe {
        multi_put_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (keys, key_lens),
            (values, value_lens),
            (ctxs, ctx_lens),
            n,
            w,
            timeout_ms,
            out_batch,
        )
    }
}

// ---- client connections ----

/// As `ringkv_cluster_multi_get`, through a client connection.
/// `timeout_ms` 0 is the client's request timeout.
///
/// Errors: those of `ringkv_cluster_multi_get`, and `RINGKV_CLOSED`
/// (after `ringkv_client_close`), `RINGKV_CONNECTION` (no node could be
/// reached), `RINGKV_DENIED` (the user's role may not read),
/// `RINGKV_TLS` (a reconnection's handshake failed), `RINGKV_REMOTE`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same client except `ringkv_client_free`.
///
/// # Safety
/// As `ringkv_cluster_multi_get`.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_multi_get(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    n: usize,
    r: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    const OP: &str = "ringkv_client_multi_get";
    // SAFETY: forwarded contract.
    unsafe {
        multi_get_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (keys, key_lens, n),
            r,
            timeout_ms,
            out_batch,
        )
    }
}

/// As `ringkv_cluster_multi_put`, through a client connection;
/// `timeout_ms` as `ringkv_client_multi_get`. The batch is retried by the
/// client only when it surely was not applied; a failed item is not
/// retried: resend it if its status allows.
///
/// Errors: those of `ringkv_cluster_multi_put`, and `RINGKV_CLOSED`,
/// `RINGKV_CONNECTION`, `RINGKV_DENIED` (the user's role may not write),
/// `RINGKV_TLS`, `RINGKV_REMOTE`.
///
/// Thread safety: as `ringkv_client_multi_get`.
///
/// # Safety
/// As `ringkv_cluster_multi_put`.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_multi_put(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    keys: *const *const u8,
    key_lens: *const usize,
    values: *const *const u8,
    value_lens: *const usize,
    ctxs: *const *const u8,
    ctx_lens: *const usize,
    n: usize,
    w: u32,
    timeout_ms: u32,
    out_batch: *mut *mut ringkv_batch,
) -> ringkv_result {
    const OP: &str = "ringkv_client_multi_put";
    // SAFETY: forwarded contract.
    unsafe {
        multi_put_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (keys, key_lens),
            (values, value_lens),
            (ctxs, ctx_lens),
            n,
            w,
            timeout_ms,
            out_batch,
        )
    }
}
