//! `--reuse`, `--ports` and `--location` on a real controller: a controller started on the
//! files of the one before it binds the same ports with the same key, and engines register.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;

fn config(dir: &std::path::Path) -> ControllerConfig {
    ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, "r"),
        key: Some(KEY.into()),
        ..ControllerConfig::default()
    }
}

#[test]
fn reuse_binds_the_ports_and_key_of_the_files_and_leaves_them() {
    let dir = tempfile::tempdir().unwrap();
    let client_file = dir.path().join("security/ipcontroller-r-client.json");
    let first = Controller::start(ControllerConfig {
        reuse_files: true, // nothing to reuse yet: fresh ports, files written
        ..config(dir.path())
    })
    .unwrap();
    let (client, engine) = (
        first.client_connection().clone(),
        first.engine_connection().clone(),
    );
    first.stop();
    assert!(client_file.exists(), "--reuse leaves the files on stop");

    let second = Controller::start(ControllerConfig {
        reuse_files: true,
        key: Some("a-key-the-files-override".into()),
        ..config(dir.path())
    })
    .unwrap();
    assert_eq!(second.client_connection(), &client);
    assert_eq!(second.engine_connection(), &engine);
    assert_eq!(second.client_connection().key, KEY);
    let ctx = zmq::Context::new();
    let c = FakeClient::connect(&ctx, &second);
    let _engine = FakeEngine::register(&ctx, &second);
    c.wait_notification("registration_notification");
    second.stop();
    assert!(client_file.exists());
}

#[test]
fn fixed_ports_are_bound_in_order_and_location_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let first = Controller::start(config(dir.path())).unwrap();
    let (client, engine) = (
        first.client_connection().clone(),
        first.engine_connection().clone(),
    );
    first.stop();
    assert!(!dir
        .path()
        .join("security/ipcontroller-r-client.json")
        .exists());
    // The ports the first controller had, in the order the sockets are bound.
    let mut ports = vec![
        client.registration,
        client.notification,
        engine.hb_ping,
        engine.hb_pong,
        client.mux,
        engine.mux,
        client.control,
        engine.control,
        client.task,
        engine.task,
        engine.iopub,
        client.iopub,
        client.broadcast,
    ];
    ports.extend(&engine.broadcast);
    let second = Controller::start(ControllerConfig {
        ports,
        advertised_location: Some("head.example".into()),
        ..config(dir.path())
    })
    .unwrap();
    let c2 = second.client_connection();
    assert_eq!(
        (c2.registration, c2.mux, c2.task, c2.iopub, c2.broadcast),
        (
            client.registration,
            client.mux,
            client.task,
            client.iopub,
            client.broadcast
        )
    );
    assert_eq!(second.engine_connection().broadcast, engine.broadcast);
    assert_eq!(c2.location, "head.example");
    assert_eq!(second.engine_connection().location, "head.example");
    let ctx = zmq::Context::new();
    let c = FakeClient::connect(&ctx, &second);
    let _engine = FakeEngine::register(&ctx, &second);
    c.wait_notification("registration_notification");
    second.stop();
}
