//! A SPDY/3.1 session over one byte stream, for either role.
//!
//! ```text
//!   Session::new(io, Role, Config) ─┬─ reader task: frames ──► streams' buffers, replies, pings
//!                                   └─ writer task: queued frames ──► io (one write per batch)
//!   Session::open(headers) ──► Stream   (SYN_STREAM queued at once; data may follow at once)
//!   Session::accept()      ──► Stream   (the peer's SYN_STREAM; SYN_REPLY on `reply` or first write)
//! ```
//!
//! A [`Stream`] is `AsyncRead + AsyncWrite`: `shutdown` sends an empty DATA frame with FIN (a
//! half-close: reading goes on), the peer's FIN reads as EOF, [`Stream::reset`] and dropping a
//! stream whose sending side is still open send RST_STREAM, and the peer's RST_STREAM fails reads
//! and writes with `ConnectionReset`. Dropping a stream after its FIN only forgets it, as the
//! kubelet's `RemoveStreams` does.
//!
//! Flow control. Kubernetes speaks SPDY through moby/spdystream, which never sends SETTINGS or
//! WINDOW_UPDATE and ignores both: a Go peer neither keeps nor grants windows. So this side
//! keeps the peer's windows (64 KiB per stream and for the session to start with, as SPDY/3.1
//! says, then what its SETTINGS and WINDOW_UPDATEs say) but waits on them only once the peer has
//! shown that it keeps them (a SETTINGS with INITIAL_WINDOW_SIZE or any WINDOW_UPDATE). With
//! [`Config::windows`] on, it advertises its own receive windows and grants them back as the
//! application reads. Buffering is bounded either way: a stream buffers at most
//! [`Config::stream_window`] bytes from the peer, and past that the reader stops reading the
//! connection until the application catches up (what spdystream does too), and writes wait
//! while [`Config::write_buffer`] bytes are queued.

mod config;
mod frames;
mod handle;
mod io_loop;
mod ping;
mod state;
mod stream;

pub use config::{Config, Role, DEFAULT_WINDOW, SETTINGS_INITIAL_WINDOW_SIZE};
pub use handle::{Session, Watch};
pub use state::Stream;

#[cfg(test)]
mod tests;
