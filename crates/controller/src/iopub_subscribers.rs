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

    /// True when a send must be retried on a timer: the socket refused one (its own
    /// high-water mark), and no event will say when it has room again. A subscriber out of
    /// credit needs no timer: its ack arrives as a readable event.
    pub(crate) fn needs_retry(&self) -> bool {
        self.subs.values().any(|s| s.blocked)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflate::DataMeta;

    struct Rig {
        subs: Subscribers,
        client: zmq::Socket,
        session: Arc<Session>,
        _ctx: zmq::Context,
    }

    fn rig(limits: Limits) -> Rig {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.set_router_mandatory(true).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let url = router.get_last_endpoint().unwrap().unwrap();
        let session = Arc::new(Session::new(b"key"));
        let client = ctx.socket(zmq::DEALER).unwrap();
        client.connect(&url).unwrap();
        let mut rig = Rig {
            subs: Subscribers::new(router, session.clone(), limits),
            client,
            session,
            _ctx: ctx,
        };
        rig.request("iopub_subscribe_request", json!({}));
        let reply = rig.recv().expect("subscribe reply");
        assert_eq!(reply.msg_type(), "iopub_subscribe_reply");
        rig.request("iopub_ack", json!({"messages": 1}));
        rig
    }

    impl Rig {
        fn request(&mut self, msg_type: &str, content: Value) {
            let msg = self.session.msg(msg_type, content);
            self.client
                .send_multipart(self.session.encode(&msg), 0)
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            // Wait until the request arrived, then handle it and send what may be sent.
            while Instant::now() < deadline {
                let mut items = [self.subs.socket().as_poll_item(zmq::POLLIN)];
                if zmq::poll(&mut items, 50).unwrap() > 0 {
                    self.subs.on_requests();
                    self.subs.flush();
                    return;
                }
            }
            panic!("request {msg_type} never arrived");
        }

        fn recv(&self) -> Option<Message> {
            let mut items = [self.client.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, 500).unwrap() == 0 {
                return None;
            }
            let frames = self.client.recv_multipart(0).unwrap();
            Some(Message::decode(&frames, &self.session.signer).unwrap())
        }

        /// An engine message: `data` keys make it a data_message of (task, engine e0).
        fn publish(&mut self, task: &str, label: &str, size: usize, data: Option<&[&str]>) {
            let msg_type = if data.is_some() {
                "data_message"
            } else {
                "stream"
            };
            let mut msg = self.session.msg(msg_type, json!({"label": label}));
            msg.parent_header = json!({"msg_id": task});
            msg.buffers = vec![vec![0; size]];
            let frames: Vec<Frame> = std::iter::once(Frame::copy_of(b"topic"))
                .chain(self.session.encode(&msg).iter().map(|f| Frame::copy_of(f)))
                .collect();
            let meta = Arc::new(Meta {
                parent: Some(task.into()),
                data: data.map(|keys| DataMeta {
                    engine: "e0".into(),
                    keys: keys.iter().map(|k| k.to_string()).collect(),
                }),
            });
            self.subs.fan_out(&frames, &meta);
            self.subs.flush();
        }

        fn labels(&self) -> Vec<String> {
            std::iter::from_fn(|| self.recv())
                .map(|m| match m.msg_type() {
                    "iopub_cutoff" => format!("cutoff {}", m.content["lost_msg_ids"]),
                    _ => m.content["label"].as_str().unwrap_or("?").to_owned(),
                })
                .collect()
        }
    }

    #[test]
    fn without_acks_only_the_window_is_sent_and_the_rest_is_conflated() {
        let mut rig = rig(Limits {
            window: 10_000,
            budget: 1 << 20,
        });
        rig.publish("t", "d0", 6000, Some(&["a"]));
        rig.publish("t", "d1", 6000, Some(&["a"]));
        rig.publish("t", "out", 10, None);
        rig.publish("t", "d2", 6000, Some(&["a"]));
        rig.publish("t", "d3", 6000, Some(&["a"]));
        // d0 and d1 fill the window (the second may overshoot); d2 was conflated into d3.
        assert_eq!(rig.labels(), ["d0", "d1"]);
        rig.request("iopub_ack", json!({"messages": 2}));
        assert_eq!(rig.labels(), ["out", "d3"]);
        rig.request("iopub_ack", json!({"messages": 2}));
        rig.request("iopub_stats_request", json!({}));
        let stats = rig.recv().unwrap();
        assert_eq!(stats.msg_type(), "iopub_stats_reply");
        assert_eq!(stats.content["forwarded"], 4);
        assert_eq!(stats.content["conflated"], 1);
        assert_eq!(stats.content["queued"], 0);
    }

    #[test]
    fn a_reader_past_its_budget_gets_a_cut_off_notice_then_complete_output() {
        let mut rig = rig(Limits {
            window: 1000,
            budget: 5000,
        });
        rig.publish("t0", "first", 2000, None); // in flight: the window is full
        rig.publish("t1", "x1", 2000, None);
        rig.publish("t2", "x2", 2000, None);
        rig.publish("t3", "x3", 2000, None); // queue past 5000: cut off
        rig.request("iopub_ack", json!({"messages": 1}));
        rig.request("iopub_ack", json!({"messages": 1}));
        rig.request("iopub_ack", json!({"messages": 1}));
        assert_eq!(
            rig.labels(),
            ["first", r#"cutoff ["t1","t2"]"#, "x3"],
            "the notice names the tasks that lost output, and what follows it is intact"
        );
    }

    #[test]
    fn invalid_requests_are_dropped_and_unknown_peers_are_forgotten() {
        let mut rig = rig(Limits {
            window: 1 << 20,
            budget: 1 << 20,
        });
        // Unsigned: dropped, the subscriber is unaffected.
        rig.client
            .send_multipart([&b"<IDS|MSG>"[..], b"", b"{}", b"{}", b"{}", b"{}"], 0)
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        rig.subs.on_requests();
        assert_eq!(rig.subs.subs.len(), 1);
        // The client goes away: the next send notices it and drops its state.
        let rig_client = std::mem::replace(&mut rig.client, rig._ctx.socket(zmq::DEALER).unwrap());
        drop(rig_client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !rig.subs.is_empty() && Instant::now() < deadline {
            rig.publish("t", "x", 10, None);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(rig.subs.is_empty(), "a departed subscriber is forgotten");
    }
}
