//! Fake engines and clients made of real zmq sockets, for driving a real controller.
#![allow(dead_code)]

use corral_controller::{Controller, ControllerConfig};
use corral_wire::{new_id, Message, ProfileLocation, Session};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const KEY: &str = "test-key";
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A client connected to `c` and one engine the client has seen go live: how most
/// scenarios begin.
pub fn client_and_live_engine(ctx: &zmq::Context, c: &Controller) -> (FakeClient, FakeEngine) {
    let client = FakeClient::connect(ctx, c);
    let engine = FakeEngine::register(ctx, c);
    client.wait_notification("registration_notification");
    (client, engine)
}

pub fn start(dir: &std::path::Path, hb_period_ms: u64) -> Controller {
    Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, ""),
        key: Some(KEY.into()),
        hb_period_ms,
        ..ControllerConfig::default()
    })
    .expect("controller starts")
}

pub fn session() -> Session {
    Session::new(KEY.as_bytes())
}

fn sock(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    identity: Option<&[u8]>,
    url: &str,
) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    if let Some(id) = identity {
        s.set_identity(id).unwrap();
    }
    if kind == zmq::SUB {
        s.set_subscribe(b"").unwrap();
    }
    s.connect(url).unwrap();
    s
}

/// Receives one multipart message or gives up after `timeout`.
pub fn recv(s: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let mut items = [s.as_poll_item(zmq::POLLIN)];
    match zmq::poll(&mut items, timeout.as_millis() as i64) {
        Ok(n) if n > 0 => s.recv_multipart(0).ok(),
        _ => None,
    }
}

/// Receives until a message satisfies `pred` (others are skipped) or `timeout`.
pub fn recv_until(
    s: &zmq::Socket,
    timeout: Duration,
    mut pred: impl FnMut(&[Vec<u8>]) -> bool,
) -> Option<Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match recv(s, left) {
            Some(f) if pred(&f) => return Some(f),
            Some(_) => continue,
            None => return None,
        }
    }
    None
}

pub fn decode(frames: &[Vec<u8>]) -> Message {
    Message::decode(frames, &session().signer).expect("valid signed message")
}

pub fn is_type(frames: &[Vec<u8>], msg_type: &str) -> bool {
    Message::decode(frames, &session().signer)
        .map(|m| m.msg_type() == msg_type)
        .unwrap_or(false)
}

/// A stock-shaped engine: registration DEALER, heart SUB/DEALER echo thread, one shell
/// ROUTER connected to mux and task, a control ROUTER and an IOPub PUB.
pub struct FakeEngine {
    pub uuid: String,
    pub id: u64,
    pub session: Session,
    pub reg: zmq::Socket,
    pub shell: zmq::Socket,
    pub control: zmq::Socket,
    pub iopub: zmq::Socket,
    heart_on: Arc<AtomicBool>,
    heart: Option<JoinHandle<()>>,
}

impl FakeEngine {
    pub fn register(ctx: &zmq::Context, c: &Controller) -> FakeEngine {
        FakeEngine::register_with_heart_after(ctx, c, Duration::ZERO)
    }

    /// Registers, and starts answering pings only after `delay` (an engine slow to its
    /// first heartbeat on a loaded machine).
    pub fn register_with_heart_after(
        ctx: &zmq::Context,
        c: &Controller,
        delay: Duration,
    ) -> FakeEngine {
        let e = c.engine_connection();
        let uuid = new_id();
        let session = Session::with_id(KEY.as_bytes(), uuid.clone());
        let id_bytes = uuid.as_bytes();
        let reg = sock(ctx, zmq::DEALER, Some(id_bytes), &e.url(e.registration));
        reg.send_multipart(
            session.encode(&session.msg("registration_request", json!({"uuid": uuid}))),
            0,
        )
        .unwrap();
        let reply = decode(&recv(&reg, TIMEOUT).expect("registration_reply"));
        assert_eq!(reply.msg_type(), "registration_reply");
        assert_eq!(reply.content["status"], "ok", "{:?}", reply.content);
        assert_eq!(reply.parent_header, json!({}));
        let id = reply.content["id"].as_u64().unwrap();
        let shell = sock(ctx, zmq::ROUTER, Some(id_bytes), &e.url(e.mux));
        shell.connect(&e.url(e.task)).unwrap();
        let control = sock(ctx, zmq::ROUTER, Some(id_bytes), &e.url(e.control));
        let iopub = sock(ctx, zmq::PUB, Some(id_bytes), &e.url(e.iopub));
        let heart_on = Arc::new(AtomicBool::new(true));
        let ping = sock(ctx, zmq::SUB, None, &e.url(e.hb_ping));
        let pong = sock(ctx, zmq::DEALER, Some(id_bytes), &e.url(e.hb_pong));
        let on = heart_on.clone();
        let heart = std::thread::spawn(move || {
            let start = Instant::now();
            while on.load(Ordering::SeqCst) && start.elapsed() < delay {
                let _ = recv(&ping, Duration::from_millis(20));
            }
            while on.load(Ordering::SeqCst) {
                if let Some(frames) = recv(&ping, Duration::from_millis(20)) {
                    let _ = pong.send_multipart(frames, 0);
                }
            }
        });
        FakeEngine {
            uuid,
            id,
            session,
            reg,
            shell,
            control,
            iopub,
            heart_on,
            heart: Some(heart),
        }
    }

    /// Stops answering pings (a hung or dead engine).
    pub fn stop_heart(&mut self) {
        self.heart_on.store(false, Ordering::SeqCst);
        if let Some(h) = self.heart.take() {
            let _ = h.join();
        }
    }

    /// Answers a request received as `frames` (idents echoed), with `content`.
    pub fn reply(&self, sock: &zmq::Socket, frames: &[Vec<u8>], content: Value) -> Message {
        let req = decode(frames);
        let msg_type = req.msg_type().replace("_request", "_reply");
        let mut reply = self
            .session
            .msg(&msg_type, content)
            .with_parent(&req.header);
        reply.metadata = json!({"engine": self.uuid, "status": "ok", "dependencies_met": true});
        reply.idents = req.idents.clone();
        sock.send_multipart(self.session.encode(&reply), 0).unwrap();
        reply
    }
}

impl FakeEngine {
    /// Closes every socket at once, as the death of an engine process does.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop_heart();
    }
}

/// A stock-shaped client: DEALERs on registration, mux, task, control; SUBs on
/// notification and iopub.
pub struct FakeClient {
    pub session: Session,
    pub query: zmq::Socket,
    pub mux: zmq::Socket,
    pub task: zmq::Socket,
    pub control: zmq::Socket,
    pub notification: zmq::Socket,
    pub iopub: zmq::Socket,
}

impl FakeClient {
    pub fn connect(ctx: &zmq::Context, c: &Controller) -> FakeClient {
        let f = c.client_connection();
        let client = FakeClient {
            session: session(),
            query: sock(ctx, zmq::DEALER, None, &f.url(f.registration)),
            mux: sock(ctx, zmq::DEALER, None, &f.url(f.mux)),
            task: sock(ctx, zmq::DEALER, None, &f.url(f.task)),
            control: sock(ctx, zmq::DEALER, None, &f.url(f.control)),
            notification: sock(ctx, zmq::SUB, None, &f.url(f.notification)),
            iopub: sock(ctx, zmq::SUB, None, &f.url(f.iopub)),
        };
        // SUB sockets need a moment before publishers see their subscription.
        std::thread::sleep(Duration::from_millis(150));
        client
    }

    /// Sends `msg_type` with `content` on `sock`, prefixed by `idents`; returns the message.
    pub fn send(
        &self,
        sock: &zmq::Socket,
        idents: &[&[u8]],
        msg_type: &str,
        content: Value,
        metadata: Value,
    ) -> Message {
        let mut msg = self.session.msg(msg_type, content);
        msg.metadata = metadata;
        msg.idents = idents.iter().map(|i| i.to_vec()).collect();
        msg.buffers = vec![b"opaque-buffer".to_vec()];
        sock.send_multipart(self.session.encode(&msg), 0).unwrap();
        msg
    }

    /// A hub query; returns the reply.
    pub fn query(&self, msg_type: &str, content: Value) -> Message {
        let req = self.send(&self.query, &[], msg_type, content, json!({}));
        let reply = decode(&recv(&self.query, TIMEOUT).expect("hub reply"));
        assert_eq!(reply.parent_header["msg_id"], json!(req.header.msg_id));
        reply
    }

    pub fn wait_notification(&self, msg_type: &str) -> Message {
        let frames = recv_until(&self.notification, TIMEOUT, |f| is_type(f, msg_type))
            .unwrap_or_else(|| panic!("no {msg_type} notification"));
        decode(&frames)
    }
}
