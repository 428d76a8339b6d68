//! The shared vocabulary (`reply_type`, `ErrorContent`) checked against stock ipyparallel
//! 9.2 traffic captured in `tests/vectors/`.

use corral_wire::{
    reply_type, AbortRequest, BroadcastMetadata, Content, DbRequest, ErrorContent, PurgeRequest,
    QueueRequest, RegistrationRequest, ResubmitRequest, ResultRequest, ShutdownRequest,
    TaskMetadata, UnregistrationRequest,
};
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

#[test]
fn captured_request_contents_read_as_sent_and_round_trip_untouched() {
    let mut seen = BTreeSet::new();
    for d in decoded_records() {
        let content = &d["content"];
        let msg_type = d["header"]["msg_type"].as_str().unwrap();
        let round_trip = match msg_type {
            "abort_request" => {
                let req = AbortRequest::read(content);
                assert_eq!(req.msg_ids.raw(), &content["msg_ids"]);
                assert!(req.msg_ids.kernel_ids().is_some(), "{content}");
                req.to_content()
            }
            "shutdown_request" => ShutdownRequest::read(content).to_content(),
            "queue_request" => {
                let req = QueueRequest::read(content);
                assert_eq!(req.verbose, content["verbose"] == true);
                req.to_content()
            }
            "result_request" => {
                let req = ResultRequest::read(content);
                let ids: Vec<&str> = req.msg_ids.strings().collect();
                assert_eq!(ids.len(), content["msg_ids"].as_array().unwrap().len());
                req.to_content()
            }
            "db_request" => {
                let req = DbRequest::read(content);
                assert!(req.query.is_object() && req.keys.is_some(), "{content}");
                req.to_content()
            }
            "resubmit_request" => ResubmitRequest::read(content).to_content(),
            "purge_request" => PurgeRequest::read(content).to_content(),
            _ => continue,
        };
        assert_eq!(&round_trip, content, "{msg_type}");
        seen.insert(msg_type.to_string());
    }
    assert_eq!(seen.len(), 7, "request types seen: {seen:?}");
}

#[test]
fn captured_task_metadata_reads_every_field_as_sent() {
    let (mut checked, mut with_after, mut with_follow, mut with_targets) = (0, 0, 0, 0);
    for d in decoded_records() {
        let md = &d["metadata"];
        if d["header"]["msg_type"] != "apply_request" || md.get("retries").is_none() {
            continue;
        }
        let task = TaskMetadata::read(md).unwrap();
        assert!(task.ignored.is_empty(), "{md}");
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(task.after.ids, strings(&md["after"]));
        assert_eq!(task.follow.ids, strings(&md["follow"]));
        assert_eq!(task.targets, strings(&md["targets"]));
        assert_eq!(u64::from(task.retries), md["retries"].as_u64().unwrap());
        let timeout = md["timeout"].as_f64().unwrap();
        assert_eq!(
            task.timeout.map(|t| t.as_secs_f64()),
            Some(timeout).filter(|t| *t > 0.0)
        );
        with_after += usize::from(!task.after.is_empty());
        with_follow += usize::from(!task.follow.is_empty());
        with_targets += usize::from(!task.targets.is_empty());
        checked += 1;
    }
    assert!(checked >= 20 && with_after > 0 && with_follow > 0 && with_targets > 0);
}

#[test]
fn captured_broadcast_metadata_reads_every_field_as_sent() {
    let (mut requests, mut copies, mut replies) = (0, 0, 0);
    for d in decoded_records() {
        let md = &d["metadata"];
        if md["is_broadcast"] != true {
            continue;
        }
        let read = BroadcastMetadata::read(md);
        assert_eq!(read.is_coalescing, md["is_coalescing"] == true, "{md}");
        assert_eq!(
            read.original_msg_id.as_deref(),
            md["original_msg_id"].as_str()
        );
        match md.get("targets").and_then(Value::as_array) {
            Some(targets) => {
                let sent: Vec<(&str, u64)> = targets
                    .iter()
                    .map(|t| (t[0].as_str().unwrap(), t[1].as_u64().unwrap()))
                    .collect();
                let ours: Vec<(&str, u64)> = read
                    .targets
                    .iter()
                    .map(|t| (t.uuid.as_str(), t.id))
                    .collect();
                assert_eq!(ours, sent);
                if read.original_msg_id.is_some() {
                    copies += 1;
                } else {
                    requests += 1;
                }
            }
            None => {
                assert!(read.targets.is_empty());
                replies += 1;
            }
        }
    }
    assert!(requests > 0 && copies > 0 && replies > 0);
}

#[test]
fn every_captured_content_reads_by_its_type_and_writes_back_unchanged() {
    let (mut typed, mut unknown) = (BTreeSet::new(), BTreeSet::new());
    for d in decoded_records() {
        let msg_type = d["header"]["msg_type"].as_str().unwrap();
        let content = Content::read(msg_type, &d["content"]);
        assert_eq!(content.message_type(), msg_type);
        assert_eq!(&content.to_content(), &d["content"], "{msg_type}");
        match content {
            Content::Unknown { .. } => unknown.insert(msg_type.to_string()),
            _ => typed.insert(msg_type.to_string()),
        };
    }
    let expected_typed: BTreeSet<String> = Content::KNOWN_TYPES
        .iter()
        .filter(|t| !matches!(**t, "load_request" | "kernel_info_request"))
        .map(|t| t.to_string())
        .collect();
    assert_eq!(typed, expected_typed, "captured types with a typed variant");
    assert!(unknown.contains("apply_request") && unknown.contains("data_message"));
}
