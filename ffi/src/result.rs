//! The one result enum of the C ABI, its names, and each thread's last
//! error message.
//!
//! Guarantee: the numbers of [`ringkv_result`] never change (new codes get
//! new numbers), and every function that returns one also leaves a message
//! for [`ringkv_last_error`] on the calling thread: the failure's text, or
//! nothing after a success.
//!
//! Not here: how failures are classified (`store.rs`).

use std::cell::RefCell;
use std::ffi::c_char;

/// What a C ABI call did. The numbers are stable: they are part of the ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ringkv_result {
    /// Success; every output was written.
    RINGKV_OK = 0,
    /// A pointer that must not be NULL was NULL.
    RINGKV_NULL_ARGUMENT = 1,
    /// An argument is out of range: an unknown consistency level, policy or
    /// transport, an empty bucket or key, text that is not UTF-8, a bad
    /// address, or an op the bucket's policy does not allow.
    RINGKV_INVALID_ARGUMENT = 2,
    /// The key has no value (never written, or deleted).
    RINGKV_NOT_FOUND = 3,
    /// The key has several concurrent values (siblings).
    RINGKV_SIBLINGS = 4,
    /// The caller's buffer is too small; the size needed was written.
    RINGKV_BUFFER_TOO_SMALL = 5,
    /// The client was closed with `ringkv_client_close`.
    RINGKV_CLOSED = 6,
    /// Too few replicas were reachable, or the node is shutting down or
    /// overloaded: retrying later may succeed.
    RINGKV_UNAVAILABLE = 7,
    /// The request timed out (a read: nothing happened; a write: see
    /// `RINGKV_OUTCOME_UNKNOWN`).
    RINGKV_TIMEOUT = 8,
    /// A write was sent and no answer came: it may or may not have been
    /// applied. Read the key to learn which.
    RINGKV_OUTCOME_UNKNOWN = 9,
    /// No connection could be opened to any address, or it broke.
    RINGKV_CONNECTION = 10,
    /// A node answered with an error not covered above.
    RINGKV_REMOTE = 11,
    /// A failure inside the library (its runtime stopped, a reply of the
    /// wrong kind, a storage failure).
    RINGKV_INTERNAL = 12,
    /// The library panicked; the panic was caught at the boundary. The
    /// handle may be in an unexpected state: free it.
    RINGKV_PANIC = 13,
    /// The node refused: the connection has no valid credentials (none
    /// sent, or a wrong user or password), or the user's role may not run
    /// the op. Not retryable; nothing was applied.
    RINGKV_DENIED = 14,
    /// The TLS handshake with the node failed on a certificate or protocol
    /// error: its certificate does not chain to the CA the client trusts,
    /// or does not name the server name expected, or the port does not
    /// speak TLS. Not retryable: fix the CA, the name or the address
    /// (`ringkv_client_options_set_tls_ca_pem`,
    /// `ringkv_client_options_set_server_name`). A client without a CA
    /// that dials a port speaking TLS gets `RINGKV_CONNECTION` (the node
    /// closes the connection; the client cannot tell why).
    RINGKV_TLS = 15,
}

impl ringkv_result {
    /// The constant's name, as in the header.
    pub fn name(self) -> &'static str {
        NAMES[self as usize].trim_end_matches('\0')
    }

    /// Every code, in number order.
    pub const ALL: [ringkv_result; 16] = [
        ringkv_result::RINGKV_OK,
        ringkv_result::RINGKV_NULL_ARGUMENT,
        ringkv_result::RINGKV_INVALID_ARGUMENT,
        ringkv_result::RINGKV_NOT_FOUND,
        ringkv_result::RINGKV_SIBLINGS,
        ringkv_result::RINGKV_BUFFER_TOO_SMALL,
        ringkv_result::RINGKV_CLOSED,
        ringkv_result::RINGKV_UNAVAILABLE,
        ringkv_result::RINGKV_TIMEOUT,
        ringkv_result::RINGKV_OUTCOME_UNKNOWN,
        ringkv_result::RINGKV_CONNECTION,
        ringkv_result::RINGKV_REMOTE,
        ringkv_result::RINGKV_INTERNAL,
        ringkv_result::RINGKV_PANIC,
        ringkv_result::RINGKV_DENIED,
        ringkv_result::RINGKV_TLS,
    ];

    /// The code numbered `n`, if there is one.
    pub fn from_number(n: u32) -> Option<ringkv_result> {
        Self::ALL.get(n as usize).copied()
    }
}

thread_local! {
    /// The message of the last call on this thread that returned a
    /// result: empty after a success.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.clear();
            m.push_str(message);
        }
    });
}

fn last_error() -> String {
    LAST_ERROR.with(|m| m.try_borrow().map(|m| m.clone()).unwrap_or_default())
}

/// Names of the codes, NUL-terminated, indexed by number.
const NAMES: [&str; 16] = [
    "RINGKV_OK\0",
    "RINGKV_NULL_ARGUMENT\0",
    "RINGKV_INVALID_ARGUMENT\0",
    "RINGKV_NOT_FOUND\0",
    "RINGKV_SIBLINGS\0",
    "RINGKV_BUFFER_TOO_SMALL\0",
    "RINGKV_CLOSED\0",
    "RINGKV_UNAVAILABLE\0",
    "RINGKV_TIMEOUT\0",
    "RINGKV_OUTCOME_UNKNOWN\0",
    "RINGKV_CONNECTION\0",
    "RINGKV_REMOTE\0",
    "RINGKV_INTERNAL\0",
    "RINGKV_PANIC\0",
    "RINGKV_DENIED\0",
    "RINGKV_TLS\0",
];

/// The name of result `result` (for example `"RINGKV_NOT_FOUND"`), or
/// `"RINGKV_UNKNOWN_RESULT"` for a number that is not a result. The string
/// is static: never free it.
///
/// Thread safety: may be called from any thread at any time.
#[no_mangle]
pub extern "C" fn ringkv_result_name(result: u32) -> *const c_char {
    const UNKNOWN: &str = "RINGKV_UNKNOWN_RESULT\0";
    let name = crate::capi::quiet(UNKNOWN, || {
        NAMES.get(result as usize).copied().unwrap_or(UNKNOWN)
    });
    name.as_ptr().cast()
}

/// Copies the message of the last call on this thread that returned a
/// `ringkv_result` (empty after a success) into `buf`, NUL-terminated, and
/// its length (without the NUL) into `*out_len`.
///
/// - `buf` and `out_len` must not be NULL (`RINGKV_NULL_ARGUMENT`).
/// - When `len` is less than the message's length plus one, nothing is
///   written to `buf`, `*out_len` gets the length needed without the NUL,
///   and the result is `RINGKV_BUFFER_TOO_SMALL`: call again with a buffer
///   of `*out_len + 1` bytes. A `len` of 0 is always too small.
/// - This call does not change the last error: it can be called again.
///
/// Thread safety: may be called from any thread; it reads that thread's
/// own message.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes; `out_len` must point to
/// a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ringkv_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> ringkv_result {
    let r = std::panic::catch_unwind(|| {
        if buf.is_null() || out_len.is_null() {
            return ringkv_result::RINGKV_NULL_ARGUMENT;
        }
        let message = last_error();
        let bytes = message.as_bytes();
        if len < bytes.len() + 1 {
            // SAFETY: out_len is non-NULL and, by the contract, writable.
            unsafe { *out_len = bytes.len() };
            return ringkv_result::RINGKV_BUFFER_TOO_SMALL;
        }
        // SAFETY: buf is valid for `len` >= bytes.len() + 1 bytes; the
        // message is a distinct Rust allocation, so the ranges do not
        // overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
            *buf.add(bytes.len()) = 0;
            *out_len = bytes.len();
        }
        ringkv_result::RINGKV_OK
    });
    r.unwrap_or(ringkv_result::RINGKV_PANIC)
}
