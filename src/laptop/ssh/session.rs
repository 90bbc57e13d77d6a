//! One SSH connection ([`SshSession`]): connect through the route of hops, verify host keys,
//! authenticate, then open exec, direct-tcpip and direct-streamlocal channels.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use russh::client::{Handle, Msg};
use russh::keys::Algorithm;
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use super::channel::{Printed, Running, Stdin, Stream};
use super::config::HostConfig;
use super::handler::Client;
use super::known_hosts;
use super::options::SshOptions;
use super::prompt::Ui;
use super::route::{self, Hop, ProxyStream, Via};

/// Why a direct-streamlocal channel could not be opened.
///
/// OpenSSH (checked with 9.2) answers CONNECT_FAILED both when its policy forbids stream-local
/// forwarding (`AllowStreamLocalForwarding no`, `DisableForwarding yes`) and when nothing
/// listens at the path; only other servers say ADMINISTRATIVELY_PROHIBITED. So a [`Refused`]
/// open of a socket the agent has just reported listening means "prohibited" too: take the
/// exec fallback.
///
/// [`Refused`]: OpenError::Refused
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The server says stream-local forwarding is administratively prohibited.
    #[error("`{host}` does not allow stream-local forwarding (administratively prohibited)")]
    Prohibited {
        /// The login host, as the user named it.
        host: String,
    },
    /// The server could not connect to the socket, or (OpenSSH) refuses stream-local
    /// forwarding: its reply is the same for both.
    #[error("`{host}` could not connect to `{path}`, or does not allow stream-local forwarding")]
    Refused {
        /// The login host, as the user named it.
        host: String,
        /// The socket path asked for.
        path: String,
    },
    /// Any other failure, such as a lost connection.
    #[error("could not open a channel to `{path}` on `{host}`")]
    Failed {
        /// The login host, as the user named it.
        host: String,
        /// The socket path asked for.
        path: String,
        /// What russh reported.
        #[source]
        source: russh::Error,
    },
}

/// An authenticated connection to the last host of the route. Clones share it.
#[derive(Clone)]
pub struct SshSession {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    handle: Handle<Client>,
    /// The jump hops, first to last: held so their connections live as long as this one.
    jumps: Vec<Handle<Client>>,
    /// Cancelled when the login host's connection ends.
    closed: CancellationToken,
}

/// The russh settings every hop starts from; keepalives and key preferences are per hop.
/// The window is russh's default (2 MiB, as OpenSSH's); the packet size and the cipher order
/// follow the benchmark (BENCHMARKS.md).
pub fn client_config() -> russh::client::Config {
    let mut config = russh::client::Config {
        inactivity_timeout: None,
        nodelay: true,
        maximum_packet_size: MAX_PACKET,
        ..Default::default()
    };
    if aes_in_hardware() {
        let mut ciphers = config.preferred.cipher.to_vec();
        ciphers.sort_by_key(|name| *name != russh::cipher::AES_256_GCM);
        config.preferred.cipher = ciphers.into();
    }
    config
}

/// The largest data packet the login host may send us. russh's default (32 KiB) costs a packet,
/// a decryption and a channel message per 32 KiB; with 128 KiB, bulk transfers through `--via`
/// ran 1.05–1.95× faster, both ways, in interleaved benchmark rounds.
const MAX_PACKET: u32 = 128 * 1024;

/// Whether the CPU encrypts AES in hardware. Then AES-256-GCM goes first: both podtun and sshd
/// spend less CPU per byte on it than on chacha20-poly1305, and bulk transfers through `--via`
/// ran 1.2–1.8× faster in interleaved benchmark rounds. chacha20-poly1305 (russh's and
/// OpenSSH's first choice) stays first on CPUs without AES instructions.
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

impl SshSession {
    /// Connects to the last host of `via`, through the others as jump hosts (`ssh -J`), with
    /// each host's ProxyJump/ProxyCommand from the SSH config honoured.
    pub async fn connect(via: &[String], opts: &SshOptions) -> anyhow::Result<SshSession> {
        let hops = route::plan(via, opts).await?;
        let count = hops.len();
        let mut handles: Vec<Handle<Client>> = Vec::with_capacity(count);
        let mut closed = CancellationToken::new();
        for (index, hop) in hops.into_iter().enumerate() {
            let role = if index + 1 == count {
                "login host".to_string()
            } else {
                format!("jump host {} of {}", index + 1, count - 1)
            };
            let name = format!("{}:{}", hop.cfg.alias, hop.cfg.port);
            let ui = Ui::new(opts.interactive, opts.prompter.clone());
            let (handle, hop_closed) = connect_hop(hop, handles.last(), ui)
                .instrument(info_span!("ssh", host = %name))
                .await
                .with_context(|| format!("could not connect to {name} ({role})"))?;
            handles.push(handle);
            closed = hop_closed;
        }
        let Some(handle) = handles.pop() else {
            bail!("no host to connect to");
        };
        Ok(SshSession {
            inner: Arc::new(Inner {
                host: via.last().cloned().unwrap_or_default(),
                handle,
                jumps: handles,
                closed,
            }),
        })
    }

    /// The login host as the user named it, for messages.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Starts `command` on the login host. The caller must read the channel to its end, stderr
    /// (extended data) included: an unread channel stalls the whole connection.
    pub async fn exec(&self, command: &str) -> anyhow::Result<Running> {
        let (read, write) = self.exec_channel(command).await?.split();
        Ok(Running {
            output: Printed::new(read),
            input: Stdin::new(write),
        })
    }

    /// Starts `command` on the login host, its stdin and stdout as one byte stream.
    pub async fn exec_stream(&self, command: &str) -> anyhow::Result<Stream> {
        Ok(Stream::new(self.exec_channel(command).await?.into_stream()))
    }

    async fn exec_channel(&self, command: &str) -> anyhow::Result<Channel<Msg>> {
        let host = self.host();
        let mut channel = self
            .inner
            .handle
            .channel_open_session()
            .await
            .with_context(|| format!("could not open a session on `{host}`"))?;
        channel
            .exec(true, command)
            .await
            .with_context(|| format!("could not run a command on `{host}`"))?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => return Ok(channel),
                Some(ChannelMsg::WindowAdjusted { .. }) => {}
                Some(ChannelMsg::Failure) => bail!("`{host}` refused to run `{command}`"),
                None => bail!("`{host}` closed the channel before running `{command}`"),
                Some(other) => bail!("unexpected {other:?} from `{host}` before the exec reply"),
            }
        }
    }

    /// Opens a direct-streamlocal@openssh.com channel to a Unix socket on the login host.
    pub async fn open_streamlocal(&self, socket_path: &str) -> Result<Stream, OpenError> {
        let result = self
            .inner
            .handle
            .channel_open_direct_streamlocal(socket_path)
            .await;
        let (host, path) = (self.host().to_string(), socket_path.to_string());
        result
            .map(|c| Stream::new(c.into_stream()))
            .map_err(|source| match source {
                russh::Error::ChannelOpenFailure(
                    ChannelOpenFailure::AdministrativelyProhibited,
                ) => OpenError::Prohibited { host },
                russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed) => {
                    OpenError::Refused { host, path }
                }
                source => OpenError::Failed { host, path, source },
            })
    }

    /// Opens a direct-tcpip channel: the login host connects to `host:port`.
    pub async fn open_tcp(&self, host: &str, port: u16) -> anyhow::Result<Stream> {
        open_tcp(&self.inner.handle, host, port)
            .await
            .map(|c| Stream::new(c.into_stream()))
            .with_context(|| format!("`{}` could not connect to {host}:{port}", self.host()))
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled() || self.inner.handle.is_closed()
    }

    /// Resolves when the connection ends (keepalives unanswered, EOF, disconnect).
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Says goodbye to the login host and then to each jump host.
    pub async fn disconnect(&self) {
        say_goodbye(&self.inner.handle).await;
        // Let the goodbye get through the jump hosts before closing them.
        let _ = tokio::time::timeout(DISCONNECT_GRACE, self.closed()).await;
        for jump in self.inner.jumps.iter().rev() {
            say_goodbye(jump).await;
        }
    }
}

async fn say_goodbye(handle: &Handle<Client>) {
    // An error means the connection is gone already.
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

/// How long `disconnect` waits for the connection to wind down.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

async fn open_tcp(handle: &Handle<Client>, host: &str, port: u16) -> anyhow::Result<Channel<Msg>> {
    Ok(handle
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await?)
}

/// Connects and authenticates one hop, within its ConnectTimeout (time spent at a prompt
/// excepted). Returns the handle and a token cancelled when that connection ends.
async fn connect_hop(
    hop: Hop,
    previous: Option<&Handle<Client>>,
    ui: Ui,
) -> anyhow::Result<(Handle<Client>, CancellationToken)> {
    let cfg = Arc::new(hop.cfg);
    let closed = CancellationToken::new();
    let client = Client::new(cfg.clone(), ui.clone(), &closed);
    let config = Arc::new(hop_config(&cfg));
    let connect = async {
        let mut handle = match (&hop.via, previous) {
            (Via::Tcp, _) => {
                let stream = route::tcp(&cfg).await?;
                russh::client::connect_stream(config, stream, client).await?
            }
            (Via::PreviousHop, Some(previous)) => {
                let channel = open_tcp(previous, &cfg.hostname, cfg.port)
                    .await
                    .context("the jump host could not reach it")?;
                russh::client::connect_stream(config, channel.into_stream(), client).await?
            }
            (Via::PreviousHop, None) => bail!("no jump host before it"),
            (Via::ProxyCommand(command), _) => {
                debug!(%command, "connecting through ProxyCommand");
                let stream = ProxyStream::spawn(command)?;
                russh::client::connect_stream(config, stream, client).await?
            }
        };
        super::auth::authenticate(&mut handle, &cfg, &ui).await?;
        Ok(handle)
    };
    let handle = bounded(cfg.connect_timeout, &ui, connect).await?;
    Ok((handle, closed))
}

/// Runs `fut` within `limit`, unless the user has been asked something meanwhile.
async fn bounded<T>(
    limit: Duration,
    ui: &Ui,
    fut: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::pin!(fut);
    loop {
        match tokio::time::timeout(limit, &mut fut).await {
            Ok(result) => return result,
            Err(_) if ui.prompted() => continue,
            Err(_) => bail!("timed out after {}s", limit.as_secs()),
        }
    }
}

/// [`client_config`] plus this hop's keepalives, and its known key types preferred (as OpenSSH
/// does) so a host recorded with one key type is not taken for unknown under another.
fn hop_config(cfg: &HostConfig) -> russh::client::Config {
    let mut config = client_config();
    config.keepalive_interval = Some(cfg.alive_interval);
    config.keepalive_max = cfg.alive_count_max;
    let name = known_hosts::lookup_name(cfg.host_key_alias.as_deref(), &cfg.hostname, cfg.port);
    let files: Vec<PathBuf> = cfg
        .known_hosts_files
        .iter()
        .chain(&cfg.global_known_hosts_files)
        .cloned()
        .collect();
    let known = known_hosts::known_algorithms(&files, &name);
    if !known.is_empty() {
        let mut keys = config.preferred.key.to_vec();
        let rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
        keys.sort_by_key(|a| !known.iter().any(|k| k == a || rsa(k) && rsa(a)));
        config.preferred.key = keys.into();
    }
    config
}
