//! The hub's queue accounting: what each engine has outstanding (direct requests and
//! load-balanced tasks, in submission order), what it completed lately, and the
//! load-balanced tasks not placed yet. Fed by the relays' and schedulers' events; read by
//! `queue_request`, `load_request`, `purge_request` and `result_request`.
//!
//! Everything here is bounded: outstanding work leaves on its reply (or with its engine),
//! and each engine's `completed` keeps the newest [`COMPLETED_LIMIT`] msg_ids, as many as
//! the task records keep (older ones are gone from the records as well). The history of
//! msg_ids is the records' (`Records::history`), so it is bounded with them.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Completed msg_ids kept per engine: ipyparallel's `DictDB` record limit.
pub(crate) const COMPLETED_LIMIT: usize = 1024;

/// One engine's queues, keyed by the engine's uuid in [`Queues`].
#[derive(Debug, Default)]
pub(crate) struct EngineQueues {
    /// Outstanding direct requests, by submission sequence.
    queue: BTreeMap<u64, String>,
    /// Outstanding load-balanced tasks placed on this engine.
    tasks: BTreeMap<u64, String>,
    /// The newest completed msg_ids, oldest first, at most [`COMPLETED_LIMIT`].
    completed: VecDeque<String>,
}

impl EngineQueues {
    fn complete(&mut self, msg_id: String) {
        if self.completed.len() == COMPLETED_LIMIT {
            self.completed.pop_front();
        }
        self.completed.push_back(msg_id);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Queues {
    engines: HashMap<String, EngineQueues>,
    /// Submission sequence: orders the queues.
    seq: u64,
    unassigned: BTreeMap<String, u64>,
}

impl Queues {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Starts counting for a registered engine.
    pub(crate) fn add_engine(&mut self, uuid: &str) {
        self.engines.entry(uuid.to_string()).or_default();
    }

    /// Stops counting for an engine; returns its outstanding direct requests (stranded:
    /// its load-balanced tasks are the task scheduler's to fail or retry).
    pub(crate) fn remove_engine(&mut self, uuid: &str) -> Vec<String> {
        self.engines
            .remove(uuid)
            .map(|e| e.queue.into_values().collect())
            .unwrap_or_default()
    }

    /// A direct request went to `engine` (unknown engines are not counted).
    pub(crate) fn mux_request(&mut self, engine: &str, msg_id: String) {
        let seq = self.next_seq();
        if let Some(e) = self.engines.get_mut(engine) {
            e.queue.insert(seq, msg_id);
        }
    }

    pub(crate) fn mux_reply(&mut self, engine: &str, msg_id: String) {
        if let Some(e) = self.engines.get_mut(engine) {
            e.queue.retain(|_, m| *m != msg_id);
            e.complete(msg_id);
        }
    }

    pub(crate) fn task_submitted(&mut self, msg_id: String) {
        let seq = self.next_seq();
        self.unassigned.insert(msg_id, seq);
    }

    pub(crate) fn task_assigned(&mut self, engine: &str, msg_id: String) {
        let seq = self.unassigned.remove(&msg_id).unwrap_or(0);
        if let Some(e) = self.engines.get_mut(engine) {
            e.tasks.insert(seq, msg_id);
        }
    }

    pub(crate) fn task_done(&mut self, engine: &str, msg_id: String) {
        if let Some(e) = self.engines.get_mut(engine) {
            e.tasks.retain(|_, m| *m != msg_id);
            e.complete(msg_id);
        }
    }

    pub(crate) fn task_failed(&mut self, engine: Option<&str>, msg_id: &str) {
        self.unassigned.remove(msg_id);
        if let Some(e) = engine.and_then(|u| self.engines.get_mut(u)) {
            e.tasks.retain(|_, m| m != msg_id);
        }
    }

    /// Every msg_id still waiting or running.
    pub(crate) fn pending_ids(&self) -> HashSet<&str> {
        let queued = self
            .engines
            .values()
            .flat_map(|e| e.queue.values().chain(e.tasks.values()));
        queued
            .chain(self.unassigned.keys())
            .map(String::as_str)
            .collect()
    }

    /// Empties `engine`'s completed list and returns what was in it.
    pub(crate) fn drain_completed(&mut self, engine: &str) -> Vec<String> {
        self.engines
            .get_mut(engine)
            .map(|e| std::mem::take(&mut e.completed).into())
            .unwrap_or_default()
    }

    /// Outstanding requests and tasks of one engine (`load_request`).
    pub(crate) fn load(&self, engine: &str) -> usize {
        self.engines
            .get(engine)
            .map_or(0, |e| e.queue.len() + e.tasks.len())
    }

    /// One engine's `queue_request` entry: counts, or msg_ids when `verbose`.
    pub(crate) fn status(&self, engine: &str, verbose: bool) -> Value {
        let empty = EngineQueues::default();
        let e = self.engines.get(engine).unwrap_or(&empty);
        if verbose {
            json!({
                "queue": e.queue.values().collect::<Vec<_>>(),
                "completed": e.completed,
                "tasks": e.tasks.values().collect::<Vec<_>>(),
            })
        } else {
            json!({"queue": e.queue.len(), "completed": e.completed.len(), "tasks": e.tasks.len()})
        }
    }

    /// The `unassigned` entry of a `queue_request` reply, in submission order.
    pub(crate) fn unassigned_status(&self, verbose: bool) -> Value {
        if verbose {
            let mut ids: Vec<(&u64, &String)> =
                self.unassigned.iter().map(|(m, s)| (s, m)).collect();
            ids.sort();
            json!(ids.into_iter().map(|(_, m)| m).collect::<Vec<_>>())
        } else {
            json!(self.unassigned.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_lists_keep_the_newest_only() {
        let mut q = Queues::default();
        q.add_engine("e");
        for i in 0..COMPLETED_LIMIT + 10 {
            q.mux_request("e", format!("m{i}"));
            q.mux_reply("e", format!("m{i}"));
        }
        let status = q.status("e", true);
        let completed = status["completed"].as_array().unwrap();
        assert_eq!(completed.len(), COMPLETED_LIMIT);
        assert_eq!(completed[0], "m10");
        assert!(q.pending_ids().is_empty());
        assert_eq!(q.drain_completed("e").len(), COMPLETED_LIMIT);
    }
}
