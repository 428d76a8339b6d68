//! The protocol's shared words: which reply answers a request, the error content every
//! component writes when it answers a request with a failure, typed contents of the
//! requests handlers read (here and in `requests`), one [`Content`] enum over them by
//! message type (`content`), and the metadata of a load-balanced task (`task_metadata`);
//! the replies, IOPub contents and metadata the controller, engine and client read
//! (`registration_reply`, `iopub`, `client_side`, `broadcast`, `echo`), and a lenient
//! view of headers kept as JSON (`header_fields`).
//!
//! Controller, engine and client each used to spell these themselves; one copy here keeps
//! the three byte-for-byte alike and in ipyparallel's shape (docs/PROTOCOL.md §6.3).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

mod broadcast;
mod client_side;
mod content;
mod echo;
mod header_fields;
mod iopub;
mod registration_reply;
mod requests;
mod task_metadata;

pub use broadcast::{BroadcastMetadata, BroadcastTarget};
pub use client_side::{
    ConnectionReply, DataMessageContent, EngineNotification, ReplyOutcome, SenderMetadata,
    StatusContent,
};
pub use content::Content;
pub use echo::EchoedMetadata;
pub use header_fields::HeaderFields;
pub use iopub::{ExecuteInputContent, StreamContent};
pub use registration_reply::RegistrationReply;
pub use requests::{
    AbortRequest, DbRequest, EmptyRequest, IdList, LoadRequest, PurgeRequest, QueueRequest,
    ResubmitRequest, ResultRequest, ShutdownRequest,
};
pub use task_metadata::{DependencySpec, InvalidDependency, ReplyMetadata, TaskMetadata};

/// The reply type answering `request_type`: `foo_request` → `foo_reply`, and anything else
/// `x` → `x_reply`, so an unknown request still gets a reply its sender can match.
pub fn reply_type(request_type: &str) -> String {
    let stem = request_type
        .strip_suffix("_request")
        .unwrap_or(request_type);
    format!("{stem}_reply")
}

/// Error reply content in the shape of ipyparallel's `wrap_exception`:
/// `status: "error"`, `ename`, `evalue`, `traceback` and `engine_info`.
///
/// Built with [`ErrorContent::new`], refined with [`engine_info`](Self::engine_info) and
/// [`traceback`](Self::traceback), turned into content with [`into_value`](Self::into_value).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorContent {
    status: &'static str,
    ename: String,
    evalue: String,
    traceback: Vec<String>,
    engine_info: Value,
}

impl ErrorContent {
    /// An error with no traceback and empty `engine_info`, as the controller raises them.
    pub fn new(ename: &str, evalue: &str) -> Self {
        ErrorContent {
            status: "error",
            ename: ename.to_string(),
            evalue: evalue.to_string(),
            traceback: Vec::new(),
            engine_info: json!({}),
        }
    }

    /// Who raised it: stock engines write `{engine_uuid, engine_id, method}`.
    pub fn engine_info(mut self, engine_info: Value) -> Self {
        self.engine_info = engine_info;
        self
    }

    /// The formatted traceback lines shown to the user.
    pub fn traceback(mut self, lines: Vec<String>) -> Self {
        self.traceback = lines;
        self
    }

    /// The content as a JSON object, ready to be a message's content frame.
    pub fn into_value(self) -> Value {
        serde_json::to_value(self).expect("error content serializes")
    }
}

/// Shorthand for [`ErrorContent::new`]`(ename, evalue).into_value()`.
pub fn error_content(ename: &str, evalue: &str) -> Value {
    ErrorContent::new(ename, evalue).into_value()
}

/// `registration_request` content: an engine asks the hub for an id.
///
/// Read leniently, as the hub always has: a `uuid` that is not a string counts as missing,
/// an `id` that is not a non-negative integer counts as not requested. Fields we do not
/// know are kept in `extra`, so the content round-trips untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `unregistration_request` content: an engine leaving, by its integer id.
/// Read leniently like [`RegistrationRequest`]; unknown fields kept in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnregistrationRequest {
    #[serde(default, deserialize_with = "lenient_u64")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RegistrationRequest {
    /// Reads a content frame; content that is not a JSON object reads as empty.
    pub fn read(content: &Value) -> Self {
        read_object(content)
    }

    /// The content frame to send.
    pub fn to_content(&self) -> Value {
        serde_json::to_value(self).expect("registration content serializes")
    }
}

impl UnregistrationRequest {
    /// Reads a content frame; content that is not a JSON object reads as empty.
    pub fn read(content: &Value) -> Self {
        read_object(content)
    }

    /// The content frame to send.
    pub fn to_content(&self) -> Value {
        serde_json::to_value(self).expect("unregistration content serializes")
    }
}

/// Every field of these structs is lenient, so only a non-object can fail: it reads as empty.
fn read_object<T: for<'de> Deserialize<'de> + Default>(content: &Value) -> T {
    if content.is_object() {
        T::deserialize(content).unwrap_or_default()
    } else {
        T::default()
    }
}

/// A string, or `None` for any other JSON value (for `#[serde(deserialize_with)]` in the
/// lenient views here and in the controller's record views).
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

/// A bool, or `false` for any other JSON value.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(d)?.as_bool().unwrap_or(false))
}

/// A non-negative integer, or `None` for any other JSON value.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(d)?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_type_maps_requests_and_suffixes_anything_else() {
        assert_eq!(reply_type("apply_request"), "apply_reply");
        assert_eq!(reply_type("queue_request"), "queue_reply");
        assert_eq!(reply_type("weird"), "weird_reply");
        assert_eq!(reply_type(""), "_reply");
        // Only the suffix is replaced, never an inner "_request".
        assert_eq!(reply_type("x_request_request"), "x_request_reply");
    }

    #[test]
    fn error_content_has_wrap_exception_fields_and_defaults() {
        let content = error_content("KeyError", "'No such msg'");
        assert_eq!(
            content,
            json!({
                "status": "error",
                "ename": "KeyError",
                "evalue": "'No such msg'",
                "traceback": [],
                "engine_info": {},
            })
        );
    }

    #[test]
    fn error_content_carries_engine_info_and_traceback() {
        let content = ErrorContent::new("TypeError", "bad")
            .engine_info(json!({"method": "abort_request"}))
            .traceback(vec!["TypeError: bad".into()])
            .into_value();
        assert_eq!(content["engine_info"], json!({"method": "abort_request"}));
        assert_eq!(content["traceback"], json!(["TypeError: bad"]));
        assert_eq!(content["status"], "error");
    }

    #[test]
    fn registration_reads_leniently_and_keeps_unknown_fields() {
        let req = RegistrationRequest::read(&json!({"uuid": "u-1", "id": 3, "x": [1]}));
        assert_eq!(req.uuid.as_deref(), Some("u-1"));
        assert_eq!(req.id, Some(3));
        assert_eq!(req.to_content(), json!({"uuid": "u-1", "id": 3, "x": [1]}));

        let odd = RegistrationRequest::read(&json!({"uuid": 5, "id": -1}));
        assert_eq!((odd.uuid, odd.id), (None, None));
        assert_eq!(
            RegistrationRequest::read(&json!([1, 2])),
            RegistrationRequest::default()
        );
        assert_eq!(RegistrationRequest::read(&json!({"id": 2.5})).id, None);
    }

    #[test]
    fn unregistration_reads_leniently() {
        assert_eq!(UnregistrationRequest::read(&json!({"id": 7})).id, Some(7));
        assert_eq!(UnregistrationRequest::read(&json!({"id": "7"})).id, None);
        assert_eq!(UnregistrationRequest::read(&json!(null)).id, None);
        let req = UnregistrationRequest {
            id: Some(4),
            ..Default::default()
        };
        assert_eq!(req.to_content(), json!({"id": 4}));
    }
}
