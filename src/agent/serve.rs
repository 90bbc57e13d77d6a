//! The agent's sockets, served into a tunnel.
//! A connection is one stream or many, told by its first byte.

use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

use super::socket::{self, SocketFiles};
use crate::cluster::tunnel::Tunnel;
use crate::proto::wire::{MUX_OPEN, STREAM_OPEN};

/// How long open connections may finish once the agent is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One private socket per forwarded port, served into a tunnel until [`Sockets::close`].
pub(super) struct Sockets {
    files: SocketFiles,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Sockets {
    /// Removes stale sockets, binds one per port of `tunnel` and serves each into it.
    pub(super) async fn serve(tunnel: &Tunnel) -> anyhow::Result<Sockets> {
        let uid = socket::own_uid()?;
        let dir = socket::private_dir(uid)?;
        socket::remove_stale(&dir).await;
        let (files, listeners) = socket::bind(&dir, tunnel.ports.len())?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        for (listener, port) in listeners.into_iter().zip(&tunnel.ports) {
            let (tunnel, remote) = (tunnel.clone(), port.remote);
            let listener = socket::Private { listener, uid };
            let stop = cancel.clone();
            let streams = tracker.clone();
            crate::net::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
                let (tunnel, stop, streams) = (tunnel.clone(), stop.clone(), streams.clone());
                connection(conn, tunnel, remote, stop, streams)
            });
        }
        Ok(Sockets {
            files,
            cancel,
            tracker,
        })
    }

    /// The sockets' paths, as the laptop is told them.
    pub(super) fn paths(&self) -> Vec<String> {
        self.files
            .paths()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    /// Stops accepting; the listeners are gone, so their files go too. Open connections get a
    /// short grace.
    pub(super) async fn close(mut self) {
        self.cancel.cancel();
        self.files.remove();
        crate::net::shutdown::drain(&self.cancel, &self.tracker, SHUTDOWN_GRACE).await;
    }
}

/// Serves one connection to a socket: a single stream to `remote`, or many multiplexed.
async fn connection(
    conn: UnixStream,
    tunnel: Tunnel,
    remote: u16,
    stop: CancellationToken,
    streams: TaskTracker,
) -> anyhow::Result<()> {
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

/// What a connection to an agent socket turned out to be, by its first byte.
#[derive(Debug)]
enum Opened<C> {
    /// [`STREAM_OPEN`]: one connection to the pod.
    Stream(C),
    /// [`MUX_OPEN`]: many, multiplexed.
    Mux(C),
    /// Closed (or the agent stopped) before its first byte.
    Unused,
}

/// Waits for a new socket connection's first byte. The pod side is opened only after it.
async fn opened<C>(mut conn: C, stop: &CancellationToken) -> anyhow::Result<Opened<C>>
where
    C: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    let read = tokio::select! {
        read = conn.read(&mut first) => read.context("could not read the connection's first byte")?,
        () = stop.cancelled() => return Ok(Opened::Unused),
    };
    match (read, first[0]) {
        (0, _) => Ok(Opened::Unused),
        (_, STREAM_OPEN) => Ok(Opened::Stream(conn)),
        (_, MUX_OPEN) => Ok(Opened::Mux(conn)),
        (_, other) => Err(anyhow!(
            "a connection to the agent's socket began with byte {other:#04x}, not podtun's; closed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_socket_connection_waits_for_the_laptops_first_byte() {
        let stop = CancellationToken::new();
        // In use: the byte is taken, what follows is left for the pod.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"+PING\r\n").await.unwrap();
        let Opened::Stream(mut conn) = opened(agent, &stop).await.unwrap() else {
            panic!("a single stream");
        };
        let mut rest = [0u8; 6];
        conn.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PING\r\n");
        // Closed before its first byte: nothing to forward.
        let (laptop, agent) = tokio::io::duplex(64);
        drop(laptop);
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Unused
        ));
        // Multiplexed.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"*").await.unwrap();
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Mux(_)
        ));
        // Another protocol: refused.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"PING\r\n").await.unwrap();
        let err = opened(agent, &stop).await.unwrap_err();
        assert!(format!("{err:#}").contains("0x50"), "{err:#}");
        // Idle when the agent stops: let go at once.
        let (_laptop, agent) = tokio::io::duplex(64);
        stop.cancel();
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Unused
        ));
    }
}
