//! How a check is shown: `✓ name: detail`, then its hint.

use std::io::Write;

use crate::proto::wire::{Check, CheckStatus};

/// `✓ name: detail`, then the hint.
pub(super) fn print(c: &Check) {
    let mark = match c.status {
        CheckStatus::Ok => "✓",
        CheckStatus::Note => "!",
        CheckStatus::Failed => "✗",
        CheckStatus::Skipped => "-",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{mark} {}: {}", c.name, c.detail);
    if let Some(hint) = &c.hint {
        let _ = writeln!(out, "    hint: {hint}");
    }
    let _ = out.flush();
}

pub(super) fn check(
    name: &str,
    status: CheckStatus,
    detail: impl Into<String>,
    hint: Option<String>,
) -> Check {
    Check {
        name: name.to_string(),
        status,
        detail: detail.into(),
        hint,
    }
}

pub(super) fn failed(name: &str, err: &anyhow::Error) -> Check {
    check(
        name,
        CheckStatus::Failed,
        format!("{err:#}"),
        crate::error::hint_of(err),
    )
}

/// Every step after `from` is skipped, with `why`.
pub(super) fn skip(show: &mut dyn FnMut(Check), names: &[&str], why: &str) {
    for name in names {
        show(check(name, CheckStatus::Skipped, why, None));
    }
}
