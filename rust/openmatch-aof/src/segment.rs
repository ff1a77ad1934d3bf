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
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
