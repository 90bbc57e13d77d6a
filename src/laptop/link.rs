//! Staying connected to the login host: how to connect, why serving over one connection
//! ended ([`Ended`]), which failures retrying cannot fix, the pause between attempts, and how
//! long a new local connection waits for the link to come back.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;

use super::ssh::{SshOptions, SshSession};
use crate::output::Output;
use crate::plan::Plan;

/// Bound on how long a new local connection waits for the link to the login host to come back.
pub const LINK_WAIT: Duration = Duration::from_secs(60);
/// First pause before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest pause between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Why serving over one SSH connection ended (via mode, `jupyter @`, Slurm jobs).
pub enum Ended {
    /// Ctrl-C/SIGTERM.
    Shutdown,
    /// The login host, the agent or the server went away: reconnect.
    Lost(String),
    /// Failed for good.
    Fatal(anyhow::Error),
}

/// How to connect to the login host.
pub fn ssh_options(plan: &Plan) -> SshOptions {
    SshOptions {
        config_file: plan.ssh_config.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        // `~` is $HOME, as for the rest of the user's tools (OpenSSH itself reads passwd).
        home: std::env::var_os("HOME").map(std::path::PathBuf::from),
        ..SshOptions::default()
    }
}

/// Connects to the login host (through the jump hosts), saying so.
pub async fn connect(plan: &Plan, out: &Output) -> anyhow::Result<SshSession> {
    out.progress(&format!("connecting to {}", plan.via.join(" → ")));
    SshSession::connect(&plan.via, &ssh_options(plan)).await
}

/// Failures that retrying cannot fix: a changed host key, refused credentials.
pub fn is_permanent(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || text.contains("permission denied")
}

/// Capped exponential backoff with jitter: 1 s, 2 s, 4 s … 30 s, each ±20%.
pub fn backoff(failures: u32) -> Duration {
    let base = RECONNECT_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(RECONNECT_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(jitter)
}

/// Where a new local connection goes: the current route once the link to `host` is up, waiting
/// at most `within` while podtun reconnects.
pub async fn route_when_up<T>(
    route: &mut watch::Receiver<Option<Arc<T>>>,
    within: Duration,
    host: &str,
) -> anyhow::Result<Arc<T>> {
    let up = tokio::time::timeout(within, async {
        route.wait_for(Option::is_some).await.map(|g| g.clone())
    })
    .await;
    match up {
        Ok(Ok(current)) => current.context("no route"),
        _ => bail!("{host} was unreachable for {}s", within.as_secs()),
    }
}
