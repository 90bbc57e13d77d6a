//! Staying connected: one loop ([`supervise`]) for every route, which connects, serves over the
//! connection until it is lost, and reconnects with backoff on the same local ports. A route
//! says only how it establishes its link and what it does over one ([`Supervised`]).
//!
//! Also here: how to connect to the login host, which failures retrying cannot fix, and the
//! [`Slot`] through which local connections find the current link.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use anyhow::bail;
use tokio::sync::watch;

use super::ssh::{user_home, AuthRefused, HostKeyChanged, SshOptions, SshSession};
use crate::error::find;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::refusal::ForwardRefused;

/// Bound on how long a new local connection waits for the link to the login host to come back.
pub const LINK_WAIT: Duration = Duration::from_secs(60);
/// First pause before reconnecting; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest pause between two reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Why serving over one SSH connection ended (via mode, `jupyter @`, Slurm jobs).
pub enum Ended {
    /// Ctrl-C/SIGTERM.
    Shutdown,
    /// The login host, the agent or the server went away: reconnect.
    Lost(String),
    /// Failed for good.
    Fatal(anyhow::Error),
}

impl Ended {
    /// The local ports did not become usable: the user's answer before the first `ready`,
    /// a loss after it.
    pub fn unusable(err: anyhow::Error, first: bool) -> Ended {
        if first {
            Ended::Fatal(err)
        } else {
            Ended::Lost(format!("{err:#}"))
        }
    }
}

/// How to connect to the login host.
pub fn ssh_options(plan: &Plan) -> SshOptions {
    SshOptions {
        config_file: plan.ssh_config.clone(),
        interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        // `~` is $HOME, as for the rest of the user's tools (OpenSSH itself reads passwd); on
        // Windows the profile folder, as for OpenSSH for Windows.
        home: user_home(),
        ..SshOptions::default()
    }
}

/// Connects to the login host (through the jump hosts), saying so.
pub async fn connect(plan: &Plan, out: &Output) -> anyhow::Result<SshSession> {
    out.progress(&format!("connecting to {}", plan.via().join(" → ")));
    SshSession::connect(plan.via(), &ssh_options(plan)).await
}

/// Failures that retrying cannot fix: a changed host key, refused credentials, a port-forward
/// the API server refuses to this user.
pub fn is_permanent(err: &anyhow::Error) -> bool {
    find::<HostKeyChanged>(err).is_some()
        || find::<AuthRefused>(err).is_some()
        || find::<ForwardRefused>(err).is_some()
}

/// Capped exponential backoff with jitter: 1 s, 2 s, 4 s … 30 s, each ±20%.
pub fn backoff(failures: u32) -> Duration {
    let base = RECONNECT_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(RECONNECT_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(jitter)
}

/// What one way of reaching a target does over one connection; [`supervise`] does the rest.
// Routes run on the task of the command that started them: no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait Supervised {
    /// One established connection and what runs over it.
    type Link;

    /// Connects and starts what runs over the connection.
    async fn establish(&mut self, out: &Output) -> anyhow::Result<Self::Link>;

    /// Serves over `link` until it is lost or fails: points the local ports at it (binding
    /// them the first time), waits until they are usable, reports, and holds.
    async fn serve(&mut self, link: &mut Self::Link, out: &Output) -> Ended;

    /// Stops what runs over `link` and closes it; `last`: podtun is stopping.
    async fn close(&mut self, link: Self::Link, last: bool);

    /// Once podtun stops: closes the local ports (open connections get their grace) and
    /// undoes what the route started for this run.
    async fn finish(&mut self, out: &Output);
}

/// Runs `route` under [`supervise`] to its end, then [`Supervised::finish`]; `closed` is
/// reported when it ended well.
pub async fn run<R: Supervised>(
    route: &mut R,
    out: &Output,
    link: Option<R::Link>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let result = supervise(route, out, link, shutdown).await;
    route.finish(out).await;
    result?;
    out.event(&Event::Closed);
    Ok(())
}

/// Runs `route` until shutdown or a failure retrying cannot fix, starting from `link` when the
/// first connection is made already. Once a connection was established, a lost one is
/// reconnected with backoff, and failures to reconnect are said and retried; before that,
/// the first failure is the answer.
pub async fn supervise<R: Supervised>(
    route: &mut R,
    out: &Output,
    link: Option<R::Link>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut next = link;
    let mut established = false;
    let mut failures = 0u32;
    loop {
        let mut link = match next.take() {
            Some(link) => link,
            None => {
                let attempt = tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    attempt = route.establish(out) => attempt,
                };
                match attempt {
                    Ok(link) => link,
                    Err(e) if !established || is_permanent(&e) => return Err(e),
                    Err(e) => {
                        out.note(&format!("reconnecting failed: {e:#}"));
                        failures += 1;
                        if pause(failures, &mut shutdown).await.is_none() {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
        };
        established = true;
        failures = 0;
        let ended = tokio::select! {
            () = &mut shutdown => Ended::Shutdown,
            ended = route.serve(&mut link, out) => ended,
        };
        let lost = match ended {
            Ended::Lost(reason) => reason,
            Ended::Shutdown => {
                route.close(link, true).await;
                return Ok(());
            }
            Ended::Fatal(e) => {
                route.close(link, true).await;
                return Err(e);
            }
        };
        route.close(link, false).await;
        out.event(&Event::Reconnecting { reason: lost });
        failures += 1;
        if pause(failures, &mut shutdown).await.is_none() {
            return Ok(());
        }
    }
}

/// Waits [`backoff`] before the next attempt; `None` on shutdown.
async fn pause(failures: u32, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Option<()> {
    tokio::select! {
        () = shutdown => None,
        () = tokio::time::sleep(backoff(failures)) => Some(()),
    }
}

/// Where local connections go now: set while a link is up, empty while podtun reconnects.
pub struct Slot<T> {
    current: watch::Sender<Option<Arc<T>>>,
    /// What is unreachable when no link comes back, e.g. `the login host`.
    what: &'static str,
}

impl<T> Slot<T> {
    /// An empty slot for links to `what` (`the login host`, `the SSH host`).
    pub fn new(what: &'static str) -> Slot<T> {
        Slot {
            current: watch::Sender::new(None),
            what,
        }
    }

    /// Local connections go to `link` from now on.
    pub fn set(&self, link: Arc<T>) {
        self.current.send_replace(Some(link));
    }

    /// The link was lost: new connections wait for the next one.
    pub fn clear(&self) {
        self.current.send_replace(None);
    }

    /// A handle that waits for the current link.
    pub fn waiter(&self) -> Waiter<T> {
        Waiter {
            current: self.current.subscribe(),
            what: self.what,
        }
    }
}

/// Waits, bounded by [`LINK_WAIT`], for the link of a [`Slot`].
pub struct Waiter<T> {
    current: watch::Receiver<Option<Arc<T>>>,
    what: &'static str,
}

impl<T> Clone for Waiter<T> {
    fn clone(&self) -> Self {
        Waiter {
            current: self.current.clone(),
            what: self.what,
        }
    }
}

impl<T> Waiter<T> {
    /// The current link, once one is up; an error when none came back within [`LINK_WAIT`].
    pub async fn link(&mut self) -> anyhow::Result<Arc<T>> {
        let up = tokio::time::timeout(LINK_WAIT, self.current.wait_for(Option::is_some)).await;
        match up {
            Ok(Ok(current)) => match current.as_ref() {
                Some(link) => Ok(link.clone()),
                None => bail!("{} was unreachable", self.what),
            },
            _ => bail!("{} was unreachable for {}s", self.what, LINK_WAIT.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;
    use crate::error::hinted;

    #[test]
    fn permanent_failures_are_known_by_type_not_text() {
        let refused = hinted(
            AuthRefused {
                user: "alice".into(),
                host: "login".into(),
                tried: "publickey".into(),
            },
            "ssh-add your key",
        )
        .context("could not connect to `login`");
        assert!(is_permanent(&refused));
        let changed = hinted(
            anyhow!("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@").context(
                HostKeyChanged {
                    host: "login:22".into(),
                    file: "~/.ssh/known_hosts".into(),
                    line: 3,
                },
            ),
            "run `ssh-keygen -R login`",
        );
        assert!(is_permanent(&changed));
        assert_eq!(
            crate::error::render(&changed).lines().next(),
            Some("error: host key for `login:22` does not match ~/.ssh/known_hosts:3")
        );
        // The words alone are not the failure: a remote command's output may hold them.
        let said = anyhow!("`chmod` failed on login: permission denied");
        assert!(!is_permanent(&said));
        assert!(!is_permanent(&anyhow!("connection reset by peer")));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let secs = |n| backoff(n).as_secs_f64();
        assert!((0.8..=1.2).contains(&secs(1)));
        assert!((1.6..=2.4).contains(&secs(2)));
        assert!((24.0..=36.0).contains(&secs(10)));
        assert!((24.0..=36.0).contains(&secs(u32::MAX)));
    }
}
