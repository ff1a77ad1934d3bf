//! `openmatch_persistence._core`: the PyO3 binding of `openmatch-aof`.
//!
//! Thin by design: each module converts between Python objects and the pure
//! core's types and maps its errors onto the package's exception hierarchy;
//! the logic lives in `openmatch-aof`.

use pyo3::prelude::*;

mod codec;
mod convert;
mod errors;
mod gc_pause;
mod group_commit;
mod journal;
mod memory;
mod model;
mod repair;
mod rows;
mod scanner;
mod segments;
mod state;
mod writer;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    model::register(m)?;
    codec::register(m)?;
    writer::register(m)?;
    scanner::register(m)?;
    state::register(m)?;
    segments::register(m)?;
    memory::register(m)?;
    journal::register(m)?;
    rows::register(m)?;
    repair::register(m)?;
    group_commit::register(m)?;
    Ok(())
}
