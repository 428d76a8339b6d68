//! ipyparallel's wire protocol, without sockets.
//!
//! - [`sign`]: HMAC-SHA256 signatures over the four JSON frames (constant-time verify).
//! - [`envelope`]: the raw multipart layer (`idents, <IDS|MSG>, sig, header, parent,
//!   metadata, content, buffers`) and the parsed [`Message`] on top of it.
//! - [`header`]: message headers, ids and dates as ipyparallel writes them.
//! - [`session`]: a signing identity that stamps headers and encodes messages.
//! - [`replay`]: the bounded signature history that rejects a replayed message.
//! - [`trace`]: per-hop latency trace points, off unless `CORRAL_TRACE` is set.
//! - [`vocab`]: shared words: `reply_type`, the error-reply content builder, typed
//!   request contents and the task metadata the scheduler reads.
//! - [`connection`]: the `ipcontroller-*.json` connection files and where they live.
//!
//! Only [`envelope`] and [`session`] touch the signature, so handlers never see HMAC.

pub mod connection;
pub mod envelope;
pub mod error;
pub mod header;
pub mod replay;
pub mod session;
pub mod sign;
pub mod trace;
pub mod vocab;

pub use connection::{curve_serverkey, ClientConnection, EngineConnection, ProfileLocation};
pub use envelope::{encode_raw, locate_delimiter, verify_frames, Message, DELIMITER};
pub use error::{Result, WireError};
pub use header::{iso_now, new_id, Header, PROTOCOL_VERSION};
pub use replay::DigestHistory;
pub use session::Session;
pub use sign::Signer;
pub use vocab::{
    error_content, reply_type, AbortRequest, BroadcastMetadata, BroadcastTarget, ConnectionReply,
    Content, DataMessageContent, DbRequest, DependencySpec, EchoedMetadata, EmptyRequest,
    EngineNotification, ErrorContent, ExecuteInputContent, HeaderFields, IdList, InvalidDependency,
    LoadRequest, PurgeRequest, QueueRequest, RegistrationReply, RegistrationRequest, ReplyMetadata,
    ReplyOutcome, ResubmitRequest, ResultRequest, SenderMetadata, ShutdownRequest, StatusContent,
    StreamContent, TaskMetadata, UnregistrationRequest,
};
