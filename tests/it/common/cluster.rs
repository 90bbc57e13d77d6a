//! The test cluster for one test: its own state dir, a listener on 127.0.0.1:0, and the
//! manifests the test names (paths relative to the repository).

use std::path::{Path, PathBuf};
use std::time::Duration;

use testcluster::{Config, TestCluster};

/// Where the Jupyter server of the tests lives (scripts/install-deps puts it there).
pub const JUPYTER_BIN: &str = "/opt/podtun/jupyter/bin";

/// Bound on a pod becoming Ready in tests (Jupyter on a loaded 2-core machine is the slow one).
pub const POD_READY: Duration = Duration::from_secs(90);

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
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the API server");
    let mut config = Config::new(dir.path().join("cluster"), listener);
    config.extra_path = vec![PathBuf::from(JUPYTER_BIN)];
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
