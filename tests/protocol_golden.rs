//! Golden byte vectors for the client protocol: a [`Request`] with every
//! [`Op`], a [`Response`] with every [`Reply`] and with errors, and every
//! [`ErrorCode`], written out as the bytes a node sends and accepts.
//!
//! `docs/protocol.md` quotes these values; a client written in another
//! language can test its encoder and decoder against this file. For each
//! vector it proves, as `tests/codec_golden.rs` does for node-to-node
//! messages:
//!
//! 1. `ringkv::codec::encode(&value)` produces exactly these bytes;
//! 2. `ringkv::codec::decode(bytes)` gives back exactly `value`;
//! 3. `ciborium`, an independent CBOR implementation, decodes the bytes to
//!    the same `value` ...
//! 4. ... and re-encodes that value to the identical bytes.
//!
//! Plus a shape check: every byte field is a CBOR byte string. The only
//! arrays are lists: of maps, of byte strings (set members), and the node
//! id lists of a receipt (`asked`, `answered`, `repaired`: arrays of
//! unsigned integers; `fallbacks`: arrays of `[fallback, owner]` pairs).
//! An array of integers anywhere else is what a byte field missing
//! `serde_bytes` looks like, and fails.
//!
//! Layout: one map pair per line, nested pairs indented under their map's
//! head byte; the comment above each vector is the same value in CBOR
//! diagnostic notation (RFC 8949, section 8).
//!
//! `src/protocol.rs` has a unit test that fails when a variant of `Op`,
//! `Reply` or `ErrorCode` is added without a vector here. If a vector has
//! to change, the protocol changed: raise `CLIENT_PROTOCOL_VERSION`.

use std::fmt::Debug;

use ciborium::value::Value;
use ringkv::codec;
use serde::{de::DeserializeOwned, Serialize};

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
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {hex}");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fields that are lists of node ids: a receipt's, a transfer's sources,
/// the peers of `BlockOutbound` and `Blocked`, and the nodes of `OnNodes`.
const NODE_LISTS: &[&str] = &["asked", "answered", "repaired", "sources", "peers", "nodes"];

/// Fails on a map key that is not text, or an array that is not a list of
/// maps, of byte strings, or (under a receipt's keys) of node ids.
fn assert_shapes(value: &Value, key: Option<&str>, what: &str) {
    match value {
        Value::Array(items) => {
            let ok = items.iter().all(|i| i.is_map())
                || items.iter().all(|i| i.is_bytes())
                || (key.is_some_and(|k| NODE_LISTS.contains(&k))
                    && items.iter().all(|i| i.is_integer()))
                || (key == Some("fallbacks")
                    && items.iter().all(|i| {
                        i.as_array()
                            .is_some_and(|p| p.len() == 2 && p.iter().all(|n| n.is_integer()))
                    }));
            assert!(ok, "{what}: unexpected array under {key:?}: {value:?}");
            for item in items {
                if item.is_map() {
                    assert_shapes(item, None, what);
                }
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                let name = k
                    .as_text()
                    .unwrap_or_else(|| panic!("{what}: map key is not text: {k:?}"));
                assert_shapes(v, Some(name), what);
            }
        }
        _ => {}
    }
}

/// The four checks described at the top of the file, and the shape check.
fn check<T>(value: T, golden_hex: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let golden = unhex(golden_hex);
    let what = format!("{value:?}");
    let encoded = codec::encode(&value).unwrap();
    assert_eq!(hex(&encoded), hex(&golden), "ringkv encodes {what}");
    let decoded: T = codec::decode(&golden, 1 << 20).unwrap();
    assert_eq!(decoded, value, "ringkv decodes the vector of {what}");
    let by_ciborium: T = ciborium::de::from_reader(golden.as_slice())
        .unwrap_or_else(|e| panic!("ciborium cannot decode the vector of {what}: {e}"));
    assert_eq!(by_ciborium, value, "ciborium decodes the vector of {what}");
    let mut reencoded = Vec::new();
    ciborium::ser::into_writer(&by_ciborium, &mut reencoded).unwrap();
    assert_eq!(hex(&reencoded), hex(&golden), "ciborium re-encodes {what}");
    let tree: Value = ciborium::de::from_reader(golden.as_slice()).unwrap();
    assert_shapes(&tree, None, &what);
}

mod values {
    use ringkv::crdt::CrdtKind;
    use ringkv::protocol::*;
    use ringkv::replication::get::Repair;
    use ringkv::replication::{Consistency, Receipt};
    use ringkv::version::ConflictPolicy;
    use ringkv::NodeId;
    use serde_bytes::ByteBuf;

    pub fn b(bytes: &[u8]) -> ByteBuf {
        ByteBuf::from(bytes.to_vec())
    }

    pub fn request(id: u64, op: Op) -> Request {
        Request { id, op }
    }

    pub fn ok(id: u64, reply: Reply) -> Response {
        Response {
            id,
            result: Ok(reply),
        }
    }

    pub fn bucket_info() -> BucketInfo {
        BucketInfo {
            n: 3,
            r: Consistency::Quorum,
            w: Consistency::Count(2),
            policy: ConflictPolicy::Crdt(CrdtKind::OrSet),
            sloppy_quorum: true,
            timeout_ms: 5000,
        }
    }

    /// A put on three primaries where node 2 was down: node 3 is a
    /// fallback holding a hint for it.
    pub fn receipt() -> Receipt {
        Receipt {
            asked: vec![NodeId(1), NodeId(3)],
            answered: vec![NodeId(1), NodeId(3)],
            fallbacks: vec![(NodeId(3), NodeId(2))],
            repaired: vec![],
        }
    }

    pub fn read_receipt() -> Receipt {
        Receipt {
            asked: vec![NodeId(1), NodeId(2), NodeId(3)],
            answered: vec![NodeId(2), NodeId(1)],
            fallbacks: vec![],
            repaired: vec![NodeId(3)],
        }
    }

    pub fn hello() -> Request {
        request(
            1,
            Op::Hello {
                version: 1,
                client: "py".into(),
                user: None,
                password: None,
            },
        )
    }

    pub fn hello_with_credentials() -> Request {
        request(
            1,
            Op::Hello {
                version: 1,
                client: "py".into(),
                user: Some("ann".into()),
                password: Some("pw".into()),
            },
        )
    }

    pub fn get_defaults() -> Request {
        request(
            2,
            Op::Get {
                bucket: b(b"b"),
                key: b(b"k"),
                options: ReadOptions::default(),
            },
        )
    }

    pub fn get_options() -> Request {
        request(
            3,
            Op::Get {
                bucket: b(b"b"),
                key: b(b"k"),
                options: ReadOptions {
                    r: Some(Consistency::All),
                    repair: Some(Repair::BeforeAnswer),
                    sloppy_quorum: Some(false),
                    timeout_ms: Some(250),
                },
            },
        )
    }

    pub fn put() -> Request {
        request(
            4,
            Op::Put {
                bucket: b(b"b"),
                key: b(b"k"),
                value: b(b"v"),
                context: Some(b(&[0xa1, 0x01, 0x01])),
                options: WriteOptions {
                    w: Some(Consistency::One),
                    sloppy_quorum: None,
                    timeout_ms: None,
                },
            },
        )
    }

    pub fn delete() -> Request {
        request(
            5,
            Op::Delete {
                bucket: b(b"b"),
                key: b(b"k"),
                context: None,
                options: WriteOptions::default(),
            },
        )
    }

    pub fn counter_add() -> Request {
        request(
            6,
            Op::CounterAdd {
                bucket: b(b"c"),
                key: b(b"n"),
                by: -3,
                options: WriteOptions::default(),
            },
        )
    }

    pub fn counter_get() -> Request {
        request(
            7,
            Op::CounterGet {
                bucket: b(b"c"),
                key: b(b"n"),
                options: ReadOptions::default(),
            },
        )
    }

    pub fn set_add() -> Request {
        request(
            8,
            Op::SetAdd {
                bucket: b(b"s"),
                key: b(b"k"),
                members: vec![b(b"x"), b(b"y")],
                options: WriteOptions::default(),
                count_only: false,
            },
        )
    }

    pub fn set_remove() -> Request {
        request(
            9,
            Op::SetRemove {
                bucket: b(b"s"),
                key: b(b"k"),
                members: vec![b(b"x")],
                options: WriteOptions::default(),
                count_only: false,
            },
        )
    }

    pub fn set_members() -> Request {
        request(
            10,
            Op::SetMembers {
                bucket: b(b"s"),
                key: b(b"k"),
                options: ReadOptions::default(),
            },
        )
    }

    pub fn get_bucket() -> Request {
        request(11, Op::GetBucket { bucket: b(b"s") })
    }

    pub fn set_bucket() -> Request {
        request(
            12,
            Op::SetBucket {
                bucket: b(b"s"),
                props: bucket_info(),
            },
        )
    }

    pub fn ring() -> Request {
        request(13, Op::Ring)
    }

    pub fn status() -> Request {
        request(14, Op::Status)
    }

    pub fn local_get() -> Request {
        request(
            16,
            Op::LocalGet {
                bucket: b(b"b"),
                key: b(b"k"),
            },
        )
    }

    pub fn preference_list() -> Request {
        request(
            15,
            Op::PreferenceList {
                bucket: b(b"b"),
                key: b(b"k"),
            },
        )
    }

    pub fn leave() -> Request {
        request(17, Op::Leave)
    }

    pub fn remove_node() -> Request {
        request(18, Op::RemoveNode { node: NodeId(4) })
    }

    pub fn forget() -> Request {
        request(23, Op::Forget { node: NodeId(4) })
    }

    pub fn block_outbound() -> Request {
        request(
            19,
            Op::BlockOutbound {
                peers: vec![NodeId(3), NodeId(4)],
            },
        )
    }

    pub fn reply_blocked() -> Response {
        ok(
            19,
            Reply::Blocked {
                peers: vec![NodeId(3), NodeId(4)],
            },
        )
    }

    pub fn scan() -> Request {
        request(
            21,
            Op::Scan {
                bucket: b(b"b"),
                cursor: Some(b(&[1, 1, 2, 3, 4, 5, 6, 7, 8])),
                limit: 100,
                options: ReadOptions::default(),
            },
        )
    }

    fn scan_receipt() -> Receipt {
        Receipt {
            asked: vec![NodeId(1), NodeId(2)],
            answered: vec![NodeId(2), NodeId(1)],
            fallbacks: vec![],
            repaired: vec![],
        }
    }

    pub fn reply_keys() -> Response {
        ok(
            21,
            Reply::Keys {
                keys: vec![b(b"k1"), b(b"k2")],
                cursor: Some(b(&[1, 1, 2, 3, 4, 5, 6, 7, 9])),
                receipt: scan_receipt(),
            },
        )
    }

    pub fn reply_keys_done() -> Response {
        ok(
            22,
            Reply::Keys {
                keys: vec![],
                cursor: None,
                receipt: scan_receipt(),
            },
        )
    }

    pub fn multi_get() -> Request {
        request(
            30,
            Op::MultiGet {
                bucket: b(b"b"),
                keys: vec![b(b"k1"), b(b"k2")],
                options: ReadOptions::default(),
            },
        )
    }

    pub fn multi_put() -> Request {
        request(
            31,
            Op::MultiPut {
                bucket: b(b"b"),
                items: vec![
                    PutItem {
                        key: b(b"k1"),
                        value: b(b"v1"),
                        context: None,
                    },
                    PutItem {
                        key: b(b"k2"),
                        value: b(b"v2"),
                        context: Some(b(&[0xa1, 0x01, 0x01])),
                    },
                ],
                options: WriteOptions {
                    w: Some(Consistency::Quorum),
                    sloppy_quorum: None,
                    timeout_ms: None,
                },
            },
        )
    }

    /// One key read, one that timed out.
    pub fn reply_objects() -> Response {
        ok(
            30,
            Reply::Objects {
                items: vec![
                    Ok(ObjectItem {
                        value: Some(b(b"v1")),
                        siblings: vec![],
                        context: b(&[0xa1, 0x01, 0x01]),
                        receipt: scan_receipt(),
                    }),
                    Err(ErrorReply {
                        code: ErrorCode::Timeout,
                        message: "1 of 2".into(),
                        retryable: true,
                        indefinite: None,
                        needed: Some(2),
                        got: Some(1),
                    }),
                ],
            },
        )
    }

    /// One write stored, one refused for its context.
    pub fn reply_written_many() -> Response {
        ok(
            31,
            Reply::WrittenMany {
                items: vec![
                    Ok(WrittenItem {
                        context: b(&[0xa1, 0x01, 0x01]),
                        receipt: scan_receipt(),
                    }),
                    Err(ErrorReply {
                        code: ErrorCode::InvalidArgument,
                        message: "bad context".into(),
                        retryable: false,
                        indefinite: Some(false),
                        needed: None,
                        got: None,
                    }),
                ],
            },
        )
    }

    /// A source's status: no transfers into it, one it served.
    pub fn reply_status_served() -> Response {
        ok(
            20,
            Reply::Status(StatusView {
                node: NodeId(2),
                cluster: "ringkv".into(),
                members: vec![],
                keys: 10,
                hints: 0,
                in_flight: 0,
                engine: "lsm".into(),
                corruptions: 0,
                transfers: vec![],
                anti_entropy: Default::default(),
                served: vec![ServedView {
                    receiver: NodeId(4),
                    transfer: 9,
                    pulls: 3,
                    from_start: 1,
                    keys: 30,
                    bytes: 2048,
                    refused: 0,
                }],
            }),
        )
    }

    pub fn reply_ring_changing() -> Response {
        ok(
            17,
            Reply::Ring(RingView {
                epoch: 4,
                nodes: vec![RingNode {
                    node: NodeId(1),
                    vnodes: 2,
                    share: 1.0,
                }],
                change: Some(RingChangeView {
                    kind: "join".into(),
                    node: NodeId(2),
                    target_epoch: 5,
                    moves: 3,
                    done: 1,
                }),
            }),
        )
    }

    pub fn reply_hello() -> Response {
        ok(
            1,
            Reply::Hello {
                version: 1,
                node: NodeId(7),
                cluster: "ringkv".into(),
                role: None,
            },
        )
    }

    pub fn reply_hello_with_role() -> Response {
        ok(
            1,
            Reply::Hello {
                version: 1,
                node: NodeId(7),
                cluster: "ringkv".into(),
                role: Some(ringkv::protocol::Role::Admin),
            },
        )
    }

    pub fn reply_object_value() -> Response {
        ok(
            2,
            Reply::Object {
                value: Some(b(b"v")),
                siblings: vec![],
                context: b(&[0xa1, 0x01, 0x01]),
                receipt: read_receipt(),
            },
        )
    }

    pub fn reply_object_siblings() -> Response {
        ok(
            2,
            Reply::Object {
                value: None,
                siblings: vec![
                    SiblingView {
                        value: Some(b(b"v1")),
                        timestamp_ms: 1_700_000_000_000,
                        node: NodeId(1),
                    },
                    SiblingView {
                        value: None,
                        timestamp_ms: 1_700_000_000_001,
                        node: NodeId(2),
                    },
                ],
                context: b(&[0xa2, 0x01, 0x01, 0x02, 0x01]),
                receipt: Receipt::default(),
            },
        )
    }

    pub fn reply_object_not_found() -> Response {
        ok(
            2,
            Reply::Object {
                value: None,
                siblings: vec![],
                context: b(&[]),
                receipt: Receipt::default(),
            },
        )
    }

    pub fn reply_written() -> Response {
        ok(
            4,
            Reply::Written {
                context: b(&[0xa1, 0x01, 0x02]),
                receipt: receipt(),
            },
        )
    }

    pub fn reply_counter() -> Response {
        ok(
            6,
            Reply::Counter {
                value: -3,
                receipt: Receipt::default(),
            },
        )
    }

    pub fn reply_set() -> Response {
        ok(
            8,
            Reply::Set {
                members: vec![b(b"x"), b(b"y")],
                receipt: Receipt::default(),
                changed: None,
            },
        )
    }

    pub fn reply_bucket() -> Response {
        ok(
            11,
            Reply::Bucket {
                props: bucket_info(),
            },
        )
    }

    pub fn reply_ring() -> Response {
        ok(
            13,
            Reply::Ring(RingView {
                epoch: 4,
                nodes: vec![
                    RingNode {
                        node: NodeId(1),
                        vnodes: 64,
                        share: 0.5,
                    },
                    RingNode {
                        node: NodeId(2),
                        vnodes: 64,
                        share: 0.1,
                    },
                ],
                change: None,
            }),
        )
    }

    pub fn reply_status() -> Response {
        ok(
            14,
            Reply::Status(StatusView {
                node: NodeId(1),
                cluster: "ringkv".into(),
                members: vec![MemberView {
                    node: NodeId(2),
                    addr: "127.0.0.1:7001".into(),
                    state: "Alive".into(),
                    phi: 0.25,
                    incarnation: 3,
                }],
                keys: 1000,
                hints: 0,
                in_flight: 2,
                engine: "lsm".into(),
                corruptions: 0,
                transfers: vec![TransferView {
                    id: 7,
                    after: 16,
                    through: 32,
                    sources: vec![NodeId(1)],
                    state: "running".into(),
                    error: None,
                    keys: 100,
                    bytes: 6000,
                    batches: 2,
                    elapsed_ms: 1500,
                }],
                anti_entropy: Default::default(),
                served: vec![],
            }),
        )
    }

    pub fn reply_preference() -> Response {
        ok(
            15,
            Reply::Preference {
                targets: vec![
                    PreferenceEntry {
                        node: NodeId(1),
                        fallback_for: None,
                    },
                    PreferenceEntry {
                        node: NodeId(4),
                        fallback_for: Some(NodeId(2)),
                    },
                ],
            },
        )
    }

    pub fn error_unavailable() -> Response {
        Response {
            id: 4,
            result: Err(ErrorReply {
                code: ErrorCode::Unavailable,
                message: "1 of 2".into(),
                retryable: true,
                indefinite: Some(false),
                needed: Some(2),
                got: Some(1),
            }),
        }
    }

    pub fn error_bad_request() -> Response {
        Response {
            id: 0,
            result: Err(ErrorReply::new(ErrorCode::BadRequest, "bad", false)),
        }
    }
}

#[test]
fn request_hello() {
    use values::*;
    // {"id": 1, "op": {"Hello": {"version": 1, "client": "py"}}}
    check(
        hello(),
        "a2
             62 6964 01
             62 6f70 a1
                 65 48656c6c6f a2
                     67 76657273696f6e 01
                     66 636c69656e74 62 7079",
    );
}

#[test]
fn request_hello_with_credentials() {
    use values::*;
    // {"id": 1, "op": {"Hello": {"version": 1, "client": "py", "user": "ann", "password": "pw"}}}
    check(
        hello_with_credentials(),
        "a2
             62 6964 01
             62 6f70 a1
                 65 48656c6c6f a4
                     67 76657273696f6e 01
                     66 636c69656e74 62 7079
                     64 75736572 63 616e6e
                     68 70617373776f7264 62 7077",
    );
}

#[test]
fn request_get() {
    use values::*;
    // {"id": 2, "op": {"Get": {"bucket": h'62', "key": h'6b', "options": {"r": null, "repair":
    // null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        get_defaults(),
        "a2
             62 6964 02
             62 6f70 a1
                 63 476574 a3
                     66 6275636b6574 41 62
                     63 6b6579 41 6b
                     67 6f7074696f6e73 a4
                         61 72 f6
                         66 726570616972 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
    // {"id": 3, "op": {"Get": {"bucket": h'62', "key": h'6b', "options": {"r": "All", "repair":
    // "BeforeAnswer", "sloppy_quorum": false, "timeout_ms": 250}}}}
    check(
        get_options(),
        "a2
             62 6964 03
             62 6f70 a1
                 63 476574 a3
                     66 6275636b6574 41 62
                     63 6b6579 41 6b
                     67 6f7074696f6e73 a4
                         61 72 63 416c6c
                         66 726570616972 6c 4265666f7265416e73776572
                         6d 736c6f7070795f71756f72756d f4
                         6a 74696d656f75745f6d73 18 fa",
    );
}

#[test]
fn request_put() {
    use values::*;
    // {"id": 4, "op": {"Put": {"bucket": h'62', "key": h'6b', "value": h'76', "context":
    // h'a10101', "options": {"w": "One", "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        put(),
        "a2
             62 6964 04
             62 6f70 a1
                 63 507574 a5
                     66 6275636b6574 41 62
                     63 6b6579 41 6b
                     65 76616c7565 41 76
                     67 636f6e74657874 43 a10101
                     67 6f7074696f6e73 a3
                         61 77 63 4f6e65
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_delete() {
    use values::*;
    // {"id": 5, "op": {"Delete": {"bucket": h'62', "key": h'6b', "context": null, "options":
    // {"w": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        delete(),
        "a2
             62 6964 05
             62 6f70 a1
                 66 44656c657465 a4
                     66 6275636b6574 41 62
                     63 6b6579 41 6b
                     67 636f6e74657874 f6
                     67 6f7074696f6e73 a3
                         61 77 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_counter_add() {
    use values::*;
    // {"id": 6, "op": {"CounterAdd": {"bucket": h'63', "key": h'6e', "by": -3, "options": {"w":
    // null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        counter_add(),
        "a2
             62 6964 06
             62 6f70 a1
                 6a 436f756e746572416464 a4
                     66 6275636b6574 41 63
                     63 6b6579 41 6e
                     62 6279 22
                     67 6f7074696f6e73 a3
                         61 77 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_counter_get() {
    use values::*;
    // {"id": 7, "op": {"CounterGet": {"bucket": h'63', "key": h'6e', "options": {"r": null,
    // "repair": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        counter_get(),
        "a2
             62 6964 07
             62 6f70 a1
                 6a 436f756e746572476574 a3
                     66 6275636b6574 41 63
                     63 6b6579 41 6e
                     67 6f7074696f6e73 a4
                         61 72 f6
                         66 726570616972 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_set_add() {
    use values::*;
    // {"id": 8, "op": {"SetAdd": {"bucket": h'73', "key": h'6b', "members": [h'78', h'79'],
    // "options": {"w": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        set_add(),
        "a2
             62 6964 08
             62 6f70 a1
                 66 536574416464 a4
                     66 6275636b6574 41 73
                     63 6b6579 41 6b
                     67 6d656d62657273 82
                         41 78
                         41 79
                     67 6f7074696f6e73 a3
                         61 77 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
    // Asking for the count alone: one more field, last (absent above, so
    // a request without it reads as before).
    let mut counting = set_add();
    if let ringkv::protocol::Op::SetAdd { count_only, .. } = &mut counting.op {
        *count_only = true;
    }
    check(
        counting,
        "a2
             62 6964 08
             62 6f70 a1
                 66 536574416464 a5
                     66 6275636b6574 41 73
                     63 6b6579 41 6b
                     67 6d656d62657273 82
                         41 78
                         41 79
                     67 6f7074696f6e73 a3
                         61 77 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6
                     6a 636f756e745f6f6e6c79 f5",
    );
}

#[test]
fn request_set_remove() {
    use values::*;
    // {"id": 9, "op": {"SetRemove": {"bucket": h'73', "key": h'6b', "members": [h'78'],
    // "options": {"w": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        set_remove(),
        "a2
             62 6964 09
             62 6f70 a1
                 69 53657452656d6f7665 a4
                     66 6275636b6574 41 73
                     63 6b6579 41 6b
                     67 6d656d62657273 81
                         41 78
                     67 6f7074696f6e73 a3
                         61 77 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_set_members() {
    use values::*;
    // {"id": 10, "op": {"SetMembers": {"bucket": h'73', "key": h'6b', "options": {"r": null,
    // "repair": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        set_members(),
        "a2
             62 6964 0a
             62 6f70 a1
                 6a 5365744d656d62657273 a3
                     66 6275636b6574 41 73
                     63 6b6579 41 6b
                     67 6f7074696f6e73 a4
                         61 72 f6
                         66 726570616972 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
}

#[test]
fn request_get_bucket() {
    use values::*;
    // {"id": 11, "op": {"GetBucket": {"bucket": h'73'}}}
    check(
        get_bucket(),
        "a2
             62 6964 0b
             62 6f70 a1
                 69 4765744275636b6574 a1
                     66 6275636b6574 41 73",
    );
}

#[test]
fn request_set_bucket() {
    use values::*;
    // {"id": 12, "op": {"SetBucket": {"bucket": h'73', "props": {"n": 3, "r": "Quorum", "w":
    // {"Count": 2}, "policy": {"Crdt": "OrSet"}, "sloppy_quorum": true, "timeout_ms": 5000}}}}
    check(
        set_bucket(),
        "a2
             62 6964 0c
             62 6f70 a1
                 69 5365744275636b6574 a2
                     66 6275636b6574 41 73
                     65 70726f7073 a6
                         61 6e 03
                         61 72 66 51756f72756d
                         61 77 a1
                             65 436f756e74 02
                         66 706f6c696379 a1
                             64 43726474 65 4f72536574
                         6d 736c6f7070795f71756f72756d f5
                         6a 74696d656f75745f6d73 19 1388",
    );
}

#[test]
fn request_ring_and_status_are_bare_strings() {
    use values::*;
    // {"id": 13, "op": "Ring"}
    check(
        ring(),
        "a2
             62 6964 0d
             62 6f70 64 52696e67",
    );
    // {"id": 14, "op": "Status"}
    check(
        status(),
        "a2
             62 6964 0e
             62 6f70 66 537461747573",
    );
}

#[test]
fn request_leave_and_remove_node() {
    use values::*;
    // {"id": 17, "op": "Leave"}
    check(
        leave(),
        "a2
             62 6964 11
             62 6f70 65 4c65617665",
    );
    // {"id": 18, "op": {"RemoveNode": {"node": 4}}}
    check(
        remove_node(),
        "a2
             62 6964 12
             62 6f70 a1
                 6a 52656d6f76654e6f6465 a1
                     64 6e6f6465 04",
    );
}

#[test]
fn request_forget() {
    use values::*;
    // Op::Forget: {"id": 23, "op": {"Forget": {"node": 4}}}
    check(
        forget(),
        "a2
             62 6964 17
             62 6f70 a1
                 66 466f72676574 a1
                     64 6e6f6465 04",
    );
}

#[test]
fn request_and_response_block_outbound() {
    use values::*;
    // {"id": 19, "op": {"BlockOutbound": {"peers": [3, 4]}}}
    check(
        block_outbound(),
        "a2
             62 6964 13
             62 6f70 a1
                 6d 426c6f636b4f7574626f756e64 a1
                     65 7065657273 82 03 04",
    );
    // {"id": 19, "result": {"Ok": {"Blocked": {"peers": [3, 4]}}}}
    check(
        reply_blocked(),
        "a2
             62 6964 13
             66 726573756c74 a1
                 62 4f6b a1
                     67 426c6f636b6564 a1
                         65 7065657273 82 03 04",
    );
}

#[test]
fn request_and_response_scan() {
    use values::*;
    // Op::Scan: {"id": 21, "op": {"Scan": {"bucket": h'62', "cursor": h'010102030405060708',
    // "limit": 100, "options": {"r": null, "repair": null, "sloppy_quorum": null,
    // "timeout_ms": null}}}}
    check(
        scan(),
        "a2
             62 6964 15
             62 6f70 a1
                 64 5363616e a4
                     66 6275636b6574 41 62
                     66 637572736f72 49 010102030405060708
                     65 6c696d6974 18 64
                     67 6f7074696f6e73 a4
                         61 72 f6
                         66 726570616972 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
    // Reply::Keys: {"id": 21, "result": {"Ok": {"Keys": {"keys": [h'6b31', h'6b32'],
    // "cursor": h'010102030405060709', "receipt": {"asked": [1, 2], "answered": [2, 1],
    // "fallbacks": [], "repaired": []}}}}}
    check(
        reply_keys(),
        "a2
             62 6964 15
             66 726573756c74 a1
                 62 4f6b a1
                     64 4b657973 a3
                         64 6b657973 82 42 6b31 42 6b32
                         66 637572736f72 49 010102030405060709
                         67 72656365697074 a4
                             65 61736b6564 82 01 02
                             68 616e737765726564 82 02 01
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
    // The last page: {"id": 22, "result": {"Ok": {"Keys": {"keys": [], "cursor": null,
    // "receipt": {...}}}}}
    check(
        reply_keys_done(),
        "a2
             62 6964 16
             66 726573756c74 a1
                 62 4f6b a1
                     64 4b657973 a3
                         64 6b657973 80
                         66 637572736f72 f6
                         67 72656365697074 a4
                             65 61736b6564 82 01 02
                             68 616e737765726564 82 02 01
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
}

#[test]
fn response_ring_with_a_change_in_progress() {
    use values::*;
    // {"id": 17, "result": {"Ok": {"Ring": {"epoch": 4, "nodes": [{"node": 1, "vnodes": 2,
    // "share": 1.0_1}], "change": {"kind": "join", "node": 2, "target_epoch": 5, "moves": 3,
    // "done": 1}}}}}
    check(
        reply_ring_changing(),
        "a2
             62 6964 11
             66 726573756c74 a1
                 62 4f6b a1
                     64 52696e67 a3
                         65 65706f6368 04
                         65 6e6f646573 81
                             a3
                                 64 6e6f6465 01
                                 66 766e6f646573 02
                                 65 7368617265 f9 3c00
                         66 6368616e6765 a5
                             64 6b696e64 64 6a6f696e
                             64 6e6f6465 02
                             6c 7461726765745f65706f6368 05
                             65 6d6f766573 03
                             64 646f6e65 01",
    );
}

#[test]
fn request_preference_list() {
    use values::*;
    // {"id": 15, "op": {"PreferenceList": {"bucket": h'62', "key": h'6b'}}}
    check(
        preference_list(),
        "a2
             62 6964 0f
             62 6f70 a1
                 6e 507265666572656e63654c697374 a2
                     66 6275636b6574 41 62
                     63 6b6579 41 6b",
    );
}

#[test]
fn request_local_get() {
    use values::*;
    // {"id": 16, "op": {"LocalGet": {"bucket": h'62', "key": h'6b'}}}
    check(
        local_get(),
        "a2
             62 6964 10
             62 6f70 a1
                 68 4c6f63616c476574 a2
                     66 6275636b6574 41 62
                     63 6b6579 41 6b",
    );
}

#[test]
fn response_hello() {
    use values::*;
    // {"id": 1, "result": {"Ok": {"Hello": {"version": 1, "node": 7, "cluster": "ringkv"}}}}
    check(
        reply_hello(),
        "a2
             62 6964 01
             66 726573756c74 a1
                 62 4f6b a1
                     65 48656c6c6f a3
                         67 76657273696f6e 01
                         64 6e6f6465 07
                         67 636c7573746572 66 72696e676b76",
    );
}

#[test]
fn response_hello_with_role() {
    use values::*;
    // {"id": 1, "result": {"Ok": {"Hello": {"version": 1, "node": 7, "cluster": "ringkv",
    // "role": "admin"}}}}
    check(
        reply_hello_with_role(),
        "a2
             62 6964 01
             66 726573756c74 a1
                 62 4f6b a1
                     65 48656c6c6f a4
                         67 76657273696f6e 01
                         64 6e6f6465 07
                         67 636c7573746572 66 72696e676b76
                         64 726f6c65 65 61646d696e",
    );
}

#[test]
fn response_object() {
    use values::*;
    // {"id": 2, "result": {"Ok": {"Object": {"value": h'76', "siblings": [], "context":
    // h'a10101', "receipt": {"asked": [1, 2, 3], "answered": [2, 1], "fallbacks": [],
    // "repaired": [3]}}}}}
    check(
        reply_object_value(),
        "a2
             62 6964 02
             66 726573756c74 a1
                 62 4f6b a1
                     66 4f626a656374 a4
                         65 76616c7565 41 76
                         68 7369626c696e6773 80
                         67 636f6e74657874 43 a10101
                         67 72656365697074 a4
                             65 61736b6564 83
                                 01
                                 02
                                 03
                             68 616e737765726564 82
                                 02
                                 01
                             69 66616c6c6261636b73 80
                             68 7265706169726564 81
                                 03",
    );
    // {"id": 2, "result": {"Ok": {"Object": {"value": null, "siblings": [{"value": h'7631',
    // "timestamp_ms": 1700000000000, "node": 1}, {"value": null, "timestamp_ms": 1700000000001,
    // "node": 2}], "context": h'a201010201', "receipt": {"asked": [], "answered": [],
    // "fallbacks": [], "repaired": []}}}}}
    check(
        reply_object_siblings(),
        "a2
             62 6964 02
             66 726573756c74 a1
                 62 4f6b a1
                     66 4f626a656374 a4
                         65 76616c7565 f6
                         68 7369626c696e6773 82
                             a3
                                 65 76616c7565 42 7631
                                 6c 74696d657374616d705f6d73 1b 0000018bcfe56800
                                 64 6e6f6465 01
                             a3
                                 65 76616c7565 f6
                                 6c 74696d657374616d705f6d73 1b 0000018bcfe56801
                                 64 6e6f6465 02
                         67 636f6e74657874 45 a201010201
                         67 72656365697074 a4
                             65 61736b6564 80
                             68 616e737765726564 80
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
    // {"id": 2, "result": {"Ok": {"Object": {"value": null, "siblings": [], "context": h'',
    // "receipt": {"asked": [], "answered": [], "fallbacks": [], "repaired": []}}}}}
    check(
        reply_object_not_found(),
        "a2
             62 6964 02
             66 726573756c74 a1
                 62 4f6b a1
                     66 4f626a656374 a4
                         65 76616c7565 f6
                         68 7369626c696e6773 80
                         67 636f6e74657874 40
                         67 72656365697074 a4
                             65 61736b6564 80
                             68 616e737765726564 80
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
}

#[test]
fn response_written() {
    use values::*;
    // {"id": 4, "result": {"Ok": {"Written": {"context": h'a10102', "receipt": {"asked": [1, 3],
    // "answered": [1, 3], "fallbacks": [[3, 2]], "repaired": []}}}}}
    check(
        reply_written(),
        "a2
             62 6964 04
             66 726573756c74 a1
                 62 4f6b a1
                     67 5772697474656e a2
                         67 636f6e74657874 43 a10102
                         67 72656365697074 a4
                             65 61736b6564 82
                                 01
                                 03
                             68 616e737765726564 82
                                 01
                                 03
                             69 66616c6c6261636b73 81
                                 82
                                     03
                                     02
                             68 7265706169726564 80",
    );
}

#[test]
fn response_counter() {
    use values::*;
    // {"id": 6, "result": {"Ok": {"Counter": {"value": -3, "receipt": {"asked": [], "answered":
    // [], "fallbacks": [], "repaired": []}}}}}
    check(
        reply_counter(),
        "a2
             62 6964 06
             66 726573756c74 a1
                 62 4f6b a1
                     67 436f756e746572 a2
                         65 76616c7565 22
                         67 72656365697074 a4
                             65 61736b6564 80
                             68 616e737765726564 80
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
}

#[test]
fn response_set() {
    use values::*;
    // {"id": 8, "result": {"Ok": {"Set": {"members": [h'78', h'79'], "receipt": {"asked": [],
    // "answered": [], "fallbacks": [], "repaired": []}}}}}
    check(
        reply_set(),
        "a2
             62 6964 08
             66 726573756c74 a1
                 62 4f6b a1
                     63 536574 a2
                         67 6d656d62657273 82
                             41 78
                             41 79
                         67 72656365697074 a4
                             65 61736b6564 80
                             68 616e737765726564 80
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80",
    );
    // An add's answer also says how many members it changed: one more
    // field, last, absent from a read's answer (above).
    let mut added = reply_set();
    if let Ok(ringkv::protocol::Reply::Set { changed, .. }) = &mut added.result {
        *changed = Some(1);
    }
    check(
        added,
        "a2
             62 6964 08
             66 726573756c74 a1
                 62 4f6b a1
                     63 536574 a3
                         67 6d656d62657273 82
                             41 78
                             41 79
                         67 72656365697074 a4
                             65 61736b6564 80
                             68 616e737765726564 80
                             69 66616c6c6261636b73 80
                             68 7265706169726564 80
                         67 6368616e676564 01",
    );
}

#[test]
fn response_bucket() {
    use values::*;
    // {"id": 11, "result": {"Ok": {"Bucket": {"props": {"n": 3, "r": "Quorum", "w": {"Count":
    // 2}, "policy": {"Crdt": "OrSet"}, "sloppy_quorum": true, "timeout_ms": 5000}}}}}
    check(
        reply_bucket(),
        "a2
             62 6964 0b
             66 726573756c74 a1
                 62 4f6b a1
                     66 4275636b6574 a1
                         65 70726f7073 a6
                             61 6e 03
                             61 72 66 51756f72756d
                             61 77 a1
                                 65 436f756e74 02
                             66 706f6c696379 a1
                                 64 43726474 65 4f72536574
                             6d 736c6f7070795f71756f72756d f5
                             6a 74696d656f75745f6d73 19 1388",
    );
}

#[test]
fn response_ring_with_floats() {
    use values::*;
    // {"id": 13, "result": {"Ok": {"Ring": {"epoch": 4, "nodes": [{"node": 1, "vnodes": 64,
    // "share": 0.5_1}, {"node": 2, "vnodes": 64, "share": 0.1_3}]}}}}
    check(
        reply_ring(),
        "a2
             62 6964 0d
             66 726573756c74 a1
                 62 4f6b a1
                     64 52696e67 a2
                         65 65706f6368 04
                         65 6e6f646573 82
                             a3
                                 64 6e6f6465 01
                                 66 766e6f646573 18 40
                                 65 7368617265 f9 3800
                             a3
                                 64 6e6f6465 02
                                 66 766e6f646573 18 40
                                 65 7368617265 fb 3fb999999999999a",
    );
}

#[test]
fn response_status() {
    use values::*;
    // {"id": 14, "result": {"Ok": {"Status": {"node": 1, "cluster": "ringkv", "members":
    // [{"node": 2, "addr": "127.0.0.1:7001", "state": "Alive", "phi": 0.25_1, "incarnation":
    // 3}], "keys": 1000, "hints": 0, "in_flight": 2, "engine": "lsm", "transfers": [{"id": 7,
    // "after": 16, "through": 32, "sources": [1], "state": "running", "error": null, "keys":
    // 100, "bytes": 6000, "batches": 2, "elapsed_ms": 1500}], "anti_entropy": {"rounds": 0,
    // "ranges_compared": 0, "exchanges_failed": 0, "leaves_differing": 0, "objects_repaired":
    // 0, "tombstones_purged": 0, "keys_scanned": 0, "last_round_ms": 0, "last_round_at_ms": 0}}}}}
    check(
        reply_status(),
        "a2
             62 6964 0e
             66 726573756c74 a1
                 62 4f6b a1
                     66 537461747573 a9
                         64 6e6f6465 01
                         67 636c7573746572 66 72696e676b76
                         67 6d656d62657273 81
                             a5
                                 64 6e6f6465 02
                                 64 61646472 6e 3132372e302e302e313a37303031
                                 65 7374617465 65 416c697665
                                 63 706869 f9 3400
                                 6b 696e6361726e6174696f6e 03
                         64 6b657973 19 03e8
                         65 68696e7473 00
                         69 696e5f666c69676874 02
                         66 656e67696e65 63 6c736d
                         69 7472616e7366657273 81
                             aa
                                 62 6964 07
                                 65 6166746572 10
                                 67 7468726f756768 18 20
                                 67 736f7572636573 81 01
                                 65 7374617465 67 72756e6e696e67
                                 65 6572726f72 f6
                                 64 6b657973 18 64
                                 65 6279746573 19 1770
                                 67 62617463686573 02
                                 6a 656c61707365645f6d73 19 05dc
                         6c 616e74695f656e74726f7079 a9
                             66 726f756e6473 00
                             6f 72616e6765735f636f6d7061726564 00
                             70 65786368616e6765735f6661696c6564 00
                             70 6c65617665735f646966666572696e67 00
                             70 6f626a656374735f7265706169726564 00
                             71 746f6d6273746f6e65735f707572676564 00
                             6c 6b6579735f7363616e6e6564 00
                             6d 6c6173745f726f756e645f6d73 00
                             70 6c6173745f726f756e645f61745f6d73 00",
    );
}

#[test]
fn response_status_of_a_transfer_source() {
    use values::*;
    // `served` is absent when empty (see response_status); here it is not.
    // {"id": 20, "result": {"Ok": {"Status": {"node": 2, "cluster": "ringkv", "members": [],
    // "keys": 10, "hints": 0, "in_flight": 0, "engine": "lsm", "transfers": [],
    // "anti_entropy": {"rounds": 0, "ranges_compared": 0, "exchanges_failed": 0,
    // "leaves_differing": 0, "objects_repaired": 0, "tombstones_purged": 0, "keys_scanned": 0,
    // "last_round_ms": 0, "last_round_at_ms": 0}, "served": [{"receiver": 4, "transfer": 9,
    // "pulls": 3, "from_start": 1, "keys": 30, "bytes": 2048, "refused": 0}]}}}}
    check(
        reply_status_served(),
        "a2
             62 6964 14
             66 726573756c74 a1
                 62 4f6b a1
                     66 537461747573 aa
                         64 6e6f6465 02
                         67 636c7573746572 66 72696e676b76
                         67 6d656d62657273 80
                         64 6b657973 0a
                         65 68696e7473 00
                         69 696e5f666c69676874 00
                         66 656e67696e65 63 6c736d
                         69 7472616e7366657273 80
                         6c 616e74695f656e74726f7079 a9
                             66 726f756e6473 00
                             6f 72616e6765735f636f6d7061726564 00
                             70 65786368616e6765735f6661696c6564 00
                             70 6c65617665735f646966666572696e67 00
                             70 6f626a656374735f7265706169726564 00
                             71 746f6d6273746f6e65735f707572676564 00
                             6c 6b6579735f7363616e6e6564 00
                             6d 6c6173745f726f756e645f6d73 00
                             70 6c6173745f726f756e645f61745f6d73 00
                         66 736572766564 81
                             a7
                                 68 7265636569766572 04
                                 68 7472616e73666572 09
                                 65 70756c6c73 03
                                 6a 66726f6d5f7374617274 01
                                 64 6b657973 18 1e
                                 65 6279746573 19 0800
                                 67 72656675736564 00",
    );
}

#[test]
fn response_preference() {
    use values::*;
    // {"id": 15, "result": {"Ok": {"Preference": {"targets": [{"node": 1, "fallback_for": null},
    // {"node": 4, "fallback_for": 2}]}}}}
    check(
        reply_preference(),
        "a2
             62 6964 0f
             66 726573756c74 a1
                 62 4f6b a1
                     6a 507265666572656e6365 a1
                         67 74617267657473 82
                             a2
                                 64 6e6f6465 01
                                 6c 66616c6c6261636b5f666f72 f6
                             a2
                                 64 6e6f6465 04
                                 6c 66616c6c6261636b5f666f72 02",
    );
}

#[test]
fn response_errors() {
    use values::*;
    // {"id": 4, "result": {"Err": {"code": "Unavailable", "message": "1 of 2", "retryable":
    // true, "indefinite": false, "needed": 2, "got": 1}}}
    check(
        error_unavailable(),
        "a2
             62 6964 04
             66 726573756c74 a1
                 63 457272 a6
                     64 636f6465 6b 556e617661696c61626c65
                     67 6d657373616765 66 31206f662032
                     69 726574727961626c65 f5
                     6a 696e646566696e697465 f4
                     66 6e6565646564 02
                     63 676f74 01",
    );
    // {"id": 0, "result": {"Err": {"code": "BadRequest", "message": "bad", "retryable": false,
    // "indefinite": null, "needed": null, "got": null}}}
    check(
        error_bad_request(),
        "a2
             62 6964 00
             66 726573756c74 a1
                 63 457272 a6
                     64 636f6465 6a 42616452657175657374
                     67 6d657373616765 63 626164
                     69 726574727961626c65 f4
                     6a 696e646566696e697465 f6
                     66 6e6565646564 f6
                     63 676f74 f6",
    );
}

#[test]
fn every_error_code_is_a_bare_text_string() {
    use ringkv::protocol::ErrorCode;
    check(ErrorCode::BadRequest, "6a 42616452657175657374"); // "BadRequest"
    check(
        ErrorCode::UnsupportedVersion,
        "72 556e737570706f7274656456657273696f6e",
    ); // "UnsupportedVersion"
    check(
        ErrorCode::InvalidArgument,
        "6f 496e76616c6964417267756d656e74",
    ); // "InvalidArgument"
    check(ErrorCode::Unavailable, "6b 556e617661696c61626c65"); // "Unavailable"
    check(ErrorCode::Timeout, "67 54696d656f7574"); // "Timeout"
    check(
        ErrorCode::TooManySiblings,
        "6f 546f6f4d616e795369626c696e6773",
    ); // "TooManySiblings"
    check(ErrorCode::ReplicaFailed, "6d 5265706c6963614661696c6564"); // "ReplicaFailed"
    check(ErrorCode::Overloaded, "6a 4f7665726c6f61646564"); // "Overloaded"
    check(ErrorCode::ShuttingDown, "6c 5368757474696e67446f776e"); // "ShuttingDown"
    check(
        ErrorCode::Unauthenticated,
        "6f 556e61757468656e74696361746564",
    ); // "Unauthenticated"
    check(
        ErrorCode::PermissionDenied,
        "70 5065726d697373696f6e44656e696564",
    ); // "PermissionDenied"
    check(ErrorCode::Internal, "68 496e7465726e616c"); // "Internal"
}

#[test]
fn what_a_minimal_client_may_leave_out_or_add() {
    use ringkv::protocol::{Op, Request, WriteOptions};
    use values::b;
    // {"id": 2, "op": {"Get": {"bucket": h'62', "key": h'6b'}}}: no options.
    let get: Request = codec::decode(
        &unhex("a2 62 6964 02 62 6f70 a1 63 476574 a2 66 6275636b6574 41 62 63 6b6579 41 6b"),
        1024,
    )
    .unwrap();
    assert_eq!(get, values::get_defaults());
    // {"id": 5, "op": {"Delete": {"bucket": h'62', "key": h'6b', "options": {}}}}:
    // no context, an empty options map.
    let delete: Request = codec::decode(
        &unhex(
            "a2 62 6964 05 62 6f70 a1 66 44656c657465 a3
                66 6275636b6574 41 62 63 6b6579 41 6b 67 6f7074696f6e73 a0",
        ),
        1024,
    )
    .unwrap();
    assert_eq!(delete, values::delete());
    // {"id": 4, "op": {"Put": {...}}, "trace": "x"}: an unknown field is
    // skipped, at the top and inside the op; "w" is spelled {"Count": 1}
    // here and still decodes.
    let put: Request = codec::decode(
        &unhex(
            "a3 62 6964 04 62 6f70 a1 63 507574 a5
                66 6275636b6574 41 62 63 6b6579 41 6b 65 76616c7565 41 76
                67 6f7074696f6e73 a1 61 77 a1 65 436f756e74 01
                64 68696e74 f5
             65 7472616365 61 78",
        ),
        1024,
    )
    .unwrap();
    assert_eq!(
        put,
        Request {
            id: 4,
            op: Op::Put {
                bucket: b(b"b"),
                key: b(b"k"),
                value: b(b"v"),
                context: None,
                options: WriteOptions {
                    w: Some(ringkv::replication::Consistency::Count(1)),
                    ..WriteOptions::default()
                },
            },
        }
    );
}

mod admin_values {
    use super::values::{ok, request};
    use ringkv::protocol::*;
    use ringkv::NodeId;

    pub fn flush() -> Request {
        request(24, Op::Flush)
    }

    pub fn compact() -> Request {
        request(25, Op::Compact)
    }

    pub fn repair() -> Request {
        request(
            26,
            Op::Repair {
                range: Some(TokenSpan {
                    after: 16,
                    through: 32,
                }),
                peer: Some(NodeId(2)),
            },
        )
    }

    pub fn snapshot() -> Request {
        request(27, Op::Snapshot { dir: "/s".into() })
    }

    pub fn drain() -> Request {
        request(28, Op::Drain)
    }

    pub fn on_nodes() -> Request {
        request(
            29,
            Op::OnNodes {
                nodes: Some(vec![NodeId(1), NodeId(2)]),
                op: Box::new(Op::Flush),
                timeout_ms: Some(5000),
            },
        )
    }

    pub fn reply_storage() -> Response {
        ok(
            24,
            Reply::Storage(StorageView {
                engine: "lsm".into(),
                memtable_bytes: 0,
                disk_bytes: 4096,
                flushes: 2,
                compactions: 1,
            }),
        )
    }

    pub fn reply_repair() -> Response {
        ok(26, Reply::Repair { until_rounds: 7 })
    }

    pub fn reply_snapshot() -> Response {
        ok(
            27,
            Reply::Snapshot(SnapshotView {
                dir: "/s".into(),
                node: NodeId(1),
                cluster: "c".into(),
                engine: "lsm".into(),
                entries: 3,
                bytes: 100,
                taken_at_ms: 1000,
            }),
        )
    }

    /// Node 1 answered; node 2 did not.
    pub fn reply_nodes() -> Response {
        ok(
            29,
            Reply::Nodes {
                answers: vec![
                    NodeAnswer {
                        node: NodeId(1),
                        result: Ok(Reply::Repair { until_rounds: 2 }),
                    },
                    NodeAnswer {
                        node: NodeId(2),
                        result: Err(ErrorReply::new(ErrorCode::Timeout, "t", true)),
                    },
                ],
            },
        )
    }
}

#[test]
fn admin_requests_and_responses() {
    use admin_values::*;
    // Op::Flush: {"id": 24, "op": "Flush"}
    check(
        flush(),
        "a2
             62 6964 1818
             62 6f70 65 466c757368",
    );
    // Op::Compact: {"id": 25, "op": "Compact"}
    check(
        compact(),
        "a2
             62 6964 1819
             62 6f70 67 436f6d70616374",
    );
    // Op::Repair: {"id": 26, "op": {"Repair": {"range": {"after": 16,
    // "through": 32}, "peer": 2}}}
    check(
        repair(),
        "a2
             62 6964 181a
             62 6f70 a1
                 66 526570616972 a2
                     65 72616e6765 a2
                         65 6166746572 10
                         67 7468726f756768 1820
                     64 70656572 02",
    );
    // Op::Snapshot: {"id": 27, "op": {"Snapshot": {"dir": "/s"}}}
    check(
        snapshot(),
        "a2
             62 6964 181b
             62 6f70 a1
                 68 536e617073686f74 a1
                     63 646972 62 2f73",
    );
    // Op::Drain: {"id": 28, "op": "Drain"}
    check(
        drain(),
        "a2
             62 6964 181c
             62 6f70 65 447261696e",
    );
    // Op::OnNodes: {"id": 29, "op": {"OnNodes": {"nodes": [1, 2],
    // "op": "Flush", "timeout_ms": 5000}}}
    check(
        on_nodes(),
        "a2
             62 6964 181d
             62 6f70 a1
                 67 4f6e4e6f646573 a3
                     65 6e6f646573 82 01 02
                     62 6f70 65 466c757368
                     6a 74696d656f75745f6d73 191388",
    );
    // Reply::Storage: {"id": 24, "result": {"Ok": {"Storage": {"engine":
    // "lsm", "memtable_bytes": 0, "disk_bytes": 4096, "flushes": 2,
    // "compactions": 1}}}}
    check(
        reply_storage(),
        "a2
             62 6964 1818
             66 726573756c74 a1
                 62 4f6b a1
                     67 53746f72616765 a5
                         66 656e67696e65 63 6c736d
                         6e 6d656d7461626c655f6279746573 00
                         6a 6469736b5f6279746573 191000
                         67 666c7573686573 02
                         6b 636f6d70616374696f6e73 01",
    );
    // Reply::Repair: {"id": 26, "result": {"Ok": {"Repair":
    // {"until_rounds": 7}}}}
    check(
        reply_repair(),
        "a2
             62 6964 181a
             66 726573756c74 a1
                 62 4f6b a1
                     66 526570616972 a1
                         6c 756e74696c5f726f756e6473 07",
    );
    // Reply::Snapshot: {"id": 27, "result": {"Ok": {"Snapshot": {"dir":
    // "/s", "node": 1, "cluster": "c", "engine": "lsm", "entries": 3,
    // "bytes": 100, "taken_at_ms": 1000}}}}
    check(
        reply_snapshot(),
        "a2
             62 6964 181b
             66 726573756c74 a1
                 62 4f6b a1
                     68 536e617073686f74 a7
                         63 646972 62 2f73
                         64 6e6f6465 01
                         67 636c7573746572 61 63
                         66 656e67696e65 63 6c736d
                         67 656e7472696573 03
                         65 6279746573 1864
                         6b 74616b656e5f61745f6d73 1903e8",
    );
    // Reply::Nodes: {"id": 29, "result": {"Ok": {"Nodes": {"answers": [
    //   {"node": 1, "result": {"Ok": {"Repair": {"until_rounds": 2}}}},
    //   {"node": 2, "result": {"Err": {"code": "Timeout", "message": "t",
    //     "retryable": true, "indefinite": null, "needed": null,
    //     "got": null}}}]}}}}
    check(
        reply_nodes(),
        "a2
             62 6964 181d
             66 726573756c74 a1
                 62 4f6b a1
                     65 4e6f646573 a1
                         67 616e7377657273 82
                             a2
                                 64 6e6f6465 01
                                 66 726573756c74 a1
                                     62 4f6b a1
                                         66 526570616972 a1
                                             6c 756e74696c5f726f756e6473 02
                             a2
                                 64 6e6f6465 02
                                 66 726573756c74 a1
                                     63 457272 a6
                                         64 636f6465 67 54696d656f7574
                                         67 6d657373616765 61 74
                                         69 726574727961626c65 f5
                                         6a 696e646566696e697465 f6
                                         66 6e6565646564 f6
                                         63 676f74 f6",
    );
}

#[test]
fn request_and_response_multi_get() {
    use values::*;
    // Op::MultiGet: {"id": 30, "op": {"MultiGet": {"bucket": h'62', "keys": [h'6b31', h'6b32'],
    // "options": {"r": null, "repair": null, "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        multi_get(),
        "a2
             62 6964 18 1e
             62 6f70 a1
                 68 4d756c7469476574 a3
                     66 6275636b6574 41 62
                     64 6b657973 82
                         42 6b31
                         42 6b32
                     67 6f7074696f6e73 a4
                         61 72 f6
                         66 726570616972 f6
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
    // Reply::Objects, one item per key in request order: {"id": 30, "result": {"Ok":
    // {"Objects": {"items": [{"Ok": {"value": h'7631', "siblings": [], "context": h'a10101',
    // "receipt": {"asked": [1, 2], "answered": [2, 1], "fallbacks": [], "repaired": []}}},
    // {"Err": {"code": "Timeout", "message": "1 of 2", "retryable": true, "indefinite": null,
    // "needed": 2, "got": 1}}]}}}}
    check(
        reply_objects(),
        "a2
             62 6964 18 1e
             66 726573756c74 a1
                 62 4f6b a1
                     67 4f626a65637473 a1
                         65 6974656d73 82
                             a1
                                 62 4f6b a4
                                     65 76616c7565 42 7631
                                     68 7369626c696e6773 80
                                     67 636f6e74657874 43 a10101
                                     67 72656365697074 a4
                                         65 61736b6564 82
                                             01
                                             02
                                         68 616e737765726564 82
                                             02
                                             01
                                         69 66616c6c6261636b73 80
                                         68 7265706169726564 80
                             a1
                                 63 457272 a6
                                     64 636f6465 67 54696d656f7574
                                     67 6d657373616765 66 31206f662032
                                     69 726574727961626c65 f5
                                     6a 696e646566696e697465 f6
                                     66 6e6565646564 02
                                     63 676f74 01",
    );
}

#[test]
fn request_and_response_multi_put() {
    use values::*;
    // Op::MultiPut: {"id": 31, "op": {"MultiPut": {"bucket": h'62', "items": [{"key": h'6b31',
    // "value": h'7631', "context": null}, {"key": h'6b32', "value": h'7632', "context":
    // h'a10101'}], "options": {"w": "Quorum", "sloppy_quorum": null, "timeout_ms": null}}}}
    check(
        multi_put(),
        "a2
             62 6964 18 1f
             62 6f70 a1
                 68 4d756c7469507574 a3
                     66 6275636b6574 41 62
                     65 6974656d73 82
                         a3
                             63 6b6579 42 6b31
                             65 76616c7565 42 7631
                             67 636f6e74657874 f6
                         a3
                             63 6b6579 42 6b32
                             65 76616c7565 42 7632
                             67 636f6e74657874 43 a10101
                     67 6f7074696f6e73 a3
                         61 77 66 51756f72756d
                         6d 736c6f7070795f71756f72756d f6
                         6a 74696d656f75745f6d73 f6",
    );
    // Reply::WrittenMany: {"id": 31, "result": {"Ok": {"WrittenMany": {"items": [{"Ok":
    // {"context": h'a10101', "receipt": {"asked": [1, 2], "answered": [2, 1], "fallbacks": [],
    // "repaired": []}}}, {"Err": {"code": "InvalidArgument", "message": "bad context",
    // "retryable": false, "indefinite": false, "needed": null, "got": null}}]}}}}
    check(
        reply_written_many(),
        "a2
             62 6964 18 1f
             66 726573756c74 a1
                 62 4f6b a1
                     6b 5772697474656e4d616e79 a1
                         65 6974656d73 82
                             a1
                                 62 4f6b a2
                                     67 636f6e74657874 43 a10101
                                     67 72656365697074 a4
                                         65 61736b6564 82
                                             01
                                             02
                                         68 616e737765726564 82
                                             02
                                             01
                                         69 66616c6c6261636b73 80
                                         68 7265706169726564 80
                             a1
                                 63 457272 a6
                                     64 636f6465 6f 496e76616c6964417267756d656e74
                                     67 6d657373616765 6b 62616420636f6e74657874
                                     69 726574727961626c65 f4
                                     6a 696e646566696e697465 f4
                                     66 6e6565646564 f6
                                     63 676f74 f6",
    );
}
