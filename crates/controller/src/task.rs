//! The load-balancing task scheduler (ipyparallel's `leastload` with its `hwm`, or an
//! automatic one: see [`pace`]): a client-side ROUTER and an engine-side ROUTER (identity
//! `task_out`). A task goes to the live engine with the fewest outstanding tasks among
//! those its constraints allow (`metadata.targets`, `follow`, the engines it already
//! failed on); it waits here while its `after` dependencies are unmet or every eligible
//! engine is busy. Raw frames
//! are forwarded unchanged (`[engine, client, msg..]`); replies go back as
//! `[client, engine, msg..]`. A failed task is re-run elsewhere while `retries` last,
//! and so is one whose engine answered `dependencies_met: false`.
//!
//! The decisions live in [`state`] (and its rules in [`crate::dependency`]); this module
//! only receives, calls the state and performs the [`TaskAction`]s it returns.

mod constrained;
mod pace;
mod state;

use corral_wire::Session;
use crossbeam_channel::Receiver;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;
use tracing::debug;

use crate::config::TaskHwm;
use crate::events::{EngineEvent, HubEvent, HubSender};
use crate::sockets::{readable, recv_frames, send_bytes, send_routed};
use crate::stop::Stop;
use state::{SchedulerState, TaskAction};

const POLL_MS: i64 = 10;

pub(crate) struct TaskScheduler {
    pub client: zmq::Socket,
    pub engine: zmq::Socket,
    pub session: Arc<Session>,
    pub engines_rx: Receiver<EngineEvent>,
    pub hub: HubSender,
    pub stop: Arc<Stop>,
    /// How many tasks an engine may hold.
    pub hwm: TaskHwm,
}

impl TaskScheduler {
    pub(crate) fn run(self) {
        let mut state = SchedulerState::new(self.session.clone(), self.hwm);
        while !self.stop.is_set() {
            let now = Instant::now();
            let poll_ms = state.next_wake().map_or(POLL_MS, |t| {
                (t.saturating_duration_since(now).as_millis() as i64).clamp(0, POLL_MS)
            });
            let mut items = [
                self.client.as_poll_item(zmq::POLLIN),
                self.engine.as_poll_item(zmq::POLLIN),
            ];
            if readable(&mut items, poll_ms) {
                let (from_client, from_engine) = (items[0].is_readable(), items[1].is_readable());
                if from_engine {
                    while let Some(frames) = recv_frames(&self.engine) {
                        self.apply_engine_events(&mut state);
                        let actions = state.reply(frames, Instant::now());
                        self.perform(&mut state, actions);
                    }
                }
                if from_client {
                    while let Some(frames) = recv_frames(&self.client) {
                        // The hub announces an engine to the scheduler before it notifies
                        // clients, so a task sent after that notification finds it here.
                        self.apply_engine_events(&mut state);
                        let actions = state.submit(frames, Instant::now());
                        self.perform(&mut state, actions);
                    }
                }
            }
            self.apply_engine_events(&mut state);
            let actions = state.tick(Instant::now());
            self.perform(&mut state, actions);
        }
    }

    /// Applies every engine event the hub has sent so far.
    fn apply_engine_events(&self, state: &mut SchedulerState) {
        while let Ok(event) = self.engines_rx.try_recv() {
            let actions = state.engine_event(event, Instant::now());
            self.perform(state, actions);
        }
    }

    fn perform(&self, state: &mut SchedulerState, actions: Vec<TaskAction>) {
        let mut todo = VecDeque::from(actions);
        while let Some(action) = todo.pop_front() {
            match action {
                TaskAction::Assign {
                    engine,
                    msg_id,
                    frames,
                } => match send_routed(&self.engine, frames) {
                    Ok(()) => {
                        let _ = self.hub.send(HubEvent::TaskAssigned {
                            engine: engine.to_string(),
                            msg_id,
                        });
                    }
                    Err((error, _)) => {
                        debug!(%engine, %error, "task not sent");
                        todo.extend(state.unreachable(&engine, &msg_id, Instant::now()));
                    }
                },
                TaskAction::Relay(frames) => {
                    if let Err((error, _)) = send_routed(&self.client, frames) {
                        debug!(socket = "task", %error, "client gone; reply dropped");
                    }
                }
                TaskAction::Answer(frames) => send_bytes(&self.client, frames, "task"),
                TaskAction::Hub(event) => {
                    let _ = self.hub.send(event);
                }
            }
        }
    }
}
