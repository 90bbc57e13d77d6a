//! Images, as far as the runtime needs them: what a container runs (the image's entrypoint,
//! cmd and user, overridden by the container's command, args and securityContext, as Docker
//! and the kubelet do), and the kubelet's pull failures for an image it cannot get.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;

use super::container::{INITIAL_BACKOFF, MAX_BACKOFF};
use super::PodRuntime;
use crate::cluster::Cluster;
use crate::config::ImageConfig;
use crate::reference;

/// What to start for a container.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Launch {
    pub argv: Vec<String>,
    /// The image's USER, for when no securityContext names one.
    pub user: Option<(u32, u32)>,
}

/// Why the kubelet cannot start a container from its image.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unavailable {
    /// The pull failed: the runtime's error.
    Pull(String),
    /// `imagePullPolicy: Never` and the image is not on the node.
    NeverPull(String),
}

/// The images the runtime knows, by their fully qualified reference.
pub(crate) fn index(images: &BTreeMap<String, ImageConfig>) -> BTreeMap<String, ImageConfig> {
    images
        .iter()
        .map(|(name, config)| (reference::parse(name).full(), config.clone()))
        .collect()
}

fn given(list: &Option<Vec<String>>) -> Option<&Vec<String>> {
    list.as_ref().filter(|l| !l.is_empty())
}

/// What `spec` runs. A known image supplies what the container leaves out; an unknown one is
/// fine as long as the container says what to run (the test cluster runs programs on the
/// host), and otherwise cannot be pulled.
pub(super) fn launch(
    images: &BTreeMap<String, ImageConfig>,
    spec: &Container,
) -> Result<Launch, Unavailable> {
    let image = spec.image.as_deref().unwrap_or("");
    let known = images.get(&reference::parse(image).full());
    let (command, args) = (given(&spec.command), given(&spec.args));
    let Some(config) = known else {
        if let Some(command) = command {
            let mut argv = command.clone();
            argv.extend(args.into_iter().flatten().cloned());
            return Ok(Launch { argv, user: None });
        }
        let tagged = reference::with_default_tag(image);
        if spec.image_pull_policy.as_deref() == Some("Never") {
            return Err(Unavailable::NeverPull(format!(
                "Container image {tagged:?} is not present with pull policy of Never"
            )));
        }
        let full = reference::parse(image).full();
        return Err(Unavailable::Pull(format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image {full:?}: failed \
             to resolve reference {full:?}: {full}: not found"
        )));
    };
    let mut argv = command.unwrap_or(&config.entrypoint).clone();
    match (command, args) {
        (_, Some(args)) => argv.extend(args.iter().cloned()),
        (None, None) => argv.extend(config.cmd.iter().cloned()),
        (Some(_), None) => {}
    }
    Ok(Launch {
        argv,
        user: config.user,
    })
}

/// The kubelet failing to get the image, until the pod is deleted: `ErrImagePull` with the
/// runtime's error, then `ImagePullBackOff` for a back-off that doubles, then another try.
pub(super) async fn fail(cluster: &Cluster, rt: &PodRuntime, idx: usize, why: Unavailable) {
    let image = rt.lock().containers[idx].status.image.clone();
    let tagged = reference::with_default_tag(&image);
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let wait = match &why {
            Unavailable::NeverPull(message) => {
                rt.lock().containers[idx].set_waiting("ErrImageNeverPull", Some(message.clone()));
                rt.publish(cluster);
                Duration::MAX
            }
            Unavailable::Pull(error) => {
                rt.lock().containers[idx].set_waiting("ErrImagePull", Some(error.clone()));
                rt.publish(cluster);
                if !pause(rt, INITIAL_BACKOFF).await {
                    return;
                }
                let message = format!("Back-off pulling image {tagged:?}: ErrImagePull: {error}");
                rt.lock().containers[idx].set_waiting("ImagePullBackOff", Some(message));
                rt.publish(cluster);
                backoff
            }
        };
        if !pause(rt, wait).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps `d`; false if the pod was deleted meanwhile.
async fn pause(rt: &PodRuntime, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d.min(Duration::from_secs(86_400))) => true,
        _ = rt.cancel.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let list = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: list(command),
            args: list(args),
            ..Container::default()
        }
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd() {
        let images = index(&BTreeMap::from([(
            "quay.io/jupyter/base-notebook:2024-12-02".to_string(),
            ImageConfig::new(&["tini", "--"], &["start-notebook.py"]).with_user(1000, 100),
        )]));
        let nb = "quay.io/jupyter/base-notebook:2024-12-02";
        let argv = |c: &Container| launch(&images, c).expect("launch").argv;
        assert_eq!(
            argv(&container(nb, &[], &[])),
            ["tini", "--", "start-notebook.py"]
        );
        assert_eq!(argv(&container(nb, &[], &["x"])), ["tini", "--", "x"]);
        assert_eq!(argv(&container(nb, &["sh"], &[])), ["sh"]);
        assert_eq!(
            argv(&container(nb, &["sh"], &["-c", "x"])),
            ["sh", "-c", "x"]
        );
        assert_eq!(
            launch(&images, &container(nb, &[], &[])).map(|l| l.user),
            Ok(Some((1000, 100)))
        );
        // An unknown image runs the command it is given, as the test cluster always did.
        assert_eq!(
            argv(&container("busybox", &["sleep"], &["1"])),
            ["sleep", "1"]
        );
        assert_eq!(
            launch(&images, &container("nosuch", &[], &[])),
            Err(Unavailable::Pull(
                "rpc error: code = NotFound desc = failed to pull and unpack image \
                 \"docker.io/library/nosuch:latest\": failed to resolve reference \
                 \"docker.io/library/nosuch:latest\": docker.io/library/nosuch:latest: not found"
                    .into()
            ))
        );
    }
}
