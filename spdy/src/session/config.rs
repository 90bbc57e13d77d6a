//! A session's role and knobs, and the protocol numbers it uses.

use std::time::Duration;

/// SPDY/3.1's window for every stream and for the session until SETTINGS say otherwise.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// SETTINGS id of INITIAL_WINDOW_SIZE.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// GOAWAY status for a peer that broke the protocol.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;
/// GOAWAY status for a failure on this side.
pub const GOAWAY_INTERNAL_ERROR: u32 = 2;

/// Which side of the connection this is: the client opens odd stream ids, the server even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// A session's knobs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Flow control: advertise receive windows (SETTINGS INITIAL_WINDOW_SIZE, a session
    /// WINDOW_UPDATE), grant them back as data is read, and keep to the peer's windows once it
    /// shows it keeps them. Off, this side neither sends windows nor keeps to the peer's, as
    /// spdystream (the kubelet) does.
    pub windows: bool,
    /// Receive window of each stream, and the most one stream buffers before the reader waits.
    pub stream_window: u32,
    /// Receive window of the whole session.
    pub session_window: u32,
    /// Largest DATA frame this side sends.
    pub max_frame: usize,
    /// Largest DATA frame accepted from the peer (Go writes whatever one `Write` was given).
    pub max_recv_frame: usize,
    /// Bytes of frames queued towards the peer before writes wait.
    pub write_buffer: usize,
    /// The peer's streams waiting for `accept` before more are refused (RST REFUSED_STREAM).
    pub accept_backlog: usize,
    /// Send a PING this often, and end the session when one goes unanswered this long.
    pub keepalive: Option<(Duration, Duration)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            windows: true,
            stream_window: 256 * 1024,
            session_window: 1024 * 1024,
            max_frame: 32 * 1024,
            max_recv_frame: 0xff_ffff,
            write_buffer: 256 * 1024,
            accept_backlog: 1024,
            keepalive: None,
        }
    }
}
