//! The relay limit, measured in the same run: a ROUTER↔ROUTER hop that moves frames with
//! the first two swapped and does nothing else (no signature check, no hub copy). The
//! controller's MUX does this plus its checks, so the ratio of the two is its overhead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Frames moved, never copied: `zmq::Message`s go from one socket to the other.
fn recv_parts(s: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let mut parts = vec![s.recv_msg(zmq::DONTWAIT).ok()?];
    while s.get_rcvmore().unwrap_or(false) {
        parts.push(s.recv_msg(0).ok()?);
    }
    Some(parts)
}

fn send_parts(s: &zmq::Socket, parts: Vec<zmq::Message>) {
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let flags = if i < last { zmq::SNDMORE } else { 0 };
        if s.send(part, flags).is_err() {
            return;
        }
    }
}

pub struct BaselineRelay {
    pub client_url: String,
    pub engine_url: String,
    on: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BaselineRelay {
    pub fn start(ctx: &zmq::Context) -> BaselineRelay {
        let router = |identity: Option<&[u8]>| {
            let s = ctx.socket(zmq::ROUTER).expect("socket");
            s.set_linger(0).expect("linger");
            s.set_rcvhwm(0).expect("hwm");
            s.set_sndhwm(0).expect("hwm");
            if let Some(id) = identity {
                s.set_identity(id).expect("identity");
            }
            s.bind("tcp://127.0.0.1:*").expect("bind");
            s
        };
        let client = router(None);
        let engine = router(Some(b"baseline-relay"));
        let url = |s: &zmq::Socket| s.get_last_endpoint().expect("endpoint").expect("utf8");
        let (client_url, engine_url) = (url(&client), url(&engine));
        let on = Arc::new(AtomicBool::new(true));
        let running = on.clone();
        let thread = std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let mut items = [
                    client.as_poll_item(zmq::POLLIN),
                    engine.as_poll_item(zmq::POLLIN),
                ];
                if zmq::poll(&mut items, 50).unwrap_or(0) == 0 {
                    continue;
                }
                for (from, to) in [(&client, &engine), (&engine, &client)] {
                    while let Some(mut parts) = recv_parts(from) {
                        if parts.len() > 2 {
                            parts.swap(0, 1);
                            send_parts(to, parts);
                        }
                    }
                }
            }
        });
        BaselineRelay {
            client_url,
            engine_url,
            on,
            thread: Some(thread),
        }
    }
}

impl Drop for BaselineRelay {
    fn drop(&mut self) {
        self.on.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
