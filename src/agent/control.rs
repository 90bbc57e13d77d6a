//! The control loop: hello, request, work, until told to stop.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::delete;
use super::events::Events;
use super::forward::forward;
use super::hello::read_hello;
use super::pipe;
use super::stdin::{read_stdin, watch_heartbeat};
use crate::cli::AgentArgs;
use crate::error::UsageError;
use crate::proto::wire::{Check, ClusterEvent, Kind, PROTOCOL, VERSION};

/// Runs `podtun agent [pipe SOCKET | delete-pod …]` until it is done or `shutdown` resolves.
pub async fn run(args: &AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match args.rest.as_slice() {
        [] => serve(shutdown).await,
        [cmd, socket] if cmd == "pipe" => pipe::run(Path::new(socket)).await,
        [cmd, rest @ ..] if cmd == "delete-pod" => delete::run(rest, shutdown).await,
        other => Err(UsageError(format!(
            "unknown agent command `{}` (expected nothing, `pipe SOCKET`, or `{}`)",
            other.join(" "),
            delete::USAGE
        ))
        .into()),
    }
}

/// The control loop: hello, request, cluster, sockets, events, until told to stop.
async fn serve(shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let events = Events { stop: stop.clone() };
    events.emit(&ClusterEvent::Hello {
        version: VERSION.to_string(),
        protocol: PROTOCOL,
    });
    let (first, first_rx) = oneshot::channel();
    let heard = Arc::new(AtomicU64::new(0));
    let (answers_tx, answers) = mpsc::unbounded_channel();
    read_stdin(first, answers_tx, stop.clone(), heard.clone());
    let hello = read_hello(first_rx).await.map_err(|e| events.fail(e))?;
    if let Some(secs) = hello.heartbeat_secs.filter(|s| *s > 0) {
        tokio::spawn(watch_heartbeat(
            Duration::from_secs(secs),
            heard,
            stop.clone(),
        ));
    }
    let signals = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => info!("stopping on a signal"),
                () = hangup() => info!("stopping on SIGHUP"),
                () = stop.cancelled() => {}
            }
            stop.cancel();
        }
    };
    let answers = Arc::new(tokio::sync::Mutex::new(answers));
    let work = async {
        match hello.kind {
            Kind::Forward => forward(&hello.request, &events, &answers, &stop).await,
            Kind::Doctor => {
                let emit = |check: Check| events.emit(&ClusterEvent::Check(check));
                crate::cluster::doctor::run(&hello.request, &emit).await;
                Ok(())
            }
        }
    };
    tokio::pin!(work);
    let finished = tokio::select! {
        res = &mut work => Some(res),
        () = signals => None,
    };
    let result = match finished {
        Some(res) => res,
        // Told to stop: the work winds down on its own (grace for open connections).
        None => work.await,
    };
    result.map_err(|e| events.fail(e))
}

/// Resolves on SIGHUP (the SSH session hung up).
async fn hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            hup.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
