//! The hub's state: the engine registry ([`crate::registry`]), queue accounting
//! ([`crate::queues`]) and the task records ([`crate::records`], queried through
//! [`crate::record_queries`]). Plain functions that take a request or an event and return
//! [`Action`]s; the thread in [`crate::hub_loop`] performs them. Tests drive this state
//! without sockets.

use corral_wire::{Header, Message, Session};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod dashboard_view;
#[cfg(test)]
mod restore_tests;

use crate::dask::Requester;
use crate::events::{EngineEvent, HubEvent};
use crate::published::{EngineFacts, HistoryLimits};
use crate::queues::Queues;
use crate::record_queries;
use crate::records::Records;
use crate::registry::{Refused, Registry};
use corral_wire::{error_content, reply_type, Content, QueueRequest, RegistrationRequest};

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
    /// Start (or report) the dask.distributed scheduler (`become_dask_request`); the hub
    /// loop owns that process (see [`crate::dask`]).
    BecomeDask {
        to: Requester,
        scheduler_args: Value,
    },
    /// Stop the dask.distributed scheduler (`stop_distributed_request`).
    StopDask(Requester),
}

fn requester(ident: &[u8], parent: &Header) -> Requester {
    Requester {
        ident: ident.to_vec(),
        parent: parent.clone(),
    }
}

/// Everything the hub knows.
#[derive(Debug)]
pub(crate) struct HubState {
    session: Session,
    hb_period_ms: u64,
    /// The `connection_info` of registration replies (interface and engine ports).
    connection_info: Value,
    registry: Registry,
    queues: Queues,
    /// Task records: requests, replies and output (result/db/resubmit queries).
    records: Records,
    /// Engines unregistered, `(uuid, id, when)`, newest last: readers of published data
    /// are told that an engine died and when. At most [`REMEMBERED_DEATHS`].
    deaths: VecDeque<(String, u32, String)>,
    /// The engine state file (`crate::engine_state`), rewritten whenever an engine goes
    /// live or is unregistered; `None` keeps no file (embedded controllers).
    engine_state: Option<std::path::PathBuf>,
    /// Told to corral engines in `registration_reply` (`corral_restart_grace`, seconds)
    /// when non-zero: how long to wait for this controller to come back.
    restart_grace: Duration,
    /// Told to corral engines in `registration_reply` (`corral_data_preview`) when true:
    /// send previews of published data, for the dashboard.
    data_preview: bool,
}

/// How many dead engines the hub remembers for readers of published data.
const REMEMBERED_DEATHS: usize = 4096;

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
            connection_info,
            registry: Registry::new(registration_timeout),
            queues: Queues::default(),
            records: Records::default(),
            deaths: VecDeque::new(),
            engine_state: None,
            restart_grace: Duration::ZERO,
            data_preview: false,
        }
    }

    /// Tells engines at registration to wait this long for a restarted controller.
    /// Asks corral engines for previews of published data (`corral_data_preview`): only
    /// the dashboard shows them.
    pub(crate) fn with_data_preview(mut self, on: bool) -> Self {
        self.data_preview = on;
        self
    }

    pub(crate) fn with_restart_grace(mut self, grace: Duration) -> Self {
        self.restart_grace = grace;
        self
    }

    /// Keeps the engine registry in the engine state file at `path`.
    pub(crate) fn with_engine_state(mut self, path: std::path::PathBuf) -> Self {
        self.engine_state = Some(path);
        self
    }

    /// `--restore`: takes back an earlier controller's engines under their ids. They go
    /// live on their first heartbeat (no registration: a running engine does not register
    /// again) and are unregistered as dead if silent for `timeout`.
    pub(crate) fn restore_engines(
        &mut self,
        state: &crate::engine_state::EngineState,
        timeout: Duration,
        now: Instant,
    ) {
        self.registry.restore(state, timeout, now);
        for uuid in state.engines.values() {
            self.queues.add_engine(uuid);
        }
        info!(
            engines = state.engines.len(),
            next_id = state.next_id,
            "restored engines; waiting for their heartbeats"
        );
        self.save_engine_state();
    }

    /// Rewrites the engine state file; a failure is logged (the cluster works on, only a
    /// later `--restore` would miss the change).
    pub(crate) fn save_engine_state(&self) {
        let Some(path) = &self.engine_state else {
            return;
        };
        if let Err(error) = crate::engine_state::save(path, &self.registry.state()) {
            warn!(path = %path.display(), %error, "could not write the engine state file");
        }
    }

    /// The task records, for wiring a task database (`db`) before the hub starts.
    pub(crate) fn records_mut(&mut self) -> &mut Records {
        &mut self.records
    }

    /// Sets how much published-data history each task record keeps per engine.
    pub(crate) fn with_data_history(mut self, limits: HistoryLimits) -> Self {
        self.records.set_data_history(limits);
        self
    }

    /// What a reader of published data is told about an engine.
    fn engine_facts(&self, uuid: &str) -> EngineFacts {
        if let Some(id) = self.registry.id_of(uuid) {
            let alive = self.registry.get(id).is_some_and(|e| e.live);
            return EngineFacts {
                id: Some(id),
                alive,
                died: None,
            };
        }
        match self.deaths.iter().rev().find(|(u, _, _)| u == uuid) {
            Some((_, id, when)) => EngineFacts {
                id: Some(*id),
                alive: false,
                died: Some(when.clone()),
            },
            None => EngineFacts {
                id: None,
                alive: false,
                died: None,
            },
        }
    }

    /// Registrations still waiting for their first heartbeat.
    pub(crate) fn pending_count(&self) -> usize {
        self.registry.pending_count()
    }

    pub(crate) fn reply(
        &self,
        ident: &[u8],
        parent: &Header,
        msg_type: &str,
        content: Value,
    ) -> Action {
        self.reply_with(ident, parent, msg_type, content, Vec::new())
    }

    fn reply_with(
        &self,
        ident: &[u8],
        parent: &Header,
        msg_type: &str,
        content: Value,
        buffers: Vec<Vec<u8>>,
    ) -> Action {
        let mut msg = self.session.msg(msg_type, content).with_parent(parent);
        msg.buffers = buffers;
        Action::Reply {
            ident: ident.to_vec(),
            msg,
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
        if msg.msg_type() == "data_request" {
            // corral's extension (PROTOCOL.md §12.2): no stock type to read it as.
            let facts = |uuid: &str| self.engine_facts(uuid);
            let (content, buffers) = record_queries::data(&self.records, &msg.content, &facts);
            return vec![self.reply_with(ident, parent, "data_reply", content, buffers)];
        }
        match Content::read(msg.msg_type(), &msg.content) {
            Content::RegistrationRequest(request) => self.register(ident, &request, now),
            Content::UnregistrationRequest(request) => match request.id {
                Some(id) => self.unregister(id as u32, "unregistration_request"),
                None => {
                    warn!(content = %msg.content, "unregistration_request without an id");
                    Vec::new()
                }
            },
            Content::ConnectionRequest(_) => {
                let engines: Map<String, Value> = self
                    .registry
                    .live()
                    .map(|e| (e.id.to_string(), Value::String(e.uuid.clone())))
                    .collect();
                let content = json!({"status": "ok", "engines": engines});
                vec![self.reply(ident, parent, "connection_reply", content)]
            }
            Content::QueueRequest(request) => {
                let content = self.queue_status(&request);
                vec![self.reply(ident, parent, "queue_reply", content)]
            }
            Content::LoadRequest(request) => {
                let mut out = Map::new();
                out.insert("status".into(), json!("ok"));
                for (id, uuid) in self.targeted(request.targets.as_deref()) {
                    out.insert(id.to_string(), json!(self.queues.load(&uuid)));
                }
                vec![self.reply(ident, parent, "load_reply", Value::Object(out))]
            }
            Content::HistoryRequest(_) => {
                let content = json!({"status": "ok", "history": self.records.history()});
                vec![self.reply(ident, parent, "history_reply", content)]
            }
            Content::ResultRequest(request) => {
                let pending = self.queues.pending_ids();
                let (content, buffers) = record_queries::results(&self.records, &pending, &request);
                vec![self.reply_with(ident, parent, "result_reply", content, buffers)]
            }
            Content::DbRequest(request) => {
                let facts = |uuid: &str| self.engine_facts(uuid);
                let (content, buffers) = record_queries::db_query(&self.records, &request, &facts);
                vec![self.reply_with(ident, parent, "db_reply", content, buffers)]
            }
            Content::ResubmitRequest(request) => {
                let (content, msgs) =
                    record_queries::resubmit(&mut self.records, &self.session, &request);
                let mut out = vec![self.reply(ident, parent, "resubmit_reply", content)];
                out.extend(msgs.into_iter().map(Action::Resubmit));
                out
            }
            Content::PurgeRequest(request) => {
                let engines: Vec<String> = request
                    .engine_ids
                    .iter()
                    .flatten()
                    .filter_map(|&id| self.registry.get(id as u32))
                    .map(|e| e.uuid.clone())
                    .collect();
                let content =
                    record_queries::purge(&mut self.records, &mut self.queues, &engines, &request);
                vec![self.reply(ident, parent, "purge_reply", content)]
            }
            Content::ShutdownRequest(_) => {
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
            Content::Unknown { msg_type, content } if msg_type == "become_dask_request" => {
                vec![Action::BecomeDask {
                    to: requester(ident, parent),
                    scheduler_args: content.get("scheduler_args").cloned().unwrap_or_default(),
                }]
            }
            Content::Unknown { msg_type, .. } if msg_type == "stop_distributed_request" => {
                vec![Action::StopDask(requester(ident, parent))]
            }
            // Engine control requests and unknown ones: corral's hub implements neither.
            other if other.message_type().ends_with("_request") => {
                let other = other.message_type();
                warn!(msg_type = other, "unsupported hub request");
                let evalue = format!("corral's hub does not implement {other}");
                let content = error_content("NotImplementedError", &evalue);
                vec![self.reply(ident, parent, &reply_type(other), content)]
            }
            other => {
                warn!(
                    msg_type = other.message_type(),
                    "ignored non-request message on the query socket"
                );
                Vec::new()
            }
        }
    }

    fn register(
        &mut self,
        ident: &[u8],
        request: &RegistrationRequest,
        now: Instant,
    ) -> Vec<Action> {
        let Some(uuid) = request.uuid.as_deref() else {
            warn!(content = %request.to_content(), "registration_request without a uuid");
            return vec![self.registration_error(ident, "registration_request has no uuid")];
        };
        let requested = request.id.map(|i| i as u32);
        let (id, beating) = match self.registry.register(uuid, requested, now) {
            Ok(r) => r,
            Err(Refused::UuidInUse) => {
                warn!(uuid, "registration with a uuid already in use");
                let evalue = format!("uuid {uuid:?} already in use");
                return vec![self.registration_error(ident, &evalue)];
            }
        };
        self.queues.add_engine(uuid);
        info!(engine_id = id, uuid, "registration requested");
        let mut content = json!({
            "id": id,
            "status": "ok",
            "hb_period": self.hb_period_ms,
            "connection_info": self.connection_info,
        });
        if !self.restart_grace.is_zero() {
            // corral's extension (PROTOCOL.md §4.4); stock engines ignore unknown keys.
            content["corral_restart_grace"] = json!(self.restart_grace.as_secs_f64());
        }
        if self.data_preview {
            // Only a dashboard reads previews: engines build none for a controller without.
            content["corral_data_preview"] = json!(true);
        }
        // Not parented, exactly like ipyparallel.
        let mut out = vec![Action::Reply {
            ident: ident.to_vec(),
            msg: self.session.msg("registration_reply", content),
        }];
        if beating {
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
        let Some(e) = self.registry.make_live(id) else {
            return Vec::new();
        };
        if e.restored {
            info!(engine_id = id, uuid = %e.uuid, "restored engine is back");
        } else {
            info!(engine_id = id, uuid = %e.uuid, "engine is live");
        }
        let uuid = e.uuid.clone();
        self.save_engine_state();
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
        let Some(e) = self.registry.remove(id) else {
            warn!(engine_id = id, why, "unregistration of an unknown engine");
            return Vec::new();
        };
        let mut stranded = self.queues.remove_engine(&e.uuid);
        if e.restored {
            // Tasks sent to it before the restart: only the restored records know them.
            for msg_id in self.unfinished_on(&e.uuid) {
                if !stranded.contains(&msg_id) {
                    stranded.push(msg_id);
                }
            }
        }
        for msg_id in stranded {
            self.record_stranded(id, &e.uuid, &msg_id);
        }
        info!(engine_id = id, uuid = %e.uuid, why, "engine unregistered");
        self.save_engine_state();
        self.deaths
            .push_back((e.uuid.clone(), id, corral_wire::iso_now()));
        if self.deaths.len() > REMEMBERED_DEATHS {
            self.deaths.pop_front();
        }
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

    /// Restored records of tasks on engine `uuid` that never finished.
    fn unfinished_on(&self, uuid: &str) -> Vec<String> {
        self.records
            .unfinished()
            .into_iter()
            .filter(|(_, engine)| engine.as_deref() == Some(uuid))
            .map(|(msg_id, _)| msg_id)
            .collect()
    }

    /// Records an `EngineError` result for a direct request its engine never answered, as
    /// ipyparallel's hub does for stranded messages, so that `result_request`s and
    /// `db_request`s of other clients see it finished instead of pending forever.
    fn record_stranded(&mut self, id: u32, uuid: &str, msg_id: &str) {
        let evalue = format!("Engine {id} died while running task '{msg_id}'");
        self.record_failure(msg_id, Some(uuid), "EngineError", &evalue);
    }

    /// `--restore`: fails the restored tasks that can no longer finish, so that a client
    /// asking for them gets an error instead of waiting forever: those still waiting in
    /// the scheduler when the controller stopped (its queue is not kept), and those on an
    /// engine that is not taken back. Tasks on restored engines wait for them: their
    /// replies arrive, or they fail when the engine does not come back (`unregister`).
    pub(crate) fn fail_orphaned_tasks(&mut self) {
        let mut failed = 0;
        for (msg_id, engine) in self.records.unfinished() {
            match engine {
                Some(uuid) if self.registry.id_of(&uuid).is_some() => continue,
                Some(uuid) => {
                    let evalue = format!(
                        "Engine {uuid:?}, which ran task '{msg_id}', was not taken back when \
                         the controller restarted"
                    );
                    self.record_failure(&msg_id, Some(&uuid), "EngineError", &evalue);
                }
                None => {
                    let evalue = format!(
                        "The controller restarted before task '{msg_id}' was sent to an \
                         engine; submit it again"
                    );
                    self.record_failure(&msg_id, None, "TaskAborted", &evalue);
                }
            }
            failed += 1;
        }
        if failed > 0 {
            warn!(
                tasks = failed,
                "restored tasks that can no longer finish: failed"
            );
        }
    }

    /// Records an error result for `msg_id`, as if `engine` (if any) had answered it.
    fn record_failure(&mut self, msg_id: &str, engine: Option<&str>, ename: &str, evalue: &str) {
        let request_type = self
            .records
            .get(msg_id)
            .and_then(|r| r.get("header")["msg_type"].as_str().map(str::to_string))
            .unwrap_or_else(|| "apply_request".into());
        let reply = self
            .session
            .msg(&reply_type(&request_type), error_content(ename, evalue));
        let mut metadata = json!({"status": "error", "dependencies_met": true});
        if let Some(uuid) = engine {
            metadata["engine"] = json!(uuid);
        }
        let parts = [
            serde_json::to_value(&reply.header).unwrap_or_default(),
            json!({"msg_id": msg_id}),
            metadata,
            reply.content,
        ];
        let parts = parts
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap_or_default().into())
            .collect();
        let event = crate::events::RecordEvent::Reply {
            engine: engine.map(str::to_string),
            parts,
        };
        self.records.apply(event, &corral_wire::iso_now());
    }

    /// Handles one event from another controller thread.
    pub(crate) fn handle_event(&mut self, event: HubEvent) -> Vec<Action> {
        match event {
            HubEvent::NewHeart(uuid) => match self.registry.heart_started(&uuid) {
                Some(id) => self.make_live(id),
                None => Vec::new(),
            },
            HubEvent::StoppedHeart(uuid) => match self.registry.heart_stopped(&uuid) {
                Some(id) => self.unregister(id, "heart failure"),
                None => Vec::new(),
            },
            HubEvent::EngineShutdown(uuid) => match self.registry.id_of(&uuid) {
                Some(id) => self.unregister(id, "engine shutdown_reply"),
                None => Vec::new(),
            },
            HubEvent::Record(event) => {
                self.records.apply(event, &corral_wire::iso_now());
                Vec::new()
            }
            HubEvent::MuxRequest { engine, msg_id } => {
                self.records.set_engine(&msg_id, &engine);
                self.queues.mux_request(&engine, msg_id);
                Vec::new()
            }
            HubEvent::MuxReply { engine, msg_id } => {
                self.queues.mux_reply(&engine, msg_id);
                Vec::new()
            }
            HubEvent::TaskSubmitted { msg_id } => {
                self.queues.task_submitted(msg_id);
                Vec::new()
            }
            HubEvent::TaskAssigned { engine, msg_id } => {
                self.records.set_engine(&msg_id, &engine);
                self.queues.task_assigned(&engine, msg_id);
                Vec::new()
            }
            HubEvent::TaskDone { engine, msg_id } => {
                self.queues.task_done(&engine, msg_id);
                Vec::new()
            }
            HubEvent::TaskFailed { engine, msg_id } => {
                self.queues.task_failed(engine.as_deref(), &msg_id);
                Vec::new()
            }
        }
    }

    /// Logs registrations still waiting for a heartbeat past the registration timeout.
    /// Unlike ipyparallel's `purge_stalled` they are never dropped: an engine slow to its
    /// first heartbeat (a loaded machine) goes live whenever its heart answers.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        for e in self.registry.newly_late(now) {
            warn!(
                engine_id = e.id,
                uuid = %e.uuid,
                "no heartbeat yet, past the registration timeout; still waiting"
            );
        }
        let mut out = Vec::new();
        for id in self.registry.restored_silent(now) {
            warn!(
                engine_id = id,
                "restored engine did not come back (no heartbeat): it died while the controller was away"
            );
            out.extend(self.unregister(id, "restored engine silent"));
        }
        out
    }

    /// Live engines (id, uuid) selected by a request's `targets` (`None` = all).
    fn targeted(&self, wanted: Option<&[u64]>) -> Vec<(u32, String)> {
        self.registry
            .live()
            .filter(|e| wanted.is_none_or(|w| w.contains(&(e.id as u64))))
            .map(|e| (e.id, e.uuid.clone()))
            .collect()
    }

    fn queue_status(&self, request: &QueueRequest) -> Value {
        let verbose = request.verbose;
        let mut out = Map::new();
        out.insert("status".into(), json!("ok"));
        for (id, uuid) in self.targeted(request.targets.as_deref()) {
            out.insert(id.to_string(), self.queues.status(&uuid, verbose));
        }
        out.insert("unassigned".into(), self.queues.unassigned_status(verbose));
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

    mod generated {
        use super::*;
        use proptest::prelude::*;

        const KINDS: [&str; 17] = [
            "registration_request",
            "unregistration_request",
            "connection_request",
            "queue_request",
            "load_request",
            "history_request",
            "result_request",
            "db_request",
            "resubmit_request",
            "purge_request",
            "shutdown_request",
            "become_dask_request",
            "stop_distributed_request",
            "frobnicate_request",
            "apply_request",
            "status",
            "",
        ];
        const FIELDS: [&str; 12] = [
            "uuid",
            "id",
            "targets",
            "verbose",
            "msg_ids",
            "engine_ids",
            "status_only",
            "query",
            "keys",
            "$ne",
            "completed",
            "msg_id",
        ];

        /// Any JSON, with keys the hub reads over-represented.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                prop_oneof![
                    Just("all".to_string()),
                    "[a-z$]{0,6}".prop_map(String::from)
                ]
                .prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::vec(
                        (
                            prop::sample::select(FIELDS.to_vec()).prop_map(String::from),
                            inner
                        ),
                        0..6
                    )
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any signed request, however ill-formed its content, gets exactly one reply
            /// of the matching type (or none for unregistration and non-requests), and the
            /// hub keeps serving.
            #[test]
            fn every_request_gets_one_well_typed_reply_or_a_logged_drop(
                queries in prop::collection::vec(
                    (prop::sample::select(KINDS.to_vec()), json()), 1..12),
            ) {
                let mut hub = state();
                live_engine(&mut hub, "a");
                record_request(&mut hub, "1");
                record_reply(&mut hub, "1");
                for (kind, content) in queries {
                    let acts = hub.handle_query(b"c", &request(kind, content), Instant::now());
                    let got = replies(&acts);
                    match kind {
                        "unregistration_request" | "apply_request" | "status" | "" => {
                            prop_assert!(got.len() <= usize::from(kind == "apply_request"));
                        }
                        // Answered by the hub loop's scheduler process (crate::dask).
                        "become_dask_request" | "stop_distributed_request" => {
                            prop_assert!(got.is_empty());
                            let handled = matches!(
                                acts.as_slice(),
                                [Action::BecomeDask { .. } | Action::StopDask(_)]
                            );
                            prop_assert!(handled, "{acts:?}");
                        }
                        _ if kind.ends_with("_request") => {
                            prop_assert_eq!(got.len(), 1);
                            prop_assert_eq!(got[0].msg_type(), reply_type(kind));
                            prop_assert!(got[0].content["status"].is_string());
                        }
                        _ => prop_assert!(got.is_empty()),
                    }
                }
                let acts = hub.handle_query(
                    b"c", &request("connection_request", json!({})), Instant::now());
                prop_assert_eq!(replies(&acts)[0].content["status"].as_str(), Some("ok"));
            }
        }
    }

    #[test]
    fn a_controller_with_a_dashboard_asks_engines_for_data_previews() {
        let mut hub = state().with_data_preview(true);
        let acts = hub.handle_query(
            b"e0",
            &request("registration_request", json!({"uuid": "e0"})),
            Instant::now(),
        );
        assert_eq!(replies(&acts)[0].content["corral_data_preview"], true);
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
        assert!(
            reply.content.get("corral_data_preview").is_none(),
            "no dashboard: engines are not asked for previews"
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
            parts: parts.into_iter().map(bytes::Bytes::from).collect(),
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
            parts: parts.into_iter().map(bytes::Bytes::from).collect(),
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
    fn a_dead_engines_direct_requests_are_recorded_as_engine_errors() {
        let mut hub = state();
        live_engine(&mut hub, "a");
        record_request(&mut hub, "7");
        hub.handle_event(HubEvent::MuxRequest {
            engine: "a".into(),
            msg_id: "7".into(),
        });
        let (r, _) = query(&mut hub, "result_request", json!({"msg_ids": ["7"]}));
        assert_eq!(r.content["pending"], json!(["7"]));
        hub.handle_event(HubEvent::StoppedHeart("a".into()));
        let (r, _) = query(&mut hub, "result_request", json!({"msg_ids": ["7"]}));
        assert_eq!(r.content["completed"], json!(["7"]));
        let result = &r.content["7"]["result_content"];
        assert_eq!(result["ename"], "EngineError");
        assert!(result["evalue"].as_str().unwrap().contains("died"));
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
    fn dask_requests_go_to_the_hub_loops_scheduler_process() {
        let mut hub = state();
        let req = request(
            "become_dask_request",
            json!({"scheduler_args": {"port": 1}}),
        );
        let acts = hub.handle_query(b"c", &req, Instant::now());
        assert_eq!(
            acts,
            vec![Action::BecomeDask {
                to: requester(b"c", &req.header),
                scheduler_args: json!({"port": 1})
            }]
        );
        let req = request("stop_distributed_request", json!({}));
        let acts = hub.handle_query(b"c", &req, Instant::now());
        assert_eq!(acts, vec![Action::StopDask(requester(b"c", &req.header))]);
    }

    #[test]
    fn unknown_requests_get_a_not_implemented_reply() {
        let mut hub = state();
        let acts = hub.handle_query(
            b"c",
            &request("frobnicate_request", json!({})),
            Instant::now(),
        );
        let reply = replies(&acts)[0];
        assert_eq!(reply.msg_type(), "frobnicate_reply");
        assert_eq!(reply.content["status"], "error");
        assert_eq!(reply.content["ename"], "NotImplementedError");
        assert!(hub
            .handle_query(b"c", &request("status", json!({})), Instant::now())
            .is_empty());
    }

    #[test]
    fn late_registrations_are_kept_until_their_heart_beats_and_dead_hearts_unregister() {
        let mut hub = state();
        let t0 = Instant::now();
        hub.handle_query(
            b"p",
            &request("registration_request", json!({"uuid": "p"})),
            t0,
        );
        live_engine(&mut hub, "a");
        let acts = hub.tick(t0 + Duration::from_secs(31));
        assert!(acts.is_empty(), "a late registration is not dropped");
        assert_eq!(
            hub.pending_count(),
            0,
            "no fast pings for a late registration"
        );
        assert!(hub.tick(t0 + Duration::from_secs(600)).is_empty());
        let acts = hub.handle_event(HubEvent::NewHeart("p".into()));
        let note = notifications(&acts)[0];
        assert_eq!(note.msg_type(), "registration_notification");
        assert_eq!(note.content["uuid"], "p");
        let acts = hub.handle_event(HubEvent::StoppedHeart("a".into()));
        assert_eq!(
            notifications(&acts)[0].msg_type(),
            "unregistration_notification"
        );
        assert!(acts.contains(&Action::Engines(EngineEvent::Down { uuid: "a".into() })));
    }
}
