//! Conversions between the engine's Rust values and their Python faces:
//! `uuid.UUID`, `decimal.Decimal`, timezone-aware `datetime.datetime`, `bytes`.
//!
//! The conversions are written here rather than taken from pyo3's optional
//! `uuid`/`rust_decimal`/`chrono` features because those round (a Decimal
//! with more than 28 places), truncate (nanoseconds) or need the non-abi3
//! datetime C API; the engine's values must be refused, never altered.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::PyClass;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::errors::{invalid_type, invalid_value};

static UUID_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DECIMAL_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATETIME_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static UTC: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn utc(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    UTC.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("datetime")?
                .getattr("timezone")?
                .getattr("utc")?
                .unbind(),
        )
    })
    .map(|u| u.bind(py))
}

// --- UUID -------------------------------------------------------------------

static SAFE_UUID_UNKNOWN: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A `uuid.UUID`, made as `pickle` makes one (`UUID.__setstate__`): a bare
/// instance (`object.__new__(UUID)`) whose two slots, `int` and `is_safe`,
/// are set with `object.__setattr__` (UUID's own `__setattr__` refuses:
/// the type is immutable). The constructor's Python code (argument and
/// range checks) costs three times as much, and a u128 is in range by type.
pub fn uuid_to_py<'py>(py: Python<'py>, u: &Uuid) -> PyResult<Bound<'py, PyAny>> {
    let cls = UUID_TYPE.import(py, "uuid", "UUID")?;
    let unknown = SAFE_UUID_UNKNOWN.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import("uuid")?
                .getattr("SafeUUID")?
                .getattr("unknown")?
                .unbind(),
        )
    })?;
    let int = u.as_u128().into_pyobject(py)?;
    let no_args = PyTuple::empty(py);
    // SAFETY: `cls` is a live type object (held by UUID_TYPE) and `no_args`
    // a live tuple, both borrowed for the call; PyType_GenericNew returns a
    // new reference or NULL with an exception set, which
    // `from_owned_ptr_or_err` takes over or turns into the error.
    let obj = unsafe {
        let raw =
            pyo3::ffi::PyType_GenericNew(cls.as_type_ptr(), no_args.as_ptr(), std::ptr::null_mut());
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    for (name, value) in [
        (pyo3::intern!(py, "int"), int.as_any()),
        (pyo3::intern!(py, "is_safe"), unknown.bind(py)),
    ] {
        // SAFETY: three live objects, borrowed (the setter takes its own
        // reference to `value`); it returns -1 with an exception set on
        // failure (a UUID without these slots: a future Python).
        let rc = unsafe {
            pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr())
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
    }
    Ok(obj)
}

pub fn uuid_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Uuid> {
    let cls = UUID_TYPE.import(obj.py(), "uuid", "UUID")?;
    if !obj.is_instance(cls)? {
        return Err(invalid_type(format!(
            "{field}: expected uuid.UUID, got {}",
            type_name(obj)
        )));
    }
    let bytes = obj.getattr("bytes")?;
    let bytes = bytes
        .cast::<PyBytes>()
        .map_err(|_| invalid_type(format!("{field}: uuid.UUID.bytes is not bytes")))?;
    Uuid::from_slice(bytes.as_bytes()).map_err(|e| invalid_value(format!("{field}: {e}")))
}

// --- Decimal ----------------------------------------------------------------

pub fn decimal_to_py<'py>(py: Python<'py>, d: &Decimal) -> PyResult<Bound<'py, PyAny>> {
    let cls = DECIMAL_TYPE.import(py, "decimal", "Decimal")?;
    // Its text written on the stack (no String per value): 28 digits, a
    // sign, a point and a leading zero fit in 32 bytes.
    let mut text = StackText::default();
    std::fmt::Write::write_fmt(&mut text, format_args!("{d}"))
        .map_err(|_| invalid_value(format!("Decimal {d} has a text past 32 bytes")))?;
    cls.call1((PyString::new(py, text.as_str()),))
}

/// A short text built on the stack.
#[derive(Default)]
struct StackText {
    buf: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever written (below), so the bytes are UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A `decimal.Decimal` (or an `int`) as a rust_decimal, exactly, or an error
/// that names the field and the value. Nothing is ever rounded.
pub fn decimal_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Decimal> {
    let py = obj.py();
    let cls = DECIMAL_TYPE.import(py, "decimal", "Decimal")?;
    let is_int = obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<pyo3::types::PyBool>();
    if !is_int && !obj.is_instance(cls)? {
        return Err(invalid_type(format!(
            "{field}: expected decimal.Decimal, got {} (floats are inexact: pass Decimal(str(x)))",
            type_name(obj)
        )));
    }
    let text = obj.str()?.to_cow()?.into_owned();
    parse_python_decimal(&text)
        .map_err(|why| invalid_value(format!("{field}: Decimal {text} {why}")))
}

/// Parses the text of Python's `str(Decimal)` (which may be scientific:
/// `1E+5`, `1.5E-9`) into a rust_decimal, keeping the scale. Hand-written
/// because rust_decimal's parsers round excess digits.
pub fn parse_python_decimal(text: &str) -> Result<Decimal, String> {
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if body.eq_ignore_ascii_case("nan")
        || body.eq_ignore_ascii_case("snan")
        || body.to_ascii_lowercase().starts_with("inf")
        || body.to_ascii_lowercase().starts_with("nan")
        || body.to_ascii_lowercase().starts_with("snan")
    {
        return Err("is not finite: rust_decimal holds finite values only".into());
    }
    let (mantissa_text, exponent) = match body.find(['e', 'E']) {
        Some(i) => {
            let exp: i64 = body[i + 1..]
                .parse()
                .map_err(|_| "has an unreadable exponent".to_string())?;
            (&body[..i], exp)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa_text.find('.') {
        Some(i) => (&mantissa_text[..i], &mantissa_text[i + 1..]),
        None => (mantissa_text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err("is not a number".into());
    }
    let mut coefficient: u128 = 0;
    const LIMIT: u128 = 1 << 96;
    for b in int_part.bytes().chain(frac_part.bytes()) {
        if !b.is_ascii_digit() {
            return Err("is not a number".into());
        }
        coefficient = coefficient * 10 + u128::from(b - b'0');
        if coefficient >= LIMIT {
            return Err("has a mantissa of 2^96 or more, past rust_decimal's 96 bits".into());
        }
    }
    let mut scale = frac_part.len() as i64 - exponent;
    while scale < 0 {
        // A positive exponent: an integer, written out exactly at scale 0.
        coefficient *= 10;
        if coefficient >= LIMIT {
            return Err("has a mantissa of 2^96 or more, past rust_decimal's 96 bits".into());
        }
        scale += 1;
    }
    if scale > 28 {
        return Err(format!(
            "has {scale} decimal places, past rust_decimal's 28 (normalize() it if the places are zeros)"
        ));
    }
    // A negative zero keeps its sign: the engine writes `-Decimal::ZERO` as
    // "-0", and a frame must re-encode to the bytes it was read from.
    let lo = coefficient as u32;
    let mid = (coefficient >> 32) as u32;
    let hi = (coefficient >> 64) as u32;
    let mut d = Decimal::from_parts(lo, mid, hi, negative, scale as u32);
    // from_parts drops the sign of a zero.
    d.set_sign_negative(negative);
    Ok(d)
}

// --- timestamps -------------------------------------------------------------

pub fn datetime_to_py<'py>(py: Python<'py>, t: &DateTime<Utc>) -> PyResult<Bound<'py, PyAny>> {
    let cls = DATETIME_TYPE.import(py, "datetime", "datetime")?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return Err(invalid_value(format!(
            "timestamp {t} is a leap second, which datetime cannot hold"
        )));
    }
    // tzinfo positionally (the eighth argument): no keyword dict per call.
    cls.call1((
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        nanos / 1000,
        utc(py)?,
    ))
    .map_err(|e| invalid_value(format!("timestamp {t} cannot be a datetime: {e}")))
}

pub fn datetime_to_ns(t: &DateTime<Utc>, field: &str) -> PyResult<i64> {
    t.timestamp_nanos_opt().ok_or_else(|| {
        invalid_value(format!(
            "{field}: {t} is outside the range of int nanoseconds since 1970"
        ))
    })
}

/// A timezone-aware `datetime` (microsecond precision) or an `int` of
/// nanoseconds since the Unix epoch (full precision), as UTC.
pub fn datetime_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<DateTime<Utc>> {
    let py = obj.py();
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<pyo3::types::PyBool>() {
        let ns: i64 = obj.extract().map_err(|_| {
            invalid_value(format!(
                "{field}: {obj} nanoseconds is outside the i64 range"
            ))
        })?;
        return Ok(DateTime::from_timestamp_nanos(ns));
    }
    let cls = DATETIME_TYPE.import(py, "datetime", "datetime")?;
    if !obj.is_instance(cls)? {
        return Err(invalid_type(format!(
            "{field}: expected a timezone-aware datetime or int nanoseconds, got {}",
            type_name(obj)
        )));
    }
    if obj.call_method0("utcoffset")?.is_none() {
        return Err(invalid_value(format!(
            "{field}: naive datetime {obj}: give it a tzinfo (the engine stores UTC)"
        )));
    }
    let u = obj.call_method1("astimezone", (utc(py)?,))?;
    let get = |name: &str| -> PyResult<u32> { u.getattr(name)?.extract() };
    let year: i32 = u.getattr("year")?.extract()?;
    let date = NaiveDate::from_ymd_opt(year, get("month")?, get("day")?)
        .ok_or_else(|| invalid_value(format!("{field}: {obj} is not a date")))?;
    let naive = date
        .and_hms_micro_opt(
            get("hour")?,
            get("minute")?,
            get("second")?,
            get("microsecond")?,
        )
        .ok_or_else(|| invalid_value(format!("{field}: {obj} is not a time")))?;
    Ok(Utc.from_utc_datetime(&naive))
}

// --- small values -----------------------------------------------------------

pub fn bytes32_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<[u8; 32]> {
    let data: Vec<u8> = if let Ok(b) = obj.cast::<PyBytes>() {
        b.as_bytes().to_vec()
    } else if let Ok(b) = obj.cast::<pyo3::types::PyByteArray>() {
        b.to_vec()
    } else {
        return Err(invalid_type(format!(
            "{field}: expected 32 bytes, got {}",
            type_name(obj)
        )));
    };
    data.as_slice().try_into().map_err(|_| {
        invalid_value(format!(
            "{field}: expected exactly 32 bytes, got {}",
            data.len()
        ))
    })
}

pub fn u64_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(invalid_type(format!(
            "{field}: expected int, got {}",
            type_name(obj)
        )));
    }
    obj.extract()
        .map_err(|_| invalid_value(format!("{field}: {obj} is outside 0..2^64")))
}

pub fn string_from_py(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<String> {
    let s = obj
        .cast::<PyString>()
        .map_err(|_| invalid_type(format!("{field}: expected str, got {}", type_name(obj))))?;
    Ok(s.to_cow()
        .map_err(|e| invalid_value(format!("{field}: {e}")))?
        .into_owned())
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Calls `f` with the Rust value of each item of `items`, a list of `W`
/// (`Order` or `Trade`); an item of another type is a typed error.
pub(crate) fn each<'py, W, V>(
    items: &Bound<'py, PyList>,
    what: &str,
    inner: impl Fn(&W) -> &V,
    mut f: impl FnMut(&V) -> PyResult<()>,
) -> PyResult<()>
where
    W: PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    for (i, item) in items.iter().enumerate() {
        match item.cast::<W>() {
            Ok(w) => f(inner(w.get()))?,
            Err(_) => {
                return Err(invalid_type(format!(
                    "{what}[{i}]: expected {}, got {}",
                    W::NAME,
                    type_name(&item)
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_python_decimal as p;

    #[test]
    fn python_decimal_text_parses_exactly() {
        assert_eq!(p("1.50").unwrap().to_string(), "1.50");
        assert_eq!(p("1E+5").unwrap().to_string(), "100000");
        assert_eq!(p("1.5E-9").unwrap().to_string(), "0.0000000015");
        assert_eq!(p("-0").unwrap().to_string(), "-0");
        assert!(p("-0.00").unwrap().is_sign_negative());
        assert_eq!(p("-0.00").unwrap().to_string(), "-0.00");
        assert!(!p("0").unwrap().is_sign_negative());
        assert_eq!(
            p("79228162514264337593543950335").unwrap(),
            rust_decimal::Decimal::MAX
        );
        assert!(p("79228162514264337593543950336").is_err());
        assert!(p("1E-29").is_err());
        assert!(p("NaN").is_err());
        assert!(p("-Infinity").is_err());
        assert!(p("sNaN").is_err());
    }
}
