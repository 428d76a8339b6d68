//! Simulated engines and a client made of real zmq sockets, cheap enough that one thread
//! serves a thousand engines: an engine answers every request at once with a signed
//! `apply_reply` whose parent is the request's header frame, unparsed.

use corral_wire::{encode_raw, locate_delimiter, new_id, EngineConnection, Message, Session};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The engine side: `n` registered engines, served by one thread until dropped.
pub struct Engines {
    pub uuids: Vec<String>,
    /// A zmq context holds at most 1,023 sockets by default (and the `zmq` crate cannot
    /// raise it without unsafe code), so each 256 engines get their own.
    _contexts: Vec<zmq::Context>,
    on: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Engine {
    session: Session,
    shell: zmq::Socket,
    ping: zmq::Socket,
    pong: zmq::Socket,
}

const ENGINES_PER_CONTEXT: usize = 256;

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, identity: Option<&[u8]>) -> zmq::Socket {
    let s = ctx.socket(kind).expect("socket");
    s.set_linger(0).expect("linger");
    s.set_rcvhwm(0).expect("rcvhwm");
    s.set_sndhwm(0).expect("sndhwm");
    if let Some(id) = identity {
        s.set_identity(id).expect("identity");
    }
    s
}

fn recv_within(s: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let mut items = [s.as_poll_item(zmq::POLLIN)];
    match zmq::poll(&mut items, timeout.as_millis() as i64) {
        Ok(n) if n > 0 => s.recv_multipart(0).ok(),
        _ => None,
    }
}

impl Engines {
    /// Registers `n` engines with the controller whose engine file is `conn`; their shells
    /// also connect to `extra_shell_urls` (the baseline relay). Heartbeats are answered
    /// from the start, so the controller makes them live.
    pub fn register(
        conn: &EngineConnection,
        key: &[u8],
        n: usize,
        extra_shell_urls: &[String],
    ) -> Engines {
        let mut engines = Vec::with_capacity(n);
        let contexts: Vec<zmq::Context> = (0..n.div_ceil(ENGINES_PER_CONTEXT))
            .map(|_| zmq::Context::new())
            .collect();
        for k in 0..n {
            let ctx = &contexts[k / ENGINES_PER_CONTEXT];
            let uuid = new_id();
            let session = Session::with_id(key, uuid.clone());
            let id = uuid.as_bytes();
            let reg = socket(ctx, zmq::DEALER, Some(id));
            reg.connect(&conn.url(conn.registration)).expect("connect");
            let request = session.msg("registration_request", json!({"uuid": uuid}));
            reg.send_multipart(session.encode(&request), 0)
                .expect("send registration");
            let reply = recv_within(&reg, Duration::from_secs(30))
                .expect("the controller answers registration within 30 s");
            let reply = Message::decode(&reply, &session.signer).expect("signed reply");
            assert_eq!(reply.content["status"], "ok", "{}", reply.content);
            let shell = socket(ctx, zmq::ROUTER, Some(id));
            for url in [conn.url(conn.mux), conn.url(conn.task)]
                .iter()
                .chain(extra_shell_urls)
            {
                shell.connect(url).expect("connect shell");
            }
            let ping = socket(ctx, zmq::SUB, None);
            ping.set_subscribe(b"").expect("subscribe");
            ping.connect(&conn.url(conn.hb_ping)).expect("connect ping");
            let pong = socket(ctx, zmq::DEALER, Some(id));
            pong.connect(&conn.url(conn.hb_pong)).expect("connect pong");
            engines.push(Engine {
                session,
                shell,
                ping,
                pong,
            });
        }
        let uuids = engines.iter().map(|e| e.session.id.clone()).collect();
        let on = Arc::new(AtomicBool::new(true));
        let running = on.clone();
        let thread = std::thread::spawn(move || serve(engines, running));
        Engines {
            uuids,
            _contexts: contexts,
            on,
            thread: Some(thread),
        }
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        self.on.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Echoes pings and answers requests until `on` is cleared.
fn serve(engines: Vec<Engine>, on: Arc<AtomicBool>) {
    let metadata: Vec<Vec<u8>> = engines
        .iter()
        .map(|e| {
            serde_json::to_vec(&json!({
                "engine": e.session.id, "status": "ok", "dependencies_met": true,
            }))
            .expect("json")
        })
        .collect();
    let content = br#"{"status": "ok"}"#;
    while on.load(Ordering::Relaxed) {
        let mut items: Vec<zmq::PollItem> = engines
            .iter()
            .flat_map(|e| {
                [
                    e.ping.as_poll_item(zmq::POLLIN),
                    e.shell.as_poll_item(zmq::POLLIN),
                ]
            })
            .collect();
        if zmq::poll(&mut items, 50).unwrap_or(0) == 0 {
            continue;
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (k, e) in engines.iter().enumerate() {
            if ready[2 * k] {
                while let Ok(frames) = e.ping.recv_multipart(zmq::DONTWAIT) {
                    let _ = e.pong.send_multipart(frames, 0);
                }
            }
            if ready[2 * k + 1] {
                while let Ok(mut frames) = e.shell.recv_multipart(zmq::DONTWAIT) {
                    let Ok(d) = locate_delimiter(&frames) else {
                        continue;
                    };
                    let parent = std::mem::take(&mut frames[d + 2]);
                    frames.truncate(d);
                    let header =
                        serde_json::to_vec(&e.session.header("apply_reply")).expect("json");
                    let reply = encode_raw(
                        &e.session.signer,
                        frames,
                        header,
                        [&parent, &metadata[k], content],
                        vec![],
                    );
                    let _ = e.shell.send_multipart(reply, 0);
                }
            }
        }
    }
}

/// The client side: sends `total` requests on `sock` with at most `window` in flight and
/// waits for every reply; returns requests completed per second.
///
/// Requests are signed before the clock starts, so the figure is the controller's (and
/// the engines'), not the client's envelope building.
pub fn drive(
    session: &Session,
    sock: &zmq::Socket,
    targets: Option<&[String]>,
    total: usize,
    window: usize,
) -> f64 {
    let metadata = json!({
        "after": [], "follow": [], "timeout": null, "targets": [], "retries": 0,
    });
    let requests: Vec<Vec<Vec<u8>>> = (0..total)
        .map(|i| {
            let mut msg = session.msg("apply_request", json!({}));
            msg.metadata = metadata.clone();
            if let Some(uuids) = targets {
                msg.idents = vec![uuids[i % uuids.len()].as_bytes().to_vec()];
            }
            msg.buffers = vec![b"f".to_vec(), b"args".to_vec(), b"kwargs".to_vec()];
            session.encode(&msg)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let t0 = Instant::now();
    let (mut sent, mut done) = (0usize, 0usize);
    let mut pending = requests.into_iter();
    while done < total {
        while sent < total && sent - done < window {
            let frames = pending.next().expect("counted");
            sock.send_multipart(frames, 0).expect("send request");
            sent += 1;
        }
        match recv_within(sock, Duration::from_secs(10)) {
            Some(_) => done += 1,
            None => panic!("no reply within 10 s ({done} of {total} done, {sent} sent)"),
        }
        while done < sent {
            match sock.recv_multipart(zmq::DONTWAIT) {
                Ok(_) => done += 1,
                Err(_) => break,
            }
        }
        assert!(Instant::now() < deadline, "the run took more than 600 s");
    }
    total as f64 / t0.elapsed().as_secs_f64()
}

/// A client DEALER connected to `url`.
pub fn client_socket(ctx: &zmq::Context, url: &str) -> zmq::Socket {
    let s = socket(ctx, zmq::DEALER, None);
    s.connect(url).expect("connect client");
    s
}
