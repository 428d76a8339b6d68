//! The IOPub relay: engines' XPUB/PUB sockets connect to a SUB here; everything valid is
//! re-published unchanged to stock clients on a PUB, and queued for each corral client on
//! the `corral_iopub` endpoint ([`crate::iopub_subscribers`]), which conflates published
//! data and never drops other output silently. Frames are shared between the two, not
//! copied. The hub hears about `shutdown_reply`s, which mean an engine is leaving.

use corral_wire::Signer;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::warn;

use crate::conflate::{DataMeta, Meta};
use crate::events::{HubEvent, HubSender, RecordEvent};
use crate::frame::{recv_message, send_message, Frame};
use crate::iopub_subscribers::Subscribers;
use crate::sockets::{parse, readable, HeaderIds, ParentIds};
use crate::stop::Stop;
use corral_wire::trace;

const POLL_MS: i64 = 50;
/// Poll period while a subscriber's send must be retried on a timer.
const RETRY_POLL_MS: i64 = 5;
/// During a burst, subscribers' acks (their credits) are read every this many messages.
const ACKS_EVERY: usize = 64;
/// Bytes of published-data messages waiting for the copier thread (see [`DataCopier`]);
/// past this a copy for the task record is dropped (a later update mostly supersedes it).
/// One message is always accepted when none waits, however big.
const DATA_COPY_BYTES: usize = 16 << 20;

/// Hands published data to the hub's task records on a thread of its own: an 8 MB array
/// copied on the relay thread made it fall behind engines publishing at full rate, and
/// ZeroMQ then queued their messages (by count, not bytes) in front of it. The relay hands
/// over shared frames and never waits; the arrays reach the records uncopied
/// (`Frame::into_bytes`), only the small JSON parts are copied here.
struct DataCopier {
    tx: crossbeam_channel::Sender<(Vec<Frame>, usize)>,
    queued: Arc<AtomicUsize>,
    dropped: u64,
}

impl DataCopier {
    fn start(hub: HubSender) -> DataCopier {
        let (tx, rx) = crossbeam_channel::bounded::<(Vec<Frame>, usize)>(1 << 14);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let spawned = std::thread::Builder::new()
            .name("corral-iopub-copy".into())
            .spawn(move || {
                for (parts, bytes) in rx {
                    // Large frames (the arrays) are kept, not copied: see `Frame::into_bytes`.
                    let parts = parts.into_iter().map(Frame::into_bytes).collect();
                    taken.fetch_sub(bytes, Ordering::SeqCst);
                    hub.send(HubEvent::Record(RecordEvent::Iopub { parts }));
                }
            });
        if let Err(error) = spawned {
            warn!(%error, "cannot start the IOPub copier thread: published data is not recorded");
        }
        DataCopier {
            tx,
            queued,
            dropped: 0,
        }
    }

    fn copy(&mut self, parts: Vec<Frame>) {
        let bytes: usize = parts.iter().map(|f| f.len()).sum();
        let before = self.queued.fetch_add(bytes, Ordering::SeqCst);
        let accepted = (before == 0 || before + bytes <= DATA_COPY_BYTES)
            && self.tx.try_send((parts, bytes)).is_ok();
        if !accepted {
            self.queued.fetch_sub(bytes, Ordering::SeqCst);
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_multiple_of(1000) {
                warn!(
                    dropped = self.dropped,
                    "published-data copies for task records dropped: the copier is behind"
                );
            }
        }
    }
}

pub(crate) struct IopubRelay {
    pub sub: zmq::Socket,
    pub publisher: zmq::Socket,
    pub subscribers: Subscribers,
    pub signer: Signer,
    pub hub: HubSender,
    pub stop: Arc<Stop>,
}

/// What conflation reads of a `data_message` besides its parent.
#[derive(Deserialize)]
struct DataFields {
    #[serde(default)]
    engine: Option<String>,
}
#[derive(Deserialize)]
struct DataKeys {
    #[serde(default)]
    keys: Vec<String>,
}

impl IopubRelay {
    pub(crate) fn run(mut self) {
        let mut copier = DataCopier::start(self.hub.clone());
        while !self.stop.is_set() {
            let timeout = if self.subscribers.needs_retry() {
                RETRY_POLL_MS
            } else {
                POLL_MS
            };
            let mut items = [
                self.sub.as_poll_item(zmq::POLLIN),
                self.subscribers.socket().as_poll_item(zmq::POLLIN),
            ];
            let any = readable(&mut items, timeout);
            let (from_engines, from_clients) = (items[0].is_readable(), items[1].is_readable());
            if any && from_clients {
                self.subscribers.on_requests();
            }
            if any && from_engines {
                let mut n = 0;
                while let Some(frames) = recv_message(&mut self.sub) {
                    let traced = self.forward(frames, &mut copier);
                    // Send at once what credits allow: only a reader that lags sees conflation.
                    self.subscribers.flush();
                    if let Some((point, msg_id)) = traced {
                        trace::point(point, &msg_id);
                    }
                    n += 1;
                    if n % ACKS_EVERY == 0 {
                        self.subscribers.on_requests();
                    }
                }
            }
            self.subscribers.flush();
        }
    }

    /// Verifies, records and forwards one engine message; with tracing on, returns the
    /// trace point its sending completes (see [`trace_points`]).
    fn forward(
        &mut self,
        mut frames: Vec<Frame>,
        copier: &mut DataCopier,
    ) -> Option<(&'static str, Vec<u8>)> {
        let arrived = trace::enabled().then(trace::now_ns);
        let d = match corral_wire::verify_frames(&frames, &self.signer) {
            Ok(d) => d,
            Err(error) => {
                warn!(socket = "iopub", %error, frames = frames.len(), "dropped invalid message");
                return None;
            }
        };
        let traced = arrived.and_then(|ns| {
            let (inp, out) = trace_points(&frames[d + 2], &frames[d + 5])?;
            // Published data by its own msg_id (a task publishes many), idle by its task's.
            let own = if inp == "k_data_in" { d + 2 } else { d + 3 };
            let msg_id = trace::msg_id_in(&frames[own]).to_vec();
            trace::point_at(inp, &msg_id, ns);
            Some((out, msg_id))
        });
        let header = &frames[d + 2];
        // Cheap pre-check before parsing: only shutdown replies interest the hub.
        if header.windows(14).any(|w| w == b"shutdown_reply") {
            if let Some(h) = parse::<HeaderIds>(header, "iopub", "header") {
                if h.msg_type == "shutdown_reply" {
                    let _ = self.hub.send(HubEvent::EngineShutdown(h.session));
                }
            }
        }
        // Output and published data the task records keep; parsed on the hub thread.
        let recorded: [&[u8]; 4] = [
            b"\"stream\"",
            b"\"error\"",
            b"\"execute_input\"",
            b"\"execute_result\"",
        ];
        if recorded
            .iter()
            .any(|t| header.windows(t.len()).any(|w| w == *t))
        {
            let _ = self.hub.send(HubEvent::Record(RecordEvent::Iopub {
                parts: frames[d + 2..]
                    .iter()
                    .map(|f| f.share().into_bytes())
                    .collect(),
            }));
        } else if header.windows(14).any(|w| w == b"\"data_message\"") {
            copier.copy(frames[d + 2..].iter().map(Frame::share).collect());
        }
        if !self.subscribers.is_empty() {
            let meta = Arc::new(meta_of(&frames, d));
            self.subscribers.fan_out(&frames, &meta);
        }
        if let Err(error) = send_message(&mut self.publisher, &mut frames) {
            warn!(socket = "iopub", %error, "publish failed");
        }
        traced
    }
}

/// The trace points (in, out) of an IOPub message worth tracing: `status: idle` and
/// published data, found by a byte scan of its header and content.
fn trace_points(header: &[u8], content: &[u8]) -> Option<(&'static str, &'static str)> {
    let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    if has(header, b"\"data_message\"") {
        Some(("k_data_in", "k_data_out"))
    } else if has(header, b"\"status\"") && has(content, b"\"idle\"") {
        Some(("k_idle_in", "k_idle_out"))
    } else {
        None
    }
}

/// The parent msg_id, and for a `data_message` its engine and keys: what a subscriber's
/// queue needs to conflate. Only small JSON frames are parsed, once per message.
fn meta_of(frames: &[Frame], d: usize) -> Meta {
    let parent = serde_json::from_slice::<ParentIds>(&frames[d + 3])
        .ok()
        .and_then(|p| p.msg_id);
    let header = &frames[d + 2];
    let is_data = header.windows(14).any(|w| w == b"\"data_message\"")
        && serde_json::from_slice::<HeaderIds>(header).is_ok_and(|h| h.msg_type == "data_message");
    let data = is_data.then(|| DataMeta {
        engine: serde_json::from_slice::<DataFields>(&frames[d + 4])
            .ok()
            .and_then(|m| m.engine)
            .unwrap_or_default(),
        keys: serde_json::from_slice::<DataKeys>(&frames[d + 5])
            .map(|c| c.keys)
            .unwrap_or_default(),
    });
    Meta { parent, data }
}
