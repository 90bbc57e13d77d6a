//! Binds something podtun made on the login host's side (a Slurm job it submitted, a pod it
//! launched) to the laptop: a small script on the login host, over an exec channel, that runs
//! the [`Guard`]'s `undo` command when the laptop goes away without a word (kill -9, a crash, a
//! laptop asleep or off the network).
//!
//! The laptop sends an empty line at least every [`HEARTBEAT_SECS`], `bye` when podtun deals
//! with the thing itself ([`Watchdog::dismiss`]), and `now` when the script should undo it at
//! once ([`Watchdog::undo_now`]). A lost connection closes the channel just as a dead laptop
//! does, so neither EOF nor silence undoes at once: the script waits the guard's grace, longer
//! than podtun's reconnect backoff, and undoes only if no newer watchdog of the same guard
//! started meanwhile. Each watchdog writes its own id to `~/.cache/podtun/watch/KEY.watch`
//! when it starts, so the one podtun starts on its new connection takes over from the one of
//! the lost connection.

mod script;

use std::time::Duration;

use anyhow::anyhow;
use tracing::debug;

use super::ssh::script::RemoteScript;
use super::ssh::{Heartbeat, SshSession};
use crate::error::hinted;
use crate::proto::wire::HEARTBEAT_SECS;

/// The default grace: above the reconnect backoff's cap (30 s ± 20%) plus a new connection,
/// so that a reconnect never loses what is guarded. Slurm jobs keep it.
pub const GRACE: Duration = Duration::from_secs(60);
/// Bound on the watchdog reporting that it runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the channel's end after `bye`.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the answer to `now`: the undo command's run included.
const UNDO_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest heartbeat period, for short graces.
const MIN_BEAT: Duration = Duration::from_millis(500);

/// What a watchdog guards, and how the login host undoes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    /// A file-safe id, unique per guarded thing (`slurm-42_1`, `pod-demo-alice-123`): letters,
    /// digits, `.`, `_` and `-`.
    pub key: String,
    /// The thing, for messages (`Slurm job 42_1`, `pod demo/alice-123`).
    pub what: String,
    /// A POSIX sh command run on the login host to undo it (`scancel '42_1'`).
    pub undo: String,
    /// A command that must exist on the login host (`scancel`), checked when the watchdog
    /// starts; `None`: no check.
    pub needs: Option<String>,
    /// Silence before undoing.
    pub grace: Duration,
}

/// The watchdog of one guard, over one connection.
pub struct Watchdog {
    script: RemoteScript,
    beats: Heartbeat,
    guard: Guard,
}

impl Watchdog {
    /// Starts the watchdog of `guard` on the login host and waits for it to run.
    pub async fn start(ssh: &SshSession, guard: &Guard) -> anyhow::Result<Watchdog> {
        if !file_safe(&guard.key) {
            return Err(anyhow!(
                "the watchdog of {} cannot use key `{}`: not a file name",
                guard.what,
                guard.key
            ));
        }
        let text = script::render(guard);
        let mut script = RemoteScript::start(ssh, &text, script::MARK, "the watchdog").await?;
        let said = tokio::time::timeout(START_TIMEOUT, script.lines.recv()).await;
        let failed = |why: String| {
            hinted(
                anyhow!(
                    "the watchdog of {} on login host `{}` could not start: {why}",
                    guard.what,
                    ssh.host()
                ),
                "podtun undoes it when it stops, but not if it is killed or the laptop goes away",
            )
        };
        match said {
            Ok(Some(line)) if line == "watching" => {}
            Ok(Some(line)) => {
                script.eof().await;
                return Err(failed(script::start_failure(&line)));
            }
            Ok(None) | Err(_) => {
                script.eof().await;
                return Err(failed(format!(
                    "it did not report within {}s",
                    START_TIMEOUT.as_secs()
                )));
            }
        }
        let beats = script.heartbeat(beat_every(guard.grace));
        debug!(host = %ssh.host(), key = %guard.key, "the watchdog runs");
        Ok(Watchdog {
            script,
            beats,
            guard: guard.clone(),
        })
    }

    /// podtun deals with the thing itself: the watchdog leaves without undoing it.
    pub async fn dismiss(self) {
        let Watchdog { script, beats, .. } = self;
        drop(beats);
        if script.writer().send(b"bye\n").await.is_ok() {
            script.stop(STOP_TIMEOUT).await;
        }
    }

    /// Has the watchdog run `undo` at once, and waits for its end (at most 30 s): the undo
    /// command's last line of output; the error quotes its exit status and last line. What is
    /// undone needs no guard any more: a newer watchdog of the same guard leaves too.
    pub async fn undo_now(self) -> anyhow::Result<String> {
        let Watchdog {
            mut script,
            beats,
            guard,
        } = self;
        drop(beats);
        let host = script.host().to_string();
        let lost = || {
            hinted(
                anyhow!(
                    "lost the connection to login host `{host}` before {} was undone",
                    guard.what
                ),
                format!(
                    "the watchdog there undoes it {}s after the laptop's last word; to undo it \
                     now, run `{}` on login host `{host}`",
                    guard.grace.as_secs(),
                    guard.undo
                ),
            )
        };
        if script.writer().send(b"now\n").await.is_err() {
            return Err(lost());
        }
        let answer = tokio::time::timeout(UNDO_TIMEOUT, script.lines.recv()).await;
        match answer {
            Ok(Some(line)) => {
                script.stop(STOP_TIMEOUT).await;
                script::undone(&line)
                    .map_err(|why| undo_failed(&guard, &host, &why))
                    .inspect(|_| debug!(%host, key = %guard.key, "undone"))
            }
            Ok(None) => Err(lost()),
            // The script finishes the undo command on its own, then ends.
            Err(_) => Err(hinted(
                anyhow!(
                    "{} was not undone within {}s on login host `{host}`",
                    guard.what,
                    UNDO_TIMEOUT.as_secs()
                ),
                format!(
                    "`{}` may still be running there; check, or run it yourself",
                    guard.undo
                ),
            )),
        }
    }
}

/// The error for an undo command that failed: `why` has its exit status and last words.
fn undo_failed(guard: &Guard, host: &str, why: &str) -> anyhow::Error {
    hinted(
        anyhow!(
            "could not undo {} on login host `{host}`: `{}` {why}",
            guard.what,
            guard.undo
        ),
        format!(
            "run `{}` on login host `{host}` and see what it says",
            guard.undo
        ),
    )
}

/// Whether `key` can name files of its own: letters, digits, `.`, `_`, `-`, not a dot first.
fn file_safe(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// How often the laptop beats: [`HEARTBEAT_SECS`], or a third of a shorter grace, so that a
/// live laptop never stays silent for a whole grace.
fn beat_every(grace: Duration) -> Duration {
    (grace / 3).clamp(MIN_BEAT, Duration::from_secs(HEARTBEAT_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_outlasts_the_reconnect_backoff() {
        assert!(GRACE > crate::laptop::link::backoff(u32::MAX) + Duration::from_secs(20));
        assert!(GRACE.as_secs() > 3 * HEARTBEAT_SECS);
    }

    #[test]
    fn heartbeats_come_thrice_per_short_grace() {
        assert_eq!(beat_every(GRACE), Duration::from_secs(HEARTBEAT_SECS));
        assert_eq!(beat_every(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(beat_every(Duration::from_secs(1)), MIN_BEAT);
    }

    #[test]
    fn keys_are_file_names() {
        for good in ["slurm-42_1", "pod-demo-alice-123", "a.b"] {
            assert!(file_safe(good), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "x'y", "..", "é"] {
            assert!(!file_safe(bad), "{bad}");
        }
    }

    #[test]
    fn a_failed_undo_names_the_command_its_status_and_last_words() {
        let guard = Guard {
            key: "slurm-42".into(),
            what: "Slurm job 42".into(),
            undo: "scancel '42'".into(),
            needs: Some("scancel".into()),
            grace: GRACE,
        };
        let why = script::undone("undone 1 scancel: error: Invalid job id specified")
            .expect_err("a failure");
        let err = undo_failed(&guard, "login", &why);
        assert_eq!(
            err.to_string(),
            "could not undo Slurm job 42 on login host `login`: `scancel '42'` exited with \
             status 1: scancel: error: Invalid job id specified"
        );
        assert!(crate::error::hint_of(&err).is_some_and(|h| h.contains("scancel '42'")));
    }
}
