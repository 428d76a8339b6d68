//! `corral controller [options]`: one parser and one run loop for the binary and for
//! Python (`corral._core.controller_main`), which differ only in how they notice Ctrl-C.

use clap::Parser;
use corral_wire::ProfileLocation;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

use crate::config::{ControllerConfig, DbMode};
use crate::curve::CurveKeys;
use crate::error::Result;
use crate::Controller;

/// Start a corral controller (ipyparallel-compatible) and serve until shut down.
#[derive(Debug, Parser)]
#[command(name = "corral controller")]
pub struct Cli {
    /// IPython profile name (its directory holds the connection files).
    #[arg(long, default_value = "default")]
    pub profile: String,
    /// Profile directory; overrides --profile.
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Cluster id: files are named ipcontroller-<id>-{client,engine}.json.
    #[arg(long, default_value = "")]
    pub cluster_id: String,
    /// IP address every socket binds to.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    /// Log level or tracing filter (logs go to stderr).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Heartbeat period in milliseconds.
    #[arg(long = "hb-period", default_value_t = 3000)]
    pub hb_period_ms: u64,
    /// Run even with an empty cluster key (IPP_SESSION_KEY=""), i.e. without message
    /// signing. Also CORRAL_INSECURE=1.
    #[arg(long)]
    pub insecure: bool,
    /// Largest message frame accepted from a client or engine, in bytes (-1: no limit);
    /// a bigger frame drops the sender's connection.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_MESSAGE_SIZE, allow_negative_numbers = true)]
    pub max_message_size: i64,
    /// Per corral client (`corral_iopub`): bytes of IOPub output queued for a client that
    /// stopped reading before it is cut off and told what it lost. Published data is
    /// conflated (the latest update per task and engine), so only other output piles up.
    #[arg(long, default_value_t = crate::config::DEFAULT_IOPUB_BUDGET)]
    pub iopub_budget: usize,
    /// Per corral client: bytes of IOPub sent and not yet acknowledged by it; what a client
    /// that stopped reading holds in flight (on top of `--iopub-budget`).
    #[arg(long, default_value_t = crate::config::DEFAULT_IOPUB_WINDOW)]
    pub iopub_window: usize,
    /// CurveZMQ encryption of every connection (ipyparallel's `enable_curve`; also
    /// `--IPController.enable_curve=True` or IPP_ENABLE_CURVE=1). The key pair comes from
    /// IPP_CURVE_PUBLICKEY/IPP_CURVE_SECRETKEY, else is generated; the public key is
    /// written to both connection files as `curve_serverkey`.
    #[arg(
        long,
        alias = "IPController.enable_curve",
        num_args = 0..=1,
        default_missing_value = "true",
        default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new(),
    )]
    pub enable_curve: bool,
    /// Most tasks the load balancer keeps outstanding on one engine: a number (0: no
    /// limit), as ipyparallel's `--TaskScheduler.hwm=N`, or `auto`: 1, or up to 8 while an
    /// engine's tasks take under a millisecond. Above 1, engines get their next task while
    /// they work, but a long task holds back the short ones queued behind it.
    #[arg(long, alias = "TaskScheduler.hwm", default_value = "auto")]
    pub hwm: crate::config::TaskHwm,
    /// Earlier published-data updates each task record keeps per engine, beside the
    /// latest snapshot (clients read them as `ar.data_history`); 0 keeps none.
    #[arg(long, default_value_t = crate::config::HistoryLimits::default().updates)]
    pub data_history: usize,
    /// Bytes of those earlier updates kept per task and engine.
    #[arg(long, default_value_t = crate::config::HistoryLimits::default().bytes)]
    pub data_history_bytes: usize,
    /// Serve the web dashboard on this port of --ip (0: a free port); off when not given.
    /// Its URL, with the access token, is logged and written to the client connection
    /// file (`corral_dashboard_url`).
    #[arg(long)]
    pub dashboard_port: Option<u16>,
    /// The dashboard's access token (default: a random one at each start).
    #[arg(long, requires = "dashboard_port")]
    pub dashboard_token: Option<String>,
    /// The Python that runs the dask.distributed scheduler when a client calls
    /// `become_dask()` (it needs dask[distributed]); also CORRAL_PYTHON. `corral
    /// controller` passes its own interpreter; default: python3 from PATH.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// The host name or IP that the connection files give as `location` (ipyparallel's
    /// `--location`), for engines and clients on other machines; default: this host's name.
    #[arg(long)]
    pub location: Option<String>,
    /// Fixed ports for the controller's sockets, taken in order (ipyparallel's `--ports`),
    /// e.g. `10101-10115` or `10101,10103-10116`; 15 cover ipyparallel's sockets (a 16th, corral
    /// clients' conflating IOPub, binds to a random port unless given), the rest bind to
    /// random ports.
    #[arg(long, alias = "IPController.ports", value_parser = parse_ports)]
    pub ports: Option<PortList>,
    /// Fixed ports for the sockets engines connect to (ipyparallel's `engine_ports`), taken
    /// in ipcontroller's order: registration, control, mux, task, iopub, hb_ping, hb_pong,
    /// 2 broadcast leaves; sockets left over take `--ports`, then random ports.
    #[arg(long, alias = "IPController.engine_ports", value_parser = parse_ports)]
    pub engine_ports: Option<PortList>,
    /// Fixed ports for the sockets clients connect to (ipyparallel's `client_ports`), in
    /// ipcontroller's order: control, mux, task, iopub, notification, broadcast (then
    /// corral clients' IOPub); sockets left over take `--ports`, then random ports.
    #[arg(long, alias = "IPController.client_ports", value_parser = parse_ports)]
    pub client_ports: Option<PortList>,
    /// Reuse the connection files of an earlier controller of this profile and cluster id
    /// (its key and ports) and leave them on exit (ipyparallel's `--reuse`), so engines and
    /// clients holding them find this controller again.
    #[arg(long)]
    pub reuse: bool,
    /// Where task records are kept: `sqlite` (a file, by default
    /// `<profile>/db/corral-tasks-<cluster_id>.sqlite`, so `--restore` finds them after a
    /// restart) or `memory` (nothing survives the controller). ipyparallel's `--nodb` and
    /// `--sqlitedb` are accepted too.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub db: DbKind,
    /// ipyparallel's spelling of `--db memory`.
    #[arg(long, conflicts_with = "sqlitedb")]
    pub nodb: bool,
    /// ipyparallel's spelling of `--db sqlite`.
    #[arg(long)]
    pub sqlitedb: bool,
    /// The SQLite file of `--db sqlite` (default in the profile's `db` folder).
    #[arg(long)]
    pub db_file: Option<PathBuf>,
    /// Start again after a crash or restart (ipyparallel's `--restore`): reuse the
    /// connection files (as `--reuse`) and reload the task records and published data from
    /// the task database, so clients reconnect and find their results.
    #[arg(long)]
    pub restore: bool,
    /// With --restore: seconds to wait for each engine of the engine state file
    /// (`<profile>/log/engines<cluster_id>.json`) to heartbeat before it counts as dead and
    /// its unfinished tasks fail; default: the registration timeout (30 s).
    #[arg(long, value_name = "SECONDS")]
    pub restore_timeout: Option<f64>,
    /// Seconds that corral engines wait for this controller to come back when its process
    /// is gone (told to them at registration). Default: 60 with --reuse or --restore
    /// (a controller meant to be restarted), else 0 (engines follow their own
    /// --controller-grace, 3 s).
    #[arg(long, value_name = "SECONDS")]
    pub restart_grace: Option<f64>,
}

/// Engines' wait for a `--reuse`/`--restore` controller to come back, unless
/// `--restart-grace` says otherwise: enough for a supervisor or a person to restart it.
pub const DEFAULT_RESTART_GRACE: Duration = Duration::from_secs(60);

/// `--db`: where task records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DbKind {
    Sqlite,
    Memory,
}

/// `--ports`, `--engine-ports`, `--client-ports`: ports and inclusive ranges,
/// comma-separated, optionally as a Python list (`[10101, 10102]`, as config files give it).
#[derive(Debug, Clone, PartialEq)]
pub struct PortList(pub Vec<u16>);

fn parse_ports(text: &str) -> std::result::Result<PortList, String> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let mut ports = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = |s: &str| match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{s:?} is not a port (1-65535)")),
        };
        match part.split_once('-') {
            Some((start, end)) => {
                let (start, end) = (port(start)?, port(end)?);
                if start > end {
                    return Err(format!("port range {part:?} runs backwards"));
                }
                ports.extend(start..=end);
            }
            None => ports.push(port(part)?),
        }
    }
    Ok(PortList(ports))
}

/// `CORRAL_INSECURE=1` (or `true`/`yes`) opts in to an empty key.
fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

impl Cli {
    /// The settings these options and the environment ask for; an error only when CURVE
    /// is asked for and cannot be had (no CURVE in this build, bad keys).
    pub fn config(&self) -> Result<ControllerConfig> {
        self.config_with_env(|name| std::env::var(name).ok())
    }

    /// Like ipcontroller, reads `IPP_PROFILE_DIR`, `IPP_CLUSTER_ID`, `IPP_SESSION_KEY` and
    /// `IPP_ENABLE_CURVE` (with `IPP_CURVE_{PUBLIC,SECRET}KEY`), which `ipyparallel.Cluster`'s
    /// launchers and users set instead of passing options; an option given on the command
    /// line wins over its variable.
    fn config_with_env(&self, env: impl Fn(&str) -> Option<String>) -> Result<ControllerConfig> {
        let profile_dir = self.profile_dir.clone().or_else(|| {
            env("IPP_PROFILE_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        });
        let cluster_id = if self.cluster_id.is_empty() {
            env("IPP_CLUSTER_ID").unwrap_or_default()
        } else {
            self.cluster_id.clone()
        };
        let enable_curve = self.enable_curve || env("IPP_ENABLE_CURVE").as_deref() == Some("1");
        let curve = if enable_curve {
            Some(CurveKeys::from_env_or_generate(&env)?)
        } else {
            None
        };
        let location =
            ProfileLocation::resolve(profile_dir.as_deref(), Some(&self.profile), &cluster_id);
        Ok(ControllerConfig {
            ip: self.ip.clone(),
            key: env("IPP_SESSION_KEY"),
            hb_period_ms: self.hb_period_ms.max(1),
            insecure: self.insecure || truthy(env("CORRAL_INSECURE")),
            max_message_size: self.max_message_size.max(-1),
            iopub_budget: self.iopub_budget,
            iopub_window: self.iopub_window.max(1),
            curve,
            task_hwm: self.hwm,
            data_history: crate::config::HistoryLimits {
                updates: self.data_history,
                bytes: self.data_history_bytes,
            },
            python: self.python.clone().or_else(|| {
                env("CORRAL_PYTHON")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            }),
            advertised_location: self.location.clone(),
            ports: self.ports.clone().map(|p| p.0).unwrap_or_default(),
            engine_ports: self.engine_ports.clone().map(|p| p.0).unwrap_or_default(),
            client_ports: self.client_ports.clone().map(|p| p.0).unwrap_or_default(),
            reuse_files: self.reuse || self.restore,
            db: self.db_mode(&location),
            restore: self.restore,
            engine_state: Some(crate::engine_state::path(&location)),
            restore_timeout: self
                .restore_timeout
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
            restart_grace: match self.restart_grace {
                Some(s) => Duration::from_secs_f64(s.max(0.0)),
                None if self.reuse || self.restore => DEFAULT_RESTART_GRACE,
                None => Duration::ZERO,
            },
            location,
            dashboard: self
                .dashboard_port
                .map(|port| crate::config::DashboardConfig {
                    port,
                    token: self.dashboard_token.clone(),
                }),
            ..ControllerConfig::default()
        })
    }
}

impl Cli {
    fn db_mode(&self, location: &ProfileLocation) -> DbMode {
        let memory = self.nodb || (self.db == DbKind::Memory && !self.sqlitedb);
        if memory {
            DbMode::Memory
        } else {
            DbMode::Sqlite(
                self.db_file
                    .clone()
                    .unwrap_or_else(|| DbMode::default_file(location)),
            )
        }
    }
}

/// Parses `args` (without the program name); on bad options prints usage and returns
/// the exit code to use.
fn parse(args: impl IntoIterator<Item = String>) -> std::result::Result<Cli, i32> {
    let argv = std::iter::once("corral controller".to_string()).chain(args);
    Cli::try_parse_from(argv).map_err(|e| {
        let _ = e.print();
        e.exit_code()
    })
}

/// Python's level names (`WARNING`, `CRITICAL`, any case) as tracing directives, so the
/// `--log-level` that `corral.Cluster` passes to every process means the same here.
fn tracing_level(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "critical" | "fatal" => "error".into(),
        other => other.into(),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(tracing_level(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second init (Python calling twice, tests) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a controller from command-line `args` until a client's `shutdown_request` or
/// until `interrupted()` returns true (polled every 100 ms); then stops it cleanly and
/// deletes the connection files. Returns the process exit code.
pub fn run_with_args(
    args: impl IntoIterator<Item = String>,
    mut interrupted: impl FnMut() -> bool,
) -> Result<i32> {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(code) => return Ok(code),
    };
    init_logging(&cli.log_level);
    let controller = Controller::start(cli.config()?)?;
    loop {
        if controller.wait_timeout(Duration::from_millis(100)) {
            break;
        }
        if interrupted() {
            info!("interrupted; stopping");
            break;
        }
    }
    controller.stop();
    Ok(0)
}

/// The binary's entry point: like [`run_with_args`], stopping on SIGINT or SIGTERM.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> Result<i32> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    if let Err(e) = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst)) {
        eprintln!("corral controller: cannot install a signal handler: {e}");
    }
    run_with_args(args, || flag.load(Ordering::SeqCst))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_level_names_map_to_tracing() {
        assert_eq!(tracing_level("WARNING"), "warn");
        assert_eq!(tracing_level("critical"), "error");
        assert_eq!(tracing_level("debug"), "debug");
    }

    #[test]
    fn options_and_defaults() {
        let cli = parse(Vec::<String>::new()).unwrap();
        assert_eq!(
            (cli.profile.as_str(), cli.ip.as_str(), cli.hb_period_ms),
            ("default", "127.0.0.1", 3000)
        );
        let args = [
            "--profile-dir",
            "/p",
            "--cluster-id",
            "x",
            "--hb-period",
            "500",
        ];
        let cli = parse(args.map(String::from)).unwrap();
        let cfg = cli.config().unwrap();
        assert_eq!(
            cfg.location.connection_file("client"),
            PathBuf::from("/p/security/ipcontroller-x-client.json")
        );
        assert_eq!(cfg.hb_period_ms, 500);
        assert_eq!(parse(["--bogus".to_string()]).unwrap_err(), 2);
    }

    #[test]
    fn ipyparallel_environment_variables_fill_in_unset_options() {
        let env = |name: &str| match name {
            "IPP_PROFILE_DIR" => Some("/env".to_string()),
            "IPP_CLUSTER_ID" => Some("envid".to_string()),
            "IPP_SESSION_KEY" => Some("k3y".to_string()),
            _ => None,
        };
        let cfg = parse(Vec::<String>::new())
            .unwrap()
            .config_with_env(env)
            .unwrap();
        assert_eq!(
            cfg.location.connection_file("engine"),
            PathBuf::from("/env/security/ipcontroller-envid-engine.json")
        );
        assert_eq!(cfg.key.as_deref(), Some("k3y"));
        let args = ["--profile-dir", "/p", "--cluster-id", "x"];
        let cfg = parse(args.map(String::from))
            .unwrap()
            .config_with_env(env)
            .unwrap();
        assert_eq!(
            cfg.location.connection_file("client"),
            PathBuf::from("/p/security/ipcontroller-x-client.json")
        );
        let cfg = parse(Vec::<String>::new())
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(cfg.key, None);
        assert!(!cfg.insecure);
        assert_eq!(cfg.python(), PathBuf::from("python3"));
        let python_env = |name: &str| (name == "CORRAL_PYTHON").then(|| "/env/py".to_string());
        let cli = parse(Vec::<String>::new()).unwrap();
        assert_eq!(
            cli.config_with_env(python_env).unwrap().python(),
            PathBuf::from("/env/py")
        );
        let cli = parse(["--python", "/opt/py"].map(String::from)).unwrap();
        assert_eq!(
            cli.config_with_env(python_env).unwrap().python(),
            PathBuf::from("/opt/py"),
            "the option wins over the variable"
        );
    }

    #[test]
    fn insecure_and_message_size_options() {
        let cli = parse(Vec::<String>::new()).unwrap();
        assert_eq!(cli.max_message_size, 2 << 30);
        let insecure_env = |name: &str| (name == "CORRAL_INSECURE").then(|| "1".to_string());
        assert!(cli.config_with_env(insecure_env).unwrap().insecure);
        let cli = parse(["--insecure", "--max-message-size", "-1"].map(String::from)).unwrap();
        let cfg = cli.config_with_env(|_| None).unwrap();
        assert!(cfg.insecure);
        assert_eq!(cfg.max_message_size, -1);
    }

    #[test]
    fn dashboard_options() {
        let cfg = parse(Vec::<String>::new())
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(cfg.dashboard, None, "off by default");
        let cli = parse(["--dashboard-port", "0"].map(String::from)).unwrap();
        let d = cli.config_with_env(|_| None).unwrap().dashboard.unwrap();
        assert_eq!((d.port, d.token), (0, None));
        let args = ["--dashboard-port", "8787", "--dashboard-token", "tok"];
        let d = parse(args.map(String::from))
            .unwrap()
            .config()
            .unwrap()
            .dashboard;
        assert_eq!(d.unwrap().token.as_deref(), Some("tok"));
        assert_eq!(
            parse(["--dashboard-token", "tok"].map(String::from)).unwrap_err(),
            2,
            "a token without the port is a usage error"
        );
    }

    #[test]
    fn data_history_options() {
        let cfg = parse(Vec::<String>::new())
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(cfg.data_history, crate::config::HistoryLimits::default());
        let args = ["--data-history", "3", "--data-history-bytes", "1000"];
        let cfg = parse(args.map(String::from))
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(cfg.data_history.updates, 3);
        assert_eq!(cfg.data_history.bytes, 1000);
    }

    #[test]
    fn task_database_options() {
        let cfg_of = |args: &[&str]| {
            parse(args.iter().map(|a| a.to_string()))
                .unwrap()
                .config_with_env(|_| None)
                .unwrap()
        };
        let base = ["--profile-dir", "/p", "--cluster-id", "c1"];
        let cfg = cfg_of(&base);
        assert_eq!(
            cfg.db,
            DbMode::Sqlite(PathBuf::from("/p/db/corral-tasks-c1.sqlite")),
            "SQLite in the profile's folder by default"
        );
        assert!(!cfg.restore && !cfg.reuse_files);
        for memory in [&["--db", "memory"][..], &["--nodb"]] {
            assert_eq!(cfg_of(&[&base[..], memory].concat()).db, DbMode::Memory);
        }
        let cfg = cfg_of(&[&base[..], &["--db-file", "/x/t.sqlite", "--restore"]].concat());
        assert_eq!(cfg.db, DbMode::Sqlite(PathBuf::from("/x/t.sqlite")));
        assert!(cfg.restore && cfg.reuse_files, "--restore reuses the files");
        assert_eq!(
            cfg.engine_state,
            Some(PathBuf::from("/p/log/enginesc1.json")),
            "ipyparallel's engine state file"
        );
        assert_eq!(cfg.restart_grace, DEFAULT_RESTART_GRACE);
        assert_eq!(cfg.restore_timeout(), Duration::from_secs(30));
        let cfg = cfg_of(&[&base[..], &["--restore", "--restore-timeout", "2.5"]].concat());
        assert_eq!(cfg.restore_timeout(), Duration::from_millis(2500));
        assert_eq!(cfg_of(&base).restart_grace, Duration::ZERO);
        let cfg = cfg_of(&[&base[..], &["--reuse", "--restart-grace", "5"]].concat());
        assert_eq!(cfg.restart_grace, Duration::from_secs(5));
        assert!(matches!(cfg_of(&["--sqlitedb"]).db, DbMode::Sqlite(_)));
        assert_eq!(
            parse(["--db".to_string(), "mongo".to_string()]).unwrap_err(),
            2
        );
    }

    #[test]
    fn location_ports_and_reuse_options() {
        let cfg = parse(Vec::<String>::new())
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(
            (cfg.advertised_location, cfg.ports.len(), cfg.reuse_files),
            (None, 0, false)
        );
        let args = [
            "--location",
            "head.example",
            "--ports",
            "10101,10103-10105",
            "--reuse",
        ];
        let cfg = parse(args.map(String::from))
            .unwrap()
            .config_with_env(|_| None)
            .unwrap();
        assert_eq!(cfg.advertised_location.as_deref(), Some("head.example"));
        assert_eq!(cfg.ports, vec![10101, 10103, 10104, 10105]);
        assert!(cfg.reuse_files);
        for bad in ["0", "70000", "5-3", "x"] {
            assert_eq!(
                parse(["--ports".to_string(), bad.to_string()]).unwrap_err(),
                2,
                "{bad}"
            );
        }
    }

    #[test]
    fn engine_and_client_ports_options() {
        let cfg = |args: &[&str]| {
            parse(args.iter().map(|a| a.to_string()))
                .unwrap()
                .config_with_env(|_| None)
                .unwrap()
        };
        let none = cfg(&[]);
        assert!(none.engine_ports.is_empty() && none.client_ports.is_empty());
        let both = cfg(&[
            "--engine-ports",
            "10201-10209",
            "--client-ports",
            "10301,10302-10303",
            "--ports",
            "10101",
        ]);
        assert_eq!(both.engine_ports, (10201..=10209).collect::<Vec<u16>>());
        assert_eq!(both.client_ports, vec![10301, 10302, 10303]);
        assert_eq!(both.ports, vec![10101]);
        // ipyparallel's config spelling, with a Python list as its config files write it
        let ipp = cfg(&[
            "--IPController.engine_ports=[10401, 10402]",
            "--IPController.client_ports=10501-10502",
            "--IPController.ports=10601",
        ]);
        assert_eq!(ipp.engine_ports, vec![10401, 10402]);
        assert_eq!(ipp.client_ports, vec![10501, 10502]);
        assert_eq!(ipp.ports, vec![10601]);
        for bad in ["0", "9-8", "[x]", "65536"] {
            for option in ["--engine-ports", "--client-ports"] {
                assert_eq!(
                    parse([option.to_string(), bad.to_string()]).unwrap_err(),
                    2,
                    "{option} {bad}"
                );
            }
        }
    }

    #[test]
    fn task_hwm_as_corral_and_ipyparallel_spell_it() {
        use crate::config::TaskHwm;
        let cfg = |args: &[&str]| {
            let cli = parse(args.iter().map(|a| a.to_string())).unwrap();
            cli.config_with_env(|_| None).unwrap().task_hwm
        };
        assert_eq!(cfg(&[]), TaskHwm::Auto);
        assert_eq!(cfg(&["--hwm", "4"]), TaskHwm::Fixed(4));
        assert_eq!(cfg(&["--TaskScheduler.hwm=0"]), TaskHwm::Fixed(0));
        assert_eq!(cfg(&["--hwm=auto"]), TaskHwm::Auto);
        assert_eq!(parse(["--hwm=-1".to_string()]).unwrap_err(), 2);
    }

    #[test]
    fn curve_is_off_by_default_and_on_as_ipyparallel_spells_it() {
        let off = parse(Vec::<String>::new()).unwrap();
        assert!(off.config_with_env(|_| None).unwrap().curve.is_none());
        for args in [
            vec!["--enable-curve"],
            vec!["--enable-curve=true"],
            vec!["--IPController.enable_curve=True"],
        ] {
            let cli = parse(args.iter().map(|a| a.to_string())).unwrap();
            let cfg = cli.config_with_env(|_| None).unwrap();
            assert_eq!(cfg.curve.unwrap().public.len(), 40, "{args:?}");
        }
        let cli = parse(["--IPController.enable_curve=False".to_string()]).unwrap();
        assert!(cli.config_with_env(|_| None).unwrap().curve.is_none());
        let env = |name: &str| (name == "IPP_ENABLE_CURVE").then(|| "1".to_string());
        assert!(off.config_with_env(env).unwrap().curve.is_some());
        let half = |name: &str| match name {
            "IPP_ENABLE_CURVE" => Some("1".to_string()),
            "IPP_CURVE_SECRETKEY" => Some("x".repeat(40)),
            _ => None,
        };
        assert!(off.config_with_env(half).is_err());
    }
}
