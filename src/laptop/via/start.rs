//! The first connection through the login host settles what runs there (`--agent`): podtun's
//! agent, or only kubectl.

use anyhow::anyhow;
use tracing::info;

use super::agent::{launch_agent, listening, start_agent, Established};
use super::kubectl;
use crate::cli::AgentMode;
use crate::error::hinted;
use crate::laptop::link::{self};
use crate::laptop::ssh::SshSession;
use crate::output::Output;
use crate::plan::Plan;

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
pub(super) async fn start(plan: &Plan, out: &Output) -> anyhow::Result<Start> {
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
