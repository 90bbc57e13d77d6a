//! Creating pods over the API: what the API server refuses (400, 422 with its causes), what it
//! fills in, and how the scheduler places pods by their requests.

mod common;

use serde_json::{json, Value};

use common::phase;
use k8s_openapi::api::core::v1::Pod;

const PODS: &str = "/api/v1/namespaces/demo/pods";

fn pod(name: &str, resources: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"],
                            "resources": resources}],
        },
    })
}

#[tokio::test]
async fn invalid_pods_are_refused_with_the_api_servers_status() {
    let env = common::start().await;
    let (code, status) = env
        .send(
            "POST",
            PODS,
            &pod("gpu", json!({"requests": {"nvidia.com/gpu": 1}})),
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        status,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Pod \"gpu\" is invalid: spec.containers[0].resources.limits: Required \
                        value: Limit must be set for non overcommitable resources",
            "reason": "Invalid",
            "details": {"name": "gpu", "kind": "Pod", "causes": [{
                "reason": "FieldValueRequired",
                "message": "Required value: Limit must be set for non overcommitable resources",
                "field": "spec.containers[0].resources.limits",
            }]},
            "code": 422,
        })
    );

    let mut nameless = pod("x", json!({}));
    nameless["spec"]["containers"][0] = json!({"name": "Main", "ports": [{"containerPort": 0}]});
    let (code, status) = env.send("POST", PODS, &nameless).await;
    assert_eq!(code, 422);
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .map(|c| c["field"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].name",
            "spec.containers[0].image",
            "spec.containers[0].ports[0].containerPort"
        ]
    );
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Pod \"x\" is invalid: [spec.containers[0].name: ")),
        "{status}"
    );

    let (code, status) = env
        .send(
            "POST",
            PODS,
            &pod("q", json!({"limits": {"memory": "1 Gi"}})),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    assert!(
        status["message"].as_str().is_some_and(|m| m.starts_with(
            "Pod in version \"v1\" cannot be handled as a Pod: quantities must match"
        )),
        "{status}"
    );

    let mut elsewhere = pod("e", json!({}));
    elsewhere["metadata"]["namespace"] = json!("other");
    let (code, status) = env.send("POST", PODS, &elsewhere).await;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    assert!(env.cluster.pods("demo").is_empty(), "nothing was stored");

    let err = env
        .cluster
        .apply_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage, namespace: demo}\nspec:\n  \
             containers: [{name: main, command: [sleep, '1']}]\n",
        )
        .expect_err("apply refuses it too");
    assert!(
        format!("{err:#}")
            .contains("Pod \"noimage\" is invalid: spec.containers[0].image: Required value"),
        "{err:#}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn the_api_server_fills_in_requests_quantities_and_qos() {
    let env = common::start().await;
    let resources = json!({"limits": {"cpu": 0.5, "memory": "1024Mi"}});
    let (code, created) = env.send("POST", PODS, &pod("g", resources)).await;
    assert_eq!(code, 201, "{created}");
    let c = &created["spec"]["containers"][0];
    assert_eq!(
        c["resources"],
        json!({"limits": {"cpu": "500m", "memory": "1Gi"},
               "requests": {"cpu": "500m", "memory": "1Gi"}})
    );
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(created["status"]["qosClass"], "Guaranteed");
    env.cluster
        .wait_ready("demo", "g", common::DEADLINE)
        .await
        .expect("ready");
    let running = env.cluster.pod("demo", "g").expect("pod");
    assert_eq!(
        running.status.and_then(|s| s.qos_class).as_deref(),
        Some("Guaranteed"),
        "the kubelet keeps the class"
    );

    let mut generated = pod("", json!({"requests": {"cpu": "100m"}}));
    generated["metadata"] = json!({"generateName": "job-"});
    let (code, created) = env.send("POST", PODS, &generated).await;
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    assert_eq!(created["status"]["qosClass"], "Burstable");
    env.shutdown().await;
}

fn scheduled(p: &Pod) -> Option<(String, Option<String>, Option<String>)> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn gpu_pod(name: &str, gpus: u32, script: &str) -> Value {
    let mut p = pod(name, json!({"limits": {"nvidia.com/gpu": gpus}}));
    p["spec"]["containers"][0]["command"] = json!(["sh", "-c", script]);
    p
}

#[tokio::test]
async fn pods_wait_for_gpus_and_get_them_when_others_leave() {
    let env = common::start_with(|c| c.node.gpus = 1).await;
    let (code, _) = env
        .send("POST", PODS, &gpu_pod("first", 1, "sleep 600"))
        .await;
    assert_eq!(code, 201);
    env.cluster
        .wait_ready("demo", "first", common::DEADLINE)
        .await
        .expect("first");

    env.send("POST", PODS, &gpu_pod("second", 1, "sleep 600"))
        .await;
    let waiting = env
        .wait_pod("demo", "second", |p| {
            scheduled(p).filter(|s| s.0 == "False")
        })
        .await;
    assert_eq!(
        waiting,
        (
            "False".into(),
            Some("Unschedulable".into()),
            Some(
                "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes \
                 are available: 1 No preemption victims found for incoming pod."
                    .into()
            )
        )
    );
    let second = env.cluster.pod("demo", "second").expect("second");
    assert_eq!(phase(&second), Some("Pending"));
    assert!(second.spec.and_then(|s| s.node_name).is_none());

    // More than the node has: preemption cannot help.
    env.send("POST", PODS, &gpu_pod("greedy", 2, "sleep 600"))
        .await;
    let greedy = env
        .wait_pod("demo", "greedy", |p| scheduled(p).and_then(|s| s.2))
        .await;
    assert!(
        greedy.ends_with("1 Preemption is not helpful for scheduling."),
        "{greedy}"
    );

    env.cluster
        .delete_pod("demo", "first")
        .await
        .expect("delete");
    env.cluster
        .wait_ready("demo", "second", common::DEADLINE)
        .await
        .expect("second gets the GPU");
    let second = env.cluster.pod("demo", "second").expect("second");
    assert_eq!(scheduled(&second).map(|s| s.0).as_deref(), Some("True"));
    assert_eq!(
        second.spec.and_then(|s| s.node_name).as_deref(),
        Some("testcluster")
    );

    // A pod that has finished no longer holds its GPU.
    env.cluster
        .delete_pod("demo", "second")
        .await
        .expect("delete");
    env.send("POST", PODS, &gpu_pod("done", 1, "exit 0")).await;
    env.wait_pod("demo", "done", |p| {
        (phase(p) == Some("Succeeded")).then_some(())
    })
    .await;
    env.send("POST", PODS, &gpu_pod("next", 1, "sleep 600"))
        .await;
    env.cluster
        .wait_ready("demo", "next", common::DEADLINE)
        .await
        .expect("next");
    assert!(
        scheduled(&env.cluster.pod("demo", "greedy").expect("greedy"))
            .is_some_and(|s| s.0 == "False")
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_node_without_gpus_never_schedules_a_gpu_pod() {
    let env = common::start().await;
    env.send("POST", PODS, &gpu_pod("gpu", 1, "sleep 600"))
        .await;
    let message = env
        .wait_pod("demo", "gpu", |p| scheduled(p).and_then(|s| s.2))
        .await;
    assert_eq!(
        message,
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are \
         available: 1 Preemption is not helpful for scheduling."
    );
    let (code, _) = env
        .send(
            "POST",
            PODS,
            &pod("cpu", json!({"requests": {"cpu": "32"}})),
        )
        .await;
    assert_eq!(code, 201);
    let message = env
        .wait_pod("demo", "cpu", |p| scheduled(p).and_then(|s| s.2))
        .await;
    assert!(
        message.starts_with("0/1 nodes are available: 1 Insufficient cpu."),
        "{message}"
    );
    env.shutdown().await;
}
