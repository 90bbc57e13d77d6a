//! The one file podtun takes from a release archive's tar stream (ustar, with GNU and pax long
//! names), read without a tar crate: regular files only, sizes bounded.

use anyhow::{anyhow, bail, Context};

/// Bound on the binary inside an archive.
pub(super) const MAX_BINARY: u64 = 512 << 20;

/// The regular file named `want` in a tar stream (ustar, GNU long names, pax paths).
pub(super) fn tar_file(tar: &[u8], want: &str) -> anyhow::Result<Vec<u8>> {
    let clean = |name: &str| name.trim_start_matches("./").to_string();
    let mut at = 0;
    let mut long_name: Option<String> = None;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar_size(&header[124..136]).context("a tar header with a bad size")?;
        let start = at + 512;
        let end = start
            .checked_add(size)
            .filter(|&end| end <= tar.len())
            .ok_or_else(|| anyhow!("the tar stream is truncated"))?;
        let data = &tar[start..end];
        let name = long_name.take().unwrap_or_else(|| header_name(header));
        match header[156] {
            b'L' => long_name = Some(c_str(data)),
            b'x' => long_name = pax_path(data),
            b'0' | 0 | b'7' if clean(&name) == want => {
                if size as u64 > MAX_BINARY {
                    bail!("{want} is too large ({size} bytes)");
                }
                return Ok(data.to_vec());
            }
            _ => {}
        }
        at = start + size.div_ceil(512) * 512;
    }
    bail!("the archive has no {want}")
}

/// A NUL-terminated field.
fn c_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A header's name, with the ustar prefix when there is one.
fn header_name(header: &[u8]) -> String {
    let name = c_str(&header[..100]);
    let prefix = if &header[257..262] == b"ustar" {
        c_str(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// A size field: octal, or GNU's base-256 when its first byte has the high bit set.
fn tar_size(field: &[u8]) -> Option<usize> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return usize::try_from(n).ok();
    }
    let text = c_str(field);
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    usize::from_str_radix(text, 8).ok()
}

/// The `path` record of a pax extended header (`LEN path=VALUE\n` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|record| {
        let (_, kv) = record.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}
