//! The SSH client layer against real OpenSSH servers: config, auth, known_hosts, jump routes,
//! channels. Each test has its own HOME, keys and namespaces; see `common::sshd`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podtun::laptop::ssh::{OpenError, Prompter, Said, SshOptions, SshSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::sshd::{self, Netns, SshHome, Sshd, PASSWORD, PASSWORD_USER};

/// Every test body gets this long; a hang fails instead of stalling the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

const LAPTOP_IP: &str = "10.10.0.1";
const LOGIN_IP: &str = "10.10.0.2";

/// laptop ─ login: one sshd, reachable from the laptop namespace.
struct Single {
    sshd: Sshd,
    login: Netns,
    laptop: Netns,
}

fn single(port: u16, extra: &[&str]) -> Single {
    let laptop = Netns::new("laptop");
    let login = Netns::new("login");
    Netns::link(&laptop, LAPTOP_IP, &login, LOGIN_IP);
    let sshd = Sshd::start(&login, LOGIN_IP, port, extra);
    Single {
        sshd,
        login,
        laptop,
    }
}

/// laptop ─ bastion ─ login: the laptop cannot reach the login host directly.
struct Chain {
    login: Sshd,
    bastion: Sshd,
    _namespaces: [Netns; 2],
    laptop: Netns,
}

const BASTION_IP: &str = "10.10.1.2";
const LOGIN_BEHIND_IP: &str = "10.10.2.2";

fn chain() -> Chain {
    let laptop = Netns::new("laptop");
    let bastion_ns = Netns::new("bastion");
    let login_ns = Netns::new("login");
    Netns::link(&laptop, "10.10.1.1", &bastion_ns, BASTION_IP);
    Netns::link(&bastion_ns, "10.10.2.1", &login_ns, LOGIN_BEHIND_IP);
    Chain {
        login: Sshd::start(&login_ns, LOGIN_BEHIND_IP, 22, &[]),
        bastion: Sshd::start(&bastion_ns, BASTION_IP, 22, &[]),
        _namespaces: [bastion_ns, login_ns],
        laptop,
    }
}

fn opts(home: &SshHome) -> SshOptions {
    SshOptions {
        home: Some(home.path().to_path_buf()),
        ..Default::default()
    }
}

/// A prompter that answers from `answer(text)` and records every prompt it saw.
fn prompter(
    answer: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (Prompter, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let prompter: Prompter = Arc::new(move |text: &str, _echo: bool| {
        log.lock().expect("prompt log").push(text.to_string());
        Ok(answer(text))
    });
    (prompter, seen)
}

/// Runs `body` as the laptop, within [`TEST_TIMEOUT`].
fn as_laptop<F, Fut, T>(ns: &Netns, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    ns.run(move || async move {
        tokio::time::timeout(TEST_TIMEOUT, body())
            .await
            .expect("test body timed out")
    })
}

/// Runs `command` and returns its stdout, failing on a non-zero exit.
async fn output(session: &SshSession, command: &str) -> String {
    let mut running = session.exec(command).await.expect("exec");
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(said) = running.output.next().await {
        match said {
            Said::Stdout(data) => stdout.extend_from_slice(&data),
            Said::Stderr(data) => stderr.extend_from_slice(&data),
            Said::Exit(code) => status = Some(code),
        }
    }
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(status, Some(0), "`{command}` failed: {stderr}");
    String::from_utf8_lossy(&stdout).into_owned()
}

/// Connects and returns the error's full text (with causes) and hint.
fn connect_err(ns: &Netns, via: Vec<String>, opts: SshOptions) -> (String, String) {
    let err = as_laptop(ns, move || async move {
        match SshSession::connect(&via, &opts).await {
            Ok(_) => panic!("connected to {via:?}"),
            Err(err) => err,
        }
    });
    let hint = podtun::error::hint_of(&err).unwrap_or_default();
    (format!("{err:#}"), hint)
}

/// What the user reads for a failed connect, with the key fingerprint masked.
fn rendered(ns: &Netns, via: Vec<String>, opts: SshOptions) -> String {
    let err = as_laptop(ns, move || async move {
        SshSession::connect(&via, &opts)
            .await
            .err()
            .expect("connect must fail")
    });
    let text = podtun::error::render(&err);
    match text.find("SHA256:") {
        Some(start) => {
            let end = text[start..]
                .find([')', '.', '\n'])
                .map_or(text.len(), |e| start + e);
            format!("{}[FINGERPRINT]{}", &text[..start], &text[end..])
        }
        None => text,
    }
}

/// A home whose default key (`~/.ssh/id_ed25519`) may log in as root and that knows the host.
fn home_for(sshd: &Sshd) -> SshHome {
    let home = SshHome::new();
    sshd.authorize("root", &home.keygen("id_ed25519", ""));
    home.known_host(&sshd.known_hosts_line());
    home
}

#[test]
fn exec_with_default_key_reads_output() {
    let t = single(22, &[]);
    let home = home_for(&t.sshd);
    let via = vec![format!("root@{LOGIN_IP}")];
    let opts = opts(&home);
    let out = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        assert_eq!(session.host(), via[0]);
        let out = output(&session, "echo hi").await;
        session.disconnect().await;
        assert!(session.is_closed());
        out
    });
    assert_eq!(out, "hi\n");
}

#[test]
fn agent_rsa_key_signs_with_sha2() {
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    let key = home.ssh("agent_rsa");
    sshd::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&key),
    );
    t.sshd.authorize(
        "root",
        &std::fs::read_to_string(home.ssh("agent_rsa.pub")).unwrap(),
    );
    // The key is only in the agent: moved out of ~/.ssh after ssh-add.
    let sock = home.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    sshd::run(
        std::process::Command::new("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .arg(&key),
    );
    std::fs::remove_file(&key).unwrap();
    home.config(&format!(
        "Host login\n  HostName {LOGIN_IP}\n  User root\n  IdentityAgent {}\n",
        sock.display()
    ));
    let opts = opts(&home);
    let result = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&["login".to_string()], &opts).await?;
        anyhow::Ok(output(&session, "echo agent").await)
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(result.expect("connect with the agent's key"), "agent\n");
    assert!(t.sshd.log().contains("RSA SHA256:"), "{}", t.sshd.log());
}

#[test]
fn identity_file_from_config_alias() {
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    t.sshd.authorize("root", &home.keygen("work_key", ""));
    home.config(&format!(
        "Host login\n  HostName {LOGIN_IP}\n  User root\n  IdentityFile ~/.ssh/work_key\n  IdentitiesOnly yes\n"
    ));
    let opts = opts(&home);
    let out = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&["login".into()], &opts)
            .await
            .expect("connect");
        output(&session, "whoami").await
    });
    assert_eq!(out, "root\n");
}

#[test]
fn encrypted_key_asks_passphrase_on_a_terminal_only() {
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    t.sshd
        .authorize("root", &home.keygen("id_ed25519", "correct horse"));
    let via = vec![format!("root@{LOGIN_IP}")];

    let (err, hint) = connect_err(&t.laptop, via.clone(), opts(&home));
    assert!(
        err.contains(&format!(
            "permission denied for root@{LOGIN_IP} (tried: publickey)"
        )),
        "{err}"
    );
    assert!(err.contains("login host"), "{err}");
    assert!(hint.contains("ssh-add"), "{hint}");

    let (prompter, seen) = prompter(|_| "correct horse".to_string());
    let opts = SshOptions {
        interactive: true,
        prompter: Some(prompter),
        ..opts(&home)
    };
    let out = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        output(&session, "echo unlocked").await
    });
    assert_eq!(out, "unlocked\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("Enter passphrase for key '"),
        "{seen:?}"
    );
}

#[test]
fn password_by_keyboard_interactive() {
    sshd::ensure_password_user();
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    let (prompter, seen) = prompter(|_| PASSWORD.to_string());
    let opts = SshOptions {
        interactive: true,
        prompter: Some(prompter),
        ..opts(&home)
    };
    let via = vec![format!("{PASSWORD_USER}@{LOGIN_IP}")];
    let out = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        output(&session, "id -un").await
    });
    assert_eq!(out, format!("{PASSWORD_USER}\n"));
    assert!(seen.lock().unwrap().iter().any(|p| p.contains("assword")));
}

#[test]
fn wrong_password_and_no_terminal_fail_clearly() {
    sshd::ensure_password_user();
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    let via = vec![format!("{PASSWORD_USER}@{LOGIN_IP}")];

    let (prompter, seen) = prompter(|_| "wrong".to_string());
    let interactive = SshOptions {
        interactive: true,
        prompter: Some(prompter),
        ..opts(&home)
    };
    let (err, hint) = connect_err(&t.laptop, via.clone(), interactive);
    assert!(
        err.contains(&format!("permission denied for {PASSWORD_USER}@{LOGIN_IP} (tried: publickey, keyboard-interactive)")),
        "{err}"
    );
    assert!(hint.contains("check the password"), "{hint}");
    assert_eq!(seen.lock().unwrap().len(), 3, "three tries, as OpenSSH");

    let started = std::time::Instant::now();
    let (err, hint) = connect_err(&t.laptop, via, opts(&home));
    assert!(err.contains("(tried: publickey)"), "{err}");
    assert_eq!(
        hint,
        "ssh-add your key, or run podtun in a terminal to type a password"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "must not wait for input"
    );
    let text = rendered(
        &t.laptop,
        vec![format!("{PASSWORD_USER}@{LOGIN_IP}")],
        opts(&home),
    );
    assert_eq!(
        text,
        format!(
            "error: could not connect to {LOGIN_IP}:22 (login host)\n  \
             Caused by: permission denied for {PASSWORD_USER}@{LOGIN_IP} (tried: publickey)\n  \
             hint: ssh-add your key, or run podtun in a terminal to type a password\n"
        )
    );
}

#[test]
fn unknown_host_is_refused_without_a_terminal() {
    let t = single(22, &[]);
    let home = SshHome::new();
    t.sshd.authorize("root", &home.keygen("id_ed25519", ""));
    let (err, hint) = connect_err(&t.laptop, vec![format!("root@{LOGIN_IP}")], opts(&home));
    assert!(
        err.contains(&format!("host key for `{LOGIN_IP}:22` is not known")),
        "{err}"
    );
    assert!(hint.contains("StrictHostKeyChecking accept-new"), "{hint}");
    assert_eq!(home.known_hosts(), "", "nothing learned");
    let text = rendered(&t.laptop, vec![format!("root@{LOGIN_IP}")], opts(&home));
    assert_eq!(
        text,
        format!(
            "error: could not connect to {LOGIN_IP}:22 (login host)\n  \
             Caused by: host key for `{LOGIN_IP}:22` is not known (ED25519 key fingerprint is [FINGERPRINT])\n  \
             hint: connect once with ssh to verify and record it, or set StrictHostKeyChecking accept-new\n"
        )
    );
}

#[test]
fn accept_new_learns_the_key_in_a_private_file() {
    let t = single(2222, &[]);
    let home = SshHome::new();
    t.sshd.authorize("root", &home.keygen("id_ed25519", ""));
    home.config("StrictHostKeyChecking accept-new\n");
    let via = vec![format!("root@{LOGIN_IP}:2222")];
    let opts = opts(&home);
    as_laptop(&t.laptop, move || async move {
        SshSession::connect(&via, &opts).await.expect("connect");
    });
    let text = home.known_hosts();
    assert_eq!(text, format!("[{LOGIN_IP}]:2222 {}\n", t.sshd.host_key()));
    let mode = std::fs::metadata(home.ssh("known_hosts"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn ask_on_a_terminal_then_learn() {
    let t = single(22, &[]);
    let home = SshHome::new();
    t.sshd.authorize("root", &home.keygen("id_ed25519", ""));
    let (prompter, seen) = prompter(|_| "yes".to_string());
    let opts = SshOptions {
        interactive: true,
        prompter: Some(prompter),
        ..opts(&home)
    };
    let via = vec![format!("root@{LOGIN_IP}")];
    as_laptop(&t.laptop, move || async move {
        SshSession::connect(&via, &opts).await.expect("connect");
    });
    let seen = seen.lock().unwrap();
    assert!(
        seen[0].starts_with(&format!("The authenticity of host '{LOGIN_IP}' can't be established.\nED25519 key fingerprint is SHA256:")),
        "{seen:?}"
    );
    assert!(
        seen[0].ends_with("Are you sure you want to continue connecting (yes/no/[fingerprint])? ")
    );
    assert_eq!(home.known_hosts(), t.sshd.known_hosts_line());
}

#[test]
fn changed_key_is_refused_even_with_accept_new() {
    let t = single(22, &[]);
    let home = SshHome::new();
    t.sshd.authorize("root", &home.keygen("id_ed25519", ""));
    let other = home.keygen("other_host_key", "");
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    home.known_host(&format!("{LOGIN_IP} {}\n", other.join(" ")));
    home.config("StrictHostKeyChecking accept-new\n");
    let (err, hint) = connect_err(&t.laptop, vec![format!("root@{LOGIN_IP}")], opts(&home));
    assert!(
        err.contains(&format!("host key for `{LOGIN_IP}:22` does not match")),
        "{err}"
    );
    assert!(
        err.contains("WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!"),
        "{err}"
    );
    assert!(err.contains("known_hosts:1"), "{err}");
    assert_eq!(
        hint,
        format!("if the host was reinstalled, run `ssh-keygen -R {LOGIN_IP}`")
    );
    let text = rendered(&t.laptop, vec![format!("root@{LOGIN_IP}")], opts(&home));
    assert!(text.starts_with(&format!("error: could not connect to {LOGIN_IP}:22 (login host)\n  Caused by: host key for `{LOGIN_IP}:22` does not match ")), "{text}");
}

#[test]
fn hashed_and_port_entries_are_accepted() {
    let t = single(2222, &[]);
    let home = SshHome::new();
    t.sshd.authorize("root", &home.keygen("id_ed25519", ""));
    // A port-22 entry with another key must not count for port 2222.
    let other = home.keygen("other_host_key", "");
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    home.known_host(&format!("{LOGIN_IP} {}\n", other.join(" ")));
    home.known_host(&t.sshd.known_hosts_line());
    sshd::run(
        std::process::Command::new("ssh-keygen")
            .args(["-H", "-f"])
            .arg(home.ssh("known_hosts")),
    );
    assert!(
        !home.known_hosts().contains(LOGIN_IP),
        "hashed: {}",
        home.known_hosts()
    );
    let opts = opts(&home);
    let via = vec![format!("root@{LOGIN_IP}:2222")];
    let out = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        output(&session, "echo hashed").await
    });
    assert_eq!(out, "hashed\n");
}

fn chain_home(c: &Chain) -> SshHome {
    let home = SshHome::new();
    let key = home.keygen("id_ed25519", "");
    c.bastion.authorize("root", &key);
    c.login.authorize("root", &key);
    home.known_host(&c.bastion.known_hosts_line());
    home.known_host(&c.login.known_hosts_line());
    home
}

#[test]
fn jump_hosts_from_the_via_list() {
    let c = chain();
    let home = chain_home(&c);
    let opts = opts(&home);
    let direct = opts.clone();
    let (err, _) = connect_err(&c.laptop, vec![format!("root@{LOGIN_BEHIND_IP}")], direct);
    assert!(
        err.contains("could not connect to"),
        "the login host must be out of direct reach: {err}"
    );
    let via = vec![
        format!("root@{BASTION_IP}"),
        format!("root@{LOGIN_BEHIND_IP}"),
    ];
    let out = as_laptop(&c.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        let out = output(&session, "echo behind").await;
        session.disconnect().await;
        out
    });
    assert_eq!(out, "behind\n");
    // The login host saw the bastion's address, not the laptop's.
    assert!(
        c.login.log().contains("from 10.10.2.1"),
        "{}",
        c.login.log()
    );
}

#[test]
fn proxy_jump_from_a_config_file() {
    let c = chain();
    let home = chain_home(&c);
    let config = home.path().join("podtun_ssh_config");
    std::fs::write(
        &config,
        format!("Host bastion\n  HostName {BASTION_IP}\n  User root\nHost login\n  HostName {LOGIN_BEHIND_IP}\n  User root\n  ProxyJump bastion\n"),
    )
    .unwrap();
    let opts = SshOptions {
        config_file: Some(config),
        ..opts(&home)
    };
    let out = as_laptop(&c.laptop, move || async move {
        let session = SshSession::connect(&["login".into()], &opts)
            .await
            .expect("connect");
        output(&session, "echo jumped").await
    });
    assert_eq!(out, "jumped\n");
}

#[test]
fn proxy_command_through_openssh() {
    let c = chain();
    let home = chain_home(&c);
    let h = home.path().display().to_string();
    // The OpenSSH client gets a config of its own: it reads ~ from the passwd entry, not HOME.
    std::fs::write(
        home.ssh("openssh_config"),
        format!("Host bastion\n  HostName {BASTION_IP}\n  User root\n  BatchMode yes\n  IdentityFile {h}/.ssh/id_ed25519\n  UserKnownHostsFile {h}/.ssh/known_hosts\n"),
    )
    .unwrap();
    home.config(&format!(
        "Host login\n  HostName {LOGIN_BEHIND_IP}\n  User root\n  ProxyCommand ssh -F {h}/.ssh/openssh_config -W %h:%p bastion\n"
    ));
    let opts = opts(&home);
    let out = as_laptop(&c.laptop, move || async move {
        let session = SshSession::connect(&["login".into()], &opts)
            .await
            .expect("connect");
        let out = output(&session, "echo proxied").await;
        session.disconnect().await;
        out
    });
    assert_eq!(out, "proxied\n");
    // The ProxyCommand (`ssh -W`, the only process in the laptop's namespace) is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c.laptop.pids().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "ProxyCommand left running: {:?}",
            c.laptop.pids()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn streamlocal_channel_reaches_a_unix_socket() {
    let t = single(22, &[]);
    let home = home_for(&t.sshd);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let sock_path = sock.display().to_string();
    let opts = opts(&home);
    let via = vec![format!("root@{LOGIN_IP}")];
    let (echoed, missing) = as_laptop(&t.laptop, move || async move {
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        let mut stream = session.open_streamlocal(&sock_path).await.expect("open");
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        let missing = session.open_streamlocal("/nonexistent/podtun.sock").await;
        (buf, missing.map(|_| ()))
    });
    assert_eq!(&echoed, b"ping");
    assert!(
        matches!(missing, Err(OpenError::Refused { .. })),
        "{missing:?}"
    );
}

/// OpenSSH refuses a forbidden stream-local open with the same reply as a missing socket:
/// the error says `Refused` even though the socket listens, and sshd logs the refusal.
#[test]
fn streamlocal_forbidden_by_sshd_is_refused() {
    let t = single(22, &["AllowStreamLocalForwarding no"]);
    let home = home_for(&t.sshd);
    let opts = opts(&home);
    let via = vec![format!("root@{LOGIN_IP}")];
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let result = as_laptop(&t.laptop, move || async move {
        let _listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        let path = sock.display().to_string();
        session.open_streamlocal(&path).await.map(|_| ())
    });
    assert!(
        matches!(result, Err(OpenError::Refused { .. })),
        "{result:?}"
    );
    assert!(
        t.sshd.log().contains("refused streamlocal port forward"),
        "{}",
        t.sshd.log()
    );
}

#[test]
fn closed_resolves_when_the_server_side_dies() {
    let t = single(22, &[]);
    let home = home_for(&t.sshd);
    let opts = opts(&home);
    let via = vec![format!("root@{LOGIN_IP}")];
    as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        assert!(!session.is_closed());
        let clone = session.clone();
        // The shell's parent is the sshd process serving this connection.
        let _channel = session
            .exec("sleep 0.2; kill -9 $PPID")
            .await
            .expect("exec");
        tokio::time::timeout(Duration::from_secs(10), clone.closed())
            .await
            .expect("closed() resolves");
        assert!(session.is_closed());
    });
}

/// Keepalives are on by default and end a connection whose server went silent (a frozen
/// sshd keeps the TCP connection open, so only keepalives can tell).
#[test]
fn keepalives_detect_a_silent_server() {
    let t = single(22, &[]);
    let home = home_for(&t.sshd);
    home.config("ServerAliveInterval 1\nServerAliveCountMax 2\n");
    let opts = opts(&home);
    let via = vec![format!("root@{LOGIN_IP}")];
    let frozen = t.login.name().to_string();
    let elapsed = as_laptop(&t.laptop, move || async move {
        let session = SshSession::connect(&via, &opts).await.expect("connect");
        sshd::run(
            std::process::Command::new("sh")
                .arg("-c")
                // A process that ended meanwhile (sshd's pre-auth child) is no error.
                .arg(format!(
                    "for p in $(ip netns pids {frozen}); do kill -STOP $p 2>/dev/null; done; true"
                )),
        );
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(15), session.closed())
            .await
            .expect("keepalives end the connection");
        started.elapsed()
    });
    t.login.signal_all("KILL");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
}

/// ConnectTimeout bounds a hop that accepts TCP but never speaks SSH.
#[test]
fn connect_timeout_bounds_a_silent_hop() {
    let t = single(22, &[]);
    let home = home_for(&t.sshd);
    home.config("ConnectTimeout 1\n");
    let opts = opts(&home);
    let err = as_laptop(&t.laptop, move || async move {
        let listener = tokio::net::TcpListener::bind((LAPTOP_IP, 2022))
            .await
            .expect("bind");
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let started = tokio::time::Instant::now();
        let via = vec![format!("root@{LAPTOP_IP}:2022")];
        let err = SshSession::connect(&via, &opts)
            .await
            .err()
            .expect("no ssh there");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        format!("{err:#}")
    });
    assert!(
        err.contains(&format!(
            "could not connect to {LAPTOP_IP}:2022 (login host): timed out after 1s"
        )),
        "{err}"
    );
}

/// Runs `shell` under `script`, which gives it a pseudo-terminal as its controlling terminal,
/// stdin and stdout. Once the terminal shows a password prompt, `at_prompt` types into it.
/// Returns everything the terminal showed and the exit code.
fn on_a_terminal(
    t: &Single,
    home: &SshHome,
    shell: &str,
    at_prompt: impl FnOnce(&mut std::process::ChildStdin),
) -> (String, Option<i32>) {
    use std::io::Read;
    let mut child = t
        .laptop
        .command("script")
        .args(["-qefc", shell, "/dev/null"])
        // The same shell whatever the environment's: `script` runs `$SHELL -c`.
        .env("SHELL", "/bin/sh")
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    let mut at_prompt = Some(at_prompt);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("the terminal session did not finish in time; it showed:\n{seen}");
            }
        }
        if seen.contains("assword:") {
            if let Some(type_in) = at_prompt.take() {
                type_in(child.stdin.as_mut().unwrap());
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(
        at_prompt.is_none(),
        "podtun asked for the password on the terminal:\n{seen}"
    );
    (seen, status.code())
}

/// The podtun command line for the password user, run on the laptop.
fn podtun_as_password_user() -> String {
    format!(
        "{} redis redis --via {PASSWORD_USER}@{LOGIN_IP} --remote-bin {} --kubeconfig /nonexistent/kubeconfig --no-browser",
        env!("CARGO_BIN_EXE_podtun"),
        env!("CARGO_BIN_EXE_podtun"),
    )
}

/// The podtun binary on a real terminal: the password prompt appears on the pseudo-terminal,
/// the typed password (not echoed) logs in, and what follows comes from the login host.
#[test]
fn binary_asks_for_the_password_on_a_terminal() {
    use std::io::Write;
    sshd::ensure_password_user();
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    // Typed the moment the prompt shows, as a quick typist (or a password manager) does.
    let (seen, code) = on_a_terminal(&t, &home, &podtun_as_password_user(), |stdin| {
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    });
    assert!(
        !seen.contains(PASSWORD),
        "the password is not echoed:\n{seen}"
    );
    assert!(
        seen.contains(&format!("on login host `{PASSWORD_USER}@{LOGIN_IP}`")),
        "logged in: the next error comes from the login host:\n{seen}"
    );
    assert_eq!(code, Some(1), "{seen}");
}

/// Ctrl-C at the password prompt stops podtun and gives the shell its terminal back with echo
/// on: what the user types next is visible again.
#[test]
fn ctrl_c_at_the_password_prompt_leaves_echo_on() {
    use std::io::Write;
    sshd::ensure_password_user();
    let t = single(22, &[]);
    let home = SshHome::new();
    home.known_host(&t.sshd.known_hosts_line());
    // As an interactive shell does, job control (`set -m`) gives podtun a foreground process
    // group of its own, so Ctrl-C reaches podtun and not the shell. After podtun exits, the
    // same terminal reports its settings.
    let shell = format!(
        "set -m; {}; echo podtun-exit=$?; stty -a",
        podtun_as_password_user()
    );
    let (seen, code) = on_a_terminal(&t, &home, &shell, |stdin| {
        // The terminal's interrupt character: the kernel sends SIGINT to podtun.
        stdin.write_all(b"\x03").unwrap();
    });
    assert_eq!(code, Some(0), "{seen}");
    let exit = seen
        .split("podtun-exit=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("podtun stopped:\n{seen}"));
    // DESIGN.md's contract: Ctrl-C with everything cleaned up exits 0.
    assert_eq!(exit, "0", "podtun stopped cleanly on Ctrl-C:\n{seen}");
    let settings = seen.split("podtun-exit=").nth(1).unwrap_or_default();
    let flags: Vec<&str> = settings.split([' ', ';', '\r', '\n']).collect();
    assert!(
        flags.contains(&"echo") && !flags.contains(&"-echo"),
        "echo is back on after Ctrl-C:\n{seen}"
    );
}
