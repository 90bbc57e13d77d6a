//! The ssh-agent podtun asks for keys, chosen as OpenSSH does: `IdentityAgent`, else
//! `SSH_AUTH_SOCK`, else on Windows OpenSSH's agent pipe, then Pageant.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use russh::keys::agent::client::{AgentClient, AgentStream};
use tracing::debug;

use super::config::HostConfig;

/// An ssh-agent client, whatever carries it (Unix socket, named pipe, Pageant).
pub(super) type Agent = AgentClient<Box<dyn AgentStream + Send + Unpin>>;

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

pub(super) async fn connect_agent(cfg: &HostConfig) -> Option<Agent> {
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
