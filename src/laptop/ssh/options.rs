//! What SSH needs to know before connecting: the options of this run ([`SshOptions`]) and a
//! host as the user wrote it ([`HostSpec`]).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::prompt::Prompter;

/// How to reach hosts: which config, and whether a person can answer prompts.
#[derive(Clone, Default)]
pub struct SshOptions {
    /// `-F`: another SSH config file instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    /// Prompts allowed (stdin and stderr are a terminal): passphrases, passwords, unknown host
    /// keys. Without it podtun fails with a hint instead of waiting.
    pub interactive: bool,
    /// `~` for `.ssh/*` (tests); `$HOME` when unset.
    pub home: Option<PathBuf>,
    /// Answers prompts instead of `/dev/tty` (tests). Only used when `interactive` is set.
    pub prompter: Option<Prompter>,
}

impl std::fmt::Debug for SshOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshOptions")
            .field("config_file", &self.config_file)
            .field("interactive", &self.interactive)
            .field("home", &self.home)
            .field("prompter", &self.prompter.as_ref().map(|_| "…"))
            .finish()
    }
}

impl SshOptions {
    pub(crate) fn home_dir(&self) -> PathBuf {
        self.home
            .clone()
            .or_else(user_home)
            .unwrap_or_else(|| PathBuf::from("/"))
    }
}

/// A host as written on the command line: `[user@]host[:port]`, `[v6addr]:port` or `ssh://…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl HostSpec {
    pub(crate) fn parse(text: &str) -> anyhow::Result<HostSpec> {
        let rest = text.strip_prefix("ssh://").unwrap_or(text);
        let (user, rest) = match rest.rsplit_once('@') {
            Some((user, rest)) => (Some(user.to_string()), rest),
            None => (None, rest),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .with_context(|| format!("missing `]` in host `{text}`"))?;
            (host, after.strip_prefix(':'))
        } else if rest.matches(':').count() == 1 {
            let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
            (host, Some(port))
        } else {
            (rest, None)
        };
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0))
            .map(|p| p.with_context(|| format!("bad port in host `{text}`")))
            .transpose()?;
        let bad = |s: &str| s.is_empty() || s.starts_with('-') || s.contains(char::is_whitespace);
        if bad(host) || user.as_deref().is_some_and(bad) {
            bail!("bad host `{text}`: expected [user@]host[:port]");
        }
        Ok(HostSpec {
            user,
            host: host.to_string(),
            port,
        })
    }
}

/// The user's home: `HOME` on Unix; on Windows the profile folder, where OpenSSH for Windows
/// keeps `.ssh` whatever `HOME` says.
pub fn user_home() -> Option<PathBuf> {
    if cfg!(windows) {
        std::env::home_dir()
    } else {
        std::env::var_os("HOME").map(PathBuf::from)
    }
}
