//! The shared state of one test cluster (store, runtime, knobs, tokens) and the writes that
//! have side effects: creating a pod starts it, deleting one stops it, applying a manifest
//! stores each document as the API server would.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::Tokens;
use crate::kinds::Kind;
use crate::knobs::Knobs;
use crate::runtime::{self, Registry};
use crate::store::{now_rfc3339, Key, Store, WriteError};

/// Grace period of a pod that names none, as in the API server's defaults.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Everything one test cluster shares between its API handlers, runtime and controllers.
pub(crate) struct Cluster {
    pub store: Store,
    pub pods: Registry,
    pub knobs: Knobs,
    pub tokens: Tokens,
    pub dir: PathBuf,
    pub isolate: bool,
    /// `PATH` for pod processes: the extra dirs, then ours.
    pub path: OsString,
    pub host_ip: String,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// Parses `object` as the k8s-openapi type and serializes it back, so that stored objects have
/// exactly the shape (and only the fields) the real API knows.
fn normalize<T: serde::de::DeserializeOwned + serde::Serialize>(
    object: Value,
) -> anyhow::Result<Value> {
    let typed: T = serde_json::from_value(object)?;
    Ok(serde_json::to_value(typed)?)
}

fn normalize_kind(kind: Kind, object: Value) -> anyhow::Result<Value> {
    match kind {
        Kind::Namespace => normalize::<Namespace>(object),
        Kind::Pod => normalize::<Pod>(object),
        Kind::Service => normalize::<Service>(object),
        Kind::ConfigMap => normalize::<ConfigMap>(object),
        Kind::ServiceAccount => normalize::<ServiceAccount>(object),
        Kind::Deployment => normalize::<Deployment>(object),
        Kind::ReplicaSet => normalize::<ReplicaSet>(object),
        Kind::StatefulSet => normalize::<StatefulSet>(object),
        Kind::Role => normalize::<Role>(object),
        Kind::RoleBinding => normalize::<RoleBinding>(object),
        Kind::ClusterRole => normalize::<ClusterRole>(object),
        Kind::ClusterRoleBinding => normalize::<ClusterRoleBinding>(object),
    }
}

/// Fills in the defaults the API server adds on create.
fn apply_defaults(kind: Kind, object: &mut Value) {
    match kind {
        Kind::Pod => {
            let spec = &mut object["spec"];
            if spec["restartPolicy"].is_null() {
                spec["restartPolicy"] = json!("Always");
            }
            if spec["terminationGracePeriodSeconds"].is_null() {
                spec["terminationGracePeriodSeconds"] = json!(DEFAULT_GRACE_SECONDS);
            }
            if spec["serviceAccountName"].is_null() {
                spec["serviceAccountName"] = json!("default");
            }
            spec["schedulerName"] = json!("default-scheduler");
            spec["dnsPolicy"] = json!("ClusterFirst");
            object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        Kind::Namespace => {
            let name = object["metadata"]["name"].clone();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        Kind::Service => {
            let spec = &mut object["spec"];
            if spec["type"].is_null() {
                spec["type"] = json!("ClusterIP");
            }
            if spec["clusterIP"].is_null() {
                static NEXT: AtomicU32 = AtomicU32::new(10);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let ip = format!("10.96.{}.{}", n / 250, n % 250 + 1);
                spec["clusterIP"] = json!(ip.clone());
                spec["clusterIPs"] = json!([ip]);
            }
            object["status"] = json!({"loadBalancer": {}});
        }
        Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet
            if object["spec"]["replicas"].is_null() =>
        {
            object["spec"]["replicas"] = json!(1);
        }
        _ => {}
    }
}

impl Cluster {
    /// Creates an object (POST or apply of a new object); pods start running at once.
    pub fn create(
        self: &Arc<Self>,
        kind: Kind,
        ns: &str,
        object: Value,
    ) -> Result<Value, WriteError> {
        let mut object =
            normalize_kind(kind, object).map_err(|e| WriteError::Invalid(e.to_string()))?;
        apply_defaults(kind, &mut object);
        if kind.info().namespaced {
            self.ensure_namespace(ns);
        }
        let stored = self.store.create(kind, ns, object)?;
        if kind == Kind::Pod {
            runtime::start(self, &stored);
        }
        Ok(stored)
    }

    fn ensure_namespace(self: &Arc<Self>, ns: &str) {
        if self.store.get(&Key::new(Kind::Namespace, "", ns)).is_none() {
            let _ = self.create(Kind::Namespace, "", json!({"metadata": {"name": ns}}));
        }
    }

    /// Applies one manifest document: creates it, or updates labels, annotations and spec of an
    /// existing object (a running pod is left as it is).
    pub fn apply_object(self: &Arc<Self>, object: Value) -> anyhow::Result<()> {
        if object.is_null() {
            return Ok(());
        }
        let api_version = object["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_string();
        if kind_name == "List" {
            for item in object["items"].as_array().into_iter().flatten() {
                self.apply_object(item.clone())?;
            }
            return Ok(());
        }
        let Some(kind) = Kind::from_manifest(&api_version, &kind_name) else {
            warn!(%api_version, kind = %kind_name, "ignoring a manifest of an unknown kind");
            return Ok(());
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let key = Key::new(kind, &ns, &name);
        if name.is_empty() || self.store.get(&key).is_none() {
            self.create(kind, &ns, object)
                .map_err(|e| anyhow::anyhow!("could not create {kind_name} `{name}`: {e:?}"))?;
            if kind.info().namespaced {
                info!(kind = %kind_name, %ns, %name, "created");
            } else {
                info!(kind = %kind_name, %name, "created");
            }
            return Ok(());
        }
        if kind == Kind::Pod {
            info!(%ns, %name, "pod exists; left unchanged");
            return Ok(());
        }
        let new = normalize_kind(kind, object)
            .with_context(|| format!("invalid {kind_name} `{name}`"))?;
        self.store.update(&key, |old| {
            for field in ["labels", "annotations"] {
                if !new["metadata"][field].is_null() {
                    old["metadata"][field] = new["metadata"][field].clone();
                }
            }
            for field in ["spec", "rules", "subjects", "roleRef", "data"] {
                if !new[field].is_null() && old[field] != new[field] {
                    old[field] = new[field].clone();
                    if field == "spec" && !old["metadata"]["generation"].is_null() {
                        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                        old["metadata"]["generation"] = json!(generation + 1);
                    }
                }
            }
        });
        Ok(())
    }

    /// Applies multi-document YAML.
    pub fn apply_yaml(self: &Arc<Self>, yaml: &str) -> anyhow::Result<()> {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(yaml).context("invalid YAML manifest")?;
        for doc in docs {
            self.apply_object(doc)?;
        }
        Ok(())
    }

    /// Deletes an object. A pod first becomes terminating (deletionTimestamp) and disappears
    /// once its processes are dead; other objects go at once.
    pub fn delete(self: &Arc<Self>, key: &Key, grace: Option<i64>) -> Option<Value> {
        let object = self.store.get(key)?;
        if key.kind != Kind::Pod {
            return self.store.remove(key);
        }
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Some(object);
        }
        let grace = grace
            .or_else(|| object["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .max(0);
        let updated = self.store.update(key, |pod| {
            pod["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        });
        let secs = u64::try_from(grace).unwrap_or(0);
        if !runtime::stop(self, key, Duration::from_secs(secs)) {
            self.store.remove(key);
        }
        updated
    }

    /// Waits until the object with this key and uid is gone, up to `timeout`.
    pub async fn wait_gone(&self, key: &Key, uid: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.store.changed.notified();
            let present = self
                .store
                .get(key)
                .is_some_and(|o| o["metadata"]["uid"].as_str() == Some(uid));
            if !present {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "{} `{}/{}` still exists after {timeout:?}",
                    key.kind.info().kind,
                    key.ns,
                    key.name
                );
            }
        }
    }
}
