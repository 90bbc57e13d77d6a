//! The frames on the wire, and the task that writes them.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Largest payload of one `DATA` frame.
pub const MAX_DATA: usize = 64 * 1024;

/// Bytes a stream may have in flight, per direction, before the receiver credits them back.
/// At least the SSH channel's own window, so a single bulk transfer is not slowed by it.
pub const WINDOW: u32 = 2 * 1024 * 1024;

/// Credit is returned once this much was consumed (fewer, larger `CREDIT` frames).
pub(super) const CREDIT_BATCH: u32 = WINDOW / 8;

pub(super) const HEADER: usize = 9;
pub(super) const OPEN: u8 = 1;
pub(super) const DATA: u8 = 2;
pub(super) const EOF: u8 = 3;
pub(super) const CLOSE: u8 = 4;
pub(super) const CREDIT: u8 = 5;

/// Buffer of the reading side and of the writing side of the connection.
pub(super) const IO_BUF: usize = 128 * 1024;

pub(super) fn frame(kind: u8, id: u32, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER + payload.len());
    buf.put_u8(kind);
    buf.put_u32(id);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// Frames at least this large are written as they are, without a copy into the buffer.
const WRITE_DIRECT: usize = 16 * 1024;

/// Writes queued frames, coalescing the small ones queued together into one write.
pub(super) async fn write_frames<W>(
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    conn: W,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut conn = BufWriter::with_capacity(IO_BUF, conn);
    while let Some(mut frame) = rx.recv().await {
        loop {
            if frame.len() >= WRITE_DIRECT {
                conn.flush().await?;
                conn.get_mut().write_all(&frame).await?;
            } else {
                conn.write_all(&frame).await?;
            }
            match rx.try_recv() {
                Ok(next) => frame = next,
                Err(_) => break,
            }
        }
        conn.flush().await?;
    }
    conn.shutdown().await
}
