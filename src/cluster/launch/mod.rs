//! Launching the pod podtun then forwards to: a launcher command that creates it (`--launch`),
//! or a pod podtun creates itself from an image (`--image`); and deleting it again.
//!
//! Cluster half: the launcher runs through a [`Shell`] the caller gives (this machine, or the
//! login host over SSH in kubectl mode), and the pod is reported through `launched` as soon as
//! it is known, so that the caller can delete it whatever happens next.

pub mod command;
pub mod delete;
pub mod image;
pub mod rights;
pub mod shell;

pub use command::Around;
pub use shell::{Shell, ThisMachine};

use crate::cluster::client::Cluster;
use crate::cluster::discover::PortSpec;
use crate::cluster::tunnel::Spec;
use crate::proto::wire::Launch;

/// Hears of a launched pod's name as soon as it exists.
pub type OnLaunched<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Launches the pod `launch` describes, once the user's rights allow it; its name.
pub async fn launch(
    cluster: &Cluster,
    launch: &Launch,
    spec: &Spec,
    around: &Around<'_>,
) -> anyhow::Result<String> {
    (around.progress)(&format!(
        "checking that you may launch pods in namespace `{}`",
        cluster.namespace
    ));
    rights::check(cluster).await?;
    match launch {
        Launch::Command(command) => {
            command::launch(cluster, command, spec.preset, spec.timeout, around).await
        }
        Launch::Image(template) => {
            (around.progress)(&format!(
                "creating a pod from image `{}` in namespace `{}`",
                template.image, cluster.namespace
            ));
            let ports: Vec<u16> = spec
                .ports
                .iter()
                .filter_map(|p| match p.remote {
                    PortSpec::Number(n) => Some(n),
                    PortSpec::Name(_) => None,
                })
                .collect();
            let name = image::create(cluster, template, spec.preset, &ports).await?;
            (around.launched)(&name);
            Ok(name)
        }
    }
}
