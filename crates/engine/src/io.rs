//! The I/O thread: owns the shell ROUTER, control ROUTER and IOPub XPUB, and sends
//! everything the executor queues, in queue order. Being the only sender is what keeps
//! "busy → outputs → reply → idle" in order across two sockets.
//!
//! Incoming requests are verified and decoded here; invalid ones are logged and dropped.
//! Control requests that must not wait behind a running task (abort, shutdown,
//! kernel_info) are answered here directly; the rest go to the executor.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use serde_json::{json, Value};

use corral_wire::Session;

use crate::outgoing::{conflate, Encoder, Outgoing, Target};
use crate::request::{AbortState, Channel, Request};

/// State shared by the I/O thread and the runtime handle.
#[derive(Debug, Default)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Set by a producer that has sent a wake-up frame not yet consumed.
    pub wake_pending: AtomicBool,
    pub aborts: Mutex<AbortState>,
    /// A `shutdown_request` was answered; the executor should stop.
    pub shutdown: AtomicBool,
    /// Arrival counter of shell requests.
    pub seq: AtomicU64,
}

/// Everything the thread owns.
pub struct IoThread {
    pub shell: zmq::Socket,
    pub control: zmq::Socket,
    pub iopub: zmq::Socket,
    pub wake: zmq::Socket,
    pub out_rx: Receiver<Outgoing>,
    pub shell_tx: Sender<Request>,
    pub control_tx: Sender<Request>,
    pub encoder: Encoder,
    pub session: Arc<Session>,
    pub engine_id: u64,
    pub shared: Arc<Shared>,
}

/// How many messages to take from one socket before looking at the others.
const BATCH: usize = 256;
/// How many queued outgoing operations are encoded (and conflated) together.
const OUT_BATCH: usize = 4096;

impl IoThread {
    pub fn run(mut self) {
        loop {
            self.drain_outgoing();
            if self.shared.stop.load(Ordering::Acquire) && self.out_rx.is_empty() {
                break;
            }
            let mut items = [
                self.shell.as_poll_item(zmq::POLLIN),
                self.control.as_poll_item(zmq::POLLIN),
                self.iopub.as_poll_item(zmq::POLLIN),
                self.wake.as_poll_item(zmq::POLLIN),
            ];
            if let Err(e) = zmq::poll(&mut items, 100) {
                tracing::warn!(error = %e, "engine poll failed");
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            if ready[3] {
                while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
                // Cleared before the drain at the top of the loop, so nothing is missed.
                self.shared.wake_pending.store(false, Ordering::Release);
            }
            if ready[1] {
                self.read(Channel::Control);
            }
            if ready[0] {
                self.read(Channel::Shell);
            }
            if ready[2] {
                self.read_subscriptions();
            }
        }
        tracing::debug!("engine I/O thread stopped");
    }

    /// Sends what the executor queued. When the network is slower than the task's
    /// `publish_data` calls, the queue holds several updates at once; those whose every key
    /// is published again later in the same task are dropped first (see [`conflate`]), so
    /// a reader that falls behind gets the newest values instead of a backlog.
    fn drain_outgoing(&mut self) {
        let mut batch = Vec::new();
        loop {
            batch.extend(self.out_rx.try_iter().take(OUT_BATCH));
            if batch.is_empty() {
                return;
            }
            conflate(&mut batch);
            for op in batch.drain(..) {
                let (target, frames) = self.encoder.encode(op);
                self.send(target, frames);
            }
        }
    }

    fn send(&self, target: Target, frames: Vec<Vec<u8>>) {
        let (sock, name) = match target {
            Target::Shell => (&self.shell, "shell"),
            Target::Control => (&self.control, "control"),
            Target::IoPub => (&self.iopub, "iopub"),
        };
        if let Err(e) = sock.send_multipart(frames, 0) {
            tracing::warn!(socket = name, error = %e, "engine send failed; message dropped");
        }
    }

    fn read(&mut self, channel: Channel) {
        for _ in 0..BATCH {
            let sock = match channel {
                Channel::Shell => &self.shell,
                Channel::Control => &self.control,
            };
            let Ok(frames) = sock.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
            let req = match Request::decode(frames, &self.session.signer, channel, seq) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(?channel, error = %e, "dropped an invalid request");
                    continue;
                }
            };
            tracing::debug!(?channel, msg_type = %req.header.msg_type, msg_id = %req.header.msg_id, "request");
            match channel {
                Channel::Shell => {
                    let _ = self.shell_tx.send(req);
                }
                Channel::Control => self.control(req),
            }
        }
    }

    /// Answers abort/shutdown/kernel_info at once; forwards other control requests.
    fn control(&mut self, req: Request) {
        let content = req.content();
        let reply = match req.header.msg_type.as_str() {
            "abort_request" => {
                let ids: Vec<String> = content
                    .get("msg_ids")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut aborts = self.shared.aborts.lock();
                if ids.is_empty() {
                    // Everything queued so far (its seq is below the current counter).
                    aborts.abort_upto(self.shared.seq.load(Ordering::Relaxed));
                } else {
                    aborts.abort_ids(ids);
                }
                ("abort_reply", json!({"status": "ok"}))
            }
            "shutdown_request" => {
                let restart = content
                    .get("restart")
                    .cloned()
                    .unwrap_or(Value::Bool(false));
                (
                    "shutdown_reply",
                    json!({"status": "ok", "restart": restart}),
                )
            }
            "kernel_info_request" => ("kernel_info_reply", kernel_info()),
            _ => {
                let _ = self.control_tx.send(req);
                return;
            }
        };
        let (msg_type, content) = reply;
        let content = serde_json::to_vec(&content).expect("JSON");
        let md = serde_json::to_vec(&json!({"engine": self.session.id})).expect("JSON");
        let parent = req.header_raw.clone();
        self.send(Target::IoPub, self.encoder.status_for("busy", &parent));
        if msg_type == "shutdown_reply" {
            // The Hub unregisters the engine when it sees this copy on IOPub.
            let topic = format!("engine.{}.shutdown", self.engine_id).into_bytes();
            let frames =
                self.encoder
                    .frames(vec![topic], msg_type, &parent, b"{}", &content, vec![]);
            self.send(Target::IoPub, frames);
        }
        let frames = self
            .encoder
            .frames(req.idents, msg_type, &parent, &md, &content, vec![]);
        self.send(Target::Control, frames);
        self.send(Target::IoPub, self.encoder.status_for("idle", &parent));
        if msg_type == "shutdown_reply" {
            self.shared.shutdown.store(true, Ordering::Release);
        }
    }

    /// XPUB subscription frames. ipykernel 7 greets each subscriber with a topic-less
    /// `iopub_welcome`; nobody in ipyparallel uses it and the stock Hub logs every one as
    /// an error ("Monitor message without topic"), so corral only consumes them.
    fn read_subscriptions(&mut self) {
        while let Ok(frame) = self.iopub.recv_bytes(zmq::DONTWAIT) {
            tracing::debug!(
                subscribe = frame.first() == Some(&1),
                "iopub subscription change"
            );
        }
    }
}

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": corral_wire::PROTOCOL_VERSION,
        "implementation": "corral",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"},
        "banner": "corral engine",
        "help_links": [],
    })
}
