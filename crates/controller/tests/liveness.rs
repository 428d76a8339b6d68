//! Engine liveness against a real controller: a dead engine is noticed at once through its
//! closed connections, a slow one is never declared dead for being slow, and a
//! registration whose first heartbeat comes late still goes live.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;
use serde_json::json;
use std::time::{Duration, Instant};

/// With the default 3 s period, the heartbeat alone needs 33 s to declare an engine dead.
const HB_PERIOD_MS: u64 = 3000;

#[test]
fn an_engine_whose_connections_close_is_declared_dead_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), HB_PERIOD_MS);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let other = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");
    let req = client.send(
        &client.task,
        &[],
        "apply_request",
        json!({}),
        json!({"targets": [engine.uuid]}),
    );
    recv(&engine.shell, TIMEOUT).expect("the task reaches its engine");
    let uuid = engine.uuid.clone();
    let t0 = Instant::now();
    engine.kill();
    let note = client.wait_notification("unregistration_notification");
    let took = t0.elapsed();
    assert_eq!(note.content["uuid"], json!(uuid));
    // Measured ~0.5 s; generous for a loaded 2-core machine, far below 33 s.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let reply = decode(&recv(&client.task, TIMEOUT).expect("its task is failed"));
    assert_eq!(reply.content["ename"], "EngineError");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
    let live = client.query("connection_request", json!({}));
    assert_eq!(
        live.content["engines"],
        json!({other.id.to_string(): other.uuid})
    );
    c.stop();
}

#[test]
fn a_silent_engine_is_not_declared_dead_for_a_close_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), HB_PERIOD_MS);
    let ctx = zmq::Context::new();
    let (client, mut slow) = client_and_live_engine(&ctx, &c);
    // Alive but not answering pings for now (a loaded machine), connections open.
    slow.stop_heart();
    // A stray peer connects to the heartbeat port and goes away: a close, and a silent
    // engine, but not an engine's death (an engine also closes its control connection).
    let e = c.engine_connection();
    let stray = ctx.socket(zmq::DEALER).unwrap();
    stray.set_linger(0).unwrap();
    stray.connect(&e.url(e.hb_pong)).unwrap();
    stray.send("hello", 0).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(stray);
    // And an engine leaves cleanly (unregistration, then its connections close).
    let leaving = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");
    let bye = leaving
        .session
        .msg("unregistration_request", json!({"id": leaving.id}));
    leaving
        .reg
        .send_multipart(leaving.session.encode(&bye), 0)
        .unwrap();
    let note = client.wait_notification("unregistration_notification");
    assert_eq!(note.content["uuid"], json!(leaving.uuid));
    std::thread::sleep(Duration::from_millis(100));
    leaving.kill();
    let note = recv_until(&client.notification, Duration::from_secs(2), |f| {
        is_type(f, "unregistration_notification")
    });
    assert!(note.is_none(), "a slow engine was declared dead");
    c.stop();
}

#[test]
fn a_registration_whose_first_heartbeat_is_late_still_goes_live() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, ""),
        key: Some(KEY.into()),
        hb_period_ms: 100,
        registration_timeout: Some(Duration::from_millis(300)),
        ..ControllerConfig::default()
    })
    .expect("controller starts");
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    // The first pong comes well after the registration timeout and the hub's 1 s tick.
    let engine = FakeEngine::register_with_heart_after(&ctx, &c, Duration::from_millis(2500));
    let note = client.wait_notification("registration_notification");
    assert_eq!(note.content["uuid"], json!(engine.uuid));
    let live = client.query("connection_request", json!({}));
    assert_eq!(
        live.content["engines"],
        json!({engine.id.to_string(): engine.uuid})
    );
    c.stop();
}
