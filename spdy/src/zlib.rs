//! Header-block compression: zlib with the SPDY/3 dictionary (draft-mbelshe-httpbis-spdy-00
//! §2.6.10.1). One compression context per direction for the whole session: every header block
//! is one sync-flushed piece of a single zlib stream.

use std::sync::OnceLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::Error;

/// The words of the dictionary, each preceded by its length as u32 big-endian.
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The text after the words, as is (no length prefixes).
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header-compression dictionary.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut dict = Vec::with_capacity(1424);
        for word in WORDS {
            dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dict.extend_from_slice(word.as_bytes());
        }
        dict.extend_from_slice(TAIL.as_bytes());
        dict
    })
}

/// The sending direction's zlib stream.
pub struct Deflater {
    inner: Compress,
}

impl Deflater {
    pub fn new() -> Deflater {
        let mut inner = Compress::new(Compression::default(), true);
        // Before any input, setting the dictionary cannot fail.
        let _ = inner.set_dictionary(dictionary());
        Deflater { inner }
    }

    /// Compresses one header block and sync-flushes it, appending to `out`.
    pub fn compress(&mut self, block: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let mut pos = 0;
        loop {
            out.reserve(block.len() - pos + 64);
            let before = self.inner.total_in();
            self.inner
                .compress_vec(&block[pos..], out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            pos += (self.inner.total_in() - before) as usize;
            // Done when all input is in and the flush left spare room (nothing more pending).
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

/// The receiving direction's zlib stream.
pub struct Inflater {
    inner: Decompress,
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            inner: Decompress::new(true),
        }
    }

    /// Decompresses one header block; more than `max` bytes of output is an error.
    pub fn decompress(&mut self, input: &[u8], max: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity((input.len() * 4).clamp(64, max + 1));
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(Error::HeaderBlockTooLarge { max });
                }
                let room = (out.capacity() * 2).min(max + 1) - out.len();
                out.reserve_exact(room.max(1));
            }
            let (in_before, out_before) = (self.inner.total_in(), out.len());
            let status = self
                .inner
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inner.total_in() - in_before) as usize;
            match status {
                Ok(Status::StreamEnd) => {
                    // The peer ended its zlib stream: nothing can follow in this session.
                    if pos < input.len() {
                        return Err(Error::Compression(
                            "data after the end of the zlib stream".into(),
                        ));
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inner.set_dictionary(dictionary()).map_err(|_| {
                        Error::Compression("the header block uses another dictionary".into())
                    })?;
                    continue;
                }
                Err(e) => return Err(Error::Compression(e.to_string())),
            }
            let progress = self.inner.total_in() > in_before || out.len() > out_before;
            if out.len() > max {
                return Err(Error::HeaderBlockTooLarge { max });
            }
            if pos == input.len() && out.len() < out.capacity() || !progress {
                break;
            }
        }
        if pos < input.len() {
            return Err(Error::Compression("header block has trailing bytes".into()));
        }
        Ok(out)
    }
}
