//! A tiny HTTP/1.1 GET, enough to check what a browser would get.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` on `addr`; returns the status code and the body.
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect for HTTP");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .expect("send HTTP request");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .await
        .expect("read HTTP response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Splits `http://127.0.0.1:PORT/path?query` into (`127.0.0.1:PORT`, `/path?query`).
pub fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    (addr.to_string(), format!("/{path}"))
}
