//! Starting a container's process: argv with `$(VAR)` expansion, the executable looked up as
//! the runtime would (so a missing one reads like containerd's error), env, a fresh home
//! directory per run, the pod's user and network, and a process group of its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSecurityContext, SecurityContext};
use tokio::process::Child;

use super::PodRuntime;
use crate::cluster::Cluster;

/// The user and group to run as: container level over pod level over the image's USER, and
/// only when we are root.
fn run_as(
    pod: Option<&PodSecurityContext>,
    c: Option<&SecurityContext>,
    image: Option<(u32, u32)>,
) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let group = c
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    let user = c
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let (uid, gid) = match (user, image) {
        (Some(uid), _) => (uid, group.unwrap_or(uid)),
        (None, Some((uid, gid))) => (uid.into(), group.unwrap_or(gid.into())),
        (None, None) => return None,
    };
    Some((u32::try_from(uid).ok()?, u32::try_from(gid).ok()?))
}

/// Finds `program` as execvp would, so a missing executable is reported as the runtime does.
fn resolve(program: &str, path: &OsString) -> Result<PathBuf, String> {
    let found = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if found(&p) {
            Ok(p)
        } else {
            Err(format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{program}\": stat {program}: no such file or directory: unknown"
            ))
        };
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| found(p))
        .ok_or_else(|| {
            format!(
                "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"{program}\": executable file not found in $PATH: unknown"
            )
        })
}

/// Replaces `$(VAR)` with the container's env value, as the kubelet expands command and args.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(pos) = rest.find("$(") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.pop();
            out.push_str("$(");
            rest = after;
            continue;
        }
        match after.find(')') {
            Some(end) => match env.iter().rev().find(|(k, _)| k == &after[..end]) {
                Some((_, v)) => {
                    out.push_str(v);
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[pos..pos + 3 + end]);
                    rest = &after[end + 1..];
                }
            },
            None => {
                out.push_str(&rest[pos..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn env_value(var: &EnvVar, rt: &PodRuntime) -> Option<String> {
    if let Some(value) = &var.value {
        return Some(value.clone());
    }
    let field = var
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()?
        .field_path
        .as_str();
    Some(match field {
        "metadata.name" => rt.key.name.clone(),
        "metadata.namespace" => rt.key.ns.clone(),
        "metadata.uid" => rt.uid.clone(),
        "status.podIP" => rt.pod_ip.clone(),
        "spec.nodeName" => super::NODE_NAME.to_string(),
        _ => return None,
    })
}

pub(super) fn spawn(
    cluster: &Cluster,
    rt: &PodRuntime,
    spec: &Container,
    run: u32,
) -> Result<Child, String> {
    let env: Vec<(String, String)> = spec
        .env
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), env_value(v, rt)?)))
        .collect();
    // The kubelet expands `$(VAR)` in the container's command and args, not in the image's.
    let expanded = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|l| l.iter().map(|a| expand(a, &env)).collect::<Vec<_>>())
    };
    let spec = Container {
        command: expanded(&spec.command),
        args: expanded(&spec.args),
        ..spec.clone()
    };
    let launch = super::image::launch(&cluster.images, &spec).map_err(|_| {
        format!(
            "image {:?} is not available",
            spec.image.as_deref().unwrap_or("")
        )
    })?;
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(format!(
            "failed to generate container \"{}\" spec: failed to generate spec: no command specified",
            spec.name
        ));
    };
    let program = resolve(program, &cluster.path)?;
    let network = rt
        .network
        .get()
        .ok_or_else(|| "pod network is not ready".to_string())?;
    let dir = cluster
        .dir
        .join("pods")
        .join(&rt.key.ns)
        .join(format!(
            "{}-{}",
            rt.key.name,
            &rt.uid[..rt.uid.len().min(8)]
        ))
        .join(format!("{}-{run}", spec.name));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let spec_sc = rt
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let run_as = run_as(spec_sc, spec.security_context.as_ref(), launch.user);
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("could not chown {}: {e}", dir.display()))?;
    }
    let program = program.to_string_lossy().into_owned();
    let mut cmd = network.command(&program, args, run_as);
    cmd.env_clear()
        .env("PATH", &cluster.path)
        .env("HOME", &dir)
        .env("HOSTNAME", &rt.key.name)
        .envs(env)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| {
        format!("failed to create containerd task: failed to start container process: exec: \"{program}\": {e}: unknown")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_references() {
        let env = vec![("PORT".to_string(), "8888".to_string())];
        assert_eq!(expand("--port=$(PORT)", &env), "--port=8888");
        assert_eq!(expand("$(MISSING)x", &env), "$(MISSING)x");
        assert_eq!(expand("$$(PORT)", &env), "$(PORT)");
        assert_eq!(expand("plain", &env), "plain");
    }

    #[test]
    fn missing_programs_are_reported_like_the_runtime() {
        let path = OsString::from("/usr/bin:/bin");
        assert!(resolve("sh", &path).is_ok());
        let err = resolve("no-such-program-xyz", &path).unwrap_err();
        assert!(err.contains("executable file not found in $PATH"), "{err}");
    }
}
