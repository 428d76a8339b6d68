//! The broadcast scheduler, flattened: one thread plays ipyparallel's root and both
//! leaves. A client's request `{targets: [[uuid, id], ..], is_broadcast: true}` is split
//! into one re-signed copy per engine with `msg_id = <original>_<uuid>` and
//! `metadata.original_msg_id`, sent from leaf `id % 2` (identity `sub_scheduler_0<n>`)
//! with idents `[uuid, sub_scheduler_0, client]`, as a stock tree would. Replies lose
//! their routing frames and go back to the client, or, for a coalescing request, are
//! combined into one reply first (see [`crate::coalesce`]).

use corral_wire::{encode_raw, Message, Session};
use crossbeam_channel::Receiver;
use serde_json::{json, Value};
use std::sync::Arc;
use tracing::{debug, info, warn};

use crate::coalesce::Coalescer;
use crate::events::EngineEvent;
use crate::sockets::{
    checked, is_full, parse, readable, recv_frames, send_bytes, send_routed, views,
};
use crate::stop::Stop;
use corral_wire::{error_content, reply_type, BroadcastMetadata, BroadcastTarget};

const POLL_MS: i64 = 50;
/// The root's identity, which stock engines see as the second routing frame.
const ROOT_ID: &[u8] = b"sub_scheduler_0";

pub(crate) struct Broadcast {
    pub client: zmq::Socket,
    /// One ROUTER per leaf, bound on the engine file's `broadcast` ports.
    pub leaves: Vec<zmq::Socket>,
    pub session: Arc<Session>,
    /// Engine deaths, so that a coalescing request stops waiting for a dead engine.
    pub engines_rx: Receiver<EngineEvent>,
    pub coalescer: Coalescer,
    pub stop: Arc<Stop>,
}

impl Broadcast {
    pub(crate) fn run(mut self) {
        while !self.stop.is_set() {
            while let Ok(event) = self.engines_rx.try_recv() {
                if let EngineEvent::Down { uuid } = event {
                    for msg_id in self.coalescer.engine_died(&uuid) {
                        info!(
                            msg_id,
                            engine = uuid,
                            "coalescing broadcast dropped: engine died"
                        );
                    }
                }
            }
            let mut items: Vec<zmq::PollItem> = std::iter::once(&self.client)
                .chain(self.leaves.iter())
                .map(|s| s.as_poll_item(zmq::POLLIN))
                .collect();
            if !readable(&mut items, POLL_MS) {
                continue;
            }
            let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
            if ready[0] {
                while let Some(frames) = recv_frames(&self.client) {
                    self.split(frames);
                }
            }
            for (i, _) in ready[1..].iter().enumerate().filter(|(_, r)| **r) {
                while let Some(frames) = recv_frames(&self.leaves[i]) {
                    self.reply(frames);
                }
            }
        }
    }

    fn split(&mut self, frames: Vec<zmq::Message>) {
        let msg = match Message::decode(&views(&frames), &self.session.signer) {
            Ok(m) => m,
            Err(error) => {
                warn!(socket = "broadcast", %error, "dropped invalid message");
                return;
            }
        };
        let Some(client) = msg.idents.first().cloned() else {
            return;
        };
        let BroadcastMetadata {
            is_coalescing: coalescing,
            targets,
            original_msg_id,
        } = BroadcastMetadata::read(&msg.metadata);
        if targets.is_empty() {
            let why = "broadcast request without targets";
            warn!(msg_id = msg.header.msg_id, why, "broadcast refused");
            let mut reply = self.session.msg(
                &reply_type(msg.msg_type()),
                error_content("NotImplementedError", why),
            );
            reply = reply.with_parent(&msg.header);
            reply.idents = vec![client];
            send_bytes(&self.client, self.session.encode(&reply), "broadcast");
            return;
        }
        let original = original_msg_id.unwrap_or_else(|| msg.header.msg_id.clone());
        if coalescing {
            // ipyparallel's root lists leaf 0's engines first, then leaf 1's.
            let mut ordered = targets.clone();
            ordered.sort_by_key(|t| (t.id as usize) % self.leaves.len());
            let ordered = ordered.into_iter().map(|t| (t.uuid, t.id)).collect();
            self.coalescer.expect(&original, client.clone(), ordered);
        }
        let mut copies = Copies::new(msg, &original);
        for BroadcastTarget { uuid, id } in targets {
            let (header, out) = copies.for_engine(&self.session, &uuid, id, &client);
            let leaf = &self.leaves[(id as usize) % self.leaves.len()];
            if let Err((error, _)) = send_routed(leaf, out) {
                warn!(engine = uuid, %error, "broadcast target unreachable");
                if coalescing && !self.coalescer.is_pending(&original) {
                    continue; // the request has already been answered with an error
                }
                let evalue = if is_full(&error) {
                    format!("engine {uuid:?} is not reading (high-water mark reached)")
                } else {
                    format!("engine {uuid:?} is not connected to the broadcast scheduler")
                };
                let mut reply = self
                    .session
                    .msg(
                        &reply_type(copies.msg.msg_type()),
                        error_content("EngineError", &evalue),
                    )
                    .with_parent(&header);
                reply.metadata = json!({"status": "error", "is_broadcast": true,
                                        "original_msg_id": original, "engine": uuid});
                if coalescing {
                    self.coalescer.cancel(&original);
                    reply.metadata["is_coalescing"] = json!(true);
                    reply.metadata["broadcast_targets"] = copies.all_targets.clone();
                }
                reply.idents = vec![client.clone()];
                send_bytes(&self.client, self.session.encode(&reply), "broadcast");
            }
        }
    }

    /// `[uuid, sub_scheduler_0, client, msg..]` from a leaf → `[client, msg..]`, or into
    /// the coalescer when the request asked for one combined reply.
    fn reply(&mut self, mut frames: Vec<zmq::Message>) {
        let Some(d) = checked(&frames, &self.session.signer, "broadcast_leaf") else {
            return;
        };
        if d < 3 {
            warn!(
                socket = "broadcast_leaf",
                idents = d,
                "dropped reply with too few idents"
            );
            return;
        }
        let coalescing = parse::<Value>(&frames[d + 4], "broadcast_leaf", "metadata")
            .is_some_and(|md| BroadcastMetadata::read(&md).is_coalescing);
        if coalescing {
            self.coalesce(&frames);
            return;
        }
        let rest = frames.split_off(d - 1);
        if let Err((error, _)) = send_routed(&self.client, rest) {
            if is_full(&error) {
                warn!(
                    socket = "broadcast",
                    "client not reading (at its high-water mark); reply dropped"
                );
            } else {
                debug!(socket = "broadcast", %error, "client gone; reply dropped");
            }
        }
    }

    fn coalesce(&mut self, frames: &[zmq::Message]) {
        let reply = match Message::decode(&views(frames), &self.session.signer) {
            Ok(m) => m,
            Err(error) => {
                warn!(socket = "broadcast_leaf", %error, "dropped invalid message");
                return;
            }
        };
        let engine = String::from_utf8_lossy(&frames[0]).into_owned();
        let Some(original) = BroadcastMetadata::read(&reply.metadata).original_msg_id else {
            warn!(engine, "dropped coalescing reply without original_msg_id");
            return;
        };
        if !self.coalescer.is_pending(&original) {
            debug!(
                msg_id = original,
                engine, "reply to a finished coalescing broadcast dropped"
            );
            return;
        }
        if let Some(combined) = self.coalescer.add(&original, &engine, reply) {
            debug!(msg_id = original, "coalesced broadcast replies");
            send_bytes(&self.client, self.session.encode(&combined), "broadcast");
        }
    }
}

/// One request's per-engine copies. Only the header's `msg_id` and the metadata's
/// `targets` differ between them, so the parent header and content are serialized once,
/// and the request's full target list (N entries, taken out of the metadata first) is
/// not cloned into every copy: that made a broadcast to N engines cost O(N²).
struct Copies {
    msg: Message,
    /// The request's `targets`, for an error reply that must name them all.
    all_targets: Value,
    original: String,
    parent: Vec<u8>,
    content: Vec<u8>,
}

impl Copies {
    fn new(mut msg: Message, original: &str) -> Copies {
        let all_targets = msg
            .metadata
            .as_object_mut()
            .and_then(|md| md.remove("targets"))
            .unwrap_or(Value::Null);
        if msg.metadata.is_object() {
            msg.metadata["original_msg_id"] = json!(original);
        }
        let json = |v: &Value| serde_json::to_vec(v).expect("JSON values always serialize");
        Copies {
            parent: json(&msg.parent_header),
            content: json(&msg.content),
            all_targets,
            original: original.to_owned(),
            msg,
        }
    }

    /// The copy for engine `uuid`, signed and addressed `[uuid, sub_scheduler_0, client]`,
    /// with its header (for an error reply's parent).
    fn for_engine(
        &mut self,
        session: &Session,
        uuid: &str,
        id: u64,
        client: &[u8],
    ) -> (corral_wire::Header, Vec<zmq::Message>) {
        let mut header = self.msg.header.clone();
        header.msg_id = format!("{}_{uuid}", self.original);
        let metadata = if self.msg.metadata.is_object() {
            self.msg.metadata["targets"] = json!([[uuid, id]]);
            let bytes = serde_json::to_vec(&self.msg.metadata);
            self.msg
                .metadata
                .as_object_mut()
                .map(|md| md.remove("targets"));
            bytes
        } else {
            serde_json::to_vec(&json!({"targets": [[uuid, id]], "original_msg_id": self.original}))
        }
        .expect("JSON values always serialize");
        let idents = vec![uuid.as_bytes().to_vec(), ROOT_ID.to_vec(), client.to_vec()];
        let frames = encode_raw(
            &session.signer,
            idents,
            serde_json::to_vec(&header).expect("headers always serialize"),
            [&self.parent, &metadata, &self.content],
            self.msg.buffers.clone(),
        );
        (header, frames.into_iter().map(zmq::Message::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_copy_names_its_engine_only_and_is_signed() {
        let session = Session::new(b"key");
        let mut request = session.msg("apply_request", json!({"x": 1}));
        request.metadata = json!({
            "targets": [["a", 0], ["b", 1]], "is_broadcast": true, "label": "L",
        });
        request.buffers = vec![b"f".to_vec(), b"args".to_vec()];
        let original = request.header.msg_id.clone();
        let mut copies = Copies::new(request.clone(), &original);
        assert_eq!(copies.all_targets, json!([["a", 0], ["b", 1]]));
        for (uuid, id) in [("a", 0), ("b", 1)] {
            let (header, frames) = copies.for_engine(&session, uuid, id, b"client");
            let frames: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
            let copy = Message::decode(&frames, &session.signer).expect("a valid signature");
            assert_eq!(copy.idents, [uuid.as_bytes(), ROOT_ID, b"client"]);
            assert_eq!(copy.header.msg_id, format!("{original}_{uuid}"));
            assert_eq!(header.msg_id, copy.header.msg_id);
            assert_eq!(copy.header.msg_type, "apply_request");
            assert_eq!(
                copy.metadata,
                json!({"targets": [[uuid, id]], "is_broadcast": true, "label": "L",
                       "original_msg_id": original})
            );
            assert_eq!(copy.content, request.content);
            assert_eq!(copy.parent_header, request.parent_header);
            assert_eq!(copy.buffers, request.buffers);
        }
    }
}
