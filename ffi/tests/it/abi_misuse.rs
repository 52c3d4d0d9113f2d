//! Misuse of the C ABI, from Rust calling the `extern "C"` functions as C
//! would: NULL handles, NULL buffers, zero lengths, invalid consistency
//! levels, policies and transports, a closed client, too-small error
//! buffers. Each must give its documented result, leave outputs alone,
//! and leave a message naming the function.

use std::ffi::{c_char, CStr};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use ringkv_ffi::*;

/// A pointer the library must never write over a failure with.
fn sentinel<T>() -> *mut T {
    std::ptr::NonNull::dangling().as_ptr()
}

/// This thread's last error message.
fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    let mut len = 0usize;
    // SAFETY: buf has 1024 writable bytes; len is a local.
    let r = unsafe { ringkv_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, ringkv_result::RINGKV_OK, "ringkv_last_error");
    // SAFETY: on OK the text is NUL-terminated within buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn name(r: u32) -> String {
    // SAFETY: ringkv_result_name returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ringkv_result_name(r)) }
        .to_string_lossy()
        .into_owned()
}

/// One memory-transport cluster for every test here (never freed: it
/// lives as long as the test process).
fn cluster() -> *const ringkv_cluster {
    struct Shared(*mut ringkv_cluster);
    // SAFETY: the handle is documented as usable from any thread.
    unsafe impl Send for Shared {}
    unsafe impl Sync for Shared {}
    static CLUSTER: OnceLock<Shared> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let mut c = null_mut();
            // SAFETY: c is a local out pointer.
            let r = unsafe { ringkv_cluster_new(3, RINGKV_TRANSPORT_MEMORY, &mut c) };
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
            Shared(c)
        })
        .0
}

const B: &[u8] = b"misuse";

/// Checks a call given a NULL handle: `RINGKV_NULL_ARGUMENT` and `message`.
fn null_handle(r: ringkv_result, message: &str) {
    assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT, "{message}");
    assert_eq!(last_error(), message);
}

#[test]
fn null_handles_give_null_argument_and_name_the_function() {
    let mut buf: *mut ringkv_buf = sentinel();
    let mut value: i64 = 77;
    let mut set: *mut ringkv_set = sentinel();
    let k = b"k";
    // SAFETY: NULL handles are what is under test; every other pointer is
    // valid.
    unsafe {
        null_handle(
            ringkv_cluster_put(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_cluster_put: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_get(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut buf),
            "ringkv_cluster_get: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_delete(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0),
            "ringkv_cluster_delete: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_counter_add(
                null(),
                B.as_ptr(),
                B.len(),
                k.as_ptr(),
                1,
                1,
                0,
                &mut value,
            ),
            "ringkv_cluster_counter_add: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_counter_get(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut value),
            "ringkv_cluster_counter_get: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_set_add(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_cluster_set_add: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_set_remove(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_cluster_set_remove: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_set_members(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut set),
            "ringkv_cluster_set_members: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_set_bucket_policy(null(), B.as_ptr(), B.len(), RINGKV_POLICY_LWW),
            "ringkv_cluster_set_bucket_policy: cluster is NULL",
        );
        null_handle(
            ringkv_cluster_client_addrs(null(), &mut buf),
            "ringkv_cluster_client_addrs: cluster is NULL",
        );
        null_handle(
            ringkv_client_put(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_client_put: client is NULL",
        );
        null_handle(
            ringkv_client_get(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut buf),
            "ringkv_client_get: client is NULL",
        );
        null_handle(
            ringkv_client_delete(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0),
            "ringkv_client_delete: client is NULL",
        );
        null_handle(
            ringkv_client_counter_add(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 1, 0, &mut value),
            "ringkv_client_counter_add: client is NULL",
        );
        null_handle(
            ringkv_client_counter_get(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut value),
            "ringkv_client_counter_get: client is NULL",
        );
        null_handle(
            ringkv_client_set_add(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_client_set_add: client is NULL",
        );
        null_handle(
            ringkv_client_set_remove(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, 0),
            "ringkv_client_set_remove: client is NULL",
        );
        null_handle(
            ringkv_client_set_members(null(), B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut set),
            "ringkv_client_set_members: client is NULL",
        );
        null_handle(
            ringkv_client_set_bucket_policy(null(), B.as_ptr(), B.len(), RINGKV_POLICY_LWW),
            "ringkv_client_set_bucket_policy: client is NULL",
        );
        null_handle(
            ringkv_client_close(null()),
            "ringkv_client_close: client is NULL",
        );
        null_handle(
            ringkv_set_member(null(), 0, &mut null(), &mut 0),
            "ringkv_set_member: set is NULL",
        );
        // The _free functions and accessors take NULL quietly.
        ringkv_cluster_free(null_mut());
        ringkv_client_free(null_mut());
        ringkv_buf_free(null_mut());
        ringkv_set_free(null_mut());
        assert!(ringkv_buf_data(null()).is_null());
        assert_eq!(ringkv_buf_len(null()), 0);
        assert_eq!(ringkv_set_len(null()), 0);
    }
    assert_eq!(buf, sentinel(), "no output written on failure");
    assert_eq!(set, sentinel(), "no output written on failure");
    assert_eq!(value, 77, "no output written on failure");
}

#[test]
fn null_outputs_are_refused_before_any_work_is_done() {
    let c = cluster();
    let bucket = b"misuse-counts";
    let k = b"c";
    // SAFETY: NULL outputs are what is under test; the rest is valid.
    unsafe {
        let r = ringkv_cluster_set_bucket_policy(
            c,
            bucket.as_ptr(),
            bucket.len(),
            RINGKV_POLICY_PNCOUNTER,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let r = ringkv_cluster_counter_add(
            c,
            bucket.as_ptr(),
            bucket.len(),
            k.as_ptr(),
            1,
            5,
            0,
            null_mut(),
        );
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(
            last_error(),
            "ringkv_cluster_counter_add: out_value is NULL"
        );
        // The add was not applied: the NULL was caught first.
        let mut v = -1;
        let r =
            ringkv_cluster_counter_get(c, bucket.as_ptr(), bucket.len(), k.as_ptr(), 1, 0, &mut v);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(v, 0);
        let r = ringkv_cluster_get(c, B.as_ptr(), B.len(), k.as_ptr(), 1, 0, null_mut());
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        let r = ringkv_cluster_set_members(c, B.as_ptr(), B.len(), k.as_ptr(), 1, 0, null_mut());
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(
            ringkv_cluster_client_addrs(c, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_cluster_new(1, 0, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_client_new(c"127.0.0.1:1".as_ptr(), null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
    }
}

#[test]
fn null_buffers_and_zero_lengths_follow_the_rules() {
    let c = cluster();
    let k = b"k";
    let mut out: *mut ringkv_buf = sentinel();
    // SAFETY: the NULL pointers are what is under test; the rest is valid.
    unsafe {
        // A NULL pointer with a non-zero length.
        let r = ringkv_cluster_put(c, null(), 3, k.as_ptr(), 1, k.as_ptr(), 1, 0);
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(last_error(), "ringkv_cluster_put: bucket is NULL");
        let r = ringkv_cluster_put(c, B.as_ptr(), B.len(), null(), 1, k.as_ptr(), 1, 0);
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        let r = ringkv_cluster_put(c, B.as_ptr(), B.len(), k.as_ptr(), 1, null(), 4, 0);
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(last_error(), "ringkv_cluster_put: value is NULL");
        let r = ringkv_cluster_set_add(c, B.as_ptr(), B.len(), k.as_ptr(), 1, null(), 2, 0);
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        // An empty bucket or key, with or without a pointer.
        let r = ringkv_cluster_put(c, null(), 0, k.as_ptr(), 1, k.as_ptr(), 1, 0);
        assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert_eq!(last_error(), "ringkv_cluster_put: the bucket is empty");
        let r = ringkv_cluster_get(c, B.as_ptr(), B.len(), k.as_ptr(), 0, 0, &mut out);
        assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert_eq!(last_error(), "ringkv_cluster_get: the key is empty");
        assert_eq!(out, sentinel());
        // An empty value, with a NULL pointer: stored and read back empty.
        let r = ringkv_cluster_set_bucket_policy(c, B.as_ptr(), B.len(), RINGKV_POLICY_LWW);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let r = ringkv_cluster_put(c, B.as_ptr(), B.len(), k.as_ptr(), 1, null(), 0, 0);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(last_error(), "", "a success leaves an empty message");
        let r = ringkv_cluster_get(c, B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut out);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_buf_len(out), 0);
        // The NUL after the content is there even for an empty buffer.
        assert!(!ringkv_buf_data(out).is_null());
        assert_eq!(*ringkv_buf_data(out), 0);
        ringkv_buf_free(out);
    }
}

#[test]
fn invalid_levels_policies_and_transports_are_rejected() {
    let c = cluster();
    let k = b"k";
    let mut out: *mut ringkv_buf = sentinel();
    let mut value = 5i64;
    // SAFETY: every pointer is valid; the numbers are what is under test.
    unsafe {
        for level in [5, 9, 255, u32::MAX] {
            let r = ringkv_cluster_put(c, B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, level);
            assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT, "put w={level}");
            assert!(last_error().starts_with(&format!(
                "ringkv_cluster_put: consistency {level} is not one of"
            )));
            let r = ringkv_cluster_get(c, B.as_ptr(), B.len(), k.as_ptr(), 1, level, &mut out);
            assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT, "get r={level}");
            let r = ringkv_cluster_delete(c, B.as_ptr(), B.len(), k.as_ptr(), 1, level);
            assert_eq!(
                r,
                ringkv_result::RINGKV_INVALID_ARGUMENT,
                "delete w={level}"
            );
            let r = ringkv_cluster_counter_add(
                c,
                B.as_ptr(),
                B.len(),
                k.as_ptr(),
                1,
                1,
                level,
                &mut value,
            );
            assert_eq!(
                r,
                ringkv_result::RINGKV_INVALID_ARGUMENT,
                "counter_add w={level}"
            );
            let r =
                ringkv_cluster_set_add(c, B.as_ptr(), B.len(), k.as_ptr(), 1, k.as_ptr(), 1, level);
            assert_eq!(
                r,
                ringkv_result::RINGKV_INVALID_ARGUMENT,
                "set_add w={level}"
            );
        }
        for policy in [0, 8, u32::MAX] {
            let r = ringkv_cluster_set_bucket_policy(c, B.as_ptr(), B.len(), policy);
            assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT, "policy {policy}");
        }
        let mut cl: *mut ringkv_cluster = sentinel();
        assert_eq!(
            ringkv_cluster_new(3, 2, &mut cl),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("transport 2"));
        assert_eq!(
            ringkv_cluster_new(0, 0, &mut cl),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(
            ringkv_cluster_new(17, 0, &mut cl),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(cl, sentinel());
        // A level the bucket cannot meet: TWO of a one-replica cluster.
        let mut one = null_mut();
        assert_eq!(
            ringkv_cluster_new(1, 0, &mut one),
            ringkv_result::RINGKV_OK,
            "{}",
            last_error()
        );
        let r = ringkv_cluster_put(
            one,
            B.as_ptr(),
            B.len(),
            k.as_ptr(),
            1,
            k.as_ptr(),
            1,
            RINGKV_CONSISTENCY_TWO,
        );
        assert_eq!(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            "{}",
            last_error()
        );
        ringkv_cluster_free(one);
        // A counter op on a bucket that is not a counter.
        let lww = b"misuse-lww";
        let r = ringkv_cluster_set_bucket_policy(c, lww.as_ptr(), lww.len(), RINGKV_POLICY_LWW);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let r =
            ringkv_cluster_counter_add(c, lww.as_ptr(), lww.len(), k.as_ptr(), 1, 1, 0, &mut value);
        assert_eq!(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            "{}",
            last_error()
        );
    }
    assert_eq!(out, sentinel());
    assert_eq!(value, 5);
}

/// An embedded cluster of `n` nodes on TCP, and its client addresses (a
/// buffer): both live, for the caller to free.
fn tcp_cluster(n: u32) -> (*mut ringkv_cluster, *mut ringkv_buf) {
    let mut tcp = null_mut();
    // SAFETY: `tcp` is a valid local.
    let r = unsafe { ringkv_cluster_new(n, RINGKV_TRANSPORT_TCP, &mut tcp) };
    assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
    let mut addrs = null_mut();
    // SAFETY: `tcp` is live and `addrs` a valid local.
    let r = unsafe { ringkv_cluster_client_addrs(tcp, &mut addrs) };
    assert_eq!(r, ringkv_result::RINGKV_OK);
    (tcp, addrs)
}

#[test]
fn a_closed_client_gives_closed_and_bad_addresses_are_refused() {
    // SAFETY: every pointer is a valid local or a live handle.
    unsafe {
        let (tcp, addrs) = tcp_cluster(3);
        let text = CStr::from_ptr(ringkv_buf_data(addrs).cast())
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(text.split(',').count(), 3, "{text}");
        assert_eq!(text.len(), ringkv_buf_len(addrs));
        let mut client = null_mut();
        let r = ringkv_client_new(ringkv_buf_data(addrs).cast(), &mut client);
        ringkv_buf_free(addrs);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let k = b"k";
        let r = ringkv_client_set_bucket_policy(client, B.as_ptr(), B.len(), RINGKV_POLICY_LWW);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let r = ringkv_client_put(
            client,
            B.as_ptr(),
            B.len(),
            k.as_ptr(),
            1,
            b"v".as_ptr(),
            1,
            3,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_client_close(client), ringkv_result::RINGKV_OK);
        let mut out: *mut ringkv_buf = sentinel();
        let r = ringkv_client_get(client, B.as_ptr(), B.len(), k.as_ptr(), 1, 0, &mut out);
        assert_eq!(r, ringkv_result::RINGKV_CLOSED);
        assert_eq!(last_error(), "ringkv_client_get: the client is closed");
        assert_eq!(out, sentinel());
        let r = ringkv_client_put(
            client,
            B.as_ptr(),
            B.len(),
            k.as_ptr(),
            1,
            b"v".as_ptr(),
            1,
            0,
        );
        assert_eq!(r, ringkv_result::RINGKV_CLOSED);
        // Closing again is fine; argument checks still come first.
        assert_eq!(ringkv_client_close(client), ringkv_result::RINGKV_OK);
        let r = ringkv_client_put(client, null(), 2, k.as_ptr(), 1, null(), 0, 0);
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        ringkv_client_free(client);
        ringkv_cluster_free(tcp);

        let mut client: *mut ringkv_client = sentinel();
        assert_eq!(
            ringkv_client_new(null(), &mut client),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_client_new(c"".as_ptr(), &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(
            ringkv_client_new(c" , ,".as_ptr(), &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        let bad_utf8 = [0xffu8, 0xfe, 0];
        assert_eq!(
            ringkv_client_new(bad_utf8.as_ptr().cast(), &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        // Nothing listens on port 1.
        assert_eq!(
            ringkv_client_new(c"127.0.0.1:1".as_ptr(), &mut client),
            ringkv_result::RINGKV_CONNECTION
        );
        assert!(
            last_error().starts_with("ringkv_client_new: "),
            "{}",
            last_error()
        );
        assert_eq!(client, sentinel());

        // The credentialed form: every pointer checked, and named.
        let (a, u, p) = (c"127.0.0.1:1".as_ptr(), c"admin".as_ptr(), c"pw".as_ptr());
        for (args, what) in [
            ((null(), u, p), "addrs"),
            ((a, null(), p), "user"),
            ((a, u, null()), "password"),
        ] {
            assert_eq!(
                ringkv_client_new_auth(args.0, args.1, args.2, &mut client),
                ringkv_result::RINGKV_NULL_ARGUMENT
            );
            assert!(last_error().contains(what), "{}", last_error());
        }
        assert_eq!(
            ringkv_client_new_auth(a, u, p, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_client_new_auth(a, bad_utf8.as_ptr().cast(), p, &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(
            ringkv_client_new_auth(a, u, p, &mut client),
            ringkv_result::RINGKV_CONNECTION
        );
        assert!(
            last_error().starts_with("ringkv_client_new_auth: "),
            "{}",
            last_error()
        );
        assert_eq!(client, sentinel());
    }
}

/// A client CA in PEM: the certificate of a freshly made cluster CA.
fn a_ca_pem() -> String {
    ringkv::ClusterCa::generate("ffi-misuse")
        .expect("a CA")
        .cert_pem()
        .to_string()
}

#[test]
fn client_options_check_every_argument_and_keep_their_state_on_errors() {
    let pem = a_ca_pem();
    // SAFETY: every pointer is NULL (under test), a valid local, a C string
    // literal, or a live options handle.
    unsafe {
        // Constructor and free.
        assert_eq!(
            ringkv_client_options_new(null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_client_options_new: out is NULL");
        ringkv_client_options_free(null_mut());
        let mut o = null_mut();
        assert_eq!(ringkv_client_options_new(&mut o), ringkv_result::RINGKV_OK);
        assert!(!o.is_null());
        assert_eq!(last_error(), "");

        // NULL handles and NULL arguments, each named.
        let (u, p) = (c"admin".as_ptr(), c"pw".as_ptr());
        null_handle(
            ringkv_client_options_set_credentials(null_mut(), u, p),
            "ringkv_client_options_set_credentials: options is NULL",
        );
        null_handle(
            ringkv_client_options_set_credentials(o, null(), p),
            "ringkv_client_options_set_credentials: user is NULL",
        );
        null_handle(
            ringkv_client_options_set_credentials(o, u, null()),
            "ringkv_client_options_set_credentials: password is NULL",
        );
        null_handle(
            ringkv_client_options_set_tls_ca_pem(null_mut(), pem.as_ptr(), pem.len()),
            "ringkv_client_options_set_tls_ca_pem: options is NULL",
        );
        null_handle(
            ringkv_client_options_set_tls_ca_pem(o, null(), 10),
            "ringkv_client_options_set_tls_ca_pem: pem is NULL",
        );
        null_handle(
            ringkv_client_options_set_tls_ca_file(null_mut(), c"/x".as_ptr()),
            "ringkv_client_options_set_tls_ca_file: options is NULL",
        );
        null_handle(
            ringkv_client_options_set_tls_ca_file(o, null()),
            "ringkv_client_options_set_tls_ca_file: path is NULL",
        );
        null_handle(
            ringkv_client_options_set_server_name(null_mut(), c"n".as_ptr()),
            "ringkv_client_options_set_server_name: options is NULL",
        );
        null_handle(
            ringkv_client_options_set_server_name(o, null()),
            "ringkv_client_options_set_server_name: name is NULL",
        );

        // Bad PEM: empty, not a certificate, a broken certificate, not
        // UTF-8; each named, each leaving the options as they were.
        let broken = pem.replace("MII", "MI!");
        let mut cut = pem.clone();
        cut.truncate(pem.len() / 2);
        cut.push_str("\n-----END CERTIFICATE-----\n");
        for bad in [
            &b""[..],
            b"not a certificate",
            broken.as_bytes(),
            cut.as_bytes(),
            b"\xff\xfe",
        ] {
            let r = ringkv_client_options_set_tls_ca_pem(o, bad.as_ptr(), bad.len());
            assert_eq!(
                r,
                ringkv_result::RINGKV_INVALID_ARGUMENT,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                last_error().starts_with("ringkv_client_options_set_tls_ca_pem: "),
                "{}",
                last_error()
            );
        }
        assert!(!o_ref(o).uses_tls(), "a bad PEM set a CA");
        assert_eq!(
            ringkv_client_options_set_tls_ca_pem(o, null(), 0),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );

        // Files: missing, not PEM, too large; then a good one.
        let dir = tempfile::tempdir().unwrap();
        let missing =
            std::ffi::CString::new(dir.path().join("none.pem").to_str().unwrap()).unwrap();
        assert_eq!(
            ringkv_client_options_set_tls_ca_file(o, missing.as_ptr()),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(
            last_error().starts_with("ringkv_client_options_set_tls_ca_file: cannot read "),
            "{}",
            last_error()
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "junk").unwrap();
        let junk = std::ffi::CString::new(junk.to_str().unwrap()).unwrap();
        assert_eq!(
            ringkv_client_options_set_tls_ca_file(o, junk.as_ptr()),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(
            last_error().starts_with("ringkv_client_options_set_tls_ca_file: ")
                && last_error().contains("junk.pem"),
            "{}",
            last_error()
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; RINGKV_MAX_CA_FILE_BYTES + 1]).unwrap();
        let big = std::ffi::CString::new(big.to_str().unwrap()).unwrap();
        assert_eq!(
            ringkv_client_options_set_tls_ca_file(o, big.as_ptr()),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("too large"), "{}", last_error());
        assert!(!o_ref(o).uses_tls());
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, &pem).unwrap();
        let good = std::ffi::CString::new(good.to_str().unwrap()).unwrap();
        assert_eq!(
            ringkv_client_options_set_tls_ca_file(o, good.as_ptr()),
            ringkv_result::RINGKV_OK,
            "{}",
            last_error()
        );
        assert!(o_ref(o).uses_tls());
        // A bad PEM after a good one keeps the good one.
        let r = ringkv_client_options_set_tls_ca_pem(o, b"x".as_ptr(), 1);
        assert_eq!(r, ringkv_result::RINGKV_INVALID_ARGUMENT);
        assert!(o_ref(o).uses_tls());
        assert_eq!(
            ringkv_client_options_set_tls_ca_pem(o, pem.as_ptr(), pem.len()),
            ringkv_result::RINGKV_OK
        );

        // Server names: empty and not UTF-8 refused where set; one that is
        // no DNS name refused by the connect, before any dialing.
        assert_eq!(
            ringkv_client_options_set_server_name(o, c"".as_ptr()),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(
            last_error(),
            "ringkv_client_options_set_server_name: the server name is empty"
        );
        let bad_utf8 = [0xffu8, 0];
        assert_eq!(
            ringkv_client_options_set_server_name(o, bad_utf8.as_ptr().cast()),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert_eq!(
            ringkv_client_options_set_server_name(o, c"not a name!".as_ptr()),
            ringkv_result::RINGKV_OK
        );
        let mut client: *mut ringkv_client = sentinel();
        assert_eq!(
            ringkv_client_connect(c"127.0.0.1:1".as_ptr(), o, &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(
            last_error().starts_with("ringkv_client_connect: client TLS: ")
                && last_error().contains("not a server name"),
            "{}",
            last_error()
        );
        assert_eq!(client, sentinel());
        ringkv_client_options_free(o);

        // A server name without a CA.
        let mut o = null_mut();
        assert_eq!(ringkv_client_options_new(&mut o), ringkv_result::RINGKV_OK);
        assert_eq!(
            ringkv_client_options_set_server_name(o, c"db.example.test".as_ptr()),
            ringkv_result::RINGKV_OK
        );
        assert_eq!(
            ringkv_client_connect(c"127.0.0.1:1".as_ptr(), o, &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("no CA"), "{}", last_error());

        // Connect's own arguments, checked before the options are used.
        assert_eq!(
            ringkv_client_connect(null(), o, &mut client),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_client_connect: addrs is NULL");
        assert_eq!(
            ringkv_client_connect(c"127.0.0.1:1".as_ptr(), o, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_client_connect: out is NULL");
        assert_eq!(
            ringkv_client_connect(c" ,".as_ptr(), null(), &mut client),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        // NULL options are the defaults: plain TCP, and nothing on port 1.
        assert_eq!(
            ringkv_client_connect(c"127.0.0.1:1".as_ptr(), null(), &mut client),
            ringkv_result::RINGKV_CONNECTION
        );
        assert!(
            last_error().starts_with("ringkv_client_connect: "),
            "{}",
            last_error()
        );
        assert_eq!(client, sentinel());
        ringkv_client_options_free(o);
    }
}

/// The Rust options behind a C handle (the test's window into them).
///
/// # Safety
/// `o` is a live handle.
unsafe fn o_ref<'a>(o: *mut ringkv_client_options) -> &'a ringkv_ffi::store::ConnectOptions {
    // SAFETY: by the contract, o is live and aligned.
    unsafe { &*o }.settings()
}

#[test]
fn connect_with_options_reaches_an_embedded_cluster_and_tls_to_a_plain_port_is_refused() {
    // SAFETY: every pointer is a valid local, a C string, or a live handle.
    unsafe {
        let (tcp, addrs) = tcp_cluster(1);
        let addr = ringkv_buf_data(addrs).cast::<c_char>();

        // NULL options and options with nothing set: plain TCP, served.
        let mut o = null_mut();
        assert_eq!(ringkv_client_options_new(&mut o), ringkv_result::RINGKV_OK);
        for options in [null(), o.cast_const()] {
            let mut client = null_mut();
            let r = ringkv_client_connect(addr, options, &mut client);
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
            let r = ringkv_client_set_bucket_policy(client, B.as_ptr(), B.len(), RINGKV_POLICY_LWW);
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
            ringkv_client_free(client);
        }

        // With a CA, the client speaks TLS to a port that does not: refused,
        // as RINGKV_TLS when the node's answer to the ClientHello arrives
        // (it does here: "received corrupt message of type
        // InvalidContentType"), as RINGKV_CONNECTION should the connection
        // close first.
        let pem = a_ca_pem();
        assert_eq!(
            ringkv_client_options_set_tls_ca_pem(o, pem.as_ptr(), pem.len()),
            ringkv_result::RINGKV_OK
        );
        let mut client: *mut ringkv_client = sentinel();
        let r = ringkv_client_connect(addr, o, &mut client);
        assert!(
            r == ringkv_result::RINGKV_TLS || r == ringkv_result::RINGKV_CONNECTION,
            "{r:?}: {}",
            last_error()
        );
        assert!(
            last_error().starts_with("ringkv_client_connect: "),
            "{}",
            last_error()
        );
        assert_eq!(client, sentinel());
        ringkv_client_options_free(o);
        ringkv_buf_free(addrs);
        ringkv_cluster_free(tcp);
    }
}

#[test]
fn too_small_error_buffers_get_the_size_and_nothing_else() {
    // SAFETY: the buffers are locals of the stated sizes.
    unsafe {
        ringkv_cluster_put(null(), null(), 0, null(), 0, null(), 0, 0);
        let message = "ringkv_cluster_put: cluster is NULL";
        let mut buf = [b'#' as c_char; 64];
        let mut len = 0usize;
        let r = ringkv_last_error(buf.as_mut_ptr(), 0, &mut len);
        assert_eq!(r, ringkv_result::RINGKV_BUFFER_TOO_SMALL);
        assert_eq!(len, message.len());
        // Room for the text but not its NUL is still too small.
        let r = ringkv_last_error(buf.as_mut_ptr(), message.len(), &mut len);
        assert_eq!(r, ringkv_result::RINGKV_BUFFER_TOO_SMALL);
        assert!(buf.iter().all(|&b| b == b'#' as c_char), "nothing written");
        let r = ringkv_last_error(buf.as_mut_ptr(), message.len() + 1, &mut len);
        assert_eq!(r, ringkv_result::RINGKV_OK);
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), message);
        assert_eq!(
            buf[message.len() + 1],
            b'#' as c_char,
            "nothing past the NUL"
        );
        // NULL arguments, and the message survives every ringkv_last_error.
        assert_eq!(
            ringkv_last_error(null_mut(), 10, &mut len),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_last_error(buf.as_mut_ptr(), 10, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), message);
    }
}

#[test]
fn result_names_are_stable() {
    let names = [
        "RINGKV_OK",
        "RINGKV_NULL_ARGUMENT",
        "RINGKV_INVALID_ARGUMENT",
        "RINGKV_NOT_FOUND",
        "RINGKV_SIBLINGS",
        "RINGKV_BUFFER_TOO_SMALL",
        "RINGKV_CLOSED",
        "RINGKV_UNAVAILABLE",
        "RINGKV_TIMEOUT",
        "RINGKV_OUTCOME_UNKNOWN",
        "RINGKV_CONNECTION",
        "RINGKV_REMOTE",
        "RINGKV_INTERNAL",
        "RINGKV_PANIC",
        "RINGKV_DENIED",
        "RINGKV_TLS",
    ];
    for (n, want) in names.iter().enumerate() {
        assert_eq!(name(n as u32), *want);
        assert_eq!(
            ringkv_result::from_number(n as u32).map(|r| r as u32),
            Some(n as u32)
        );
    }
    assert_eq!(name(16), "RINGKV_UNKNOWN_RESULT");
    assert_eq!(name(u32::MAX), "RINGKV_UNKNOWN_RESULT");
}

#[test]
fn set_members_are_indexed_and_bounded() {
    let c = cluster();
    let bucket = b"misuse-sets";
    let k = b"s";
    // SAFETY: every pointer is a valid local or a live handle.
    unsafe {
        let r =
            ringkv_cluster_set_bucket_policy(c, bucket.as_ptr(), bucket.len(), RINGKV_POLICY_ORSET);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        for m in [&b"b"[..], b"", b"a"] {
            let r = ringkv_cluster_set_add(
                c,
                bucket.as_ptr(),
                bucket.len(),
                k.as_ptr(),
                1,
                m.as_ptr(),
                m.len(),
                0,
            );
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        }
        let mut set = null_mut();
        let r = ringkv_cluster_set_members(
            c,
            bucket.as_ptr(),
            bucket.len(),
            k.as_ptr(),
            1,
            0,
            &mut set,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_set_len(set), 3);
        let mut got = Vec::new();
        for i in 0..3 {
            let mut data = null();
            let mut len = 9;
            assert_eq!(
                ringkv_set_member(set, i, &mut data, &mut len),
                ringkv_result::RINGKV_OK
            );
            assert!(!data.is_null());
            got.push(std::slice::from_raw_parts(data, len).to_vec());
        }
        assert_eq!(got, vec![b"".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        let mut data = null();
        let mut len = 9;
        assert_eq!(
            ringkv_set_member(set, 3, &mut data, &mut len),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(data.is_null() && len == 9, "no output on failure");
        assert_eq!(
            ringkv_set_member(set, 0, null_mut(), &mut len),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_set_member(set, 0, &mut data, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        ringkv_set_free(set);
    }
}
