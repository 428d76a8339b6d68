//! The web dashboard (`--dashboard-port`): one HTTP + WebSocket port on the controller's
//! `--ip`, guarded by a token, showing engines, tasks and a watched task's published data.
//!
//! Threads, all plain std threads (tiny_http's accept thread, ours, one per WebSocket);
//! a whole async runtime would be more than a few browsers need:
//! - the hub thread rebuilds the view ([`crate::hub::HubState::dashboard_view`]) a few
//!   times a second into [`Shared`], reading which tasks browsers watch from it: the hub
//!   never waits on a browser;
//! - `corral-dashboard` serves the page and the JSON view, and upgrades `/ws`;
//! - each WebSocket thread pushes the newest view when it changed (newest wins: a slow
//!   browser skips views, it never queues them).
//!
//! - `auth`: the token and origin checks.

mod auth;

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Request, Response, StatusCode};
use tracing::{debug, warn};
use tungstenite::protocol::Role;
use tungstenite::{Message as WsMessage, WebSocket};

use crate::error::{ControllerError, Result};
use crate::stop::Stop;

pub(crate) use auth::new_token;

/// How often the hub rebuilds the view, and how often a WebSocket looks for a new one:
/// a few updates a second at most.
pub(crate) const VIEW_PERIOD: Duration = Duration::from_millis(200);

const PAGE: &str = include_str!("page.html");

/// What the hub thread and the dashboard threads share.
#[derive(Default)]
pub(crate) struct Shared {
    /// The newest view (JSON text) and its version (0: none yet).
    view: Mutex<(u64, Arc<String>)>,
    /// What each open WebSocket watches (a task msg_id, or nothing).
    watched: Mutex<HashMap<u64, Option<String>>>,
    next_socket: AtomicU64,
    /// Set by a `/api/view` request: build a view even though no WebSocket is open.
    asked: AtomicBool,
}

impl Shared {
    /// The msg_ids some browser watches: their published data goes into the view.
    pub(crate) fn watched(&self) -> HashSet<String> {
        self.watched.lock().values().flatten().cloned().collect()
    }

    /// Whether anyone looks: the hub builds no view for nobody.
    pub(crate) fn wanted(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed) || !self.watched.lock().is_empty()
    }

    /// Called by the hub with a new view; one equal to the last is no news (browsers
    /// are not sent it).
    pub(crate) fn publish(&self, view: String) {
        let mut v = self.view.lock();
        if v.0 == 0 || *v.1 != view {
            *v = (v.0 + 1, Arc::new(view));
        }
    }

    fn latest(&self) -> (u64, Arc<String>) {
        let v = self.view.lock();
        (v.0, v.1.clone())
    }
}

/// The dashboard's HTTP server, bound and ready to run on its own thread.
pub(crate) struct Dashboard {
    server: tiny_http::Server,
    token: String,
    shared: Arc<Shared>,
    stop: Arc<Stop>,
}

impl Dashboard {
    /// Binds `ip:port` (0: a free port).
    pub(crate) fn bind(
        ip: &str,
        port: u16,
        token: String,
        shared: Arc<Shared>,
        stop: Arc<Stop>,
    ) -> Result<Dashboard> {
        let server =
            tiny_http::Server::http((ip, port)).map_err(|e| ControllerError::Dashboard {
                addr: format!("{ip}:{port}"),
                reason: e.to_string(),
            })?;
        Ok(Dashboard {
            server,
            token,
            shared,
            stop,
        })
    }

    /// The port actually bound.
    pub(crate) fn port(&self) -> u16 {
        self.server
            .server_addr()
            .to_ip()
            .map_or(0, |addr| addr.port())
    }

    pub(crate) fn run(self) {
        while !self.stop.is_set() {
            match self.server.recv_timeout(Duration::from_millis(100)) {
                Ok(Some(request)) => self.handle(request),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "dashboard: could not accept a request"),
            }
        }
    }

    fn handle(&self, request: Request) {
        let url = request.url().to_string();
        let (path, query) = auth::split_url(&url);
        let header = |name: &'static str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str().to_string())
        };
        let cookie = header("Cookie");
        let cookie_name = auth::cookie_name(self.port());
        if !auth::authorized(&self.token, &cookie_name, query, cookie.as_deref()) {
            debug!(%path, "dashboard: request without the token refused");
            let text = "403 Forbidden: this dashboard needs its token. Open the URL that the \
                        controller logged, or the client connection file's corral_dashboard_url.\n";
            respond(
                request,
                text_response(403, text, "text/plain; charset=utf-8"),
            );
            return;
        }
        match path {
            "/" => {
                let cookie = format!(
                    "{}={}; Path=/; HttpOnly; SameSite=Strict",
                    cookie_name, self.token
                );
                let response = text_response(200, PAGE, "text/html; charset=utf-8")
                    .with_header(header_of("Set-Cookie", &cookie));
                respond(request, response);
            }
            "/api/view" => {
                let view = self.fresh_view();
                respond(request, text_response(200, &view, "application/json"));
            }
            "/ws" => {
                let origin_ok =
                    auth::same_origin(header("Origin").as_deref(), header("Host").as_deref());
                match header("Sec-WebSocket-Key") {
                    Some(key) if origin_ok => {
                        let watch = auth::query_param(query, "watch").filter(|w| !w.is_empty());
                        self.upgrade(request, &key, watch);
                    }
                    Some(_) => respond(
                        request,
                        text_response(403, "cross-origin WebSocket refused\n", "text/plain"),
                    ),
                    None => respond(
                        request,
                        text_response(400, "expected a WebSocket upgrade\n", "text/plain"),
                    ),
                }
            }
            _ => respond(request, text_response(404, "not found\n", "text/plain")),
        }
    }

    /// A view built after this request arrived (waiting for the hub's next one, at most
    /// a second; then the latest there is).
    fn fresh_view(&self) -> Arc<String> {
        let (before, _) = self.shared.latest();
        self.shared.asked.store(true, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let (version, view) = self.shared.latest();
            if version != before || std::time::Instant::now() > deadline {
                return view;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Answers the WebSocket handshake and starts the thread that pushes views to it.
    fn upgrade(&self, request: Request, key: &str, watch: Option<String>) {
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = Response::empty(StatusCode(101))
            .with_header(header_of("Sec-WebSocket-Accept", &accept));
        let stream = request.upgrade("websocket", response);
        let id = self.shared.next_socket.fetch_add(1, Ordering::Relaxed);
        self.shared.watched.lock().insert(id, watch);
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("corral-dashboard-ws".into())
            .spawn(move || {
                let socket = WebSocket::from_raw_socket(stream, Role::Server, None);
                push_views(socket, &shared, &stop);
                shared.watched.lock().remove(&id);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "dashboard: cannot start a WebSocket thread");
            self.shared.watched.lock().remove(&id);
        }
    }
}

/// Sends each new view until the browser goes away or the controller stops. The socket
/// is only written: a browser changes what it watches by opening a new one.
fn push_views(
    mut socket: WebSocket<Box<dyn tiny_http::ReadWrite + Send>>,
    shared: &Shared,
    stop: &Stop,
) {
    let mut sent = 0;
    while !stop.is_set() {
        let (version, view) = shared.latest();
        if version != sent {
            if let Err(e) = socket.send(WsMessage::text(view.as_str())) {
                debug!(error = %e, "dashboard: WebSocket closed");
                return;
            }
            sent = version;
        }
        std::thread::sleep(VIEW_PERIOD / 2);
    }
    let _ = socket.close(None);
    let _ = socket.flush();
}

fn header_of(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn text_response(status: u16, body: &str, content_type: &str) -> Response<Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header_of("Content-Type", content_type))
        .with_header(header_of("Cache-Control", "no-store"))
}

fn respond<R: std::io::Read>(request: Request, response: Response<R>) {
    if let Err(e) = request.respond(response) {
        debug!(error = %e, "dashboard: could not answer a request");
    }
}
