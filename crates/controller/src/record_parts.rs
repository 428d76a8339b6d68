//! The frames of a relayed message as the task records keep them: JSON parts as they came
//! ([`RawJson`]) and buffers as shared bytes ([`Bytes`]), never parsed into `Value` maps
//! or copied on the hub's hot path.
//!
//! Every message the relays forward is copied to the hub, which must keep up with them
//! (W9: building a `Value` of each part cost ~100 k instructions a message, most of the
//! controller's). So each part is read once with a small view ([`view`]) that pulls out
//! only the fields the hub needs (msg_id, dates, engine...) while checking it is valid
//! JSON; the whole part becomes a `Value` only when a client asks for the record.

use bytes::Bytes;
use corral_wire::vocab::lenient_string;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One JSON part kept as sent, known to be valid UTF-8 JSON.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawJson(Bytes);

impl RawJson {
    /// The JSON text of `value` (for records the hub builds itself).
    pub(crate) fn of(value: &Value) -> RawJson {
        RawJson(Bytes::from(value.to_string()))
    }

    /// The part as a `Value` (on a client's query, not on the hot path).
    pub(crate) fn value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// The JSON text, to splice into a larger document without parsing it.
    pub(crate) fn text(&self) -> &str {
        // Checked in `view`; a failure here would be a bug, and `null` keeps documents valid.
        std::str::from_utf8(&self.0).unwrap_or("null")
    }
}

/// Reads `part` through the view `T` and keeps it: `None` when it is not valid UTF-8 JSON.
/// A part that is not a JSON object (or whose object `T` cannot read, e.g. a duplicate
/// key) reads as `T::default()`, as the hub's lenient readers always have.
pub(crate) fn view<T: DeserializeOwned + Default>(part: Bytes) -> Option<(RawJson, T)> {
    std::str::from_utf8(&part).ok()?;
    let is_object = part.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fields = match is_object.then(|| serde_json::from_slice::<T>(&part)) {
        Some(Ok(fields)) => fields,
        _ => {
            serde_json::from_slice::<IgnoredAny>(&part).ok()?;
            T::default()
        }
    };
    Some((RawJson(part), fields))
}

/// A field of any JSON type, `null` included; absent is `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The string items of a list field (not a list: none).
fn string_items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|k| match k {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

/// What records read of a header (or a parent header: its `msg_id`): the wire's lenient
/// header view (`date` kept as sent).
pub(crate) use corral_wire::vocab::HeaderFields as HeaderView;

/// What records read of a message's metadata: the request's `label`, the reply's
/// `started` and `engine` (as sent), and the engine naming itself (a string).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct MetadataView {
    #[serde(default, deserialize_with = "present")]
    pub label: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub started: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub engine: Option<Value>,
}

impl MetadataView {
    /// `engine` when it is a string.
    pub(crate) fn engine_str(&self) -> Option<&str> {
        self.engine.as_ref().and_then(Value::as_str)
    }
}

/// What records read of IOPub content: `stream`'s `name` and `text`, `execute_input`'s
/// `code`, `data_message`'s `keys` and `corral_preview`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IopubContentView {
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub text: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub code: Option<Value>,
    #[serde(default, deserialize_with = "string_items")]
    pub keys: Vec<String>,
    #[serde(default, deserialize_with = "present")]
    pub corral_preview: Option<Value>,
}

/// A relayed message copy as records keep it: `[header, parent, metadata, content,
/// buffers..]`, each JSON part validated and read through its view.
pub(crate) struct Parts<C> {
    pub header: (RawJson, HeaderView),
    pub parent: (RawJson, HeaderView),
    pub metadata: (RawJson, MetadataView),
    pub content: (RawJson, C),
    pub buffers: Vec<Bytes>,
}

/// Reads a copy whose content view depends on the header's `msg_type` (`content_view`
/// says whether to read the content for it). `None`, logged, when it is too short or a
/// JSON part is invalid.
pub(crate) fn read_parts<C: DeserializeOwned + Default>(
    parts: Vec<Bytes>,
    what: &str,
) -> Option<Parts<C>> {
    if parts.len() < 4 {
        tracing::warn!(what, frames = parts.len(), "record copy too short; dropped");
        return None;
    }
    let mut parts = parts.into_iter();
    let mut next = || parts.next().unwrap_or_default();
    let read = (|| {
        Some((
            view::<HeaderView>(next())?,
            view::<HeaderView>(next())?,
            view::<MetadataView>(next())?,
            view::<C>(next())?,
        ))
    })();
    let Some((header, parent, metadata, content)) = read else {
        tracing::warn!(what, "record copy with invalid JSON; dropped");
        return None;
    };
    Some(Parts {
        header,
        parent,
        metadata,
        content,
        buffers: parts.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn views_read_only_their_fields_leniently_and_keep_the_part_whole() {
        let text = r#"{"msg_id": "m", "msg_type": 5, "date": null, "x": {"deep": [1, 2]}}"#;
        let (raw, h) = view::<HeaderView>(b(text)).unwrap();
        assert_eq!(h.msg_id.as_deref(), Some("m"));
        assert_eq!(h.msg_type, None, "a number is not a msg_type");
        assert_eq!(h.date, Some(Value::Null), "present, as sent");
        assert_eq!(raw.text(), text);
        assert_eq!(raw.value()["x"]["deep"], json!([1, 2]));

        // Not an object: valid JSON reads as empty; invalid JSON or UTF-8 is refused.
        let (raw, h) = view::<HeaderView>(b(r#" ["m"] "#)).unwrap();
        assert!(h.msg_id.is_none());
        assert_eq!(raw.value(), json!(["m"]));
        assert!(view::<HeaderView>(b("{")).is_none());
        assert!(view::<IgnoredAny>(b(r#"{"a": 1} x"#)).is_none());
        assert!(view::<IgnoredAny>(Bytes::from_static(b"\"\xff\"")).is_none());
        // A duplicate key the view cannot read: still valid JSON, read as empty.
        let (_, h) = view::<HeaderView>(b(r#"{"msg_id": "a", "msg_id": "b"}"#)).unwrap();
        assert!(h.msg_id.is_none());

        let (_, c) =
            view::<IopubContentView>(b(r#"{"keys": ["a", 1, "b"], "corral_preview": {}}"#))
                .unwrap();
        assert_eq!(c.keys, vec!["a", "b"]);
        assert_eq!(c.corral_preview, Some(json!({})));
        assert_eq!(RawJson::of(&json!({"a": [1]})).value(), json!({"a": [1]}));
    }

    #[test]
    fn a_copy_needs_four_valid_json_parts() {
        let ok = vec![b("{}"), b("{}"), b("{}"), b("{}"), b("buf")];
        let p = read_parts::<IgnoredAny>(ok, "test").unwrap();
        assert_eq!(p.buffers, vec![b("buf")]);
        assert!(read_parts::<IgnoredAny>(vec![b("{}"); 3], "test").is_none());
        assert!(read_parts::<IgnoredAny>(vec![b("{}"), b("{"), b("{}"), b("{}")], "t").is_none());
    }
}
