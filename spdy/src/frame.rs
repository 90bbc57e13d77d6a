//! SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 §2.2, §2.6; SPDY/3.1 adds the session-level
//! WINDOW_UPDATE on stream 0).

use bytes::Bytes;

use crate::headers::Headers;

/// The protocol version of every control frame.
pub const VERSION: u16 = 3;
/// Stream ids are 31 bits.
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// GOAWAY status: a normal end of the session.
pub const GOAWAY_OK: u32 = 0;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream data; `fin` half-closes the sender's side of the stream.
    Data { stream: u32, fin: bool, data: Bytes },
    /// Opens a stream.
    SynStream {
        stream: u32,
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream { stream: u32, status: u32 },
    /// Session settings.
    Settings { clear: bool, settings: Vec<Setting> },
    /// Liveness; the receiver echoes ids the other side chose (odd from the client).
    Ping { id: u32 },
    /// No new streams past `last_good`.
    GoAway { last_good: u32, status: u32 },
    /// More headers for a stream.
    Headers {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    /// More send window for `stream` (0: the whole session).
    WindowUpdate { stream: u32, delta: u32 },
}

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    /// 24 bits: 4 is MAX_CONCURRENT_STREAMS, 7 INITIAL_WINDOW_SIZE.
    pub id: u32,
    pub value: u32,
}

/// RST_STREAM status codes.
pub struct RstStatus;

impl RstStatus {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const UNSUPPORTED_VERSION: u32 = 4;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// Control frame types.
pub(crate) mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// Flags.
pub(crate) const FLAG_FIN: u8 = 0x01;
pub(crate) const FLAG_UNIDIRECTIONAL: u8 = 0x02;
pub(crate) const FLAG_CLEAR_SETTINGS: u8 = 0x01;
