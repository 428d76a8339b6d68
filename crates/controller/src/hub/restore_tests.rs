//! `--restore` of engines: the hub keeps the engine state file, takes engines back under
//! their ids on their first heartbeat, and fails the tasks of those that do not come back.

use super::*;
use crate::engine_state::{self, EngineState};

fn hub(path: &std::path::Path) -> HubState {
    HubState::new(
        Session::new(b"key"),
        3000,
        Duration::from_secs(30),
        json!({"interface": "tcp://127.0.0.1"}),
    )
    .with_engine_state(path.to_path_buf())
}

fn register(hub: &mut HubState, uuid: &str) -> Vec<Action> {
    let msg = Session::new(b"key").msg("registration_request", json!({"uuid": uuid}));
    hub.handle_query(uuid.as_bytes(), &msg, Instant::now())
}

fn reply_id(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Reply { msg, .. } => msg.content["id"].as_u64(),
            _ => None,
        })
        .expect("a registration reply")
}

fn notified(actions: &[Action]) -> Vec<(String, Value)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(m) => Some((m.msg_type().to_string(), m.content.clone())),
            _ => None,
        })
        .collect()
}

/// Records an `apply_request` `msg_id` that came through `queue`.
fn add_request(records: &mut crate::records::Records, msg_id: &str, queue: &str) {
    records.add_request(
        json!({"msg_id": msg_id, "msg_type": "apply_request", "date": "2026-01-01T00:00:00Z"}),
        json!({}),
        json!({}),
        Vec::new(),
        queue,
        None,
    );
}

fn saved(path: &std::path::Path) -> EngineState {
    engine_state::load(path).unwrap().unwrap()
}

#[test]
fn the_state_file_follows_engines_going_live_and_leaving() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engines.json");
    let mut hub = hub(&path);
    for uuid in ["a", "b"] {
        register(&mut hub, uuid);
    }
    assert!(
        !path.exists(),
        "registrations without a heartbeat are not saved"
    );
    hub.handle_event(HubEvent::NewHeart("a".into()));
    hub.handle_event(HubEvent::NewHeart("b".into()));
    let state = saved(&path);
    assert_eq!(state.engines, [(0, "a".into()), (1, "b".into())].into());
    assert_eq!(state.next_id, 2);
    hub.handle_event(HubEvent::StoppedHeart("a".into()));
    let state = saved(&path);
    assert_eq!(state.engines, [(1, "b".into())].into());
    assert_eq!(state.next_id, 2, "id 0 is not handed out again");
}

#[test]
fn restored_engines_come_back_with_their_ids_on_a_heartbeat_and_new_ones_do_not_clash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engines.json");
    let mut hub = hub(&path);
    let state = EngineState {
        engines: [(0, "a".into()), (4, "b".into())].into(),
        next_id: 6,
    };
    let t0 = Instant::now();
    hub.restore_engines(&state, Duration::from_secs(5), t0);
    assert_eq!(hub.pending_count(), 2, "pinged fast until they answer");
    assert_eq!(saved(&path), state, "kept across a second crash");
    // No registration: the first pong is enough.
    let acts = hub.handle_event(HubEvent::NewHeart("b".into()));
    assert!(acts.contains(&Action::Engines(EngineEvent::Up {
        id: 4,
        uuid: "b".into()
    })));
    assert_eq!(
        notified(&acts),
        vec![(
            "registration_notification".into(),
            json!({"id": 4, "uuid": "b"})
        )]
    );
    // A new engine gets the next id of the old counter; a restored uuid is in use.
    assert_eq!(reply_id(&register(&mut hub, "c")), 6);
    hub.handle_event(HubEvent::NewHeart("c".into()));
    let acts = register(&mut hub, "a");
    let Action::Reply { msg, .. } = &acts[0] else {
        panic!("{acts:?}")
    };
    assert_eq!(msg.content["status"], "error");
    // Within the timeout nothing is dropped; past it the silent one is unregistered.
    assert!(hub.tick(t0 + Duration::from_secs(4)).is_empty());
    let acts = hub.tick(t0 + Duration::from_secs(6));
    assert!(acts.contains(&Action::ForgetHeart("a".into())));
    assert!(
        notified(&acts).is_empty(),
        "never live here: no client was told of it"
    );
    let state = saved(&path);
    assert_eq!(state.engines, [(4, "b".into()), (6, "c".into())].into());
    assert_eq!(state.next_id, 7);
    assert_eq!(hub.pending_count(), 0);
    // A late heart of the dropped engine does not bring it back without a registration.
    assert!(hub.handle_event(HubEvent::NewHeart("a".into())).is_empty());
}

#[test]
fn unfinished_tasks_of_a_restored_engine_that_never_came_back_become_engine_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(&dir.path().join("engines.json"));
    for (msg_id, done) in [("m1", false), ("m2", true)] {
        let records = hub.records_mut();
        add_request(records, msg_id, "mux");
        records.set_engine(msg_id, "gone");
        if done {
            let parts = [
                json!({"msg_id": "r2", "msg_type": "apply_reply", "date": "2026-01-02T00:00:00Z"}),
                json!({"msg_id": msg_id}),
                json!({"status": "ok"}),
                json!({"status": "ok"}),
            ]
            .iter()
            .map(|v| bytes::Bytes::from(serde_json::to_vec(v).unwrap()))
            .collect();
            records.apply(
                crate::events::RecordEvent::Reply {
                    engine: Some("gone".into()),
                    parts,
                },
                "2026-01-02T00:00:00Z",
            );
        }
    }
    let t0 = Instant::now();
    let state = EngineState {
        engines: [(2, "gone".into())].into(),
        next_id: 3,
    };
    hub.restore_engines(&state, Duration::from_secs(1), t0);
    hub.tick(t0 + Duration::from_secs(2));
    let result = |hub: &HubState, m: &str| -> serde_json::Value {
        hub.records
            .get(m)
            .unwrap()
            .get("result_content")
            .into_owned()
    };
    assert_eq!(result(&hub, "m1")["ename"], "EngineError");
    assert!(result(&hub, "m1")["evalue"]
        .as_str()
        .unwrap()
        .contains("Engine 2 died"));
    assert_eq!(
        result(&hub, "m2")["status"],
        "ok",
        "a finished task is kept"
    );
}

#[test]
fn restored_tasks_that_can_no_longer_finish_fail_and_those_on_restored_engines_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = hub(&dir.path().join("engines.json"));
    for (msg_id, engine) in [
        ("on_kept", Some("kept")),
        ("on_gone", Some("gone")),
        ("queued", None),
    ] {
        let records = hub.records_mut();
        add_request(records, msg_id, "task");
        if let Some(engine) = engine {
            records.set_engine(msg_id, engine);
        }
    }
    let state = EngineState {
        engines: [(0, "kept".into())].into(),
        next_id: 2,
    };
    hub.restore_engines(&state, Duration::from_secs(60), Instant::now());
    hub.fail_orphaned_tasks();
    let result = |m: &str| {
        hub.records
            .get(m)
            .unwrap()
            .get("result_content")
            .into_owned()
    };
    assert!(
        !hub.records.get("on_kept").unwrap().is_completed(),
        "its engine may still answer"
    );
    assert_eq!(result("on_gone")["ename"], "EngineError");
    assert!(result("on_gone")["evalue"]
        .as_str()
        .unwrap()
        .contains("not taken back"));
    assert_eq!(result("queued")["ename"], "TaskAborted");
    assert!(result("queued")["evalue"]
        .as_str()
        .unwrap()
        .contains("submit it again"));
}

#[test]
fn a_restart_grace_is_told_to_engines_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let mut plain = hub(&dir.path().join("a.json"));
    let acts = register(&mut plain, "x");
    let Action::Reply { msg, .. } = &acts[0] else {
        panic!()
    };
    assert!(msg.content.get("corral_restart_grace").is_none());
    let mut restartable =
        hub(&dir.path().join("b.json")).with_restart_grace(Duration::from_secs(60));
    let acts = register(&mut restartable, "x");
    let Action::Reply { msg, .. } = &acts[0] else {
        panic!()
    };
    assert_eq!(msg.content["corral_restart_grace"], json!(60.0));
}
