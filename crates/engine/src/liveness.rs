//! When the controller counts as gone. Two rules, the first to fire wins:
//!
//! - **Local death, seconds**: the heartbeat connection dropped (the kernel closed the dead
//!   process's sockets) and stayed down for `grace` with no ping since. A controller
//!   restarted on the same ports within the grace reconnects and clears it.
//! - **Remote silence, the bound**: no ping for `MAX_HEARTBEAT_MISSES` periods (ipengine's
//!   rule), for a controller whose host or network vanished without closing anything.

use std::time::Duration;

/// Heartbeat periods without a ping after which the engine gives up (ipengine's default).
pub(crate) const MAX_HEARTBEAT_MISSES: u64 = 50;

/// What the heart has observed, in milliseconds on one clock (0 = never / connected).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    pub(crate) now_ms: u64,
    pub(crate) last_ping_ms: u64,
    pub(crate) disconnected_ms: u64,
}

/// Why the controller is considered gone, or `None` while it is not.
pub(crate) fn verdict(seen: Observed, hb_period_ms: u64, grace: Duration) -> Option<String> {
    let grace_ms = grace.as_millis() as u64;
    if seen.disconnected_ms > 0 && seen.last_ping_ms <= seen.disconnected_ms {
        let down = seen.now_ms.saturating_sub(seen.disconnected_ms);
        if down >= grace_ms {
            return Some(format!(
                "the controller closed the heartbeat connection {:.1} s ago and did not come back \
                 (controller process gone)",
                down as f64 / 1000.0
            ));
        }
    }
    let limit = MAX_HEARTBEAT_MISSES * (hb_period_ms + 500);
    let silence = seen.now_ms.saturating_sub(seen.last_ping_ms);
    if seen.last_ping_ms > 0 && silence > limit {
        return Some(format!(
            "no heartbeat ping from the controller for {:.1} s ({MAX_HEARTBEAT_MISSES} periods \
             of {hb_period_ms} ms)",
            silence as f64 / 1000.0
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);

    fn seen(now_ms: u64, last_ping_ms: u64, disconnected_ms: u64) -> Observed {
        Observed {
            now_ms,
            last_ping_ms,
            disconnected_ms,
        }
    }

    #[test]
    fn a_dropped_connection_is_fatal_only_after_the_grace() {
        assert_eq!(verdict(seen(10_000, 9_000, 9_500), 3000, GRACE), None);
        let why = verdict(seen(12_600, 9_000, 9_500), 3000, GRACE).unwrap();
        assert!(
            why.contains("closed the heartbeat connection 3.1 s ago"),
            "{why}"
        );
        // Dropped before the first ping ever came: still the controller's death.
        assert!(verdict(seen(12_600, 0, 9_500), 3000, GRACE).is_some());
    }

    #[test]
    fn a_ping_after_the_drop_means_it_came_back() {
        assert_eq!(verdict(seen(20_000, 19_000, 9_500), 3000, GRACE), None);
    }

    #[test]
    fn silence_alone_is_fatal_after_fifty_periods() {
        let limit = 50 * 3500;
        assert_eq!(verdict(seen(1_000 + limit, 1_000, 0), 3000, GRACE), None);
        let why = verdict(seen(1_001 + limit, 1_000, 0), 3000, GRACE).unwrap();
        assert!(why.contains("50 periods"), "{why}");
        // Before the first ping, silence proves nothing (registration can be slow).
        assert_eq!(verdict(seen(10_000_000, 0, 0), 3000, GRACE), None);
    }
}
