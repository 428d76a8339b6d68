//! Registration with the Hub (docs/PROTOCOL.md §4.1, §4.3): a DEALER whose identity is the engine
//! uuid sends `registration_request {uuid}` and waits for the unparented reply.

use std::time::{Duration, Instant};

use corral_wire::{
    EngineConnection, Message, RegistrationReply, RegistrationRequest, Session,
    UnregistrationRequest,
};
use serde_json::Value;

use crate::error::{zerr, EngineError, Result};
use corral_curve::CurveClient;

/// How often the wait looks at the monitor while the connection is not up yet.
const POLL: Duration = Duration::from_millis(50);

/// What the Hub told us: our id, how often it pings, and how long to wait for it to come
/// back if its process goes away.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    pub id: u64,
    pub hb_period_ms: u64,
    /// corral's `corral_restart_grace` (seconds): a controller meant to be restarted on
    /// the same ports (`--reuse`, `--restore`) asks its engines to wait this long for it;
    /// zero when it says nothing (a stock controller, or a plain corral one).
    pub restart_grace: Duration,
    /// corral's `corral_data_preview`: the controller shows published data on its
    /// dashboard, so each `data_message` should carry its `corral_preview`; false when it
    /// says nothing (a stock controller, or a corral one without a dashboard).
    pub data_preview: bool,
}

/// The longest restart grace a controller can ask for (a day): a bound against a wild value.
const MAX_RESTART_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How long an engine waits for its registration reply once its connection to the controller
/// is up. A controller that accepted the connection is alive; on a machine busy starting
/// hundreds of engines its answer can take far longer than the `timeout` that bounds
/// "nobody is listening", and an engine that gave up then would be lost to the cluster.
pub const CONNECTED_PATIENCE: Duration = Duration::from_secs(120);

/// Connects the registration DEALER and performs the handshake. `timeout` bounds the wait
/// while no controller accepts the connection; once one has, the engine waits up to
/// `patience` (by default [`CONNECTED_PATIENCE`]; or `timeout`, if longer) for the reply. The socket is returned so
/// that a clean exit can send `unregistration_request` on it. With `curve`, the socket is a
/// CURVE client of the controller. `requested_id` asks the controller for an engine id
/// (an MPI rank, as ipengine's `--mpi` asks), which it grants when that id is free.
// `requested_id` made this an eighth argument; each caller names every one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn register(
    ctx: &zmq::Context,
    conn: &EngineConnection,
    session: &Session,
    file_hint: &str,
    timeout: Duration,
    patience: Duration,
    curve: Option<&CurveClient>,
    requested_id: Option<u64>,
) -> Result<(zmq::Socket, Registered)> {
    let sock = ctx
        .socket(zmq::DEALER)
        .map_err(zerr("registration socket"))?;
    if let Some(curve) = curve {
        curve.apply(&sock).map_err(zerr("registration curve"))?;
    }
    sock.set_identity(session.id.as_bytes())
        .map_err(zerr("registration identity"))?;
    sock.set_linger(1000).map_err(zerr("registration linger"))?;
    // Unregistration at exit must not hang when the controller is already gone.
    sock.set_sndtimeo(1000)
        .map_err(zerr("registration sndtimeo"))?;
    let url = conn.url(conn.registration);
    // Only with CURVE: plain registrations keep no monitor at all (see `listening`).
    let mut watch = match curve {
        Some(_) => Some(HandshakeWatch::start(ctx, &sock, &session.id)?),
        None => None,
    };
    let result = wait_for_reply(
        &sock,
        &url,
        session,
        file_hint,
        timeout,
        patience,
        curve,
        &mut watch,
        requested_id,
    );
    if let Some(watch) = watch {
        watch.stop(&sock);
    }
    result.map(|registered| (sock, registered))
}

/// Connects `sock`, sends `registration_request` and waits for the reply.
// The eighth argument (`patience`) came with making the wait an option; `register` is the
// only caller and names each one.
#[allow(clippy::too_many_arguments)]
fn wait_for_reply(
    sock: &zmq::Socket,
    url: &str,
    session: &Session,
    file_hint: &str,
    timeout: Duration,
    patience: Duration,
    curve: Option<&CurveClient>,
    watch: &mut Option<HandshakeWatch>,
    requested_id: Option<u64>,
) -> Result<Registered> {
    let url = url.to_string();
    sock.connect(&url).map_err(zerr("registration connect"))?;
    let request = session.msg(
        "registration_request",
        RegistrationRequest {
            uuid: Some(session.id.clone()),
            id: requested_id,
            ..Default::default()
        }
        .to_content(),
    );
    sock.send_multipart(session.encode(&request), 0)
        .map_err(zerr("registration send"))?;

    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut connected = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EngineError::NoController {
                url,
                file: file_hint.to_string(),
                timeout_s: deadline.duration_since(started).as_secs_f64(),
            });
        }
        if let Some(watch) = watch.as_mut() {
            if watch.failures() >= REJECTED_HANDSHAKES {
                return Err(EngineError::CurveRejected {
                    url,
                    file: file_hint.to_string(),
                });
            }
        }
        let wait = if connected && watch.is_none() {
            left
        } else {
            left.min(POLL)
        };
        if sock
            .poll(zmq::POLLIN, wait.as_millis() as i64)
            .map_err(zerr("registration poll"))?
            == 0
        {
            if !connected && listening(&url) {
                connected = true;
                // A controller that speaks another security mechanism would never answer:
                // say so now instead of after the long wait below.
                if let Some(theirs) = security_mechanism(&url) {
                    let ours = if curve.is_some() { "CURVE" } else { "NULL" };
                    if theirs != ours {
                        return Err(EngineError::SecurityMismatch {
                            url,
                            file: file_hint.to_string(),
                            theirs,
                            ours: ours.to_string(),
                        });
                    }
                }
                deadline = started + timeout.max(patience);
                tracing::debug!(%url, "registration connection up; waiting for the reply");
            }
            continue;
        }
        let frames = sock.recv_multipart(0).map_err(zerr("registration recv"))?;
        match Message::decode(&frames, &session.signer) {
            Ok(msg) if msg.msg_type() == "registration_reply" => {
                return parse_reply(&msg.content);
            }
            Ok(msg) => tracing::warn!(
                msg_type = msg.msg_type(),
                "unexpected message on registration socket"
            ),
            Err(e) => tracing::warn!(error = %e, "dropped an invalid registration reply"),
        }
    }
}

/// CURVE handshakes the controller closed before they completed, in a row, after which
/// the engine's key is taken to be wrong (libzmq retries every 100 ms, so this is fast).
const REJECTED_HANDSHAKES: u32 = 3;

/// Counts the registration socket's failed handshakes, through a socket monitor read only
/// while registering: a controller holding another key than `curve_serverkey` closes every
/// CURVE handshake without a word, and would otherwise look like a slow controller.
struct HandshakeWatch {
    events: zmq::Socket,
    endpoint: String,
    failures: u32,
}

impl HandshakeWatch {
    fn start(ctx: &zmq::Context, sock: &zmq::Socket, id: &str) -> Result<Self> {
        // Unique per watch: a monitor endpoint is released only when libzmq closes the
        // watched socket, in the background, so a second registration of the same session
        // (a retry) could find the first one's name still bound.
        static WATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = format!("inproc://corral-registration-monitor-{id}-{n}");
        let failed = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw()
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw();
        sock.monitor(&endpoint, i32::from(failed))
            .map_err(zerr("registration monitor"))?;
        let events = ctx
            .socket(zmq::PAIR)
            .map_err(zerr("registration monitor"))?;
        events
            .connect(&endpoint)
            .map_err(zerr("registration monitor"))?;
        Ok(HandshakeWatch {
            events,
            endpoint,
            failures: 0,
        })
    }

    /// Failed handshakes so far.
    fn failures(&mut self) -> u32 {
        while self.events.recv_multipart(zmq::DONTWAIT).is_ok() {
            self.failures += 1;
        }
        self.failures
    }

    /// Replaces the monitor with one that reports nothing, so no event ever waits for a
    /// reader once registration is over (libzmq has no other way to stop a monitor short
    /// of a NULL endpoint, which the `zmq` crate cannot pass).
    fn stop(self, sock: &zmq::Socket) {
        let silent = format!("{}-off", self.endpoint);
        if let Err(e) = sock.monitor(&silent, 0) {
            tracing::debug!(error = %e, "could not silence the registration monitor");
        }
    }
}

/// Whether something accepts TCP connections at `url` (`tcp://host:port`): a plain connect
/// and close, because a socket monitor left without a reader can stall libzmq's I/O thread.
fn listening(url: &str) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Some(addr) = url.strip_prefix("tcp://") else {
        return false;
    };
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, POLL).is_ok())
}

/// The security mechanism the ZMTP 3 peer at `url` announces in its greeting (`NULL`,
/// `CURVE`, ...), read over a plain TCP connection. libzmq sends its mechanism once it has
/// the peer's signature and major version, so the probe sends just those (11 bytes) and
/// hangs up after reading: a full greeting with another mechanism would make libzmq drop
/// the connection before its own greeting is out. `None` when it cannot be read in time,
/// which changes nothing.
fn security_mechanism(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = url.strip_prefix("tcp://")?.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, POLL).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    // ZMTP 3 greeting: signature (0xFF, 8 padding bytes, 0x7F), version (major 3, minor),
    // mechanism (20 bytes, NUL padded), as-server flag, 31 filler bytes.
    let mut signature_and_major = [0u8; 11];
    signature_and_major[0] = 0xFF;
    signature_and_major[9] = 0x7F;
    signature_and_major[10] = 3;
    stream.write_all(&signature_and_major).ok()?;
    let mut theirs = [0u8; 64];
    stream.read_exact(&mut theirs).ok()?;
    if theirs[0] != 0xFF || theirs[9] & 1 != 1 || theirs[10] < 3 {
        return None;
    }
    let mechanism = &theirs[12..32];
    let end = mechanism.iter().position(|&b| b == 0).unwrap_or(20);
    std::str::from_utf8(&mechanism[..end])
        .ok()
        .map(str::to_owned)
}

/// Reads `{"status", "id", "hb_period"}`; an error reply becomes [`EngineError::Refused`].
pub fn parse_reply(content: &Value) -> Result<Registered> {
    let reply = RegistrationReply::read(content);
    if !reply.is_ok() {
        return Err(EngineError::Refused {
            reason: format!(
                "{}: {}",
                reply.ename.unwrap_or_default(),
                reply.evalue.unwrap_or_default()
            ),
        });
    }
    let id = reply.id.ok_or_else(|| EngineError::BadReply {
        reason: "no integer `id`".into(),
    })?;
    let hb_period_ms = reply.hb_period.unwrap_or(3000);
    let restart_grace = content
        .get("corral_restart_grace")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::ZERO, |s| {
            Duration::from_secs_f64(s.min(MAX_RESTART_GRACE.as_secs_f64()))
        });
    let data_preview = content
        .get("corral_data_preview")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Registered {
        id,
        hb_period_ms,
        restart_grace,
        data_preview,
    })
}

/// Tells the Hub we are leaving (no reply comes).
pub fn unregister(sock: &zmq::Socket, session: &Session, id: u64) -> Result<()> {
    let msg = session.msg(
        "unregistration_request",
        UnregistrationRequest {
            id: Some(id),
            ..Default::default()
        }
        .to_content(),
    );
    sock.send_multipart(session.encode(&msg), 0)
        .map_err(zerr("unregistration send"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_ok_and_error() {
        let ok = parse_reply(&json!({"status": "ok", "id": 3, "hb_period": 1500})).unwrap();
        assert_eq!(
            ok,
            Registered {
                id: 3,
                hb_period_ms: 1500,
                restart_grace: Duration::ZERO,
                data_preview: false,
            }
        );
        let reply = json!({"status": "ok", "id": 3, "corral_data_preview": true});
        assert!(parse_reply(&reply).unwrap().data_preview);
        let reply = json!({"status": "ok", "id": 3, "corral_restart_grace": 60.5});
        assert_eq!(
            parse_reply(&reply).unwrap().restart_grace,
            Duration::from_millis(60_500)
        );
        for wild in [json!(-1), json!("60"), json!(1e300)] {
            let reply = json!({"status": "ok", "id": 3, "corral_restart_grace": wild});
            assert!(parse_reply(&reply).unwrap().restart_grace <= MAX_RESTART_GRACE);
        }
        let err =
            parse_reply(&json!({"status": "error", "ename": "KeyError", "evalue": "uuid in use"}))
                .unwrap_err();
        assert!(err.to_string().contains("uuid in use"), "{err}");
        assert!(parse_reply(&json!({"status": "ok"})).is_err());
    }

    fn connection(port: u16) -> EngineConnection {
        EngineConnection {
            ssh: String::new(),
            interface: "tcp://127.0.0.1".into(),
            registration: port,
            control: 0,
            mux: 0,
            task: 0,
            iopub: 0,
            hb_ping: 0,
            hb_pong: 0,
            broadcast: vec![],
            key: "k".into(),
            curve_serverkey: None,
            location: String::new(),
            pack: "json".into(),
            unpack: "json".into(),
            signature_scheme: "hmac-sha256".into(),
        }
    }

    #[test]
    fn a_requested_id_goes_into_the_registration_request() {
        let ctx = zmq::Context::new();
        let hub = ctx.socket(zmq::ROUTER).unwrap();
        hub.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = hub.get_last_endpoint().unwrap().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let session = Session::new(b"k");
        let hub_session = Session::new(b"k");
        let answer = std::thread::spawn(move || {
            let mut frames = hub.recv_multipart(0).unwrap();
            let content = frames
                .iter()
                .filter_map(|f| serde_json::from_slice::<Value>(f).ok())
                .find(|v| v.get("uuid").is_some())
                .expect("a content frame with the uuid");
            let mut reply = hub_session.msg(
                "registration_reply",
                json!({"status": "ok", "id": content["id"], "hb_period": 3000}),
            );
            reply.idents = vec![frames.remove(0)];
            hub.send_multipart(hub_session.encode(&reply), 0).unwrap();
            content
        });
        let (_sock, reg) = register(
            &ctx,
            &connection(port),
            &session,
            "test",
            Duration::from_secs(5),
            CONNECTED_PATIENCE,
            None,
            Some(3),
        )
        .unwrap();
        assert_eq!(answer.join().unwrap()["id"], 3);
        assert_eq!(reg.id, 3);
    }

    #[test]
    fn a_slow_reply_from_a_listening_controller_is_waited_for() {
        let ctx = zmq::Context::new();
        let hub = ctx.socket(zmq::ROUTER).unwrap();
        hub.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = hub.get_last_endpoint().unwrap().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let session = Session::new(b"k");
        let hub_session = Session::new(b"k");
        let answer = std::thread::spawn(move || {
            let mut frames = hub.recv_multipart(0).unwrap();
            // Answer well after the engine's `timeout`, as a controller crushed by hundreds
            // of starting engines might.
            std::thread::sleep(Duration::from_millis(800));
            let mut reply = hub_session.msg(
                "registration_reply",
                json!({"status": "ok", "id": 7, "hb_period": 3000}),
            );
            reply.idents = vec![frames.remove(0)];
            hub.send_multipart(hub_session.encode(&reply), 0).unwrap();
        });
        let (_sock, reg) = register(
            &ctx,
            &connection(port),
            &session,
            "test",
            Duration::from_millis(200),
            CONNECTED_PATIENCE,
            None,
            None,
        )
        .unwrap();
        assert_eq!(reg.id, 7);
        answer.join().unwrap();
    }

    #[test]
    fn a_controller_with_another_security_mechanism_is_named_at_once() {
        let ctx = zmq::Context::new();
        let hub = ctx.socket(zmq::ROUTER).unwrap();
        let keys = zmq::CurveKeyPair::new().unwrap();
        hub.set_curve_server(true).unwrap();
        hub.set_curve_secretkey(&keys.secret_key).unwrap();
        hub.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = hub.get_last_endpoint().unwrap().unwrap();
        assert_eq!(security_mechanism(&endpoint).as_deref(), Some("CURVE"));
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let started = Instant::now();
        let Err(err) = register(
            &ctx,
            &connection(port),
            &Session::new(b"k"),
            "test",
            Duration::from_secs(30),
            CONNECTED_PATIENCE,
            None,
            None,
        ) else {
            panic!("registered with a CURVE controller without CURVE");
        };
        assert!(matches!(err, EngineError::SecurityMismatch { .. }), "{err}");
        assert!(err.to_string().contains("CurveZMQ"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let plain = ctx.socket(zmq::ROUTER).unwrap();
        plain.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = plain.get_last_endpoint().unwrap().unwrap();
        assert_eq!(security_mechanism(&endpoint).as_deref(), Some("NULL"));
    }

    #[test]
    fn a_wrong_curve_server_key_is_named_at_once_and_the_right_one_registers() {
        let ctx = zmq::Context::new();
        let hub = ctx.socket(zmq::ROUTER).unwrap();
        let keys = zmq::CurveKeyPair::new().unwrap();
        hub.set_curve_server(true).unwrap();
        hub.set_curve_secretkey(&keys.secret_key).unwrap();
        hub.bind("tcp://127.0.0.1:0").unwrap();
        let endpoint = hub.get_last_endpoint().unwrap().unwrap();
        let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let z85 = |k: &[u8]| zmq::z85_encode(k).unwrap();
        let other = zmq::CurveKeyPair::new().unwrap();
        let wrong = CurveClient::new(&z85(&other.public_key), |_| None).unwrap();
        let session = Session::new(b"k");
        let started = Instant::now();
        let Err(err) = register(
            &ctx,
            &connection(port),
            &session,
            "test",
            Duration::from_secs(30),
            CONNECTED_PATIENCE,
            Some(&wrong),
            None,
        ) else {
            panic!("registered with a wrong server key");
        };
        assert!(matches!(err, EngineError::CurveRejected { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let hub_session = Session::new(b"k");
        let answer = std::thread::spawn(move || {
            let mut frames = hub.recv_multipart(0).unwrap();
            let mut reply = hub_session.msg(
                "registration_reply",
                json!({"status": "ok", "id": 1, "hb_period": 3000}),
            );
            reply.idents = vec![frames.remove(0)];
            hub.send_multipart(hub_session.encode(&reply), 0).unwrap();
        });
        let right = CurveClient::new(&z85(&keys.public_key), |_| None).unwrap();
        let (_sock, reg) = register(
            &ctx,
            &connection(port),
            &session,
            "test",
            Duration::from_secs(5),
            CONNECTED_PATIENCE,
            Some(&right),
            None,
        )
        .unwrap();
        assert_eq!(reg.id, 1);
        answer.join().unwrap();
    }

    #[test]
    fn nobody_listening_fails_after_the_timeout() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let ctx = zmq::Context::new();
        let started = Instant::now();
        let Err(err) = register(
            &ctx,
            &connection(port),
            &Session::new(b"k"),
            "test",
            Duration::from_millis(300),
            CONNECTED_PATIENCE,
            None,
            None,
        ) else {
            panic!("registered with nobody listening");
        };
        assert!(matches!(err, EngineError::NoController { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
