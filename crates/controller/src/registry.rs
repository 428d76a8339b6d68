//! The hub's engine registry: ids, uuids and liveness. An engine is *pending* from its
//! registration until its first heartbeat, then *live* until it is unregistered. Ids count
//! up from 0 and are never reused within one controller's life, nor across a `--restore`
//! (the counter is restored with the engines).
//!
//! A restored engine ([`Registry::restore`]) is pending like a registration, without one:
//! its first heartbeat makes it live again with its old id; silence past the restore
//! timeout means it died while the controller was away.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::engine_state::EngineState;

#[derive(Debug)]
pub(crate) struct Engine {
    pub id: u32,
    pub uuid: String,
    /// Live = heartbeat seen; until then the engine is only a pending registration.
    pub live: bool,
    pub registered: Instant,
    /// Still pending past the registration timeout (logged once; it is kept waiting).
    pub late: bool,
    /// Taken from the engine state file by `--restore`, not (yet) heard from: it is
    /// dropped if its heart does not answer within the restore timeout.
    pub restored: bool,
}

#[derive(Debug)]
pub(crate) struct Registry {
    registration_timeout: Duration,
    engines: BTreeMap<u32, Engine>,
    by_uuid: HashMap<String, u32>,
    used_ids: BTreeSet<u32>,
    next_id: u32,
    /// Hearts reported before their registration (a restarted engine re-registering).
    early_hearts: HashSet<String>,
    /// How long a restored engine may stay silent before it counts as dead.
    restore_timeout: Duration,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refused {
    UuidInUse,
}

impl Registry {
    pub(crate) fn new(registration_timeout: Duration) -> Self {
        Registry {
            registration_timeout,
            engines: BTreeMap::new(),
            by_uuid: HashMap::new(),
            used_ids: BTreeSet::new(),
            next_id: 0,
            early_hearts: HashSet::new(),
            restore_timeout: Duration::ZERO,
        }
    }

    /// Takes back the engines of an earlier controller (`--restore`) as pending under
    /// their old ids, and its id counter, so new engines get ids that do not clash.
    pub(crate) fn restore(&mut self, state: &EngineState, timeout: Duration, now: Instant) {
        self.restore_timeout = timeout;
        for (&id, uuid) in &state.engines {
            if self.by_uuid.contains_key(uuid) || self.used_ids.contains(&id) {
                continue;
            }
            self.used_ids.insert(id);
            self.by_uuid.insert(uuid.clone(), id);
            self.engines.insert(
                id,
                Engine {
                    id,
                    uuid: uuid.clone(),
                    live: false,
                    registered: now,
                    late: false,
                    restored: true,
                },
            );
        }
        self.next_id = self.next_id.max(state.next_id);
    }

    /// What the engine state file keeps: every registered engine (live, or restored and
    /// not yet heard from) and the id counter. Registrations still waiting for their first
    /// heartbeat are left out, as ipyparallel leaves them out.
    pub(crate) fn state(&self) -> EngineState {
        EngineState {
            engines: self
                .engines
                .values()
                .filter(|e| e.live || e.restored)
                .map(|e| (e.id, e.uuid.clone()))
                .collect(),
            next_id: self
                .used_ids
                .iter()
                .next_back()
                .map_or(self.next_id, |&max| self.next_id.max(max + 1)),
        }
    }

    /// Restored engines silent past the restore timeout: they died meanwhile.
    pub(crate) fn restored_silent(&self, now: Instant) -> Vec<u32> {
        self.engines
            .values()
            .filter(|e| {
                e.restored && !e.live && now.duration_since(e.registered) > self.restore_timeout
            })
            .map(|e| e.id)
            .collect()
    }

    /// Adds a pending engine, honouring a requested id when it is free. Returns its id and
    /// whether its heart already beats (so it is live at once).
    pub(crate) fn register(
        &mut self,
        uuid: &str,
        requested: Option<u32>,
        now: Instant,
    ) -> Result<(u32, bool), Refused> {
        if self.by_uuid.contains_key(uuid) {
            return Err(Refused::UuidInUse);
        }
        let id = match requested {
            Some(id) if !self.used_ids.contains(&id) => id,
            _ => {
                while self.used_ids.contains(&self.next_id) {
                    self.next_id += 1;
                }
                self.next_id
            }
        };
        self.used_ids.insert(id);
        let beating = self.early_hearts.remove(uuid);
        self.engines.insert(
            id,
            Engine {
                id,
                uuid: uuid.to_string(),
                live: false,
                registered: now,
                late: false,
                restored: false,
            },
        );
        self.by_uuid.insert(uuid.to_string(), id);
        Ok((id, beating))
    }

    /// Marks a pending engine live; `None` when it is unknown or already live.
    pub(crate) fn make_live(&mut self, id: u32) -> Option<&Engine> {
        let e = self.engines.get_mut(&id)?;
        if e.live {
            return None;
        }
        e.live = true;
        Some(e)
    }

    /// A first pong from `uuid`: its id when that makes a pending engine live. A heart
    /// nobody registered yet is remembered for its registration.
    pub(crate) fn heart_started(&mut self, uuid: &str) -> Option<u32> {
        match self.by_uuid.get(uuid).copied() {
            Some(id) if !self.engines[&id].live => Some(id),
            Some(_) => None,
            None => {
                self.early_hearts.insert(uuid.to_string());
                None
            }
        }
    }

    /// A heart stopped: forget an early heart; the engine's id if one is registered.
    pub(crate) fn heart_stopped(&mut self, uuid: &str) -> Option<u32> {
        self.early_hearts.remove(uuid);
        self.id_of(uuid)
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<Engine> {
        let e = self.engines.remove(&id)?;
        self.by_uuid.remove(&e.uuid);
        Some(e)
    }

    pub(crate) fn id_of(&self, uuid: &str) -> Option<u32> {
        self.by_uuid.get(uuid).copied()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Engine> {
        self.engines.get(&id)
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = &Engine> {
        self.engines.values().filter(|e| e.live)
    }

    /// Registrations (and restored engines) waiting for their first heartbeat, not yet
    /// late: the heartbeat pings fast for them.
    pub(crate) fn pending_count(&self) -> usize {
        self.engines.values().filter(|e| !e.live && !e.late).count()
    }

    /// Pending registrations that just passed the registration timeout, now marked late.
    /// They stay registered: a machine busy starting hundreds of engines can delay a first
    /// heartbeat by minutes, and ipyparallel's purge of such engines made them exit.
    pub(crate) fn newly_late(&mut self, now: Instant) -> Vec<&Engine> {
        let timeout = self.registration_timeout;
        self.engines
            .values_mut()
            .filter(|e| {
                !e.live && !e.late && !e.restored && now.duration_since(e.registered) > timeout
            })
            .map(|e| {
                e.late = true;
                &*e
            })
            .collect()
    }
}
