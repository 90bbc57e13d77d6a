//! How local connections reach the agent's sockets on the login host: one SSH channel per
//! socket, `direct-streamlocal@openssh.com`, or `podtun agent pipe SOCKET` over an exec channel
//! when the server refuses stream-local forwarding, and every local connection to that socket
//! a stream multiplexed over it ([`crate::proto::mux`]).
//!
//! Opening a stream costs no round trip and no work in sshd: the channel is opened once, as
//! soon as the agent's sockets are known, and again only if it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::laptop::ssh::exec;
use crate::laptop::ssh::{OpenError, SshSession, Stream};
use crate::net::splice::splice;
use crate::proto::mux::{Mux, MuxStream};
use crate::proto::wire::MUX_OPEN;

/// The way to the agent's sockets over one SSH connection; replaced on every reconnection.
pub struct Transport {
    ssh: SshSession,
    /// The podtun binary on the login host (for `agent pipe`).
    bin: String,
    /// Set once the server refused stream-local forwarding.
    exec_fallback: AtomicBool,
    sockets: Vec<Socket>,
}

/// One agent socket and the multiplexed channel to it.
struct Socket {
    path: String,
    /// `None` until the first opening (or after a failed one); held while opening, so
    /// connections that arrive meanwhile wait for the same channel.
    mux: Mutex<Option<Mux>>,
}

impl Transport {
    /// A transport to `sockets` (the agent's, in port order); their channels are opened in the
    /// background, so the first connection does not wait a round trip for one.
    pub fn start(ssh: SshSession, bin: String, sockets: Vec<String>) -> Arc<Transport> {
        let sockets = sockets
            .into_iter()
            .map(|path| Socket {
                path,
                mux: Mutex::default(),
            })
            .collect();
        let transport = Arc::new(Transport {
            ssh,
            bin,
            exec_fallback: AtomicBool::new(false),
            sockets,
        });
        for index in 0..transport.sockets.len() {
            let this = Arc::clone(&transport);
            tokio::spawn(async move {
                if let Err(e) = this.stream(index).await {
                    debug!("could not open the channel to the agent ahead of need: {e:#}");
                }
            });
        }
        transport
    }

    /// Carries one local connection to the agent's socket for port `index`.
    pub async fn forward(
        self: &Arc<Self>,
        index: usize,
        conn: tokio::net::TcpStream,
    ) -> anyhow::Result<()> {
        let stream = self.stream(index).await?;
        let moved = splice(conn, stream).await?;
        debug!(up = moved.up, down = moved.down, "connection closed");
        Ok(())
    }

    /// A new stream to socket `index`, over its channel (opened first if there is none, or if
    /// the last one ended).
    async fn stream(&self, index: usize) -> anyhow::Result<MuxStream> {
        let socket = self.sockets.get(index).context("no socket for this port")?;
        let mut mux = socket.mux.lock().await;
        if let Some(open) = mux.as_ref().filter(|m| !m.is_ended()) {
            if let Ok(stream) = open.open() {
                return Ok(stream);
            }
        }
        *mux = None;
        let mut conn = self.open(&socket.path).await?;
        conn.write_all(&[MUX_OPEN])
            .await
            .context("the channel to the agent closed")?;
        let opened = mux.insert(Mux::start(conn));
        Ok(opened.open()?)
    }

    /// Opens a channel to `socket`: stream-local forwarding, or the exec fallback once the
    /// server refused it.
    async fn open(&self, socket: &str) -> anyhow::Result<Stream> {
        if self.exec_fallback.load(Ordering::Relaxed) {
            return self.pipe(socket).await;
        }
        match self.ssh.open_streamlocal(socket).await {
            Ok(channel) => Ok(channel),
            // The agent reported this socket as listening: a refusal means the server does not
            // allow stream-local forwarding.
            Err(OpenError::Prohibited { .. } | OpenError::Refused { .. }) => {
                if !self.exec_fallback.swap(true, Ordering::Relaxed) {
                    info!(host = %self.ssh.host(), "stream-local forwarding refused by the server; using the exec fallback (podtun agent pipe)");
                }
                self.pipe(socket).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn pipe(&self, socket: &str) -> anyhow::Result<Stream> {
        let command = format!("exec {} agent pipe {}", self.bin, exec::sh_quote(socket));
        self.ssh.exec_stream(&command).await
    }
}
