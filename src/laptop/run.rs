//! Runs a forward in local mode (this machine talks to the cluster), and the steps local and
//! via mode share: bind the local ports, wait until each is usable through the whole chain,
//! report, and shut down within a grace period.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{listener, probe};
use crate::cluster::discover::{Preset, Target};
use crate::cluster::tunnel::Tunnel;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::wire::{AgentEvent, Candidates, JupyterAccess, WirePort};

/// How long open connections may finish after Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The pod and ports the cluster side resolved (in-process, or reported by the agent).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Namespace of the pod.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The forwarded ports, in order.
    pub ports: Vec<WirePort>,
}

impl Resolved {
    /// From a `resolved` event.
    pub fn from_event(event: &AgentEvent) -> Option<Resolved> {
        match event {
            AgentEvent::Resolved {
                namespace,
                pod,
                ports,
                ..
            } => Some(Resolved {
                namespace: namespace.clone(),
                pod: pod.clone(),
                ports: ports.clone(),
            }),
            _ => None,
        }
    }
}

/// Local mode: this machine talks to the cluster itself.
pub async fn run_local(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Local ports the user named (`-p`, `LOCAL:`) are bound first, so one that is taken fails
    // before any waiting. (`-p 0` asks for any free port.)
    let early = bind_named(plan)?;
    let progress = {
        let out = out.clone();
        move |m: &str| out.progress(m)
    };
    let choose = {
        let out = out.clone();
        move |offered: Candidates| -> BoxFuture<'static, anyhow::Result<String>> {
            let out = out.clone();
            Box::pin(async move { super::pick::choose(&offered, &out).await })
        }
    };
    let tunnel =
        Tunnel::start_with(&plan.request.cluster, plan.spec.clone(), &progress, &choose).await?;
    let resolved = Resolved::from_event(&tunnel.resolved_event())
        .ok_or_else(|| anyhow::anyhow!("the tunnel resolved nothing"))?;
    let listeners = bind_all(plan, &resolved, early)?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut locals = Vec::new();
    for (listener, port) in listeners.into_iter().zip(&resolved.ports) {
        locals.push(listener.local_addr()?);
        let (tunnel, remote) = (tunnel.clone(), port.remote);
        crate::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
            let tunnel = tunnel.clone();
            async move { tunnel.forward(remote, conn).await.map(|_| ()) }
        });
    }

    let jupyter = match plan.spec.preset {
        Preset::Jupyter => Some(tunnel.jupyter(&progress).await?),
        _ => None,
    };
    tunnel.wait_listening(&progress).await?;
    wait_usable(plan, &locals, jupyter.as_ref(), &progress).await?;
    report_ready(plan, &out, &resolved, &locals, jupyter.as_ref(), true, None);

    let supervise = async {
        let emit = |ev: AgentEvent| on_agent_event(&out, &locals, ev);
        tunnel.supervise(&emit).await
    };
    let result = tokio::select! {
        () = shutdown => Ok(()),
        res = supervise => res,
    };
    drain(cancel, tracker).await;
    result?;
    out.event(&Event::Closed);
    Ok(())
}

/// Stops accepting and lets open connections finish for [`SHUTDOWN_GRACE`].
pub async fn drain(cancel: CancellationToken, tracker: TaskTracker) {
    crate::shutdown::drain(&cancel, &tracker, SHUTDOWN_GRACE).await;
}

/// Waits until every local port answers through the whole chain.
pub async fn wait_usable(
    plan: &Plan,
    locals: &[SocketAddr],
    jupyter: Option<&JupyterAccess>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + plan.spec.timeout;
    for local in locals {
        probe::wait_usable(*local, plan.spec.preset, jupyter, deadline, progress).await?;
    }
    Ok(())
}

/// Binds the local ports the user named, in the order of the requested ports.
pub fn bind_named(plan: &Plan) -> anyhow::Result<Vec<Option<TcpListener>>> {
    if let Some(port) = plan.local_port {
        return Ok(vec![Some(listener::bind(plan.address, Some(port), port)?)]);
    }
    plan.spec
        .ports
        .iter()
        .map(|p| {
            p.local
                .map(|l| listener::bind(plan.address, Some(l), l))
                .transpose()
        })
        .collect()
}

/// One listener per forwarded port, in order, reusing the ones bound early.
pub fn bind_all(
    plan: &Plan,
    resolved: &Resolved,
    early: Vec<Option<TcpListener>>,
) -> anyhow::Result<Vec<TcpListener>> {
    let ports = &resolved.ports;
    if plan.local_port.is_some() && ports.len() > 1 {
        let list: Vec<String> = ports.iter().map(|p| p.remote.to_string()).collect();
        let first = ports.first().map(|p| p.remote).unwrap_or_default();
        return Err(crate::error::usage(
            format!(
                "pod `{}/{}` has {} ports ({}), but -p sets the local port of one",
                resolved.namespace,
                resolved.pod,
                ports.len(),
                list.join(", ")
            ),
            Some(format!(
                "name the ports to forward as LOCAL:REMOTE, e.g. `podtun forward pod/{} 9000:{first}`",
                resolved.pod
            )),
        ));
    }
    let mut early = early.into_iter();
    ports
        .iter()
        .map(|port| match early.next().flatten() {
            Some(l) => Ok(l),
            None => match port.local.or_else(|| recall(plan, port.remote)) {
                // A remembered port is a preference: taken, the usual choice applies.
                Some(p) if port.local.is_none() => listener::bind(plan.address, Some(p), p)
                    .or_else(|_| listener::bind(plan.address, None, port.remote)),
                _ => listener::bind(plan.address, port.local, port.remote),
            },
        })
        .collect()
}

/// The local port this tunnel used last time for `remote`.
fn recall(plan: &Plan, remote: u16) -> Option<u16> {
    crate::tunnels::ports::recall(&crate::tunnels::ports::Key::of(plan), remote)
}

/// The address users should type: a wildcard listener is reached on loopback.
pub fn reachable(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
        }
        _ => local,
    }
}

/// Jupyter's URL on the local end.
pub fn jupyter_url(local: SocketAddr, access: &JupyterAccess) -> String {
    let base = format!("http://{}{}", reachable(local), access.path);
    match &access.token {
        Some(token) => format!("{base}?token={}", token.0),
        None => base,
    }
}

/// Prints the result: one line (or `ready` event) per forward; opens the browser on Jupyter
/// the first time.
pub fn report_ready(
    plan: &Plan,
    out: &Output,
    resolved: &Resolved,
    locals: &[SocketAddr],
    jupyter: Option<&JupyterAccess>,
    first: bool,
    agent: Option<&'static str>,
) {
    out.done();
    if let Some(note) = jupyter.and_then(|j| j.note.as_deref()) {
        out.note(note);
    }
    for (local, port) in locals.iter().zip(&resolved.ports) {
        let url = jupyter.map(|j| jupyter_url(*local, j));
        out.note(&format!(
            "forwarding {} → pod `{}` port {} (Ctrl-C to stop)",
            reachable(*local),
            resolved.pod,
            port.remote
        ));
        // Without a TARGET, the pod that was picked is the target.
        let target = match plan.spec.target {
            Target::Any => format!("pod/{}", resolved.pod),
            _ => plan.target_label.clone(),
        };
        out.event(&Event::Ready {
            target,
            pod: resolved.pod.clone(),
            local: reachable(*local).to_string(),
            remote_port: port.remote,
            url: url.clone(),
            agent,
        });
        if let Some(url) = url.filter(|_| first && plan.browser) {
            open_browser(out, &url);
        }
    }
    out.ready_reported(first);
}

/// A Jupyter server reached over SSH without Kubernetes (`jupyter @`, a Slurm job), as its
/// `ready` names it.
pub struct Served<'a> {
    /// The target (`@`, `slurm/JOBID`).
    pub target: String,
    /// The host it runs on (the event's `pod`).
    pub host: String,
    /// Its port there (0 on a socket).
    pub remote_port: u16,
    /// What the progress line says it forwards to, e.g. ``Jupyter on `vm` (port 8888)``.
    pub what: &'a str,
    /// What Ctrl-C does besides stopping, e.g. ` and cancel the job`.
    pub on_stop: &'a str,
}

/// Prints the URL of a [`Served`] server (or the `ready` event), and opens the browser the
/// first time.
pub fn report_served(
    plan: &Plan,
    out: &Output,
    local: SocketAddr,
    access: &JupyterAccess,
    served: Served<'_>,
    first: bool,
) {
    out.done();
    if let Some(note) = &access.note {
        out.note(note);
    }
    let local = reachable(local);
    out.note(&format!(
        "forwarding {local} → {} (Ctrl-C to stop{})",
        served.what, served.on_stop
    ));
    let url = jupyter_url(local, access);
    out.event(&Event::Ready {
        target: served.target,
        pod: served.host,
        local: local.to_string(),
        remote_port: served.remote_port,
        url: Some(url.clone()),
        agent: Some("none"),
    });
    if first && plan.browser {
        open_browser(out, &url);
    }
    out.ready_reported(first);
}

/// Opens `url` in the browser when stdout is a terminal; says so when it cannot.
pub fn open_browser(out: &Output, url: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        if let Err(e) = open::that_detached(url) {
            out.note(&format!("could not open a browser: {e}"));
        }
    }
}

/// Cluster-side events while serving: progress lines, and the new pod (and URL) on replacement.
pub fn on_agent_event(out: &Output, locals: &[SocketAddr], event: AgentEvent) {
    match event {
        AgentEvent::Progress { message } => out.note(&message),
        AgentEvent::PodReplaced { pod, jupyter } => {
            let url = jupyter.as_ref().and_then(|j| {
                j.token.as_ref()?;
                Some(jupyter_url(*locals.first()?, j))
            });
            out.event(&Event::PodReplaced { pod, url });
        }
        AgentEvent::Error { message, hint, .. } => out.event(&Event::Error { message, hint }),
        _ => {}
    }
}
