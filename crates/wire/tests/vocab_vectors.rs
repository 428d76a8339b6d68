//! The shared vocabulary (`reply_type`, `ErrorContent`) checked against stock ipyparallel
//! 9.2 traffic captured in `tests/vectors/`.

use corral_wire::{reply_type, ErrorContent, RegistrationRequest, UnregistrationRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The decoded part of every captured Jupyter-shaped record.
fn decoded_records() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            if let Some(decoded) = record.get_mut("decoded") {
                out.push(decoded.take());
            }
        }
    }
    assert!(out.len() > 500, "vectors missing in {}", dir.display());
    out
}

fn keys(content: &Value) -> BTreeSet<String> {
    content.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn reply_type_names_every_captured_reply_after_its_request() {
    let mut checked = 0;
    for d in decoded_records() {
        let parent = d["parent_header"]["msg_type"].as_str().unwrap_or("");
        let msg_type = d["header"]["msg_type"].as_str().unwrap();
        if parent.ends_with("_request") && msg_type.ends_with("_reply") {
            assert_eq!(reply_type(parent), msg_type);
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} replies checked");
}

#[test]
fn error_content_rebuilds_stock_error_replies_exactly() {
    let mut checked = 0;
    for d in decoded_records() {
        let content = &d["content"];
        if content["status"] != "error" {
            continue;
        }
        let traceback = content["traceback"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_string())
            .collect();
        let ours = ErrorContent::new(
            content["ename"].as_str().unwrap(),
            content["evalue"].as_str().unwrap(),
        )
        .engine_info(content["engine_info"].clone())
        .traceback(traceback)
        .into_value();
        let msg_type = d["header"]["msg_type"].as_str().unwrap();
        if msg_type == "apply_reply" {
            // wrap_exception's content is exactly these five keys.
            assert_eq!(&ours, content, "{msg_type}");
        } else {
            // execute_reply adds execution_count, user_expressions, payload on top.
            assert!(keys(&ours).is_subset(&keys(content)), "{msg_type}");
            for (k, v) in ours.as_object().unwrap() {
                assert_eq!(&content[k], v, "{msg_type}.{k}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} error replies checked");
}

#[test]
fn captured_registration_contents_read_and_round_trip_untouched() {
    let mut checked = 0;
    for d in decoded_records() {
        let content = &d["content"];
        match d["header"]["msg_type"].as_str().unwrap() {
            "registration_request" => {
                let req = RegistrationRequest::read(content);
                assert!(req.uuid.is_some(), "{content}");
                assert_eq!(&req.to_content(), content);
            }
            "unregistration_request" => {
                let req = UnregistrationRequest::read(content);
                assert!(req.id.is_some(), "{content}");
                assert_eq!(&req.to_content(), content);
            }
            _ => continue,
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} registration messages checked");
}
