//! Client errors, each with the context a user needs to act on it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The Hub did not answer `connection_request`: usually no cluster is running.
    #[error("no controller answered at {url} within {timeout_s:.1} s; is the cluster running?")]
    NoController { url: String, timeout_s: f64 },
    #[error("the Hub answered connection_request with status {status:?}")]
    ConnectionRefused { status: String },
    #[error("zmq error on {socket}: {source}")]
    Zmq {
        socket: &'static str,
        #[source]
        source: zmq::Error,
    },
    #[error(transparent)]
    Wire(#[from] corral_wire::WireError),
    /// The Hub connection closed and did not come back within the grace period.
    #[error(
        "the controller at {url} stopped answering: its connection closed and did not come \
         back within {grace_s:.1} s, so results not received by then are lost. Check that the \
         controller is running (its log is in the profile's log folder); restart the cluster \
         if needed, then create a new Client"
    )]
    ControllerLost { url: String, grace_s: f64 },
    /// The connection file has no key: nothing would be signed.
    #[error(
        "the connection file for {url} has an empty key, so messages would be neither signed \
         nor checked and anyone who can reach its ports could run code on the engines; \
         refusing. To connect anyway, pass insecure=True to Client or set CORRAL_INSECURE=1"
    )]
    EmptyKey { url: String },
    /// The controller uses CurveZMQ and this client cannot (no CURVE in this build, a bad
    /// key).
    #[error("cannot connect to the controller at {url} with CurveZMQ: {reason}")]
    Curve { url: String, reason: String },
    /// The controller refused the connection's security handshake: one side uses CurveZMQ
    /// and the other does not.
    #[error(
        "the controller at {url} refused the connection's security handshake: {hint}. Use          the client connection file that controller wrote (it carries `curve_serverkey` when          the controller runs with CurveZMQ encryption)"
    )]
    SecurityMismatch { url: String, hint: &'static str },
    #[error("the client is closed")]
    Closed,
    #[error("no reply to {msg_type} from the Hub within {timeout_s:.1} s")]
    HubTimeout { msg_type: String, timeout_s: f64 },
    #[error("unknown channel {0:?} (expected mux, control, task or broadcast)")]
    UnknownChannel(String),
    #[error("invalid JSON for {what}: {source}")]
    BadJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    pub(crate) fn zmq(socket: &'static str) -> impl FnOnce(zmq::Error) -> Self {
        move |source| ClientError::Zmq { socket, source }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;
