//! Container logs: the merged stdout and stderr of one container run, line by line with the time
//! each line arrived, kept in memory and followed through a watch channel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// Memory bound per container run; the oldest lines go first, as log rotation would drop them.
const MAX_LOG_BYTES: usize = 16 << 20;

#[derive(Default)]
struct Inner {
    lines: VecDeque<(Timestamp, Bytes)>,
    /// Index of `lines[0]` since the run started.
    first: u64,
    bytes: usize,
    closed: bool,
}

/// The log of one container run.
pub(crate) struct LogBuffer {
    inner: Mutex<Inner>,
    /// Bumped on every new line and on close.
    version: watch::Sender<u64>,
}

/// Lines read from a buffer, and where to continue.
pub(crate) struct Chunk {
    pub lines: Vec<(Timestamp, Bytes)>,
    pub next: u64,
    pub closed: bool,
}

impl LogBuffer {
    pub fn new() -> Arc<LogBuffer> {
        Arc::new(LogBuffer {
            inner: Mutex::new(Inner::default()),
            version: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, line: Bytes) {
        {
            let mut inner = self.lock();
            inner.bytes += line.len();
            inner.lines.push_back((Timestamp::now(), line));
            while inner.bytes > MAX_LOG_BYTES {
                let Some((_, old)) = inner.lines.pop_front() else {
                    break;
                };
                inner.bytes -= old.len();
                inner.first += 1;
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Marks the run as over: followers end once they have read everything.
    pub fn close(&self) {
        self.lock().closed = true;
        self.version.send_modify(|v| *v += 1);
    }

    /// Lines from index `from` on (clamped to what is still kept).
    pub fn read_from(&self, from: u64) -> Chunk {
        let inner = self.lock();
        let start = from.max(inner.first);
        let skip = (start - inner.first) as usize;
        let lines: Vec<_> = inner.lines.iter().skip(skip).cloned().collect();
        Chunk {
            next: start + lines.len() as u64,
            lines,
            closed: inner.closed,
        }
    }

    /// The index at which the last `n` lines start.
    pub fn tail_start(&self, n: u64) -> u64 {
        let inner = self.lock();
        (inner.first + inner.lines.len() as u64).saturating_sub(n)
    }

    /// The index of the first line that arrived at or after `since`.
    pub fn since_start(&self, since: Timestamp) -> u64 {
        let inner = self.lock();
        let pos = inner.lines.iter().take_while(|(t, _)| *t < since).count();
        inner.first + pos as u64
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Copies `reader` into `log` line by line until EOF.
pub(crate) async fn collect(reader: impl AsyncRead + Unpin, log: Arc<LogBuffer>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => log.push(Bytes::copy_from_slice(&line)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_collected_and_tailed() {
        let log = LogBuffer::new();
        collect(&b"one\ntwo\nthree"[..], log.clone()).await;
        let all = log.read_from(0);
        assert_eq!(all.lines.len(), 3);
        assert_eq!(all.lines[2].1, Bytes::from_static(b"three"));
        assert_eq!(log.read_from(log.tail_start(1)).lines.len(), 1);
        assert!(!all.closed);
        log.close();
        assert!(log.read_from(3).closed);
    }
}
