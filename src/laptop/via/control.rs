//! The agent's control channel: its events in, the request and the laptop's heartbeats out,
//! EOF to stop it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::launched::Launching;
use crate::cluster::discover::Preset;
use crate::error::hinted;
use crate::laptop::ssh::channel::{Line, Printed, Stdin};
use crate::laptop::ssh::exec;
use crate::laptop::ssh::{Heartbeat, Running, SshSession};
use crate::output::Output;
use crate::proto::refusal::ForwardRefused;
use crate::proto::wire::Resolved;

use crate::proto::wire::{
    Candidates, ClusterEvent, Hello, JupyterAccess, Kind, Pick, Request, HEARTBEAT_SECS, PROTOCOL,
    VERSION,
};

/// Bound on the agent's `hello` after it was started (shell start-up included).
const AGENT_HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the agent's exit after its stdin closed.
const AGENT_EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// An error as the agent said it, marked as coming from the login host (a refused
/// port-forward keeps its type).
pub(crate) fn remote_error(
    host: &str,
    message: String,
    hint: Option<String>,
    refused: Option<ForwardRefused>,
) -> anyhow::Error {
    crate::proto::wire::remote_error(host, message, hint, refused)
}

/// The agent's control channel: events in, the request out, heartbeats from the start (a pod
/// may take minutes to start), EOF to stop it.
pub(crate) struct Agent {
    pub(super) events: mpsc::Receiver<ClusterEvent>,
    write: Arc<Stdin>,
    pub(super) beats: Heartbeat,
    exited: tokio::sync::watch::Receiver<bool>,
    host: String,
}

impl Agent {
    /// Starts `BIN agent` on the login host and sends it `request`, for `kind` of work.
    pub(crate) async fn start(
        ssh: &SshSession,
        bin: &str,
        request: &Request,
        kind: Kind,
    ) -> anyhow::Result<Agent> {
        let host = ssh.host().to_string();
        let verbose = if tracing::enabled!(tracing::Level::DEBUG) {
            " -v"
        } else {
            ""
        };
        // In the login environment, so that the agent's kubectl settings (KUBECONFIG from
        // ~/.profile) are the user's; what login scripts print is skipped until `hello`.
        let command = exec::in_login_shell(&format!("exec {bin} agent{verbose}"));
        let Running {
            output: read,
            input: write,
        } = ssh.exec(&command).await?;
        let (tx, mut events) = mpsc::channel(64);
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        tokio::spawn(read_agent(read, tx, exited_tx, host.clone()));
        match tokio::time::timeout(AGENT_HELLO_TIMEOUT, events.recv()).await {
            Ok(Some(ClusterEvent::Hello { version, protocol })) => {
                if protocol != PROTOCOL {
                    return Err(hinted(
                        anyhow!("the agent on login host `{host}` is podtun {version} (protocol {protocol}); this podtun is {VERSION} (protocol {PROTOCOL})"),
                        "install the same version on the login host, or drop --remote-bin to let podtun upload itself",
                    ));
                }
                debug!(%host, %version, "agent started");
            }
            Ok(Some(other)) => bail!("the agent on `{host}` sent {other:?} before hello"),
            Ok(None) => return Err(hinted(
                anyhow!("could not start the agent on login host `{host}`"),
                "check that podtun runs there (`-v` shows its output), or pass --remote-bin PATH",
            )),
            Err(_) => bail!(
                "the agent on login host `{host}` did not start within {}s",
                AGENT_HELLO_TIMEOUT.as_secs()
            ),
        }
        let hello = Hello {
            v: PROTOCOL,
            request: request.clone(),
            heartbeat_secs: Some(HEARTBEAT_SECS),
            kind,
        };
        let mut line = serde_json::to_vec(&hello)?;
        line.push(b'\n');
        write
            .send(&line)
            .await
            .with_context(|| format!("could not send the request to the agent on `{host}`"))?;
        let write = Arc::new(write);
        let beats = Heartbeat::start(write.clone(), Duration::from_secs(HEARTBEAT_SECS));
        Ok(Agent {
            events,
            write,
            beats,
            exited,
            host,
        })
    }

    /// The next event; `None` once the agent's channel closed.
    pub(crate) async fn next(&mut self) -> Option<ClusterEvent> {
        self.events.recv().await
    }

    /// Reads events until the agent listens (and, for Jupyter, reported its token).
    pub(super) async fn until_listening(
        &mut self,
        out: &Output,
        preset: Preset,
        launching: &mut Launching<'_>,
    ) -> anyhow::Result<(Resolved, Vec<String>, Option<JupyterAccess>)> {
        let (mut resolved, mut sockets) = (None, None);
        loop {
            let event = self.next().await.ok_or_else(|| {
                anyhow!("the agent on login host `{}` ended unexpectedly", self.host)
            })?;
            match event {
                ClusterEvent::Progress { message } => out.progress(&message),
                ClusterEvent::Error {
                    message,
                    hint,
                    refused,
                } => return Err(remote_error(&self.host, message, hint, refused)),
                ev @ ClusterEvent::Resolved { .. } => resolved = Resolved::from_event(&ev),
                ClusterEvent::Candidates(offered) => self.answer(&offered, out).await?,
                ClusterEvent::Launched { namespace, pod } => {
                    launching.launched(&namespace, &pod, out).await?;
                }
                ClusterEvent::Listening { sockets: s } => {
                    sockets = Some(s);
                    if preset != Preset::Jupyter {
                        break;
                    }
                }
                ClusterEvent::Token(access) => {
                    let (Some(r), Some(s)) = (resolved, sockets) else {
                        bail!("the agent on `{}` sent its token too early", self.host);
                    };
                    return Ok((r, s, Some(access)));
                }
                other => debug!(?other, "agent event"),
            }
        }
        match (resolved, sockets) {
            (Some(r), Some(s)) if s.len() == r.ports.len() => Ok((r, s, None)),
            _ => bail!("the agent on `{}` reported no usable sockets", self.host),
        }
    }

    /// Several pods fit and no TARGET was given: the user's choice (or none, without a
    /// terminal) goes back to the agent. Heartbeats go on while the user thinks.
    async fn answer(&self, offered: &Candidates, out: &Output) -> anyhow::Result<()> {
        let choice = crate::laptop::pick::choose(offered, out).await;
        let mut line = serde_json::to_vec(&Pick {
            pick: choice.as_ref().ok().cloned(),
        })?;
        line.push(b'\n');
        self.write.send(&line).await.with_context(|| {
            format!("could not send the choice to the agent on `{}`", self.host)
        })?;
        choice.map(|_| ())
    }

    /// Closes the agent's stdin (it removes its sockets and exits) and waits a little for it.
    pub(crate) async fn stop(&mut self) {
        self.write.eof().await.ok();
        let mut exited = self.exited.clone();
        let wait = exited.wait_for(|done| *done);
        if tokio::time::timeout(AGENT_EXIT_TIMEOUT, wait)
            .await
            .is_err()
        {
            warn!(host = %self.host, "the agent did not exit in time");
        }
    }
}

/// Reads the agent's channel: stdout lines become events (lines before `hello` are shell
/// noise, shown with `-v`), stderr goes to the log at debug level.
async fn read_agent(
    read: Printed,
    events: mpsc::Sender<ClusterEvent>,
    exited: tokio::sync::watch::Sender<bool>,
    host: String,
) {
    let mut lines = read.lines();
    let mut started = false;
    while let Some(line) = lines.next().await {
        match line {
            Line::Stdout(line) => match serde_json::from_str::<ClusterEvent>(line.trim()) {
                Ok(event) => {
                    started |= matches!(event, ClusterEvent::Hello { .. });
                    if started && events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(_) if !started => debug!(%host, "login shell: {line}"),
                Err(e) => warn!(%host, %e, "unreadable line from the agent"),
            },
            Line::Stderr(line) => debug!(%host, "agent: {line}"),
            Line::Exit(exit_status) => debug!(%host, exit_status, "agent exited"),
        }
    }
    let _ = exited.send(true);
}
