//! The hub's database queries, beside the records they read ([`crate::records`]):
//! `purge_request`, `result_request`, `db_request` and `resubmit_request`, as
//! ipyparallel's hub answers them. Plain functions over the records and queue accounting;
//! the hub turns their results into replies.

use corral_wire::{
    DbRequest, Header, Message, PurgeRequest, ResubmitRequest, ResultRequest, Session,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashSet};
use tracing::warn;

use crate::published::EngineFacts;
use crate::queues::Queues;
use crate::records::{project, Records};
use corral_wire::error_content;

/// ipyparallel's `purge_results`: forgets the records of finished requests. `msg_ids` is
/// `"all"` (every completed record) or a list of strings (other items are skipped), where
/// a pending or unknown id is an error; `engines` (the uuids of the request's
/// `engine_ids`) forgets what those engines completed, and their `completed` lists too.
pub(crate) fn purge(
    records: &mut Records,
    queues: &mut Queues,
    engines: &[String],
    request: &PurgeRequest,
) -> Value {
    let mut drop: HashSet<String> = HashSet::new();
    if request.msg_ids.is_all() {
        // ipyparallel: `drop_matching_records({"completed": {"$ne": None}})`.
        let done = records.find(&json!({"completed": {"$ne": null}}));
        drop.extend(
            done.unwrap_or_default()
                .iter()
                .map(|r| r.msg_id().to_string()),
        );
    } else if request.msg_ids.raw().is_array() {
        let pending = queues.pending_ids();
        for id in request.msg_ids.strings() {
            if pending.contains(id) {
                return error_content("IndexError", &format!("msg pending: {id:?}"));
            }
            if !records.contains(id) {
                return error_content("KeyError", &format!("No such msg: {id:?}"));
            }
            drop.insert(id.to_string());
        }
    }
    for uuid in engines {
        drop.extend(queues.drain_completed(uuid));
        let query = json!({"engine_uuid": uuid, "completed": {"$ne": null}});
        let done = records.find(&query).unwrap_or_default();
        drop.extend(done.iter().map(|r| r.msg_id().to_string()));
    }
    for m in &drop {
        records.remove(m);
    }
    json!({"status": "ok"})
}

/// ipyparallel's `get_results`: pending/completed status of each msg_id (sorted,
/// deduplicated) and, unless `status_only`, the completed records and their result
/// buffers in msg_id order. An unknown msg_id is a `KeyError`.
pub(crate) fn results(
    records: &Records,
    pending_ids: &HashSet<&str>,
    request: &ResultRequest,
) -> (Value, Vec<Vec<u8>>) {
    let ids: BTreeSet<&str> = request.msg_ids.strings().collect();
    let status_only = request.status_only;
    let (mut pending, mut completed) = (Vec::new(), Vec::new());
    let mut out = Map::new();
    let mut buffers = Vec::new();
    for id in ids {
        match records.get(id) {
            Some(rec) if rec.is_completed() => {
                completed.push(id);
                if !status_only {
                    out.insert(id.to_string(), rec.result_entry());
                    buffers.extend(rec.result_buffers.iter().flatten().map(|b| b.to_vec()));
                }
            }
            Some(_) => pending.push(id),
            None if pending_ids.contains(id) => pending.push(id),
            None => {
                return (
                    error_content("KeyError", &format!("'No such message: {id}'")),
                    Vec::new(),
                )
            }
        }
    }
    out.insert("status".into(), json!("ok"));
    out.insert("pending".into(), json!(pending));
    out.insert("completed".into(), json!(completed));
    (Value::Object(out), buffers)
}

/// ipyparallel's `db_query`: matching records reduced to `keys`; the request and
/// result buffers of each record follow in order when `keys` names them. A `data` key
/// (corral's, PROTOCOL.md §12.3) adds each record's published data, its frames after all
/// the others, counted in `data_buffer_lens`.
pub(crate) fn db_query(
    records: &Records,
    request: &DbRequest,
    facts: &dyn Fn(&str) -> EngineFacts,
) -> (Value, Vec<Vec<u8>>) {
    let keys = &request.keys;
    let found = match records.find(&request.query) {
        Ok(found) => found,
        Err(e) => {
            warn!(error = e, "db_request failed");
            return (error_content("ValueError", &e), Vec::new());
        }
    };
    let mut buffer_lens: Option<Vec<usize>> = None;
    let mut result_buffer_lens: Option<Vec<usize>> = None;
    let mut data_buffer_lens: Option<Vec<usize>> = None;
    let mut data_frames = Vec::new();
    if let Some(keys) = keys {
        if keys.iter().any(|k| k == "data") {
            data_buffer_lens = Some(Vec::new());
        }
        if keys.iter().any(|k| k == "buffers") {
            buffer_lens = Some(Vec::new());
        }
        if keys.iter().any(|k| k == "result_buffers") {
            result_buffer_lens = Some(Vec::new());
        }
    }
    let mut out = Vec::new();
    let mut buffers = Vec::new();
    for rec in found {
        let (mut value, b, rb) = project(rec, keys.as_deref().filter(|k| !k.is_empty()));
        if let Some(obj) = value.as_object_mut() {
            obj.remove("buffers");
            obj.remove("result_buffers");
            if let Some(lens) = &mut data_buffer_lens {
                let (entries, frames) = rec.published.entries(false, true, facts);
                lens.push(frames.len());
                data_frames.extend(frames);
                obj.insert("data".into(), entries);
            }
        }
        out.push(value);
        if let Some(lens) = &mut buffer_lens {
            let b = b.unwrap_or_default();
            lens.push(b.len());
            buffers.extend(b.iter().map(|b| b.to_vec()));
        }
        if let Some(lens) = &mut result_buffer_lens {
            let rb = rb.unwrap_or_default();
            lens.push(rb.len());
            buffers.extend(rb.iter().map(|b| b.to_vec()));
        }
    }
    let mut content = json!({
        "status": "ok",
        "records": out,
        "buffer_lens": buffer_lens,
        "result_buffer_lens": result_buffer_lens,
    });
    if let Some(lens) = data_buffer_lens {
        content["data_buffer_lens"] = json!(lens);
        buffers.extend(data_frames);
    }
    (content, buffers)
}

/// corral's `data_request` (PROTOCOL.md §12.2): the published data each msg_id's record
/// keeps, per engine, with the earlier updates when `history` is true, without frames when
/// `buffers` is false. An unknown msg_id
/// is a `KeyError`, as in `result_request`.
pub(crate) fn data(
    records: &Records,
    content: &Value,
    facts: &dyn Fn(&str) -> EngineFacts,
) -> (Value, Vec<Vec<u8>>) {
    let Some(ids) = content.get("msg_ids").and_then(Value::as_array) else {
        return (
            error_content("TypeError", "data_request needs msg_ids, a list of str"),
            Vec::new(),
        );
    };
    let history = content
        .get("history")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let with_frames = content
        .get("buffers")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut tasks = Map::new();
    let mut buffers = Vec::new();
    for id in ids {
        let Some(id) = id.as_str() else {
            let evalue = format!("msg_ids must be str, not {id}");
            return (error_content("TypeError", &evalue), Vec::new());
        };
        let Some(rec) = records.get(id) else {
            let evalue = format!("'No such message: {id}'");
            return (error_content("KeyError", &evalue), Vec::new());
        };
        let (entries, frames) = rec.published.entries(history, with_frames, facts);
        tasks.insert(id.to_string(), entries);
        buffers.extend(frames);
    }
    (json!({"status": "ok", "tasks": tasks}), buffers)
}

/// ipyparallel's `resubmit_task`: each request is built again for the task scheduler
/// with a fresh msg_id and date (same content and buffers), signed by the hub; the
/// returned messages are what to send.
pub(crate) fn resubmit(
    records: &mut Records,
    session: &Session,
    request: &ResubmitRequest,
) -> (Value, Vec<Message>) {
    let ids: Vec<&str> = request.msg_ids.strings().collect();
    let missing: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| records.get(id).is_none_or(|r| !r.get("header").is_object()))
        .collect();
    if !missing.is_empty() {
        let evalue = format!("'No such msg(s): {missing:?}'");
        return (error_content("KeyError", &evalue), Vec::new());
    }
    let mut resubmitted = Map::new();
    let mut out = Vec::new();
    for id in ids {
        let Some(rec) = records.get(id) else {
            continue;
        };
        let mut header = rec.get("header").into_owned();
        let msg_type = header["msg_type"]
            .as_str()
            .unwrap_or("apply_request")
            .to_string();
        let mut msg = session.msg(&msg_type, rec.get("content").into_owned());
        let new_id = msg.header.msg_id.clone();
        header["msg_id"] = json!(new_id);
        header["date"] = json!(msg.header.date);
        let Ok(h) = serde_json::from_value::<Header>(header.clone()) else {
            warn!(msg_id = id, "stored header does not parse; not resubmitted");
            continue;
        };
        msg.header = h;
        msg.buffers = rec.buffers.iter().map(|b| b.to_vec()).collect();
        let (metadata, content, buffers) = (
            msg.metadata.clone(),
            msg.content.clone(),
            msg.buffers.clone(),
        );
        records.add_request(header, metadata, content, buffers, "task", None);
        records.set_resubmitted(id, &new_id);
        resubmitted.insert(id.to_string(), json!(new_id));
        out.push(msg);
    }
    (json!({"status": "ok", "resubmitted": resubmitted}), out)
}
