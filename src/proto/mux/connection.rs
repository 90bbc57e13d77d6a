//! The two ends of a connection: [`Mux`] opens streams (laptop), [`serve`] accepts them (agent).

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::demux::{read_frames, Side};
use super::frame::{frame, OPEN};
use super::state::{start_shared, Shared};
use super::stream::MuxStream;

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
            MuxStream::attach(&self.shared, &mut streams, id)
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
