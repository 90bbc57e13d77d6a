//! No TARGET: the Running pods of the namespace that fit the preset, newest first. One is taken,
//! several go to a chooser (the laptop's terminal, through the agent in via mode), none is an
//! error listing what there is and what was looked for.
//!
//! Cluster half: no SSH and no printing here. The chooser is given by the caller.

use anyhow::anyhow;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::client::Cluster;
use super::discover::container::containers;
use super::discover::container::words;
use super::discover::preset::serves_preset;
use super::discover::Preset;
use super::resolve::{api_error, Progress};
use crate::error::hinted;
use crate::proto::wire::{Candidate, Candidates};

/// Asks someone to choose among several pods: the chosen name, or an error (nobody can choose;
/// it lists them).
pub type Choose<'a> =
    &'a (dyn Fn(Candidates) -> BoxFuture<'static, anyhow::Result<String>> + Send + Sync);

/// Pods listed in an error at most; the rest are counted.
const LISTED: usize = 12;

/// Finds the pod to use without a TARGET.
pub async fn pick(
    cluster: &Cluster,
    preset: Preset,
    progress: Progress<'_>,
    choose: Choose<'_>,
) -> anyhow::Result<String> {
    let ns = &cluster.namespace;
    progress(&format!(
        "looking for {} pods in namespace `{ns}`",
        noun(preset)
    ));
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let pods = api
        .list(&Default::default())
        .await
        .map_err(|e| api_error(e, &format!("list the pods of namespace `{ns}`"), ns))?
        .items;
    let found = candidates(&pods, preset);
    let name = match (found.len(), preset) {
        (0, _) => return Err(none_fit(ns, preset, &pods)),
        (1, Preset::Jupyter | Preset::Redis) => found[0].name.clone(),
        _ => {
            let offered = Candidates {
                namespace: ns.clone(),
                preset: preset.as_str().to_string(),
                pods: found.clone(),
            };
            let name = choose(offered).await?;
            if !found.iter().any(|c| c.name == name) {
                return Err(anyhow!("pod `{ns}/{name}` was not among the pods offered"));
            }
            name
        }
    };
    progress(&format!("using pod `{ns}/{name}`"));
    Ok(name)
}

/// The Running pods (not being deleted) that fit `preset`, newest first (then by name).
/// `Generic` fits every Running pod.
pub fn candidates(pods: &[Pod], preset: Preset) -> Vec<Candidate> {
    let running: Vec<&Pod> = pods.iter().filter(|p| phase(p) == "Running").collect();
    fitting(running, preset)
}

/// The pods among `pods` (not being deleted, in any phase) that fit `preset`, newest first
/// (then by name).
pub fn fitting<'a>(pods: impl IntoIterator<Item = &'a Pod>, preset: Preset) -> Vec<Candidate> {
    let mut fit: Vec<(&Pod, Candidate)> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let why = fits(p, preset)?;
            let ready = matches!(
                super::discover::pod_state(p, None),
                super::discover::PodState::Ready
            );
            Some((
                p,
                Candidate {
                    name: p.metadata.name.clone()?,
                    created: p
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.to_string()),
                    ready,
                    why,
                },
            ))
        })
        .collect();
    fit.sort_by(|(a, ca), (b, cb)| {
        let created = |p: &Pod| p.metadata.creation_timestamp.clone();
        created(b)
            .cmp(&created(a))
            .then_with(|| ca.name.cmp(&cb.name))
    });
    fit.into_iter().map(|(_, c)| c).collect()
}

/// Why `pod` fits `preset` (`image quay.io/jupyter/…`), or `None`.
fn fits(pod: &Pod, preset: Preset) -> Option<String> {
    if preset == Preset::Generic {
        return Some(String::new());
    }
    let c = containers(pod).iter().find(|c| serves_preset(c, preset))?;
    let word = match preset {
        Preset::Redis => "redis",
        _ => "jupyter",
    };
    let image = c.image.as_deref().unwrap_or_default();
    let why = if image.contains(word) || image.contains("notebook") {
        format!("image {image}")
    } else if words(c).iter().any(|w| w.contains(word)) {
        format!("container `{}` runs {word}", c.name)
    } else {
        format!("container `{}` declares the {word} port", c.name)
    };
    Some(why)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// `Jupyter`, `redis`, or `Running` for the generic preset.
fn noun(preset: Preset) -> &'static str {
    match preset {
        Preset::Jupyter => "Jupyter",
        Preset::Redis => "redis",
        Preset::Generic => "Running",
    }
}

/// The subcommand of a preset: `jupyter`, `redis`, or `forward` for the generic one.
pub fn subcommand(preset: &str) -> &str {
    match preset {
        "generic" => "forward",
        other => other,
    }
}

/// What "fits" means, for messages.
pub fn looked_for(preset: Preset) -> &'static str {
    match preset {
        Preset::Jupyter => "a Running pod with a container port named jupyter, notebook or lab, or port 8888, or a container whose command, args or image mentions jupyter or notebook",
        Preset::Redis => "a Running pod with a container port named redis, or port 6379, or a container whose command, args or image mentions redis",
        Preset::Generic => "a Running pod",
    }
}

/// No pod fits: say what was looked for and what there is.
fn none_fit(ns: &str, preset: Preset, pods: &[Pod]) -> anyhow::Error {
    let mut seen: Vec<String> = pods
        .iter()
        .filter_map(|p| Some(format!("{} ({})", p.metadata.name.as_deref()?, phase(p))))
        .collect();
    seen.sort();
    let there = if seen.is_empty() {
        format!("namespace `{ns}` has no pods (or none you may list); check `-n` and `--context`")
    } else {
        format!("pods in namespace `{ns}`: {}", listed(&seen))
    };
    let name = match preset {
        Preset::Generic => "podtun forward NAME",
        Preset::Jupyter => "podtun jupyter NAME",
        Preset::Redis => "podtun redis NAME",
    };
    hinted(
        anyhow!(
            "no {} pod in namespace `{ns}` (looked for {})",
            noun(preset),
            looked_for(preset)
        ),
        format!("{there}; start one, or name the pod: `{name}`"),
    )
}

/// Several pods fit and nobody can choose: list each with the command that uses it.
/// `command` renders the command line for one pod name.
pub fn several(offered: &Candidates, command: &dyn Fn(&str) -> String) -> anyhow::Error {
    let ns = &offered.namespace;
    let what = match offered.preset.as_str() {
        "jupyter" => "Jupyter pods",
        "redis" => "redis pods",
        _ => "Running pods",
    };
    let lines: Vec<String> = offered
        .pods
        .iter()
        .take(LISTED)
        .map(|c| format!("    {}", command(&c.name)))
        .collect();
    let more = offered.pods.len().saturating_sub(LISTED);
    let more = if more > 0 {
        format!("\n    … and {more} more")
    } else {
        String::new()
    };
    hinted(
        anyhow!(
            "{} {what} in namespace `{ns}`, and no terminal to choose on",
            offered.pods.len()
        ),
        format!("name the pod; newest first:\n{}{more}", lines.join("\n")),
    )
}

/// "3 pods … : a, b, c and 2 more".
fn listed(names: &[String]) -> String {
    let shown = names[..names.len().min(LISTED)].join(", ");
    match names.len().saturating_sub(LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, created: &str, phase: &str, container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "demo", "creationTimestamp": created},
            "spec": {"containers": [container]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn running_pods_that_fit_newest_first() {
        let pods = [
            pod(
                "alice-1",
                "2026-01-01T10:00:00Z",
                "Running",
                json!({"name": "nb", "image": "ucsdets/scipy-ml-notebook"}),
            ),
            pod(
                "alice-2",
                "2026-01-02T10:00:00Z",
                "Running",
                json!({"name": "nb", "command": ["jupyter", "lab"]}),
            ),
            pod(
                "alice-3",
                "2026-01-03T10:00:00Z",
                "Pending",
                json!({"name": "nb", "command": ["jupyter", "lab"]}),
            ),
            pod(
                "redis-0",
                "2026-01-04T10:00:00Z",
                "Running",
                json!({"name": "r", "image": "redis:7"}),
            ),
            pod(
                "web",
                "2026-01-05T10:00:00Z",
                "Running",
                json!({"name": "w", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}),
            ),
        ];
        let names = |preset| -> Vec<String> {
            candidates(&pods, preset)
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names(Preset::Jupyter), ["alice-2", "alice-1"]);
        assert_eq!(names(Preset::Redis), ["redis-0"]);
        assert_eq!(
            names(Preset::Generic),
            ["web", "redis-0", "alice-2", "alice-1"]
        );
        let found = candidates(&pods, Preset::Jupyter);
        assert_eq!(found[0].why, "container `nb` runs jupyter");
        assert_eq!(found[1].why, "image ucsdets/scipy-ml-notebook");
    }

    #[test]
    fn several_lists_each_command() {
        let offered = Candidates {
            namespace: "demo".into(),
            preset: "jupyter".into(),
            pods: ["b", "a"]
                .iter()
                .map(|n| Candidate {
                    name: n.to_string(),
                    created: None,
                    ready: true,
                    why: String::new(),
                })
                .collect(),
        };
        let err = several(&offered, &|n| format!("podtun jupyter {n} --via login"));
        let text = crate::error::render(&err);
        assert!(
            text.contains("2 Jupyter pods in namespace `demo`"),
            "{text}"
        );
        assert!(
            text.contains("    podtun jupyter b --via login\n    podtun jupyter a --via login"),
            "{text}"
        );
    }

    #[test]
    fn none_says_what_was_looked_for_and_what_exists() {
        let pods = [pod(
            "redis-0",
            "2026-01-04T10:00:00Z",
            "Running",
            json!({"name": "r", "image": "redis:7"}),
        )];
        let text = crate::error::render(&none_fit("demo", Preset::Jupyter, &pods));
        assert!(
            text.contains("no Jupyter pod in namespace `demo`"),
            "{text}"
        );
        assert!(text.contains("port 8888"), "{text}");
        assert!(
            text.contains("pods in namespace `demo`: redis-0 (Running)"),
            "{text}"
        );
    }
}
