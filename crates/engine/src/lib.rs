//! The engine runtime: every socket of a corral engine, driven by Rust threads, so the
//! Python main thread only executes user code.
//!
//! - [`registration`]: the `registration_request`/`reply` handshake and unregistration.
//! - [`heart`]: the heartbeat echo thread (no GIL, so a busy task never looks dead).
//! - [`request`]: requests as handed to the executor, and the abort bookkeeping.
//! - [`outgoing`]: what the executor asks to send, and how it becomes signed frames.
//! - [`io`]: the I/O thread that owns shell, control and IOPub, in one ordered loop.
//! - [`runtime`]: [`EngineRuntime`], the handle the executor (Python) holds.
//!
//! IOPub and replies leave through ONE queue processed by ONE thread, which is what
//! makes the ordering promise (busy → outputs → reply → idle) hold.

pub mod error;
pub mod heart;
pub mod io;
pub mod outgoing;
pub mod registration;
pub mod request;
pub mod runtime;
mod sockopt;

pub use error::{EngineError, Result};
pub use outgoing::Outgoing;
pub use request::{Channel, Request};
pub use runtime::{EngineOptions, EngineRuntime, Next};
