//! The hub's state: engine ids and uuids, liveness, per-engine queue counts and the task
//! records ([`crate::records`]) that answer result, db, history and resubmit queries. Plain
//! functions that take a request or an event and return [`Action`]s; the thread in
//! [`crate::hub_loop`] performs them. Tests drive this state without sockets.

use corral_wire::{Header, Message, Session};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::{info, warn};

use crate::events::{EngineEvent, HubEvent};
use crate::records::{project, Records};

/// What the hub wants done after handling one input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send `msg` on the query ROUTER to `ident`.
    Reply { ident: Vec<u8>, msg: Message },
    /// Publish `msg` on the notification PUB.
    Notify(Message),
    /// Tell the schedulers about the live engine set.
    Engines(EngineEvent),
    /// Tell the heartbeat thread to forget this identity.
    ForgetHeart(String),
    /// A client asked the controller to shut down.
    Shutdown,
    /// Send `msg` into the task scheduler (a resubmitted task).
    Resubmit(Message),
}

#[derive(Debug)]
struct Engine {
    id: u32,
    uuid: String,
    /// Live = heartbeat seen; until then the engine is only a pending registration.
    live: bool,
    registered: Instant,
    /// Outstanding direct requests, in submission order.
    queue: BTreeMap<u64, String>,
    /// Outstanding load-balanced tasks placed on this engine.
    tasks: BTreeMap<u64, String>,
    completed: Vec<String>,
}

/// Everything the hub knows. Ids count up from 0 and are never reused.
#[derive(Debug)]
pub(crate) struct HubState {
    session: Session,
    hb_period_ms: u64,
    registration_timeout: Duration,
    /// The `connection_info` of registration replies (interface and engine ports).
    connection_info: Value,
    engines: BTreeMap<u32, Engine>,
    by_uuid: HashMap<String, u32>,
    used_ids: BTreeSet<u32>,
    next_id: u32,
    /// Hearts reported before their registration (a restarted engine re-registering).
    early_hearts: HashSet<String>,
    /// Submission sequence: orders queues and the history.
    seq: u64,
    unassigned: BTreeMap<String, u64>,
    history: Vec<String>,
    /// Task records: requests, replies and output (result/db/resubmit queries).
    records: Records,
}

/// `foo_request` → `foo_reply`.
pub(crate) fn reply_type(request: &str) -> String {
    match request.strip_suffix("_request") {
        Some(base) => format!("{base}_reply"),
        None => format!("{request}_reply"),
    }
}

/// ipyparallel's error content (`wrap_exception`) for a failure the controller raises.
pub(crate) fn error_content(ename: &str, evalue: &str) -> Value {
    json!({
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": [],
        "engine_info": {},
    })
}

impl HubState {
    pub(crate) fn new(
        session: Session,
        hb_period_ms: u64,
        registration_timeout: Duration,
        connection_info: Value,
    ) -> Self {
        HubState {
            session,
            hb_period_ms,
            registration_timeout,
            connection_info,
            engines: BTreeMap::new(),
            by_uuid: HashMap::new(),
            used_ids: BTreeSet::new(),
            next_id: 0,
            early_hearts: HashSet::new(),
            seq: 0,
            unassigned: BTreeMap::new(),
            history: Vec::new(),
            records: Records::default(),
        }
    }

    /// Registrations still waiting for their first heartbeat.
    pub(crate) fn pending_count(&self) -> usize {
        self.engines.values().filter(|e| !e.live).count()
    }

    fn reply(&self, ident: &[u8], parent: &Header, msg_type: &str, content: Value) -> Action {
        Action::Reply {
            ident: ident.to_vec(),
            msg: self.session.msg(msg_type, content).with_parent(parent),
        }
    }

    /// Handles one verified message from the query ROUTER, `ident` being its sender.
    pub(crate) fn handle_query(
        &mut self,
        ident: &[u8],
        msg: &Message,
        now: Instant,
    ) -> Vec<Action> {
        let parent = &msg.header;
        let content = &msg.content;
        match msg.msg_type() {
            "registration_request" => self.register(ident, content, now),
            "unregistration_request" => match content.get("id").and_then(Value::as_u64) {
                Some(id) => self.unregister(id as u32, "unregistration_request"),
                None => {
                    warn!(content = %content, "unregistration_request without an id");
                    Vec::new()
                }
            },
            "connection_request" => {
                let engines: Map<String, Value> = self
                    .engines
                    .values()
                    .filter(|e| e.live)
                    .map(|e| (e.id.to_string(), Value::String(e.uuid.clone())))
                    .collect();
                let content = json!({"status": "ok", "engines": engines});
                vec![self.reply(ident, parent, "connection_reply", content)]
            }
            "queue_request" => {
                let content = self.queue_status(content);
                vec![self.reply(ident, parent, "queue_reply", content)]
            }
            "load_request" => {
                let mut out = Map::new();
                out.insert("status".into(), json!("ok"));
                for e in self.targeted(content) {
                    out.insert(e.id.to_string(), json!(e.queue.len() + e.tasks.len()));
                }
                vec![self.reply(ident, parent, "load_reply", Value::Object(out))]
            }
            "history_request" => {
                let content = json!({"status": "ok", "history": self.records.history()});
                vec![self.reply(ident, parent, "history_reply", content)]
            }
            "result_request" => {
                let (content, buffers) = self.results(content);
                let mut reply = self.reply(ident, parent, "result_reply", content);
                if let Action::Reply { msg, .. } = &mut reply {
                    msg.buffers = buffers;
                }
                vec![reply]
            }
            "db_request" => {
                let (content, buffers) = self.db_query(content);
                let mut reply = self.reply(ident, parent, "db_reply", content);
                if let Action::Reply { msg, .. } = &mut reply {
                    msg.buffers = buffers;
                }
                vec![reply]
            }
            "resubmit_request" => {
                let (content, mut out) = self.resubmit(content);
                out.insert(0, self.reply(ident, parent, "resubmit_reply", content));
                out
            }
            "purge_request" => {
                let content = self.purge(content);
                vec![self.reply(ident, parent, "purge_reply", content)]
            }
            "shutdown_request" => {
                info!("shutdown requested by a client");
                let ok = json!({"status": "ok"});
                vec![
                    self.reply(ident, parent, "shutdown_reply", ok.clone()),
                    Action::Notify(
                        self.session
                            .msg("shutdown_notification", ok)
                            .with_parent(parent),
                    ),
                    Action::Shutdown,
                ]
            }
            other if other.ends_with("_request") => {
                warn!(msg_type = other, "unsupported hub request");
                let evalue = format!("corral's hub does not implement {other}");
                let content = error_content("NotImplementedError", &evalue);
                vec![self.reply(ident, parent, &reply_type(other), content)]
            }
            other => {
                warn!(
                    msg_type = other,
                    "ignored non-request message on the query socket"
                );
                Vec::new()
            }
        }
    }

    fn register(&mut self, ident: &[u8], content: &Value, now: Instant) -> Vec<Action> {
        let Some(uuid) = content.get("uuid").and_then(Value::as_str) else {
            warn!(content = %content, "registration_request without a uuid");
            return vec![self.registration_error(ident, "registration_request has no uuid")];
        };
        if self.by_uuid.contains_key(uuid) {
            warn!(uuid, "registration with a uuid already in use");
            return vec![self.registration_error(ident, &format!("uuid {uuid:?} already in use"))];
        }
        let requested = content.get("id").and_then(Value::as_u64).map(|i| i as u32);
        let id = match requested {
            Some(id) if !self.used_ids.contains(&id) => id,
            _ => {
                while self.used_ids.contains(&self.next_id) {
                    self.next_id += 1;
                }
                self.next_id
            }
        };
        self.used_ids.insert(id);
        let live = self.early_hearts.remove(uuid);
        self.engines.insert(
            id,
            Engine {
                id,
                uuid: uuid.to_string(),
                live: false,
                registered: now,
                queue: BTreeMap::new(),
                tasks: BTreeMap::new(),
                completed: Vec::new(),
            },
        );
        self.by_uuid.insert(uuid.to_string(), id);
        info!(engine_id = id, uuid, "registration requested");
        let content = json!({
            "id": id,
            "status": "ok",
            "hb_period": self.hb_period_ms,
            "connection_info": self.connection_info,
        });
        // Not parented, exactly like ipyparallel.
        let mut out = vec![Action::Reply {
            ident: ident.to_vec(),
            msg: self.session.msg("registration_reply", content),
        }];
        if live {
            out.extend(self.make_live(id));
        }
        out
    }

    fn registration_error(&self, ident: &[u8], evalue: &str) -> Action {
        Action::Reply {
            ident: ident.to_vec(),
            msg: self.session.msg(
                "registration_reply",
                error_content("RegistrationError", evalue),
            ),
        }
    }

    fn make_live(&mut self, id: u32) -> Vec<Action> {
        let Some(e) = self.engines.get_mut(&id) else {
            return Vec::new();
        };
        e.live = true;
        info!(engine_id = id, uuid = %e.uuid, "engine is live");
        let uuid = e.uuid.clone();
        // Schedulers first: a task a client sends on seeing the notification finds the engine.
        vec![
            Action::Engines(EngineEvent::Up {
                id,
                uuid: uuid.clone(),
            }),
            Action::Notify(
                self.session
                    .msg("registration_notification", json!({"id": id, "uuid": uuid})),
            ),
        ]
    }

    /// Removes an engine; only a live one is announced (a pending one was never known).
    fn unregister(&mut self, id: u32, why: &'static str) -> Vec<Action> {
        let Some(e) = self.engines.remove(&id) else {
            warn!(engine_id = id, why, "unregistration of an unknown engine");
            return Vec::new();
        };
        self.by_uuid.remove(&e.uuid);
        info!(engine_id = id, uuid = %e.uuid, why, "engine unregistered");
        let mut out = vec![Action::ForgetHeart(e.uuid.clone())];
        if e.live {
            out.push(Action::Notify(self.session.msg(
                "unregistration_notification",
                json!({"id": id, "uuid": e.uuid}),
            )));
            out.push(Action::Engines(EngineEvent::Down { uuid: e.uuid }));
        }
        out
    }

    fn engine_by_uuid(&mut self, uuid: &str) -> Option<&mut Engine> {
        let id = self.by_uuid.get(uuid)?;
        self.engines.get_mut(id)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Handles one event from another controller thread.
    pub(crate) fn handle_event(&mut self, event: HubEvent) -> Vec<Action> {
        match event {
            HubEvent::NewHeart(uuid) => match self.by_uuid.get(&uuid).copied() {
                Some(id) if !self.engines[&id].live => self.make_live(id),
                Some(_) => Vec::new(),
                None => {
                    self.early_hearts.insert(uuid);
                    Vec::new()
                }
            },
            HubEvent::StoppedHeart(uuid) => {
                self.early_hearts.remove(&uuid);
                match self.by_uuid.get(&uuid).copied() {
                    Some(id) => self.unregister(id, "heart failure"),
                    None => Vec::new(),
                }
            }
            HubEvent::EngineShutdown(uuid) => match self.by_uuid.get(&uuid).copied() {
                Some(id) => self.unregister(id, "engine shutdown_reply"),
                None => Vec::new(),
            },
            HubEvent::Record(event) => {
                self.records.apply(event, &corral_wire::iso_now());
                Vec::new()
            }
            HubEvent::MuxRequest { engine, msg_id } => {
                self.records.set_engine(&msg_id, &engine);
                let seq = self.next_seq();
                if let Some(e) = self.engine_by_uuid(&engine) {
                    e.queue.insert(seq, msg_id.clone());
                    self.history.push(msg_id);
                }
                Vec::new()
            }
            HubEvent::MuxReply { engine, msg_id } => {
                if let Some(e) = self.engine_by_uuid(&engine) {
                    e.queue.retain(|_, m| *m != msg_id);
                    e.completed.push(msg_id);
                }
                Vec::new()
            }
            HubEvent::TaskSubmitted { msg_id } => {
                let seq = self.next_seq();
                self.unassigned.insert(msg_id.clone(), seq);
                self.history.push(msg_id);
                Vec::new()
            }
            HubEvent::TaskAssigned { engine, msg_id } => {
                self.records.set_engine(&msg_id, &engine);
                let seq = self.unassigned.remove(&msg_id).unwrap_or(0);
                if let Some(e) = self.engine_by_uuid(&engine) {
                    e.tasks.insert(seq, msg_id);
                }
                Vec::new()
            }
            HubEvent::TaskDone { engine, msg_id } => {
                if let Some(e) = self.engine_by_uuid(&engine) {
                    e.tasks.retain(|_, m| *m != msg_id);
                    e.completed.push(msg_id);
                }
                Vec::new()
            }
            HubEvent::TaskFailed { engine, msg_id } => {
                self.unassigned.remove(&msg_id);
                if let Some(e) = engine.as_deref().and_then(|u| self.engine_by_uuid(u)) {
                    e.tasks.retain(|_, m| *m != msg_id);
                }
                Vec::new()
            }
        }
    }

    /// Purges registrations that never saw a heartbeat (ipyparallel's `purge_stalled`).
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let stalled: Vec<u32> = self
            .engines
            .values()
            .filter(|e| !e.live && now.duration_since(e.registered) > self.registration_timeout)
            .map(|e| e.id)
            .collect();
        stalled
            .into_iter()
            .flat_map(|id| self.unregister(id, "no heartbeat before registration timeout"))
            .collect()
    }

    /// Every msg_id still waiting or running.
    fn pending_ids(&self) -> HashSet<&str> {
        let queued = self
            .engines
            .values()
            .flat_map(|e| e.queue.values().chain(e.tasks.values()));
        queued
            .chain(self.unassigned.keys())
            .map(String::as_str)
            .collect()
    }

    /// ipyparallel's `purge_results`: forgets finished requests (corral keeps only their
    /// msg_ids, in the history). `msg_ids` is `"all"` (every finished request) or a list,
    /// where a pending or unknown id is an error; `engine_ids` forgets what those engines
    /// completed, and their `completed` lists as well.
    fn purge(&mut self, content: &Value) -> Value {
        let mut drop: HashSet<String> = HashSet::new();
        match content.get("msg_ids") {
            Some(Value::String(all)) if all == "all" => {
                let pending = self.pending_ids();
                drop.extend(
                    self.history
                        .iter()
                        .filter(|m| !pending.contains(m.as_str()))
                        .cloned(),
                );
            }
            Some(Value::Array(ids)) => {
                let pending = self.pending_ids();
                for id in ids.iter().filter_map(Value::as_str) {
                    if pending.contains(id) {
                        return error_content("IndexError", &format!("msg pending: {id:?}"));
                    }
                    if !self.history.iter().any(|m| m == id) && !self.records.contains(id) {
                        return error_content("KeyError", &format!("No such msg: {id:?}"));
                    }
                    drop.insert(id.to_string());
                }
            }
            _ => {}
        }
        if content.get("msg_ids").and_then(Value::as_str) == Some("all") {
            let done = self.records.find(&json!({"completed": {"$ne": null}}));
            let done: Vec<String> = done
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r.get("msg_id").as_str().map(str::to_string))
                .collect();
            drop.extend(done);
        }
        let engine_ids = content.get("engine_ids").and_then(Value::as_array);
        for eid in engine_ids.into_iter().flatten().filter_map(Value::as_u64) {
            if let Some(e) = self.engines.get_mut(&(eid as u32)) {
                drop.extend(e.completed.drain(..));
                let query = json!({"engine_uuid": e.uuid, "completed": {"$ne": null}});
                let done = self.records.find(&query).unwrap_or_default();
                drop.extend(
                    done.iter()
                        .filter_map(|r| r.get("msg_id").as_str().map(str::to_string)),
                );
            }
        }
        self.history.retain(|m| !drop.contains(m));
        for m in &drop {
            self.records.remove(m);
        }
        json!({"status": "ok"})
    }

    /// ipyparallel's `get_results`: pending/completed status of each msg_id (sorted,
    /// deduplicated) and, unless `status_only`, the completed records and their result
    /// buffers in msg_id order. An unknown msg_id is a `KeyError`.
    fn results(&self, content: &Value) -> (Value, Vec<Vec<u8>>) {
        let ids: BTreeSet<&str> = content
            .get("msg_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let status_only = content
            .get("status_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let live = self.pending_ids();
        let (mut pending, mut completed) = (Vec::new(), Vec::new());
        let mut out = Map::new();
        let mut buffers = Vec::new();
        for id in ids {
            match self.records.get(id) {
                Some(rec) if rec.is_completed() => {
                    completed.push(id);
                    if !status_only {
                        out.insert(id.to_string(), rec.result_entry());
                        buffers.extend(rec.result_buffers.iter().flatten().cloned());
                    }
                }
                Some(_) => pending.push(id),
                None if live.contains(id) => pending.push(id),
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
    /// result buffers of each record follow in order when `keys` names them.
    fn db_query(&self, content: &Value) -> (Value, Vec<Vec<u8>>) {
        let empty = json!({});
        let query = content.get("query").unwrap_or(&empty);
        let keys: Option<Vec<String>> = match content.get("keys") {
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            _ => None,
        };
        let found = match self.records.find(query) {
            Ok(found) => found,
            Err(e) => {
                warn!(error = e, "db_request failed");
                return (error_content("ValueError", &e), Vec::new());
            }
        };
        let mut buffer_lens: Option<Vec<usize>> = None;
        let mut result_buffer_lens: Option<Vec<usize>> = None;
        if let Some(keys) = &keys {
            if keys.iter().any(|k| k == "buffers") {
                buffer_lens = Some(Vec::new());
            }
            if keys.iter().any(|k| k == "result_buffers") {
                result_buffer_lens = Some(Vec::new());
            }
        }
        let mut records = Vec::new();
        let mut buffers = Vec::new();
        for rec in found {
            let (value, b, rb) = project(rec, keys.as_deref().filter(|k| !k.is_empty()));
            let mut value = value;
            if let Some(obj) = value.as_object_mut() {
                obj.remove("buffers");
                obj.remove("result_buffers");
            }
            records.push(value);
            if let Some(lens) = &mut buffer_lens {
                let b = b.unwrap_or_default();
                lens.push(b.len());
                buffers.extend(b.iter().cloned());
            }
            if let Some(lens) = &mut result_buffer_lens {
                let rb = rb.unwrap_or_default();
                lens.push(rb.len());
                buffers.extend(rb.iter().cloned());
            }
        }
        let content = json!({
            "status": "ok",
            "records": records,
            "buffer_lens": buffer_lens,
            "result_buffer_lens": result_buffer_lens,
        });
        (content, buffers)
    }

    /// ipyparallel's `resubmit_task`: each request is sent again into the task scheduler
    /// with a fresh msg_id and date (same content and buffers), signed by the hub.
    fn resubmit(&mut self, content: &Value) -> (Value, Vec<Action>) {
        let ids: Vec<&str> = content
            .get("msg_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.records
                    .get(id)
                    .is_none_or(|r| !r.get("header").is_object())
            })
            .collect();
        if !missing.is_empty() {
            let evalue = format!("'No such msg(s): {missing:?}'");
            return (error_content("KeyError", &evalue), Vec::new());
        }
        let mut resubmitted = Map::new();
        let mut out = Vec::new();
        for id in ids {
            let Some(rec) = self.records.get(id) else {
                continue;
            };
            let mut header = rec.get("header").clone();
            let msg_type = header["msg_type"]
                .as_str()
                .unwrap_or("apply_request")
                .to_string();
            let mut msg = self.session.msg(&msg_type, rec.get("content").clone());
            let new_id = msg.header.msg_id.clone();
            header["msg_id"] = json!(new_id);
            header["date"] = json!(msg.header.date);
            let Ok(h) = serde_json::from_value::<Header>(header.clone()) else {
                warn!(msg_id = id, "stored header does not parse; not resubmitted");
                continue;
            };
            msg.header = h;
            msg.buffers = rec.buffers.clone();
            let (metadata, content, buffers) = (
                msg.metadata.clone(),
                msg.content.clone(),
                msg.buffers.clone(),
            );
            self.records
                .add_request(header, metadata, content, buffers, "task", None);
            self.records.set_resubmitted(id, &new_id);
            resubmitted.insert(id.to_string(), json!(new_id));
            out.push(Action::Resubmit(msg));
        }
        (json!({"status": "ok", "resubmitted": resubmitted}), out)
    }

    /// Live engines selected by a request's `targets` (ints; null or absent = all).
    fn targeted(&self, content: &Value) -> Vec<&Engine> {
        let wanted: Option<Vec<u64>> = content
            .get("targets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).collect());
        self.engines
            .values()
            .filter(|e| e.live)
            .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(&(e.id as u64))))
            .collect()
    }

    fn queue_status(&self, content: &Value) -> Value {
        let verbose = content
            .get("verbose")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut out = Map::new();
        out.insert("status".into(), json!("ok"));
        for e in self.targeted(content) {
            let entry = if verbose {
                json!({
                    "queue": e.queue.values().collect::<Vec<_>>(),
                    "completed": e.completed,
                    "tasks": e.tasks.values().collect::<Vec<_>>(),
                })
            } else {
                json!({"queue": e.queue.len(), "completed": e.completed.len(), "tasks": e.tasks.len()})
            };
            out.insert(e.id.to_string(), entry);
        }
        let unassigned = if verbose {
            let mut ids: Vec<(&u64, &String)> =
                self.unassigned.iter().map(|(m, s)| (s, m)).collect();
            ids.sort();
            json!(ids.into_iter().map(|(_, m)| m).collect::<Vec<_>>())
        } else {
            json!(self.unassigned.len())
        };
        out.insert("unassigned".into(), unassigned);
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::RecordEvent;

    fn state() -> HubState {
        HubState::new(
            Session::new(b"key"),
            3000,
            Duration::from_secs(30),
            json!({"interface": "tcp://127.0.0.1"}),
        )
    }

    fn request(msg_type: &str, content: Value) -> Message {
        Session::new(b"key").msg(msg_type, content)
    }

    fn replies(actions: &[Action]) -> Vec<&Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { msg, .. } => Some(msg),
                _ => None,
            })
            .collect()
    }

    fn notifications(actions: &[Action]) -> Vec<&Message> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(msg) => Some(msg),
                _ => None,
            })
            .collect()
    }

    /// Registers and brings live one engine; returns its id.
    fn live_engine(hub: &mut HubState, uuid: &str) -> u64 {
        let acts = hub.handle_query(
            uuid.as_bytes(),
            &request("registration_request", json!({"uuid": uuid})),
            Instant::now(),
        );
        let id = replies(&acts)[0].content["id"].as_u64().unwrap();
        hub.handle_event(HubEvent::NewHeart(uuid.into()));
        id
    }

    #[test]
    fn registration_reply_is_unparented_and_live_only_after_heartbeat() {
        let mut hub = state();
        let acts = hub.handle_query(
            b"e0",
            &request("registration_request", json!({"uuid": "e0"})),
            Instant::now(),
        );
        let reply = replies(&acts)[0];
        assert_eq!(reply.msg_type(), "registration_reply");
        assert_eq!(reply.parent_header, json!({}));
        assert_eq!(reply.content["id"], 0);
        assert_eq!(reply.content["status"], "ok");
        assert_eq!(reply.content["hb_period"], 3000);
        assert_eq!(
            reply.content["connection_info"]["interface"],
            "tcp://127.0.0.1"
        );
        assert!(notifications(&acts).is_empty());
        assert_eq!(hub.pending_count(), 1);

        let acts = hub.handle_event(HubEvent::NewHeart("e0".into()));
        let note = notifications(&acts)[0];
        assert_eq!(note.msg_type(), "registration_notification");
        assert_eq!(note.content, json!({"id": 0, "uuid": "e0"}));
        assert_eq!(
            acts[0],
            Action::Engines(EngineEvent::Up {
                id: 0,
                uuid: "e0".into()
            }),
            "schedulers hear of the engine before clients do"
        );
        assert_eq!(hub.pending_count(), 0);
    }

    #[test]
    fn ids_count_up_are_never_reused_and_duplicates_are_refused() {
        let mut hub = state();
        assert_eq!(live_engine(&mut hub, "a"), 0);
        assert_eq!(live_engine(&mut hub, "b"), 1);
        let acts = hub.handle_query(
            b"x",
            &request("unregistration_request", json!({"id": 0})),
            Instant::now(),
        );
        let note = notifications(&acts)[0];
        assert_eq!(note.msg_type(), "unregistration_notification");
        assert_eq!(note.content, json!({"id": 0, "uuid": "a"}));
        assert!(replies(&acts).is_empty(), "no reply to unregistration");
        assert_eq!(live_engine(&mut hub, "c"), 2);
        let acts = hub.handle_query(
            b"b",
            &request("registration_request", json!({"uuid": "b"})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].content["status"], "error");
        // A requested free id is honoured; a used one is not.
        let acts = hub.handle_query(
            b"d",
            &request("registration_request", json!({"uuid": "d", "id": 7})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].content["id"], 7);
        let acts = hub.handle_query(
            b"e",
            &request("registration_request", json!({"uuid": "e", "id": 0})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].content["id"], 3);
    }

    fn json_parts(values: &[Value]) -> Vec<Vec<u8>> {
        values
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap())
            .collect()
    }

    fn record_request(hub: &mut HubState, msg_id: &str) {
        let mut parts = json_parts(&[
            json!({"msg_id": msg_id, "msg_type": "apply_request", "session": "s",
                   "username": "u", "version": "5.4", "date": format!("2026-01-01T00:00:00.{msg_id}Z")}),
            json!({}),
            json!({"label": null}),
            json!({}),
        ]);
        parts.push(format!("buf-{msg_id}").into_bytes());
        hub.handle_event(HubEvent::Record(RecordEvent::Request {
            queue: "mux",
            client: b"client".to_vec(),
            engine: Some("a".into()),
            parts,
        }));
    }

    fn record_reply(hub: &mut HubState, msg_id: &str) {
        let mut parts = json_parts(&[
            json!({"msg_id": format!("r{msg_id}"), "msg_type": "apply_reply", "date": "2026-01-02T00:00:00Z"}),
            json!({"msg_id": msg_id}),
            json!({"status": "ok", "started": "2026-01-01T00:00:01Z"}),
            json!({"status": "ok"}),
        ]);
        parts.push(format!("res-{msg_id}").into_bytes());
        hub.handle_event(HubEvent::Record(RecordEvent::Reply {
            engine: Some("a".into()),
            parts,
        }));
    }

    fn query(hub: &mut HubState, msg_type: &str, content: Value) -> (Message, Vec<Action>) {
        let acts = hub.handle_query(b"c", &request(msg_type, content), Instant::now());
        (replies(&acts)[0].clone(), acts)
    }

    #[test]
    fn result_db_and_resubmit_queries_use_the_records() {
        let mut hub = state();
        live_engine(&mut hub, "a");
        for m in ["2", "1", "3"] {
            record_request(&mut hub, m);
        }
        record_reply(&mut hub, "1");
        record_reply(&mut hub, "2");
        let (r, _) = query(
            &mut hub,
            "result_request",
            json!({"msg_ids": ["3", "2", "1", "2"], "status_only": false}),
        );
        assert_eq!(r.content["pending"], json!(["3"]));
        assert_eq!(r.content["completed"], json!(["1", "2"]));
        assert_eq!(r.content["1"]["result_content"], json!({"status": "ok"}));
        assert_eq!(r.content["1"]["io"]["stdout"], "");
        assert_eq!(r.buffers, vec![b"res-1".to_vec(), b"res-2".to_vec()]);
        let (r, _) = query(
            &mut hub,
            "result_request",
            json!({"msg_ids": ["1"], "status_only": true}),
        );
        assert_eq!(
            r.content,
            json!({"status": "ok", "pending": [], "completed": ["1"]})
        );
        assert!(r.buffers.is_empty());
        let (r, _) = query(&mut hub, "result_request", json!({"msg_ids": ["nope"]}));
        assert_eq!(r.content["ename"], "KeyError");

        let (r, _) = query(&mut hub, "history_request", json!({}));
        assert_eq!(r.content["history"], json!(["1", "2", "3"]));

        let (r, _) = query(
            &mut hub,
            "db_request",
            json!({"query": {"completed": {"$ne": null}}, "keys": ["msg_id", "engine_uuid", "buffers", "result_buffers"]}),
        );
        assert_eq!(
            r.content["records"],
            json!([{"msg_id": "2", "engine_uuid": "a"}, {"msg_id": "1", "engine_uuid": "a"}])
        );
        assert_eq!(r.content["buffer_lens"], json!([1, 1]));
        assert_eq!(r.content["result_buffer_lens"], json!([1, 1]));
        assert_eq!(
            r.buffers,
            vec![
                b"buf-2".to_vec(),
                b"res-2".to_vec(),
                b"buf-1".to_vec(),
                b"res-1".to_vec()
            ]
        );
        let (r, _) = query(
            &mut hub,
            "db_request",
            json!({"query": {"msg_id": "3"}, "keys": ["msg_id"]}),
        );
        assert_eq!(
            r.content,
            json!({"status": "ok", "records": [{"msg_id": "3"}], "buffer_lens": null, "result_buffer_lens": null})
        );
        let (r, _) = query(
            &mut hub,
            "db_request",
            json!({"query": {"msg_id": {"$where": 1}}}),
        );
        assert_eq!(r.content["status"], "error");

        let (r, acts) = query(&mut hub, "resubmit_request", json!({"msg_ids": ["1"]}));
        assert_eq!(r.content["status"], "ok");
        let new_id = r.content["resubmitted"]["1"].as_str().unwrap().to_string();
        let sent: Vec<&Message> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Resubmit(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].header.msg_id, new_id);
        assert_eq!(sent[0].header.session, "s");
        assert_eq!(sent[0].buffers, vec![b"buf-1".to_vec()]);
        let (r, _) = query(
            &mut hub,
            "result_request",
            json!({"msg_ids": [new_id.clone()]}),
        );
        assert_eq!(r.content["pending"], json!([new_id]));
        let (r, _) = query(
            &mut hub,
            "db_request",
            json!({"query": {"msg_id": "1"}, "keys": ["resubmitted"]}),
        );
        assert_eq!(r.content["records"][0]["resubmitted"], json!(new_id));
        let (r, _) = query(&mut hub, "resubmit_request", json!({"msg_ids": ["nope"]}));
        assert_eq!(r.content["ename"], "KeyError");

        let (r, _) = query(
            &mut hub,
            "purge_request",
            json!({"msg_ids": ["1"], "engine_ids": []}),
        );
        assert_eq!(r.content["status"], "ok");
        let (r, _) = query(&mut hub, "result_request", json!({"msg_ids": ["1"]}));
        assert_eq!(r.content["ename"], "KeyError");
        query(
            &mut hub,
            "purge_request",
            json!({"msg_ids": "all", "engine_ids": []}),
        );
        let (r, _) = query(&mut hub, "history_request", json!({}));
        assert_eq!(
            r.content["history"],
            json!(["3", new_id]),
            "pending records stay"
        );
    }

    #[test]
    fn purge_forgets_finished_requests_only() {
        let mut hub = state();
        live_engine(&mut hub, "a");
        for m in ["m1", "m2", "m3"] {
            record_request(&mut hub, m);
            hub.handle_event(HubEvent::MuxRequest {
                engine: "a".into(),
                msg_id: m.into(),
            });
        }
        for m in ["m1", "m2"] {
            record_reply(&mut hub, m);
            hub.handle_event(HubEvent::MuxReply {
                engine: "a".into(),
                msg_id: m.into(),
            });
        }
        let mut purge = |content: Value| {
            let acts = hub.handle_query(b"c", &request("purge_request", content), Instant::now());
            replies(&acts)[0].content.clone()
        };
        assert_eq!(purge(json!({"msg_ids": ["m1"]}))["status"], "ok");
        assert_eq!(purge(json!({"msg_ids": ["m3"]}))["ename"], "IndexError");
        assert_eq!(purge(json!({"msg_ids": ["nope"]}))["ename"], "KeyError");
        let history = |hub: &mut HubState| {
            let acts =
                hub.handle_query(b"c", &request("history_request", json!({})), Instant::now());
            replies(&acts)[0].content["history"].clone()
        };
        assert_eq!(history(&mut hub), json!(["m2", "m3"]));
        let acts = hub.handle_query(
            b"c",
            &request("purge_request", json!({"msg_ids": "all"})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].content["status"], "ok");
        assert_eq!(history(&mut hub), json!(["m3"]), "pending requests stay");
    }

    #[test]
    fn connection_reply_lists_live_engines_with_string_keys() {
        let mut hub = state();
        live_engine(&mut hub, "a");
        hub.handle_query(
            b"p",
            &request("registration_request", json!({"uuid": "pending"})),
            Instant::now(),
        );
        let req = request("connection_request", json!({}));
        let acts = hub.handle_query(b"client", &req, Instant::now());
        let reply = replies(&acts)[0];
        assert_eq!(reply.msg_type(), "connection_reply");
        assert_eq!(
            reply.content,
            json!({"status": "ok", "engines": {"0": "a"}})
        );
        assert_eq!(reply.parent_header["msg_id"], json!(req.header.msg_id));
    }

    #[test]
    fn queue_counts_follow_relayed_traffic() {
        let mut hub = state();
        live_engine(&mut hub, "a");
        live_engine(&mut hub, "b");
        let ev = |e: &str, m: &str| (e.to_string(), m.to_string());
        let (e, m) = ev("a", "m1");
        hub.handle_event(HubEvent::MuxRequest {
            engine: e.clone(),
            msg_id: m.clone(),
        });
        hub.handle_event(HubEvent::MuxRequest {
            engine: e.clone(),
            msg_id: "m2".into(),
        });
        hub.handle_event(HubEvent::MuxReply {
            engine: e,
            msg_id: m,
        });
        hub.handle_event(HubEvent::TaskSubmitted {
            msg_id: "t1".into(),
        });
        hub.handle_event(HubEvent::TaskSubmitted {
            msg_id: "t2".into(),
        });
        hub.handle_event(HubEvent::TaskAssigned {
            engine: "b".into(),
            msg_id: "t1".into(),
        });
        let acts = hub.handle_query(
            b"c",
            &request("queue_request", json!({"targets": null, "verbose": false})),
            Instant::now(),
        );
        assert_eq!(
            replies(&acts)[0].content,
            json!({"status": "ok", "0": {"queue": 1, "completed": 1, "tasks": 0},
                   "1": {"queue": 0, "completed": 0, "tasks": 1}, "unassigned": 1})
        );
        hub.handle_event(HubEvent::TaskDone {
            engine: "b".into(),
            msg_id: "t1".into(),
        });
        let acts = hub.handle_query(
            b"c",
            &request("queue_request", json!({"targets": [1], "verbose": true})),
            Instant::now(),
        );
        assert_eq!(
            replies(&acts)[0].content,
            json!({"status": "ok", "1": {"queue": [], "completed": ["t1"], "tasks": []},
                   "unassigned": ["t2"]})
        );
    }

    #[test]
    fn shutdown_replies_notifies_and_stops() {
        let mut hub = state();
        let acts = hub.handle_query(
            b"c",
            &request("shutdown_request", json!({})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].msg_type(), "shutdown_reply");
        assert_eq!(notifications(&acts)[0].msg_type(), "shutdown_notification");
        assert_eq!(acts.last(), Some(&Action::Shutdown));
    }

    #[test]
    fn unknown_requests_get_a_not_implemented_reply() {
        let mut hub = state();
        let acts = hub.handle_query(
            b"c",
            &request("become_dask_request", json!({})),
            Instant::now(),
        );
        let reply = replies(&acts)[0];
        assert_eq!(reply.msg_type(), "become_dask_reply");
        assert_eq!(reply.content["status"], "error");
        assert_eq!(reply.content["ename"], "NotImplementedError");
        assert!(hub
            .handle_query(b"c", &request("status", json!({})), Instant::now())
            .is_empty());
    }

    #[test]
    fn stalled_registrations_are_purged_silently_and_dead_hearts_unregister() {
        let mut hub = state();
        let t0 = Instant::now();
        hub.handle_query(
            b"p",
            &request("registration_request", json!({"uuid": "p"})),
            t0,
        );
        live_engine(&mut hub, "a");
        let acts = hub.tick(t0 + Duration::from_secs(31));
        assert!(notifications(&acts).is_empty());
        assert_eq!(hub.pending_count(), 0);
        let acts = hub.handle_event(HubEvent::StoppedHeart("a".into()));
        assert_eq!(
            notifications(&acts)[0].msg_type(),
            "unregistration_notification"
        );
        assert!(acts.contains(&Action::Engines(EngineEvent::Down { uuid: "a".into() })));
    }
}
