//! A tunnel's state file: what `ls` shows.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a tunnel is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connecting, waiting for the pod.
    Starting,
    /// Every forward answers.
    Ready,
    /// The link to the login host is down; podtun is reconnecting.
    Reconnecting,
    /// It stopped on an error (shown once by `ls`, then cleaned).
    Failed,
    /// Its process died without cleaning up (shown once by `ls`, then cleaned).
    Gone,
}

impl Phase {
    /// The word `ls` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Reconnecting => "reconnecting",
            Phase::Failed => "failed",
            Phase::Gone => "gone",
        }
    }
}

/// One forwarded port of a tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// `127.0.0.1:8888`.
    pub local: String,
    /// Port in the pod.
    pub remote_port: u16,
    /// The pod serving it.
    pub pod: String,
    /// Jupyter's URL (with its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What runs the cluster half through the login host: `podtun` or `kubectl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A tunnel's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Short id, a digest of the identity.
    pub id: String,
    /// The target as the user gave it.
    pub target: String,
    /// `jupyter`, `redis` or `generic`.
    pub preset: String,
    /// The SSH route (`bastion,login`); none: local mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `-n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The tunnel's process.
    pub pid: u32,
    /// Started in the background (`-d`).
    pub detached: bool,
    /// What it is doing.
    pub state: Phase,
    /// Since when (seconds since the Unix epoch).
    pub since: u64,
    /// The forwards, once ready.
    pub forwards: Vec<Forward>,
    /// The last error reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
