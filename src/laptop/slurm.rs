//! Slurm: Jupyter in a batch job on an HPC cluster, reached through the cluster's login host.
//!
//! ```text
//! laptop                         login host (sbatch, squeue, scontrol)       compute node
//! 127.0.0.1:L ─► podtun ══SSH══► sshd ── TCP (direct-tcpip) ──────────────► jupyter NODE:PORT
//! ```
//!
//! `podtun jupyter --via login --slurm "SBATCH OPTIONS"` submits [`job::batch_script`];
//! `podtun jupyter slurm/JOBID --via login` attaches to a job that runs Jupyter already. Either
//! way podtun follows the job ([`wait_running`]: its state and Slurm's reason while it waits,
//! the node and the time left once it runs), then finds the node, port and token
//! ([`wait_server`]: the `jpserver-PID.json` Jupyter writes in the home the login host shares
//! with the nodes, else the URL in the job's output). The laptop then opens one `direct-tcpip`
//! channel to NODE:PORT per connection: the login host's sshd makes the TCP connection, and
//! nothing runs on the login host for the forward itself. A lost connection keeps the local
//! port: podtun reconnects and finds the job's server again. A job podtun submitted is
//! cancelled when podtun stops ([`release`]), and by a watchdog script on the login host when
//! the laptop goes away without stopping it ([`crate::laptop::watchdog`]); a job it attached to
//! is left running.
//!
//! Every command runs over an SSH exec channel in the user's login environment (where sites
//! put Slurm on the PATH), as kubectl mode's do.

mod ended;
mod job;
mod jpserver;
mod status;
mod tunnel;

use std::time::Duration;

use anyhow::{anyhow, Context};
use tracing::debug;

use super::ssh::exec::{self, sh_quote};
use super::ssh::SshSession;
use crate::error::hinted;

pub use crate::plan::slurm::{JobId, JobSpec, Source, TARGET_KIND};
pub use ended::{ended_error, stuck_error};
pub use job::{JOB_NAME, STATE_DIR};
pub use jpserver::JupyterServer;
pub use status::{slurm_duration, JobStatus, Phase, SQUEUE_FORMAT};
pub use tunnel::run;

/// How often a job that waits for its node is looked at (one `scontrol` RPC each time: sites
/// frown on tight squeue loops).
const POLL_WAITING: Duration = Duration::from_secs(2);
/// How often the runtime dir and the output are read while Jupyter starts in a running job.
const POLL_STARTING: Duration = Duration::from_secs(1);
/// Bound on `COMPLETING` turning into the job's final state.
const ENDING_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the job's output quoted when it failed.
const OUTPUT_TAIL_LINES: usize = 15;
/// Lines of the job's output searched for Jupyter's URL.
const OUTPUT_SEARCH_LINES: usize = 400;

/// A job podtun follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Submitted by this podtun (`--slurm`): cancelled when podtun stops. An existing job
    /// (`slurm/JOBID`) is never cancelled.
    pub submitted: bool,
}

impl Job {
    /// An existing job, which podtun leaves running.
    pub fn existing(id: JobId) -> Job {
        Job {
            id,
            submitted: false,
        }
    }

    /// The Jupyter runtime dirs to look in, as shell words for the login host: podtun's own
    /// for this job, and for a job podtun did not submit, Jupyter's defaults too.
    fn runtime_dirs(&self) -> Vec<String> {
        let mut dirs = vec![format!(
            "\"$HOME\"/{}",
            sh_quote(&format!("{STATE_DIR}/{}", self.id))
        )];
        if !self.submitted {
            dirs.push("\"${JUPYTER_RUNTIME_DIR:-$HOME/.local/share/jupyter/runtime}\"".into());
            dirs.push("\"${XDG_DATA_HOME:-$HOME/.local/share}/jupyter/runtime\"".into());
        }
        dirs
    }
}

/// Submits the Jupyter job; the job is cancelled by [`release`].
pub async fn submit(ssh: &SshSession, spec: &JobSpec) -> anyhow::Result<Job> {
    let script = job::batch_script(spec.env.as_deref());
    let ran = exec::run(ssh, &job::submit_command(spec), Some(script.as_bytes())).await?;
    match job::parse_sbatch(&ran.stdout) {
        Some(id) if ran.status == Some(0) => {
            debug!(host = %ssh.host(), %id, "submitted");
            Ok(Job {
                id,
                submitted: true,
            })
        }
        _ => Err(job::submit_error(
            ssh.host(),
            ran.status,
            &ran.stdout,
            &ran.stderr,
        )),
    }
}

/// What Slurm says about the job now (`scontrol show job -o`).
pub async fn status(ssh: &SshSession, id: &JobId) -> anyhow::Result<JobStatus> {
    let command = format!("scontrol show job -o {}", sh_quote(id.as_str()));
    let ran = exec::run(ssh, &command, None).await?;
    if let Some(status) = ran.stdout.lines().find_map(JobStatus::from_scontrol) {
        return Ok(status);
    }
    let said = ran.said();
    if said.contains("Invalid job id") {
        return Err(hinted(
            anyhow!("Slurm does not know job {id} on login host `{}`", ssh.host()),
            format!(
                "check the id with `squeue --me`; a job that ended a while ago is only in `sacct -j {id}`"
            ),
        ));
    }
    if ran.status == Some(127) || said.contains("not found") {
        return Err(hinted(
            anyhow!(
                "scontrol is not on login host `{}`'s PATH (in a login shell)",
                ssh.host()
            ),
            "load Slurm there (e.g. `module load slurm` in ~/.profile), or check that this is the cluster's login host",
        ));
    }
    Err(ran.failure(
        &format!("scontrol show job {id}"),
        &format!("login host `{}`", ssh.host()),
    ))
}

/// An existing job is the login user's own: another user's Jupyter, its token in their files,
/// is not podtun's to reach.
pub async fn check_yours(ssh: &SshSession, job: &JobStatus) -> anyhow::Result<()> {
    let Some(owner) = &job.user else {
        return Ok(());
    };
    let ran = exec::run(ssh, "id -un", None).await?;
    let me = ran.stdout.trim();
    if me.is_empty() || me == owner {
        return Ok(());
    }
    Err(hinted(
        anyhow!("Slurm job {} is not yours: it runs as `{owner}`, and you are `{me}` on login host `{}`", job.id, ssh.host()),
        "podtun attaches to your own jobs only; see yours with `squeue --me`, or start one with --slurm",
    ))
}

/// The last `lines` lines of the job's output, and of its error output when that is another
/// file (empty when they cannot be read).
async fn output_tail(ssh: &SshSession, job: &JobStatus, lines: usize) -> String {
    let files: Vec<String> = [&job.stdout, &job.stderr]
        .into_iter()
        .flatten()
        .map(|p| sh_quote(p))
        .collect();
    if files.is_empty() {
        return String::new();
    }
    let path = files.join(" ");
    let command = format!("for f in {path}; do tail -n {lines} \"$f\" 2>/dev/null; done");
    match exec::run(ssh, &command, None).await {
        Ok(ran) => ran.stdout,
        Err(e) => {
            debug!(host = %ssh.host(), "could not read {path}: {e:#}");
            String::new()
        }
    }
}

/// The error for a job that ended, with the end of its output. A job still `COMPLETING` (a
/// time limit hit, the kill under way) is waited for, bounded, so that the error names its
/// final state (`TIMEOUT`, `CANCELLED`…) rather than the transition.
async fn ended(ssh: &SshSession, id: &JobId, now: &JobStatus) -> anyhow::Error {
    let mut last = now.clone();
    let deadline = tokio::time::Instant::now() + ENDING_TIMEOUT;
    while last.phase() == Phase::Ending && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL_STARTING).await;
        match status(ssh, id).await {
            Ok(now) => last = now,
            Err(e) => {
                debug!(id = %last.id, "could not ask Slurm about the job: {e:#}");
                break;
            }
        }
    }
    let tail = output_tail(ssh, &last, OUTPUT_TAIL_LINES).await;
    ended_error(&last, &tail)
}

/// Follows the job until it runs, calling `report` with each new status (state, reason, node,
/// time left); the job's end, or a reason it cannot start for, is an error quoting Slurm.
/// Unbounded while the job waits: a queue can take hours, and the caller races this against
/// Ctrl-C.
pub async fn wait_running(
    ssh: &SshSession,
    job: &Job,
    mut report: impl FnMut(&JobStatus),
) -> anyhow::Result<JobStatus> {
    let mut last: Option<JobStatus> = None;
    loop {
        let now = status(ssh, &job.id).await?;
        if last.as_ref() != Some(&now) {
            report(&now);
        }
        match now.phase() {
            Phase::Running if now.node().is_some() => return Ok(now),
            Phase::Ended | Phase::Ending => return Err(ended(ssh, &job.id, &now).await),
            Phase::Waiting => {
                if let Some(stuck) = stuck_error(&now) {
                    return Err(stuck);
                }
            }
            Phase::Running => {}
        }
        last = Some(now);
        tokio::time::sleep(POLL_WAITING).await;
    }
}

/// Finds Jupyter in the running job within `within`: the host the login host connects to and
/// the server. Checks the job meanwhile, so a job that ends is reported as such.
pub async fn wait_server(
    ssh: &SshSession,
    job: &Job,
    running: &JobStatus,
    within: Duration,
) -> anyhow::Result<(String, JupyterServer)> {
    let node = running
        .node()
        .ok_or_else(|| anyhow!("Slurm job {} runs on no node", job.id))?;
    let listing = jpserver::listing_command(&job.runtime_dirs());
    let deadline = tokio::time::Instant::now() + within;
    let mut current = running.clone();
    loop {
        let ran = exec::run(ssh, &listing, None)
            .await
            .with_context(|| format!("could not look for Jupyter of Slurm job {}", job.id))?;
        let found = match jpserver::pick(&ran.stdout, &node) {
            Some(server) => Some(server),
            None => {
                let output = output_tail(ssh, &current, OUTPUT_SEARCH_LINES).await;
                JupyterServer::from_output(&output, &node)
            }
        };
        if let Some(server) = found {
            let host = server.connect_host(&node)?;
            return Ok((host, server));
        }
        current = status(ssh, &job.id).await?;
        if matches!(current.phase(), Phase::Ended | Phase::Ending) {
            return Err(ended(ssh, &job.id, &current).await);
        }
        if tokio::time::Instant::now() >= deadline {
            let tail = output_tail(ssh, &current, OUTPUT_TAIL_LINES).await;
            let err = anyhow!(
                "Jupyter did not start in Slurm job {} on {node} within {}s",
                job.id,
                within.as_secs()
            );
            let err = if tail.trim().is_empty() {
                err
            } else {
                let lines: String = tail
                    .trim()
                    .lines()
                    .map(|l| format!("\n      {l}"))
                    .collect();
                anyhow!("the job's output ends with:{lines}").context(err.to_string())
            };
            return Err(hinted(
                err,
                format!(
                    "the job keeps running; see {} on the login host, or wait longer with --timeout",
                    current.stdout.as_deref().unwrap_or("its output")
                ),
            ));
        }
        tokio::time::sleep(POLL_STARTING).await;
    }
}

/// Jupyter in a job: where the login host connects, and the server.
#[derive(Clone, Debug)]
pub struct Found {
    /// The job as it ran when Jupyter was found (node, time left).
    pub status: JobStatus,
    /// The name or address the login host connects to (`direct-tcpip` HOST:`server.port`).
    pub host: String,
    /// The server: port, token, base URL.
    pub server: JupyterServer,
}

/// [`wait_running`] then [`wait_server`] (Jupyter's start bounded by `within`). The caller
/// holds the [`Job`] from before, so that Ctrl-C during the wait, or an error, can still
/// [`release`] it.
pub async fn find(
    ssh: &SshSession,
    job: &Job,
    within: Duration,
    report: impl FnMut(&JobStatus),
) -> anyhow::Result<Found> {
    let status = wait_running(ssh, job, report).await?;
    let (host, server) = wait_server(ssh, job, &status, within).await?;
    Ok(Found {
        status,
        host,
        server,
    })
}

/// What [`release`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// The job podtun submitted was cancelled.
    Cancelled,
    /// The job podtun submitted had ended already (scancel says nothing either way).
    AlreadyEnded,
    /// The job was not podtun's to cancel.
    LeftRunning,
}

/// Cancels the job if podtun submitted it (`scancel`); an existing job is left running.
pub async fn release(ssh: &SshSession, job: &Job) -> anyhow::Result<Released> {
    if !job.submitted {
        debug!(id = %job.id, "leaving the job running: podtun did not submit it");
        return Ok(Released::LeftRunning);
    }
    if let Ok(now) = status(ssh, &job.id).await {
        if now.phase() == Phase::Ended {
            return Ok(Released::AlreadyEnded);
        }
    }
    let ran = exec::run(ssh, &format!("scancel {}", sh_quote(job.id.as_str())), None).await?;
    if ran.status != Some(0) {
        return Err(anyhow!(
            "could not cancel Slurm job {} on login host `{}`: {}",
            job.id,
            ssh.host(),
            ran.stderr.trim()
        ));
    }
    debug!(id = %job.id, "cancelled");
    Ok(Released::Cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_dirs_of_submitted_and_existing_jobs() {
        let id: JobId = "42".parse().expect("id");
        let submitted = Job {
            id: id.clone(),
            submitted: true,
        };
        assert_eq!(
            submitted.runtime_dirs(),
            [format!("\"$HOME\"/'{STATE_DIR}/42'")]
        );
        let existing = Job::existing(id);
        let dirs = existing.runtime_dirs();
        assert_eq!(dirs.len(), 3);
        assert!(dirs[1].contains(".local/share/jupyter/runtime"), "{dirs:?}");
    }
}
