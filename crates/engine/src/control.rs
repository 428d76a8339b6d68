//! Control requests that must not wait behind a running task (abort, shutdown,
//! kernel_info), answered by the I/O thread itself. A pure function of the request, so a
//! property test can feed it content of every JSON type.

use corral_wire::{AbortRequest, ErrorContent, ShutdownRequest};
use serde_json::{json, Value};

use crate::request::{AbortState, Request};

/// What the I/O thread does with a control request.
#[derive(Debug, PartialEq)]
pub(crate) enum ControlAnswer {
    /// Reply now with `msg_type` and `content`; `shutdown` also stops the engine.
    Reply {
        msg_type: &'static str,
        content: Value,
        shutdown: bool,
    },
    /// Not ours: the executor handles it (clear_request, unknown types).
    Forward,
}

/// Answers `req`. An `abort_request` without ids aborts every shell request that arrived
/// before it (ipyparallel aborts its whole queue); arrival numbers are shared by both
/// sockets, so that is every request numbered below this one.
pub(crate) fn answer(req: &Request, aborts: &mut AbortState) -> ControlAnswer {
    let content = req.content();
    match req.header.msg_type.as_str() {
        "abort_request" => {
            let reply = match AbortRequest::read(&content).msg_ids.kernel_ids() {
                Some(ids) if ids.is_empty() => {
                    aborts.abort_upto(req.seq.saturating_sub(1));
                    json!({"status": "ok"})
                }
                Some(ids) => {
                    aborts.abort_ids(ids);
                    json!({"status": "ok"})
                }
                None => ErrorContent::new("TypeError", BAD_MSG_IDS)
                    .engine_info(json!({"method": "abort_request"}))
                    .into_value(),
            };
            ControlAnswer::Reply {
                msg_type: "abort_reply",
                content: reply,
                shutdown: false,
            }
        }
        "shutdown_request" => {
            let restart = ShutdownRequest::read(&content).restart();
            ControlAnswer::Reply {
                msg_type: "shutdown_reply",
                content: json!({"status": "ok", "restart": restart}),
                shutdown: true,
            }
        }
        "signal_request" | "interrupt_request" => {
            crate::signal::answer(&req.header.msg_type, &content)
        }
        "kernel_info_request" => ControlAnswer::Reply {
            msg_type: "kernel_info_reply",
            content: kernel_info(),
            shutdown: false,
        },
        _ => ControlAnswer::Forward,
    }
}

/// What the kernel answers to `msg_ids` that are neither ids nor "the whole queue".
const BAD_MSG_IDS: &str = "abort_request: msg_ids must be a list of msg_ids";

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": corral_wire::PROTOCOL_VERSION,
        "implementation": "corral",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {"name": "python", "mimetype": "text/x-python", "file_extension": ".py"},
        "banner": "corral engine",
        "help_links": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Channel;
    use corral_wire::Session;

    fn request(s: &Session, msg_type: &str, content: Value, seq: u64) -> Request {
        Request::decode(
            s.encode(&s.msg(msg_type, content)),
            &s.signer,
            Channel::Control,
            seq,
        )
        .unwrap()
    }

    #[test]
    fn an_abort_without_ids_aborts_what_came_before_it_only() {
        let s = Session::new(b"k");
        let mut aborts = AbortState::default();
        let abort = request(&s, "abort_request", json!({"msg_ids": []}), 5);
        assert!(matches!(
            answer(&abort, &mut aborts),
            ControlAnswer::Reply {
                msg_type: "abort_reply",
                ..
            }
        ));
        assert!(aborts.take(&request(&s, "apply_request", json!({}), 4)));
        assert!(!aborts.take(&request(&s, "apply_request", json!({}), 6)));
    }

    #[test]
    fn msg_ids_read_as_ipyparallel_reads_them() {
        let s = Session::new(b"k");
        let mut aborts = AbortState::default();
        // "a" and 5 (read as "5") are ids; the request itself is not aborted.
        let named = request(&s, "abort_request", json!({"msg_ids": ["a", 5]}), 3);
        answer(&named, &mut aborts);
        let with_id = |id: &str, seq| {
            let mut r = request(&s, "apply_request", json!({}), seq);
            r.header.msg_id = id.to_string();
            r
        };
        assert!(aborts.take(&with_id("5", 9)) && aborts.take(&with_id("a", 9)));
        assert!(!aborts.take(&with_id("b", 1)));
        let one = request(&s, "abort_request", json!({"msg_ids": "c"}), 4);
        answer(&one, &mut aborts);
        assert!(aborts.take(&with_id("c", 9)));
        let bad = request(&s, "abort_request", json!({"msg_ids": 5}), 1);
        let ControlAnswer::Reply { content, .. } = answer(&bad, &mut AbortState::default()) else {
            panic!("an abort is answered");
        };
        assert_eq!(content["status"], "error");
        assert_eq!(content["ename"], "TypeError");
    }
}
