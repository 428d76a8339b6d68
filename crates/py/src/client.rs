//! Bindings of corral-client: `corral._core.ClientCore`, forwarders only.
//!
//! JSON travels as `str` (the Python layer `json.loads` it), buffers as `bytes`. Every
//! wait releases the GIL and wakes every [`SLICE`] to check signals, so Ctrl-C works.

use std::path::Path;
use std::time::{Duration, Instant};

use corral_client::{Channel, ClientCore, ClientError};
use corral_wire::ClientConnection;
use pyo3::exceptions::{
    PyConnectionError, PyOSError, PyRuntimeError, PyTimeoutError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// How long a blocking call stays in Rust before checking for KeyboardInterrupt.
const SLICE: Duration = Duration::from_millis(50);

/// The one place client errors become Python exceptions.
fn to_py(e: ClientError) -> PyErr {
    let text = e.to_string();
    match e {
        ClientError::NoController { .. } | ClientError::HubTimeout { .. } => {
            PyTimeoutError::new_err(text)
        }
        ClientError::ConnectionRefused { .. } => PyConnectionError::new_err(text),
        ClientError::Zmq { .. } => PyOSError::new_err(text),
        ClientError::Closed => PyRuntimeError::new_err(text),
        ClientError::Wire(_) | ClientError::UnknownChannel(_) | ClientError::BadJson { .. } => {
            PyValueError::new_err(text)
        }
    }
}

fn json(what: &'static str, text: &str) -> PyResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| to_py(ClientError::BadJson { what, source }))
}

fn bytes_list<'py>(py: Python<'py>, frames: &[Vec<u8>]) -> Vec<Bound<'py, PyBytes>> {
    frames.iter().map(|f| PyBytes::new(py, f)).collect()
}

/// Repeats `step(slice)` with the GIL released until it returns `Some` or `timeout`
/// (None = forever) passes, checking signals between slices.
fn sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> Option<T> + Send,
) -> PyResult<Option<T>> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let slice = match deadline {
            Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
            None => SLICE,
        };
        if let Some(v) = py.detach(|| step(slice)) {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

#[pyclass(name = "ClientCore", module = "corral._core", frozen)]
struct PyClientCore {
    core: ClientCore,
}

#[pymethods]
impl PyClientCore {
    /// Reads the client connection file and handshakes with the Hub.
    #[staticmethod]
    fn connect(py: Python<'_>, url_file: &str, timeout: f64) -> PyResult<Self> {
        let conn =
            ClientConnection::read(Path::new(url_file)).map_err(|e| to_py(ClientError::Wire(e)))?;
        let core = py
            .detach(|| ClientCore::connect(&conn, Duration::from_secs_f64(timeout)))
            .map_err(to_py)?;
        Ok(PyClientCore { core })
    }

    #[getter]
    fn session(&self) -> String {
        self.core.session_id().to_owned()
    }

    #[getter]
    fn url(&self) -> String {
        self.core.url.clone()
    }

    #[pyo3(signature = (channel, target, msg_type, content, metadata, buffers))]
    fn submit(
        &self,
        channel: &str,
        target: Option<&str>,
        msg_type: &str,
        content: &str,
        metadata: &str,
        buffers: Vec<Vec<u8>>,
    ) -> PyResult<String> {
        let channel = Channel::parse(channel).map_err(to_py)?;
        self.core
            .submit(
                channel,
                target,
                msg_type,
                json("content", content)?,
                json("metadata", metadata)?,
                buffers,
            )
            .map_err(to_py)
    }

    /// One request to every engine in `targets` through the broadcast scheduler; the
    /// per-engine msg_ids, in the order of `targets`.
    #[pyo3(signature = (targets, msg_type, content, metadata, buffers))]
    fn submit_broadcast(
        &self,
        targets: Vec<(String, i64)>,
        msg_type: &str,
        content: &str,
        metadata: &str,
        buffers: Vec<Vec<u8>>,
    ) -> PyResult<Vec<String>> {
        self.core
            .submit_broadcast(
                &targets,
                msg_type,
                json("content", content)?,
                json("metadata", metadata)?,
                buffers,
            )
            .map_err(to_py)
    }

    /// True once every msg_id is ready (reply and idle); False on timeout.
    #[pyo3(signature = (msg_ids, timeout=None))]
    fn wait(&self, py: Python<'_>, msg_ids: Vec<String>, timeout: Option<f64>) -> PyResult<bool> {
        let done = sliced(py, timeout, |s| self.core.wait(&msg_ids, s).then_some(()))?;
        Ok(done.is_some())
    }

    /// Blocks until more than `seen` publications arrived for `msg_ids` in total, or all
    /// are ready, or `timeout` passes: `(publications received, all ready)`.
    #[pyo3(signature = (msg_ids, seen, timeout=None))]
    fn wait_data(
        &self,
        py: Python<'_>,
        msg_ids: Vec<String>,
        seen: u64,
        timeout: Option<f64>,
    ) -> PyResult<(u64, bool)> {
        let mut last = (seen, false);
        let got = sliced(py, timeout, |s| {
            last = self.core.wait_data(&msg_ids, seen, s);
            (last.0 > seen || last.1).then_some(last)
        })?;
        Ok(got.unwrap_or(last))
    }

    /// Those of `msg_ids` that are recorded and not ready yet.
    fn outstanding(&self, msg_ids: Vec<String>) -> Vec<String> {
        self.core
            .with_store(|s| s.outstanding(&msg_ids, Instant::now()))
    }

    /// Forgets finished tasks; returns the msg_ids still outstanding (kept).
    fn forget(&self, msg_ids: Vec<String>) -> Vec<String> {
        self.core.with_store(|s| s.forget(&msg_ids, Instant::now()))
    }

    fn ready(&self, msg_id: &str) -> bool {
        self.core.with_store(|s| s.is_ready(msg_id, Instant::now()))
    }

    /// `(header, content, metadata)` as JSON strings plus buffers, or None before the reply.
    #[allow(clippy::type_complexity)]
    fn reply<'py>(
        &self,
        py: Python<'py>,
        msg_id: &str,
    ) -> Option<(String, String, String, Vec<Bound<'py, PyBytes>>)> {
        let reply = self
            .core
            .with_store(|s| s.tasks.get(msg_id).and_then(|t| t.reply.clone()))?;
        Some((
            reply.header.to_string(),
            reply.content.to_string(),
            reply.metadata.to_string(),
            bytes_list(py, &reply.buffers),
        ))
    }

    /// `(engine_uuid, submitted, stdout, stderr, outputs_json, data_received)`.
    #[allow(clippy::type_complexity)]
    fn task(&self, msg_id: &str) -> Option<(Option<String>, String, String, String, String, u64)> {
        self.core.with_store(|s| {
            s.tasks.get(msg_id).map(|t| {
                (
                    t.engine.clone(),
                    t.submitted.clone(),
                    t.stdout.clone(),
                    t.stderr.clone(),
                    serde_json::Value::from(t.outputs.clone()).to_string(),
                    t.data_received,
                )
            })
        })
    }

    /// Pending published-data updates per msg_id (conflated), oldest first, each a list
    /// of frames. Taking them empties the pending list.
    fn take_data<'py>(
        &self,
        py: Python<'py>,
        msg_ids: Vec<String>,
    ) -> Vec<Vec<Vec<Bound<'py, PyBytes>>>> {
        let taken: Vec<_> = self
            .core
            .with_store(|s| msg_ids.iter().map(|m| s.take_data(m)).collect());
        taken
            .iter()
            .map(|updates| updates.iter().map(|u| bytes_list(py, &u.buffers)).collect())
            .collect()
    }

    /// Live engines, id → uuid.
    fn engines(&self) -> Vec<(i64, String)> {
        self.core
            .with_store(|s| s.engines.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    /// Every engine ever seen, uuid → id.
    fn engine_id(&self, uuid: &str) -> Option<i64> {
        self.core.with_store(|s| s.engine_ids.get(uuid).copied())
    }

    /// Waits for at least `n` engines; returns how many are registered.
    fn wait_for_engines(&self, py: Python<'_>, n: usize, timeout: f64) -> PyResult<usize> {
        let mut count = 0;
        let got = sliced(py, Some(timeout), |s| {
            count = self.core.wait_for_engines(n, s);
            (count >= n).then_some(count)
        })?;
        Ok(got.unwrap_or(count))
    }

    /// Sends a Hub query and waits for its reply: `(msg_type, content_json, buffers)`.
    fn hub_request<'py>(
        &self,
        py: Python<'py>,
        msg_type: &str,
        content: &str,
        timeout: f64,
    ) -> PyResult<(String, String, Vec<Bound<'py, PyBytes>>)> {
        let msg_id = self
            .core
            .hub_send(msg_type, json("content", content)?)
            .map_err(to_py)?;
        let reply = sliced(py, Some(timeout), |s| self.core.take_hub_reply(&msg_id, s))?
            .ok_or_else(|| {
                to_py(ClientError::HubTimeout {
                    msg_type: msg_type.to_owned(),
                    timeout_s: timeout,
                })
            })?;
        Ok((
            reply.header.msg_type.clone(),
            reply.content.to_string(),
            bytes_list(py, &reply.buffers),
        ))
    }

    fn hub_shut_down(&self) -> bool {
        self.core.with_store(|s| s.hub_shut_down)
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.core.close());
    }

    #[getter]
    fn closed(&self) -> bool {
        self.core.is_closed()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClientCore>()
}
