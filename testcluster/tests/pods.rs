//! Pod lifecycle as a kubelet reports it: restarts, deletion, controllers, CrashLoopBackOff,
//! failures, scheduling and readiness probes.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams};

use common::{container_status, phase, sh_pod, waiting_reason};

#[tokio::test]
async fn restart_brings_a_new_process_and_delete_removes_the_pod() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod("demo", "r", "app: r", "echo pid $$; sleep 600", ""))
        .expect("apply");
    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");
    env.cluster
        .wait_ready("demo", "r", common::DEADLINE)
        .await
        .expect("ready");
    let first = common::poll(
        || async {
            pods.logs("r", &LogParams::default())
                .await
                .ok()
                .filter(|l| !l.is_empty())
        },
        "first log",
    )
    .await;

    env.cluster.restart_pod("demo", "r").await.expect("restart");
    let pod = env
        .wait_pod("demo", "r", |p| {
            let c = container_status(p)?;
            (c.restart_count == 1 && c.ready).then(|| p.clone())
        })
        .await;
    let last = container_status(&pod)
        .and_then(|c| c.last_state.clone())
        .and_then(|s| s.terminated)
        .expect("lastState");
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("Error"))
    );
    let second = common::poll(
        || async {
            pods.logs("r", &LogParams::default())
                .await
                .ok()
                .filter(|l| !l.is_empty())
        },
        "second log",
    )
    .await;
    assert_ne!(first, second, "a new process has a new pid");
    let previous = pods
        .logs(
            "r",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("previous");
    assert_eq!(previous, first);

    // Deleting through the API marks the pod terminating, then it goes.
    let deleted = pods
        .delete("r", &DeleteParams::default())
        .await
        .expect("delete");
    let terminating = deleted.left().expect("the pod object");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    common::poll(
        || async { env.cluster.pod("demo", "r").is_none().then_some(()) },
        "pod gone",
    )
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn deployment_replaces_a_deleted_pod_and_statefulset_recreates_it() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: x, command: [sleep, "600"]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: demo}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: x, command: [sleep, "600"]}]
"#,
        )
        .expect("apply");
    let web = |env: &common::Env| {
        let mut names: Vec<String> = env
            .cluster
            .pods("demo")
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get("app").map(String::as_str) == Some("web"))
            })
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    };
    let before = common::poll(
        || async { Some(web(&env)).filter(|n| n.len() == 2) },
        "two web pods",
    )
    .await;
    assert!(
        before
            .iter()
            .all(|n| n.starts_with("web-") && n.len() == "web-".len() + 10 + 1 + 5),
        "{before:?}"
    );
    let pod = env.cluster.pod("demo", &before[0]).expect("pod");
    assert!(pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("pod-template-hash")));
    assert_eq!(
        pod.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("ReplicaSet")
    );

    env.cluster
        .delete_pod("demo", &before[0])
        .await
        .expect("delete");
    let after = common::poll(
        || async { Some(web(&env)).filter(|n| n.len() == 2 && !n.contains(&before[0])) },
        "replacement",
    )
    .await;
    assert!(after.contains(&before[1]));

    let deployments: Api<Deployment> = Api::namespaced(env.admin().await, "demo");
    common::poll(
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.status?.ready_replicas == Some(2)).then_some(())
        },
        "deployment status",
    )
    .await;

    // StatefulSet pods come up in order and a deleted one returns under its name.
    env.cluster
        .wait_ready("demo", "db-1", common::DEADLINE)
        .await
        .expect("db-1");
    let uid = env
        .cluster
        .pod("demo", "db-0")
        .and_then(|p| p.metadata.uid)
        .expect("uid");
    env.cluster
        .delete_pod("demo", "db-0")
        .await
        .expect("delete db-0");
    env.wait_pod("demo", "db-0", |p| {
        (p.metadata.uid.as_ref() != Some(&uid)).then_some(())
    })
    .await;
    env.cluster
        .wait_ready("demo", "db-0", common::DEADLINE)
        .await
        .expect("db-0 again");
    env.shutdown().await;
}

#[tokio::test]
async fn crash_loop_failure_and_start_errors_are_reported_like_the_kubelet() {
    let env = common::start().await;
    let mut yaml = sh_pod("demo", "crash", "app: c", "echo dying; exit 3", "");
    yaml += "---\n";
    yaml += &sh_pod("demo", "fail", "app: f", "exit 2", "restartPolicy: Never");
    yaml += "---\n";
    yaml += &sh_pod(
        "demo",
        "done",
        "app: d",
        "exit 0",
        "restartPolicy: OnFailure",
    );
    yaml += r#"---
apiVersion: v1
kind: Pod
metadata: {name: missing, namespace: demo}
spec:
  containers: [{name: main, image: x, command: [no-such-program-here]}]
"#;
    env.cluster.apply_yaml(&yaml).expect("apply");

    let crash = env
        .wait_pod("demo", "crash", |p| {
            (waiting_reason(p).as_deref() == Some("CrashLoopBackOff")).then(|| p.clone())
        })
        .await;
    let c = container_status(&crash).expect("status");
    let message = c
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.message.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("back-off ")
            && message.contains("restarting failed container=main pod=crash_demo("),
        "{message}"
    );
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState");
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(phase(&crash), Some("Running"));
    assert!(c.restart_count >= 1);

    let fail = env
        .wait_pod("demo", "fail", |p| {
            (phase(p) == Some("Failed")).then(|| p.clone())
        })
        .await;
    let t = container_status(&fail)
        .and_then(|c| c.state.clone())
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (2, Some("Error")));

    let done = env
        .wait_pod("demo", "done", |p| {
            (phase(p) == Some("Succeeded")).then(|| p.clone())
        })
        .await;
    let t = container_status(&done)
        .and_then(|c| c.state.clone())
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));

    let missing = env
        .wait_pod("demo", "missing", |p| {
            (waiting_reason(p).as_deref() == Some("RunContainerError")).then(|| p.clone())
        })
        .await;
    let message = container_status(&missing)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("executable file not found in $PATH"),
        "{message}"
    );
    assert_eq!(phase(&missing), Some("Pending"));
    env.shutdown().await;
}

#[tokio::test]
async fn unschedulable_pods_stay_pending() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod(
            "demo",
            "picky",
            "app: p",
            "sleep 600",
            "nodeSelector: {disktype: ssd}",
        ))
        .expect("apply");
    let pod = env
        .wait_pod("demo", "picky", |p| {
            let conds = p.status.as_ref()?.conditions.as_ref()?;
            conds.iter().find(|c| c.type_ == "PodScheduled").cloned()
        })
        .await;
    assert_eq!(
        (pod.status.as_str(), pod.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert_eq!(
        env.cluster.pod("demo", "picky").as_ref().and_then(phase),
        Some("Pending")
    );

    env.cluster
        .apply_yaml(&sh_pod(
            "demo",
            "fits",
            "app: p",
            "sleep 600",
            "nodeSelector: {kubernetes.io/os: linux}",
        ))
        .expect("apply");
    env.cluster
        .wait_ready("demo", "fits", common::DEADLINE)
        .await
        .expect("fits");
    env.shutdown().await;
}

#[tokio::test]
async fn readiness_probe_gates_ready() {
    let env = common::start().await;
    let marker = tempfile::tempdir().expect("tmp");
    let go = marker.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exec python3 -m http.server 8000 --bind 127.0.0.1",
        go.display()
    );
    let yaml = format!(
        "{}    readinessProbe: {{httpGet: {{path: /, port: web}}, periodSeconds: 1}}\n    ports: [{{name: web, containerPort: 8000}}]\n",
        sh_pod("demo", "probed", "app: p", &script, "")
    );
    env.cluster.apply_yaml(&yaml).expect("apply");
    let pod = env
        .wait_pod("demo", "probed", |p| {
            container_status(p)
                .is_some_and(|c| c.started == Some(true))
                .then(|| p.clone())
        })
        .await;
    assert_eq!(phase(&pod), Some("Running"));
    assert!(
        !common::is_ready(&pod),
        "not ready before the server listens"
    );
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready").cloned());
    assert_eq!(
        ready.and_then(|c| c.reason).as_deref(),
        Some("ContainersNotReady")
    );
    std::fs::write(&go, b"").expect("marker");
    env.cluster
        .wait_ready("demo", "probed", common::DEADLINE)
        .await
        .expect("ready once it listens");
    env.shutdown().await;
}
