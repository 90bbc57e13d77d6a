//! The local listeners: binding (the port the user named, else the remote port, else any) and
//! their connections for the shared accept loop (TCP_NODELAY, a span per peer).

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, Context};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{info_span, Span};

use crate::error::hinted;
use crate::net::accept::Accept;

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

impl Accept for TcpListener {
    type Conn = TcpStream;

    async fn accept(&self) -> std::io::Result<Option<(TcpStream, Span)>> {
        let (conn, peer) = TcpListener::accept(self).await?;
        conn.set_nodelay(true).ok();
        Ok(Some((conn, info_span!("conn", %peer))))
    }
}
