//! The hub's engine registry: ids, uuids and liveness. An engine is *pending* from its
//! registration until its first heartbeat, then *live* until it is unregistered. Ids count
//! up from 0 and are never reused within one controller's life.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Engine {
    pub id: u32,
    pub uuid: String,
    /// Live = heartbeat seen; until then the engine is only a pending registration.
    pub live: bool,
    pub registered: Instant,
    /// Still pending past the registration timeout (logged once; it is kept waiting).
    pub late: bool,
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
        }
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

    /// Registrations waiting for their first heartbeat, not yet late: the heartbeat
    /// pings fast for them.
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
            .filter(|e| !e.live && !e.late && now.duration_since(e.registered) > timeout)
            .map(|e| {
                e.late = true;
                &*e
            })
            .collect()
    }
}
