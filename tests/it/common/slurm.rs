//! A real Slurm cluster beside a test's topology, from Debian's packages:
//!
//! ```text
//! laptop ── login (sshd, slurmctld) ── node1 (slurmd: the jobs run here)
//! ```
//!
//! `node1` is a network namespace linked to the login host only: the laptop cannot reach it,
//! exactly as a compute node is out of a laptop's reach on a real HPC cluster. The login user's
//! home is one directory on this machine, so the node shares it as compute nodes share `$HOME`.
//!
//! Everything is per test, under a temporary directory: munged's key and socket, slurm.conf,
//! the daemons' state, spool, pid and log files. `ip netns exec` bind-mounts `/etc/netns/NS/*`
//! over `/etc/*`, so each namespace gets its own `/etc/hosts` (`login`, `node1`) and
//! `/etc/slurm/slurm.conf` without touching the machine's; and each daemon runs in a UTS
//! namespace of its own with the hostname Slurm knows it by. The names and the Slurm ports can
//! then be the same in every test: nothing is shared between namespaces. The login host's sshd
//! is restarted once the files exist, so that the login user's sessions see them too.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::sshd::Netns;
use super::topology::{Topology, LOGIN_USER};

/// The login host's name in Slurm (and its hostname in slurmctld's UTS namespace).
pub const LOGIN_HOST: &str = "login";
/// The compute node's name (and its hostname in slurmd's UTS namespace, where the jobs run).
pub const NODE: &str = "node1";

/// A partition with a 10-minute limit (a job asking for more stays pending, as on real clusters).
pub const SHORT_PARTITION: &str = "short";

/// Bound on munged creating its socket.
const MUNGED_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on slurmctld answering and slurmd registering `node1` as idle (a loaded 2-core machine).
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);

/// The per-test controller, node and munge daemons; all stopped, and their files removed, on drop.
pub struct Slurm {
    slurmd: Option<Child>,
    slurmctld: Option<Child>,
    munged: Option<Child>,
    /// The compute node's namespace (dropped after the daemons: it kills what is left in it).
    pub node: Netns,
    /// `/etc/netns/NS` directories made for the login host and the node.
    etc: Vec<PathBuf>,
    /// The login host's namespace name, to run client commands there.
    login_ns: String,
    /// The login user's HOME, as its SSH sessions have it.
    home: PathBuf,
    /// The node's address on the login ─ node link.
    pub node_ip: String,
    dir: tempfile::TempDir,
}

impl Slurm {
    /// Adds `node1` to `t`, starts munged, slurmctld (in the login host's namespace) and slurmd
    /// (in the node's), and waits until the node is idle. Restarts the login host's sshd so
    /// that SSH sessions see `/etc/slurm/slurm.conf` and the node's name.
    pub fn start(t: &mut Topology) -> Slurm {
        for daemon in [
            "/usr/sbin/munged",
            "/usr/sbin/slurmctld",
            "/usr/sbin/slurmd",
        ] {
            assert!(
                Path::new(daemon).exists(),
                "{daemon} is missing: run scripts/install-deps as root"
            );
        }
        // The bind mount needs its target; Debian's slurm packages create it.
        fs::create_dir_all("/etc/slurm").expect("/etc/slurm");
        let login_ip = t.addrs.ip(5, 1);
        let node_ip = t.addrs.ip(5, 2);
        let node = Netns::new(NODE);
        Netns::link(&t.login, &login_ip, &node, &node_ip);

        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut slurm = Slurm {
            slurmd: None,
            slurmctld: None,
            munged: None,
            node,
            etc: Vec::new(),
            login_ns: t.login.name().to_string(),
            home: t.login_home.path(),
            node_ip: node_ip.clone(),
            dir,
        };
        slurm.start_munged();
        let hosts = format!("127.0.0.1 localhost\n{login_ip} {LOGIN_HOST}\n{node_ip} {NODE}\n");
        let conf = slurm.write_conf(&login_ip, &node_ip);
        for ns in [t.login.name().to_string(), slurm.node.name().to_string()] {
            let etc = PathBuf::from("/etc/netns").join(&ns);
            slurm.etc.push(etc.clone());
            fs::create_dir_all(etc.join("slurm")).expect("/etc/netns/NS/slurm");
            fs::write(etc.join("hosts"), &hosts).expect("hosts");
            for name in ["slurm.conf", "cgroup.conf"] {
                fs::copy(conf.join(name), etc.join("slurm").join(name)).expect("copy slurm conf");
            }
        }
        t.sshd.restart(&t.login);

        slurm.slurmctld = Some(slurm.spawn_daemon(&t.login, LOGIN_HOST, "slurmctld -D -i"));
        slurm.slurmd = Some(slurm.spawn_daemon(&slurm.node, NODE, "slurmd -D"));
        slurm.wait_node_idle();
        slurm
    }

    /// The directory of this test's Slurm files.
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// munged with a fresh key and a socket of its own; its directory must be 0755 for clients.
    fn start_munged(&mut self) {
        let munge = self.path("munge");
        fs::create_dir(&munge).expect("munge dir");
        fs::set_permissions(&munge, fs::Permissions::from_mode(0o755)).expect("chmod munge");
        let mut key = vec![0u8; 1024];
        std::io::Read::read_exact(
            &mut fs::File::open("/dev/urandom").expect("/dev/urandom"),
            &mut key,
        )
        .expect("random munge key");
        let key_path = munge.join("munge.key");
        fs::write(&key_path, key).expect("munge key");
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o400)).expect("chmod key");
        let log = fs::File::create(self.path("munged.log")).expect("munged.log");
        let child = Command::new("/usr/sbin/munged")
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", self.munge_socket().display()))
            .arg(format!("--key-file={}", key_path.display()))
            .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
            .arg(format!(
                "--seed-file={}",
                munge.join("munged.seed").display()
            ))
            .arg(format!("--log-file={}", self.path("munged.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start munged");
        self.munged = Some(child);
        let deadline = Instant::now() + MUNGED_START_TIMEOUT;
        while !self.munge_socket().exists() {
            if let Some(Ok(Some(status))) = self.munged.as_mut().map(Child::try_wait) {
                panic!("munged exited ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "munged did not start:\n{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    fn munge_socket(&self) -> PathBuf {
        self.path("munge/munge.socket")
    }

    /// Writes slurm.conf and cgroup.conf into `DIR/etc` (copied to both namespaces' /etc).
    fn write_conf(&self, login_ip: &str, node_ip: &str) -> PathBuf {
        let etc = self.path("etc");
        for sub in ["etc", "ctld", "spool", "log"] {
            fs::create_dir(self.path(sub)).expect("slurm dir");
        }
        let d = self.dir.path().display();
        // proctrack/linuxproc and task/none: no cgroups (none to delegate in a test); whole
        // nodes (select/linear), so a second job waits with Reason=Resources; ended jobs stay
        // visible to `scontrol show job` for MinJobAge seconds; a job past its time limit is
        // killed 5 s after its SIGTERM (KillWait, 30 s by default).
        let conf = format!(
            "ClusterName=podtun-it\n\
             SlurmctldHost={LOGIN_HOST}({login_ip})\n\
             AuthType=auth/munge\nCredType=cred/munge\n\
             AuthInfo=socket={socket}\n\
             SlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort=6817\nSlurmdPort=6818\n\
             StateSaveLocation={d}/ctld\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/ctld/slurmctld.pid\nSlurmdPidFile={d}/spool/slurmd.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SelectType=select/linear\nSchedulerType=sched/backfill\n\
             MinJobAge=300\nReturnToService=2\nMpiDefault=none\nMailProg=/bin/true\n\
             KillWait=5\n\
             JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             NodeName={NODE} NodeAddr={node_ip} CPUs=1 State=UNKNOWN\n\
             PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP\n\
             PartitionName={SHORT_PARTITION} Nodes={NODE} MaxTime=10 State=UP\n",
            socket = self.munge_socket().display(),
        );
        fs::write(etc.join("slurm.conf"), conf).expect("slurm.conf");
        fs::write(
            etc.join("cgroup.conf"),
            "CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n",
        )
        .expect("cgroup.conf");
        etc
    }

    /// Starts `command` (a daemon in the foreground) in `ns` under `hostname`, logging to
    /// `DIR/log/NAME.out`.
    fn spawn_daemon(&self, ns: &Netns, hostname: &str, command: &str) -> Child {
        let name = command.split(' ').next().unwrap_or(command);
        let out = fs::File::create(self.path(&format!("log/{name}.out"))).expect("daemon log");
        ns.command("unshare")
            .args(["--uts", "sh", "-c"])
            .arg(format!("hostname {hostname} && exec {command}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .current_dir("/")
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"))
    }

    /// Waits until slurmctld answers and slurmd has registered the node as idle.
    fn wait_node_idle(&mut self) {
        let deadline = Instant::now() + CLUSTER_START_TIMEOUT;
        loop {
            let state = self
                .command("sinfo", &["-h", "-n", NODE, "-o", "%T"])
                .output();
            if let Ok(out) = state {
                if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                    return;
                }
            }
            let exited = [&mut self.slurmctld, &mut self.slurmd]
                .into_iter()
                .flatten()
                .find_map(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!("a Slurm daemon exited ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE} not idle within {CLUSTER_START_TIMEOUT:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }

    /// `PROGRAM ARGS` on the login host as [`LOGIN_USER`], with its HOME, in `/` (where an SSH
    /// session of that user starts).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        self.command_as(LOGIN_USER, &self.home, program, args)
    }

    /// `PROGRAM ARGS` on the login host as `user` with HOME `home`, in `/`.
    pub fn command_as(&self, user: &str, home: &Path, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.login_ns, "setpriv"])
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={user}"))
            .args(["--clear-groups", "env"])
            .arg(format!("HOME={}", home.display()))
            .arg(program)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `PROGRAM ARGS` as [`Slurm::command`] does; its stdout, or a panic with its output.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `squeue`'s `STATE NODELIST` of job `id`, or `None` once squeue no longer lists it.
    pub fn squeue(&self, id: &str) -> Option<String> {
        let out = self.run("squeue", &["-h", "-j", id, "-o", "%T %N"]);
        let line = out.trim();
        (!line.is_empty()).then(|| line.to_string())
    }

    /// `JobState=… Reason=…` of job `id` as `scontrol show job -o` prints it (ended jobs too).
    pub fn job_state(&self, id: &str) -> String {
        let line = self.run("scontrol", &["show", "job", "-o", id]);
        line.split_whitespace()
            .filter(|f| f.starts_with("JobState=") || f.starts_with("Reason="))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What the daemons logged so far (for assertion messages).
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in [
            "munged.log",
            "log/slurmctld.out",
            "log/slurmctld.log",
            "log/slurmd.out",
            "log/slurmd.log",
        ] {
            let body = fs::read_to_string(self.path(name)).unwrap_or_default();
            let tail: Vec<&str> = body.lines().rev().take(30).collect();
            text.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaped.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Slurm {
    fn drop(&mut self) {
        for child in [&mut self.slurmd, &mut self.slurmctld]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        // Job steps and their programs outlive slurmd: nothing outlives the test.
        self.node.signal_all("KILL");
        if let Some(munged) = self.munged.as_mut() {
            stop(munged);
        }
        for etc in &self.etc {
            let _ = fs::remove_dir_all(etc);
        }
    }
}

/// The `jpserver-PID.json` files in `dir`, parsed.
pub fn jpservers(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("jpserver-") && name.ends_with(".json")
        })
        .filter_map(|p| fs::read_to_string(p).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}
