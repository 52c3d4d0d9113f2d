//! Client input limits: the one place for the numbers.
//!
//! They live in the replication layer, the lowest layer that checks them
//! (the coordinator checks every request before anything is sent to a
//! replica; the replica store refuses objects past [`MAX_OBJECT_BYTES`]),
//! and are re-exported by `config.rs`, where outside code has always found
//! them (`ringkv::config::MAX_KEY_BYTES`).

use crate::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::error::{Error, Result};

// Client input limits: the one place for the numbers. `docs/protocol.md`
// (section 7) and `ffi/include/ringkv.h` (`RINGKV_MAX_*`, checked against
// these at compile time) state them to clients; the coordinator checks
// every request against them before anything is sent to a replica, and
// refuses with `Error::InvalidInput` (`InvalidArgument`, not retryable).

/// The longest key a client may use: 8 KiB.
///
/// A key is an identifier, and it is copied into every engine key, hint
/// key, replica message, transfer item and anti-entropy digest. At 8 KiB
/// a full anti-entropy batch of 1,024 digests (keys with their buckets)
/// is 9 MiB, still inside one 16 MiB frame, and an engine key (token,
/// bucket, key) stays far below the storage engine's 64 KiB key limit.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The longest bucket name: 1 KiB. A bucket name is a short identifier
/// (the engine key stores its length in two bytes).
pub const MAX_BUCKET_BYTES: usize = 1024;

/// Bytes of a peer frame kept for everything in a replica message but the
/// stored object: 512 KiB. The envelope, the request's fields, a key of up
/// to [`MAX_KEY_BYTES`] and a bucket of up to [`MAX_BUCKET_BYTES`] (9 KiB
/// together) and the policy name take far less; the rest is margin.
pub const MESSAGE_OVERHEAD_BYTES: usize = 512 * 1024;

/// The largest encoded object (every sibling, their dots and timestamps,
/// the causal context) a coordinating replica stores for a write:
/// [`DEFAULT_MAX_FRAME_BYTES`] less [`MESSAGE_OVERHEAD_BYTES`], 15.5 MiB.
/// Derived so that the object a write makes always fits in the replica
/// message that copies it to the other replicas (and in the storage
/// engine's 16 MiB value limit). A write that would make a larger object
/// (a blind write beside large siblings) is refused.
pub const MAX_OBJECT_BYTES: usize = DEFAULT_MAX_FRAME_BYTES - MESSAGE_OVERHEAD_BYTES;

/// The largest value a client may write (a `Put` value, or the members of
/// one set update together): [`MAX_OBJECT_BYTES`] less 512 KiB, 15 MiB.
/// The 512 KiB are for the object around one value: its dot, timestamp
/// and causal context (a version vector of a few hundred nodes is a few
/// KiB). So a maximal value, alone in its object, fits in a peer frame
/// with 1 MiB to spare, and in a client frame (16 MiB) with its request.
pub const MAX_VALUE_BYTES: usize = MAX_OBJECT_BYTES - 512 * 1024;

/// The most buckets whose properties may be set: 256. Every node keeps
/// the whole table, saves it on every change and sends all of it to a peer
/// every gossip round; at 256 entries of at most a 1 KiB name and a
/// 256-byte policy name it stays under 400 KiB. Buckets never set (the
/// defaults) are not counted and not limited.
pub const MAX_BUCKETS: usize = 256;

/// The most bucket entries a node keeps from merges: twice
/// [`MAX_BUCKETS`]. Each node refuses to set a new bucket past
/// `MAX_BUCKETS` by its own table, so buckets set at once through several
/// nodes, before gossip reached them, can take the cluster past it; the
/// merges keep those, so every node still ends with the same table. Only
/// past this hard cap (hundreds of buckets created at once through
/// different nodes) do tables stop growing and may differ.
pub const MAX_BUCKETS_MERGED: usize = 2 * MAX_BUCKETS;

/// The longest name of a `Script` conflict policy: 256 bytes. It travels
/// in every replica request of the bucket.
pub const MAX_POLICY_NAME_BYTES: usize = 256;

/// Checks a bucket name and key against [`MAX_BUCKET_BYTES`] and
/// [`MAX_KEY_BYTES`].
///
/// ```
/// use ringkv::config::{check_bucket_key, MAX_KEY_BYTES};
/// assert!(check_bucket_key(b"b", &[0; MAX_KEY_BYTES]).is_ok());
/// assert!(check_bucket_key(b"b", &[0; MAX_KEY_BYTES + 1]).is_err());
/// ```
pub fn check_bucket_key(bucket: &[u8], key: &[u8]) -> Result<()> {
    check_bucket(bucket)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidInput(format!(
            "key of {} bytes exceeds the maximum of {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a bucket name against [`MAX_BUCKET_BYTES`].
pub fn check_bucket(bucket: &[u8]) -> Result<()> {
    if bucket.len() > MAX_BUCKET_BYTES {
        return Err(Error::InvalidInput(format!(
            "bucket name of {} bytes exceeds the maximum of {MAX_BUCKET_BYTES}",
            bucket.len()
        )));
    }
    Ok(())
}

/// Checks the size of a value (or of a set update's members, `bytes`
/// being their total) against [`MAX_VALUE_BYTES`].
pub fn check_value(bytes: usize) -> Result<()> {
    if bytes > MAX_VALUE_BYTES {
        return Err(Error::InvalidInput(format!(
            "value of {bytes} bytes exceeds the maximum of {MAX_VALUE_BYTES}"
        )));
    }
    Ok(())
}

/// Checks the members of one set update against [`MAX_VALUE_BYTES`]:
/// their bytes, and a few for each one's CBOR header, together.
pub fn check_members<'a>(members: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
    check_value(members.into_iter().map(|m| m.len() + 9).sum())
}
