//! SPDY/3 name/value header blocks: a u32 count, then for each pair a u32-length name and a
//! u32-length value (several values joined by NUL), all big-endian. Names are lowercase on the
//! wire; Go's framer lowercases what it sends and flags what it receives otherwise.

use crate::error::Error;

/// The headers of one SYN_STREAM, SYN_REPLY or HEADERS frame, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds `name: value` (the name is lowercased).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Headers {
        self.0.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }

    /// Every pair, in wire order (values as sent, NUL-joined).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed block.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = 4 + self
            .0
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>();
        let mut block = Vec::with_capacity(size);
        block.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            block.extend_from_slice(&(name.len() as u32).to_be_bytes());
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(&(value.len() as u32).to_be_bytes());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// Parses an uncompressed block; every length is checked against what is left.
    pub(crate) fn decode(mut block: &[u8]) -> Result<Headers, Error> {
        let count = take_u32(&mut block)? as usize;
        // Each pair needs at least its two lengths: a count beyond that is a lie.
        if count > block.len() / 8 {
            return Err(Error::Malformed(
                "header block counts more pairs than it holds",
            ));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let name = take_string(&mut block)?;
            if name.is_empty() {
                return Err(Error::Malformed("empty header name"));
            }
            let value = take_string(&mut block)?;
            pairs.push((name.to_ascii_lowercase(), value));
        }
        if !block.is_empty() {
            return Err(Error::Malformed("bytes after the last header"));
        }
        Ok(Headers(pairs))
    }
}

fn take_u32(block: &mut &[u8]) -> Result<u32, Error> {
    let Some((head, rest)) = block.split_first_chunk::<4>() else {
        return Err(Error::Malformed("header block cut short"));
    };
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(block: &mut &[u8]) -> Result<String, Error> {
    let len = take_u32(block)? as usize;
    if len > block.len() {
        return Err(Error::Malformed("header block cut short"));
    }
    let (text, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(text.to_vec()).map_err(|_| Error::Malformed("header is not UTF-8"))
}
