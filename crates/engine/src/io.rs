//! The I/O thread: owns the shell ROUTER, control ROUTER and IOPub XPUB, and sends
//! everything the executor queues, in queue order. Being the only sender is what keeps
//! "busy → outputs → reply → idle" in order across two sockets.
//!
//! Incoming requests are verified, checked against replays and decoded here (see
//! [`Intake`]); anything rejected is logged and dropped. Control requests that must not
//! wait behind a running task (abort, shutdown, kernel_info) are answered here directly
//! (see [`crate::control`]); the rest go to the executor.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use serde_json::json;

use corral_wire::{trace, Session};

use crate::control::{self, ControlAnswer};
use crate::outgoing::{conflate, Encoder, Outgoing, Target};
use crate::request::{AbortState, Channel, Intake, Request};
use crate::zerocopy::{send_counted, COUNTED_FRAME};

/// State shared by the I/O thread and the runtime handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    /// Set by a producer that has sent a wake-up frame not yet consumed.
    pub(crate) wake_pending: AtomicBool,
    pub(crate) aborts: Mutex<AbortState>,
    /// A `shutdown_request` was answered; the executor should stop.
    pub(crate) shutdown: AtomicBool,
    /// Arrival counter of shell requests.
    pub(crate) seq: AtomicU64,
    /// Set with `stop` when the controller is gone: close without lingering.
    pub(crate) abandon: AtomicBool,
    /// Bytes of `Data` updates in the channel from the executor, not yet taken by the I/O
    /// thread (which bounds its own `pending` the same way). Over `data_bytes_limit`,
    /// `publish_data` waits.
    pub(crate) queued_bytes: AtomicUsize,
    /// Bytes of large IOPub frames ZeroMQ holds and has not yet written (see `zerocopy`).
    /// Over `data_bytes_limit`, the I/O thread holds further output in `pending`.
    pub(crate) in_flight_bytes: Arc<AtomicUsize>,
    /// The bound of each of the two counters above, in bytes.
    pub(crate) data_bytes_limit: usize,
    /// Requests handed to the executor, and `End`s (`status: idle`) taken from its queue,
    /// both counted by the I/O thread. `Begin` and `Reply` are queued without a wake-up,
    /// so while a request is unfinished the I/O thread polls (see [`quiet_poll_ms`]).
    pub(crate) dispatched: AtomicU64,
    pub(crate) ended: AtomicU64,
}

impl Shared {
    pub(crate) fn new(data_bytes_limit: usize) -> Self {
        Shared {
            data_bytes_limit,
            ..Shared::default()
        }
    }

    /// Whether ZeroMQ already holds as many published bytes as the engine allows.
    pub(crate) fn in_flight_full(&self) -> bool {
        self.in_flight_bytes.load(Ordering::Acquire) >= self.data_bytes_limit
    }
}

/// Everything the thread owns.
pub(crate) struct IoThread {
    pub(crate) shell: zmq::Socket,
    pub(crate) control: zmq::Socket,
    pub(crate) iopub: zmq::Socket,
    pub(crate) wake: zmq::Socket,
    pub(crate) out_rx: Receiver<Outgoing>,
    pub(crate) shell_tx: Sender<Request>,
    pub(crate) control_tx: Sender<Request>,
    pub(crate) encoder: Encoder,
    /// An encoded IOPub message the socket refused (its queue to the controller is full),
    /// sent first once the socket is writable again.
    pub(crate) blocked: Option<Vec<Vec<u8>>>,
    /// Operations queued behind `blocked` or held while too many bytes are in flight
    /// (`Shared::in_flight_full`), not yet encoded, so they can still be conflated.
    pub(crate) pending: Vec<Outgoing>,
    /// [`Outgoing::data_bytes`] of everything in `pending`.
    pub(crate) pending_bytes: usize,
    pub(crate) intake: Intake,
    pub(crate) session: Arc<Session>,
    pub(crate) engine_id: u64,
    pub(crate) shared: Arc<Shared>,
}

/// How many messages to take from one socket before looking at the others.
const BATCH: usize = 256;
/// How many queued outgoing operations are encoded (and conflated) together.
const OUT_BATCH: usize = 4096;
/// How long the loop sleeps while output is held for bytes in flight: libzmq frees them
/// from its own thread without waking this one. 8 MB leave in about 5 ms at 1.5 GB/s.
const IN_FLIGHT_POLL_MS: i64 = 1;
/// The poll period while a request is unfinished, right after something was sent; it
/// doubles on each quiet poll up to [`IDLE_POLL_MS`]. The executor queues `status: busy`
/// and the reply without waking this thread (the idle right after the reply wakes it), so
/// a short task's busy, reply and idle leave in one wake-up (W2 latency), a long task's
/// busy within about this period, and a long task costs a handful of polls, not 1,000/s.
const BUSY_POLL_MS: i64 = 1;
/// The poll period otherwise.
const IDLE_POLL_MS: i64 = 100;

/// The poll period after `quiet` polls in a row that found nothing to send.
fn quiet_poll_ms(quiet: u32) -> i64 {
    (BUSY_POLL_MS << quiet.min(7)).min(IDLE_POLL_MS)
}
/// How many operations may wait behind a full IOPub queue. Conflation keeps this small
/// for a task that republishes its keys; one publishing ever-new keys fills it, and then
/// the executor's bounded channel holds Python back instead.
const MAX_PENDING: usize = 65_536;
/// How long a stopping engine keeps trying to flush IOPub to a controller that is not
/// reading.
const FLUSH_ON_STOP: std::time::Duration = std::time::Duration::from_secs(2);

impl IoThread {
    pub(crate) fn run(mut self) {
        let mut stopping_since: Option<std::time::Instant> = None;
        // Polls in a row that found nothing (see `quiet_poll_ms`).
        let mut quiet: u32 = 0;
        loop {
            self.drain_outgoing();
            if self.shared.stop.load(Ordering::Acquire) && self.out_rx.is_empty() {
                let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                if (self.blocked.is_none() && self.pending.is_empty())
                    || since.elapsed() > FLUSH_ON_STOP
                    || self.shared.abandon.load(Ordering::Acquire)
                {
                    break;
                }
            }
            let iopub_events = if self.blocked.is_some() {
                zmq::POLLIN | zmq::POLLOUT
            } else {
                zmq::POLLIN
            };
            // Output held for bytes in flight (not for a full socket) is retried soon, and
            // an unfinished request's busy soon (see `quiet_poll_ms`).
            let timeout = if self.blocked.is_none() && !self.pending.is_empty() {
                IN_FLIGHT_POLL_MS
            } else if self.shared.dispatched.load(Ordering::Relaxed)
                > self.shared.ended.load(Ordering::Relaxed)
            {
                quiet_poll_ms(quiet)
            } else {
                IDLE_POLL_MS
            };
            let mut items = [
                self.shell.as_poll_item(zmq::POLLIN),
                self.control.as_poll_item(zmq::POLLIN),
                self.iopub.as_poll_item(iopub_events),
                self.wake.as_poll_item(zmq::POLLIN),
            ];
            if let Err(e) = zmq::poll(&mut items, timeout) {
                tracing::warn!(error = %e, "engine poll failed");
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            if ready.iter().any(|&r| r) {
                quiet = 0;
            } else {
                quiet = quiet.saturating_add(1);
            }
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
        if self.shared.abandon.load(Ordering::Acquire) {
            for sock in [&self.shell, &self.control, &self.iopub] {
                let _ = sock.set_linger(0);
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
    ///
    /// The same holding happens while ZeroMQ holds `data_bytes_limit` bytes of large
    /// frames not yet written: ZeroMQ's high-water mark counts messages, and 32 messages
    /// of 8 MB are 256 MB. Nothing is dropped but superseded `Data` updates.
    fn drain_outgoing(&mut self) {
        loop {
            if let Some(frames) = self.blocked.take() {
                if let Err(frames) = self.try_send_iopub(frames) {
                    self.blocked = Some(frames);
                    self.absorb_queue(self.pending_room());
                    return;
                }
            }
            self.absorb_queue(OUT_BATCH);
            if self.pending.is_empty() {
                return;
            }
            let mut ops = std::mem::take(&mut self.pending).into_iter();
            while let Some(op) = ops.next() {
                if op.carries_payload() && self.shared.in_flight_full() {
                    self.pending = std::iter::once(op).chain(ops).collect();
                    self.absorb_queue(self.pending_room());
                    return;
                }
                self.pending_bytes -= op.data_bytes();
                let traced = if trace::enabled() {
                    self.encoder.trace_point(&op)
                } else {
                    None
                };
                let (target, frames) = self.encoder.encode(op);
                let traced = match traced {
                    Some(("e_data_out", _)) => Some(("e_data_out", Encoder::own_msg_id(&frames))),
                    other => other,
                };
                if target != Target::IoPub {
                    self.send(target, frames);
                } else if let Err(frames) = self.try_send_iopub(frames) {
                    self.blocked = Some(frames);
                    self.pending = ops.collect();
                    self.absorb_queue(self.pending_room());
                    return;
                }
                if let Some((point, msg_id)) = traced {
                    trace::point(point, &msg_id);
                }
            }
        }
    }

    fn pending_room(&self) -> usize {
        MAX_PENDING.saturating_sub(self.pending.len())
    }

    /// Moves up to `max_ops` queued operations into `pending`, dropping superseded
    /// updates (see [`conflate`]), so that while IOPub is held `publish_data` keeps
    /// running and only the newest values wait. It stops once `pending` holds more than
    /// the byte bound of updates that supersede nothing (ever-new keys): the rest stays in
    /// the channel, whose own byte bound then makes `publish_data` wait.
    ///
    /// Only a new `Data` update can supersede anything, so `pending` is conflated only
    /// when one came in: a queue of replies and status messages behind a full IOPub
    /// socket (thousands of queued tasks) is not scanned again on every wake-up.
    fn absorb_queue(&mut self, max_ops: usize) {
        let limit = self.shared.data_bytes_limit;
        let mut new_data = false;
        for _ in 0..max_ops {
            if self.pending_bytes > limit {
                break;
            }
            let Ok(op) = self.out_rx.try_recv() else {
                break;
            };
            let bytes = op.data_bytes();
            match op {
                Outgoing::End { .. } => {
                    self.shared.ended.fetch_add(1, Ordering::Relaxed);
                }
                Outgoing::Data { .. } => new_data = true,
                _ => {}
            }
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.pending_bytes += bytes;
            self.pending.push(op);
            if self.pending_bytes > limit {
                self.conflate_pending();
            }
        }
        if new_data {
            self.conflate_pending();
        }
    }

    /// Drops superseded updates from `pending`, and their bytes from its count.
    fn conflate_pending(&mut self) {
        self.pending_bytes -= conflate(&mut self.pending);
    }

    /// Sends on IOPub unless its queue is full; then hands the frames back. Only the
    /// first frame can be refused (libzmq checks the high-water mark per message), so it
    /// goes alone and the rest follow it, large ones without a copy and counted in flight.
    fn try_send_iopub(&mut self, mut frames: Vec<Vec<u8>>) -> Result<(), Vec<Vec<u8>>> {
        if frames.is_empty() {
            return Ok(());
        }
        let rest = frames.split_off(1);
        let more = if rest.is_empty() { 0 } else { zmq::SNDMORE };
        match self.iopub.send(&frames[0][..], zmq::DONTWAIT | more) {
            Ok(()) => {
                if let Err(e) = self.send_rest_iopub(rest) {
                    tracing::warn!(socket = "iopub", error = %e, "engine send failed");
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

    /// The frames after the first of an IOPub message (which libzmq has then accepted).
    fn send_rest_iopub(&mut self, rest: Vec<Vec<u8>>) -> Result<(), zmq::Error> {
        let last = rest.len();
        for (i, frame) in rest.into_iter().enumerate() {
            let flags = if i + 1 < last { zmq::SNDMORE } else { 0 };
            if frame.len() >= COUNTED_FRAME {
                send_counted(&mut self.iopub, frame, &self.shared.in_flight_bytes, flags)?;
            } else {
                self.iopub.send(frame, flags)?;
            }
        }
        Ok(())
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
            let req = match self.intake.accept(frames, channel, seq) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(?channel, error = %e, "dropped a request");
                    continue;
                }
            };
            tracing::debug!(?channel, msg_type = %req.header.msg_type, msg_id = %req.header.msg_id, "request");
            trace::point("e_req_in", req.header.msg_id.as_bytes());
            match channel {
                Channel::Shell => {
                    if self.shell_tx.send(req).is_ok() {
                        self.shared.dispatched.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Channel::Control => self.control(req),
            }
        }
    }

    /// Answers abort/shutdown/kernel_info at once; forwards other control requests.
    fn control(&mut self, req: Request) {
        let answer = control::answer(&req, &mut self.shared.aborts.lock());
        let (msg_type, content, shutdown) = match answer {
            ControlAnswer::Reply {
                msg_type,
                content,
                shutdown,
            } => (msg_type, content, shutdown),
            ControlAnswer::Forward => {
                if self.control_tx.send(req).is_ok() {
                    self.shared.dispatched.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        };
        let content = serde_json::to_vec(&content).expect("JSON");
        let md = serde_json::to_vec(&json!({"engine": self.session.id})).expect("JSON");
        let parent = req.header_raw.clone();
        self.send(Target::IoPub, self.encoder.status_for("busy", &parent));
        if shutdown {
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
        if shutdown {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_request_is_polled_soon_then_ever_less_often() {
        assert_eq!(quiet_poll_ms(0), BUSY_POLL_MS);
        assert_eq!(quiet_poll_ms(1), 2 * BUSY_POLL_MS);
        assert!(quiet_poll_ms(5) < IDLE_POLL_MS);
        assert_eq!(quiet_poll_ms(7), IDLE_POLL_MS);
        assert_eq!(quiet_poll_ms(u32::MAX), IDLE_POLL_MS);
    }
}
