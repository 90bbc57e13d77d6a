//! What each frame from the peer does to the session.

use std::sync::Arc;

use super::config::{Role, SETTINGS_INITIAL_WINDOW_SIZE};
use super::state::{grant_session, wake_all, Shared, Stream, StreamState};
use crate::frame::{Frame, RstStatus, MAX_STREAM_ID};

/// Applies one frame from the peer; `Some(stream)` when that stream's buffer is full and the
/// reader must wait for the application.
pub(super) fn handle_frame(shared: &Arc<Shared>, frame: Frame) -> Option<u32> {
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
