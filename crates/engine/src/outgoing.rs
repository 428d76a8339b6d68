//! What the executor asks the I/O thread to send, and the [`Encoder`] that turns it into
//! signed frames. Headers, signatures and the `parent_header` are made here, off the Python
//! thread, so a `publish_data` call costs Python only its pickling.

use std::sync::Arc;

use corral_wire::{encode_raw, Session};

use crate::request::Channel;

/// One thing to send. All of these go through one ordered queue.
#[derive(Debug)]
pub enum Outgoing {
    /// A task starts: `status: busy` parented to it, and it becomes the current parent.
    Begin { parent: Arc<Vec<u8>> },
    /// A task is over (its reply already queued): `status: idle`, current parent cleared.
    End { parent: Arc<Vec<u8>> },
    /// An IOPub message parented to the current task. `content` is JSON bytes.
    Publish {
        topic: Vec<u8>,
        msg_type: String,
        content: Vec<u8>,
        /// `metadata = {"engine": uuid}` (every engine message but `stream`), else `{}`.
        engine_md: bool,
        buffers: Vec<Vec<u8>>,
    },
    /// A `data_message` on topic `datapub`: content `{"keys": keys}`, the pickled dict as buffers.
    Data {
        keys: Vec<String>,
        buffers: Vec<Vec<u8>>,
        /// A JSON summary of the values for the controller's dashboard, sent as the
        /// content's `corral_preview` (docs/PROTOCOL.md §13); stock peers ignore it.
        preview: Option<serde_json::Value>,
    },
    /// A reply on the request's own socket, echoing its idents.
    Reply {
        channel: Channel,
        idents: Vec<Vec<u8>>,
        parent: Arc<Vec<u8>>,
        msg_type: String,
        content: Vec<u8>,
        metadata: Vec<u8>,
        buffers: Vec<Vec<u8>>,
    },
    /// `status` with no parent (e.g. `starting`).
    Status { state: &'static str },
}

impl Outgoing {
    /// Bytes of a `Data` update's frames: what the engine's byte bound on queued
    /// publications counts (other output is never dropped, so never counted there).
    pub fn data_bytes(&self) -> usize {
        match self {
            Outgoing::Data { buffers, .. } => buffers.iter().map(Vec::len).sum(),
            _ => 0,
        }
    }

    /// Whether this is IOPub output carrying buffers, which waits while too many bytes are
    /// already in flight toward the controller.
    pub(crate) fn carries_payload(&self) -> bool {
        match self {
            Outgoing::Data { buffers, .. } | Outgoing::Publish { buffers, .. } => {
                !buffers.is_empty()
            }
            _ => false,
        }
    }
}

/// Drops every `Data` update whose keys are all published again later in the same task
/// (between the same `Begin`/`End`), keeping order. The last value of every key survives,
/// so a reader's merged `data` ends the same; only intermediate states are skipped.
/// Returns the [`Outgoing::data_bytes`] dropped.
pub(crate) fn conflate(ops: &mut Vec<Outgoing>) -> usize {
    use std::collections::HashSet;
    let mut later: HashSet<String> = HashSet::new();
    let mut keep = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate().rev() {
        match op {
            Outgoing::Begin { .. } | Outgoing::End { .. } => later.clear(),
            Outgoing::Data { keys, .. } => {
                if !keys.is_empty() && keys.iter().all(|k| later.contains(k)) {
                    keep[i] = false;
                } else {
                    later.extend(keys.iter().cloned());
                }
            }
            _ => {}
        }
    }
    let dropped = ops
        .iter()
        .zip(&keep)
        .filter(|(_, keep)| !**keep)
        .map(|(op, _)| op.data_bytes())
        .sum();
    let mut flags = keep.into_iter();
    ops.retain(|_| flags.next().unwrap_or(true));
    dropped
}

/// Where encoded frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Shell,
    Control,
    IoPub,
}

/// Stateful encoder, owned by the I/O thread: it remembers the current parent header.
pub(crate) struct Encoder {
    session: Arc<Session>,
    engine_md: Vec<u8>,
    status_topic: Vec<u8>,
    current_parent: Option<Arc<Vec<u8>>>,
}

const EMPTY: &[u8] = b"{}";

impl Encoder {
    /// The trace point (see `corral_wire::trace`) of `op` once sent, and the msg_id of the
    /// request it answers: replies, `status: idle` and published data.
    pub(crate) fn trace_point(&self, op: &Outgoing) -> Option<(&'static str, Vec<u8>)> {
        let (point, parent) = match op {
            Outgoing::Reply { parent, .. } => ("e_reply_out", &parent[..]),
            Outgoing::End { parent } => ("e_idle_out", &parent[..]),
            // Published data is traced by its own msg_id (see `data_msg_id`).
            Outgoing::Data { .. } => ("e_data_out", &b"{}"[..]),
            _ => return None,
        };
        Some((point, corral_wire::trace::msg_id_in(parent).to_vec()))
    }

    /// The msg_id of an encoded message's own header (a `data_message` is traced by it:
    /// one task publishes many).
    pub(crate) fn own_msg_id(frames: &[Vec<u8>]) -> Vec<u8> {
        match corral_wire::locate_delimiter(frames) {
            Ok(d) if frames.len() > d + 2 => corral_wire::trace::msg_id_in(&frames[d + 2]).to_vec(),
            _ => b"-".to_vec(),
        }
    }

    pub(crate) fn new(session: Arc<Session>, engine_id: u64) -> Self {
        let engine_md =
            serde_json::to_vec(&serde_json::json!({"engine": session.id})).expect("JSON");
        Encoder {
            session,
            engine_md,
            status_topic: format!("engine.{engine_id}.status").into_bytes(),
            current_parent: None,
        }
    }

    /// Signed frames for one message. `parent`/`metadata`/`content` are JSON bytes.
    pub(crate) fn frames(
        &self,
        idents: Vec<Vec<u8>>,
        msg_type: &str,
        parent: &[u8],
        metadata: &[u8],
        content: &[u8],
        buffers: Vec<Vec<u8>>,
    ) -> Vec<Vec<u8>> {
        let header = serde_json::to_vec(&self.session.header(msg_type)).expect("JSON");
        encode_raw(
            &self.session.signer,
            idents,
            header,
            [parent, metadata, content],
            buffers,
        )
    }

    /// A `status` message parented to `parent`, without touching the current parent.
    pub(crate) fn status_for(&self, state: &str, parent: &[u8]) -> Vec<Vec<u8>> {
        let content = format!("{{\"execution_state\": \"{state}\"}}");
        self.frames(
            vec![self.status_topic.clone()],
            "status",
            parent,
            &self.engine_md,
            content.as_bytes(),
            Vec::new(),
        )
    }

    fn parent(&self) -> &[u8] {
        self.current_parent.as_deref().map_or(EMPTY, |p| &p[..])
    }

    /// Encodes one operation (updating the current parent as a side effect).
    pub(crate) fn encode(&mut self, op: Outgoing) -> (Target, Vec<Vec<u8>>) {
        match op {
            Outgoing::Begin { parent } => {
                let frames = self.status_for("busy", &parent);
                self.current_parent = Some(parent);
                (Target::IoPub, frames)
            }
            Outgoing::End { parent } => {
                self.current_parent = None;
                (Target::IoPub, self.status_for("idle", &parent))
            }
            Outgoing::Status { state } => (Target::IoPub, self.status_for(state, EMPTY)),
            Outgoing::Publish {
                topic,
                msg_type,
                content,
                engine_md,
                buffers,
            } => {
                let md: &[u8] = if engine_md { &self.engine_md } else { EMPTY };
                let frames =
                    self.frames(vec![topic], &msg_type, self.parent(), md, &content, buffers);
                (Target::IoPub, frames)
            }
            Outgoing::Data {
                keys,
                buffers,
                preview,
            } => {
                let mut content = serde_json::json!({"keys": keys});
                if let Some(preview) = preview {
                    content["corral_preview"] = preview;
                }
                let content = serde_json::to_vec(&content).expect("JSON");
                let frames = self.frames(
                    vec![b"datapub".to_vec()],
                    "data_message",
                    self.parent(),
                    &self.engine_md,
                    &content,
                    buffers,
                );
                (Target::IoPub, frames)
            }
            Outgoing::Reply {
                channel,
                idents,
                parent,
                msg_type,
                content,
                metadata,
                buffers,
            } => {
                let target = match channel {
                    Channel::Shell => Target::Shell,
                    Channel::Control => Target::Control,
                };
                (
                    target,
                    self.frames(idents, &msg_type, &parent, &metadata, &content, buffers),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::Message;
    use serde_json::json;

    fn data(keys: &[&str], tag: u8) -> Outgoing {
        Outgoing::Data {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            buffers: vec![vec![tag]],
            preview: None,
        }
    }

    fn tags(ops: &[Outgoing]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                Outgoing::Data { buffers, .. } => buffers[0][0].to_string(),
                Outgoing::Begin { .. } => "begin".into(),
                Outgoing::End { .. } => "end".into(),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn conflation_keeps_the_last_value_of_every_key_per_task() {
        let parent = Arc::new(b"{}".to_vec());
        let mut ops = vec![
            Outgoing::Begin {
                parent: parent.clone(),
            },
            data(&["a", "b"], 1), // a and b both come again later: dropped
            data(&["a"], 2),      // a comes again later: dropped
            Outgoing::Status { state: "x" },
            data(&["b"], 3),
            data(&["a", "c"], 4),
            Outgoing::End {
                parent: parent.clone(),
            },
            Outgoing::Begin {
                parent: parent.clone(),
            },
            data(&["a"], 5), // a new task: never merged with the previous one
            Outgoing::End { parent },
        ];
        // Updates 1 and 2 are dropped: one byte of buffers each.
        assert_eq!(conflate(&mut ops), 2);
        assert_eq!(
            tags(&ops),
            ["begin", "other", "3", "4", "end", "begin", "5", "end"]
        );
    }

    #[test]
    fn data_message_is_parented_to_the_running_task() {
        let session = Arc::new(Session::new(b"k"));
        let mut enc = Encoder::new(session.clone(), 3);
        let req = session.msg("apply_request", json!({}));
        let parent = Arc::new(serde_json::to_vec(&req.header).unwrap());
        let (t, busy) = enc.encode(Outgoing::Begin {
            parent: parent.clone(),
        });
        assert_eq!(t, Target::IoPub);
        let busy = Message::decode(&busy, &session.signer).unwrap();
        assert_eq!(busy.idents, vec![b"engine.3.status".to_vec()]);
        assert_eq!(busy.content, json!({"execution_state": "busy"}));
        assert_eq!(busy.metadata, json!({"engine": session.id}));

        let (_, data) = enc.encode(Outgoing::Data {
            keys: vec!["a".into()],
            buffers: vec![b"p".to_vec()],
            preview: None,
        });
        let data = Message::decode(&data, &session.signer).unwrap();
        assert_eq!(data.idents, vec![b"datapub".to_vec()]);
        assert_eq!(data.msg_type(), "data_message");
        assert_eq!(data.content, json!({"keys": ["a"]}));
        assert_eq!(data.parent_msg_id(), Some(req.header.msg_id.as_str()));
        assert_eq!(data.buffers, vec![b"p".to_vec()]);

        let (_, idle) = enc.encode(Outgoing::End { parent });
        let idle = Message::decode(&idle, &session.signer).unwrap();
        assert_eq!(idle.content, json!({"execution_state": "idle"}));
        let (_, late) = enc.encode(Outgoing::Publish {
            topic: b"engine.3.stdout".to_vec(),
            msg_type: "stream".into(),
            content: b"{\"name\": \"stdout\", \"text\": \"x\"}".to_vec(),
            engine_md: false,
            buffers: vec![],
        });
        let late = Message::decode(&late, &session.signer).unwrap();
        assert_eq!(late.parent_header, json!({}));
        assert_eq!(late.metadata, json!({}));
    }
}
