//! Iterators over sorted entries: the one [`StorageIterator`] trait that
//! memtables, tables and their merges all implement.
//!
//! An entry is a user key, the sequence number of the write that produced it
//! and a value, or `None` for a tombstone. Iterators yield keys in ascending
//! bytewise order. A source iterator (one memtable, one table) may hold
//! several entries for one key only in descending sequence order; merges
//! decide which one is visible.

use crate::error::Result;

/// A cursor over sorted entries.
///
/// Cursor style rather than `std::iter::Iterator` so that a merge can look at
/// the current key of each input without copying it, and so that reading
/// the next block can fail with an error the caller sees.
pub trait StorageIterator: Send {
    /// Whether the cursor is on an entry. `key`, `seq` and `value` may only
    /// be called while it is.
    fn is_valid(&self) -> bool;
    /// The current entry's user key.
    fn key(&self) -> &[u8];
    /// The current entry's sequence number (higher is newer).
    fn seq(&self) -> u64;
    /// The current entry's value; `None` is a tombstone.
    fn value(&self) -> Option<&[u8]>;
    /// Moves to the next entry. After an `Err` the cursor is invalid.
    fn next(&mut self) -> Result<()>;
}
