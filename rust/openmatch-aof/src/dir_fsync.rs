//! Making a directory's entries durable: the one directory fsync.
//!
//! POSIX promises a new, renamed or removed name only once the directory
//! holding it is fsynced; an fsync of the file itself does not cover its
//! name. Every file action of the crate that changes a name (segment
//! creation and deletion, backups, restarts, new directories), and the
//! Python package's own file writes through the binding, end with
//! [`fsync_directory`].

use std::fs::File;
use std::io;
use std::path::Path;

/// Fsyncs the directory `dir`, making its entries (new, renamed and
/// removed names) durable. An empty path is the current directory: it is
/// what [`Path::parent`] returns for a bare file name.
pub fn fsync_directory(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// The directory fsyncs a sequence of file actions made, each counted once
/// it succeeded. In-process tests cannot see a lost directory fsync (it
/// matters to a power loss, not to the process), so the callers that
/// promise one report this count ([`crate::cut::CutDone::directory_fsyncs`],
/// [`crate::writer::WriterStats::dir_fsyncs`]).
#[derive(Debug, Default)]
pub struct DirFsyncs {
    done: usize,
}

impl DirFsyncs {
    /// [`fsync_directory`], counted when it succeeds.
    pub fn fsync(&mut self, dir: &Path) -> io::Result<()> {
        fsync_directory(dir)?;
        self.done += 1;
        Ok(())
    }

    /// How many fsyncs succeeded.
    pub fn done(&self) -> usize {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_the_open_error_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let mut fsyncs = DirFsyncs::default();
        let err = fsyncs.fsync(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fsyncs.done(), 0);
        fsyncs.fsync(dir.path()).unwrap();
        fsyncs.fsync(dir.path()).unwrap();
        assert_eq!(fsyncs.done(), 2);
    }

    #[test]
    fn an_empty_path_is_the_current_directory() {
        fsync_directory(Path::new("")).unwrap();
    }
}
