//! The task scheduler's state: plain functions that take what arrived (a client's task,
//! an engine's reply, an engine event, the time) and return [`TaskAction`]s for the socket
//! loop to perform. The time is an argument, so tests drive retries, timeouts and engine
//! deaths with a fake clock and no sockets.
//!
//! Per-task work stays small however many tasks wait:
//! - tasks that are ready and unconstrained wait in one FIFO; leastload takes its head and
//!   the first engine of an ordered set of engines with room (no scan of tasks or engines);
//! - tasks waiting on `after` are indexed by the msg_ids they wait for and looked at again
//!   only when one of those finishes;
//! - timeouts sit in a deadline heap, looked at only when the earliest is due;
//! - tasks constrained by `targets`/`follow`/a blacklist are grouped by their constraints,
//!   and only the oldest task of each group is looked at when an engine has room (a view
//!   with `targets` makes one group however many tasks it sends).

use corral_wire::Session;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use super::constrained::{ConstrainedQueue, GroupId};
use super::pace::Pace;
use crate::config::TaskHwm;
use crate::dependency::{
    admit, after_reply, eligible, stuck, triage, AfterReply, Constraints, Failure, History, Triage,
};
use crate::events::{EngineEvent, HubEvent, RecordEvent};
use crate::sockets::{checked, parse, ParentIds};
use corral_wire::{error_content, reply_type, InvalidDependency, ReplyMetadata, TaskMetadata};

/// An engine whose shell socket is not connected yet is skipped for this long.
pub(crate) const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(50);

/// What the socket loop must do, in order.
pub(crate) enum TaskAction {
    /// Send `frames` (the engine's routing id first) on the engine side, then tell the hub
    /// `TaskAssigned`. If the engine is not reachable, hand the task back with
    /// [`SchedulerState::unreachable`] instead.
    Assign {
        engine: Arc<str>,
        msg_id: String,
        frames: Vec<zmq::Message>,
    },
    /// An engine's reply for the client side, the client's routing id first.
    Relay(Vec<zmq::Message>),
    /// A reply the scheduler wrote itself (it gave up on a task), encoded and signed.
    Answer(Vec<Vec<u8>>),
    Hub(HubEvent),
}

/// A task waiting for, or running on, an engine. `frames` are exactly what the client
/// sent, starting with its routing id; they are kept while the task runs so that it can
/// be sent again (retries, unmet dependencies, a dead engine).
struct Task {
    /// Submission order: queues are ordered by it, and a re-queued task keeps its place.
    seq: u64,
    client: Vec<u8>,
    msg_id: String,
    msg_type: String,
    /// Index in `frames` of the header, parsed again only when the scheduler answers the
    /// task itself (as the reply's parent header).
    header_at: usize,
    constraints: Constraints,
    retries: u32,
    /// `metadata.timeout`: how long it may wait here, counted from (re)queueing.
    timeout: Option<Duration>,
    /// In a ready set (its `after` is met), rather than waiting on it.
    ready: bool,
    /// Its group among the ready constrained tasks, while it is there.
    group: Option<GroupId>,
    frames: Vec<zmq::Message>,
}

impl Task {
    fn requeue(&mut self, blacklist: &str, now: Instant) {
        self.constraints.blacklist.insert(blacklist.to_string());
        self.constraints.deadline = self.timeout.map(|t| now + t);
    }

    /// Any engine with room may take it: the FIFO fast path.
    fn unconstrained(&self) -> bool {
        let c = &self.constraints;
        c.targets.is_empty() && c.blacklist.is_empty() && c.follow.is_empty()
    }
}

/// Reads a task's metadata, logging the fields read as their default. Malformed
/// `after`/`follow` → `Err` (answered with `InvalidDependency`).
fn read_metadata(md: &Value) -> Result<TaskMetadata, InvalidDependency> {
    let asked = TaskMetadata::read(md)?;
    for (field, value) in &asked.ignored {
        warn!(socket = "task", field, %value, "ignored malformed metadata");
    }
    Ok(asked)
}

/// Tasks with equal keys may run on the same engines: their targets, blacklist and
/// `follow` (the only constraints [`eligible`] reads).
fn group_key(c: &Constraints) -> String {
    let mut blacklist: Vec<&String> = c.blacklist.iter().collect();
    blacklist.sort();
    format!("{:?}|{:?}|{:?}", c.targets, blacklist, c.follow)
}

/// The two header fields the scheduler reads: `msg_id` (a string, required) and
/// `msg_type` (a string, or absent or null). Read through this view, the rest of the
/// header is skipped rather than built into a `Value` for every task.
#[derive(serde::Deserialize)]
struct TaskHeader {
    msg_id: String,
    #[serde(default)]
    msg_type: Option<String>,
}

/// `TaskHeader` of a header frame; `None`, logged, when it is not JSON or lacks a
/// string msg_id (or has a msg_type that is not a string).
fn header_ids(frame: &[u8]) -> Option<(String, String)> {
    // serde would also read a struct from an array; a header is an object.
    let is_object = frame.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let read = if is_object {
        serde_json::from_slice::<TaskHeader>(frame)
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(frame)
            .and_then(|_| Err(serde::de::Error::custom("the header is not a JSON object")))
    };
    match read {
        Ok(h) => Some((h.msg_id, h.msg_type.unwrap_or_default())),
        Err(error) if error.is_data() => {
            warn!(socket = "task", header = %String::from_utf8_lossy(frame), "dropped task whose header lacks a string msg_id or msg_type");
            None
        }
        Err(error) => {
            warn!(socket = "task", frame = "header", %error, "dropped message with a malformed JSON frame");
            None
        }
    }
}

struct EngineSlot {
    name: Arc<str>,
    outstanding: HashMap<String, Task>,
    /// Last assignment, to rotate among equally loaded engines.
    last_used: u64,
    /// Not reachable (its shell socket is not connected yet) until then.
    skip_until: Option<Instant>,
    /// Its key in [`SchedulerState::free`], while it is there.
    free_key: Option<(usize, u64)>,
    /// How fast it answers, for the automatic high-water mark.
    pace: Pace,
}

impl EngineSlot {
    /// Whether it may take another task at `now` (reachability aside).
    fn has_room(&self, hwm: TaskHwm, now: Instant) -> bool {
        let held = self.outstanding.len();
        match hwm {
            TaskHwm::Fixed(0) => true,
            TaskHwm::Fixed(n) => held < n,
            TaskHwm::Auto => held < self.pace.depth(held, now),
        }
    }
}

/// Why the scheduler itself answers a task, as ipyparallel words it.
fn evalue(f: Failure) -> &'static str {
    match f {
        Failure::Invalid => "dependency on an unknown task or on itself",
        Failure::Impossible => "dependency can never be met",
        Failure::Timeout => "task timed out before it could run",
    }
}

pub(crate) struct SchedulerState {
    session: Arc<Session>,
    /// How many tasks an engine may hold.
    hwm: TaskHwm,
    engines: HashMap<Arc<str>, EngineSlot>,
    /// Reachable engines with room, keyed (load, last use): the first is leastload's pick.
    free: BTreeSet<(usize, u64, Arc<str>)>,
    /// Engines skipped for a while because a send to them failed.
    backing_off: Vec<Arc<str>>,
    /// Tasks in the scheduler, not on an engine, by `seq`.
    queued: HashMap<u64, Task>,
    /// Ready tasks any engine may take, oldest first.
    ready_plain: BTreeSet<u64>,
    /// Ready tasks that only some engines may take, grouped by their constraints.
    ready_constrained: ConstrainedQueue,
    /// Unfinished msg_id → queued tasks that depend on it (`after` or `follow`). Entries of
    /// tasks that left the queue are skipped when the msg_id finishes.
    dependents: HashMap<String, Vec<u64>>,
    /// (deadline, seq); an entry whose task left or was re-queued is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    history: History,
    /// msg_ids finished in this step whose dependents have not been looked at yet.
    resolved: Vec<String>,
    next_seq: u64,
    assignments: u64,
    /// Constrained tasks looked at by [`SchedulerState::dispatch`], to test that this stays
    /// proportional to the messages, not to the tasks queued.
    #[cfg(test)]
    looked_at: u64,
}

impl SchedulerState {
    /// A scheduler placing at most `hwm` tasks on each engine at once.
    pub(crate) fn new(session: Arc<Session>, hwm: TaskHwm) -> Self {
        SchedulerState {
            session,
            hwm,
            engines: HashMap::new(),
            free: BTreeSet::new(),
            backing_off: Vec::new(),
            queued: HashMap::new(),
            ready_plain: BTreeSet::new(),
            ready_constrained: ConstrainedQueue::default(),
            dependents: HashMap::new(),
            deadlines: BinaryHeap::new(),
            history: History::default(),
            resolved: Vec::new(),
            next_seq: 0,
            assignments: 0,
            #[cfg(test)]
            looked_at: 0,
        }
    }

    /// When [`SchedulerState::tick`] next has something to do (a timeout, an engine back
    /// from its backoff).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let backoff = self
            .backing_off
            .iter()
            .filter_map(|n| self.engines.get(n).and_then(|s| s.skip_until))
            .min();
        deadline.into_iter().chain(backoff).min()
    }

    /// A signed task from a client (`frames` as the client-side ROUTER received them).
    pub(crate) fn submit(&mut self, frames: Vec<zmq::Message>, now: Instant) -> Vec<TaskAction> {
        let mut out = Vec::new();
        let Some(d) = checked(&frames, &self.session.signer, "task") else {
            return out;
        };
        if d < 1 {
            warn!(socket = "task", "dropped task without a client identity");
            return out;
        }
        let Some((msg_id, msg_type)) = header_ids(&frames[d + 2]) else {
            return out;
        };
        let Some(md) = parse::<Value>(&frames[d + 4], "task", "metadata") else {
            return out;
        };
        self.history.saw(&msg_id);
        out.push(TaskAction::Hub(HubEvent::TaskSubmitted {
            msg_id: msg_id.clone(),
        }));
        out.push(TaskAction::Hub(HubEvent::Record(RecordEvent::Request {
            queue: "task",
            client: frames[0].to_vec(),
            engine: None,
            parts: frames[d + 2..]
                .iter()
                .map(|f| bytes::Bytes::copy_from_slice(f))
                .collect(),
        })));
        let (asked, invalid) = match read_metadata(&md) {
            Ok(asked) => (asked, None),
            Err(why) => (TaskMetadata::default(), Some(why)),
        };
        self.next_seq += 1;
        let task = Task {
            seq: self.next_seq,
            client: frames[0].to_vec(),
            msg_id,
            msg_type,
            header_at: d + 2,
            constraints: Constraints {
                targets: asked.targets,
                after: asked.after.into(),
                follow: asked.follow.into(),
                deadline: asked.timeout.map(|t| now + t),
                ..Constraints::default()
            },
            retries: asked.retries,
            timeout: asked.timeout,
            ready: false,
            group: None,
            frames,
        };
        if let Some(why) = invalid {
            warn!(
                socket = "task",
                msg_id = task.msg_id,
                %why,
                "invalid dependency"
            );
            let why = why.to_string();
            self.fail(task, None, Failure::Invalid.ename(), &why, &mut out);
        } else if let Err(f) = admit(&task.msg_id, &task.constraints, &self.history) {
            self.fail(task, None, f.ename(), evalue(f), &mut out);
        } else {
            self.enqueue(task, now, &mut out);
        }
        self.settle(now, &mut out);
        self.dispatch(now, &mut out);
        out
    }

    /// A signed reply from an engine (`frames` as the engine-side ROUTER received them:
    /// engine id, client id, message).
    pub(crate) fn reply(&mut self, mut frames: Vec<zmq::Message>, now: Instant) -> Vec<TaskAction> {
        let mut out = Vec::new();
        let Some(d) = checked(&frames, &self.session.signer, "task_out") else {
            return out;
        };
        if d < 2 {
            warn!(
                socket = "task_out",
                "dropped reply without a client identity"
            );
            return out;
        }
        let Some(parent) = parse::<ParentIds>(&frames[d + 3], "task_out", "parent_header") else {
            return out;
        };
        let md = parse::<Value>(&frames[d + 4], "task_out", "metadata").unwrap_or(Value::Null);
        let md = ReplyMetadata::read(&md);
        let status = md.status().to_string();
        let deps_met = md.dependencies_met();
        let engine = String::from_utf8_lossy(&frames[0]).into_owned();
        out.push(TaskAction::Hub(HubEvent::Record(RecordEvent::Reply {
            engine: Some(engine.clone()),
            parts: frames[d + 2..]
                .iter()
                .map(|f| bytes::Bytes::copy_from_slice(f))
                .collect(),
        })));
        let (name, task) = match self.engines.get_mut(engine.as_str()) {
            Some(slot) => {
                let task = parent
                    .msg_id
                    .as_ref()
                    .and_then(|id| slot.outstanding.remove(id));
                if task.is_some() {
                    slot.pace.replied(now);
                }
                (slot.name.clone(), task)
            }
            None => (Arc::from(engine.as_str()), None),
        };
        if let Some(mut task) = task {
            self.update_free(&name, now);
            match after_reply(&status, deps_met, task.retries) {
                AfterReply::Relay { success } => {
                    self.finish(&task.msg_id, Some(name), success);
                    out.push(TaskAction::Hub(HubEvent::TaskDone {
                        engine: engine.clone(),
                        msg_id: task.msg_id.clone(),
                    }));
                }
                AfterReply::Resubmit { uses_retry } => {
                    if uses_retry {
                        task.retries -= 1;
                    }
                    info!(
                        msg_id = task.msg_id,
                        engine,
                        status,
                        deps_met,
                        retries_left = task.retries,
                        "task resubmitted elsewhere"
                    );
                    // The hub forgets the old placement; the next assignment reports the new.
                    out.push(TaskAction::Hub(HubEvent::TaskFailed {
                        engine: Some(engine.clone()),
                        msg_id: task.msg_id.clone(),
                    }));
                    task.requeue(&engine, now);
                    self.enqueue(task, now, &mut out);
                    self.settle(now, &mut out);
                    self.dispatch(now, &mut out);
                    return out;
                }
            }
        } else if let Some(msg_id) = parent.msg_id.as_ref() {
            // Not ours any more (its engine was dropped): still a final outcome.
            self.finish(msg_id, Some(name), status == "ok");
        }
        frames.swap(0, 1);
        out.push(TaskAction::Relay(frames));
        self.settle(now, &mut out);
        self.dispatch(now, &mut out);
        out
    }

    /// The hub's news about the live engine set.
    pub(crate) fn engine_event(&mut self, event: EngineEvent, now: Instant) -> Vec<TaskAction> {
        let mut out = Vec::new();
        match event {
            EngineEvent::Up { id, uuid } => {
                if !self.engines.contains_key(uuid.as_str()) {
                    info!(engine_id = id, uuid, "task scheduler: engine added");
                    let name: Arc<str> = Arc::from(uuid);
                    self.engines.insert(
                        name.clone(),
                        EngineSlot {
                            name: name.clone(),
                            outstanding: HashMap::new(),
                            last_used: 0,
                            skip_until: None,
                            free_key: None,
                            pace: Pace::default(),
                        },
                    );
                    self.update_free(&name, now);
                }
            }
            EngineEvent::Down { uuid } => self.engine_down(&uuid, now, &mut out),
        }
        self.fail_stuck(&mut out);
        self.settle(now, &mut out);
        self.dispatch(now, &mut out);
        out
    }

    /// A send to `engine` failed (its shell socket is not connected yet): the task goes
    /// back to the queue and the engine is skipped for [`UNREACHABLE_BACKOFF`].
    pub(crate) fn unreachable(
        &mut self,
        engine: &str,
        msg_id: &str,
        now: Instant,
    ) -> Vec<TaskAction> {
        let mut out = Vec::new();
        let Some(slot) = self.engines.get_mut(engine) else {
            return out;
        };
        debug!(engine, msg_id, "engine not reachable yet");
        let name = slot.name.clone();
        slot.skip_until = Some(now + UNREACHABLE_BACKOFF);
        let task = slot.outstanding.remove(msg_id);
        if !self.backing_off.contains(&name) {
            self.backing_off.push(name.clone());
        }
        self.update_free(&name, now);
        if let Some(task) = task {
            self.enqueue(task, now, &mut out);
        }
        self.settle(now, &mut out);
        self.dispatch(now, &mut out);
        out
    }

    /// Fails tasks whose timeout passed and brings engines back from their backoff.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<TaskAction> {
        let mut out = Vec::new();
        while let Some(&Reverse((when, seq))) = self.deadlines.peek() {
            if when > now {
                break;
            }
            self.deadlines.pop();
            let due = self
                .queued
                .get(&seq)
                .is_some_and(|t| t.constraints.deadline == Some(when));
            if due {
                if let Some(task) = self.unqueue(seq) {
                    let f = Failure::Timeout;
                    self.fail(task, None, f.ename(), evalue(f), &mut out);
                }
            }
        }
        if !self.backing_off.is_empty() {
            let mut back = Vec::new();
            self.backing_off.retain(|name| {
                let due = self
                    .engines
                    .get(name)
                    .is_none_or(|s| s.skip_until.is_none_or(|t| now >= t));
                if due {
                    back.push(name.clone());
                }
                !due
            });
            for name in back {
                if let Some(slot) = self.engines.get_mut(&name) {
                    slot.skip_until = None;
                }
                self.update_free(&name, now);
            }
        }
        self.settle(now, &mut out);
        self.dispatch(now, &mut out);
        out
    }

    fn engine_down(&mut self, uuid: &str, now: Instant, out: &mut Vec<TaskAction>) {
        let Some(slot) = self.engines.remove(uuid) else {
            return;
        };
        if let Some((load, used)) = slot.free_key {
            self.free.remove(&(load, used, slot.name.clone()));
        }
        self.backing_off.retain(|n| **n != *uuid);
        for (_, mut task) in slot.outstanding {
            if task.retries > 0 {
                // As ipyparallel's stranded-task path: the EngineError counts as a
                // failure, so a retry runs it elsewhere.
                task.retries -= 1;
                out.push(TaskAction::Hub(HubEvent::TaskFailed {
                    engine: Some(uuid.to_string()),
                    msg_id: task.msg_id.clone(),
                }));
                task.requeue(uuid, now);
                self.enqueue(task, now, out);
                continue;
            }
            let evalue = format!("Engine {uuid:?} died while running task {:?}", task.msg_id);
            self.fail(task, Some(slot.name.clone()), "EngineError", &evalue, out);
        }
    }

    /// Puts a task in the queue: failed now if it can never run, ready if its `after` is
    /// met, else indexed under the msg_ids it waits for.
    fn enqueue(&mut self, mut task: Task, now: Instant, out: &mut Vec<TaskAction>) {
        let ready = match triage(&task.constraints, &self.history, now) {
            Triage::Fail(f) => return self.fail(task, None, f.ename(), evalue(f), out),
            Triage::Wait => false,
            Triage::Ready => true,
        };
        if ready && self.is_stuck(&task) {
            return self.fail_impossible_targets(task, out);
        }
        let c = &task.constraints;
        for id in c.after.ids.iter().chain(&c.follow.ids) {
            if self.history.get(id).is_none() {
                self.dependents
                    .entry(id.clone())
                    .or_default()
                    .push(task.seq);
            }
        }
        if let Some(deadline) = c.deadline {
            self.deadlines.push(Reverse((deadline, task.seq)));
        }
        if ready {
            self.mark_ready(&mut task);
        }
        self.queued.insert(task.seq, task);
    }

    fn mark_ready(&mut self, task: &mut Task) {
        task.ready = true;
        if task.unconstrained() {
            self.ready_plain.insert(task.seq);
        } else {
            let key = group_key(&task.constraints);
            task.group = Some(self.ready_constrained.insert(task.seq, key));
        }
    }

    fn unqueue(&mut self, seq: u64) -> Option<Task> {
        let mut task = self.queued.remove(&seq)?;
        if task.ready {
            self.ready_plain.remove(&seq);
        }
        if let Some(group) = task.group.take() {
            self.ready_constrained.remove(seq, group);
        }
        task.ready = false;
        Some(task)
    }

    fn is_stuck(&self, task: &Task) -> bool {
        stuck(&task.constraints, self.engines.len(), |e| {
            self.engines.contains_key(e)
        })
    }

    fn fail_impossible_targets(&mut self, task: Task, out: &mut Vec<TaskAction>) {
        let ename = Failure::Impossible.ename();
        self.fail(
            task,
            None,
            ename,
            "no live engine among the task's targets",
            out,
        );
    }

    /// Fails ready tasks whose targets are all gone (after a change of the engine set).
    /// The tasks of a group share their constraints, so its oldest task speaks for all.
    fn fail_stuck(&mut self, out: &mut Vec<TaskAction>) {
        let stuck: Vec<u64> = self
            .ready_constrained
            .heads()
            .filter(|(seq, _)| self.queued.get(seq).is_some_and(|t| self.is_stuck(t)))
            .flat_map(|(_, group)| self.ready_constrained.members(group))
            .collect();
        for seq in stuck {
            if let Some(task) = self.unqueue(seq) {
                self.fail_impossible_targets(task, out);
            }
        }
    }

    fn finish(&mut self, msg_id: &str, engine: Option<Arc<str>>, success: bool) {
        self.history.finish(msg_id, engine, success);
        if self.dependents.contains_key(msg_id) {
            self.resolved.push(msg_id.to_string());
        }
    }

    /// Looks again at the tasks that depend on msg_ids finished in this step: they may be
    /// ready now, or impossible (which finishes them too, so this runs to a fixed point).
    fn settle(&mut self, now: Instant, out: &mut Vec<TaskAction>) {
        while let Some(msg_id) = self.resolved.pop() {
            let Some(seqs) = self.dependents.remove(&msg_id) else {
                continue;
            };
            for seq in seqs {
                let Some(task) = self.queued.get(&seq) else {
                    continue;
                };
                match triage(&task.constraints, &self.history, now) {
                    Triage::Fail(f) => {
                        if let Some(task) = self.unqueue(seq) {
                            self.fail(task, None, f.ename(), evalue(f), out);
                        }
                    }
                    Triage::Wait => {}
                    Triage::Ready if task.ready => {}
                    Triage::Ready => {
                        if self.is_stuck(task) {
                            if let Some(task) = self.unqueue(seq) {
                                self.fail_impossible_targets(task, out);
                            }
                        } else if let Some(mut task) = self.queued.remove(&seq) {
                            self.mark_ready(&mut task);
                            self.queued.insert(seq, task);
                        }
                    }
                }
            }
        }
    }

    /// Places ready tasks, oldest first, while engines have room.
    fn dispatch(&mut self, now: Instant, out: &mut Vec<TaskAction>) {
        while !self.free.is_empty() {
            let plain = self.ready_plain.first().copied();
            let mut choice = None;
            for (seq, _) in self.ready_constrained.heads() {
                if plain.is_some_and(|p| p < seq) {
                    break;
                }
                #[cfg(test)]
                {
                    self.looked_at += 1;
                }
                let Some(task) = self.queued.get(&seq) else {
                    continue;
                };
                let fits = self
                    .free
                    .iter()
                    .map(|(_, _, name)| name)
                    .find(|name| eligible(name, &task.constraints, &self.history));
                if let Some(name) = fits {
                    choice = Some((seq, name.clone()));
                    break;
                }
            }
            if choice.is_none() {
                if let (Some(seq), Some((_, _, name))) = (plain, self.free.first()) {
                    choice = Some((seq, name.clone()));
                }
            }
            let Some((seq, name)) = choice else {
                break;
            };
            // An engine's room can shrink with time alone (the automatic mark stops
            // filling one that went silent), which `free` learns only here.
            if !self
                .engines
                .get(&name)
                .is_some_and(|s| s.has_room(self.hwm, now))
            {
                self.update_free(&name, now);
                continue;
            }
            self.assign(seq, name, now, out);
        }
    }

    fn assign(&mut self, seq: u64, name: Arc<str>, now: Instant, out: &mut Vec<TaskAction>) {
        let Some(task) = self.unqueue(seq) else {
            return;
        };
        let Some(slot) = self.engines.get_mut(&name) else {
            return;
        };
        self.assignments += 1;
        slot.last_used = self.assignments;
        slot.pace.sent(slot.outstanding.len(), now);
        let mut frames = Vec::with_capacity(task.frames.len() + 1);
        frames.push(zmq::Message::from(name.as_bytes()));
        frames.extend(task.frames.iter().map(|f| zmq::Message::from(&f[..])));
        debug!(msg_id = task.msg_id, engine = %name, "task assigned");
        out.push(TaskAction::Assign {
            engine: name.clone(),
            msg_id: task.msg_id.clone(),
            frames,
        });
        slot.outstanding.insert(task.msg_id.clone(), task);
        self.update_free(&name, now);
    }

    /// Keeps `free` in step with an engine's load and reachability.
    fn update_free(&mut self, name: &Arc<str>, now: Instant) {
        let Some(slot) = self.engines.get_mut(name) else {
            return;
        };
        if let Some((load, used)) = slot.free_key.take() {
            self.free.remove(&(load, used, name.clone()));
        }
        let reachable = slot.skip_until.is_none_or(|t| now >= t);
        if slot.has_room(self.hwm, now) && reachable {
            let key = (slot.outstanding.len(), slot.last_used);
            self.free.insert((key.0, key.1, name.clone()));
            slot.free_key = Some(key);
        }
    }

    /// Answers the client with a signed error reply (parent = the request) for a task the
    /// scheduler gives up on, as ipyparallel's `handle_stranded_tasks` and
    /// `fail_unreachable` do, and records it as failed for dependents.
    fn fail(
        &mut self,
        task: Task,
        engine: Option<Arc<str>>,
        ename: &str,
        evalue: &str,
        out: &mut Vec<TaskAction>,
    ) {
        warn!(
            msg_id = task.msg_id,
            ename, evalue, "task failed in the scheduler"
        );
        self.finish(&task.msg_id, engine.clone(), false);
        let engine = engine.map(|e| e.to_string());
        out.push(TaskAction::Hub(HubEvent::TaskFailed {
            engine: engine.clone(),
            msg_id: task.msg_id.clone(),
        }));
        let mut msg = self
            .session
            .msg(&reply_type(&task.msg_type), error_content(ename, evalue));
        msg.parent_header =
            serde_json::from_slice(&task.frames[task.header_at]).unwrap_or(Value::Null);
        let mut md =
            json!({"status": "error", "dependencies_met": true, "date": corral_wire::iso_now()});
        msg.idents = vec![task.client];
        if let Some(engine) = &engine {
            md["engine"] = json!(engine);
            msg.idents.push(engine.as_bytes().to_vec());
        }
        msg.metadata = md;
        let encoded = self.session.encode(&msg);
        if let Some(d) = encoded.iter().position(|f| f.as_slice() == b"<IDS|MSG>") {
            out.push(TaskAction::Hub(HubEvent::Record(RecordEvent::Reply {
                engine,
                parts: encoded[d + 2..]
                    .iter()
                    .map(|f| bytes::Bytes::copy_from_slice(f))
                    .collect(),
            })));
        }
        out.push(TaskAction::Answer(encoded));
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
