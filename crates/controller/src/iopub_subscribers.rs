//! The corral IOPub endpoint (`corral_iopub` in the client connection file): engines'
//! IOPub for corral clients, with a queue per subscriber instead of a PUB's shared,
//! silently dropping one (docs/PROTOCOL.md §11).
//!
//! Why a ROUTER and credits: a PUB (or XPUB) drops a slow subscriber's messages at its
//! high-water mark without telling anyone, and a high-water mark counts messages, not
//! bytes: 1000 messages can be 8 KB of status or 8 GB of arrays. Here each client's DEALER
//! subscribes with `iopub_subscribe_request`; the controller sends to it only while the
//! bytes it sent and the client has not acknowledged (`iopub_ack`, once per receive round)
//! are under a window. What does not fit waits in that client's [`SubscriberQueue`], where
//! published data is conflated and everything else is kept up to a byte budget, past which
//! the client is cut off with an explicit notice (`iopub_cutoff`). So per subscriber the
//! controller holds at most window + budget (+ one message), whatever the client does, and
//! a fast client never waits for a slow one. ROUTER_MANDATORY turns a departed client into
//! EHOSTUNREACH, which removes its state; one stuck with a full window is probed every
//! [`PROBE_EVERY`] so that its departure is noticed too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_wire::{DigestHistory, Message, Session};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::conflate::{CutOff, Kind, Meta, Queued, SubscriberQueue};
use crate::frame::{recv_message, send_message, Frame};

/// How often a subscriber whose window is full gets a tiny probe (to learn it is gone).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Limits per subscriber; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes sent and not yet acknowledged.
    pub window: usize,
    /// Bytes queued (after conflation) before a cut-off.
    pub budget: usize,
}

struct Subscriber {
    queue: SubscriberQueue<Frame>,
    /// Sizes of the messages sent and not acknowledged, oldest first.
    in_flight: VecDeque<usize>,
    in_flight_bytes: usize,
    /// The last ack or (re)subscription, and the last probe sent.
    heard: Instant,
    probed: Instant,
    /// The socket refused a send (its own high-water mark): retry on a short timer.
    blocked: bool,
}

impl Subscriber {
    fn new(budget: usize, now: Instant) -> Self {
        Subscriber {
            queue: SubscriberQueue::new(budget),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            heard: now,
            probed: now,
            blocked: false,
        }
    }
}

/// Outcome of sending one message to a subscriber.
enum Sent {
    Ok,
    /// Nothing was sent: the socket is at its high-water mark for that peer.
    Full,
    /// The peer is not connected any more.
    Gone,
}

pub(crate) struct Subscribers {
    router: zmq::Socket,
    session: Arc<Session>,
    digests: DigestHistory,
    subs: HashMap<Vec<u8>, Subscriber>,
    limits: Limits,
}

impl Subscribers {
    pub(crate) fn new(router: zmq::Socket, session: Arc<Session>, limits: Limits) -> Self {
        Subscribers {
            router,
            session,
            digests: DigestHistory::default(),
            subs: HashMap::new(),
            limits,
        }
    }

    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.router
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// True when a send must be retried on a timer (no event will say when).
    pub(crate) fn needs_retry(&self) -> bool {
        self.subs
            .values()
            .any(|s| s.blocked || (!s.queue.is_empty() && s.in_flight_bytes >= self.limits.window))
    }

    /// Handles every request waiting on the ROUTER: subscribe, ack, stats, unsubscribe.
    pub(crate) fn on_requests(&mut self) {
        while let Some(frames) = recv_message(&mut self.router) {
            self.on_request(frames);
        }
    }

    fn on_request(&mut self, frames: Vec<Frame>) {
        let Some(id) = frames.first().map(|f| f.to_vec()) else {
            return;
        };
        let msg = match Message::decode(&frames[1..], &self.session.signer) {
            Ok(m) => m,
            Err(error) => {
                warn!(socket = "corral_iopub", %error, "dropped invalid message");
                return;
            }
        };
        let now = Instant::now();
        let msg_type = msg.msg_type().to_owned();
        if msg_type == "iopub_ack" {
            // Acks are not replayable in a harmful way (at worst credit returns early), and
            // checking their digests would fill the history with them.
            let Some(sub) = self.subs.get_mut(&id) else {
                return;
            };
            let n = msg
                .content
                .get("messages")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            for _ in 0..n {
                match sub.in_flight.pop_front() {
                    Some(bytes) => sub.in_flight_bytes -= bytes,
                    None => break,
                }
            }
            sub.heard = now;
            return;
        }
        let sig = frames
            .iter()
            .position(|f| &f[..] == corral_wire::DELIMITER)
            .and_then(|d| frames.get(d + 1));
        if let Err(error) = self.digests.check(sig.map(|f| &f[..]).unwrap_or_default()) {
            warn!(socket = "corral_iopub", %error, msg_type, "dropped replayed message");
            return;
        }
        match msg_type.as_str() {
            "iopub_subscribe_request" => {
                let fresh = Subscriber::new(self.limits.budget, now);
                if self.subs.insert(id.clone(), fresh).is_some() {
                    info!(
                        socket = "corral_iopub",
                        "subscriber subscribed again: its queue restarts"
                    );
                } else {
                    debug!(
                        socket = "corral_iopub",
                        subscribers = self.subs.len() + 1,
                        "subscriber added"
                    );
                }
                let content = json!({
                    "status": "ok",
                    "window_bytes": self.limits.window,
                    "budget_bytes": self.limits.budget,
                });
                self.reply(&id, &msg, "iopub_subscribe_reply", content);
            }
            "iopub_stats_request" => {
                let content = match self.subs.get(&id) {
                    Some(sub) => {
                        let s = sub.queue.stats;
                        json!({
                            "status": "ok",
                            "forwarded": s.forwarded,
                            "conflated": s.conflated,
                            "cut_offs": s.cut_offs,
                            "dropped": s.dropped,
                            "queued": sub.queue.len(),
                            "queued_bytes": sub.queue.bytes(),
                            "in_flight_bytes": sub.in_flight_bytes,
                            "subscribers": self.subs.len(),
                        })
                    }
                    None => json!({"status": "error", "ename": "NotSubscribed",
                        "evalue": "send iopub_subscribe_request first"}),
                };
                self.reply(&id, &msg, "iopub_stats_reply", content);
            }
            "iopub_unsubscribe_request" => {
                self.subs.remove(&id);
            }
            other => warn!(
                socket = "corral_iopub",
                msg_type = other,
                "unexpected request dropped"
            ),
        }
    }

    /// Queues a reply of ours behind what the subscriber already has queued, in order.
    fn reply(&mut self, id: &[u8], request: &Message, msg_type: &str, content: Value) {
        let frames = self.own_message(msg_type, content, Some(request));
        let Some(sub) = self.subs.get_mut(id) else {
            // Stats for an unknown subscriber: answer directly (best effort).
            let mut out = vec![Frame::copy_of(id)];
            out.extend(frames);
            let _ = send_message(&mut self.router, &mut out);
            return;
        };
        let bytes = frames.iter().map(|f| f.len()).sum();
        let queued = Queued {
            frames,
            bytes,
            meta: Arc::new(Meta::default()),
            kind: Kind::Reply,
        };
        let session = &self.session;
        let budget = self.limits.budget;
        sub.queue
            .push(queued, |report| notice(session, report, budget));
    }

    fn own_message(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Vec<Frame> {
        let mut msg = self.session.msg(msg_type, content);
        if let Some(request) = parent {
            msg = msg.with_parent(&request.header);
        }
        self.session
            .encode(&msg)
            .iter()
            .map(|f| Frame::copy_of(f))
            .collect()
    }

    /// Queues one engine message for every subscriber (sharing its frames, not copying).
    pub(crate) fn fan_out(&mut self, frames: &[Frame], meta: &Arc<Meta>) {
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        let session = &self.session;
        let budget = self.limits.budget;
        for sub in self.subs.values_mut() {
            let queued = Queued {
                frames: frames.iter().map(Frame::share).collect(),
                bytes,
                meta: Arc::clone(meta),
                kind: Kind::Relayed,
            };
            sub.queue
                .push(queued, |report| notice(session, report, budget));
        }
    }

    /// Sends what each subscriber's window allows; forgets subscribers that are gone.
    pub(crate) fn flush(&mut self) {
        let now = Instant::now();
        let window = self.limits.window;
        let mut gone = Vec::new();
        for (id, sub) in self.subs.iter_mut() {
            sub.blocked = false;
            while sub.in_flight_bytes < window {
                let Some(front) = sub.queue.front_mut() else {
                    break;
                };
                let bytes = front.bytes;
                match send_to(&mut self.router, id, &mut front.frames) {
                    Sent::Ok => {
                        sub.queue.pop_sent();
                        sub.in_flight.push_back(bytes);
                        sub.in_flight_bytes += bytes;
                    }
                    Sent::Full => {
                        sub.blocked = true;
                        break;
                    }
                    Sent::Gone => {
                        gone.push(id.clone());
                        break;
                    }
                }
            }
            let stuck = sub.in_flight_bytes >= window
                && now.duration_since(sub.heard) >= PROBE_EVERY
                && now.duration_since(sub.probed) >= PROBE_EVERY;
            if stuck && !gone.contains(id) {
                sub.probed = now;
                let mut probe: Vec<Frame> = self
                    .session
                    .encode(&self.session.msg("iopub_probe", json!({})))
                    .iter()
                    .map(|f| Frame::copy_of(f))
                    .collect();
                let bytes = probe.iter().map(|f| f.len()).sum();
                match send_to(&mut self.router, id, &mut probe) {
                    Sent::Ok => {
                        sub.in_flight.push_back(bytes);
                        sub.in_flight_bytes += bytes;
                    }
                    Sent::Full => {}
                    Sent::Gone => gone.push(id.clone()),
                }
            }
        }
        for id in gone {
            if let Some(sub) = self.subs.remove(&id) {
                info!(
                    socket = "corral_iopub",
                    queued = sub.queue.len(),
                    "subscriber disconnected; its queue is dropped"
                );
            }
        }
    }
}

/// Sends `[id, frames..]` without blocking. The routing frame goes first on its own: if
/// ZeroMQ refuses it, nothing was sent and the frames stay queued, intact.
fn send_to(router: &mut zmq::Socket, id: &[u8], frames: &mut [Frame]) -> Sent {
    let result = Frame::copy_of(id)
        .send(router, true)
        .and_then(|()| send_message(router, frames));
    match result {
        Ok(()) => Sent::Ok,
        Err(zmq::Error::EAGAIN) => Sent::Full,
        Err(zmq::Error::EHOSTUNREACH) => Sent::Gone,
        Err(error) => {
            warn!(socket = "corral_iopub", %error, "send failed; will retry");
            Sent::Full
        }
    }
}

/// The `iopub_cutoff` notice: what a subscriber lost, and why.
fn notice(session: &Session, report: &CutOff, budget: usize) -> Queued<Frame> {
    warn!(
        socket = "corral_iopub",
        dropped_messages = report.dropped_messages,
        dropped_bytes = report.dropped_bytes,
        budget,
        "a subscriber stopped reading and exceeded its budget: its queued output is dropped and it is told so"
    );
    let content = json!({
        "lost_msg_ids": report.lost_msg_ids,
        "lost_all": report.lost_all,
        "dropped_messages": report.dropped_messages,
        "dropped_bytes": report.dropped_bytes,
        "budget_bytes": budget,
    });
    let frames: Vec<Frame> = session
        .encode(&session.msg("iopub_cutoff", content))
        .iter()
        .map(|f| Frame::copy_of(f))
        .collect();
    Queued {
        bytes: frames.iter().map(|f| f.len()).sum(),
        frames,
        meta: Arc::new(Meta::default()),
        kind: Kind::Notice,
    }
}
