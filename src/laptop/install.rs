//! Which `podtun` runs the agent on the login host: `--remote-bin`, else a podtun of the same
//! version found there (PATH, then `~/.cache/podtun/<version>/podtun`), else this very binary,
//! uploaded (same OS and arch, written 0700 under a temp name, checksum checked, renamed).

use anyhow::{anyhow, bail, Context};
use russh::ChannelMsg;
use tracing::{debug, info};

use super::ssh::SshSession;
use crate::error::hinted;
use crate::plan::Plan;
use crate::wire::VERSION;

/// What a finished remote command printed.
struct Ran {
    stdout: String,
    stderr: String,
    status: Option<u32>,
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
async fn run(ssh: &SshSession, command: &str, input: Option<&[u8]>) -> anyhow::Result<Ran> {
    let marked = format!("echo '{OUTPUT_MARK}'; {command}");
    let channel = ssh.exec(&in_login_shell(&marked)).await?;
    let (mut read, write) = channel.split();
    if let Some(bytes) = input {
        write
            .data(bytes)
            .await
            .context("could not send data to the login host")?;
    }
    write.eof().await.ok();
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
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

/// `uname -sm` of the machine this podtun was built for, e.g. `Linux x86_64`.
fn local_uname() -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "aarch64" if os == "Darwin" => "arm64",
        other => other,
    };
    format!("{os} {arch}")
}

/// What can run the agent on the login host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// `--remote-bin PATH` (quoted for the shell).
    Given(String),
    /// podtun of this version found there (quoted for the shell).
    Found(String),
    /// None there; this binary can be uploaded (same OS and architecture).
    Upload,
}

/// The command that starts podtun on the login host (without arguments).
pub async fn agent_binary(ssh: &SshSession, plan: &Plan) -> anyhow::Result<String> {
    match locate(ssh, plan).await? {
        Located::Given(bin) | Located::Found(bin) => Ok(bin),
        Located::Upload => upload(ssh, ssh.host()).await,
    }
}

/// Looks for what can run the agent, without changing anything on the login host.
pub async fn locate(ssh: &SshSession, plan: &Plan) -> anyhow::Result<Located> {
    let host = ssh.host().to_string();
    if let Some(bin) = &plan.remote_bin {
        return Ok(Located::Given(remote_path(bin)));
    }
    let probe = format!(
        "uname -sm; for p in \"$(command -v podtun 2>/dev/null)\" \"$HOME/.cache/podtun/{VERSION}/podtun\"; do \
         if [ -n \"$p\" ] && [ -x \"$p\" ]; then echo \"candidate $p $(\"$p\" --version 2>/dev/null)\"; fi; done"
    );
    let ran = run(ssh, &probe, None).await?;
    let mut lines = ran.stdout.lines();
    let uname = lines.next().unwrap_or_default().trim().to_string();
    let want = format!("podtun {VERSION}");
    for line in lines {
        if let Some((path, version)) = line
            .strip_prefix("candidate ")
            .and_then(|rest| rest.split_once(' '))
        {
            debug!(%host, path, version, "podtun on the login host");
            if version.trim() == want {
                return Ok(Located::Found(sh_quote(path)));
            }
        }
    }
    if plan.no_install {
        return Err(hinted(
            anyhow!("{want} is not installed on login host `{host}`"),
            "install it there, pass --remote-bin PATH, or drop --no-install to let podtun upload itself",
        ));
    }
    if uname != local_uname() {
        return Err(hinted(
            anyhow!(
                "login host `{host}` runs {uname}, but this podtun is built for {}",
                local_uname()
            ),
            format!(
                "install podtun {VERSION} for {uname} on the login host and pass --remote-bin PATH"
            ),
        ));
    }
    Ok(Located::Upload)
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
        let why = ran
            .stderr
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        bail!(
            "`{command}` failed on `{}` (exit status {}){}",
            ssh.host(),
            ran.status.map_or("unknown".to_string(), |s| s.to_string()),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        );
    }
    Ok(line)
}

/// Uploads this binary to `~/.cache/podtun/<version>/podtun` and returns its path.
async fn upload(ssh: &SshSession, host: &str) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("could not find this podtun's binary")?;
    let bytes = tokio::fs::read(&exe)
        .await
        .with_context(|| format!("could not read `{}`", exe.display()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sum: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    info!(%host, size = bytes.len(), "uploading podtun to the login host");
    let script = upload_script(&sum);
    let ran = run(ssh, &script, Some(&bytes)).await?;
    let path = ran.stdout.trim();
    if ran.status != Some(0) || path.is_empty() {
        bail!(
            "could not upload podtun to login host `{host}`: {}",
            ran.stderr.trim()
        );
    }
    Ok(sh_quote(path))
}

/// The login-host side of the upload: stdin to a temp file (0700, in a 0700 directory), its
/// sha256 checked against `sum`, then renamed; a short or corrupted upload leaves nothing.
fn upload_script(sum: &str) -> String {
    format!(
        "set -e; umask 077; d=\"$HOME/.cache/podtun/{VERSION}\"; mkdir -p \"$d\"; \
         t=\"$d/.podtun.upload.$$\"; trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; \
         s=$(sha256sum \"$t\" 2>/dev/null || shasum -a 256 \"$t\"); s=${{s%% *}}; \
         if [ \"$s\" != {sum} ]; then echo \"checksum mismatch: got $s\" >&2; exit 3; fi; \
         chmod 700 \"$t\"; mv -f \"$t\" \"$d/podtun\"; trap - EXIT; echo \"$d/podtun\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the upload script in a shell with `input` on stdin and HOME in a temp dir.
    #[cfg(unix)]
    fn upload(input: &[u8], of: &[u8]) -> (std::process::Output, std::path::PathBuf) {
        use std::io::Write;
        let home = std::env::temp_dir().join(format!(
            "podtun-upload-{}-{}",
            std::process::id(),
            input.len()
        ));
        std::fs::create_dir_all(&home).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, of);
        let sum: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut child = std::process::Command::new("sh")
            .args(["-c", &upload_script(&sum)])
            .env("HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        (
            child.wait_with_output().unwrap(),
            home.join(".cache/podtun").join(VERSION),
        )
    }

    #[cfg(unix)]
    #[test]
    fn a_truncated_upload_leaves_nothing_and_a_whole_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let binary = vec![7u8; 100_000];
        let (out, dir) = upload(&binary[..60_000], &binary);
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no binary, no temp file"
        );
        if let Some(home) = dir.ancestors().nth(3) {
            std::fs::remove_dir_all(home).ok();
        }

        let (out, dir) = upload(&binary, &binary);
        assert!(out.status.success(), "{out:?}");
        let installed = dir.join("podtun");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            installed.display().to_string()
        );
        assert_eq!(std::fs::read(&installed).unwrap(), binary);
        let mode = std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        if let Some(home) = dir.ancestors().nth(3) {
            std::fs::remove_dir_all(home).ok();
        }
    }

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
