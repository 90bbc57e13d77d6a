//! The laptop's first line: its request, checked against our protocol.

use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::sync::oneshot;

use crate::error::hinted;
use crate::proto::wire::{Hello, PROTOCOL, VERSION};

/// Bound on the laptop's first line (it sends it as soon as it sees our `hello`).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for the laptop's first line and checks it.
pub(super) async fn read_hello(
    first: oneshot::Receiver<std::io::Result<String>>,
) -> anyhow::Result<Hello> {
    let line = tokio::time::timeout(HELLO_TIMEOUT, first)
        .await
        .map_err(|_| {
            anyhow!(
                "the laptop sent no request within {}s",
                HELLO_TIMEOUT.as_secs()
            )
        })?
        .context("the stdin reader ended early")?
        .context("could not read the laptop's request")?;
    if line.is_empty() {
        anyhow::bail!("the laptop closed the connection before sending its request");
    }
    parse_hello(&line)
}

/// Parses the first line; the version is checked before the request, whose shape may differ
/// between versions.
fn parse_hello(line: &str) -> anyhow::Result<Hello> {
    let mismatch = |laptop: String| {
        hinted(
            anyhow!("this agent runs podtun {VERSION} with protocol {PROTOCOL}, which the laptop does not speak"),
            format!("the laptop runs {laptop}; install the same version on the login host or let podtun upload it"),
        )
    };
    let value: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| {
        mismatch(format!(
            "a podtun whose request is not understood here ({e})"
        ))
    })?;
    let v = value.get("v").and_then(serde_json::Value::as_u64);
    if v != Some(u64::from(PROTOCOL)) {
        let version = value.get("version").and_then(serde_json::Value::as_str);
        let laptop = match (version, v) {
            (Some(version), Some(v)) => format!("podtun {version} with protocol {v}"),
            (None, Some(v)) => format!("podtun with protocol {v}"),
            (_, None) => "a podtun without a protocol version".to_string(),
        };
        return Err(mismatch(laptop));
    }
    serde_json::from_value(value).map_err(|e| {
        mismatch(format!(
            "a podtun with protocol {PROTOCOL} whose request is not understood here ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::hint_of;

    #[test]
    fn a_request_of_another_protocol_is_refused_with_a_hint() {
        let err = parse_hello(r#"{"v":99,"version":"9.9.9","request":{}}"#).unwrap_err();
        let hint = hint_of(&err).unwrap();
        assert!(
            hint.contains("the laptop runs podtun 9.9.9 with protocol 99"),
            "{hint}"
        );
        assert!(hint.contains("install the same version"), "{hint}");
        let err = parse_hello("Welcome to the login host!").unwrap_err();
        assert!(hint_of(&err).is_some());
    }

    #[test]
    fn a_request_of_our_protocol_is_read() {
        let line = r#"{"v":3,"request":{"target":"pod/redis","namespace":"demo","preset":"redis","timeout_secs":5}}"#;
        let hello = parse_hello(line).unwrap();
        assert_eq!(hello.request.target, "pod/redis");
        assert_eq!(hello.request.cluster.namespace.as_deref(), Some("demo"));
    }
}
