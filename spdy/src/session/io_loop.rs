//! The reader and writer tasks: frames from the connection, queued frames to it.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use super::config::{GOAWAY_INTERNAL_ERROR, GOAWAY_PROTOCOL_ERROR};
use super::frames::handle_frame;
use super::state::Shared;
use crate::codec::{Codec, Error};
use crate::frame::Frame;

pub(super) async fn write_loop<W: AsyncWrite>(shared: Arc<Shared>, writer: W) {
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

pub(super) async fn read_loop<R: AsyncRead>(shared: Arc<Shared>, reader: R) {
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
