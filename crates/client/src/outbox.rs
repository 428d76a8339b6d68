//! Non-blocking sends with a bounded backlog, one per outgoing socket.
//!
//! The I/O thread must never block on one socket: a controller that stops reading its mux
//! socket would otherwise stall replies, IOPub and every other channel with it. A message
//! that ZeroMQ cannot take now (its high-water mark is reached) waits here, in order, and
//! is retried when the socket polls writable. The backlog is bounded: past
//! [`MAX_MESSAGES`] or [`MAX_BYTES`] a new message is refused, and the I/O thread fails
//! the tasks it carried with a clear error instead of holding memory without limit.

use std::collections::VecDeque;

/// At most this many messages wait for one socket (on top of ZeroMQ's own high-water mark).
pub const MAX_MESSAGES: usize = 100_000;
/// ... and at most this many bytes.
pub const MAX_BYTES: usize = 1 << 30;

/// One message on its way out, with the tasks to fail if it cannot be sent.
#[derive(Debug)]
pub struct Outgoing {
    pub frames: Vec<Vec<u8>>,
    pub tasks: Vec<String>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.frames.iter().map(Vec::len).sum()
    }
}

/// Why a message was not queued.
#[derive(Debug)]
pub struct Full {
    pub rejected: Outgoing,
    pub waiting: usize,
    pub waiting_bytes: usize,
}

#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
    bytes: usize,
}

/// What the outbox needs from a socket; a trait so the ordering and bound logic is
/// tested without ZeroMQ.
pub trait Sink {
    /// Sends without blocking; `Ok(false)` when the socket cannot take it now.
    fn try_send(&self, frames: &[Vec<u8>]) -> Result<bool, zmq::Error>;
}

impl Sink for zmq::Socket {
    fn try_send(&self, frames: &[Vec<u8>]) -> Result<bool, zmq::Error> {
        // Only the first frame can hit the high-water mark: once it is in, ZeroMQ takes
        // the rest of the multipart message.
        match self.send_multipart(frames, zmq::DONTWAIT) {
            Ok(()) => Ok(true),
            Err(zmq::Error::EAGAIN) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Sends `msg` now if nothing waits before it and the socket takes it; otherwise
    /// queues it, or hands it back when the backlog is full. A hard send error (not a
    /// full socket) is logged and the message dropped, returning it as rejected too.
    pub fn send(&mut self, sink: &impl Sink, msg: Outgoing) -> Result<(), Full> {
        if self.queue.is_empty() {
            match sink.try_send(&msg.frames) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "send failed");
                    return Err(self.full(msg));
                }
            }
        }
        if self.queue.len() >= MAX_MESSAGES || self.bytes + msg.size() > MAX_BYTES {
            return Err(self.full(msg));
        }
        self.bytes += msg.size();
        self.queue.push_back(msg);
        Ok(())
    }

    fn full(&self, rejected: Outgoing) -> Full {
        Full {
            rejected,
            waiting: self.queue.len(),
            waiting_bytes: self.bytes,
        }
    }

    /// Sends queued messages, oldest first, until the socket stops taking them; returns
    /// those that failed with a hard error (dropped, so their tasks can be failed).
    pub fn flush(&mut self, sink: &impl Sink) -> Vec<Outgoing> {
        let mut failed = Vec::new();
        while let Some(msg) = self.queue.front() {
            let sent = sink.try_send(&msg.frames);
            if matches!(sent, Ok(false)) {
                break;
            }
            let msg = self.queue.pop_front().expect("front exists");
            self.bytes -= msg.size();
            if let Err(e) = sent {
                tracing::error!(error = %e, "send failed");
                failed.push(msg);
            }
        }
        failed
    }

    /// Drops everything waiting (the controller is gone); returns it.
    pub fn clear(&mut self) -> Vec<Outgoing> {
        self.bytes = 0;
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Takes up to `room` messages, recording them.
    struct FakeSink {
        room: RefCell<usize>,
        sent: RefCell<Vec<Vec<Vec<u8>>>>,
    }

    impl Sink for FakeSink {
        fn try_send(&self, frames: &[Vec<u8>]) -> Result<bool, zmq::Error> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Ok(false);
            }
            *room -= 1;
            self.sent.borrow_mut().push(frames.to_vec());
            Ok(true)
        }
    }

    fn msg(i: u8) -> Outgoing {
        Outgoing {
            frames: vec![vec![i]],
            tasks: vec![format!("t{i}")],
        }
    }

    #[test]
    fn queues_when_full_and_keeps_order() {
        let sink = FakeSink {
            room: RefCell::new(1),
            sent: RefCell::new(Vec::new()),
        };
        let mut out = Outbox::default();
        out.send(&sink, msg(0)).unwrap();
        out.send(&sink, msg(1)).unwrap();
        *sink.room.borrow_mut() = 10;
        // Something waits, so a new message goes behind it even though the socket has room.
        out.send(&sink, msg(2)).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out.flush(&sink).is_empty());
        assert!(out.is_empty());
        let order: Vec<u8> = sink.sent.borrow().iter().map(|m| m[0][0]).collect();
        assert_eq!(order, vec![0, 1, 2]);
    }

    #[test]
    fn refuses_past_the_bound() {
        let sink = FakeSink {
            room: RefCell::new(0),
            sent: RefCell::new(Vec::new()),
        };
        let mut out = Outbox::default();
        for i in 0..MAX_MESSAGES {
            out.send(&sink, msg((i % 200) as u8)).unwrap();
        }
        let full = out.send(&sink, msg(7)).unwrap_err();
        assert_eq!(full.rejected.tasks, vec!["t7".to_string()]);
        assert_eq!(full.waiting, MAX_MESSAGES);
        assert_eq!(out.clear().len(), MAX_MESSAGES);
        assert!(out.is_empty());
    }
}
