//! A stream's handle: its reading and writing halves, its windows, reply and reset.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::state::{ended_error, grant_session, reset_error, wake_all, State, Stream};
use crate::frame::{Frame, RstStatus};
use crate::headers::Headers;

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
