use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::headers::Headers;

const WITHIN: Duration = Duration::from_secs(30);

fn pair(client: Config, server: Config) -> (Session, Session) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    (
        Session::new(a, Role::Client, client),
        Session::new(b, Role::Server, server),
    )
}

fn headers(kind: &str, request: usize) -> Headers {
    Headers::new()
        .with("streamType", kind)
        .with("port", "6379")
        .with("requestID", request.to_string())
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WITHIN, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than {WITHIN:?}"))
}

/// Echoes every accepted stream back to its sender, FIN included.
fn echo_server(server: Session) {
    tokio::spawn(async move {
        while let Some(mut stream) = server.accept().await {
            stream.reply(Headers::new());
            tokio::spawn(async move {
                let mut buf = vec![0; 16 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn headers_and_pipelined_data_reach_the_server_before_any_reply() {
    let (client, server) = pair(Config::default(), Config::default());
    // Both streams and their data are queued before the server has even accepted.
    let mut error = client.open(headers("error", 0)).expect("open error stream");
    let mut data = client.open(headers("data", 0)).expect("open data stream");
    data.write_all(b"PING\r\n")
        .await
        .expect("write before reply");
    assert_eq!((error.id(), data.id()), (1, 3));

    let first = within("accept", server.accept()).await.expect("a stream");
    let mut second = within("accept", server.accept()).await.expect("a stream");
    assert_eq!(first.headers().get("streamtype"), Some("error"));
    assert_eq!(second.headers().get("streamType"), Some("data"));
    assert_eq!(second.headers().get("port"), Some("6379"));
    assert_eq!(second.headers().get("requestid"), Some("0"));
    let mut got = [0; 6];
    within("read", second.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(&got, b"PING\r\n");

    first.reply(Headers::new().with("x", "1"));
    second.write_all(b"+PONG\r\n").await.expect("server write");
    assert_eq!(
        within("reply", error.wait_reply())
            .await
            .expect("reply")
            .get("x"),
        Some("1")
    );
    let mut pong = [0; 7];
    within("read", data.read_exact(&mut pong))
        .await
        .expect("read");
    assert_eq!(&pong, b"+PONG\r\n");
    // The server's write answered its stream on its own.
    within("reply", data.wait_reply()).await.expect("reply");
    error.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn half_close_both_ways_leaves_the_other_direction_open() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client.open(headers("data", 0)).expect("open");
    stream.write_all(b"request").await.expect("write");
    stream.shutdown().await.expect("FIN");
    assert!(stream.write_all(b"late").await.is_err(), "write after FIN");

    let mut accepted = within("accept", server.accept()).await.expect("stream");
    let mut got = Vec::new();
    within("read to EOF", accepted.read_to_end(&mut got))
        .await
        .expect("read");
    assert_eq!(got, b"request");
    // The client's FIN did not close the way back.
    accepted
        .write_all(b"reply")
        .await
        .expect("write after peer FIN");
    accepted.shutdown().await.expect("FIN");
    let mut back = Vec::new();
    within("read to EOF", stream.read_to_end(&mut back))
        .await
        .expect("read");
    assert_eq!(back, b"reply");
    drop((stream, accepted));
    within("streams forgotten", async {
        while client.stream_count() + server.stream_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn many_streams_carry_their_own_bytes_concurrently() {
    let (client, server) = pair(Config::default(), Config::default());
    echo_server(server);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut stream = client.open(headers("data", i)).expect("open");
        tasks.spawn(async move {
            let sent = pattern(10_000 + i * 37, i as u8);
            let (mut rx, mut tx) = tokio::io::split(&mut stream);
            let write = async {
                tx.write_all(&sent).await.expect("write");
                tx.shutdown().await.expect("FIN");
            };
            let mut got = Vec::new();
            let read = rx.read_to_end(&mut got);
            let ((), read) = tokio::join!(write, read);
            read.expect("read");
            assert!(got == sent, "stream {i} got other bytes");
        });
    }
    within("200 echoes", async {
        while let Some(done) = tasks.join_next().await {
            done.expect("stream task");
        }
    })
    .await;
}

#[tokio::test]
async fn large_transfers_stay_within_the_windows() {
    let small = Config {
        stream_window: 16 * 1024,
        session_window: 64 * 1024,
        write_buffer: 32 * 1024,
        ..Config::default()
    };
    let (client, server) = pair(small.clone(), small);
    let mut stream = client.open(headers("data", 0)).expect("open");
    let mut accepted = within("accept", server.accept()).await.expect("stream");
    let sent = pattern(8 << 20, 7);
    let expected = sent.clone();
    let writer = tokio::spawn(async move {
        stream.write_all(&sent).await.expect("write");
        stream.shutdown().await.expect("FIN");
        stream
    });
    // A slow reader: the writer must wait on windows, never overrun the reader's buffer.
    let mut got = Vec::new();
    let mut buf = vec![0; 4096];
    loop {
        let n = within("read", accepted.read(&mut buf)).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let buffered = {
            let state = accepted.shared.lock();
            state.streams.get(&accepted.id).map_or(0, |st| st.recv_len)
        };
        assert!(buffered <= 16 * 1024, "{buffered} bytes buffered");
        if got.len() % (1 << 20) < 4096 {
            tokio::task::yield_now().await;
        }
    }
    assert!(got == expected, "the 8 MiB came back different");
    within("writer", writer).await.expect("writer task");
    assert!(client.peer_keeps_windows() && server.peer_keeps_windows());
}

/// A peer that keeps no windows (spdystream, as in the kubelet and kubectl) is never waited on:
/// the sender goes past 64 KiB without any WINDOW_UPDATE.
#[tokio::test]
async fn a_peer_without_windows_is_not_waited_on() {
    let no_windows = Config {
        windows: false,
        ..Config::default()
    };
    let (client, server) = pair(Config::default(), no_windows);
    echo_server(server);
    let mut stream = client.open(headers("data", 0)).expect("open");
    let sent = pattern(1 << 20, 3);
    let (mut rx, mut tx) = tokio::io::split(&mut stream);
    let write = async {
        tx.write_all(&sent).await.expect("write");
        tx.shutdown().await.expect("FIN");
    };
    let mut got = Vec::new();
    let read = rx.read_to_end(&mut got);
    let ((), read) = within("1 MiB echo", async { tokio::join!(write, read) }).await;
    read.expect("read");
    assert!(got == sent);
    assert!(!client.peer_keeps_windows());
}

#[tokio::test]
async fn a_reset_fails_the_peer_and_leaves_other_streams_alone() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut doomed = client.open(headers("data", 0)).expect("open");
    let mut other = client.open(headers("data", 1)).expect("open");
    doomed.write_all(b"x").await.expect("write");
    other.write_all(b"y").await.expect("write");
    let mut a = within("accept", server.accept()).await.expect("stream");
    let mut b = within("accept", server.accept()).await.expect("stream");

    a.reset();
    let err = within("read after reset", doomed.read(&mut [0; 8]))
        .await
        .expect_err("the reset reaches the client");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(doomed.write_all(b"more").await.is_err());

    // Dropping a stream that never sent FIN resets it too.
    drop(other);
    let err = within("read after drop", b.read_to_end(&mut Vec::new()))
        .await
        .expect_err("the drop reaches the server");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);

    // The session itself is fine.
    let mut fresh = client.open(headers("data", 2)).expect("open");
    fresh.write_all(b"z").await.expect("write");
    let mut c = within("accept", server.accept()).await.expect("stream");
    let mut got = [0; 1];
    within("read", c.read_exact(&mut got)).await.expect("read");
    assert_eq!(&got, b"z");
    let _ = a.read(&mut [0; 1]).await;
}

#[tokio::test]
async fn pings_are_answered_both_ways_and_keepalive_notices_a_silent_peer() {
    let (client, server) = pair(Config::default(), Config::default());
    within("client ping", client.ping()).await.expect("pong");
    within("server ping", server.ping()).await.expect("pong");

    // A peer that reads but never answers: a raw duplex end nobody speaks SPDY on.
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let config = Config {
        keepalive: Some((Duration::from_millis(50), Duration::from_millis(200))),
        ..Config::default()
    };
    let lonely = Session::new(a, Role::Client, config);
    tokio::spawn(async move {
        let mut sink = vec![0; 4096];
        while b.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let why = within("keepalive gives up", lonely.closed()).await;
    assert!(why.contains("PING"), "{why}");
    assert!(lonely.open(headers("data", 0)).is_err());
}

#[tokio::test]
async fn goaway_stops_new_streams_and_ends_accepting() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut before = client.open(headers("data", 0)).expect("open");
    before.write_all(b"a").await.expect("write");
    let mut accepted = within("accept", server.accept()).await.expect("stream");
    server.goaway();
    within("client sees GOAWAY", async {
        while client.open(headers("data", 9)).is_ok_and(|s| {
            s.reset();
            true
        }) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(within("accept after GOAWAY", client.accept())
        .await
        .is_none());
    // The stream opened before goes on.
    accepted.write_all(b"b").await.expect("write");
    let mut got = [0; 1];
    within("read", before.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(&got, b"b");
}

#[tokio::test]
async fn a_malformed_frame_ends_the_session_with_an_error() {
    let (a, mut b) = tokio::io::duplex(1024);
    let server = Session::new(a, Role::Server, Config::default());
    // A control frame of version 2.
    b.write_all(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .expect("write");
    let why = within("session ends", server.closed()).await;
    assert!(why.contains("version 2"), "{why}");
    assert!(within("accept", server.accept()).await.is_none());
}

#[tokio::test]
async fn dropping_the_session_fails_its_streams() {
    let (client, server) = pair(Config::default(), Config::default());
    let mut stream = client.open(headers("data", 0)).expect("open");
    stream.write_all(b"a").await.expect("write");
    let mut accepted = within("accept", server.accept()).await.expect("stream");
    drop(client);
    assert!(within("read", stream.read(&mut [0; 1])).await.is_err());
    assert!(within("server read", accepted.read_to_end(&mut Vec::new()))
        .await
        .is_err());
}
