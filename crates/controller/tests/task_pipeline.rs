//! The task scheduler's high-water mark through a real controller and fake engines on
//! 127.0.0.1: several tasks outstanding per engine, and an engine that dies holding them.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::{Message, ProfileLocation};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

fn start_with_hwm(dir: &std::path::Path, hwm: usize) -> Controller {
    Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, ""),
        key: Some(KEY.into()),
        task_hwm: corral_controller::config::TaskHwm::Fixed(hwm),
        ..ControllerConfig::default()
    })
    .expect("controller starts")
}

/// Every task `e` receives until none comes for `QUIET`, as received.
fn drain(e: &FakeEngine) -> Vec<Vec<Vec<u8>>> {
    let mut got = Vec::new();
    while let Some(frames) = recv(&e.shell, QUIET) {
        got.push(frames);
    }
    got
}

fn msg_id(frames: &[Vec<u8>]) -> String {
    decode(frames).header.msg_id
}

#[test]
fn three_tasks_per_engine_go_out_at_once_and_die_with_their_engine() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_hwm(dir.path(), 3);
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let a = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");
    let b = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");

    let sent: Vec<Message> = (0..7)
        .map(|_| client.send(&client.task, &[], "apply_request", json!({}), json!({})))
        .collect();
    let (on_a, on_b) = (drain(&a), drain(&b));
    assert_eq!((on_a.len(), on_b.len()), (3, 3), "hwm 3: the seventh waits");

    // b answers one: the seventh task goes to b.
    b.reply(&b.shell, &on_b[0], json!({"status": "ok"}));
    let reply = decode(&recv(&client.task, TIMEOUT).expect("reply"));
    assert_eq!(reply.parent_msg_id(), Some(msg_id(&on_b[0]).as_str()));
    let seventh = drain(&b);
    assert_eq!(seventh.len(), 1);
    assert_eq!(msg_id(&seventh[0]), sent[6].header.msg_id);

    // a dies holding three tasks: each becomes an EngineError for the client.
    let doomed: HashSet<String> = on_a.iter().map(|f| msg_id(f)).collect();
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = HashSet::new();
    while failed.len() < 3 && Instant::now() < deadline {
        if let Some(frames) = recv(&client.task, Duration::from_millis(100)) {
            let reply = decode(&frames);
            assert_eq!(reply.content["ename"], "EngineError", "{:?}", reply.content);
            failed.insert(reply.parent_msg_id().unwrap().to_string());
        }
    }
    assert_eq!(failed, doomed);
    c.stop();
}
