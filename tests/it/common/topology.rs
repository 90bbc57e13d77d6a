//! The walled-off shape of a real deployment, built per test from network namespaces:
//!
//! ```text
//! laptop ── login (sshd) ── cluster (API server)          pods: a namespace each, lo only
//! laptop ── bastion (sshd) ── login (sshd) ── cluster      (with a bastion: no laptop ── login)
//! ```
//!
//! IP forwarding is off everywhere (each namespace turns it off, whatever the host does), so
//! the laptop reaches only the sshd it is linked to, and only the login host reaches the API
//! server. The login user is a real unprivileged account
//! ([`LOGIN_USER`]); each test gives it a home of its own through sshd's `SetEnv HOME=…`, so
//! parallel tests never share `~/.cache/podtun`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use testcluster::{Config, TestCluster};

use super::cluster::{self, Cluster, JUPYTER_BIN};
use super::podtun;
use super::sshd::{run, Netns, SshHome, Sshd};

/// The unprivileged account podtun logs in as on the login host (and the bastion).
pub const LOGIN_USER: &str = "podtun-login";

/// A second account of the login host, which must not reach the login user's agent.
pub const OTHER_USER: &str = "podtun-other";

/// Bound on a body run inside a namespace: a hang fails the test instead of stalling the run.
const BODY_TIMEOUT: Duration = Duration::from_secs(180);

/// How often conditions are polled while waiting on a deadline.
const POLL: Duration = Duration::from_millis(50);

/// What to build.
#[derive(Default)]
pub struct Shape {
    /// Put a bastion between the laptop and the login host.
    pub bastion: bool,
    /// Extra sshd_config lines for the login host (they win over the defaults).
    pub login_sshd: Vec<String>,
    /// Manifests to apply (paths relative to the repository).
    pub manifests: Vec<&'static str>,
    /// Leave the login host's key out of the laptop's known_hosts.
    pub unknown_login_key: bool,
    /// More users of the test cluster (a kubeconfig context each).
    pub cluster_users: Vec<testcluster::UserSpec>,
}

/// The addresses of one topology; `10.N.L.1`/`10.N.L.2` for link `L`.
#[derive(Clone, Debug)]
pub struct Addrs {
    /// The login host's address as its client (the laptop or the bastion) sees it.
    pub login: String,
    /// The bastion's address as the laptop sees it.
    pub bastion: Option<String>,
    /// The API server's address, on the login ─ cluster link.
    pub api_ip: String,
}

impl Addrs {
    fn new(bastion: bool) -> Addrs {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        // Each topology has its own namespaces; distinct subnets only make logs easier to read.
        // (10.244/16 is the test cluster's fictional pod network: stay below it.)
        let net = 200 + (std::process::id() + COUNT.fetch_add(1, Ordering::Relaxed)) % 40;
        Addrs {
            login: if bastion {
                format!("10.{net}.4.2")
            } else {
                format!("10.{net}.1.2")
            },
            bastion: bastion.then(|| format!("10.{net}.3.2")),
            api_ip: format!("10.{net}.2.2"),
        }
    }

    fn net(&self) -> &str {
        self.api_ip.rsplitn(3, '.').last().unwrap_or("10.200")
    }

    /// `10.N.L.host`.
    pub fn ip(&self, link: u8, host: u8) -> String {
        format!("{}.{link}.{host}", self.net())
    }
}

/// The login user's home for one test: `ROOT/home`, owned by [`LOGIN_USER`]; ROOT and the home
/// are 0755, so only podtun's own modes keep other users out of what it creates there.
pub struct LoginHome {
    root: tempfile::TempDir,
    /// uid and gid of [`LOGIN_USER`].
    pub owner: (u32, u32),
}

impl LoginHome {
    fn new() -> LoginHome {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let owner = ids(LOGIN_USER);
        let home = LoginHome { root, owner };
        home.mkdir(&home.path());
        home
    }

    /// The home directory.
    pub fn path(&self) -> PathBuf {
        self.root.path().join("home")
    }

    /// Creates `dir` (0755) owned by the login user.
    fn mkdir(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::os::unix::fs::chown(dir, Some(self.owner.0), Some(self.owner.1)).expect("chown");
    }

    /// Copies `from` to `~/REL` as the login user's own private file; returns its path.
    pub fn install(&self, from: &Path, rel: &str) -> PathBuf {
        let to = self.path().join(rel);
        self.mkdir(to.parent().expect("parent"));
        std::fs::copy(from, &to).expect("copy into the login home");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&to, Some(self.owner.0), Some(self.owner.1)).expect("chown");
        to
    }

    /// `~/.cache/podtun/<version>/podtun`, where podtun installs itself.
    pub fn installed_binary(&self) -> PathBuf {
        self.path()
            .join(".cache/podtun")
            .join(env!("CARGO_PKG_VERSION"))
            .join("podtun")
    }

    /// The agent's socket directory (no XDG_RUNTIME_DIR in these sessions).
    pub fn socket_dir(&self) -> PathBuf {
        self.path().join(".cache/podtun/run")
    }

    /// The agent sockets that exist now.
    pub fn sockets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.socket_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                std::fs::symlink_metadata(p)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            })
            .collect()
    }
}

/// One test's laptop, login host, optional bastion and cluster.
///
/// Fields drop in order: the servers stop before their namespaces go.
pub struct Topology {
    /// The login host's sshd.
    pub sshd: Sshd,
    /// The bastion's sshd.
    pub bastion_sshd: Option<Sshd>,
    pub laptop: Netns,
    pub login: Netns,
    pub bastion: Option<Netns>,
    pub cluster_ns: Netns,
    /// The test cluster, serving inside `cluster_ns`.
    pub cluster: Cluster,
    pub addrs: Addrs,
    /// `ip:port` of the API server.
    pub api: String,
    /// The laptop user's HOME: key, known_hosts, `~/.ssh/config` (user, key).
    pub home: SshHome,
    /// The login user's HOME.
    pub login_home: LoginHome,
    /// The kubeconfig on the login host (in the login user's home).
    pub kubeconfig: PathBuf,
}

impl Topology {
    /// Builds the namespaces, starts the servers, applies the manifests.
    pub async fn start(shape: Shape) -> Topology {
        ensure_user(LOGIN_USER, &["-M", "-d", "/", "-s", "/bin/sh"]);
        let addrs = Addrs::new(shape.bastion);
        let laptop = Netns::new("laptop");
        let login = Netns::new("login");
        let cluster_ns = Netns::new("cluster");
        Netns::link(&login, &addrs.ip(2, 1), &cluster_ns, &addrs.api_ip);
        let bastion = shape.bastion.then(|| {
            let bastion = Netns::new("bastion");
            let bastion_ip = addrs.bastion.as_deref().expect("bastion address");
            Netns::link(&laptop, &addrs.ip(3, 1), &bastion, bastion_ip);
            Netns::link(&bastion, &addrs.ip(4, 1), &login, &addrs.login);
            bastion
        });
        if bastion.is_none() {
            Netns::link(&laptop, &addrs.ip(1, 1), &login, &addrs.login);
        }

        let login_home = LoginHome::new();
        let mut login_config = shape.login_sshd.clone();
        login_config.push(format!("SetEnv HOME={}", login_home.path().display()));
        let login_config: Vec<&str> = login_config.iter().map(String::as_str).collect();
        let sshd = Sshd::start(&login, &addrs.login, 22, &login_config);
        let bastion_sshd = bastion.as_ref().map(|ns| {
            Sshd::start(
                ns,
                addrs.bastion.as_deref().expect("bastion address"),
                22,
                &[],
            )
        });

        let home = SshHome::new();
        let key = home.keygen("id_ed25519", "");
        sshd.authorize(LOGIN_USER, &key);
        if !shape.unknown_login_key {
            home.known_host(&sshd.known_hosts_line());
        }
        if let Some(b) = &bastion_sshd {
            b.authorize(LOGIN_USER, &key);
            home.known_host(&b.known_hosts_line());
        }
        home.config(&format!(
            "Host *\n  User {LOGIN_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {known}\n",
            key = home.ssh("id_ed25519").display(),
            known = home.ssh("known_hosts").display(),
        ));

        let (cluster, api) = start_cluster_in(&cluster_ns, &addrs.api_ip, &shape).await;
        let kubeconfig = login_home.install(cluster.kubeconfig(), ".kube/config");
        Topology {
            sshd,
            bastion_sshd,
            laptop,
            login,
            bastion,
            cluster_ns,
            cluster,
            addrs,
            api,
            home,
            login_home,
            kubeconfig,
        }
    }

    /// `podtun ARGS` on the laptop: inside its namespace, HOME = the laptop home, stdin
    /// closed, no inherited kube or ssh-agent settings.
    pub fn podtun(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", self.laptop.name(), podtun::bin()])
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PODTUN_VIA")
            // State and settings under the laptop's HOME, as for a user who set neither.
            .env_remove("XDG_STATE_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("PODTUN_CONFIG")
            .env_remove("PODTUN_AGENT")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// The login kubeconfig as an argument.
    pub fn kubeconfig_arg(&self) -> String {
        self.kubeconfig.display().to_string()
    }

    /// [`Topology::podtun`] with `args` and then `--via LOGIN --kubeconfig (the login host's)
    /// --remote-bin (the built binary)`.
    pub fn podtun_via(&self, args: &[&str]) -> tokio::process::Command {
        let kubeconfig = self.kubeconfig_arg();
        let via = [
            "--via",
            &self.addrs.login,
            "--kubeconfig",
            &kubeconfig,
            "--remote-bin",
            podtun::bin(),
        ];
        let all: Vec<&str> = args.iter().copied().chain(via).collect();
        self.podtun(&all)
    }

    /// Runs `body` inside the laptop's namespace (its sockets are the laptop's).
    pub async fn on_laptop<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        in_netns(&self.laptop, body).await
    }

    /// Runs `body` inside the login host's namespace.
    pub async fn on_login<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        in_netns(&self.login, body).await
    }

    /// The command lines of the `podtun` processes living on the login host.
    pub fn login_podtuns(&self) -> Vec<String> {
        self.login_commands()
            .into_iter()
            .filter(|cmd| cmd.contains("podtun agent"))
            .collect()
    }

    /// The command lines of every process on the login host.
    pub fn login_commands(&self) -> Vec<String> {
        commands(&self.login)
    }

    /// The command lines of every process on the laptop.
    pub fn laptop_commands(&self) -> Vec<String> {
        commands(&self.laptop)
    }

    /// The login host's watchdogs (`laptop::watchdog`) whose key contains `key`: their shells'
    /// pids (a watchdog's own subshells, which share its command line, are not counted).
    pub fn watchdogs(&self, key: &str) -> Vec<String> {
        let watching = |pid: &str| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let cmd = String::from_utf8_lossy(&raw);
                cmd.contains("podtun-watch:") && cmd.contains(key)
            })
        };
        let pids: Vec<String> = self
            .login
            .pids()
            .into_iter()
            .filter(|p| watching(p))
            .collect();
        pids.iter()
            .filter(|pid| parent_pid(pid).is_none_or(|ppid| !pids.contains(&ppid)))
            .cloned()
            .collect()
    }

    /// Kills the login host's sshd sessions serving the laptop (its listener stays): the SSH
    /// connection dies as when the login host drops it.
    pub fn kill_login_ssh_sessions(&self) {
        let sessions: Vec<String> = self
            .login
            .pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                    String::from_utf8_lossy(&raw).starts_with(&format!("sshd: {LOGIN_USER}"))
                })
            })
            .collect();
        assert!(!sessions.is_empty(), "no sshd session serves the laptop");
        let killed = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&sessions)
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -KILL {sessions:?}");
    }
}

/// The parent of process `pid`.
pub fn parent_pid(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces, so count from its end.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
}

/// The command lines of the processes in `ns`.
fn commands(ns: &Netns) -> Vec<String> {
    ns.pids()
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect()
}

/// Starts the test cluster with its API server listening inside `ns` on `ip` (a port the
/// kernel picks there), advertised under that address, so its kubeconfig works from the login
/// host and from nowhere else.
async fn start_cluster_in(ns: &Netns, ip: &str, shape: &Shape) -> (Cluster, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bind = format!("{ip}:0");
    // A socket stays in the namespace it was created in, whichever thread serves it.
    let listener = in_netns_blocking(ns, move || {
        std::net::TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
    });
    let api = listener.local_addr().expect("listener address").to_string();
    let mut config = Config::new(dir.path().join("cluster"), listener);
    config.extra_path = vec![PathBuf::from(JUPYTER_BIN)];
    config.images = cluster::images();
    config.advertise = Some(api.clone());
    config.server_names = vec![ip.to_string()];
    config.users = shape.cluster_users.clone();
    let tc = TestCluster::start(config)
        .await
        .expect("start the test cluster");
    for m in &shape.manifests {
        tc.apply_file(&cluster::repo().join(m))
            .unwrap_or_else(|e| panic!("apply {m}: {e:#}"));
    }
    (Cluster { tc, dir }, api)
}

/// Runs `f` on a thread that entered `ns`'s network namespace.
fn in_netns_blocking<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Runs an async body on its own thread inside `ns`, on a current-thread runtime, without
/// blocking the caller's runtime (podtun's output keeps being read meanwhile).
pub async fn in_netns<F, Fut, T>(ns: &Netns, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/var/run/netns/{}", ns.name());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        enter(&path);
        let value = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                tokio::time::timeout(BODY_TIMEOUT, body())
                    .await
                    .unwrap_or_else(|_| panic!("not done within {BODY_TIMEOUT:?}"))
            });
        let _ = tx.send(value);
    });
    match rx.await {
        Ok(value) => value,
        Err(_) => std::panic::resume_unwind(thread.join().expect_err("the body panicked")),
    }
}

pub use super::wait_until;

/// uid and gid of `user`.
pub fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        run(Command::new("id").args([flag, user]))
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Creates `user` with `useradd ARGS` unless it exists. Other tests create users too, and
/// useradd fails while another holds /etc/passwd's lock: retry for a while.
pub fn ensure_user(user: &str, args: &[&str]) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = || {
        Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !exists() {
        let out = Command::new("useradd")
            .args(args)
            .arg(user)
            .stdin(Stdio::null())
            .output()
            .expect("useradd");
        assert!(
            out.status.success() || std::time::Instant::now() < deadline,
            "useradd {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            std::thread::sleep(POLL);
        }
    }
}

/// File metadata that an in-place rewrite or a replacement would change.
pub fn identity(path: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.mtime(), m.mtime_nsec())
}
