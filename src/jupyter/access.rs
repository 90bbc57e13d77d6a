//! The parts of a Jupyter URL that podtun serves on its own local address.

use serde::{Deserialize, Serialize};

use super::Token;

/// How to reach a Jupyter server through a local port: its token and the path to open, as
/// its logs or its server file say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JupyterAccess {
    /// The token, if the server has one and it is known.
    pub token: Option<Token>,
    /// Base path for the API (`/` or `/user/alice/`).
    pub base_path: String,
    /// Path to open (`/lab`).
    pub path: String,
    /// What the user should know (no token; token set by config).
    #[serde(default)]
    pub note: Option<String>,
}
