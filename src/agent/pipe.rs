//! `podtun agent pipe SOCKET`: the fallback transport for SSH servers that refuse stream-local
//! forwarding. The laptop runs it on one exec channel per agent socket; it splices stdin/stdout
//! to the running agent's socket, passing each EOF on. The bytes are opaque here: the laptop's
//! connections are multiplexed inside them ([`crate::proto::mux`]).
//!
//! Plain threads and blocking I/O: one connection, two directions.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::Context;
use tracing::debug;

use crate::net::splice::BUF_SIZE;

/// Splices stdin/stdout to the socket at `path` until the connection is done.
///
/// stdin's EOF shuts down the socket's write half, and the pipe keeps reading the reply. The
/// socket's EOF ends the pipe: the agent only closes its write half when it is done with the
/// connection altogether (its pump ends both directions at once), and exiting is how our stdout
/// closes, which the laptop sees as the channel's EOF.
pub async fn run(path: &Path) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || splice_stdio(&path))
        .await
        .context("the pipe's thread failed")?
}

fn splice_stdio(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let sock = UnixStream::connect(path)
        .with_context(|| format!("could not connect to the agent's socket `{shown}`"))?;
    let mut up = sock
        .try_clone()
        .context("could not clone the socket handle")?;
    // Detached: it may sit in a read of stdin when the agent ends the connection; the exit
    // ends it then.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        match pump(&mut stdin, &mut up) {
            Ok(n) => debug!(up = n, "stdin closed; passing the EOF on"),
            // The agent may have dropped the connection; the other direction sees it too.
            Err(e) => debug!(%e, "could not write to the agent's socket"),
        }
        up.shutdown(Shutdown::Write).ok();
    });
    let mut stdout = std::io::stdout().lock();
    let n = pump(&mut &sock, &mut stdout)
        .with_context(|| format!("connection through `{shown}` failed"))?;
    debug!(down = n, "the agent closed the connection");
    Ok(())
}

/// Copies until EOF, flushing after every write: stdout is line-buffered, and a reply that does
/// not end in a newline must not wait for the next one.
fn pump(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}
