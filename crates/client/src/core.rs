//! [`ClientCore`]: the handle a caller (the Python layer) drives.
//!
//! Submitting records the task in the store before the request leaves, then hands the
//! signed frames to the I/O thread. Waiting blocks on the store's condition variable for
//! at most the given slice, so a caller can interleave signal checks (Ctrl-C).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use corral_wire::{ClientConnection, Message, Session};
use parking_lot::Mutex;
use serde_json::Value;

use crate::connect::handshake;
use crate::error::{ClientError, Result};
use crate::io_thread::{self, Shared, STOP, SUBMIT_URL};
use crate::store::Store;

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

pub struct ClientCore {
    shared: Arc<Shared>,
    session: Session,
    /// PUSH end of the submission pipe; a Mutex because zmq sockets are not Sync.
    submit: Mutex<Option<zmq::Socket>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Registration URL, for messages.
    pub url: String,
    _ctx: zmq::Context,
}

impl ClientCore {
    /// Handshakes with the Hub and starts the I/O thread.
    pub fn connect(conn: &ClientConnection, timeout: Duration) -> Result<Self> {
        let ctx = zmq::Context::new();
        let session = Session::new(conn.key.as_bytes());
        let (sockets, engines) = handshake(&ctx, conn, &session, timeout)?;
        let mut store = Store::new(session.id.clone());
        for (id, uuid) in engines {
            store.add_engine(id, uuid);
        }
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
        let signer = session.signer.clone();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("corral-client-io".into())
            .spawn(move || io_thread::run(sockets, pull, thread_shared, signer))
            .expect("spawning a thread");
        Ok(ClientCore {
            shared,
            session,
            submit: Mutex::new(Some(push)),
            thread: Mutex::new(Some(thread)),
            url: conn.url(conn.registration),
            _ctx: ctx,
        })
    }

    pub fn session_id(&self) -> &str {
        &self.session.id
    }

    fn send(&self, channel: &[u8], msg: &Message) -> Result<()> {
        let mut frames = vec![channel.to_vec()];
        frames.extend(self.session.encode(msg));
        let guard = self.submit.lock();
        let push = guard.as_ref().ok_or(ClientError::Closed)?;
        push.send_multipart(frames, 0)
            .map_err(ClientError::zmq("submit"))
    }

    /// Sends a request and records it as a task; returns its msg_id. `target` is the
    /// engine uuid, required for mux and control.
    pub fn submit(
        &self,
        channel: Channel,
        target: Option<&str>,
        msg_type: &str,
        content: Value,
        metadata: Value,
        buffers: Vec<Vec<u8>>,
    ) -> Result<String> {
        let mut msg = self.session.msg(msg_type, content);
        msg.metadata = metadata;
        msg.buffers = buffers;
        if matches!(channel, Channel::Mux | Channel::Control) {
            if let Some(t) = target {
                msg.idents = vec![t.as_bytes().to_vec()];
            }
        }
        let msg_id = msg.header.msg_id.clone();
        self.shared.store.lock().add_task(
            msg_id.clone(),
            target.map(str::to_owned),
            msg.header.date.clone(),
        );
        self.send(channel.name(), &msg)?;
        Ok(msg_id)
    }

    /// Sends one request through the broadcast scheduler to `targets` (`(uuid, id)`
    /// pairs) and records one task per engine, under the msg_id the scheduler gives that
    /// engine's copy (`<msg_id>_<uuid>`); returns those msg_ids in the order of `targets`.
    /// `metadata` gains the scheduler's fields (`targets`, `is_broadcast`,
    /// `is_coalescing: false`): each engine's reply comes back on its own.
    pub fn submit_broadcast(
        &self,
        targets: &[(String, i64)],
        msg_type: &str,
        content: Value,
        mut metadata: Value,
        buffers: Vec<Vec<u8>>,
    ) -> Result<Vec<String>> {
        if let Value::Object(md) = &mut metadata {
            md.insert("targets".into(), serde_json::json!(targets));
            md.insert("is_broadcast".into(), Value::Bool(true));
            md.insert("is_coalescing".into(), Value::Bool(false));
        }
        let mut msg = self.session.msg(msg_type, content);
        msg.metadata = metadata;
        msg.buffers = buffers;
        let msg_ids: Vec<String> = targets
            .iter()
            .map(|(uuid, _)| format!("{}_{uuid}", msg.header.msg_id))
            .collect();
        {
            let mut store = self.shared.store.lock();
            for (msg_id, (uuid, _)) in msg_ids.iter().zip(targets) {
                store.add_task(msg_id.clone(), Some(uuid.clone()), msg.header.date.clone());
            }
        }
        self.send(Channel::Broadcast.name(), &msg)?;
        Ok(msg_ids)
    }

    /// Sends a query to the Hub; the reply is collected with [`ClientCore::take_hub_reply`].
    pub fn hub_send(&self, msg_type: &str, content: Value) -> Result<String> {
        let msg = self.session.msg(msg_type, content);
        self.send(b"query", &msg)?;
        Ok(msg.header.msg_id)
    }

    /// Waits at most `slice` for the Hub's reply to `msg_id`.
    pub fn take_hub_reply(&self, msg_id: &str, slice: Duration) -> Option<Message> {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            if let Some(m) = store.hub_replies.remove(msg_id) {
                return Some(m);
            }
            if self
                .shared
                .changed
                .wait_until(&mut store, deadline)
                .timed_out()
            {
                return store.hub_replies.remove(msg_id);
            }
        }
    }

    /// Waits at most `slice` for every msg_id to be ready; true when they all are.
    pub fn wait(&self, msg_ids: &[String], slice: Duration) -> bool {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            let now = Instant::now();
            if msg_ids.iter().all(|m| store.is_ready(m, now)) {
                return true;
            }
            if now >= deadline {
                return false;
            }
            self.shared.changed.wait_until(&mut store, deadline);
        }
    }

    /// Waits at most `slice` until the tasks have received more than `seen` publications
    /// in total, or are all ready. Returns `(publications received, all ready)`, so a
    /// watcher reacts to each batch of updates as it arrives instead of polling.
    pub fn wait_data(&self, msg_ids: &[String], seen: u64, slice: Duration) -> (u64, bool) {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        loop {
            let now = Instant::now();
            let received: u64 = msg_ids
                .iter()
                .filter_map(|m| store.tasks.get(m))
                .map(|t| t.data_received)
                .sum();
            let ready = msg_ids.iter().all(|m| store.is_ready(m, now));
            if received > seen || ready || now >= deadline {
                return (received, ready);
            }
            self.shared.published.wait_until(&mut store, deadline);
        }
    }

    /// Waits at most `slice` for at least `n` live engines; returns how many there are.
    pub fn wait_for_engines(&self, n: usize, slice: Duration) -> usize {
        let deadline = Instant::now() + slice;
        let mut store = self.shared.store.lock();
        while store.engines.len() < n {
            if self
                .shared
                .changed
                .wait_until(&mut store, deadline)
                .timed_out()
            {
                break;
            }
        }
        store.engines.len()
    }

    /// Runs `f` with the store locked (short reads and takes only).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.shared.store.lock())
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
