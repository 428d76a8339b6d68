//! Bindings of corral-client: `corral._core.ClientCore`, forwarders only.
//!
//! JSON travels as `str` (the Python layer `json.loads` it), buffers as `bytes`; replies
//! and task snapshots cross as small typed objects ([`PyReply`], [`PyTaskInfo`],
//! [`PyHubReply`]). Every wait goes through [`wait_released`]: the GIL is released and
//! signals are checked every [`SLICE`], so Ctrl-C becomes `KeyboardInterrupt`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_client::{Channel, ClientCore, ClientError, ConnectOptions, Reply};
use corral_wire::ClientConnection;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::to_py;

/// How long a blocking call stays in Rust before checking for KeyboardInterrupt.
const SLICE: Duration = Duration::from_millis(50);

fn json(what: &'static str, text: &str) -> PyResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| to_py(ClientError::BadJson { what, source }))
}

fn bytes_list(py: Python<'_>, frames: &[Vec<u8>]) -> Vec<Py<PyBytes>> {
    frames
        .iter()
        .map(|f| PyBytes::new(py, f).unbind())
        .collect()
}

/// The one GIL-releasing wait: repeats `step(slice)` with the GIL released until it
/// returns `Some` or `timeout` (None = forever) passes, checking signals between slices.
/// A client error from `step` (the controller is gone) ends the wait at once.
fn wait_released<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut step: impl FnMut(Duration) -> Result<Option<T>, ClientError> + Send,
) -> PyResult<Option<T>> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let slice = match deadline {
            Some(d) => SLICE.min(d.saturating_duration_since(Instant::now())),
            None => SLICE,
        };
        if let Some(v) = py.detach(|| step(slice)).map_err(to_py)? {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// A task's reply: header, content and metadata as JSON text, and its buffers, each made
/// when asked for. `msg_type` and `status` are read without JSON: a successful reply's
/// value needs only them and the buffers (W3, broadcasts).
#[pyclass(name = "Reply", module = "corral._core", frozen)]
struct PyReply {
    reply: Arc<Reply>,
}

#[pymethods]
impl PyReply {
    #[getter]
    fn header(&self) -> String {
        self.reply.header.to_string()
    }

    #[getter]
    fn content(&self) -> String {
        self.reply.content.to_string()
    }

    #[getter]
    fn metadata(&self) -> String {
        self.reply.metadata.to_string()
    }

    #[getter]
    fn buffers(&self, py: Python<'_>) -> Vec<Py<PyBytes>> {
        bytes_list(py, &self.reply.buffers)
    }

    /// The header's `msg_type` (`""` if it has none).
    #[getter]
    fn msg_type(&self) -> &str {
        self.reply.header["msg_type"].as_str().unwrap_or("")
    }

    /// The content's `status`, or None if it has no string `status`.
    #[getter]
    fn status(&self) -> Option<&str> {
        self.reply.content["status"].as_str()
    }
}

/// What is known of a task so far (for its metadata).
#[pyclass(name = "TaskInfo", module = "corral._core", frozen, get_all)]
struct PyTaskInfo {
    /// Engine uuid, once known.
    engine: Option<String>,
    submitted: String,
    stdout: String,
    stderr: String,
    /// JSON list of `{msg_type, content}` outputs.
    outputs: String,
    data_received: u64,
    /// Updates replaced by later ones before they were read.
    data_conflated: u64,
    /// An engine has started running it (`status: busy` arrived).
    started: bool,
    /// Followed (another client's task), not sent by this client.
    foreign: bool,
}

/// The Hub's answer to a query.
#[pyclass(name = "HubReply", module = "corral._core", frozen, get_all)]
struct PyHubReply {
    msg_type: String,
    content: String,
    buffers: Vec<Py<PyBytes>>,
}

#[pyclass(name = "ClientCore", module = "corral._core", frozen)]
struct PyClientCore {
    core: ClientCore,
}

#[pymethods]
impl PyClientCore {
    /// Reads the client connection file and handshakes with the Hub. `grace`: how long
    /// the controller may be unreachable before every wait fails with ControllerLost.
    #[staticmethod]
    #[pyo3(signature = (url_file, timeout, insecure=false, grace=None))]
    fn connect(
        py: Python<'_>,
        url_file: &str,
        timeout: f64,
        insecure: bool,
        grace: Option<f64>,
    ) -> PyResult<Self> {
        let conn =
            ClientConnection::read(Path::new(url_file)).map_err(|e| to_py(ClientError::Wire(e)))?;
        let mut options = ConnectOptions {
            timeout: Duration::from_secs_f64(timeout.max(0.0)),
            insecure,
            ..ConnectOptions::default()
        };
        if let Some(g) = grace {
            options.grace = Duration::from_secs_f64(g.max(0.0));
        }
        let core = py
            .detach(|| ClientCore::connect(&conn, &options))
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
            .submit(channel, target, msg_type, content, metadata, buffers)
            .map_err(to_py)
    }

    /// One request to every engine in `targets` through the broadcast scheduler: its
    /// msg_id and the per-engine msg_ids, in the order of `targets` (`coalescing`: one
    /// combined reply, filed under the request's msg_id).
    #[pyo3(signature = (targets, msg_type, content, metadata, buffers, coalescing=false))]
    fn submit_broadcast(
        &self,
        targets: Vec<(String, i64)>,
        msg_type: &str,
        content: &str,
        metadata: &str,
        buffers: Vec<Vec<u8>>,
        coalescing: bool,
    ) -> PyResult<(String, Vec<String>)> {
        self.core
            .submit_broadcast(
                &targets,
                msg_type,
                json("content", content)?,
                json("metadata", metadata)?,
                buffers,
                coalescing,
            )
            .map_err(to_py)
    }

    /// True once every msg_id is ready (reply and idle); False on timeout.
    #[pyo3(signature = (msg_ids, timeout=None))]
    fn wait(&self, py: Python<'_>, msg_ids: Vec<String>, timeout: Option<f64>) -> PyResult<bool> {
        let done = wait_released(py, timeout, |s| {
            Ok(self.core.wait(&msg_ids, s)?.then_some(()))
        })?;
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
        let got = wait_released(py, timeout, |s| {
            last = self.core.wait_data(&msg_ids, seen, s)?;
            Ok((last.0 > seen || last.1).then_some(last))
        })?;
        Ok(got.unwrap_or(last))
    }

    /// Asks `wait_completed` to report each of `msg_ids` once it is ready.
    fn watch(&self, msg_ids: Vec<String>) {
        self.core.watch(&msg_ids);
    }

    /// Blocks (GIL released) until watched tasks become ready or `timeout` passes; the
    /// msg_ids that became ready since the last call (every watched one once the
    /// controller is lost), empty on timeout.
    fn wait_completed(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<String>> {
        let done = wait_released(py, Some(timeout), |s| {
            let done = self.core.wait_completed(s);
            Ok((!done.is_empty()).then_some(done))
        })?;
        Ok(done.unwrap_or_default())
    }

    /// Raises ControllerLost once the controller is gone.
    fn check_controller(&self) -> PyResult<()> {
        self.core.check_controller().map_err(to_py)
    }

    /// Those of `msg_ids` that are recorded and not ready yet.
    fn outstanding(&self, msg_ids: Vec<String>) -> Vec<String> {
        self.core.outstanding(&msg_ids)
    }

    /// Forgets finished tasks; returns the msg_ids still outstanding (kept).
    fn forget(&self, msg_ids: Vec<String>) -> Vec<String> {
        self.core.forget(&msg_ids)
    }

    /// Forgets every finished task; returns how many are kept (still outstanding).
    fn forget_finished(&self) -> usize {
        self.core.forget_finished()
    }

    /// How much the store holds, by name (diagnostics; each count returns to its
    /// baseline once the tasks are finished and forgotten).
    fn stats(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let s = self.core.stats();
        std::collections::BTreeMap::from([
            ("tasks", s.tasks),
            ("task_capacity", s.task_capacity),
            ("pending_data", s.pending_data),
            ("live_engines", s.live_engines),
            ("known_engines", s.known_engines),
            ("hub_waiting", s.hub_waiting),
            ("hub_replies", s.hub_replies),
            ("watched", s.watched),
        ])
    }

    fn ready(&self, msg_id: &str) -> bool {
        self.core.is_ready(msg_id)
    }

    /// The task's reply, or None before it arrived.
    fn reply(&self, msg_id: &str) -> Option<PyReply> {
        self.core.reply(msg_id).map(|reply| PyReply { reply })
    }

    /// What is known of a task so far, or None for an unknown (or forgotten) msg_id.
    fn task(&self, msg_id: &str) -> Option<PyTaskInfo> {
        self.core.task(msg_id).map(|t| PyTaskInfo {
            engine: t.engine,
            submitted: t.submitted,
            stdout: t.stdout,
            stderr: t.stderr,
            outputs: serde_json::Value::from(t.outputs).to_string(),
            data_received: t.data_received,
            data_conflated: t.data_conflated,
            started: t.started,
            foreign: t.foreign,
        })
    }

    /// Pending published-data updates per msg_id (conflated), oldest first, each a list
    /// of frames. Taking them empties the pending list.
    fn take_data(&self, py: Python<'_>, msg_ids: Vec<String>) -> Vec<Vec<Vec<Py<PyBytes>>>> {
        self.core
            .take_data(&msg_ids)
            .iter()
            .map(|updates| updates.iter().map(|u| bytes_list(py, &u.buffers)).collect())
            .collect()
    }

    /// Like `take_data`, each update as `(published, frames)`: its header date (the
    /// engine's clock) tells a reader which updates a controller snapshot already holds.
    fn take_data_dated(
        &self,
        py: Python<'_>,
        msg_ids: Vec<String>,
    ) -> Vec<Vec<(String, Vec<Py<PyBytes>>)>> {
        self.core
            .take_data(&msg_ids)
            .iter()
            .map(|updates| {
                updates
                    .iter()
                    .map(|u| (u.published.clone(), bytes_list(py, &u.buffers)))
                    .collect()
            })
            .collect()
    }

    /// Files the IOPub of tasks this client did not send (another client's, or its own
    /// from before a reconnect) from now on: their output and data update live.
    fn follow(&self, msg_ids: Vec<String>) {
        self.core.follow(&msg_ids);
    }

    /// Live engines, id → uuid.
    fn engines(&self) -> PyResult<Vec<(i64, String)>> {
        self.core.engines().map_err(to_py)
    }

    /// The id of a live or recently dead engine.
    fn engine_id(&self, uuid: &str) -> Option<i64> {
        self.core.engine_id(uuid)
    }

    /// Waits for at least `n` engines; returns how many are registered.
    fn wait_for_engines(&self, py: Python<'_>, n: usize, timeout: f64) -> PyResult<usize> {
        let mut count = 0;
        let got = wait_released(py, Some(timeout), |s| {
            count = self.core.wait_for_engines(n, s)?;
            Ok((count >= n).then_some(count))
        })?;
        Ok(got.unwrap_or(count))
    }

    /// Sends a Hub query and waits for its reply. A reply arriving after `timeout` is
    /// dropped, never kept.
    fn hub_request(
        &self,
        py: Python<'_>,
        msg_type: &str,
        content: &str,
        timeout: f64,
    ) -> PyResult<PyHubReply> {
        let msg_id = self
            .core
            .hub_send(msg_type, json("content", content)?)
            .map_err(to_py)?;
        let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        let got = wait_released(py, Some(timeout), |s| {
            let last = Instant::now() + s >= deadline;
            self.core.take_hub_reply(&msg_id, s, last)
        });
        let reply = match got {
            Ok(Some(reply)) => reply,
            other => {
                // Timed out or interrupted: stop waiting for it, so a late reply is dropped.
                let _ = self.core.take_hub_reply(&msg_id, Duration::ZERO, true);
                other?;
                return Err(to_py(ClientError::HubTimeout {
                    msg_type: msg_type.to_owned(),
                    timeout_s: timeout,
                }));
            }
        };
        Ok(PyHubReply {
            msg_type: reply.header.msg_type.clone(),
            content: reply.content.to_string(),
            buffers: bytes_list(py, &reply.buffers),
        })
    }

    /// How many Hub replies are held or awaited (bounded: only while someone waits).
    fn hub_pending(&self) -> usize {
        self.core.hub_pending()
    }

    fn hub_shut_down(&self) -> bool {
        self.core.hub_shut_down()
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
    m.add_class::<PyReply>()?;
    m.add_class::<PyTaskInfo>()?;
    m.add_class::<PyHubReply>()?;
    m.add_class::<PyClientCore>()
}
