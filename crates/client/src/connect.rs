//! The connection handshake and the client's sockets.
//!
//! Like ipyparallel's client, the query DEALER asks the Hub `connection_request` first and
//! connects the other sockets only once the Hub has answered, so a missing cluster is
//! reported as such instead of as requests that silently never complete.
//!
//! The notification SUB is the exception: it connects BEFORE `connection_request`, so an
//! engine that registers while we connect is in the Hub's engine list, or announced on a
//! subscription that is already (nearly) live. The residual window (a subscription still
//! in flight when the Hub answers) is closed by the I/O thread, which asks the Hub again
//! once the notification socket's handshake is done (see `io_thread`).
//!
//! Two sockets are watched by a socket monitor (an inproc PAIR each): the query socket,
//! for the controller's liveness ([`crate::liveness`]), and the notification socket, whose
//! every (re)connection triggers that engine-list re-sync.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_wire::{ClientConnection, Message, Session};
use serde_json::{json, Value};

use crate::error::{ClientError, Result};
use crate::liveness::{HEARTBEAT_IVL, HEARTBEAT_TIMEOUT, HEARTBEAT_TTL};

/// Every socket a client uses; owned by the I/O thread after [`handshake`].
pub struct Sockets {
    pub query: zmq::Socket,
    pub mux: zmq::Socket,
    pub control: zmq::Socket,
    pub task: zmq::Socket,
    pub broadcast: zmq::Socket,
    pub iopub: zmq::Socket,
    pub notification: zmq::Socket,
    /// Monitor events of `query`: connection lost / handshake done.
    pub query_events: zmq::Socket,
    /// Monitor events of `notification`: handshake done.
    pub notification_events: zmq::Socket,
}

/// The engine list of a `connection_reply` (or of any reply with an `engines` map).
pub fn engines_of(reply: &Message) -> BTreeMap<i64, String> {
    reply
        .content
        .get("engines")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(id, uuid)| Some((id.parse().ok()?, uuid.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Starts monitoring `s` for `events`; returns the PAIR socket the events arrive on.
fn monitored(
    ctx: &zmq::Context,
    s: &zmq::Socket,
    name: &'static str,
    events: &[zmq::SocketEvent],
) -> Result<zmq::Socket> {
    // One client per context, so a fixed inproc name per socket never clashes.
    let endpoint = format!("inproc://corral-client-monitor-{name}");
    let mask = events.iter().fold(0, |m, e| m | i32::from(e.to_raw()));
    s.monitor(&endpoint, mask).map_err(ClientError::zmq(name))?;
    let pair = socket(ctx, zmq::PAIR, name)?;
    pair.connect(&endpoint).map_err(ClientError::zmq(name))?;
    Ok(pair)
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, name: &'static str) -> Result<zmq::Socket> {
    let s = ctx.socket(kind).map_err(ClientError::zmq(name))?;
    // Never block process exit on unsent messages.
    s.set_linger(0).map_err(ClientError::zmq(name))?;
    Ok(s)
}

fn connected(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &'static str,
    url: &str,
) -> Result<zmq::Socket> {
    let s = socket(ctx, kind, name)?;
    if kind == zmq::SUB {
        subscribe_all(&s, name)?;
    }
    s.connect(url).map_err(ClientError::zmq(name))?;
    Ok(s)
}

fn subscribe_all(s: &zmq::Socket, name: &'static str) -> Result<()> {
    s.set_subscribe(b"").map_err(ClientError::zmq(name))?;
    // Absorb bursts of publications; the store conflates them.
    s.set_rcvhwm(100_000).map_err(ClientError::zmq(name))
}

/// Asks the Hub for the engines map, then connects the remaining sockets.
pub fn handshake(
    ctx: &zmq::Context,
    conn: &ClientConnection,
    session: &Session,
    timeout: Duration,
) -> Result<(Sockets, BTreeMap<i64, String>)> {
    let url = conn.url(conn.registration);
    let notification = socket(ctx, zmq::SUB, "notification")?;
    let notification_events = monitored(
        ctx,
        &notification,
        "notification",
        &[zmq::SocketEvent::HANDSHAKE_SUCCEEDED],
    )?;
    subscribe_all(&notification, "notification")?;
    notification
        .connect(&conn.url(conn.notification))
        .map_err(ClientError::zmq("notification"))?;

    let query = socket(ctx, zmq::DEALER, "query")?;
    let ms = |d: Duration| d.as_millis() as i32;
    query
        .set_heartbeat_ivl(ms(HEARTBEAT_IVL))
        .and_then(|()| query.set_heartbeat_timeout(ms(HEARTBEAT_TIMEOUT)))
        .and_then(|()| query.set_heartbeat_ttl(ms(HEARTBEAT_TTL)))
        .map_err(ClientError::zmq("query"))?;
    let query_events = monitored(
        ctx,
        &query,
        "query",
        &[
            zmq::SocketEvent::DISCONNECTED,
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
        ],
    )?;
    query.connect(&url).map_err(ClientError::zmq("query"))?;
    let request = session.msg("connection_request", json!({}));
    query
        .send_multipart(session.encode(&request), 0)
        .map_err(ClientError::zmq("query"))?;
    let deadline = std::time::Instant::now() + timeout;
    let reply = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ready = query
            .poll(zmq::POLLIN, left.as_millis() as i64)
            .map_err(ClientError::zmq("query"))?;
        if ready == 0 {
            return Err(ClientError::NoController {
                url,
                timeout_s: timeout.as_secs_f64(),
            });
        }
        let frames = query.recv_multipart(0).map_err(ClientError::zmq("query"))?;
        match Message::decode(&frames, &session.signer) {
            Ok(m) if m.parent_msg_id() == Some(request.header.msg_id.as_str()) => break m,
            Ok(m) => tracing::debug!(msg_type = m.msg_type(), "unexpected message during connect"),
            Err(e) => tracing::warn!(error = %e, "bad message from the Hub dropped"),
        }
    };
    let status = reply
        .content
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("");
    if status != "ok" {
        return Err(ClientError::ConnectionRefused {
            status: status.to_owned(),
        });
    }
    let engines = engines_of(&reply);
    let sockets = Sockets {
        query,
        mux: connected(ctx, zmq::DEALER, "mux", &conn.url(conn.mux))?,
        control: connected(ctx, zmq::DEALER, "control", &conn.url(conn.control))?,
        task: connected(ctx, zmq::DEALER, "task", &conn.url(conn.task))?,
        broadcast: connected(ctx, zmq::DEALER, "broadcast", &conn.url(conn.broadcast))?,
        iopub: connected(ctx, zmq::SUB, "iopub", &conn.url(conn.iopub))?,
        notification,
        query_events,
        notification_events,
    };
    Ok((sockets, engines))
}
