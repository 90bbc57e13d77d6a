//! What the user sees: results on stdout (human lines or `--json` events), progress on stderr
//! (a spinner on a terminal, plain lines otherwise).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Events on stdout with `--json`, one object per line.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A forward is ready: its URL (Jupyter) or address works now.
    Ready {
        /// The target as given.
        target: String,
        /// The pod that serves it.
        pod: String,
        /// `127.0.0.1:8888`.
        local: String,
        /// Port in the pod.
        remote_port: u16,
        /// Jupyter's URL (with its token), if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// What runs on the login host (`podtun` or `kubectl`); absent in local mode.
        #[serde(skip_serializing_if = "Option::is_none")]
        agent: Option<&'static str>,
    },
    /// The connection to the login host was lost; podtun is reconnecting.
    Reconnecting {
        /// Why.
        reason: String,
    },
    /// The pod was replaced; new connections go to the new one.
    PodReplaced {
        /// The new pod.
        pod: String,
        /// The new URL when Jupyter's token changed.
        #[serde(skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// A failure.
    Error {
        /// What failed.
        message: String,
        /// What to do.
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// The time a Slurm job has left: once it is ready, and again (`warning`) when little is
    /// left.
    TimeLeft {
        /// The job id.
        job: String,
        /// Seconds left.
        seconds: u64,
        /// Whether this is the warning before the limit.
        warning: bool,
    },
    /// podtun launched the pod it forwards to (`--launch`, `--image`).
    Launched {
        /// Its namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// podtun deleted the pod it launched, as it stopped.
    Deleted {
        /// Its namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// podtun left the pod it launched running (`--keep`).
    Kept {
        /// Its namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// podtun stopped, everything cleaned up.
    Closed,
}

/// Who follows a tunnel's reports besides the terminal: its entry in the state directory,
/// which `podtun ls` reads.
pub trait Follower: Send + Sync {
    /// Follows what the tunnel reports.
    fn on_event(&self, event: &Event);
    /// Names the target as `ls` shows it, once it is known.
    fn set_target(&self, target: &str);
    /// Every forward of a batch is ready; whether the tunnel runs in the background.
    fn on_ready(&self) -> bool;
}

/// The terminal side of podtun.
pub struct Output {
    json: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    last: Mutex<String>,
    /// The last Jupyter URL shown: a replacement pod's URL is shown only when it changed.
    last_url: Mutex<Option<String>>,
    /// The tunnel's entry in the state directory, kept current from the events.
    registration: Option<Arc<dyn Follower>>,
    /// A background tunnel, once ready: results go to its log, nobody reads stdout any more.
    results_to_log: AtomicBool,
}

/// The line a background tunnel writes to the podtun that started it once every forward is
/// ready (a private pipe between the two, never a user's terminal).
pub const DETACHED_READY: &str = "podtun:detached-ready";

impl Output {
    /// `json`: events on stdout; `quiet`: no progress.
    pub fn new(json: bool, quiet: bool) -> Output {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Output {
            json,
            quiet,
            bar,
            last: Mutex::new(String::new()),
            last_url: Mutex::new(None),
            registration: None,
            results_to_log: AtomicBool::new(false),
        }
    }

    /// Keeps `registration` current from the events.
    pub fn set_registration(&mut self, registration: Arc<dyn Follower>) {
        self.registration = Some(registration);
    }

    /// What `ls` shows as the tunnel's target, once known (a submitted job's `slurm/JOBID`).
    pub fn set_target(&self, target: &str) {
        if let Some(reg) = &self.registration {
            reg.set_target(target);
        }
    }

    /// Every forward of a batch was reported ready (`first`: the first time).
    pub fn ready_reported(&self, first: bool) {
        let Some(reg) = &self.registration else {
            return;
        };
        let detached = reg.on_ready();
        if first && detached {
            self.result(DETACHED_READY);
            self.results_to_log.store(true, Ordering::Relaxed);
        }
    }

    /// A result line: on stdout, or in a background tunnel's log once it is on its own.
    fn result(&self, line: &str) {
        if self.results_to_log.load(Ordering::Relaxed) {
            eprintln!("podtun: {line}");
        } else {
            println_flush(line);
        }
    }

    /// Shows what podtun is waiting for (each distinct message once on a non-terminal).
    pub fn progress(&self, message: &str) {
        if self.quiet {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            if *last == message {
                return;
            }
            *last = message.to_string();
        }
        match &self.bar {
            Some(bar) => bar.set_message(message.to_string()),
            None => eprintln!("podtun: {message}"),
        }
    }

    /// Ends the spinner.
    pub fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// A line of information on stderr (not a result).
    pub fn note(&self, message: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("podtun: {message}")),
            None => eprintln!("podtun: {message}"),
        }
    }

    /// Reports an event: a JSON line, or for humans the result on stdout and the rest on stderr.
    pub fn event(&self, event: &Event) {
        let event = &self.dedupe_url(event);
        if let Some(reg) = &self.registration {
            reg.on_event(event);
        }
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                self.result(&line);
            }
            return;
        }
        match event {
            Event::Ready { url, local, .. } => {
                self.done();
                self.result(url.as_deref().unwrap_or(local));
            }
            Event::PodReplaced { pod, url } => {
                self.note(&format!("now forwarding to pod `{pod}`"));
                if let Some(url) = url {
                    self.result(url);
                }
            }
            Event::Reconnecting { reason } => self.note(&format!("reconnecting: {reason}")),
            Event::TimeLeft {
                job,
                seconds,
                warning: true,
            } => self.note(&format!(
                "Slurm job {job} has {} left",
                slurm_duration(Duration::from_secs(*seconds))
            )),
            Event::Launched { namespace, pod } => {
                self.note(&format!("launched pod `{namespace}/{pod}`"));
            }
            Event::Deleted { namespace, pod } => {
                self.note(&format!("deleted pod `{namespace}/{pod}`, which podtun launched"));
            }
            Event::Kept { namespace, pod } => self.note(&format!(
                "kept pod `{namespace}/{pod}` (--keep): podtun finds it again without a TARGET; `kubectl delete pod {pod} -n {namespace}` deletes it"
            )),
            Event::TimeLeft { .. } | Event::Error { .. } | Event::Closed => {}
        }
    }

    /// Remembers the URL of `ready`; drops an unchanged URL from `pod-replaced`.
    fn dedupe_url(&self, event: &Event) -> Event {
        let Ok(mut last) = self.last_url.lock() else {
            return event.clone();
        };
        match event {
            Event::Ready { url: Some(url), .. } => *last = Some(url.clone()),
            Event::PodReplaced {
                pod,
                url: Some(url),
            } => {
                if last.as_deref() == Some(url.as_str()) {
                    return Event::PodReplaced {
                        pod: pod.clone(),
                        url: None,
                    };
                }
                *last = Some(url.clone());
            }
            _ => {}
        }
        event.clone()
    }

    /// Whether results go out as JSON.
    pub fn json(&self) -> bool {
        self.json
    }
}

/// One line on stdout, flushed; a closed stdout (`| head`) is not an error worth a panic.
fn println_flush(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Opens `url` in the browser when stdout is a terminal; says so when it cannot.
pub fn open_browser(out: &Output, url: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        if let Err(e) = open::that_detached(url) {
            out.note(&format!("could not open a browser: {e}"));
        }
    }
}

/// A duration as Slurm prints it: `1-02:03:04`, `2:03:04`, `3:04`.
pub fn slurm_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, h) {
        (0, 0) => format!("{m}:{s:02}"),
        (0, h) => format!("{h}:{m:02}:{s:02}"),
        (d, h) => format!("{d}-{h:02}:{m:02}:{s:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_event_json() {
        let ev = Event::Ready {
            target: "pod/jupyter".into(),
            pod: "jupyter".into(),
            local: "127.0.0.1:8888".into(),
            remote_port: 8888,
            url: Some("http://127.0.0.1:8888/lab?token=t".into()),
            agent: Some("kubectl"),
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"event":"ready","target":"pod/jupyter","pod":"jupyter","local":"127.0.0.1:8888","remote_port":8888,"url":"http://127.0.0.1:8888/lab?token=t","agent":"kubectl"}"#
        );
        assert_eq!(
            serde_json::to_string(&Event::Closed).unwrap(),
            r#"{"event":"closed"}"#
        );
    }
}
