//! The one thread that owns every socket after connect.
//!
//! Callers never touch a client socket: they push `[channel, task ids, frames..]` into an
//! inproc PUSH socket whose PULL end is polled here, next to the Hub and engine sockets.
//! Incoming messages are verified (bad signatures are dropped and logged), decoded outside
//! the lock, then filed into the [`Store`] in batches. Waiters for results are woken only
//! by batches that can change readiness (replies, `status`, notifications, Hub replies),
//! and data watchers only by batches that carry publications, so a flood of
//! `data_message`s does not spin a thread blocked in `get()`.
//! Nothing here needs the GIL, so a Python loop reading `.data` never slows the intake.
//!
//! Three duties besides:
//! * sends never block ([`Outbox`]): one socket at its high-water mark cannot stall the rest;
//! * the controller's liveness ([`Liveness`]): a lost controller fails every wait;
//! * corral IOPub (a corral controller's `corral_iopub` endpoint, docs/PROTOCOL.md §11):
//!   every message received there is acknowledged once per round (`iopub_ack`), which is
//!   what lets the controller send more; a cut-off notice fails the tasks whose output the
//!   controller dropped; `iopub_stats_request` queries go to that endpoint, which answers
//!   them in line with the output (`Client.iopub_stats()`);
//! * engine-list re-sync: after the notification subscription is (re)connected, and when a
//!   message names an engine we do not know, the Hub is asked for its engine list again,
//!   so a registration announced before our subscription was live is not missed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_wire::{trace, Message, Session};
use parking_lot::{Condvar, Mutex};
use serde_json::json;

use crate::connect::{engines_of, Sockets};
use crate::liveness::{LinkEvent, Liveness};
use crate::outbox::{Outbox, Outgoing};
use crate::store::Store;

/// State shared between the I/O thread and callers.
pub struct Shared {
    pub store: Mutex<Store>,
    /// Notified after a batch that may change readiness or the engine list, and on every
    /// idle poll round (so the lost-idle rule can fire).
    pub changed: Condvar,
    /// Notified after a batch that carried published data or output.
    pub published: Condvar,
}

impl Shared {
    fn wake_all(&self) {
        self.changed.notify_all();
        self.published.notify_all();
    }
}

/// The inproc endpoint callers submit through.
pub(crate) const SUBMIT_URL: &str = "inproc://corral-client-submit";
/// First frame of a submission that stops the thread.
pub(crate) const STOP: &[u8] = b"stop";

/// At most this many messages are taken from one socket per round, so one busy socket
/// (a flood of publications) cannot starve replies and notifications.
const BATCH: usize = 2048;
/// ... and at most about this many bytes, so a burst of large publications (8 MB arrays)
/// is filed, and conflated, a few at a time instead of all being held decoded at once.
const BATCH_BYTES: usize = 32 << 20;
/// A re-sync waits this long after the notification handshake, so our subscription has
/// surely reached the Hub's PUB before the Hub reads our query.
const RESYNC_DELAY: Duration = Duration::from_millis(200);
/// At most one re-sync for unknown engines per this period.
const RESYNC_MIN_GAP: Duration = Duration::from_secs(1);
/// Poll period when nothing arrives: bounds how late the liveness and re-sync checks run.
const POLL_MS: i64 = 100;

#[derive(Clone, Copy)]
enum Source {
    Reply,
    Iopub,
    Notification,
    Hub,
}

/// The outgoing sockets, in the order of [`OUT_NAMES`]. `iopub` takes only the queries
/// that the corral IOPub endpoint answers (see [`is_iopub_query`]).
const OUT_NAMES: [&[u8]; 6] = [
    b"mux",
    b"task",
    b"control",
    b"broadcast",
    b"query",
    b"iopub",
];
const QUERY: usize = 4;
const IOPUB: usize = 5;

/// What the thread needs besides the sockets.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
    pub session: Arc<Session>,
    pub liveness: Liveness,
}

/// When to ask the Hub for its engine list again.
struct Resync {
    due: Option<Instant>,
    last: Option<Instant>,
    request: Option<String>,
}

pub(crate) fn run(sockets: Sockets, submit: zmq::Socket, mut cx: Context) {
    let Sockets {
        query,
        mux,
        control,
        task,
        broadcast,
        iopub,
        corral_iopub,
        iopub_events,
        notification,
        query_events,
        notification_events,
    } = sockets;
    let outputs: [&zmq::Socket; 6] = [&mux, &task, &control, &broadcast, &query, &iopub];
    let mut outboxes: [Outbox; 6] = Default::default();
    // corral IOPub messages received and not acknowledged yet.
    let mut unacked: u64 = 0;
    // The corral IOPub connection dropped: its next handshake needs a new subscription.
    let mut iopub_down = false;
    let inputs: [(&zmq::Socket, Source); 7] = [
        (&mux, Source::Reply),
        (&task, Source::Reply),
        (&broadcast, Source::Reply),
        (&control, Source::Reply),
        (&notification, Source::Notification),
        (&query, Source::Hub),
        (&iopub, Source::Iopub),
    ];
    let mut resync = Resync {
        due: None,
        last: None,
        request: None,
    };
    let shared = cx.shared.clone();
    let mut decoded: Vec<(Source, Message)> = Vec::with_capacity(BATCH);
    loop {
        let mut items: Vec<zmq::PollItem> = Vec::with_capacity(15);
        items.push(submit.as_poll_item(zmq::POLLIN));
        items.push(query_events.as_poll_item(zmq::POLLIN));
        items.push(notification_events.as_poll_item(zmq::POLLIN));
        items.extend(inputs.iter().map(|(s, _)| s.as_poll_item(zmq::POLLIN)));
        // Writable interest only where something waits, or poll would spin.
        let waiting: Vec<usize> = (0..outputs.len())
            .filter(|&k| !outboxes[k].is_empty())
            .collect();
        items.extend(
            waiting
                .iter()
                .map(|&k| outputs[k].as_poll_item(zmq::POLLOUT)),
        );
        if let Err(e) = zmq::poll(&mut items, POLL_MS) {
            tracing::error!(error = %e, "poll failed; client I/O thread stops");
            return;
        }
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        let writable: Vec<bool> = items.iter().map(|i| i.is_writable()).collect();
        drop(items);
        let now = Instant::now();

        // Sockets that became writable take their backlog first, keeping order.
        for (n, &k) in waiting.iter().enumerate() {
            if writable[3 + inputs.len() + n] {
                let failed = outboxes[k].flush(outputs[k]);
                fail_unsent(&shared, failed, "the send failed (see the log)");
            }
        }

        if readable[0] {
            while let Ok(mut frames) = submit.recv_multipart(zmq::DONTWAIT) {
                let channel = frames.first().map(Vec::as_slice).unwrap_or_default();
                if channel == STOP {
                    tracing::debug!("client I/O thread stopping");
                    return;
                }
                let Some(mut k) = OUT_NAMES.iter().position(|n| *n == channel) else {
                    tracing::error!(channel = ?String::from_utf8_lossy(channel), "unknown channel");
                    continue;
                };
                if frames.len() < 3 {
                    continue;
                }
                if k == QUERY && is_iopub_query(&frames[2..]) {
                    if !corral_iopub {
                        answer_no_corral_iopub(&cx, &frames[2..]);
                        continue;
                    }
                    k = IOPUB;
                }
                // [channel, task ids, message frames..]: keep the frames without copying them.
                let tasks = task_ids(&frames[1]);
                frames.drain(..2);
                let traced = trace::enabled().then(|| tasks.first().cloned()).flatten();
                let outgoing = Outgoing { frames, tasks };
                send(
                    &shared,
                    &mut outboxes[k],
                    outputs[k],
                    outgoing,
                    OUT_NAMES[k],
                );
                if let Some(msg_id) = traced {
                    trace::point("c_sent", msg_id.as_bytes());
                }
            }
        }

        for event in drain_events(&query_events, readable[1]) {
            cx.liveness.on_event(event, now);
        }
        if drain_events(&notification_events, readable[2]).contains(&LinkEvent::Up) {
            // Our subscription is on its way: ask again once it has surely arrived.
            resync.due = Some(now + RESYNC_DELAY);
        }

        for (k, (socket, source)) in inputs.iter().enumerate() {
            if !readable[k + 3] {
                continue;
            }
            let mut bytes = 0;
            for _ in 0..BATCH {
                if bytes >= BATCH_BYTES {
                    break;
                }
                let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) else {
                    break;
                };
                bytes += frames.iter().map(Vec::len).sum::<usize>();
                if matches!(source, Source::Iopub) {
                    unacked += 1;
                }
                match Message::decode_owned(frames, &cx.session.signer) {
                    Ok(m) => {
                        if trace::enabled() {
                            trace_in(*source, &m);
                        }
                        decoded.push((*source, m))
                    }
                    // ipykernel's iopub_welcome and similar arrive signed; anything that
                    // fails here is malformed or forged.
                    Err(e) => tracing::warn!(error = %e, "invalid message dropped"),
                }
            }
        }

        if let Some(events) = &iopub_events {
            // Polled by draining (at least every POLL_MS): reconnections are rare.
            for event in drain_events(events, true) {
                match event {
                    LinkEvent::Down => iopub_down = true,
                    LinkEvent::Up if iopub_down => {
                        iopub_down = false;
                        unacked = 0;
                        resubscribe(&cx, &iopub, now);
                    }
                    LinkEvent::Up => {}
                }
            }
        }
        if corral_iopub && unacked > 0 {
            // Credit for what we took: the controller sends more only when we acknowledge.
            let ack = cx.session.msg("iopub_ack", json!({ "messages": unacked }));
            match iopub.send_multipart(cx.session.encode(&ack), zmq::DONTWAIT) {
                Ok(()) => unacked = 0,
                Err(e) => tracing::debug!(error = %e, "iopub ack not sent; retried next round"),
            }
        }

        if cx.liveness.became_lost(now) {
            let unfinished = shared.store.lock().controller_lost();
            let dropped: usize = outboxes.iter_mut().map(|o| o.clear().len()).sum();
            tracing::error!(
                grace_s = cx.liveness.grace.as_secs_f64(),
                unfinished = unfinished.len(),
                unsent = dropped,
                "the controller stopped answering; every unfinished result fails"
            );
            shared.wake_all();
        }
        if !cx.liveness.is_lost() {
            resync_if_due(&mut cx, &mut resync, &mut outboxes[4], &query, now);
        }

        if decoded.is_empty() {
            // A timeout round still wakes waiters, so the lost-idle rule can fire.
            shared.changed.notify_all();
            continue;
        }
        let (mut readiness, mut output) = (false, false);
        let traced: Vec<(&str, String)> = if trace::enabled() {
            decoded
                .iter()
                .filter_map(|(_, m)| {
                    // Published data by its own msg_id (a task publishes many).
                    match m.msg_type() {
                        "data_message" => Some(("c_data_filed", m.header.msg_id.clone())),
                        _ => Some(("c_filed", m.parent_msg_id()?.to_owned())),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        {
            let mut store = shared.store.lock();
            for (source, m) in decoded.drain(..) {
                match source {
                    // Status, and the corral endpoint's cut-off notices and stats replies,
                    // can end waits.
                    Source::Iopub
                        if matches!(
                            m.msg_type(),
                            "status" | "iopub_cutoff" | "iopub_stats_reply"
                        ) =>
                    {
                        readiness = true
                    }
                    Source::Iopub => output = true,
                    _ => readiness = true,
                }
                match source {
                    Source::Reply => store.on_reply(m, now),
                    Source::Iopub if corral_iopub => on_corral_iopub(&mut store, m, now),
                    Source::Iopub => store.on_iopub(m, now),
                    Source::Notification => {
                        store.on_notification(&m, now);
                    }
                    Source::Hub if resync.request.as_deref() == m.parent_msg_id() => {
                        resync.request = None;
                        let added = store.merge_engines(engines_of(&m));
                        if added > 0 {
                            tracing::info!(added, "engine list re-sync found engines we missed");
                        }
                    }
                    Source::Hub => store.on_hub_reply(m),
                }
            }
            if store.take_unknown_engine_seen() && resync.due.is_none() {
                resync.due = Some(now);
            }
        }
        // Taken before waking anyone: a woken caller may run before this thread does.
        let filed_ns = if traced.is_empty() {
            0
        } else {
            trace::now_ns()
        };
        if readiness {
            shared.changed.notify_all();
        }
        if output || readiness {
            shared.published.notify_all();
        }
        for (point, msg_id) in &traced {
            trace::point_at(point, msg_id.as_bytes(), filed_ns);
        }
    }
}

/// Trace point of a message as it arrives (see `corral_wire::trace`), by kind: a reply,
/// the engine's `status: idle`, or published data.
fn trace_in(source: Source, m: &Message) {
    let point = match (source, m.msg_type()) {
        (Source::Reply, _) => "c_reply_in",
        (Source::Iopub, "status") if m.content.get("execution_state") == Some(&json!("idle")) => {
            "c_idle_in"
        }
        (Source::Iopub, "data_message") => {
            // By its own msg_id: a task publishes many.
            trace::point("c_data_in", m.header.msg_id.as_bytes());
            return;
        }
        _ => return,
    };
    if let Some(parent) = m.parent_msg_id() {
        trace::point(point, parent.as_bytes());
    }
}

/// Task msg_ids travel as one space-separated frame (msg_ids never contain spaces).
pub(crate) fn task_frame(msg_ids: &[String]) -> Vec<u8> {
    msg_ids.join(" ").into_bytes()
}

fn task_ids(frame: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(frame)
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Sends or queues `msg`; a full backlog fails the tasks it carried.
fn send(shared: &Shared, outbox: &mut Outbox, socket: &zmq::Socket, msg: Outgoing, name: &[u8]) {
    if let Err(full) = outbox.send(socket, msg) {
        let why = format!(
            "the controller is not taking messages on the {} socket ({} messages, {} MB \
             already wait to be sent); is it overloaded or stuck?",
            String::from_utf8_lossy(name),
            full.waiting,
            full.waiting_bytes >> 20
        );
        tracing::error!(reason = %why, "request not sent");
        fail_unsent(shared, vec![full.rejected], &why);
    }
}

fn fail_unsent(shared: &Shared, msgs: Vec<Outgoing>, why: &str) {
    let tasks: Vec<String> = msgs.into_iter().flat_map(|m| m.tasks).collect();
    if tasks.is_empty() {
        return;
    }
    shared.store.lock().fail_unsent(&tasks, why, Instant::now());
    shared.wake_all();
}

/// Every link event waiting on a monitor PAIR socket.
fn drain_events(events: &zmq::Socket, readable: bool) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    if !readable {
        return out;
    }
    while let Ok(frames) = events.recv_multipart(zmq::DONTWAIT) {
        if let Some(e) = frames
            .first()
            .and_then(|f| LinkEvent::from_monitor_frame(f))
        {
            out.push(e);
        }
    }
    out
}

/// Sends the re-sync `connection_request` when one is due (and none is in flight).
fn resync_if_due(
    cx: &mut Context,
    resync: &mut Resync,
    outbox: &mut Outbox,
    query: &zmq::Socket,
    now: Instant,
) {
    let Some(due) = resync.due else { return };
    let too_soon = resync.last.is_some_and(|t| now < t + RESYNC_MIN_GAP);
    if now < due || too_soon {
        return;
    }
    resync.due = None;
    resync.last = Some(now);
    let msg = cx.session.msg("connection_request", json!({}));
    resync.request = Some(msg.header.msg_id.clone());
    let outgoing = Outgoing {
        frames: cx.session.encode(&msg),
        tasks: Vec::new(),
    };
    send(&cx.shared, outbox, query, outgoing, b"query");
}

/// True for a query the corral IOPub endpoint answers instead of the Hub.
fn is_iopub_query(frames: &[Vec<u8>]) -> bool {
    // [<IDS|MSG>, signature, header, ...]: only the header's msg_type matters.
    frames.get(2).is_some_and(|h| {
        let needle = b"\"iopub_stats_request\"";
        h.windows(needle.len()).any(|w| w == needle)
    })
}

/// A stock controller has no corral IOPub endpoint: answer its statistics query here.
fn answer_no_corral_iopub(cx: &Context, frames: &[Vec<u8>]) {
    let Ok(request) = Message::decode(frames, &cx.session.signer) else {
        return;
    };
    let reply = cx
        .session
        .msg(
            "iopub_stats_reply",
            json!({
                "status": "error",
                "ename": "NotAvailable",
                "evalue": "this controller has no corral IOPub endpoint (`corral_iopub` is not in \
                           its connection file: a stock ipyparallel controller?), so there are \
                           no per-client IOPub statistics",
            }),
        )
        .with_parent(&request.header);
    cx.shared.store.lock().on_hub_reply(reply);
    cx.shared.wake_all();
}

/// Files a message from the corral IOPub endpoint: engine output as from a PUB, plus the
/// endpoint's own messages.
fn on_corral_iopub(store: &mut Store, m: Message, now: Instant) {
    match m.msg_type() {
        "iopub_cutoff" => {
            let lost_all = m
                .content
                .get("lost_all")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            let ids: Vec<String> = m
                .content
                .get("lost_msg_ids")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let why = format!(
                "this client stopped reading its IOPub while {} MB of output waited for it \
                 (the controller's budget per client, `corral controller --iopub-budget`, \
                 is {} MB), so the controller dropped {} messages of output; results \
                 submitted from now on are complete again",
                m.content
                    .get("dropped_bytes")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
                    >> 20,
                m.content
                    .get("budget_bytes")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
                    >> 20,
                m.content
                    .get("dropped_messages")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
            );
            let failed = store.output_lost((!lost_all).then_some(ids.as_slice()), &why, now);
            tracing::error!(failed = failed.len(), reason = %why, "IOPub cut off by the controller");
        }
        "iopub_stats_reply" => store.on_hub_reply(m),
        "iopub_subscribe_reply" | "iopub_probe" => {}
        _ => store.on_iopub(m, now),
    }
}

/// The corral IOPub connection came back: the controller sees a new peer, so subscribe
/// again, and fail every unfinished task, since output sent while the connection was down
/// is lost (never a silent gap).
fn resubscribe(cx: &Context, iopub: &zmq::Socket, now: Instant) {
    let request = cx.session.msg("iopub_subscribe_request", json!({}));
    if let Err(e) = iopub.send_multipart(cx.session.encode(&request), zmq::DONTWAIT) {
        tracing::error!(error = %e, "could not subscribe again to the controller's IOPub");
    }
    let why = "the IOPub connection to the controller dropped and was re-established; \
               output sent in between is lost";
    let failed = cx.shared.store.lock().output_lost(None, why, now);
    tracing::warn!(failed = failed.len(), "IOPub reconnected: subscribed again");
    cx.shared.wake_all();
}
