//! The kubelet of the test cluster: runs each pod's containers as host processes (in the pod's
//! own network namespace when isolated), restarts them by policy with CrashLoopBackOff, probes
//! readiness, keeps their logs, and writes the pod status back into the store.
//!
//! One task per pod (`run_pod`) owns the pod's network and one task per container
//! (`container::run`). Deleting a pod cancels its token; the pod task waits for the processes
//! to die, then removes the object, which is when watchers see DELETED.

mod container;
pub(crate) mod image;
mod probe;
mod process;
mod schedule;
pub(crate) mod status;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::logs::LogBuffer;
use crate::netns::PodNetwork;
use crate::store::Key;
use schedule::{Placement, Requests};
use status::{ContainerInfo, PodFacts, Transitions};

/// The labels of the one node; `spec.nodeSelector` must match them.
pub(crate) const NODE_NAME: &str = "testcluster";
const NODE_LABELS: [(&str, &str); 4] = [
    ("kubernetes.io/hostname", NODE_NAME),
    ("kubernetes.io/os", "linux"),
    ("kubernetes.io/arch", std::env::consts::ARCH),
    ("node-role.kubernetes.io/control-plane", ""),
];
/// Upper bound on a deletion's grace period, so a process that ignores SIGTERM cannot hold a
/// test for the default 30 s plus more.
const MAX_GRACE: Duration = Duration::from_secs(30);

/// Logs of one container: the running (or last) run and the one before it.
#[derive(Default, Clone)]
pub(crate) struct ContainerLogs {
    pub current: Option<Arc<LogBuffer>>,
    pub previous: Option<Arc<LogBuffer>>,
}

struct PodState {
    placement: Placement,
    unschedulable: Option<String>,
    start_time: Option<Time>,
    containers: Vec<ContainerInfo>,
    logs: Vec<ContainerLogs>,
    pids: Vec<Option<i32>>,
    transitions: Transitions,
}

/// One pod as the runtime runs it.
pub(crate) struct PodRuntime {
    pub key: Key,
    pub uid: String,
    pub pod: Pod,
    pub pod_ip: String,
    pub network: OnceLock<Arc<PodNetwork>>,
    /// Creation order, for the scheduler's queue.
    seq: u64,
    requests: Requests,
    /// Woken when the scheduler binds the pod or changes why it cannot.
    wake: Notify,
    /// Cancelled when the pod is deleted or the cluster shuts down.
    pub cancel: CancellationToken,
    grace: Mutex<Duration>,
    state: Mutex<PodState>,
}

impl PodRuntime {
    fn lock(&self) -> MutexGuard<'_, PodState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `name_namespace(uid)`, as the kubelet names a pod in messages.
    fn full_name(&self) -> String {
        format!("{}_{}({})", self.key.name, self.key.ns, self.uid)
    }

    pub fn logs(&self, container: &str) -> Option<ContainerLogs> {
        let state = self.lock();
        let idx = state
            .containers
            .iter()
            .position(|c| c.status.name == container)?;
        state.logs.get(idx).cloned()
    }

    /// The waiting reason of a container that is not running (for log errors).
    pub fn waiting_reason(&self, container: &str) -> Option<String> {
        let state = self.lock();
        let c = state
            .containers
            .iter()
            .find(|c| c.status.name == container)?;
        c.status.state.as_ref()?.waiting.as_ref()?.reason.clone()
    }

    /// Writes the current status into the store.
    fn publish(&self, cluster: &Cluster) {
        let mut state = self.lock();
        let state = &mut *state;
        let facts = PodFacts {
            unschedulable: state.unschedulable.as_deref(),
            start_time: state.start_time.clone(),
            pod_ip: if state.unschedulable.is_some() {
                ""
            } else {
                &self.pod_ip
            },
            host_ip: if state.unschedulable.is_some() {
                ""
            } else {
                &cluster.host_ip
            },
            qos_class: self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.qos_class.as_deref())
                .unwrap_or("BestEffort"),
        };
        let status = status::pod_status(&facts, &state.containers, &mut state.transitions);
        let Ok(status) = serde_json::to_value(status) else {
            return;
        };
        let uid = self.uid.as_str();
        let scheduled = state.unschedulable.is_none();
        cluster.store.update(&self.key, |pod| {
            if pod["metadata"]["uid"].as_str() == Some(uid) {
                pod["status"] = status;
                if scheduled {
                    pod["spec"]["nodeName"] = json!(NODE_NAME);
                }
            }
        });
    }
}

/// All pods the runtime runs, and every live process group (for the best-effort kill on drop).
#[derive(Default)]
pub(crate) struct Registry {
    pods: Mutex<HashMap<Key, Arc<PodRuntime>>>,
    pgids: Mutex<HashSet<i32>>,
    next_ip: AtomicU32,
    next_seq: AtomicU64,
    /// Held for one scheduling pass, so that two passes never bind into the same room.
    scheduling: Mutex<()>,
}

impl Registry {
    fn pods(&self) -> MutexGuard<'_, HashMap<Key, Arc<PodRuntime>>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pgids(&self) -> MutexGuard<'_, HashSet<i32>> {
        self.pgids.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scheduling(&self) -> MutexGuard<'_, ()> {
        self.scheduling.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Arc<PodRuntime>> {
        self.pods().get(key).cloned()
    }

    /// Every running pod.
    pub fn all(&self) -> Vec<Arc<PodRuntime>> {
        self.pods().values().cloned().collect()
    }

    /// Kills every process group at once; used on drop, where nothing can be awaited.
    pub fn kill_all_now(&self) {
        for pgid in self.pgids().drain() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Starts running a pod that was just stored.
pub(crate) fn start(cluster: &Arc<Cluster>, pod_json: &serde_json::Value) {
    let pod: Pod = match serde_json::from_value(pod_json.clone()) {
        Ok(pod) => pod,
        Err(err) => {
            warn!(%err, "stored pod does not parse; not running it");
            return;
        }
    };
    let meta = &pod.metadata;
    let key = Key::new(
        crate::kinds::Kind::Pod,
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    );
    let n = cluster.pods.next_ip.fetch_add(1, Ordering::Relaxed) + 2;
    let never = never_fits(&pod);
    let rt = Arc::new(PodRuntime {
        uid: meta.uid.clone().unwrap_or_default(),
        pod_ip: format!("10.244.{}.{}", n / 250, n % 250 + 2),
        key: key.clone(),
        network: OnceLock::new(),
        seq: cluster.pods.next_seq.fetch_add(1, Ordering::Relaxed),
        requests: Requests::of_pod(&pod),
        wake: Notify::new(),
        cancel: cluster.shutdown.child_token(),
        grace: Mutex::new(Duration::ZERO),
        state: Mutex::new(PodState {
            placement: if never.is_some() {
                Placement::Never
            } else {
                Placement::Waiting
            },
            unschedulable: never,
            start_time: None,
            containers: Vec::new(),
            logs: Vec::new(),
            pids: Vec::new(),
            transitions: Transitions::default(),
        }),
        pod,
    });
    cluster.pods.pods().insert(key, rt.clone());
    let task = run_pod(cluster.clone(), rt);
    cluster.tasks.spawn(task);
}

/// Asks a pod to stop: its processes get SIGTERM, then SIGKILL after `grace`.
pub(crate) fn stop(cluster: &Cluster, key: &Key, grace: Duration) -> bool {
    let Some(rt) = cluster.pods.get(key) else {
        return false;
    };
    *rt.grace.lock().unwrap_or_else(|e| e.into_inner()) = grace.min(MAX_GRACE);
    rt.cancel.cancel();
    true
}

/// Kills the processes of a pod's containers; the restart policy decides what follows.
pub(crate) fn kill_processes(cluster: &Cluster, key: &Key) -> bool {
    let Some(rt) = cluster.pods.get(key) else {
        return false;
    };
    let pids: Vec<i32> = rt.lock().pids.iter().flatten().copied().collect();
    for pid in &pids {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    !pids.is_empty()
}

/// Why the node can never take the pod (its labels do not match the node selector), if so.
fn never_fits(pod: &Pod) -> Option<String> {
    let selector = pod.spec.as_ref()?.node_selector.as_ref()?;
    let fits = selector
        .iter()
        .all(|(k, v)| NODE_LABELS.iter().any(|(nk, nv)| nk == k && nv == v));
    (!fits).then(|| {
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
            .to_string()
    })
}

async fn run_pod(cluster: Arc<Cluster>, rt: Arc<PodRuntime>) {
    let containers = rt
        .pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    {
        let mut state = rt.lock();
        state.containers = containers
            .iter()
            .map(|c| ContainerInfo::new(&c.name, c.image.as_deref().unwrap_or_default()))
            .collect();
        state.logs = vec![ContainerLogs::default(); containers.len()];
        state.pids = vec![None; containers.len()];
    }
    schedule::schedule(&cluster);
    if !bound(&cluster, &rt).await {
        remove(&cluster, &rt);
        return;
    }
    match create_network(&cluster, &rt) {
        Ok(network) => {
            let _ = rt.network.set(Arc::new(network));
            rt.lock().start_time = Some(status::now());
            rt.publish(&cluster);
            let mut workers = tokio::task::JoinSet::new();
            for idx in 0..containers.len() {
                workers.spawn(container::run(cluster.clone(), rt.clone(), idx));
            }
            while workers.join_next().await.is_some() {}
            // All containers are finished for good (Succeeded/Failed): the pod keeps its
            // object until it is deleted, but no longer its room on the node.
            if !rt.cancel.is_cancelled() {
                schedule::release(&cluster, &rt);
            }
            rt.cancel.cancelled().await;
        }
        Err(err) => {
            warn!(pod = %rt.key.name, "could not create the pod network: {err:#}");
            let message = format!("failed to create pod sandbox: {err:#}");
            for c in &mut rt.lock().containers {
                c.set_waiting("CreateContainerError", Some(message.clone()));
            }
            rt.publish(&cluster);
            rt.cancel.cancelled().await;
        }
    }
    remove(&cluster, &rt);
}

/// Waits until the scheduler binds the pod, showing why it cannot meanwhile; false if the pod
/// was deleted first.
async fn bound(cluster: &Cluster, rt: &PodRuntime) -> bool {
    loop {
        let woken = rt.wake.notified();
        if rt.lock().placement == Placement::Bound {
            return true;
        }
        rt.publish(cluster);
        tokio::select! {
            _ = woken => {}
            _ = rt.cancel.cancelled() => return false,
        }
    }
}

fn create_network(cluster: &Cluster, rt: &PodRuntime) -> anyhow::Result<PodNetwork> {
    if !cluster.isolate {
        return Ok(PodNetwork::host());
    }
    debug!(pod = %rt.key.name, "creating pod network namespace");
    PodNetwork::isolated(&rt.key.name)
}

/// Forgets a pod whose processes are all gone and removes its object.
fn remove(cluster: &Cluster, rt: &PodRuntime) {
    {
        let mut pods = cluster.pods.pods();
        if pods.get(&rt.key).is_some_and(|p| p.uid == rt.uid) {
            pods.remove(&rt.key);
        }
    }
    let is_same = cluster
        .store
        .get(&rt.key)
        .is_some_and(|p| p["metadata"]["uid"].as_str() == Some(rt.uid.as_str()));
    if is_same && !cluster.shutdown.is_cancelled() {
        cluster.store.remove(&rt.key);
        info!(pod = %rt.key.name, namespace = %rt.key.ns, "pod deleted");
    }
    schedule::release(cluster, rt);
}
