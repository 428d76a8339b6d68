//! A real controller on 127.0.0.1 driven by real zmq sockets shaped like stock engines
//! and clients (routing frames as in PROTOCOL.md §1.3).

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn files_registration_queries_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let client_file = dir.path().join("security/ipcontroller-client.json");
    let engine_file = dir.path().join("security/ipcontroller-engine.json");
    let read = corral_wire::ClientConnection::read(&client_file).unwrap();
    assert_eq!(&read, c.client_connection());
    assert_eq!(read.key, KEY);
    assert_eq!(c.engine_connection().broadcast.len(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&engine_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let t0 = Instant::now();
    let engine = FakeEngine::register(&ctx, &c);
    let note = client.wait_notification("registration_notification");
    // Fast pings while registration is pending: live well before one 3 s period.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(note.content, json!({"id": engine.id, "uuid": engine.uuid}));

    let reply = client.query("connection_request", json!({}));
    assert_eq!(reply.msg_type(), "connection_reply");
    assert_eq!(
        reply.content,
        json!({"status": "ok", "engines": {"0": engine.uuid}})
    );

    // No dask scheduler runs: stopping it is still ok, as in ipyparallel.
    let reply = client.query("stop_distributed_request", json!({}));
    assert_eq!(reply.msg_type(), "stop_distributed_reply");
    assert_eq!(reply.content, json!({"status": "ok"}));

    // Nanny-style unregistration: a DEALER without identity, no reply.
    let nanny = ctx.socket(zmq::DEALER).unwrap();
    nanny.set_linger(0).unwrap();
    let e = c.engine_connection();
    nanny.connect(&e.url(e.registration)).unwrap();
    let s = session();
    nanny
        .send_multipart(
            s.encode(&s.msg("unregistration_request", json!({"id": engine.id}))),
            0,
        )
        .unwrap();
    let note = client.wait_notification("unregistration_notification");
    assert_eq!(note.content, json!({"id": engine.id, "uuid": engine.uuid}));
    let reply = client.query("connection_request", json!({}));
    assert_eq!(reply.content["engines"], json!({}));

    let req = client.send(&client.query, &[], "shutdown_request", json!({}), json!({}));
    let reply = decode(&recv(&client.query, TIMEOUT).unwrap());
    assert_eq!(reply.msg_type(), "shutdown_reply");
    assert_eq!(reply.content, json!({"status": "ok"}));
    assert_eq!(reply.parent_header["msg_id"], json!(req.header.msg_id));
    client.wait_notification("shutdown_notification");
    assert!(
        c.wait_timeout(Duration::from_secs(5)),
        "controller stops after shutdown_request"
    );
    c.stop();
    assert!(
        !client_file.exists() && !engine_file.exists(),
        "files deleted on stop"
    );
}

#[test]
fn mux_control_task_and_iopub_paths() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let uuid = engine.uuid.as_bytes();

    // Direct: client [uuid, msg] → engine [mux_out, client_zid, msg], frames untouched.
    let req = client.send(
        &client.mux,
        &[uuid],
        "apply_request",
        json!({}),
        json!({"label": null}),
    );
    let got = recv(&engine.shell, TIMEOUT).expect("engine receives the mux request");
    assert_eq!(got[0], b"mux_out");
    assert_eq!(got[2], b"<IDS|MSG>");
    assert_eq!(
        got[3..],
        client.session.encode(&req)[2..],
        "raw frames forwarded unchanged"
    );
    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    let back = recv(&client.mux, TIMEOUT).expect("client receives the reply");
    assert_eq!(back[0], uuid);
    let reply = decode(&back);
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));

    // Control: same swap with control_out.
    let req = client.send(
        &client.control,
        &[uuid],
        "clear_request",
        json!({}),
        json!({}),
    );
    let got = recv(&engine.control, TIMEOUT).expect("engine receives the control request");
    assert_eq!(got[0], b"control_out");
    engine.reply(&engine.control, &got, json!({"status": "ok"}));
    let reply = decode(&recv(&client.control, TIMEOUT).unwrap());
    assert_eq!(reply.msg_type(), "clear_reply");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));

    // Task: client [msg] → engine [task_out, client_zid, msg] → client [uuid, msg].
    let md = json!({"after": [], "follow": [], "timeout": 0.0, "targets": [], "retries": 0, "label": null});
    let req = client.send(&client.task, &[], "apply_request", json!({}), md);
    let got = recv(&engine.shell, TIMEOUT).expect("engine receives the task");
    assert_eq!(got[0], b"task_out");
    assert_eq!(got[2], b"<IDS|MSG>");
    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    let back = recv(&client.task, TIMEOUT).expect("client receives the task reply");
    assert_eq!(back[0], uuid);
    assert_eq!(
        decode(&back).parent_msg_id(),
        Some(req.header.msg_id.as_str())
    );

    // Task targeted at a uuid that is not an engine: ImpossibleDependency, not a hang.
    let md = json!({"targets": ["no-such-engine"]});
    let req = client.send(&client.task, &[], "apply_request", json!({}), md);
    let reply = decode(&recv(&client.task, TIMEOUT).expect("impossible task answered"));
    assert_eq!(reply.content["ename"], "ImpossibleDependency");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));

    // Direct request to an unknown engine: an EngineError reply.
    let req = client.send(
        &client.mux,
        &[b"ghost"],
        "apply_request",
        json!({}),
        json!({}),
    );
    let back = recv(&client.mux, TIMEOUT).expect("unknown engine answered");
    assert_eq!(back[0], b"ghost");
    let reply = decode(&back);
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.content["ename"], "EngineError");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));

    // Queue counts: one direct and one task completed on engine 0.
    let reply = client.query("queue_request", json!({"targets": null, "verbose": false}));
    assert_eq!(
        reply.content["0"],
        json!({"queue": 0, "completed": 2, "tasks": 0})
    );
    assert_eq!(reply.content["status"], "ok");

    // IOPub: topic + message re-published unchanged (retry: PUB/SUB joins are lazy).
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        let mut msg = engine
            .session
            .msg("stream", json!({"name": "stdout", "text": "hi\n"}));
        msg.idents = vec![b"engine.0.stdout".to_vec()];
        let frames = engine.session.encode(&msg);
        engine.iopub.send_multipart(frames.clone(), 0).unwrap();
        if let Some(got) = recv(&client.iopub, Duration::from_millis(200)) {
            assert_eq!(got, frames);
            seen = Some(got);
        }
    }
    assert!(seen.is_some(), "iopub relayed");
    c.stop();
}

#[test]
fn tasks_queue_when_busy_and_fail_when_their_engine_dies() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);

    let first = client.send(&client.task, &[], "apply_request", json!({}), json!({}));
    let second = client.send(&client.task, &[], "apply_request", json!({}), json!({}));
    let got = recv(&engine.shell, TIMEOUT).expect("first task");
    assert_eq!(decode(&got).header.msg_id, first.header.msg_id);
    assert!(
        recv(&engine.shell, Duration::from_millis(300)).is_none(),
        "hwm 1: second task waits"
    );
    let reply = client.query("queue_request", json!({"targets": null, "verbose": false}));
    assert_eq!(reply.content["0"]["tasks"], 1);
    assert_eq!(reply.content["unassigned"], 1);

    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    recv(&client.task, TIMEOUT).expect("first reply");
    let got = recv(&engine.shell, TIMEOUT).expect("second task after the first finished");
    assert_eq!(decode(&got).header.msg_id, second.header.msg_id);

    // The engine dies with the task outstanding (nanny's unregistration).
    engine
        .reg
        .send_multipart(
            engine.session.encode(
                &engine
                    .session
                    .msg("unregistration_request", json!({"id": engine.id})),
            ),
            0,
        )
        .unwrap();
    let back = recv(&client.task, TIMEOUT).expect("stranded task is failed");
    let reply = decode(&back);
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.content["ename"], "EngineError");
    assert_eq!(reply.parent_msg_id(), Some(second.header.msg_id.as_str()));
    c.stop();
}

#[test]
fn silent_heart_unregisters_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    // 100 ms period, 10 misses: dead after ~1.1 s.
    let c = start(dir.path(), 100);
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let mut engine = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");
    std::thread::sleep(Duration::from_millis(400));
    let reply = client.query("connection_request", json!({}));
    assert_eq!(
        reply.content["engines"],
        json!({"0": engine.uuid}),
        "alive while answering"
    );
    engine.stop_heart();
    let note = client.wait_notification("unregistration_notification");
    assert_eq!(note.content["uuid"], json!(engine.uuid));
    c.stop();
}

#[test]
fn bad_input_on_every_socket_is_dropped_and_service_continues() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let uuid = engine.uuid.as_bytes().to_vec();

    let good = client
        .session
        .encode(&client.session.msg("connection_request", json!({})));
    let mut bad_sig = good.clone();
    bad_sig[1] = b"0000".to_vec();
    let mut unsigned = good.clone();
    unsigned[1] = Vec::new();
    let truncated = good[..3].to_vec();
    let wrong_key = corral_wire::Session::new(b"other")
        .encode(&client.session.msg("connection_request", json!({})));
    let not_json = {
        let parts = [b"not json".as_slice(), b"{", b"\xff\xfe", b"[]"];
        let mut f = vec![b"<IDS|MSG>".to_vec(), client.session.signer.sign(parts)];
        f.extend(parts.iter().map(|p| p.to_vec()));
        f
    };
    let garbage = vec![b"\x00\x01garbage".to_vec()];
    let bads = [
        bad_sig,
        unsigned,
        truncated,
        wrong_key,
        not_json,
        garbage,
        vec![Vec::new()],
    ];

    let e = c.engine_connection();
    let f = c.client_connection();
    let raw = |kind, url: String| {
        let s = ctx.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&url).unwrap();
        s
    };
    let reg = raw(zmq::DEALER, f.url(f.registration));
    let mux_c = raw(zmq::DEALER, f.url(f.mux));
    let ctl_c = raw(zmq::DEALER, f.url(f.control));
    let task_c = raw(zmq::DEALER, f.url(f.task));
    let bcast_c = raw(zmq::DEALER, f.url(f.broadcast));
    let iopub_e = raw(zmq::PUB, e.url(e.iopub));
    let hb = raw(zmq::DEALER, e.url(e.hb_pong));
    std::thread::sleep(Duration::from_millis(100));
    for bad in &bads {
        reg.send_multipart(bad.clone(), 0).unwrap();
        task_c.send_multipart(bad.clone(), 0).unwrap();
        bcast_c.send_multipart(bad.clone(), 0).unwrap();
        iopub_e.send_multipart(bad.clone(), 0).unwrap();
        hb.send_multipart(bad.clone(), 0).unwrap();
        let mut routed = vec![uuid.clone()];
        routed.extend(bad.iter().cloned());
        mux_c.send_multipart(routed.clone(), 0).unwrap();
        ctl_c.send_multipart(routed.clone(), 0).unwrap();
        // Engine side: bad replies toward a made-up client.
        let mut from_engine = vec![b"mux_out".to_vec(), b"\x00fake".to_vec()];
        from_engine.extend(bad.iter().cloned());
        engine.shell.send_multipart(from_engine.clone(), 0).unwrap();
        from_engine[0] = b"control_out".to_vec();
        engine.control.send_multipart(from_engine, 0).unwrap();
    }
    // Nothing invalid reached the engine.
    assert!(recv(&engine.shell, Duration::from_millis(300)).is_none());
    assert!(recv(&engine.control, Duration::from_millis(50)).is_none());

    // Still serving: a valid query, a relayed request, a relayed task.
    let reply = client.query("connection_request", json!({}));
    assert_eq!(reply.content["engines"], json!({"0": engine.uuid}));
    let req = client.send(&client.mux, &[&uuid], "apply_request", json!({}), json!({}));
    let got = recv(&engine.shell, TIMEOUT).expect("still relaying");
    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    assert_eq!(
        decode(&recv(&client.mux, TIMEOUT).unwrap()).parent_msg_id(),
        Some(req.header.msg_id.as_str())
    );
    client.send(&client.task, &[], "apply_request", json!({}), json!({}));
    let got = recv(&engine.shell, TIMEOUT).expect("still scheduling");
    assert_eq!(got[0], b"task_out");
    c.stop();
}

/// A client that has a reply and then asks the hub must see that task as done: the
/// scheduler told the hub before it relayed the reply (the race stock peers hit in CI).
#[test]
fn queue_status_after_a_reply_counts_that_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    for done in 1..=50 {
        client.send(&client.task, &[], "apply_request", json!({}), json!({}));
        let got = recv(&engine.shell, TIMEOUT).expect("task reaches the engine");
        engine.reply(&engine.shell, &got, json!({"status": "ok"}));
        recv(&client.task, TIMEOUT).expect("reply reaches the client");
        let reply = client.query("queue_request", json!({"targets": null, "verbose": false}));
        assert_eq!(
            (
                reply.content["unassigned"].clone(),
                reply.content["0"].clone()
            ),
            (
                json!(0),
                json!({"queue": 0, "completed": 2 * done - 1, "tasks": 0})
            ),
            "after task {done}"
        );
        // The same for a direct (MUX) request.
        client.send(
            &client.mux,
            &[engine.uuid.as_bytes()],
            "apply_request",
            json!({}),
            json!({}),
        );
        let got = recv(&engine.shell, TIMEOUT).expect("request reaches the engine");
        engine.reply(&engine.shell, &got, json!({"status": "ok"}));
        recv(&client.mux, TIMEOUT).expect("reply reaches the client");
        let reply = client.query("queue_request", json!({"targets": null, "verbose": false}));
        assert_eq!(
            reply.content["0"],
            json!({"queue": 0, "completed": 2 * done, "tasks": 0}),
            "after request {done}"
        );
    }
    c.stop();
}
