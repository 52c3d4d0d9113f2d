//! The write-ahead log: every batch is appended here, checksummed, before
//! it reaches the memtable, so that a crash loses no acknowledged write
//! (within what the [`SyncPolicy`] promises).
//!
//! A log file is an 8-byte header (`"RKVW"` and the format version) followed
//! by records. A record is one [`WalRecord`], a write batch with the sequence
//! number of its first operation:
//!
//! ```text
//! marker "RKVR" (4) | body length u32 | crc32 u32 | body
//! body = first_seq u64 | op count u32 | ops, each: kind u8 (1 put, 2 delete)
//!        | key length u32 | key | (put only) value length u32 | value
//! ```
//!
//! All integers are little-endian; the crc32 (IEEE, `crc32fast`) covers the
//! length field and the body. A body is at most [`MAX_RECORD_BYTES`], checked
//! before anything is allocated.
//!
//! # Torn tail or corruption
//!
//! A crash during an append leaves a partial last record. Replay tells that
//! apart from damage in the middle of the log like this: when the record at
//! offset `o` is bad (runs past the end, wrong marker, checksum mismatch,
//! body that does not decode), replay looks for any valid record starting
//! anywhere after `o`. If there is none, the bad bytes are a torn tail: the
//! file is truncated to `o` and a warning is logged. If there is one, the
//! log was damaged after records were written behind it, and replay fails
//! with [`Error::Corruption`] naming the file and `o`; nothing is skipped.
//!
//! # Space reserved ahead (under `SyncPolicy::Always`)
//!
//! An `fdatasync` after an append that grew the file must also commit the
//! file's new size, which on ext4 is a journal commit: about twice the
//! cost of syncing the data alone. So under [`SyncPolicy::Always`] the
//! leader of a group that would write past the file's end first sets the
//! file's length [`RESERVE_AHEAD_BYTES`] beyond it (`set_len`: a hole, no
//! blocks written), and later appends write inside it: one size change
//! per few megabytes instead of one per append. A log that is closed cuts
//! its length back to what was written. After a crash the log ends in
//! zeros, which replay tells from a torn record: a tail after the last
//! whole record that is all zero bytes is the unused reservation, cut off
//! without a warning ([`ReplayReport::reserved_tail_bytes`]). A record
//! starts with the non-zero [`RECORD_MARKER`], so a torn record is never
//! all zeros.
//!
//! # Group commit
//!
//! Appenders put their encoded records in a shared buffer; the first one to
//! find no write in progress becomes the leader, writes everything gathered
//! with one `write` and, under [`SyncPolicy::Always`], one `fdatasync`, then
//! wakes the others.
//!
//! # Failures
//!
//! A write refused for lack of space (`ENOSPC`, `EDQUOT`) may have left
//! part of the group in the file. The leader cuts the file back to where
//! the group started (`set_len`, and the write position moved back), so
//! the log again ends after a whole record; the group's appenders get the
//! error (nothing of theirs is in the log) and later appends work as
//! before, once there is space. Any other failure, a failed cut-back, or a
//! failed fsync (after which the kernel may have dropped the unwritten
//! pages, so what the file holds is not known) poisons the log: every
//! later append fails with [`Error::StorageFailed`], because bytes written
//! after a partial record would read back as mid-log corruption.
//!
//! ```
//! use ringkv::config::SyncPolicy;
//! use ringkv::storage::lsm::wal::{Wal, WalRecord};
//! use ringkv::storage::BatchOp;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("1.wal");
//! let wal = Wal::create(&path, SyncPolicy::Always)?;
//! let record = WalRecord {
//!     first_seq: 1,
//!     ops: vec![BatchOp::Put { key: b"k".to_vec(), value: b"v".to_vec() }],
//! };
//! wal.append(&record)?; // fsync'd when this returns
//! drop(wal);
//! let (records, report) = Wal::replay(&path)?;
//! assert_eq!(records, vec![record]);
//! assert_eq!(report.torn_tail_bytes, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not here: assigning sequence numbers, deciding when to start a new log,
//! deleting old logs (the engine's).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::fault;
use crate::error::{Error, Result};
use crate::storage::BatchOp;
use crate::storage::SyncPolicy;

/// The first bytes of every log: `"RKVW"` and the format version 1 as a
/// little-endian u32.
pub const WAL_HEADER: [u8; 8] = *b"RKVW\x01\x00\x00\x00";

/// The bytes that start every record; lets replay find candidate records
/// after a bad one without checksumming at every offset.
pub const RECORD_MARKER: [u8; 4] = *b"RKVR";

/// Marker, body length and crc32.
pub const RECORD_HEADER_BYTES: usize = 12;

/// How far beyond its end a log under [`SyncPolicy::Always`] sets its
/// length before an append that would grow it (see the module docs).
pub const RESERVE_AHEAD_BYTES: u64 = 4 * 1024 * 1024;

/// The largest record body: 64 MiB, room for a batch of three maximal
/// values ([`MAX_VALUE_BYTES`](crate::storage::MAX_VALUE_BYTES), 16 MiB)
/// or many small operations. A batch whose encoding is larger is refused
/// by [`Wal::append`] with [`Error::InvalidInput`]; the engine splits or
/// refuses such batches. Replay refuses a larger claimed length before
/// allocating.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// One logged batch: operation `i` has sequence number `first_seq + i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Sequence number of the first operation.
    pub first_seq: u64,
    /// The batch's operations, in order.
    pub ops: Vec<BatchOp>,
}

/// What [`Wal::replay`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Whole records read.
    pub records: usize,
    /// Bytes of the file holding the header and those records (the file's
    /// length after replay).
    pub valid_bytes: u64,
    /// Bytes of a torn last record cut off (0 if none).
    pub torn_tail_bytes: u64,
    /// Zero bytes after the last whole record, cut off: space reserved
    /// ahead of appends that a crash left unused (0 if none).
    pub reserved_tail_bytes: u64,
}

/// Encodes `record` as it is stored in a log, header included.
/// [`Error::InvalidInput`] when the body would exceed [`MAX_RECORD_BYTES`].
pub fn encode_record(record: &WalRecord) -> Result<Vec<u8>> {
    let body_len = body_len(record)?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + body_len);
    encode_into(record, body_len, &mut out);
    Ok(out)
}

/// The encoded body length of `record`, refused when over the limit.
fn body_len(record: &WalRecord) -> Result<usize> {
    let mut body_len: usize = 8 + 4;
    for op in &record.ops {
        body_len += 1 + 4 + op.key().len() + op.value().map_or(0, |v| 4 + v.len());
    }
    if body_len > MAX_RECORD_BYTES || record.ops.len() > u32::MAX as usize {
        return Err(Error::InvalidInput(format!(
            "a batch of {} operations encodes to {body_len} bytes, more than the log's record limit of {MAX_RECORD_BYTES}",
            record.ops.len()
        )));
    }
    Ok(body_len)
}

/// Appends the record (header and body of `body_len` bytes, as computed by
/// [`body_len`]) to `out`.
fn encode_into(record: &WalRecord, body_len: usize, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(RECORD_HEADER_BYTES + body_len);
    out.extend_from_slice(&RECORD_MARKER);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.first_seq.to_le_bytes());
    out.extend_from_slice(&(record.ops.len() as u32).to_le_bytes());
    for op in &record.ops {
        let (kind, key, value) = match op {
            BatchOp::Put { key, value } => (OP_PUT, key, Some(value)),
            BatchOp::Delete { key } => (OP_DELETE, key, None),
        };
        out.push(kind);
        // Keys and values are far below 4 GiB: body_len bounds them.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(v) = value {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
    let rec = &mut out[start..];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rec[4..8]);
    hasher.update(&rec[RECORD_HEADER_BYTES..]);
    let crc = hasher.finalize();
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Why the bytes at an offset are not a whole record.
#[derive(Debug)]
enum Bad {
    /// The record runs past the end of the bytes.
    Incomplete,
    /// The record is whole but wrong.
    Invalid(String),
}

impl Bad {
    fn reason(&self) -> String {
        match self {
            Bad::Incomplete => "record runs past the end of the log".into(),
            Bad::Invalid(r) => r.clone(),
        }
    }
}

/// Decodes the record at the start of `bytes`: its value and length.
fn decode_at(bytes: &[u8]) -> std::result::Result<(WalRecord, usize), Bad> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(if RECORD_MARKER.starts_with(&bytes[..bytes.len().min(4)]) {
            Bad::Incomplete
        } else {
            Bad::Invalid("bad record marker".into())
        });
    }
    if bytes[..4] != RECORD_MARKER {
        return Err(Bad::Invalid("bad record marker".into()));
    }
    let body_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if body_len > MAX_RECORD_BYTES {
        return Err(Bad::Invalid(format!(
            "record length {body_len} exceeds the maximum of {MAX_RECORD_BYTES}"
        )));
    }
    let end = RECORD_HEADER_BYTES + body_len;
    let Some(body) = bytes.get(RECORD_HEADER_BYTES..end) else {
        return Err(Bad::Incomplete);
    };
    let stored = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[4..8]);
    hasher.update(body);
    let got = hasher.finalize();
    if got != stored {
        return Err(Bad::Invalid(format!(
            "record checksum mismatch: stored {stored:#010x}, computed {got:#010x}"
        )));
    }
    decode_body(body).map(|r| (r, end)).map_err(Bad::Invalid)
}

/// Decodes a checksummed body. Every length is checked against the bytes
/// left before anything is copied.
fn decode_body(body: &[u8]) -> std::result::Result<WalRecord, String> {
    struct Reader<'a> {
        bytes: &'a [u8],
        pos: usize,
    }
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
            let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
            let Some(end) = end else {
                return Err(format!(
                    "record body ends after {} bytes, {n} more needed at {}",
                    self.bytes.len(),
                    self.pos
                ));
            };
            let s = &self.bytes[self.pos..end];
            self.pos = end;
            Ok(s)
        }
        fn u32(&mut self) -> std::result::Result<u32, String> {
            let b = self.take(4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let mut seq = [0u8; 8];
    seq.copy_from_slice(r.take(8)?);
    let first_seq = u64::from_le_bytes(seq);
    let count = r.u32()? as usize;
    // Each operation takes at least 5 bytes: bound the count before
    // reserving room for it.
    if count > body.len() / 5 {
        return Err(format!(
            "{count} operations cannot fit in {} bytes",
            body.len()
        ));
    }
    if first_seq.checked_add(count as u64).is_none() {
        return Err(format!("sequence numbers overflow: {first_seq} + {count}"));
    }
    let mut ops = Vec::with_capacity(count);
    for i in 0..count {
        let kind = r.take(1)?[0];
        let key_len = r.u32()? as usize;
        let key = r.take(key_len)?.to_vec();
        ops.push(match kind {
            OP_PUT => {
                let value_len = r.u32()? as usize;
                BatchOp::Put {
                    key,
                    value: r.take(value_len)?.to_vec(),
                }
            }
            OP_DELETE => BatchOp::Delete { key },
            other => return Err(format!("operation {i} has unknown kind {other}")),
        });
    }
    if r.pos != body.len() {
        return Err(format!(
            "{} stray bytes after the operations",
            body.len() - r.pos
        ));
    }
    Ok(WalRecord { first_seq, ops })
}

/// Decodes one record at the start of `bytes`, returning it and the bytes
/// it took. For fuzzing and property tests: [`Wal::replay`] is the reader.
#[doc(hidden)]
pub fn decode_record(bytes: &[u8]) -> Result<(WalRecord, usize)> {
    decode_at(bytes).map_err(|bad| Error::Corruption {
        file: PathBuf::from("<wal record>"),
        offset: 0,
        reason: bad.reason(),
    })
}

/// Decodes a record body (after the checksum) as replay does: lets a fuzzer
/// reach the operation parser without forging checksums.
#[doc(hidden)]
pub fn decode_record_body(body: &[u8]) -> Result<WalRecord> {
    decode_body(body).map_err(|reason| Error::Corruption {
        file: PathBuf::from("<wal record>"),
        offset: 0,
        reason,
    })
}

/// A whole log image decoded: the records, where the valid part ends and,
/// for a torn tail, why the next record was refused.
struct Decoded {
    records: Vec<WalRecord>,
    report: ReplayReport,
    torn_reason: Option<String>,
}

/// Decodes a whole log image as [`Wal::replay`] does, without touching a
/// file: header, records, torn-tail rule. For fuzzing and property tests.
#[doc(hidden)]
pub fn decode_records(bytes: &[u8]) -> Result<(Vec<WalRecord>, ReplayReport)> {
    decode_log(bytes, Path::new("<wal>")).map(|d| (d.records, d.report))
}

fn decode_log(bytes: &[u8], file: &Path) -> Result<Decoded> {
    let corruption = |offset: usize, reason: String| Error::Corruption {
        file: file.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    if bytes.len() < WAL_HEADER.len() {
        // A crash between creating the file and writing its header.
        if WAL_HEADER.starts_with(bytes) {
            return Ok(Decoded {
                records: Vec::new(),
                report: ReplayReport {
                    records: 0,
                    valid_bytes: 0,
                    torn_tail_bytes: bytes.len() as u64,
                    reserved_tail_bytes: 0,
                },
                torn_reason: (!bytes.is_empty()).then(|| "partial log header".to_string()),
            });
        }
        return Err(corruption(
            0,
            "not a ringkv write-ahead log (bad header)".into(),
        ));
    }
    if bytes[..WAL_HEADER.len()] != WAL_HEADER {
        return Err(corruption(
            0,
            "not a ringkv write-ahead log, or an unsupported version (bad header)".into(),
        ));
    }
    let mut records = Vec::new();
    let mut off = WAL_HEADER.len();
    while off < bytes.len() {
        match decode_at(&bytes[off..]) {
            Ok((record, len)) => {
                records.push(record);
                off += len;
            }
            Err(bad) => {
                if bytes[off..].iter().all(|&b| b == 0) {
                    return Ok(Decoded {
                        report: ReplayReport {
                            records: records.len(),
                            valid_bytes: off as u64,
                            torn_tail_bytes: 0,
                            reserved_tail_bytes: (bytes.len() - off) as u64,
                        },
                        records,
                        torn_reason: None,
                    });
                }
                if let Some(p) = next_valid_record(bytes, off + 1) {
                    return Err(corruption(
                        off,
                        format!("{}; a valid record follows at offset {p}", bad.reason()),
                    ));
                }
                return Ok(Decoded {
                    report: ReplayReport {
                        records: records.len(),
                        valid_bytes: off as u64,
                        torn_tail_bytes: (bytes.len() - off) as u64,
                        reserved_tail_bytes: 0,
                    },
                    records,
                    torn_reason: Some(bad.reason()),
                });
            }
        }
    }
    Ok(Decoded {
        report: ReplayReport {
            records: records.len(),
            valid_bytes: off as u64,
            torn_tail_bytes: 0,
            reserved_tail_bytes: 0,
        },
        records,
        torn_reason: None,
    })
}

/// The offset of the first whole, valid record starting at or after `from`.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut p = from;
    while p + RECORD_HEADER_BYTES <= bytes.len() {
        let found = bytes[p..]
            .windows(RECORD_MARKER.len())
            .position(|w| w == RECORD_MARKER)?;
        p += found;
        if decode_at(&bytes[p..]).is_ok() {
            return Some(p);
        }
        p += 1;
    }
    None
}

/// Fsyncs the directory holding `path`, so that a newly created file's
/// directory entry survives a machine crash.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        let dir = File::open(parent)
            .map_err(|e| Error::io(format!("opening directory {}", parent.display()), e))?;
        dir.sync_all()
            .map_err(|e| Error::io(format!("syncing directory {}", parent.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = parent;
    Ok(())
}

/// How one group's write ended: `None` when written, or the out-of-space
/// error it met (the group was cut back off the file).
type GroupOutcome = OnceLock<Option<(std::io::ErrorKind, String)>>;

/// Group-commit state, behind one mutex.
#[derive(Debug, Default)]
struct State {
    /// Encoded records of the group being gathered.
    pending: Vec<u8>,
    /// Where the leader of the group being gathered reports its outcome to
    /// the appenders waiting in it; made by the first appender that has to
    /// wait (an appender that leads at once needs none, so a lone writer
    /// allocates nothing here). Each waiting appender keeps the one of its
    /// group.
    outcome: Option<Arc<GroupOutcome>>,
    /// An empty buffer to swap in for `pending` (keeps its allocation).
    spare: Vec<u8>,
    /// Id of the group `pending` will be written as.
    gathering: u64,
    /// Every group with an id `<=` this is written (and fsync'd under Always).
    done: u64,
    /// Whether a leader is writing a group now.
    leader: bool,
    /// Appenders waiting on `written`: a leader wakes them only if there
    /// are any (a wake-up is a system call even with nobody to wake).
    waiting: usize,
    /// The failure that poisoned the log; it accepts nothing after it.
    failure: Option<(std::io::ErrorKind, String)>,
    /// Bytes written since the last fsync.
    unsynced: bool,
    /// Tells the interval syncer to stop.
    stop: bool,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    file: File,
    policy: SyncPolicy,
    state: Mutex<State>,
    /// Signalled when a group is written or fails.
    written: Condvar,
    /// Signalled when the interval syncer should stop.
    stopping: Condvar,
    bytes_written: AtomicU64,
    /// The file's length when it was set ahead of the writes (see the
    /// module docs); at most `bytes_written` when nothing is reserved.
    /// Only a leader changes it.
    reserved: AtomicU64,
}

impl Shared {
    /// The state, even if a thread panicked holding the lock: every update
    /// of it is a single assignment, so it is never half-changed.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error of a poisoned log: not retryable, whatever the cause was
    /// (a full disk included), since this log will never take a write.
    fn failed(&self, failure: &(std::io::ErrorKind, String)) -> Error {
        Error::StorageFailed {
            reason: format!(
                "write-ahead log {} failed and accepts no more writes: {}",
                self.path.display(),
                failure.1
            ),
        }
    }

    /// Cuts the log back to `len` bytes and moves the write position there,
    /// after a write that failed part way.
    fn cut_back(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        self.reserved.store(len, Ordering::Relaxed);
        (&self.file).seek(SeekFrom::Start(len))?;
        Ok(())
    }

    /// Under [`SyncPolicy::Always`], before a group that would write past
    /// the file's end: sets the file's length [`RESERVE_AHEAD_BYTES`]
    /// beyond the group's end. A failure only costs the saving: the write
    /// then grows the file itself.
    fn reserve(&self, start: u64, len: usize) {
        let end = start + len as u64;
        if self.policy != SyncPolicy::Always || end <= self.reserved.load(Ordering::Relaxed) {
            return;
        }
        let to = end + RESERVE_AHEAD_BYTES;
        match self.file.set_len(to) {
            Ok(()) => self.reserved.store(to, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(log = %self.path.display(), error = %e, "could not reserve write-ahead log space ahead");
            }
        }
    }

    /// Cuts a log being closed back to what was written, if space was
    /// reserved beyond it, so that a cleanly closed log has no zero tail.
    fn release_reserved(&self) -> std::io::Result<()> {
        let written = self.bytes_written.load(Ordering::Relaxed);
        if self.reserved.load(Ordering::Relaxed) <= written {
            return Ok(());
        }
        self.file.set_len(written)?;
        self.reserved.store(written, Ordering::Relaxed);
        self.file.sync_all()
    }

    /// fsyncs the log if anything was written since the last fsync.
    fn sync(&self) -> Result<()> {
        {
            let mut st = self.lock();
            if let Some(f) = &st.failure {
                return Err(self.failed(f));
            }
            if !st.unsynced {
                return Ok(());
            }
            st.unsynced = false;
        }
        if let Err(e) = self.file.sync_data() {
            let mut st = self.lock();
            st.failure.get_or_insert((e.kind(), e.to_string()));
            self.written.notify_all();
            return Err(Error::io(
                format!("syncing write-ahead log {}", self.path.display()),
                e,
            ));
        }
        Ok(())
    }
}

/// An open write-ahead log being appended to. `Send + Sync`: appenders on
/// many threads share it (and its writes and fsyncs).
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl Wal {
    /// Creates a new log file at `path` (fails if it exists), writes its
    /// header, fsyncs it and its parent directory. Under
    /// [`SyncPolicy::Interval`] starts the thread that fsyncs it.
    pub fn create(path: &Path, sync: SyncPolicy) -> Result<Wal> {
        if let SyncPolicy::Interval(d) = sync {
            if d.is_zero() {
                return Err(Error::InvalidInput(
                    "WAL sync interval must be positive (use Always)".into(),
                ));
            }
        }
        let context = || format!("creating write-ahead log {}", path.display());
        fault::check_create(path).map_err(|e| Error::io(context(), e))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(context(), e))?;
        if let Err(e) = file
            .write_all(&WAL_HEADER)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(context(), e))
            .and_then(|()| sync_parent_dir(path))
        {
            // Nothing was ever appended to it: the file holds no write.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            file,
            policy: sync,
            state: Mutex::new(State {
                gathering: 1,
                ..State::default()
            }),
            written: Condvar::new(),
            stopping: Condvar::new(),
            bytes_written: AtomicU64::new(WAL_HEADER.len() as u64),
            reserved: AtomicU64::new(0),
        });
        let syncer = match sync {
            SyncPolicy::Interval(every) => {
                let shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name("ringkv-wal-sync".into())
                    .spawn(move || interval_syncer(&shared, every))
                    .map_err(|e| Error::io("starting the WAL sync thread", e))?;
                Some(handle)
            }
            SyncPolicy::None | SyncPolicy::Always => None,
        };
        Ok(Wal { shared, syncer })
    }

    /// Reads every whole record of the log at `path`. A torn tail (a bad
    /// last record with no valid record after it) is cut off: the file is
    /// truncated to the last whole record, fsync'd, and a warning logged.
    /// A tail of zero bytes (space reserved ahead of appends, see the
    /// module docs) is cut off the same way, without the warning.
    /// A bad record with a valid one after it is [`Error::Corruption`]
    /// with the file and the bad record's offset.
    pub fn replay(path: &Path) -> Result<(Vec<WalRecord>, ReplayReport)> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io(format!("reading write-ahead log {}", path.display()), e))?;
        let decoded = decode_log(&bytes, path)?;
        let report = decoded.report;
        if report.reserved_tail_bytes > 0 {
            tracing::debug!(
                log = %path.display(),
                offset = report.valid_bytes,
                bytes = report.reserved_tail_bytes,
                "write-ahead log ends in space reserved ahead of appends; cutting it off"
            );
        }
        if report.torn_tail_bytes > 0 {
            tracing::warn!(
                log = %path.display(),
                offset = report.valid_bytes,
                bytes = report.torn_tail_bytes,
                reason = decoded.torn_reason.as_deref().unwrap_or(""),
                "write-ahead log has a torn tail (a crash during an append); cutting it off"
            );
        }
        if report.torn_tail_bytes > 0 || report.reserved_tail_bytes > 0 {
            let context = || format!("truncating write-ahead log {}", path.display());
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io(context(), e))?;
            file.set_len(report.valid_bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(context(), e))?;
        }
        Ok((decoded.records, report))
    }

    /// Appends `record`. Returns once it is written to the OS
    /// ([`SyncPolicy::None`] and [`SyncPolicy::Interval`]) or fsync'd
    /// ([`SyncPolicy::Always`]). Concurrent appenders share one write and
    /// one fsync. Records of one thread appear in the log in its order.
    pub fn append(&self, record: &WalRecord) -> Result<()> {
        let body_len = body_len(record)?;
        let shared = &*self.shared;
        let mut st = shared.lock();
        if let Some(f) = &st.failure {
            return Err(shared.failed(f));
        }
        // Encoded straight into the group buffer: no copy per record.
        encode_into(record, body_len, &mut st.pending);
        if !st.leader {
            // Nobody is writing: lead at once, this record and whatever
            // waiting appenders gathered (their outcome is set too).
            return self.lead(st);
        }
        let mine = Arc::clone(st.outcome.get_or_insert_with(Default::default));
        loop {
            if let Some(outcome) = mine.get() {
                return match outcome {
                    None => Ok(()),
                    Some((kind, text)) => Err(self.refused(*kind, text)),
                };
            }
            if let Some(f) = &st.failure {
                return Err(shared.failed(f));
            }
            if st.leader {
                st.waiting += 1;
                st = shared.written.wait(st).unwrap_or_else(|p| p.into_inner());
                st.waiting -= 1;
                continue;
            }
            // The last leader is done and our group is not written yet:
            // lead it.
            return self.lead(st);
        }
    }

    /// The error of an appender whose group was refused for lack of space
    /// (and cut back off the log).
    fn refused(&self, kind: std::io::ErrorKind, text: &str) -> Error {
        Error::io(
            format!(
                "appending to write-ahead log {} (nothing of the batch was kept)",
                self.shared.path.display()
            ),
            std::io::Error::new(kind, text.to_string()),
        )
    }

    /// Writes everything gathered so far as one group (the caller's record
    /// among it), with the lock `st` released meanwhile, and returns the
    /// group's outcome; the group's waiting appenders get it through the
    /// group's `outcome`.
    fn lead(&self, mut st: MutexGuard<'_, State>) -> Result<()> {
        let shared = &*self.shared;
        st.leader = true;
        let mut group = std::mem::take(&mut st.spare);
        std::mem::swap(&mut group, &mut st.pending);
        let outcome = st.outcome.take();
        let id = st.gathering;
        st.gathering += 1;
        drop(st);
        // Only the leader writes, so this is where the group starts.
        let start = shared.bytes_written.load(Ordering::Relaxed);
        shared.reserve(start, group.len());
        let mut result = fault::write_all(&shared.file, &shared.path, &group);
        let mut poison = None;
        match &result {
            Ok(()) if shared.policy == SyncPolicy::Always => {
                if let Err(e) = shared.file.sync_data() {
                    poison = Some((e.kind(), format!("fsync: {e}")));
                }
            }
            Ok(()) => {}
            Err(e) if fault::is_out_of_space(e) => {
                if let Err(cut) = shared.cut_back(start) {
                    poison = Some((
                        cut.kind(),
                        format!("{e}, then cutting the partial write back failed: {cut}"),
                    ));
                }
            }
            Err(e) => poison = Some((e.kind(), e.to_string())),
        }
        if poison.is_some() {
            result = Err(std::io::Error::other("poisoned"));
        }
        let mut st = shared.lock();
        st.leader = false;
        let mine = match (result, poison) {
            (Ok(()), _) => {
                shared
                    .bytes_written
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                st.done = id;
                st.unsynced = shared.policy != SyncPolicy::Always;
                if let Some(o) = &outcome {
                    let _ = o.set(None);
                }
                Ok(())
            }
            (Err(_), Some(p)) => {
                tracing::error!(log = %shared.path.display(), error = %p.1, "write-ahead log failed; it takes no more writes");
                let failure = st.failure.get_or_insert(p);
                Err(shared.failed(failure))
            }
            (Err(e), None) => {
                tracing::warn!(log = %shared.path.display(), error = %e, bytes = group.len(), "write-ahead log append refused for lack of space; cut back, later appends will retry");
                let (kind, text) = (e.kind(), e.to_string());
                let err = self.refused(kind, &text);
                if let Some(o) = &outcome {
                    let _ = o.set(Some((kind, text)));
                }
                Err(err)
            }
        };
        group.clear();
        st.spare = group;
        // Wakes the group's appenders, and those gathered meanwhile (one
        // of them leads next).
        if st.waiting > 0 {
            shared.written.notify_all();
        }
        mine
    }

    /// fsyncs everything appended so far (whatever the policy).
    pub fn sync(&self) -> Result<()> {
        self.shared.sync()
    }

    /// Bytes written to the file, header included.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::Relaxed)
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

/// The [`SyncPolicy::Interval`] thread: fsyncs every `every` until stopped.
fn interval_syncer(shared: &Shared, every: Duration) {
    loop {
        let st = shared.lock();
        let (st, _) = shared
            .stopping
            .wait_timeout_while(st, every, |s| !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        if st.stop {
            return;
        }
        drop(st);
        if let Err(e) = shared.sync() {
            tracing::error!(log = %shared.path.display(), error = %e, "write-ahead log fsync failed");
            return;
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.stopping.notify_all();
        if let Some(handle) = self.syncer.take() {
            // A panicked syncer has nothing left to clean up.
            let _ = handle.join();
        }
        if let Err(e) = self.shared.sync() {
            tracing::warn!(log = %self.shared.path.display(), error = %e, "final write-ahead log fsync failed");
            return;
        }
        // A poisoned log's length is left as it is: what it holds past its
        // last good group is not known, and replay judges it.
        if self.shared.lock().failure.is_none() {
            if let Err(e) = self.shared.release_reserved() {
                tracing::warn!(log = %self.shared.path.display(), error = %e, "cutting a closed write-ahead log's reserved space back failed (replay cuts it)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first_seq: u64, n: usize) -> WalRecord {
        WalRecord {
            first_seq,
            ops: (0..n)
                .map(|i| {
                    let key = format!("k{first_seq}-{i}").into_bytes();
                    if i % 3 == 2 {
                        BatchOp::Delete { key }
                    } else {
                        BatchOp::Put {
                            key,
                            value: vec![i as u8; i * 10],
                        }
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn records_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        let written: Vec<_> = (0..20).map(|i| record(i * 100, i as usize % 5)).collect();
        {
            let wal = Wal::create(&path, SyncPolicy::None).unwrap();
            for r in &written {
                wal.append(r).unwrap();
            }
            assert_eq!(wal.bytes_written(), std::fs::metadata(&path).unwrap().len());
        }
        let (read, report) = Wal::replay(&path).unwrap();
        assert_eq!(read, written);
        assert_eq!(report.records, 20);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(report.valid_bytes, std::fs::metadata(&path).unwrap().len());
    }

    /// Under `Always` a log sets its length ahead of its appends and cuts
    /// it back when closed; after a crash (the file copied while open) its
    /// zero tail replays as reserved space, not as a torn record, and is
    /// cut off. A torn record followed by zeros is still a torn tail.
    /// Under `None` nothing is reserved.
    #[test]
    fn space_reserved_ahead_is_cut_back_on_close_and_on_replay() {
        let dir = tempfile::tempdir().unwrap();
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        let path = dir.path().join("1.wal");
        let crashed = dir.path().join("2.wal");
        let written: Vec<_> = (0..5).map(|i| record(i * 10, 3)).collect();
        {
            let wal = Wal::create(&path, SyncPolicy::Always).unwrap();
            wal.append(&written[0]).unwrap();
            let reserved = len(&path);
            assert_eq!(reserved, RESERVE_AHEAD_BYTES + wal.bytes_written());
            for r in &written[1..] {
                wal.append(r).unwrap();
                assert_eq!(len(&path), reserved, "set once per reservation");
            }
            std::fs::copy(&path, &crashed).unwrap();
            let (read, report) = Wal::replay(&crashed).unwrap();
            assert_eq!(read, written);
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.reserved_tail_bytes, reserved - wal.bytes_written());
            assert_eq!(report.valid_bytes, wal.bytes_written());
            assert_eq!(
                len(&crashed),
                wal.bytes_written(),
                "replay cut the zeros off"
            );
        }
        let (read, report) = Wal::replay(&path).unwrap();
        assert_eq!(read, written);
        assert_eq!(report.reserved_tail_bytes, 0, "closing cut the reservation");
        assert_eq!(len(&path), report.valid_bytes);

        // A torn record, then the reservation's zeros: torn, as before.
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&encode_record(&record(99, 2)).unwrap()[..20]);
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(&crashed, &bytes).unwrap();
        let (read, report) = Wal::replay(&crashed).unwrap();
        assert_eq!(read, written);
        assert_eq!(report.reserved_tail_bytes, 0);
        assert_eq!(report.torn_tail_bytes, (bytes.len() - whole) as u64);

        let unsynced = dir.path().join("3.wal");
        let wal = Wal::create(&unsynced, SyncPolicy::None).unwrap();
        wal.append(&written[0]).unwrap();
        assert_eq!(len(&unsynced), wal.bytes_written());
    }

    #[test]
    fn create_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        drop(Wal::create(&path, SyncPolicy::Always).unwrap());
        assert!(matches!(
            Wal::create(&path, SyncPolicy::Always),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        {
            let wal = Wal::create(&path, SyncPolicy::None).unwrap();
            wal.append(&record(1, 3)).unwrap();
            wal.append(&record(4, 3)).unwrap();
        }
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 5).unwrap();
        let (read, report) = Wal::replay(&path).unwrap();
        assert_eq!(read, vec![record(1, 3)]);
        assert!(report.torn_tail_bytes > 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), report.valid_bytes);
        // A second replay finds a clean log.
        let (again, report) = Wal::replay(&path).unwrap();
        assert_eq!(again, read);
        assert_eq!(report.torn_tail_bytes, 0);
    }

    #[test]
    fn damage_before_a_valid_record_is_corruption() {
        let mut log = WAL_HEADER.to_vec();
        let first = encode_record(&record(1, 2)).unwrap();
        log.extend_from_slice(&first);
        log.extend_from_slice(&encode_record(&record(3, 2)).unwrap());
        let mut bad = log.clone();
        bad[WAL_HEADER.len() + RECORD_HEADER_BYTES + 3] ^= 4;
        match decode_records(&bad) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, WAL_HEADER.len() as u64),
            other => panic!("expected corruption, got {other:?}"),
        }
        // The same damage in the last record is a torn tail.
        let mut bad = log.clone();
        let last = log.len() - 2;
        bad[last] ^= 4;
        let (records, report) = decode_records(&bad).unwrap();
        assert_eq!(records, vec![record(1, 2)]);
        assert_eq!(report.valid_bytes, (WAL_HEADER.len() + first.len()) as u64);
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        let mut rec = RECORD_MARKER.to_vec();
        rec.extend_from_slice(&u32::MAX.to_le_bytes());
        rec.extend_from_slice(&[0; 8]);
        assert!(matches!(decode_at(&rec), Err(Bad::Invalid(_))));
        // A count far beyond the body.
        let mut body = 7u64.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_body(&body).unwrap_err().contains("cannot fit"));
        let huge = WalRecord {
            first_seq: 0,
            ops: vec![
                BatchOp::Put {
                    key: vec![],
                    value: vec![0; MAX_RECORD_BYTES],
                };
                1
            ],
        };
        assert!(matches!(encode_record(&huge), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn empty_and_partial_headers_replay_as_empty_logs() {
        assert_eq!(decode_records(&[]).unwrap().0, vec![]);
        let (records, report) = decode_records(&WAL_HEADER[..3]).unwrap();
        assert!(records.is_empty());
        assert_eq!(report.torn_tail_bytes, 3);
        assert!(matches!(
            decode_records(b"RKX"),
            Err(Error::Corruption { .. })
        ));
        assert!(matches!(
            decode_records(b"RKVW\x02\x00\x00\x00"),
            Err(Error::Corruption { .. })
        ));
    }

    /// Runs `f` on its own thread and fails the test if it takes longer
    /// than a minute (a deadlock in group commit would otherwise hang).
    fn within_a_minute(f: impl FnOnce() + Send + 'static) {
        let (done, finished) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            f();
            let _ = done.send(());
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => handle.join().unwrap(),
            // The thread panicked: join to surface its panic.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => handle.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("timed out"),
        }
    }

    #[test]
    fn group_commit_keeps_every_record_in_each_threads_order() {
        within_a_minute(group_commit_scenario);
    }

    fn group_commit_scenario() {
        for policy in [
            SyncPolicy::Always,
            SyncPolicy::None,
            SyncPolicy::Interval(Duration::from_millis(5)),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("1.wal");
            let threads = 8u64;
            let per_thread = 50u64;
            {
                let wal = Arc::new(Wal::create(&path, policy).unwrap());
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let wal = wal.clone();
                        std::thread::spawn(move || {
                            for i in 0..per_thread {
                                // first_seq encodes (thread, index).
                                wal.append(&record(t * 1_000_000 + i, 1)).unwrap();
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().unwrap();
                }
                wal.sync().unwrap();
            }
            let (records, _) = Wal::replay(&path).unwrap();
            assert_eq!(records.len() as u64, threads * per_thread, "{policy:?}");
            let mut next = vec![0u64; threads as usize];
            for r in &records {
                let (t, i) = (r.first_seq / 1_000_000, r.first_seq % 1_000_000);
                assert_eq!(
                    i, next[t as usize],
                    "thread {t} out of order under {policy:?}"
                );
                next[t as usize] += 1;
                assert_eq!(r, &record(r.first_seq, 1));
            }
        }
    }

    #[test]
    fn interval_policy_syncs_in_the_background_and_stops_on_drop() {
        within_a_minute(interval_scenario);
    }

    fn interval_scenario() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        let wal = Wal::create(&path, SyncPolicy::Interval(Duration::from_millis(10))).unwrap();
        wal.append(&record(1, 1)).unwrap();
        assert_eq!(wal.shared.lock().done, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while wal.shared.lock().unsynced {
            assert!(std::time::Instant::now() < deadline, "never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(wal);
        assert_eq!(Wal::replay(&path).unwrap().0, vec![record(1, 1)]);
    }
}
