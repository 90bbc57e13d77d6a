//! The SSH side fails (via mode, `common::topology`): the laptop's link cut for 20 s, the
//! login host's sshd restarted, a connection idle under sshd's keepalive bounds, and SIGTERM
//! with 50 connections open. The laptop keeps its port throughout, and the login host is left
//! with no agent of an old session.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::clients::{all_end, open_connections, GRACE, GRACE_MARGIN};
use super::{pong_within, report, wait_until, REDIS};
use crate::common::podtun::{sigterm, Podtun};
use crate::common::redis::Redis;
use crate::common::sshd::run;
use crate::common::topology::{Shape, Topology, LOGIN_USER};

/// sshd on the login host drops a client that answers no keepalive for 3 s: dead sessions
/// (and their agents) go quickly, and a quiet but live link must survive it.
const CLIENT_ALIVE: [&str; 2] = ["ClientAliveInterval 1", "ClientAliveCountMax 3"];

/// Bound on `reconnecting`/`ready` events after a fault (backoff 1 s → 30 s included).
const RECOVERY: Duration = Duration::from_secs(60);

/// Bound on an old session's agent and socket disappearing from the login host.
const CLEANUP: Duration = Duration::from_secs(15);

async fn topology() -> Topology {
    Topology::start(Shape {
        manifests: REDIS.to_vec(),
        login_sshd: CLIENT_ALIVE.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
}

/// The laptop's ssh config as the topology writes it, plus `extra` options for every host.
fn laptop_ssh_config(t: &Topology, extra: &str) {
    t.home.config(&format!(
        "Host *\n  User {LOGIN_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {known}\n{extra}",
        key = t.home.ssh("id_ed25519").display(),
        known = t.home.ssh("known_hosts").display(),
    ));
}

/// `podtun redis redis --via LOGIN` on the laptop with the built binary as the agent; ready.
async fn redis_via(t: &Topology) -> (Podtun, String) {
    let args = ["redis", "redis", "-n", "demo", "-p", "0"];
    let mut p = Podtun::spawn_command(t.podtun_via(&args));
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    (p, local)
}

/// The pids of the agents (not their pipes) running on the login host.
fn agent_pids(t: &Topology) -> Vec<String> {
    t.login
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
                .is_ok_and(|cmd| cmd.contains("podtun agent") && !cmd.contains("agent pipe"))
        })
        .collect()
}

/// PING through the tunnel from the laptop: `Ok(elapsed since since)` or the panic message.
async fn laptop_pong(t: &Topology, local: &str, since: Instant, within: Duration) -> Duration {
    let local = local.to_string();
    t.on_laptop(move || async move { pong_within(&local, since, within).await })
        .await
}

/// The agents and sockets of a session.
type Session = (Vec<String>, Vec<PathBuf>);

/// The old session's agent and socket are gone from the login host; one agent runs there.
async fn old_session_gone(t: &Topology, (old_agents, old_sockets): Session) {
    wait_until(
        "the old session's agent and socket are gone from the login host",
        CLEANUP,
        || {
            old_agents
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                && old_sockets.iter().all(|s| !s.exists())
        },
    )
    .await;
    let agents = agent_pids(t);
    assert_eq!(agents.len(), 1, "one agent after reconnecting: {agents:?}");
}

/// After a loss: `reconnecting`, then `ready` on the same port; new connections work, and the
/// old session's agent and socket are gone. Returns the time from `since` to `ready`.
async fn recovers(
    t: &Topology,
    p: &mut Podtun,
    local: &str,
    old: Session,
    since: Instant,
) -> Duration {
    let ev = p.wait_for("reconnecting", RECOVERY).await;
    report("fault → reconnecting", since.elapsed());
    assert!(ev["reason"].is_string(), "{ev}");
    let ready = p.wait_for("ready", RECOVERY).await;
    let took = since.elapsed();
    assert_eq!(
        ready["local"], local,
        "the same local port after reconnecting"
    );
    laptop_pong(t, local, Instant::now(), Duration::from_secs(5)).await;
    old_session_gone(t, old).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_for_20s_reconnects_on_the_same_port() {
    let t = topology().await;
    // Notice the dead link within ~3 s, as a laptop configured for flaky links would.
    laptop_ssh_config(&t, "  ServerAliveInterval 1\n  ServerAliveCountMax 3\n");
    let (mut p, local) = redis_via(&t).await;
    laptop_pong(&t, &local, Instant::now(), Duration::from_secs(5)).await;
    let old = (agent_pids(&t), t.login_home.sockets());
    assert_eq!(old.0.len(), 1, "{:?}", old.0);

    let links = run(t
        .laptop
        .command("ip")
        .args(["-o", "link", "show", "type", "veth"]));
    let dev = links
        .split_whitespace()
        .nth(1)
        .and_then(|d| d.trim_end_matches(':').split('@').next())
        .expect("the laptop's veth")
        .to_string();
    let cut = Instant::now();
    run(t.laptop.command("ip").args(["link", "set", &dev, "down"]));
    let ev = p.wait_for("reconnecting", RECOVERY).await;
    report("link down → reconnecting", cut.elapsed());
    assert!(ev["reason"].is_string(), "{ev}");

    // A connection made while the link is down waits for it (bounded at 60 s by podtun).
    let addr = local.clone();
    let waiting = std::thread::spawn({
        let laptop = t.laptop.name().to_string();
        move || waiting_ping(&laptop, &addr)
    });
    // The point of this test is a link that stays down for a while: 20 s, longer than the
    // first backoff steps and sshd's 3 s keepalive bound on the other side.
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    run(t.laptop.command("ip").args(["link", "set", &dev, "up"]));
    let up = Instant::now();
    let ready = p.wait_for("ready", RECOVERY).await;
    report("link up → ready", up.elapsed());
    assert_eq!(ready["local"], local.as_str(), "the same local port");
    let took = laptop_pong(&t, &local, up, Duration::from_secs(5)).await;
    report("link up → PONG on a new connection", took);
    report(
        "link down → ready again (the outage included)",
        cut.elapsed(),
    );
    let waited = waiting.join().expect("the waiting connection");
    assert_eq!(waited, "+PONG\r\n", "the connection made during the outage");
    old_session_gone(&t, old).await;
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// Connects from the laptop's namespace and PINGs; returns what came back (60 s bound: the
/// link wait plus the reply).
fn waiting_ping(laptop: &str, addr: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", laptop, "timeout", "70", "sh", "-c"])
        .arg(format!(
            "printf 'PING\\r\\n' | nc -N -w 70 {} {}",
            addr.rsplit_once(':').unwrap().0,
            addr.rsplit_once(':').unwrap().1
        ))
        .output()
        .expect("nc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_restart_reconnects_on_the_same_port() {
    let mut t = topology().await;
    let (mut p, local) = redis_via(&t).await;
    laptop_pong(&t, &local, Instant::now(), Duration::from_secs(5)).await;
    let old = (agent_pids(&t), t.login_home.sockets());
    assert_eq!(old.0.len(), 1, "{:?}", old.0);

    // Every sshd process of the login host: the listener and the session of this laptop.
    let sshds: Vec<String> = t
        .login
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("sshd"))
        })
        .collect();
    assert!(sshds.len() >= 2, "listener and session: {sshds:?}");
    let killed = Instant::now();
    run(std::process::Command::new("kill").arg("-KILL").args(&sshds));
    t.sshd.restart(&t.login);
    report("sshd killed → listening again", killed.elapsed());
    let took = recovers(&t, &mut p, &local, old, killed).await;
    report("sshd killed → ready", took);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_survives_sshd_keepalive_bounds() {
    let t = topology().await;
    let (p, local) = redis_via(&t).await;
    let agents = agent_pids(&t);
    let addr = local.clone();
    let got = t
        .on_laptop(move || async move {
            let mut r = Redis::connect(&addr).await.expect("connect");
            r.call(&[b"SET", b"idle", b"still here"])
                .await
                .expect("SET");
            // The real bound is 15 minutes; sshd here drops a client that misses 3 keepalives
            // 1 s apart, so 10 s of silence on the connection and on the link is a long time.
            tokio::time::sleep(Duration::from_secs(10)).await;
            tokio::time::timeout(Duration::from_secs(10), r.call(&[b"GET", b"idle"]))
                .await
                .expect("the idle connection answers")
                .expect("GET")
        })
        .await;
    assert_eq!(got.as_deref(), Some(&b"still here"[..]));
    assert_eq!(
        agent_pids(&t),
        agents,
        "the same agent: the link never dropped"
    );
    assert!(
        !t.sshd.log().contains("Timeout, client not responding"),
        "sshd gave up on the laptop:\n{}",
        t.sshd.log()
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_via_with_fifty_open_connections_leaves_nothing_behind() {
    let t = topology().await;
    let (mut p, local) = redis_via(&t).await;
    let pid = p.child.id().expect("pid");
    // `ip netns exec` execs podtun: the pid is podtun's.
    let addr = local.clone();
    let signalled = t
        .on_laptop(move || async move {
            let open = open_connections(&addr, 50).await;
            let signalled = Instant::now();
            assert!(sigterm(pid));
            all_end(open, GRACE + GRACE_MARGIN).await;
            signalled
        })
        .await;
    let status = tokio::time::timeout(
        (GRACE + GRACE_MARGIN).saturating_sub(signalled.elapsed()),
        p.child.wait(),
    )
    .await
    .expect("podtun did not exit within the grace period")
    .unwrap();
    report(
        "via: SIGTERM with 50 open connections → exit",
        signalled.elapsed(),
    );
    assert_eq!(status.code(), Some(0));
    wait_until(
        "no agent and no socket left on the login host",
        CLEANUP,
        || t.login_podtuns().is_empty() && t.login_home.sockets().is_empty(),
    )
    .await;
}
