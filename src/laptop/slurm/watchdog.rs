//! Binds a job podtun submitted to the laptop, as `jupyter @ --start` binds its server: a small
//! script on the login host, over an exec channel, that runs `scancel JOBID` when the laptop
//! goes away without a word (kill -9, a crash, a laptop asleep or off the network).
//!
//! The laptop sends an empty line every [`HEARTBEAT_SECS`], and `bye` when podtun deals with
//! the job itself (Ctrl-C, `podtun stop`, the job's end). A lost connection closes the channel
//! just as a dead laptop does, so neither EOF nor silence cancels at once: the script waits
//! [`GRACE`], longer than podtun's reconnect backoff, and cancels only if no newer watchdog of
//! the same job started meanwhile. Each watchdog writes its own id to
//! `~/.cache/podtun/slurm/JOBID.watch` when it starts, so the one podtun starts on its new
//! connection takes the job over from the one of the lost connection.

use std::time::Duration;

use anyhow::anyhow;
use tracing::debug;

use super::job::{MARK, STATE_DIR};
use crate::laptop::ssh::exec::sh_quote;
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::{Heartbeat, SshSession};
use crate::plan::slurm::JobId;
use crate::proto::wire::HEARTBEAT_SECS;

/// How long the job outlives the laptop's last word: above the reconnect backoff's cap (30 s
/// ± 20%) plus a new connection, so that a reconnect never loses the job.
pub const GRACE: Duration = Duration::from_secs(60);
/// Bound on the watchdog reporting that it runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the channel's end after `bye`.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The watchdog of one job, over one connection.
pub struct Watchdog {
    script: RemoteScript,
    beats: Heartbeat,
}

impl Watchdog {
    /// Starts the watchdog of `job` on the login host and waits for it to run.
    pub async fn start(ssh: &SshSession, job: &JobId) -> anyhow::Result<Watchdog> {
        let mut script =
            RemoteScript::start(ssh, &script(job), MARK, "the Slurm job's watchdog").await?;
        let said = tokio::time::timeout(START_TIMEOUT, script.lines.recv()).await;
        match said {
            Ok(Some(line)) if line == "watching" => {}
            Ok(Some(line)) => {
                script.eof().await;
                return Err(anyhow!(
                    "the watchdog of Slurm job {job} on `{}` could not start: {line}",
                    ssh.host()
                ));
            }
            Ok(None) | Err(_) => {
                script.eof().await;
                return Err(anyhow!(
                    "the watchdog of Slurm job {job} on `{}` did not start within {}s",
                    ssh.host(),
                    START_TIMEOUT.as_secs()
                ));
            }
        }
        let beats = script.heartbeat(Duration::from_secs(HEARTBEAT_SECS));
        debug!(host = %ssh.host(), %job, "the job's watchdog runs");
        Ok(Watchdog { script, beats })
    }

    /// podtun deals with the job itself: the watchdog leaves without cancelling it.
    pub async fn dismiss(self) {
        let Watchdog { script, beats } = self;
        drop(beats);
        if script.writer().send(b"bye\n").await.is_ok() {
            script.stop(STOP_TIMEOUT).await;
        }
    }
}

/// The script (POSIX sh). Its one report is `watching` (or why it cannot); after that it
/// prints nothing, so that a connection gone cannot stop it with SIGPIPE.
fn script(job: &JobId) -> String {
    format!(
        r#"umask 077
M={mark}
job={job}
d="$HOME/{STATE_DIR}"
mkdir -p "$d" || {{ echo "$M no-dir $d"; exit 3; }}
command -v scancel >/dev/null 2>&1 || {{ echo "$M no-scancel"; exit 3; }}
me="$$ $(date +%s)"
owner="$d/$job.watch"
echo "$me" >"$owner.$$" && mv -f "$owner.$$" "$owner" || {{ echo "$M no-dir $d"; exit 3; }}
beat="$d/$job.beat.$$"
: >"$beat"
trap '' HUP PIPE
echo "$M watching"
exec >/dev/null 2>&1
main=$$
( missed=0
  while sleep 5; do
    [ "$(cat "$owner" 2>/dev/null)" = "$me" ] || {{ kill -TERM "$main" 2>/dev/null; exit 0; }}
    if [ -e "$beat" ]; then rm -f "$beat"; missed=0; else missed=$((missed + 5)); fi
    if [ "$missed" -ge {grace} ]; then
      if [ "$(cat "$owner" 2>/dev/null)" = "$me" ]; then scancel "$job"; rm -f "$owner"; fi
      kill -TERM "$main" 2>/dev/null
      exit 0
    fi
  done ) </dev/null &
wd=$!
trap 'rm -f "$beat"; exit 0' TERM
while IFS= read -r line; do
  if [ "$line" = bye ]; then
    kill "$wd" 2>/dev/null
    rm -f "$beat"
    [ "$(cat "$owner" 2>/dev/null)" = "$me" ] && rm -f "$owner"
    exit 0
  fi
  : >"$beat"
done
wait "$wd"
rm -f "$beat"
"#,
        mark = sh_quote(MARK),
        job = sh_quote(job.as_str()),
        grace = GRACE.as_secs(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_outlasts_the_reconnect_backoff() {
        assert!(GRACE > crate::laptop::link::backoff(u32::MAX) + Duration::from_secs(20));
        assert!(GRACE.as_secs() > 3 * HEARTBEAT_SECS);
    }

    /// The script is valid POSIX sh.
    #[cfg(unix)]
    #[test]
    fn script_parses_with_sh() {
        let job: JobId = "42_1".parse().expect("id");
        let text = script(&job);
        assert!(text.contains("job='42_1'"), "{text}");
        assert!(text.contains("scancel \"$job\""), "{text}");
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", &text])
            .output()
            .expect("/bin/sh");
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
