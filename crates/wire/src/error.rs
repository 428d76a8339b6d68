//! One error type for everything that can be wrong with bytes off the wire.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter in a message of {frames} frames")]
    NoDelimiter { frames: usize },
    #[error("truncated message: {frames} frames after the delimiter, at least 5 needed")]
    Truncated { frames: usize },
    #[error("message has no signature but the session has a key")]
    Unsigned,
    #[error("invalid signature")]
    BadSignature,
    #[error("replayed message: its signature was seen before")]
    Replayed,
    #[error("the cluster key is empty, so messages would not be signed; pass an explicit \"allow insecure\" option to run without authentication")]
    EmptyKey,
    #[error("frame {frame} is not valid JSON: {source}")]
    BadJson {
        frame: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("connection file {path}: {reason}")]
    ConnectionFile { path: String, reason: String },
}

pub type Result<T, E = WireError> = std::result::Result<T, E>;
