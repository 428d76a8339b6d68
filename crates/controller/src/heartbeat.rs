//! Heartbeat: a PUB that sends the monotonic-seconds float, a ROUTER that receives each
//! engine's echo `[uuid, payload]`. The first pong of an identity makes it a new heart;
//! silence for more than `max_misses` periods makes it a stopped heart.
//!
//! Unlike ipyparallel, which pings every 3 s, this pings every `fast_ping` while a
//! registration waits for its first pong, so a new engine is live in milliseconds.
//!
//! A dead local engine is noticed in well under a second, without a nanny process: socket
//! monitors on two engine-facing ROUTERs (hb_pong and control_out, one connection per
//! engine each) report connections that closed. A monitor does not say whose, so a close
//! only starts a *probe*: ping at once and fast, and after [`PROBE_WINDOW`] the engines
//! that answered no ping sent since the probe began are the suspects. They are declared
//! dead only when there are no more of them than unexplained closes seen on *both*
//! sockets (a dead process closes all its connections; a stray peer poking one port does
//! not). So an engine that is merely slow (a loaded machine) is never declared dead by this
//! path: with more suspects than closes the probe waits, re-counting as pongs arrive, and
//! after `grace` leaves it to the normal heartbeat, which stays the bound for engines on
//! other hosts (whose closes may never be seen).

use crossbeam_channel::Receiver;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use crate::events::{HeartCommand, HubEvent, HubSender};
use crate::sockets::{readable, recv_frames};
use crate::stop::Stop;

/// How many past ping payloads a pong may echo and still count.
const RECENT_PINGS: usize = 256;
const POLL_MS: i64 = 20;
/// How long a probe waits for pongs before counting suspects. Many fast pings fit in it,
/// so an engine that is alive but busy has many chances to answer.
pub(crate) const PROBE_WINDOW: Duration = Duration::from_millis(500);

/// The engine-facing sockets whose closed connections are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    HbPong = 0,
    Control = 1,
}

/// Pure heartbeat bookkeeping, separated from the sockets for tests.
#[derive(Debug)]
pub(crate) struct Hearts {
    start: Instant,
    /// Recent ping payloads and when each was sent.
    recent: VecDeque<Vec<u8>>,
    sent_at: HashMap<Vec<u8>, Instant>,
    last_pong: HashMap<String, Instant>,
    /// Per heart, when the newest ping it echoed was sent.
    answered: HashMap<String, Instant>,
    /// Silence longer than this declares a heart stopped.
    grace: Duration,
    /// Connection closes not yet explained, per [`Watched`] socket.
    closes: [usize; 2],
    /// When the current probe began (its first ping was sent).
    probe: Option<Instant>,
    /// Hearts the hub unregistered for their own reasons (a clean shutdown), whose closes
    /// are coming or came: they explain that many closes, for [`CREDIT_FOR`].
    credits: VecDeque<Instant>,
}

/// How long the closes of a cleanly unregistered engine are expected.
const CREDIT_FOR: Duration = Duration::from_secs(5);

impl Hearts {
    pub(crate) fn new(period: Duration, max_misses: u32) -> Self {
        Hearts {
            start: Instant::now(),
            recent: VecDeque::new(),
            sent_at: HashMap::new(),
            last_pong: HashMap::new(),
            answered: HashMap::new(),
            grace: period * (max_misses + 1),
            closes: [0, 0],
            probe: None,
            credits: VecDeque::new(),
        }
    }

    /// The next ping payload: seconds since start, as a float string.
    pub(crate) fn ping(&mut self, now: Instant) -> Vec<u8> {
        let payload = format!("{:?}", now.duration_since(self.start).as_secs_f64()).into_bytes();
        if self.recent.len() == RECENT_PINGS {
            if let Some(old) = self.recent.pop_front() {
                self.sent_at.remove(&old);
            }
        }
        self.recent.push_back(payload.clone());
        self.sent_at.insert(payload.clone(), now);
        payload
    }

    /// A pong; returns the event to report, if any.
    pub(crate) fn pong(&mut self, uuid: &str, payload: &[u8], now: Instant) -> Option<HubEvent> {
        let Some(&sent) = self.sent_at.get(payload) else {
            debug!(uuid, "pong with an unknown payload ignored");
            return None;
        };
        let answered = self.answered.entry(uuid.to_string()).or_insert(sent);
        *answered = (*answered).max(sent);
        match self.last_pong.insert(uuid.to_string(), now) {
            None => Some(HubEvent::NewHeart(uuid.to_string())),
            Some(_) => None,
        }
    }

    /// A connection to a watched socket closed. True when this starts a probe: the caller
    /// pings at once (and the probe counts from that ping).
    pub(crate) fn connection_closed(&mut self, socket: Watched) -> bool {
        self.closes[socket as usize] += 1;
        self.probe.is_none()
    }

    /// Starts a probe at `now` if none runs (call it when sending the probe's first ping).
    pub(crate) fn start_probe(&mut self, now: Instant) {
        self.probe.get_or_insert(now);
    }

    /// While a probe runs, pings go out at the fast period.
    pub(crate) fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Hearts silent for too long, and suspects a probe can confirm, removed and reported.
    pub(crate) fn check(&mut self, now: Instant) -> Vec<HubEvent> {
        let grace = self.grace;
        let mut dead: Vec<String> = self
            .last_pong
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > grace)
            .map(|(u, _)| u.clone())
            .collect();
        dead.extend(self.confirm_probe(now));
        dead.sort();
        dead.dedup();
        dead.into_iter()
            .map(|u| {
                self.forget(&u);
                HubEvent::StoppedHeart(u)
            })
            .collect()
    }

    /// The probe's verdict: suspects declared dead when the closes account for them.
    fn confirm_probe(&mut self, now: Instant) -> Vec<String> {
        let Some(began) = self.probe else {
            return Vec::new();
        };
        if now.duration_since(began) < PROBE_WINDOW {
            return Vec::new();
        }
        let suspects: Vec<String> = self
            .answered
            .iter()
            .filter(|(_, sent)| **sent < began)
            .map(|(u, _)| u.clone())
            .collect();
        while self
            .credits
            .front()
            .is_some_and(|t| now.duration_since(*t) > CREDIT_FOR)
        {
            self.credits.pop_front();
        }
        let explained = self.closes[0]
            .min(self.closes[1])
            .saturating_sub(self.credits.len());
        if suspects.is_empty() {
            // Every heart answered: the closes were peers that were not (live) engines.
            self.end_probe();
            return Vec::new();
        }
        if suspects.len() <= explained {
            for c in &mut self.closes {
                *c -= suspects.len();
            }
            warn!(
                engines = ?suspects,
                "connections closed and no pong since: engines dead"
            );
            self.end_probe();
            return suspects;
        }
        if now.duration_since(began) > self.grace {
            debug!(
                suspects = suspects.len(),
                explained, "probe inconclusive; the heartbeat timeout decides"
            );
            self.end_probe();
        }
        Vec::new()
    }

    fn end_probe(&mut self) {
        let consumed = self.closes[0].min(self.closes[1]).min(self.credits.len());
        self.credits.drain(..consumed);
        self.probe = None;
        self.closes = [0, 0];
    }

    pub(crate) fn forget(&mut self, uuid: &str) {
        self.last_pong.remove(uuid);
        self.answered.remove(uuid);
    }

    /// The hub unregistered this engine (not this module's verdict): its connections'
    /// closes are explained, so they must not count against a silent engine.
    pub(crate) fn unregistered(&mut self, uuid: &str, now: Instant) {
        if self.answered.contains_key(uuid) {
            self.credits.push_back(now);
        }
        self.forget(uuid);
    }
}

/// Reads a socket monitor's events: true for each connection the monitored socket lost.
pub(crate) fn closed_connections(monitor: &zmq::Socket) -> usize {
    let mut n = 0;
    while let Some(frames) = recv_frames(monitor) {
        let event = frames
            .first()
            .filter(|f| f.len() >= 2)
            .map(|f| u16::from_le_bytes([f[0], f[1]]));
        if event == Some(zmq::SocketEvent::DISCONNECTED.to_raw()) {
            n += 1;
        }
    }
    n
}

pub(crate) struct HeartLoop {
    pub ping: zmq::Socket,
    pub pong: zmq::Socket,
    /// PAIR sockets receiving the socket monitors' events of the watched ROUTERs.
    pub monitors: Vec<(Watched, zmq::Socket)>,
    pub hearts: Hearts,
    pub period: Duration,
    pub fast_period: Duration,
    pub pending: Arc<AtomicUsize>,
    pub commands: Receiver<HeartCommand>,
    pub hub: HubSender,
    pub stop: Arc<Stop>,
}

impl HeartLoop {
    pub(crate) fn run(mut self) {
        let mut last_ping: Option<Instant> = None;
        while !self.stop.is_set() {
            let mut probe_now = false;
            for (socket, monitor) in &self.monitors {
                for _ in 0..closed_connections(monitor) {
                    probe_now |= self.hearts.connection_closed(*socket);
                }
            }
            let now = Instant::now();
            let period = if self.pending.load(Ordering::SeqCst) > 0 || self.hearts.probing() {
                self.fast_period
            } else {
                self.period
            };
            if probe_now || last_ping.is_none_or(|t| now.duration_since(t) >= period) {
                last_ping = Some(now);
                let payload = self.hearts.ping(now);
                if probe_now {
                    self.hearts.start_probe(now);
                }
                if let Err(error) = self.ping.send(payload, 0) {
                    warn!(%error, "heartbeat ping failed");
                }
            }
            for event in self.hearts.check(now) {
                warn!(?event, "heart stopped");
                let _ = self.hub.send(event);
            }
            let mut items: Vec<zmq::PollItem> = std::iter::once(&self.pong)
                .chain(self.monitors.iter().map(|(_, m)| m))
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            if readable(&mut items, POLL_MS) && items[0].is_readable() {
                while let Some(frames) = recv_frames(&self.pong) {
                    self.on_pong(&frames);
                }
            }
            while let Ok(HeartCommand::Forget(uuid)) = self.commands.try_recv() {
                self.hearts.unregistered(&uuid, Instant::now());
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

    /// Two live hearts `a` and `b` that answered a ping at `t0`.
    fn two_hearts(t0: Instant) -> Hearts {
        let mut h = Hearts::new(Duration::from_secs(3), 10);
        let p = h.ping(t0);
        h.pong("a", &p, t0);
        h.pong("b", &p, t0);
        h
    }

    #[test]
    fn closes_on_both_sockets_confirm_the_silent_engine_after_the_window() {
        let t0 = Instant::now();
        let mut h = two_hearts(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(h.connection_closed(Watched::HbPong));
        h.start_probe(t1);
        let probe = h.ping(t1);
        assert!(
            !h.connection_closed(Watched::Control),
            "one probe at a time"
        );
        assert_eq!(h.pong("b", &probe, t1), None);
        assert!(h.check(t1 + PROBE_WINDOW / 2).is_empty(), "window not over");
        assert_eq!(
            h.check(t1 + PROBE_WINDOW),
            vec![HubEvent::StoppedHeart("a".into())]
        );
        assert!(!h.probing());
    }

    #[test]
    fn more_silent_engines_than_closes_wait_for_pongs_and_never_guess() {
        let t0 = Instant::now();
        let mut h = two_hearts(t0);
        let t1 = t0 + Duration::from_secs(1);
        h.connection_closed(Watched::HbPong);
        h.connection_closed(Watched::Control);
        h.start_probe(t1);
        let probe = h.ping(t1);
        // Both silent (one dead, one slow): nobody is declared.
        assert!(h.check(t1 + PROBE_WINDOW).is_empty());
        assert!(h.probing());
        // The slow one answers later; now the closes account for the other.
        h.pong("b", &probe, t1 + Duration::from_secs(2));
        assert_eq!(
            h.check(t1 + Duration::from_secs(2)),
            vec![HubEvent::StoppedHeart("a".into())]
        );
    }

    #[test]
    fn closes_on_one_socket_or_of_unregistered_engines_explain_no_silence() {
        let t0 = Instant::now();
        // A stray peer on the heartbeat port only.
        let mut h = two_hearts(t0);
        let t1 = t0 + Duration::from_secs(1);
        h.connection_closed(Watched::HbPong);
        h.start_probe(t1);
        assert!(h.check(t1 + PROBE_WINDOW).is_empty());
        // An engine the hub unregistered (clean shutdown) closes both; `a` is slow.
        let mut h = two_hearts(t0);
        h.unregistered("b", t1);
        h.connection_closed(Watched::HbPong);
        h.connection_closed(Watched::Control);
        h.start_probe(t1);
        assert!(h.check(t1 + PROBE_WINDOW).is_empty(), "slow `a` is spared");
        // A probe that runs past the grace gives up and leaves it to the heartbeat.
        assert!(h.check(t1 + Duration::from_secs(2)).is_empty());
        h.check(t1 + Duration::from_secs(34));
        assert!(!h.probing());
    }
}
