//! The corral client core: everything a client does on the wire, without Python.
//!
//! - [`store`]: per-task records (reply, IOPub output, pending published data) and the
//!   rules that decide when a result may be released; pure state, tested without sockets.
//! - [`connect`]: the `connection_request` handshake and the client's sockets.
//! - `curve`: CurveZMQ client settings for those sockets, when the connection file carries
//!   `curve_serverkey`.
//! - [`io_thread`]: the one thread that owns every socket after connect; it verifies,
//!   decodes and files incoming messages into the store, and sends what callers submit.
//! - [`outbox`]: non-blocking sends with a bounded backlog per socket.
//! - [`liveness`]: when the controller counts as lost (socket monitor + ZMTP heartbeats).
//! - [`core`]: [`ClientCore`], the handle callers use: submit, wait, read results.
//! - [`mod@error`]: [`ClientError`], one variant per thing a user can act on.

pub mod connect;
pub mod core;
pub mod error;
pub mod io_thread;
pub mod liveness;
pub mod outbox;
pub mod store;

pub use crate::core::{Channel, ClientCore, ConnectOptions, TaskView};
pub use error::{ClientError, Result};
pub use store::{PendingData, Reply, Store, StoreStats, TaskRecord};
