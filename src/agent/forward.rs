//! A forward: the cluster side up, the sockets served, the target followed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::events::Events;
use super::serve::Sockets;
use crate::cluster::launch::{self, Around, ThisMachine};
use crate::cluster::tunnel::{Spec, Tunnel};
use crate::cluster::{client, pick};
use crate::proto::wire::{Candidates, ClusterEvent, Pick, Request};

/// Bound on the user's choice among several pods.
const PICK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The laptop's answers, read off stdin.
pub(super) type Answers = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pick>>>;

/// Brings the cluster side up, listens, reports, and serves until `stop` or a failure.
pub(super) async fn forward(
    req: &Request,
    events: &Events,
    answers: &Answers,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = Spec::from_request(req)?;
    let progress = |m: &str| {
        events.emit(&ClusterEvent::Progress {
            message: m.to_string(),
        })
    };
    // Several pods and no TARGET: the laptop's terminal chooses.
    let choose = |offered: Candidates| ask_laptop(events, answers, offered);
    let start = async {
        progress("connecting to the cluster");
        let cluster = client::connect(&req.cluster).await?;
        let Some(launch) = &req.launch else {
            return Tunnel::start_on(cluster, spec, &progress, &choose).await;
        };
        let ns = cluster.namespace.clone();
        // The laptop deletes the pod (through its watchdog here) whatever happens next.
        let launched = |pod: &str| {
            events.emit(&ClusterEvent::Launched {
                namespace: ns.clone(),
                pod: pod.to_string(),
            })
        };
        let shell = ThisMachine {
            place: String::new(),
        };
        let around = Around {
            shell: &shell,
            progress: &progress,
            choose: &choose,
            launched: &launched,
        };
        launch::start_launched(cluster, launch, spec, &around).await
    };
    let tunnel = tokio::select! {
        tunnel = start => tunnel?,
        () = stop.cancelled() => return Ok(()),
    };
    events.emit(&tunnel.resolved_event());
    // The laptop hears of Jupyter's URL once the agent listens.
    let jupyter = tokio::select! {
        ready = tunnel.ready(&progress) => ready?,
        () = stop.cancelled() => return Ok(()),
    };
    let sockets = Sockets::serve(&tunnel).await?;
    let paths = sockets.paths();
    info!(sockets = ?paths, "listening");
    events.emit(&ClusterEvent::Listening { sockets: paths });

    let follow = async {
        if let Some(jupyter) = jupyter {
            events.emit(&ClusterEvent::Token(jupyter));
        }
        let emit = |ev: ClusterEvent| events.emit(&ev);
        tunnel.supervise(&emit).await
    };
    let result = tokio::select! {
        res = follow => res,
        () = stop.cancelled() => Ok(()),
    };
    sockets.close().await;
    result
}

/// Shows the laptop the pods that fit and waits for its choice.
fn ask_laptop(
    events: &Events,
    answers: &Answers,
    offered: Candidates,
) -> BoxFuture<'static, anyhow::Result<String>> {
    events.emit(&ClusterEvent::Candidates(offered.clone()));
    let answers = answers.clone();
    Box::pin(async move {
        let answer =
            tokio::time::timeout(PICK_TIMEOUT, async { answers.lock().await.recv().await }).await;
        match answer {
            Ok(Some(Pick { pick: Some(name) })) => Ok(name),
            Ok(Some(Pick { pick: None })) => {
                let sub = pick::subcommand(&offered.preset);
                Err(pick::several(&offered, &|name| {
                    format!("podtun {sub} {name} --via …")
                }))
            }
            Ok(None) => Err(anyhow!("the laptop went away before choosing a pod")),
            Err(_) => Err(anyhow!(
                "no pod was chosen within {}s",
                PICK_TIMEOUT.as_secs()
            )),
        }
    })
}
