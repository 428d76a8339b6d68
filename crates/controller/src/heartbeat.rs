//! Heartbeat: a PUB that sends the monotonic-seconds float, a ROUTER that receives each
//! engine's echo `[uuid, payload]`. The first pong of an identity makes it a new heart;
//! silence for more than `max_misses` periods makes it a stopped heart.
//!
//! Unlike ipyparallel, which pings every 3 s, this pings every `fast_ping` while a
//! registration waits for its first pong, so a new engine is live in milliseconds.

use crossbeam_channel::{Receiver, Sender};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::events::{HeartCommand, HubEvent};
use crate::sockets::{readable, recv_frames};
use crate::stop::Stop;

/// How many past ping payloads a pong may echo and still count.
const RECENT_PINGS: usize = 256;
const POLL_MS: i64 = 20;

/// Pure heartbeat bookkeeping, separated from the sockets for tests.
#[derive(Debug)]
pub(crate) struct Hearts {
    start: Instant,
    recent: VecDeque<Vec<u8>>,
    recent_set: HashSet<Vec<u8>>,
    last_pong: HashMap<String, Instant>,
    /// Silence longer than this declares a heart stopped.
    grace: Duration,
}

impl Hearts {
    pub(crate) fn new(period: Duration, max_misses: u32) -> Self {
        Hearts {
            start: Instant::now(),
            recent: VecDeque::new(),
            recent_set: HashSet::new(),
            last_pong: HashMap::new(),
            grace: period * (max_misses + 1),
        }
    }

    /// The next ping payload: seconds since start, as a float string.
    pub(crate) fn ping(&mut self, now: Instant) -> Vec<u8> {
        let payload = format!("{:?}", now.duration_since(self.start).as_secs_f64()).into_bytes();
        if self.recent.len() == RECENT_PINGS {
            if let Some(old) = self.recent.pop_front() {
                self.recent_set.remove(&old);
            }
        }
        self.recent.push_back(payload.clone());
        self.recent_set.insert(payload.clone());
        payload
    }

    /// A pong; returns the event to report, if any.
    pub(crate) fn pong(&mut self, uuid: &str, payload: &[u8], now: Instant) -> Option<HubEvent> {
        if !self.recent_set.contains(payload) {
            debug!(uuid, "pong with an unknown payload ignored");
            return None;
        }
        match self.last_pong.insert(uuid.to_string(), now) {
            None => Some(HubEvent::NewHeart(uuid.to_string())),
            Some(_) => None,
        }
    }

    /// Hearts silent for too long, removed and reported.
    pub(crate) fn check(&mut self, now: Instant) -> Vec<HubEvent> {
        let grace = self.grace;
        let dead: Vec<String> = self
            .last_pong
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > grace)
            .map(|(u, _)| u.clone())
            .collect();
        dead.into_iter()
            .map(|u| {
                self.last_pong.remove(&u);
                HubEvent::StoppedHeart(u)
            })
            .collect()
    }

    pub(crate) fn forget(&mut self, uuid: &str) {
        self.last_pong.remove(uuid);
    }
}

pub(crate) struct HeartLoop {
    pub ping: zmq::Socket,
    pub pong: zmq::Socket,
    pub hearts: Hearts,
    pub period: Duration,
    pub fast_period: Duration,
    pub pending: Arc<AtomicUsize>,
    pub commands: Receiver<HeartCommand>,
    pub hub: Sender<HubEvent>,
    pub stop: Arc<Stop>,
}

impl HeartLoop {
    pub(crate) fn run(mut self) {
        let mut last_ping: Option<Instant> = None;
        while !self.stop.is_set() {
            let now = Instant::now();
            let period = if self.pending.load(Ordering::SeqCst) > 0 {
                self.fast_period
            } else {
                self.period
            };
            if last_ping.is_none_or(|t| now.duration_since(t) >= period) {
                last_ping = Some(now);
                let payload = self.hearts.ping(now);
                if let Err(error) = self.ping.send(payload, 0) {
                    warn!(%error, "heartbeat ping failed");
                }
                for event in self.hearts.check(now) {
                    info!(?event, "heart stopped");
                    let _ = self.hub.send(event);
                }
            }
            let mut items = [self.pong.as_poll_item(zmq::POLLIN)];
            if readable(&mut items, POLL_MS) {
                while let Some(frames) = recv_frames(&self.pong) {
                    self.on_pong(&frames);
                }
            }
            while let Ok(HeartCommand::Forget(uuid)) = self.commands.try_recv() {
                self.hearts.forget(&uuid);
            }
        }
    }

    fn on_pong(&mut self, frames: &[zmq::Message]) {
        let [ident, payload] = frames else {
            warn!(
                socket = "hb_pong",
                frames = frames.len(),
                "dropped pong: expected [uuid, payload]"
            );
            return;
        };
        let Ok(uuid) = std::str::from_utf8(ident) else {
            warn!(socket = "hb_pong", "dropped pong from a non-UTF-8 identity");
            return;
        };
        if let Some(event) = self.hearts.pong(uuid, payload, Instant::now()) {
            let _ = self.hub.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pong_is_a_new_heart_and_silence_stops_it() {
        let mut h = Hearts::new(Duration::from_millis(100), 2);
        let t0 = Instant::now();
        let p1 = h.ping(t0);
        let p2 = h.ping(t0 + Duration::from_millis(50));
        assert_ne!(p1, p2);
        assert!(std::str::from_utf8(&p1).unwrap().parse::<f64>().is_ok());
        assert_eq!(h.pong("e", b"bogus", t0), None);
        assert_eq!(h.pong("e", &p1, t0), Some(HubEvent::NewHeart("e".into())));
        assert_eq!(h.pong("e", &p2, t0), None);
        assert!(h.check(t0 + Duration::from_millis(250)).is_empty());
        assert_eq!(
            h.check(t0 + Duration::from_millis(350)),
            vec![HubEvent::StoppedHeart("e".into())]
        );
        // Forgotten or stopped hearts are new again on their next pong.
        assert_eq!(h.pong("e", &p2, t0), Some(HubEvent::NewHeart("e".into())));
        h.forget("e");
        assert_eq!(h.pong("e", &p2, t0), Some(HubEvent::NewHeart("e".into())));
    }
}
