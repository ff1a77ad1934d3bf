//! One writer per directory: an exclusive `flock` on a lock file inside it.
//!
//! `flock` belongs to the open file description, so a second writer fails
//! whether it is in another process or in this one (it opens the file
//! again), and the kernel drops the lock when the descriptor is closed,
//! including when the process dies — no stale lock files to clean up.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::WriterError;

/// The lock file's name; not a segment name, so readers ignore it.
pub const LOCK_FILE_NAME: &str = "writer.lock";

/// The directory's lock, held while a writer is open, or while a tool that
/// changes segments behind a writer's back (`aof repair`) works; dropping
/// it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of AOF directory `dir` without waiting; fails with
    /// [`WriterError::Locked`] while a writer (or another holder) has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, WriterError> {
        let path: PathBuf = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| WriterError::io("open lock file", &path, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(WriterError::Locked { path }),
            Err(e) => Err(WriterError::io("flock", &path, io::Error::from(e))),
        }
    }
}
