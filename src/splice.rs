//! Byte pumps between two streams.
//!
//! Towards a pod, a client's EOF is *held*: kube's WebSocket port-forward (v4 channel protocol)
//! has no half-close, so passing the EOF on would close the whole stream and cut off the reply.
//! The reply keeps flowing until the pod side closes, or until the pod has been quiet for
//! [`QUIET_AFTER_EOF`] after the client's EOF (request-then-EOF clients such as `nc -N` or a
//! piped `redis-cli` then get their whole answer and still see the connection end).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a pod may stay silent after the client's EOF before the connection is closed.
///
/// A TCP peer's `close()` and `shutdown(SHUT_WR)` look the same from here, so every closed
/// connection lingers this long on the kube leg (and, over the exec fallback, keeps its SSH
/// session): short enough that a browser's churn of connections does not pile up, long enough
/// for a server to start its reply (each byte from the pod restarts the wait).
pub const QUIET_AFTER_EOF: Duration = Duration::from_secs(2);

/// Buffer size of each direction (large enough for bulk transfers, small enough for 100s of
/// connections).
pub const BUF_SIZE: usize = 64 * 1024;

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
    let up = async {
        let n = tokio::io::copy_buf(
            &mut tokio::io::BufReader::with_capacity(BUF_SIZE, &mut client_rd),
            &mut pod_wr,
        )
        .await?;
        pod_wr.flush().await?;
        Ok::<u64, io::Error>(n)
    };
    tokio::pin!(up);
    let mut client_eof = false;
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let quiet = tokio::time::sleep(QUIET_AFTER_EOF);
        tokio::select! {
            res = &mut up, if !client_eof => {
                moved.up = res?;
                client_eof = true;
            }
            res = pod_rd.read(&mut buf) => {
                let n = res?;
                if n == 0 {
                    break;
                }
                client_wr.write_all(&buf[..n]).await?;
                moved.down += n as u64;
            }
            () = quiet, if client_eof => break,
        }
    }
    client_wr.shutdown().await.ok();
    Ok(moved)
}

/// Copies both ways and passes each EOF on (for hops that have a half-close, such as SSH).
pub async fn splice<A, B>(mut a: A, mut b: B) -> io::Result<Moved>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (up, down) =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF_SIZE, BUF_SIZE).await?;
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
