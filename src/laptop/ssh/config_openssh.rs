//! Asking the OpenSSH client how it would connect: `ssh -G HOST` prints every setting as
//! lowercase `key value` lines, with Include, Match and defaults applied.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

use super::options::HostSpec;
use super::options::SshOptions;

/// `ssh -G` only reads files (and may run `Match exec` commands); it gets this long.
const SSH_G_TIMEOUT: Duration = Duration::from_secs(10);
/// Runs `ssh -G`; `Ok(None)` when `ssh` is not installed.
pub(crate) async fn ssh_g(
    spec: &HostSpec,
    opts: &SshOptions,
    home: &Path,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.arg("-G");
    match (&opts.config_file, &opts.home) {
        (Some(file), _) => {
            cmd.arg("-F").arg(file);
        }
        // ssh reads ~/.ssh/config from the passwd entry's home, not $HOME: point it at ours.
        (None, Some(home)) => {
            let file = home.join(".ssh/config");
            cmd.arg("-F").arg(if file.exists() {
                file
            } else {
                PathBuf::from("/dev/null")
            });
        }
        (None, None) => {}
    }
    if let Some(port) = spec.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = &spec.user {
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--").arg(&spec.host);
    cmd.env("HOME", home)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(SSH_G_TIMEOUT, cmd.output()).await {
        Err(_) => bail!("`ssh -G {}` did not finish in {SSH_G_TIMEOUT:?}", spec.host),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(result) => result.context("could not run `ssh -G`")?,
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "could not read the SSH config for `{}`: {}",
            spec.host,
            stderr.trim()
        );
    }
    Ok(Some(parse_pairs(&String::from_utf8_lossy(&output.stdout))))
}

/// Splits `ssh -G` output into (lowercase key, value) pairs.
pub(crate) fn parse_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(' ')?;
            Some((key.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// The home directory `ssh` uses for `~` (the passwd entry's), found once by asking it.
pub(crate) async fn passwd_home() -> Option<PathBuf> {
    static HOME: OnceLock<Option<PathBuf>> = OnceLock::new();
    if let Some(home) = HOME.get() {
        return home.clone();
    }
    let output = tokio::process::Command::new("ssh")
        .args([
            "-G",
            "-F",
            "/dev/null",
            "-o",
            "UserKnownHostsFile=~/",
            "probe",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let pairs = parse_pairs(&String::from_utf8_lossy(&output.stdout));
    let home = pairs
        .iter()
        .find(|(k, _)| k == "userknownhostsfile")
        .map(|(_, v)| PathBuf::from(v.trim_end_matches('/')))
        .filter(|home| home.as_os_str().len() > 1);
    HOME.get_or_init(|| home).clone()
}
