//! PING: one round trip, and the keepalive task.

use std::io;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::state::{ended_error, Shared};
use crate::frame::{Frame, GOAWAY_OK, MAX_STREAM_ID};

pub(super) async fn ping(shared: &Shared) -> io::Result<Duration> {
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

pub(super) async fn keepalive_loop(
    shared: std::sync::Weak<Shared>,
    every: Duration,
    timeout: Duration,
) {
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
