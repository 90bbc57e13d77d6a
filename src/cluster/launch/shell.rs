//! Running a launcher command. Where it runs is the caller's choice (this machine, the login
//! host over SSH); what comes back is the same: its output lines as they come, its exit status,
//! or that it was still running when the time was up (then it is stopped, with whatever it
//! started in its process group).

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Output lines kept for messages; the first ones are shown as they come.
const KEPT: usize = 40;
/// How long the last output lines may take once the command exited.
const DRAIN: Duration = Duration::from_millis(500);

/// Called with each line a launcher prints, as it prints it.
pub type OnLine<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// How a launcher command ended.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    /// Its exit status; `None` when it was stopped (time up) or killed by a signal.
    pub status: Option<i32>,
    /// Still running when the time was up (and stopped since).
    pub timed_out: bool,
    /// Its last output lines (stdout and stderr, interleaved as they came).
    pub lines: VecDeque<String>,
}

impl Ran {
    /// Keeps `line` among the last ones.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// The last `n` lines, indented for an error message (or a note that it printed nothing).
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let lines: Vec<String> = self
            .lines
            .iter()
            .skip(skip)
            .map(|l| format!("  | {l}"))
            .collect();
        if lines.is_empty() {
            "  (it printed nothing)".to_string()
        } else {
            lines.join("\n")
        }
    }
}

/// Where launcher commands run.
pub trait Shell: Send + Sync {
    /// For messages: `on login host \`dsmlp-login\``, `here`; empty where the messages say
    /// the place already (the agent's, which the laptop marks as the login host's).
    fn place(&self) -> String;

    /// Runs `command` (POSIX sh) with stdin closed, passing each output line to `line`; stops
    /// it after `timeout`.
    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Duration,
        line: OnLine<'a>,
    ) -> BoxFuture<'a, anyhow::Result<Ran>>;
}

/// This machine: the laptop in local mode, the login host for the agent (which runs in the
/// user's login environment already).
pub struct ThisMachine {
    /// For messages (see [`Shell::place`]).
    pub place: String,
}

impl Shell for ThisMachine {
    fn place(&self) -> String {
        self.place.clone()
    }

    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Duration,
        line: OnLine<'a>,
    ) -> BoxFuture<'a, anyhow::Result<Ran>> {
        Box::pin(run_here(command, timeout, line))
    }
}

/// The command as this machine's shell runs it, in a process group of its own.
fn shell_command(command: &str) -> tokio::process::Command {
    #[cfg(unix)]
    let mut cmd = {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command).process_group(0);
        cmd
    };
    #[cfg(not(unix))]
    let mut cmd = {
        let mut cmd = tokio::process::Command::new("cmd");
        cmd.arg("/C").arg(command);
        cmd
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_here(command: &str, timeout: Duration, line: OnLine<'_>) -> anyhow::Result<Ran> {
    let mut child = shell_command(command)
        .spawn()
        .with_context(|| format!("could not run `{command}`"))?;
    // Dropped before the end (podtun stops meanwhile): the launcher's group goes too.
    let group = Group(child.id());
    let (tx, mut rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, tx.clone());
    }
    drop(tx);
    let mut ran = Ran::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut take = |text: String| {
        line(&text);
        ran.push(&text);
    };
    let mut open = true;
    let status = loop {
        tokio::select! {
            next = rx.recv(), if open => match next {
                Some(text) => take(text),
                None => open = false,
            },
            status = child.wait() => break Some(status.context("could not wait for the launcher")?),
            () = tokio::time::sleep_until(deadline) => break None,
        }
    };
    // What it printed last, even if something it left behind holds the pipes open.
    let drain = tokio::time::Instant::now() + DRAIN;
    while open {
        match tokio::time::timeout_at(drain, rx.recv()).await {
            Ok(Some(text)) => take(text),
            Ok(None) | Err(_) => open = false,
        }
    }
    match status {
        Some(status) => ran.status = status.code(),
        None => {
            ran.timed_out = true;
            stop(&mut child).await;
        }
    }
    std::mem::forget(group);
    Ok(ran)
}

/// A launcher's process group, killed when dropped (on Unix; elsewhere the launcher alone, by
/// `kill_on_drop`).
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(not(unix))]
        let _ = self.0;
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Stops a command that ran out of time, with everything in its process group.
async fn stop(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(3), child.wait())
            .await
            .is_ok()
        {
            return;
        }
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
}

/// Sends each line of `pipe` to `tx`.
fn forward_lines(pipe: impl AsyncRead + Unpin + Send + 'static, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn here() -> ThisMachine {
        ThisMachine {
            place: "here".into(),
        }
    }

    #[tokio::test]
    async fn output_and_status_come_back() {
        let seen = std::sync::Mutex::new(Vec::new());
        let on_line = |l: &str| seen.lock().unwrap().push(l.to_string());
        let ran = here()
            .run(
                "echo pod/a-1 created; echo oops >&2; exit 3",
                Duration::from_secs(30),
                &on_line,
            )
            .await
            .unwrap();
        assert_eq!(ran.status, Some(3));
        assert!(!ran.timed_out);
        let mut lines: Vec<String> = ran.lines.iter().cloned().collect();
        lines.sort();
        assert_eq!(lines, ["oops", "pod/a-1 created"]);
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_command_that_never_returns_is_stopped_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child");
        let command = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let ran = here()
            .run(&command, Duration::from_secs(2), &|_| {})
            .await
            .unwrap();
        assert!(ran.timed_out);
        assert_eq!(ran.status, None);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = std::path::Path::new(&format!("/proc/{pid}/stat")).to_path_buf();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Gone, or a zombie waiting for its parent (stopped all the same).
        while gone.exists()
            && !std::fs::read_to_string(&gone)
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} still runs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
