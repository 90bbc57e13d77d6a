//! Whether to trust a hop's host key: known keys pass, a changed key is refused always (with
//! OpenSSH's warning), an unknown one is learned, asked about on a terminal, or refused,
//! as StrictHostKeyChecking says.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use tracing::info;

use super::config::{HostConfig, Strict};
use super::known_hosts::{check, learn, lookup_name, Verdict};
use super::prompt::Ui;
use crate::error::hinted;

/// `ED25519`, `ECDSA`, `RSA`: the type names OpenSSH shows next to fingerprints.
fn key_type(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ed25519 => "ED25519".to_string(),
        Algorithm::Ecdsa { .. } => "ECDSA".to_string(),
        Algorithm::Rsa { .. } => "RSA".to_string(),
        other => other.as_str().to_ascii_uppercase(),
    }
}

/// Decides whether to trust `key` for the hop `cfg`, asking or learning as configured.
pub(crate) async fn verify(cfg: &HostConfig, key: &PublicKey, ui: &Ui) -> anyhow::Result<()> {
    let host = cfg.host_key_alias.as_deref().unwrap_or(&cfg.hostname);
    let name = lookup_name(cfg.host_key_alias.as_deref(), &cfg.hostname, cfg.port);
    let shown = format!("{host}:{}", cfg.port);
    let files: Vec<PathBuf> = cfg
        .known_hosts_files
        .iter()
        .chain(&cfg.global_known_hosts_files)
        .cloned()
        .collect();
    let fingerprint = key.fingerprint(HashAlg::Sha256);
    match check(&files, &name, key) {
        Verdict::Known => Ok(()),
        Verdict::Revoked { file, line } => Err(hinted(
            anyhow!(
                "host key for `{shown}` is marked as revoked in {}:{line}",
                file.display()
            ),
            "the host's administrator revoked this key; ask them for the current one",
        )),
        Verdict::Changed { file, line } => {
            let warning = format!(
                "\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the {kind} key sent by the remote host is
{fingerprint}.
Offending {kind} key in {file}:{line}",
                kind = key_type(key),
                file = file.display(),
            );
            let context = HostKeyChanged {
                host: shown,
                file: file.display().to_string(),
                line,
            };
            Err(hinted(
                anyhow!(warning).context(context),
                format!("if the host was reinstalled, run `ssh-keygen -R {name}`"),
            ))
        }
        Verdict::Unknown => {
            let accept = match cfg.strict {
                Strict::AcceptNew | Strict::No => true,
                Strict::Ask if ui.can_prompt(cfg.batch_mode) => {
                    confirm(ui, &name, key, &fingerprint.to_string()).await?
                }
                Strict::Ask | Strict::Yes => {
                    return Err(hinted(
                        anyhow!("host key for `{shown}` is not known ({} key fingerprint is {fingerprint})", key_type(key)),
                        "connect once with ssh to verify and record it, or set StrictHostKeyChecking accept-new",
                    ));
                }
            };
            if !accept {
                bail!("host key verification for `{shown}` declined");
            }
            match cfg.known_hosts_files.first() {
                Some(file) => {
                    learn(file, &name, key, cfg.hash_known_hosts)
                        .with_context(|| format!("could not add `{name}` to {}", file.display()))?;
                    info!(host = %shown, file = %file.display(), %fingerprint, "permanently added the host key to the known hosts");
                }
                None => {
                    info!(host = %shown, "UserKnownHostsFile is none: host key accepted for this connection only")
                }
            }
            Ok(())
        }
    }
}

/// OpenSSH's question; accepts `yes`, `no` or the fingerprint itself.
async fn confirm(ui: &Ui, name: &str, key: &PublicKey, fingerprint: &str) -> anyhow::Result<bool> {
    let mut question = format!(
        "The authenticity of host '{name}' can't be established.\n\
         {} key fingerprint is {fingerprint}.\n\
         Are you sure you want to continue connecting (yes/no/[fingerprint])? ",
        key_type(key)
    );
    loop {
        let answer = ui.ask(&question, true).await?;
        match answer.trim() {
            a if a.eq_ignore_ascii_case("yes") || a == fingerprint => return Ok(true),
            a if a.eq_ignore_ascii_case("no") => return Ok(false),
            _ => question = "Please type 'yes', 'no' or the fingerprint: ".to_string(),
        }
    }
}

/// The host sent a key other than the one known for it: retrying cannot help (and must not).
#[derive(Debug)]
pub struct HostKeyChanged {
    /// `host:port`.
    pub host: String,
    /// The known_hosts file with the other key.
    pub file: String,
    /// Its line there.
    pub line: usize,
}

impl std::fmt::Display for HostKeyChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host key for `{}` does not match {}:{}",
            self.host, self.file, self.line
        )
    }
}
