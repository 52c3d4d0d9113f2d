//! No `extern "C"` function panics on bad input: a panic hook counts every
//! panic in this process while each function is called with NULLs, empty
//! and oversized lengths, out-of-range numbers, and handles in odd states.
//! The boundary would turn a panic into `RINGKV_PANIC`; this test shows
//! the boundary is never needed for input (it exists for bugs).

use std::ffi::c_char;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};

use ringkv_ffi::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn bad_input_never_panics() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        eprintln!("panic: {info}");
    }));
    let mut results = Vec::new();
    let k = b"k";
    let mut buf: *mut ringkv_buf = null_mut();
    let mut set: *mut ringkv_set = null_mut();
    let mut v = 0i64;
    let mut cl = null_mut();
    // SAFETY: every non-NULL pointer is valid for its stated length, except
    // where a NULL is paired with a length, which the ABI must refuse
    // before reading.
    unsafe {
        assert_eq!(ringkv_cluster_new(1, 0, &mut cl), ringkv_result::RINGKV_OK);
        let mut opts = null_mut();
        assert_eq!(
            ringkv_client_options_new(&mut opts),
            ringkv_result::RINGKV_OK
        );
        results.push(ringkv_client_options_new(null_mut()));
        ringkv_client_options_free(null_mut());
        let lens = [0usize, 1, usize::MAX];
        let numbers = [0u32, 4, 5, 7, 8, u32::MAX];
        for &len in &lens {
            for &n in &numbers {
                results.push(ringkv_cluster_put(
                    cl,
                    null(),
                    len,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                ));
                results.push(ringkv_cluster_get(
                    cl,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                    &mut buf,
                ));
                results.push(ringkv_cluster_delete(cl, null(), len, null(), len, n));
                results.push(ringkv_cluster_counter_add(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    i64::MIN,
                    n,
                    &mut v,
                ));
                results.push(ringkv_cluster_counter_get(
                    cl,
                    null(),
                    len,
                    k.as_ptr(),
                    1,
                    n,
                    &mut v,
                ));
                results.push(ringkv_cluster_set_add(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                ));
                results.push(ringkv_cluster_set_remove(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                ));
                results.push(ringkv_cluster_set_members(
                    cl,
                    null(),
                    len,
                    k.as_ptr(),
                    1,
                    n,
                    &mut set,
                ));
                results.push(ringkv_cluster_set_bucket_policy(cl, null(), len, n));
                results.push(ringkv_client_put(
                    null(),
                    null(),
                    len,
                    null(),
                    len,
                    null(),
                    len,
                    n,
                ));
                results.push(ringkv_cluster_new(n, n, &mut null_mut()));
                let mut object = null_mut();
                results.push(ringkv_cluster_get_object(
                    cl,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                    n,
                    &mut object,
                ));
                results.push(ringkv_cluster_get_object(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    n,
                    n,
                    &mut object,
                ));
                ringkv_object_free(object);
                results.push(ringkv_cluster_put_ctx(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    null(),
                    len,
                    n,
                    n,
                    null_mut(),
                ));
                results.push(ringkv_cluster_put_ctx(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    n,
                    n,
                    &mut buf,
                ));
                results.push(ringkv_cluster_delete_ctx(
                    cl,
                    k.as_ptr(),
                    1,
                    k.as_ptr(),
                    1,
                    null(),
                    len,
                    n,
                    n,
                    null_mut(),
                ));
                results.push(ringkv_client_get_object(
                    null(),
                    null(),
                    len,
                    null(),
                    len,
                    n,
                    n,
                    &mut object,
                ));
                results.push(ringkv_client_put_ctx(
                    null(),
                    null(),
                    len,
                    null(),
                    len,
                    null(),
                    len,
                    null(),
                    len,
                    n,
                    n,
                    null_mut(),
                ));
                results.push(ringkv_client_delete_ctx(
                    null(),
                    null(),
                    len,
                    null(),
                    len,
                    null(),
                    len,
                    n,
                    n,
                    null_mut(),
                ));
                results.push(ringkv_object_value(null(), len, &mut null(), &mut 0));
                results.push(ringkv_object_context(null(), &mut null(), &mut 0));
                let _ = ringkv_object_count(null());
                let _ = ringkv_object_found(null());
                let ks = [k.as_ptr()];
                let ls = [len];
                let nulls = [null::<u8>()];
                let mut batch = null_mut();
                for count in [0, 1, len] {
                    results.push(ringkv_cluster_multi_get(
                        cl,
                        k.as_ptr(),
                        1,
                        ks.as_ptr(),
                        ls.as_ptr(),
                        count.min(1),
                        n,
                        n,
                        &mut batch,
                    ));
                    ringkv_batch_free(batch);
                    batch = null_mut();
                    results.push(ringkv_cluster_multi_get(
                        cl,
                        null(),
                        len,
                        null(),
                        null(),
                        count,
                        n,
                        n,
                        &mut batch,
                    ));
                    results.push(ringkv_cluster_multi_put(
                        cl,
                        k.as_ptr(),
                        1,
                        ks.as_ptr(),
                        ls.as_ptr(),
                        nulls.as_ptr(),
                        ls.as_ptr(),
                        ks.as_ptr(),
                        null(),
                        count.min(1),
                        n,
                        n,
                        &mut batch,
                    ));
                    results.push(ringkv_client_multi_get(
                        null(),
                        null(),
                        len,
                        null(),
                        null(),
                        count,
                        n,
                        n,
                        &mut batch,
                    ));
                    results.push(ringkv_client_multi_put(
                        null(),
                        null(),
                        len,
                        null(),
                        null(),
                        null(),
                        null(),
                        null(),
                        null(),
                        count,
                        n,
                        n,
                        null_mut(),
                    ));
                }
                ringkv_batch_free(batch);
                let _ = ringkv_batch_len(null());
                results.push(ringkv_batch_status(null(), len));
                results.push(ringkv_batch_object(null(), len, &mut null()));
                results.push(ringkv_batch_context(null(), len, &mut null(), &mut 0));
                results.push(ringkv_client_options_set_timeout_ms(opts, n, n));
                let mut copts = null_mut();
                results.push(ringkv_cluster_options_new(&mut copts));
                results.push(ringkv_cluster_options_set_engine(copts, n));
                results.push(ringkv_cluster_options_set_vnodes(copts, n));
                results.push(ringkv_cluster_options_set_replicas(copts, n, n, n));
                results.push(ringkv_cluster_options_set_replicas(null_mut(), n, n, n));
                results.push(ringkv_cluster_options_set_data_dir(copts, null()));
                results.push(ringkv_cluster_options_set_data_dir(null_mut(), null()));
                results.push(ringkv_cluster_options_set_engine(null_mut(), n));
                results.push(ringkv_cluster_options_set_vnodes(null_mut(), n));
                // No function: a callback would install the process-wide
                // subscriber (tests/c/log.c covers it).
                results.push(ringkv_cluster_options_set_log(copts, None, null_mut(), n));
                results.push(ringkv_cluster_options_set_log(
                    null_mut(),
                    None,
                    null_mut(),
                    n,
                ));
                results.push(ringkv_cluster_new_with(n, n, copts, null_mut()));
                results.push(ringkv_cluster_new_with(0, 0, copts, &mut null_mut()));
                ringkv_cluster_options_free(copts);
                let mut scan = null_mut();
                results.push(ringkv_cluster_scan_new(cl, null(), len, n, n, n, &mut scan));
                results.push(ringkv_cluster_scan_new(
                    cl,
                    k.as_ptr(),
                    1,
                    n,
                    n,
                    n,
                    &mut scan,
                ));
                results.push(ringkv_scan_next(scan, &mut null(), &mut 0, &mut 0));
                results.push(ringkv_scan_next(scan, null_mut(), &mut 0, &mut 0));
                results.push(ringkv_scan_next(null_mut(), &mut null(), &mut 0, &mut 0));
                let _ = ringkv_scan_count(scan);
                ringkv_scan_free(scan);
                results.push(ringkv_client_scan_new(
                    null(),
                    null(),
                    len,
                    n,
                    n,
                    n,
                    &mut null_mut(),
                ));
                results.push(ringkv_client_options_set_timeout_ms(null_mut(), n, n));
                results.push(ringkv_client_options_set_tls_ca_pem(
                    null_mut(),
                    null(),
                    len,
                ));
                results.push(ringkv_client_options_set_tls_ca_pem(opts, null(), len));
                results.push(ringkv_client_options_set_tls_ca_pem(
                    opts,
                    k.as_ptr(),
                    len.min(1),
                ));
                results.push(ringkv_client_options_set_credentials(opts, null(), null()));
                results.push(ringkv_client_options_set_server_name(opts, null()));
                results.push(ringkv_client_options_set_tls_ca_file(opts, null()));
                results.push(ringkv_client_connect(null(), opts, &mut null_mut()));
                results.push(ringkv_set_member(null(), len, &mut null(), &mut 0));
                let mut text = [0 as c_char; 4];
                results.push(ringkv_last_error(text.as_mut_ptr(), len.min(4), &mut 0));
                let _ = ringkv_result_name(n);
            }
        }
        // Large numbers and both counter extremes are answered, not panicked on.
        let b = b"counts";
        results.push(ringkv_cluster_set_bucket_policy(
            cl,
            b.as_ptr(),
            b.len(),
            RINGKV_POLICY_PNCOUNTER,
        ));
        results.push(ringkv_cluster_counter_add(
            cl,
            b.as_ptr(),
            b.len(),
            k.as_ptr(),
            1,
            i64::MAX,
            0,
            &mut v,
        ));
        results.push(ringkv_cluster_counter_add(
            cl,
            b.as_ptr(),
            b.len(),
            k.as_ptr(),
            1,
            i64::MAX,
            0,
            &mut v,
        ));
        results.push(ringkv_cluster_counter_add(
            cl,
            b.as_ptr(),
            b.len(),
            k.as_ptr(),
            1,
            i64::MIN,
            0,
            &mut v,
        ));
        results.push(ringkv_client_new(
            c"not an address".as_ptr(),
            &mut null_mut(),
        ));
        results.push(ringkv_client_new(
            c"127.0.0.1:99999".as_ptr(),
            &mut null_mut(),
        ));
        // Odd option values: names that are no names, a directory as a
        // CA file, a server name without a CA, text where PEM should be.
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        results.push(ringkv_client_options_set_tls_ca_pem(
            opts,
            pem.as_ptr(),
            pem.len(),
        ));
        results.push(ringkv_client_options_set_tls_ca_file(opts, c"/".as_ptr()));
        results.push(ringkv_client_options_set_tls_ca_file(
            opts,
            c"/dev/null".as_ptr(),
        ));
        results.push(ringkv_client_options_set_server_name(opts, c"".as_ptr()));
        results.push(ringkv_client_options_set_server_name(
            opts,
            c"[::1]:x y".as_ptr(),
        ));
        results.push(ringkv_client_connect(
            c"127.0.0.1:99999".as_ptr(),
            opts,
            &mut null_mut(),
        ));
        results.push(ringkv_client_connect(
            c"not an address".as_ptr(),
            null(),
            &mut null_mut(),
        ));
        ringkv_client_options_free(opts);
        ringkv_cluster_free(cl);
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a function panicked");
    assert!(
        !results.contains(&ringkv_result::RINGKV_PANIC),
        "a call returned RINGKV_PANIC"
    );
    // And the calls did fail where they should: most inputs above are bad.
    assert!(
        results
            .iter()
            .filter(|r| **r != ringkv_result::RINGKV_OK)
            .count()
            > results.len() / 2
    );
}
