//! The `Session` and `Watch` handles: open, accept, ping, goaway, close.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;

use super::config::{Config, Role, DEFAULT_WINDOW, SETTINGS_INITIAL_WINDOW_SIZE};
use super::io_loop::{read_loop, write_loop};
use super::ping::{keepalive_loop, ping};
use super::state::{ended_error, Shared, State, Stream, StreamState};
use crate::frame::{Frame, Setting, GOAWAY_OK, MAX_STREAM_ID};
use crate::headers::Headers;

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
