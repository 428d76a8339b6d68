//! One error type for what can stop the controller from starting. Once running, bad
//! network input is never an error of this kind: it is logged and dropped.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("zmq {action} failed for the {socket} socket: {source}")]
    Socket {
        socket: &'static str,
        action: &'static str,
        #[source]
        source: zmq::Error,
    },
    #[error("cannot spawn the {thread} thread: {source}")]
    Spawn {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the cluster key is empty (IPP_SESSION_KEY=\"\" or a connection file without a key), \
         so messages would not be signed and anyone who can reach the ports could run code; \
         refusing to start. Pass --insecure (or set CORRAL_INSECURE=1) to run without \
         authentication anyway"
    )]
    EmptyKey,
    #[error("cannot enable CurveZMQ encryption: {reason}")]
    Curve { reason: String },
    #[error("cannot open the task database {path}: {source} (use --db memory to run without one)")]
    Database {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot serve the dashboard on {addr}: {reason} (choose another --dashboard-port, or 0 for a free one)")]
    Dashboard { addr: String, reason: String },
    #[error(transparent)]
    Wire(#[from] corral_wire::WireError),
}

pub type Result<T, E = ControllerError> = std::result::Result<T, E>;
