//! The scheduler of the one node: a pod is bound when its requests fit what the node has left
//! (allocatable minus the requests of the pods bound to it and not finished), as the
//! `NodeResourcesFit` filter decides. A pod that does not fit waits, `PodScheduled=False`
//! with the scheduler's message, and is bound (oldest first) once others leave room.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::PodRuntime;
use crate::admission::quantity::Quantity;
use crate::cluster::Cluster;
use crate::config::NodeResources;

/// The extended resource the node's GPUs are.
pub(crate) const GPU: &str = "nvidia.com/gpu";

/// Where a pod is in scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// Waiting for room on the node.
    Waiting,
    /// Bound to the node: its requests count until it finishes or goes.
    Bound,
    /// Finished, or gone: its requests no longer count.
    Released,
    /// The node can never take it (its node selector does not match).
    Never,
}

/// What a pod asks the scheduler for: cpu in thousandths, memory in bytes, others in units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requests(BTreeMap<String, i128>);

impl Requests {
    fn of(c: &Container) -> Requests {
        let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let mut out = BTreeMap::new();
        for (name, q) in list.into_iter().flatten() {
            let Ok(q) = Quantity::parse(&q.0) else {
                continue;
            };
            let amount = if name == "cpu" { q.millis() } else { q.value() };
            out.insert(name.clone(), amount);
        }
        Requests(out)
    }

    /// `computePodResourceRequest`: the sum over containers, at least each init container.
    pub fn of_pod(pod: &Pod) -> Requests {
        let Some(spec) = pod.spec.as_ref() else {
            return Requests::default();
        };
        let mut sum = Requests::default();
        for c in &spec.containers {
            sum.add(&Requests::of(c));
        }
        for c in spec.init_containers.iter().flatten() {
            for (name, amount) in Requests::of(c).0 {
                let entry = sum.0.entry(name).or_default();
                *entry = (*entry).max(amount);
            }
        }
        sum
    }

    fn add(&mut self, other: &Requests) {
        for (name, amount) in &other.0 {
            *self.0.entry(name.clone()).or_default() += amount;
        }
    }
}

fn allocatable(node: &NodeResources, name: &str) -> Option<i128> {
    match name {
        "cpu" => Some(node.cpu_millis.into()),
        "memory" => Some(node.memory_bytes.into()),
        // Ephemeral storage is whatever the state directory's disk has; never the limit here.
        "ephemeral-storage" => None,
        GPU => Some(node.gpus.into()),
        _ => Some(0),
    }
}

/// Why `want` does not fit beside `used`, as the scheduler words it; `None` if it fits.
fn misfit(node: &NodeResources, used: &Requests, want: &Requests) -> Option<String> {
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    for (name, &amount) in &want.0 {
        let Some(total) = allocatable(node, name) else {
            continue;
        };
        let taken = used.0.get(name).copied().unwrap_or(0);
        if amount > 0 && amount > total - taken {
            reasons.push(format!("1 Insufficient {name}"));
            unresolvable |= amount > total;
        }
    }
    if reasons.is_empty() {
        return None;
    }
    reasons.sort();
    // With every pod at the same priority there is nothing to preempt; a pod larger than the
    // whole node is not helped by preemption at all.
    let preemption = if unresolvable {
        "Preemption is not helpful for scheduling"
    } else {
        "No preemption victims found for incoming pod"
    };
    Some(format!(
        "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 {preemption}.",
        reasons.join(", ")
    ))
}

/// One scheduling pass: binds every waiting pod that fits, oldest first, and tells the others
/// why not. Run when a pod arrives and whenever one leaves room.
pub(super) fn schedule(cluster: &Cluster) {
    let _turn = cluster.pods.scheduling();
    let mut pods = cluster.pods.all();
    pods.sort_by_key(|p| p.seq);
    let mut used = Requests::default();
    for p in &pods {
        if p.lock().placement == Placement::Bound {
            used.add(&p.requests);
        }
    }
    for p in &pods {
        let changed = {
            let mut state = p.lock();
            if state.placement != Placement::Waiting {
                continue;
            }
            match misfit(&cluster.node, &used, &p.requests) {
                None => {
                    state.placement = Placement::Bound;
                    state.unschedulable = None;
                    used.add(&p.requests);
                    true
                }
                Some(message) => {
                    let changed = state.unschedulable.as_deref() != Some(message.as_str());
                    state.unschedulable = Some(message);
                    changed
                }
            }
        };
        if changed {
            p.wake.notify_one();
        }
    }
}

/// The pod's requests stop counting (it finished, or is gone); waiting pods get their turn.
pub(super) fn release(cluster: &Cluster, rt: &PodRuntime) {
    {
        let mut state = rt.lock();
        if matches!(state.placement, Placement::Waiting | Placement::Bound) {
            state.placement = Placement::Released;
        }
    }
    schedule(cluster);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(list: &[(&str, i128)]) -> Requests {
        Requests(list.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn the_scheduler_explains_what_does_not_fit() {
        let node = NodeResources {
            gpus: 1,
            ..NodeResources::default()
        };
        let gpu = requests(&[(GPU, 1), ("cpu", 500)]);
        assert_eq!(misfit(&node, &Requests::default(), &gpu), None);
        assert_eq!(
            misfit(&node, &gpu, &gpu).as_deref(),
            Some(
                "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes \
                 are available: 1 No preemption victims found for incoming pod."
            )
        );
        let huge = requests(&[("cpu", 64_000), ("memory", 1 << 40), (GPU, 2)]);
        assert_eq!(
            misfit(&node, &Requests::default(), &huge).as_deref(),
            Some(
                "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 \
                 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: 1 Preemption \
                 is not helpful for scheduling."
            )
        );
    }
}
