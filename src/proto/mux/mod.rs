//! Many connections over one byte stream: the laptop ↔ agent leg of `--via`.
//!
//! The laptop opens one SSH channel per agent socket (stream-local, or `podtun agent pipe` over
//! the exec fallback), sends [`MUX_OPEN`](crate::proto::wire::MUX_OPEN), and from then on carries every
//! local connection to that socket over it as a *stream*. Opening a stream costs no round trip
//! and no work in sshd; a stream that lingers (the agent holds a client's EOF towards the pod,
//! see [`crate::net::splice`]) costs the agent a task, not sshd a channel.
//!
//! Frames, in both directions: `kind: u8`, `stream: u32`, `len: u32` (big-endian), then `len`
//! bytes of payload.
//!
//! | kind     | payload     | meaning                                                  |
//! |----------|-------------|----------------------------------------------------------|
//! | `OPEN`   | none        | laptop → agent: a new stream                             |
//! | `DATA`   | bytes       | part of the stream, at most [`MAX_DATA`] bytes           |
//! | `EOF`    | none        | the sender will send no more on the stream (half-close) |
//! | `CLOSE`  | none        | the sender is done with the stream; it is gone           |
//! | `CREDIT` | `u32`       | the receiver consumed that many bytes: send that many more |
//!
//! Each stream may have at most [`WINDOW`] bytes in flight in each direction. The receiver
//! credits bytes back as the stream's reader consumes them, so a stream whose reader stalls
//! stops only its own sender, never the other streams on the same connection.

mod connection;
mod demux;
mod frame;
mod state;
mod stream;

pub use connection::{serve, Mux};
pub use frame::{MAX_DATA, WINDOW};
pub use stream::MuxStream;

#[cfg(test)]
mod tests;
