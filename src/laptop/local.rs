//! Local mode: this machine talks to the cluster itself, with the cluster half in this process.

use std::future::Future;
use std::sync::Arc;

use super::link::{self, Ended, Supervised};
use super::listen::{bind_all, bind_named, Locals};
use super::pick::chooser;
use super::ready::{on_cluster_event, pod_usable, report_ready};
use std::sync::Mutex;

use crate::cluster::client::{self, Cluster};
use crate::cluster::launch::delete::{delete_pod, Deleted};
use crate::cluster::launch::{self, Around, ThisMachine};
use crate::cluster::tunnel::Tunnel;
use crate::output::{Event, Output};
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
        launched: Launched::default(),
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
    launched: Launched,
}

/// The pod this run launched (`--launch`, `--image`), deleted when podtun stops.
#[derive(Default)]
struct Launched {
    /// The client it was launched with.
    cluster: Option<Cluster>,
    /// Its name, as soon as it exists.
    pod: Arc<Mutex<Option<String>>>,
}

impl Supervised for Local<'_> {
    type Link = Tunnel;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Tunnel> {
        let progress = |m: &str| out.progress(m);
        let choose = chooser(self.out.clone());
        let plan = self.plan;
        let Some(launch) = &plan.request.launch else {
            return Tunnel::start_with(
                &plan.request.cluster,
                plan.spec.clone(),
                &progress,
                &choose,
            )
            .await;
        };
        progress("connecting to the cluster");
        let cluster = client::connect(&plan.request.cluster).await?;
        self.launched.cluster = Some(cluster.clone());
        let (out2, slot) = (self.out.clone(), self.launched.pod.clone());
        let ns = cluster.namespace.clone();
        let launched = move |pod: &str| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(pod.to_string());
            out2.event(&Event::Launched {
                namespace: ns.clone(),
                pod: pod.to_string(),
            });
        };
        let here = ThisMachine {
            place: "here".into(),
        };
        let around = Around {
            shell: &here,
            progress: &progress,
            choose: &choose,
            launched: &launched,
        };
        launch::start_launched(cluster, launch, plan.spec.clone(), &around).await
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

    async fn finish(&mut self, out: &Output) {
        self.locals.close().await;
        let pod = self
            .launched
            .pod
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let (Some(cluster), Some(pod)) = (&self.launched.cluster, pod) {
            end_launched(cluster, &pod, self.plan.keep, out).await;
        }
    }
}

/// podtun stops: the pod it launched is deleted, or kept with `--keep`; either is said.
async fn end_launched(cluster: &Cluster, pod: &str, keep: bool, out: &Output) {
    let namespace = cluster.namespace.clone();
    let pod = pod.to_string();
    if keep {
        out.event(&Event::Kept { namespace, pod });
        return;
    }
    match delete_pod(cluster, &namespace, &pod).await {
        Ok(Deleted::Deleted) => out.event(&Event::Deleted { namespace, pod }),
        Ok(Deleted::AlreadyGone) => out.note(&format!(
            "pod `{namespace}/{pod}`, which podtun launched, was not there to delete"
        )),
        Err(e) => out.note(&format!(
            "could not delete pod `{namespace}/{pod}`, which podtun launched: {e:#}"
        )),
    }
}
