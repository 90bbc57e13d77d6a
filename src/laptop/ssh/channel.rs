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

impl Printed {
    /// The same, a whole line at a time.
    pub fn lines(self) -> Lines {
        Lines {
            printed: self,
            stdout: Vec::new(),
            stderr: Vec::new(),
            ready: std::collections::VecDeque::new(),
        }
    }
}

/// One line a running command printed (its newline and trailing white space removed), or its
/// exit status.
#[derive(Debug)]
pub enum Line {
    /// A line of its stdout.
    Stdout(String),
    /// A line of its stderr.
    Stderr(String),
    /// Its exit status.
    Exit(u32),
}

/// What a running command prints, line by line; a last line without a newline comes when the
/// channel closes.
pub struct Lines {
    printed: Printed,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    ready: std::collections::VecDeque<Line>,
}

impl Lines {
    /// The next line; `None` once the channel closed and every line was read.
    pub async fn next(&mut self) -> Option<Line> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(line);
            }
            match self.printed.next().await {
                Some(Said::Stdout(data)) => {
                    split(&mut self.stdout, &data, &mut self.ready, Line::Stdout)
                }
                Some(Said::Stderr(data)) => {
                    split(&mut self.stderr, &data, &mut self.ready, Line::Stderr)
                }
                Some(Said::Exit(status)) => self.ready.push_back(Line::Exit(status)),
                None => {
                    flush(&mut self.stdout, &mut self.ready, Line::Stdout);
                    flush(&mut self.stderr, &mut self.ready, Line::Stderr);
                    return self.ready.pop_front();
                }
            }
        }
    }
}

/// Appends `data` to `pending` and moves each whole line out as `kind`.
fn split(
    pending: &mut Vec<u8>,
    data: &[u8],
    ready: &mut std::collections::VecDeque<Line>,
    kind: fn(String) -> Line,
) {
    pending.extend_from_slice(data);
    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
        let raw: Vec<u8> = pending.drain(..=end).collect();
        ready.push_back(kind(String::from_utf8_lossy(&raw).trim_end().to_string()));
    }
}

/// The channel closed: what is left of a line in `pending` is the last line.
fn flush(
    pending: &mut Vec<u8>,
    ready: &mut std::collections::VecDeque<Line>,
    kind: fn(String) -> Line,
) {
    if !pending.is_empty() {
        ready.push_back(kind(
            String::from_utf8_lossy(pending).trim_end().to_string(),
        ));
        pending.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_whatever_the_chunks() {
        let mut pending = Vec::new();
        let mut ready = std::collections::VecDeque::new();
        for chunk in [&b"podtun-x: rea"[..], b"dy /tmp/s\nsecond\r\nthi", b"rd"] {
            split(&mut pending, chunk, &mut ready, Line::Stdout);
        }
        let lines: Vec<String> = ready
            .drain(..)
            .map(|l| match l {
                Line::Stdout(l) => l,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["podtun-x: ready /tmp/s", "second"]);
        // The channel closed: the rest is the last line.
        flush(&mut pending, &mut ready, Line::Stdout);
        assert!(matches!(ready.pop_front(), Some(Line::Stdout(l)) if l == "third"));
        flush(&mut pending, &mut ready, Line::Stdout);
        assert!(ready.is_empty(), "nothing pending, no line");
    }
}
