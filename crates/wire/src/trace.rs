//! Per-hop latency trace points, off unless `CORRAL_TRACE` names a directory.
//!
//! Each process that calls [`point`] appends lines `<point> <msg_id> <ns>` to
//! `$CORRAL_TRACE/<process>-<pid>.trace`, where `<ns>` is the wall clock
//! (`CLOCK_REALTIME`, as Python's `time.time_ns()`), the one clock every process on a
//! machine shares without `unsafe`. `benchmarks/trace_w2.py` joins the files of client,
//! controller and engine by msg_id into a time per hop.
//!
//! When the variable is unset the cost is one relaxed atomic load per call (the variable
//! is read once). When set, every point is one `write` system call (a few µs), which the
//! trace's figures include: it is a diagnostic, not a benchmark.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

static SINK: OnceLock<Option<Mutex<File>>> = OnceLock::new();

fn open() -> Option<Mutex<File>> {
    let dir = PathBuf::from(std::env::var_os("CORRAL_TRACE")?);
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "process".into());
    let path = dir.join(format!("{name}-{}.trace", std::process::id()));
    match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => Some(Mutex::new(f)),
        Err(_) => None,
    }
}

/// True when tracing is on (`CORRAL_TRACE` was set when first asked).
pub fn enabled() -> bool {
    SINK.get_or_init(open).is_some()
}

/// The trace clock: nanoseconds since the Unix epoch.
pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Records that the message `msg_id` reached `point` now. A no-op when tracing is off.
pub fn point(point: &str, msg_id: &[u8]) {
    if enabled() {
        point_at(point, msg_id, now_ns());
    }
}

/// Records that `msg_id` reached `point` at `ns` (taken earlier with [`now_ns`], when the
/// msg_id was not known yet).
pub fn point_at(point: &str, msg_id: &[u8], ns: u128) {
    let Some(sink) = SINK.get_or_init(open) else {
        return;
    };
    let mut line = Vec::with_capacity(point.len() + msg_id.len() + 24);
    line.extend_from_slice(point.as_bytes());
    line.push(b' ');
    line.extend_from_slice(msg_id);
    line.extend_from_slice(format!(" {ns}\n").as_bytes());
    if let Ok(mut f) = sink.lock() {
        let _ = f.write_all(&line);
    }
}

/// The value of the first `"msg_id"` string in a JSON header frame, found by a byte scan
/// (no parse): only for trace points, which must not change what the hot path does.
pub fn msg_id_in(json: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"msg_id\"";
    let Some(at) = json.windows(KEY.len()).position(|w| w == KEY) else {
        return b"-";
    };
    let rest = &json[at + KEY.len()..];
    let Some(open) = rest.iter().position(|&b| b == b'"') else {
        return b"-";
    };
    let rest = &rest[open + 1..];
    match rest.iter().position(|&b| b == b'"') {
        Some(close) => &rest[..close],
        None => b"-",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_id_is_found_without_parsing() {
        assert_eq!(
            msg_id_in(br#"{"date": "x", "msg_id": "ab-1", "z": 1}"#),
            b"ab-1"
        );
        assert_eq!(msg_id_in(br#"{"msg_id":"q"}"#), b"q");
        assert_eq!(msg_id_in(b"{}"), b"-");
        assert_eq!(msg_id_in(br#"{"msg_id": "#), b"-");
    }
}
