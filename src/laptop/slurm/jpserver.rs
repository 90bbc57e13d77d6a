//! Where Jupyter listens in a job: the `jpserver-PID.json` file Jupyter Server writes in its
//! runtime dir (in the home the login host shares with the nodes), or failing that the URL in
//! the job's output. Pure: text in, a [`JupyterServer`] out.

use anyhow::anyhow;

use super::job::MARK;
use crate::error::hinted;
use crate::jupyter::token::{find_token, TokenFind};

/// The line before each file in [`listing_command`]'s output.
const FILE_MARK: &str = "jpserver";

/// One Jupyter server, as its jpserver file (or its output) describes it.
pub use crate::jupyter::server::Server as JupyterServer;

impl JupyterServer {
    /// The newest tokenized URL in a job's output, on `node` (the output does not say which
    /// name the server listens on; the jpserver file does).
    pub fn from_output(output: &str, node: &str) -> Option<JupyterServer> {
        let TokenFind::Found(url) = find_token(output) else {
            return None;
        };
        Some(JupyterServer {
            pid: 0,
            hostname: node.to_string(),
            address: node.to_string(),
            port: url.port?,
            token: url.token,
            base_url: url.base_path,
            root_dir: String::new(),
            secure: false,
            classic: false,
            sock: None,
        })
    }

    /// Whether this server runs on `node` (short names compared: `node1` is `node1.cluster`).
    /// A wildcard address (`0.0.0.0`, `*`, `::`, none) is anywhere, so on `node` too.
    pub fn is_on(&self, node: &str) -> bool {
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_ascii_lowercase();
        is_wildcard(&self.hostname)
            || short(&self.hostname) == short(node)
            || self.hostname.eq_ignore_ascii_case(node)
    }

    /// The `host` the login host connects to for this server on `node`: the name or address
    /// Jupyter listens on, the node's name for a wildcard; an error when the login host cannot
    /// reach it (loopback only, a Unix socket).
    pub fn connect_host(&self, node: &str) -> anyhow::Result<String> {
        let restart = "start Jupyter with `--ip=$(hostname)` (or `--ip=0.0.0.0`) so that the login host can reach it";
        if let Some(sock) = &self.sock {
            return Err(hinted(
                anyhow!("Jupyter on {node} listens on the Unix socket {sock}, not on a TCP port"),
                restart,
            ));
        }
        let h = self.hostname.trim_start_matches('[').trim_end_matches(']');
        if h == "localhost" || h.starts_with("127.") || h == "::1" {
            return Err(hinted(
                anyhow!("Jupyter on {node} listens on {h} only, which the login host cannot reach"),
                restart,
            ));
        }
        if self.port == 0 {
            return Err(anyhow!("Jupyter on {node} reports no port"));
        }
        Ok(if is_wildcard(h) {
            node.to_string()
        } else {
            h.to_string()
        })
    }
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "" | "*" | "0.0.0.0" | "::" | "[::]")
}

/// The command that prints every `jpserver-*.json` in `dirs` (shell words, `"$HOME"/…`), newest
/// first, each after a `podtun-slurm: jpserver PATH` line.
pub fn listing_command(dirs: &[String]) -> String {
    let dirs = dirs.join(" ");
    format!(
        "for d in {dirs}; do [ -d \"$d\" ] || continue; \
         ls -t \"$d\"/jpserver-*.json 2>/dev/null | while IFS= read -r f; do \
         echo; echo \"{MARK} {FILE_MARK} $f\"; cat \"$f\" 2>/dev/null; done; done"
    )
}

/// The files in [`listing_command`]'s output, in its order: each path and what it holds.
pub fn parse_listing(stdout: &str) -> Vec<(String, Result<JupyterServer, String>)> {
    let head = format!("{MARK} {FILE_MARK} ");
    let mut files = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in stdout.lines() {
        if let Some(path) = line.strip_prefix(&head) {
            files.extend(current.take());
            current = Some((path.to_string(), String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    files.extend(current);
    files
        .into_iter()
        .map(|(path, text)| {
            (
                path,
                JupyterServer::from_json(&text).map_err(|e| e.to_string()),
            )
        })
        .collect()
}

/// The newest server in `listing` that runs on `node`.
pub fn pick(listing: &str, node: &str) -> Option<JupyterServer> {
    parse_listing(listing)
        .into_iter()
        .filter_map(|(_, parsed)| parsed.ok())
        .find(|s| s.is_on(node) && s.port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::Token;

    const FILE: &str = r#"{
  "base_url": "/",
  "hostname": "node1",
  "password": false,
  "pid": 9041,
  "port": 44509,
  "root_dir": "/home/alice",
  "secure": false,
  "sock": "",
  "token": "9b7f77c67d6988c8e43fd384b85cb53fcc4c04452229deb2",
  "url": "http://node1:44509/",
  "version": "2.21.1"
}"#;

    #[test]
    fn jpserver_file() {
        let s = JupyterServer::from_json(FILE).expect("parsed");
        assert_eq!(s.hostname, "node1");
        assert_eq!(s.port, 44509);
        assert_eq!(
            s.token.as_ref().map(Token::expose),
            Some("9b7f77c67d6988c8e43fd384b85cb53fcc4c04452229deb2")
        );
        assert_eq!(s.base_url, "/");
        assert_eq!(s.sock, None);
        assert_eq!(s.connect_host("node1").expect("reachable"), "node1");
        assert!(
            !format!("{s:?}").contains("9b7f77"),
            "the token is redacted"
        );
    }

    #[test]
    fn no_token_base_url_and_wildcards() {
        let s = JupyterServer::from_json(
            r#"{"hostname":"0.0.0.0","port":8888,"token":"","base_url":"/user/alice","password":true}"#,
        )
        .expect("parsed");
        assert_eq!(s.token, None);
        assert_eq!(s.base_url, "/user/alice/");
        assert!(s.is_on("node7"));
        assert_eq!(s.connect_host("node7").expect("reachable"), "node7");
    }

    #[test]
    fn unreachable_servers_are_errors_with_a_hint() {
        let local = JupyterServer::from_json(r#"{"hostname":"localhost","port":8888}"#).expect("p");
        let text = crate::error::render(&local.connect_host("node1").expect_err("loopback"));
        assert!(text.contains("listens on localhost only"), "{text}");
        assert!(text.contains("--ip=$(hostname)"), "{text}");
        let sock =
            JupyterServer::from_json(r#"{"hostname":"node1","port":0,"sock":"/tmp/j.sock"}"#)
                .expect("parsed");
        assert!(sock.connect_host("node1").is_err());
        assert!(JupyterServer::from_json("{not json").is_err());
    }

    #[test]
    fn listing_picks_the_newest_server_on_the_node() {
        let other = FILE.replace("node1", "node2").replace("44509", "40000");
        let older = FILE.replace("44509", "41111");
        let listing = format!(
            "{MARK} jpserver /h/.local/share/jupyter/runtime/jpserver-1.json\n{other}\n\
             {MARK} jpserver /h/.local/share/jupyter/runtime/jpserver-2.json\n{{broken\n\
             {MARK} jpserver /h/.local/share/jupyter/runtime/jpserver-3.json\n{FILE}\n\
             {MARK} jpserver /h/.local/share/jupyter/runtime/jpserver-4.json\n{older}\n"
        );
        let files = parse_listing(&listing);
        assert_eq!(files.len(), 4);
        assert!(files[1].1.is_err());
        let s = pick(&listing, "node1.cluster.example").expect("found");
        assert_eq!(s.port, 44509);
        assert_eq!(pick(&listing, "node9"), None);
        assert_eq!(pick("", "node1"), None);
    }

    #[test]
    fn listing_command_is_sh() {
        let cmd = listing_command(&["\"$HOME\"/'.cache/podtun/slurm/12'".to_string()]);
        assert!(cmd.contains("jpserver-*.json"), "{cmd}");
        #[cfg(unix)]
        {
            let out = std::process::Command::new("/bin/sh")
                .args(["-n", "-c", &cmd])
                .output()
                .expect("/bin/sh");
            assert!(out.status.success(), "{cmd}");
        }
    }

    #[test]
    fn url_in_the_job_output() {
        let log = "[I ServerApp] Jupyter Server 2.21.1 is running at:\n\
                   [I ServerApp] http://node1:44509/lab?token=abc123\n\
                   [I ServerApp]     http://127.0.0.1:44509/lab?token=abc123\n";
        let s = JupyterServer::from_output(log, "node1").expect("found");
        assert_eq!((s.hostname.as_str(), s.port), ("node1", 44509));
        assert_eq!(s.token.as_ref().map(Token::expose), Some("abc123"));
        assert_eq!(JupyterServer::from_output("starting…\n", "node1"), None);
    }
}
