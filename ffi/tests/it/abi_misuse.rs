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

// ---- batches (ringkv_*_multi_get, ringkv_*_multi_put, ringkv_batch_*) ----

/// The arrays of a batch of `keys`: pointers and lengths.
fn arrays(items: &[&[u8]]) -> (Vec<*const u8>, Vec<usize>) {
    (
        items.iter().map(|k| k.as_ptr()).collect(),
        items.iter().map(|k| k.len()).collect(),
    )
}

/// A multi-get through the shared cluster; `*out` as the call left it.
unsafe fn mget(
    keys: *const *const u8,
    lens: *const usize,
    n: usize,
    r: u32,
    timeout_ms: u32,
    out: *mut *mut ringkv_batch,
) -> ringkv_result {
    // SAFETY: forwarded; the bucket is a valid static.
    unsafe {
        ringkv_cluster_multi_get(
            cluster(),
            B.as_ptr(),
            B.len(),
            keys,
            lens,
            n,
            r,
            timeout_ms,
            out,
        )
    }
}

/// A multi-put through the shared cluster.
#[allow(clippy::too_many_arguments)]
unsafe fn mput(
    keys: (*const *const u8, *const usize),
    values: (*const *const u8, *const usize),
    ctxs: (*const *const u8, *const usize),
    n: usize,
    w: u32,
    timeout_ms: u32,
    out: *mut *mut ringkv_batch,
) -> ringkv_result {
    // SAFETY: forwarded; the bucket is a valid static.
    unsafe {
        ringkv_cluster_multi_put(
            cluster(),
            B.as_ptr(),
            B.len(),
            keys.0,
            keys.1,
            values.0,
            values.1,
            ctxs.0,
            ctxs.1,
            n,
            w,
            timeout_ms,
            out,
        )
    }
}

/// Asserts a refused batch call: `want`, a message naming `op` (and
/// containing `hint`), and the output untouched.
fn refused(r: ringkv_result, want: ringkv_result, op: &str, hint: &str, out: *mut ringkv_batch) {
    let message = last_error();
    assert_eq!(r, want, "{message}");
    assert!(
        message.starts_with(&format!("{op}: ")),
        "{message:?} does not name {op}"
    );
    assert!(message.contains(hint), "{message:?} lacks {hint:?}");
    assert_eq!(out, sentinel(), "no output written on failure");
}

#[test]
fn batches_refuse_null_arrays_and_elements_with_null_argument() {
    const GET: &str = "ringkv_cluster_multi_get";
    const PUT: &str = "ringkv_cluster_multi_put";
    let (kp, kl) = arrays(&[b"a", b"b", b"c"]);
    let (vp, vl) = arrays(&[b"1", b"2", b"3"]);
    let mut out: *mut ringkv_batch = sentinel();
    let nul = (null(), null());
    // SAFETY: the NULL pointers are what is under test; every non-NULL
    // array holds 3 elements, each valid for its length.
    unsafe {
        // NULL handles.
        let r = ringkv_cluster_multi_get(
            null(),
            B.as_ptr(),
            B.len(),
            kp.as_ptr(),
            kl.as_ptr(),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            GET,
            "cluster is NULL",
            out,
        );
        let r = ringkv_client_multi_get(
            null(),
            B.as_ptr(),
            B.len(),
            kp.as_ptr(),
            kl.as_ptr(),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            "ringkv_client_multi_get",
            "client is NULL",
            out,
        );
        let r = ringkv_client_multi_put(
            null(),
            B.as_ptr(),
            B.len(),
            kp.as_ptr(),
            kl.as_ptr(),
            vp.as_ptr(),
            vl.as_ptr(),
            null(),
            null(),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            "ringkv_client_multi_put",
            "client is NULL",
            out,
        );
        // A NULL bucket with a length.
        let r = ringkv_cluster_multi_get(
            cluster(),
            null(),
            4,
            kp.as_ptr(),
            kl.as_ptr(),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            GET,
            "bucket is NULL",
            out,
        );
        // NULL arrays with n > 0.
        let r = mget(null(), kl.as_ptr(), 3, 0, 0, &mut out);
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            GET,
            "keys is NULL",
            out,
        );
        let r = mget(kp.as_ptr(), null(), 3, 0, 0, &mut out);
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            GET,
            "key_lens is NULL",
            out,
        );
        let r = mput(
            (null(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            nul,
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "keys is NULL",
            out,
        );
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), null()),
            nul,
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "value_lens is NULL",
            out,
        );
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (null(), vl.as_ptr()),
            nul,
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "values is NULL",
            out,
        );
        // One of ctxs and ctx_lens NULL (both NULL: all blind, allowed).
        let (cp, cl) = arrays(&[b"", b"", b""]);
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            (null(), cl.as_ptr()),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "ctxs is NULL",
            out,
        );
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            (cp.as_ptr(), null()),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "ctx_lens is NULL",
            out,
        );
        // A NULL element with a non-zero length, named by its index.
        let kp_hole = [kp[0], null(), kp[2]];
        let r = mget(kp_hole.as_ptr(), kl.as_ptr(), 3, 0, 0, &mut out);
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            GET,
            "keys[1] is NULL",
            out,
        );
        let vp_hole = [vp[0], vp[1], null()];
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp_hole.as_ptr(), vl.as_ptr()),
            nul,
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "values[2] is NULL",
            out,
        );
        let ctx_lens_hole = [0usize, 5, 0];
        let ctx_hole: [*const u8; 3] = [null(), null(), null()];
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            (ctx_hole.as_ptr(), ctx_lens_hole.as_ptr()),
            3,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            PUT,
            "ctxs[1] is NULL",
            out,
        );
        // NULL output.
        let r = mget(kp.as_ptr(), kl.as_ptr(), 3, 0, 0, null_mut());
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(last_error(), format!("{GET}: out_batch is NULL"));
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            nul,
            3,
            0,
            0,
            null_mut(),
        );
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        // NULL values whose lengths are 0 are empty values: accepted.
        let empty_vals: [*const u8; 3] = [null(), null(), null()];
        let zero = [0usize; 3];
        let mut ok = null_mut();
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (empty_vals.as_ptr(), zero.as_ptr()),
            nul,
            3,
            RINGKV_CONSISTENCY_QUORUM,
            0,
            &mut ok,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_batch_len(ok), 3);
        ringkv_batch_free(ok);
    }
}

#[test]
fn batches_refuse_bad_counts_keys_levels_and_timeouts_with_invalid_argument() {
    const GET: &str = "ringkv_cluster_multi_get";
    const PUT: &str = "ringkv_cluster_multi_put";
    let (kp, kl) = arrays(&[b"a", b"b"]);
    let (vp, vl) = arrays(&[b"1", b"2"]);
    let nul = (null(), null());
    let mut out: *mut ringkv_batch = sentinel();
    // SAFETY: every non-NULL array holds at least n elements, each valid
    // for its length.
    unsafe {
        // Zero items, with arrays and without.
        let r = mget(kp.as_ptr(), kl.as_ptr(), 0, 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, GET, "", out);
        let r = mget(null(), null(), 0, 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, GET, "", out);
        let r = mput(nul, nul, nul, 0, 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, PUT, "", out);
        // Over the limit: RINGKV_MAX_BATCH_KEYS + 1 distinct keys.
        let many: Vec<Vec<u8>> = (0..=RINGKV_MAX_BATCH_KEYS)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        let (mp, ml) = arrays(&many);
        let r = mget(mp.as_ptr(), ml.as_ptr(), many.len(), 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, GET, "1001", out);
        let r = mput(
            (mp.as_ptr(), ml.as_ptr()),
            (mp.as_ptr(), ml.as_ptr()),
            nul,
            many.len(),
            0,
            0,
            &mut out,
        );
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, PUT, "1001", out);
        // n far beyond the arrays is refused before they are read (only
        // RINGKV_MAX_BATCH_KEYS + 1 elements exist; usize::MAX never
        // reaches a slice).
        let r = mget(mp.as_ptr(), ml.as_ptr(), usize::MAX, 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, GET, "", out);
        // Exactly the limit is accepted.
        let mut ok = null_mut();
        let r = mget(
            mp.as_ptr(),
            ml.as_ptr(),
            RINGKV_MAX_BATCH_KEYS,
            0,
            0,
            &mut ok,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_batch_len(ok), RINGKV_MAX_BATCH_KEYS);
        ringkv_batch_free(ok);
        // An empty key.
        let (ep, el) = arrays(&[b"a", b""]);
        let r = mget(ep.as_ptr(), el.as_ptr(), 2, 0, 0, &mut out);
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, GET, "", out);
        let r = mput(
            (ep.as_ptr(), el.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            nul,
            2,
            0,
            0,
            &mut out,
        );
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, PUT, "", out);
        // A key twice: refused in a multi-put, allowed in a multi-get.
        let (dp, dl) = arrays(&[b"same", b"same"]);
        let r = mput(
            (dp.as_ptr(), dl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            nul,
            2,
            0,
            0,
            &mut out,
        );
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, PUT, "", out);
        let mut twice = null_mut();
        let r = mget(dp.as_ptr(), dl.as_ptr(), 2, 0, 0, &mut twice);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_batch_len(twice), 2);
        ringkv_batch_free(twice);
        // A context that does not decode.
        let (cp, cl) = arrays(&[b"not a context", b""]);
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            (cp.as_ptr(), cl.as_ptr()),
            2,
            0,
            0,
            &mut out,
        );
        refused(r, ringkv_result::RINGKV_INVALID_ARGUMENT, PUT, "", out);
        // An empty bucket, a bad level, a timeout above the largest.
        let r = ringkv_cluster_multi_get(
            cluster(),
            null(),
            0,
            kp.as_ptr(),
            kl.as_ptr(),
            2,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            GET,
            "bucket",
            out,
        );
        let r = mget(kp.as_ptr(), kl.as_ptr(), 2, 9, 0, &mut out);
        refused(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            GET,
            "consistency 9",
            out,
        );
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            nul,
            2,
            5,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            PUT,
            "consistency 5",
            out,
        );
        let r = mget(
            kp.as_ptr(),
            kl.as_ptr(),
            2,
            0,
            RINGKV_MAX_TIMEOUT_MS + 1,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            GET,
            "timeout_ms",
            out,
        );
    }
}

#[test]
fn batch_accessors_check_handles_indices_outputs_and_kinds() {
    let (kp, kl) = arrays(&[b"acc-1", b"acc-2"]);
    let (vp, vl) = arrays(&[b"one", b"two"]);
    // SAFETY: every pointer is a valid local, a live batch, or the NULL
    // under test.
    unsafe {
        let mut put = null_mut();
        let r = mput(
            (kp.as_ptr(), kl.as_ptr()),
            (vp.as_ptr(), vl.as_ptr()),
            (null(), null()),
            2,
            RINGKV_CONSISTENCY_QUORUM,
            0,
            &mut put,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let mut got = null_mut();
        let r = mget(
            kp.as_ptr(),
            kl.as_ptr(),
            2,
            RINGKV_CONSISTENCY_QUORUM,
            0,
            &mut got,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_batch_len(got), 2);

        // NULL batches.
        assert_eq!(ringkv_batch_len(null()), 0);
        assert_eq!(
            ringkv_batch_status(null(), 0),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_batch_status: batch is NULL");
        let mut o: *const ringkv_object = sentinel();
        assert_eq!(
            ringkv_batch_object(null(), 0, &mut o),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        let mut data: *const u8 = sentinel();
        let mut len = 77usize;
        assert_eq!(
            ringkv_batch_context(null(), 0, &mut data, &mut len),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        // Indices out of range: len, len + 1, usize::MAX; outputs untouched.
        for i in [2, 3, usize::MAX] {
            assert_eq!(
                ringkv_batch_status(got, i),
                ringkv_result::RINGKV_INVALID_ARGUMENT
            );
            assert_eq!(
                last_error(),
                format!("ringkv_batch_status: index {i} is not below the batch's 2 items")
            );
            assert_eq!(
                ringkv_batch_object(got, i, &mut o),
                ringkv_result::RINGKV_INVALID_ARGUMENT
            );
            assert_eq!(
                ringkv_batch_context(got, i, &mut data, &mut len),
                ringkv_result::RINGKV_INVALID_ARGUMENT
            );
            assert_eq!(
                ringkv_batch_context(put, i, &mut data, &mut len),
                ringkv_result::RINGKV_INVALID_ARGUMENT
            );
        }
        assert_eq!(o, sentinel::<ringkv_object>() as *const _);
        assert_eq!(data, sentinel::<u8>() as *const _);
        assert_eq!(len, 77);
        // NULL outputs.
        assert_eq!(
            ringkv_batch_object(got, 0, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_batch_object: out_object is NULL");
        assert_eq!(
            ringkv_batch_context(got, 0, null_mut(), &mut len),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            ringkv_batch_context(got, 0, &mut data, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(len, 77);
        // A multi-put's batch holds contexts, not objects.
        assert_eq!(
            ringkv_batch_object(put, 0, &mut o),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("use ringkv_batch_context"));
        assert_eq!(o, sentinel::<ringkv_object>() as *const _);
        // Reading an item again gives the same answer: the batch is not
        // consumed by reading (and stays valid until freed).
        for _ in 0..2 {
            for i in 0..2 {
                assert_eq!(ringkv_batch_status(got, i), ringkv_result::RINGKV_OK);
                let mut obj = null();
                assert_eq!(
                    ringkv_batch_object(got, i, &mut obj),
                    ringkv_result::RINGKV_OK
                );
                let mut v = null();
                let mut vlen = 0;
                assert_eq!(
                    ringkv_object_value(obj, 0, &mut v, &mut vlen),
                    ringkv_result::RINGKV_OK
                );
                let want: &[u8] = if i == 0 { b"one" } else { b"two" };
                assert_eq!(std::slice::from_raw_parts(v, vlen), want);
                let mut c = null();
                let mut clen = 0;
                assert_eq!(
                    ringkv_batch_context(put, i, &mut c, &mut clen),
                    ringkv_result::RINGKV_OK
                );
                assert!(clen > 0, "a written item has a context");
            }
        }
        ringkv_batch_free(got);
        ringkv_batch_free(put);
        ringkv_batch_free(null_mut());
    }
}

// ---- scans (ringkv_*_scan_new, ringkv_scan_next) ----

#[test]
fn scan_new_checks_every_argument_before_anything_is_read() {
    const OP: &str = "ringkv_cluster_scan_new";
    let c = cluster();
    let mut out: *mut ringkv_scan = sentinel();
    // SAFETY: the NULLs are what is under test; the rest is valid.
    unsafe {
        let check = |r: ringkv_result, want: ringkv_result, hint: &str, out: *mut ringkv_scan| {
            let message = last_error();
            assert_eq!(r, want, "{message}");
            assert!(message.starts_with("ringkv_"), "{message}");
            assert!(message.contains(hint), "{message:?} lacks {hint:?}");
            assert_eq!(out, sentinel(), "no output written on failure");
        };
        let r = ringkv_cluster_scan_new(null(), B.as_ptr(), B.len(), 0, 0, 0, &mut out);
        check(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            "cluster is NULL",
            out,
        );
        let r = ringkv_client_scan_new(null(), B.as_ptr(), B.len(), 0, 0, 0, &mut out);
        check(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            "client is NULL",
            out,
        );
        let r = ringkv_cluster_scan_new(c, null(), 3, 0, 0, 0, &mut out);
        check(
            r,
            ringkv_result::RINGKV_NULL_ARGUMENT,
            "bucket is NULL",
            out,
        );
        let r = ringkv_cluster_scan_new(c, B.as_ptr(), B.len(), 0, 0, 0, null_mut());
        assert_eq!(r, ringkv_result::RINGKV_NULL_ARGUMENT);
        assert_eq!(last_error(), format!("{OP}: out_scan is NULL"));
        let r = ringkv_cluster_scan_new(c, null(), 0, 0, 0, 0, &mut out);
        check(
            r,
            ringkv_result::RINGKV_INVALID_ARGUMENT,
            "the bucket is empty",
            out,
        );
        for page in [RINGKV_MAX_SCAN_PAGE + 1, u32::MAX] {
            let r = ringkv_cluster_scan_new(c, B.as_ptr(), B.len(), page, 0, 0, &mut out);
            check(r, ringkv_result::RINGKV_INVALID_ARGUMENT, "page_limit", out);
        }
        for level in [5, u32::MAX] {
            let r = ringkv_cluster_scan_new(c, B.as_ptr(), B.len(), 0, level, 0, &mut out);
            check(
                r,
                ringkv_result::RINGKV_INVALID_ARGUMENT,
                "consistency",
                out,
            );
        }
        let r = ringkv_cluster_scan_new(
            c,
            B.as_ptr(),
            B.len(),
            0,
            0,
            RINGKV_MAX_TIMEOUT_MS + 1,
            &mut out,
        );
        check(r, ringkv_result::RINGKV_INVALID_ARGUMENT, "timeout_ms", out);
        // The limits themselves are accepted.
        let mut ok = null_mut();
        let r = ringkv_cluster_scan_new(
            c,
            B.as_ptr(),
            B.len(),
            RINGKV_MAX_SCAN_PAGE,
            RINGKV_CONSISTENCY_ALL,
            RINGKV_MAX_TIMEOUT_MS,
            &mut ok,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_scan_count(ok), 0, "nothing is read yet");
        ringkv_scan_free(ok);
    }
}

#[test]
fn scan_next_checks_its_outputs_and_keeps_answering_done() {
    let c = cluster();
    let bucket = b"misuse-scan";
    // SAFETY: the NULLs are what is under test; the rest is valid.
    unsafe {
        for k in [&b"x"[..], b"y", b"z"] {
            let r = ringkv_cluster_put_ctx(
                c,
                bucket.as_ptr(),
                bucket.len(),
                k.as_ptr(),
                k.len(),
                k.as_ptr(),
                k.len(),
                null(),
                0,
                RINGKV_CONSISTENCY_ALL,
                0,
                null_mut(),
            );
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        }
        let mut scan = null_mut();
        let r = ringkv_cluster_scan_new(
            c,
            bucket.as_ptr(),
            bucket.len(),
            2,
            RINGKV_CONSISTENCY_ALL,
            0,
            &mut scan,
        );
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let mut key: *const u8 = sentinel();
        let mut len = 77usize;
        let mut done: std::ffi::c_int = 5;
        // NULL scan and NULL outputs: refused, nothing consumed.
        assert_eq!(
            ringkv_scan_next(null_mut(), &mut key, &mut len, &mut done),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_scan_next: scan is NULL");
        assert_eq!(
            ringkv_scan_next(scan, null_mut(), &mut len, &mut done),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_scan_next: out_key is NULL");
        assert_eq!(
            ringkv_scan_next(scan, &mut key, null_mut(), &mut done),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_scan_next: out_key_len is NULL");
        assert_eq!(
            ringkv_scan_next(scan, &mut key, &mut len, null_mut()),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(last_error(), "ringkv_scan_next: out_done is NULL");
        assert_eq!((key, len, done), (sentinel::<u8>() as *const u8, 77, 5));
        assert_eq!(ringkv_scan_count(scan), 0);
        assert_eq!(ringkv_scan_count(null()), 0);
        // All three keys, once each, across pages of 2.
        let mut seen = Vec::new();
        loop {
            let r = ringkv_scan_next(scan, &mut key, &mut len, &mut done);
            assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
            if done != 0 {
                break;
            }
            seen.push(std::slice::from_raw_parts(key, len).to_vec());
            assert!(seen.len() <= 3, "more keys than written: {seen:?}");
        }
        seen.sort();
        assert_eq!(seen, vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
        assert_eq!(ringkv_scan_count(scan), 3);
        // After the end: done again and again, the count unchanged.
        for _ in 0..3 {
            done = 0;
            assert_eq!(
                ringkv_scan_next(scan, &mut key, &mut len, &mut done),
                ringkv_result::RINGKV_OK
            );
            assert_eq!(done, 1);
        }
        assert_eq!(ringkv_scan_count(scan), 3);
        ringkv_scan_free(scan);
        ringkv_scan_free(null_mut());
    }
}

#[test]
fn a_closed_clients_batches_and_scans_give_closed() {
    let (tcp, addrs) = tcp_cluster(1);
    let (kp, kl) = arrays(&[b"a"]);
    // SAFETY: every pointer is a valid local or a live handle; each handle
    // freed once, the scan before its client, the client before its
    // cluster.
    unsafe {
        let mut client = null_mut();
        let r = ringkv_client_new(ringkv_buf_data(addrs).cast(), &mut client);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        let mut scan = null_mut();
        let r = ringkv_client_scan_new(client, B.as_ptr(), B.len(), 0, 0, 0, &mut scan);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
        assert_eq!(ringkv_client_close(client), ringkv_result::RINGKV_OK);

        let mut out: *mut ringkv_batch = sentinel();
        let r = ringkv_client_multi_get(
            client,
            B.as_ptr(),
            B.len(),
            kp.as_ptr(),
            kl.as_ptr(),
            1,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_CLOSED,
            "ringkv_client_multi_get",
            "",
            out,
        );
        let r = ringkv_client_multi_put(
            client,
            B.as_ptr(),
            B.len(),
            kp.as_ptr(),
            kl.as_ptr(),
            kp.as_ptr(),
            kl.as_ptr(),
            null(),
            null(),
            1,
            0,
            0,
            &mut out,
        );
        refused(
            r,
            ringkv_result::RINGKV_CLOSED,
            "ringkv_client_multi_put",
            "",
            out,
        );
        // A scan made before the close fails on its first page, and again
        // (nothing is lost: a retry asks for the same page).
        let mut key: *const u8 = sentinel();
        let mut len = 77usize;
        let mut done: std::ffi::c_int = 5;
        for _ in 0..2 {
            let r = ringkv_scan_next(scan, &mut key, &mut len, &mut done);
            assert_eq!(r, ringkv_result::RINGKV_CLOSED, "{}", last_error());
            assert!(last_error().starts_with("ringkv_scan_next: "));
            assert_eq!((key, len, done), (sentinel::<u8>() as *const u8, 77, 5));
        }
        assert_eq!(ringkv_scan_count(scan), 0);
        ringkv_scan_free(scan);
        ringkv_client_free(client);
        ringkv_buf_free(addrs);
        ringkv_cluster_free(tcp);
    }
}
