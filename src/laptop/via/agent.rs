//! Via mode with podtun's agent: one SSH connection to the login host, the agent started over
//! an exec channel ([`super::control`]), and one SSH channel per agent socket carrying every
//! local connection to it ([`Transport`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::control::remote_error;
use super::kubectl;
use super::launched::Launches;
use super::start::{start, start_agent, Established, Start};
use super::transport::Transport;
use crate::laptop::link::{self, Ended, Supervised};
use crate::laptop::listen::{self, Locals};
use crate::laptop::ready;
use crate::output::{Event, Output};
use crate::plan::Plan;

use crate::proto::wire::ClusterEvent;

/// Via mode: reach the cluster through the login host, and stay connected.
pub async fn run_via(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Local ports the user named are bound first, so one that is taken fails before anything
    // starts on the login host.
    let early = listen::bind_named(plan)?;
    let mut launches = Launches::new(plan);
    tokio::pin!(shutdown);
    let started = tokio::select! {
        () = &mut shutdown => None,
        started = start(plan, &out, &mut launches) => Some(started),
    };
    let started = match started {
        Some(Ok(started)) => started,
        // Nothing half-started: a pod launched meanwhile is deleted.
        Some(Err(e)) => {
            launches.end(&out).await;
            return Err(e);
        }
        None => {
            launches.end(&out).await;
            out.event(&Event::Closed);
            return Ok(());
        }
    };
    let first = match started {
        Start::Agent(session) => *session,
        Start::Kubectl(link) => {
            return kubectl::run(plan, out, early, *link, launches, shutdown).await
        }
    };
    let mut route = WithAgent {
        plan,
        out: out.clone(),
        early,
        locals: Locals::new("the login host"),
        launches,
    };
    link::run(&mut route, &out, Some(first), shutdown).await
}

/// The route through podtun's agent: each local connection is a stream to one of its sockets.
struct WithAgent<'a> {
    plan: &'a Plan,
    out: Arc<Output>,
    /// The local ports the user named, bound before anything started.
    early: Vec<Option<TcpListener>>,
    locals: Locals<Transport>,
    /// The pod this run launched, if any.
    launches: Launches,
}

impl Supervised for WithAgent<'_> {
    type Link = Established;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Established> {
        let ssh = link::connect(self.plan, out).await?;
        // A pod launched earlier is guarded on the new connection first.
        if let Err(e) = self.launches.guard(&ssh).await {
            ssh.disconnect().await;
            return Err(e);
        }
        start_agent(self.plan, out, ssh, &mut self.launches).await
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

    async fn close(&mut self, session: Established, last: bool) {
        self.locals.unroute();
        let Established { ssh, mut agent, .. } = session;
        // Nothing half-started: the agent goes with its connection, a pod podtun launched
        // when podtun stops (or with the watchdog's grace, when the connection is lost).
        agent.stop().await;
        if last {
            self.launches.end(&self.out).await;
        } else {
            self.launches.lost();
        }
        ssh.disconnect().await;
    }

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
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
