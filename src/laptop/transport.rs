//! How local connections reach the agent's sockets on the login host: one SSH channel per
//! connection, `direct-streamlocal@openssh.com`, or `podtun agent pipe SOCKET` over an exec
//! channel when the server refuses stream-local forwarding.
//!
//! Opening a channel costs a round trip to the login host (and for the exec fallback a whole
//! process start), so each socket keeps [`WARM_CHANNELS`] channels open ahead of need and a new
//! connection takes one of those. The agent holds such a channel idle, without touching the pod,
//! until the connection's first byte ([`STREAM_OPEN`]) says it is in use.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use futures::FutureExt;
use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use super::install;
use super::ssh::{OpenError, SshSession};
use crate::splice::splice;
use crate::wire::STREAM_OPEN;

/// Channels kept open ahead of need, per socket. Each is an idle channel (stream-local), or an
/// idle `podtun agent pipe` process of about 1 MiB on the login host (exec fallback).
pub const WARM_CHANNELS: usize = 2;

/// The way to the agent's sockets over one SSH connection; replaced on every reconnection.
pub struct Transport {
    ssh: SshSession,
    /// The podtun binary on the login host (for `agent pipe`).
    bin: String,
    /// Set once the server refused stream-local forwarding.
    exec_fallback: AtomicBool,
    sockets: Vec<Socket>,
}

/// One agent socket and its channels opened ahead of need.
struct Socket {
    path: String,
    warm: Mutex<Warm>,
}

#[derive(Default)]
struct Warm {
    idle: VecDeque<Channel<Msg>>,
    /// Openings under way.
    opening: usize,
}

impl Transport {
    /// A transport to `sockets` (the agent's, in port order), its warm channels being opened.
    pub fn start(ssh: SshSession, bin: String, sockets: Vec<String>) -> Arc<Transport> {
        let sockets = sockets
            .into_iter()
            .map(|path| Socket {
                path,
                warm: Mutex::default(),
            })
            .collect();
        let transport = Arc::new(Transport {
            ssh,
            bin,
            exec_fallback: AtomicBool::new(false),
            sockets,
        });
        for index in 0..transport.sockets.len() {
            transport.refill(index);
        }
        transport
    }

    /// Carries one local connection to the agent's socket for port `index`.
    pub async fn forward(
        self: &Arc<Self>,
        index: usize,
        conn: tokio::net::TcpStream,
    ) -> anyhow::Result<()> {
        let socket = self.sockets.get(index).context("no socket for this port")?;
        let channel = match socket.take() {
            Some(channel) => channel,
            None => self.open(&socket.path).await?,
        };
        self.refill(index);
        let mut stream = channel.into_stream();
        stream
            .write_all(&[STREAM_OPEN])
            .await
            .context("the channel to the agent closed")?;
        let moved = splice(conn, stream).await?;
        debug!(up = moved.up, down = moved.down, "connection closed");
        Ok(())
    }

    /// Opens channels in the background until socket `index` has [`WARM_CHANNELS`] ready or
    /// being opened. A failed opening is not retried here: the next connection tries again.
    fn refill(self: &Arc<Self>, index: usize) {
        let Some(socket) = self.sockets.get(index) else {
            return;
        };
        let wanted = {
            let mut warm = socket.warm.lock().unwrap_or_else(PoisonError::into_inner);
            let wanted = WARM_CHANNELS.saturating_sub(warm.idle.len() + warm.opening);
            warm.opening += wanted;
            wanted
        };
        for _ in 0..wanted {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let Some(socket) = this.sockets.get(index) else {
                    return;
                };
                let opened = this.open(&socket.path).await;
                let mut warm = socket.warm.lock().unwrap_or_else(PoisonError::into_inner);
                warm.opening -= 1;
                match opened {
                    Ok(channel) => warm.idle.push_back(channel),
                    Err(e) => debug!("could not open a channel ahead of need: {e:#}"),
                }
            });
        }
    }

    /// Opens a channel to `socket`: stream-local forwarding, or the exec fallback once the
    /// server refused it.
    async fn open(&self, socket: &str) -> anyhow::Result<Channel<Msg>> {
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

    async fn pipe(&self, socket: &str) -> anyhow::Result<Channel<Msg>> {
        let command = format!("exec {} agent pipe {}", self.bin, install::sh_quote(socket));
        self.ssh.exec(&command).await
    }
}

impl Socket {
    /// A warm channel that is still open, if any.
    fn take(&self) -> Option<Channel<Msg>> {
        let mut warm = self.warm.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut channel) = warm.idle.pop_front() {
            if idle_and_open(&mut channel) {
                return Some(channel);
            }
        }
        None
    }
}

/// Whether a channel opened ahead of need is still open with nothing said on it: the agent
/// sends nothing before [`STREAM_OPEN`], so anything but window adjustments means the far end
/// is gone (the agent stopped, `agent pipe` failed).
fn idle_and_open(channel: &mut Channel<Msg>) -> bool {
    loop {
        match channel.wait().now_or_never() {
            None => return true,
            Some(Some(ChannelMsg::WindowAdjusted { .. })) => {}
            Some(other) => {
                debug!(?other, "a warm channel ended before use");
                return false;
            }
        }
    }
}
