//! Stopping: Ctrl-C/SIGTERM (on Windows Ctrl-C, Ctrl-Break or closing the console), and the
//! grace given to open connections, on both sides.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that comes between the two (the user's Ctrl-C right after
/// the URL was printed) must stop podtun cleanly, not kill it. Call it inside the runtime.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn recv(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = recv(term) => {}
                () = recv(int) => {}
            }
        }
    }
    // Ctrl-C, Ctrl-Break, and the console window being closed (Windows then waits up to 5 s
    // for the process to finish).
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        let ctrl_c = ctrl_c().ok();
        let ctrl_break = ctrl_break().ok();
        let ctrl_close = ctrl_close().ok();
        async move {
            let c = async {
                match ctrl_c {
                    Some(mut s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let b = async {
                match ctrl_break {
                    Some(mut s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let close = async {
                match ctrl_close {
                    Some(mut s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = c => {}
                _ = b => {}
                _ = close => {}
            }
        }
    }
}

/// Stops accepting (`cancel`) and lets the connections on `tracker` finish for `grace`.
pub async fn drain(cancel: &CancellationToken, tracker: &TaskTracker, grace: Duration) {
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        info!("closing connections still open after {}s", grace.as_secs());
    }
}
