//! The shared state of one test cluster (store, runtime, knobs, tokens) and the writes that
//! have side effects: creating a pod starts it, deleting one stops it, applying a manifest
//! stores each document as the API server would.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admission::{self, DEFAULT_GRACE_SECONDS};
use crate::auth::Tokens;
use crate::config::{ImageConfig, NodeResources};
use crate::kinds::Kind;
use crate::knobs::Knobs;
use crate::runtime::{self, Registry};
use crate::store::{now_rfc3339, Key, Store, WriteError};

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
    /// What the node offers the scheduler.
    pub node: NodeResources,
    /// The images the runtime knows, by fully qualified reference.
    pub images: BTreeMap<String, ImageConfig>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl Cluster {
    /// Creates an object (POST or apply of a new object); pods start running at once.
    pub fn create(
        self: &Arc<Self>,
        kind: Kind,
        ns: &str,
        object: Value,
    ) -> Result<Value, WriteError> {
        let mut object = object;
        let meta = &object["metadata"];
        if kind.info().namespaced && object.is_object() && (meta.is_null() || meta.is_object()) {
            object["metadata"]["namespace"] = json!(ns);
        }
        let object = admission::admit(kind, object)?;
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
                .map_err(|e| anyhow::anyhow!("could not create {kind_name} `{name}`: {e}"))?;
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
        let new = admission::normalize_kind(kind, object)
            .map_err(|e| anyhow::anyhow!("invalid {kind_name} `{name}`: {e}"))?;
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
