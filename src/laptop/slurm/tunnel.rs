//! `podtun jupyter --via LOGIN --slurm OPTIONS` and `podtun jupyter slurm/JOBID --via LOGIN`:
//! one SSH connection to the login host; the job submitted (or found), followed until Jupyter
//! answers; then one `direct-tcpip` channel to NODE:PORT per local connection, until Ctrl-C,
//! the job's end or the connection's loss. A job podtun submitted is cancelled on the way out,
//! whatever the way; a job it did not submit is left running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::{find, release, status, submit, Found, Job, Phase, Released, Source};
use crate::error::hinted;
use crate::laptop::ssh::SshSession;
use crate::laptop::{listener, run, session};
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::wire::{JupyterAccess, Secret};

/// How often a running job is looked at while forwarding (its end, its time left).
const WATCH_EVERY: Duration = Duration::from_secs(30);
/// Time left under which podtun says so, once.
const TIME_WARNING: Duration = Duration::from_secs(10 * 60);
/// Bound on cancelling a submitted job on the way out (a new connection included).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the forward to Jupyter in a Slurm job until shutdown.
pub async fn run(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Some(source) = &plan.slurm else {
        return Err(anyhow!("no Slurm job in the plan"));
    };
    // A local port the user named is bound first: taken, nothing is submitted.
    let early = run::bind_named(plan)?.into_iter().next().flatten();
    tokio::pin!(shutdown);
    out.progress(&format!("connecting to {}", plan.via.join(" → ")));
    let options = session::ssh_options(plan);
    let ssh = tokio::select! {
        () = &mut shutdown => {
            out.event(&Event::Closed);
            return Ok(());
        }
        ssh = SshSession::connect(&plan.via, &options) => ssh?,
    };
    let host = ssh.host().to_string();
    let job = match source {
        Source::Existing(id) => Job::existing(id.clone()),
        Source::Submit(spec) => {
            out.progress(&format!("submitting a Slurm job on `{host}`"));
            // Not raced against Ctrl-C: a job submitted meanwhile would be lost to scancel.
            let job = match submit(&ssh, spec).await {
                Ok(job) => job,
                Err(e) => {
                    ssh.disconnect().await;
                    return Err(e);
                }
            };
            out.note(&format!(
                "submitted Slurm job {} on `{host}` (cancelled when podtun stops)",
                job.id
            ));
            job
        }
    };
    let result = forward(plan, &out, &ssh, &job, early, &mut shutdown).await;
    if job.submitted {
        cancel(plan, &out, &ssh, &job).await;
    }
    ssh.disconnect().await;
    result?;
    out.event(&Event::Closed);
    Ok(())
}

/// Cancels the job podtun submitted; over a new connection when this one was lost.
async fn cancel(plan: &Plan, out: &Output, ssh: &SshSession, job: &Job) {
    let attempt = async {
        if ssh.is_closed() {
            let again = SshSession::connect(&plan.via, &session::ssh_options(plan)).await?;
            let done = release(&again, job).await;
            again.disconnect().await;
            done
        } else {
            release(ssh, job).await
        }
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, attempt).await {
        Ok(Ok(Released::Cancelled)) => out.note(&format!("cancelled Slurm job {}", job.id)),
        Ok(Ok(Released::AlreadyEnded | Released::LeftRunning)) => {}
        Ok(Err(e)) => out.note(&format!(
            "could not cancel Slurm job {}: {e:#}; run `scancel {}` on the login host",
            job.id, job.id
        )),
        Err(_) => out.note(&format!(
            "could not cancel Slurm job {} within {}s; run `scancel {}` on the login host",
            job.id,
            CANCEL_TIMEOUT.as_secs(),
            job.id
        )),
    }
}

/// Follows the job to Jupyter, serves local connections, and holds until the end.
async fn forward(
    plan: &Plan,
    out: &Output,
    ssh: &SshSession,
    job: &Job,
    early: Option<tokio::net::TcpListener>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> anyhow::Result<()> {
    let report = |s: &super::JobStatus| out.progress(&s.to_string());
    let found = tokio::select! {
        () = &mut *shutdown => return Ok(()),
        found = find(ssh, job, plan.spec.timeout, report) => found?,
    };
    let bound = match early {
        Some(l) => l,
        None => listener::bind(plan.address, None, found.server.port)?,
    };
    let local = bound.local_addr()?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (route, node, port) = (ssh.clone(), found.host.clone(), found.server.port);
    crate::accept::serve(bound, cancel.clone(), &tracker, move |conn| {
        let (ssh, node) = (route.clone(), node.clone());
        async move {
            let channel = ssh.open_tcp(&node, port).await?;
            let moved = crate::splice::splice(conn, channel.into_stream()).await?;
            debug!(up = moved.up, down = moved.down, "connection closed");
            Ok(())
        }
    });
    let access = access(&found);
    let progress = |m: &str| out.progress(m);
    let locals = [local];
    let usable = tokio::select! {
        () = &mut *shutdown => Ok(false),
        usable = run::wait_usable(plan, &locals, Some(&access), &progress) => usable.map(|()| true),
    };
    let result = match usable {
        Ok(true) => {
            report_ready(plan, out, job, &found, local, &access);
            tokio::select! {
                () = &mut *shutdown => Ok(()),
                () = ssh.closed() => Err(hinted(
                    anyhow!("lost the connection to `{}`", ssh.host()),
                    "run the same command again",
                )),
                ended = watch(ssh, out, job) => Err(ended),
            }
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e),
    };
    run::drain(cancel, tracker).await;
    result
}

/// The URL parts of the server.
fn access(found: &Found) -> JupyterAccess {
    let server = &found.server;
    JupyterAccess {
        token: server
            .token
            .as_ref()
            .map(|t| Secret(t.expose().to_string())),
        base_path: server.base_url.clone(),
        path: format!("{}lab", server.base_url),
        note: server.token.is_none().then(|| {
            "Jupyter in the job has no token (a password, or none): the URL carries none"
                .to_string()
        }),
    }
}

/// Prints the URL (or the `ready` event) and opens the browser.
fn report_ready(
    plan: &Plan,
    out: &Output,
    job: &Job,
    found: &Found,
    local: SocketAddr,
    access: &JupyterAccess,
) {
    out.done();
    if let Some(note) = &access.note {
        out.note(note);
    }
    let local = run::reachable(local);
    out.note(&format!(
        "forwarding {local} → Jupyter in Slurm job {} on {}:{} ({}) (Ctrl-C to stop{})",
        job.id,
        found.host,
        found.server.port,
        found
            .status
            .time_left()
            .map_or("no time limit".to_string(), |l| format!(
                "{} left",
                super::slurm_duration(l)
            )),
        if job.submitted {
            " and cancel the job"
        } else {
            ""
        },
    ));
    let url = run::jupyter_url(local, access);
    out.event(&Event::Ready {
        target: format!("{}/{}", super::TARGET_KIND, job.id),
        pod: found.host.clone(),
        local: local.to_string(),
        remote_port: found.server.port,
        url: Some(url.clone()),
        agent: Some("none"),
    });
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if plan.browser && terminal {
        if let Err(e) = open::that_detached(&url) {
            out.note(&format!("could not open a browser: {e}"));
        }
    }
    out.ready_reported(true);
}

/// Resolves with the error to report when the job stops running; says once when little time
/// is left.
async fn watch(ssh: &SshSession, out: &Output, job: &Job) -> anyhow::Error {
    let mut warned = false;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let now = match status(ssh, &job.id).await {
            Ok(now) => now,
            Err(e) => {
                debug!(id = %job.id, "could not ask Slurm about the job: {e:#}");
                continue;
            }
        };
        match now.phase() {
            Phase::Running => {
                if let Some(left) = now.time_left().filter(|l| *l < TIME_WARNING) {
                    if !warned {
                        out.note(&format!(
                            "Slurm job {} has {} left",
                            job.id,
                            super::slurm_duration(left)
                        ));
                        warned = true;
                    }
                }
            }
            Phase::Ended | Phase::Ending => return super::ended(ssh, &job.id, &now).await,
            Phase::Waiting => {
                return anyhow!("Slurm job {} stopped running: {now}", job.id);
            }
        }
    }
}
