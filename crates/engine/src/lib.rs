//! The engine runtime: every socket of a corral engine, driven by Rust threads, so the
//! Python main thread only executes user code.
//!
//! - `curve`: CurveZMQ client settings for every socket to the controller, when its
//!   connection file carries `curve_serverkey`.
//! - `registration`: the `registration_request`/`reply` handshake and unregistration.
//! - `heart`: the heartbeat echo thread (no GIL, so a busy task never looks dead), which
//!   also watches the connection to the controller's heart (see `liveness`).
//! - `liveness`: when the controller counts as gone, and why.
//! - `request`: the intake (signature, replay, decoding) and the abort bookkeeping.
//! - `control`: control requests answered without waiting for the running task.
//! - `signal`: `signal_request`/`interrupt_request`: signal this process (Ctrl-C a task).
//! - `outgoing`: what the executor asks to send, and how it becomes signed frames.
//! - `io`: the I/O thread that owns shell, control and IOPub, in one ordered loop.
//! - `zerocopy`: large IOPub frames handed to ZeroMQ without a copy, counted until sent.
//! - `runtime`: [`EngineRuntime`], the handle the executor (Python) holds.
//!
//! IOPub and replies leave through ONE queue processed by ONE thread, which is what
//! makes the ordering promise (busy → outputs → reply → idle) hold.

mod control;
mod error;
mod heart;
mod io;
mod liveness;
mod outgoing;
mod registration;
mod request;
mod runtime;
mod signal;
mod sockopt;
mod zerocopy;

#[cfg(test)]
mod proptests;

pub use error::{EngineError, Result};
pub use outgoing::Outgoing;
pub use request::{Channel, Request};
pub use runtime::{EngineOptions, EngineRuntime, Next, DEFAULT_DATA_BYTES_LIMIT};
pub use signal::{before_kill, task_ended, task_started};
