//! Encode and decode per wire message: ringkv's codec against `ciborium`.
//!
//! Both sides get the same Rust values and produce the same bytes (proved
//! by `tests/codec_golden.rs`), so the ratio of their times is the cost of
//! the codec ringkv uses against an independent serde CBOR implementation.
//!
//! - encode: value -> a fresh `Vec<u8>` (both start with 64 bytes of
//!   capacity, as `ringkv::codec::encode` does).
//! - decode: a whole frame slice -> owned value. ringkv's decode also checks
//!   the frame limit and rejects trailing bytes; ciborium's `from_reader`
//!   does neither, so it does slightly less work.
//!
//! Run: `cargo bench -p ringkv-bench --bench codec`. See
//! `docs/benchmarks.md` for results.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringkv::codec;
use ringkv::config::DEFAULT_MAX_FRAME_BYTES;
use ringkv::message::{Envelope, Handshake};
use ringkv_bench::workload;
use serde::{de::DeserializeOwned, Serialize};

fn ciborium_encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    ciborium::ser::into_writer(value, &mut out).expect("ciborium encodes a wire value");
    out
}

fn ciborium_decode<T: DeserializeOwned>(bytes: &[u8]) -> T {
    ciborium::de::from_reader(bytes).expect("ciborium decodes a wire frame")
}

/// Adds encode and decode benchmarks of `value`, for both codecs, under
/// `name`.
fn bench_value<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value).expect("ringkv encodes a wire value");
    // The comparison only means something if both produce the same frame.
    assert_eq!(ciborium_encode(value), bytes, "{name}: the codecs differ");
    let frame_bytes = bytes.len() as u64;

    let mut encode = c.benchmark_group("encode");
    encode.throughput(Throughput::Bytes(frame_bytes));
    encode.bench_with_input(BenchmarkId::new("ringkv", name), value, |b, v| {
        b.iter(|| codec::encode(black_box(v)).expect("encodes"))
    });
    encode.bench_with_input(BenchmarkId::new("ciborium", name), value, |b, v| {
        b.iter(|| ciborium_encode(black_box(v)))
    });
    encode.finish();

    let mut decode = c.benchmark_group("decode");
    decode.throughput(Throughput::Bytes(frame_bytes));
    decode.bench_with_input(BenchmarkId::new("ringkv", name), &bytes, |b, f| {
        b.iter(|| -> T { codec::decode(black_box(f), DEFAULT_MAX_FRAME_BYTES).expect("decodes") })
    });
    decode.bench_with_input(BenchmarkId::new("ciborium", name), &bytes, |b, f| {
        b.iter(|| -> T { ciborium_decode(black_box(f)) })
    });
    decode.finish();
}

fn wire_messages(c: &mut Criterion) {
    for len in workload::PING_PAYLOAD_SIZES {
        let env: Envelope = workload::ping_envelope(len);
        bench_value(c, &format!("ping_{len}B"), &env);
    }
    let hello: Handshake = workload::hello();
    bench_value(c, "hello", &hello);
    bench_value(c, "challenge", &workload::challenge());
}

criterion_group! {
    name = codec_benches;
    // Short runs: 20 benchmarks at about 3 s each. The machines are shared
    // and noisy anyway; the ratio in one run is what counts.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = wire_messages
}
criterion_main!(codec_benches);
