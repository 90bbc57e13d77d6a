//! User authentication for one hop, in OpenSSH's order: the ssh-agent's keys, the IdentityFile
//! keys (a passphrase is asked on a terminal), then keyboard-interactive and password prompts
//! on a terminal. Without a terminal nothing waits for input: the attempt ends with an error
//! that names the methods tried and how to fix it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use russh::client::{AuthResult, Handle, Handler, KeyboardInteractiveAuthResponse as Kbd};
use russh::keys::agent::client::{AgentClient, AgentStream};
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::MethodKind;
use tracing::debug;

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

/// An ssh-agent client, whatever carries it (Unix socket, named pipe, Pageant).
type Agent = AgentClient<Box<dyn AgentStream + Send + Unpin>>;

/// OpenSSH for Windows's agent, where its `ssh` looks without `IdentityAgent`/`SSH_AUTH_SOCK`.
const WINDOWS_AGENT_PIPE: &str = r"\\.\pipe\openssh-ssh-agent";

/// Which ssh-agent podtun asks for keys.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgentChoice {
    /// `IdentityAgent none`, or no agent found.
    None,
    /// The agent at this path: a Unix socket, or a named pipe on Windows.
    Path(PathBuf),
    /// A running Pageant (PuTTY's agent, Windows only).
    Pageant,
}

/// The agents running on a Windows laptop (none on Unix, where only the socket counts).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct AgentsFound {
    /// OpenSSH for Windows's agent serves [`WINDOWS_AGENT_PIPE`].
    openssh_pipe: bool,
    /// Pageant serves its named pipe.
    pageant: bool,
}

/// OpenSSH's choice: `IdentityAgent` (`configured`, where `Some(None)` is `none`), else
/// `SSH_AUTH_SOCK` (`env`); with neither, OpenSSH for Windows's agent pipe when it is there,
/// then Pageant.
fn choose_agent(
    configured: Option<&Option<PathBuf>>,
    env: Option<&OsStr>,
    found: AgentsFound,
) -> AgentChoice {
    match configured {
        Some(None) => return AgentChoice::None,
        Some(Some(path)) => return AgentChoice::Path(path.clone()),
        None => {}
    }
    if let Some(env) = env.filter(|e| !e.is_empty()) {
        return AgentChoice::Path(PathBuf::from(env));
    }
    if found.openssh_pipe {
        AgentChoice::Path(PathBuf::from(WINDOWS_AGENT_PIPE))
    } else if found.pageant {
        AgentChoice::Pageant
    } else {
        AgentChoice::None
    }
}

/// The agents among the names of `\\.\pipe\` (Windows). Pageant's pipe is
/// `pageant.USER.HASH`; another user's does not count.
#[cfg_attr(not(windows), allow(dead_code))]
fn agents_in_pipes<'a>(
    names: impl IntoIterator<Item = &'a str>,
    user: Option<&str>,
) -> AgentsFound {
    let mut found = AgentsFound::default();
    for name in names {
        if name.eq_ignore_ascii_case("openssh-ssh-agent") {
            found.openssh_pipe = true;
        } else if let Some(rest) = name.strip_prefix("pageant.") {
            // Windows user names ignore case.
            found.pageant |= user.is_none_or(|user| {
                rest.get(..user.len())
                    .is_some_and(|own| own.eq_ignore_ascii_case(user))
                    && rest[user.len()..].starts_with('.')
            });
        }
    }
    found
}

/// The agents running here: listing the pipes opens none of them (opening one would take a
/// connection of the agent's).
#[cfg(windows)]
fn agents_found() -> AgentsFound {
    match std::fs::read_dir(r"\\.\pipe\") {
        Ok(entries) => {
            let names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            let user = std::env::var("USERNAME").ok();
            agents_in_pipes(names.iter().map(String::as_str), user.as_deref())
        }
        Err(err) => {
            // Try OpenSSH's pipe anyway: connecting says why it is not there.
            debug!(%err, "could not list the named pipes");
            AgentsFound {
                openssh_pipe: true,
                pageant: false,
            }
        }
    }
}

#[cfg(not(windows))]
fn agents_found() -> AgentsFound {
    AgentsFound::default()
}

async fn connect_agent(cfg: &HostConfig) -> Option<Agent> {
    let env = std::env::var_os("SSH_AUTH_SOCK");
    let choice = choose_agent(cfg.identity_agent.as_ref(), env.as_deref(), agents_found());
    let connected = match &choice {
        AgentChoice::None => {
            debug!("no ssh-agent");
            return None;
        }
        AgentChoice::Path(path) => connect_path(path).await,
        AgentChoice::Pageant => connect_pageant().await,
    };
    match connected {
        Ok(agent) => Some(agent),
        Err(err) => {
            debug!(?choice, %err, "no ssh-agent");
            None
        }
    }
}

#[cfg(unix)]
async fn connect_path(path: &Path) -> Result<Agent, russh::keys::Error> {
    Ok(AgentClient::connect_uds(path).await?.dynamic())
}

#[cfg(windows)]
async fn connect_path(path: &Path) -> Result<Agent, russh::keys::Error> {
    Ok(AgentClient::connect_named_pipe(path).await?.dynamic())
}

#[cfg(windows)]
async fn connect_pageant() -> Result<Agent, russh::keys::Error> {
    Ok(AgentClient::connect_pageant().await?.dynamic())
}

#[cfg(not(windows))]
async fn connect_pageant() -> Result<Agent, russh::keys::Error> {
    Err(russh::keys::Error::AgentFailure)
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: AgentsFound = AgentsFound {
        openssh_pipe: false,
        pageant: false,
    };
    const BOTH: AgentsFound = AgentsFound {
        openssh_pipe: true,
        pageant: true,
    };

    fn path(p: &str) -> AgentChoice {
        AgentChoice::Path(PathBuf::from(p))
    }

    #[test]
    fn identity_agent_comes_first() {
        let configured = Some(PathBuf::from(r"\\.\pipe\my-agent"));
        let env = OsStr::new(r"\\.\pipe\other");
        assert_eq!(
            choose_agent(Some(&configured), Some(env), BOTH),
            path(r"\\.\pipe\my-agent")
        );
        // `IdentityAgent none`: no agent, whatever runs.
        assert_eq!(
            choose_agent(Some(&None), Some(env), BOTH),
            AgentChoice::None
        );
    }

    #[test]
    fn ssh_auth_sock_comes_before_the_pipes() {
        assert_eq!(
            choose_agent(None, Some(OsStr::new("/run/user/1000/agent.sock")), BOTH),
            path("/run/user/1000/agent.sock")
        );
        // Set but empty is unset, as for OpenSSH.
        assert_eq!(
            choose_agent(None, Some(OsStr::new("")), NOTHING),
            AgentChoice::None
        );
    }

    #[test]
    fn without_configuration_the_openssh_pipe_then_pageant() {
        assert_eq!(
            choose_agent(None, None, BOTH),
            path(r"\\.\pipe\openssh-ssh-agent")
        );
        let pageant_only = AgentsFound {
            openssh_pipe: false,
            pageant: true,
        };
        assert_eq!(choose_agent(None, None, pageant_only), AgentChoice::Pageant);
        assert_eq!(choose_agent(None, None, NOTHING), AgentChoice::None);
    }

    #[test]
    fn agents_are_found_among_the_pipes() {
        let pipes = [
            "InitShutdown",
            "openssh-ssh-agent",
            "pageant.alice.0123abcd",
        ];
        assert_eq!(agents_in_pipes(pipes, Some("alice")), BOTH);
        assert_eq!(agents_in_pipes(pipes, Some("Alice")), BOTH);
        assert_eq!(
            agents_in_pipes(pipes, Some("bob")),
            AgentsFound {
                openssh_pipe: true,
                pageant: false
            }
        );
        // `pageant.alicia.…` is not alice's.
        assert_eq!(
            agents_in_pipes(["pageant.alicia.0123"], Some("alice")),
            NOTHING
        );
        assert_eq!(
            agents_in_pipes(["pageant.alice.0123"], None),
            AgentsFound {
                openssh_pipe: false,
                pageant: true
            }
        );
        assert_eq!(agents_in_pipes(["lsass", "podtun-1234"], None), NOTHING);
    }
}
