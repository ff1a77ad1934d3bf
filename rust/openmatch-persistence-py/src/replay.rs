//! Replay: the scanner feeding the state, both in Rust.
//!
//! Recovery replays up to millions of operations; going through Python
//! objects would cost a few microseconds each. Here the scanner's decoded
//! operations go straight into the state with the GIL released.

use std::path::PathBuf;

use openmatch_aof::scanner::{ScanOptions, Scanner};
use pyo3::prelude::*;

use crate::scanner::{scan_error, ScanReport};
use crate::state::State;

/// Applies the AOF at `path` (a segment or a directory) to `state`, from
/// position `start` (default: the AOF's start) to where the scan stops, and
/// returns the scan's report. Every operation before the stop is applied;
/// whether a torn tail or corruption is acceptable is the caller's call
/// (`ScanReport.check()`).
#[pyfunction]
#[pyo3(signature = (state, path, *, start = None))]
fn replay(
    py: Python<'_>,
    state: &Bound<'_, State>,
    path: PathBuf,
    start: Option<u64>,
) -> PyResult<ScanReport> {
    let origin = path.display().to_string();
    let mut scanner = Scanner::open(&path, start, ScanOptions::default()).map_err(scan_error)?;
    let mut guard = state.borrow_mut();
    let target = &mut guard.inner;
    py.detach(|| {
        while let Some((position, op)) = scanner.next_op()? {
            target.apply_owned(op, position);
        }
        Ok(())
    })
    .map_err(scan_error)?;
    let report = scanner.finished_report().map_err(scan_error)?;
    Ok(ScanReport::new(report, &origin))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    Ok(())
}
