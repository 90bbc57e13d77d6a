//! The state a connection's tasks and its streams share: streams by id, and each one's credit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

use super::frame::write_frames;

/// What the connection delivers to one stream's reader.
pub(super) enum Inbound {
    Data(Bytes),
    Eof,
    /// The far end dropped the stream, or the connection is gone.
    Reset,
}

/// Room to send on one stream, shared by its writer and the connection's reader (which adds
/// the far end's credit).
#[derive(Default)]
pub(super) struct Credit {
    state: Mutex<CreditState>,
}

#[derive(Default)]
pub(super) struct CreditState {
    pub(super) available: u64,
    /// The far end dropped the stream, or the connection is gone: writes fail.
    pub(super) closed: bool,
    pub(super) waker: Option<Waker>,
}

impl Credit {
    pub(super) fn with(available: u32) -> Arc<Credit> {
        let credit = Credit::default();
        credit.lock().available = u64::from(available);
        Arc::new(credit)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CreditState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add(&self, n: u32) {
        let mut state = self.lock();
        state.available += u64::from(n);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

/// One stream as the connection's reader sees it.
pub(super) struct Entry {
    pub(super) inbound: mpsc::UnboundedSender<Inbound>,
    pub(super) credit: Arc<Credit>,
    /// Bytes delivered but not yet credited back: more than [`WINDOW`](super::WINDOW) is a broken peer.
    pub(super) unread: Arc<std::sync::atomic::AtomicU64>,
}

/// State shared by the connection's tasks and its streams.
pub(super) struct Shared {
    /// Encoded frames, to the writer task.
    pub(super) out: mpsc::UnboundedSender<Bytes>,
    pub(super) streams: Mutex<Streams>,
    /// Notified whenever a stream goes away.
    pub(super) gone: Notify,
}

#[derive(Default)]
pub(super) struct Streams {
    pub(super) map: HashMap<u32, Entry>,
    pub(super) next_id: u32,
    /// The connection ended: no new streams.
    pub(super) ended: bool,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes stream `id`, telling its reader and writer it is gone.
    pub(super) fn detach(&self, id: u32) {
        let entry = self.lock().map.remove(&id);
        if let Some(entry) = entry {
            entry.inbound.send(Inbound::Reset).ok();
            entry.credit.close();
            self.gone.notify_waiters();
        }
    }

    /// The connection ended: every stream is reset, and no new one opens.
    pub(super) fn end(&self) {
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

    pub(super) fn send(&self, frame: Bytes) -> bool {
        self.out.send(frame).is_ok()
    }
}

pub(super) fn start_shared<W>(write: W) -> Arc<Shared>
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
