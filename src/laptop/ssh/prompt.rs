//! Questions to the person at the terminal: passphrases, passwords, keyboard-interactive
//! prompts and unknown host keys.
//!
//! Prompts go to `/dev/tty` (the console on Windows), as OpenSSH does, never to stdout, which
//! carries results only.
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
        return hidden::ask(text);
    }
    let (input, mut output) = terminal()?;
    output.write_all(text.as_bytes())?;
    output.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(input).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The terminal to read from and write to, whatever stdin and stdout are: `/dev/tty`, or on
/// Windows the console (`CONIN$`, `CONOUT$`).
fn terminal() -> std::io::Result<(std::fs::File, std::fs::File)> {
    use std::fs::OpenOptions;
    if cfg!(windows) {
        let input = OpenOptions::new().read(true).write(true).open("CONIN$")?;
        let output = OpenOptions::new().read(true).write(true).open("CONOUT$")?;
        Ok((input, output))
    } else {
        let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
        Ok((tty.try_clone()?, tty))
    }
}

/// Restores the terminal if podtun stops (Ctrl-C, an error) while a secret is being typed, so
/// the shell does not come back without echo.
pub fn restore_terminal() {
    #[cfg(unix)]
    hidden::restore(true);
}

#[cfg(not(unix))]
mod hidden {
    pub(super) fn ask(text: &str) -> std::io::Result<String> {
        rpassword::prompt_password(text)
    }
}

#[cfg(unix)]
mod hidden {
    use std::io::{BufRead, Write};
    use std::sync::Mutex;

    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions, Termios};

    /// The terminal and its settings from before echo was turned off, while a secret is asked.
    static SAVED: Mutex<Option<(std::fs::File, Termios)>> = Mutex::new(None);

    /// Asks on `/dev/tty` with echo off. Echo goes off before the prompt is written: a user who
    /// types as soon as the prompt shows must never see the secret on the screen.
    pub(super) fn ask(text: &str) -> std::io::Result<String> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        let saved = tcgetattr(&tty)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // The Enter key still moves to the next line.
        quiet.local_modes.insert(LocalModes::ECHONL);
        *lock() = Some((tty.try_clone()?, saved));
        // Without discarding input: what is typed from here on is read, not echoed.
        let answer = tcsetattr(&tty, OptionalActions::Now, &quiet)
            .map_err(std::io::Error::from)
            .and_then(|()| read_line(&tty, text));
        restore(false);
        answer
    }

    fn read_line(mut tty: &std::fs::File, text: &str) -> std::io::Result<String> {
        tty.write_all(text.as_bytes())?;
        tty.flush()?;
        let mut line = String::new();
        std::io::BufReader::new(tty).read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Puts the terminal back as it was; `interrupted`: the answer was not finished, so the
    /// cursor still sits after the prompt and what podtun prints next needs a new line.
    pub(super) fn restore(interrupted: bool) {
        if let Some((mut tty, saved)) = lock().take() {
            let _ = tcsetattr(&tty, OptionalActions::Now, &saved);
            if interrupted {
                let _ = tty.write_all(b"\n");
            }
        }
    }

    fn lock() -> std::sync::MutexGuard<'static, Option<(std::fs::File, Termios)>> {
        SAVED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
