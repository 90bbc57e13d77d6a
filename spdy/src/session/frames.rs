//! What each frame from the peer does to the session: one function per frame kind.

use std::sync::Arc;

use bytes::Bytes;

use super::config::{Role, SETTINGS_INITIAL_WINDOW_SIZE};
use super::state::{grant_session, wake_all, Shared, State, Stream, StreamState};
use crate::frame::{Frame, RstStatus, Setting, MAX_STREAM_ID};
use crate::headers::Headers;

/// Applies one frame from the peer; `Some(stream)` when that stream's buffer is full and the
/// reader must wait for the application.
pub(super) fn handle_frame(shared: &Arc<Shared>, frame: Frame) -> Option<u32> {
    let mut state = shared.lock();
    let mut full = None;
    match frame {
        Frame::Data { stream, fin, data } => full = on_data(shared, &mut state, stream, fin, data),
        Frame::SynStream {
            stream,
            fin,
            headers,
            ..
        } => on_syn_stream(shared, &mut state, stream, fin, headers),
        Frame::SynReply {
            stream,
            fin,
            headers,
        } => on_syn_reply(&mut state, stream, fin, headers),
        Frame::Headers { stream, fin, .. } => on_headers(&mut state, stream, fin),
        Frame::RstStream { stream, status } => on_rst_stream(&mut state, stream, status),
        Frame::Settings { settings, .. } => on_settings(&mut state, settings),
        Frame::Ping { id } => on_ping(&mut state, id),
        Frame::GoAway { last_good, .. } => on_goaway(&mut state, last_good),
        Frame::WindowUpdate { stream, delta } => on_window_update(&mut state, stream, delta),
    }
    let wake_writer = !state.out.is_empty();
    drop(state);
    if wake_writer {
        shared.write_ready.notify_one();
    }
    full
}

/// DATA: buffered for the stream's reader; `Some(stream)` when its buffer is full.
fn on_data(shared: &Shared, state: &mut State, stream: u32, fin: bool, data: Bytes) -> Option<u32> {
    let mut full = None;
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
    grant_session(shared, state);
    full
}

/// SYN_STREAM: a new stream from the peer, queued for `accept` (or refused).
fn on_syn_stream(
    shared: &Arc<Shared>,
    state: &mut State,
    stream: u32,
    fin: bool,
    headers: Headers,
) {
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

/// SYN_REPLY: the peer accepted a stream this side opened.
fn on_syn_reply(state: &mut State, stream: u32, fin: bool, headers: Headers) {
    if let Some(st) = state.streams.get_mut(&stream) {
        if st.reply.is_none() {
            st.reply = Some(headers);
            st.remote_fin |= fin;
            wake_all(st);
        }
    }
}

/// HEADERS: only its FIN matters.
fn on_headers(state: &mut State, stream: u32, fin: bool) {
    if let Some(st) = state.streams.get_mut(&stream) {
        if fin {
            st.remote_fin = true;
            wake_all(st);
        }
    }
}

/// RST_STREAM: the peer aborted a stream.
fn on_rst_stream(state: &mut State, stream: u32, status: u32) {
    if let Some(st) = state.streams.get_mut(&stream) {
        st.reset.get_or_insert(status);
        wake_all(st);
    }
    state.reap(stream);
}

/// SETTINGS: only INITIAL_WINDOW_SIZE is kept.
fn on_settings(state: &mut State, settings: Vec<Setting>) {
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

/// PING: the peer's is echoed, an echo of ours answers its waiter.
fn on_ping(state: &mut State, id: u32) {
    if state.is_peer_id(id) {
        state.push(Frame::Ping { id });
    } else if let Some(tx) = state.pings.remove(&id) {
        let _ = tx.send(());
    }
}

/// GOAWAY: no new streams; this side's streams past `last_good` were refused.
fn on_goaway(state: &mut State, last_good: u32) {
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

/// WINDOW_UPDATE: more send window for a stream, or for the session (stream 0).
fn on_window_update(state: &mut State, stream: u32, delta: u32) {
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
