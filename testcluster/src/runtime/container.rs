//! One container's life: start its process, collect its output, wait for it, and restart it by
//! the pod's restart policy with CrashLoopBackOff between runs.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tracing::{debug, info};

use super::process::spawn;
use super::{image, probe, PodRuntime};
use crate::cluster::Cluster;
use crate::logs::{self, LogBuffer};

/// First CrashLoopBackOff delay, doubled per crash up to `MAX_BACKOFF`. The kubelet uses
/// 10 s → 5 min; these are shorter so tests see several restarts, but still real waits.
pub(super) const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A run this long resets the backoff, as a container that ran fine for a while is not looping.
const BACKOFF_RESET: Duration = Duration::from_secs(20);

/// How a run ended.
enum Outcome {
    Exited { code: i32, reason: &'static str },
    StartFailed(String),
    Stopped,
}

pub(super) async fn run(cluster: Arc<Cluster>, rt: Arc<PodRuntime>, idx: usize) {
    let Some(spec) = rt
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.get(idx))
        .cloned()
    else {
        return;
    };
    let policy = rt
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    if let Err(why) = image::launch(&cluster.images, &spec) {
        image::fail(&cluster, &rt, idx, why).await;
        return;
    }
    let mut backoff = Duration::ZERO;
    let mut run_number = 0u32;
    loop {
        let started = Instant::now();
        let outcome = run_once(&cluster, &rt, idx, &spec, run_number).await;
        run_number += 1;
        let restart = match &outcome {
            Outcome::Stopped => false,
            Outcome::Exited { code, .. } => match policy.as_str() {
                "Never" => false,
                "OnFailure" => *code != 0,
                _ => true,
            },
            Outcome::StartFailed(_) => policy != "Never",
        };
        {
            let mut state = rt.lock();
            let c = &mut state.containers[idx];
            match &outcome {
                Outcome::Exited { code, reason } => c.set_terminated(*code, reason, None),
                Outcome::StartFailed(msg) if restart => {
                    c.set_waiting("RunContainerError", Some(msg.clone()))
                }
                Outcome::StartFailed(msg) => c.set_terminated(128, "StartError", Some(msg.clone())),
                Outcome::Stopped => {}
            }
            c.finished = !restart && !matches!(outcome, Outcome::Stopped);
        }
        rt.publish(&cluster);
        if !restart {
            return;
        }
        if started.elapsed() > BACKOFF_RESET {
            backoff = Duration::ZERO;
        }
        if !backoff.is_zero() {
            if matches!(outcome, Outcome::Exited { .. }) {
                let message = format!(
                    "back-off {}s restarting failed container={} pod={}",
                    backoff.as_secs(),
                    spec.name,
                    rt.full_name()
                );
                rt.lock().containers[idx].set_waiting("CrashLoopBackOff", Some(message));
                rt.publish(&cluster);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = rt.cancel.cancelled() => return,
            }
        }
        if rt.cancel.is_cancelled() {
            return;
        }
        if matches!(outcome, Outcome::Exited { .. }) {
            rt.lock().containers[idx].status.restart_count += 1;
        }
        backoff = (backoff * 2).clamp(INITIAL_BACKOFF, MAX_BACKOFF);
    }
}

/// Starts the container's process once and waits for it to end.
async fn run_once(
    cluster: &Arc<Cluster>,
    rt: &Arc<PodRuntime>,
    idx: usize,
    spec: &Container,
    run_number: u32,
) -> Outcome {
    if rt.cancel.is_cancelled() {
        return Outcome::Stopped;
    }
    let mut child = match spawn(cluster, rt, spec, run_number) {
        Ok(child) => child,
        Err(message) => {
            info!(pod = %rt.key.name, container = %spec.name, "{message}");
            return Outcome::StartFailed(message);
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let log = LogBuffer::new();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(logs::collect(out, log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(logs::collect(err, log.clone())));
    }
    {
        let mut state = rt.lock();
        let logs = &mut state.logs[idx];
        logs.previous = logs.current.replace(log.clone());
        state.pids[idx] = pid;
        let container_id = format!("containerd://{}", crate::names::token());
        let c = &mut state.containers[idx];
        if let Some(last) = c.status.state.take().filter(|s| s.terminated.is_some()) {
            c.status.last_state = Some(last);
        }
        c.set_running(container_id);
        let image = crate::reference::parse(spec.image.as_deref().unwrap_or(""));
        c.status.image = image.full();
        c.status.image_id = image.image_id();
        c.status.ready = spec.readiness_probe.is_none();
    }
    if let Some(pid) = pid {
        cluster.pods.pgids().insert(pid);
    }
    rt.publish(cluster);
    debug!(pod = %rt.key.name, container = %spec.name, ?pid, "container started");

    let probe_stop = rt.cancel.child_token();
    if let (Some(probe), Some(network)) = (spec.readiness_probe.clone(), rt.network.get()) {
        let prober = probe::Prober {
            probe,
            ports: spec.ports.clone().unwrap_or_default(),
            network: network.clone(),
        };
        let set_ready = {
            let cluster = cluster.clone();
            let rt = rt.clone();
            move |ready: bool| {
                let changed = {
                    let mut state = rt.lock();
                    let c = &mut state.containers[idx];
                    let running = c.status.state.as_ref().is_some_and(|s| s.running.is_some());
                    let changed = c.status.ready != (ready && running);
                    c.status.ready = ready && running;
                    changed
                };
                if changed {
                    rt.publish(&cluster);
                }
            }
        };
        tokio::spawn(prober.run(probe_stop.clone(), set_ready));
    }

    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = rt.cancel.cancelled() => {
            let grace = *rt.grace.lock().unwrap_or_else(|e| e.into_inner());
            terminate(&mut child, pid, grace).await
        }
    };
    probe_stop.cancel();
    if let Some(pid) = pid {
        // The leader is gone; whatever it left behind in its group goes too.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        cluster.pods.pgids().remove(&pid);
    }
    for reader in readers {
        let _ = reader.await;
    }
    log.close();
    rt.lock().pids[idx] = None;
    if rt.cancel.is_cancelled() {
        return Outcome::Stopped;
    }
    let code = status.map(exit_code).unwrap_or(137);
    info!(pod = %rt.key.name, container = %spec.name, code, "container exited");
    Outcome::Exited {
        code,
        reason: if code == 0 { "Completed" } else { "Error" },
    }
}

/// SIGTERM to the group, then SIGKILL once `grace` has passed.
async fn terminate(child: &mut Child, pid: Option<i32>, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = pid {
        let signal = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        let _ = killpg(Pid::from_raw(pid), signal);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            child.wait().await.ok()
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}
