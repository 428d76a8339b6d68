//! The one thread that owns every socket after connect.
//!
//! Callers never touch a client socket: they push `[channel, frames..]` into an inproc
//! PUSH socket whose PULL end is polled here, next to the Hub and engine sockets. Incoming
//! messages are verified (bad signatures are dropped and logged), decoded outside the
//! lock, then filed into the [`Store`] in batches. Waiters for results are woken only by
//! batches that can change readiness (replies, `status`, notifications, Hub replies), and
//! data watchers only by batches that carry publications, so a flood of `data_message`s
//! does not spin a thread blocked in `get()`.
//! Nothing here needs the GIL, so a Python loop reading `.data` never slows the intake.

use std::sync::Arc;
use std::time::Instant;

use corral_wire::{Message, Signer};
use parking_lot::{Condvar, Mutex};

use crate::connect::Sockets;
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

#[derive(Clone, Copy)]
enum Source {
    Reply,
    Iopub,
    Notification,
    Hub,
}

pub(crate) fn run(sockets: Sockets, submit: zmq::Socket, shared: Arc<Shared>, signer: Signer) {
    let Sockets {
        query,
        mux,
        control,
        task,
        broadcast,
        iopub,
        notification,
    } = sockets;
    let inputs: [(&zmq::Socket, Source); 7] = [
        (&mux, Source::Reply),
        (&task, Source::Reply),
        (&broadcast, Source::Reply),
        (&control, Source::Reply),
        (&notification, Source::Notification),
        (&query, Source::Hub),
        (&iopub, Source::Iopub),
    ];
    let mut decoded: Vec<(Source, Message)> = Vec::with_capacity(BATCH);
    loop {
        let mut items: Vec<zmq::PollItem> = Vec::with_capacity(8);
        items.push(submit.as_poll_item(zmq::POLLIN));
        items.extend(inputs.iter().map(|(s, _)| s.as_poll_item(zmq::POLLIN)));
        if let Err(e) = zmq::poll(&mut items, 100) {
            tracing::error!(error = %e, "poll failed; client I/O thread stops");
            return;
        }
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);

        if readable[0] {
            while let Ok(frames) = submit.recv_multipart(zmq::DONTWAIT) {
                let Some((channel, msg)) = frames.split_first() else {
                    continue;
                };
                let target = match channel.as_slice() {
                    STOP => {
                        tracing::debug!("client I/O thread stopping");
                        return;
                    }
                    b"mux" => &mux,
                    b"task" => &task,
                    b"control" => &control,
                    b"broadcast" => &broadcast,
                    b"query" => &query,
                    other => {
                        tracing::error!(channel = ?String::from_utf8_lossy(other), "unknown channel");
                        continue;
                    }
                };
                if let Err(e) = target.send_multipart(msg, 0) {
                    tracing::error!(error = %e, "send failed");
                }
            }
        }

        for (k, (socket, source)) in inputs.iter().enumerate() {
            if !readable[k + 1] {
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
                match Message::decode(&frames, &signer) {
                    Ok(m) => decoded.push((*source, m)),
                    // ipykernel's iopub_welcome and similar arrive signed; anything that
                    // fails here is malformed or forged.
                    Err(e) => tracing::warn!(error = %e, "invalid message dropped"),
                }
            }
        }
        if decoded.is_empty() {
            // A timeout round still wakes waiters, so the lost-idle rule can fire.
            shared.changed.notify_all();
            continue;
        }
        let now = Instant::now();
        let (mut readiness, mut output) = (false, false);
        {
            let mut store = shared.store.lock();
            for (source, m) in decoded.drain(..) {
                match source {
                    Source::Iopub if m.msg_type() == "status" => readiness = true,
                    Source::Iopub => output = true,
                    _ => readiness = true,
                }
                match source {
                    Source::Reply => store.on_reply(m, now),
                    Source::Iopub => store.on_iopub(m, now),
                    Source::Notification => {
                        store.on_notification(&m, now);
                    }
                    Source::Hub => {
                        if let Some(id) = m.parent_msg_id().map(str::to_owned) {
                            store.hub_replies.insert(id, m);
                        }
                    }
                }
            }
        }
        if readiness {
            shared.changed.notify_all();
        }
        if output || readiness {
            shared.published.notify_all();
        }
    }
}
