//! Asking a running tunnel to stop as Ctrl-C stops it (stop accepting, let connections finish,
//! close the agent and its sockets, exit 0).
//!
//! On Unix that is SIGTERM, which every podtun already handles. Windows has no SIGTERM for a
//! process without a console: there each tunnel serves a named pipe `\\.\pipe\podtun-ID`, and a
//! connection to it is the request.

use std::time::Duration;

use super::paths::Paths;
use super::state::State;

/// Bound on a tunnel's exit after it was asked to stop (the 3 s grace and the agent's exit
/// included, with room for a loaded machine).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How often a stop polls for the tunnel's end.
const POLL: Duration = Duration::from_millis(100);

/// Resolves when another podtun asks this tunnel to stop (never, on Unix: SIGTERM is the
/// request there).
pub async fn stop_requested(id: &str) {
    #[cfg(windows)]
    {
        windows::serve(id).await
    }
    #[cfg(not(windows))]
    {
        let _ = id;
        std::future::pending::<()>().await
    }
}

/// Asks the tunnel to stop and waits until its process has gone.
pub async fn stop(paths: &Paths, state: &State) -> anyhow::Result<()> {
    if !paths.alive() {
        paths.clean();
        return Ok(());
    }
    request(&state.id, state.pid)?;
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    while paths.alive() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "tunnel `{}` (pid {}) did not stop within {}s",
                state.id,
                state.pid,
                STOP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // A tunnel that stopped cleanly removed its state; one that failed on the way left it.
    paths.clean();
    Ok(())
}

/// Asks the tunnel `id`, process `pid`, to stop (SIGTERM).
#[cfg(unix)]
pub fn request(id: &str, pid: u32) -> anyhow::Result<()> {
    use anyhow::Context;
    use rustix::process::{kill_process, Pid, Signal};
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .with_context(|| format!("tunnel `{id}` has no valid pid"))?;
    kill_process(raw, Signal::TERM)
        .with_context(|| format!("could not signal tunnel `{id}` (pid {pid})"))
}

/// Asks the tunnel `id` to stop (through its pipe).
#[cfg(windows)]
pub fn request(id: &str, _pid: u32) -> anyhow::Result<()> {
    windows::request(id)
}

#[cfg(windows)]
mod windows {
    use anyhow::Context;
    use tokio::net::windows::named_pipe::{ClientOptions, ServerOptions};

    fn pipe_name(id: &str) -> String {
        format!(r"\\.\pipe\podtun-{id}")
    }

    /// Serves the tunnel's pipe; resolves on the first connection.
    pub async fn serve(id: &str) {
        let name = pipe_name(id);
        let server = match ServerOptions::new().first_pipe_instance(true).create(&name) {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(
                    "could not serve {name}: {e}; `podtun stop` cannot reach this tunnel"
                );
                return std::future::pending().await;
            }
        };
        if server.connect().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Connects to the tunnel's pipe: that is the request.
    pub fn request(id: &str) -> anyhow::Result<()> {
        let name = pipe_name(id);
        ClientOptions::new()
            .open(&name)
            .map(drop)
            .with_context(|| format!("could not reach tunnel `{id}` on {name}"))
    }
}
