//! Shared setup for the kube-rs tests: a fresh cluster on `127.0.0.1:0`, clients per context,
//! and waiting on conditions with deadlines.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use testcluster::{Config, TestCluster};

/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Env {
    pub cluster: TestCluster,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

/// A fresh cluster whose config `configure` changes first (the node's GPUs, images).
pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = Config::new(dir.path(), listener);
    configure(&mut config);
    let cluster = TestCluster::start(config)
        .await
        .expect("start test cluster");
    Env { cluster, _dir: dir }
}

impl Env {
    /// A kube-rs client for a context of the written kubeconfig.
    pub async fn client(&self, context: &str) -> Client {
        let kubeconfig = Kubeconfig::read_from(self.cluster.kubeconfig()).expect("read kubeconfig");
        let options = KubeConfigOptions {
            context: Some(context.to_string()),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .expect("kube config");
        Client::try_from(config).expect("client")
    }

    pub async fn admin(&self) -> Client {
        self.client("testcluster").await
    }

    /// Waits until `check` returns something for the pod, failing after [`DEADLINE`].
    pub async fn wait_pod<T>(&self, ns: &str, name: &str, check: impl Fn(&Pod) -> Option<T>) -> T {
        poll(
            || async { self.cluster.pod(ns, name).as_ref().and_then(&check) },
            &format!("pod {ns}/{name}"),
        )
        .await
    }

    /// Sends `body` (JSON) to `path` as the admin; the status code and the JSON answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(
                serde_json::to_vec(body).expect("json"),
            ))
            .expect("request");
        let response = self.admin().await.send(request).await.expect("an answer");
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (code, serde_json::from_slice(&body).expect("a JSON answer"))
    }

    pub async fn shutdown(self) {
        self.cluster.shutdown().await;
    }
}

/// Re-checks `f` (every 20 ms) until it returns `Some`, failing after [`DEADLINE`].
pub async fn poll<T, F: Future<Output = Option<T>>>(f: impl Fn() -> F, what: &str) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod manifest running `script` with `sh -c`.
pub fn sh_pod(ns: &str, name: &str, labels: &str, script: &str, extra_spec: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{{labels}}}
spec:
  {extra_spec}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", {script:?}]
"#
    )
}

pub fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.first()
}

pub fn waiting_reason(pod: &Pod) -> Option<String> {
    container_status(pod)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

pub fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
