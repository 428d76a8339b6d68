//! Bindings of corral-controller: `controller_main(argv)` runs `corral controller`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Runs the controller with command-line `args` until a client shuts it down or Python
/// sees a signal (Ctrl-C → KeyboardInterrupt, after the controller stopped and deleted
/// its connection files). The GIL is released while it serves.
#[pyfunction]
fn controller_main(py: Python<'_>, args: Vec<String>) -> PyResult<i32> {
    let mut pending: Option<PyErr> = None;
    let result = py.detach(|| {
        corral_controller::run_with_args(args, || {
            Python::attach(|py| match py.check_signals() {
                Ok(()) => false,
                Err(e) => {
                    pending = Some(e);
                    true
                }
            })
        })
    });
    if let Some(err) = pending {
        return Err(err);
    }
    result.map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(controller_main, m)?)
}
