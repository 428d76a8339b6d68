//! `--engine-ports` and `--client-ports` on a real controller: each socket binds the port
//! ipcontroller would give it from its pool, the rest take `--ports`, and peers connect.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::ProfileLocation;

/// `n` distinct ports free on loopback right now (held together, so none repeats).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

#[test]
fn engine_and_client_ports_are_bound_in_ipcontrollers_order() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(9 + 6 + 1);
    let (engine_ports, rest) = ports.split_at(9);
    let (client_ports, common_ports) = rest.split_at(6);
    let c = Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, "p"),
        key: Some(KEY.into()),
        engine_ports: engine_ports.to_vec(),
        client_ports: client_ports.to_vec(),
        ports: common_ports.to_vec(),
        ..ControllerConfig::default()
    })
    .unwrap();
    let e = c.engine_connection().clone();
    let cl = c.client_connection().clone();
    let engine_side = [
        e.registration,
        e.control,
        e.mux,
        e.task,
        e.iopub,
        e.hb_ping,
        e.hb_pong,
        e.broadcast[0],
        e.broadcast[1],
    ];
    assert_eq!(&engine_side[..], engine_ports);
    let client_side = [
        cl.control,
        cl.mux,
        cl.task,
        cl.iopub,
        cl.notification,
        cl.broadcast,
    ];
    assert_eq!(&client_side[..], client_ports);
    assert_eq!(cl.registration, e.registration, "one registration socket");
    assert_eq!(
        cl.corral_iopub,
        Some(common_ports[0]),
        "the client pool used up: the common pool"
    );
    // the ports are really bound and serve: an engine registers, a client hears of it
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let _engine = FakeEngine::register(&ctx, &c);
    client.wait_notification("registration_notification");
    c.stop();
}
