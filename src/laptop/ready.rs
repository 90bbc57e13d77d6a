//! "Ready" means usable from the laptop: the forwarded port answers through the whole chain
//! (redis a PING, Jupyter `GET {base}api/status` with its token, anything else an open
//! connection that the pod side does not refuse).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::listen;
use crate::cluster::discover::{Preset, Target};
use crate::cluster::tunnel::Tunnel;
use crate::error::hinted;
use crate::output::{open_browser, Event, Output};
use crate::plan::Plan;
use crate::proto::wire::{ClusterEvent, JupyterAccess, Resolved};

/// Pause between two probes while a port is not yet usable.
const PROBE_RETRY: Duration = Duration::from_millis(250);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A generic port counts as open when the pod side has not refused it within this time.
const REFUSAL_WINDOW: Duration = Duration::from_millis(500);

/// Waits until every local port answers through the whole chain.
pub async fn wait_usable(
    plan: &Plan,
    locals: &[SocketAddr],
    jupyter: Option<&JupyterAccess>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    let deadline = Instant::now() + plan.spec.timeout;
    for local in locals {
        port_usable(*local, plan.spec.preset, jupyter, deadline, progress).await?;
    }
    Ok(())
}

/// Waits until every local port answers through the whole chain (for Jupyter, with the token
/// read from the pod's log); the Jupyter access found.
pub async fn pod_usable(
    plan: &Plan,
    tunnel: &Tunnel,
    locals: &[SocketAddr],
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Option<JupyterAccess>> {
    let jupyter = tunnel.ready(progress).await?;
    wait_usable(plan, locals, jupyter.as_ref(), progress).await?;
    Ok(jupyter)
}

/// Waits until `local` is usable through the forward, or `deadline`.
async fn port_usable(
    local: SocketAddr,
    preset: Preset,
    jupyter: Option<&JupyterAccess>,
    deadline: Instant,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    loop {
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, probe(local, preset, jupyter));
        let last = match attempt.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no answer".to_string(),
        };
        progress(&format!(
            "waiting for the service to answer on {local}: {last}"
        ));
        if Instant::now() + PROBE_RETRY >= deadline {
            return Err(hinted(
                anyhow!("the forwarded port {} did not answer in time: {last}", local.port()),
                "is the service in the pod listening on that port? see the pod's logs, or pass a longer --timeout",
            ));
        }
        tokio::time::sleep(PROBE_RETRY).await;
    }
}

async fn probe(
    local: SocketAddr,
    preset: Preset,
    jupyter: Option<&JupyterAccess>,
) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(local).await?;
    conn.set_nodelay(true)?;
    match (preset, jupyter) {
        (Preset::Jupyter, Some(access)) => probe_jupyter(conn, local, access).await,
        (Preset::Redis, _) => {
            conn.write_all(b"PING\r\n").await?;
            // Read the whole reply line, so closing leaves nothing unread (no reset).
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while !reply.ends_with(b"\n") && reply.len() < 512 {
                if conn.read(&mut byte).await? == 0 {
                    bail!("the connection was closed before redis answered");
                }
                reply.push(byte[0]);
            }
            match reply.first() {
                Some(b'+' | b'-') => Ok(()),
                _ => bail!(
                    "unexpected reply to PING: {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            }
        }
        _ => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(REFUSAL_WINDOW, conn.read(&mut byte)).await {
                Err(_) | Ok(Ok(1..)) => Ok(()),
                Ok(Ok(_)) => bail!("the connection was closed on the pod side"),
                Ok(Err(e)) => Err(e.into()),
            }
        }
    }
}

async fn probe_jupyter(
    mut conn: TcpStream,
    local: SocketAddr,
    access: &JupyterAccess,
) -> anyhow::Result<()> {
    let auth = access
        .token
        .as_ref()
        .map(|t| format!("Authorization: token {}\r\n", t.expose()))
        .unwrap_or_default();
    let request = format!(
        "GET {}api/status HTTP/1.1\r\nHost: {local}\r\n{auth}Connection: close\r\n\r\n",
        access.base_path
    );
    conn.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            bail!("the connection was closed before Jupyter answered");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" => Ok(()),
        // Password-protected servers answer 403 without a token: the server is up.
        "403" if access.token.is_none() => Ok(()),
        other => bail!("Jupyter answered {other} to /api/status"),
    }
}

/// Jupyter's URL on the local end.
pub fn jupyter_url(local: SocketAddr, access: &JupyterAccess) -> String {
    let base = format!("http://{}{}", listen::reachable(local), access.path);
    match &access.token {
        Some(token) => format!("{base}?token={}", token.expose()),
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
            listen::reachable(*local),
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
            local: listen::reachable(*local).to_string(),
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
    let local = listen::reachable(local);
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

/// Cluster-side events while serving: progress lines, and the new pod (and URL) on replacement.
pub fn on_cluster_event(out: &Output, locals: &[SocketAddr], event: ClusterEvent) {
    match event {
        ClusterEvent::Progress { message } => out.note(&message),
        ClusterEvent::PodReplaced { pod, jupyter } => {
            let url = jupyter.as_ref().and_then(|j| {
                j.token.as_ref()?;
                Some(jupyter_url(*locals.first()?, j))
            });
            out.event(&Event::PodReplaced { pod, url });
        }
        ClusterEvent::Error { message, hint, .. } => out.event(&Event::Error { message, hint }),
        _ => {}
    }
}
