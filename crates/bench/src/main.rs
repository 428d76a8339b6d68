//! W9 of the benchmarks (shared/BENCHMARKS.md): the controller alone. Rust peers, no
//! Python on either side, drive the real `corral-controller` process with 1 to 1,000
//! simulated engines: requests through MUX (direct) and through the task scheduler
//! (load-balanced), each answered at once. Reported: requests/s (each is two messages
//! routed), the same through a bare relay hop measured in the same run (the limit), the
//! controller's CPU per request (what bounds it on a small machine: the peers need the
//! other cores), and its memory per registered engine.
//!
//!     cargo build --release -p corral-controller -p corral-bench
//!     target/release/corral-w9 --engines 1,10,100,1000 --requests 20000 --json w9.json
//!     target/release/corral-w9 --stock .venv/bin/ipcontroller ...   (the same on stock's)
//!     target/release/corral-w9 --engines 1 --paths task --requests 400000   (to profile)

mod baseline;
mod controller_process;
mod peers;

use clap::Parser;
use corral_wire::{Message, Session};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

use baseline::BaselineRelay;
use controller_process::ControllerProcess;
use peers::{client_socket, drive, Engines};

#[derive(Parser)]
#[command(about = "W9: the corral controller alone, driven by Rust peers")]
struct Args {
    /// Engine counts to run, comma-separated.
    #[arg(long, default_value = "1,10,100,1000", value_delimiter = ',')]
    engines: Vec<usize>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 20000)]
    requests: usize,
    /// Requests in flight at once (the client's window).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Repeats of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Also write the results here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Drive this stock `ipcontroller` instead of corral's controller.
    #[arg(long)]
    stock: Option<std::path::PathBuf>,
    /// Paths to measure, comma-separated: `relay` (the bare hop), `mux`, `task`. One path
    /// alone is what to profile (`perf record -p <controller>`).
    #[arg(long, default_value = "relay,mux,task", value_delimiter = ',')]
    paths: Vec<Path>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Path {
    Relay,
    Mux,
    Task,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Waits until the controller lists `n` live engines (they answered a heartbeat).
fn wait_live(ctx: &zmq::Context, c: &ControllerProcess, session: &Session, n: usize) {
    let query = client_socket(ctx, &c.client.url(c.client.registration));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let msg = session.msg("connection_request", json!({}));
        query
            .send_multipart(session.encode(&msg), 0)
            .expect("query");
        let mut items = [query.as_poll_item(zmq::POLLIN)];
        if zmq::poll(&mut items, 5000).unwrap_or(0) > 0 {
            let frames = query.recv_multipart(0).expect("reply");
            let reply = Message::decode(&frames, &session.signer).expect("signed");
            let live = reply.content["engines"].as_object().map_or(0, |e| e.len());
            if live >= n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{n} engines not live within 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(args: &Args, n: usize) -> Value {
    let ctx = zmq::Context::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let controller = ControllerProcess::start(dir.path(), args.stock.as_deref());
    let key = controller.key().as_bytes().to_vec();
    std::thread::sleep(Duration::from_millis(200));
    let rss_empty = controller.rss_bytes();
    let relay = BaselineRelay::start(&ctx);
    let t0 = Instant::now();
    let engines = Engines::register(
        &controller.engine,
        &key,
        n,
        std::slice::from_ref(&relay.engine_url),
    );
    let session = Session::new(&key);
    eprintln!("w9: {n} engines registered; waiting for them to be live");
    wait_live(&ctx, &controller, &session, n);
    eprintln!("w9: {n} engines live");
    let registered_s = t0.elapsed().as_secs_f64();
    let rss_registered = controller.rss_bytes();

    let c = &controller.client;
    let mux = client_socket(&ctx, &c.url(c.mux));
    let task = client_socket(&ctx, &c.url(c.task));
    let bare = client_socket(&ctx, &relay.client_url);
    std::thread::sleep(Duration::from_millis(200)); // connections settle
    let uuids = Some(&engines.uuids[..]);
    let paths = [
        (Path::Relay, &bare, uuids),
        (Path::Mux, &mux, uuids),
        (Path::Task, &task, None),
    ];
    let paths: Vec<_> = paths
        .into_iter()
        .filter(|(p, ..)| args.paths.contains(p))
        .collect();
    // Warm-up of every path.
    for (_, sock, targets) in &paths {
        drive(&session, sock, *targets, 1000, args.window);
    }
    // Per path: requests/s of each repeat, and the controller's CPU per request.
    let mut rates = vec![vec![]; paths.len()];
    let mut cpu = vec![vec![]; paths.len()];
    for _ in 0..args.repeat {
        for (k, (_, sock, targets)) in paths.iter().enumerate() {
            let before = controller.cpu_seconds();
            rates[k].push(drive(&session, sock, *targets, args.requests, args.window));
            // The hub and the database writer finish their share in batches, within
            // 50 ms of the last reply: count it with this path, not the next.
            std::thread::sleep(Duration::from_millis(150));
            cpu[k].push((controller.cpu_seconds() - before) / args.requests as f64 * 1e6);
        }
    }
    let rss_after = controller.rss_bytes();
    let figure = |path: Path, of: &[Vec<f64>]| {
        paths
            .iter()
            .position(|(p, ..)| *p == path)
            .map_or(f64::NAN, |k| median(of[k].clone()))
    };
    let (bare, mux, task) = (
        figure(Path::Relay, &rates),
        figure(Path::Mux, &rates),
        figure(Path::Task, &rates),
    );
    json!({
        "engines": n,
        "registered_s": registered_s,
        "bare_relay_requests_per_s": bare,
        "mux_requests_per_s": mux,
        "task_requests_per_s": task,
        "mux_share_of_relay_limit": mux / bare,
        "task_share_of_relay_limit": task / bare,
        "controller_cpu_us_per_mux_request": figure(Path::Mux, &cpu),
        "controller_cpu_us_per_task_request": figure(Path::Task, &cpu),
        "controller_rss_mb_empty": rss_empty as f64 / 1e6,
        "controller_rss_mb_registered": rss_registered as f64 / 1e6,
        "controller_rss_mb_after_runs": rss_after as f64 / 1e6,
        "controller_kb_per_engine":
            (rss_registered.saturating_sub(rss_empty)) as f64 / 1e3 / n as f64,
    })
}

fn main() {
    let args = Args::parse();
    let mut results = vec![];
    println!(
        "{:>7} {:>9} {:>12} {:>12} {:>12} {:>6} {:>6} {:>9} {:>9} {:>10} {:>9}",
        "engines",
        "ready s",
        "relay req/s",
        "mux req/s",
        "task req/s",
        "mux%",
        "task%",
        "µs/mux",
        "µs/task",
        "ctl MB",
        "kB/engine"
    );
    for &n in &args.engines {
        let r = run(&args, n);
        println!(
            "{:>7} {:>9.2} {:>12.0} {:>12.0} {:>12.0} {:>5.0}% {:>5.0}% {:>9.1} {:>9.1} {:>10.1} {:>9.1}",
            n,
            r["registered_s"].as_f64().unwrap_or(0.0),
            r["bare_relay_requests_per_s"].as_f64().unwrap_or(0.0),
            r["mux_requests_per_s"].as_f64().unwrap_or(0.0),
            r["task_requests_per_s"].as_f64().unwrap_or(0.0),
            100.0 * r["mux_share_of_relay_limit"].as_f64().unwrap_or(0.0),
            100.0 * r["task_share_of_relay_limit"].as_f64().unwrap_or(0.0),
            r["controller_cpu_us_per_mux_request"].as_f64().unwrap_or(f64::NAN),
            r["controller_cpu_us_per_task_request"].as_f64().unwrap_or(f64::NAN),
            r["controller_rss_mb_after_runs"].as_f64().unwrap_or(0.0),
            r["controller_kb_per_engine"].as_f64().unwrap_or(0.0),
        );
        results.push(r);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json!({"w9": results})).expect("json");
        std::fs::write(path, text).expect("write json");
    }
}
