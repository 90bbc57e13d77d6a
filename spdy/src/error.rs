//! What can go wrong on a session's bytes.

/// What can go wrong on a session's bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the transport failed.
    #[error("SPDY connection failed")]
    Io(#[from] std::io::Error),
    /// A frame longer than this side accepts.
    #[error("SPDY frame of {len} bytes is over the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// A header block that inflates past [`MAX_HEADER_BLOCK`].
    #[error("SPDY header block inflates past {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    /// A control frame of another protocol version.
    #[error("SPDY version {0} is not supported (only 3)")]
    UnsupportedVersion(u16),
    /// A frame that breaks the framing rules.
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    /// A header block zlib could not inflate (or deflate).
    #[error("SPDY header compression failed: {0}")]
    Compression(String),
}
