//! A SPDY/3.1 session over one byte stream, for either role.
//!
//! ```text
//!   Session::new(io, Role, Config) ─┬─ reader task: frames ──► streams' buffers, replies, pings
//!                                   └─ writer task: queued frames ──► io (one write per batch)
//!   Session::open(headers) ──► Stream   (SYN_STREAM queued at once; data may follow at once)
//!   Session::accept()      ──► Stream   (the peer's SYN_STREAM; SYN_REPLY on `reply` or first write)
//! ```
//!
//! A [`Stream`] is `AsyncRead + AsyncWrite`: `shutdown` sends an empty DATA frame with FIN (a
//! half-close: reading goes on), the peer's FIN reads as EOF, [`Stream::reset`] and dropping a
//! stream whose sending side is still open send RST_STREAM, and the peer's RST_STREAM fails reads
//! and writes with `ConnectionReset`. Dropping a stream after its FIN only forgets it, as the
//! kubelet's `RemoveStreams` does.
//!
//! Flow control. Kubernetes speaks SPDY through moby/spdystream, which never sends SETTINGS or
//! WINDOW_UPDATE and ignores both: a Go peer neither keeps nor grants windows. So this side
//! keeps the peer's windows (64 KiB per stream and for the session to start with, as SPDY/3.1
//! says, then what its SETTINGS and WINDOW_UPDATEs say) but waits on them only once the peer has
//! shown that it keeps them (a SETTINGS with INITIAL_WINDOW_SIZE or any WINDOW_UPDATE). With
//! [`Config::windows`] on, it advertises its own receive windows and grants them back as the
//! application reads. Buffering is bounded either way: a stream buffers at most
//! [`Config::stream_window`] bytes from the peer, and past that the reader stops reading the
//! connection until the application catches up (what spdystream does too), and writes wait
//! while [`Config::write_buffer`] bytes are queued.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{Codec, Error};
use crate::frame::{Frame, RstStatus, Setting, GOAWAY_OK, MAX_STREAM_ID};
use crate::headers::Headers;

/// SPDY/3.1's window for every stream and for the session until SETTINGS say otherwise.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// SETTINGS id of INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// GOAWAY status for a peer that broke the protocol.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
/// GOAWAY status for a failure on this side.
pub const GOAWAY_INTERNAL_ERROR: u32 = 2;

/// Which side of the connection this is: the client opens odd stream ids, the server even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// A session's knobs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Flow control: advertise receive windows (SETTINGS INITIAL_WINDOW_SIZE, a session
    /// WINDOW_UPDATE), grant them back as data is read, and keep to the peer's windows once it
    /// shows it keeps them. Off, this side neither sends windows nor keeps to the peer's, as
    /// spdystream (the kubelet) does.
    pub windows: bool,
    /// Receive window of each stream, and the most one stream buffers before the reader waits.
    pub stream_window: u32,
    /// Receive window of the whole session.
    pub session_window: u32,
    /// Largest DATA frame this side sends.
    pub max_frame: usize,
    /// Largest DATA frame accepted from the peer (Go writes whatever one `Write` was given).
    pub max_recv_frame: usize,
    /// Bytes of frames queued towards the peer before writes wait.
    pub write_buffer: usize,
    /// The peer's streams waiting for `accept` before more are refused (RST REFUSED_STREAM).
    pub accept_backlog: usize,
    /// Send a PING this often, and end the session when one goes unanswered this long.
    pub keepalive: Option<(Duration, Duration)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            windows: true,
            stream_window: 256 * 1024,
            session_window: 1024 * 1024,
            max_frame: 32 * 1024,
            max_recv_frame: 0xff_ffff,
            write_buffer: 256 * 1024,
            accept_backlog: 1024,
            keepalive: None,
        }
    }
}

/// One SPDY session; clones share it. Dropping the last clone ends the session (GOAWAY, then
/// the connection is shut down), and streams still open fail.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close(GOAWAY_OK, "the session was dropped");
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task: frames queued, or the session ended.
    write_ready: Notify,
    /// Wakes the reader while it waits for a full stream buffer to drain.
    read_space: Notify,
    config: Config,
}

struct State {
    role: Role,
    streams: HashMap<u32, StreamState>,
    next_stream: u32,
    /// The highest stream id the peer opened.
    last_peer_stream: u32,
    incoming: VecDeque<Stream>,
    accept_waker: Option<Waker>,
    out: VecDeque<Frame>,
    out_bytes: usize,
    /// Frames queued and frames written so far: a flush waits for its stream's last frame.
    queued_seq: u64,
    written_seq: u64,
    /// Tasks waiting for room in the write queue or for their frames to be written.
    write_waiters: Vec<Waker>,
    /// Whether the peer keeps flow-control windows (it sent INITIAL_WINDOW_SIZE or WINDOW_UPDATE).
    peer_keeps_windows: bool,
    peer_initial_window: i64,
    session_send_window: i64,
    /// Bytes read by the application and not yet granted back to the peer's session window.
    session_unacked: u32,
    next_ping: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    goaway_sent: bool,
    goaway_received: bool,
    /// Why the session ended, once it has.
    ended: Option<String>,
    ended_waiters: Vec<Waker>,
}

#[derive(Default)]
struct StreamState {
    /// The stream was opened by the peer and not yet answered with SYN_REPLY.
    needs_reply: bool,
    /// The peer's SYN_REPLY (streams this side opened).
    reply: Option<Headers>,
    reply_waker: Option<Waker>,
    recv: VecDeque<Bytes>,
    recv_len: usize,
    /// Bytes read by the application and not yet granted back to the peer.
    unacked: u32,
    remote_fin: bool,
    local_fin: bool,
    /// The RST_STREAM status, sent or received.
    reset: Option<u32>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    send_window: i64,
    /// The sequence number of this stream's last queued frame.
    last_seq: u64,
    /// The `Stream` handle is gone (nobody reads or writes any more).
    detached: bool,
}

impl StreamState {
    fn done(&self) -> bool {
        self.reset.is_some() || (self.detached && self.local_fin)
    }
}

/// Sees a session end without keeping it open (see [`Session::watch`]).
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    /// Why the session ended, if it has.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().ended.clone()
    }

    /// Waits for the session to end; why it did.
    pub async fn closed(&self) -> String {
        closed(&self.shared).await
    }
}

/// One stream of a session: read what the peer sends on it, write to it.
pub struct Stream {
    id: u32,
    headers: Headers,
    shared: Arc<Shared>,
}

impl Session {
    /// Starts a session over `io` (already upgraded): spawns its reader and writer on the
    /// current tokio runtime.
    pub fn new<T>(io: T, role: Role, config: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut state = State {
            role,
            streams: HashMap::new(),
            next_stream: match role {
                Role::Client => 1,
                Role::Server => 2,
            },
            last_peer_stream: 0,
            incoming: VecDeque::new(),
            accept_waker: None,
            out: VecDeque::new(),
            out_bytes: 0,
            queued_seq: 0,
            written_seq: 0,
            write_waiters: Vec::new(),
            peer_keeps_windows: false,
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            session_send_window: i64::from(DEFAULT_WINDOW),
            session_unacked: 0,
            next_ping: match role {
                Role::Client => 1,
                Role::Server => 2,
            },
            pings: HashMap::new(),
            goaway_sent: false,
            goaway_received: false,
            ended: None,
            ended_waiters: Vec::new(),
        };
        if config.windows {
            state.push(Frame::Settings {
                clear: false,
                settings: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: config.stream_window,
                }],
            });
            if config.session_window > DEFAULT_WINDOW {
                state.push(Frame::WindowUpdate {
                    stream: 0,
                    delta: config.session_window - DEFAULT_WINDOW,
                });
            }
        }
        let keepalive = config.keepalive;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            write_ready: Notify::new(),
            read_space: Notify::new(),
            config,
        });
        let (reader, writer) = tokio::io::split(io);
        tokio::spawn(read_loop(shared.clone(), reader));
        tokio::spawn(write_loop(shared.clone(), writer));
        if let Some((every, timeout)) = keepalive {
            tokio::spawn(keepalive_loop(Arc::downgrade(&shared), every, timeout));
        }
        Session {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// Opens a stream: its SYN_STREAM is queued at once, and so is whatever is written to it
    /// next, without waiting for the peer's SYN_REPLY (see [`Stream::reply`]). Streams opened
    /// one after another go out in that order.
    pub fn open(&self, headers: Headers) -> io::Result<Stream> {
        let mut state = self.shared.lock();
        if let Some(why) = &state.ended {
            return Err(ended_error(why));
        }
        if state.goaway_received || state.goaway_sent {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the SPDY session is going away: no new streams",
            ));
        }
        let id = state.next_stream;
        if id > MAX_STREAM_ID {
            return Err(io::Error::other("SPDY stream ids are used up"));
        }
        state.next_stream += 2;
        let send_window = state.peer_initial_window;
        state.streams.insert(
            id,
            StreamState {
                send_window,
                ..StreamState::default()
            },
        );
        let seq = state.push(Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: headers.clone(),
        });
        if let Some(st) = state.streams.get_mut(&id) {
            st.last_seq = seq;
        }
        drop(state);
        self.shared.write_ready.notify_one();
        Ok(Stream {
            id,
            headers,
            shared: self.shared.clone(),
        })
    }

    /// The next stream the peer opened; `None` once the session has ended or the peer said
    /// GOAWAY. One task at a time should accept.
    pub async fn accept(&self) -> Option<Stream> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if let Some(stream) = state.incoming.pop_front() {
                return Poll::Ready(Some(stream));
            }
            if state.ended.is_some() || state.goaway_received {
                return Poll::Ready(None);
            }
            state.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends a PING and waits for its echo; the round-trip time.
    pub async fn ping(&self) -> io::Result<Duration> {
        ping(&self.shared).await
    }

    /// Tells the peer that no new streams will be accepted; open streams go on.
    pub fn goaway(&self) {
        let mut state = self.shared.lock();
        if state.goaway_sent || state.ended.is_some() {
            return;
        }
        state.goaway_sent = true;
        let last_good = state.last_peer_stream;
        state.push(Frame::GoAway {
            last_good,
            status: GOAWAY_OK,
        });
        if let Some(waker) = state.accept_waker.take() {
            waker.wake();
        }
        drop(state);
        self.shared.write_ready.notify_one();
    }

    /// Ends the session: GOAWAY, what is queued is written, then the connection is shut down.
    pub fn close(&self) {
        self.shared.close(GOAWAY_OK, "the session was closed");
    }

    /// Why the session ended, if it has.
    pub fn ended(&self) -> Option<String> {
        self.shared.lock().ended.clone()
    }

    /// Waits for the session to end; why it did.
    pub async fn closed(&self) -> String {
        closed(&self.shared).await
    }

    /// A handle that sees the session end without keeping it open.
    pub fn watch(&self) -> Watch {
        Watch {
            shared: self.shared.clone(),
        }
    }

    /// Whether the peer has been seen keeping flow-control windows.
    pub fn peer_keeps_windows(&self) -> bool {
        self.shared.lock().peer_keeps_windows
    }

    /// Streams not yet forgotten (open, or closed with data still buffered).
    pub fn stream_count(&self) -> usize {
        self.shared.lock().streams.len()
    }
}

/// Waits for the session of `shared` to end; why it did.
async fn closed(shared: &Shared) -> String {
    poll_fn(|cx| {
        let mut state = shared.lock();
        match &state.ended {
            Some(why) => Poll::Ready(why.clone()),
            None => {
                state.wait_ended(cx.waker());
                Poll::Pending
            }
        }
    })
    .await
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session with a GOAWAY of `status` (once), waking everyone.
    fn close(&self, status: u32, why: &str) {
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
    fn finish(&self, why: &str) {
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
    fn push(&mut self, frame: Frame) -> u64 {
        self.out_bytes += frame_size(&frame);
        self.out.push_back(frame);
        self.queued_seq += 1;
        self.queued_seq
    }

    fn end(&mut self, why: &str) {
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

    fn wake_writers(&mut self) {
        for waker in self.write_waiters.drain(..) {
            waker.wake();
        }
    }

    fn wait_writable(&mut self, waker: &Waker) {
        if !self.write_waiters.iter().any(|w| w.will_wake(waker)) {
            self.write_waiters.push(waker.clone());
        }
    }

    fn wait_ended(&mut self, waker: &Waker) {
        if !self.ended_waiters.iter().any(|w| w.will_wake(waker)) {
            self.ended_waiters.push(waker.clone());
        }
    }

    /// Forgets a stream once nobody will use it again.
    fn reap(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(StreamState::done) {
            if let Some(st) = self.streams.remove(&id) {
                // What it still buffered was never read: give it back to the session window.
                self.session_unacked = self.session_unacked.saturating_add(st.recv_len as u32);
            }
        }
    }

    fn is_peer_id(&self, id: u32) -> bool {
        let odd = id % 2 == 1;
        match self.role {
            Role::Client => !odd,
            Role::Server => odd,
        }
    }
}

fn wake_all(st: &mut StreamState) {
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

fn ended_error(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("SPDY session ended: {why}"),
    )
}

fn reset_error(status: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("SPDY stream reset (status {status})"),
    )
}

async fn ping(shared: &Shared) -> io::Result<Duration> {
    let (tx, rx) = oneshot::channel();
    {
        let mut state = shared.lock();
        if let Some(why) = &state.ended {
            return Err(ended_error(why));
        }
        let id = state.next_ping;
        state.next_ping = if id >= MAX_STREAM_ID - 2 {
            id % 2 + 1
        } else {
            id + 2
        };
        state.pings.insert(id, tx);
        state.push(Frame::Ping { id });
    }
    shared.write_ready.notify_one();
    let start = Instant::now();
    match rx.await {
        Ok(()) => Ok(start.elapsed()),
        Err(_) => Err(ended_error("no PING reply")),
    }
}

async fn keepalive_loop(shared: std::sync::Weak<Shared>, every: Duration, timeout: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.lock().ended.is_some() {
            return;
        }
        match tokio::time::timeout(timeout, ping(&shared)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                shared.close(GOAWAY_OK, "the peer did not answer a PING in time");
                return;
            }
        }
    }
}

async fn write_loop<W: AsyncWrite>(shared: Arc<Shared>, writer: W) {
    tokio::pin!(writer);
    let mut codec = Codec::new(shared.config.max_recv_frame);
    let mut buf = BytesMut::new();
    loop {
        let (batch, last_seq, ended) = {
            let mut state = shared.lock();
            let batch: Vec<Frame> = state.out.drain(..).collect();
            state.out_bytes = 0;
            (batch, state.queued_seq, state.ended.is_some())
        };
        if batch.is_empty() {
            if ended {
                break;
            }
            shared.write_ready.notified().await;
            continue;
        }
        buf.clear();
        let mut failed = None;
        for frame in batch {
            if let Err(err) = codec.encode(frame, &mut buf) {
                failed = Some(err.to_string());
                break;
            }
        }
        if failed.is_none() {
            if let Err(err) = writer.write_all(&buf).await {
                failed = Some(err.to_string());
            } else if let Err(err) = writer.flush().await {
                failed = Some(err.to_string());
            }
        }
        if let Some(why) = failed {
            shared.finish(&format!("writing failed: {why}"));
            return;
        }
        let mut state = shared.lock();
        state.written_seq = last_seq;
        state.wake_writers();
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead>(shared: Arc<Shared>, reader: R) {
    tokio::pin!(reader);
    let mut codec = Codec::new(shared.config.max_recv_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let why = 'session: loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Some(full) = handle_frame(&shared, frame) {
                        wait_for_space(&shared, full).await;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    let status = match err {
                        Error::Io(_) => GOAWAY_INTERNAL_ERROR,
                        _ => GOAWAY_PROTOCOL_ERROR,
                    };
                    let why = err.to_string();
                    shared.close(status, &why);
                    return;
                }
            }
            if shared.lock().ended.is_some() {
                return;
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = tokio::select! {
            read = reader.read_buf(&mut buf) => read,
            () = ended(&shared) => return,
        };
        match read {
            Ok(0) => break 'session "the peer closed the connection".to_string(),
            Ok(_) => {}
            Err(err) => break 'session format!("reading failed: {err}"),
        }
    };
    shared.finish(&why);
}

/// Resolves once the session has ended (polled next to the reader's read).
async fn ended(shared: &Shared) {
    poll_fn(|cx| {
        let mut state = shared.lock();
        if state.ended.is_some() {
            Poll::Ready(())
        } else {
            state.wait_ended(cx.waker());
            Poll::Pending
        }
    })
    .await
}

/// Waits until stream `id` buffers less than its bound (or is gone, or the session ended).
async fn wait_for_space(shared: &Shared, id: u32) {
    let bound = shared.config.stream_window as usize;
    loop {
        let notified = shared.read_space.notified();
        {
            let state = shared.lock();
            if state.ended.is_some() {
                return;
            }
            match state.streams.get(&id) {
                Some(st) if st.recv_len >= bound && st.reset.is_none() && !st.detached => {}
                _ => return,
            }
        }
        notified.await;
    }
}

/// Applies one frame from the peer; `Some(stream)` when that stream's buffer is full and the
/// reader must wait for the application.
fn handle_frame(shared: &Arc<Shared>, frame: Frame) -> Option<u32> {
    let mut state = shared.lock();
    let mut full = None;
    match frame {
        Frame::Data { stream, fin, data } => {
            let len = data.len();
            let bound = shared.config.stream_window as usize;
            match state.streams.get_mut(&stream) {
                Some(st) if st.reset.is_none() && !st.remote_fin => {
                    if !data.is_empty() {
                        st.recv_len += len;
                        st.recv.push_back(data);
                    }
                    st.remote_fin |= fin;
                    if let Some(waker) = st.read_waker.take() {
                        waker.wake();
                    }
                    if st.detached {
                        // Nobody will read it: drop the data, give the window back.
                        st.recv.clear();
                        st.recv_len = 0;
                        state.session_unacked = state.session_unacked.saturating_add(len as u32);
                    } else if st.recv_len >= bound {
                        full = Some(stream);
                    }
                }
                // A stream that is gone or finished: the data is dropped, as spdystream does.
                _ => state.session_unacked = state.session_unacked.saturating_add(len as u32),
            }
            grant_session(shared, &mut state);
        }
        Frame::SynStream {
            stream,
            fin,
            headers,
            ..
        } => {
            if !state.is_peer_id(stream) || stream <= state.last_peer_stream {
                state.push(Frame::RstStream {
                    stream,
                    status: RstStatus::PROTOCOL_ERROR,
                });
            } else if state.goaway_sent {
                // No new streams after GOAWAY: ignored, as spdystream does.
            } else if state.incoming.len() >= shared.config.accept_backlog {
                state.last_peer_stream = stream;
                state.push(Frame::RstStream {
                    stream,
                    status: RstStatus::REFUSED_STREAM,
                });
            } else {
                state.last_peer_stream = stream;
                let send_window = state.peer_initial_window;
                state.streams.insert(
                    stream,
                    StreamState {
                        needs_reply: true,
                        remote_fin: fin,
                        send_window,
                        ..StreamState::default()
                    },
                );
                // The handle shares the session but not its owner: accepted streams never keep
                // a session alive.
                let handle = Stream {
                    id: stream,
                    headers,
                    shared: shared.clone(),
                };
                state.incoming.push_back(handle);
                if let Some(waker) = state.accept_waker.take() {
                    waker.wake();
                }
            }
        }
        Frame::SynReply {
            stream,
            fin,
            headers,
        } => {
            if let Some(st) = state.streams.get_mut(&stream) {
                if st.reply.is_none() {
                    st.reply = Some(headers);
                    st.remote_fin |= fin;
                    wake_all(st);
                }
            }
        }
        Frame::Headers { stream, fin, .. } => {
            if let Some(st) = state.streams.get_mut(&stream) {
                if fin {
                    st.remote_fin = true;
                    wake_all(st);
                }
            }
        }
        Frame::RstStream { stream, status } => {
            if let Some(st) = state.streams.get_mut(&stream) {
                st.reset.get_or_insert(status);
                wake_all(st);
            }
            state.reap(stream);
        }
        Frame::Settings { settings, .. } => {
            for s in settings {
                if s.id == SETTINGS_INITIAL_WINDOW_SIZE && s.value <= MAX_STREAM_ID {
                    let delta = i64::from(s.value) - state.peer_initial_window;
                    state.peer_initial_window = i64::from(s.value);
                    state.peer_keeps_windows = true;
                    for st in state.streams.values_mut() {
                        st.send_window += delta;
                        if let Some(waker) = st.write_waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
        }
        Frame::Ping { id } => {
            if state.is_peer_id(id) {
                state.push(Frame::Ping { id });
            } else if let Some(tx) = state.pings.remove(&id) {
                let _ = tx.send(());
            }
        }
        Frame::GoAway { last_good, .. } => {
            state.goaway_received = true;
            let role = state.role;
            for (&id, st) in state.streams.iter_mut() {
                let ours = match role {
                    Role::Client => id % 2 == 1,
                    Role::Server => id % 2 == 0,
                };
                if ours && id > last_good {
                    st.reset.get_or_insert(RstStatus::REFUSED_STREAM);
                    wake_all(st);
                }
            }
            if let Some(waker) = state.accept_waker.take() {
                waker.wake();
            }
        }
        Frame::WindowUpdate { stream, delta } => {
            state.peer_keeps_windows = true;
            let delta = i64::from(delta);
            if stream == 0 {
                state.session_send_window += delta;
                for st in state.streams.values_mut() {
                    if let Some(waker) = st.write_waker.take() {
                        waker.wake();
                    }
                }
            } else if let Some(st) = state.streams.get_mut(&stream) {
                st.send_window += delta;
                if let Some(waker) = st.write_waker.take() {
                    waker.wake();
                }
            }
        }
    }
    let wake_writer = !state.out.is_empty();
    drop(state);
    if wake_writer {
        shared.write_ready.notify_one();
    }
    full
}

/// Grants the peer's session window back once half of it was read.
fn grant_session(shared: &Shared, state: &mut State) {
    if !shared.config.windows {
        state.session_unacked = 0;
        return;
    }
    if state.session_unacked >= shared.config.session_window / 2 {
        let delta = std::mem::take(&mut state.session_unacked);
        state.push(Frame::WindowUpdate { stream: 0, delta });
    }
}

impl Stream {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the stream's SYN_STREAM (sent or received).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Accepts a stream the peer opened with SYN_REPLY (`headers` may be empty). Writing to an
    /// unanswered stream answers it with no headers first.
    pub fn reply(&self, headers: Headers) {
        let mut state = self.shared.lock();
        if let Some(st) = state.streams.get_mut(&self.id) {
            if st.needs_reply && st.reset.is_none() {
                st.needs_reply = false;
                let seq = state.push(Frame::SynReply {
                    stream: self.id,
                    fin: false,
                    headers,
                });
                if let Some(st) = state.streams.get_mut(&self.id) {
                    st.last_seq = seq;
                }
                drop(state);
                self.shared.write_ready.notify_one();
            }
        }
    }

    /// Waits for the peer's SYN_REPLY to a stream this side opened; its headers.
    pub async fn wait_reply(&self) -> io::Result<Headers> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            let ended = state.ended.clone();
            let Some(st) = state.streams.get_mut(&self.id) else {
                return Poll::Ready(Err(reset_error(RstStatus::CANCEL)));
            };
            if let Some(headers) = &st.reply {
                return Poll::Ready(Ok(headers.clone()));
            }
            if let Some(status) = st.reset {
                return Poll::Ready(Err(reset_error(status)));
            }
            if let Some(why) = ended {
                return Poll::Ready(Err(ended_error(&why)));
            }
            st.reply_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Aborts the stream with RST_STREAM CANCEL.
    pub fn reset(&self) {
        self.reset_with(RstStatus::CANCEL);
    }

    /// Aborts the stream with RST_STREAM `status`.
    pub fn reset_with(&self, status: u32) {
        let mut state = self.shared.lock();
        let Some(st) = state.streams.get_mut(&self.id) else {
            return;
        };
        if st.reset.is_some() {
            return;
        }
        st.reset = Some(status);
        wake_all(st);
        state.push(Frame::RstStream {
            stream: self.id,
            status,
        });
        drop(state);
        self.shared.write_ready.notify_one();
        self.shared.read_space.notify_one();
    }

    /// Queues SYN_REPLY for a peer's stream that was not answered yet.
    fn answer(state: &mut State, id: u32) {
        if let Some(st) = state.streams.get_mut(&id) {
            if st.needs_reply {
                st.needs_reply = false;
                state.push(Frame::SynReply {
                    stream: id,
                    fin: false,
                    headers: Headers::new(),
                });
            }
        }
    }

    fn poll_written(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        let last_seq = state.streams.get(&self.id).map_or(0, |st| st.last_seq);
        if state.written_seq >= last_seq {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = &state.ended {
            return Poll::Ready(Err(ended_error(why)));
        }
        state.wait_writable(cx.waker());
        Poll::Pending
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let ended = state.ended.clone();
        let windows = shared.config.windows;
        let half = shared.config.stream_window / 2;
        let Some(st) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(reset_error(RstStatus::CANCEL)));
        };
        if st.recv_len > 0 {
            let mut copied = 0;
            while buf.remaining() > 0 {
                let Some(chunk) = st.recv.front_mut() else {
                    break;
                };
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.advance(n);
                if chunk.is_empty() {
                    st.recv.pop_front();
                }
                copied += n;
            }
            st.recv_len -= copied;
            let mut grant = None;
            if windows {
                st.unacked = st.unacked.saturating_add(copied as u32);
                if st.unacked >= half && !st.remote_fin && st.reset.is_none() {
                    grant = Some(std::mem::take(&mut st.unacked));
                }
            }
            state.session_unacked = state.session_unacked.saturating_add(copied as u32);
            if let Some(delta) = grant {
                state.push(Frame::WindowUpdate {
                    stream: self.id,
                    delta,
                });
            }
            grant_session(shared, &mut state);
            let wake_writer = !state.out.is_empty();
            drop(state);
            if wake_writer {
                shared.write_ready.notify_one();
            }
            shared.read_space.notify_one();
            return Poll::Ready(Ok(()));
        }
        if let Some(status) = st.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if st.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = ended {
            return Poll::Ready(Err(ended_error(&why)));
        }
        st.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(why) = &state.ended {
            return Poll::Ready(Err(ended_error(why)));
        }
        if state.out_bytes >= shared.config.write_buffer {
            state.wait_writable(cx.waker());
            return Poll::Pending;
        }
        let keep_windows = state.peer_keeps_windows && shared.config.windows;
        let session_window = state.session_send_window;
        let Some(st) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(reset_error(RstStatus::CANCEL)));
        };
        if let Some(status) = st.reset {
            return Poll::Ready(Err(reset_error(status)));
        }
        if st.local_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "SPDY stream already half-closed",
            )));
        }
        let mut n = buf.len().min(shared.config.max_frame);
        if keep_windows {
            let window = st.send_window.min(session_window);
            if window <= 0 {
                st.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            n = n.min(window as usize);
        }
        st.send_window -= n as i64;
        state.session_send_window -= n as i64;
        Stream::answer(&mut state, self.id);
        let seq = state.push(Frame::Data {
            stream: self.id,
            fin: false,
            data: Bytes::copy_from_slice(&buf[..n]),
        });
        if let Some(st) = state.streams.get_mut(&self.id) {
            st.last_seq = seq;
        }
        drop(state);
        shared.write_ready.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_written(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut state = self.shared.lock();
            let Some(st) = state.streams.get_mut(&self.id) else {
                return Poll::Ready(Ok(()));
            };
            if st.reset.is_none() && !st.local_fin {
                st.local_fin = true;
                Stream::answer(&mut state, self.id);
                let seq = state.push(Frame::Data {
                    stream: self.id,
                    fin: true,
                    data: Bytes::new(),
                });
                if let Some(st) = state.streams.get_mut(&self.id) {
                    st.last_seq = seq;
                }
                drop(state);
                self.shared.write_ready.notify_one();
            }
        }
        self.poll_written(cx)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let ended = state.ended.is_some();
        let Some(st) = state.streams.get_mut(&self.id) else {
            return;
        };
        st.detached = true;
        st.recv.clear();
        let buffered = std::mem::take(&mut st.recv_len);
        let abort = !st.local_fin && st.reset.is_none() && !ended;
        if abort {
            st.reset = Some(RstStatus::CANCEL);
        }
        state.session_unacked = state.session_unacked.saturating_add(buffered as u32);
        if abort {
            state.push(Frame::RstStream {
                stream: self.id,
                status: RstStatus::CANCEL,
            });
        }
        // Forgotten now if its FIN went out (later data from the peer is dropped).
        state.reap(self.id);
        grant_session(&self.shared, &mut state);
        drop(state);
        self.shared.write_ready.notify_one();
        self.shared.read_space.notify_one();
    }
}

#[cfg(test)]
mod tests;
