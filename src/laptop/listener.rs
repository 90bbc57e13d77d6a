//! The local listeners and their accept loops: one task per accepted connection, errors logged
//! and dropped without stopping the listener.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, Context};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use crate::error::hinted;

/// Binds the local end of a forward.
///
/// `wanted` (from `-p` or `LOCAL:`) must be free, else the error says so. Without it, the
/// remote port number is tried first (so Jupyter stays on 8888 and redis on 6379), then any
/// free port.
pub fn bind(address: IpAddr, wanted: Option<u16>, remote: u16) -> anyhow::Result<TcpListener> {
    if let Some(port) = wanted {
        return bind_one(SocketAddr::new(address, port)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                hinted(
                    anyhow!("local port {port} on {address} is in use"),
                    format!("pick another with -p, or stop what listens there (`lsof -i :{port}`)"),
                )
            } else {
                anyhow!(e).context(format!(
                    "could not listen on {}",
                    SocketAddr::new(address, port)
                ))
            }
        });
    }
    bind_one(SocketAddr::new(address, remote))
        .or_else(|_| bind_one(SocketAddr::new(address, 0)))
        .with_context(|| format!("could not listen on {address}"))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Lets podtun restart on the same port while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until `cancel` fires; each runs `handle` in its own task on `tracker`.
pub fn serve<F, Fut>(
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: &TaskTracker,
    handle: F,
) where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let inner = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (conn, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: keep the listener, let the load pass.
                    warn!(%e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            conn.set_nodelay(true).ok();
            let task = handle(conn);
            inner.spawn(
                async move {
                    debug!("accepted");
                    if let Err(e) = task.await {
                        debug!("connection ended: {e:#}");
                    }
                }
                .instrument(info_span!("conn", %peer)),
            );
        }
    });
}
