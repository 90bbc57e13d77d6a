//! The reading side: frames delivered to their streams.

use std::io;
use std::sync::Weak;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};

use super::frame::{CLOSE, CREDIT, DATA, EOF, HEADER, IO_BUF, MAX_DATA, OPEN, WINDOW};
use super::state::{Inbound, Shared};
use super::stream::MuxStream;

/// Who may open streams: only the laptop does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Opener,
    Acceptor,
}

/// Reads frames until the connection ends (or nothing holds `shared` any more), delivering
/// them to their streams. `accepted` receives the streams the far end opens (acceptor side
/// only).
pub(super) async fn read_frames<R>(
    conn: R,
    shared: &Weak<Shared>,
    side: Side,
    mut accepted: impl FnMut(MuxStream),
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
{
    let mut conn = BufReader::with_capacity(IO_BUF, conn);
    let mut header = [0u8; HEADER];
    loop {
        match conn.read_exact(&mut header[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        conn.read_exact(&mut header[1..]).await?;
        let kind = header[0];
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let broken = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let payload_len = match kind {
            DATA if len <= MAX_DATA => len,
            CREDIT if len == 4 => len,
            OPEN | EOF | CLOSE if len == 0 => 0,
            _ => return Err(broken(format!("bad frame: kind {kind}, length {len}"))),
        };
        let mut payload = BytesMut::zeroed(payload_len);
        conn.read_exact(&mut payload).await?;
        let Some(shared) = shared.upgrade() else {
            return Ok(());
        };
        match kind {
            OPEN => {
                if side != Side::Acceptor {
                    return Err(broken("the agent may not open streams".into()));
                }
                let stream = {
                    let mut streams = shared.lock();
                    if streams.map.contains_key(&id) {
                        return Err(broken(format!("stream {id} opened twice")));
                    }
                    MuxStream::attach(&shared, &mut streams, id)
                };
                accepted(stream);
            }
            DATA => {
                let streams = shared.lock();
                if let Some(entry) = streams.map.get(&id) {
                    let unread = entry
                        .unread
                        .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed)
                        + len as u64;
                    if unread > u64::from(WINDOW) {
                        return Err(broken(format!("stream {id} sent beyond its window")));
                    }
                    entry.inbound.send(Inbound::Data(payload.freeze())).ok();
                }
                // Data for a stream dropped here: discarded (it was in flight).
            }
            EOF => {
                if let Some(entry) = shared.lock().map.get(&id) {
                    entry.inbound.send(Inbound::Eof).ok();
                }
            }
            CLOSE => shared.detach(id),
            CREDIT => {
                let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if let Some(entry) = shared.lock().map.get(&id) {
                    entry.credit.add(n);
                }
            }
            _ => unreachable!("kinds are checked above"),
        }
    }
}
