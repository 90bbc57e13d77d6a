//! podtun's own port-forward driver and its warm pool against the test cluster's redis pod.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use podtun::cluster::client::{self, Cluster, ClusterRef};
use podtun::cluster::pool::{Pool, Warmth, Warmup, POOL_SIZE, WARM_TTL};
use podtun::cluster::{forward, wsforward};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::{cluster, pattern, wait_until};

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
/// Bound on one redis call or one stream ending.
const CALL: Duration = Duration::from_secs(20);
/// Bound on the pool filling up or a pod coming back.
const SETTLE: Duration = Duration::from_secs(30);

/// The test cluster with redis Ready, and podtun's client for namespace `demo`.
async fn start() -> (cluster::Cluster, Cluster) {
    let c = cluster::start(REDIS).await;
    c.ready("demo", "redis").await;
    let cluster_ref = ClusterRef {
        kubeconfig: Some(c.kubeconfig().to_path_buf()),
        namespace: Some("demo".into()),
        ..ClusterRef::default()
    };
    let kube = client::connect(&cluster_ref).await.unwrap();
    (c, kube)
}

/// A RESP client over any stream (here a `PodStream`).
struct Resp<S>(BufReader<S>);

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Resp<S> {
    fn new(stream: S) -> Self {
        Resp(BufReader::with_capacity(1 << 16, stream))
    }

    /// `CMD args…` and its reply: a status/integer/error line, or a bulk string.
    async fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        tokio::time::timeout(CALL, self.call_unbounded(args))
            .await
            .expect("redis answered in time")
            .expect("redis call")
    }

    async fn call_unbounded(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        let conn = self.0.get_mut();
        conn.write_all(&req).await?;
        conn.flush().await?;
        let mut line = String::new();
        if self.0.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        let Some(len) = line.strip_prefix('$') else {
            return Ok(line.as_bytes().to_vec());
        };
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        let mut data = vec![0u8; len + 2];
        self.0.read_exact(&mut data).await?;
        data.truncate(len);
        Ok(data)
    }
}

/// A pool for redis whose first connection has been made and whose refill is in.
async fn warm_pool(kube: &Cluster) -> Pool {
    let pool = Pool::new(kube.clone(), 6379, WARM_TTL, Warmup::SharedUpgrade);
    // An empty pool starts a refill and waits for it rather than paying a second upgrade.
    let (stream, _) = pool.take("redis").await.unwrap();
    assert_eq!(Resp::new(stream).call(&[b"PING"]).await, b"+PONG");
    // The refill's pairs, but the one the first connection got.
    wait_until("the pool fills", SETTLE, || pool.ready() == POOL_SIZE - 1).await;
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_value_round_trips_byte_exact_through_one_pod_stream() {
    let (_c, kube) = start().await;
    let mut streams = wsforward::open(&kube, "redis", 6379, 1, true)
        .await
        .unwrap();
    let mut r = Resp::new(streams.pop().unwrap());
    let value = pattern(64 << 20);
    let t = Instant::now();
    assert_eq!(r.call(&[b"SET", b"big", &value]).await, b"+OK");
    let set = t.elapsed();
    let t = Instant::now();
    let back = r.call(&[b"GET", b"big"]).await;
    let get = t.elapsed();
    eprintln!("64 MiB through one PodStream: SET {set:?}, GET {get:?}");
    assert!(
        back == value,
        "64 MiB came back different ({} bytes)",
        back.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_warm_pairs_to_the_same_port_are_independent_connections() {
    let (c, kube) = start().await;
    let before = c.tc.portforward_upgrades();
    let streams = wsforward::open(&kube, "redis", 6379, 8, false)
        .await
        .unwrap();
    assert_eq!(
        c.tc.portforward_upgrades() - before,
        1,
        "one upgrade for 8 pairs"
    );
    let mut conns = Vec::new();
    for s in streams {
        assert!(s.claim(), "a fresh pair is alive");
        conns.push(Resp::new(s));
    }
    // Every pair is its own redis client: its own id, its own answers, in any order.
    let mut ids = HashSet::new();
    for r in conns.iter_mut().rev() {
        assert_eq!(r.call(&[b"PING"]).await, b"+PONG");
        ids.insert(r.call(&[b"CLIENT", b"ID"]).await);
    }
    assert_eq!(ids.len(), 8, "8 distinct redis connections: {ids:?}");
    drop(conns.remove(3));
    for r in &mut conns {
        assert_eq!(
            r.call(&[b"PING"]).await,
            b"+PONG",
            "dropping one pair spares the others"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pair_still_works_after_idling() {
    let (_c, kube) = start().await;
    let pool = warm_pool(&kube).await;
    // The point is idleness itself: a bounded wait, longer than the 5 s this must survive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (stream, warmth) = pool.take("redis").await.unwrap();
    assert_eq!(warmth, Warmth::Warm);
    assert_eq!(Resp::new(stream).call(&[b"PING"]).await, b"+PONG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_costs_fewer_upgrades_than_connections() {
    let (c, kube) = start().await;
    let pool = warm_pool(&kube).await;
    const CONNS: u64 = 24;
    let before = c.tc.portforward_upgrades();
    let mut warm = 0;
    for _ in 0..CONNS {
        let (stream, warmth) = pool.take("redis").await.unwrap();
        warm += u64::from(warmth == Warmth::Warm);
        assert_eq!(Resp::new(stream).call(&[b"PING"]).await, b"+PONG");
    }
    let upgrades = c.tc.portforward_upgrades() - before;
    eprintln!("{CONNS} connections through a warm pool: {upgrades} upgrades, {warm} warm");
    assert!(
        upgrades < CONNS,
        "{upgrades} upgrades for {CONNS} connections"
    );
    assert!(
        warm > CONNS / 2,
        "only {warm} of {CONNS} connections were warm"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_pod_restart_take_never_returns_a_dead_pair() {
    let (c, kube) = start().await;
    let pool = warm_pool(&kube).await;
    let restarts = || {
        let pod = c.tc.pod("demo", "redis").unwrap();
        let statuses = pod.status.unwrap().container_statuses.unwrap_or_default();
        statuses.first().map_or(0, |s| s.restart_count)
    };
    let before = restarts();
    c.tc.restart_pod("demo", "redis").await.unwrap();
    wait_until("redis restarts", SETTLE, || restarts() > before).await;
    c.ready("demo", "redis").await;
    // Every connection works on its first try: the old process's pairs are never handed out.
    for _ in 0..POOL_SIZE + 2 {
        let (stream, _) = pool.take("redis").await.unwrap();
        let mut r = Resp::new(stream);
        let reply = tokio::time::timeout(CALL, r.call_unbounded(&[b"PING"])).await;
        assert_eq!(reply.unwrap().unwrap(), b"+PONG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_or_a_missing_pod_says_so() {
    let (_c, kube) = start().await;
    // Nothing listens on 6380 in the pod: the kubelet's words come through the error future.
    let streams = wsforward::open(&kube, "redis", 6380, 1, true)
        .await
        .unwrap();
    let refused = tokio::time::timeout(CALL, streams[0].error())
        .await
        .unwrap();
    let refused = refused.expect("an error on the error channel");
    assert!(refused.contains("connection refused"), "{refused}");

    // Through `forward`, as a connection would go: the error names the pod and the port.
    let pool = Pool::new(kube.clone(), 6380, WARM_TTL, Warmup::SharedUpgrade);
    let (client, _peer) = tokio::io::duplex(1024);
    let err = tokio::time::timeout(CALL, forward::forward(&pool, "redis", client))
        .await
        .unwrap()
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("port-forward to `demo/redis:6380` failed"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");

    let Err(err) = wsforward::open(&kube, "nope", 6379, 1, true).await else {
        panic!("a port-forward to a missing pod fails");
    };
    assert!(
        format!("{err:#}").contains("pod `demo/nope` is gone"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_port_forwards_end_open_streams_and_the_next_take_works() {
    let (c, kube) = start().await;
    let pool = warm_pool(&kube).await;
    // A warm pair in use; its siblings wait in the pool on the same WebSocket.
    let (stream, warmth) = pool.take("redis").await.unwrap();
    assert_eq!(warmth, Warmth::Warm);
    let mut r = Resp::new(stream);
    assert_eq!(r.call(&[b"PING"]).await, b"+PONG");

    c.tc.drop_portforwards().await;
    let ended = tokio::time::timeout(CALL, r.0.read(&mut [0; 16])).await;
    match ended.expect("the stream ends when its WebSocket is dropped") {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{n} bytes from a dropped port-forward"),
    }
    assert!(!r.0.get_ref().is_alive());

    // The dead siblings are not handed out: the next stream works on its first try.
    let (stream, _) = pool.take("redis").await.unwrap();
    assert!(stream.is_alive());
    assert_eq!(Resp::new(stream).call(&[b"PING"]).await, b"+PONG");
}
