//! The IOPub relay: engines' XPUB/PUB sockets connect to a SUB here; everything valid is
//! re-published unchanged to clients. The hub hears about `shutdown_reply`s, which mean
//! an engine is leaving.

use corral_wire::Signer;
use std::sync::Arc;
use tracing::warn;

use crate::events::{HubEvent, HubSender, RecordEvent};
use crate::sockets::{checked, parse, readable, recv_frames, HeaderIds};
use crate::stop::Stop;

const POLL_MS: i64 = 50;

pub(crate) struct IopubRelay {
    pub sub: zmq::Socket,
    pub publisher: zmq::Socket,
    pub signer: Signer,
    pub hub: HubSender,
    pub stop: Arc<Stop>,
}

impl IopubRelay {
    pub(crate) fn run(self) {
        while !self.stop.is_set() {
            let mut items = [self.sub.as_poll_item(zmq::POLLIN)];
            if !readable(&mut items, POLL_MS) {
                continue;
            }
            while let Some(frames) = recv_frames(&self.sub) {
                self.forward(frames);
            }
        }
    }

    fn forward(&self, frames: Vec<zmq::Message>) {
        let Some(d) = checked(&frames, &self.signer, "iopub") else {
            return;
        };
        let header = &frames[d + 2];
        // Cheap pre-check before parsing: only shutdown replies interest the hub.
        if header.windows(14).any(|w| w == b"shutdown_reply") {
            if let Some(h) = parse::<HeaderIds>(header, "iopub", "header") {
                if h.msg_type == "shutdown_reply" {
                    let _ = self.hub.send(HubEvent::EngineShutdown(h.session));
                }
            }
        }
        // Output and published data the task records keep; parsed on the hub thread.
        let recorded: [&[u8]; 5] = [
            b"\"stream\"",
            b"\"error\"",
            b"\"execute_input\"",
            b"\"execute_result\"",
            b"\"data_message\"",
        ];
        if recorded
            .iter()
            .any(|t| header.windows(t.len()).any(|w| w == *t))
        {
            let _ = self.hub.send(HubEvent::Record(RecordEvent::Iopub {
                parts: frames[d + 2..].iter().map(|f| f.to_vec()).collect(),
            }));
        }
        if let Err(error) = self.publisher.send_multipart(frames, 0) {
            warn!(socket = "iopub", %error, "publish failed");
        }
    }
}
