//! Golden byte vectors: the wire format of every type in `src/message.rs`,
//! written out byte by byte.
//!
//! Each vector below was checked by hand against RFC 8949 and is annotated
//! item by item (`a3` = map of 3 pairs, `64 66726f6d` = text "from", `40` =
//! empty byte string, `58 18` = byte string of 24 bytes, ...). For each one
//! this file proves four things:
//!
//! 1. `ringkv::codec::encode(&value)` produces exactly these bytes;
//! 2. `ringkv::codec::decode(bytes)` gives back exactly `value`;
//! 3. `ciborium`, an independent CBOR implementation, decodes the bytes to
//!    the same `value` ...
//! 4. ... and re-encodes that value to the identical bytes.
//!
//! (3) and (4) are what make swapping `serde_cbor` for another serde CBOR
//! crate safe: if the replacement passes this file, no node can tell. If a
//! vector here has to change, the wire format changed, and
//! `PROTOCOL_VERSION` must be raised.
//!
//! The format has no CBOR arrays at all (structs are maps keyed by field
//! name, enums are externally tagged, byte fields are byte strings), and
//! every vector is also checked for that, so that a missing
//! `#[serde(with = "serde_bytes")]` (which would turn bytes into an array of
//! integers) cannot slip in. Messages that carry lists (gossip, rings,
//! replication) relax that to "arrays hold only maps", and replication also
//! allows version vectors (maps from node id to counter); see their sections.
//!
//! The last tests pin down what the decoders accept beyond the golden
//! bytes, which other implementations must accept too: unknown fields are
//! skipped (forward compatibility), field order does not matter, integers of
//! non-preferred width and byte fields sent as arrays of integers are
//! accepted; unknown enum variants and missing fields are errors.
//!
//! `src/message.rs` has a unit test that fails when a variant is added to
//! any of these types without a vector here.
//!
//! Protocol version 2 nests each subsystem's messages in `Message`
//! (`{"msg": {"Ring": {"Digest": {...}}}}` where version 1 had
//! `{"msg": {"RingDigest": {...}}}`); the vectors below were rewritten for
//! it by adding that one map level, the rest of each vector unchanged.

use std::fmt::Debug;

use ciborium::value::Value;
use ringkv::codec;
use ringkv::config::{DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES};
use ringkv::membership::{MembershipMsg, RingMsg};
use ringkv::message::{Envelope, Handshake, Message, NodeId, Refusal};
use ringkv::Error;
use serde::{de::DeserializeOwned, Serialize};

/// Parses a hex literal; whitespace is allowed anywhere, for grouping.
fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => panic!("not a lowercase hex digit: {:?}", b as char),
        })
        .collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {hex}"
    );
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails if `value` (a ciborium tree) contains a CBOR array anywhere.
fn assert_no_arrays(value: &Value, what: &str) {
    match value {
        Value::Array(_) => panic!("{what}: CBOR array in the encoding: {value:?}"),
        Value::Map(pairs) => {
            for (k, v) in pairs {
                assert!(k.is_text(), "{what}: map key is not text: {k:?}");
                assert_no_arrays(v, what);
            }
        }
        Value::Tag(_, inner) => assert_no_arrays(inner, what),
        _ => {}
    }
}

/// The four checks described at the top of the file, for one vector.
fn check<T>(value: T, golden_hex: &str, max: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let (tree, what) = round_trip(value, golden_hex, max);
    assert_no_arrays(&tree, &what);
}

/// The four checks of [`check`] without the shape check: answers the
/// vector's CBOR tree and the value's description, for a shape check.
fn round_trip<T>(value: T, golden_hex: &str, max: usize) -> (Value, String)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let golden = unhex(golden_hex);
    let what = format!("{value:?}");

    let encoded = codec::encode(&value).unwrap();
    assert_eq!(
        hex(&encoded),
        hex(&golden),
        "ringkv encodes {what} differently from the golden vector"
    );
    let decoded: T = codec::decode(&golden, max).unwrap();
    assert_eq!(decoded, value, "ringkv decodes the golden vector of {what}");

    let by_ciborium: T = ciborium::de::from_reader(golden.as_slice())
        .unwrap_or_else(|e| panic!("ciborium cannot decode the vector of {what}: {e}"));
    assert_eq!(by_ciborium, value, "ciborium decodes the vector of {what}");
    let mut reencoded = Vec::new();
    ciborium::ser::into_writer(&by_ciborium, &mut reencoded).unwrap();
    assert_eq!(
        hex(&reencoded),
        hex(&golden),
        "ciborium re-encodes {what} differently"
    );

    let tree: Value = ciborium::de::from_reader(golden.as_slice()).unwrap();
    (tree, what)
}

fn check_envelope(env: Envelope, golden_hex: &str) {
    check(env, golden_hex, DEFAULT_MAX_FRAME_BYTES);
}

/// Handshake frames must also fit the small handshake frame limit.
fn check_handshake(hs: Handshake, golden_hex: &str) {
    check(hs, golden_hex, HANDSHAKE_MAX_FRAME_BYTES);
}

fn ping(from: u64, to: u64, seq: u64, payload: &[u8]) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Ping {
            seq,
            payload: payload.to_vec(),
        },
    )
}

fn pong(from: u64, to: u64, seq: u64, payload: &[u8]) -> Envelope {
    Envelope::new(
        NodeId(from),
        NodeId(to),
        Message::Pong {
            seq,
            payload: payload.to_vec(),
        },
    )
}

/// The 256 bytes 00, 01, ..., ff, as the golden vectors spell them.
const BYTES_00_TO_FF: &str = "
    000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f
    404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f
    606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f
    808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f
    a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf
    c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf
    e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

#[test]
fn unhex_reads_what_hex_writes() {
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(BYTES_00_TO_FF), all);
    assert_eq!(unhex(&hex(&all)), all);
}

#[test]
fn node_id_is_a_bare_unsigned_integer_of_preferred_width() {
    // Major type 0; the argument is inline up to 23, then 1, 2, 4 or 8
    // bytes, always the shortest that fits.
    check(NodeId(0), "00", 16);
    check(NodeId(23), "17", 16);
    check(NodeId(24), "18 18", 16);
    check(NodeId(255), "18 ff", 16);
    check(NodeId(256), "19 0100", 16);
    check(NodeId(65_535), "19 ffff", 16);
    check(NodeId(65_536), "1a 00010000", 16);
    check(NodeId(u32::MAX as u64), "1a ffffffff", 16);
    check(NodeId(u32::MAX as u64 + 1), "1b 0000000100000000", 16);
    check(NodeId(u64::MAX), "1b ffffffffffffffff", 16);
}

#[test]
fn envelope_ping_with_every_integer_width() {
    // a3                   map, 3 pairs
    //   64 66726f6d        "from"
    //   01                 1
    //   62 746f            "to"
    //   02                 2
    //   63 6d7367          "msg"
    //   a1                 map, 1 pair: the externally tagged variant
    //     64 50696e67      "Ping"
    //     a2               map, 2 pairs
    //       63 736571      "seq"
    //       00             0
    //       67 7061796c6f6164  "payload"
    //       40             byte string, empty
    check_envelope(
        ping(1, 2, 0, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 00 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, 23, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 17 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, 24, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 18 18 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, 500, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 19 01f4 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, 70_000, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 1a 00011170 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, 1 << 32, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 1b 0000000100000000 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(1, 2, u64::MAX, &[]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 1b ffffffffffffffff 67 7061796c6f6164 40",
    );
    // Node ids of every width in the envelope itself.
    check_envelope(
        ping(300, u64::MAX, 7, &[]),
        "a3 64 66726f6d 19 012c 62 746f 1b ffffffffffffffff 63 6d7367
            a1 64 50696e67 a2 63 736571 07 67 7061796c6f6164 40",
    );
    check_envelope(
        ping(0, 65_536, 7, &[]),
        "a3 64 66726f6d 00 62 746f 1a 00010000 63 6d7367
            a1 64 50696e67 a2 63 736571 07 67 7061796c6f6164 40",
    );
}

#[test]
fn envelope_ping_payloads_are_byte_strings_of_every_length_width() {
    // 3 bytes: 43 = byte string, length 3 inline.
    check_envelope(
        ping(1, 2, 9, b"abc"),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 43 616263",
    );
    // 23 bytes: the longest length that fits in the initial byte (57).
    check_envelope(
        ping(1, 2, 9, &[0xaa; 23]),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164
            57 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    // 24 bytes: 58 18, a one-byte length.
    let first_24: Vec<u8> = (0..24).collect();
    check_envelope(
        ping(1, 2, 9, &first_24),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164
            58 18 000102030405060708090a0b0c0d0e0f1011121314151617",
    );
}

#[test]
fn envelope_pong() {
    check_envelope(
        pong(2, 1, 0, &[]),
        "a3 64 66726f6d 02 62 746f 01 63 6d7367
            a1 64 506f6e67 a2 63 736571 00 67 7061796c6f6164 40",
    );
    check_envelope(
        pong(300, u64::MAX, 1 << 32, &(0..24).collect::<Vec<u8>>()),
        "a3 64 66726f6d 19 012c 62 746f 1b ffffffffffffffff 63 6d7367
            a1 64 506f6e67 a2 63 736571 1b 0000000100000000 67 7061796c6f6164
            58 18 000102030405060708090a0b0c0d0e0f1011121314151617",
    );
    // 256 bytes: 59 0100, a two-byte length.
    let all: Vec<u8> = (0..=255).collect();
    check_envelope(
        pong(1, 2, 255, &all),
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
                a1 64 506f6e67 a2 63 736571 18 ff 67 7061796c6f6164
                59 0100 {BYTES_00_TO_FF}"
        ),
    );
}

#[test]
fn envelope_payload_of_64_kib_has_a_four_byte_length() {
    // 65,536 bytes: 5a 00010000. Too long to spell out; the header is
    // checked here and the body is the payload itself.
    let payload = vec![0x5a; 65_536];
    let head = "a3 64 66726f6d 01 62 746f 02 63 6d7367
        a1 64 50696e67 a2 63 736571 01 67 7061796c6f6164 5a 00010000";
    let golden = format!("{head}{}", hex(&payload));
    check_envelope(ping(1, 2, 1, &payload), &golden);
}

#[test]
fn handshake_hello() {
    // a1 65 48656c6c6f         {"Hello":
    //   a6                       map, 6 pairs, in declaration order
    //     67 76657273696f6e 01   "version": 1
    //     67 636c7573746572 64 70726f64              "cluster": "prod"
    //     64 6e6f6465 07                             "node": 7
    //     66 6c697374656e 6e 3132372e302e302e313a37303030
    //                                                "listen": "127.0.0.1:7000"
    //     6b 696e6361726e6174696f6e 1b 0123456789abcdef
    //                                                "incarnation": 0x0123456789abcdef
    //     65 6e6f6e6365 58 20 11..11                 "nonce": 32 bytes
    check_handshake(
        Handshake::Hello {
            version: 1,
            cluster: "prod".into(),
            node: NodeId(7),
            listen: "127.0.0.1:7000".into(),
            incarnation: 0x0123_4567_89ab_cdef,
            nonce: vec![0x11; 32],
        },
        "a1 65 48656c6c6f a6
            67 76657273696f6e 01
            67 636c7573746572 64 70726f64
            64 6e6f6465 07
            66 6c697374656e 6e 3132372e302e302e313a37303030
            6b 696e6361726e6174696f6e 1b 0123456789abcdef
            65 6e6f6e6365 58 20 1111111111111111111111111111111111111111111111111111111111111111",
    );
    // A large version and node id, an empty cluster, listen and nonce: the
    // decoder itself does not enforce lengths; the handshake logic does.
    check_handshake(
        Handshake::Hello {
            version: u32::MAX,
            cluster: String::new(),
            node: NodeId(u64::MAX),
            listen: String::new(),
            incarnation: 0,
            nonce: vec![],
        },
        "a1 65 48656c6c6f a6
            67 76657273696f6e 1a ffffffff
            67 636c7573746572 60
            64 6e6f6465 1b ffffffffffffffff
            66 6c697374656e 60
            6b 696e6361726e6174696f6e 00
            65 6e6f6e6365 40",
    );
}

#[test]
fn handshake_challenge() {
    check_handshake(
        Handshake::Challenge {
            version: 1,
            cluster: "prod".into(),
            node: NodeId(8),
            incarnation: 300,
            nonce: vec![0x22; 32],
            proof: vec![0x33; 32],
        },
        "a1 69 4368616c6c656e6765 a6
            67 76657273696f6e 01
            67 636c7573746572 64 70726f64
            64 6e6f6465 08
            6b 696e6361726e6174696f6e 19 012c
            65 6e6f6e6365 58 20 2222222222222222222222222222222222222222222222222222222222222222
            65 70726f6f66 58 20 3333333333333333333333333333333333333333333333333333333333333333",
    );
}

#[test]
fn handshake_proof_and_welcome() {
    check_handshake(
        Handshake::Proof {
            proof: vec![0x44; 32],
        },
        "a1 65 50726f6f66 a1
            65 70726f6f66 58 20 4444444444444444444444444444444444444444444444444444444444444444",
    );
    // A unit variant is just its name as a text string, not a map.
    check_handshake(Handshake::Welcome, "67 57656c636f6d65");
}

/// Every refusal, with its golden vector when it stands alone (the part
/// after `a1 66 726561736f6e` in a `Handshake::Refuse`).
fn refusals() -> Vec<(Refusal, &'static str)> {
    vec![
        (
            Refusal::VersionMismatch {
                expected: 1,
                got: 2,
            },
            // {"VersionMismatch": {"expected": 1, "got": 2}}
            "a1 6f 56657273696f6e4d69736d61746368 a2
                68 6578706563746564 01 63 676f74 02",
        ),
        (
            Refusal::ClusterMismatch {
                expected: "prod".into(),
                got: "staging-cluster-eu-west-1-b".into(),
            },
            // The 27-character name needs a one-byte length: 78 1b.
            "a1 6f 436c75737465724d69736d61746368 a2
                68 6578706563746564 64 70726f64
                63 676f74 78 1b 73746167696e672d636c75737465722d65752d776573742d312d62",
        ),
        (Refusal::BadSecret, "69 426164536563726574"),
        (
            Refusal::UnexpectedNode {
                expected: NodeId(3),
                got: NodeId(1000),
            },
            "a1 6e 556e65787065637465644e6f6465 a2
                68 6578706563746564 03 63 676f74 19 03e8",
        ),
        (Refusal::SelfConnect, "6b 53656c66436f6e6e656374"),
        (
            Refusal::NotCertified { node: NodeId(7) },
            // {"NotCertified": {"node": 7}}
            "a1 6c 4e6f74436572746966696564 a1 64 6e6f6465 07",
        ),
        (
            Refusal::AlreadyConnected,
            "70 416c7265616479436f6e6e6563746564",
        ),
        (
            Refusal::SimultaneousConnect,
            "73 53696d756c74616e656f7573436f6e6e656374",
        ),
        (
            // A newtype variant: {"Malformed": "..."}, no inner map.
            Refusal::Malformed("nonce is 31 bytes, expected 32".into()),
            "a1 69 4d616c666f726d6564
                78 1e 6e6f6e63652069732033312062797465732c206578706563746564203332",
        ),
        (Refusal::ShuttingDown, "6c 5368757474696e67446f776e"),
    ]
}

#[test]
fn every_refusal_alone() {
    for (refusal, golden) in refusals() {
        check(refusal, golden, HANDSHAKE_MAX_FRAME_BYTES);
    }
}

#[test]
fn handshake_refuse_with_every_refusal() {
    for (reason, inner) in refusals() {
        // {"Refuse": {"reason": <refusal>}}
        let golden = format!("a1 66 526566757365 a1 66 726561736f6e {inner}");
        check_handshake(Handshake::Refuse { reason }, &golden);
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let expected = ping(1, 2, 9, b"abc");
    // The same envelope as a map of 4 pairs, with "trace": {"ttl": [1, 2]}
    // last: a later version may add fields, and this one must ignore them,
    // whatever their shape.
    let extra_at_end = unhex(
        "a4 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 43 616263
            65 7472616365 a1 63 74746c 82 01 02",
    );
    // ... and first, and inside the variant's own map.
    let extra_first = unhex(
        "a4 65 7472616365 f6
            64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 43 616263",
    );
    let extra_in_variant = unhex(
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a3 63 736571 09 63 74746c 18 40 67 7061796c6f6164 43 616263",
    );
    for bytes in [extra_at_end, extra_first, extra_in_variant] {
        let ours: Envelope = codec::decode(&bytes, 1024).unwrap();
        assert_eq!(ours, expected, "{}", hex(&bytes));
        let theirs: Envelope = ciborium::de::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(theirs, expected, "{}", hex(&bytes));
    }
}

#[test]
fn a_later_hello_with_an_extra_field_still_decodes() {
    // This is why unknown fields matter most in the handshake: a node of a
    // later version that adds a field to Hello must still be understood
    // well enough to be refused with VersionMismatch, not a decode error.
    let bytes = unhex(
        "a1 65 48656c6c6f a7
            67 76657273696f6e 02
            67 636c7573746572 64 70726f64
            64 6e6f6465 07
            66 6c697374656e 6e 3132372e302e302e313a37303030
            6b 696e6361726e6174696f6e 05
            65 6e6f6e6365 58 20 1111111111111111111111111111111111111111111111111111111111111111
            66 476f73736970 f5",
    );
    let hello: Handshake = codec::decode(&bytes, HANDSHAKE_MAX_FRAME_BYTES).unwrap();
    match hello {
        Handshake::Hello { version, node, .. } => {
            assert_eq!(version, 2);
            assert_eq!(node, NodeId(7));
        }
        other => panic!("expected Hello, got {other:?}"),
    }
}

#[test]
fn field_order_does_not_matter() {
    // "msg" first, "to" before "from", "payload" before "seq".
    let bytes = unhex(
        "a3 63 6d7367 a1 64 506f6e67 a2 67 7061796c6f6164 43 616263 63 736571 09
            62 746f 02 64 66726f6d 01",
    );
    let env: Envelope = codec::decode(&bytes, 1024).unwrap();
    assert_eq!(env, pong(1, 2, 9, b"abc"));
}

#[test]
fn integers_of_non_preferred_width_decode() {
    // Encoders always use the shortest width, but RFC 8949 allows longer
    // ones, and a client in another language may send them: seq 9 as 8
    // bytes, node ids as 1 and 2 bytes.
    let bytes = unhex(
        "a3 64 66726f6d 18 01 62 746f 19 0002 63 6d7367
            a1 64 50696e67 a2 63 736571 1b 0000000000000009 67 7061796c6f6164 40",
    );
    let env: Envelope = codec::decode(&bytes, 1024).unwrap();
    assert_eq!(env, ping(1, 2, 9, &[]));
    // Re-encoding gives the preferred form.
    assert_eq!(
        hex(&codec::encode(&env).unwrap()),
        hex(&unhex(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
                a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 40"
        ))
    );
}

#[test]
fn unknown_variants_and_missing_fields_are_errors() {
    // Unknown fields are skipped, but an unknown message variant cannot be:
    // a new Message variant is only understood by nodes that know it, which
    // is why adding one needs the protocol version raised. This one is
    // protocol version 1's flat `Gossip`, which version 2 nests under
    // `Membership`.
    let unknown_variant = unhex(
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 66 476f73736970 a0",
    );
    let err = codec::decode::<Envelope>(&unknown_variant, 1024).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    // A Ping without its payload.
    let missing_payload = unhex(
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a1 63 736571 09",
    );
    let err = codec::decode::<Envelope>(&missing_payload, 1024).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
}

#[test]
fn a_payload_sent_as_an_array_of_integers_is_accepted_and_re_encoded_as_bytes() {
    // Leniency to pin down, not a feature: serde_bytes accepts a sequence of
    // integers where it expects bytes, in both serde_cbor and ciborium. So a
    // client that forgets the byte string is understood, and the answer it
    // gets uses the byte string.
    let payload_as_array = unhex(
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 83 18 61 18 62 18 63",
    );
    let ours: Envelope = codec::decode(&payload_as_array, 1024).unwrap();
    assert_eq!(ours, ping(1, 2, 9, b"abc"));
    let theirs: Envelope = ciborium::de::from_reader(payload_as_array.as_slice()).unwrap();
    assert_eq!(theirs, ours);
    assert_eq!(
        hex(&codec::encode(&ours).unwrap()),
        hex(&unhex(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
                a1 64 50696e67 a2 63 736571 09 67 7061796c6f6164 43 616263"
        ))
    );
}

// ---- Membership and ring gossip ----
//
// These are the only messages with lists (a table's entries, a ring's
// virtual nodes), which CBOR spells as arrays (`8n` = array of n). The
// no-array check above guards byte fields; for these vectors it is relaxed
// to "every array holds maps only", which still catches a byte field
// encoded as an array of integers.

/// Fails if `value` has an array holding anything but maps, or a map key
/// that is not text, except that the fields named in `integer_lists` may
/// hold arrays of integers (a pending ring change's `done` set of move
/// indices).
fn assert_arrays_hold_maps_except(value: &Value, what: &str, integer_lists: &[&str]) {
    assert_shape(value, what, integer_lists, false);
}

/// The shape every message with lists must have: arrays hold maps only,
/// except arrays of integers under the keys named in `integer_lists`; maps
/// are text-keyed, or, where `version_vectors` allows, map unsigned
/// integers to unsigned integers.
fn assert_shape(value: &Value, what: &str, integer_lists: &[&str], version_vectors: bool) {
    match value {
        Value::Array(items) => {
            for item in items {
                assert!(item.is_map(), "{what}: array of non-maps: {value:?}");
                assert_shape(item, what, integer_lists, version_vectors);
            }
        }
        Value::Map(pairs) if pairs.iter().all(|(k, _)| k.is_text()) => {
            for (k, v) in pairs {
                let allowed = k.as_text().is_some_and(|k| integer_lists.contains(&k));
                match v {
                    Value::Array(items) if allowed => assert!(
                        items.iter().all(Value::is_integer),
                        "{what}: {k:?} must hold integers"
                    ),
                    _ => assert_shape(v, what, integer_lists, version_vectors),
                }
            }
        }
        Value::Map(pairs) => {
            let is_vv = pairs.iter().all(|(k, v)| k.is_integer() && v.is_integer());
            assert!(
                version_vectors && is_vv,
                "{what}: map with non-text keys that is not an allowed version vector: {value:?}"
            );
        }
        Value::Tag(_, inner) => assert_shape(inner, what, integer_lists, version_vectors),
        _ => {}
    }
}

/// The four checks of [`check`], with lists of maps allowed.
fn check_with_lists(value: Envelope, golden_hex: &str) {
    check_with_lists_except(value, golden_hex, &[]);
}

/// [`check_with_lists`], with lists of integers allowed in the fields named.
fn check_with_lists_except(value: Envelope, golden_hex: &str, integer_lists: &[&str]) {
    let (tree, what) = round_trip(value, golden_hex, DEFAULT_MAX_FRAME_BYTES);
    assert_arrays_hold_maps_except(&tree, &what, integer_lists);
}

fn member(
    node: u64,
    addr: &str,
    heartbeat: u64,
    incarnation: u64,
    status: ringkv::MemberStatus,
) -> ringkv::MemberEntry {
    ringkv::MemberEntry {
        node: NodeId(node),
        addr: addr.into(),
        heartbeat,
        incarnation,
        status,
    }
}

/// `member(1, "a", 5, 0, Alive)` as CBOR.
const MEMBER_1: &str = "a5 64 6e6f6465 01 64 61646472 61 61
                   69 686561727462656174 05 6b 696e6361726e6174696f6e 00
                   66 737461747573 65 416c697665";
/// `member(3, "b", 1, 2, Suspect)` as CBOR.
const MEMBER_3: &str = "a5 64 6e6f6465 03 64 61646472 61 62
                   69 686561727462656174 01 6b 696e6361726e6174696f6e 02
                   66 737461747573 67 53757370656374";

fn membership(msg: MembershipMsg) -> Envelope {
    Envelope::new(NodeId(1), NodeId(2), Message::Membership(msg))
}

#[test]
fn message_gossip() {
    use ringkv::MemberStatus;
    let gossip = membership(MembershipMsg::Gossip {
        members: vec![
            member(1, "a", 5, 0, MemberStatus::Alive),
            member(3, "b", 1, 2, MemberStatus::Suspect),
        ],
        digest: 0x0102_0304_0506_0708,
        reply: true,
    });
    check_with_lists(
        gossip,
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 66 476f73736970
            a3 67 6d656d62657273 82 {MEMBER_1} {MEMBER_3}
               66 646967657374 1b 0102030405060708
               65 7265706c79 f5"
        ),
    );
    // The other two statuses are bare text strings too.
    check(MemberStatus::Down, "64 446f776e", DEFAULT_MAX_FRAME_BYTES);
    check(MemberStatus::Left, "64 4c656674", DEFAULT_MAX_FRAME_BYTES);
}

#[test]
fn message_gossip_reply_relay_ping_and_ack() {
    use ringkv::MemberStatus;
    // MembershipMsg::GossipReply
    check_with_lists(
        membership(MembershipMsg::GossipReply {
            members: vec![member(1, "a", 5, 0, MemberStatus::Alive)],
            digest: 7,
        }),
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 6b 476f737369705265706c79
            a2 67 6d656d62657273 81 {MEMBER_1}
               66 646967657374 07"
        ),
    );
    // MembershipMsg::Relay
    check_with_lists(
        membership(MembershipMsg::Relay {
            members: vec![member(3, "b", 1, 2, MemberStatus::Suspect)],
        }),
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 65 52656c6179
            a1 67 6d656d62657273 81 {MEMBER_3}"
        ),
    );
    // MembershipMsg::Ping: a monitor's probe, with no news.
    check_with_lists(
        membership(MembershipMsg::Ping {
            seq: 9,
            members: vec![],
        }),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 64 50696e67
            a2 63 736571 09 67 6d656d62657273 80",
    );
    // MembershipMsg::Accuse: node 3 suspected at incarnation 2.
    check_with_lists(
        membership(MembershipMsg::Accuse {
            node: NodeId(3),
            incarnation: 2,
        }),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 66 416363757365
            a2 64 6e6f6465 03 6b 696e6361726e6174696f6e 02",
    );
    // MembershipMsg::Ack: the pinged node's own entry first.
    check_with_lists(
        membership(MembershipMsg::Ack {
            seq: 9,
            members: vec![member(1, "a", 5, 0, MemberStatus::Alive)],
        }),
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 63 41636b
            a2 63 736571 09 67 6d656d62657273 81 {MEMBER_1}"
        ),
    );
}

#[test]
fn message_sync_and_entries() {
    use ringkv::MemberStatus;
    // MembershipMsg::Sync: one digest per bucket (two here, for brevity;
    // a node ignores a list of any length but 64).
    check_with_lists_except(
        membership(MembershipMsg::Sync {
            buckets: vec![1, 0x0102_0304_0506_0708],
        }),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 64 53796e63
            a1 67 6275636b657473 82 01 1b 0102030405060708",
        &["buckets"],
    );
    // MembershipMsg::Entries
    check_with_lists_except(
        membership(MembershipMsg::Entries {
            members: vec![member(3, "b", 1, 2, MemberStatus::Suspect)],
            buckets: vec![3, 40],
            want: true,
        }),
        &format!(
            "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 6a 4d656d62657273686970 a1 67 456e7472696573
            a3 67 6d656d62657273 81 {MEMBER_3}
               67 6275636b657473 82 03 18 28
               64 77616e74 f5"
        ),
        &["buckets"],
    );
}

#[test]
fn message_ring_digest() {
    check_envelope(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Ring(RingMsg::Digest {
                epoch: 3,
                digest: 0x0102_0304_0506_0708,
                pending: 0,
                progress: None,
            }),
        ),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 52696e67 a1 66 446967657374
            a2 65 65706f6368 03 66 646967657374 1b 0102030405060708",
    );
}

#[test]
fn message_ring_state() {
    use ringkv::ring::{Ring, VNode};
    use ringkv::Token;
    let ring = Ring::from_vnodes(
        2,
        vec![
            VNode {
                token: Token(10),
                node: NodeId(1),
            },
            VNode {
                token: Token(20),
                node: NodeId(2),
            },
        ],
    )
    .unwrap();
    check_with_lists(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Ring(RingMsg::State {
                ring,
                pending: None,
            }),
        ),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 52696e67 a1 65 5374617465
            a1 64 72696e67
            a2 65 65706f6368 02 66 766e6f646573 82
                a2 65 746f6b656e 0a 64 6e6f6465 01
                a2 65 746f6b656e 14 64 6e6f6465 02",
    );
}

#[test]
fn message_ring_digest_with_a_pending_change() {
    check_envelope(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Ring(RingMsg::Digest {
                epoch: 3,
                digest: 0x0102_0304_0506_0708,
                pending: 9,
                progress: None,
            }),
        ),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 52696e67 a1 66 446967657374
            a3 65 65706f6368 03 66 646967657374 1b 0102030405060708
               67 70656e64696e67 09",
    );
}

#[test]
fn message_ring_digest_with_progress() {
    use ringkv::membership::Progress;
    use ringkv::ring::transition::ChangeFence;
    use ringkv::ring::RingFence;
    check_with_lists_except(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Ring(RingMsg::Digest {
                epoch: 3,
                digest: 0x0102_0304_0506_0708,
                pending: 9,
                progress: Some(Progress {
                    fence: RingFence {
                        epoch: 3,
                        digest: 5,
                        change: Some(ChangeFence {
                            epoch: 4,
                            digest: 9,
                            n: 3,
                        }),
                    },
                    change: ringkv::ring::Change::Join(NodeId(7)),
                    done: vec![0, 2, 300],
                }),
            }),
        ),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 52696e67 a1 66 446967657374
            a4 65 65706f6368 03 66 646967657374 1b 0102030405060708
               67 70656e64696e67 09
               68 70726f6772657373
                 a3 65 66656e6365
                      a3 65 65706f6368 03 66 646967657374 05
                         66 6368616e6765
                           a3 65 65706f6368 04 66 646967657374 09 61 6e 03
                    66 6368616e6765 a1 64 4a6f696e 07
                    64 646f6e65 83 00 02 19 012c",
        &["done"],
    );
}

#[test]
fn message_ring_state_with_a_pending_change() {
    use ringkv::ring::{Change, Pending, Ring, VNode};
    use ringkv::Token;
    let vnode = |token, node| VNode {
        token: Token(token),
        node: NodeId(node),
    };
    let ring = Ring::from_vnodes(2, vec![vnode(10, 1), vnode(20, 2)]).unwrap();
    let target = Ring::from_vnodes(3, vec![vnode(10, 1), vnode(15, 3), vnode(20, 2)]).unwrap();
    check_with_lists_except(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Ring(RingMsg::State {
                ring,
                pending: Some(Pending {
                    change: Change::Join(NodeId(3)),
                    target,
                    n: 3,
                    done: [0, 2].into_iter().collect(),
                }),
            }),
        ),
        "a3 64 66726f6d 01 62 746f 02 63 6d7367
            a1 64 52696e67 a1 65 5374617465
            a2 64 72696e67
               a2 65 65706f6368 02 66 766e6f646573 82
                  a2 65 746f6b656e 0a 64 6e6f6465 01
                  a2 65 746f6b656e 14 64 6e6f6465 02
               67 70656e64696e67
               a4 66 6368616e6765 a1 64 4a6f696e 03
                  66 746172676574
                     a2 65 65706f6368 03 66 766e6f646573 83
                        a2 65 746f6b656e 0a 64 6e6f6465 01
                        a2 65 746f6b656e 0f 64 6e6f6465 03
                        a2 65 746f6b656e 14 64 6e6f6465 02
                  61 6e 03
                  64 646f6e65 82 00 02",
        &["done"],
    );
}

// ---- Replication and bucket gossip ----
//
// A replicated object carries its causal context, a version vector: a CBOR
// map from node id to counter, so its keys are unsigned integers, not text.
// The checker for these vectors allows exactly that shape (every key and
// every value an unsigned integer) besides text-keyed maps; a byte field
// gone wrong would be an array of integers, which is still refused, as is
// any array holding something other than maps.
//
// These vectors are laid out one map pair per line, nested pairs indented
// under the map's head byte (`a5` = map of 5 pairs, `81` = array of 1,
// `41 62` = byte string "b", `1b 0000018bcfe56800` = the 8-byte integer
// 1,700,000,000,000); the comment above each is the same value in CBOR
// diagnostic notation (RFC 8949, section 8).

/// Fails if `value` has an array holding anything but maps, or a map that
/// is neither text-keyed nor a version vector (unsigned integers to
/// unsigned integers).
fn assert_lists_of_maps_and_version_vectors(value: &Value, what: &str) {
    assert_shape(value, what, &[], true);
}

/// The four checks of [`check`], with lists of maps and version vectors
/// allowed.
fn check_replication(value: Envelope, golden_hex: &str) {
    let (tree, what) = round_trip(value, golden_hex, DEFAULT_MAX_FRAME_BYTES);
    assert_lists_of_maps_and_version_vectors(&tree, &what);
}

mod replication_values {
    use ringkv::config::BucketProps;
    use ringkv::crdt::{CrdtKind, CrdtOp};
    use ringkv::replication::buckets::BucketEntry;
    use ringkv::replication::{
        Consistency, ReplicaError, ReplicaReply, ReplicaRequest, ReplicationMsg, Write,
    };
    use ringkv::version::{
        CausalContext, ConflictPolicy, Object, Payload, Timestamp, VersionVector,
    };
    use ringkv::{Envelope, Message, NodeId};
    use std::time::Duration;

    pub const MS: u64 = 1_700_000_000_000;

    /// One write of "v" coordinated by node 1: one sibling with dot
    /// (1, 1), context {1: 1}.
    pub fn object() -> Object {
        let mut o = Object::new();
        o.put(
            NodeId(1),
            &CausalContext::empty(),
            Payload::Value(b"v".to_vec()),
            Timestamp {
                physical_ms: MS,
                logical: 2,
            },
            8,
        )
        .unwrap();
        o
    }

    pub fn replicate(request: ReplicaRequest) -> Envelope {
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Replication(ReplicationMsg::Replicate {
                request,
                fence: None,
            }),
        )
    }

    pub fn replicated(reply: ReplicaReply) -> Envelope {
        Envelope::new(
            NodeId(2),
            NodeId(1),
            Message::Replication(ReplicationMsg::Replicated { reply }),
        )
    }

    pub fn coordinate_blind() -> ReplicaRequest {
        ReplicaRequest::Coordinate {
            req: 7,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            write: Write {
                context: CausalContext::empty(),
                payload: Payload::Value(b"v".to_vec()),
                timestamp: Timestamp::from_ms(MS),
                op: None,
                base: None,
            },
            policy: ConflictPolicy::Siblings,
            hint_for: None,
        }
    }

    pub fn coordinate_crdt() -> ReplicaRequest {
        let vv: VersionVector = [(NodeId(1), 2), (NodeId(300), 1)].into_iter().collect();
        ReplicaRequest::Coordinate {
            req: 8,
            bucket: b"c".to_vec(),
            key: b"n".to_vec(),
            write: Write {
                context: CausalContext(vv),
                payload: Payload::Tombstone,
                timestamp: Timestamp::from_ms(MS),
                op: Some(CrdtOp::Add(-5)),
                base: None,
            },
            policy: ConflictPolicy::Crdt(CrdtKind::PnCounter),
            hint_for: Some(NodeId(2)),
        }
    }

    pub fn merge_hint() -> ReplicaRequest {
        ReplicaRequest::Merge {
            req: 9,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            object: object(),
            policy: ConflictPolicy::Lww,
            hint_for: Some(NodeId(3)),
        }
    }

    pub fn read() -> ReplicaRequest {
        ReplicaRequest::Read {
            req: 10,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        }
    }

    pub fn coordinated_ok() -> ReplicaReply {
        ReplicaReply::Coordinated {
            req: 7,
            result: Ok(object()),
            changed: None,
        }
    }

    pub fn coordinated_too_many() -> ReplicaReply {
        ReplicaReply::Coordinated {
            req: 7,
            result: Err(ReplicaError::TooManySiblings {
                siblings: 9,
                max: 8,
            }),
            changed: None,
        }
    }

    pub fn merged_ok() -> ReplicaReply {
        ReplicaReply::Merged {
            req: 9,
            result: Ok(()),
        }
    }

    pub fn merged_failed() -> ReplicaReply {
        ReplicaReply::Merged {
            req: 9,
            result: Err(ReplicaError::Failed("disk full".into())),
        }
    }

    pub fn read_some() -> ReplicaReply {
        ReplicaReply::Read {
            req: 10,
            result: Ok(Some(object())),
        }
    }

    pub fn read_none() -> ReplicaReply {
        ReplicaReply::Read {
            req: 10,
            result: Ok(None),
        }
    }

    pub fn read_corrupt() -> ReplicaReply {
        ReplicaReply::ReadCorrupt {
            req: 10,
            reason: "bad crc".into(),
        }
    }

    pub fn buckets() -> Envelope {
        let entry = |bucket: &[u8], props, node| BucketEntry {
            bucket: bucket.to_vec(),
            props,
            stamp: Timestamp {
                physical_ms: MS,
                logical: 1,
            },
            node: NodeId(node),
        };
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Replication(ReplicationMsg::Buckets {
                buckets: vec![
                    entry(
                        b"b",
                        BucketProps {
                            sloppy_quorum: true,
                            ..BucketProps::default()
                        },
                        1,
                    ),
                    entry(
                        b"c",
                        BucketProps {
                            n: 5,
                            r: Consistency::Count(2),
                            w: Consistency::All,
                            policy: ConflictPolicy::Script("max".into()),
                            sloppy_quorum: false,
                            timeout: Duration::from_millis(1500),
                        },
                        2,
                    ),
                ],
            }),
        )
    }
}

#[test]
fn message_replicate_coordinate() {
    use replication_values::*;
    // {"from": 1, "to": 2, "msg": {"Replication": {"Replicate": {"request": {"Coordinate": {"req": 7, "bucket":
    // h'62', "key": h'6b', "write": {"context": {}, "payload": {"Value": h'76'}, "timestamp":
    // {"physical_ms": 1700000000000, "logical": 0}, "op": null}, "policy": "Siblings", "hint_for": null}}}}}}
    check_replication(
        replicate(coordinate_blind()),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 69 5265706c6963617465 a1
                     67 72657175657374 a1
                         6a 436f6f7264696e617465 a6
                             63 726571 07
                             66 6275636b6574 41 62
                             63 6b6579 41 6b
                             65 7772697465 a4
                                 67 636f6e74657874 a0
                                 67 7061796c6f6164 a1
                                     65 56616c7565 41 76
                                 69 74696d657374616d70 a2
                                     6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                     67 6c6f676963616c 00
                                 62 6f70 f6
                             66 706f6c696379 68 5369626c696e6773
                     68 68696e745f666f72 f6",
    );
    // {"from": 1, "to": 2, "msg": {"Replication": {"Replicate": {"request": {"Coordinate": {"req": 8, "bucket":
    // h'63', "key": h'6e', "write": {"context": {1: 2, 300: 1}, "payload": "Tombstone",
    // "timestamp": {"physical_ms": 1700000000000, "logical": 0}, "op": {"Add": -5}}, "policy":
    // {"Crdt": "PnCounter"}, "hint_for": 2}}}}}}
    check_replication(
        replicate(coordinate_crdt()),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 69 5265706c6963617465 a1
                     67 72657175657374 a1
                         6a 436f6f7264696e617465 a6
                             63 726571 08
                             66 6275636b6574 41 63
                             63 6b6579 41 6e
                             65 7772697465 a4
                                 67 636f6e74657874 a2
                                     01 02
                                     19 012c 01
                                 67 7061796c6f6164 69 546f6d6273746f6e65
                                 69 74696d657374616d70 a2
                                     6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                     67 6c6f676963616c 00
                                 62 6f70 a1
                                     63 416464 24
                             66 706f6c696379 a1
                                 64 43726474 69 506e436f756e746572
                     68 68696e745f666f72 02",
    );
}

/// The fence of the fenced vectors: ring epoch 3 (digest 4), changing to
/// epoch 5 (digest 6) for 3 replicas.
fn a_fence() -> ringkv::ring::RingFence {
    ringkv::ring::RingFence {
        epoch: 3,
        digest: 4,
        change: Some(ringkv::ring::transition::ChangeFence {
            epoch: 5,
            digest: 6,
            n: 3,
        }),
    }
}

#[test]
fn message_replicate_fenced() {
    use ringkv::replication::{ReplicaRequest, ReplicationMsg};
    // {"from": 1, "to": 2, "msg": {"Replication": {"Replicate": {"request": {"Read": {"req": 10,
    // "bucket": h'62', "key": h'6b'}}, "fence": {"epoch": 3, "digest": 4, "change": {"epoch": 5,
    // "digest": 6, "n": 3}}}}}}. Without a fence the field is left out (the vectors above).
    check_replication(
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Replication(ReplicationMsg::Replicate {
                request: ReplicaRequest::Read {
                    req: 10,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
                fence: Some(a_fence()),
            }),
        ),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 69 5265706c6963617465 a2
                     67 72657175657374 a1
                         64 52656164 a3
                             63 726571 0a
                             66 6275636b6574 41 62
                             63 6b6579 41 6b
                     65 66656e6365 a3
                         65 65706f6368 03
                         66 646967657374 04
                         66 6368616e6765 a3
                             65 65706f6368 05
                             66 646967657374 06
                             61 6e 03",
    );
}

#[test]
fn message_replicate_merge() {
    use replication_values::*;
    // {"from": 1, "to": 2, "msg": {"Replication": {"Replicate": {"request": {"Merge": {"req": 9, "bucket":
    // h'62', "key": h'6b', "object": {"siblings": [{"dot": {"node": 1, "counter": 1}, "payload":
    // {"Value": h'76'}, "timestamp": {"physical_ms": 1700000000000, "logical": 2}}], "context":
    // {1: 1}}, "policy": "Lww", "hint_for": 3}}}}}}
    check_replication(
        replicate(merge_hint()),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 69 5265706c6963617465 a1
                     67 72657175657374 a1
                         65 4d65726765 a6
                             63 726571 09
                             66 6275636b6574 41 62
                             63 6b6579 41 6b
                             66 6f626a656374 a2
                                 68 7369626c696e6773 81
                                     a3
                                         63 646f74 a2
                                             64 6e6f6465 01
                                             67 636f756e746572 01
                                         67 7061796c6f6164 a1
                                             65 56616c7565 41 76
                                         69 74696d657374616d70 a2
                                             6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                             67 6c6f676963616c 02
                                 67 636f6e74657874 a1
                                     01 01
                             66 706f6c696379 63 4c7777
                             68 68696e745f666f72 03",
    );
}

#[test]
fn message_replicate_read() {
    use replication_values::*;
    // {"from": 1, "to": 2, "msg": {"Replication": {"Replicate": {"request": {"Read": {"req": 10, "bucket":
    // h'62', "key": h'6b'}}}}}}
    check_replication(
        replicate(read()),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 69 5265706c6963617465 a1
                     67 72657175657374 a1
                         64 52656164 a3
                             63 726571 0a
                             66 6275636b6574 41 62
                             63 6b6579 41 6b",
    );
}

#[test]
fn message_replicated_coordinated() {
    use replication_values::*;
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Coordinated": {"req": 7, "result":
    // {"Ok": {"siblings": [{"dot": {"node": 1, "counter": 1}, "payload": {"Value": h'76'},
    // "timestamp": {"physical_ms": 1700000000000, "logical": 2}}], "context": {1: 1}}}}}}}}}
    check_replication(
        replicated(coordinated_ok()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         6b 436f6f7264696e61746564 a2
                             63 726571 07
                             66 726573756c74 a1
                                 62 4f6b a2
                                     68 7369626c696e6773 81
                                         a3
                                             63 646f74 a2
                                                 64 6e6f6465 01
                                                 67 636f756e746572 01
                                             67 7061796c6f6164 a1
                                                 65 56616c7565 41 76
                                             69 74696d657374616d70 a2
                                                 6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                                 67 6c6f676963616c 02
                                     67 636f6e74657874 a1
                                         01 01",
    );
    // The same with the members a set op changed: one more field, last
    // (absent above, so a reply without it reads as before).
    let mut counted = coordinated_ok();
    if let ringkv::replication::ReplicaReply::Coordinated { changed, .. } = &mut counted {
        *changed = Some(2);
    }
    check_replication(
        replicated(counted),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         6b 436f6f7264696e61746564 a3
                             63 726571 07
                             66 726573756c74 a1
                                 62 4f6b a2
                                     68 7369626c696e6773 81
                                         a3
                                             63 646f74 a2
                                                 64 6e6f6465 01
                                                 67 636f756e746572 01
                                             67 7061796c6f6164 a1
                                                 65 56616c7565 41 76
                                             69 74696d657374616d70 a2
                                                 6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                                 67 6c6f676963616c 02
                                     67 636f6e74657874 a1
                                         01 01
                             67 6368616e676564 02",
    );
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Coordinated": {"req": 7, "result":
    // {"Err": {"TooManySiblings": {"siblings": 9, "max": 8}}}}}}}}}
    check_replication(
        replicated(coordinated_too_many()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         6b 436f6f7264696e61746564 a2
                             63 726571 07
                             66 726573756c74 a1
                                 63 457272 a1
                                     6f 546f6f4d616e795369626c696e6773 a2
                                         68 7369626c696e6773 09
                                         63 6d6178 08",
    );
}

#[test]
fn message_replicated_merged() {
    use replication_values::*;
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Merged": {"req": 9, "result":
    // {"Ok": null}}}}}}}
    check_replication(
        replicated(merged_ok()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         66 4d6572676564 a2
                             63 726571 09
                             66 726573756c74 a1
                                 62 4f6b f6",
    );
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Merged": {"req": 9, "result":
    // {"Err": {"Failed": "disk full"}}}}}}}}
    check_replication(
        replicated(merged_failed()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         66 4d6572676564 a2
                             63 726571 09
                             66 726573756c74 a1
                                 63 457272 a1
                                     66 4661696c6564 69 6469736b2066756c6c",
    );
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Coordinated": {"req": 7,
    // "result": {"Err": {"Indefinite": "gone"}}}}}}}}
    check_replication(
        replicated(ringkv::replication::ReplicaReply::Coordinated {
            req: 7,
            result: Err(ringkv::replication::ReplicaError::Indefinite("gone".into())),
            changed: None,
        }),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         6b 436f6f7264696e61746564 a2
                             63 726571 07
                             66 726573756c74 a1
                                 63 457272 a1
                                     6a 496e646566696e697465 64 676f6e65",
    );
}

#[test]
fn message_replicated_read() {
    use replication_values::*;
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Read": {"req": 10, "result": {"Ok":
    // {"siblings": [{"dot": {"node": 1, "counter": 1}, "payload": {"Value": h'76'}, "timestamp":
    // {"physical_ms": 1700000000000, "logical": 2}}], "context": {1: 1}}}}}}}}}
    check_replication(
        replicated(read_some()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         64 52656164 a2
                             63 726571 0a
                             66 726573756c74 a1
                                 62 4f6b a2
                                     68 7369626c696e6773 81
                                         a3
                                             63 646f74 a2
                                                 64 6e6f6465 01
                                                 67 636f756e746572 01
                                             67 7061796c6f6164 a1
                                                 65 56616c7565 41 76
                                             69 74696d657374616d70 a2
                                                 6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                                 67 6c6f676963616c 02
                                     67 636f6e74657874 a1
                                         01 01",
    );
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"Read": {"req": 10, "result": {"Ok":
    // null}}}}}}}
    check_replication(
        replicated(read_none()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         64 52656164 a2
                             63 726571 0a
                             66 726573756c74 a1
                                 62 4f6b f6",
    );
    // {"from": 2, "to": 1, "msg": {"Replication": {"Replicated": {"reply": {"ReadCorrupt": {"req": 10,
    // "reason": "bad crc"}}}}}}
    check_replication(
        replicated(read_corrupt()),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 6a 5265706c696361746564 a1
                     65 7265706c79 a1
                         6b 52656164436f7272757074 a2
                             63 726571 0a
                             66 726561736f6e 67 62616420637263",
    );
}

#[test]
fn message_buckets() {
    use replication_values::*;
    // {"from": 1, "to": 2, "msg": {"Replication": {"Buckets": {"buckets": [{"bucket": h'62', "props": {"n": 3,
    // "r": "Quorum", "w": "Quorum", "policy": "Siblings", "sloppy_quorum": true, "timeout":
    // {"secs": 5, "nanos": 0}}, "stamp": {"physical_ms": 1700000000000, "logical": 1}, "node":
    // 1}, {"bucket": h'63', "props": {"n": 5, "r": {"Count": 2}, "w": "All", "policy":
    // {"Script": "max"}, "sloppy_quorum": false, "timeout": {"secs": 1, "nanos": 500000000}},
    // "stamp": {"physical_ms": 1700000000000, "logical": 1}, "node": 2}]}}}}
    check_replication(
        buckets(),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 6b 5265706c69636174696f6e a1 67 4275636b657473 a1
                     67 6275636b657473 82
                         a4
                             66 6275636b6574 41 62
                             65 70726f7073 a6
                                 61 6e 03
                                 61 72 66 51756f72756d
                                 61 77 66 51756f72756d
                                 66 706f6c696379 68 5369626c696e6773
                                 6d 736c6f7070795f71756f72756d f5
                                 67 74696d656f7574 a2
                                     64 73656373 05
                                     65 6e616e6f73 00
                             65 7374616d70 a2
                                 6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                 67 6c6f676963616c 01
                             64 6e6f6465 01
                         a4
                             66 6275636b6574 41 63
                             65 70726f7073 a6
                                 61 6e 05
                                 61 72 a1
                                     65 436f756e74 02
                                 61 77 63 416c6c
                                 66 706f6c696379 a1
                                     66 536372697074 63 6d6178
                                 6d 736c6f7070795f71756f72756d f4
                                 67 74696d656f7574 a2
                                     64 73656373 01
                                     65 6e616e6f73 1a 1dcd6500
                             65 7374616d70 a2
                                 6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                 67 6c6f676963616c 01
                             64 6e6f6465 02",
    );
}

mod transfer_values {
    use ringkv::replication::transfer::{TransferItem, TransferRefusal};
    use ringkv::replication::TransferMsg;
    use ringkv::ring::{Token, TokenRange};
    use ringkv::{Envelope, Message, NodeId};

    pub fn pull(after: Option<Vec<u8>>) -> Envelope {
        Envelope::new(
            NodeId(2),
            NodeId(1),
            Message::Transfer(TransferMsg::Pull {
                transfer: 5,
                range: TokenRange {
                    after: Token(16),
                    through: Token(32),
                },
                after,
                max_bytes: 4096,
                fence: None,
            }),
        )
    }

    pub fn batch() -> Envelope {
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Transfer(TransferMsg::Batch {
                transfer: 5,
                after: Some(vec![0x00, 0x01, 0xff]),
                items: vec![TransferItem {
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                    object: super::replication_values::object(),
                }],
                next: Some(vec![0x00, 0x02]),
                done: false,
                bytes: 60,
            }),
        )
    }

    pub fn refused(reason: TransferRefusal) -> Envelope {
        Envelope::new(
            NodeId(1),
            NodeId(2),
            Message::Transfer(TransferMsg::Refused {
                transfer: 5,
                after: None,
                reason,
            }),
        )
    }
}

#[test]
fn message_transfer_pull() {
    use transfer_values::*;
    // {"from": 2, "to": 1, "msg": {"Transfer": {"Pull": {"transfer": 5, "range": {"after": 16,
    // "through": 32}, "after": null, "max_bytes": 4096}}}}
    check(
        pull(None),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 68 5472616e73666572 a1 64 50756c6c a4
                     68 7472616e73666572 05
                     65 72616e6765 a2
                         65 6166746572 10
                         67 7468726f756768 18 20
                     65 6166746572 f6
                     69 6d61785f6279746573 19 1000",
        DEFAULT_MAX_FRAME_BYTES,
    );
    // The same with a cursor: "after": h'0001ff'.
    check(
        pull(Some(vec![0x00, 0x01, 0xff])),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 68 5472616e73666572 a1 64 50756c6c a4
                     68 7472616e73666572 05
                     65 72616e6765 a2
                         65 6166746572 10
                         67 7468726f756768 18 20
                     65 6166746572 43 0001ff
                     69 6d61785f6279746573 19 1000",
        DEFAULT_MAX_FRAME_BYTES,
    );
}

#[test]
fn message_transfer_pull_fenced() {
    use ringkv::replication::TransferMsg;
    use ringkv::ring::{Token, TokenRange};
    // {"from": 2, "to": 1, "msg": {"Transfer": {"Pull": {"transfer": 5, "range": {"after": 16,
    // "through": 32}, "after": null, "max_bytes": 4096, "fence": {"epoch": 3, "digest": 4,
    // "change": {"epoch": 5, "digest": 6, "n": 3}}}}}}
    check(
        Envelope::new(
            NodeId(2),
            NodeId(1),
            Message::Transfer(TransferMsg::Pull {
                transfer: 5,
                range: TokenRange {
                    after: Token(16),
                    through: Token(32),
                },
                after: None,
                max_bytes: 4096,
                fence: Some(a_fence()),
            }),
        ),
        "a3
             64 66726f6d 02
             62 746f 01
             63 6d7367 a1
                 68 5472616e73666572 a1 64 50756c6c a5
                     68 7472616e73666572 05
                     65 72616e6765 a2
                         65 6166746572 10
                         67 7468726f756768 18 20
                     65 6166746572 f6
                     69 6d61785f6279746573 19 1000
                     65 66656e6365 a3
                         65 65706f6368 03
                         66 646967657374 04
                         66 6368616e6765 a3
                             65 65706f6368 05
                             66 646967657374 06
                             61 6e 03",
        DEFAULT_MAX_FRAME_BYTES,
    );
}

#[test]
fn message_transfer_batch() {
    use transfer_values::*;
    // {"from": 1, "to": 2, "msg": {"Transfer": {"Batch": {"transfer": 5, "after": h'0001ff',
    // "items": [{"bucket": h'62', "key": h'6b', "object": {"siblings": [{"dot": {"node": 1,
    // "counter": 1}, "payload": {"Value": h'76'}, "timestamp": {"physical_ms": 1700000000000,
    // "logical": 2}}], "context": {1: 1}}}], "next": h'0002', "done": false, "bytes": 60}}}}
    check_replication(
        batch(),
        "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 68 5472616e73666572 a1 65 4261746368 a6
                     68 7472616e73666572 05
                     65 6166746572 43 0001ff
                     65 6974656d73 81
                         a3
                             66 6275636b6574 41 62
                             63 6b6579 41 6b
                             66 6f626a656374 a2
                                 68 7369626c696e6773 81
                                     a3
                                         63 646f74 a2
                                             64 6e6f6465 01
                                             67 636f756e746572 01
                                         67 7061796c6f6164 a1
                                             65 56616c7565 41 76
                                         69 74696d657374616d70 a2
                                             6b 706879736963616c5f6d73 1b 0000018bcfe56800
                                             67 6c6f676963616c 02
                                 67 636f6e74657874 a1
                                     01 01
                     64 6e657874 42 0002
                     64 646f6e65 f4
                     65 6279746573 18 3c",
    );
}

#[test]
fn message_transfer_refused() {
    use ringkv::replication::transfer::TransferRefusal;
    use transfer_values::*;
    let head = "a3
             64 66726f6d 01
             62 746f 02
             63 6d7367 a1
                 68 5472616e73666572 a1 67 52656675736564 a3
                     68 7472616e73666572 05
                     65 6166746572 f6
                     66 726561736f6e";
    // {"from": 1, "to": 2, "msg": {"Transfer": {"Refused": {"transfer": 5, "after": null,
    // "reason": R}}}} for R = "Busy", "ShuttingDown", {"BadRequest": "bad cursor"},
    // {"Failed": "disk"}, {"StaleRing": "new"}.
    let cases = [
        (TransferRefusal::Busy, "64 42757379"),
        (TransferRefusal::ShuttingDown, "6c 5368757474696e67446f776e"),
        (
            TransferRefusal::BadRequest("bad cursor".into()),
            "a1 6a 42616452657175657374 6a 62616420637572736f72",
        ),
        (
            TransferRefusal::Failed("disk".into()),
            "a1 66 4661696c6564 64 6469736b",
        ),
        (
            TransferRefusal::StaleRing("new".into()),
            "a1 69 5374616c6552696e67 63 6e6577",
        ),
    ];
    for (reason, tail) in cases {
        check(
            refused(reason),
            &format!("{head} {tail}"),
            DEFAULT_MAX_FRAME_BYTES,
        );
    }
}

// ---- Anti-entropy ----
//
// Trees, differing leaves and hint owners are lists of unsigned integers
// (hashes, leaf indexes, node ids): the checker for these vectors allows
// arrays of unsigned integers under exactly those keys, and holds every
// other part to the replication vectors' shape.

mod anti_entropy_values {
    use ringkv::replication::anti_entropy::RepairObject;
    use ringkv::replication::merkle::KeyDigest;
    use ringkv::replication::AntiEntropyMsg;
    use ringkv::ring::{Token, TokenRange};
    use ringkv::{Envelope, Message, NodeId};

    pub fn env(msg: Message) -> Envelope {
        Envelope::new(NodeId(1), NodeId(2), msg)
    }

    pub fn kd() -> KeyDigest {
        KeyDigest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            digest: 7,
        }
    }

    pub fn tree() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Tree {
            session: 3,
            range: TokenRange {
                after: Token(10),
                through: Token(20),
            },
            min_n: 2,
            leaves: vec![0, 1],
        }))
    }

    pub fn diff() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Diff {
            session: 3,
            differing: vec![1],
            listed: vec![1],
            entries: vec![kd()],
        }))
    }

    pub fn repair() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Repair {
            session: 3,
            objects: vec![RepairObject {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                object: super::replication_values::object(),
            }],
            want: vec![kd()],
        }))
    }

    pub fn repaired() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Repaired {
            session: 3,
            objects: Vec::new(),
        }))
    }

    pub fn purge() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Purge {
            entries: vec![kd()],
        }))
    }

    pub fn hints() -> Envelope {
        env(Message::AntiEntropy(AntiEntropyMsg::Hints {
            owners: vec![NodeId(4)],
        }))
    }
}

/// The four checks of [`check`], with lists of maps and version vectors
/// allowed, and arrays of unsigned integers under the keys `leaves`,
/// `differing`, `listed` and `owners`.
fn check_anti_entropy(value: Envelope, golden_hex: &str) {
    const INT_LISTS: [&str; 4] = ["leaves", "differing", "listed", "owners"];
    let (tree, what) = round_trip(value, golden_hex, DEFAULT_MAX_FRAME_BYTES);
    assert_shape(&tree, &what, &INT_LISTS, true);
}

#[test]
fn message_anti_entropy_tree() {
    // AntiEntropyMsg::Tree:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Tree": {"session": 3, "range": {"after": 10,
    // "through": 20}, "min_n": 2, "leaves": [0, 1]}}}}
    check_anti_entropy(
        anti_entropy_values::tree(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 6454726565
                     a46773657373696f6e036572616e6765a26561667465720a677468726f756768
                     14656d696e5f6e02666c6561766573820001",
    );
}

#[test]
fn message_anti_entropy_diff() {
    // AntiEntropyMsg::Diff:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Diff": {"session": 3, "differing": [1], "listed":
    // [1], "entries": [{"bucket": h'62', "key": h'6b', "digest": 7}]}}}}
    check_anti_entropy(
        anti_entropy_values::diff(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 6444696666
                     a46773657373696f6e0369646966666572696e678101666c6973746564810167
                     656e747269657381a3666275636b65744162636b6579416b6664696765737407",
    );
}

#[test]
fn message_anti_entropy_repair() {
    // AntiEntropyMsg::Repair:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Repair": {"session": 3, "objects": [{"bucket":
    // h'62', "key": h'6b', "object": {"siblings": [{"dot": {"node": 1, "counter": 1}, "payload":
    // {"Value": h'76'}, "timestamp": {"physical_ms": 1700000000000, "logical": 2}}], "context":
    // {1: 1}}}], "want": [{"bucket": h'62', "key": h'6b', "digest": 7}]}}}}
    check_anti_entropy(
        anti_entropy_values::repair(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 66526570616972
                     a36773657373696f6e03676f626a6563747381a3666275636b65744162636b65
                     79416b666f626a656374a2687369626c696e677381a363646f74a2646e6f6465
                     0167636f756e74657201677061796c6f6164a16556616c756541766974696d65
                     7374616d70a26b706879736963616c5f6d731b0000018bcfe56800676c6f6769
                     63616c0267636f6e74657874a101016477616e7481a3666275636b6574416263
                     6b6579416b6664696765737407",
    );
}

#[test]
fn message_anti_entropy_repaired() {
    // AntiEntropyMsg::Repaired:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Repaired": {"session": 3, "objects": []}}}}
    check_anti_entropy(
        anti_entropy_values::repaired(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 685265706169726564
                     a26773657373696f6e03676f626a6563747380",
    );
}

#[test]
fn message_anti_entropy_purge() {
    // AntiEntropyMsg::Purge:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Purge": {"entries": [{"bucket": h'62', "key":
    // h'6b', "digest": 7}]}}}}
    check_anti_entropy(
        anti_entropy_values::purge(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 655075726765
                     a167656e747269657381a3666275636b65744162636b6579416b666469676573
                     7407",
    );
}

#[test]
fn message_anti_entropy_hints() {
    // AntiEntropyMsg::Hints:
    // {"from": 1, "to": 2, "msg": {"AntiEntropy": {"Hints": {"owners": [4]}}}}
    check_anti_entropy(
        anti_entropy_values::hints(),
        "a36466726f6d0162746f02636d7367a1
                 6b416e7469456e74726f7079 a1 6548696e7473
                     a1666f776e6572738104",
    );
}

mod admin_values {
    use ringkv::message::{Envelope, Message};
    use ringkv::protocol::{AdminMsg, ErrorReply, Op, Reply};
    use ringkv::NodeId;
    use serde_bytes::ByteBuf;

    fn env(msg: Message) -> Envelope {
        Envelope::new(NodeId(1), NodeId(2), msg)
    }

    pub fn ask() -> Envelope {
        let op = ringkv::codec::encode(&Op::Flush).unwrap();
        env(Message::Admin(AdminMsg::Ask {
            id: 5,
            op: ByteBuf::from(op),
        }))
    }

    pub fn answer() -> Envelope {
        let result: Result<Reply, ErrorReply> = Ok(Reply::Repair { until_rounds: 2 });
        let result = ringkv::codec::encode(&result).unwrap();
        env(Message::Admin(AdminMsg::Answer {
            id: 5,
            result: ByteBuf::from(result),
        }))
    }
}

#[test]
fn message_admin_ask_and_answer() {
    // AdminMsg::Ask: {"from": 1, "to": 2, "msg": {"Admin": {"Ask": {"id": 5,
    // "op": h'65466c757368'}}}}: the op is the client protocol's "Flush",
    // nested as bytes.
    check_envelope(
        admin_values::ask(),
        "a36466726f6d0162746f02636d7367a1
                 65 41646d696e a1 63 41736b
                     a2 62 6964 05 62 6f70 46 65466c757368",
    );
    // AdminMsg::Answer: {"from": 1, "to": 2, "msg": {"Admin": {"Answer":
    // {"id": 5, "result": h'...'}}}}: the result is the client protocol's
    // {"Ok": {"Repair": {"until_rounds": 2}}}, nested as bytes.
    check_envelope(
        admin_values::answer(),
        "a36466726f6d0162746f02636d7367a1
                 65 41646d696e a1 66 416e73776572
                     a2 62 6964 05 66 726573756c74 58 1b
                         a1 62 4f6b a1 66 526570616972 a1
                             6c 756e74696c5f726f756e6473 02",
    );
}
