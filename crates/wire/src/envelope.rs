//! The multipart envelope: `[idents.., <IDS|MSG>, sig, header, parent, metadata, content,
//! buffers..]`. The raw functions work on any frame type (`zmq::Message`, `Vec<u8>`), so a
//! relay can verify a message without copying or parsing it.

use serde_json::{Map, Value};

use crate::error::{Result, WireError};
use crate::header::Header;
use crate::sign::Signer;

/// The frame that separates routing identities from the message proper.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Index of the first delimiter frame, checking that the five frames after it exist
/// (signature and the four JSON frames).
pub fn locate_delimiter<F: AsRef<[u8]>>(frames: &[F]) -> Result<usize> {
    let delim =
        frames
            .iter()
            .position(|f| f.as_ref() == DELIMITER)
            .ok_or(WireError::NoDelimiter {
                frames: frames.len(),
            })?;
    let after = frames.len() - delim - 1;
    if after < 5 {
        return Err(WireError::Truncated { frames: after });
    }
    Ok(delim)
}

/// Locates the delimiter and verifies the signature; returns the delimiter index.
pub fn verify_frames<F: AsRef<[u8]>>(frames: &[F], signer: &Signer) -> Result<usize> {
    let d = locate_delimiter(frames)?;
    if signer.has_key() {
        let sig = frames[d + 1].as_ref();
        if sig.is_empty() {
            return Err(WireError::Unsigned);
        }
        let parts = [
            &frames[d + 2],
            &frames[d + 3],
            &frames[d + 4],
            &frames[d + 5],
        ]
        .map(|f| f.as_ref());
        if !signer.verify(sig, parts) {
            return Err(WireError::BadSignature);
        }
    }
    Ok(d)
}

/// Signs four already-serialized JSON frames and lays out the envelope, for senders that
/// keep raw JSON bytes, such as an engine echoing a request's header unchanged as the
/// parent of its reply. `header` is taken by value (a sender makes a fresh one per message,
/// so it moves into place); `parent`, `metadata` and `content` are copied.
///
/// (`Message::encode` lays out its own owned frames the same way, without a copy.)
pub fn encode_raw(
    signer: &Signer,
    idents: Vec<Vec<u8>>,
    header: Vec<u8>,
    [parent, metadata, content]: [&[u8]; 3],
    buffers: Vec<Vec<u8>>,
) -> Vec<Vec<u8>> {
    let sig = signer.sign([&header[..], parent, metadata, content]);
    let mut frames = idents;
    frames.reserve(6 + buffers.len());
    frames.push(DELIMITER.to_vec());
    frames.push(sig);
    frames.push(header);
    frames.extend([parent, metadata, content].map(<[u8]>::to_vec));
    frames.extend(buffers);
    frames
}

/// A parsed message. `parent_header`, `metadata` and `content` stay JSON values so that
/// message types corral does not know still round-trip untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub idents: Vec<Vec<u8>>,
    pub header: Header,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Vec<u8>>,
}

fn parse<T: serde::de::DeserializeOwned>(frame: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| WireError::BadJson { frame, source })
}

impl Message {
    /// A message with empty parent and metadata, ready to be addressed and sent.
    pub fn new(header: Header, content: Value) -> Self {
        Message {
            idents: Vec::new(),
            header,
            parent_header: Value::Object(Map::new()),
            metadata: Value::Object(Map::new()),
            content,
            buffers: Vec::new(),
        }
    }

    /// Verifies and parses a whole multipart message.
    pub fn decode<F: AsRef<[u8]>>(frames: &[F], signer: &Signer) -> Result<Self> {
        let d = verify_frames(frames, signer)?;
        Ok(Message {
            idents: frames[..d].iter().map(|f| f.as_ref().to_vec()).collect(),
            header: parse("header", frames[d + 2].as_ref())?,
            parent_header: parse("parent_header", frames[d + 3].as_ref())?,
            metadata: parse("metadata", frames[d + 4].as_ref())?,
            content: parse("content", frames[d + 5].as_ref())?,
            buffers: frames[d + 6..]
                .iter()
                .map(|f| f.as_ref().to_vec())
                .collect(),
        })
    }

    /// [`Message::decode`] taking the frames, so idents and buffers (a published 8 MB
    /// array) are moved into the message instead of copied.
    pub fn decode_owned(mut frames: Vec<Vec<u8>>, signer: &Signer) -> Result<Self> {
        let d = verify_frames(&frames, signer)?;
        let buffers = frames.split_off(d + 6);
        let header = parse("header", &frames[d + 2])?;
        let parent_header = parse("parent_header", &frames[d + 3])?;
        let metadata = parse("metadata", &frames[d + 4])?;
        let content = parse("content", &frames[d + 5])?;
        frames.truncate(d);
        Ok(Message {
            idents: frames,
            header,
            parent_header,
            metadata,
            content,
            buffers,
        })
    }

    /// Serializes and signs: idents, delimiter, signature, the four JSON frames, buffers.
    pub fn encode(&self, signer: &Signer) -> Vec<Vec<u8>> {
        let json = [
            serde_json::to_vec(&self.header),
            serde_json::to_vec(&self.parent_header),
            serde_json::to_vec(&self.metadata),
            serde_json::to_vec(&self.content),
        ]
        .map(|r| r.expect("JSON values always serialize"));
        let sig = signer.sign([&json[0], &json[1], &json[2], &json[3]]);
        let mut frames = Vec::with_capacity(self.idents.len() + 6 + self.buffers.len());
        frames.extend(self.idents.iter().cloned());
        frames.push(DELIMITER.to_vec());
        frames.push(sig);
        frames.extend(json);
        frames.extend(self.buffers.iter().cloned());
        frames
    }

    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// `parent_header.msg_id`, the key that pairs replies and IOPub with requests.
    pub fn parent_msg_id(&self) -> Option<&str> {
        self.parent_header.get("msg_id").and_then(Value::as_str)
    }

    /// Sets the parent header to `parent` (the request being answered).
    pub fn with_parent(mut self, parent: &Header) -> Self {
        self.parent_header = serde_json::to_value(parent).expect("headers serialize");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{iso_now, new_id, PROTOCOL_VERSION};
    use serde_json::json;

    fn header() -> Header {
        Header {
            msg_id: new_id(),
            msg_type: "apply_request".into(),
            username: "u".into(),
            session: new_id(),
            date: iso_now(),
            version: PROTOCOL_VERSION.into(),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let signer = Signer::new(b"k");
        let mut m = Message::new(header(), json!({"a": [1, 2]}));
        m.idents = vec![b"engine".to_vec(), b"client".to_vec()];
        m.buffers = vec![vec![0, 1, 2], vec![]];
        let frames = m.encode(&signer);
        assert_eq!(Message::decode(&frames, &signer).unwrap(), m);
        assert_eq!(Message::decode_owned(frames.clone(), &signer).unwrap(), m);
    }

    #[test]
    fn rejects_tampering_truncation_and_garbage() {
        let signer = Signer::new(b"k");
        let frames = Message::new(header(), json!({})).encode(&signer);

        let mut tampered = frames.clone();
        tampered[5] = b"{\"x\": 1}".to_vec();
        assert!(matches!(
            Message::decode(&tampered, &signer),
            Err(WireError::BadSignature)
        ));

        let mut unsigned = frames.clone();
        unsigned[1] = Vec::new();
        assert!(matches!(
            Message::decode(&unsigned, &signer),
            Err(WireError::Unsigned)
        ));

        assert!(matches!(
            Message::decode(&frames[..4], &signer),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Message::decode_owned(frames[..4].to_vec(), &signer),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Message::decode_owned(tampered, &signer),
            Err(WireError::BadSignature)
        ));
        assert!(matches!(
            Message::decode(&[b"junk".to_vec()], &signer),
            Err(WireError::NoDelimiter { .. })
        ));

        // Correctly signed bytes that are not JSON.
        let parts = [b"not json".as_slice(), b"{}", b"{}", b"{}"];
        let mut garbage = vec![DELIMITER.to_vec(), signer.sign(parts)];
        garbage.extend(parts.iter().map(|p| p.to_vec()));
        assert!(matches!(
            Message::decode(&garbage, &signer),
            Err(WireError::BadJson {
                frame: "header",
                ..
            })
        ));
    }
}
