//! The frame codec and the JSON form, as Python functions.

use openmatch_aof::codec;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList};

use crate::errors::{frame_error, invalid_value, JsonFormatError};
use crate::gc_pause::GcPause;
use crate::model::Operation;

fn encode_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let op = Operation::from_py(obj)?;
    codec::encode_frame_into(&op, out).map_err(|e| invalid_value(e.to_string()))?;
    Ok(())
}

/// One operation as one frame.
#[pyfunction]
pub fn encode<'py>(py: Python<'py>, op: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(512);
    encode_into(op, &mut out)?;
    Ok(PyBytes::new(py, &out))
}

/// Many operations as consecutive frames. All or nothing: a bad operation
/// fails the call and no bytes are returned.
#[pyfunction]
pub fn encode_many<'py>(py: Python<'py>, ops: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(ops.len().unwrap_or(16) * 400);
    for op in ops.try_iter()? {
        encode_into(&op?, &mut out)?;
    }
    Ok(PyBytes::new(py, &out))
}

/// Exactly one frame back to its operation.
#[pyfunction]
#[pyo3(signature = (data, *, max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN))]
pub fn decode<'py>(
    py: Python<'py>,
    data: PyBackedBytes,
    max_payload: u32,
) -> PyResult<Bound<'py, PyAny>> {
    let op = codec::decode_one(&data, max_payload).map_err(|e| frame_error(py, &e, None))?;
    Operation::to_py(py, op)
}

/// A buffer of whole frames back to its operations, in order.
#[pyfunction]
#[pyo3(signature = (data, *, max_payload = codec::DEFAULT_MAX_PAYLOAD_LEN))]
pub fn decode_all<'py>(
    py: Python<'py>,
    data: PyBackedBytes,
    max_payload: u32,
) -> PyResult<Bound<'py, PyList>> {
    let bytes: &[u8] = &data;
    let ops = py
        .detach(|| codec::decode_all(bytes, max_payload))
        .map_err(|e| frame_error(py, &e, None))?;
    let _pause = GcPause::new(py)?;
    let objects = ops
        .into_iter()
        .map(|op| Operation::to_py(py, op))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, objects)
}

/// The JSON form of an operation: what `serde_json::to_string` gives for the
/// engine's types (aof-format.md §4).
#[pyfunction]
pub fn to_json(op: &Bound<'_, PyAny>) -> PyResult<String> {
    let op = Operation::from_py(op)?;
    serde_json::to_string(&op).map_err(|e| invalid_value(e.to_string()))
}

/// An operation from its JSON form.
#[pyfunction]
pub fn from_json<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    let op: openmatch_aof::AofOperation = serde_json::from_str(text)
        .map_err(|e| JsonFormatError::new_err(format!("not an operation's JSON form: {e}")))?;
    Operation::to_py(py, op)
}

/// Raises `InvalidValueError` naming the field and the value when `op` holds
/// a value that the database schema cannot store exactly (NUMERIC(28,8),
/// the VARCHAR lengths, BIGINT); see `openmatch_aof::store_fit`.
#[pyfunction]
pub fn check_fits_store(op: &Bound<'_, PyAny>) -> PyResult<()> {
    match op.cast::<Operation>() {
        Ok(o) => openmatch_aof::store_fit::check_fits_store(&o.get().op).map_err(invalid_value),
        Err(_) => Err(invalid_value(format!(
            "not an operation: {}",
            crate::convert::type_name(op)
        ))),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_fits_store, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_many, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(decode_all, m)?)?;
    m.add_function(wrap_pyfunction!(to_json, m)?)?;
    m.add_function(wrap_pyfunction!(from_json, m)?)?;
    m.add("DEFAULT_MAX_PAYLOAD_LEN", codec::DEFAULT_MAX_PAYLOAD_LEN)?;
    m.add("HEADER_LEN", codec::HEADER_LEN)?;
    Ok(())
}
