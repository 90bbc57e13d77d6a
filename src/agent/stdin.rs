//! What the laptop sends on stdin after its request: heartbeats and answers.

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::proto::wire::Pick;

/// Missed heartbeats after which the agent gives up on the laptop.
const HEARTBEATS_MISSED: u32 = 3;

/// Longest first line accepted from the laptop.
const MAX_HELLO: u64 = 64 * 1024;

/// Reads stdin on a thread of its own (tokio's stdin is a blocking thread too; the exit ends
/// it): the first line goes to `first`, then each line is a heartbeat (empty) or an answer
/// (a [`Pick`], sent to `answers`); the end of stdin stops the agent.
pub(super) fn read_stdin(
    first: oneshot::Sender<std::io::Result<String>>,
    answers: mpsc::UnboundedSender<Pick>,
    stop: CancellationToken,
    heard: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        let read = (&mut stdin)
            .take(MAX_HELLO)
            .read_line(&mut line)
            .map(|_| line);
        first.send(read).ok();
        loop {
            let mut line = String::new();
            match (&mut stdin).take(MAX_HELLO).read_line(&mut line) {
                Ok(0) => {
                    info!("stdin closed: the laptop went away");
                    break;
                }
                // Any line (heartbeats are empty ones): the laptop is still there.
                Ok(_) => {
                    heard.fetch_add(1, Ordering::Relaxed);
                    let text = line.trim();
                    if text.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Pick>(text) {
                        Ok(pick) => {
                            answers.send(pick).ok();
                        }
                        Err(e) => warn!(%e, "unreadable line from the laptop"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    info!(%e, "stdin failed: the laptop went away");
                    break;
                }
            }
        }
        stop.cancel();
    });
}

/// Stops the agent when the laptop's heartbeats stop: a link that died without a FIN leaves
/// sshd (without ClientAlive) and so the agent waiting for hours otherwise.
pub(super) async fn watch_heartbeat(
    every: Duration,
    heard: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut seen = heard.load(Ordering::Relaxed);
    let mut silent = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = heard.load(Ordering::Relaxed);
        if now == seen {
            silent += every;
        } else {
            (seen, silent) = (now, Duration::ZERO);
        }
        if silent >= every * HEARTBEATS_MISSED {
            info!(
                silent_secs = silent.as_secs(),
                "no heartbeat from the laptop: the link is gone"
            );
            stop.cancel();
            return;
        }
    }
}
