//! `corral._core`: thin PyO3 bindings. Each submodule forwards to one crate; state lives
//! in opaque classes and every blocking wait releases the GIL; `error` maps Rust errors
//! to Python exceptions in one place.

use pyo3::prelude::*;

mod client;
mod controller;
mod engine;
mod error;

/// The Rust side's heap (Python objects keep Python's): mimalloc, because the I/O threads
/// allocate frames that other threads free, which glibc's allocator makes costly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    controller::register(m)?;
    engine::register(m)?;
    client::register(m)?;
    Ok(())
}
