//! Arbitrary bytes from a peer, cut into arbitrary reads: decoding ends in frames or an error,
//! never a panic, a hang or unbounded memory. Input that starts with a valid session's header
//! blocks reaches the zlib paths too: the first byte picks one of them as a prefix.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use podtun_spdy::{Codec, Frame, Headers};
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    let mut wire = BytesMut::new();
    if choice & 1 == 1 {
        // A real SYN_STREAM first, so that later header blocks continue its zlib stream.
        let syn = Frame::SynStream {
            stream: 1,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new().with("streamType", "data").with("port", "8888"),
        };
        let _ = Codec::new(1 << 16).encode(syn, &mut wire);
    }
    wire.extend_from_slice(rest);
    let step = usize::from(choice >> 1).max(1);
    let mut codec = Codec::new(1 << 16);
    let mut buf = BytesMut::new();
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Nothing waits in the buffer beyond one frame's bound.
        assert!(buf.len() <= 8 + (1 << 16) + step);
    }
});
