//! The real kubectl creating and deleting pods as a launcher script does (`kubectl run`,
//! `kubectl create -f -`, `kubectl delete pod`), and the RBAC verdicts on those verbs for the
//! minimal-rights user of manifests/10-rbac.yaml.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use testcluster::ImageConfig;
use tokio::io::AsyncWriteExt;

/// What one kubectl run printed and how it ended.
struct Done {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn manifest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests")
        .join(name)
}

async fn start() -> common::Env {
    let env = common::start_with(|c| {
        // The redis image, as far as this test needs it: something that keeps running.
        c.images.insert(
            "redis:7-alpine".into(),
            ImageConfig::new(&["sleep", "600"], &[]),
        );
    })
    .await;
    for m in ["00-namespace.yaml", "10-rbac.yaml"] {
        env.cluster.apply_file(&manifest(m)).expect("manifest");
    }
    env
}

/// Runs kubectl against `env` in namespace demo, as `context`, with `stdin` piped in.
async fn kubectl(env: &common::Env, context: &str, args: &[&str], stdin: &str) -> Done {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.cluster.kubeconfig())
        .arg("--cache-dir")
        .arg(env.cluster.kubeconfig().with_file_name("kube-cache"))
        .args(["--context", context, "-n", "demo"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl on PATH (scripts/install-deps)");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("stdin");
    drop(input);
    let out = tokio::time::timeout(common::DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not end"))
        .expect("kubectl");
    Done {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const NOTEBOOK: &str = "apiVersion: v1
kind: Pod
metadata:
  name: t3
  labels: {app: t3}
spec:
  restartPolicy: Never
  containers:
  - name: notebook
    image: x
    command: [sleep, '600']
    ports: [{containerPort: 8888}]
    resources:
      limits: {cpu: '1', memory: 1Gi}
";

#[tokio::test]
async fn kubectl_runs_creates_and_deletes_pods() {
    let env = start().await;
    let admin = "testcluster";
    let args = [
        "run",
        "t1",
        "--image=redis:7-alpine",
        "--port=6379",
        "--restart=Never",
    ];
    let done = kubectl(&env, admin, &args, "").await;
    assert!(done.ok, "{}", done.stderr);
    assert_eq!(done.stdout, "pod/t1 created\n");
    let args = [
        "run",
        "t2",
        "--image=x",
        "--restart=Never",
        "--port",
        "8888",
        "--command",
    ];
    let done = kubectl(
        &env,
        admin,
        &[&args[..], &["--", "sleep", "300"]].concat(),
        "",
    )
    .await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod/t2 created\n"),
        "{}",
        done.stderr
    );
    let done = kubectl(&env, admin, &["create", "-f", "-"], NOTEBOOK).await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod/t3 created\n"),
        "{}",
        done.stderr
    );
    for pod in ["t1", "t2", "t3"] {
        env.cluster
            .wait_ready("demo", pod, common::DEADLINE)
            .await
            .expect("ready");
    }
    let t3 = env.cluster.pod("demo", "t3").expect("t3");
    assert_eq!(
        t3.status.and_then(|s| s.qos_class).as_deref(),
        Some("Guaranteed")
    );

    // The API server's refusals, as kubectl shows them.
    let gpu = NOTEBOOK.replace("name: t3", "name: t5").replace(
        "limits: {cpu: '1', memory: 1Gi}",
        "requests: {nvidia.com/gpu: 1}",
    );
    let done = kubectl(&env, admin, &["create", "-f", "-"], &gpu).await;
    assert!(!done.ok);
    assert_eq!(
        done.stderr,
        "The Pod \"t5\" is invalid: spec.containers[0].resources.limits: Required value: Limit \
         must be set for non overcommitable resources\n"
    );
    let typo = NOTEBOOK
        .replace("name: t3", "name: t6")
        .replace("ports:", "port:");
    let done = kubectl(&env, admin, &["create", "-f", "-"], &typo).await;
    assert!(!done.ok);
    assert_eq!(
        done.stderr,
        "Error from server (BadRequest): error when creating \"STDIN\": Pod in version \"v1\" \
         cannot be handled as a Pod: strict decoding error: unknown field \
         \"spec.containers[0].port\"\n"
    );

    let done = kubectl(&env, admin, &["delete", "pod", "t1", "--wait=false"], "").await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod \"t1\" deleted\n"),
        "{}",
        done.stderr
    );
    common::poll(
        || async { env.cluster.pod("demo", "t1").is_none().then_some(()) },
        "t1 gone",
    )
    .await;
    let done = kubectl(&env, admin, &["delete", "pod", "t2"], "").await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod \"t2\" deleted\n"),
        "{}",
        done.stderr
    );
    assert!(
        env.cluster.pod("demo", "t2").is_none(),
        "kubectl delete waits until the pod is gone"
    );
    env.shutdown().await;
}

/// Whether the minimal user may `verb` pods in demo, by a SelfSubjectAccessReview (JSON).
async fn may(env: &common::Env, verb: &str) -> bool {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(env.client("minimal").await);
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("demo".into()),
                verb: Some(verb.into()),
                resource: Some("pods".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("review");
    answer.status.expect("status").allowed
}

const LAUNCHER_RBAC: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: launcher, namespace: demo}
rules:
- apiGroups: ['']
  resources: [pods]
  verbs: [create, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: launcher, namespace: demo}
subjects:
- {kind: User, name: podtun-user, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: launcher, apiGroup: rbac.authorization.k8s.io}
";

#[tokio::test]
async fn creating_and_deleting_pods_needs_those_verbs() {
    let env = start().await;
    let run = ["run", "t1", "--image=redis:7-alpine", "--restart=Never"];
    let done = kubectl(&env, "minimal", &run, "").await;
    assert!(!done.ok);
    assert_eq!(
        done.stderr,
        "Error from server (Forbidden): pods is forbidden: User \"podtun-user\" cannot create \
         resource \"pods\" in API group \"\" in the namespace \"demo\"\n"
    );
    env.cluster
        .apply_yaml(&common::sh_pod("demo", "t2", "app: t2", "sleep 600", ""))
        .expect("apply");
    let done = kubectl(
        &env,
        "minimal",
        &["delete", "pod", "t2", "--wait=false"],
        "",
    )
    .await;
    assert!(!done.ok);
    assert_eq!(
        done.stderr,
        "Error from server (Forbidden): pods \"t2\" is forbidden: User \"podtun-user\" cannot \
         delete resource \"pods\" in API group \"\" in the namespace \"demo\"\n"
    );
    assert!(!may(&env, "create").await && !may(&env, "delete").await);
    assert!(may(&env, "get").await);
    // kubectl asks in protobuf.
    let can_i = kubectl(&env, "minimal", &["auth", "can-i", "create", "pods"], "").await;
    assert_eq!(
        (can_i.ok, can_i.stdout.as_str()),
        (false, "no\n"),
        "{}",
        can_i.stderr
    );

    env.cluster.apply_yaml(LAUNCHER_RBAC).expect("rbac");
    assert!(may(&env, "create").await && may(&env, "delete").await);
    let can_i = kubectl(&env, "minimal", &["auth", "can-i", "delete", "pods"], "").await;
    assert_eq!(
        (can_i.ok, can_i.stdout.as_str()),
        (true, "yes\n"),
        "{}",
        can_i.stderr
    );
    let done = kubectl(&env, "minimal", &run, "").await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod/t1 created\n"),
        "{}",
        done.stderr
    );
    let done = kubectl(
        &env,
        "minimal",
        &["delete", "pod", "t1", "--wait=false"],
        "",
    )
    .await;
    assert_eq!(
        (done.ok, done.stdout.as_str()),
        (true, "pod \"t1\" deleted\n"),
        "{}",
        done.stderr
    );
    common::poll(
        || async { env.cluster.pod("demo", "t1").is_none().then_some(()) },
        "t1 gone",
    )
    .await;
    env.shutdown().await;
}
