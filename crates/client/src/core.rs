//! [`ClientCore`]: the handle a caller (the Python layer) drives.
//!
//! Submitting records the task in the store before the request leaves, then hands the
//! signed frames to the I/O thread. Waiting blocks on the store's condition variable for
//! at most the given slice, so a caller can interleave signal checks (Ctrl-C). Once the
//! controller is lost, every wait on something unfinished, every submission and every
//! engine-list read fails with [`ClientError::ControllerLost`] instead of hanging.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral_wire::{encode_raw, trace, ClientConnection, Message, Session};
use parking_lot::Mutex;
use serde_json::Value;

use crate::connect::handshake;
use crate::error::{ClientError, Result};
use crate::io_thread::{self, Shared, STOP, SUBMIT_URL};
use crate::liveness::{Liveness, DEFAULT_GRACE};
use crate::store::{PendingData, Reply, Store, StoreStats};
use corral_curve::CurveClient;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Direct to one engine (DirectView).
    Mux,
    /// Load-balanced by the task scheduler.
    Task,
    /// Engine control: abort, clear, shutdown.
    Control,
    Broadcast,
}

impl Channel {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "mux" => Ok(Channel::Mux),
            "task" => Ok(Channel::Task),
            "control" => Ok(Channel::Control),
            "broadcast" => Ok(Channel::Broadcast),
            other => Err(ClientError::UnknownChannel(other.to_owned())),
        }
    }
    fn name(self) -> &'static [u8] {
        match self {
            Channel::Mux => b"mux",
            Channel::Task => b"task",
            Channel::Control => b"control",
            Channel::Broadcast => b"broadcast",
        }
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// How long to wait for the Hub's `connection_reply`.
    pub timeout: Duration,
    /// How long the controller may stay unreachable before every wait fails.
    pub grace: Duration,
    /// Accept a connection file with an empty key (unsigned messages).
    pub insecure: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Duration::from_secs(10),
            grace: DEFAULT_GRACE,
            insecure: false,
        }
    }
}

/// A snapshot of one task's progress, for metadata.
#[derive(Debug, Clone)]
pub struct TaskView {
    pub engine: Option<String>,
    pub submitted: String,
    pub stdout: String,
    pub stderr: String,
    pub outputs: Vec<Value>,
    pub data_received: u64,
    /// Updates replaced by later ones before they were read.
    pub data_conflated: u64,
    /// An engine has started running it.
    pub started: bool,
    /// Followed, not sent by this client ([`ClientCore::follow`]).
    pub foreign: bool,
}

pub struct ClientCore {
    shared: Arc<Shared>,
    session: Arc<Session>,
    /// PUSH end of the submission pipe; a Mutex because zmq sockets are not Sync.
    submit: Mutex<Option<zmq::Socket>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Registration URL, for messages.
    pub url: String,
    grace: Duration,
    _ctx: zmq::Context,
}

impl ClientCore {
    /// Handshakes with the Hub and starts the I/O thread. An empty key is refused unless
    /// `options.insecure`: without a key nothing is signed, so anyone who can reach the
    /// ports could run code on the engines.
    pub fn connect(conn: &ClientConnection, options: &ConnectOptions) -> Result<Self> {
        let url = conn.url(conn.registration);
        // Before the context exists: libzmq 4.3.4 makes the key pair through a libsodium
        // call that is only safe while no CURVE socket is working (libzmq issue #4241).
        let curve = match conn.curve_server() {
            Some(server) => Some(
                CurveClient::new(&server, |n| std::env::var(n).ok()).map_err(|reason| {
                    ClientError::Curve {
                        url: url.clone(),
                        reason,
                    }
                })?,
            ),
            None => None,
        };
        if conn.key.is_empty() && curve.is_some() {
            // What a stock controller with `enable_curve` writes: CURVE instead of signing.
            tracing::info!(%url, "the cluster key is empty: messages are not signed; CurveZMQ encrypts them");
        } else if conn.key.is_empty() {
            if !options.insecure {
                return Err(ClientError::EmptyKey { url });
            }
            tracing::warn!(
                %url,
                "INSECURE: the cluster key is empty, so messages are neither signed nor \
                 checked; anyone who can reach these ports can run code on the engines"
            );
        }
        let ctx = zmq::Context::new();
        let session = Arc::new(Session::new(conn.key.as_bytes()));
        let (sockets, engines) = handshake(&ctx, conn, &session, options.timeout, curve.as_ref())?;
        let mut store = Store::new(session.id.clone());
        store.merge_engines(engines);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changed: parking_lot::Condvar::new(),
            published: parking_lot::Condvar::new(),
        });
        // One inproc endpoint per context, so several clients in a process never clash.
        let pull = ctx.socket(zmq::PULL).map_err(ClientError::zmq("submit"))?;
        pull.bind(SUBMIT_URL).map_err(ClientError::zmq("submit"))?;
        let push = ctx.socket(zmq::PUSH).map_err(ClientError::zmq("submit"))?;
        push.set_linger(0).map_err(ClientError::zmq("submit"))?;
        push.connect(SUBMIT_URL)
            .map_err(ClientError::zmq("submit"))?;
        let cx = io_thread::Context {
            shared: shared.clone(),
            session: session.clone(),
            liveness: Liveness::new(options.grace),
        };
        let thread = std::thread::Builder::new()
            .name("corral-client-io".into())
            .spawn(move || io_thread::run(sockets, pull, cx))
            .expect("spawning a thread");
        Ok(ClientCore {
            shared,
            session,
            submit: Mutex::new(Some(push)),
            thread: Mutex::new(Some(thread)),
            url,
            grace: options.grace,
            _ctx: ctx,
        })
    }

    pub fn session_id(&self) -> &str {
        &self.session.id
    }

    fn lost_error(&self) -> ClientError {
        ClientError::ControllerLost {
            url: self.url.clone(),
            grace_s: self.grace.as_secs_f64(),
        }
    }

    /// Err once the controller is considered gone.
    pub fn check_controller(&self) -> Result<()> {
        if self.shared.store.lock().is_lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    fn send(&self, channel: &[u8], tasks: &[String], msg: &Message) -> Result<()> {
        self.push(channel, tasks, self.session.encode(msg))
    }

    /// Hands `[channel, task ids, message frames..]` to the I/O thread.
    fn push(&self, channel: &[u8], tasks: &[String], message: Vec<Vec<u8>>) -> Result<()> {
        let mut frames = Vec::with_capacity(2 + message.len());
        frames.push(channel.to_vec());
        frames.push(io_thread::task_frame(tasks));
        frames.extend(message);
        let guard = self.submit.lock();
        let push = guard.as_ref().ok_or(ClientError::Closed)?;
        // The I/O thread never blocks on a peer, so it drains this pipe promptly.
        push.send_multipart(frames, 0)
            .map_err(ClientError::zmq("submit"))
    }

    /// Sends a request and records it as a task; returns its msg_id. `target` is the
    /// engine uuid, required for mux and control. `content` and `metadata` are JSON text,
    /// sent as they are once checked: the hot path builds no JSON values from them.
    pub fn submit(
        &self,
        channel: Channel,
        target: Option<&str>,
        msg_type: &str,
        content: &str,
        metadata: &str,
        buffers: Vec<Vec<u8>>,
    ) -> Result<String> {
        check_json("content", content)?;
        check_json("metadata", metadata)?;
        let header = self.session.header(msg_type);
        let msg_id = header.msg_id.clone();
        trace::point("c_submit", msg_id.as_bytes());
        let idents = match (channel, target) {
            (Channel::Mux | Channel::Control, Some(t)) => vec![t.as_bytes().to_vec()],
            _ => Vec::new(),
        };
        let header_json = serde_json::to_vec(&header).expect("a header always serializes");
        let frames = encode_raw(
            &self.session.signer,
            idents,
            header_json,
            [b"{}", metadata.as_bytes(), content.as_bytes()],
            buffers,
        );
        {
            // One lock for the check and the record: submitting is the hot path.
            let mut store = self.shared.store.lock();
            if store.is_lost() {
                return Err(self.lost_error());
            }
            store.add_task(msg_id.clone(), target.map(str::to_owned), header.date);
        }
        self.push(channel.name(), std::slice::from_ref(&msg_id), frames)?;
        trace::point("c_pushed", msg_id.as_bytes());
        Ok(msg_id)
    }

    /// Sends one request through the broadcast scheduler to `targets` (`(uuid, id)`
    /// pairs) and records one task per engine, under the msg_id the scheduler gives that
    /// engine's copy (`<msg_id>_<uuid>`); returns the request's msg_id and those msg_ids,
    /// in the order of `targets`. `metadata` gains the scheduler's fields (`targets`,
    /// `is_broadcast`, `is_coalescing`). Each engine's reply comes back on its own, unless
    /// `coalescing`: then one combined reply comes for the request, filed under its msg_id,
    /// and the engines' copies collect only their output and data.
    pub fn submit_broadcast(
        &self,
        targets: &[(String, i64)],
        msg_type: &str,
        content: Value,
        mut metadata: Value,
        buffers: Vec<Vec<u8>>,
        coalescing: bool,
    ) -> Result<(String, Vec<String>)> {
        if let Value::Object(md) = &mut metadata {
            md.insert("targets".into(), serde_json::json!(targets));
            md.insert("is_broadcast".into(), Value::Bool(true));
            md.insert("is_coalescing".into(), Value::Bool(coalescing));
        }
        let mut msg = self.session.msg(msg_type, content);
        msg.metadata = metadata;
        msg.buffers = buffers;
        let original = msg.header.msg_id.clone();
        let msg_ids: Vec<String> = targets
            .iter()
            .map(|(uuid, _)| format!("{original}_{uuid}"))
            .collect();
        let mut sent_as = msg_ids.clone();
        {
            let mut store = self.shared.store.lock();
            if store.is_lost() {
                return Err(self.lost_error());
            }
            if coalescing {
                let leaves = msg_ids
                    .iter()
                    .zip(targets)
                    .map(|(msg_id, (uuid, _))| (msg_id.clone(), uuid.clone()))
                    .collect();
                store.add_coalesced(original.clone(), leaves, msg.header.date.clone());
                sent_as.push(original.clone());
            } else {
                for (msg_id, (uuid, _)) in msg_ids.iter().zip(targets) {
                    store.add_task(msg_id.clone(), Some(uuid.clone()), msg.header.date.clone());
                }
            }
        }
        self.send(Channel::Broadcast.name(), &sent_as, &msg)?;
        Ok((original, msg_ids))
    }

    /// Sends a query to the Hub; the reply is collected with [`ClientCore::take_hub_reply`],
    /// which the caller must call until it returns a reply or gives up.
    pub fn hub_send(&self, msg_type: &str, content: Value) -> Result<String> {
        let msg = self.session.msg(msg_type, content);
        {
            let mut store = self.shared.store.lock();
            if store.is_lost() {
                return Err(self.lost_error());
            }
            store.expect_hub_reply(msg.header.msg_id.clone());
        }
        self.send(b"query", &[], &msg)?;
        Ok(msg.header.msg_id)
    }

    /// Waits at most `slice` for the Hub's reply to `msg_id`. With `last` set, this is the
    /// final try: a reply arriving later is dropped.
    pub fn take_hub_reply(
        &self,
        msg_id: &str,
        slice: Duration,
        last: bool,
    ) -> Result<Option<Message>> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            if let Some(m) = store.take_hub_reply(msg_id, false) {
                return Ok(Some(m));
            }
            if store.is_lost() {
                return Err(self.lost_error());
            }
            if self
                .shared
                .changed
                .wait_until(&mut store, deadline)
                .timed_out()
            {
                return Ok(store.take_hub_reply(msg_id, last));
            }
        }
    }

    /// Waits at most `slice` for every msg_id to be ready; true when they all are.
    /// Err when the controller is gone and some are not ready: they never will be.
    pub fn wait(&self, msg_ids: &[String], slice: Duration) -> Result<bool> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            let now = Instant::now();
            if msg_ids.iter().all(|m| store.is_ready(m, now)) {
                return Ok(true);
            }
            if store.is_lost() {
                return Err(self.lost_error());
            }
            if now >= deadline {
                return Ok(false);
            }
            self.shared.changed.wait_until(&mut store, deadline);
        }
    }

    /// Waits at most `slice` until the tasks have received more than `seen` publications
    /// in total, or are all ready. Returns `(publications received, all ready)`, so a
    /// watcher reacts to each batch of updates as it arrives instead of polling.
    pub fn wait_data(&self, msg_ids: &[String], seen: u64, slice: Duration) -> Result<(u64, bool)> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            let now = Instant::now();
            let received: u64 = msg_ids
                .iter()
                .filter_map(|m| store.task(m))
                .map(|t| t.data_received)
                .sum();
            let ready = msg_ids.iter().all(|m| store.is_ready(m, now));
            if received > seen || ready {
                return Ok((received, ready));
            }
            if store.is_lost() {
                return Err(self.lost_error());
            }
            if now >= deadline {
                return Ok((received, ready));
            }
            self.shared.published.wait_until(&mut store, deadline);
        }
    }

    /// Asks [`ClientCore::wait_completed`] to report each of `msg_ids` once it is ready.
    pub fn watch(&self, msg_ids: &[String]) {
        self.shared.store.lock().watch(msg_ids);
        // A caller blocked in wait_completed looks again (some may be ready already).
        self.shared.changed.notify_all();
    }

    /// Waits at most `slice` for watched tasks to become ready; returns those that did
    /// since the last call (each once), or every watched task once the controller is lost.
    /// One thread per client calls this to complete futures: no polling per result.
    pub fn wait_completed(&self, slice: Duration) -> Vec<String> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            let now = Instant::now();
            let done = store.take_completed(now);
            if !done.is_empty() || now >= deadline {
                return done;
            }
            self.shared.changed.wait_until(&mut store, deadline);
        }
    }

    /// Live engines, id → uuid; Err once the controller is gone (the list is stale).
    pub fn engines(&self) -> Result<Vec<(i64, String)>> {
        let store = self.shared.store.lock();
        if store.is_lost() {
            return Err(self.lost_error());
        }
        Ok(store
            .engines()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    /// The id of a live or recently dead engine.
    pub fn engine_id(&self, uuid: &str) -> Option<i64> {
        self.shared.store.lock().engine_id(uuid)
    }

    /// Waits at most `slice` for at least `n` live engines; returns how many there are.
    pub fn wait_for_engines(&self, n: usize, slice: Duration) -> Result<usize> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            if store.is_lost() {
                return Err(self.lost_error());
            }
            if store.engines().len() >= n
                || self
                    .shared
                    .changed
                    .wait_until(&mut store, deadline)
                    .timed_out()
            {
                return Ok(store.engines().len());
            }
        }
    }

    /// Those of `msg_ids` that are recorded and not ready yet.
    pub fn outstanding(&self, msg_ids: &[String]) -> Vec<String> {
        self.shared
            .store
            .lock()
            .outstanding(msg_ids, Instant::now())
    }

    /// Forgets finished tasks; returns the msg_ids still outstanding (kept).
    pub fn forget(&self, msg_ids: &[String]) -> Vec<String> {
        self.shared.store.lock().forget(msg_ids, Instant::now())
    }

    /// Forgets every finished task; returns how many are kept (still outstanding).
    pub fn forget_finished(&self) -> usize {
        self.shared.store.lock().forget_finished(Instant::now())
    }

    /// How much the store holds (diagnostics; the soak test checks it returns to baseline).
    pub fn stats(&self) -> StoreStats {
        self.shared.store.lock().stats()
    }

    pub fn is_ready(&self, msg_id: &str) -> bool {
        self.shared.store.lock().is_ready(msg_id, Instant::now())
    }

    /// The reply of a task, once it arrived.
    pub fn reply(&self, msg_id: &str) -> Option<Arc<Reply>> {
        self.shared
            .store
            .lock()
            .task(msg_id)
            .and_then(|t| t.reply.clone())
    }

    pub fn task(&self, msg_id: &str) -> Option<TaskView> {
        self.shared.store.lock().task(msg_id).map(|t| TaskView {
            engine: t.engine.clone(),
            submitted: t.submitted.clone(),
            stdout: t.stdout.clone(),
            stderr: t.stderr.clone(),
            outputs: t.outputs.clone(),
            data_received: t.data_received,
            data_conflated: t.data_conflated,
            started: t.started,
            foreign: t.foreign,
        })
    }

    /// Files the IOPub of tasks this client did not send from now on (another client's,
    /// or ours from before a reconnect), so their output and data update live.
    pub fn follow(&self, msg_ids: &[String]) {
        self.shared.store.lock().follow(msg_ids);
    }

    /// Takes the pending (conflated) data updates of each task, oldest first.
    pub fn take_data(&self, msg_ids: &[String]) -> Vec<Vec<PendingData>> {
        let mut store = self.shared.store.lock();
        msg_ids.iter().map(|m| store.take_data(m)).collect()
    }

    pub fn hub_shut_down(&self) -> bool {
        self.shared.store.lock().hub_shut_down()
    }

    /// How many Hub replies are held or awaited (tests check they stay bounded).
    pub fn hub_pending(&self) -> usize {
        self.shared.store.lock().hub_pending()
    }

    /// Stops the I/O thread and closes every socket. Idempotent.
    pub fn close(&self) {
        if let Some(push) = self.submit.lock().take() {
            if let Err(e) = push.send(STOP, 0) {
                tracing::warn!(error = %e, "could not ask the I/O thread to stop");
            }
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.submit.lock().is_none()
    }
}

impl Drop for ClientCore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Err unless `text` is one well-formed JSON value (checked without building it): a
/// request the controller could not parse would be dropped there, and its task never end.
fn check_json(what: &'static str, text: &str) -> Result<()> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|source| ClientError::BadJson { what, source })
}
