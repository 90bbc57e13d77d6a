//! What users read before anything runs: the help texts.

use crate::common::podtun;

#[tokio::test]
async fn help_texts() {
    let home = tempfile::tempdir().unwrap();
    for (name, args) in [
        ("help_top", &["--help"][..]),
        ("help_forward", &["forward", "--help"][..]),
        ("help_jupyter", &["jupyter", "--help"][..]),
    ] {
        let f = podtun::run_raw(home.path(), args).await;
        assert!(f.status.success(), "{name}");
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!(name, f.stdout);
        });
    }
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
