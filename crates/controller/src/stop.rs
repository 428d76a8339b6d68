//! The stop signal every thread polls: set once (by `Controller::stop` or by a client's
//! `shutdown_request`), observed by all loops within one poll timeout.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Stop {
    pub(crate) fn trigger(&self) {
        let _guard = self.lock.lock();
        self.flag.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Blocks until set or `timeout` passed; true when set.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> bool {
        let mut guard = self.lock.lock();
        if !self.is_set() {
            self.cv.wait_for(&mut guard, timeout);
        }
        self.is_set()
    }

    pub(crate) fn wait(&self) {
        let mut guard = self.lock.lock();
        while !self.is_set() {
            self.cv.wait(&mut guard);
        }
    }
}
