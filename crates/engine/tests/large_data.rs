//! Large publications against a controller that reads slower than the engine publishes
//! (real zmq sockets on 127.0.0.1): the engine's memory stays bounded in bytes, superseded
//! updates are dropped (latest wins), the last update and `status: idle` always arrive,
//! and a publisher of ever-new keys waits at the bound instead of growing memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_engine::{EngineOptions, EngineRuntime, Outgoing};
use corral_wire::{EngineConnection, Message, Session};
use serde_json::json;

const KEY: &str = "large-data-key";
const MB: usize = 1 << 20;

/// The tests measure this process's memory, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn bind(ctx: &zmq::Context, kind: zmq::SocketType) -> (zmq::Socket, u16) {
    let s = ctx.socket(kind).unwrap();
    if kind == zmq::SUB {
        s.set_subscribe(b"").unwrap();
        // Read slowly means hold little on the reading side too.
        s.set_rcvhwm(1).unwrap();
        s.set_rcvbuf(256 * 1024).unwrap();
    }
    s.set_linger(0).unwrap();
    s.bind("tcp://127.0.0.1:0").unwrap();
    let ep = s.get_last_endpoint().unwrap().unwrap();
    (s, ep.rsplit(':').next().unwrap().parse().unwrap())
}

/// A registered engine and the controller's IOPub SUB, which nobody reads until told.
struct Fixture {
    rt: Arc<EngineRuntime>,
    iopub: zmq::Socket,
    _keep: Vec<zmq::Socket>,
    _ctx: zmq::Context,
}

fn register(data_bytes_limit: usize) -> Fixture {
    let ctx = zmq::Context::new();
    let (reg, reg_port) = bind(&ctx, zmq::ROUTER);
    let (ping, ping_port) = bind(&ctx, zmq::PUB);
    let (pong, pong_port) = bind(&ctx, zmq::ROUTER);
    let (mux, mux_port) = bind(&ctx, zmq::ROUTER);
    let (task, task_port) = bind(&ctx, zmq::ROUTER);
    let (control, control_port) = bind(&ctx, zmq::ROUTER);
    let (iopub, iopub_port) = bind(&ctx, zmq::SUB);
    let conn: EngineConnection = serde_json::from_value(json!({
        "ssh": "", "interface": "tcp://127.0.0.1", "registration": reg_port,
        "control": control_port, "mux": mux_port, "task": task_port, "iopub": iopub_port,
        "hb_ping": ping_port, "hb_pong": pong_port, "broadcast": [],
        "key": KEY, "location": "localhost"
    }))
    .unwrap();
    let opts = EngineOptions {
        data_bytes_limit,
        ..Default::default()
    };
    let connecting = std::thread::spawn(move || EngineRuntime::connect(&conn, opts));
    let hub = Session::new(KEY.as_bytes());
    assert!(
        reg.poll(zmq::POLLIN, 10_000).unwrap() > 0,
        "no registration"
    );
    let request = Message::decode(&reg.recv_multipart(0).unwrap(), &hub.signer).unwrap();
    let mut reply = hub.msg(
        "registration_reply",
        json!({"status": "ok", "id": 0, "hb_period": 500}),
    );
    reply.idents = request.idents;
    reg.send_multipart(hub.encode(&reply), 0).unwrap();
    let rt = Arc::new(connecting.join().unwrap().unwrap());
    // Messages sent before the SUB's subscription reaches the engine are not delivered:
    // send a stream message until one arrives, then read whatever else came.
    let deadline = Instant::now() + Duration::from_secs(10);
    while iopub.poll(zmq::POLLIN, 20).unwrap() == 0 {
        assert!(Instant::now() < deadline, "IOPub never connected");
        rt.queue(rt.stream_op("stdout", "hello")).unwrap();
    }
    while iopub.poll(zmq::POLLIN, 200).unwrap() > 0 {
        iopub.recv_multipart(0).unwrap();
    }
    Fixture {
        rt,
        iopub,
        _keep: vec![reg, ping, pong, mux, task, control],
        _ctx: ctx,
    }
}

fn recv(sock: &zmq::Socket) -> Message {
    assert!(
        sock.poll(zmq::POLLIN, 10_000).unwrap() > 0,
        "timed out waiting for an IOPub message"
    );
    let signer = Session::new(KEY.as_bytes()).signer;
    Message::decode(&sock.recv_multipart(0).unwrap(), &signer).unwrap()
}

/// One update of `size` bytes whose first 8 bytes say which one it is.
fn update(keys: &[String], i: u64, size: usize) -> Outgoing {
    // Not zeros: a zeroed allocation is untouched pages, which resident memory ignores.
    let mut buf = vec![1u8; size];
    buf[..8].copy_from_slice(&i.to_le_bytes());
    Outgoing::Data {
        keys: keys.to_vec(),
        buffers: vec![buf],
        preview: None,
    }
}

fn tag(m: &Message) -> u64 {
    u64::from_le_bytes(m.buffers[0][..8].try_into().unwrap())
}

/// This process's peak resident memory (VmHWM), after resetting it when `reset`.
fn peak_rss_mb(reset: bool) -> usize {
    if reset {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        / 1024
}

/// Reads IOPub until `status: idle` for the task; returns the tags of its data messages.
fn read_task(iopub: &zmq::Socket) -> Vec<u64> {
    let mut tags = Vec::new();
    loop {
        let m = recv(iopub);
        match m.msg_type() {
            "data_message" => tags.push(tag(&m)),
            "status" if m.content["execution_state"] == "idle" => return tags,
            _ => {}
        }
    }
}

#[test]
fn a_publisher_faster_than_the_controller_is_conflated_within_the_byte_bound() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = register(4 * MB);
    let parent = Arc::new(br#"{"msg_id": "task-1"}"#.to_vec());
    let keys = vec!["a".to_string(), "i".to_string()];
    let before = peak_rss_mb(true);
    // 100 updates of 4 MB (400 MB) while the controller reads nothing: without a byte
    // bound ZeroMQ alone holds 32 of them (its high-water mark counts messages).
    let rt = f.rt.clone();
    let publisher = std::thread::spawn(move || {
        rt.queue(Outgoing::Begin {
            parent: parent.clone(),
        })
        .unwrap();
        for i in 0..100 {
            rt.queue(update(&keys, i, 4 * MB)).unwrap();
        }
        rt.queue(Outgoing::End { parent }).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !publisher.is_finished() {
        assert!(
            Instant::now() < deadline,
            "publish_data waited for the network although every update supersedes the last"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    publisher.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let grown = peak_rss_mb(false).saturating_sub(before);
    let tags = read_task(&f.iopub);
    assert_eq!(tags.last(), Some(&99), "the last update always arrives");
    assert!(tags.windows(2).all(|w| w[0] < w[1]), "in order: {tags:?}");
    assert!(tags.len() < 100, "superseded updates were dropped");
    // The bound is 4 MB unsent plus 4 MB in flight (each may go over by one update);
    // the rest of the margin is the reading side's socket buffers and allocator slack.
    assert!(
        grown < 64,
        "the engine held {grown} MB for a 4 MB bound (400 MB published)"
    );
    f.rt.close(false);
}

#[test]
fn ever_new_keys_make_the_publisher_wait_at_the_bound_and_nothing_is_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = register(2 * MB);
    let parent = Arc::new(br#"{"msg_id": "task-2"}"#.to_vec());
    f.rt.queue(Outgoing::Begin {
        parent: parent.clone(),
    })
    .unwrap();
    // Distinct keys supersede nothing: once 2 MB are unsent (and 2 MB in flight, and the
    // socket queues full), `try_queue` refuses instead of holding more.
    let mut refused_at = None;
    for i in 0..200u64 {
        if f.rt.try_queue(update(&[format!("k{i}")], i, MB)).is_err() {
            refused_at = Some(i);
            break;
        }
    }
    let refused_at = refused_at.expect("200 MB of new keys were all accepted: no byte bound");
    // The publisher waits (in `queue`) until the controller reads; then everything arrives.
    let rt = f.rt.clone();
    let publisher = std::thread::spawn(move || {
        for i in refused_at..refused_at + 20 {
            rt.queue(update(&[format!("k{i}")], i, MB)).unwrap();
        }
        rt.queue(Outgoing::End { parent }).unwrap();
    });
    let tags = read_task(&f.iopub);
    publisher.join().unwrap();
    assert_eq!(tags, (0..refused_at + 20).collect::<Vec<_>>());
    f.rt.close(false);
}
