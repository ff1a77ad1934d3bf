//! An AOF directory: segment files named by the position they start at.
//!
//! A *position* is a byte offset in the logical AOF, the concatenation of all
//! segments in order; it grows monotonically across segments and never
//! repeats. A segment file is named by the position of its first byte,
//! `{start:020}.aof`, so position P lives in the segment with the greatest
//! start <= P, at offset P - start. Each segment is a plain concatenation of
//! frames that the engine can read on its own. Other names in the directory
//! (temporary files, the lock file, backups) are not segments and are ignored.

use std::io;
use std::path::{Path, PathBuf};

use crate::dir_fsync::fsync_directory;

/// The suffix of a segment file.
pub const SEGMENT_SUFFIX: &str = ".aof";

/// Digits of the zero-padded start position in a segment's name.
const START_DIGITS: usize = 20;

/// The file name of the segment starting at `start`.
pub fn segment_file_name(start: u64) -> String {
    format!("{start:0width$}{SEGMENT_SUFFIX}", width = START_DIGITS)
}

/// The start position encoded in a segment's file name, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != START_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment file of an AOF directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The position of its first byte (its file name).
    pub start: u64,
    /// The file.
    pub path: PathBuf,
    /// The file's length when listed.
    pub len: u64,
}

impl Segment {
    /// The position just past the segment's last byte when listed.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// The segments of `dir`, ordered by start position.
pub fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !meta.is_file() {
            continue;
        }
        segments.push(Segment {
            start,
            path: entry.path(),
            len: meta.len(),
        });
    }
    segments.sort_by_key(|s| s.start);
    Ok(segments)
}

/// Creates `dir` and any missing ancestors (mode 0700), and makes each new
/// entry durable: the directory holding it is fsynced, from the outermost
/// new one inward, so that a crash cannot leave a later entry that an
/// earlier, lost one should contain (POSIX promises a new directory entry
/// only once its directory is fsynced). Returns whether anything was
/// created; an existing directory is left as it is.
pub fn create_dir_durably(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(false);
    }
    // The ancestors that do not exist yet, outermost last.
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.is_dir())
        .collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for created in missing.iter().rev() {
        // Never the root: it exists.
        fsync_directory(created.parent().unwrap_or(Path::new("")))?;
    }
    Ok(true)
}

/// Starts the log of `dir` again at `at`, inside (or at the end of) the
/// segment starting at `start`: a new segment named `at` gets that
/// segment's bytes from `at` to its end, durably (written beside, fsynced,
/// renamed into place, the directory fsynced). The old segment stays; the
/// caller backs it up and deletes it. Until then the two overlap, which a
/// scan reports, and which a repair with the database's checkpoint ends by
/// deleting the older one.
///
/// For a repair whose damage lies below the database's checkpoint `at`:
/// the bytes before `at` are covered by the snapshot, the frames from `at`
/// on are not, and no frame boundary need be found by scanning through the
/// damage, since `at` is one.
pub fn restart_segment_at(dir: &Path, start: u64, at: u64) -> io::Result<PathBuf> {
    let source = dir.join(segment_file_name(start));
    let len = std::fs::metadata(&source)?.len();
    if at <= start || at > start + len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: cannot start a segment at {at}, outside ({start}, {}]",
                source.display(),
                start + len
            ),
        ));
    }
    let target = dir.join(segment_file_name(at));
    if target.exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: a segment already starts there", target.display()),
        ));
    }
    // Not a segment name, so a crash before the rename leaves no segment.
    let tmp = dir.join(format!(".{}.new", segment_file_name(at)));
    let _ = std::fs::remove_file(&tmp);
    crate::backup::write_backup(&source, at - start, start + len - at, &tmp)?;
    std::fs::rename(&tmp, &target)?;
    fsync_directory(dir)?;
    Ok(target)
}

/// How many of the segments starting at `starts` (ascending) a snapshot
/// at `covered` covers: each one whose successor starts at or before
/// `covered`, from the oldest. The last segment (the one appended to) is
/// never counted, since it has no successor.
pub fn covered_count(starts: &[u64], covered: u64) -> usize {
    starts
        .windows(2)
        .take_while(|pair| pair[1] <= covered)
        .count()
}

/// Deletes the segment of `dir` starting at `start` and makes the deletion
/// durable (a directory fsync) before returning its length: deleted one at
/// a time, oldest first, the segments a crash leaves are a contiguous
/// suffix of the log, never a hole.
pub fn delete_segment_durably(dir: &Path, start: u64) -> io::Result<u64> {
    let path = dir.join(segment_file_name(start));
    let len = std::fs::metadata(&path)?.len();
    std::fs::remove_file(&path)?;
    fsync_directory(dir)?;
    Ok(len)
}

/// Deletes the segments of `dir` that a snapshot at `covered` covers
/// ([`covered_count`]), oldest first, each durably
/// ([`delete_segment_durably`]); returns (segments, bytes) deleted. For a
/// directory whose writer is another process (follow mode): never the last
/// segment, and never one the writer could still append to, since only a
/// segment with a successor is closed. An in-process writer deletes through
/// [`crate::writer::AofWriter::delete_covered`], which applies the same two
/// functions under its own lock.
pub fn delete_covered(dir: &Path, covered: u64) -> io::Result<(usize, u64)> {
    let starts: Vec<u64> = list_segments(dir)?.iter().map(|s| s.start).collect();
    let count = covered_count(&starts, covered);
    let mut bytes = 0;
    for &start in &starts[..count] {
        bytes += delete_segment_durably(dir, start)?;
    }
    Ok((count, bytes))
}

/// Makes durable the bytes `[from, to)` of the log in `dir`, which another
/// process wrote (follow mode: the database may cover them only once they
/// are durable): fdatasyncs, oldest first, each segment that holds some of
/// them, and returns the starts of the segments synced. A closed segment
/// ends where its successor starts; the last one may still grow, and is
/// synced whenever the range reaches it. The writer made each segment's
/// directory entry durable when it created it.
pub fn sync_range(dir: &Path, from: u64, to: u64) -> io::Result<Vec<u64>> {
    let segments = list_segments(dir)?;
    let mut synced = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map(|next| next.start);
        if segment.start >= to || end.is_some_and(|end| end <= from) {
            continue;
        }
        std::fs::File::open(&segment.path)?.sync_data()?;
        synced.push(segment.start);
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_syncs_exactly_the_segments_holding_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for (start, len) in [(0u64, 100usize), (100, 150), (250, 10)] {
            std::fs::write(dir.path().join(segment_file_name(start)), vec![1u8; len]).unwrap();
        }
        let sync = |from, to| sync_range(dir.path(), from, to).unwrap();
        assert_eq!(sync(0, 0), Vec::<u64>::new());
        assert_eq!(sync(0, 1), vec![0]);
        assert_eq!(sync(0, 100), vec![0]);
        assert_eq!(sync(99, 101), vec![0, 100]);
        assert_eq!(sync(100, 250), vec![100]);
        assert_eq!(sync(100, 251), vec![100, 250]);
        // The last segment may have grown past what was listed.
        assert_eq!(sync(300, 400), vec![250]);
        assert_eq!(sync(0, u64::MAX), vec![0, 100, 250]);
    }

    #[test]
    fn a_segment_is_covered_once_its_successor_starts_by_the_snapshot() {
        assert_eq!(covered_count(&[], 100), 0);
        assert_eq!(covered_count(&[0], u64::MAX), 0); // the last one: never
        assert_eq!(covered_count(&[0, 100, 250], 99), 0);
        assert_eq!(covered_count(&[0, 100, 250], 100), 1);
        assert_eq!(covered_count(&[0, 100, 250], 249), 1);
        assert_eq!(covered_count(&[0, 100, 250], 250), 2);
        assert_eq!(covered_count(&[0, 100, 250], u64::MAX), 2);
    }

    #[test]
    fn names_round_trip_and_sort_as_positions() {
        assert_eq!(segment_file_name(0), "00000000000000000000.aof");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("0000.aof"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000000.aof.tmp"),
            None
        );
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn directories_are_created_owner_only_and_once() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("om-create-{}", std::process::id()));
        let deep = root.join("a").join("b");
        assert!(create_dir_durably(&deep).unwrap());
        assert!(!create_dir_durably(&deep).unwrap());
        for d in [&root, &root.join("a"), &deep] {
            let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_restarted_segment_holds_the_bytes_from_its_start_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment_file_name(100)), b"0123456789").unwrap();
        let made = restart_segment_at(dir.path(), 100, 104).unwrap();
        assert_eq!(made, dir.path().join(segment_file_name(104)));
        assert_eq!(std::fs::read(&made).unwrap(), b"456789");
        // At the end: an empty segment where the log goes on.
        let end = restart_segment_at(dir.path(), 100, 110).unwrap();
        assert_eq!(std::fs::read(end).unwrap(), b"");
        let starts: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.start)
            .collect();
        assert_eq!(starts, [100, 104, 110]);
        // Never at or before the segment's start, past its end, or over a segment.
        for at in [100, 99, 111, 104] {
            assert!(restart_segment_at(dir.path(), 100, at).is_err(), "{at}");
        }
        assert_eq!(
            std::fs::read(dir.path().join(segment_file_name(104))).unwrap(),
            b"456789"
        );
    }
}
