//! Connection files in ipyparallel's format and place:
//! `<profile_dir>/security/ipcontroller[-<cluster_id>]-{client,engine}.json`, JSON with
//! two-space indent, mode 0600 because they hold the cluster key.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::error::{Result, WireError};

/// What the client file says: where each client-facing socket of the controller listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientConnection {
    #[serde(default)]
    pub ssh: String,
    pub interface: String,
    pub registration: u16,
    pub control: u16,
    pub mux: u16,
    pub task: u16,
    #[serde(default = "default_scheme")]
    pub task_scheme: String,
    pub iopub: u16,
    /// corral's own IOPub endpoint (a ROUTER with a conflating queue per subscriber, see
    /// docs/PROTOCOL.md §11); absent in stock files, and stock clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corral_iopub: Option<u16>,
    /// The controller's web dashboard, `http://ip:port/?token=...` (`--dashboard-port`);
    /// absent when it is off. Stock clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corral_dashboard_url: Option<String>,
    pub notification: u16,
    pub broadcast: u16,
    pub key: String,
    #[serde(default)]
    pub curve_serverkey: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default = "default_pack")]
    pub pack: String,
    #[serde(default = "default_pack")]
    pub unpack: String,
    #[serde(default = "default_signature_scheme")]
    pub signature_scheme: String,
}

/// What the engine file says: the engine-facing ports (one broadcast port per leaf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConnection {
    #[serde(default)]
    pub ssh: String,
    pub interface: String,
    pub registration: u16,
    pub control: u16,
    pub mux: u16,
    pub task: u16,
    pub iopub: u16,
    pub hb_ping: u16,
    pub hb_pong: u16,
    pub broadcast: Vec<u16>,
    pub key: String,
    #[serde(default)]
    pub curve_serverkey: Option<String>,
    #[serde(default)]
    pub location: String,
    #[serde(default = "default_pack")]
    pub pack: String,
    #[serde(default = "default_pack")]
    pub unpack: String,
    #[serde(default = "default_signature_scheme")]
    pub signature_scheme: String,
}

/// The controller's CurveZMQ public key as ipyparallel's client and engine find it: the
/// connection file's `curve_serverkey`, else `$IPP_CURVE_SERVERKEY`. `None` (or empty)
/// means the controller does not use CURVE.
pub fn curve_serverkey(
    in_file: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    in_file
        .map(str::to_owned)
        .filter(|k| !k.trim().is_empty())
        .or_else(|| env("IPP_CURVE_SERVERKEY"))
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
}

fn default_scheme() -> String {
    "leastload".into()
}
fn default_pack() -> String {
    "json".into()
}
fn default_signature_scheme() -> String {
    "hmac-sha256".into()
}

impl ClientConnection {
    /// `tcp://host:port` for one of the ports of this file.
    pub fn url(&self, port: u16) -> String {
        format!("{}:{}", self.interface, port)
    }
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
    /// The controller's CURVE public key, if it uses CURVE (see [`curve_serverkey`]).
    pub fn curve_server(&self) -> Option<String> {
        curve_serverkey(self.curve_serverkey.as_deref(), |n| std::env::var(n).ok())
    }
}

impl EngineConnection {
    pub fn url(&self, port: u16) -> String {
        format!("{}:{}", self.interface, port)
    }
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }
    /// The controller's CURVE public key, if it uses CURVE (see [`curve_serverkey`]).
    pub fn curve_server(&self) -> Option<String> {
        curve_serverkey(self.curve_serverkey.as_deref(), |n| std::env::var(n).ok())
    }
}

fn file_error(path: &Path, reason: impl ToString) -> WireError {
    WireError::ConnectionFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| file_error(path, e))
}

/// Writes atomically (temp file + rename) with mode 0600 from the start, so the key is
/// never readable by others, and a reader never sees half a file. The folder is made 0700,
/// as IPython makes a profile's `security/`, and the temporary file has a fresh random name
/// opened with `O_EXCL`, so a file or link planted in its place is never written through.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| file_error(path, e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("connection");
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::header::new_id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| file_error(path, e))?;
    let text = serde_json::to_string_pretty(value).map_err(|e| file_error(path, e))?;
    let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    drop(f);
    let renamed = written.and_then(|_| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed.map_err(|e| file_error(path, e))
}

/// Creates `dir` (and its parents) if missing; a folder this call creates is mode 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Where a cluster's files live: an IPython profile directory plus an optional cluster id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileLocation {
    pub profile_dir: PathBuf,
    pub cluster_id: String,
}

impl ProfileLocation {
    /// Resolves like IPython: an explicit profile dir wins; otherwise
    /// `$IPYTHONDIR/profile_<profile>` (default `~/.ipython`, profile `default`).
    pub fn resolve(profile_dir: Option<&Path>, profile: Option<&str>, cluster_id: &str) -> Self {
        let profile_dir = match profile_dir {
            Some(dir) => dir.to_path_buf(),
            None => {
                let ipython_dir = std::env::var_os("IPYTHONDIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
                        PathBuf::from(home).join(".ipython")
                    });
                ipython_dir.join(format!("profile_{}", profile.unwrap_or("default")))
            }
        };
        ProfileLocation {
            profile_dir,
            cluster_id: cluster_id.to_string(),
        }
    }

    pub fn security_dir(&self) -> PathBuf {
        self.profile_dir.join("security")
    }

    /// `ipcontroller[-<cluster_id>]-<role>.json`, role being `client` or `engine`.
    pub fn connection_file(&self, role: &str) -> PathBuf {
        let name = if self.cluster_id.is_empty() {
            format!("ipcontroller-{role}.json")
        } else {
            format!("ipcontroller-{}-{role}.json", self.cluster_id)
        };
        self.security_dir().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPTURED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/connection");

    #[test]
    fn reads_captured_files_and_writes_them_back_0600() {
        let client =
            ClientConnection::read(&Path::new(CAPTURED).join("ipcontroller-client.json")).unwrap();
        assert_eq!(client.task_scheme, "leastload");
        assert_eq!(client.url(client.mux), "tcp://127.0.0.1:46745");
        let engine =
            EngineConnection::read(&Path::new(CAPTURED).join("ipcontroller-engine.json")).unwrap();
        assert_eq!(engine.broadcast.len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security/ipcontroller-client.json");
        client.write(&path).unwrap();
        assert_eq!(ClientConnection::read(&path).unwrap(), client);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Same key order as ipyparallel writes.
        let original =
            std::fs::read_to_string(Path::new(CAPTURED).join("ipcontroller-client.json")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }

    #[cfg(unix)]
    #[test]
    fn security_folder_is_private_and_a_planted_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let security = dir.path().join("profile/security");
        let path = security.join("ipcontroller-client.json");
        let client =
            ClientConnection::read(&Path::new(CAPTURED).join("ipcontroller-client.json")).unwrap();
        client.write(&path).unwrap();
        let mode = std::fs::metadata(&security).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // A link planted at the file's name is replaced, never written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        client.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        let leftovers = std::fs::read_dir(&security).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn file_names_follow_ipyparallel() {
        let loc = ProfileLocation::resolve(Some(Path::new("/p")), None, "");
        assert_eq!(
            loc.connection_file("client"),
            Path::new("/p/security/ipcontroller-client.json")
        );
        let loc = ProfileLocation::resolve(Some(Path::new("/p")), None, "abc");
        assert_eq!(
            loc.connection_file("engine"),
            Path::new("/p/security/ipcontroller-abc-engine.json")
        );
    }

    #[test]
    fn curve_serverkey_comes_from_the_file_then_the_environment() {
        let env = |name: &str| (name == "IPP_CURVE_SERVERKEY").then(|| "from-env".to_string());
        assert_eq!(curve_serverkey(Some("k"), env).as_deref(), Some("k"));
        assert_eq!(curve_serverkey(None, env).as_deref(), Some("from-env"));
        assert_eq!(curve_serverkey(Some(""), env).as_deref(), Some("from-env"));
        assert_eq!(curve_serverkey(None, |_| None), None);
        assert_eq!(curve_serverkey(None, |_| Some(" ".into())), None);
        // Stock files say `"curve_serverkey": null` when CURVE is off.
        let client =
            ClientConnection::read(&Path::new(CAPTURED).join("ipcontroller-client.json")).unwrap();
        assert_eq!(client.curve_serverkey, None);
    }

    #[test]
    fn missing_file_names_its_path() {
        let err = ClientConnection::read(Path::new("/nonexistent/x.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.json"));
    }
}
