//! The segments of an AOF directory, for compaction and status.

use std::path::{Path, PathBuf};

use openmatch_aof::segment;
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(list_segments, m)?)?;
    m.add_function(wrap_pyfunction!(aof_start, m)?)?;
    m.add_function(wrap_pyfunction!(segment_file_name, m)?)?;
    Ok(())
}
