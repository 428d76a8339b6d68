//! The heart: echoes every ping from the HeartMonitor's PUB back on a DEALER whose identity
//! is the engine uuid, byte for byte (docs/PROTOCOL.md §5). A plain thread with no Python in it,
//! so a task holding the GIL never makes the engine look dead.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::{zerr, Result};

/// Shared with the runtime: the stop flag and when the last ping arrived.
#[derive(Debug)]
pub struct HeartState {
    pub stop: AtomicBool,
    /// Milliseconds since `epoch` of the last ping seen (0 = none yet).
    pub last_ping_ms: AtomicU64,
    pub epoch: Instant,
}

impl HeartState {
    pub fn new() -> Arc<Self> {
        Arc::new(HeartState {
            stop: AtomicBool::new(false),
            last_ping_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since the last ping (or since start if none came).
    pub fn silence_ms(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_ping_ms.load(Ordering::Relaxed))
    }
}

/// Connects SUB (all topics) to `ping_url` and DEALER to `pong_url`, then echoes until stopped.
pub fn spawn(
    ctx: &zmq::Context,
    identity: &[u8],
    ping_url: &str,
    pong_url: &str,
    state: Arc<HeartState>,
) -> Result<JoinHandle<()>> {
    let sub = ctx.socket(zmq::SUB).map_err(zerr("heart sub"))?;
    sub.set_subscribe(b"").map_err(zerr("heart subscribe"))?;
    sub.set_linger(0).map_err(zerr("heart linger"))?;
    sub.connect(ping_url).map_err(zerr("heart connect ping"))?;
    let dealer = ctx.socket(zmq::DEALER).map_err(zerr("heart dealer"))?;
    dealer
        .set_identity(identity)
        .map_err(zerr("heart identity"))?;
    dealer.set_linger(0).map_err(zerr("heart linger"))?;
    dealer
        .connect(pong_url)
        .map_err(zerr("heart connect pong"))?;
    let handle = std::thread::Builder::new()
        .name("corral-heart".into())
        .spawn(move || run(sub, dealer, state))
        .expect("spawning a thread");
    Ok(handle)
}

fn run(sub: zmq::Socket, dealer: zmq::Socket, state: Arc<HeartState>) {
    while !state.stop.load(Ordering::Relaxed) {
        match sub.poll(zmq::POLLIN, 100) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "heart poll failed");
                continue;
            }
        }
        while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
            let now = state.epoch.elapsed().as_millis() as u64;
            state.last_ping_ms.store(now.max(1), Ordering::Relaxed);
            if let Err(e) = dealer.send_multipart(frames, zmq::DONTWAIT) {
                tracing::warn!(error = %e, "heart could not echo a ping");
            }
        }
    }
}
