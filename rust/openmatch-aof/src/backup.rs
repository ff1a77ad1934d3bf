//! Backups of the bytes a tool removes from an AOF directory.
//!
//! Nothing is cut from a segment before its bytes are durable elsewhere: the
//! writer backs up a torn tail before cutting it, `aof repair` every byte it
//! removes. Both name and write the backup here, beside the segment, so that
//! `status` and an operator find them in one place under one naming rule:
//! `<segment>.<reason>-<UTC time>.<from-OFFSET | whole>.bak`.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::segment::parse_segment_file_name;

/// The suffix of every backup file.
pub const BACKUP_SUFFIX: &str = ".bak";

/// The time part of a backup's name: UTC to the microsecond, so two
/// backups of the same part of a segment do not collide.
pub fn backup_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%6fZ").to_string()
}

/// Where to back up the bytes of `segment` from offset `from` to its end,
/// or the whole file when `from` is `None`; `reason` says which tool cut
/// them (`repair`, `torn`).
pub fn backup_path(segment: &Path, reason: &str, stamp: &str, from: Option<u64>) -> PathBuf {
    let what = match from {
        Some(offset) => format!("from-{offset}"),
        None => "whole".to_string(),
    };
    let name = segment
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    segment.with_file_name(format!("{name}.{reason}-{stamp}.{what}{BACKUP_SUFFIX}"))
}

/// Whether `name` is a backup of a segment (see [`backup_path`]).
pub fn is_backup_name(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(BACKUP_SUFFIX) else {
        return false;
    };
    rest.split_once(".aof.")
        .is_some_and(|(seg, _)| parse_segment_file_name(&format!("{seg}.aof")).is_some())
}

/// The backup files of `dir` and their sizes, by name.
pub fn list_backups(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_file() && entry.file_name().to_str().is_some_and(is_backup_name) {
            out.push((entry.path(), meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `len` bytes of `source` from `offset` to the new file `target`
/// (owner-only) and fsyncs it. The caller fsyncs the directory, once for
/// all the backups it writes, before it cuts anything. On error nothing is
/// left at `target`; a source shorter than `offset + len` is an error
/// (it changed under the caller).
pub fn write_backup(source: &Path, offset: u64, len: u64, target: &Path) -> io::Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)?;
    let copied = (|| {
        let mut src = File::open(source)?;
        src.seek(SeekFrom::Start(offset))?;
        let n = io::copy(&mut src.take(len), &mut out)?;
        if n < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} holds only {n} of the {len} bytes to back up from offset {offset}: it changed",
                    source.display()
                ),
            ));
        }
        out.sync_all()
    })();
    if copied.is_err() {
        drop(out);
        let _ = std::fs::remove_file(target);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_named_beside_their_segment_and_recognised() {
        let seg = Path::new("/d/00000000000000000042.aof");
        let stamp = "20260101T000000000000Z";
        let tail = backup_path(seg, "torn", stamp, Some(7));
        let whole = backup_path(seg, "repair", stamp, None);
        assert_eq!(
            tail,
            Path::new("/d/00000000000000000042.aof.torn-20260101T000000000000Z.from-7.bak")
        );
        assert!(whole
            .to_str()
            .unwrap()
            .ends_with(".repair-20260101T000000000000Z.whole.bak"));
        for p in [&tail, &whole] {
            assert!(is_backup_name(p.file_name().unwrap().to_str().unwrap()));
        }
        for name in [
            "00000000000000000042.aof",
            "writer.lock",
            "x.aof.repair-1.whole.bak",
        ] {
            assert!(!is_backup_name(name), "{name}");
        }
        assert_eq!(backup_stamp().len(), stamp.len());
    }
}
