//! What a controller needs to know before it binds anything.

use corral_wire::ProfileLocation;

use crate::curve::CurveKeys;
pub use crate::db::DbMode;
pub use crate::published::HistoryLimits;

/// 2 GiB per frame. Frames are one pickled object or one out-of-band buffer (a numpy
/// array), so this admits arrays of up to 2 GiB each while capping what an unauthenticated
/// peer can make the controller hold per frame; larger arrays need
/// `--max-message-size`. (ipyparallel sets no limit.)
pub const DEFAULT_MAX_MESSAGE_SIZE: i64 = 2 << 30;

/// Unacknowledged bytes per corral IOPub subscriber: two 8 MB arrays in flight keep a
/// reading client busy; more only adds memory for a stuck one.
pub const DEFAULT_IOPUB_WINDOW: usize = 16 << 20;
/// Queued bytes per corral IOPub subscriber before a cut-off: published data is conflated
/// to one update per (task, engine), so this is reached only by a client that stopped
/// reading while output (or many tasks' data) kept coming.
pub const DEFAULT_IOPUB_BUDGET: usize = 64 << 20;
/// How many tasks the load balancer keeps outstanding on one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskHwm {
    /// At most this many (ipyparallel's `TaskScheduler.hwm`; `0`: no limit). At `1`, a
    /// task waits in the scheduler, never behind a long task on an engine, so any engine
    /// that frees up can take it; more hides each task's round trip behind the engine's
    /// work, but a long task holds back the tasks queued behind it.
    Fixed(usize),
    /// `1`, or more while an engine's tasks are short (under a millisecond); see
    /// `task/pace.rs`. The default.
    Auto,
}

impl std::str::FromStr for TaskHwm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(TaskHwm::Auto);
        }
        s.parse()
            .map(TaskHwm::Fixed)
            .map_err(|_| format!("{s:?} is neither `auto` nor a number of tasks (0: no limit)"))
    }
}

impl std::fmt::Display for TaskHwm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskHwm::Fixed(n) => write!(f, "{n}"),
            TaskHwm::Auto => f.write_str("auto"),
        }
    }
}

/// Settings of one controller. `Default` gives ipyparallel's defaults on 127.0.0.1 with
/// the `default` profile.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Address every socket binds to (random ports).
    pub ip: String,
    /// Profile directory and cluster id: where the connection files go.
    pub location: ProfileLocation,
    /// HMAC key; `None` draws a fresh `new_id()` as ipyparallel does.
    pub key: Option<String>,
    /// Heartbeat period in ms, also sent to engines as `hb_period`.
    pub hb_period_ms: u64,
    /// Consecutive missed periods after which an engine is declared dead (ipyparallel:
    /// `max_heartmonitor_misses` = 10, i.e. ~33 s with the default period).
    pub hb_max_misses: u32,
    /// Ping interval while a registration waits for its first pong, so new engines go
    /// live in milliseconds instead of one full period.
    pub fast_ping_ms: u64,
    /// After this long without a first heartbeat a registration is logged as late (it is
    /// kept waiting, never dropped); `None` is ipyparallel's `max(30 s, 5 periods)`.
    pub registration_timeout: Option<std::time::Duration>,
    /// Run with an empty key (no message signing). Refused unless asked for explicitly.
    pub insecure: bool,
    /// Largest message frame a peer may send (`ZMQ_MAXMSGSIZE`, bytes; -1 = no limit), on
    /// every socket facing clients and engines: a peer without the key cannot make the
    /// controller buffer more than this before the signature check. A bigger frame drops
    /// that peer's connection.
    pub max_message_size: i64,
    /// High-water mark (messages) of the relay and IOPub sockets, per peer: generous, so
    /// bursts are queued; past it a peer that does not read has messages refused or
    /// dropped (never waited for).
    pub hwm: i32,
    /// Per corral IOPub subscriber: bytes sent and not acknowledged (see
    /// `iopub_subscribers`). Bounds what a stuck client holds in flight.
    pub iopub_window: usize,
    /// Per corral IOPub subscriber: bytes queued (published data conflated) before a client
    /// that stopped reading is cut off with a notice. Bounds the controller's memory.
    pub iopub_budget: usize,
    /// Write `ipcontroller-{client,engine}.json` (and delete them on stop).
    pub write_files: bool,
    /// CurveZMQ (ipyparallel's `enable_curve`): `Some` makes every socket facing clients
    /// and engines a CURVE server with these keys and writes the public key into both
    /// connection files. Off (`None`) by default, as in ipyparallel.
    pub curve: Option<CurveKeys>,
    /// The Python that runs the dask.distributed scheduler of `become_dask_request`
    /// (it needs `dask[distributed]`); `None` means `python3` from `PATH`.
    pub python: Option<std::path::PathBuf>,
    /// The `location` written into the connection files (ipyparallel's `--location`): the
    /// host name or IP that engines and clients on other machines use; `None` is this
    /// machine's host name.
    pub advertised_location: Option<String>,
    /// Fixed ports (ipyparallel's `--ports`), one per socket in binding order; sockets
    /// beyond the list (or all, when empty) bind to random ports.
    pub ports: Vec<u16>,
    /// Fixed ports for the sockets engines reach (ipyparallel's `engine_ports`), in
    /// ipcontroller's order; once used up, those sockets take from `ports`.
    pub engine_ports: Vec<u16>,
    /// Fixed ports for the sockets clients reach (ipyparallel's `client_ports`), likewise.
    pub client_ports: Vec<u16>,
    /// Start on the key and ports of existing connection files, and leave the files on
    /// stop (ipyparallel's `--reuse`), so a restarted controller is found again.
    pub reuse_files: bool,
    /// How many earlier published-data updates, and how many bytes of them, each task
    /// record keeps per engine beside the latest snapshot (docs/PROTOCOL.md §12.1).
    pub data_history: HistoryLimits,
    /// How many tasks the load balancer keeps outstanding on one engine.
    pub task_hwm: TaskHwm,
    /// Where task records are kept. `corral controller` uses an SQLite file by default
    /// ([`DbMode::default_file`]); the library default is memory, so embedded and test
    /// controllers leave no files behind.
    pub db: DbMode,
    /// `--restore`: reload the task records (results and published data) from `db`
    /// written by an earlier controller of this cluster, instead of starting empty.
    pub restore: bool,
    /// The web dashboard (`--dashboard-port`): off (`None`) by default.
    pub dashboard: Option<DashboardConfig>,
    /// The engine state file (ipyparallel's `engines<cluster_id>.json` in the profile's
    /// `log` folder): the engine registry, kept so that `--restore` takes running engines
    /// back with their ids. `corral controller` keeps it; the library default (`None`)
    /// keeps none.
    pub engine_state: Option<std::path::PathBuf>,
    /// `--restore`: how long an engine of the state file may stay silent before it counts
    /// as having died while the controller was away (its unfinished tasks then fail with
    /// `EngineError`); `None` is the registration timeout.
    pub restore_timeout: Option<std::time::Duration>,
    /// Seconds that corral engines are told (in `registration_reply`) to wait for this
    /// controller to come back after its process is gone; 0 tells them nothing (their own
    /// `--controller-grace` applies). Set for `--reuse`/`--restore` controllers, which
    /// are meant to be restarted on the same ports.
    pub restart_grace: std::time::Duration,
}

/// Where the web dashboard listens (on `ip`, like every socket) and its access token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DashboardConfig {
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// The token a browser must present (`?token=` or the cookie); `None` draws a random one.
    pub token: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            ip: "127.0.0.1".into(),
            location: ProfileLocation::resolve(None, None, ""),
            key: None,
            hb_period_ms: 3000,
            hb_max_misses: 10,
            fast_ping_ms: 50,
            registration_timeout: None,
            insecure: false,
            hwm: 100_000,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            iopub_window: DEFAULT_IOPUB_WINDOW,
            iopub_budget: DEFAULT_IOPUB_BUDGET,
            write_files: true,
            curve: None,
            python: None,
            advertised_location: None,
            ports: Vec::new(),
            engine_ports: Vec::new(),
            client_ports: Vec::new(),
            reuse_files: false,
            data_history: HistoryLimits::default(),
            task_hwm: TaskHwm::Auto,
            db: DbMode::Memory,
            restore: false,
            dashboard: None,
            engine_state: None,
            restore_timeout: None,
            restart_grace: std::time::Duration::ZERO,
        }
    }
}

impl ControllerConfig {
    /// The Python for the dask scheduler process.
    pub fn python(&self) -> std::path::PathBuf {
        self.python.clone().unwrap_or_else(|| "python3".into())
    }

    /// How long `--restore` waits for each engine of the state file to heartbeat.
    pub fn restore_timeout(&self) -> std::time::Duration {
        self.restore_timeout
            .unwrap_or_else(|| self.registration_timeout())
    }

    /// ipyparallel's `registration_timeout`, `max(30 s, 5 periods)`, unless configured.
    /// Past it a registration still waiting for its first heartbeat is logged and no
    /// longer pinged fast; it still goes live when its heart answers.
    pub fn registration_timeout(&self) -> std::time::Duration {
        self.registration_timeout.unwrap_or_else(|| {
            std::time::Duration::from_millis((5 * self.hb_period_ms).max(30_000))
        })
    }
}
