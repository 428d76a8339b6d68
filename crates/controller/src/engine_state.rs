//! The engine registry on disk, so that `--restore` can take running engines back with
//! their ids after the controller crashed or was restarted.
//!
//! It is ipyparallel's engine state file, in the same place and format:
//! `<profile>/log/engines<cluster_id>.json` holding `{"engines": {"<id>": "<uuid>"},
//! "next_id": N}`. A JSON file rather than a table in the task database because it is
//! a handful of lines rewritten whole on every (un)registration, because `--db memory`
//! must not lose it, and because a stock `ipcontroller --restore` and corral then read
//! each other's file. The uuid is all a restored engine needs: it is the identity of the
//! engine's heart and of its MUX, control and task connections.
//!
//! Written atomically (a temporary file renamed over the old one), so a controller killed
//! mid-write leaves the previous state, never a torn file.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_wire::ProfileLocation;

/// The registered engines and the next id to hand out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EngineState {
    /// Engine id → uuid.
    pub engines: BTreeMap<u32, String>,
    /// The counter's next id: ids below it are never handed out again by the counter.
    pub next_id: u32,
}

/// The file as ipyparallel writes it (JSON object keys are strings).
#[derive(Serialize, Deserialize)]
struct OnDisk {
    engines: BTreeMap<String, String>,
    next_id: u32,
}

/// Why a state file was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an engine state file ({reason}); no engines restored")]
    Damaged { path: String, reason: String },
}

/// Where ipyparallel keeps the engine state of `location`'s cluster.
pub(crate) fn path(location: &ProfileLocation) -> PathBuf {
    location
        .profile_dir
        .join("log")
        .join(format!("engines{}.json", location.cluster_id))
}

/// Writes `state` to `path` (creating its folder), replacing the file atomically.
pub(crate) fn save(path: &Path, state: &EngineState) -> std::io::Result<()> {
    let disk = OnDisk {
        engines: state
            .engines
            .iter()
            .map(|(id, uuid)| (id.to_string(), uuid.clone()))
            .collect(),
        next_id: state.next_id,
    };
    let text = serde_json::to_vec(&disk).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads the state at `path`: `Ok(None)` when there is no file (nothing to restore), an
/// error when it cannot be read or is not a state file (the caller logs it and restores
/// no engines rather than guessing).
pub(crate) fn load(path: &Path) -> Result<Option<EngineState>, StateError> {
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: shown(),
                source,
            })
        }
    };
    let damaged = |reason: String| StateError::Damaged {
        path: shown(),
        reason,
    };
    let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    let mut engines = BTreeMap::new();
    let mut uuids = std::collections::HashSet::new();
    for (id, uuid) in disk.engines {
        let id: u32 = id
            .parse()
            .map_err(|_| damaged(format!("engine id {id:?} is not a number")))?;
        if uuid.is_empty() || !uuids.insert(uuid.clone()) {
            return Err(damaged(format!(
                "engine {id} has an empty or repeated uuid"
            )));
        }
        engines.insert(id, uuid);
    }
    // The counter never goes back below an id in use.
    let next_id = engines
        .keys()
        .next_back()
        .map_or(disk.next_id, |&max| disk.next_id.max(max + 1));
    Ok(Some(EngineState { engines, next_id }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> EngineState {
        EngineState {
            engines: [(0, "a-uuid".to_string()), (3, "b-uuid".to_string())].into(),
            next_id: 5,
        }
    }

    #[test]
    fn saved_state_loads_back_and_is_ipyparallels_format() {
        let dir = tempfile::tempdir().unwrap();
        let location = ProfileLocation {
            profile_dir: dir.path().to_path_buf(),
            cluster_id: "x1".into(),
        };
        let file = path(&location);
        assert!(file.ends_with("log/enginesx1.json"));
        assert_eq!(load(&file).unwrap(), None, "no file: nothing to restore");
        save(&file, &state()).unwrap();
        assert_eq!(load(&file).unwrap(), Some(state()));
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            raw,
            serde_json::json!({"engines": {"0": "a-uuid", "3": "b-uuid"}, "next_id": 5})
        );
        // Saving again replaces the file whole, leaving no temporary file behind.
        save(&file, &EngineState::default()).unwrap();
        assert_eq!(load(&file).unwrap(), Some(EngineState::default()));
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("enginesx1.json")]);
    }

    #[test]
    fn a_file_written_by_ipyparallel_loads_and_next_id_covers_every_engine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engines.json");
        std::fs::write(
            &file,
            r#"{"engines": {"7": "u7", "2": "u2"}, "next_id": 3}"#,
        )
        .unwrap();
        let loaded = load(&file).unwrap().unwrap();
        assert_eq!(loaded.engines.len(), 2);
        assert_eq!(loaded.next_id, 8);
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engines.json");
        for (text, reason) in [
            ("{\"engines\": {\"0\": \"a\"", "EOF"),
            ("[]", "expected struct"),
            (r#"{"engines": {"x": "a"}, "next_id": 1}"#, "not a number"),
            (
                r#"{"engines": {"0": "a", "1": "a"}, "next_id": 2}"#,
                "repeated uuid",
            ),
            (r#"{"engines": {}, "next_id": -1}"#, "invalid value"),
        ] {
            std::fs::write(&file, text).unwrap();
            let err = load(&file).unwrap_err().to_string();
            assert!(err.contains("is not an engine state file"), "{err}");
            assert!(err.contains(reason), "{text}: {err}");
        }
    }
}
