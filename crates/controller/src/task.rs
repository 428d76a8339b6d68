//! The load-balancing task scheduler (ipyparallel's `leastload`, hwm 1): a client-side
//! ROUTER and an engine-side ROUTER (identity `task_out`). A task goes to the live
//! engine with the fewest outstanding tasks among those its constraints allow
//! (`metadata.targets`, `follow`, the engines it already failed on); it waits here
//! while its `after` dependencies are unmet or every eligible engine is busy. Raw frames
//! are forwarded unchanged (`[engine, client, msg..]`); replies go back as
//! `[client, engine, msg..]`. A failed task is re-run elsewhere while `retries` last,
//! and so is one whose engine answered `dependencies_met: false`. The rules themselves
//! live in [`crate::dependency`]; this module does the sockets.

use corral_wire::{Session, Signer};
use crossbeam_channel::Receiver;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::dependency::{
    admit, after_reply, eligible, stuck, triage, AfterReply, Constraints, Dependency, Failure,
    History, Triage,
};
use crate::events::{EngineEvent, HubEvent, HubSender, RecordEvent};
use crate::hub::{error_content, reply_type};
use crate::sockets::{
    checked, parse, readable, recv_frames, send_bytes, send_routed, HeaderIds, ParentIds,
};
use crate::stop::Stop;

const POLL_MS: i64 = 10;
/// Outstanding tasks per engine (ipyparallel's default `hwm`).
const HWM: usize = 1;
/// An engine whose shell socket is not connected yet is skipped for this long.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(50);

/// A task waiting for, or running on, an engine. `frames` are exactly what the client
/// sent, starting with its routing id; they are kept while the task runs so that it can
/// be sent again (retries, unmet dependencies, a dead engine).
struct Task {
    client: Vec<u8>,
    msg_id: String,
    msg_type: String,
    header: Value,
    constraints: Constraints,
    retries: u32,
    /// `metadata.timeout`: how long it may wait here, counted from (re)queueing.
    timeout: Option<Duration>,
    frames: Vec<zmq::Message>,
}

impl Task {
    fn requeue(&mut self, blacklist: &str, now: Instant) {
        self.constraints.blacklist.insert(blacklist.to_string());
        self.constraints.deadline = self.timeout.map(|t| now + t);
    }
}

/// What a task's metadata asks for.
#[derive(Clone, Default)]
struct Asked {
    targets: Vec<String>,
    retries: u32,
    timeout: Option<Duration>,
    after: Dependency,
    follow: Dependency,
}

/// Reads [`Asked`] from a task's metadata. Malformed `after`/`follow` → `Err` (answered with
/// `InvalidDependency`); odd `targets`/`retries`/`timeout` values are ignored with a
/// warning.
fn read_metadata(md: &Value) -> Result<Asked, String> {
    let after = Dependency::parse(md.get("after"))?;
    let follow = Dependency::parse(md.get("follow"))?;
    let targets = match md.get("targets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        Some(other) => {
            warn!(socket = "task", targets = %other, "ignored malformed targets");
            Vec::new()
        }
    };
    let retries = match md.get("retries") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .map(|r| r.min(u32::MAX as u64) as u32)
            .unwrap_or_else(|| {
                warn!(socket = "task", retries = %v, "ignored malformed retries");
                0
            }),
    };
    let timeout = md
        .get("timeout")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t > 0.0)
        .map(|t| Duration::from_secs_f64(t.min(1e9)));
    Ok(Asked {
        targets,
        retries,
        timeout,
        after,
        follow,
    })
}

struct EngineSlot {
    uuid: String,
    outstanding: HashMap<String, Task>,
    /// Last assignment, to rotate among equally loaded engines.
    last_used: u64,
    skip_until: Option<Instant>,
}

/// Leastload with hwm: among engines with room, reachable and allowed by the task's
/// constraints, the least loaded, then the least recently used.
fn pick(engines: &[EngineSlot], c: &Constraints, h: &History, now: Instant) -> Option<usize> {
    engines
        .iter()
        .enumerate()
        .filter(|(_, e)| e.outstanding.len() < HWM)
        .filter(|(_, e)| e.skip_until.is_none_or(|t| now >= t))
        .filter(|(_, e)| eligible(&e.uuid, c, h))
        .min_by_key(|(_, e)| (e.outstanding.len(), e.last_used))
        .map(|(i, _)| i)
}

pub(crate) struct TaskScheduler {
    pub client: zmq::Socket,
    pub engine: zmq::Socket,
    pub session: Arc<Session>,
    pub engines_rx: Receiver<EngineEvent>,
    pub hub: HubSender,
    pub stop: Arc<Stop>,
}

struct State {
    engines: Vec<EngineSlot>,
    queue: VecDeque<Task>,
    counter: u64,
    history: History,
}

impl TaskScheduler {
    fn signer(&self) -> &Signer {
        &self.session.signer
    }

    pub(crate) fn run(self) {
        let mut st = State {
            engines: Vec::new(),
            queue: VecDeque::new(),
            counter: 0,
            history: History::default(),
        };
        while !self.stop.is_set() {
            let mut items = [
                self.client.as_poll_item(zmq::POLLIN),
                self.engine.as_poll_item(zmq::POLLIN),
            ];
            let poll = if st.queue.is_empty() {
                POLL_MS
            } else {
                POLL_MS.min(5)
            };
            if readable(&mut items, poll) {
                let (from_client, from_engine) = (items[0].is_readable(), items[1].is_readable());
                if from_engine {
                    while let Some(frames) = recv_frames(&self.engine) {
                        self.on_reply(&mut st, frames);
                    }
                }
                if from_client {
                    while let Some(frames) = recv_frames(&self.client) {
                        self.on_submit(&mut st, frames);
                    }
                }
            }
            while let Ok(event) = self.engines_rx.try_recv() {
                self.on_engine_event(&mut st, event);
            }
            self.dispatch(&mut st);
        }
    }

    fn on_submit(&self, st: &mut State, frames: Vec<zmq::Message>) {
        let Some(d) = checked(&frames, self.signer(), "task") else {
            return;
        };
        if d < 1 {
            warn!(socket = "task", "dropped task without a client identity");
            return;
        }
        let Some(ids) = parse::<HeaderIds>(&frames[d + 2], "task", "header") else {
            return;
        };
        let Some(header) = parse::<Value>(&frames[d + 2], "task", "header") else {
            return;
        };
        let Some(md) = parse::<Value>(&frames[d + 4], "task", "metadata") else {
            return;
        };
        st.history.saw(&ids.msg_id);
        let _ = self.hub.send(HubEvent::TaskSubmitted {
            msg_id: ids.msg_id.clone(),
        });
        let _ = self.hub.send(HubEvent::Record(RecordEvent::Request {
            queue: "task",
            client: frames[0].to_vec(),
            engine: None,
            parts: frames[d + 2..].iter().map(|f| f.to_vec()).collect(),
        }));
        let parsed = read_metadata(&md);
        let Asked {
            targets,
            retries,
            timeout,
            after,
            follow,
        } = parsed.clone().unwrap_or_default();
        let task = Task {
            client: frames[0].to_vec(),
            msg_id: ids.msg_id,
            msg_type: ids.msg_type,
            header,
            constraints: Constraints {
                targets,
                after,
                follow,
                deadline: timeout.map(|t| Instant::now() + t),
                ..Constraints::default()
            },
            retries,
            timeout,
            frames,
        };
        if let Err(why) = parsed {
            warn!(
                socket = "task",
                msg_id = task.msg_id,
                why,
                "invalid dependency"
            );
            self.fail(st, task, None, Failure::Invalid.ename(), &why);
            return;
        }
        if let Err(f) = admit(&task.msg_id, &task.constraints, &st.history) {
            let evalue = match f {
                Failure::Invalid => "dependency on an unknown task or on itself",
                _ => "dependency can never be met",
            };
            self.fail(st, task, None, f.ename(), evalue);
            return;
        }
        st.queue.push_back(task);
    }

    /// Places queued tasks, in order, while eligible engines have room; answers the ones
    /// that became impossible or timed out.
    fn dispatch(&self, st: &mut State) {
        let now = Instant::now();
        let live: Vec<String> = st.engines.iter().map(|e| e.uuid.clone()).collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let mut waiting = VecDeque::new();
        while let Some(task) = st.queue.pop_front() {
            match triage(&task.constraints, &st.history, now) {
                Triage::Fail(f) => {
                    let evalue = match f {
                        Failure::Timeout => "task timed out before it could run",
                        _ => "dependency can never be met",
                    };
                    self.fail(st, task, None, f.ename(), evalue);
                    continue;
                }
                Triage::Wait => {
                    waiting.push_back(task);
                    continue;
                }
                Triage::Ready => {}
            }
            if stuck(&live, &task.constraints) {
                self.fail(
                    st,
                    task,
                    None,
                    Failure::Impossible.ename(),
                    "no live engine among the task's targets",
                );
                continue;
            }
            let Some(i) = pick(&st.engines, &task.constraints, &st.history, now) else {
                waiting.push_back(task);
                continue;
            };
            let slot = &mut st.engines[i];
            let mut frames = Vec::with_capacity(task.frames.len() + 1);
            frames.push(zmq::Message::from(slot.uuid.as_bytes()));
            frames.extend(task.frames.iter().map(|f| zmq::Message::from(&f[..])));
            match send_routed(&self.engine, frames) {
                Ok(()) => {
                    st.counter += 1;
                    slot.last_used = st.counter;
                    debug!(msg_id = task.msg_id, engine = slot.uuid, "task assigned");
                    let _ = self.hub.send(HubEvent::TaskAssigned {
                        engine: slot.uuid.clone(),
                        msg_id: task.msg_id.clone(),
                    });
                    slot.outstanding.insert(task.msg_id.clone(), task);
                }
                Err((error, _)) => {
                    debug!(engine = slot.uuid, %error, "engine not reachable yet");
                    slot.skip_until = Some(now + UNREACHABLE_BACKOFF);
                    waiting.push_back(task);
                }
            }
        }
        // Tasks failed above may have queued more behind them; keep everything.
        waiting.extend(st.queue.drain(..));
        st.queue = waiting;
    }

    fn on_reply(&self, st: &mut State, mut frames: Vec<zmq::Message>) {
        let Some(d) = checked(&frames, self.signer(), "task_out") else {
            return;
        };
        if d < 2 {
            warn!(
                socket = "task_out",
                "dropped reply without a client identity"
            );
            return;
        }
        let Some(parent) = parse::<ParentIds>(&frames[d + 3], "task_out", "parent_header") else {
            return;
        };
        let md = parse::<Value>(&frames[d + 4], "task_out", "metadata").unwrap_or(Value::Null);
        let status = md.get("status").and_then(Value::as_str).unwrap_or("ok");
        let deps_met = md
            .get("dependencies_met")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let engine = String::from_utf8_lossy(&frames[0]).into_owned();
        let _ = self.hub.send(HubEvent::Record(RecordEvent::Reply {
            engine: Some(engine.clone()),
            parts: frames[d + 2..].iter().map(|f| f.to_vec()).collect(),
        }));
        let task = match (
            st.engines.iter_mut().find(|e| e.uuid == engine),
            parent.msg_id.as_ref(),
        ) {
            (Some(slot), Some(msg_id)) => slot.outstanding.remove(msg_id),
            _ => None,
        };
        if let Some(mut task) = task {
            match after_reply(status, deps_met, task.retries) {
                AfterReply::Relay { success } => {
                    st.history.finish(&task.msg_id, Some(&engine), success);
                    let _ = self.hub.send(HubEvent::TaskDone {
                        engine: engine.clone(),
                        msg_id: task.msg_id.clone(),
                    });
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
                    // The hub forgets the old placement; the next dispatch reports the new.
                    let _ = self.hub.send(HubEvent::TaskFailed {
                        engine: Some(engine.clone()),
                        msg_id: task.msg_id.clone(),
                    });
                    task.requeue(&engine, Instant::now());
                    st.queue.push_front(task);
                    return;
                }
            }
        } else if let Some(msg_id) = parent.msg_id.as_ref() {
            // Not ours any more (its engine was dropped): still a final outcome.
            st.history.finish(msg_id, Some(&engine), status == "ok");
        }
        frames.swap(0, 1);
        if let Err((error, _)) = send_routed(&self.client, frames) {
            debug!(socket = "task", %error, "client gone; reply dropped");
        }
    }

    fn on_engine_event(&self, st: &mut State, event: EngineEvent) {
        match event {
            EngineEvent::Up { id, uuid } => {
                info!(engine_id = id, uuid, "task scheduler: engine added");
                st.engines.push(EngineSlot {
                    uuid,
                    outstanding: HashMap::new(),
                    last_used: 0,
                    skip_until: None,
                });
            }
            EngineEvent::Down { uuid } => {
                let Some(pos) = st.engines.iter().position(|e| e.uuid == uuid) else {
                    return;
                };
                let slot = st.engines.remove(pos);
                let now = Instant::now();
                for (_, mut task) in slot.outstanding {
                    if task.retries > 0 {
                        // As ipyparallel's stranded-task path: the EngineError counts as a
                        // failure, so a retry runs it elsewhere.
                        task.retries -= 1;
                        let _ = self.hub.send(HubEvent::TaskFailed {
                            engine: Some(uuid.clone()),
                            msg_id: task.msg_id.clone(),
                        });
                        task.requeue(&uuid, now);
                        st.queue.push_front(task);
                        continue;
                    }
                    let evalue =
                        format!("Engine {uuid:?} died while running task {:?}", task.msg_id);
                    self.fail(st, task, Some(&uuid), "EngineError", &evalue);
                }
            }
        }
    }

    /// Sends the client a signed error reply (parent = the request) for a task the
    /// scheduler gives up on, as ipyparallel's `handle_stranded_tasks` and
    /// `fail_unreachable` do, and records it as failed for dependents.
    fn fail(&self, st: &mut State, task: Task, engine: Option<&str>, ename: &str, evalue: &str) {
        warn!(
            msg_id = task.msg_id,
            ename, evalue, "task failed in the scheduler"
        );
        st.history.finish(&task.msg_id, engine, false);
        let _ = self.hub.send(HubEvent::TaskFailed {
            engine: engine.map(str::to_string),
            msg_id: task.msg_id.clone(),
        });
        let mut msg = self
            .session
            .msg(&reply_type(&task.msg_type), error_content(ename, evalue));
        msg.parent_header = task.header;
        let mut md =
            json!({"status": "error", "dependencies_met": true, "date": corral_wire::iso_now()});
        msg.idents = vec![task.client];
        if let Some(engine) = engine {
            md["engine"] = json!(engine);
            msg.idents.push(engine.as_bytes().to_vec());
        }
        msg.metadata = md;
        let encoded = self.session.encode(&msg);
        if let Some(d) = encoded.iter().position(|f| f.as_slice() == b"<IDS|MSG>") {
            let _ = self.hub.send(HubEvent::Record(RecordEvent::Reply {
                engine: engine.map(str::to_string),
                parts: encoded[d + 2..].to_vec(),
            }));
        }
        send_bytes(&self.client, encoded, "task");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(uuid: &str, busy: bool, last_used: u64) -> EngineSlot {
        let mut outstanding = HashMap::new();
        if busy {
            let t = Task {
                client: Vec::new(),
                msg_id: "running".into(),
                msg_type: "apply_request".into(),
                header: Value::Null,
                constraints: Constraints::default(),
                retries: 0,
                timeout: None,
                frames: Vec::new(),
            };
            outstanding.insert(t.msg_id.clone(), t);
        }
        EngineSlot {
            uuid: uuid.into(),
            outstanding,
            last_used,
            skip_until: None,
        }
    }

    #[test]
    fn pick_prefers_free_least_recent_allowed_engines() {
        let now = Instant::now();
        let mut h = History::default();
        let engines = vec![slot("a", false, 5), slot("b", true, 1), slot("c", false, 2)];
        let free = Constraints::default();
        assert_eq!(
            pick(&engines, &free, &h, now),
            Some(2),
            "c: free, least recent"
        );
        let mut c = Constraints::default();
        c.blacklist.insert("c".into());
        assert_eq!(pick(&engines, &c, &h, now), Some(0));
        let only_b = Constraints {
            targets: vec!["b".into()],
            ..Constraints::default()
        };
        assert_eq!(pick(&engines, &only_b, &h, now), None, "hwm 1: b is busy");
        h.finish("x", Some("a"), true);
        let follow = Constraints {
            follow: Dependency::parse(Some(&serde_json::json!(["x"]))).unwrap(),
            ..Constraints::default()
        };
        assert_eq!(pick(&engines, &follow, &h, now), Some(0), "follow x to a");
        let mut skipping = engines;
        skipping[2].skip_until = Some(now + Duration::from_secs(1));
        assert_eq!(
            pick(&skipping, &free, &h, now),
            Some(0),
            "c not reachable yet"
        );
    }

    #[test]
    fn metadata_is_read_leniently_but_bad_dependencies_are_errors() {
        let md = serde_json::json!({"after": [], "follow": ["f"], "timeout": 1.5,
            "targets": ["e"], "retries": 2, "label": null});
        let a = read_metadata(&md).unwrap();
        assert_eq!(a.targets, vec!["e"]);
        assert_eq!(a.retries, 2);
        assert_eq!(a.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(a.follow.ids, vec!["f"]);
        let odd = serde_json::json!({"targets": 3, "retries": "x", "timeout": 0.0});
        let a = read_metadata(&odd).unwrap();
        assert!(a.targets.is_empty() && a.retries == 0 && a.timeout.is_none());
        assert!(read_metadata(&serde_json::json!({"after": {"dependencies": 7}})).is_err());
    }
}
