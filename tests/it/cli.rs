//! What users read before anything runs: the help texts.

use crate::common::podtun;

#[tokio::test]
async fn help_texts() {
    let home = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("help_top", &["--help"][..]),
        ("help_forward", &["forward", "--help"][..]),
        ("help_jupyter", &["jupyter", "--help"][..]),
        ("help_doctor", &["doctor", "--help"][..]),
    ] {
        let f = podtun::run_raw(home.path(), args).await;
        assert!(f.status.success(), "{name}");
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, f.stdout);
        });
    }
}

#[tokio::test]
async fn doctor_offers_only_the_flags_it_uses() {
    let home = tempfile::tempdir().unwrap();
    let f = podtun::run_raw(home.path(), &["doctor", "--help"]).await;
    assert!(f.status.success());
    for unused in [
        "--container",
        "--selector",
        "--local-port",
        "--address",
        "--no-browser",
        "--timeout",
        "--detach",
        "--json",
    ] {
        assert!(!f.stdout.contains(unused), "{unused} in:\n{}", f.stdout);
    }
    for used in [
        "--via",
        "--namespace",
        "--context",
        "--kubeconfig",
        "--agent",
    ] {
        assert!(f.stdout.contains(used), "{used} missing in:\n{}", f.stdout);
    }
    let refused = podtun::run_raw(home.path(), &["doctor", "--timeout", "5s"]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
}

#[tokio::test]
async fn completions_are_printed() {
    let home = tempfile::tempdir().unwrap();
    let f = podtun::run_raw(home.path(), &["completions", "bash"]).await;
    assert!(f.status.success());
    assert!(f.stdout.contains("podtun"), "a bash completion script");
    assert!(
        !f.stdout.contains("agent pipe"),
        "the hidden agent is not offered"
    );
}
