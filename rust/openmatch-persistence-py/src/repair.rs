//! `aof repair` and `recover --until`: the core's plan and cut
//! (`openmatch_aof::repair`), as tuples the Python module shows.

use std::path::PathBuf;

use openmatch_aof::codec::DEFAULT_MAX_PAYLOAD_LEN;
use openmatch_aof::cut::CutPart;
use openmatch_aof::repair::{self as core, RepairError, RepairPlan};
use pyo3::prelude::*;

use crate::errors::{oversized_error, AofError};
use crate::scanner::{bounded, max_payload_arg, scan_error, ScanReport};
pyo3::import_exception!(openmatch_persistence.errors, WriterLockedError);

/// `(segment, offset, bytes, removes_file)`.
type Part = (String, u64, u64, bool);
/// A [`Part`] removed, with its backup file last.
type RemovedPart = (String, u64, u64, bool, String);
/// `(report, parts, damaged_frames, intact_frames, restart_at,
/// bytes_removed)`.
type Plan = (ScanReport, Vec<Part>, u64, u64, Option<u64>, u64);

fn part(p: &CutPart) -> Part {
    (
        p.segment.display().to_string(),
        p.offset,
        p.bytes,
        p.removes_file,
    )
}

fn plan(path: &std::path::Path, p: RepairPlan) -> Plan {
    let parts = p.parts.iter().map(part).collect();
    let bytes_removed = p.bytes_removed();
    (
        ScanReport::new(p.report, &path.display().to_string()),
        parts,
        p.damaged_frames,
        p.intact_frames,
        p.restart_at,
        bytes_removed,
    )
}

fn repair_error(py: Python<'_>, e: RepairError) -> PyErr {
    let msg = e.to_string();
    match e {
        RepairError::Scan(e) => scan_error(e),
        RepairError::Oversized {
            offset,
            segment,
            length,
            limit,
            ..
        } => {
            let segment = segment.map(|s| s.display().to_string());
            oversized_error(py, msg, offset, segment, length, limit)
        }
        RepairError::Locked { .. } => WriterLockedError::new_err(msg),
        RepairError::Io { source, .. } | RepairError::Cut { source, .. } => {
            match source.raw_os_error() {
                Some(errno) => AofError::new_err((errno, msg)),
                None => AofError::new_err(msg),
            }
        }
        RepairError::Refused(_) => AofError::new_err(msg),
    }
}

fn options(checkpoint: Option<i128>, max_payload: i128) -> PyResult<(Option<u64>, u32)> {
    let checkpoint = checkpoint
        .map(|c| bounded(c, "checkpoint", 0, u64::MAX))
        .transpose()?;
    Ok((checkpoint, max_payload_arg(max_payload)?))
}

/// What a repair of `path` (a segment file or an AOF directory) would
/// remove; changes nothing.
#[pyfunction]
#[pyo3(signature = (path, *, checkpoint = None, max_payload = DEFAULT_MAX_PAYLOAD_LEN as i128))]
fn plan_repair(
    py: Python<'_>,
    path: PathBuf,
    checkpoint: Option<i128>,
    max_payload: i128,
) -> PyResult<Plan> {
    let (checkpoint, max_payload) = options(checkpoint, max_payload)?;
    let p = py
        .detach(|| core::plan_repair(&path, checkpoint, max_payload))
        .map_err(|e| repair_error(py, e))?;
    Ok(plan(&path, p))
}

/// Cuts `path` at its first bad frame after backing up what goes, under
/// the directory's writer lock; `expected` (the parts of a plan shown
/// before) refuses if the plan made under the lock differs. Returns the
/// plan carried out, each part's backup, and the scan after.
#[pyfunction]
#[pyo3(signature = (path, *, checkpoint = None, max_payload = DEFAULT_MAX_PAYLOAD_LEN as i128,
    expected = None))]
fn repair(
    py: Python<'_>,
    path: PathBuf,
    checkpoint: Option<i128>,
    max_payload: i128,
    expected: Option<Vec<(PathBuf, u64, u64, bool)>>,
) -> PyResult<(Plan, Vec<String>, ScanReport)> {
    let (checkpoint, max_payload) = options(checkpoint, max_payload)?;
    let expected: Option<Vec<CutPart>> = expected.map(|parts| {
        parts
            .into_iter()
            .map(|(segment, offset, bytes, removes_file)| CutPart {
                segment,
                offset,
                bytes,
                removes_file,
            })
            .collect()
    });
    let done = py
        .detach(|| core::repair(&path, checkpoint, max_payload, expected.as_deref()))
        .map_err(|e| repair_error(py, e))?;
    let backups = done
        .backups
        .iter()
        .map(|b| b.display().to_string())
        .collect();
    let after = ScanReport::new(done.after, &path.display().to_string());
    Ok((plan(&path, done.plan), backups, after))
}

/// Cuts the log in `dir` at `position` (a frame boundary) after backing
/// up everything from there on, under the directory's writer lock;
/// returns `(segment, offset, bytes, removes_file, backup)` per part.
#[pyfunction]
fn cut_at(py: Python<'_>, dir: PathBuf, position: i128) -> PyResult<Vec<RemovedPart>> {
    let position = bounded(position, "position", 0, u64::MAX)?;
    let (parts, backups) = py
        .detach(|| core::cut_at(&dir, position))
        .map_err(|e| repair_error(py, e))?;
    Ok(parts
        .iter()
        .zip(backups)
        .map(|(p, b)| {
            let (segment, offset, bytes, removes_file) = part(p);
            (
                segment,
                offset,
                bytes,
                removes_file,
                b.display().to_string(),
            )
        })
        .collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(plan_repair, m)?)?;
    m.add_function(wrap_pyfunction!(repair, m)?)?;
    m.add_function(wrap_pyfunction!(cut_at, m)?)?;
    Ok(())
}
