//! Which pod and which container, and whether the pod is ready: kubectl's choices, as pure
//! functions over a `Pod` (or the pods a selector matched).

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::container::containers;
use super::error::{object_ref, quote_input, DiscoverError};
use super::preset::Preset;

/// The annotation kubectl reads to pick a pod's container when `-c` is not given.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Waiting reasons after which a container will not start without someone fixing something.
const FATAL_WAITING_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "StartError",
];

/// Progress lines stay on one terminal line or two; the scheduler's messages can run much longer.
const MAX_WHY_LEN: usize = 300;

/// The container to forward to and read logs from: `-c NAME` if given (it must exist), else
/// kubectl's default-container annotation, else for jupyter/redis the container that looks like
/// that server, else the first.
pub fn pick_container<'a>(
    pod: &'a Pod,
    requested: Option<&str>,
    preset: Preset,
) -> Result<&'a Container, DiscoverError> {
    let all = containers(pod);
    let Some(first) = all.first() else {
        return Err(DiscoverError::NoContainers {
            pod: object_ref(&pod.metadata),
        });
    };
    let named = |name: &str| all.iter().find(|c| c.name == name);
    if let Some(name) = requested {
        return named(name).ok_or_else(|| DiscoverError::NoSuchContainer {
            pod: object_ref(&pod.metadata),
            name: quote_input(name),
            containers: all.iter().map(|c| c.name.clone()).collect(),
        });
    }
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(|name| named(name));
    if let Some(c) = annotated {
        return Ok(c);
    }
    Ok(all
        .iter()
        .find(|c| super::preset::serves_preset(c, preset))
        .unwrap_or(first))
}

/// The pod to forward to among those a selector matched: pods being deleted are skipped; Ready
/// beats Running beats Unknown beats Pending beats finished; then the newest. kubectl's
/// ActivePods ordering would take the oldest at the end; the newest is what a rollout just made.
pub fn choose_pod(pods: &[Pod]) -> Option<&Pod> {
    fn rank(pod: &Pod) -> (bool, u8, Option<&Time>) {
        let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => 3,
            Some("Unknown") => 2,
            Some("Pending") => 1,
            _ => 0,
        };
        let created = pod.metadata.creation_timestamp.as_ref();
        (pod_ready(pod), phase, created)
    }
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        // On a full tie the first name in order wins, so the choice does not flap between calls.
        .max_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| name(b).cmp(&name(a))))
}

/// Where a pod stands, for the readiness wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Running and Ready: port-forwards will reach it.
    Ready,
    /// Not yet; `why` is a short reason for a progress line (`ContainerCreating`).
    Starting {
        /// A short human reason.
        why: String,
    },
    /// It will not become Ready without someone fixing something.
    Failed {
        /// Kubernetes' reason (`CrashLoopBackOff`, `Evicted`, `Error`).
        reason: String,
        /// Kubernetes' message, when there is one.
        message: Option<String>,
    },
    /// It ran to completion and serves nothing.
    Succeeded,
}

/// Where `pod` stands; `container` narrows the container checks to the one being forwarded to.
pub fn pod_state(pod: &Pod, container: Option<&str>) -> PodState {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() {
        return starting("terminating".into());
    }
    match phase {
        "Succeeded" => return PodState::Succeeded,
        "Failed" => return failed_pod(pod, container),
        _ => {}
    }
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let main = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let chosen: Vec<&ContainerStatus> = main
        .iter()
        .filter(|cs| container.is_none_or(|c| cs.name == c))
        .collect();
    if let Some(failed) = init.iter().find_map(|cs| fatal_waiting(cs, "Init:")) {
        return failed;
    }
    if let Some(failed) = chosen.iter().find_map(|cs| fatal_waiting(cs, "")) {
        return failed;
    }
    if phase == "Running" {
        let chosen_ready =
            container.is_some() && !chosen.is_empty() && chosen.iter().all(|cs| cs.ready);
        if pod_ready(pod) || chosen_ready {
            return PodState::Ready;
        }
        let exited = chosen.iter().find_map(|cs| {
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            Some(format!(
                "Running, container `{}` exited ({}), restarting",
                cs.name,
                exit_text(t)
            ))
        });
        return starting(exited.unwrap_or_else(|| "Running, waiting for readiness".into()));
    }
    if let Some(cond) = condition(pod, "PodScheduled").filter(|c| c.status == "False") {
        let reason = cond.reason.as_deref().unwrap_or("not scheduled");
        return starting(match &cond.message {
            Some(message) => format!("{phase}: {reason}: {message}"),
            None => format!("{phase}: {reason}"),
        });
    }
    let done = init.iter().filter(|cs| terminated_ok(cs)).count();
    if done < init.len() {
        return starting(format!("Init:{done}/{}", init.len()));
    }
    let waiting = chosen
        .iter()
        .find_map(|cs| cs.state.as_ref()?.waiting.as_ref()?.reason.clone());
    starting(waiting.unwrap_or_else(|| phase.to_string()))
}

fn starting(why: String) -> PodState {
    let one_line = why.split_whitespace().collect::<Vec<_>>().join(" ");
    let why = match one_line.char_indices().nth(MAX_WHY_LEN) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    };
    PodState::Starting { why }
}

/// `phase: Failed`: the pod's own reason (`Evicted`), else the container's exit.
fn failed_pod(pod: &Pod, container: Option<&str>) -> PodState {
    let status = pod.status.as_ref();
    if let Some(reason) = status.and_then(|s| s.reason.clone()) {
        let message = status.and_then(|s| s.message.clone());
        return PodState::Failed { reason, message };
    }
    let main = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let exited = main
        .iter()
        .filter(|cs| container.is_none_or(|c| cs.name == c))
        .find_map(|cs| Some((cs, cs.state.as_ref()?.terminated.as_ref()?)))
        .filter(|(_, t)| t.exit_code != 0);
    match exited {
        Some((cs, t)) => PodState::Failed {
            reason: t.reason.clone().unwrap_or_else(|| "Error".into()),
            message: Some(match &t.message {
                Some(m) => format!(
                    "container `{}` exited with code {}: {m}",
                    cs.name, t.exit_code
                ),
                None => format!("container `{}` exited with code {}", cs.name, t.exit_code),
            }),
        },
        None => PodState::Failed {
            reason: "Failed".into(),
            message: status.and_then(|s| s.message.clone()),
        },
    }
}

/// A container waiting for a reason that needs a fix; the message gets the last exit, if any.
fn fatal_waiting(cs: &ContainerStatus, prefix: &str) -> Option<PodState> {
    let waiting = cs.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    if !FATAL_WAITING_REASONS.contains(&reason) {
        return None;
    }
    let last_exit = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| format!("last exit: {}", exit_text(t)));
    let parts: Vec<String> = waiting
        .message
        .clone()
        .into_iter()
        .chain(last_exit)
        .collect();
    Some(PodState::Failed {
        reason: format!("{prefix}{reason}"),
        message: (!parts.is_empty())
            .then(|| format!("container `{}`: {}", cs.name, parts.join("; "))),
    })
}

/// `Error, exit code 1`.
fn exit_text(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> String {
    let reason = t.reason.as_deref().unwrap_or("exited");
    format!("{reason}, exit code {}", t.exit_code)
}

fn terminated_ok(cs: &ContainerStatus) -> bool {
    cs.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .is_some_and(|t| t.exit_code == 0)
}

fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

fn pod_ready(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running && condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::discover::fixtures::pod;
    use serde_json::{json, Value};

    fn two_containers(annotations: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "nb", "namespace": "demo", "annotations": annotations},
            "spec": {"containers": [
                {"name": "proxy", "image": "nginx", "ports": [{"containerPort": 80, "name": "web"}]},
                {"name": "notebook", "image": "quay.io/jupyter/base-notebook",
                 "ports": [{"containerPort": 8888, "name": "notebook"}]},
                {"name": "cache", "image": "redis:7", "args": ["redis-server", "--port", "6380"]}
            ]}
        }))
    }

    #[test]
    fn requested_container_must_exist() {
        let p = two_containers(json!({}));
        let c = pick_container(&p, Some("proxy"), Preset::Jupyter).expect("proxy");
        assert_eq!(c.name, "proxy");
        let err = pick_container(&p, Some("nope"), Preset::Generic).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "pod `demo/nb` has no container named `nope`"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("containers: proxy, notebook, cache; pass one with `-c`")
        );
    }

    #[test]
    fn annotation_beats_preset_and_first() {
        let p = two_containers(json!({"kubectl.kubernetes.io/default-container": "cache"}));
        let c = pick_container(&p, None, Preset::Jupyter).expect("annotated");
        assert_eq!(c.name, "cache");
        // An annotation naming no container is ignored, as kubectl does.
        let p = two_containers(json!({"kubectl.kubernetes.io/default-container": "gone"}));
        let c = pick_container(&p, None, Preset::Generic).expect("first");
        assert_eq!(c.name, "proxy");
    }

    #[test]
    fn preset_picks_the_matching_container() {
        let p = two_containers(json!({}));
        assert_eq!(
            pick_container(&p, None, Preset::Jupyter).expect("j").name,
            "notebook"
        );
        assert_eq!(
            pick_container(&p, None, Preset::Redis).expect("r").name,
            "cache"
        );
        assert_eq!(
            pick_container(&p, None, Preset::Generic).expect("g").name,
            "proxy"
        );
    }

    #[test]
    fn pod_without_containers_is_an_error() {
        let p = pod(json!({"metadata": {"name": "x", "namespace": "demo"}}));
        let err = pick_container(&p, None, Preset::Generic).expect_err("empty");
        assert_eq!(err.to_string(), "pod `demo/x` has no containers");
    }

    fn candidate(name: &str, phase: &str, ready: bool, created: &str, deleting: bool) -> Pod {
        let mut meta = json!({"name": name, "namespace": "demo", "creationTimestamp": created});
        if deleting {
            meta["deletionTimestamp"] = json!("2024-01-01T13:00:00Z");
        }
        pod(json!({
            "metadata": meta,
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}
        }))
    }

    fn chosen(pods: &[Pod]) -> Option<String> {
        choose_pod(pods).and_then(|p| p.metadata.name.clone())
    }

    #[test]
    fn choose_pod_prefers_ready_then_running_then_newest() {
        let old_ready = candidate("old-ready", "Running", true, "2024-01-01T10:00:00Z", false);
        let new_ready = candidate("new-ready", "Running", true, "2024-01-01T11:00:00Z", false);
        let newest_running = candidate("running", "Running", false, "2024-01-01T12:00:00Z", false);
        let newest_pending = candidate("pending", "Pending", false, "2024-01-01T12:30:00Z", false);
        let deleting = candidate("deleting", "Running", true, "2024-01-01T12:45:00Z", true);
        let failed = candidate("failed", "Failed", false, "2024-01-01T12:50:00Z", false);

        let all = [
            old_ready.clone(),
            newest_pending.clone(),
            deleting.clone(),
            new_ready,
            newest_running.clone(),
            failed.clone(),
        ];
        assert_eq!(chosen(&all).as_deref(), Some("new-ready"));
        let no_ready = [newest_pending.clone(), newest_running, failed.clone()];
        assert_eq!(chosen(&no_ready).as_deref(), Some("running"));
        assert_eq!(
            chosen(&[failed.clone(), newest_pending]).as_deref(),
            Some("pending")
        );
        assert_eq!(chosen(&[failed]).as_deref(), Some("failed"));
        assert_eq!(chosen(&[deleting]), None);
        assert_eq!(chosen(&[]), None);
    }

    #[test]
    fn choose_pod_breaks_full_ties_by_name() {
        let b = candidate("b", "Running", true, "2024-01-01T10:00:00Z", false);
        let a = candidate("a", "Running", true, "2024-01-01T10:00:00Z", false);
        assert_eq!(chosen(&[b.clone(), a.clone()]).as_deref(), Some("a"));
        assert_eq!(chosen(&[a, b]).as_deref(), Some("a"));
    }

    fn with_status(status: Value) -> Pod {
        pod(json!({
            "metadata": {"name": "nb", "namespace": "demo"},
            "spec": {"containers": [{"name": "notebook"}, {"name": "sidecar"}]},
            "status": status
        }))
    }

    fn waiting(name: &str, reason: &str, message: Option<&str>) -> Value {
        json!({"name": name, "image": "", "imageID": "", "ready": false, "restartCount": 3,
               "state": {"waiting": {"reason": reason, "message": message}},
               "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
    }

    fn state(status: Value, container: Option<&str>) -> PodState {
        pod_state(&with_status(status), container)
    }

    fn why(s: &str) -> PodState {
        PodState::Starting { why: s.into() }
    }

    #[test]
    fn ready_needs_running_and_the_ready_condition() {
        let ready =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(state(ready, None), PodState::Ready);
        let unready = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            {"name": "notebook", "image": "", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}},
            {"name": "sidecar", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"running": {}}}
        ]});
        assert_eq!(
            state(unready.clone(), None),
            why("Running, waiting for readiness")
        );
        assert_eq!(state(unready.clone(), Some("notebook")), PodState::Ready);
        assert_eq!(
            state(unready, Some("sidecar")),
            why("Running, waiting for readiness")
        );
    }

    #[test]
    fn every_fatal_waiting_reason_fails() {
        for reason in FATAL_WAITING_REASONS {
            let status = json!({"phase": "Pending",
                "containerStatuses": [waiting("notebook", reason, Some("it broke"))]});
            assert_eq!(
                state(status, None),
                PodState::Failed {
                    reason: reason.to_string(),
                    message: Some(
                        "container `notebook`: it broke; last exit: Error, exit code 1".into()
                    ),
                },
                "{reason}"
            );
        }
    }

    #[test]
    fn crash_loop_in_another_container_is_ignored_when_one_is_chosen() {
        let status = json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [waiting("sidecar", "CrashLoopBackOff", None)]});
        assert!(matches!(
            state(status.clone(), None),
            PodState::Failed { .. }
        ));
        assert_eq!(
            state(status, Some("notebook")),
            why("Running, waiting for readiness")
        );
    }

    #[test]
    fn init_container_failures_are_prefixed() {
        let status = json!({"phase": "Pending",
            "initContainerStatuses": [waiting("setup", "ImagePullBackOff", Some("Back-off pulling image \"x\""))]});
        let PodState::Failed { reason, message } = state(status, None) else {
            panic!("not failed");
        };
        assert_eq!(reason, "Init:ImagePullBackOff");
        assert!(message.expect("message").contains("Back-off pulling image"));
    }

    #[test]
    fn failed_phase_quotes_pod_reason_or_container_exit() {
        let evicted = json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."});
        assert_eq!(
            state(evicted, None),
            PodState::Failed {
                reason: "Evicted".into(),
                message: Some("The node was low on resource: memory.".into())
            }
        );
        let exited = json!({"phase": "Failed", "containerStatuses": [
            {"name": "notebook", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]});
        assert_eq!(
            state(exited, None),
            PodState::Failed {
                reason: "Error".into(),
                message: Some("container `notebook` exited with code 1".into())
            }
        );
    }

    #[test]
    fn succeeded_and_terminating() {
        assert_eq!(
            state(json!({"phase": "Succeeded"}), None),
            PodState::Succeeded
        );
        let mut p = with_status(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}));
        p.metadata.deletion_timestamp = p.metadata.creation_timestamp.clone().or(Some(Time(
            "2024-01-01T00:00:00Z".parse().expect("timestamp"),
        )));
        assert_eq!(pod_state(&p, None), why("terminating"));
    }

    #[test]
    fn starting_reasons_are_short_and_human() {
        let unschedulable = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu.\npreemption: not helpful."}]});
        assert_eq!(
            state(unschedulable, None),
            why("Pending: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu. preemption: not helpful.")
        );
        let creating = json!({"phase": "Pending", "containerStatuses": [
            {"name": "notebook", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        assert_eq!(state(creating, None), why("ContainerCreating"));
        let init = json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "a", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0}}},
            {"name": "b", "image": "", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"running": {}}}]});
        assert_eq!(state(init, None), why("Init:1/2"));
        assert_eq!(state(json!({}), None), why("Pending"));
        let restarting = json!({"phase": "Running", "containerStatuses": [
            {"name": "notebook", "image": "", "imageID": "", "ready": false, "restartCount": 1,
             "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
        assert_eq!(
            state(restarting, Some("notebook")),
            why("Running, container `notebook` exited (OOMKilled, exit code 137), restarting")
        );
        let long = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "x".repeat(1000)}]});
        let PodState::Starting { why } = state(long, None) else {
            panic!("not starting");
        };
        assert_eq!(why.chars().count(), MAX_WHY_LEN + 1);
    }
}
