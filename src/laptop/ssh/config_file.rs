//! A small, lenient `ssh_config` reader for machines without the OpenSSH client.
//!
//! It covers what podtun uses: `Host` patterns (`*`, `?`, `!negation`), `Include` (with `*` in
//! the file name), `key value` and `key=value` lines with quoted arguments, and the rule that the
//! first value obtained wins (IdentityFile accumulates). `Match` blocks are skipped except
//! `Match all`: evaluating them needs what only `ssh -G` knows. The output is the same
//! `(key, value)` pairs `ssh -G` prints, so [`config`](super::config) treats both alike.

use std::path::{Path, PathBuf};

use tracing::debug;

/// Nested Includes deeper than this are ignored (OpenSSH stops at 16 as well).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The pairs that apply to `host`, from the user's file and then the system one.
pub(crate) fn lookup(
    user_file: &Path,
    system_file: Option<&Path>,
    host: &str,
    home: &Path,
) -> Vec<(String, String)> {
    let mut reader = Reader {
        host: host.to_ascii_lowercase(),
        home: home.to_path_buf(),
        pairs: Vec::new(),
    };
    reader.file(user_file, &home.join(".ssh"), 0);
    if let Some(system) = system_file {
        // Relative Includes of the system file are relative to its folder (`/etc/ssh`).
        reader.file(system, system.parent().unwrap_or(Path::new("/etc/ssh")), 0);
    }
    reader.pairs
}

struct Reader {
    host: String,
    home: PathBuf,
    pairs: Vec<(String, String)>,
}

impl Reader {
    fn file(&mut self, path: &Path, include_dir: &Path, depth: usize) {
        match std::fs::read_to_string(path) {
            Ok(text) => self.text(&text, include_dir, depth),
            Err(err) => debug!(path = %path.display(), %err, "ssh config not read"),
        }
    }

    fn text(&mut self, text: &str, include_dir: &Path, depth: usize) {
        let mut active = true;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let split = line
                .find(|c: char| c.is_whitespace() || c == '=')
                .unwrap_or(line.len());
            let key = line[..split].to_ascii_lowercase();
            let raw = line[split..]
                .trim_start()
                .trim_start_matches('=')
                .trim_start();
            let args = split_args(raw);
            match key.as_str() {
                "host" => active = host_matches(&args, &self.host),
                "match" => {
                    active = args.first().is_some_and(|a| a.eq_ignore_ascii_case("all"));
                    if !active {
                        debug!(%line, "Match is not evaluated without ssh; block skipped");
                    }
                }
                "include" if active && depth < MAX_INCLUDE_DEPTH => {
                    for arg in &args {
                        for file in self.include_files(arg, include_dir) {
                            self.file(&file, include_dir, depth + 1);
                        }
                    }
                }
                _ if !active || args.is_empty() => {}
                // ProxyCommand keeps its raw text: it goes to `sh -c` as written.
                "proxycommand" => self.set(&key, raw.to_string()),
                "identityfile" => self.pairs.push((key, args.join(" "))),
                _ => self.set(&key, args.join(" ")),
            }
        }
    }

    fn set(&mut self, key: &str, value: String) {
        if !self.pairs.iter().any(|(k, _)| k == key) {
            self.pairs.push((key.to_string(), value));
        }
    }

    fn include_files(&self, pattern: &str, include_dir: &Path) -> Vec<PathBuf> {
        let path = match pattern.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None => include_dir.join(pattern),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.contains(['*', '?']) {
            return vec![path];
        }
        let dir = path.parent().unwrap_or(Path::new("/"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }
}

/// Splits arguments on whitespace, honouring double quotes.
fn split_args(raw: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in raw.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(current);
    }
    args
}

/// A `Host` line matches when one pattern matches and no negated one does.
fn host_matches(patterns: &[String], host: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.iter().flat_map(|p| p.split(',')) {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(negated, host) {
                return false;
            }
        } else if wildcard_match(&pattern, host) {
            matched = true;
        }
    }
    matched
}

/// OpenSSH's pattern language: `*` matches any run, `?` one character.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    pi = star + 1;
                    ti = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Vec<&'a str> {
        pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.example.org", "login.example.org"));
        assert!(wildcard_match("login?", "login1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(!wildcard_match("login?", "login12"));
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".ssh/conf.d")).unwrap();
        std::fs::write(
            home.join(".ssh/conf.d/10-login.conf"),
            "Host login\n  User fromInclude\n  IdentityFile ~/.ssh/included\n",
        )
        .unwrap();
        let config = home.join(".ssh/config");
        std::fs::write(
            &config,
            "# comment\nInclude conf.d/*.conf\n\
             Host login !nope\n  HostName=10.0.0.2\n  Port 2222\n  IdentityFile \"~/.ssh/my key\"\n\
             ProxyCommand ssh -W %h:%p  bastion\n\
             Match exec \"false\"\n  User fromMatch\n\
             Host *\n  User everyone\n  Port 22\n  StrictHostKeyChecking accept-new\n",
        )
        .unwrap();
        let pairs = lookup(&config, None, "login", home);
        assert_eq!(get(&pairs, "user"), ["fromInclude"]);
        assert_eq!(get(&pairs, "hostname"), ["10.0.0.2"]);
        assert_eq!(get(&pairs, "port"), ["2222"]);
        assert_eq!(
            get(&pairs, "identityfile"),
            ["~/.ssh/included", "~/.ssh/my key"]
        );
        assert_eq!(get(&pairs, "proxycommand"), ["ssh -W %h:%p  bastion"]);
        assert_eq!(get(&pairs, "stricthostkeychecking"), ["accept-new"]);

        let other = lookup(&config, None, "nope", home);
        assert_eq!(get(&other, "user"), ["everyone"]);
        assert!(get(&other, "hostname").is_empty());
    }

    #[test]
    fn missing_file_gives_nothing() {
        let pairs = lookup(Path::new("/nonexistent/config"), None, "h", Path::new("/"));
        assert!(pairs.is_empty());
    }
}
