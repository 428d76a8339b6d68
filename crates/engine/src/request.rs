//! A verified request as the executor sees it; the intake that verifies, rejects replays
//! and decodes what arrives; and the bookkeeping of aborted msg_ids.
//!
//! Every check here is total: any frames at all become a [`Request`] or a [`Rejected`]
//! that the I/O thread logs and drops, never a panic.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use corral_wire::{verify_frames, DigestHistory, Header, HeaderFields, Signer, WireError};
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

/// Why a message was dropped instead of handled.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The header is JSON but not one a reply can be addressed to.
    #[error("unusable header: {0}")]
    Header(&'static str),
}

/// Verifies, de-duplicates and decodes incoming messages. One per engine, for shell and
/// control together: the same signed bytes on either socket are the same replay.
#[derive(Debug)]
pub(crate) struct Intake {
    signer: Signer,
    seen: DigestHistory,
}

impl Intake {
    pub(crate) fn new(signer: Signer) -> Self {
        Intake {
            signer,
            seen: DigestHistory::default(),
        }
    }

    /// The signature is checked first (so forged messages never fill the history), then
    /// the history (a replay is dropped as jupyter_client drops a "Duplicate Signature"),
    /// then the JSON.
    pub(crate) fn accept(
        &mut self,
        frames: Vec<Vec<u8>>,
        channel: Channel,
        seq: u64,
    ) -> Result<Request, Rejected> {
        let d = verify_frames(&frames, &self.signer)?;
        self.seen.check(&frames[d + 1])?;
        Request::decode_verified(frames, d, channel, seq)
    }
}

impl Request {
    /// Verifies the signature and decodes, without a replay check (for tests).
    #[cfg(test)]
    pub(crate) fn decode(
        frames: Vec<Vec<u8>>,
        signer: &Signer,
        channel: Channel,
        seq: u64,
    ) -> Result<Self, Rejected> {
        let d = verify_frames(&frames, signer)?;
        Self::decode_verified(frames, d, channel, seq)
    }

    /// Decodes frames whose envelope starts at delimiter index `d`. The header needs string
    /// `msg_id` and `msg_type` (a reply is addressed with them); parent, metadata and
    /// content may be any JSON, and whoever reads them copes with every type.
    fn decode_verified(
        frames: Vec<Vec<u8>>,
        d: usize,
        channel: Channel,
        seq: u64,
    ) -> Result<Self, Rejected> {
        let header = parse_header(&frames[d + 2])?;
        for (i, name) in [(3, "parent_header"), (4, "metadata"), (5, "content")] {
            serde_json::from_slice::<serde::de::IgnoredAny>(&frames[d + i]).map_err(|source| {
                WireError::BadJson {
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

    /// The content; `Null` is never returned for valid JSON, which every request has.
    pub(crate) fn content(&self) -> Value {
        serde_json::from_slice(&self.content_raw).unwrap_or(Value::Null)
    }

    pub(crate) fn metadata(&self) -> Value {
        serde_json::from_slice(&self.metadata_raw).unwrap_or(Value::Null)
    }
}

/// A header as senders write it, tolerating anything but a missing or non-string
/// `msg_id`/`msg_type`: other fields of the wrong type read as empty (nothing here uses
/// them; the raw bytes go back unchanged as the reply's parent).
fn parse_header(bytes: &[u8]) -> Result<Header, Rejected> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| WireError::BadJson {
        frame: "header",
        source,
    })?;
    if !value.is_object() {
        return Err(Rejected::Header("not a JSON object"));
    }
    let h = HeaderFields::read(&value);
    let date = h.date.as_ref().and_then(Value::as_str).unwrap_or_default();
    Ok(Header {
        msg_id: h.msg_id.ok_or(Rejected::Header("no string msg_id"))?,
        msg_type: h.msg_type.ok_or(Rejected::Header("no string msg_type"))?,
        username: h.username.unwrap_or_default(),
        session: h.session.unwrap_or_default(),
        date: date.to_string(),
        version: h.version.unwrap_or_default(),
    })
}

/// How many aborted msg_ids an engine remembers. Aborts go to every engine, so most name
/// tasks this engine never sees; the oldest are forgotten first. An abort that matters is
/// for a task already queued or about to arrive, so recent ids are the ones to keep.
pub(crate) const MAX_ABORTED_IDS: usize = 16_384;

/// msg_ids the client asked to abort, and the "abort every shell request that arrived up
/// to here" mark set by an `abort_request` with an empty list.
#[derive(Debug, Default)]
pub(crate) struct AbortState {
    ids: HashSet<String>,
    order: VecDeque<String>,
    upto_seq: Option<u64>,
}

impl AbortState {
    pub(crate) fn abort_ids<I: IntoIterator<Item = String>>(&mut self, ids: I) {
        for id in ids {
            if self.ids.contains(&id) {
                continue;
            }
            while self.order.len() >= MAX_ABORTED_IDS {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
            self.order.push_back(id.clone());
            self.ids.insert(id);
        }
    }

    pub(crate) fn abort_upto(&mut self, seq: u64) {
        self.upto_seq = Some(self.upto_seq.map_or(seq, |s| s.max(seq)));
    }

    /// True (once) when this request must be answered `aborted` instead of run.
    pub(crate) fn take(&mut self, req: &Request) -> bool {
        let by_id = self.ids.remove(&req.header.msg_id);
        if by_id {
            self.order.retain(|id| id != &req.header.msg_id);
        }
        by_id || self.upto_seq.is_some_and(|s| req.seq <= s)
    }

    /// How many ids are remembered (bounded by [`MAX_ABORTED_IDS`]).
    #[cfg(test)]
    pub(crate) fn remembered(&self) -> usize {
        self.ids.len()
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
