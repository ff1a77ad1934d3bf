//! The segments of an AOF directory and their backups, for compaction,
//! repair and status.

use std::path::{Path, PathBuf};

use openmatch_aof::{backup, dir_fsync, segment};
use pyo3::prelude::*;

use crate::errors::AofError;

fn list(dir: &Path) -> PyResult<Vec<segment::Segment>> {
    segment::list_segments(dir)
        .map_err(|e| AofError::new_err(format!("{}: cannot list segments: {e}", dir.display())))
}

/// `(start, path, length)` of each segment, ordered by start position.
#[pyfunction]
fn list_segments(dir: PathBuf) -> PyResult<Vec<(u64, String, u64)>> {
    Ok(list(&dir)?
        .into_iter()
        .map(|s| (s.start, s.path.display().to_string(), s.len))
        .collect())
}

/// The position where the AOF in `dir` starts (its oldest segment), or None
/// when it has no segment.
#[pyfunction]
fn aof_start(dir: PathBuf) -> PyResult<Option<u64>> {
    Ok(list(&dir)?.first().map(|s| s.start))
}

/// The file name of the segment starting at `start`.
#[pyfunction]
fn segment_file_name(start: u64) -> String {
    segment::segment_file_name(start)
}

/// `(path, size)` of each backup file in `dir` (what a repair or a writer
/// cut, saved beside its segment), by name.
#[pyfunction]
fn list_backups(dir: PathBuf) -> PyResult<Vec<(String, u64)>> {
    let backups = backup::list_backups(&dir)
        .map_err(|e| AofError::new_err(format!("{}: cannot list backups: {e}", dir.display())))?;
    Ok(backups
        .into_iter()
        .map(|(p, len)| (p.display().to_string(), len))
        .collect())
}

/// An `AofError` carrying the OS error number, when there is one.
fn aof_io_error(e: &std::io::Error, msg: String) -> PyErr {
    match e.raw_os_error() {
        Some(errno) => AofError::new_err((errno, msg)),
        None => AofError::new_err(msg),
    }
}

/// Starts the log of `dir` again at `at` with the bytes from there of the
/// segment starting at `start` (`segment::restart_segment_at`); returns
/// the new segment's path.
#[pyfunction]
fn restart_segment_at(py: Python<'_>, dir: PathBuf, start: u64, at: u64) -> PyResult<String> {
    py.detach(|| segment::restart_segment_at(&dir, start, at))
        .map(|p| p.display().to_string())
        .map_err(|e| {
            let msg = format!("{}: cannot start the log again at {at}: {e}", dir.display());
            aof_io_error(&e, msg)
        })
}

/// Creates the directory and any missing ancestors (0700), fsyncing the
/// directory that holds each new one; returns whether it created anything.
#[pyfunction]
fn create_dir_durably(py: Python<'_>, path: PathBuf) -> PyResult<bool> {
    py.detach(|| segment::create_dir_durably(&path))
        .map_err(|e| {
            let msg = format!("create directory {}: {e}", path.display());
            match e.raw_os_error() {
                Some(errno) => AofError::new_err((errno, msg)),
                None => AofError::new_err(msg),
            }
        })
}

/// Fsyncs the directory `path`, making its new, renamed and removed names
/// durable (`dir_fsync::fsync_directory`). The GIL is released while the
/// disk works.
#[pyfunction]
fn fsync_directory(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    py.detach(|| dir_fsync::fsync_directory(&path))
        .map_err(|e| aof_io_error(&e, format!("fsync directory {}: {e}", path.display())))
}

/// Deletes the segments of `dir` that a snapshot at `covered` covers,
/// oldest first, each deletion made durable before the next; never the last
/// segment. For a directory another process writes (follow mode); a
/// writer of this process deletes through its own `delete_covered`.
/// Returns (segments, bytes) deleted.
#[pyfunction]
fn delete_covered_segments(py: Python<'_>, dir: PathBuf, covered: u64) -> PyResult<(usize, u64)> {
    py.detach(|| segment::delete_covered(&dir, covered))
        .map_err(|e| {
            let msg = format!("{}: cannot delete covered segments: {e}", dir.display());
            match e.raw_os_error() {
                Some(errno) => AofError::new_err((errno, msg)),
                None => AofError::new_err(msg),
            }
        })
}

/// fdatasyncs each segment of `dir` holding bytes of `[start, end)`
/// (another process's log: follow mode), oldest first; returns their
/// starts. The GIL is released while the disk works.
#[pyfunction]
fn sync_segments(py: Python<'_>, dir: PathBuf, start: u64, end: u64) -> PyResult<Vec<u64>> {
    py.detach(|| segment::sync_range(&dir, start, end))
        .map_err(|e| {
            let msg = format!(
                "{}: cannot make the log durable up to {end}: {e}",
                dir.display()
            );
            match e.raw_os_error() {
                Some(errno) => AofError::new_err((errno, msg)),
                None => AofError::new_err(msg),
            }
        })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(delete_covered_segments, m)?)?;
    m.add_function(wrap_pyfunction!(sync_segments, m)?)?;
    m.add_function(wrap_pyfunction!(create_dir_durably, m)?)?;
    m.add_function(wrap_pyfunction!(fsync_directory, m)?)?;
    m.add_function(wrap_pyfunction!(restart_segment_at, m)?)?;
    m.add_function(wrap_pyfunction!(list_backups, m)?)?;
    m.add_function(wrap_pyfunction!(list_segments, m)?)?;
    m.add_function(wrap_pyfunction!(aof_start, m)?)?;
    m.add_function(wrap_pyfunction!(segment_file_name, m)?)?;
    Ok(())
}
