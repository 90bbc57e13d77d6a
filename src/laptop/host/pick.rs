//! `podtun jupyter @`: which of the user's servers on the SSH host to use. The one `--port`
//! names, the one used before a reconnection, the only one, or a numbered choice on a terminal;
//! without a terminal, an error listing each (newest first) with the command that picks it.

use anyhow::{anyhow, Context};

use super::script::Server;
use crate::cluster::discover::PortSpec;
use crate::error::hinted;
use crate::laptop::pick;
use crate::output::Output;
use crate::plan::Plan;

/// One server among `servers` (newest first): the one `--port` names, the one used before a
/// reconnection, the only one, or the user's choice on a terminal.
pub async fn choose(
    servers: Vec<Server>,
    plan: &Plan,
    out: &Output,
    host: &str,
    previous: Option<&Server>,
) -> anyhow::Result<Server> {
    let wanted = plan.spec.ports.first().and_then(|p| match p.remote {
        PortSpec::Number(n) => Some(n),
        PortSpec::Name(_) => None,
    });
    let servers: Vec<Server> = match wanted {
        Some(port) => {
            let on_port: Vec<Server> = servers.iter().filter(|s| s.port == port).cloned().collect();
            if on_port.is_empty() {
                return Err(hinted(
                    anyhow!("none of your Jupyter servers on `{host}` listens on port {port}"),
                    format!("running there: {}", listed(&servers)),
                ));
            }
            on_port
        }
        None => servers,
    };
    if let Some(before) = previous {
        let same = |s: &&Server| s.sock == before.sock && s.port == before.port;
        if let Some(server) = servers.iter().find(same) {
            return Ok(server.clone());
        }
    }
    if servers.len() == 1 {
        return servers.into_iter().next().context("one server");
    }
    if !pick::interactive() {
        return Err(hinted(
            anyhow!(
                "{} Jupyter servers of yours run on `{host}`, and no terminal to choose on",
                servers.len()
            ),
            format!(
                "pick one by its port; newest first:\n{}",
                servers
                    .iter()
                    .map(|s| format!("    {}", command_for(s)))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ));
    }
    out.done();
    let mut menu = format!(
        "{} Jupyter servers of yours run on `{host}`, newest first:\n",
        servers.len()
    );
    for (i, s) in servers.iter().enumerate() {
        menu.push_str(&format!("  {}) {}\n", i + 1, about(s)));
    }
    let count = servers.len();
    let answer = tokio::task::spawn_blocking(move || pick::ask(&menu, count))
        .await
        .context("the prompt task failed")??;
    servers.into_iter().nth(answer).context("no such server")
}

/// `port 8888, in /home/alice (pid 4242)`.
pub fn about(server: &Server) -> String {
    format!(
        "{}, in {} (pid {})",
        server.listens_on(),
        server.root_dir,
        server.pid
    )
}

/// The servers, for messages.
fn listed(servers: &[Server]) -> String {
    servers.iter().map(about).collect::<Vec<_>>().join("; ")
}

/// The user's command with `--port` naming this server (a socket server: how to tell it).
fn command_for(server: &Server) -> String {
    if server.sock.is_some() {
        return format!("{} (on a socket: offered on a terminal)", about(server));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = vec!["podtun".to_string()];
    words.extend(args.iter().map(|a| pick::quote(a)));
    words.push(format!("--port {}", server.port));
    format!("{}    # {}", words.join(" "), about(server))
}
