//! The test cluster for one test: its own state dir, a listener on 127.0.0.1:0, and the
//! manifests the test names (paths relative to the repository).

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use testcluster::{Config, ImageConfig, TestCluster};

/// Where the Jupyter server of the tests lives (scripts/install-deps puts it there).
pub const JUPYTER_BIN: &str = "/opt/podtun/jupyter/bin";

/// Bound on a pod becoming Ready in tests (Jupyter on a loaded 2-core machine is the slow one).
pub const POD_READY: Duration = Duration::from_secs(90);

/// The Jupyter image the demo manifests and `--image` use.
pub const JUPYTER_IMAGE: &str = "quay.io/jupyter/base-notebook:2024-12-02";
/// The redis image of the demo manifests.
pub const REDIS_IMAGE: &str = "redis:7-alpine";

/// The images a pod may name without a command: what they run, as the real images would
/// (Jupyter as the image's jovyan user, 1000:100).
pub fn images() -> BTreeMap<String, ImageConfig> {
    let jupyter = [
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=0.0.0.0",
        "--port=8888",
    ];
    let redis = [
        "redis-server",
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ];
    BTreeMap::from([
        (
            JUPYTER_IMAGE.to_string(),
            ImageConfig::new(&jupyter, &[]).with_user(1000, 100),
        ),
        (REDIS_IMAGE.to_string(), ImageConfig::new(&redis, &[])),
    ])
}

/// A running test cluster and its state directory.
pub struct Cluster {
    pub tc: TestCluster,
    pub dir: tempfile::TempDir,
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts a cluster with the given manifests applied (files or directories).
pub async fn start(manifests: &[&str]) -> Cluster {
    start_with(manifests, |_| {}).await
}

/// [`start`], with `adjust` changing the configuration first (a node with GPUs, …).
pub async fn start_with(manifests: &[&str], adjust: impl FnOnce(&mut Config)) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the API server");
    let mut config = Config::new(dir.path().join("cluster"), listener);
    config.extra_path = vec![PathBuf::from(JUPYTER_BIN)];
    config.images = images();
    adjust(&mut config);
    let tc = TestCluster::start(config)
        .await
        .expect("start the test cluster");
    for m in manifests {
        tc.apply_file(&repo().join(m))
            .unwrap_or_else(|e| panic!("apply {m}: {e:#}"));
    }
    Cluster { tc, dir }
}

impl Cluster {
    /// The kubeconfig the cluster wrote.
    pub fn kubeconfig(&self) -> &Path {
        self.tc.kubeconfig()
    }

    /// Waits for a pod to be Ready, failing the test with the pod's state if it isn't.
    pub async fn ready(&self, ns: &str, pod: &str) {
        if let Err(e) = self.tc.wait_ready(ns, pod, POD_READY).await {
            panic!(
                "pod {ns}/{pod} not ready: {e:#}\n{:#?}",
                self.tc.pod(ns, pod).map(|p| p.status)
            );
        }
    }
}
