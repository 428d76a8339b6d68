//! Generated messages of every shape through the engine's request path: intake
//! (signature, replay, decoding), the control answers and the reply metadata. Whatever
//! arrives becomes a request or a rejection, never a panic, and a request gets an answer.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use corral_wire::{encode_raw, Signer, WireError, DELIMITER};

use crate::control::{self, ControlAnswer};
use crate::request::{AbortState, Channel, Intake, Rejected, MAX_ABORTED_IDS};
use crate::runtime::reply_metadata;

const KEY: &[u8] = b"proptest-key";

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The message types an engine receives, and a few it does not know.
fn msg_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "apply_request", "execute_request", "abort_request", "clear_request",
            "shutdown_request", "kernel_info_request", "interrupt_request", "",
        ])
        .prop_map(Value::from),
        1 => any_json(),
    ]
}

/// A header: usually with the fields a real one has, each of any type or missing;
/// sometimes any JSON at all.
fn header() -> impl Strategy<Value = Value> {
    let field = |s: BoxedStrategy<Value>| prop::option::weighted(0.85, s);
    let id = prop_oneof![3 => "[a-f0-9_-]{1,20}".prop_map(Value::from), 1 => any_json()].boxed();
    let text = prop_oneof![3 => ".{0,10}".prop_map(Value::from), 1 => any_json()].boxed();
    let shaped = (
        field(id),
        field(msg_type().boxed()),
        field(text.clone()),
        field(text.clone()),
        field(text),
    )
        .prop_map(|(msg_id, msg_type, username, session, date)| {
            let mut m = Map::new();
            for (k, v) in [
                ("msg_id", msg_id),
                ("msg_type", msg_type),
                ("username", username),
                ("session", session),
                ("date", date),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m)
        });
    prop_oneof![4 => shaped, 1 => any_json()]
}

/// A frame: usually JSON (content shaped like what handlers read), sometimes bytes that
/// are not JSON or not UTF-8.
fn json_frame() -> impl Strategy<Value = Vec<u8>> {
    let content_like = prop::collection::btree_map(
        prop::sample::select(vec![
            "msg_ids",
            "restart",
            "code",
            "silent",
            "is_broadcast",
            "label",
            "original_msg_id",
            "after",
            "follow",
            "targets",
        ]),
        any_json(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![
        4 => prop_oneof![any_json(), content_like].prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
        1 => Just(b"{\"a\": \xff}".to_vec()),
    ]
}

/// A signed message (valid signature over whatever the frames hold), as frames.
fn signed_message() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..3),
        prop_oneof![4 => header().prop_map(|h| serde_json::to_vec(&h).unwrap()), 1 => json_frame()],
        json_frame(),
        json_frame(),
        json_frame(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..3),
    )
        .prop_map(|(idents, h, p, m, c, buffers)| {
            // An ident equal to the delimiter would move the envelope: keep them apart.
            let idents = idents.into_iter().filter(|i| i != DELIMITER).collect();
            encode_raw(&Signer::new(KEY), idents, h, [&p, &m, &c], buffers)
        })
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// What the decoding must decide, computed independently.
fn addressable(header: &[u8]) -> bool {
    serde_json::from_slice::<Value>(header).is_ok_and(|h| {
        h.get("msg_id").is_some_and(Value::is_string)
            && h.get("msg_type").is_some_and(Value::is_string)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Signed messages of every shape: accepted exactly when a reply can be addressed and
    /// every JSON frame parses; then answered (control) or handed on, without a panic.
    #[test]
    fn any_signed_message_is_handled_or_dropped(frames in signed_message()) {
        let mut intake = Intake::new(Signer::new(KEY));
        let d = frames.iter().position(|f| f == DELIMITER).unwrap();
        let expect_ok = addressable(&frames[d + 2])
            && frames[d + 3..d + 6].iter().all(|f| is_json(f));
        let replay = frames.clone();
        match intake.accept(frames, Channel::Control, 5) {
            Ok(req) => {
                prop_assert!(expect_ok);
                let md = reply_metadata(&req.metadata(), "uuid", "ok", "now");
                prop_assert_eq!(&md["engine"], &json!("uuid"));
                let mut aborts = AbortState::default();
                match control::answer(&req, &mut aborts) {
                    ControlAnswer::Reply { msg_type, content, shutdown } => {
                        prop_assert_eq!(msg_type, corral_wire::reply_type(&req.header.msg_type));
                        prop_assert!(content["status"] == "ok" || content["status"] == "error");
                        prop_assert_eq!(shutdown, req.header.msg_type == "shutdown_request");
                    }
                    ControlAnswer::Forward => prop_assert!(!matches!(
                        req.header.msg_type.as_str(),
                        "abort_request" | "shutdown_request" | "kernel_info_request"
                    )),
                }
                prop_assert!(aborts.remembered() <= MAX_ABORTED_IDS);
            }
            Err(e) => prop_assert!(!expect_ok, "rejected a valid message: {}", e),
        }
        // The same bytes again are a replay, whatever they hold.
        prop_assert!(matches!(
            intake.accept(replay, Channel::Shell, 6),
            Err(Rejected::Wire(WireError::Replayed))
        ));
    }

    /// Arbitrary frames (no valid signature): always rejected, never a panic.
    #[test]
    fn arbitrary_frames_are_rejected(
        mut frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..9),
        delim_at in any::<prop::sample::Index>(),
    ) {
        if !frames.is_empty() {
            let i = delim_at.index(frames.len());
            frames[i] = DELIMITER.to_vec();
        }
        let mut intake = Intake::new(Signer::new(KEY));
        prop_assert!(intake.accept(frames, Channel::Shell, 0).is_err());
    }

    /// Abort requests naming ever-new ids keep the remembered set bounded.
    #[test]
    fn aborted_ids_stay_bounded(batches in prop::collection::vec(1usize..5000, 1..8)) {
        let mut aborts = AbortState::default();
        let mut n = 0u64;
        for size in batches {
            aborts.abort_ids((0..size).map(|_| { n += 1; format!("id-{n}") }));
            prop_assert!(aborts.remembered() <= MAX_ABORTED_IDS);
        }
        prop_assert_eq!(aborts.remembered() as u64, n.min(MAX_ABORTED_IDS as u64));
    }
}
