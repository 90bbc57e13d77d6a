//! One stream: read and written like a connection, credited back as it is read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::frame::{frame, CLOSE, CREDIT, CREDIT_BATCH, DATA, EOF, MAX_DATA, WINDOW};
use super::state::{Credit, Entry, Inbound, Shared, Streams};

/// One connection carried over the multiplexed byte stream: `AsyncRead + AsyncWrite`, with a
/// half-close (`shutdown`) that the far end reads as EOF. Dropping it ends the stream.
pub struct MuxStream {
    pub(super) id: u32,
    shared: Arc<Shared>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    pending: Bytes,
    read_done: bool,
    unread: Arc<std::sync::atomic::AtomicU64>,
    /// Consumed, not yet credited back.
    uncredited: u32,
    credit: Arc<Credit>,
    eof_sent: bool,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream").field("id", &self.id).finish()
    }
}

impl MuxStream {
    /// Registers stream `id` and returns its end.
    pub(super) fn attach(shared: &Arc<Shared>, streams: &mut Streams, id: u32) -> MuxStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Credit::with(WINDOW);
        let unread = Arc::new(std::sync::atomic::AtomicU64::new(0));
        streams.map.insert(
            id,
            Entry {
                inbound: tx,
                credit: credit.clone(),
                unread: unread.clone(),
            },
        );
        MuxStream {
            id,
            shared: shared.clone(),
            inbound: rx,
            pending: Bytes::new(),
            read_done: false,
            unread,
            uncredited: 0,
            credit,
            eof_sent: false,
        }
    }

    fn consumed(&mut self, n: usize) {
        let n = n as u32;
        self.unread
            .fetch_sub(u64::from(n), std::sync::atomic::Ordering::Relaxed);
        self.uncredited += n;
        if self.uncredited >= CREDIT_BATCH {
            let payload = self.uncredited.to_be_bytes();
            self.shared.send(frame(CREDIT, self.id, &payload));
            self.uncredited = 0;
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                self.consumed(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_done {
                return Poll::Ready(Ok(()));
            }
            match self.inbound.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Inbound::Data(data))) => self.pending = data,
                Poll::Ready(Some(Inbound::Eof) | None) => self.read_done = true,
                Poll::Ready(Some(Inbound::Reset)) => {
                    self.read_done = true;
                    return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
                }
            }
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = {
            let mut state = self.credit.lock();
            if state.closed || self.eof_sent {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if state.available == 0 {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = buf.len().min(MAX_DATA).min(state.available as usize);
            state.available -= n as u64;
            n
        };
        if self.shared.send(frame(DATA, self.id, &buf[..n])) {
            Poll::Ready(Ok(n))
        } else {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's writer flushes whenever it has nothing more queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.eof_sent {
            self.eof_sent = true;
            self.shared.send(frame(EOF, self.id, &[]));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let known = self.shared.lock().map.contains_key(&self.id);
        if known {
            self.shared.send(frame(CLOSE, self.id, &[]));
            self.shared.detach(self.id);
        }
    }
}
