//! A lenient view of a header (docs/PROTOCOL.md §3.3) or parent header kept as JSON: the
//! fields the hub's task records, the client's IOPub filter and the engine's request
//! reader read.
//! [`crate::Header`] is the strict header corral writes; headers as others send them
//! (and parent headers, which may be `{}`) are read through this view instead, so that an
//! odd field never loses the whole message.
//!
//! A field of the wrong JSON type reads as absent; a header that is not an object reads
//! as empty. `date` is kept as sent, since records store it as it came.

use serde::Deserialize;
use serde_json::Value;

use super::requests::present;
use super::{lenient_string, read_object};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HeaderFields {
    #[serde(default, deserialize_with = "lenient_string")]
    pub msg_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub msg_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub session: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// As sent, any JSON value (`null` included); `None` when absent.
    #[serde(default, deserialize_with = "present")]
    pub date: Option<Value>,
}

impl HeaderFields {
    /// Reads a header frame; one that is not a JSON object reads as empty.
    pub fn read(header: &Value) -> Self {
        read_object(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_strings_and_keeps_the_date_as_sent() {
        let h = HeaderFields::read(&json!({"msg_id": "m", "msg_type": "stream",
            "session": "s", "date": "2026-01-01T00:00:00Z", "username": "u", "version": 5}));
        assert_eq!((h.username.as_deref(), h.version), (Some("u"), None));
        assert_eq!(h.msg_id.as_deref(), Some("m"));
        assert_eq!(h.msg_type.as_deref(), Some("stream"));
        assert_eq!(h.session.as_deref(), Some("s"));
        assert_eq!(h.date, Some(json!("2026-01-01T00:00:00Z")));

        let odd = HeaderFields::read(&json!({"msg_id": 1, "msg_type": null,
                                             "session": [], "date": null}));
        assert_eq!((odd.msg_id, odd.msg_type, odd.session), (None, None, None));
        assert_eq!(odd.date, Some(Value::Null));
        assert_eq!(HeaderFields::read(&json!({})), HeaderFields::default());
        assert_eq!(HeaderFields::read(&json!(["m"])), HeaderFields::default());
    }
}
