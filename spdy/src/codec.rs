//! Whole frames to and from bytes, with the session's two zlib contexts.
//!
//! Bounds: a data frame may carry at most the codec's `max_data` bytes, a control frame
//! [`MAX_CONTROL_FRAME`], and a header block inflates to at most [`MAX_HEADER_BLOCK`]. Past a
//! bound, or on anything malformed, decoding fails; the session must then end (the zlib
//! context cannot be trusted after a bad block).

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use crate::error::Error;
use crate::frame::{
    kind, Frame, Setting, FLAG_CLEAR_SETTINGS, FLAG_FIN, FLAG_UNIDIRECTIONAL, VERSION,
};
use crate::headers::Headers;
use crate::zlib::{Deflater, Inflater};

/// Largest control frame accepted (Kubernetes' header blocks are tens of bytes).
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// Largest header block after inflating.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The protocol's own limit on a frame's length (24 bits).
const MAX_LENGTH: usize = 0xff_ffff;

/// One session's framing: decodes what the peer sends, encodes what this side sends.
pub struct Codec {
    max_data: usize,
    inflater: Inflater,
    deflater: Deflater,
}

impl Codec {
    /// A codec accepting data frames of up to `max_data` bytes.
    pub fn new(max_data: usize) -> Codec {
        Codec {
            max_data: max_data.min(MAX_LENGTH),
            inflater: Inflater::new(),
            deflater: Deflater::new(),
        }
    }

    fn decode_control(
        &mut self,
        kind: u16,
        flags: u8,
        body: &[u8],
    ) -> Result<Option<Frame>, Error> {
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            kind::SYN_STREAM => self.decode_syn_stream(flags, fin, body)?,
            kind::SYN_REPLY => self.decode_syn_reply(fin, body)?,
            kind::HEADERS => self.decode_headers_frame(fin, body)?,
            kind::RST_STREAM => decode_rst_stream(body)?,
            kind::SETTINGS => decode_settings(flags, body)?,
            kind::PING => decode_ping(body)?,
            kind::GOAWAY => decode_goaway(body)?,
            kind::WINDOW_UPDATE => decode_window_update(body)?,
            // Unknown control frames are ignored (§2.2.1).
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }

    /// SYN_STREAM: stream id, associated stream, priority, slot, header block.
    fn decode_syn_stream(&mut self, flags: u8, fin: bool, mut body: &[u8]) -> Result<Frame, Error> {
        let stream = stream_id(&mut body)?;
        let associated = take_u32(&mut body)? & 0x7fff_ffff;
        let priority = take_u8(&mut body)? >> 5;
        let _slot = take_u8(&mut body)?;
        let headers = self.headers(body)?;
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        Ok(Frame::SynStream {
            stream,
            associated,
            priority,
            fin,
            unidirectional,
            headers,
        })
    }

    /// SYN_REPLY: stream id, header block.
    fn decode_syn_reply(&mut self, fin: bool, mut body: &[u8]) -> Result<Frame, Error> {
        let stream = stream_id(&mut body)?;
        Ok(Frame::SynReply {
            stream,
            fin,
            headers: self.headers(body)?,
        })
    }

    /// HEADERS: stream id, header block.
    fn decode_headers_frame(&mut self, fin: bool, mut body: &[u8]) -> Result<Frame, Error> {
        let stream = stream_id(&mut body)?;
        Ok(Frame::Headers {
            stream,
            fin,
            headers: self.headers(body)?,
        })
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, Error> {
        let block = self.inflater.decompress(compressed, MAX_HEADER_BLOCK)?;
        Headers::decode(&block)
    }

    /// SYN_REPLY and HEADERS: a stream id, then the header block.
    fn encode_reply(
        &mut self,
        dst: &mut BytesMut,
        kind: u16,
        stream: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), Error> {
        check_stream(stream)?;
        let block = self.encode_headers(headers)?;
        control(dst, kind, flag(fin, FLAG_FIN), 4 + block.len())?;
        dst.put_u32(stream);
        dst.put_slice(&block);
        Ok(())
    }

    fn encode_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.deflater.compress(&headers.encode(), &mut out)?;
        Ok(out)
    }
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            let Some(head) = src.first_chunk::<8>() else {
                return Ok(None);
            };
            let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let flags = head[4];
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            let control = word & 0x8000_0000 != 0;
            let max = if control {
                MAX_CONTROL_FRAME
            } else {
                self.max_data
            };
            if len > max {
                return Err(Error::FrameTooLarge { len, max });
            }
            if src.len() < 8 + len {
                src.reserve(8 + len - src.len());
                return Ok(None);
            }
            src.advance(8);
            let body = src.split_to(len);
            if !control {
                let stream = word & 0x7fff_ffff;
                if stream == 0 {
                    return Err(Error::Malformed("data frame on stream 0"));
                }
                let fin = flags & FLAG_FIN != 0;
                return Ok(Some(Frame::Data {
                    stream,
                    fin,
                    data: body.freeze(),
                }));
            }
            let version = ((word >> 16) & 0x7fff) as u16;
            if version != VERSION {
                return Err(Error::UnsupportedVersion(version));
            }
            if let Some(frame) = self.decode_control(word as u16, flags, &body)? {
                return Ok(Some(frame));
            }
        }
    }
}

/// RST_STREAM: stream id, status.
fn decode_rst_stream(mut body: &[u8]) -> Result<Frame, Error> {
    exact(body, 8)?;
    let stream = stream_id(&mut body)?;
    Ok(Frame::RstStream {
        stream,
        status: take_u32(&mut body)?,
    })
}

/// SETTINGS: a count, then (flags and id, value) pairs.
fn decode_settings(flags: u8, mut body: &[u8]) -> Result<Frame, Error> {
    let count = take_u32(&mut body)? as usize;
    if body.len()
        != count
            .checked_mul(8)
            .ok_or(Error::Malformed("SETTINGS count"))?
    {
        return Err(Error::Malformed("SETTINGS length does not match its count"));
    }
    let settings = (0..count)
        .map(|_| {
            let word = take_u32(&mut body)?;
            let value = take_u32(&mut body)?;
            Ok(Setting {
                flags: (word >> 24) as u8,
                id: word & 0xff_ffff,
                value,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Frame::Settings {
        clear: flags & FLAG_CLEAR_SETTINGS != 0,
        settings,
    })
}

/// PING: its id.
fn decode_ping(mut body: &[u8]) -> Result<Frame, Error> {
    exact(body, 4)?;
    Ok(Frame::Ping {
        id: take_u32(&mut body)?,
    })
}

/// GOAWAY: last good stream id, status.
fn decode_goaway(mut body: &[u8]) -> Result<Frame, Error> {
    exact(body, 8)?;
    let last_good = take_u32(&mut body)? & 0x7fff_ffff;
    Ok(Frame::GoAway {
        last_good,
        status: take_u32(&mut body)?,
    })
}

/// WINDOW_UPDATE: stream id (0: the session), delta.
fn decode_window_update(mut body: &[u8]) -> Result<Frame, Error> {
    exact(body, 8)?;
    let stream = take_u32(&mut body)? & 0x7fff_ffff;
    let delta = take_u32(&mut body)? & 0x7fff_ffff;
    if delta == 0 {
        return Err(Error::Malformed("WINDOW_UPDATE of 0"));
    }
    Ok(Frame::WindowUpdate { stream, delta })
}

impl Encoder<Frame> for Codec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        match frame {
            Frame::Data { stream, fin, data } => encode_data(dst, stream, fin, &data)?,
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                check_stream(stream)?;
                let block = self.encode_headers(&headers)?;
                let flags = flag(fin, FLAG_FIN) | flag(unidirectional, FLAG_UNIDIRECTIONAL);
                control(dst, kind::SYN_STREAM, flags, 10 + block.len())?;
                dst.put_u32(stream);
                dst.put_u32(associated & 0x7fff_ffff);
                dst.put_u8((priority & 7) << 5);
                dst.put_u8(0);
                dst.put_slice(&block);
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            } => {
                self.encode_reply(dst, kind::SYN_REPLY, stream, fin, &headers)?;
            }
            Frame::Headers {
                stream,
                fin,
                headers,
            } => {
                self.encode_reply(dst, kind::HEADERS, stream, fin, &headers)?;
            }
            Frame::RstStream { stream, status } => {
                check_stream(stream)?;
                control(dst, kind::RST_STREAM, 0, 8)?;
                dst.put_u32(stream);
                dst.put_u32(status);
            }
            Frame::Settings { clear, settings } => encode_settings(dst, clear, &settings)?,
            Frame::Ping { id } => {
                control(dst, kind::PING, 0, 4)?;
                dst.put_u32(id);
            }
            Frame::GoAway { last_good, status } => {
                control(dst, kind::GOAWAY, 0, 8)?;
                dst.put_u32(last_good & 0x7fff_ffff);
                dst.put_u32(status);
            }
            Frame::WindowUpdate { stream, delta } => {
                if delta == 0 || delta > 0x7fff_ffff {
                    return Err(Error::Malformed("WINDOW_UPDATE delta out of range"));
                }
                control(dst, kind::WINDOW_UPDATE, 0, 8)?;
                dst.put_u32(stream & 0x7fff_ffff);
                dst.put_u32(delta);
            }
        }
        Ok(())
    }
}

/// DATA: the 8-byte header, then the payload.
fn encode_data(dst: &mut BytesMut, stream: u32, fin: bool, data: &[u8]) -> Result<(), Error> {
    check_stream(stream)?;
    if data.len() > MAX_LENGTH {
        return Err(Error::FrameTooLarge {
            len: data.len(),
            max: MAX_LENGTH,
        });
    }
    dst.reserve(8 + data.len());
    dst.put_slice(&data_frame_header(stream, fin, data.len()));
    dst.put_slice(data);
    Ok(())
}

/// SETTINGS: a count, then (flags and id, value) pairs.
fn encode_settings(dst: &mut BytesMut, clear: bool, settings: &[Setting]) -> Result<(), Error> {
    control(
        dst,
        kind::SETTINGS,
        flag(clear, FLAG_CLEAR_SETTINGS),
        4 + 8 * settings.len(),
    )?;
    dst.put_u32(settings.len() as u32);
    for s in settings {
        dst.put_u32(u32::from(s.flags) << 24 | (s.id & 0xff_ffff));
        dst.put_u32(s.value);
    }
    Ok(())
}

/// The 8 bytes before a data frame's payload, for writers that send the payload themselves.
pub fn data_frame_header(stream: u32, fin: bool, len: usize) -> [u8; 8] {
    let mut head = [0; 8];
    head[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    head[4..].copy_from_slice(&(len as u32 & 0xff_ffff).to_be_bytes());
    head[4] = flag(fin, FLAG_FIN);
    head
}

fn control(dst: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), Error> {
    if len > MAX_CONTROL_FRAME {
        return Err(Error::FrameTooLarge {
            len,
            max: MAX_CONTROL_FRAME,
        });
    }
    dst.reserve(8 + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u32(u32::from(flags) << 24 | len as u32);
    Ok(())
}

fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

fn check_stream(stream: u32) -> Result<(), Error> {
    if stream == 0 || stream > crate::MAX_STREAM_ID {
        return Err(Error::Malformed("stream id out of range"));
    }
    Ok(())
}

fn exact(body: &[u8], len: usize) -> Result<(), Error> {
    if body.len() != len {
        return Err(Error::Malformed("control frame of the wrong length"));
    }
    Ok(())
}

fn take_u8(body: &mut &[u8]) -> Result<u8, Error> {
    let Some((&b, rest)) = body.split_first() else {
        return Err(Error::Malformed("control frame cut short"));
    };
    *body = rest;
    Ok(b)
}

fn take_u32(body: &mut &[u8]) -> Result<u32, Error> {
    let Some((head, rest)) = body.split_first_chunk::<4>() else {
        return Err(Error::Malformed("control frame cut short"));
    };
    *body = rest;
    Ok(u32::from_be_bytes(*head))
}

fn stream_id(body: &mut &[u8]) -> Result<u32, Error> {
    let stream = take_u32(body)? & 0x7fff_ffff;
    if stream == 0 {
        return Err(Error::Malformed("stream id 0"));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests;
