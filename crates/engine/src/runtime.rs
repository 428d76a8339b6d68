//! [`EngineRuntime`]: registers, starts the heart and the I/O thread, then hands requests
//! to the executor and takes its replies and publications. Every method is safe to call
//! from any thread; none waits for the network (only [`EngineRuntime::next`] waits, for
//! a request, with a timeout).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use serde_json::{json, Value};

use corral_wire::{iso_now, reply_type, EchoedMetadata, EngineConnection, Session};

use crate::error::{zerr, EngineError, Result};
use crate::heart::{self, HeartState};
use crate::io::{IoThread, Shared};
use crate::liveness::{self, Observed};
use crate::outgoing::{Encoder, Outgoing};
use crate::registration;
use crate::request::{Channel, Intake, Request};
use corral_curve::CurveClient;

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How long to wait for `registration_reply`.
    pub registration_timeout: Duration,
    /// How long to wait for it once the controller's port accepted the connection (a busy
    /// controller registering hundreds of engines answers late; see `registration`).
    pub registration_patience: Duration,
    /// Bound of the outgoing queue: a producer faster than the network blocks here.
    pub queue_capacity: usize,
    /// Bytes of published data (`publish_data`) the engine holds in each of two places:
    /// queued and not yet handed to ZeroMQ, and handed to ZeroMQ but not yet written. A
    /// publisher faster than the network first has its unsent updates replaced by newer
    /// ones of the same keys (latest wins, no waiting); only when the unsent updates
    /// themselves exceed this (ever-new keys) does `publish_data` wait.
    pub data_bytes_limit: usize,
    /// The connection file the settings came from, named in errors.
    pub file_hint: String,
    /// IOPub high-water mark: messages ZeroMQ queues toward the controller before the
    /// engine holds (and conflates) the rest itself. ZeroMQ counts messages, not bytes,
    /// but frames of 64 KiB and more are also bounded in bytes (`data_bytes_limit`, see
    /// `zerocopy`), so 8 MB publications no longer pile up here (they queued gigabytes at
    /// 1,000 before that bound). Not smaller: every task sends `busy` and `idle`, and at 32
    /// an engine fed thousands of tasks at once stalled on a full socket every 16 tasks,
    /// polling for room (W3's DirectView part: 130 → 57 µs of engine CPU per task at 256).
    pub iopub_hwm: i32,
    /// How long the heartbeat connection may stay down before the controller counts as
    /// gone (see `liveness`): long enough for a controller restarted on the same ports.
    /// A controller run with `--reuse`/`--restore` asks for longer at registration
    /// (`corral_restart_grace`), and the longer of the two applies.
    pub lost_grace: Duration,
    /// Run with an empty cluster key (no message signing) when the connection file has
    /// one. Off by default: an empty key is refused.
    pub insecure: bool,
    /// The engine id to ask the controller for (an MPI rank, as ipengine's `--mpi` asks);
    /// the controller grants it when free, else gives another.
    pub requested_id: Option<u64>,
}

/// Default of [`EngineOptions::data_bytes_limit`]: two 8 MB arrays in flight keep a
/// loopback link busy (W6), while the engine stays within tens of MB of its own size.
pub const DEFAULT_DATA_BYTES_LIMIT: usize = 16 << 20;

/// How often a publisher waiting for the byte bound looks again.
const BYTES_WAIT_SLICE: Duration = Duration::from_millis(1);

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            registration_timeout: Duration::from_secs(5),
            registration_patience: registration::CONNECTED_PATIENCE,
            queue_capacity: 65_536,
            data_bytes_limit: DEFAULT_DATA_BYTES_LIMIT,
            file_hint: "<unknown>".into(),
            iopub_hwm: 256,
            lost_grace: Duration::from_secs(3),
            insecure: false,
            requested_id: None,
        }
    }
}

/// What [`EngineRuntime::next`] found.
#[derive(Debug)]
pub enum Next {
    Request(Box<Request>),
    Timeout,
    /// A `shutdown_request` was answered.
    Shutdown,
    /// The controller is gone; the text says how that was decided (see `liveness`).
    ControllerLost(String),
}

pub struct EngineRuntime {
    pub uuid: String,
    pub id: u64,
    pub hb_period_ms: u64,
    /// Whether published data should carry a preview (see `Registered::data_preview`).
    pub data_preview: bool,
    session: Arc<Session>,
    out_tx: Sender<Outgoing>,
    waker: Mutex<zmq::Socket>,
    shared: Arc<Shared>,
    heart: Arc<HeartState>,
    shell_rx: Receiver<Request>,
    control_rx: Receiver<Request>,
    registration: Mutex<Option<zmq::Socket>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    lost_grace: Duration,
    _ctx: zmq::Context,
}

impl EngineRuntime {
    /// Registers with the controller named by `conn` and starts the threads.
    pub fn connect(conn: &EngineConnection, opts: EngineOptions) -> Result<Self> {
        // Before the context exists: libzmq 4.3.4 makes the key pair through a libsodium
        // call that is only safe while no CURVE socket is working (libzmq issue #4241).
        let curve = match conn.curve_server() {
            Some(server) => Some(
                CurveClient::new(&server, |n| std::env::var(n).ok()).map_err(|reason| {
                    EngineError::Curve {
                        file: opts.file_hint.clone(),
                        reason,
                    }
                })?,
            ),
            None => None,
        };
        if conn.key.is_empty() && curve.is_some() {
            // What a stock controller with `enable_curve` writes: CURVE instead of signing.
            tracing::info!(
                file = %opts.file_hint,
                "the cluster key is empty: messages are not signed; CurveZMQ encrypts them"
            );
        } else if conn.key.is_empty() {
            if !opts.insecure {
                return Err(EngineError::EmptyKey {
                    file: opts.file_hint.clone(),
                });
            }
            tracing::warn!(
                file = %opts.file_hint,
                "INSECURE: the cluster key is empty, so messages are neither signed nor \
                 checked; anyone who can reach the controller's ports can run code here"
            );
        }
        let ctx = zmq::Context::new();
        let session = Arc::new(Session::new(conn.key.as_bytes()));
        // The registration socket has a context of its own, held only by the socket: when
        // `close` drops the socket, that context is terminated, which waits (up to the
        // socket's linger) until the `unregistration_request` has left. Nothing else
        // terminates the shared context before the process exits, and a message still
        // queued then is lost: the controller would take ~30 s of missed heartbeats to
        // drop the engine.
        let (reg_sock, reg) = registration::register(
            &zmq::Context::new(),
            conn,
            &session,
            &opts.file_hint,
            opts.registration_timeout,
            opts.registration_patience,
            curve.as_ref(),
            opts.requested_id,
        )?;
        if let Some(wanted) = opts.requested_id.filter(|&w| w != reg.id) {
            tracing::warn!(
                requested = wanted,
                engine_id = reg.id,
                "did not get the requested engine id"
            );
        }
        if curve.is_some() {
            tracing::info!("using CurveZMQ encryption");
        }
        let uuid = session.id.clone();
        tracing::info!(engine_id = reg.id, %uuid, "registered");

        let heart_state = HeartState::new();
        let heart = heart::spawn(
            &ctx,
            uuid.as_bytes(),
            &conn.url(conn.hb_ping),
            &conn.url(conn.hb_pong),
            heart_state.clone(),
            curve.as_ref(),
        )?;

        let router = |what: &'static str| -> Result<zmq::Socket> {
            let s = ctx.socket(zmq::ROUTER).map_err(zerr(what))?;
            s.set_identity(uuid.as_bytes()).map_err(zerr(what))?;
            s.set_linger(2000).map_err(zerr(what))?;
            if let Some(curve) = &curve {
                curve.apply(&s).map_err(zerr(what))?;
            }
            Ok(s)
        };
        let shell = router("shell socket")?;
        shell
            .connect(&conn.url(conn.mux))
            .map_err(zerr("shell connect mux"))?;
        shell
            .connect(&conn.url(conn.task))
            .map_err(zerr("shell connect task"))?;
        if !conn.broadcast.is_empty() {
            let port = conn.broadcast[(reg.id as usize) % conn.broadcast.len()];
            shell
                .connect(&conn.url(port))
                .map_err(zerr("shell connect broadcast"))?;
        }
        let control = router("control socket")?;
        control
            .connect(&conn.url(conn.control))
            .map_err(zerr("control connect"))?;
        let mut iopub = ctx.socket(zmq::XPUB).map_err(zerr("iopub socket"))?;
        iopub
            .set_identity(uuid.as_bytes())
            .map_err(zerr("iopub identity"))?;
        iopub.set_linger(2000).map_err(zerr("iopub linger"))?;
        iopub
            .set_sndhwm(opts.iopub_hwm)
            .map_err(zerr("iopub hwm"))?;
        crate::sockopt::set_xpub_nodrop(&mut iopub).map_err(zerr("iopub nodrop"))?;
        if let Some(curve) = &curve {
            curve.apply(&iopub).map_err(zerr("iopub curve"))?;
        }
        iopub
            .connect(&conn.url(conn.iopub))
            .map_err(zerr("iopub connect"))?;

        let wake_url = format!("inproc://corral-engine-wake-{uuid}");
        let wake = ctx.socket(zmq::PULL).map_err(zerr("wake socket"))?;
        wake.bind(&wake_url).map_err(zerr("wake bind"))?;
        let waker = ctx.socket(zmq::PUSH).map_err(zerr("waker socket"))?;
        waker.connect(&wake_url).map_err(zerr("waker connect"))?;

        let (out_tx, out_rx) = bounded(opts.queue_capacity.max(1));
        let (shell_tx, shell_rx) = unbounded();
        let (control_tx, control_rx) = unbounded();
        let shared = Arc::new(Shared::new(opts.data_bytes_limit));
        let io = IoThread {
            shell,
            control,
            iopub,
            wake,
            out_rx,
            shell_tx,
            control_tx,
            encoder: Encoder::new(session.clone(), reg.id),
            blocked: None,
            pending: Vec::new(),
            pending_bytes: 0,
            intake: Intake::new(session.signer.clone()),
            session: session.clone(),
            engine_id: reg.id,
            shared: shared.clone(),
        };
        let io = std::thread::Builder::new()
            .name("corral-engine-io".into())
            .spawn(move || io.run())
            .expect("spawning a thread");

        let rt = EngineRuntime {
            uuid,
            id: reg.id,
            hb_period_ms: reg.hb_period_ms,
            data_preview: reg.data_preview,
            session,
            out_tx,
            waker: Mutex::new(waker),
            shared,
            heart: heart_state,
            shell_rx,
            control_rx,
            registration: Mutex::new(Some(reg_sock)),
            threads: Mutex::new(vec![heart, io]),
            // A controller meant to be restarted asks for longer; never shorter than asked
            // for here.
            lost_grace: opts.lost_grace.max(reg.restart_grace),
            _ctx: ctx,
        };
        rt.queue(Outgoing::Status { state: "starting" })?;
        Ok(rt)
    }

    /// An IOPub message on topic `engine.<id>.<suffix>`, parented to the running task.
    pub fn publish_op(
        &self,
        suffix: &str,
        msg_type: &str,
        content: Vec<u8>,
        engine_md: bool,
        buffers: Vec<Vec<u8>>,
    ) -> Outgoing {
        Outgoing::Publish {
            topic: format!("engine.{}.{suffix}", self.id).into_bytes(),
            msg_type: msg_type.to_string(),
            content,
            engine_md,
            buffers,
        }
    }

    /// A `stream` message (`name` = stdout/stderr); it carries no `metadata.engine`.
    pub fn stream_op(&self, name: &str, text: &str) -> Outgoing {
        let content = serde_json::to_vec(&json!({"name": name, "text": text})).expect("JSON");
        self.publish_op(name, "stream", content, false, Vec::new())
    }

    /// Queues without blocking; gives the operation back when the queue is full (or closed),
    /// or when it is a `Data` update and the unsent updates already exceed
    /// [`EngineOptions::data_bytes_limit`].
    // The "error" is the operation itself, handed back to be retried: boxing it would cost
    // an allocation on the publish path for nothing.
    #[allow(clippy::result_large_err)]
    pub fn try_queue(&self, op: Outgoing) -> std::result::Result<(), Outgoing> {
        let bytes = op.data_bytes();
        if bytes > 0 && self.queued_bytes_full() {
            return Err(op);
        }
        self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        // `status: busy` and the reply wake nobody: the busy leaves with the task's first
        // output or its idle (`End`, queued right after the reply), or once the I/O thread
        // polls (see `io::quiet_poll_ms`). One thread hand-off per task instead of three.
        let wake = !matches!(op, Outgoing::Begin { .. } | Outgoing::Reply { .. });
        match self.out_tx.try_send(op) {
            Ok(()) => {
                if wake {
                    self.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(op)) | Err(TrySendError::Disconnected(op)) => {
                self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Err(op)
            }
        }
    }

    /// Queues, waiting while the queue is full (the network is slower than the producer),
    /// or, for a `Data` update, while the unsent updates exceed the byte bound.
    pub fn queue(&self, op: Outgoing) -> Result<()> {
        let op = match self.try_queue(op) {
            Ok(()) => return Ok(()),
            Err(op) => op,
        };
        let bytes = op.data_bytes();
        if bytes > 0 {
            // The I/O thread takes updates off the channel as fast as it can drop
            // superseded ones or send; only ever-new keys at a slow network keep it full.
            while self.queued_bytes_full() {
                if self.shared.stop.load(Ordering::Acquire) {
                    return Err(EngineError::Closed);
                }
                self.wake();
                std::thread::sleep(BYTES_WAIT_SLICE);
            }
        }
        self.shared.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if self.out_tx.send(op).is_err() {
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(EngineError::Closed);
        }
        self.wake();
        Ok(())
    }

    /// Whether the unsent `Data` updates hold as many bytes as allowed. One update always
    /// fits, however big, so a single large publication is never refused.
    fn queued_bytes_full(&self) -> bool {
        self.shared.queued_bytes.load(Ordering::Acquire) >= self.shared.data_bytes_limit
    }

    fn wake(&self) {
        if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.lock().send(&b""[..], zmq::DONTWAIT) {
                tracing::warn!(error = %e, "could not wake the I/O thread");
            }
        }
    }

    /// The next request to execute, control requests first. Aborted shell requests are
    /// answered here (`status: aborted`) and skipped.
    pub fn next(&self, timeout: Duration) -> Result<Next> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.shutdown.load(Ordering::Acquire) {
                return Ok(Next::Shutdown);
            }
            if let Some(why) = self.controller_lost() {
                return Ok(Next::ControllerLost(why));
            }
            if let Ok(req) = self.control_rx.try_recv() {
                return Ok(Next::Request(Box::new(req)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_millis(50));
            let req = select! {
                recv(self.control_rx) -> r => r.ok(),
                recv(self.shell_rx) -> r => r.ok(),
                default(slice) => None,
            };
            match req {
                Some(req)
                    if req.channel == Channel::Shell && self.shared.aborts.lock().take(&req) =>
                {
                    self.answer_aborted(&req)?;
                }
                Some(req) => return Ok(Next::Request(Box::new(req))),
                None if left.is_zero() => return Ok(Next::Timeout),
                None => {}
            }
        }
    }

    /// Why the controller counts as gone, or `None` while it does not (see `liveness`).
    /// Cheap: three atomic loads.
    pub fn controller_lost(&self) -> Option<String> {
        let seen = Observed {
            now_ms: self.heart.now_ms(),
            last_ping_ms: self.heart.last_ping_ms.load(Ordering::Relaxed),
            disconnected_ms: self.heart.disconnected_ms.load(Ordering::Acquire),
        };
        liveness::verdict(seen, self.hb_period_ms, self.lost_grace)
    }

    fn answer_aborted(&self, req: &Request) -> Result<()> {
        let md = reply_metadata(&req.metadata(), &self.uuid, "aborted", &iso_now());
        let msg_type = reply_type(&req.header.msg_type);
        self.queue(Outgoing::Begin {
            parent: req.header_raw.clone(),
        })?;
        self.queue(Outgoing::Reply {
            channel: req.channel,
            idents: req.idents.clone(),
            parent: req.header_raw.clone(),
            msg_type,
            content: br#"{"status": "aborted"}"#.to_vec(),
            metadata: serde_json::to_vec(&md).expect("JSON"),
            buffers: vec![],
        })?;
        self.queue(Outgoing::End {
            parent: req.header_raw.clone(),
        })
    }

    /// Sends `unregistration_request` (if asked), flushes the queue, stops the threads.
    pub fn close(&self, unregister: bool) {
        if let Some(sock) = self.registration.lock().take() {
            if unregister {
                if let Err(e) = registration::unregister(&sock, &self.session, self.id) {
                    tracing::warn!(error = %e, "could not unregister");
                }
            }
            if self.controller_lost().is_some() {
                let _ = sock.set_linger(0);
            }
            // Dropping the socket terminates its own context: the unregistration is sent
            // (or the linger passes) before this returns.
            drop(sock);
        }
        // Nobody will read what is still queued toward a controller that is gone: do not
        // hold the exit for the sockets' linger.
        let abandon = self.controller_lost().is_some();
        self.shared.abandon.store(abandon, Ordering::Release);
        self.shared.stop.store(true, Ordering::Release);
        self.heart.stop.store(true, Ordering::Release);
        // A last wake-up; the I/O thread may already be gone, so a failure is fine.
        let _ = self.waker.lock().send(&b""[..], zmq::DONTWAIT);
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EngineRuntime {
    fn drop(&mut self) {
        self.close(false);
    }
}

/// Reply metadata as ipyparallel's kernel writes it (docs/PROTOCOL.md §6.1).
pub(crate) fn reply_metadata(request_md: &Value, uuid: &str, status: &str, started: &str) -> Value {
    EchoedMetadata::read(request_md).reply_metadata(uuid, status, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_metadata_defaults_and_copies() {
        let md = reply_metadata(&json!({"label": "x", "is_broadcast": true}), "u", "ok", "t");
        assert_eq!(md["label"], "x");
        assert_eq!(md["is_broadcast"], true);
        assert_eq!(md["original_msg_id"], "");
        assert_eq!(md["engine"], "u");
    }
}
