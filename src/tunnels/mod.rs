//! The tunnels running on this machine, in the foreground or in the background (`-d`): one
//! state file each in the state directory, so that `ls`, `stop`, `logs` and a second start of
//! the same command find them.
//!
//! ```text
//! STATE/tunnels/ID.json    what `ls` shows: target, via, local address or URL, state, pid (0600)
//! STATE/tunnels/ID.lock    held (flock / LockFileEx) by the tunnel's process as long as it lives
//! STATE/tunnels/ID.start   held by whoever is starting the tunnel, until it is ready or failed
//! STATE/tunnels/ID.log     a background tunnel's stderr (`podtun logs ID`)
//! STATE/ports.json         the local port last used per (login host, context, namespace, target)
//! ```
//!
//! The id is a digest of the tunnel's identity (login host, context, namespace, target, preset,
//! ports), so the same command finds the same files. Liveness is the lock, which the kernel
//! drops when the process dies however it dies (kill -9, crash, reboot): a state file whose lock
//! is free belongs to a dead tunnel, and is cleaned as soon as it is seen.

pub mod commands;
pub mod control;
pub mod detach;
pub mod ports;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::output::Event;
use crate::plan::Plan;

/// Environment variable that tells a re-executed podtun it is the background tunnel `ID`.
pub const DETACHED_ENV: &str = "PODTUN_DETACHED";

/// How often a waiting start polls a lock.
const LOCK_POLL: Duration = Duration::from_millis(100);

/// Bound on a lock another podtun holds only for a moment (`ls` checking liveness).
const LOCK_BRIEF: Duration = Duration::from_secs(5);

/// What a tunnel is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connecting, waiting for the pod.
    Starting,
    /// Every forward answers.
    Ready,
    /// The link to the login host is down; podtun is reconnecting.
    Reconnecting,
    /// It stopped on an error (shown once by `ls`, then cleaned).
    Failed,
    /// Its process died without cleaning up (shown once by `ls`, then cleaned).
    Gone,
}

impl Phase {
    /// The word `ls` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Reconnecting => "reconnecting",
            Phase::Failed => "failed",
            Phase::Gone => "gone",
        }
    }
}

/// One forwarded port of a tunnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// `127.0.0.1:8888`.
    pub local: String,
    /// Port in the pod.
    pub remote_port: u16,
    /// The pod serving it.
    pub pod: String,
    /// Jupyter's URL (with its token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What runs the cluster half through the login host: `podtun` or `kubectl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A tunnel's state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Short id, a digest of the identity.
    pub id: String,
    /// The target as the user gave it.
    pub target: String,
    /// `jupyter`, `redis` or `generic`.
    pub preset: String,
    /// The SSH route (`bastion,login`); none: local mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `--context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// `-n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The tunnel's process.
    pub pid: u32,
    /// Started in the background (`-d`).
    pub detached: bool,
    /// What it is doing.
    pub state: Phase,
    /// Since when (seconds since the Unix epoch).
    pub since: u64,
    /// The forwards, once ready.
    pub forwards: Vec<Forward>,
    /// The last error reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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

    fn file(&self, ext: &str) -> PathBuf {
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
fn try_lock(path: &Path) -> io::Result<Option<File>> {
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

/// The running tunnel's side: it holds the lock and keeps the state file current.
pub struct Registration {
    paths: Paths,
    _alive: File,
    /// Released once the first forwards are ready (a second start then finds them).
    start: Mutex<Option<File>>,
    state: Mutex<State>,
    /// `ready` events of the current batch (one per forward).
    batch: Mutex<Vec<Forward>>,
    memory: ports::Key,
}

/// The outcome of [`register`].
pub enum Registered {
    /// This process is the tunnel.
    New(Registration),
    /// The same tunnel runs already.
    Running(State),
}

/// Registers this process as the tunnel `plan` describes, unless that tunnel runs already.
///
/// `start` is the start lock a background start took for us; `None`: take it here.
pub async fn register(
    plan: &Plan,
    paths: Paths,
    start: Option<File>,
    detached: bool,
) -> anyhow::Result<Registered> {
    let start = match start {
        Some(lock) => Some(lock),
        None if detached => None,
        None => Some(paths.lock_start().await?),
    };
    if !detached {
        if let Some(state) = paths.running().await {
            return Ok(Registered::Running(state));
        }
    }
    let lock_path = paths.file("lock");
    let deadline = tokio::time::Instant::now() + LOCK_BRIEF;
    let alive = loop {
        match try_lock(&lock_path)
            .with_context(|| format!("could not lock {}", lock_path.display()))?
        {
            Some(file) => break file,
            None if tokio::time::Instant::now() < deadline => tokio::time::sleep(LOCK_POLL).await,
            None => anyhow::bail!("tunnel `{}` is already running", paths.id),
        }
    };
    let state = State {
        id: paths.id.clone(),
        target: plan.target_label.clone(),
        preset: plan.request.preset.clone(),
        via: (!plan.via().is_empty()).then(|| plan.via().join(",")),
        context: plan.request.cluster.context.clone(),
        namespace: plan.request.cluster.namespace.clone(),
        pid: std::process::id(),
        detached,
        state: Phase::Starting,
        since: now(),
        forwards: Vec::new(),
        error: None,
    };
    let reg = Registration {
        paths,
        _alive: alive,
        start: Mutex::new(start),
        state: Mutex::new(state),
        batch: Mutex::new(Vec::new()),
        memory: ports::Key::of(plan),
    };
    reg.save();
    Ok(Registered::New(reg))
}

impl crate::output::Follower for Registration {
    fn on_event(&self, event: &Event) {
        Registration::on_event(self, event);
    }

    fn set_target(&self, target: &str) {
        Registration::set_target(self, target);
    }

    fn on_ready(&self) -> bool {
        Registration::on_ready(self);
        self.detached()
    }
}

impl Registration {
    /// The tunnel's id.
    pub fn id(&self) -> &str {
        &self.paths.id
    }

    /// Whether this is a background tunnel.
    pub fn detached(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.detached)
    }

    fn save(&self) {
        let Ok(state) = self.state.lock() else { return };
        if let Ok(bytes) = serde_json::to_vec_pretty(&*state) {
            if let Err(e) = crate::dirs::write_private(&self.paths.state(), &bytes) {
                tracing::warn!("could not save the tunnel's state: {e:#}");
            }
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        if let Ok(mut state) = self.state.lock() {
            change(&mut state);
        }
        self.save();
    }

    /// Names the target as `ls` shows it, once it is known.
    pub fn set_target(&self, target: &str) {
        self.update(|s| s.target = target.to_string());
    }

    /// Follows what the tunnel reports.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::Ready {
                pod,
                local,
                remote_port,
                url,
                agent,
                ..
            } => {
                if let Ok(mut batch) = self.batch.lock() {
                    batch.push(Forward {
                        local: local.clone(),
                        remote_port: *remote_port,
                        pod: pod.clone(),
                        url: url.clone(),
                        agent: agent.map(str::to_string),
                    });
                }
            }
            Event::Reconnecting { reason } => self.update(|s| {
                s.state = Phase::Reconnecting;
                s.since = now();
                s.error = Some(reason.clone());
            }),
            Event::PodReplaced { pod, url } => self.update(|s| {
                for f in &mut s.forwards {
                    f.pod = pod.clone();
                    if url.is_some() {
                        f.url = url.clone();
                    }
                }
            }),
            Event::Error { message, .. } => self.update(|s| s.error = Some(message.clone())),
            Event::TimeLeft { .. } | Event::Closed => {}
        }
    }

    /// Every forward of the batch is ready: save them, remember their ports, let a waiting
    /// start through.
    pub fn on_ready(&self) {
        let forwards = self
            .batch
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default();
        ports::remember(&self.memory, &forwards);
        self.update(|s| {
            s.state = Phase::Ready;
            s.since = now();
            s.error = None;
            s.forwards = forwards;
        });
        if let Ok(mut start) = self.start.lock() {
            start.take();
        }
    }

    /// The tunnel ends: a clean stop leaves nothing; a failure after ready stays for `ls` to
    /// show once.
    pub fn finish(&self, result: &anyhow::Result<()>) {
        let was_ready = self.state.lock().is_ok_and(|s| !s.forwards.is_empty());
        match result {
            Err(e) if was_ready => self.update(|s| {
                s.state = Phase::Failed;
                s.since = now();
                s.error = Some(format!("{e:#}"));
            }),
            _ => self.paths.clean(),
        }
    }
}

/// Prints a running tunnel's results as a new start would have printed them.
pub fn print_running(state: &State, out: &crate::output::Output) {
    out.note(&format!(
        "already running as `{}` since {} (`podtun stop {}` stops it)",
        state.id,
        commands::ago(state.since),
        state.id
    ));
    for f in &state.forwards {
        out.event(&Event::Ready {
            target: state.target.clone(),
            pod: f.pod.clone(),
            local: f.local.clone(),
            remote_port: f.remote_port,
            url: f.url.clone(),
            agent: match f.agent.as_deref() {
                Some("podtun") => Some("podtun"),
                Some("kubectl") => Some("kubectl"),
                _ => None,
            },
        });
    }
}
