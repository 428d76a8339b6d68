//! What the relay, scheduler and heartbeat threads tell the hub, and what the hub tells
//! them. Unbounded channels: a sender never blocks the forwarding path.

/// Into the hub thread.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HubEvent {
    /// First pong from an identity (ipyparallel's `new_heart`).
    NewHeart(String),
    /// An identity stopped answering pings (`stopped_heart`).
    StoppedHeart(String),
    /// An engine announced `shutdown_reply` on IOPub: it is going away.
    EngineShutdown(String),
    /// A direct (MUX) request went to an engine.
    MuxRequest { engine: String, msg_id: String },
    /// A direct reply came back for `msg_id`.
    MuxReply { engine: String, msg_id: String },
    /// A load-balanced task arrived at the scheduler.
    TaskSubmitted { msg_id: String },
    /// The scheduler placed a task on an engine (`task_destination`).
    TaskAssigned { engine: String, msg_id: String },
    /// The task's reply came back from its engine.
    TaskDone { engine: String, msg_id: String },
    /// The scheduler failed the task itself (engine died, impossible targets).
    TaskFailed {
        engine: Option<String>,
        msg_id: String,
    },
    /// A copy of a relayed message for the task record store (parsed on the hub thread).
    Record(RecordEvent),
}

/// Copies of relayed messages: `parts` are the frames after the signature, i.e.
/// `[header, parent_header, metadata, content, buffers..]`, already verified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordEvent {
    /// A request from a client; `queue` is `mux` or `task`.
    Request {
        queue: &'static str,
        client: Vec<u8>,
        engine: Option<String>,
        parts: Vec<Vec<u8>>,
    },
    /// A reply to a request (its parent names the request).
    Reply {
        engine: Option<String>,
        parts: Vec<Vec<u8>>,
    },
    /// An IOPub message parented to a request (stream, error, execute_input/result).
    Iopub { parts: Vec<Vec<u8>> },
}

/// Into the task and broadcast schedulers: the live engine set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EngineEvent {
    Up { id: u32, uuid: String },
    Down { uuid: String },
}

/// Into the heartbeat thread.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HeartCommand {
    /// Stop tracking an identity (the hub unregistered it), so that a later pong from it
    /// is reported as a new heart again.
    Forget(String),
}
