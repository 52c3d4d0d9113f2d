//! Arbitrary bytes into the client port's decoders: a client `Request`
//! (what the node reads from any client) and a `Response` (what the Rust
//! client reads from a node). Must never panic; a request that decodes
//! must re-encode to bytes that decode to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv::codec;
use ringkv::protocol::{Request, Response};

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = codec::decode::<Request>(data, MAX) {
        let bytes = codec::encode(&request).expect("a decoded request encodes");
        let again: Request = codec::decode(&bytes, MAX).expect("re-encoded request decodes");
        assert_eq!(again, request);
    }
    let _ = codec::decode::<Response>(data, MAX);
});
