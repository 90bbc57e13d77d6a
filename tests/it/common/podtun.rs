//! Runs the podtun binary as a user would and reads what it prints: `--json` events on stdout,
//! messages on stderr.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Bound on podtun becoming ready (includes the pod starting).
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The podtun binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_podtun")
}

/// `podtun ARGS --kubeconfig KC` as a command, stdin closed, HOME isolated.
pub fn command(kubeconfig: &Path, home: &Path, args: &[&str]) -> Command {
    isolated(Command::new(bin()), kubeconfig, home, args)
}

/// `cmd` (podtun, run where the test wants it) with `ARGS --kubeconfig KC`, stdin closed, and
/// HOME and every setting podtun reads from the environment isolated.
pub fn isolated(
    mut cmd: Command,
    kubeconfig: impl AsRef<OsStr>,
    home: &Path,
    args: &[&str],
) -> Command {
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PODTUN_CONFIG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A podtun process with `--json` output.
pub struct Podtun {
    pub child: Child,
    events: Lines<BufReader<ChildStdout>>,
}

impl Podtun {
    /// Starts `podtun ARGS --json` (stderr is inherited so failures show in the test output).
    pub fn spawn(kubeconfig: &Path, home: &Path, args: &[&str]) -> Podtun {
        let mut cmd = command(kubeconfig, home, args);
        cmd.stderr(Stdio::inherit());
        Podtun::spawn_command(cmd)
    }

    /// Starts a podtun command the test built itself (another namespace or environment) with
    /// `--json`; stderr is left as the command has it.
    pub fn spawn_command(mut cmd: Command) -> Podtun {
        cmd.arg("--json").stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn podtun");
        let stdout = child.stdout.take().expect("stdout");
        Podtun {
            child,
            events: BufReader::new(stdout).lines(),
        }
    }

    /// The next event on stdout, or a panic after `within`.
    pub async fn next_event(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.events.next_line())
            .await
            .expect("no event from podtun in time")
            .expect("read podtun's stdout")
            .expect("podtun closed stdout");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON from podtun: {e}: {line}"))
    }

    /// Waits for the next event named `name`, skipping others.
    pub async fn wait_for(&mut self, name: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next_event(left).await;
            if ev["event"] == name {
                return ev;
            }
            assert_ne!(ev["event"], "error", "podtun reported an error: {ev}");
        }
    }

    /// The events up to podtun's end (its stdout closed), or a panic after `within`.
    pub async fn remaining_events(&mut self, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut events = Vec::new();
        loop {
            let line = tokio::time::timeout_at(deadline, self.events.next_line())
                .await
                .unwrap_or_else(|_| panic!("podtun did not end within {within:?}: {events:?}"))
                .expect("read podtun's stdout");
            let Some(line) = line else {
                return events;
            };
            events.push(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("bad JSON from podtun: {e}: {line}")),
            );
        }
    }

    /// Waits for `ready` and returns its local address.
    pub async fn ready(&mut self) -> (String, Value) {
        let ev = self.wait_for("ready", READY_TIMEOUT).await;
        (ev["local"].as_str().expect("local").to_string(), ev)
    }

    /// Collects podtun's piped stderr (and echoes it, so a failing test shows it).
    pub fn capture_stderr(&mut self) -> Arc<Mutex<String>> {
        let seen = Arc::new(Mutex::new(String::new()));
        let stderr = self.child.stderr.take().expect("piped stderr");
        let sink = seen.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let mut seen = sink.lock().expect("stderr");
                seen.push_str(&line);
                seen.push('\n');
            }
        });
        seen
    }

    /// SIGTERM, then the exit status (bounded).
    pub async fn terminate(mut self) -> ExitStatus {
        if let Some(pid) = self.child.id() {
            sigterm(pid);
        }
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("podtun did not exit within 15s of SIGTERM")
            .expect("wait for podtun")
    }
}

/// Sends SIGTERM to `pid`; whether `kill` succeeded.
pub fn sigterm(pid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// What a finished podtun printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs podtun to completion (bounded), for error cases.
pub async fn run(kubeconfig: &Path, home: &Path, args: &[&str]) -> Finished {
    finish(command(kubeconfig, home, args)).await
}

/// Runs `podtun ARGS` without adding `--kubeconfig` (the test passes its own).
pub async fn run_raw(home: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    finish(cmd).await
}

/// Runs a podtun command the test built itself to completion (bounded).
pub async fn finish(cmd: Command) -> Finished {
    finish_within(cmd, Duration::from_secs(60)).await
}

/// Runs a podtun command the test built itself to completion, at most `within`.
pub async fn finish_within(mut cmd: Command, within: Duration) -> Finished {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn podtun");
    let (mut out, mut err) = (String::new(), String::new());
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let status = tokio::time::timeout(within, async {
        let (a, b, status) = tokio::join!(
            so.read_to_string(&mut out),
            se.read_to_string(&mut err),
            child.wait()
        );
        a.and(b).and(status)
    })
    .await
    .unwrap_or_else(|_| panic!("podtun did not finish within {}s", within.as_secs()))
    .expect("run podtun");
    Finished {
        status,
        stdout: out,
        stderr: err,
    }
}
