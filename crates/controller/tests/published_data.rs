//! Published data kept by the controller, read back over real sockets with corral's
//! `data_request` and `db_request` with `keys: ["data"]` (docs/PROTOCOL.md §12).

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

/// What `publish_data` sends: topic `datapub`, content `{keys}`, the pickled dict as
/// buffers (opaque bytes here: the controller never unpickles).
fn publish(engine: &FakeEngine, parent: &corral_wire::Header, keys: &[&str], frame: &[u8]) {
    let mut msg = engine
        .session
        .msg("data_message", json!({ "keys": keys }))
        .with_parent(parent);
    msg.metadata = json!({"engine": engine.uuid});
    msg.idents = vec![b"datapub".to_vec()];
    msg.buffers = vec![frame.to_vec()];
    engine
        .iopub
        .send_multipart(engine.session.encode(&msg), 0)
        .unwrap();
}

#[test]
fn data_request_returns_the_latest_snapshot_history_and_engine_state() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let uuid = engine.uuid.clone();

    let req = client.send(
        &client.mux,
        &[uuid.as_bytes()],
        "apply_request",
        json!({}),
        json!({}),
    );
    let msg_id = req.header.msg_id.clone();
    let got = recv(&engine.shell, TIMEOUT).expect("engine receives the request");

    // Until the relay's SUB has joined the engine's PUB, publications are lost: send
    // output until the client sees one, then publish.
    let mut out = engine
        .session
        .msg("stream", json!({"name": "stdout", "text": "."}))
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

    // Nothing published yet: a known task with no engine entries.
    let r = client.query("data_request", json!({"msg_ids": [msg_id]}));
    assert_eq!(r.msg_type(), "data_reply");
    assert_eq!(r.content, json!({"status": "ok", "tasks": {&msg_id: []}}));

    publish(&engine, &req.header, &["a", "i"], b"u1");
    publish(&engine, &req.header, &["i"], b"u2");
    publish(&engine, &req.header, &["i"], b"u3");
    let r = query_until(
        &client,
        "data_request",
        json!({"msg_ids": [msg_id], "history": true}),
        |r| r.content["tasks"][&msg_id][0]["seq"] == 3,
    );
    let entry = &r.content["tasks"][&msg_id][0];
    assert_eq!(entry["engine_uuid"], json!(uuid));
    assert_eq!(entry["engine_id"], json!(engine.id));
    assert_eq!(entry["engine_alive"], true);
    assert_eq!(entry["engine_died"], Value::Null);
    assert!(entry["published"].is_string() && entry["received"].is_string());
    // The snapshot: u1 still holds the only `a`; u2's keys are all in u3.
    let seqs = |list: &Value| -> Vec<u64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|u| u["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&entry["updates"]), vec![1, 3]);
    assert_eq!(entry["updates"][0]["keys"], json!(["a", "i"]));
    assert_eq!(seqs(&entry["history"]), vec![1, 2]);
    assert_eq!(
        r.buffers,
        vec![
            b"u1".to_vec(),
            b"u3".to_vec(),
            b"u1".to_vec(),
            b"u2".to_vec()
        ],
        "snapshot frames, then history frames"
    );

    // Sequence numbers and times only, no frames.
    let r = client.query(
        "data_request",
        json!({"msg_ids": [msg_id], "buffers": false}),
    );
    assert!(r.buffers.is_empty());
    assert_eq!(seqs(&r.content["tasks"][&msg_id][0]["updates"]), vec![1, 3]);

    // Without history, and through db_request: data frames after the other buffers.
    let r = client.query(
        "db_request",
        json!({"query": {"msg_id": msg_id}, "keys": ["data", "buffers"]}),
    );
    assert_eq!(r.content["buffer_lens"], json!([1]));
    assert_eq!(r.content["data_buffer_lens"], json!([2]));
    assert_eq!(
        seqs(&r.content["records"][0]["data"][0]["updates"]),
        vec![1, 3]
    );
    assert_eq!(
        r.buffers,
        vec![b"opaque-buffer".to_vec(), b"u1".to_vec(), b"u3".to_vec()]
    );
    // A stock query (no `data` key) is answered as before.
    let r = client.query(
        "db_request",
        json!({"query": {"msg_id": msg_id}, "keys": ["msg_id"]}),
    );
    assert!(r.content.get("data_buffer_lens").is_none());
    assert_eq!(r.content["records"], json!([{"msg_id": msg_id}]));

    // The engine's reply: the data survives the task's end.
    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    recv(&client.mux, TIMEOUT).expect("client receives the reply");
    query_until(
        &client,
        "result_request",
        json!({"msg_ids": [msg_id], "status_only": true}),
        |r| r.content["completed"] == json!([msg_id]),
    );

    // The engine leaves: readers are told it died, and when.
    let unreg = engine
        .session
        .msg("unregistration_request", json!({"id": engine.id}));
    engine
        .reg
        .send_multipart(engine.session.encode(&unreg), 0)
        .unwrap();
    client.wait_notification("unregistration_notification");
    let r = client.query("data_request", json!({"msg_ids": [msg_id]}));
    let entry = &r.content["tasks"][&msg_id][0];
    assert_eq!(entry["engine_alive"], false);
    assert!(entry["engine_died"].is_string(), "{entry}");
    assert_eq!(entry["engine_id"], json!(engine.id));
    assert_eq!(entry["seq"], 3);

    // Unknown msg_ids are errors; purge drops the data with the record.
    let r = client.query("data_request", json!({"msg_ids": ["nope"]}));
    assert_eq!(r.content["ename"], "KeyError");
    let r = client.query("purge_request", json!({"msg_ids": [msg_id]}));
    assert_eq!(r.content["status"], "ok", "{:?}", r.content);
    let r = client.query("data_request", json!({"msg_ids": [msg_id]}));
    assert_eq!(r.content["ename"], "KeyError");
    c.stop();
}
