//! SPDY/3.1 framing, as the kubelet and kubectl speak it for `pods/portforward`.
//!
//! ```text
//!   bytes ──► Codec (Decoder) ──► Frame ──► the session (podtun, testcluster)
//!   Frame ──► Codec (Encoder) ──► bytes
//! ```
//!
//! - `frame`: the frame types and their flags.
//! - `headers`: name/value header blocks (lowercase names, values joined by NUL).
//! - `zlib`: header-block compression with the SPDY/3 dictionary, one context per direction.
//! - `codec`: a `tokio_util::codec` `Decoder` and `Encoder` over whole frames, with bounded frame
//!   and header-block sizes: malformed input is an [`Error`] for the session, never a panic.
//!
//! - `session`: a session over any tokio byte stream, for the client (opens streams, pipelined)
//!   or the server (accepts them): streams with half-close, resets, PING, GOAWAY, flow control.
//!
//! - `ws` (feature `websocket`): a WebSocket as a byte stream, for SPDY tunnelled in one.
//!
//! Pairing streams into port-forward connections is the caller's.

mod codec;
mod error;
#[cfg(test)]
mod fixtures;
mod frame;
mod headers;
mod session;
#[cfg(feature = "websocket")]
mod ws;
mod zlib;

pub use codec::{data_frame_header, Codec, Error, MAX_CONTROL_FRAME, MAX_HEADER_BLOCK};
pub use frame::{Frame, RstStatus, Setting, GOAWAY_OK, MAX_STREAM_ID, VERSION};
pub use headers::Headers;
pub use session::{
    Config, Role, Session, Stream, Watch, DEFAULT_WINDOW, SETTINGS_INITIAL_WINDOW_SIZE,
};
#[cfg(feature = "websocket")]
pub use ws::WsIo;
pub use zlib::dictionary;
