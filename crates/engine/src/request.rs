//! A verified request as the executor sees it, and the bookkeeping of aborted msg_ids.

use std::collections::HashSet;
use std::sync::Arc;

use corral_wire::{verify_frames, Header, Signer};
use serde_json::Value;

/// Which engine socket a request came in on (and its reply goes out on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Shell,
    Control,
}

/// One request. The JSON frames stay raw bytes (the executor parses what it needs), and
/// the header bytes are kept as received, to become the `parent_header` of everything sent
/// for this request without re-serializing.
#[derive(Debug, Clone)]
pub struct Request {
    pub channel: Channel,
    /// Routing frames before `<IDS|MSG>`, echoed unchanged on the reply.
    pub idents: Vec<Vec<u8>>,
    pub header: Header,
    pub header_raw: Arc<Vec<u8>>,
    pub metadata_raw: Vec<u8>,
    pub content_raw: Vec<u8>,
    pub buffers: Vec<Vec<u8>>,
    /// Arrival order on this engine (for "abort everything queued so far").
    pub seq: u64,
}

impl Request {
    /// Verifies the signature and checks every JSON frame parses; anything else is an error
    /// the caller logs and drops.
    pub fn decode(
        frames: Vec<Vec<u8>>,
        signer: &Signer,
        channel: Channel,
        seq: u64,
    ) -> Result<Self, corral_wire::WireError> {
        let d = verify_frames(&frames, signer)?;
        let header: Header = serde_json::from_slice(&frames[d + 2]).map_err(|source| {
            corral_wire::WireError::BadJson {
                frame: "header",
                source,
            }
        })?;
        for (i, name) in [(3, "parent_header"), (4, "metadata"), (5, "content")] {
            serde_json::from_slice::<serde::de::IgnoredAny>(&frames[d + i]).map_err(|source| {
                corral_wire::WireError::BadJson {
                    frame: name,
                    source,
                }
            })?;
        }
        let mut frames = frames;
        let buffers = frames.split_off(d + 6);
        let content_raw = frames.pop().expect("checked length");
        let metadata_raw = frames.pop().expect("checked length");
        frames.pop(); // parent
        let header_raw = Arc::new(frames.pop().expect("checked length"));
        frames.truncate(d);
        Ok(Request {
            channel,
            idents: frames,
            header,
            header_raw,
            metadata_raw,
            content_raw,
            buffers,
            seq,
        })
    }

    pub fn content(&self) -> Value {
        serde_json::from_slice(&self.content_raw).unwrap_or(Value::Null)
    }

    pub fn metadata(&self) -> Value {
        serde_json::from_slice(&self.metadata_raw).unwrap_or(Value::Null)
    }
}

/// msg_ids the client asked to abort, and the "abort every shell request that arrived up
/// to here" mark set by an `abort_request` with an empty list.
#[derive(Debug, Default)]
pub struct AbortState {
    ids: HashSet<String>,
    upto_seq: Option<u64>,
}

impl AbortState {
    pub fn abort_ids<I: IntoIterator<Item = String>>(&mut self, ids: I) {
        self.ids.extend(ids);
    }

    pub fn abort_upto(&mut self, seq: u64) {
        self.upto_seq = Some(self.upto_seq.map_or(seq, |s| s.max(seq)));
    }

    /// True (once) when this request must be answered `aborted` instead of run.
    pub fn take(&mut self, req: &Request) -> bool {
        let by_id = self.ids.remove(&req.header.msg_id);
        by_id || self.upto_seq.is_some_and(|s| req.seq <= s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_wire::Session;
    use serde_json::json;

    #[test]
    fn decode_keeps_idents_raw_header_and_buffers() {
        let s = Session::new(b"key");
        let mut m = s.msg("apply_request", json!({}));
        m.idents = vec![b"mux_out".to_vec(), vec![0, 1, 2]];
        m.buffers = vec![b"f".to_vec(), b"info".to_vec()];
        let frames = s.encode(&m);
        let header_bytes = frames[4].clone();
        let r = Request::decode(frames, &s.signer, Channel::Shell, 7).unwrap();
        assert_eq!(r.idents, m.idents);
        assert_eq!(*r.header_raw, header_bytes);
        assert_eq!(r.header.msg_type, "apply_request");
        assert_eq!(r.buffers, m.buffers);
        assert_eq!(r.content(), json!({}));
    }

    #[test]
    fn decode_rejects_bad_signature_and_bad_json() {
        let s = Session::new(b"key");
        let mut frames = s.encode(&s.msg("x", json!({})));
        frames[2] = b"0".repeat(64);
        assert!(Request::decode(frames, &s.signer, Channel::Shell, 0).is_err());
        let other = Session::new(b"");
        let mut frames = other.encode(&other.msg("x", json!({})));
        frames[5] = b"{not json".to_vec();
        assert!(Request::decode(frames, &other.signer, Channel::Shell, 0).is_err());
    }

    #[test]
    fn abort_by_id_and_by_position() {
        let s = Session::new(b"");
        let req = |seq| {
            Request::decode(
                s.encode(&s.msg("apply_request", json!({}))),
                &s.signer,
                Channel::Shell,
                seq,
            )
            .unwrap()
        };
        let mut a = AbortState::default();
        let r1 = req(1);
        a.abort_ids([r1.header.msg_id.clone()]);
        assert!(a.take(&r1));
        assert!(!a.take(&r1), "an id is aborted once");
        a.abort_upto(5);
        assert!(a.take(&req(5)));
        assert!(!a.take(&req(6)));
    }
}
