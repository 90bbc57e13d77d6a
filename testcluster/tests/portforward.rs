//! The WebSocket port-forward against kube-rs 5, the client podtun uses: a tiny HTTP server routes
//! `pods/portforward` to `testcluster::portforward::accept`, and "pods" are local TCP servers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;
use testcluster::portforward;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);
/// Pod ports as the client names them; the test cluster maps them to local servers.
const ECHO: u16 = 8080;
const BYE: u16 = 7000;
const REFUSED: u16 = 8888;
const PATH: &str = "/api/v1/namespaces/ns/pods/p/portforward";

/// Connections seen by a pod server: `(peer, true)` when accepted, `(peer, false)` when closed.
type Events = mpsc::UnboundedReceiver<(SocketAddr, bool)>;

struct Cluster {
    addr: SocketAddr,
    client: Client,
    /// Cancels every port-forward session (the "drop all port-forward WebSockets" knob).
    cancel: CancellationToken,
    echo_events: Events,
    /// Bound but not listening: connecting to it is refused, and nothing else can take the port.
    _refused: TcpSocket,
}

impl Cluster {
    async fn start() -> Cluster {
        let (echo, echo_events) = serve_pod(|mut conn| async move {
            let (mut rd, mut wr) = conn.split();
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        })
        .await;
        let (bye, _) = serve_pod(|mut conn| async move {
            let _ = conn.write_all(b"hello, then bye").await;
        })
        .await;
        let refused = TcpSocket::new_v4().expect("socket");
        refused
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let pods = HashMap::from([
            (ECHO, echo),
            (BYE, bye),
            (REFUSED, refused.local_addr().expect("addr")),
        ]);
        let cancel = CancellationToken::new();
        let addr = serve_api(Arc::new(pods), cancel.clone()).await;
        let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
        let client = Client::try_from(config).expect("kube client");
        Cluster {
            addr,
            client,
            cancel,
            echo_events,
            _refused: refused,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "ns")
    }

    /// A raw port-forward WebSocket made by kube-rs, for checking frames one by one. Built by
    /// hand because kube-rs's request builder refuses a port given twice.
    async fn raw(&self, ports: &[u16]) -> RawWs {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let req = Request::get(format!("{PATH}?ports={}", ports.join("%2C")))
            .body(Vec::new())
            .expect("request");
        let conn = within(self.client.connect(req)).await.expect("upgrade");
        conn.into_stream()
    }

    async fn next_echo_event(&mut self) -> (SocketAddr, bool) {
        within(self.echo_events.recv()).await.expect("echo events")
    }
}

type RawWs = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    timeout(DEADLINE, fut).await.expect("deadline passed")
}

/// A "pod" server on 127.0.0.1:0 running `handle` per connection.
async fn serve_pod<H, Fut>(handle: H) -> (SocketAddr, Events)
where
    H: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (events, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((conn, peer)) = listener.accept().await {
            let _ = events.send((peer, true));
            let (events, conn) = (events.clone(), handle(conn));
            tokio::spawn(async move {
                conn.await;
                let _ = events.send((peer, false));
            });
        }
    });
    (addr, rx)
}

/// The API server side: only `pods/portforward` of pod `ns/p`.
async fn serve_api(pods: Arc<HashMap<u16, SocketAddr>>, cancel: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (pods, cancel) = (pods.clone(), cancel.clone());
            let service = service_fn(move |req| {
                let response = route(req, pods.clone(), cancel.clone());
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
                let _ = conn.with_upgrades().await;
            });
        }
    });
    addr
}

fn route<B>(
    req: Request<B>,
    pods: Arc<HashMap<u16, SocketAddr>>,
    cancel: CancellationToken,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH || !portforward::is_upgrade_request(&req) {
        let mut not_found = Response::new(Full::new(Bytes::new()));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return not_found;
    }
    let query = req.uri().query().unwrap_or("").replace("%2C", ",");
    let ports: Vec<u16> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("ports="))
        .flat_map(|ports| ports.split(','))
        .filter_map(|port| port.parse().ok())
        .collect();
    let dial = move |port: u16| {
        let target = pods.get(&port).copied();
        async move {
            match target {
                Some(addr) => TcpStream::connect(addr).await,
                None => Err(std::io::ErrorKind::ConnectionRefused.into()),
            }
        }
    };
    match portforward::accept(req, ports, dial, cancel) {
        Ok((response, session)) => {
            tokio::spawn(session);
            response
        }
        Err(response) => response,
    }
}

/// Deterministic bytes that are not a repeating short pattern.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The next binary frame, split into channel and payload (pings and pongs skipped).
async fn next_frame(ws: &mut RawWs) -> (u8, Vec<u8>) {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Binary(frame))) => return (frame[0], frame[1..].to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

fn frame(ch: u8, payload: &[u8]) -> Message {
    let mut frame = vec![ch];
    frame.extend_from_slice(payload);
    Message::binary(frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip_of_10_mib_is_byte_exact() {
    let mut cluster = Cluster::start().await;
    let mut pf = within(cluster.pods().portforward("p", &[ECHO]))
        .await
        .expect("portforward");
    let (mut rd, mut wr) = tokio::io::split(pf.take_stream(ECHO).expect("stream"));
    let data = pattern(10 << 20);
    let send = async {
        wr.write_all(&data).await.expect("write");
    };
    let receive = async {
        let mut got = vec![0; data.len()];
        rd.read_exact(&mut got).await.expect("read");
        got
    };
    let ((), got) = within(async { tokio::join!(send, receive) }).await;
    assert!(got == data, "echoed bytes differ from the bytes sent");

    // Dropping the stream closes the WebSocket, and with it the pod connection.
    let (peer, accepted) = cluster.next_echo_event().await;
    assert!(accepted);
    drop((rd, wr));
    assert_eq!(cluster.next_echo_event().await, (peer, false));
    if let Err(err) = within(pf.join()).await {
        // kube-rs reports this after a normal close (DESIGN.md §10).
        assert!(err.to_string().contains("closing"), "{err}");
    }
}

#[tokio::test]
async fn refused_port_is_reported_on_its_error_channel_only() {
    let cluster = Cluster::start().await;
    let mut pf = within(cluster.pods().portforward("p", &[REFUSED, ECHO]))
        .await
        .expect("portforward");
    let error = within(pf.take_error(REFUSED).expect("error channel")).await;
    let error = error.expect("an error message");
    assert!(error.contains("connection refused"), "{error}");
    assert!(error.contains("port 8888"), "{error}");

    // The other port of the same upgrade is unaffected.
    let mut echo = pf.take_stream(ECHO).expect("stream");
    echo.write_all(b"still here").await.expect("write");
    let mut got = [0; 10];
    within(echo.read_exact(&mut got)).await.expect("read");
    assert_eq!(&got, b"still here");
}

#[tokio::test]
async fn refused_only_port_closes_the_websocket() {
    let cluster = Cluster::start().await;
    let mut ws = cluster.raw(&[REFUSED]).await;
    let mut frames = vec![next_frame(&mut ws).await, next_frame(&mut ws).await];
    frames.sort();
    let port = REFUSED.to_le_bytes().to_vec();
    assert_eq!(frames, vec![(0, port.clone()), (1, port)]);
    let (ch, text) = next_frame(&mut ws).await;
    assert_eq!(ch, 1);
    assert!(String::from_utf8_lossy(&text).contains("connection refused"));
    assert!(matches!(
        within(ws.next()).await,
        Some(Ok(Message::Close(_)))
    ));
}

#[tokio::test]
async fn pod_side_close_delivers_data_then_closes_the_websocket() {
    let cluster = Cluster::start().await;
    let mut pf = within(cluster.pods().portforward("p", &[BYE]))
        .await
        .expect("portforward");
    let mut stream = pf.take_stream(BYE).expect("stream");
    let mut got = Vec::new();
    within(stream.read_to_end(&mut got)).await.expect("read");
    assert_eq!(got, b"hello, then bye");
    drop(stream);
    if let Err(err) = within(pf.join()).await {
        assert!(err.to_string().contains("closing"), "{err}");
    }

    // The same on the wire: first frames, data, Close, end of the connection.
    let mut ws = cluster.raw(&[BYE]).await;
    let port = BYE.to_le_bytes().to_vec();
    let mut first = vec![next_frame(&mut ws).await, next_frame(&mut ws).await];
    first.sort();
    assert_eq!(first, vec![(0, port.clone()), (1, port)]);
    assert_eq!(next_frame(&mut ws).await, (0, b"hello, then bye".to_vec()));
    assert!(matches!(
        within(ws.next()).await,
        Some(Ok(Message::Close(_)))
    ));
    assert!(matches!(within(ws.next()).await, None | Some(Err(_))));
}

#[tokio::test]
async fn data_for_a_finished_pair_is_dropped_and_the_others_go_on() {
    let cluster = Cluster::start().await;
    let mut ws = cluster.raw(&[BYE, ECHO]).await;
    let mut frames = Vec::new();
    while !frames.contains(&(0, b"hello, then bye".to_vec())) {
        frames.push(next_frame(&mut ws).await);
    }
    ws.send(frame(0, b"too late")).await.expect("send");
    ws.send(frame(2, b"echo")).await.expect("send");
    loop {
        let (ch, payload) = next_frame(&mut ws).await;
        if ch == 2 && payload != ECHO.to_le_bytes() {
            assert_eq!(payload, b"echo");
            break;
        }
        assert!(ch == 1 || ch == 3, "unexpected frame on channel {ch}");
    }
}

#[tokio::test]
async fn same_port_twice_in_one_upgrade_gets_two_connections() {
    let mut cluster = Cluster::start().await;
    let mut ws = cluster.raw(&[ECHO, ECHO]).await;
    let port = ECHO.to_le_bytes().to_vec();
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(next_frame(&mut ws).await);
    }
    first.sort();
    let expected: Vec<(u8, Vec<u8>)> = (0..4).map(|ch| (ch, port.clone())).collect();
    assert_eq!(first, expected);
    let (a, _) = cluster.next_echo_event().await;
    let (b, _) = cluster.next_echo_event().await;
    assert_ne!(a, b, "each pair dials its own connection");

    ws.send(frame(0, b"first")).await.expect("send");
    assert_eq!(next_frame(&mut ws).await, (0, b"first".to_vec()));
    // One large client frame; the reply comes back in frames of at most 64 KiB.
    let big = pattern(4 << 20);
    ws.send(frame(2, &big)).await.expect("send");
    let mut echoed = Vec::new();
    while echoed.len() < big.len() {
        let (ch, payload) = next_frame(&mut ws).await;
        assert_eq!(ch, 2);
        assert!(payload.len() <= 64 * 1024);
        echoed.extend(payload);
    }
    assert!(echoed == big, "echoed bytes differ from the bytes sent");

    ws.send(Message::Ping(Bytes::from_static(b"alive?")))
        .await
        .expect("ping");
    match within(ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"alive?"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // A client Close frame ends both pod connections.
    ws.close(None).await.expect("close");
    let mut closed = vec![
        cluster.next_echo_event().await,
        cluster.next_echo_event().await,
    ];
    closed.sort();
    let mut expected = vec![(a, false), (b, false)];
    expected.sort();
    assert_eq!(closed, expected);
}

#[tokio::test]
async fn cancel_drops_the_connection_without_a_close_frame() {
    let mut cluster = Cluster::start().await;
    let mut ws = cluster.raw(&[ECHO]).await;
    for _ in 0..2 {
        next_frame(&mut ws).await;
    }
    ws.send(frame(0, b"ping")).await.expect("send");
    assert_eq!(next_frame(&mut ws).await, (0, b"ping".to_vec()));
    let (peer, _) = cluster.next_echo_event().await;

    cluster.cancel.cancel();
    match within(ws.next()).await {
        None | Some(Err(_)) => {}
        other => panic!("expected the connection to drop, got {other:?}"),
    }
    assert_eq!(cluster.next_echo_event().await, (peer, false));
}

#[tokio::test]
async fn handshakes_are_checked() {
    let plain = Request::get(PATH).body(()).expect("request");
    assert!(!portforward::is_upgrade_request(&plain));
    let cluster = Cluster::start().await;
    let base = format!(
        "GET {PATH}?ports=8080 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (
            format!("Sec-WebSocket-Version: 13\r\n{key}"),
            "HTTP/1.1 101",
        ),
        (
            format!(
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n{key}"
            ),
            "HTTP/1.1 400",
        ),
        ("Sec-WebSocket-Version: 13\r\n".to_string(), "HTTP/1.1 400"),
        (format!("Sec-WebSocket-Version: 8\r\n{key}"), "HTTP/1.1 400"),
    ];
    for (headers, expected) in cases {
        let mut tcp = TcpStream::connect(cluster.addr).await.expect("connect");
        tcp.write_all(format!("{base}{headers}\r\n").as_bytes())
            .await
            .expect("write");
        let mut status = [0; 12];
        within(tcp.read_exact(&mut status)).await.expect("read");
        assert_eq!(&status, expected.as_bytes(), "for {headers:?}");
    }
}
