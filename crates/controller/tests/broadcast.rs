//! The broadcast scheduler through real sockets: a client's request with
//! `targets: [[uuid, id], ..]` reaches each target as its own copy, replies come back one
//! by one or, for a coalescing request, as one; ill-formed targets are skipped or refused.

mod common;

use common::*;
use corral_wire::Message;
use serde_json::{json, Value};
use std::time::Duration;

/// An engine's broadcast socket: a ROUTER with the engine's identity, connected to both
/// leaves (the scheduler sends from leaf `id % 2`).
fn broadcast_socket(
    ctx: &zmq::Context,
    c: &corral_controller::Controller,
    uuid: &str,
) -> zmq::Socket {
    let e = c.engine_connection();
    let s = ctx.socket(zmq::ROUTER).unwrap();
    s.set_linger(0).unwrap();
    s.set_identity(uuid.as_bytes()).unwrap();
    for port in &e.broadcast {
        s.connect(&e.url(*port)).unwrap();
    }
    s
}

/// Answers a broadcast copy as an ipyparallel kernel would: idents echoed, and the
/// request's broadcast fields in the reply's metadata.
fn answer(engine: &FakeEngine, sock: &zmq::Socket, req: &Message, n: u64) {
    let mut reply = engine
        .session
        .msg("apply_reply", json!({"status": "ok", "n": n}))
        .with_parent(&req.header);
    reply.metadata = json!({
        "engine": engine.uuid, "status": "ok", "dependencies_met": true,
        "is_broadcast": true, "is_coalescing": req.metadata["is_coalescing"],
        "original_msg_id": req.metadata["original_msg_id"],
    });
    reply.idents = req.idents.clone();
    reply.buffers = vec![vec![n as u8]];
    sock.send_multipart(engine.session.encode(&reply), 0)
        .unwrap();
}

fn copy_on(sock: &zmq::Socket) -> Message {
    decode(&recv(sock, TIMEOUT).expect("engine receives its broadcast copy"))
}

#[test]
fn broadcast_copies_replies_coalescing_and_ill_formed_targets() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let ctx = zmq::Context::new();
    let client = FakeClient::connect(&ctx, &c);
    let engines = [
        FakeEngine::register(&ctx, &c),
        FakeEngine::register(&ctx, &c),
    ];
    let socks: Vec<zmq::Socket> = engines
        .iter()
        .map(|e| broadcast_socket(&ctx, &c, &e.uuid))
        .collect();
    let f = c.client_connection();
    let bcast = ctx.socket(zmq::DEALER).unwrap();
    bcast.set_linger(0).unwrap();
    bcast.connect(&f.url(f.broadcast)).unwrap();
    // Connections are made in the background: give the leaves time to know the engines.
    std::thread::sleep(Duration::from_millis(300));
    let targets: Value = engines.iter().map(|e| json!([e.uuid, e.id])).collect();

    // Plain broadcast: one copy per engine, named after the original, replies one by one.
    let md = json!({"targets": targets, "is_broadcast": true, "is_coalescing": false});
    let req = client.send(&bcast, &[], "apply_request", json!({}), md);
    let original = req.header.msg_id.clone();
    for (i, (engine, sock)) in engines.iter().zip(&socks).enumerate() {
        let copy = copy_on(sock);
        assert_eq!(copy.header.msg_id, format!("{original}_{}", engine.uuid));
        assert_eq!(copy.metadata["targets"], json!([[engine.uuid, engine.id]]));
        assert_eq!(copy.metadata["original_msg_id"], json!(original));
        assert_eq!(copy.idents[1], b"sub_scheduler_0");
        answer(engine, sock, &copy, i as u64);
    }
    let mut parents: Vec<String> = (0..2)
        .map(|_| {
            let reply = decode(&recv(&bcast, TIMEOUT).expect("a broadcast reply"));
            reply.parent_msg_id().unwrap().to_string()
        })
        .collect();
    parents.sort();
    let mut expected: Vec<String> = engines
        .iter()
        .map(|e| format!("{original}_{}", e.uuid))
        .collect();
    expected.sort();
    assert_eq!(parents, expected);

    // Coalescing: one reply with both engines listed and both buffers.
    let md = json!({"targets": targets, "is_broadcast": true, "is_coalescing": true});
    let req = client.send(&bcast, &[], "apply_request", json!({}), md);
    for (i, (engine, sock)) in engines.iter().zip(&socks).enumerate() {
        let copy = copy_on(sock);
        assert_eq!(copy.metadata["is_coalescing"], true);
        answer(engine, sock, &copy, 10 + i as u64);
    }
    let combined = decode(&recv(&bcast, TIMEOUT).expect("one coalesced reply"));
    assert_eq!(
        combined.metadata["original_msg_id"],
        json!(req.header.msg_id)
    );
    let listed = combined.metadata["broadcast_targets"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(combined.buffers.len(), 2);
    assert!(
        recv(&bcast, Duration::from_millis(200)).is_none(),
        "only one reply"
    );

    // Ill-formed targets are skipped; the well-formed one is served.
    let (good, bad) = (&engines[1], &engines[0]);
    let md = json!({"targets": [[bad.uuid, -1], [bad.uuid], "x", [good.uuid, good.id]],
                    "is_broadcast": true});
    let req = client.send(&bcast, &[], "apply_request", json!({}), md);
    let copy = copy_on(&socks[1]);
    assert_eq!(
        copy.header.msg_id,
        format!("{}_{}", req.header.msg_id, good.uuid)
    );
    assert!(recv(&socks[0], Duration::from_millis(200)).is_none());

    // No usable target at all, or metadata that is not an object: refused, not dropped.
    for md in [
        json!({"targets": "all", "is_broadcast": true}),
        json!(["targets"]),
    ] {
        let req = client.send(&bcast, &[], "apply_request", json!({}), md);
        let reply = decode(&recv(&bcast, TIMEOUT).expect("a refusal"));
        assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
        assert_eq!(reply.content["ename"], "NotImplementedError");
        assert_eq!(reply.content["evalue"], "broadcast request without targets");
    }
    c.stop();
}
