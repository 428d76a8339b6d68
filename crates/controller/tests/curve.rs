//! A controller with CurveZMQ on, over real sockets: what goes into the connection files,
//! a CURVE peer is served, a plain one is not (and does not stop it), and the bytes on the
//! wire are not the plaintext.

mod common;

use common::*;
use corral_controller::{Controller, ControllerConfig, CurveKeys};
use corral_wire::{ClientConnection, EngineConnection, ProfileLocation};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn start_curve(dir: &std::path::Path, keys: &CurveKeys) -> Controller {
    Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, ""),
        key: Some(KEY.into()),
        curve: Some(keys.clone()),
        ..ControllerConfig::default()
    })
    .expect("controller starts with CURVE")
}

/// A DEALER to `url`, a CURVE client of `server` (Z85) when given.
fn dealer(ctx: &zmq::Context, url: &str, server: Option<&str>) -> zmq::Socket {
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    if let Some(server) = server {
        let mine = zmq::CurveKeyPair::new().unwrap();
        s.set_curve_serverkey(&zmq::z85_decode(server).unwrap())
            .unwrap();
        s.set_curve_publickey(&mine.public_key).unwrap();
        s.set_curve_secretkey(&mine.secret_key).unwrap();
    }
    s.connect(url).unwrap();
    s
}

fn connection_reply(s: &zmq::Socket, wait: Duration) -> Option<corral_wire::Message> {
    let session = session();
    s.send_multipart(
        session.encode(&session.msg("connection_request", json!({}))),
        0,
    )
    .unwrap();
    recv(s, wait).map(|frames| decode(&frames))
}

#[test]
fn connection_files_carry_the_public_key_and_only_curve_peers_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let keys = CurveKeys::generate().unwrap();
    let c = start_curve(dir.path(), &keys);
    let loc = ProfileLocation::resolve(Some(dir.path()), None, "");
    let client = ClientConnection::read(&loc.connection_file("client")).unwrap();
    let engine = EngineConnection::read(&loc.connection_file("engine")).unwrap();
    assert_eq!(
        client.curve_serverkey.as_deref(),
        Some(keys.public.as_str())
    );
    assert_eq!(
        engine.curve_serverkey.as_deref(),
        Some(keys.public.as_str())
    );
    let written = std::fs::read_to_string(loc.connection_file("client")).unwrap();
    assert!(!written.contains(&keys.secret), "the secret key leaked");

    let ctx = zmq::Context::new();
    let url = client.url(client.registration);
    let plain = dealer(&ctx, &url, None);
    assert!(
        connection_reply(&plain, Duration::from_millis(1500)).is_none(),
        "a peer without CURVE was answered"
    );
    let other_key = CurveKeys::generate().unwrap();
    let wrong = dealer(&ctx, &url, Some(&other_key.public));
    assert!(
        connection_reply(&wrong, Duration::from_millis(1500)).is_none(),
        "a peer with the wrong server key was answered"
    );
    let good = dealer(&ctx, &url, Some(&keys.public));
    let reply = connection_reply(&good, TIMEOUT).expect("a CURVE peer is answered");
    assert_eq!(reply.content["status"], "ok");
    c.stop();
}

#[test]
fn curve_is_off_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    assert_eq!(c.client_connection().curve_serverkey, None);
    assert_eq!(c.engine_connection().curve_serverkey, None);
    let written = std::fs::read_to_string(&c.connection_files()[0]).unwrap();
    assert!(written.contains("\"curve_serverkey\": null"), "{written}");
    c.stop();
}

#[test]
fn an_empty_key_is_accepted_with_curve_as_ipyparallel_does() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir.path()), None, ""),
        key: Some(String::new()),
        curve: Some(CurveKeys::generate().unwrap()),
        ..ControllerConfig::default()
    })
    .expect("CURVE stands in for signing");
    assert_eq!(c.client_connection().key, "");
    c.stop();
}

/// Forwards one TCP connection both ways and keeps every byte it saw.
fn recording_proxy(target: String) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let Ok((inside, _)) = listener.accept() else {
            return;
        };
        let outside = TcpStream::connect(target.trim_start_matches("tcp://")).unwrap();
        let pipe = |mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
            })
        };
        pipe(
            inside.try_clone().unwrap(),
            outside.try_clone().unwrap(),
            log.clone(),
        );
        pipe(outside, inside, log);
    });
    (port, seen)
}

const MARKER: &str = "corral-plaintext-marker-7f3a";

/// What crosses the wire for one `connection_request` carrying [`MARKER`] and its reply,
/// with CURVE on or off.
fn wire_bytes(curve: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let keys = CurveKeys::generate().unwrap();
    let c = if curve {
        start_curve(dir.path(), &keys)
    } else {
        start(dir.path(), 3000)
    };
    let url = c
        .client_connection()
        .url(c.client_connection().registration);
    let (port, seen) = recording_proxy(url);
    let ctx = zmq::Context::new();
    let server = curve.then_some(keys.public.as_str());
    let s = dealer(&ctx, &format!("tcp://127.0.0.1:{port}"), server);
    let session = session();
    s.send_multipart(
        session.encode(&session.msg("connection_request", json!({"note": MARKER}))),
        0,
    )
    .unwrap();
    let reply = decode(&recv(&s, TIMEOUT).expect("answered through the proxy"));
    assert_eq!(reply.content["status"], "ok");
    c.stop();
    let bytes = seen.lock().unwrap().clone();
    assert!(bytes.len() > 200, "the proxy saw the traffic");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_bytes_on_the_wire_are_not_the_plaintext() {
    // The check itself sees plaintext where there is some.
    let plain = wire_bytes(false);
    assert!(plain.contains(MARKER) && plain.contains("connection_reply"));
    let text = wire_bytes(true);
    assert!(
        text.contains("CURVE"),
        "the ZMTP greeting names the mechanism"
    );
    for clear in [MARKER, "connection_request", "connection_reply", "msg_id"] {
        assert!(!text.contains(clear), "{clear:?} crossed the wire in clear");
    }
}
