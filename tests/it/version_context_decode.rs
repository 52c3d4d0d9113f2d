//! Untrusted bytes: a client's context token and a gossiped ring decode to
//! a value or an error, never a panic.

use proptest::prelude::*;
use ringkv::codec;
use ringkv::crdt::CrdtKind;
use ringkv::ring::{claim_join, Ring};
use ringkv::version::CausalContext;
use ringkv::NodeId;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = CausalContext::from_bytes(&bytes, 1024);
        let _ = codec::decode::<Ring>(&bytes, 1024);
        let _ = CrdtKind::OrSet.join([bytes.as_slice()], 1024);
    }

    /// A valid token or ring with one byte changed still never panics.
    #[test]
    fn mutated_encodings_never_panic(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let ctx = CausalContext([(NodeId(1), 4), (NodeId(9), 2)].into_iter().collect());
        let mut bytes = ctx.to_bytes().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = to;
        let _ = CausalContext::from_bytes(&bytes, 1024);

        let ring = claim_join(&claim_join(&Ring::empty(), NodeId(1), 4).unwrap(), NodeId(2), 4).unwrap();
        let mut bytes = codec::encode(&ring).unwrap();
        let i = at.index(bytes.len());
        bytes[i] = to;
        if let Ok(decoded) = codec::decode::<Ring>(&bytes, 1 << 16) {
            // Whatever decodes satisfies the ring's invariants.
            let tokens: Vec<_> = decoded.vnodes().map(|v| v.token).collect();
            prop_assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
