//! Task records through real sockets: an apply through the MUX relay, its output on IOPub
//! and its reply are answered back by the hub's result_request and db_request.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Repeats a hub query until `done` holds for its reply (the relays report to the hub
/// asynchronously); panics after the timeout.
fn query_until(
    client: &FakeClient,
    msg_type: &str,
    content: Value,
    done: impl Fn(&corral_wire::Message) -> bool,
) -> corral_wire::Message {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reply = client.query(msg_type, content.clone());
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "no satisfying {msg_type}: {:?}",
            reply.content
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn result_and_db_requests_after_a_mux_apply() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let uuid = engine.uuid.as_bytes();

    let req = client.send(
        &client.mux,
        &[uuid],
        "apply_request",
        json!({}),
        json!({"label": "L"}),
    );
    let msg_id = req.header.msg_id.clone();
    let got = recv(&engine.shell, TIMEOUT).expect("engine receives the mux request");

    // Pending until the reply: the hub knows the request.
    let r = query_until(
        &client,
        "result_request",
        json!({"msg_ids": [msg_id], "status_only": true}),
        |r| r.content["status"] == "ok",
    );
    assert_eq!(r.content["pending"], json!([msg_id]));

    // Output parented to the request (retried: PUB/SUB joins are lazy).
    let mut out = engine
        .session
        .msg("stream", json!({"name": "stdout", "text": "hi\n"}))
        .with_parent(&req.header);
    out.idents = vec![b"engine.0.stdout".to_vec()];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        engine
            .iopub
            .send_multipart(engine.session.encode(&out), 0)
            .unwrap();
        if recv(&client.iopub, Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "iopub not relayed");
    }

    let mut reply = engine
        .session
        .msg("apply_reply", json!({"status": "ok"}))
        .with_parent(&decode(&got).header);
    reply.metadata =
        json!({"engine": engine.uuid, "status": "ok", "started": "2026-01-01T00:00:00Z"});
    reply.idents = decode(&got).idents.clone();
    reply.buffers = vec![b"result-buffer".to_vec()];
    engine
        .shell
        .send_multipart(engine.session.encode(&reply), 0)
        .unwrap();
    recv(&client.mux, TIMEOUT).expect("client receives the reply");

    let r = query_until(
        &client,
        "result_request",
        json!({"msg_ids": [msg_id], "status_only": false}),
        |r| r.content["completed"] == json!([msg_id]),
    );
    let entry = &r.content[&msg_id];
    assert_eq!(entry["header"]["msg_id"], json!(msg_id));
    assert_eq!(entry["metadata"], json!({"label": "L"}));
    assert_eq!(entry["result_header"]["msg_id"], json!(reply.header.msg_id));
    assert_eq!(entry["result_content"], json!({"status": "ok"}));
    assert_eq!(entry["result_metadata"]["started"], "2026-01-01T00:00:00Z");
    assert!(entry["received"].is_string());
    assert!(entry["io"]["stdout"].as_str().unwrap().starts_with("hi\n"));
    assert_eq!(r.buffers, vec![b"result-buffer".to_vec()]);

    let r = client.query(
        "db_request",
        json!({"query": {"msg_id": {"$in": [msg_id]}}, "keys": ["msg_id", "completed", "engine_uuid", "queue", "buffers"]}),
    );
    assert_eq!(
        r.content,
        json!({"status": "ok", "records": [{"msg_id": msg_id, "completed": reply.header.date,
               "engine_uuid": engine.uuid, "queue": "mux"}],
               "buffer_lens": [1], "result_buffer_lens": null})
    );
    assert_eq!(r.buffers, vec![b"opaque-buffer".to_vec()]);

    let r = client.query("history_request", json!({}));
    assert_eq!(r.content, json!({"status": "ok", "history": [msg_id]}));

    let r = client.query(
        "db_request",
        json!({"query": {"completed": {"$ne": null}}, "keys": ["msg_id"]}),
    );
    assert_eq!(r.content["records"], json!([{"msg_id": msg_id}]));
    c.stop();
}
