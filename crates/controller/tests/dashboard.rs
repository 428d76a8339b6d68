//! The web dashboard (`--dashboard-port`) over real sockets: the token check, the HTTP
//! routes, the connection-file key, and a WebSocket that receives a task's published
//! data preview (docs/PROTOCOL.md §13).

mod common;

use common::*;
use corral_controller::config::DashboardConfig;
use corral_controller::{Controller, ControllerConfig};
use corral_wire::{ClientConnection, ProfileLocation};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-token";

fn start_with_dashboard(dir: &std::path::Path) -> Controller {
    Controller::start(ControllerConfig {
        location: ProfileLocation::resolve(Some(dir), None, ""),
        key: Some(KEY.into()),
        dashboard: Some(DashboardConfig {
            port: 0,
            token: Some(TOKEN.into()),
        }),
        ..ControllerConfig::default()
    })
    .expect("controller starts")
}

/// `http://127.0.0.1:port` from the URL the client connection file holds.
fn base_url(c: &Controller) -> (String, String) {
    let path = &c.connection_files()[0];
    let file = ClientConnection::read(path).expect("client file");
    let url = file.corral_dashboard_url.expect("corral_dashboard_url");
    let (base, query) = url.split_once("/?").expect("a URL with a query");
    (
        base.trim_start_matches("http://").to_string(),
        query.to_string(),
    )
}

/// One HTTP/1.1 GET; returns the status code, the head and the body.
fn get(addr: &str, target: &str, extra_headers: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

#[test]
fn requests_without_the_token_are_refused_and_the_routes_answer_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_dashboard(dir.path());
    let (addr, query) = base_url(&c);
    assert_eq!(query, format!("token={TOKEN}"));
    assert!(addr.starts_with("127.0.0.1:"), "bound on --ip: {addr}");

    for target in ["/", "/api/view", "/ws", "/?token=wrong", "/nope"] {
        let (status, _, body) = get(&addr, target, "");
        assert_eq!(status, 403, "{target}");
        assert!(body.contains("needs its token"), "{body}");
    }
    let (status, head, body) = get(&addr, &format!("/?token={TOKEN}"), "");
    assert_eq!(status, 200);
    assert!(body.contains("<title>corral dashboard</title>"));
    let port = addr.rsplit(':').next().unwrap();
    assert!(
        head.contains(&format!("corral_dashboard_token_{port}={TOKEN}")),
        "{head}"
    );
    // The cookie alone is enough (how the page's WebSocket is let in).
    let cookie = format!("Cookie: corral_dashboard_token_{port}={TOKEN}\r\n");
    let other_port = format!("Cookie: corral_dashboard_token_1={TOKEN}\r\n");
    assert_eq!(
        get(&addr, "/", &other_port).0,
        403,
        "another dashboard's cookie"
    );
    let (status, _, _) = get(&addr, "/", &cookie);
    assert_eq!(status, 200);
    let (status, _, body) = get(&addr, "/api/view", &cookie);
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).expect("a JSON view");
    assert_eq!(view["engines"], json!([]));
    assert_eq!(view["tasks"], json!([]));
    let (status, _, _) = get(&addr, "/nope", &cookie);
    assert_eq!(status, 404);
    let (status, _, _) = get(&addr, "/ws", &cookie);
    assert_eq!(status, 400, "/ws without an upgrade");
    c.stop();
}

#[test]
fn without_the_option_there_is_no_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let c = start(dir.path(), 3000);
    let file = ClientConnection::read(&c.connection_files()[0]).unwrap();
    assert_eq!(file.corral_dashboard_url, None);
    let raw = std::fs::read_to_string(&c.connection_files()[0]).unwrap();
    assert!(!raw.contains("corral_dashboard_url"), "stock-shaped file");
    c.stop();
}

/// The view lists live engines with their load, and a WebSocket watching a task
/// receives the preview its engine publishes, then the next one.
#[test]
fn the_websocket_pushes_engines_tasks_and_the_watched_tasks_preview() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_with_dashboard(dir.path());
    let (addr, _) = base_url(&c);
    let ctx = zmq::Context::new();
    let (client, engine) = client_and_live_engine(&ctx, &c);
    let req = client.send(
        &client.mux,
        &[engine.uuid.as_bytes()],
        "apply_request",
        json!({}),
        json!({}),
    );
    let msg_id = req.header.msg_id.clone();
    recv(&engine.shell, TIMEOUT).expect("engine receives the request");

    // A WebSocket without the token is refused at the handshake.
    let stream = TcpStream::connect(&addr).unwrap();
    let refused = tungstenite::client::client(format!("ws://{addr}/ws"), stream);
    assert!(refused.is_err());

    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let url = format!("ws://{addr}/ws?token={TOKEN}&watch={msg_id}");
    let (mut ws, _) = tungstenite::client::client(url, stream).expect("handshake");

    let next_view = |ws: &mut tungstenite::WebSocket<TcpStream>, done: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "no such view in time");
            let msg = ws.read().expect("a view");
            if let tungstenite::Message::Text(text) = msg {
                let view: Value = serde_json::from_str(text.as_str()).unwrap();
                if done(&view) {
                    return view;
                }
            }
        }
    };
    let view = next_view(&mut ws, &|v| v["tasks"][0]["msg_id"] == json!(msg_id));
    assert_eq!(view["engines"][0]["id"], json!(engine.id));
    assert_eq!(view["engines"][0]["alive"], true);
    assert_eq!(view["engines"][0]["load"], 1, "one outstanding task");
    assert_eq!(view["tasks"][0]["state"], "running");

    let send_value = |k: i64| {
        let mut msg = engine
            .session
            .msg(
                "data_message",
                json!({"keys": ["value"], "corral_preview": {"value": {"type": "number", "value": k}}}),
            )
            .with_parent(&req.header);
        msg.metadata = json!({"engine": engine.uuid});
        msg.idents = vec![b"datapub".to_vec()];
        msg.buffers = vec![b"pickled".to_vec()];
        engine
            .iopub
            .send_multipart(engine.session.encode(&msg), 0)
            .unwrap();
    };
    // Until the relay's SUB has joined the engine's PUB, publications are lost: publish
    // until one shows, then check that the next one shows too.
    let value_of = |v: &Value| v["data"][&msg_id][0]["preview"]["value"]["value"].clone();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        send_value(1);
        let view = next_view(&mut ws, &|_| true);
        if value_of(&view) == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the preview never showed");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_value(2);
    let view = next_view(&mut ws, &|v| value_of(v) == json!(2));
    assert_eq!(view["data"][&msg_id][0]["engine_id"], json!(engine.id));
    assert!(view["tasks"][0]["has_data"].as_bool().unwrap());
    drop(ws);
    c.stop();
}
