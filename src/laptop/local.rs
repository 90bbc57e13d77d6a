//! Local mode: this machine talks to the cluster itself, with the cluster half in this process.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::listen::{bind_all, bind_named, drain};
use super::ready::{on_agent_event, report_ready, wait_usable, Resolved};
use crate::cluster::discover::Preset;
use crate::cluster::tunnel::Tunnel;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::wire::{AgentEvent, Candidates};

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
        crate::net::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
            let tunnel = tunnel.clone();
            async move { tunnel.forward(remote, conn).await.map(|_| ()) }
        });
    }

    let jupyter = match plan.spec.preset {
        Preset::Jupyter => Some(tunnel.jupyter(&progress).await?),
        _ => None,
    };
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
