//! `signal_request` and `interrupt_request` on the control channel: signal this engine
//! process, as ipyparallel's kernel nanny (`signal_request`, `{"sig": number or name}`)
//! and ipykernel (`interrupt_request`, SIGINT) do. A SIGINT raises `KeyboardInterrupt` in
//! the running task (the executor turns it into an error reply and serves on).
//!
//! The I/O thread answers without waiting for the running task. The signal itself is
//! delivered [`DELIVERY_DELAY`] after the answer, from a short-lived thread, so the reply
//! has left before a signal that ends the process (SIGKILL, SIGTERM) takes effect: a
//! stock client waits for that reply (`send_signal(block=True)`). Before a SIGKILL, the
//! hook set with [`before_kill`] runs (the Python binding closes the runtime there:
//! unregistration sent, IOPub flushed), so the controller learns at once that the engine
//! is gone, as ipyparallel's nanny tells it once the engine has died.
//!
//! A SIGINT is different: it is for the running task only. It is sent at once, and only
//! while the executor is inside a request ([`task_started`] .. [`task_ended`]), under the
//! lock those take, so an interrupt that arrives between tasks is dropped and can never
//! land on the next one (a delayed SIGINT used to interrupt whatever task came next).

use std::sync::Mutex;
use std::time::Duration;

use corral_wire::ErrorContent;
use serde_json::{json, Value};

use crate::control::ControlAnswer;

/// How long the [`before_kill`] hook may take.
#[cfg_attr(test, allow(dead_code))]
const KILL_HOOK_LIMIT: Duration = Duration::from_secs(2);

/// Time for the I/O thread to hand the reply to ZeroMQ before the signal lands.
#[cfg_attr(test, allow(dead_code))]
const DELIVERY_DELAY: Duration = Duration::from_millis(100);

/// What to do just before this process sends itself SIGKILL (see [`before_kill`]).
type KillHook = Box<dyn Fn() + Send + Sync>;
static BEFORE_KILL: Mutex<Option<KillHook>> = Mutex::new(None);

/// Sets what runs just before a requested SIGKILL lands (the last one set wins): the
/// last chance to tell the controller the engine is leaving.
pub fn before_kill(hook: impl Fn() + Send + Sync + 'static) {
    *BEFORE_KILL.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(hook));
}

/// Whether the executor is inside a request; see the module doc.
static TASK_RUNNING: Mutex<bool> = Mutex::new(false);

/// The executor starts a request: from now an interrupt is sent to it.
pub fn task_started() {
    *TASK_RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = true;
}

/// The executor is done with a request: interrupts are dropped until the next one.
pub fn task_ended() {
    *TASK_RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = false;
}

/// Sends SIGINT now if a task runs, holding the lock so the task cannot end (and the
/// next begin) before the signal is pending on this process.
fn interrupt(target: Target) {
    let running = TASK_RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if !*running {
        tracing::info!("interrupt with no task running: dropped");
        return;
    }
    deliver_now(libc::SIGINT, target);
}

/// Signal names as Python's `signal` module spells them, for `{"sig": "SIGINT"}`.
const NAMES: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGABRT", libc::SIGABRT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
    ("SIGURG", libc::SIGURG),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGIO", libc::SIGIO),
    ("SIGSYS", libc::SIGSYS),
];

/// Highest signal number Linux accepts (`SIGRTMAX`); 0 only checks the process exists.
const MAX_SIGNAL: i64 = 64;

/// Who receives the signal.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// This process (ipyparallel's nanny signals the engine's pid).
    Process,
    /// The process group when this process leads it, so `!command` children stop too
    /// (ipykernel's interrupt); otherwise this process.
    GroupIfLeader,
}

/// Answers `signal_request` / `interrupt_request` and schedules the signal.
pub(crate) fn answer(msg_type: &str, content: &Value) -> ControlAnswer {
    let (reply_type, parsed) = match msg_type {
        "interrupt_request" => ("interrupt_reply", Ok((libc::SIGINT, Target::GroupIfLeader))),
        _ => (
            "signal_reply",
            parse_sig(content.get("sig")).map(|s| (s, Target::Process)),
        ),
    };
    let content = match parsed {
        Ok((sig, target)) => {
            tracing::info!(sig, ?target, "signal requested");
            if sig == libc::SIGINT {
                interrupt(target);
            } else if sig != 0 {
                deliver_later(sig, target);
            }
            json!({"status": "ok"})
        }
        Err(why) => ErrorContent::new("ValueError", &why)
            .engine_info(json!({"method": msg_type}))
            .into_value(),
    };
    ControlAnswer::Reply {
        msg_type: reply_type,
        content,
        shutdown: false,
    }
}

/// `sig` as ipyparallel reads it: a number, or a name from Python's `signal` module
/// (`"SIGINT"`); a number written as text (`"2"`) is accepted too.
fn parse_sig(sig: Option<&Value>) -> Result<i32, String> {
    let number = match sig {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => NAMES
            .iter()
            .find(|(name, _)| *name == s.as_str())
            .map(|(_, n)| i64::from(*n))
            .or_else(|| s.trim().parse::<i64>().ok()),
        _ => {
            return Err(format!(
                "signal_request needs \"sig\": a signal number or name, got {}",
                describe(sig)
            ))
        }
    };
    match number {
        Some(n) if (0..=MAX_SIGNAL).contains(&n) => Ok(n as i32),
        Some(n) => Err(format!("invalid signal number {n}")),
        None => Err(format!("unknown signal {}", describe(sig))),
    }
}

fn describe(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing".to_string(), Value::to_string)
}

/// Unit tests (and the property tests that feed this every control request) record what
/// would be sent instead of signalling the test process.
#[cfg(test)]
fn deliver_later(sig: i32, target: Target) {
    tests::DELIVERED.with(|d| d.borrow_mut().push((sig, target)));
}

#[cfg(test)]
fn deliver_now(sig: i32, target: Target) {
    deliver_later(sig, target);
}

#[cfg(not(test))]
fn deliver_now(sig: i32, target: Target) {
    if let Err(e) = send(sig, target) {
        tracing::warn!(sig, error = %e, "could not deliver the signal");
    }
}

#[cfg(not(test))]
fn deliver_later(sig: i32, target: Target) {
    let spawned = std::thread::Builder::new()
        .name("corral-engine-signal".into())
        .spawn(move || {
            std::thread::sleep(DELIVERY_DELAY);
            if sig == libc::SIGKILL {
                run_kill_hook();
            }
            if let Err(e) = send(sig, target) {
                tracing::warn!(sig, error = %e, "could not deliver the signal");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(sig, error = %e, "could not start the signal thread");
    }
}

/// Runs the [`before_kill`] hook, for at most [`KILL_HOOK_LIMIT`]: a task that keeps the
/// runtime busy must not keep the engine from dying.
#[cfg_attr(test, allow(dead_code))]
fn run_kill_hook() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("corral-engine-before-kill".into())
        .spawn(move || {
            if let Some(hook) = BEFORE_KILL
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            {
                hook();
            }
            let _ = done_tx.send(());
        });
    if spawned.is_ok() && done_rx.recv_timeout(KILL_HOOK_LIMIT).is_err() {
        tracing::warn!("the engine did not close in time; killing it anyway");
    }
}

#[allow(unsafe_code)]
#[cfg_attr(test, allow(dead_code))]
fn send(sig: i32, target: Target) -> std::io::Result<()> {
    // SAFETY: getpid/getpgrp/kill/killpg take and return plain integers and touch no
    // memory of ours.
    let rc = unsafe {
        let pid = libc::getpid();
        if target == Target::GroupIfLeader && libc::getpgrp() == pid {
            libc::killpg(pid, sig)
        } else {
            libc::kill(pid, sig)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static DELIVERED: RefCell<Vec<(i32, Target)>> = const { RefCell::new(Vec::new()) };
    }

    fn delivered() -> Vec<(i32, Target)> {
        DELIVERED.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }

    /// The tests that set [`TASK_RUNNING`] (a process-wide flag) run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn signal_goes_to_the_process_and_interrupt_to_its_group() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        task_started();
        delivered();
        answer("signal_request", &json!({"sig": "SIGINT"}));
        answer("signal_request", &json!({"sig": 15}));
        answer("interrupt_request", &json!({}));
        assert_eq!(
            delivered(),
            vec![
                (libc::SIGINT, Target::Process),
                (libc::SIGTERM, Target::Process),
                (libc::SIGINT, Target::GroupIfLeader),
            ]
        );
    }

    #[test]
    fn an_interrupt_between_tasks_is_answered_and_dropped() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        task_started();
        task_ended();
        delivered();
        for (msg_type, content) in [
            ("interrupt_request", json!({})),
            ("signal_request", json!({"sig": "SIGINT"})),
        ] {
            let ControlAnswer::Reply { content, .. } = answer(msg_type, &content) else {
                panic!("{msg_type} is answered by the I/O thread");
            };
            assert_eq!(content["status"], "ok");
        }
        answer("signal_request", &json!({"sig": "SIGUSR1"}));
        assert_eq!(delivered(), vec![(libc::SIGUSR1, Target::Process)]);
    }

    #[test]
    fn sig_is_a_number_or_a_python_signal_name() {
        assert_eq!(parse_sig(Some(&json!(2))), Ok(libc::SIGINT));
        assert_eq!(parse_sig(Some(&json!("SIGINT"))), Ok(libc::SIGINT));
        assert_eq!(parse_sig(Some(&json!("SIGKILL"))), Ok(libc::SIGKILL));
        assert_eq!(parse_sig(Some(&json!("9"))), Ok(9));
        assert_eq!(parse_sig(Some(&json!(0))), Ok(0));
    }

    #[test]
    fn a_bad_sig_is_an_error_reply_and_nothing_is_sent() {
        delivered();
        for bad in [
            json!("SIGBOGUS"),
            json!(-1),
            json!(1000),
            json!(2.5),
            json!(null),
            json!([2]),
        ] {
            let ControlAnswer::Reply {
                msg_type, content, ..
            } = answer("signal_request", &json!({ "sig": bad }))
            else {
                panic!("always answered");
            };
            assert_eq!(msg_type, "signal_reply");
            assert_eq!(content["status"], "error", "{bad}");
            assert_eq!(content["ename"], "ValueError");
            assert_eq!(content["engine_info"]["method"], "signal_request");
        }
        let ControlAnswer::Reply { content, .. } = answer("signal_request", &json!({})) else {
            panic!("always answered");
        };
        assert_eq!(content["status"], "error");
        assert_eq!(delivered(), vec![]);
    }

    #[test]
    fn signal_zero_is_answered_ok_and_delivers_nothing() {
        delivered();
        let answer = answer("signal_request", &json!({"sig": 0}));
        assert_eq!(
            answer,
            ControlAnswer::Reply {
                msg_type: "signal_reply",
                content: json!({"status": "ok"}),
                shutdown: false,
            }
        );
        assert_eq!(delivered(), vec![]);
    }
}
