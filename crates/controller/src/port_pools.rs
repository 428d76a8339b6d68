//! Fixed ports for the controller's sockets, as ipcontroller hands them out: a socket that
//! engines reach takes the next port of `--engine-ports`, one that clients reach the next
//! of `--client-ports`, each in ipyparallel's order (`IPController.next_port`); a socket
//! whose pool is empty or used up takes the next of the common `--ports` (in the order the
//! controller binds), and past that a random port.

use std::collections::{HashMap, VecDeque};

/// The engine-facing sockets in the order ipcontroller fills them from `engine_ports`
/// (registration, control, mux, task, iopub, hb_ping, hb_pong, the broadcast leaves).
/// Names are the ones `Controller::start` binds with; "broadcast_leaf" is bound twice.
const ENGINE_ORDER: [&str; 9] = [
    "registration",
    "control_out",
    "mux_out",
    "task_out",
    "iopub_in",
    "hb_ping",
    "hb_pong",
    "broadcast_leaf",
    "broadcast_leaf",
];

/// The client-facing sockets in the order ipcontroller fills them from `client_ports`
/// (control, mux, task, iopub, notification, broadcast); corral clients' own IOPub last,
/// since ipyparallel has no such socket.
const CLIENT_ORDER: [&str; 7] = [
    "control_in",
    "mux_in",
    "task_in",
    "iopub_out",
    "notification",
    "broadcast",
    "corral_iopub",
];

/// The fixed ports not yet taken: per socket name from the engine and client pools, and
/// the common pool in binding order.
#[derive(Debug, Default)]
pub(crate) struct PortPools {
    dedicated: HashMap<&'static str, VecDeque<u16>>,
    common: VecDeque<u16>,
}

impl PortPools {
    /// `common` is `--ports` (or the ports of reused files, in binding order); `engine` and
    /// `client` are `--engine-ports` and `--client-ports`. Ports beyond what a pool's
    /// sockets need are unused, as in ipcontroller.
    pub(crate) fn new(common: Vec<u16>, engine: &[u16], client: &[u16]) -> PortPools {
        let mut dedicated: HashMap<&'static str, VecDeque<u16>> = HashMap::new();
        for (order, pool) in [(&ENGINE_ORDER[..], engine), (&CLIENT_ORDER[..], client)] {
            for (name, port) in order.iter().zip(pool) {
                dedicated.entry(name).or_default().push_back(*port);
            }
        }
        PortPools {
            dedicated,
            common: common.into(),
        }
    }

    /// The port for the socket `name` about to be bound, `None` for a random one.
    pub(crate) fn next(&mut self, name: &str) -> Option<u16> {
        self.dedicated
            .get_mut(name)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.common.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in the order `Controller::start` binds its sockets.
    const BIND_ORDER: [&str; 16] = [
        "registration",
        "notification",
        "hb_ping",
        "hb_pong",
        "mux_in",
        "mux_out",
        "control_in",
        "control_out",
        "task_in",
        "task_out",
        "iopub_in",
        "iopub_out",
        "broadcast",
        "broadcast_leaf",
        "broadcast_leaf",
        "corral_iopub",
    ];

    fn assign(pools: &mut PortPools) -> HashMap<usize, Option<u16>> {
        (0..BIND_ORDER.len())
            .map(|i| (i, pools.next(BIND_ORDER[i])))
            .collect()
    }

    #[test]
    fn common_ports_alone_go_in_binding_order() {
        let mut pools = PortPools::new((100..103).collect(), &[], &[]);
        let got = assign(&mut pools);
        assert_eq!(
            (got[&0], got[&1], got[&2]),
            (Some(100), Some(101), Some(102))
        );
        assert!((3..16).all(|i| got[&i].is_none()), "the rest are random");
    }

    #[test]
    fn engine_and_client_pools_follow_ipcontrollers_order() {
        let engine: Vec<u16> = (200..209).collect();
        let client: Vec<u16> = (300..307).collect();
        let mut pools = PortPools::new(Vec::new(), &engine, &client);
        let port = |name: &str, pools: &mut PortPools| pools.next(name).unwrap();
        assert_eq!(port("registration", &mut pools), 200);
        assert_eq!(port("control_out", &mut pools), 201);
        assert_eq!(port("mux_out", &mut pools), 202);
        assert_eq!(port("task_out", &mut pools), 203);
        assert_eq!(port("iopub_in", &mut pools), 204);
        assert_eq!(port("hb_ping", &mut pools), 205);
        assert_eq!(port("hb_pong", &mut pools), 206);
        assert_eq!(port("broadcast_leaf", &mut pools), 207);
        assert_eq!(port("broadcast_leaf", &mut pools), 208);
        assert_eq!(port("control_in", &mut pools), 300);
        assert_eq!(port("mux_in", &mut pools), 301);
        assert_eq!(port("task_in", &mut pools), 302);
        assert_eq!(port("iopub_out", &mut pools), 303);
        assert_eq!(port("notification", &mut pools), 304);
        assert_eq!(port("broadcast", &mut pools), 305);
        assert_eq!(port("corral_iopub", &mut pools), 306);
    }

    #[test]
    fn a_used_up_pool_falls_back_to_the_common_ports() {
        // Two engine ports (registration, control_out); the other engine sockets and every
        // client socket take the common ports, in binding order.
        let mut pools = PortPools::new(vec![900, 901, 902], &[200, 201], &[]);
        let got = assign(&mut pools);
        assert_eq!(got[&0], Some(200), "registration from the engine pool");
        assert_eq!(got[&7], Some(201), "control_out from the engine pool");
        assert_eq!(got[&1], Some(900), "notification: first in the common pool");
        assert_eq!(got[&2], Some(901), "hb_ping: engine pool used up");
        assert_eq!(got[&3], Some(902));
        assert_eq!(got[&4], None, "then random");
    }
}
