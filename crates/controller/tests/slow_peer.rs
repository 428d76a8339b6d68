//! A peer that stops reading never blocks a relay: the controller keeps serving others.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_client_that_never_reads_its_replies_does_not_stall_the_mux_relay() {
    let dir = tempfile::tempdir().unwrap();
    // A small high-water mark, so the stuck client's queue fills quickly.
    let c = Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, ""),
        key: Some(KEY.into()),
        hwm: 10,
        ..ControllerConfig::default()
    })
    .expect("controller starts");
    // Should a relay block again, fail without waiting on it at stop (its thread would
    // never join).
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&c)));
    if let Err(panic) = outcome {
        std::mem::forget(c);
        std::panic::resume_unwind(panic);
    }
    c.stop();
}

fn scenario(c: &Controller) {
    let ctx = zmq::Context::new();
    let (good, engine) = client_and_live_engine(&ctx, c);
    let stuck = FakeClient::connect(&ctx, c);
    stuck.mux.set_rcvhwm(1).unwrap();
    let uuid = engine.uuid.as_bytes().to_vec();
    // The stuck client sends requests but never receives; every reply carries 64 KiB, so
    // kernel buffers and queues fill well before the last one.
    let big = vec![7u8; 64 * 1024];
    for _ in 0..1000 {
        stuck.send(&stuck.mux, &[&uuid], "apply_request", json!({}), json!({}));
        let got = recv(&engine.shell, TIMEOUT).expect("request reaches the engine");
        let req = decode(&got);
        let mut reply = engine
            .session
            .msg("apply_reply", json!({"status": "ok"}))
            .with_parent(&req.header);
        reply.metadata = json!({"engine": engine.uuid, "status": "ok"});
        reply.idents = req.idents.clone();
        reply.buffers = vec![big.clone()];
        engine
            .shell
            .send_multipart(engine.session.encode(&reply), 0)
            .unwrap();
    }
    // The other client is still served at once, by the same relay.
    let t0 = Instant::now();
    let req = good.send(&good.mux, &[&uuid], "apply_request", json!({}), json!({}));
    let got = recv_until(&engine.shell, TIMEOUT, |f| {
        decode(f).header.msg_id == req.header.msg_id
    })
    .expect("the relay still forwards requests");
    engine.reply(&engine.shell, &got, json!({"status": "ok"}));
    let back = decode(&recv(&good.mux, TIMEOUT).expect("the relay still forwards replies"));
    assert_eq!(back.parent_msg_id(), Some(req.header.msg_id.as_str()));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // And the hub answers.
    assert_eq!(
        good.query("connection_request", json!({})).content["status"],
        "ok"
    );
}
