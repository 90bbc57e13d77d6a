//! Bad input: each case gives an `error:` line naming the object, a `hint:`, a non-zero exit,
//! and nothing left running (podtun has exited; its children with it).

use std::path::Path;

use crate::common::cluster::{self, Cluster};
use crate::common::podtun::{self, Finished};

const FIXTURES: &[&str] = &[
    "manifests/00-namespace.yaml",
    "manifests/30-redis.yaml",
    "tests/fixtures/pods",
];

/// What the user reads on stderr, with this run's temp paths and ports replaced.
fn shown(f: &Finished, c: &Cluster, extra: &[(&str, &str)]) -> String {
    let mut text = f
        .stderr
        .replace(&c.dir.path().display().to_string(), "[TMP]");
    for (from, to) in extra {
        text = text.replace(from, to);
    }
    format!("exit: {:?}\n{text}", f.status.code())
}

async fn check(c: &Cluster, name: &str, args: &[&str]) -> Finished {
    let home = tempfile::tempdir().unwrap();
    let f = podtun::run(c.kubeconfig(), home.path(), args).await;
    assert!(!f.status.success(), "{name}: must fail");
    assert!(
        f.stdout.is_empty(),
        "{name}: nothing on stdout: {}",
        f.stdout
    );
    assert!(f.stderr.contains("error: "), "{name}: {}", f.stderr);
    assert!(
        f.stderr.contains("hint: "),
        "{name}: needs a hint: {}",
        f.stderr
    );
    f
}

/// Snapshots of what users read; pod uids and back-off times change from run to run.
macro_rules! snapshot {
    ($name:expr, $text:expr) => {
        insta::with_settings!({
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            filters => vec![
                (r"\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\)", "([UID])"),
                (r"back-off \d+s", "back-off [TIME]"),
                (r"-[a-z0-9]{6,10}-[a-z0-9]{5}\b", "-[HASH]-[SUFFIX]"),
            ],
        }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_side_errors_name_the_object_and_hint_the_fix() {
    let c = cluster::start(FIXTURES).await;
    let cases: &[(&str, &[&str])] = &[
        ("unknown_pod", &["redis", "rediss", "-n", "demo"]),
        ("unknown_namespace", &["redis", "redis", "-n", "nowhere"]),
        ("unknown_context", &["redis", "redis", "--context", "nope"]),
        (
            "wrong_token",
            &["redis", "redis", "-n", "demo", "--context", "bad-token"],
        ),
        (
            "pod_without_ports",
            &["forward", "no-ports", "-n", "fixtures"],
        ),
        (
            "unknown_named_port",
            &["forward", "named-ports", "nope", "-n", "fixtures"],
        ),
        (
            "ambiguous_local_port",
            &["forward", "ambiguous", "-n", "fixtures", "-p", "9000"],
        ),
        ("failed_pod", &["forward", "failed", "-n", "fixtures"]),
        (
            "crashloop_pod",
            &["forward", "crashloop", "-n", "fixtures", "--timeout", "60s"],
        ),
        (
            "pending_pod",
            &["forward", "pending", "-n", "fixtures", "--timeout", "2s"],
        ),
        (
            "never_ready",
            &[
                "forward",
                "never-ready",
                "-n",
                "fixtures",
                "--timeout",
                "3s",
            ],
        ),
        (
            "token_never_appears",
            &[
                "jupyter",
                "notoken-jupyter",
                "-n",
                "fixtures",
                "--timeout",
                "3s",
            ],
        ),
    ];
    for (name, args) in cases {
        let f = check(&c, name, args).await;
        snapshot!(*name, shown(&f, &c, &[]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_kubeconfig() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing-kubeconfig");
    let f = podtun::run_raw(
        home.path(),
        &["redis", "redis", "--kubeconfig", missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(f.status.code(), Some(1));
    let text = f
        .stderr
        .replace(&home.path().display().to_string(), "[HOME]");
    snapshot!("unreadable_kubeconfig", text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_port_in_use() {
    let c = cluster::start(FIXTURES).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let f = check(
        &c,
        "port_in_use",
        &["redis", "redis", "-n", "demo", "-p", &port],
    )
    .await;
    snapshot!("local_port_in_use", shown(&f, &c, &[(&port, "[PORT]")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ports_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for (name, port) in [
        ("malformed_port_triple", "abc:def:1"),
        ("malformed_port_zero", "0"),
        ("malformed_port_range", "70000"),
    ] {
        let f = podtun::run(
            Path::new("/nonexistent"),
            home.path(),
            &["forward", "pod/x", port],
        )
        .await;
        assert_eq!(f.status.code(), Some(2), "{name}: usage error exits 2");
        snapshot!(name, f.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_target_names_are_rejected() {
    let home = tempfile::tempdir().unwrap();
    let f = podtun::run(Path::new("/nonexistent"), home.path(), &["redis", "../x"]).await;
    assert_eq!(f.status.code(), Some(2));
    snapshot!("hostile_target", f.stderr);
}
