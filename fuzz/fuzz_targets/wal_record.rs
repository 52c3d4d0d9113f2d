//! Arbitrary bytes into the write-ahead log decoders: one record, a record
//! body past its checksum, and a whole log image (header prepended, so the
//! torn-tail and corruption rules run). Must never panic; a decoded record
//! must encode back to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv::storage::lsm::wal::{
    decode_record, decode_record_body, decode_records, encode_record, WAL_HEADER,
};

fuzz_target!(|data: &[u8]| {
    if let Ok((record, len)) = decode_record(data) {
        let again = encode_record(&record).expect("a decoded record re-encodes");
        assert_eq!(again.as_slice(), &data[..len]);
    }
    let _ = decode_record_body(data);
    let _ = decode_records(data);
    let mut log = WAL_HEADER.to_vec();
    log.extend_from_slice(data);
    if let Ok((records, report)) = decode_records(&log) {
        assert_eq!(records.len(), report.records);
        assert_eq!(
            report.valid_bytes + report.torn_tail_bytes + report.reserved_tail_bytes,
            log.len() as u64
        );
    }
});
