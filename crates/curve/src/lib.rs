//! CurveZMQ on the side that connects (engines and clients): when the connection file
//! carries the controller's public key (`curve_serverkey`, as ipyparallel's `enable_curve`
//! writes it), every socket opened to the controller is a CURVE client, so all traffic is
//! encrypted and only the real controller can answer. A crate of its own because engines
//! and clients both need it and `corral-wire` stays free of ZeroMQ.

/// The CURVE settings of every socket this side opens to the controller.
#[derive(Clone)]
pub struct CurveClient {
    server: Vec<u8>,
    public: Vec<u8>,
    secret: Vec<u8>,
}

impl std::fmt::Debug for CurveClient {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurveClient { .. }")
    }
}

/// Z85 text to a 32-byte key, or why not.
fn decode(z85: &str) -> std::result::Result<Vec<u8>, String> {
    if z85.len() != 40 {
        return Err(format!("expected 40 Z85 characters, got {}", z85.len()));
    }
    zmq::z85_decode(z85).map_err(|e| format!("not Z85: {e}"))
}

impl CurveClient {
    /// For a controller whose public key is `server` (Z85, from the connection file). Our
    /// own key pair is `IPP_CURVE_PUBLICKEY`/`IPP_CURVE_SECRETKEY` when both are set, as
    /// ipyparallel reads them, else a fresh one: CURVE does not authenticate clients here,
    /// so any pair will do.
    pub fn new(
        server: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Self, String> {
        if zmq::has("curve") != Some(true) {
            return Err(
                "the controller uses CurveZMQ encryption (curve_serverkey in its connection \
                 file), but this corral was built without CURVE support (libzmq without \
                 libsodium). Install libsodium (Debian/Ubuntu: `apt-get install \
                 libsodium-dev`, or `make sodium`) and rebuild corral (`cargo clean -p \
                 zmq-sys`, then `make install`)"
                    .into(),
            );
        }
        let server = decode(server).map_err(|why| format!("curve_serverkey is unusable: {why}"))?;
        let given = |name| env(name).filter(|v: &String| !v.trim().is_empty());
        let (public, secret) = match (given("IPP_CURVE_PUBLICKEY"), given("IPP_CURVE_SECRETKEY")) {
            (Some(p), Some(s)) => (
                decode(p.trim())
                    .map_err(|why| format!("IPP_CURVE_PUBLICKEY is unusable: {why}"))?,
                decode(s.trim())
                    .map_err(|why| format!("IPP_CURVE_SECRETKEY is unusable: {why}"))?,
            ),
            _ => {
                let pair = zmq::CurveKeyPair::new()
                    .map_err(|e| format!("cannot generate a CURVE key pair: {e}"))?;
                (pair.public_key.to_vec(), pair.secret_key.to_vec())
            }
        };
        Ok(CurveClient {
            server,
            public,
            secret,
        })
    }

    /// Makes `sock` a CURVE client of the controller; call before `connect`.
    pub fn apply(&self, sock: &zmq::Socket) -> zmq::Result<()> {
        sock.set_curve_serverkey(&self.server)?;
        sock.set_curve_publickey(&self.public)?;
        sock.set_curve_secretkey(&self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_taken_from_the_environment() {
        let server = zmq::CurveKeyPair::new().unwrap();
        let z85 = |k: &[u8]| zmq::z85_encode(k).unwrap();
        let curve = CurveClient::new(&z85(&server.public_key), |_| None).unwrap();
        assert_eq!(curve.server, server.public_key.to_vec());
        assert_eq!(curve.public.len(), 32);
        let mine = zmq::CurveKeyPair::new().unwrap();
        let env = |name: &str| match name {
            "IPP_CURVE_PUBLICKEY" => Some(z85(&mine.public_key)),
            "IPP_CURVE_SECRETKEY" => Some(z85(&mine.secret_key)),
            _ => None,
        };
        let curve = CurveClient::new(&z85(&server.public_key), env).unwrap();
        assert_eq!(curve.secret, mine.secret_key.to_vec());
        let err = CurveClient::new("too short", |_| None).unwrap_err();
        assert!(err.contains("curve_serverkey"), "{err}");
        assert!(!format!("{curve:?}").contains(&z85(&mine.secret_key)));
    }
}
