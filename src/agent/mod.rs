//! The login-host side of `--via`: `podtun agent`, started by the laptop over an SSH exec
//! channel.
//!
//! stdin carries the laptop's request (one JSON line), stdout only protocol events (one JSON
//! object per line, flushed each time), stderr the logs. The agent does the cluster work and
//! exposes one private Unix socket per forwarded port ([`socket`]); the laptop reaches them with
//! `direct-streamlocal@openssh.com` channels, or through `podtun agent pipe SOCKET` ([`pipe`]).
//! It ends when its stdin closes (the laptop went away), on SIGTERM/SIGHUP, or when the target
//! is lost, and removes its sockets on every way out.

pub mod pipe;
pub mod socket;

use std::future::Future;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::cli::AgentArgs;
use crate::cluster::discover::Preset;
use crate::cluster::tunnel::{Spec, Tunnel};
use crate::error::{hint_of, hinted, UsageError};
use crate::proto::wire::{
    Candidates, Check, ClusterEvent, Hello, Kind, Pick, Request, MUX_OPEN, PROTOCOL, STREAM_OPEN,
    VERSION,
};

/// How long open connections may finish once the agent is told to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Bound on the laptop's first line (it sends it as soon as it sees our `hello`).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// Missed heartbeats after which the agent gives up on the laptop.
const HEARTBEATS_MISSED: u32 = 3;

/// Bound on the user's choice among several pods.
const PICK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The laptop's answers, read off stdin.
type Answers = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Pick>>>;

/// Longest first line accepted from the laptop.
const MAX_HELLO: u64 = 64 * 1024;

/// Runs `podtun agent [pipe SOCKET]` until it is done or `shutdown` resolves.
pub async fn run(args: &AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match args.rest.as_slice() {
        [] => serve(shutdown).await,
        [cmd, socket] if cmd == "pipe" => pipe::run(Path::new(socket)).await,
        other => Err(UsageError(format!(
            "unknown agent command `{}` (expected nothing, or `pipe SOCKET`)",
            other.join(" ")
        ))
        .into()),
    }
}

/// Writes protocol events on stdout. A failed write means the laptop went away: it stops the
/// agent.
struct Events {
    stop: CancellationToken,
}

impl Events {
    fn emit(&self, event: &ClusterEvent) {
        let line = match serde_json::to_string(event) {
            Ok(line) => line,
            Err(e) => {
                warn!(%e, "could not encode an event");
                return;
            }
        };
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            debug!(%e, "stdout is closed; the laptop went away");
            self.stop.cancel();
        }
    }

    /// Reports `err` to the laptop, and returns it as the process's error (exit code 1).
    fn fail(&self, err: anyhow::Error) -> anyhow::Error {
        self.emit(&ClusterEvent::from_error(&err));
        // Keep the text and the hint for stderr, but not the kind: any agent failure exits 1.
        let text = anyhow!("{err:#}");
        match hint_of(&err) {
            Some(hint) => hinted(text, hint),
            None => text,
        }
    }
}

/// The control loop: hello, request, cluster, sockets, events, until told to stop.
async fn serve(shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let events = Events { stop: stop.clone() };
    events.emit(&ClusterEvent::Hello {
        version: VERSION.to_string(),
        protocol: PROTOCOL,
    });
    let (first, first_rx) = oneshot::channel();
    let heard = Arc::new(AtomicU64::new(0));
    let (answers_tx, answers) = mpsc::unbounded_channel();
    read_stdin(first, answers_tx, stop.clone(), heard.clone());
    let hello = read_hello(first_rx).await.map_err(|e| events.fail(e))?;
    if let Some(secs) = hello.heartbeat_secs.filter(|s| *s > 0) {
        tokio::spawn(watch_heartbeat(
            Duration::from_secs(secs),
            heard,
            stop.clone(),
        ));
    }
    let signals = {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = shutdown => info!("stopping on a signal"),
                () = hangup() => info!("stopping on SIGHUP"),
                () = stop.cancelled() => {}
            }
            stop.cancel();
        }
    };
    let answers = Arc::new(tokio::sync::Mutex::new(answers));
    let work = async {
        match hello.kind {
            Kind::Forward => forward(&hello.request, &events, &answers, &stop).await,
            Kind::Doctor => {
                let emit = |check: Check| events.emit(&ClusterEvent::Check(check));
                crate::cluster::doctor::run(&hello.request, &emit).await;
                Ok(())
            }
        }
    };
    tokio::pin!(work);
    let finished = tokio::select! {
        res = &mut work => Some(res),
        () = signals => None,
    };
    let result = match finished {
        Some(res) => res,
        // Told to stop: the work winds down on its own (grace for open connections).
        None => work.await,
    };
    result.map_err(|e| events.fail(e))
}

/// Waits for the laptop's first line and checks it.
async fn read_hello(first: oneshot::Receiver<std::io::Result<String>>) -> anyhow::Result<Hello> {
    let line = tokio::time::timeout(HELLO_TIMEOUT, first)
        .await
        .map_err(|_| {
            anyhow!(
                "the laptop sent no request within {}s",
                HELLO_TIMEOUT.as_secs()
            )
        })?
        .context("the stdin reader ended early")?
        .context("could not read the laptop's request")?;
    if line.is_empty() {
        anyhow::bail!("the laptop closed the connection before sending its request");
    }
    parse_hello(&line)
}

/// Parses the first line; the version is checked before the request, whose shape may differ
/// between versions.
fn parse_hello(line: &str) -> anyhow::Result<Hello> {
    let mismatch = |laptop: String| {
        hinted(
            anyhow!("this agent runs podtun {VERSION} with protocol {PROTOCOL}, which the laptop does not speak"),
            format!("the laptop runs {laptop}; install the same version on the login host or let podtun upload it"),
        )
    };
    let value: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| {
        mismatch(format!(
            "a podtun whose request is not understood here ({e})"
        ))
    })?;
    let v = value.get("v").and_then(serde_json::Value::as_u64);
    if v != Some(u64::from(PROTOCOL)) {
        let version = value.get("version").and_then(serde_json::Value::as_str);
        let laptop = match (version, v) {
            (Some(version), Some(v)) => format!("podtun {version} with protocol {v}"),
            (None, Some(v)) => format!("podtun with protocol {v}"),
            (_, None) => "a podtun without a protocol version".to_string(),
        };
        return Err(mismatch(laptop));
    }
    serde_json::from_value(value).map_err(|e| {
        mismatch(format!(
            "a podtun with protocol {PROTOCOL} whose request is not understood here ({e})"
        ))
    })
}

/// Reads stdin on a thread of its own (tokio's stdin is a blocking thread too; the exit ends
/// it): the first line goes to `first`, then each line is a heartbeat (empty) or an answer
/// (a [`Pick`], sent to `answers`); the end of stdin stops the agent.
fn read_stdin(
    first: oneshot::Sender<std::io::Result<String>>,
    answers: mpsc::UnboundedSender<Pick>,
    stop: CancellationToken,
    heard: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        let read = (&mut stdin)
            .take(MAX_HELLO)
            .read_line(&mut line)
            .map(|_| line);
        first.send(read).ok();
        loop {
            let mut line = String::new();
            match (&mut stdin).take(MAX_HELLO).read_line(&mut line) {
                Ok(0) => {
                    info!("stdin closed: the laptop went away");
                    break;
                }
                // Any line (heartbeats are empty ones): the laptop is still there.
                Ok(_) => {
                    heard.fetch_add(1, Ordering::Relaxed);
                    let text = line.trim();
                    if text.is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Pick>(text) {
                        Ok(pick) => {
                            answers.send(pick).ok();
                        }
                        Err(e) => warn!(%e, "unreadable line from the laptop"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    info!(%e, "stdin failed: the laptop went away");
                    break;
                }
            }
        }
        stop.cancel();
    });
}

/// Stops the agent when the laptop's heartbeats stop: a link that died without a FIN leaves
/// sshd (without ClientAlive) and so the agent waiting for hours otherwise.
async fn watch_heartbeat(every: Duration, heard: Arc<AtomicU64>, stop: CancellationToken) {
    let mut seen = heard.load(Ordering::Relaxed);
    let mut silent = Duration::ZERO;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = heard.load(Ordering::Relaxed);
        if now == seen {
            silent += every;
        } else {
            (seen, silent) = (now, Duration::ZERO);
        }
        if silent >= every * HEARTBEATS_MISSED {
            info!(
                silent_secs = silent.as_secs(),
                "no heartbeat from the laptop: the link is gone"
            );
            stop.cancel();
            return;
        }
    }
}

/// Resolves on SIGHUP (the SSH session hung up).
async fn hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            hup.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Brings the cluster side up, listens, reports, and serves until `stop` or a failure.
async fn forward(
    req: &Request,
    events: &Events,
    answers: &Answers,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let spec = Spec::from_request(req)?;
    let preset = spec.preset;
    let progress = |m: &str| {
        events.emit(&ClusterEvent::Progress {
            message: m.to_string(),
        })
    };
    // Several pods and no TARGET: the laptop's terminal chooses.
    let choose = |offered: Candidates| -> BoxFuture<'static, anyhow::Result<String>> {
        events.emit(&ClusterEvent::Candidates(offered.clone()));
        let answers = answers.clone();
        Box::pin(async move {
            let answer =
                tokio::time::timeout(PICK_TIMEOUT, async { answers.lock().await.recv().await })
                    .await;
            match answer {
                Ok(Some(Pick { pick: Some(name) })) => Ok(name),
                Ok(Some(Pick { pick: None })) => {
                    let sub = crate::cluster::pick::subcommand(&offered.preset);
                    Err(crate::cluster::pick::several(&offered, &|name| {
                        format!("podtun {sub} {name} --via …")
                    }))
                }
                Ok(None) => Err(anyhow!("the laptop went away before choosing a pod")),
                Err(_) => Err(anyhow!(
                    "no pod was chosen within {}s",
                    PICK_TIMEOUT.as_secs()
                )),
            }
        })
    };
    let tunnel = tokio::select! {
        tunnel = Tunnel::start_with(&req.cluster, spec, &progress, &choose) => tunnel?,
        () = stop.cancelled() => return Ok(()),
    };
    events.emit(&tunnel.resolved_event());
    // Jupyter's URL first (a server stuck before it has no port either, and its log says
    // why), then a listener on every port; the laptop hears of the URL once it listens.
    let ready = async {
        let jupyter = match preset {
            Preset::Jupyter => Some(tunnel.jupyter(&progress).await?),
            _ => None,
        };
        tunnel.wait_listening(&progress).await?;
        Ok::<_, anyhow::Error>(jupyter)
    };
    let jupyter = tokio::select! {
        ready = ready => ready?,
        () = stop.cancelled() => return Ok(()),
    };

    let uid = socket::own_uid()?;
    let dir = socket::private_dir(uid)?;
    socket::remove_stale(&dir).await;
    let (mut files, listeners) = socket::bind(&dir, tunnel.ports.len())?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    for (listener, port) in listeners.into_iter().zip(&tunnel.ports) {
        let (tunnel, remote) = (tunnel.clone(), port.remote);
        let listener = socket::Private { listener, uid };
        let stop = cancel.clone();
        let streams = tracker.clone();
        crate::net::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
            let (tunnel, stop, streams) = (tunnel.clone(), stop.clone(), streams.clone());
            async move {
                match opened(conn, &stop).await? {
                    Opened::Stream(conn) => tunnel.forward(remote, conn).await.map(|_| ()),
                    Opened::Mux(conn) => {
                        crate::proto::mux::serve(conn, &stop, |stream| {
                            let tunnel = tunnel.clone();
                            streams.spawn(
                                async move {
                                    if let Err(e) = tunnel.forward(remote, stream).await {
                                        debug!("connection ended: {e:#}");
                                    }
                                }
                                .in_current_span(),
                            );
                        })
                        .await;
                        Ok(())
                    }
                    Opened::Unused => Ok(()),
                }
            }
        });
    }
    let sockets = files
        .paths()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    info!(?sockets, "listening");
    events.emit(&ClusterEvent::Listening { sockets });

    let follow = async {
        if let Some(jupyter) = jupyter {
            events.emit(&ClusterEvent::Token(jupyter));
        }
        let emit = |ev: ClusterEvent| events.emit(&ev);
        tunnel.supervise(&emit).await
    };
    let result = tokio::select! {
        res = follow => res,
        () = stop.cancelled() => Ok(()),
    };
    // Stop accepting; the listeners are gone, so their files go too. Open connections get a
    // short grace.
    cancel.cancel();
    files.remove();
    crate::net::shutdown::drain(&cancel, &tracker, SHUTDOWN_GRACE).await;
    result
}

/// What a connection to an agent socket turned out to be, by its first byte.
#[derive(Debug)]
enum Opened<C> {
    /// [`STREAM_OPEN`]: one connection to the pod.
    Stream(C),
    /// [`MUX_OPEN`]: many, multiplexed.
    Mux(C),
    /// Closed (or the agent stopped) before its first byte.
    Unused,
}

/// Waits for a new socket connection's first byte. The pod side is opened only after it.
async fn opened<C>(mut conn: C, stop: &CancellationToken) -> anyhow::Result<Opened<C>>
where
    C: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    let read = tokio::select! {
        read = conn.read(&mut first) => read.context("could not read the connection's first byte")?,
        () = stop.cancelled() => return Ok(Opened::Unused),
    };
    match (read, first[0]) {
        (0, _) => Ok(Opened::Unused),
        (_, STREAM_OPEN) => Ok(Opened::Stream(conn)),
        (_, MUX_OPEN) => Ok(Opened::Mux(conn)),
        (_, other) => Err(anyhow!(
            "a connection to the agent's socket began with byte {other:#04x}, not podtun's; closed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn a_request_of_another_protocol_is_refused_with_a_hint() {
        let err = parse_hello(r#"{"v":99,"version":"9.9.9","request":{}}"#).unwrap_err();
        let hint = hint_of(&err).unwrap();
        assert!(
            hint.contains("the laptop runs podtun 9.9.9 with protocol 99"),
            "{hint}"
        );
        assert!(hint.contains("install the same version"), "{hint}");
        let err = parse_hello("Welcome to the login host!").unwrap_err();
        assert!(hint_of(&err).is_some());
    }

    #[tokio::test]
    async fn a_socket_connection_waits_for_the_laptops_first_byte() {
        let stop = CancellationToken::new();
        // In use: the byte is taken, what follows is left for the pod.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"+PING\r\n").await.unwrap();
        let Opened::Stream(mut conn) = opened(agent, &stop).await.unwrap() else {
            panic!("a single stream");
        };
        let mut rest = [0u8; 6];
        conn.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"PING\r\n");
        // Closed before its first byte: nothing to forward.
        let (laptop, agent) = tokio::io::duplex(64);
        drop(laptop);
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Unused
        ));
        // Multiplexed.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"*").await.unwrap();
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Mux(_)
        ));
        // Another protocol: refused.
        let (mut laptop, agent) = tokio::io::duplex(64);
        laptop.write_all(b"PING\r\n").await.unwrap();
        let err = opened(agent, &stop).await.unwrap_err();
        assert!(format!("{err:#}").contains("0x50"), "{err:#}");
        // Idle when the agent stops: let go at once.
        let (_laptop, agent) = tokio::io::duplex(64);
        stop.cancel();
        assert!(matches!(
            opened(agent, &stop).await.unwrap(),
            Opened::Unused
        ));
    }

    #[test]
    fn a_request_of_our_protocol_is_read() {
        let line = r#"{"v":3,"request":{"target":"pod/redis","namespace":"demo","preset":"redis","timeout_secs":5}}"#;
        let hello = parse_hello(line).unwrap();
        assert_eq!(hello.request.target, "pod/redis");
        assert_eq!(hello.request.cluster.namespace.as_deref(), Some("demo"));
    }
}
