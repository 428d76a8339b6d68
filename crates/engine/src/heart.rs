//! The heart: echoes every ping from the HeartMonitor's PUB back on a DEALER whose identity
//! is the engine uuid, byte for byte (docs/PROTOCOL.md §5). A plain thread with no Python in it,
//! so a task holding the GIL never makes the engine look dead.
//!
//! It also watches its ping connection with a ZeroMQ socket monitor: when the controller
//! process dies, the kernel closes its sockets and the SUB sees `DISCONNECTED` at once,
//! long before 50 missed pings would say so (see [`crate::liveness`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::{zerr, Result};

/// Shared with the runtime: the stop flag, when the last ping arrived, and since when the
/// ping connection has been down.
#[derive(Debug)]
pub(crate) struct HeartState {
    pub(crate) stop: AtomicBool,
    /// Milliseconds since `epoch` of the last ping seen (0 = none yet).
    pub(crate) last_ping_ms: AtomicU64,
    /// Milliseconds since `epoch` when the ping connection dropped (0 = connected).
    pub(crate) disconnected_ms: AtomicU64,
    pub(crate) epoch: Instant,
}

impl HeartState {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(HeartState {
            stop: AtomicBool::new(false),
            last_ping_ms: AtomicU64::new(0),
            disconnected_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since `epoch`, never 0 (0 means "not set" in the fields above).
    pub(crate) fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }
}

/// The socket events the heart reacts to.
const WATCHED: i32 = zmq_sys::ZMQ_EVENT_CONNECTED as i32 | zmq_sys::ZMQ_EVENT_DISCONNECTED as i32;

/// Connects SUB (all topics) to `ping_url` and DEALER to `pong_url`, then echoes until stopped.
pub(crate) fn spawn(
    ctx: &zmq::Context,
    identity: &[u8],
    ping_url: &str,
    pong_url: &str,
    state: Arc<HeartState>,
    curve: Option<&corral_curve::CurveClient>,
) -> Result<JoinHandle<()>> {
    let sub = ctx.socket(zmq::SUB).map_err(zerr("heart sub"))?;
    if let Some(curve) = curve {
        curve.apply(&sub).map_err(zerr("heart curve"))?;
    }
    sub.set_subscribe(b"").map_err(zerr("heart subscribe"))?;
    sub.set_linger(0).map_err(zerr("heart linger"))?;
    // The monitor must exist before the connect, or the first CONNECTED is missed.
    let monitor_url = format!(
        "inproc://corral-heart-monitor-{}",
        String::from_utf8_lossy(identity)
    );
    sub.monitor(&monitor_url, WATCHED)
        .map_err(zerr("heart monitor"))?;
    let events = ctx.socket(zmq::PAIR).map_err(zerr("heart monitor pair"))?;
    events
        .connect(&monitor_url)
        .map_err(zerr("heart monitor connect"))?;
    sub.connect(ping_url).map_err(zerr("heart connect ping"))?;
    let dealer = ctx.socket(zmq::DEALER).map_err(zerr("heart dealer"))?;
    if let Some(curve) = curve {
        curve.apply(&dealer).map_err(zerr("heart curve"))?;
    }
    dealer
        .set_identity(identity)
        .map_err(zerr("heart identity"))?;
    dealer.set_linger(0).map_err(zerr("heart linger"))?;
    dealer
        .connect(pong_url)
        .map_err(zerr("heart connect pong"))?;
    let handle = std::thread::Builder::new()
        .name("corral-heart".into())
        .spawn(move || run(sub, events, dealer, state))
        .expect("spawning a thread");
    Ok(handle)
}

fn run(sub: zmq::Socket, events: zmq::Socket, dealer: zmq::Socket, state: Arc<HeartState>) {
    while !state.stop.load(Ordering::Relaxed) {
        let mut items = [
            sub.as_poll_item(zmq::POLLIN),
            events.as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "heart poll failed");
                continue;
            }
        }
        while let Ok(frames) = events.recv_multipart(zmq::DONTWAIT) {
            on_event(&frames, &state);
        }
        while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
            state.last_ping_ms.store(state.now_ms(), Ordering::Relaxed);
            if let Err(e) = dealer.send_multipart(frames, zmq::DONTWAIT) {
                tracing::warn!(error = %e, "heart could not echo a ping");
            }
        }
    }
}

/// A monitor message: frame 0 is a 16-bit event id and a 32-bit value (little-endian),
/// frame 1 the endpoint.
fn on_event(frames: &[Vec<u8>], state: &HeartState) {
    let Some(id) = frames.first().and_then(|f| f.get(..2)) else {
        return;
    };
    let endpoint = frames
        .get(1)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .unwrap_or_default();
    match zmq::SocketEvent::from_raw(u16::from_le_bytes([id[0], id[1]])) {
        zmq::SocketEvent::DISCONNECTED => {
            tracing::warn!(%endpoint, "lost the connection to the controller's heartbeat");
            let _ = state.disconnected_ms.compare_exchange(
                0,
                state.now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        zmq::SocketEvent::CONNECTED => {
            if state.disconnected_ms.swap(0, Ordering::AcqRel) != 0 {
                tracing::warn!(%endpoint, "reconnected to the controller's heartbeat");
            } else {
                tracing::debug!(%endpoint, "connected to the controller's heartbeat");
            }
        }
        _ => {}
    }
}
