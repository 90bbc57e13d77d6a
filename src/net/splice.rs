//! Byte pumps between two streams.
//!
//! Towards a pod, a client's EOF is *held*: kube's WebSocket port-forward (v4 channel protocol)
//! has no half-close, so passing the EOF on would close the whole stream and cut off the reply.
//! The reply keeps flowing until the pod side closes, or until the pod has been quiet for
//! [`QUIET_AFTER_EOF`] after the client's EOF (request-then-EOF clients such as `nc -N` or a
//! piped `redis-cli` then get their whole answer and still see the connection end).

use std::io;
use std::time::Duration;

use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a pod may stay silent after the client's EOF before the connection is closed.
///
/// A TCP peer's `close()` and `shutdown(SHUT_WR)` look the same from here, so every closed
/// connection lingers this long on the kube leg (and, over the exec fallback, keeps its SSH
/// session): short enough that a browser's churn of connections does not pile up, long enough
/// for a server to start its reply (each byte from the pod restarts the wait).
pub const QUIET_AFTER_EOF: Duration = Duration::from_secs(2);

/// Largest buffer of each direction: what a bulk transfer grows it to.
pub const BUF_SIZE: usize = 64 * 1024;

/// First buffer of each direction. It doubles (up to [`BUF_SIZE`]) each time a read fills it, so
/// a connection of small requests, or one lingering after its EOF, holds a few KiB and not
/// 2 × [`BUF_SIZE`]: memory follows the traffic, not the number of connections.
pub const FIRST_BUF_SIZE: usize = 4 * 1024;

/// One direction's buffer, grown while reads fill it.
struct Buffer {
    bytes: Vec<u8>,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer {
            bytes: vec![0; FIRST_BUF_SIZE],
        }
    }

    /// Reads once from `from`; the bytes read are `self.bytes[..n]`. A read that fills the
    /// buffer doubles it (up to [`BUF_SIZE`]) for the next one; growing keeps the bytes read.
    /// Cancel-safe as `from.read()` is.
    async fn read_from<R: AsyncRead + Unpin>(&mut self, from: &mut R) -> io::Result<usize> {
        let n = from.read(&mut self.bytes).await?;
        if n == self.bytes.len() && n < BUF_SIZE {
            self.bytes.resize((n * 2).min(BUF_SIZE), 0);
        }
        Ok(n)
    }
}

/// Copies `from` to `to` until EOF, then flushes `to` (and shuts its writing down if `pass_eof`).
///
/// `to` is flushed whenever `from` has nothing more to read right away: a writer that batches
/// (a pod stream gathers writes into one WebSocket frame) sends a request as soon as it is
/// whole, and a bulk transfer still fills whole frames.
async fn pump<R, W>(from: &mut R, to: &mut W, pass_eof: bool) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Buffer::new();
    let mut moved = 0;
    let mut unflushed = false;
    loop {
        let n = match buf.read_from(from).now_or_never() {
            Some(read) => read?,
            None => {
                if unflushed {
                    to.flush().await?;
                }
                buf.read_from(from).await?
            }
        };
        if n == 0 {
            break;
        }
        to.write_all(&buf.bytes[..n]).await?;
        unflushed = true;
        moved += n as u64;
    }
    if pass_eof {
        to.shutdown().await?;
    } else {
        to.flush().await?;
    }
    Ok(moved)
}

/// Bytes moved in each direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client → pod.
    pub up: u64,
    /// Pod → client.
    pub down: u64,
}

/// Copies both ways between `client` and `pod`, holding the client's EOF (see the module doc).
pub async fn splice_holding_eof<C, P>(client: C, pod: P) -> io::Result<Moved>
where
    C: AsyncRead + AsyncWrite + Unpin,
    P: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut pod_rd, mut pod_wr) = tokio::io::split(pod);
    let mut moved = Moved::default();
    let up = pump(&mut client_rd, &mut pod_wr, false);
    tokio::pin!(up);
    let mut client_eof = false;
    let mut buf = Buffer::new();
    loop {
        let quiet = tokio::time::sleep(QUIET_AFTER_EOF);
        tokio::select! {
            res = &mut up, if !client_eof => {
                moved.up = res?;
                client_eof = true;
            }
            res = buf.read_from(&mut pod_rd) => {
                let n = res?;
                if n == 0 {
                    break;
                }
                client_wr.write_all(&buf.bytes[..n]).await?;
                client_wr.flush().await?;
                moved.down += n as u64;
            }
            () = quiet, if client_eof => break,
        }
    }
    client_wr.shutdown().await.ok();
    Ok(moved)
}

/// Copies both ways and passes each EOF on (for hops that have a half-close, such as SSH).
pub async fn splice<A, B>(a: A, b: B) -> io::Result<Moved>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_rd, mut a_wr) = tokio::io::split(a);
    let (mut b_rd, mut b_wr) = tokio::io::split(b);
    let (up, down) = tokio::try_join!(
        pump(&mut a_rd, &mut b_wr, true),
        pump(&mut b_rd, &mut a_wr, true)
    )?;
    Ok(Moved { up, down })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reply_after_client_eof_arrives_whole() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (pod, mut pod_peer) = tokio::io::duplex(1024);
        let pump = tokio::spawn(splice_holding_eof(client, pod));
        client_peer.write_all(b"PING\r\n").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut req = [0u8; 6];
        pod_peer.read_exact(&mut req).await.unwrap();
        assert_eq!(&req, b"PING\r\n");
        // The pod answers after the client's EOF, and then closes.
        pod_peer.write_all(b"+PONG\r\n").await.unwrap();
        drop(pod_peer);
        let mut reply = Vec::new();
        client_peer.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"+PONG\r\n");
        let moved = pump.await.unwrap().unwrap();
        assert_eq!(moved, Moved { up: 6, down: 7 });
    }

    #[tokio::test]
    async fn a_request_reaches_a_pod_stream_that_batches_writes() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (pod, mut pod_peer) = tokio::io::duplex(1024);
        // Like a pod stream, this writer sends only what was flushed.
        let pod = tokio::io::BufWriter::new(pod);
        let _pump = tokio::spawn(splice_holding_eof(client, pod));
        client_peer.write_all(b"PING\r\n").await.unwrap();
        let mut req = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), pod_peer.read_exact(&mut req))
            .await
            .expect("the request arrives while the client waits for the reply")
            .unwrap();
        assert_eq!(&req, b"PING\r\n");
        pod_peer.write_all(b"+PONG\r\n").await.unwrap();
        let mut reply = [0u8; 7];
        client_peer.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    }

    #[tokio::test]
    async fn buffer_grows_only_while_reads_fill_it() {
        let mut buf = Buffer::new();
        let (mut writer, mut reader) = tokio::io::duplex(1 << 20);
        for _ in 0..10 {
            writer.write_all(b"GET key\r\n").await.unwrap();
            assert_eq!(buf.read_from(&mut reader).await.unwrap(), 9);
        }
        assert_eq!(buf.bytes.len(), FIRST_BUF_SIZE);
        let bulk = vec![7u8; 1 << 20];
        let mut from = &bulk[..];
        let mut total = 0;
        loop {
            let n = buf.read_from(&mut from).await.unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, bulk.len());
        assert_eq!(buf.bytes.len(), BUF_SIZE);
    }

    #[tokio::test]
    async fn splice_moves_everything_and_passes_each_eof() {
        let (a, mut a_peer) = tokio::io::duplex(64 * 1024);
        let (b, mut b_peer) = tokio::io::duplex(64 * 1024);
        let pump = tokio::spawn(splice(a, b));
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let upload = sent.clone();
        let writer = tokio::spawn(async move {
            a_peer.write_all(&upload).await.unwrap();
            a_peer.shutdown().await.unwrap();
            a_peer
        });
        let mut got = Vec::new();
        b_peer.read_to_end(&mut got).await.unwrap();
        assert!(got == sent, "{} bytes arrived of {}", got.len(), sent.len());
        // The other direction still works after the first one's EOF.
        let mut a_peer = writer.await.unwrap();
        b_peer.write_all(b"bye").await.unwrap();
        drop(b_peer);
        let mut reply = Vec::new();
        a_peer.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"bye");
        let moved = pump.await.unwrap().unwrap();
        assert_eq!(
            moved,
            Moved {
                up: sent.len() as u64,
                down: 3
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_pod_after_eof_ends_the_connection() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (pod, _pod_peer) = tokio::io::duplex(1024);
        let pump = tokio::spawn(splice_holding_eof(client, pod));
        client_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        pump.await.unwrap().unwrap();
    }
}
