//! Protocol events on stdout, one JSON object per line.

use std::io::Write;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{hint_of, hinted};
use crate::proto::wire::ClusterEvent;

/// Writes protocol events on stdout. A failed write means the laptop went away: it stops the
/// agent.
pub(super) struct Events {
    pub(super) stop: CancellationToken,
}

impl Events {
    pub(super) fn emit(&self, event: &ClusterEvent) {
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
    pub(super) fn fail(&self, err: anyhow::Error) -> anyhow::Error {
        self.emit(&ClusterEvent::from_error(&err));
        // Keep the text and the hint for stderr, but not the kind: any agent failure exits 1.
        let text = anyhow!("{err:#}");
        match hint_of(&err) {
            Some(hint) => hinted(text, hint),
            None => text,
        }
    }
}
