//! `AofWriter`: the durable writer of `openmatch-aof`, for Python.
//!
//! Operations are encoded to frames while the GIL is held (they are Python
//! objects); every wait for a write or an fsync happens with the GIL
//! released (`py.detach`), which is what lets the appends of other Python
//! threads gather into the same group commit.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use openmatch_aof::codec::{
    encode_batch_frames, encode_frame_into_bounded, BoundedFrames, DEFAULT_MAX_PAYLOAD_LEN,
};
use openmatch_aof::scanner::StopCause;
use openmatch_aof::writer::{self as core, Fault, FsyncPolicy, Gather, WriterError, WriterOptions};
use openmatch_aof::{AofOperation, FrameError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{frame_error, invalid_value, oversized_error, CorruptFrameError};
use crate::model::Operation;
use crate::scanner::max_payload_arg;

pyo3::import_exception!(openmatch_persistence.errors, AofError);
pyo3::import_exception!(openmatch_persistence.errors, WriterFailedError);
pyo3::import_exception!(openmatch_persistence.errors, WriterLockedError);
pyo3::import_exception!(openmatch_persistence.errors, WriterClosedError);

/// The Python exception for a writer error: the class says what happened,
/// the message names the file and the operation.
pub(crate) fn writer_error(py: Python<'_>, e: WriterError) -> PyErr {
    let msg = e.to_string();
    match e {
        WriterError::Locked { .. } => WriterLockedError::new_err(msg),
        WriterError::Failed { .. } => WriterFailedError::new_err(msg),
        WriterError::Closed { .. } => WriterClosedError::new_err(msg),
        WriterError::Io { source, .. } => match source.raw_os_error() {
            Some(errno) => AofError::new_err((errno, msg)),
            None => AofError::new_err(msg),
        },
        WriterError::Corrupt {
            path,
            offset,
            cause,
        } => {
            let path = path.display().to_string();
            match cause {
                StopCause::Frame(kind) => {
                    frame_error(py, &FrameError { offset, kind }, Some(&path))
                }
                // Causes that are no single frame's (a damaged length found
                // by the frames behind it) have no class of their own.
                other => {
                    let err = CorruptFrameError::new_err((msg, offset, Some(path)));
                    let _ = err.value(py).setattr("cause", other.name());
                    err
                }
            }
        }
        WriterError::Oversized {
            path,
            offset,
            length,
            limit,
        } => oversized_error(
            py,
            msg,
            offset,
            Some(path.display().to_string()),
            length,
            limit,
        ),
        WriterError::Scan(_) => AofError::new_err(msg),
        WriterError::Encode(_) | WriterError::Invalid(_) => invalid_value(msg),
    }
}

fn encode_op(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, max_payload: u32) -> PyResult<()> {
    let op = Operation::from_py(obj)?;
    encode_frame_into_bounded(&op, out, max_payload).map_err(|e| invalid_value(e.to_string()))?;
    Ok(())
}

/// The frames of `ops` and the length of each, bounded as the writer is
/// (`openmatch_aof::codec::encode_batch_frames`).
fn encode_batch(
    ops: &[AofOperation],
    max_payload: u32,
) -> Result<(BoundedFrames, Vec<usize>), WriterError> {
    encode_batch_frames(ops, max_payload).map_err(|(_, e)| WriterError::Encode(e))
}

/// The operations out of their Python objects (this needs the GIL).
pub(crate) fn take_ops(ops: &Bound<'_, PyAny>) -> PyResult<Vec<AofOperation>> {
    let mut owned = Vec::with_capacity(ops.len().unwrap_or(16));
    for op in ops.try_iter()? {
        owned.push(Operation::from_py(&op?)?);
    }
    Ok(owned)
}

/// The operation objects of `ops`, checked to be operations, as handles
/// (this needs the GIL). The classes are frozen, so the operations can be
/// read through the handles without it ([`Operation::of`]).
pub(crate) fn operation_handles(ops: &Bound<'_, PyAny>) -> PyResult<Vec<Py<Operation>>> {
    let mut handles = Vec::with_capacity(ops.len().unwrap_or(16));
    for op in ops.try_iter()? {
        handles.push(Operation::handle(&op?)?);
    }
    Ok(handles)
}

/// A snapshot of a writer's counters.
#[pyclass(frozen, get_all, module = "openmatch_persistence._core")]
pub struct WriterStats {
    /// Records appended.
    appends: u64,
    /// Bytes appended.
    bytes: u64,
    /// Batched writes issued.
    writes: u64,
    /// Successful fdatasyncs.
    fsyncs: u64,
    /// Records those fsyncs made durable.
    records_fsynced: u64,
    /// Mean records per fsync (the group-commit factor).
    records_per_fsync: f64,
    max_records_per_fsync: u64,
    rotations: u64,
    /// Torn-tail bytes cut when the writer opened.
    truncated_on_open: u64,
    /// Fsync latency percentiles in seconds, over the last fsyncs.
    fsync_p50: f64,
    fsync_p90: f64,
    fsync_p99: f64,
    fsync_max: f64,
    /// The fsync duration histogram over every fsync: (upper bound in
    /// seconds, fsyncs that took at most that), cumulative.
    fsync_buckets: Vec<(f64, u64)>,
    /// The total seconds of every fsync (the histogram's sum).
    fsync_seconds_sum: f64,
}

#[pymethods]
impl WriterStats {
    /// The counters as a plain dict.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(slf.py());
        for name in [
            "appends",
            "bytes",
            "writes",
            "fsyncs",
            "records_fsynced",
            "records_per_fsync",
            "max_records_per_fsync",
            "rotations",
            "truncated_on_open",
            "fsync_p50",
            "fsync_p90",
            "fsync_p99",
            "fsync_max",
            "fsync_buckets",
            "fsync_seconds_sum",
        ] {
            d.set_item(name, slf.getattr(name)?)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "WriterStats(appends={}, fsyncs={}, records_per_fsync={:.1}, fsync_p50={:.6}, fsync_p99={:.6})",
            self.appends, self.fsyncs, self.records_per_fsync, self.fsync_p50, self.fsync_p99
        )
    }
}

impl From<core::WriterStats> for WriterStats {
    fn from(s: core::WriterStats) -> Self {
        WriterStats {
            appends: s.appends,
            bytes: s.bytes,
            writes: s.writes,
            fsyncs: s.fsyncs,
            records_fsynced: s.records_fsynced,
            records_per_fsync: s.records_per_fsync(),
            max_records_per_fsync: s.max_records_per_fsync,
            rotations: s.rotations,
            truncated_on_open: s.truncated_on_open,
            fsync_p50: s.fsync_p50.as_secs_f64(),
            fsync_p90: s.fsync_p90.as_secs_f64(),
            fsync_p99: s.fsync_p99.as_secs_f64(),
            fsync_max: s.fsync_max.as_secs_f64(),
            fsync_buckets: core::FSYNC_BUCKETS_US
                .iter()
                .zip(s.fsync_buckets)
                .map(|(&le, n)| (le as f64 / 1e6, n))
                .collect(),
            fsync_seconds_sum: s.fsync_total.as_secs_f64(),
        }
    }
}

/// The durable, group-committing writer of one AOF directory.
#[pyclass(frozen, module = "openmatch_persistence._core", name = "AofWriter")]
pub struct AofWriter {
    inner: core::AofWriter,
}

impl AofWriter {
    /// The writer's bound on a frame's payload, which its encoding keeps.
    fn max_payload(&self) -> u32 {
        self.inner.options().max_payload
    }

    /// Appends `ops` as one contiguous batch; returns where it ends and the
    /// length of each record's frame. Only taking the operations out of
    /// their Python objects needs the GIL; encoding them (most of the CPU)
    /// runs without it, in parallel for large batches.
    fn append_batch(&self, py: Python<'_>, ops: &Bound<'_, PyAny>) -> PyResult<(u64, Vec<usize>)> {
        let owned = take_ops(ops)?;
        py.detach(|| {
            // Handed over, not copied, and not read again (within the
            // writer's bound by construction).
            let (mut frames, lengths) = encode_batch(&owned, self.max_payload())?;
            let end = self
                .inner
                .submit_frames_owned(&mut frames, owned.len() as u64)?;
            self.inner.wait_appended(end)?;
            Ok((end, lengths))
        })
        .map_err(|e| writer_error(py, e))
    }
}

#[pymethods]
impl AofWriter {
    #[new]
    #[pyo3(signature = (
        directory,
        fsync = "always",
        *,
        gather_window = None,
        max_batch_bytes = 4 << 20,
        max_payload = DEFAULT_MAX_PAYLOAD_LEN as i128,
    ))]
    fn new(
        py: Python<'_>,
        directory: PathBuf,
        fsync: &str,
        gather_window: Option<f64>,
        max_batch_bytes: usize,
        max_payload: i128,
    ) -> PyResult<Self> {
        let policy: FsyncPolicy = fsync.parse().map_err(invalid_value)?;
        let gather = match gather_window {
            None => Gather::Adaptive,
            Some(0.0) => Gather::Off,
            Some(w) if w > 0.0 && w <= 1.0 => Gather::Window(Duration::from_secs_f64(w)),
            Some(w) => {
                return Err(invalid_value(format!(
                    "gather_window must be None (adaptive) or between 0 and 1 second, not {w}"
                )))
            }
        };
        if max_batch_bytes == 0 {
            return Err(invalid_value("max_batch_bytes must be positive"));
        }
        let opts = WriterOptions {
            fsync: policy,
            gather,
            max_batch_bytes,
            max_payload: max_payload_arg(max_payload)?,
            ..WriterOptions::default()
        };
        let inner = py
            .detach(|| core::AofWriter::open(&directory, opts))
            .map_err(|e| writer_error(py, e))?;
        let cut = inner.open_report().truncated_bytes;
        if cut > 0 {
            let report = inner.open_report();
            let backup = report.torn_tail_backup.as_ref();
            let msg = format!(
                "{}: cut a torn tail of {cut} bytes (an interrupted, unacknowledged append), saved to {}; the log now ends at position {}",
                report.segment.display(),
                backup.map_or_else(String::new, |p| p.display().to_string()),
                report.end
            );
            py.import("logging")?
                .call_method1("getLogger", ("openmatch_persistence.writer",))?
                .call_method1("warning", (msg,))?;
        }
        Ok(AofWriter { inner })
    }

    /// Appends one operation; returns the end position of its record once
    /// the fsync policy is satisfied.
    fn append(&self, py: Python<'_>, op: &Bound<'_, PyAny>) -> PyResult<u64> {
        let mut frame = Vec::with_capacity(512);
        encode_op(op, &mut frame, self.max_payload())?;
        py.detach(|| self.inner.append_frames(&frame, 1))
            .map_err(|e| writer_error(py, e))
    }

    /// Appends operations contiguously in one batch; returns the end
    /// position of the last. A bad operation fails the call before anything
    /// is appended.
    fn append_many(&self, py: Python<'_>, ops: &Bound<'_, PyAny>) -> PyResult<u64> {
        Ok(self.append_batch(py, ops)?.0)
    }

    /// As `append_many`, returning the boundaries of every record: `n + 1`
    /// positions, record `i` from `bounds[i]` to `bounds[i + 1]` (for an
    /// empty batch, the end of the log alone).
    fn append_many_bounds(&self, py: Python<'_>, ops: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
        let (end, lengths) = self.append_batch(py, ops)?;
        // The batch is one contiguous run that ends at `end`.
        let mut at = end - lengths.iter().sum::<usize>() as u64;
        let mut bounds = Vec::with_capacity(lengths.len() + 1);
        bounds.push(at);
        for len in lengths {
            at += len as u64;
            bounds.push(at);
        }
        debug_assert_eq!(at, end);
        Ok(bounds)
    }

    /// Appends one operation without blocking the running event loop: the
    /// record is queued now (so positions follow call order) and the
    /// returned future resolves to its end position once the policy is
    /// satisfied; the wait runs in the loop's default executor.
    fn append_async<'py>(
        slf: &Bound<'py, Self>,
        op: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
        let mut frame = Vec::with_capacity(512);
        encode_op(op, &mut frame, slf.get().max_payload())?;
        let position = slf
            .get()
            .inner
            .submit_frames(&frame, 1)
            .map_err(|e| writer_error(py, e))?;
        let wait = slf.getattr("_wait_appended")?;
        event_loop.call_method1("run_in_executor", (py.None(), wait, position))
    }

    /// Blocks until the record ending at `position` has the append
    /// guarantee of the policy. Used by `append_async`.
    fn _wait_appended(&self, py: Python<'_>, position: u64) -> PyResult<u64> {
        py.detach(|| self.inner.wait_appended(position))
            .map_err(|e| writer_error(py, e))
    }

    /// Blocks until everything up to `position` is on stable storage,
    /// fsyncing if needed (under any policy); returns `position`.
    fn wait_durable(&self, py: Python<'_>, position: u64) -> PyResult<u64> {
        py.detach(|| self.inner.wait_durable(position))
            .map_err(|e| writer_error(py, e))
    }

    /// Deletes, oldest first, the segments whose successor starts at or
    /// before `covered`, never the one appended to, fsyncing the directory
    /// after each; returns `(segments, bytes)` deleted.
    fn delete_covered(&self, py: Python<'_>, covered: u64) -> PyResult<(usize, u64)> {
        py.detach(|| self.inner.delete_covered(covered))
            .map_err(|e| writer_error(py, e))
    }

    /// Starts a new segment at the current end; returns its start position.
    fn rotate(&self, py: Python<'_>) -> PyResult<u64> {
        py.detach(|| self.inner.rotate())
            .map_err(|e| writer_error(py, e))
    }

    /// The segment file holding the record that ends at `position`, and the
    /// offset just past that record in the file.
    fn locate(&self, py: Python<'_>, position: u64) -> PyResult<(String, u64)> {
        let (path, offset) = self
            .inner
            .locate(position)
            .map_err(|e| writer_error(py, e))?;
        Ok((path.display().to_string(), offset))
    }

    fn stats(&self) -> WriterStats {
        self.inner.stats().into()
    }

    /// Writes what is pending, fsyncs, releases the directory. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.close())
            .map_err(|e| writer_error(py, e))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    #[getter]
    fn directory(&self) -> String {
        self.inner.directory().display().to_string()
    }

    #[getter]
    fn fsync(&self) -> &'static str {
        self.inner.policy().name()
    }

    /// The end position of the last appended record.
    #[getter]
    fn position(&self) -> u64 {
        self.inner.position()
    }

    #[getter]
    fn written_position(&self) -> u64 {
        self.inner.written_position()
    }

    #[getter]
    fn durable_position(&self) -> u64 {
        self.inner.durable_position()
    }

    #[getter]
    fn segment_start(&self) -> u64 {
        self.inner.segment_start()
    }

    /// Bytes of torn tail cut when this writer opened.
    #[getter]
    fn truncated_bytes(&self) -> u64 {
        self.inner.open_report().truncated_bytes
    }

    /// The backup file holding exactly the torn tail cut when this writer
    /// opened, or None when nothing was cut.
    #[getter]
    fn torn_tail_backup(&self) -> Option<String> {
        let backup = self.inner.open_report().torn_tail_backup.as_ref();
        backup.map(|p| p.display().to_string())
    }

    #[getter]
    fn failed(&self) -> bool {
        self.inner.is_failed()
    }

    /// Why the writer failed, or None.
    #[getter]
    fn failure(&self) -> Option<String> {
        self.inner.failure()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn __repr__(&self) -> String {
        format!(
            "AofWriter({:?}, fsync={:?}, position={})",
            self.inner.directory().display().to_string(),
            self.inner.policy().name(),
            self.inner.position()
        )
    }

    /// Test hook: the next `writes` writes fail with ENOSPC and the next
    /// `fsyncs` fdatasyncs with EIO, as a failing disk would.
    #[pyo3(signature = (*, writes = 0, fsyncs = 0))]
    fn _inject_failures(&self, writes: u32, fsyncs: u32) {
        self.inner.inject_fault(Fault::Write, writes);
        self.inner.inject_fault(Fault::Fsync, fsyncs);
    }
}

/// The lock of an AOF directory, taken without opening a writer, by a tool
/// that must not run beside one (`aof repair`). A context manager.
#[pyclass(frozen, module = "openmatch_persistence._core", name = "AofDirLock")]
pub struct AofDirLock {
    lock: Mutex<Option<core::DirLock>>,
}

#[pymethods]
impl AofDirLock {
    /// Takes the lock of `directory` now; raises `WriterLockedError` while
    /// a writer has it open.
    #[new]
    fn new(py: Python<'_>, directory: PathBuf) -> PyResult<Self> {
        let lock = py
            .detach(|| core::DirLock::acquire(&directory))
            .map_err(|e| writer_error(py, e))?;
        Ok(AofDirLock {
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Releases the lock. Idempotent.
    fn release(&self) {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    #[getter]
    fn held(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.release();
        false
    }
}

/// The physical baseline of the fsync benchmark: `n` times a `size`-byte
/// `pwrite` then `fdatasync` on a new file at `path` (removed afterwards);
/// returns the seconds taken.
#[pyfunction]
fn _raw_fdatasync_loop(py: Python<'_>, path: PathBuf, n: u64, size: usize) -> PyResult<f64> {
    py.detach(|| core::raw_fdatasync_loop(&path, n, size))
        .map(|d| d.as_secs_f64())
        .map_err(|e| AofError::new_err(format!("raw fdatasync loop on {}: {e}", path.display())))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AofWriter>()?;
    m.add_class::<AofDirLock>()?;
    m.add_class::<WriterStats>()?;
    m.add_function(wrap_pyfunction!(_raw_fdatasync_loop, m)?)?;
    Ok(())
}
