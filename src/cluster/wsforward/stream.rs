//! [`PodStream`]: one pair of a port-forward WebSocket as `AsyncRead + AsyncWrite`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::PollSender;

use super::FRAME_MAX;

/// A warm pair nobody has taken yet.
pub(super) const UNCLAIMED: u8 = 0;
/// A pair carrying a connection.
pub(super) const CLAIMED: u8 = 1;
/// A warm pair dropped for unread data.
pub(super) const EVICTED: u8 = 2;

/// State of a pair shared between its stream and the socket task.
pub(super) struct Shared {
    /// `UNCLAIMED` → `CLAIMED` (handed out) or `EVICTED` (too much unread data), once.
    pub(super) claim: AtomicU8,
    /// Why the WebSocket ended: `None` for a clean close.
    pub(super) ended: Arc<OnceLock<Option<String>>>,
}

/// One pod connection of a port-forward (see the module doc). Writes are buffered up to a
/// frame and sent on flush; `shutdown` only flushes, since v4 has no half-close; dropping the
/// stream ends the pair.
pub struct PodStream {
    port: u16,
    channel: u8,
    out: PollSender<Bytes>,
    /// The next frame: `[channel][payload…]`.
    wbuf: BytesMut,
    inbound: mpsc::Receiver<Bytes>,
    rbuf: Bytes,
    error: watch::Receiver<Option<String>>,
    shared: Arc<Shared>,
}

impl PodStream {
    pub(super) fn new(
        port: u16,
        channel: u8,
        out: PollSender<Bytes>,
        inbound: mpsc::Receiver<Bytes>,
        error: watch::Receiver<Option<String>>,
        shared: Arc<Shared>,
    ) -> PodStream {
        PodStream {
            port,
            channel,
            out,
            wbuf: BytesMut::new(),
            inbound,
            rbuf: Bytes::new(),
            error,
            shared,
        }
    }

    /// The pod port this stream goes to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resolves with the kubelet's error for this pair (e.g. connection refused in the pod), or
    /// with `None` when the WebSocket ends without one.
    pub fn error(&self) -> impl Future<Output = Option<String>> + Send + 'static {
        let mut error = self.error.clone();
        async move {
            match error.wait_for(Option::is_some).await {
                Ok(text) => text.clone(),
                Err(_) => None,
            }
        }
    }

    /// Whether the pair can still carry a connection: its WebSocket is open, no error came and
    /// it was not evicted.
    pub fn is_alive(&self) -> bool {
        self.shared.ended.get().is_none()
            && self.error.borrow().is_none()
            && self.shared.claim.load(Ordering::Acquire) != EVICTED
            && !self.inbound.is_closed()
    }

    /// Claims a warm pair for a connection: `false` if it is dead or was evicted.
    pub fn claim(&self) -> bool {
        let claim = &self.shared.claim;
        self.is_alive()
            && claim
                .compare_exchange(UNCLAIMED, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn gone(&self) -> io::Error {
        match self.shared.ended.get() {
            Some(Some(reason)) => io::Error::new(io::ErrorKind::ConnectionAborted, reason.clone()),
            _ => io::Error::new(io::ErrorKind::BrokenPipe, "port-forward closed"),
        }
    }

    /// Hands the buffered frame to the socket task.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.wbuf.len() <= 1 {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.out.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.gone()));
        }
        let frame = self.wbuf.split().freeze();
        if self.out.send_item(frame).is_err() {
            return Poll::Ready(Err(self.gone()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for PodStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.rbuf.is_empty() {
            match ready!(this.inbound.poll_recv(cx)) {
                Some(frame) => this.rbuf = frame,
                None => {
                    let error = this.error.borrow().clone();
                    return Poll::Ready(match (error, this.shared.ended.get()) {
                        (Some(text), _) => Err(io::Error::other(text)),
                        (None, Some(Some(_))) => Err(this.gone()),
                        _ => Ok(()),
                    });
                }
            }
        }
        let n = this.rbuf.len().min(buf.remaining());
        buf.put_slice(&this.rbuf[..n]);
        this.rbuf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PodStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.is_closed() {
            return Poll::Ready(Err(this.gone()));
        }
        if this.wbuf.len() > FRAME_MAX {
            ready!(this.poll_send(cx))?;
        }
        if this.wbuf.is_empty() {
            // Bulk writes get a whole frame at once; small ones only what they need.
            let want = if buf.len() >= 16 * 1024 {
                FRAME_MAX
            } else {
                buf.len()
            };
            this.wbuf.reserve(1 + want);
            this.wbuf.put_u8(this.channel);
        }
        let n = buf.len().min(FRAME_MAX + 1 - this.wbuf.len());
        this.wbuf.extend_from_slice(&buf[..n]);
        if this.wbuf.len() > FRAME_MAX {
            // A full frame goes at once if there is room; else at the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    /// Only flushes: v4 has no half-close, and `splice` decides when the pair ends.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }
}
