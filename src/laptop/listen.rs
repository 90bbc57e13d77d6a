//! The local listeners: binding (the port the user named, else the remote port, else any) and
//! their connections for the shared accept loop (TCP_NODELAY, a span per peer).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Span};

use super::link::{Slot, Waiter};
use crate::error::hinted;
use crate::net::accept::Accept;
use crate::plan::Plan;
use crate::proto::wire::Resolved;

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

/// How long open connections may finish after Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Binds the local ports the user named, in the order of the requested ports.
pub fn bind_named(plan: &Plan) -> anyhow::Result<Vec<Option<TcpListener>>> {
    if let Some(port) = plan.local_port {
        return Ok(vec![Some(bind(plan.address, Some(port), port)?)]);
    }
    plan.spec
        .ports
        .iter()
        .map(|p| p.local.map(|l| bind(plan.address, Some(l), l)).transpose())
        .collect()
}

/// One listener per forwarded port, in order, reusing the ones bound early.
pub fn bind_all(
    plan: &Plan,
    resolved: &Resolved,
    early: Vec<Option<TcpListener>>,
) -> anyhow::Result<Vec<TcpListener>> {
    let ports = &resolved.ports;
    if plan.local_port.is_some() && ports.len() > 1 {
        let list: Vec<String> = ports.iter().map(|p| p.remote.to_string()).collect();
        let first = ports.first().map(|p| p.remote).unwrap_or_default();
        return Err(crate::error::usage(
            format!(
                "pod `{}/{}` has {} ports ({}), but -p sets the local port of one",
                resolved.namespace,
                resolved.pod,
                ports.len(),
                list.join(", ")
            ),
            Some(format!(
                "name the ports to forward as LOCAL:REMOTE, e.g. `podtun forward pod/{} 9000:{first}`",
                resolved.pod
            )),
        ));
    }
    let mut early = early.into_iter();
    ports
        .iter()
        .map(|port| match early.next().flatten() {
            Some(l) => Ok(l),
            None => match port.local.or_else(|| recall(plan, port.remote)) {
                // A remembered port is a preference: taken, the usual choice applies.
                Some(p) if port.local.is_none() => bind(plan.address, Some(p), p)
                    .or_else(|_| bind(plan.address, None, port.remote)),
                _ => bind(plan.address, port.local, port.remote),
            },
        })
        .collect()
}

/// The local port this tunnel used last time for `remote`.
fn recall(plan: &Plan, remote: u16) -> Option<u16> {
    crate::tunnels::ports::recall(&crate::tunnels::ports::Key::of(plan), remote)
}

/// The address users should type: a wildcard listener is reached on loopback.
pub fn reachable(local: SocketAddr) -> SocketAddr {
    match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port())
        }
        _ => local,
    }
}

/// The laptop's ports, bound once and kept across reconnections: each connection goes to the
/// current link of `T`, waiting (bounded) while podtun reconnects.
pub struct Locals<T> {
    slot: Slot<T>,
    addrs: Vec<SocketAddr>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl<T: Send + Sync + 'static> Locals<T> {
    /// No ports yet; links to `what` (`the login host`) carry their connections.
    pub fn new(what: &'static str) -> Locals<T> {
        Locals {
            slot: Slot::new(what),
            addrs: Vec::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// The bound addresses, in port order; empty until [`Locals::serve`].
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether no port is bound yet: nothing was reported ready so far.
    pub fn first(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Serves `listeners` (once): connection `conn` on port `index` goes to
    /// `forward(link, index, conn)` with the link current then.
    pub fn serve<F, Fut>(&mut self, listeners: Vec<TcpListener>, forward: F) -> anyhow::Result<()>
    where
        F: Fn(Arc<T>, usize, TcpStream) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut addrs = Vec::with_capacity(listeners.len());
        for listener in &listeners {
            addrs.push(listener.local_addr()?);
        }
        for (index, listener) in listeners.into_iter().enumerate() {
            let (waiter, forward): (Waiter<T>, F) = (self.slot.waiter(), forward.clone());
            crate::net::accept::serve(listener, self.cancel.clone(), &self.tracker, move |conn| {
                let (mut waiter, forward) = (waiter.clone(), forward.clone());
                async move { forward(waiter.link().await?, index, conn).await }
            });
        }
        self.addrs = addrs;
        Ok(())
    }

    /// Connections go to `link` from now on.
    pub fn route(&self, link: Arc<T>) {
        self.slot.set(link);
    }

    /// The link was lost: connections wait for the next one.
    pub fn unroute(&self) {
        self.slot.clear();
    }

    /// Stops accepting and lets open connections finish for [`SHUTDOWN_GRACE`].
    pub async fn close(&self) {
        crate::net::shutdown::drain(&self.cancel, &self.tracker, SHUTDOWN_GRACE).await;
    }
}
