//! Task dependencies and the scheduler's pure decisions (ipyparallel's
//! `controller/dependency.py` and the rules of `task_scheduler.py`), kept free of
//! sockets so that every rule has a unit test.
//!
//! - [`Dependency`]: `after` (time) and `follow` (location) constraints, read by
//!   `corral_wire::TaskMetadata` from a plain msg_id list or the
//!   `{"dependencies", "all", "success", "failure"}` dict.
//! - [`History`]: the msg_ids the scheduler has seen and, for finished ones, where they
//!   ran and whether they succeeded (ipyparallel's `all_ids`, `all_completed`,
//!   `all_failed`, `destinations`). ipyparallel keeps these forever; corral keeps the
//!   last [`HISTORY_LIMIT`] finished tasks, so that a long session's scheduler does not
//!   grow without end. A dependency on a task older than that is unknown, and unknown
//!   dependencies are invalid, as they are in ipyparallel.
//! - [`triage`], [`eligible`], [`stuck`], [`after_reply`]: what to do with a waiting
//!   task, which engines may take it, when it can never run, and what a reply means.

use corral_wire::DependencySpec;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// Finished tasks whose outcome the scheduler remembers for dependencies: generous (a
/// pipeline rarely depends on a task 65,536 tasks old), and about 8 MB at most (some 130
/// bytes per task, engine names shared).
pub(crate) const HISTORY_LIMIT: usize = 1 << 16;

/// A set of msg_ids with ipyparallel's flags. `all`: every id must count (else any
/// one); `success`/`failure`: which outcomes count. A plain list means all, success only.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Dependency {
    pub ids: Vec<String>,
    pub all: bool,
    pub success: bool,
    pub failure: bool,
}

impl Default for Dependency {
    fn default() -> Self {
        DependencySpec::default().into()
    }
}

/// How a finished task ended and where (`None`: failed by the scheduler itself). Engine
/// names are shared with the scheduler's engine table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finished {
    pub engine: Option<Arc<str>>,
    pub success: bool,
}

#[derive(Debug)]
pub(crate) struct History {
    /// Seen msg_ids; `Some` once finished.
    tasks: HashMap<Arc<str>, Option<Finished>>,
    /// Finished msg_ids, oldest first: the eviction order.
    finished_order: VecDeque<Arc<str>>,
    limit: usize,
}

impl Default for History {
    fn default() -> Self {
        History::with_limit(HISTORY_LIMIT)
    }
}

impl History {
    pub fn with_limit(limit: usize) -> Self {
        History {
            tasks: HashMap::new(),
            finished_order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    pub fn saw(&mut self, msg_id: &str) {
        if !self.tasks.contains_key(msg_id) {
            self.tasks.insert(Arc::from(msg_id), None);
        }
    }

    pub fn knows(&self, msg_id: &str) -> bool {
        self.tasks.contains_key(msg_id)
    }

    pub fn finish(&mut self, msg_id: &str, engine: Option<Arc<str>>, success: bool) {
        let outcome = Some(Finished { engine, success });
        match self.tasks.get_key_value(msg_id) {
            Some((key, previous)) => {
                let key = key.clone();
                if previous.is_none() {
                    self.finished_order.push_back(key.clone());
                }
                self.tasks.insert(key, outcome);
            }
            None => {
                let key: Arc<str> = Arc::from(msg_id);
                self.finished_order.push_back(key.clone());
                self.tasks.insert(key, outcome);
            }
        }
        while self.finished_order.len() > self.limit {
            if let Some(old) = self.finished_order.pop_front() {
                self.tasks.remove(&old);
            }
        }
    }

    pub fn get(&self, msg_id: &str) -> Option<&Finished> {
        self.tasks.get(msg_id).and_then(Option::as_ref)
    }

    /// How many msg_ids are remembered (seen or finished).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }
}

/// The wire's reading of `after`/`follow`, as the scheduler judges it.
impl From<DependencySpec> for Dependency {
    fn from(spec: DependencySpec) -> Self {
        Dependency {
            ids: spec.ids,
            all: spec.all,
            success: spec.success,
            failure: spec.failure,
        }
    }
}

impl Dependency {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn counts(&self, f: &Finished) -> bool {
        if f.success {
            self.success
        } else {
            self.failure
        }
    }

    fn judge(&self, hits: impl Fn(&str) -> bool) -> bool {
        if self.all {
            self.ids.iter().all(|id| hits(id))
        } else {
            self.ids.iter().any(|id| hits(id))
        }
    }

    /// Met: every (or any) listed task finished with an outcome that counts.
    pub fn met(&self, h: &History) -> bool {
        self.is_empty() || self.judge(|id| h.get(id).is_some_and(|f| self.counts(f)))
    }

    /// Met on `engine`: the counting tasks finished there (ipyparallel checks `follow`
    /// against each engine's own completed/failed sets).
    pub fn met_on(&self, engine: &str, h: &History) -> bool {
        self.is_empty()
            || self.judge(|id| {
                h.get(id)
                    .is_some_and(|f| self.counts(f) && f.engine.as_deref() == Some(engine))
            })
    }

    /// Can never be met: with `all`, one listed task ended the wrong way; otherwise all
    /// of them did.
    pub fn unreachable(&self, h: &History) -> bool {
        if self.is_empty() {
            return false;
        }
        let wrong = |id: &str| h.get(id).is_some_and(|f| !self.counts(f));
        if self.all {
            self.ids.iter().any(|id| wrong(id))
        } else {
            self.ids.iter().all(|id| wrong(id))
        }
    }

    /// A `follow` with `all` whose counting tasks ran on different engines (or nowhere)
    /// cannot be satisfied by any one engine.
    pub fn split(&self, h: &History) -> bool {
        if !self.all {
            return false;
        }
        let mut dests = HashSet::new();
        for f in self.ids.iter().filter_map(|id| h.get(id)) {
            if self.counts(f) {
                match &f.engine {
                    Some(e) => {
                        dests.insert(&**e);
                    }
                    None => return true,
                }
            }
        }
        dests.len() > 1
    }
}

/// What constrains where and when a task runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Constraints {
    pub targets: Vec<String>,
    pub blacklist: HashSet<String>,
    pub after: Dependency,
    pub follow: Dependency,
    pub deadline: Option<Instant>,
}

/// Why the scheduler answers a task itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Invalid,
    Impossible,
    Timeout,
}

impl Failure {
    pub fn ename(self) -> &'static str {
        match self {
            Failure::Invalid => "InvalidDependency",
            Failure::Impossible => "ImpossibleDependency",
            Failure::Timeout => "TaskTimeout",
        }
    }
}

/// Checks a new task's dependencies: naming itself or an unknown msg_id is invalid
/// (ipyparallel's `dep.difference(all_ids)`); one already impossible fails now.
pub(crate) fn admit(msg_id: &str, c: &Constraints, h: &History) -> Result<(), Failure> {
    for dep in [&c.after, &c.follow] {
        if dep.ids.iter().any(|id| id == msg_id || !h.knows(id)) {
            return Err(Failure::Invalid);
        }
    }
    for dep in [&c.after, &c.follow] {
        if dep.unreachable(h) {
            return Err(Failure::Impossible);
        }
    }
    if c.follow.split(h) {
        return Err(Failure::Impossible);
    }
    Ok(())
}

/// The state of a queued task on this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Triage {
    Fail(Failure),
    /// `after` not met yet.
    Wait,
    /// May be placed now, if an engine fits.
    Ready,
}

pub(crate) fn triage(c: &Constraints, h: &History, now: Instant) -> Triage {
    if c.after.unreachable(h) || c.follow.unreachable(h) || c.follow.split(h) {
        return Triage::Fail(Failure::Impossible);
    }
    if c.deadline.is_some_and(|d| now >= d) {
        return Triage::Fail(Failure::Timeout);
    }
    if c.after.met(h) {
        Triage::Ready
    } else {
        Triage::Wait
    }
}

/// May `engine` run the task (load aside)?
pub(crate) fn eligible(engine: &str, c: &Constraints, h: &History) -> bool {
    !c.blacklist.contains(engine)
        && (c.targets.is_empty() || c.targets.iter().any(|t| t == engine))
        && c.follow.met_on(engine, h)
}

/// The task names targets and none of them is live and not blacklisted, so it can
/// never run (ipyparallel fails it). Without targets a task whose every engine is
/// blacklisted waits instead, for a new engine or its timeout. While no engine is live
/// at all (`live_count` 0), tasks wait for the first one.
pub(crate) fn stuck(c: &Constraints, live_count: usize, is_live: impl Fn(&str) -> bool) -> bool {
    !c.targets.is_empty()
        && live_count > 0
        && !c
            .targets
            .iter()
            .any(|t| is_live(t) && !c.blacklist.contains(t))
}

/// What an engine's reply means for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterReply {
    /// Final: forward to the client, record the outcome.
    Relay { success: bool },
    /// Run it again elsewhere, blacklisting this engine; `uses_retry` spends one retry.
    Resubmit { uses_retry: bool },
}

/// `dependencies_met: false` (the engine raised `UnmetDependency`) always re-routes;
/// a failure (not `aborted`) re-runs while retries are left.
pub(crate) fn after_reply(status: &str, dependencies_met: bool, retries_left: u32) -> AfterReply {
    if !dependencies_met {
        return AfterReply::Resubmit { uses_retry: false };
    }
    let success = status == "ok";
    if !success && status != "aborted" && retries_left > 0 {
        AfterReply::Resubmit { uses_retry: true }
    } else {
        AfterReply::Relay { success }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::time::Duration;

    fn dep(v: Value) -> Dependency {
        DependencySpec::read(Some(&v)).unwrap().into()
    }

    fn hist(done: &[(&str, Option<&str>, bool)], seen: &[&str]) -> History {
        let mut h = History::default();
        for id in seen {
            h.saw(id);
        }
        for (id, e, ok) in done {
            h.finish(id, e.map(Arc::from), *ok);
        }
        h
    }

    #[test]
    fn met_and_unreachable_follow_the_flags() {
        let h = hist(
            &[("ok", Some("e1"), true), ("bad", Some("e2"), false)],
            &["open"],
        );
        // Plain list: all, success only.
        assert!(dep(json!(["ok"])).met(&h));
        assert!(!dep(json!(["ok", "open"])).met(&h));
        assert!(!dep(json!(["ok", "open"])).unreachable(&h));
        assert!(dep(json!(["ok", "bad"])).unreachable(&h));
        // any: one success suffices; unreachable only when all ended wrong.
        let any = dep(json!({"dependencies": ["bad", "ok"], "all": false}));
        assert!(any.met(&h) && !any.unreachable(&h));
        let any_bad = dep(json!({"dependencies": ["bad"], "all": false}));
        assert!(any_bad.unreachable(&h));
        // failure only.
        let fail = dep(json!({"dependencies": ["bad"], "success": false, "failure": true}));
        assert!(fail.met(&h));
        let fail_ok = dep(json!({"dependencies": ["ok"], "success": false, "failure": true}));
        assert!(fail_ok.unreachable(&h));
        // both outcomes count: never unreachable.
        let both = dep(json!({"dependencies": ["ok", "bad"], "failure": true}));
        assert!(both.met(&h) && !both.unreachable(&h));
        assert!(Dependency::default().met(&h));
    }

    #[test]
    fn follow_is_checked_per_engine_and_split_is_impossible() {
        let h = hist(&[("a", Some("e1"), true), ("b", Some("e2"), true)], &[]);
        let f = dep(json!(["a"]));
        assert!(f.met_on("e1", &h) && !f.met_on("e2", &h));
        let both = dep(json!(["a", "b"]));
        assert!(both.split(&h));
        assert!(!dep(json!({"dependencies": ["a", "b"], "all": false})).split(&h));
        let c = Constraints {
            follow: f,
            ..Default::default()
        };
        assert!(eligible("e1", &c, &h));
        assert!(!eligible("e2", &c, &h));
    }

    #[test]
    fn admit_rejects_unknown_and_self_and_impossible() {
        let h = hist(&[("bad", Some("e"), false)], &["known"]);
        let with_after = |v| Constraints {
            after: dep(v),
            ..Default::default()
        };
        assert_eq!(admit("me", &with_after(json!(["known"])), &h), Ok(()));
        assert_eq!(
            admit("me", &with_after(json!(["nobody"])), &h),
            Err(Failure::Invalid)
        );
        assert_eq!(
            admit("me", &with_after(json!(["me"])), &h),
            Err(Failure::Invalid)
        );
        assert_eq!(
            admit("me", &with_after(json!(["bad"])), &h),
            Err(Failure::Impossible)
        );
    }

    #[test]
    fn triage_waits_times_out_and_fails() {
        let now = Instant::now();
        let mut h = hist(&[], &["a"]);
        let mut c = Constraints {
            after: dep(json!(["a"])),
            ..Default::default()
        };
        assert_eq!(triage(&c, &h, now), Triage::Wait);
        c.deadline = Some(now + Duration::from_secs(1));
        assert_eq!(triage(&c, &h, now), Triage::Wait);
        assert_eq!(
            triage(&c, &h, now + Duration::from_secs(2)),
            Triage::Fail(Failure::Timeout)
        );
        h.finish("a", Some("e".into()), true);
        assert_eq!(triage(&c, &h, now), Triage::Ready);
        h.finish("a", Some("e".into()), false);
        assert_eq!(triage(&c, &h, now), Triage::Fail(Failure::Impossible));
    }

    #[test]
    fn targets_and_blacklist_decide_eligibility() {
        let h = History::default();
        let mut c = Constraints {
            targets: vec!["e1".into(), "e2".into()],
            ..Default::default()
        };
        assert!(eligible("e1", &c, &h) && !eligible("e3", &c, &h));
        c.blacklist.insert("e1".into());
        assert!(!eligible("e1", &c, &h));
        let live = |names: &'static [&'static str]| move |e: &str| names.contains(&e);
        assert!(!stuck(&c, 2, live(&["e1", "e2"])));
        assert!(stuck(&c, 2, live(&["e1", "e3"])));
        assert!(!stuck(&c, 0, live(&[])), "no engines yet: wait");
        let mut free = Constraints::default();
        free.blacklist.insert("e1".into());
        assert!(
            !stuck(&free, 1, live(&["e1"])),
            "no targets: wait for another engine"
        );
    }

    #[test]
    fn history_keeps_the_last_finished_tasks_and_every_open_one() {
        let mut h = History::with_limit(3);
        h.saw("open");
        for i in 0..10 {
            let id = format!("t{i}");
            h.saw(&id);
            h.finish(&id, Some("e".into()), true);
        }
        h.finish("t9", Some("e".into()), false);
        assert_eq!(h.len(), 4, "three finished and the open one");
        assert!(h.knows("open") && h.get("open").is_none());
        assert!(!h.knows("t6"), "evicted");
        assert_eq!(h.get("t9").map(|f| f.success), Some(false));
        assert!(h.get("t7").is_some() && h.get("t8").is_some());
    }

    #[test]
    fn replies_relay_or_resubmit() {
        assert_eq!(
            after_reply("ok", true, 3),
            AfterReply::Relay { success: true }
        );
        assert_eq!(
            after_reply("error", true, 1),
            AfterReply::Resubmit { uses_retry: true }
        );
        assert_eq!(
            after_reply("error", true, 0),
            AfterReply::Relay { success: false }
        );
        assert_eq!(
            after_reply("aborted", true, 2),
            AfterReply::Relay { success: false }
        );
        assert_eq!(
            after_reply("error", false, 0),
            AfterReply::Resubmit { uses_retry: false }
        );
    }
}
