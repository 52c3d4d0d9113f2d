//! Random and mutated bytes into every on-disk decoder of the LSM: the WAL
//! record and log decoders, the SSTable block decoder, and `Table::open`
//! on whole files. Never a panic; and where the input was a valid encoding
//! damaged in one byte, never a wrong answer.

use proptest::prelude::*;

use ringkv::storage::lsm::block_cache::BlockCache;
use ringkv::storage::lsm::iterators::StorageIterator;
use ringkv::storage::lsm::sstable::{
    block_entries, block_seek, decode_block, decode_block_body, encode_block, BorrowedEntry,
    OwnedEntry, Table, TableBuilder, TableOptions,
};
use ringkv::storage::lsm::wal::{
    decode_record, decode_record_body, decode_records, encode_record, WalRecord, WAL_HEADER,
};
use ringkv::storage::BatchOp;

fn op() -> impl Strategy<Value = BatchOp> {
    let key = prop::collection::vec(any::<u8>(), 0..12);
    prop_oneof![
        (key.clone(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(key, value)| BatchOp::Put { key, value }),
        key.prop_map(|key| BatchOp::Delete { key }),
    ]
}

fn records() -> impl Strategy<Value = Vec<WalRecord>> {
    prop::collection::vec(
        (any::<u32>(), prop::collection::vec(op(), 0..5)).prop_map(|(s, ops)| WalRecord {
            first_seq: u64::from(s),
            ops,
        }),
        0..6,
    )
}

fn log_image(records: &[WalRecord]) -> Vec<u8> {
    let mut log = WAL_HEADER.to_vec();
    for r in records {
        log.extend_from_slice(&encode_record(r).unwrap());
    }
    log
}

/// Sorted, distinct keys with sequence numbers and values or tombstones.
fn table_entries() -> impl Strategy<Value = Vec<OwnedEntry>> {
    prop::collection::btree_map(
        prop::collection::vec(any::<u8>(), 0..10),
        (
            any::<u64>(),
            prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..30)),
        ),
        1..60,
    )
    .prop_map(|m| m.into_iter().map(|(k, (s, v))| (k, s, v)).collect())
}

fn borrowed(entries: &[OwnedEntry]) -> Vec<BorrowedEntry<'_>> {
    entries
        .iter()
        .map(|(k, s, v)| (k.as_slice(), *s, v.as_deref()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_the_wal_decoders(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_record(&bytes);
        let _ = decode_record_body(&bytes);
        let _ = decode_records(&bytes);
        let mut with_header = WAL_HEADER.to_vec();
        with_header.extend_from_slice(&bytes);
        let _ = decode_records(&with_header);
    }

    #[test]
    fn logs_round_trip_and_truncation_keeps_a_prefix(records in records(), cut in any::<prop::sample::Index>()) {
        let log = log_image(&records);
        let (got, report) = decode_records(&log).unwrap();
        prop_assert_eq!(&got, &records);
        prop_assert_eq!(report.valid_bytes, log.len() as u64);
        let cut = cut.index(log.len() + 1);
        let (got, report) = decode_records(&log[..cut]).unwrap();
        prop_assert!(records.starts_with(&got));
        prop_assert_eq!(report.valid_bytes + report.torn_tail_bytes + report.reserved_tail_bytes, cut as u64);
    }

    #[test]
    fn a_damaged_byte_in_a_log_is_never_a_different_record(
        records in records(),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let mut log = log_image(&records);
        let pos = pos.index(log.len());
        log[pos] ^= mask;
        // Either corruption, or a torn tail cut leaving a prefix.
        if let Ok((got, _)) = decode_records(&log) {
            prop_assert!(records.starts_with(&got), "{:?} is not a prefix", got);
            prop_assert!(got.len() < records.len() || records.is_empty());
        }
    }

    #[test]
    fn random_bytes_never_panic_the_block_decoders(bytes in prop::collection::vec(any::<u8>(), 0..300), target in prop::collection::vec(any::<u8>(), 0..8)) {
        let _ = decode_block(&bytes);
        if let Ok(block) = decode_block_body(&bytes) {
            let _ = block_entries(&block);
            let _ = block_seek(&block, &target);
        }
    }

    #[test]
    fn blocks_round_trip_and_seek(entries in table_entries(), target in prop::collection::vec(any::<u8>(), 0..10)) {
        let stored = encode_block(&borrowed(&entries));
        let block = decode_block(&stored).unwrap();
        prop_assert_eq!(&block_entries(&block).unwrap(), &entries);
        let expected = entries.iter().find(|e| e.0 >= target).cloned();
        prop_assert_eq!(block_seek(&block, &target).unwrap(), expected);
    }

    #[test]
    fn a_damaged_block_is_refused(entries in table_entries(), pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut stored = encode_block(&borrowed(&entries));
        let pos = pos.index(stored.len());
        stored[pos] ^= mask;
        prop_assert!(decode_block(&stored).is_err());
    }
}

proptest! {
    // Each case writes a file: fewer cases.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_files_never_panic_table_open(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sst");
        std::fs::write(&path, &bytes).unwrap();
        prop_assert!(Table::open(&path, 1, BlockCache::new(1 << 16)).is_err());
    }

    #[test]
    fn damaged_tables_never_give_a_wrong_answer(
        entries in table_entries(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.sst");
        let opts = TableOptions { block_bytes: 128, bloom_false_positive_rate: 0.05 };
        let mut b = TableBuilder::create(&path, 1, &opts, entries.len()).unwrap();
        for (k, s, v) in &entries {
            b.add(k, *s, v.as_deref()).unwrap();
        }
        b.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for (pos, mask) in &damage {
            let pos = pos.index(bytes.len());
            bytes[pos] ^= mask;
        }
        std::fs::write(&path, &bytes).unwrap();
        let Ok(table) = Table::open(&path, 1, BlockCache::new(1 << 16)) else {
            return Ok(());
        };
        for (k, s, v) in &entries {
            if let Ok(got) = table.get(k) {
                prop_assert_eq!(got, Some((*s, v.clone())));
            }
        }
        if let Ok(mut it) = table.iter() {
            let mut i = 0;
            while it.is_valid() {
                let got = (it.key().to_vec(), it.seq(), it.value().map(<[u8]>::to_vec));
                prop_assert_eq!(Some(&got), entries.get(i));
                i += 1;
                if it.next().is_err() {
                    break;
                }
            }
        }
    }
}
