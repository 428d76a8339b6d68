//! `--reuse` (ipyparallel's `reuse_files`): a controller started again on the connection
//! files of the one before it binds the same ports with the same key, so engines and
//! clients holding those files reach it again; the files are then left in place on stop.

use corral_wire::{ClientConnection, EngineConnection, ProfileLocation};
use tracing::{info, warn};

/// What a reusing controller takes from the files: the key and every port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reused {
    pub key: String,
    /// In the order [`crate::Controller::start`] binds its sockets.
    pub ports: Vec<u16>,
}

/// The previous controller's key and ports, or `None` (logged) when its files are missing
/// or unreadable; the controller then starts afresh and writes new files.
pub(crate) fn read(location: &ProfileLocation) -> Option<Reused> {
    let client_path = location.connection_file("client");
    let engine_path = location.connection_file("engine");
    let files = ClientConnection::read(&client_path)
        .and_then(|c| EngineConnection::read(&engine_path).map(|e| (c, e)));
    match files {
        Ok((client, engine)) if client.key == engine.key => {
            info!(path = %client_path.display(), "reusing the connection files' key and ports");
            Some(Reused {
                key: client.key.clone(),
                ports: ports_in_bind_order(&client, &engine),
            })
        }
        Ok(_) => {
            warn!("--reuse: the client and engine files have different keys; starting afresh");
            None
        }
        Err(e) => {
            info!(error = %e, "--reuse: no connection files to reuse yet; starting afresh");
            None
        }
    }
}

/// The files' ports in the order `Controller::start` binds: registration, notification,
/// hb_ping, hb_pong, mux (client, engine), control (client, engine), task (client,
/// engine), iopub (engine, client), broadcast (client), broadcast leaves, corral_iopub.
pub(crate) fn ports_in_bind_order(c: &ClientConnection, e: &EngineConnection) -> Vec<u16> {
    let mut ports = vec![
        c.registration,
        c.notification,
        e.hb_ping,
        e.hb_pong,
        c.mux,
        e.mux,
        c.control,
        e.control,
        c.task,
        e.task,
        e.iopub,
        c.iopub,
        c.broadcast,
    ];
    ports.extend(&e.broadcast);
    ports.extend(c.corral_iopub);
    ports
}
