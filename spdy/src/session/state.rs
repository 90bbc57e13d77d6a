//! The state a session's handles and tasks share, behind one lock.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::config::{Config, Role};
use crate::frame::Frame;
use crate::headers::Headers;

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the writer task: frames queued, or the session ended.
    pub(super) write_ready: Notify,
    /// Wakes the reader while it waits for a full stream buffer to drain.
    pub(super) read_space: Notify,
    pub(super) config: Config,
}

pub(super) struct State {
    pub(super) role: Role,
    pub(super) streams: HashMap<u32, StreamState>,
    pub(super) next_stream: u32,
    /// The highest stream id the peer opened.
    pub(super) last_peer_stream: u32,
    pub(super) incoming: VecDeque<Stream>,
    pub(super) accept_waker: Option<Waker>,
    pub(super) out: VecDeque<Frame>,
    pub(super) out_bytes: usize,
    /// Frames queued and frames written so far: a flush waits for its stream's last frame.
    pub(super) queued_seq: u64,
    pub(super) written_seq: u64,
    /// Tasks waiting for room in the write queue or for their frames to be written.
    pub(super) write_waiters: Vec<Waker>,
    /// Whether the peer keeps flow-control windows (it sent INITIAL_WINDOW_SIZE or WINDOW_UPDATE).
    pub(super) peer_keeps_windows: bool,
    pub(super) peer_initial_window: i64,
    pub(super) session_send_window: i64,
    /// Bytes read by the application and not yet granted back to the peer's session window.
    pub(super) session_unacked: u32,
    pub(super) next_ping: u32,
    pub(super) pings: HashMap<u32, oneshot::Sender<()>>,
    pub(super) goaway_sent: bool,
    pub(super) goaway_received: bool,
    /// Why the session ended, once it has.
    pub(super) ended: Option<String>,
    pub(super) ended_waiters: Vec<Waker>,
}

#[derive(Default)]
pub(super) struct StreamState {
    /// The stream was opened by the peer and not yet answered with SYN_REPLY.
    pub(super) needs_reply: bool,
    /// The peer's SYN_REPLY (streams this side opened).
    pub(super) reply: Option<Headers>,
    pub(super) reply_waker: Option<Waker>,
    pub(super) recv: VecDeque<Bytes>,
    pub(super) recv_len: usize,
    /// Bytes read by the application and not yet granted back to the peer.
    pub(super) unacked: u32,
    pub(super) remote_fin: bool,
    pub(super) local_fin: bool,
    /// The RST_STREAM status, sent or received.
    pub(super) reset: Option<u32>,
    pub(super) read_waker: Option<Waker>,
    pub(super) write_waker: Option<Waker>,
    pub(super) send_window: i64,
    /// The sequence number of this stream's last queued frame.
    pub(super) last_seq: u64,
    /// The `Stream` handle is gone (nobody reads or writes any more).
    pub(super) detached: bool,
}

impl StreamState {
    pub(super) fn done(&self) -> bool {
        self.reset.is_some() || (self.detached && self.local_fin)
    }
}

// Its methods are in `stream.rs`; it is defined here, beside the accept queue that holds it,
// so that files import one another one way only.
/// One stream of a session: read what the peer sends on it, write to it.
pub struct Stream {
    pub(super) id: u32,
    pub(super) headers: Headers,
    pub(super) shared: Arc<Shared>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session with a GOAWAY of `status` (once), waking everyone.
    pub(super) fn close(&self, status: u32, why: &str) {
        let mut state = self.lock();
        if state.ended.is_some() {
            return;
        }
        if !state.goaway_sent {
            state.goaway_sent = true;
            let last_good = state.last_peer_stream;
            state.push(Frame::GoAway { last_good, status });
        }
        drop(state);
        self.finish(why);
    }

    /// Marks the session ended (if it was not) and wakes everyone; streams nobody accepted are
    /// dropped outside the lock.
    pub(super) fn finish(&self, why: &str) {
        let mut state = self.lock();
        state.end(why);
        let unaccepted = std::mem::take(&mut state.incoming);
        drop(state);
        drop(unaccepted);
        self.write_ready.notify_one();
        self.read_space.notify_one();
    }
}

impl State {
    /// Queues a frame; its sequence number.
    pub(super) fn push(&mut self, frame: Frame) -> u64 {
        self.out_bytes += frame_size(&frame);
        self.out.push_back(frame);
        self.queued_seq += 1;
        self.queued_seq
    }

    pub(super) fn end(&mut self, why: &str) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(why.to_string());
        for (_, tx) in self.pings.drain() {
            drop(tx);
        }
        for st in self.streams.values_mut() {
            wake_all(st);
        }
        for waker in self
            .write_waiters
            .drain(..)
            .chain(self.ended_waiters.drain(..))
        {
            waker.wake();
        }
        if let Some(waker) = self.accept_waker.take() {
            waker.wake();
        }
    }

    pub(super) fn wake_writers(&mut self) {
        for waker in self.write_waiters.drain(..) {
            waker.wake();
        }
    }

    pub(super) fn wait_writable(&mut self, waker: &Waker) {
        if !self.write_waiters.iter().any(|w| w.will_wake(waker)) {
            self.write_waiters.push(waker.clone());
        }
    }

    pub(super) fn wait_ended(&mut self, waker: &Waker) {
        if !self.ended_waiters.iter().any(|w| w.will_wake(waker)) {
            self.ended_waiters.push(waker.clone());
        }
    }

    /// Forgets a stream once nobody will use it again.
    pub(super) fn reap(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(StreamState::done) {
            if let Some(st) = self.streams.remove(&id) {
                // What it still buffered was never read: give it back to the session window.
                self.session_unacked = self.session_unacked.saturating_add(st.recv_len as u32);
            }
        }
    }

    pub(super) fn is_peer_id(&self, id: u32) -> bool {
        let odd = id % 2 == 1;
        match self.role {
            Role::Client => !odd,
            Role::Server => odd,
        }
    }
}

pub(super) fn wake_all(st: &mut StreamState) {
    for waker in [
        st.read_waker.take(),
        st.write_waker.take(),
        st.reply_waker.take(),
    ]
    .into_iter()
    .flatten()
    {
        waker.wake();
    }
}

fn frame_size(frame: &Frame) -> usize {
    match frame {
        Frame::Data { data, .. } => 8 + data.len(),
        _ => 32,
    }
}

pub(super) fn ended_error(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("SPDY session ended: {why}"),
    )
}

pub(super) fn reset_error(status: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("SPDY stream reset (status {status})"),
    )
}

/// Grants the peer's session window back once half of it was read.
pub(super) fn grant_session(shared: &Shared, state: &mut State) {
    if !shared.config.windows {
        state.session_unacked = 0;
        return;
    }
    if state.session_unacked >= shared.config.session_window / 2 {
        let delta = std::mem::take(&mut state.session_unacked);
        state.push(Frame::WindowUpdate { stream: 0, delta });
    }
}
