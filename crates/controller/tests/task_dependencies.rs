//! The task scheduler's retries, `after`/`follow` dependencies, timeouts and engine-side
//! unmet dependencies, through a real controller and fake engines on 127.0.0.1.

mod common;

use common::*;
use corral_wire::Message;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

/// Answers a task with `status` and `dependencies_met`, as a stock engine would.
fn answer(e: &FakeEngine, frames: &[Vec<u8>], status: &str, deps_met: bool) {
    let req = decode(frames);
    let mut reply = e
        .session
        .msg("apply_reply", json!({"status": status}))
        .with_parent(&req.header);
    reply.metadata = json!({"engine": e.uuid, "status": status, "dependencies_met": deps_met});
    reply.idents = req.idents.clone();
    e.shell.send_multipart(e.session.encode(&reply), 0).unwrap();
}

/// The first task any of `engines` receives within `timeout`: (engine index, frames).
fn recv_any(engines: &[&FakeEngine], timeout: Duration) -> Option<(usize, Vec<Vec<u8>>)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for (i, e) in engines.iter().enumerate() {
            if let Some(f) = recv(&e.shell, Duration::from_millis(10)) {
                return Some((i, f));
            }
        }
    }
    None
}

fn task(client: &FakeClient, md: Value) -> Message {
    client.send(&client.task, &[], "apply_request", json!({}), md)
}

fn reply_to(client: &FakeClient) -> Message {
    decode(&recv(&client.task, TIMEOUT).expect("task reply"))
}

/// A controller, a client and `n` registered engines.
fn cluster(
    n: usize,
) -> (
    tempfile::TempDir,
    corral_controller::Controller,
    zmq::Context,
    FakeClient,
    Vec<FakeEngine>,
) {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let engines: Vec<FakeEngine> = (0..n)
        .map(|_| {
            let e = FakeEngine::register(&ctx, &c);
            client.wait_notification("registration_notification");
            e
        })
        .collect();
    (dir, c, ctx, client, engines)
}

fn assert_scheduler_error(reply: &Message, req: &Message, ename: &str) {
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.content["status"], "error");
    assert_eq!(reply.content["ename"], ename, "{:?}", reply.content);
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
    assert!(
        reply.metadata.get("engine").is_none(),
        "{:?}",
        reply.metadata
    );
    assert!(reply.idents.is_empty(), "only the client's id was routed");
}

#[test]
fn a_failed_task_is_retried_on_another_engine_and_only_the_last_reply_returns() {
    let (_dir, c, _ctx, client, engines) = cluster(2);
    let refs: Vec<&FakeEngine> = engines.iter().collect();
    let req = task(&client, json!({"retries": 1}));
    let (first, got) = recv_any(&refs, TIMEOUT).expect("first attempt");
    answer(refs[first], &got, "error", true);
    let (second, again) = recv_any(&refs, TIMEOUT).expect("retried");
    assert_ne!(first, second, "the failing engine is blacklisted");
    assert_eq!(decode(&again).header.msg_id, req.header.msg_id);
    assert!(
        recv(&client.task, QUIET).is_none(),
        "the first failure is not relayed"
    );
    answer(refs[second], &again, "error", true);
    let reply = reply_to(&client);
    assert_eq!(reply.metadata["status"], "error");
    assert_eq!(reply.idents, vec![refs[second].uuid.as_bytes().to_vec()]);

    // An engine-side unmet dependency re-routes without spending a retry.
    let req = task(&client, json!({}));
    let (first, got) = recv_any(&refs, TIMEOUT).expect("task");
    answer(refs[first], &got, "error", false);
    let (second, again) = recv_any(&refs, TIMEOUT).expect("re-routed");
    assert_ne!(first, second);
    assert_eq!(decode(&again).header.msg_id, req.header.msg_id);
    answer(refs[second], &again, "ok", true);
    assert_eq!(reply_to(&client).metadata["status"], "ok");
    c.stop();
}

#[test]
fn after_waits_for_its_dependencies_and_follow_goes_where_they_ran() {
    let (_dir, c, _ctx, client, engines) = cluster(2);
    let refs: Vec<&FakeEngine> = engines.iter().collect();
    let a = task(&client, json!({}));
    let (ea, got_a) = recv_any(&refs, TIMEOUT).expect("a");
    let b = task(&client, json!({"after": [a.header.msg_id]}));
    assert!(
        recv_any(&refs, QUIET).is_none(),
        "b waits for a although an engine is free"
    );
    answer(refs[ea], &got_a, "ok", true);
    reply_to(&client);
    let (eb, got_b) = recv_any(&refs, TIMEOUT).expect("b after a");
    assert_eq!(decode(&got_b).header.msg_id, b.header.msg_id);
    answer(refs[eb], &got_b, "ok", true);
    reply_to(&client);

    // follow: both engines are idle; each task must go where its dependency ran.
    for (dep, engine) in [(&b, eb), (&a, ea), (&b, eb)] {
        let f = task(&client, json!({"follow": [dep.header.msg_id]}));
        let (ef, got) = recv_any(&refs, TIMEOUT).expect("follow task");
        assert_eq!(decode(&got).header.msg_id, f.header.msg_id);
        assert_eq!(ef, engine, "follow runs where its dependency ran");
        answer(refs[ef], &got, "ok", true);
        reply_to(&client);
    }

    // A failed dependency makes `after` impossible; with failure=true it runs.
    let bad = task(&client, json!({}));
    let (e, got) = recv_any(&refs, TIMEOUT).expect("bad");
    answer(refs[e], &got, "error", true);
    reply_to(&client);
    let req = task(&client, json!({"after": [bad.header.msg_id]}));
    assert_scheduler_error(&reply_to(&client), &req, "ImpossibleDependency");
    let dict = json!({"dependencies": [bad.header.msg_id], "all": true, "success": false, "failure": true});
    let ok = task(&client, json!({"after": dict}));
    let (e, got) = recv_any(&refs, TIMEOUT).expect("runs after a failure");
    assert_eq!(decode(&got).header.msg_id, ok.header.msg_id);
    answer(refs[e], &got, "ok", true);
    reply_to(&client);

    // follow on tasks that ran on different engines: impossible.
    let req = task(
        &client,
        json!({"follow": [a.header.msg_id, b.header.msg_id]}),
    );
    assert_scheduler_error(&reply_to(&client), &req, "ImpossibleDependency");

    // Unknown msg_ids and malformed dependencies are invalid.
    let req = task(&client, json!({"after": ["no-such-task"]}));
    assert_scheduler_error(&reply_to(&client), &req, "InvalidDependency");
    let req = task(&client, json!({"follow": {"dependencies": [1, 2]}}));
    assert_scheduler_error(&reply_to(&client), &req, "InvalidDependency");

    // A pending dependency that later fails fails its dependent.
    let slow = task(&client, json!({}));
    let (e, got) = recv_any(&refs, TIMEOUT).expect("slow");
    let dependent = task(&client, json!({"after": [slow.header.msg_id]}));
    answer(refs[e], &got, "error", true);
    let mut replies = [reply_to(&client), reply_to(&client)];
    replies.sort_by_key(|r| r.parent_msg_id() != Some(slow.header.msg_id.as_str()));
    assert_scheduler_error(&replies[1], &dependent, "ImpossibleDependency");
    c.stop();
}

#[test]
fn a_task_still_waiting_at_its_timeout_fails_with_task_timeout() {
    let (_dir, c, _ctx, client, engines) = cluster(1);
    let busy = task(&client, json!({}));
    let got = recv(&engines[0].shell, TIMEOUT).expect("busy task");
    let started = Instant::now();
    let req = task(&client, json!({"timeout": 0.2}));
    let reply = reply_to(&client);
    assert_scheduler_error(&reply, &req, "TaskTimeout");
    assert!(started.elapsed() >= Duration::from_millis(150));
    // timeout 0 means none: it waits for the engine.
    let patient = task(&client, json!({"timeout": 0.0}));
    assert!(recv(&client.task, QUIET).is_none());
    answer(&engines[0], &got, "ok", true);
    assert_eq!(
        reply_to(&client).parent_msg_id(),
        Some(busy.header.msg_id.as_str())
    );
    let got = recv(&engines[0].shell, TIMEOUT).expect("patient task");
    assert_eq!(decode(&got).header.msg_id, patient.header.msg_id);
    answer(&engines[0], &got, "ok", true);
    reply_to(&client);

    // Retries that blacklisted every engine leave the task waiting until its timeout.
    let req = task(&client, json!({"retries": 1, "timeout": 0.3}));
    let got = recv(&engines[0].shell, TIMEOUT).expect("first attempt");
    answer(&engines[0], &got, "error", true);
    assert_scheduler_error(&reply_to(&client), &req, "TaskTimeout");
    c.stop();
}

#[test]
fn a_task_stranded_on_a_dead_engine_uses_a_retry() {
    let (_dir, c, _ctx, client, engines) = cluster(2);
    let refs: Vec<&FakeEngine> = engines.iter().collect();
    let req = task(&client, json!({"retries": 1}));
    let (first, _) = recv_any(&refs, TIMEOUT).expect("first attempt");
    let dead = refs[first];
    dead.reg
        .send_multipart(
            dead.session.encode(
                &dead
                    .session
                    .msg("unregistration_request", json!({"id": dead.id})),
            ),
            0,
        )
        .unwrap();
    let (second, again) = recv_any(&refs, TIMEOUT).expect("re-run elsewhere");
    assert_ne!(first, second);
    assert_eq!(decode(&again).header.msg_id, req.header.msg_id);
    answer(refs[second], &again, "ok", true);
    let reply = reply_to(&client);
    assert_eq!(reply.metadata["status"], "ok");
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
    c.stop();
}

#[test]
fn a_task_sent_on_the_registration_notification_finds_its_engine() {
    // The hub tells the scheduler about an engine before it notifies clients, so a task
    // aimed at the new engine as soon as the client hears of it is placed there, never
    // failed as impossible nor held back.
    let (_dir, c, ctx, client, mut engines) = cluster(1);
    for _ in 0..12 {
        let e = FakeEngine::register(&ctx, &c);
        let note = client.wait_notification("registration_notification");
        assert_eq!(note.content["uuid"], json!(e.uuid));
        let req = task(&client, json!({"targets": [e.uuid]}));
        let got = recv(&e.shell, TIMEOUT).expect("the new engine gets the task");
        assert_eq!(decode(&got).header.msg_id, req.header.msg_id);
        answer(&e, &got, "ok", true);
        let reply = reply_to(&client);
        assert_eq!(reply.metadata["status"], "ok", "{:?}", reply.content);
        engines.push(e);
    }
    c.stop();
}
