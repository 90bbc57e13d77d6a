//! Images the runtime knows (entrypoint, cmd, user), and the kubelet's pull failures for the
//! ones it does not.

mod common;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use testcluster::ImageConfig;

use common::{container_status, phase, waiting_reason};

const IMAGE: &str = "example.com/echo:1";

fn pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  \
         containers:\n  - name: main\n    image: {image}\n{extra}"
    )
}

async fn log_of(pods: &Api<Pod>, name: &str) -> String {
    common::poll(
        || async {
            pods.logs(name, &LogParams::default())
                .await
                .ok()
                .filter(|l| l.lines().count() >= 2)
        },
        &format!("the log of {name}"),
    )
    .await
}

#[tokio::test]
async fn images_supply_what_the_container_leaves_out() {
    let env = common::start_with(|c| {
        let script = "echo run:$0:$*; id -u; exec sleep 600";
        let image = ImageConfig::new(&["sh", "-c", script], &["image-cmd"]).with_user(1000, 100);
        c.images.insert(IMAGE.into(), image);
    })
    .await;
    let yaml = [
        pod("plain", IMAGE, ""),
        pod("args", IMAGE, "    args: [a1, a2]\n"),
        pod(
            "own",
            IMAGE,
            "    command: [sh, -c, 'echo own; id -u; exec sleep 600']\n",
        ),
        pod("as", IMAGE, "    securityContext: {runAsUser: 1234}\n"),
    ]
    .join("---\n");
    env.cluster.apply_yaml(&yaml).expect("apply");
    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");
    let root = nix::unistd::geteuid().is_root();
    let me = nix::unistd::geteuid().to_string();
    let uid = |image: &str| if root { image.to_string() } else { me.clone() };
    assert_eq!(
        log_of(&pods, "plain").await,
        format!("run:image-cmd:\n{}\n", uid("1000"))
    );
    assert_eq!(
        log_of(&pods, "args").await,
        format!("run:a1:a2\n{}\n", uid("1000"))
    );
    assert_eq!(
        log_of(&pods, "own").await,
        format!("own\n{}\n", uid("1000"))
    );
    assert_eq!(
        log_of(&pods, "as").await,
        format!("run:image-cmd:\n{}\n", uid("1234"))
    );

    let running = env.cluster.pod("demo", "plain").expect("pod");
    let c = container_status(&running).expect("status");
    assert_eq!(c.image, IMAGE);
    assert!(
        c.image_id.starts_with("example.com/echo@sha256:"),
        "{}",
        c.image_id
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_keeps_the_pod_pending() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&pod("pull", "nosuch", ""))
        .expect("apply");
    let not_found = "rpc error: code = NotFound desc = failed to pull and unpack image \
                     \"docker.io/library/nosuch:latest\": failed to resolve reference \
                     \"docker.io/library/nosuch:latest\": docker.io/library/nosuch:latest: \
                     not found";
    let waiting = |reason: &'static str| {
        move |p: &Pod| {
            let w = container_status(p)?.state.as_ref()?.waiting.clone()?;
            (w.reason.as_deref() == Some(reason)).then_some(w.message.unwrap_or_default())
        }
    };
    let message = env.wait_pod("demo", "pull", waiting("ErrImagePull")).await;
    assert_eq!(message, not_found);
    let message = env
        .wait_pod("demo", "pull", waiting("ImagePullBackOff"))
        .await;
    assert_eq!(
        message,
        format!("Back-off pulling image \"nosuch:latest\": ErrImagePull: {not_found}")
    );
    let pulling = env.cluster.pod("demo", "pull").expect("pod");
    assert_eq!(phase(&pulling), Some("Pending"));
    assert!(!common::is_ready(&pulling));

    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");
    let err = pods
        .logs("pull", &LogParams::default())
        .await
        .expect_err("no log");
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    let reason = waiting_reason(&env.cluster.pod("demo", "pull").expect("pod"));
    assert!(
        status.message
            == "container \"main\" in pod \"pull\" is waiting to start: trying and failing to \
                pull image"
            || status.message
                == "container \"main\" in pod \"pull\" is waiting to start: image can't be pulled",
        "{} ({reason:?})",
        status.message
    );

    env.cluster
        .apply_yaml(&pod("never", "nosuch:2", "    imagePullPolicy: Never\n"))
        .expect("apply");
    let message = env
        .wait_pod("demo", "never", waiting("ErrImageNeverPull"))
        .await;
    assert_eq!(
        message,
        "Container image \"nosuch:2\" is not present with pull policy of Never"
    );
    env.cluster
        .delete_pod("demo", "pull")
        .await
        .expect("delete");
    env.shutdown().await;
}
