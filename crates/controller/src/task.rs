//! The load-balancing task scheduler (ipyparallel's `leastload`, hwm 1): a client-side
//! ROUTER and an engine-side ROUTER (identity `task_out`). A task goes to the live
//! engine with the fewest outstanding tasks, restricted to `metadata.targets`; when every
//! eligible engine is busy it waits here. Raw frames are forwarded unchanged
//! (`[engine, client, msg..]`); replies go back as `[client, engine, msg..]`.
//!
//! Not implemented: `after`/`follow` dependencies, `timeout`, `retries`.

use corral_wire::{Session, Signer};
use crossbeam_channel::{Receiver, Sender};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use crate::events::{EngineEvent, HubEvent, RecordEvent};
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
/// sent, starting with its routing id.
struct Task {
    client: Vec<u8>,
    msg_id: String,
    msg_type: String,
    header: Value,
    targets: Vec<String>,
    frames: Vec<zmq::Message>,
}

#[derive(Deserialize, Default)]
struct TaskMetadata {
    #[serde(default)]
    targets: Option<Vec<String>>,
}

struct EngineSlot {
    uuid: String,
    outstanding: HashMap<String, Task>,
    /// Last assignment, to rotate among equally loaded engines.
    last_used: u64,
    skip_until: Option<Instant>,
}

/// A task can run somewhere: it names no targets, or one of them is live.
fn feasible(engines: &[EngineSlot], task: &Task) -> bool {
    task.targets.is_empty() || engines.iter().any(|e| task.targets.contains(&e.uuid))
}

pub(crate) struct TaskScheduler {
    pub client: zmq::Socket,
    pub engine: zmq::Socket,
    pub session: Arc<Session>,
    pub engines_rx: Receiver<EngineEvent>,
    pub hub: Sender<HubEvent>,
    pub stop: Arc<Stop>,
}

struct State {
    engines: Vec<EngineSlot>,
    queue: VecDeque<Task>,
    counter: u64,
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
        let Some(md) = parse::<TaskMetadata>(&frames[d + 4], "task", "metadata") else {
            return;
        };
        let _ = self.hub.send(HubEvent::Record(RecordEvent::Request {
            queue: "task",
            client: frames[0].to_vec(),
            engine: None,
            parts: frames[d + 2..].iter().map(|f| f.to_vec()).collect(),
        }));
        let task = Task {
            client: frames[0].to_vec(),
            msg_id: ids.msg_id,
            msg_type: ids.msg_type,
            header,
            targets: md.targets.unwrap_or_default(),
            frames,
        };
        let _ = self.hub.send(HubEvent::TaskSubmitted {
            msg_id: task.msg_id.clone(),
        });
        if !st.engines.is_empty() && !self.feasible(st, &task) {
            self.fail(
                task,
                None,
                "ImpossibleDependency",
                "no live engine among the task's targets",
            );
            return;
        }
        st.queue.push_back(task);
    }

    fn feasible(&self, st: &State, task: &Task) -> bool {
        feasible(&st.engines, task)
    }

    /// Places queued tasks, in order, while eligible engines have room.
    fn dispatch(&self, st: &mut State) {
        let now = Instant::now();
        let mut waiting = VecDeque::new();
        while let Some(task) = st.queue.pop_front() {
            let choice = st
                .engines
                .iter()
                .enumerate()
                .filter(|(_, e)| e.outstanding.len() < HWM)
                .filter(|(_, e)| e.skip_until.is_none_or(|t| now >= t))
                .filter(|(_, e)| task.targets.is_empty() || task.targets.contains(&e.uuid))
                .min_by_key(|(_, e)| (e.outstanding.len(), e.last_used))
                .map(|(i, _)| i);
            let Some(i) = choice else {
                waiting.push_back(task);
                continue;
            };
            let slot = &mut st.engines[i];
            let mut frames = Vec::with_capacity(task.frames.len() + 1);
            frames.push(zmq::Message::from(slot.uuid.as_bytes()));
            let Task {
                client,
                msg_id,
                msg_type,
                header,
                targets,
                frames: raw,
            } = task;
            frames.extend(raw);
            match send_routed(&self.engine, frames) {
                Ok(()) => {
                    st.counter += 1;
                    slot.last_used = st.counter;
                    debug!(msg_id, engine = slot.uuid, "task assigned");
                    let _ = self.hub.send(HubEvent::TaskAssigned {
                        engine: slot.uuid.clone(),
                        msg_id: msg_id.clone(),
                    });
                    // The frames were consumed by the send; keep what a failure needs.
                    slot.outstanding.insert(
                        msg_id.clone(),
                        Task {
                            client,
                            msg_id,
                            msg_type,
                            header,
                            targets,
                            frames: Vec::new(),
                        },
                    );
                }
                Err((error, mut back)) => {
                    debug!(engine = slot.uuid, %error, "engine not reachable yet");
                    slot.skip_until = Some(now + UNREACHABLE_BACKOFF);
                    back.remove(0);
                    waiting.push_back(Task {
                        client,
                        msg_id,
                        msg_type,
                        header,
                        targets,
                        frames: back,
                    });
                }
            }
        }
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
        let engine = String::from_utf8_lossy(&frames[0]).into_owned();
        let _ = self.hub.send(HubEvent::Record(RecordEvent::Reply {
            engine: Some(engine.clone()),
            parts: frames[d + 2..].iter().map(|f| f.to_vec()).collect(),
        }));
        if let (Some(slot), Some(msg_id)) = (
            st.engines.iter_mut().find(|e| e.uuid == engine),
            parent.msg_id.as_ref(),
        ) {
            if slot.outstanding.remove(msg_id).is_some() {
                let _ = self.hub.send(HubEvent::TaskDone {
                    engine: engine.clone(),
                    msg_id: msg_id.clone(),
                });
            }
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
                for (_, task) in slot.outstanding {
                    let evalue =
                        format!("Engine {uuid:?} died while running task {:?}", task.msg_id);
                    self.fail(task, Some(&uuid), "EngineError", &evalue);
                }
                if !st.engines.is_empty() {
                    let queued: Vec<Task> = st.queue.drain(..).collect();
                    let (ok, impossible): (Vec<Task>, Vec<Task>) =
                        queued.into_iter().partition(|t| feasible(&st.engines, t));
                    st.queue = ok.into();
                    for t in impossible {
                        self.fail(
                            t,
                            None,
                            "ImpossibleDependency",
                            "no live engine among the task's targets",
                        );
                    }
                }
            }
        }
    }

    /// Sends the client a signed error reply (parent = the request) for a task the
    /// scheduler gives up on, as ipyparallel's `handle_stranded_tasks` does.
    fn fail(&self, task: Task, engine: Option<&str>, ename: &str, evalue: &str) {
        warn!(
            msg_id = task.msg_id,
            ename, evalue, "task failed in the scheduler"
        );
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
