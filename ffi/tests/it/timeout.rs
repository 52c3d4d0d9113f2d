//! Timeouts per client and per call (issue [16]): a call whose node goes
//! silent or dies returns within the bound its documentation gives (plus
//! slack for a busy machine), not after 10 s as once seen.
//!
//! Through the C ABI from Rust: an embedded 3-node cluster over TCP whose
//! node 1 is paused (its thread frozen, as SIGSTOP would) or killed, the
//! client connected to it; and a listener that accepts and never answers,
//! for the connect timeout.

use std::ffi::CString;
use std::ptr::null_mut;
use std::time::{Duration, Instant};

use ringkv_ffi::*;

/// What a busy machine may add to a bound.
const SLACK: Duration = Duration::from_millis(750);

fn last_error() -> String {
    let mut buf = vec![0 as std::ffi::c_char; 1024];
    let mut len = 0;
    // SAFETY: buf holds 1024 bytes; len is writable.
    let r = unsafe { ringkv_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
    if r != ringkv_result::RINGKV_OK {
        return String::new();
    }
    String::from_utf8_lossy(&buf[..len].iter().map(|&c| c as u8).collect::<Vec<_>>()).into()
}

/// A client connected to `addrs` with these timeouts (ms).
fn connect(addrs: &str, connect_ms: u32, request_ms: u32) -> *mut ringkv_client {
    let addrs = CString::new(addrs).unwrap();
    let mut opts = null_mut();
    let mut client = null_mut();
    // SAFETY: valid pointers; opts freed once.
    unsafe {
        assert_eq!(
            ringkv_client_options_new(&mut opts),
            ringkv_result::RINGKV_OK
        );
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, connect_ms, request_ms),
            ringkv_result::RINGKV_OK
        );
        let r = ringkv_client_connect(addrs.as_ptr(), opts, &mut client);
        ringkv_client_options_free(opts);
        assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
    }
    client
}

/// A 3-node embedded cluster over TCP and its nodes' client addresses.
fn tcp_cluster() -> (*mut ringkv_cluster, Vec<String>) {
    let mut cluster = null_mut();
    let mut buf = null_mut();
    // SAFETY: valid pointers; buf freed once.
    unsafe {
        assert_eq!(
            ringkv_cluster_new(3, RINGKV_TRANSPORT_TCP, &mut cluster),
            ringkv_result::RINGKV_OK,
            "{}",
            last_error()
        );
        assert_eq!(
            ringkv_cluster_client_addrs(cluster, &mut buf),
            ringkv_result::RINGKV_OK
        );
        let text = std::slice::from_raw_parts(ringkv_buf_data(buf), ringkv_buf_len(buf));
        let addrs = String::from_utf8(text.to_vec())
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect();
        ringkv_buf_free(buf);
        (cluster, addrs)
    }
}

/// Runs `f`, returning its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let t = f();
    (t, start.elapsed())
}

fn get_object(client: *const ringkv_client, key: &[u8], timeout_ms: u32) -> ringkv_result {
    let mut object = null_mut();
    // SAFETY: valid pointers; the object freed once.
    unsafe {
        let r = ringkv_client_get_object(
            client,
            b"t".as_ptr(),
            1,
            key.as_ptr(),
            key.len(),
            RINGKV_CONSISTENCY_ONE,
            timeout_ms,
            &mut object,
        );
        ringkv_object_free(object);
        r
    }
}

fn put_ctx(client: *const ringkv_client, key: &[u8], timeout_ms: u32) -> ringkv_result {
    // SAFETY: valid pointers.
    unsafe {
        ringkv_client_put_ctx(
            client,
            b"t".as_ptr(),
            1,
            key.as_ptr(),
            key.len(),
            b"v".as_ptr(),
            1,
            std::ptr::null(),
            0,
            RINGKV_CONSISTENCY_ONE,
            timeout_ms,
            null_mut(),
        )
    }
}

#[test]
fn a_silent_node_costs_a_call_its_timeout_and_no_more() {
    let (cluster, addrs) = tcp_cluster();
    // Connected to node 1 only: no failover to hide the silence.
    let client = connect(&addrs[0], 1000, 1500);
    assert_eq!(get_object(client, b"k", 0), ringkv_result::RINGKV_OK);
    // SAFETY: cluster is live.
    let embedded = unsafe { &*cluster }.embedded();
    embedded.cluster().pause(1, 8000).expect("node 1 pauses");

    // The handle's request timeout, 1.5 s.
    let (r, took) = timed(|| get_object(client, b"k", 0));
    assert_eq!(r, ringkv_result::RINGKV_TIMEOUT, "{}", last_error());
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_millis(1500) + SLACK, "{took:?}");
    assert!(last_error().starts_with("ringkv_client_get_object: "));

    // A per-call timeout replaces it: 300 ms.
    let (r, took) = timed(|| get_object(client, b"k", 300));
    assert_eq!(r, ringkv_result::RINGKV_TIMEOUT, "{}", last_error());
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");

    // A write that was sent and not answered: its outcome is unknown.
    let (r, took) = timed(|| put_ctx(client, b"w", 400));
    assert_eq!(r, ringkv_result::RINGKV_OUTCOME_UNKNOWN, "{}", last_error());
    assert!(took < Duration::from_millis(400) + SLACK, "{took:?}");

    // The old calls are bounded by the handle's timeout per request.
    let mut buf = null_mut();
    let (r, took) = timed(|| {
        // SAFETY: valid pointers.
        unsafe { ringkv_client_get(client, b"t".as_ptr(), 1, b"k".as_ptr(), 1, 1, &mut buf) }
    });
    assert_eq!(r, ringkv_result::RINGKV_TIMEOUT, "{}", last_error());
    assert!(took < Duration::from_millis(1500) + SLACK, "{took:?}");
    assert!(buf.is_null());
    // SAFETY: each handle freed once, the client before its cluster.
    unsafe {
        ringkv_client_free(client);
        ringkv_cluster_free(cluster);
    }
}

#[test]
fn a_killed_node_fails_over_or_fails_within_the_bound() {
    let (cluster, addrs) = tcp_cluster();
    let only_node_1 = connect(&addrs[0], 1000, 2000);
    let any_node = connect(&addrs.join(","), 1000, 2000);
    assert_eq!(put_ctx(any_node, b"k", 0), ringkv_result::RINGKV_OK);
    assert_eq!(get_object(only_node_1, b"k", 0), ringkv_result::RINGKV_OK);
    assert_eq!(get_object(any_node, b"k", 0), ringkv_result::RINGKV_OK);
    // SAFETY: cluster is live.
    let embedded = unsafe { &*cluster }.embedded();
    embedded.cluster().kill(1).expect("node 1 dies");

    // With nowhere else to go: an error, within the request timeout.
    let (r, took) = timed(|| get_object(only_node_1, b"k", 0));
    assert!(
        matches!(
            r,
            ringkv_result::RINGKV_CONNECTION | ringkv_result::RINGKV_TIMEOUT
        ),
        "{r:?}: {}",
        last_error()
    );
    assert!(took < Duration::from_millis(2000) + SLACK, "{took:?}");

    // With other nodes: the read fails over and succeeds, in time.
    let (r, took) = timed(|| get_object(any_node, b"k", 0));
    assert_eq!(r, ringkv_result::RINGKV_OK, "{}", last_error());
    assert!(took < Duration::from_millis(2000) + SLACK, "{took:?}");
    // SAFETY: each handle freed once, the clients before their cluster.
    unsafe {
        ringkv_client_free(only_node_1);
        ringkv_client_free(any_node);
        ringkv_cluster_free(cluster);
    }
}

#[test]
fn a_listener_that_never_answers_costs_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept, hold, never answer.
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok((c, _)) = listener.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        conns.len()
    });
    let c_addr = CString::new(addr).unwrap();
    let mut opts = null_mut();
    let mut client = null_mut();
    // SAFETY: valid pointers; opts freed once; client stays NULL.
    let (r, took) = unsafe {
        assert_eq!(
            ringkv_client_options_new(&mut opts),
            ringkv_result::RINGKV_OK
        );
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, 400, 0),
            ringkv_result::RINGKV_OK
        );
        let out = timed(|| ringkv_client_connect(c_addr.as_ptr(), opts, &mut client));
        ringkv_client_options_free(opts);
        out
    };
    assert_ne!(r, ringkv_result::RINGKV_OK);
    assert!(
        matches!(
            r,
            ringkv_result::RINGKV_CONNECTION | ringkv_result::RINGKV_TIMEOUT
        ),
        "{r:?}: {}",
        last_error()
    );
    assert!(last_error().starts_with("ringkv_client_connect: "));
    assert!(took < Duration::from_millis(400) + SLACK, "{took:?}");
    assert!(client.is_null());
    assert!(held.join().unwrap() >= 1, "the client never connected");
}

#[test]
fn timeout_setters_check_their_arguments() {
    let mut opts = null_mut();
    // SAFETY: valid pointers; opts freed once.
    unsafe {
        assert_eq!(
            ringkv_client_options_new(&mut opts),
            ringkv_result::RINGKV_OK
        );
        assert_eq!(
            ringkv_client_options_set_timeout_ms(null_mut(), 1, 1),
            ringkv_result::RINGKV_NULL_ARGUMENT
        );
        assert_eq!(
            last_error(),
            "ringkv_client_options_set_timeout_ms: options is NULL"
        );
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, 250, 750),
            ringkv_result::RINGKV_OK
        );
        let set = (*opts).settings().timeouts();
        assert_eq!(
            set,
            (Duration::from_millis(250), Duration::from_millis(750))
        );
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, RINGKV_MAX_TIMEOUT_MS + 1, 1),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("connect_timeout_ms"));
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, 1, RINGKV_MAX_TIMEOUT_MS + 1),
            ringkv_result::RINGKV_INVALID_ARGUMENT
        );
        assert!(last_error().contains("request_timeout_ms"));
        // Unchanged by the refusals.
        assert_eq!((*opts).settings().timeouts(), set);
        // 0 is the default of each.
        assert_eq!(
            ringkv_client_options_set_timeout_ms(opts, 0, 0),
            ringkv_result::RINGKV_OK
        );
        assert_eq!(
            (*opts).settings().timeouts(),
            (
                Duration::from_millis(u64::from(RINGKV_DEFAULT_CONNECT_TIMEOUT_MS)),
                Duration::from_millis(u64::from(RINGKV_DEFAULT_TIMEOUT_MS))
            )
        );
        ringkv_client_options_free(opts);
    }
}

#[test]
fn an_embedded_cluster_call_keeps_its_own_timeout_when_a_node_is_frozen() {
    let (cluster, _) = tcp_cluster();
    // SAFETY: cluster is live.
    let embedded = unsafe { &*cluster }.embedded();
    embedded.cluster().pause(1, 6000).expect("node 1 pauses");
    // Requests go through the nodes in turn: some through the frozen one.
    let mut timed_out = 0;
    for i in 0..6u8 {
        let key = [b'k', i];
        let mut object = null_mut();
        let (r, took) = timed(|| {
            // SAFETY: valid pointers.
            unsafe {
                ringkv_cluster_get_object(
                    cluster,
                    b"t".as_ptr(),
                    1,
                    key.as_ptr(),
                    key.len(),
                    RINGKV_CONSISTENCY_ONE,
                    300,
                    &mut object,
                )
            }
        });
        // SAFETY: NULL or an object of this call, freed once.
        unsafe { ringkv_object_free(object) };
        assert!(
            matches!(r, ringkv_result::RINGKV_OK | ringkv_result::RINGKV_TIMEOUT),
            "{r:?}: {}",
            last_error()
        );
        if r == ringkv_result::RINGKV_TIMEOUT {
            timed_out += 1;
            assert!(last_error().starts_with("ringkv_cluster_get_object: "));
        }
        assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");
    }
    assert!(timed_out >= 1, "no request went through the frozen node");
    // SAFETY: freed once.
    unsafe { ringkv_cluster_free(cluster) };
}
