//! Many connections over one byte stream: the laptop ↔ agent leg of `--via`.
//!
//! The laptop opens one SSH channel per agent socket (stream-local, or `podtun agent pipe` over
//! the exec fallback), sends [`MUX_OPEN`](crate::proto::wire::MUX_OPEN), and from then on carries every
//! local connection to that socket over it as a *stream*. Opening a stream costs no round trip
//! and no work in sshd; a stream that lingers (the agent holds a client's EOF towards the pod,
//! see [`crate::net::splice`]) costs the agent a task, not sshd a channel.
//!
//! Frames, in both directions: `kind: u8`, `stream: u32`, `len: u32` (big-endian), then `len`
//! bytes of payload.
//!
//! | kind     | payload     | meaning                                                  |
//! |----------|-------------|----------------------------------------------------------|
//! | `OPEN`   | none        | laptop → agent: a new stream                             |
//! | `DATA`   | bytes       | part of the stream, at most [`MAX_DATA`] bytes           |
//! | `EOF`    | none        | the sender will send no more on the stream (half-close) |
//! | `CLOSE`  | none        | the sender is done with the stream; it is gone           |
//! | `CREDIT` | `u32`       | the receiver consumed that many bytes: send that many more |
//!
//! Each stream may have at most [`WINDOW`] bytes in flight in each direction. The receiver
//! credits bytes back as the stream's reader consumes them, so a stream whose reader stalls
//! stops only its own sender, never the other streams on the same connection.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf,
};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Largest payload of one `DATA` frame.
pub const MAX_DATA: usize = 64 * 1024;

/// Bytes a stream may have in flight, per direction, before the receiver credits them back.
/// At least the SSH channel's own window, so a single bulk transfer is not slowed by it.
pub const WINDOW: u32 = 2 * 1024 * 1024;

/// Credit is returned once this much was consumed (fewer, larger `CREDIT` frames).
const CREDIT_BATCH: u32 = WINDOW / 8;

const HEADER: usize = 9;
const OPEN: u8 = 1;
const DATA: u8 = 2;
const EOF: u8 = 3;
const CLOSE: u8 = 4;
const CREDIT: u8 = 5;

/// Buffer of the reading side and of the writing side of the connection.
const IO_BUF: usize = 128 * 1024;

fn frame(kind: u8, id: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER + payload.len());
    buf.put_u8(kind);
    buf.put_u32(id);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// What the connection delivers to one stream's reader.
enum Inbound {
    Data(Bytes),
    Eof,
    /// The far end dropped the stream, or the connection is gone.
    Reset,
}

/// Room to send on one stream, shared by its writer and the connection's reader (which adds
/// the far end's credit).
#[derive(Default)]
struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Default)]
struct CreditState {
    available: u64,
    /// The far end dropped the stream, or the connection is gone: writes fail.
    closed: bool,
    waker: Option<Waker>,
}

impl Credit {
    fn with(available: u32) -> Arc<Credit> {
        let credit = Credit::default();
        credit.lock().available = u64::from(available);
        Arc::new(credit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, n: u32) {
        let mut state = self.lock();
        state.available += u64::from(n);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// One stream as the connection's reader sees it.
struct Entry {
    inbound: mpsc::UnboundedSender<Inbound>,
    credit: Arc<Credit>,
    /// Bytes delivered but not yet credited back: more than [`WINDOW`] is a broken peer.
    unread: Arc<std::sync::atomic::AtomicU64>,
}

/// State shared by the connection's tasks and its streams.
struct Shared {
    /// Encoded frames, to the writer task.
    out: mpsc::UnboundedSender<Bytes>,
    streams: Mutex<Streams>,
    /// Notified whenever a stream goes away.
    gone: Notify,
}

#[derive(Default)]
struct Streams {
    map: HashMap<u32, Entry>,
    next_id: u32,
    /// The connection ended: no new streams.
    ended: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers stream `id` and returns its end.
    fn attach(self: &Arc<Self>, streams: &mut Streams, id: u32) -> MuxStream {
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
            shared: self.clone(),
            inbound: rx,
            pending: Bytes::new(),
            read_done: false,
            unread,
            uncredited: 0,
            credit,
            eof_sent: false,
        }
    }

    /// Removes stream `id`, telling its reader and writer it is gone.
    fn detach(&self, id: u32) {
        let entry = self.lock().map.remove(&id);
        if let Some(entry) = entry {
            entry.inbound.send(Inbound::Reset).ok();
            entry.credit.close();
            self.gone.notify_waiters();
        }
    }

    /// The connection ended: every stream is reset, and no new one opens.
    fn end(&self) {
        let entries: Vec<Entry> = {
            let mut streams = self.lock();
            streams.ended = true;
            streams.map.drain().map(|(_, e)| e).collect()
        };
        for entry in entries {
            entry.inbound.send(Inbound::Reset).ok();
            entry.credit.close();
        }
        self.gone.notify_waiters();
    }

    fn send(&self, frame: Bytes) -> bool {
        self.out.send(frame).is_ok()
    }
}

/// One connection carried over the multiplexed byte stream: `AsyncRead + AsyncWrite`, with a
/// half-close (`shutdown`) that the far end reads as EOF. Dropping it ends the stream.
pub struct MuxStream {
    id: u32,
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

/// Frames at least this large are written as they are, without a copy into the buffer.
const WRITE_DIRECT: usize = 16 * 1024;

/// Writes queued frames, coalescing the small ones queued together into one write.
async fn write_frames<W>(mut rx: mpsc::UnboundedReceiver<Bytes>, conn: W) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut conn = BufWriter::with_capacity(IO_BUF, conn);
    while let Some(mut frame) = rx.recv().await {
        loop {
            if frame.len() >= WRITE_DIRECT {
                conn.flush().await?;
                conn.get_mut().write_all(&frame).await?;
            } else {
                conn.write_all(&frame).await?;
            }
            match rx.try_recv() {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        conn.flush().await?;
    }
    conn.shutdown().await
}

/// Who may open streams: only the laptop does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Opener,
    Acceptor,
}

/// Reads frames until the connection ends (or nothing holds `shared` any more), delivering
/// them to their streams. `accepted` receives the streams the far end opens (acceptor side
/// only).
async fn read_frames<R>(
    conn: R,
    shared: &Weak<Shared>,
    side: Side,
    mut accepted: impl FnMut(MuxStream),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut conn = BufReader::with_capacity(IO_BUF, conn);
    let mut header = [0u8; HEADER];
    loop {
        match conn.read_exact(&mut header[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        conn.read_exact(&mut header[1..]).await?;
        let kind = header[0];
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let broken = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let payload_len = match kind {
            DATA if len <= MAX_DATA => len,
            CREDIT if len == 4 => len,
            OPEN | EOF | CLOSE if len == 0 => 0,
            _ => return Err(broken(format!("bad frame: kind {kind}, length {len}"))),
        };
        let mut payload = BytesMut::zeroed(payload_len);
        conn.read_exact(&mut payload).await?;
        let Some(shared) = shared.upgrade() else {
            return Ok(());
        };
        match kind {
            OPEN => {
                if side != Side::Acceptor {
                    return Err(broken("the agent may not open streams".into()));
                }
                let stream = {
                    let mut streams = shared.lock();
                    if streams.map.contains_key(&id) {
                        return Err(broken(format!("stream {id} opened twice")));
                    }
                    shared.attach(&mut streams, id)
                };
                accepted(stream);
            }
            DATA => {
                let streams = shared.lock();
                if let Some(entry) = streams.map.get(&id) {
                    let unread = entry
                        .unread
                        .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed)
                        + len as u64;
                    if unread > u64::from(WINDOW) {
                        return Err(broken(format!("stream {id} sent beyond its window")));
                    }
                    entry.inbound.send(Inbound::Data(payload.freeze())).ok();
                }
                // Data for a stream dropped here: discarded (it was in flight).
            }
            EOF => {
                if let Some(entry) = shared.lock().map.get(&id) {
                    entry.inbound.send(Inbound::Eof).ok();
                }
            }
            CLOSE => shared.detach(id),
            CREDIT => {
                let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if let Some(entry) = shared.lock().map.get(&id) {
                    entry.credit.add(n);
                }
            }
            _ => unreachable!("kinds are checked above"),
        }
    }
}

fn start_shared<W>(write: W) -> Arc<Shared>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        out,
        streams: Mutex::default(),
        gone: Notify::new(),
    });
    // The tasks hold the state weakly: once every stream and the `Mux` are gone, so is the
    // frame queue's sender, and the writer closes the connection.
    let writer = Arc::downgrade(&shared);
    tokio::spawn(async move {
        if let Err(e) = write_frames(rx, write).await {
            debug!(%e, "multiplexed connection: write failed");
        }
        if let Some(shared) = writer.upgrade() {
            shared.end();
        }
    });
    shared
}

/// The opening (laptop) end of a multiplexed connection.
pub struct Mux {
    shared: Arc<Shared>,
}

impl Mux {
    /// Starts carrying streams over `conn` (whose marker byte was already sent).
    pub fn start<C>(conn: C) -> Mux
    where
        C: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(conn);
        let shared = start_shared(write);
        let reader = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let result = read_frames(read, &reader, Side::Opener, |_| {}).await;
            if let Err(e) = result {
                debug!(%e, "multiplexed connection: read failed");
            }
            if let Some(shared) = reader.upgrade() {
                shared.end();
            }
        });
        Mux { shared }
    }

    /// A new stream; fails once the connection has ended.
    pub fn open(&self) -> io::Result<MuxStream> {
        let stream = {
            let mut streams = self.shared.lock();
            if streams.ended {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the connection to the agent ended",
                ));
            }
            let mut id = streams.next_id;
            while streams.map.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            streams.next_id = id.wrapping_add(1);
            self.shared.attach(&mut streams, id)
        };
        if self.shared.send(frame(OPEN, stream.id, &[])) {
            Ok(stream)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection to the agent ended",
            ))
        }
    }

    /// Whether the connection has ended (no stream can be opened on it any more).
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ended
    }
}

/// Serves the accepting (agent) end of a multiplexed connection: each stream the laptop opens
/// goes to `accepted`. Returns when the connection ends, or, once `stop` fired, as soon as no
/// stream is left.
pub async fn serve<C>(conn: C, stop: &CancellationToken, accepted: impl FnMut(MuxStream))
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(conn);
    let shared = start_shared(write);
    let stopping = shared.clone();
    let mut accepted = accepted;
    let weak = Arc::downgrade(&shared);
    let reading = read_frames(read, &weak, Side::Acceptor, |stream| {
        if stop.is_cancelled() {
            // Stopping: refused, as a closed listener would.
            drop(stream);
        } else {
            accepted(stream);
        }
    });
    let drained = async {
        stop.cancelled().await;
        loop {
            let gone = stopping.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if stopping.lock().map.is_empty() {
                return;
            }
            gone.await;
        }
    };
    tokio::select! {
        result = reading => {
            if let Err(e) = result {
                debug!(%e, "multiplexed connection: read failed");
            }
        }
        () = drained => debug!("stopping: no stream left on the multiplexed connection"),
    }
    shared.end();
}

#[cfg(test)]
mod tests;
