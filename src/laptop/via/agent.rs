//! Via mode: one SSH connection to the login host, the agent started over an exec channel,
//! and one SSH channel per agent socket carrying every local connection to it ([`Transport`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::install;
use super::kubectl;
use super::transport::Transport;
use crate::cli::AgentMode;
use crate::cluster::discover::Preset;
use crate::error::hinted;
use crate::laptop::link::{self, Ended, Supervised};
use crate::laptop::listen::{self, Locals};
use crate::laptop::ready;
use crate::laptop::ssh::channel::{Printed, Stdin};
use crate::laptop::ssh::exec;
use crate::laptop::ssh::{Heartbeat, Running, Said, SshSession};
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::refusal::ForwardRefused;
use crate::proto::wire::Resolved;

use crate::proto::wire::{
    Candidates, ClusterEvent, Hello, JupyterAccess, Pick, HEARTBEAT_SECS, PROTOCOL, VERSION,
};

/// Bound on the agent's `hello` after it was started (shell start-up included).
const AGENT_HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the agent's exit after its stdin closed.
const AGENT_EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// One established connection to the login host with its agent.
struct Established {
    ssh: SshSession,
    agent: Agent,
    resolved: Resolved,
    /// The way to the agent's sockets; replaced on every reconnection.
    link: Arc<Transport>,
    jupyter: Option<JupyterAccess>,
}

/// Via mode: reach the cluster through the login host, and stay connected.
pub async fn run_via(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Local ports the user named are bound first, so one that is taken fails before anything
    // starts on the login host.
    let early = listen::bind_named(plan)?;
    tokio::pin!(shutdown);
    let started = tokio::select! {
        () = &mut shutdown => {
            out.event(&Event::Closed);
            return Ok(());
        }
        started = start(plan, &out) => started?,
    };
    let first = match started {
        Start::Agent(session) => *session,
        Start::Kubectl(link) => return kubectl::run(plan, out, early, *link, shutdown).await,
    };
    let mut route = WithAgent {
        plan,
        early,
        locals: Locals::new("the login host"),
    };
    link::run(&mut route, &out, Some(first), shutdown).await
}

/// The route through podtun's agent: each local connection is a stream to one of its sockets.
struct WithAgent<'a> {
    plan: &'a Plan,
    /// The local ports the user named, bound before anything started.
    early: Vec<Option<TcpListener>>,
    locals: Locals<Transport>,
}

impl Supervised for WithAgent<'_> {
    type Link = Established;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Established> {
        let ssh = link::connect(self.plan, out).await?;
        start_agent(self.plan, out, ssh).await
    }

    async fn serve(&mut self, session: &mut Established, out: &Output) -> Ended {
        let first = self.locals.first();
        if first {
            let early = std::mem::take(&mut self.early);
            let bound =
                listen::bind_all(self.plan, &session.resolved, early).and_then(|listeners| {
                    self.locals
                        .serve(listeners, |link: Arc<Transport>, index, conn| async move {
                            link.forward(index, conn).await
                        })
                });
            if let Err(e) = bound {
                return Ended::Fatal(e);
            }
        }
        self.locals.route(session.link.clone());
        serve(self.plan, out, session, self.locals.addrs(), first).await
    }

    async fn close(&mut self, session: Established, _last: bool) {
        self.locals.unroute();
        let Established { ssh, mut agent, .. } = session;
        // Nothing half-started: the agent goes with its connection.
        agent.stop().await;
        ssh.disconnect().await;
    }

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
}

/// What the first connection settled on.
enum Start {
    /// podtun's agent runs on the login host.
    Agent(Box<Established>),
    /// Only kubectl: the cluster half runs here.
    Kubectl(Box<kubectl::Established>),
}

/// The first connection: chooses what runs on the login host (`--agent`). `auto` takes podtun
/// of this version there, else an upload that really runs there, else kubectl mode, and names
/// each step tried when none works.
async fn start(plan: &Plan, out: &Output) -> anyhow::Result<Start> {
    let ssh = link::connect(plan, out).await?;
    let host = ssh.host().to_string();
    let kubectl_mode = |ssh: SshSession| async move {
        out.progress(&format!("starting kubectl proxy on `{host}`"));
        kubectl::establish_on(ssh, plan).await
    };
    let agent_failed = match plan.agent {
        AgentMode::Kubectl => {
            info!(host = %ssh.host(), "running kubectl only on the login host (--agent kubectl)");
            let link = kubectl_mode(ssh).await?;
            return Ok(Start::Kubectl(Box::new(link)));
        }
        AgentMode::Podtun => return Ok(Start::Agent(Box::new(start_agent(plan, out, ssh).await?))),
        // `--remote-bin` names the agent: nothing else to try.
        AgentMode::Auto if plan.remote_bin.is_some() => {
            return Ok(Start::Agent(Box::new(start_agent(plan, out, ssh).await?)))
        }
        AgentMode::Auto => match launch_agent(plan, out, &ssh).await {
            Ok(agent) => {
                info!(host = %ssh.host(), "running podtun's agent on the login host");
                return Ok(Start::Agent(Box::new(
                    listening(plan, out, ssh, agent).await?,
                )));
            }
            Err(e) => e,
        },
    };
    info!(host = %ssh.host(), "podtun's agent cannot run on the login host ({agent_failed:#}); trying kubectl mode");
    let host = ssh.host().to_string();
    match kubectl_mode(ssh).await {
        Ok(link) => {
            info!(%host, "running kubectl only on the login host: the cluster half runs here");
            Ok(Start::Kubectl(Box::new(link)))
        }
        Err(kubectl_failed) => Err(hinted(
            anyhow!(
                "nothing to reach the cluster with on login host `{host}`:\n  podtun: {}\n  kubectl: {}",
                one_line(&agent_failed),
                one_line(&kubectl_failed)
            ),
            "install podtun there (or let podtun upload itself: drop --no-install), or make kubectl work there (`kubectl get pods` in a login shell)",
        )),
    }
}

/// An error and its hint on one line.
fn one_line(err: &anyhow::Error) -> String {
    match crate::error::hint_of(err) {
        Some(hint) => format!("{err:#} ({hint})"),
        None => format!("{err:#}"),
    }
}

/// Finds or uploads podtun and starts its agent (not yet listening).
async fn launch_agent(
    plan: &Plan,
    out: &Output,
    ssh: &SshSession,
) -> anyhow::Result<(String, Agent)> {
    out.progress(&format!("starting the agent on `{}`", ssh.host()));
    let bin = install::agent_binary(ssh, plan).await?;
    let agent = Agent::start(ssh, &bin, plan).await?;
    Ok((bin, agent))
}

/// Starts the agent on `ssh` and waits until it listens.
async fn start_agent(plan: &Plan, out: &Output, ssh: SshSession) -> anyhow::Result<Established> {
    match launch_agent(plan, out, &ssh).await {
        Ok(agent) => listening(plan, out, ssh, agent).await,
        Err(e) => {
            // Nothing half-started: closing the connection ends the agent, if any.
            ssh.disconnect().await;
            Err(e)
        }
    }
}

/// Waits until the agent listens (and, for Jupyter, found the token).
async fn listening(
    plan: &Plan,
    out: &Output,
    ssh: SshSession,
    (bin, mut agent): (String, Agent),
) -> anyhow::Result<Established> {
    let (resolved, sockets, jupyter) = match agent.until_listening(out, plan.spec.preset).await {
        Ok(parts) => parts,
        Err(e) => {
            // Nothing half-started: closing the connection ends the agent.
            ssh.disconnect().await;
            return Err(e);
        }
    };
    let link = Transport::start(ssh.clone(), bin, sockets);
    Ok(Established {
        ssh,
        agent,
        resolved,
        link,
        jupyter,
    })
}

/// Probes, reports `ready`, then follows the agent until shutdown or a loss.
async fn serve(
    plan: &Plan,
    out: &Output,
    session: &mut Established,
    locals: &[SocketAddr],
    first: bool,
) -> Ended {
    let progress = |m: &str| out.progress(m);
    if let Err(e) = ready::wait_usable(plan, locals, session.jupyter.as_ref(), &progress).await {
        return Ended::unusable(e, first);
    }
    ready::report_ready(
        plan,
        out,
        &session.resolved,
        locals,
        session.jupyter.as_ref(),
        first,
        Some("podtun"),
    );
    let host = session.ssh.host().to_string();
    loop {
        tokio::select! {
            () = session.agent.beats.failed() => return Ended::Lost(format!("lost the connection to login host `{host}`")),
            () = session.ssh.closed() => return Ended::Lost(format!("lost the connection to login host `{host}`")),
            event = session.agent.events.recv() => match event {
                Some(ClusterEvent::Error { message, hint, refused }) => return Ended::Fatal(remote_error(&host, message, hint, refused)),
                Some(event) => ready::on_cluster_event(out, locals, event),
                None => return Ended::Lost(format!("the agent on login host `{host}` ended")),
            },
        }
    }
}

/// An error as the agent said it, marked as coming from the login host (a refused
/// port-forward keeps its type).
fn remote_error(
    host: &str,
    message: String,
    hint: Option<String>,
    refused: Option<ForwardRefused>,
) -> anyhow::Error {
    crate::proto::wire::remote_error(host, message, hint, refused)
}

/// The agent's control channel: events in, the request out, heartbeats from the start (a pod
/// may take minutes to start), EOF to stop it.
struct Agent {
    events: mpsc::Receiver<ClusterEvent>,
    write: Arc<Stdin>,
    beats: Heartbeat,
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
            request: plan.request.clone(),
            heartbeat_secs: Some(HEARTBEAT_SECS),
            kind: Default::default(),
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
    async fn next(&mut self) -> Option<ClusterEvent> {
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
                ClusterEvent::Progress { message } => out.progress(&message),
                ClusterEvent::Error {
                    message,
                    hint,
                    refused,
                } => return Err(remote_error(&self.host, message, hint, refused)),
                ev @ ClusterEvent::Resolved { .. } => resolved = Resolved::from_event(&ev),
                ClusterEvent::Candidates(offered) => self.answer(&offered, out).await?,
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
    mut read: Printed,
    events: mpsc::Sender<ClusterEvent>,
    exited: tokio::sync::watch::Sender<bool>,
    host: String,
) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut started = false;
    while let Some(said) = read.next().await {
        match said {
            Said::Stdout(data) => {
                stdout.extend_from_slice(&data);
                while let Some(end) = stdout.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = stdout.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim();
                    match serde_json::from_str::<ClusterEvent>(line) {
                        Ok(event) => {
                            started |= matches!(event, ClusterEvent::Hello { .. });
                            if started && events.send(event).await.is_err() {
                                return;
                            }
                        }
                        Err(_) if !started => debug!(%host, "login shell: {line}"),
                        Err(e) => warn!(%host, %e, "unreadable line from the agent"),
                    }
                }
            }
            Said::Stderr(data) => {
                stderr.extend_from_slice(&data);
                while let Some(end) = stderr.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = stderr.drain(..=end).collect();
                    debug!(%host, "agent: {}", String::from_utf8_lossy(&line).trim_end());
                }
            }
            Said::Exit(exit_status) => debug!(%host, exit_status, "agent exited"),
        }
    }
    if !stderr.is_empty() {
        debug!(%host, "agent: {}", String::from_utf8_lossy(&stderr).trim_end());
    }
    let _ = exited.send(true);
}
