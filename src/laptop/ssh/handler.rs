//! The russh event handler of one hop.

use std::future::Future;
use std::sync::Arc;

use russh::client::{ChannelOpenHandle, Msg, Session};
use russh::keys::{PublicKey, PublicKeyOrCertificate};
use russh::{Channel, ChannelOpenFailure};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::config::HostConfig;
use super::hostkey;
use super::prompt::Ui;

/// The russh event handler of one hop: checks the host key, refuses channels the server
/// offers (podtun forwards nothing back), and signals the end of the connection.
pub(crate) struct Client {
    cfg: Arc<HostConfig>,
    ui: Ui,
    /// Dropped with the handler, that is when the connection's task ends.
    _closed: DropGuard,
}

impl Client {
    /// A handler for the hop `cfg`; `closed` is cancelled when its connection ends.
    pub(crate) fn new(cfg: Arc<HostConfig>, ui: Ui, closed: &CancellationToken) -> Client {
        Client {
            cfg,
            ui,
            _closed: closed.clone().drop_guard(),
        }
    }
}

fn refuse(kind: &str, reply: ChannelOpenHandle) -> impl Future<Output = anyhow::Result<()>> {
    debug!(kind, "refused a channel the server offered");
    async move {
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }
}

impl russh::client::Handler for Client {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> anyhow::Result<bool> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            // Host certificates are checked as the plain key they carry.
            PublicKeyOrCertificate::Certificate(cert) => PublicKey::from(cert.public_key().clone()),
        };
        hostkey::verify(&self.cfg, &key, &self.ui).await?;
        Ok(true)
    }

    async fn auth_banner(&mut self, banner: &str, _: &mut Session) -> anyhow::Result<()> {
        if self.ui.can_prompt(self.cfg.batch_mode) {
            self.ui.show(banner);
        } else {
            debug!(banner, "authentication banner");
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        _: Channel<Msg>,
        _: &str,
        _: u32,
        _: &str,
        _: u32,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("forwarded-tcpip", reply).await
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _: Channel<Msg>,
        _: &str,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("forwarded-streamlocal", reply).await
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        _: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("auth-agent", reply).await
    }

    async fn server_channel_open_session(
        &mut self,
        _: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("session", reply).await
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _: Channel<Msg>,
        _: &str,
        _: u32,
        _: &str,
        _: u32,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("direct-tcpip", reply).await
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _: Channel<Msg>,
        _: &str,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("direct-streamlocal", reply).await
    }

    async fn server_channel_open_x11(
        &mut self,
        _: Channel<Msg>,
        _: &str,
        _: u32,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> anyhow::Result<()> {
        refuse("x11", reply).await
    }
}
