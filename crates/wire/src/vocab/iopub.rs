//! Contents of the IOPub messages the hub copies into task records (docs/PROTOCOL.md
//! §6.6): `stream` (a task's stdout/stderr) and `execute_input` (the code run). The
//! other recorded types (`error`, `execute_result`, `display_data`) are kept whole, so
//! they need no fields read.
//!
//! Read leniently, as the hub always has: a field of the wrong JSON type reads as absent
//! and content that is not an object as empty. Unknown fields are kept in `extra`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::requests::present;
use super::{lenient_string, read_object};

/// `stream`: `text` written to the stream `name` (`stdout` or `stderr`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamContent {
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `execute_input`: the `code` an engine is running, kept as sent (`null` included; the
/// task record stores whatever came).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteInputContent {
    #[serde(default, deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

macro_rules! content_io {
    ($($t:ty),*) => {$(
        impl $t {
            /// Reads a content frame; content that is not a JSON object reads as empty.
            pub fn read(content: &Value) -> Self {
                read_object(content)
            }

            /// The content frame to send.
            pub fn to_content(&self) -> Value {
                serde_json::to_value(self).expect("iopub content serializes")
            }
        }
    )*};
}

content_io!(StreamContent, ExecuteInputContent);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_reads_name_and_text_leniently() {
        let sent = json!({"name": "stdout", "text": "hi\n", "x": 1});
        let stream = StreamContent::read(&sent);
        assert_eq!(stream.name.as_deref(), Some("stdout"));
        assert_eq!(stream.text.as_deref(), Some("hi\n"));
        assert_eq!(stream.to_content(), sent);
        let odd = StreamContent::read(&json!({"name": ["stdout"], "text": 5}));
        assert_eq!((odd.name, odd.text), (None, None));
        assert_eq!(
            StreamContent::read(&json!(["stdout", "hi"])),
            StreamContent::default()
        );
    }

    #[test]
    fn execute_input_keeps_code_as_sent() {
        let read = |v: Value| ExecuteInputContent::read(&v).code;
        assert_eq!(read(json!({"code": "x=1"})), Some(json!("x=1")));
        assert_eq!(read(json!({"code": null})), Some(Value::Null));
        assert_eq!(read(json!({"code": [1]})), Some(json!([1])));
        assert_eq!(read(json!({"execution_count": 1})), None);
        assert_eq!(read(json!("x=1")), None);
        let sent = json!({"code": "x", "execution_count": 2});
        assert_eq!(ExecuteInputContent::read(&sent).to_content(), sent);
    }
}
