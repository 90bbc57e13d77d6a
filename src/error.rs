//! How failures reach the user: `error:`, one `Caused by:` line per cause, and a `hint:` when
//! podtun knows the fix; and which exit code goes with them.

use std::fmt;

/// Exit code for runtime failures.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for usage errors (clap's default too).
pub const EXIT_USAGE: u8 = 2;

/// An error that carries the fix the user should try.
///
/// It displays exactly like the error it wraps, so the chain of causes reads the same; the hint
/// is found again by [`hint_of`] when the error is rendered.
pub struct Hinted {
    inner: anyhow::Error,
    hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (hint: {})", self.inner, self.hint)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// A failure already shown to the user (by a background tunnel that did not start): exit with
/// its code and print nothing more.
#[derive(Debug, thiserror::Error)]
#[error("exited with status {0}")]
pub struct Exited(pub u8);

/// A usage problem found after parsing (bad `LOCAL:REMOTE`, conflicting flags): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A usage error (exit code 2), with the hint when there is one.
pub fn usage(message: impl Into<String>, hint: Option<String>) -> anyhow::Error {
    let err = anyhow::Error::new(UsageError(message.into()));
    match hint {
        Some(hint) => hinted(err, hint),
        None => err,
    }
}

/// Attaches a hint to an error.
pub fn hinted(err: impl Into<anyhow::Error>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        inner: err.into(),
        hint: hint.into(),
    })
}

/// Adds `.hint("…")` to `Result`s whose error converts to `anyhow::Error`.
pub trait HintExt<T> {
    /// Attaches `hint` to the error, if any.
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T>;
    /// Attaches a lazily built hint to the error, if any.
    fn with_hint<S: Into<String>>(self, hint: impl FnOnce() -> S) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> HintExt<T> for Result<T, E> {
    fn hint(self, hint: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| hinted(e, hint))
    }
    fn with_hint<S: Into<String>>(self, hint: impl FnOnce() -> S) -> anyhow::Result<T> {
        self.map_err(|e| hinted(e, hint()))
    }
}

/// The first hint found along the error's chain (outermost first).
pub fn hint_of(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(h) = cause.downcast_ref::<Hinted>() {
            return Some(h.hint.clone());
        }
        if let Some(refused) = cause.downcast_ref::<crate::cluster::ForwardRefused>() {
            return Some(refused.hint());
        }
        cause
            .downcast_ref::<crate::cluster::discover::DiscoverError>()
            .and_then(|d| d.hint())
    })
}

/// The exit code that goes with an error.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    fn is_usage(err: &anyhow::Error) -> bool {
        err.chain().any(|c| {
            c.downcast_ref::<UsageError>().is_some()
                || c.downcast_ref::<Hinted>()
                    .is_some_and(|h| is_usage(&h.inner))
        })
    }
    if let Some(Exited(code)) = err.downcast_ref::<Exited>() {
        *code
    } else if is_usage(err) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Renders an error the way users read it:
///
/// ```text
/// error: pod `demo/jupyter` not found
///   Caused by: …
///   hint: …
/// ```
pub fn render(err: &anyhow::Error) -> String {
    if err.downcast_ref::<Exited>().is_some() {
        return String::new();
    }
    let mut out = format!("error: {err}\n");
    let mut last = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        // Wrapped errors often repeat their source's text; print each distinct cause once.
        if text.is_empty() || last.contains(&text) {
            continue;
        }
        out.push_str(&format!("  Caused by: {text}\n"));
        last = text;
    }
    if let Some(hint) = hint_of(err) {
        out.push_str(&format!("  hint: {hint}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn renders_causes_and_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Err::<(), _>(io)
            .context("could not connect to login:22")
            .hint("check the host name")
            .unwrap_err();
        assert_eq!(
            render(&err),
            "error: could not connect to login:22\n  Caused by: connection refused\n  hint: check the host name\n"
        );
        assert_eq!(exit_code(&err), EXIT_FAILURE);
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = anyhow::Error::new(UsageError("bad port `x`".into()));
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert_eq!(render(&err), "error: bad port `x`\n");
        let err = usage("bad port `x`", Some("try 8080".into()));
        assert_eq!(exit_code(&err), EXIT_USAGE);
        assert_eq!(render(&err), "error: bad port `x`\n  hint: try 8080\n");
    }
}
