//! The dask.distributed scheduler behind `become_dask_request` and
//! `stop_distributed_request` (ipyparallel's `Client.become_dask()` / `stop_dask()`).
//!
//! ipyparallel's hub starts a `distributed.Scheduler` inside its own Python process. This
//! controller has no Python in it, so it runs one scheduler *process*: `<python> -c
//! dask_scheduler.py <kwargs> <python>`, with the Python named by `--python` (the Python launcher
//! passes its own interpreter). The process reports its address as one JSON line; until
//! then the hub keeps serving and queues the requests that wait for it, so a slow
//! `import distributed` stalls nobody.
//!
//! The scheduler never outlives the controller: it exits when its stdin reaches end of
//! file, which happens when the controller closes the pipe (stop request, shutdown) and
//! also when the controller dies however it dies (the kernel closes a killed process's
//! pipes). A scheduler that does not exit when asked is killed after [`STOP_GRACE`].

use corral_wire::{error_content, Header};
use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The scheduler process's program, run with `python -c`; it needs only `distributed`.
const SCHEDULER_SCRIPT: &str = include_str!("dask_scheduler.py");
/// How long a scheduler may take to report its address (importing distributed on a
/// loaded machine takes seconds) before it is killed and its requesters get an error.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a scheduler asked to stop may take to exit before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// Bound on the connect that checks a running scheduler still listens (same host: fast).
const LISTEN_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Who asked: the reply goes to `ident` on the query socket, parented on `parent`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requester {
    pub ident: Vec<u8>,
    pub parent: Header,
}

/// A reply for the hub to send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DaskReply {
    pub to: Requester,
    pub msg_type: &'static str,
    pub content: Value,
}

/// A scheduler process's report (its reply content), tagged with its start number.
type Report = (u64, Value);

const BECOME: &str = "become_dask_reply";
const STOP: &str = "stop_distributed_reply";

/// The one scheduler of this controller, and the requests waiting for it.
#[derive(Debug)]
pub(crate) struct DaskScheduler {
    python: PathBuf,
    /// Where the scheduler listens unless `scheduler_args` say otherwise: the controller's
    /// own address (ipyparallel's default would be every interface).
    host: String,
    startup_timeout: Duration,
    state: State,
    /// Reports of started processes, tagged with their start number: a report of a
    /// process already given up on is ignored.
    reports: (Sender<Report>, Receiver<Report>),
    starts: u64,
}

#[derive(Debug)]
enum State {
    Idle,
    Starting {
        process: Process,
        since: Instant,
        waiting: Vec<Requester>,
    },
    Running {
        process: Process,
        info: Value,
    },
}

impl DaskScheduler {
    pub(crate) fn new(python: PathBuf, host: String) -> Self {
        DaskScheduler {
            python,
            host,
            startup_timeout: STARTUP_TIMEOUT,
            state: State::Idle,
            reports: crossbeam_channel::unbounded(),
            starts: 0,
        }
    }

    /// `become_dask_request`: the running scheduler's address, or start one. A second
    /// request gets the same scheduler (its `scheduler_args` are ignored), as in
    /// ipyparallel. Replies now, or from [`Self::poll`] once the process has reported.
    pub(crate) fn become_dask(&mut self, to: Requester, scheduler_args: &Value) -> Vec<DaskReply> {
        let gone = match &mut self.state {
            State::Running { process, info } => !process.running() || !listening(info),
            _ => false,
        };
        if gone {
            warn!(
                "the dask scheduler has closed (a dask client's shutdown()?); starting a new one"
            );
            if let State::Running { process, .. } = std::mem::replace(&mut self.state, State::Idle)
            {
                process.stop_in_background();
            }
        }
        match &mut self.state {
            State::Running { info, .. } => vec![reply(to, BECOME, info.clone())],
            State::Starting { waiting, .. } => {
                waiting.push(to);
                Vec::new()
            }
            State::Idle => match self.start(scheduler_args) {
                Ok(process) => {
                    self.state = State::Starting {
                        process,
                        since: Instant::now(),
                        waiting: vec![to],
                    };
                    Vec::new()
                }
                Err(content) => vec![reply(to, BECOME, content)],
            },
        }
    }

    /// `stop_distributed_request`: stops the scheduler (if any) and replies ok, as
    /// ipyparallel does. Requests still waiting for a starting scheduler get an error.
    pub(crate) fn stop(&mut self, to: Requester) -> Vec<DaskReply> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => info!("stop_distributed_request: no dask scheduler is running"),
            State::Running { process, .. } => {
                info!(pid = process.pid(), "stopping the dask scheduler");
                process.stop_in_background();
            }
            State::Starting {
                process, waiting, ..
            } => {
                process.stop_in_background();
                let content = error_content(
                    "RuntimeError",
                    "the dask scheduler was stopped (stop_distributed_request) before it started",
                );
                out.extend(
                    waiting
                        .into_iter()
                        .map(|w| reply(w, BECOME, content.clone())),
                );
            }
        }
        out.push(reply(to, STOP, json!({"status": "ok"})));
        out
    }

    /// Replies that became due: a starting scheduler reported (or died, or took too long).
    pub(crate) fn poll(&mut self, now: Instant) -> Vec<DaskReply> {
        let mut out = Vec::new();
        while let Ok((start, report)) = self.reports.1.try_recv() {
            if start == self.starts && matches!(self.state, State::Starting { .. }) {
                out.extend(self.started(report));
            }
        }
        if let State::Starting { since, .. } = &self.state {
            if now.duration_since(*since) > self.startup_timeout {
                let evalue = format!(
                    "the dask scheduler did not report its address within {} s; killed it",
                    self.startup_timeout.as_secs()
                );
                out.extend(self.started(error_content("TimeoutError", &evalue)));
            }
        }
        out
    }

    /// Stops the scheduler before the controller exits, waiting up to [`STOP_GRACE`].
    pub(crate) fn shutdown(&mut self) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Starting { process, .. } | State::Running { process, .. } => {
                info!(pid = process.pid(), "stopping the dask scheduler");
                process.stop(STOP_GRACE);
            }
        }
    }

    /// The outcome of a start: the waiting requesters get `report` (ok or error).
    fn started(&mut self, report: Value) -> Vec<DaskReply> {
        let State::Starting {
            process, waiting, ..
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return Vec::new();
        };
        if report["status"] == "ok" {
            info!(address = %report["address"], pid = process.pid(), "dask scheduler running");
            self.state = State::Running {
                process,
                info: report.clone(),
            };
        } else {
            warn!(ename = %report["ename"], evalue = %report["evalue"], "dask scheduler did not start");
            process.stop_in_background();
        }
        waiting
            .into_iter()
            .map(|w| reply(w, BECOME, report.clone()))
            .collect()
    }

    /// Starts the process and a thread that reads its one-line report.
    fn start(&mut self, scheduler_args: &Value) -> Result<Process, Value> {
        let kwargs = self.scheduler_kwargs(scheduler_args)?;
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(SCHEDULER_SCRIPT)
            .arg(kwargs.to_string())
            .arg(&self.python)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                let evalue = format!(
                    "cannot run {} to start the dask scheduler: {e}; start the controller \
                     with --python naming a Python that has dask[distributed]",
                    self.python.display()
                );
                error_content("FileNotFoundError", &evalue)
            })?;
        self.starts += 1;
        info!(pid = child.id(), python = %self.python.display(), %kwargs, "starting a dask scheduler");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (start, tx) = (self.starts, self.reports.0.clone());
        let reader = std::thread::Builder::new()
            .name("corral-dask".into())
            .spawn(move || {
                let _ = tx.send((start, read_report(stdout)));
            });
        let stdin = child.stdin.take();
        let process = Process { child, stdin };
        if let Err(e) = reader {
            process.stop_in_background();
            return Err(error_content(
                "RuntimeError",
                &format!("cannot start a thread: {e}"),
            ));
        }
        Ok(process)
    }

    /// The `Scheduler(**kwargs)` of a request: its `scheduler_args`, listening on the
    /// controller's address (dashboard included) unless they say where.
    fn scheduler_kwargs(&self, scheduler_args: &Value) -> Result<Value, Value> {
        let mut kwargs = match scheduler_args {
            Value::Null => Map::new(),
            Value::Object(m) => m.clone(),
            other => {
                let evalue = format!("scheduler_args must be a dict, not {other}");
                return Err(error_content("TypeError", &evalue));
            }
        };
        let host = match self.host.as_str() {
            "*" => "0.0.0.0",
            h => h,
        };
        if !["host", "ip", "interface"]
            .iter()
            .any(|k| kwargs.contains_key(*k))
        {
            kwargs.insert("host".into(), json!(host));
            if !kwargs.contains_key("dashboard_address") {
                let bracketed = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                kwargs.insert("dashboard_address".into(), json!(format!("{bracketed}:0")));
            }
        }
        Ok(Value::Object(kwargs))
    }
}

/// Whether a scheduler still accepts connections at its reported TCP `address`. A dask
/// client's `shutdown()` closes the scheduler, and returns, before its process has exited:
/// its address must not be handed out again. Other protocols are taken on trust.
fn listening(info: &Value) -> bool {
    let Some(addr) = info["address"]
        .as_str()
        .and_then(|a| a.strip_prefix("tcp://"))
    else {
        return true;
    };
    let Some(addr) = addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return true;
    };
    TcpStream::connect_timeout(&addr, LISTEN_PROBE_TIMEOUT).is_ok()
}

fn reply(to: Requester, msg_type: &'static str, content: Value) -> DaskReply {
    DaskReply {
        to,
        msg_type,
        content,
    }
}

/// The scheduler's report line, or an error content when it exits (or writes nonsense)
/// without one.
fn read_report(stdout: ChildStdout) -> Value {
    let mut line = String::new();
    let died = || {
        error_content(
            "RuntimeError",
            "the dask scheduler process exited before reporting its address \
             (its error is in the controller's log)",
        )
    };
    match BufReader::new(stdout).read_line(&mut line) {
        Ok(0) | Err(_) => died(),
        Ok(_) => match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("status").is_some() => v,
            _ => {
                warn!(
                    line = line.trim_end(),
                    "unreadable report from the dask scheduler"
                );
                died()
            }
        },
    }
}

/// A scheduler process. Dropping it kills the process.
#[derive(Debug)]
struct Process {
    child: Child,
    /// Closing it asks the scheduler to exit.
    stdin: Option<ChildStdin>,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes its stdin, waits up to `grace` for it to exit, then kills it.
    fn stop(mut self, grace: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        warn!(
            pid = self.pid(),
            "the dask scheduler did not exit when asked; killing it"
        );
        // Drop kills and reaps.
    }

    /// [`Self::stop`] on a thread of its own, so the hub does not wait.
    fn stop_in_background(self) {
        let spawned = std::thread::Builder::new()
            .name("corral-dask-stop".into())
            .spawn(move || self.stop(STOP_GRACE));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to stop the dask scheduler");
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stdin = None;
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requester(n: u8) -> Requester {
        let parent = Header {
            msg_id: format!("m{n}"),
            msg_type: "become_dask_request".into(),
            username: "u".into(),
            session: "s".into(),
            date: "2026-01-01T00:00:00Z".into(),
            version: "5.4".into(),
        };
        Requester {
            ident: vec![n],
            parent,
        }
    }

    fn cat() -> Child {
        Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Polls until replies come or `timeout` passes.
    fn poll_until(d: &mut DaskScheduler, timeout: Duration) -> Vec<DaskReply> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = d.poll(Instant::now());
            if !out.is_empty() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn kwargs_listen_on_the_controllers_address_unless_told() {
        let d = DaskScheduler::new("python3".into(), "127.0.0.1".into());
        assert_eq!(
            d.scheduler_kwargs(&Value::Null).unwrap(),
            json!({"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})
        );
        assert_eq!(
            d.scheduler_kwargs(&json!({"port": 8786})).unwrap(),
            json!({"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0", "port": 8786})
        );
        assert_eq!(
            d.scheduler_kwargs(&json!({"interface": "lo"})).unwrap(),
            json!({"interface": "lo"})
        );
        let v6 = DaskScheduler::new("python3".into(), "::1".into());
        assert_eq!(
            v6.scheduler_kwargs(&json!({})).unwrap()["dashboard_address"],
            "[::1]:0"
        );
        let err = d.scheduler_kwargs(&json!([1])).unwrap_err();
        assert_eq!(err["ename"], "TypeError");
    }

    #[test]
    fn a_missing_python_is_an_error_reply_that_says_what_to_do() {
        let mut d = DaskScheduler::new("/nonexistent/python".into(), "127.0.0.1".into());
        let out = d.become_dask(requester(1), &json!({}));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].msg_type, "become_dask_reply");
        assert_eq!(out[0].to, requester(1));
        assert_eq!(out[0].content["status"], "error");
        let evalue = out[0].content["evalue"].as_str().unwrap();
        assert!(evalue.contains("/nonexistent/python") && evalue.contains("--python"));
        assert!(matches!(d.state, State::Idle));
    }

    #[test]
    fn a_process_that_dies_before_reporting_fails_every_waiting_request() {
        // `false` exits at once without printing: a Python that cannot even start.
        let mut d = DaskScheduler::new("false".into(), "127.0.0.1".into());
        assert!(d.become_dask(requester(1), &json!({})).is_empty());
        assert!(
            d.become_dask(requester(2), &json!({})).is_empty(),
            "a second request waits for the same start"
        );
        let out = poll_until(&mut d, Duration::from_secs(20));
        assert_eq!(out.len(), 2);
        for (r, n) in out.iter().zip([1, 2]) {
            assert_eq!(r.to, requester(n));
            assert_eq!(r.content["status"], "error");
            assert!(r.content["evalue"]
                .as_str()
                .unwrap()
                .contains("exited before reporting"));
        }
        assert!(matches!(d.state, State::Idle));
    }

    #[test]
    fn a_scheduler_that_never_reports_is_killed_after_the_startup_timeout() {
        let mut d = DaskScheduler::new("python3".into(), "127.0.0.1".into());
        d.startup_timeout = Duration::from_millis(100);
        // A process that runs and never reports; it exits when its stdin closes.
        let mut child = cat();
        let pid = child.id();
        let stdin = child.stdin.take();
        d.state = State::Starting {
            process: Process { child, stdin },
            since: Instant::now(),
            waiting: vec![requester(3)],
        };
        std::thread::sleep(Duration::from_millis(150));
        let out = d.poll(Instant::now());
        assert_eq!(out[0].content["ename"], "TimeoutError");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "stopped and reaped"
        );
    }

    #[test]
    fn a_scheduler_that_exited_on_its_own_is_started_again() {
        let mut d = DaskScheduler::new("false".into(), "127.0.0.1".into());
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        d.state = State::Running {
            process: Process { child, stdin: None },
            info: json!({"status": "ok", "address": "tcp://127.0.0.1:1"}),
        };
        assert!(
            d.become_dask(requester(1), &json!({})).is_empty(),
            "not the dead scheduler's address: a new start"
        );
        assert!(matches!(d.state, State::Starting { .. }));
        let out = poll_until(&mut d, Duration::from_secs(20));
        assert_eq!(out[0].content["status"], "error", "`false` never reports");
    }

    #[test]
    fn a_running_scheduler_that_no_longer_listens_is_replaced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("tcp://{}", listener.local_addr().unwrap());
        let info = json!({"status": "ok", "address": address});
        assert!(listening(&info));
        drop(listener);
        assert!(!listening(&info));
        assert!(listening(&json!({"address": "ws://somewhere:1"})));

        let mut d = DaskScheduler::new("false".into(), "127.0.0.1".into());
        let mut child = cat();
        let stdin = child.stdin.take();
        d.state = State::Running {
            process: Process { child, stdin },
            info,
        };
        assert!(d.become_dask(requester(1), &json!({})).is_empty());
        assert!(matches!(d.state, State::Starting { .. }), "a new start");
    }

    #[test]
    fn stop_replies_ok_and_fails_requests_still_waiting() {
        let mut d = DaskScheduler::new("python3".into(), "127.0.0.1".into());
        let out = d.stop(requester(1));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].msg_type, &out[0].content),
            ("stop_distributed_reply", &json!({"status": "ok"}))
        );
        let mut child = cat();
        let stdin = child.stdin.take();
        d.state = State::Starting {
            process: Process { child, stdin },
            since: Instant::now(),
            waiting: vec![requester(2)],
        };
        let out = d.stop(requester(3));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].to, requester(2));
        assert_eq!(out[0].content["status"], "error");
        assert_eq!(out[1].content, json!({"status": "ok"}));
        assert!(matches!(d.state, State::Idle));
    }
}
