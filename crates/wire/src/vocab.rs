//! The protocol's shared words: which reply answers a request, and the error content
//! every component writes when it answers a request with a failure.
//!
//! Controller, engine and client each used to spell these themselves; one copy here keeps
//! the three byte-for-byte alike and in ipyparallel's shape (docs/PROTOCOL.md §6.3).

use serde::Serialize;
use serde_json::{json, Value};

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
}
