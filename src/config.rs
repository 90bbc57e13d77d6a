//! Saved settings: one TOML file (see [`crate::dirs`]) with `[defaults]` for every forward and
//! `[profiles.NAME]` for `podtun up NAME`.
//!
//! ```toml
//! [defaults]
//! via = "dsmlp-login"
//! namespace = "alice"
//!
//! [profiles.nb]
//! preset = "jupyter"
//! target = "alice-23790"
//! local-port = 8890
//! ```
//!
//! A setting given as a flag or in the environment wins over the profile, which wins over the
//! defaults. A malformed file or an unknown key is a usage error naming file:line:col and the key.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use toml::Spanned;

use crate::cli::{
    Cli, Command, CommonArgs, ForwardArgs, HostArgs, JupyterArgs, PresetArgs, SlurmArgs, UpArgs,
};
use crate::error::usage;

/// The environment variable the agent mode travels in when only the config file sets it.
pub const AGENT_ENV: &str = "PODTUN_AGENT";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    profiles: BTreeMap<String, Settings>,
}

/// One layer of settings: `[defaults]` or a profile (which alone may name what to forward).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Settings {
    // What to forward: profiles only.
    preset: Option<Spanned<Preset>>,
    target: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<String>>>,
    selector: Option<Spanned<String>>,
    // Any flag.
    via: Option<Via>,
    namespace: Option<String>,
    context: Option<String>,
    kubeconfig: Option<PathBuf>,
    agent: Option<Agent>,
    #[serde(default, deserialize_with = "duration")]
    timeout: Option<Duration>,
    browser: Option<bool>,
    container: Option<String>,
    local_port: Option<u16>,
    address: Option<IpAddr>,
    ssh_config: Option<PathBuf>,
    remote_bin: Option<String>,
    no_install: Option<bool>,
    detach: Option<bool>,
    // Launching the pod: used when no TARGET is given.
    launch: Option<String>,
    image: Option<String>,
    cpu: Option<String>,
    memory: Option<String>,
    gpu: Option<u32>,
    keep: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    launch_grace: Option<Duration>,
}

/// `via = "login"` or `via = ["bastion", "login"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Via {
    One(String),
    Route(Vec<String>),
}

/// What a profile forwards.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Preset {
    Jupyter,
    Redis,
    Forward,
}

/// How the cluster is reached from the login host.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Agent {
    Auto,
    Podtun,
    Kubectl,
}

impl Agent {
    fn as_str(self) -> &'static str {
        match self {
            Agent::Auto => "auto",
            Agent::Podtun => "podtun",
            Agent::Kubectl => "kubectl",
        }
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(de)?;
    crate::cli::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Fills the settings the command line left open from the config file, and turns `up NAME`
/// into the command its profile describes.
pub fn apply(mut cli: Cli, matches: &ArgMatches) -> anyhow::Result<Cli> {
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(cli);
    };
    if !matches!(
        cli.command,
        Command::Jupyter(_) | Command::Redis(_) | Command::Forward(_) | Command::Up(_)
    ) {
        return Ok(cli);
    }
    let (path, named) = crate::dirs::config_file()?;
    let file = load(&path, named)?;
    cli.command = match cli.command {
        Command::Up(up) => profile_command(up, &file, &path, sub)?,
        Command::Jupyter(mut a) => {
            let named = a.preset.target.is_some() || a.slurm.slurm.is_some() || a.host.start;
            fill(&mut a.preset.common, sub, &[&file.defaults]);
            fill_launch(&mut a.preset.common, named, sub, &[&file.defaults]);
            Command::Jupyter(a)
        }
        Command::Redis(mut a) => {
            let named = a.target.is_some();
            fill(&mut a.common, sub, &[&file.defaults]);
            fill_launch(&mut a.common, named, sub, &[&file.defaults]);
            Command::Redis(a)
        }
        Command::Forward(mut a) => {
            let named = a.target.is_some();
            fill(&mut a.common, sub, &[&file.defaults]);
            fill_launch(&mut a.common, named, sub, &[&file.defaults]);
            Command::Forward(a)
        }
        other => other,
    };
    Ok(cli)
}

fn load(path: &Path, named: bool) -> anyhow::Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(ConfigFile::default())
        }
        Err(e) => {
            return Err(usage(
                format!("could not read the config file {}: {e}", path.display()),
                Some(format!("check `{}`, or unset it", crate::dirs::CONFIG_ENV)),
            ))
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at(path, &text, span.start, e.message().trim())
    })?;
    let settings = &file.defaults;
    let only_profile = [
        settings.preset.as_ref().map(Spanned::span),
        settings.target.as_ref().map(Spanned::span),
        settings.ports.as_ref().map(Spanned::span),
        settings.selector.as_ref().map(Spanned::span),
    ];
    if let Some(span) = only_profile.into_iter().flatten().next() {
        return Err(at(
            path,
            &text,
            span.start,
            "`defaults` cannot say what to forward; put it in a profile",
        ));
    }
    Ok(file)
}

/// A usage error at a byte offset of the file: `FILE:LINE:COL: key `K`: MESSAGE`.
fn at(path: &Path, text: &str, offset: usize, message: &str) -> anyhow::Error {
    let (line, col, key) = locate(text, offset);
    let key = key.map(|k| format!("key `{k}`: ")).unwrap_or_default();
    usage(
        format!("{}:{line}:{col}: {key}{message}", path.display()),
        Some("fix the file, or point `PODTUN_CONFIG` at another one".into()),
    )
}

/// Line and column (1-based, in characters) of `offset`, and the dotted key written on that
/// line, if any (`defaults.timeout`).
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text
        .get(line_start..offset)
        .map_or(1, |s| s.chars().count() + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (t, None) if line.trim().starts_with('[') => Some(
            line.trim()
                .trim_matches(|c| c == '[' || c == ']')
                .to_string(),
        )
        .or(t),
        _ => None,
    };
    (line_no, col, key)
}

/// `up NAME`: the profile's command, with the command line's flags over the profile's.
fn profile_command(
    up: UpArgs,
    file: &ConfigFile,
    path: &Path,
    matches: &ArgMatches,
) -> anyhow::Result<Command> {
    let Some(profile) = file.profiles.get(&up.profile) else {
        let names: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
        let hint = if names.is_empty() {
            format!("add a `[profiles.{}]` table to it", up.profile)
        } else {
            format!("profiles there: {}", names.join(", "))
        };
        return Err(usage(
            format!("no profile `{}` in {}", up.profile, path.display()),
            Some(hint),
        ));
    };
    let mut common = up.common;
    fill(&mut common, matches, &[profile, &file.defaults]);
    let target = up
        .target
        .or_else(|| profile.target.as_ref().map(|t| t.get_ref().clone()));
    let named = target.is_some() || common.selector.is_some();
    fill_launch(&mut common, named, matches, &[profile, &file.defaults]);
    if target.is_none() && common.selector.is_none() && !common.launch.launches() {
        return Err(usage(
            format!("profile `{}` names no target", up.profile),
            Some(format!(
                "add `target = \"POD\"` to `[profiles.{}]`, or pass it: `podtun up {} POD`",
                up.profile, up.profile
            )),
        ));
    }
    let ports = profile
        .ports
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    let preset = profile
        .preset
        .as_ref()
        .map_or(Preset::Forward, |p| *p.get_ref());
    if !matches!(preset, Preset::Forward) && ports.len() > 1 {
        return Err(usage(
            format!(
                "profile `{}` gives {} ports, but its preset forwards one",
                up.profile,
                ports.len()
            ),
            Some("keep one port, or use `preset = \"forward\"`".into()),
        ));
    }
    let preset_args = |common| PresetArgs {
        target: target.clone(),
        port: ports.first().cloned(),
        common,
    };
    Ok(match preset {
        Preset::Jupyter => Command::Jupyter(JupyterArgs {
            preset: preset_args(common),
            host: HostArgs::default(),
            slurm: SlurmArgs::default(),
        }),
        Preset::Redis => Command::Redis(preset_args(common)),
        Preset::Forward => Command::Forward(ForwardArgs {
            target,
            ports,
            common,
        }),
    })
}

/// Whether the user gave `id` on the command line or in the environment.
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches.try_contains_id(id).unwrap_or(false)
        && matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
}

/// Fills the launch settings the command line left open from `layers`, the first layer
/// winning; none when a TARGET (`named`) says which pod to use.
fn fill_launch(common: &mut CommonArgs, named: bool, matches: &ArgMatches, layers: &[&Settings]) {
    macro_rules! first {
        ($field:ident) => {
            layers.iter().find_map(|l| l.$field.clone())
        };
    }
    let launch = &mut common.launch;
    let given = ["launch", "image"].iter().any(|id| explicit(matches, id));
    if !named && !given {
        // One way of launching: the first layer that names one gives it with its resources.
        if let Some(layer) = layers
            .iter()
            .find(|l| l.launch.is_some() || l.image.is_some())
        {
            launch.launch.clone_from(&layer.launch);
            launch.image.clone_from(&layer.image);
            if layer.image.is_some() {
                launch.cpu = launch.cpu.take().or_else(|| layer.cpu.clone());
                launch.memory = launch.memory.take().or_else(|| layer.memory.clone());
                launch.gpu = launch.gpu.or(layer.gpu);
            }
        }
    }
    if !launch.launches() {
        return;
    }
    if !explicit(matches, "keep") && first!(keep) == Some(true) {
        launch.keep = true;
    }
    if !explicit(matches, "launch_grace") {
        if let Some(grace) = first!(launch_grace) {
            launch.launch_grace = grace;
        }
    }
}

/// Fills what the command line left open from `layers`, the first layer winning.
fn fill(common: &mut CommonArgs, matches: &ArgMatches, layers: &[&Settings]) {
    macro_rules! first {
        ($field:ident) => {
            layers.iter().find_map(|l| l.$field.clone())
        };
    }
    macro_rules! option {
        ($field:ident) => {
            if !explicit(matches, stringify!($field)) {
                if let Some(v) = first!($field) {
                    common.$field = Some(v);
                }
            }
        };
    }
    if !explicit(matches, "via") {
        match first!(via) {
            Some(Via::One(host)) => common.via = host.split(',').map(str::to_string).collect(),
            Some(Via::Route(hosts)) => common.via = hosts,
            None => {}
        }
    }
    option!(namespace);
    option!(context);
    option!(kubeconfig);
    option!(container);
    option!(local_port);
    option!(ssh_config);
    option!(remote_bin);
    if !explicit(matches, "selector") && !explicit(matches, "target") {
        if let Some(sel) = layers.iter().find_map(|l| l.selector.as_ref()) {
            common.selector = Some(sel.get_ref().clone());
        }
    }
    if !explicit(matches, "address") {
        if let Some(a) = first!(address) {
            common.address = a;
        }
    }
    if !explicit(matches, "timeout") {
        if let Some(t) = first!(timeout) {
            common.timeout = t;
        }
    }
    if !explicit(matches, "no_browser") && first!(browser) == Some(false) {
        common.no_browser = true;
    }
    if !explicit(matches, "no_install") && first!(no_install) == Some(true) {
        common.no_install = true;
    }
    if !explicit(matches, "detach") && first!(detach) == Some(true) {
        common.detach = true;
    }
    // The agent mode's flag reads this variable too; the config only fills it when unset.
    if let Some(agent) = first!(agent) {
        if std::env::var_os(AGENT_ENV).is_none() {
            std::env::set_var(AGENT_ENV, agent.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, true)
    }

    fn message(text: &str) -> String {
        let err = parse(text).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_USAGE);
        let msg = err.to_string();
        msg.split_once("config.toml:").unwrap().1.to_string()
    }

    #[test]
    fn profiles_and_defaults() {
        let file = parse(
            "[defaults]\nvia = \"login\"\ntimeout = \"5m\"\nagent = \"kubectl\"\n\n\
             [profiles.nb]\npreset = \"jupyter\"\ntarget = \"alice-1\"\nvia = [\"b\", \"login\"]\n",
        )
        .unwrap();
        assert_eq!(file.defaults.timeout, Some(Duration::from_secs(300)));
        assert!(matches!(file.profiles["nb"].via, Some(Via::Route(ref r)) if r.len() == 2));
    }

    #[test]
    fn errors_name_line_column_and_key() {
        assert_eq!(
            message("[defaults]\nnamespce = \"alice\"\n"),
            "2:1: key `defaults.namespce`: unknown field `namespce`, expected one of `preset`, `target`, `ports`, `selector`, `via`, `namespace`, `context`, `kubeconfig`, `agent`, `timeout`, `browser`, `container`, `local-port`, `address`, `ssh-config`, `remote-bin`, `no-install`, `detach`, `launch`, `image`, `cpu`, `memory`, `gpu`, `keep`, `launch-grace`"
        );
        assert_eq!(
            message("[profiles.nb]\ntimeout = \"5 parsecs\"\n"),
            "2:11: key `profiles.nb.timeout`: `5 parsecs` has an unknown unit (try 30s, 5m or 1h)"
        );
        assert_eq!(
            message("[defaults]\nagent = \"ssh\"\n"),
            "2:9: key `defaults.agent`: unknown variant `ssh`, expected one of `auto`, `podtun`, `kubectl`"
        );
        assert!(message("[defaults\nvia = 1\n").starts_with("1:"));
        assert!(message("[defaults]\ntarget = \"x\"\n").starts_with("2:10: key `defaults.target`"));
    }
}
