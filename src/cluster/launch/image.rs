//! `--image IMAGE`: the pod podtun creates itself, in the user's namespace: named after the user
//! and the preset, labelled as podtun's, with the preset's command (Jupyter) or the image's own,
//! its port declared and checked for readiness, and the resources asked for as requests and
//! limits.

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use serde_json::{json, Map, Value};

use crate::cluster::client::Cluster;
use crate::cluster::discover::Preset;
use crate::cluster::resolve::api_error;
use crate::proto::wire::PodTemplate;

/// The label that marks a pod podtun created (Kubernetes' recommended label).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podtun");
/// The GPU resource `--gpu` asks for.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The port and the command of each preset's pod.
fn preset_container(preset: Preset, ports: &[u16]) -> (&'static str, Vec<(String, u16)>, Value) {
    match preset {
        Preset::Jupyter => (
            "jupyter",
            vec![("jupyter".to_string(), 8888)],
            json!([
                "jupyter",
                "lab",
                "--no-browser",
                "--ip=0.0.0.0",
                "--port=8888"
            ]),
        ),
        Preset::Redis => ("redis", vec![("redis".to_string(), 6379)], Value::Null),
        Preset::Generic => (
            "main",
            ports.iter().map(|p| (format!("port-{p}"), *p)).collect(),
            Value::Null,
        ),
    }
}

/// The pod's manifest. `user` names it (`alice-jupyter-x7k2q`: the API server adds the end).
pub fn manifest(template: &PodTemplate, preset: Preset, ports: &[u16], user: &str) -> Value {
    let (name, ports, command) = preset_container(preset, ports);
    let mut amounts = Map::new();
    if let Some(cpu) = &template.cpu {
        amounts.insert("cpu".into(), json!(cpu));
    }
    if let Some(memory) = &template.memory {
        amounts.insert("memory".into(), json!(memory));
    }
    if let Some(gpu) = template.gpu {
        amounts.insert(GPU_RESOURCE.into(), json!(gpu.to_string()));
    }
    let mut container = json!({
        "name": name,
        "image": template.image,
        "ports": ports.iter().map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"})).collect::<Vec<_>>(),
    });
    if !command.is_null() {
        container["command"] = command;
    }
    if let Some((_, port)) = ports.first() {
        container["readinessProbe"] =
            json!({"tcpSocket": {"port": port}, "periodSeconds": 2, "failureThreshold": 30});
    }
    if !amounts.is_empty() {
        container["resources"] = json!({"requests": amounts, "limits": amounts});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-{name}-", pod_word(user)),
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                "app.kubernetes.io/name": name,
            },
        },
        "spec": {"containers": [container]},
    })
}

/// `user` as the start of a pod name: lowercase letters, digits and dashes, at most 30.
fn pod_word(user: &str) -> String {
    let mut word: String = user
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    word.truncate(30);
    let word = word.trim_matches('-').to_string();
    if word.is_empty() {
        "podtun".to_string()
    } else {
        word
    }
}

/// The user this process runs as, by the environment (`USER`, or `USERNAME` on Windows).
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_default()
}

/// Creates the pod; its name.
pub async fn create(
    cluster: &Cluster,
    template: &PodTemplate,
    preset: Preset,
    ports: &[u16],
) -> anyhow::Result<String> {
    let ns = &cluster.namespace;
    let pod: Pod = serde_json::from_value(manifest(template, preset, ports, &user_name()))?;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let created = api
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| {
            api_error(
                e,
                &format!(
                    "create a pod from image `{}` in namespace `{ns}`",
                    template.image
                ),
                ns,
            )
        })?;
    Ok(created.metadata.name.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jupyter_pod_with_resources() {
        let template = PodTemplate {
            image: "quay.io/jupyter/scipy-notebook".into(),
            cpu: Some("2".into()),
            memory: Some("8Gi".into()),
            gpu: Some(1),
        };
        let pod = manifest(&template, Preset::Jupyter, &[], "Alice.B");
        assert_eq!(pod["metadata"]["generateName"], "alice-b-jupyter-");
        assert_eq!(
            pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "podtun"
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["command"][0], "jupyter");
        assert_eq!(c["ports"][0]["containerPort"], 8888);
        for side in ["requests", "limits"] {
            assert_eq!(c["resources"][side]["cpu"], "2");
            assert_eq!(c["resources"][side]["memory"], "8Gi");
            assert_eq!(c["resources"][side]["nvidia.com/gpu"], "1");
        }
        let typed: Pod = serde_json::from_value(pod).unwrap();
        assert_eq!(typed.spec.unwrap().containers.len(), 1);
    }

    #[test]
    fn other_images_keep_their_own_command() {
        let template = PodTemplate {
            image: "redis:7".into(),
            ..PodTemplate::default()
        };
        let pod = manifest(&template, Preset::Redis, &[], "");
        assert_eq!(pod["metadata"]["generateName"], "podtun-redis-");
        let c = &pod["spec"]["containers"][0];
        assert!(c["command"].is_null());
        assert!(c["resources"].is_null());
        let pod = manifest(&template, Preset::Generic, &[8080, 9090], "bob");
        let ports = &pod["spec"]["containers"][0]["ports"];
        assert_eq!(ports[1]["containerPort"], 9090);
    }
}
