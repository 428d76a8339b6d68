//! Is the controller still there?
//!
//! The client watches its Hub (query) connection with a ZeroMQ socket monitor. A controller
//! that dies on this host closes its TCP connections at once (`DISCONNECTED`); one that
//! vanishes silently (a remote host powered off, a cable pulled) is caught by ZMTP
//! heartbeats on the same socket ([`HEARTBEAT_IVL`], [`HEARTBEAT_TIMEOUT`]), which make
//! libzmq drop the connection, so both end up as the same event. ZeroMQ keeps reconnecting
//! on its own: a controller that comes back on the same ports within [`Liveness::grace`]
//! (`HANDSHAKE_SUCCEEDED` again) fails nothing; otherwise the controller is declared lost,
//! once, and every outstanding result fails with [`crate::ClientError::ControllerLost`].
//!
//! Heartbeats are answered by libzmq's own I/O thread in the controller, so a controller
//! busy in its application threads is never mistaken for a dead one.

use std::time::{Duration, Instant};

/// ZMTP PING period on the Hub connection.
pub const HEARTBEAT_IVL: Duration = Duration::from_secs(1);
/// No traffic (not even a PONG) for this long closes the Hub connection.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// Asks the controller to drop our connection when it hears nothing from us for this long.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
/// How long a lost Hub connection may stay down before the controller is declared lost.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// What the socket monitor reported, reduced to what liveness needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEvent {
    /// The connection to the controller closed (or a heartbeat timed out).
    Down,
    /// A connection to the controller completed its ZMTP handshake.
    Up,
}

impl LinkEvent {
    /// Decodes the first frame of a libzmq monitor message (event id, u16 little-endian,
    /// then a u32 value); None for events liveness does not act on.
    pub fn from_monitor_frame(frame: &[u8]) -> Option<Self> {
        let raw = u16::from_le_bytes(frame.get(..2)?.try_into().ok()?);
        // Compared raw: `SocketEvent::from_raw` panics on event ids it does not know.
        if raw == zmq::SocketEvent::DISCONNECTED.to_raw() {
            Some(LinkEvent::Down)
        } else if raw == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
            Some(LinkEvent::Up)
        } else {
            None
        }
    }
}

/// The grace-period rule, as plain state (times injected, so it is tested without sockets).
#[derive(Debug)]
pub struct Liveness {
    pub grace: Duration,
    down_since: Option<Instant>,
    lost: bool,
}

impl Liveness {
    pub fn new(grace: Duration) -> Self {
        Liveness {
            grace,
            down_since: None,
            lost: false,
        }
    }

    pub fn on_event(&mut self, event: LinkEvent, now: Instant) {
        match event {
            LinkEvent::Down => {
                if self.down_since.is_none() {
                    tracing::warn!(
                        "connection to the controller closed; waiting for it to come back"
                    );
                }
                self.down_since.get_or_insert(now);
            }
            LinkEvent::Up => {
                if self.down_since.take().is_some() && !self.lost {
                    tracing::info!("controller connection is back");
                }
            }
        }
    }

    /// True exactly once: on the first check after the connection stayed down past the grace.
    pub fn became_lost(&mut self, now: Instant) -> bool {
        match self.down_since {
            Some(since) if !self.lost && now.duration_since(since) >= self.grace => {
                self.lost = true;
                true
            }
            _ => false,
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_past_grace_is_lost_once() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(2));
        assert!(!l.became_lost(t0 + Duration::from_secs(100)), "never down");
        l.on_event(LinkEvent::Down, t0);
        l.on_event(LinkEvent::Down, t0 + Duration::from_secs(1)); // does not restart the clock
        assert!(!l.became_lost(t0 + Duration::from_millis(1999)));
        assert!(l.became_lost(t0 + Duration::from_secs(2)));
        assert!(!l.became_lost(t0 + Duration::from_secs(3)), "reported once");
        assert!(l.is_lost());
        l.on_event(LinkEvent::Up, t0 + Duration::from_secs(4));
        assert!(l.is_lost(), "a lost controller stays lost");
    }

    #[test]
    fn back_within_grace_is_not_lost() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(2));
        l.on_event(LinkEvent::Down, t0);
        l.on_event(LinkEvent::Up, t0 + Duration::from_secs(1));
        assert!(!l.became_lost(t0 + Duration::from_secs(10)));
        assert!(!l.is_lost());
    }

    #[test]
    fn monitor_frames_decode() {
        let frame = |e: zmq::SocketEvent| {
            let mut f = (e as u16).to_le_bytes().to_vec();
            f.extend(0u32.to_le_bytes());
            f
        };
        assert_eq!(
            LinkEvent::from_monitor_frame(&frame(zmq::SocketEvent::DISCONNECTED)),
            Some(LinkEvent::Down)
        );
        assert_eq!(
            LinkEvent::from_monitor_frame(&frame(zmq::SocketEvent::HANDSHAKE_SUCCEEDED)),
            Some(LinkEvent::Up)
        );
        assert_eq!(
            LinkEvent::from_monitor_frame(&frame(zmq::SocketEvent::CONNECT_DELAYED)),
            None
        );
        assert_eq!(LinkEvent::from_monitor_frame(b"x"), None);
        assert_eq!(
            LinkEvent::from_monitor_frame(&[0xff, 0x7f, 0, 0, 0, 0]),
            None
        );
    }
}
