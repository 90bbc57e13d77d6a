//! The script run by the local `/bin/sh`, as the login host runs it (no SSH): HOME is a temp
//! dir, stdin and stdout are pipes, and `undo` appends a line to a file.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{render, undone, MARK, STATE_DIR};
use crate::laptop::watchdog::Guard;

/// Bound on anything the script is waited for (a loaded machine included).
const WITHIN: Duration = Duration::from_secs(20);
/// A short grace, so that silence undoes quickly.
const SHORT: Duration = Duration::from_secs(2);
/// A grace no test outlasts.
const LONG: Duration = Duration::from_secs(600);

/// A home for the script, and the file its `undo` appends to.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn undone(&self) -> PathBuf {
        self.dir.path().join("undone")
    }

    /// How often `undo` ran.
    fn undos(&self) -> usize {
        std::fs::read_to_string(self.undone()).map_or(0, |s| s.lines().count())
    }

    /// What is left in the state folder.
    fn state(&self) -> Vec<String> {
        let dir = self.dir.path().join(STATE_DIR);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A guard whose undo appends to [`Home::undone`] and says `last words`.
    fn guard(&self, grace: Duration) -> Guard {
        Guard {
            key: "pod-demo-alice-1".into(),
            what: "pod demo/alice-1".into(),
            undo: format!(
                "echo undone >>'{}'; echo 'last words'",
                self.undone().display()
            ),
            needs: Some("sh".into()),
            grace,
        }
    }
}

/// The script running with `sh -c`.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Script {
    /// Starts it and waits for `watching`.
    fn start(home: &Path, guard: &Guard) -> Script {
        let mut child = Command::new("/bin/sh")
            .args(["-c", &render(guard)])
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("/bin/sh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ours = line.strip_prefix(MARK).unwrap_or(&line).trim_start();
                if tx.send(ours.to_string()).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut script = Script {
            child,
            stdin,
            lines,
        };
        assert_eq!(script.line().as_deref(), Some("watching"));
        script
    }

    /// Its next line; `None` once its stdout closed.
    fn line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(WITHIN) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no line from the script in time"),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the script");
        stdin.flush().expect("flush");
    }

    /// Closes its stdin, as a lost connection does.
    fn hang_up(&mut self) {
        self.stdin = None;
    }

    /// Waits for its exit.
    fn exited(&mut self) {
        let child = &mut self.child;
        wait_until("the script's exit", || {
            child.try_wait().expect("try_wait").is_some()
        });
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds, failing the test after [`WITHIN`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "no {what} within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The script is valid POSIX sh, and carries the guard quoted.
#[test]
fn script_parses_with_sh() {
    let guard = Guard {
        key: "slurm-42_1".into(),
        what: "Slurm job 42_1".into(),
        undo: "scancel '42_1'".into(),
        needs: Some("scancel".into()),
        grace: Duration::from_secs(60),
    };
    let text = render(&guard);
    assert!(text.contains("key='slurm-42_1'"), "{text}");
    assert!(text.contains(r"undo='scancel '\''42_1'\'''"), "{text}");
    assert!(text.contains("grace=60\nevery=5\n"), "{text}");
    let out = Command::new("/bin/sh")
        .args(["-n", "-c", &text])
        .output()
        .expect("/bin/sh");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn now_undoes_at_once_and_answers() {
    let home = Home::new();
    let mut script = Script::start(home.dir.path(), &home.guard(LONG));
    script.send("");
    script.send("now");
    let answer = script.line().expect("an answer to `now`");
    assert_eq!(answer, "undone 0 last words");
    assert_eq!(undone(&answer), Ok("last words".to_string()));
    assert_eq!(home.undos(), 1);
    script.exited();
    assert_eq!(home.state(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn now_answers_with_a_failed_undos_status_and_last_line() {
    let home = Home::new();
    let mut guard = home.guard(LONG);
    guard.undo = "echo 'first'; echo 'no such pod' >&2; exit 5".into();
    let mut script = Script::start(home.dir.path(), &guard);
    script.send("now");
    let answer = script.line().expect("an answer to `now`");
    assert_eq!(
        undone(&answer),
        Err("exited with status 5: no such pod".into())
    );
    script.exited();
    assert_eq!(home.state(), Vec::<String>::new(), "the log removed");
}

#[test]
fn bye_leaves_without_undoing() {
    let home = Home::new();
    let mut script = Script::start(home.dir.path(), &home.guard(SHORT));
    script.send("bye");
    assert_eq!(script.line(), None, "nothing said after `bye`");
    script.exited();
    assert_eq!(home.state(), Vec::<String>::new(), "nothing left behind");
    // The grace and one more look pass without an undo.
    let after = Instant::now() + SHORT * 3;
    while Instant::now() < after {
        assert_eq!(home.undos(), 0);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn silence_undoes_after_the_grace() {
    let home = Home::new();
    let mut script = Script::start(home.dir.path(), &home.guard(SHORT));
    let watching = Instant::now();
    script.hang_up();
    wait_until("undo after the grace", || home.undos() == 1);
    let after = watching.elapsed();
    assert!(
        after >= SHORT / 2,
        "undone after {after:?}, before the grace"
    );
    script.exited();
    assert_eq!(home.undos(), 1);
    assert_eq!(home.state(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn heartbeats_keep_it_from_undoing() {
    let home = Home::new();
    let mut script = Script::start(home.dir.path(), &home.guard(SHORT));
    let until = Instant::now() + SHORT * 3;
    while Instant::now() < until {
        script.send("");
        std::thread::sleep(SHORT / 4);
    }
    assert_eq!(home.undos(), 0, "undone while the laptop beat");
    script.send("bye");
    script.exited();
    assert_eq!(home.undos(), 0);
}

#[test]
fn a_newer_watchdog_of_the_same_guard_takes_over() {
    let home = Home::new();
    let mut older = Script::start(home.dir.path(), &home.guard(SHORT));
    let mut newer = Script::start(home.dir.path(), &home.guard(LONG));
    // The older one's connection is lost: it leaves at its next look, without undoing.
    older.hang_up();
    older.exited();
    assert_eq!(
        home.undos(),
        0,
        "the older watchdog undid what the newer one guards"
    );
    newer.send("now");
    assert_eq!(newer.line().as_deref(), Some("undone 0 last words"));
    newer.exited();
    assert_eq!(home.undos(), 1);
    assert_eq!(home.state(), Vec::<String>::new(), "nothing left behind");
}

#[test]
fn a_missing_command_is_said_before_watching() {
    let home = Home::new();
    let mut guard = home.guard(LONG);
    guard.needs = Some("podtun-no-such-command".into());
    let out = Command::new("/bin/sh")
        .args(["-c", &render(&guard)])
        .env("HOME", home.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("/bin/sh");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        format!("{MARK} no-command podtun-no-such-command")
    );
    assert_eq!(out.status.code(), Some(3));
}
