//! The MUX (direct) and control relays: a client-side and an engine-side ROUTER, frames
//! moved between them with the first two routing frames swapped (docs/PROTOCOL.md §1.3):
//! `[client, engine, msg..]` → `[engine, client, msg..]` and back. Only the header (and,
//! for replies, the parent's msg_id) is parsed; every message's signature is checked.

use corral_wire::{trace, Session, Signer};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use crate::events::{HubEvent, HubSender, RecordEvent};
use crate::sockets::{
    checked, is_full, parse, readable, recv_frames, send_bytes, send_routed, HeaderIds, ParentIds,
};
use crate::stop::Stop;
use corral_wire::{error_content, reply_type};

const POLL_MS: i64 = 50;
/// How often held requests are retried.
const RETRY_POLL_MS: i64 = 5;
/// How long a request for an engine whose socket is not (yet) connected is held before the
/// client gets an `EngineError`: an engine goes live on its first heartbeat, which can beat
/// its shell connection to the relay by a few milliseconds.
const HOLD_FOR: Duration = Duration::from_secs(2);

/// A request the engine-side ROUTER could not route yet.
struct Held {
    until: Instant,
    frames: Vec<zmq::Message>,
    delimiter: usize,
    engine: String,
    msg_id: String,
    msg_type: String,
}

pub(crate) struct Relay {
    /// `mux` or `control`, for logs.
    pub name: &'static str,
    pub client: zmq::Socket,
    pub engine: zmq::Socket,
    pub session: Arc<Session>,
    /// Where MUX traffic is reported for queue counts (none for control).
    pub hub: Option<HubSender>,
    pub stop: Arc<Stop>,
}

/// The relay loop's mutable state: requests held for engines not connected yet, in order.
#[derive(Default)]
struct HeldRequests(VecDeque<Held>);

impl Relay {
    fn signer(&self) -> &Signer {
        &self.session.signer
    }

    pub(crate) fn run(self) {
        let mut held = HeldRequests::default();
        while !self.stop.is_set() {
            self.retry_held(&mut held);
            let mut items = [
                self.client.as_poll_item(zmq::POLLIN),
                self.engine.as_poll_item(zmq::POLLIN),
            ];
            let timeout = if held.0.is_empty() {
                POLL_MS
            } else {
                RETRY_POLL_MS
            };
            if !readable(&mut items, timeout) {
                continue;
            }
            let (from_client, from_engine) = (items[0].is_readable(), items[1].is_readable());
            if from_client {
                while let Some(frames) = recv_frames(&self.client) {
                    self.to_engine(frames, &mut held);
                }
            }
            if from_engine {
                while let Some(frames) = recv_frames(&self.engine) {
                    self.to_client(frames);
                }
            }
        }
    }

    fn to_engine(&self, mut frames: Vec<zmq::Message>, held: &mut HeldRequests) {
        let arrived = trace::enabled().then(trace::now_ns);
        let Some(d) = checked(&frames, self.signer(), self.name) else {
            return;
        };
        if d < 2 {
            warn!(
                relay = self.name,
                "dropped request without an engine identity"
            );
            return;
        }
        let Some(header) = parse::<HeaderIds>(&frames[d + 2], self.name, "header") else {
            return;
        };
        if let Some(ns) = arrived {
            trace::point_at("k_req_in", header.msg_id.as_bytes(), ns);
        }
        let engine = String::from_utf8_lossy(&frames[1]).into_owned();
        if let Some(hub) = &self.hub {
            let _ = hub.send(HubEvent::Record(RecordEvent::Request {
                queue: "mux",
                client: frames[0].to_vec(),
                engine: Some(engine.clone()),
                parts: frames[d + 2..]
                    .iter()
                    .map(|f| bytes::Bytes::copy_from_slice(f))
                    .collect(),
            }));
        }
        frames.swap(0, 1);
        let request = Held {
            until: Instant::now() + HOLD_FOR,
            frames,
            delimiter: d,
            engine,
            msg_id: header.msg_id,
            msg_type: header.msg_type,
        };
        // Keep per-engine order: behind a held request, later ones wait too.
        if held.0.iter().any(|h| h.engine == request.engine) {
            held.0.push_back(request);
        } else if let Some(request) = self.forward(request) {
            debug!(
                relay = self.name,
                engine = request.engine,
                "engine not connected yet; holding request"
            );
            held.0.push_back(request);
        }
    }

    /// Sends a request to its engine; gives it back if the engine cannot be reached.
    fn forward(&self, mut request: Held) -> Option<Held> {
        let frames = std::mem::take(&mut request.frames);
        match send_routed(&self.engine, frames) {
            Ok(()) => {
                trace::point("k_req_out", request.msg_id.as_bytes());
                if let Some(hub) = &self.hub {
                    let _ = hub.send(HubEvent::MuxRequest {
                        engine: request.engine,
                        msg_id: request.msg_id,
                    });
                }
                None
            }
            Err((error, frames)) if is_full(&error) => {
                // The engine is not reading: answer now rather than wait on it.
                warn!(
                    relay = self.name,
                    engine = request.engine,
                    msg_id = request.msg_id,
                    "engine not reading (at its high-water mark); request refused"
                );
                let evalue = format!(
                    "engine {:?} is not reading its {} queue (high-water mark reached)",
                    request.engine, self.name
                );
                self.refuse(frames, request.delimiter, &request.msg_type, &evalue);
                None
            }
            Err((_, frames)) => {
                request.frames = frames;
                Some(request)
            }
        }
    }

    /// Retries held requests in order; those past their deadline get an `EngineError`.
    fn retry_held(&self, held: &mut HeldRequests) {
        let mut blocked: Vec<String> = Vec::new();
        let mut still = VecDeque::with_capacity(held.0.len());
        while let Some(request) = held.0.pop_front() {
            if blocked.contains(&request.engine) {
                still.push_back(request);
                continue;
            }
            if let Some(request) = self.forward(request) {
                if Instant::now() >= request.until {
                    warn!(
                        relay = self.name,
                        engine = request.engine,
                        msg_id = request.msg_id,
                        "engine unreachable"
                    );
                    let evalue = format!(
                        "engine {:?} is not connected to the {} relay",
                        request.engine, self.name
                    );
                    self.refuse(
                        request.frames,
                        request.delimiter,
                        &request.msg_type,
                        &evalue,
                    );
                } else {
                    blocked.push(request.engine.clone());
                    still.push_back(request);
                }
            }
        }
        held.0 = still;
    }

    /// Answers a request its engine cannot take (not connected, or not reading) with an
    /// `EngineError` reply, so the client does not wait forever. `frames` are the swapped
    /// frames `[engine, client, ..]`.
    fn refuse(&self, frames: Vec<zmq::Message>, d: usize, msg_type: &str, evalue: &str) {
        let Some(parent) = parse::<Value>(&frames[d + 2], self.name, "header") else {
            return;
        };
        let mut msg = self
            .session
            .msg(&reply_type(msg_type), error_content("EngineError", evalue));
        msg.parent_header = parent;
        msg.metadata = json!({"status": "error", "dependencies_met": true});
        msg.idents = vec![frames[1].to_vec(), frames[0].to_vec()];
        send_bytes(&self.client, self.session.encode(&msg), self.name);
    }

    fn to_client(&self, mut frames: Vec<zmq::Message>) {
        let arrived = trace::enabled().then(trace::now_ns);
        let Some(d) = checked(&frames, self.signer(), self.name) else {
            return;
        };
        if d < 2 {
            warn!(relay = self.name, "dropped reply without a client identity");
            return;
        }
        let Some(parent) = parse::<ParentIds>(&frames[d + 3], self.name, "parent_header") else {
            return;
        };
        let traced = arrived.map(|ns| (ns, trace::msg_id_in(&frames[d + 3]).to_vec()));
        if let Some((ns, msg_id)) = &traced {
            trace::point_at("k_reply_in", msg_id, *ns);
        }
        let engine = String::from_utf8_lossy(&frames[0]).into_owned();
        // The hub hears of the reply before the client does, so a query the client sends
        // next (queue_status, result_request) already counts it.
        if let Some(hub) = &self.hub {
            let _ = hub.send(HubEvent::Record(RecordEvent::Reply {
                engine: Some(engine.clone()),
                parts: frames[d + 2..]
                    .iter()
                    .map(|f| bytes::Bytes::copy_from_slice(f))
                    .collect(),
            }));
            if let Some(msg_id) = parent.msg_id {
                let _ = hub.send(HubEvent::MuxReply { engine, msg_id });
            }
        }
        frames.swap(0, 1);
        let sent = send_routed(&self.client, frames);
        if let Some((_, msg_id)) = &traced {
            trace::point("k_reply_out", msg_id);
        }
        if let Err((error, _)) = sent {
            if is_full(&error) {
                warn!(
                    relay = self.name,
                    "client not reading (at its high-water mark); reply dropped"
                );
            } else {
                debug!(relay = self.name, %error, "client gone; reply dropped");
            }
        }
    }
}
