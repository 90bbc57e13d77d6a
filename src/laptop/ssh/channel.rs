//! SSH channels as the rest of podtun sees them: a byte stream (one connection through the
//! login host, or a command's stdin and stdout), and the two halves of a running command.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelStream, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream over one SSH channel.
pub struct Stream(ChannelStream<Msg>);

impl Stream {
    pub(super) fn new(stream: ChannelStream<Msg>) -> Stream {
        Stream(stream)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A command started on the remote host: what it prints, and its stdin.
pub struct Running {
    /// What it prints, and its exit status.
    pub output: Printed,
    /// Its stdin.
    pub input: Stdin,
}

/// One thing a running command sent.
#[derive(Debug)]
pub enum Said {
    /// Bytes on its stdout.
    Stdout(Vec<u8>),
    /// Bytes on its stderr.
    Stderr(Vec<u8>),
    /// Its exit status.
    Exit(u32),
}

/// What a running command prints. Read it to its end, stderr included: an unread channel
/// stalls the whole connection.
pub struct Printed(ChannelReadHalf);

impl Printed {
    pub(super) fn new(read: ChannelReadHalf) -> Printed {
        Printed(read)
    }

    /// The next thing the command sent; `None` once the channel closed.
    pub async fn next(&mut self) -> Option<Said> {
        loop {
            match self.0.wait().await? {
                ChannelMsg::Data { data } => return Some(Said::Stdout(data.to_vec())),
                ChannelMsg::ExtendedData { data, .. } => return Some(Said::Stderr(data.to_vec())),
                ChannelMsg::ExitStatus { exit_status } => return Some(Said::Exit(exit_status)),
                _ => {}
            }
        }
    }
}

/// A running command's stdin.
pub struct Stdin(ChannelWriteHalf<Msg>);

impl Stdin {
    pub(super) fn new(write: ChannelWriteHalf<Msg>) -> Stdin {
        Stdin(write)
    }

    /// Sends `data`.
    pub async fn send(&self, data: &[u8]) -> io::Result<()> {
        self.0.data(data).await.map_err(io::Error::other)
    }

    /// Closes its stdin.
    pub async fn eof(&self) -> io::Result<()> {
        self.0.eof().await.map_err(io::Error::other)
    }
}

/// Empty lines sent to a running command every `every` from a task of their own, until
/// dropped: the heartbeats by which podtun's agent and scripts on the login host know that the
/// laptop is still there.
pub struct Heartbeat {
    task: tokio::task::JoinHandle<()>,
    failed: tokio_util::sync::CancellationToken,
}

impl Heartbeat {
    /// Starts beating on `stdin`, the first beat after `every`.
    pub fn start(stdin: Arc<Stdin>, every: Duration) -> Heartbeat {
        let failed = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn({
            let failed = failed.clone();
            async move {
                let start = tokio::time::Instant::now() + every;
                let mut beats = tokio::time::interval_at(start, every);
                loop {
                    beats.tick().await;
                    if stdin.send(b"\n").await.is_err() {
                        failed.cancel();
                        return;
                    }
                }
            }
        });
        Heartbeat { task, failed }
    }

    /// Stops beating (the command is being told to stop).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Resolves once a heartbeat could not be sent: the channel is gone.
    pub async fn failed(&self) {
        self.failed.cancelled().await
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
