//! The LSM-tree engine, [`engine::LsmEngine`], and its parts.
//!
//! Writes go to a write-ahead log and a sorted memtable; full memtables are
//! flushed to immutable SSTables; leveled compaction merges them in the
//! background. See `docs/storage.md` for the byte layouts and guarantees.

pub mod block_cache;
pub mod compaction;
pub mod engine;
#[doc(hidden)]
pub mod fault;
pub mod iterators;
pub mod manifest;
pub mod memtable;
pub mod salvage;
pub mod sstable;
pub mod wal;
