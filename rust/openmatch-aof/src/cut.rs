//! Cutting the log outside compaction (`aof repair`, `recover --until`):
//! the one implementation of the order of a cut's file actions.
//!
//! Every byte a cut removes is first copied to a backup beside its segment
//! ([`crate::backup`]), and the backups' directory fsynced; only then is
//! anything removed, the last part first, each removal durable before the
//! next. A crash midway therefore leaves a prefix of the log followed by
//! parts that are already backed up, never a gap in the log and never a
//! removed byte that is nowhere else. (The writer's own cut of a torn tail
//! at open is this sequence for one part, on the file it holds open:
//! `writer/recover.rs`.)

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use crate::backup::{backup_path, backup_stamp, write_backup};
use crate::dir_fsync::DirFsyncs;
use crate::segment::{parse_segment_file_name, restart_segment_at};

/// One part of the log that a cut removes: the bytes of `segment` from
/// `offset` to its end, `bytes` long; the whole file when `removes_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutPart {
    /// The segment file.
    pub segment: PathBuf,
    /// Where the removed bytes start in it (0 for a whole file).
    pub offset: u64,
    /// How many bytes go: the segment's length less `offset`.
    pub bytes: u64,
    /// The file is deleted rather than truncated.
    pub removes_file: bool,
}

/// What a cut did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutDone {
    /// Each part's backup file, in the order of the parts.
    pub backups: Vec<PathBuf>,
    /// The directory fsyncs the cut made itself: one per directory of
    /// backups, one after each file deleted (a restart's own is not
    /// counted). Tests read it: no in-process test can see a lost one.
    pub directory_fsyncs: usize,
}

/// Removes `parts` (in log order) after backing each up. `reason` names
/// the tool in the backups' names (`repair`, `cut`).
///
/// With `restart_at`, the log starts again at that position inside the
/// last part's segment ([`restart_segment_at`]) before anything is
/// removed: for a repair whose damage lies below the database's
/// checkpoint, the new segment gets the bytes from the checkpoint on, and
/// the parts (the damaged segment and the ones before it) go.
///
/// A part whose bytes no longer match (the segment shrank under the
/// caller) fails the call before anything is removed.
pub fn cut_with_backups(
    parts: &[CutPart],
    reason: &str,
    restart_at: Option<u64>,
) -> io::Result<CutDone> {
    let stamp = backup_stamp();
    let mut directory_fsyncs = DirFsyncs::default();
    let mut backups = Vec::with_capacity(parts.len());
    let mut dirs = BTreeSet::new();
    for part in parts {
        let from = (!part.removes_file).then_some(part.offset);
        let target = backup_path(&part.segment, reason, &stamp, from);
        write_backup(&part.segment, part.offset, part.bytes, &target)?;
        dirs.insert(directory_of(&target));
        backups.push(target);
    }
    for dir in &dirs {
        directory_fsyncs.fsync(dir)?;
    }
    if let Some(at) = restart_at {
        let last = parts
            .last()
            .ok_or_else(|| invalid("a restart needs a part to restart in"))?;
        let start = last
            .segment
            .file_name()
            .and_then(|n| parse_segment_file_name(&n.to_string_lossy()))
            .ok_or_else(|| invalid(format!("{} is not a segment", last.segment.display())))?;
        restart_segment_at(&directory_of(&last.segment), start, at)?;
    }
    // Only now, with every removed byte durable elsewhere: the last part
    // first, each removal durable before the next, so that a crash cannot
    // keep a later removal and lose an earlier one (a gap).
    for part in parts.iter().rev() {
        if part.removes_file {
            std::fs::remove_file(&part.segment)?;
            directory_fsyncs.fsync(&directory_of(&part.segment))?;
        } else {
            let file = OpenOptions::new().write(true).open(&part.segment)?;
            file.set_len(part.offset)?;
            file.sync_all()?;
        }
    }
    Ok(CutDone {
        backups,
        directory_fsyncs: directory_fsyncs.done(),
    })
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::segment_file_name;

    fn segment(dir: &Path, start: u64, bytes: &[u8]) -> PathBuf {
        let path = dir.join(segment_file_name(start));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn part(segment: &Path, offset: u64, removes_file: bool) -> CutPart {
        let len = std::fs::metadata(segment).unwrap().len();
        CutPart {
            segment: segment.to_owned(),
            offset,
            bytes: len - offset,
            removes_file,
        }
    }

    #[test]
    fn a_cut_truncates_deletes_and_keeps_every_removed_byte_in_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let first = segment(dir.path(), 0, b"0123456789");
        let second = segment(dir.path(), 10, b"abcdef");
        let parts = [part(&first, 4, false), part(&second, 0, true)];
        let done = cut_with_backups(&parts, "repair", None).unwrap();
        // The backups' directory once, then once after the one deletion.
        assert_eq!(done.directory_fsyncs, 2);
        let backups = done.backups;
        assert_eq!(std::fs::read(&first).unwrap(), b"0123");
        assert!(!second.exists());
        assert_eq!(backups.len(), 2);
        assert_eq!(std::fs::read(&backups[0]).unwrap(), b"456789");
        assert_eq!(std::fs::read(&backups[1]).unwrap(), b"abcdef");
        let names: Vec<String> = backups
            .iter()
            .map(|b| b.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names[0].starts_with(&format!("{}.repair-", segment_file_name(0))));
        assert!(names[0].ends_with(".from-4.bak"), "{}", names[0]);
        assert!(names[1].ends_with(".whole.bak"), "{}", names[1]);
        use std::os::unix::fs::PermissionsExt;
        for b in &backups {
            let mode = std::fs::metadata(b).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", b.display());
        }
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(directory_of(Path::new("x.aof")), PathBuf::from("."));
        assert_eq!(directory_of(Path::new("d/x.aof")), PathBuf::from("d"));
        assert_eq!(directory_of(Path::new("/x.aof")), PathBuf::from("/"));
    }

    #[test]
    fn a_part_that_no_longer_holds_its_bytes_fails_before_anything_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let first = segment(dir.path(), 0, b"0123456789");
        let second = segment(dir.path(), 10, b"abcdef");
        let mut shrunk = part(&second, 0, true);
        shrunk.bytes += 1; // the segment is shorter than planned
        let err = cut_with_backups(&[part(&first, 4, false), shrunk], "repair", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(std::fs::read(&first).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(&second).unwrap(), b"abcdef");
    }

    #[test]
    fn a_restart_starts_the_log_again_in_the_last_part_before_removing_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = segment(dir.path(), 0, b"0123456789");
        let second = segment(dir.path(), 10, b"abcdef");
        let parts = [part(&first, 0, true), part(&second, 0, true)];
        let done = cut_with_backups(&parts, "repair", Some(13)).unwrap();
        assert_eq!(done.directory_fsyncs, 3);
        assert!(!first.exists() && !second.exists());
        let restarted = dir.path().join(segment_file_name(13));
        assert_eq!(std::fs::read(restarted).unwrap(), b"def");
    }

    #[test]
    fn a_restart_in_a_file_that_is_no_segment_is_refused_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"hello").unwrap();
        let err = cut_with_backups(&[part(&other, 0, true)], "repair", Some(2)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(other.exists());
        assert!(cut_with_backups(&[], "repair", Some(2)).is_err());
    }
}
