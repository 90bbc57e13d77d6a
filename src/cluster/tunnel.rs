//! The cluster half of a forward, shared by local mode and the agent: find the pod, resolve its
//! ports and Jupyter URL, forward connections to whichever pod currently serves the target, and
//! follow the target when its pod is replaced.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use super::client::{self, Cluster};
use super::discover::{self, DiscoverError, PortRequest, Preset, ResolvedPort, Target, TokenFind};
use super::forward;
use super::listening;
use super::pick::{self, Choose};
use super::podwait::{wait_for_pod, wait_until_gone, PodWait};
use super::pool::{self, Pool, Warmup};
use super::resolve::{self, pod_label, Progress};
use super::spdyforward::{ForwardResult, Link};
use crate::error::usage;
use crate::net::splice::Moved;
use crate::proto::wire::{ClusterEvent, JupyterAccess, Request, Resolved, WirePort};

/// What to forward, parsed and checked.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The pod, or what leads to it.
    pub target: Target,
    /// `-c`.
    pub container: Option<String>,
    /// Which discovery rules apply.
    pub preset: Preset,
    /// Explicit ports (empty: discover).
    pub ports: Vec<PortRequest>,
    /// Bound on every wait.
    pub timeout: Duration,
}

impl Spec {
    /// Parses a wire request (the laptop checked it already; the agent checks it again).
    pub fn from_request(req: &Request) -> anyhow::Result<Spec> {
        let target = match (&req.selector, req.target.as_str()) {
            (Some(sel), "") => Target::Selector(sel.clone()),
            (Some(_), _) => {
                return Err(usage(
                    "pass either a TARGET or -l SELECTOR, not both",
                    Some("`podtun forward -l app=web 8080` picks the pod by label".into()),
                ))
            }
            (None, "") => Target::Any,
            (None, t) => t
                .parse::<Target>()
                .map_err(|e| usage(e.to_string(), e.hint()))?,
        };
        let preset = match req.preset.as_str() {
            "jupyter" => Preset::Jupyter,
            "redis" => Preset::Redis,
            "generic" => Preset::Generic,
            other => anyhow::bail!("unknown preset `{other}`"),
        };
        let ports = req
            .ports
            .iter()
            .map(|p| {
                p.parse::<PortRequest>()
                    .map_err(|e| usage(e.to_string(), e.hint()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Spec {
            target,
            container: req.container.clone(),
            preset,
            ports,
            timeout: Duration::from_secs(req.timeout_secs),
        })
    }
}

/// A running forward's cluster side.
#[derive(Clone)]
pub struct Tunnel {
    cluster: Cluster,
    spec: Arc<Spec>,
    /// The pod connections go to now.
    current: watch::Receiver<Pod>,
    current_tx: Arc<watch::Sender<Pod>>,
    /// The SPDY session to the current pod, shared by every forwarded port.
    link: Link,
    /// Warm v4 port-forward pairs, one pool per forwarded remote port (when the cluster does not
    /// speak SPDY).
    pools: Arc<Vec<Pool>>,
    /// The container that serves.
    pub container: String,
    /// The forwarded ports, in order.
    pub ports: Vec<ResolvedPort>,
}

impl Tunnel {
    /// Connects to the cluster, waits for a Ready pod and resolves its ports; `choose` is asked
    /// when no TARGET was given and several pods fit.
    pub async fn start_with(
        cluster: &client::ClusterRef,
        spec: Spec,
        progress: Progress<'_>,
        choose: Choose<'_>,
    ) -> anyhow::Result<Tunnel> {
        progress("connecting to the cluster");
        let cluster = client::connect(cluster).await?;
        Tunnel::start_on(cluster, spec, progress, choose).await
    }

    /// [`Tunnel::start_with`] on a client built elsewhere (kubectl mode: through `kubectl proxy`).
    pub async fn start_on(
        cluster: Cluster,
        mut spec: Spec,
        progress: Progress<'_>,
        choose: Choose<'_>,
    ) -> anyhow::Result<Tunnel> {
        if spec.target == Target::Any {
            let name = pick::pick(&cluster, spec.preset, progress, choose).await?;
            spec.target = Target::Pod(name);
        }
        let wait = PodWait {
            target: &spec.target,
            container: spec.container.as_deref(),
            timeout: spec.timeout,
            must_exist: true,
        };
        let found = wait_for_pod(&cluster, wait, progress).await?;
        let pod = found.pod;
        let container = discover::pick_container(&pod, spec.container.as_deref(), spec.preset)
            .map_err(DiscoverError::into_hinted)?
            .name
            .clone();
        let requests = match &spec.target {
            Target::Service(name) if !spec.ports.is_empty() => {
                let svc = resolve::service(&cluster, name).await?;
                discover::service_ports(&svc, &pod, &spec.ports)
                    .map_err(DiscoverError::into_hinted)?
            }
            _ => spec.ports.clone(),
        };
        let ports =
            discover::resolve_ports(&pod, spec.container.as_deref(), spec.preset, &requests)
                .map_err(DiscoverError::into_hinted)?;
        let link = Link::new(cluster.clone());
        link.warm(pod.metadata.name.as_deref().unwrap_or_default());
        let (tx, rx) = watch::channel(pod);
        // Only redis is known to serve many silent connections at once and to leave ending a
        // connection to its client; others may serve one connection at a time (see `pool`).
        let (ttl, warmup) = match spec.preset {
            Preset::Redis => (pool::WARM_TTL, Warmup::SharedUpgrade),
            Preset::Jupyter | Preset::Generic => (pool::WARM_TTL_UNKNOWN, Warmup::Off),
        };
        let pools = ports
            .iter()
            .map(|p| Pool::new(cluster.clone(), p.remote, ttl, warmup))
            .collect();
        Ok(Tunnel {
            link,
            pools: Arc::new(pools),
            cluster,
            spec: Arc::new(spec),
            current: rx,
            current_tx: Arc::new(tx),
            container,
            ports,
        })
    }

    /// Waits until every forwarded port has a listener in the pod (one progress line per
    /// reason), bounded by the spec's timeout; fails at once when the API server refuses the
    /// port-forward. Run before anything is reported ready.
    pub async fn wait_listening(&self, progress: Progress<'_>) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.spec.timeout;
        let pod = self.pod().metadata.name.unwrap_or_default();
        for p in &self.ports {
            let port = listening::Port {
                cluster: &self.cluster,
                link: &self.link,
                pod: &pod,
                container: &self.container,
                port: p.remote,
            };
            listening::wait(port, deadline, progress).await?;
        }
        Ok(())
    }

    /// Waits until the pod can serve: Jupyter's URL first (a server stuck before it has no port
    /// either, and its log says why), then a listener on every port (see
    /// [`Tunnel::wait_listening`]). Returns the URL for the Jupyter preset.
    pub async fn ready(&self, progress: Progress<'_>) -> anyhow::Result<Option<JupyterAccess>> {
        let jupyter = match self.spec.preset {
            Preset::Jupyter => Some(self.jupyter(progress).await?),
            _ => None,
        };
        self.wait_listening(progress).await?;
        Ok(jupyter)
    }

    /// The pod connections go to now.
    pub fn pod(&self) -> Pod {
        self.current.borrow().clone()
    }

    /// The namespace of the pod.
    pub fn namespace(&self) -> &str {
        &self.cluster.namespace
    }

    /// The `resolved` event for this tunnel.
    pub fn resolved_event(&self) -> ClusterEvent {
        let resolved = self.resolved();
        ClusterEvent::Resolved {
            namespace: resolved.namespace,
            pod: resolved.pod,
            container: self.container.clone(),
            ports: resolved.ports,
        }
    }

    /// The pod and ports it forwards to.
    pub fn resolved(&self) -> Resolved {
        Resolved {
            namespace: self.cluster.namespace.clone(),
            pod: self.pod().metadata.name.unwrap_or_default(),
            ports: self
                .ports
                .iter()
                .map(|p| WirePort {
                    remote: p.remote,
                    local: p.local,
                    name: p.name.clone(),
                })
                .collect(),
        }
    }

    /// Forwards one connection to `remote` on the current pod.
    pub async fn forward<C>(&self, remote: u16, conn: C) -> anyhow::Result<Moved>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let pod = self
            .current
            .borrow()
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        let pool = self.pools.iter().find(|p| p.port() == remote);
        let pool = pool.with_context(|| format!("port {remote} is not forwarded"))?;
        match self.link.forward(&pod, remote, conn).await {
            ForwardResult::Done(moved) => moved,
            ForwardResult::Unserved(conn) => forward::forward(pool, &pod, conn).await,
        }
    }

    /// Reads Jupyter's URL from the current pod's logs.
    pub async fn jupyter(&self, progress: Progress<'_>) -> anyhow::Result<JupyterAccess> {
        let pod = self.pod();
        let found = resolve::jupyter_url(
            &self.cluster,
            &pod,
            &self.container,
            self.spec.timeout,
            progress,
        )
        .await?;
        Ok(access_of(found, &pod, &self.container))
    }

    /// Follows the target for as long as the forward runs: when its pod goes away or restarts,
    /// waits for the replacement to be Ready, switches new connections to it and reports it.
    /// Ends with the API server's refusal when it refuses a port-forward (rights revoked,
    /// credentials expired): no connection could be forwarded any more.
    pub async fn supervise(
        &self,
        emit: &(dyn Fn(ClusterEvent) + Send + Sync),
    ) -> anyhow::Result<()> {
        tokio::select! {
            res = self.follow(emit) => res,
            refused = self.cluster.refused() => Err(refused.into_error()),
        }
    }

    async fn follow(&self, emit: &(dyn Fn(ClusterEvent) + Send + Sync)) -> anyhow::Result<()> {
        loop {
            let old = self.pod();
            wait_until_gone(&self.cluster, &old).await?;
            info!(pod = %pod_label(&old), "pod went away or restarted; waiting for its replacement");
            emit(ClusterEvent::Progress {
                message: format!(
                    "pod `{}` went away or restarted; waiting for its replacement",
                    pod_label(&old)
                ),
            });
            let progress = |m: &str| {
                emit(ClusterEvent::Progress {
                    message: m.to_string(),
                })
            };
            let wait = PodWait {
                target: &self.spec.target,
                container: Some(&self.container),
                timeout: self.spec.timeout,
                must_exist: false,
            };
            let found = wait_for_pod(&self.cluster, wait, &progress)
                .await
                .with_context(|| format!("pod `{}` was not replaced", pod_label(&old)))?;
            self.current_tx.send_replace(found.pod.clone());
            // Streams and pairs of the old incarnation (same name after a restart) must not serve.
            self.link.reset().await;
            self.link
                .warm(found.pod.metadata.name.as_deref().unwrap_or_default());
            self.pools.iter().for_each(Pool::reset);
            let jupyter = match self.spec.preset {
                Preset::Jupyter => Some(self.jupyter(&progress).await?),
                _ => None,
            };
            emit(ClusterEvent::PodReplaced {
                pod: found.pod.metadata.name.clone().unwrap_or_default(),
                jupyter,
            });
        }
    }
}

fn access_of(found: TokenFind, pod: &Pod, container: &str) -> JupyterAccess {
    match found {
        TokenFind::Found(url) => JupyterAccess {
            token: url.token,
            base_path: url.base_path,
            path: url.path,
            note: None,
        },
        TokenFind::Masked { base_path, path } => {
            let token = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.iter().find(|c| c.name == container))
                .and_then(discover::token_from_env);
            let note = token.is_none().then(|| {
                "Jupyter's token was set by its configuration and is not in the logs: type it in the browser".to_string()
            });
            JupyterAccess {
                token,
                base_path,
                path,
                note,
            }
        }
        TokenFind::NoAuth { base_path, path } => JupyterAccess {
            token: None,
            base_path,
            path,
            note: Some("this Jupyter server has no token (password or none)".into()),
        },
        TokenFind::NotYet => JupyterAccess {
            token: None,
            base_path: "/".into(),
            path: "/lab".into(),
            note: Some("no Jupyter URL in the logs".into()),
        },
    }
}
