//! The server files Jupyter writes in its runtime directory: `jpserver-PID.json` (Jupyter
//! Server) or `nbserver-PID.json` (Notebook < 7), read on an SSH host and in a Slurm job, and
//! the one [`Server`] type podtun makes of them.

use serde::Deserialize;

use super::access::JupyterAccess;
use super::Token;

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

/// One Jupyter server, as its server file describes it (on an SSH host, in a Slurm job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its process (0 when the file names none).
    pub pid: u32,
    /// What it was told to listen on (`--ip`): a name, an address, or a wildcard.
    pub hostname: String,
    /// Its TCP port (0 when it listens on a socket only).
    pub port: u16,
    /// Where to connect on its own host, for a TCP server: 127.0.0.1 unless it listens on one
    /// address only.
    pub address: String,
    /// Its Unix socket, if it listens on one.
    pub sock: Option<String>,
    /// Its token (none: password or no authentication).
    pub token: Option<Token>,
    /// Its base URL, `/` or `/user/alice/` (always ends with `/`).
    pub base_url: String,
    /// Where its files are.
    pub root_dir: String,
    /// Served over TLS (`--certfile`).
    pub secure: bool,
    /// Jupyter Notebook < 7 (`nbserver-*.json`): its page is `tree`, not `lab`.
    pub classic: bool,
}

impl Server {
    /// Parses one server file's JSON.
    pub fn from_json(json: &str) -> Result<Server, serde_json::Error> {
        let info: ServerInfo = serde_json::from_str(json)?;
        let classic = !info.notebook_dir.is_empty() && info.root_dir.is_empty();
        let base_url = info.base_url();
        let address = match info.hostname.as_str() {
            "" | "localhost" | "0.0.0.0" | "*" | "::" | "[::]" | "127.0.0.1" => "127.0.0.1",
            one => one.trim_start_matches('[').trim_end_matches(']'),
        };
        Ok(Server {
            pid: info.pid.unwrap_or(0),
            address: address.to_string(),
            hostname: info.hostname,
            port: info.port,
            sock: Some(info.sock).filter(|s| !s.is_empty()),
            token: Token::new(&info.token),
            base_url,
            root_dir: if classic {
                info.notebook_dir
            } else {
                info.root_dir
            },
            secure: info.secure,
            classic,
        })
    }

    /// Where it listens, for messages: `port 8888` or `socket /run/…/jupyter.sock`.
    pub fn listens_on(&self) -> String {
        match &self.sock {
            Some(sock) => format!("socket {sock}"),
            None => format!("port {}", self.port),
        }
    }

    /// The page to open below the base URL.
    pub fn page(&self) -> &'static str {
        if self.classic {
            "tree"
        } else {
            "lab"
        }
    }

    /// How to reach it; `no_token` is the note for a server without a token.
    pub fn access(&self, no_token: impl FnOnce() -> String) -> JupyterAccess {
        JupyterAccess {
            token: self.token.clone(),
            base_path: self.base_url.clone(),
            path: format!("{}{}", self.base_url, self.page()),
            note: self.token.is_none().then(no_token),
        }
    }
}
