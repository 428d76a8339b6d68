//! CurveZMQ, as ipyparallel's `enable_curve`: every socket that clients and engines reach
//! is a CURVE server holding the controller's secret key, and the public key goes into both
//! connection files as `curve_serverkey`. Peers then encrypt everything and know they talk
//! to this controller. Clients are not authenticated by CURVE (any key pair will do, as in
//! ipyparallel); the HMAC key still signs every message unless it is empty.

use crate::error::{ControllerError, Result};

/// The controller's long-term key pair, both halves Z85 text (40 characters), as
/// ipyparallel writes `curve_serverkey` and reads `IPP_CURVE_{PUBLIC,SECRET}KEY`.
#[derive(Clone, PartialEq, Eq)]
pub struct CurveKeys {
    pub public: String,
    pub secret: String,
}

impl std::fmt::Debug for CurveKeys {
    // The secret key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurveKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// True when the libzmq linked in was built with CURVE (libsodium found at build time).
pub fn available() -> bool {
    zmq::has("curve") == Some(true)
}

pub(crate) fn unavailable() -> ControllerError {
    ControllerError::Curve {
        reason: "this corral was built without CurveZMQ support (libzmq without libsodium). \
                 Install libsodium (Debian/Ubuntu: `apt-get install libsodium-dev`, or \
                 `make sodium`) and rebuild corral (`cargo clean -p zmq-sys`, then \
                 `make install`)"
            .into(),
    }
}

impl CurveKeys {
    /// A fresh key pair.
    pub fn generate() -> Result<CurveKeys> {
        if !available() {
            return Err(unavailable());
        }
        let pair = zmq::CurveKeyPair::new().map_err(|e| ControllerError::Curve {
            reason: format!("cannot generate a key pair: {e}"),
        })?;
        let z85 = |k: &[u8]| zmq::z85_encode(k).expect("32 bytes encode as Z85");
        Ok(CurveKeys {
            public: z85(&pair.public_key),
            secret: z85(&pair.secret_key),
        })
    }

    /// Given keys (ipyparallel's `IPP_CURVE_PUBLICKEY` / `IPP_CURVE_SECRETKEY`), checked
    /// to be Z85 keys of 32 bytes each.
    pub fn from_z85(public: &str, secret: &str) -> Result<CurveKeys> {
        if !available() {
            return Err(unavailable());
        }
        for (name, key) in [("public", public), ("secret", secret)] {
            decode(key).map_err(|why| ControllerError::Curve {
                reason: format!("the CURVE {name} key is not usable: {why}"),
            })?;
        }
        Ok(CurveKeys {
            public: public.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The keys for `--enable-curve`: both from the environment when given there, else a
    /// fresh pair. Setting only one of the two is a mistake, reported as such.
    pub fn from_env_or_generate(env: impl Fn(&str) -> Option<String>) -> Result<CurveKeys> {
        let get = |name| env(name).filter(|v: &String| !v.trim().is_empty());
        match (get("IPP_CURVE_PUBLICKEY"), get("IPP_CURVE_SECRETKEY")) {
            (Some(public), Some(secret)) => CurveKeys::from_z85(public.trim(), secret.trim()),
            (None, None) => CurveKeys::generate(),
            _ => Err(ControllerError::Curve {
                reason: "set both IPP_CURVE_PUBLICKEY and IPP_CURVE_SECRETKEY, or neither \
                         (then a fresh key pair is made)"
                    .into(),
            }),
        }
    }

    /// Makes `sock` a CURVE server with this key; call before `bind`.
    pub(crate) fn serve(&self, sock: &zmq::Socket) -> zmq::Result<()> {
        sock.set_curve_server(true)?;
        sock.set_curve_secretkey(&decode(&self.secret).map_err(|_| zmq::Error::EINVAL)?)
    }

    /// Makes `sock` a CURVE client of this controller itself (the hub's resubmission
    /// socket connects to the task scheduler); call before `connect`.
    pub(crate) fn connect_to_self(&self, sock: &zmq::Socket) -> zmq::Result<()> {
        let public = decode(&self.public).map_err(|_| zmq::Error::EINVAL)?;
        sock.set_curve_serverkey(&public)?;
        sock.set_curve_publickey(&public)?;
        sock.set_curve_secretkey(&decode(&self.secret).map_err(|_| zmq::Error::EINVAL)?)
    }
}

/// Z85 text to the 32-byte key, or why not.
fn decode(z85: &str) -> std::result::Result<Vec<u8>, String> {
    if z85.len() != 40 {
        return Err(format!(
            "expected 40 Z85 characters, got {} characters",
            z85.len()
        ));
    }
    zmq::z85_decode(z85).map_err(|e| format!("not Z85: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_build_has_curve() {
        assert_eq!(
            zmq::has("curve"),
            Some(true),
            "libzmq was built without CURVE: install libsodium-dev (`make sodium`)"
        );
    }

    #[test]
    fn generated_keys_round_trip_and_stay_out_of_debug_output() {
        let keys = CurveKeys::generate().unwrap();
        assert_eq!((keys.public.len(), keys.secret.len()), (40, 40));
        assert_eq!(
            CurveKeys::from_z85(&keys.public, &keys.secret).unwrap(),
            keys
        );
        assert!(!format!("{keys:?}").contains(&keys.secret));
    }

    #[test]
    fn keys_from_the_environment() {
        let given = CurveKeys::generate().unwrap();
        let env = |name: &str| match name {
            "IPP_CURVE_PUBLICKEY" => Some(given.public.clone()),
            "IPP_CURVE_SECRETKEY" => Some(given.secret.clone()),
            _ => None,
        };
        assert_eq!(CurveKeys::from_env_or_generate(env).unwrap(), given);
        let only_public =
            |name: &str| (name == "IPP_CURVE_PUBLICKEY").then(|| given.public.clone());
        let err = CurveKeys::from_env_or_generate(only_public).unwrap_err();
        assert!(err.to_string().contains("both"), "{err}");
        let err = CurveKeys::from_z85("short", &given.secret).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
        assert_ne!(CurveKeys::from_env_or_generate(|_| None).unwrap(), given);
    }
}
