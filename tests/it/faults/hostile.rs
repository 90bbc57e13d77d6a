//! Bad and hostile input: each case ends in a clear error (or is ignored) within a bound, and
//! nothing crashes or hangs.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::report;
use crate::common::cluster;
use crate::common::podtun::{self, Podtun};
use crate::common::sshd::Netns;
use crate::common::topology::{Shape, Topology};

/// Bound on any one hostile case ending.
const BOUND: Duration = Duration::from_secs(30);

/// Starts `podtun agent` with a private HOME; returns it after its `hello`.
async fn agent(
    home: &std::path::Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let mut child = Command::new(podtun::bin())
        .arg("agent")
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn podtun agent");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let hello = next_json(&mut lines).await;
    assert_eq!(hello["event"], "hello", "{hello}");
    (child, lines)
}

async fn next_json(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(BOUND, lines.next_line())
        .await
        .expect("a line from the agent in time")
        .expect("read the agent")
        .expect("the agent closed stdout");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_an_endless_line_on_the_agents_control_channel() {
    let home = tempfile::tempdir().unwrap();
    for (what, input) in [
        ("not json", b"not json\n".to_vec()),
        // 1 MiB and no newline: the agent reads at most 64 KiB of a first line.
        ("1 MiB without a newline", vec![b'{'; 1 << 20]),
    ] {
        let started = Instant::now();
        let (mut child, mut events) = agent(home.path()).await;
        let mut stdin = child.stdin.take().unwrap();
        // Written on the side: the agent may stop reading before the end, and must not need
        // the end to answer.
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
            stdin
        });
        let ev = next_json(&mut events).await;
        assert_eq!(ev["event"], "error", "{what}: {ev}");
        let message = ev["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{what}: an error message: {ev}");
        assert!(ev["hint"].is_string(), "{what}: a hint: {ev}");
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{what}: the agent did not exit"))
            .unwrap();
        assert_eq!(status.code(), Some(1), "{what}");
        drop(writer.await);
        report(&format!("agent fed {what} → exit 1"), started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_laptop_names_both_versions_when_the_agent_speaks_another_protocol() {
    let t = Topology::start(Shape::default()).await;
    // A fake agent on the login host: a hello of protocol 99, then it waits.
    let fake = t.login_home.path().join("fake-agent");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '{\"event\":\"hello\",\"version\":\"9.9.9\",\"protocol\":99}'\nexec cat >/dev/null\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, gid) = t.login_home.owner;
    std::os::unix::fs::chown(&fake, Some(uid), Some(gid)).unwrap();

    let kubeconfig = t.kubeconfig_arg();
    let fake = fake.display().to_string();
    let args = [
        "redis",
        "redis",
        "-n",
        "demo",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        &kubeconfig,
        "--remote-bin",
        &fake,
    ];
    let started = Instant::now();
    let out = podtun::finish(t.podtun(&args)).await;
    report("agent of protocol 99 → laptop error", started.elapsed());
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let want = format!(
        "is podtun 9.9.9 (protocol 99); this podtun is {} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        ::podtun::proto::wire::PROTOCOL
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// A pod that looks like Jupyter but logs 100 MB of lines without a URL, then sleeps.
const NOISY: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: noisy
  namespace: fixtures
spec:
  containers:
    - name: notebook
      image: python:3.12-slim
      command: ["python3", "-c"]
      args:
        - |
          import sys, time
          line = "[I 2026-01-01 12:00:00.000 ServerApp] nothing to see here " + "x" * 60 + "\n"
          chunk = line * 1000
          for _ in range(100_000_000 // len(chunk)):
              sys.stdout.write(chunk)
          sys.stdout.flush()
          time.sleep(100000)
      ports:
        - name: http
          containerPort: 8888
"#;

/// Peak RSS (VmHWM) of `pid` in kB, if it still runs.
fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_log_without_a_token_times_out_in_bounded_memory() {
    let c = cluster::start(&["tests/fixtures/pods/00-namespace.yaml"]).await;
    c.tc.apply_yaml(NOISY).unwrap();
    c.ready("fixtures", "noisy").await;
    let home = tempfile::tempdir().unwrap();
    let mut cmd = podtun::command(
        c.kubeconfig(),
        home.path(),
        &["jupyter", "noisy", "-n", "fixtures", "--timeout", "20s"],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn podtun");
    let pid = child.id().expect("pid");
    let mut stderr = child.stderr.take().unwrap();
    let err = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text)
            .await
            .ok();
        text
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kb) = vm_hwm(pid) {
            peak = peak.max(kb);
        }
        match tokio::time::timeout(Duration::from_millis(100), child.wait()).await {
            Ok(status) => break status.unwrap(),
            Err(_) => assert!(started.elapsed() < Duration::from_secs(60), "podtun hangs"),
        }
    };
    let took = started.elapsed();
    let stderr = err.await.unwrap();
    report(
        &format!("100 MB log, no token → error (peak RSS {} MB)", peak / 1024),
        took,
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "error: no Jupyter URL appeared in the logs of pod `fixtures/noisy` within 20s"
        ),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(20),
        "gave up before --timeout: {took:?}"
    );
    assert!(peak > 0, "never read podtun's VmHWM");
    assert!(peak < 200 * 1024, "podtun's peak RSS is {} MB", peak / 1024);
}

/// Fake Jupyter pods: `absurd-then-valid` logs a URL whose token is 10 000 characters, then a
/// valid one; `absurd-only` logs only the absurd one. Both answer `/api/status` with 200 for the
/// valid token only (in the query or an `Authorization: token` header), as Jupyter does.
fn fake_jupyters() -> String {
    let absurd = "a".repeat(10_000);
    let pod = |name: &str, valid: bool| {
        let later = if valid {
            "print('    http://127.0.0.1:8888/lab?token=0123456789abcdef0123456789abcdef', flush=True)"
        } else {
            ""
        };
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: fixtures
spec:
  containers:
    - name: notebook
      image: python:3.12-slim
      command: ["python3", "-c"]
      args:
        - |
          import http.server
          print("    http://127.0.0.1:8888/lab?token={absurd}", flush=True)
          {later}
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  good = "0123456789abcdef0123456789abcdef"
                  ok = self.path.endswith("token=" + good) or self.headers.get("Authorization") == "token " + good
                  self.send_response(200 if ok else 403)
                  self.send_header("Content-Length", "2")
                  self.end_headers()
                  self.wfile.write(b"{{}}")
          http.server.HTTPServer(("0.0.0.0", 8888), H).serve_forever()
      ports:
        - name: http
          containerPort: 8888
---"#
        )
    };
    pod("absurd-then-valid", true) + &pod("absurd-only", false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurdly_long_token_is_not_used() {
    let c = cluster::start(&["tests/fixtures/pods/00-namespace.yaml"]).await;
    c.tc.apply_yaml(&fake_jupyters()).unwrap();
    let home = tempfile::tempdir().unwrap();

    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &[
            "jupyter",
            "absurd-then-valid",
            "-n",
            "fixtures",
            "-p",
            "0",
            "--timeout",
            "30s",
        ],
    );
    let (_, ready) = p.ready().await;
    let url = ready["url"].as_str().expect("url");
    assert!(
        url.ends_with("/lab?token=0123456789abcdef0123456789abcdef"),
        "the valid URL, not the absurd one: {:.200}",
        url
    );
    assert!(p.terminate().await.success());

    let out = podtun::run(
        c.kubeconfig(),
        home.path(),
        &[
            "jupyter",
            "absurd-only",
            "-n",
            "fixtures",
            "--timeout",
            "5s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: no Jupyter URL appeared in the logs of pod `fixtures/absurd-only` within 5s"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&"a".repeat(300)),
        "the absurd token is echoed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_like_target_names_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for target in ["pod/../../etc", "svc/../x", "pod/a/b"] {
        let out = podtun::run(
            std::path::Path::new("/nonexistent"),
            home.path(),
            &["redis", target],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{target}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{target}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_login_hosts_fail_fast_naming_the_host() {
    // A namespace with loopback only: no route anywhere, and nothing listens.
    let isolated = Netns::new("isolated");
    let home = tempfile::tempdir().unwrap();
    for (via, host) in [
        ("10.255.255.1", "10.255.255.1:22"),
        ("127.0.0.1:2222", "127.0.0.1:2222"),
    ] {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", isolated.name(), podtun::bin()])
            .args([
                "redis",
                "redis",
                "--via",
                via,
                "--kubeconfig",
                "/nonexistent",
            ])
            .env("HOME", home.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let started = Instant::now();
        let out = podtun::finish(cmd).await;
        let took = started.elapsed();
        report(&format!("--via {via} → error"), took);
        assert_eq!(out.status.code(), Some(1), "{via}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("could not connect to {host}")),
            "{via}: {}",
            out.stderr
        );
        // Within the default ConnectTimeout (15 s), with room for a loaded machine.
        assert!(took < Duration::from_secs(20), "{via}: {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_host_that_closes_right_after_auth() {
    let t = Topology::start(Shape {
        login_sshd: vec!["ForceCommand /bin/false".into()],
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let out = podtun::finish(t.podtun_via(&["redis", "redis", "-n", "demo"])).await;
    let took = started.elapsed();
    report("ForceCommand /bin/false → error", took);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "error: could not start the agent on login host `{}",
            t.addrs.login
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(took < BOUND, "{took:?}");
}
