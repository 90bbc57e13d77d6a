//! User authentication for one hop, in OpenSSH's order: the ssh-agent's keys, the IdentityFile
//! keys (a passphrase is asked on a terminal), then keyboard-interactive and password prompts
//! on a terminal. Without a terminal nothing waits for input: the attempt ends with an error
//! that names the methods tried and how to fix it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use russh::client::{AuthResult, Handle, Handler, KeyboardInteractiveAuthResponse as Kbd};
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::MethodKind;
use tracing::debug;

use super::agent::connect_agent;
use super::config::HostConfig;
use super::prompt::Ui;
use crate::error::hinted;

/// Authenticates `cfg.user` on `handle`, or fails with `permission denied` and a hint.
pub(crate) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    cfg: &HostConfig,
    ui: &Ui,
) -> anyhow::Result<()> {
    let methods = match handle.authenticate_none(&cfg.user).await? {
        AuthResult::Success => return Ok(()),
        AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods,
    };
    let offered = |kind: MethodKind| methods.contains(&kind);
    let prompts = ui.can_prompt(cfg.batch_mode);
    let mut tried = Vec::new();
    if offered(MethodKind::PublicKey) {
        tried.push("publickey");
        if publickey(handle, cfg, ui).await? {
            return Ok(());
        }
    }
    if prompts && offered(MethodKind::KeyboardInteractive) {
        tried.push("keyboard-interactive");
        if keyboard_interactive(handle, cfg, ui).await? {
            return Ok(());
        }
    }
    if prompts && offered(MethodKind::Password) {
        tried.push("password");
        if password(handle, cfg, ui).await? {
            return Ok(());
        }
    }
    let typed = offered(MethodKind::Password) || offered(MethodKind::KeyboardInteractive);
    let hint = match (typed, prompts) {
        (true, false) => "ssh-add your key, or run podtun in a terminal to type a password",
        (true, true) => "check the password, or ssh-add your key",
        (false, _) => "ssh-add your key, or name it with IdentityFile in ~/.ssh/config",
    };
    Err(hinted(
        AuthRefused {
            user: cfg.user.clone(),
            host: cfg.alias.clone(),
            tried: if tried.is_empty() {
                "nothing the server accepts".to_string()
            } else {
                tried.join(", ")
            },
        },
        hint,
    ))
}

/// The server accepted none of the credentials podtun had: retrying cannot help.
#[derive(Debug, thiserror::Error)]
#[error("permission denied for {user}@{host} (tried: {tried})")]
pub struct AuthRefused {
    /// The user name tried.
    pub user: String,
    /// The host, as the user named it.
    pub host: String,
    /// The methods tried, e.g. `publickey (~/.ssh/id_ed25519), password`.
    pub tried: String,
}

/// The agent's keys, then the identity files; `true` once one is accepted.
async fn publickey<H: Handler>(
    handle: &mut Handle<H>,
    cfg: &HostConfig,
    ui: &Ui,
) -> anyhow::Result<bool> {
    // With IdentitiesOnly only the agent keys that match an IdentityFile are offered.
    let wanted: Vec<PublicKey> = cfg
        .identity_files
        .iter()
        .filter_map(|p| russh::keys::load_public_key(pub_path(p)).ok())
        .collect();
    let mut offered: Vec<PublicKey> = Vec::new();
    if let Some(mut agent) = connect_agent(cfg).await {
        let identities = agent.request_identities().await.unwrap_or_else(|err| {
            debug!(%err, "ssh-agent did not list its keys");
            Vec::new()
        });
        for identity in identities {
            let AgentIdentity::PublicKey { key, comment } = identity else {
                continue;
            };
            if cfg.identities_only && !wanted.iter().any(|w| w.key_data() == key.key_data()) {
                continue;
            }
            let hash = rsa_hash(handle, &key).await;
            debug!(%comment, "offering an ssh-agent key");
            match handle
                .authenticate_publickey_with(&cfg.user, key.clone(), hash, &mut agent)
                .await
            {
                Ok(result) if result.success() => return Ok(true),
                Ok(_) => {}
                Err(err) => debug!(%err, %comment, "ssh-agent could not sign"),
            }
            offered.push(key);
        }
    }
    for path in &cfg.identity_files {
        let Some(key) = load_identity(path, cfg, ui).await? else {
            continue;
        };
        if offered
            .iter()
            .any(|k| k.key_data() == key.public_key().key_data())
        {
            continue;
        }
        let hash = rsa_hash(handle, key.public_key()).await;
        debug!(path = %path.display(), "offering an identity file");
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        if handle
            .authenticate_publickey(&cfg.user, key)
            .await?
            .success()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// rsa-sha2-512/256 as the server allows (plain `ssh-rsa` is SHA-1, refused by OpenSSH ≥ 8.8).
async fn rsa_hash<H: Handler>(handle: &Handle<H>, key: &PublicKey) -> Option<HashAlg> {
    if !key.algorithm().is_rsa() {
        return None;
    }
    match handle.best_supported_rsa_hash().await {
        Ok(Some(hash)) => hash,
        // No server-sig-algs extension: assume a modern server.
        _ => Some(HashAlg::Sha256),
    }
}

fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Loads a private key, asking for its passphrase on a terminal; `None` to skip it.
async fn load_identity(
    path: &Path,
    cfg: &HostConfig,
    ui: &Ui,
) -> anyhow::Result<Option<PrivateKey>> {
    if !path.exists() {
        debug!(path = %path.display(), "no identity file");
        return Ok(None);
    }
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => return Ok(Some(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(err) => {
            debug!(path = %path.display(), %err, "identity file not usable");
            return Ok(None);
        }
    }
    if !ui.can_prompt(cfg.batch_mode) {
        debug!(path = %path.display(), "identity file is encrypted and there is no terminal to ask its passphrase; skipped");
        return Ok(None);
    }
    let question = format!("Enter passphrase for key '{}': ", path.display());
    for _ in 0..cfg.password_prompts.max(1) {
        let passphrase = ui.ask(&question, false).await?;
        if passphrase.is_empty() {
            return Ok(None);
        }
        match russh::keys::load_secret_key(path, Some(&passphrase)) {
            Ok(key) => return Ok(Some(key)),
            Err(err) => {
                debug!(path = %path.display(), %err, "bad passphrase");
                ui.show("Bad passphrase, try again.");
            }
        }
    }
    Ok(None)
}

async fn keyboard_interactive<H: Handler>(
    handle: &mut Handle<H>,
    cfg: &HostConfig,
    ui: &Ui,
) -> anyhow::Result<bool> {
    for attempt in 1..=cfg.password_prompts.max(1) {
        let mut reply = handle
            .authenticate_keyboard_interactive_start(&cfg.user, None::<String>)
            .await?;
        loop {
            match reply {
                Kbd::Success => return Ok(true),
                Kbd::Failure { .. } => break,
                Kbd::InfoRequest {
                    name,
                    instructions,
                    prompts,
                } => {
                    for text in [name, instructions] {
                        if !text.is_empty() {
                            ui.show(&text);
                        }
                    }
                    let mut answers = Vec::with_capacity(prompts.len());
                    for prompt in prompts {
                        answers.push(ui.ask(&prompt.prompt, prompt.echo).await?);
                    }
                    reply = handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await
                        .context("keyboard-interactive authentication failed")?;
                }
            }
        }
        if attempt < cfg.password_prompts {
            ui.show("Permission denied, please try again.");
        }
    }
    Ok(false)
}

async fn password<H: Handler>(
    handle: &mut Handle<H>,
    cfg: &HostConfig,
    ui: &Ui,
) -> anyhow::Result<bool> {
    let question = format!("{}@{}'s password: ", cfg.user, cfg.hostname);
    for attempt in 1..=cfg.password_prompts.max(1) {
        let password = ui.ask(&question, false).await?;
        if handle
            .authenticate_password(&cfg.user, password)
            .await?
            .success()
        {
            return Ok(true);
        }
        if attempt < cfg.password_prompts {
            ui.show("Permission denied, please try again.");
        }
    }
    Ok(false)
}
