//! `podtun doctor` on the walled-off topology: every check passes on the working setup, and
//! each broken step (host key, user key, no podtun with --no-install, no port-forward rights)
//! is the one marked ✗, with the later steps skipped or still checked as they can be.

use crate::common::cluster::JUPYTER_BIN;
use crate::common::podtun::{self, Finished};
use crate::common::slurm::Slurm;
use crate::common::topology::{Shape, Topology};

const BASE: &[&str] = &["manifests/00-namespace.yaml", "manifests/10-rbac.yaml"];

fn shape() -> Shape {
    Shape {
        manifests: BASE.to_vec(),
        ..Default::default()
    }
}

/// `podtun doctor --via LOGIN --kubeconfig KC --remote-bin BIN ARGS`.
async fn doctor(t: &Topology, args: &[&str]) -> Finished {
    let all: Vec<&str> = ["doctor"]
        .iter()
        .copied()
        .chain(args.iter().copied())
        .collect();
    podtun::finish(t.podtun_via(&all)).await
}

/// The line of check `name`, which must exist.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"))
}

fn passed(out: &str, name: &str) {
    assert!(
        line(out, name).starts_with('✓'),
        "{name} should pass:\n{out}"
    );
}

fn failed(out: &str, name: &str) {
    assert!(
        line(out, name).starts_with('✗'),
        "{name} should fail:\n{out}"
    );
}

#[tokio::test]
async fn doctor_passes_on_the_test_topology() {
    let t = Topology::start(shape()).await;
    t.cluster
        .tc
        .apply_yaml(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: alice-1\n  namespace: demo\nspec:\n  \
             containers:\n    - name: nb\n      image: quay.io/jupyter/minimal-notebook\n      \
             command: [\"sleep\", \"3600\"]\n",
        )
        .unwrap();
    t.cluster.ready("demo", "alice-1").await;
    let done = doctor(&t, &["--context", "minimal"]).await;
    let out = &done.stdout;
    assert!(done.status.success(), "{out}\n{}", done.stderr);
    for name in [
        "SSH config",
        "host key",
        "authentication",
        "podtun on the login host",
        "kubeconfig",
        "API server",
        "namespace",
        "rights on pods",
        "rights on pods/log",
        "rights on pods/portforward",
        "Jupyter pods",
    ] {
        passed(out, name);
    }
    assert!(line(out, "Jupyter pods").contains("alice-1"), "{out}");
    // Neither Jupyter nor a configured Slurm on this login host: worth knowing, not a failure.
    for name in ["Jupyter on the login host", "Slurm on the login host"] {
        assert!(line(out, name).starts_with('!'), "{name}:\n{out}");
    }
    // What a user pastes into a ticket holds no credential.
    for secret in [t.cluster.tc.user_token(), t.cluster.tc.admin_token()] {
        assert!(
            !out.contains(secret) && !done.stderr.contains(secret),
            "{out}"
        );
    }
}

#[tokio::test]
async fn doctor_names_a_wrong_host_key() {
    let t = Topology::start(Shape {
        unknown_login_key: true,
        ..shape()
    })
    .await;
    let other = t.home.keygen("impostor_host", "");
    let key: Vec<&str> = other.split_whitespace().take(2).collect();
    t.home.known_host(&format!(
        "{} {}\n",
        t.sshd.known_hosts_name(),
        key.join(" ")
    ));
    let done = doctor(&t, &[]).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stdout);
    passed(&done.stdout, "SSH config");
    failed(&done.stdout, "host key");
    assert!(
        line(&done.stdout, "authentication").starts_with('-'),
        "{}",
        done.stdout
    );
}

#[tokio::test]
async fn doctor_names_a_wrong_user_key() {
    let t = Topology::start(shape()).await;
    t.home.keygen("id_unknown", "");
    t.home.config(&format!(
        "Host *\n  User {}\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n",
        crate::common::topology::LOGIN_USER,
        t.home.ssh("id_unknown").display(),
        t.home.ssh("known_hosts").display(),
    ));
    let done = doctor(&t, &[]).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stdout);
    passed(&done.stdout, "host key");
    failed(&done.stdout, "authentication");
}

#[tokio::test]
async fn doctor_names_a_missing_podtun_with_no_install() {
    let t = Topology::start(shape()).await;
    let kubeconfig = t.kubeconfig_arg();
    let args = [
        "doctor",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        &kubeconfig,
        "--no-install",
    ];
    let mut podtun_only = args.to_vec();
    podtun_only.extend(["--agent", "podtun"]);
    let done = podtun::finish(t.podtun(&podtun_only)).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stdout);
    passed(&done.stdout, "authentication");
    failed(&done.stdout, "podtun on the login host");
    assert!(
        line(&done.stdout, "podtun on the login host").contains("is not installed"),
        "{}",
        done.stdout
    );
    assert!(
        line(&done.stdout, "cluster").starts_with('-'),
        "{}",
        done.stdout
    );

    // In auto mode the same login host serves through kubectl mode: the missing podtun is a
    // note, and the cluster checks run through kubectl proxy there.
    let done = podtun::finish(t.podtun(&args)).await;
    assert_eq!(done.status.code(), Some(0), "{}", done.stdout);
    let note = line(&done.stdout, "podtun on the login host");
    assert!(
        note.starts_with('!') && note.contains("kubectl mode"),
        "{}",
        done.stdout
    );
    passed(&done.stdout, "kubectl on the login host");
    passed(&done.stdout, "rights on pods/portforward");
    assert!(
        line(&done.stdout, "API server").contains("kubectl proxy"),
        "{}",
        done.stdout
    );
    assert!(
        !t.login_home.installed_binary().exists(),
        "nothing uploaded"
    );
}

#[tokio::test]
async fn doctor_names_missing_portforward_rights() {
    let t = Topology::start(Shape {
        cluster_users: vec![testcluster::UserSpec {
            name: "student".into(),
            namespace: "demo".into(),
            portforward: false,
        }],
        ..shape()
    })
    .await;
    let done = doctor(&t, &["--context", "student"]).await;
    let out = &done.stdout;
    assert_eq!(done.status.code(), Some(1), "{out}");
    passed(out, "API server");
    passed(out, "rights on pods");
    passed(out, "rights on pods/log");
    failed(out, "rights on pods/portforward");
    assert!(
        line(out, "rights on pods/portforward").contains("not granted in `demo`: create, get"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_sees_jupyter_and_slurm_on_an_hpc_login_host() {
    let mut t = Topology::start(shape()).await;
    let _slurm = tokio::task::block_in_place(|| Slurm::start(&mut t));
    std::fs::write(
        t.login_home.path().join(".profile"),
        format!("PATH={JUPYTER_BIN}:$PATH\nexport PATH\n"),
    )
    .expect(".profile");
    let done = doctor(&t, &["--context", "minimal"]).await;
    let out = &done.stdout;
    assert!(done.status.success(), "{out}\n{}", done.stderr);
    passed(out, "Jupyter on the login host");
    assert!(
        line(out, "Jupyter on the login host").contains(&format!("{JUPYTER_BIN}/jupyter")),
        "{out}"
    );
    passed(out, "Slurm on the login host");
    assert!(
        line(out, "Slurm on the login host").contains("slurm"),
        "{out}"
    );
}
