//! kubectl mode's launcher: the `--launch` command runs on the login host, in the user's login
//! shell, while the cluster half here watches for its pod. A small script there runs it with
//! stdin closed in a process group of its own, marks each line it prints, reports its exit
//! status, and stops the whole group when the laptop gives up on it (time up, or gone).

use std::time::Duration;

use anyhow::anyhow;
use futures::future::BoxFuture;

use crate::cluster::launch::shell::{OnLine, Ran, Shell};
use crate::laptop::ssh::exec::sh_quote;
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::SshSession;

/// The prefix of the script's lines (the rest is login-shell noise).
const MARK: &str = "podtun-launch:";
/// Bound on the script's end once it was told to stop the launcher.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The login host, for the launcher.
pub(super) struct OverSsh {
    pub(super) ssh: SshSession,
}

impl Shell for OverSsh {
    fn place(&self) -> String {
        format!("on login host `{}`", self.ssh.host())
    }

    fn run<'a>(
        &'a self,
        command: &'a str,
        timeout: Duration,
        line: OnLine<'a>,
    ) -> BoxFuture<'a, anyhow::Result<Ran>> {
        Box::pin(run(&self.ssh, command, timeout, line))
    }
}

/// The script (POSIX sh): `out LINE` for each line, `status N` at the end. `done` on stdin
/// leaves what the launcher started alone; EOF or a signal stops it, in its own session when
/// `setsid` is there (without a terminal, `set -m` gives no process group of its own).
fn script(command: &str) -> String {
    format!(
        r#"M={MARK}
d=$(mktemp -d "${{TMPDIR:-/tmp}}/podtun-launch.XXXXXXXX") || {{ echo "$M status 125"; exit 3; }}
own=
command -v setsid >/dev/null 2>&1 && own=setsid
{{ $own /bin/sh -c 'echo "$$" >"$1"; exec /bin/sh -c "$2"' launcher "$d/pid" {command} </dev/null 2>&1; echo "$M status $?"; }} | while IFS= read -r l || [ -n "$l" ]; do
  case "$l" in "$M "*) printf '%s\n' "$l" ;; *) printf '%s out %s\n' "$M" "$l" ;; esac
done &
signal() {{
  n=0
  while [ ! -s "$d/pid" ] && [ "$n" -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done
  p=$(cat "$d/pid" 2>/dev/null)
  [ -n "$p" ] && {{ kill -"$1" -"$p" 2>/dev/null || kill -"$1" "$p" 2>/dev/null; }}
}}
trap 'signal TERM; rm -rf "$d"; exit 0' HUP INT TERM
while IFS= read -r line; do [ "$line" = done ] && {{ rm -rf "$d"; exit 0; }}; done
signal TERM
sleep 2 2>/dev/null || sleep 1
signal KILL
rm -rf "$d"
exit 0
"#,
        command = sh_quote(command),
    )
}

async fn run(
    ssh: &SshSession,
    command: &str,
    timeout: Duration,
    line: OnLine<'_>,
) -> anyhow::Result<Ran> {
    let mut script = RemoteScript::start(ssh, &script(command), MARK, "the launcher").await?;
    let mut ran = Ran::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let status = loop {
        let next = tokio::time::timeout_at(deadline, script.lines.recv()).await;
        match next {
            Err(_) => break None,
            Ok(None) => {
                return Err(anyhow!(
                    "the connection to login host `{}` closed while the launcher ran",
                    ssh.host()
                ))
            }
            Ok(Some(said)) => {
                if let Some(text) = said.strip_prefix("out ") {
                    line(text);
                    ran.push(text);
                } else if let Some(code) = said.strip_prefix("status ") {
                    break Some(code.trim().parse::<i32>().ok());
                }
            }
        }
    };
    match status {
        Some(code) => {
            ran.status = code;
            let _ = script.writer().send(b"done\n").await;
            script.stop(STOP_TIMEOUT).await;
        }
        None => {
            ran.timed_out = true;
            script.stop(STOP_TIMEOUT).await;
        }
    }
    Ok(ran)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The script is valid POSIX sh, and stops a launcher that never returns on EOF.
    #[test]
    fn script_runs_and_stops_the_launcher() {
        let text = script("echo 'pod/a-1 created'; sleep 300");
        let parsed = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", &text])
            .output()
            .expect("/bin/sh");
        assert!(parsed.status.success(), "{text}");
        // stdin at EOF at once: the launcher is stopped, and the script ends.
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &text])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("/bin/sh");
        assert!(out.status.success());
        let finished = std::process::Command::new("/bin/sh")
            .args(["-c", &script("echo hi; exit 4")])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("/bin/sh")
            .wait_with_output()
            .expect("wait");
        let said = String::from_utf8_lossy(&finished.stdout);
        // The launcher may or may not have printed before EOF stopped it; never a stray line.
        assert!(said.lines().all(|l| l.starts_with(MARK)), "{said}");
    }
}
