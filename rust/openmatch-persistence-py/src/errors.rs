//! Rust errors mapped onto the package's exception hierarchy, which is
//! defined in Python (`openmatch_persistence/errors.py`) so that one class can
//! derive from both the package root and `ValueError`/`TypeError`/`OSError`.

use openmatch_aof::{FrameError, FrameErrorKind};
use pyo3::prelude::*;

pyo3::import_exception!(openmatch_persistence.errors, InvalidValueError);
pyo3::import_exception!(openmatch_persistence.errors, InvalidTypeError);
pyo3::import_exception!(openmatch_persistence.errors, JsonFormatError);
pyo3::import_exception!(openmatch_persistence.errors, TornFrameError);
pyo3::import_exception!(openmatch_persistence.errors, CorruptFrameError);
pyo3::import_exception!(openmatch_persistence.errors, ChecksumMismatchError);
pyo3::import_exception!(openmatch_persistence.errors, OversizedFrameError);
pyo3::import_exception!(openmatch_persistence.errors, UndecodablePayloadError);
pyo3::import_exception!(openmatch_persistence.errors, TrailingBytesError);
pyo3::import_exception!(openmatch_persistence.errors, AofError);

pub fn invalid_value(msg: impl Into<String>) -> PyErr {
    InvalidValueError::new_err(msg.into())
}

pub fn invalid_type(msg: impl Into<String>) -> PyErr {
    InvalidTypeError::new_err(msg.into())
}

/// The Python exception for a bad frame: its class says the cause, its
/// `offset` where the frame starts, its `path` the file when there is one.
pub fn frame_error(py: Python<'_>, e: &FrameError, path: Option<&str>) -> PyErr {
    let msg = match path {
        Some(p) => format!("{p}: {e}"),
        None => e.to_string(),
    };
    let path = path.map(str::to_owned);
    if let FrameErrorKind::Oversized { length, max } = e.kind {
        return oversized_error(py, msg, e.offset, path, length, max);
    }
    let args = (msg, e.offset, path);
    let err = match e.kind {
        FrameErrorKind::Torn { .. } => TornFrameError::new_err(args),
        FrameErrorKind::ChecksumMismatch { .. } => ChecksumMismatchError::new_err(args),
        FrameErrorKind::Oversized { .. } => OversizedFrameError::new_err(args),
        FrameErrorKind::ZeroLength => CorruptFrameError::new_err(args),
        FrameErrorKind::Undecodable { .. } => UndecodablePayloadError::new_err(args),
        FrameErrorKind::TrailingBytes { .. } => TrailingBytesError::new_err(args),
    };
    // The class carries a default cause; the instance names the precise one
    // (`zero_length` has no class of its own).
    let _ = err.value(py).setattr("cause", e.kind.name());
    err
}

/// The Python exception for a length field above the reader's limit (a
/// frame, a scan's stop, the writer's open): not a `CorruptFrameError`; it
/// carries the length field and the limit, to raise.
pub fn oversized_error(
    py: Python<'_>,
    msg: String,
    offset: u64,
    path: Option<String>,
    length: u32,
    limit: u32,
) -> PyErr {
    let err = OversizedFrameError::new_err((msg, offset, path));
    let value = err.value(py);
    let _ = value.setattr(
        "cause",
        FrameErrorKind::Oversized { length, max: limit }.name(),
    );
    let _ = value.setattr("length", length);
    let _ = value.setattr("limit", limit);
    err
}
