//! The fields of a request's metadata that come back unchanged: ipyparallel's kernel
//! copies `is_broadcast`, `is_coalescing`, `original_msg_id` and `label` into its reply's
//! metadata (docs/PROTOCOL.md §6.1), and the hub keeps `label` in the task record.
//!
//! Each is kept exactly as sent, whatever its JSON type (`null` included): an echo must
//! not reinterpret what it returns. Metadata that is not an object reads as empty, and
//! only these fields are read.

use serde::Deserialize;
use serde_json::{json, Value};

use super::read_object;
use super::requests::present;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct EchoedMetadata {
    #[serde(default, deserialize_with = "present")]
    pub is_broadcast: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub is_coalescing: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub original_msg_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub label: Option<Value>,
}

impl EchoedMetadata {
    /// Reads a request's metadata frame; metadata that is not a JSON object reads as empty.
    pub fn read(md: &Value) -> Self {
        read_object(md)
    }

    /// The metadata of the reply to this request, as ipyparallel's kernel writes it:
    /// the echoed fields (absent ones as `false`, `false`, `""` and `null`) with who ran
    /// it (`engine`), when it `started`, how it ended (`status`), and
    /// `dependencies_met: true`.
    pub fn reply_metadata(self, engine: &str, status: &str, started: &str) -> Value {
        json!({
            "started": started,
            "dependencies_met": true,
            "engine": engine,
            "is_broadcast": self.is_broadcast.unwrap_or(json!(false)),
            "is_coalescing": self.is_coalescing.unwrap_or(json!(false)),
            "original_msg_id": self.original_msg_id.unwrap_or(json!("")),
            "label": self.label.unwrap_or(Value::Null),
            "status": status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_fields_as_sent_and_defaults_absent_ones() {
        let md = EchoedMetadata::read(&json!({"label": [1], "is_broadcast": "odd",
                                              "original_msg_id": null, "targets": []}))
        .reply_metadata("u", "ok", "t");
        assert_eq!(
            md,
            json!({"started": "t", "dependencies_met": true, "engine": "u",
                   "is_broadcast": "odd", "is_coalescing": false,
                   "original_msg_id": null, "label": [1], "status": "ok"})
        );
        for not_object in [json!(null), json!(["label"]), json!(3)] {
            let md = EchoedMetadata::read(&not_object).reply_metadata("u", "aborted", "t");
            assert_eq!(
                (&md["is_broadcast"], &md["original_msg_id"], &md["label"]),
                (&json!(false), &json!(""), &Value::Null)
            );
            assert_eq!(md["status"], "aborted");
        }
    }
}
