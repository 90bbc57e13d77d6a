//! Before a forward is reported, every forwarded port must have a listener in the pod: one
//! test connection per port through the port-forward itself, repeated until the kubelet no
//! longer says it could not connect, or `--timeout`.
//!
//! The user sees one progress line per reason ("nothing listens on port 8080 in pod
//! `st3/deaf` yet"), never one per attempt; the kubelet's own words go to the debug log
//! (`-v`), and the final error quotes the reason with the pod's last log lines. The same test
//! connection finds a refused port-forward (401/403) at once, before anything is reported.

use std::time::Duration;

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::Api;
use tokio::time::Instant;
use tracing::debug;

use super::client::Cluster;
use super::resolve::Progress;
use super::spdyforward::{Checked, Link, CHECK_WINDOW};
use super::wsforward;
use crate::error::hinted;

/// Pause between two test connections to a port that has no listener yet.
const CHECK_RETRY: Duration = Duration::from_millis(500);
/// How many of the pod's last log lines the final error quotes.
const LOG_LINES: i64 = 10;
/// Bound on reading them.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// One port to wait for.
pub(super) struct Port<'a> {
    pub cluster: &'a Cluster,
    pub link: &'a Link,
    pub pod: &'a str,
    pub container: &'a str,
    pub port: u16,
}

/// Waits until `port` has a listener in the pod, or fails at `deadline` with the reason and
/// the pod's last log lines. A refused port-forward fails at once.
pub(super) async fn wait(
    port: Port<'_>,
    deadline: Instant,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let Port {
        cluster,
        pod,
        port: number,
        ..
    } = port;
    let ns = &cluster.namespace;
    let (mut last_said, mut last_reason) = (String::new(), String::new());
    loop {
        let said = match port.link.check(pod, number).await? {
            Checked::Said(said) => said,
            Checked::Unserved => wsforward::check(cluster, pod, number, CHECK_WINDOW).await?,
        };
        let Some(said) = said else {
            return Ok(());
        };
        let reason = reason(&said, ns, pod, number);
        if said != last_said {
            debug!(pod, port = number, "the kubelet: {said}");
            last_said = said;
        }
        if reason != last_reason {
            progress(&format!("{reason} yet"));
            last_reason = reason.clone();
        }
        if Instant::now() + CHECK_RETRY >= deadline {
            let logs = last_lines(cluster, pod, port.container).await;
            return Err(hinted(
                anyhow!("{reason}{logs}"),
                format!(
                    "is the service in the pod listening on port {number}? see `kubectl -n {ns} logs {pod}`, or pass a longer --timeout"
                ),
            ));
        }
        tokio::time::sleep(CHECK_RETRY).await;
    }
}

/// The kubelet's words for a port it could not connect to, in plain ones.
fn reason(said: &str, ns: &str, pod: &str, port: u16) -> String {
    let lower = said.to_ascii_lowercase();
    if lower.contains("connection refused") || lower.contains("failed to connect") {
        format!("nothing listens on port {port} in pod `{ns}/{pod}`")
    } else {
        format!("port {port} in pod `{ns}/{pod}` cannot be reached: {said}")
    }
}

/// `; its last log lines:` and the container's last lines (tokens masked), or nothing.
async fn last_lines(cluster: &Cluster, pod: &str, container: &str) -> String {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let params = LogParams {
        container: Some(container.to_string()),
        tail_lines: Some(LOG_LINES),
        ..LogParams::default()
    };
    let text = match tokio::time::timeout(LOG_TIMEOUT, api.logs(pod, &params)).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            debug!(pod, "could not read the pod's log: {e}");
            return String::new();
        }
        Err(_) => return String::new(),
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(mask_tokens)
        .collect();
    if lines.is_empty() {
        return "; its log is empty".to_string();
    }
    format!("; its last log lines:\n    {}", lines.join("\n    "))
}

/// A log line with the value of every `token=` replaced.
fn mask_tokens(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("token=") {
        let (head, tail) = rest.split_at(at + "token=".len());
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_refusal_reads_as_nothing_listening() {
        // Word for word from a real kubelet with containerd.
        let said = "error forwarding port 8080 to pod 5f0c9e, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-1\": failed to connect to localhost:8080 inside namespace \"5f0c9e\", IPv4: dial tcp4 127.0.0.1:8080: connect: connection refused IPv6 dial tcp6: address localhost: no suitable address found";
        assert_eq!(
            reason(said, "st3", "deaf", 8080),
            "nothing listens on port 8080 in pod `st3/deaf`"
        );
        let other = reason("pod not found", "st3", "deaf", 8080);
        assert!(other.ends_with(": pod not found"), "{other}");
    }

    #[test]
    fn tokens_in_log_lines_are_masked() {
        assert_eq!(
            mask_tokens("http://127.0.0.1:8888/lab?token=abc123 and token=x&y=1"),
            "http://127.0.0.1:8888/lab?token=*** and token=***&y=1"
        );
        assert_eq!(mask_tokens("no secrets"), "no secrets");
    }
}
