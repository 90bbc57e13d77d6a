//! Where podtun keeps its files on the laptop: settings in the platform's config directory,
//! tunnel state in its state directory, both private to the user (0700 directories, 0600
//! files on Unix).
//!
//! | platform | config file                                        | state directory                       |
//! |----------|----------------------------------------------------|---------------------------------------|
//! | Linux    | `$XDG_CONFIG_HOME/podtun/config.toml` (`~/.config`) | `$XDG_STATE_HOME/podtun` (`~/.local/state`) |
//! | macOS    | `~/Library/Application Support/podtun/config.toml`  | `~/Library/Application Support/podtun` |
//! | Windows  | `%APPDATA%\podtun\config.toml`                      | `%LOCALAPPDATA%\podtun`               |
//!
//! `PODTUN_CONFIG` names another config file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "PODTUN_CONFIG";

/// The config file, and whether the user named it (`PODTUN_CONFIG`): a named file must exist.
pub fn config_file() -> anyhow::Result<(PathBuf, bool)> {
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(path), true));
    }
    Ok((config_dir()?.join("config.toml"), false))
}

/// podtun's state directory (created 0700 on demand by [`private_dir`]).
pub fn state_dir() -> anyhow::Result<PathBuf> {
    #[cfg(windows)]
    {
        env_dir("LOCALAPPDATA").map(|d| d.join("podtun"))
    }
    #[cfg(target_os = "macos")]
    {
        Ok(home()?.join("Library/Application Support/podtun"))
    }
    #[cfg(not(any(windows, target_os = "macos")))]
    {
        match env_dir("XDG_STATE_HOME") {
            Ok(dir) => Ok(dir.join("podtun")),
            Err(_) => Ok(home()?.join(".local/state/podtun")),
        }
    }
}

fn config_dir() -> anyhow::Result<PathBuf> {
    #[cfg(windows)]
    {
        env_dir("APPDATA").map(|d| d.join("podtun"))
    }
    #[cfg(target_os = "macos")]
    {
        Ok(home()?.join("Library/Application Support/podtun"))
    }
    #[cfg(not(any(windows, target_os = "macos")))]
    {
        match env_dir("XDG_CONFIG_HOME") {
            Ok(dir) => Ok(dir.join("podtun")),
            Err(_) => Ok(home()?.join(".config/podtun")),
        }
    }
}

/// An absolute directory from the environment (relative ones are ignored, as XDG says).
fn env_dir(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os(name)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .ok_or_else(|| anyhow!("`{name}` is not set to an absolute path"))
}

#[cfg(not(windows))]
fn home() -> anyhow::Result<PathBuf> {
    env_dir("HOME").context("could not find the home directory")
}

/// Creates `dir` (and its parents) and makes it private to the user.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("could not make {} private", dir.display()))?;
    }
    Ok(())
}

/// Opens (creating it 0600 if missing) a private file for reading and writing.
pub fn private_file(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Replaces `path` with `bytes` at once (a reader sees the old file or the new one), 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file =
        private_file(&tmp, true).with_context(|| format!("could not write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("could not write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("could not write {}", path.display()))
}
