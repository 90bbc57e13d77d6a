//! Readiness probes (tcpSocket, httpGet, exec), run inside the pod's network with the probe's
//! timing: initialDelaySeconds, periodSeconds, timeoutSeconds and the two thresholds.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::netns::PodNetwork;

/// One container's readiness probe.
pub(super) struct Prober {
    pub probe: Probe,
    pub ports: Vec<ContainerPort>,
    pub network: Arc<PodNetwork>,
}

fn seconds(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
}

impl Prober {
    /// Probes until `stop`, reporting each change of readiness through `set_ready`.
    pub async fn run(self, stop: CancellationToken, set_ready: impl Fn(bool)) {
        let p = &self.probe;
        let initial = seconds(p.initial_delay_seconds, 0);
        let period = seconds(p.period_seconds, 10).max(Duration::from_millis(100));
        let timeout = seconds(p.timeout_seconds, 1).max(Duration::from_millis(100));
        let success_threshold = p.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
        tokio::select! {
            _ = tokio::time::sleep(initial) => {}
            _ = stop.cancelled() => return,
        }
        let (mut successes, mut failures, mut ready) = (0, 0, false);
        loop {
            let ok = tokio::select! {
                r = tokio::time::timeout(timeout, self.check()) => r.unwrap_or(false),
                _ = stop.cancelled() => return,
            };
            if ok {
                successes += 1;
                failures = 0;
                if !ready && successes >= success_threshold {
                    ready = true;
                    set_ready(true);
                }
            } else {
                failures += 1;
                successes = 0;
                if ready && failures >= failure_threshold {
                    ready = false;
                    set_ready(false);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    fn port(&self, port: &IntOrString) -> Option<u16> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    }

    async fn check(&self) -> bool {
        if let Some(tcp) = &self.probe.tcp_socket {
            let Some(port) = self.port(&tcp.port) else {
                return false;
            };
            return self.network.connect(port).await.is_ok();
        }
        if let Some(http) = &self.probe.http_get {
            let Some(port) = self.port(&http.port) else {
                return false;
            };
            let path = http.path.as_deref().unwrap_or("/");
            let host = http.host.as_deref().unwrap_or("127.0.0.1");
            let headers: String = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| format!("{}: {}\r\n", h.name, h.value))
                .collect();
            return self
                .http_ok(port, path, host, &headers)
                .await
                .unwrap_or(false);
        }
        if let Some(exec) = &self.probe.exec {
            let argv = exec.command.clone().unwrap_or_default();
            let Some((program, args)) = argv.split_first() else {
                return false;
            };
            let mut cmd = self.network.command(program, args, None);
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            return cmd.status().await.is_ok_and(|s| s.success());
        }
        // A probe of a kind not supported here (grpc) counts as passing.
        true
    }

    /// Sends one GET and reads the status line: 200–399 passes, as for the kubelet.
    async fn http_ok(
        &self,
        port: u16,
        path: &str,
        host: &str,
        headers: &str,
    ) -> std::io::Result<bool> {
        let mut stream = self.network.connect(port).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(64);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        Ok((200..400).contains(&code))
    }
}
