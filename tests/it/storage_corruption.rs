//! Damaged files give `Error::Corruption` (or, for a torn WAL tail, a clean
//! cut), never a wrong value and never a panic.
//!
//! Tables: every byte of a small table is flipped in turn (one bit, then
//! the whole byte), and every outcome of open, get and iteration is checked
//! against the original entries. WAL: truncation at every offset of the last
//! record, and damage to an early record followed by valid ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv::config::SyncPolicy;
use ringkv::storage::lsm::block_cache::BlockCache;
use ringkv::storage::lsm::iterators::StorageIterator;
use ringkv::storage::lsm::sstable::{OwnedEntry, Table, TableBuilder, TableOptions};
use ringkv::storage::lsm::wal::{encode_record, Wal, WalRecord, WAL_HEADER};
use ringkv::storage::BatchOp;
use ringkv::Error;

fn entries() -> Vec<OwnedEntry> {
    (0..60u64)
        .map(|i| {
            let v = (i % 9 != 4).then(|| {
                format!("value {i} ")
                    .repeat(1 + i as usize % 3)
                    .into_bytes()
            });
            (format!("key{i:04}").into_bytes(), 100 + i, v)
        })
        .collect()
}

/// Builds a small table with several blocks (256-byte blocks).
fn small_table(dir: &Path, data: &[OwnedEntry]) -> PathBuf {
    let path = dir.join("1.sst");
    let opts = TableOptions {
        block_bytes: 256,
        bloom_false_positive_rate: 0.01,
    };
    let mut b = TableBuilder::create(&path, 1, &opts, data.len()).unwrap();
    for (k, s, v) in data {
        b.add(k, *s, v.as_deref()).unwrap();
    }
    b.finish().unwrap();
    path
}

fn is_corruption_of(err: &Error, path: &Path) -> bool {
    matches!(err, Error::Corruption { file, .. } if file == path)
}

/// Reads everything the damaged table at `path` gives. Panics (fails the
/// test) on any answer that is neither the original nor Corruption; returns
/// whether some Corruption was reported.
fn check_damaged_table(path: &Path, data: &[OwnedEntry], what: &str) -> bool {
    let table = match Table::open(path, 1, BlockCache::new(0)) {
        Ok(t) => t,
        Err(e) => {
            assert!(is_corruption_of(&e, path), "{what}: open gave {e:?}");
            return true;
        }
    };
    let mut corrupt = false;
    for (k, s, v) in data {
        match table.get(k) {
            Ok(got) => assert_eq!(got, Some((*s, v.clone())), "{what}: get {k:?}"),
            Err(e) => {
                assert!(is_corruption_of(&e, path), "{what}: get gave {e:?}");
                corrupt = true;
            }
        }
        // An absent key next to each present one: never a value.
        let mut absent = k.clone();
        absent.push(b'!');
        match table.get(&absent) {
            Ok(got) => assert_eq!(got, None, "{what}: absent key {absent:?}"),
            Err(e) => assert!(is_corruption_of(&e, path), "{what}: get gave {e:?}"),
        }
    }
    corrupt |= !check_iteration(&table, data, path, what);
    corrupt
}

/// Iterates the whole table: the entries seen must be a prefix of the
/// original, and the iteration either completes or ends in Corruption.
/// Returns whether it completed.
fn check_iteration(table: &Arc<Table>, data: &[OwnedEntry], path: &Path, what: &str) -> bool {
    let mut it = match table.iter() {
        Ok(it) => it,
        Err(e) => {
            assert!(is_corruption_of(&e, path), "{what}: iter gave {e:?}");
            return false;
        }
    };
    let mut seen = 0;
    while it.is_valid() {
        let got = (it.key().to_vec(), it.seq(), it.value().map(<[u8]>::to_vec));
        assert_eq!(
            Some(&got),
            data.get(seen),
            "{what}: entry {seen} of the iteration"
        );
        seen += 1;
        if let Err(e) = it.next() {
            assert!(is_corruption_of(&e, path), "{what}: next gave {e:?}");
            assert!(!it.is_valid());
            return false;
        }
    }
    assert_eq!(
        seen,
        data.len(),
        "{what}: iteration ended early without an error"
    );
    true
}

#[test]
fn every_flipped_byte_of_a_table_is_corruption_never_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let data = entries();
    let path = small_table(dir.path(), &data);
    let original = std::fs::read(&path).unwrap();
    assert!(!check_damaged_table(&path, &data, "undamaged"));
    let table = Table::open(&path, 1, BlockCache::new(0)).unwrap();
    assert!(
        table.blocks() >= 5,
        "want several blocks, got {}",
        table.blocks()
    );
    drop(table);

    for pos in 0..original.len() {
        for mask in [1u8 << (pos % 8), 0xff] {
            let mut bad = original.clone();
            bad[pos] ^= mask;
            std::fs::write(&path, &bad).unwrap();
            let what = format!("byte {pos} ^ {mask:#04x}");
            // Every byte is under some checksum, and reading everything
            // reads every piece: each flip must be reported somewhere.
            assert!(
                check_damaged_table(&path, &data, &what),
                "{what}: undetected"
            );
        }
    }
}

#[test]
fn damage_names_the_piece_that_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let data = entries();
    let path = small_table(dir.path(), &data);
    let original = std::fs::read(&path).unwrap();
    let len = original.len();

    // The footer: the last 72 bytes.
    let mut bad = original.clone();
    bad[len - 20] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    match Table::open(&path, 1, BlockCache::new(0)) {
        Err(Error::Corruption { offset, reason, .. }) => {
            assert_eq!(offset, (len - 72) as u64);
            assert!(
                reason.contains("footer") || reason.contains("magic"),
                "{reason}"
            );
        }
        other => panic!("footer damage: {other:?}"),
    }

    // The first data block: open succeeds, reading key 0 fails at offset 0.
    let mut bad = original.clone();
    bad[10] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let table = Table::open(&path, 1, BlockCache::new(0)).unwrap();
    match table.get(&data[0].0) {
        Err(Error::Corruption { offset, reason, .. }) => {
            assert_eq!(offset, 0);
            assert!(reason.contains("data block 0"), "{reason}");
        }
        other => panic!("data block damage: {other:?}"),
    }
    // A key in another block is still read correctly.
    let last = data.last().unwrap();
    assert_eq!(table.get(&last.0).unwrap(), Some((last.1, last.2.clone())));
}

#[test]
fn a_truncated_table_is_corruption_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = entries();
    let path = small_table(dir.path(), &data);
    let original = std::fs::read(&path).unwrap();
    for len in 0..original.len() {
        std::fs::write(&path, &original[..len]).unwrap();
        match Table::open(&path, 1, BlockCache::new(0)) {
            Err(e) => assert!(is_corruption_of(&e, &path), "truncated to {len}: {e:?}"),
            Ok(_) => panic!("a table truncated to {len} bytes opened"),
        }
    }
    // Bytes appended after the footer are damage too (the footer is lost).
    let mut longer = original.clone();
    longer.extend_from_slice(b"trailing");
    std::fs::write(&path, &longer).unwrap();
    assert!(Table::open(&path, 1, BlockCache::new(0)).is_err());
}

fn wal_records() -> Vec<WalRecord> {
    (0..5u64)
        .map(|r| WalRecord {
            first_seq: 1 + r * 10,
            ops: (0..3)
                .map(|i| {
                    let key = format!("r{r}k{i}").into_bytes();
                    if i == 1 {
                        BatchOp::Delete { key }
                    } else {
                        BatchOp::Put {
                            key,
                            value: format!("value {r}.{i}").into_bytes(),
                        }
                    }
                })
                .collect(),
        })
        .collect()
}

fn write_wal(path: &Path, records: &[WalRecord]) -> Vec<u64> {
    let wal = Wal::create(path, SyncPolicy::Always).unwrap();
    let mut offsets = Vec::new();
    for r in records {
        offsets.push(wal.bytes_written());
        wal.append(r).unwrap();
    }
    offsets
}

#[test]
fn a_torn_wal_tail_is_cut_at_every_offset_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let records = wal_records();
    let full_path = dir.path().join("full.wal");
    let offsets = write_wal(&full_path, &records);
    let full = std::fs::read(&full_path).unwrap();
    let last_start = *offsets.last().unwrap() as usize;
    for cut in last_start..full.len() {
        let path = dir.path().join(format!("cut{cut}.wal"));
        std::fs::write(&path, &full[..cut]).unwrap();
        let (got, report) = Wal::replay(&path).unwrap();
        assert_eq!(got, records[..records.len() - 1], "cut at {cut}");
        assert_eq!(report.records, records.len() - 1);
        assert_eq!(report.valid_bytes, last_start as u64);
        assert_eq!(report.torn_tail_bytes, (cut - last_start) as u64);
        // The file is cut back to the last whole record.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
        std::fs::remove_file(&path).unwrap();
    }
    // Zeros where the last record should be (a file extended but never
    // written: space a log under `Always` reserves ahead of its appends)
    // are cut off as well, counted as reserved space, not as a torn
    // record.
    let path = dir.path().join("zeros.wal");
    let mut zeroed = full[..last_start].to_vec();
    zeroed.resize(full.len(), 0);
    std::fs::write(&path, &zeroed).unwrap();
    let (got, report) = Wal::replay(&path).unwrap();
    assert_eq!(got, records[..records.len() - 1]);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.reserved_tail_bytes, (full.len() - last_start) as u64);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last_start as u64);
}

#[test]
fn a_damaged_early_wal_record_is_corruption_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let records = wal_records();
    let path = dir.path().join("1.wal");
    let offsets = write_wal(&path, &records);
    let original = std::fs::read(&path).unwrap();
    // Every byte of the second record, damaged in turn.
    let (start, end) = (offsets[1] as usize, offsets[2] as usize);
    for pos in start..end {
        let mut bad = original.clone();
        bad[pos] ^= 1 << (pos % 8);
        std::fs::write(&path, &bad).unwrap();
        match Wal::replay(&path) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, path);
                assert_eq!(offset, start as u64, "damage at {pos}");
            }
            other => panic!("damage at {pos}: {other:?}"),
        }
        // Nothing was cut: the evidence stays for an operator.
        assert_eq!(std::fs::read(&path).unwrap().len(), original.len());
    }
    // A damaged header is corruption at offset 0.
    let mut bad = original.clone();
    bad[2] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        Wal::replay(&path),
        Err(Error::Corruption { offset: 0, .. })
    ));
}

#[test]
fn a_record_cut_in_the_middle_of_the_log_is_corruption() {
    // A partial record followed by a whole one cannot come from a crash
    // during an append.
    let records = wal_records();
    let mut log = WAL_HEADER.to_vec();
    let first = encode_record(&records[0]).unwrap();
    log.extend_from_slice(&first[..first.len() - 3]);
    log.extend_from_slice(&encode_record(&records[1]).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.wal");
    std::fs::write(&path, &log).unwrap();
    match Wal::replay(&path) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, WAL_HEADER.len() as u64),
        other => panic!("{other:?}"),
    }
}
