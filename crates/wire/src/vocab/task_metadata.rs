//! The metadata the task scheduler reads: of a load-balanced task, its dependencies
//! (`after`, `follow`), `targets`, `retries` and `timeout`, as ipyparallel's client
//! writes them (docs/PROTOCOL.md §6.1 and §9.1);
//! of an engine's reply, [`ReplyMetadata`].
//!
//! Only a malformed dependency is an error (the scheduler answers `InvalidDependency`, as
//! ipyparallel does); any other field of the wrong shape reads as its default and is listed
//! in [`TaskMetadata::ignored`] for the scheduler to log. Unknown fields are not kept: the
//! scheduler relays the client's frames as they came.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::HashSet;

use super::requests::present;
use super::{lenient_string, read_object};
use std::time::Duration;
use thiserror::Error;

/// The longest timeout honoured (about 31 years), so that `now + timeout` cannot overflow.
const MAX_TIMEOUT_SECS: f64 = 1e9;

/// An `after` or `follow` dependency: a set of msg_ids with ipyparallel's flags. `all`:
/// every id must count (else any one); `success`/`failure`: which outcomes count. A plain
/// list (or one msg_id string) means all, success only.
#[derive(Debug, Clone, PartialEq)]
pub struct DependencySpec {
    /// Distinct msg_ids, in the order sent.
    pub ids: Vec<String>,
    pub all: bool,
    pub success: bool,
    pub failure: bool,
}

impl Default for DependencySpec {
    fn default() -> Self {
        DependencySpec {
            ids: Vec::new(),
            all: true,
            success: true,
            failure: false,
        }
    }
}

/// Why a dependency cannot be read; its text is the `evalue` of the `InvalidDependency`
/// reply.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InvalidDependency {
    #[error("dependency flag {flag:?} is not a bool: {value}")]
    Flag { flag: &'static str, value: Value },
    #[error("must depend on at least one of successes or failures")]
    NoOutcome,
    #[error("dependencies are not msg_id strings: {0}")]
    NotIds(Value),
}

impl DependencySpec {
    /// Reads a metadata value: absent or `null` is the empty dependency; otherwise a
    /// msg_id string, a list of them, or the dict `{dependencies, all, success, failure}`
    /// (ipyparallel's `Dependency.as_dict`).
    pub fn read(value: Option<&Value>) -> Result<Self, InvalidDependency> {
        let Some(value) = value else {
            return Ok(DependencySpec::default());
        };
        let mut dep = DependencySpec::default();
        let ids = match value {
            Value::Object(map) => {
                dep.all = flag(map, "all", true)?;
                dep.success = flag(map, "success", true)?;
                dep.failure = flag(map, "failure", false)?;
                if !(dep.success || dep.failure) {
                    return Err(InvalidDependency::NoOutcome);
                }
                map.get("dependencies").unwrap_or(&Value::Null)
            }
            other => other,
        };
        let mut list = msg_id_strings(ids).ok_or_else(|| InvalidDependency::NotIds(ids.clone()))?;
        let mut unique = HashSet::new();
        list.retain(|id| unique.insert(id.clone()));
        dep.ids = list;
        Ok(dep)
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn msg_id_strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

fn flag(
    map: &Map<String, Value>,
    key: &'static str,
    default: bool,
) -> Result<bool, InvalidDependency> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(InvalidDependency::Flag {
            flag: key,
            value: other.clone(),
        }),
    }
}

/// What a task's metadata asks of the scheduler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskMetadata {
    /// Run only after these tasks finished (time dependency).
    pub after: DependencySpec,
    /// Run where these tasks ran (location dependency).
    pub follow: DependencySpec,
    /// Engine uuids the task may run on (empty = any); non-string items are skipped.
    pub targets: Vec<String>,
    /// How often a failed task is run again, elsewhere (clamped to `u32::MAX`).
    pub retries: u32,
    /// How long it may wait in the scheduler: a positive finite number of seconds.
    pub timeout: Option<Duration>,
    /// Fields present but of the wrong shape, read as their default (`"metadata"` itself
    /// when it is not a dict), with the value found: for the scheduler to log.
    pub ignored: Vec<(&'static str, Value)>,
}

impl TaskMetadata {
    /// Reads a task's metadata frame. `Err` only for a malformed `after`/`follow`.
    pub fn read(md: &Value) -> Result<Self, InvalidDependency> {
        let Value::Object(map) = md else {
            return Ok(TaskMetadata {
                ignored: vec![("metadata", md.clone())],
                ..TaskMetadata::default()
            });
        };
        let mut ignored = Vec::new();
        let after = DependencySpec::read(map.get("after"))?;
        let follow = DependencySpec::read(map.get("follow"))?;
        let targets = match map.get("targets") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            Some(other) => {
                ignored.push(("targets", other.clone()));
                Vec::new()
            }
        };
        let retries = match map.get("retries") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(r) => r.min(u64::from(u32::MAX)) as u32,
                None => {
                    ignored.push(("retries", v.clone()));
                    0
                }
            },
        };
        let timeout = map
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(|t| Duration::from_secs_f64(t.min(MAX_TIMEOUT_SECS)));
        Ok(TaskMetadata {
            after,
            follow,
            targets,
            retries,
            timeout,
            ignored,
        })
    }
}

/// The metadata of an engine's reply that the task scheduler reads: how the task ended
/// and whether the engine found its dependencies met (`False` when a task's `@depend`
/// raised `UnmetDependency` there, so it is routed elsewhere); and what the hub copies
/// into the task record as sent (`started`, `engine`). Other fields are skipped: the
/// scheduler relays the reply's frames as they came, and the hub stores them whole.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ReplyMetadata {
    /// `ok`, `error`, `aborted`; `None` when absent or not a string.
    #[serde(default, deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// `None` when absent or not a bool.
    #[serde(default, deserialize_with = "lenient_bool_opt")]
    pub dependencies_met: Option<bool>,
    /// When the engine started the task, as sent (any JSON value); `None` when absent.
    #[serde(default, deserialize_with = "present")]
    pub started: Option<Value>,
    /// The engine's uuid, as sent (any JSON value); `None` when absent.
    #[serde(default, deserialize_with = "present")]
    pub engine: Option<Value>,
}

impl ReplyMetadata {
    /// Reads a reply's metadata frame; metadata that is not a JSON object reads as empty.
    pub fn read(md: &Value) -> Self {
        read_object(md)
    }

    /// `status`, `"ok"` when absent (an engine that says nothing succeeded).
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("ok")
    }

    /// `dependencies_met`, `true` when absent.
    pub fn dependencies_met(&self) -> bool {
        self.dependencies_met.unwrap_or(true)
    }
}

/// A bool, or `None` for any other JSON value.
fn lenient_bool_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(v: Value) -> DependencySpec {
        DependencySpec::read(Some(&v)).unwrap()
    }

    #[test]
    fn dependencies_read_lists_dicts_and_reject_malformed() {
        assert_eq!(
            DependencySpec::read(None).unwrap(),
            DependencySpec::default()
        );
        assert!(dep(json!(null)).is_empty());
        let d = dep(json!(["a", "b", "a"]));
        assert_eq!(d.ids, vec!["a", "b"]);
        assert!(d.all && d.success && !d.failure);
        let d =
            dep(json!({"dependencies": ["a"], "all": false, "success": false, "failure": true}));
        assert!(!d.all && !d.success && d.failure);
        assert_eq!(dep(json!("a")).ids, vec!["a"]);
        assert!(dep(json!({})).is_empty());
        for bad in [
            json!([1, 2]),
            json!(5),
            json!({"dependencies": "a", "all": "yes"}),
            json!({"dependencies": [{}]}),
            json!({"dependencies": ["a"], "success": false, "failure": false}),
        ] {
            assert!(DependencySpec::read(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_dependencies_say_why_as_before() {
        let why = |v: Value| DependencySpec::read(Some(&v)).unwrap_err().to_string();
        assert_eq!(
            why(json!({"all": "yes"})),
            r#"dependency flag "all" is not a bool: "yes""#
        );
        assert_eq!(
            why(json!({"success": false})),
            "must depend on at least one of successes or failures"
        );
        assert_eq!(why(json!([1])), "dependencies are not msg_id strings: [1]");
    }

    #[test]
    fn task_metadata_reads_leniently_and_lists_what_it_ignored() {
        let md = TaskMetadata::read(&json!({
            "after": ["a"], "follow": null, "targets": ["e1", 3, "e2"],
            "retries": 2, "timeout": 1.5, "label": "x",
        }))
        .unwrap();
        assert_eq!(md.after.ids, vec!["a"]);
        assert!(md.follow.is_empty());
        assert_eq!(md.targets, vec!["e1", "e2"]);
        assert_eq!(md.retries, 2);
        assert_eq!(md.timeout, Some(Duration::from_millis(1500)));
        assert!(md.ignored.is_empty());

        let odd =
            TaskMetadata::read(&json!({"targets": "e1", "retries": -1, "timeout": -3})).unwrap();
        assert!(odd.targets.is_empty() && odd.retries == 0 && odd.timeout.is_none());
        assert_eq!(
            odd.ignored,
            vec![("targets", json!("e1")), ("retries", json!(-1))]
        );
        assert_eq!(
            TaskMetadata::read(&json!({"retries": 1e12}))
                .unwrap()
                .retries,
            0
        );
        assert_eq!(
            TaskMetadata::read(&json!({"retries": 5_000_000_000u64}))
                .unwrap()
                .retries,
            u32::MAX
        );
        assert_eq!(
            TaskMetadata::read(&json!({"timeout": 1e300}))
                .unwrap()
                .timeout,
            Some(Duration::from_secs(1_000_000_000))
        );

        let not_a_dict = TaskMetadata::read(&json!(["after"])).unwrap();
        assert_eq!(not_a_dict.ignored, vec![("metadata", json!(["after"]))]);
        assert!(not_a_dict.after.is_empty());

        assert!(TaskMetadata::read(&json!({"follow": 5})).is_err());
    }

    #[test]
    fn reply_metadata_reads_leniently() {
        let md = ReplyMetadata::read(&json!({"status": "error", "dependencies_met": false,
                                              "engine": "e", "started": "t"}));
        assert_eq!((md.status(), md.dependencies_met()), ("error", false));
        let odd = ReplyMetadata::read(&json!({"status": 1, "dependencies_met": "no"}));
        assert_eq!((odd.status(), odd.dependencies_met()), ("ok", true));
        assert_eq!(ReplyMetadata::read(&json!(null)), ReplyMetadata::default());
        assert_eq!(ReplyMetadata::read(&json!(["status"])).status(), "ok");
    }

    #[test]
    fn reply_metadata_keeps_started_and_engine_as_sent() {
        let md = ReplyMetadata::read(&json!({"started": "t", "engine": "e"}));
        assert_eq!(
            (md.started, md.engine),
            (Some(json!("t")), Some(json!("e")))
        );
        let odd = ReplyMetadata::read(&json!({"started": null, "engine": 5}));
        assert_eq!(
            (odd.started, odd.engine),
            (Some(Value::Null), Some(json!(5)))
        );
        let none = ReplyMetadata::read(&json!({"status": "ok"}));
        assert_eq!((none.started, none.engine), (None, None));
    }
}
