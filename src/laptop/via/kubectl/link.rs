//! One link of kubectl mode: an SSH connection with kubectl proxy running over it, checked end
//! to end, and the same for `podtun doctor`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;

use super::connector::{proxy_client, ProxyRoute};
use super::proxy::Proxy;
use crate::error::hinted;
use crate::laptop::link::Slot;
use crate::laptop::ssh::{Heartbeat, OpenError, SshSession};
use crate::plan::Plan;
use crate::proto::wire::HEARTBEAT_SECS;

/// The error for a login host whose sshd refuses stream-local forwarding.
fn no_streamlocal(host: &str) -> anyhow::Error {
    hinted(
        anyhow!("kubectl mode needs stream-local forwarding, and login host `{host}` does not allow it"),
        "ask its operators for `AllowStreamLocalForwarding local` in sshd_config, or use podtun's agent there (--agent podtun); podtun never falls back to a TCP port, which would lend your cluster rights to every user of that host",
    )
}

/// One established link: SSH connection plus proxy, checked end to end.
pub struct Established {
    pub(super) ssh: SshSession,
    pub(super) proxy: Proxy,
    /// What keeps the proxy running on the login host.
    beats: Heartbeat,
}

impl Established {
    /// Holds the link: heartbeats to the login side until the connection or the proxy goes
    /// away; why.
    pub(super) async fn held(&self) -> String {
        let host = self.ssh.host();
        tokio::select! {
            () = self.beats.failed() => format!("lost the connection to login host `{host}`"),
            () = self.ssh.closed() => format!("lost the connection to login host `{host}`"),
            () = self.proxy.ended() => format!("kubectl proxy on login host `{host}` ended"),
        }
    }

    /// Stops the proxy and closes the connection.
    pub(super) async fn close(self) {
        self.proxy.stop().await;
        self.ssh.disconnect().await;
    }
}

/// Starts the proxy on `ssh` and checks that a stream-local channel reaches it; on failure the
/// connection is closed (which ends whatever was started there).
pub async fn establish_on(ssh: SshSession, plan: &Plan) -> anyhow::Result<Established> {
    let proxy = match Proxy::start(&ssh, plan).await {
        Ok(proxy) => proxy,
        Err(e) => {
            ssh.disconnect().await;
            return Err(e);
        }
    };
    if let Err(e) = reach(&ssh, &proxy).await {
        proxy.stop().await;
        ssh.disconnect().await;
        return Err(e);
    }
    let beats = proxy.script.heartbeat(Duration::from_secs(HEARTBEAT_SECS));
    Ok(Established { ssh, proxy, beats })
}

/// Checks that a stream-local channel reaches the proxy's socket.
async fn reach(ssh: &SshSession, proxy: &Proxy) -> anyhow::Result<()> {
    match ssh.open_streamlocal(&proxy.socket).await {
        Ok(_channel) => Ok(()),
        Err(OpenError::Prohibited { host } | OpenError::Refused { host, .. }) => {
            Err(no_streamlocal(&host))
        }
        Err(other) => Err(other.into()),
    }
}

/// `podtun doctor` in kubectl mode: starts the proxy on `ssh`, runs the cluster checks through
/// it, then stops it.
pub async fn doctor(
    ssh: &SshSession,
    plan: &Plan,
    emit: &(dyn Fn(crate::proto::wire::Check) + Send + Sync),
) -> anyhow::Result<()> {
    let host = ssh.host().to_string();
    let proxy = Proxy::start(ssh, plan).await?;
    if let Err(e) = reach(ssh, &proxy).await {
        proxy.stop().await;
        return Err(e);
    }
    let namespace = proxy.namespace_for(plan);
    let route = Slot::new("the login host");
    route.set(Arc::new(ProxyRoute {
        ssh: ssh.clone(),
        socket: proxy.socket.clone(),
    }));
    let result = match proxy_client(route.waiter(), &namespace) {
        Ok(cluster) => {
            let url = format!("kubectl proxy on `{host}`");
            crate::cluster::doctor::run_on(&cluster, &url, emit).await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    proxy.stop().await;
    result
}
