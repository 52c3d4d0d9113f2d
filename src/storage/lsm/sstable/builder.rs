//! Writing a table: entries in ascending key order in, one fsync'd file out.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bloomfilter::Bloom;

use super::block::{self, BlockBuilder};
use super::{encode_index, put_index_entry, Footer, TableInfo, TableOptions, BLOOM_SEED};
use crate::error::{Error, Result};
use crate::storage::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// Writes one table. Entries go in with strictly ascending keys; `finish`
/// writes the index, the bloom filter and the footer and fsyncs the file.
///
/// Dropping a builder without `finish` leaves a partial file that
/// [`Table::open`](super::Table::open) refuses; [`TableBuilder::abandon`]
/// removes it.
pub struct TableBuilder {
    path: PathBuf,
    id: u64,
    file: BufWriter<File>,
    block_bytes: usize,
    block: BlockBuilder,
    /// Encoded index entries of the blocks written so far.
    index: Vec<u8>,
    blocks: u32,
    bloom: Bloom<[u8]>,
    /// Bytes handed to the file so far: the offset of the next block.
    offset: u64,
    entries: u64,
    tombstones: u64,
    max_seq: u64,
    smallest: Vec<u8>,
    last_key: Vec<u8>,
    /// Reused buffers for the stored form of a block and for compression.
    stored: Vec<u8>,
    scratch: Vec<u8>,
    /// Set when a write failed: the file is no longer a prefix of a table.
    failed: bool,
}

impl std::fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("entries", &self.entries)
            .field("offset", &self.offset)
            .finish()
    }
}

impl TableBuilder {
    /// Creates the file at `path` (it must not exist: a table is never
    /// overwritten). `expected_keys` sizes the bloom filter (clamped to
    /// 1..=2^28); adding more keys than that raises its false-positive rate
    /// above the target, and fewer makes the filter larger than needed.
    pub fn create(path: &Path, id: u64, opts: &TableOptions, expected_keys: usize) -> Result<Self> {
        opts.validate()?;
        // Clamped so that a wild estimate cannot ask for a huge filter
        // (2^28 keys is 320 MiB of filter at 1%, far beyond any table).
        let bloom = Bloom::new_for_fp_rate_with_seed(
            expected_keys.clamp(1, 1 << 28),
            opts.bloom_false_positive_rate,
            &BLOOM_SEED,
        )
        .map_err(|e| Error::InvalidInput(format!("bloom filter: {e}")))?;
        crate::storage::lsm::fault::check_create(path)
            .map_err(|e| Error::io(format!("creating table {}", path.display()), e))?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(format!("creating table {}", path.display()), e))?;
        Ok(TableBuilder {
            path: path.to_path_buf(),
            id,
            file: BufWriter::with_capacity(256 * 1024, file),
            block_bytes: opts.block_bytes,
            block: BlockBuilder::default(),
            index: Vec::new(),
            blocks: 0,
            bloom,
            offset: 0,
            entries: 0,
            tombstones: 0,
            max_seq: 0,
            smallest: Vec::new(),
            last_key: Vec::new(),
            stored: Vec::new(),
            scratch: Vec::new(),
            failed: false,
        })
    }

    /// Adds an entry: keys strictly ascending (else [`Error::InvalidInput`]),
    /// one entry per key per table; `None` is a tombstone.
    pub fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()> {
        if self.failed {
            return Err(Error::InvalidInput(format!(
                "table {} failed to write earlier",
                self.path.display()
            )));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(Error::InvalidInput(format!(
                "key of {} bytes exceeds the maximum of {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        if let Some(v) = value {
            if v.len() > MAX_VALUE_BYTES {
                return Err(Error::InvalidInput(format!(
                    "value of {} bytes exceeds the maximum of {MAX_VALUE_BYTES}",
                    v.len()
                )));
            }
        }
        if self.entries > 0 && key <= self.last_key.as_slice() {
            return Err(Error::InvalidInput(format!(
                "table keys must ascend strictly: {:?} after {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&self.last_key)
            )));
        }
        if self.entries == 0 {
            self.smallest = key.to_vec();
        }
        self.block.add(key, seq, value);
        self.bloom.set(key);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        self.tombstones += u64::from(value.is_none());
        self.max_seq = self.max_seq.max(seq);
        if self.block.size() >= self.block_bytes {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Bytes the file will take if finished now (a close estimate: the
    /// pending block is counted uncompressed).
    pub fn estimated_bytes(&self) -> u64 {
        self.offset
            + self.block.size() as u64
            + self.index.len() as u64
            + self.bloom.len() / 8
            + super::FOOTER_BYTES as u64
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the last block, the index, the bloom filter and the footer,
    /// then fsyncs the file (not its directory: the engine syncs that once
    /// for all files it creates). A table needs at least one entry: with
    /// none, this is [`Error::InvalidInput`] and the caller should
    /// [`abandon`](Self::abandon) instead.
    pub fn finish(mut self) -> Result<TableInfo> {
        if self.entries == 0 {
            return Err(Error::InvalidInput(
                "a table needs at least one entry; abandon the builder instead".into(),
            ));
        }
        if self.failed {
            return Err(Error::InvalidInput(format!(
                "table {} failed to write earlier",
                self.path.display()
            )));
        }
        if !self.block.is_empty() {
            self.flush_block()?;
        }
        let index_offset = self.offset;
        let mut piece = Vec::with_capacity(self.index.len() + self.smallest.len() + 16);
        encode_index(&self.smallest, self.blocks, &self.index, &mut piece);
        let crc = block::checksum(&piece);
        piece.extend_from_slice(&crc.to_le_bytes());
        let index_len = piece.len() as u64;
        self.write(&piece)?;

        let bloom_offset = self.offset;
        let mut piece = self.bloom.to_bytes();
        let crc = block::checksum(&piece);
        piece.extend_from_slice(&crc.to_le_bytes());
        let bloom_len = piece.len() as u64;
        self.write(&piece)?;

        let footer = Footer {
            index_offset,
            index_len,
            bloom_offset,
            bloom_len,
            entries: self.entries,
            tombstones: self.tombstones,
            max_seq: self.max_seq,
        };
        self.write(&footer.encode())?;
        let context = || format!("writing table {}", self.path.display());
        self.file.flush().map_err(|e| Error::io(context(), e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| Error::io(context(), e))?;
        Ok(TableInfo {
            id: self.id,
            file_bytes: self.offset,
            entries: self.entries,
            tombstones: self.tombstones,
            smallest: std::mem::take(&mut self.smallest),
            largest: std::mem::take(&mut self.last_key),
            max_seq: self.max_seq,
        })
    }

    /// Gives up on the table and removes its partial file.
    pub fn abandon(self) -> Result<()> {
        let path = self.path.clone();
        drop(self);
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing abandoned table {}", path.display()), e))
    }

    fn flush_block(&mut self) -> Result<()> {
        let offset = self.offset;
        put_index_entry(&mut self.index, self.block.last_key(), offset, 0);
        // The index entry's length is written after the block is encoded:
        // pop the placeholder varint (one byte, 0) and push the real one.
        self.index.pop();
        let mut stored = std::mem::take(&mut self.stored);
        stored.clear();
        self.block.finish_into(&mut stored, &mut self.scratch);
        block::put_varint(&mut self.index, stored.len() as u64);
        self.blocks += 1;
        let written = self.write(&stored);
        self.stored = stored;
        written
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            self.failed = true;
            return Err(Error::io(
                format!("writing table {}", self.path.display()),
                e,
            ));
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }
}
