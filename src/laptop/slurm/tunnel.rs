//! `podtun jupyter --via LOGIN --slurm OPTIONS` and `podtun jupyter slurm/JOBID --via LOGIN`:
//! one SSH connection to the login host; the job submitted (or found), followed until Jupyter
//! answers; then one `direct-tcpip` channel to NODE:PORT per local connection, until Ctrl-C or
//! the job's end. A lost connection keeps the local port: podtun reconnects with backoff, finds
//! the job's server again and reports `ready` again. A job podtun submitted is cancelled when
//! podtun stops, and by its [`Watchdog`] on the login host (`scancel` after
//! [`watchdog::GRACE`] without a word) when the laptop goes away for good; a job it did not
//! submit is left running.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::{
    check_yours, find, release, status, submit, Found, Job, JobId, Phase, Released, Source,
};
use crate::laptop::link::{self, Ended, Supervised};
use crate::laptop::listen::{self, Locals};
use crate::laptop::ready;
use crate::laptop::ssh::exec::sh_quote;
use crate::laptop::ssh::SshSession;
use crate::laptop::watchdog::{self, Guard, Watchdog};
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::wire::JupyterAccess;

/// How often a running job is looked at while forwarding (its end, its time left).
const WATCH_EVERY: Duration = Duration::from_secs(30);
/// Time left under which podtun says so, once.
const TIME_WARNING: Duration = Duration::from_secs(10 * 60);
/// Bound on cancelling a submitted job on the way out (a new connection included).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to the login host, with the watchdog of a submitted job on it.
struct Link {
    ssh: SshSession,
    watchdog: Option<Watchdog>,
}

/// Where local connections go now.
struct Reach {
    ssh: SshSession,
    node: String,
    port: u16,
}

/// Runs the forward to Jupyter in a Slurm job until shutdown, reconnecting when the login host
/// goes away.
pub async fn run(
    plan: &Plan,
    source: &Source,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // A local port the user named is bound first: taken, nothing is submitted.
    let early = listen::bind_named(plan)?.into_iter().next().flatten();
    tokio::pin!(shutdown);
    let ssh = tokio::select! {
        () = &mut shutdown => {
            out.event(&Event::Closed);
            return Ok(());
        }
        ssh = link::connect(plan, &out) => ssh?,
    };
    let host = ssh.host().to_string();
    let job = match source {
        Source::Existing(id) => {
            let mine = async {
                let now = status(&ssh, id).await?;
                check_yours(&ssh, &now).await
            };
            if let Err(e) = mine.await {
                ssh.disconnect().await;
                return Err(e);
            }
            Job::existing(id.clone())
        }
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
            out.set_target(&format!("{}/{}", super::TARGET_KIND, job.id));
            out.note(&format!(
                "submitted Slurm job {} on `{host}` (cancelled when podtun stops)",
                job.id
            ));
            job
        }
    };
    let watchdog = guard(&out, &ssh, &job).await;
    let mut route = InJob {
        plan,
        job: &job,
        early,
        locals: Locals::new("the login host"),
        warned: false,
        last: None,
    };
    link::run(&mut route, &out, Some(Link { ssh, watchdog }), shutdown).await
}

/// The watchdog of a job podtun submitted (none for a job it attached to); one that cannot
/// start is said, not fatal.
async fn guard(out: &Output, ssh: &SshSession, job: &Job) -> Option<Watchdog> {
    if !job.submitted {
        return None;
    }
    match Watchdog::start(ssh, &job_guard(&job.id)).await {
        Ok(watchdog) => Some(watchdog),
        Err(e) => {
            out.note(&format!(
                "{e:#}; the job is cancelled when podtun stops, but not if podtun is killed"
            ));
            None
        }
    }
}

/// What the watchdog of a submitted job does once the laptop is gone: `scancel` the job.
fn job_guard(id: &JobId) -> Guard {
    Guard {
        key: format!("slurm-{id}"),
        what: format!("Slurm job {id}"),
        undo: format!("scancel {}", sh_quote(id.as_str())),
        needs: Some("scancel".into()),
        grace: watchdog::GRACE,
    }
}

/// The route to Jupyter in a Slurm job: each local connection is one `direct-tcpip` channel
/// to the job's server, through the login host.
struct InJob<'a> {
    plan: &'a Plan,
    job: &'a Job,
    /// The local port the user named, bound before anything was submitted.
    early: Option<TcpListener>,
    locals: Locals<Reach>,
    /// Whether the job's time running out was said.
    warned: bool,
    /// The connection closed last, over which the job is cancelled on the way out.
    last: Option<Link>,
}

impl Supervised for InJob<'_> {
    type Link = Link;

    /// A new connection, and a new watchdog for a submitted job, which takes the job over from
    /// the one of the lost connection.
    async fn establish(&mut self, out: &Output) -> anyhow::Result<Link> {
        let ssh = link::connect(self.plan, out).await?;
        let watchdog = guard(out, &ssh, self.job).await;
        Ok(Link { ssh, watchdog })
    }

    async fn serve(&mut self, link: &mut Link, out: &Output) -> Ended {
        serve(self, out, link).await
    }

    async fn close(&mut self, link: Link, last: bool) {
        self.locals.unroute();
        if !last {
            // The old watchdog keeps the job through the reconnect window (its grace).
            link.ssh.disconnect().await;
        }
        self.last = Some(link);
    }

    /// Cancels a job podtun submitted, over the last connection (or a new one).
    async fn finish(&mut self, out: &Output) {
        self.locals.close().await;
        let Some(link) = self.last.take() else {
            return;
        };
        if self.job.submitted {
            let done = cancel(self.plan, out, &link.ssh, self.job).await;
            if let Some(watchdog) = link.watchdog {
                // Not cancelled: the watchdog does it once podtun is gone.
                if done && !link.ssh.is_closed() {
                    watchdog.dismiss().await;
                }
            }
        }
        link.ssh.disconnect().await;
    }
}

/// Over one connection: finds the job's server, routes local connections to it, reports
/// `ready`, then holds until shutdown, the job's end or the connection's loss.
async fn serve(route: &mut InJob<'_>, out: &Output, link: &Link) -> Ended {
    let (plan, job) = (route.plan, route.job);
    let ssh = &link.ssh;
    let lost = || format!("lost the connection to `{}`", ssh.host());
    let report = |s: &super::JobStatus| out.progress(&s.to_string());
    let found = tokio::select! {
        () = ssh.closed() => return Ended::Lost(lost()),
        found = find(ssh, job, plan.spec.timeout, report) => match found {
            Ok(found) => found,
            Err(e) if ssh.is_closed() => return Ended::Lost(format!("{e:#}")),
            Err(e) => return Ended::Fatal(e),
        },
    };
    let first = route.locals.first();
    if first {
        // The port the user named, else the server's if free, else any.
        let bound = match route.early.take() {
            Some(listener) => Ok(listener),
            None => listen::bind(plan.address, None, found.server.port),
        };
        let served = bound.and_then(|l| {
            route
                .locals
                .serve(vec![l], |reach, _, conn| forward(reach, conn))
        });
        if let Err(e) = served {
            return Ended::Fatal(e);
        }
    }
    let local = route.locals.addrs()[0];
    route.locals.route(Arc::new(Reach {
        ssh: ssh.clone(),
        node: found.host.clone(),
        port: found.server.port,
    }));
    let access = found.server.access(|| {
        "Jupyter in the job has no token (a password, or none): the URL carries none".to_string()
    });
    let progress = |m: &str| out.progress(m);
    if let Err(e) = ready::wait_usable(plan, &[local], Some(&access), &progress).await {
        // A check cut short by the lost connection is a loss, not the answer.
        return Ended::unusable(e, first && !ssh.is_closed());
    }
    report_ready(plan, out, job, &found, local, &access, first);
    tokio::select! {
        () = ssh.closed() => Ended::Lost(lost()),
        ended = watch_job(ssh, out, job, &mut route.warned) => Ended::Fatal(ended),
    }
}

/// Cancels the job podtun submitted, over a new connection when this one was lost; whether it
/// is gone.
async fn cancel(plan: &Plan, out: &Output, ssh: &SshSession, job: &Job) -> bool {
    let attempt = async {
        if ssh.is_closed() {
            let again = SshSession::connect(plan.via(), &link::ssh_options(plan)).await?;
            let done = release(&again, job).await;
            again.disconnect().await;
            done
        } else {
            release(ssh, job).await
        }
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, attempt).await {
        Ok(Ok(Released::Cancelled)) => {
            out.note(&format!("cancelled Slurm job {}", job.id));
            true
        }
        Ok(Ok(Released::AlreadyEnded | Released::LeftRunning)) => true,
        Ok(Err(e)) => {
            out.note(&format!(
                "could not cancel Slurm job {}: {e:#}; run `scancel {}` on the login host",
                job.id, job.id
            ));
            false
        }
        Err(_) => {
            out.note(&format!(
                "could not cancel Slurm job {} within {}s; run `scancel {}` on the login host",
                job.id,
                CANCEL_TIMEOUT.as_secs(),
                job.id
            ));
            false
        }
    }
}

/// One local connection: one `direct-tcpip` channel to the job's server, once the link is up.
async fn forward(route: Arc<Reach>, conn: TcpStream) -> anyhow::Result<()> {
    let channel = route.ssh.open_tcp(&route.node, route.port).await?;
    let moved = crate::net::splice::splice(conn, channel).await?;
    debug!(up = moved.up, down = moved.down, "connection closed");
    Ok(())
}

/// Prints the URL (or the `ready` event) and the time left, and opens the browser the first
/// time.
fn report_ready(
    plan: &Plan,
    out: &Output,
    job: &Job,
    found: &Found,
    local: SocketAddr,
    access: &JupyterAccess,
    first: bool,
) {
    let left = found.status.time_left();
    let what = format!(
        "Jupyter in Slurm job {} on {}:{} ({})",
        job.id,
        found.host,
        found.server.port,
        left.map_or("no time limit".to_string(), |l| format!(
            "{} left",
            super::slurm_duration(l)
        )),
    );
    let served = ready::Served {
        target: format!("{}/{}", super::TARGET_KIND, job.id),
        host: found.host.clone(),
        remote_port: found.server.port,
        what: &what,
        on_stop: if job.submitted {
            " and cancel the job"
        } else {
            ""
        },
    };
    ready::report_served(plan, out, local, access, served, first);
    if let Some(left) = left {
        out.event(&Event::TimeLeft {
            job: job.id.to_string(),
            seconds: left.as_secs(),
            warning: false,
        });
    }
}

/// Resolves with the error to report when the job stops running; says once when little time
/// is left.
async fn watch_job(ssh: &SshSession, out: &Output, job: &Job, warned: &mut bool) -> anyhow::Error {
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
                    if !*warned {
                        out.event(&Event::TimeLeft {
                            job: job.id.to_string(),
                            seconds: left.as_secs(),
                            warning: true,
                        });
                        *warned = true;
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
