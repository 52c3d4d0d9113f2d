//! Arbitrary bytes into the SSTable block decoders: a stored block
//! (checksum, compression kind, bounded length, lz4) and an uncompressed
//! block body past its checksum (entries and restart points). Must never
//! panic; a block that decodes must iterate in ascending key order and
//! seek to the first key not below the target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv::storage::lsm::sstable::{block_entries, block_seek, decode_block, decode_block_body};

fn exercise(block: &ringkv::storage::lsm::sstable::Block, target: &[u8]) {
    let entries = block_entries(block).expect("a validated block iterates");
    assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    let expected = entries.iter().find(|e| e.0.as_slice() >= target).cloned();
    assert_eq!(
        block_seek(block, target).expect("a validated block seeks"),
        expected
    );
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the seek target's length, taken from the end.
    let (target, bytes) = match data.split_first() {
        Some((n, rest)) => {
            let n = (*n as usize).min(rest.len());
            (&rest[rest.len() - n..], &rest[..rest.len() - n])
        }
        None => (&[][..], data),
    };
    if let Ok(block) = decode_block(bytes) {
        exercise(&block, target);
    }
    if let Ok(block) = decode_block_body(bytes) {
        exercise(&block, target);
    }
});
