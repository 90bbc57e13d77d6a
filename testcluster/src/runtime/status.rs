//! Pod status as the kubelet reports it: phase, conditions and container statuses, computed
//! from what the runtime knows about each container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Now, truncated to seconds as the API server stores times.
pub(crate) fn now() -> Time {
    let t = Timestamp::now();
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// What the runtime knows about one container.
pub(crate) struct ContainerInfo {
    pub status: ContainerStatus,
    /// Set once the container will never run again (terminated under its restart policy).
    pub finished: bool,
    /// Whether a process of this container has ever started.
    pub ever_started: bool,
}

impl ContainerInfo {
    pub fn new(name: &str, image: &str) -> ContainerInfo {
        ContainerInfo {
            status: ContainerStatus {
                name: name.to_string(),
                image: image.to_string(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                started: Some(false),
                state: Some(waiting("ContainerCreating", None)),
                ..ContainerStatus::default()
            },
            finished: false,
            ever_started: false,
        }
    }

    pub fn set_running(&mut self, container_id: String) {
        self.status.container_id = Some(container_id);
        self.status.state = Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(now()),
            }),
            ..ContainerState::default()
        });
        self.status.started = Some(true);
        self.ever_started = true;
    }

    pub fn set_terminated(&mut self, exit_code: i32, reason: &str, message: Option<String>) {
        let started_at = self
            .status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone());
        self.status.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: self.status.container_id.clone(),
                exit_code,
                finished_at: Some(now()),
                message,
                reason: Some(reason.to_string()),
                started_at,
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        self.status.ready = false;
        self.status.started = Some(false);
    }

    pub fn set_waiting(&mut self, reason: &str, message: Option<String>) {
        if let Some(state) = self.status.state.take() {
            if state.terminated.is_some() {
                self.status.last_state = Some(state);
            }
        }
        self.status.state = Some(waiting(reason, message));
        self.status.ready = false;
        self.status.started = Some(false);
    }

    fn exit_code(&self) -> Option<i32> {
        self.status
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..ContainerState::default()
    }
}

/// Pod-level facts beside the containers.
pub(crate) struct PodFacts<'a> {
    pub unschedulable: Option<&'a str>,
    pub start_time: Option<Time>,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    /// Set by the API server on create; the kubelet keeps it.
    pub qos_class: &'a str,
}

/// Condition transition times, kept so that they only move when a condition flips.
#[derive(Default)]
pub(crate) struct Transitions(BTreeMap<&'static str, (String, Time)>);

impl Transitions {
    fn condition(
        &mut self,
        type_: &'static str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> PodCondition {
        let status = if status { "True" } else { "False" }.to_string();
        let entry = self
            .0
            .entry(type_)
            .or_insert_with(|| (status.clone(), now()));
        if entry.0 != status {
            *entry = (status.clone(), now());
        }
        PodCondition {
            type_: type_.to_string(),
            status,
            last_transition_time: Some(entry.1.clone()),
            reason: reason.map(str::to_string),
            message,
            ..PodCondition::default()
        }
    }
}

/// The pod status for these containers and facts.
pub(crate) fn pod_status(
    facts: &PodFacts,
    containers: &[ContainerInfo],
    transitions: &mut Transitions,
) -> PodStatus {
    if let Some(message) = facts.unschedulable {
        return PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some(facts.qos_class.into()),
            conditions: Some(vec![transitions.condition(
                "PodScheduled",
                false,
                Some("Unschedulable"),
                Some(message.to_string()),
            )]),
            ..PodStatus::default()
        };
    }
    let all_finished = !containers.is_empty() && containers.iter().all(|c| c.finished);
    let phase = if all_finished {
        if containers.iter().all(|c| c.exit_code() == Some(0)) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if !containers.is_empty() && containers.iter().all(|c| c.ever_started) {
        "Running"
    } else {
        "Pending"
    };
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.status.ready)
        .map(|c| c.status.name.as_str())
        .collect();
    let all_ready = unready.is_empty();
    let (reason, message) = if all_finished {
        (Some("PodCompleted"), None)
    } else if all_ready {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let conditions = vec![
        transitions.condition(
            "PodReadyToStartContainers",
            facts.start_time.is_some(),
            None,
            None,
        ),
        transitions.condition("Initialized", true, None, None),
        transitions.condition("Ready", all_ready, reason, message.clone()),
        transitions.condition("ContainersReady", all_ready, reason, message),
        transitions.condition("PodScheduled", true, None, None),
    ];
    let ip = |ip: &str| (!ip.is_empty()).then(|| ip.to_string());
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(containers.iter().map(|c| c.status.clone()).collect()),
        host_ip: ip(facts.host_ip),
        host_ips: ip(facts.host_ip).map(|ip| vec![HostIP { ip }]),
        pod_ip: ip(facts.pod_ip),
        pod_ips: ip(facts.pod_ip).map(|ip| vec![PodIP { ip }]),
        qos_class: Some(facts.qos_class.into()),
        start_time: facts.start_time.clone(),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PodFacts<'static> {
        PodFacts {
            unschedulable: None,
            start_time: Some(now()),
            pod_ip: "10.244.0.5",
            host_ip: "127.0.0.1",
            qos_class: "BestEffort",
        }
    }

    #[test]
    fn phases_follow_the_containers() {
        let mut t = Transitions::default();
        let mut c = ContainerInfo::new("web", "nginx");
        let status = pod_status(&facts(), std::slice::from_ref(&c), &mut t);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        c.set_running("containerd://1".into());
        c.status.ready = true;
        let status = pod_status(&facts(), std::slice::from_ref(&c), &mut t);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
        c.set_terminated(1, "Error", None);
        c.finished = true;
        let status = pod_status(&facts(), std::slice::from_ref(&c), &mut t);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn unschedulable_pods_are_pending() {
        let mut f = facts();
        f.unschedulable = Some("0/1 nodes are available");
        let status = pod_status(&f, &[], &mut Transitions::default());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let cond = &status.conditions.unwrap_or_default()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_deref()),
            ("False", Some("Unschedulable"))
        );
    }
}
