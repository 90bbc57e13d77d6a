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

/// Creates `dir` (and its missing parents) private to the user: 0700 from the start on Unix,
/// and made so when it existed already.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("could not create {}", dir.display()))?;
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
    write_private_mode(path, bytes, 0o600)
}

/// Replaces `path` with `bytes` at once through a temp file created with `mode` on Unix (0700
/// for a program), removed when the write fails.
pub fn write_private_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = renamed {
        std::fs::remove_file(&temp).ok();
        return Err(e).with_context(|| format!("could not write {}", path.display()));
    }
    Ok(())
}

/// The laptop's cache folder for podtun (created on first store): `$XDG_CACHE_HOME/podtun` or
/// `~/.cache/podtun` on Linux and other Unixes, `~/Library/Caches/podtun` on macOS,
/// `%LOCALAPPDATA%\podtun\cache` on Windows.
pub fn cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        return non_empty("LOCALAPPDATA").map(|d| d.join("podtun").join("cache"));
    }
    let home = non_empty("HOME");
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/Caches/podtun"));
    }
    non_empty("XDG_CACHE_HOME")
        .filter(|d| d.is_absolute())
        .or_else(|| home.map(|h| h.join(".cache")))
        .map(|d| d.join("podtun"))
}
