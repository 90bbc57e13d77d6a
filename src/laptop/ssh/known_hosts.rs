//! Host key checking against known_hosts files, with OpenSSH's rules.
//!
//! russh ships a known_hosts reader, but it reads one file, splits on single spaces, stops at
//! the first key it cannot parse and ignores `@revoked` markers, negations and wildcards; so
//! podtun reads the files itself: plain, wildcard and hashed (`|1|salt|hash`) host patterns,
//! `[host]:port` for other ports, comma lists, `@revoked`. A key found is known; a different
//! key of the same type is a changed key; otherwise the host is unknown. What to do about it
//! is [`hostkey`](super::hostkey)'s business.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use data_encoding::BASE64;
use russh::keys::{Algorithm, PublicKey};
use tracing::debug;

use super::config_file::wildcard_match;

/// What the known_hosts files say about a host's key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Known,
    Unknown,
    /// Another key of the same type is recorded (the first such line).
    Changed {
        file: PathBuf,
        line: usize,
    },
    /// The key is marked `@revoked`.
    Revoked {
        file: PathBuf,
        line: usize,
    },
}

/// The name a host's key is recorded under, as OpenSSH looks it up: `HostKeyAlias` as it is
/// written (no port: the alias is how a tunnelled or forwarded port names its host), else
/// [`host_key_name`] of the host and port.
pub(crate) fn lookup_name(alias: Option<&str>, hostname: &str, port: u16) -> String {
    match alias {
        Some(alias) => alias.to_string(),
        None => host_key_name(hostname, port),
    }
}

/// The name OpenSSH records: `host`, or `[host]:port` when the port is not 22.
pub(crate) fn host_key_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Looks `key` up for `name` in `files`, in order.
pub(crate) fn check(files: &[PathBuf], name: &str, key: &PublicKey) -> Verdict {
    let mut changed = None;
    let mut known = false;
    for (file, line, marker, recorded) in entries(files, name) {
        let same = recorded.key_data() == key.key_data();
        match marker {
            Some("@revoked") if same => return Verdict::Revoked { file, line },
            Some(_) => {}
            None if same => known = true,
            None if recorded.algorithm() == key.algorithm() && changed.is_none() => {
                changed = Some(Verdict::Changed { file, line })
            }
            None => {}
        }
    }
    match (known, changed) {
        (true, _) => Verdict::Known,
        (false, Some(changed)) => changed,
        (false, None) => Verdict::Unknown,
    }
}

/// The key types recorded for `name`, so key exchange can prefer them as OpenSSH does.
pub(crate) fn known_algorithms(files: &[PathBuf], name: &str) -> Vec<Algorithm> {
    let mut algorithms: Vec<Algorithm> = Vec::new();
    for (_, _, marker, key) in entries(files, name) {
        if marker.is_none() && !algorithms.contains(&key.algorithm()) {
            algorithms.push(key.algorithm());
        }
    }
    algorithms
}

/// Every parsable line of `files` whose host patterns match `name`.
fn entries(
    files: &[PathBuf],
    name: &str,
) -> Vec<(PathBuf, usize, Option<&'static str>, PublicKey)> {
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (index, line) in text.lines().enumerate() {
            let mut fields = line.split_whitespace();
            let Some(mut hosts) = fields.next().filter(|f| !f.starts_with('#')) else {
                continue;
            };
            let marker = match hosts {
                "@revoked" => Some("@revoked"),
                "@cert-authority" => Some("@cert-authority"),
                _ => None,
            };
            if marker.is_some() {
                let Some(next) = fields.next() else { continue };
                hosts = next;
            }
            let (Some(_type), Some(base64)) = (fields.next(), fields.next()) else {
                continue;
            };
            if !hosts_match(hosts, name) {
                continue;
            }
            match russh::keys::parse_public_key_base64(base64) {
                Ok(key) => found.push((file.clone(), index + 1, marker, key)),
                Err(err) => {
                    debug!(file = %file.display(), line = index + 1, %err, "unreadable key")
                }
            }
        }
    }
    found
}

/// Whether a comma list of host patterns (plain, wildcard, `!negated`, hashed) names `name`.
fn hosts_match(hosts: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in hosts.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            matched |= hashed_match(hashed, &name);
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(&negated.to_ascii_lowercase(), &name) {
                return false;
            }
        } else {
            matched |= wildcard_match(&pattern.to_ascii_lowercase(), &name);
        }
    }
    matched
}

fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `|1|salt|hash` for `name`, with a fresh random salt (what `HashKnownHosts yes` writes).
fn hash_name(name: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| anyhow!("no randomness for a known_hosts salt"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    let hash = ring::hmac::sign(&key, name.as_bytes());
    Ok(format!(
        "|1|{}|{}",
        BASE64.encode(&salt),
        BASE64.encode(hash.as_ref())
    ))
}

/// Appends `name key` to `file`, creating it 0600 (and its directory 0700) if needed. On Windows
/// they take the permissions of the folder they are in, as OpenSSH for Windows's do: under the
/// user's profile folder, only the user's.
pub(crate) fn learn(file: &Path, name: &str, key: &PublicKey, hashed: bool) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file)?;
    let mut last = [0u8; 1];
    let needs_newline =
        f.seek(SeekFrom::End(-1)).is_ok() && f.read_exact(&mut last).is_ok() && last[0] != b'\n';
    let name = if hashed {
        hash_name(name)?
    } else {
        name.to_string()
    };
    let line = format!(
        "{}{name} {}\n",
        if needs_newline { "\n" } else { "" },
        key.to_openssh()?
    );
    f.write_all(line.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_key_alias_is_looked_up_without_the_port() {
        assert_eq!(lookup_name(None, "login", 22), "login");
        assert_eq!(lookup_name(None, "login", 2222), "[login]:2222");
        assert_eq!(lookup_name(Some("login"), "127.0.0.1", 2200), "login");
        assert_eq!(lookup_name(Some("login"), "127.0.0.1", 22), "login");
    }

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G2sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(text: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        (dir, vec![path])
    }

    #[test]
    fn matches_plain_port_lists_wildcards_and_negations() {
        let (_d, files) = file(&format!(
            "# c\nother ssh-ed25519 {ED_B}\n\
             a.example,[login]:2222\tssh-ed25519   {ED_A} comment here\n\
             *.corp,!bad.corp ssh-ed25519 {ED_A}\nbroken-line\nx ssh-ed25519 notbase64\n"
        ));
        let k = key(ED_A);
        assert_eq!(check(&files, "a.example", &k), Verdict::Known);
        assert_eq!(check(&files, "[login]:2222", &k), Verdict::Known);
        assert_eq!(check(&files, "login", &k), Verdict::Unknown);
        assert_eq!(check(&files, "db.corp", &k), Verdict::Known);
        assert_eq!(check(&files, "bad.corp", &k), Verdict::Unknown);
        assert_eq!(
            check(&files, "other", &k),
            Verdict::Changed {
                file: files[0].clone(),
                line: 2
            }
        );
    }

    #[test]
    fn hashed_entries_and_revocation() {
        let hashed = hash_name("[10.0.0.2]:2222").unwrap();
        let (_d, files) = file(&format!(
            "{hashed} ssh-ed25519 {ED_A}\n@revoked * ssh-ed25519 {ED_B}\n"
        ));
        assert_eq!(check(&files, "[10.0.0.2]:2222", &key(ED_A)), Verdict::Known);
        assert_eq!(check(&files, "10.0.0.2", &key(ED_A)), Verdict::Unknown);
        assert!(matches!(
            check(&files, "anything", &key(ED_B)),
            Verdict::Revoked { line: 2, .. }
        ));
    }

    #[test]
    fn openssh_hashes_verify() {
        // What `ssh-keygen -H` wrote for `login.example.org`.
        let hashed = "|1|/HNUTZegJnUduMdrcQ9XYs4LwBU=|JX8rsEtSMbkImPJrX0cz44RjCB0=";
        assert!(hosts_match(hashed, "login.example.org"));
        assert!(!hosts_match(hashed, "login.example.com"));
    }

    #[test]
    fn learns_into_new_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/.ssh/known_hosts");
        learn(&path, "[h]:2222", &key(ED_A), false).unwrap();
        learn(&path, "h2", &key(ED_B), true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        let files = vec![path.clone()];
        assert_eq!(check(&files, "[h]:2222", &key(ED_A)), Verdict::Known);
        assert_eq!(check(&files, "h2", &key(ED_B)), Verdict::Known);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("[h]:2222 ssh-ed25519 {ED_A}")));
        assert!(!text.contains("h2 "), "hashed: {text}");
    }
}
