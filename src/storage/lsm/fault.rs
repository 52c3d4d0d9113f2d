//! Injected disk faults, for tests: makes the LSM's file writes in one
//! directory fail as a full disk does, without filling a disk.
//!
//! A test calls [`set_disk_full`] with the engine's directory; from then on
//! every new WAL segment, table and manifest created there fails with
//! `ENOSPC` ([`std::io::ErrorKind::StorageFull`]), and every WAL append
//! writes half of its bytes and then fails the same way, the worst case a
//! real full disk produces (a record partly written). Clearing it makes the
//! disk "have space" again. Directories are compared as given (the path
//! the engine was opened with).
//!
//! The check costs one relaxed atomic load when nothing is armed, which is
//! always the case outside tests; the module is compiled in every build so
//! that integration tests (which see only the public API) can reach it.
//! It is hidden from the documentation: not an operator's tool.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many directories are armed: the fast path's check.
static ARMED: AtomicUsize = AtomicUsize::new(0);
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Makes writes in `dir` fail as on a full disk (`full`), or work again.
#[doc(hidden)]
pub fn set_disk_full(dir: &Path, full: bool) {
    let mut dirs = DIRS.lock().unwrap_or_else(|p| p.into_inner());
    dirs.retain(|d| d != dir);
    if full {
        dirs.push(dir.to_path_buf());
    }
    ARMED.store(dirs.len(), Ordering::Release);
}

fn armed(path: &Path) -> bool {
    if ARMED.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Some(parent) = path.parent() else {
        return false;
    };
    DIRS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|d| d == parent)
}

fn disk_full() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "No space left on device (injected)",
    )
}

/// Fails when `path`'s directory is armed: called before creating a file.
pub(crate) fn check_create(path: &Path) -> io::Result<()> {
    if armed(path) {
        return Err(disk_full());
    }
    Ok(())
}

/// `file.write_all(buf)`, except that when `path`'s directory is armed it
/// writes the first half of `buf` and then fails.
pub(crate) fn write_all(mut file: &std::fs::File, path: &Path, buf: &[u8]) -> io::Result<()> {
    if armed(path) {
        file.write_all(&buf[..buf.len() / 2])?;
        return Err(disk_full());
    }
    file.write_all(buf)
}

/// Whether `e` is a write refused for lack of space (`ENOSPC`, or a disk
/// quota, `EDQUOT`): an error that may go away without a restart, once
/// space is freed.
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
