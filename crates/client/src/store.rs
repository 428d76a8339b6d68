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
//! * **Controller loss**: once the controller is declared lost, nothing more will arrive;
//!   the store remembers why, and callers turn every wait on an unfinished task into
//!   [`crate::ClientError::ControllerLost`].
//! * **Completion signal**: a caller may *watch* tasks; each becomes ready once and is then
//!   reported by [`Store::take_completed`], which looks only at the watched tasks that a
//!   message touched (and those holding a reply without their idle), never at them all.
//!
//! Everything kept is bounded by what the caller asked for: Hub replies are kept only
//! while someone waits for them, dead engines' ids only up to [`MAX_DEAD_ENGINES`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_wire::{
    iso_now, new_id, BroadcastMetadata, DataMessageContent, EngineNotification, ErrorContent,
    Header, HeaderFields, Message, ReplyOutcome, SenderMetadata, StatusContent, StreamContent,
    PROTOCOL_VERSION,
};
use serde_json::{json, Value};

/// A reply as it arrived (or as synthesized), kept raw for the caller to decode.
#[derive(Debug, Clone)]
pub struct Reply {
    pub header: Value,
    pub content: Value,
    pub metadata: Value,
    pub buffers: Vec<Vec<u8>>,
}

/// One `data_message` not yet read: its keys (for conflation), its header date (the
/// engine's clock: a reader that also fetched the controller's snapshot skips updates it
/// already holds) and its payload frames.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingData {
    pub keys: Vec<String>,
    pub published: String,
    pub buffers: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct TaskRecord {
    /// Engine uuid: the target for direct requests; learned from IOPub or the reply
    /// for load-balanced ones.
    pub engine: Option<String>,
    /// Our request header's date.
    pub submitted: String,
    /// Shared, so a caller reading it does not copy its JSON under the store's lock.
    pub reply: Option<Arc<Reply>>,
    reply_at: Option<Instant>,
    /// `status: idle` parented to this request has arrived (or nothing more will come).
    pub idle: bool,
    last_iopub: Option<Instant>,
    released_without_idle: bool,
    /// An engine said `status: busy` for it: the task has started.
    pub started: bool,
    pub stdout: String,
    pub stderr: String,
    /// `execute_input`, `execute_result`, `display_data`, `error`: `{msg_type, content}`.
    pub outputs: Vec<Value>,
    pub pending: Vec<PendingData>,
    /// How many `data_message`s arrived in total (conflated or not).
    pub data_received: u64,
    /// How many of those were replaced by a later update before anyone read them.
    pub data_conflated: u64,
    /// Another client's task (or one from before a reconnect) that we follow: its IOPub
    /// is filed here whatever its session, and no reply will come on our sockets.
    pub foreign: bool,
    /// A coalesced broadcast (`BroadcastView(is_coalescing=True)`): the per-engine msg_ids
    /// whose IOPub must be drained before its one combined reply is released.
    pub leaves: Vec<String>,
    /// For one engine's copy of a coalesced broadcast: the request whose reply it shares
    /// (it gets no reply of its own; it is done once its engine says idle).
    pub coalesced_into: Option<String>,
}

impl TaskRecord {
    /// The readiness rule (see the module docs); `msg_id` only names the task in the log.
    fn is_ready(&mut self, msg_id: &str, release_after: Duration, now: Instant) -> bool {
        if self.coalesced_into.is_some() {
            return self.idle;
        }
        let Some(reply_at) = self.reply_at else {
            return false;
        };
        if self.idle {
            return true;
        }
        let quiet_since = self.last_iopub.map_or(reply_at, |t| t.max(reply_at));
        if now.duration_since(quiet_since) >= release_after {
            if !self.released_without_idle {
                self.released_without_idle = true;
                tracing::warn!(%msg_id, "no status idle after the reply; releasing the result anyway");
            }
            return true;
        }
        false
    }
}

/// How many dead engines' ids are remembered (to name them in errors and metadata).
pub const MAX_DEAD_ENGINES: usize = 4096;

/// How much the store holds. Every count returns to its baseline once the caller's tasks
/// are finished and forgotten; the soak test and diagnostics read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Task records (finished and outstanding).
    pub tasks: usize,
    /// Slots allocated for task records: shrinks again after a large purge.
    pub task_capacity: usize,
    /// Published-data updates not read yet, over all tasks.
    pub pending_data: usize,
    pub live_engines: usize,
    /// Live engines plus the remembered dead ones (at most [`MAX_DEAD_ENGINES`]).
    pub known_engines: usize,
    pub hub_waiting: usize,
    pub hub_replies: usize,
    /// Tasks someone waits to be told about (a Future's callback or waiter).
    pub watched: usize,
}

/// Task-map slots kept however few tasks remain: shrinking below this saves nothing and
/// would reallocate on every batch of a steady workload.
const MIN_TASK_CAPACITY: usize = 4096;

/// Everything the client knows, keyed by msg_id.
#[derive(Debug)]
pub struct Store {
    session: String,
    tasks: HashMap<String, TaskRecord>,
    /// Live engines, id → uuid.
    engines: BTreeMap<i64, String>,
    /// Every engine seen, uuid → id: the live ones and the last [`MAX_DEAD_ENGINES`] dead.
    engine_ids: HashMap<String, i64>,
    /// Dead engines' uuids, oldest first, so `engine_ids` forgets the oldest.
    dead_engines: VecDeque<String>,
    /// Hub queries someone waits for, and the replies that arrived for them.
    hub_waiting: HashSet<String>,
    hub_replies: HashMap<String, Message>,
    /// Set when the Hub announces `shutdown_notification`.
    hub_shut_down: bool,
    /// A message from an engine we do not know arrived: the engine list needs a re-sync.
    unknown_engine_seen: bool,
    /// The controller is considered gone.
    lost: bool,
    /// How long a reply waits for its idle before being released anyway.
    pub release_after: Duration,
    /// Tasks whose readiness someone wants to be told about, until it is reported.
    watched: HashSet<String>,
    /// Watched tasks whose state changed since the last [`Store::take_completed`].
    touched: Vec<String>,
    /// Watched tasks with a reply but no idle yet: the quiet-period rule can make them
    /// ready without any message, so each report looks at them again.
    awaiting_idle: HashSet<String>,
}

impl Store {
    pub fn new(session: String) -> Self {
        Store {
            session,
            tasks: HashMap::new(),
            engines: BTreeMap::new(),
            engine_ids: HashMap::new(),
            dead_engines: VecDeque::new(),
            hub_waiting: HashSet::new(),
            hub_replies: HashMap::new(),
            hub_shut_down: false,
            unknown_engine_seen: false,
            lost: false,
            release_after: Duration::from_secs(5),
            watched: HashSet::new(),
            touched: Vec::new(),
            awaiting_idle: HashSet::new(),
        }
    }

    /// Records a live engine; true if it was not known as live before.
    pub fn add_engine(&mut self, id: i64, uuid: String) -> bool {
        self.engine_ids.insert(uuid.clone(), id);
        self.engines.insert(id, uuid).is_none()
    }

    /// Adds the engines of a Hub engine list that we do not know yet (a re-sync after a
    /// notification may have been missed); returns how many were new. Never removes: a
    /// notification that overtook the Hub's reply may already have added a newer engine.
    pub fn merge_engines(&mut self, engines: impl IntoIterator<Item = (i64, String)>) -> usize {
        let mut added = 0;
        for (id, uuid) in engines {
            if self.dead_engines.contains(&uuid) {
                continue; // its unregistration already arrived
            }
            if !self.engines.contains_key(&id) && self.add_engine(id, uuid) {
                added += 1;
            }
        }
        added
    }

    fn remove_engine(&mut self, id: i64, uuid: &str) {
        self.engines.remove(&id);
        self.dead_engines.push_back(uuid.to_owned());
        if self.dead_engines.len() > MAX_DEAD_ENGINES {
            if let Some(old) = self.dead_engines.pop_front() {
                self.engine_ids.remove(&old);
            }
        }
    }

    /// Live engines, id → uuid.
    pub fn engines(&self) -> &BTreeMap<i64, String> {
        &self.engines
    }

    /// The id of a live or recently dead engine.
    pub fn engine_id(&self, uuid: &str) -> Option<i64> {
        self.engine_ids.get(uuid).copied()
    }

    pub fn task(&self, msg_id: &str) -> Option<&TaskRecord> {
        self.tasks.get(msg_id)
    }

    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn hub_shut_down(&self) -> bool {
        self.hub_shut_down
    }

    /// True once after a message named an engine we do not know.
    pub fn take_unknown_engine_seen(&mut self) -> bool {
        std::mem::take(&mut self.unknown_engine_seen)
    }

    fn note_engine(&mut self, uuid: Option<&str>) {
        if let Some(uuid) = uuid {
            if !self.engine_ids.contains_key(uuid) {
                self.unknown_engine_seen = true;
            }
        }
    }

    /// Someone is about to wait for the Hub's reply to `msg_id`.
    pub fn expect_hub_reply(&mut self, msg_id: String) {
        self.hub_waiting.insert(msg_id);
    }

    /// Files a Hub reply; kept only if someone still waits for it (a reply that arrives
    /// after its wait timed out is dropped, so late replies never pile up).
    pub fn on_hub_reply(&mut self, msg: Message) {
        match msg.parent_msg_id() {
            Some(id) if self.hub_waiting.contains(id) => {
                self.hub_replies.insert(id.to_owned(), msg);
            }
            parent => tracing::debug!(
                ?parent,
                msg_type = msg.msg_type(),
                "Hub reply nobody waits for dropped"
            ),
        }
    }

    /// Takes the reply to `msg_id` if it arrived; the wait for it ends either way when
    /// `give_up` is set.
    pub fn take_hub_reply(&mut self, msg_id: &str, give_up: bool) -> Option<Message> {
        let reply = self.hub_replies.remove(msg_id);
        if reply.is_some() || give_up {
            self.hub_waiting.remove(msg_id);
        }
        reply
    }

    /// How many Hub replies are held or awaited (for tests of the bound).
    pub fn hub_pending(&self) -> usize {
        self.hub_waiting.len() + self.hub_replies.len()
    }

    /// The controller is gone: remember it, and stop waiting for idles that cannot come
    /// (a task whose reply arrived is finished). Returns the msg_ids left without a reply.
    pub fn controller_lost(&mut self) -> Vec<String> {
        let mut unfinished = Vec::new();
        for (msg_id, task) in self.tasks.iter_mut() {
            if task.reply.is_some() {
                task.idle = true;
            } else {
                unfinished.push(msg_id.clone());
            }
        }
        self.hub_replies.clear();
        self.hub_waiting.clear();
        self.lost = true;
        unfinished
    }

    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Tasks whose request could not be sent get an error reply saying why.
    pub fn fail_unsent(&mut self, msg_ids: &[String], why: &str, now: Instant) {
        for msg_id in msg_ids {
            let Some(task) = self.tasks.get_mut(msg_id) else {
                continue;
            };
            if task.reply.is_some() {
                continue;
            }
            let evalue = format!("task '{msg_id}' was not sent: {why}");
            task.reply = Some(Arc::new(local_error_reply(
                "SendError",
                &evalue,
                json!({}),
                None,
            )));
            task.reply_at = Some(now);
            task.idle = true;
            self.touch(msg_id);
        }
    }

    /// The controller cut this client's IOPub off (it stopped reading for too long, see
    /// docs/PROTOCOL.md §11): output and data of the `lost` tasks (every task with `None`)
    /// were dropped. Each of them not finished yet fails with `OutputLost`, so no result is
    /// released with a silent gap in its output. Returns the msg_ids that failed.
    pub fn output_lost(&mut self, lost: Option<&[String]>, why: &str, now: Instant) -> Vec<String> {
        let ids: Vec<String> = match lost {
            Some(ids) => ids.to_vec(),
            None => self.tasks.keys().cloned().collect(),
        };
        let mut failed = Vec::new();
        for msg_id in ids {
            let Some(task) = self.tasks.get_mut(&msg_id) else {
                continue;
            };
            if task.idle {
                continue;
            }
            let evalue = format!("output of task '{msg_id}' was lost: {why}");
            let engine = task.engine.clone();
            task.reply = Some(Arc::new(local_error_reply(
                "OutputLost",
                &evalue,
                json!({}),
                engine.as_deref(),
            )));
            task.reply_at = Some(now);
            task.idle = true;
            self.touch(&msg_id);
            failed.push(msg_id);
        }
        failed
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

    /// Records a coalesced broadcast before it is sent: `original` (which gets the one
    /// combined reply) and each engine's copy `(msg_id, engine uuid)`, whose IOPub is
    /// filed under it.
    pub fn add_coalesced(
        &mut self,
        original: String,
        leaves: Vec<(String, String)>,
        submitted: String,
    ) {
        for (msg_id, uuid) in &leaves {
            self.tasks.insert(
                msg_id.clone(),
                TaskRecord {
                    engine: Some(uuid.clone()),
                    submitted: submitted.clone(),
                    coalesced_into: Some(original.clone()),
                    ..TaskRecord::default()
                },
            );
        }
        self.tasks.insert(
            original,
            TaskRecord {
                submitted,
                leaves: leaves.into_iter().map(|(msg_id, _)| msg_id).collect(),
                ..TaskRecord::default()
            },
        );
    }

    /// Follows tasks this client did not send (or sent before it reconnected): their
    /// IOPub (output, published data, status) is filed from now on. Tasks already known
    /// are left as they are. Forgetting them ends it.
    pub fn follow(&mut self, msg_ids: &[String]) {
        for msg_id in msg_ids {
            self.tasks
                .entry(msg_id.clone())
                .or_insert_with(|| TaskRecord {
                    foreign: true,
                    ..TaskRecord::default()
                });
        }
    }

    /// Files a reply from mux, task, broadcast or control.
    pub fn on_reply(&mut self, msg: Message, now: Instant) {
        let coalesced = BroadcastMetadata::read(&msg.metadata);
        let parent = if coalesced.is_coalescing {
            coalesced.original_msg_id
        } else {
            msg.parent_msg_id().map(str::to_owned)
        };
        let Some(msg_id) = parent else {
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
        let engine = SenderMetadata::read(&msg.metadata).engine;
        self.note_engine(engine.as_deref());
        let task = self.tasks.get_mut(&msg_id).expect("checked above");
        // A coalesced broadcast's one reply (`leaves` set) is filed as it is: readiness
        // waits on the engines' copies, not on this reply's engine or status.
        if task.leaves.is_empty() {
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
            let outcome = ReplyOutcome::read(&msg.content);
            if !is_task_reply || outcome.status.as_deref() == Some("aborted") {
                task.idle = true;
            }
            // An EngineError is written by a scheduler for an engine that died: that engine
            // publishes nothing more, whether or not its death was announced yet.
            if outcome.ename.as_deref() == Some("EngineError") {
                task.idle = true;
            }
        }
        task.reply = Some(Arc::new(Reply {
            header: serde_json::to_value(&msg.header).expect("headers serialize"),
            content: msg.content,
            metadata: msg.metadata,
            buffers: msg.buffers,
        }));
        task.reply_at = Some(now);
        self.touch(&msg_id);
    }

    /// Files an IOPub message. Messages parented to other sessions are not ours.
    pub fn on_iopub(&mut self, msg: Message, now: Instant) {
        let sender = SenderMetadata::read(&msg.metadata).engine;
        self.note_engine(sender.as_deref());
        let parent_session = HeaderFields::read(&msg.parent_header).session;
        let ours = parent_session.as_deref() == Some(self.session.as_str());
        let Some(msg_id) = msg.parent_msg_id() else {
            return;
        };
        let Some(task) = self.tasks.get_mut(msg_id) else {
            return;
        };
        if !ours && !task.foreign {
            return;
        }
        task.last_iopub = Some(now);
        if task.engine.is_none() {
            if let Some(uuid) = sender {
                task.engine = Some(uuid);
            }
        }
        match msg.header.msg_type.as_str() {
            "status" => match StatusContent::read(&msg.content).execution_state.as_deref() {
                Some("idle") => {
                    task.idle = true;
                    let msg_id = msg_id.to_owned();
                    self.touch(&msg_id);
                }
                Some("busy") => task.started = true,
                _ => {}
            },
            "stream" => {
                let stream = StreamContent::read(&msg.content);
                let text = stream.text.as_deref().unwrap_or("");
                match stream.name.as_deref() {
                    Some("stderr") => task.stderr.push_str(text),
                    _ => task.stdout.push_str(text),
                }
            }
            "data_message" => {
                let keys = DataMessageContent::read(&msg.content).keys;
                task.data_received += 1;
                task.data_conflated += push_conflated(
                    &mut task.pending,
                    PendingData {
                        keys,
                        published: msg.header.date.clone(),
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
        let EngineNotification { id, uuid, .. } = EngineNotification::read(&msg.content);
        match (msg.msg_type(), id, uuid.as_deref()) {
            ("registration_notification", Some(id), Some(uuid)) => {
                self.add_engine(id, uuid.to_owned());
                Vec::new()
            }
            ("unregistration_notification", Some(id), Some(uuid)) => {
                self.remove_engine(id, uuid);
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
        let mut stranded = Vec::new();
        for (msg_id, task) in self.tasks.iter_mut() {
            if task.engine.as_deref() != Some(uuid) {
                continue;
            }
            if task.foreign {
                // Not ours to fail: the controller records its outcome for every reader.
                task.idle = true;
                continue;
            }
            if let Some(original) = &task.coalesced_into {
                // The controller drops a coalesced request whose engine died: its one
                // reply will not come, so it is failed below.
                task.idle = true;
                stranded.push(original.clone());
                continue;
            }
            if self.watched.contains(msg_id) {
                self.touched.push(msg_id.clone());
            }
            if task.reply.is_some() {
                // A dead engine publishes nothing more: do not wait for its idle (the
                // scheduler's EngineError can overtake this notification).
                task.idle = true;
                continue;
            }
            task.reply = Some(Arc::new(engine_died_reply(id, uuid, msg_id)));
            task.reply_at = Some(now);
            task.idle = true;
            failed.push(msg_id.clone());
        }
        for original in stranded {
            let Some(task) = self.tasks.get_mut(&original) else {
                continue;
            };
            if task.reply.is_some() {
                continue;
            }
            task.reply = Some(Arc::new(engine_died_reply(id, uuid, &original)));
            task.reply_at = Some(now);
            self.touch(&original);
            failed.push(original);
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
        if task.leaves.is_empty() {
            return task.is_ready(msg_id, release_after, now);
        }
        // A coalesced broadcast: its reply, and every engine's IOPub drained (or quiet
        // for as long as a lost idle is waited for).
        let Some(reply_at) = task.reply_at else {
            return false;
        };
        if now.duration_since(reply_at) >= release_after {
            return true;
        }
        let leaves = task.leaves.clone();
        leaves
            .iter()
            .all(|leaf| self.tasks.get(leaf).is_none_or(|t| t.idle))
    }

    /// Those of `msg_ids` that are recorded and not ready yet (unknown or forgotten ids
    /// are not pending: nothing will arrive for them).
    pub fn outstanding(&mut self, msg_ids: &[String], now: Instant) -> Vec<String> {
        msg_ids
            .iter()
            .filter(|m| {
                self.tasks.get(m.as_str()).is_some_and(|t| !t.foreign) && !self.is_ready(m, now)
            })
            .cloned()
            .collect()
    }

    /// Forgets finished tasks (their reply, output and pending data); returns the ids of
    /// those still outstanding, which are kept.
    pub fn forget(&mut self, msg_ids: &[String], now: Instant) -> Vec<String> {
        let mut kept = Vec::new();
        for msg_id in msg_ids {
            let foreign = self.tasks.get(msg_id).is_some_and(|t| t.foreign);
            if self.tasks.contains_key(msg_id) && !foreign && !self.is_ready(msg_id, now) {
                kept.push(msg_id.clone());
            } else {
                self.tasks.remove(msg_id);
            }
        }
        self.shrink_tasks();
        kept
    }

    /// Forgets every finished task, whoever sent it (`purge_local_results('all')`: control
    /// requests and tasks missing from any history included); returns how many are kept
    /// because they are still outstanding.
    pub fn forget_finished(&mut self, now: Instant) -> usize {
        let release_after = self.release_after;
        self.tasks
            .retain(|msg_id, task| !task.foreign && !task.is_ready(msg_id, release_after, now));
        self.shrink_tasks();
        self.tasks.len()
    }

    /// A map emptied by a purge keeps its peak allocation; give most of it back, so a
    /// burst of tasks followed by a purge does not pin that memory for the session.
    fn shrink_tasks(&mut self) {
        let floor = MIN_TASK_CAPACITY.max(2 * self.tasks.len());
        if self.tasks.capacity() > 2 * floor {
            self.tasks.shrink_to(floor);
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tasks: self.tasks.len(),
            task_capacity: self.tasks.capacity(),
            pending_data: self.tasks.values().map(|t| t.pending.len()).sum(),
            live_engines: self.engines.len(),
            known_engines: self.engine_ids.len(),
            hub_waiting: self.hub_waiting.len(),
            hub_replies: self.hub_replies.len(),
            watched: self.watched.len(),
        }
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

    /// Asks to be told, by [`Store::take_completed`], when each of `msg_ids` is ready
    /// (at the next call for those ready already, or unknown: nothing will come for them).
    pub fn watch(&mut self, msg_ids: &[String]) {
        for msg_id in msg_ids {
            if self.watched.insert(msg_id.clone()) {
                self.touched.push(msg_id.clone());
            }
        }
    }

    fn touch(&mut self, msg_id: &str) {
        if self.watched.contains(msg_id) {
            self.touched.push(msg_id.to_owned());
        }
        // An engine's copy of a coalesced broadcast finishing may complete the request.
        let original = self
            .tasks
            .get(msg_id)
            .and_then(|t| t.coalesced_into.clone());
        if let Some(original) = original {
            if self.watched.contains(&original) {
                self.touched.push(original);
            }
        }
    }

    /// The watched tasks that became ready (or were forgotten) since the last call, each
    /// reported once; every watched task once the controller is lost (callers then turn
    /// the unfinished ones into `ControllerLost`).
    pub fn take_completed(&mut self, now: Instant) -> Vec<String> {
        if self.lost {
            self.touched.clear();
            self.awaiting_idle.clear();
            return self.watched.drain().collect();
        }
        let mut candidates = std::mem::take(&mut self.touched);
        candidates.extend(self.awaiting_idle.iter().cloned());
        let mut done = Vec::new();
        for msg_id in candidates {
            if !self.watched.contains(&msg_id) {
                continue; // reported already
            }
            // A forgotten task will never be ready: report it rather than hang a waiter.
            let known = self.tasks.get(&msg_id).map(|t| t.reply.is_some());
            let has_reply = known == Some(true);
            if known.is_none() || self.is_ready(&msg_id, now) {
                self.watched.remove(&msg_id);
                self.awaiting_idle.remove(&msg_id);
                done.push(msg_id);
            } else if has_reply {
                self.awaiting_idle.insert(msg_id);
            }
        }
        done
    }
}

/// The `EngineError` of a task whose engine died before answering.
fn engine_died_reply(id: i64, uuid: &str, msg_id: &str) -> Reply {
    let evalue = format!("Engine {id} died while running task '{msg_id}'");
    let engine_info = json!({"engine_uuid": uuid, "engine_id": id, "method": "apply"});
    local_error_reply("EngineError", &evalue, engine_info, Some(uuid))
}

/// An `apply_reply` made here, for a task that will get no real one.
fn local_error_reply(ename: &str, evalue: &str, engine_info: Value, engine: Option<&str>) -> Reply {
    let header = Header {
        msg_id: new_id(),
        msg_type: "apply_reply".into(),
        username: String::new(),
        session: String::new(),
        date: iso_now(),
        version: PROTOCOL_VERSION.into(),
    };
    let mut metadata = json!({"status": "error", "engine_info": engine_info});
    if let Some(uuid) = engine {
        metadata["engine"] = json!(uuid);
    }
    Reply {
        header: serde_json::to_value(header).expect("headers serialize"),
        content: ErrorContent::new(ename, evalue)
            .engine_info(engine_info)
            .traceback(vec![format!("{ename}: {evalue}")])
            .into_value(),
        metadata,
        buffers: Vec::new(),
    }
}

/// Appends `update`, dropping older pending updates whose keys it covers; returns how
/// many were dropped.
fn push_conflated(pending: &mut Vec<PendingData>, update: PendingData) -> u64 {
    let before = pending.len();
    pending.retain(|old| !old.keys.iter().all(|k| update.keys.contains(k)));
    let dropped = (before - pending.len()) as u64;
    pending.push(update);
    dropped
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
        task.reply = Some(Arc::new(Reply {
            header: json!({}),
            content: json!({"status": "ok"}),
            metadata: json!({}),
            buffers: vec![vec![0; 8]],
        }));
        task.reply_at = Some(now);
        task.idle = true;
        let ids = ["done".to_string(), "running".into(), "unknown".into()];
        assert_eq!(store.outstanding(&ids, now), vec!["running".to_string()]);
        assert_eq!(store.forget(&ids, now), vec!["running".to_string()]);
        assert!(!store.tasks.contains_key("done"));
        assert!(store.tasks.contains_key("running"));
    }

    #[test]
    fn forget_finished_drops_every_finished_task_and_gives_memory_back() {
        let mut s = Store::new(SESSION.into());
        s.add_engine(0, ENGINE.into());
        let t0 = Instant::now();
        let baseline = s.stats();
        for i in 0..50_000 {
            let id = format!("t{i}");
            s.add_task(id.clone(), Some(ENGINE.into()), String::new());
            s.on_reply(reply(&id), t0);
            s.on_iopub(data(&id, &["k"], 1), t0);
            s.on_iopub(iopub(&id, "status", json!({"execution_state": "idle"})), t0);
        }
        s.add_task("running".into(), Some(ENGINE.into()), String::new());
        assert_eq!(s.stats().pending_data, 50_000);
        assert_eq!(s.forget_finished(t0), 1);
        let after = s.stats();
        assert_eq!(after.tasks, 1);
        assert_eq!(after.pending_data, 0);
        assert!(
            after.task_capacity <= 2 * MIN_TASK_CAPACITY,
            "capacity {} kept after the purge",
            after.task_capacity
        );
        assert_eq!(
            StoreStats {
                tasks: 0,
                task_capacity: 0,
                ..after
            },
            StoreStats {
                tasks: 0,
                task_capacity: 0,
                ..baseline
            },
            "everything but the outstanding task is back to its baseline"
        );
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
    fn followed_tasks_of_other_sessions_get_their_iopub_and_are_never_outstanding() {
        let mut s = Store::new(SESSION.into());
        s.add_engine(0, ENGINE.into());
        let t0 = Instant::now();
        let mut theirs = data("x", &["a"], 1);
        theirs.parent_header = request_header("x", "someone-else");
        s.on_iopub(theirs.clone(), t0);
        assert!(s.task("x").is_none(), "not followed: dropped");
        s.follow(&["x".into()]);
        s.on_iopub(theirs.clone(), t0);
        let mut second = theirs.clone();
        second.buffers = vec![vec![2]];
        second.header.date = "2026-12-01T00:00:00.000001Z".into();
        s.on_iopub(second, t0);
        let t = s.task("x").unwrap();
        assert!(t.foreign);
        assert_eq!(t.engine.as_deref(), Some(ENGINE));
        assert_eq!((t.data_received, t.data_conflated), (2, 1));
        let pending = s.take_data("x");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].buffers, vec![vec![2]]);
        assert_eq!(pending[0].published, "2026-12-01T00:00:00.000001Z");
        assert!(s.outstanding(&["x".into()], t0).is_empty());
        s.engine_died(0, ENGINE, t0);
        assert!(s.task("x").unwrap().reply.is_none(), "not ours to fail");
        assert_eq!(s.forget_finished(t0), 0, "followed tasks are forgotten too");
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

    #[test]
    fn resync_adds_missed_engines_but_not_dead_ones() {
        let mut s = Store::new(SESSION.into());
        s.add_engine(0, "a".into());
        let note = message(
            "unregistration_notification",
            json!({}),
            json!({}),
            json!({"id": 0, "uuid": "a"}),
        );
        s.on_notification(&note, Instant::now());
        // A Hub list taken before the unregistration still names engine 0.
        let added = s.merge_engines([(0, "a".to_string()), (1, "b".to_string())]);
        assert_eq!(added, 1);
        assert_eq!(s.engines().keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            s.engine_id("a"),
            Some(0),
            "dead engines keep their id for errors"
        );
    }

    #[test]
    fn dead_engine_ids_are_bounded() {
        let mut s = Store::new(SESSION.into());
        for id in 0..(MAX_DEAD_ENGINES as i64 + 10) {
            let uuid = format!("e{id}");
            s.add_engine(id, uuid.clone());
            s.remove_engine(id, &uuid);
        }
        assert_eq!(s.engine_ids.len(), MAX_DEAD_ENGINES);
        assert_eq!(s.engine_id("e0"), None);
    }

    #[test]
    fn a_message_from_an_unknown_engine_asks_for_a_resync() {
        let mut s = store_with_task("m");
        s.on_iopub(
            iopub("m", "status", json!({"execution_state": "busy"})),
            Instant::now(),
        );
        assert!(!s.take_unknown_engine_seen());
        let mut m = reply("m");
        m.metadata = json!({"engine": "stranger"});
        s.on_reply(m, Instant::now());
        assert!(s.take_unknown_engine_seen());
        assert!(!s.take_unknown_engine_seen(), "reported once");
    }

    #[test]
    fn controller_loss_finishes_replied_tasks_and_keeps_the_rest_unready() {
        let mut s = store_with_task("running");
        s.add_task("replied".into(), Some(ENGINE.into()), iso_now());
        let t0 = Instant::now();
        s.on_reply(reply("replied"), t0);
        assert!(!s.is_ready("replied", t0), "waits for its idle");
        s.expect_hub_reply("q".into());
        let unfinished = s.controller_lost();
        assert_eq!(unfinished, vec!["running".to_string()]);
        assert!(s.is_lost());
        assert!(
            s.is_ready("replied", t0),
            "no idle will come: the reply is final"
        );
        assert!(!s.is_ready("running", t0));
        assert_eq!(s.hub_pending(), 0);
    }

    #[test]
    fn watched_tasks_are_reported_once_when_ready() {
        let mut s = store_with_task("m");
        s.add_task("other".into(), Some(ENGINE.into()), iso_now());
        s.add_task("done".into(), Some(ENGINE.into()), iso_now());
        let t0 = Instant::now();
        s.on_reply(reply("done"), t0);
        s.on_iopub(
            iopub("done", "status", json!({"execution_state": "idle"})),
            t0,
        );
        s.watch(&["m".into(), "done".into(), "forgotten".into()]);
        let mut first = s.take_completed(t0);
        first.sort();
        assert_eq!(first, vec!["done".to_string(), "forgotten".into()]);
        assert!(s.take_completed(t0).is_empty());
        s.on_iopub(iopub("m", "status", json!({"execution_state": "busy"})), t0);
        assert!(s.tasks["m"].started);
        s.on_reply(reply("m"), t0);
        assert!(
            s.take_completed(t0).is_empty(),
            "a reply alone is not ready"
        );
        s.on_reply(reply("other"), t0); // not watched: never reported
        s.on_iopub(
            iopub("other", "status", json!({"execution_state": "idle"})),
            t0,
        );
        // The quiet-period rule releases "m" with no message arriving.
        assert_eq!(
            s.take_completed(t0 + Duration::from_secs(6)),
            vec!["m".to_string()]
        );
        assert!(s.take_completed(t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(s.stats().watched, 0);
    }

    #[test]
    fn controller_loss_reports_every_watched_task() {
        let mut s = store_with_task("m");
        s.watch(&["m".into()]);
        assert!(s.take_completed(Instant::now()).is_empty());
        s.controller_lost();
        assert_eq!(s.take_completed(Instant::now()), vec!["m".to_string()]);
        assert_eq!(s.stats().watched, 0);
    }

    #[test]
    fn engine_death_reports_its_watched_tasks() {
        let mut s = store_with_task("m");
        s.watch(&["m".into()]);
        assert!(s.take_completed(Instant::now()).is_empty());
        s.engine_died(0, ENGINE, Instant::now());
        assert_eq!(s.take_completed(Instant::now()), vec!["m".to_string()]);
    }

    #[test]
    fn hub_replies_are_kept_only_while_awaited() {
        let mut s = Store::new(SESSION.into());
        let hub_reply = |parent: &str| {
            message(
                "queue_reply",
                request_header(parent, SESSION),
                json!({}),
                json!({"status": "ok"}),
            )
        };
        s.on_hub_reply(hub_reply("nobody-asked"));
        assert_eq!(s.hub_pending(), 0);
        s.expect_hub_reply("q1".into());
        assert!(s.take_hub_reply("q1", true).is_none()); // gave up
        s.on_hub_reply(hub_reply("q1")); // too late
        assert_eq!(s.hub_pending(), 0);
        s.expect_hub_reply("q2".into());
        s.on_hub_reply(hub_reply("q2"));
        assert!(s.take_hub_reply("q2", false).is_some());
        assert_eq!(s.hub_pending(), 0);
    }
}
