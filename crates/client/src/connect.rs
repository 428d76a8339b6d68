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
//! every (re)connection triggers that engine-list re-sync. While connecting, the query
//! socket's monitor also tells a security mismatch (CurveZMQ on one side only) from a
//! controller that is not there, so the user learns which it is.
//!
//! When the controller uses CurveZMQ, every socket here is a CURVE client of it.
//!
//! IOPub: a corral controller's file names `corral_iopub`, an endpoint with a queue per
//! client that conflates published data and never drops other output silently
//! (docs/PROTOCOL.md §11). There the client connects a DEALER, subscribes, and waits for
//! the answer, so no task output can precede its subscription; the I/O thread then
//! acknowledges what it receives. Without that key (a stock controller) it subscribes to
//! the PUB as ipyparallel does.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_wire::{ClientConnection, ConnectionReply, Message, Session};
use serde_json::json;

use crate::error::{ClientError, Result};
use crate::liveness::{HEARTBEAT_IVL, HEARTBEAT_TIMEOUT, HEARTBEAT_TTL};
use corral_curve::CurveClient;

/// Every socket a client uses; owned by the I/O thread after [`handshake`].
pub struct Sockets {
    pub query: zmq::Socket,
    pub mux: zmq::Socket,
    pub control: zmq::Socket,
    pub task: zmq::Socket,
    pub broadcast: zmq::Socket,
    pub iopub: zmq::Socket,
    /// `iopub` is a DEALER on the controller's `corral_iopub` endpoint (not a SUB on its
    /// PUB): the I/O thread acknowledges every message it receives there.
    pub corral_iopub: bool,
    /// Monitor events (connection lost / handshake done) of `iopub` on `corral_iopub`: a
    /// reconnected DEALER is a new peer to the controller and must subscribe again.
    pub iopub_events: Option<zmq::Socket>,
    pub notification: zmq::Socket,
    /// Monitor events of `query`: connection lost / handshake done.
    pub query_events: zmq::Socket,
    /// Monitor events of `notification`: handshake done.
    pub notification_events: zmq::Socket,
}

/// The engine list of a `connection_reply` (or of any reply with an `engines` map).
pub fn engines_of(reply: &Message) -> BTreeMap<i64, String> {
    ConnectionReply::read(&reply.content).engines()
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

/// A socket to the controller: a CURVE client of it when `curve` is given.
fn peer(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &'static str,
    curve: Option<&CurveClient>,
) -> Result<zmq::Socket> {
    let s = socket(ctx, kind, name)?;
    if let Some(curve) = curve {
        curve.apply(&s).map_err(ClientError::zmq(name))?;
    }
    Ok(s)
}

fn connected(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &'static str,
    url: &str,
    curve: Option<&CurveClient>,
) -> Result<zmq::Socket> {
    let s = peer(ctx, kind, name, curve)?;
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

/// What the query socket's monitor says about a failed security handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandshakeFailure {
    /// The two sides speak different security mechanisms (CURVE on one side only).
    Mechanism,
    /// The connection closed during the handshake (e.g. a CURVE server that could not
    /// decrypt us: a wrong `curve_serverkey`).
    Closed,
}

fn handshake_failure(frame: &[u8]) -> Option<HandshakeFailure> {
    let raw = u16::from_le_bytes(frame.get(..2)?.try_into().ok()?);
    if raw == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw() {
        Some(HandshakeFailure::Mechanism)
    } else if raw == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw() {
        Some(HandshakeFailure::Closed)
    } else {
        None
    }
}

/// The error for a security handshake that failed, in words that say which side is which.
fn mismatch(url: &str, failure: HandshakeFailure, curve: bool) -> ClientError {
    let hint = match (failure, curve) {
        (HandshakeFailure::Mechanism, false) => {
            "it uses CurveZMQ encryption, and this client's connection file has no \
             curve_serverkey"
        }
        (HandshakeFailure::Mechanism, true) => {
            "this client's connection file has a curve_serverkey (CurveZMQ), and the \
             controller does not use CurveZMQ"
        }
        (HandshakeFailure::Closed, _) => {
            "it closed every connection during the CurveZMQ handshake, so the curve_serverkey \
             in this client's connection file is probably not that controller's key"
        }
    };
    ClientError::SecurityMismatch {
        url: url.to_owned(),
        hint,
    }
}

/// Asks the Hub for the engines map, then connects the remaining sockets; all of them
/// are CURVE clients of the controller when `curve` is given.
pub(crate) fn handshake(
    ctx: &zmq::Context,
    conn: &ClientConnection,
    session: &Session,
    timeout: Duration,
    curve: Option<&CurveClient>,
) -> Result<(Sockets, BTreeMap<i64, String>)> {
    let url = conn.url(conn.registration);
    let notification = peer(ctx, zmq::SUB, "notification", curve)?;
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

    let query = peer(ctx, zmq::DEALER, "query", curve)?;
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
            zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL,
            zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL,
        ],
    )?;
    query.connect(&url).map_err(ClientError::zmq("query"))?;
    let request = session.msg("connection_request", json!({}));
    query
        .send_multipart(session.encode(&request), 0)
        .map_err(ClientError::zmq("query"))?;
    let deadline = std::time::Instant::now() + timeout;
    let mut closed_in_handshake = false;
    let reply = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            if closed_in_handshake && curve.is_some() {
                return Err(mismatch(&url, HandshakeFailure::Closed, true));
            }
            return Err(ClientError::NoController {
                url,
                timeout_s: timeout.as_secs_f64(),
            });
        }
        let mut items = [
            query.as_poll_item(zmq::POLLIN),
            query_events.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, left.as_millis().max(1) as i64).map_err(ClientError::zmq("query"))?;
        let (reply_ready, event_ready) = (items[0].is_readable(), items[1].is_readable());
        if event_ready {
            // Other events here (the first HANDSHAKE_SUCCEEDED) mean "up", which is where
            // the I/O thread's liveness starts anyway.
            while let Ok(frames) = query_events.recv_multipart(zmq::DONTWAIT) {
                match frames.first().and_then(|f| handshake_failure(f)) {
                    Some(HandshakeFailure::Mechanism) => {
                        return Err(mismatch(&url, HandshakeFailure::Mechanism, curve.is_some()))
                    }
                    Some(HandshakeFailure::Closed) => closed_in_handshake = true,
                    None => {}
                }
            }
        }
        if !reply_ready {
            continue;
        }
        let frames = query.recv_multipart(0).map_err(ClientError::zmq("query"))?;
        match Message::decode(&frames, &session.signer) {
            Ok(m) if m.parent_msg_id() == Some(request.header.msg_id.as_str()) => break m,
            Ok(m) => tracing::debug!(msg_type = m.msg_type(), "unexpected message during connect"),
            Err(e) => tracing::warn!(error = %e, "bad message from the Hub dropped"),
        }
    };
    let connection = ConnectionReply::read(&reply.content);
    if connection.status() != "ok" {
        return Err(ClientError::ConnectionRefused {
            status: connection.status().to_owned(),
        });
    }
    let engines = connection.engines();
    let (iopub, iopub_events) = match conn.corral_iopub {
        Some(port) => {
            let (s, events) =
                subscribe_corral_iopub(ctx, &conn.url(port), session, timeout, curve)?;
            (s, Some(events))
        }
        None => (
            connected(ctx, zmq::SUB, "iopub", &conn.url(conn.iopub), curve)?,
            None,
        ),
    };
    let corral_iopub = iopub_events.is_some();
    let sockets = Sockets {
        query,
        mux: connected(ctx, zmq::DEALER, "mux", &conn.url(conn.mux), curve)?,
        control: connected(ctx, zmq::DEALER, "control", &conn.url(conn.control), curve)?,
        task: connected(ctx, zmq::DEALER, "task", &conn.url(conn.task), curve)?,
        broadcast: connected(
            ctx,
            zmq::DEALER,
            "broadcast",
            &conn.url(conn.broadcast),
            curve,
        )?,
        iopub,
        corral_iopub,
        iopub_events,
        notification,
        query_events,
        notification_events,
    };
    Ok((sockets, engines))
}

/// Connects a DEALER to the controller's `corral_iopub` endpoint and subscribes; returns
/// once the controller has answered (so every later task's output is queued for us).
/// Its answer is the first message on the socket, and is acknowledged right here.
/// Also returns the socket's monitor (see [`Sockets::iopub_events`]).
fn subscribe_corral_iopub(
    ctx: &zmq::Context,
    url: &str,
    session: &Session,
    timeout: Duration,
    curve: Option<&CurveClient>,
) -> Result<(zmq::Socket, zmq::Socket)> {
    let s = peer(ctx, zmq::DEALER, "iopub", curve)?;
    let events = monitored(
        ctx,
        &s,
        "iopub",
        &[
            zmq::SocketEvent::DISCONNECTED,
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED,
        ],
    )?;
    // The controller's credits bound what is in flight; this only must not be smaller.
    s.set_rcvhwm(100_000).map_err(ClientError::zmq("iopub"))?;
    s.connect(url).map_err(ClientError::zmq("iopub"))?;
    let request = session.msg("iopub_subscribe_request", json!({}));
    s.send_multipart(session.encode(&request), 0)
        .map_err(ClientError::zmq("iopub"))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ClientError::NoController {
                url: url.to_owned(),
                timeout_s: timeout.as_secs_f64(),
            });
        }
        let mut items = [s.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, left.as_millis().max(1) as i64).map_err(ClientError::zmq("iopub"))?;
        if !items[0].is_readable() {
            continue;
        }
        let frames = s.recv_multipart(0).map_err(ClientError::zmq("iopub"))?;
        let ack = session.msg("iopub_ack", json!({"messages": 1}));
        s.send_multipart(session.encode(&ack), zmq::DONTWAIT)
            .map_err(ClientError::zmq("iopub"))?;
        match Message::decode(&frames, &session.signer) {
            Ok(m) if m.parent_msg_id() == Some(request.header.msg_id.as_str()) => {
                tracing::debug!(reply = %m.content, "subscribed to the controller's corral_iopub");
                return Ok((s, events));
            }
            Ok(m) => tracing::debug!(
                msg_type = m.msg_type(),
                "unexpected IOPub message while subscribing"
            ),
            Err(e) => tracing::warn!(error = %e, "bad message on corral_iopub dropped"),
        }
    }
}
