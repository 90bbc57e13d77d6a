//! The running tunnel's side: it holds the lock and keeps its state file current.

use std::fs::File;
use std::sync::Mutex;

use anyhow::Context;

use super::commands;
use super::paths::{try_lock, Paths, LOCK_BRIEF, LOCK_POLL};
use super::ports;
use super::state::{now, Forward, Phase, State};
use crate::output::Event;
use crate::plan::Plan;

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
            // `ls` and `stop` name a launched pod as any other.
            Event::Launched { pod, .. } => self.set_target(&format!("pod/{pod}")),
            Event::TimeLeft { .. } | Event::Deleted { .. } | Event::Kept { .. } | Event::Closed => {
            }
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
