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
    /// An encoded IOPub message the socket refused (its queue to the controller is full),
    /// sent first once the socket is writable again.
    pub blocked: Option<Vec<Vec<u8>>>,
    /// Operations queued behind `blocked`, not yet encoded, so they can still be conflated.
    pub pending: Vec<Outgoing>,
    pub session: Arc<Session>,
    pub engine_id: u64,
    pub shared: Arc<Shared>,
}

/// How many messages to take from one socket before looking at the others.
const BATCH: usize = 256;
/// How many queued outgoing operations are encoded (and conflated) together.
const OUT_BATCH: usize = 4096;
/// How many operations may wait behind a full IOPub queue. Conflation keeps this small
/// for a task that republishes its keys; one publishing ever-new keys fills it, and then
/// the executor's bounded channel holds Python back instead.
const MAX_PENDING: usize = 65_536;
/// How long a stopping engine keeps trying to flush IOPub to a controller that is not
/// reading.
const FLUSH_ON_STOP: std::time::Duration = std::time::Duration::from_secs(2);

impl IoThread {
    pub fn run(mut self) {
        let mut stopping_since: Option<std::time::Instant> = None;
        loop {
            self.drain_outgoing();
            if self.shared.stop.load(Ordering::Acquire) && self.out_rx.is_empty() {
                let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                if self.blocked.is_none() || since.elapsed() > FLUSH_ON_STOP {
                    break;
                }
            }
            let iopub_events = if self.blocked.is_some() {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            let mut items = [
                self.shell.as_poll_item(zmq::POLLIN),
                self.control.as_poll_item(zmq::POLLIN),
                self.iopub.as_poll_item(iopub_events),
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

    /// Sends what the executor queued, in order. The IOPub socket never drops
    /// (`ZMQ_XPUB_NODROP`): when its queue to the controller is full, the message waits in
    /// `blocked` and later operations in `pending`, where updates whose every key is
    /// published again later in the same task are dropped (see [`conflate`]). So a slow
    /// controller or network gets the newest values instead of a backlog, and the task's
    /// last publication and `status: idle` are never lost.
    fn drain_outgoing(&mut self) {
        loop {
            if let Some(frames) = self.blocked.take() {
                if let Err(frames) = self.try_send_iopub(frames) {
                    self.blocked = Some(frames);
                    self.absorb_queue();
                    return;
                }
            }
            self.pending.extend(self.out_rx.try_iter().take(OUT_BATCH));
            if self.pending.is_empty() {
                return;
            }
            conflate(&mut self.pending);
            let mut ops = std::mem::take(&mut self.pending).into_iter();
            while let Some(op) = ops.next() {
                let (target, frames) = self.encoder.encode(op);
                if target != Target::IoPub {
                    self.send(target, frames);
                } else if let Err(frames) = self.try_send_iopub(frames) {
                    self.blocked = Some(frames);
                    self.pending = ops.collect();
                    self.absorb_queue();
                    return;
                }
            }
        }
    }

    /// While IOPub is blocked, moves queued operations into `pending` (conflating them),
    /// so `publish_data` keeps running at full speed and only the newest values wait.
    fn absorb_queue(&mut self) {
        let room = MAX_PENDING.saturating_sub(self.pending.len());
        if room > 0 {
            self.pending.extend(self.out_rx.try_iter().take(room));
            conflate(&mut self.pending);
        }
    }

    /// Sends on IOPub unless its queue is full; then hands the frames back. Only the
    /// first frame can be refused (libzmq checks the high-water mark per message), so it
    /// goes alone and the rest follow it.
    fn try_send_iopub(&self, mut frames: Vec<Vec<u8>>) -> Result<(), Vec<Vec<u8>>> {
        if frames.is_empty() {
            return Ok(());
        }
        let rest = frames.split_off(1);
        let more = if rest.is_empty() { 0 } else { zmq::SNDMORE };
        match self.iopub.send(&frames[0][..], zmq::DONTWAIT | more) {
            Ok(()) => {
                if !rest.is_empty() {
                    if let Err(e) = self.iopub.send_multipart(rest, 0) {
                        tracing::warn!(socket = "iopub", error = %e, "engine send failed");
                    }
                }
                Ok(())
            }
            Err(zmq::Error::EAGAIN) => {
                frames.extend(rest);
                Err(frames)
            }
            Err(e) => {
                tracing::warn!(socket = "iopub", error = %e, "engine send failed; message dropped");
                Ok(())
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
                    // Everything that arrived before this request (a lower seq); the
                    // counter itself is the seq of the NEXT request, which must run.
                    aborts.abort_upto(req.seq);
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
