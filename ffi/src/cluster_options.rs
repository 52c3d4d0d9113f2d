//! Options for embedded clusters from C: a data directory (so that data
//! survives closing and reopening the cluster), the storage engine, the
//! virtual nodes per node, the default replicas and levels, and a log
//! callback, set on a `ringkv_cluster_options` and used by
//! `ringkv_cluster_new_with`.
//!
//! Guarantee: as for every function of the C ABI (`capi.rs`).
//!
//! Not here: how log events reach the callback (`log.rs`).

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

use crate::capi::{boundary, out_ptr, quiet, ringkv_cluster, text};
use crate::log::{self, ringkv_log_fn, LogSink};
use crate::result::ringkv_result;
use crate::store::{self, EmbeddedCluster, EmbeddedOptions, Outcome};

/// Storage engine of an embedded cluster: in memory (nothing kept on
/// disk; the default without a data directory).
pub const RINGKV_ENGINE_MEMORY: u32 = 0;
/// Storage engine of an embedded cluster: the LSM tree (the default with
/// a data directory).
pub const RINGKV_ENGINE_LSM: u32 = 1;
/// Storage engine of an embedded cluster: the B-tree (redb), for
/// read-heavy use.
pub const RINGKV_ENGINE_BTREE: u32 = 2;
/// The most virtual nodes per node `ringkv_cluster_options_set_vnodes`
/// takes.
pub const RINGKV_MAX_VNODES: u32 = 1024;

const _: () = assert!(RINGKV_MAX_VNODES == store::MAX_VNODES);

/// How `ringkv_cluster_new_with` makes an embedded cluster: each setting
/// unset until a `ringkv_cluster_options_set_*` call sets it (memory
/// engine, no data directory, 32 virtual nodes per node). Created by
/// `ringkv_cluster_options_new`, freed by `ringkv_cluster_options_free`;
/// the cluster copies what it needs, so the options may be freed,
/// changed or reused right after.
pub struct ringkv_cluster_options {
    inner: EmbeddedOptions,
    log: Option<LogSink>,
}

/// Creates cluster options with nothing set and writes them to `*out`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (out), `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_new(
    out: *mut *mut ringkv_cluster_options,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_new";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        *out = Box::into_raw(Box::new(ringkv_cluster_options {
            inner: EmbeddedOptions::default(),
            log: None,
        }));
        Ok(())
    })
}

/// Frees cluster options. NULL does nothing. Clusters made with them are
/// not affected.
///
/// Thread safety: no other call may use `options` during or after this
/// one.
///
/// # Safety
/// `options` NULL or options from `ringkv_cluster_options_new` not yet
/// freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_free(options: *mut ringkv_cluster_options) {
    if options.is_null() {
        return;
    }
    // SAFETY: by the contract, options came from Box::into_raw and is
    // freed once.
    quiet((), || drop(unsafe { Box::from_raw(options) }));
}

/// Sets a log callback: while the cluster made with these options lives,
/// `log_fn(user_data, level, target, message)` receives the log events of
/// its nodes at `max_level` (`RINGKV_LOG_ERROR` 1 to `RINGKV_LOG_TRACE`
/// 5) and below; INFO shows membership changes ("membership: 2 is up")
/// and finished transfers. `target` (the Rust module that logged) and
/// `message` (the text, then the event's fields as ` key=value`) are
/// NUL-terminated and valid only during the call. A NULL `log_fn` removes
/// the callback.
///
/// The library installs a process-wide `tracing` subscriber for this the
/// first time a cluster with a callback is made; if the process already
/// has one (a Rust host that set its own), `ringkv_cluster_new_with`
/// fails with `RINGKV_INVALID_ARGUMENT`. An event does not tell which
/// cluster logged it: with several clusters with callbacks in a process,
/// each callback receives the events of all of them (and of any other
/// `tracing` user in the process).
///
/// The callback is called from the nodes' threads, concurrently: it must
/// be thread-safe, return quickly, not unwind (no C++ exception, no
/// `longjmp`) and not call into this library. It is not called after
/// `ringkv_cluster_free` of its cluster returns.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (`max_level` not 1 to 5), `RINGKV_PANIC`. On an error the options are
/// unchanged.
///
/// Thread safety: as `ringkv_cluster_options_set_data_dir`.
///
/// # Safety
/// `options` NULL or live; `log_fn` NULL or a function safe to call as
/// described, with `user_data`, until the cluster is freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_log(
    options: *mut ringkv_cluster_options,
    log_fn: ringkv_log_fn,
    user_data: *mut c_void,
    max_level: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_log";
    boundary(OP, || {
        // SAFETY: by the contract, a non-NULL options is live and not
        // shared.
        let o = unsafe { options.as_mut() }.ok_or_else(|| crate::capi::null(OP, "options"))?;
        o.log = LogSink::new(OP, log_fn, user_data, max_level)?;
        Ok(())
    })
}

/// The options behind a handle, for a setter.
///
/// # Safety
/// `ptr` NULL or live, and used by no other call meanwhile.
unsafe fn options_mut<'a>(
    op: &str,
    ptr: *mut ringkv_cluster_options,
) -> Outcome<&'a mut EmbeddedOptions> {
    // SAFETY: by the contract, a non-NULL ptr is live and not shared.
    unsafe { ptr.as_mut() }
        .map(|o| &mut o.inner)
        .ok_or_else(|| crate::capi::null(op, "options"))
}

/// Keeps the nodes' data under `dir` (NUL-terminated UTF-8; made if
/// missing), one subdirectory per node (`node-1`, ...): a cluster made
/// again with as many nodes on the same directory, after the first was
/// freed, holds the data the first held. Without a directory the data
/// lives in memory, or in a temporary directory removed when the cluster
/// is freed. With a directory and no engine set, the engine is LSM. Only
/// one cluster at a time may use a directory.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options, dir), `RINGKV_INVALID_ARGUMENT`
/// (empty, not UTF-8), `RINGKV_PANIC`. On an error the options are
/// unchanged.
///
/// Thread safety: not concurrently with any other call on the same
/// options.
///
/// # Safety
/// `options` NULL or live; `dir` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_data_dir(
    options: *mut ringkv_cluster_options,
    dir: *const c_char,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_data_dir";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, dir) = unsafe { (options_mut(OP, options)?, text(OP, "dir", dir)?) };
        o.set_dir(OP, dir)
    })
}

/// Sets the storage engine (`RINGKV_ENGINE_MEMORY`, `_LSM` or `_BTREE`).
/// The memory engine with a data directory is refused by
/// `ringkv_cluster_new_with`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (another number), `RINGKV_PANIC`. On an error the options are
/// unchanged.
///
/// Thread safety: as `ringkv_cluster_options_set_data_dir`.
///
/// # Safety
/// `options` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_engine(
    options: *mut ringkv_cluster_options,
    engine: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_engine";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let o = unsafe { options_mut(OP, options) }?;
        o.set_engine(OP, engine)
    })
}

/// Sets the virtual nodes per node (1 to `RINGKV_MAX_VNODES`; default
/// 32): more spread keys more evenly over the nodes. A cluster reopened on
/// a data directory must use the same number, or keys move.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (out of range), `RINGKV_PANIC`. On an error the options are unchanged.
///
/// Thread safety: as `ringkv_cluster_options_set_data_dir`.
///
/// # Safety
/// `options` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_vnodes(
    options: *mut ringkv_cluster_options,
    vnodes: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_vnodes";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let o = unsafe { options_mut(OP, options) }?;
        o.set_vnodes(OP, vnodes)
    })
}

/// Sets the default conflict policy of every bucket of the cluster not
/// given one (`RINGKV_POLICY_*`; default `RINGKV_POLICY_SIBLINGS`): with
/// `RINGKV_POLICY_LWW`, concurrent writes leave one value, the last; a
/// CRDT policy makes every bucket a counter or set bucket. A bucket's own
/// policy (`ringkv_cluster_set_bucket_policy`) overrides it.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (another number), `RINGKV_PANIC`. On an error the options are
/// unchanged.
///
/// Thread safety: as `ringkv_cluster_options_set_data_dir`.
///
/// # Safety
/// `options` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_policy(
    options: *mut ringkv_cluster_options,
    policy: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_policy";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let o = unsafe { options_mut(OP, options) }?;
        o.set_policy(OP, policy)
    })
}

/// Sets the default bucket properties: `n` replicas per key (1 to 5, at
/// most the cluster's nodes; default min(3, nodes)) and the read and
/// write levels `r` and `w` (`RINGKV_CONSISTENCY_ONE` to `_ALL`; default
/// QUORUM) a request with `RINGKV_CONSISTENCY_DEFAULT` uses. Every bucket
/// starts with them (and with the policy of
/// `ringkv_cluster_options_set_policy`).
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (`n` out of range, `r` or `w` DEFAULT or unknown, or needing more than
/// `n` replicas; `ringkv_cluster_new_with` refuses an `n` above its
/// nodes), `RINGKV_PANIC`. On an error the options are unchanged.
///
/// Thread safety: as `ringkv_cluster_options_set_data_dir`.
///
/// # Safety
/// `options` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_options_set_replicas(
    options: *mut ringkv_cluster_options,
    n: u32,
    r: u32,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_options_set_replicas";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let o = unsafe { options_mut(OP, options) }?;
        o.set_replicas(OP, n, r, w)
    })
}

/// As `ringkv_cluster_new`, made as `options` say (NULL: the defaults,
/// as `ringkv_cluster_new`).
///
/// Errors: `RINGKV_NULL_ARGUMENT` (out), `RINGKV_INVALID_ARGUMENT` (nodes,
/// transport; a data directory with the memory engine, or one that
/// cannot be made; more replicas than nodes; a log callback when the
/// process already has a tracing subscriber), `RINGKV_UNAVAILABLE` (the nodes did not start or form
/// a ring within 30 s: for example the directory is in use by another
/// cluster, or holds data an engine cannot open), `RINGKV_INTERNAL`,
/// `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread; the same options may be
/// read by concurrent calls, but not changed or freed meanwhile.
///
/// # Safety
/// `options` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_new_with(
    nodes: u32,
    transport: u32,
    options: *const ringkv_cluster_options,
    out: *mut *mut ringkv_cluster,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_new_with";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        let kind = store::transport(OP, transport)?;
        let defaults = EmbeddedOptions::default();
        // SAFETY: by the contract, a non-NULL options is live and not
        // changed meanwhile.
        let given = unsafe { options.as_ref() };
        let settings = given.map_or(&defaults, |o| &o.inner);
        // Registered before the nodes start, so that the callback sees
        // the cluster form.
        let registration = match given.and_then(|o| o.log) {
            Some(sink) => Some(log::register(OP, sink)?),
            None => None,
        };
        let inner = EmbeddedCluster::start_with(OP, nodes, kind, settings)?;
        *out = Box::into_raw(Box::new(ringkv_cluster::with_log(inner, registration)));
        Ok(())
    })
}
