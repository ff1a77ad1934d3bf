//! Pausing Python's cyclic garbage collector while building many objects.
//!
//! Decoding a large buffer allocates hundreds of thousands of objects; each
//! 700 allocations trigger a collection that walks the growing result list,
//! which made bulk decoding about 3x slower. The objects built here hold no
//! reference cycles, so nothing is lost by collecting once afterwards
//! instead. The collector's previous state is restored on drop, also when
//! decoding fails.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static GC: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub struct GcPause<'py> {
    gc: Bound<'py, PyModule>,
    was_enabled: bool,
}

impl<'py> GcPause<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Self> {
        let gc = GC
            .get_or_try_init(py, || py.import("gc").map(Bound::unbind))?
            .bind(py)
            .clone();
        let was_enabled: bool = gc.call_method0("isenabled")?.extract()?;
        if was_enabled {
            gc.call_method0("disable")?;
        }
        Ok(GcPause { gc, was_enabled })
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if self.was_enabled {
            // Re-enabling cannot fail in CPython; if it ever did, leaving the
            // collector off is preferable to a panic across the FFI boundary.
            let _ = self.gc.call_method0("enable");
        }
    }
}
