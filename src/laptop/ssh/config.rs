//! What `~/.ssh/config` says about one host, resolved the way OpenSSH resolves it.
//!
//! When the OpenSSH client is installed, `ssh -G` does the resolving (Host and Match blocks,
//! Include, tokens, defaults: exactly what `ssh` itself would use; see
//! [`config_openssh`](super::config_openssh)). Without it, [`config_file`](super::config_file)
//! reads the files with a small lenient parser that produces the same `key value` pairs. Either way [`HostConfig`] is built
//! from those pairs by one function, so both paths share defaults and `~`/`%` expansion.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::config_file;
use super::config_openssh;
use super::options::HostSpec;
use super::options::SshOptions;

/// ServerAliveInterval when the config leaves it unset (OpenSSH's own default is off): with
/// ServerAliveCountMax 3, a dead connection is noticed within about 30 s.
const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ConnectTimeout when the config leaves it unset (OpenSSH's own default is the kernel's).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// StrictHostKeyChecking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strict {
    /// `yes`: unknown hosts are refused.
    Yes,
    /// `ask` (the default): ask on a terminal, refuse otherwise.
    Ask,
    /// `accept-new`: unknown hosts are recorded.
    AcceptNew,
    /// `no`: unknown hosts are recorded (a changed key is still refused: podtun never connects
    /// to a host whose key changed).
    No,
}

/// Everything podtun uses from the config for one hop.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    /// The host as the user wrote it (an alias, or the address).
    pub alias: String,
    pub hostname: String,
    pub user: String,
    pub port: u16,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// `None`: `$SSH_AUTH_SOCK`; `Some(None)`: no agent; `Some(Some(p))`: that socket.
    pub identity_agent: Option<Option<PathBuf>>,
    pub proxy_jump: Option<String>,
    /// ProxyCommand with `%h %p %r %n %%` already substituted.
    pub proxy_command: Option<String>,
    /// UserKnownHostsFile: checked, and the first one learns new hosts.
    pub known_hosts_files: Vec<PathBuf>,
    /// GlobalKnownHostsFile: checked only.
    pub global_known_hosts_files: Vec<PathBuf>,
    pub host_key_alias: Option<String>,
    pub strict: Strict,
    pub hash_known_hosts: bool,
    pub batch_mode: bool,
    pub password_prompts: u32,
    pub alive_interval: Duration,
    pub alive_count_max: usize,
    pub connect_timeout: Duration,
}

/// Resolves `spec` through the user's SSH config.
pub(crate) async fn resolve(spec: &HostSpec, opts: &SshOptions) -> anyhow::Result<HostConfig> {
    let home = opts.home_dir();
    let pairs = match config_openssh::ssh_g(spec, opts, &home).await {
        Ok(Some(pairs)) => pairs,
        Ok(None) => {
            debug!("ssh is not installed; reading the SSH config without it");
            let user_config = opts
                .config_file
                .clone()
                .unwrap_or_else(|| home.join(".ssh/config"));
            let system = opts
                .config_file
                .is_none()
                .then(|| system_ssh_dir().join("ssh_config"));
            config_file::lookup(&user_config, system.as_deref(), &spec.host, &home)
        }
        Err(err) => return Err(err),
    };
    // `ssh -G` expands `~` in some paths with the passwd entry's home; a test that moves
    // HOME wants those under its own home.
    let ssh_home = if opts.home.is_some() {
        config_openssh::passwd_home().await
    } else {
        None
    };
    Ok(from_pairs(&pairs, spec, &home, ssh_home.as_deref()))
}

/// Builds a [`HostConfig`] from `ssh -G`-style pairs, filling OpenSSH's defaults for keys the
/// fallback parser did not see.
pub(crate) fn from_pairs(
    pairs: &[(String, String)],
    spec: &HostSpec,
    home: &Path,
    ssh_home: Option<&Path>,
) -> HostConfig {
    let pairs = Pairs(pairs);
    let none = |v: &&str| !v.eq_ignore_ascii_case("none");

    // `ssh -G` has expanded `HostName %h.example.org` already; the fallback has not.
    let hostname = pairs
        .first("hostname")
        .map(|h| h.replace("%h", &spec.host).replace("%%", "%"))
        .unwrap_or_else(|| spec.host.clone());
    let user = spec
        .user
        .clone()
        .or_else(|| pairs.first("user").map(str::to_string))
        .unwrap_or_else(local_user);
    let port = spec
        .port
        .or_else(|| pairs.first("port").and_then(|p| p.parse().ok()))
        .unwrap_or(22);
    let tokens = Tokens {
        alias: &spec.host,
        hostname: &hostname,
        user: &user,
        port,
        home,
    };
    let path = |raw: &str| tokens.path(raw, ssh_home);

    let identity_files = identity_files(&pairs, home, &path);
    let (known_hosts_files, global_known_hosts_files) = known_hosts_files(&pairs, &path);
    let identity_agent = pairs.first("identityagent").map(|v| match v {
        "none" => None,
        "SSH_AUTH_SOCK" => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        v if v.starts_with('$') => std::env::var_os(&v[1..]).map(PathBuf::from),
        v => Some(path(v)),
    });
    HostConfig {
        alias: spec.host.clone(),
        identity_files,
        identities_only: pairs.yes("identitiesonly"),
        identity_agent,
        proxy_jump: pairs.first("proxyjump").filter(none).map(str::to_string),
        proxy_command: pairs
            .first("proxycommand")
            .filter(none)
            .map(|c| tokens.expand(c)),
        known_hosts_files,
        global_known_hosts_files,
        host_key_alias: pairs.first("hostkeyalias").filter(none).map(str::to_string),
        strict: strict(pairs.first("stricthostkeychecking")),
        hash_known_hosts: pairs.yes("hashknownhosts"),
        batch_mode: pairs.yes("batchmode"),
        password_prompts: pairs
            .first("numberofpasswordprompts")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        alive_interval: pairs
            .secs("serveraliveinterval")
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_ALIVE_INTERVAL),
        alive_count_max: pairs
            .first("serveralivecountmax")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        connect_timeout: pairs
            .secs("connecttimeout")
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        hostname,
        user,
        port,
    }
}

/// `ssh -G`-style pairs, as `from_pairs` reads them.
struct Pairs<'a>(&'a [(String, String)]);

impl<'a> Pairs<'a> {
    /// The first value of `key` (OpenSSH's first match wins).
    fn first(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    fn all(&self, key: &str) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn yes(&self, key: &str) -> bool {
        matches!(self.first(key), Some("yes" | "true"))
    }

    /// A positive number of seconds.
    fn secs(&self, key: &str) -> Option<u64> {
        self.first(key)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
    }
}

/// `IdentityFile`s, else OpenSSH's default keys.
fn identity_files(pairs: &Pairs<'_>, home: &Path, path: &dyn Fn(&str) -> PathBuf) -> Vec<PathBuf> {
    let named: Vec<PathBuf> = pairs.all("identityfile").into_iter().map(path).collect();
    if !named.is_empty() {
        return named;
    }
    ["id_rsa", "id_ecdsa", "id_ed25519"]
        .iter()
        .map(|name| home.join(".ssh").join(name))
        .collect()
}

/// The user's and the system's known_hosts files, OpenSSH's defaults where none is named
/// (`none` names none).
fn known_hosts_files(
    pairs: &Pairs<'_>,
    path: &dyn Fn(&str) -> PathBuf,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let files = |key: &str, default: &[&str]| -> Vec<PathBuf> {
        match pairs.first(key) {
            Some(v) => v
                .split_whitespace()
                .filter(|v| !v.eq_ignore_ascii_case("none"))
                .map(path)
                .collect(),
            None => default.iter().map(|p| path(p)).collect(),
        }
    };
    let system = system_ssh_dir();
    let user = files(
        "userknownhostsfile",
        &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"],
    );
    let global = files(
        "globalknownhostsfile",
        &[
            &system.join("ssh_known_hosts").to_string_lossy(),
            &system.join("ssh_known_hosts2").to_string_lossy(),
        ],
    );
    (user, global)
}

/// `StrictHostKeyChecking`; unset, OpenSSH asks.
fn strict(value: Option<&str>) -> Strict {
    match value {
        Some("yes" | "true") => Strict::Yes,
        Some("accept-new") => Strict::AcceptNew,
        Some("no" | "false" | "off") => Strict::No,
        _ => Strict::Ask,
    }
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        // Windows names the user here.
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "root".to_string())
}

/// The folder of the system-wide SSH config and known hosts: `/etc/ssh`, or OpenSSH for
/// Windows's `%PROGRAMDATA%\ssh`.
fn system_ssh_dir() -> PathBuf {
    if cfg!(windows) {
        program_data(std::env::var_os("PROGRAMDATA").as_deref()).join("ssh")
    } else {
        PathBuf::from("/etc/ssh")
    }
}

/// Windows's `%PROGRAMDATA%` (`C:\ProgramData` when unset).
fn program_data(env: Option<&OsStr>) -> PathBuf {
    env.filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
}

/// OpenSSH for Windows's default paths start with `__PROGRAMDATA__` (`ssh -G` prints them so):
/// that is `program_data`.
fn expand_program_data(text: &str, program_data: &Path) -> Option<PathBuf> {
    let rest = text.strip_prefix("__PROGRAMDATA__")?;
    Some(program_data.join(rest.trim_start_matches(['/', '\\'])))
}

/// The `%` tokens OpenSSH expands in ProxyCommand and paths.
struct Tokens<'a> {
    alias: &'a str,
    hostname: &'a str,
    user: &'a str,
    port: u16,
    home: &'a Path,
}

impl Tokens<'_> {
    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('h') => out.push_str(self.hostname),
                Some('n') => out.push_str(self.alias),
                Some('p') => out.push_str(&self.port.to_string()),
                Some('r') => out.push_str(self.user),
                Some('u') => out.push_str(&local_user()),
                Some('d') => out.push_str(&self.home.to_string_lossy()),
                Some(other) => {
                    debug!(token = %other, "unsupported % token left as is");
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }

    /// Expands tokens and `~`; maps paths `ssh` rooted at `ssh_home` into our home.
    fn path(&self, raw: &str, ssh_home: Option<&Path>) -> PathBuf {
        let text = self.expand(raw);
        if let Some(rest) = text.strip_prefix("~/") {
            return self.home.join(rest);
        }
        if cfg!(windows) {
            let dir = program_data(std::env::var_os("PROGRAMDATA").as_deref());
            if let Some(path) = expand_program_data(&text, &dir) {
                return path;
            }
        }
        let path = PathBuf::from(text);
        match ssh_home.and_then(|h| path.strip_prefix(h).ok()) {
            Some(rest) if ssh_home != Some(self.home) => self.home.join(rest),
            _ => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> HostSpec {
        HostSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn openssh_for_windows_system_files_are_under_program_data() {
        let data = program_data(Some(OsStr::new(r"D:\Data")));
        assert_eq!(data, PathBuf::from(r"D:\Data"));
        assert_eq!(program_data(None), PathBuf::from(r"C:\ProgramData"));
        assert_eq!(
            program_data(Some(OsStr::new(""))),
            PathBuf::from(r"C:\ProgramData")
        );
        assert_eq!(
            expand_program_data(r"__PROGRAMDATA__\ssh/ssh_known_hosts", &data),
            Some(data.join(r"ssh/ssh_known_hosts"))
        );
        assert_eq!(expand_program_data("/etc/ssh/ssh_known_hosts", &data), None);
    }

    #[test]
    fn builds_config_from_ssh_g_pairs() {
        let pairs = config_openssh::parse_pairs(
            "hostname 10.0.0.2\nuser bob\nport 2222\nidentityfile ~/.ssh/k\n\
             identityfile %d/.ssh/k2_%h\nproxycommand nc %h %p # %r %%\n\
             userknownhostsfile /root/kh1 /root/kh2\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\n\
             stricthostkeychecking accept-new\nserveraliveinterval 0\nconnecttimeout none\n\
             identitiesonly yes\n",
        );
        let home = Path::new("/t/home");
        let c = from_pairs(&pairs, &spec("login"), home, Some(Path::new("/root")));
        assert_eq!(
            (c.hostname.as_str(), c.user.as_str(), c.port),
            ("10.0.0.2", "bob", 2222)
        );
        assert_eq!(
            c.identity_files,
            [home.join(".ssh/k"), home.join(".ssh/k2_10.0.0.2")]
        );
        assert_eq!(c.proxy_command.as_deref(), Some("nc 10.0.0.2 2222 # bob %"));
        assert_eq!(c.known_hosts_files, [home.join("kh1"), home.join("kh2")]);
        assert_eq!(
            c.global_known_hosts_files,
            [PathBuf::from("/etc/ssh/ssh_known_hosts")]
        );
        assert_eq!(c.strict, Strict::AcceptNew);
        assert!(c.identities_only);
        assert_eq!(c.alive_interval, DEFAULT_ALIVE_INTERVAL);
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    /// The fallback parser must read a plain config as `ssh -G` does.
    #[tokio::test]
    async fn fallback_parser_agrees_with_ssh_g() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let file = home.join(".ssh/config");
        std::fs::write(
            &file,
            "Host login* !login9\n  HostName %h.example.org\n  User alice\n  Port 2200\n\
             IdentityFile ~/.ssh/work\n  IdentitiesOnly yes\n  ProxyJump bastion\n\
             Host bastion\n  ProxyCommand nc %h %p\n\
             Host *\n  IdentityFile ~/.ssh/other\n  StrictHostKeyChecking accept-new\n  \
             ServerAliveInterval 5\n  ConnectTimeout 7\n  User nobody\n",
        )
        .unwrap();
        let opts = SshOptions {
            config_file: Some(file.clone()),
            home: Some(home.to_path_buf()),
            ..Default::default()
        };
        for host in ["login1", "login9", "bastion", "eve@other:23"] {
            let spec = spec(host);
            let Some(g) = config_openssh::ssh_g(&spec, &opts, home).await.unwrap() else {
                return; // no OpenSSH client here: nothing to compare with
            };
            let fallback = config_file::lookup(&file, None, &spec.host, home);
            let (g, f) = (
                from_pairs(&g, &spec, home, None),
                from_pairs(&fallback, &spec, home, None),
            );
            let key = |c: &HostConfig| {
                format!(
                    "{} {} {} {:?} {} {:?} {:?} {:?} {:?} {:?}",
                    c.hostname,
                    c.user,
                    c.port,
                    c.identity_files,
                    c.identities_only,
                    c.proxy_jump,
                    c.proxy_command,
                    c.strict,
                    c.alive_interval,
                    c.connect_timeout
                )
            };
            assert_eq!(key(&g), key(&f), "{host}");
        }
    }

    #[test]
    fn command_line_user_and_port_win() {
        let pairs = config_openssh::parse_pairs("user bob\nport 2222\n");
        let c = from_pairs(&pairs, &spec("eve@h:23"), Path::new("/h"), None);
        assert_eq!((c.user.as_str(), c.port), ("eve", 23));
        assert_eq!(c.identity_files.len(), 3, "defaults when none configured");
        assert_eq!(c.known_hosts_files[0], Path::new("/h/.ssh/known_hosts"));
        assert_eq!(c.strict, Strict::Ask);
    }
}
