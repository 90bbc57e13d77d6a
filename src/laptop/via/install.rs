//! Which `podtun` runs the agent on the login host: `--remote-bin`, else a podtun of the same
//! version found there (PATH, then `~/.cache/podtun/<version>/podtun`), else an upload: this
//! very binary when it is built for the login host's OS and arch, else the login host's build
//! from the release archives ([`super::release`]). An upload is gzip-compressed when the login
//! host has gzip, written 0700 under a temp name, checksum checked, and renamed into place only
//! after it ran `--version` there.

use anyhow::{anyhow, Context};
use tracing::{debug, info};

use super::release;
use crate::error::hinted;
use crate::laptop::ssh::exec::{remote_path, run, sh_quote};
use crate::laptop::ssh::SshSession;
use crate::plan::Plan;
use crate::proto::wire::VERSION;

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

/// What the probe found on the login host.
struct Found {
    /// `uname -sm`, e.g. `Linux x86_64`.
    uname: String,
    /// Whether `gzip` is there to decompress an upload.
    gzip: bool,
    /// Executable podtuns there: path and what `--version` printed.
    candidates: Vec<(String, String)>,
}

/// One round trip: the login host's OS and arch, gzip, and the podtuns it has.
async fn probe(ssh: &SshSession) -> anyhow::Result<Found> {
    let probe = format!(
        "echo \"uname $(uname -sm)\"; if command -v gzip >/dev/null 2>&1; then echo gzip; fi; \
         for p in \"$(command -v podtun 2>/dev/null)\" \"$HOME/.cache/podtun/{VERSION}/podtun\"; do \
         if [ -n \"$p\" ] && [ -x \"$p\" ]; then echo \"candidate $p $(\"$p\" --version 2>/dev/null </dev/null)\"; fi; done"
    );
    let ran = run(ssh, &probe, None).await?;
    let mut found = Found {
        uname: String::new(),
        gzip: false,
        candidates: Vec::new(),
    };
    for line in ran.stdout.lines() {
        if let Some(uname) = line.strip_prefix("uname ") {
            found.uname = uname.trim().to_string();
        } else if line == "gzip" {
            found.gzip = true;
        } else if let Some((path, version)) = line
            .strip_prefix("candidate ")
            .and_then(|rest| rest.split_once(' '))
        {
            found
                .candidates
                .push((path.to_string(), version.trim().to_string()));
        }
    }
    Ok(found)
}

/// The command that starts podtun on the login host (without arguments).
///
/// In order: `--remote-bin`; a podtun of this version there; this binary uploaded, when it is
/// built for the login host's OS and arch and runs there; the login host's build from the
/// release archives, uploaded. The error names each step tried and why it failed, one line
/// each.
pub async fn agent_binary(ssh: &SshSession, plan: &Plan) -> anyhow::Result<String> {
    let host = ssh.host().to_string();
    if let Some(bin) = &plan.remote_bin {
        return Ok(remote_path(bin));
    }
    let found = probe(ssh).await?;
    let want = format!("podtun {VERSION}");
    for (path, version) in &found.candidates {
        debug!(%host, path, version, "podtun on the login host");
        if *version == want {
            return Ok(sh_quote(path));
        }
    }
    if plan.no_install {
        return Err(hinted(
            anyhow!("{want} is not installed on login host `{host}`"),
            "install it there, pass --remote-bin PATH, or drop --no-install to let podtun upload itself",
        ));
    }
    let mut tried = vec![not_installed(&found)];
    if let Some(path) = upload_this(ssh, &found, &mut tried).await? {
        return Ok(path);
    }
    upload_release(ssh, &found, &mut tried).await
}

/// Why no installed podtun will do, naming the versions found.
fn not_installed(found: &Found) -> String {
    let want = format!("podtun {VERSION}");
    let others: Vec<String> = found
        .candidates
        .iter()
        .map(|(path, version)| {
            let version = if version.is_empty() {
                "no version"
            } else {
                version
            };
            format!("{path} is {version}")
        })
        .collect();
    if others.is_empty() {
        format!("{want} is not installed there (PATH, ~/.cache/podtun/{VERSION}/podtun)")
    } else {
        format!("{want} is not installed there ({})", others.join(", "))
    }
}

/// Uploads this very binary when it is built for the login host and runs there; `None` (with
/// the reason in `tried`) when the release build should be tried instead.
async fn upload_this(
    ssh: &SshSession,
    found: &Found,
    tried: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    let (host, uname, local) = (ssh.host(), found.uname.as_str(), local_uname());
    if release::foreign_build() {
        tried.push(format!(
            "this podtun counts as a foreign build ({}=1): not uploaded",
            release::FOREIGN_BUILD_ENV
        ));
        return Ok(None);
    }
    if uname != local {
        tried.push(format!(
            "this podtun is built for {local}, the login host runs {uname}: not uploaded"
        ));
        return Ok(None);
    }
    let exe = std::env::current_exe().context("could not find this podtun's binary")?;
    let bytes = tokio::fs::read(&exe)
        .await
        .with_context(|| format!("could not read `{}`", exe.display()))?;
    match upload(ssh, &bytes, found.gzip).await {
        Ok(path) => Ok(Some(path)),
        Err(Upload::DoesNotRun(why)) => {
            tried.push(format!(
                "uploading this podtun: it does not run there: {why}"
            ));
            Ok(None)
        }
        Err(Upload::Failed(e)) => {
            tried.push(format!("uploading this podtun: {e:#}"));
            Err(not_started(host, uname, tried))
        }
    }
}

/// Uploads the login host's build from the release archives; the error names every step tried.
async fn upload_release(
    ssh: &SshSession,
    found: &Found,
    tried: &mut Vec<String>,
) -> anyhow::Result<String> {
    let (host, uname) = (ssh.host(), found.uname.as_str());
    let Some(target) = release::target_for(uname) else {
        tried.push(format!("there is no release build of podtun for {uname}"));
        return Err(not_started(host, uname, tried));
    };
    let build = match release::agent_build(target).await {
        Ok(build) => build,
        Err(e) => {
            tried.push(format!("getting the {target} release build: {e:#}"));
            return Err(not_started(host, uname, tried));
        }
    };
    let why = match upload(ssh, &build.bytes, found.gzip).await {
        Ok(path) => {
            debug!(%host, from = %build.from, "uploaded the release build");
            return Ok(path);
        }
        Err(Upload::DoesNotRun(why)) => format!("it does not run there: {why}"),
        Err(Upload::Failed(e)) => format!("{e:#}"),
    };
    tried.push(format!(
        "uploading the {target} release build ({}): {why}",
        build.from
    ));
    Err(not_started(host, uname, tried))
}

/// What can run the agent on the login host, as `podtun doctor` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// `--remote-bin PATH` (quoted for the shell).
    Given(String),
    /// podtun of this version found there (quoted for the shell).
    Found(String),
    /// None there: [`agent_binary`] would upload one.
    Upload,
}

/// Looks for what can run the agent, without changing anything on the login host.
pub async fn locate(ssh: &SshSession, plan: &Plan) -> anyhow::Result<Located> {
    if let Some(bin) = &plan.remote_bin {
        return Ok(Located::Given(remote_path(bin)));
    }
    let found = probe(ssh).await?;
    let want = format!("podtun {VERSION}");
    if let Some((path, _)) = found.candidates.iter().find(|(_, v)| *v == want) {
        return Ok(Located::Found(sh_quote(path)));
    }
    if plan.no_install {
        return Err(hinted(
            anyhow!("{want} is not installed on login host `{}`", ssh.host()),
            "install it there, pass --remote-bin PATH, or drop --no-install to let podtun upload itself",
        ));
    }
    Ok(Located::Upload)
}

/// The error when no podtun could be started: each step tried, one line each.
fn not_started(host: &str, uname: &str, tried: &[String]) -> anyhow::Error {
    let steps: String = tried.iter().map(|t| format!("\n  - {t}")).collect();
    hinted(
        anyhow!("could not start podtun {VERSION} on login host `{host}`:{steps}"),
        format!(
            "install podtun {VERSION} for {uname} on the login host and pass --remote-bin PATH, \
             or point {} at a folder (https://, file://) holding its release archive and SHA256SUMS",
            release::RELEASES_URL_ENV
        ),
    )
}

/// Why an upload gave no usable podtun.
enum Upload {
    /// It arrived whole but `--version` did not print this version there (what it printed).
    DoesNotRun(String),
    /// It did not arrive.
    Failed(anyhow::Error),
}

/// Exit code of the upload script when the binary arrived but does not run.
const DOES_NOT_RUN: u32 = 4;

/// Uploads `bytes` (a podtun binary) to `~/.cache/podtun/<version>/podtun`, gzip-compressed
/// when the login host has gzip; returns its path once it ran `--version` there.
async fn upload(ssh: &SshSession, bytes: &[u8], gzip: bool) -> Result<String, Upload> {
    let host = ssh.host();
    let sum = release::sha256_hex(bytes);
    let payload = if gzip {
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || compress(&bytes))
            .await
            .map_err(|e| Upload::Failed(anyhow!("compressing: {e}")))?
            .map_err(|e| Upload::Failed(anyhow!("compressing: {e}")))?
    } else {
        bytes.to_vec()
    };
    info!(%host, size = bytes.len(), sent = payload.len(), gzip, "uploading podtun to the login host");
    let ran = run(ssh, &upload_script(&sum, gzip), Some(&payload))
        .await
        .map_err(Upload::Failed)?;
    let path = ran.stdout.trim();
    let stderr = ran.stderr.trim();
    match ran.status {
        Some(0) if !path.is_empty() => Ok(sh_quote(path)),
        Some(DOES_NOT_RUN) => Err(Upload::DoesNotRun(quote_output(stderr))),
        _ if stderr.is_empty() => Err(Upload::Failed(anyhow!(
            "the upload to login host `{host}` failed (exit status {:?})",
            ran.status
        ))),
        _ => Err(Upload::Failed(anyhow!(
            "the upload to login host `{host}` failed: {}",
            quote_output(stderr)
        ))),
    }
}

/// A remote command's message on one line, bounded.
fn quote_output(text: &str) -> String {
    let line: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = line.join("; ");
    match line.char_indices().nth(400) {
        Some((at, _)) => format!("`{}…`", &line[..at]),
        None => format!("`{line}`"),
    }
}

/// gzip of `bytes`, as `gzip -dc` reads it.
fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::new(6),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// The login-host side of the upload: stdin (gzip-decompressed when `gzip`) to a temp file
/// (0700, in a 0700 directory), its sha256 checked against `sum`, `--version` run, then
/// renamed into place. A short, corrupted or unrunnable upload leaves nothing (exit 3 for a
/// checksum mismatch, [`DOES_NOT_RUN`] with what the binary printed).
fn upload_script(sum: &str, gzip: bool) -> String {
    let receive = if gzip { "gzip -dc" } else { "cat" };
    let want = sh_quote(&format!("podtun {VERSION}"));
    format!(
        "set -e; umask 077; c=\"$HOME/.cache/podtun\"; d=\"$c/{VERSION}\"; mkdir -p \"$d\"; \
         t=\"$d/.podtun.upload.$$\"; trap 'rm -f \"$t\"; rmdir \"$d\" \"$c\" 2>/dev/null || :' EXIT; \
         {receive} > \"$t\"; \
         s=$(sha256sum \"$t\" 2>/dev/null || shasum -a 256 \"$t\"); s=${{s%% *}}; \
         if [ \"$s\" != {sum} ]; then echo \"checksum mismatch: got $s\" >&2; exit 3; fi; \
         chmod 700 \"$t\"; v=$(\"$t\" --version 2>&1 </dev/null) || :; \
         if [ \"$v\" != {want} ]; then printf '%s\\n' \"$v\" >&2; exit {DOES_NOT_RUN}; fi; \
         mv -f \"$t\" \"$d/podtun\"; trap - EXIT; echo \"$d/podtun\""
    )
}

#[cfg(test)]
mod tests {
    // The upload script runs in a POSIX shell: its tests run on Unix.
    #[cfg(unix)]
    use super::*;

    /// Runs the upload script in a shell with `input` on stdin and HOME in a temp dir; the
    /// output and `~/.cache/podtun/<version>`.
    #[cfg(unix)]
    fn upload(
        home: &std::path::Path,
        input: &[u8],
        of: &[u8],
        gzip: bool,
    ) -> (std::process::Output, std::path::PathBuf) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", &upload_script(&release::sha256_hex(of), gzip)])
            .env("HOME", home)
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

    /// A stand-in binary: a script that prints `version` to `--version`, padded to ~100 kB.
    #[cfg(unix)]
    fn script(version: &str, status: u8) -> Vec<u8> {
        let fd = if status == 0 { 1 } else { 2 };
        let mut text = format!(
            "#!/bin/sh\necho {} >&{fd}\nexit {status}\n",
            sh_quote(version)
        );
        for i in 0..5000 {
            text.push_str(&format!("# padding {i}\n"));
        }
        text.into_bytes()
    }

    #[cfg(unix)]
    #[test]
    fn a_truncated_upload_leaves_nothing_and_a_whole_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let binary = script(&format!("podtun {VERSION}"), 0);
        for gzip in [false, true] {
            let home = tempfile::tempdir().unwrap();
            let wire = |bytes: &[u8]| {
                if gzip {
                    compress(bytes).unwrap()
                } else {
                    bytes.to_vec()
                }
            };
            let (out, dir) = upload(home.path(), &binary[..60_000], &binary, false);
            assert_eq!(out.status.code(), Some(3), "gzip {gzip}: {out:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
            assert!(!dir.exists(), "no binary, no temp file, no directory");
            if gzip {
                let whole = wire(&binary);
                let (out, dir) = upload(home.path(), &whole[..whole.len() / 2], &binary, true);
                assert!(!out.status.success(), "a cut gzip stream: {out:?}");
                assert!(!dir.exists(), "no binary, no temp file, no directory");
            }

            let (out, dir) = upload(home.path(), &wire(&binary), &binary, gzip);
            assert!(out.status.success(), "gzip {gzip}: {out:?}");
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
            assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp file");
        }
    }

    /// A binary that arrives whole but cannot run there (a missing glibc version, or another
    /// version of podtun) is removed, and what it printed is the reason.
    #[cfg(unix)]
    #[test]
    fn an_upload_that_does_not_run_is_removed_with_its_message() {
        let glibc = "./podtun: /lib64/libc.so.6: version `GLIBC_2.34' not found";
        for binary in [script(glibc, 1), script("podtun 0.0.1", 0)] {
            let home = tempfile::tempdir().unwrap();
            let (out, dir) = upload(home.path(), &compress(&binary).unwrap(), &binary, true);
            assert_eq!(out.status.code(), Some(DOES_NOT_RUN as i32), "{out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("GLIBC_2.34' not found") || stderr.contains("podtun 0.0.1"),
                "{stderr}"
            );
            assert!(out.stdout.is_empty(), "{out:?}");
            assert!(!dir.exists(), "nothing left in {}", dir.display());
            assert!(!home.path().join(".cache/podtun").exists());
        }
        assert_eq!(quote_output("a\n\n  b \n"), "`a; b`");
        assert!(quote_output(&"x".repeat(1000)).ends_with("…`"));
    }
}
