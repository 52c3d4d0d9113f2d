//! Salvage: makes a damaged LSM directory openable again by moving aside
//! what cannot be trusted, so that a node can be rebuilt from its replicas.
//!
//! Run by [`LsmEngine::open`](super::engine::LsmEngine::open) before
//! anything else when [`LsmConfig::salvage`](crate::storage::LsmConfig::salvage) is set (`ringkv-node
//! --salvage`), with the directory's lock held. It never deletes a file:
//! everything it takes out of the store is *moved* (renamed) into
//! `quarantine/` under the engine's directory, and each move is logged at
//! ERROR with the reason. What it does:
//!
//! 1. With no `CURRENT`, or a `CURRENT` or manifest that does not decode,
//!    nothing says which files are live: every table, WAL segment and
//!    manifest file is moved to quarantine and the store starts empty.
//! 2. Otherwise every table the manifest names is read whole (footer,
//!    index, bloom filter and every data block, checksums included). A
//!    damaged one is moved to quarantine; a missing one is noted. Both are
//!    dropped from the manifest.
//! 3. Every WAL segment at or above the manifest's `min_wal` is decoded
//!    whole. One that is damaged in the middle (a torn tail is not damage:
//!    open cuts it) is moved to quarantine; a listed one that is missing is
//!    noted. Both are dropped from the manifest's WAL list.
//! 4. A table the manifest does not name that holds writes beyond
//!    everything the manifest and the WALs hold (open would refuse it) is
//!    moved to quarantine.
//! 5. If anything changed, a new manifest without those files is recorded.
//!
//! Open then proceeds as usual. The writes the moved files held are
//! missing from this engine; on a node, read repair, anti-entropy and
//! range transfers bring them back from the other replicas. Dropping a
//! table can also make an older version of a key it overwrote visible
//! again; replicas hold the newer one, which wins every merge (the object
//! layer orders versions causally), except for a deletion whose tombstone
//! anti-entropy already purged everywhere.
//!
//! What it does not do: repair a file in place, or keep the readable part
//! of a damaged one (the replicas are the copy).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::block_cache::BlockCache;
use super::engine::{file_names, parse_file_name, refuse_unless_new, table_path, wal_path};
use super::iterators::StorageIterator;
use super::manifest::{sync_dir, Manifest};
use super::sstable::Table;
use crate::error::{Error, Result};

/// The subdirectory of the engine's directory that salvage moves files to.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What a salvage pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Files moved into `quarantine/`: where they were, and where they are.
    pub moved: Vec<(PathBuf, PathBuf)>,
    /// Files the manifest named or listed that were missing, dropped from it.
    pub missing: Vec<PathBuf>,
}

impl SalvageReport {
    /// Whether the pass changed nothing.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty() && self.missing.is_empty()
    }
}

/// Runs the salvage pass on `dir` (see the module docs).
pub fn run(dir: &Path, cache: &Arc<BlockCache>) -> Result<SalvageReport> {
    let mut report = SalvageReport::default();
    let mut wals = Vec::new();
    let mut ssts = Vec::new();
    let mut manifests = Vec::new();
    for name in file_names(dir)? {
        match parse_file_name(&name) {
            Some((id, "wal")) => wals.push(id),
            Some((id, "sst")) => ssts.push(id),
            _ if name.starts_with("MANIFEST-") || name == "CURRENT" || name == "CURRENT.tmp" => {
                manifests.push(name.to_string())
            }
            _ => {}
        }
    }
    wals.sort_unstable();
    ssts.sort_unstable();

    let opened = Manifest::open(dir);
    let (mut manifest, state) = match opened {
        Ok((m, Some(state))) => (m, state),
        Ok((_, None)) | Err(Error::Corruption { .. }) => {
            let why = match &opened {
                Err(e) => format!("the manifest cannot be read ({e})"),
                _ => "CURRENT is missing".to_string(),
            };
            if opened.is_ok() && refuse_unless_new(dir, &wals, &ssts).is_ok() {
                return Ok(report); // a new store: nothing to salvage
            }
            tracing::error!(dir = %dir.display(), reason = %why, "salvage: no trustworthy manifest; moving every engine file to quarantine, the store starts empty");
            let files = ssts
                .iter()
                .map(|&id| table_path(dir, id))
                .chain(wals.iter().map(|&id| wal_path(dir, id)))
                .chain(manifests.iter().map(|n| dir.join(n)));
            for path in files.collect::<Vec<_>>() {
                quarantine(dir, &path, &why, &mut report)?;
            }
            return Ok(report);
        }
        Err(e) => return Err(e),
    };

    // 2. Tables the manifest names.
    let mut kept = Vec::new();
    let named: HashSet<u64> = state.tables.iter().map(|t| t.id).collect();
    for t in &state.tables {
        let path = table_path(dir, t.id);
        if !path.exists() {
            tracing::error!(file = %path.display(), "salvage: a table the manifest names is missing; dropping it from the manifest");
            report.missing.push(path);
            continue;
        }
        match verify_table(&path, t.id, cache) {
            Ok(_) => kept.push(t.clone()),
            Err(e @ Error::Corruption { .. }) => {
                quarantine(dir, &path, &e.to_string(), &mut report)?;
            }
            Err(e) => return Err(e),
        }
    }

    // 3. WAL segments.
    let mut recovered = state.last_seq;
    let mut bad_wals = Vec::new();
    for &id in wals.iter().filter(|&&id| id >= state.min_wal) {
        let path = wal_path(dir, id);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match super::wal::decode_records(&bytes) {
            Ok((records, _)) => {
                for r in records {
                    let last = r.first_seq + (r.ops.len() as u64).saturating_sub(1);
                    if !r.ops.is_empty() {
                        recovered = recovered.max(last);
                    }
                }
            }
            Err(e) => {
                let e = match e {
                    Error::Corruption { offset, reason, .. } => Error::Corruption {
                        file: path.clone(),
                        offset,
                        reason,
                    },
                    other => other,
                };
                bad_wals.push(id);
                quarantine(dir, &path, &e.to_string(), &mut report)?;
            }
        }
    }
    let wal_list = state.wals.clone().map(|listed| {
        listed
            .into_iter()
            .filter(|id| {
                if *id < state.min_wal || bad_wals.contains(id) {
                    return false;
                }
                let present = wals.binary_search(id).is_ok();
                if !present {
                    let path = wal_path(dir, *id);
                    tracing::error!(file = %path.display(), "salvage: a WAL segment the manifest lists is missing; its writes are lost on this node");
                    report.missing.push(path);
                }
                present
            })
            .collect::<Vec<_>>()
    });

    // 4. Unnamed tables with writes nothing else holds.
    for &id in ssts.iter().filter(|id| !named.contains(id)) {
        let path = table_path(dir, id);
        if let Ok(table) = Table::open(&path, id, Arc::clone(cache)) {
            let max_seq = table.info().max_seq;
            drop(table);
            cache.forget_table(id);
            if max_seq > recovered {
                let why = format!(
                    "the manifest does not name this table and it holds writes up to sequence number {max_seq}, beyond {recovered}"
                );
                quarantine(dir, &path, &why, &mut report)?;
            }
        }
    }

    // 5. Record the manifest without what was dropped.
    if kept.len() != state.tables.len() || wal_list != state.wals {
        let mut next = state.clone();
        next.tables = kept;
        next.wals = wal_list;
        manifest.write(&next)?;
    }
    if report.is_empty() {
        tracing::info!(dir = %dir.display(), "salvage: every table and WAL segment verified; nothing moved");
    } else {
        tracing::warn!(dir = %dir.display(), moved = report.moved.len(), missing = report.missing.len(), "salvage done; the node refills what those files held from its replicas");
    }
    Ok(report)
}

/// Reads a table whole, every block checked; its largest sequence number.
fn verify_table(path: &Path, id: u64, cache: &Arc<BlockCache>) -> Result<u64> {
    let result = (|| {
        let table = Table::open(path, id, Arc::clone(cache))?;
        let mut it = table.iter_uncached()?;
        while it.is_valid() {
            it.next()?;
        }
        Ok(table.info().max_seq)
    })();
    cache.forget_table(id);
    result
}

/// Moves `path` into `<dir>/quarantine/` (under a fresh name if one is
/// taken), durably, and logs it.
fn quarantine(dir: &Path, path: &Path, why: &str, report: &mut SalvageReport) -> Result<()> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir).map_err(|e| Error::io(format!("creating {}", qdir.display()), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".into());
    let mut target = qdir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = qdir.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|e| {
        Error::io(
            format!("moving {} to {}", path.display(), target.display()),
            e,
        )
    })?;
    sync_dir(&qdir)?;
    sync_dir(dir)?;
    tracing::error!(file = %path.display(), to = %target.display(), reason = %why, "salvage: moved a file to quarantine");
    report.moved.push((path.to_path_buf(), target));
    Ok(())
}
