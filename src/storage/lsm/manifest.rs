//! The manifest: the durable record of which files make up the store.
//!
//! It holds the live table set (level, id, key range, sizes of each table),
//! the next file id, the highest sequence number stored in tables, the
//! lowest live WAL number (every WAL file numbered at or above it holds
//! writes not yet in a table; those below are dead), and the numbers of the
//! WAL segments that must exist (the live ones and the one created ahead for
//! the next memtable). A listed segment that is missing at open is
//! [`Error::Corruption`]: deleting a log must not lose acknowledged writes
//! without a word.
//!
//! Each change writes the whole state as a new file `MANIFEST-<n>`, fsyncs
//! it and the directory, and then switches to it by writing `CURRENT.tmp`
//! (the new file's name), fsyncing it and renaming it over `CURRENT`, then
//! fsyncing the directory again. A crash at any point leaves `CURRENT`
//! naming either the old complete manifest or the new complete one. Rewriting
//! the whole state rather than appending edits keeps recovery a single
//! decode; the state is a few dozen bytes per table, so even thousands of
//! tables cost little per flush.
//!
//! Layout of a manifest file (integers little-endian):
//!
//! ```text
//! magic "RKVMAN02" (8) | body length u32 | body | xxh3-64 of body u64
//! body: next_file_id u64 | last_seq u64 | min_wal u64 | table count u32 |
//!       per table: level u8 | id u64 | file_bytes u64 | entries u64 |
//!                  tombstones u64 | max_seq u64 |
//!                  smallest len u32 + bytes | largest len u32 + bytes |
//!       wal count u32 | per WAL segment: id u64
//! ```
//!
//! Version 1 (magic `"RKVMAN01"`) is the same without the WAL list; it is
//! still read (its WAL list is unknown, so no segment is checked for that
//! one open) and the next write replaces it with version 2. Any other magic
//! is [`Error::Corruption`] saying the format is unknown.
//!
//! A manifest that is truncated, fails its checksum or does not decode is
//! [`Error::Corruption`]: the engine refuses to open rather than guess which
//! tables are live. What this module does not do: decide when to write, or
//! delete table and WAL files; the engine does both.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::MAX_KEY_BYTES;

const MAGIC: &[u8; 8] = b"RKVMAN02";
/// The first format, without the WAL list: read, never written.
const MAGIC_V1: &[u8; 8] = b"RKVMAN01";
const CURRENT: &str = "CURRENT";
const CURRENT_TMP: &str = "CURRENT.tmp";
const PREFIX: &str = "MANIFEST-";

/// One live table, as the manifest records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestTable {
    /// The level it lives in.
    pub level: u8,
    /// Its file id.
    pub id: u64,
    /// Size of its file in bytes.
    pub file_bytes: u64,
    /// Entries in it, tombstones included.
    pub entries: u64,
    /// Tombstones in it.
    pub tombstones: u64,
    /// The highest sequence number in it.
    pub max_seq: u64,
    /// Its smallest key.
    pub smallest: Vec<u8>,
    /// Its largest key.
    pub largest: Vec<u8>,
}

/// Everything the manifest records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// The next unused file id (tables and WALs share one numbering).
    pub next_file_id: u64,
    /// The highest sequence number held by any table: WAL records at or
    /// below it are already in tables.
    pub last_seq: u64,
    /// WAL files numbered at or above this hold writes that are not in a
    /// table yet; those below may be deleted.
    pub min_wal: u64,
    /// The live tables, level 0 newest first, then each deeper level in key
    /// order.
    pub tables: Vec<ManifestTable>,
    /// The WAL segments that must exist, ascending: every segment at or
    /// above `min_wal` that may hold writes (the active one, the sealed
    /// ones waiting for flush, and the one created ahead for the next
    /// memtable). `None` for a version-1 manifest, which did not record
    /// them.
    pub wals: Option<Vec<u64>>,
}

impl ManifestState {
    /// Encodes the state as a complete manifest file.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(32 + self.tables.len() * 64);
        body.extend_from_slice(&self.next_file_id.to_le_bytes());
        body.extend_from_slice(&self.last_seq.to_le_bytes());
        body.extend_from_slice(&self.min_wal.to_le_bytes());
        body.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            body.push(t.level);
            for n in [t.id, t.file_bytes, t.entries, t.tombstones, t.max_seq] {
                body.extend_from_slice(&n.to_le_bytes());
            }
            for k in [&t.smallest, &t.largest] {
                body.extend_from_slice(&(k.len() as u32).to_le_bytes());
                body.extend_from_slice(k);
            }
        }
        let wals = self.wals.as_deref().unwrap_or(&[]);
        body.extend_from_slice(&(wals.len() as u32).to_le_bytes());
        for id in wals {
            body.extend_from_slice(&id.to_le_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        out
    }

    /// Decodes a manifest file's bytes; `file` names it in errors.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        let corrupt = |offset: usize, reason: &str| Error::Corruption {
            file: file.to_path_buf(),
            offset: offset as u64,
            reason: reason.to_string(),
        };
        if bytes.len() < 12 {
            return Err(corrupt(0, "truncated manifest header"));
        }
        let v1 = match &bytes[..8] {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            m if m.starts_with(b"RKVMAN") => {
                return Err(corrupt(
                    0,
                    &format!(
                        "unknown manifest format {:?} (this build reads RKVMAN01 and RKVMAN02)",
                        String::from_utf8_lossy(m)
                    ),
                ))
            }
            _ => return Err(corrupt(0, "bad manifest magic")),
        };
        let body_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if bytes.len() != 12 + body_len + 8 {
            return Err(corrupt(
                8,
                &format!(
                    "manifest of {} bytes does not match its body length {body_len}",
                    bytes.len()
                ),
            ));
        }
        let body = &bytes[12..12 + body_len];
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[12 + body_len..]);
        if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(body) {
            return Err(corrupt(12, "manifest checksum mismatch"));
        }
        let mut r = Reader { body, pos: 0 };
        let field = |r: &mut Reader<'_>| r.u64().ok_or_else(|| corrupt(12 + r.pos, "truncated"));
        let next_file_id = field(&mut r)?;
        let last_seq = field(&mut r)?;
        let min_wal = field(&mut r)?;
        let count = r
            .u32()
            .ok_or_else(|| corrupt(12 + r.pos, "truncated table count"))?;
        let mut tables = Vec::new();
        for _ in 0..count {
            let at = 12 + r.pos;
            let level = r.u8().ok_or_else(|| corrupt(at, "truncated table"))?;
            let id = field(&mut r)?;
            let file_bytes = field(&mut r)?;
            let entries = field(&mut r)?;
            let tombstones = field(&mut r)?;
            let max_seq = field(&mut r)?;
            let smallest = r.key().ok_or_else(|| corrupt(at, "bad smallest key"))?;
            let largest = r.key().ok_or_else(|| corrupt(at, "bad largest key"))?;
            if smallest > largest {
                return Err(corrupt(at, "table's smallest key is above its largest"));
            }
            tables.push(ManifestTable {
                level,
                id,
                file_bytes,
                entries,
                tombstones,
                max_seq,
                smallest,
                largest,
            });
        }
        let wals = if v1 {
            None
        } else {
            let at = 12 + r.pos;
            let count = r.u32().ok_or_else(|| corrupt(at, "truncated WAL count"))?;
            // Each id takes 8 bytes: bound the count before reserving.
            if count as usize > (body.len() - r.pos) / 8 {
                return Err(corrupt(at, "WAL count beyond the manifest's end"));
            }
            let mut wals = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let id = field(&mut r)?;
                if wals.last().is_some_and(|&last| last >= id) {
                    return Err(corrupt(12 + r.pos, "WAL ids not ascending"));
                }
                wals.push(id);
            }
            Some(wals)
        };
        if r.pos != body.len() {
            return Err(corrupt(12 + r.pos, "trailing bytes in manifest body"));
        }
        Ok(ManifestState {
            next_file_id,
            last_seq,
            min_wal,
            tables,
            wals,
        })
    }
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.body.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(a))
    }
    fn key(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        if len > MAX_KEY_BYTES {
            return None;
        }
        self.take(len).map(<[u8]>::to_vec)
    }
}

/// The manifest files of one engine directory.
#[derive(Debug)]
pub struct Manifest {
    dir: PathBuf,
    /// Number of the manifest file `CURRENT` names (0: none yet).
    number: u64,
    bytes_written: u64,
    /// Size of the manifest file in force plus `CURRENT`.
    current_bytes: u64,
}

impl Manifest {
    /// Reads the state `CURRENT` names in `dir`; `None` when there is no
    /// `CURRENT` (a new store).
    pub fn open(dir: &Path) -> Result<(Manifest, Option<ManifestState>)> {
        let current = dir.join(CURRENT);
        let name = match fs::read(&current) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let m = Manifest {
                    dir: dir.to_path_buf(),
                    number: 0,
                    bytes_written: 0,
                    current_bytes: 0,
                };
                return Ok((m, None));
            }
            Err(e) => return Err(Error::io(format!("reading {}", current.display()), e)),
        };
        let number = parse_current(&name).ok_or_else(|| Error::Corruption {
            file: current.clone(),
            offset: 0,
            reason: "CURRENT does not name a manifest file".into(),
        })?;
        let path = manifest_path(dir, number);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Corruption {
                file: current.clone(),
                offset: 0,
                reason: format!("CURRENT names {} which does not exist", path.display()),
            },
            _ => Error::io(format!("reading {}", path.display()), e),
        })?;
        let state = ManifestState::decode(&bytes, &path)?;
        let m = Manifest {
            dir: dir.to_path_buf(),
            number,
            bytes_written: 0,
            current_bytes: (bytes.len() + name.len()) as u64,
        };
        Ok((m, Some(state)))
    }

    /// Records `state` durably and switches to it (see the module docs for
    /// the order of writes and fsyncs). When this returns `Ok`, a crash
    /// recovers `state`; when it fails, the previous state is still the one
    /// recorded (the error is then the I/O error, and writing again is
    /// safe), or, when only the final directory fsync failed, either may be
    /// ([`Error::StorageFailed`]: the caller must stop changing files).
    pub fn write(&mut self, state: &ManifestState) -> Result<()> {
        let number = self.number + 1;
        let path = manifest_path(&self.dir, number);
        let bytes = state.encode();
        write_synced(&path, &bytes)?;
        sync_dir(&self.dir)?;
        let tmp = self.dir.join(CURRENT_TMP);
        let current = format!("{PREFIX}{number:06}\n");
        write_synced(&tmp, current.as_bytes())?;
        let target = self.dir.join(CURRENT);
        fs::rename(&tmp, &target)
            .map_err(|e| Error::io(format!("renaming {} into place", tmp.display()), e))?;
        // Up to here a failure left the previous manifest in force, so the
        // caller may try again (after a full disk, say). From here it is
        // not known which of the two a crash would find: never retried.
        sync_dir(&self.dir).map_err(|e| Error::StorageFailed {
            reason: format!("after switching to {}: {e}", path.display()),
        })?;
        self.bytes_written += (bytes.len() + current.len()) as u64;
        self.current_bytes = (bytes.len() + current.len()) as u64;
        let old = self.number;
        self.number = number;
        if old > 0 {
            // Nothing reads the old file any more; failing to delete it only
            // leaves a stray file that the next open removes.
            let _ = fs::remove_file(manifest_path(&self.dir, old));
        }
        Ok(())
    }

    /// Bytes written to manifest files by this handle.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Bytes the manifest in force and `CURRENT` take on disk.
    pub fn current_bytes(&self) -> u64 {
        self.current_bytes
    }

    /// Number of the manifest file in force (0 before the first write).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Whether `name` is a manifest-related file other than the one in
    /// force (a leftover from a crash between writing and switching).
    pub fn is_stale_file(&self, name: &str) -> bool {
        if name == CURRENT_TMP {
            return true;
        }
        match name
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => n != self.number,
            None => false,
        }
    }
}

fn parse_current(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let name = text.strip_suffix('\n')?;
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn manifest_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number:06}"))
}

/// Creates (or truncates) `path`, writes `bytes` and fsyncs the file.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let ctx = || format!("writing {}", path.display());
    super::fault::check_create(path).map_err(|e| Error::io(ctx(), e))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(ctx(), e))?;
    f.write_all(bytes).map_err(|e| Error::io(ctx(), e))?;
    f.sync_all().map_err(|e| Error::io(ctx(), e))
}

/// Fsyncs a directory, so that files created, renamed or deleted in it
/// survive a machine crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsyncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ManifestState {
        ManifestState {
            next_file_id: 42,
            last_seq: 1000,
            min_wal: 40,
            tables: vec![
                ManifestTable {
                    level: 0,
                    id: 39,
                    file_bytes: 4096,
                    entries: 10,
                    tombstones: 2,
                    max_seq: 1000,
                    smallest: b"a".to_vec(),
                    largest: b"q".to_vec(),
                },
                ManifestTable {
                    level: 2,
                    id: 7,
                    file_bytes: 1 << 20,
                    entries: 9000,
                    tombstones: 0,
                    max_seq: 300,
                    smallest: Vec::new(),
                    largest: vec![0xff; 3],
                },
            ],
            wals: Some(vec![40, 41, 43]),
        }
    }

    #[test]
    fn state_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, none) = Manifest::open(dir.path()).unwrap();
        assert!(none.is_none());
        m.write(&ManifestState {
            wals: Some(Vec::new()),
            ..ManifestState::default()
        })
        .unwrap();
        m.write(&sample()).unwrap();
        assert_eq!(m.number(), 2);
        assert!(
            !dir.path().join("MANIFEST-000001").exists(),
            "old manifest removed"
        );
        let (m2, state) = Manifest::open(dir.path()).unwrap();
        assert_eq!(state, Some(sample()));
        assert_eq!(m2.number(), 2);
        assert!(m2.is_stale_file("MANIFEST-000001"));
        assert!(!m2.is_stale_file("MANIFEST-000002"));
        assert!(!m2.is_stale_file("000002.sst"));
        assert!(m.bytes_written() > m.current_bytes());
        assert_eq!(m2.current_bytes(), m.current_bytes());
    }

    #[test]
    fn every_truncation_and_bit_flip_is_corruption() {
        let bytes = sample().encode();
        let file = Path::new("MANIFEST-000001");
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    ManifestState::decode(&bytes[..len], file),
                    Err(Error::Corruption { .. })
                ),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(
                    ManifestState::decode(&bad, file),
                    Err(Error::Corruption { .. })
                ),
                "bit flip at {i}"
            );
        }
        assert_eq!(ManifestState::decode(&bytes, file).unwrap(), sample());
    }

    #[test]
    fn a_version_1_manifest_is_read_without_a_wal_list() {
        // Version 1: the version-2 encoding without the WAL list.
        let v1 = ManifestState {
            wals: None,
            ..sample()
        };
        let v2 = v1.encode();
        let body = &v2[12..v2.len() - 8];
        let body = &body[..body.len() - 4];
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
        let file = Path::new("MANIFEST-000001");
        assert_eq!(ManifestState::decode(&bytes, file).unwrap(), v1);
        let mut future = bytes.clone();
        future[..8].copy_from_slice(b"RKVMAN09");
        match ManifestState::decode(&future, file) {
            Err(Error::Corruption { reason, .. }) => {
                assert!(reason.contains("unknown manifest format"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_torn_manifest_on_disk_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, _) = Manifest::open(dir.path()).unwrap();
        m.write(&sample()).unwrap();
        let path = dir.path().join("MANIFEST-000001");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(Error::Corruption { .. })
        ));
        fs::write(dir.path().join("CURRENT"), b"garbage").unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(Error::Corruption { .. })
        ));
        fs::write(dir.path().join("CURRENT"), b"MANIFEST-000009\n").unwrap();
        assert!(matches!(
            Manifest::open(dir.path()),
            Err(Error::Corruption { .. })
        ));
    }
}
