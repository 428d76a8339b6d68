//! Replies the controller writes itself: the reply type that answers a request and
//! ipyparallel's error content, shared by the hub, relays and schedulers.

use serde_json::{json, Value};

/// `foo_request` → `foo_reply`.
pub(crate) fn reply_type(request: &str) -> String {
    match request.strip_suffix("_request") {
        Some(base) => format!("{base}_reply"),
        None => format!("{request}_reply"),
    }
}

/// ipyparallel's error content (`wrap_exception`) for a failure the controller raises.
pub(crate) fn error_content(ename: &str, evalue: &str) -> Value {
    json!({
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": [],
        "engine_info": {},
    })
}
