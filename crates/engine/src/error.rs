//! One error type for the engine runtime.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Wire(#[from] corral_wire::WireError),
    #[error("zmq error during {during}: {source}")]
    Zmq {
        during: &'static str,
        #[source]
        source: zmq::Error,
    },
    /// Nobody answered the registration request: the controller is down or the file is stale.
    #[error("no controller answered at {url} within {timeout_s:.1} s (connection file: {file})")]
    NoController {
        url: String,
        file: String,
        timeout_s: f64,
    },
    #[error("registration refused by the controller: {reason}")]
    Refused { reason: String },
    #[error("malformed registration reply: {reason}")]
    BadReply { reason: String },
    /// The connection file has an empty key and nobody opted in to running unsigned.
    #[error(
        "the cluster key in {file} is empty, so messages would be neither signed nor checked \
         and anyone reaching the controller's ports could run code on this engine; refusing \
         to start. To run without authentication anyway, pass --insecure or set \
         CORRAL_INSECURE=1"
    )]
    EmptyKey { file: String },
    /// The controller uses CurveZMQ and this engine cannot (no CURVE in this build, or a
    /// bad key).
    #[error("cannot connect to the controller with CurveZMQ (connection file: {file}): {reason}")]
    Curve { file: String, reason: String },
    /// The controller speaks another security mechanism (CurveZMQ on one side only).
    #[error(
        "the controller at {url} and this engine disagree on security: the controller speaks \
         {theirs}, the engine {ours} ({}), so the controller would never answer. Use the \
         engine connection file that controller wrote (connection file: {file})",
        if theirs == "CURVE" { "the controller uses CurveZMQ encryption; the file has no curve_serverkey" }
        else { "the file has a curve_serverkey, but the controller does not use CurveZMQ" }
    )]
    SecurityMismatch {
        url: String,
        file: String,
        theirs: String,
        ours: String,
    },
    /// The controller closed every CURVE handshake: the engine holds another server key.
    #[error(
        "the controller at {url} closed every CurveZMQ handshake, so the curve_serverkey in \
         {file} is probably not that controller's key (a connection file from another \
         controller?). Use the engine connection file the running controller wrote"
    )]
    CurveRejected { url: String, file: String },
    /// The outgoing queue is gone: the I/O thread has stopped.
    #[error("the engine runtime is closed")]
    Closed,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Tags a zmq error with what we were doing.
pub(crate) fn zerr(during: &'static str) -> impl FnOnce(zmq::Error) -> EngineError {
    move |source| EngineError::Zmq { during, source }
}
