//! `become_dask_request` / `stop_distributed_request` through a real controller's query
//! socket. Starting a real dask scheduler is tested from Python (tests/api/test_dask.py),
//! where dask is installed; here the scheduler's Python is one that cannot run it.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;
use serde_json::json;
use std::time::Duration;

fn start_with_python(dir: &std::path::Path, python: &str) -> Controller {
    Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, ""),
        key: Some(KEY.into()),
        python: Some(python.into()),
        ..ControllerConfig::default()
    })
    .expect("controller starts")
}

#[test]
fn a_python_that_cannot_be_run_is_an_error_reply() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_python(dir.path(), "/nonexistent/python");
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let reply = client.query("become_dask_request", json!({"scheduler_args": {}}));
    assert_eq!(reply.msg_type(), "become_dask_reply");
    assert_eq!(reply.content["status"], "error");
    assert!(reply.content["evalue"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/python"));
    let reply = client.query("stop_distributed_request", json!({}));
    assert_eq!(reply.msg_type(), "stop_distributed_reply");
    assert_eq!(reply.content, json!({"status": "ok"}));
    c.stop();
}

#[test]
fn a_scheduler_that_exits_before_reporting_is_an_error_reply_later() {
    let dir = tempfile::tempdir().unwrap();
    // `false` starts, then exits without a word: the reply comes from the hub loop's poll.
    let c = start_with_python(dir.path(), "false");
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let req = client.send(
        &client.query,
        &[],
        "become_dask_request",
        json!({}),
        json!({}),
    );
    let reply = decode(&recv(&client.query, Duration::from_secs(20)).expect("a reply"));
    assert_eq!(reply.parent_header["msg_id"], json!(req.header.msg_id));
    assert_eq!(reply.msg_type(), "become_dask_reply");
    assert_eq!(reply.content["ename"], "RuntimeError");
    assert!(reply.content["evalue"]
        .as_str()
        .unwrap()
        .contains("exited before reporting"));
    let reply = client.query("connection_request", json!({}));
    assert_eq!(reply.content["status"], "ok", "the hub serves on");
    c.stop();
}
