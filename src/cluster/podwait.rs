//! Waiting on a watch of the target's pods: until one is Ready, or until it is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use tokio::time::Instant;
use tracing::debug;

use super::client::Cluster;
use super::discover::{self, PodState, Target};
use super::resolve::{api_error, not_found, pod_label, selector_of, Progress};
use crate::error::hinted;

/// A pod that was found, with the selector that found it (to find its successor).
#[derive(Debug, Clone)]
pub struct Found {
    /// The pod as last seen.
    pub pod: Pod,
    /// The label selector of svc/deploy/sts/-l targets; `None` for a pod by name.
    pub selector: Option<String>,
}

/// Turns a failed pod watch into an error that names it.
fn watch_error(err: watcher::Error, ns: &str) -> anyhow::Error {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => api_error(e, "watch pods", ns),
        other => anyhow::Error::new(other).context("could not watch pods"),
    }
}

/// What [`wait_for_pod`] waits for.
#[derive(Debug, Clone, Copy)]
pub struct PodWait<'a> {
    /// The target whose pod is wanted.
    pub target: &'a Target,
    /// The container that must be ready (`None`: the pod's own readiness).
    pub container: Option<&'a str>,
    /// Bound on the wait.
    pub timeout: Duration,
    /// A target with no pod at all fails at once (otherwise: wait for one to appear).
    pub must_exist: bool,
}

/// Waits until the target has a Ready pod and returns it.
///
/// A pod that can't become Ready (Failed, CrashLoopBackOff, ImagePull…) is an error quoting its
/// reason. With `must_exist`, a target with no pod at all fails at once; otherwise (a pod being
/// replaced) podtun waits for one to appear.
pub async fn wait_for_pod(
    cluster: &Cluster,
    wait: PodWait<'_>,
    progress: Progress<'_>,
) -> anyhow::Result<Found> {
    let PodWait {
        target,
        container,
        timeout,
        must_exist,
    } = wait;
    let ns = cluster.namespace.clone();
    let selector = selector_of(cluster, target).await?;
    let mut events = watch_pods(cluster, target, selector.as_deref());
    let deadline = Instant::now() + timeout;
    let mut pods = PodList::default();
    let mut last_state = String::from("no pod yet");
    loop {
        let event = match tokio::time::timeout_at(deadline, events.try_next()).await {
            Err(_) => return Err(not_ready_in_time(target, &ns, timeout, &last_state)),
            Ok(Err(e)) => return Err(watch_error(e, &ns)),
            Ok(Ok(None)) => bail!("the pod watch ended unexpectedly"),
            Ok(Ok(Some(event))) => event,
        };
        if !pods.apply(event) {
            continue;
        }
        let all: Vec<Pod> = pods.pods.values().cloned().collect();
        let Some(pod) = discover::choose_pod(&all) else {
            if must_exist {
                return Err(not_found(cluster, target, selector.as_deref()).await);
            }
            last_state = "no pod yet".into();
            progress(&format!(
                "waiting for {}: no pod yet",
                describe(target, &ns)
            ));
            continue;
        };
        match starting(pod, container, &ns)? {
            None => {
                return Ok(Found {
                    pod: pod.clone(),
                    selector,
                })
            }
            Some(why) => {
                progress(&format!("waiting for pod `{}`: {why}", pod_label(pod)));
                last_state = why;
            }
        }
    }
}

/// A watch of the target's pods: by name, or by its selector.
fn watch_pods(
    cluster: &Cluster,
    target: &Target,
    selector: Option<&str>,
) -> BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>> {
    let mut config = watcher::Config::default();
    match (target, selector) {
        (Target::Pod(name), _) => config = config.fields(&format!("metadata.name={name}")),
        (_, Some(sel)) => config = config.labels(sel),
        (_, None) => {}
    }
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    watcher(api, config).boxed()
}

/// The pods a watch has shown, by name.
#[derive(Default)]
struct PodList {
    pods: BTreeMap<String, Pod>,
    /// The listing under way (a watch lists again after it restarts).
    listing: BTreeMap<String, Pod>,
    /// A first listing is complete.
    ready_once: bool,
}

impl PodList {
    /// Applies one event; returns whether the list is complete (listed at least once).
    fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Init => self.listing.clear(),
            watcher::Event::InitApply(pod) => {
                self.listing
                    .insert(pod.metadata.name.clone().unwrap_or_default(), pod);
            }
            watcher::Event::InitDone => {
                self.pods = std::mem::take(&mut self.listing);
                self.ready_once = true;
            }
            watcher::Event::Apply(pod) => {
                self.pods
                    .insert(pod.metadata.name.clone().unwrap_or_default(), pod);
            }
            watcher::Event::Delete(pod) => {
                self.pods
                    .remove(pod.metadata.name.as_deref().unwrap_or_default());
            }
        }
        self.ready_once
    }
}

/// Why `pod` is still starting; `None` once it is Ready; an error when it never will be.
fn starting(pod: &Pod, container: Option<&str>, ns: &str) -> anyhow::Result<Option<String>> {
    match discover::pod_state(pod, container) {
        PodState::Ready => Ok(None),
        PodState::Starting { why } => Ok(Some(why)),
        PodState::Failed { reason, message } => {
            let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
            Err(hinted(
                anyhow!("pod `{}` is failing: {reason}{detail}", pod_label(pod)),
                format!(
                    "see `kubectl -n {ns} logs {}` and `kubectl -n {ns} describe pod {}`",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
            ))
        }
        PodState::Succeeded => Err(hinted(
            anyhow!("pod `{}` has completed and serves nothing", pod_label(pod)),
            "start the service again, or pick another pod",
        )),
    }
}

/// The target had no Ready pod within `timeout`.
fn not_ready_in_time(
    target: &Target,
    ns: &str,
    timeout: Duration,
    last_state: &str,
) -> anyhow::Error {
    hinted(
        anyhow!(
            "{} did not become Ready within {}s ({last_state})",
            describe(target, ns),
            timeout.as_secs()
        ),
        format!("see `kubectl -n {ns} describe pod`, or pass a longer --timeout"),
    )
}

fn describe(target: &Target, ns: &str) -> String {
    match target {
        Target::Pod(name) => format!("pod `{ns}/{name}`"),
        other => format!("`{other}` in namespace `{ns}`"),
    }
}

/// A pod's identity for "has it been replaced": its uid and how often its containers restarted.
fn incarnation(pod: &Pod) -> (Option<String>, i32) {
    let restarts = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    (pod.metadata.uid.clone(), restarts)
}

/// Returns when `pod` is deleted, terminating, or restarted.
pub(super) async fn wait_until_gone(cluster: &Cluster, pod: &Pod) -> anyhow::Result<()> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).boxed();
    let was = incarnation(pod);
    let mut listed = Vec::new();
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(e) => {
                // A broken watch is retried by the watcher; pace it so errors don't spin.
                debug!(%e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let now = match event {
            watcher::Event::Apply(p) => Some(p),
            watcher::Event::Delete(_) => return Ok(()),
            watcher::Event::Init => {
                listed.clear();
                None
            }
            watcher::Event::InitApply(p) => {
                listed.push(p);
                None
            }
            watcher::Event::InitDone => match listed.pop() {
                Some(p) => Some(p),
                None => return Ok(()),
            },
        };
        if let Some(p) = now {
            if p.metadata.deletion_timestamp.is_some() || incarnation(&p) != was {
                return Ok(());
            }
        }
    }
}
