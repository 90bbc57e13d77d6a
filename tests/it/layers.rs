//! The layout's rules, checked on the source: each module imports only from the layers above it
//! (ARCHITECTURE.md's code map), the ways of reaching a target never import each other, russh
//! stays in `laptop/ssh/`, the cluster half prints nothing, and no two files import each other
//! in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top to bottom: a module may import from its own entry and from entries before it.
/// Entries on one line are peers: they may not import each other.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["dirs"],
    &["net"],
    &["jupyter"],
    &["proto"],
    &["cluster"],
    &["cli"],
    &["config"],
    &["plan"],
    &["output"],
    &["tunnels"],
    &["agent"],
    &["laptop::ssh"],
    &["laptop::link"],
    &["laptop::watchdog"],
    &["laptop::listen"],
    &["laptop::ready"],
    &["laptop::pick"],
    &[
        "laptop::local",
        "laptop::via",
        "laptop::host",
        "laptop::slurm",
    ],
    &["laptop::doctor"],
    &["laptop"],
];

/// One `crate::`/`super::` path in a file, where it stands.
#[derive(Debug, Clone)]
struct Import {
    line: usize,
    text: String,
    /// The module it names (the longest known module prefix of the path).
    module: String,
}

/// A source file and the module it is.
struct Source {
    path: PathBuf,
    module: String,
    imports: Vec<Import>,
}

#[test]
fn modules_keep_the_layers_routes_and_ssh_boundaries_without_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&root);
    assert!(
        problems.is_empty(),
        "the layout's rules are broken (see ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

/// The SPDY crate has no layers of its own, but no circles either.
#[test]
fn the_spdy_crate_has_no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spdy/src");
    let problems: Vec<String> = check(&root)
        .into_iter()
        .filter(|p| p.starts_with("circle"))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The rules fail on imports that break them: a module importing from below, a route
/// importing another, russh outside `ssh/`, and a circle.
#[test]
fn a_wrong_import_is_named_with_its_rule() {
    let dir = tempfile::tempdir().unwrap();
    let src = &dir.path().join("src");
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "pub mod error;\npub mod cluster;\npub mod laptop;\n",
    );
    write("error.rs", "use crate::cluster::client::Cluster;\n");
    write("cluster/mod.rs", "pub mod client;\n");
    write(
        "cluster/client.rs",
        "pub struct Cluster;\nfn f() { eprintln!(\"waiting\"); }\n",
    );
    write(
        "laptop/mod.rs",
        "pub mod host;\npub mod slurm;\npub mod link;\npub mod ready;\n",
    );
    write("laptop/host.rs", "use crate::laptop::slurm::Job;\n");
    write("laptop/slurm.rs", "pub struct Job;\n");
    write(
        "laptop/link.rs",
        "use super::ready::report;\nfn f(c: russh::Channel<russh::client::Msg>) {}\n",
    );
    write("laptop/ready.rs", "use super::link::connect;\n");
    let problems = check(src).join("\n");
    for expected in [
        "src/error.rs:1: `use crate::cluster::client::Cluster;`: `error` imports `cluster`, a layer below it",
        "src/laptop/host.rs:1: `use crate::laptop::slurm::Job;`: route `laptop::host` imports route `laptop::slurm`",
        "src/laptop/link.rs:2: `fn f(c: russh::Channel<russh::client::Msg>) {}`: russh outside laptop/ssh/",
        "circle: laptop::link → laptop::ready → laptop::link",
        "src/cluster/client.rs:2: `fn f() { eprintln!(\"waiting\"); }`: the cluster half prints",
    ] {
        assert!(problems.contains(expected), "missing «{expected}» in:\n{problems}");
    }
}

/// Every rule broken under `root` (a crate's `src`), one line each.
fn check(root: &Path) -> Vec<String> {
    let sources = read_sources(root);
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let sources: Vec<Source> = sources
        .into_iter()
        .map(|mut s| {
            s.imports = imports(&s, &modules);
            s
        })
        .collect();
    let mut problems = Vec::new();
    let shown = |s: &Source, line: usize, text: &str| {
        let rel = s
            .path
            .strip_prefix(root.parent().unwrap())
            .unwrap_or(&s.path);
        format!("{}:{line}: `{}`", rel.display(), text.trim())
    };
    for source in &sources {
        let text = std::fs::read_to_string(&source.path).unwrap();
        let in_ssh = source.module == "laptop::ssh" || source.module.starts_with("laptop::ssh::");
        let in_cluster = source.module == "cluster" || source.module.starts_with("cluster::");
        for (n, line) in code_lines(&text) {
            let prints = ["println!", "eprintln!", "print!", "eprint!"];
            if in_cluster && prints.iter().any(|p| line.contains(p)) {
                problems.push(format!(
                    "{}: the cluster half prints (it reports through progress and events)",
                    shown(source, n, line)
                ));
            }
            if !in_ssh && line.contains("russh::") {
                problems.push(format!(
                    "{}: russh outside laptop/ssh/ (every SSH call lives there)",
                    shown(source, n, line)
                ));
            }
        }
        let Some(from) = layer_of(&source.module) else {
            continue;
        };
        for import in &source.imports {
            let Some(to) = layer_of(&import.module) else {
                continue;
            };
            if from.entry == to.entry {
                continue;
            }
            if to.rank > from.rank {
                problems.push(format!(
                    "{}: `{}` imports `{}`, a layer below it",
                    shown(source, import.line, &import.text),
                    from.entry,
                    to.entry
                ));
            } else if to.rank == from.rank {
                problems.push(format!(
                    "{}: route `{}` imports route `{}`; routes share only the parts above them",
                    shown(source, import.line, &import.text),
                    from.entry,
                    to.entry
                ));
            }
        }
    }
    let files: BTreeMap<&str, &Source> = sources.iter().map(|s| (s.module.as_str(), s)).collect();
    for circle in circles(&sources) {
        let mut text = format!(
            "circle: {}; each file imports the next:",
            circle.join(" → ")
        );
        for pair in circle.windows(2) {
            let source = files[pair[0]];
            if let Some(import) = source.imports.iter().find(|i| i.module == pair[1]) {
                text.push_str(&format!(
                    "\n    {}",
                    shown(source, import.line, &import.text)
                ));
            }
        }
        problems.push(text);
    }
    problems
}

/// Where a module stands in [`LAYERS`].
struct Layer {
    rank: usize,
    entry: &'static str,
}

fn layer_of(module: &str) -> Option<Layer> {
    let mut best: Option<Layer> = None;
    for (rank, entries) in LAYERS.iter().enumerate() {
        for entry in *entries {
            let within = module == *entry || module.starts_with(&format!("{entry}::"));
            if within && best.as_ref().is_none_or(|b| entry.len() > b.entry.len()) {
                best = Some(Layer { rank, entry });
            }
        }
    }
    best
}

/// The files below `root` with their module paths (`lib.rs` and `main.rs` wire everything
/// together and are left out, as are test-only files).
fn read_sources(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap();
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let file = parts.pop().unwrap();
            match file.as_str() {
                "lib.rs" | "main.rs" if parts.is_empty() => continue,
                "tests.rs" => continue,
                "mod.rs" => {}
                other => parts.push(other.trim_end_matches(".rs").to_string()),
            }
            out.push(Source {
                path,
                module: parts.join("::"),
                imports: Vec::new(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The lines of code before the file's test module (`#[cfg(test)]`, `#[cfg(all(test, …))]`),
/// comments removed, numbered.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_start = line.trim_start();
        if line_start.starts_with("#[cfg(test)]") || line_start.starts_with("#[cfg(all(test,") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        if !code.trim().is_empty() {
            out.push((i + 1, code));
        }
    }
    out
}

/// Every path to another module of the crate: `use` statements (braces expanded, children
/// named by a `mod.rs` included) and `crate::`/`super::` paths in the code.
fn imports(source: &Source, modules: &BTreeSet<String>) -> Vec<Import> {
    let text = std::fs::read_to_string(&source.path).unwrap();
    let is_mod_rs = source.path.file_name().is_some_and(|f| f == "mod.rs");
    // `super` of a file's module is its parent; a mod.rs is its folder's module.
    let here: Vec<&str> = source
        .module
        .split("::")
        .filter(|s| !s.is_empty())
        .collect();
    let mut out = Vec::new();
    let lines = code_lines(&text);
    let mut statement = String::new();
    let mut start = 0;
    for (n, line) in &lines {
        let trimmed = line.trim_start();
        let opens = trimmed.starts_with("use ") || trimmed.starts_with("pub use ");
        let opens = opens || trimmed.starts_with("pub(crate) use ");
        if statement.is_empty() && opens {
            start = *n;
        }
        if !statement.is_empty() || opens {
            statement.push_str(trimmed);
            statement.push(' ');
            if trimmed.trim_end().ends_with(';') {
                let body = statement
                    .trim()
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ")
                    .trim_start_matches("use ")
                    .trim_end_matches(';');
                for path in expand(body) {
                    out.push((start, statement.trim().to_string(), path));
                }
                statement.clear();
            }
            continue;
        }
        for path in inline_paths(line) {
            out.push((*n, line.to_string(), path));
        }
    }
    out.into_iter()
        .filter_map(|(line, text, path)| {
            let segments: Vec<&str> = path.split("::").collect();
            let absolute = resolve(&segments, &here, is_mod_rs, modules)?;
            let module = longest_module(&absolute, modules)?;
            (module != source.module).then_some(Import { line, text, module })
        })
        .collect()
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(body: &str) -> Vec<String> {
    let body: String = body.split_whitespace().collect();
    let Some(open) = body.find('{') else {
        return vec![body.split(" as ").next().unwrap_or(&body).to_string()];
    };
    let prefix = &body[..open];
    let inner = &body[open + 1..body.len().saturating_sub(1)];
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[from..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .map(|p| p.trim_end_matches("::self").to_string())
        .collect()
}

/// `crate::a::b` and `super::a` paths used in a line of code.
fn inline_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = line;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                out.push(tail[..end].trim_end_matches(':').to_string());
            }
            rest = &tail[end.max(1)..];
        }
    }
    out
}

/// A path as the module path it names from the crate's root; `None` for other crates.
fn resolve(
    segments: &[&str],
    here: &[&str],
    is_mod_rs: bool,
    modules: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let first = *segments.first()?;
    let mut base: Vec<String> = here.iter().map(|s| s.to_string()).collect();
    let rest = match first {
        "crate" => {
            base.clear();
            &segments[1..]
        }
        "self" => &segments[1..],
        "super" => {
            let mut rest = segments;
            while rest.first() == Some(&"super") {
                base.pop();
                rest = &rest[1..];
            }
            rest
        }
        // A child module named by its parent's mod.rs (`pub use session::SshSession`).
        child if is_mod_rs => {
            let mut candidate = base.clone();
            candidate.push(child.to_string());
            if !modules.contains(&candidate.join("::")) {
                return None;
            }
            segments
        }
        _ => return None,
    };
    base.extend(rest.iter().map(|s| s.to_string()));
    Some(base)
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Circles among the files: one through each set of modules that import each other.
fn circles(sources: &[Source]) -> Vec<Vec<&str>> {
    let mut graph: BTreeMap<&str, BTreeMap<&str, &Import>> = BTreeMap::new();
    for source in sources {
        let edges = graph.entry(&source.module).or_default();
        for import in &source.imports {
            edges.entry(&import.module).or_insert(import);
        }
    }
    let mut problems = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for &start in graph.keys() {
        if seen.contains(start) {
            continue;
        }
        if let Some(path) = find_circle(&graph, start) {
            seen.extend(path.iter().copied());
            problems.push(path);
        }
    }
    problems
}

/// The shortest circle back to `start`, as module names (first and last are `start`).
fn find_circle<'a>(
    graph: &BTreeMap<&'a str, BTreeMap<&'a str, &Import>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut queue = std::collections::VecDeque::from([vec![start]]);
    let mut visited = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        let last = *path.last()?;
        for &next in graph.get(last).map(|e| e.keys()).into_iter().flatten() {
            if next == start {
                let mut circle = path.clone();
                circle.push(start);
                return Some(circle);
            }
            if visited.insert(next) {
                let mut longer = path.clone();
                longer.push(next);
                queue.push_back(longer);
            }
        }
    }
    None
}
