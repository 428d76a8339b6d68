//! The dashboard's view of the hub: engines, recent tasks and the published-data
//! previews of the tasks browsers watch, as one JSON document. Built on the hub thread
//! (a child module of `hub`, so it reads the state directly) and handed to the dashboard
//! thread, which never touches the hub's state.

use serde_json::{json, Value};
use std::collections::HashSet;

use super::HubState;
use crate::records::Record;

/// Tasks listed, newest first: enough to find a running one, small enough to rebuild
/// a few times a second.
const TASKS_SHOWN: usize = 100;
/// Dead engines listed after the live ones.
const DEAD_SHOWN: usize = 32;

impl HubState {
    /// The document pushed to dashboard browsers; `watched` are the msg_ids whose
    /// published data to include.
    pub(crate) fn dashboard_view(&self, watched: &HashSet<String>) -> Value {
        let mut engines: Vec<Value> = self
            .registry
            .live()
            .map(|e| {
                json!({
                    "id": e.id,
                    "uuid": e.uuid,
                    "alive": true,
                    "load": self.queues.load(&e.uuid),
                })
            })
            .collect();
        engines.extend(self.deaths.iter().rev().take(DEAD_SHOWN).map(|(uuid, id, when)| {
            json!({"id": id, "uuid": uuid, "alive": false, "load": 0, "died": when})
        }));
        let tasks: Vec<Value> = self
            .records
            .newest(TASKS_SHOWN)
            .into_iter()
            .map(|r| self.task_row(r))
            .collect();
        let mut data = serde_json::Map::new();
        for msg_id in watched {
            if let Some(rec) = self.records.get(msg_id) {
                let per_engine: Vec<Value> = rec
                    .published
                    .previews()
                    .into_iter()
                    .map(|p| {
                        json!({
                            "engine_id": self.engine_facts(p.engine).id,
                            "engine_uuid": p.engine,
                            "seq": p.seq,
                            "received": p.received,
                            "preview": p.preview,
                        })
                    })
                    .collect();
                data.insert(msg_id.clone(), Value::Array(per_engine));
            }
        }
        json!({
            "engines": engines,
            "pending_registrations": self.registry.pending_count(),
            "tasks": tasks,
            "data": data,
        })
    }

    fn task_row(&self, r: &Record) -> Value {
        let engine_id = r
            .get("engine_uuid")
            .as_str()
            .and_then(|u| self.engine_facts(u).id);
        let state = if !r.get("completed").is_null() {
            r.get("result_content")
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("done")
                .to_string()
        } else if engine_id.is_some() {
            "running".to_string()
        } else {
            "queued".to_string()
        };
        json!({
            "msg_id": r.get("msg_id"),
            "engine_id": engine_id,
            "state": state,
            "submitted": r.get("submitted"),
            "has_data": !r.published.is_empty(),
        })
    }
}
