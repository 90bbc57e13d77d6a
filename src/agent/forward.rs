//! A forward: the cluster side up, the sockets served, the target followed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use super::events::Events;
use super::serve::{opened, Opened, SHUTDOWN_GRACE};
use super::socket;
use crate::cluster::discover::Preset;
use crate::cluster::tunnel::{Spec, Tunnel};
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
    let preset = spec.preset;
    let progress = |m: &str| {
        events.emit(&ClusterEvent::Progress {
            message: m.to_string(),
        })
    };
    // Several pods and no TARGET: the laptop's terminal chooses.
    let choose = |offered: Candidates| -> BoxFuture<'static, anyhow::Result<String>> {
        events.emit(&ClusterEvent::Candidates(offered.clone()));
        let answers = answers.clone();
        Box::pin(async move {
            let answer =
                tokio::time::timeout(PICK_TIMEOUT, async { answers.lock().await.recv().await })
                    .await;
            match answer {
                Ok(Some(Pick { pick: Some(name) })) => Ok(name),
                Ok(Some(Pick { pick: None })) => {
                    let sub = crate::cluster::pick::subcommand(&offered.preset);
                    Err(crate::cluster::pick::several(&offered, &|name| {
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
    };
    let tunnel = tokio::select! {
        tunnel = Tunnel::start_with(&req.cluster, spec, &progress, &choose) => tunnel?,
        () = stop.cancelled() => return Ok(()),
    };
    events.emit(&tunnel.resolved_event());
    // Jupyter's URL first (a server stuck before it has no port either, and its log says
    // why), then a listener on every port; the laptop hears of the URL once it listens.
    let ready = async {
        let jupyter = match preset {
            Preset::Jupyter => Some(tunnel.jupyter(&progress).await?),
            _ => None,
        };
        tunnel.wait_listening(&progress).await?;
        Ok::<_, anyhow::Error>(jupyter)
    };
    let jupyter = tokio::select! {
        ready = ready => ready?,
        () = stop.cancelled() => return Ok(()),
    };

    let uid = socket::own_uid()?;
    let dir = socket::private_dir(uid)?;
    socket::remove_stale(&dir).await;
    let (mut files, listeners) = socket::bind(&dir, tunnel.ports.len())?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    for (listener, port) in listeners.into_iter().zip(&tunnel.ports) {
        let (tunnel, remote) = (tunnel.clone(), port.remote);
        let listener = socket::Private { listener, uid };
        let stop = cancel.clone();
        let streams = tracker.clone();
        crate::net::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
            let (tunnel, stop, streams) = (tunnel.clone(), stop.clone(), streams.clone());
            async move {
                match opened(conn, &stop).await? {
                    Opened::Stream(conn) => tunnel.forward(remote, conn).await.map(|_| ()),
                    Opened::Mux(conn) => {
                        crate::proto::mux::serve(conn, &stop, |stream| {
                            let tunnel = tunnel.clone();
                            streams.spawn(
                                async move {
                                    if let Err(e) = tunnel.forward(remote, stream).await {
                                        debug!("connection ended: {e:#}");
                                    }
                                }
                                .in_current_span(),
                            );
                        })
                        .await;
                        Ok(())
                    }
                    Opened::Unused => Ok(()),
                }
            }
        });
    }
    let sockets = files
        .paths()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    info!(?sockets, "listening");
    events.emit(&ClusterEvent::Listening { sockets });

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
    // Stop accepting; the listeners are gone, so their files go too. Open connections get a
    // short grace.
    cancel.cancel();
    files.remove();
    crate::net::shutdown::drain(&cancel, &tracker, SHUTDOWN_GRACE).await;
    result
}
