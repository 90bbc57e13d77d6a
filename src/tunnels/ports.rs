//! Port memory: the local port a tunnel last used, per (login host, context, namespace,
//! target) and remote port, so that yesterday's URL and bookmarks keep working. A remembered
//! port is only a preference: when it is taken, the usual choice applies.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::state::Forward;
use crate::plan::Plan;

/// The identity a port is remembered under.
#[derive(Debug, Clone)]
pub struct Key(String);

impl Key {
    /// From the plan: the login host (last of the route), context, namespace, target.
    pub fn of(plan: &Plan) -> Key {
        let parts = [
            plan.via().last().cloned().unwrap_or_default(),
            plan.request.cluster.context.clone().unwrap_or_default(),
            plan.request.cluster.namespace.clone().unwrap_or_default(),
            plan.target_label.clone(),
        ];
        Key(parts.join(" "))
    }
}

/// `{"KEY": {"REMOTE": LOCAL}}`.
type Memory = BTreeMap<String, BTreeMap<String, u16>>;

fn path() -> anyhow::Result<PathBuf> {
    let dir = crate::dirs::state_dir()?;
    crate::dirs::private_dir(&dir)?;
    Ok(dir.join("ports.json"))
}

fn load() -> Memory {
    path()
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The local port last used for `remote` under `key`.
pub fn recall(key: &Key, remote: u16) -> Option<u16> {
    load().get(&key.0)?.get(&remote.to_string()).copied()
}

/// Remembers the local ports of `forwards` under `key`.
pub fn remember(key: &Key, forwards: &[Forward]) {
    let Ok(path) = path() else { return };
    // Read-modify-write under a lock: two tunnels may become ready at the same time.
    let lock = path.with_extension("lock");
    let Ok(lock) = crate::dirs::private_file(&lock, false) else {
        return;
    };
    if lock.lock().is_err() {
        return;
    }
    let mut memory = load();
    let entry = memory.entry(key.0.clone()).or_default();
    for f in forwards {
        let port = f.local.rsplit(':').next().and_then(|p| p.parse().ok());
        if let Some(port) = port {
            entry.insert(f.remote_port.to_string(), port);
        }
    }
    if let Ok(bytes) = serde_json::to_vec_pretty(&memory) {
        if let Err(e) = crate::dirs::write_private(&path, &bytes) {
            tracing::warn!("could not remember the local ports: {e:#}");
        }
    }
}
