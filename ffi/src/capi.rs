//! The C ABI: opaque handles, the `extern "C"` functions of
//! `include/ringkv.h`, and the buffers Rust hands to C.
//!
//! Guarantee, for every function here: each pointer is checked for NULL
//! before anything is done; outputs are written only when the result is
//! `RINGKV_OK` (the one exception, `RINGKV_BUFFER_TOO_SMALL`'s size, is
//! documented where it applies); each body runs inside `catch_unwind`, so
//! a panic becomes `RINGKV_PANIC` instead of unwinding into C; each call
//! leaves its message for `ringkv_last_error`.
//!
//! Byte arguments are a pointer and a length. A length of 0 means the empty
//! string, and then the pointer may be NULL; a non-zero length with a NULL
//! pointer is `RINGKV_NULL_ARGUMENT`. Buckets and keys must not be empty
//! (`RINGKV_INVALID_ARGUMENT`); values and set members may be. Keys,
//! buckets and values have size limits (`RINGKV_MAX_*_BYTES`), past which
//! a call fails with `RINGKV_INVALID_ARGUMENT`.
//!
//! Not here: what the operations mean (`store.rs`), C++ (`cxx_bridge.rs`).

// The C names are the ABI's (`ringkv_cluster`, not `RingkvCluster`), and a
// C function takes each byte string as a pointer and a length, so the
// argument lists are long by nature.
#![allow(non_camel_case_types, clippy::too_many_arguments)]

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::result::{ringkv_result, set_last_error};
use crate::store::{self, ConnectOptions, EmbeddedCluster, Failure, Outcome, RemoteClient, Store};

/// Consistency level: the bucket's own default `r` (reads) or `w` (writes).
pub const RINGKV_CONSISTENCY_DEFAULT: u32 = 0;
/// Consistency level: one replica.
pub const RINGKV_CONSISTENCY_ONE: u32 = 1;
/// Consistency level: two replicas.
pub const RINGKV_CONSISTENCY_TWO: u32 = 2;
/// Consistency level: a majority of the bucket's replicas.
pub const RINGKV_CONSISTENCY_QUORUM: u32 = 3;
/// Consistency level: every replica of the bucket.
pub const RINGKV_CONSISTENCY_ALL: u32 = 4;

/// Bucket policy: last writer wins (a put replaces the value).
pub const RINGKV_POLICY_LWW: u32 = 1;
/// Bucket policy: concurrent writes are kept as siblings (the default).
pub const RINGKV_POLICY_SIBLINGS: u32 = 2;
/// Bucket policy: positive-negative counters.
pub const RINGKV_POLICY_PNCOUNTER: u32 = 3;
/// Bucket policy: grow-only counters.
pub const RINGKV_POLICY_GCOUNTER: u32 = 4;
/// Bucket policy: observed-remove sets.
pub const RINGKV_POLICY_ORSET: u32 = 5;
/// Bucket policy: grow-only sets.
pub const RINGKV_POLICY_GSET: u32 = 6;
/// Bucket policy: two-phase sets (a removed member cannot come back).
pub const RINGKV_POLICY_TWOPSET: u32 = 7;

/// The longest key, in bytes (8 KiB). A longer one is refused with
/// `RINGKV_INVALID_ARGUMENT`, by the node, before anything is stored.
pub const RINGKV_MAX_KEY_BYTES: usize = 8192;
/// The longest bucket name, in bytes (1 KiB). A longer one is refused with
/// `RINGKV_INVALID_ARGUMENT`.
pub const RINGKV_MAX_BUCKET_BYTES: usize = 1024;
/// The largest value, in bytes (15 MiB), and the most bytes of members one
/// set update may carry (counting 9 more per member). A larger one is
/// refused with `RINGKV_INVALID_ARGUMENT`; so is a write that would make
/// the key's stored object, siblings included, larger than 15.5 MiB.
pub const RINGKV_MAX_VALUE_BYTES: usize = 15728640;

/// The largest CA file `ringkv_client_options_set_tls_ca_file` reads, in
/// bytes (1 MiB). A larger one is refused with `RINGKV_INVALID_ARGUMENT`.
pub const RINGKV_MAX_CA_FILE_BYTES: usize = 1048576;

const _: () = assert!(RINGKV_MAX_CA_FILE_BYTES as u64 == store::MAX_CA_FILE_BYTES);

// The header's numbers are ringkv's (`ringkv::config`): cbindgen needs
// literals, and these fail to compile if the two ever differ.
const _: () = assert!(RINGKV_MAX_KEY_BYTES == ringkv::config::MAX_KEY_BYTES);
const _: () = assert!(RINGKV_MAX_BUCKET_BYTES == ringkv::config::MAX_BUCKET_BYTES);
const _: () = assert!(RINGKV_MAX_VALUE_BYTES == ringkv::config::MAX_VALUE_BYTES);

/// The library's major version (the crate `ringkv-ffi`'s). With
/// `RINGKV_VERSION_MINOR` and `RINGKV_VERSION_PATCH`, what
/// `ringkv_version()` returns as text, for the header a program was
/// compiled with.
pub const RINGKV_VERSION_MAJOR: u32 = 0;
/// The library's minor version.
pub const RINGKV_VERSION_MINOR: u32 = 1;
/// The library's patch version.
pub const RINGKV_VERSION_PATCH: u32 = 0;
/// The version of the C ABI this header describes: it changes only when a
/// function, type or number of an earlier version changes meaning or
/// goes away, never when functions or result codes are added. Compare it
/// with `ringkv_abi_version()`, the library's, to learn whether the
/// library linked at run time is the one the program was compiled for.
pub const RINGKV_ABI_VERSION: u32 = 1;

/// The decimal number `s` (a version component), at compile time.
const fn decimal(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

// The header needs literals; these fail to compile when Cargo.toml's
// version moves without them.
const _: () = assert!(RINGKV_VERSION_MAJOR == decimal(env!("CARGO_PKG_VERSION_MAJOR")));
const _: () = assert!(RINGKV_VERSION_MINOR == decimal(env!("CARGO_PKG_VERSION_MINOR")));
const _: () = assert!(RINGKV_VERSION_PATCH == decimal(env!("CARGO_PKG_VERSION_PATCH")));

/// The library's version, `"MAJOR.MINOR.PATCH"` (`"0.1.0"`), as a static
/// NUL-terminated string: never free it. It is the version of the library
/// linked at run time, which may differ from the header's
/// `RINGKV_VERSION_*` when a shared library was replaced.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn ringkv_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The ABI version of the library linked at run time
/// (`RINGKV_ABI_VERSION` when it was built). A program compiled against a
/// header whose `RINGKV_ABI_VERSION` differs must not use the library.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn ringkv_abi_version() -> u32 {
    RINGKV_ABI_VERSION
}

/// The longest timeout any call takes, in milliseconds (one hour). A
/// `timeout_ms` above it is `RINGKV_INVALID_ARGUMENT`; 0 means the
/// default.
pub const RINGKV_MAX_TIMEOUT_MS: u32 = 3600000;
/// A client's request timeout unless set
/// (`ringkv_client_options_set_timeout_ms`), in milliseconds: the bound
/// on each request a call through a client makes, retries and failovers
/// included. Above a bucket's default timeout (5 s), so that a node that
/// cannot reach a quorum says so first.
pub const RINGKV_DEFAULT_TIMEOUT_MS: u32 = 6000;
/// A client's connect timeout unless set, in milliseconds: how long
/// opening a connection (TCP, TLS and the hello) to one address may take.
pub const RINGKV_DEFAULT_CONNECT_TIMEOUT_MS: u32 = 2000;

const _: () = assert!(RINGKV_MAX_TIMEOUT_MS == store::MAX_TIMEOUT_MS);
const _: () =
    assert!(RINGKV_DEFAULT_TIMEOUT_MS as u128 == store::DEFAULT_REQUEST_TIMEOUT.as_millis());
const _: () = assert!(
    RINGKV_DEFAULT_CONNECT_TIMEOUT_MS as u128 == store::DEFAULT_CONNECT_TIMEOUT.as_millis()
);

/// Transport of an embedded cluster: the in-process network.
pub const RINGKV_TRANSPORT_MEMORY: u32 = 0;
/// Transport of an embedded cluster: TCP on 127.0.0.1, with a client port
/// per node (see `ringkv_cluster_client_addrs`).
pub const RINGKV_TRANSPORT_TCP: u32 = 1;

/// An embedded cluster: real ringkv nodes running in this process.
/// Created by `ringkv_cluster_new`, freed by `ringkv_cluster_free`.
pub struct ringkv_cluster {
    // Dropped first: the nodes stop before the log callback is
    // unregistered.
    inner: EmbeddedCluster,
    _log: Option<crate::log::Registration>,
}

impl ringkv_cluster {
    pub(crate) fn from_inner(inner: EmbeddedCluster) -> ringkv_cluster {
        ringkv_cluster { inner, _log: None }
    }

    /// As [`ringkv_cluster::from_inner`], keeping a log callback
    /// registered until the cluster is freed.
    pub(crate) fn with_log(
        inner: EmbeddedCluster,
        log: Option<crate::log::Registration>,
    ) -> ringkv_cluster {
        ringkv_cluster { inner, _log: log }
    }

    /// The cluster, for Rust code holding a handle (tests).
    pub fn embedded(&self) -> &EmbeddedCluster {
        &self.inner
    }
}

/// A connection to a running cluster. Created by `ringkv_client_connect`
/// (or `ringkv_client_new`, `ringkv_client_new_auth`), freed by
/// `ringkv_client_free`.
pub struct ringkv_client {
    inner: RemoteClient,
}

/// How `ringkv_client_connect` connects: credentials and TLS to the client
/// port, each unset until a `ringkv_client_options_set_*` call sets it.
/// Created by `ringkv_client_options_new`, freed by
/// `ringkv_client_options_free`. A client copies what it needs when it
/// connects: the options may be changed, reused or freed afterwards.
pub struct ringkv_client_options {
    inner: ConnectOptions,
}

impl ringkv_client_options {
    /// The settings, for Rust code holding a handle (tests).
    pub fn settings(&self) -> &ConnectOptions {
        &self.inner
    }
}

/// Bytes owned by the library (a value, a list of addresses). Read with
/// `ringkv_buf_data` and `ringkv_buf_len`; free with `ringkv_buf_free`.
pub struct ringkv_buf {
    /// The bytes, then one NUL that `len` does not count.
    bytes: Vec<u8>,
}

impl ringkv_buf {
    pub(crate) fn new(mut bytes: Vec<u8>) -> ringkv_buf {
        bytes.push(0);
        ringkv_buf { bytes }
    }

    fn content(&self) -> &[u8] {
        &self.bytes[..self.bytes.len().saturating_sub(1)]
    }
}

/// A set's members, in byte order, owned by the library. Read with
/// `ringkv_set_len` and `ringkv_set_member`; free with `ringkv_set_free`.
pub struct ringkv_set {
    members: Vec<Vec<u8>>,
}

/// Runs `f` inside the panic boundary and turns its outcome into a result,
/// leaving the message for `ringkv_last_error`.
pub(crate) fn boundary(op: &str, f: impl FnOnce() -> Outcome<()>) -> ringkv_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error("");
            ringkv_result::RINGKV_OK
        }
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            set_last_error(&format!("{op}: the library panicked: {why}"));
            ringkv_result::RINGKV_PANIC
        }
    }
}

/// The panic boundary of a function with no result to report through:
/// a panic gives `default` (and its message on stderr, from the hook).
pub(crate) fn quiet<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

pub(crate) fn null(op: &str, what: &str) -> Failure {
    Failure::new(
        ringkv_result::RINGKV_NULL_ARGUMENT,
        format!("{op}: {what} is NULL"),
    )
}

/// The object behind a handle.
///
/// # Safety
/// `ptr` is NULL or a live handle from this library.
pub(crate) unsafe fn handle<'a, T>(op: &str, what: &str, ptr: *const T) -> Outcome<&'a T> {
    // SAFETY: by the contract, a non-NULL ptr is a live, aligned T.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(op, what))
}

/// Checks that an output pointer is not NULL, before any work is done.
///
/// # Safety
/// `ptr` is NULL or valid for a write of a `T`.
pub(crate) unsafe fn out<'a, T>(op: &str, what: &str, ptr: *mut T) -> Outcome<&'a mut T> {
    // SAFETY: by the contract, a non-NULL ptr is writable and aligned. It
    // may be uninitialised, so it is only ever assigned, never read.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(op, what))
}

/// A byte argument: empty when `len` is 0 (then `ptr` may be NULL).
///
/// # Safety
/// When `len > 0`, `ptr` is NULL or valid for reads of `len` bytes.
pub(crate) unsafe fn bytes<'a>(
    op: &str,
    what: &str,
    ptr: *const u8,
    len: usize,
) -> Outcome<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null(op, what));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!(
            "{op}: {what}_len {len} is too large"
        )));
    }
    // SAFETY: by the contract, ptr is valid for `len` bytes, and len fits
    // in an isize.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A NUL-terminated UTF-8 argument.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
pub(crate) unsafe fn text<'a>(op: &str, what: &str, ptr: *const c_char) -> Outcome<&'a str> {
    if ptr.is_null() {
        return Err(null(op, what));
    }
    // SAFETY: by the contract, ptr is NUL-terminated.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Failure::invalid(format!("{op}: {what} is not UTF-8")))
}

// ---- embedded clusters ----

/// Starts an embedded cluster of `nodes` nodes (1 to 16) over `transport`
/// (`RINGKV_TRANSPORT_MEMORY` or `RINGKV_TRANSPORT_TCP`), waits until they
/// form one ring (well under a second on the memory transport; fails with
/// `RINGKV_UNAVAILABLE` after 30 s), and writes the handle to `*out`.
/// Keys get min(3, nodes) replicas; buckets start with policy SIBLINGS.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (out), `RINGKV_INVALID_ARGUMENT` (nodes,
/// transport).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_new(
    nodes: u32,
    transport: u32,
    out: *mut *mut ringkv_cluster,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_new";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        let kind = store::transport(OP, transport)?;
        let inner = EmbeddedCluster::start(OP, nodes, kind)?;
        *out = Box::into_raw(Box::new(ringkv_cluster::from_inner(inner)));
        Ok(())
    })
}

/// Shuts down every node of `cluster` (each flushes its storage) and frees
/// it. NULL does nothing.
///
/// Thread safety: no other call may use `cluster` during or after this
/// one.
///
/// # Safety
/// `cluster` must be NULL or a handle from `ringkv_cluster_new` not yet
/// freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_free(cluster: *mut ringkv_cluster) {
    if cluster.is_null() {
        return;
    }
    // A panic while shutting down cannot be reported; it must not unwind
    // into C.
    // SAFETY: by the contract, cluster came from Box::into_raw and is
    // freed once.
    quiet((), || drop(unsafe { Box::from_raw(cluster) }));
}

/// Writes the client addresses of the cluster's nodes, comma-separated
/// (`HOST:PORT,HOST:PORT,...`), node 1 first, to `*out` as a buffer that
/// is also NUL-terminated, ready for `ringkv_client_new`. Empty on the
/// memory transport.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same cluster except `ringkv_cluster_free`.
///
/// # Safety
/// `cluster` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_client_addrs(
    cluster: *const ringkv_cluster,
    out: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_client_addrs";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(OP, "cluster", cluster) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        *out = Box::into_raw(Box::new(ringkv_buf::new(
            c.inner.client_addrs().into_bytes(),
        )));
        Ok(())
    })
}

/// # Safety
/// `ptr` is NULL or writable.
pub(crate) unsafe fn out_ptr<'a, T>(
    op: &str,
    what: &str,
    ptr: *mut *mut T,
) -> Outcome<&'a mut *mut T> {
    // SAFETY: forwarded contract.
    unsafe { out(op, what, ptr) }
}

// ---- client connections ----

/// Creates connection options with nothing set (anonymous, plain TCP:
/// what `ringkv_client_new` does) and writes the handle to `*out`. Set
/// what is needed with the `ringkv_client_options_set_*` functions, pass
/// the handle to `ringkv_client_connect`, and free it with
/// `ringkv_client_options_free`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (out).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_new(
    out: *mut *mut ringkv_client_options,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_new";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        *out = Box::into_raw(Box::new(ringkv_client_options {
            inner: ConnectOptions::new(),
        }));
        Ok(())
    })
}

/// Frees connection options. NULL does nothing. Clients connected with
/// them are not affected.
///
/// Thread safety: no other call may use `options` during or after this
/// one.
///
/// # Safety
/// `options` must be NULL or a handle from `ringkv_client_options_new` not
/// yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_free(options: *mut ringkv_client_options) {
    if options.is_null() {
        return;
    }
    // SAFETY: by the contract, options came from Box::into_raw and is
    // freed once.
    quiet((), || drop(unsafe { Box::from_raw(options) }));
}

/// The options behind a handle, for a setter.
///
/// # Safety
/// `ptr` is NULL or a live handle that no other call uses meanwhile.
unsafe fn options_mut<'a>(
    op: &str,
    ptr: *mut ringkv_client_options,
) -> Outcome<&'a mut ConnectOptions> {
    // SAFETY: by the contract, a non-NULL ptr is live, aligned, and not
    // used by any other call while this one runs.
    unsafe { ptr.as_mut() }
        .map(|o| &mut o.inner)
        .ok_or_else(|| null(op, "options"))
}

/// Authenticates as `user` with `password` (both NUL-terminated UTF-8,
/// copied) on every connection the client opens: what a `ringkv-node`
/// requires unless it was started with `--no-client-auth`. Replaces
/// credentials set before.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options, user, password),
/// `RINGKV_INVALID_ARGUMENT` (not UTF-8). On an error the options are
/// unchanged.
///
/// Thread safety: may be called from any thread, but not concurrently with
/// any other call on the same options.
///
/// # Safety
/// `options` NULL or live; `user` and `password` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_set_credentials(
    options: *mut ringkv_client_options,
    user: *const c_char,
    password: *const c_char,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_set_credentials";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, user, password) = unsafe {
            (
                options_mut(OP, options)?,
                text(OP, "user", user)?,
                text(OP, "password", password)?,
            )
        };
        o.set_credentials(user, password);
        Ok(())
    })
}

/// Speaks TLS (1.3) to the client port, trusting the CA certificates in
/// `pem`, `pem_len` bytes of PEM text (one or more `CERTIFICATE` blocks,
/// no NUL needed; copied), and no others: a node whose certificate does
/// not chain to one of them is refused with `RINGKV_TLS`. For the nodes of
/// a cluster made with `ringkv-node certs --client-port NAME`, this is
/// the cluster's `ca.pem`. Replaces a CA set before.
///
/// The name checked in the node's certificate is the host of the address
/// dialed, or the one set with `ringkv_client_options_set_server_name`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options; pem with a non-zero length),
/// `RINGKV_INVALID_ARGUMENT` (no certificate in `pem`, a block that does
/// not parse, not UTF-8). On an error the options are unchanged.
///
/// Thread safety: as `ringkv_client_options_set_credentials`.
///
/// # Safety
/// `options` NULL or live; `pem` NULL or valid for `pem_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_set_tls_ca_pem(
    options: *mut ringkv_client_options,
    pem: *const u8,
    pem_len: usize,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_set_tls_ca_pem";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, pem) = unsafe { (options_mut(OP, options)?, bytes(OP, "pem", pem, pem_len)?) };
        o.set_tls_ca_pem(OP, pem)
    })
}

/// As `ringkv_client_options_set_tls_ca_pem`, reading the PEM from the
/// file at `path` (NUL-terminated UTF-8; at most
/// `RINGKV_MAX_CA_FILE_BYTES`), now: later
/// changes to the file do not matter.
///
/// Errors: as `ringkv_client_options_set_tls_ca_pem`; also
/// `RINGKV_NULL_ARGUMENT` (path) and `RINGKV_INVALID_ARGUMENT` (a file that
/// cannot be read, with the system's reason).
///
/// Thread safety: as `ringkv_client_options_set_credentials`.
///
/// # Safety
/// `options` NULL or live; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_set_tls_ca_file(
    options: *mut ringkv_client_options,
    path: *const c_char,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_set_tls_ca_file";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, path) = unsafe { (options_mut(OP, options)?, text(OP, "path", path)?) };
        o.set_tls_ca_file(OP, path)
    })
}

/// Expects the node's certificate to name `name` (a DNS name or an IP
/// address, NUL-terminated; copied) instead of the host of the address
/// dialed: for example when dialing a node by IP address whose
/// certificate names its DNS name. Needs a CA too: connecting with a
/// server name and no CA is `RINGKV_INVALID_ARGUMENT`. Replaces a name set
/// before.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options, name), `RINGKV_INVALID_ARGUMENT`
/// (empty, not UTF-8; a name that is neither a DNS name nor an IP
/// address is refused by `ringkv_client_connect`). On an error the
/// options are unchanged.
///
/// Thread safety: as `ringkv_client_options_set_credentials`.
///
/// # Safety
/// `options` NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_set_server_name(
    options: *mut ringkv_client_options,
    name: *const c_char,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_set_server_name";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (o, name) = unsafe { (options_mut(OP, options)?, text(OP, "name", name)?) };
        o.set_server_name(OP, name)
    })
}

/// Sets the client's timeouts, in milliseconds; 0 keeps the default of
/// each. `connect_ms` bounds opening a connection (TCP, TLS and the
/// hello) to one address (default `RINGKV_DEFAULT_CONNECT_TIMEOUT_MS`,
/// 2 s): `ringkv_client_connect` tries each address in turn, so it
/// returns within `connect_ms` times the number of addresses.
/// `request_ms` bounds each request a call makes, retries and failovers
/// included (default `RINGKV_DEFAULT_TIMEOUT_MS`, 6 s), whatever happens
/// to the node: a call whose node dies or goes silent returns within it
/// (plus a few milliseconds), with `RINGKV_TIMEOUT` for a read and
/// `RINGKV_OUTCOME_UNKNOWN` for a write that was sent, unless it failed
/// over to another node in time. `ringkv_*_put` and `ringkv_*_delete`
/// make two requests (a read, then the write), the first in a second to
/// touch a bucket three; the `_ctx` and `_object` calls and each scan
/// page make one, and take a `timeout_ms` of their own that replaces
/// `request_ms` for that call.
///
/// Both at most `RINGKV_MAX_TIMEOUT_MS`. A request timeout below the
/// bucket's timeout (5 s unless set) cuts short a node that would have
/// answered `RINGKV_TIMEOUT` or `RINGKV_UNAVAILABLE` itself, with
/// details.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (options), `RINGKV_INVALID_ARGUMENT`
/// (above `RINGKV_MAX_TIMEOUT_MS`). On an error the options are
/// unchanged.
///
/// Thread safety: as `ringkv_client_options_set_credentials`.
///
/// # Safety
/// `options` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_options_set_timeout_ms(
    options: *mut ringkv_client_options,
    connect_ms: u32,
    request_ms: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_options_set_timeout_ms";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let o = unsafe { options_mut(OP, options) }?;
        o.set_timeouts(OP, connect_ms, request_ms)
    })
}

/// Connects to `addrs` as `options` say and writes the handle to `out`.
fn connect_to(
    op: &'static str,
    addrs: &str,
    options: &ConnectOptions,
    out: &mut *mut ringkv_client,
) -> Outcome<()> {
    let inner = RemoteClient::connect_with(op, addrs, options)?;
    *out = Box::into_raw(Box::new(ringkv_client { inner }));
    Ok(())
}

/// Connects to a running cluster as `options` say (NULL: the defaults,
/// anonymous over plain TCP, as `ringkv_client_new`): `addrs` is one or
/// more client addresses, comma-separated, NUL-terminated
/// (`"db1.example.com:7401,db2.example.com:7401"`); the first that answers
/// is used, and later requests fail over to the others, each with the same
/// options. Writes the handle to `*out`.
///
/// With a CA set, every connection speaks TLS and checks the node's
/// certificate against the CA and the server name (the host of each
/// address, unless one was set).
///
/// Errors: `RINGKV_NULL_ARGUMENT` (addrs, out), `RINGKV_INVALID_ARGUMENT`
/// (no address, an address that is not `HOST:PORT` or `[V6]:PORT`, not
/// UTF-8; a server name without a CA, or one that is not a DNS name or an
/// IP address), `RINGKV_CONNECTION` (no address answered
/// within the connect timeout each (2 s unless set), or the node closed the connection; a node whose
/// client port speaks TLS does so to a client without a CA),
/// `RINGKV_TLS` (the node's certificate is not from the CA or does not
/// name the server name; or the port does not speak TLS), `RINGKV_DENIED`
/// (unknown user or wrong password).
///
/// Thread safety: may be called from any thread; the same options may be
/// used by concurrent connects, but not changed or freed meanwhile.
///
/// # Safety
/// `addrs` NULL or NUL-terminated; `options` NULL or live; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_connect(
    addrs: *const c_char,
    options: *const ringkv_client_options,
    out: *mut *mut ringkv_client,
) -> ringkv_result {
    const OP: &str = "ringkv_client_connect";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let addrs = unsafe { text(OP, "addrs", addrs) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        let defaults = ConnectOptions::new();
        // SAFETY: by the contract, a non-NULL options is live, and not
        // changed while this call reads it.
        let options = unsafe { options.as_ref() }.map_or(&defaults, |o| &o.inner);
        connect_to(OP, addrs, options, out)
    })
}

/// Connects to a running cluster, anonymously and over plain TCP: as
/// `ringkv_client_connect(addrs, NULL, out)`. `addrs` is one or more
/// client addresses, comma-separated, NUL-terminated
/// (`"127.0.0.1:7101,127.0.0.1:7102"`); the first that answers is used,
/// and later requests fail over to the others. Writes the handle to
/// `*out`.
///
/// Errors: `RINGKV_NULL_ARGUMENT` (addrs, out), `RINGKV_INVALID_ARGUMENT`
/// (no address, an address that is not `HOST:PORT` or `[V6]:PORT`, not
/// UTF-8: found before any dialing), `RINGKV_CONNECTION` (no address
/// answered within 2 s each, the default connect timeout).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `addrs` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_new(
    addrs: *const c_char,
    out: *mut *mut ringkv_client,
) -> ringkv_result {
    const OP: &str = "ringkv_client_new";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let addrs = unsafe { text(OP, "addrs", addrs) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        connect_to(OP, addrs, &ConnectOptions::new(), out)
    })
}

/// As `ringkv_client_new`, authenticating as `user` with `password`
/// (both NUL-terminated UTF-8) on every connection it opens: what a
/// `ringkv-node` requires unless it was started with `--no-client-auth`.
/// Later requests beyond the user's role get `RINGKV_DENIED`. Plain TCP;
/// for TLS use `ringkv_client_connect` with
/// `ringkv_client_options_set_credentials`.
///
/// Errors: those of `ringkv_client_new`; `RINGKV_NULL_ARGUMENT` (user,
/// password); `RINGKV_DENIED` (unknown user or wrong password).
///
/// Thread safety: may be called from any thread.
///
/// # Safety
/// `addrs`, `user` and `password` NULL or NUL-terminated; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_new_auth(
    addrs: *const c_char,
    user: *const c_char,
    password: *const c_char,
    out: *mut *mut ringkv_client,
) -> ringkv_result {
    const OP: &str = "ringkv_client_new_auth";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let addrs = unsafe { text(OP, "addrs", addrs) }?;
        // SAFETY: forwarded contract.
        let user = unsafe { text(OP, "user", user) }?;
        // SAFETY: forwarded contract.
        let password = unsafe { text(OP, "password", password) }?;
        // SAFETY: forwarded contract.
        let out = unsafe { out_ptr(OP, "out", out) }?;
        let mut options = ConnectOptions::new();
        options.set_credentials(user, password);
        connect_to(OP, addrs, &options, out)
    })
}

/// Closes the client's connection. Every later request on it fails with
/// `RINGKV_CLOSED`; closing a closed client is `RINGKV_OK`. The handle must
/// still be freed with `ringkv_client_free`.
///
/// Thread safety: may be called from any thread, concurrently with
/// requests on the same client (they finish or fail with `RINGKV_CLOSED`),
/// but not with `ringkv_client_free`.
///
/// # Safety
/// `client` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_close(client: *const ringkv_client) -> ringkv_result {
    const OP: &str = "ringkv_client_close";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let c = unsafe { handle(OP, "client", client) }?;
        c.inner.close();
        Ok(())
    })
}

/// Closes (if open) and frees the client. NULL does nothing.
///
/// Thread safety: no other call may use `client` during or after this one.
///
/// # Safety
/// `client` must be NULL or a handle from `ringkv_client_new` not yet
/// freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_free(client: *mut ringkv_client) {
    if client.is_null() {
        return;
    }
    // SAFETY: by the contract, client came from Box::into_raw and is
    // freed once.
    quiet((), || drop(unsafe { Box::from_raw(client) }));
}

// ---- data operations, shared by clusters and clients ----

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn put_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    value: (*const u8, usize),
    w: u32,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract (three times).
        let (b, k, v) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                bytes(op, "value", value.0, value.1)?,
            )
        };
        store::put(s, b, k, v, w).map_err(|f| prefixed(op, f))
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn get_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    r: u32,
    out_value: *mut *mut ringkv_buf,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                out_ptr(op, "out_value", out_value)?,
            )
        };
        let value = store::get(s, b, k, r).map_err(|f| prefixed(op, f))?;
        *out = Box::into_raw(Box::new(ringkv_buf::new(value)));
        Ok(())
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn delete_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    w: u32,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
            )
        };
        store::delete(s, b, k, w).map_err(|f| prefixed(op, f))
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn counter_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    add: Option<i64>,
    level: u32,
    out_value: *mut i64,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                out(op, "out_value", out_value)?,
            )
        };
        let value = match add {
            Some(by) => store::counter_add(s, b, k, by, level),
            None => store::counter_get(s, b, k, level),
        }
        .map_err(|f| prefixed(op, f))?;
        *out = value;
        Ok(())
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn set_change_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    member: (*const u8, usize),
    add: bool,
    w: u32,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, m) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                bytes(op, "member", member.0, member.1)?,
            )
        };
        if add {
            store::set_add(s, b, k, m, w)
        } else {
            store::set_remove(s, b, k, m, w)
        }
        .map_err(|f| prefixed(op, f))
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn set_members_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    key: (*const u8, usize),
    r: u32,
    out_set: *mut *mut ringkv_set,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let (b, k, out) = unsafe {
            (
                bytes(op, "bucket", bucket.0, bucket.1)?,
                bytes(op, "key", key.0, key.1)?,
                out_ptr(op, "out_set", out_set)?,
            )
        };
        let members = store::set_members(s, b, k, r).map_err(|f| prefixed(op, f))?;
        *out = Box::into_raw(Box::new(ringkv_set { members }));
        Ok(())
    })
}

/// # Safety
/// Every pointer is NULL or valid as its C declaration says.
unsafe fn policy_on(
    op: &str,
    s: Outcome<&dyn Store>,
    bucket: (*const u8, usize),
    policy: u32,
) -> ringkv_result {
    boundary(op, || {
        let s = s?;
        // SAFETY: forwarded contract.
        let b = unsafe { bytes(op, "bucket", bucket.0, bucket.1)? };
        store::set_bucket_policy(s, b, policy).map_err(|f| prefixed(op, f))
    })
}

/// Names the C function in a message from the shared layer, which names
/// only the operation (`put: ...` becomes `ringkv_client_put: ...`).
pub(crate) fn prefixed(c_name: &str, f: Failure) -> Failure {
    let op = c_name
        .strip_prefix("ringkv_cluster_")
        .or_else(|| c_name.strip_prefix("ringkv_client_"))
        .unwrap_or(c_name);
    let message = match f
        .message
        .strip_prefix(op)
        .and_then(|m| m.strip_prefix(": "))
    {
        Some(rest) => format!("{c_name}: {rest}"),
        None => format!("{c_name}: {}", f.message),
    };
    Failure::new(f.code, message)
}

/// # Safety
/// `c` NULL or live.
pub(crate) unsafe fn cluster_store<'a>(
    op: &str,
    c: *const ringkv_cluster,
) -> Outcome<&'a dyn Store> {
    // SAFETY: forwarded contract.
    unsafe { handle(op, "cluster", c) }.map(|c| &c.inner as &dyn Store)
}

/// # Safety
/// `c` NULL or live.
pub(crate) unsafe fn client_store<'a>(op: &str, c: *const ringkv_client) -> Outcome<&'a dyn Store> {
    // SAFETY: forwarded contract.
    unsafe { handle(op, "client", c) }.map(|c| &c.inner as &dyn Store)
}

/// Writes `value` (may be empty) under `bucket`/`key`, acknowledged by `w`
/// replicas (`RINGKV_CONSISTENCY_*`), replacing the value a read at the
/// same level sees: the put first reads the key's causal context (at `w`
/// as a read level; `DEFAULT` is the bucket's `r`) and writes with it, so
/// under the default policy, SIBLINGS, a put overwrites what it read, and
/// only a value it did not read (written concurrently) stays beside it as
/// a sibling. In a bucket known to be LWW the read is skipped (it would
/// change nothing there). A failure of that read fails the put, which then
/// wrote nothing.
///
/// Errors: `RINGKV_NULL_ARGUMENT`, `RINGKV_INVALID_ARGUMENT` (empty bucket
/// or key, unknown `w`, a `w` above the bucket's replicas),
/// `RINGKV_SIBLINGS` (the key holds the most siblings a node keeps, 100
/// by default, and values written concurrently since the read would add
/// one more: read it with `ringkv_cluster_get_object` and write with its
/// context), `RINGKV_UNAVAILABLE`, `RINGKV_TIMEOUT`, `RINGKV_INTERNAL`,
/// `RINGKV_PANIC`.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same cluster except `ringkv_cluster_free`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `cluster` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_put(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_put";
    // SAFETY: forwarded contract.
    unsafe {
        put_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            (value, value_len),
            w,
        )
    }
}

/// Reads `bucket`/`key` from `r` replicas and writes a new buffer holding
/// the value to `*out_value` (free it with `ringkv_buf_free`).
///
/// Errors: as `ringkv_cluster_put`, and `RINGKV_NOT_FOUND` (no value),
/// `RINGKV_SIBLINGS` (concurrent values: read them all, with the context
/// to resolve them, with `ringkv_cluster_get_object`).
///
/// Thread safety: as `ringkv_cluster_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_get(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_value: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_get";
    // SAFETY: forwarded contract.
    unsafe {
        get_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            r,
            out_value,
        )
    }
}

/// Deletes `bucket`/`key` (writes a tombstone), acknowledged by `w`
/// replicas, replacing what a read at the same level sees, as
/// `ringkv_cluster_put` does: a get then answers `RINGKV_NOT_FOUND` unless
/// a value was written concurrently. Deleting a missing key is `RINGKV_OK`.
///
/// Errors and thread safety: as `ringkv_cluster_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_delete(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_delete";
    // SAFETY: forwarded contract.
    unsafe {
        delete_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            w,
        )
    }
}

/// Adds `by` (negative subtracts, on a PNCOUNTER bucket) to the counter
/// `bucket`/`key` and writes its new value, as the replica that
/// coordinated the add holds it, to `*out_value`: an add made through
/// another node a moment earlier may not be in it yet, while
/// `ringkv_cluster_counter_get` at QUORUM after adds at QUORUM has them all.
///
/// Errors: as `ringkv_cluster_put`; `RINGKV_INVALID_ARGUMENT` also when the
/// bucket's policy is not a counter.
///
/// Thread safety: as `ringkv_cluster_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_counter_add(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    by: i64,
    w: u32,
    out_value: *mut i64,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_counter_add";
    // SAFETY: forwarded contract.
    unsafe {
        counter_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            Some(by),
            w,
            out_value,
        )
    }
}

/// Reads the counter `bucket`/`key` (0 if never added to) into
/// `*out_value`.
///
/// Errors and thread safety: as `ringkv_cluster_counter_add`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_counter_get(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_value: *mut i64,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_counter_get";
    // SAFETY: forwarded contract.
    unsafe {
        counter_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            None,
            r,
            out_value,
        )
    }
}

/// Adds `member` (may be empty) to the set `bucket`/`key` (policy ORSET,
/// GSET or TWOPSET).
///
/// Errors and thread safety: as `ringkv_cluster_put`;
/// `RINGKV_INVALID_ARGUMENT` also when the bucket's policy is not a set.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_set_add(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    member: *const u8,
    member_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_set_add";
    // SAFETY: forwarded contract.
    unsafe {
        set_change_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            (member, member_len),
            true,
            w,
        )
    }
}

/// Removes `member` from the set `bucket`/`key` (policy ORSET or TWOPSET).
///
/// Errors and thread safety: as `ringkv_cluster_set_add`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_set_remove(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    member: *const u8,
    member_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_set_remove";
    // SAFETY: forwarded contract.
    unsafe {
        set_change_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            (member, member_len),
            false,
            w,
        )
    }
}

/// Reads the set `bucket`/`key` and writes its members (in byte order;
/// none if never added to) to `*out_set` (free it with `ringkv_set_free`).
///
/// Errors and thread safety: as `ringkv_cluster_set_add`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_set` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_set_members(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_set: *mut *mut ringkv_set,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_set_members";
    // SAFETY: forwarded contract.
    unsafe {
        set_members_on(
            OP,
            cluster_store(OP, cluster),
            (bucket, bucket_len),
            (key, key_len),
            r,
            out_set,
        )
    }
}

/// Sets the conflict policy of `bucket` (`RINGKV_POLICY_*`), keeping its
/// other properties, and waits (up to 10 s, else `RINGKV_TIMEOUT`) until
/// every node applies it. Set it before storing data in the bucket.
///
/// Errors: `RINGKV_NULL_ARGUMENT`, `RINGKV_INVALID_ARGUMENT` (empty bucket,
/// unknown policy).
///
/// Thread safety: as `ringkv_cluster_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_cluster_set_bucket_policy(
    cluster: *const ringkv_cluster,
    bucket: *const u8,
    bucket_len: usize,
    policy: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_cluster_set_bucket_policy";
    // SAFETY: forwarded contract.
    unsafe { policy_on(OP, cluster_store(OP, cluster), (bucket, bucket_len), policy) }
}

/// As `ringkv_cluster_put`, through a client connection. Also fails with
/// `RINGKV_CLOSED` after `ringkv_client_close`, `RINGKV_CONNECTION` when no
/// node can be reached, and `RINGKV_OUTCOME_UNKNOWN` when the write was
/// sent but no answer came.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same client except `ringkv_client_free`; requests are
/// pipelined over the one connection.
///
/// # Safety
/// Each pointer NULL or valid for its length; `client` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_put(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_put";
    // SAFETY: forwarded contract.
    unsafe {
        put_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            (value, value_len),
            w,
        )
    }
}

/// As `ringkv_cluster_get`, through a client connection (and the errors of
/// `ringkv_client_put`).
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_get(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_value: *mut *mut ringkv_buf,
) -> ringkv_result {
    const OP: &str = "ringkv_client_get";
    // SAFETY: forwarded contract.
    unsafe {
        get_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            r,
            out_value,
        )
    }
}

/// As `ringkv_cluster_delete`, through a client connection (and the errors
/// of `ringkv_client_put`).
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_delete(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_delete";
    // SAFETY: forwarded contract.
    unsafe {
        delete_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            w,
        )
    }
}

/// As `ringkv_cluster_counter_add`, through a client connection (and the
/// errors of `ringkv_client_put`). A counter add is never retried once
/// sent: without an answer it is `RINGKV_OUTCOME_UNKNOWN`.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_counter_add(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    by: i64,
    w: u32,
    out_value: *mut i64,
) -> ringkv_result {
    const OP: &str = "ringkv_client_counter_add";
    // SAFETY: forwarded contract.
    unsafe {
        counter_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            Some(by),
            w,
            out_value,
        )
    }
}

/// As `ringkv_cluster_counter_get`, through a client connection.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_counter_get(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_value: *mut i64,
) -> ringkv_result {
    const OP: &str = "ringkv_client_counter_get";
    // SAFETY: forwarded contract.
    unsafe {
        counter_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            None,
            r,
            out_value,
        )
    }
}

/// As `ringkv_cluster_set_add`, through a client connection.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_set_add(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    member: *const u8,
    member_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_set_add";
    // SAFETY: forwarded contract.
    unsafe {
        set_change_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            (member, member_len),
            true,
            w,
        )
    }
}

/// As `ringkv_cluster_set_remove`, through a client connection.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_set_remove(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    member: *const u8,
    member_len: usize,
    w: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_set_remove";
    // SAFETY: forwarded contract.
    unsafe {
        set_change_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            (member, member_len),
            false,
            w,
        )
    }
}

/// As `ringkv_cluster_set_members`, through a client connection.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length; `out_set` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_set_members(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    key: *const u8,
    key_len: usize,
    r: u32,
    out_set: *mut *mut ringkv_set,
) -> ringkv_result {
    const OP: &str = "ringkv_client_set_members";
    // SAFETY: forwarded contract.
    unsafe {
        set_members_on(
            OP,
            client_store(OP, client),
            (bucket, bucket_len),
            (key, key_len),
            r,
            out_set,
        )
    }
}

/// Sets the conflict policy of `bucket` through the connected node, which
/// applies it to the next request at once; the other nodes learn it by
/// gossip within a few gossip rounds.
///
/// Errors: as `ringkv_cluster_set_bucket_policy`, and those of
/// `ringkv_client_put`.
///
/// Thread safety: as `ringkv_client_put`.
///
/// # Safety
/// Each pointer NULL or valid for its length.
#[no_mangle]
pub unsafe extern "C" fn ringkv_client_set_bucket_policy(
    client: *const ringkv_client,
    bucket: *const u8,
    bucket_len: usize,
    policy: u32,
) -> ringkv_result {
    const OP: &str = "ringkv_client_set_bucket_policy";
    // SAFETY: forwarded contract.
    unsafe { policy_on(OP, client_store(OP, client), (bucket, bucket_len), policy) }
}

// ---- buffers and sets ----

/// The first byte of `buf`'s content, followed by `ringkv_buf_len(buf)`
/// bytes and then a NUL (so text can be used as a C string). Valid until
/// `ringkv_buf_free(buf)`. NULL when `buf` is NULL.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same buffer except `ringkv_buf_free`.
///
/// # Safety
/// `buf` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_buf_data(buf: *const ringkv_buf) -> *const u8 {
    // SAFETY: by the contract, buf is NULL or live.
    quiet(std::ptr::null(), || match unsafe { buf.as_ref() } {
        Some(b) => b.bytes.as_ptr(),
        None => std::ptr::null(),
    })
}

/// The length of `buf`'s content in bytes, without the trailing NUL; 0 when
/// `buf` is NULL.
///
/// Thread safety: as `ringkv_buf_data`.
///
/// # Safety
/// `buf` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_buf_len(buf: *const ringkv_buf) -> usize {
    // SAFETY: by the contract, buf is NULL or live.
    quiet(0, || {
        unsafe { buf.as_ref() }.map_or(0, |b| b.content().len())
    })
}

/// Frees a buffer the library returned. NULL does nothing.
///
/// Thread safety: no other call may use `buf` during or after this one.
///
/// # Safety
/// `buf` NULL or a buffer from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_buf_free(buf: *mut ringkv_buf) {
    if buf.is_null() {
        return;
    }
    // SAFETY: by the contract, buf came from Box::into_raw and is freed
    // once.
    quiet((), || drop(unsafe { Box::from_raw(buf) }));
}

/// The number of members of `set`; 0 when `set` is NULL.
///
/// Thread safety: may be called from any thread, concurrently with any
/// call on the same set except `ringkv_set_free`.
///
/// # Safety
/// `set` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn ringkv_set_len(set: *const ringkv_set) -> usize {
    // SAFETY: by the contract, set is NULL or live.
    quiet(0, || unsafe { set.as_ref() }.map_or(0, |s| s.members.len()))
}

/// Writes member `index` of `set` (0-based, in byte order) to `*out_data`
/// and `*out_len`; the bytes stay valid until `ringkv_set_free(set)`. An
/// empty member has length 0 and a non-NULL pointer that must not be read.
///
/// Errors: `RINGKV_NULL_ARGUMENT`, `RINGKV_INVALID_ARGUMENT` (index not
/// below `ringkv_set_len(set)`).
///
/// Thread safety: as `ringkv_set_len`.
///
/// # Safety
/// `set` NULL or live; `out_data` and `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ringkv_set_member(
    set: *const ringkv_set,
    index: usize,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> ringkv_result {
    const OP: &str = "ringkv_set_member";
    boundary(OP, || {
        // SAFETY: forwarded contract.
        let (s, data, len) = unsafe {
            (
                handle(OP, "set", set)?,
                out(OP, "out_data", out_data)?,
                out(OP, "out_len", out_len)?,
            )
        };
        let member = s.members.get(index).ok_or_else(|| {
            Failure::invalid(format!(
                "{OP}: index {index} is not below the set's {} members",
                s.members.len()
            ))
        })?;
        *data = member.as_ptr();
        *len = member.len();
        Ok(())
    })
}

/// Frees a set the library returned. NULL does nothing.
///
/// Thread safety: no other call may use `set` during or after this one.
///
/// # Safety
/// `set` NULL or a set from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn ringkv_set_free(set: *mut ringkv_set) {
    if set.is_null() {
        return;
    }
    // SAFETY: by the contract, set came from Box::into_raw and is freed
    // once.
    quiet((), || drop(unsafe { Box::from_raw(set) }));
}
