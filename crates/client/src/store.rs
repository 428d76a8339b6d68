//! Per-task records and the rules applied to incoming messages.
//!
//! The store is plain state: the I/O thread feeds it decoded messages, callers read it
//! under the same lock. Three rules live here because they are the client's promises:
//!
//! * **Readiness**: a result is released only once the reply AND the engine's
//!   `status: idle` for the request have arrived. The engine sends idle after the reply
//!   and after every publication on its (ordered) IOPub socket, so when a result is ready
//!   its published data and output are complete. A lost idle must not hang a caller: a
//!   reply that has seen no IOPub for [`Store::release_after`] is released anyway.
//! * **Conflation**: published data stays as raw frames until someone reads it; a new
//!   update whose keys cover an older pending update's keys replaces it, so a task that
//!   publishes a million times while nobody reads costs one pending update.
//! * **Engine death**: an `unregistration_notification` turns every outstanding task of
//!   ours on that engine into a locally synthesized `EngineError` reply, so waits end.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use corral_wire::{iso_now, new_id, Header, Message, PROTOCOL_VERSION};
use serde_json::{json, Value};

/// A reply as it arrived (or as synthesized), kept raw for the caller to decode.
#[derive(Debug, Clone)]
pub struct Reply {
    pub header: Value,
    pub content: Value,
    pub metadata: Value,
    pub buffers: Vec<Vec<u8>>,
}

/// One `data_message` not yet read: its keys (for conflation) and its payload frames.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingData {
    pub keys: Vec<String>,
    pub buffers: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    /// Engine uuid: the target for direct requests; learned from IOPub or the reply
    /// for load-balanced ones.
    pub engine: Option<String>,
    /// Our request header's date.
    pub submitted: String,
    pub reply: Option<Reply>,
    reply_at: Option<Instant>,
    /// `status: idle` parented to this request has arrived (or nothing more will come).
    pub idle: bool,
    last_iopub: Option<Instant>,
    released_without_idle: bool,
    pub stdout: String,
    pub stderr: String,
    /// `execute_input`, `execute_result`, `display_data`, `error`: `{msg_type, content}`.
    pub outputs: Vec<Value>,
    pub pending: Vec<PendingData>,
    /// How many `data_message`s arrived in total (conflated or not).
    pub data_received: u64,
}

/// Everything the client knows, keyed by msg_id.
#[derive(Debug)]
pub struct Store {
    session: String,
    pub tasks: HashMap<String, TaskRecord>,
    /// Live engines, id → uuid.
    pub engines: BTreeMap<i64, String>,
    /// Every engine ever seen, uuid → id (dead ones too, to name them in errors).
    pub engine_ids: HashMap<String, i64>,
    /// Replies to Hub queries, keyed by the request msg_id.
    pub hub_replies: HashMap<String, Message>,
    /// Set when the Hub announces `shutdown_notification`.
    pub hub_shut_down: bool,
    /// How long a reply waits for its idle before being released anyway.
    pub release_after: Duration,
}

impl Store {
    pub fn new(session: String) -> Self {
        Store {
            session,
            tasks: HashMap::new(),
            engines: BTreeMap::new(),
            engine_ids: HashMap::new(),
            hub_replies: HashMap::new(),
            hub_shut_down: false,
            release_after: Duration::from_secs(5),
        }
    }

    pub fn add_engine(&mut self, id: i64, uuid: String) {
        self.engine_ids.insert(uuid.clone(), id);
        self.engines.insert(id, uuid);
    }

    /// Records a request before it is sent, so no reply can arrive for an unknown task.
    pub fn add_task(&mut self, msg_id: String, engine: Option<String>, submitted: String) {
        self.tasks.insert(
            msg_id,
            TaskRecord {
                engine,
                submitted,
                ..TaskRecord::default()
            },
        );
    }

    /// Files a reply from mux, task, broadcast or control.
    pub fn on_reply(&mut self, msg: Message, now: Instant) {
        let Some(msg_id) = msg.parent_msg_id().map(str::to_owned) else {
            tracing::warn!(
                msg_type = msg.msg_type(),
                "reply without parent msg_id dropped"
            );
            return;
        };
        let Some(task) = self.tasks.get_mut(&msg_id) else {
            tracing::debug!(%msg_id, "reply for an unknown task dropped");
            return;
        };
        if task.reply.is_some() {
            tracing::debug!(%msg_id, "second reply for a task ignored");
            return;
        }
        let engine = msg
            .metadata
            .get("engine")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match &engine {
            Some(uuid) => task.engine = Some(uuid.clone()),
            None => {
                // Scheduler-generated failures carry no engine: no engine IOPub follows.
                task.idle = true;
                if task.engine.is_none() {
                    task.engine = msg
                        .idents
                        .first()
                        .and_then(|i| String::from_utf8(i.clone()).ok());
                }
            }
        }
        // Aborted tasks never ran, and control replies (abort, clear, shutdown) are not
        // followed by task output: nothing is worth waiting for.
        let is_task_reply = matches!(msg.msg_type(), "apply_reply" | "execute_reply");
        if !is_task_reply || msg.content.get("status").and_then(Value::as_str) == Some("aborted") {
            task.idle = true;
        }
        // An EngineError is written by a scheduler for an engine that died: that engine
        // publishes nothing more, whether or not its death was announced yet.
        if msg.content.get("ename").and_then(Value::as_str) == Some("EngineError") {
            task.idle = true;
        }
        task.reply = Some(Reply {
            header: serde_json::to_value(&msg.header).expect("headers serialize"),
            content: msg.content,
            metadata: msg.metadata,
            buffers: msg.buffers,
        });
        task.reply_at = Some(now);
    }

    /// Files an IOPub message. Messages parented to other sessions are not ours.
    pub fn on_iopub(&mut self, msg: Message, now: Instant) {
        let parent_session = msg.parent_header.get("session").and_then(Value::as_str);
        if parent_session != Some(self.session.as_str()) {
            return;
        }
        let Some(msg_id) = msg.parent_msg_id() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(msg_id) else {
            return;
        };
        task.last_iopub = Some(now);
        if task.engine.is_none() {
            if let Some(uuid) = msg.metadata.get("engine").and_then(Value::as_str) {
                task.engine = Some(uuid.to_owned());
            }
        }
        match msg.header.msg_type.as_str() {
            "status"
                if msg.content.get("execution_state").and_then(Value::as_str) == Some("idle") =>
            {
                task.idle = true;
            }
            "stream" => {
                let text = msg
                    .content
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match msg.content.get("name").and_then(Value::as_str) {
                    Some("stderr") => task.stderr.push_str(text),
                    _ => task.stdout.push_str(text),
                }
            }
            "data_message" => {
                let keys: Vec<String> = msg
                    .content
                    .get("keys")
                    .and_then(Value::as_array)
                    .map(|ks| {
                        ks.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                task.data_received += 1;
                push_conflated(
                    &mut task.pending,
                    PendingData {
                        keys,
                        buffers: msg.buffers,
                    },
                );
            }
            "execute_input" | "execute_result" | "display_data" | "error" => {
                task.outputs
                    .push(json!({"msg_type": msg.header.msg_type, "content": msg.content}));
            }
            _ => {}
        }
    }

    /// Files a Hub notification; returns the msg_ids that got a synthesized error.
    pub fn on_notification(&mut self, msg: &Message, now: Instant) -> Vec<String> {
        let id = msg.content.get("id").and_then(Value::as_i64);
        let uuid = msg.content.get("uuid").and_then(Value::as_str);
        match (msg.msg_type(), id, uuid) {
            ("registration_notification", Some(id), Some(uuid)) => {
                self.add_engine(id, uuid.to_owned());
                Vec::new()
            }
            ("unregistration_notification", Some(id), Some(uuid)) => {
                self.engines.remove(&id);
                self.engine_died(id, uuid, now)
            }
            ("shutdown_notification", _, _) => {
                self.hub_shut_down = true;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Every outstanding task on engine `uuid` gets an `EngineError` reply, as
    /// ipyparallel's `_handle_stranded_msgs` does.
    pub fn engine_died(&mut self, id: i64, uuid: &str, now: Instant) -> Vec<String> {
        let mut failed = Vec::new();
        for (msg_id, task) in self.tasks.iter_mut() {
            if task.engine.as_deref() != Some(uuid) {
                continue;
            }
            if task.reply.is_some() {
                // A dead engine publishes nothing more: do not wait for its idle (the
                // scheduler's EngineError can overtake this notification).
                task.idle = true;
                continue;
            }
            let evalue = format!("Engine {id} died while running task '{msg_id}'");
            let engine_info = json!({"engine_uuid": uuid, "engine_id": id, "method": "apply"});
            let header = Header {
                msg_id: new_id(),
                msg_type: "apply_reply".into(),
                username: String::new(),
                session: String::new(),
                date: iso_now(),
                version: PROTOCOL_VERSION.into(),
            };
            task.reply = Some(Reply {
                header: serde_json::to_value(header).expect("headers serialize"),
                content: json!({
                    "status": "error",
                    "ename": "EngineError",
                    "evalue": evalue,
                    "traceback": [format!("EngineError: {evalue}")],
                    "engine_info": engine_info,
                }),
                metadata: json!({"engine": uuid, "status": "error", "engine_info": engine_info}),
                buffers: Vec::new(),
            });
            task.reply_at = Some(now);
            task.idle = true;
            failed.push(msg_id.clone());
        }
        if !failed.is_empty() {
            tracing::warn!(
                engine_id = id,
                tasks = failed.len(),
                "engine died with tasks outstanding"
            );
        }
        failed
    }

    /// The readiness rule (see the module docs).
    pub fn is_ready(&mut self, msg_id: &str, now: Instant) -> bool {
        let release_after = self.release_after;
        let Some(task) = self.tasks.get_mut(msg_id) else {
            return false;
        };
        let Some(reply_at) = task.reply_at else {
            return false;
        };
        if task.idle {
            return true;
        }
        let quiet_since = task.last_iopub.map_or(reply_at, |t| t.max(reply_at));
        if now.duration_since(quiet_since) >= release_after {
            if !task.released_without_idle {
                task.released_without_idle = true;
                tracing::warn!(%msg_id, "no status idle after the reply; releasing the result anyway");
            }
            return true;
        }
        false
    }

    /// Those of `msg_ids` that are recorded and not ready yet (unknown or forgotten ids
    /// are not pending: nothing will arrive for them).
    pub fn outstanding(&mut self, msg_ids: &[String], now: Instant) -> Vec<String> {
        msg_ids
            .iter()
            .filter(|m| self.tasks.contains_key(m.as_str()) && !self.is_ready(m, now))
            .cloned()
            .collect()
    }

    /// Forgets finished tasks (their reply, output and pending data); returns the ids of
    /// those still outstanding, which are kept.
    pub fn forget(&mut self, msg_ids: &[String], now: Instant) -> Vec<String> {
        let mut kept = Vec::new();
        for msg_id in msg_ids {
            if self.tasks.contains_key(msg_id) && !self.is_ready(msg_id, now) {
                kept.push(msg_id.clone());
            } else {
                self.tasks.remove(msg_id);
            }
        }
        kept
    }

    /// Takes the pending (already conflated) data updates of a task, oldest first.
    pub fn take_data(&mut self, msg_id: &str) -> Vec<PendingData> {
        self.tasks
            .get_mut(msg_id)
            .map(|t| std::mem::take(&mut t.pending))
            .unwrap_or_default()
    }

    pub fn session(&self) -> &str {
        &self.session
    }
}

/// Appends `update`, dropping older pending updates whose keys it covers.
fn push_conflated(pending: &mut Vec<PendingData>, update: PendingData) {
    pending.retain(|old| !old.keys.iter().all(|k| update.keys.contains(k)));
    pending.push(update);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_drops_finished_tasks_and_keeps_outstanding_ones() {
        let now = Instant::now();
        let mut store = Store::new("me".into());
        store.add_task("done".into(), Some("e".into()), String::new());
        store.add_task("running".into(), Some("e".into()), String::new());
        let task = store.tasks.get_mut("done").unwrap();
        task.reply = Some(Reply {
            header: json!({}),
            content: json!({"status": "ok"}),
            metadata: json!({}),
            buffers: vec![vec![0; 8]],
        });
        task.reply_at = Some(now);
        task.idle = true;
        let ids = ["done".to_string(), "running".into(), "unknown".into()];
        assert_eq!(store.outstanding(&ids, now), vec!["running".to_string()]);
        assert_eq!(store.forget(&ids, now), vec!["running".to_string()]);
        assert!(!store.tasks.contains_key("done"));
        assert!(store.tasks.contains_key("running"));
    }

    const SESSION: &str = "client-session";
    const ENGINE: &str = "engine-uuid-0";

    fn request_header(msg_id: &str, session: &str) -> Value {
        json!({"msg_id": msg_id, "msg_type": "apply_request", "session": session,
               "username": "u", "date": "2026-01-01T00:00:00.000000Z", "version": "5.4"})
    }

    fn message(msg_type: &str, parent: Value, metadata: Value, content: Value) -> Message {
        let mut m = Message::new(
            Header {
                msg_id: new_id(),
                msg_type: msg_type.into(),
                username: "u".into(),
                session: ENGINE.into(),
                date: iso_now(),
                version: PROTOCOL_VERSION.into(),
            },
            content,
        );
        m.parent_header = parent;
        m.metadata = metadata;
        m
    }

    fn reply(msg_id: &str) -> Message {
        message(
            "apply_reply",
            request_header(msg_id, SESSION),
            json!({"engine": ENGINE, "started": iso_now()}),
            json!({"status": "ok"}),
        )
    }

    fn iopub(msg_id: &str, msg_type: &str, content: Value) -> Message {
        message(
            msg_type,
            request_header(msg_id, SESSION),
            json!({"engine": ENGINE}),
            content,
        )
    }

    fn data(msg_id: &str, keys: &[&str], payload: u8) -> Message {
        let mut m = iopub(msg_id, "data_message", json!({ "keys": keys }));
        m.buffers = vec![vec![payload]];
        m
    }

    fn store_with_task(msg_id: &str) -> Store {
        let mut s = Store::new(SESSION.into());
        s.add_engine(0, ENGINE.into());
        s.add_task(msg_id.into(), Some(ENGINE.into()), iso_now());
        s
    }

    #[test]
    fn ready_needs_reply_and_idle() {
        let mut s = store_with_task("m");
        let t0 = Instant::now();
        s.on_iopub(iopub("m", "status", json!({"execution_state": "busy"})), t0);
        assert!(!s.is_ready("m", t0));
        s.on_reply(reply("m"), t0);
        assert!(!s.is_ready("m", t0), "reply alone is not enough");
        s.on_iopub(data("m", &["a"], 1), t0);
        s.on_iopub(iopub("m", "status", json!({"execution_state": "idle"})), t0);
        assert!(s.is_ready("m", t0));
        assert_eq!(s.take_data("m").len(), 1);
    }

    #[test]
    fn idle_before_reply_waits_for_reply() {
        let mut s = store_with_task("m");
        let t0 = Instant::now();
        s.on_iopub(iopub("m", "status", json!({"execution_state": "idle"})), t0);
        assert!(!s.is_ready("m", t0));
        s.on_reply(reply("m"), t0);
        assert!(s.is_ready("m", t0));
    }

    #[test]
    fn lost_idle_releases_after_quiet_period() {
        let mut s = store_with_task("m");
        let t0 = Instant::now();
        s.on_reply(reply("m"), t0);
        assert!(!s.is_ready("m", t0 + Duration::from_secs(4)));
        // IOPub still flowing after the reply restarts the quiet period.
        s.on_iopub(data("m", &["a"], 1), t0 + Duration::from_secs(4));
        assert!(!s.is_ready("m", t0 + Duration::from_secs(8)));
        assert!(s.is_ready("m", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn conflation_drops_covered_updates_only() {
        let mut s = store_with_task("m");
        let t0 = Instant::now();
        s.on_iopub(data("m", &["a", "b"], 1), t0);
        s.on_iopub(data("m", &["b"], 2), t0); // does not cover {a, b}: both kept
        s.on_iopub(data("m", &["a"], 3), t0); // covers neither {a, b} nor {b}
        assert_eq!(s.tasks["m"].pending.len(), 3);
        s.on_iopub(data("m", &["a", "b", "c"], 4), t0); // covers all three
        let pending = s.take_data("m");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].buffers, vec![vec![4]]);
        for i in 0..100_000u32 {
            s.on_iopub(data("m", &["i"], (i % 251) as u8), t0);
        }
        assert_eq!(s.tasks["m"].pending.len(), 1);
        assert_eq!(s.tasks["m"].data_received, 100_004);
        assert!(s.take_data("m").len() == 1 && s.take_data("m").is_empty());
    }

    #[test]
    fn foreign_session_iopub_is_dropped() {
        let mut s = store_with_task("m");
        let mut m = data("m", &["a"], 1);
        m.parent_header = request_header("m", "someone-else");
        s.on_iopub(m, Instant::now());
        assert!(s.tasks["m"].pending.is_empty());
    }

    #[test]
    fn engine_death_fails_outstanding_tasks_only() {
        let mut s = store_with_task("running");
        s.add_task("done".into(), Some(ENGINE.into()), iso_now());
        s.add_task("elsewhere".into(), Some("other".into()), iso_now());
        let t0 = Instant::now();
        s.on_reply(reply("done"), t0);
        let note = message(
            "unregistration_notification",
            json!({}),
            json!({}),
            json!({"id": 0, "uuid": ENGINE}),
        );
        let failed = s.on_notification(&note, t0);
        assert_eq!(failed, vec!["running".to_string()]);
        assert!(s.is_ready("running", t0));
        let r = s.tasks["running"].reply.as_ref().unwrap();
        assert_eq!(r.content["ename"], "EngineError");
        assert_eq!(
            r.content["evalue"],
            "Engine 0 died while running task 'running'"
        );
        assert_eq!(
            s.tasks["done"].reply.as_ref().unwrap().content["status"],
            "ok"
        );
        assert!(s.tasks["elsewhere"].reply.is_none());
        assert!(s.engines.is_empty());
    }

    #[test]
    fn load_balanced_task_learns_engine_from_iopub() {
        let mut s = Store::new(SESSION.into());
        s.add_engine(0, ENGINE.into());
        s.add_task("lb".into(), None, iso_now());
        let t0 = Instant::now();
        s.on_iopub(
            iopub("lb", "status", json!({"execution_state": "busy"})),
            t0,
        );
        assert_eq!(s.tasks["lb"].engine.as_deref(), Some(ENGINE));
        s.engine_died(0, ENGINE, t0);
        assert!(s.is_ready("lb", t0));
    }

    #[test]
    fn scheduler_failure_is_ready_without_idle() {
        let mut s = Store::new(SESSION.into());
        s.add_task("lb".into(), None, iso_now());
        let m = message(
            "apply_reply",
            request_header("lb", SESSION),
            json!({}),
            json!({"status": "error", "ename": "TaskTimeout"}),
        );
        s.on_reply(m, Instant::now());
        assert!(s.is_ready("lb", Instant::now()));
    }

    #[test]
    fn stream_and_outputs_accumulate() {
        let mut s = store_with_task("m");
        let t0 = Instant::now();
        s.on_iopub(
            iopub("m", "stream", json!({"name": "stdout", "text": "a\n"})),
            t0,
        );
        s.on_iopub(
            iopub("m", "stream", json!({"name": "stdout", "text": "b\n"})),
            t0,
        );
        s.on_iopub(
            iopub("m", "stream", json!({"name": "stderr", "text": "e"})),
            t0,
        );
        s.on_iopub(iopub("m", "error", json!({"ename": "X"})), t0);
        let t = &s.tasks["m"];
        assert_eq!(t.stdout, "a\nb\n");
        assert_eq!(t.stderr, "e");
        assert_eq!(t.outputs[0]["msg_type"], "error");
    }
}
