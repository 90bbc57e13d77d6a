//! What can run on the login host (podtun, kubectl), the cluster checks through it, and what
//! `jupyter @` and Slurm targets would use there.

use std::time::Duration;

use anyhow::anyhow;

use super::report::{check, failed};
use crate::cli::AgentMode;
use crate::error::hinted;
use crate::laptop::ssh::exec;
use crate::laptop::ssh::SshSession;
use crate::laptop::via::control::{remote_error, Agent};
use crate::laptop::via::install::{self, Located};
use crate::plan::Plan;
use crate::proto::wire::{Check, CheckStatus, ClusterEvent, Kind, VERSION};

/// Bound on the agent's checks (its `hello` included).
const AGENT_CHECKS_TIMEOUT: Duration = Duration::from_secs(120);

/// What `jupyter @` and Slurm targets need on the login host: worth knowing, never a failure
/// (a Kubernetes login host has neither).
pub(super) async fn beyond_pods(ssh: &SshSession, show: &mut dyn FnMut(Check)) {
    const JUPYTER: &str = "Jupyter on the login host";
    const SLURM: &str = "Slurm on the login host";
    show(match exec::first_line(ssh, "command -v jupyter").await {
        Ok(path) => check(
            JUPYTER,
            CheckStatus::Ok,
            format!("{path} (for `podtun jupyter @`)"),
            None,
        ),
        Err(_) => check(
            JUPYTER,
            CheckStatus::Note,
            "not on the login shell's PATH (only `podtun jupyter @` needs it)",
            Some("add it to PATH in ~/.profile there, or name its environment with `--start --env ENV`".into()),
        ),
    });
    let sbatch = exec::first_line(ssh, "command -v sbatch").await.ok();
    let version = match &sbatch {
        Some(_) => Some(exec::first_line(ssh, "sbatch --version").await),
        None => None,
    };
    show(match (sbatch, version) {
        (Some(path), Some(Ok(version))) => check(
            SLURM,
            CheckStatus::Ok,
            format!("{version} at {path} (for `--slurm` and `slurm/JOBID`)"),
            None,
        ),
        (Some(path), Some(Err(e))) => check(
            SLURM,
            CheckStatus::Note,
            format!("{path} does not run: {e:#}"),
            Some("Slurm's commands cannot reach the cluster's configuration here; is this the cluster's login host?".into()),
        ),
        _ => check(
            SLURM,
            CheckStatus::Note,
            "sbatch is not on the login shell's PATH (only Slurm targets need it)",
            None,
        ),
    });
}

/// The cluster checks through `kubectl proxy` on the login host, shown as they come.
pub(super) async fn kubectl_checks(
    plan: &Plan,
    ssh: &SshSession,
    show: &mut dyn FnMut(Check),
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let emit = move |c: Check| {
        let _ = tx.send(c);
    };
    let work = tokio::time::timeout(
        AGENT_CHECKS_TIMEOUT,
        crate::laptop::via::kubectl::doctor(ssh, plan, &emit),
    );
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            Some(c) = rx.recv() => show(c),
            done = &mut work => break done,
        }
    };
    while let Ok(c) = rx.try_recv() {
        show(c);
    }
    result.unwrap_or_else(|_| {
        Err(anyhow!(
            "the cluster checks did not finish within {}s",
            AGENT_CHECKS_TIMEOUT.as_secs()
        ))
    })
}

/// What can run on the login host, as `--agent` would choose: the agent's binary (uploaded if
/// that is how podtun would run; `None` when it cannot run or is not wanted), and whether
/// kubectl is there (for kubectl mode).
pub(super) async fn login_host(
    plan: &Plan,
    ssh: &SshSession,
    show: &mut dyn FnMut(Check),
) -> (Option<String>, bool) {
    const KUBECTL: &str = "kubectl on the login host";
    let (podtun_line, bin) = podtun_there(plan, ssh).await;
    let (kubectl, kubectl_line) = match exec::first_line(ssh, "kubectl version --client 2>&1").await
    {
        Ok(line) => (true, check(KUBECTL, CheckStatus::Ok, line, None)),
        Err(_)
            if plan.agent == AgentMode::Podtun
                || (plan.agent == AgentMode::Auto && bin.is_some()) =>
        {
            (
                false,
                check(
                    KUBECTL,
                    CheckStatus::Note,
                    "not found (podtun's agent does not need it)",
                    None,
                ),
            )
        }
        Err(e) => (
            false,
            failed(
                KUBECTL,
                &hinted(
                    e,
                    "install kubectl there or add it to PATH in ~/.profile; kubectl mode needs it",
                ),
            ),
        ),
    };
    // In auto mode kubectl mode stands in for an agent that cannot run: not a failure.
    let mut c = podtun_line;
    if plan.agent == AgentMode::Auto && bin.is_none() && kubectl && c.status == CheckStatus::Failed
    {
        c.status = CheckStatus::Note;
        c.detail = format!("{} (kubectl mode will be used)", c.detail);
        c.hint = None;
    }
    show(c);
    show(kubectl_line);
    (bin, kubectl)
}

/// Starts `BIN agent` for the cluster checks and shows each as it comes.
pub(super) async fn agent_checks(
    plan: &Plan,
    ssh: &SshSession,
    bin: &str,
    show: &mut dyn FnMut(Check),
) -> anyhow::Result<()> {
    let host = ssh.host().to_string();
    let work = async {
        let mut agent = Agent::start(ssh, bin, &plan.request, Kind::Doctor).await?;
        let checked = loop {
            match agent.next().await {
                Some(ClusterEvent::Check(check)) => show(check),
                Some(ClusterEvent::Error {
                    message,
                    hint,
                    refused,
                }) => break Err(remote_error(&host, message, hint, refused)),
                Some(_) => {}
                None => break Ok(()),
            }
        };
        agent.stop().await;
        checked
    };
    tokio::time::timeout(AGENT_CHECKS_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "the agent's checks did not finish within {}s",
                AGENT_CHECKS_TIMEOUT.as_secs()
            ))
        })
}

/// Whether podtun runs on the login host, as `--agent` would find it: the line that says so,
/// and the binary (uploaded if that is how podtun would run; `None` when it cannot run or is
/// not wanted).
async fn podtun_there(plan: &Plan, ssh: &SshSession) -> (Check, Option<String>) {
    const NAME: &str = "podtun on the login host";
    let located = match plan.agent {
        AgentMode::Kubectl => None,
        AgentMode::Auto | AgentMode::Podtun => Some(install::locate(ssh, plan).await),
    };
    match located {
        None => (
            check(
                NAME,
                CheckStatus::Skipped,
                "not used (--agent kubectl)",
                None,
            ),
            None,
        ),
        Some(located) => match located {
            Ok(Located::Given(bin)) => {
                match exec::first_line(ssh, &format!("{bin} --version")).await {
                    Ok(version) if version == format!("podtun {VERSION}") => {
                        (check(
                            NAME,
                            CheckStatus::Ok,
                            format!("--remote-bin {bin}: {version}"),
                            None,
                        ), Some(bin))
                    }
                    Ok(version) => {
                        (check(NAME, CheckStatus::Failed, format!("--remote-bin {bin} is {version}, not podtun {VERSION}"),
                    Some("install the same version there, or drop --remote-bin to let podtun upload itself".into())), None)
                    }
                    Err(e) => {
                        (failed(
                            NAME,
                            &hinted(e, "check the path given to --remote-bin"),
                        ), None)
                    }
                }
            }
            Ok(Located::Found(bin)) => (
                check(
                    NAME,
                    CheckStatus::Ok,
                    format!("podtun {VERSION} at {bin}"),
                    None,
                ),
                Some(bin),
            ),
            Ok(Located::Upload) => match install::agent_binary(ssh, plan).await {
                Ok(bin) => (
                    check(
                        NAME,
                        CheckStatus::Ok,
                        format!("none of version {VERSION} there; uploaded this one to {bin}"),
                        None,
                    ),
                    Some(bin),
                ),
                Err(e) => (failed(NAME, &e), None),
            },
            Err(e) => (failed(NAME, &e), None),
        },
    }
}
