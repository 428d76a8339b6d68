//! What a controller needs to know before it binds anything.

use corral_wire::ProfileLocation;

/// Settings of one controller. `Default` gives ipyparallel's defaults on 127.0.0.1 with
/// the `default` profile.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Address every socket binds to (random ports).
    pub ip: String,
    /// Profile directory and cluster id: where the connection files go.
    pub location: ProfileLocation,
    /// HMAC key; `None` draws a fresh `new_id()` as ipyparallel does.
    pub key: Option<String>,
    /// Heartbeat period in ms, also sent to engines as `hb_period`.
    pub hb_period_ms: u64,
    /// Consecutive missed periods after which an engine is declared dead (ipyparallel:
    /// `max_heartmonitor_misses` = 10, i.e. ~33 s with the default period).
    pub hb_max_misses: u32,
    /// Ping interval while a registration waits for its first pong, so new engines go
    /// live in milliseconds instead of one full period.
    pub fast_ping_ms: u64,
    /// Write `ipcontroller-{client,engine}.json` (and delete them on stop).
    pub write_files: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            ip: "127.0.0.1".into(),
            location: ProfileLocation::resolve(None, None, ""),
            key: None,
            hb_period_ms: 3000,
            hb_max_misses: 10,
            fast_ping_ms: 50,
            write_files: true,
        }
    }
}

impl ControllerConfig {
    /// ipyparallel's `registration_timeout`: `max(30 s, 5 periods)`; a registration that
    /// sees no heartbeat within it is purged.
    pub fn registration_timeout_ms(&self) -> u64 {
        (5 * self.hb_period_ms).max(30_000)
    }
}
