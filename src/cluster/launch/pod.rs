//! The launch step: the rights first, then the launcher or the image, then the tunnel to the
//! pod.

use crate::cluster::client::Cluster;
use crate::cluster::discover::{PortSpec, Target};
use crate::cluster::tunnel::{Spec, Tunnel};
use crate::proto::wire::Launch;

use super::command::{self, Around};
use super::{image, rights};

/// Launches the pod `launch` describes, then starts the tunnel `spec` describes to it.
pub async fn start_launched(
    cluster: Cluster,
    launch: &Launch,
    mut spec: Spec,
    around: &Around<'_>,
) -> anyhow::Result<Tunnel> {
    let pod = self::launch(&cluster, launch, &spec, around).await?;
    spec.target = Target::Pod(pod);
    Tunnel::start_on(cluster, spec, around.progress, around.choose).await
}

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
