//! Questions to the person at the terminal: passphrases, passwords, keyboard-interactive
//! prompts and unknown host keys.
//!
//! Prompts go to `/dev/tty` (as OpenSSH does), never to stdout, which carries results only.
//! Tests replace the terminal with a [`Prompter`] function.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

/// Answers one prompt: `(text, echo)` → the line typed, without its newline. `echo` is false
/// for secrets.
pub type Prompter = Arc<dyn Fn(&str, bool) -> std::io::Result<String> + Send + Sync>;

/// Whether and how podtun may ask the user something, for one connection.
#[derive(Clone)]
pub(crate) struct Ui {
    interactive: bool,
    prompter: Option<Prompter>,
    /// Set once a prompt was shown, so connect timeouts stop counting the user's typing.
    prompted: Arc<AtomicBool>,
}

impl Ui {
    pub(crate) fn new(interactive: bool, prompter: Option<Prompter>) -> Ui {
        Ui {
            interactive,
            prompter,
            prompted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether prompts are allowed (a terminal, or a test's prompter, and no BatchMode).
    pub(crate) fn can_prompt(&self, batch_mode: bool) -> bool {
        self.interactive && !batch_mode
    }

    /// Whether any prompt has been shown.
    pub(crate) fn prompted(&self) -> bool {
        self.prompted.load(Ordering::Relaxed)
    }

    /// Asks `text` and returns the answer; the blocking terminal read runs off the runtime.
    pub(crate) async fn ask(&self, text: &str, echo: bool) -> anyhow::Result<String> {
        self.prompted.store(true, Ordering::Relaxed);
        let prompter = self.prompter.clone();
        let text = text.to_string();
        tokio::task::spawn_blocking(move || match prompter {
            Some(prompter) => prompter(&text, echo),
            None => ask_tty(&text, echo),
        })
        .await
        .context("prompt task failed")?
        .context("could not read from the terminal")
    }

    /// Shows a line to the user (keyboard-interactive instructions, banners).
    pub(crate) fn show(&self, text: &str) {
        if self.prompter.is_none() {
            eprintln!("{}", text.trim_end());
        } else {
            tracing::info!("{}", text.trim_end());
        }
    }
}

fn ask_tty(text: &str, echo: bool) -> std::io::Result<String> {
    if !echo {
        return rpassword::prompt_password(text);
    }
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    tty.write_all(text.as_bytes())?;
    tty.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
