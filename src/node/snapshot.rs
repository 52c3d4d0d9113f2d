//! Snapshots of a node's store, and restoring a data directory from one.
//!
//! A snapshot directory holds `SNAPSHOT.json` (a [`SnapshotView`]: whose
//! store, which engine, how many entries) and the engine's directory,
//! `data/`, as a node's data directory does. It is written by a new engine
//! of the node's kind from one scan of the live engine, so it is
//! consistent as of one moment (the scan's snapshot) and in that engine's
//! own format, compacted; writes made while it is taken are not in it.
//!
//! [`restore`] makes a node's data directory of a snapshot, for a node
//! that is stopped: it copies the engine's files, writes the directory's
//! `NODE` file for the snapshot's node and cluster, and opens the copy to
//! check that it holds every entry the snapshot counted.

use std::fs;
use std::path::{Path, PathBuf};

use super::cli::{claim_data_dir, DirOwner, ENGINE_DIR};
use crate::config::StorageConfig;
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::protocol::SnapshotView;
use crate::storage::{BTreeEngine, Engine, KeyRange, LsmEngine};

/// The file that describes a snapshot.
pub const SNAPSHOT_FILE: &str = "SNAPSHOT.json";

/// How many bytes of entries each write batch of a snapshot holds.
const BATCH_BYTES: usize = 1 << 20;

/// Checks that `dir` does not exist or is an empty directory.
fn check_fresh(dir: &Path, what: &str) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::InvalidInput(format!(
                    "{what} {} exists and is not empty",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::InvalidInput(
            format!("{what} {} is a file", dir.display()),
        )),
        Err(e) => Err(Error::io(format!("reading {what} {}", dir.display()), e)),
    }
}

/// Opens an engine of `storage`'s kind, with its settings, in `dir`. The
/// memory engine keeps nothing on disk: `InvalidInput`.
fn open_like(storage: &StorageConfig, dir: &Path) -> Result<Box<dyn Engine>> {
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    match storage {
        StorageConfig::Memory => Err(Error::InvalidInput(
            "this node keeps its data in memory only: there is nothing to snapshot or restore"
                .into(),
        )),
        StorageConfig::Lsm { config, .. } => Ok(Box::new(LsmEngine::open(
            dir,
            crate::config::LsmConfig {
                // A copy is never salvaged, and compacts on its own.
                salvage: false,
                external_compaction: false,
                ..config.clone()
            },
        )?)),
        StorageConfig::BTree { config, .. } => {
            Ok(Box::new(BTreeEngine::open(dir, config.clone())?))
        }
    }
}

/// Writes a snapshot of `from` (the live engine of `node`, of kind
/// `storage`) into `dir`, which must not exist or be empty.
pub fn write(
    dir: &Path,
    storage: &StorageConfig,
    from: &dyn Engine,
    node: NodeId,
    cluster: &str,
) -> Result<SnapshotView> {
    if matches!(storage, StorageConfig::Memory) {
        return Err(Error::InvalidInput(format!(
            "{node} keeps its data in memory only: there is nothing to snapshot"
        )));
    }
    check_fresh(dir, "snapshot directory")?;
    let (entries, bytes) = {
        let to = open_like(storage, &dir.join(ENGINE_DIR))?;
        crate::storage::copy_all(from, &*to, BATCH_BYTES)?
    };
    let view = SnapshotView {
        dir: dir.display().to_string(),
        node,
        cluster: cluster.to_string(),
        engine: storage.engine_name().to_string(),
        entries,
        bytes,
        taken_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let text = serde_json::to_string_pretty(&view)
        .map_err(|e| Error::InvalidInput(format!("encoding {SNAPSHOT_FILE}: {e}")))?;
    let path = dir.join(SNAPSHOT_FILE);
    // Written last, and synced: a directory without it is not a snapshot.
    let written = fs::File::create(&path).and_then(|mut f| {
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()
    });
    written.map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    tracing::info!(
        %node,
        dir = %dir.display(),
        entries,
        bytes,
        "snapshot written"
    );
    Ok(view)
}

/// Reads a snapshot's description.
pub fn read(dir: &Path) -> Result<SnapshotView> {
    let path = dir.join(SNAPSHOT_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        Error::io(
            format!(
                "reading {} (is {} a snapshot?)",
                path.display(),
                dir.display()
            ),
            e,
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("{} does not decode: {e}", path.display())))
}

/// What [`restore`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot's description.
    pub snapshot: SnapshotView,
    /// The data directory made.
    pub data_dir: PathBuf,
    /// Files copied.
    pub files: u64,
}

/// Makes `data_dir` (absent or empty) a data directory of the snapshot in
/// `from`, for its node and cluster, with `storage`'s engine kind (which
/// must be the snapshot's). The node must not run meanwhile.
pub fn restore(from: &Path, data_dir: &Path, storage: &StorageConfig) -> Result<Restored> {
    let snapshot = read(from)?;
    if snapshot.engine != storage.engine_name() {
        return Err(Error::InvalidInput(format!(
            "the snapshot in {} was written by the {} engine, not {}: start the node with \
             --engine {}",
            from.display(),
            snapshot.engine,
            storage.engine_name(),
            snapshot.engine
        )));
    }
    check_fresh(data_dir, "data directory")?;
    let source = from.join(ENGINE_DIR);
    if !source.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} has no {ENGINE_DIR}/ directory: not a whole snapshot",
            from.display()
        )));
    }
    let owner = DirOwner {
        cluster: snapshot.cluster.clone(),
        node: snapshot.node,
    };
    let claim = claim_data_dir(data_dir, &owner)?;
    let target = data_dir.join(ENGINE_DIR);
    let files = copy_tree(&source, &target)?;
    // Open the copy and count what it holds, as a node would read it.
    let engine = open_like(storage, &target)?;
    let mut entries = 0u64;
    for item in engine.scan(KeyRange::all())? {
        item?;
        entries += 1;
    }
    drop(engine);
    drop(claim);
    if entries != snapshot.entries {
        return Err(Error::InvalidInput(format!(
            "the restored copy in {} holds {entries} entries, but the snapshot counted {}",
            data_dir.display(),
            snapshot.entries
        )));
    }
    Ok(Restored {
        snapshot,
        data_dir: data_dir.to_path_buf(),
        files,
    })
}

/// Copies the files under `from` into `to` (created), syncing each;
/// returns how many it copied.
fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    fs::create_dir_all(to).map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
    let mut files = 0;
    let entries =
        fs::read_dir(from).map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
        if kind.is_dir() {
            files += copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)
                .and_then(|_| fs::File::open(&dst)?.sync_all())
                .map_err(|e| Error::io(format!("copying {}", src.display()), e))?;
            files += 1;
        }
    }
    fs::File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", to.display()), e))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BTreeConfig, LsmConfig};
    use crate::storage::MemoryEngine;

    fn lsm(dir: &Path) -> StorageConfig {
        StorageConfig::Lsm {
            dir: dir.join(ENGINE_DIR),
            config: LsmConfig::default(),
        }
    }

    #[test]
    fn a_snapshot_restores_to_a_data_directory_that_holds_every_entry() {
        let root = tempfile::tempdir().unwrap();
        let live_dir = root.path().join("live");
        let storage = lsm(&live_dir);
        let live = LsmEngine::open(&live_dir.join(ENGINE_DIR), LsmConfig::default()).unwrap();
        for i in 0..2000u32 {
            live.put(format!("k{i:05}").as_bytes(), &i.to_le_bytes())
                .unwrap();
        }
        live.delete(b"k00007").unwrap();
        let snap = root.path().join("snap");
        let view = write(&snap, &storage, &live, NodeId(3), "c").unwrap();
        assert_eq!(view.entries, 1999);
        assert_eq!((view.node, view.engine.as_str()), (NodeId(3), "lsm"));
        assert_eq!(read(&snap).unwrap(), view);
        // Writes after the snapshot are not in it.
        live.put(b"later", b"x").unwrap();

        // Never over another snapshot or data.
        let again = write(&snap, &storage, &live, NodeId(3), "c").unwrap_err();
        assert!(again.to_string().contains("not empty"), "{again}");
        let memory = write(
            &root.path().join("m"),
            &StorageConfig::Memory,
            &MemoryEngine::new(),
            NodeId(3),
            "c",
        )
        .unwrap_err();
        assert!(memory.to_string().contains("memory"), "{memory}");

        let restored_dir = root.path().join("restored");
        let done = restore(&snap, &restored_dir, &lsm(&restored_dir)).unwrap();
        assert_eq!(done.snapshot, view);
        assert!(done.files > 0);
        let node_file =
            fs::read_to_string(restored_dir.join(super::super::cli::NODE_FILE)).unwrap();
        assert!(node_file.contains("node=3"), "{node_file}");
        let copy = LsmEngine::open(&restored_dir.join(ENGINE_DIR), LsmConfig::default()).unwrap();
        assert_eq!(
            copy.get(b"k01999").unwrap(),
            Some(1999u32.to_le_bytes().to_vec())
        );
        assert_eq!(copy.get(b"k00007").unwrap(), None);
        assert_eq!(copy.get(b"later").unwrap(), None);
        drop(copy);

        // Into a directory with something in it, or with another engine.
        let taken = restore(&snap, &restored_dir, &lsm(&restored_dir)).unwrap_err();
        assert!(taken.to_string().contains("not empty"), "{taken}");
        let other = root.path().join("other");
        let btree = StorageConfig::BTree {
            dir: other.join(ENGINE_DIR),
            config: BTreeConfig::default(),
        };
        let wrong = restore(&snap, &other, &btree).unwrap_err();
        assert!(wrong.to_string().contains("lsm engine"), "{wrong}");
        // Not a snapshot at all.
        let none = restore(&live_dir, &other, &lsm(&other)).unwrap_err();
        assert!(none.to_string().contains(SNAPSHOT_FILE), "{none}");
    }

    #[test]
    fn a_snapshot_missing_its_tables_is_not_restored() {
        let root = tempfile::tempdir().unwrap();
        let live = MemoryEngine::new();
        for i in 0..500u32 {
            live.put(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        let snap = root.path().join("snap");
        write(&snap, &lsm(&snap), &live, NodeId(1), "c").unwrap();
        // Lose the snapshot's tables (what a half-copied backup looks like).
        let mut removed = 0;
        for entry in fs::read_dir(snap.join(ENGINE_DIR)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sst") {
                fs::remove_file(&path).unwrap();
                removed += 1;
            }
        }
        assert!(removed > 0, "the snapshot wrote no table");
        let target = root.path().join("restored");
        assert!(restore(&snap, &target, &lsm(&target)).is_err());
    }
}
