//! The laptop's side of "no TARGET": several pods fit, so the person at the terminal picks one
//! from a numbered list; without a terminal, the error lists each pod with the command line
//! that names it (the user's own command, TARGET added).

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use futures::future::BoxFuture;

use crate::cluster::pick::{several, subcommand};
use crate::output::Output;
use crate::proto::wire::Candidates;

/// The pod chosen earlier in this run: a reconnection offering it again takes it without asking.
static CHOSEN: Mutex<Option<String>> = Mutex::new(None);

/// Whether a person can answer (stdin and stderr are a terminal).
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// The pod to use among `offered`: the one chosen before, else the user's choice on a
/// terminal, else an error listing each with its command.
pub async fn choose(offered: &Candidates, out: &Output) -> anyhow::Result<String> {
    let before = CHOSEN.lock().ok().and_then(|c| c.clone());
    if let Some(name) = before.filter(|n| offered.pods.iter().any(|c| &c.name == n)) {
        return Ok(name);
    }
    if !interactive() {
        return Err(several(offered, &command_for));
    }
    out.done();
    let menu = menu(offered);
    let count = offered.pods.len();
    let answer = tokio::task::spawn_blocking(move || ask(&menu, count))
        .await
        .context("the prompt task failed")??;
    let name = offered.pods[answer].name.clone();
    if let Ok(mut chosen) = CHOSEN.lock() {
        *chosen = Some(name.clone());
    }
    Ok(name)
}

/// [`choose`] as the cluster half takes it.
pub fn chooser(
    out: Arc<Output>,
) -> impl Fn(Candidates) -> BoxFuture<'static, anyhow::Result<String>> + Send + Sync {
    move |offered: Candidates| {
        let out = out.clone();
        Box::pin(async move { choose(&offered, &out).await })
    }
}

/// The numbered list, newest first.
fn menu(offered: &Candidates) -> String {
    let what = match offered.preset.as_str() {
        "jupyter" => "Jupyter pods",
        "redis" => "redis pods",
        _ => "Running pods",
    };
    let mut text = format!(
        "{} {what} in namespace `{}`, newest first:\n",
        offered.pods.len(),
        offered.namespace
    );
    for (i, c) in offered.pods.iter().enumerate() {
        let mut about = Vec::new();
        if let Some(created) = &c.created {
            about.push(format!("created {created}"));
        }
        about.push(if c.ready { "Ready" } else { "not Ready" }.to_string());
        if !c.why.is_empty() {
            about.push(c.why.clone());
        }
        text.push_str(&format!(
            "  {}) {}  ({})\n",
            i + 1,
            c.name,
            about.join(", ")
        ));
    }
    text
}

/// Shows the menu and reads a number on the terminal (Enter: the first).
pub(super) fn ask(menu: &str, count: usize) -> anyhow::Result<usize> {
    let mut err = std::io::stderr().lock();
    write!(err, "{menu}")?;
    let stdin = std::io::stdin();
    loop {
        write!(err, "Which one? [1-{count}, Enter: 1] ")?;
        err.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Err(anyhow!("no pod chosen (end of input)"));
        }
        let line = line.trim();
        if line.is_empty() {
            return Ok(0);
        }
        match line.parse::<usize>() {
            Ok(n) if (1..=count).contains(&n) => return Ok(n - 1),
            _ => writeln!(err, "Please type a number from 1 to {count}.")?,
        }
    }
}

/// The user's command line with `name` as its TARGET: `podtun jupyter NAME --via login -n demo`.
pub fn command_for(name: &str) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    render_command(&args, name)
}

/// `podtun SUBCOMMAND NAME REST…`, each word shell-quoted when it needs to be.
fn render_command(args: &[String], name: &str) -> String {
    let mut words = vec!["podtun".to_string()];
    let mut rest = args.iter();
    match rest.next() {
        Some(sub) => words.push(quote(sub)),
        None => words.push(subcommand("generic").to_string()),
    }
    words.push(quote(name));
    words.extend(rest.map(|a| quote(a)));
    words.join(" ")
}

/// `word`, single-quoted for a POSIX shell when it holds anything but safe characters.
pub(super) fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_users_with_the_pod_added() {
        let args: Vec<String> = [
            "jupyter",
            "--via",
            "login",
            "-n",
            "demo",
            "--kubeconfig",
            "/x y/kc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            render_command(&args, "alice-2"),
            "podtun jupyter alice-2 --via login -n demo --kubeconfig '/x y/kc'"
        );
    }
}
