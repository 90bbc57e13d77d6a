//! The steps in order: local mode runs the cluster checks in-process; via mode checks the SSH
//! config, the host key and authentication here, then what runs on the login host.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::anyhow;

use super::login_host::{agent_checks, beyond_pods, kubectl_checks, login_host};
use super::report::{check, failed, print, skip};
use crate::cli::AgentMode;
use crate::error::find;
use crate::laptop::ssh::route;
use crate::laptop::ssh::{AuthRefused, SshSession};
use crate::plan::Plan;
use crate::proto::wire::{Check, CheckStatus};

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

const SSH_STEPS: &[&str] = &["host key", "authentication"];
const LOGIN_STEPS: &[&str] = &[
    "podtun on the login host",
    "kubectl on the login host",
    "cluster",
];

/// The SSH and login-host steps, then the agent's cluster checks.
async fn via(plan: &Plan, show: &mut dyn FnMut(Check)) {
    let Some(ssh) = ssh_steps(plan, show).await else {
        skip(show, LOGIN_STEPS, "no SSH connection");
        return;
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

/// The SSH config, the host key and authentication: the connection, when all three hold.
async fn ssh_steps(plan: &Plan, show: &mut dyn FnMut(Check)) -> Option<SshSession> {
    let options = crate::laptop::link::ssh_options(plan);
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
            return None;
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
            if find::<AuthRefused>(&e).is_some() {
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
            return None;
        }
    };
    Some(ssh)
}
