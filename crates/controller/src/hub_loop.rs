//! The hub thread: serves the query ROUTER, publishes notifications, and applies events
//! from the other threads to [`HubState`].

use corral_wire::{DigestHistory, Message, Signer};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

use crate::dask::{DaskReply, DaskScheduler};
use crate::events::{EngineEvent, HeartCommand, HubReceiver};
use crate::hub::{Action, HubState};
use crate::sockets::{readable, recv_frames, send_bytes, views};
use crate::stop::Stop;

/// A shutdown_request is answered, then the controller exits this much later (as
/// ipyparallel does), so the reply and notification reach their peers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
const POLL_MS: i64 = 10;

pub(crate) struct HubLoop {
    pub query: zmq::Socket,
    pub notify: zmq::Socket,
    /// A DEALER connected to the task scheduler's client side, for resubmitted tasks
    /// (their replies come back here and are dropped: clients fetch them from the hub).
    pub resubmit: zmq::Socket,
    pub state: HubState,
    pub signer: Signer,
    /// Signatures already accepted on the query ROUTER: a replayed request (the same
    /// signed bytes again, e.g. a captured `purge_request` or `shutdown_request`) is
    /// dropped. The relays keep none; the engines check what reaches them.
    pub digests: DigestHistory,
    pub events: HubReceiver,
    /// One sender per scheduler interested in the engine set.
    pub engine_watchers: Vec<Sender<EngineEvent>>,
    pub heart: Sender<HeartCommand>,
    /// Registrations awaiting a heartbeat: the heartbeat thread pings fast while > 0.
    pub pending: Arc<AtomicUsize>,
    pub stop: Arc<Stop>,
    /// The dask.distributed scheduler process, if a client asked for one; stopped when
    /// this loop ends.
    pub dask: DaskScheduler,
    /// The web dashboard's shared view, when `--dashboard-port` is on.
    pub dashboard: Option<Arc<crate::dashboard::Shared>>,
}

impl HubLoop {
    pub(crate) fn run(mut self) {
        let mut shutdown_at: Option<Instant> = None;
        let mut last_tick = Instant::now();
        let mut last_view: Option<Instant> = None;
        while !self.stop.is_set() {
            if shutdown_at.is_some_and(|t| Instant::now() >= t) {
                info!("controller shutting down");
                self.stop.trigger();
                break;
            }
            let mut items = [self.query.as_poll_item(zmq::POLLIN)];
            if readable(&mut items, POLL_MS) {
                while let Some(frames) = recv_frames(&self.query) {
                    // Events sent before a reply was relayed must count before a query
                    // the client sends after seeing that reply (queue_status, result).
                    self.apply_events(&mut shutdown_at);
                    let actions = self.on_query(&frames);
                    self.perform(actions, &mut shutdown_at);
                }
            }
            while recv_frames(&self.resubmit).is_some() {}
            let replies = self.dask.poll(Instant::now());
            self.send_dask_replies(replies, &mut shutdown_at);
            self.apply_events(&mut shutdown_at);
            let now = Instant::now();
            self.state.records_mut().persist_overdue(now, false);
            if let Some(shared) = &self.dashboard {
                let due = last_view
                    .is_none_or(|t| now.duration_since(t) >= crate::dashboard::VIEW_PERIOD);
                if due && shared.wanted() {
                    last_view = Some(now);
                    let view = self.state.dashboard_view(&shared.watched());
                    shared.publish(view.to_string());
                }
            }
            if now.duration_since(last_tick) > Duration::from_secs(1) {
                last_tick = now;
                let actions = self.state.tick(now);
                self.perform(actions, &mut shutdown_at);
            }
        }
        // Tasks still unfinished reach the database too: `--restore` must know them.
        self.state
            .records_mut()
            .persist_overdue(Instant::now(), true);
        self.dask.shutdown();
    }

    fn send_dask_replies(&mut self, replies: Vec<DaskReply>, shutdown_at: &mut Option<Instant>) {
        let actions = replies
            .into_iter()
            .map(|r| {
                self.state
                    .reply(&r.to.ident, &r.to.parent, r.msg_type, r.content)
            })
            .collect();
        self.perform(actions, shutdown_at);
    }

    /// Applies every event the other threads have sent so far.
    fn apply_events(&mut self, shutdown_at: &mut Option<Instant>) {
        while let Ok(event) = self.events.try_recv() {
            let actions = self.state.handle_event(event);
            self.perform(actions, shutdown_at);
        }
    }

    fn on_query(&mut self, frames: &[zmq::Message]) -> Vec<Action> {
        let msg = match Message::decode(&views(frames), &self.signer) {
            Ok(m) => m,
            Err(error) => {
                warn!(socket = "registration", %error, frames = frames.len(), "dropped invalid message");
                return Vec::new();
            }
        };
        // The signature frame follows the delimiter, which follows the idents.
        let signature = frames.get(msg.idents.len() + 1).map_or(&[][..], |f| &f[..]);
        if let Err(error) = self.digests.check(signature) {
            warn!(socket = "registration", %error, msg_type = msg.msg_type(), "dropped replayed message");
            return Vec::new();
        }
        let Some(ident) = msg.idents.first() else {
            warn!(
                socket = "registration",
                "dropped message without a routing identity"
            );
            return Vec::new();
        };
        let ident = ident.clone();
        self.state.handle_query(&ident, &msg, Instant::now())
    }

    fn perform(&mut self, actions: Vec<Action>, shutdown_at: &mut Option<Instant>) {
        for action in actions {
            match action {
                Action::Reply { ident, mut msg } => {
                    msg.idents = vec![ident];
                    send_bytes(&self.query, msg.encode(&self.signer), "registration");
                }
                Action::Notify(msg) => {
                    send_bytes(&self.notify, msg.encode(&self.signer), "notification");
                }
                Action::Engines(event) => {
                    for w in &self.engine_watchers {
                        if let Err(e) = w.try_send(event.clone()) {
                            error!(error = %e, "engine event lost: a scheduler is not keeping up");
                        }
                    }
                }
                Action::ForgetHeart(uuid) => {
                    if let Err(e) = self.heart.try_send(HeartCommand::Forget(uuid)) {
                        warn!(error = %e, "heartbeat command lost: the heart thread is behind");
                    }
                }
                Action::Resubmit(msg) => {
                    send_bytes(&self.resubmit, msg.encode(&self.signer), "resubmit");
                }
                Action::Shutdown => {
                    shutdown_at.get_or_insert(Instant::now() + SHUTDOWN_GRACE);
                }
                Action::BecomeDask { to, scheduler_args } => {
                    let replies = self.dask.become_dask(to, &scheduler_args);
                    self.send_dask_replies(replies, shutdown_at);
                }
                Action::StopDask(to) => {
                    let replies = self.dask.stop(to);
                    self.send_dask_replies(replies, shutdown_at);
                }
            }
        }
        self.pending
            .store(self.state.pending_count(), Ordering::SeqCst);
    }
}
