use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::{dictionary, RstStatus, MAX_STREAM_ID};

/// The SYN_STREAM kubectl sends for the error stream of a port-forward pair.
fn error_stream(stream: u32) -> Frame {
    Frame::SynStream {
        stream,
        associated: 0,
        priority: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::new()
            .with("streamType", "error")
            .with("port", "6379")
            .with("requestID", "0"),
    }
}

fn every_frame() -> Vec<Frame> {
    vec![
        error_stream(1),
        Frame::SynReply {
            stream: 1,
            fin: false,
            headers: Headers::new().with("streamtype", "error"),
        },
        Frame::Data {
            stream: 3,
            fin: false,
            data: Bytes::from_static(b"PING\r\n"),
        },
        Frame::Data {
            stream: 3,
            fin: true,
            data: Bytes::new(),
        },
        Frame::RstStream {
            stream: 5,
            status: RstStatus::CANCEL,
        },
        Frame::Settings {
            clear: false,
            settings: vec![Setting {
                flags: 0,
                id: 7,
                value: 1 << 20,
            }],
        },
        Frame::Ping { id: 1 },
        Frame::GoAway {
            last_good: 7,
            status: crate::GOAWAY_OK,
        },
        Frame::Headers {
            stream: 3,
            fin: true,
            headers: Headers::new().with("x", "y"),
        },
        Frame::WindowUpdate {
            stream: 0,
            delta: 65536,
        },
        Frame::SynStream {
            stream: MAX_STREAM_ID,
            associated: 0,
            priority: 7,
            fin: true,
            unidirectional: true,
            headers: Headers::new(),
        },
    ]
}

#[test]
fn every_frame_survives_a_round_trip_through_one_buffer() {
    let (mut sender, mut receiver) = (Codec::new(1 << 20), Codec::new(1 << 20));
    let mut wire = BytesMut::new();
    for frame in every_frame() {
        sender.encode(frame, &mut wire).unwrap();
    }
    let mut back = Vec::new();
    while let Some(frame) = receiver.decode(&mut wire).unwrap() {
        back.push(frame);
    }
    assert_eq!(back, every_frame());
    assert!(wire.is_empty());
}

#[test]
fn frames_arriving_a_byte_at_a_time_decode_the_same() {
    let (mut sender, mut receiver) = (Codec::new(1 << 20), Codec::new(1 << 20));
    let mut wire = BytesMut::new();
    for frame in every_frame() {
        sender.encode(frame, &mut wire).unwrap();
    }
    let (mut buf, mut back) = (BytesMut::new(), Vec::new());
    for byte in wire.iter() {
        buf.extend_from_slice(&[*byte]);
        while let Some(frame) = receiver.decode(&mut buf).unwrap() {
            back.push(frame);
        }
    }
    assert_eq!(back, every_frame());
}

/// One zlib stream per direction: the second identical header block costs a few bytes only,
/// and a receiver that missed the first cannot read it.
#[test]
fn header_blocks_share_one_compression_context() {
    let mut sender = Codec::new(1024);
    let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
    sender.encode(error_stream(1), &mut first).unwrap();
    sender.encode(error_stream(3), &mut second).unwrap();
    assert!(second.len() < first.len(), "{second:?} vs {first:?}");
    let mut fresh = Codec::new(1024);
    assert!(fresh.decode(&mut second.clone()).is_err());
    let mut receiver = Codec::new(1024);
    assert_eq!(receiver.decode(&mut first).unwrap(), Some(error_stream(1)));
    assert_eq!(receiver.decode(&mut second).unwrap(), Some(error_stream(3)));
}

/// The header block is zlib with the SPDY/3 dictionary as every other implementation reads
/// it: CPython's zlib (the C library) inflates what the codec deflates.
#[test]
fn another_zlib_inflates_the_header_block_with_the_spdy3_dictionary() {
    assert_eq!(dictionary().len(), 1423);
    let mut wire = BytesMut::new();
    Codec::new(1024).encode(error_stream(1), &mut wire).unwrap();
    // 8 bytes of frame header, 10 of SYN_STREAM fields, then the block.
    let block = &wire[18..];
    let dir = tempfile_dir();
    std::fs::write(dir.join("dict"), dictionary()).unwrap();
    std::fs::write(dir.join("block"), block).unwrap();
    let script = "import sys, zlib\n\
         d = open(sys.argv[1] + '/dict', 'rb').read()\n\
         b = open(sys.argv[1] + '/block', 'rb').read()\n\
         o = zlib.decompressobj(zdict=d)\n\
         sys.stdout.buffer.write(o.decompress(b) + o.flush(zlib.Z_SYNC_FLUSH))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, dir.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "{out:?}");
    let Frame::SynStream { headers, .. } = error_stream(1) else {
        unreachable!()
    };
    assert_eq!(out.stdout, headers.encode());
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("podtun-spdy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("version 2", vec![0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
        ("short PING", vec![0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0]),
        ("data on stream 0", vec![0, 0, 0, 0, 0, 0, 0, 1, 9]),
        (
            "WINDOW_UPDATE of 0",
            vec![0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0],
        ),
        (
            "SYN_STREAM with garbage for headers",
            vec![
                0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
            ],
        ),
        (
            "SETTINGS count lies",
            vec![0x80, 3, 0, 4, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
        ),
        ("oversized data", vec![0, 0, 0, 1, 0, 0x10, 0, 0]),
        ("oversized control", vec![0x80, 3, 0, 1, 0, 0x10, 0, 0]),
    ];
    for (what, bytes) in cases {
        let mut codec = Codec::new(1024);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(codec.decode(&mut buf).is_err(), "{what} was accepted");
    }
}

/// A header block that inflates past the bound is refused, whatever it compresses to.
#[test]
fn a_zlib_bomb_is_refused() {
    let big = "x".repeat(MAX_HEADER_BLOCK * 2);
    let mut wire = BytesMut::new();
    let frame = Frame::SynReply {
        stream: 1,
        fin: false,
        headers: Headers::new().with("bomb", big),
    };
    Codec::new(1024).encode(frame, &mut wire).unwrap();
    assert!(wire.len() < MAX_CONTROL_FRAME, "{} bytes", wire.len());
    assert!(matches!(
        Codec::new(1024).decode(&mut wire),
        Err(Error::HeaderBlockTooLarge { .. })
    ));
}

#[test]
fn unknown_control_frames_are_skipped() {
    let mut buf = BytesMut::from(&[0x80, 3, 0, 0x63, 0, 0, 0, 2, 1, 2][..]);
    Codec::new(1024)
        .encode(Frame::Ping { id: 3 }, &mut buf)
        .unwrap();
    assert_eq!(
        Codec::new(1024).decode(&mut buf).unwrap(),
        Some(Frame::Ping { id: 3 })
    );
}
