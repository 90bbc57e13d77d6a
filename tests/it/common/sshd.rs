//! Real OpenSSH servers for tests, each in a network namespace of its own.
//!
//! sshd cannot be handed a listener, so it binds a fixed port inside a private namespace where
//! nothing can collide with it. The test's client side (the "laptop") runs in a namespace too,
//! on a thread that entered it ([`Netns::run`]): namespaces are joined by veth pairs, so the
//! laptop reaches exactly the hosts a test links it to (a login host behind a bastion is out of
//! its reach). Nothing is configured in the host's own namespace.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long sshd gets to say it is listening.
const SSHD_START_TIMEOUT: Duration = Duration::from_secs(10);

/// A user with a password, for keyboard-interactive and password tests.
pub const PASSWORD_USER: &str = "podtun-it";
/// Its password.
pub const PASSWORD: &str = "podtun-it-Secret-1";

/// Runs a command to completion, panicking with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted (with its veth ends) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with `lo` up; `tag` makes the name readable in `ip netns list`.
    pub fn new(tag: &str) -> Netns {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let name = format!("podtun-it-{}-{n}-{tag}", std::process::id());
        // One of that name is a leftover of a killed run whose pid this process now has.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns.no_forwarding();
        ns
    }

    /// Turns packet forwarding off in the namespace, and checks it is off: a new namespace
    /// copies the host's IPv4 settings, and a host running Docker, kind or a Kubernetes node
    /// forwards. A namespace that forwarded would join the hosts the walls keep apart.
    fn no_forwarding(&self) {
        for setting in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            let off = format!("{setting}=0");
            run(self.command("sysctl").args(["-qw", &off]));
            let now = run(self.command("sysctl").args(["-n", setting]));
            assert_eq!(now.trim(), "0", "{setting} in {}", self.name);
        }
    }

    /// The namespace's name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Joins two namespaces with a veth pair: `a_ip/24` on `a`'s end, `b_ip/24` on `b`'s.
    pub fn link(a: &Netns, a_ip: &str, b: &Netns, b_ip: &str) {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let (a_dev, b_dev) = (format!("veth{n}a"), format!("veth{n}b"));
        run(Command::new("ip").args([
            "-n", &a.name, "link", "add", &a_dev, "type", "veth", "peer", "name", &b_dev, "netns",
            &b.name,
        ]));
        for (ns, dev, ip) in [(a, &a_dev, a_ip), (b, &b_dev, b_ip)] {
            let cidr = format!("{ip}/24");
            run(Command::new("ip").args(["-n", &ns.name, "addr", "add", &cidr, "dev", dev]));
            run(Command::new("ip").args(["-n", &ns.name, "link", "set", dev, "up"]));
        }
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs an async body on a thread inside this namespace, on a current-thread runtime, so
    /// every socket it opens and every process it starts lives in the namespace.
    pub fn run<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let ns = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Netns {
    /// The processes living in the namespace (never the test process itself).
    pub fn pids(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let me = std::process::id().to_string();
        out.split_whitespace()
            .filter(|p| *p != me)
            .map(str::to_string)
            .collect()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`…) to every process in the namespace.
    pub fn signal_all(&self, signal: &str) {
        let pids = self.pids();
        if !pids.is_empty() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .args(&pids)
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // sshd's per-connection processes outlive the listener; nothing outlives the test.
        self.signal_all("KILL");
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running sshd with fresh host keys and a private config, stopped on drop.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// The address it listens on.
    pub ip: String,
    /// The port it listens on.
    pub port: u16,
}

impl Sshd {
    /// Starts sshd in `ns` on `ip:port`; `extra` lines are added to its config (first value
    /// wins in sshd_config, so they override the defaults below).
    pub fn start(ns: &Netns, ip: &str, port: u16, extra: &[&str]) -> Sshd {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // sshd_config paths and the authorized_keys files are read by sshd as root.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        keygen(&d.join("host_ed25519"), "");
        let mut config = extra.join("\n");
        config.push_str(&format!(
            "\nListenAddress {ip}:{port}\nHostKey {d}/host_ed25519\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys.%u\nStrictModes no\nUsePAM yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication yes\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            d = d.display()
        ));
        let config_path = d.join("sshd_config");
        fs::write(&config_path, config).expect("sshd_config");
        let log_path = d.join("sshd.log");
        let log = fs::File::create(&log_path).expect("sshd.log");
        let child = ns
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd {
            child,
            dir,
            ip: ip.to_string(),
            port,
        };
        sshd.wait_listening(0);
        sshd
    }

    /// Stops this sshd (if the test has not killed it already) and starts it again in `ns`
    /// with the same config and host key, as an admin restarting the service would. Sessions
    /// it served live in processes of their own: a test that wants them gone kills them.
    pub fn restart(&mut self, ns: &Netns) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let started_before = self.log().matches("Server listening on").count();
        let d = self.dir.path();
        let log = fs::OpenOptions::new()
            .append(true)
            .open(d.join("sshd.log"))
            .expect("sshd.log");
        self.child = ns
            .command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("restart sshd");
        self.wait_listening(started_before);
    }

    /// Waits for the log's `started_before + 1`-th "Server listening on".
    fn wait_listening(&mut self, started_before: usize) {
        let deadline = Instant::now() + SSHD_START_TIMEOUT;
        loop {
            let log = self.log();
            if log.matches("Server listening on").count() > started_before {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}):\n{log}");
            }
            assert!(Instant::now() < deadline, "sshd did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What sshd logged so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Lets `user` log in with `public_key` (an OpenSSH public key line).
    pub fn authorize(&self, user: &str, public_key: &str) {
        let path = self.dir.path().join(format!("authorized_keys.{user}"));
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("authorized_keys");
        writeln!(f, "{}", public_key.trim()).expect("write authorized_keys");
    }

    /// The host key as `TYPE BASE64`.
    pub fn host_key(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("host_ed25519.pub")).expect("host key");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The known_hosts name OpenSSH records: `ip`, or `[ip]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.ip.clone()
        } else {
            format!("[{}]:{}", self.ip, self.port)
        }
    }

    /// A known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}\n", self.known_hosts_name(), self.host_key())
    }

    /// `ip:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh-keygen` a fresh ed25519 key at `path` with `passphrase` ("" for none).
pub fn keygen(path: &Path, passphrase: &str) {
    run(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "podtun-it",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path));
}

/// Creates [`PASSWORD_USER`] with [`PASSWORD`] once per test run (idempotent).
pub fn ensure_password_user() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let exists = Command::new("id")
        .arg(PASSWORD_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        run(Command::new("useradd").args(["-M", "-d", "/", "-s", "/bin/sh", PASSWORD_USER]));
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    chpasswd
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD_USER}:{PASSWORD}\n").as_bytes())
        .expect("chpasswd input");
    assert!(chpasswd.wait().expect("chpasswd").success());
    *done = true;
}

/// A temporary HOME with `.ssh/`: a fresh key, a config file and known_hosts.
pub struct SshHome {
    dir: tempfile::TempDir,
}

impl SshHome {
    /// An empty home with a 0700 `.ssh`.
    pub fn new() -> SshHome {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssh = dir.path().join(".ssh");
        fs::create_dir(&ssh).expect(".ssh");
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).expect("chmod .ssh");
        SshHome { dir }
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `~/.ssh/NAME`.
    pub fn ssh(&self, name: &str) -> PathBuf {
        self.dir.path().join(".ssh").join(name)
    }

    /// Generates `~/.ssh/NAME` (ed25519) and returns its public key line.
    pub fn keygen(&self, name: &str, passphrase: &str) -> String {
        let path = self.ssh(name);
        keygen(&path, passphrase);
        fs::read_to_string(path.with_extension("pub")).expect("public key")
    }

    /// Writes `~/.ssh/config`.
    pub fn config(&self, text: &str) {
        fs::write(self.ssh("config"), text).expect("config");
    }

    /// Appends to `~/.ssh/known_hosts`.
    pub fn known_host(&self, line: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ssh("known_hosts"))
            .expect("known_hosts");
        f.write_all(line.as_bytes()).expect("write known_hosts");
    }

    /// `~/.ssh/known_hosts`, or "" when absent.
    pub fn known_hosts(&self) -> String {
        fs::read_to_string(self.ssh("known_hosts")).unwrap_or_default()
    }
}
