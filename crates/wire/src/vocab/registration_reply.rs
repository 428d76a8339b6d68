//! `registration_reply` content: the hub's answer to an engine's `registration_request`
//! (docs/PROTOCOL.md §4.1): `{status: "ok", id, hb_period, connection_info}`, or an
//! error content (`status: "error"`, `ename`, `evalue`, ...) when it refuses.
//!
//! Read leniently, as the engine always has: a field of the wrong JSON type reads as
//! absent, and content that is not an object reads as empty (a refusal without reason).
//! Fields we do not know (`connection_info`, `traceback`, ...) are kept in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{lenient_string, lenient_u64, read_object};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrationReply {
    /// `"ok"` when registered; anything else (or nothing) is a refusal.
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The engine's id: a non-negative integer, else absent.
    #[serde(default, deserialize_with = "lenient_u64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The heartbeat period in milliseconds: a non-negative integer, else absent.
    #[serde(default, deserialize_with = "lenient_u64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hb_period: Option<u64>,
    /// A refusal's exception name.
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ename: Option<String>,
    /// A refusal's exception text.
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evalue: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RegistrationReply {
    /// Reads a content frame; content that is not a JSON object reads as empty.
    pub fn read(content: &Value) -> Self {
        read_object(content)
    }

    /// The content frame to send.
    pub fn to_content(&self) -> Value {
        serde_json::to_value(self).expect("registration reply serializes")
    }

    /// Registered: `status` is the string `"ok"`.
    pub fn is_ok(&self) -> bool {
        self.status.as_deref() == Some("ok")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_acceptance_and_keeps_connection_info() {
        let sent = json!({"status": "ok", "id": 3, "hb_period": 1500,
                          "connection_info": {"mux": "tcp://127.0.0.1:1"}});
        let reply = RegistrationReply::read(&sent);
        assert!(reply.is_ok());
        assert_eq!((reply.id, reply.hb_period), (Some(3), Some(1500)));
        assert_eq!(reply.to_content(), sent);
    }

    #[test]
    fn reads_a_refusal_and_ill_formed_fields_as_absent() {
        let refusal = RegistrationReply::read(&json!({"status": "error",
            "ename": "RegistrationError", "evalue": "uuid in use", "traceback": []}));
        assert!(!refusal.is_ok());
        assert_eq!(refusal.ename.as_deref(), Some("RegistrationError"));
        assert_eq!(refusal.evalue.as_deref(), Some("uuid in use"));

        let odd = RegistrationReply::read(&json!({"status": true, "id": -1,
                                                  "hb_period": 1.5, "ename": 1}));
        assert!(!odd.is_ok());
        assert_eq!((odd.id, odd.hb_period, odd.ename), (None, None, None));
        for not_object in [json!(null), json!(["ok", 1]), json!("ok")] {
            assert_eq!(
                RegistrationReply::read(&not_object),
                RegistrationReply::default()
            );
        }
    }
}
