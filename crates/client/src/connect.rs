//! The connection handshake and the client's sockets.
//!
//! Like ipyparallel's client, the query DEALER asks the Hub `connection_request` first and
//! connects the other sockets only once the Hub has answered, so a missing cluster is
//! reported as such instead of as requests that silently never complete.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_wire::{ClientConnection, Message, Session};
use serde_json::{json, Value};

use crate::error::{ClientError, Result};

/// Every socket a client uses; owned by the I/O thread after [`handshake`].
pub struct Sockets {
    pub query: zmq::Socket,
    pub mux: zmq::Socket,
    pub control: zmq::Socket,
    pub task: zmq::Socket,
    pub broadcast: zmq::Socket,
    pub iopub: zmq::Socket,
    pub notification: zmq::Socket,
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
        s.set_subscribe(b"").map_err(ClientError::zmq(name))?;
        // Absorb bursts of publications; the store conflates them.
        s.set_rcvhwm(100_000).map_err(ClientError::zmq(name))?;
    }
    s.connect(url).map_err(ClientError::zmq(name))?;
    Ok(s)
}

/// Asks the Hub for the engines map, then connects the remaining sockets.
pub fn handshake(
    ctx: &zmq::Context,
    conn: &ClientConnection,
    session: &Session,
    timeout: Duration,
) -> Result<(Sockets, BTreeMap<i64, String>)> {
    let url = conn.url(conn.registration);
    let query = connected(ctx, zmq::DEALER, "query", &url)?;
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
    let engines = reply
        .content
        .get("engines")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(id, uuid)| Some((id.parse().ok()?, uuid.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let sockets = Sockets {
        query,
        mux: connected(ctx, zmq::DEALER, "mux", &conn.url(conn.mux))?,
        control: connected(ctx, zmq::DEALER, "control", &conn.url(conn.control))?,
        task: connected(ctx, zmq::DEALER, "task", &conn.url(conn.task))?,
        broadcast: connected(ctx, zmq::DEALER, "broadcast", &conn.url(conn.broadcast))?,
        iopub: connected(ctx, zmq::SUB, "iopub", &conn.url(conn.iopub))?,
        notification: connected(ctx, zmq::SUB, "notification", &conn.url(conn.notification))?,
    };
    Ok((sockets, engines))
}
