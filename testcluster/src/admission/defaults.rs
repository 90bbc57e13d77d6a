//! The defaults the API server fills in on create (its `SetDefaults_*` functions and the
//! admission plugins every cluster runs), and a pod's QoS class.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

use super::quantity::Quantity;
use crate::kinds::Kind;
use crate::reference;

/// Grace period of a pod that names none, as in the API server's defaults.
pub(crate) const DEFAULT_GRACE_SECONDS: i64 = 30;

fn default(value: &mut Value, key: &str, default: Value) {
    if value[key].is_null() {
        value[key] = default;
    }
}

/// Fills in the defaults of `kind`, before validation.
pub(super) fn apply(kind: Kind, object: &mut Value) {
    match kind {
        Kind::Pod => pod(object),
        Kind::Namespace => {
            let name = object["metadata"]["name"].clone();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        Kind::Service => {
            let spec = &mut object["spec"];
            default(spec, "type", json!("ClusterIP"));
            if spec["clusterIP"].is_null() {
                static NEXT: AtomicU32 = AtomicU32::new(10);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
                spec["clusterIP"] = json!(ip.clone());
                spec["clusterIPs"] = json!([ip]);
            }
            object["status"] = json!({"loadBalancer": {}});
        }
        Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet => {
            default(&mut object["spec"], "replicas", json!(1));
        }
        _ => {}
    }
}

fn probe(probe: &mut Value) {
    if probe.is_object() {
        default(probe, "timeoutSeconds", json!(1));
        default(probe, "periodSeconds", json!(10));
        default(probe, "successThreshold", json!(1));
        default(probe, "failureThreshold", json!(3));
    }
}

fn container(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or("").to_string();
    default(
        c,
        "imagePullPolicy",
        json!(reference::default_pull_policy(&image)),
    );
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for port in c["ports"].as_array_mut().into_iter().flatten() {
        default(port, "protocol", json!("TCP"));
    }
    for key in ["readinessProbe", "livenessProbe", "startupProbe"] {
        probe(&mut c[key]);
    }
    // A limit without a request is also the request (`SetDefaults_Pod`).
    if let Some(limits) = c["resources"]["limits"].as_object().cloned() {
        let resources = &mut c["resources"];
        default(resources, "requests", json!({}));
        if let Some(requests) = resources["requests"].as_object_mut() {
            for (name, value) in limits {
                requests.entry(name).or_insert(value);
            }
        }
    }
}

fn pod(object: &mut Value) {
    let spec = &mut object["spec"];
    default(spec, "restartPolicy", json!("Always"));
    default(
        spec,
        "terminationGracePeriodSeconds",
        json!(DEFAULT_GRACE_SECONDS),
    );
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    // The ServiceAccount, Priority and DefaultTolerationSeconds admission plugins.
    default(spec, "serviceAccountName", json!("default"));
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    default(spec, "priority", json!(0));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    if spec["tolerations"].is_null() {
        spec["tolerations"] = json!(["not-ready", "unreachable"].map(|t| json!({
            "key": format!("node.kubernetes.io/{t}"),
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        })));
    }
    for key in ["containers", "initContainers"] {
        for c in spec[key].as_array_mut().into_iter().flatten() {
            container(c);
        }
    }
    object["status"] = json!({"phase": "Pending"});
}

/// After validation: quantities as the API server writes them back (`0.5` → `500m`), and
/// `status.qosClass`.
pub(super) fn finish_pod(object: &mut Value) {
    for key in ["containers", "initContainers"] {
        for c in object["spec"][key].as_array_mut().into_iter().flatten() {
            for list in ["limits", "requests"] {
                let values = c["resources"][list].as_object_mut();
                for value in values.into_iter().flat_map(|m| m.values_mut()) {
                    if let Some(q) = value.as_str().and_then(|s| Quantity::parse(s).ok()) {
                        *value = json!(q.to_string());
                    }
                }
            }
        }
    }
    let class = qos_class(&object["spec"]);
    object["status"]["qosClass"] = json!(class);
}

/// `Guaranteed`, `Burstable` or `BestEffort`, as `qos.GetPodQOS` computes it from the cpu and
/// memory of every container (init containers too).
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, i128> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i128> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .into_iter()
        .flat_map(|k| spec[k].as_array().into_iter().flatten());
    for c in containers {
        let mut found = 0;
        for (list, sums) in [("requests", &mut requests), ("limits", &mut limits)] {
            for name in ["cpu", "memory"] {
                let value = c["resources"][list][name]
                    .as_str()
                    .and_then(|s| Quantity::parse(s).ok())
                    .map_or(0, |q| q.millis());
                if value > 0 {
                    *sums.entry(name).or_default() += value;
                    if list == "limits" {
                        found += 1;
                    }
                }
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let equal = requests.iter().all(|(k, v)| limits.get(k) == Some(v));
    if guaranteed && equal && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(resources: Value) -> &'static str {
        let mut pod =
            json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": resources}]}});
        apply(Kind::Pod, &mut pod);
        qos_class(&pod["spec"])
    }

    #[test]
    fn qos_follows_requests_and_limits() {
        assert_eq!(class(json!({})), "BestEffort");
        assert_eq!(
            class(json!({"limits": {"nvidia.com/gpu": "1"}})),
            "BestEffort"
        );
        assert_eq!(
            class(json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
            "Guaranteed"
        );
        assert_eq!(
            class(json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}})),
            "Burstable"
        );
        assert_eq!(class(json!({"requests": {"cpu": "100m"}})), "Burstable");
    }

    #[test]
    fn limits_default_requests() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "redis:7",
            "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2"}, "requests": {"cpu": "1"}}}]}});
        apply(Kind::Pod, &mut pod);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "1", "nvidia.com/gpu": "1"})
        );
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["status"]["phase"], "Pending");
    }
}
