//! One connection through a port-forward pair from the pool, its error channel raced against
//! the copy so that "connection refused" in the pod becomes a message, not a bare reset.

use std::sync::Mutex;

use anyhow::anyhow;
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::pool::Pool;
use crate::net::splice::{splice_holding_eof, Moved};

/// Forwards one client connection to `pod` on the pool's port until either side is done.
pub async fn forward<C>(pool: &Pool, pod: &str, client: C) -> anyhow::Result<Moved>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (ns, port) = (pool.namespace(), pool.port());
    let (stream, warmth) = pool.take(pod).await?;
    // Fused: it may be polled once more after resolving with `None`.
    let refused = stream.error().fuse();
    let copy = splice_holding_eof(client, stream);
    tokio::pin!(copy, refused);
    let failed = |message: String| {
        let err = anyhow!("port-forward to `{ns}/{pod}:{port}` failed: {message}");
        report(&err);
        Err(err)
    };
    tokio::select! {
        biased;
        Some(message) = &mut refused => failed(message),
        moved = &mut copy => {
            // The kubelet's error ends the pair's data too: prefer its words to a bare EOF.
            if let Some(Some(message)) = (&mut refused).now_or_never() {
                return failed(message);
            }
            match moved {
                Ok(moved) => {
                    debug!(up = moved.up, down = moved.down, %warmth, "connection closed");
                    Ok(moved)
                }
                // A reset from either application ends this connection only.
                Err(e) => {
                    debug!(%e, %warmth, "connection to `{ns}/{pod}:{port}` ended");
                    Err(anyhow!(e).context(format!("connection to `{ns}/{pod}:{port}` failed")))
                }
            }
        }
    }
}

/// Logs a connection the kubelet could not make: a warning the first time a message is seen,
/// debug after that. A client retrying a port nothing listens on (every 250 ms, say) would
/// otherwise print a line per attempt.
pub(super) fn report(err: &anyhow::Error) {
    static LAST: Mutex<String> = Mutex::new(String::new());
    let text = format!("{err:#}");
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if *last == text {
        debug!("{text}");
    } else {
        warn!("{text}");
        *last = text;
    }
}
