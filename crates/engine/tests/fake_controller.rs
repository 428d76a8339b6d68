//! The engine runtime against a fake controller made of real zmq sockets on 127.0.0.1:
//! registration, heartbeat echo, a request through mux with its idents echoed on the
//! reply, busy/idle ordering on IOPub, bad messages dropped, control abort, unregistration;
//! replays dropped; the controller's death noticed from its closed heartbeat connection
//! (and a restart on the same port tolerated); an empty key refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_engine::{EngineOptions, EngineRuntime, Next, Outgoing};
use corral_wire::{EngineConnection, Message, Session};
use serde_json::json;

const KEY: &str = "test-key";

fn bind(ctx: &zmq::Context, kind: zmq::SocketType, identity: Option<&[u8]>) -> (zmq::Socket, u16) {
    let s = ctx.socket(kind).unwrap();
    if let Some(id) = identity {
        s.set_identity(id).unwrap();
    }
    if kind == zmq::ROUTER {
        s.set_router_mandatory(true).unwrap();
    }
    if kind == zmq::SUB {
        s.set_subscribe(b"").unwrap();
    }
    s.set_linger(0).unwrap();
    s.bind("tcp://127.0.0.1:0").unwrap();
    let ep = s.get_last_endpoint().unwrap().unwrap();
    let port = ep.rsplit(':').next().unwrap().parse().unwrap();
    (s, port)
}

fn recv(sock: &zmq::Socket, timeout_ms: i64) -> Vec<Vec<u8>> {
    assert!(
        sock.poll(zmq::POLLIN, timeout_ms).unwrap() > 0,
        "timed out waiting for a message"
    );
    sock.recv_multipart(0).unwrap()
}

/// Sends through a ROUTER until the peer is connected (ROUTER_MANDATORY says when).
fn send_routed(sock: &zmq::Socket, frames: Vec<Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sock.send_multipart(frames.clone(), zmq::DONTWAIT) {
            Ok(()) => return,
            Err(zmq::Error::EHOSTUNREACH) | Err(zmq::Error::EAGAIN) => {
                assert!(Instant::now() < deadline, "peer never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

#[test]
fn engine_runtime_against_fake_controller() {
    let ctx = zmq::Context::new();
    let (reg, reg_port) = bind(&ctx, zmq::ROUTER, None);
    let (ping, ping_port) = bind(&ctx, zmq::PUB, None);
    let (pong, pong_port) = bind(&ctx, zmq::ROUTER, None);
    let (mux, mux_port) = bind(&ctx, zmq::ROUTER, Some(b"mux_out"));
    let (_task, task_port) = bind(&ctx, zmq::ROUTER, Some(b"task_out"));
    let (control, control_port) = bind(&ctx, zmq::ROUTER, Some(b"control_out"));
    let (iopub, iopub_port) = bind(&ctx, zmq::SUB, None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("security/ipcontroller-engine.json");
    let conn: EngineConnection = serde_json::from_value(json!({
        "ssh": "", "interface": "tcp://127.0.0.1", "registration": reg_port,
        "control": control_port, "mux": mux_port, "task": task_port, "iopub": iopub_port,
        "hb_ping": ping_port, "hb_pong": pong_port, "broadcast": [],
        "key": KEY, "curve_serverkey": null, "location": "localhost",
        "pack": "json", "unpack": "json", "signature_scheme": "hmac-sha256"
    }))
    .unwrap();
    conn.write(&path).unwrap();
    let conn = EngineConnection::read(&path).unwrap();

    // The engine registers from another thread while we play the Hub.
    let opts = EngineOptions {
        file_hint: path.display().to_string(),
        ..Default::default()
    };
    let connecting = std::thread::spawn(move || EngineRuntime::connect(&conn, opts));
    let hub = Session::new(KEY.as_bytes());
    let frames = recv(&reg, 5000);
    let request = Message::decode(&frames, &hub.signer).unwrap();
    assert_eq!(request.msg_type(), "registration_request");
    let uuid = request.content["uuid"].as_str().unwrap().to_string();
    assert_eq!(
        request.idents,
        vec![uuid.as_bytes().to_vec()],
        "DEALER identity = uuid"
    );
    let mut reply = hub.msg(
        "registration_reply",
        json!({"status": "ok", "id": 4, "hb_period": 500}),
    );
    reply.idents = request.idents.clone();
    reg.send_multipart(hub.encode(&reply), 0).unwrap();
    let rt = Arc::new(connecting.join().unwrap().unwrap());
    assert_eq!(
        (rt.id, rt.hb_period_ms, rt.uuid.as_str()),
        (4, 500, uuid.as_str())
    );

    // Heartbeat: the ping payload comes back unchanged from the engine's identity.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ping.send(&b"1.25"[..], 0).unwrap();
        if pong.poll(zmq::POLLIN, 100).unwrap() > 0 {
            let echo = pong.recv_multipart(0).unwrap();
            assert_eq!(echo, vec![uuid.as_bytes().to_vec(), b"1.25".to_vec()]);
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat echo");
    }

    // A zmq socket handles its new connections only when its owner calls into it: let the
    // IOPub SUB send its subscription to the engine (a real relay polls all the time).
    for _ in 0..30 {
        iopub.poll(zmq::POLLIN, 10).unwrap();
    }

    // Garbage and a badly signed message are dropped; the runtime keeps going.
    let client = Session::new(KEY.as_bytes());
    let zid = vec![0u8, 1, 2, 3, 4];
    send_routed(
        &mux,
        vec![uuid.as_bytes().to_vec(), zid.clone(), b"junk".to_vec()],
    );
    let forger = Session::new(b"wrong key");
    let mut forged = forger.msg("apply_request", json!({}));
    forged.idents = vec![uuid.as_bytes().to_vec(), zid.clone()];
    send_routed(&mux, forger.encode(&forged));

    // A real request reaches the runtime with the relay's idents.
    let mut req = client.msg("apply_request", json!({}));
    req.idents = vec![uuid.as_bytes().to_vec(), zid.clone()];
    req.buffers = vec![b"f".to_vec(), b"info".to_vec()];
    send_routed(&mux, client.encode(&req));
    let got = match rt.next(Duration::from_secs(5)).unwrap() {
        Next::Request(r) => r,
        other => panic!("expected the request, got {other:?}"),
    };
    assert_eq!(
        got.header.msg_id, req.header.msg_id,
        "the invalid messages were dropped"
    );
    assert_eq!(got.idents, vec![b"mux_out".to_vec(), zid.clone()]);
    assert_eq!(got.buffers, req.buffers);

    // busy → data → reply → idle.
    let parent = got.header_raw.clone();
    rt.queue(Outgoing::Begin {
        parent: parent.clone(),
    })
    .unwrap();
    rt.queue(Outgoing::Data {
        keys: vec!["x".into()],
        buffers: vec![b"pickle".to_vec()],
        preview: None,
    })
    .unwrap();
    rt.queue(Outgoing::Reply {
        channel: got.channel,
        idents: got.idents.clone(),
        parent: parent.clone(),
        msg_type: "apply_reply".into(),
        content: br#"{"status": "ok"}"#.to_vec(),
        metadata: format!(r#"{{"engine": "{uuid}"}}"#).into_bytes(),
        buffers: vec![b"result".to_vec()],
    })
    .unwrap();
    rt.queue(Outgoing::End { parent }).unwrap();

    let reply = Message::decode(&recv(&mux, 5000), &client.signer).unwrap();
    assert_eq!(reply.idents, vec![uuid.as_bytes().to_vec(), zid.clone()]);
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
    assert_eq!(reply.header.session, uuid);
    assert_eq!(reply.buffers, vec![b"result".to_vec()]);

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("idle") {
        let m = Message::decode(&recv(&iopub, 5000), &client.signer).unwrap();
        if m.parent_msg_id() != Some(req.header.msg_id.as_str()) {
            continue; // e.g. `starting`
        }
        assert_eq!(m.metadata["engine"], json!(uuid));
        seen.push(match m.msg_type() {
            "status" => m.content["execution_state"].as_str().unwrap().to_string(),
            other => other.to_string(),
        });
    }
    assert_eq!(seen, ["busy", "data_message", "idle"]);

    // Control: abort is answered by the runtime itself, idents echoed.
    let mut abort = client.msg("abort_request", json!({"msg_ids": ["later"]}));
    abort.idents = vec![uuid.as_bytes().to_vec(), zid.clone()];
    send_routed(&control, client.encode(&abort));
    let abort_reply = Message::decode(&recv(&control, 5000), &client.signer).unwrap();
    assert_eq!(abort_reply.msg_type(), "abort_reply");
    assert_eq!(
        abort_reply.idents,
        vec![uuid.as_bytes().to_vec(), zid.clone()]
    );
    assert_eq!(abort_reply.content, json!({"status": "ok"}));

    // Leaving: unregistration_request {id} on the registration socket.
    rt.close(true);
    let bye = Message::decode(&recv(&reg, 5000), &hub.signer).unwrap();
    assert_eq!(bye.msg_type(), "unregistration_request");
    assert_eq!(bye.content, json!({"id": 4}));
}

#[test]
fn no_controller_is_a_clear_error() {
    let ctx = zmq::Context::new();
    // A bound port nobody answers on.
    let (_silent, port) = bind(&ctx, zmq::ROUTER, None);
    let conn: EngineConnection = serde_json::from_value(json!({
        "interface": "tcp://127.0.0.1", "registration": port, "control": 1, "mux": 1,
        "task": 1, "iopub": 1, "hb_ping": 1, "hb_pong": 1, "broadcast": [], "key": KEY,
        "location": "", "ssh": ""
    }))
    .unwrap();
    let opts = EngineOptions {
        registration_timeout: Duration::from_millis(300),
        // The port accepts but never answers: do not wait the default two minutes.
        registration_patience: Duration::from_millis(500),
        file_hint: "the-file.json".into(),
        ..Default::default()
    };
    let err = EngineRuntime::connect(&conn, opts)
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("the-file.json"),
        "{text}"
    );
}

/// A fake controller whose engine has registered: the sockets a test plays with.
struct Registered {
    ctx: zmq::Context,
    ping: zmq::Socket,
    ping_port: u16,
    pong: zmq::Socket,
    mux: zmq::Socket,
    control: zmq::Socket,
    rt: EngineRuntime,
    uuid: String,
    key: String,
    _keep: Vec<zmq::Socket>,
    _dir: tempfile::TempDir,
}

/// Binds every controller socket, writes the connection file with `key`, registers an
/// engine with `opts` (id 0, heartbeat period 500 ms).
fn register_engine(
    key: &str,
    opts: EngineOptions,
) -> Result<Registered, corral_engine::EngineError> {
    register_engine_told(key, opts, json!({}))
}

/// [`register_engine`] with `extra` fields in the registration reply.
fn register_engine_told(
    key: &str,
    opts: EngineOptions,
    extra: serde_json::Value,
) -> Result<Registered, corral_engine::EngineError> {
    let ctx = zmq::Context::new();
    let (reg, reg_port) = bind(&ctx, zmq::ROUTER, None);
    let (ping, ping_port) = bind(&ctx, zmq::PUB, None);
    let (pong, pong_port) = bind(&ctx, zmq::ROUTER, None);
    let (mux, mux_port) = bind(&ctx, zmq::ROUTER, Some(b"mux_out"));
    let (task, task_port) = bind(&ctx, zmq::ROUTER, Some(b"task_out"));
    let (control, control_port) = bind(&ctx, zmq::ROUTER, Some(b"control_out"));
    let (iopub, iopub_port) = bind(&ctx, zmq::SUB, None);
    let dir = tempfile::tempdir().unwrap();
    let conn: EngineConnection = serde_json::from_value(json!({
        "ssh": "", "interface": "tcp://127.0.0.1", "registration": reg_port,
        "control": control_port, "mux": mux_port, "task": task_port, "iopub": iopub_port,
        "hb_ping": ping_port, "hb_pong": pong_port, "broadcast": [],
        "key": key, "location": "localhost"
    }))
    .unwrap();
    let connecting = std::thread::spawn(move || EngineRuntime::connect(&conn, opts));
    let hub = Session::new(key.as_bytes());
    if reg.poll(zmq::POLLIN, 5000).unwrap() > 0 {
        let request = Message::decode(&reg.recv_multipart(0).unwrap(), &hub.signer).unwrap();
        let mut content = json!({"status": "ok", "id": 0, "hb_period": 500});
        for (k, v) in extra.as_object().into_iter().flatten() {
            content[k] = v.clone();
        }
        let mut reply = hub.msg("registration_reply", content);
        reply.idents = request.idents;
        reg.send_multipart(hub.encode(&reply), 0).unwrap();
    }
    let rt = connecting.join().unwrap()?;
    let uuid = rt.uuid.clone();
    Ok(Registered {
        ctx,
        ping,
        ping_port,
        pong,
        mux,
        control,
        rt,
        uuid,
        key: key.to_string(),
        _keep: vec![reg, task, iopub],
        _dir: dir,
    })
}

fn next_request_id(rt: &EngineRuntime, timeout: Duration) -> Option<String> {
    match rt.next(timeout).unwrap() {
        Next::Request(r) => Some(r.header.msg_id),
        Next::Timeout => None,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn a_replayed_request_is_dropped() {
    let f = register_engine(KEY, EngineOptions::default()).unwrap();
    let client = Session::new(f.key.as_bytes());
    let zid = vec![7u8; 5];
    let mut first = client.msg("execute_request", json!({"code": "x += 1"}));
    first.idents = vec![f.uuid.as_bytes().to_vec(), zid.clone()];
    let bytes = client.encode(&first);
    send_routed(&f.mux, bytes.clone());
    send_routed(&f.mux, bytes.clone());
    // The same bytes on the other socket are the same replay.
    send_routed(&f.control, bytes);
    let mut second = client.msg("execute_request", json!({"code": "x += 1"}));
    second.idents = first.idents.clone();
    send_routed(&f.mux, client.encode(&second));

    let timeout = Duration::from_secs(5);
    assert_eq!(next_request_id(&f.rt, timeout), Some(first.header.msg_id));
    assert_eq!(next_request_id(&f.rt, timeout), Some(second.header.msg_id));
    assert_eq!(
        next_request_id(&f.rt, Duration::from_millis(500)),
        None,
        "a replay reached the executor"
    );
}

/// Pings until the heart echoes, so its connection to the ping socket is up.
fn until_pinged(f: &Registered) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        f.ping.send(&b"0"[..], 0).unwrap();
        if f.pong.poll(zmq::POLLIN, 100).unwrap() > 0 {
            f.pong.recv_multipart(0).unwrap();
            return;
        }
        assert!(Instant::now() < deadline, "no heartbeat echo");
    }
}

fn wait_lost(rt: &EngineRuntime, within: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Next::ControllerLost(why) = rt.next(Duration::from_millis(50)).unwrap() {
            return Some((why, start.elapsed()));
        }
    }
    None
}

#[test]
fn a_closed_heartbeat_connection_means_the_controller_is_gone() {
    let opts = EngineOptions {
        lost_grace: Duration::from_millis(500),
        ..Default::default()
    };
    let f = register_engine(KEY, opts).unwrap();
    until_pinged(&f);
    let Registered { ping, rt, .. } = f;
    drop(ping); // as the kernel closes a killed controller's sockets
    let (why, after) = wait_lost(&rt, Duration::from_secs(20)).expect("never noticed");
    assert!(why.contains("closed the heartbeat connection"), "{why}");
    // 500 ms grace; the 50-period rule alone would take 50 s.
    assert!(after < Duration::from_secs(10), "took {after:?}");
    eprintln!("controller death noticed after {after:?} (grace 500 ms)");
}

#[test]
fn a_controller_back_on_the_same_port_within_the_grace_is_kept() {
    let opts = EngineOptions {
        lost_grace: Duration::from_secs(3),
        ..Default::default()
    };
    let f = register_engine(KEY, opts).unwrap();
    until_pinged(&f);
    let Registered {
        ctx,
        ping,
        ping_port,
        rt,
        ..
    } = f;
    drop(ping);
    std::thread::sleep(Duration::from_millis(300));
    let again = ctx.socket(zmq::PUB).unwrap();
    again.set_linger(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while again.bind(&format!("tcp://127.0.0.1:{ping_port}")).is_err() {
        assert!(Instant::now() < deadline, "could not rebind the ping port");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Well past the grace, pinging as a restarted controller does: still alive.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        again.send(&b"1"[..], 0).unwrap();
        match rt.next(Duration::from_millis(100)).unwrap() {
            Next::Timeout => {}
            other => panic!("the engine gave up on a restarted controller: {other:?}"),
        }
    }
}

#[test]
fn an_empty_key_is_refused_unless_insecure() {
    let err = register_engine("", EngineOptions::default())
        .err()
        .expect("an empty key must be refused");
    let text = err.to_string();
    assert!(
        text.contains("empty") && text.contains("--insecure") && text.contains("CORRAL_INSECURE=1"),
        "{text}"
    );
    let opts = EngineOptions {
        insecure: true,
        ..Default::default()
    };
    let f = register_engine("", opts).expect("insecure opt-in registers");
    assert_eq!(f.rt.id, 0);
}

#[test]
fn a_controller_that_asks_for_a_restart_grace_is_waited_for_that_long() {
    // The engine's own grace is 500 ms; a `--reuse`/`--restore` controller asks for 2.5 s.
    let opts = EngineOptions {
        lost_grace: Duration::from_millis(500),
        ..Default::default()
    };
    let f = register_engine_told(KEY, opts, json!({"corral_restart_grace": 2.5})).unwrap();
    until_pinged(&f);
    let Registered { ping, rt, .. } = f;
    let start = Instant::now();
    drop(ping);
    assert!(
        wait_lost(&rt, Duration::from_millis(1500)).is_none(),
        "gave up within the controller's restart grace"
    );
    let (why, _) = wait_lost(&rt, Duration::from_secs(20)).expect("never gave up");
    assert!(why.contains("closed the heartbeat connection"), "{why}");
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}
