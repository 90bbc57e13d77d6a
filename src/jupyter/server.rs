//! The server files Jupyter writes in its runtime directory: `jpserver-PID.json` (Jupyter
//! Server) or `nbserver-PID.json` (Notebook < 7). Read on an SSH host and in a Slurm job.

use serde::Deserialize;

/// The fields of a `jpserver-*.json` (Jupyter Server) or `nbserver-*.json` (Notebook < 7) that
/// podtun reads: on the SSH host, and in the runtime dir of a Slurm job.
#[derive(Deserialize)]
pub struct ServerInfo {
    /// Its process id.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Its TCP port (0 on a socket only).
    #[serde(default)]
    pub port: u16,
    /// What the server was told to listen on (`--ip`): a name, an address, or a wildcard.
    #[serde(default)]
    pub hostname: String,
    /// Its Unix socket, if any.
    #[serde(default)]
    pub sock: String,
    /// Its token (empty: a password, or none).
    #[serde(default)]
    pub token: String,
    /// Its base URL as written (see [`ServerInfo::base_url`]).
    #[serde(default)]
    pub base_url: String,
    /// Where its files are (Jupyter Server).
    #[serde(default)]
    pub root_dir: String,
    /// Where its files are (Notebook < 7).
    #[serde(default)]
    pub notebook_dir: String,
    /// Served over TLS (`--certfile`).
    #[serde(default)]
    pub secure: bool,
}

impl ServerInfo {
    /// Its base URL, always starting and ending with `/`.
    pub fn base_url(&self) -> String {
        let mut base_url = self.base_url.clone();
        if !base_url.starts_with('/') {
            base_url.insert(0, '/');
        }
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        base_url
    }
}
