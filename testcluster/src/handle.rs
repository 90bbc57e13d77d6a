//! The public handle: start a cluster, apply manifests, look at pods, turn the fault knobs,
//! shut down.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::config::{Config, UserSpec};
use crate::kinds::Kind;
use crate::knobs::Knobs;
use crate::kubeconfig::{self, KubeconfigParams};
use crate::runtime::{self, Registry};
use crate::store::{Key, Store};

/// How long `delete_pod` waits for the pod's processes to die and the object to go.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `shutdown` waits for tasks after killing every process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Handle {
    cluster: Arc<Cluster>,
    kubeconfig: PathBuf,
    url: String,
}

impl Drop for Handle {
    /// Best effort when `shutdown` was not awaited: stop everything and kill every process
    /// group now; network namespaces go when the tasks holding them are dropped.
    fn drop(&mut self) {
        self.cluster.shutdown.cancel();
        self.cluster.pods.kill_all_now();
    }
}

/// A running test cluster. Cloning is cheap; the cluster stops when `shutdown` is awaited or
/// the last clone is dropped.
#[derive(Clone)]
pub struct TestCluster {
    handle: Arc<Handle>,
}

fn pod_path(extra: &[PathBuf]) -> OsString {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
    ));
    std::env::join_paths(dirs).unwrap_or_default()
}

impl TestCluster {
    /// Starts serving on the configured listener and writes the kubeconfig.
    pub async fn start(config: Config) -> anyhow::Result<TestCluster> {
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("could not create {}", config.dir.display()))?;
        let addr: SocketAddr = config
            .listener
            .local_addr()
            .context("listener has no address")?;
        let mut names = config.server_names.clone();
        names.push(addr.ip().to_string());
        let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
        if let Some(host) = advertise
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
        {
            names.push(host.to_string());
        }
        let tls = crate::tls::generate(&names)?;
        let url = format!("https://{advertise}");
        let tokens = Tokens {
            admin: crate::names::token(),
            user: crate::names::token(),
            others: config
                .users
                .iter()
                .map(|u| (crate::names::token(), u.name.clone()))
                .collect(),
        };
        let host_ip = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let cluster = Arc::new(Cluster {
            store: Store::new(),
            pods: Registry::default(),
            knobs: Knobs::new(),
            dir: config.dir.clone(),
            isolate: config.isolate_pods,
            path: pod_path(&config.extra_path),
            host_ip,
            node: config.node.clone(),
            images: runtime::image::index(&config.images),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            tokens,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            cluster.apply_object(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        }
        for user in &config.users {
            for object in user.rbac() {
                cluster.apply_object(object)?;
            }
        }
        let others: Vec<(&str, &str, &str)> = cluster
            .tokens
            .others
            .iter()
            .zip(&config.users)
            .map(|((token, name), u)| (name.as_str(), token.as_str(), u.namespace.as_str()))
            .collect();
        let kubeconfig = config.dir.join("kubeconfig");
        let text = kubeconfig::render(&KubeconfigParams {
            server: &url,
            ca_pem: &tls.ca_pem,
            admin_token: &cluster.tokens.admin,
            user_token: &cluster.tokens.user,
            others: &others,
        });
        std::fs::write(&kubeconfig, text)
            .with_context(|| format!("could not write {}", kubeconfig.display()))?;
        config
            .listener
            .set_nonblocking(true)
            .context("could not make the listener non-blocking")?;
        let listener = tokio::net::TcpListener::from_std(config.listener)
            .context("could not use the listener")?;
        cluster
            .tasks
            .spawn(crate::server::serve(cluster.clone(), listener, tls.config));
        cluster.tasks.spawn(crate::workloads::run(cluster.clone()));
        info!(%url, isolate = cluster.isolate, "test cluster started");
        Ok(TestCluster {
            handle: Arc::new(Handle {
                cluster,
                kubeconfig,
                url,
            }),
        })
    }

    fn cluster(&self) -> &Arc<Cluster> {
        &self.handle.cluster
    }

    /// The kubeconfig file (contexts `testcluster`, `minimal`, `bad-token`).
    pub fn kubeconfig(&self) -> &Path {
        &self.handle.kubeconfig
    }

    /// The server URL, `https://host:port`.
    pub fn url(&self) -> String {
        self.handle.url.clone()
    }

    /// The token that may do everything.
    pub fn admin_token(&self) -> &str {
        &self.cluster().tokens.admin
    }

    /// The token of user [`crate::USER_NAME`], whose rights come from applied Roles only.
    pub fn user_token(&self) -> &str {
        &self.cluster().tokens.user
    }

    /// Applies multi-document YAML (unknown kinds are skipped with a warning).
    pub fn apply_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        self.cluster().apply_yaml(yaml)
    }

    /// Applies a YAML file, or every `*.yaml`/`*.yml` file of a directory in name order.
    pub fn apply_file(&self, path: &Path) -> anyhow::Result<()> {
        let mut files = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path)
                .with_context(|| format!("could not read {}", path.display()))?
            {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        for file in files {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            self.apply_yaml(&yaml)
                .with_context(|| format!("could not apply {}", file.display()))?;
        }
        Ok(())
    }

    /// Applies `user`'s Role again, as an administrator editing it would: with `portforward`
    /// false it revokes pods/portforward. Port-forwards open already go on, as on a real
    /// cluster; new upgrades are refused.
    pub fn apply_user(&self, user: &UserSpec) -> anyhow::Result<()> {
        for object in user.rbac() {
            self.cluster().apply_object(object)?;
        }
        Ok(())
    }

    /// Waits until the pod is Running with every container Ready.
    pub async fn wait_ready(&self, ns: &str, pod: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let key = Key::new(Kind::Pod, ns, pod);
        loop {
            let changed = self.cluster().store.changed.notified();
            if let Some(p) = self.cluster().store.get(&key) {
                let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if ready && p["status"]["phase"] == "Running" {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let status = self
                    .cluster()
                    .store
                    .get(&key)
                    .map(|p| p["status"].to_string());
                bail!(
                    "pod `{ns}/{pod}` is not ready after {timeout:?}; status: {}",
                    status.unwrap_or_else(|| "absent".into())
                );
            }
        }
    }

    /// The pod, if it exists.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        let value = self.cluster().store.get(&Key::new(Kind::Pod, ns, name))?;
        serde_json::from_value(value).ok()
    }

    /// Every pod of a namespace.
    pub fn pods(&self, ns: &str) -> Vec<Pod> {
        let (items, _) = self.cluster().store.list(Kind::Pod, Some(ns));
        items
            .into_iter()
            .filter_map(|p| serde_json::from_value(p).ok())
            .collect()
    }

    /// Deletes a pod (its processes get SIGTERM, then SIGKILL after the grace period) and
    /// waits until it is gone.
    pub async fn delete_pod(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        let key = Key::new(Kind::Pod, ns, name);
        let Some(pod) = self.cluster().delete(&key, None) else {
            bail!("pod `{ns}/{name}` not found");
        };
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        self.cluster().wait_gone(&key, &uid, DELETE_TIMEOUT).await
    }

    /// Kills the pod's processes; the restart policy decides what follows (with `Always` a new
    /// process starts and restartCount goes up by one).
    pub async fn restart_pod(&self, ns: &str, name: &str) -> anyhow::Result<()> {
        if !runtime::kill_processes(self.cluster(), &Key::new(Kind::Pod, ns, name)) {
            bail!("pod `{ns}/{name}` has no running process");
        }
        Ok(())
    }

    /// Aborts every open port-forward (the TCP connection is dropped, no Close frame), and
    /// returns once each session has ended.
    pub async fn drop_portforwards(&self) {
        self.cluster().knobs.drop_portforwards().await;
    }

    /// Refuses new port-forward upgrades for `for_` (500, as when the kubelet is unreachable).
    pub fn refuse_portforwards(&self, for_: Duration) {
        self.cluster().knobs.refuse_portforwards(for_);
    }

    /// Delays every API response by `d` (zero turns it off).
    pub fn set_delay(&self, d: Duration) {
        self.cluster().knobs.set_delay(d);
    }

    /// Holds every API request for `for_`.
    pub fn stall(&self, for_: Duration) {
        self.cluster().knobs.stall(for_);
    }

    /// How many port-forward upgrades were served (every transport).
    pub fn portforward_upgrades(&self) -> u64 {
        self.cluster().knobs.upgrades()
    }

    /// How many port-forward upgrades were served over `transport`.
    pub fn portforward_upgrades_over(&self, transport: crate::Transport) -> u64 {
        self.cluster().knobs.upgrades_over(transport)
    }

    /// Serves `transport` for new port-forwards, or stops serving it (as an API server or a
    /// proxy that lacks it: a tunnel request then reaches the kubelet as a plain WebSocket).
    pub fn set_portforward_transport(&self, transport: crate::Transport, on: bool) {
        self.cluster().knobs.set_transport(transport, on);
    }

    /// Stops serving, kills every pod's processes, removes their network namespaces and waits
    /// (briefly) for every task to end.
    pub async fn shutdown(self) {
        let cluster = self.cluster().clone();
        for rt in cluster.pods.all() {
            runtime::stop(&cluster, &rt.key, Duration::ZERO);
        }
        cluster.shutdown.cancel();
        cluster.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, cluster.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some test cluster tasks did not end in time");
        }
        cluster.pods.kill_all_now();
    }
}
