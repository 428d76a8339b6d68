//! One enum over the contents corral reads, by message type, so a handler `match`es on
//! types instead of comparing strings and digging in JSON. A type corral does not read is
//! [`Content::Unknown`], kept exactly as sent: nothing is lost, and relays never re-encode
//! a message anyway (they forward its frames, signature and all).

use serde_json::Value;

use super::client_side::{ConnectionReply, EngineNotification, StatusContent};
use super::iopub::{ExecuteInputContent, StreamContent};
use super::registration_reply::RegistrationReply;
use super::requests::{
    AbortRequest, DbRequest, EmptyRequest, LoadRequest, PurgeRequest, QueueRequest,
    ResubmitRequest, ResultRequest, ShutdownRequest,
};
use super::{RegistrationRequest, UnregistrationRequest};

/// Declares [`Content`] from one list of (variant, type, msg_type), so the names are
/// written once for reading, naming and writing.
macro_rules! contents {
    ($($(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal,)*) => {
        /// A message's content, typed by its `msg_type`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Content {
            $($(#[$doc])* $variant($ty),)*
            /// Any other message type: its content as sent.
            Unknown { msg_type: String, content: Value },
        }

        impl Content {
            /// Reads `content` as a `msg_type` message. Never fails: a known type's fields
            /// are read leniently (see each type), anything else is `Unknown`.
            pub fn read(msg_type: &str, content: &Value) -> Self {
                match msg_type {
                    $($name => Content::$variant(<$ty>::read(content)),)*
                    _ => Content::Unknown {
                        msg_type: msg_type.to_string(),
                        content: content.clone(),
                    },
                }
            }

            /// The `msg_type` this content travels under.
            pub fn message_type(&self) -> &str {
                match self {
                    $(Content::$variant(_) => $name,)*
                    Content::Unknown { msg_type, .. } => msg_type,
                }
            }

            /// The content frame to send (`Unknown`: exactly what was read).
            pub fn to_content(&self) -> Value {
                match self {
                    $(Content::$variant(c) => c.to_content(),)*
                    Content::Unknown { content, .. } => content.clone(),
                }
            }

            /// Every message type with a typed variant.
            pub const KNOWN_TYPES: &'static [&'static str] = &[$($name,)*];
        }
    };
}

contents! {
    /// Hub: an engine asks for an id.
    RegistrationRequest(RegistrationRequest) = "registration_request",
    /// Hub: an engine leaves.
    UnregistrationRequest(UnregistrationRequest) = "unregistration_request",
    /// Hub: a client asks for the live engines.
    ConnectionRequest(EmptyRequest) = "connection_request",
    /// Hub: queue status per engine.
    QueueRequest(QueueRequest) = "queue_request",
    /// Hub: outstanding work per engine.
    LoadRequest(LoadRequest) = "load_request",
    /// Hub: every msg_id it has a record of.
    HistoryRequest(EmptyRequest) = "history_request",
    /// Hub: status and results of tasks.
    ResultRequest(ResultRequest) = "result_request",
    /// Hub: a query over the task records.
    DbRequest(DbRequest) = "db_request",
    /// Hub: run finished tasks again.
    ResubmitRequest(ResubmitRequest) = "resubmit_request",
    /// Hub: forget records.
    PurgeRequest(PurgeRequest) = "purge_request",
    /// Hub (stop the controller) or engine control (stop the engine).
    ShutdownRequest(ShutdownRequest) = "shutdown_request",
    /// Engine control: drop queued requests.
    AbortRequest(AbortRequest) = "abort_request",
    /// Engine control: who are you.
    KernelInfoRequest(EmptyRequest) = "kernel_info_request",
    /// Engine: the hub's answer to its registration.
    RegistrationReply(RegistrationReply) = "registration_reply",
    /// IOPub: a task's output, kept in its record.
    Stream(StreamContent) = "stream",
    /// IOPub: the code a task runs, kept in its record.
    ExecuteInput(ExecuteInputContent) = "execute_input",
    /// Client: the hub's answer to its connection.
    ConnectionReply(ConnectionReply) = "connection_reply",
    /// Client (notification): an engine came up.
    RegistrationNotification(EngineNotification) = "registration_notification",
    /// Client (notification): an engine is gone.
    UnregistrationNotification(EngineNotification) = "unregistration_notification",
    /// IOPub: an engine's execution state.
    Status(StatusContent) = "status",
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_types_read_typed_and_name_themselves() {
        for &name in Content::KNOWN_TYPES {
            let content = Content::read(name, &json!({}));
            assert!(!matches!(content, Content::Unknown { .. }), "{name}");
            assert_eq!(content.message_type(), name);
        }
        let Content::PurgeRequest(purge) = Content::read(
            "purge_request",
            &json!({"msg_ids": "all", "engine_ids": [2]}),
        ) else {
            panic!("a purge_request reads as one");
        };
        assert!(purge.msg_ids.is_all());
        assert_eq!(purge.engine_ids, Some(vec![2]));
    }

    #[test]
    fn unknown_types_are_kept_as_sent() {
        let sent = json!({"a": [1, {"b": null}], "weird": 1.5});
        let content = Content::read("become_dask_request", &sent);
        assert_eq!(
            content,
            Content::Unknown {
                msg_type: "become_dask_request".into(),
                content: sent.clone()
            }
        );
        assert_eq!(content.message_type(), "become_dask_request");
        assert_eq!(content.to_content(), sent);
        // Not even an object: still kept.
        assert_eq!(Content::read("x", &json!([1])).to_content(), json!([1]));
    }

    #[test]
    fn ill_formed_known_contents_read_as_defaults() {
        assert_eq!(
            Content::read("queue_request", &json!("nonsense")),
            Content::QueueRequest(QueueRequest::default())
        );
        assert_eq!(
            Content::read("connection_request", &json!({"x": 1})).to_content(),
            json!({"x": 1})
        );
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// Keys the typed contents read, over-represented among random ones.
        const FIELDS: [&str; 12] = [
            "uuid",
            "id",
            "msg_ids",
            "engine_ids",
            "targets",
            "verbose",
            "status_only",
            "query",
            "keys",
            "restart",
            "all",
            "x",
        ];

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                "[a-z]{0,4}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                    prop::collection::vec(
                        (
                            prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
                            inner
                        ),
                        0..5
                    )
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn any_type() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(Content::KNOWN_TYPES.to_vec()).prop_map(String::from),
                1 => "[a-z_]{0,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any content of any type reads without failing and keeps its type; unknown
            /// content is kept exactly, and a typed reading is a fixed point (what it
            /// writes reads back the same), so nothing read is lost on the way out.
            #[test]
            fn any_content_reads_keeps_its_type_and_writes_back(
                msg_type in any_type(),
                content in any_json(),
            ) {
                let read = Content::read(&msg_type, &content);
                prop_assert_eq!(read.message_type(), msg_type.as_str());
                let written = read.to_content();
                match &read {
                    Content::Unknown { .. } => prop_assert_eq!(&written, &content),
                    _ => {
                        prop_assert!(Content::KNOWN_TYPES.contains(&msg_type.as_str()));
                        prop_assert_eq!(Content::read(&msg_type, &written), read);
                    }
                }
            }
        }
    }
}
