//! `podtun agent delete-pod [--kubeconfig=PATH] [--context=NAME] NAMESPACE NAME`: deletes a pod
//! podtun launched, as the login host's watchdog does once the laptop is gone. One line on
//! stdout says what happened; a failure is the error, with a non-zero exit.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use crate::cluster::client;
use crate::cluster::launch::delete::{delete_pod, Deleted, ALREADY_GONE};
use crate::error::{hinted, UsageError};
use crate::proto::wire::ClusterRef;

/// The command's form, for usage errors.
pub const USAGE: &str = "delete-pod [--kubeconfig=PATH] [--context=NAME] NAMESPACE NAME";
/// Bound on connecting and deleting: the watchdog waits for this command's end.
const DELETE_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed `delete-pod`.
#[derive(Debug, PartialEq, Eq)]
struct DeletePod {
    cluster: ClusterRef,
    namespace: String,
    name: String,
}

/// Parses the words after `delete-pod`.
fn parse(args: &[String]) -> Result<DeletePod, UsageError> {
    let wrong = |why: &str| UsageError(format!("`podtun agent {USAGE}`: {why}"));
    let mut cluster = ClusterRef::default();
    let mut names = Vec::new();
    for arg in args {
        if let Some(path) = arg.strip_prefix("--kubeconfig=") {
            cluster.kubeconfig = Some(PathBuf::from(path));
        } else if let Some(context) = arg.strip_prefix("--context=") {
            cluster.context = Some(context.to_string());
        } else if arg.starts_with('-') {
            return Err(wrong(&format!("unknown option `{arg}`")));
        } else {
            names.push(arg.clone());
        }
    }
    match <[String; 2]>::try_from(names) {
        Ok([namespace, name]) if !namespace.is_empty() && !name.is_empty() => Ok(DeletePod {
            cluster,
            namespace,
            name,
        }),
        _ => Err(wrong("expected a namespace and a pod name")),
    }
}

/// Runs `delete-pod ARGS` until the pod is deleted, or `shutdown` resolves.
pub async fn run(args: &[String], shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let DeletePod {
        cluster,
        namespace,
        name,
    } = parse(args)?;
    let work = async {
        let cluster = client::connect(&cluster).await?;
        delete_pod(&cluster, &namespace, &name).await
    };
    let done = tokio::select! {
        done = tokio::time::timeout(DELETE_TIMEOUT, work) => done,
        () = shutdown => return Err(anyhow!("stopped before pod {namespace}/{name} was deleted")),
    };
    match done {
        Ok(Ok(Deleted::Deleted)) => println!("deleted pod {namespace}/{name}"),
        Ok(Ok(Deleted::AlreadyGone)) => println!("pod {namespace}/{name} {ALREADY_GONE}"),
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(hinted(
                anyhow!(
                    "could not delete pod {namespace}/{name} within {}s",
                    DELETE_TIMEOUT.as_secs()
                ),
                "check that the API server in your kubeconfig is reachable from here",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_then_namespace_and_name() {
        let parsed = parse(&words("--kubeconfig=/k/c --context=minimal demo alice-1")).unwrap();
        assert_eq!(parsed.cluster.kubeconfig, Some(PathBuf::from("/k/c")));
        assert_eq!(parsed.cluster.context.as_deref(), Some("minimal"));
        assert_eq!(parsed.cluster.namespace, None);
        assert_eq!((&*parsed.namespace, &*parsed.name), ("demo", "alice-1"));
        let bare = parse(&words("demo alice-1")).unwrap();
        assert_eq!(bare.cluster, ClusterRef::default());
    }

    #[test]
    fn wrong_forms_are_usage_errors_with_the_form() {
        for (line, says) in [
            ("demo", "expected a namespace and a pod name"),
            ("demo a b", "expected a namespace and a pod name"),
            ("", "expected a namespace and a pod name"),
            ("--kubeconfig /k demo a", "unknown option `--kubeconfig`"),
            ("-n demo a", "unknown option `-n`"),
        ] {
            let err = parse(&words(line)).unwrap_err().0;
            assert!(err.contains(says), "{line}: {err}");
            assert!(err.contains(USAGE), "{line}: {err}");
        }
    }
}
