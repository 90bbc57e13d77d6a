//! The driver against an in-memory WebSocket server that speaks as the kubelet does.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{start, PodStream, FRAME_MAX, UNCLAIMED_LIMIT};

const PORT: u16 = 6379;
type Server = WebSocketStream<DuplexStream>;

/// `count` pairs to `PORT` and the server end, port headers sent.
async fn connect(count: usize, claimed: bool) -> (Vec<PodStream>, Server) {
    let (a, b) = tokio::io::duplex(4 << 20);
    let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let mut server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    for channel in 0..2 * count as u8 {
        server
            .send(frame(channel, &PORT.to_le_bytes()))
            .await
            .unwrap();
    }
    (start(client, PORT, count, claimed), server)
}

fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut frame = vec![channel];
    frame.extend_from_slice(payload);
    Message::Binary(Bytes::from(frame))
}

/// The next binary frame the client sent.
async fn next_frame(server: &mut Server) -> Bytes {
    loop {
        match server.next().await.unwrap().unwrap() {
            Message::Binary(frame) => return frame,
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn read_n(stream: &mut PodStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    stream.read_exact(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn data_flows_both_ways_without_the_port_headers() {
    let (mut streams, mut server) = connect(1, true).await;
    let s = &mut streams[0];
    server.send(frame(0, b"+PONG\r\n")).await.unwrap();
    assert_eq!(read_n(s, 7).await, b"+PONG\r\n");
    s.write_all(b"PING\r\n").await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(&next_frame(&mut server).await[..], b"\x00PING\r\n");
}

#[tokio::test]
async fn the_same_port_twice_makes_independent_pairs() {
    let (mut streams, mut server) = connect(2, true).await;
    server.send(frame(2, b"second")).await.unwrap();
    server.send(frame(0, b"first")).await.unwrap();
    assert_eq!(read_n(&mut streams[0], 5).await, b"first");
    assert_eq!(read_n(&mut streams[1], 6).await, b"second");
    streams[1].write_all(b"to two").await.unwrap();
    streams[1].flush().await.unwrap();
    assert_eq!(&next_frame(&mut server).await[..], b"\x02to two");
}

#[tokio::test]
async fn error_text_ends_the_pair_and_reaches_the_error_future() {
    let (mut streams, mut server) = connect(2, true).await;
    let refused = "error forwarding port 6379 to pod demo/redis: dial tcp4 127.0.0.1:6379: connect: connection refused";
    server.send(frame(1, refused.as_bytes())).await.unwrap();
    assert_eq!(streams[0].error().await.as_deref(), Some(refused));
    let err = streams[0].read(&mut [0; 8]).await.unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(!streams[0].is_alive());
    assert!(
        streams[1].is_alive(),
        "the other pair of the socket lives on"
    );
}

#[tokio::test]
async fn shutdown_keeps_the_pair_and_dropping_every_stream_closes_the_socket() {
    let (mut streams, mut server) = connect(1, true).await;
    let s = &mut streams[0];
    s.write_all(b"request").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(&next_frame(&mut server).await[..], b"\x00request");
    server.send(frame(0, b"reply after EOF")).await.unwrap();
    assert_eq!(read_n(s, 15).await, b"reply after EOF");
    drop(streams);
    assert!(matches!(server.next().await, Some(Ok(Message::Close(_)))));
}

#[tokio::test]
async fn server_close_ends_reads_with_eof_and_writes_with_an_error() {
    let (mut streams, mut server) = connect(1, true).await;
    server.close(None).await.unwrap();
    let s = &mut streams[0];
    assert_eq!(s.read(&mut [0; 8]).await.unwrap(), 0);
    assert_eq!(s.error().await, None);
    assert!(!s.is_alive());
    let written = async { s.write_all(b"late").await.and(s.flush().await) };
    assert!(written.await.is_err());
}

#[tokio::test]
async fn bulk_writes_go_out_in_frames_of_at_most_frame_max() {
    let (mut streams, mut server) = connect(1, true).await;
    let data: Vec<u8> = (0..3 * FRAME_MAX + 5).map(|i| (i % 251) as u8).collect();
    let s = &mut streams[0];
    let write = async {
        s.write_all(&data).await.unwrap();
        s.flush().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        while got.len() < data.len() {
            let frame = next_frame(&mut server).await;
            assert_eq!(frame[0], 0);
            assert!(frame.len() - 1 <= FRAME_MAX, "frame of {}", frame.len() - 1);
            got.extend_from_slice(&frame[1..]);
        }
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(got == data, "bytes changed on the way");
}

#[tokio::test]
async fn unread_data_evicts_an_unclaimed_pair_and_only_it() {
    let (mut streams, mut server) = connect(2, false).await;
    for _ in 0..=UNCLAIMED_LIMIT / 16384 {
        server.send(frame(0, &[7; 16384])).await.unwrap();
    }
    server.send(frame(2, b"greeting")).await.unwrap();
    assert!(streams[1].claim());
    // The socket routes in order: once pair 1 has its data, pair 0 got all of its own.
    assert_eq!(read_n(&mut streams[1], 8).await, b"greeting");
    assert!(!streams[0].is_alive());
    assert!(!streams[0].claim(), "an evicted pair is never handed out");
}

#[tokio::test(start_paused = true)]
async fn pings_keep_the_socket_and_silence_ends_it() {
    let (streams, mut server) = connect(1, true).await;
    // An answering server (tungstenite answers pings as it reads) keeps the socket open.
    let pings = async {
        let mut pings = 0;
        while let Some(Ok(message)) = server.next().await {
            if matches!(message, Message::Ping(_)) {
                pings += 1;
                if pings == 3 {
                    break;
                }
            }
        }
        pings
    };
    assert_eq!(pings.await, 3);
    assert!(streams[0].is_alive());
    // A server that stops reading answers nothing: two periods later the socket is given up.
    let mut s = streams.into_iter().next().unwrap();
    let err = s.read(&mut [0; 8]).await.unwrap_err();
    assert!(err.to_string().contains("stopped answering"), "{err}");
}

#[tokio::test]
async fn a_slow_pair_holds_back_reading_only_once_its_queue_is_full() {
    let (mut streams, mut server) = connect(2, true).await;
    for _ in 0..=super::PAIR_QUEUE {
        server.send(frame(0, b"0123456789")).await.unwrap();
    }
    server.send(frame(2, b"behind")).await.unwrap();
    // Pair 0's queue is full and one more frame waits for it, so pair 1's data waits too;
    // writes still go out meanwhile.
    streams[1].write_all(b"still writing").await.unwrap();
    streams[1].flush().await.unwrap();
    assert_eq!(&next_frame(&mut server).await[..], b"\x02still writing");
    let mut one = [0; 6];
    let early = tokio::time::timeout(Duration::from_millis(50), streams[1].read(&mut one));
    assert!(early.await.is_err(), "pair 1 waits behind the full pair 0");
    let drained = read_n(&mut streams[0], 10 * (super::PAIR_QUEUE + 1)).await;
    assert_eq!(drained.len(), 10 * (super::PAIR_QUEUE + 1));
    assert_eq!(read_n(&mut streams[1], 6).await, b"behind");
}
