//! The one socket option the `zmq` crate does not wrap.

use std::os::raw::{c_int, c_void};

/// Sets `ZMQ_XPUB_NODROP`: with it, an XPUB whose queue to a subscriber is full refuses a
/// send (`EAGAIN`) instead of silently dropping the message, so the engine can hold and
/// conflate its publications and never lose a task's last update or its `status: idle`.
#[allow(unsafe_code)]
pub(crate) fn set_xpub_nodrop(socket: &mut zmq::Socket) -> Result<(), zmq::Error> {
    let value: c_int = 1;
    // SAFETY: `as_mut_ptr` is the live libzmq handle owned by `socket` for the whole call;
    // libzmq copies `size_of::<c_int>()` bytes from `value`, which outlives the call.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as c_int,
            &value as *const c_int as *const c_void,
            std::mem::size_of::<c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno only reads libzmq's thread-local errno.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_nodrop_xpub_refuses_instead_of_dropping() {
        let ctx = zmq::Context::new();
        let mut publisher = ctx.socket(zmq::XPUB).unwrap();
        publisher.set_sndhwm(2).unwrap();
        super::set_xpub_nodrop(&mut publisher).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let sub = ctx.socket(zmq::SUB).unwrap();
        sub.set_rcvhwm(2).unwrap();
        sub.set_subscribe(b"").unwrap();
        sub.connect(&endpoint).unwrap();
        // Wait for the subscription to reach the publisher.
        let mut items = [publisher.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 5000).unwrap();
        publisher.recv_bytes(0).unwrap();
        // Nobody reads: sends succeed until the queues fill, then are refused.
        let mut refused = false;
        for _ in 0..100_000 {
            match publisher.send(&b"x"[..], zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    refused = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            refused,
            "a NODROP XPUB must refuse once the subscriber's queue is full"
        );
    }
}
