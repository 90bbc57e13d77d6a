//! The first connection through the login host settles what runs there (`--agent`): podtun's
//! agent, or only kubectl.

use anyhow::anyhow;
use tracing::info;

use super::control::Agent;
use super::install;
use super::kubectl;
use super::launched::{Deleter, Launches, Launching};
use super::transport::Transport;
use crate::cli::AgentMode;
use crate::error::hinted;
use crate::laptop::link::{self};
use crate::laptop::ssh::SshSession;
use crate::output::Output;
use crate::plan::Plan;
use crate::proto::wire::JupyterAccess;
use crate::proto::wire::Kind;
use crate::proto::wire::Resolved;
use std::sync::Arc;

/// What the first connection settled on.
pub(super) enum Start {
    /// podtun's agent runs on the login host.
    Agent(Box<Established>),
    /// Only kubectl: the cluster half runs here.
    Kubectl(Box<kubectl::Established>),
}

/// The first connection: chooses what runs on the login host (`--agent`). `auto` takes podtun
/// of this version there, else an upload that really runs there, else kubectl mode, and names
/// each step tried when none works.
pub(super) async fn start(
    plan: &Plan,
    out: &Output,
    launches: &mut Launches,
) -> anyhow::Result<Start> {
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
        AgentMode::Podtun => {
            let started = start_agent(plan, out, ssh, launches).await?;
            return Ok(Start::Agent(Box::new(started)));
        }
        // `--remote-bin` names the agent: nothing else to try.
        AgentMode::Auto if plan.remote_bin.is_some() => {
            let started = start_agent(plan, out, ssh, launches).await?;
            return Ok(Start::Agent(Box::new(started)));
        }
        AgentMode::Auto => match launch_agent(plan, out, &ssh, launches).await {
            Ok(agent) => {
                info!(host = %ssh.host(), "running podtun's agent on the login host");
                let started = listening(plan, out, ssh, agent, launches).await?;
                return Ok(Start::Agent(Box::new(started)));
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

/// One established connection to the login host with its agent.
pub(super) struct Established {
    pub(super) ssh: SshSession,
    pub(super) agent: Agent,
    pub(super) resolved: Resolved,
    /// The way to the agent's sockets; replaced on every reconnection.
    pub(super) link: Arc<Transport>,
    pub(super) jupyter: Option<JupyterAccess>,
}

/// Finds or uploads podtun and starts its agent (not yet listening).
pub(super) async fn launch_agent(
    plan: &Plan,
    out: &Output,
    ssh: &SshSession,
    launches: &Launches,
) -> anyhow::Result<(String, Agent)> {
    out.progress(&format!("starting the agent on `{}`", ssh.host()));
    let bin = install::agent_binary(ssh, plan).await?;
    let agent = Agent::start(ssh, &bin, &launches.request(plan), Kind::Forward).await?;
    Ok((bin, agent))
}

/// Starts the agent on `ssh` and waits until it listens.
pub(super) async fn start_agent(
    plan: &Plan,
    out: &Output,
    ssh: SshSession,
    launches: &mut Launches,
) -> anyhow::Result<Established> {
    match launch_agent(plan, out, &ssh, launches).await {
        Ok(agent) => listening(plan, out, ssh, agent, launches).await,
        Err(e) => {
            // Nothing half-started: closing the connection ends the agent, if any.
            ssh.disconnect().await;
            Err(e)
        }
    }
}

/// Waits until the agent listens (and, for Jupyter, found the token).
pub(super) async fn listening(
    plan: &Plan,
    out: &Output,
    ssh: SshSession,
    (bin, mut agent): (String, Agent),
    launches: &mut Launches,
) -> anyhow::Result<Established> {
    let mut launching = Launching {
        launches,
        ssh: &ssh,
        deleter: Deleter::Agent(bin.clone()),
    };
    let listened = agent
        .until_listening(out, plan.spec.preset, &mut launching)
        .await;
    let (resolved, sockets, jupyter) = match listened {
        Ok(parts) => parts,
        Err(e) => {
            // Nothing half-started: a pod it launched is deleted, and closing the connection
            // ends the agent.
            launches.end(out).await;
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
