//! Sending a large frame without copying it, and knowing when ZeroMQ is done with it.
//!
//! ZeroMQ's high-water mark counts messages, not bytes, so the engine cannot ask it how
//! much published data it still holds. A frame handed over here is counted in a shared
//! byte counter until libzmq frees it (after writing it to the network), which is what
//! lets the I/O thread bound the bytes in flight (see `io::IoThread::drain_outgoing`).

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Frames at least this big are counted while libzmq holds them; smaller ones are sent
/// the ordinary way (their bytes do not matter, their count is bounded by the HWM).
pub(crate) const COUNTED_FRAME: usize = 64 * 1024;

/// What libzmq keeps alive until it calls [`release`]: the bytes and the counter to credit.
struct Held {
    data: Vec<u8>,
    counter: Arc<AtomicUsize>,
}

/// libzmq's free callback: runs once, on whichever thread drops the last reference to the
/// message (usually libzmq's own I/O thread), so it only drops memory and counts.
#[allow(unsafe_code)]
unsafe extern "C" fn release(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `hint` is the `Box<Held>` leaked in `send_counted` for this message, and
    // libzmq calls the free function exactly once per message.
    let held = unsafe { Box::from_raw(hint.cast::<Held>()) };
    held.counter.fetch_sub(held.data.len(), Ordering::AcqRel);
}

/// Sends `data` as one frame of a message without copying it (`flags` as for
/// `zmq::Socket::send`). Its length is added to `counter` now and taken off when libzmq
/// frees the bytes, also when the send fails.
#[allow(unsafe_code)]
pub(crate) fn send_counted(
    socket: &mut zmq::Socket,
    data: Vec<u8>,
    counter: &Arc<AtomicUsize>,
    flags: i32,
) -> Result<(), zmq::Error> {
    let len = data.len();
    counter.fetch_add(len, Ordering::AcqRel);
    let held = Box::new(Held {
        data,
        counter: counter.clone(),
    });
    let ptr = held.data.as_ptr() as *mut c_void;
    let hint = Box::into_raw(held).cast::<c_void>();
    // SAFETY: zmq_msg_t is plain data that zmq_msg_init_data initialises. `ptr` points to
    // `len` bytes owned by the leaked `Held`, which stays alive (and its heap buffer
    // unmoved) until libzmq calls `release` with `hint`.
    let mut msg = unsafe { std::mem::zeroed::<zmq_sys::zmq_msg_t>() };
    let rc = unsafe { zmq_sys::zmq_msg_init_data(&mut msg, ptr, len, Some(release), hint) };
    if rc != 0 {
        // SAFETY: the message was not created, so libzmq will not call `release`.
        let err = zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() });
        release_now(hint);
        return Err(err);
    }
    // SAFETY: `as_mut_ptr` is the live socket owned by `socket`; on success libzmq owns
    // the message, on failure we still do and close it (which calls `release`).
    let rc = unsafe { zmq_sys::zmq_msg_send(&mut msg, socket.as_mut_ptr(), flags as c_int) };
    if rc < 0 {
        let err = zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() });
        unsafe { zmq_sys::zmq_msg_close(&mut msg) };
        return Err(err);
    }
    Ok(())
}

#[allow(unsafe_code)]
fn release_now(hint: *mut c_void) {
    // SAFETY: only called for a `hint` libzmq never took ownership of.
    unsafe { release(std::ptr::null_mut(), hint) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_until_sent_and_the_frame_arrives_intact() {
        let ctx = zmq::Context::new();
        // A PUSH connected before anyone binds queues in libzmq (inproc hands the message
        // itself to the reader, so it stays counted until the reader drops it).
        let mut push = ctx.socket(zmq::PUSH).unwrap();
        push.connect("inproc://zerocopy-test").unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let frame: Vec<u8> = (0..COUNTED_FRAME * 4).map(|i| (i % 251) as u8).collect();
        send_counted(&mut push, frame.clone(), &counter, zmq::SNDMORE).unwrap();
        push.send(&b"end"[..], 0).unwrap();
        assert_eq!(counter.load(Ordering::Acquire), frame.len());

        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_rcvtimeo(10_000).unwrap();
        pull.bind("inproc://zerocopy-test").unwrap();
        let got = pull.recv_multipart(0).unwrap();
        assert_eq!(got, vec![frame, b"end".to_vec()]);
        // libzmq frees the bytes once written; wait for that (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while counter.load(Ordering::Acquire) != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_refused_send_gives_the_bytes_back() {
        let ctx = zmq::Context::new();
        // A PUSH with no peer refuses a non-blocking send (EAGAIN).
        let mut push = ctx.socket(zmq::PUSH).unwrap();
        let counter = Arc::new(AtomicUsize::new(0));
        let err = send_counted(&mut push, vec![7; COUNTED_FRAME], &counter, zmq::DONTWAIT);
        assert_eq!(err, Err(zmq::Error::EAGAIN));
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}
