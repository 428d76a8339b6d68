//! Published data a task record keeps (docs/PROTOCOL.md §12.1), which ipyparallel's hub
//! drops: per engine, the latest snapshot, its sequence number and times, and a bounded
//! history of earlier updates.
//!
//! The controller never unpickles, so it cannot merge two updates' dicts. It keeps each
//! update whole (its `keys` and frames) and drops an older one once later updates carry
//! every key it carried; the reader `dict.update`s the kept ones oldest first, which gives
//! exactly the client's merged `ar.data`. A task that publishes the same keys each time
//! costs one update. Updates are shared (`Arc`) between the snapshot and the history, so
//! the newest few are held once.

use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// At most this many updates make one snapshot (a task that publishes ever new keys);
/// past it the oldest go and the snapshot says it is incomplete.
pub(crate) const SNAPSHOT_UPDATES: usize = 256;

/// Bounds of the history of earlier updates, per (task, engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Earlier updates kept (0: none).
    pub updates: usize,
    /// Bytes of earlier updates' frames kept.
    pub bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            updates: 10,
            bytes: 4 << 20,
        }
    }
}

/// One `data_message` as recorded.
#[derive(Debug)]
struct Update {
    seq: u64,
    keys: Vec<String>,
    /// The message header's date (the engine's clock).
    published: Value,
    /// The controller's clock when recorded.
    received: String,
    /// Shared with the message they came in, and with the task database's writer.
    frames: Vec<Bytes>,
}

impl Update {
    fn bytes(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    fn meta(&self) -> Value {
        json!({
            "seq": self.seq,
            "keys": self.keys,
            "published": self.published,
            "received": self.received,
            "nbuffers": self.frames.len(),
        })
    }
}

/// What one engine published for one task.
#[derive(Debug, Clone)]
struct EngineData {
    engine: String,
    seq: u64,
    /// The latest snapshot, oldest update first, each with the keys no later update
    /// carried (an update goes once none are left).
    snapshot: Vec<(Arc<Update>, Vec<String>)>,
    incomplete: bool,
    /// Earlier updates (all but the newest), oldest first.
    history: VecDeque<Arc<Update>>,
    history_dropped: u64,
}

impl EngineData {
    /// Bytes held, each update counted once however many lists hold it.
    fn bytes(&self) -> usize {
        let mut seen = HashSet::new();
        self.snapshot
            .iter()
            .map(|(u, _)| u)
            .chain(self.history.iter())
            .filter(|u| seen.insert(u.seq))
            .map(|u| u.bytes())
            .sum()
    }

    fn add(&mut self, update: Update, limits: HistoryLimits) {
        let update = Arc::new(update);
        if let Some((newest, _)) = self.snapshot.last() {
            if limits.updates > 0 {
                self.history.push_back(newest.clone());
            } else {
                self.history_dropped += 1;
            }
        }
        let mut held: usize = self.history.iter().map(|u| u.bytes()).sum();
        while self.history.len() > limits.updates
            || (held > limits.bytes && !self.history.is_empty())
        {
            if let Some(old) = self.history.pop_front() {
                held -= old.bytes();
                self.history_dropped += 1;
            }
        }
        for (_, left) in &mut self.snapshot {
            left.retain(|k| !update.keys.contains(k));
        }
        self.snapshot.retain(|(_, left)| !left.is_empty());
        let keys = update.keys.clone();
        self.snapshot.push((update, keys));
        if self.snapshot.len() > SNAPSHOT_UPDATES {
            self.snapshot.remove(0);
            self.incomplete = true;
        }
    }
}

/// The engine facts a reader is told beside the data: id, alive, and when it died.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EngineFacts {
    pub id: Option<u32>,
    pub alive: bool,
    pub died: Option<String>,
}

/// One engine's merged preview of a task's published data (the dashboard's view).
pub(crate) struct EnginePreview<'a> {
    pub engine: &'a str,
    pub seq: u64,
    pub received: Option<&'a str>,
    pub preview: &'a serde_json::Map<String, Value>,
}

/// The published data of one task record.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    /// In order of each engine's first publication.
    engines: Vec<EngineData>,
    /// Per engine, the engines' `corral_preview` summaries merged key by key (newest
    /// wins): what the dashboard shows, since the controller cannot unpickle the data.
    previews: Vec<(String, serde_json::Map<String, Value>)>,
}

impl Published {
    /// Records one update from `engine`; returns the bytes held before and after, for the
    /// record store's size accounting.
    pub(crate) fn add(
        &mut self,
        engine: &str,
        keys: Vec<String>,
        published: Value,
        received: &str,
        frames: Vec<Bytes>,
        limits: HistoryLimits,
    ) -> (usize, usize) {
        let pos = match self.engines.iter().position(|e| e.engine == engine) {
            Some(pos) => pos,
            None => {
                self.engines.push(EngineData {
                    engine: engine.to_string(),
                    seq: 0,
                    snapshot: Vec::new(),
                    incomplete: false,
                    history: VecDeque::new(),
                    history_dropped: 0,
                });
                self.engines.len() - 1
            }
        };
        let e = &mut self.engines[pos];
        let before = e.bytes();
        e.seq += 1;
        let update = Update {
            seq: e.seq,
            keys,
            published,
            received: received.to_string(),
            frames,
        };
        e.add(update, limits);
        (before, e.bytes())
    }

    /// Merges an update's `corral_preview` (an object of per-key summaries) into the
    /// engine's; anything else is ignored.
    pub(crate) fn add_preview(&mut self, engine: &str, preview: &Value) {
        let Some(keys) = preview.as_object() else {
            return;
        };
        let pos = match self.previews.iter().position(|(e, _)| e == engine) {
            Some(pos) => pos,
            None => {
                self.previews.push((engine.to_string(), Default::default()));
                self.previews.len() - 1
            }
        };
        for (k, v) in keys {
            self.previews[pos].1.insert(k.clone(), v.clone());
        }
    }

    /// Per engine: its update count, newest receive time and merged preview.
    pub(crate) fn previews(&self) -> Vec<EnginePreview<'_>> {
        self.previews
            .iter()
            .map(|(engine, preview)| {
                let data = self.engines.iter().find(|e| &e.engine == engine);
                EnginePreview {
                    engine,
                    seq: data.map_or(0, |e| e.seq),
                    received: data
                        .and_then(|e| e.snapshot.last())
                        .map(|(u, _)| u.received.as_str()),
                    preview,
                }
            })
            .collect()
    }

    /// True once any engine published for this task.
    pub(crate) fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Bytes held over all engines.
    pub(crate) fn bytes(&self) -> usize {
        self.engines.iter().map(EngineData::bytes).sum()
    }

    /// The engine entries of a `data_reply` (PROTOCOL.md §12.2) and their frames, in the
    /// order the entries list them (none when `with_frames` is false: a reader that only
    /// wants the sequence numbers and times).
    pub(crate) fn entries(
        &self,
        history: bool,
        with_frames: bool,
        facts: &dyn Fn(&str) -> EngineFacts,
    ) -> (Value, Vec<Vec<u8>>) {
        let mut entries = Vec::new();
        let mut frames = Vec::new();
        for e in &self.engines {
            let f = facts(&e.engine);
            let newest = e.snapshot.last().map(|(u, _)| u);
            let kept_history: Vec<&Arc<Update>> = if history {
                e.history.iter().collect()
            } else {
                Vec::new()
            };
            let snapshot: Vec<&Arc<Update>> = e.snapshot.iter().map(|(u, _)| u).collect();
            if with_frames {
                for u in snapshot.iter().chain(kept_history.iter()) {
                    frames.extend(u.frames.iter().map(|f| f.to_vec()));
                }
            }
            entries.push(json!({
                "engine_uuid": e.engine,
                "engine_id": f.id,
                "engine_alive": f.alive,
                "engine_died": f.died,
                "seq": e.seq,
                "published": newest.map_or(Value::Null, |u| u.published.clone()),
                "received": newest.map(|u| u.received.clone()),
                "incomplete": e.incomplete,
                "updates": snapshot.iter().map(|u| u.meta()).collect::<Vec<_>>(),
                "history": kept_history.iter().map(|u| u.meta()).collect::<Vec<_>>(),
                "history_dropped": e.history_dropped,
            }));
        }
        (Value::Array(entries), frames)
    }
}

/// How [`Published`] is written to the task database: one JSON description (engines,
/// updates, which updates form the snapshot and the history) and the updates' frames in
/// the order the description lists the updates. Each update is stored once, however many
/// lists share it.
impl Published {
    pub(crate) fn to_stored(&self) -> (Value, Vec<Bytes>) {
        let mut frames = Vec::new();
        let engines: Vec<Value> = self
            .engines
            .iter()
            .map(|e| {
                let mut seen = HashSet::new();
                let updates: Vec<Value> = e
                    .snapshot
                    .iter()
                    .map(|(u, _)| u)
                    .chain(e.history.iter())
                    .filter(|u| seen.insert(u.seq))
                    .map(|u| {
                        frames.extend(u.frames.iter().cloned());
                        u.meta()
                    })
                    .collect();
                json!({
                    "engine": e.engine,
                    "seq": e.seq,
                    "incomplete": e.incomplete,
                    "history_dropped": e.history_dropped,
                    "updates": updates,
                    "snapshot": e.snapshot.iter().map(|(u, left)| json!([u.seq, left])).collect::<Vec<_>>(),
                    "history": e.history.iter().map(|u| u.seq).collect::<Vec<_>>(),
                })
            })
            .collect();
        (Value::Array(engines), frames)
    }

    /// The inverse of [`Published::to_stored`]; `None` when the description does not
    /// match its frames (a damaged row), which the caller logs.
    pub(crate) fn from_stored(desc: &Value, frames: Vec<Bytes>) -> Option<Published> {
        let mut frames = frames.into_iter();
        let mut engines = Vec::new();
        for e in desc.as_array()? {
            let mut updates = std::collections::HashMap::new();
            for u in e["updates"].as_array()? {
                let n = u["nbuffers"].as_u64()? as usize;
                let taken: Vec<Bytes> = frames.by_ref().take(n).collect();
                if taken.len() != n {
                    return None;
                }
                let seq = u["seq"].as_u64()?;
                let update = Update {
                    seq,
                    keys: serde_json::from_value(u["keys"].clone()).ok()?,
                    published: u["published"].clone(),
                    received: u["received"].as_str()?.to_string(),
                    frames: taken,
                };
                updates.insert(seq, Arc::new(update));
            }
            let mut snapshot = Vec::new();
            for s in e["snapshot"].as_array()? {
                let left: Vec<String> = serde_json::from_value(s[1].clone()).ok()?;
                snapshot.push((updates.get(&s[0].as_u64()?)?.clone(), left));
            }
            let mut history = VecDeque::new();
            for seq in e["history"].as_array()? {
                history.push_back(updates.get(&seq.as_u64()?)?.clone());
            }
            engines.push(EngineData {
                engine: e["engine"].as_str()?.to_string(),
                seq: e["seq"].as_u64()?,
                snapshot,
                incomplete: e["incomplete"].as_bool()?,
                history,
                history_dropped: e["history_dropped"].as_u64()?,
            });
        }
        // Previews are for the dashboard's live view only: not stored, not restored.
        frames.next().is_none().then_some(Published {
            engines,
            previews: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(p: &mut Published, engine: &str, keys: &[&str], payload: &[u8], limits: HistoryLimits) {
        p.add(
            engine,
            keys.iter().map(|k| k.to_string()).collect(),
            json!("2026-01-01T00:00:00.000000Z"),
            "R",
            vec![Bytes::copy_from_slice(payload)],
            limits,
        );
    }

    fn alive(_: &str) -> EngineFacts {
        EngineFacts {
            id: Some(0),
            alive: true,
            died: None,
        }
    }

    fn seqs(list: &Value) -> Vec<u64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|u| u["seq"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn the_snapshot_keeps_only_updates_with_keys_not_covered_later() {
        let mut p = Published::default();
        let l = HistoryLimits::default();
        add(&mut p, "e", &["a", "b"], b"1", l);
        add(&mut p, "e", &["b", "c"], b"2", l); // 1 still holds the only `a`
        let (v, frames) = p.entries(false, true, &alive);
        assert_eq!(seqs(&v[0]["updates"]), vec![1, 2]);
        assert_eq!(frames, vec![b"1".to_vec(), b"2".to_vec()]);
        add(&mut p, "e", &["a"], b"3", l); // 1's keys are all carried later now
        let (v, _) = p.entries(false, true, &alive);
        assert_eq!(seqs(&v[0]["updates"]), vec![2, 3]);
        assert_eq!(
            v[0]["updates"][0]["keys"],
            json!(["b", "c"]),
            "as published"
        );
        add(&mut p, "e", &["a", "b", "c"], b"4", l);
        let (v, frames) = p.entries(false, true, &alive);
        assert_eq!(seqs(&v[0]["updates"]), vec![4]);
        assert_eq!(frames, vec![b"4".to_vec()]);
        assert_eq!(v[0]["seq"], 4);
        assert_eq!(v[0]["history"], json!([]), "history only when asked");
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes_and_counts_what_it_dropped() {
        let mut p = Published::default();
        let l = HistoryLimits {
            updates: 3,
            bytes: 1 << 20,
        };
        for i in 0..10u8 {
            add(&mut p, "e", &["i"], &[i], l);
        }
        let (v, frames) = p.entries(true, true, &alive);
        assert_eq!(seqs(&v[0]["updates"]), vec![10]);
        assert_eq!(seqs(&v[0]["history"]), vec![7, 8, 9]);
        assert_eq!(v[0]["history_dropped"], 6);
        assert_eq!(frames, vec![vec![9], vec![6], vec![7], vec![8]]);
        assert_eq!(p.bytes(), 4);

        let mut p = Published::default();
        let l = HistoryLimits {
            updates: 100,
            bytes: 25,
        };
        for _ in 0..10 {
            add(&mut p, "e", &["i"], &[0; 10], l);
        }
        let (v, _) = p.entries(true, true, &alive);
        assert_eq!(
            seqs(&v[0]["history"]),
            vec![8, 9],
            "20 bytes fit, 30 do not"
        );
        let none = HistoryLimits {
            updates: 0,
            bytes: 0,
        };
        let mut p = Published::default();
        add(&mut p, "e", &["i"], b"x", none);
        add(&mut p, "e", &["i"], b"y", none);
        let (v, _) = p.entries(true, true, &alive);
        assert_eq!(v[0]["history"], json!([]));
        assert_eq!(v[0]["history_dropped"], 1);
    }

    #[test]
    fn engines_are_kept_apart_and_a_snapshot_of_ever_new_keys_is_bounded() {
        let mut p = Published::default();
        let l = HistoryLimits::default();
        add(&mut p, "e1", &["a"], b"1", l);
        add(&mut p, "e2", &["a"], b"2", l);
        add(&mut p, "e1", &["a"], b"3", l);
        let facts = |uuid: &str| EngineFacts {
            id: Some(if uuid == "e1" { 1 } else { 2 }),
            alive: uuid == "e1",
            died: (uuid == "e2").then(|| "D".to_string()),
        };
        let (v, frames) = p.entries(false, true, &facts);
        assert_eq!(v[0]["engine_uuid"], "e1");
        assert_eq!(v[0]["seq"], 2);
        assert_eq!(v[1]["engine_uuid"], "e2");
        assert_eq!(v[1]["engine_alive"], false);
        assert_eq!(v[1]["engine_died"], "D");
        assert_eq!(frames, vec![b"3".to_vec(), b"2".to_vec()]);

        let mut p = Published::default();
        for i in 0..(SNAPSHOT_UPDATES + 5) {
            add(&mut p, "e", &[&format!("k{i}")], b"x", l);
        }
        let (v, _) = p.entries(false, true, &alive);
        assert_eq!(v[0]["updates"].as_array().unwrap().len(), SNAPSHOT_UPDATES);
        assert_eq!(v[0]["incomplete"], true);
    }

    #[test]
    fn stored_and_read_back_it_answers_the_same() {
        let mut p = Published::default();
        let l = HistoryLimits::default();
        add(&mut p, "e1", &["a", "b"], b"1", l);
        add(&mut p, "e1", &["b"], b"2", l);
        add(&mut p, "e2", &["a"], b"3", l);
        let (desc, frames) = p.to_stored();
        assert_eq!(frames.len(), 3, "each update once");
        let back = Published::from_stored(&desc, frames.clone()).expect("reads back");
        assert_eq!(
            back.entries(true, true, &alive),
            p.entries(true, true, &alive)
        );
        assert_eq!(back.bytes(), p.bytes());
        assert!(Published::from_stored(&desc, frames[..2].to_vec()).is_none());
    }
}
