//! HMAC-SHA256 message signatures, as jupyter_client's `Session` computes them: a lowercase
//! hex digest over header, parent_header, metadata and content, in that order.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies with the cluster key. An empty key means "no signing": signatures
/// are empty and nothing is checked, as in jupyter_client.
#[derive(Clone)]
pub struct Signer {
    /// Keyed MAC state, cloned per message so the key schedule is computed once.
    mac: Option<HmacSha256>,
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        let mac = (!key.is_empty())
            .then(|| HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"));
        Signer { mac }
    }

    pub fn has_key(&self) -> bool {
        self.mac.is_some()
    }

    /// Lowercase hex signature of the four JSON frames (empty without a key).
    pub fn sign<P: AsRef<[u8]>>(&self, parts: [P; 4]) -> Vec<u8> {
        match &self.mac {
            None => Vec::new(),
            Some(mac) => {
                let mut mac = mac.clone();
                for part in &parts {
                    mac.update(part.as_ref());
                }
                hex::encode(mac.finalize().into_bytes()).into_bytes()
            }
        }
    }

    /// Constant-time check of a hex signature. Without a key every message passes.
    pub fn verify<P: AsRef<[u8]>>(&self, signature: &[u8], parts: [P; 4]) -> bool {
        let Some(mac) = &self.mac else { return true };
        let Ok(expected) = hex::decode(signature) else {
            return false;
        };
        let mut mac = mac.clone();
        for part in &parts {
            mac.update(part.as_ref());
        }
        mac.verify_slice(&expected).is_ok()
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keyed", &self.has_key())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let s = Signer::new(b"secret");
        let parts = [b"{}".as_slice(), b"{}", b"{}", b"{\"a\": 1}"];
        let sig = s.sign(parts);
        assert_eq!(sig.len(), 64);
        assert!(s.verify(&sig, parts));
        let mut bad = sig.clone();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        assert!(!s.verify(&bad, parts));
        assert!(!s.verify(b"", parts));
        assert!(!s.verify(b"zz", parts));
    }

    #[test]
    fn empty_key_signs_nothing_and_accepts_all() {
        let s = Signer::new(b"");
        assert!(s.sign([b"a", b"b", b"c", b"d"]).is_empty());
        assert!(s.verify(b"", [b"a", b"b", b"c", b"d"]));
    }
}
