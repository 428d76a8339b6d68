//! The scheduler's state functions driven directly: signed frames in, actions out, a fake
//! clock. No sockets, so every rule is checked deterministically.

use super::*;
use corral_wire::{Message, Signer};
use proptest::prelude::*;
use serde_json::json;

const KEY: &[u8] = b"scheduler-test-key";

fn zmsgs(frames: Vec<Vec<u8>>) -> Vec<zmq::Message> {
    frames.into_iter().map(zmq::Message::from).collect()
}

struct Harness {
    st: SchedulerState,
    client: Session,
    t0: Instant,
}

impl Harness {
    fn new(engines: &[&str]) -> Harness {
        Harness::with_hwm(engines, TaskHwm::Fixed(1))
    }

    fn with_hwm(engines: &[&str], hwm: TaskHwm) -> Harness {
        let mut h = Harness {
            st: SchedulerState::new(Arc::new(Session::new(KEY)), hwm),
            client: Session::new(KEY),
            t0: Instant::now(),
        };
        for (i, e) in engines.iter().enumerate() {
            h.up(i as u32, e);
        }
        h
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn up(&mut self, id: u32, uuid: &str) -> Vec<TaskAction> {
        let event = EngineEvent::Up {
            id,
            uuid: uuid.into(),
        };
        self.st.engine_event(event, self.t0)
    }

    fn down(&mut self, uuid: &str, ms: u64) -> Vec<TaskAction> {
        let event = EngineEvent::Down { uuid: uuid.into() };
        self.st.engine_event(event, self.at(ms))
    }

    /// Submits an `apply_request` with `md` at time `ms`.
    fn submit(&mut self, md: Value, ms: u64) -> (Message, Vec<TaskAction>) {
        let mut msg = self.client.msg("apply_request", json!({}));
        msg.metadata = md;
        msg.idents = vec![b"client".to_vec()];
        let frames = zmsgs(self.client.encode(&msg));
        let out = self.st.submit(frames, self.at(ms));
        (msg, out)
    }

    /// `engine` answers `msg_id` with `status` at time `ms`.
    fn answer(
        &mut self,
        engine: &str,
        msg_id: &str,
        status: &str,
        deps_met: bool,
        ms: u64,
    ) -> Vec<TaskAction> {
        let when = self.at(ms);
        self.answer_at(engine, msg_id, status, deps_met, when)
    }

    /// `engine` answers `msg_id` with `status` at `when`.
    fn answer_at(
        &mut self,
        engine: &str,
        msg_id: &str,
        status: &str,
        deps_met: bool,
        when: Instant,
    ) -> Vec<TaskAction> {
        let engine_session = Session::new(KEY);
        let mut reply = engine_session.msg("apply_reply", json!({"status": status}));
        reply.parent_header = json!({"msg_id": msg_id, "msg_type": "apply_request"});
        reply.metadata = json!({"engine": engine, "status": status, "dependencies_met": deps_met});
        reply.idents = vec![engine.as_bytes().to_vec(), b"client".to_vec()];
        let frames = zmsgs(engine_session.encode(&reply));
        self.st.reply(frames, when)
    }
}

/// (engine, msg_id) of every assignment, in order.
fn assigned(actions: &[TaskAction]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            TaskAction::Assign { engine, msg_id, .. } => Some((engine.to_string(), msg_id.clone())),
            _ => None,
        })
        .collect()
}

/// Every message for the client side, decoded and checked against the key.
fn to_client(actions: &[TaskAction]) -> Vec<Message> {
    let signer = Signer::new(KEY);
    actions
        .iter()
        .filter_map(|a| match a {
            TaskAction::Relay(frames) => {
                let views: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                Some(Message::decode(&views, &signer).expect("relayed reply"))
            }
            TaskAction::Answer(frames) => {
                Some(Message::decode(frames, &signer).expect("scheduler reply"))
            }
            _ => None,
        })
        .collect()
}

/// The one assignment in `actions`.
fn only(actions: &[TaskAction]) -> (String, String) {
    let mut all = assigned(actions);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn assert_error(reply: &Message, req: &Message, ename: &str) {
    assert_eq!(reply.msg_type(), "apply_reply");
    assert_eq!(reply.content["ename"], ename, "{:?}", reply.content);
    assert_eq!(reply.parent_msg_id(), Some(req.header.msg_id.as_str()));
    assert_eq!(reply.metadata["status"], "error");
    assert_eq!(reply.idents[0], b"client");
}

fn id(m: &Message) -> &str {
    &m.header.msg_id
}

#[test]
fn leastload_rotates_and_holds_tasks_until_an_engine_has_room() {
    let mut h = Harness::new(&["a", "b"]);
    let (t1, out) = h.submit(json!({}), 0);
    assert_eq!(assigned(&out), vec![("a".into(), id(&t1).into())]);
    let (t2, out) = h.submit(json!({}), 0);
    assert_eq!(assigned(&out), vec![("b".into(), id(&t2).into())]);
    let (t3, out) = h.submit(json!({}), 0);
    assert!(assigned(&out).is_empty(), "hwm 1: both engines busy");
    let out = h.answer("b", id(&t2), "ok", true, 1);
    let replies = to_client(&out);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].parent_msg_id(), Some(id(&t2)));
    assert_eq!(replies[0].idents, vec![b"client".to_vec(), b"b".to_vec()]);
    assert_eq!(assigned(&out), vec![("b".into(), id(&t3).into())]);
    // a is free and used least recently: the next task goes there.
    h.answer("a", id(&t1), "ok", true, 2);
    h.answer("b", id(&t3), "ok", true, 2);
    let (t4, out) = h.submit(json!({}), 3);
    assert_eq!(assigned(&out), vec![("a".into(), id(&t4).into())]);
}

#[test]
fn a_failed_task_is_retried_elsewhere_and_only_the_last_reply_is_relayed() {
    let mut h = Harness::new(&["a", "b"]);
    let (t, out) = h.submit(json!({"retries": 1}), 0);
    assert_eq!(assigned(&out), vec![("a".into(), id(&t).into())]);
    let out = h.answer("a", id(&t), "error", true, 1);
    assert!(
        to_client(&out).is_empty(),
        "the first failure is not relayed"
    );
    assert_eq!(assigned(&out), vec![("b".into(), id(&t).into())]);
    let out = h.answer("b", id(&t), "error", true, 2);
    let replies = to_client(&out);
    assert_eq!(replies.len(), 1, "no retries left: relayed");
    assert_eq!(replies[0].metadata["status"], "error");
    assert!(assigned(&out).is_empty());

    // dependencies_met: false re-routes without spending a retry, even with none left.
    let (t, out) = h.submit(json!({}), 3);
    let (first, _) = assigned(&out).remove(0);
    let out = h.answer(&first, id(&t), "error", false, 4);
    let (second, _) = assigned(&out).remove(0);
    assert_ne!(first, second);
    assert!(to_client(&out).is_empty());
}

#[test]
fn timeouts_follow_the_injected_clock() {
    let mut h = Harness::new(&["a"]);
    let (_busy, _) = h.submit(json!({}), 0);
    let (t, out) = h.submit(json!({"timeout": 2.0}), 100);
    assert!(out.iter().all(|a| !matches!(a, TaskAction::Answer(_))));
    assert_eq!(h.st.next_wake(), Some(h.at(2100)));
    assert!(to_client(&h.st.tick(h.at(2099))).is_empty(), "not yet");
    let replies = to_client(&h.st.tick(h.at(2100)));
    assert_eq!(replies.len(), 1);
    assert_error(&replies[0], &t, "TaskTimeout");
    assert_eq!(h.st.next_wake(), None, "nothing left to time out");

    // A retried task's timeout counts again from its re-queueing; every engine is
    // blacklisted by then, so it waits until that timeout.
    let mut h = Harness::new(&["a"]);
    let (t, _) = h.submit(json!({"retries": 1, "timeout": 1.0}), 0);
    let out = h.answer("a", id(&t), "error", true, 900);
    assert!(assigned(&out).is_empty() && to_client(&out).is_empty());
    assert!(to_client(&h.st.tick(h.at(1899))).is_empty());
    let replies = to_client(&h.st.tick(h.at(1900)));
    assert_error(&replies[0], &t, "TaskTimeout");
}

#[test]
fn a_dead_engine_fails_its_task_or_spends_a_retry() {
    let mut h = Harness::new(&["a", "b"]);
    let (plain, _) = h.submit(json!({}), 0);
    let (retried, _) = h.submit(json!({"retries": 1}), 0);
    // plain on a, retried on b. b dies: retried goes to... a is busy, so it waits.
    let out = h.down("b", 10);
    assert!(to_client(&out).is_empty() && assigned(&out).is_empty());
    let out = h.answer("a", id(&plain), "ok", true, 20);
    assert_eq!(assigned(&out), vec![("a".into(), id(&retried).into())]);
    let out = h.down("a", 30);
    let replies = to_client(&out);
    assert_eq!(replies.len(), 1, "no retries left");
    assert_error(&replies[0], &retried, "EngineError");
    assert_eq!(replies[0].metadata["engine"], "a");
    assert_eq!(replies[0].idents, vec![b"client".to_vec(), b"a".to_vec()]);
    // A reply from the dead engine still reaches the client (it is a final outcome).
    let late = to_client(&h.answer("a", id(&plain), "ok", true, 40));
    assert_eq!(late.len(), 1);
}

#[test]
fn after_waits_and_a_failed_dependency_fails_its_dependents_in_turn() {
    let mut h = Harness::new(&["a", "b"]);
    let (a, _) = h.submit(json!({}), 0);
    let (b, out) = h.submit(json!({"after": [id(&a)]}), 0);
    assert!(
        assigned(&out).is_empty(),
        "b waits although an engine is free"
    );
    let (c, out) = h.submit(json!({"after": [id(&b)]}), 0);
    assert!(assigned(&out).is_empty());
    let (eb, got) = only(&h.answer("a", id(&a), "ok", true, 1));
    assert_eq!(got, id(&b));
    let (ec, got) = only(&h.answer(&eb, id(&b), "ok", true, 2));
    assert_eq!(got, id(&c));
    h.answer(&ec, id(&c), "ok", true, 3);

    // A chain whose head fails: every dependent fails at once.
    let (x, out) = h.submit(json!({}), 10);
    let (ex, _) = only(&out);
    let (y, _) = h.submit(json!({"after": [id(&x)]}), 10);
    let (z, _) = h.submit(
        json!({"after": {"dependencies": [id(&y)], "all": true}}),
        10,
    );
    let out = h.answer(&ex, id(&x), "error", true, 11);
    let replies = to_client(&out);
    assert_eq!(replies.len(), 3, "x's reply, then y and z fail");
    assert_eq!(replies[0].parent_msg_id(), Some(id(&x)));
    assert_error(&replies[1], &y, "ImpossibleDependency");
    assert_error(&replies[2], &z, "ImpossibleDependency");
    // failure=true: runs after a failed task.
    let dict = json!({"dependencies": [id(&x)], "success": false, "failure": true});
    let (w, out) = h.submit(json!({"after": dict}), 12);
    assert_eq!(only(&out).1, id(&w));
    // Unknown ids, itself, and malformed dependencies are invalid.
    let (u, out) = h.submit(json!({"after": ["nobody"]}), 13);
    assert_error(&to_client(&out)[0], &u, "InvalidDependency");
    let (m, out) = h.submit(json!({"follow": {"dependencies": [1]}}), 13);
    assert_error(&to_client(&out)[0], &m, "InvalidDependency");
}

#[test]
fn follow_goes_where_its_dependency_ran_and_split_follows_are_impossible() {
    let mut h = Harness::new(&["a", "b"]);
    let (x, _) = h.submit(json!({}), 0);
    let (y, _) = h.submit(json!({}), 0);
    h.answer("a", id(&x), "ok", true, 1);
    h.answer("b", id(&y), "ok", true, 1);
    for (dep, engine) in [(&y, "b"), (&x, "a"), (&y, "b")] {
        let (f, out) = h.submit(json!({"follow": [id(dep)]}), 2);
        assert_eq!(assigned(&out), vec![(engine.into(), id(&f).into())]);
        h.answer(engine, id(&f), "ok", true, 3);
    }
    let (s, out) = h.submit(json!({"follow": [id(&x), id(&y)]}), 4);
    assert_error(&to_client(&out)[0], &s, "ImpossibleDependency");
    // A follow task waits for its engine while another is free, then runs there.
    let (busy, _) = h.submit(json!({"targets": ["a"]}), 5);
    let (f, out) = h.submit(json!({"follow": [id(&x)]}), 5);
    assert!(assigned(&out).is_empty());
    let (plain, out) = h.submit(json!({}), 5);
    assert_eq!(assigned(&out), vec![("b".into(), id(&plain).into())]);
    let out = h.answer("a", id(&busy), "ok", true, 6);
    assert_eq!(assigned(&out), vec![("a".into(), id(&f).into())]);
}

#[test]
fn targets_without_a_live_engine_are_impossible() {
    let mut h = Harness::new(&["a", "b"]);
    let (t, out) = h.submit(json!({"targets": ["nowhere"]}), 0);
    assert_error(&to_client(&out)[0], &t, "ImpossibleDependency");
    // Waiting for b, then b leaves: fails then.
    let (_, _) = h.submit(json!({"targets": ["b"]}), 0);
    let (waiting, out) = h.submit(json!({"targets": ["b"]}), 0);
    assert!(to_client(&out).is_empty() && assigned(&out).is_empty());
    let out = h.down("b", 1);
    let replies = to_client(&out);
    let mine: Vec<&Message> = replies
        .iter()
        .filter(|r| r.parent_msg_id() == Some(id(&waiting)))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_error(mine[0], &waiting, "ImpossibleDependency");
    // With no engine at all, a targeted task waits for the first one.
    let mut h = Harness::new(&[]);
    let (t, out) = h.submit(json!({"targets": ["a"]}), 0);
    assert!(out.iter().all(|a| matches!(a, TaskAction::Hub(_))));
    assert_eq!(assigned(&h.up(0, "a")), vec![("a".into(), id(&t).into())]);
}

#[test]
fn an_unreachable_engine_is_skipped_for_a_while() {
    let mut h = Harness::new(&["a", "b"]);
    let (_, _) = h.submit(json!({}), 0); // a busy
    let (t, out) = h.submit(json!({}), 0);
    assert_eq!(assigned(&out), vec![("b".into(), id(&t).into())]);
    let out = h.st.unreachable("b", id(&t), h.at(1));
    assert!(assigned(&out).is_empty(), "b backs off, a is busy");
    let back = h.at(1) + UNREACHABLE_BACKOFF;
    assert_eq!(h.st.next_wake(), Some(back));
    assert!(assigned(&h.st.tick(back - Duration::from_millis(1))).is_empty());
    assert_eq!(
        assigned(&h.st.tick(back)),
        vec![("b".into(), id(&t).into())]
    );
}

#[test]
fn hwm_above_one_pipelines_tasks_to_the_least_loaded_engine() {
    let mut h = Harness::with_hwm(&["a", "b"], TaskHwm::Fixed(2));
    let mut placed = Vec::new();
    for _ in 0..5 {
        let (t, out) = h.submit(json!({}), 0);
        placed.push((id(&t).to_string(), assigned(&out)));
    }
    // Two per engine, alternating (least load, then least recently used); the fifth waits.
    let engines: Vec<&str> = placed[..4].iter().map(|(_, a)| a[0].0.as_str()).collect();
    assert_eq!(engines, ["a", "b", "a", "b"]);
    assert!(placed[4].1.is_empty(), "both engines hold 2: {placed:?}");
    // b answers one: the waiting task goes to b, which has room again.
    let out = h.answer("b", &placed[1].0, "ok", true, 1);
    assert_eq!(to_client(&out).len(), 1);
    assert_eq!(assigned(&out), vec![("b".into(), placed[4].0.clone())]);

    // hwm 0: no limit, every task goes out at once.
    let mut h = Harness::with_hwm(&["a", "b"], TaskHwm::Fixed(0));
    let sent: usize = (0..100)
        .map(|_| assigned(&h.submit(json!({}), 0).1).len())
        .sum();
    assert_eq!(sent, 100);
}

#[test]
fn auto_hwm_pipelines_short_tasks_and_stops_at_a_long_one() {
    let mut h = Harness::with_hwm(&["a", "b"], TaskHwm::Auto);
    let t0 = h.t0;
    // Tasks on each engine, oldest first.
    let mut on: HashMap<String, Vec<String>> = HashMap::new();
    let place = |on: &mut HashMap<String, Vec<String>>, actions: &[TaskAction]| {
        for (e, m) in assigned(actions) {
            on.entry(e).or_default().push(m);
        }
    };
    for _ in 0..200 {
        let out = h.submit(json!({}), 0);
        place(&mut on, &out.1);
    }
    // Not yet seen to answer: one task per engine.
    assert_eq!((on["a"].len(), on["b"].len()), (1, 1));
    // a answers every 50 µs (b never): one more task per reply, up to 8.
    let mut now = t0;
    let mut held = Vec::new();
    for _ in 0..20 {
        now += Duration::from_micros(50);
        let m = on.get_mut("a").unwrap().remove(0);
        let out = h.answer_at("a", &m, "ok", true, now);
        place(&mut on, &out);
        held.push(on["a"].len());
    }
    assert_eq!(held[..8], [2, 3, 4, 5, 6, 7, 8, 8]);
    assert!(held.iter().all(|&n| n <= super::super::pace::MAX_DEPTH));
    // a goes silent for longer than the work it was expected to hold (a long task): it
    // gets nothing more, however short its tasks were, while b still holds its one.
    let silent = now + super::super::pace::QUEUED_WORK + Duration::from_micros(1);
    let out = h.st.tick(silent);
    assert!(assigned(&out).is_empty());
    let m = on.get_mut("a").unwrap().remove(0);
    let out = h.answer_at("a", &m, "ok", true, now + Duration::from_secs(2));
    assert!(
        assigned(&out).is_empty(),
        "one long task: a is back to one at a time"
    );
    // a answers the 7 it held at once; only when it holds none does it get the next.
    let mut now = now + Duration::from_secs(2);
    let queue = std::mem::take(on.get_mut("a").unwrap());
    for (i, m) in queue.iter().enumerate() {
        now += Duration::from_micros(50);
        let got = assigned(&h.answer_at("a", m, "ok", true, now));
        let want = usize::from(i + 1 == queue.len());
        assert_eq!(
            got.len(),
            want,
            "{got:?} after {} of {}",
            i + 1,
            queue.len()
        );
    }
}

#[test]
fn hwm_above_one_still_holds_after_and_follow_until_their_dependency_finished() {
    let mut h = Harness::with_hwm(&["a", "b"], TaskHwm::Fixed(0));
    let (x, out) = h.submit(json!({}), 0);
    let (ex, _) = only(&out);
    // Room everywhere, but `after` and `follow` wait for x's reply, not its placement.
    let (after, out) = h.submit(json!({"after": [id(&x)]}), 0);
    assert!(assigned(&out).is_empty());
    let (follow, out) = h.submit(json!({"follow": [id(&x)]}), 0);
    assert!(assigned(&out).is_empty());
    let out = h.answer(&ex, id(&x), "ok", true, 1);
    let mut got = assigned(&out);
    got.sort();
    let follow_to = (ex.clone(), id(&follow).to_string());
    assert!(got.contains(&follow_to), "follow runs where x ran: {got:?}");
    assert!(got.iter().any(|(_, m)| m == id(&after)), "{got:?}");
    assert_eq!(got.len(), 2);
}

#[test]
fn a_dead_engine_fails_or_retries_every_task_it_held() {
    let mut h = Harness::with_hwm(&["a", "b"], TaskHwm::Fixed(3));
    let mut on_a = Vec::new();
    for retries in [0, 0, 1, 0, 1, 0] {
        let (t, out) = h.submit(json!({"retries": retries}), 0);
        if only(&out).0 == "a" {
            on_a.push((t, retries));
        }
    }
    assert_eq!(on_a.len(), 3, "a holds 3 tasks");
    let out = h.down("a", 10);
    let replies = to_client(&out);
    let failed: Vec<&Message> = on_a
        .iter()
        .filter(|(_, r)| *r == 0)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        replies.len(),
        failed.len(),
        "one EngineError per task without retries"
    );
    for (reply, req) in replies.iter().zip(&failed) {
        assert_error(reply, req, "EngineError");
        assert_eq!(reply.metadata["engine"], "a");
    }
    // The ones with a retry wait for b (which holds 3, its hwm), then run there.
    let retried: Vec<String> = on_a
        .iter()
        .filter(|(_, r)| *r == 1)
        .map(|(t, _)| id(t).to_string())
        .collect();
    assert!(assigned(&out).is_empty(), "b is full");
    let on_b: Vec<String> = h.st.engines["b"].outstanding.keys().cloned().collect();
    let mut rerun = Vec::new();
    for msg_id in on_b {
        rerun.extend(assigned(&h.answer("b", &msg_id, "ok", true, 20)));
    }
    rerun.sort();
    let mut want: Vec<(String, String)> = retried
        .iter()
        .map(|m| ("b".to_string(), m.clone()))
        .collect();
    want.sort();
    assert_eq!(rerun, want);
    // Their retry is spent: b's death fails both.
    let replies = to_client(&h.down("b", 30));
    let mut parents: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.content["ename"], "EngineError");
            r.parent_msg_id().unwrap().to_string()
        })
        .collect();
    parents.sort();
    let mut retried = retried;
    retried.sort();
    assert_eq!(parents, retried);
}

#[test]
fn many_waiting_tasks_cost_little_per_message() {
    // 20,000 tasks queue behind one engine, then run one by one. With a scan of the
    // queue per message this is ~2*10^8 steps; indexed, it is a fraction of a second.
    let n = 20_000;
    let mut h = Harness::new(&["a"]);
    let started = std::time::Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(h.submit(json!({}), 0).0.header.msg_id);
    }
    for (i, msg_id) in ids.iter().enumerate() {
        let out = h.answer("a", msg_id, "ok", true, 1);
        assert_eq!(to_client(&out).len(), 1);
        if i + 1 < n {
            assert_eq!(assigned(&out), vec![("a".into(), ids[i + 1].clone())]);
        }
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

#[test]
fn targeted_tasks_waiting_for_a_busy_engine_are_not_rescanned_per_message() {
    // A view with `targets=[a]` queues n tasks behind busy a while b is free and serves
    // plain tasks. Looking at every queued task per message is n²/2 looks; grouped by
    // constraints it is a few per message.
    let n = 5_000;
    let mut h = Harness::new(&["a", "b"]);
    let mut targeted = Vec::new();
    for _ in 0..n {
        targeted.push(h.submit(json!({"targets": ["a"]}), 0).0.header.msg_id);
    }
    for _ in 0..n {
        let (t, out) = h.submit(json!({}), 0);
        let (engine, _) = only(&out);
        assert_eq!(engine, "b");
        h.answer("b", id(&t), "ok", true, 1);
    }
    for (i, msg_id) in targeted.iter().enumerate() {
        let out = h.answer("a", msg_id, "ok", true, 2);
        if i + 1 < n {
            assert_eq!(assigned(&out), vec![("a".into(), targeted[i + 1].clone())]);
        }
    }
    let messages = 4 * n as u64;
    assert!(
        h.st.looked_at < 4 * messages,
        "{} looks for {messages} messages",
        h.st.looked_at
    );
}

// ---- generated ill-formed requests ----------------------------------------------------

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("done-ok".to_string()),
            Just("done-bad".to_string()),
            Just("running".to_string()),
            Just("a".to_string()),
            "[a-z]{0,6}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("dependencies".to_string()),
                    Just("all".to_string()),
                    Just("success".to_string()),
                    Just("failure".to_string()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pool_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("done-ok")),
        Just(json!("done-bad")),
        Just(json!("running")),
        "[a-z]{0,3}".prop_map(Value::from),
    ]
}

/// `after`/`follow`: mostly plausible (lists and dicts of known msg_ids), else anything.
fn any_dependency() -> impl Strategy<Value = Value> {
    let list = || prop::collection::vec(pool_id(), 0..3).prop_map(Value::from);
    let dict = (
        list(),
        any_json(),
        any_json(),
        any_json(),
        any::<[bool; 3]>(),
    )
        .prop_map(|(ids, all, success, failure, plausible)| {
            let flag = |v: Value, default: bool, use_bool: bool| {
                if use_bool {
                    Value::from(default)
                } else {
                    v
                }
            };
            json!({
                "dependencies": ids,
                "all": flag(all, true, plausible[0]),
                "success": flag(success, !plausible[2], plausible[1]),
                "failure": flag(failure, plausible[2], plausible[1]),
            })
        });
    prop_oneof![3 => list(), 2 => dict, 1 => any_json()]
}

/// Metadata: usually a dict with some of the fields the scheduler reads, mostly of the
/// types it expects and sometimes of any type; sometimes not a dict at all.
fn any_metadata() -> impl Strategy<Value = Value> {
    let maybe = |s: BoxedStrategy<Value>| prop::option::weighted(0.5, s);
    let targets = prop_oneof![
        3 => prop::collection::vec(
            prop_oneof![Just(json!("a")), Just(json!("b")), Just(json!("gone"))],
            0..3
        )
        .prop_map(Value::from),
        1 => any_json(),
    ];
    let retries = prop_oneof![3 => (0u64..3).prop_map(Value::from), 1 => any_json()];
    let timeout = prop_oneof![3 => (0.0f64..0.05).prop_map(Value::from), 1 => any_json()];
    let dict = (
        maybe(any_dependency().boxed()),
        maybe(any_dependency().boxed()),
        maybe(targets.boxed()),
        maybe(retries.boxed()),
        maybe(timeout.boxed()),
    )
        .prop_map(|(after, follow, targets, retries, timeout)| {
            let mut md = serde_json::Map::new();
            for (k, v) in [
                ("after", after),
                ("follow", follow),
                ("targets", targets),
                ("retries", retries),
                ("timeout", timeout),
            ] {
                if let Some(v) = v {
                    md.insert(k.to_string(), v);
                }
            }
            Value::Object(md)
        });
    prop_oneof![6 => dict, 1 => any_json()]
}

/// A header: mostly well-formed, sometimes with msg_id or msg_type of any type or missing.
fn any_header() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        4 => "t-[a-z0-9]{1,8}".prop_map(|s| Some(Value::from(s))),
        1 => prop::option::of(any_json()),
    ];
    let msg_type = prop_oneof![
        4 => Just(Some(Value::from("apply_request"))),
        1 => prop::option::of(any_json()),
    ];
    prop_oneof![
        6 => (id, msg_type).prop_map(|(id, t)| {
            let mut h = serde_json::Map::new();
            if let Some(id) = id {
                h.insert("msg_id".into(), id);
            }
            if let Some(t) = t {
                h.insert("msg_type".into(), t);
            }
            h.insert("session".into(), json!("s"));
            Value::Object(h)
        }),
        1 => any_json(),
    ]
}

/// Signed frames as the client-side ROUTER would receive them, from raw JSON values.
fn signed(header: &Value, parent: &Value, md: &Value, content: &Value) -> Vec<zmq::Message> {
    let json = [header, parent, md, content].map(|v| serde_json::to_vec(v).unwrap());
    let sig = Signer::new(KEY).sign([&json[0], &json[1], &json[2], &json[3]]);
    let mut frames = vec![b"client".to_vec(), b"<IDS|MSG>".to_vec(), sig];
    frames.extend(json);
    zmsgs(frames)
}

/// msg_ids the client was answered about (relayed or written by the scheduler).
fn answered(actions: &[TaskAction]) -> Vec<String> {
    to_client(actions)
        .iter()
        .filter_map(|m| m.parent_msg_id().map(str::to_string))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any signed task, however odd, is either dropped (nothing recorded, nothing sent)
    /// or accepted and then answered exactly once, once its engines and dependencies
    /// answer and the clock runs on; nothing stays behind.
    #[test]
    fn every_accepted_task_is_answered_exactly_once(
        header in any_header(),
        parent in any_json(),
        md in any_metadata(),
        content in any_json(),
        statuses in prop::collection::vec(prop_oneof![Just("ok"), Just("error"), Just("aborted")], 8),
    ) {
        let mut h = Harness::new(&["a", "b"]);
        // Known history: two finished tasks and one running on a.
        let mut pending = Vec::new();
        for (name, status) in [("done-ok", "ok"), ("done-bad", "error"), ("running", "ok")] {
            let hdr = json!({"msg_id": name, "msg_type": "apply_request", "session": "s"});
            let out = h.st.submit(signed(&hdr, &json!({}), &json!({}), &json!({})), h.t0);
            for (engine, msg_id) in assigned(&out) {
                if name == "running" {
                    pending.push((engine, msg_id));
                } else {
                    h.answer(&engine, &msg_id, status, true, 0);
                }
            }
        }
        let msg_id = header.get("msg_id").and_then(Value::as_str).map(str::to_string);
        prop_assume!(!matches!(msg_id.as_deref(), Some("done-ok" | "done-bad" | "running")));
        let submitted = h.st.submit(signed(&header, &parent, &md, &content), h.t0);
        let accepted = submitted
            .iter()
            .any(|a| matches!(a, TaskAction::Hub(HubEvent::TaskSubmitted { .. })));
        let mut replies = answered(&submitted);
        pending.extend(assigned(&submitted));
        // Engines answer whatever they get, with the generated statuses, until idle.
        let mut step = 0;
        while let Some((engine, id)) = pending.pop() {
            let status = statuses[step % statuses.len()];
            step += 1;
            prop_assert!(step < 100, "the scheduler keeps re-sending");
            let out = h.answer(&engine, &id, status, true, step as u64);
            replies.extend(answered(&out));
            pending.extend(assigned(&out));
        }
        // Long after any timeout.
        let out = h.st.tick(h.t0 + Duration::from_secs(2_000_000_000));
        replies.extend(answered(&out));
        prop_assert!(assigned(&out).is_empty());
        if accepted {
            let msg_id = msg_id.expect("accepted tasks have a string msg_id");
            let n = replies.iter().filter(|r| **r == msg_id).count();
            // Still waiting is right only when no engine may take it (its retries
            // blacklisted them, or the one its `follow` needs): it waits for a new engine
            // or its timeout, as in ipyparallel. Never lost.
            let waiting = h.st.queued.values().any(|t| {
                t.msg_id == msg_id
                    && !["a", "b"].iter().any(|e| eligible(e, &t.constraints, &h.st.history))
            });
            prop_assert!(n == 1 && !waiting || n == 0 && waiting, "{n} replies, waiting {waiting}: {md}");
        } else {
            prop_assert!(submitted.is_empty(), "a dropped task leaves no trace");
        }
        prop_assert!(h.st.engines.values().all(|e| e.outstanding.is_empty()));
    }
}
