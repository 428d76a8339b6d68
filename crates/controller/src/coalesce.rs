//! Coalescing broadcasts (`BroadcastView(is_coalescing=True)`): the engines' replies to
//! one request are held until every target has answered, then go to the client as one
//! reply, as ipyparallel's broadcast scheduler sends them: the last reply's header,
//! parent, content and metadata, plus `metadata.broadcast_targets` (`[[uuid, id], ..]`)
//! and every reply's buffers, concatenated in that order.

use corral_wire::Message;
use serde_json::json;
use std::collections::HashMap;

/// One request still waiting for replies.
struct Pending {
    client: Vec<u8>,
    /// In the order the combined reply lists them.
    targets: Vec<(String, u64)>,
    buffers: HashMap<String, Vec<Vec<u8>>>,
}

#[derive(Default)]
pub(crate) struct Coalescer {
    pending: HashMap<String, Pending>,
}

impl Coalescer {
    /// Starts collecting replies to `original` from `targets`, for `client`.
    pub(crate) fn expect(&mut self, original: &str, client: Vec<u8>, targets: Vec<(String, u64)>) {
        let pending = Pending {
            client,
            targets,
            buffers: HashMap::new(),
        };
        self.pending.insert(original.to_string(), pending);
    }

    /// Files `engine`'s reply to `original`; returns the combined reply, addressed to the
    /// client, once every target has answered. `None` while waiting, or when the request is
    /// unknown (cancelled, or its engine died), which the caller logs.
    pub(crate) fn add(
        &mut self,
        original: &str,
        engine: &str,
        mut reply: Message,
    ) -> Option<Message> {
        let pending = self.pending.get_mut(original)?;
        if !pending.targets.iter().any(|(uuid, _)| uuid == engine) {
            return None;
        }
        pending
            .buffers
            .insert(engine.to_string(), std::mem::take(&mut reply.buffers));
        if pending.buffers.len() < pending.targets.len() {
            return None;
        }
        let mut done = self.pending.remove(original)?;
        reply.buffers = done
            .targets
            .iter()
            .flat_map(|(uuid, _)| done.buffers.remove(uuid).unwrap_or_default())
            .collect();
        reply.metadata["broadcast_targets"] = json!(done.targets);
        reply.idents = vec![done.client];
        Some(reply)
    }

    /// Whether `original` is still collecting replies.
    pub(crate) fn is_pending(&self, original: &str) -> bool {
        self.pending.contains_key(original)
    }

    /// Stops collecting for `original` (it was answered with an error instead).
    pub(crate) fn cancel(&mut self, original: &str) {
        self.pending.remove(original);
    }

    /// Forgets every request waiting on a dead engine and returns their ids. The client
    /// turns them into `EngineError` itself, from the unregistration, as with ipyparallel.
    pub(crate) fn engine_died(&mut self, engine: &str) -> Vec<String> {
        let dead: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.targets.iter().any(|(uuid, _)| uuid == engine))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            self.pending.remove(id);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::Session;

    fn reply(session: &Session, engine: &str, n: u8) -> Message {
        let mut m = session.msg("apply_reply", json!({"status": "ok", "n": n}));
        m.metadata = json!({"engine": engine, "is_coalescing": true, "original_msg_id": "m"});
        m.buffers = vec![vec![n], vec![n, n]];
        m
    }

    #[test]
    fn combines_once_every_target_answered_in_target_order() {
        let s = Session::new(b"key");
        let mut c = Coalescer::default();
        c.expect(
            "m",
            b"client".to_vec(),
            vec![("b".into(), 0), ("a".into(), 1)],
        );
        assert!(c.add("m", "a", reply(&s, "a", 1)).is_none());
        assert!(c.is_pending("m"));
        let out = c.add("m", "b", reply(&s, "b", 2)).expect("all answered");
        assert_eq!(out.idents, vec![b"client".to_vec()]);
        assert_eq!(out.buffers, vec![vec![2], vec![2, 2], vec![1], vec![1, 1]]);
        assert_eq!(
            out.metadata["broadcast_targets"],
            json!([["b", 0], ["a", 1]])
        );
        assert_eq!(out.content["n"], 2, "the last reply carries the content");
        assert!(!c.is_pending("m"));
    }

    #[test]
    fn ignores_strangers_and_forgets_requests_of_dead_engines() {
        let s = Session::new(b"key");
        let mut c = Coalescer::default();
        c.expect(
            "m",
            b"client".to_vec(),
            vec![("a".into(), 0), ("b".into(), 1)],
        );
        c.expect("k", b"client".to_vec(), vec![("a".into(), 0)]);
        assert!(c.add("m", "x", reply(&s, "x", 9)).is_none());
        assert!(c.add("unknown", "a", reply(&s, "a", 9)).is_none());
        assert_eq!(c.engine_died("b"), vec!["m".to_string()]);
        assert!(c.add("m", "a", reply(&s, "a", 1)).is_none());
        assert!(!c.is_pending("m"));
        c.cancel("k");
        assert!(c.add("k", "a", reply(&s, "a", 1)).is_none());
    }
}
