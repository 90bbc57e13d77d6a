//! The kubectl-mode route: the cluster half runs here, through the proxy, under the
//! supervisor; local connections go into its tunnel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use std::sync::Mutex;

use super::super::launched::{Deleter, Launches};
use super::connector::{proxy_client, ProxyRoute};
use super::launcher::OverSsh;
use super::link::{establish_on, Established};
use crate::cluster::client::Cluster;
use crate::cluster::discover::Target;
use crate::cluster::launch::{self, Around};
use crate::cluster::tunnel::Spec;
use crate::cluster::tunnel::Tunnel;
use crate::laptop::link::{self, Ended, Slot, Supervised};
use crate::laptop::listen::{self, Locals};
use crate::laptop::pick::chooser;
use crate::laptop::ready;
use crate::laptop::ssh::SshSession;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::wire::ClusterEvent;
use crate::proto::wire::Launch;

/// kubectl mode on a link already established (the first one): runs the forward until
/// shutdown, reconnecting (and restarting the proxy) when the login host goes away.
pub(in crate::laptop::via) async fn run(
    plan: &Plan,
    out: Arc<Output>,
    early: Vec<Option<TcpListener>>,
    first: Established,
    launches: Launches,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let host = first.ssh.host().to_string();
    info!(%host, socket = %first.proxy.socket, "kubectl mode: the cluster half runs here, through kubectl proxy on the login host");
    let namespace = first.proxy.namespace_for(plan);
    let proxy = Slot::new("the login host");
    let cluster = match proxy_client(proxy.waiter(), &namespace) {
        Ok(c) => c,
        Err(e) => {
            first.close().await;
            return Err(e);
        }
    };
    let mut route = WithKubectl {
        plan,
        out: out.clone(),
        early,
        cluster,
        proxy,
        tunnel: None,
        locals: Locals::new("the login host"),
        launches,
        named: Arc::new(Mutex::new(None)),
    };
    link::run(&mut route, &out, Some(first), shutdown).await
}

/// The route through kubectl proxy: the cluster half runs here, over a kube client whose
/// connections are channels to the proxy's socket; local connections go into that tunnel.
struct WithKubectl<'a> {
    plan: &'a Plan,
    out: Arc<Output>,
    /// The local ports the user named, bound before anything started.
    early: Vec<Option<TcpListener>>,
    /// The kube client, through whichever proxy is up.
    cluster: Cluster,
    /// Where the client's connections go now.
    proxy: Slot<ProxyRoute>,
    /// The cluster half, once the pod is found: it outlives every link.
    tunnel: Option<Tunnel>,
    locals: Locals<Tunnel>,
    /// The pod this run launched, if any.
    launches: Launches,
    /// The pod the launcher named while it still runs, until `launches` has it.
    named: Arc<Mutex<Option<String>>>,
}

impl Supervised for WithKubectl<'_> {
    type Link = Established;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Established> {
        let ssh = link::connect(self.plan, out).await?;
        establish_on(ssh, self.plan).await
    }

    async fn serve(&mut self, link: &mut Established, out: &Output) -> Ended {
        self.proxy.set(Arc::new(ProxyRoute {
            ssh: link.ssh.clone(),
            socket: link.proxy.socket.clone(),
        }));
        if self.tunnel.is_some() {
            out.note("reconnected");
        }
        if let Err(e) = self.launches.guard(&link.ssh).await {
            return Ended::Lost(format!("{e:#}"));
        }
        // Heartbeats go on while the pod starts and while the ports are checked.
        tokio::select! {
            lost = link.held() => Ended::Lost(lost),
            ended = self.forward(&link.ssh) => match ended {
                // A failure the lost link caused is the loss, not the answer.
                Ended::Fatal(e) if link.ssh.is_closed() => Ended::Lost(format!("{e:#}")),
                ended => ended,
            },
        }
    }

    async fn close(&mut self, link: Established, last: bool) {
        self.proxy.clear();
        // Stopped (or cut off) while the launcher ran: the pod it named is ours all the same.
        if let Some(pod) = take(&self.named) {
            let ns = self.cluster.namespace.clone();
            self.launches.record(Deleter::Kubectl, &ns, &pod);
        }
        if last {
            self.launches.end(&self.out).await;
        } else {
            self.launches.lost();
        }
        link.close().await;
    }

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
}

impl WithKubectl<'_> {
    /// The first time: finds the pod and binds the local ports. Every time: checks them,
    /// reports `ready`, then follows the pod (its replacement) until that fails.
    async fn forward(&mut self, ssh: &SshSession) -> Ended {
        let out = self.out.clone();
        let progress = |m: &str| out.progress(m);
        let first = self.tunnel.is_none();
        let tunnel = match &self.tunnel {
            Some(tunnel) => tunnel.clone(),
            None => match self.start(ssh, &progress).await {
                Ok(tunnel) => tunnel,
                Err(e) => return Ended::Fatal(e),
            },
        };
        let locals = self.locals.addrs().to_vec();
        let jupyter = match ready::pod_usable(self.plan, &tunnel, &locals, &progress).await {
            Ok(jupyter) => jupyter,
            Err(e) if first => return Ended::Fatal(e),
            Err(e) => {
                // As before the loss: the forward goes on, and the next loss checks again.
                out.note(&format!("not usable after reconnecting: {e:#}"));
                return self.follow(&tunnel, &locals).await;
            }
        };
        let resolved = tunnel.resolved();
        ready::report_ready(
            self.plan,
            &out,
            &resolved,
            &locals,
            jupyter.as_ref(),
            first,
            Some("kubectl"),
        );
        self.follow(&tunnel, &locals).await
    }

    /// Finds the pod and serves the local ports into the tunnel.
    async fn start(
        &mut self,
        ssh: &SshSession,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> anyhow::Result<Tunnel> {
        let choose = chooser(self.out.clone());
        let mut spec = self.plan.spec.clone();
        if let Some(launch) = &self.plan.request.launch {
            // A pod launched before a lost connection is not launched twice.
            let pod = match self.launches.pod() {
                Some(pod) => pod.to_string(),
                None => self.launch(launch, ssh, &spec, progress).await?,
            };
            spec.target = Target::Pod(pod);
        }
        let tunnel = Tunnel::start_on(self.cluster.clone(), spec, progress, &choose).await?;
        let resolved = tunnel.resolved();
        let listeners = listen::bind_all(self.plan, &resolved, std::mem::take(&mut self.early))?;
        let remotes: Arc<Vec<u16>> = Arc::new(resolved.ports.iter().map(|p| p.remote).collect());
        self.locals
            .serve(listeners, move |tunnel: Arc<Tunnel>, index, conn| {
                let remote = remotes[index];
                async move { tunnel.forward(remote, conn).await.map(|_| ()) }
            })?;
        self.locals.route(Arc::new(tunnel.clone()));
        self.tunnel = Some(tunnel.clone());
        Ok(tunnel)
    }

    /// Runs the launcher on the login host and takes the pod it created, guarded from the
    /// moment it exists.
    async fn launch(
        &mut self,
        launch: &Launch,
        ssh: &SshSession,
        spec: &Spec,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> anyhow::Result<String> {
        let choose = chooser(self.out.clone());
        let ns = self.cluster.namespace.clone();
        let (named, out) = (self.named.clone(), self.out.clone());
        let (tell, mut told) = tokio::sync::mpsc::unbounded_channel();
        // Said at once, kept where `close` finds it should podtun stop meanwhile, and guarded
        // by a watchdog while the launcher goes on.
        let launched = move |pod: &str| {
            *named.lock().unwrap_or_else(|e| e.into_inner()) = Some(pod.to_string());
            out.event(&Event::Launched {
                namespace: ns.clone(),
                pod: pod.to_string(),
            });
            let _ = tell.send(());
        };
        let shell = OverSsh { ssh: ssh.clone() };
        let around = Around {
            shell: &shell,
            progress,
            choose: &choose,
            launched: &launched,
        };
        let (cluster, launches, slot) = (&self.cluster, &mut self.launches, &self.named);
        let launching = launch::launch(cluster, launch, spec, &around);
        tokio::pin!(launching);
        let adopt = |launches: &mut Launches| {
            let pod = take(slot)?;
            launches.record(Deleter::Kubectl, &cluster.namespace, &pod);
            Some(())
        };
        let result = loop {
            tokio::select! {
                result = &mut launching => break result,
                Some(()) = told.recv() => {
                    if adopt(launches).is_some() {
                        launches.guard(ssh).await?;
                    }
                }
            }
        };
        if adopt(launches).is_some() {
            launches.guard(ssh).await?;
        }
        result
    }

    /// Follows the pod until that fails.
    async fn follow(&self, tunnel: &Tunnel, locals: &[SocketAddr]) -> Ended {
        let emit = |ev: ClusterEvent| ready::on_cluster_event(&self.out, locals, ev);
        match tunnel.supervise(&emit).await {
            Ok(()) => Ended::Shutdown,
            Err(e) => Ended::Fatal(e),
        }
    }
}

/// What `slot` holds, taken out.
fn take(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}
