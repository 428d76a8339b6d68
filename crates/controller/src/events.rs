//! What the relay, scheduler and heartbeat threads tell the hub, and what the hub tells
//! them, over bounded channels that a sender never waits on.
//!
//! Into the hub, two kinds of events share one ordered channel (a record copy must reach
//! the hub before the accounting event that refers to it):
//! - copies of relayed messages ([`RecordEvent`]) are a cache for queries and can be big:
//!   they are capped by bytes in flight ([`RECORD_BYTES`], and [`IOPUB_RECORD_BYTES`] of
//!   them for IOPub copies: published arrays can come at GB/s while the hub is busy, and a
//!   later update mostly supersedes a dropped one) and by the channel; past either they
//!   are dropped with a warning (ipyparallel's own record store culls too);
//! - liveness and queue-accounting events are tiny, and the hub applies millions a second,
//!   so the channel ([`HUB_EVENTS`]) fills only if the hub thread is wedged: then they are
//!   dropped with an error log each, never silently and never by blocking the relay that
//!   forwards the message (blocking would stall every peer for one stuck thread).

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{error, warn};

/// Events the channel into the hub holds. The hub drains it every few milliseconds, so
/// this absorbs bursts of millions a second; its slots are allocated up front (~6 MB).
pub(crate) const HUB_EVENTS: usize = 1 << 16;
/// Bytes of message copies allowed on their way to the hub.
pub(crate) const RECORD_BYTES: usize = 256 << 20;
/// Of those, bytes of IOPub copies (output, published data).
pub(crate) const IOPUB_RECORD_BYTES: usize = 16 << 20;
/// Capacity of the hub's channels to the heartbeat and the schedulers (engine events, one
/// or two per registration or death).
pub(crate) const ENGINE_EVENTS: usize = 1 << 14;

/// Into the hub thread.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HubEvent {
    /// First pong from an identity (ipyparallel's `new_heart`).
    NewHeart(String),
    /// An identity stopped answering pings (`stopped_heart`).
    StoppedHeart(String),
    /// An engine announced `shutdown_reply` on IOPub: it is going away.
    EngineShutdown(String),
    /// A direct (MUX) request went to an engine.
    MuxRequest { engine: String, msg_id: String },
    /// A direct reply came back for `msg_id`.
    MuxReply { engine: String, msg_id: String },
    /// A load-balanced task arrived at the scheduler.
    TaskSubmitted { msg_id: String },
    /// The scheduler placed a task on an engine (`task_destination`).
    TaskAssigned { engine: String, msg_id: String },
    /// The task's reply came back from its engine.
    TaskDone { engine: String, msg_id: String },
    /// The scheduler failed the task itself (engine died, impossible targets).
    TaskFailed {
        engine: Option<String>,
        msg_id: String,
    },
    /// A copy of a relayed message for the task record store (parsed on the hub thread).
    Record(RecordEvent),
}

/// Copies of relayed messages: `parts` are the frames after the signature, i.e.
/// `[header, parent_header, metadata, content, buffers..]`, already verified. Shared
/// bytes, so the record store (and its database writer) keep them without copying.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordEvent {
    /// A request from a client; `queue` is `mux` or `task`.
    Request {
        queue: &'static str,
        client: Vec<u8>,
        engine: Option<String>,
        parts: Vec<Bytes>,
    },
    /// A reply to a request (its parent names the request).
    Reply {
        engine: Option<String>,
        parts: Vec<Bytes>,
    },
    /// An IOPub message parented to a request (stream, error, execute_input/result).
    Iopub { parts: Vec<Bytes> },
}

/// Into the task and broadcast schedulers: the live engine set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineEvent {
    Up { id: u32, uuid: String },
    Down { uuid: String },
}

/// Into the heartbeat thread.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HeartCommand {
    /// Stop tracking an identity (the hub unregistered it), so that a later pong from it
    /// is reported as a new heart again.
    Forget(String),
}

impl RecordEvent {
    fn is_iopub(&self) -> bool {
        matches!(self, RecordEvent::Iopub { .. })
    }

    fn bytes(&self) -> usize {
        let parts = match self {
            RecordEvent::Request { parts, .. }
            | RecordEvent::Reply { parts, .. }
            | RecordEvent::Iopub { parts } => parts,
        };
        parts.iter().map(Bytes::len).sum()
    }
}

/// The sending end of the channel into the hub; [`HubSender::send`] never blocks.
#[derive(Clone, Debug)]
pub(crate) struct HubSender {
    tx: Sender<HubEvent>,
    record_bytes: Arc<AtomicUsize>,
    byte_limit: usize,
    iopub_bytes: Arc<AtomicUsize>,
    iopub_limit: usize,
    dropped_records: Arc<AtomicU64>,
}

/// The hub's end: counts record bytes back out as it takes them.
#[derive(Debug)]
pub(crate) struct HubReceiver {
    rx: Receiver<HubEvent>,
    record_bytes: Arc<AtomicUsize>,
    iopub_bytes: Arc<AtomicUsize>,
}

pub(crate) fn hub_channel(capacity: usize, byte_limit: usize) -> (HubSender, HubReceiver) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let record_bytes = Arc::new(AtomicUsize::new(0));
    let iopub_bytes = Arc::new(AtomicUsize::new(0));
    (
        HubSender {
            tx,
            record_bytes: record_bytes.clone(),
            byte_limit,
            iopub_bytes: iopub_bytes.clone(),
            iopub_limit: IOPUB_RECORD_BYTES.min(byte_limit),
            dropped_records: Arc::new(AtomicU64::new(0)),
        },
        HubReceiver {
            rx,
            record_bytes,
            iopub_bytes,
        },
    )
}

impl HubSender {
    /// Queues `event` for the hub without waiting; see the module doc for what is
    /// dropped when the hub falls behind. True when queued.
    pub(crate) fn send(&self, event: HubEvent) -> bool {
        let (bytes, iopub) = match &event {
            HubEvent::Record(r) => (r.bytes(), r.is_iopub()),
            _ => (0, false),
        };
        if bytes > 0 {
            if iopub && !reserve(&self.iopub_bytes, bytes, self.iopub_limit) {
                self.record_dropped("IOPub copies over their byte limit");
                return false;
            }
            if !reserve(&self.record_bytes, bytes, self.byte_limit) {
                if iopub {
                    self.iopub_bytes.fetch_sub(bytes, Ordering::SeqCst);
                }
                self.record_dropped("copies over their byte limit");
                return false;
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Full(event)) | Err(TrySendError::Disconnected(event)) => {
                self.record_bytes.fetch_sub(bytes, Ordering::SeqCst);
                if iopub {
                    self.iopub_bytes.fetch_sub(bytes, Ordering::SeqCst);
                }
                match event {
                    HubEvent::Record(_) => self.record_dropped("hub channel full"),
                    other => error!(event = ?other, "hub event lost: the hub is not keeping up"),
                }
                false
            }
        }
    }

    fn record_dropped(&self, why: &'static str) {
        let n = self.dropped_records.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(10_000) {
            warn!(
                dropped = n,
                why, "task record copies dropped: the hub is behind"
            );
        }
    }
}

/// Adds `bytes` to `counter` unless that would pass `limit`; true when added.
fn reserve(counter: &AtomicUsize, bytes: usize, limit: usize) -> bool {
    let before = counter.fetch_add(bytes, Ordering::SeqCst);
    if before + bytes > limit {
        counter.fetch_sub(bytes, Ordering::SeqCst);
        return false;
    }
    true
}

impl HubReceiver {
    pub(crate) fn try_recv(&self) -> Result<HubEvent, TryRecvError> {
        let event = self.rx.try_recv()?;
        if let HubEvent::Record(r) = &event {
            self.record_bytes.fetch_sub(r.bytes(), Ordering::SeqCst);
            if r.is_iopub() {
                self.iopub_bytes.fetch_sub(r.bytes(), Ordering::SeqCst);
            }
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iopub(bytes: usize) -> HubEvent {
        HubEvent::Record(RecordEvent::Iopub {
            parts: vec![vec![0; bytes].into()],
        })
    }

    #[test]
    fn iopub_copies_have_their_own_smaller_byte_limit_and_free_it_when_taken() {
        let (tx, rx) = hub_channel(16, 256 << 20);
        let big = IOPUB_RECORD_BYTES / 2;
        assert!(tx.send(iopub(big)));
        assert!(tx.send(iopub(big)));
        assert!(
            !tx.send(iopub(big)),
            "past the IOPub limit the copy is dropped"
        );
        let request = HubEvent::Record(RecordEvent::Request {
            queue: "mux",
            client: vec![],
            engine: None,
            parts: vec![vec![0; big].into()],
        });
        assert!(
            tx.send(request),
            "requests are not held back by IOPub copies"
        );
        rx.try_recv().unwrap();
        assert!(tx.send(iopub(big)), "taking a copy frees its bytes");
    }
}
