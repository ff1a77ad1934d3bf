//! The process's malloc, tuned for a long-running `Persistence`.
//!
//! glibc's malloc serves blocks above its mmap threshold (128 KiB) with
//! `mmap`, and raises the threshold to the size of each such block freed, up
//! to 32 MiB. A persistence process frees multi-megabyte blocks all the time
//! (each flush's changes and rows, each snapshot's image), so soon those
//! come from the heap, where they fragment it: the bounded-state benchmark
//! saw resident memory grow by a quarter between 5 M and 10 M operations
//! with a flat state, and stay flat with the threshold fixed
//! (docs/recovery-benchmark.md). Fixing it is what `MALLOC_MMAP_THRESHOLD_`
//! does from the environment; a process that set that keeps its own value.

use pyo3::prelude::*;

/// Fixes glibc's mmap threshold at its default (128 KiB), which turns off
/// its growth; returns whether it did (not on another C library, nor when
/// the environment already sets it).
#[pyfunction]
fn fix_malloc_mmap_threshold() -> bool {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return false;
    }
    fix()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix() -> bool {
    const DEFAULT_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt takes two integers and only changes malloc's tuning;
    // glibc serializes it with its own lock against concurrent allocation.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, DEFAULT_THRESHOLD) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix() -> bool {
    false
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fix_malloc_mmap_threshold, m)?)?;
    Ok(())
}
