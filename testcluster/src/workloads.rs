//! Controllers for Deployments (through ReplicaSets) and StatefulSets: create the pods their
//! templates describe, replace deleted ones, garbage-collect orphans and report status.
//!
//! One loop reconciles everything after every store change; the store is small, so a full
//! pass costs microseconds and there is no per-object queue to get wrong.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::names;
use crate::store::Key;

/// Grace period for pods a controller removes (scale-down, orphans).
const CONTROLLER_GRACE: i64 = 30;

/// Reconciles until the cluster shuts down.
pub(crate) async fn run(cluster: Arc<Cluster>) {
    loop {
        let changed = cluster.store.changed.notified();
        reconcile(&cluster);
        tokio::select! {
            _ = changed => {}
            _ = cluster.shutdown.cancelled() => return,
        }
        // Batch the burst of writes one change usually causes.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn reconcile(cluster: &Arc<Cluster>) {
    for key in cluster.store.keys(Kind::Deployment) {
        if let Some(d) = cluster.store.get(&key) {
            deployment(cluster, &key, &d);
        }
    }
    for key in cluster.store.keys(Kind::StatefulSet) {
        if let Some(s) = cluster.store.get(&key) {
            statefulset(cluster, &key, &s);
        }
    }
    collect_orphans(cluster);
}

fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or("")
}

fn owner_uid(o: &Value) -> Option<&str> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))?["uid"]
        .as_str()
}

fn owner_ref(kind: Kind, owner: &Value) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.info().kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn is_terminating(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn replicas(o: &Value) -> usize {
    o["spec"]["replicas"].as_u64().unwrap_or(1) as usize
}

/// Pods controlled by the object with `owner` uid, in its namespace.
fn owned_pods(cluster: &Cluster, ns: &str, owner: &str) -> Vec<Value> {
    cluster
        .store
        .list(Kind::Pod, Some(ns))
        .0
        .into_iter()
        .filter(|p| owner_uid(p) == Some(owner))
        .collect()
}

fn pod_from_template(template: &Value, name: Value, labels: Value, owner: Value) -> Value {
    let mut annotations = template["metadata"]["annotations"].clone();
    if annotations.is_null() {
        annotations = json!({});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name["name"],
            "generateName": name["generateName"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": template["spec"],
    })
}

fn create_pod(cluster: &Arc<Cluster>, ns: &str, pod: Value) {
    match cluster.create(Kind::Pod, ns, pod) {
        Ok(p) => {
            info!(%ns, pod = p["metadata"]["name"].as_str().unwrap_or(""), "controller created pod")
        }
        Err(err) => warn!(%ns, "controller could not create a pod: {err:?}"),
    }
}

fn set_status(cluster: &Cluster, key: &Key, status: Value) {
    cluster.store.update(key, |o| {
        let mut status = status;
        status["observedGeneration"] = o["metadata"]["generation"].clone();
        o["status"] = status;
    });
}

fn deployment(cluster: &Arc<Cluster>, key: &Key, d: &Value) {
    let template = &d["spec"]["template"];
    let hash = names::stable_suffix(&template.to_string(), 10);
    let rs_name = format!("{}-{hash}", key.name);
    let rs_key = Key::new(Kind::ReplicaSet, &key.ns, &rs_name);
    let want = replicas(d);
    let mut labels = template["metadata"]["labels"].clone();
    labels["pod-template-hash"] = json!(hash);
    let rs = match cluster.store.get(&rs_key) {
        Some(rs) => rs,
        None => {
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"] = labels.clone();
            let mut selector = d["spec"]["selector"].clone();
            selector["matchLabels"]["pod-template-hash"] = json!(hash);
            let rs = json!({
                "metadata": {"name": rs_name, "labels": labels, "ownerReferences": [owner_ref(Kind::Deployment, d)]},
                "spec": {"replicas": want, "selector": selector, "template": rs_template},
            });
            match cluster.create(Kind::ReplicaSet, &key.ns, rs) {
                Ok(rs) => rs,
                Err(err) => return warn!("could not create ReplicaSet {rs_name}: {err:?}"),
            }
        }
    };
    cluster
        .store
        .update(&rs_key, |rs| rs["spec"]["replicas"] = json!(want));
    // Older ReplicaSets of this Deployment (an earlier template) go, with their pods.
    for old in cluster.store.list(Kind::ReplicaSet, Some(&key.ns)).0 {
        if owner_uid(&old) == Some(uid(d)) && uid(&old) != uid(&rs) {
            let name = old["metadata"]["name"].as_str().unwrap_or("");
            cluster
                .store
                .remove(&Key::new(Kind::ReplicaSet, &key.ns, name));
        }
    }
    let pods = owned_pods(cluster, &key.ns, uid(&rs));
    let mut active: Vec<&Value> = pods.iter().filter(|p| !is_terminating(p)).collect();
    for _ in active.len()..want {
        let name = json!({"generateName": format!("{rs_name}-")});
        let pod = pod_from_template(
            template,
            name,
            labels.clone(),
            owner_ref(Kind::ReplicaSet, &rs),
        );
        create_pod(cluster, &key.ns, pod);
    }
    // Scale down: newest pods go first.
    active.sort_by_key(|p| {
        p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    while active.len() > want {
        if let Some(p) = active.pop() {
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            cluster.delete(&Key::new(Kind::Pod, &key.ns, name), Some(CONTROLLER_GRACE));
        }
    }
    let count = active.len();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    set_status(
        cluster,
        &rs_key,
        json!({"replicas": count, "readyReplicas": ready, "availableReplicas": ready, "fullyLabeledReplicas": count}),
    );
    let available = if ready >= want { "True" } else { "False" };
    set_status(
        cluster,
        key,
        json!({
            "replicas": count,
            "updatedReplicas": count,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": want.saturating_sub(ready),
            "conditions": [{"type": "Available", "status": available,
                "reason": if available == "True" { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }}],
        }),
    );
}

fn statefulset(cluster: &Arc<Cluster>, key: &Key, s: &Value) {
    let template = &s["spec"]["template"];
    let want = replicas(s);
    let ordered = s["spec"]["podManagementPolicy"].as_str() != Some("Parallel");
    let revision = format!(
        "{}-{}",
        key.name,
        names::stable_suffix(&template.to_string(), 10)
    );
    let pods = owned_pods(cluster, &key.ns, uid(s));
    for i in 0..want {
        let name = format!("{}-{i}", key.name);
        match cluster.store.get(&Key::new(Kind::Pod, &key.ns, &name)) {
            // Not ours (created by hand, or by an earlier StatefulSet of the same name).
            Some(p) if owner_uid(&p) != Some(uid(s)) => break,
            Some(p) if ordered && (is_terminating(&p) || !is_ready(&p)) => break,
            Some(_) => continue,
            None => {
                let mut labels = template["metadata"]["labels"].clone();
                labels["statefulset.kubernetes.io/pod-name"] = json!(name);
                labels["apps.kubernetes.io/pod-index"] = json!(i.to_string());
                labels["controller-revision-hash"] = json!(revision);
                let mut pod = pod_from_template(
                    template,
                    json!({"name": name}),
                    labels,
                    owner_ref(Kind::StatefulSet, s),
                );
                pod["spec"]["hostname"] = json!(name);
                if let Some(svc) = s["spec"]["serviceName"].as_str() {
                    pod["spec"]["subdomain"] = json!(svc);
                }
                create_pod(cluster, &key.ns, pod);
                if ordered {
                    break;
                }
            }
        }
    }
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let ordinal = name
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<usize>().ok());
        if ordinal.is_none_or(|o| o >= want) && !is_terminating(p) {
            cluster.delete(&Key::new(Kind::Pod, &key.ns, name), Some(CONTROLLER_GRACE));
        }
    }
    let active: Vec<&Value> = pods.iter().filter(|p| !is_terminating(p)).collect();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    set_status(
        cluster,
        key,
        json!({
            "replicas": active.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": active.len(),
            "updatedReplicas": active.len(),
            "currentRevision": revision,
            "updateRevision": revision,
        }),
    );
}

/// Removes ReplicaSets whose Deployment is gone, and pods whose controller is gone.
fn collect_orphans(cluster: &Arc<Cluster>) {
    let exists = |kind: Kind, ns: &str, o: &Value| {
        let Some(owner) = o["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|r| r.first())
        else {
            return true;
        };
        let name = owner["name"].as_str().unwrap_or("");
        cluster
            .store
            .get(&Key::new(kind, ns, name))
            .is_some_and(|found| uid(&found) == owner["uid"].as_str().unwrap_or(""))
    };
    for rs in cluster.store.list(Kind::ReplicaSet, None).0 {
        let ns = rs["metadata"]["namespace"].as_str().unwrap_or("");
        if !exists(Kind::Deployment, ns, &rs) {
            let name = rs["metadata"]["name"].as_str().unwrap_or("");
            cluster.store.remove(&Key::new(Kind::ReplicaSet, ns, name));
        }
    }
    for pod in cluster.store.list(Kind::Pod, None).0 {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let owner_kind = match pod["metadata"]["ownerReferences"][0]["kind"].as_str() {
            Some("ReplicaSet") => Kind::ReplicaSet,
            Some("StatefulSet") => Kind::StatefulSet,
            _ => continue,
        };
        if !is_terminating(&pod) && !exists(owner_kind, ns, &pod) {
            let name = pod["metadata"]["name"].as_str().unwrap_or("");
            cluster.delete(&Key::new(Kind::Pod, ns, name), Some(CONTROLLER_GRACE));
        }
    }
}
