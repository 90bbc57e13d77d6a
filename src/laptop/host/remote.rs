//! The script of [`host_script`](super::host_script) running on the SSH host over an exec
//! channel, in the user's login environment: its marked lines in, heartbeats and EOF out. A
//! server podtun started lives as long as this channel.

use std::time::Duration;

use anyhow::{anyhow, bail};

use super::script::{Listing, Script, MARK};
use crate::error::hinted;
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::{Heartbeat, SshSession};
use crate::proto::wire::HEARTBEAT_SECS;

/// Bound on the channel's end after EOF: the host side gives Jupyter 5 s to stop, then cleans up.
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// The script on the host.
pub struct Remote {
    script: RemoteScript,
    /// Heartbeats to a started server's script, from the moment it reported (so a slow
    /// readiness check or a choice never lets its watchdog stop the server).
    beats: Option<Heartbeat>,
}

impl Remote {
    /// Starts `script` on the host and reads what it reports until it is done (listed only) or
    /// has started a server, within `timeout`. With a started server, the returned `Remote`
    /// holds its life.
    pub async fn run(
        ssh: &SshSession,
        script: &Script<'_>,
        timeout: Duration,
    ) -> anyhow::Result<(Listing, Option<Remote>)> {
        let running =
            RemoteScript::start(ssh, &script.render(), MARK, "the Jupyter script").await?;
        if script.start.is_none() {
            // A listing reads nothing.
            running.eof().await;
        }
        let mut remote = Remote {
            script: running,
            beats: None,
        };
        let mut listing = Listing::default();
        let read = tokio::time::timeout(timeout, async {
            while let Some(line) = remote.script.lines.recv().await {
                listing.push(&line);
                if listing.done || listing.problem.is_some() {
                    return Ok(false);
                }
                if listing.started.is_some() {
                    return Ok(true);
                }
            }
            Err(anyhow!(
                "the Jupyter lookup on `{}` ended before it reported",
                remote.script.host()
            ))
        })
        .await;
        match read {
            Ok(Ok(true)) => {
                let every = Duration::from_secs(HEARTBEAT_SECS);
                remote.beats = Some(remote.script.heartbeat(every));
                Ok((listing, Some(remote)))
            }
            Ok(Ok(false)) => {
                // Failing after a start, the script has cleaned up already.
                remote.stop().await;
                Ok((listing, None))
            }
            Ok(Err(e)) => {
                remote.stop().await;
                Err(e)
            }
            Err(_) => {
                remote.stop().await;
                Err(hinted(
                    anyhow!(
                        "Jupyter on `{}` did not report within {}s",
                        remote.script.host(),
                        timeout.as_secs()
                    ),
                    "a first start can be slow: pass a longer --timeout; `-v` shows the login shell's output",
                ))
            }
        }
    }

    /// Resolves once the channel closed (the script ended).
    pub async fn ended(&self) {
        self.script.ended().await
    }

    /// Closes the script's stdin (it stops the server it started and removes its directory)
    /// and waits, bounded, for it to finish.
    pub async fn stop(&self) {
        if let Some(beats) = &self.beats {
            beats.stop();
        }
        self.script.stop(STOP_TIMEOUT).await
    }
}

/// Whether a script's report is a failure: the error for it.
pub fn problem(listing: &Listing, host: &str) -> anyhow::Result<()> {
    let Some((word, detail)) = &listing.problem else {
        return Ok(());
    };
    let err = match word.as_str() {
        "no-jupyter" => hinted(
            anyhow!("`jupyter` is not on the PATH of a login shell on `{host}`"),
            "add its directory to PATH in ~/.profile there, or name its environment with --env (a conda environment or a virtualenv path)",
        ),
        "no-env" => hinted(
            anyhow!("could not use the environment given with --env on `{host}`: {detail}"),
            "pass a conda environment's name, or the path of a virtualenv or conda prefix with jupyter in its bin/",
        ),
        "no-dir" => hinted(
            anyhow!("could not change to the --dir directory on `{host}`"),
            "check the path there (`~/` is the home directory)",
        ),
        "no-private-dir" => anyhow!("could not make a private directory in `{detail}` on `{host}`"),
        "failed" => start_failed(host, detail, &listing.log),
        other => anyhow!("unexpected report `{other}` from the Jupyter script on `{host}`"),
    };
    Err(err)
}

/// Jupyter exited before it listened: its exit status and its last lines (the shell's own
/// message when jupyter could not even run), with a hint for the cause.
fn start_failed(host: &str, status: &str, log: &[String]) -> anyhow::Error {
    let status = status.trim();
    let exited = match status {
        "" => String::new(),
        code => format!(" (exit status {code})"),
    };
    let said = match log {
        [] => "; it printed nothing".to_string(),
        lines => format!("; its last lines:\n  {}", lines.join("\n  ")),
    };
    hinted(
        anyhow!("Jupyter did not start on `{host}`{exited}{said}"),
        start_hint(status, log),
    )
}

/// What to do about a Jupyter that could not start, by what the shell or Python said.
fn start_hint(status: &str, log: &[String]) -> &'static str {
    crate::jupyter::start::failure_hint(status, log)
        .unwrap_or("run `jupyter lab --no-browser` there to see why")
}

/// Fails unless the listing names a live server or the script started one.
pub fn ensure_found(listing: &Listing, host: &str, start_asked: bool) -> anyhow::Result<()> {
    problem(listing, host)?;
    if !listing.servers.is_empty() || listing.started.is_some() {
        return Ok(());
    }
    let dirs = listing.dirs.join(", ");
    let stale = match listing.stale {
        0 => String::new(),
        n => format!(" ({n} stale server file(s) of stopped servers)"),
    };
    if start_asked {
        bail!("the Jupyter script on `{host}` neither found nor started a server");
    }
    let hint = if listing.jupyter {
        "pass --start to start one there for this tunnel (`--env` and `--dir` say with what and where), or start `jupyter lab --no-browser` there yourself".to_string()
    } else {
        format!("`jupyter` is not on the PATH of a login shell on `{host}` either: pass --start --env ENV (a conda environment or a virtualenv path), or add it to PATH in ~/.profile there")
    };
    Err(hinted(
        anyhow!("no running Jupyter server of yours on `{host}` (looked in {dirs}){stale}"),
        hint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn a_failed_start_shows_what_the_shell_said_and_a_hint_for_it() {
        let log = lines(&["bash: /home/u/.venv/bin/jupyter: /home/u/.venv/bin/python3: bad interpreter: Permission denied"]);
        let err = start_failed("vm", "126", &log);
        let text = format!("{err:#}");
        assert!(text.contains("(exit status 126)"), "{text}");
        assert!(
            text.contains("bad interpreter: Permission denied"),
            "{text}"
        );
        let hint = crate::error::hint_of(&err).unwrap();
        assert!(hint.contains("interpreter on the first line"), "{hint}");
    }

    #[test]
    fn each_cause_gets_its_hint() {
        let hint = |status: &str, log: &[&str]| start_hint(status, &lines(log));
        assert!(
            hint("1", &["ModuleNotFoundError: No module named 'jupyterlab'"])
                .contains("pip install")
        );
        assert!(hint("127", &["sh: 1: node: not found"]).contains("PATH"));
        assert!(hint("1", &["jupyter: command not found"]).contains("PATH"));
        assert!(hint("126", &["sh: 1: jupyter: Permission denied"]).contains("permissions"));
        assert!(hint("1", &["Traceback"]).contains("jupyter lab --no-browser"));
        let empty = format!("{:#}", start_failed("vm", "1", &[]));
        assert!(
            empty.ends_with("(exit status 1); it printed nothing"),
            "{empty}"
        );
    }
}
