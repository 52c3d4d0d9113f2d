//! The values the benchmarks encode, decode and send.
//!
//! Each is what a real cluster sends: pings with the payload sizes the
//! benchmark notes quote, and handshake frames with full-length nonces and
//! proofs. Payload bytes are a fixed non-constant pattern, so that no codec
//! can shortcut on repeated bytes.

use ringkv::message::{Envelope, Handshake, Message, NodeId, NONCE_LEN, PROOF_LEN};
use ringkv::PROTOCOL_VERSION;

/// Payload sizes of the ping workloads, in bytes: a small control message,
/// the field's standard 100-byte value, and one 4 KiB storage block.
pub const PING_PAYLOAD_SIZES: [usize; 3] = [16, 100, 4096];

/// The sequence number of the workload's ping. It needs a 4-byte CBOR
/// integer, as a busy link's would; so does every number from it up to
/// `u32::MAX`, which lets a benchmark number its pings from here and keep
/// every frame the size of [`ping_envelope`]'s.
pub const PING_SEQ: u64 = 1_000_000;

/// `len` bytes of a repeating 0..=250 pattern.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A ping from node 1 to node 2 with a `payload_len`-byte payload and
/// sequence number [`PING_SEQ`].
pub fn ping_envelope(payload_len: usize) -> Envelope {
    Envelope::new(
        NodeId(1),
        NodeId(2),
        Message::Ping {
            seq: PING_SEQ,
            payload: pattern(payload_len),
        },
    )
}

/// Node 2's answer to [`ping_envelope`]: the same sequence number and
/// payload, so the same frame size.
pub fn pong_envelope(payload_len: usize) -> Envelope {
    Envelope::new(
        NodeId(2),
        NodeId(1),
        Message::Pong {
            seq: PING_SEQ,
            payload: pattern(payload_len),
        },
    )
}

/// The dialer's first handshake frame.
pub fn hello() -> Handshake {
    Handshake::Hello {
        version: PROTOCOL_VERSION,
        cluster: "prod".into(),
        node: NodeId(1),
        listen: "127.0.0.1:7000".into(),
        incarnation: 0x5eed_0000_0000_0001,
        nonce: pattern(NONCE_LEN),
    }
}

/// The acceptor's answer, with its nonce and proof.
pub fn challenge() -> Handshake {
    Handshake::Challenge {
        version: PROTOCOL_VERSION,
        cluster: "prod".into(),
        node: NodeId(2),
        incarnation: 0x5eed_0000_0000_0002,
        nonce: pattern(NONCE_LEN),
        proof: pattern(PROOF_LEN).into_iter().rev().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv::codec;

    /// The encoded sizes quoted in docs/benchmarks.md.
    #[test]
    fn encoded_sizes_are_as_documented() {
        let sizes: Vec<usize> = PING_PAYLOAD_SIZES
            .iter()
            .map(|&n| codec::encode(&ping_envelope(n)).unwrap().len())
            .collect();
        assert_eq!(sizes, [56, 141, 4138]);
        for n in PING_PAYLOAD_SIZES {
            let pong = codec::encode(&pong_envelope(n)).unwrap();
            assert_eq!(pong.len(), codec::encode(&ping_envelope(n)).unwrap().len());
        }
        assert_eq!(codec::encode(&hello()).unwrap().len(), 119);
        assert_eq!(codec::encode(&challenge()).unwrap().len(), 141);
    }

    #[test]
    fn payloads_have_the_stated_length() {
        for n in PING_PAYLOAD_SIZES {
            match ping_envelope(n).msg {
                Message::Ping { payload, .. } => assert_eq!(payload.len(), n),
                other => panic!("expected a ping, got {other:?}"),
            }
        }
    }
}
