//! A podtun that cannot upload itself gets the login host's build from the release archives:
//! on the walled-off topology, with the laptop made a foreign build (`PODTUN_TEST_FOREIGN_BUILD`)
//! and a release folder served from the laptop's side (a small HTTP server in its namespace,
//! or a `file://` folder).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::cluster::repo;
use crate::common::http;
use crate::common::podtun::{self, Podtun};
use crate::common::redis::Redis;
use crate::common::sshd::run;
use crate::common::topology::{Shape, Topology};

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
const JUPYTER: &[&str] = &["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"];

/// The login host's release target (the test machine's).
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn archive_name() -> String {
    format!("podtun-{}-{TARGET}.tar.gz", version())
}

fn shape(manifests: &[&'static str]) -> Shape {
    Shape {
        manifests: manifests.to_vec(),
        ..Default::default()
    }
}

/// A release folder holding `binary` as this version's `TARGET` build, written by
/// `scripts/dist --bin BINARY --out DIR`: the layout the release workflow publishes and podtun
/// downloads (`podtun-VERSION-TARGET.tar.gz` holding `podtun-VERSION-TARGET/podtun`, and
/// `SHA256SUMS`). `args` go to scripts/dist as well.
fn dist_folder(binary: &Path, args: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    run(Command::new(repo().join("scripts/dist"))
        .arg("--bin")
        .arg(binary)
        .args(["--target", TARGET])
        .args(args)
        .arg("--out")
        .arg(out.path()));
    assert!(out.path().join(archive_name()).exists(), "no archive");
    assert!(out.path().join("SHA256SUMS").exists(), "no SHA256SUMS");
    out
}

/// A release folder for the podtun under test.
fn release_folder() -> tempfile::TempDir {
    dist_folder(Path::new(podtun::bin()), &[])
}

/// A static file server in the laptop's namespace (127.0.0.1, a port the kernel picks),
/// serving `dir` and recording each requested path.
struct ReleaseServer {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReleaseServer {
    async fn start(t: &Topology, dir: &Path) -> ReleaseServer {
        // A socket stays in the namespace it was created in, whichever thread serves it.
        let listener = t
            .on_laptop(|| async { TcpListener::bind("127.0.0.1:0").expect("bind") })
            .await;
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped, root) = (requests.clone(), stop.clone(), dir.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(path) = serve(conn, &root) {
                            log.lock().expect("log").push(path);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        ReleaseServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL of the folder `sub` on this server.
    fn url(&self, sub: &str) -> String {
        format!("http://127.0.0.1:{}/{sub}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }

    /// Stops serving and closes the port (connections are refused from then on).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answers one HTTP/1.1 GET from `root` (200 with the file, else 404); the path asked for.
fn serve(mut conn: std::net::TcpStream, root: &Path) -> Option<String> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1)?.to_string();
    let file = root.join(path.trim_start_matches('/'));
    let body = (!path.contains(".."))
        .then(|| std::fs::read(&file).ok())
        .flatten();
    let (status, body) = match body {
        Some(body) => ("200 OK", body),
        None => ("404 Not Found", b"not found\n".to_vec()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(reply.as_bytes()).ok()?;
    conn.write_all(&body).ok()?;
    Some(path)
}

/// The laptop's cache directory for this version's release build.
fn laptop_cache(t: &Topology) -> PathBuf {
    t.home
        .path()
        .join(".cache/podtun/releases")
        .join(format!("{}-{TARGET}", version()))
}

/// `podtun PRESET PRESET -n demo -p 0 --via LOGIN --kubeconfig (login's)` as a foreign build
/// fetching releases from `releases`, with the laptop's cache in its home (`--agent podtun`).
fn foreign(t: &Topology, preset: &str, releases: &str) -> tokio::process::Command {
    let kubeconfig = t.kubeconfig_arg();
    let mut cmd = t.podtun(&[
        preset,
        preset,
        "-n",
        "demo",
        "-p",
        "0",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        &kubeconfig,
    ]);
    // podtun's agent only: in auto mode a failed download goes on to kubectl mode.
    cmd.env("PODTUN_TEST_FOREIGN_BUILD", "1")
        .env("PODTUN_AGENT", "podtun")
        .env("PODTUN_RELEASES_URL", releases)
        .env("XDG_CACHE_HOME", t.home.path().join(".cache"));
    cmd
}

/// PING from the laptop's namespace.
async fn ping(t: &Topology, local: &str) {
    let local = local.to_string();
    let pong = t
        .on_laptop(move || async move {
            let mut r = Redis::connect(&local).await?;
            r.call(&[b"PING"]).await
        })
        .await
        .expect("PING through the tunnel");
    assert_eq!(pong.as_deref(), Some(&b"+PONG"[..]));
}

/// Runs redis through the login host with `cmd` and checks it answers; exit 0 after SIGTERM.
async fn redis_works(t: &Topology, cmd: tokio::process::Command) {
    let mut p = Podtun::spawn_command(cmd);
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    ping(t, &local).await;
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// Nothing of podtun's on the login host: no file under `~/.cache/podtun`, no process.
fn login_host_untouched(t: &Topology) {
    let cache = t.login_home.path().join(".cache/podtun");
    let left: Vec<_> = walk(&cache);
    assert!(!cache.exists(), "{} exists, with {left:?}", cache.display());
    assert!(t.login_podtuns().is_empty(), "{:?}", t.login_podtuns());
}

pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .flat_map(|p| {
            let mut v = walk(&p);
            v.push(p);
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_build_uploads_the_checked_release_and_then_reuses_the_laptop_cache() {
    let t = Topology::start(shape(REDIS)).await;
    let folder = release_folder();
    let mut server = ReleaseServer::start(&t, folder.path()).await;
    // No trailing slash: the URL names a folder all the same.
    let releases = server.url("v").replace("/v", "");

    redis_works(&t, foreign(&t, "redis", &releases)).await;
    assert_eq!(
        server.requests(),
        ["/SHA256SUMS".to_string(), format!("/{}", archive_name())],
        "what the laptop fetched"
    );

    // The laptop keeps the build, private to its user; the login host got that very build.
    let cache = laptop_cache(&t);
    let cached = cache.join("podtun");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").mode() & 0o7777;
    assert_eq!(mode(&cache), 0o700, "laptop cache directory mode");
    assert_eq!(mode(&cached), 0o700, "cached binary mode");
    let build = std::fs::read(&cached).expect("cached build");
    let installed = t.login_home.installed_binary();
    assert_eq!(mode(&installed), 0o700, "uploaded binary mode");
    assert_eq!(
        std::fs::read(&installed).expect("uploaded binary"),
        build,
        "the login host runs the release build"
    );
    let inside = Command::new("tar")
        .arg("-xzOf")
        .arg(folder.path().join(archive_name()))
        .arg(format!("podtun-{}-{TARGET}/podtun", version()))
        .stderr(Stdio::inherit())
        .output()
        .expect("tar");
    assert!(inside.status.success(), "tar -x");
    assert!(
        inside.stdout == build,
        "the cache holds the archive's binary"
    );

    // With the server gone and the login host's copy removed, the next run uploads the
    // laptop's cached build again, without a download.
    server.stop();
    std::fs::remove_file(&installed).expect("remove the login host's copy");
    redis_works(&t, foreign(&t, "redis", &releases)).await;
    assert_eq!(server.requests().len(), 2, "no second download");
    assert_eq!(
        std::fs::read(&installed).expect("uploaded again"),
        build,
        "the cached build went up again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_release_or_a_bad_checksum_is_a_clear_error_that_leaves_nothing() {
    let t = Topology::start(shape(REDIS)).await;
    let folder = release_folder();
    let sums = std::fs::read_to_string(folder.path().join("SHA256SUMS")).expect("SHA256SUMS");
    let wrong = format!("{}{}", "0".repeat(64), &sums[64..]);
    std::fs::write(folder.path().join("SHA256SUMS"), wrong).expect("write SHA256SUMS");
    let server = ReleaseServer::start(&t, folder.path()).await;

    let missing = server.url("nowhere/");
    let out = podtun::finish(foreign(&t, "redis", &missing)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    let want = format!("could not download {missing}SHA256SUMS: HTTP 404 Not Found");
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("\n  - this podtun counts as a foreign build"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    login_host_untouched(&t);

    let releases = server.url("");
    let out = podtun::finish(foreign(&t, "redis", &releases)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    let want = format!(
        "{releases}{} does not match its checksum: SHA256SUMS has {}",
        archive_name(),
        "0".repeat(64)
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    login_host_untouched(&t);
    assert!(
        !laptop_cache(&t).join("podtun").exists(),
        "a build that failed its checksum was cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_folder_by_file_url_gives_jupyter() {
    let t = Topology::start(shape(JUPYTER)).await;
    let folder = release_folder();
    let releases = format!("file://{}", folder.path().display());

    let mut p = Podtun::spawn_command(foreign(&t, "jupyter", &releases));
    let (_, ready) = p.ready().await;
    let url = ready["url"].as_str().expect("a url").to_string();
    let (addr, path) = http::split_url(&url);
    let (status, _) = t
        .on_laptop(move || async move { http::get(&addr, &path).await })
        .await;
    assert_eq!(status, 200, "the printed URL");
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    assert!(laptop_cache(&t).join("podtun").exists(), "cached");
    assert!(t.login_home.installed_binary().exists(), "uploaded");
}

/// A release folder (and its `file://` URL) whose build the login host cannot run: a stand-in
/// that fails as a binary built against a newer glibc does.
pub(crate) fn unrunnable_release() -> (tempfile::TempDir, String) {
    let stage = tempfile::tempdir().expect("tempdir");
    let binary = stage.path().join("podtun");
    std::fs::write(
        &binary,
        "#!/bin/sh\necho \"$0: /lib64/libc.so.6: version \\`GLIBC_2.99' not found\" >&2\nexit 1\n",
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // It cannot run here either, so scripts/dist must not ask it for its version.
    let folder = dist_folder(&binary, &["--no-run"]);
    let releases = format!("file://{}/", folder.path().display());
    (folder, releases)
}

/// A release build the login host cannot run (here a stand-in that fails as a binary built
/// against a newer glibc does) is removed after its `--version` check, and the error quotes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_build_that_does_not_run_there_is_removed_and_quoted() {
    let t = Topology::start(shape(REDIS)).await;
    let (_folder, releases) = unrunnable_release();

    let out = podtun::finish(foreign(&t, "redis", &releases)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "\n  - uploading the {TARGET} release build ({releases}{}): it does not run there: `",
            archive_name()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("version `GLIBC_2.99' not found"),
        "{}",
        out.stderr
    );
    login_host_untouched(&t);
}
