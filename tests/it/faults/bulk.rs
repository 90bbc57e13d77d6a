//! 1 GiB through the forward to a pod that hashes what it gets: the sha256 on both ends must
//! be equal, alone and while a second connection is reset over and over next to it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{report, start_sink};
use crate::common::podtun::Podtun;
use crate::common::{cluster, pattern};

/// What goes through: 1 GiB.
const BULK: u64 = 1 << 30;

/// The transfer alone, for comparison.
const BASELINE: u64 = 128 << 20;

/// Bound on one 1 GiB transfer: a debug build on both ends of the port-forward moves 8-13 MB/s
/// on 2 shared cores (126 s measured with the other fault tests running next to it).
const BULK_TIMEOUT: Duration = Duration::from_secs(240);

fn rate(bytes: u64, took: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / took.as_secs_f64() / 1e6)
}

/// Sends `len` bytes (length-prefixed) to the sink at `addr`, hashing them on the way; returns
/// the local hex sha256 and the sink's answer line (`HEX COUNT`).
async fn send_hashed(addr: &str, len: u64) -> (String, String) {
    // A period (1 MiB + 7) that no frame or buffer size divides, so a shifted, dropped or
    // repeated chunk changes the hash.
    let block = pattern((1 << 20) + 7);
    let mut conn = TcpStream::connect(addr).await.expect("connect to the sink");
    conn.set_nodelay(true).expect("nodelay");
    let (rd, mut wr) = conn.split();
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    wr.write_all(&len.to_be_bytes()).await.expect("send length");
    let (mut left, mut at) = (len, 0usize);
    while left > 0 {
        let take = (block.len() - at).min(256 << 10).min(left as usize);
        let chunk = &block[at..at + take];
        wr.write_all(chunk).await.expect("send bulk data");
        sha.update(chunk);
        left -= take as u64;
        at = (at + take) % block.len();
    }
    let mut answer = String::new();
    BufReader::new(rd)
        .read_line(&mut answer)
        .await
        .expect("read the sink's answer");
    let hex: String = sha
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, answer.trim().to_string())
}

/// Opens a connection to `addr`, sends part of a transfer, then resets it (SO_LINGER 0), in a
/// loop until `stop`; counts the resets.
async fn reset_loop(addr: String, stop: Arc<AtomicBool>, resets: Arc<AtomicU64>) {
    let junk = vec![0x5au8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = TcpStream::connect(&addr).await else {
            continue;
        };
        // Claims 1 MiB, sends 64 KiB of it, then vanishes.
        let _ = conn.write_all(&(1u64 << 20).to_be_bytes()).await;
        let _ = conn.write_all(&junk).await;
        conn.set_zero_linger().expect("SO_LINGER 0");
        drop(conn);
        resets.fetch_add(1, Ordering::Relaxed);
        // Pace the loop a little so the resets interleave with the bulk transfer instead of
        // saturating the 2 cores with upgrades.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_hashes_equal_next_to_a_connection_reset_in_a_loop() {
    let c = cluster::start(&[]).await;
    start_sink(&c).await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["forward", "sha-sink", ":7000", "-n", "fixtures"],
    );
    let (local, _) = p.ready().await;

    // A baseline alone, for the rate. (1 GiB alone takes ~95 s on a debug build of both ends of
    // the port-forward; the 1 GiB below runs next to the resets instead, which proves both.)
    let started = Instant::now();
    let (want, got) = tokio::time::timeout(BULK_TIMEOUT, send_hashed(&local, BASELINE))
        .await
        .expect("the baseline did not go through in time");
    let took = started.elapsed();
    assert_eq!(
        got,
        format!("{want} {BASELINE}"),
        "the sink hashed other bytes"
    );
    report(&format!("128 MiB alone ({})", rate(BASELINE, took)), took);

    let stop = Arc::new(AtomicBool::new(false));
    let resets = Arc::new(AtomicU64::new(0));
    let resetter = tokio::spawn(reset_loop(local.clone(), stop.clone(), resets.clone()));
    let started = Instant::now();
    let (want, got) = tokio::time::timeout(BULK_TIMEOUT, send_hashed(&local, BULK))
        .await
        .expect("1 GiB next to resets did not go through in time");
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    resetter.await.unwrap();
    assert_eq!(
        got,
        format!("{want} {BULK}"),
        "the resets disturbed the bulk transfer"
    );
    let resets = resets.load(Ordering::Relaxed);
    assert!(
        resets >= 20,
        "only {resets} resets happened during the transfer"
    );
    report(
        &format!("1 GiB next to {resets} resets ({})", rate(BULK, took)),
        took,
    );

    // The forward still serves after all that.
    let (want, got) = send_hashed(&local, 1 << 20).await;
    assert_eq!(got, format!("{want} {}", 1 << 20));
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_the_whole_chain_hashes_equal() {
    use crate::common::topology::{Shape, Topology};
    let t = Topology::start(Shape::default()).await;
    start_sink(&t.cluster).await;
    let kubeconfig = t.kubeconfig_arg();
    let bin = crate::common::podtun::bin();
    let args = [
        "forward",
        "sha-sink",
        ":7000",
        "-n",
        "fixtures",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        &kubeconfig,
        "--remote-bin",
        bin,
    ];
    let mut p = Podtun::spawn_command(t.podtun(&args));
    let (local, _) = p.ready().await;

    // laptop ─ SSH ─ agent ─ WebSocket ─ pod, from the laptop's namespace.
    let started = Instant::now();
    let addr = local.clone();
    let (want, got) = t
        .on_laptop(move || async move {
            tokio::time::timeout(BULK_TIMEOUT, send_hashed(&addr, BULK)).await
        })
        .await
        .expect("1 GiB through the whole chain did not go through in time");
    let took = started.elapsed();
    assert_eq!(got, format!("{want} {BULK}"), "the sink hashed other bytes");
    report(
        &format!("1 GiB through the whole chain ({})", rate(BULK, took)),
        took,
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}
