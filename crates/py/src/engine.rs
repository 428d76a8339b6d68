//! Bindings of corral-engine: `EngineRuntime` (the engine's sockets and threads) and
//! `EngineRequest` (one request to execute). Forwarders only; every wait releases the GIL
//! and polls in short slices so Ctrl-C becomes `KeyboardInterrupt`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_engine::{
    Channel, EngineError, EngineOptions, EngineRuntime, Next, Outgoing, Request,
    DEFAULT_DATA_BYTES_LIMIT,
};
use corral_wire::EngineConnection;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyConnectionError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

/// One request: raw JSON frames (bytes) and buffers, plus what routing needs, kept in Rust.
#[pyclass(frozen, module = "corral._core")]
pub struct EngineRequest {
    inner: Request,
}

#[pymethods]
impl EngineRequest {
    /// `"shell"` or `"control"`.
    #[getter]
    fn channel(&self) -> &'static str {
        match self.inner.channel {
            Channel::Shell => "shell",
            Channel::Control => "control",
        }
    }
    #[getter]
    fn msg_type(&self) -> &str {
        &self.inner.header.msg_type
    }
    #[getter]
    fn msg_id(&self) -> &str {
        &self.inner.header.msg_id
    }
    /// The header as received (JSON bytes).
    #[getter]
    fn header<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.header_raw)
    }
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.metadata_raw)
    }
    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.content_raw)
    }
    #[getter]
    fn buffers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.buffers.iter().map(|b| PyBytes::new(py, b)))
    }
    fn __repr__(&self) -> String {
        format!(
            "<EngineRequest {} {} on {}>",
            self.inner.header.msg_type,
            self.inner.header.msg_id,
            self.channel()
        )
    }
}

/// The engine's connection to a controller.
#[pyclass(frozen, module = "corral._core", name = "EngineRuntime")]
pub struct PyEngineRuntime {
    rt: Arc<EngineRuntime>,
}

fn frames_from(list: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in list.try_iter()? {
        let item = item?;
        if let Ok(b) = item.cast::<PyBytes>() {
            out.push(b.as_bytes().to_vec());
        } else {
            out.push(PyBuffer::<u8>::get(&item)?.to_vec(item.py())?);
        }
    }
    Ok(out)
}

fn json_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = obj.cast::<PyString>() {
        Ok(s.to_str()?.as_bytes().to_vec())
    } else if let Ok(b) = obj.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else {
        Err(PyValueError::new_err("expected JSON as str or bytes"))
    }
}

// The signature above spells the default as a literal, so Python sees its value.
const _: () = assert!(DEFAULT_DATA_BYTES_LIMIT == 16_777_216);

impl PyEngineRuntime {
    /// Queues; when the queue is full, waits for room without the GIL.
    fn queue(&self, py: Python<'_>, op: Outgoing) -> PyResult<()> {
        match self.rt.try_queue(op) {
            Ok(()) => Ok(()),
            Err(op) => py
                .detach(|| self.rt.queue(op))
                .map_err(|e| PyRuntimeError::new_err(e.to_string())),
        }
    }
}

#[pymethods]
impl PyEngineRuntime {
    /// Reads the engine connection file at `path`, registers (waiting up to `timeout`
    /// seconds for the controller) and starts the I/O threads. An empty key in the file
    /// is refused (`PermissionError`) unless `insecure`. `lost_grace`: seconds the
    /// heartbeat connection may stay down before the controller counts as gone.
    /// `requested_id`: the engine id to ask for (an MPI rank), granted when free.
    /// `max_data_bytes`: bytes of `publish_data` updates held unsent, and again in flight
    /// (see `EngineOptions::data_bytes_limit`).
    #[staticmethod]
    #[pyo3(signature = (
        path, timeout = 5.0, queue_capacity = 65536, insecure = false, lost_grace = 3.0,
        requested_id = None, max_data_bytes = 16_777_216,
    ))]
    // Python keyword arguments, one per option, as the signature above lists them.
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        path: &str,
        timeout: f64,
        queue_capacity: usize,
        insecure: bool,
        lost_grace: f64,
        requested_id: Option<u64>,
        max_data_bytes: usize,
    ) -> PyResult<Self> {
        if max_data_bytes == 0 {
            return Err(PyValueError::new_err(
                "max_data_bytes must be at least 1 (it bounds the bytes of unsent publications)",
            ));
        }
        let conn = EngineConnection::read(Path::new(path))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let opts = EngineOptions {
            registration_timeout: Duration::from_secs_f64(timeout.max(0.0)),
            queue_capacity,
            data_bytes_limit: max_data_bytes,
            file_hint: path.to_string(),
            lost_grace: Duration::from_secs_f64(lost_grace.max(0.0)),
            insecure,
            requested_id,
            ..EngineOptions::default()
        };
        let rt = py
            .detach(|| EngineRuntime::connect(&conn, opts))
            .map_err(|e| match e {
                EngineError::EmptyKey { .. } => PyPermissionError::new_err(e.to_string()),
                e => PyConnectionError::new_err(e.to_string()),
            })?;
        let rt = Arc::new(rt);
        // A SIGKILL asked for by a client: unregister and flush first (see corral_engine::signal).
        let weak = Arc::downgrade(&rt);
        corral_engine::before_kill(move || {
            if let Some(rt) = weak.upgrade() {
                rt.close(true);
            }
        });
        Ok(PyEngineRuntime { rt })
    }

    #[getter]
    fn uuid(&self) -> &str {
        &self.rt.uuid
    }
    #[getter]
    fn id(&self) -> u64 {
        self.rt.id
    }
    /// Whether the controller shows published data on its dashboard, so `publish_data`
    /// should send a preview (`corral_preview`); building one costs the engine CPU.
    #[getter]
    fn data_preview(&self) -> bool {
        self.rt.data_preview
    }
    /// Heartbeat period from the registration reply, in milliseconds.
    #[getter]
    fn hb_period(&self) -> u64 {
        self.rt.hb_period_ms
    }

    /// The next request, `None` after `timeout` seconds, or the string `"shutdown"`
    /// (a shutdown_request was answered) or `"lost"` (the controller is gone; see
    /// `controller_lost` for why).
    #[pyo3(signature = (timeout = None))]
    fn next_request(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        loop {
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
                None => Duration::from_millis(100),
            };
            let next = py
                .detach(|| self.rt.next(slice))
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
            match next {
                Next::Request(r) => {
                    return Ok(Py::new(py, EngineRequest { inner: *r })?.into_any());
                }
                Next::Shutdown => return Ok(PyString::new(py, "shutdown").into_any().unbind()),
                Next::ControllerLost(_) => {
                    return Ok(PyString::new(py, "lost").into_any().unbind())
                }
                Next::Timeout => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(py.None());
            }
        }
    }

    /// Why the controller counts as gone (its heartbeat connection closed and stayed
    /// down, or no ping for 50 periods), or `None` while it does not.
    fn controller_lost(&self) -> Option<String> {
        self.rt.controller_lost()
    }

    /// A task starts: `status: busy`, and it becomes the parent of what is published.
    fn begin(&self, py: Python<'_>, req: &EngineRequest) -> PyResult<()> {
        corral_engine::task_started();
        let parent = req.inner.header_raw.clone();
        self.queue(py, Outgoing::Begin { parent })
    }

    /// A task ends (after its reply): `status: idle`.
    fn end(&self, py: Python<'_>, req: &EngineRequest) -> PyResult<()> {
        corral_engine::task_ended();
        let parent = req.inner.header_raw.clone();
        self.queue(py, Outgoing::End { parent })
    }

    /// Replies to `req` on its own socket with its idents; `content`/`metadata` are JSON.
    #[pyo3(signature = (req, msg_type, content, metadata, buffers = None))]
    fn reply(
        &self,
        py: Python<'_>,
        req: &EngineRequest,
        msg_type: &str,
        content: &Bound<'_, PyAny>,
        metadata: &Bound<'_, PyAny>,
        buffers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let op = Outgoing::Reply {
            channel: req.inner.channel,
            idents: req.inner.idents.clone(),
            parent: req.inner.header_raw.clone(),
            msg_type: msg_type.to_string(),
            content: json_bytes(content)?,
            metadata: json_bytes(metadata)?,
            buffers: buffers.map(frames_from).transpose()?.unwrap_or_default(),
        };
        self.queue(py, op)
    }

    /// IOPub message on `engine.<id>.<topic>`, parented to the running task.
    #[pyo3(signature = (topic, msg_type, content, engine_md = true, buffers = None))]
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        msg_type: &str,
        content: &Bound<'_, PyAny>,
        engine_md: bool,
        buffers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let buffers = buffers.map(frames_from).transpose()?.unwrap_or_default();
        let op = self
            .rt
            .publish_op(topic, msg_type, json_bytes(content)?, engine_md, buffers);
        self.queue(py, op)
    }

    /// A `stream` message (`name` is `stdout` or `stderr`).
    fn stream(&self, py: Python<'_>, name: &str, text: &str) -> PyResult<()> {
        let op = self.rt.stream_op(name, text);
        self.queue(py, op)
    }

    /// A `data_message` for the running task: `keys` (the dict's keys, str() of each) and
    /// the frames of the pickled dict. Returns as soon as it is queued.
    /// `preview`: the values' JSON summary for the controller's dashboard
    /// (`corral.engine.data_preview`), sent as the content's `corral_preview`.
    #[pyo3(signature = (keys, frames, preview = None))]
    fn publish_data(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        frames: &Bound<'_, PyAny>,
        preview: Option<&str>,
    ) -> PyResult<()> {
        let mut ks = Vec::new();
        for k in keys.try_iter()? {
            let k = k?;
            ks.push(match k.cast::<PyString>() {
                Ok(s) => s.to_str()?.to_string(),
                Err(_) => k.str()?.to_str()?.to_string(),
            });
        }
        let buffers = frames_from(frames)?;
        let preview = match preview.map(serde_json::from_str::<serde_json::Value>) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => return Err(PyValueError::new_err(format!("preview is not JSON: {e}"))),
            None => None,
        };
        self.queue(
            py,
            Outgoing::Data {
                keys: ks,
                buffers,
                preview,
            },
        )
    }

    /// Unregisters (if asked), sends what is queued, and stops the threads.
    #[pyo3(signature = (unregister = true))]
    fn close(&self, py: Python<'_>, unregister: bool) {
        py.detach(|| self.rt.close(unregister));
    }
}

/// Routes the engine's Rust logs (`tracing`) to stderr at `level` (once per process).
#[pyfunction]
#[pyo3(signature = (level = "warn"))]
fn engine_init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngineRuntime>()?;
    m.add_class::<EngineRequest>()?;
    m.add_function(wrap_pyfunction!(engine_init_logging, m)?)?;
    Ok(())
}
