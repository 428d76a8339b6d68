//! Registration with the Hub (docs/PROTOCOL.md §4.1, §4.3): a DEALER whose identity is the engine
//! uuid sends `registration_request {uuid}` and waits for the unparented reply.

use std::time::{Duration, Instant};

use corral_wire::{EngineConnection, Message, Session};
use serde_json::{json, Value};

use crate::error::{zerr, EngineError, Result};

/// What the Hub told us: our id and how often it pings.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub id: u64,
    pub hb_period_ms: u64,
}

/// Connects the registration DEALER and performs the handshake. The socket is returned
/// so that a clean exit can send `unregistration_request` on it.
pub fn register(
    ctx: &zmq::Context,
    conn: &EngineConnection,
    session: &Session,
    file_hint: &str,
    timeout: Duration,
) -> Result<(zmq::Socket, Registered)> {
    let sock = ctx
        .socket(zmq::DEALER)
        .map_err(zerr("registration socket"))?;
    sock.set_identity(session.id.as_bytes())
        .map_err(zerr("registration identity"))?;
    sock.set_linger(1000).map_err(zerr("registration linger"))?;
    // Unregistration at exit must not hang when the controller is already gone.
    sock.set_sndtimeo(1000)
        .map_err(zerr("registration sndtimeo"))?;
    let url = conn.url(conn.registration);
    sock.connect(&url).map_err(zerr("registration connect"))?;
    let request = session.msg("registration_request", json!({"uuid": session.id}));
    sock.send_multipart(session.encode(&request), 0)
        .map_err(zerr("registration send"))?;

    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || sock
                .poll(zmq::POLLIN, left.as_millis() as i64)
                .map_err(zerr("registration poll"))?
                == 0
        {
            return Err(EngineError::NoController {
                url,
                file: file_hint.to_string(),
                timeout_s: timeout.as_secs_f64(),
            });
        }
        let frames = sock.recv_multipart(0).map_err(zerr("registration recv"))?;
        match Message::decode(&frames, &session.signer) {
            Ok(msg) if msg.msg_type() == "registration_reply" => {
                return parse_reply(&msg.content).map(|r| (sock, r));
            }
            Ok(msg) => tracing::warn!(
                msg_type = msg.msg_type(),
                "unexpected message on registration socket"
            ),
            Err(e) => tracing::warn!(error = %e, "dropped an invalid registration reply"),
        }
    }
}

/// Reads `{"status", "id", "hb_period"}`; an error reply becomes [`EngineError::Refused`].
pub fn parse_reply(content: &Value) -> Result<Registered> {
    if content.get("status").and_then(Value::as_str) != Some("ok") {
        let text = |k: &str| {
            content
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(EngineError::Refused {
            reason: format!("{}: {}", text("ename"), text("evalue")),
        });
    }
    let id = content
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| EngineError::BadReply {
            reason: "no integer `id`".into(),
        })?;
    let hb_period_ms = content
        .get("hb_period")
        .and_then(Value::as_u64)
        .unwrap_or(3000);
    Ok(Registered { id, hb_period_ms })
}

/// Tells the Hub we are leaving (no reply comes).
pub fn unregister(sock: &zmq::Socket, session: &Session, id: u64) -> Result<()> {
    let msg = session.msg("unregistration_request", json!({"id": id}));
    sock.send_multipart(session.encode(&msg), 0)
        .map_err(zerr("unregistration send"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_ok_and_error() {
        let ok = parse_reply(&json!({"status": "ok", "id": 3, "hb_period": 1500})).unwrap();
        assert_eq!(
            ok,
            Registered {
                id: 3,
                hb_period_ms: 1500
            }
        );
        let err =
            parse_reply(&json!({"status": "error", "ename": "KeyError", "evalue": "uuid in use"}))
                .unwrap_err();
        assert!(err.to_string().contains("uuid in use"), "{err}");
        assert!(parse_reply(&json!({"status": "ok"})).is_err());
    }
}
