//! Message headers, ids and dates in the exact shapes jupyter_client 8 produces.

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The Jupyter protocol version jupyter_client 8 stamps on every header.
pub const PROTOCOL_VERSION: &str = "5.4";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub msg_id: String,
    pub msg_type: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub session: String,
    /// ISO 8601 string; ipyparallel never parses dates on receipt, nor do we.
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub version: String,
}

/// A new random id in jupyter_client's `new_id()` form: 8 hex, `-`, 24 hex.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex = hex::encode(bytes);
    format!("{}-{}", &hex[..8], &hex[8..])
}

/// The current UTC time as `2026-11-26T05:33:02.392788Z`.
pub fn iso_now() -> String {
    // `to_rfc3339_opts` writes the same text without interpreting a format string, at a
    // fraction of the instructions (the hub stamps every record event).
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_jupyter_shape() {
        let id = new_id();
        assert_eq!(id.len(), 33);
        assert_eq!(&id[8..9], "-");
        assert!(id.replace('-', "").chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(new_id(), id);
    }

    #[test]
    fn dates_have_microseconds_and_z() {
        let d = iso_now();
        assert_eq!(d.len(), 27, "{d}");
        assert!(d.ends_with('Z'));
    }
}
