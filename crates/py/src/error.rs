//! The one place Rust client errors become Python exceptions.
//!
//! Each error maps to the class a user would catch: builtin ones where ipyparallel raises
//! builtins (`TimeoutError`, `OSError`, ...), and `corral.error` classes for what is
//! corral's own (`ControllerLost`), looked up at raise time so the Python module stays the
//! single definition of the class.

use corral_client::ClientError;
use pyo3::exceptions::{
    PyConnectionError, PyOSError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;

/// A `corral.error` exception class, instantiated with `message`.
fn corral_error(name: &str, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("corral.error")
            .and_then(|m| m.getattr(name))
            .and_then(|cls| cls.call1((message.clone(),)))
        {
            Ok(exc) => PyErr::from_value(exc),
            // Only if corral.error itself is broken: still say what happened.
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

pub fn to_py(e: ClientError) -> PyErr {
    let text = e.to_string();
    match e {
        ClientError::NoController { .. } | ClientError::HubTimeout { .. } => {
            PyTimeoutError::new_err(text)
        }
        ClientError::ControllerLost { .. } => corral_error("ControllerLost", text),
        ClientError::ConnectionRefused { .. } | ClientError::SecurityMismatch { .. } => {
            PyConnectionError::new_err(text)
        }
        ClientError::Curve { .. } => PyRuntimeError::new_err(text),
        ClientError::Zmq { .. } => PyOSError::new_err(text),
        ClientError::Closed => PyRuntimeError::new_err(text),
        ClientError::EmptyKey { .. }
        | ClientError::Wire(_)
        | ClientError::UnknownChannel(_)
        | ClientError::BadJson { .. } => PyValueError::new_err(text),
    }
}
