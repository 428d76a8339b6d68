//! Replay protection: a bounded history of the signatures already accepted, as
//! jupyter_client's `Session.digest_history` keeps. A signed message is valid forever, so
//! without this anyone who saw one request on the wire could make it run again.
//!
//! The oldest signatures are forgotten first once the history is full (jupyter_client culls
//! a random 10%); 65,536 entries by default, jupyter_client's size. Each entry keeps only the
//! first 128 bits of the HMAC (uniformly random, so an accidental match among 65,536 is
//! about 2^-97 likely): ~3 MB for a full history instead of ~13 MB for whole hex strings.

use std::collections::{HashSet, VecDeque};

use crate::error::{Result, WireError};

/// jupyter_client's `digest_history_size`.
pub const DEFAULT_HISTORY: usize = 1 << 16;

/// What the history keeps of a signature: its first 16 bytes.
type Digest = [u8; 16];

/// The signatures one receiver has accepted, oldest first.
#[derive(Debug)]
pub struct DigestHistory {
    order: VecDeque<Digest>,
    seen: HashSet<Digest>,
    capacity: usize,
}

/// The first 128 bits of a hex signature (or of its bytes, for a signature that is not hex:
/// such a message never verified, so this only keeps the function total).
fn digest(signature: &[u8]) -> Digest {
    let mut out = [0u8; 16];
    let prefix = &signature[..signature.len().min(32)];
    if hex::decode_to_slice(prefix, &mut out[..prefix.len() / 2]).is_err() {
        let n = prefix.len().min(16);
        out[..n].copy_from_slice(&prefix[..n]);
    }
    out
}

impl Default for DigestHistory {
    fn default() -> Self {
        DigestHistory::new(DEFAULT_HISTORY)
    }
}

impl DigestHistory {
    pub fn new(capacity: usize) -> Self {
        DigestHistory {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `signature`; a signature already in the history is a replay. An empty
    /// signature (a cluster without a key) is never recorded: there is nothing to compare.
    pub fn check(&mut self, signature: &[u8]) -> Result<()> {
        if signature.is_empty() {
            return Ok(());
        }
        let sig = digest(signature);
        if self.seen.contains(&sig) {
            return Err(WireError::Replayed);
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back(sig);
        self.seen.insert(sig);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once() {
        let mut h = DigestHistory::default();
        assert!(h.check(b"abc").is_ok());
        assert!(matches!(h.check(b"abc"), Err(WireError::Replayed)));
        assert!(h.check(b"abd").is_ok());
    }

    #[test]
    fn real_signatures_differing_anywhere_in_their_first_half_are_distinct() {
        let mut h = DigestHistory::default();
        let a = b"00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef";
        let mut b = *a;
        b[31] = b'e';
        h.check(a).unwrap();
        h.check(&b).unwrap();
        assert!(h.check(a).is_err());
    }

    #[test]
    fn empty_signatures_are_not_tracked() {
        let mut h = DigestHistory::default();
        assert!(h.check(b"").is_ok());
        assert!(h.check(b"").is_ok());
        assert!(h.is_empty());
    }

    #[test]
    fn the_history_is_bounded_and_forgets_the_oldest() {
        let mut h = DigestHistory::new(3);
        for s in [b"1", b"2", b"3", b"4"] {
            h.check(s).unwrap();
        }
        assert_eq!(h.len(), 3);
        assert!(h.check(b"1").is_ok(), "the oldest was forgotten");
        assert!(h.check(b"4").is_err(), "a recent one is still a replay");
    }
}
