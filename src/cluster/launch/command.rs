//! `--launch COMMAND`: runs a launcher (DSMLP's `launch-scipy-ml.sh -b`, `kubectl run …`) and
//! takes the pod it created: the one it names (`pod/NAME created`, kubectl's words), else the
//! one new pod of the namespace that fits the preset.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::shell::{Ran, Shell};
use crate::cluster::client::Cluster;
use crate::cluster::discover::Preset;
use crate::cluster::pick::{fitting, Choose};
use crate::cluster::resolve::{api_error, Progress};
use crate::error::hinted;
use crate::proto::wire::Candidates;

/// Output lines quoted in an error.
const QUOTED: usize = 8;

/// The pod a line of a launcher's output says it created: `pod/NAME created`.
pub fn created(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix("pod/")?;
    let (name, verb) = rest.split_once(char::is_whitespace)?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    (valid && verb.trim() == "created").then_some(name)
}

/// Hears of a launched pod's name as soon as it exists.
pub type OnLaunched<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Everything a launch reports to, and asks, its caller.
pub struct Around<'a> {
    /// Where the launcher runs.
    pub shell: &'a dyn Shell,
    /// What podtun is waiting for.
    pub progress: Progress<'a>,
    /// Several new pods fit: the user's choice.
    pub choose: Choose<'a>,
    /// Hears of the pod as soon as it is known, so that it can be deleted whatever happens
    /// next.
    pub launched: OnLaunched<'a>,
}

/// Runs `command` where `around.shell` runs it (at most `timeout`) and finds the pod it created.
pub async fn launch(
    cluster: &Cluster,
    command: &str,
    preset: Preset,
    timeout: Duration,
    around: &Around<'_>,
) -> anyhow::Result<String> {
    let Around {
        shell,
        progress,
        choose,
        launched,
    } = *around;
    let ns = &cluster.namespace;
    let before = names(&pods(cluster).await?);
    let place = at(&shell.place());
    progress(&format!("launching the pod: `{command}`{place}"));
    let named: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let on_line = |line: &str| {
        progress(&format!("launcher: {line}"));
        if let Some(name) = created(line) {
            let mut named = named.lock().unwrap_or_else(|e| e.into_inner());
            if !named.iter().any(|n| n == name) {
                named.push(name.to_string());
                launched(name);
            }
        }
    };
    let ran = shell.run(command, timeout, &on_line).await?;
    let named = named.into_inner().unwrap_or_else(|e| e.into_inner());
    if ran.timed_out {
        return Err(hinted(
            anyhow!(
                "the launcher `{command}` was still running{place} after {}s; it printed:\n{}",
                timeout.as_secs(),
                ran.tail(QUOTED)
            ),
            "a launcher must return once the pod exists: DSMLP's launch scripts do with -b (`launch-scipy-ml.sh -b`); or give it more time with --timeout",
        ));
    }
    if ran.status != Some(0) {
        return Err(hinted(
            anyhow!(
                "the launcher `{command}` failed{place} ({}); it printed:\n{}",
                status(&ran),
                ran.tail(QUOTED)
            ),
            "run it yourself there to see why; podtun forwards to the pod once it creates one",
        ));
    }
    if let [name] = named.as_slice() {
        return there(cluster, command, name).await.map(|()| name.clone());
    }
    // It named none (or several): the new pods that fit.
    let now = pods(cluster).await?;
    let new: Vec<&Pod> = now
        .iter()
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            !before.contains(name) && (named.is_empty() || named.iter().any(|n| n == name))
        })
        .collect();
    let fit = fitting(new, preset);
    let name = match fit.as_slice() {
        [] => return Err(created_nothing(command, &place, ns, preset, &ran)),
        [one] => one.name.clone(),
        _ => {
            let offered = Candidates {
                namespace: ns.clone(),
                preset: preset.as_str().to_string(),
                pods: fit.clone(),
            };
            choose(offered).await?
        }
    };
    if !named.contains(&name) {
        launched(&name);
    }
    Ok(name)
}

/// The pod the launcher named is in the cluster's namespace, not in one of the launcher's own.
async fn there(cluster: &Cluster, command: &str, name: &str) -> anyhow::Result<()> {
    let ns = &cluster.namespace;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let found = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(e, &format!("get pod `{name}` in namespace `{ns}`"), ns))?;
    match found {
        Some(_) => Ok(()),
        None => Err(hinted(
            anyhow!("the launcher `{command}` named pod `{name}`, but namespace `{ns}` has no such pod"),
            format!("pass the namespace the launcher creates its pods in with -n (and delete `{name}` there if you do not need it)"),
        )),
    }
}

/// ` PLACE` for messages, nothing where the place goes without saying.
fn at(place: &str) -> String {
    if place.is_empty() {
        String::new()
    } else {
        format!(" {place}")
    }
}

/// The pods of the cluster's namespace.
async fn pods(cluster: &Cluster) -> anyhow::Result<Vec<Pod>> {
    let ns = &cluster.namespace;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    Ok(api
        .list(&Default::default())
        .await
        .map_err(|e| api_error(e, &format!("list the pods of namespace `{ns}`"), ns))?
        .items)
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// `exit status 3`, or how it ended otherwise.
fn status(ran: &Ran) -> String {
    match ran.status {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    }
}

/// The launcher returned, but no new pod that fits is there.
fn created_nothing(
    command: &str,
    place: &str,
    ns: &str,
    preset: Preset,
    ran: &Ran,
) -> anyhow::Error {
    let what = match preset {
        Preset::Jupyter => "Jupyter pod",
        Preset::Redis => "redis pod",
        Preset::Generic => "pod",
    };
    hinted(
        anyhow!(
            "the launcher `{command}`{place} returned, but created no {what} in namespace `{ns}`; it printed:\n{}",
            ran.tail(QUOTED)
        ),
        format!("a launcher should create the pod in namespace `{ns}` (or pass -n) and say `pod/NAME created`, as kubectl does"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_a_launcher_names() {
        assert_eq!(created("pod/alice-23790 created"), Some("alice-23790"));
        assert_eq!(created("  pod/nb.1 created  "), Some("nb.1"));
        assert_eq!(created("service/alice created"), None);
        assert_eq!(created("pod/alice-1 deleted"), None);
        assert_eq!(created("pod/Alice created"), None);
        assert_eq!(created("pod/ created"), None);
        assert_eq!(created("Error: pod/alice-1 created twice"), None);
    }
}
