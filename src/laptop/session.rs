//! Via mode: one SSH connection to the login host, the agent started over an exec channel,
//! and one SSH channel per local connection to the agent's private socket
//! (`direct-streamlocal@openssh.com`, or `podtun agent pipe SOCKET` when the server refuses
//! stream-local forwarding).

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use russh::ChannelMsg;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::install;
use super::listener;
use super::run::{self, Resolved};
use super::ssh::{OpenError, SshOptions, SshSession};
use crate::cluster::discover::Preset;
use crate::error::hinted;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::splice::splice;
use crate::wire::{AgentEvent, Hello, JupyterAccess, PROTOCOL, VERSION};

/// Bound on the agent's `hello` after it was started (shell start-up included).
const AGENT_HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the agent's exit after its stdin closed.
const AGENT_EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// Via mode: reach the cluster through the login host.
pub async fn run_via(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let early = run::bind_named(plan)?;
    out.progress(&format!("connecting to {}", plan.via.join(" → ")));
    let options = SshOptions {
        config_file: plan.ssh_config.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        // `~` is $HOME, as for the rest of the user's tools (OpenSSH itself reads passwd).
        home: std::env::var_os("HOME").map(std::path::PathBuf::from),
        ..SshOptions::default()
    };
    let ssh = SshSession::connect(&plan.via, &options).await?;
    let host = ssh.host().to_string();
    out.progress(&format!("starting the agent on `{host}`"));
    let bin = install::agent_binary(&ssh, plan).await?;
    let mut agent = Agent::start(&ssh, &bin, plan).await?;
    let result = serve(plan, &out, &ssh, &bin, &mut agent, early, shutdown).await;
    agent.stop().await;
    ssh.disconnect().await;
    result?;
    out.event(&Event::Closed);
    Ok(())
}

async fn serve(
    plan: &Plan,
    out: &Arc<Output>,
    ssh: &SshSession,
    bin: &str,
    agent: &mut Agent,
    early: Vec<Option<tokio::net::TcpListener>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (resolved, sockets, jupyter) = agent.until_listening(out, plan.spec.preset).await?;
    let listeners = run::bind_all(plan, &resolved, early)?;
    let transport = Arc::new(Transport {
        ssh: ssh.clone(),
        bin: bin.to_string(),
        exec_fallback: AtomicBool::new(false),
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut locals: Vec<SocketAddr> = Vec::new();
    for (listener, socket) in listeners.into_iter().zip(sockets) {
        locals.push(listener.local_addr()?);
        let transport = transport.clone();
        listener::serve(listener, cancel.clone(), &tracker, move |conn| {
            let (transport, socket) = (transport.clone(), socket.clone());
            async move { transport.forward(&socket, conn).await }
        });
    }
    let progress = |m: &str| out.progress(m);
    let result = async {
        run::wait_usable(plan, &locals, jupyter.as_ref(), &progress).await?;
        run::report_ready(plan, out, &resolved, &locals, jupyter.as_ref());
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = ssh.closed() => bail!("lost the connection to login host `{}`", ssh.host()),
                event = agent.next() => match event {
                    Some(AgentEvent::Error { message, hint }) => return Err(remote_error(ssh.host(), message, hint)),
                    Some(event) => run::on_agent_event(out, &locals, event),
                    None => bail!("the agent on login host `{}` ended", ssh.host()),
                },
            }
        }
    }
    .await;
    run::drain(cancel, tracker).await;
    result
}

/// An error as the agent said it, marked as coming from the login host.
fn remote_error(host: &str, message: String, hint: Option<String>) -> anyhow::Error {
    let err = anyhow!("on login host `{host}`: {message}");
    match hint {
        Some(hint) => hinted(err, hint),
        None => err,
    }
}

/// How connections reach the agent's sockets.
struct Transport {
    ssh: SshSession,
    bin: String,
    /// Set once the server refused stream-local forwarding.
    exec_fallback: AtomicBool,
}

impl Transport {
    /// Carries one local connection to `socket` on the login host.
    async fn forward(&self, socket: &str, conn: tokio::net::TcpStream) -> anyhow::Result<()> {
        let channel = if self.exec_fallback.load(Ordering::Relaxed) {
            self.pipe(socket).await?
        } else {
            match self.ssh.open_streamlocal(socket).await {
                Ok(channel) => channel,
                // The agent reported this socket as listening: a refusal means the server
                // does not allow stream-local forwarding.
                Err(OpenError::Prohibited { .. } | OpenError::Refused { .. }) => {
                    if !self.exec_fallback.swap(true, Ordering::Relaxed) {
                        info!(host = %self.ssh.host(), "stream-local forwarding refused by the server; using the exec fallback (podtun agent pipe)");
                    }
                    self.pipe(socket).await?
                }
                Err(e) => return Err(e.into()),
            }
        };
        let moved = splice(conn, channel.into_stream()).await?;
        debug!(up = moved.up, down = moved.down, "connection closed");
        Ok(())
    }

    async fn pipe(&self, socket: &str) -> anyhow::Result<russh::Channel<russh::client::Msg>> {
        let command = format!("exec {} agent pipe {}", self.bin, install::sh_quote(socket));
        self.ssh.exec(&command).await
    }
}

/// The agent's control channel: events in, the request out, EOF to stop it.
struct Agent {
    events: mpsc::Receiver<AgentEvent>,
    write: russh::ChannelWriteHalf<russh::client::Msg>,
    exited: tokio::sync::watch::Receiver<bool>,
    host: String,
}

impl Agent {
    async fn start(ssh: &SshSession, bin: &str, plan: &Plan) -> anyhow::Result<Agent> {
        let host = ssh.host().to_string();
        let verbose = if tracing::enabled!(tracing::Level::DEBUG) {
            " -v"
        } else {
            ""
        };
        let channel = ssh.exec(&format!("exec {bin} agent{verbose}")).await?;
        let (read, write) = channel.split();
        let (tx, mut events) = mpsc::channel(64);
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        tokio::spawn(read_agent(read, tx, exited_tx, host.clone()));
        match tokio::time::timeout(AGENT_HELLO_TIMEOUT, events.recv()).await {
            Ok(Some(AgentEvent::Hello { version, protocol })) => {
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
            request: plan.request.clone(),
        };
        let mut line = serde_json::to_vec(&hello)?;
        line.push(b'\n');
        write
            .data(&line[..])
            .await
            .with_context(|| format!("could not send the request to the agent on `{host}`"))?;
        Ok(Agent {
            events,
            write,
            exited,
            host,
        })
    }

    /// The next event; `None` once the agent's channel closed.
    async fn next(&mut self) -> Option<AgentEvent> {
        self.events.recv().await
    }

    /// Reads events until the agent listens (and, for Jupyter, reported its token).
    async fn until_listening(
        &mut self,
        out: &Output,
        preset: Preset,
    ) -> anyhow::Result<(Resolved, Vec<String>, Option<JupyterAccess>)> {
        let (mut resolved, mut sockets) = (None, None);
        loop {
            let event = self.next().await.ok_or_else(|| {
                anyhow!("the agent on login host `{}` ended unexpectedly", self.host)
            })?;
            match event {
                AgentEvent::Progress { message } => out.progress(&message),
                AgentEvent::Error { message, hint } => {
                    return Err(remote_error(&self.host, message, hint))
                }
                ev @ AgentEvent::Resolved { .. } => resolved = Resolved::from_event(&ev),
                AgentEvent::Listening { sockets: s } => {
                    sockets = Some(s);
                    if preset != Preset::Jupyter {
                        break;
                    }
                }
                AgentEvent::Token(access) => {
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

    /// Closes the agent's stdin (it removes its sockets and exits) and waits a little for it.
    async fn stop(&mut self) {
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
    mut read: russh::ChannelReadHalf,
    events: mpsc::Sender<AgentEvent>,
    exited: tokio::sync::watch::Sender<bool>,
    host: String,
) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut started = false;
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                stdout.extend_from_slice(&data);
                while let Some(end) = stdout.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = stdout.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim();
                    match serde_json::from_str::<AgentEvent>(line) {
                        Ok(event) => {
                            started |= matches!(event, AgentEvent::Hello { .. });
                            if started && events.send(event).await.is_err() {
                                return;
                            }
                        }
                        Err(_) if !started => debug!(%host, "login shell: {line}"),
                        Err(e) => warn!(%host, %e, "unreadable line from the agent"),
                    }
                }
            }
            ChannelMsg::ExtendedData { data, .. } => {
                stderr.extend_from_slice(&data);
                while let Some(end) = stderr.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = stderr.drain(..=end).collect();
                    debug!(%host, "agent: {}", String::from_utf8_lossy(&line).trim_end());
                }
            }
            ChannelMsg::ExitStatus { exit_status } => debug!(%host, exit_status, "agent exited"),
            _ => {}
        }
    }
    if !stderr.is_empty() {
        debug!(%host, "agent: {}", String::from_utf8_lossy(&stderr).trim_end());
    }
    let _ = exited.send(true);
}
