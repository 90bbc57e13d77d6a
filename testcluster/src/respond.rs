//! Building responses as the API server writes them: JSON objects, `Status` errors with
//! `reason`, `code` and `details`, and streamed bodies; plus query-string parsing.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::kinds::Kind;

/// The body of every response: whole or streamed.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Converts a whole-body response (such as the port-forward's 101) to [`Body`].
pub(crate) fn boxed(response: Response<Full<Bytes>>) -> Response<Body> {
    response.map(|b| b.map_err(|never| match never {}).boxed())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn json(code: StatusCode, value: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text 200 (`/healthz`).
pub(crate) fn text(body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

pub(crate) fn ok(value: &Value) -> Response<Body> {
    json(StatusCode::OK, value)
}

/// The `Status` object of an error.
pub(crate) fn status_object(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

pub(crate) fn error(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &status_object(code, reason, message, details))
}

fn details(kind: Kind, name: &str) -> Value {
    let info = kind.info();
    let mut d = json!({"kind": info.plural});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !info.group.is_empty() {
        d["group"] = json!(info.group);
    }
    d
}

/// 404 `pods "x" not found`.
pub(crate) fn not_found(kind: Kind, name: &str) -> Response<Body> {
    let message = format!("{} \"{name}\" not found", kind.qualified_plural());
    error(404, "NotFound", &message, Some(details(kind, name)))
}

/// 409 `pods "x" already exists`.
pub(crate) fn already_exists(kind: Kind, name: &str) -> Response<Body> {
    let message = format!("{} \"{name}\" already exists", kind.qualified_plural());
    error(409, "AlreadyExists", &message, Some(details(kind, name)))
}

pub(crate) fn forbidden(kind: Kind, name: Option<&str>, message: &str) -> Response<Body> {
    error(
        403,
        "Forbidden",
        message,
        Some(details(kind, name.unwrap_or(""))),
    )
}

pub(crate) fn bad_request(message: &str) -> Response<Body> {
    error(400, "BadRequest", message, None)
}

pub(crate) fn unauthorized() -> Response<Body> {
    error(401, "Unauthorized", "Unauthorized", None)
}

/// 404 for a path that names nothing, as the API server words it.
pub(crate) fn no_such_path() -> Response<Body> {
    error(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// A chunked response fed by a channel; the body ends when the sender is dropped.
pub(crate) fn stream(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response<Body> {
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn unhex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` and `+` in a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (unhex(bytes[i + 1]), unhex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string, in order (repeated keys kept).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(p), String::new()),
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | ""))
    }

    pub fn number(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+%28a%29&ports=80&ports=81,82&watch=1&x=%zz",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.all("ports").collect::<Vec<_>>(), ["80", "81,82"]);
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some("%zz"));
    }
}
