//! Runs a forward: bind the local ports, bring the cluster side up (in-process in local mode),
//! wait until each port is usable, print the result, then serve until shutdown, following the
//! target when its pod is replaced.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::{listener, probe};
use crate::cluster::discover::Preset;
use crate::cluster::tunnel::Tunnel;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::wire::{AgentEvent, JupyterAccess};

/// How long open connections may finish after Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

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
    let tunnel = Tunnel::start(&plan.request.cluster, plan.spec.clone(), &progress).await?;
    let listeners = bind_all(plan, &tunnel, early)?;

    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    for (listener, port) in listeners.iter().zip(&tunnel.ports) {
        let (tunnel, remote) = (tunnel.clone(), port.remote);
        let listener = clone_listener(listener)?;
        listener::serve(listener, cancel.clone(), &tracker, move |conn| {
            let tunnel = tunnel.clone();
            async move { tunnel.forward(remote, conn).await.map(|_| ()) }
        });
    }

    let jupyter = match plan.spec.preset {
        Preset::Jupyter => Some(tunnel.jupyter(&progress).await?),
        _ => None,
    };
    let locals: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let deadline = Instant::now() + plan.spec.timeout;
    for local in &locals {
        probe::wait_usable(
            *local,
            plan.spec.preset,
            jupyter.as_ref(),
            deadline,
            &progress,
        )
        .await?;
    }
    let pod = tunnel.pod().metadata.name.unwrap_or_default();
    report_ready(
        plan,
        &out,
        &pod,
        &locals,
        &tunnel.ports.iter().map(|p| p.remote).collect::<Vec<_>>(),
        jupyter.as_ref(),
    );

    let supervise = async {
        let emit = |ev: AgentEvent| on_agent_event(&out, &locals, ev);
        tunnel.supervise(&emit).await
    };
    let result = tokio::select! {
        () = shutdown => Ok(()),
        res = supervise => res,
    };
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        info!(
            "closing connections still open after {}s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    result?;
    out.event(&Event::Closed);
    Ok(())
}

/// Binds the local ports the user named, in the order of the requested ports.
fn bind_named(plan: &Plan) -> anyhow::Result<Vec<Option<TcpListener>>> {
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
fn bind_all(
    plan: &Plan,
    tunnel: &Tunnel,
    early: Vec<Option<TcpListener>>,
) -> anyhow::Result<Vec<TcpListener>> {
    if plan.local_port.is_some() && tunnel.ports.len() > 1 {
        let pod = tunnel.pod().metadata.name.unwrap_or_default();
        let list: Vec<String> = tunnel.ports.iter().map(|p| p.remote.to_string()).collect();
        let first = tunnel.ports.first().map(|p| p.remote).unwrap_or_default();
        return Err(crate::error::usage(
            format!(
                "pod `{}/{pod}` has {} ports ({}), but -p sets the local port of one",
                tunnel.namespace(),
                tunnel.ports.len(),
                list.join(", ")
            ),
            Some(format!(
                "name the ports to forward as LOCAL:REMOTE, e.g. `podtun forward pod/{pod} 9000:{first}`"
            )),
        ));
    }
    let mut early = early.into_iter();
    tunnel
        .ports
        .iter()
        .map(|port| match early.next().flatten() {
            Some(l) => Ok(l),
            None => listener::bind(plan.address, port.local, port.remote),
        })
        .collect()
}

/// The accept loop owns its listener; the probe and the report only need its address.
fn clone_listener(listener: &TcpListener) -> anyhow::Result<TcpListener> {
    let std = socket2_clone(listener)?;
    Ok(TcpListener::from_std(std)?)
}

fn socket2_clone(listener: &TcpListener) -> std::io::Result<std::net::TcpListener> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = listener.as_fd().try_clone_to_owned()?;
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(std)
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsSocket;
        let sock = listener.as_socket().try_clone_to_owned()?;
        let std = std::net::TcpListener::from(sock);
        std.set_nonblocking(true)?;
        Ok(std)
    }
}

/// The address users should type: a wildcard listener is reached on loopback.
fn reachable(local: SocketAddr) -> SocketAddr {
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

fn report_ready(
    plan: &Plan,
    out: &Output,
    pod: &str,
    locals: &[SocketAddr],
    remotes: &[u16],
    jupyter: Option<&JupyterAccess>,
) {
    out.done();
    if let Some(note) = jupyter.and_then(|j| j.note.as_deref()) {
        out.note(note);
    }
    for (local, remote) in locals.iter().zip(remotes) {
        let url = jupyter.map(|j| jupyter_url(*local, j));
        out.note(&format!(
            "forwarding {} → pod `{pod}` port {remote} (Ctrl-C to stop)",
            reachable(*local)
        ));
        out.event(&Event::Ready {
            target: plan.target_label.clone(),
            pod: pod.to_string(),
            local: reachable(*local).to_string(),
            remote_port: *remote,
            url: url.clone(),
        });
        if let Some(url) =
            url.filter(|_| plan.browser && std::io::IsTerminal::is_terminal(&std::io::stdout()))
        {
            if let Err(e) = open::that_detached(&url) {
                out.note(&format!("could not open a browser: {e}"));
            }
        }
    }
}

/// Cluster-side events while serving: progress lines, and the new pod (and URL) on replacement.
fn on_agent_event(out: &Output, locals: &[SocketAddr], event: AgentEvent) {
    match event {
        AgentEvent::Progress { message } => out.note(&message),
        AgentEvent::PodReplaced { pod, jupyter } => {
            let url = jupyter.as_ref().and_then(|j| {
                j.token.as_ref()?;
                Some(jupyter_url(*locals.first()?, j))
            });
            out.event(&Event::PodReplaced { pod, url });
        }
        AgentEvent::Error { message, hint } => out.event(&Event::Error { message, hint }),
        _ => {}
    }
}
