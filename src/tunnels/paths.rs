//! One tunnel's files, named by the digest of its identity, and their locks.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::state::{Phase, State};
use crate::plan::Plan;

/// How often a waiting start polls a lock.
pub(super) const LOCK_POLL: Duration = Duration::from_millis(100);

/// Bound on a lock another podtun holds only for a moment (`ls` checking liveness).
pub(super) const LOCK_BRIEF: Duration = Duration::from_secs(5);

/// The files of one tunnel.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The tunnel's id.
    pub id: String,
    dir: PathBuf,
}

impl Paths {
    /// `STATE/tunnels`, created private.
    pub fn dir() -> anyhow::Result<PathBuf> {
        let state = crate::dirs::state_dir()?;
        crate::dirs::private_dir(&state)?;
        let dir = state.join("tunnels");
        crate::dirs::private_dir(&dir)?;
        Ok(dir)
    }

    /// The files of the tunnel `plan` describes.
    pub fn of(plan: &Plan) -> anyhow::Result<Paths> {
        Ok(Paths {
            id: identity(plan),
            dir: Paths::dir()?,
        })
    }

    /// The files of the tunnel `id`.
    pub fn with_id(dir: &Path, id: &str) -> Paths {
        Paths {
            id: id.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    pub(super) fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.id))
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.file("json")
    }

    /// The background tunnel's log.
    pub fn log(&self) -> PathBuf {
        self.file("log")
    }

    /// Reads the state file.
    pub fn read(&self) -> Option<State> {
        let text = std::fs::read(self.state()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether the tunnel's process is alive (it holds the lock).
    pub fn alive(&self) -> bool {
        match try_lock(&self.file("lock")) {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Removes the state file of a tunnel that is gone.
    pub fn clean(&self) {
        let _ = std::fs::remove_file(self.state());
    }

    /// Waits for the start lock (another start of the same tunnel holds it until ready).
    pub async fn lock_start(&self) -> anyhow::Result<File> {
        let path = self.file("start");
        loop {
            if let Some(file) =
                try_lock(&path).with_context(|| format!("could not lock {}", path.display()))?
            {
                return Ok(file);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// The running tunnel's state, if one runs.
    ///
    /// The lock is busy for a moment when `ls` checks it, and a starting tunnel takes it before
    /// it writes its state: wait a little for the state file before calling the tunnel gone.
    pub async fn running(&self) -> Option<State> {
        let deadline = tokio::time::Instant::now() + LOCK_BRIEF;
        while self.alive() {
            if let Some(state) = self.read().filter(|s| s.state != Phase::Failed) {
                return Some(state);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        None
    }
}

/// An exclusive lock on `path` (created 0600), or `None` when another process holds it.
pub(super) fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = crate::dirs::private_file(path, false)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The digest of what makes two commands the same tunnel.
fn identity(plan: &Plan) -> String {
    let ports = plan.request.ports.join(",");
    let local = plan.local_port.map(|p| p.to_string()).unwrap_or_default();
    let kubeconfig = plan
        .request
        .cluster
        .kubeconfig
        .as_ref()
        .map(|k| k.display().to_string())
        .unwrap_or_default();
    let mut parts = vec![
        plan.via().join(","),
        plan.request.cluster.context.clone().unwrap_or_default(),
        plan.request.cluster.namespace.clone().unwrap_or_default(),
        kubeconfig,
        plan.target_label.clone(),
        plan.request.preset.clone(),
        ports,
        local,
    ];
    // Two submissions with other sbatch options are two tunnels (two jobs).
    if let crate::plan::Target::Slurm(crate::plan::slurm::Source::Submit(spec)) = &plan.target {
        parts.push(format!("{spec:?}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, parts.join("\0").as_bytes());
    data_encoding::HEXLOWER.encode(&digest.as_ref()[..4])
}
