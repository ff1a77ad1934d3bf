//! `Journal`: the write path of `openmatch-aof` (`openmatch_aof::journal`)
//! for Python. One call per append; the GIL is released for all of it
//! after the operations are taken out of their Python objects, so appends
//! of many threads share fsyncs and no Python signal handler can run in
//! the middle of one.

use std::path::PathBuf;
use std::sync::Arc;

use openmatch_aof::codec::DEFAULT_MAX_PAYLOAD_LEN;
use openmatch_aof::journal::{self as core, JournalError, Replayed};
use openmatch_aof::writer::{Fault, FsyncPolicy, Gate, WriterOptions};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::errors::invalid_value;
use crate::model::Operation;
use crate::scanner::{max_payload_arg, scan_error};
use crate::state::{refused_error, State, StateChanges, Violation};
use crate::writer::{operation_handles, writer_error, WriterStats};

pyo3::import_exception!(openmatch_persistence.errors, RecoveryError);
pyo3::import_exception!(openmatch_persistence.errors, LogViolationError);
pyo3::import_exception!(openmatch_persistence.errors, JournalBrokenError);

/// The Python exception for a journal error.
pub(crate) fn journal_error(py: Python<'_>, e: JournalError) -> PyErr {
    match e {
        JournalError::Writer(w) => writer_error(py, w),
        JournalError::Refused { index, violation } => refused_error(py, violation, Some(index)),
        e @ (JournalError::Unfit { .. } | JournalError::Encode { .. }) => {
            let index = match &e {
                JournalError::Unfit { index, .. } | JournalError::Encode { index, .. } => *index,
                _ => unreachable!(),
            };
            let err = invalid_value(e.to_string());
            // Like `OperationRefusedError.index`: which operation of the
            // caller's batch is at fault (`GroupCommit` counts it in the
            // batch of the call that submitted it). Setting an attribute
            // on a fresh exception cannot fail.
            let _ = err.value(py).setattr("index", index);
            err
        }
        JournalError::Scan(s) => scan_error(s),
        e @ JournalError::Unrecoverable { .. } => RecoveryError::new_err(e.to_string()),
        JournalError::Violation(v) => {
            let msg = v.to_string();
            let build = || -> PyResult<PyErr> {
                let kwargs = PyDict::new(py);
                kwargs.set_item("frame_start", v.frame_start)?;
                kwargs.set_item(
                    "violations",
                    PyList::new(
                        py,
                        [Violation {
                            inner: v.violation.clone(),
                        }],
                    )?,
                )?;
                let cls = py.get_type::<LogViolationError>();
                Ok(PyErr::from_value(cls.call((msg,), Some(&kwargs))?))
            };
            build().unwrap_or_else(|e| e)
        }
        e @ JournalError::Broken(_) => JournalBrokenError::new_err(e.to_string()),
    }
}

/// What a replay applied, as a dict: `from_position`, `position`,
/// `operations`, `segments`, `outcome` ("clean", "torn_tail", "oversized",
/// "corrupt") and `message` (one line naming segment, offset and cause).
fn replayed_dict<'py>(py: Python<'py>, r: &Replayed) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("from_position", r.from)?;
    d.set_item("position", r.position)?;
    d.set_item("operations", r.operations)?;
    d.set_item("segments", r.segments)?;
    d.set_item("outcome", r.outcome.kind.name())?;
    d.set_item("message", r.outcome.describe())?;
    Ok(d)
}

/// The write path of one AOF directory: validation against the schema and
/// the state's invariants, group commit, the state in log order, and what
/// the database and readers may see (only what is acknowledged/durable).
#[pyclass(frozen, module = "openmatch_persistence._core", name = "Journal")]
pub struct Journal {
    pub(crate) inner: Arc<core::Journal>,
}

#[pymethods]
impl Journal {
    /// Opens `directory` (creating it), cuts a torn tail, and replays the
    /// log onto `state` (consumed; an empty state when None) from its
    /// position to the end with the journal's rule. Returns the journal
    /// and what the replay did (a dict, see `replay`). Raises
    /// `LogViolationError` for an operation in the log that breaks an
    /// invariant, `RecoveryError` for a log that does not end where the
    /// writer found its end. `max_payload` bounds the frames replayed and
    /// appended (as `AofWriter`'s): a log written with a higher bound is
    /// refused with `OversizedFrameError` until it is raised to match.
    #[staticmethod]
    #[pyo3(signature = (
        directory, fsync = "always", state = None, *, max_payload = DEFAULT_MAX_PAYLOAD_LEN as i128
    ))]
    fn open<'py>(
        py: Python<'py>,
        directory: PathBuf,
        fsync: &str,
        state: Option<&Bound<'py, State>>,
        max_payload: i128,
    ) -> PyResult<(Journal, Bound<'py, PyDict>)> {
        let policy: FsyncPolicy = fsync.parse().map_err(invalid_value)?;
        let opts = WriterOptions {
            fsync: policy,
            max_payload: max_payload_arg(max_payload)?,
            ..WriterOptions::default()
        };
        let base = match state {
            Some(s) => std::mem::take(s.borrow_mut().owned_mut()?),
            None => Default::default(),
        };
        let (journal, replayed) = py
            .detach(|| core::Journal::open(&directory, opts, base))
            .map_err(|e| journal_error(py, e))?;
        let report = replayed_dict(py, &replayed)?;
        let cut = journal.writer().open_report().truncated_bytes;
        report.set_item("torn_tail_cut", cut)?;
        Ok((
            Journal {
                inner: Arc::new(journal),
            },
            report,
        ))
    }

    /// Appends one operation; returns its position once the fsync policy
    /// is met. Raises `OperationRefusedError` (an invariant) or
    /// `InvalidValueError` (the schema) and writes nothing.
    fn append(&self, py: Python<'_>, op: &Bound<'_, PyAny>) -> PyResult<u64> {
        let op = Operation::from_py(op)?;
        let j = &self.inner;
        py.detach(|| j.append(op)).map_err(|e| journal_error(py, e))
    }

    /// Appends operations as one contiguous run, all or nothing; returns
    /// the position after the last once the fsync policy is met.
    fn append_many(&self, py: Python<'_>, ops: &Bound<'_, PyAny>) -> PyResult<u64> {
        // Handles under the GIL; the operations are copied out of them
        // without it (by the encoding thread, for a large batch).
        let handles = operation_handles(ops)?;
        let j = &self.inner;
        py.detach(|| j.append_many_with(&handles, Operation::of))
            .map_err(|e| journal_error(py, e))
    }

    /// The state, read-only: every call shows only acknowledged operations.
    #[getter]
    fn state(&self) -> State {
        State::live(Arc::clone(&self.inner))
    }

    /// The changes since the previous call, once the log behind them is
    /// durable (the database's write-ahead rule).
    fn take_changes(&self, py: Python<'_>) -> PyResult<StateChanges> {
        let j = &self.inner;
        let c = py
            .detach(|| j.take_changes())
            .map_err(|e| journal_error(py, e))?;
        Ok(StateChanges::new(c))
    }

    /// As `take_changes`, folded into `target` in the same call (see
    /// `State.take_changes_into`); returns how many entities were taken.
    fn take_changes_into(
        &self,
        py: Python<'_>,
        target: &Bound<'_, StateChanges>,
    ) -> PyResult<usize> {
        let j = &self.inner;
        let target = target.get();
        py.detach(|| {
            let c = j.take_changes()?;
            let taken = c.len();
            target.lock().absorb(c);
            Ok(taken)
        })
        .map_err(|e| journal_error(py, e))
    }

    /// `(position, image)`: the state's image once the log up to
    /// `position` is durable.
    fn image<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let j = &self.inner;
        let (position, image) = py.detach(|| j.image()).map_err(|e| journal_error(py, e))?;
        Ok((position, PyBytes::new(py, &image)))
    }

    /// The position after the last acknowledged operation.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        let j = &self.inner;
        py.detach(|| j.position()).map_err(|e| journal_error(py, e))
    }

    /// The position after the last admitted operation (maybe not written).
    #[getter]
    fn end(&self) -> u64 {
        self.inner.writer().position()
    }

    /// Everything below this position is on stable storage.
    #[getter]
    fn durable_position(&self) -> u64 {
        self.inner.writer().durable_position()
    }

    /// Starts a new segment; returns its start (see `AofWriter.rotate`).
    fn rotate(&self, py: Python<'_>) -> PyResult<u64> {
        let w = self.inner.writer();
        py.detach(|| w.rotate()).map_err(|e| writer_error(py, e))
    }

    /// Deletes, oldest first, the segments that end at or before `covered`
    /// (never the one appended to); returns (segments, bytes). See
    /// `AofWriter.delete_covered`.
    fn delete_covered(&self, py: Python<'_>, covered: u64) -> PyResult<(usize, u64)> {
        let w = self.inner.writer();
        py.detach(|| w.delete_covered(covered))
            .map_err(|e| writer_error(py, e))
    }

    /// Blocks until everything up to `position` is durable.
    fn wait_durable(&self, py: Python<'_>, position: u64) -> PyResult<u64> {
        let w = self.inner.writer();
        py.detach(|| w.wait_durable(position))
            .map_err(|e| writer_error(py, e))
    }

    /// The writer's counters.
    fn stats(&self) -> WriterStats {
        self.inner.stats().into()
    }

    /// True once a write or fsync failed: reopen to recover.
    #[getter]
    fn failed(&self) -> bool {
        self.inner.writer().is_failed()
    }

    /// The AOF directory.
    #[getter]
    fn directory(&self) -> String {
        self.inner.writer().directory().display().to_string()
    }

    /// Test hook: the next `writes` writes fail with ENOSPC and the next
    /// `fsyncs` fdatasyncs with EIO, as a failing disk would.
    #[pyo3(signature = (*, writes = 0, fsyncs = 0))]
    fn _inject_failures(&self, writes: u32, fsyncs: u32) {
        let w = self.inner.writer();
        w.inject_fault(Fault::Write, writes);
        w.inject_fault(Fault::Fsync, fsyncs);
    }

    /// Test hook: holds (or lets go) the threads that reach `gate` ("write",
    /// "fsync" or "background_fsync"), as a stalled disk would. Closing
    /// lets every gate go.
    fn _hold_io(&self, gate: &str, held: bool) -> PyResult<()> {
        let gate = match gate {
            "write" => Gate::Write,
            "fsync" => Gate::Fsync,
            "background_fsync" => Gate::BackgroundFsync,
            other => return Err(invalid_value(format!("no I/O gate {other:?}"))),
        };
        self.inner.writer().hold_io(gate, held);
        Ok(())
    }

    /// Writes and fsyncs what is queued, closes the writer. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let j = &self.inner;
        py.detach(|| j.close()).map_err(|e| journal_error(py, e))
    }
}

/// Replays the log at `path` (an AOF directory or a segment) onto `state`
/// from its position with the journal's rule, stopping before the
/// operation whose position is `until` when given. Raises
/// `LogViolationError` at the first operation that breaks an invariant
/// (the state is then as it was just before it). Returns what the replay
/// did (a dict: `from_position`, `position`, `operations`, `segments`,
/// `outcome`, `message`); a torn tail, an oversized frame or corruption
/// is reported there, for the caller to judge. `max_payload` is the
/// reader's frame limit (raise it for a writer with a higher one).
#[pyfunction]
#[pyo3(signature = (state, path, *, until = None, max_payload = DEFAULT_MAX_PAYLOAD_LEN as i128))]
fn replay<'py>(
    py: Python<'py>,
    state: &Bound<'py, State>,
    path: PathBuf,
    until: Option<u64>,
    max_payload: i128,
) -> PyResult<Bound<'py, PyDict>> {
    let max_payload = max_payload_arg(max_payload)?;
    let mut guard = state.borrow_mut();
    let target = guard.owned_mut()?;
    let replayed = py
        .detach(|| core::replay_with_limit(&path, target, until, max_payload))
        .map_err(|e| journal_error(py, e))?;
    replayed_dict(py, &replayed)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Journal>()?;
    m.add_function(wrap_pyfunction!(replay, m)?)?;
    Ok(())
}
