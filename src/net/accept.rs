//! The accept loop both sides share: one task per accepted connection on a `TaskTracker`, a
//! failing connection logged and dropped without stopping the listener, accept errors (EMFILE
//! and friends) paced instead of spun on.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument, Span};

/// Pause after a failed accept, so a full file table is waited out rather than spun on.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A listener the loop can take connections from: the laptop's TCP listener, the agent's
/// private Unix socket.
pub trait Accept: Send + 'static {
    /// What one accepted connection is.
    type Conn: Send + 'static;
    /// The next connection and the span its task runs in; `None` for one turned away.
    fn accept(&self) -> impl Future<Output = std::io::Result<Option<(Self::Conn, Span)>>> + Send;
}

/// Accepts connections until `cancel` fires; each runs `handle` in its own task on `tracker`.
pub fn serve<L, F, Fut>(listener: L, cancel: CancellationToken, tracker: &TaskTracker, handle: F)
where
    L: Accept,
    F: Fn(L::Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (conn, span) = match accepted {
                Ok(Some(accepted)) => accepted,
                Ok(None) => continue,
                Err(e) => {
                    warn!(%e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let task = handle(conn);
            inner.spawn(
                async move {
                    debug!("accepted");
                    if let Err(e) = task.await {
                        debug!("connection ended: {e:#}");
                    }
                }
                .instrument(span),
            );
        }
    });
}
