//! What a client reads of the messages it receives (docs/PROTOCOL.md §4, §6.6, §8):
//! the hub's `connection_reply` and engine notifications, how a reply ended, which
//! engine sent a message, an engine's `status`, and the keys of a `data_message`.
//!
//! Read leniently, as the client always has: a field of the wrong JSON type reads as
//! absent, content that is not an object as empty. Contents that are also sent or relayed
//! whole keep unknown fields in `extra`; the read-only ones read only their fields.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{lenient_string, read_object};

/// `connection_reply`: `status`, and the live engines as `{"<id>": uuid}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionReply {
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `None` when absent or not an object; entries whose key is not an integer or whose
    /// uuid is not a string are skipped.
    #[serde(default, deserialize_with = "engine_map")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engines: Option<BTreeMap<i64, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ConnectionReply {
    /// `status`, `""` when absent.
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("")
    }

    /// The engines by id (none when the field was absent or ill-formed).
    pub fn engines(&self) -> BTreeMap<i64, String> {
        self.engines.clone().unwrap_or_default()
    }
}

fn engine_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<i64, String>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => Some(
            m.iter()
                .filter_map(|(id, uuid)| Some((id.parse().ok()?, uuid.as_str()?.to_owned())))
                .collect(),
        ),
        _ => None,
    })
}

/// `registration_notification` and `unregistration_notification`: engine `id` is up
/// or gone. `id` is any integer (not one = absent), `uuid` a string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineNotification {
    #[serde(default, deserialize_with = "lenient_i64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Value::deserialize(d)?.as_i64())
}

/// IOPub `status`: the engine's `execution_state` (`busy`, `idle`, `starting`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusContent {
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_state: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a reply ended, of any reply's content: `status` (`ok`, `error`, `aborted`) and,
/// for an error, its `ename`. Only these are read; the client keeps the content whole.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReplyOutcome {
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub ename: Option<String>,
}

/// The engine that sent a reply or an IOPub message, as its metadata names it (`engine`:
/// a uuid string, else `None`). Only this field is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct SenderMetadata {
    #[serde(default, deserialize_with = "lenient_string")]
    pub engine: Option<String>,
}

/// `data_message` (ipyparallel's `publish_data`): the `keys` its buffers hold, the string
/// items of a list (not a list = none). Only this field is read; the buffers travel apart.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DataMessageContent {
    #[serde(default, deserialize_with = "string_items")]
    pub keys: Vec<String>,
}

fn string_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let value = Value::deserialize(d)?;
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect())
}

macro_rules! readable {
    ($($t:ty),*) => {$(
        impl $t {
            /// Reads a frame; one that is not a JSON object reads as empty.
            pub fn read(frame: &Value) -> Self {
                read_object(frame)
            }
        }
    )*};
}

macro_rules! writable {
    ($($t:ty),*) => {$(
        impl $t {
            /// The content frame to send.
            pub fn to_content(&self) -> Value {
                serde_json::to_value(self).expect("content serializes")
            }
        }
    )*};
}

readable!(
    ConnectionReply,
    EngineNotification,
    StatusContent,
    ReplyOutcome,
    SenderMetadata,
    DataMessageContent
);
writable!(ConnectionReply, EngineNotification, StatusContent);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_reply_reads_engines_by_integer_id() {
        let sent = json!({"status": "ok", "engines": {"0": "a", "12": "b"}, "x": 1});
        let reply = ConnectionReply::read(&sent);
        assert_eq!(reply.status(), "ok");
        assert_eq!(
            reply.engines(),
            BTreeMap::from([(0, "a".to_string()), (12, "b".to_string())])
        );
        assert_eq!(reply.to_content(), sent);

        let odd = ConnectionReply::read(&json!({"status": 1,
            "engines": {"x": "a", "1": 2, "-3": "c", "+4": "d"}}));
        assert_eq!(odd.status(), "");
        assert_eq!(
            odd.engines(),
            BTreeMap::from([(-3, "c".to_string()), (4, "d".to_string())])
        );
        assert!(ConnectionReply::read(&json!({"engines": ["a"]}))
            .engines
            .is_none());
        assert_eq!(
            ConnectionReply::read(&json!("ok")),
            ConnectionReply::default()
        );
    }

    #[test]
    fn notifications_status_and_read_only_fields_read_leniently() {
        let n = EngineNotification::read(&json!({"id": -2, "uuid": "u"}));
        assert_eq!((n.id, n.uuid.as_deref()), (Some(-2), Some("u")));
        let odd = EngineNotification::read(&json!({"id": 1.0, "uuid": 3}));
        assert_eq!((odd.id, odd.uuid), (None, None));

        let status = StatusContent::read(&json!({"execution_state": "idle"}));
        assert_eq!(status.execution_state.as_deref(), Some("idle"));
        assert_eq!(
            StatusContent::read(&json!({"execution_state": 0})).execution_state,
            None
        );

        let outcome = ReplyOutcome::read(&json!({"status": "error", "ename": "EngineError"}));
        assert_eq!(outcome.status.as_deref(), Some("error"));
        assert_eq!(outcome.ename.as_deref(), Some("EngineError"));
        assert_eq!(
            ReplyOutcome::read(&json!(["aborted"])),
            ReplyOutcome::default()
        );

        assert_eq!(
            SenderMetadata::read(&json!({"engine": "e"}))
                .engine
                .as_deref(),
            Some("e")
        );
        assert_eq!(SenderMetadata::read(&json!({"engine": ["e"]})).engine, None);

        let data = DataMessageContent::read(&json!({"keys": ["a", 1, "b"]}));
        assert_eq!(data.keys, vec!["a", "b"]);
        assert!(DataMessageContent::read(&json!({"keys": "a"}))
            .keys
            .is_empty());
    }
}
