//! The hub against hostile or broken peers, over real sockets: replays, ill-formed signed
//! requests of every kind, oversized frames, and an empty key.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn a_replayed_request_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let bytes = client
        .session
        .encode(&client.session.msg("connection_request", json!({})));
    client.query.send_multipart(bytes.clone(), 0).unwrap();
    assert!(
        recv(&client.query, TIMEOUT).is_some(),
        "first copy answered"
    );
    client.query.send_multipart(bytes, 0).unwrap();
    assert!(
        recv(&client.query, Duration::from_millis(500)).is_none(),
        "the replay was acted on"
    );
    // A fresh request still gets its reply.
    let reply = client.query("connection_request", json!({}));
    assert_eq!(reply.content["status"], "ok");
    c.stop();
}

/// Contents of the wrong shape for every field the hub reads.
fn ill_formed_contents() -> Vec<Value> {
    let odd = [
        json!(null),
        json!(7),
        json!(-1),
        json!(1e300),
        json!("all"),
        json!("x"),
        json!([1, "a", null, {}]),
        json!({"$where": 1}),
        json!(true),
    ];
    let fields = [
        "msg_ids",
        "engine_ids",
        "targets",
        "verbose",
        "status_only",
        "query",
        "keys",
        "uuid",
        "id",
    ];
    let mut out = vec![
        json!([]),
        json!("content"),
        json!(3),
        json!(null),
        json!({}),
    ];
    for f in fields {
        for v in &odd {
            out.push(json!({ f: v }));
        }
    }
    out
}

#[test]
fn ill_formed_signed_requests_of_every_kind_get_a_reply_or_a_logged_drop() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let kinds = [
        "queue_request",
        "load_request",
        "history_request",
        "result_request",
        "db_request",
        "resubmit_request",
        "purge_request",
        "connection_request",
        "unregistration_request",
        "registration_request",
        "some_unknown_request",
        "not_a_request",
    ];
    let mut answered = 0;
    for kind in kinds {
        for content in ill_formed_contents() {
            // Metadata and parent of the wrong shape too.
            let mut msg = client.session.msg(kind, content);
            msg.metadata = json!(["not", "a", "dict"]);
            msg.parent_header = json!("nope");
            client
                .query
                .send_multipart(client.session.encode(&msg), 0)
                .unwrap();
        }
    }
    while let Some(frames) = recv(&client.query, Duration::from_millis(500)) {
        let reply = decode(&frames);
        assert!(reply.msg_type().ends_with("_reply"), "{}", reply.msg_type());
        answered += 1;
    }
    assert!(answered > 0);
    // Still serving, and the engine is still registered (no ill-formed request took it).
    let reply = client.query("connection_request", json!({}));
    assert_eq!(
        reply.content["engines"][engine.id.to_string()],
        json!(engine.uuid)
    );
    c.stop();
}

#[test]
fn a_frame_over_the_maximum_size_drops_its_connection_only() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, ""),
        key: Some(KEY.into()),
        max_message_size: 64 * 1024,
        ..ControllerConfig::default()
    })
    .expect("controller starts");
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let mut big = client.session.msg("connection_request", json!({}));
    big.buffers = vec![vec![0u8; 128 * 1024]];
    client
        .query
        .send_multipart(client.session.encode(&big), 0)
        .unwrap();
    assert!(
        recv(&client.query, Duration::from_millis(500)).is_none(),
        "an oversized message was accepted"
    );
    // Another peer is served; under the limit is fine.
    let other = FakeClient::connect(&ctx, &c);
    let reply = other.query("connection_request", json!({}));
    assert_eq!(reply.content["status"], "ok");
    c.stop();
}

#[test]
fn an_empty_key_is_refused_unless_insecure_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let config = ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, ""),
        key: Some(String::new()),
        ..ControllerConfig::default()
    };
    let err = Controller::start(config.clone())
        .err()
        .expect("an empty key is refused");
    let text = err.to_string();
    assert!(
        text.contains("--insecure") && text.contains("CORRAL_INSECURE=1"),
        "{text}"
    );
    assert!(
        !dir.path()
            .join("security/ipcontroller-client.json")
            .exists(),
        "nothing written"
    );
    let c = Controller::start(ControllerConfig {
        insecure: true,
        ..config
    })
    .expect("insecure on request");
    assert_eq!(c.client_connection().key, "");
    c.stop();
}
