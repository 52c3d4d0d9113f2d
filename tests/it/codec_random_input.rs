//! The decoder against input it was not built for: random, mutated and
//! hostile frames.
//!
//! What this file proves, for `Envelope`, `Handshake` and `Message`:
//!
//! - **No panics, only `Error::Decode`.** Arbitrary bytes, and valid
//!   encodings damaged by bit flips, truncation, inserted bytes and splices
//!   of other frames, decode to a value or to `Error::Decode`; never a
//!   panic, never another kind of error.
//! - **Whatever decodes is a real value.** When damaged bytes still decode,
//!   the value re-encodes and decodes to itself, so nothing half-built
//!   escapes the decoder.
//! - **Bounded allocation.** No decode allocates more than a small multiple
//!   of its input (checked by a counting allocator on every random case),
//!   and a length prefix that claims gigabytes inside a small handshake
//!   frame is refused without allocating for the claim.
//! - **Round trip.** Any `Envelope` or `Handshake` encodes and decodes to
//!   itself, and `ciborium` decodes ringkv's bytes to the same value.
//!
//! Case counts (8,000 per damage property, 1,000 per round trip) keep the
//! whole file under a second of run time in the test profile on two cores.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use ringkv::codec;
use ringkv::config::HANDSHAKE_MAX_FRAME_BYTES;
use ringkv::message::{Envelope, Handshake, Message, NodeId, Refusal};
use ringkv::Error;
use serde::{de::DeserializeOwned, Serialize};

// ---------------------------------------------------------------------------
// A global allocator that records the largest single request made by the
// current thread while tracking is on. Thread-local, so tests running in
// parallel do not see each other's allocations.

struct PeakTrackingAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_request(size: usize) {
    // `try_with`: the allocator may be called while thread-locals are being
    // torn down, when `with` would panic.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// the bookkeeping touches only const-initialised thread-locals, which
// neither allocate nor re-enter the allocator.
unsafe impl GlobalAlloc for PeakTrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_request(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_request(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_request(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: PeakTrackingAllocator = PeakTrackingAllocator;

/// Runs `f` and returns its result with the largest single allocation it
/// requested on this thread.
fn largest_allocation_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    (result, PEAK.with(|p| p.get()))
}

#[test]
fn the_allocation_tracker_sees_allocations() {
    let (v, peak) = largest_allocation_during(|| vec![0u8; 100_000]);
    assert_eq!(v.len(), 100_000);
    assert!(peak >= 100_000, "peak {peak}");
    let ((), peak) = largest_allocation_during(|| ());
    assert_eq!(peak, 0);
}

// ---------------------------------------------------------------------------
// Strategies for valid values.

/// Node ids and sequence numbers: small ones, boundaries of the CBOR
/// integer widths, and anything.
fn integer() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..30u64,
        prop::sample::select(vec![
            23,
            24,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..30), vec(any::<u8>(), 0..600)]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (integer(), payload()).prop_map(|(seq, payload)| Message::Ping { seq, payload }),
        (integer(), payload()).prop_map(|(seq, payload)| Message::Pong { seq, payload }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (integer(), integer(), message())
        .prop_map(|(from, to, msg)| Envelope::new(NodeId(from), NodeId(to), msg))
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9.:-]{0,30}", any::<String>()]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(expected, got)| Refusal::VersionMismatch { expected, got }),
        (text(), text()).prop_map(|(expected, got)| Refusal::ClusterMismatch { expected, got }),
        Just(Refusal::BadSecret),
        (integer(), integer()).prop_map(|(e, g)| Refusal::UnexpectedNode {
            expected: NodeId(e),
            got: NodeId(g),
        }),
        Just(Refusal::SelfConnect),
        integer().prop_map(|n| Refusal::NotCertified { node: NodeId(n) }),
        Just(Refusal::AlreadyConnected),
        Just(Refusal::SimultaneousConnect),
        text().prop_map(Refusal::Malformed),
        Just(Refusal::ShuttingDown),
    ]
}

fn handshake() -> impl Strategy<Value = Handshake> {
    let bytes = || vec(any::<u8>(), 0..40);
    prop_oneof![
        (any::<u32>(), text(), integer(), text(), integer(), bytes()).prop_map(
            |(version, cluster, node, listen, incarnation, nonce)| Handshake::Hello {
                version,
                cluster,
                node: NodeId(node),
                listen,
                incarnation,
                nonce,
            }
        ),
        (any::<u32>(), text(), integer(), integer(), bytes(), bytes()).prop_map(
            |(version, cluster, node, incarnation, nonce, proof)| Handshake::Challenge {
                version,
                cluster,
                node: NodeId(node),
                incarnation,
                nonce,
                proof,
            }
        ),
        bytes().prop_map(|proof| Handshake::Proof { proof }),
        Just(Handshake::Welcome),
        refusal().prop_map(|reason| Handshake::Refuse { reason }),
    ]
}

/// The encoding of a random envelope or handshake.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        envelope().prop_map(|e| codec::encode(&e).unwrap()),
        handshake().prop_map(|h| codec::encode(&h).unwrap()),
    ]
}

// ---------------------------------------------------------------------------
// Damage.

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    /// Replaces `len` bytes at `at` with a piece of another valid frame, so
    /// that well-formed CBOR items land where others were expected.
    Splice {
        at: Index,
        len: usize,
        donor: Vec<u8>,
        from: Index,
        take: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 0..16usize, valid_frame(), any::<Index>(), 1..64usize).prop_map(
            |(at, len, donor, from, take)| Mutation::Splice { at, len, donor, from, take }
        ),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::FlipBit(i, bit) => {
            if !bytes.is_empty() {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
        }
        Mutation::Truncate(i) => {
            let cut = i.index(bytes.len() + 1);
            bytes.truncate(cut);
        }
        Mutation::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.insert(at, *b);
        }
        Mutation::Splice {
            at,
            len,
            donor,
            from,
            take,
        } => {
            let at = at.index(bytes.len() + 1);
            let end = (at + len).min(bytes.len());
            let start = from.index(donor.len() + 1);
            let stop = (start + take).min(donor.len());
            bytes.splice(at..end, donor[start..stop].iter().copied());
        }
    }
}

// ---------------------------------------------------------------------------
// What must hold for any input.

const MAX_FRAME: usize = 1 << 20;

/// Decodes `bytes` as a `T`: it must be a value that survives its own round
/// trip, or `Error::Decode`.
fn decodes_to_value_or_decode_error<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    match codec::decode::<T>(bytes, MAX_FRAME) {
        Ok(value) => {
            let again = codec::encode(&value)
                .map_err(|e| TestCaseError::fail(format!("{value:?} does not re-encode: {e}")))?;
            let back: T = codec::decode(&again, MAX_FRAME)
                .map_err(|e| TestCaseError::fail(format!("{value:?} does not round-trip: {e}")))?;
            prop_assert_eq!(back, value);
        }
        Err(Error::Decode { .. }) => {}
        Err(other) => prop_assert!(false, "expected Error::Decode, got {other:?}"),
    }
    Ok(())
}

/// serde's cap on what it preallocates for a sequence of any element type.
const SERDE_PREALLOC_CAP: usize = 1024 * 1024;

/// Decodes `bytes` as each wire type, and checks that no single allocation
/// of a decode exceeds a fixed cap plus a small multiple of the input. The
/// bound: every byte of output comes from a byte of input, growing vectors
/// may double, and serde preallocates at most 1 MiB for a sequence
/// (`serde::de::size_hint::cautious`), whatever its length prefix claims.
/// That cap is reached by a few bytes when the elements are large (12
/// bytes claiming 1,280 elements of a 56-byte type made a 70 KiB
/// allocation; the case is kept in the regressions file), so it is the
/// cap, not the input, that bounds a lying length prefix.
fn decode_as_every_type(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, peak) = largest_allocation_during(|| {
        decodes_to_value_or_decode_error::<Envelope>(bytes)?;
        decodes_to_value_or_decode_error::<Handshake>(bytes)?;
        decodes_to_value_or_decode_error::<Message>(bytes)
    });
    result?;
    let bound = SERDE_PREALLOC_CAP + 8 * bytes.len();
    prop_assert!(
        peak <= bound,
        "{} input bytes made an allocation of {peak} bytes (bound {bound})",
        bytes.len()
    );
    Ok(())
}

/// `cases` cases; a failing case is saved beside this file (in
/// `codec_random_input.proptest-regressions`) and replayed first next time.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(8_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        decode_as_every_type(&bytes)?;
    }

    /// Random bytes behind a valid map header and key, so that the
    /// decoder gets past the first byte and into field parsing.
    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        prefix in prop::sample::select(vec![
            // {"from": ...
            &[0xa3, 0x64, b'f', b'r', b'o', b'm'][..],
            // {"Hello": {...
            &[0xa1, 0x65, b'H', b'e', b'l', b'l', b'o', 0xa5][..],
            // {"from": 1, "to": 2, "msg": {"Ping": {"seq": ...
            &[0xa3, 0x64, b'f', b'r', b'o', b'm', 0x01, 0x62, b't', b'o', 0x02,
              0x63, b'm', b's', b'g', 0xa1, 0x64, b'P', b'i', b'n', b'g', 0xa2,
              0x63, b's', b'e', b'q'][..],
        ]),
        tail in vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend_from_slice(&tail);
        decode_as_every_type(&bytes)?;
    }

    #[test]
    fn damaged_frames_never_panic(
        frame in valid_frame(),
        mutations in vec(mutation(), 1..6),
    ) {
        let mut bytes = frame;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_as_every_type(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn every_envelope_round_trips(env in envelope()) {
        let bytes = codec::encode(&env).unwrap();
        let back: Envelope = codec::decode(&bytes, MAX_FRAME).unwrap();
        prop_assert_eq!(&back, &env);
        let theirs: Envelope = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        prop_assert_eq!(&theirs, &env);
        // A frame cut in half never decodes to something else. (Every cut
        // of one frame is checked in src/codec.rs.)
        let cut = bytes.len() / 2;
        prop_assert!(codec::decode::<Envelope>(&bytes[..cut], MAX_FRAME).is_err());
    }

    #[test]
    fn every_handshake_round_trips(hs in handshake()) {
        let bytes = codec::encode(&hs).unwrap();
        let back: Handshake = codec::decode(&bytes, MAX_FRAME).unwrap();
        prop_assert_eq!(&back, &hs);
        let theirs: Handshake = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        prop_assert_eq!(&theirs, &hs);
    }
}

// ---------------------------------------------------------------------------
// Hostile length prefixes in handshake frames. `src/codec.rs` covers an
// envelope field and a bare array; these are the frames an unauthenticated
// peer can send first.

/// Big-endian argument bytes for a CBOR header claiming 2^63 items.
const HUGE_8: [u8; 8] = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

fn hello_prefix() -> Vec<u8> {
    // {"Hello": {"version": 1, "cluster": ...
    let mut b = vec![0xa1, 0x65];
    b.extend_from_slice(b"Hello");
    b.extend_from_slice(&[0xa5, 0x67]);
    b.extend_from_slice(b"version");
    b.extend_from_slice(&[0x01, 0x67]);
    b.extend_from_slice(b"cluster");
    b
}

fn hostile_handshakes() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = Vec::new();

    // cluster: a text string claiming 2^63 bytes, then 4 bytes.
    let mut b = hello_prefix();
    b.push(0x7b);
    b.extend_from_slice(&HUGE_8);
    b.extend_from_slice(b"prod");
    cases.push(("text claiming 2^63 bytes", b));

    // cluster: a text string claiming 4 GiB - 1.
    let mut b = hello_prefix();
    b.extend_from_slice(&[0x7a, 0xff, 0xff, 0xff, 0xff]);
    b.extend_from_slice(b"prod");
    cases.push(("text claiming 4 GiB", b));

    // A complete-looking Hello whose nonce claims 4 GiB - 1 bytes.
    let mut b = hello_prefix();
    b.extend_from_slice(&[0x64, b'p', b'r', b'o', b'd', 0x64]);
    b.extend_from_slice(b"node");
    b.extend_from_slice(&[0x07, 0x66]);
    b.extend_from_slice(b"listen");
    b.extend_from_slice(&[0x60, 0x65]);
    b.extend_from_slice(b"nonce");
    b.extend_from_slice(&[0x5a, 0xff, 0xff, 0xff, 0xff, 0x11, 0x11]);
    cases.push(("nonce bytes claiming 4 GiB", b));

    // The same nonce as an array claiming 2^63 integers.
    let mut b = hello_prefix();
    b.extend_from_slice(&[0x64, b'p', b'r', b'o', b'd', 0x64]);
    b.extend_from_slice(b"node");
    b.extend_from_slice(&[0x07, 0x66]);
    b.extend_from_slice(b"listen");
    b.extend_from_slice(&[0x60, 0x65]);
    b.extend_from_slice(b"nonce");
    b.push(0x9b);
    b.extend_from_slice(&HUGE_8);
    b.extend_from_slice(&[0x01, 0x02, 0x03]);
    cases.push(("nonce array claiming 2^63 items", b));

    // {"Challenge": {"proof": bytes claiming 2^64 - 1}}
    let mut b = vec![0xa1, 0x69];
    b.extend_from_slice(b"Challenge");
    b.extend_from_slice(&[0xa1, 0x65]);
    b.extend_from_slice(b"proof");
    b.extend_from_slice(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    cases.push(("proof claiming 2^64 - 1 bytes", b));

    // {"Hello": map claiming 2^63 pairs, one given}
    let mut b = vec![0xa1, 0x65];
    b.extend_from_slice(b"Hello");
    b.push(0xbb);
    b.extend_from_slice(&HUGE_8);
    b.extend_from_slice(&[0x67]);
    b.extend_from_slice(b"version");
    b.push(0x01);
    cases.push(("map claiming 2^63 pairs", b));

    // {"Hello": array claiming 2^63 fields}: serde also accepts a struct
    // as an array of its fields, so this path must be bounded too.
    let mut b = vec![0xa1, 0x65];
    b.extend_from_slice(b"Hello");
    b.push(0x9b);
    b.extend_from_slice(&HUGE_8);
    b.push(0x01);
    cases.push(("struct as array claiming 2^63 fields", b));

    // {"Refuse": {"reason": {"Malformed": text claiming 2^63 bytes}}}
    let mut b = vec![0xa1, 0x66];
    b.extend_from_slice(b"Refuse");
    b.extend_from_slice(&[0xa1, 0x66]);
    b.extend_from_slice(b"reason");
    b.extend_from_slice(&[0xa1, 0x69]);
    b.extend_from_slice(b"Malformed");
    b.push(0x7b);
    b.extend_from_slice(&HUGE_8);
    b.extend_from_slice(b"why");
    cases.push(("refusal text claiming 2^63 bytes", b));

    cases
}

#[test]
fn huge_length_prefixes_in_handshakes_are_errors_without_allocation() {
    for (what, bytes) in hostile_handshakes() {
        assert!(bytes.len() < 64, "{what}: the frame itself is small");
        let (result, peak) = largest_allocation_during(|| {
            codec::decode::<Handshake>(&bytes, HANDSHAKE_MAX_FRAME_BYTES)
        });
        match result {
            Err(Error::Decode {
                what: "Handshake", ..
            }) => {}
            other => panic!("{what}: expected a Handshake decode error, got {other:?}"),
        }
        // serde caps what it reserves from a length prefix at a few KiB;
        // anything near the claimed size would be far above this.
        assert!(peak <= 16 * 1024, "{what}: allocated {peak} bytes");
    }
}
