//! corral's controller: ipyparallel 9.2's controller in Rust, wire-compatible with stock
//! clients and engines. Each component runs on its own thread with its own sockets; they
//! talk to the hub over channels so that forwarding never waits on it.
//!
//! Modules, by job:
//! - [`config`]: [`ControllerConfig`], what to bind and where the files go.
//! - [`cli`]: the `corral controller` command line, shared by the binary and Python.
//! - [`error`]: [`ControllerError`], what can stop a controller from starting.
//! - [`curve`]: [`CurveKeys`], CurveZMQ encryption (`--enable-curve`) of every socket.
//! - `sockets`: binding on random (or fixed) ports, zero-copy multipart receive, signature checks.
//! - `port_pools`: which fixed port (`--ports`, `--engine-ports`, `--client-ports`) each socket binds.
//! - `reuse`: `--reuse`, the key and ports of the connection files of a previous run.
//! - `stop`: the stop signal every thread polls.
//! - `events`: what the threads tell the hub, and what the hub tells them.
//! - `hub`: registration and query logic, socket-free: takes requests and events,
//!   returns actions. Its state is split by job:
//!   - `registry`: engine ids, uuids and liveness (pending until the first pong);
//!   - `queues`: queue accounting (outstanding, completed, unassigned, history);
//!   - `records`: the task records, filled from the relays' copies, queried in memory;
//!   - `published`: the published data a record keeps (latest snapshot, history);
//!   - `record_queries`: purge, result, db and resubmit queries over those records.
//! - `db`: the durable task database (SQLite), written by its own thread in batches,
//!   read back by `--restore`.
//! - `engine_state`: the engine registry on disk (ipyparallel's engine state file), so
//!   `--restore` takes running engines back with their ids.
//! - `reply`: reply types and ipyparallel's error content, shared by every thread.
//! - `hub_loop`: the hub thread: query ROUTER + notification PUB around `hub`.
//! - `heartbeat`: ping PUB / pong ROUTER; new and stopped hearts.
//! - `relay`: MUX and control relays (ROUTER ↔ ROUTER, routing frames swapped).
//! - `iopub`: engines' IOPub → clients, unchanged: a PUB for stock clients, and
//!   - `iopub_subscribers`: the `corral_iopub` ROUTER, one credit-limited queue per corral client;
//!   - `conflate`: that queue: published data conflated, other output kept up to a budget;
//!   - `frame`: frames shared between sockets without copying (`zmq_msg_copy`).
//! - `task`: the load-balancing task scheduler (leastload).
//! - `dependency`: the task scheduler's rules: after/follow, retries, timeouts.
//! - `broadcast`: the broadcast scheduler (root and leaves in one thread).
//! - `coalesce`: combines a coalescing broadcast's replies into one.
//! - `dask`: the dask.distributed scheduler process of `become_dask_request`.
//! - `dashboard`: the web dashboard (`--dashboard-port`), its own threads; the hub
//!   hands it a view a few times a second (`hub::dashboard_view`).
//!
//! The wiring, all of it in [`Controller::start`]: sockets bound on `config.ip`, one
//! thread each (`corral-*`), `==>` a crossbeam channel between threads.
//!
//! ```text
//!  client-facing sockets      thread              engine-facing sockets
//!  registration ROUTER <----> corral-hub <------> (the same ROUTER: registration)
//!  notification PUB    <----'  ^  |  |
//!     HubEvent (counts, copies)|  |  '==> corral-heart <--> hb_ping PUB / hb_pong ROUTER
//!     from heart, mux, task, ==' |        HeartCommand        (new/stopped hearts ==> hub)
//!     iopub                      '==> EngineEvent (up/down) ==> corral-task, corral-bcast
//!  mux_in ROUTER       <----> corral-mux     <--> mux_out ROUTER
//!  control_in ROUTER   <----> corral-control <--> control_out ROUTER
//!  task_in ROUTER      <----> corral-task    <--> task_out ROUTER  (+ the hub's resubmit DEALER)
//!  broadcast ROUTER    <----> corral-bcast   <--> 2 leaf ROUTERs
//!  iopub PUB           <----- corral-iopub   <--- iopub SUB
//!  corral_iopub ROUTER <---->  (one queue per corral client, credits and acks)
//! ```

pub mod cli;
pub mod config;
pub mod curve;
pub mod error;

mod broadcast;
mod coalesce;
mod conflate;
mod dashboard;
mod dask;
mod db;
mod dependency;
mod engine_state;
mod events;
mod frame;
mod heartbeat;
mod hub;
mod hub_loop;
mod iopub;
mod iopub_subscribers;
mod port_pools;
mod published;
mod queues;
mod record_parts;
mod record_queries;
mod records;
mod registry;
mod relay;
mod reuse;
mod sockets;
mod stop;
mod task;

pub use cli::{main_with_args, run_with_args};
pub use config::ControllerConfig;
pub use curve::CurveKeys;
pub use error::{ControllerError, Result};

use corral_wire::{new_id, ClientConnection, EngineConnection, Session};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::{error, info, warn};

use crate::sockets::{bind_port, bind_random, opt, socket, Listen};
use crate::stop::Stop;

/// Opens the task database of `config.db` (reloading its records into `records` on
/// `--restore`) and starts its writer thread; `None` for an in-memory database.
fn open_task_db(
    config: &ControllerConfig,
    records: &mut records::Records,
) -> Result<Option<JoinHandle<()>>> {
    let db::DbMode::Sqlite(path) = &config.db else {
        if config.restore {
            warn!("--restore with --db memory: there is nothing to restore");
        }
        return Ok(None);
    };
    let failed = |source| ControllerError::Database {
        path: path.display().to_string(),
        source,
    };
    let conn = db::open(path).map_err(failed)?;
    if config.restore {
        let stored = db::load(&conn).map_err(failed)?;
        info!(records = stored.len(), path = %path.display(), "restored task records");
        records.restore(stored);
    } else {
        // A fresh controller starts with empty records, as the database must then too.
        conn.execute("DELETE FROM tasks", []).map_err(failed)?;
    }
    info!(path = %path.display(), "task records kept in SQLite");
    let (store, thread) = db::start_writer(conn).map_err(|source| ControllerError::Spawn {
        thread: "corral-db",
        source,
    })?;
    records.set_store(store);
    Ok(Some(thread))
}

/// Keeps the engine registry in `config.engine_state`; on `--restore`, first takes back the
/// engines it names. A missing or damaged file restores no engines (logged): the
/// controller starts anyway, since new engines can still register.
fn open_engine_state(config: &ControllerConfig, hub: hub::HubState) -> hub::HubState {
    let Some(path) = &config.engine_state else {
        return hub;
    };
    let mut hub = hub.with_engine_state(path.clone());
    if !config.restore {
        // A fresh controller has no engines; a stale file must not be restored later.
        hub.save_engine_state();
        return hub;
    }
    match engine_state::load(path) {
        Ok(Some(state)) => {
            hub.restore_engines(&state, config.restore_timeout(), std::time::Instant::now())
        }
        Ok(None) => info!(path = %path.display(), "no engine state file: no engines to restore"),
        Err(error) => error!(%error, "engine state file refused"),
    }
    hub
}

/// The body of one controller thread.
type ThreadMain = Box<dyn FnOnce() + Send>;

/// A running controller. Dropping it stops it too; [`Controller::stop`] says so out loud.
pub struct Controller {
    client: ClientConnection,
    engine: EngineConnection,
    files: Vec<PathBuf>,
    /// `--reuse`: the files stay on stop, for the next controller.
    keep_files: bool,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Binds every socket on random ports of `config.ip`, writes both connection files
    /// (mode 0600) and starts the threads. Errors only for local problems (bind, files).
    pub fn start(config: ControllerConfig) -> Result<Controller> {
        let reused = if config.reuse_files {
            reuse::read(&config.location)
        } else {
            None
        };
        let key = match &reused {
            Some(r) => r.key.clone(),
            None => config.key.clone().unwrap_or_else(new_id),
        };
        // Reused files fix every port (in binding order); else the three `--*ports` pools.
        let ports = match reused {
            Some(r) => port_pools::PortPools::new(r.ports, &[], &[]),
            None => port_pools::PortPools::new(
                config.ports.clone(),
                &config.engine_ports,
                &config.client_ports,
            ),
        };
        if key.is_empty() {
            if config.curve.is_some() {
                // ipyparallel's own `enable_curve` mode: CURVE encrypts, signing is off.
                warn!("the cluster key is empty: messages are not signed; CurveZMQ encrypts them, and only peers that have curve_serverkey (in the connection files) can connect");
            } else if !config.insecure {
                return Err(ControllerError::EmptyKey);
            } else {
                warn!("!!! INSECURE: the cluster key is empty; messages are NOT signed and anyone who can reach these ports can run code on the engines !!!");
            }
        }
        if let Some(curve) = &config.curve {
            if !curve::available() {
                return Err(curve::unavailable());
            }
            info!(curve_serverkey = %curve.public, "CurveZMQ encryption on");
        }
        let ip = config.ip.as_str();
        let at = Listen {
            ip,
            curve: config.curve.as_ref(),
            ports: std::cell::RefCell::new(ports),
        };
        let ctx = zmq::Context::new();
        use zmq::SocketType::{PUB, ROUTER, SUB};
        let max = config.max_message_size;
        let peer = |kind, name| peer_socket(&ctx, kind, name, max);
        let hwm = config.hwm;
        let relay = |name, identity: &[u8]| relay_socket(&ctx, &at, name, identity, max, hwm);

        let query = peer(ROUTER, "registration")?;
        let registration = bind_port(&query, &at, "registration")?;
        let (notify, notification) = bind_random(&ctx, PUB, &at, "notification")?;
        let (hb_ping_sock, hb_ping) = bind_random(&ctx, PUB, &at, "hb_ping")?;
        let hb_pong_sock = peer(ROUTER, "hb_pong")?;
        let hb_pong = bind_port(&hb_pong_sock, &at, "hb_pong")?;
        let (mux_in, mux_client) = relay("mux_in", b"mux_in")?;
        let (mux_out, mux_engine) = relay("mux_out", b"mux_out")?;
        let (control_in, control_client) = relay("control_in", b"control_in")?;
        let (control_out, control_engine) = relay("control_out", b"control_out")?;
        let (task_in, task_client) = relay("task_in", b"task_in")?;
        let (task_out, task_engine) = relay("task_out", b"task_out")?;
        let iopub_sub = peer(SUB, "iopub_in")?;
        opt("iopub_in", iopub_sub.set_rcvhwm(hwm))?;
        opt("iopub_in", iopub_sub.set_subscribe(b""))?;
        let iopub_engine = bind_port(&iopub_sub, &at, "iopub_in")?;
        let iopub_pub = socket(&ctx, PUB, "iopub_out")?;
        opt("iopub_out", iopub_pub.set_sndhwm(hwm))?;
        let iopub_client = bind_port(&iopub_pub, &at, "iopub_out")?;
        let (bcast_in, bcast_client) = relay("broadcast", b"sub_scheduler_0")?;
        let (leaf0, leaf0_port) = relay("broadcast_leaf", b"sub_scheduler_00")?;
        let (leaf1, leaf1_port) = relay("broadcast_leaf", b"sub_scheduler_01")?;
        // Bound last, so that ipyparallel's 15 `--ports` keep their meaning.
        // corral clients' IOPub: ROUTER_MANDATORY so a departed client is an error, not a
        // silent sink; its own credits (not this HWM) bound what each client holds.
        let iopub_router = peer(ROUTER, "corral_iopub")?;
        opt("corral_iopub", iopub_router.set_router_mandatory(true))?;
        opt("corral_iopub", iopub_router.set_sndhwm(hwm))?;
        let corral_iopub = bind_port(&iopub_router, &at, "corral_iopub")?;

        let stop = Arc::new(Stop::default());
        let dashboard_shared = Arc::new(dashboard::Shared::default());
        let dashboard = match &config.dashboard {
            Some(d) => {
                let token = d.token.clone().unwrap_or_else(dashboard::new_token);
                let server = dashboard::Dashboard::bind(
                    ip,
                    d.port,
                    token.clone(),
                    dashboard_shared.clone(),
                    stop.clone(),
                )?;
                let host = if ip == "0.0.0.0" || ip == "*" {
                    config
                        .advertised_location
                        .clone()
                        .or_else(hostname)
                        .unwrap_or_else(|| ip.to_string())
                } else {
                    ip.to_string()
                };
                let url = format!("http://{host}:{}/?token={token}", server.port());
                Some((server, url))
            }
            None => None,
        };

        let location = config
            .advertised_location
            .clone()
            .or_else(hostname)
            .unwrap_or_else(|| ip.to_string());
        let interface = format!("tcp://{ip}");
        let client = ClientConnection {
            ssh: String::new(),
            interface: interface.clone(),
            registration,
            control: control_client,
            mux: mux_client,
            task: task_client,
            task_scheme: "leastload".into(),
            iopub: iopub_client,
            corral_iopub: Some(corral_iopub),
            corral_dashboard_url: dashboard.as_ref().map(|(_, url)| url.clone()),
            notification,
            broadcast: bcast_client,
            key: key.clone(),
            curve_serverkey: config.curve.as_ref().map(|c| c.public.clone()),
            location: location.clone(),
            pack: "json".into(),
            unpack: "json".into(),
            signature_scheme: "hmac-sha256".into(),
        };
        let engine = EngineConnection {
            ssh: String::new(),
            interface: interface.clone(),
            registration,
            control: control_engine,
            mux: mux_engine,
            task: task_engine,
            iopub: iopub_engine,
            hb_ping,
            hb_pong,
            broadcast: vec![leaf0_port, leaf1_port],
            key: key.clone(),
            curve_serverkey: config.curve.as_ref().map(|c| c.public.clone()),
            location,
            pack: "json".into(),
            unpack: "json".into(),
            signature_scheme: "hmac-sha256".into(),
        };
        // What stock ipyparallel puts in registration replies: interface and engine ports.
        let connection_info = json!({
            "interface": interface,
            "registration": registration,
            "control": control_engine,
            "mux": mux_engine,
            "task": task_engine,
            "iopub": iopub_engine,
            "hb_ping": hb_ping,
            "hb_pong": hb_pong,
            "broadcast": [leaf0_port, leaf1_port],
        });

        let mut files = Vec::new();
        if config.write_files {
            let client_path = config.location.connection_file("client");
            let engine_path = config.location.connection_file("engine");
            client.write(&client_path)?;
            files.push(client_path);
            if let Err(e) = engine.write(&engine_path) {
                remove_files(&files);
                return Err(e.into());
            }
            files.push(engine_path);
        }

        let session = Arc::new(Session::new(key.as_bytes()));
        let signer = session.signer.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let (hub_tx, hub_rx) = events::hub_channel(events::HUB_EVENTS, events::RECORD_BYTES);
        let (heart_tx, heart_rx) = crossbeam_channel::bounded(events::ENGINE_EVENTS);
        let (task_eng_tx, task_eng_rx) = crossbeam_channel::bounded(events::ENGINE_EVENTS);
        let (bcast_eng_tx, bcast_eng_rx) = crossbeam_channel::bounded(events::ENGINE_EVENTS);

        let resubmit = sockets::socket(&ctx, zmq::SocketType::DEALER, "resubmit")?;
        sockets::opt("resubmit", resubmit.set_identity(b"corral_hub_resubmit"))?;
        if let Some(curve) = &config.curve {
            sockets::opt("resubmit", curve.connect_to_self(&resubmit))?;
        }
        let task_ip = if ip == "0.0.0.0" || ip == "*" {
            "127.0.0.1"
        } else {
            ip
        };
        resubmit
            .connect(&format!("tcp://{task_ip}:{task_client}"))
            .map_err(|source| ControllerError::Socket {
                socket: "resubmit",
                action: "connect",
                source,
            })?;
        let mut hub_state = hub::HubState::new(
            Session::new(key.as_bytes()),
            config.hb_period_ms,
            config.registration_timeout(),
            connection_info,
        )
        .with_restart_grace(config.restart_grace)
        .with_data_preview(config.dashboard.is_some())
        .with_data_history(config.data_history);
        let db_writer = open_task_db(&config, hub_state.records_mut())?;
        // After the records: engines that did not come back fail their restored tasks.
        let mut hub_state = open_engine_state(&config, hub_state);
        if config.restore {
            hub_state.fail_orphaned_tasks();
        }
        // Restored engines are pending: the heart pings fast for them from the start.
        pending.store(
            hub_state.pending_count(),
            std::sync::atomic::Ordering::SeqCst,
        );
        let hub = hub_loop::HubLoop {
            resubmit,
            query,
            notify,
            state: hub_state,
            signer: signer.clone(),
            digests: corral_wire::DigestHistory::default(),
            events: hub_rx,
            engine_watchers: vec![task_eng_tx, bcast_eng_tx],
            heart: heart_tx,
            pending: pending.clone(),
            stop: stop.clone(),
            dask: dask::DaskScheduler::new(config.python(), config.ip.clone()),
            dashboard: dashboard.as_ref().map(|_| dashboard_shared),
        };
        let monitors = vec![
            (
                heartbeat::Watched::HbPong,
                sockets::monitor(&ctx, &hb_pong_sock, "hb_pong")?,
            ),
            (
                heartbeat::Watched::Control,
                sockets::monitor(&ctx, &control_out, "control_out")?,
            ),
        ];
        let heart = heartbeat::HeartLoop {
            ping: hb_ping_sock,
            monitors,
            pong: hb_pong_sock,
            hearts: heartbeat::Hearts::new(
                Duration::from_millis(config.hb_period_ms),
                config.hb_max_misses,
            ),
            period: Duration::from_millis(config.hb_period_ms),
            fast_period: Duration::from_millis(config.fast_ping_ms.min(config.hb_period_ms)),
            pending,
            commands: heart_rx,
            hub: hub_tx.clone(),
            stop: stop.clone(),
        };
        let mux = relay::Relay {
            name: "mux",
            client: mux_in,
            engine: mux_out,
            session: session.clone(),
            hub: Some(hub_tx.clone()),
            stop: stop.clone(),
        };
        let control = relay::Relay {
            name: "control",
            client: control_in,
            engine: control_out,
            session: session.clone(),
            hub: None,
            stop: stop.clone(),
        };
        let iopub = iopub::IopubRelay {
            sub: iopub_sub,
            publisher: iopub_pub,
            subscribers: iopub_subscribers::Subscribers::new(
                iopub_router,
                session.clone(),
                iopub_subscribers::Limits {
                    window: config.iopub_window,
                    budget: config.iopub_budget,
                },
            ),
            signer,
            hub: hub_tx.clone(),
            stop: stop.clone(),
        };
        let task = task::TaskScheduler {
            client: task_in,
            engine: task_out,
            session: session.clone(),
            engines_rx: task_eng_rx,
            hub: hub_tx,
            stop: stop.clone(),
            hwm: config.task_hwm,
        };
        let bcast = broadcast::Broadcast {
            client: bcast_in,
            leaves: vec![leaf0, leaf1],
            session,
            engines_rx: bcast_eng_rx,
            coalescer: coalesce::Coalescer::default(),
            stop: stop.clone(),
        };

        let mut controller = Controller {
            client,
            engine,
            files,
            keep_files: config.reuse_files,
            stop,
            threads: db_writer.into_iter().collect(),
        };
        let mut spawns: Vec<(&'static str, ThreadMain)> = vec![
            ("corral-hub", Box::new(move || hub.run())),
            ("corral-heart", Box::new(move || heart.run())),
            ("corral-mux", Box::new(move || mux.run())),
            ("corral-control", Box::new(move || control.run())),
            ("corral-iopub", Box::new(move || iopub.run())),
            ("corral-task", Box::new(move || task.run())),
            ("corral-bcast", Box::new(move || bcast.run())),
        ];
        if let Some((server, url)) = dashboard {
            // Logged as Jupyter logs its URL: the token is in it, for the user to click.
            info!("dashboard at {url}");
            spawns.push(("corral-dashboard", Box::new(move || server.run())));
        }
        for (name, f) in spawns {
            match std::thread::Builder::new().name(name.into()).spawn(f) {
                Ok(h) => controller.threads.push(h),
                Err(source) => {
                    controller.shutdown();
                    return Err(ControllerError::Spawn {
                        thread: name,
                        source,
                    });
                }
            }
        }
        info!(
            registration,
            client_file = ?controller.files.first(),
            "controller started"
        );
        Ok(controller)
    }

    pub fn client_connection(&self) -> &ClientConnection {
        &self.client
    }

    pub fn engine_connection(&self) -> &EngineConnection {
        &self.engine
    }

    /// Paths of the connection files this controller wrote (deleted on stop).
    pub fn connection_files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Stops every thread, waits for them and deletes the connection files.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks until the controller was told to stop (a client's `shutdown_request`, or
    /// [`Controller::stop`] from elsewhere). Call `stop` afterwards to clean up.
    pub fn wait(&self) {
        self.stop.wait();
    }

    /// Like [`Controller::wait`] with a timeout; true when the controller is stopping.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.stop.wait_timeout(timeout)
    }

    fn shutdown(&mut self) {
        self.stop.trigger();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("a controller thread panicked");
            }
        }
        if !self.keep_files {
            remove_files(&self.files);
        }
        self.files.clear();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A socket that receives from clients or engines: frames over `max_message_size`
/// bytes drop the sender's connection before anything is buffered or verified.
fn peer_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    name: &'static str,
    max_message_size: i64,
) -> Result<zmq::Socket> {
    let sock = socket(ctx, kind, name)?;
    opt(name, sock.set_maxmsgsize(max_message_size))?;
    Ok(sock)
}

/// A ROUTER with an identity (what engines see as the relay's id), ROUTER_MANDATORY so
/// a message to an unknown peer is an error instead of silent loss, and generous HWMs.
fn relay_socket(
    ctx: &zmq::Context,
    at: &Listen,
    name: &'static str,
    identity: &[u8],
    max_message_size: i64,
    hwm: i32,
) -> Result<(zmq::Socket, u16)> {
    let sock = peer_socket(ctx, zmq::SocketType::ROUTER, name, max_message_size)?;
    opt(name, sock.set_identity(identity))?;
    opt(name, sock.set_router_mandatory(true))?;
    opt(name, sock.set_sndhwm(hwm))?;
    opt(name, sock.set_rcvhwm(hwm))?;
    let port = bind_port(&sock, at, name)?;
    Ok((sock, port))
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            warn!(path = %f.display(), error = %e, "could not delete connection file");
        }
    }
}

/// The machine's host name (ipyparallel's `location`), from the kernel.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}
