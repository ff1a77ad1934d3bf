//! Opening a directory: find where the log ends, cut a torn tail, refuse
//! corruption and frames longer than the writer's limit.
//!
//! Whether the bytes after the last good frame are a torn tail, an
//! oversized frame or corruption is the recovery rule ([`crate::tail::classify_stop`]); the
//! writer gets it from a scan of the last segment, so it cuts exactly what
//! `aof verify` calls a torn tail and refuses what replay would refuse,
//! including a checksummed payload that does not decode. A torn tail was
//! never acknowledged under any policy, but it is backed up before it is
//! cut ([`crate::backup`]): the rule could be wrong about it, and the bytes
//! cost nothing to keep.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::backup::{backup_path, backup_stamp, write_backup};
use crate::dir_fsync::DirFsyncs;
use crate::scanner::{OutcomeKind, ScanError, ScanOptions, Scanner};

use super::WriterError;

/// Where the last segment's frames end.
#[derive(Debug)]
pub(crate) struct Tail {
    /// Length of the complete frames at the start of the file.
    pub valid_len: u64,
    /// Bytes after them, cut.
    pub torn_bytes: u64,
    /// Where those bytes were saved first.
    pub backup: Option<PathBuf>,
}

/// Where the good frames of the segment at `path` end, and whether what
/// follows them may be cut (`Ok`) or must not be (`Err(Corrupt)`,
/// `Err(Oversized)`).
pub(crate) fn scan_tail(path: &Path, max_payload: u32) -> Result<u64, WriterError> {
    let opts = ScanOptions {
        max_payload,
        ..ScanOptions::default()
    };
    // Frames only (lengths and checksums, ~10 GB/s): where the frames end
    // and whether the end is torn is a question about frames. Decoding
    // payloads is the replay's job, and the journal replays right after
    // opening; decoding here too doubled the cost of opening a large
    // segment.
    let report = Scanner::open(path, None, opts)?.verify_frames()?;
    let o = report.outcome;
    if let Some((length, limit)) = o.oversized() {
        return Err(WriterError::Oversized {
            path: path.to_owned(),
            offset: o.offset,
            length,
            limit,
        });
    }
    match (o.kind, o.cause) {
        (OutcomeKind::Corrupt, Some(cause)) => Err(WriterError::Corrupt {
            path: path.to_owned(),
            offset: o.offset,
            cause,
        }),
        (OutcomeKind::Corrupt, None) => Err(WriterError::Scan(ScanError::Broken {
            path: path.display().to_string(),
            what: "a corrupt outcome without a cause",
        })),
        (OutcomeKind::Oversized, _) => Err(WriterError::Scan(ScanError::Broken {
            path: path.display().to_string(),
            what: "an oversized outcome without an oversized length",
        })),
        (OutcomeKind::Clean | OutcomeKind::TornTail, _) => Ok(o.offset),
    }
}

/// Opens the last segment of `dir` for writing; backs up and cuts its torn
/// tail (durably). Counts its directory fsyncs in `dir_fsyncs`.
pub(crate) fn open_last_segment(
    dir: &Path,
    path: &Path,
    max_payload: u32,
    dir_fsyncs: &mut DirFsyncs,
) -> Result<(File, Tail), WriterError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WriterError::io("open segment", path, e))?;
    let valid_len = scan_tail(path, max_payload)?;
    let file_len = file
        .metadata()
        .map_err(|e| WriterError::io("read segment", path, e))?
        .len();
    let mut tail = Tail {
        valid_len,
        torn_bytes: file_len.saturating_sub(valid_len),
        backup: None,
    };
    if tail.torn_bytes > 0 {
        let backup = backup_path(path, "torn", &backup_stamp(), Some(valid_len));
        write_backup(path, valid_len, tail.torn_bytes, &backup)
            .map_err(|e| WriterError::io("back up torn tail to", &backup, e))?;
        fsync_dir(dir, dir_fsyncs)?;
        file.set_len(tail.valid_len)
            .map_err(|e| WriterError::io("truncate torn tail of", path, e))?;
        file.sync_all()
            .map_err(|e| WriterError::io("fsync truncated", path, e))?;
        tail.backup = Some(backup);
    }
    Ok((file, tail))
}

/// Creates an empty segment file (0600) and makes its name durable. Counts
/// its directory fsync in `dir_fsyncs`.
pub(crate) fn create_segment(
    dir: &Path,
    path: &Path,
    dir_fsyncs: &mut DirFsyncs,
) -> Result<File, WriterError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| WriterError::io("create segment", path, e))?;
    file.sync_all()
        .map_err(|e| WriterError::io("fsync new segment", path, e))?;
    fsync_dir(dir, dir_fsyncs)?;
    Ok(file)
}

/// Makes the directory's new entries durable, counted in `done` (the
/// writer's [`super::WriterStats::dir_fsyncs`]).
fn fsync_dir(dir: &Path, done: &mut DirFsyncs) -> Result<(), WriterError> {
    done.fsync(dir)
        .map_err(|e| WriterError::io("fsync directory", dir, e))
}
