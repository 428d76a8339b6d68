//! The outgoing IOPub queue of ONE corral subscriber: what the controller holds for a
//! client that reads slower than engines publish.
//!
//! Two rules keep it bounded without a silent gap:
//!
//! * **Conflation of published data.** A `data_message` is a *partial* dict update: the
//!   client merges its keys into the task's data (`dict.update`). So a pending update may
//!   be dropped only when later pending updates of the same (task, engine) re-send every
//!   one of its keys; then the client's merged result is the same with or without it.
//!   An older update whose keys are not all covered is kept, not merged: merging would
//!   mean unpickling, and the controller never unpickles. This is the rule the engine
//!   (`outgoing::conflate`) and the client store apply, so a task that re-publishes the
//!   same keys costs one pending update per (task, engine) however long the reader sleeps.
//!   The newer update keeps its own place at the tail, so no data moves after the task's
//!   `status: idle` (only an older copy disappears).
//! * **A byte budget for everything else.** stream, status, results, errors and displays
//!   are never conflated or dropped while the queue is within its budget. Admitting a
//!   message that would exceed it cuts the subscriber off instead: everything queued is
//!   dropped and replaced by one notice (built by the caller) that says what was lost
//!   (the parent msg_ids, or "all" past [`MAX_LOST_IDS`]); messages after the notice are
//!   complete again. A reader that stays stuck is cut off again; its notice then reports
//!   every loss since the last notice it received. Memory: budget + one message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// At most this many lost msg_ids are named in a notice; past it the notice says "all".
pub(crate) const MAX_LOST_IDS: usize = 10_000;

/// What the relay learned about a message once, shared by every subscriber's copy.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    /// The parent request's msg_id (None for unparented messages).
    pub parent: Option<String>,
    /// Set for `data_message`s: what conflation needs.
    pub data: Option<DataMeta>,
}

#[derive(Debug)]
pub(crate) struct DataMeta {
    /// `metadata.engine` (empty when absent).
    pub engine: String,
    /// `content.keys`: the published dict's keys.
    pub keys: Vec<String>,
}

/// One queued message: its frames (this subscriber's references) and what it is.
pub(crate) struct Queued<F> {
    pub frames: Vec<F>,
    pub bytes: usize,
    pub meta: Arc<Meta>,
    pub kind: Kind,
}

/// Relayed engine output, or a message the controller wrote for this subscriber (not
/// counted as forwarded or lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Relayed,
    Reply,
    /// A cut-off notice: once delivered, the next notice reports only newer losses.
    Notice,
}

/// What a cut-off lost, since the subscriber's last delivered notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CutOff {
    /// Parent msg_ids of dropped messages, sorted (empty with `lost_all`).
    pub lost_msg_ids: Vec<String>,
    /// More than [`MAX_LOST_IDS`] tasks lost output: treat every unfinished task as hit.
    pub lost_all: bool,
    pub dropped_messages: u64,
    pub dropped_bytes: u64,
}

/// Counters a client can ask for (`iopub_stats_request`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    /// Engine messages handed to the socket for this subscriber.
    pub forwarded: u64,
    /// Data updates dropped because later updates re-sent all their keys.
    pub conflated: u64,
    /// Times the subscriber was cut off, and what that dropped in total.
    pub cut_offs: u64,
    pub dropped: u64,
}

type DataKey = (String, String);

pub(crate) struct SubscriberQueue<F> {
    /// In order; `None` marks an update conflated away (removed from the middle).
    entries: VecDeque<Option<Queued<F>>>,
    /// Sequence number of `entries[0]`.
    head: u64,
    /// Per (task, engine): sequence numbers of its pending data updates, oldest first.
    pending_data: HashMap<DataKey, Vec<u64>>,
    bytes: usize,
    live: usize,
    budget: usize,
    lost: HashSet<String>,
    lost_all: bool,
    lost_messages: u64,
    lost_bytes: u64,
    pub stats: QueueStats,
}

impl<F> SubscriberQueue<F> {
    pub(crate) fn new(budget: usize) -> Self {
        SubscriberQueue {
            entries: VecDeque::new(),
            head: 0,
            pending_data: HashMap::new(),
            bytes: 0,
            live: 0,
            budget,
            lost: HashSet::new(),
            lost_all: false,
            lost_messages: 0,
            lost_bytes: 0,
            stats: QueueStats::default(),
        }
    }

    /// Messages and bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Queues `msg`. If it does not fit the budget, the subscriber is cut off first and
    /// `notice` builds the message that tells it what was lost (queued before `msg`).
    pub(crate) fn push(&mut self, msg: Queued<F>, notice: impl FnOnce(&CutOff) -> Queued<F>) {
        let data_key = match (&msg.meta.parent, &msg.meta.data) {
            (Some(task), Some(data)) => Some((task.clone(), data.engine.clone())),
            _ => None,
        };
        if let (Some(key), Some(data)) = (&data_key, &msg.meta.data) {
            self.conflate(key, &data.keys);
        }
        if self.live > 0 && self.bytes + msg.bytes > self.budget {
            let (report, replies) = self.cut_off();
            self.append(notice(&report));
            for reply in replies {
                self.append(reply);
            }
        }
        self.compact_if_sparse();
        if let Some(key) = data_key {
            let seq = self.head + self.entries.len() as u64;
            self.pending_data.entry(key).or_default().push(seq);
        }
        self.append(msg);
    }

    fn append(&mut self, msg: Queued<F>) {
        self.bytes += msg.bytes;
        self.live += 1;
        self.entries.push_back(Some(msg));
    }

    /// Removes the holes conflation left, once they outnumber the messages: a reader that
    /// sleeps while one task publishes a million times must not cost a million holes.
    fn compact_if_sparse(&mut self) {
        if self.entries.len() <= 2 * self.live + 64 {
            return;
        }
        self.entries.retain(Option::is_some);
        self.pending_data.clear();
        for (i, q) in self.entries.iter().flatten().enumerate() {
            if let (Some(task), Some(data)) = (&q.meta.parent, &q.meta.data) {
                let key = (task.clone(), data.engine.clone());
                self.pending_data
                    .entry(key)
                    .or_default()
                    .push(self.head + i as u64);
            }
        }
    }

    /// Drops pending updates of `key` whose keys are all re-sent by later ones.
    fn conflate(&mut self, key: &DataKey, newest: &[String]) {
        let Some(seqs) = self.pending_data.get_mut(key) else {
            return;
        };
        let mut later: HashSet<String> = newest.iter().cloned().collect();
        let mut kept = Vec::with_capacity(seqs.len());
        for &seq in seqs.iter().rev() {
            let slot = &mut self.entries[(seq - self.head) as usize];
            let Some(meta) = slot.as_ref().map(|q| Arc::clone(&q.meta)) else {
                continue;
            };
            let keys = meta
                .data
                .as_ref()
                .map(|d| d.keys.as_slice())
                .unwrap_or_default();
            if !keys.is_empty() && keys.iter().all(|k| later.contains(k)) {
                if let Some(old) = slot.take() {
                    self.bytes -= old.bytes;
                    self.live -= 1;
                    self.stats.conflated += 1;
                }
            } else {
                later.extend(keys.iter().cloned());
                kept.push(seq);
            }
        }
        kept.reverse();
        *seqs = kept;
    }

    /// The next message to send, if any (skipping conflated holes).
    pub(crate) fn front_mut(&mut self) -> Option<&mut Queued<F>> {
        while matches!(self.entries.front(), Some(None)) {
            self.entries.pop_front();
            self.head += 1;
        }
        self.entries.front_mut().and_then(Option::as_mut)
    }

    /// The front message was handed to the socket: forget it.
    pub(crate) fn pop_sent(&mut self) {
        let _ = self.front_mut();
        let Some(Some(msg)) = self.entries.pop_front() else {
            return;
        };
        let seq = self.head;
        self.head += 1;
        self.bytes -= msg.bytes;
        self.live -= 1;
        match msg.kind {
            Kind::Notice => return self.clear_lost(),
            Kind::Reply => return,
            Kind::Relayed => {}
        }
        self.stats.forwarded += 1;
        if let (Some(task), Some(data)) = (&msg.meta.parent, &msg.meta.data) {
            let key = (task.clone(), data.engine.clone());
            if let Some(seqs) = self.pending_data.get_mut(&key) {
                seqs.retain(|&s| s != seq);
                if seqs.is_empty() {
                    self.pending_data.remove(&key);
                }
            }
        }
    }

    fn clear_lost(&mut self) {
        self.lost.clear();
        self.lost_all = false;
        self.lost_messages = 0;
        self.lost_bytes = 0;
    }

    /// Drops everything queued and reports every loss since the last delivered notice.
    /// Replies to the subscriber's own requests (tiny) are handed back, to be queued after
    /// the notice: someone waits for them.
    fn cut_off(&mut self) -> (CutOff, Vec<Queued<F>>) {
        self.stats.cut_offs += 1;
        let mut replies = Vec::new();
        for msg in self.entries.drain(..).flatten() {
            match msg.kind {
                Kind::Relayed => {}
                Kind::Reply => {
                    replies.push(msg);
                    continue;
                }
                Kind::Notice => continue,
            }
            self.lost_messages += 1;
            self.lost_bytes += msg.bytes as u64;
            self.stats.dropped += 1;
            if let Some(parent) = &msg.meta.parent {
                if self.lost.len() < MAX_LOST_IDS {
                    self.lost.insert(parent.clone());
                } else if !self.lost.contains(parent) {
                    self.lost_all = true;
                }
            }
        }
        self.head = 0;
        self.pending_data.clear();
        self.bytes = 0;
        self.live = 0;
        let mut lost_msg_ids: Vec<String> = if self.lost_all {
            Vec::new()
        } else {
            self.lost.iter().cloned().collect()
        };
        lost_msg_ids.sort();
        let report = CutOff {
            lost_msg_ids,
            lost_all: self.lost_all,
            dropped_messages: self.lost_messages,
            dropped_bytes: self.lost_bytes,
        };
        (report, replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(parent: &str, label: &str, bytes: usize) -> Queued<String> {
        Queued {
            frames: vec![label.to_owned()],
            bytes,
            meta: Arc::new(Meta {
                parent: Some(parent.into()),
                data: None,
            }),
            kind: Kind::Relayed,
        }
    }

    fn data(task: &str, engine: &str, keys: &[&str], label: &str) -> Queued<String> {
        Queued {
            frames: vec![label.to_owned()],
            bytes: 100,
            meta: Arc::new(Meta {
                parent: Some(task.into()),
                data: Some(DataMeta {
                    engine: engine.into(),
                    keys: keys.iter().map(|k| k.to_string()).collect(),
                }),
            }),
            kind: Kind::Relayed,
        }
    }

    fn notice(report: &CutOff) -> Queued<String> {
        Queued {
            frames: vec![format!(
                "notice {} lost {:?} all={}",
                report.dropped_messages, report.lost_msg_ids, report.lost_all
            )],
            bytes: 10,
            meta: Arc::new(Meta::default()),
            kind: Kind::Notice,
        }
    }

    fn no_notice(_: &CutOff) -> Queued<String> {
        panic!("no cut-off expected")
    }

    fn drain(q: &mut SubscriberQueue<String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(front) = q.front_mut() {
            out.push(front.frames[0].clone());
            q.pop_sent();
        }
        out
    }

    #[test]
    fn a_newer_update_with_the_same_keys_replaces_the_pending_one_at_its_own_place() {
        let mut q = SubscriberQueue::new(1 << 20);
        q.push(relayed("t", "busy", 10), no_notice);
        q.push(data("t", "e0", &["a", "i"], "d1"), no_notice);
        q.push(relayed("t", "stdout 1", 10), no_notice);
        q.push(data("t", "e0", &["i", "a"], "d2"), no_notice);
        q.push(data("t", "e0", &["a", "i"], "d3"), no_notice);
        q.push(relayed("t", "idle", 10), no_notice);
        assert_eq!(q.stats.conflated, 2);
        assert_eq!(q.len(), 4);
        assert_eq!(q.bytes(), 130);
        // Non-data output is all there, in order, and the newest data precedes the idle.
        assert_eq!(drain(&mut q), ["busy", "stdout 1", "d3", "idle"]);
        assert_eq!(q.stats.forwarded, 4);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn an_update_is_dropped_only_when_later_ones_resend_all_its_keys() {
        let mut q = SubscriberQueue::new(1 << 20);
        q.push(data("t", "e0", &["a", "b"], "ab"), no_notice);
        q.push(data("t", "e0", &["b"], "b"), no_notice); // does not cover {a, b}
        assert_eq!(q.stats.conflated, 0);
        q.push(data("t", "e0", &["a"], "a"), no_notice); // {a} + later {b} cover {a, b}
        assert_eq!(q.stats.conflated, 1);
        q.push(data("t", "e0", &[], "empty"), no_notice); // carries nothing: never conflates
        q.push(data("t", "e0", &[], "empty2"), no_notice);
        assert_eq!(drain(&mut q), ["b", "a", "empty", "empty2"]);
    }

    #[test]
    fn compaction_keeps_order_and_conflation_working() {
        let mut q = SubscriberQueue::new(1 << 30);
        q.push(relayed("t", "first", 10), no_notice);
        for i in 0..1000 {
            q.push(data("t", "e0", &["a"], &format!("a{i}")), no_notice);
            q.push(data("t", "e1", &["a"], &format!("b{i}")), no_notice);
            if i % 100 == 0 {
                q.push(relayed("t", &format!("out{i}"), 10), no_notice);
            }
        }
        q.push(relayed("t", "idle", 10), no_notice);
        let mut expected = vec!["first".to_string()];
        expected.extend((0..1000).step_by(100).map(|i| format!("out{i}")));
        expected.extend(["a999".to_string(), "b999".to_string(), "idle".to_string()]);
        assert_eq!(drain(&mut q), expected);
        assert_eq!(q.stats.conflated, 1998);
    }

    #[test]
    fn updates_of_other_tasks_or_engines_are_not_conflated_together() {
        let mut q = SubscriberQueue::new(1 << 20);
        q.push(data("t1", "e0", &["a"], "t1e0"), no_notice);
        q.push(data("t1", "e1", &["a"], "t1e1"), no_notice);
        q.push(data("t2", "e0", &["a"], "t2e0"), no_notice);
        q.push(data("t1", "e0", &["a"], "t1e0 new"), no_notice);
        assert_eq!(drain(&mut q), ["t1e1", "t2e0", "t1e0 new"]);
    }

    #[test]
    fn a_sent_update_is_not_conflated_but_the_next_pending_one_is() {
        let mut q = SubscriberQueue::new(1 << 20);
        q.push(data("t", "e0", &["a"], "1"), no_notice);
        assert_eq!(drain(&mut q), ["1"]);
        q.push(data("t", "e0", &["a"], "2"), no_notice);
        q.push(data("t", "e0", &["a"], "3"), no_notice);
        assert_eq!(drain(&mut q), ["3"]);
        assert!(q.pending_data.is_empty());
    }

    #[test]
    fn a_stuck_reader_publishing_forever_costs_one_update() {
        let mut q = SubscriberQueue::new(1000);
        for i in 0..100_000 {
            q.push(data("t", "e0", &["a"], &i.to_string()), no_notice);
        }
        assert_eq!(q.len(), 1);
        assert!(
            q.entries.len() <= 66,
            "holes are compacted: {}",
            q.entries.len()
        );
        assert_eq!(drain(&mut q), ["99999"]);
        assert!(q.entries.is_empty());
    }

    #[test]
    fn exceeding_the_budget_cuts_off_with_a_notice_and_keeps_what_follows() {
        let mut q = SubscriberQueue::new(100);
        for i in 0..5 {
            q.push(
                relayed(&format!("t{i}"), &format!("out {i}"), 20),
                no_notice,
            );
        }
        assert_eq!(q.bytes(), 100);
        q.push(relayed("t9", "after", 20), notice);
        assert_eq!(q.stats.cut_offs, 1);
        assert_eq!(q.stats.dropped, 5);
        let out = drain(&mut q);
        assert_eq!(
            out,
            [
                r#"notice 5 lost ["t0", "t1", "t2", "t3", "t4"] all=false"#,
                "after"
            ]
        );
        assert_eq!(q.stats.forwarded, 1);
    }

    #[test]
    fn a_reader_that_stays_stuck_gets_every_loss_since_its_last_notice() {
        let mut q = SubscriberQueue::new(50);
        q.push(relayed("a", "a1", 30), no_notice);
        q.push(relayed("a", "a2", 30), notice); // cut 1: drops a1
        q.push(relayed("b", "b1", 30), notice); // cut 2: drops notice 1 and a2
        let out = drain(&mut q);
        assert_eq!(out, [r#"notice 2 lost ["a"] all=false"#, "b1"]);
        // Delivered: the next cut-off reports only new losses.
        q.push(relayed("c", "c1", 30), no_notice);
        q.push(relayed("d", "d1", 30), notice);
        assert_eq!(drain(&mut q), [r#"notice 1 lost ["c"] all=false"#, "d1"]);
        assert_eq!(q.stats.dropped, 3);
    }

    #[test]
    fn replies_survive_a_cut_off_behind_the_notice() {
        let mut q = SubscriberQueue::new(50);
        q.push(relayed("a", "a1", 30), no_notice);
        q.push(
            Queued {
                frames: vec!["stats reply".into()],
                bytes: 5,
                meta: Arc::new(Meta::default()),
                kind: Kind::Reply,
            },
            no_notice,
        );
        q.push(relayed("b", "b1", 30), notice);
        assert_eq!(
            drain(&mut q),
            [r#"notice 1 lost ["a"] all=false"#, "stats reply", "b1"]
        );
    }

    #[test]
    fn a_single_message_over_the_budget_is_still_delivered() {
        let mut q = SubscriberQueue::new(10);
        q.push(relayed("t", "huge", 1000), no_notice);
        assert_eq!(drain(&mut q), ["huge"]);
    }

    #[test]
    fn too_many_lost_tasks_are_reported_as_all() {
        let mut q = SubscriberQueue::new(MAX_LOST_IDS + 5);
        for i in 0..MAX_LOST_IDS + 5 {
            q.push(relayed(&format!("t{i}"), "x", 1), no_notice);
        }
        q.push(relayed("last", "last", 1), notice);
        let out = drain(&mut q);
        assert_eq!(
            out[0],
            format!("notice {} lost [] all=true", MAX_LOST_IDS + 5)
        );
    }
}
