//! The typed readers that replaced hand parsers in the controller and the engine read any
//! JSON exactly as those parsers did. Each `hand_*` function below is the replaced code,
//! kept here as the reference; generated metadata and contents, biased towards the field
//! names read and towards the shapes that matter (`[[uuid, id]]` targets), must give the
//! same result through both.

use corral_wire::{
    BroadcastMetadata, ConnectionReply, DataMessageContent, EchoedMetadata, EngineNotification,
    ExecuteInputContent, HeaderFields, RegistrationReply, ReplyMetadata, ReplyOutcome,
    SenderMetadata, StatusContent, StreamContent,
};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Field names the replaced parsers read, plus one nobody reads.
const FIELDS: [&str; 26] = [
    "is_coalescing",
    "targets",
    "original_msg_id",
    "is_broadcast",
    "label",
    "started",
    "engine",
    "status",
    "id",
    "hb_period",
    "ename",
    "evalue",
    "name",
    "text",
    "code",
    "engines",
    "uuid",
    "execution_state",
    "keys",
    "msg_id",
    "msg_type",
    "session",
    "date",
    "username",
    "version",
    "other",
];

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "ok",
            "error",
            "aborted",
            "EngineError",
            "stdout",
            "stderr",
            "idle",
            "e1",
            "",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            // `[uuid, id, ..]`, the target shape, and near misses.
            (
                inner.clone(),
                inner.clone(),
                prop::option::of(inner.clone())
            )
                .prop_map(|(a, b, c)| Value::from(
                    std::iter::once(a).chain([b]).chain(c).collect::<Vec<_>>()
                )),
            prop::collection::vec(
                (
                    prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
                    inner.clone()
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            // An engine map: `{"<id>": uuid}`, with keys that are not quite integers.
            prop::collection::vec(
                (
                    prop::sample::select(vec!["0", "1", "+2", "-3", "x", "07", " 1"]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

/// An object over [`FIELDS`] (mostly) or any value.
fn any_frame() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::vec(
            (prop::sample::select(FIELDS.to_vec()).prop_map(String::from), any_json()),
            0..8
        )
        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => any_json(),
    ]
}

/// The broadcast scheduler's reading of a request's metadata.
fn hand_broadcast(md: &Value) -> (bool, Vec<(String, u64)>, Option<String>) {
    let coalescing = md.get("is_coalescing").and_then(Value::as_bool) == Some(true);
    let targets: Vec<(String, u64)> = md
        .get("targets")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| Some((t.get(0)?.as_str()?.to_string(), t.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let original = md
        .get("original_msg_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    (coalescing, targets, original)
}

/// The engine's reading of `registration_reply`: refusal text, or id and period.
fn hand_registration(content: &Value) -> Result<(Option<u64>, u64), String> {
    if content.get("status").and_then(Value::as_str) != Some("ok") {
        let text = |k: &str| {
            content
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(format!("{}: {}", text("ename"), text("evalue")));
    }
    let id = content.get("id").and_then(Value::as_u64);
    let hb = content
        .get("hb_period")
        .and_then(Value::as_u64)
        .unwrap_or(3000);
    Ok((id, hb))
}

/// The engine's reply metadata built from a request's.
fn hand_reply_metadata(request_md: &Value, uuid: &str, status: &str, started: &str) -> Value {
    let get = |k: &str, d: Value| request_md.get(k).cloned().unwrap_or(d);
    json!({
        "started": started,
        "dependencies_met": true,
        "engine": uuid,
        "is_broadcast": get("is_broadcast", json!(false)),
        "is_coalescing": get("is_coalescing", json!(false)),
        "original_msg_id": get("original_msg_id", json!("")),
        "label": get("label", Value::Null),
        "status": status,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn broadcast_metadata_reads_as_the_scheduler_did(md in any_frame()) {
        let typed = BroadcastMetadata::read(&md);
        let targets = typed.targets.into_iter().map(|t| (t.uuid, t.id)).collect();
        prop_assert_eq!((typed.is_coalescing, targets, typed.original_msg_id), hand_broadcast(&md));
    }

    #[test]
    fn registration_reply_reads_as_the_engine_did(content in any_frame()) {
        let reply = RegistrationReply::read(&content);
        let typed = if reply.is_ok() {
            Ok((reply.id, reply.hb_period.unwrap_or(3000)))
        } else {
            Err(format!(
                "{}: {}",
                reply.ename.unwrap_or_default(),
                reply.evalue.unwrap_or_default()
            ))
        };
        prop_assert_eq!(typed, hand_registration(&content));
    }

    #[test]
    fn echoed_metadata_builds_the_reply_metadata_the_engine_did(md in any_frame()) {
        prop_assert_eq!(
            EchoedMetadata::read(&md).reply_metadata("u", "ok", "t"),
            hand_reply_metadata(&md, "u", "ok", "t")
        );
    }

    #[test]
    fn record_fields_read_as_the_hub_did(md in any_frame(), content in any_frame()) {
        let reply = ReplyMetadata::read(&md);
        prop_assert_eq!(reply.started, md.get("started").cloned());
        prop_assert_eq!(reply.engine, md.get("engine").cloned());
        prop_assert_eq!(EchoedMetadata::read(&md).label, md.get("label").cloned());
        let stream = StreamContent::read(&content);
        prop_assert_eq!(
            stream.name.unwrap_or_default(),
            content.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_default()
        );
        prop_assert_eq!(stream.text.as_deref(), content.get("text").and_then(Value::as_str));
        prop_assert_eq!(
            ExecuteInputContent::read(&content).code.unwrap_or_default(),
            content.get("code").cloned().unwrap_or_default()
        );
    }

    #[test]
    fn header_fields_read_as_the_hub_and_client_did(header in any_frame()) {
        let str_of = |k: &str| header.get(k).and_then(Value::as_str).map(str::to_string);
        let h = HeaderFields::read(&header);
        prop_assert_eq!(h.msg_id, str_of("msg_id"));
        prop_assert_eq!(h.msg_type.unwrap_or_default(), str_of("msg_type").unwrap_or_default());
        prop_assert_eq!(h.session, str_of("session"));
        prop_assert_eq!(h.username, str_of("username"));
        prop_assert_eq!(h.version, str_of("version"));
        prop_assert_eq!(h.date, header.get("date").cloned());
    }

    #[test]
    fn client_fields_read_as_the_client_did(md in any_frame(), content in any_frame()) {
        let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        // connect.rs: `engines_of` and the connection status.
        let hand_engines: BTreeMap<i64, String> = content
            .get("engines")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(id, uuid)| Some((id.parse().ok()?, uuid.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let connection = ConnectionReply::read(&content);
        prop_assert_eq!(connection.engines(), hand_engines);
        prop_assert_eq!(
            connection.status(),
            content.get("status").and_then(Value::as_str).unwrap_or("")
        );
        // store.rs: replies, IOPub and notifications.
        prop_assert_eq!(SenderMetadata::read(&md).engine, str_of(&md, "engine"));
        let outcome = ReplyOutcome::read(&content);
        prop_assert_eq!(outcome.status, str_of(&content, "status"));
        prop_assert_eq!(outcome.ename, str_of(&content, "ename"));
        prop_assert_eq!(
            StatusContent::read(&content).execution_state,
            str_of(&content, "execution_state")
        );
        let stream = StreamContent::read(&content);
        prop_assert_eq!(stream.name, str_of(&content, "name"));
        prop_assert_eq!(
            stream.text.unwrap_or_default(),
            str_of(&content, "text").unwrap_or_default()
        );
        let hand_keys: Vec<String> = content
            .get("keys")
            .and_then(Value::as_array)
            .map(|ks| ks.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        prop_assert_eq!(DataMessageContent::read(&content).keys, hand_keys);
        let note = EngineNotification::read(&content);
        prop_assert_eq!(note.id, content.get("id").and_then(Value::as_i64));
        prop_assert_eq!(note.uuid, str_of(&content, "uuid"));
    }
}
