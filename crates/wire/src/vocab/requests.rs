//! Typed contents of the requests the hub and the engine's control thread answer:
//! `abort_request`, `shutdown_request` (engine); `queue_request`, `load_request`,
//! `result_request`, `db_request`, `resubmit_request` and `purge_request` (hub);
//! docs/PROTOCOL.md §6.4 and §6.5.
//!
//! Read leniently, as the handlers always have: a field of the wrong JSON type reads as its
//! default (documented per field), never as an error, so any signed request gets a reply.
//! Fields we do not know are kept in `extra`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{lenient_bool, read_object};

/// A `msg_ids` field exactly as sent. Its readers disagree on ill-formed input (the
/// engine's abort takes a lone string or any list item; the hub's queries keep only the
/// string items of a list, and purge reads `"all"`), so the raw value is kept and each
/// reader picks its reading by method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdList(Value);

impl IdList {
    /// The value as sent (`null` when the field was absent).
    pub fn raw(&self) -> &Value {
        &self.0
    }

    /// The string items of a list, in order; anything else holds none. The hub's reading
    /// (`result_request`, `resubmit_request`, `purge_request`).
    pub fn strings(&self) -> impl Iterator<Item = &str> {
        self.0
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }

    /// The string `"all"`: `purge_request`'s "every finished record".
    pub fn is_all(&self) -> bool {
        self.0.as_str() == Some("all")
    }

    /// The reading of ipyparallel's kernel for `abort_request`: absent, `null` or `false`
    /// is no ids (empty); a string is one id; a list is its items, a non-string by its
    /// JSON text as Python's `str()` would spell it. `None` for any other value (a number,
    /// `true`, an object), which the kernel rejects.
    pub fn kernel_ids(&self) -> Option<Vec<String>> {
        match &self.0 {
            Value::Null | Value::Bool(false) => Some(Vec::new()),
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

impl From<Value> for IdList {
    fn from(value: Value) -> Self {
        IdList(value)
    }
}

/// The non-negative integers of a list, or `None` for anything that is not a list.
fn lenient_u64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(items.iter().filter_map(Value::as_u64).collect()),
        _ => None,
    })
}

/// The strings of a list, or `None` for anything that is not a list.
fn lenient_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => None,
    })
}

/// Any value, kept as sent (`null` included); only an absent field takes the default.
pub(super) fn present<'de, D: Deserializer<'de>, T: From<Value>>(d: D) -> Result<T, D::Error> {
    Value::deserialize(d).map(T::from)
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Implements `read` (lenient, a non-object reads as empty) and `to_content`.
macro_rules! content_io {
    ($($t:ty),*) => {$(
        impl $t {
            /// Reads a content frame; content that is not a JSON object reads as empty.
            pub fn read(content: &Value) -> Self {
                read_object(content)
            }

            /// The content frame to send.
            pub fn to_content(&self) -> Value {
                serde_json::to_value(self).expect("request content serializes")
            }
        }
    )*};
}

/// The content of a request whose fields nobody reads (`connection_request`,
/// `history_request`, `kernel_info_request`): kept whole, so it round-trips.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmptyRequest {
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `abort_request` (control): stop the named queued requests, or the whole queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbortRequest {
    #[serde(default)]
    pub msg_ids: IdList,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `shutdown_request` (control or hub). `restart` is echoed in the engine's reply as
/// sent, so it stays a raw value (`null` included); see [`restart`](Self::restart).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ShutdownRequest {
    /// `restart` as sent, `false` when absent.
    pub fn restart(&self) -> Value {
        self.restart.clone().unwrap_or(Value::Bool(false))
    }
}

/// `queue_request`: queue status of `targets` (engine ids; not a list = every engine;
/// non-integer items are skipped), with msg_ids instead of counts when `verbose`
/// (not a bool = false).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueRequest {
    #[serde(default, deserialize_with = "lenient_u64_list")]
    pub targets: Option<Vec<u64>>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub verbose: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `load_request`: outstanding work of `targets`, read as in [`QueueRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadRequest {
    #[serde(default, deserialize_with = "lenient_u64_list")]
    pub targets: Option<Vec<u64>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `result_request`: status, and unless `status_only` (not a bool = false) the records,
/// of `msg_ids` (the hub reads [`IdList::strings`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultRequest {
    #[serde(default)]
    pub msg_ids: IdList,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub status_only: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `db_request`: records matching `query` (a MongoDB-style filter, passed on as sent;
/// absent = `{}`, match all), reduced to `keys` (the strings of a list; not a list =
/// every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbRequest {
    #[serde(default = "empty_object", deserialize_with = "present")]
    pub query: Value,
    #[serde(default, deserialize_with = "lenient_string_list")]
    pub keys: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for DbRequest {
    fn default() -> Self {
        DbRequest {
            query: empty_object(),
            keys: None,
            extra: Map::new(),
        }
    }
}

/// `resubmit_request`: send these finished tasks again (the hub reads
/// [`IdList::strings`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResubmitRequest {
    #[serde(default)]
    pub msg_ids: IdList,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `purge_request`: forget records: `msg_ids` ([`IdList::is_all`] or
/// [`IdList::strings`]) and everything `engine_ids` finished (the integers of a list;
/// not a list = none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PurgeRequest {
    #[serde(default)]
    pub msg_ids: IdList,
    #[serde(default, deserialize_with = "lenient_u64_list")]
    pub engine_ids: Option<Vec<u64>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

content_io!(
    EmptyRequest,
    AbortRequest,
    ShutdownRequest,
    QueueRequest,
    LoadRequest,
    ResultRequest,
    DbRequest,
    ResubmitRequest,
    PurgeRequest
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn id_list_readings_differ_as_their_readers_do() {
        let ids = |v: Value| IdList::from(v);
        assert_eq!(ids(json!(null)).kernel_ids(), Some(vec![]));
        assert_eq!(ids(json!(false)).kernel_ids(), Some(vec![]));
        assert_eq!(ids(json!([])).kernel_ids(), Some(vec![]));
        assert_eq!(ids(json!("a")).kernel_ids(), Some(vec!["a".to_string()]));
        assert_eq!(
            ids(json!(["a", 5, null, {"k": 1}])).kernel_ids(),
            Some(vec![
                "a".to_string(),
                "5".to_string(),
                "null".to_string(),
                r#"{"k":1}"#.to_string()
            ])
        );
        for bad in [json!(5), json!(true), json!({"a": 1}), json!(1.5)] {
            assert_eq!(ids(bad.clone()).kernel_ids(), None, "{bad}");
        }

        let list = ids(json!(["a", 5, "b", null]));
        assert_eq!(list.strings().collect::<Vec<_>>(), ["a", "b"]);
        assert!(ids(json!("a")).strings().next().is_none());
        assert!(ids(json!("all")).is_all());
        assert!(!ids(json!(["all"])).is_all());
        assert_eq!(
            ids(json!("all")).kernel_ids(),
            Some(vec!["all".to_string()])
        );
    }

    #[test]
    fn abort_and_shutdown_read_leniently() {
        assert_eq!(AbortRequest::read(&json!({})).msg_ids.raw(), &Value::Null);
        assert_eq!(
            AbortRequest::read(&json!({"msg_ids": 5})).msg_ids.raw(),
            &json!(5)
        );
        assert_eq!(AbortRequest::read(&json!([1])), AbortRequest::default());
        assert_eq!(ShutdownRequest::read(&json!({})).restart(), json!(false));
        assert_eq!(
            ShutdownRequest::read(&json!({"restart": null})).restart(),
            Value::Null
        );
        assert_eq!(
            ShutdownRequest::read(&json!({"restart": [1]})).restart(),
            json!([1])
        );
        assert_eq!(ShutdownRequest::read(&json!("x")).restart(), json!(false));
        assert_eq!(ShutdownRequest::read(&json!({})).to_content(), json!({}));
    }

    #[test]
    fn hub_queries_read_leniently() {
        let q = QueueRequest::read(&json!({"targets": [0, -1, "2", 3], "verbose": 1}));
        assert_eq!((q.targets, q.verbose), (Some(vec![0, 3]), false));
        let q = QueueRequest::read(&json!({"targets": 1, "verbose": true}));
        assert_eq!((q.targets, q.verbose), (None, true));
        assert_eq!(LoadRequest::read(&json!({"targets": null})).targets, None);

        let r = ResultRequest::read(&json!({"msg_ids": ["a", 1], "status_only": "yes"}));
        assert_eq!(r.msg_ids.strings().collect::<Vec<_>>(), ["a"]);
        assert!(!r.status_only);

        let db = DbRequest::read(&json!({"keys": ["msg_id", 3]}));
        assert_eq!(db.query, json!({}));
        assert_eq!(db.keys, Some(vec!["msg_id".to_string()]));
        let db = DbRequest::read(&json!({"query": null, "keys": "msg_id"}));
        assert_eq!((db.query, db.keys), (Value::Null, None));

        let p = PurgeRequest::read(&json!({"msg_ids": "all", "engine_ids": [1, "x", 2.0]}));
        assert!(p.msg_ids.is_all());
        assert_eq!(p.engine_ids, Some(vec![1]));
        assert_eq!(
            PurgeRequest::read(&json!({"engine_ids": {}})).engine_ids,
            None
        );
        assert_eq!(PurgeRequest::read(&json!(null)), PurgeRequest::default());
    }

    #[test]
    fn well_formed_contents_round_trip_with_unknown_fields() {
        let content = json!({"msg_ids": ["a"], "status_only": true, "x": {"y": 1}});
        assert_eq!(ResultRequest::read(&content).to_content(), content);
        let content = json!({"query": {"msg_id": {"$in": ["a"]}}, "keys": ["msg_id"]});
        assert_eq!(DbRequest::read(&content).to_content(), content);
        let content = json!({"restart": false, "z": 0});
        assert_eq!(ShutdownRequest::read(&content).to_content(), content);
    }
}
