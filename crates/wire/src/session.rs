//! A session: the identity a process signs with and stamps on every header it creates.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::envelope::Message;
use crate::header::{iso_now, new_id, Header, PROTOCOL_VERSION};
use crate::sign::Signer;

/// Creates headers (`msg_id = <session>_<pid>_<counter>`, as jupyter_client does) and
/// signs outgoing messages. Shared between threads by reference.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub username: String,
    pub signer: Signer,
    pid: u32,
    counter: AtomicU64,
}

impl Session {
    pub fn new(key: &[u8]) -> Self {
        Self::with_id(key, new_id())
    }

    pub fn with_id(key: &[u8], id: String) -> Self {
        Session {
            id,
            username: std::env::var("USER").unwrap_or_else(|_| "username".into()),
            signer: Signer::new(key),
            pid: std::process::id(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn header(&self, msg_type: &str) -> Header {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Header {
            msg_id: format!("{}_{}_{}", self.id, self.pid, n),
            msg_type: msg_type.to_string(),
            username: self.username.clone(),
            session: self.id.clone(),
            date: iso_now(),
            version: PROTOCOL_VERSION.to_string(),
        }
    }

    /// A new message of `msg_type` with `content`, empty parent and metadata.
    pub fn msg(&self, msg_type: &str, content: Value) -> Message {
        Message::new(self.header(msg_type), content)
    }

    pub fn encode(&self, msg: &Message) -> Vec<Vec<u8>> {
        msg.encode(&self.signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_ids_count_up() {
        let s = Session::new(b"k");
        let a = s.header("x");
        let b = s.header("x");
        assert!(a.msg_id.starts_with(&s.id));
        assert!(a.msg_id.ends_with("_0"));
        assert!(b.msg_id.ends_with("_1"));
    }
}
