//! The client against a scripted controller on real loopback sockets: losing and regaining
//! the controller, late Hub replies, a peer that stops reading, engines announced before
//! the client's subscription is live.

use std::time::{Duration, Instant};

use corral_client::{Channel, ClientCore, ClientError, ConnectOptions};
use corral_wire::{ClientConnection, Message, Session};
use serde_json::{json, Value};

const KEY: &[u8] = b"test-key";

/// The controller's side of every client socket, bound on 127.0.0.1.
struct FakeHub {
    ctx: zmq::Context,
    session: Session,
    query: Option<zmq::Socket>,
    /// mux, control, task, broadcast, iopub: bound, never read (a peer that stops reading).
    _others: Vec<zmq::Socket>,
    notification: zmq::Socket,
    conn: ClientConnection,
    engines: serde_json::Map<String, Value>,
}

fn port_of(s: &zmq::Socket) -> u16 {
    let ep = s.get_last_endpoint().unwrap().unwrap();
    ep.rsplit(':').next().unwrap().parse().unwrap()
}

fn bound(ctx: &zmq::Context, kind: zmq::SocketType, port: u16) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    s.bind(&format!("tcp://127.0.0.1:{port}")).unwrap();
    s
}

impl FakeHub {
    fn start() -> Self {
        let ctx = zmq::Context::new();
        let query = bound(&ctx, zmq::ROUTER, 0);
        let mux = bound(&ctx, zmq::ROUTER, 0);
        let control = bound(&ctx, zmq::ROUTER, 0);
        let task = bound(&ctx, zmq::ROUTER, 0);
        let broadcast = bound(&ctx, zmq::ROUTER, 0);
        let iopub = bound(&ctx, zmq::PUB, 0);
        let notification = bound(&ctx, zmq::PUB, 0);
        let conn = ClientConnection {
            ssh: String::new(),
            interface: "tcp://127.0.0.1".into(),
            registration: port_of(&query),
            control: port_of(&control),
            mux: port_of(&mux),
            task: port_of(&task),
            task_scheme: "leastload".into(),
            iopub: port_of(&iopub),
            corral_iopub: None,
            corral_dashboard_url: None,
            notification: port_of(&notification),
            broadcast: port_of(&broadcast),
            key: String::from_utf8(KEY.to_vec()).unwrap(),
            curve_serverkey: None,
            location: String::new(),
            pack: "json".into(),
            unpack: "json".into(),
            signature_scheme: "hmac-sha256".into(),
        };
        FakeHub {
            session: Session::new(KEY),
            ctx,
            query: Some(query),
            _others: vec![mux, control, task, broadcast, iopub],
            notification,
            conn,
            engines: serde_json::Map::new(),
        }
    }

    /// Answers Hub queries for `d`: `connection_request` with the engine list, others
    /// with `status: ok`, unless `answer` says no.
    fn serve_for(&self, d: Duration, answer: impl Fn(&Message) -> bool) {
        self.serve(d, usize::MAX, answer);
    }

    /// Answers at most `n` queries within `d`.
    fn serve(&self, d: Duration, mut n: usize, answer: impl Fn(&Message) -> bool) {
        let query = self.query.as_ref().expect("hub is up");
        let deadline = Instant::now() + d;
        while Instant::now() < deadline && n > 0 {
            if query.poll(zmq::POLLIN, 10).unwrap() == 0 {
                continue;
            }
            let frames = query.recv_multipart(0).unwrap();
            let req = Message::decode(&frames, &self.session.signer).unwrap();
            if !answer(&req) {
                continue;
            }
            let content = match req.msg_type() {
                "connection_request" => json!({"status": "ok", "engines": self.engines}),
                _ => json!({"status": "ok"}),
            };
            let reply_type = req.msg_type().replace("_request", "_reply");
            let mut reply = self.session.msg(&reply_type, content);
            reply.parent_header = serde_json::to_value(&req.header).unwrap();
            reply.idents = req.idents.clone();
            query
                .send_multipart(self.session.encode(&reply), 0)
                .unwrap();
            n -= 1;
        }
    }

    /// Serves the connection handshake on a background thread while the client connects.
    fn connect(&self, grace: Duration) -> ClientCore {
        let options = ConnectOptions {
            timeout: Duration::from_secs(10),
            grace,
            insecure: false,
        };
        std::thread::scope(|s| {
            let conn = self.conn.clone();
            let client = s.spawn(move || ClientCore::connect(&conn, &options).unwrap());
            self.serve(Duration::from_secs(10), 1, |_| true);
            client.join().unwrap()
        })
    }

    fn stop_hub(&mut self) {
        self.query = None; // linger 0: the connection closes now
    }

    fn restart_hub(&mut self) {
        self.query = Some(bound(&self.ctx, zmq::ROUTER, self.conn.registration));
    }

    fn announce(&self, id: i64, uuid: &str) {
        let note = self.session.msg(
            "registration_notification",
            json!({"id": id, "uuid": uuid, "queue": uuid}),
        );
        self.notification
            .send_multipart(self.session.encode(&note), 0)
            .unwrap();
    }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A load-balanced `apply_request` with empty content: its bytes do not matter here.
fn submit_empty_task(client: &ClientCore) -> corral_client::Result<String> {
    client.submit(Channel::Task, None, "apply_request", "{}", "{}", vec![])
}

#[test]
fn a_controller_that_goes_away_fails_waits_within_the_grace() {
    let mut hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(1));
    let task = submit_empty_task(&client).unwrap();
    assert!(!client
        .wait(std::slice::from_ref(&task), Duration::ZERO)
        .unwrap());
    let t0 = Instant::now();
    hub.stop_hub();
    // The wait ends with ControllerLost, after the grace and well within 5 s.
    let err = loop {
        match client.wait(std::slice::from_ref(&task), Duration::from_millis(100)) {
            Ok(false) if t0.elapsed() < Duration::from_secs(10) => continue,
            other => break other.unwrap_err(),
        }
    };
    let took = t0.elapsed();
    assert!(matches!(err, ClientError::ControllerLost { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(900),
        "failed before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let text = err.to_string();
    assert!(
        text.contains(&client.url) && text.contains("stopped answering"),
        "{text}"
    );
    // Later calls fail the same way instead of hanging.
    assert!(matches!(
        client.engines(),
        Err(ClientError::ControllerLost { .. })
    ));
    assert!(matches!(
        submit_empty_task(&client),
        Err(ClientError::ControllerLost { .. })
    ));
    assert!(matches!(
        client.hub_send("queue_request", json!({})),
        Err(ClientError::ControllerLost { .. })
    ));
    assert!(matches!(
        client.wait_for_engines(1, Duration::from_secs(1)),
        Err(ClientError::ControllerLost { .. })
    ));
    client.close();
}

#[test]
fn a_controller_back_on_the_same_ports_within_the_grace_fails_nothing() {
    let mut hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(2));
    let task = submit_empty_task(&client).unwrap();
    hub.stop_hub();
    std::thread::sleep(Duration::from_millis(300));
    hub.restart_hub();
    // Well past the grace: nothing failed, and the Hub answers queries again.
    hub.serve_for(Duration::from_secs(3), |_| true);
    assert!(!client
        .wait(std::slice::from_ref(&task), Duration::ZERO)
        .unwrap());
    assert!(client.engines().is_ok());
    let id = client.hub_send("queue_request", json!({})).unwrap();
    let reply = std::thread::scope(|s| {
        let waiter = s.spawn(|| client.take_hub_reply(&id, Duration::from_secs(2), true));
        hub.serve_for(Duration::from_secs(1), |_| true);
        waiter.join().unwrap().unwrap()
    });
    assert!(reply.is_some(), "the Hub's reply after the reconnection");
    client.close();
}

#[test]
fn a_hub_reply_after_its_wait_gave_up_is_dropped() {
    let hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(5));
    for _ in 0..50 {
        let id = client.hub_send("queue_request", json!({})).unwrap();
        // Nobody answers in time; the wait gives up.
        let got = client
            .take_hub_reply(&id, Duration::from_millis(1), true)
            .unwrap();
        assert!(got.is_none());
    }
    // Now the Hub answers all fifty, late.
    hub.serve_for(Duration::from_millis(500), |_| true);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(client.hub_pending(), 0, "late replies are not kept");
    client.close();
}

#[test]
fn a_peer_that_stops_reading_does_not_block_the_other_sockets() {
    let hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(30));
    // The mux peer never reads: fill ZeroMQ's queues and the kernel's buffers.
    let big = vec![0u8; 16 << 10];
    for _ in 0..5000 {
        client
            .submit(
                Channel::Mux,
                Some("engine-uuid"),
                "apply_request",
                "{}",
                "{}",
                vec![big.clone()],
            )
            .unwrap();
    }
    // The Hub still answers through the same I/O thread, promptly.
    let t0 = Instant::now();
    let id = client.hub_send("queue_request", json!({})).unwrap();
    let reply = std::thread::scope(|s| {
        let waiter = s.spawn(|| client.take_hub_reply(&id, Duration::from_secs(3), true));
        hub.serve(Duration::from_secs(3), 1, |m| {
            m.msg_type() == "queue_request"
        });
        waiter.join().unwrap().unwrap()
    });
    assert!(reply.is_some(), "no Hub reply while mux was stuck");
    assert!(t0.elapsed() < Duration::from_secs(3));
    client.close();
}

#[test]
fn engines_announced_before_the_subscription_is_live_are_found_by_the_resync() {
    let mut hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(5));
    assert!(client.engines().unwrap().is_empty());
    // Two engines registered after the Hub's connection reply, and their notifications
    // were published before our subscription was live: never announced to us. Only
    // asking the Hub again finds them.
    hub.engines.insert("0".into(), json!("uuid-0"));
    hub.engines.insert("1".into(), json!("uuid-1"));
    hub.serve_for(Duration::from_secs(1), |_| true);
    let found = wait_until(Duration::from_secs(2), || {
        client.engines().unwrap().len() == 2
    });
    assert!(found, "engines: {:?}", client.engines());
    // And announcements keep working.
    hub.announce(2, "uuid-2");
    assert!(wait_until(Duration::from_secs(2), || client
        .engines()
        .unwrap()
        .len()
        == 3));
    client.close();
}

#[test]
fn a_request_whose_json_is_malformed_is_refused_with_a_clear_error() {
    let hub = FakeHub::start();
    let client = hub.connect(Duration::from_secs(30));
    let bad_content = client
        .submit(Channel::Task, None, "apply_request", "{oops", "{}", vec![])
        .unwrap_err();
    assert!(bad_content.to_string().contains("content"), "{bad_content}");
    let bad_metadata = client
        .submit(Channel::Task, None, "apply_request", "{}", "[1,", vec![])
        .unwrap_err();
    assert!(
        bad_metadata.to_string().contains("metadata"),
        "{bad_metadata}"
    );
    // The client still works.
    submit_empty_task(&client).unwrap();
}
