//! The agent's private Unix sockets: a 0700 directory of ours, one 0600 socket per forwarded
//! port, and a peer-uid check on every connection. Nothing here is reachable by another user of
//! the (shared) login host, and nothing is left behind when the agent ends.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, info_span, warn, Span};

use crate::error::hinted;
use crate::net::accept::Accept;

/// Bound on probing a leftover socket: a live agent answers at once, a dead one refuses at once.
const STALE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Our own uid, as the kernel reports it for a socket pair (no `getuid` without `unsafe`).
pub fn own_uid() -> anyhow::Result<u32> {
    let (a, _b) = UnixStream::pair().context("could not create a socket pair")?;
    Ok(a.peer_cred()
        .context("could not read our own credentials")?
        .uid())
}

/// The directory for our sockets: `$XDG_RUNTIME_DIR/podtun` when that is usable, else
/// `~/.cache/podtun/run`; created 0700, and checked to be ours and private.
pub fn private_dir(uid: u32) -> anyhow::Result<PathBuf> {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        let runtime = PathBuf::from(runtime);
        if runtime.is_absolute() && runtime.is_dir() {
            match ensure_private(&runtime.join("podtun"), uid) {
                Ok(dir) => return Ok(dir),
                Err(e) => warn!("{e:#}; using ~/.cache/podtun/run instead"),
            }
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_RUNTIME_DIR nor HOME is set on the login host"))?;
    ensure_private(&Path::new(&home).join(".cache/podtun/run"), uid)
}

/// Creates `dir` (and its parents) 0700, or checks an existing one: a real directory, owned by
/// `uid`, with no group/other access (tightened to 0700 if needed).
fn ensure_private(dir: &Path, uid: u32) -> anyhow::Result<PathBuf> {
    let shown = dir.display();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("could not create the socket directory `{shown}`"))?;
    let meta = fs::symlink_metadata(dir).with_context(|| format!("could not stat `{shown}`"))?;
    if !meta.file_type().is_dir() {
        bail!("the socket directory `{shown}` is not a directory (a symlink?)");
    }
    if meta.uid() != uid {
        return Err(hinted(
            anyhow!(
                "the socket directory `{shown}` belongs to uid {}, not to this user (uid {uid})",
                meta.uid()
            ),
            format!("remove `{shown}` on the login host, or set XDG_RUNTIME_DIR to a directory of yours"),
        ));
    }
    if meta.mode() & 0o7777 != 0o700 {
        info!(dir = %shown, mode = format!("{:o}", meta.mode() & 0o7777), "making the socket directory private (0700)");
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .with_context(|| format!("could not make `{shown}` private (chmod 0700)"))?;
    }
    Ok(dir.to_path_buf())
}

/// `<pid>-<index>.sock` → pid.
fn pid_of(name: &str) -> Option<u32> {
    let (pid, index) = name.strip_suffix(".sock")?.split_once('-')?;
    index.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a process lives, where procfs can tell; elsewhere the socket probe decides alone.
fn pid_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && proc.join(pid.to_string()).exists()
}

/// Removes sockets of agents that died without cleaning up: named `<pid>-<index>.sock`, the pid
/// gone, and nobody listening. Any other file in the directory is left alone.
pub async fn remove_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(pid_of) else {
            continue;
        };
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        if pid == me || !is_socket || pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        let probe = tokio::time::timeout(STALE_PROBE_TIMEOUT, UnixStream::connect(&path)).await;
        if let Ok(Err(e)) = probe {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                debug!(path = %path.display(), "removing a dead agent's socket");
                fs::remove_file(&path).ok();
            }
        }
    }
}

/// The socket files this agent created; dropping this removes them (on every path out,
/// a panic's unwinding included).
#[derive(Debug, Default)]
pub struct SocketFiles {
    paths: Vec<PathBuf>,
}

impl SocketFiles {
    /// The paths, in port order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Removes the files now.
    pub fn remove(&mut self) {
        for path in self.paths.drain(..) {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(%e, path = %path.display(), "could not remove the socket");
                }
            }
        }
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds `count` sockets `<dir>/<pid>-<index>.sock`, each 0600. `dir` is already 0700, so there
/// is no moment in which another user could reach a socket before its chmod.
pub fn bind(dir: &Path, count: usize) -> anyhow::Result<(SocketFiles, Vec<UnixListener>)> {
    let mut files = SocketFiles::default();
    let mut listeners = Vec::with_capacity(count);
    for index in 0..count {
        let path = dir.join(format!("{}-{index}.sock", std::process::id()));
        // Our pid owns this name: a file there is a leftover of an earlier process with our pid.
        fs::remove_file(&path).ok();
        let listener = UnixListener::bind(&path).map_err(|e| {
            hinted(
                anyhow!(e).context(format!("could not listen on `{}`", path.display())),
                "if the path is too long for a Unix socket, set XDG_RUNTIME_DIR to a shorter directory",
            )
        })?;
        files.paths.push(path.clone());
        fs::set_permissions(&path, Permissions::from_mode(0o600))
            .with_context(|| format!("could not chmod 0600 `{}`", path.display()))?;
        listeners.push(listener);
    }
    Ok((files, listeners))
}

/// One of the agent's sockets, with the only uid allowed to connect to it.
pub struct Private {
    /// The socket.
    pub listener: UnixListener,
    /// Our uid: a peer with another is turned away.
    pub uid: u32,
}

impl Accept for Private {
    type Conn = UnixStream;

    async fn accept(&self) -> io::Result<Option<(UnixStream, Span)>> {
        let (conn, _) = self.listener.accept().await?;
        match conn.peer_cred() {
            Ok(cred) if cred.uid() == self.uid => {
                let span = info_span!("conn", peer = cred.pid().unwrap_or_default());
                Ok(Some((conn, span)))
            }
            Ok(cred) => {
                warn!(
                    peer_uid = cred.uid(),
                    peer_pid = cred.pid(),
                    "refused a connection from another user"
                );
                Ok(None)
            }
            Err(e) => {
                warn!(%e, "refused a connection whose peer is unknown");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_give_their_pid() {
        assert_eq!(pid_of("1234-0.sock"), Some(1234));
        assert_eq!(pid_of("1234-12.sock"), Some(1234));
        assert_eq!(pid_of("1234.sock"), None);
        assert_eq!(pid_of("x-0.sock"), None);
        assert_eq!(pid_of("1234-0.sock.bak"), None);
        assert_eq!(pid_of("notes.txt"), None);
    }

    #[tokio::test]
    async fn directory_is_created_private_and_tightened() {
        let uid = own_uid().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/podtun");
        ensure_private(&dir, uid).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        ensure_private(&dir, uid).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        let err = ensure_private(&dir, uid + 1).unwrap_err();
        assert!(format!("{err:#}").contains("belongs to uid"), "{err:#}");
    }

    #[tokio::test]
    async fn sockets_are_0600_and_removed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, listeners) = bind(tmp.path(), 2).unwrap();
        assert_eq!(listeners.len(), 2);
        let paths = files.paths().to_vec();
        for p in &paths {
            let meta = fs::symlink_metadata(p).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.mode() & 0o777, 0o600);
        }
        drop(files);
        assert!(paths.iter().all(|p| !p.exists()));
    }
}
