//! The broadcast scheduler, flattened: one thread plays ipyparallel's root and both
//! leaves. A client's request `{targets: [[uuid, id], ..], is_broadcast: true}` is split
//! into one re-signed copy per engine with `msg_id = <original>_<uuid>` and
//! `metadata.original_msg_id`, sent from leaf `id % 2` (identity `sub_scheduler_0<n>`)
//! with idents `[uuid, sub_scheduler_0, client]`, as a stock tree would. Replies lose
//! their routing frames and go back to the client, or, for a coalescing request, are
//! combined into one reply first (see [`crate::coalesce`]).

use corral_wire::{Message, Session};
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
        for BroadcastTarget { uuid, id } in targets {
            let mut copy = msg.clone();
            copy.header.msg_id = format!("{original}_{uuid}");
            copy.metadata["targets"] = json!([[uuid, id]]);
            copy.metadata["original_msg_id"] = json!(original);
            copy.idents = vec![uuid.clone().into_bytes(), ROOT_ID.to_vec(), client.clone()];
            let leaf = &self.leaves[(id as usize) % self.leaves.len()];
            let out: Vec<zmq::Message> = self
                .session
                .encode(&copy)
                .into_iter()
                .map(zmq::Message::from)
                .collect();
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
                        &reply_type(msg.msg_type()),
                        error_content("EngineError", &evalue),
                    )
                    .with_parent(&copy.header);
                reply.metadata = json!({"status": "error", "is_broadcast": true,
                                        "original_msg_id": original, "engine": uuid});
                if coalescing {
                    self.coalescer.cancel(&original);
                    reply.metadata["is_coalescing"] = json!(true);
                    reply.metadata["broadcast_targets"] = msg.metadata["targets"].clone();
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
