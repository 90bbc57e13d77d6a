//! Clients that push the forward: 200 at once, request-then-EOF tools (`redis-cli` fed by a
//! pipe, `nc -N`), a connection left idle, and SIGTERM with 50 connections open.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{redis_local, report, REDIS};
use crate::common::cluster;
use crate::common::podtun::sigterm;
use crate::common::redis::Redis;

/// Bound on one client's work when many run at once on 2 cores.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The grace podtun gives open connections after SIGTERM (`laptop::run::SHUTDOWN_GRACE`).
pub const GRACE: Duration = Duration::from_secs(3);

/// Margin on top of [`GRACE`] for the process to wind down on a loaded machine.
pub const GRACE_MARGIN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections_all_get_their_value() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (p, local) = redis_local(&c, home.path()).await;
    let started = Instant::now();
    let ok = crate::common::redis::concurrent_set_get(&local, 200).await;
    report("200 concurrent SET/GET", started.elapsed());
    assert_eq!(ok, 200, "every connection round-trips its own value");
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// Runs `sh -c SCRIPT` (bounded) and returns its stdout and how long it took.
async fn sh(script: &str) -> (String, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("`{script}` did not finish within 30s"))
    .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}`: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_then_eof_clients_get_their_whole_reply() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (p, local) = redis_local(&c, home.path()).await;
    let port = local.rsplit_once(':').expect("port").1;

    let (out, _) = sh(&format!(
        "printf 'PING\\r\\nPING\\r\\n' | redis-cli -h 127.0.0.1 -p {port}"
    ))
    .await;
    assert_eq!(out, "PONG\nPONG\n", "redis-cli fed by a pipe");

    // nc -N shuts its sending side down at the end of its input: the reply must still come
    // whole, and the connection end once the pod has been quiet (podtun holds the EOF).
    let (out, took) = sh(&format!(
        "printf 'SET nc-key hello\\r\\nGET nc-key\\r\\n' | nc -N 127.0.0.1 {port}"
    ))
    .await;
    assert_eq!(out, "+OK\r\n$5\r\nhello\r\n", "nc -N with inline commands");
    report("nc -N: input EOF → connection closed", took);

    // A reply far larger than any buffer, after the client's EOF.
    let big = "0123456789abcdef".repeat(1 << 16);
    let mut r = Redis::connect(&local).await.unwrap();
    let ok = r.call(&[b"SET", b"big", big.as_bytes()]).await.unwrap();
    assert_eq!(ok.as_deref(), Some(&b"+OK"[..]));
    let (out, _) = sh(&format!("printf 'GET big\\r\\n' | nc -N 127.0.0.1 {port}")).await;
    assert_eq!(
        out.len(),
        big.len() + "$1048576\r\n\r\n".len(),
        "1 MiB reply cut short"
    );
    assert_eq!(out, format!("${}\r\n{big}\r\n", big.len()));
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_still_works_in_local_mode() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (p, local) = redis_local(&c, home.path()).await;
    let mut r = Redis::connect(&local).await.unwrap();
    let set = r.call(&[b"SET", b"idle", b"still here"]).await.unwrap();
    assert_eq!(set.as_deref(), Some(&b"+OK"[..]));
    // The real bound is 15 minutes; the test cluster has no idle timeout of its own, so this
    // is a short stand-in (10 s) for "quiet for a while"; the via test adds sshd's keepalive
    // bounds, which do cut idle links.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let got = tokio::time::timeout(Duration::from_secs(10), r.call(&[b"GET", b"idle"]))
        .await
        .expect("the idle connection answers")
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"still here"[..]));
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// Opens `n` connections to `addr`, each with one PING answered, and keeps them open.
pub async fn open_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"PING\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        tokio::time::timeout(CLIENT_TIMEOUT, conn.read_exact(&mut pong))
            .await
            .expect("PONG in time")
            .unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
        open.push(conn);
    }
    open
}

/// Every connection ends (EOF or reset) within `within`.
pub async fn all_end(open: Vec<TcpStream>, within: Duration) {
    for mut conn in open {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(within, conn.read_to_end(&mut rest))
            .await
            .expect("an open connection outlived podtun");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_fifty_open_connections_exits_0_within_the_grace() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (mut p, local) = redis_local(&c, home.path()).await;
    let open = open_connections(&local, 50).await;

    let pid = p.child.id().expect("pid");
    let signalled = Instant::now();
    assert!(sigterm(pid));
    p.wait_for("closed", GRACE + GRACE_MARGIN).await;
    let status = tokio::time::timeout(GRACE + GRACE_MARGIN, p.child.wait())
        .await
        .expect("podtun did not exit within the grace period")
        .unwrap();
    let took = signalled.elapsed();
    report("SIGTERM with 50 open connections → exit", took);
    assert_eq!(status.code(), Some(0), "exit 0 after SIGTERM");
    assert!(took < GRACE + GRACE_MARGIN, "{took:?}");
    all_end(open, Duration::from_secs(2)).await;
}
