//! The replay scanner as Python functions: `scan`, `scan_bytes`, `verify`,
//! `verify_bytes`, and the `Scanner` / `ScanReport` classes.
//!
//! Decoding runs in batches with the GIL released; only wrapping each
//! operation in its Python object holds it. A verify-only scan never holds
//! the GIL except to report progress between steps.

use std::collections::VecDeque;
use std::path::PathBuf;

use openmatch_aof::codec::{self, FrameErrorKind};
use openmatch_aof::scanner::{
    self as core, OutcomeKind, ScanError, ScanOptions, ScanReport as CoreReport, StopCause,
    DEFAULT_CHUNK_SIZE,
};
use openmatch_aof::{AofOperation, OPERATION_KINDS};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::errors::{
    invalid_value, oversized_error, ChecksumMismatchError, CorruptFrameError, TornFrameError,
    TrailingBytesError, UndecodablePayloadError,
};
use crate::model::Operation;

pyo3::import_exception!(openmatch_persistence.errors, AofError);

/// Operations decoded per GIL release when the caller does not say.
const DEFAULT_BATCH_SIZE: usize = 4096;

/// Bytes verified between two progress callbacks (and signal checks).
const VERIFY_STEP: u64 = 64 * 1024 * 1024;

pub(crate) fn scan_error(e: ScanError) -> PyErr {
    match e {
        ScanError::Io { .. } | ScanError::Broken { .. } => AofError::new_err(e.to_string()),
        ScanError::BadStart { .. } => invalid_value(e.to_string()),
    }
}

/// Integer arguments arrive as `i128` so that a negative or huge value is
/// our `InvalidValueError`, not a bare `OverflowError` from the conversion.
pub(crate) fn bounded(value: i128, name: &str, min: u64, max: u64) -> PyResult<u64> {
    u64::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            invalid_value(format!(
                "{name} must be between {min} and {max}, got {value}"
            ))
        })
}

fn position(value: Option<i128>, name: &str) -> PyResult<Option<u64>> {
    value.map(|v| bounded(v, name, 0, u64::MAX)).transpose()
}

/// A `max_payload` argument, for every reader and writer that takes one.
pub(crate) fn max_payload_arg(value: i128) -> PyResult<u32> {
    Ok(bounded(value, "max_payload", 1, u64::from(u32::MAX))? as u32)
}

/// `read_ahead` applies to files only: bytes in memory are not read.
fn options(max_payload: i128, chunk_size: i128, read_ahead: bool) -> PyResult<ScanOptions> {
    Ok(ScanOptions {
        max_payload: max_payload_arg(max_payload)?,
        chunk_size: bounded(chunk_size, "chunk_size", 1, 1 << 30)? as usize,
        read_ahead,
    })
}

fn batch(batch_size: i128) -> PyResult<usize> {
    Ok(bounded(batch_size, "batch_size", 1, 1 << 24)? as usize)
}

/// Where and why a scan stopped, and what it saw before.
#[pyclass(frozen, module = "openmatch_persistence._core")]
pub struct ScanReport {
    report: CoreReport,
    origin: String,
}

impl ScanReport {
    pub(crate) fn new(report: CoreReport, origin: &str) -> Self {
        ScanReport {
            report,
            origin: origin.to_owned(),
        }
    }

    fn segment_str(&self) -> Option<String> {
        self.report
            .outcome
            .segment
            .as_ref()
            .map(|p| p.display().to_string())
    }
}

#[pymethods]
impl ScanReport {
    /// What was scanned (the path given, or `"<bytes>"`).
    #[getter]
    fn path(&self) -> &str {
        &self.origin
    }
    /// `"clean"`, `"torn_tail"`, `"oversized"` or `"corrupt"`.
    #[getter]
    fn outcome(&self) -> &'static str {
        self.report.outcome.kind.name()
    }
    #[getter]
    fn is_clean(&self) -> bool {
        self.report.outcome.kind == OutcomeKind::Clean
    }
    #[getter]
    fn is_torn_tail(&self) -> bool {
        self.report.outcome.kind == OutcomeKind::TornTail
    }
    /// A length field above `max_payload`: not corruption; a scan with a
    /// higher limit reads on.
    #[getter]
    fn is_oversized(&self) -> bool {
        self.report.outcome.kind == OutcomeKind::Oversized
    }
    #[getter]
    fn is_corrupt(&self) -> bool {
        self.report.outcome.kind == OutcomeKind::Corrupt
    }
    /// The precise cause (`"torn"`, `"zeroed_tail"`, `"checksum_mismatch"`,
    /// `"oversized_length"`, `"zero_length"`, `"undecodable_payload"`,
    /// `"trailing_bytes"`, `"torn_mid_log"`, `"length_past_end"`,
    /// `"segment_gap"`, `"segment_overlap"`); `None` when clean.
    #[getter]
    fn cause(&self) -> Option<&'static str> {
        self.report.outcome.cause.as_ref().map(StopCause::name)
    }
    /// One line naming segment, offset and cause.
    #[getter]
    fn message(&self) -> String {
        self.report.outcome.describe()
    }
    /// The position just past the last good frame: where a resumed scan or
    /// a repair's cut starts. The end of the AOF when clean.
    #[getter]
    fn position(&self) -> u64 {
        self.report.outcome.position
    }
    /// The segment file where the scan stopped (`None` for bytes and for an
    /// empty directory).
    #[getter]
    fn segment(&self) -> Option<String> {
        self.segment_str()
    }
    #[getter]
    fn segment_start(&self) -> u64 {
        self.report.outcome.segment_start
    }
    /// `position` as a byte offset in `segment`.
    #[getter]
    fn offset(&self) -> u64 {
        self.report.outcome.offset
    }
    /// For a torn tail, the bytes after `position` that a repair would cut.
    #[getter]
    fn tail_bytes(&self) -> u64 {
        self.report.outcome.tail_bytes
    }
    /// The position the scan started at.
    #[getter]
    fn start(&self) -> u64 {
        self.report.stats.start
    }
    /// Good frames read.
    #[getter]
    fn frames(&self) -> u64 {
        self.report.stats.frames
    }
    /// Bytes of the good frames, headers included.
    #[getter]
    fn bytes(&self) -> u64 {
        self.report.stats.bytes
    }
    #[getter]
    fn segments(&self) -> u64 {
        self.report.stats.segments
    }
    /// Good frames per operation kind (every kind present, zero included).
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (kind, n) in self.report.stats.kind_counts() {
            d.set_item(kind, n)?;
        }
        Ok(d)
    }
    /// The epoch named by the first and the last operation that names one.
    #[getter]
    fn first_epoch(&self) -> Option<u64> {
        self.report.stats.first_epoch
    }
    #[getter]
    fn last_epoch(&self) -> Option<u64> {
        self.report.stats.last_epoch
    }

    /// Raises the typed error for the stop: a `CorruptFrameError` (or its
    /// subclass for the cause) when corrupt, an `OversizedFrameError` (with
    /// `length` and `limit`) when oversized, a `TornFrameError` for a torn
    /// tail unless `allow_torn_tail`. The error's `offset` is the offset in
    /// its `path` (the segment).
    #[pyo3(signature = (*, allow_torn_tail = true))]
    fn check(&self, py: Python<'_>, allow_torn_tail: bool) -> PyResult<()> {
        let o = &self.report.outcome;
        let Some(cause) = &o.cause else {
            return Ok(());
        };
        if o.kind == OutcomeKind::TornTail && allow_torn_tail {
            return Ok(());
        }
        let path = self.segment_str();
        let msg = match &path {
            Some(_) => o.describe(),
            None => format!("{}: {}", self.origin, o.describe()),
        };
        let path = path.or_else(|| Some(self.origin.clone()));
        if let Some((length, limit)) = o.oversized() {
            let err = oversized_error(py, msg, o.offset, path, length, limit);
            let _ = err.value(py).setattr("position", o.position);
            return Err(err);
        }
        let args = (msg, o.offset, path);
        let err = match (o.kind, cause) {
            (OutcomeKind::TornTail, _) => TornFrameError::new_err(args),
            (_, StopCause::Frame(FrameErrorKind::ChecksumMismatch { .. })) => {
                ChecksumMismatchError::new_err(args)
            }
            (_, StopCause::Frame(FrameErrorKind::Undecodable { .. })) => {
                UndecodablePayloadError::new_err(args)
            }
            (_, StopCause::Frame(FrameErrorKind::TrailingBytes { .. })) => {
                TrailingBytesError::new_err(args)
            }
            _ => CorruptFrameError::new_err(args),
        };
        let _ = err.value(py).setattr("cause", cause.name());
        let _ = err.value(py).setattr("position", o.position);
        Err(err)
    }

    /// The report as plain JSON-able values.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", &self.origin)?;
        d.set_item("outcome", self.outcome())?;
        d.set_item("cause", self.cause())?;
        d.set_item("message", self.message())?;
        d.set_item("position", self.position())?;
        d.set_item("segment", self.segment_str())?;
        d.set_item("segment_start", self.segment_start())?;
        d.set_item("offset", self.offset())?;
        d.set_item("tail_bytes", self.tail_bytes())?;
        d.set_item("start", self.start())?;
        d.set_item("frames", self.frames())?;
        d.set_item("bytes", self.bytes())?;
        d.set_item("segments", self.segments())?;
        d.set_item("counts", self.counts(py)?)?;
        d.set_item("first_epoch", self.first_epoch())?;
        d.set_item("last_epoch", self.last_epoch())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "<ScanReport {} frames={} bytes={} {}>",
            self.outcome(),
            self.report.stats.frames,
            self.report.stats.bytes,
            self.report.outcome.describe()
        )
    }
}

/// An iterator of `(position, operation)`, where `position` is just past the
/// operation's frame (resume a scan there to continue after it). Stops at
/// the end or at the first bad frame; `result` then says which.
#[pyclass(module = "openmatch_persistence._core")]
pub struct Scanner {
    inner: core::Scanner,
    queue: VecDeque<(u64, AofOperation)>,
    batch_size: usize,
    /// Position after the last operation handed to Python.
    handed: u64,
}

impl Scanner {
    fn new(inner: core::Scanner, batch_size: usize) -> PyResult<Self> {
        if batch_size == 0 {
            return Err(invalid_value("batch_size must be at least 1"));
        }
        let handed = inner.stats().start;
        Ok(Scanner {
            inner,
            queue: VecDeque::new(),
            batch_size,
            handed,
        })
    }

    /// Decodes the next batch without the GIL, if the queue is empty.
    fn refill(&mut self, py: Python<'_>) -> PyResult<()> {
        if !self.queue.is_empty() || self.inner.outcome().is_some() {
            return Ok(());
        }
        let inner = &mut self.inner;
        let batch = self.batch_size;
        let mut out = Vec::with_capacity(batch.min(DEFAULT_BATCH_SIZE));
        py.detach(|| inner.next_batch(batch, &mut out))
            .map_err(scan_error)?;
        self.queue.extend(out);
        Ok(())
    }

    fn pair<'py>(py: Python<'py>, pos: u64, op: AofOperation) -> PyResult<Bound<'py, PyTuple>> {
        let op = Operation::to_py(py, op)?;
        PyTuple::new(py, [pos.into_pyobject(py)?.into_any(), op])
    }
}

#[pymethods]
impl Scanner {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.refill(py)?;
        match self.queue.pop_front() {
            Some((pos, op)) => {
                self.handed = pos;
                Ok(Some(Self::pair(py, pos, op)?))
            }
            None => Ok(None),
        }
    }

    /// Up to `size` (default: the scanner's batch size) `(position,
    /// operation)` pairs; an empty list once the scan stopped.
    #[pyo3(signature = (size = None))]
    fn read_batch<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<i128>,
    ) -> PyResult<Bound<'py, PyList>> {
        let size = match size {
            Some(n) => bounded(n, "size", 0, u64::MAX)? as usize,
            None => self.batch_size,
        };
        let list = PyList::empty(py);
        while list.len() < size {
            self.refill(py)?;
            let Some((pos, op)) = self.queue.pop_front() else {
                break;
            };
            self.handed = pos;
            list.append(Self::pair(py, pos, op)?)?;
        }
        Ok(list)
    }

    /// The position just past the last operation handed out (the start
    /// position before the first).
    #[getter]
    fn position(&self) -> u64 {
        self.handed
    }

    /// The report once every operation was handed out; `None` before.
    #[getter]
    fn result(&self) -> Option<ScanReport> {
        if !self.queue.is_empty() {
            return None;
        }
        self.inner
            .report()
            .map(|r| ScanReport::new(r, self.inner.origin()))
    }

    /// True once the scan stopped and every operation was handed out.
    #[getter]
    fn done(&self) -> bool {
        self.queue.is_empty() && self.inner.outcome().is_some()
    }
}

/// Scans a segment file or an AOF directory from `start` (a position; by
/// default the start of the first segment).
#[pyfunction]
#[pyo3(signature = (path, *, start = None, batch_size = DEFAULT_BATCH_SIZE as i128,
    max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN as i128, chunk_size = DEFAULT_CHUNK_SIZE as i128,
    read_ahead = true))]
fn scan(
    py: Python<'_>,
    path: PathBuf,
    start: Option<i128>,
    batch_size: i128,
    max_payload: i128,
    chunk_size: i128,
    read_ahead: bool,
) -> PyResult<Scanner> {
    let opts = options(max_payload, chunk_size, read_ahead)?;
    let start = position(start, "start")?;
    let batch_size = batch(batch_size)?;
    let inner = py
        .detach(|| core::Scanner::open(&path, start, opts))
        .map_err(scan_error)?;
    Scanner::new(inner, batch_size)
}

/// Scans bytes in memory as one segment whose first byte is at `base`.
#[pyfunction]
#[pyo3(signature = (data, *, base = 0, batch_size = DEFAULT_BATCH_SIZE as i128,
    max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN as i128, chunk_size = DEFAULT_CHUNK_SIZE as i128))]
fn scan_bytes(
    data: PyBackedBytes,
    base: i128,
    batch_size: i128,
    max_payload: i128,
    chunk_size: i128,
) -> PyResult<Scanner> {
    let opts = options(max_payload, chunk_size, false)?;
    let base = bounded(base, "base", 0, u64::MAX)?;
    let batch_size = batch(batch_size)?;
    Scanner::new(
        core::Scanner::from_bytes(data.to_vec(), base, opts),
        batch_size,
    )
}

/// Runs a scan to its end in steps without the GIL, calling `progress(bytes
/// so far)` between steps and letting Ctrl-C through.
fn run_verify(
    py: Python<'_>,
    mut inner: core::Scanner,
    decode: bool,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<ScanReport> {
    loop {
        let done = py
            .detach(|| inner.verify_step(VERIFY_STEP, decode))
            .map_err(scan_error)?;
        if let Some(cb) = progress {
            cb.call1((inner.stats().bytes,))?;
        }
        if done {
            break;
        }
        py.check_signals()?;
    }
    let report = inner.finished_report().map_err(scan_error)?;
    Ok(ScanReport::new(report, inner.origin()))
}

/// Scans to the end without making Python objects and reports. With
/// `decode=False` only lengths and checksums are checked (faster; payloads
/// that pass their checksum but do not decode go unnoticed, and epochs are
/// not reported).
#[pyfunction]
#[pyo3(signature = (path, *, start = None, decode = true, progress = None,
    max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN as i128, chunk_size = DEFAULT_CHUNK_SIZE as i128,
    read_ahead = true))]
#[allow(clippy::too_many_arguments)] // the keyword arguments of a Python function
fn verify(
    py: Python<'_>,
    path: PathBuf,
    start: Option<i128>,
    decode: bool,
    progress: Option<Bound<'_, PyAny>>,
    max_payload: i128,
    chunk_size: i128,
    read_ahead: bool,
) -> PyResult<ScanReport> {
    let opts = options(max_payload, chunk_size, read_ahead)?;
    let start = position(start, "start")?;
    let inner = py
        .detach(|| core::Scanner::open(&path, start, opts))
        .map_err(scan_error)?;
    run_verify(py, inner, decode, progress.as_ref())
}

/// [`verify`] of bytes in memory, as one segment whose first byte is at `base`.
#[pyfunction]
#[pyo3(signature = (data, *, base = 0, decode = true,
    max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN as i128, chunk_size = DEFAULT_CHUNK_SIZE as i128))]
fn verify_bytes(
    py: Python<'_>,
    data: PyBackedBytes,
    base: i128,
    decode: bool,
    max_payload: i128,
    chunk_size: i128,
) -> PyResult<ScanReport> {
    let opts = options(max_payload, chunk_size, false)?;
    let base = bounded(base, "base", 0, u64::MAX)?;
    let inner = core::Scanner::from_bytes(data.to_vec(), base, opts);
    run_verify(py, inner, decode, None)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Scanner>()?;
    m.add_class::<ScanReport>()?;
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_function(wrap_pyfunction!(scan_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(verify_bytes, m)?)?;
    m.add("OPERATION_KINDS", OPERATION_KINDS.to_vec())?;
    m.add("DEFAULT_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)?;
    Ok(())
}
