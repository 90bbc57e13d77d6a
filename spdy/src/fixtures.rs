//! Frames as kubectl 1.33 and the test cluster's kubelet stand-in wrote them, captured with
//! `TESTCLUSTER_SPDY_TAP` during `kubectl port-forward pod/redis :6379` and one connection that
//! sent `PING\r\n` and then EOF (the same bytes in the WebSocket tunnel and the classic upgrade).
//! kubectl's header blocks come from Go's compress/zlib with the SPDY/3 dictionary.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Codec, Config, Frame, Headers, Role, Session};

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// kubectl → server: the error stream's SYN_STREAM, at once its FIN (kubectl never writes on
/// the error stream), the data stream's SYN_STREAM, the data, and the data stream's FIN.
const KUBECTL_CONNECTION: &str = "
    800300010000003e 00000001 00000000 0000
    78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60666c6ec9c0c0c0590489c64c50f266
    3400000000ffff
    00000001 01000000
    8003000100000018 00000003 00000000 0000
    c2aa19540e2512d60b000000ffff
    00000003 00000006 50494e470d0a
    00000003 01000000";

/// server → kubectl: both SYN_REPLYs (empty headers), redis's answer, FIN on both streams.
const SERVER_CONNECTION: &str = "
    8003000200000014 00000001 78bbe3c6a7c26260606000000000ffff
    800300020000000c 00000003 020100000000ffff
    00000003 00000007 2b504f4e470d0a
    00000003 01000000
    00000001 01000000";

/// kubectl's keepalive PING (every 5 s, odd ids from 1); the server echoes the same bytes.
const KUBECTL_PING: &str = "80030006 00000004 00000001";

/// A second connection's SYN_STREAM in another session: the block reuses the zlib context of
/// the frames before it, so it decodes only after them.
const KUBECTL_SECOND_DATA_STREAM: &str = "
    800300010000001a 00000003 00000000 0000 826a469502954389848d04000000ffff";

fn decode_all(codec: &mut Codec, bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("kubectl's frames decode") {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

fn stream_headers(kind: &str) -> Headers {
    // Go sends the canonical names (Streamtype, Port, Requestid) lowercased, in the order its
    // header map iterated (unspecified in general: compare by name, except for a capture).
    Headers::new()
        .with("streamtype", kind)
        .with("port", "6379")
        .with("requestid", "0")
}

#[test]
fn kubectls_syn_streams_decode_into_its_headers() {
    let frames = decode_all(&mut Codec::new(1 << 20), &hex(KUBECTL_CONNECTION));
    let syn = |stream, kind| Frame::SynStream {
        stream,
        associated: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: stream_headers(kind),
    };
    let data = |stream, fin, data: &'static [u8]| Frame::Data {
        stream,
        fin,
        data: bytes::Bytes::from_static(data),
    };
    assert_eq!(
        frames,
        vec![
            syn(1, "error"),
            data(1, true, b""),
            syn(3, "data"),
            data(3, false, b"PING\r\n"),
            data(3, true, b""),
        ]
    );
    let Frame::SynStream { headers, .. } = &frames[2] else {
        unreachable!()
    };
    assert_eq!(headers.get("streamType"), Some("data"));
    assert_eq!(headers.get("port"), Some("6379"));
    assert_eq!(headers.get("requestID"), Some("0"));
}

#[test]
fn a_later_syn_stream_needs_the_sessions_zlib_context() {
    let first = hex(
        "800300010000003e0000000100000000000078f9e3c6a7c202253a48f95b044eea66c6e6960c0c0c9c\
         4590f8ca04a5634603704a2c294a4dcc851636aca9a0a800000000ffff",
    );
    let second = hex(KUBECTL_SECOND_DATA_STREAM);
    assert!(Codec::new(1024)
        .decode(&mut BytesMut::from(&second[..]))
        .is_err());
    let mut codec = Codec::new(1024);
    let frames = decode_all(&mut codec, &first);
    let Frame::SynStream { headers, .. } = &frames[0] else {
        panic!("{frames:?}")
    };
    assert_eq!(headers.get("streamtype"), Some("error"));
    let frames = decode_all(&mut codec, &second);
    let Frame::SynStream {
        stream: 3, headers, ..
    } = &frames[0]
    else {
        panic!("{frames:?}")
    };
    assert_eq!(headers.get("streamtype"), Some("data"));
    assert_eq!(headers.get("port"), Some("6379"));
}

#[test]
fn the_servers_frames_encode_as_kubectl_read_them() {
    let mut codec = Codec::new(1 << 20);
    let mut wire = BytesMut::new();
    let reply = |stream| Frame::SynReply {
        stream,
        fin: false,
        headers: Headers::new(),
    };
    let frames = vec![
        reply(1),
        reply(3),
        Frame::Data {
            stream: 3,
            fin: false,
            data: bytes::Bytes::from_static(b"+PONG\r\n"),
        },
        Frame::Data {
            stream: 3,
            fin: true,
            data: bytes::Bytes::new(),
        },
        Frame::Data {
            stream: 1,
            fin: true,
            data: bytes::Bytes::new(),
        },
    ];
    for frame in frames {
        codec.encode(frame, &mut wire).expect("encode");
    }
    assert_eq!(wire.to_vec(), hex(SERVER_CONNECTION));
}

#[test]
fn kubectls_ping_and_this_sides_window_update_have_the_wire_layout() {
    let ping = hex(KUBECTL_PING);
    assert_eq!(
        decode_all(&mut Codec::new(1024), &ping),
        vec![Frame::Ping { id: 1 }]
    );
    // kubectl (spdystream) never sends WINDOW_UPDATE; this is the session-level one a podtun
    // session sends to grow its receive window from 64 KiB to 1 MiB.
    let mut wire = BytesMut::new();
    Codec::new(1024)
        .encode(
            Frame::WindowUpdate {
                stream: 0,
                delta: (1 << 20) - (64 << 10),
            },
            &mut wire,
        )
        .expect("encode");
    assert_eq!(wire.to_vec(), hex("80030009 00000008 00000000 000f0000"));
}

/// A server session fed kubectl's bytes accepts the pair, reads the data to EOF, and answers
/// with exactly what kubectl got from the kubelet stand-in.
#[tokio::test]
async fn a_server_session_serves_kubectls_bytes() {
    let (mut kubectl, io) = tokio::io::duplex(64 * 1024);
    let config = Config {
        windows: false,
        ..Config::default()
    };
    let server = Session::new(io, Role::Server, config);
    kubectl
        .write_all(&hex(KUBECTL_CONNECTION))
        .await
        .expect("write");
    let mut error = server.accept().await.expect("error stream");
    let mut data = server.accept().await.expect("data stream");
    assert_eq!(error.headers(), &stream_headers("error"));
    assert_eq!(data.headers(), &stream_headers("data"));
    error.reply(Headers::new());
    data.reply(Headers::new());
    let mut got = Vec::new();
    data.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"PING\r\n");
    data.write_all(b"+PONG\r\n").await.expect("write");
    data.shutdown().await.expect("FIN");
    error.shutdown().await.expect("FIN");
    let want = hex(SERVER_CONNECTION);
    let mut back = vec![0; want.len()];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        kubectl.read_exact(&mut back),
    )
    .await
    .expect("in time")
    .expect("read");
    assert_eq!(back, want);
}
