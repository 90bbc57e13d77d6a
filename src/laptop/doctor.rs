//! `podtun doctor`: every step from the laptop to the pods, in order, one line each with ✓ or
//! ✗ and a hint, for the user to fix or to paste into a help ticket (nothing secret in it).
//!
//! Via mode: the SSH config, the host key, authentication and what can run on the login host
//! are checked here; the cluster checks ([`crate::cluster::doctor`]) run in the agent there,
//! which reports them as `check` events; then what `jupyter @` and Slurm targets would use there.
//! Local mode runs the cluster checks in-process.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::ssh::{exec, route};
use super::ssh::{Running, Said, SshSession};
use super::via::install::{self, Located};
use crate::cli::AgentMode;
use crate::error::hinted;
use crate::plan::Plan;
use crate::proto::wire::{
    Check, CheckStatus, ClusterEvent, Hello, Kind, HEARTBEAT_SECS, PROTOCOL, VERSION,
};

/// Bound on the agent's checks (its `hello` included).
const AGENT_CHECKS_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the checks and prints them; fails when one failed.
pub async fn run(plan: &Plan) -> anyhow::Result<()> {
    let failed = AtomicUsize::new(0);
    let show = |c: Check| {
        if c.status == CheckStatus::Failed {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        print(&c);
    };
    if plan.via().is_empty() {
        crate::cluster::doctor::run(&plan.request, &show).await;
    } else {
        via(plan, &mut { show }).await;
    }
    match failed.into_inner() {
        0 => Ok(()),
        n => Err(anyhow!("{n} check{} failed", if n == 1 { "" } else { "s" })),
    }
}

/// `✓ name: detail`, then the hint.
fn print(c: &Check) {
    let mark = match c.status {
        CheckStatus::Ok => "✓",
        CheckStatus::Note => "!",
        CheckStatus::Failed => "✗",
        CheckStatus::Skipped => "-",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{mark} {}: {}", c.name, c.detail);
    if let Some(hint) = &c.hint {
        let _ = writeln!(out, "    hint: {hint}");
    }
    let _ = out.flush();
}

fn check(
    name: &str,
    status: CheckStatus,
    detail: impl Into<String>,
    hint: Option<String>,
) -> Check {
    Check {
        name: name.to_string(),
        status,
        detail: detail.into(),
        hint,
    }
}

fn failed(name: &str, err: &anyhow::Error) -> Check {
    check(
        name,
        CheckStatus::Failed,
        format!("{err:#}"),
        crate::error::hint_of(err),
    )
}

/// Every step after `from` is skipped, with `why`.
fn skip(show: &mut dyn FnMut(Check), names: &[&str], why: &str) {
    for name in names {
        show(check(name, CheckStatus::Skipped, why, None));
    }
}

const SSH_STEPS: &[&str] = &["host key", "authentication"];
const LOGIN_STEPS: &[&str] = &[
    "podtun on the login host",
    "kubectl on the login host",
    "cluster",
];

/// The SSH and login-host steps, then the agent's cluster checks.
async fn via(plan: &Plan, show: &mut dyn FnMut(Check)) {
    let options = super::link::ssh_options(plan);
    match route::plan(plan.via(), &options).await {
        Ok(hops) => {
            let route: Vec<String> = hops
                .iter()
                .map(|h| {
                    format!(
                        "{} → {}@{}:{}",
                        h.cfg.alias, h.cfg.user, h.cfg.hostname, h.cfg.port
                    )
                })
                .collect();
            show(check(
                "SSH config",
                CheckStatus::Ok,
                route.join(", then "),
                None,
            ));
        }
        Err(e) => {
            show(failed("SSH config", &e));
            skip(show, SSH_STEPS, "the SSH config does not resolve");
            skip(show, LOGIN_STEPS, "no SSH connection");
            return;
        }
    }
    let ssh = match SshSession::connect(plan.via(), &options).await {
        Ok(ssh) => {
            show(check(
                "host key",
                CheckStatus::Ok,
                "known (known_hosts)",
                None,
            ));
            show(check(
                "authentication",
                CheckStatus::Ok,
                format!("logged in to `{}`", plan.via().join(" → ")),
                None,
            ));
            ssh
        }
        Err(e) => {
            // Which step failed shows in the error: the host key is checked before any login.
            let text = format!("{e:#}");
            if text.contains("permission denied") {
                show(check(
                    "host key",
                    CheckStatus::Ok,
                    "known (known_hosts)",
                    None,
                ));
                show(failed("authentication", &e));
            } else {
                show(failed("host key", &e));
                skip(
                    show,
                    &["authentication"],
                    "the host key was not accepted, or the host not reached",
                );
            }
            skip(show, LOGIN_STEPS, "no SSH connection");
            return;
        }
    };
    let (bin, kubectl) = login_host(plan, &ssh, show).await;
    let result = match (bin, plan.agent) {
        (Some(bin), AgentMode::Auto | AgentMode::Podtun) => {
            Some(agent_checks(plan, &ssh, &bin, show).await)
        }
        (None, AgentMode::Auto | AgentMode::Kubectl) if kubectl => {
            Some(kubectl_checks(plan, &ssh, show).await)
        }
        _ => None,
    };
    match result {
        Some(Ok(())) => {}
        Some(Err(e)) => show(failed("cluster", &e)),
        None => skip(
            show,
            &["cluster"],
            "nothing can reach the cluster from the login host",
        ),
    }
    beyond_pods(&ssh, show).await;
    ssh.disconnect().await;
}

/// What `jupyter @` and Slurm targets need on the login host: worth knowing, never a failure
/// (a Kubernetes login host has neither).
async fn beyond_pods(ssh: &SshSession, show: &mut dyn FnMut(Check)) {
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
async fn kubectl_checks(
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
        super::via::kubectl::doctor(ssh, plan, &emit),
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
async fn login_host(
    plan: &Plan,
    ssh: &SshSession,
    show: &mut dyn FnMut(Check),
) -> (Option<String>, bool) {
    const NAME: &str = "podtun on the login host";
    const KUBECTL: &str = "kubectl on the login host";
    let located = match plan.agent {
        AgentMode::Kubectl => None,
        AgentMode::Auto | AgentMode::Podtun => Some(install::locate(ssh, plan).await),
    };
    let mut held = Vec::new();
    let bin = match located {
        None => {
            held.push(check(
                NAME,
                CheckStatus::Skipped,
                "not used (--agent kubectl)",
                None,
            ));
            None
        }
        Some(located) => match located {
            Ok(Located::Given(bin)) => {
                match exec::first_line(ssh, &format!("{bin} --version")).await {
                    Ok(version) if version == format!("podtun {VERSION}") => {
                        held.push(check(
                            NAME,
                            CheckStatus::Ok,
                            format!("--remote-bin {bin}: {version}"),
                            None,
                        ));
                        Some(bin)
                    }
                    Ok(version) => {
                        held.push(check(NAME, CheckStatus::Failed, format!("--remote-bin {bin} is {version}, not podtun {VERSION}"),
                    Some("install the same version there, or drop --remote-bin to let podtun upload itself".into())));
                        None
                    }
                    Err(e) => {
                        held.push(failed(
                            NAME,
                            &hinted(e, "check the path given to --remote-bin"),
                        ));
                        None
                    }
                }
            }
            Ok(Located::Found(bin)) => {
                held.push(check(
                    NAME,
                    CheckStatus::Ok,
                    format!("podtun {VERSION} at {bin}"),
                    None,
                ));
                Some(bin)
            }
            Ok(Located::Upload) => match install::agent_binary(ssh, plan).await {
                Ok(bin) => {
                    held.push(check(
                        NAME,
                        CheckStatus::Ok,
                        format!("none of version {VERSION} there; uploaded this one to {bin}"),
                        None,
                    ));
                    Some(bin)
                }
                Err(e) => {
                    held.push(failed(NAME, &e));
                    None
                }
            },
            Err(e) => {
                held.push(failed(NAME, &e));
                None
            }
        },
    };
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
    for mut c in held {
        if plan.agent == AgentMode::Auto
            && bin.is_none()
            && kubectl
            && c.status == CheckStatus::Failed
        {
            c.status = CheckStatus::Note;
            c.detail = format!("{} (kubectl mode will be used)", c.detail);
            c.hint = None;
        }
        show(c);
    }
    show(kubectl_line);
    (bin, kubectl)
}

/// Starts `BIN agent` for the cluster checks and shows each as it comes.
async fn agent_checks(
    plan: &Plan,
    ssh: &SshSession,
    bin: &str,
    show: &mut dyn FnMut(Check),
) -> anyhow::Result<()> {
    let host = ssh.host().to_string();
    let channel = ssh
        .exec(&exec::in_login_shell(&format!("exec {bin} agent")))
        .await?;
    let hello = Hello {
        v: PROTOCOL,
        request: plan.request.clone(),
        heartbeat_secs: Some(HEARTBEAT_SECS),
        kind: Kind::Doctor,
    };
    let mut line = serde_json::to_vec(&hello)?;
    line.push(b'\n');
    let Running {
        output: mut read,
        input: write,
    } = channel;
    let work = async {
        let (mut buf, mut started, mut sent) = (Vec::new(), false, false);
        while let Some(said) = read.next().await {
            let Said::Stdout(data) = said else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                match serde_json::from_str::<ClusterEvent>(text.trim()) {
                    Ok(ClusterEvent::Hello { protocol, version }) => {
                        if protocol != PROTOCOL {
                            return Err(hinted(
                                anyhow!("the agent on `{host}` is podtun {version} (protocol {protocol}); this podtun is {VERSION} (protocol {PROTOCOL})"),
                                "install the same version on the login host, or drop --remote-bin",
                            ));
                        }
                        started = true;
                        if !sent {
                            write
                                .send(&line)
                                .await
                                .context("could not send the request to the agent")?;
                            sent = true;
                        }
                    }
                    Ok(ClusterEvent::Check(c)) if started => show(c),
                    Ok(ClusterEvent::Error { message, hint, .. }) if started => {
                        let err = anyhow!("on login host `{host}`: {message}");
                        return Err(match hint {
                            Some(h) => hinted(err, h),
                            None => err,
                        });
                    }
                    _ => {}
                }
            }
        }
        if !started {
            bail!("the agent on login host `{host}` did not start (`-v` shows its output)");
        }
        Ok(())
    };
    let result = tokio::time::timeout(AGENT_CHECKS_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow!(
                "the agent's checks did not finish within {}s",
                AGENT_CHECKS_TIMEOUT.as_secs()
            ))
        });
    write.eof().await.ok();
    result
}
