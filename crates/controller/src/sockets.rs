//! Binding, receiving and checking multipart messages. Frames stay `zmq::Message`s so a
//! relay moves them from one socket to the other without copying.

use corral_wire::{verify_frames, Signer};
use serde::Deserialize;
use tracing::warn;

use crate::curve::CurveKeys;
use crate::error::{ControllerError, Result};

/// How the controller listens: the address every socket binds to and, with CurveZMQ on,
/// the keys that make each bound socket a CURVE server.
pub(crate) struct Listen<'a> {
    pub ip: &'a str,
    pub curve: Option<&'a CurveKeys>,
    /// Fixed ports (`--ports`, `--engine-ports`, `--client-ports`, `--reuse`), taken as
    /// each socket is bound; once none is left for it, a socket binds to a random port.
    pub ports: std::cell::RefCell<crate::port_pools::PortPools>,
}

/// Linger on close: long enough to flush a last reply, short enough for a prompt stop.
const LINGER_MS: i32 = 200;
/// Pending TCP connections a bound socket queues (libzmq's default is 100). Hundreds of
/// engines started at once connect to the same ports; past the backlog the kernel drops
/// their SYNs, the retries back off for seconds, and an engine's 5 s wait for the
/// controller ran out (41 of 256 engines here). The kernel caps it at `somaxconn`.
const BACKLOG: i32 = 4096;

/// Creates a socket of `kind` with a short linger. Options that matter for peers
/// (identity, HWMs, ROUTER_MANDATORY) must be set before [`bind_port`].
pub(crate) fn socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &'static str,
) -> Result<zmq::Socket> {
    let sock = ctx.socket(kind).map_err(|source| ControllerError::Socket {
        socket: name,
        action: "create",
        source,
    })?;
    opt(name, sock.set_linger(LINGER_MS))?;
    opt(name, sock.set_backlog(BACKLOG))?;
    Ok(sock)
}

/// Binds to the next fixed port, else a random port, of `at.ip` (a CURVE server first, when CURVE is on) and
/// returns the port. Every socket that clients and engines reach is bound here.
pub(crate) fn bind_port(sock: &zmq::Socket, at: &Listen, name: &'static str) -> Result<u16> {
    let err = |action| {
        move |source| ControllerError::Socket {
            socket: name,
            action,
            source,
        }
    };
    if let Some(curve) = at.curve {
        curve.serve(sock).map_err(err("enable CURVE on"))?;
    }
    let ip = at.ip;
    let port = match at.ports.borrow_mut().next(name) {
        Some(port) => port.to_string(),
        None => "*".to_string(),
    };
    sock.bind(&format!("tcp://{ip}:{port}"))
        .map_err(err("bind"))?;
    let endpoint = sock
        .get_last_endpoint()
        .map_err(err("get endpoint"))?
        .unwrap_or_default();
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or(ControllerError::Socket {
            socket: name,
            action: "parse bound port",
            source: zmq::Error::EINVAL,
        })
}

/// A plain socket bound on a random port.
pub(crate) fn bind_random(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    at: &Listen,
    name: &'static str,
) -> Result<(zmq::Socket, u16)> {
    let sock = socket(ctx, kind, name)?;
    let port = bind_port(&sock, at, name)?;
    Ok((sock, port))
}

/// A PAIR socket receiving `sock`'s monitor events of lost connections (`DISCONNECTED`),
/// over a private inproc endpoint.
pub(crate) fn monitor(
    ctx: &zmq::Context,
    sock: &zmq::Socket,
    name: &'static str,
) -> Result<zmq::Socket> {
    let err = |action| {
        move |source| ControllerError::Socket {
            socket: name,
            action,
            source,
        }
    };
    let endpoint = format!("inproc://corral-monitor-{name}-{}", corral_wire::new_id());
    sock.monitor(&endpoint, zmq::SocketEvent::DISCONNECTED as i32)
        .map_err(err("monitor"))?;
    let pair = socket(ctx, zmq::SocketType::PAIR, name)?;
    pair.connect(&endpoint).map_err(err("connect monitor"))?;
    Ok(pair)
}

/// Applies an option and names the socket in the error.
pub(crate) fn opt(name: &'static str, r: zmq::Result<()>) -> Result<()> {
    r.map_err(|source| ControllerError::Socket {
        socket: name,
        action: "set option",
        source,
    })
}

/// Receives one whole multipart message without blocking; `None` when nothing is queued.
pub(crate) fn recv_frames(sock: &zmq::Socket) -> Option<Vec<zmq::Message>> {
    let first = match sock.recv_msg(zmq::DONTWAIT) {
        Ok(m) => m,
        Err(zmq::Error::EAGAIN) => return None,
        Err(e) => {
            warn!(error = %e, "recv failed");
            return None;
        }
    };
    let mut frames = vec![first];
    while sock.get_rcvmore().unwrap_or(false) {
        match sock.recv_msg(0) {
            Ok(m) => frames.push(m),
            Err(e) => {
                warn!(error = %e, "recv of a later frame failed");
                break;
            }
        }
    }
    Some(frames)
}

/// True when the socket has a message waiting, waiting at most `timeout_ms`.
pub(crate) fn readable(items: &mut [zmq::PollItem], timeout_ms: i64) -> bool {
    matches!(zmq::poll(items, timeout_ms), Ok(n) if n > 0)
}

/// Borrowed byte views of frames, for the wire crate's generic checks.
pub(crate) fn views(frames: &[zmq::Message]) -> Vec<&[u8]> {
    frames.iter().map(|f| &f[..]).collect()
}

/// Verifies delimiter, frame count and signature; logs and returns `None` on failure.
/// Returns the index of the delimiter.
pub(crate) fn checked(
    frames: &[zmq::Message],
    signer: &Signer,
    socket: &'static str,
) -> Option<usize> {
    match verify_frames(&views(frames), signer) {
        Ok(d) => Some(d),
        Err(error) => {
            warn!(socket, %error, frames = frames.len(), "dropped invalid message");
            None
        }
    }
}

/// The few header fields routing decisions need; the rest stays unparsed.
#[derive(Debug, Deserialize)]
pub(crate) struct HeaderIds {
    pub msg_id: String,
    #[serde(default)]
    pub msg_type: String,
    #[serde(default)]
    pub session: String,
}

/// The parent's `msg_id` (absent on unparented messages).
#[derive(Debug, Deserialize)]
pub(crate) struct ParentIds {
    #[serde(default)]
    pub msg_id: Option<String>,
}

/// Parses a JSON frame, logging and returning `None` when it is not what we expect.
pub(crate) fn parse<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    socket: &'static str,
    frame: &'static str,
) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(error) => {
            warn!(socket, frame, %error, "dropped message with a malformed JSON frame");
            None
        }
    }
}

// The send policy, for every socket the controller sends on: never wait for a peer.
// Every send is non-blocking (DONTWAIT). A ROUTER_MANDATORY socket then fails the first
// frame with EHOSTUNREACH (peer unknown or gone) or EAGAIN (peer at its high-water mark,
// i.e. not reading): nothing was sent and the caller decides — answer the requester with
// an error where there is one (the relays, for requests), else drop and log. Later frames
// of an accepted message cannot fail for HWM (zmq admits whole messages). So one peer that
// stops reading never stalls a relay, scheduler or the hub.

/// True when a send failed because the peer is not reading (at its high-water mark).
pub(crate) fn is_full(error: &zmq::Error) -> bool {
    *error == zmq::Error::EAGAIN
}

/// Sends frames as one multipart message without blocking; on failure of the FIRST frame
/// nothing was sent and the frames are handed back (EHOSTUNREACH: unknown peer; EAGAIN:
/// the peer is not reading).
pub(crate) fn send_routed(
    sock: &zmq::Socket,
    frames: Vec<zmq::Message>,
) -> std::result::Result<(), (zmq::Error, Vec<zmq::Message>)> {
    let mut iter = frames.into_iter();
    let Some(first) = iter.next() else {
        return Ok(());
    };
    let rest: Vec<zmq::Message> = iter.collect();
    let more = if rest.is_empty() { 0 } else { zmq::SNDMORE };
    if let Err(e) = sock.send(&first[..], more | zmq::DONTWAIT) {
        let mut back = vec![first];
        back.extend(rest);
        return Err((e, back));
    }
    let n = rest.len();
    for (i, frame) in rest.into_iter().enumerate() {
        let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
        if let Err(e) = sock.send(frame, more | zmq::DONTWAIT) {
            warn!(error = %e, "send failed mid-message");
            return Ok(());
        }
    }
    Ok(())
}

/// Sends owned byte frames (messages the controller built itself) without blocking;
/// a peer that is gone or not reading loses the message, which is logged.
pub(crate) fn send_bytes(sock: &zmq::Socket, frames: Vec<Vec<u8>>, socket: &'static str) {
    match sock.send_multipart(frames, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(error) if is_full(&error) => {
            warn!(
                socket,
                "peer not reading (at its high-water mark); message dropped"
            )
        }
        Err(error) => warn!(socket, %error, "send failed; message dropped"),
    }
}
