//! A script of podtun's on the login host, over an exec channel in the user's login environment:
//! the lines it marks come in, heartbeats and EOF go out, and its life is the channel's.
//!
//! Used by kubectl mode (the script that runs `kubectl proxy`) and by `jupyter @` (the script
//! that lists or starts Jupyter servers).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::channel::{Heartbeat, Line, Printed, Running, Stdin};
use super::exec::in_login_shell;
use super::session::SshSession;

/// A script running on the login host.
pub struct RemoteScript {
    write: Arc<Stdin>,
    /// Its marked lines, mark removed, in order.
    pub lines: mpsc::UnboundedReceiver<String>,
    exited: watch::Receiver<bool>,
    host: String,
    /// How the log names it.
    what: &'static str,
}

impl RemoteScript {
    /// Starts `script` in a login shell; lines starting with `mark` are its reports.
    pub async fn start(
        ssh: &SshSession,
        script: &str,
        mark: &'static str,
        what: &'static str,
    ) -> anyhow::Result<RemoteScript> {
        let host = ssh.host().to_string();
        let Running {
            output: read,
            input: write,
        } = ssh.exec(&in_login_shell(script)).await?;
        let (lines_tx, lines) = mpsc::unbounded_channel();
        let (exited_tx, exited) = watch::channel(false);
        let reader = Reader {
            lines: lines_tx,
            exited: exited_tx,
            host: host.clone(),
            mark,
            what,
        };
        tokio::spawn(reader.run(read));
        Ok(RemoteScript {
            write: Arc::new(write),
            lines,
            exited,
            host,
            what,
        })
    }

    /// The login host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The channel's writing half, for heartbeats from a task of their own.
    pub fn writer(&self) -> Arc<Stdin> {
        self.write.clone()
    }

    /// Tells the script the laptop is still there (an empty line) every `every`, until the
    /// [`Heartbeat`] is dropped.
    pub fn heartbeat(&self, every: Duration) -> Heartbeat {
        Heartbeat::start(self.write.clone(), every)
    }

    /// Closes the script's stdin without waiting.
    pub async fn eof(&self) {
        self.write.eof().await.ok();
    }

    /// Resolves once the channel closed (the script ended).
    pub async fn ended(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|done| *done).await;
    }

    /// Closes the script's stdin (it cleans up what it started) and waits for its end, at most
    /// `within`.
    pub async fn stop(&self, within: Duration) {
        self.eof().await;
        if tokio::time::timeout(within, self.ended()).await.is_err() {
            debug!(host = %self.host, "{}'s channel did not close in time", self.what);
        }
    }
}

/// Reads a script's channel to its end.
struct Reader {
    lines: mpsc::UnboundedSender<String>,
    exited: watch::Sender<bool>,
    host: String,
    mark: &'static str,
    what: &'static str,
}

impl Reader {
    /// Marked lines go to `lines` (never to the log: they may carry tokens), the login shell's
    /// own output and stderr to the debug log. `lines` is unbounded so that nothing here waits
    /// on its reader: an unread channel would stall the whole SSH connection.
    async fn run(self, read: Printed) {
        let host = &self.host;
        let mut lines = read.lines();
        while let Some(line) = lines.next().await {
            match line {
                Line::Stdout(line) => match line.strip_prefix(self.mark) {
                    // Nobody listening any more is fine: the channel is still read.
                    Some(ours) => {
                        let _ = self.lines.send(ours.trim_start().to_string());
                    }
                    None => debug!(%host, "login shell: {line}"),
                },
                Line::Stderr(line) => debug!(%host, "{}: {line}", self.what),
                Line::Exit(exit_status) => debug!(%host, exit_status, "{} exited", self.what),
            }
        }
        let _ = self.exited.send(true);
    }
}
