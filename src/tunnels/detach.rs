//! `-d`: the podtun the user started runs itself again as a background process (a session of
//! its own, stdin closed, stderr into `ID.log`), shows that process's progress, prints its
//! results once every forward is ready, and returns the shell. The background podtun is the
//! tunnel, reconnections and pod replacement included; an error before ready is shown here with
//! its exit code, and nothing is left running.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use super::control;
use super::paths::Paths;
use super::registration::print_running;
use crate::error::Exited;
use crate::output::{Output, DETACHED_READY};
use crate::plan::Plan;

/// Environment variable that tells a re-executed podtun it is the background tunnel `ID`.
pub const DETACHED_ENV: &str = "PODTUN_DETACHED";

/// How often the background tunnel's log is copied to stderr while it starts.
const TAIL_EVERY: Duration = Duration::from_millis(100);

/// Starts the tunnel of `plan` in the background, unless it runs already.
pub async fn start(
    plan: &Plan,
    out: &Output,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let paths = Paths::of(plan)?;
    tokio::pin!(shutdown);
    // A second start of the same tunnel waits here until the first is ready, then finds it.
    let _start = tokio::select! {
        lock = paths.lock_start() => lock?,
        () = &mut shutdown => return Ok(()),
    };
    if let Some(state) = paths.running().await {
        print_running(&state, out);
        return Ok(());
    }
    let mut child = spawn(&paths)?;
    let pid = child.id().unwrap_or_default();
    let stdout = child
        .stdout
        .take()
        .context("no pipe from the background tunnel")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut tail = Tail::new(paths.log());
    let mut tick = tokio::time::interval(TAIL_EVERY);
    let mut opened = false;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line == DETACHED_READY => break,
                Ok(Some(line)) => {
                    tail.copy();
                    println_flush(&line);
                    if !opened && plan.browser && line.starts_with("http") {
                        opened = true;
                        crate::output::open_browser(out, &line);
                    }
                }
                // It ended before it was ready: its error is in its log.
                Ok(None) | Err(_) => {
                    let status = child.wait().await.context("could not wait for the background tunnel")?;
                    tail.copy();
                    let code = status.code().and_then(|c| u8::try_from(c).ok()).filter(|c| *c != 0);
                    return Err(Exited(code.unwrap_or(crate::error::EXIT_FAILURE)).into());
                }
            },
            _ = tick.tick() => tail.copy(),
            () = &mut shutdown => {
                // Interrupted before ready: nothing stays behind.
                let _ = control::request(&paths.id, pid);
                let _ = tokio::time::timeout(control::STOP_TIMEOUT, child.wait()).await;
                tail.copy();
                return Ok(());
            }
        }
    }
    tail.copy();
    out.note(&format!(
        "running in the background as `{id}` (`podtun logs {id}`, `podtun stop {id}`)",
        id = paths.id
    ));
    Ok(())
}

/// Runs this podtun again, with the same arguments, as the background tunnel of `paths`: its
/// stdout piped here, its stderr into its log.
fn spawn(paths: &Paths) -> anyhow::Result<Child> {
    let log = crate::dirs::private_file(&paths.log(), true)
        .with_context(|| format!("could not create {}", paths.log().display()))?;
    let exe = std::env::current_exe().context("could not find podtun's own executable")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, &paths.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    #[cfg(windows)]
    {
        // No console, its own process group: closing this window or Ctrl-C here leave it be.
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
    }
    cmd.spawn().context("could not start the background tunnel")
}

/// The background tunnel leaves the terminal's session, so that closing the terminal does not
/// hang it up.
pub fn leave_terminal() {
    #[cfg(unix)]
    if let Err(e) = rustix::process::setsid() {
        tracing::debug!("setsid: {e}");
    }
}

fn println_flush(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

/// Copies what the background tunnel writes to its log onto this process's stderr.
struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    fn new(path: PathBuf) -> Tail {
        Tail { path, offset: 0 }
    }

    fn copy(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_ok() && file.read_to_end(&mut fresh).is_ok() {
            self.offset += fresh.len() as u64;
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(&fresh).and_then(|()| stderr.flush());
        }
    }
}
