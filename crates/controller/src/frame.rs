//! [`Frame`]: a ZeroMQ message frame that can be handed to several sockets without copying
//! its bytes.
//!
//! The IOPub relay sends each engine message to the stock clients' PUB *and* to every
//! corral subscriber's own queue. Copying an 8 MB array once per subscriber would cost
//! more than the relay itself (relay.rs: a copying relay measured 45% slower), and the
//! `zmq` crate neither exposes `zmq_msg_copy` nor the raw message of a `zmq::Message`.
//! So this small module owns a raw `zmq_msg_t` and uses libzmq directly: `share` is
//! `zmq_msg_copy`, which for frames above 33 bytes only bumps a reference count on the
//! same buffer (smaller ones are copied, which is as cheap as a pointer).

#![allow(unsafe_code)]

use std::ops::Deref;
use std::os::raw::c_int;

/// Frames from this size on are kept whole by [`Frame::into_bytes`], not copied: libzmq
/// gives a frame larger than its receive batch (8 KB by default) a buffer of its own.
const SHARED_FROM: usize = 64 << 10;

/// One frame, owned. Dropping it releases its reference to the bytes.
pub(crate) struct Frame {
    msg: zmq_sys::zmq_msg_t,
}

// SAFETY: a zmq_msg_t is plain data plus (for large frames) an atomically reference-counted
// buffer; libzmq allows messages to move between threads. `Frame` gives no shared mutable
// access (`&Frame` only reads).
unsafe impl Send for Frame {}

fn last_error() -> zmq::Error {
    // SAFETY: zmq_errno only reads libzmq's thread-local errno.
    zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() })
}

impl Frame {
    fn empty() -> Frame {
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: zmq_msg_init on a fresh zmq_msg_t cannot fail (documented to return 0).
        unsafe { zmq_sys::zmq_msg_init(&mut msg) };
        Frame { msg }
    }

    /// A frame holding a copy of `bytes`: for the small messages the controller writes
    /// itself (replies, notices), never for relayed frames.
    pub(crate) fn copy_of(bytes: &[u8]) -> Frame {
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: zmq_msg_init_size allocates `len` bytes, which we fill completely before
        // anyone reads them; on failure (out of memory) the message is initialised empty.
        unsafe {
            if zmq_sys::zmq_msg_init_size(&mut msg, bytes.len()) != 0 {
                zmq_sys::zmq_msg_init(&mut msg);
                return Frame { msg };
            }
            if !bytes.is_empty() {
                let dst = zmq_sys::zmq_msg_data(&mut msg) as *mut u8;
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            }
        }
        Frame { msg }
    }

    /// Another reference to the same bytes (`zmq_msg_copy`: no copy above 33 bytes).
    pub(crate) fn share(&self) -> Frame {
        let mut copy = Frame::empty();
        // SAFETY: both messages are initialised; zmq_msg_copy takes `*mut` for the source
        // only to bump its reference count, which is atomic, and leaves its content intact.
        let rc = unsafe {
            zmq_sys::zmq_msg_copy(
                &mut copy.msg,
                &self.msg as *const zmq_sys::zmq_msg_t as *mut zmq_sys::zmq_msg_t,
            )
        };
        assert_eq!(rc, 0, "zmq_msg_copy of an initialised message cannot fail");
        copy
    }

    /// The frame's bytes as [`Bytes`] for the task records, without copying a large
    /// frame: it is kept alive by the `Bytes` instead. Small frames are copied, because
    /// libzmq may receive them into a buffer shared with the messages around them (up to
    /// its 8 KB batch), which keeping the frame would pin.
    pub(crate) fn into_bytes(self) -> bytes::Bytes {
        if self.len() < SHARED_FROM {
            bytes::Bytes::copy_from_slice(&self)
        } else {
            bytes::Bytes::from_owner(self)
        }
    }

    /// Receives one frame without blocking; `Ok(None)` when nothing is queued.
    fn recv(sock: &mut zmq::Socket) -> zmq::Result<Option<(Frame, bool)>> {
        let mut frame = Frame::empty();
        // SAFETY: `as_mut_ptr` is the live socket handle for the call; `frame.msg` is an
        // initialised message that libzmq fills.
        let rc = unsafe {
            zmq_sys::zmq_msg_recv(
                &mut frame.msg,
                sock.as_mut_ptr(),
                zmq_sys::ZMQ_DONTWAIT as c_int,
            )
        };
        if rc < 0 {
            let e = last_error();
            return if e == zmq::Error::EAGAIN {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: reads a flag of the message just received.
        let more = unsafe { zmq_sys::zmq_msg_more(&frame.msg) } != 0;
        Ok(Some((frame, more)))
    }

    /// Sends this frame; on success libzmq has taken the bytes and the frame is empty.
    pub(crate) fn send(&mut self, sock: &mut zmq::Socket, more: bool) -> zmq::Result<()> {
        let mut flags = zmq_sys::ZMQ_DONTWAIT as c_int;
        if more {
            flags |= zmq_sys::ZMQ_SNDMORE as c_int;
        }
        // SAFETY: live socket handle; an initialised message, which libzmq empties only on
        // success (on failure it stays ours, intact).
        let rc = unsafe { zmq_sys::zmq_msg_send(&mut self.msg, sock.as_mut_ptr(), flags) };
        if rc < 0 {
            Err(last_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: the message is initialised (every constructor initialises it), and closed
        // exactly once here.
        unsafe { zmq_sys::zmq_msg_close(&mut self.msg) };
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let ptr = &self.msg as *const zmq_sys::zmq_msg_t as *mut zmq_sys::zmq_msg_t;
        // SAFETY: zmq_msg_data/size only read the message; the bytes live as long as `self`
        // and nobody writes to them while shared.
        unsafe {
            let len = zmq_sys::zmq_msg_size(ptr);
            if len == 0 {
                return &[];
            }
            std::slice::from_raw_parts(zmq_sys::zmq_msg_data(ptr) as *const u8, len)
        }
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Receives one whole multipart message without blocking; `None` when nothing is queued
/// (or the receive failed, which is logged).
pub(crate) fn recv_message(sock: &mut zmq::Socket) -> Option<Vec<Frame>> {
    let mut frames = Vec::new();
    loop {
        match Frame::recv(sock) {
            Ok(Some((frame, more))) => {
                frames.push(frame);
                if !more {
                    return Some(frames);
                }
            }
            // Later frames of a message are already there (zmq delivers whole messages).
            Ok(None) if frames.is_empty() => return None,
            Ok(None) => return Some(frames),
            Err(error) => {
                tracing::warn!(%error, "recv failed");
                return (!frames.is_empty()).then_some(frames);
            }
        }
    }
}

/// Sends `frames` as one message without blocking. When the first frame is refused
/// (EAGAIN: the peer is at its high-water mark; EHOSTUNREACH: unknown peer on a
/// ROUTER_MANDATORY socket) nothing was sent and the frames are still intact, so the
/// caller may retry. Later frames of an accepted message do not fail for HWM.
pub(crate) fn send_message(sock: &mut zmq::Socket, frames: &mut [Frame]) -> zmq::Result<()> {
    let n = frames.len();
    for (i, frame) in frames.iter_mut().enumerate() {
        if let Err(e) = frame.send(sock, i + 1 < n) {
            if i == 0 {
                return Err(e);
            }
            tracing::warn!(error = %e, "send failed mid-message");
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_frames_see_the_same_bytes_and_survive_the_original() {
        let big = vec![7u8; 1 << 20];
        let a = Frame::copy_of(&big);
        let b = a.share();
        assert_eq!(&b[..], &big[..]);
        // Large frames share one buffer: same address.
        assert_eq!(a.as_ptr(), b.as_ptr());
        drop(a);
        assert_eq!(&b[..], &big[..]);
        let small = Frame::copy_of(b"abc");
        assert_eq!(&small.share()[..], b"abc");
        assert_eq!(&Frame::copy_of(b"")[..], b"");
    }

    #[test]
    fn large_frames_become_bytes_without_a_copy() {
        let big = Frame::copy_of(&vec![3u8; SHARED_FROM]);
        let at = big.as_ptr();
        let bytes = big.share().into_bytes();
        assert_eq!(bytes.as_ptr(), at, "the same buffer");
        drop(big);
        assert!(bytes.iter().all(|&b| b == 3) && bytes.len() == SHARED_FROM);
        let small = Frame::copy_of(b"header");
        assert_eq!(&small.share().into_bytes()[..], b"header");
    }

    #[test]
    fn a_shared_frame_can_be_sent_on_two_sockets() {
        let ctx = zmq::Context::new();
        let mut out1 = ctx.socket(zmq::PAIR).unwrap();
        let mut out2 = ctx.socket(zmq::PAIR).unwrap();
        let in1 = ctx.socket(zmq::PAIR).unwrap();
        let in2 = ctx.socket(zmq::PAIR).unwrap();
        out1.bind("inproc://frame-test-1").unwrap();
        out2.bind("inproc://frame-test-2").unwrap();
        in1.connect("inproc://frame-test-1").unwrap();
        in2.connect("inproc://frame-test-2").unwrap();
        let original = vec![Frame::copy_of(b"topic"), Frame::copy_of(&[1; 4096])];
        let mut copy: Vec<Frame> = original.iter().map(Frame::share).collect();
        let mut original = original;
        send_message(&mut out1, &mut original).unwrap();
        send_message(&mut out2, &mut copy).unwrap();
        for sock in [&in1, &in2] {
            let got = sock.recv_multipart(0).unwrap();
            assert_eq!(got, vec![b"topic".to_vec(), vec![1; 4096]]);
        }
        let mut in1 = in1;
        assert!(recv_message(&mut in1).is_none());
        out1.send_multipart([b"a".as_slice(), b"b"], 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let got = recv_message(&mut in1).unwrap();
        assert_eq!(
            got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(),
            [b"a", b"b"]
        );
    }
}
