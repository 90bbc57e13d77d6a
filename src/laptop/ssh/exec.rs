//! Commands on the remote host: POSIX shell quoting, the user's login environment, and one
//! command run to its end ([`run`] → [`Ran`]).

use anyhow::{anyhow, Context};
use tracing::debug;

use super::channel::{Running, Said};
use super::session::SshSession;

/// What a finished remote command printed.
pub(crate) struct Ran {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) status: Option<u32>,
}

impl Ran {
    /// The last line of its stderr, trimmed.
    pub(crate) fn said(&self) -> String {
        self.stderr
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The error for `command` failing on `host`: its exit status and last word.
    pub(crate) fn failure(&self, command: &str, host: &str) -> anyhow::Error {
        let why = self.said();
        anyhow!(
            "`{command}` failed on {host} (exit status {}){}",
            self.status.map_or("unknown".to_string(), |s| s.to_string()),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        )
    }
}

/// Quotes a string for a POSIX shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A path as the user wrote it, for the login host's shell: `~/x` stays relative to `$HOME`.
pub fn remote_path(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("\"$HOME\"/{}", sh_quote(rest)),
        None => sh_quote(path),
    }
}

/// kubectl's flags for `cluster`'s kubeconfig and context, for the login host's shell (empty
/// when neither is given).
pub fn kubectl_flags(cluster: &crate::proto::wire::ClusterRef) -> String {
    let mut flags = String::new();
    if let Some(path) = &cluster.kubeconfig {
        flags.push_str(&format!(
            " --kubeconfig={}",
            remote_path(&path.display().to_string())
        ));
    }
    if let Some(context) = &cluster.context {
        flags.push_str(&format!(" --context={}", sh_quote(context)));
    }
    flags
}

/// Shells whose `-l -c` runs the user's login scripts: the command then runs in `/bin/sh`
/// under the environment they set up. Any other login shell is replaced by `/bin/sh -l`.
const LOGIN_SHELLS: &str = "bash|zsh|ksh|ksh93|mksh|dash|ash|sh|fish";

/// `command` (POSIX sh) as the user's login shell runs it: PATH, `KUBECONFIG` and the rest of
/// what `~/.profile`, `~/.bash_profile` or `/etc/profile.d` export are set, as in an
/// interactive `ssh HOST`. sshd's own `SHELL -c` alone reads none of them.
pub fn in_login_shell(command: &str) -> String {
    let inner = format!("exec /bin/sh -c {}", sh_quote(command));
    format!(
        "case \"${{SHELL##*/}}\" in {LOGIN_SHELLS}) ;; *) SHELL=/bin/sh ;; esac; \
         exec \"$SHELL\" -l -c {}",
        sh_quote(&inner)
    )
}

/// The line a remote command prints before its own output: what login scripts print comes
/// before it and is skipped.
const OUTPUT_MARK: &str = "--- podtun output ---";

/// The output after [`OUTPUT_MARK`]'s line; nothing when the mark never came.
fn after_mark(stdout: &str) -> &str {
    match stdout.find(OUTPUT_MARK) {
        Some(at) => {
            let rest = &stdout[at + OUTPUT_MARK.len()..];
            rest.strip_prefix('\n').unwrap_or(rest)
        }
        None => "",
    }
}

/// Runs `command` on the login host in the user's login environment, sending `input` on its
/// stdin, and collects its output (without what login scripts printed before it).
pub(crate) async fn run(
    ssh: &SshSession,
    command: &str,
    input: Option<&[u8]>,
) -> anyhow::Result<Ran> {
    let marked = format!("echo '{OUTPUT_MARK}'; {command}");
    let Running {
        mut output,
        input: stdin,
    } = ssh.exec(&in_login_shell(&marked)).await?;
    if let Some(bytes) = input {
        stdin
            .send(bytes)
            .await
            .context("could not send data to the login host")?;
    }
    stdin.eof().await.ok();
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(said) = output.next().await {
        match said {
            Said::Stdout(data) => stdout.extend_from_slice(&data),
            Said::Stderr(data) => stderr.extend_from_slice(&data),
            Said::Exit(code) => status = Some(code),
        }
    }
    let stdout = String::from_utf8_lossy(&stdout);
    let noise = stdout.split(OUTPUT_MARK).next().unwrap_or_default().trim();
    if !noise.is_empty() {
        debug!(host = %ssh.host(), "login shell: {noise}");
    }
    Ok(Ran {
        stdout: after_mark(&stdout).to_string(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        status,
    })
}

/// The first line `COMMAND` prints on the login host (in the login environment), or why not.
pub async fn first_line(ssh: &SshSession, command: &str) -> anyhow::Result<String> {
    let ran = run(ssh, command, None).await?;
    let line = ran
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if ran.status != Some(0) || line.is_empty() {
        return Err(ran.failure(command, &format!("`{}`", ssh.host())));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login shell that prints a banner and exports a variable from `~/.profile`: the
    /// command sees the variable, and its output is found after the mark.
    #[cfg(unix)]
    #[test]
    fn commands_run_in_the_login_environment_past_banners() {
        for shell in ["/bin/sh", "/bin/bash", "/bin/false"] {
            let home = tempfile::tempdir().unwrap();
            std::fs::write(
                home.path().join(".profile"),
                "echo 'Welcome to the login host'\nexport PODTUN_FROM_PROFILE='it'\\''s set'\n",
            )
            .unwrap();
            let marked =
                format!("echo '{OUTPUT_MARK}'; printf '%s\\n' \"$PODTUN_FROM_PROFILE\" \"$0\"");
            let out = std::process::Command::new("sh")
                .args(["-c", &in_login_shell(&marked)])
                .env("HOME", home.path())
                .env("SHELL", shell)
                .env_remove("PODTUN_FROM_PROFILE")
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {out:?}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.starts_with("Welcome"), "{shell}: {stdout}");
            assert_eq!(
                after_mark(&stdout),
                "it's set\n/bin/sh\n",
                "{shell}: {stdout}"
            );
        }
        assert_eq!(after_mark("no mark at all\n"), "");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(remote_path("~/bin/podtun"), "\"$HOME\"/'bin/podtun'");
        assert_eq!(remote_path("/opt/podtun"), "'/opt/podtun'");
    }
}
