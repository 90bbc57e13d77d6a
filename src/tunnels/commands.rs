//! `podtun ls`, `podtun stop` and `podtun logs`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::control;
use super::paths::Paths;
use super::state::{now, Phase, State};
use crate::cli::{LogsArgs, LsArgs, StopArgs};
use crate::error::hinted;

/// Every tunnel with a state file; dead ones are marked gone (or failed) and cleaned.
fn list(dir: &Path) -> Vec<(Paths, State)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut tunnels: Vec<(Paths, State)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            Some(Paths::with_id(dir, id))
        })
        .filter_map(|paths| {
            let alive = paths.alive();
            let Some(mut state) = paths.read() else {
                if !alive {
                    paths.clean();
                }
                return None;
            };
            if !alive {
                if state.state != Phase::Failed {
                    state.state = Phase::Gone;
                }
                paths.clean();
            }
            Some((paths, state))
        })
        .collect();
    tunnels.sort_by(|a, b| (a.1.since, &a.1.id).cmp(&(b.1.since, &b.1.id)));
    tunnels
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(since: u64) -> String {
    let secs = now().saturating_sub(since);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// Where the tunnel answers: its URLs, else its addresses.
fn addresses(state: &State) -> String {
    let list: Vec<&str> = state
        .forwards
        .iter()
        .map(|f| f.url.as_deref().unwrap_or(&f.local))
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

/// `podtun ls`.
pub fn ls(args: &LsArgs) -> anyhow::Result<()> {
    let tunnels = list(&Paths::dir()?);
    let mut out = std::io::stdout().lock();
    let result = if args.json {
        tunnels.iter().try_for_each(|(_, state)| {
            let line = serde_json::to_string(state).unwrap_or_default();
            writeln!(out, "{line}")
        })
    } else {
        let rows: Vec<[String; 6]> = tunnels
            .iter()
            .map(|(_, s)| {
                let mut state = s.state.as_str().to_string();
                if let (Phase::Failed, Some(e)) = (s.state, &s.error) {
                    state = format!("{state}: {e}");
                }
                [
                    s.id.clone(),
                    s.target.clone(),
                    s.via.clone().unwrap_or_else(|| "-".into()),
                    addresses(s),
                    state,
                    ago(s.since),
                ]
            })
            .collect();
        let header = ["ID", "TARGET", "VIA", "ADDRESS", "STATE", "SINCE"].map(String::from);
        table(&mut out, &header, &rows)
    };
    ignore_broken_pipe(result.and_then(|()| out.flush()))
}

fn table(out: &mut impl Write, header: &[String; 6], rows: &[[String; 6]]) -> std::io::Result<()> {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("could not write to stdout"),
    }
}

/// Whether `which` names the tunnel: its id, its target (`pod/jupyter`) or the target's name.
fn names(which: &str, state: &State) -> bool {
    which == state.id
        || which == state.target
        || state
            .target
            .split_once('/')
            .is_some_and(|(_, n)| n == which)
}

fn not_running(which: &str) -> anyhow::Error {
    hinted(
        anyhow::anyhow!("no tunnel `{which}` is running"),
        "`podtun ls` lists the running tunnels",
    )
}

/// `podtun stop`.
pub async fn stop(args: &StopArgs) -> anyhow::Result<()> {
    let running: Vec<(Paths, State)> = list(&Paths::dir()?)
        .into_iter()
        .filter(|(_, s)| !matches!(s.state, Phase::Gone | Phase::Failed))
        .collect();
    let chosen: Vec<&(Paths, State)> = if args.all {
        running.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for which in &args.which {
            let found: Vec<_> = running.iter().filter(|(_, s)| names(which, s)).collect();
            if found.is_empty() {
                return Err(not_running(which));
            }
            chosen.extend(found);
        }
        chosen
    };
    let stops = chosen.iter().map(|(paths, state)| async move {
        control::stop(paths, state).await?;
        eprintln!("podtun: stopped `{}` ({})", state.id, state.target);
        anyhow::Ok(())
    });
    for result in futures::future::join_all(stops).await {
        result?;
    }
    Ok(())
}

/// `podtun logs`.
pub fn logs(args: &LogsArgs) -> anyhow::Result<()> {
    let dir = Paths::dir()?;
    let by_id = Paths::with_id(&dir, &args.which);
    let paths = if by_id.log().is_file() {
        by_id
    } else {
        let found = list(&dir).into_iter().find(|(_, s)| names(&args.which, s));
        match found {
            Some((_, state)) if !state.detached => {
                return Err(hinted(
                    anyhow::anyhow!("tunnel `{}` runs in the foreground", state.id),
                    "its progress and errors are in the terminal it runs in",
                ))
            }
            Some((paths, _)) => paths,
            None => return Err(not_running(&args.which)),
        }
    };
    let log = std::fs::read(paths.log())
        .with_context(|| format!("could not read {}", paths.log().display()))?;
    let mut out = std::io::stdout().lock();
    ignore_broken_pipe(out.write_all(&log).and_then(|()| out.flush()))
}
