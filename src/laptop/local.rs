//! Local mode: this machine talks to the cluster itself, with the cluster half in this process.

use std::future::Future;
use std::sync::Arc;

use super::link::{self, Ended, Supervised};
use super::listen::{bind_all, bind_named, Locals};
use super::pick::chooser;
use super::ready::{on_cluster_event, pod_usable, report_ready};
use crate::cluster::tunnel::Tunnel;
use crate::output::Output;
use crate::plan::Plan;
use crate::proto::wire::ClusterEvent;

/// Local mode: this machine talks to the cluster itself.
pub async fn run_local(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Local ports the user named (`-p`, `LOCAL:`) are bound first, so one that is taken fails
    // before any waiting. (`-p 0` asks for any free port.)
    let early = bind_named(plan)?;
    let mut route = Local {
        plan,
        out: out.clone(),
        early,
        locals: Locals::new("the cluster"),
    };
    link::run(&mut route, &out, None, shutdown).await
}

/// The route with the cluster half in this process: its one link is the tunnel, which follows
/// the pod (and its replacement) for as long as podtun runs.
struct Local<'a> {
    plan: &'a Plan,
    out: Arc<Output>,
    early: Vec<Option<tokio::net::TcpListener>>,
    locals: Locals<Tunnel>,
}

impl Supervised for Local<'_> {
    type Link = Tunnel;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Tunnel> {
        let progress = |m: &str| out.progress(m);
        let choose = chooser(self.out.clone());
        Tunnel::start_with(
            &self.plan.request.cluster,
            self.plan.spec.clone(),
            &progress,
            &choose,
        )
        .await
    }

    async fn serve(&mut self, tunnel: &mut Tunnel, out: &Output) -> Ended {
        let plan = self.plan;
        let resolved = tunnel.resolved();
        let remotes: Arc<Vec<u16>> = Arc::new(resolved.ports.iter().map(|p| p.remote).collect());
        let served = bind_all(plan, &resolved, std::mem::take(&mut self.early)).and_then(|l| {
            self.locals
                .serve(l, move |tunnel: Arc<Tunnel>, index, conn| {
                    let remote = remotes[index];
                    async move { tunnel.forward(remote, conn).await.map(|_| ()) }
                })
        });
        if let Err(e) = served {
            return Ended::Fatal(e);
        }
        self.locals.route(Arc::new(tunnel.clone()));
        let locals = self.locals.addrs();
        let progress = |m: &str| out.progress(m);
        let jupyter = match pod_usable(plan, tunnel, locals, &progress).await {
            Ok(jupyter) => jupyter,
            Err(e) => return Ended::Fatal(e),
        };
        report_ready(plan, out, &resolved, locals, jupyter.as_ref(), true, None);
        let emit = |ev: ClusterEvent| on_cluster_event(out, locals, ev);
        match tunnel.supervise(&emit).await {
            Ok(()) => Ended::Shutdown,
            Err(e) => Ended::Fatal(e),
        }
    }

    async fn close(&mut self, _tunnel: Tunnel, _last: bool) {}

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
}
