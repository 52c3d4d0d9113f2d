//! CBOR encoding and decoding of everything that crosses a wire or a disk.
//!
//! This is the only file in the project that names the CBOR crate
//! (`serde_cbor`, pinned exactly; see `Cargo.toml` for why). Everything else
//! calls [`encode`], [`encode_frame`] and [`decode`]. Values use serde's
//! default representation: structs as maps keyed by field name, enums
//! externally tagged, byte fields as CBOR byte strings (through
//! `serde_bytes`). That is the representation every serde CBOR library
//! produces, so the golden vectors in `tests/codec_golden.rs`, which also
//! check the bytes against an independent CBOR implementation, pin the format
//! down for a later swap of crates.
//!
//! # What decoding guarantees
//!
//! [`decode`] takes a whole frame as a slice and
//! - refuses a frame longer than the caller's maximum before looking at it;
//! - refuses truncated input, trailing bytes, and anything not of the
//!   expected shape, with [`Error::Decode`];
//! - refuses nesting deeper than the decoder's recursion limit (128), so
//!   hostile input cannot overflow the stack;
//! - never allocates more than a small multiple of the input's length: byte
//!   and text strings are bounded by the slice they are read from, and serde
//!   caps the capacity it reserves from a length prefix.
//!
//! It never panics on any input; `tests/it/codec_random_input.rs` checks that
//! with random and mutated frames.

use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// The largest frame a node accepts or sends by default: 16 MiB.
///
/// Large enough for a handoff batch or an object with many siblings, small
/// enough that a hostile or broken peer cannot make a node buffer much
/// memory for one frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The largest frame accepted during a connection handshake: 4 KiB.
///
/// Handshake frames are a few hundred bytes; an unauthenticated peer gets no
/// more buffer than that.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 4 * 1024;

/// Encodes `value` as CBOR.
///
/// ```
/// use ringkv::{codec, Envelope, Message, NodeId};
/// let env = Envelope::new(NodeId(1), NodeId(2), Message::Ping { seq: 7, payload: vec![] });
/// let bytes = codec::encode(&env).unwrap();
/// let back: Envelope = codec::decode(&bytes, 1024).unwrap();
/// assert_eq!(back, env);
/// ```
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the CBOR encoding of `value` to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_cbor::to_writer(out, value).map_err(|e| Error::Encode {
        what: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

/// The xxh3 of `value`'s CBOR encoding (as [`encode`] gives it), encoded
/// into a buffer this thread keeps: for digests computed often, of
/// values encoded only to be hashed.
pub fn digest<T: Serialize>(value: &T) -> Result<u64> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        // A digest computed while one is being computed (a value whose
        // encoding asks for another's digest) gets a buffer of its own.
        let mut own = Vec::new();
        let mut held = buffer.try_borrow_mut().ok();
        let out = held.as_deref_mut().unwrap_or(&mut own);
        out.clear();
        encode_into(value, out)?;
        let digest = xxhash_rust::xxh3::xxh3_64(out);
        if out.capacity() > 1 << 20 {
            // A rare large value does not keep its buffer.
            *out = Vec::new();
        }
        Ok(digest)
    })
}

/// Encodes `value` as one frame body of at most `max` bytes.
///
/// A value that encodes larger than `max` is refused here, at the sender,
/// with [`Error::FrameTooLarge`], rather than being sent and making the
/// receiver drop the connection.
pub fn encode_frame<T: Serialize>(value: &T, max: usize) -> Result<bytes::Bytes> {
    let out = encode(value)?;
    if out.len() > max {
        return Err(Error::FrameTooLarge {
            size: out.len(),
            max,
        });
    }
    Ok(bytes::Bytes::from(out))
}

/// Decodes one whole frame body of at most `max` bytes as a `T`.
///
/// The whole slice must be exactly one value: truncated input and trailing
/// bytes are both errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T> {
    if bytes.len() > max {
        return Err(Error::FrameTooLarge {
            size: bytes.len(),
            max,
        });
    }
    serde_cbor::from_slice(bytes).map_err(|e| Error::Decode {
        what: short_type_name::<T>(),
        reason: e.to_string(),
    })
}

/// `ringkv::message::Envelope` -> `Envelope`, for error messages.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Generic parameters contain `::` too; only strip the leading path.
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::id::NodeId;

    /// A value whose encoding asks for another value's digest, as a
    /// digest of a digest would.
    struct Nested(Vec<u8>);

    impl Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let inner =
                digest(&serde_bytes::Bytes::new(&self.0)).map_err(serde::ser::Error::custom)?;
            s.serialize_u64(inner)
        }
    }

    #[test]
    fn a_digest_is_the_hash_of_the_encoding_whatever_the_buffer_held() {
        let hash = |b: &[u8]| xxhash_rust::xxh3::xxh3_64(b);
        // Values of growing and shrinking sizes through one thread's
        // buffer, then one past the size the buffer keeps.
        for len in [0usize, 300, 3, 70_000, 1, (1 << 20) + 5, 2] {
            let v = serde_bytes::ByteBuf::from(vec![len as u8; len]);
            assert_eq!(
                digest(&v).unwrap(),
                hash(&encode(&v).unwrap()),
                "{len} bytes"
            );
        }
        // A digest taken while one is being taken uses a buffer of its own.
        let outer = Nested(vec![7; 40]);
        let inner = digest(&serde_bytes::Bytes::new(&outer.0)).unwrap();
        assert_eq!(digest(&outer).unwrap(), hash(&encode(&inner).unwrap()));
    }

    // Stand-ins of the wire's envelope and message, of the same shape (a
    // map of node ids and an externally tagged enum with a byte field), so
    // that this layer-0 module's tests need nothing above layer 0.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Envelope {
        from: NodeId,
        to: NodeId,
        msg: Message,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Message {
        Ping {
            seq: u64,
            #[serde(with = "serde_bytes")]
            payload: Vec<u8>,
        },
    }

    impl Envelope {
        fn new(from: NodeId, to: NodeId, msg: Message) -> Self {
            Envelope { from, to, msg }
        }
    }

    fn ping(payload: Vec<u8>) -> Envelope {
        Envelope::new(NodeId(1), NodeId(2), Message::Ping { seq: 9, payload })
    }

    #[test]
    fn round_trip() {
        let env = ping(b"hello".to_vec());
        let bytes = encode(&env).unwrap();
        assert_eq!(decode::<Envelope>(&bytes, 1 << 10).unwrap(), env);
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let bytes = encode(&ping(vec![0; 100])).unwrap();
        match decode::<Envelope>(&bytes, 50) {
            Err(Error::FrameTooLarge { size, max }) => {
                assert_eq!(size, bytes.len());
                assert_eq!(max, 50);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert!(matches!(
            encode_frame(&ping(vec![0; 100]), 50),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&ping(b"payload".to_vec())).unwrap();
        for cut in 0..bytes.len() {
            let err = decode::<Envelope>(&bytes[..cut], 1 << 10).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Decode {
                        what: "Envelope",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&ping(vec![])).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Envelope>(&bytes, 1 << 10),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // A map whose unknown field holds 100,000 nested arrays: the decoder
        // must skip it through its recursion limit.
        let mut bytes = vec![0xa1, 0x61, b'x'];
        bytes.extend(std::iter::repeat_n(0x81, 100_000));
        bytes.push(0x00);
        let err = decode::<Envelope>(&bytes, 1 << 20).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        // Same for a bare nested value where a message is expected.
        let bytes: Vec<u8> = std::iter::repeat_n(0x81, 100_000).collect();
        assert!(decode::<Message>(&bytes, 1 << 20).is_err());
    }

    #[test]
    fn huge_length_prefixes_do_not_allocate() {
        // A byte string claiming 2^63 bytes, then an array claiming 2^63
        // elements, each followed by almost nothing.
        let big_bytes = [
            0xa1, 0x61, b'x', 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode::<Envelope>(&big_bytes, 1 << 10).is_err());
        let big_array = [0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert!(decode::<Vec<u64>>(&big_array, 1 << 10).is_err());
    }

    #[test]
    fn error_names_the_type() {
        assert_eq!(short_type_name::<Envelope>(), "Envelope");
        assert_eq!(short_type_name::<Vec<u64>>(), "Vec<u64>");
    }
}
